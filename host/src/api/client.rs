//! The 19 VM endpoints (and the original server's aliases).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag};
use crate::error::ApiError;
use crate::service::network::{self, IpAddBody, NatAddBody, ProxyAddBody};
use crate::service::{hosts, vms};
use crate::state::AppState;

pub async fn listup(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
) -> ApiResult<Value> {
    Ok(ApiOk(vms::listup(&state, &hs_name).await?))
}

pub async fn detail(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    Ok(ApiOk(vms::detail(&state, &hs_name, &vm_uuid).await?))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let settings = vms::VmSettings::parse(body)?;
    let task = vms::task("create", &hs_name, &settings.vm_uuid);
    let task_state = state.clone();
    state
        .tasks
        .run(task, flag.detach, vms::create(task_state, host, settings))
        .await?
        .into_answer()
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("update", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            vms::update(state.clone(), host, record, body),
        )
        .await?
        .into_answer()
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("delete", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(task, flag.detach, vms::delete(state.clone(), host, record))
        .await?
        .into_answer()
}

#[derive(Deserialize)]
pub struct PowersBody {
    #[serde(default)]
    action: String,
}

pub async fn powers(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<PowersBody>,
) -> ApiResult<Value> {
    let action = vms::parse_action(&body.action).ok_or_else(|| {
        ApiError::bad_field(
            "action",
            format!(
                "{:?} must be one of start, stop, hard_stop, reset, hard_reset, pause, resume \
                 (or S_START, S_CLOSE, H_CLOSE, S_RESET, H_RESET, A_PAUSE, S_PAUSE, A_WAKED)",
                body.action
            ),
        )
    })?;
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task(
        &format!("powers:{}", body.action),
        &hs_name,
        &record.vm_uuid,
    );
    state
        .tasks
        .run(
            task,
            flag.detach,
            vms::power(state.clone(), host, record, action),
        )
        .await?
        .into_answer()
}

#[derive(Deserialize)]
pub struct PasswordBody {
    #[serde(default, alias = "os_pass")]
    password: String,
}

pub async fn password(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<PasswordBody>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("password", &hs_name, &record.vm_uuid);
    let task_state = state.clone();
    state
        .tasks
        .run(task, flag.detach, async move {
            vms::set_password(&task_state, &record, &body.password)
        })
        .await?
        .into_answer()
}

#[derive(Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    limit: u32,
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(
        vms::status(&state, &host, &record, query.limit).await?,
    ))
}

pub async fn vncons(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let config = host.engine_config();
    let key = record.vm_uuid.clone();
    let endpoint = state
        .plugins
        .call(
            &host.record.engine,
            host.scope(),
            "vm-console",
            move |engine, store| {
                Box::pin(async move { engine.call_vm_console(store, &config, &key).await })
            },
        )
        .await?;
    let ticket = state.consoles.issue(&hs_name, &record.vm_uuid, endpoint);
    let base = state.public_base_url();
    Ok(ApiOk(json!({
        "url": format!("{base}/console/?ticket={ticket}"),
        "expires_in": state.consoles.lifetime().as_secs(),
    })))
}

#[derive(Deserialize)]
pub struct ScanBody {
    #[serde(default)]
    prefix: Option<String>,
}

pub async fn scaner(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<ScanBody>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let prefix = body
        .prefix
        .unwrap_or_else(|| host.settings.filter_name.clone());
    if !prefix.is_empty() {
        crate::service::validate::check_name("prefix", &prefix)?;
    }
    let task = vms::task("scaner", &hs_name, "");
    state
        .tasks
        .run(task, flag.detach, vms::scan(state.clone(), host, prefix))
        .await?
        .into_answer()
}

pub async fn natget(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(network::natget(&state, &record)?))
}

pub async fn natadd(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<NatAddBody>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let request = network::check_nat(&host, body)?;
    let task = vms::task("natadd", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            network::natadd(state.clone(), host, record, request),
        )
        .await?
        .into_answer()
}

pub async fn natdel(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid, rule_index)): ApiPath<(String, String, usize)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("natdel", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            network::natdel(state.clone(), host, record, rule_index),
        )
        .await?
        .into_answer()
}

pub async fn iplist(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(network::iplist(&record)?))
}

pub async fn ipadd(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<IpAddBody>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("ipadd_", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            network::ipadd(state.clone(), host, record, body),
        )
        .await?
        .into_answer()
}

pub async fn ipdel(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid, ip_index)): ApiPath<(String, String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("ipdel_", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            network::ipdel(state.clone(), host, record, ip_index),
        )
        .await?
        .into_answer()
}

pub async fn pxyget(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(network::pxyget(&state, &record)?))
}

pub async fn pxyadd(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<ProxyAddBody>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let request = network::check_proxy(&host, &record, body)?;
    let task = vms::task("pxyadd", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            network::pxyadd(state.clone(), host, record, request),
        )
        .await?
        .into_answer()
}

pub async fn pxydel(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid, proxy_index)): ApiPath<(String, String, usize)>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Value> {
    let host = hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    let task = vms::task("pxydel", &hs_name, &record.vm_uuid);
    state
        .tasks
        .run(
            task,
            flag.detach,
            network::pxydel(state.clone(), host, record, proxy_index),
        )
        .await?
        .into_answer()
}

#[derive(Deserialize)]
pub struct UploadQuery {
    #[serde(default)]
    nic: String,
    #[serde(default)]
    key: String,
}

/// Not behind the admin token: authenticated by the VM's upload key.
pub async fn upload(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    ApiJson(sample): ApiJson<Value>,
) -> ApiResult<Value> {
    let key = headers
        .get("x-upload-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .unwrap_or(query.key);
    if key.is_empty() {
        return Err(ApiError::Unauthorized(
            "missing X-Upload-Key header (or key query)".to_owned(),
        ));
    }
    Ok(ApiOk(network::upload(&state, &key, &query.nic, sample)?))
}
