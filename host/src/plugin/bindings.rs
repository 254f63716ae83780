//! The one place `bindgen!` runs for the `openidcs:engine@0.1.0` world.
//! Everything else imports the generated types from here, so the macro's
//! options are the same for every user and the expansion is compiled once.
//! The `engine` export is called through one typed table of its functions,
//! kept next to the bindings it mirrors (`engine_functions!`): it makes
//! [`EngineCall`] (one instance) and the per-host methods of
//! [`PluginRuntime`] (`vm_get`, `nat_apply`, …) that services call.
//!
//! Imports are `async` (capabilities do I/O off the reactor) and `trappable`
//! with the WIT `error` mapped to [`CapError`]: a host function answers
//! `Err(CapError::Refused(..))` (what `?` makes of a [`PluginError`]) for a
//! refusal the engine sees as the WIT `error`, and `CapError::trap` for a
//! host fault, which traps the call.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Instance, InstancePre};

use super::instance::CallState;
use super::{EngineError, EngineTarget, PluginRuntime};
// Named by `trappable_error_type` (a path from this module).
use crate::caps::CapError;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "engine-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    // A capability answering `result<T, error>` returns `Result<T, CapError>`:
    // `?` on a refusal, `CapError::trap` for a host fault, no `Ok(Err(..))`.
    trappable_error_type: {
        "openidcs:engine/types.error" => CapError,
    },
});

pub use self::openidcs::engine::types::Error as PluginError;
pub use self::openidcs::engine::types::{
    ConsoleEndpoint, Disk, EngineInfo, HostConfig, HostCounters, IpPool, IpVersion, Nic, NicKind,
    PortForward, PowerAction, PowerState, Protocol, ProxySite, TlsPair, VmCounters, VmInfo, VmSpec,
};

/// The WIT package version this server speaks; plugins must export a
/// compatible `openidcs:engine/engine` (same major, and same minor while 0.x).
pub const WIT_VERSION: &str = "0.1.0";

/// The name of the export every engine has.
const ENGINE_EXPORT: &str = "openidcs:engine/engine@0.1.0";

/// A plugin ready to instantiate: its `InstancePre` and where each function
/// of its `engine` export is.
///
/// Calls do not go through the bindgen `Guest` export: loading it type-checks
/// all 17 functions of the interface in every new instance (a quarter of a
/// fresh call's cost), while a call uses one. The full check runs once per
/// plugin, at load ([`EngineCall::check_types`]); a call checks only the
/// function it makes, with the same types.
pub struct EnginePre {
    instance_pre: InstancePre<CallState>,
    functions: Arc<EngineFunctions>,
}

impl EnginePre {
    /// Find the `engine` export and each of its functions, or say which is
    /// missing.
    pub fn new(instance_pre: InstancePre<CallState>) -> Result<EnginePre, String> {
        let functions = EngineFunctions::find(instance_pre.component())?;
        Ok(EnginePre {
            instance_pre,
            functions: Arc::new(functions),
        })
    }

    /// A fresh instance in `store`.
    pub async fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<EngineCall> {
        let instance = self.instance_pre.instantiate_async(store).await?;
        Ok(EngineCall {
            instance,
            functions: self.functions.clone(),
        })
    }
}

/// The `engine` export of one instance: one method per WIT function.
pub struct EngineCall {
    instance: Instance,
    functions: Arc<EngineFunctions>,
}

