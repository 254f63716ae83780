//! A VM's network: NAT port forwards, NICs and addresses, reverse-proxy
//! entries. The database is written first (it arbitrates ports, addresses
//! and domains), then the engine applies; an engine failure undoes the row.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::error::{ServiceError, ServiceResult};
use super::hosts::Host;
use super::vms::VmRef;
use crate::model::IpPool;
use crate::model::rules::{self, Invalid};
use crate::model::{
    IpAddInput, NatAddInput, NatReconciled, NatRule, NicSettings, NicView, ProxyAddInput,
    ProxyReconciled, ProxyView, Reconciled, Sample, UploadAnswer, VmSettings,
};
use crate::plugin::bindings::{PortForward, ProxySite};
use crate::state::AppState;
use crate::store::{LogLevel, NatRuleRecord, NewLog, ProxyRecord, StoreError};

// ---------------------------------------------------------------- NAT

fn nat_view(index: usize, rule: &NatRuleRecord) -> NatRule {
    NatRule {
        index: index as u64,
        protocol: rule.protocol.clone(),
        wan_port: rule.wan_port,
        lan_port: rule.lan_port,
        lan_addr: rule.lan_addr.clone(),
        nat_tips: rule.nat_tips.clone(),
        external_port: rule.wan_port,
        internal_port: rule.lan_port,
    }
}

pub fn natget(state: &AppState, vm: &VmRef) -> ServiceResult<Vec<NatRule>> {
    let rules = state.store.nat_list(&vm.host.name, Some(vm.key()))?;
    Ok(rules
        .iter()
        .enumerate()
        .map(|(index, rule)| nat_view(index, rule))
        .collect())
}

/// Validated `natadd` input.
pub struct NatRequest {
    protocol: &'static str,
    wan_port: u16,
    lan_port: u16,
    lan_addr: String,
    nat_tips: String,
}

/// A NAT or proxy target must be one of the VM's own addresses: inside the
/// host's VM networks, not a network's own, broadcast or gateway address,
/// and assigned to one of this VM's NICs. Otherwise a caller could forward a
/// public port to the hypervisor itself (the gateway), to another
/// customer's VM, or to an address nobody holds yet.
fn check_vm_target(vm: &VmRef, field: &str, text: &str) -> Result<(), Invalid> {
    let address = rules::parse_address(field, text)?;
    let refuse = |rule: String| Err(Invalid::new(field, format!("{address} {rule}")));
    if !vm.host.scope().in_vm_networks(address) {
        return refuse("is not inside the host's VM networks".to_owned());
    }
    for pool in vm.host.config.ipaddr_maps.values() {
        let Ok(network) = pool.network() else {
            continue;
        };
        if !network.contains(&address) {
            continue;
        }
        if address == network.network() || address == network.broadcast() {
            return refuse(format!("is the own or broadcast address of {network}"));
        }
        if pool.gate.parse::<std::net::IpAddr>().ok() == Some(address) {
            return refuse(format!("is the gateway of {network} (the host itself)"));
        }
    }
    let assigned: Vec<&str> = vm
        .record
        .config
        .nic_all
        .values()
        .flat_map(|nic| [nic.ip4_addr.as_str(), nic.ip6_addr.as_str()])
        .filter(|assigned| !assigned.is_empty())
        .collect();
    let own = assigned
        .iter()
        .any(|assigned| assigned.parse::<std::net::IpAddr>().ok() == Some(address));
    if !own {
        return refuse(format!(
            "is not an address of vm {:?} (its NICs hold {assigned:?})",
            vm.key()
        ));
    }
    Ok(())
}

/// A port of 1..=65535, or the rule it breaks.
fn check_port(field: &str, port: u32) -> Result<u16, Invalid> {
    u16::try_from(port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| Invalid::new(field, format!("must be 1..=65535, got {port}")))
}

/// `tcp` (also the default) or `udp`, any case.
pub fn nat_protocol(text: &str) -> Result<&'static str, Invalid> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok("tcp"),
        "udp" => Ok("udp"),
        other => Err(Invalid::new(
            "protocol",
            format!("{other:?} must be tcp or udp"),
        )),
    }
}

