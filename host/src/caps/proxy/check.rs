//! The rules a site passes at the door, before any file is read or written.
//!
//! One small function per rule, each saying what it prevents. The API checks
//! the domain too (`service::network::check_domain`), but a plugin can call the
//! capability with anything, so every rule is checked again here.

use std::net::{IpAddr, SocketAddr};

use super::tls::{self, TlsMaterial};
use crate::caps::HostScope;
use crate::model::rules;
use crate::plugin::bindings::{PluginError, ProxySite};

/// A site that passed every rule: safe to write into an nginx file as is.
#[derive(Clone, Debug)]
pub struct CheckedSite {
    pub id: u64,
    pub domain: String,
    pub backend: SocketAddr,
    pub tls: Option<TlsMaterial>,
}

/// Every rule of a site, in the order a reader would check them.
pub fn check_site(site: &ProxySite, scope: &HostScope) -> Result<CheckedSite, PluginError> {
    check_host_name(&scope.name)?;
    check_domain(&site.domain)?;
    let ip = check_backend_addr(&site.backend_addr)?;
    check_backend_in_networks(ip, scope)?;
    check_backend_port(site.backend_port)?;
    let tls = site.tls.as_ref().map(tls::check_pair).transpose()?;
    Ok(CheckedSite {
        id: site.id,
        domain: site.domain.clone(),
        backend: SocketAddr::new(ip, site.backend_port),
        tls,
    })
}

/// A domain nginx reads as exactly one `server_name` word: the one domain
/// rule of the model (RFC 1123 labels, at least two, no IP literal), so the
/// API and this door cannot disagree.
pub fn check_domain(domain: &str) -> Result<(), PluginError> {
    crate::model::rules::check_domain("domain", domain)
        .map_err(|invalid| PluginError::Invalid(invalid.to_string()))
}

/// Prevents host names, which nginx would resolve to wherever DNS points.
fn check_backend_addr(address: &str) -> Result<IpAddr, PluginError> {
    address.parse().map_err(|_| {
        PluginError::Invalid(format!(
            "backend address {} is not an IP address",
            shown(address)
        ))
    })
}

/// Prevents a plugin from proxying to the host's own services (or anywhere
/// else): backends live inside the host's VM networks only.
fn check_backend_in_networks(ip: IpAddr, scope: &HostScope) -> Result<(), PluginError> {
    if !scope.in_vm_networks(ip) {
        return Err(PluginError::Denied(format!(
            "backend {ip} is outside the host's VM networks"
        )));
    }
    Ok(())
}

/// Prevents `proxy_pass …:0`, which nginx accepts but can never connect to.
fn check_backend_port(port: u16) -> Result<(), PluginError> {
    if port == 0 {
        return Err(PluginError::Invalid(
            "backend port must be 1 to 65535".to_owned(),
        ));
    }
    Ok(())
}

/// Prevents a host name that would break out of the comment recording the
/// file's owner (the panel stores `[A-Za-z0-9_.-]{1,64}`; this is its guard).
pub fn check_host_name(name: &str) -> Result<(), PluginError> {
    if !rules::is_name(name) {
        return Err(PluginError::Failed(format!(
            "host name {} cannot be recorded in a proxy file",
            shown(name)
        )));
    }
    Ok(())
}

/// A value as it may be shown in a message: quoted, escaped, and cut short,
/// so that a hostile string cannot flood or forge log lines.
pub fn shown(value: &str) -> String {
    const LIMIT: usize = 100;
    match value.char_indices().nth(LIMIT) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
    }
}
