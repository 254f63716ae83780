//! Web consoles: one-time secrets, session limits, counters, and the
//! sessions themselves (the websocket byte pump and its log record).
//!
//! A console is a VNC screen (`protocol = "vnc"`: the proxy connects to the
//! endpoint's TCP port) or a text terminal (`"terminal"`, containers: when
//! the browser connects, the engine's `vm-terminal` names the request that
//! opens a new exec on the host's API, which [`crate::caps::http`] sends with
//! the host's address, pin and credential; the upgraded stream is pumped
//! like VNC's).
//!
//! `vncons` binds a short-lived random *ticket* to a VM's console endpoint
//! (the engine's answer: VNC host, port and password). The console page
//! redeems the ticket once ([`session`], `POST /console/session`) and gets
//! the VNC password and a second one-time secret, the *websocket token*,
//! bound to the same endpoint; the websocket ([`websocket`],
//! `GET /console/ws?token=`) redeems that token once. Both secrets are taken
//! out of their map on first use, so a second use, or one after expiry,
//! finds nothing. Nothing the browser sends besides the secret chooses the
//! endpoint.
//!
//! [`ConsoleSlot`] counts a live session against the per-VM and total limits
//! and releases it when dropped, whatever ended the session.
//!
//! A [`Session`] ends when either side closes (a VM that stops closes its
//! VNC socket), on a protocol error, or after `idle_timeout_s` without a
//! byte either way. Each session is one log record (`actions = "console"`):
//! who issued the ticket, the browser's address, start, duration and bytes.
//!
//! The one piece of HTTP here is axum's [`WebSocket`], which the pump takes
//! as it is: see [`Session::run`] for why.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ServiceError, ServiceResult};
use crate::model::{ConsoleCounters, ConsoleLimits, ConsoleSessionAnswer};
use crate::plugin::EngineTarget;
use crate::plugin::bindings::ConsoleEndpoint;
use crate::state::AppState;
use crate::store::{LogLevel, NewLog, Store};

/// How long the proxy waits for the VNC server to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One read from the VNC socket, forwarded as one binary message.
const READ_CHUNK: usize = 64 << 10;
/// How long a close frame may take to leave: a browser that reads nothing
/// must not keep the session alive.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who a ticket was issued to. The API has one admin token, so its holder
/// is `admin`.
pub const ISSUED_BY_ADMIN: &str = "admin";

#[derive(Clone)]
pub struct ConsoleTicket {
    pub host: String,
    pub vm_uuid: String,
    pub endpoint: ConsoleEndpoint,
    /// The VM's engine and host: a `terminal` console asks the engine for
    /// a new terminal when the browser connects.
    pub engine: Option<EngineTarget>,
    /// The identity of the token that issued the ticket (log records).
    pub issued_by: String,
    expires: Instant,
}

/// Counters of the console proxy, read by `GET /api/system/consoles` and
/// the tests.
#[derive(Default)]
pub struct ConsoleStats {
    /// Connections attempted to a console (a VNC endpoint or a terminal).
    pub tcp_connects: AtomicU64,
    /// Sessions proxying right now.
    pub active: AtomicU64,
    /// Sessions ever started (a slot was taken).
    pub sessions: AtomicU64,
    /// Secrets refused (unknown, used or expired) and sessions over a limit.
    pub refused: AtomicU64,
    /// Bytes proxied from the browser to the VNC server, and back.
    pub bytes_to_vm: AtomicU64,
    pub bytes_to_browser: AtomicU64,
}

/// Why a session could not take a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    PerVm(u32),
    Total(u32),
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitExceeded::PerVm(0) | LimitExceeded::Total(0) => formatter.write_str(
                "web consoles are disabled (console.max_per_vm or console.max_total is 0)",
            ),
            LimitExceeded::PerVm(limit) => write!(
                formatter,
                "this VM already has {limit} open consoles (console.max_per_vm)"
            ),
            LimitExceeded::Total(limit) => write!(
                formatter,
                "the server already has {limit} open consoles (console.max_total)"
            ),
        }
    }
}

impl std::error::Error for LimitExceeded {}

/// One kind of one-time secret: secret → ticket, taken on redemption.
struct Secrets(Mutex<HashMap<String, ConsoleTicket>>);

