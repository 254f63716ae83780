//! The doors out of the sandbox, behind one trait.
//!
//! [`Capabilities`] mirrors the WIT imports this engine uses (`libvirt`,
//! `nat`, `proxy`, `log`) so that the engine's logic in [`crate::ops`] is
//! written once against the trait: [`Imports`] calls the real host
//! functions inside the component, and the tests drive the same logic
//! natively against an in-memory fake. This module adds no behaviour of its
//! own; scope checks happen on the host side of each import.

use openidcs_sdk::libvirt::{self, Domain, DomainStats, ImageVolume, LifecycleOp, NodeSummary};
use openidcs_sdk::{PortForward, PowerState, ProxySite, RateLimit, Result, log, nat, proxy};

/// How a log record is tagged.
pub use openidcs_sdk::log::Level;

/// Everything the engine may ask of the host, one method per import.
pub trait Capabilities {
    fn list_domains(&self) -> Result<Vec<Domain>>;
    fn get_domain(&self, name: &str) -> Result<Domain>;
    fn domain_xml(&self, name: &str, inactive: bool) -> Result<String>;
    fn define_domain(&self, xml: &str) -> Result<Domain>;
    fn undefine_domain(&self, name: &str) -> Result<()>;
    fn lifecycle(&self, name: &str, op: LifecycleOp) -> Result<PowerState>;
    fn all_domain_stats(&self) -> Result<Vec<DomainStats>>;
    fn node_info(&self) -> Result<NodeSummary>;
    fn create_volume(&self, name: &str, capacity_mb: u64) -> Result<String>;
    fn resize_volume(&self, name: &str, capacity_mb: u64) -> Result<()>;
    fn delete_volume(&self, name: &str) -> Result<()>;
    fn attach_device(&self, domain: &str, xml: &str, live: bool) -> Result<()>;
    fn detach_device(&self, domain: &str, xml: &str, live: bool) -> Result<()>;
    fn update_device(&self, domain: &str, xml: &str, live: bool) -> Result<()>;
    fn network_xml(&self, network: &str) -> Result<String>;
    fn dhcp_host_add(&self, network: &str, mac: &str, ip: &str, name: &str) -> Result<()>;
    fn dhcp_host_remove(&self, network: &str, mac: &str, ip: &str) -> Result<()>;
    fn list_images(&self) -> Result<Vec<ImageVolume>>;
    fn create_volume_from_image(
        &self,
        name: &str,
        image: &str,
        capacity_mb: u64,
        linked: bool,
    ) -> Result<String>;
    fn upload_volume(&self, name: &str, content: &[u8]) -> Result<String>;
    fn guest_set_password(&self, domain: &str, user: &str, crypt_hash: &str) -> Result<()>;
    fn domain_capabilities(&self) -> Result<String>;
    fn try_domain(&self, xml: &str) -> Result<()>;
    fn nat_add_rule(&self, forward: &PortForward) -> Result<()>;
    fn nat_remove_rule(&self, id: u64) -> Result<()>;
    fn nat_set_rate_limit(&self, limit: &RateLimit) -> Result<()>;
    fn nat_remove_rate_limit(&self, vm: &str) -> Result<()>;
    fn proxy_put_site(&self, site: &ProxySite) -> Result<()>;
    fn proxy_remove_site(&self, id: u64) -> Result<()>;
    fn log(&self, level: Level, message: &str);
}

/// The real imports of the component.
pub struct Imports;

impl Capabilities for Imports {
    fn list_domains(&self) -> Result<Vec<Domain>> {
        libvirt::list_domains()
    }
    fn get_domain(&self, name: &str) -> Result<Domain> {
        libvirt::get_domain(name)
    }
    fn domain_xml(&self, name: &str, inactive: bool) -> Result<String> {
        libvirt::domain_xml(name, inactive)
    }
    fn define_domain(&self, xml: &str) -> Result<Domain> {
        libvirt::define_domain(xml)
    }
    fn undefine_domain(&self, name: &str) -> Result<()> {
        libvirt::undefine_domain(name)
    }
    fn lifecycle(&self, name: &str, op: LifecycleOp) -> Result<PowerState> {
        libvirt::lifecycle(name, op)
    }
    fn all_domain_stats(&self) -> Result<Vec<DomainStats>> {
        libvirt::all_domain_stats()
    }
    fn node_info(&self) -> Result<NodeSummary> {
        libvirt::node_info()
    }
    fn create_volume(&self, name: &str, capacity_mb: u64) -> Result<String> {
        libvirt::create_volume(name, capacity_mb)
    }
    fn resize_volume(&self, name: &str, capacity_mb: u64) -> Result<()> {
        libvirt::resize_volume(name, capacity_mb)
    }
    fn delete_volume(&self, name: &str) -> Result<()> {
        libvirt::delete_volume(name)
    }
    fn attach_device(&self, domain: &str, xml: &str, live: bool) -> Result<()> {
        libvirt::attach_device(domain, xml, live)
    }
    fn detach_device(&self, domain: &str, xml: &str, live: bool) -> Result<()> {
        libvirt::detach_device(domain, xml, live)
    }
    fn update_device(&self, domain: &str, xml: &str, live: bool) -> Result<()> {
        libvirt::update_device(domain, xml, live)
    }
    fn network_xml(&self, network: &str) -> Result<String> {
        libvirt::network_xml(network)
    }
    fn dhcp_host_add(&self, network: &str, mac: &str, ip: &str, name: &str) -> Result<()> {
        libvirt::dhcp_host_add(network, mac, ip, name)
    }
    fn dhcp_host_remove(&self, network: &str, mac: &str, ip: &str) -> Result<()> {
        libvirt::dhcp_host_remove(network, mac, ip)
    }
    fn list_images(&self) -> Result<Vec<ImageVolume>> {
        libvirt::list_images()
    }
    fn create_volume_from_image(
        &self,
        name: &str,
        image: &str,
        capacity_mb: u64,
        linked: bool,
    ) -> Result<String> {
        libvirt::create_volume_from_image(name, image, capacity_mb, linked)
    }
    fn upload_volume(&self, name: &str, content: &[u8]) -> Result<String> {
        libvirt::upload_volume(name, content)
    }
    fn guest_set_password(&self, domain: &str, user: &str, crypt_hash: &str) -> Result<()> {
        libvirt::guest_set_password(domain, user, crypt_hash)
    }
    fn domain_capabilities(&self) -> Result<String> {
        libvirt::domain_capabilities()
    }
    fn try_domain(&self, xml: &str) -> Result<()> {
        libvirt::try_domain(xml)
    }
    fn nat_add_rule(&self, forward: &PortForward) -> Result<()> {
        nat::add_rule(forward)
    }
    fn nat_remove_rule(&self, id: u64) -> Result<()> {
        nat::remove_rule(id)
    }
    fn nat_set_rate_limit(&self, limit: &RateLimit) -> Result<()> {
        nat::set_rate_limit(limit)
    }
    fn nat_remove_rate_limit(&self, vm: &str) -> Result<()> {
        nat::remove_rate_limit(vm)
    }
    fn proxy_put_site(&self, site: &ProxySite) -> Result<()> {
        proxy::put_site(site)
    }
    fn proxy_remove_site(&self, id: u64) -> Result<()> {
        proxy::remove_site(id)
    }
    fn log(&self, level: Level, message: &str) {
        log::log(level, message);
    }
}
