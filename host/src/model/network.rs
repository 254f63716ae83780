//! A VM's network as the API shows it and takes it: NAT port forwards, NICs
//! and reverse-proxy entries. Bodies accept the original server's field
//! names as aliases (billing panels send them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rules;
use super::vm::NicSettings;

/// A NAT port forward.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NatRule {
    /// Position in `natget` (0-based).
    pub index: u64,
    #[schema(example = "tcp")]
    pub protocol: String,
    pub wan_port: u16,
    pub lan_port: u16,
    pub lan_addr: String,
    pub nat_tips: String,
    /// `wan_port` again, under the name panel modules read.
    pub external_port: u16,
    /// `lan_port` again, under the name panel modules read.
    pub internal_port: u16,
}

/// `natadd` body. Aliases: `external_port` (wan_port), `internal_port`
/// (lan_port), `internal_ip` (lan_addr), `description` and `port_tips` (nat_tips).
#[derive(Debug, Deserialize, ToSchema)]
pub struct NatAddInput {
    /// tcp (default) or udp, any case.
    #[serde(default)]
    #[schema(example = "tcp", pattern = "^([tT][cC][pP]|[uU][dD][pP])?$")]
    pub protocol: String,
    /// Public port; 0 or absent picks a free one in the host's range.
    #[serde(default, alias = "external_port")]
    #[schema(maximum = 65535, example = 0)]
    pub wan_port: Option<u32>,
    /// Port inside the VM, 1..=65535.
    #[serde(default, alias = "internal_port")]
    #[schema(minimum = 1, maximum = 65535, example = 22)]
    pub lan_port: Option<u32>,
    /// The VM's address (default: its first NIC's).
    #[serde(default, alias = "internal_ip")]
    pub lan_addr: String,
    /// At most 200 characters; no quotes, braces, semicolons, backslashes or `$`.
    #[serde(default, alias = "description", alias = "port_tips")]
    #[schema(max_length = 200)]
    pub nat_tips: String,
}

/// A NIC of a VM.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NicView {
    /// Position in `iplist` (0-based).
    pub index: u64,
    pub nic_name: String,
    #[serde(flatten)]
    pub nic: NicSettings,
    /// A `pub` NIC's IPv4 address again, under the name panel modules read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ipv4: Option<String>,
    /// A `pub` NIC's IPv6 address again, likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ipv6: Option<String>,
}

impl NicView {
    pub fn new(index: usize, name: &str, nic: &NicSettings) -> NicView {
        let public = |address: &str| {
            (nic.nic_type == "pub" && !address.is_empty()).then(|| address.to_owned())
        };
        NicView {
            index: index as u64,
            nic_name: name.to_owned(),
            public_ipv4: public(&nic.ip4_addr),
            public_ipv6: public(&nic.ip6_addr),
            nic: nic.clone(),
        }
    }
}

/// `ipadd_` body. Aliases: `type` (nic_type), `address` (ip4_addr),
/// `gateway` (nic_gate), `netmask` (nic_mask).
#[derive(Debug, Deserialize, ToSchema)]
pub struct IpAddInput {
    /// nat (default) or pub (`bridge` is read as pub).
    #[serde(default, alias = "type", deserialize_with = "rules::nic_type")]
    #[schema(example = "nat", pattern = "^(nat|pub)?$")]
    pub nic_type: String,
    /// Empty or absent: the next free address of the host's pool.
    #[serde(default, alias = "address")]
    pub ip4_addr: String,
    #[serde(default)]
    pub ip6_addr: String,
    /// Generated when empty.
    #[serde(default)]
    #[schema(pattern = "^([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5})?$")]
    pub mac_addr: String,
    #[serde(default, alias = "gateway")]
    pub nic_gate: String,
    #[serde(default, alias = "netmask")]
    pub nic_mask: String,
    #[serde(default)]
    pub dns_addr: Vec<String>,
}

impl IpAddInput {
    /// The NIC this body asks for, before an address is allocated.
    pub fn into_nic(self) -> NicSettings {
        NicSettings {
            nic_type: if self.nic_type.is_empty() {
                "nat".to_owned()
            } else {
                self.nic_type
            },
            mac_addr: self.mac_addr.to_ascii_lowercase(),
            ip4_addr: self.ip4_addr,
            ip6_addr: self.ip6_addr,
            nic_gate: self.nic_gate,
            nic_mask: self.nic_mask,
            dns_addr: self.dns_addr,
        }
    }
}

/// A reverse-proxy entry.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProxyView {
    /// Position in `pxyget` (0-based).
    pub index: u64,
    pub domain: String,
    pub backend_ip: String,
    pub backend_port: u16,
    pub ssl_enabled: bool,
    pub description: String,
}

/// `pxyadd` body. Aliases: `web_addr` (domain), `lan_port` (backend_port),
/// `lan_addr` (backend_ip), `is_https` (ssl_enabled), `web_tips` (description).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProxyAddInput {
    #[serde(default, alias = "web_addr")]
    #[schema(example = "www.example.com")]
    pub domain: String,
    /// Default 80.
    #[serde(default, alias = "lan_port")]
    #[schema(minimum = 1, maximum = 65535, example = 80)]
    pub backend_port: Option<u32>,
    /// Default: the VM's address.
    #[serde(default, alias = "lan_addr")]
    pub backend_ip: String,
    #[serde(default, alias = "is_https")]
    pub ssl_enabled: bool,
    /// PEM.
    #[serde(default)]
    pub ssl_cert: String,
    /// PEM.
    #[serde(default)]
    pub ssl_key: String,
    #[serde(default, alias = "web_tips")]
    pub description: String,
}
