//! Test engine: `host-status` panics (a trap). The call fails with the panic
//! message; the next call works (a fresh instance per call).
//!
//! Built against the frozen `openidcs:engine@0.2.0` world (not the SDK, which
//! follows the newest): the test that a plugin made before 0.2.1 still loads,
//! its `log@0.2.0` import linked to the server's newer 0.2.x definition.

wit_bindgen::generate!({
    path: "../../../wit/since_v0.2.0",
    world: "libvirt-engine",
    generate_all,
});

use exports::openidcs::engine::engine::Guest;
use openidcs::engine::types::*;

struct Panics;

fn unsupported<T>(operation: &str) -> Result<T, Error> {
    Err(Error::Unsupported(format!(
        "the panic engine does not support {operation}"
    )))
}

impl Guest for Panics {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "panic".to_owned(),
            version: "0.0.0".to_owned(),
            description: "test engine whose host-status panics".to_owned(),
        }
    }

    fn host_status(host: HostConfig) -> Result<HostCounters, Error> {
        openidcs::engine::log::log(
            openidcs::engine::log::Level::Info,
            &format!("about to fail for host {}", host.name),
        );
        println!("about to fail for host {}", host.name);
        panic!("deliberate test panic for host {}", host.name);
    }
    fn vm_list(_: HostConfig) -> Result<Vec<VmInfo>, Error> {
        unsupported("vm-list")
    }
    fn vm_get(_: HostConfig, _: String) -> Result<VmInfo, Error> {
        unsupported("vm-get")
    }
    fn vm_create(_: HostConfig, _: VmSpec) -> Result<VmInfo, Error> {
        unsupported("vm-create")
    }
    fn vm_update(_: HostConfig, _: VmSpec) -> Result<VmInfo, Error> {
        unsupported("vm-update")
    }
    fn vm_delete(_: HostConfig, _: String) -> Result<(), Error> {
        unsupported("vm-delete")
    }
    fn vm_power(_: HostConfig, _: String, _: PowerAction) -> Result<PowerState, Error> {
        unsupported("vm-power")
    }
    fn vm_usage(_: HostConfig) -> Result<Vec<VmCounters>, Error> {
        unsupported("vm-usage")
    }
    fn vm_console(_: HostConfig, _: String) -> Result<ConsoleEndpoint, Error> {
        unsupported("vm-console")
    }
    fn vm_scan(_: HostConfig, _: String) -> Result<Vec<VmInfo>, Error> {
        unsupported("vm-scan")
    }
    fn nat_apply(_: HostConfig, _: String, _: PortForward) -> Result<PortForward, Error> {
        unsupported("nat-apply")
    }
    fn nat_remove(_: HostConfig, _: String, _: PortForward) -> Result<(), Error> {
        unsupported("nat-remove")
    }
    fn ip_apply(_: HostConfig, _: String, _: Nic) -> Result<Nic, Error> {
        unsupported("ip-apply")
    }
    fn ip_remove(_: HostConfig, _: String, _: Nic) -> Result<(), Error> {
        unsupported("ip-remove")
    }
    fn proxy_apply(_: HostConfig, _: String, _: ProxySite) -> Result<ProxySite, Error> {
        unsupported("proxy-apply")
    }
    fn proxy_remove(_: HostConfig, _: String, _: ProxySite) -> Result<(), Error> {
        unsupported("proxy-remove")
    }
    fn os_images(_: HostConfig, _: Vec<ImageEntry>) -> Result<Vec<OsImage>, Error> {
        unsupported("os-images")
    }
    fn vm_install(_: HostConfig, _: VmSpec, _: InstallPlan) -> Result<VmInfo, Error> {
        unsupported("vm-install")
    }
    fn vm_password(
        _: HostConfig,
        _: String,
        _: String,
        _: FirstBoot,
    ) -> Result<PasswordRoute, Error> {
        unsupported("vm-password")
    }
    fn cpu_probe(_: HostConfig, _: Option<CpuChoice>) -> Result<CpuChoice, Error> {
        unsupported("cpu-probe")
    }
}

export!(Panics);
