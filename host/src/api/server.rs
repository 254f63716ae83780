//! The 7 host endpoints.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag};
use crate::service::hosts as service;
use crate::service::validate::check_name;
use crate::state::AppState;

pub async fn listup(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    Ok(ApiOk(service::listup(&state)?))
}

#[derive(Deserialize)]
pub struct DetailQuery {
    #[serde(default)]
    status: bool,
}

pub async fn detail(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<DetailQuery>,
) -> ApiResult<Value> {
    Ok(ApiOk(service::detail(&state, &hs_name, query.status)?))
}

#[derive(Deserialize)]
pub struct CreateBody {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    engine: String,
    #[serde(default)]
    config: Map<String, Value>,
}

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

#[derive(Deserialize)]
pub struct UpdateBody {
    #[serde(default)]
    config: Map<String, Value>,
    #[serde(default, rename = "type")]
    engine: Option<String>,
}

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

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
    #[serde(default, rename = "async")]
    detach: bool,
}

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

#[derive(Deserialize)]
pub struct PowersBody {
    enable: bool,
}

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

#[derive(Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    refresh: bool,
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> ApiResult<Value> {
    Ok(ApiOk(
        service::status(&state, &hs_name, query.refresh).await?,
    ))
}
