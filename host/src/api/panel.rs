//! The billing panels' routes beyond the 35 (`../shared/spec/billing-panels.md`):
//! reads and changes by VM name (`hostname` = the VM's key, found on the
//! enabled hosts the token reaches), NAT and proxy availability, the free
//! NAT ports of a host.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;

use super::auth::Caller;
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiPath, ApiQuery, HostPath};
use std::collections::BTreeMap;

use crate::model::panel::{
    Availability, ByName, NamedStatus, NatCheckQuery, PasswordByName, PlanInput, PortsAnswer,
    PortsQuery, ProxyCheckQuery, TrafficAnswer, VmInfoAnswer,
};
use crate::model::{
    Envelope, Mutation, NatRule, NicView, PasswordAnswer, Patch, ProxyView, Removal,
};
use crate::service::vms::VmRef;
use crate::service::{hosts, network, panel, provision};
use crate::state::AppState;

/// The VM a by-name route names, within the caller's hosts.
fn named(
    state: &AppState,
    caller: &Caller,
    hostname: &str,
) -> Result<VmRef, crate::error::ApiError> {
    Ok(panel::vm_named(state, hostname, &caller.principal.hosts)?)
}

#[utoipa::path(
    get,
    path = "/api/status",
    tag = "panel",
    summary = "A VM's power state, by its key",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<NamedStatus>)),
    security(("bearer" = []))
)]
pub async fn status(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<NamedStatus> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(panel::status(&state, &vm).await?))
}

#[utoipa::path(
    get,
    path = "/api/info",
    tag = "panel",
    summary = "A VM with its plan, addresses and latest usage, by its key",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<VmInfoAnswer>)),
    security(("bearer" = []))
)]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<VmInfoAnswer> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(panel::info(&state, &vm).await?))
}

#[utoipa::path(
    get,
    path = "/api/traffic",
    tag = "panel",
    summary = "The traffic a VM used this month, bytes",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<TrafficAnswer>)),
    security(("bearer" = []))
)]
pub async fn traffic(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<TrafficAnswer> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(panel::traffic(&vm)))
}

#[utoipa::path(
    post,
    path = "/api/traffic/reset",
    tag = "panel",
    summary = "Zero a VM's traffic of this month",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<Mutation<TrafficAnswer>>)),
    security(("bearer" = []))
)]
pub async fn traffic_reset(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<Mutation<TrafficAnswer>> {
    let vm = named(&state, &caller, &query.hostname)?;
    let task = vm.task("traffic:reset");
    let task_state = state.clone();
    let work = async move { panel::traffic_reset(task_state, vm).await };
    Ok(ApiOk(state.tasks.run(task, false, work).await?.answer()))
}

#[utoipa::path(
    post,
    path = "/api/password",
    tag = "panel",
    summary = "Set a VM's OS password, by its key (as client/password does)",
    request_body = PasswordByName,
    responses((status = 200, description = "Success", body = Envelope<Mutation<PasswordAnswer>>)),
    security(("bearer" = []))
)]
pub async fn password(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<PasswordByName>,
) -> ApiResult<Mutation<PasswordAnswer>> {
    let vm = named(&state, &caller, &body.hostname)?;
    let task = vm.task("password");
    let task_state = state.clone();
    let work = async move { provision::set_password(&task_state, &vm, &body.password).await };
    Ok(ApiOk(state.tasks.run(task, false, work).await?.answer()))
}

#[utoipa::path(
    get,
    path = "/api/natlist",
    tag = "panel",
    summary = "A VM's port forwards, by its key (as natget)",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<Vec<NatRule>>)),
    security(("bearer" = []))
)]
pub async fn natlist(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<Vec<NatRule>> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(network::natget(&state, &vm)?))
}

#[utoipa::path(
    get,
    path = "/api/proxy/list",
    tag = "panel",
    summary = "A VM's proxy sites, by its key (as pxyget)",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<Vec<ProxyView>>)),
    security(("bearer" = []))
)]
pub async fn proxy_list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<Vec<ProxyView>> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(network::pxyget(&state, &vm)?))
}

#[utoipa::path(
    get,
    path = "/api/ipv4/list",
    tag = "panel",
    summary = "A VM's NICs that have an IPv4 address, by its key",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<Vec<NicView>>)),
    security(("bearer" = []))
)]
pub async fn ipv4_list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<Vec<NicView>> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(panel::addresses(&vm, false)))
}

