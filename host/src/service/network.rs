//! A VM's network: NAT port forwards, NICs and addresses, reverse-proxy
//! entries. The database is written first (it arbitrates ports, addresses
//! and domains), then the engine applies; an engine failure undoes the row.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::hosts::Host;
use super::validate::decode;
use super::vms::{NicSettings, VmSettings, settings_of};
use crate::error::ApiError;
use crate::plugin::bindings::{PortForward, Protocol, ProxySite, TlsPair};
use crate::state::AppState;
use crate::store::{LogLevel, NatRuleRecord, NewLog, ProxyRecord, StoreError, VmRecord};

/// Text fields that reach nftables comments or nginx files: printable, no
/// quotes, braces, semicolons or newlines.
fn check_plain_text(field: &str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.len() > max {
        return Err(ApiError::bad_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(bad) = text.chars().find(|character| {
        character.is_control()
            || matches!(character, '"' | '\'' | '`' | ';' | '{' | '}' | '\\' | '$')
    }) {
        return Err(ApiError::bad_field(
            field,
            format!("must not contain {bad:?}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- NAT

/// `natadd` body, with the original server's aliases.
#[derive(Deserialize)]
pub struct NatAddBody {
    #[serde(default)]
    pub protocol: String,
    #[serde(default, alias = "external_port")]
    pub wan_port: Option<u32>,
    #[serde(default, alias = "internal_port")]
    pub lan_port: Option<u32>,
    #[serde(default, alias = "internal_ip")]
    pub lan_addr: String,
    #[serde(default, alias = "description", alias = "port_tips")]
    pub nat_tips: String,
}

fn nat_json(index: usize, rule: &NatRuleRecord) -> Value {
    json!({
        "index": index,
        "protocol": rule.protocol,
        "wan_port": rule.wan_port,
        "lan_port": rule.lan_port,
        "lan_addr": rule.lan_addr,
        "nat_tips": rule.nat_tips,
    })
}

pub fn natget(state: &AppState, record: &VmRecord) -> Result<Value, ApiError> {
    let rules = state.store.nat_list(&record.host, Some(&record.vm_uuid))?;
    Ok(Value::Array(
        rules
            .iter()
            .enumerate()
            .map(|(index, rule)| nat_json(index, rule))
            .collect(),
    ))
}

/// Validated `natadd` input.
pub struct NatRequest {
    protocol_text: String,
    wan_port: u16,
    lan_port: u16,
    lan_addr: String,
    nat_tips: String,
}

pub fn check_nat(host: &Host, body: NatAddBody) -> Result<NatRequest, ApiError> {
    let protocol = match body.protocol.to_ascii_lowercase().as_str() {
        "tcp" | "" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(ApiError::bad_field(
                "protocol",
                format!("{other:?} must be tcp or udp"),
            ));
        }
    };
    let scope = host.scope();
    let wan_port = body.wan_port.unwrap_or(0);
    if wan_port != 0
        && !(wan_port <= u32::from(u16::MAX) && scope.ports.contains(&(wan_port as u16)))
    {
        return Err(ApiError::bad_field(
            "wan_port",
            format!(
                "{wan_port} is outside the host's port range {}..{}",
                scope.ports.start(),
                scope.ports.end()
            ),
        ));
    }
    if scope.ports.is_empty() {
        return Err(ApiError::bad_field(
            "wan_port",
            format!(
                "host {:?} has no public port range (ports_start/ports_close)",
                host.name()
            ),
        ));
    }
    let lan_port = body.lan_port.unwrap_or(0);
    if !(1..=65535).contains(&lan_port) {
        return Err(ApiError::bad_field(
            "lan_port",
            format!("must be 1..=65535, got {lan_port}"),
        ));
    }
    if !body.lan_addr.is_empty() {
        let address: IpAddr = body.lan_addr.parse().map_err(|_| {
            ApiError::bad_field(
                "lan_addr",
                format!("{:?} is not an IP address", body.lan_addr),
            )
        })?;
        if !scope.in_vm_networks(address) {
            return Err(ApiError::bad_field(
                "lan_addr",
                format!("{address} is not inside the host's VM networks"),
            ));
        }
    }
    check_plain_text("nat_tips", &body.nat_tips, 200)?;
    Ok(NatRequest {
        protocol_text: if protocol == Protocol::Udp {
            "udp"
        } else {
            "tcp"
        }
        .to_owned(),
        wan_port: wan_port as u16,
        lan_port: lan_port as u16,
        lan_addr: body.lan_addr,
        nat_tips: body.nat_tips,
    })
}

fn forward_of(rule: &NatRuleRecord) -> PortForward {
    PortForward {
        id: rule.id as u64,
        protocol: if rule.protocol == "udp" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        public_port: rule.wan_port,
        target_addr: rule.lan_addr.clone(),
        target_port: rule.lan_port,
    }
}

pub async fn natadd(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    request: NatRequest,
) -> Result<Value, ApiError> {
    let settings = settings_of(&record)?;
    let scope = host.scope();
    let rule = state.store.nat_insert(
        &record.host,
        &record.vm_uuid,
        &request.protocol_text,
        request.wan_port,
        scope.ports.clone(),
        request.lan_port,
        &request.lan_addr,
        &request.nat_tips,
        settings.nat_num,
    )?;
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let forward = forward_of(&rule);
    let applied = state
        .plugins
        .call(
            &host.record.engine,
            scope,
            "nat-apply",
            move |engine, store| {
                Box::pin(async move {
                    engine
                        .call_nat_apply(store, &config, &vm_uuid, &forward)
                        .await
                })
            },
        )
        .await;
    match applied {
        Ok(forward) => {
            state.store.nat_set_addr(rule.id, &forward.target_addr)?;
            let rules = state.store.nat_list(&record.host, Some(&record.vm_uuid))?;
            let index = rules
                .iter()
                .position(|stored| stored.id == rule.id)
                .unwrap_or(rules.len());
            let stored = state.store.nat_get(rule.id)?;
            Ok(nat_json(index, &stored))
        }
        Err(error) => {
            state.store.nat_delete(rule.id)?;
            Err(error.into())
        }
    }
}

/// Remove the rule at `index` (0-based, insertion order).
pub async fn natdel(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    index: usize,
) -> Result<Value, ApiError> {
    let rules = state.store.nat_list(&record.host, Some(&record.vm_uuid))?;
    let rule = rules
        .get(index)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "vm {:?} has no NAT rule at index {index}",
                record.vm_uuid
            ))
        })?
        .clone();
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let forward = forward_of(&rule);
    state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "nat-remove",
            move |engine, store| {
                Box::pin(async move {
                    engine
                        .call_nat_remove(store, &config, &vm_uuid, &forward)
                        .await
                })
            },
        )
        .await?;
    state.store.nat_delete(rule.id)?;
    Ok(Value::Null)
}

/// Rebuild the NAT table and the proxy files from the database (at start and
/// on `loader`). Failures are logged, never fatal: the API keeps serving.
/// Answers what was done, for `loader`'s answer.
pub async fn reconcile(state: &AppState) -> Value {
    let mut forwards = Vec::new();
    let mut sites = Vec::new();
    let mut problems = Vec::new();
    match state.store.host_list() {
        Ok(records) => {
            for record in records {
                let name = record.name.clone();
                let host = match Host::from_record(record) {
                    Ok(host) => host,
                    Err(error) => {
                        problems.push(format!("host {name}: {error}"));
                        continue;
                    }
                };
                let scope = host.scope();
                match state.store.nat_list(&name, None) {
                    Ok(rules) => {
                        forwards.extend(rules.iter().map(|rule| (scope.clone(), forward_of(rule))))
                    }
                    Err(error) => problems.push(format!("NAT rules of host {name}: {error}")),
                }
                match state.store.proxy_list(&name, None) {
                    Ok(entries) => {
                        sites.extend(entries.iter().map(|entry| (scope.clone(), site_of(entry))))
                    }
                    Err(error) => problems.push(format!("proxies of host {name}: {error}")),
                }
            }
        }
        Err(error) => problems.push(format!("hosts: {error}")),
    }
    let nat = match state.capabilities.nat.reconcile(forwards).await {
        Ok(report) => {
            let message = format!(
                "NAT reconciled: {} added, {} removed, {} skipped{}",
                report.added,
                report.removed,
                report.skipped.len(),
                describe_skipped(&report.skipped)
            );
            log_reconcile(state, !report.skipped.is_empty(), &message);
            json!({ "added": report.added, "removed": report.removed, "skipped": report.skipped.len() })
        }
        Err(error) => {
            log_reconcile(state, true, &format!("NAT reconcile failed: {error}"));
            json!({ "error": error.to_string() })
        }
    };
    let proxy = match state.capabilities.proxy.reconcile(sites).await {
        Ok(report) => {
            let message = format!(
                "proxy reconciled: {} written, {} removed, {} skipped{}",
                report.written,
                report.removed,
                report.skipped.len(),
                describe_skipped(&report.skipped)
            );
            log_reconcile(state, !report.skipped.is_empty(), &message);
            json!({ "written": report.written, "removed": report.removed, "skipped": report.skipped.len() })
        }
        Err(error) => {
            log_reconcile(state, true, &format!("proxy reconcile failed: {error}"));
            json!({ "error": error.to_string() })
        }
    };
    for problem in &problems {
        log_reconcile(state, true, &format!("reconcile could not read {problem}"));
    }
    json!({ "nat": nat, "proxy": proxy })
}

fn describe_skipped(skipped: &[(u64, String)]) -> String {
    skipped
        .iter()
        .map(|(id, reason)| format!("; {id}: {reason}"))
        .collect()
}

fn log_reconcile(state: &AppState, warn: bool, message: &str) {
    let level = if warn { LogLevel::Warn } else { LogLevel::Info };
    tracing::info!("{message}");
    if let Err(error) = state
        .store
        .log_insert(&NewLog::new(level, "reconcile", message))
    {
        tracing::error!("cannot store a log record: {error}");
    }
}

/// Take a VM's forwards and proxy sites down before the VM goes (the
/// database rows go with the VM through the foreign keys).
pub async fn remove_all(state: &AppState, host: &Host, vm_uuid: &str) -> Result<(), ApiError> {
    for rule in state.store.nat_list(host.name(), Some(vm_uuid))? {
        let config = host.engine_config();
        let vm = vm_uuid.to_owned();
        let forward = forward_of(&rule);
        state
            .plugins
            .call(
                &host.record.engine,
                host.scope(),
                "nat-remove",
                move |engine, store| {
                    Box::pin(
                        async move { engine.call_nat_remove(store, &config, &vm, &forward).await },
                    )
                },
            )
            .await?;
    }
    for entry in state.store.proxy_list(host.name(), Some(vm_uuid))? {
        let config = host.engine_config();
        let vm = vm_uuid.to_owned();
        let site = site_of(&entry);
        state
            .plugins
            .call(
                &host.record.engine,
                host.scope(),
                "proxy-remove",
                move |engine, store| {
                    Box::pin(
                        async move { engine.call_proxy_remove(store, &config, &vm, &site).await },
                    )
                },
            )
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- IPs

/// `ipadd_` body, with the original server's aliases.
#[derive(Deserialize)]
pub struct IpAddBody {
    #[serde(default, alias = "type")]
    pub nic_type: String,
    #[serde(default, alias = "address")]
    pub ip4_addr: String,
    #[serde(default)]
    pub ip6_addr: String,
    #[serde(default)]
    pub mac_addr: String,
    #[serde(default, alias = "gateway")]
    pub nic_gate: String,
    #[serde(default, alias = "netmask")]
    pub nic_mask: String,
    #[serde(default)]
    pub dns_addr: Vec<String>,
}

fn nic_json(index: usize, name: &str, nic: &NicSettings) -> Value {
    json!({
        "index": index,
        "nic_name": name,
        "nic_type": nic.nic_type,
        "mac_addr": nic.mac_addr,
        "ip4_addr": nic.ip4_addr,
        "ip6_addr": nic.ip6_addr,
        "nic_gate": nic.nic_gate,
        "nic_mask": nic.nic_mask,
        "dns_addr": nic.dns_addr,
    })
}

/// NICs in their order: by number of their `nicN` name, others after.
fn ordered_nics(settings: &VmSettings) -> Vec<(&String, &NicSettings)> {
    let mut nics: Vec<(&String, &NicSettings)> = settings.nic_all.iter().collect();
    nics.sort_by_key(|(name, _)| {
        (
            name.strip_prefix("nic")
                .and_then(|number| number.parse::<u32>().ok())
                .unwrap_or(u32::MAX),
            (*name).clone(),
        )
    });
    nics
}

pub fn iplist(record: &VmRecord) -> Result<Value, ApiError> {
    let settings = settings_of(record)?;
    Ok(Value::Array(
        ordered_nics(&settings)
            .into_iter()
            .enumerate()
            .map(|(index, (name, nic))| nic_json(index, name, nic))
            .collect(),
    ))
}

/// Addresses used by NICs of a set of VM configs.
fn used_addresses(configs: &[&Map<String, Value>]) -> std::collections::HashSet<String> {
    configs
        .iter()
        .filter_map(|config| config.get("nic_all").and_then(Value::as_object))
        .flat_map(|nics| nics.values())
        .filter_map(|nic| nic.get("ip4_addr").and_then(Value::as_str))
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

fn next_free(
    host: &Host,
    kind: &str,
    used: &std::collections::HashSet<String>,
) -> Result<(String, String, String, Vec<String>), StoreError> {
    for pool in host
        .settings
        .ipaddr_maps
        .values()
        .filter(|pool| pool.kind == kind && !pool.is_v6())
    {
        let Ok(IpAddr::V4(first)) = pool.from.parse::<IpAddr>() else {
            continue;
        };
        for offset in 0..pool.nums {
            let candidate =
                std::net::Ipv4Addr::from(u32::from(first).saturating_add(offset)).to_string();
            if !used.contains(&candidate) && candidate != pool.gate {
                return Ok((
                    candidate,
                    pool.gate.clone(),
                    pool.mask.clone(),
                    pool.dnss.clone(),
                ));
            }
        }
    }
    Err(StoreError::Conflict(format!(
        "the {kind} IP pools of host {:?} are exhausted",
        host.name()
    )))
}

pub async fn ipadd(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    body: IpAddBody,
) -> Result<Value, ApiError> {
    let nic_type = if body.nic_type.is_empty() {
        "nat".to_owned()
    } else {
        body.nic_type.clone()
    };
    // Reuse the VM config rules for the new NIC.
    let probe = json!({ "vm_uuid": record.vm_uuid, "vc_pass": "probe", "nic_all": { "nic0": {
        "nic_type": nic_type, "mac_addr": body.mac_addr, "ip4_addr": body.ip4_addr, "ip6_addr": body.ip6_addr,
        "nic_gate": body.nic_gate, "nic_mask": body.nic_mask, "dns_addr": body.dns_addr } } });
    VmSettings::parse(probe)
        .map_err(|error| ApiError::BadRequest(error.to_string().replace("nic_all.nic0.", "")))?;
    let host_for_pick = host.clone();
    let (name, nic) =
        state
            .store
            .vm_change_config(&record.host, &record.vm_uuid, |config, others| {
                let other_refs: Vec<&Map<String, Value>> = others.iter().collect();
                let mut used = used_addresses(&other_refs);
                used.extend(used_addresses(&[&*config]));
                let mut nic = NicSettings {
                    nic_type: nic_type.clone(),
                    mac_addr: body.mac_addr.to_ascii_lowercase(),
                    ip4_addr: body.ip4_addr.clone(),
                    ip6_addr: body.ip6_addr.clone(),
                    nic_gate: body.nic_gate.clone(),
                    nic_mask: body.nic_mask.clone(),
                    dns_addr: body.dns_addr.clone(),
                };
                if nic.ip4_addr.is_empty() {
                    let (address, gate, mask, dns) = next_free(&host_for_pick, &nic_type, &used)?;
                    nic.ip4_addr = address;
                    if nic.nic_gate.is_empty() {
                        nic.nic_gate = gate;
                    }
                    if nic.nic_mask.is_empty() {
                        nic.nic_mask = mask;
                    }
                    if nic.dns_addr.is_empty() {
                        nic.dns_addr = dns;
                    }
                } else if used.contains(&nic.ip4_addr) {
                    return Err(StoreError::Conflict(format!(
                        "address {} is already used on host {:?}",
                        nic.ip4_addr, record.host
                    )));
                }
                let nics = config
                    .entry("nic_all")
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .ok_or_else(|| {
                        StoreError::Invalid("stored nic_all is not an object".to_owned())
                    })?;
                let name = (0..)
                    .map(|number| format!("nic{number}"))
                    .find(|candidate| !nics.contains_key(candidate))
                    .unwrap_or_else(|| "nic".to_owned());
                nics.insert(name.clone(), serde_json::to_value(&nic)?);
                Ok((name, nic))
            })?;
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let wit_nic = nic.to_wit(&name);
    let applied = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "ip-apply",
            move |engine, store| {
                Box::pin(async move {
                    engine
                        .call_ip_apply(store, &config, &vm_uuid, &wit_nic)
                        .await
                })
            },
        )
        .await;
    let remove_nic = |config: &mut Map<String, Value>, _: &[Map<String, Value>]| {
        if let Some(nics) = config.get_mut("nic_all").and_then(Value::as_object_mut) {
            nics.remove(&name);
        }
        Ok(())
    };
    match applied {
        Ok(applied) => {
            let mut stored = nic.clone();
            stored.mac_addr = applied.mac_addr;
            let stored_value = serde_json::to_value(&stored)
                .map_err(|error| ApiError::Internal(error.to_string()))?;
            state
                .store
                .vm_change_config(&record.host, &record.vm_uuid, |config, _| {
                    if let Some(nics) = config.get_mut("nic_all").and_then(Value::as_object_mut) {
                        nics.insert(name.clone(), stored_value);
                    }
                    Ok(())
                })?;
            let record = state.store.vm_get(&record.host, &record.vm_uuid)?;
            let settings = settings_of(&record)?;
            let index = ordered_nics(&settings)
                .iter()
                .position(|(nic_name, _)| **nic_name == name)
                .unwrap_or(0);
            Ok(nic_json(index, &name, &stored))
        }
        Err(error) => {
            state
                .store
                .vm_change_config(&record.host, &record.vm_uuid, remove_nic)?;
            Err(error.into())
        }
    }
}

/// Remove the NIC at `index`, or named `index` (`nic1`).
pub async fn ipdel(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    index: String,
) -> Result<Value, ApiError> {
    let settings = settings_of(&record)?;
    let nics = ordered_nics(&settings);
    let found = match index.parse::<usize>() {
        Ok(position) => nics.get(position).copied(),
        Err(_) => nics.iter().copied().find(|(name, _)| **name == index),
    };
    let (name, nic) = found.ok_or_else(|| {
        ApiError::NotFound(format!("vm {:?} has no NIC {index:?}", record.vm_uuid))
    })?;
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let wit_nic = nic.to_wit(name);
    state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "ip-remove",
            move |engine, store| {
                Box::pin(async move {
                    engine
                        .call_ip_remove(store, &config, &vm_uuid, &wit_nic)
                        .await
                })
            },
        )
        .await?;
    let name = name.clone();
    state
        .store
        .vm_change_config(&record.host, &record.vm_uuid, |config, _| {
            if let Some(nics) = config.get_mut("nic_all").and_then(Value::as_object_mut) {
                nics.remove(&name);
            }
            Ok(())
        })?;
    Ok(Value::Null)
}

// ---------------------------------------------------------------- proxies

/// `pxyadd` body, with the original server's aliases.
#[derive(Deserialize)]
pub struct ProxyAddBody {
    #[serde(default, alias = "web_addr")]
    pub domain: String,
    #[serde(default, alias = "lan_port")]
    pub backend_port: Option<u32>,
    #[serde(default, alias = "lan_addr")]
    pub backend_ip: String,
    #[serde(default, alias = "is_https")]
    pub ssl_enabled: bool,
    #[serde(default)]
    pub ssl_cert: String,
    #[serde(default)]
    pub ssl_key: String,
    #[serde(default, alias = "web_tips")]
    pub description: String,
}

fn proxy_json(index: usize, entry: &ProxyRecord) -> Value {
    json!({
        "index": index,
        "domain": entry.domain,
        "backend_ip": entry.backend_ip,
        "backend_port": entry.backend_port,
        "ssl_enabled": entry.ssl_enabled,
        "description": entry.description,
    })
}

pub fn pxyget(state: &AppState, record: &VmRecord) -> Result<Value, ApiError> {
    let entries = state
        .store
        .proxy_list(&record.host, Some(&record.vm_uuid))?;
    Ok(Value::Array(
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| proxy_json(index, entry))
            .collect(),
    ))
}

/// RFC 1123 host name, optional leading `*.`, punycode labels accepted.
pub fn check_domain(domain: &str) -> Result<(), ApiError> {
    let bad = |rule: &str| Err(ApiError::bad_field("domain", format!("{domain:?} {rule}")));
    if domain.is_empty() || domain.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    let name = domain.strip_prefix("*.").unwrap_or(domain);
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return bad("must have at least two labels");
    }
    for label in labels {
        let valid = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return bad(
                "is not a valid host name (RFC 1123 labels of letters, digits and inner hyphens)",
            );
        }
    }
    Ok(())
}

