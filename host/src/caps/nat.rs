//! `openidcs:engine/nat`: port forwards in the nftables table openidcs owns.
//!
//! Until the operator configures `[nat]`, every call answers `unsupported`
//! naming the missing section; nothing touches nftables.

use std::sync::Arc;

use super::HostScope;
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::PortForward;
use crate::plugin::bindings::openidcs::engine::nat::Host;

/// The shared NAT service (the table, the `nft` runner).
pub struct NatService {}

impl NatService {
    pub fn unconfigured() -> NatService {
        NatService {}
    }
}

pub struct NatCall {
    #[allow(dead_code)]
    service: Arc<NatService>,
    #[allow(dead_code)]
    host: Option<Arc<HostScope>>,
}

impl NatCall {
    pub fn new(service: Arc<NatService>, host: Option<Arc<HostScope>>) -> NatCall {
        NatCall { service, host }
    }
}

fn not_configured() -> PluginError {
    PluginError::Unsupported(
        "port forwarding is not configured on this server ([nat] section)".to_owned(),
    )
}

impl Host for NatCall {
    async fn add_rule(
        &mut self,
        _forward: PortForward,
    ) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(Err(not_configured()))
    }

    async fn remove_rule(&mut self, _id: u64) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(Err(not_configured()))
    }

    async fn list_rules(&mut self) -> wasmtime::Result<Result<Vec<PortForward>, PluginError>> {
        Ok(Err(not_configured()))
    }
}
