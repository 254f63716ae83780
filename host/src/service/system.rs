//! System operations: snapshot, reload, statistics, engine listing, and the
//! log and task listings.

use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{LogFilter, LogLevel, NewLog, TaskFilter, format_ms};

/// Write a consistent copy of the database under `<data_dir>/backups/`.
pub async fn snapshot(state: &AppState) -> Result<Value, ApiError> {
    let directory = state.config().server.data_dir.join("backups");
    std::fs::create_dir_all(&directory).map_err(|error| {
        ApiError::Internal(format!("creating {}: {error}", directory.display()))
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
    let bytes = tokio::task::spawn_blocking(move || store.snapshot(&path))
        .await
        .map_err(|error| ApiError::Internal(format!("snapshot task failed: {error}")))??;
    Ok(json!({ "path": target.display().to_string(), "bytes": bytes }))
}

/// Re-read the config file, reload every plugin, create configured hosts
/// the database does not know. A config file that does not parse is a 400
/// and changes nothing.
pub async fn reload(state: &AppState) -> Result<Value, ApiError> {
    let config = Config::load(&state.config_path, false, &state.overrides)
        .map_err(|error| ApiError::BadRequest(format!("config file: {error:#}")))?;
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
    state.replace_config(config);
    seed_hosts(state)?;
    let plugins: Vec<Value> = state
        .plugins
        .plugins()
        .values()
        .map(|plugin| json!({ "name": plugin.name.as_ref(), "loaded": plugin.error.is_none(), "error": plugin.error }))
        .collect();
    let reconciled = crate::service::network::reconcile(state).await;
    Ok(json!({ "plugins": plugins, "hosts": state.store.host_count()?, "reconciled": reconciled }))
}

/// Create the `[[host]]` entries of the config that the database lacks.
/// Existing hosts are never overwritten: the API owns them once created.
pub fn seed_hosts(state: &AppState) -> Result<(), ApiError> {
    for seed in &state.config().hosts {
        match state.store.host_get(&seed.name) {
            Ok(_) => continue,
            Err(crate::store::StoreError::NotFound(_)) => {}
            Err(other) => return Err(other.into()),
        }
        let settings =
            crate::service::hosts::HostSettings::parse(seed.config.clone()).map_err(|error| {
                ApiError::BadRequest(format!("config file host {:?}: {error}", seed.name))
            })?;
        let config = match serde_json::to_value(&settings) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        state.store.host_insert(&seed.name, &seed.engine, &config)?;
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

pub fn statistics(state: &AppState) -> Result<Value, ApiError> {
    let [host_count, vm_count, running_vm_count, task_running] = state.store.statistics()?;
    Ok(json!({
        "host_count": host_count,
        "vm_count": vm_count,
        "running_vm_count": running_vm_count,
        "task_running": task_running,
        "uptime_s": state.started_at.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

pub fn engines(state: &AppState) -> Value {
    let mut engines = Map::new();
    for (name, plugin) in state.plugins.plugins().iter() {
        let info = plugin.info.as_ref();
        engines.insert(
            name.clone(),
            json!({
                "name": name,
                "description": info
                    .map(|info| info.description.clone())
                    .or_else(|| plugin.config.description.clone())
                    .unwrap_or_default(),
                "enabled": plugin.error.is_none(),
                "version": info.map(|info| info.version.clone()),
                "wit_version": plugin.wit_version,
                "grants": plugin.config.grants.iter().map(|grant| grant.interface()).collect::<Vec<_>>(),
                "imports": plugin.imports,
                "path": plugin.config.path.display().to_string(),
                "memory_mb": plugin.config.memory_mb,
                "timeout_ms": plugin.config.timeout_ms,
                "precompiled_cache_hit": plugin.cache_hit,
                "load_ms": plugin.load_ms,
                "error": plugin.error,
            }),
        );
    }
    Value::Object(engines)
}

pub fn logs(state: &AppState, filter: &LogFilter) -> Result<Value, ApiError> {
    let (logs, _total) = state.store.log_list(filter)?;
    Ok(Value::Array(
        logs.into_iter()
            .map(|log| {
                json!({
                    "id": log.id,
                    "level": log.level,
                    "host": log.host,
                    "vm_uuid": log.vm_uuid,
                    "actions": log.actions,
                    "message": log.message,
                    "success": log.success,
                    "created_at": format_ms(log.created_at),
                })
            })
            .collect(),
    ))
}

pub fn tasks(state: &AppState, filter: &TaskFilter) -> Result<Value, ApiError> {
    let (tasks, _total) = state.store.task_list(filter)?;
    Ok(Value::Array(
        tasks
            .into_iter()
            .map(|task| {
                json!({
                    "id": task.id,
                    "actions": task.actions,
                    "host": task.host,
                    "vm_uuid": task.vm_uuid,
                    "state": task.state,
                    "progress": task.progress,
                    "success": task.success,
                    "message": task.message,
                    "created_at": format_ms(task.created_at),
                    "started_at": task.started_at.map(format_ms),
                    "finished_at": task.finished_at.map(format_ms),
                })
            })
            .collect(),
    ))
}