/// A validated `pxyadd`: the row to insert (TLS material included).
pub struct ProxyRequest {
    entry: ProxyRecord,
}

pub fn check_proxy(
    host: &Host,
    record: &VmRecord,
    body: ProxyAddBody,
) -> Result<ProxyRequest, ApiError> {
    let domain = body.domain.trim_end_matches('.').to_ascii_lowercase();
    check_domain(&domain)?;
    let backend_port = body.backend_port.unwrap_or(80);
    if !(1..=65535).contains(&backend_port) {
        return Err(ApiError::bad_field(
            "backend_port",
            format!("must be 1..=65535, got {backend_port}"),
        ));
    }
    if !body.backend_ip.is_empty() {
        let address: IpAddr = body.backend_ip.parse().map_err(|_| {
            ApiError::bad_field(
                "backend_ip",
                format!("{:?} is not an IP address", body.backend_ip),
            )
        })?;
        let scope = host.scope();
        if !scope.in_vm_networks(address) {
            return Err(ApiError::bad_field(
                "backend_ip",
                format!("{address} is not inside the host's VM networks"),
            ));
        }
    }
    check_plain_text("description", &body.description, 200)?;
    if body.ssl_enabled && (body.ssl_cert.is_empty() || body.ssl_key.is_empty()) {
        return Err(ApiError::bad_field(
            "ssl_cert",
            "ssl_enabled needs ssl_cert and ssl_key (PEM)",
        ));
    }
    let (ssl_cert, ssl_key) = if body.ssl_enabled {
        (body.ssl_cert, body.ssl_key)
    } else {
        (String::new(), String::new())
    };
    Ok(ProxyRequest {
        entry: ProxyRecord {
            id: 0,
            host: record.host.clone(),
            vm_uuid: record.vm_uuid.clone(),
            domain,
            backend_ip: body.backend_ip,
            backend_port: backend_port as u16,
            ssl_enabled: body.ssl_enabled,
            description: body.description,
            ssl_cert,
            ssl_key,
        },
    })
}