#[utoipa::path(
    get,
    path = "/api/ipv6/list",
    tag = "panel",
    summary = "A VM's NICs that have an IPv6 address, by its key",
    params(ByName),
    responses((status = 200, description = "Success", body = Envelope<Vec<NicView>>)),
    security(("bearer" = []))
)]
pub async fn ipv6_list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ByName>,
) -> ApiResult<Vec<NicView>> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(panel::addresses(&vm, true)))
}

#[utoipa::path(
    get,
    path = "/api/nat/check",
    tag = "panel",
    summary = "Whether a VM could forward a public port",
    description = "Available when port forwarding is on, the port is in the host's range and \\
                   free, and the VM is under its `nat_num`; otherwise `reason` says which not.",
    params(NatCheckQuery),
    responses((status = 200, description = "Success", body = Envelope<Availability>)),
    security(("bearer" = []))
)]
pub async fn nat_check(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<NatCheckQuery>,
) -> ApiResult<Availability> {
    let vm = named(&state, &caller, &query.hostname)?;
    Ok(ApiOk(panel::nat_check(
        &state,
        &vm,
        &query.protocol,
        query.port,
    )?))
}

#[utoipa::path(
    get,
    path = "/api/proxy/check",
    tag = "panel",
    summary = "Whether a domain could be proxied",
    description = "Available when the name is valid, the proxy is on and no site serves the \\
                   name; with `hostname`, also when that VM is under its `web_num`.",
    params(ProxyCheckQuery),
    responses((status = 200, description = "Success", body = Envelope<Availability>)),
    security(("bearer" = []))
)]
pub async fn proxy_check(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ProxyCheckQuery>,
) -> ApiResult<Availability> {
    let vm = if query.hostname.is_empty() {
        None
    } else {
        Some(named(&state, &caller, &query.hostname)?)
    };
    Ok(ApiOk(panel::proxy_check(
        &state,
        &query.domain,
        vm.as_ref(),
    )?))
}

#[utoipa::path(
    get,
    path = "/api/server/ports/{hs_name}",
    tag = "panel",
    summary = "A host's NAT port range, the ports forwarded and how many are free",
    params(HostPath, PortsQuery),
    responses((status = 200, description = "Success", body = Envelope<PortsAnswer>)),
    security(("bearer" = []))
)]
pub async fn ports(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
    ApiQuery(query): ApiQuery<PortsQuery>,
) -> ApiResult<PortsAnswer> {
    let host = hosts::get(&state, &path.hs_name)?;
    Ok(ApiOk(panel::ports(&state, &host, &query.protocol)?))
}

#[utoipa::path(
    get,
    path = "/api/server/plans/{hs_name}",
    tag = "panel",
    summary = "A host's plans: name → the VM config values a create with `plan` takes first",
    params(HostPath),
    responses((status = 200, description = "Success", body = Envelope<BTreeMap<String, Patch>>)),
    security(("bearer" = []))
)]
pub async fn plans(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
) -> ApiResult<BTreeMap<String, Patch>> {
    let host = hosts::get(&state, &path.hs_name)?;
    Ok(ApiOk(panel::plans(&state, &host)?))
}

#[utoipa::path(
    post,
    path = "/api/server/plan/{hs_name}",
    tag = "panel",
    summary = "Create or replace a plan of the host",
    params(HostPath),
    request_body = PlanInput,
    responses((status = 200, description = "The plan's values", body = Envelope<Mutation<Patch>>)),
    security(("bearer" = []))
)]
pub async fn plan_put(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<HostPath>,
    ApiJson(body): ApiJson<PlanInput>,
) -> ApiResult<Mutation<Patch>> {
    let host = hosts::get(&state, &path.hs_name)?;
    let task = hosts::task("plan:put", &host.name);
    let task_state = state.clone();
    let work = async move { panel::plan_put(&task_state, &host, body) };
    Ok(ApiOk(state.tasks.run(task, false, work).await?.answer()))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PlanPath {
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "local")]
    pub hs_name: String,
    #[param(pattern = "^[A-Za-z0-9_.-]{1,64}$", example = "basic-1c1g")]
    pub name: String,
}

#[utoipa::path(
    delete,
    path = "/api/server/plan/{hs_name}/{name}",
    tag = "panel",
    summary = "Delete a plan (VMs made from it keep their config)",
    params(PlanPath),
    responses((status = 200, description = "null", body = Envelope<Removal>)),
    security(("bearer" = []))
)]
pub async fn plan_delete(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<PlanPath>,
) -> ApiResult<Removal> {
    let host = hosts::get(&state, &path.hs_name)?;
    let task = hosts::task("plan:delete", &host.name);
    let task_state = state.clone();
    let work = async move { panel::plan_delete(&task_state, &host, &path.name) };
    Ok(ApiOk(state.tasks.run(task, false, work).await?.removal()))
}
