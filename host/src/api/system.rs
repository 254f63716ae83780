//! The 9 system endpoints: token, snapshot, reload, statistics, engines,
//! logs and tasks.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Authenticated;
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery, AsyncFlag};
use crate::error::ApiError;
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

pub async fn treset(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let store = state.store.clone();
    state
        .tasks
        .run(system_task("treset"), flag.detach, async move {
            let token = crate::auth::reset_token(&store)?;
            Ok(json!({ "token": token }))
        })
        .await?
        .into_answer()
}

#[derive(Deserialize)]
pub struct TokenBody {
    #[serde(default)]
    token: String,
}

pub async fn tsetup(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<TokenBody>,
) -> ApiResult<Value> {
    crate::auth::check_chosen_token(&body.token)
        .map_err(|rule| ApiError::bad_field("token", rule))?;
    let store = state.store.clone();
    state
        .tasks
        .run(system_task("tsetup"), flag.detach, async move {
            store.set_token_hash(&crate::auth::hash_token(&body.token))?;
            Ok(json!({ "token": body.token }))
        })
        .await?
        .into_answer()
}

pub async fn tquery(authenticated: Authenticated) -> ApiResult<Value> {
    Ok(ApiOk(json!({ "token": authenticated.token })))
}

pub async fn saving(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let task_state = state.clone();
    state
        .tasks
        .run(system_task("saving"), flag.detach, async move {
            service::snapshot(&task_state).await
        })
        .await?
        .into_answer()
}

pub async fn loader(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let task_state = state.clone();
    state
        .tasks
        .run(system_task("loader"), flag.detach, async move {
            service::reload(&task_state).await
        })
        .await?
        .into_answer()
}

pub async fn statis(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    Ok(ApiOk(service::statistics(&state)?))
}

pub async fn engine(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    Ok(ApiOk(service::engines(&state)))
}

const MAX_PAGE: u32 = 1000;

fn default_limit() -> u32 {
    100
}

fn check_page(limit: u32) -> Result<(), ApiError> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(ApiError::bad_field(
            "limit",
            format!("must be 1..={MAX_PAGE}, got {limit}"),
        ))
    }
}

/// An empty `hs_name=` means no filter.
fn host_filter(hs_name: Option<String>) -> Option<String> {
    hs_name.filter(|name| !name.is_empty())
}

#[derive(Deserialize)]
pub struct LogQuery {
    hs_name: Option<String>,
    #[serde(default)]
    level: String,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

pub async fn logget(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Value> {
    check_page(query.limit)?;
    let level = match query.level.as_str() {
        "" => None,
        text => Some(LogLevel::parse(text).ok_or_else(|| {
            ApiError::bad_field(
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

#[derive(Deserialize)]
pub struct TaskQuery {
    hs_name: Option<String>,
    #[serde(default)]
    state: String,
    #[serde(default = "default_limit")]
    limit: u32,
    #[serde(default)]
    offset: u32,
}

pub async fn tasget(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> ApiResult<Value> {
    check_page(query.limit)?;
    let task_state = match query.state.as_str() {
        "" => None,
        text => Some(TaskState::parse(text).ok_or_else(|| {
            ApiError::bad_field(
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
