//! The billing panels' routes by VM name (`/api/status?hostname=`, …): the
//! VM is found by its key on the enabled hosts the caller reaches, and the
//! answers take the shapes the panels' modules read.

use super::error::{ServiceError, ServiceResult};
use super::hosts::{self, Host};
use super::network::{self, nat_protocol, ordered_nics};
use super::vms::{self, VmRef};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::panel::{
    Availability, InfoConfig, NamedStatus, PlanInput, PortsAnswer, TrafficAnswer, VmInfoAnswer,
    human_size,
};
use crate::model::{Invalid, NicView, Patch, VmSettings, rules};
use crate::state::AppState;
use crate::store::format_ms;

const MB: f64 = 1024.0 * 1024.0;

/// The VM with key `name` on the enabled hosts in `reach` (empty: every
/// host). A key on two such hosts is ambiguous: 409, naming them.
pub fn vm_named(state: &AppState, name: &str, reach: &[String]) -> ServiceResult<VmRef> {
    rules::check_name("hostname", name)?;
    let mut found = Vec::new();
    for host in state.store.vm_hosts_of(name)? {
        if !reach.is_empty() && !reach.contains(&host) {
            continue;
        }
        let host = hosts::get(state, &host)?;
        if host.enabled {
            found.push(host);
        }
    }
    match found.len() {
        0 => Err(ServiceError::NotFound(format!(
            "hostname: no VM {name:?} on an enabled host"
        ))),
        1 => {
            let host = found.remove(0);
            let record = state.store.vm_get(&host.name, name)?;
            Ok(VmRef { host, record })
        }
        _ => Err(ServiceError::Conflict(format!(
            "hostname: VM {name:?} is on hosts {}; use /api/client/<option>/<hs_name>/{name}",
            found
                .iter()
                .map(|host| host.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub async fn status(state: &AppState, vm: &VmRef) -> ServiceResult<NamedStatus> {
    let (power, _) = vms::power_of(state, vm).await?;
    Ok(NamedStatus {
        hostname: vm.key().to_owned(),
        status: power.panel_word().to_owned(),
    })
}

pub async fn info(state: &AppState, vm: &VmRef) -> ServiceResult<VmInfoAnswer> {
    let (power, _) = vms::power_of(state, vm).await?;
    let settings = &vm.record.config;
    let sample = state
        .store
        .sample_latest_by_vm(&vm.host.name)?
        .remove(vm.key())
        .map(|record| record.sample)
        .unwrap_or_default();
    let first = |address: fn(&crate::model::NicSettings) -> &String| {
        ordered_nics(settings)
            .into_iter()
            .map(|(_, nic)| address(nic))
            .find(|address| !address.is_empty())
            .cloned()
            .unwrap_or_default()
    };
    // A sample's totals are the guest's view; without them, the plan's.
    let total = |sampled: f64, planned: u64| {
        if sampled > 0.0 {
            sampled
        } else {
            planned as f64
        }
    };
    let memory_used = total(sample.mem_total, settings.mem_num) * sample.mem_usage / 100.0 * MB;
    let disk_used = total(sample.hdd_total, settings.hdd_num) * sample.hdd_usage / 100.0 * MB;
    let traffic_used = vm.record.flu_usage * MB;
    Ok(VmInfoAnswer {
        hostname: vm.key().to_owned(),
        status: power.panel_word().to_owned(),
        ipv4: first(|nic| &nic.ip4_addr),
        ipv6: first(|nic| &nic.ip6_addr),
        engine: vm.host.engine.clone(),
        created_at: format_ms(vm.record.created_at),
        config: InfoConfig {
            cpus: settings.cpu_num,
            memory: format!("{} MB", settings.mem_num),
            disk: format!("{} MB", settings.hdd_num),
            traffic_limit: settings.flu_num,
        },
        cpu_usage: format!("{:.1}%", sample.cpu_usage),
        memory_usage: human_size(memory_used as u64),
        memory_usage_raw: memory_used as u64,
        disk_usage: human_size(disk_used as u64),
        disk_usage_raw: disk_used as u64,
        traffic_usage: human_size(traffic_used as u64),
        traffic_usage_raw: traffic_used as u64,
        cpu_percent: sample.cpu_usage,
        memory_percent: sample.mem_usage,
        disk_percent: sample.hdd_usage,
    })
}

pub fn traffic(vm: &VmRef) -> TrafficAnswer {
    TrafficAnswer {
        used: (vm.record.flu_usage * MB) as u64,
    }
}

/// Zero the month's traffic.
/// The period's count to 0; a VM throttled or paused for its quota is let go.
pub async fn traffic_reset(state: Arc<AppState>, vm: VmRef) -> ServiceResult<TrafficAnswer> {
    super::traffic::reset(state, vm).await?;
    Ok(TrafficAnswer { used: 0 })
}

/// The VM's NICs that have an IPv4 (`v6` false) or an IPv6 address.
pub fn addresses(vm: &VmRef, v6: bool) -> Vec<NicView> {
    network::iplist(vm)
        .into_iter()
        .filter(|view| {
            let address = if v6 {
                &view.nic.ip6_addr
            } else {
                &view.nic.ip4_addr
            };
            !address.is_empty()
        })
        .collect()
}

/// Whether the VM could forward public `port`: NAT is on, the port is in
/// the host's range and free, and the VM is under its `nat_num`.
pub fn nat_check(
    state: &AppState,
    vm: &VmRef,
    protocol: &str,
    port: u32,
) -> ServiceResult<Availability> {
    let protocol = nat_protocol(protocol)?;
    if let Some(reason) = state.capabilities.nat.unavailable() {
        return Ok(Availability::no(format!(
            "port forwarding is off: {reason}"
        )));
    }
    let range = vm.host.config.port_range();
    if !u16::try_from(port).is_ok_and(|port| range.contains(&port)) {
        return Ok(Availability::no(format!(
            "port {port} is outside the host's range {}-{}",
            range.start(),
            range.end()
        )));
    }
    let forwards = state.store.nat_list(&vm.host.name, None)?;
    if forwards
        .iter()
        .any(|rule| u32::from(rule.wan_port) == port && rule.protocol == protocol)
    {
        return Ok(Availability::no(format!(
            "port {port}/{protocol} is forwarded already"
        )));
    }
    let limit = vm.record.config.nat_num;
    let own = forwards
        .iter()
        .filter(|rule| rule.vm_uuid == vm.key())
        .count();
    if limit > 0 && own >= limit as usize {
        return Ok(Availability::no(format!(
            "the VM has its {limit} forwards (nat_num)"
        )));
    }
    Ok(Availability::yes())
}

/// Whether `domain` could be proxied: a valid name, not served yet, and
/// (when a VM is given) the VM under its `web_num`.
pub fn proxy_check(
    state: &AppState,
    domain: &str,
    vm: Option<&VmRef>,
) -> ServiceResult<Availability> {
    if let Err(invalid) = rules::check_domain("domain", domain) {
        return Ok(Availability::no(invalid.to_string()));
    }
    if let Some(reason) = state.capabilities.proxy.unavailable() {
        return Ok(Availability::no(format!(
            "the reverse proxy is off: {reason}"
        )));
    }
    if state.store.proxy_domain_taken(domain)? {
        return Ok(Availability::no(format!("{domain} is served already")));
    }
    if let Some(vm) = vm {
        let limit = vm.record.config.web_num;
        let own = state.store.proxy_list(&vm.host.name, Some(vm.key()))?.len();
        if limit > 0 && own >= limit as usize {
            return Ok(Availability::no(format!(
                "the VM has its {limit} sites (web_num)"
            )));
        }
    }
    Ok(Availability::yes())
}

/// The host's NAT port range, the ports of `protocol` forwarded now, and
/// how many are free.
pub fn ports(state: &AppState, host: &Host, protocol: &str) -> ServiceResult<PortsAnswer> {
    let protocol = nat_protocol(protocol)?;
    let range = host.config.port_range();
    let mut used: Vec<u16> = state
        .store
        .nat_list(&host.name, None)?
        .into_iter()
        .filter(|rule| rule.protocol == protocol)
        .map(|rule| rule.wan_port)
        .collect();
    used.sort_unstable();
    used.dedup();
    let size = if range.is_empty() {
        0
    } else {
        u64::from(*range.end() - *range.start()) + 1
    };
    let inside = used.iter().filter(|port| range.contains(port)).count() as u64;
    Ok(PortsAnswer {
        range: [*range.start(), *range.end()],
        used,
        free_count: size.saturating_sub(inside),
    })
}

/// A host's plans: name → the config values a create takes first.
pub fn plans(state: &AppState, host: &Host) -> ServiceResult<BTreeMap<String, Patch>> {
    Ok(state.store.plan_list(&host.name)?.into_iter().collect())
}

/// Create or replace a plan; its values must make a valid VM config.
pub fn plan_put(state: &AppState, host: &Host, input: PlanInput) -> ServiceResult<Patch> {
    rules::check_name("name", &input.name)?;
    for key in ["vm_uuid", "plan"] {
        if input.config.contains(key) {
            return Err(Invalid::new(format!("config.{key}"), "a plan names no VM or plan").into());
        }
    }
    let example = VmSettings {
        vm_uuid: "plan-check".to_owned(),
        ..VmSettings::default()
    };
    let settings: VmSettings = input
        .config
        .clone()
        .apply(&example, "config", |_, _| true)?;
    settings
        .check()
        .map_err(|invalid| invalid.within("config."))?;
    state
        .store
        .plan_put(&host.name, &input.name, &input.config)?;
    Ok(input.config)
}

pub fn plan_delete(state: &AppState, host: &Host, name: &str) -> ServiceResult<()> {
    Ok(state.store.plan_delete(&host.name, name)?)
}

/// A create's body as settings: with `plan`, the plan's values first, then
/// the body's over them.
pub fn create_settings(
    state: &AppState,
    host: &Host,
    mut body: Patch,
) -> ServiceResult<VmSettings> {
    let plan = body.take_text("plan").unwrap_or_default();
    let body = if plan.is_empty() {
        body
    } else {
        let plans = plans(state, host)?;
        let values = plans.get(&plan).ok_or_else(|| {
            let known: Vec<&str> = plans.keys().map(String::as_str).collect();
            Invalid::new(
                "plan",
                format!(
                    "host {:?} has no plan {plan:?} (plans: {})",
                    host.name,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
        body.over(values)
    };
    let mut settings: VmSettings = body.apply(&VmSettings::default(), "", |_, _| true)?;
    settings.plan = plan;
    Ok(settings)
}