fn site_of(entry: &ProxyRecord) -> ProxySite {
    ProxySite {
        id: entry.id as u64,
        domain: entry.domain.clone(),
        backend_addr: entry.backend_ip.clone(),
        backend_port: entry.backend_port,
        tls: entry.ssl_enabled.then(|| TlsPair {
            cert_pem: entry.ssl_cert.clone(),
            key_pem: entry.ssl_key.clone(),
        }),
    }
}

pub async fn pxyadd(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    request: ProxyRequest,
) -> Result<Value, ApiError> {
    let settings = settings_of(&record)?;
    let entry = state.store.proxy_insert(&request.entry, settings.web_num)?;
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let site = site_of(&entry);
    let applied = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "proxy-apply",
            move |engine, store| {
                Box::pin(async move {
                    engine
                        .call_proxy_apply(store, &config, &vm_uuid, &site)
                        .await
                })
            },
        )
        .await;
    match applied {
        Ok(site) => {
            state
                .store
                .proxy_set_backend(entry.id, &site.backend_addr)?;
            let entries = state
                .store
                .proxy_list(&record.host, Some(&record.vm_uuid))?;
            let index = entries
                .iter()
                .position(|stored| stored.id == entry.id)
                .unwrap_or(0);
            let stored = ProxyRecord {
                backend_ip: site.backend_addr,
                ..entry
            };
            Ok(proxy_json(index, &stored))
        }
        Err(error) => {
            state.store.proxy_delete(entry.id)?;
            Err(error.into())
        }
    }
}

