//! Hosts: the operator's hypervisor hosts, and turning a stored host into
//! what engines and capabilities see.

use std::sync::Arc;

use parking_lot::RwLock;

use super::error::{ServiceError, ServiceResult};
use crate::caps::HostScope;
use crate::caps::proxy::tls;
use crate::model::{
    CpuCounters, CpuSetting, EncodedAnswer, HostDetail, HostSettings, HostState, HostStatus,
    HostStatusAnswer, HostView, MASKED, Patch, StatusSource, rules,
};
use crate::plugin::EngineTarget;
use crate::plugin::bindings::{HostConfig, HostCounters, PluginError};
use crate::state::AppState;
use crate::store::{HostRecord, NewTask, format_ms, now_ms};

/// A stored host; its settings were checked when they were written.
pub type Host = HostRecord;

impl HostRecord {
    /// What capabilities may know about this host.
    pub fn scope(&self) -> Arc<HostScope> {
        let settings = &self.config;
        Arc::new(HostScope {
            name: self.name.clone(),
            uri: settings.server_addr.clone(),
            storage_dir: settings.system_path.clone(),
            ports: settings.port_range(),
            vm_networks: settings.vm_networks(),
            public_addr: settings
                .public_addr
                .first()
                .and_then(|address| address.parse().ok()),
            name_prefix: settings.filter_name.clone(),
            allow_hostdev: settings.allow_hostdev(),
            images: settings.images_path.clone(),
            api_credential: crate::caps::http::ApiCredential::from_settings(
                &settings.server_user,
                &settings.server_pass,
                settings.tls_client_cert(),
            ),
            tls_pin: settings
                .tls_fingerprint()
                .and_then(rules::parse_fingerprint),
        })
    }

    /// The CPU this host's VMs get: the operator's, else the probed one.
    pub fn cpu_choice(&self) -> Option<CpuSetting> {
        self.config.cpu_choice().or_else(|| self.cpu.clone())
    }

    /// What an engine call for this host needs.
    pub fn target(&self) -> EngineTarget {
        EngineTarget {
            engine: self.engine.clone(),
            scope: self.scope(),
            config: HostConfig::from(self),
        }
    }

    /// The host as `listup` and the host mutations show it.
    pub fn view(&self, vm_count: u64) -> HostView {
        HostView {
            name: self.name.clone(),
            engine: self.engine.clone(),
            addr: self.config.server_addr.clone(),
            config: self.config.masked(),
            vm_count,
            status: if self.enabled {
                HostState::Active
            } else {
                HostState::Inactive
            },
            enabled: self.enabled,
        }
    }
}

/// Load a host by name, or 404.
pub fn get(state: &AppState, name: &str) -> ServiceResult<Host> {
    Ok(state.store.host_get(name)?)
}

/// Load a host that must be enabled (VM operations), or 404/403.
pub fn get_enabled(state: &AppState, name: &str) -> ServiceResult<Host> {
    let host = get(state, name)?;
    if !host.enabled {
        return Err(ServiceError::Forbidden(format!(
            "host {name:?} is disabled (POST /api/server/powers/{name} to enable)"
        )));
    }
    Ok(host)
}

/// The engine named by a host must be a configured plugin.
pub fn check_engine(state: &AppState, engine: &str) -> ServiceResult<()> {
    if state.plugins.plugins().contains_key(engine) {
        Ok(())
    } else {
        let known: Vec<String> = state.plugins.plugins().keys().cloned().collect();
        Err(rules::Invalid::new(
            "type",
            format!("unknown engine {engine:?} (configured: {known:?})"),
        )
        .into())
    }
}

/// Check settings for a host of `engine`; errors name `config.<field>`.
pub fn checked(
    state: &AppState,
    engine: &str,
    settings: HostSettings,
) -> ServiceResult<HostSettings> {
    settings.check(&state.config().libvirt, speaks_http(state, engine))?;
    if let Some(chain) = settings.tls_client_cert() {
        // The same PEM rules as a proxy site's certificate and key.
        let invalid = |field: &str, error: PluginError| {
            let message = match error {
                PluginError::Invalid(message) => message,
                other => crate::plugin::bindings::describe_error(&other),
            };
            rules::Invalid::new(field, message)
        };
        tls::check_chain(chain)
            .map_err(|error| invalid("config.extend_data.tls_client_cert", error))?;
        tls::check_key(&settings.server_pass)
            .map_err(|error| invalid("config.server_pass", error))?;
    }
    Ok(settings)
}

