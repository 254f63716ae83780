//! The web console's routes: the console page (noVNC for a screen, xterm.js
//! for a container's terminal), the ticket redemption and the websocket
//! proxy. These routes take no admin token: the one-time
//! secrets are the credential. The handlers are thin; the secrets, limits
//! and the byte pump are `service::console`.
//!
//! # URL scheme, and where the VNC password travels
//!
//! 1. `GET /api/client/vncons/<hs>/<vm>` (admin token) answers
//!    `{url: "<base>/console/?ticket=T", expires_in}`; `T` is a one-time
//!    ticket bound to the VM's console endpoint (`[console] ticket_ttl_s`).
//! 2. `GET /console/` is our page; its script (`/console/console.js`) reads
//!    `T` from the address, removes it from the address bar, and sends
//!    `POST /console/session` with `{"ticket": T}`. That redeems `T` (a
//!    second use or an expired ticket: 401) and answers `{ws_token: W,
//!    protocol, password, hs_name, vm_uuid, expires_in}` with `Cache-Control:
//!    no-store`. The VNC password travels only in that answer's body, never
//!    in a URL.
//! 3. The page opens `ws(s)://<same origin>/console/ws?token=W`. `W` is a
//!    second one-time secret bound to the redeemed ticket; the handler
//!    redeems it *before* answering the upgrade and before any TCP
//!    connection (unknown, used or expired: 401), takes a slot within
//!    `max_per_vm` and `max_total` (else 429), then connects to the endpoint
//!    stored with the ticket (a terminal: opens one through the VM's engine
//!    on its host's API) and proxies bytes both ways. Nothing else the
//!    browser sends chooses the host, VM or port: unknown query parameters
//!    or body fields are refused with 400.
//! 4. noVNC (Debian's `novnc` package, `[console] novnc_dir`) is served from
//!    disk at request time under `/console/core/` and `/console/vendor/`
//!    (`api::files`); xterm.js (npm, `host/panel`) under `/panel/`.
//!
//! `GET /api/system/consoles` (admin token) shows the counters.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{Extensions, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::files;
use crate::api::envelope::{ApiOk, ApiResult};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::model::{ConsoleCounters, ConsoleSessionInput, ConsoleWsQuery};
use crate::service::console as consoles;
use crate::state::AppState;

/// Largest message the browser may send (noVNC sends small ones).
const MAX_BROWSER_MESSAGE: usize = 1 << 20;

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>openidcs console</title>
<style>
html, body { height: 100%; margin: 0; }
body { display: flex; flex-direction: column; background: #333; font: 13px sans-serif; }
#bar { display: flex; justify-content: space-between; align-items: center;
       padding: 4px 8px; background: #4a5a70; color: #fff; }
#screen { flex: 1; overflow: hidden; }
button { font: inherit; }
</style>
<script type="module" src="console.js"></script>
</head>
<body>
<div id="bar"><span id="status">Loading</span>
<button id="cad" type="button" disabled>Send Ctrl-Alt-Del</button></div>
<div id="screen"></div>
</body>
</html>
"#;

/// The page's script. `data-console` on `<html>` tells tests (and styles)
/// the state: `connecting`, `connected`, `disconnected` or `failed`.
const SCRIPT: &str = r#"// The web panel's strings: the same language as the panel around it.
import { t, language } from '/panel/i18n.js';

const root = document.documentElement;
const screen = document.getElementById('screen');
const cad = document.getElementById('cad');
const status = (text) => { document.getElementById('status').textContent = text; };
const fail = (text) => { status(text); root.dataset.console = 'failed'; };
root.lang = language();
status(t('console.loading'));
cad.textContent = t('console.cad');

const ticket = new URLSearchParams(window.location.search).get('ticket');
// The ticket is spent below; keep it out of the address bar and history.
window.history.replaceState(null, '', window.location.pathname);

function connected(session) {
    status(t('console.connected', session.vm_uuid, session.hs_name));
    document.title = t('console.title', session.vm_uuid);
    root.dataset.console = 'connected';
}

function disconnected(clean) {
    status(t(clean ? 'console.disconnected' : 'console.lost'));
    root.dataset.console = 'disconnected';
    cad.disabled = true;
}

// A VM's screen: noVNC (loaded only for it).
async function vnc(session, url) {
    const { default: RFB } = await import('./core/rfb.js');
    const rfb = new RFB(screen, url, { credentials: { password: session.password } });
    rfb.scaleViewport = true;
    rfb.addEventListener('connect', () => {
        connected(session);
        cad.disabled = false;
    });
    rfb.addEventListener('disconnect', (event) => disconnected(event.detail.clean));
    rfb.addEventListener('credentialsrequired', () => {
        rfb.sendCredentials({ password: session.password });
    });
    rfb.addEventListener('securityfailure', (event) => {
        fail(t('console.authFailed', event.detail.reason || event.detail.status));
    });
    cad.onclick = () => rfb.sendCtrlAltDel();
}

// A container's shell: xterm.js; keystrokes go as binary messages, a size
// change as a text message {"cols","rows"}.
async function terminal(session, url) {
    const [{ Terminal }, { FitAddon }] = await Promise.all([
        import('/panel/xterm.mjs'),
        import('/panel/addon-fit.mjs'),
    ]);
    const style = document.createElement('link');
    style.rel = 'stylesheet';
    style.href = '/panel/xterm.css';
    document.head.append(style);
    cad.hidden = true;
    const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 2000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    fit.fit();
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    const sendSize = () => {
        if (socket.readyState === WebSocket.OPEN) {
            socket.send(JSON.stringify({ cols: term.cols, rows: term.rows }));
        }
    };
    const encoder = new TextEncoder();
    socket.onopen = () => {
        connected(session);
        sendSize();
        term.focus();
    };
    socket.onmessage = (event) => term.write(new Uint8Array(event.data));
    socket.onclose = (event) => disconnected(event.wasClean);
    term.onData((data) => {
        if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
    term.onResize(sendSize);
    window.addEventListener('resize', () => fit.fit());
}

async function start() {
    if (!ticket) {
        fail(t('console.noTicket'));
        return;
    }
    root.dataset.console = 'connecting';
    status(t('console.opening'));
    let envelope;
    try {
        const answer = await fetch('session', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ ticket }),
            cache: 'no-store',
            credentials: 'omit',
        });
        envelope = await answer.json();
    } catch (error) {
        fail(t('console.unreachable', error));
        return;
    }
    if (envelope.code !== 200) {
        fail(t('console.refused', envelope.msg));
        return;
    }
    const session = envelope.data;
    const url = new URL('ws?token=' + encodeURIComponent(session.ws_token), window.location.href);
    url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    root.dataset.protocol = session.protocol;
    try {
        await (session.protocol === 'terminal' ? terminal : vnc)(session, url.href);
    } catch (error) {
        fail(t('console.unreachable', error));
    }
}

