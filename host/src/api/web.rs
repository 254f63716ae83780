//! The web panel: its page at `/`, its files under `/panel/`, and the
//! browser session it signs in with (`/api/system/session`).
//!
//! The panel is plain HTML, CSS and ES modules in `host/panel/` (no build
//! step), with uPlot from npm (`make setup` installs it into
//! `host/panel/node_modules`); all served from disk, from this origin only
//! (its CSP), behind an allow-list. It keeps no credential in script
//! reach: signing in trades the token for an HttpOnly session cookie.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::auth::{Caller, client_address, session_cookie_value, verify_token};
use super::envelope::ApiOk;
use super::extract::{ApiJson, ApiPath};
use super::files;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::model::Envelope;
use crate::model::event::{SessionInput, SessionView};
use crate::model::task::Null;
use crate::state::AppState;

/// Environment variable naming the panel's directory.
pub const PANEL_DIR_VARIABLE: &str = "OPENIDCS_PANEL_DIR";
const PANEL_DIR_IN_REPO: &str = "host/panel";

use files::{CSS, JAVASCRIPT as JS};

/// What `/panel/<name>` serves: (name, path below the panel directory, type).
const PANEL_FILES: &[(&str, &str, &str)] = &[
    ("app.js", "app.js", JS),
    ("i18n.js", "i18n.js", JS),
    ("style.css", "style.css", CSS),
    ("uPlot.esm.js", "node_modules/uplot/dist/uPlot.esm.js", JS),
    (
        "uPlot.min.css",
        "node_modules/uplot/dist/uPlot.min.css",
        CSS,
    ),
    // The terminal of container consoles (the console page loads them).
    ("xterm.mjs", "node_modules/@xterm/xterm/lib/xterm.mjs", JS),
    ("xterm.css", "node_modules/@xterm/xterm/css/xterm.css", CSS),
    (
        "addon-fit.mjs",
        "node_modules/@xterm/addon-fit/lib/addon-fit.mjs",
        JS,
    ),
];

/// Only this origin: scripts, styles, fetches, the event stream and the
/// embedded console. uPlot sizes its parts with inline styles.
const PANEL_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn panel_dir() -> Option<PathBuf> {
    files::repo_dir(PANEL_DIR_VARIABLE, PANEL_DIR_IN_REPO, "index.html")
}

fn panel_missing(what: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no panel file {what:?}: the web panel lives in {PANEL_DIR_IN_REPO} (run `make setup` \
         for its npm files) or ${PANEL_DIR_VARIABLE}"
    ))
}

/// `GET /`: the panel's page (its routes are in the address's `#`).
pub async fn index(request: Request) -> Response {
    let Some(root) = panel_dir() else {
        return panel_missing("index.html").into_response();
    };
    let mut response = files::serve(
        &root,
        "index.html",
        "text/html; charset=utf-8",
        request,
        panel_missing("index.html"),
    )
    .await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PANEL_CSP));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /panel/{name}`: one of [`PANEL_FILES`].
pub async fn asset(ApiPath(name): ApiPath<String>, request: Request) -> Response {
    let Some(&(_, relative, content_type)) = PANEL_FILES.iter().find(|(file, ..)| *file == name)
    else {
        return panel_missing(&name).into_response();
    };
    let Some(root) = panel_dir() else {
        return panel_missing(&name).into_response();
    };
    files::serve(&root, relative, content_type, request, panel_missing(&name)).await
}

/// The session cookie: HttpOnly (no script reads it), Secure, SameSite=Strict
/// (no other site's page sends it).
pub fn session_cookie(value: &str, max_age_s: u64) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; Secure; SameSite=Strict",
        crate::sessions::COOKIE
    )
}

fn view(principal: &Principal) -> SessionView {
    SessionView {
        name: principal.name.clone(),
        role: principal.role,
        hosts: principal.hosts.clone(),
        vm_uuid: principal.vm.clone(),
    }
}

#[utoipa::path(
    post,
    path = "/api/system/session",
    tag = "system",
    summary = "Sign a browser in with a token (the web panel)",
    description = "Checks the token (the admin token or a named one; wrong ones count against \
                   the address as any wrong token) and sets the session cookie `openidcs_session` \
                   (HttpOnly, Secure, SameSite=Strict), which then stands for that token on every \
                   route: a revoked or reset token ends the session. Answers whom it stands for.",
    request_body = SessionInput,
    responses(
        (status = 200, description = "Signed in", body = Envelope<SessionView>),
        (status = 401, description = "Wrong or expired token", body = Envelope<Null>),
    )
)]
pub async fn session_open(
    State(state): State<Arc<AppState>>,
    extensions: Extensions,
    ApiJson(body): ApiJson<SessionInput>,
) -> Result<Response, ApiError> {
    let token = body.token.trim();
    let principal = verify_token(&state, client_address(&extensions), token)?;
    let session = state
        .sessions
        .open_token(token)
        .map_err(|full| ApiError::TooManyRequests(full.to_string()))?;
    let cookie = session_cookie(&session, state.sessions.session_seconds());
    Ok((
        [(SET_COOKIE, cookie), (CACHE_CONTROL, "no-store".to_owned())],
        ApiOk(view(&principal)),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/system/session",
    tag = "system",
    summary = "Whom the session (or the Bearer token) stands for; null when not signed in",
    description = "`data` is null for a browser without a session (or whose session has \
                   ended): the panel asks this first, and being signed out is no error. A wrong \
                   Bearer token is 401 as anywhere.",
    responses((status = 200, description = "Success", body = Envelope<Option<SessionView>>)),
    security((), ("bearer" = []))
)]
pub async fn session_view(
    State(state): State<Arc<AppState>>,
    mut parts: Parts,
) -> Result<ApiOk<Option<SessionView>>, ApiError> {
    if !parts.headers.contains_key(AUTHORIZATION) {
        let signed_in = session_cookie_value(&parts.headers)
            .is_some_and(|session| state.sessions.owner(session).is_some());
        if !signed_in {
            return Ok(ApiOk(None));
        }
    }
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    Ok(ApiOk(Some(view(&caller.principal))))
}

#[utoipa::path(
    delete,
    path = "/api/system/session",
    tag = "system",
    summary = "Sign the browser out: end its session and clear the cookie",
    responses((status = 200, description = "Signed out", body = Envelope<Null>))
)]
pub async fn session_close(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(session) = session_cookie_value(&headers) {
        state.sessions.close(session);
    }
    ([(SET_COOKIE, session_cookie("", 0))], ApiOk(Null)).into_response()
}