pub fn check_nat(vm: &VmRef, body: NatAddInput) -> ServiceResult<NatRequest> {
    let host = &vm.host;
    let protocol = nat_protocol(&body.protocol)?;
    let ports = host.config.port_range();
    let wan_port = body.wan_port.unwrap_or(0);
    if wan_port != 0 && !u16::try_from(wan_port).is_ok_and(|port| ports.contains(&port)) {
        return Err(Invalid::new(
            "wan_port",
            format!(
                "{wan_port} is outside the host's port range {}..{}",
                ports.start(),
                ports.end()
            ),
        )
        .into());
    }
    if ports.is_empty() {
        return Err(Invalid::new(
            "wan_port",
            format!(
                "host {:?} has no public port range (ports_start/ports_close)",
                host.name
            ),
        )
        .into());
    }
    let lan_port = check_port("lan_port", body.lan_port.unwrap_or(0))?;
    if !body.lan_addr.is_empty() {
        check_vm_target(vm, "lan_addr", &body.lan_addr)?;
    }
    rules::check_plain_text("nat_tips", &body.nat_tips, 200)?;
    Ok(NatRequest {
        protocol,
        wan_port: wan_port as u16,
        lan_port,
        lan_addr: body.lan_addr,
        nat_tips: body.nat_tips,
    })
}

/// The position of row `id` in a VM's list (the API's index).
fn position_of<T>(rows: &[T], id: impl Fn(&T) -> bool) -> usize {
    rows.iter().position(id).unwrap_or(rows.len())
}

pub async fn natadd(
    state: Arc<AppState>,
    vm: VmRef,
    request: NatRequest,
) -> ServiceResult<NatRule> {
    let rule = state.store.nat_insert(
        &vm.host.name,
        vm.key(),
        request.protocol,
        request.wan_port,
        vm.host.config.port_range(),
        request.lan_port,
        &request.lan_addr,
        &request.nat_tips,
        vm.record.config.nat_num,
    )?;
    let applied = state
        .plugins
        .nat_apply(&vm.host.target(), vm.key(), &PortForward::from(&rule))
        .await;
    match applied {
        Ok(forward) => {
            state.store.nat_set_addr(rule.id, &forward.target_addr)?;
            let rules = state.store.nat_list(&vm.host.name, Some(vm.key()))?;
            let index = position_of(&rules, |stored| stored.id == rule.id);
            Ok(nat_view(index, &state.store.nat_get(rule.id)?))
        }
        Err(error) => {
            state.store.nat_delete(rule.id)?;
            Err(error.into())
        }
    }
}

/// Remove the rule at `index` (0-based, insertion order).
pub async fn natdel(state: Arc<AppState>, vm: VmRef, index: usize) -> ServiceResult<()> {
    let rules = state.store.nat_list(&vm.host.name, Some(vm.key()))?;
    let rule = rules.get(index).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "vm {:?} has no NAT rule at index {index}",
            vm.key()
        ))
    })?;
    state
        .plugins
        .nat_remove(&vm.host.target(), vm.key(), &PortForward::from(rule))
        .await?;
    Ok(state.store.nat_delete(rule.id)?)
}

/// At start-up, remove the rows a killed `natadd` or `pxyadd` left behind:
/// the row is written first (it arbitrates the port or domain) and gets
/// its target when the engine answers, so a row without a target was cut
/// in between and would hold its port or domain for ever. No call is in
/// flight at start-up, so every such row is half-done. Each repair is a
/// log record.
pub fn repair_half_done(state: &AppState) {
    let hosts = match state.store.host_list() {
        Ok(hosts) => hosts,
        Err(error) => {
            tracing::error!("start-up repair cannot list hosts: {error}");
            return;
        }
    };
    let mut repairs = Vec::new();
    for host in &hosts {
        for rule in state.store.nat_list(&host.name, None).unwrap_or_default() {
            if rule.lan_addr.is_empty() && state.store.nat_delete(rule.id).is_ok() {
                repairs.push((
                    host,
                    rule.vm_uuid,
                    format!(
                        "NAT rule of public port {} ({})",
                        rule.wan_port, rule.protocol
                    ),
                ));
            }
        }
        for entry in state.store.proxy_list(&host.name, None).unwrap_or_default() {
            if entry.backend_ip.is_empty() && state.store.proxy_delete(entry.id).is_ok() {
                repairs.push((host, entry.vm_uuid, format!("proxy site {}", entry.domain)));
            }
        }
    }
    for (host, vm_uuid, what) in repairs {
        let record = NewLog::new(
            LogLevel::Warn,
            "startup-repair",
            format!(
                "removed the half-done {what} of vm {vm_uuid:?}: the server stopped before \
                 the engine answered its creation"
            ),
        )
        .host(&host.name)
        .vm(vm_uuid);
        if let Err(error) = state.store.log_insert(&record) {
            tracing::error!("cannot store a log record: {error}");
        }
    }
}