pub async fn pxydel(
    state: Arc<AppState>,
    host: Host,
    record: VmRecord,
    index: usize,
) -> Result<Value, ApiError> {
    let entries = state
        .store
        .proxy_list(&record.host, Some(&record.vm_uuid))?;
    let entry = entries
        .get(index)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "vm {:?} has no proxy at index {index}",
                record.vm_uuid
            ))
        })?
        .clone();
    let config = host.engine_config();
    let vm_uuid = record.vm_uuid.clone();
    let site = site_of(&entry);
    state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "proxy-remove",
            move |engine, store| {
                Box::pin(async move {
                    engine
                        .call_proxy_remove(store, &config, &vm_uuid, &site)
                        .await
                })
            },
        )
        .await?;
    state.store.proxy_delete(entry.id)?;
    Ok(Value::Null)
}

// ---------------------------------------------------------------- upload

/// A status sample as a VM reports it (`upload`) and as the poller writes it.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Sample {
    pub ac_status: String,
    pub cpu_total: f64,
    pub cpu_usage: f64,
    pub mem_total: f64,
    pub mem_usage: f64,
    pub hdd_total: f64,
    pub hdd_usage: f64,
    pub flu_usage: f64,
    pub network_u: f64,
    pub network_d: f64,
    pub on_update: Option<Value>,
}

