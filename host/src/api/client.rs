//! The 19 VM endpoints, the OS image list, and the original server's aliases.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, AsyncFlag, HostPath, VmPath};
use crate::error::ApiError;
use crate::model::{
    ConsoleUrl, EncodedAnswer, Envelope, IpAddInput, Mutation, NatAddInput, NatRule, NicView,
    OsImageView, PasswordAnswer, PasswordInput, Patch, PowerAnswer, ProxyAddInput, ProxyView,
    Removal, Sample, ScanAnswer, ScanInput, TempLoginQuery, TempTokenAnswer, UploadAnswer,
    VmDetail, VmListItem, VmPowers, VmSettings, VmStatusAnswer, VmView,
};
use crate::service::{hosts, listup, network, panel, provision, signon, vms};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/client/listup/{hs_name}",
    tag = "client",
    summary = "A host's VMs, by key, with their latest sample",
    params(HostPath),
    responses((status = 200, description = "Success", body = Envelope<BTreeMap<String, VmListItem>>)),
    security(("bearer" = []))
)]
pub async fn listup(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
) -> Result<EncodedAnswer, ApiError> {
    Ok(listup::listup(&state, &path.hs_name).await?)
}

#[utoipa::path(
    get,
    path = "/api/client/detail/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "One VM, with its upload key and samples",
    params(VmPath),
    responses((status = 200, description = "Success", body = Envelope<VmDetail>)),
    security(("bearer" = []))
)]
pub async fn detail(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
) -> ApiResult<VmDetail> {
    let vm = path.resolve(&state)?;
    Ok(ApiOk(vms::detail(&state, &vm).await?))
}

#[utoipa::path(
    post,
    path = "/api/client/create/{hs_name}",
    tag = "client",
    summary = "Create a VM",
    description = "`vm_uuid` is required. A key taken, or the host at `limits_nums`, is 409. \
                   With `plan`, the host's plan's values come first and the body's over them.",
    params(HostPath, AsyncFlag),
    request_body = VmSettings,
    responses((status = 200, description = "The VM", body = Envelope<Mutation<VmView>>)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<Patch>,
) -> ApiResult<Mutation<VmView>> {
    let host = hosts::get_enabled(&state, &path.hs_name)?;
    let settings = vms::checked(panel::create_settings(&state, &host, body)?)?;
    let task = vms::task("create", &host.name, &settings.vm_uuid);
    let work = vms::create(state.clone(), host, settings);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

#[utoipa::path(
    put,
    path = "/api/client/update/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Change a VM: absent fields keep their value; a new os_name reinstalls",
    params(VmPath, UpdateQuery),
    request_body = VmSettings,
    responses((status = 200, description = "The VM", body = Envelope<Mutation<VmView>>)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(query): ApiQuery<UpdateQuery>,
    ApiJson(body): ApiJson<Patch>,
) -> ApiResult<Mutation<VmView>> {
    let vm = path.resolve(&state)?;
    let settings = vms::merged(&vm, body)?;
    let task = vm.task("update");
    let work = vms::update(state.clone(), vm, settings, query.reinstall);
    Ok(ApiOk(
        state.tasks.run(task, query.detach, work).await?.answer(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UpdateQuery {
    /// Answer at once with `{task_id, state}`; the task goes on.
    #[serde(default, rename = "async")]
    #[param(required = false)]
    detach: bool,
    /// Reinstall the system disk from the image of `os_name` even when it
    /// did not change (data disks stay).
    #[serde(default)]
    #[param(required = false)]
    reinstall: bool,
}

#[utoipa::path(
    delete,
    path = "/api/client/delete/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Delete a VM with its volumes, NAT rules, proxies and DHCP bindings",
    params(VmPath, AsyncFlag),
    responses((status = 200, description = "null", body = Envelope<Removal>)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Removal> {
    let vm = path.resolve(&state)?;
    let task = vm.task("delete");
    let work = vms::delete(state.clone(), vm);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.removal(),
    ))
}

#[utoipa::path(
    post,
    path = "/api/client/powers/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Start, stop, reset, pause or resume a VM",
    params(VmPath, AsyncFlag),
    request_body = VmPowers,
    responses((status = 200, description = "The power state after the action", body = Envelope<Mutation<PowerAnswer>>)),
    security(("bearer" = []))
)]
pub async fn powers(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<VmPowers>,
) -> ApiResult<Mutation<PowerAnswer>> {
    let vm = path.resolve(&state)?;
    let task = vm.task(&format!("powers:{}", body.action.as_str()));
    let work = vms::power(state.clone(), vm, body.action);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

#[utoipa::path(
    post,
    path = "/api/client/password/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Set a VM's `os_pass` (the original server's endpoint)",
    params(VmPath, AsyncFlag),
    request_body = PasswordInput,
    responses((status = 200, description = "Success", body = Envelope<Mutation<PasswordAnswer>>)),
    security(("bearer" = []))
)]
pub async fn password(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<PasswordInput>,
) -> ApiResult<Mutation<PasswordAnswer>> {
    let vm = path.resolve(&state)?;
    let task_state = state.clone();
    let task = vm.task("password");
    let work = async move { provision::set_password(&task_state, &vm, &body.password).await };
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
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
    params(VmPath, StatusQuery),
    responses((status = 200, description = "Success", body = Envelope<VmStatusAnswer>)),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> ApiResult<VmStatusAnswer> {
    let vm = path.resolve(&state)?;
    Ok(ApiOk(vms::status(&state, &vm, query.limit).await?))
}

#[utoipa::path(
    get,
    path = "/api/client/vncons/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A one-time URL of a VM's web console",
    params(VmPath),
    responses((status = 200, description = "Success", body = Envelope<ConsoleUrl>)),
    security(("bearer" = []))
)]
pub async fn vncons(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
) -> ApiResult<ConsoleUrl> {
    let vm = path.resolve(&state)?;
    Ok(ApiOk(vms::console_url(&state, &vm).await?))
}