/// Whether `engine` is granted `http` (its hosts' `server_addr` is an API).
pub fn speaks_http(state: &AppState, engine: &str) -> bool {
    state
        .config()
        .plugins
        .iter()
        .any(|plugin| plugin.name == engine && plugin.grants.contains(&crate::config::Grant::Http))
}

/// Host status from raw counters, with CPU usage from the previous counters.
pub fn status_of(counters: &HostCounters, previous: Option<&HostStatus>) -> HostStatus {
    let busy = counters.cpu_busy_ns as f64;
    let idle = counters.cpu_idle_ns as f64;
    let (previous_busy, previous_idle) = previous
        .map(|status| {
            (
                status.counters.cpu_busy_ns as f64,
                status.counters.cpu_idle_ns as f64,
            )
        })
        .unwrap_or((0.0, 0.0));
    let (delta_busy, delta_idle) = if busy >= previous_busy && idle >= previous_idle {
        (busy - previous_busy, idle - previous_idle)
    } else {
        (busy, idle)
    };
    HostStatus {
        hostname: counters.hostname.clone(),
        hypervisor: counters.hypervisor.clone(),
        hypervisor_version: counters.hypervisor_version.clone(),
        cpu_total: counters.cpu_total,
        cpu_usage: round2(percent_of(delta_busy, delta_busy + delta_idle)),
        mem_total: counters.mem_total_mb,
        mem_used: counters.mem_used_mb,
        mem_usage: round2(percent_of(
            counters.mem_used_mb as f64,
            counters.mem_total_mb as f64,
        )),
        hdd_total: counters.hdd_total_mb,
        hdd_used: counters.hdd_used_mb,
        hdd_usage: round2(percent_of(
            counters.hdd_used_mb as f64,
            counters.hdd_total_mb as f64,
        )),
        vm_count: counters.vm_count,
        vm_running: counters.vm_running,
        counters: CpuCounters {
            cpu_busy_ns: counters.cpu_busy_ns,
            cpu_idle_ns: counters.cpu_idle_ns,
        },
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent_of(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part * 100.0 / whole
    } else {
        0.0
    }
}

pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The task record of a host mutation.
pub fn task(actions: &str, host: &str) -> NewTask {
    NewTask {
        actions: actions.to_owned(),
        host: host.to_owned(),
        vm_uuid: String::new(),
    }
}

/// The `server/listup` answer with the store generation it was read at:
/// panels poll it, and it changes only when this server writes.
#[derive(Default)]
pub struct HostListCache(RwLock<Option<(u64, EncodedAnswer)>>);

pub fn listup(state: &AppState) -> ServiceResult<EncodedAnswer> {
    let generation = state.store.generation();
    if let Some((read_at, answer)) = &*state.host_list.0.read()
        && *read_at == generation
    {
        return Ok(answer.clone());
    }
    let answer = encode_host_views(state, |_| true)?;
    *state.host_list.0.write() = Some((generation, answer.clone()));
    Ok(answer)
}

/// `server/listup` for a token scoped to `hosts`: only those (not cached:
/// scoped tokens are few and their answers differ).
pub fn listup_of(state: &AppState, hosts: &[String]) -> ServiceResult<EncodedAnswer> {
    encode_host_views(state, |name| hosts.iter().any(|host| host == name))
}

fn encode_host_views(
    state: &AppState,
    include: impl Fn(&str) -> bool,
) -> ServiceResult<EncodedAnswer> {
    let counts = state.store.vm_count_by_host()?;
    let hosts: std::collections::BTreeMap<String, HostView> = state
        .store
        .host_list()?
        .into_iter()
        .filter(|host| include(&host.name))
        .map(|host| {
            let count = counts.get(&host.name).copied().unwrap_or(0);
            (host.name.clone(), host.view(count))
        })
        .collect();
    EncodedAnswer::encode(&hosts)
        .map_err(|error| ServiceError::Internal(format!("encoding the answer: {error}")))
}

pub fn detail(state: &AppState, name: &str, with_status: bool) -> ServiceResult<HostDetail> {
    let host = get(state, name)?;
    let vm_list: Vec<String> = state
        .store
        .vm_list(name)?
        .into_iter()
        .map(|vm| vm.vm_uuid)
        .collect();
    Ok(HostDetail {
        cpu: host.cpu_choice(),
        last_updated: host.status_at.max(host.polled_at).map(format_ms),
        status: if with_status {
            host.status.clone()
        } else {
            None
        },
        name: host.name,
        engine: host.engine,
        addr: host.config.server_addr.clone(),
        config: host.config.masked(),
        vm_count: vm_list.len() as u64,
        enabled: host.enabled,
        vm_list,
    })
}

pub fn create(
    state: &AppState,
    name: &str,
    engine: &str,
    settings: &HostSettings,
) -> ServiceResult<HostView> {
    Ok(state.store.host_insert(name, engine, settings)?.view(0))
}

/// Settings after an update: keys present replace, others stay; the
/// masked password keeps the stored one.
pub fn merged(state: &AppState, host: &Host, changes: Patch) -> ServiceResult<HostSettings> {
    let settings = changes.apply(&host.config, "config", |key, value| {
        !(key == "server_pass" && value.as_str() == Some(MASKED))
    })?;
    checked(state, &host.engine, settings)
}

pub fn update(
    state: &AppState,
    name: &str,
    engine: Option<&str>,
    settings: &HostSettings,
) -> ServiceResult<HostView> {
    // A forward outside a narrowed range would stay listed while the
    // reconcile drops its rule: the operator moves or deletes it first.
    let range = settings.port_range();
    let stranded: Vec<String> = state
        .store
        .nat_list(name, None)?
        .into_iter()
        .filter(|rule| !range.contains(&rule.wan_port))
        .map(|rule| format!("{} of vm {}", rule.wan_port, rule.vm_uuid))
        .collect();
    if !stranded.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "config.ports_start/ports_close: the new range leaves forwards outside it ({}); \
             delete them first (natdel)",
            stranded.join(", ")
        )));
    }
    let previous = state.store.host_get(name)?;
    let record = state.store.host_update(name, engine, settings)?;
    if previous.config.server_addr != settings.server_addr
        || engine.is_some_and(|engine| engine != previous.engine)
    {
        // Another hypervisor: the CPU probed on the old one says nothing.
        state.store.host_set_cpu(name, None)?;
    }
    let vm_count = state.store.vm_count(Some(name))?;
    Ok(record.view(vm_count))
}

