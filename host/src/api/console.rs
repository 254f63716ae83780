//! The web console: noVNC's page, the ticket redemption and the
//! websocket-to-VNC proxy. These routes take no admin token: the one-time
//! secrets are the credential.
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
//!    password, hs_name, vm_uuid, expires_in}` with `Cache-Control:
//!    no-store`. The VNC password travels only in that answer's body, never
//!    in a URL.
//! 3. The page opens `ws(s)://<same origin>/console/ws?token=W`. `W` is a
//!    second one-time secret bound to the redeemed ticket; the handler
//!    redeems it *before* answering the upgrade and before any TCP
//!    connection (unknown, used or expired: 401), takes a slot within
//!    `max_per_vm` and `max_total` (else 429), then connects to the endpoint
//!    stored with the ticket and proxies bytes both ways. Nothing else the
//!    browser sends chooses the host, VM or port: unknown query parameters
//!    or body fields are refused with 400.
//! 4. noVNC (Debian's `novnc` package, `[console] novnc_dir`) is read from
//!    disk at request time under `/console/core/` and `/console/vendor/`.
//!
//! A session ends when either side closes (a VM that stops closes its VNC
//! socket), on a protocol error, or after `idle_timeout_s` without a byte
//! either way. Each session is one log record (`actions = "console"`): who
//! issued the ticket, the browser's address, start, duration and bytes.
//! `GET /api/system/consoles` (admin token) shows the counters.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{Extensions, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::envelope::{ApiOk, ApiResult};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery};
use crate::error::ApiError;
use crate::service::console::{ConsoleSlot, ConsoleTicket};
use crate::state::AppState;
use crate::store::{LogLevel, NewLog};

/// How long the proxy waits for the VNC server to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One read from the VNC socket, forwarded as one binary message.
const READ_CHUNK: usize = 64 << 10;
/// Largest message the browser may send (noVNC sends small ones).
const MAX_BROWSER_MESSAGE: usize = 1 << 20;
/// The noVNC subtrees the page needs; nothing else of the package is served.
const SERVED_DIRS: [&str; 2] = ["core", "vendor"];

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
const SCRIPT: &str = r#"import RFB from './core/rfb.js';

const root = document.documentElement;
const screen = document.getElementById('screen');
const cad = document.getElementById('cad');
const status = (text) => { document.getElementById('status').textContent = text; };
const fail = (text) => { status(text); root.dataset.console = 'failed'; };

const ticket = new URLSearchParams(window.location.search).get('ticket');
// The ticket is spent below; keep it out of the address bar and history.
window.history.replaceState(null, '', window.location.pathname);

async function start() {
    if (!ticket) {
        fail('No console ticket: open the console from the panel.');
        return;
    }
    root.dataset.console = 'connecting';
    status('Opening the console');
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
        fail('Cannot reach the server: ' + error);
        return;
    }
    if (envelope.code !== 200) {
        fail('Console refused: ' + envelope.msg);
        return;
    }
    const session = envelope.data;
    const url = new URL('ws?token=' + encodeURIComponent(session.ws_token), window.location.href);
    url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const rfb = new RFB(screen, url.href, { credentials: { password: session.password } });
    rfb.scaleViewport = true;
    rfb.addEventListener('connect', () => {
        status('Connected: ' + session.vm_uuid + ' on ' + session.hs_name);
        document.title = session.vm_uuid + ' console';
        root.dataset.console = 'connected';
        cad.disabled = false;
    });
    rfb.addEventListener('disconnect', (event) => {
        status(event.detail.clean ? 'Disconnected' : 'Connection lost');
        root.dataset.console = 'disconnected';
        cad.disabled = true;
    });
    rfb.addEventListener('credentialsrequired', () => {
        rfb.sendCredentials({ password: session.password });
    });
    rfb.addEventListener('securityfailure', (event) => {
        fail('VNC authentication failed: ' + (event.detail.reason || event.detail.status));
    });
    cad.onclick = () => rfb.sendCtrlAltDel();
}

start();
"#;

/// Scripts only from this origin; the websocket and `fetch` only to it.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        SCRIPT,
    )
        .into_response()
}

/// `GET /console/{*path}`: a file of noVNC's `core/` or `vendor/`.
pub async fn asset(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no console file {path:?}"));
    let (relative, content_type) = asset_path(&path).ok_or_else(not_found)?;
    let root = state.config().console.novnc_dir.clone();
    let file = root.join(&relative);
    // Symbolic links inside the package must not lead out of it.
    let (Ok(canonical_root), Ok(canonical_file)) = (
        tokio::fs::canonicalize(&root).await,
        tokio::fs::canonicalize(&file).await,
    ) else {
        return Err(not_found());
    };
    if !canonical_file.starts_with(&canonical_root) {
        return Err(not_found());
    }
    let bytes = tokio::fs::read(&canonical_file)
        .await
        .map_err(|_| not_found())?;
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        bytes,
    )
        .into_response())
}

