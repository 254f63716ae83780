//! Capabilities: the only doors out of the plugin sandbox.
//!
//! One module per WIT import interface (`caps::libvirt` ↔
//! `openidcs:engine/libvirt`). Each owns its shared service (built once at
//! start), its per-call state (built when a store is made, from the host the
//! call is for) and the generated `Host` trait impl, and checks scope on every
//! call. Scope comes from [`HostScope`], which the core builds from the stored
//! host, never from an argument the plugin passes.

pub mod http;
pub mod libvirt;
pub mod log;
pub mod nat;
pub mod proxy;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use wasmtime::component::{HasSelf, Linker};

use crate::config::Grant;
use crate::plugin::bindings::{PluginError, describe_error, openidcs::engine as wit};
use crate::plugin::instance::CallState;
use crate::store::Store;

/// What every capability may know about the host a call is for.
#[derive(Clone, Debug)]
pub struct HostScope {
    pub name: String,
    /// libvirt connection URI (`server_addr`).
    pub uri: String,
    /// Directory where VM disks may live (`system_path`); empty: none allowed.
    pub storage_dir: String,
    /// Public port range for NAT (`ports_start..=ports_close`).
    pub ports: std::ops::RangeInclusive<u16>,
    /// VM networks (from the host's IP pools); one with prefix 0 is ignored
    /// (see [`HostScope::vm_network_of`]).
    pub vm_networks: Vec<IpNet>,
    pub public_addr: Option<IpAddr>,
    /// Domain name prefix this panel manages (`filter_name`).
    pub name_prefix: String,
    /// `extend_data.allow_hostdev`: PCI/USB passthrough allowed on this host.
    pub allow_hostdev: bool,
    /// `images_path`: the image storage, a storage pool's directory or a
    /// pool's name (empty: none). Engines read images, never write them.
    pub images: String,
    /// What the `http` grant adds to the requests to `server_addr` (from
    /// `server_user`/`server_pass`, which engines never see).
    pub api_credential: http::ApiCredential,
    /// `extend_data.tls_fingerprint`: the SHA-256 of the API's certificate.
    pub tls_pin: Option<[u8; 32]>,
}

impl HostScope {
    /// The VM network `address` lies in, if any.
    ///
    /// A network with prefix 0 (`0.0.0.0/0`, `::/0`) is never a VM network,
    /// whatever the pool says: it contains every address, so it would let a
    /// plugin point a NAT rule, a proxy or a DHCP binding anywhere (the host
    /// itself, another host's VMs, the internet). Checked here, where every
    /// capability's scope check ends, rather than trusted from the store.
    pub fn vm_network_of(&self, address: IpAddr) -> Option<&IpNet> {
        self.vm_networks
            .iter()
            .find(|network| network.prefix_len() > 0 && network.contains(&address))
    }

    /// Is `address` inside one of the host's VM networks?
    pub fn in_vm_networks(&self, address: IpAddr) -> bool {
        self.vm_network_of(address).is_some()
    }
}

/// What a capability's host function answers when it does not answer its
/// value: a refusal the engine sees, or a fault of the host that traps.
///
/// It is the `trappable_error_type` of the WIT `error`, so host functions
/// return `Result<T, CapError>` and refuse with `?` on a [`PluginError`].
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// Reaches the guest as the WIT `error` (the engine decides what to do).
    #[error("{}", describe_error(.0))]
    Refused(PluginError),
    /// A host fault (a panicked worker): the call traps and fails as a
    /// whole; the engine never sees it.
    #[error("host fault: {0}")]
    Trap(wasmtime::Error),
}

impl CapError {
    /// A host fault: the call traps instead of answering the engine.
    pub fn trap(error: impl Into<anyhow::Error>) -> CapError {
        CapError::Trap(wasmtime::Error::from_anyhow(error.into()))
    }

    /// What the guest gets: the WIT `error`, or a trap.
    fn into_wit(self) -> wasmtime::Result<PluginError> {
        match self {
            CapError::Refused(error) => Ok(error),
            CapError::Trap(fault) => Err(fault),
        }
    }
}

impl From<PluginError> for CapError {
    fn from(error: PluginError) -> CapError {
        CapError::Refused(error)
    }
}

