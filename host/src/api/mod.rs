//! The HTTP API: the router, its middleware and the handlers. Handlers are
//! thin: they extract, call a service, and wrap the answer in the envelope.
//! Nothing here touches SQL or a plugin directly.

pub mod auth;
pub mod client;
pub mod console;
pub mod envelope;
pub mod events;
pub mod extract;
pub mod files;
pub mod openapi;
pub mod panel;
pub mod server;
pub mod system;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Router};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::auth::Access;
use crate::error::{ApiError, Fault};
use crate::service;
use crate::service::system::Refusal;
use crate::state::AppState;

/// Largest request body; `upload` has its own, smaller limit.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest status sample a VM may upload.
const MAX_UPLOAD_BYTES: usize = 64 << 10;

type Routes = OpenApiRouter<Arc<AppState>>;

/// What a route needs of its caller: the token's access, and whether a VM
/// session (single sign-on, `templogin`) may call it for its own VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteAccess {
    pub need: Access,
    pub customer: bool,
}

/// The 35 endpoints behind a token (and the named tokens, the panels'
/// routes), each registered with its OpenAPI operation (from its
/// `#[utoipa::path]`), so the document is what the router serves; grouped by
/// the [`RouteAccess`] they need, which [`access_table`] reads for the token
/// check. A route added to no group is not served.
fn protected_routes() -> [(RouteAccess, Routes); 5] {
    let admin = OpenApiRouter::new()
        // System (9, the console counters and the named tokens).
        .routes(routes!(system::treset))
        .routes(routes!(system::tsetup))
        .routes(routes!(system::tquery))
        .routes(routes!(system::saving))
        .routes(routes!(system::loader))
        .routes(routes!(system::statis))
        .routes(routes!(system::engine))
        .routes(routes!(system::logget))
        .routes(routes!(system::tasget))
        .routes(routes!(console::stats))
        .routes(routes!(system::token_list, system::token_create))
        .routes(routes!(system::token_revoke))
        // Host administration (and its plans).
        .routes(routes!(panel::plan_put))
        .routes(routes!(panel::plan_delete))
        .routes(routes!(server::create))
        .routes(routes!(server::update))
        .routes(routes!(server::delete))
        .routes(routes!(server::powers));
    let read = OpenApiRouter::new()
        .routes(routes!(server::listup))
        .routes(routes!(server::detail))
        .routes(routes!(server::status))
        .routes(routes!(client::listup))
        .routes(routes!(client::os_images))
        // The billing panels' reads (by VM name, availability, ports).
        .routes(routes!(panel::status))
        .routes(routes!(panel::info))
        .routes(routes!(panel::traffic))
        .routes(routes!(panel::natlist))
        .routes(routes!(panel::proxy_list))
        .routes(routes!(panel::ipv4_list))
        .routes(routes!(panel::ipv6_list))
        .routes(routes!(panel::nat_check))
        .routes(routes!(panel::proxy_check))
        .routes(routes!(panel::ports))
        .routes(routes!(panel::plans));
    // What a VM's customer reads of it.
    let customer_read = OpenApiRouter::new()
        .routes(routes!(client::detail))
        .routes(routes!(client::status))
        .routes(routes!(client::natget))
        .routes(routes!(client::iplist))
        .routes(routes!(client::pxyget))
        // Narrowed to the caller's hosts or VM by the handler itself.
        .routes(routes!(events::events));
    let operate = OpenApiRouter::new()
        .routes(routes!(client::create))
        .routes(routes!(client::update))
        .routes(routes!(client::delete))
        .routes(routes!(client::scaner))
        .routes(routes!(client::ipadd))
        .routes(routes!(client::ipdel))
        .routes(routes!(client::temptoken))
        .routes(routes!(panel::password))
        .routes(routes!(panel::traffic_reset));
    // What a VM's customer does to it: power, console, NAT, proxy, password.
    let customer_operate = OpenApiRouter::new()
        .routes(routes!(client::powers))
        .routes(routes!(client::password))
        .routes(routes!(client::vncons))
        .routes(routes!(client::natadd))
        .routes(routes!(client::natdel))
        .routes(routes!(client::pxyadd))
        .routes(routes!(client::pxydel));
    let access = |need, customer| RouteAccess { need, customer };
    [
        (access(Access::Admin, false), admin),
        (access(Access::Read, false), read),
        (access(Access::Read, true), customer_read),
        (access(Access::Operate, false), operate),
        (access(Access::Operate, true), customer_operate),
    ]
}

