//! The 9 system endpoints: token, snapshot, reload, statistics, engines,
//! logs and tasks; and the named tokens.

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use serde::Deserialize;

use super::auth::Caller;
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag};
use crate::model::{
    EngineView, Envelope, LogEntry, LogQuery, Mutation, ReloadAnswer, SnapshotAnswer, Statistics,
    TaskEntry, TaskQuery, TokenAnswer, TokenCreate, TokenCreated, TokenInput, TokenView,
};
use crate::service::system as service;
use crate::service::tokens;
use crate::state::AppState;

#[utoipa::path(
    post,
    path = "/api/system/treset",
    tag = "system",
    summary = "Replace the admin token with a new random one",
    description = "The old token stops working at once. Always answers with the new token: \
                   `async` is ignored, as the token exists only in this answer.",
    responses((status = 200, description = "The new token", body = Envelope<Mutation<TokenAnswer>>)),
    security(("bearer" = []))
)]
pub async fn treset(State(state): State<Arc<AppState>>) -> ApiResult<Mutation<TokenAnswer>> {
    let task_state = state.clone();
    let work = async move { service::reset_token(&task_state) };
    // Never detached: a detached reset would lock the admin out.
    let outcome = state.tasks.run(service::task("treset"), false, work);
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
    let outcome = state.tasks.run(service::task("tsetup"), flag.detach, work);
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
pub async fn tquery(Extension(caller): Extension<Caller>) -> ApiResult<TokenAnswer> {
    Ok(ApiOk(TokenAnswer {
        token: caller.token,
    }))
}

#[utoipa::path(
    get,
    path = "/api/system/tokens",
    tag = "system",
    summary = "The named tokens, with role, hosts, expiry and last use (never the tokens)",
    responses((status = 200, description = "Success", body = Envelope<Vec<TokenView>>)),
    security(("bearer" = []))
)]
pub async fn token_list(State(state): State<Arc<AppState>>) -> ApiResult<Vec<TokenView>> {
    Ok(ApiOk(tokens::list(&state.store)?))
}

#[utoipa::path(
    post,
    path = "/api/system/tokens",
    tag = "system",
    summary = "Create a named token with a role and hosts; the answer shows it once",
    description = "Roles: `admin` (every route), `operator` (VMs and their NAT, IP and proxy \
                   entries on its hosts, and reading those hosts; no host administration, no \
                   system route), `read-only` (the operator's GET routes without the console). \
                   `hosts` empty = every host. Never detached: the token exists only in this answer.",
    request_body = TokenCreate,
    responses((status = 200, description = "The new token", body = Envelope<Mutation<TokenCreated>>)),
    security(("bearer" = []))
)]
pub async fn token_create(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<TokenCreate>,
) -> ApiResult<Mutation<TokenCreated>> {
    let task_state = state.clone();
    let work = async move { tokens::create(&task_state.store, body) };
    let outcome = state.tasks.run(service::task("tokens:create"), false, work);
    Ok(ApiOk(outcome.await?.answer()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The named token.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "panel")]
    pub name: String,
}

#[utoipa::path(
    delete,
    path = "/api/system/tokens/{name}",
    tag = "system",
    summary = "Revoke a named token: it stops working at once",
    params(TokenPath, AsyncFlag),
    responses((status = 200, description = "The revoked token", body = Envelope<Mutation<TokenView>>)),
    security(("bearer" = []))
)]
pub async fn token_revoke(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<TokenPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Mutation<TokenView>> {
    let task_state = state.clone();
    let work = async move { tokens::revoke(&task_state.store, &path.name) };
    let outcome = state
        .tasks
        .run(service::task("tokens:revoke"), flag.detach, work);
    Ok(ApiOk(outcome.await?.answer()))
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
    let outcome = state.tasks.run(service::task("saving"), flag.detach, work);
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
    let outcome = state.tasks.run(service::task("loader"), flag.detach, work);
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
    Ok(ApiOk(service::logs(&state, &query)?))
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
    Ok(ApiOk(service::tasks(&state, &query)?))
}
