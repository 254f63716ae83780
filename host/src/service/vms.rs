//! VMs: the operator's configuration (stored) and the hypervisor's truth
//! (through the host's engine). Every mutation here runs inside a task.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::hosts::{self, Host};
use super::validate::{check_name, decode};
use crate::error::ApiError;
use crate::plugin::bindings::{Disk, Nic, NicKind, PowerAction, VmInfo, VmSpec};
use crate::state::AppState;
use crate::store::{NewTask, VmRecord, format_ms};

/// The `config` of a VM, typed, with the API's defaults. Unknown keys are ignored.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct VmSettings {
    pub vm_uuid: String,
    pub os_name: String,
    pub os_pass: String,
    pub vc_port: u16,
    pub vc_pass: String,
    pub cpu_num: u32,
    pub cpu_per: u32,
    pub mem_num: u64,
    pub hdd_num: u64,
    pub speed_u: u32,
    pub speed_d: u32,
    pub flu_num: u64,
    pub nat_num: u32,
    pub web_num: u32,
    pub nic_all: BTreeMap<String, NicSettings>,
    pub hdd_all: BTreeMap<String, DiskSettings>,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            vm_uuid: String::new(),
            os_name: String::new(),
            os_pass: String::new(),
            vc_port: 0,
            vc_pass: String::new(),
            cpu_num: 2,
            cpu_per: 0,
            mem_num: 2048,
            hdd_num: 8192,
            speed_u: 0,
            speed_d: 0,
            flu_num: 0,
            nat_num: 100,
            web_num: 100,
            nic_all: BTreeMap::new(),
            hdd_all: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct NicSettings {
    pub nic_type: String,
    pub mac_addr: String,
    pub ip4_addr: String,
    pub ip6_addr: String,
    pub nic_gate: String,
    pub nic_mask: String,
    pub dns_addr: Vec<String>,
}

