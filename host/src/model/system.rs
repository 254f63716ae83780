//! The answers of the `system/*` endpoints: token, snapshot, reload,
//! statistics, engines, log and task records.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenAnswer {
    /// The admin token.
    pub token: String,
}

/// `system/tsetup` body.
#[derive(Deserialize, ToSchema)]
pub struct TokenInput {
    /// 16 to 128 characters of A-Z a-z 0-9 _ -, at least 8 distinct.
    #[serde(default)]
    #[schema(min_length = 16, max_length = 128, pattern = "^[A-Za-z0-9_-]{16,128}$")]
    pub token: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SnapshotAnswer {
    /// The snapshot file, under `<data_dir>/backups/`.
    pub path: String,
    /// Its size.
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReloadAnswer {
    pub plugins: Vec<ReloadedPlugin>,
    /// Hosts in the database after seeding the config's `[[host]]`s.
    pub hosts: u64,
    /// What re-applying NAT rules and proxy sites did.
    pub reconciled: Reconciled,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReloadedPlugin {
    pub name: String,
    pub loaded: bool,
    #[schema(required)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Reconciled {
    pub nat: NatReconciled,
    pub proxy: ProxyReconciled,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum NatReconciled {
    Done {
        added: u64,
        removed: u64,
        skipped: u64,
    },
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ProxyReconciled {
    Done {
        written: u64,
        removed: u64,
        skipped: u64,
    },
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Statistics {
    pub host_count: u64,
    pub vm_count: u64,
    pub running_vm_count: u64,
    /// Tasks queued or running.
    pub task_running: u64,
    pub uptime_s: u64,
    pub version: &'static str,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EngineView {
    pub name: String,
    pub description: String,
    /// Loaded without error.
    pub enabled: bool,
    /// The engine's own version (null when it did not load).
    #[schema(required)]
    pub version: Option<String>,
    /// The `openidcs:engine` WIT version it was built against.
    #[schema(required)]
    pub wit_version: Option<String>,
    /// Capabilities granted in the config.
    pub grants: Vec<String>,
    /// Capabilities it imports.
    pub imports: Vec<String>,
    pub path: String,
    pub memory_mb: u64,
    pub timeout_ms: u64,
    pub precompiled_cache_hit: bool,
    pub load_ms: u64,
    /// Why it did not load.
    #[schema(required)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LogEntry {
    pub id: i64,
    #[schema(example = "warn")]
    pub level: String,
    pub host: String,
    pub vm_uuid: String,
    pub actions: String,
    pub message: String,
    pub success: bool,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TaskEntry {
    pub id: i64,
    pub actions: String,
    pub host: String,
    pub vm_uuid: String,
    /// queued, running, done or failed.
    pub state: String,
    pub progress: i64,
    #[schema(required)]
    pub success: Option<bool>,
    pub message: String,
    pub created_at: String,
    #[schema(required)]
    pub started_at: Option<String>,
    #[schema(required)]
    pub finished_at: Option<String>,
}

/// Largest page of `logget` and `tasget`.
pub const MAX_PAGE: u32 = 1000;

fn default_limit() -> u32 {
    100
}

/// `system/logget` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only this host's records (empty: all).
    pub hs_name: Option<String>,
    /// debug, info, warn or error (empty: all).
    #[serde(default)]
    pub level: String,
    /// 1..=1000, default 100.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: u32,
    #[serde(default)]
    pub offset: u32,
}

/// `system/tasget` query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Only this host's tasks (empty: all).
    pub hs_name: Option<String>,
    /// queued, running, done or failed (empty: all).
    #[serde(default)]
    pub state: String,
    /// 1..=1000, default 100.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: u32,
    #[serde(default)]
    pub offset: u32,
}
