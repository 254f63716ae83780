//! The scope checks of a forward or a rate limit, run before any nft
//! command: one small function per rule, each saying what it prevents.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;

use super::ruleset::{Direction, Forward, Police, Proto, RateKey, RuleKey};
use crate::caps::HostScope;
use crate::model::rules;
use crate::plugin::bindings::{PluginError, PortForward, Protocol, RateLimit};

/// A plugin's forward checked against its host's scope: the key and the
/// rules' content to write.
pub(super) fn checked(
    scope: &HostScope,
    forward: &PortForward,
) -> Result<(RuleKey, Forward), PluginError> {
    let key = RuleKey {
        host: check_host_name(&scope.name)?.to_owned(),
        id: forward.id,
    };
    check_public_port(forward.public_port, &scope.ports)?;
    check_target_port(forward.target_port)?;
    let target = check_vm_addr("target address", &forward.target_addr, scope)?;
    Ok((
        key,
        Forward {
            protocol: protocol(forward.protocol),
            public_port: forward.public_port,
            public_addr: listening_addr(scope.public_addr, target),
            target,
            target_port: forward.target_port,
        },
    ))
}

pub(super) fn protocol(protocol: Protocol) -> Proto {
    match protocol {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

pub(super) fn wit_protocol(protocol: Proto) -> Protocol {
    match protocol {
        Proto::Tcp => Protocol::Tcp,
        Proto::Udp => Protocol::Udp,
    }
}

/// Prevents a host name from forging another host's rule tag (a `:` would
/// make `openidcs:<host>:<id>` ambiguous) or overflowing it (the panel's
/// name rule keeps the tag well inside nft's 128-byte comments).
pub(super) fn check_host_name(name: &str) -> Result<&str, PluginError> {
    if rules::is_name(name) {
        Ok(name)
    } else {
        Err(PluginError::Invalid(format!(
            "host name {name:?} cannot tag port forwards; it must be [A-Za-z0-9_.-]{{1,64}}"
        )))
    }
}

/// Prevents a plugin from taking a public port outside its host's range (the
/// server's own services, another host's ports).
pub(super) fn check_public_port(port: u16, range: &RangeInclusive<u16>) -> Result<(), PluginError> {
    if port == 0 {
        return Err(PluginError::Invalid(
            "public port 0 is not a port".to_owned(),
        ));
    }
    if range.is_empty() {
        return Err(PluginError::Denied(format!(
            "public port {port} is denied: the host has no public port range (ports_start {} > ports_close {})",
            range.start(),
            range.end()
        )));
    }
    if !range.contains(&port) {
        return Err(PluginError::Denied(format!(
            "public port {port} is outside the host's range {}-{}",
            range.start(),
            range.end()
        )));
    }
    Ok(())
}

/// Prevents a rule that forwards to port 0 (nft would write it; nothing
/// could ever answer).
pub(super) fn check_target_port(port: u16) -> Result<(), PluginError> {
    if port == 0 {
        return Err(PluginError::Invalid(
            "target port 0 is not a port (1-65535)".to_owned(),
        ));
    }
    Ok(())
}

/// Prevents a plugin from pointing a DNAT rule (or a rate limit) at the
/// host itself or anywhere but its VMs: the address must be a unicast one
/// inside one of the host's VM networks, and not a network's own or
/// broadcast address. `role` names the address in refusals.
pub(super) fn check_vm_addr(
    role: &str,
    text: &str,
    scope: &HostScope,
) -> Result<IpAddr, PluginError> {
    if text.is_empty() {
        return Err(PluginError::Invalid(format!(
            "{role} is empty; the engine must resolve the VM's address"
        )));
    }
    let addr: IpAddr = text.parse().map_err(|_| {
        PluginError::Invalid(format!(
            "{role} {:?} is not an IP address",
            text.chars().take(64).collect::<String>()
        ))
    })?;
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
        return Err(PluginError::Denied(format!(
            "{role} {addr} is not a VM's address"
        )));
    }
    let Some(network) = scope.vm_network_of(addr) else {
        return Err(PluginError::Denied(format!(
            "{role} {addr} is outside the host's VM networks ({})",
            shown_networks(&scope.vm_networks)
        )));
    };
    // A /31 or /32 has no network or broadcast address to avoid (RFC 3021).
    if let IpNet::V4(v4) = network
        && v4.prefix_len() <= 30
        && (addr == v4.network() || addr == v4.broadcast())
    {
        return Err(PluginError::Denied(format!(
            "{role} {addr} is the network or broadcast address of {network}"
        )));
    }
    Ok(addr)
}

/// The fastest limit a rate limit takes, in kbit/s (100 Gbit/s): beyond
/// it, nft's byte counts would be meaningless, and no NIC needs it.
const MAX_KBPS: u64 = 100_000_000;

/// What a token bucket holds beyond one second of the rate: one maximal
/// (GSO) packet, so that a slow limit still passes the largest packet the
/// kernel forwards instead of dropping it forever.
const BURST_BYTES: u64 = 64 * 1024;

/// nft keeps a rule's comment to 128 bytes.
const MAX_COMMENT: usize = 128;

/// A plugin's rate limit checked against its host's scope: the key and
/// the police rules (one per family and direction that is limited).
///
/// Prevents a plugin from policing (and so starving) anything but its own
/// host's VM addresses, from writing a rule that cannot be tagged, and from
/// rates nft cannot count.
pub(super) fn checked_rate_limit(
    scope: &HostScope,
    limit: &RateLimit,
) -> Result<(RateKey, Vec<Police>), PluginError> {
    let key = rate_key(scope, &limit.vm_uuid)?;
    if limit.addresses.is_empty() {
        return Err(PluginError::Invalid(format!(
            "the rate limit of vm {} names no address",
            key.vm
        )));
    }
    let mut families: [BTreeSet<IpAddr>; 2] = Default::default();
    for text in &limit.addresses {
        let addr = check_vm_addr("rate-limit address", text, scope)?;
        families[usize::from(addr.is_ipv6())].insert(addr);
    }
    let mut rules = Vec::new();
    for (direction, kbps, field) in [
        (Direction::FromVm, limit.upload_kbps, "upload-kbps"),
        (Direction::ToVm, limit.download_kbps, "download-kbps"),
    ] {
        if kbps > MAX_KBPS {
            return Err(PluginError::Invalid(format!(
                "{field} {kbps} is above {MAX_KBPS} (100 Gbit/s)"
            )));
        }
        if kbps == 0 {
            continue;
        }
        for addrs in families.iter().filter(|addrs| !addrs.is_empty()) {
            rules.push(Police {
                direction,
                addrs: addrs.clone(),
                bytes_per_second: kbps * 125,
                burst_bytes: BURST_BYTES,
            });
        }
    }
    if rules.is_empty() {
        return Err(PluginError::Invalid(format!(
            "the rate limit of vm {} limits nothing (both speeds 0); remove it instead",
            key.vm
        )));
    }
    Ok((key, rules))
}

/// The tag of a VM's rate limit; `invalid` for a VM name that cannot tag
/// rules unambiguously or within nft's comment size.
pub(super) fn rate_key(scope: &HostScope, vm: &str) -> Result<RateKey, PluginError> {
    let host = check_host_name(&scope.name)?;
    if !rules::is_name(vm) {
        return Err(PluginError::Invalid(format!(
            "vm name {:?} cannot tag a rate limit; it must be [A-Za-z0-9_.-]{{1,64}}",
            vm.chars().take(64).collect::<String>()
        )));
    }
    let key = RateKey {
        host: host.to_owned(),
        vm: vm.to_owned(),
    };
    if key.comment().len() > MAX_COMMENT {
        return Err(PluginError::Invalid(format!(
            "host {host} and vm {vm} are too long together to tag a rate limit ({} bytes of nft's {MAX_COMMENT})",
            key.comment().len()
        )));
    }
    Ok(key)
}

/// The address the forward listens on: the host's public address when it
/// has the target's family (a rule cannot match an IPv4 destination and
/// translate to IPv6); otherwise any local address of the server.
fn listening_addr(public_addr: Option<IpAddr>, target: IpAddr) -> Option<IpAddr> {
    public_addr.filter(|addr| addr.is_ipv4() == target.is_ipv4() && !addr.is_unspecified())
}

fn shown_networks(networks: &[IpNet]) -> String {
    if networks.is_empty() {
        return "none configured".to_owned();
    }
    networks
        .iter()
        .map(IpNet::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
