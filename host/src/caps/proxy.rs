//! `openidcs:engine/proxy`: nginx server blocks in the configured directory.
//!
//! Until the operator configures `[proxy]`, every call answers `unsupported`
//! naming the missing section; no file is written.

use std::sync::Arc;

use super::HostScope;
use crate::plugin::bindings::PluginError;
use crate::plugin::bindings::ProxySite;
use crate::plugin::bindings::openidcs::engine::proxy::Host;

/// The shared proxy service (conf dir, nginx commands).
pub struct ProxyService {}

impl ProxyService {
    pub fn unconfigured() -> ProxyService {
        ProxyService {}
    }
}

pub struct ProxyCall {
    #[allow(dead_code)]
    service: Arc<ProxyService>,
    #[allow(dead_code)]
    host: Option<Arc<HostScope>>,
}

impl ProxyCall {
    pub fn new(service: Arc<ProxyService>, host: Option<Arc<HostScope>>) -> ProxyCall {
        ProxyCall { service, host }
    }
}

fn not_configured() -> PluginError {
    PluginError::Unsupported(
        "the reverse proxy is not configured on this server ([proxy] section)".to_owned(),
    )
}

impl Host for ProxyCall {
    async fn put_site(&mut self, _site: ProxySite) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(Err(not_configured()))
    }

    async fn remove_site(&mut self, _id: u64) -> wasmtime::Result<Result<(), PluginError>> {
        Ok(Err(not_configured()))
    }
}
