//! System operations: snapshot, reload, statistics, engine listing, and the
//! log and task listings.

use std::collections::BTreeMap;

use super::error::{ServiceError, ServiceResult};
use crate::config::Config;
use crate::model::{
    EngineView, Invalid, LogEntry, LogQuery, MAX_PAGE, ReloadAnswer, ReloadedPlugin,
    SnapshotAnswer, Statistics, TaskEntry, TaskQuery, TokenAnswer,
};
use crate::state::AppState;
use crate::store::{LogFilter, LogLevel, NewLog, NewTask, StoreError, TaskFilter, TaskState};

/// Write a consistent copy of the database under `<data_dir>/backups/`.
pub async fn snapshot(state: &AppState) -> ServiceResult<SnapshotAnswer> {
    let directory = state.config().server.data_dir.join("backups");
    std::fs::create_dir_all(&directory).map_err(|error| {
        ServiceError::Internal(format!("creating {}: {error}", directory.display()))
    })?;
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .replace([':', '.'], "-");
    let mut target = directory.join(format!("openidcs-{stamp}.db"));
    let mut attempt = 1;
    while target.exists() {
        attempt += 1;
        target = directory.join(format!("openidcs-{stamp}-{attempt}.db"));
    }
    let store = state.store.clone();
    let path = target.clone();
    let keep = state.config().server.snapshots_kept.max(1) as usize;
    // The copy and the removal of old copies are file work: off the reactor.
    let bytes = tokio::task::spawn_blocking(move || {
        let bytes = store.snapshot(&path)?;
        prune_snapshots(&directory, keep).map_err(|error| {
            ServiceError::Internal(format!(
                "removing old snapshots in {}: {error}",
                directory.display()
            ))
        })?;
        Ok::<_, ServiceError>(bytes)
    })
    .await
    .map_err(|error| ServiceError::Internal(format!("snapshot task failed: {error}")))??;
    Ok(SnapshotAnswer {
        path: target.display().to_string(),
        bytes,
    })
}

/// Re-read the config file, reload every plugin, create configured hosts
/// the database does not know. A config file that does not parse is a 400
/// and changes nothing.
pub async fn reload(state: &AppState) -> ServiceResult<ReloadAnswer> {
    let config = Config::load(&state.config_path, false, &state.overrides)
        .map_err(|error| crate::model::Invalid::new("config file", format!("{error:#}")))?;
    let previous = state.config();
    if config.server.data_dir != previous.server.data_dir
        || config.server.listen != previous.server.listen
    {
        state.store.log_insert(&NewLog::new(
            LogLevel::Warn,
            "loader",
            "server.listen and server.data_dir changes take effect at the next start",
        ))?;
    }
    state.plugins.load_all(&config.plugins).await;
    state
        .capabilities
        .libvirt
        .set_policy(config.libvirt.clone());
    state.replace_config(config);
    seed_hosts(state)?;
    let plugins = state
        .plugins
        .plugins()
        .values()
        .map(|plugin| ReloadedPlugin {
            name: plugin.name.to_string(),
            loaded: plugin.error.is_none(),
            error: plugin.error.clone(),
        })
        .collect();
    let reconciled = crate::service::network::reconcile(state).await;
    Ok(ReloadAnswer {
        plugins,
        hosts: state.store.host_count()?,
        reconciled,
    })
}

/// Create the `[[host]]` entries of the config that the database lacks.
/// Existing hosts are never overwritten: the API owns them once created.
pub fn seed_hosts(state: &AppState) -> ServiceResult<()> {
    let config = state.config();
    for seed in &config.hosts {
        match state.store.host_get(&seed.name) {
            Ok(_) => continue,
            Err(StoreError::NotFound(_)) => {}
            Err(other) => return Err(other.into()),
        }
        seed.config
            .check(
                &config.libvirt,
                super::hosts::speaks_http(state, &seed.engine),
            )
            .map_err(|invalid| invalid.within(&format!("config file host {:?}: ", seed.name)))?;
        state
            .store
            .host_insert(&seed.name, &seed.engine, &seed.config)?;
        state.store.log_insert(
            &NewLog::new(
                LogLevel::Info,
                "seed-host",
                format!("host {:?} created from the config file", seed.name),
            )
            .host(seed.name.clone()),
        )?;
    }
    Ok(())
}

