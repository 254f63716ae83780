//! Hypervisor hosts: the stored `config` of a host (also the body of
//! `server/create` and `server/update`), its IP pools, its status figures,
//! and the answers of the `server/*` endpoints.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::rules::{self, Invalid, UriPolicy, check_host_uri, check_name};

/// What the API shows instead of a stored password.
pub const MASKED: &str = "******";

/// The `config` of a host. Unknown keys are ignored; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct HostSettings {
    /// For the libvirt engine: the libvirt URI (schemes test, qemu, qemu+ssh, qemu+tls, lxc).
    #[schema(example = "test:///default")]
    pub server_addr: String,
    pub server_user: String,
    /// `******` in answers; sending `******` back keeps the stored one.
    pub server_pass: String,
    /// Scan prefix.
    #[schema(pattern = "^[A-Za-z0-9_.-]{0,64}$")]
    pub filter_name: String,
    /// The image storage: a libvirt storage pool's directory (absolute
    /// path) or a pool's name.
    pub images_path: String,
    /// The image catalogue: OS name (a VM's `os_name`) → `[image file in
    /// images_path, smallest system disk in MB]`, as the original server had it.
    #[serde(deserialize_with = "rules::map_or_empty_list")]
    #[schema(value_type = Object, example = json!({"debian12": ["debian-12.qcow2", 2048]}))]
    pub system_maps: BTreeMap<String, ImageMap>,
    /// `linked` (default): a system disk is a qcow2 overlay backed by its
    /// image; `full`: a full copy.
    #[schema(pattern = "^(|linked|full)$")]
    pub system_copy: String,
    /// The CPU of this host's VMs: `host-passthrough`, `host-model` or
    /// `custom`; empty: probed once per host (host detail shows the choice).
    #[schema(pattern = "^(|host-passthrough|host-model|custom)$")]
    pub cpu_mode: String,
    /// The named model for `cpu_mode = custom` (`qemu64`).
    #[schema(pattern = "^[A-Za-z0-9_.-]{0,64}$")]
    pub cpu_model: String,
    /// CPU features switched off, as `-name` (`-arch-capabilities`).
    pub cpu_features: Vec<String>,
    /// What happens to a VM over its traffic quota: `throttle` (default,
    /// to `[traffic] over_quota_mbps`) or `pause`.
    #[schema(pattern = "^(|throttle|pause)$")]
    pub flu_over: String,
    /// Absolute path: where VM disks may live.
    pub system_path: String,
    /// libvirt network for NAT NICs.
    #[schema(pattern = "^[A-Za-z0-9_.-]{0,64}$")]
    pub network_nat: String,
    /// Bridge for public NICs.
    #[schema(pattern = "^[A-Za-z0-9_.-]{0,64}$")]
    pub network_pub: String,
    /// Public port range for NAT (both 0: none).
    pub ports_start: u16,
    pub ports_close: u16,
    /// Public IPs; [0] is used for NAT and console URLs. One string is accepted too.
    #[serde(deserialize_with = "string_or_list")]
    pub public_addr: Vec<String>,
    #[serde(deserialize_with = "rules::map_or_empty_list")]
    pub ipaddr_maps: BTreeMap<String, IpPool>,
    /// Max VMs, 0 = no limit.
    pub limits_nums: u64,
    /// Engine options (free-form).
    #[schema(value_type = Object)]
    #[serde(deserialize_with = "rules::map_or_empty_list")]
    pub extend_data: serde_json::Map<String, serde_json::Value>,
}

/// One image of a host's catalogue: `[file, min_disk_mb]`. The minimum may
/// come as a number or, from PHP panels, as a numeric string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMap {
    pub file: String,
    pub min_disk_mb: u64,
}

impl Serialize for ImageMap {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.file, self.min_disk_mb).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ImageMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ImageMap, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Number(u64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Pair(String, Size),
            File((String,)),
        }
        let (file, size) = match Form::deserialize(deserializer)? {
            Form::Pair(file, size) => (file, size),
            Form::File((file,)) => (file, Size::Number(0)),
        };
        let min_disk_mb = match size {
            Size::Number(mb) => mb,
            Size::Text(text) if text.trim().is_empty() => 0,
            Size::Text(text) => text.trim().parse().map_err(|_| {
                serde::de::Error::custom(format!("minimum disk {text:?} is not a number of MB"))
            })?,
        };
        Ok(ImageMap { file, min_disk_mb })
    }
}

