//! The 9 system endpoints: token, snapshot, reload, statistics, engines,
//! logs and tasks.

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Deserialize;

use super::auth::Authenticated;
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery, AsyncFlag};
use crate::model::{
    EngineView, Envelope, Invalid, LogEntry, Mutation, ReloadAnswer, SnapshotAnswer, Statistics,
    TaskEntry, TokenAnswer, TokenInput,
};
use crate::service::system as service;
use crate::state::AppState;
use crate::store::{LogFilter, LogLevel, NewTask, TaskFilter, TaskState};

fn system_task(actions: &str) -> NewTask {
    NewTask {
        actions: actions.to_owned(),
        host: String::new(),
        vm_uuid: String::new(),
    }
}

#[utoipa::path(
    post,
    path = "/api/system/treset",
    tag = "system",
    summary = "Replace the admin token with a new random one",
    description = "The old token stops working at once.",
    params(AsyncFlag),
    responses((status = 200, description = "The new token", body = Envelope<Mutation<TokenAnswer>>)),
    security(("bearer" = []))
)]
pub async fn treset(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Mutation<TokenAnswer>> {
    let task_state = state.clone();
    let work = async move { service::reset_token(&task_state) };
    let outcome = state.tasks.run(system_task("treset"), flag.detach, work);
    Ok(ApiOk(outcome.await?.answer()))
}

#[utoipa::path(
    post,
    path = "/api/system/tsetup",
    tag = "system",
    summary = "Set the admin token",
    description = "16 to 128 characters of A-Z a-z 0-9 _ -, at least 8 distinct; a weak one is 400.",
    params(AsyncFlag),
    request_body = TokenInput,
    responses((status = 200, description = "The token set", body = Envelope<Mutation<TokenAnswer>>)),
    security(("bearer" = []))
)]
pub async fn tsetup(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<TokenInput>,
) -> ApiResult<Mutation<TokenAnswer>> {
    service::check_token(&body.token)?;
    let task_state = state.clone();
    let work = async move { service::set_token(&task_state, body.token) };
    let outcome = state.tasks.run(system_task("tsetup"), flag.detach, work);
    Ok(ApiOk(outcome.await?.answer()))
}

#[utoipa::path(
    get,
    path = "/api/system/tquery",
    tag = "system",
    summary = "The token this request presented",
    description = "Tokens are stored hashed; this echoes the presented one.",
    responses((status = 200, description = "Success", body = Envelope<TokenAnswer>)),
    security(("bearer" = []))
)]
pub async fn tquery(authenticated: Authenticated) -> ApiResult<TokenAnswer> {
    Ok(ApiOk(TokenAnswer {
        token: authenticated.token,
    }))
}

#[utoipa::path(
    post,
    path = "/api/system/saving",
    tag = "system",
    summary = "Snapshot the database into the data directory",
    params(AsyncFlag),
    responses((status = 200, description = "Success", body = Envelope<Mutation<SnapshotAnswer>>)),
    security(("bearer" = []))
)]
pub async fn saving(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Mutation<SnapshotAnswer>> {
    let task_state = state.clone();
    let work = async move { service::snapshot(&task_state).await };
    let outcome = state.tasks.run(system_task("saving"), flag.detach, work);
    Ok(ApiOk(outcome.await?.answer()))
}

#[utoipa::path(
    post,
    path = "/api/system/loader",
    tag = "system",
    summary = "Re-read the config file, reload plugins, re-apply NAT and proxy state",
    params(AsyncFlag),
    responses((status = 200, description = "Success", body = Envelope<Mutation<ReloadAnswer>>)),
    security(("bearer" = []))
)]
pub async fn loader(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Mutation<ReloadAnswer>> {
    let task_state = state.clone();
    let work = async move { service::reload(&task_state).await };
    let outcome = state.tasks.run(system_task("loader"), flag.detach, work);
    Ok(ApiOk(outcome.await?.answer()))
}

#[utoipa::path(
    get,
    path = "/api/system/statis",
    tag = "system",
    summary = "Counts of hosts, VMs, running VMs and tasks; uptime; version",
    responses((status = 200, description = "Success", body = Envelope<Statistics>)),
    security(("bearer" = []))
)]
pub async fn statis(State(state): State<Arc<AppState>>) -> ApiResult<Statistics> {
    Ok(ApiOk(service::statistics(&state)?))
}

#[utoipa::path(
    get,
    path = "/api/system/engine",
    tag = "system",
    summary = "The engine plugins, by name",
    responses((status = 200, description = "Success", body = Envelope<BTreeMap<String, EngineView>>)),
    security(("bearer" = []))
)]
pub async fn engine(State(state): State<Arc<AppState>>) -> ApiResult<BTreeMap<String, EngineView>> {
    Ok(ApiOk(service::engines(&state)))
}

const MAX_PAGE: u32 = 1000;

fn default_limit() -> u32 {
    100
}

fn check_page(limit: u32) -> Result<(), Invalid> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(Invalid::new(
            "limit",
            format!("must be 1..={MAX_PAGE}, got {limit}"),
        ))
    }
}

/// An empty `hs_name=` means no filter.
fn host_filter(hs_name: Option<String>) -> Option<String> {
    hs_name.filter(|name| !name.is_empty())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only this host's records (empty: all).
    hs_name: Option<String>,
    /// debug, info, warn or error (empty: all).
    #[serde(default)]
    level: String,
    /// 1..=1000, default 100.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

#[utoipa::path(
    get,
    path = "/api/system/logget",
    tag = "system",
    summary = "Log records, newest first",
    params(LogQuery),
    responses((status = 200, description = "Success", body = Envelope<Vec<LogEntry>>)),
    security(("bearer" = []))
)]
pub async fn logget(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Vec<LogEntry>> {
    check_page(query.limit)?;
    let level = match query.level.as_str() {
        "" => None,
        text => Some(LogLevel::parse(text).ok_or_else(|| {
            Invalid::new(
                "level",
                format!("{text:?} must be one of debug, info, warn, error"),
            )
        })?),
    };
    let filter = LogFilter {
        host: host_filter(query.hs_name),
        level,
        limit: query.limit,
        offset: query.offset,
    };
    Ok(ApiOk(service::logs(&state, &filter)?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Only this host's tasks (empty: all).
    hs_name: Option<String>,
    /// queued, running, done or failed (empty: all).
    #[serde(default)]
    state: String,
    /// 1..=1000, default 100.
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000)]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

#[utoipa::path(
    get,
    path = "/api/system/tasget",
    tag = "system",
    summary = "Task records, newest first",
    params(TaskQuery),
    responses((status = 200, description = "Success", body = Envelope<Vec<TaskEntry>>)),
    security(("bearer" = []))
)]
pub async fn tasget(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> ApiResult<Vec<TaskEntry>> {
    check_page(query.limit)?;
    let task_state = match query.state.as_str() {
        "" => None,
        text => Some(TaskState::parse(text).ok_or_else(|| {
            Invalid::new(
                "state",
                format!("{text:?} must be one of queued, running, done, failed"),
            )
        })?),
    };
    let filter = TaskFilter {
        host: host_filter(query.hs_name),
        state: task_state,
        limit: query.limit,
        offset: query.offset,
    };
    Ok(ApiOk(service::tasks(&state, &filter)?))
}