pub fn statistics(state: &AppState) -> ServiceResult<Statistics> {
    let [host_count, vm_count, running_vm_count, task_running] = state.store.statistics()?;
    Ok(Statistics {
        host_count,
        vm_count,
        running_vm_count,
        task_running,
        uptime_s: state.started_at.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

pub fn engines(state: &AppState) -> BTreeMap<String, EngineView> {
    state
        .plugins
        .plugins()
        .iter()
        .map(|(name, plugin)| {
            let info = plugin.info.as_ref();
            let view = EngineView {
                name: name.clone(),
                description: info
                    .map(|info| info.description.clone())
                    .or_else(|| plugin.config.description.clone())
                    .unwrap_or_default(),
                enabled: plugin.error.is_none(),
                version: info.map(|info| info.version.clone()),
                wit_version: plugin.wit_version.clone(),
                grants: plugin
                    .config
                    .grants
                    .iter()
                    .map(|grant| grant.interface().to_owned())
                    .collect(),
                imports: plugin.imports.clone(),
                path: plugin.config.path.display().to_string(),
                memory_mb: plugin.config.memory_mb,
                timeout_ms: plugin.config.timeout_ms,
                precompiled_cache_hit: plugin.cache_hit,
                load_ms: plugin.load_ms,
                error: plugin.error.clone(),
            };
            (name.clone(), view)
        })
        .collect()
}

/// A page of log records, newest first.
pub fn logs(state: &AppState, query: &LogQuery) -> ServiceResult<Vec<LogEntry>> {
    let (host, limit, offset) = page(&query.hs_name, query.limit, query.offset)?;
    let level = filter_word(
        "level",
        &query.level,
        LogLevel::parse,
        "debug, info, warn, error",
    )?;
    let filter = LogFilter {
        host,
        level,
        limit,
        offset,
    };
    Ok(state.store.log_list(&filter)?)
}

/// A page of task records, newest first.
pub fn tasks(state: &AppState, query: &TaskQuery) -> ServiceResult<Vec<TaskEntry>> {
    let (host, limit, offset) = page(&query.hs_name, query.limit, query.offset)?;
    let words = "queued, running, done, failed";
    let state_filter = filter_word("state", &query.state, TaskState::parse, words)?;
    let filter = TaskFilter {
        host,
        state: state_filter,
        limit,
        offset,
    };
    Ok(state.store.task_list(&filter)?)
}

/// The host filter (an empty `hs_name=` is none) and the page of a
/// listing, checked.
fn page(
    hs_name: &Option<String>,
    limit: u32,
    offset: u32,
) -> Result<(Option<String>, u32, u32), Invalid> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Invalid::new(
            "limit",
            format!("must be 1..={MAX_PAGE}, got {limit}"),
        ));
    }
    let host = hs_name.clone().filter(|name| !name.is_empty());
    Ok((host, limit, offset))
}

/// An optional filter word of a listing: empty is no filter.
fn filter_word<T>(
    field: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
    choices: &str,
) -> Result<Option<T>, Invalid> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(text)
        .map(Some)
        .ok_or_else(|| Invalid::new(field, format!("{text:?} must be one of {choices}")))
}

/// Replace the admin token with a new random one.
pub fn reset_token(state: &AppState) -> ServiceResult<TokenAnswer> {
    Ok(TokenAnswer {
        token: crate::auth::reset_token(&state.store)?,
    })
}

/// Set the admin token; a weak one is refused.
pub fn check_token(token: &str) -> ServiceResult<()> {
    crate::auth::check_chosen_token(token)
        .map_err(|rule| crate::model::Invalid::new("token", rule).into())
}

pub fn set_token(state: &AppState, token: String) -> ServiceResult<TokenAnswer> {
    state
        .store
        .set_token_hash(&crate::auth::hash_token(&token))?;
    Ok(TokenAnswer { token })
}

