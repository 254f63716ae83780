//! Translations between libvirt's vocabulary and the WIT's: errors, power
//! states, bulk statistics, DHCP host entries. No I/O.

use std::net::IpAddr;

use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};
use virt::sys;

use super::ffi::StatsRecord;
use super::xml_check::shown;
use crate::plugin::bindings::openidcs::engine::libvirt::DomainStats;
use crate::plugin::bindings::{PluginError, PowerState};

/// Why an operation stopped: a refusal of ours, or libvirt's error (kept
/// whole so the caller can tell a dropped connection from a real answer).
pub enum Fail {
    Refused(PluginError),
    Libvirt(VirtError),
}

impl From<VirtError> for Fail {
    fn from(error: VirtError) -> Fail {
        Fail::Libvirt(error)
    }
}

impl From<PluginError> for Fail {
    fn from(error: PluginError) -> Fail {
        Fail::Refused(error)
    }
}

impl Fail {
    pub fn into_plugin_error(self) -> PluginError {
        match self {
            Fail::Refused(error) => error,
            Fail::Libvirt(error) => plugin_error(&error),
        }
    }
}

/// The connection itself is gone (daemon restarted, socket closed): the
/// cached connection must be dropped and the call tried on a fresh one.
pub fn is_connection_error(error: &VirtError) -> bool {
    matches!(
        error.code(),
        ErrorNumber::NoConnect | ErrorNumber::InvalidConn | ErrorNumber::Rpc
    ) || error.domain() == ErrorDomain::Rpc
}

/// libvirt's error as the engine sees it, with libvirt's own message.
pub fn plugin_error(error: &VirtError) -> PluginError {
    let message = error.message().to_owned();
    match error.code() {
        ErrorNumber::NoDomain
        | ErrorNumber::NoNetwork
        | ErrorNumber::NoStoragePool
        | ErrorNumber::NoStorageVolume
        | ErrorNumber::DeviceMissing => PluginError::NotFound(message),
        // Already exists, or the domain is in the wrong state for the operation.
        ErrorNumber::DomExist
        | ErrorNumber::NetworkExist
        | ErrorNumber::StorageVolExist
        | ErrorNumber::OperationInvalid => PluginError::Conflict(message),
        // Drivers report "already exists"/"already defined" as a generic failure.
        ErrorNumber::OperationFailed
            if message.contains("already exists") || message.contains("already defined") =>
        {
            PluginError::Conflict(message)
        }
        ErrorNumber::XmlError
        | ErrorNumber::XmlDetail
        | ErrorNumber::XmlInvalidSchema
        | ErrorNumber::InvalidMac => PluginError::Invalid(message),
        ErrorNumber::NoSupport
        | ErrorNumber::ArgumentUnsupported
        | ErrorNumber::OperationUnsupported => PluginError::Unsupported(message),
        _ => PluginError::Failed(message),
    }
}

/// libvirt's `virDomainState` as a WIT power state.
pub fn power_state(state: u64) -> PowerState {
    match u32::try_from(state) {
        Ok(sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED) => PowerState::Running,
        Ok(sys::VIR_DOMAIN_PAUSED) => PowerState::Paused,
        Ok(sys::VIR_DOMAIN_SHUTDOWN) => PowerState::Stopping,
        Ok(sys::VIR_DOMAIN_SHUTOFF) => PowerState::Stopped,
        Ok(sys::VIR_DOMAIN_CRASHED) => PowerState::Crashed,
        Ok(sys::VIR_DOMAIN_PMSUSPENDED) => PowerState::Suspended,
        _ => PowerState::Unknown,
    }
}