impl NicSettings {
    /// The NIC as engines see it.
    pub fn to_wit(&self, name: &str) -> Nic {
        Nic {
            name: name.to_owned(),
            kind: if self.nic_type == "pub" {
                NicKind::Pub
            } else {
                NicKind::Nat
            },
            mac_addr: self.mac_addr.clone(),
            ip4_addr: self.ip4_addr.clone(),
            ip6_addr: self.ip6_addr.clone(),
            gate: self.nic_gate.clone(),
            mask: self.nic_mask.clone(),
            dns: self.dns_addr.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DiskSettings {
    pub hdd_name: String,
    pub hdd_size: u64,
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|part| part.len() == 2 && part.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// A random password for VNC: 8 characters, the most VNC accepts.
fn generate_vnc_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut generator = rand::rng();
    (0..8)
        .map(|_| ALPHABET[generator.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl VmSettings {
    /// Decode and check a VM config; errors name the field.
    pub fn parse(value: Value) -> Result<VmSettings, ApiError> {
        let mut settings: VmSettings = decode("", value)?;
        if settings.vc_pass.is_empty() {
            settings.vc_pass = generate_vnc_password();
        }
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ApiError> {
        check_name("vm_uuid", &self.vm_uuid)?;
        let bad = |field: &str, rule: String| ApiError::bad_field(field, rule);
        if !(1..=256).contains(&self.cpu_num) {
            return Err(bad(
                "cpu_num",
                format!("must be 1..=256, got {}", self.cpu_num),
            ));
        }
        if self.cpu_per > 100 {
            return Err(bad(
                "cpu_per",
                format!("must be 0..=100, got {}", self.cpu_per),
            ));
        }
        if !(16..=4 * 1024 * 1024).contains(&self.mem_num) {
            return Err(bad(
                "mem_num",
                format!("must be 16..=4194304 MB, got {}", self.mem_num),
            ));
        }
        if self.hdd_num > 64 * 1024 * 1024 {
            return Err(bad(
                "hdd_num",
                format!("must be at most 67108864 MB, got {}", self.hdd_num),
            ));
        }
        if self.vc_pass.len() > 8
            || !self
                .vc_pass
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric())
        {
            return Err(bad(
                "vc_pass",
                "must be 1 to 8 letters or digits (VNC's limit)".to_owned(),
            ));
        }
        if self.os_pass.chars().any(char::is_control) || self.os_pass.len() > 128 {
            return Err(bad(
                "os_pass",
                "must be at most 128 characters, without control characters".to_owned(),
            ));
        }
        if !self.os_name.is_empty() {
            check_name("os_name", &self.os_name)?;
        }
        for (name, nic) in &self.nic_all {
            let field = |key: &str| format!("nic_all.{name}.{key}");
            check_name(&format!("nic_all.{name}"), name)?;
            if nic.nic_type != "nat" && nic.nic_type != "pub" {
                return Err(bad(
                    &field("nic_type"),
                    format!("{:?} must be nat or pub", nic.nic_type),
                ));
            }
            if !nic.mac_addr.is_empty() && !is_mac(&nic.mac_addr) {
                return Err(bad(
                    &field("mac_addr"),
                    format!("{:?} is not a MAC address", nic.mac_addr),
                ));
            }
            for (key, address) in [
                ("ip4_addr", &nic.ip4_addr),
                ("ip6_addr", &nic.ip6_addr),
                ("nic_gate", &nic.nic_gate),
            ] {
                if !address.is_empty() && address.parse::<IpAddr>().is_err() {
                    return Err(bad(
                        &field(key),
                        format!("{address:?} is not an IP address"),
                    ));
                }
            }
            for (position, address) in nic.dns_addr.iter().enumerate() {
                if address.parse::<IpAddr>().is_err() {
                    return Err(bad(
                        &field(&format!("dns_addr[{position}]")),
                        format!("{address:?} is not an IP address"),
                    ));
                }
            }
        }
        for (name, disk) in &self.hdd_all {
            check_name(&format!("hdd_all.{name}"), name)?;
            if disk.hdd_size == 0 {
                return Err(bad(
                    &format!("hdd_all.{name}.hdd_size"),
                    "must be at least 1 MB".to_owned(),
                ));
            }
        }
        Ok(())
    }

    pub fn spec(&self) -> VmSpec {
        VmSpec {
            vm_uuid: self.vm_uuid.clone(),
            os_name: self.os_name.clone(),
            os_pass: self.os_pass.clone(),
            vc_port: self.vc_port,
            vc_pass: self.vc_pass.clone(),
            cpu_num: self.cpu_num,
            cpu_per: self.cpu_per,
            mem_mb: self.mem_num,
            hdd_mb: self.hdd_num,
            speed_up: self.speed_u,
            speed_down: self.speed_d,
            nics: self
                .nic_all
                .iter()
                .map(|(name, nic)| nic.to_wit(name))
                .collect(),
            disks: self
                .hdd_all
                .iter()
                .map(|(name, disk)| Disk {
                    name: name.clone(),
                    size_mb: disk.hdd_size,
                })
                .collect(),
        }
    }

    /// Settings for a VM found on the hypervisor by `scaner`.
    pub fn from_spec(spec: &VmSpec) -> VmSettings {
        VmSettings {
            vm_uuid: spec.vm_uuid.clone(),
            os_name: spec.os_name.clone(),
            os_pass: String::new(),
            vc_port: spec.vc_port,
            vc_pass: spec.vc_pass.clone(),
            cpu_num: spec.cpu_num.max(1),
            cpu_per: spec.cpu_per,
            mem_num: spec.mem_mb.max(16),
            hdd_num: spec.hdd_mb,
            speed_u: spec.speed_up,
            speed_d: spec.speed_down,
            nic_all: spec
                .nics
                .iter()
                .map(|nic| {
                    (
                        nic.name.clone(),
                        NicSettings {
                            nic_type: if nic.kind == NicKind::Pub {
                                "pub"
                            } else {
                                "nat"
                            }
                            .to_owned(),
                            mac_addr: nic.mac_addr.clone(),
                            ip4_addr: nic.ip4_addr.clone(),
                            ip6_addr: nic.ip6_addr.clone(),
                            nic_gate: nic.gate.clone(),
                            nic_mask: nic.mask.clone(),
                            dns_addr: nic.dns.clone(),
                        },
                    )
                })
                .collect(),
            hdd_all: spec
                .disks
                .iter()
                .map(|disk| {
                    (
                        disk.name.clone(),
                        DiskSettings {
                            hdd_name: disk.name.clone(),
                            hdd_size: disk.size_mb,
                        },
                    )
                })
                .collect(),
            ..VmSettings::default()
        }
    }

    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        }
    }
}

/// The task record of a VM mutation.
pub fn task(actions: &str, host: &str, vm_uuid: &str) -> NewTask {
    NewTask {
        actions: actions.to_owned(),
        host: host.to_owned(),
        vm_uuid: vm_uuid.to_owned(),
    }
}

/// A random upload key, shown in the VM's detail.
fn generate_upload_key() -> String {
    crate::auth::generate_token()
}

/// Find a VM of the host by its key or by its libvirt UUID.
pub fn find(state: &AppState, host: &str, vm: &str) -> Result<VmRecord, ApiError> {
    match state.store.vm_get(host, vm) {
        Ok(record) => Ok(record),
        Err(crate::store::StoreError::NotFound(message)) => {
            let by_uuid = state.store.vm_list(host)?.into_iter().find(|record| {
                record.config.get("domain_uuid").and_then(Value::as_str) == Some(vm)
            });
            by_uuid.ok_or(ApiError::NotFound(message))
        }
        Err(other) => Err(other.into()),
    }
}

/// The stored config of a VM, typed.
pub fn settings_of(record: &VmRecord) -> Result<VmSettings, ApiError> {
    decode::<VmSettings>("", Value::Object(record.config.clone())).map_err(|error| {
        ApiError::Internal(format!(
            "stored config of vm {:?} is invalid: {error}",
            record.vm_uuid
        ))
    })
}

/// The config as the API shows it: the stored one without the core's own
/// `domain_uuid` (`os_pass` and `vc_pass` included: the panel is the
/// operator's own and the original showed them).
pub(super) struct PublicConfig<'a>(pub &'a Map<String, Value>);

impl Serialize for PublicConfig<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0 {
            if key != "domain_uuid" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

pub(super) fn sample_json(sample: crate::store::SampleRecord) -> Value {
    let mut value = sample.sample;
    if let Some(object) = value.as_object_mut() {
        object.insert("source".to_owned(), Value::from(sample.source));
        object
            .entry("on_update")
            .or_insert_with(|| Value::from(format_ms(sample.created_at)));
    }
    value
}

async fn engine_get(state: &AppState, host: &Host, vm_uuid: &str) -> Result<VmInfo, ApiError> {
    let config = host.engine_config();
    let vm_uuid = vm_uuid.to_owned();
    Ok(state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-get",
            move |engine, store| {
                Box::pin(async move { engine.call_vm_get(store, &config, &vm_uuid).await })
            },
        )
        .await?)
}

const DETAIL_HISTORY: u32 = 100;

pub async fn detail(state: &AppState, host_name: &str, vm: &str) -> Result<Value, ApiError> {
    let host = hosts::get_enabled(state, host_name)?;
    let record = find(state, host_name, vm)?;
    let info = engine_get(state, &host, &record.vm_uuid).await;
    let power_status = match &info {
        Ok(info) => info.power.as_str(),
        Err(ApiError::NotFound(_)) => "missing",
        Err(_) => "unknown",
    };
    let history: Vec<Value> = state
        .store
        .sample_history(host_name, &record.vm_uuid, 0, DETAIL_HISTORY)?
        .into_iter()
        .map(sample_json)
        .collect();
    Ok(json!({
        "uuid": record.vm_uuid,
        "domain_uuid": info.as_ref().map(|info| info.domain_uuid.clone()).unwrap_or_default(),
        "config": PublicConfig(&record.config),
        "power_status": power_status,
        "upload_key": record.upload_key,
        "flu_usage": record.flu_usage,
        "status": history,
        "created_at": format_ms(record.created_at),
    }))
}

fn vm_json(record: &VmRecord, info: &VmInfo) -> Value {
    json!({
        "uuid": record.vm_uuid,
        "domain_uuid": info.domain_uuid,
        "config": PublicConfig(&record.config),
        "power_status": info.power.as_str(),
        "upload_key": record.upload_key,
    })
}

/// Create: reserve the key (and the host's VM limit) in the database first,
/// then ask the engine; if the engine fails the reservation is removed.
pub async fn create(
    state: Arc<AppState>,
    host: Host,
    settings: VmSettings,
) -> Result<Value, ApiError> {
    let host_name = host.record.name.clone();
    let record = state.store.vm_insert(
        &host_name,
        &settings.vm_uuid,
        &settings.to_map(),
        &generate_upload_key(),
        host.settings.limits_nums,
    )?;
    let config = host.engine_config();
    let spec = settings.spec();
    let created = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-create",
            move |engine, store| {
                Box::pin(async move { engine.call_vm_create(store, &config, &spec).await })
            },
        )
        .await;
    match created {
        Ok(info) => {
            let mut stored = settings;
            adopt_engine_view(&mut stored, &info);
            let mut config = stored.to_map();
            config.insert(
                "domain_uuid".to_owned(),
                Value::from(info.domain_uuid.clone()),
            );
            let record = state
                .store
                .vm_update_config(&host_name, &record.vm_uuid, &config)?;
            state
                .store
                .vm_set_power(&host_name, &record.vm_uuid, info.power.as_str())?;
            Ok(vm_json(&record, &info))
        }
        Err(error) => {
            state.store.vm_delete(&host_name, &record.vm_uuid)?;
            Err(error.into())
        }
    }
}

/// Keep what the engine decided (generated MACs, the VNC port) in the
/// stored config.
fn adopt_engine_view(settings: &mut VmSettings, info: &VmInfo) {
    for nic in &info.spec.nics {
        if let Some(stored) = settings.nic_all.get_mut(&nic.name)
            && stored.mac_addr.is_empty()
        {
            stored.mac_addr = nic.mac_addr.clone();
        }
    }
    if settings.vc_port == 0 && info.spec.vc_port != 0 {
        settings.vc_port = info.spec.vc_port;
    }
}

/// Update: absent fields keep their value; the engine gets the merged config.
pub async fn update(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    changes: Map<String, Value>,
) -> Result<Value, ApiError> {
    let mut merged = record.config.clone();
    for (key, value) in changes {
        if key != "vm_uuid" {
            merged.insert(key, value);
        }
    }
    merged.remove("domain_uuid");
    let settings = VmSettings::parse(Value::Object(merged))?;
    let config = host.engine_config();
    let spec = settings.spec();
    let info = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-update",
            move |engine, store| {
                Box::pin(async move { engine.call_vm_update(store, &config, &spec).await })
            },
        )
        .await?;
    let mut stored = settings.to_map();
    stored.insert(
        "domain_uuid".to_owned(),
        Value::from(info.domain_uuid.clone()),
    );
    let record = state
        .store
        .vm_update_config(&host.record.name, &record.vm_uuid, &stored)?;
    Ok(vm_json(&record, &info))
}

/// Delete: the engine removes the domain and its volumes; the database
/// removes the record with its NAT rules, IPs and proxies (foreign keys).
pub async fn delete(state: Arc<AppState>, host: Host, record: VmRecord) -> Result<Value, ApiError> {
    // Forwards and proxy sites go down first: a rule must never outlive its VM.
    super::network::remove_all(&state, &host, &record.vm_uuid).await?;
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let removed = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-delete",
            move |engine, store| {
                Box::pin(async move { engine.call_vm_delete(store, &config, &vm_uuid).await })
            },
        )
        .await;
    match removed {
        // Already gone on the hypervisor: the panel's record goes too.
        Ok(())
        | Err(crate::plugin::EngineError::Plugin {
            error: crate::plugin::bindings::PluginError::NotFound(_),
            ..
        }) => {}
        Err(error) => return Err(error.into()),
    }
    state.store.vm_delete(&host.record.name, &record.vm_uuid)?;
    Ok(Value::Null)
}