/// Tests look at a host function's answer as the engine would see it.
#[cfg(test)]
pub(crate) trait NoTrap<T> {
    /// The value or the WIT `error`; a trap fails the test.
    fn no_trap(self) -> Result<T, PluginError>;
}

#[cfg(test)]
impl<T> NoTrap<T> for Result<T, CapError> {
    #[track_caller]
    fn no_trap(self) -> Result<T, PluginError> {
        match self {
            Ok(value) => Ok(value),
            Err(CapError::Refused(error)) => Err(error),
            Err(CapError::Trap(trap)) => panic!("the call trapped: {trap:?}"),
        }
    }
}

/// Services shared by all calls, built once at start.
pub struct Capabilities {
    pub store: Arc<Store>,
    pub http: Arc<http::HttpService>,
    pub libvirt: Arc<libvirt::LibvirtService>,
    pub nat: Arc<nat::NatService>,
    pub proxy: Arc<proxy::ProxyService>,
}

/// Per-call state of every capability; each host impl borrows only its own.
pub struct CallCaps {
    pub http: http::HttpCall,
    pub log: log::LogCall,
    pub libvirt: libvirt::LibvirtCall,
    pub nat: nat::NatCall,
    pub proxy: proxy::ProxyCall,
}

impl CallCaps {
    pub fn new(
        capabilities: &Capabilities,
        plugin: &Arc<str>,
        host: Option<Arc<HostScope>>,
    ) -> CallCaps {
        CallCaps {
            http: http::HttpCall::new(
                capabilities.http.clone(),
                capabilities.store.clone(),
                plugin.clone(),
                host.clone(),
            ),
            log: log::LogCall::new(capabilities.store.clone(), plugin.clone(), host.clone()),
            libvirt: libvirt::LibvirtCall::new(capabilities.libvirt.clone(), host.clone()),
            nat: nat::NatCall::new(
                capabilities.nat.clone(),
                capabilities.store.clone(),
                host.clone(),
            ),
            proxy: proxy::ProxyCall::new(capabilities.proxy.clone(), host),
        }
    }
}

/// Link the doors a plugin was granted, and nothing else. WASI is linked by
/// the runtime (with nothing opened); `types` has no functions but is an
/// import of every engine.
pub fn link(linker: &mut Linker<CallState>, grants: &[Grant]) -> wasmtime::Result<()> {
    wit::types::add_to_linker::<CallState, HasSelf<CallState>>(linker, |state| state)?;
    for grant in grants {
        match grant {
            Grant::Libvirt => wit::libvirt::add_to_linker::<
                CallState,
                HasSelf<libvirt::LibvirtCall>,
            >(linker, |state| &mut state.caps.libvirt)?,
            Grant::Nat => {
                wit::nat::add_to_linker::<CallState, HasSelf<nat::NatCall>>(linker, |state| {
                    &mut state.caps.nat
                })?
            }
            Grant::Proxy => wit::proxy::add_to_linker::<CallState, HasSelf<proxy::ProxyCall>>(
                linker,
                |state| &mut state.caps.proxy,
            )?,
            Grant::Log => {
                wit::log::add_to_linker::<CallState, HasSelf<log::LogCall>>(linker, |state| {
                    &mut state.caps.log
                })?
            }
            // wasi:http's own interfaces; the scope is `CallState`'s hooks.
            Grant::Http => wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?,
        }
    }
    Ok(())
}

/// `types::Host` is where bindgen puts the conversion of [`CapError`], and
/// each linker asks it of the state it hands its functions: the store's
/// state (for `types`) and every capability's per-call state.
macro_rules! convert_cap_errors {
    ($($state:ty),*) => {$(
        impl wit::types::Host for $state {
            fn convert_error(&mut self, error: CapError) -> wasmtime::Result<PluginError> {
                error.into_wit()
            }
        }
    )*};
}

convert_cap_errors!(
    CallState,
    libvirt::LibvirtCall,
    nat::NatCall,
    proxy::ProxyCall
);

/// The refusal every capability answers when a call carries no host (the
/// engine's `describe` at load time).
pub fn no_host() -> PluginError {
    PluginError::Denied("this call is not for a host; capabilities are closed".to_owned())
}