/// One record of `virConnectGetAllDomainStats` as WIT statistics; a counter
/// the driver did not report stays zero.
pub fn domain_stats(record: StatsRecord) -> DomainStats {
    let mut stats = DomainStats {
        name: record.name,
        state: PowerState::Unknown,
        vcpus: 0,
        cpu_time_ns: 0,
        mem_max_kib: 0,
        mem_used_kib: 0,
        disk_capacity_bytes: 0,
        disk_allocation_bytes: 0,
        net_rx_bytes: 0,
        net_tx_bytes: 0,
    };
    for (field, value) in &record.fields {
        let value = *value;
        match field.as_str() {
            "state.state" => stats.state = power_state(value),
            "cpu.time" => stats.cpu_time_ns = value,
            "balloon.maximum" => stats.mem_max_kib = value,
            "balloon.current" => stats.mem_used_kib = value,
            "vcpu.current" => stats.vcpus = u32::try_from(value).unwrap_or(u32::MAX),
            field => {
                let sum = match (indexed(field, "net"), indexed(field, "block")) {
                    (Some("rx.bytes"), _) => &mut stats.net_rx_bytes,
                    (Some("tx.bytes"), _) => &mut stats.net_tx_bytes,
                    (_, Some("capacity")) => &mut stats.disk_capacity_bytes,
                    (_, Some("allocation")) => &mut stats.disk_allocation_bytes,
                    _ => continue,
                };
                *sum = sum.saturating_add(value);
            }
        }
    }
    stats
}

/// `net.3.rx.bytes` with group `net` → `rx.bytes`; `None` for `net.count`.
fn indexed<'a>(field: &'a str, group: &str) -> Option<&'a str> {
    let rest = field.strip_prefix(group)?.strip_prefix('.')?;
    let (index, suffix) = rest.split_once('.')?;
    index
        .bytes()
        .all(|byte| byte.is_ascii_digit())
        .then_some(suffix)
}

/// Node CPU times (ns): busy is kernel + user, idle is idle + iowait.
pub fn cpu_busy_idle(fields: &[(String, u64)]) -> (u64, u64) {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map_or(0, |(_, value)| *value)
    };
    (
        get("kernel").saturating_add(get("user")),
        get("idle").saturating_add(get("iowait")),
    )
}

/// `major.minor.release` from libvirt's `major * 1_000_000 + minor * 1000 + release`.
pub fn version_string(version: u32) -> String {
    format!(
        "{}.{}.{}",
        version / 1_000_000,
        (version / 1000) % 1000,
        version % 1000
    )
}

/// A MAC in `xx:xx:xx:xx:xx:xx` hex, lowercased; `invalid` otherwise.
pub fn parse_mac(mac: &str) -> Result<String, PluginError> {
    let groups: Vec<&str> = mac.split(':').collect();
    let well_formed = groups.len() == 6
        && groups
            .iter()
            .all(|group| group.len() == 2 && group.bytes().all(|byte| byte.is_ascii_hexdigit()));
    if !well_formed {
        return Err(PluginError::Invalid(format!(
            "MAC address {} is not xx:xx:xx:xx:xx:xx",
            shown(mac)
        )));
    }
    Ok(mac.to_ascii_lowercase())
}

pub fn parse_ip(ip: &str) -> Result<IpAddr, PluginError> {
    ip.parse()
        .map_err(|_| PluginError::Invalid(format!("{} is not an IP address", shown(ip))))
}

/// Escape text for an XML attribute value.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A DHCP `<host>` entry for `virNetworkUpdate`; `name` is left out when empty.
pub fn dhcp_host_xml(mac: &str, ip: &IpAddr, name: &str) -> String {
    let name = if name.is_empty() {
        String::new()
    } else {
        format!(" name='{}'", escape(name))
    };
    format!(
        "<host mac='{}'{name} ip='{}'/>",
        escape(mac),
        escape(&ip.to_string())
    )
}

/// One `<host>` of a network's DHCP configuration.
#[derive(Debug, PartialEq)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: Option<IpAddr>,
    pub name: String,
}

/// The DHCP host entries of a network's XML.
pub fn dhcp_hosts(network_xml: &str) -> Result<Vec<DhcpHost>, PluginError> {
    let document = roxmltree::Document::parse(network_xml).map_err(|error| {
        PluginError::Failed(format!("libvirt answered unreadable network XML: {error}"))
    })?;
    let hosts = document
        .descendants()
        .filter(|node| {
            node.has_tag_name("host")
                && node
                    .parent()
                    .is_some_and(|parent| parent.has_tag_name("dhcp"))
        })
        .map(|host| DhcpHost {
            mac: host.attribute("mac").unwrap_or("").to_ascii_lowercase(),
            ip: host.attribute("ip").and_then(|ip| ip.parse().ok()),
            name: host.attribute("name").unwrap_or("").to_owned(),
        })
        .collect();
    Ok(hosts)
}
