//! The 7 host endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use serde::Deserialize;

use super::auth::Caller;
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag, HostPath};
use crate::error::ApiError;
use crate::model::{
    EncodedAnswer, Envelope, HostCreate, HostDetail, HostPowers, HostStatusAnswer, HostUpdate,
    HostView, Mutation, Removal, rules,
};
use crate::service::hosts as service;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/server/listup",
    tag = "server",
    summary = "Every host, by name",
    description = "A token scoped to some hosts sees only those.",
    responses((status = 200, description = "Success", body = Envelope<BTreeMap<String, HostView>>)),
    security(("bearer" = []))
)]
pub async fn listup(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<EncodedAnswer, ApiError> {
    let hosts = &caller.principal.hosts;
    Ok(if hosts.is_empty() {
        service::listup(&state)?
    } else {
        service::listup_of(&state, hosts)?
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetailQuery {
    /// Include the last stored status.
    #[serde(default)]
    status: bool,
}

#[utoipa::path(
    get,
    path = "/api/server/detail/{hs_name}",
    tag = "server",
    summary = "One host, with its VM keys",
    params(HostPath, DetailQuery),
    responses((status = 200, description = "Success", body = Envelope<HostDetail>)),
    security(("bearer" = []))
)]
pub async fn detail(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
    ApiQuery(query): ApiQuery<DetailQuery>,
) -> ApiResult<HostDetail> {
    Ok(ApiOk(service::detail(&state, &path.hs_name, query.status)?))
}

#[utoipa::path(
    post,
    path = "/api/server/create",
    tag = "server",
    summary = "Add a host",
    description = "A name taken is 409; an unknown engine (`type`) is 400.",
    params(AsyncFlag),
    request_body = HostCreate,
    responses((status = 200, description = "The host", body = Envelope<Mutation<HostView>>)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<HostCreate>,
) -> ApiResult<Mutation<HostView>> {
    rules::check_name("name", &body.name)?;
    service::check_engine(&state, &body.engine)?;
    let settings = service::checked(&state, &body.engine, body.config)?;
    let task_state = state.clone();
    let task = service::task("server-create", &body.name);
    let work = async move { service::create(&task_state, &body.name, &body.engine, &settings) };
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

#[utoipa::path(
    put,
    path = "/api/server/update/{hs_name}",
    tag = "server",
    summary = "Change a host: `config` is merged into the stored one",
    params(HostPath, AsyncFlag),
    request_body = HostUpdate,
    responses((status = 200, description = "The host", body = Envelope<Mutation<HostView>>)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    ApiPath(HostPath { hs_name }): ApiPath<HostPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<HostUpdate>,
) -> ApiResult<Mutation<HostView>> {
    let host = service::get(&state, &hs_name)?;
    if let Some(engine) = &body.engine {
        service::check_engine(&state, engine)?;
    }
    let settings = service::merged(&state, &host, body.config)?;
    let task_state = state.clone();
    let task = service::task("server-update", &hs_name);
    let work =
        async move { service::update(&task_state, &hs_name, body.engine.as_deref(), &settings) };
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even while the host has VMs.
    #[serde(default)]
    force: bool,
    /// Answer at once with `{task_id, state}`; the task goes on.
    #[serde(default, rename = "async")]
    detach: bool,
}

#[utoipa::path(
    delete,
    path = "/api/server/delete/{hs_name}",
    tag = "server",
    summary = "Remove a host",
    description = "Refused (409) while the host has VMs, unless `?force=true`.",
    params(HostPath, DeleteQuery),
    responses((status = 200, description = "null", body = Envelope<Removal>)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(HostPath { hs_name }): ApiPath<HostPath>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> ApiResult<Removal> {
    service::get(&state, &hs_name)?;
    let task_state = state.clone();
    let task = service::task("server-delete", &hs_name);
    let work = async move { service::delete(&task_state, &hs_name, query.force).await };
    Ok(ApiOk(
        state.tasks.run(task, query.detach, work).await?.removal(),
    ))
}

#[utoipa::path(
    post,
    path = "/api/server/powers/{hs_name}",
    tag = "server",
    summary = "Enable or disable a host in the panel (not a reboot)",
    description = "A disabled host answers 403 to its VMs' calls.",
    params(HostPath, AsyncFlag),
    request_body = HostPowers,
    responses((status = 200, description = "The host", body = Envelope<Mutation<HostView>>)),
    security(("bearer" = []))
)]
pub async fn powers(
    State(state): State<Arc<AppState>>,
    ApiPath(HostPath { hs_name }): ApiPath<HostPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<HostPowers>,
) -> ApiResult<Mutation<HostView>> {
    service::get(&state, &hs_name)?;
    let task_state = state.clone();
    let task = service::task("server-powers", &hs_name);
    let work = async move { service::set_enabled(&task_state, &hs_name, body.enable) };
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Ask the engine now instead of answering the stored status.
    #[serde(default)]
    refresh: bool,
}

#[utoipa::path(
    get,
    path = "/api/server/status/{hs_name}",
    tag = "server",
    summary = "A host's figures, cached or fresh",
    params(HostPath, StatusQuery),
    responses((status = 200, description = "Success", body = Envelope<HostStatusAnswer>)),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> ApiResult<HostStatusAnswer> {
    let answer = service::status(&state, &path.hs_name, query.refresh).await?;
    Ok(ApiOk(answer))
}