start();
"#;

/// Scripts only from this origin; the websocket and `fetch` only to it;
/// framed only by this origin (the web panel embeds it).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'self'";

fn no_store_headers() -> [(axum::http::HeaderName, HeaderValue); 3] {
    [
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ]
}

/// `GET /console/`: the console page (the ticket is in its query string).
pub async fn page() -> Response {
    (
        no_store_headers(),
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP)),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /console/console.js`: the page's script.
pub async fn script() -> Response {
    (
        no_store_headers(),
        [(CONTENT_TYPE, HeaderValue::from_static(files::JAVASCRIPT))],
        SCRIPT,
    )
        .into_response()
}

/// `GET /console/{*path}`: a file of noVNC's `core/` or `vendor/`
/// (`Cache-Control` and `nosniff` are layers on the route).
pub async fn asset(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<String>,
    request: Request,
) -> Response {
    let missing = ApiError::NotFound(format!("no console file {path:?}"));
    let Some((relative, content_type)) = files::novnc_file(&path) else {
        return missing.into_response();
    };
    let root = state.config().console.novnc_dir.clone();
    files::serve(&root, relative, content_type, request, missing).await
}

/// `POST /console/session`: redeem a ticket; answers the VNC password and
/// the websocket token.
pub async fn session(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<ConsoleSessionInput>,
) -> Result<Response, ApiError> {
    let answer = consoles::session(&state, &body.ticket)?;
    Ok((no_store_headers(), ApiOk(answer)).into_response())
}

/// `GET /console/ws?token=`: redeem the websocket token, take a slot, and
/// proxy the websocket to the VM's VNC endpoint.
pub async fn websocket(
    State(state): State<Arc<AppState>>,
    extensions: Extensions,
    ApiQuery(query): ApiQuery<ConsoleWsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "not a websocket request: {}",
            rejection.body_text()
        ))
    })?;
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let session = consoles::websocket(&state, &query.token, peer)?;
    Ok(upgrade
        .max_message_size(MAX_BROWSER_MESSAGE)
        .max_frame_size(MAX_BROWSER_MESSAGE)
        .on_upgrade(move |socket| session.run(socket)))
}

/// `GET /api/system/consoles` (admin token): the proxy's counters and limits.
#[utoipa::path(
    get,
    path = "/api/system/consoles",
    tag = "system",
    summary = "Web console counters and limits",
    responses((status = 200, description = "Console counters", body = crate::model::Envelope<ConsoleCounters>)),
    security(("bearer" = []))
)]
pub async fn stats(State(state): State<Arc<AppState>>) -> ApiResult<ConsoleCounters> {
    Ok(ApiOk(consoles::counters(&state)))
}
