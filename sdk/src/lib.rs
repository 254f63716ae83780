//! The Rust SDK for openidcs engine plugins.
//!
//! It owns the guest bindings of the `openidcs:engine` WIT package so that a
//! plugin author never names a WIT path: implement [`Engine`] (every function
//! but [`Engine::describe`] has a default that answers `unsupported`) and call
//! [`export_engine!`]. Build with `cargo build --release --target wasm32-wasip2`;
//! the `.wasm` in `target/wasm32-wasip2/release/` is the component to load.
//!
//! The capability imports are re-exported as modules ([`libvirt`], [`nat`],
//! [`proxy`], [`log`]); a plugin may only call those the operator granted it,
//! and the server refuses at load a plugin that imports more.

pub mod cloudinit;
pub mod domain;
pub mod http;
pub mod xml;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "engine-plugin",
        pub_export_macro: true,
        default_bindings_module: "openidcs_sdk::bindings",
        export_macro_name: "export_engine_plugin",
        generate_all,
    });
}

pub use bindings::openidcs::engine::types::{
    ConsoleEndpoint, CpuChoice, Disk, EngineInfo, Error, FirstBoot, HostConfig, HostCounters,
    ImageEntry, InstallPlan, IpPool, IpVersion, Nic, NicKind, OsImage, PasswordRoute, PortForward,
    PowerAction, PowerState, Protocol, ProxySite, RateLimit, TerminalRequest, TlsPair, VmCounters,
    VmInfo, VmSpec,
};
pub use bindings::openidcs::engine::{libvirt, log, nat, proxy};

/// The result type of every engine function.
pub type Result<T> = core::result::Result<T, Error>;

/// An engine. Implement `describe` and the functions your hypervisor
/// supports; the others answer `unsupported` (the API turns that into a 400
/// naming the operation).
#[allow(unused_variables)]
pub trait Engine {
    fn describe() -> EngineInfo;

    fn host_status(host: HostConfig) -> Result<HostCounters> {
        Err(unsupported("host-status"))
    }
    fn vm_list(host: HostConfig) -> Result<Vec<VmInfo>> {
        Err(unsupported("vm-list"))
    }
    fn vm_get(host: HostConfig, vm_uuid: String) -> Result<VmInfo> {
        Err(unsupported("vm-get"))
    }
    fn vm_create(host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        Err(unsupported("vm-create"))
    }
    fn vm_update(host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        Err(unsupported("vm-update"))
    }
    fn vm_delete(host: HostConfig, vm_uuid: String) -> Result<()> {
        Err(unsupported("vm-delete"))
    }
    fn vm_power(host: HostConfig, vm_uuid: String, action: PowerAction) -> Result<PowerState> {
        Err(unsupported("vm-power"))
    }
    fn vm_usage(host: HostConfig) -> Result<Vec<VmCounters>> {
        Err(unsupported("vm-usage"))
    }
    fn vm_console(host: HostConfig, vm_uuid: String) -> Result<ConsoleEndpoint> {
        Err(unsupported("vm-console"))
    }
    fn vm_scan(host: HostConfig, prefix: String) -> Result<Vec<VmInfo>> {
        Err(unsupported("vm-scan"))
    }
    fn nat_apply(host: HostConfig, vm_uuid: String, forward: PortForward) -> Result<PortForward> {
        Err(unsupported("nat-apply"))
    }
    fn nat_remove(host: HostConfig, vm_uuid: String, forward: PortForward) -> Result<()> {
        Err(unsupported("nat-remove"))
    }
    fn ip_apply(host: HostConfig, vm_uuid: String, nic: Nic) -> Result<Nic> {
        Err(unsupported("ip-apply"))
    }
    fn ip_remove(host: HostConfig, vm_uuid: String, nic: Nic) -> Result<()> {
        Err(unsupported("ip-remove"))
    }
    fn proxy_apply(host: HostConfig, vm_uuid: String, site: ProxySite) -> Result<ProxySite> {
        Err(unsupported("proxy-apply"))
    }
    fn proxy_remove(host: HostConfig, vm_uuid: String, site: ProxySite) -> Result<()> {
        Err(unsupported("proxy-remove"))
    }
    fn os_images(host: HostConfig, catalogue: Vec<ImageEntry>) -> Result<Vec<OsImage>> {
        Err(unsupported("os-images"))
    }
    fn vm_install(host: HostConfig, spec: VmSpec, plan: InstallPlan) -> Result<VmInfo> {
        Err(unsupported("vm-install"))
    }
    fn vm_password(
        host: HostConfig,
        vm_uuid: String,
        user: String,
        boot: FirstBoot,
    ) -> Result<PasswordRoute> {
        Err(unsupported("vm-password"))
    }
    fn cpu_probe(host: HostConfig, wanted: Option<CpuChoice>) -> Result<CpuChoice> {
        Err(unsupported("cpu-probe"))
    }
    /// Only for an engine whose `vm_console` answers the `terminal` protocol.
    fn vm_terminal(host: HostConfig, vm_uuid: String) -> Result<TerminalRequest> {
        Err(unsupported("vm-terminal"))
    }
}

