//! `openidcs:engine/libvirt`: libvirt, scoped to the URI of the call's host.
//! (Being written: every operation answers `unsupported` until it lands.)

use std::sync::Arc;

use super::{HostScope, no_host};
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::PowerState;
use crate::plugin::bindings::openidcs::engine::libvirt::{Domain, DomainStats, Host, LifecycleOp, NodeSummary};

pub struct LibvirtService {}

impl LibvirtService {
    pub fn new() -> LibvirtService {
        LibvirtService {}
    }
}

impl Default for LibvirtService {
    fn default() -> Self {
        LibvirtService::new()
    }
}

pub struct LibvirtCall {
    #[allow(dead_code)]
    service: Arc<LibvirtService>,
    host: Option<Arc<HostScope>>,
}

impl LibvirtCall {
    pub fn new(service: Arc<LibvirtService>, host: Option<Arc<HostScope>>) -> LibvirtCall {
        LibvirtCall { service, host }
    }

    fn pending(&self) -> PluginError {
        match &self.host {
            None => no_host(),
            Some(_) => PluginError::Unsupported("libvirt capability pending".to_owned()),
        }
    }
}

type Answer<T> = wasmtime::Result<Result<T, PluginError>>;

impl Host for LibvirtCall {
    async fn list_domains(&mut self) -> Answer<Vec<Domain>> {
        Ok(Err(self.pending()))
    }
    async fn get_domain(&mut self, _name: String) -> Answer<Domain> {
        Ok(Err(self.pending()))
    }
    async fn domain_xml(&mut self, _name: String, _inactive: bool) -> Answer<String> {
        Ok(Err(self.pending()))
    }
    async fn define_domain(&mut self, _xml: String) -> Answer<Domain> {
        Ok(Err(self.pending()))
    }
    async fn undefine_domain(&mut self, _name: String) -> Answer<()> {
        Ok(Err(self.pending()))
    }
    async fn lifecycle(&mut self, _name: String, _op: LifecycleOp) -> Answer<PowerState> {
        Ok(Err(self.pending()))
    }
    async fn all_domain_stats(&mut self) -> Answer<Vec<DomainStats>> {
        Ok(Err(self.pending()))
    }
    async fn node_info(&mut self) -> Answer<NodeSummary> {
        Ok(Err(self.pending()))
    }
    async fn create_volume(&mut self, _name: String, _capacity_mb: u64) -> Answer<String> {
        Ok(Err(self.pending()))
    }
    async fn resize_volume(&mut self, _name: String, _capacity_mb: u64) -> Answer<()> {
        Ok(Err(self.pending()))
    }
    async fn delete_volume(&mut self, _name: String) -> Answer<()> {
        Ok(Err(self.pending()))
    }
    async fn attach_device(&mut self, _domain: String, _xml: String, _live: bool) -> Answer<()> {
        Ok(Err(self.pending()))
    }
    async fn detach_device(&mut self, _domain: String, _xml: String, _live: bool) -> Answer<()> {
        Ok(Err(self.pending()))
    }
    async fn network_xml(&mut self, _network: String) -> Answer<String> {
        Ok(Err(self.pending()))
    }
    async fn dhcp_host_add(&mut self, _network: String, _mac: String, _ip: String, _name: String) -> Answer<()> {
        Ok(Err(self.pending()))
    }
    async fn dhcp_host_remove(&mut self, _network: String, _mac: String, _ip: String) -> Answer<()> {
        Ok(Err(self.pending()))
    }
}
