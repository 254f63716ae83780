//! The web console's bodies and answers: the ticket redemption
//! (`POST /console/session`), the websocket's query (`GET /console/ws`) and
//! the counters (`GET /api/system/consoles`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /console/session` body. Unknown fields are refused: nothing but
/// the ticket may choose the console.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSessionInput {
    #[serde(default)]
    pub ticket: String,
}

/// `GET /console/ws` query; unknown parameters are refused, as above.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleWsQuery {
    #[serde(default)]
    pub token: String,
}

/// A redeemed ticket: what the console page needs to open the websocket
/// and log in to the VNC server.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsoleSessionAnswer {
    /// The one-time secret of `GET /console/ws?token=`.
    pub ws_token: String,
    /// `vnc` (a screen, noVNC) or `terminal` (a text terminal, xterm.js).
    pub protocol: String,
    /// The VNC password (only ever in this body, never in a URL).
    pub password: String,
    pub hs_name: String,
    pub vm_uuid: String,
    /// Seconds the websocket token stays valid.
    pub expires_in: u64,
}

/// The console proxy's counters since the server started, and its limits.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsoleCounters {
    /// Sessions proxying right now.
    pub active: u64,
    /// Sessions ever started (a slot was taken).
    pub sessions: u64,
    /// TCP connections attempted to a VNC endpoint.
    pub tcp_connects: u64,
    /// Secrets refused (missing, unknown, used or expired) and sessions over a limit.
    pub refused: u64,
    /// Bytes proxied from browsers to VNC servers.
    pub bytes_to_vm: u64,
    /// Bytes proxied from VNC servers to browsers.
    pub bytes_to_browser: u64,
    pub limits: ConsoleLimits,
}

/// The `[console]` settings in force.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsoleLimits {
    /// Open consoles allowed per VM (0: consoles disabled).
    pub max_per_vm: u32,
    /// Open consoles allowed in total (0: consoles disabled).
    pub max_total: u32,
    /// A console with no byte either way for this long is closed.
    pub idle_timeout_s: u64,
    /// Lifetime of a ticket, and of a websocket token.
    pub ticket_ttl_s: u64,
}