/// The power action named by `text`: the API's words or the original's enum names.
pub fn parse_action(text: &str) -> Option<PowerAction> {
    Some(match text {
        "start" | "S_START" => PowerAction::Start,
        "stop" | "S_CLOSE" => PowerAction::Stop,
        "hard_stop" | "H_CLOSE" => PowerAction::HardStop,
        "reset" | "S_RESET" => PowerAction::Reset,
        "hard_reset" | "H_RESET" => PowerAction::HardReset,
        "pause" | "A_PAUSE" | "S_PAUSE" => PowerAction::Pause,
        "resume" | "A_WAKED" => PowerAction::Resume,
        _ => return None,
    })
}

pub async fn power(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    action: PowerAction,
) -> Result<Value, ApiError> {
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let power = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-power",
            move |engine, store| {
                Box::pin(
                    async move { engine.call_vm_power(store, &config, &vm_uuid, action).await },
                )
            },
        )
        .await?;
    state
        .store
        .vm_set_power(&host.record.name, &record.vm_uuid, power.as_str())?;
    Ok(json!({ "power_status": power.as_str() }))
}

/// Set `os_pass` (the original's `password` endpoint); applied by the
/// guest agent or at next provisioning, so only the stored config changes.
pub fn set_password(
    state: &AppState,
    record: &VmRecord,
    password: &str,
) -> Result<Value, ApiError> {
    if password.is_empty() || password.len() > 128 || password.chars().any(char::is_control) {
        return Err(ApiError::bad_field(
            "password",
            "must be 1 to 128 characters, without control characters",
        ));
    }
    let mut config = record.config.clone();
    config.insert("os_pass".to_owned(), Value::from(password));
    state
        .store
        .vm_update_config(&record.host, &record.vm_uuid, &config)?;
    Ok(json!({ "vm_uuid": record.vm_uuid }))
}