/// The `unsupported` error for an operation this engine does not implement.
pub fn unsupported(operation: &str) -> Error {
    Error::Unsupported(format!("this engine does not support {operation}"))
}

/// The message of an error, whatever its kind.
pub fn message_of(error: &Error) -> &str {
    match error {
        Error::NotFound(message)
        | Error::Invalid(message)
        | Error::Conflict(message)
        | Error::Denied(message)
        | Error::Unsupported(message)
        | Error::Failed(message) => message,
    }
}

/// Write a log record tagged with the plugin's name (needs the `log` grant).
pub fn log_info(message: &str) {
    log::log(log::Level::Info, message);
}

/// Write a warning record tagged with the plugin's name (needs the `log` grant).
pub fn log_warn(message: &str) {
    log::log(log::Level::Warn, message);
}

/// The rate limit for `nat.set-rate-limit` that polices a VM's speeds
/// (kbit/s; 0: no limit that way) on its NICs' addresses; `None` when it has
/// no address or no limit (then `nat.remove-rate-limit` is what to call).
pub fn rate_limit_for(
    vm_uuid: &str,
    nics: &[Nic],
    upload_kbps: u64,
    download_kbps: u64,
) -> Option<RateLimit> {
    let addresses: Vec<String> = nics
        .iter()
        .flat_map(|nic| [&nic.ip4_addr, &nic.ip6_addr])
        .filter(|addr| !addr.is_empty())
        .cloned()
        .collect();
    (!addresses.is_empty() && (upload_kbps > 0 || download_kbps > 0)).then(|| RateLimit {
        vm_uuid: vm_uuid.to_owned(),
        addresses,
        upload_kbps,
        download_kbps,
    })
}

/// 64 random bits. Randomness comes from WASI (`wasi:random`) through std's
/// hasher seeds, so the SDK needs no extra dependency.
fn random_bits() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish()
}

/// A random, locally administered MAC in QEMU's `52:54:00` block.
pub fn generate_mac() -> String {
    let bits = random_bits();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (bits >> 16) as u8,
        (bits >> 8) as u8,
        bits as u8
    )
}

/// Six random hex digits, to make a throwaway name unique.
pub fn random_suffix() -> String {
    format!("{:06x}", random_bits() & 0xff_ffff)
}