/// Each protected path (aliases included, as their endpoint) with the
/// access it needs; the token check looks a request's matched path up here.
pub fn access_table() -> &'static HashMap<String, RouteAccess> {
    static TABLE: OnceLock<HashMap<String, RouteAccess>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for (access, routes) in protected_routes() {
            for path in routes.into_openapi().paths.paths.into_keys() {
                table.insert(path, access);
            }
        }
        for (alias, endpoint, _) in aliases() {
            if let Some(access) = table.get(endpoint).copied() {
                table.insert(alias.to_owned(), access);
            }
        }
        table
    })
}

/// The original server's paths: (alias, endpoint, the endpoint's handler).
/// Each is served by its endpoint's handler and documented as a copy of the
/// endpoint's operation ([`openapi::document`]).
fn aliases() -> Vec<(&'static str, &'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        (
            "/api/system/resets",
            "/api/system/treset",
            post(system::treset),
        ),
        (
            "/api/token/reset",
            "/api/system/treset",
            post(system::treset),
        ),
        ("/api/token/set", "/api/system/tsetup", post(system::tsetup)),
        (
            "/api/token/current",
            "/api/system/tquery",
            get(system::tquery),
        ),
        (
            "/api/system/save",
            "/api/system/saving",
            post(system::saving),
        ),
        (
            "/api/system/load",
            "/api/system/loader",
            post(system::loader),
        ),
        (
            "/api/system/stats",
            "/api/system/statis",
            get(system::statis),
        ),
        (
            "/api/system/logger/detail",
            "/api/system/logget",
            get(system::logget),
        ),
        (
            "/api/system/tasker",
            "/api/system/tasget",
            get(system::tasget),
        ),
        (
            "/api/server/detail",
            "/api/server/listup",
            get(server::listup),
        ),
        (
            "/api/client/detail/{hs_name}",
            "/api/client/listup/{hs_name}",
            get(client::listup),
        ),
        (
            "/api/client/remote/{hs_name}/{vm_uuid}",
            "/api/client/vncons/{hs_name}/{vm_uuid}",
            get(client::vncons),
        ),
        (
            "/api/client/ipaddr/detail/{hs_name}/{vm_uuid}",
            "/api/client/iplist/{hs_name}/{vm_uuid}",
            get(client::iplist),
        ),
        (
            "/api/client/ipaddr/create/{hs_name}/{vm_uuid}",
            "/api/client/ipadd_/{hs_name}/{vm_uuid}",
            post(client::ipadd),
        ),
        (
            "/api/client/ipaddr/delete/{hs_name}/{vm_uuid}/{ip_index}",
            "/api/client/ipdel_/{hs_name}/{vm_uuid}/{ip_index}",
            delete(client::ipdel),
        ),
        (
            "/api/client/proxys/detail/{hs_name}/{vm_uuid}",
            "/api/client/pxyget/{hs_name}/{vm_uuid}",
            get(client::pxyget),
        ),
        (
            "/api/client/proxys/create/{hs_name}/{vm_uuid}",
            "/api/client/pxyadd/{hs_name}/{vm_uuid}",
            post(client::pxyadd),
        ),
        (
            "/api/client/proxys/delete/{hs_name}/{vm_uuid}/{proxy_index}",
            "/api/client/pxydel/{hs_name}/{vm_uuid}/{proxy_index}",
            delete(client::pxydel),
        ),
    ]
}

/// What needs no admin token: `upload` (the VM's key), the document and
/// its browser.
fn public_routes() -> Routes {
    OpenApiRouter::new()
        .routes(routes!(openapi::spec))
        .routes(routes!(openapi::docs))
        .routes(routes!(openapi::docs_asset).layer(files::file_headers("public, max-age=3600")))
        .routes(routes!(client::upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)))
        .routes(routes!(client::templogin))
        // The browser's session: the token in the body, or the cookie, is
        // the credential.
        .routes(routes!(
            web::session_open,
            web::session_view,
            web::session_close
        ))
}