impl Secrets {
    fn new() -> Secrets {
        Secrets(Mutex::new(HashMap::new()))
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<String, ConsoleTicket>> {
        self.0.lock()
    }

    /// Store a fresh secret for `ticket`; expired ones are dropped here, so
    /// the map holds only secrets that can still be redeemed.
    fn insert(&self, ticket: ConsoleTicket) -> String {
        let secret = crate::auth::generate_token();
        let now = Instant::now();
        let mut secrets = self.lock();
        secrets.retain(|_, issued| issued.expires > now);
        secrets.insert(secret.clone(), ticket);
        secret
    }

    fn take(&self, secret: &str) -> Option<ConsoleTicket> {
        let issued = self.lock().remove(secret)?;
        (issued.expires > Instant::now()).then_some(issued)
    }
}

pub struct ConsoleTickets {
    lifetime: Duration,
    tickets: Secrets,
    ws_tokens: Secrets,
    /// Open sessions per `(host, vm_uuid)`.
    open: Arc<OpenSessions>,
    pub stats: Arc<ConsoleStats>,
}

impl ConsoleTickets {
    pub fn new(lifetime: Duration) -> ConsoleTickets {
        ConsoleTickets {
            lifetime,
            tickets: Secrets::new(),
            ws_tokens: Secrets::new(),
            open: Arc::new(Mutex::new(HashMap::new())),
            stats: Arc::new(ConsoleStats::default()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issue a ticket for the endpoint, on behalf of the admin token.
    pub fn issue(
        &self,
        host: &str,
        vm_uuid: &str,
        endpoint: ConsoleEndpoint,
        engine: Option<EngineTarget>,
    ) -> String {
        self.tickets.insert(ConsoleTicket {
            host: host.to_owned(),
            vm_uuid: vm_uuid.to_owned(),
            endpoint,
            engine,
            issued_by: ISSUED_BY_ADMIN.to_owned(),
            expires: Instant::now() + self.lifetime,
        })
    }

    /// Take the ticket: a second redemption, or one after expiry, finds
    /// nothing (and counts as refused).
    pub fn redeem(&self, ticket: &str) -> Option<ConsoleTicket> {
        self.counted(self.tickets.take(ticket))
    }

    /// Bind a websocket token to a redeemed ticket, valid for the ticket
    /// lifetime from now.
    pub fn issue_ws_token(&self, redeemed: &ConsoleTicket) -> String {
        self.ws_tokens.insert(ConsoleTicket {
            expires: Instant::now() + self.lifetime,
            ..redeemed.clone()
        })
    }

    /// Take the websocket token; single use, like tickets.
    pub fn redeem_ws_token(&self, token: &str) -> Option<ConsoleTicket> {
        self.counted(self.ws_tokens.take(token))
    }

    fn counted(&self, redeemed: Option<ConsoleTicket>) -> Option<ConsoleTicket> {
        if redeemed.is_none() {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        redeemed
    }

    /// Take a session slot for the VM, within `max_per_vm` and `max_total`.
    pub fn acquire(
        &self,
        host: &str,
        vm_uuid: &str,
        max_per_vm: u32,
        max_total: u32,
    ) -> Result<ConsoleSlot, LimitExceeded> {
        let mut open = lock_open(&self.open);
        let total: u32 = open.values().sum();
        let key = (host.to_owned(), vm_uuid.to_owned());
        let of_vm = open.get(&key).copied().unwrap_or(0);
        let verdict = if total >= max_total {
            Err(LimitExceeded::Total(max_total))
        } else if of_vm >= max_per_vm {
            Err(LimitExceeded::PerVm(max_per_vm))
        } else {
            Ok(())
        };
        if let Err(exceeded) = verdict {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(exceeded);
        }
        open.insert(key.clone(), of_vm + 1);
        self.stats.active.fetch_add(1, Ordering::Relaxed);
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        Ok(ConsoleSlot {
            open: self.open.clone(),
            stats: self.stats.clone(),
            key,
        })
    }
}

type OpenSessions = Mutex<HashMap<(String, String), u32>>;

fn lock_open(open: &OpenSessions) -> parking_lot::MutexGuard<'_, HashMap<(String, String), u32>> {
    open.lock()
}

/// A live session's place in the limits; released on drop.
pub struct ConsoleSlot {
    open: Arc<OpenSessions>,
    stats: Arc<ConsoleStats>,
    key: (String, String),
}

impl ConsoleSlot {
    pub fn stats(&self) -> &ConsoleStats {
        &self.stats
    }
}

impl Drop for ConsoleSlot {
    fn drop(&mut self) {
        let mut open = lock_open(&self.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `POST /console/session`: redeem a ticket. The answer carries the VNC
/// password and the websocket token.
pub fn session(state: &AppState, ticket: &str) -> ServiceResult<ConsoleSessionAnswer> {
    let consoles = &state.consoles;
    if ticket.is_empty() {
        consoles.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ServiceError::Unauthorized(
            "ticket: missing; open the console through vncons".to_owned(),
        ));
    }
    let ticket = consoles.redeem(ticket).ok_or_else(|| {
        ServiceError::Unauthorized("ticket: unknown, already used or expired".to_owned())
    })?;
    Ok(ConsoleSessionAnswer {
        ws_token: consoles.issue_ws_token(&ticket),
        protocol: ticket.endpoint.protocol,
        password: ticket.endpoint.password,
        hs_name: ticket.host,
        vm_uuid: ticket.vm_uuid,
        expires_in: consoles.lifetime().as_secs(),
    })
}

/// `GET /console/ws?token=`: redeem the websocket token and take a slot,
/// before the upgrade is answered and before any TCP connection. `peer` is
/// the browser's address (for the log record).
pub fn websocket(
    state: &Arc<AppState>,
    token: &str,
    peer: Option<IpAddr>,
) -> ServiceResult<Session> {
    let consoles = &state.consoles;
    let refused = || consoles.stats.refused.fetch_add(1, Ordering::Relaxed);
    if token.is_empty() {
        refused();
        return Err(ServiceError::Unauthorized(
            "token: missing; redeem a ticket at /console/session".to_owned(),
        ));
    }
    let ticket = consoles.redeem_ws_token(token).ok_or_else(|| {
        ServiceError::Unauthorized("token: unknown, already used or expired".to_owned())
    })?;
    let kind = match ticket.endpoint.protocol.as_str() {
        PROTOCOL_VNC => ConsoleKind::Vnc,
        PROTOCOL_TERMINAL => match &ticket.engine {
            Some(engine) => ConsoleKind::Terminal {
                state: state.clone(),
                engine: Box::new(engine.clone()),
            },
            None => {
                refused();
                return Err(ServiceError::Unsupported(
                    "this terminal console has no engine to open it".to_owned(),
                ));
            }
        },
        other => {
            refused();
            return Err(ServiceError::Unsupported(format!(
                "console protocol {other:?} is not supported (vnc, terminal)"
            )));
        }
    };
    let config = state.config();
    let slot = consoles.acquire(
        &ticket.host,
        &ticket.vm_uuid,
        config.console.max_per_vm,
        config.console.max_total,
    )?;
    Ok(Session {
        store: state.store.clone(),
        ticket,
        kind,
        slot,
        peer: peer.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string()),
        idle: Duration::from_secs(config.console.idle_timeout_s),
    })
}

/// `GET /api/system/consoles`: the proxy's counters and the limits in force.
pub fn counters(state: &AppState) -> ConsoleCounters {
    let config = state.config();
    let stats = &state.consoles.stats;
    let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    ConsoleCounters {
        active: read(&stats.active),
        sessions: read(&stats.sessions),
        tcp_connects: read(&stats.tcp_connects),
        refused: read(&stats.refused),
        bytes_to_vm: read(&stats.bytes_to_vm),
        bytes_to_browser: read(&stats.bytes_to_browser),
        limits: ConsoleLimits {
            max_per_vm: config.console.max_per_vm,
            max_total: config.console.max_total,
            idle_timeout_s: config.console.idle_timeout_s,
            ticket_ttl_s: state.consoles.lifetime().as_secs(),
        },
    }
}

/// The `protocol` of a console endpoint: a VNC server the proxy connects
/// to, or a terminal the engine opens on the host's API (containers).
pub const PROTOCOL_VNC: &str = "vnc";
pub const PROTOCOL_TERMINAL: &str = "terminal";

/// What a session joins the browser's websocket to.
enum ConsoleKind {
    /// Binary messages both ways, to the endpoint's TCP port.
    Vnc,
    /// The terminal's bytes as binary messages; a text message from the
    /// browser is a resize (`{"cols":80,"rows":24}`).
    Terminal {
        state: Arc<AppState>,
        engine: Box<EngineTarget>,
    },
}

/// A resize of the browser's terminal.
#[derive(serde::Deserialize)]
struct TerminalSize {
    cols: u16,
    rows: u16,
}

/// One accepted console, between the upgrade and its log record.
pub struct Session {
    store: Arc<Store>,
    ticket: ConsoleTicket,
    kind: ConsoleKind,
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
    /// Connect to the VM's console (its VNC endpoint, or a new terminal),
    /// pump bytes until the session ends, and write its log record.
    ///
    /// This takes axum's `WebSocket` rather than a trait of our own: the
    /// pump needs the message kinds (binary, text, ping, close with a code
    /// and reason) and the socket's awaited sends for back-pressure, so an
    /// abstraction would restate axum's `Message` and `Sink`/`Stream` for
    /// one caller, while the upgrade that yields the socket is axum's anyway.
    pub async fn run(self, mut socket: WebSocket) {
        let started = SystemTime::now();
        let clock = tokio::time::Instant::now();
        tracing::info!(
            "console of vm {} on host {} opened from {}",
            self.ticket.vm_uuid,
            self.ticket.host,
            self.peer
        );
        let outcome = match &self.kind {
            ConsoleKind::Vnc => self.run_vnc(&mut socket).await,
            ConsoleKind::Terminal { state, engine } => {
                self.run_terminal(&mut socket, state, engine).await
            }
        };
        self.record(started, clock.elapsed(), &outcome).await;
    }

    async fn run_vnc(&self, socket: &mut WebSocket) -> Outcome {
        let endpoint = &self.ticket.endpoint;
        self.slot
            .stats()
            .tcp_connects
            .fetch_add(1, Ordering::Relaxed);
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await;
        let failure = match connected {
            Ok(Ok(tcp)) => {
                // Keystrokes and pointer moves are tiny; do not batch them.
                let _ = tcp.set_nodelay(true);
                return self.proxy(socket, tcp, None).await;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        };
        let why = format!(
            "cannot connect to the VNC server {}:{}: {failure}",
            endpoint.host, endpoint.port
        );
        self.unreachable(socket, why).await
    }

    /// Ask the engine for a new terminal (a container's exec) and open it on
    /// the host's API, with the host's scope and credential.
    async fn run_terminal(
        &self,
        socket: &mut WebSocket,
        state: &Arc<AppState>,
        engine: &EngineTarget,
    ) -> Outcome {
        let request = match state
            .plugins
            .vm_terminal(engine, &self.ticket.vm_uuid)
            .await
        {
            Ok(request) => request,
            Err(error) => {
                let why = format!("the engine opened no terminal: {error}");
                return self.unreachable(socket, why).await;
            }
        };
        self.slot
            .stats()
            .tcp_connects
            .fetch_add(1, Ordering::Relaxed);
        let limits = state.config().http.clone();
        match crate::caps::http::open_terminal(&engine.scope, &limits, &request).await {
            Ok(stream) => {
                let resize = Resize {
                    engine: engine.clone(),
                    limits,
                    path: request.resize_path,
                };
                self.proxy(socket, stream, Some(&resize)).await
            }
            Err(why) => {
                let why = format!("cannot open the terminal: {why}");
                self.unreachable(socket, why).await
            }
        }
    }

    async fn unreachable(&self, socket: &mut WebSocket, why: String) -> Outcome {
        close(socket, 1011, "the VM's console cannot be reached").await;
        Outcome {
            to_vm: 0,
            to_browser: 0,
            ended: why,
            failed: true,
        }
    }

    /// Move bytes both ways until one side closes or the session idles.
    /// Every write is awaited before the next read from the other side, so
    /// a slow reader slows its writer down and nothing buffers without bound.
    async fn proxy<S>(&self, socket: &mut WebSocket, mut tcp: S, resize: Option<&Resize>) -> Outcome
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
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
                            outcome.ended = format!("the VM's console stopped reading: {error}");
                            close(socket, 1011, "the VM's console closed").await;
                            break;
                        }
                        let count = bytes.len() as u64;
                        outcome.to_vm += count;
                        stats.bytes_to_vm.fetch_add(count, Ordering::Relaxed);
                        idle.as_mut().reset(tokio::time::Instant::now() + self.idle);
                    }
                    Some(Ok(Message::Text(text))) => match resize {
                        Some(resize) => resize.apply(&text),
                        None => {
                            outcome.ended = "the browser sent text; VNC is binary".to_owned();
                            outcome.failed = true;
                            close(socket, 1003, "binary messages only").await;
                            break;
                        }
                    },
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
                        outcome.ended = format!("the VM's console connection failed: {error}");
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

    /// The session's one log record. The store is SQLite, a blocking call:
    /// it runs on the blocking pool, never on a runtime worker.
    async fn record(&self, started: SystemTime, duration: Duration, outcome: &Outcome) {
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
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.log_insert(&log)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!("cannot store a log record: {error}"),
            Err(error) => tracing::error!("cannot store a log record: {error}"),
        }
    }
}

/// How a terminal follows the browser's size: a call on the host's API.
struct Resize {
    engine: EngineTarget,
    limits: crate::config::HttpConfig,
    /// Empty: the API has no resize; the size stays.
    path: String,
}

impl Resize {
    /// Send the new size; a failure is only logged (the terminal goes on).
    fn apply(&self, text: &str) {
        if self.path.is_empty() {
            return;
        }
        let Ok(size) = serde_json::from_str::<TerminalSize>(text) else {
            tracing::debug!("a console sent text that is no terminal size");
            return;
        };
        let separator = if self.path.contains('?') { '&' } else { '?' };
        let path = format!(
            "{}{separator}h={}&w={}",
            self.path,
            size.rows.clamp(1, 1000),
            size.cols.clamp(1, 1000)
        );
        let scope = self.engine.scope.clone();
        let limits = self.limits.clone();
        tokio::spawn(async move {
            if let Err(why) = crate::caps::http::post_to_api(&scope, &limits, &path).await {
                tracing::debug!("resizing a terminal on host {}: {why}", scope.name);
            }
        });
    }
}

/// Send a close frame, bounded in time by [`CLOSE_TIMEOUT`].
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(frame)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> ConsoleEndpoint {
        ConsoleEndpoint {
            protocol: "vnc".to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
            password: "pw".to_owned(),
        }
    }

    #[test]
    fn tickets_and_ws_tokens_are_single_use() {
        let consoles = ConsoleTickets::new(Duration::from_secs(60));
        let ticket = consoles.issue("h1", "vm1", endpoint(5901), None);
        let redeemed = consoles.redeem(&ticket).expect("first use");
        assert_eq!(
            (redeemed.vm_uuid.as_str(), redeemed.issued_by.as_str()),
            ("vm1", "admin")
        );
        assert!(consoles.redeem(&ticket).is_none(), "second use");
        let token = consoles.issue_ws_token(&redeemed);
        assert!(consoles.redeem(&token).is_none(), "a token is no ticket");
        assert!(
            consoles.redeem_ws_token(&ticket).is_none(),
            "a ticket is no token"
        );
        assert_eq!(
            consoles.redeem_ws_token(&token).map(|t| t.endpoint.port),
            Some(5901)
        );
        assert!(consoles.redeem_ws_token(&token).is_none());
        assert_eq!(consoles.stats.refused.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn expired_tickets_are_refused() {
        let consoles = ConsoleTickets::new(Duration::ZERO);
        let ticket = consoles.issue("h1", "vm1", endpoint(5901), None);
        assert!(consoles.redeem(&ticket).is_none());
    }

    #[test]
    fn slots_respect_both_limits_and_are_released_on_drop() {
        let consoles = ConsoleTickets::new(Duration::from_secs(60));
        let first = consoles.acquire("h1", "vm1", 2, 3).expect("1st");
        let _second = consoles.acquire("h1", "vm1", 2, 3).expect("2nd");
        assert_eq!(
            consoles.acquire("h1", "vm1", 2, 3).err(),
            Some(LimitExceeded::PerVm(2))
        );
        let _other = consoles.acquire("h1", "vm2", 2, 3).expect("other vm");
        assert_eq!(
            consoles.acquire("h1", "vm3", 2, 3).err(),
            Some(LimitExceeded::Total(3))
        );
        drop(first);
        assert_eq!(consoles.stats.active.load(Ordering::Relaxed), 2);
        consoles.acquire("h1", "vm1", 2, 3).expect("released");
        assert_eq!(consoles.stats.refused.load(Ordering::Relaxed), 2);
    }
}