/// The typed table of the `engine` interface (`wit/engine.wit`): method,
/// WIT name, parameters, answer. A mismatch with a plugin's types is found
/// by `check_types` when the plugin loads.
///
/// From each row come the export's index, a method of [`EngineCall`] (one
/// instance, one store) and, for the per-host functions, a method of
/// [`PluginRuntime`] that makes the whole call for an [`EngineTarget`]: a
/// fresh instance, the host's scope, the WIT name for errors and logs.
macro_rules! engine_functions {
    (
        fn $describe:ident = $describe_name:literal () -> $info:ty;
        $(
            fn $method:ident = $name:literal (host: &HostConfig $(, $arg:ident: $type:ty)*)
                -> Result<$answer:ty, PluginError>;
        )*
    ) => {
        /// Where each function of one plugin's `engine` export is.
        struct EngineFunctions {
            $describe: ComponentExportIndex,
            $($method: ComponentExportIndex,)*
        }

        impl EngineFunctions {
            fn find(component: &Component) -> Result<EngineFunctions, String> {
                let interface = component
                    .get_export_index(None, ENGINE_EXPORT)
                    .ok_or_else(|| format!("it does not export {ENGINE_EXPORT}"))?;
                let find = |name: &str| {
                    component
                        .get_export_index(Some(&interface), name)
                        .ok_or_else(|| format!("its {ENGINE_EXPORT} lacks the function {name}"))
                };
                Ok(EngineFunctions {
                    $describe: find($describe_name)?,
                    $($method: find($name)?,)*
                })
            }
        }

        impl EngineCall {
            /// Type-check every function against the types of the calls.
            pub fn check_types(&self, store: &mut Store<CallState>) -> wasmtime::Result<()> {
                self.instance
                    .get_typed_func::<(), ($info,)>(&mut *store, &self.functions.$describe)?;
                $(self
                    .instance
                    .get_typed_func::<(&HostConfig, $($type,)*), (Result<$answer, PluginError>,)>(
                        &mut *store,
                        &self.functions.$method,
                    )?;)*
                Ok(())
            }

            #[doc = concat!("`", $describe_name, "`: what the engine is (called once, at load).")]
            pub async fn $describe(&self, store: &mut Store<CallState>) -> wasmtime::Result<$info> {
                let function = self
                    .instance
                    .get_typed_func::<(), ($info,)>(&mut *store, &self.functions.$describe)?;
                let (answer,) = function.call_async(&mut *store, ()).await?;
                Ok(answer)
            }

            $(
            #[doc = concat!("`", $name, "` in this instance.")]
            pub async fn $method(
                &self,
                store: &mut Store<CallState>,
                host: &HostConfig,
                $($arg: $type),*
            ) -> wasmtime::Result<Result<$answer, PluginError>> {
                // Only this function's types are checked here; the others
                // were checked when the plugin loaded.
                let function = self
                    .instance
                    .get_typed_func::<(&HostConfig, $($type,)*), (Result<$answer, PluginError>,)>(
                        &mut *store,
                        &self.functions.$method,
                    )?;
                let (answer,) = function.call_async(&mut *store, (host, $($arg,)*)).await?;
                Ok(answer)
            }
            )*
        }

        impl PluginRuntime {
            $(
            #[doc = concat!("`", $name, "` for the host of `target`, in a fresh instance.")]
            pub async fn $method(
                &self,
                target: &EngineTarget,
                $($arg: $type),*
            ) -> Result<$answer, EngineError> {
                let plugin = self.plugin(&target.engine)?;
                self.invoke(&plugin, Some(target.scope.clone()), $name, async |engine, store| {
                    engine.$method(store, &target.config, $($arg),*).await
                })
                .await
            }
            )*
        }
    };
}

engine_functions! {
    fn describe = "describe" () -> EngineInfo;
    fn host_status = "host-status" (host: &HostConfig) -> Result<HostCounters, PluginError>;
    fn vm_list = "vm-list" (host: &HostConfig) -> Result<Vec<VmInfo>, PluginError>;
    fn vm_get = "vm-get" (host: &HostConfig, vm_uuid: &str) -> Result<VmInfo, PluginError>;
    fn vm_create = "vm-create" (host: &HostConfig, spec: &VmSpec) -> Result<VmInfo, PluginError>;
    fn vm_update = "vm-update" (host: &HostConfig, spec: &VmSpec) -> Result<VmInfo, PluginError>;
    fn vm_delete = "vm-delete" (host: &HostConfig, vm_uuid: &str) -> Result<(), PluginError>;
    fn vm_power = "vm-power" (host: &HostConfig, vm_uuid: &str, action: PowerAction)
        -> Result<PowerState, PluginError>;
    fn vm_usage = "vm-usage" (host: &HostConfig) -> Result<Vec<VmCounters>, PluginError>;
    fn vm_console = "vm-console" (host: &HostConfig, vm_uuid: &str)
        -> Result<ConsoleEndpoint, PluginError>;
    fn vm_scan = "vm-scan" (host: &HostConfig, prefix: &str) -> Result<Vec<VmInfo>, PluginError>;
    fn nat_apply = "nat-apply" (host: &HostConfig, vm_uuid: &str, forward: &PortForward)
        -> Result<PortForward, PluginError>;
    fn nat_remove = "nat-remove" (host: &HostConfig, vm_uuid: &str, forward: &PortForward)
        -> Result<(), PluginError>;
    fn ip_apply = "ip-apply" (host: &HostConfig, vm_uuid: &str, nic: &Nic) -> Result<Nic, PluginError>;
    fn ip_remove = "ip-remove" (host: &HostConfig, vm_uuid: &str, nic: &Nic) -> Result<(), PluginError>;
    fn proxy_apply = "proxy-apply" (host: &HostConfig, vm_uuid: &str, site: &ProxySite)
        -> Result<ProxySite, PluginError>;
    fn proxy_remove = "proxy-remove" (host: &HostConfig, vm_uuid: &str, site: &ProxySite)
        -> Result<(), PluginError>;
}

/// The operator-facing text of an engine error: its kind and message.
pub fn describe_error(error: &PluginError) -> String {
    match error {
        PluginError::NotFound(message) => format!("not found: {message}"),
        PluginError::Invalid(message) => format!("invalid: {message}"),
        PluginError::Conflict(message) => format!("conflict: {message}"),
        PluginError::Denied(message) => format!("denied: {message}"),
        PluginError::Unsupported(message) => format!("unsupported: {message}"),
        PluginError::Failed(message) => format!("failed: {message}"),
    }
}

impl PowerState {
    /// The API's spelling of a power state.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Paused => "paused",
            PowerState::Stopping => "stopping",
            PowerState::Suspended => "suspended",
            PowerState::Crashed => "crashed",
            PowerState::Unknown => "unknown",
        }
    }
}