/// Largest value a sample field may carry (1e12 MB of traffic is far past
/// any real quota).
const MAX_SAMPLE_VALUE: f64 = 1e12;

/// Store an uploaded sample for the VM that owns `key` and the NIC `mac`.
/// A wrong key is 401 whether or not the MAC exists; a right key with a MAC
/// that is not the VM's is 404.
pub fn upload(state: &AppState, key: &str, mac: &str, body: Value) -> Result<Value, ApiError> {
    let record = state
        .store
        .vm_by_upload_key(key)?
        .ok_or_else(|| ApiError::Unauthorized("invalid upload key".to_owned()))?;
    let settings = settings_of(&record)?;
    let mac = mac.to_ascii_lowercase();
    if !settings
        .nic_all
        .values()
        .any(|nic| nic.mac_addr.to_ascii_lowercase() == mac)
    {
        return Err(ApiError::NotFound(format!("no NIC with MAC {mac:?}")));
    }
    let sample: Sample = decode("", body)?;
    for (field, value) in [
        ("cpu_usage", sample.cpu_usage),
        ("mem_usage", sample.mem_usage),
        ("hdd_usage", sample.hdd_usage),
        ("flu_usage", sample.flu_usage),
        ("network_u", sample.network_u),
        ("network_d", sample.network_d),
    ] {
        // Bounded so the accumulated traffic can never overflow to infinity.
        if !value.is_finite() || !(0.0..=MAX_SAMPLE_VALUE).contains(&value) {
            return Err(ApiError::bad_field(
                field,
                format!("must be a number from 0 to {MAX_SAMPLE_VALUE:e}"),
            ));
        }
    }
    let value =
        serde_json::to_value(&sample).map_err(|error| ApiError::Internal(error.to_string()))?;
    state
        .store
        .sample_insert(&record.host, &record.vm_uuid, "upload", &value)?;
    state
        .store
        .vm_add_traffic(&record.host, &record.vm_uuid, sample.flu_usage)?;
    Ok(json!({ "hs_name": record.host, "vm_uuid": record.vm_uuid }))
}