/// Remove a host; with `force`, its VMs' records go too, and their NAT rules
/// and proxy files are taken down in the same task (the reconcile after the
/// delete finds them without rows and removes them).
pub async fn delete(state: &AppState, name: &str, force: bool) -> ServiceResult<()> {
    let vm_count = state.store.vm_count(Some(name))?;
    if vm_count > 0 && !force {
        return Err(ServiceError::Conflict(format!(
            "host {name:?} still has {vm_count} VMs; delete them first or use ?force=true"
        )));
    }
    state.store.host_delete(name)?;
    super::network::reconcile(state).await;
    Ok(())
}

pub fn set_enabled(state: &AppState, name: &str, enable: bool) -> ServiceResult<HostView> {
    let record = state.store.host_set_enabled(name, enable)?;
    let vm_count = state.store.vm_count(Some(name))?;
    Ok(record.view(vm_count))
}

/// The host's status: the stored one unless `refresh` or none is stored.
pub async fn status(
    state: &AppState,
    name: &str,
    refresh: bool,
) -> ServiceResult<HostStatusAnswer> {
    let host = get(state, name)?;
    if !refresh && let (Some(status), Some(status_at)) = (&host.status, host.status_at) {
        return Ok(HostStatusAnswer {
            status: status.clone(),
            source: StatusSource::Cached,
            age_seconds: (now_ms() - status_at).max(0) / 1000,
        });
    }
    let counters = state.plugins.host_status(&host.target()).await?;
    let status = status_of(&counters, host.status.as_ref());
    state.store.host_set_status(name, &status)?;
    Ok(HostStatusAnswer {
        status,
        source: StatusSource::Fresh,
        age_seconds: 0,
    })
}

/// Note that the poller reached the host (for `last_updated`).
pub fn touch(state: &AppState, name: &str) {
    if let Err(error) = state.store.host_touch(name) {
        tracing::error!("cannot record the poll time of host {name}: {error}");
    }
}