/// Rebuild the NAT table and the proxy files from the database (at start and
/// on `loader`). Failures are logged, never fatal: the API keeps serving.
/// Answers what was done, for `loader`'s answer.
pub async fn reconcile(state: &AppState) -> Reconciled {
    let mut forwards = Vec::new();
    let mut limits = Vec::new();
    let mut sites = Vec::new();
    let mut problems = Vec::new();
    match state.store.host_list() {
        Ok(hosts) => {
            for host in hosts {
                let scope = host.scope();
                match state.store.nat_list(&host.name, None) {
                    Ok(rules) => forwards.extend(
                        rules
                            .iter()
                            .map(|rule| (scope.clone(), PortForward::from(rule))),
                    ),
                    Err(error) => {
                        problems.push(format!("NAT rules of host {}: {error}", host.name))
                    }
                }
                match state.store.rate_limit_list(&host.name) {
                    Ok(records) => {
                        limits.extend(records.into_iter().map(|record| (scope.clone(), record)))
                    }
                    Err(error) => {
                        problems.push(format!("rate limits of host {}: {error}", host.name))
                    }
                }
                match state.store.proxy_list(&host.name, None) {
                    Ok(entries) => sites.extend(
                        entries
                            .iter()
                            .map(|entry| (scope.clone(), ProxySite::from(entry))),
                    ),
                    Err(error) => problems.push(format!("proxies of host {}: {error}", host.name)),
                }
            }
        }
        Err(error) => problems.push(format!("hosts: {error}")),
    }
    let nat = match state.capabilities.nat.reconcile(forwards, limits).await {
        Ok(report) => {
            let message = format!(
                "NAT reconciled: {} added, {} removed, {} skipped{}; {} rate limits{}",
                report.added,
                report.removed,
                report.skipped.len(),
                describe_skipped(&report.skipped),
                report.limits,
                describe_skipped(&report.skipped_limits)
            );
            let skipped = !report.skipped.is_empty() || !report.skipped_limits.is_empty();
            log_reconcile(state, skipped, &message);
            NatReconciled::Done {
                added: report.added as u64,
                removed: report.removed as u64,
                skipped: report.skipped.len() as u64,
            }
        }
        Err(error) => {
            // Off is said once at start (`endpoints_off`), not as a failure.
            if state.capabilities.nat.is_configured() {
                log_reconcile(state, true, &format!("NAT reconcile failed: {error}"));
            }
            NatReconciled::Failed {
                error: error.to_string(),
            }
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
            ProxyReconciled::Done {
                written: report.written as u64,
                removed: report.removed as u64,
                skipped: report.skipped.len() as u64,
            }
        }
        Err(error) => {
            if state.capabilities.proxy.is_configured() {
                log_reconcile(state, true, &format!("proxy reconcile failed: {error}"));
            }
            ProxyReconciled::Failed {
                error: error.to_string(),
            }
        }
    };
    for problem in &problems {
        log_reconcile(state, true, &format!("reconcile could not read {problem}"));
    }
    Reconciled { nat, proxy }
}

