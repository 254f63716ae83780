//! The 19 VM endpoints (and the original server's aliases).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::envelope::{ApiOk, ApiResult, EncodedOk};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag};
use super::openapi as doc;
use crate::error::ApiError;
use crate::service::network::{self, IpAddBody, NatAddBody, ProxyAddBody};
use crate::service::{hosts, listup, vms};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/client/listup/{hs_name}",
    tag = "client",
    summary = "A host's VMs, by key, with their latest sample",
    params(doc::HostPath),
    responses((status = 200, description = "Success", body = doc::Answer<std::collections::BTreeMap<String, doc::VmListItem>>)),
    security(("bearer" = []))
)]
pub async fn listup(
    State(state): State<Arc<AppState>>,
    ApiPath(hs_name): ApiPath<String>,
) -> Result<EncodedOk, ApiError> {
    listup::listup(&state, &hs_name).await
}

#[utoipa::path(
    get,
    path = "/api/client/detail/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "One VM, with its upload key and samples",
    params(doc::VmPath),
    responses((status = 200, description = "Success", body = doc::Answer<doc::VmDetail>)),
    security(("bearer" = []))
)]
pub async fn detail(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    Ok(ApiOk(vms::detail(&state, &hs_name, &vm_uuid).await?))
}

#[utoipa::path(
    post,
    path = "/api/client/create/{hs_name}",
    tag = "client",
    summary = "Create a VM",
    description = "`vm_uuid` is required. A key taken, or the host at `limits_nums`, is 409.",
    params(doc::HostPath, doc::AsyncParam),
    request_body = doc::VmConfigInput,
    responses((status = 200, description = "The VM", body = doc::Answer<doc::Mutation<doc::VmView>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    put,
    path = "/api/client/update/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Change a VM: absent fields keep their value",
    params(doc::VmPath, doc::AsyncParam),
    request_body = doc::VmConfigInput,
    responses((status = 200, description = "The VM", body = doc::Answer<doc::Mutation<doc::VmView>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    delete,
    path = "/api/client/delete/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Delete a VM with its volumes, NAT rules, proxies and DHCP bindings",
    params(doc::VmPath, doc::AsyncParam),
    responses((status = 200, description = "null", body = doc::Answer<doc::Removal>)),
    security(("bearer" = []))
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = VmPowersBody)]
pub struct PowersBody {
    #[serde(default)]
    #[schema(value_type = doc::PowerAction)]
    action: String,
}

#[utoipa::path(
    post,
    path = "/api/client/powers/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Start, stop, reset, pause or resume a VM",
    params(doc::VmPath, doc::AsyncParam),
    request_body = PowersBody,
    responses((status = 200, description = "The power state after the action", body = doc::Answer<doc::Mutation<doc::PowerAnswer>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    post,
    path = "/api/client/password/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Set a VM's `os_pass` (the original server's endpoint)",
    params(doc::VmPath, doc::AsyncParam),
    request_body = doc::PasswordInput,
    responses((status = 200, description = "Success", body = doc::Answer<doc::Mutation<doc::PasswordAnswer>>)),
    security(("bearer" = []))
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Only the last `limit` minutes (0 or absent: all kept).
    #[serde(default)]
    limit: u32,
}

#[utoipa::path(
    get,
    path = "/api/client/status/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's power state and sample history",
    params(doc::VmPath, StatusQuery),
    responses((status = 200, description = "Success", body = doc::Answer<doc::VmStatusAnswer>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/client/vncons/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A one-time URL of a VM's web console",
    params(doc::VmPath),
    responses((status = 200, description = "Success", body = doc::Answer<doc::ConsoleTicket>)),
    security(("bearer" = []))
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ScanBody {
    /// Name prefix of the domains to import (default: the host's `filter_name`).
    #[serde(default)]
    prefix: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/client/scaner/{hs_name}",
    tag = "client",
    summary = "Import the host's domains the panel lacks",
    params(doc::HostPath, doc::AsyncParam),
    request_body = ScanBody,
    responses((status = 200, description = "Success", body = doc::Answer<doc::Mutation<doc::ScanAnswer>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/client/natget/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's NAT port forwards",
    params(doc::VmPath),
    responses((status = 200, description = "Success", body = doc::Answer<Vec<doc::NatRule>>)),
    security(("bearer" = []))
)]
pub async fn natget(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(network::natget(&state, &record)?))
}

#[utoipa::path(
    post,
    path = "/api/client/natadd/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Add a NAT port forward",
    description = "A port taken, or the VM at `nat_num`, is 409; a port outside the host range is 400.",
    params(doc::VmPath, doc::AsyncParam),
    request_body = doc::NatAddInput,
    responses((status = 200, description = "The rule", body = doc::Answer<doc::Mutation<doc::NatRule>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    delete,
    path = "/api/client/natdel/{hs_name}/{vm_uuid}/{rule_index}",
    tag = "client",
    summary = "Remove a NAT port forward",
    params(doc::VmPath, ("rule_index" = u64, Path, description = "Position in natget (0-based)"), doc::AsyncParam),
    responses((status = 200, description = "null", body = doc::Answer<doc::Removal>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/client/iplist/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's NICs",
    params(doc::VmPath),
    responses((status = 200, description = "Success", body = doc::Answer<Vec<doc::NicView>>)),
    security(("bearer" = []))
)]
pub async fn iplist(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(network::iplist(&record)?))
}

#[utoipa::path(
    post,
    path = "/api/client/ipadd_/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Add a NIC",
    description = "An address taken, or the pool exhausted, is 409.",
    params(doc::VmPath, doc::AsyncParam),
    request_body = doc::IpAddInput,
    responses((status = 200, description = "The NIC", body = doc::Answer<doc::Mutation<doc::NicView>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    delete,
    path = "/api/client/ipdel_/{hs_name}/{vm_uuid}/{ip_index}",
    tag = "client",
    summary = "Remove a NIC",
    params(doc::VmPath, ("ip_index" = String, Path, description = "Position in iplist (0-based), or the NIC name", example = "0"), doc::AsyncParam),
    responses((status = 200, description = "null", body = doc::Answer<doc::Removal>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    get,
    path = "/api/client/pxyget/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's reverse-proxy entries",
    params(doc::VmPath),
    responses((status = 200, description = "Success", body = doc::Answer<Vec<doc::ProxyView>>)),
    security(("bearer" = []))
)]
pub async fn pxyget(
    State(state): State<Arc<AppState>>,
    ApiPath((hs_name, vm_uuid)): ApiPath<(String, String)>,
) -> ApiResult<Value> {
    hosts::get_enabled(&state, &hs_name)?;
    let record = vms::find(&state, &hs_name, &vm_uuid)?;
    Ok(ApiOk(network::pxyget(&state, &record)?))
}

#[utoipa::path(
    post,
    path = "/api/client/pxyadd/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Add a reverse-proxy entry",
    description = "A domain taken is 409; an invalid domain is 400.",
    params(doc::VmPath, doc::AsyncParam),
    request_body = doc::ProxyAddInput,
    responses((status = 200, description = "The entry", body = doc::Answer<doc::Mutation<doc::ProxyView>>)),
    security(("bearer" = []))
)]
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

#[utoipa::path(
    delete,
    path = "/api/client/pxydel/{hs_name}/{vm_uuid}/{proxy_index}",
    tag = "client",
    summary = "Remove a reverse-proxy entry",
    params(doc::VmPath, ("proxy_index" = u64, Path, description = "Position in pxyget (0-based)"), doc::AsyncParam),
    responses((status = 200, description = "null", body = doc::Answer<doc::Removal>)),
    security(("bearer" = []))
)]
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
#[utoipa::path(
    post,
    path = "/api/client/upload",
    tag = "client",
    summary = "A VM reports a status sample (with its upload key, not the admin token)",
    params(("nic" = Option<String>, Query, description = "MAC of one of the VM's NICs", example = "52:54:00:12:34:56")),
    request_body = doc::SampleInput,
    responses((status = 200, description = "Success", body = doc::Answer<doc::UploadAnswer>)),
    security(("upload_key" = []), ("upload_key_query" = []))
)]
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
