//! Web consoles: one-time secrets, session limits and counters.
//!
//! `vncons` binds a short-lived random *ticket* to a VM's console endpoint
//! (the engine's answer: VNC host, port and password). The console page
//! redeems the ticket once (`POST /console/session`) and gets the VNC
//! password and a second one-time secret, the *websocket token*, bound to
//! the same endpoint; the websocket (`GET /console/ws?token=`) redeems that
//! token once. Both secrets are taken out of their map on first use, so a
//! second use, or one after expiry, finds nothing. Nothing the browser sends
//! besides the secret chooses the endpoint.
//!
//! [`ConsoleSlot`] counts a live session against the per-VM and total limits
//! and releases it when dropped, whatever ended the session.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::plugin::bindings::ConsoleEndpoint;

/// Who a ticket was issued to. The API has one admin token, so its holder
/// is `admin`.
pub const ISSUED_BY_ADMIN: &str = "admin";

#[derive(Clone)]
pub struct ConsoleTicket {
    pub host: String,
    pub vm_uuid: String,
    pub endpoint: ConsoleEndpoint,
    /// The identity of the token that issued the ticket (log records).
    pub issued_by: String,
    expires: Instant,
}

/// Counters of the console proxy, read by `GET /api/system/consoles` and
/// the tests.
#[derive(Default)]
pub struct ConsoleStats {
    /// TCP connections attempted to a VNC endpoint.
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
    pub fn issue(&self, host: &str, vm_uuid: &str, endpoint: ConsoleEndpoint) -> String {
        self.issue_by(host, vm_uuid, endpoint, ISSUED_BY_ADMIN)
    }

    pub fn issue_by(
        &self,
        host: &str,
        vm_uuid: &str,
        endpoint: ConsoleEndpoint,
        issued_by: &str,
    ) -> String {
        self.tickets.insert(ConsoleTicket {
            host: host.to_owned(),
            vm_uuid: vm_uuid.to_owned(),
            endpoint,
            issued_by: issued_by.to_owned(),
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

    /// The counters as JSON-ready numbers.
    pub fn snapshot(&self) -> serde_json::Value {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "active": read(&self.stats.active),
            "sessions": read(&self.stats.sessions),
            "tcp_connects": read(&self.stats.tcp_connects),
            "refused": read(&self.stats.refused),
            "bytes_to_vm": read(&self.stats.bytes_to_vm),
            "bytes_to_browser": read(&self.stats.bytes_to_browser),
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
        let ticket = consoles.issue("h1", "vm1", endpoint(5901));
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
        let ticket = consoles.issue("h1", "vm1", endpoint(5901));
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