/// The task record of a system mutation (no host, no VM).
pub fn task(actions: &str) -> NewTask {
    NewTask {
        actions: actions.to_owned(),
        host: String::new(),
        vm_uuid: String::new(),
    }
}

/// Record a request that failed (a fault, or a refused mutation) with its
/// method, path and status; the host and VM come from the path
/// (`/api/<group>/<option>/<hs_name>/<vm_uuid>/...`).
pub fn log_request_failure(state: &AppState, method: &str, path: &str, status: u16, message: &str) {
    let level = if status >= 500 {
        LogLevel::Error
    } else {
        LogLevel::Warn
    };
    let segments: Vec<&str> = path.split('/').collect();
    let record = NewLog::new(
        level,
        format!("{method} {path}"),
        format!("{status}: {message}"),
    )
    .host(segments.get(4).copied().unwrap_or_default())
    .vm(segments.get(5).copied().unwrap_or_default());
    if let Err(error) = state.store.log_insert(&record) {
        tracing::error!("cannot store a log record: {error}");
    }
}

/// What a refused request was, for [`RefusalTally`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or a wrong one (401).
    Unauthenticated,
    /// No such route, or not with this method (404, 405).
    Unrouted,
}

/// Requests refused before anything was authenticated, counted rather than
/// logged one by one: an outsider can send them as fast as the network
/// goes, and one record each would fill the disk. The counts become one
/// summary record per `[logs] refusal_summary_s`.
#[derive(Default)]
pub struct RefusalTally {
    unauthenticated: std::sync::atomic::AtomicU64,
    unrouted: std::sync::atomic::AtomicU64,
    /// When the last summary was written (None: never).
    last_summary: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// Count a refused request; write the summary when it is due.
pub fn tally_refusal(state: &AppState, refusal: Refusal) {
    use std::sync::atomic::Ordering;
    let tally = &state.refusals;
    match refusal {
        Refusal::Unauthenticated => tally.unauthenticated.fetch_add(1, Ordering::Relaxed),
        Refusal::Unrouted => tally.unrouted.fetch_add(1, Ordering::Relaxed),
    };
    let interval = std::time::Duration::from_secs(state.config().logs.refusal_summary_s);
    let now = std::time::Instant::now();
    {
        let mut last = tally.last_summary.lock();
        match *last {
            Some(at) if now.duration_since(at) < interval => return,
            _ => *last = Some(now),
        }
    }
    let unauthenticated = tally.unauthenticated.swap(0, Ordering::Relaxed);
    let unrouted = tally.unrouted.swap(0, Ordering::Relaxed);
    let record = NewLog::new(
        LogLevel::Warn,
        "refused-requests",
        format!(
            "{unauthenticated} requests without a valid credential and {unrouted} to unknown \
             routes since the last summary (one summary per {}s at most)",
            interval.as_secs()
        ),
    );
    if let Err(error) = state.store.log_insert(&record) {
        tracing::error!("cannot store a log record: {error}");
    }
}

/// Remove all but the newest `keep` snapshots of `directory` (their names
/// sort by time); answers how many were removed.
fn prune_snapshots(directory: &std::path::Path, keep: usize) -> std::io::Result<usize> {
    let mut snapshots: Vec<std::path::PathBuf> = std::fs::read_dir(directory)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("openidcs-") && name.ends_with(".db"))
        })
        .collect();
    snapshots.sort();
    let excess = snapshots.len().saturating_sub(keep);
    for old in &snapshots[..excess] {
        std::fs::remove_file(old)?;
    }
    Ok(excess)
}

/// The endpoints that answer "off" on this server, with the reason, for
/// the start-up message (`make run` as a normal user has no nftables).
pub fn endpoints_off(state: &AppState) -> Vec<(&'static str, String)> {
    let capabilities = &state.capabilities;
    [
        (
            "natadd, natdel (port forwarding)",
            capabilities.nat.unavailable(),
        ),
        (
            "pxyadd, pxydel (reverse proxy)",
            capabilities.proxy.unavailable(),
        ),
    ]
    .into_iter()
    .filter_map(|(endpoints, reason)| reason.map(|reason| (endpoints, reason)))
    .collect()
}