#[utoipa::path(
    post,
    path = "/api/client/scaner/{hs_name}",
    tag = "client",
    summary = "Import the host's domains the panel lacks",
    params(HostPath, AsyncFlag),
    request_body = ScanInput,
    responses((status = 200, description = "Success", body = Envelope<Mutation<ScanAnswer>>)),
    security(("bearer" = []))
)]
pub async fn scaner(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<ScanInput>,
) -> ApiResult<Mutation<ScanAnswer>> {
    let host = hosts::get_enabled(&state, &path.hs_name)?;
    let prefix = vms::scan_prefix(&host, body.prefix)?;
    let task = vms::task("scaner", &host.name, "");
    let work = vms::scan(state.clone(), host, prefix);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/client/os-images/{hs_name}",
    tag = "client",
    summary = "A host's OS images: its system_maps entries that its image storage holds",
    description = "What a VM's `os_name` may be on this host. An entry whose image file is missing \
        is left out (and logged).",
    params(HostPath),
    responses((status = 200, description = "Success", body = Envelope<Vec<OsImageView>>)),
    security(("bearer" = []))
)]
pub async fn os_images(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
) -> ApiResult<Vec<OsImageView>> {
    let host = hosts::get(&state, &path.hs_name)?;
    Ok(ApiOk(provision::os_images(&state, &host).await?))
}

#[utoipa::path(
    get,
    path = "/api/client/natget/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's NAT port forwards",
    params(VmPath),
    responses((status = 200, description = "Success", body = Envelope<Vec<NatRule>>)),
    security(("bearer" = []))
)]
pub async fn natget(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
) -> ApiResult<Vec<NatRule>> {
    let vm = path.resolve(&state)?;
    Ok(ApiOk(network::natget(&state, &vm)?))
}

