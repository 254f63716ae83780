//! The 7 host endpoints.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag};
use super::openapi as doc;
use crate::service::hosts as service;
use crate::service::validate::check_name;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/server/listup",
    tag = "server",
    summary = "Every host, by name",
    responses((status = 200, description = "Success", body = doc::Answer<std::collections::BTreeMap<String, doc::HostView>>)),
    security(("bearer" = []))
)]
pub async fn listup(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    Ok(ApiOk(service::listup(&state)?))
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
    params(doc::HostPath, DetailQuery),
    responses((status = 200, description = "Success", body = doc::Answer<doc::HostDetail>)),
    security(("bearer" = []))
)]
pub async fn detail(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<DetailQuery>,
) -> ApiResult<Value> {
    Ok(ApiOk(service::detail(&state, &hs_name, query.status)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateBody {
    /// The host's name, `[A-Za-z0-9_.-]{1,64}`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "h1")]
    name: String,
    /// The engine (a configured plugin's name).
    #[serde(default, rename = "type")]
    #[schema(example = "libvirt")]
    engine: String,
    #[serde(default)]
    #[schema(value_type = doc::HostConfigInput)]
    config: Map<String, Value>,
}

#[utoipa::path(
    post,
    path = "/api/server/create",
    tag = "server",
    summary = "Add a host",
    description = "A name taken is 409; an unknown engine (`type`) is 400.",
    params(doc::AsyncParam),
    request_body = CreateBody,
    responses((status = 200, description = "The host", body = doc::Answer<doc::Mutation<doc::HostView>>)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Value> {
    check_name("name", &body.name)?;
    service::check_engine(&state, &body.engine)?;
    let settings = service::HostSettings::parse(body.config)?;
    let task_state = state.clone();
    let name = body.name.clone();
    state
        .tasks
        .run(
            service::task("server-create", &name),
            flag.detach,
            async move { service::create(&task_state, &body.name, &body.engine, &settings) },
        )
        .await?
        .into_answer()
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateBody {
    /// Merged into the stored config.
    #[serde(default)]
    #[schema(value_type = doc::HostConfigInput)]
    config: Map<String, Value>,
    /// A new engine.
    #[serde(default, rename = "type")]
    engine: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/server/update/{hs_name}",
    tag = "server",
    summary = "Change a host: `config` is merged into the stored one",
    params(doc::HostPath, doc::AsyncParam),
    request_body = UpdateBody,
    responses((status = 200, description = "The host", body = doc::Answer<doc::Mutation<doc::HostView>>)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Value> {
    let host = service::get(&state, &hs_name)?;
    if let Some(engine) = &body.engine {
        service::check_engine(&state, engine)?;
    }
    let settings = host.settings.merged(body.config)?;
    let task_state = state.clone();
    state
        .tasks
        .run(service::task("server-update", &hs_name), flag.detach, async move {
            service::update(&task_state, &hs_name, body.engine.as_deref(), &settings)
        })
        .await?
        .into_answer()
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
    params(doc::HostPath, DeleteQuery),
    responses((status = 200, description = "null", body = doc::Answer<doc::Removal>)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> ApiResult<Value> {
    service::get(&state, &hs_name)?;
    let task_state = state.clone();
    let name = hs_name.clone();
    state
        .tasks
        .run(
            service::task("server-delete", &hs_name),
            query.detach,
            async move { service::delete(&task_state, &name, query.force) },
        )
        .await?
        .into_answer()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = HostPowersBody)]
pub struct PowersBody {
    enable: bool,
}

#[utoipa::path(
    post,
    path = "/api/server/powers/{hs_name}",
    tag = "server",
    summary = "Enable or disable a host in the panel (not a reboot)",
    description = "A disabled host answers 403 to its VMs' calls.",
    params(doc::HostPath, doc::AsyncParam),
    request_body = PowersBody,
    responses((status = 200, description = "The host", body = doc::Answer<doc::Mutation<doc::HostView>>)),
    security(("bearer" = []))
)]
pub async fn powers(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<PowersBody>,
) -> ApiResult<Value> {
    service::get(&state, &hs_name)?;
    let task_state = state.clone();
    let name = hs_name.clone();
    state
        .tasks
        .run(
            service::task("server-powers", &hs_name),
            flag.detach,
            async move { service::set_enabled(&task_state, &name, body.enable) },
        )
        .await?
        .into_answer()
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
    params(doc::HostPath, StatusQuery),
    responses((status = 200, description = "Success", body = doc::Answer<doc::HostStatusAnswer>)),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> ApiResult<Value> {
    Ok(ApiOk(
        service::status(&state, &hs_name, query.refresh).await?,
    ))
}
