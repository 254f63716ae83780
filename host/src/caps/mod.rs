//! Capabilities: the only doors out of the plugin sandbox.
//!
//! One module per WIT import interface (`caps::libvirt` ↔
//! `openidcs:engine/libvirt`). Each owns its shared service (built once at
//! start), its per-call state (built when a store is made, from the host the
//! call is for) and the generated `Host` trait impl, and checks scope on every
//! call. Scope comes from [`HostScope`], which the core builds from the stored
//! host, never from an argument the plugin passes.

pub mod libvirt;
pub mod log;
pub mod nat;
pub mod proxy;

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use crate::config::Grant;
use crate::plugin::bindings::{PluginError, openidcs::engine as wit};
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
    /// VM networks (from the host's IP pools) as (network address, prefix).
    pub vm_networks: Vec<(std::net::IpAddr, u8)>,
    pub public_addr: Option<std::net::IpAddr>,
    /// Domain name prefix this panel manages (`filter_name`).
    pub name_prefix: String,
    /// `extend_data.allow_hostdev`: PCI/USB passthrough allowed on this host.
    pub allow_hostdev: bool,
}

impl HostScope {
    /// Is `address` inside one of the host's VM networks?
    pub fn in_vm_networks(&self, address: std::net::IpAddr) -> bool {
        in_networks(address, &self.vm_networks)
    }
}

/// Is `address` inside one of `networks` (network address, prefix length)?
pub fn in_networks(address: std::net::IpAddr, networks: &[(std::net::IpAddr, u8)]) -> bool {
    networks
        .iter()
        .any(|&(network, prefix)| in_network(address, network, prefix))
}

/// Whether `address` lies in `network/prefix`. A prefix of 0 (or one longer
/// than the address) is no VM network: a /0 would let a plugin point a rule,
/// a proxy or a DHCP binding anywhere.
pub fn in_network(address: std::net::IpAddr, network: std::net::IpAddr, prefix: u8) -> bool {
    use std::net::IpAddr;
    let (address, network, bits) = match (address, network) {
        (IpAddr::V4(address), IpAddr::V4(network)) => (
            u128::from(u32::from(address)),
            u128::from(u32::from(network)),
            32u8,
        ),
        (IpAddr::V6(address), IpAddr::V6(network)) => {
            (u128::from(address), u128::from(network), 128u8)
        }
        _ => return false,
    };
    if prefix == 0 || prefix > bits {
        return false;
    }
    let shift = u32::from(bits - prefix);
    address >> shift == network >> shift
}

/// Services shared by all calls, built once at start.
pub struct Capabilities {
    pub store: Arc<Store>,
    pub libvirt: Arc<libvirt::LibvirtService>,
    pub nat: Arc<nat::NatService>,
    pub proxy: Arc<proxy::ProxyService>,
}

/// Per-call state of every capability; each host impl borrows only its own.
pub struct CallCaps {
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
            log: log::LogCall::new(capabilities.store.clone(), plugin.clone(), host.clone()),
            libvirt: libvirt::LibvirtCall::new(capabilities.libvirt.clone(), host.clone()),
            nat: nat::NatCall::new(capabilities.nat.clone(), host.clone()),
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
        }
    }
    Ok(())
}

impl wit::types::Host for CallState {}

/// The refusal every capability answers when a call carries no host (the
/// engine's `describe` at load time).
pub fn no_host() -> PluginError {
    PluginError::Denied("this call is not for a host; capabilities are closed".to_owned())
}
