//! `openidcs-plugin-libvirt`: the main openidcs engine, a WebAssembly
//! component that drives QEMU/KVM virtual machines and LXC containers through
//! the host's `libvirt` capability, publishes VM ports through `nat` and
//! domains through `proxy`, and reports through `log`.
//!
//! This file owns only the export: each `engine` function is one call into
//! `ops` with the real `caps::Imports`. The engine is stateless (a fresh
//! instance per call); what it must remember about a VM (OS image, volumes
//! and their sizes, NIC addresses) it keeps in the domain's `<metadata>`.
//!
//! Module map: `caps` (the imports behind a trait), `convert` (pure
//! translation between WIT records and libvirt XML), `ops` (call
//! sequences with cleanup). XML building and reading live in the SDK
//! (`openidcs_sdk::domain`) so other engines can reuse them.

mod caps;
mod convert;
mod ops;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use caps::Imports;
use openidcs_sdk::{
    ConsoleEndpoint, CpuChoice, Engine, EngineInfo, FirstBoot, HostConfig, HostCounters,
    ImageEntry, InstallPlan, Nic, OsImage, PasswordRoute, PortForward, PowerAction, PowerState,
    ProxySite, Result, VmCounters, VmInfo, VmSpec, generate_mac,
};

struct LibvirtEngine;

impl Engine for LibvirtEngine {
    fn describe() -> EngineInfo {
        EngineInfo {
            name: "libvirt".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "QEMU/KVM virtual machines and LXC containers through libvirt".to_owned(),
        }
    }

    fn host_status(host: HostConfig) -> Result<HostCounters> {
        ops::host_status(&Imports, &host)
    }

    fn vm_list(host: HostConfig) -> Result<Vec<VmInfo>> {
        ops::vm_list(&Imports, &host)
    }

    fn vm_get(host: HostConfig, vm_uuid: String) -> Result<VmInfo> {
        ops::vm_get(&Imports, &host, &vm_uuid)
    }

    fn vm_create(host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        ops::vm_create(&Imports, &host, &spec, &mut generate_mac)
    }

    fn vm_update(host: HostConfig, spec: VmSpec) -> Result<VmInfo> {
        ops::vm_update(&Imports, &host, &spec, &mut generate_mac)
    }

    fn vm_delete(host: HostConfig, vm_uuid: String) -> Result<()> {
        ops::vm_delete(&Imports, &host, &vm_uuid)
    }

    fn vm_power(_host: HostConfig, vm_uuid: String, action: PowerAction) -> Result<PowerState> {
        ops::vm_power(&Imports, &vm_uuid, action)
    }

    fn vm_usage(host: HostConfig) -> Result<Vec<VmCounters>> {
        ops::vm_usage(&Imports, &host)
    }

    fn vm_console(host: HostConfig, vm_uuid: String) -> Result<ConsoleEndpoint> {
        ops::vm_console(&Imports, &host, &vm_uuid)
    }

    fn vm_scan(host: HostConfig, prefix: String) -> Result<Vec<VmInfo>> {
        ops::vm_scan(&Imports, &host, &prefix)
    }

    fn nat_apply(host: HostConfig, vm_uuid: String, forward: PortForward) -> Result<PortForward> {
        ops::nat_apply(&Imports, &host, &vm_uuid, forward)
    }

    fn nat_remove(_host: HostConfig, vm_uuid: String, forward: PortForward) -> Result<()> {
        ops::nat_remove(&Imports, &vm_uuid, &forward)
    }

    fn ip_apply(host: HostConfig, vm_uuid: String, nic: Nic) -> Result<Nic> {
        ops::ip_apply(&Imports, &host, &vm_uuid, nic, &mut generate_mac)
    }

    fn ip_remove(host: HostConfig, vm_uuid: String, nic: Nic) -> Result<()> {
        ops::ip_remove(&Imports, &host, &vm_uuid, &nic)
    }

    fn proxy_apply(host: HostConfig, vm_uuid: String, site: ProxySite) -> Result<ProxySite> {
        ops::proxy_apply(&Imports, &host, &vm_uuid, site)
    }

    fn os_images(_host: HostConfig, catalogue: Vec<ImageEntry>) -> Result<Vec<OsImage>> {
        ops::os_images(&Imports, &catalogue)
    }

    fn vm_install(host: HostConfig, spec: VmSpec, plan: InstallPlan) -> Result<VmInfo> {
        ops::vm_install(&Imports, &host, &spec, &plan)
    }

    fn vm_password(
        _host: HostConfig,
        vm_uuid: String,
        user: String,
        boot: FirstBoot,
    ) -> Result<PasswordRoute> {
        ops::vm_password(&Imports, &vm_uuid, &user, &boot)
    }

    fn cpu_probe(host: HostConfig, wanted: Option<CpuChoice>) -> Result<CpuChoice> {
        ops::cpu_probe(&Imports, &host, wanted.as_ref())
    }

    fn proxy_remove(_host: HostConfig, vm_uuid: String, site: ProxySite) -> Result<()> {
        ops::proxy_remove(&Imports, &vm_uuid, &site)
    }
}

openidcs_sdk::export_engine!(LibvirtEngine);