/// The web console (the one-time ticket is the credential) and the web
/// panel's files; not in the API document.
fn page_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(web::index))
        .route(
            "/panel/{name}",
            get(web::asset).layer(files::file_headers("no-cache")),
        )
        .route("/console/", get(console::page))
        .route("/console/console.js", get(console::script))
        .route("/console/session", post(console::session))
        .route("/console/ws", get(console::websocket))
        .route(
            "/console/{*path}",
            get(console::asset).layer(files::file_headers("public, max-age=300")),
        )
}

/// Every documented route, without state or layers: the router's and the
/// document's one source.
fn documented() -> (Routes, Routes) {
    let protected = protected_routes()
        .into_iter()
        .fold(OpenApiRouter::new(), |all, (_, routes)| all.merge(routes));
    let protected = aliases()
        .into_iter()
        .fold(protected, |routes, (alias, _, method_router)| {
            routes.route(alias, method_router)
        });
    (protected, public_routes())
}

/// The OpenAPI document of what [`router`] serves.
pub fn document() -> utoipa::openapi::OpenApi {
    let (protected, public) = documented();
    let pairs: Vec<(&str, &str)> = aliases()
        .into_iter()
        .map(|(alias, endpoint, _)| (alias, endpoint))
        .collect();
    openapi::finish(protected.merge(public).into_openapi(), &pairs)
}

/// The whole API, shared by `main` and nothing else (tests start the binary).
pub fn router(state: Arc<AppState>) -> Router {
    let (protected, public) = documented();
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    let (api, _document) = protected.merge(public).split_for_parts();
    api.merge(page_routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            finish_response,
        ))
        .with_state(state)
}

/// Marks an answer of the fallbacks: no route was matched, so nothing was
/// authenticated either.
#[derive(Clone, Copy)]
struct Unrouted;

async fn unknown_route(method: Method, uri: axum::http::Uri) -> (Extension<Unrouted>, ApiError) {
    (
        Extension(Unrouted),
        ApiError::NotFound(format!("no route for {method} {}", uri.path())),
    )
}

async fn wrong_method() -> (Extension<Unrouted>, ApiError) {
    (Extension(Unrouted), ApiError::MethodNotAllowed)
}

/// Outermost layer: writes one log record per failed mutation or fault
/// (errors the task runner already logged carry `Fault::logged`), counts
/// the refusals of unauthenticated and unrouted requests instead of logging
/// each (anyone can send those), and applies `always_http_200`.
async fn finish_response(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Some(fault) = response.extensions().get::<Fault>() {
        let is_mutation = method != Method::GET && method != Method::HEAD;
        let worth_logging = fault.status.is_server_error()
            || (is_mutation && fault.status != StatusCode::TOO_MANY_REQUESTS);
        let refusal = if fault.status == StatusCode::UNAUTHORIZED {
            Some(Refusal::Unauthenticated)
        } else if response.extensions().get::<Unrouted>().is_some() {
            Some(Refusal::Unrouted)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            service::system::tally_refusal(&state, refusal);
        } else if worth_logging && !fault.logged {
            service::system::log_request_failure(
                &state,
                method.as_str(),
                &path,
                fault.status.as_u16(),
                &fault.message,
            );
        }
        if fault.status.is_server_error() {
            tracing::error!("{method} {path}: {}", fault.message);
        }
    }
    // A websocket upgrade (101) must stay what it is, or the console breaks.
    if state.config().server.always_http_200 && response.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        *response.status_mut() = StatusCode::OK;
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_alias_needs_what_its_endpoint_needs() {
        let table = super::access_table();
        for (alias, endpoint, _) in super::aliases() {
            assert!(table.contains_key(endpoint), "{endpoint} has no access");
            assert_eq!(table.get(alias), table.get(endpoint), "{alias}");
        }
    }
}