/// Export `$engine` (a type implementing [`Engine`]) as this component's
/// `openidcs:engine/engine` interface.
#[macro_export]
macro_rules! export_engine {
    ($engine:ty) => {
        #[doc(hidden)]
        struct __OpenidcsEngineExport;

        impl $crate::bindings::exports::openidcs::engine::engine::Guest for __OpenidcsEngineExport {
            fn describe() -> $crate::EngineInfo {
                <$engine as $crate::Engine>::describe()
            }
            fn host_status(host: $crate::HostConfig) -> $crate::Result<$crate::HostCounters> {
                <$engine as $crate::Engine>::host_status(host)
            }
            fn vm_list(host: $crate::HostConfig) -> $crate::Result<Vec<$crate::VmInfo>> {
                <$engine as $crate::Engine>::vm_list(host)
            }
            fn vm_get(host: $crate::HostConfig, vm_uuid: String) -> $crate::Result<$crate::VmInfo> {
                <$engine as $crate::Engine>::vm_get(host, vm_uuid)
            }
            fn vm_create(host: $crate::HostConfig, spec: $crate::VmSpec) -> $crate::Result<$crate::VmInfo> {
                <$engine as $crate::Engine>::vm_create(host, spec)
            }
            fn vm_update(host: $crate::HostConfig, spec: $crate::VmSpec) -> $crate::Result<$crate::VmInfo> {
                <$engine as $crate::Engine>::vm_update(host, spec)
            }
            fn vm_delete(host: $crate::HostConfig, vm_uuid: String) -> $crate::Result<()> {
                <$engine as $crate::Engine>::vm_delete(host, vm_uuid)
            }
            fn vm_power(
                host: $crate::HostConfig,
                vm_uuid: String,
                action: $crate::PowerAction,
            ) -> $crate::Result<$crate::PowerState> {
                <$engine as $crate::Engine>::vm_power(host, vm_uuid, action)
            }
            fn vm_usage(host: $crate::HostConfig) -> $crate::Result<Vec<$crate::VmCounters>> {
                <$engine as $crate::Engine>::vm_usage(host)
            }
            fn vm_console(
                host: $crate::HostConfig,
                vm_uuid: String,
            ) -> $crate::Result<$crate::ConsoleEndpoint> {
                <$engine as $crate::Engine>::vm_console(host, vm_uuid)
            }
            fn vm_scan(host: $crate::HostConfig, prefix: String) -> $crate::Result<Vec<$crate::VmInfo>> {
                <$engine as $crate::Engine>::vm_scan(host, prefix)
            }
            fn nat_apply(
                host: $crate::HostConfig,
                vm_uuid: String,
                forward: $crate::PortForward,
            ) -> $crate::Result<$crate::PortForward> {
                <$engine as $crate::Engine>::nat_apply(host, vm_uuid, forward)
            }
            fn nat_remove(
                host: $crate::HostConfig,
                vm_uuid: String,
                forward: $crate::PortForward,
            ) -> $crate::Result<()> {
                <$engine as $crate::Engine>::nat_remove(host, vm_uuid, forward)
            }
            fn ip_apply(host: $crate::HostConfig, vm_uuid: String, nic: $crate::Nic) -> $crate::Result<$crate::Nic> {
                <$engine as $crate::Engine>::ip_apply(host, vm_uuid, nic)
            }
            fn ip_remove(host: $crate::HostConfig, vm_uuid: String, nic: $crate::Nic) -> $crate::Result<()> {
                <$engine as $crate::Engine>::ip_remove(host, vm_uuid, nic)
            }
            fn proxy_apply(
                host: $crate::HostConfig,
                vm_uuid: String,
                site: $crate::ProxySite,
            ) -> $crate::Result<$crate::ProxySite> {
                <$engine as $crate::Engine>::proxy_apply(host, vm_uuid, site)
            }
            fn proxy_remove(
                host: $crate::HostConfig,
                vm_uuid: String,
                site: $crate::ProxySite,
            ) -> $crate::Result<()> {
                <$engine as $crate::Engine>::proxy_remove(host, vm_uuid, site)
            }
            fn os_images(
                host: $crate::HostConfig,
                catalogue: Vec<$crate::ImageEntry>,
            ) -> $crate::Result<Vec<$crate::OsImage>> {
                <$engine as $crate::Engine>::os_images(host, catalogue)
            }
            fn vm_install(
                host: $crate::HostConfig,
                spec: $crate::VmSpec,
                plan: $crate::InstallPlan,
            ) -> $crate::Result<$crate::VmInfo> {
                <$engine as $crate::Engine>::vm_install(host, spec, plan)
            }
            fn vm_password(
                host: $crate::HostConfig,
                vm_uuid: String,
                user: String,
                boot: $crate::FirstBoot,
            ) -> $crate::Result<$crate::PasswordRoute> {
                <$engine as $crate::Engine>::vm_password(host, vm_uuid, user, boot)
            }
            fn cpu_probe(
                host: $crate::HostConfig,
                wanted: Option<$crate::CpuChoice>,
            ) -> $crate::Result<$crate::CpuChoice> {
                <$engine as $crate::Engine>::cpu_probe(host, wanted)
            }
            fn vm_terminal(
                host: $crate::HostConfig,
                vm_uuid: String,
            ) -> $crate::Result<$crate::TerminalRequest> {
                <$engine as $crate::Engine>::vm_terminal(host, vm_uuid)
            }
        }

        $crate::bindings::export_engine_plugin!(__OpenidcsEngineExport with_types_in $crate::bindings);
    };
}