/// An IP pool of a host.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct IpPool {
    /// ipv4 (default) or ipv6.
    #[serde(default = "default_ip_version")]
    #[schema(example = "ipv4")]
    pub vers: String,
    /// nat (default) or pub.
    #[serde(rename = "type", default = "default_pool_kind")]
    #[schema(example = "nat")]
    pub kind: String,
    #[serde(default)]
    #[schema(example = "10.0.0.1")]
    pub gate: String,
    #[serde(default)]
    #[schema(example = "255.255.255.0")]
    pub mask: String,
    /// The first address.
    #[schema(example = "10.0.0.100")]
    pub from: String,
    /// How many addresses.
    #[schema(example = 100)]
    pub nums: u32,
    #[serde(default)]
    pub dnss: Vec<String>,
}

fn default_ip_version() -> String {
    "ipv4".to_owned()
}

fn default_pool_kind() -> String {
    "nat".to_owned()
}

/// `public_addr` was a single string in some original configs.
fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) if text.is_empty() => Vec::new(),
        OneOrMany::One(text) => vec![text],
        OneOrMany::Many(list) => list,
    })
}

impl HostSettings {
    /// Check every rule; errors name `config.<field>`. `http_api`: the
    /// host's engine is granted `http`, so `server_addr` may be an HTTP API.
    pub fn check(&self, uri_policy: &UriPolicy, http_api: bool) -> Result<(), Invalid> {
        if !self.server_addr.is_empty() {
            check_host_uri(
                "config.server_addr",
                &self.server_addr,
                uri_policy,
                http_api,
            )?;
        }
        if !self.filter_name.is_empty() {
            check_name("config.filter_name", &self.filter_name)?;
        }
        let images_is_pool = !self.images_path.is_empty() && !self.images_path.starts_with('/');
        if images_is_pool {
            check_name("config.images_path", &self.images_path)?;
        }
        for (field, path) in [
            ("config.images_path", &self.images_path),
            ("config.system_path", &self.system_path),
        ] {
            if field == "config.images_path" && images_is_pool {
                continue;
            }
            if !path.is_empty()
                && (!path.starts_with('/') || path.split('/').any(|part| part == ".."))
            {
                return Err(Invalid::new(
                    field,
                    format!("{path:?} must be an absolute path without .."),
                ));
            }
        }
        for (field, network) in [
            ("config.network_nat", &self.network_nat),
            ("config.network_pub", &self.network_pub),
        ] {
            if !network.is_empty() {
                check_name(field, network)?;
            }
        }
        if (self.ports_start == 0) != (self.ports_close == 0) || self.ports_start > self.ports_close
        {
            return Err(Invalid::new(
                "config.ports_start",
                format!(
                    "port range {}..{} must have 1 <= ports_start <= ports_close <= 65535 (or both 0 for none)",
                    self.ports_start, self.ports_close
                ),
            ));
        }
        for (position, address) in self.public_addr.iter().enumerate() {
            rules::parse_address(&format!("config.public_addr[{position}]"), address)?;
        }
        for (name, image) in &self.system_maps {
            let field = format!("config.system_maps.{name}");
            check_name(&field, name)?;
            if http_api {
                // An image of the API's own store (`debian:12`,
                // `library/debian:12`), never a file of this server.
                rules::check_image_reference(&field, &image.file)?;
            } else {
                check_name(&field, &image.file)?;
            }
        }
        // An API host keeps its images itself.
        if !self.system_maps.is_empty() && self.images_path.is_empty() && !http_api {
            return Err(Invalid::new(
                "config.images_path",
                "system_maps needs an images_path (where the images are)",
            ));
        }
        if !["", "linked", "full"].contains(&self.system_copy.as_str()) {
            return Err(Invalid::new(
                "config.system_copy",
                format!("{:?} must be linked or full", self.system_copy),
            ));
        }
        self.check_cpu()?;
        self.check_api_tls(http_api)?;
        if !["", "throttle", "pause"].contains(&self.flu_over.as_str()) {
            return Err(Invalid::new(
                "config.flu_over",
                format!("{:?} must be throttle or pause", self.flu_over),
            ));
        }
        for (name, pool) in &self.ipaddr_maps {
            let field = format!("config.ipaddr_maps.{name}");
            check_name(&field, name)?;
            pool.network().map_err(|rule| Invalid::new(&field, rule))?;
        }
        Ok(())
    }