/// The file under the noVNC directory a request path names, with its
/// content type; `None` for anything outside [`SERVED_DIRS`], any segment
/// that is empty, `.`, `..`, hidden or has other than `[A-Za-z0-9._-]`, and
/// unknown extensions.
fn asset_path(path: &str) -> Option<(PathBuf, &'static str)> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 || !SERVED_DIRS.contains(&segments[0]) {
        return None;
    }
    let valid = |segment: &&str| {
        !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    };
    if !segments.iter().all(valid) {
        return None;
    }
    let extension = Path::new(segments[segments.len() - 1])
        .extension()?
        .to_str()?;
    let content_type = match extension {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "wasm" => "application/wasm",
        _ => return None,
    };
    Some((segments.iter().collect(), content_type))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    #[serde(default)]
    ticket: String,
}

/// `POST /console/session`: redeem a ticket; answers the VNC password and
/// the websocket token.
pub async fn session(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<SessionBody>,
) -> Result<Response, ApiError> {
    if body.ticket.is_empty() {
        state.consoles.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::Unauthorized(
            "ticket: missing; open the console through vncons".to_owned(),
        ));
    }
    let ticket = state.consoles.redeem(&body.ticket).ok_or_else(|| {
        ApiError::Unauthorized("ticket: unknown, already used or expired".to_owned())
    })?;
    let ws_token = state.consoles.issue_ws_token(&ticket);
    let answer = ApiOk(json!({
        "ws_token": ws_token,
        "password": ticket.endpoint.password,
        "hs_name": ticket.host,
        "vm_uuid": ticket.vm_uuid,
        "expires_in": state.consoles.lifetime().as_secs(),
    }));
    Ok((no_store_headers(), answer).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    #[serde(default)]
    token: String,
}

/// `GET /console/ws?token=`: redeem the websocket token, take a slot, and
/// proxy the websocket to the VM's VNC endpoint.
pub async fn websocket(
    State(state): State<Arc<AppState>>,
    extensions: Extensions,
    ApiQuery(query): ApiQuery<WsQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "not a websocket request: {}",
            rejection.body_text()
        ))
    })?;
    let refused = || state.consoles.stats.refused.fetch_add(1, Ordering::Relaxed);
    if query.token.is_empty() {
        refused();
        return Err(ApiError::Unauthorized(
            "token: missing; redeem a ticket at /console/session".to_owned(),
        ));
    }
    let ticket = state
        .consoles
        .redeem_ws_token(&query.token)
        .ok_or_else(|| {
            ApiError::Unauthorized("token: unknown, already used or expired".to_owned())
        })?;
    if ticket.endpoint.protocol != "vnc" {
        refused();
        return Err(ApiError::BadRequest(format!(
            "console protocol {:?} is not supported (vnc only)",
            ticket.endpoint.protocol
        )));
    }
    let config = state.config();
    let slot = state
        .consoles
        .acquire(
            &ticket.host,
            &ticket.vm_uuid,
            config.console.max_per_vm,
            config.console.max_total,
        )
        .map_err(|exceeded| ApiError::TooManyRequests(exceeded.to_string()))?;
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_string())
        .unwrap_or_else(|| "an unknown address".to_owned());
    let idle = Duration::from_secs(config.console.idle_timeout_s);
    let session = Session {
        state: state.clone(),
        ticket,
        slot,
        peer,
        idle,
    };
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
    responses((status = 200, description = "Console counters", body = crate::model::Envelope<Object>)),
    security(("bearer" = []))
)]
pub async fn stats(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    let config = state.config();
    let mut answer = state.consoles.snapshot();
    answer["limits"] = json!({
        "max_per_vm": config.console.max_per_vm,
        "max_total": config.console.max_total,
        "idle_timeout_s": config.console.idle_timeout_s,
        "ticket_ttl_s": state.consoles.lifetime().as_secs(),
    });
    Ok(ApiOk(answer))
}

/// One accepted console, between the upgrade and its log record.
struct Session {
    state: Arc<AppState>,
    ticket: ConsoleTicket,
    /// Held for the session's whole life; dropping it frees the place.
    slot: ConsoleSlot,
    peer: String,
    idle: Duration,
}

/// Bytes moved by one session, and why it ended.
struct Outcome {
    to_vm: u64,
    to_browser: u64,
    ended: String,
    failed: bool,
}

