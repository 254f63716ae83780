//! The one place `bindgen!` runs for the `openidcs:engine@0.2.2` world
//! (the frozen 0.1.0 world's imports are in [`super::v0_1`]).
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
    ConsoleEndpoint, CpuChoice, Disk, EngineInfo, FirstBoot, HostConfig, HostCounters, ImageEntry,
    InstallPlan, IpPool, IpVersion, Nic, NicKind, OsImage, PasswordRoute, PortForward, PowerAction,
    PowerState, Protocol, ProxySite, RateLimit, TerminalRequest, TlsPair, VmCounters, VmInfo,
    VmSpec,
};

/// The WIT package version this server speaks.
pub const WIT_VERSION: &str = "0.2.2";

/// The older versions it still loads plugins of: their worlds are frozen
/// under `wit/since_v*/`, their records are 0.2.0's (0.2.0 only added), and
/// their imports are linked by [`super::v0_1`]. A 0.2.0 or 0.2.1 plugin
/// needs no such list: each 0.2.x only added, and the linker gives a
/// `@0.2.0` import the semver-compatible `@0.2.2` definition.
pub const OLDER_WIT_VERSIONS: &[&str] = &["0.1.0"];

/// The export every engine has, in each version.
fn engine_export(version: &str) -> String {
    format!("openidcs:engine/engine@{version}")
}

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
    pub fn new(instance_pre: InstancePre<CallState>, version: &str) -> Result<EnginePre, String> {
        let functions = EngineFunctions::find(instance_pre.component(), version)?;
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
            fn $method:ident = $name:literal since $since:literal
                (host: &HostConfig $(, $arg:ident: $type:ty)*)
                -> Result<$answer:ty, PluginError>;
        )*
    ) => {
        /// Where each function of one plugin's `engine` export is; a
        /// function newer than the plugin's WIT version is `None`.
        struct EngineFunctions {
            version: String,
            $describe: ComponentExportIndex,
            $($method: Option<ComponentExportIndex>,)*
        }

        impl EngineFunctions {
            fn find(component: &Component, version: &str) -> Result<EngineFunctions, String> {
                let export = engine_export(version);
                let interface = component
                    .get_export_index(None, &export)
                    .ok_or_else(|| format!("it does not export {export}"))?;
                let find = |name: &str, since: &str| {
                    match component.get_export_index(Some(&interface), name) {
                        Some(index) => Ok(Some(index)),
                        None if since_newer(since, version) => Ok(None),
                        None => Err(format!("its {export} lacks the function {name}")),
                    }
                };
                Ok(EngineFunctions {
                    version: version.to_owned(),
                    $describe: find($describe_name, "0.1.0")?
                        .ok_or_else(|| format!("its {export} lacks {}", $describe_name))?,
                    $($method: find($name, $since)?,)*
                })
            }
        }

        impl EngineCall {
            /// Type-check every function against the types of the calls.
            pub fn check_types(&self, store: &mut Store<CallState>) -> wasmtime::Result<()> {
                self.instance
                    .get_typed_func::<(), ($info,)>(&mut *store, &self.functions.$describe)?;
                $(if let Some(index) = &self.functions.$method {
                    self.instance
                        .get_typed_func::<(&HostConfig, $($type,)*), (Result<$answer, PluginError>,)>(
                            &mut *store,
                            index,
                        )?;
                })*
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
                let Some(index) = &self.functions.$method else {
                    return Ok(Err(PluginError::Unsupported(format!(
                        "this engine speaks openidcs:engine@{}, which has no {} (added in {})",
                        self.functions.version, $name, $since
                    ))));
                };
                // Only this function's types are checked here; the others
                // were checked when the plugin loaded.
                let function = self
                    .instance
                    .get_typed_func::<(&HostConfig, $($type,)*), (Result<$answer, PluginError>,)>(
                        &mut *store,
                        index,
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
    fn host_status = "host-status" since "0.1.0" (host: &HostConfig)
        -> Result<HostCounters, PluginError>;
    fn vm_list = "vm-list" since "0.1.0" (host: &HostConfig) -> Result<Vec<VmInfo>, PluginError>;
    fn vm_get = "vm-get" since "0.1.0" (host: &HostConfig, vm_uuid: &str)
        -> Result<VmInfo, PluginError>;
    fn vm_create = "vm-create" since "0.1.0" (host: &HostConfig, spec: &VmSpec)
        -> Result<VmInfo, PluginError>;
    fn vm_update = "vm-update" since "0.1.0" (host: &HostConfig, spec: &VmSpec)
        -> Result<VmInfo, PluginError>;
    fn vm_delete = "vm-delete" since "0.1.0" (host: &HostConfig, vm_uuid: &str)
        -> Result<(), PluginError>;
    fn vm_power = "vm-power" since "0.1.0" (host: &HostConfig, vm_uuid: &str, action: PowerAction)
        -> Result<PowerState, PluginError>;
    fn vm_usage = "vm-usage" since "0.1.0" (host: &HostConfig)
        -> Result<Vec<VmCounters>, PluginError>;
    fn vm_console = "vm-console" since "0.1.0" (host: &HostConfig, vm_uuid: &str)
        -> Result<ConsoleEndpoint, PluginError>;
    fn vm_scan = "vm-scan" since "0.1.0" (host: &HostConfig, prefix: &str)
        -> Result<Vec<VmInfo>, PluginError>;
    fn nat_apply = "nat-apply" since "0.1.0" (host: &HostConfig, vm_uuid: &str, forward: &PortForward)
        -> Result<PortForward, PluginError>;
    fn nat_remove = "nat-remove" since "0.1.0" (host: &HostConfig, vm_uuid: &str, forward: &PortForward)
        -> Result<(), PluginError>;
    fn ip_apply = "ip-apply" since "0.1.0" (host: &HostConfig, vm_uuid: &str, nic: &Nic)
        -> Result<Nic, PluginError>;
    fn ip_remove = "ip-remove" since "0.1.0" (host: &HostConfig, vm_uuid: &str, nic: &Nic)
        -> Result<(), PluginError>;
    fn proxy_apply = "proxy-apply" since "0.1.0" (host: &HostConfig, vm_uuid: &str, site: &ProxySite)
        -> Result<ProxySite, PluginError>;
    fn proxy_remove = "proxy-remove" since "0.1.0" (host: &HostConfig, vm_uuid: &str, site: &ProxySite)
        -> Result<(), PluginError>;
    fn os_images = "os-images" since "0.2.0" (host: &HostConfig, catalogue: &[ImageEntry])
        -> Result<Vec<OsImage>, PluginError>;
    fn vm_install = "vm-install" since "0.2.0" (host: &HostConfig, spec: &VmSpec, plan: &InstallPlan)
        -> Result<VmInfo, PluginError>;
    fn vm_password = "vm-password" since "0.2.0"
        (host: &HostConfig, vm_uuid: &str, user: &str, boot: &FirstBoot)
        -> Result<PasswordRoute, PluginError>;
    fn cpu_probe = "cpu-probe" since "0.2.0" (host: &HostConfig, wanted: Option<&CpuChoice>)
        -> Result<CpuChoice, PluginError>;
    fn vm_terminal = "vm-terminal" since "0.2.1" (host: &HostConfig, vm_uuid: &str)
        -> Result<TerminalRequest, PluginError>;
}

/// Is a function added in `since` newer than a plugin of `version`?
fn since_newer(since: &str, version: &str) -> bool {
    super::loader::version_key(since) > super::loader::version_key(version)
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
