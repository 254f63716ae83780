//! Plugins built against `openidcs:engine@0.1.0` (world frozen in
//! `wit/since_v0.1.0/`) keep loading.
//!
//! 0.2.0 only added records and functions, so a 0.1.0 engine's export is
//! called with the 0.2.0 Rust types (the component model checks records by
//! shape, and the shapes are the same) and the functions it lacks answer
//! `unsupported` ([`super::bindings`]). What differs is the names of the
//! imports: a 0.1.0 component imports `openidcs:engine/libvirt@0.1.0` and
//! so on. They are generated here from the frozen world and each function
//! is the 0.2.0 capability's, so scope checks live in one place.

use wasmtime::component::{HasSelf, Linker};

use super::instance::CallState;
use crate::caps::{self, CapError};
use crate::config::Grant;
// Named by `trappable_error_type` (a path from this module).
use crate::plugin::bindings::openidcs::engine as current;

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
    world: "engine-plugin",
    imports: { default: async | trappable },
    // The records of `types` are 0.2.0's (same shapes), and so is its error.
    with: {
        "openidcs:engine/types@0.1.0": crate::plugin::bindings::openidcs::engine::types,
    },
    trappable_error_type: {
        "openidcs:engine/types@0.1.0.error" => CapError,
    },
});

use self::openidcs::engine::{libvirt, log, nat, proxy};

/// Link the 0.1.0 names of the granted capabilities.
pub fn link(linker: &mut Linker<CallState>, grants: &[Grant]) -> wasmtime::Result<()> {
    // `types` has no functions, but every 0.1.0 engine imports it.
    linker.instance("openidcs:engine/types@0.1.0")?;
    for grant in grants {
        match grant {
            Grant::Libvirt => libvirt::add_to_linker::<
                CallState,
                HasSelf<caps::libvirt::LibvirtCall>,
            >(linker, |state| &mut state.caps.libvirt)?,
            Grant::Nat => {
                nat::add_to_linker::<CallState, HasSelf<caps::nat::NatCall>>(linker, |state| {
                    &mut state.caps.nat
                })?
            }
            Grant::Proxy => proxy::add_to_linker::<CallState, HasSelf<caps::proxy::ProxyCall>>(
                linker,
                |state| &mut state.caps.proxy,
            )?,
            Grant::Log => {
                log::add_to_linker::<CallState, HasSelf<caps::log::LogCall>>(linker, |state| {
                    &mut state.caps.log
                })?
            }
            // wasi:http has no 0.1.0 name: linked once, by `caps::link`.
            Grant::Http => {}
        }
    }
    Ok(())
}

type Answer<T> = Result<T, CapError>;

fn domain(domain: current::libvirt::Domain) -> libvirt::Domain {
    libvirt::Domain {
        name: domain.name,
        uuid: domain.uuid,
        state: domain.state,
    }
}