#[utoipa::path(
    post,
    path = "/api/client/natadd/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Add a NAT port forward",
    description = "A port taken, or the VM at `nat_num`, is 409; a port outside the host range is 400.",
    params(VmPath, AsyncFlag),
    request_body = NatAddInput,
    responses((status = 200, description = "The rule", body = Envelope<Mutation<NatRule>>)),
    security(("bearer" = []))
)]
pub async fn natadd(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<NatAddInput>,
) -> ApiResult<Mutation<NatRule>> {
    let vm = path.resolve(&state)?;
    let request = network::check_nat(&vm, body)?;
    let task = vm.task("natadd");
    let work = network::natadd(state.clone(), vm, request);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

/// `{hs_name}/{vm_uuid}/{rule_index}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NatRulePath {
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "local")]
    hs_name: String,
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "vm1")]
    vm_uuid: String,
    /// Position in natget (0-based).
    rule_index: usize,
}

#[utoipa::path(
    delete,
    path = "/api/client/natdel/{hs_name}/{vm_uuid}/{rule_index}",
    tag = "client",
    summary = "Remove a NAT port forward",
    params(NatRulePath, AsyncFlag),
    responses((status = 200, description = "null", body = Envelope<Removal>)),
    security(("bearer" = []))
)]
pub async fn natdel(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<NatRulePath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Removal> {
    let vm = vms::vm_ref(&state, &path.hs_name, &path.vm_uuid)?;
    let task = vm.task("natdel");
    let work = network::natdel(state.clone(), vm, path.rule_index);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.removal(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/client/iplist/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's NICs",
    params(VmPath),
    responses((status = 200, description = "Success", body = Envelope<Vec<NicView>>)),
    security(("bearer" = []))
)]
pub async fn iplist(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
) -> ApiResult<Vec<NicView>> {
    Ok(ApiOk(network::iplist(&path.resolve(&state)?)))
}

#[utoipa::path(
    post,
    path = "/api/client/ipadd_/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Add a NIC",
    description = "An address taken, or the pool exhausted, is 409.",
    params(VmPath, AsyncFlag),
    request_body = IpAddInput,
    responses((status = 200, description = "The NIC", body = Envelope<Mutation<NicView>>)),
    security(("bearer" = []))
)]
pub async fn ipadd(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<IpAddInput>,
) -> ApiResult<Mutation<NicView>> {
    let vm = path.resolve(&state)?;
    let task = vm.task("ipadd_");
    let work = network::ipadd(state.clone(), vm, body);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

/// `{hs_name}/{vm_uuid}/{ip_index}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NicPath {
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "local")]
    hs_name: String,
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "vm1")]
    vm_uuid: String,
    /// Position in iplist (0-based), or the NIC name.
    #[param(example = "0")]
    ip_index: String,
}

#[utoipa::path(
    delete,
    path = "/api/client/ipdel_/{hs_name}/{vm_uuid}/{ip_index}",
    tag = "client",
    summary = "Remove a NIC",
    params(NicPath, AsyncFlag),
    responses((status = 200, description = "null", body = Envelope<Removal>)),
    security(("bearer" = []))
)]
pub async fn ipdel(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<NicPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Removal> {
    let vm = vms::vm_ref(&state, &path.hs_name, &path.vm_uuid)?;
    let task = vm.task("ipdel_");
    let work = network::ipdel(state.clone(), vm, path.ip_index);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.removal(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/client/pxyget/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A VM's reverse-proxy entries",
    params(VmPath),
    responses((status = 200, description = "Success", body = Envelope<Vec<ProxyView>>)),
    security(("bearer" = []))
)]
pub async fn pxyget(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
) -> ApiResult<Vec<ProxyView>> {
    let vm = path.resolve(&state)?;
    Ok(ApiOk(network::pxyget(&state, &vm)?))
}

#[utoipa::path(
    post,
    path = "/api/client/pxyadd/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "Add a reverse-proxy entry",
    description = "A domain taken is 409; an invalid domain is 400.",
    params(VmPath, AsyncFlag),
    request_body = ProxyAddInput,
    responses((status = 200, description = "The entry", body = Envelope<Mutation<ProxyView>>)),
    security(("bearer" = []))
)]
pub async fn pxyadd(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
    ApiJson(body): ApiJson<ProxyAddInput>,
) -> ApiResult<Mutation<ProxyView>> {
    let vm = path.resolve(&state)?;
    let request = network::check_proxy(&vm, body)?;
    let task = vm.task("pxyadd");
    let work = network::pxyadd(state.clone(), vm, request);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.answer(),
    ))
}