/// `; <what>: <reason>` for each skipped forward (by id) or rate limit (by VM).
fn describe_skipped(skipped: &[(impl std::fmt::Display, String)]) -> String {
    skipped
        .iter()
        .map(|(what, reason)| format!("; {what}: {reason}"))
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
pub async fn remove_all(state: &AppState, vm: &VmRef) -> ServiceResult<()> {
    let target = vm.host.target();
    for rule in state.store.nat_list(&vm.host.name, Some(vm.key()))? {
        state
            .plugins
            .nat_remove(&target, vm.key(), &PortForward::from(&rule))
            .await?;
    }
    for entry in state.store.proxy_list(&vm.host.name, Some(vm.key()))? {
        state
            .plugins
            .proxy_remove(&target, vm.key(), &ProxySite::from(&entry))
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- IPs

/// NICs in their order: by number of their `nicN` name, others after.
pub fn ordered_nics(settings: &VmSettings) -> Vec<(&String, &NicSettings)> {
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

fn nic_views(settings: &VmSettings) -> Vec<NicView> {
    ordered_nics(settings)
        .into_iter()
        .enumerate()
        .map(|(index, (name, nic))| NicView::new(index, name, nic))
        .collect()
}

pub fn iplist(vm: &VmRef) -> Vec<NicView> {
    nic_views(&vm.record.config)
}

/// IPv4 addresses used by the NICs of `configs`.
fn used_addresses<'a>(configs: impl Iterator<Item = &'a VmSettings>) -> HashSet<String> {
    configs
        .flat_map(|config| config.nic_all.values())
        .flat_map(|nic| [nic.ip4_addr.clone(), nic.ip6_addr.clone()])
        .filter(|address| !address.is_empty())
        .collect()
}

/// Give each NIC without an address one from the host's pools of its kind,
/// as the original did: IPv4 when the host has an IPv4 pool of that kind,
/// IPv6 likewise. A NIC whose kind has no pool keeps its empty address; a
/// pool with no free address is a conflict. `others` are the host's other
/// VMs.
pub fn allocate_addresses(
    host: &Host,
    config: &mut VmSettings,
    others: &[VmSettings],
) -> Result<(), StoreError> {
    let mut used = used_addresses(others.iter());
    used.extend(used_addresses(std::iter::once(&*config)));
    for nic in config.nic_all.values_mut() {
        for version in [IpVersion::V4, IpVersion::V6] {
            if version.address_of(nic).is_empty() && version.has_pool(host, &nic.nic_type) {
                allocate(host, nic, version, &used)?;
                used.insert(version.address_of(nic).to_owned());
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    fn address_of(self, nic: &NicSettings) -> &str {
        match self {
            IpVersion::V4 => &nic.ip4_addr,
            IpVersion::V6 => &nic.ip6_addr,
        }
    }

    fn pools<'a>(self, host: &'a Host, kind: &'a str) -> impl Iterator<Item = &'a IpPool> {
        host.config
            .ipaddr_maps
            .values()
            .filter(move |pool| pool.kind == kind && pool.is_v6() == (self == IpVersion::V6))
    }

    fn has_pool(self, host: &Host, kind: &str) -> bool {
        self.pools(host, kind).next().is_some()
    }
}

/// The first free address of the host's pools of the NIC's kind and
/// `version`; for IPv4 also the pool's gateway, mask and DNS where `nic` has
/// none.
fn allocate(
    host: &Host,
    nic: &mut NicSettings,
    version: IpVersion,
    used: &HashSet<String>,
) -> Result<(), StoreError> {
    for pool in version.pools(host, &nic.nic_type) {
        let Ok(first) = pool.from.parse::<IpAddr>() else {
            continue;
        };
        let free = (0..pool.nums)
            .filter_map(|offset| match first {
                IpAddr::V4(first) => u32::from(first)
                    .checked_add(offset)
                    .map(|address| Ipv4Addr::from(address).to_string()),
                IpAddr::V6(first) => u128::from(first)
                    .checked_add(u128::from(offset))
                    .map(|address| std::net::Ipv6Addr::from(address).to_string()),
            })
            .find(|candidate| !used.contains(candidate) && *candidate != pool.gate);
        if let Some(address) = free {
            match version {
                IpVersion::V4 => nic.ip4_addr = address,
                IpVersion::V6 => nic.ip6_addr = address,
            }
            // The NIC's gateway, mask and DNS are its IPv4 settings.
            if version == IpVersion::V6 {
                return Ok(());
            }
            if nic.nic_gate.is_empty() {
                nic.nic_gate = pool.gate.clone();
            }
            if nic.nic_mask.is_empty() {
                nic.nic_mask = pool.mask.clone();
            }
            if nic.dns_addr.is_empty() {
                nic.dns_addr = pool.dnss.clone();
            }
            return Ok(());
        }
    }
    Err(StoreError::Conflict(format!(
        "the {} {} pools of host {:?} are exhausted",
        nic.nic_type,
        if version == IpVersion::V4 {
            "IPv4"
        } else {
            "IPv6"
        },
        host.name
    )))
}

pub async fn ipadd(state: Arc<AppState>, vm: VmRef, body: IpAddInput) -> ServiceResult<NicView> {
    let mut nic = body.into_nic();
    nic.check()?;
    super::vms::make_unicast(
        &state,
        (&vm.host.name, vm.key()),
        "ipadd",
        "mac_addr",
        &mut nic.mac_addr,
    );
    let (host, key) = (&vm.host, vm.key());
    let name = state
        .store
        .vm_change_config(&host.name, key, |config, others| {
            let mut used = used_addresses(others.iter());
            used.extend(used_addresses(std::iter::once(&*config)));
            let kind = nic.nic_type.clone();
            // Without any pool of its kind, an address is needed: the
            // allocation answers that the pools are exhausted.
            let (has_v4, has_v6) = (
                IpVersion::V4.has_pool(host, &kind),
                IpVersion::V6.has_pool(host, &kind),
            );
            if nic.ip6_addr.is_empty() && has_v6 {
                allocate(host, &mut nic, IpVersion::V6, &used)?;
            }
            if nic.ip4_addr.is_empty() {
                if has_v4 || !has_v6 {
                    allocate(host, &mut nic, IpVersion::V4, &used)?;
                }
            } else if used.contains(&nic.ip4_addr) {
                return Err(StoreError::Conflict(format!(
                    "address {} is already used on host {:?}",
                    nic.ip4_addr, host.name
                )));
            }
            let name = (0..)
                .map(|number| format!("nic{number}"))
                .find(|candidate| !config.nic_all.contains_key(candidate))
                .unwrap_or_else(|| "nic".to_owned());
            config.nic_all.insert(name.clone(), nic.clone());
            Ok(name)
        })?;
    let applied = state
        .plugins
        .ip_apply(&host.target(), key, &super::convert::nic_of(&name, &nic))
        .await;
    match applied {
        Ok(applied) => {
            nic.mac_addr = applied.mac_addr;
            state.store.vm_change_config(&host.name, key, |config, _| {
                config.nic_all.insert(name.clone(), nic.clone());
                Ok(())
            })?;
            let record = state.store.vm_get(&host.name, key)?;
            let views = nic_views(&record.config);
            let position = position_of(&views, |view| view.nic_name == name);
            views
                .into_iter()
                .nth(position)
                .ok_or_else(|| ServiceError::Internal(format!("NIC {name} vanished")))
        }
        Err(error) => {
            state.store.vm_change_config(&host.name, key, |config, _| {
                config.nic_all.remove(&name);
                Ok(())
            })?;
            Err(error.into())
        }
    }
}

/// Remove the NIC at `index`, or named `index` (`nic1`).
pub async fn ipdel(state: Arc<AppState>, vm: VmRef, index: String) -> ServiceResult<()> {
    let nics = ordered_nics(&vm.record.config);
    let found = match index.parse::<usize>() {
        Ok(position) => nics.get(position).copied(),
        Err(_) => nics.iter().copied().find(|(name, _)| **name == index),
    };
    let (name, nic) = found
        .ok_or_else(|| ServiceError::NotFound(format!("vm {:?} has no NIC {index:?}", vm.key())))?;
    state
        .plugins
        .ip_remove(
            &vm.host.target(),
            vm.key(),
            &super::convert::nic_of(name, nic),
        )
        .await?;
    state
        .store
        .vm_change_config(&vm.host.name, vm.key(), |config, _| {
            config.nic_all.remove(name);
            Ok(())
        })?;
    Ok(())
}

// ---------------------------------------------------------------- proxies

fn proxy_view(index: usize, entry: &ProxyRecord) -> ProxyView {
    ProxyView {
        index: index as u64,
        domain: entry.domain.clone(),
        backend_ip: entry.backend_ip.clone(),
        backend_port: entry.backend_port,
        ssl_enabled: entry.ssl_enabled,
        description: entry.description.clone(),
    }
}

pub fn pxyget(state: &AppState, vm: &VmRef) -> ServiceResult<Vec<ProxyView>> {
    let entries = state.store.proxy_list(&vm.host.name, Some(vm.key()))?;
    Ok(entries
        .iter()
        .enumerate()
        .map(|(index, entry)| proxy_view(index, entry))
        .collect())
}

/// A validated `pxyadd`: the row to insert (TLS material included).
pub struct ProxyRequest {
    entry: ProxyRecord,
}

pub fn check_proxy(vm: &VmRef, body: ProxyAddInput) -> ServiceResult<ProxyRequest> {
    let domain = body.domain.trim_end_matches('.').to_ascii_lowercase();
    rules::check_domain("domain", &domain)?;
    let backend_port = check_port("backend_port", body.backend_port.unwrap_or(80))?;
    if !body.backend_ip.is_empty() {
        check_vm_target(vm, "backend_ip", &body.backend_ip)?;
    }
    rules::check_plain_text("description", &body.description, 200)?;
    if body.ssl_enabled && (body.ssl_cert.is_empty() || body.ssl_key.is_empty()) {
        return Err(
            Invalid::new("ssl_cert", "ssl_enabled needs ssl_cert and ssl_key (PEM)").into(),
        );
    }
    let (ssl_cert, ssl_key) = if body.ssl_enabled {
        (body.ssl_cert, body.ssl_key)
    } else {
        (String::new(), String::new())
    };
    Ok(ProxyRequest {
        entry: ProxyRecord {
            id: 0,
            host: vm.host.name.clone(),
            vm_uuid: vm.key().to_owned(),
            domain,
            backend_ip: body.backend_ip,
            backend_port,
            ssl_enabled: body.ssl_enabled,
            description: body.description,
            ssl_cert,
            ssl_key,
        },
    })
}

pub async fn pxyadd(
    state: Arc<AppState>,
    vm: VmRef,
    request: ProxyRequest,
) -> ServiceResult<ProxyView> {
    let entry = state
        .store
        .proxy_insert(&request.entry, vm.record.config.web_num)?;
    let applied = state
        .plugins
        .proxy_apply(&vm.host.target(), vm.key(), &ProxySite::from(&entry))
        .await;
    match applied {
        Ok(site) => {
            state
                .store
                .proxy_set_backend(entry.id, &site.backend_addr)?;
            let entries = state.store.proxy_list(&vm.host.name, Some(vm.key()))?;
            let index = position_of(&entries, |stored| stored.id == entry.id);
            let stored = ProxyRecord {
                backend_ip: site.backend_addr,
                ..entry
            };
            Ok(proxy_view(index, &stored))
        }
        Err(error) => {
            state.store.proxy_delete(entry.id)?;
            Err(error.into())
        }
    }
}

pub async fn pxydel(state: Arc<AppState>, vm: VmRef, index: usize) -> ServiceResult<()> {
    let entries = state.store.proxy_list(&vm.host.name, Some(vm.key()))?;
    let entry = entries.get(index).ok_or_else(|| {
        ServiceError::NotFound(format!("vm {:?} has no proxy at index {index}", vm.key()))
    })?;
    state
        .plugins
        .proxy_remove(&vm.host.target(), vm.key(), &ProxySite::from(entry))
        .await?;
    Ok(state.store.proxy_delete(entry.id)?)
}

// ---------------------------------------------------------------- upload

/// Store an uploaded sample for the VM that owns `key` and the NIC `mac`.
/// A wrong key is 401 whether or not the MAC exists; a right key with a MAC
/// that is not the VM's is 404.
pub fn upload(
    state: &Arc<AppState>,
    key: &str,
    mac: &str,
    sample: Sample,
) -> ServiceResult<UploadAnswer> {
    if key.is_empty() {
        return Err(ServiceError::Unauthorized(
            "missing X-Upload-Key header (or key query)".to_owned(),
        ));
    }
    let record = state
        .store
        .vm_by_upload_key(key)?
        .ok_or_else(|| ServiceError::Unauthorized("invalid upload key".to_owned()))?;
    let mac = mac.to_ascii_lowercase();
    if !record
        .config
        .nic_all
        .values()
        .any(|nic| nic.mac_addr.to_ascii_lowercase() == mac)
    {
        return Err(ServiceError::NotFound(format!("no NIC with MAC {mac:?}")));
    }
    sample.check()?;
    super::vms::record_sample(state, &record.host, &record.vm_uuid, "upload", &sample)?;
    // The traffic the guest reports counts towards its quota like the
    // poller's.
    let host = super::hosts::get(state, &record.host)?;
    super::traffic::account(state, &host, &record, sample.flu_usage)?;
    Ok(UploadAnswer {
        hs_name: record.host,
        vm_uuid: record.vm_uuid,
    })
}