    fn check_cpu(&self) -> Result<(), Invalid> {
        match self.cpu_mode.as_str() {
            "" | "host-passthrough" | "host-model" => {
                if !self.cpu_model.is_empty() {
                    return Err(Invalid::new(
                        "config.cpu_model",
                        "is only for cpu_mode custom",
                    ));
                }
            }
            "custom" => check_name("config.cpu_model", &self.cpu_model)?,
            other => {
                return Err(Invalid::new(
                    "config.cpu_mode",
                    format!("{other:?} must be host-passthrough, host-model or custom"),
                ));
            }
        }
        if !self.cpu_features.is_empty() && self.cpu_mode.is_empty() {
            return Err(Invalid::new("config.cpu_features", "needs a cpu_mode"));
        }
        for (position, feature) in self.cpu_features.iter().enumerate() {
            let name = feature.strip_prefix('-').unwrap_or("");
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte));
            if !valid {
                return Err(Invalid::new(
                    format!("config.cpu_features[{position}]"),
                    format!("{feature:?} must be -name (a CPU feature to switch off)"),
                ));
            }
        }
        Ok(())
    }

    /// The CPU the operator chose for this host, if any.
    pub fn cpu_choice(&self) -> Option<CpuSetting> {
        (!self.cpu_mode.is_empty()).then(|| CpuSetting {
            mode: self.cpu_mode.clone(),
            model: self.cpu_model.clone(),
            disabled_features: self
                .cpu_features
                .iter()
                .filter_map(|feature| feature.strip_prefix('-'))
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The settings as answers show them: the password masked.
    pub fn masked(&self) -> HostSettings {
        let mut shown = self.clone();
        if !shown.server_pass.is_empty() {
            shown.server_pass = MASKED.to_owned();
        }
        shown
    }

    /// The public port range for NAT; empty when the host has none.
    pub fn port_range(&self) -> std::ops::RangeInclusive<u16> {
        if self.ports_start == 0 {
            // An empty range: no public port may be forwarded.
            std::ops::RangeInclusive::new(1, 0)
        } else {
            self.ports_start..=self.ports_close
        }
    }

    /// The networks of the host's NAT pools (the VMs' private networks).
    pub fn vm_networks(&self) -> Vec<IpNet> {
        self.ipaddr_maps
            .values()
            .filter(|pool| pool.kind == "nat")
            .filter_map(|pool| pool.network().ok())
            .collect()
    }

    /// `extend_data.tls_fingerprint`: the SHA-256 fingerprint of an HTTPS
    /// API's certificate (engines granted `http`).
    pub fn tls_fingerprint(&self) -> Option<&str> {
        self.extend_data
            .get("tls_fingerprint")
            .and_then(serde_json::Value::as_str)
    }

    /// `extend_data.tls_client_cert`: the PEM certificate chain an HTTPS API
    /// wants from its clients (Docker's `--tlsverify`); `server_pass` then
    /// holds its private key (PEM), masked like any password.
    pub fn tls_client_cert(&self) -> Option<&str> {
        self.extend_data
            .get("tls_client_cert")
            .and_then(serde_json::Value::as_str)
            .filter(|pem| !pem.is_empty())
    }

    /// The rules of an HTTP API host's TLS: a fingerprint that parses, and a
    /// client certificate only over `https` (its PEM, and the key's in
    /// `server_pass`, are checked by the service with the proxy's PEM rules).
    fn check_api_tls(&self, http_api: bool) -> Result<(), Invalid> {
        if let Some(fingerprint) = self.tls_fingerprint()
            && rules::parse_fingerprint(fingerprint).is_none()
        {
            return Err(Invalid::new(
                "config.extend_data.tls_fingerprint",
                "must be a SHA-256 fingerprint: 64 hex digits, colons allowed",
            ));
        }
        if self.tls_client_cert().is_none() {
            return Ok(());
        }
        let field = "config.extend_data.tls_client_cert";
        if !http_api {
            return Err(Invalid::new(
                field,
                "only hosts of engines granted http present a client certificate",
            ));
        }
        if !self.server_addr.starts_with("https://") {
            return Err(Invalid::new(
                field,
                "a client certificate needs an https:// server_addr",
            ));
        }
        Ok(())
    }

    /// `extend_data.allow_hostdev`: PCI/USB passthrough allowed on this host.
    pub fn allow_hostdev(&self) -> bool {
        self.extend_data
            .get("allow_hostdev")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

impl IpPool {
    pub fn is_v6(&self) -> bool {
        self.vers == "ipv6"
    }

    /// The pool's network, or the rule it breaks.
    pub fn network(&self) -> Result<IpNet, String> {
        if self.vers != "ipv4" && self.vers != "ipv6" {
            return Err(format!("vers {:?} must be ipv4 or ipv6", self.vers));
        }
        if self.kind != "nat" && self.kind != "pub" {
            return Err(format!("type {:?} must be nat or pub", self.kind));
        }
        let from: IpAddr = self
            .from
            .parse()
            .map_err(|_| format!("from {:?} is not an IP address", self.from))?;
        if from.is_ipv6() != self.is_v6() {
            return Err(format!(
                "from {:?} is not an {} address",
                self.from, self.vers
            ));
        }
        let prefix = if self.mask.is_empty() {
            if self.is_v6() { 64 } else { 24 }
        } else {
            rules::prefix_length(&self.mask, self.is_v6())
                .ok_or_else(|| format!("mask {:?} is not a network mask", self.mask))?
        };
        if !self.gate.is_empty() && self.gate.parse::<IpAddr>().is_err() {
            return Err(format!("gate {:?} is not an IP address", self.gate));
        }
        if self.nums == 0 {
            return Err("nums must be at least 1".to_owned());
        }
        IpNet::new(from, prefix)
            .map(|network| network.trunc())
            .map_err(|_| format!("mask {:?} is not a network mask", self.mask))
    }
}

/// A host as `listup` and the host mutations show it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HostView {
    pub name: String,
    /// The engine.
    #[serde(rename = "type")]
    pub engine: String,
    pub addr: String,
    /// `server_pass` masked.
    pub config: HostSettings,
    pub vm_count: u64,
    pub status: HostState,
    pub enabled: bool,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Active,
    Inactive,
}

/// A host's detail.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HostDetail {
    pub name: String,
    #[serde(rename = "type")]
    pub engine: String,
    pub addr: String,
    pub config: HostSettings,
    pub vm_count: u64,
    pub enabled: bool,
    /// Its VMs' keys.
    pub vm_list: Vec<String>,
    /// The last stored status with `?status=true`, else null.
    #[schema(required)]
    pub status: Option<HostStatus>,
    /// When the host last answered (RFC 3339).
    #[schema(required)]
    pub last_updated: Option<String>,
    /// The CPU its VMs get: the config's `cpu_mode`, else what the engine's
    /// probe found (null: not probed yet, or an engine without CPU models).
    #[schema(required)]
    pub cpu: Option<CpuSetting>,
}

/// A host's figures; sizes in MB, usage in %.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct HostStatus {
    pub hostname: String,
    pub hypervisor: String,
    pub hypervisor_version: String,
    pub cpu_total: u32,
    pub cpu_usage: f64,
    pub mem_total: u64,
    pub mem_used: u64,
    pub mem_usage: f64,
    pub hdd_total: u64,
    pub hdd_used: u64,
    pub hdd_usage: f64,
    pub vm_count: u32,
    pub vm_running: u32,
    /// The raw CPU counters, to compute the next usage from.
    pub counters: CpuCounters,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct CpuCounters {
    pub cpu_busy_ns: u64,
    pub cpu_idle_ns: u64,
}

/// `server/status`: the figures and where they came from.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HostStatusAnswer {
    pub status: HostStatus,
    pub source: StatusSource,
    pub age_seconds: i64,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusSource {
    Cached,
    Fresh,
}

/// `server/create` body.
#[derive(Deserialize, ToSchema)]
pub struct HostCreate {
    /// The host's name, `[A-Za-z0-9_.-]{1,64}`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "h1")]
    pub name: String,
    /// The engine (a configured plugin's name).
    #[serde(default, rename = "type")]
    #[schema(example = "libvirt")]
    pub engine: String,
    #[serde(default)]
    pub config: HostSettings,
}

/// `server/update` body: `config` keys present replace the stored ones.
#[derive(Deserialize, ToSchema)]
pub struct HostUpdate {
    #[serde(default)]
    #[schema(value_type = HostSettings)]
    pub config: super::Patch,
    /// A new engine.
    #[serde(default, rename = "type")]
    pub engine: Option<String>,
}

/// `server/powers` body.
#[derive(Deserialize, ToSchema)]
pub struct HostPowers {
    pub enable: bool,
}

/// The CPU a host runs its VMs with: the operator's (`cpu_mode`…) or the
/// one the engine's probe found.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct CpuSetting {
    /// host-passthrough, host-model or custom.
    pub mode: String,
    /// The named model for custom.
    pub model: String,
    /// Features switched off.
    pub disabled_features: Vec<String>,
}
