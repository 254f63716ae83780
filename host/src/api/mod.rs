//! The HTTP API: the router, its middleware and the handlers. Handlers are
//! thin: they extract, call a service, and wrap the answer in the envelope.
//! Nothing here touches SQL or a plugin directly.

pub mod auth;
pub mod client;
pub mod console;
pub mod envelope;
pub mod extract;
pub mod openapi;
pub mod server;
pub mod system;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};

use crate::error::{ApiError, Fault};
use crate::state::AppState;
use crate::store::{LogLevel, NewLog};

/// Largest request body; `upload` has its own, smaller limit.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest status sample a VM may upload.
const MAX_UPLOAD_BYTES: usize = 64 << 10;

/// The whole API, shared by `main` and the tests.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        // System (9), with the original server's aliases.
        .route("/api/system/treset", post(system::treset))
        .route("/api/system/resets", post(system::treset))
        .route("/api/token/reset", post(system::treset))
        .route("/api/system/tsetup", post(system::tsetup))
        .route("/api/token/set", post(system::tsetup))
        .route("/api/system/tquery", get(system::tquery))
        .route("/api/token/current", get(system::tquery))
        .route("/api/system/saving", post(system::saving))
        .route("/api/system/save", post(system::saving))
        .route("/api/system/loader", post(system::loader))
        .route("/api/system/load", post(system::loader))
        .route("/api/system/statis", get(system::statis))
        .route("/api/system/stats", get(system::statis))
        .route("/api/system/engine", get(system::engine))
        .route("/api/system/logget", get(system::logget))
        .route("/api/system/logger/detail", get(system::logget))
        .route("/api/system/tasget", get(system::tasget))
        .route("/api/system/tasker", get(system::tasget))
        .route("/api/system/consoles", get(console::stats))
        // Server = hypervisor host (7).
        .route("/api/server/listup", get(server::listup))
        .route("/api/server/detail", get(server::listup))
        .route("/api/server/detail/{hs_name}", get(server::detail))
        .route("/api/server/create", post(server::create))
        .route("/api/server/update/{hs_name}", put(server::update))
        .route("/api/server/delete/{hs_name}", delete(server::delete))
        .route("/api/server/powers/{hs_name}", post(server::powers))
        .route("/api/server/status/{hs_name}", get(server::status))
        // Client = VM (19, without upload).
        .route("/api/client/listup/{hs_name}", get(client::listup))
        .route("/api/client/detail/{hs_name}", get(client::listup))
        .route(
            "/api/client/detail/{hs_name}/{vm_uuid}",
            get(client::detail),
        )
        .route("/api/client/create/{hs_name}", post(client::create))
        .route(
            "/api/client/update/{hs_name}/{vm_uuid}",
            put(client::update),
        )
        .route(
            "/api/client/delete/{hs_name}/{vm_uuid}",
            delete(client::delete),
        )
        .route(
            "/api/client/powers/{hs_name}/{vm_uuid}",
            post(client::powers),
        )
        .route(
            "/api/client/password/{hs_name}/{vm_uuid}",
            post(client::password),
        )
        .route(
            "/api/client/status/{hs_name}/{vm_uuid}",
            get(client::status),
        )
        .route(
            "/api/client/vncons/{hs_name}/{vm_uuid}",
            get(client::vncons),
        )
        .route(
            "/api/client/remote/{hs_name}/{vm_uuid}",
            get(client::vncons),
        )
        .route("/api/client/scaner/{hs_name}", post(client::scaner))
        .route(
            "/api/client/natget/{hs_name}/{vm_uuid}",
            get(client::natget),
        )
        .route(
            "/api/client/natadd/{hs_name}/{vm_uuid}",
            post(client::natadd),
        )
        .route(
            "/api/client/natdel/{hs_name}/{vm_uuid}/{rule_index}",
            delete(client::natdel),
        )
        .route(
            "/api/client/iplist/{hs_name}/{vm_uuid}",
            get(client::iplist),
        )
        .route(
            "/api/client/ipaddr/detail/{hs_name}/{vm_uuid}",
            get(client::iplist),
        )
        .route(
            "/api/client/ipadd_/{hs_name}/{vm_uuid}",
            post(client::ipadd),
        )
        .route(
            "/api/client/ipaddr/create/{hs_name}/{vm_uuid}",
            post(client::ipadd),
        )
        .route(
            "/api/client/ipdel_/{hs_name}/{vm_uuid}/{ip_index}",
            delete(client::ipdel),
        )
        .route(
            "/api/client/ipaddr/delete/{hs_name}/{vm_uuid}/{ip_index}",
            delete(client::ipdel),
        )
        .route(
            "/api/client/pxyget/{hs_name}/{vm_uuid}",
            get(client::pxyget),
        )
        .route(
            "/api/client/proxys/detail/{hs_name}/{vm_uuid}",
            get(client::pxyget),
        )
        .route(
            "/api/client/pxyadd/{hs_name}/{vm_uuid}",
            post(client::pxyadd),
        )
        .route(
            "/api/client/proxys/create/{hs_name}/{vm_uuid}",
            post(client::pxyadd),
        )
        .route(
            "/api/client/pxydel/{hs_name}/{vm_uuid}/{proxy_index}",
            delete(client::pxydel),
        )
        .route(
            "/api/client/proxys/delete/{hs_name}/{vm_uuid}/{proxy_index}",
            delete(client::pxydel),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let public = Router::new()
        // The OpenAPI document and its browser: no token.
        .route("/api/openapi.json", get(openapi::spec))
        .route("/api/docs", get(openapi::docs))
        .route("/api/docs/{file}", get(openapi::docs_asset))
        .route(
            "/api/client/upload",
            post(client::upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        // The web console: the one-time ticket is the credential.
        .route("/console/", get(console::page))
        .route("/console/console.js", get(console::script))
        .route("/console/session", post(console::session))
        .route("/console/ws", get(console::websocket))
        .route("/console/{*path}", get(console::asset));
    Router::new()
        .merge(protected)
        .merge(public)
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            finish_response,
        ))
        .with_state(state)
}

async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Outermost layer: writes one log record per failed mutation or fault
/// (errors the task runner already logged carry `Fault::logged`), and applies
/// `always_http_200`.
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
        if worth_logging && !fault.logged {
            let level = if fault.status.is_server_error() {
                LogLevel::Error
            } else {
                LogLevel::Warn
            };
            // `/api/<group>/<option>/<hs_name>/<vm_uuid>/...`
            let segments: Vec<&str> = path.split('/').collect();
            let record = NewLog::new(
                level,
                format!("{method} {path}"),
                format!("{}: {}", fault.status.as_u16(), fault.message),
            )
            .host(segments.get(4).copied().unwrap_or_default())
            .vm(segments.get(5).copied().unwrap_or_default());
            if let Err(error) = state.store.log_insert(&record) {
                tracing::error!("cannot store a log record: {error}");
            }
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