impl Session {
    async fn run(self, mut socket: WebSocket) {
        let started = SystemTime::now();
        let clock = tokio::time::Instant::now();
        let endpoint = &self.ticket.endpoint;
        tracing::info!(
            "console of vm {} on host {} opened from {}",
            self.ticket.vm_uuid,
            self.ticket.host,
            self.peer
        );
        self.slot
            .stats()
            .tcp_connects
            .fetch_add(1, Ordering::Relaxed);
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await;
        let outcome = match connected {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                self.proxy(&mut socket, tcp).await
            }
            Ok(Err(error)) => self.unreachable(&mut socket, &error.to_string()).await,
            Err(_) => {
                let waited = format!("no answer within {} s", CONNECT_TIMEOUT.as_secs());
                self.unreachable(&mut socket, &waited).await
            }
        };
        self.record(started, clock.elapsed(), &outcome);
    }

    async fn unreachable(&self, socket: &mut WebSocket, error: &str) -> Outcome {
        close(socket, 1011, "the VM's console cannot be reached").await;
        Outcome {
            to_vm: 0,
            to_browser: 0,
            ended: format!(
                "cannot connect to the VNC server {}:{}: {error}",
                self.ticket.endpoint.host, self.ticket.endpoint.port
            ),
            failed: true,
        }
    }

    /// Move bytes both ways until one side closes or the session idles.
    /// Every write is awaited before the next read from the other side, so
    /// a slow reader slows its writer down and nothing buffers without bound.
    async fn proxy(&self, socket: &mut WebSocket, mut tcp: TcpStream) -> Outcome {
        let stats = self.slot.stats();
        let mut outcome = Outcome {
            to_vm: 0,
            to_browser: 0,
            ended: String::new(),
            failed: false,
        };
        let mut buffer = vec![0_u8; READ_CHUNK];
        let idle = tokio::time::sleep(self.idle);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Some(Ok(Message::Binary(bytes))) => {
                        if let Err(error) = tcp.write_all(&bytes).await {
                            outcome.ended = format!("the VNC server stopped reading: {error}");
                            close(socket, 1011, "the VM's console closed").await;
                            break;
                        }
                        let count = bytes.len() as u64;
                        outcome.to_vm += count;
                        stats.bytes_to_vm.fetch_add(count, Ordering::Relaxed);
                        idle.as_mut().reset(tokio::time::Instant::now() + self.idle);
                    }
                    Some(Ok(Message::Text(_))) => {
                        outcome.ended = "the browser sent text; VNC is binary".to_owned();
                        outcome.failed = true;
                        close(socket, 1003, "binary messages only").await;
                        break;
                    }
                    // Pings are answered by the websocket layer.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => {
                        outcome.ended = "the browser closed the console".to_owned();
                        break;
                    }
                    Some(Err(error)) => {
                        outcome.ended = format!("the browser's websocket failed: {error}");
                        break;
                    }
                },
                read = tcp.read(&mut buffer) => match read {
                    Ok(0) => {
                        outcome.ended = "the VM's console closed (VM stopped?)".to_owned();
                        close(socket, 1000, "the VM's console closed").await;
                        break;
                    }
                    Ok(count) => {
                        let message = Message::Binary(Bytes::copy_from_slice(&buffer[..count]));
                        if let Err(error) = socket.send(message).await {
                            outcome.ended = format!("the browser stopped reading: {error}");
                            break;
                        }
                        outcome.to_browser += count as u64;
                        stats.bytes_to_browser.fetch_add(count as u64, Ordering::Relaxed);
                        idle.as_mut().reset(tokio::time::Instant::now() + self.idle);
                    }
                    Err(error) => {
                        outcome.ended = format!("the VNC connection failed: {error}");
                        close(socket, 1011, "the VM's console failed").await;
                        break;
                    }
                },
                () = &mut idle => {
                    outcome.ended = format!("idle for {} s", self.idle.as_secs());
                    close(socket, 1000, "idle timeout").await;
                    break;
                }
            }
        }
        let _ = tcp.shutdown().await;
        outcome
    }

    fn record(&self, started: SystemTime, duration: Duration, outcome: &Outcome) {
        let ticket = &self.ticket;
        let message = format!(
            "console of vm {} on host {} opened by {} from {} at {}, {:.1} s, \
             {} bytes to the VM, {} bytes to the browser; ended: {}",
            ticket.vm_uuid,
            ticket.host,
            ticket.issued_by,
            self.peer,
            humantime::format_rfc3339_seconds(started),
            duration.as_secs_f64(),
            outcome.to_vm,
            outcome.to_browser,
            outcome.ended
        );
        tracing::info!("{message}");
        let level = if outcome.failed {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        let log = NewLog::new(level, "console", message)
            .host(&ticket.host)
            .vm(&ticket.vm_uuid);
        if let Err(error) = self.state.store.log_insert(&log) {
            tracing::error!("cannot store a log record: {error}");
        }
    }
}

/// Send a close frame, bounded in time: a browser that reads nothing must
/// not keep the session alive.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.send(frame)).await;
}

#[cfg(test)]
mod tests {
    use super::asset_path;

    #[test]
    fn only_plain_paths_under_core_and_vendor_are_served() {
        let (path, kind) = asset_path("core/rfb.js").expect("rfb.js");
        assert_eq!(path, std::path::Path::new("core/rfb.js"));
        assert!(kind.starts_with("text/javascript"));
        assert!(asset_path("vendor/pako/lib/zlib/inflate.js").is_some());
        for refused in [
            "core/../../etc/passwd.js",
            "core/./rfb.js",
            "core//rfb.js",
            "core/.hidden.js",
            "app/ui.js",
            "vnc.html",
            "core",
            "core/rfb",
            "core/rfb.sh",
            "core/%2e%2e/x.js",
            "core\\..\\x.js",
            "/etc/passwd",
            "core/rfb.js/",
        ] {
            assert!(asset_path(refused).is_none(), "{refused}");
        }
    }
}