impl libvirt::Host for caps::libvirt::LibvirtCall {
    async fn list_domains(&mut self) -> Answer<Vec<libvirt::Domain>> {
        let domains = current::libvirt::Host::list_domains(self).await?;
        Ok(domains.into_iter().map(domain).collect())
    }
    async fn get_domain(&mut self, name: String) -> Answer<libvirt::Domain> {
        current::libvirt::Host::get_domain(self, name)
            .await
            .map(domain)
    }
    async fn domain_xml(&mut self, name: String, inactive: bool) -> Answer<String> {
        current::libvirt::Host::domain_xml(self, name, inactive).await
    }
    async fn define_domain(&mut self, xml: String) -> Answer<libvirt::Domain> {
        current::libvirt::Host::define_domain(self, xml)
            .await
            .map(domain)
    }
    async fn undefine_domain(&mut self, name: String) -> Answer<()> {
        current::libvirt::Host::undefine_domain(self, name).await
    }
    async fn lifecycle(
        &mut self,
        name: String,
        op: libvirt::LifecycleOp,
    ) -> Answer<current::types::PowerState> {
        use current::libvirt::LifecycleOp as Op;
        let op = match op {
            libvirt::LifecycleOp::Start => Op::Start,
            libvirt::LifecycleOp::Shutdown => Op::Shutdown,
            libvirt::LifecycleOp::Destroy => Op::Destroy,
            libvirt::LifecycleOp::Reboot => Op::Reboot,
            libvirt::LifecycleOp::Reset => Op::Reset,
            libvirt::LifecycleOp::Suspend => Op::Suspend,
            libvirt::LifecycleOp::Resume => Op::Resume,
        };
        current::libvirt::Host::lifecycle(self, name, op).await
    }
    async fn all_domain_stats(&mut self) -> Answer<Vec<libvirt::DomainStats>> {
        let stats = current::libvirt::Host::all_domain_stats(self).await?;
        Ok(stats
            .into_iter()
            .map(|stats| libvirt::DomainStats {
                name: stats.name,
                state: stats.state,
                vcpus: stats.vcpus,
                cpu_time_ns: stats.cpu_time_ns,
                mem_max_kib: stats.mem_max_kib,
                mem_used_kib: stats.mem_used_kib,
                disk_capacity_bytes: stats.disk_capacity_bytes,
                disk_allocation_bytes: stats.disk_allocation_bytes,
                net_rx_bytes: stats.net_rx_bytes,
                net_tx_bytes: stats.net_tx_bytes,
            })
            .collect())
    }
    async fn node_info(&mut self) -> Answer<libvirt::NodeSummary> {
        let node = current::libvirt::Host::node_info(self).await?;
        Ok(libvirt::NodeSummary {
            hostname: node.hostname,
            hypervisor: node.hypervisor,
            hypervisor_version: node.hypervisor_version,
            cpus: node.cpus,
            cpu_busy_ns: node.cpu_busy_ns,
            cpu_idle_ns: node.cpu_idle_ns,
            mem_total_kib: node.mem_total_kib,
            mem_free_kib: node.mem_free_kib,
            storage_capacity_bytes: node.storage_capacity_bytes,
            storage_allocation_bytes: node.storage_allocation_bytes,
        })
    }
    async fn create_volume(&mut self, name: String, capacity_mb: u64) -> Answer<String> {
        current::libvirt::Host::create_volume(self, name, capacity_mb).await
    }
    async fn resize_volume(&mut self, name: String, capacity_mb: u64) -> Answer<()> {
        current::libvirt::Host::resize_volume(self, name, capacity_mb).await
    }
    async fn delete_volume(&mut self, name: String) -> Answer<()> {
        current::libvirt::Host::delete_volume(self, name).await
    }
    async fn attach_device(&mut self, domain: String, xml: String, live: bool) -> Answer<()> {
        current::libvirt::Host::attach_device(self, domain, xml, live).await
    }
    async fn detach_device(&mut self, domain: String, xml: String, live: bool) -> Answer<()> {
        current::libvirt::Host::detach_device(self, domain, xml, live).await
    }
    async fn network_xml(&mut self, network: String) -> Answer<String> {
        current::libvirt::Host::network_xml(self, network).await
    }
    async fn dhcp_host_add(
        &mut self,
        network: String,
        mac: String,
        ip: String,
        name: String,
    ) -> Answer<()> {
        current::libvirt::Host::dhcp_host_add(self, network, mac, ip, name).await
    }
    async fn dhcp_host_remove(&mut self, network: String, mac: String, ip: String) -> Answer<()> {
        current::libvirt::Host::dhcp_host_remove(self, network, mac, ip).await
    }
}

impl nat::Host for caps::nat::NatCall {
    async fn add_rule(&mut self, forward: current::types::PortForward) -> Answer<()> {
        current::nat::Host::add_rule(self, forward).await
    }
    async fn remove_rule(&mut self, id: u64) -> Answer<()> {
        current::nat::Host::remove_rule(self, id).await
    }
    async fn list_rules(&mut self) -> Answer<Vec<current::types::PortForward>> {
        current::nat::Host::list_rules(self).await
    }
}

impl proxy::Host for caps::proxy::ProxyCall {
    async fn put_site(&mut self, site: current::types::ProxySite) -> Answer<()> {
        current::proxy::Host::put_site(self, site).await
    }
    async fn remove_site(&mut self, id: u64) -> Answer<()> {
        current::proxy::Host::remove_site(self, id).await
    }
}

impl log::Host for caps::log::LogCall {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        use current::log::Level as Current;
        let level = match level {
            log::Level::Debug => Current::Debug,
            log::Level::Info => Current::Info,
            log::Level::Warn => Current::Warn,
            log::Level::Error => Current::Error,
        };
        current::log::Host::log(self, level, message).await
    }
}