/// `{hs_name}/{vm_uuid}/{proxy_index}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProxyPath {
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "local")]
    hs_name: String,
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "vm1")]
    vm_uuid: String,
    /// Position in pxyget (0-based).
    proxy_index: usize,
}

#[utoipa::path(
    delete,
    path = "/api/client/pxydel/{hs_name}/{vm_uuid}/{proxy_index}",
    tag = "client",
    summary = "Remove a reverse-proxy entry",
    params(ProxyPath, AsyncFlag),
    responses((status = 200, description = "null", body = Envelope<Removal>)),
    security(("bearer" = []))
)]
pub async fn pxydel(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<ProxyPath>,
    ApiQuery(flag): ApiQuery<AsyncFlag>,
) -> ApiResult<Removal> {
    let vm = vms::vm_ref(&state, &path.hs_name, &path.vm_uuid)?;
    let task = vm.task("pxydel");
    let work = network::pxydel(state.clone(), vm, path.proxy_index);
    Ok(ApiOk(
        state.tasks.run(task, flag.detach, work).await?.removal(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// MAC of one of the VM's NICs.
    #[serde(default)]
    #[param(example = "52:54:00:12:34:56")]
    nic: String,
    /// The upload key, for clients that cannot set the header.
    #[serde(default)]
    key: String,
}

/// Not behind the admin token: authenticated by the VM's upload key.
#[utoipa::path(
    post,
    path = "/api/client/upload",
    tag = "client",
    summary = "A VM reports a status sample (with its upload key, not the admin token)",
    params(UploadQuery),
    request_body = Sample,
    responses((status = 200, description = "Success", body = Envelope<UploadAnswer>)),
    security(("upload_key" = []), ("upload_key_query" = []))
)]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    headers: HeaderMap,
    ApiJson(sample): ApiJson<Sample>,
) -> ApiResult<UploadAnswer> {
    let key = headers
        .get("x-upload-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or(&query.key);
    Ok(ApiOk(network::upload(&state, key, &query.nic, sample)?))
}

#[utoipa::path(
    get,
    path = "/api/client/temptoken/{hs_name}/{vm_uuid}",
    tag = "client",
    summary = "A single sign-on token for the VM's customer (single use, short-lived)",
    description = "The panel sends its customer's browser to `url` (`templogin?token=…`), which \
                   opens a session reaching this VM's customer routes only: power, console, NAT, \
                   proxy, IP list, password, detail and status.",
    params(VmPath),
    responses((status = 200, description = "Success", body = Envelope<TempTokenAnswer>)),
    security(("bearer" = []))
)]
pub async fn temptoken(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<VmPath>,
) -> ApiResult<TempTokenAnswer> {
    let vm = path.resolve(&state)?;
    Ok(ApiOk(signon::temp_token(&state, &vm)?))
}

#[utoipa::path(
    get,
    path = "/api/client/templogin",
    tag = "client",
    summary = "Sign a customer's browser in with a temptoken (no Bearer token)",
    description = "302 to the VM's page of the web panel (`/#/vm/<hs>/<vm>`), setting the session cookie \
                   `openidcs_session` (HttpOnly, Secure, SameSite=Strict). A used, expired or \
                   unknown token is 401.",
    params(TempLoginQuery),
    responses((status = 302, description = "Signed in: to the VM's page")),
)]
pub async fn templogin(
    State(state): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<TempLoginQuery>,
) -> Result<Response, ApiError> {
    let signed_in = signon::temp_login(&state, &query.token)?;
    let cookie = super::web::session_cookie(&signed_in.session, signed_in.max_age_s);
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, signed_in.location),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response())
}
