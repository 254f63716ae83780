//! Hosts: the operator's hypervisor hosts, their settings, and turning a
//! stored host into what engines and capabilities see.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use super::validate::{self, check_name, decode};
use crate::caps::HostScope;
use crate::error::ApiError;
use crate::plugin::bindings::{HostConfig, HostCounters, IpPool, IpVersion, NicKind};
use crate::state::AppState;
use crate::store::{HostRecord, format_ms};

/// What the API shows instead of a stored password.
pub const MASKED_PASSWORD: &str = "******";

/// The `config` object of a host, typed. Unknown keys are ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct HostSettings {
    pub server_addr: String,
    pub server_user: String,
    pub server_pass: String,
    pub filter_name: String,
    pub images_path: String,
    pub system_path: String,
    pub network_nat: String,
    pub network_pub: String,
    pub ports_start: u16,
    pub ports_close: u16,
    #[serde(deserialize_with = "string_or_list")]
    pub public_addr: Vec<String>,
    pub ipaddr_maps: BTreeMap<String, IpPoolSettings>,
    pub limits_nums: u64,
    pub extend_data: Map<String, Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct IpPoolSettings {
    #[serde(default = "default_ip_version")]
    pub vers: String,
    #[serde(rename = "type", default = "default_pool_kind")]
    pub kind: String,
    #[serde(default)]
    pub gate: String,
    #[serde(default)]
    pub mask: String,
    pub from: String,
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

/// URI schemes the libvirt capability will open.
pub const LIBVIRT_SCHEMES: &[&str] = &["test", "qemu", "qemu+ssh", "qemu+tls", "lxc"];

impl HostSettings {
    /// Decode and check a `config` object; errors name `config.<field>`.
    pub fn parse(config: Map<String, Value>) -> Result<HostSettings, ApiError> {
        let settings: HostSettings = decode("config", Value::Object(config))?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ApiError> {
        if !self.server_addr.is_empty() {
            let scheme = self.server_addr.split("://").next().unwrap_or_default();
            if !self.server_addr.contains("://") || !LIBVIRT_SCHEMES.contains(&scheme) {
                return Err(ApiError::bad_field(
                    "config.server_addr",
                    format!(
                        "{:?} must be a URI with scheme one of {LIBVIRT_SCHEMES:?}",
                        self.server_addr
                    ),
                ));
            }
            if self
                .server_addr
                .chars()
                .any(|character| character.is_whitespace() || character.is_control())
            {
                return Err(ApiError::bad_field(
                    "config.server_addr",
                    "must not contain spaces or control characters",
                ));
            }
        }
        if !self.filter_name.is_empty() {
            check_name("config.filter_name", &self.filter_name)?;
        }
        for (field, path) in [
            ("config.images_path", &self.images_path),
            ("config.system_path", &self.system_path),
        ] {
            if !path.is_empty()
                && (!path.starts_with('/') || path.split('/').any(|part| part == ".."))
            {
                return Err(ApiError::bad_field(
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
            return Err(ApiError::bad_field(
                "config.ports_start",
                format!(
                    "port range {}..{} must have 1 <= ports_start <= ports_close <= 65535 (or both 0 for none)",
                    self.ports_start, self.ports_close
                ),
            ));
        }
        for (position, address) in self.public_addr.iter().enumerate() {
            if address.parse::<IpAddr>().is_err() {
                return Err(ApiError::bad_field(
                    &format!("config.public_addr[{position}]"),
                    format!("{address:?} is not an IP address"),
                ));
            }
        }
        for (name, pool) in &self.ipaddr_maps {
            let field = format!("config.ipaddr_maps.{name}");
            check_name(&field, name)?;
            pool.network()
                .map_err(|rule| ApiError::bad_field(&field, rule))?;
        }
        Ok(())
    }

    /// The host's settings as the API shows them: the password masked.
    pub fn to_public_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(object) = value.as_object_mut()
            && !self.server_pass.is_empty()
        {
            object.insert("server_pass".to_owned(), Value::from(MASKED_PASSWORD));
        }
        value
    }

    /// Merge an update into these settings: keys present replace, others
    /// stay; a masked password keeps the stored one.
    pub fn merged(&self, changes: Map<String, Value>) -> Result<HostSettings, ApiError> {
        let mut current = match serde_json::to_value(self) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        for (key, value) in changes {
            if key == "server_pass" && value.as_str() == Some(MASKED_PASSWORD) {
                continue;
            }
            current.insert(key, value);
        }
        HostSettings::parse(current)
    }
}

impl IpPoolSettings {
    pub fn is_v6(&self) -> bool {
        self.vers == "ipv6"
    }

    /// The pool's network (address, prefix), or the rule it breaks.
    pub fn network(&self) -> Result<(IpAddr, u8), String> {
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
            validate::prefix_length(&self.mask, self.is_v6())
                .ok_or_else(|| format!("mask {:?} is not a network mask", self.mask))?
        };
        if !self.gate.is_empty() && self.gate.parse::<IpAddr>().is_err() {
            return Err(format!("gate {:?} is not an IP address", self.gate));
        }
        if self.nums == 0 {
            return Err("nums must be at least 1".to_owned());
        }
        Ok((validate::network_of(from, prefix), prefix))
    }
}

/// A stored host with its settings decoded.
#[derive(Clone, Debug)]
pub struct Host {
    pub record: HostRecord,
    pub settings: HostSettings,
}

impl Host {
    pub fn from_record(record: HostRecord) -> Result<Host, ApiError> {
        let settings = HostSettings::parse(record.config.clone()).map_err(|error| {
            ApiError::Internal(format!(
                "stored settings of host {:?} are invalid: {error}",
                record.name
            ))
        })?;
        Ok(Host { record, settings })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// What capabilities may know about this host.
    pub fn scope(&self) -> Arc<HostScope> {
        let settings = &self.settings;
        let ports = if settings.ports_start == 0 {
            // An empty range: no public port may be forwarded.
            std::ops::RangeInclusive::new(1, 0)
        } else {
            settings.ports_start..=settings.ports_close
        };
        Arc::new(HostScope {
            name: self.record.name.clone(),
            uri: settings.server_addr.clone(),
            storage_dir: settings.system_path.clone(),
            ports,
            vm_networks: settings
                .ipaddr_maps
                .values()
                .filter(|pool| pool.kind == "nat")
                .filter_map(|pool| pool.network().ok())
                .collect(),
            public_addr: settings
                .public_addr
                .first()
                .and_then(|address| address.parse().ok()),
            name_prefix: settings.filter_name.clone(),
            allow_hostdev: settings
                .extend_data
                .get("allow_hostdev")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// What engines see: everything but the password.
    pub fn engine_config(&self) -> HostConfig {
        let settings = &self.settings;
        HostConfig {
            name: self.record.name.clone(),
            engine: self.record.engine.clone(),
            server_addr: settings.server_addr.clone(),
            server_user: settings.server_user.clone(),
            filter_name: settings.filter_name.clone(),
            images_path: settings.images_path.clone(),
            system_path: settings.system_path.clone(),
            network_nat: settings.network_nat.clone(),
            network_pub: settings.network_pub.clone(),
            ports_start: settings.ports_start,
            ports_close: settings.ports_close,
            public_addr: settings.public_addr.clone(),
            ip_pools: settings
                .ipaddr_maps
                .iter()
                .map(|(name, pool)| IpPool {
                    name: name.clone(),
                    version: if pool.is_v6() {
                        IpVersion::Ipv6
                    } else {
                        IpVersion::Ipv4
                    },
                    kind: if pool.kind == "pub" {
                        NicKind::Pub
                    } else {
                        NicKind::Nat
                    },
                    gate: pool.gate.clone(),
                    mask: pool.mask.clone(),
                    from: pool.from.clone(),
                    nums: pool.nums,
                    dns: pool.dnss.clone(),
                })
                .collect(),
            extend_data: Value::Object(settings.extend_data.clone()).to_string(),
        }
    }

    /// The host as `listup` shows it.
    pub fn summary_json(&self, vm_count: u64) -> Value {
        json!({
            "name": self.record.name,
            "type": self.record.engine,
            "addr": self.settings.server_addr,
            "config": self.settings.to_public_json(),
            "vm_count": vm_count,
            "status": if self.record.enabled { "active" } else { "inactive" },
            "enabled": self.record.enabled,
        })
    }
}

/// Load a host by name, or 404.
pub fn get(state: &AppState, name: &str) -> Result<Host, ApiError> {
    Host::from_record(state.store.host_get(name)?)
}

/// Load a host that must be enabled (VM operations), or 404/403.
pub fn get_enabled(state: &AppState, name: &str) -> Result<Host, ApiError> {
    let host = get(state, name)?;
    if !host.record.enabled {
        return Err(ApiError::Forbidden(format!(
            "host {name:?} is disabled (POST /api/server/powers/{name} to enable)"
        )));
    }
    Ok(host)
}

/// The engine named by a host must be a configured plugin.
pub fn check_engine(state: &AppState, engine: &str) -> Result<(), ApiError> {
    if state.plugins.plugins().contains_key(engine) {
        Ok(())
    } else {
        let known: Vec<String> = state.plugins.plugins().keys().cloned().collect();
        Err(ApiError::bad_field(
            "type",
            format!("unknown engine {engine:?} (configured: {known:?})"),
        ))
    }
}

/// Host status from raw counters, with CPU usage from the previous counters.
pub fn status_json(status: &HostCounters, previous: Option<&Value>) -> Value {
    let busy = status.cpu_busy_ns as f64;
    let idle = status.cpu_idle_ns as f64;
    let (previous_busy, previous_idle) = previous
        .and_then(|value| value.get("counters"))
        .map(|counters| {
            (
                counters
                    .get("cpu_busy_ns")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
                counters
                    .get("cpu_idle_ns")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
            )
        })
        .unwrap_or((0.0, 0.0));
    let (delta_busy, delta_idle) = if busy >= previous_busy && idle >= previous_idle {
        (busy - previous_busy, idle - previous_idle)
    } else {
        (busy, idle)
    };
    let cpu_usage = if delta_busy + delta_idle > 0.0 {
        delta_busy * 100.0 / (delta_busy + delta_idle)
    } else {
        0.0
    };
    let percent = |used: u64, total: u64| {
        if total > 0 {
            used as f64 * 100.0 / total as f64
        } else {
            0.0
        }
    };
    json!({
        "hostname": status.hostname,
        "hypervisor": status.hypervisor,
        "hypervisor_version": status.hypervisor_version,
        "cpu_total": status.cpu_total,
        "cpu_usage": round2(cpu_usage),
        "mem_total": status.mem_total_mb,
        "mem_used": status.mem_used_mb,
        "mem_usage": round2(percent(status.mem_used_mb, status.mem_total_mb)),
        "hdd_total": status.hdd_total_mb,
        "hdd_used": status.hdd_used_mb,
        "hdd_usage": round2(percent(status.hdd_used_mb, status.hdd_total_mb)),
        "vm_count": status.vm_count,
        "vm_running": status.vm_running,
        "counters": { "cpu_busy_ns": status.cpu_busy_ns, "cpu_idle_ns": status.cpu_idle_ns },
    })
}

pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The host's last stored status with its age, as `detail` and `status` show it.
pub fn last_updated(record: &HostRecord) -> Value {
    record
        .status_at
        .max(record.polled_at)
        .map(format_ms)
        .map(Value::from)
        .unwrap_or(Value::Null)
}

/// The task record of a host mutation.
pub fn task(actions: &str, host: &str) -> crate::store::NewTask {
    crate::store::NewTask {
        actions: actions.to_owned(),
        host: host.to_owned(),
        vm_uuid: String::new(),
    }
}

fn settings_map(settings: &HostSettings) -> Map<String, Value> {
    match serde_json::to_value(settings) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

pub fn listup(state: &AppState) -> Result<Value, ApiError> {
    let mut hosts = Map::new();
    for record in state.store.host_list()? {
        let vm_count = state.store.vm_count(Some(&record.name))?;
        let host = Host::from_record(record)?;
        hosts.insert(host.record.name.clone(), host.summary_json(vm_count));
    }
    Ok(Value::Object(hosts))
}

pub fn detail(state: &AppState, name: &str, with_status: bool) -> Result<Value, ApiError> {
    let host = get(state, name)?;
    let vms = state.store.vm_list(name)?;
    let mut value = host.summary_json(vms.len() as u64);
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "vm_list".to_owned(),
            Value::from(vms.iter().map(|vm| vm.vm_uuid.clone()).collect::<Vec<_>>()),
        );
        let status = if with_status {
            host.record.status.clone().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        object.insert("status".to_owned(), status);
        object.insert("last_updated".to_owned(), last_updated(&host.record));
    }
    Ok(value)
}

pub fn create(
    state: &AppState,
    name: &str,
    engine: &str,
    settings: &HostSettings,
) -> Result<Value, ApiError> {
    let record = state
        .store
        .host_insert(name, engine, &settings_map(settings))?;
    Ok(Host::from_record(record)?.summary_json(0))
}

pub fn update(
    state: &AppState,
    name: &str,
    engine: Option<&str>,
    settings: &HostSettings,
) -> Result<Value, ApiError> {
    let record = state
        .store
        .host_update(name, engine, &settings_map(settings))?;
    let vm_count = state.store.vm_count(Some(name))?;
    Ok(Host::from_record(record)?.summary_json(vm_count))
}

pub fn delete(state: &AppState, name: &str, force: bool) -> Result<Value, ApiError> {
    let vm_count = state.store.vm_count(Some(name))?;
    if vm_count > 0 && !force {
        return Err(ApiError::Conflict(format!(
            "host {name:?} still has {vm_count} VMs; delete them first or use ?force=true"
        )));
    }
    state.store.host_delete(name)?;
    Ok(Value::Null)
}

pub fn set_enabled(state: &AppState, name: &str, enable: bool) -> Result<Value, ApiError> {
    let record = state.store.host_set_enabled(name, enable)?;
    let vm_count = state.store.vm_count(Some(name))?;
    Ok(Host::from_record(record)?.summary_json(vm_count))
}

/// The host's status: the stored one unless `refresh` or none is stored.
pub async fn status(state: &AppState, name: &str, refresh: bool) -> Result<Value, ApiError> {
    let host = get(state, name)?;
    if !refresh
        && let (Some(status), Some(status_at)) = (&host.record.status, host.record.status_at)
    {
        let age_seconds = (crate::store::now_ms() - status_at).max(0) / 1000;
        return Ok(json!({ "status": status, "source": "cached", "age_seconds": age_seconds }));
    }
    let config = host.engine_config();
    let fresh = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "host-status",
            move |engine, store| {
                Box::pin(async move { engine.call_host_status(store, &config).await })
            },
        )
        .await?;
    let status = status_json(&fresh, host.record.status.as_ref());
    state.store.host_set_status(name, &status)?;
    Ok(json!({ "status": status, "source": "fresh", "age_seconds": 0 }))
}

/// Note that the poller reached the host (for `last_updated`).
pub fn touch(state: &AppState, name: &str) {
    if let Err(error) = state.store.host_touch(name) {
        tracing::error!("cannot record the poll time of host {name}: {error}");
    }
}