/// Power state and history; `limit` is a window in minutes (0 = all kept).
pub async fn status(
    state: &AppState,
    host: &Host,
    record: &VmRecord,
    minutes: u32,
) -> Result<Value, ApiError> {
    let power = match engine_get(state, host, &record.vm_uuid).await {
        Ok(info) => info.power.as_str(),
        Err(ApiError::NotFound(_)) => "missing",
        Err(error) => return Err(error),
    };
    let since = if minutes == 0 {
        0
    } else {
        crate::store::now_ms() - i64::from(minutes) * 60_000
    };
    let history: Vec<Value> = state
        .store
        .sample_history(&record.host, &record.vm_uuid, since, 10_000)?
        .into_iter()
        .map(sample_json)
        .collect();
    Ok(json!({ "power_status": power, "history": history, "flu_usage": record.flu_usage }))
}

/// Import the domains whose name starts with `prefix` that the panel lacks.
pub async fn scan(state: Arc<AppState>, host: Host, prefix: String) -> Result<Value, ApiError> {
    let config = host.engine_config();
    let engine_prefix = prefix.clone();
    let found = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-scan",
            move |engine, store| {
                Box::pin(async move { engine.call_vm_scan(store, &config, &engine_prefix).await })
            },
        )
        .await?;
    let scanned = found.len();
    let mut added = Vec::new();
    for info in found {
        if !info.vm_uuid.starts_with(&prefix) || !super::validate::is_name(&info.vm_uuid) {
            continue;
        }
        let mut settings = VmSettings::from_spec(&info.spec);
        settings.vm_uuid = info.vm_uuid.clone();
        let mut config = settings.to_map();
        config.insert(
            "domain_uuid".to_owned(),
            Value::from(info.domain_uuid.clone()),
        );
        match state.store.vm_insert(
            &host.record.name,
            &info.vm_uuid,
            &config,
            &generate_upload_key(),
            0,
        ) {
            Ok(_) => {
                state
                    .store
                    .vm_set_power(&host.record.name, &info.vm_uuid, info.power.as_str())?;
                added.push(info.vm_uuid);
            }
            Err(crate::store::StoreError::Conflict(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(
        json!({ "scanned": scanned, "added": added.len(), "added_vms": added, "prefix_filter": prefix }),
    )
}
