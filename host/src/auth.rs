//! Tokens: the admin token and the named tokens with a role and a host
//! scope. Random 256-bit, URL-safe text; stored only as SHA-256 hashes; wrong
//! tokens rate limited per client address. A request's token becomes a
//! [`Principal`], and each route's [`Access`] says which principals it takes.
//!
//! A plain SHA-256 is enough here (no password hashing): the token carries
//! 256 bits of randomness, so there is nothing to guess from the hash. The
//! admin hash is compared in constant time; named tokens are found by their
//! hash through an index, which can at most time the hash, not the token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use rand::{RngCore, TryRngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::Role;
use crate::store::{Store, StoreResult, now_ms};

/// How often a named token's `last_used_at` is written, at most.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// Who a request is, once its token was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The named token's name; `admin` for the admin token.
    pub name: String,
    pub role: Role,
    /// The hosts it reaches; empty = every host.
    pub hosts: Vec<String>,
    /// A VM session (single sign-on from a panel): the one VM it reaches,
    /// on `hosts[0]`, through the customer routes only.
    pub vm: Option<String>,
}

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// System routes and host create, update, delete and power: admin only.
    Admin,
    /// Reading hosts, VMs and their entries: every role, within its hosts.
    Read,
    /// Changing a VM or its NAT, IP and proxy entries, or opening its
    /// console: admin and operator, within their hosts.
    Operate,
}

impl Access {
    fn describe(self) -> &'static str {
        match self {
            Access::Admin => "an admin token",
            Access::Read => "any token",
            Access::Operate => "an admin or operator token",
        }
    }
}

impl Principal {
    pub fn admin() -> Principal {
        Principal {
            name: "admin".to_owned(),
            role: Role::Admin,
            hosts: Vec::new(),
            vm: None,
        }
    }

    /// Whether an event about `host` and `vm` (empty: none) is for this
    /// principal: a VM session sees its VM's, a token its hosts', and only
    /// the admin role sees the system's own (no host).
    pub fn sees(&self, host: &str, vm: &str) -> bool {
        match &self.vm {
            Some(own) => self.hosts.first().map(String::as_str) == Some(host) && own == vm,
            None if host.is_empty() => self.role == Role::Admin,
            None => self.reaches_host(host),
        }
    }

    pub fn reaches_host(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|reached| reached == host)
    }

    /// Whether this principal may call a route that needs `access` (and
    /// that a VM session may use, when `customer`), on `host` and `vm` when
    /// the route names them; the refusal says why.
    pub fn may(
        &self,
        access: Access,
        customer: bool,
        host: Option<&str>,
        vm: Option<&str>,
    ) -> Result<(), String> {
        if let Some(own) = &self.vm {
            let own_host = self.hosts.first().map(String::as_str);
            if !customer {
                return Err(format!("a {} may not call this route", self.name));
            }
            // A customer route whose path names no VM (the event stream)
            // narrows its answer to the session's VM itself.
            if host.is_none() && vm.is_none() {
                return Ok(());
            }
            if host != own_host || vm != Some(own.as_str()) {
                return Err(format!("a {} reaches that VM only", self.name));
            }
            return Ok(());
        }
        let allowed = match self.role {
            Role::Admin => true,
            Role::Operator => access != Access::Admin,
            Role::ReadOnly => access == Access::Read,
        };
        if !allowed {
            return Err(format!(
                "token {:?} is {}: this route needs {}",
                self.name,
                self.role.as_str(),
                access.describe()
            ));
        }
        match host {
            Some(host) if !self.reaches_host(host) => Err(format!(
                "token {:?} does not reach host {host:?} (it reaches: {})",
                self.name,
                self.hosts.join(", ")
            )),
            _ => Ok(()),
        }
    }
}

/// A new random token: 32 bytes from the OS generator, base64url without padding.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .unwrap_or_else(|_| rand::rng().fill_bytes(&mut bytes));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Why a token chosen by the operator (`tsetup`) is refused, if it is.
pub fn check_chosen_token(token: &str) -> Result<(), String> {
    if !(16..=128).contains(&token.len()) {
        return Err(format!("must be 16 to 128 characters, got {}", token.len()));
    }
    if let Some(bad) = token.chars().find(|character| {
        !(character.is_ascii_alphanumeric() || *character == '_' || *character == '-')
    }) {
        return Err(format!("may only contain A-Z a-z 0-9 _ -, found {bad:?}"));
    }
    let distinct = token
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < 8 {
        return Err(format!(
            "is too weak: only {distinct} distinct characters (at least 8)"
        ));
    }
    Ok(())
}

/// Replace the admin token and answer the new one.
pub fn reset_token(store: &Store) -> StoreResult<String> {
    let token = generate_token();
    store.set_token_hash(&hash_token(&token))?;
    Ok(token)
}

/// Create the first token when the database has none; answers it so the
/// caller can print it once.
pub fn ensure_token(store: &Store) -> StoreResult<Option<String>> {
    match store.token_hash()? {
        Some(_) => Ok(None),
        None => reset_token(store).map(Some),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Principal),
    Rejected,
    /// A named token past its `expires_at`.
    Expired(String),
    Throttled,
}

/// Counts wrong tokens per client address in a fixed window.
pub struct AuthGuard {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthGuard {
    pub fn new(max_failures: u32, window: Duration) -> AuthGuard {
        AuthGuard {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Check `presented` against the admin token's hash, then the named
    /// tokens. The admin hash is read on every request (through the store's
    /// file-signature cache) so a `token reset` from the CLI applies at once.
    /// The right token is accepted even from an address that is throttled:
    /// the limiter slows wrong guesses, it must not lock the admin out.
    pub fn verify(&self, store: &Store, client: IpAddr, presented: &str) -> StoreResult<Verdict> {
        if let Some(verdict) = Self::verify_hash(store, &hash_token(presented))? {
            return Ok(verdict);
        }
        let now = Instant::now();
        let mut failures = self.failures.lock();
        if let Some((since, count)) = failures.get(&client)
            && now.duration_since(*since) < self.window
            && *count >= self.max_failures
        {
            return Ok(Verdict::Throttled);
        }
        // Forget stale windows so the map cannot grow without bound.
        if failures.len() > 10_000 {
            failures.retain(|_, (since, _)| now.duration_since(*since) < self.window);
        }
        let entry = failures.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        Ok(Verdict::Rejected)
    }

    /// The token whose hash is `hash`, as it stands now: accepted, expired,
    /// or `None` when no token has that hash (any more). Sessions opened with
    /// a token are checked this way on each request.
    pub fn verify_hash(store: &Store, hash: &[u8; 32]) -> StoreResult<Option<Verdict>> {
        if let Some(stored) = store.token_hash_cached()?
            && bool::from(stored.as_slice().ct_eq(hash))
        {
            return Ok(Some(Verdict::Accepted(Principal::admin())));
        }
        let Some(record) = store.api_token_by_hash(hash)? else {
            return Ok(None);
        };
        let now = now_ms();
        if record.expires_at.is_some_and(|expiry| expiry <= now) {
            return Ok(Some(Verdict::Expired(record.name)));
        }
        if record
            .last_used_at
            .is_none_or(|used| now - used >= LAST_USED_RESOLUTION_MS)
            && let Err(error) = store.api_token_touch(&record.name, now)
        {
            tracing::warn!("recording the use of token {:?}: {error}", record.name);
        }
        Ok(Some(Verdict::Accepted(Principal {
            name: record.name,
            role: record.role,
            hosts: record.hosts,
            vm: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[track_caller]
    fn check(token: &str, ok: bool) {
        assert_eq!(check_chosen_token(token).is_ok(), ok, "token {token:?}");
    }

    #[test]
    fn chosen_tokens() {
        check("", false);
        check("short", false);
        check("aaaaaaaaaaaaaaaaaaaa", false);
        check("abababababababababab", false);
        check("Good_token-0123456789", true);
        check("has space in it 0123456", false);
        check("has;semicolon0123456789", false);
        check(&"x1y2z3w4v5u6t7s8".repeat(9), false);
    }

    #[test]
    fn generated_tokens_are_distinct_and_url_safe() {
        let first = generate_token();
        let second = generate_token();
        assert_ne!(first, second);
        assert_eq!(first.len(), 43);
        assert!(check_chosen_token(&first).is_ok());
    }

    fn open_store() -> (tempfile::TempDir, Store) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(&directory.path().join("db.sqlite")).expect("store");
        (directory, store)
    }

    fn named(store: &Store, role: Role, hosts: &[&str], expires_at: Option<i64>) -> String {
        let token = generate_token();
        let record = crate::store::ApiTokenRecord {
            name: "t".to_owned(),
            role,
            hosts: hosts.iter().map(|host| host.to_string()).collect(),
            created_at: now_ms(),
            expires_at,
            last_used_at: None,
        };
        store
            .api_token_insert(&record, &hash_token(&token))
            .expect("insert");
        token
    }

    #[test]
    fn named_tokens_become_principals_until_they_expire() {
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let guard = AuthGuard::new(100, Duration::from_secs(60));
        let (_directory, store) = open_store();
        let admin = reset_token(&store).expect("admin token");
        assert_eq!(
            guard.verify(&store, local, &admin).expect("verify"),
            Verdict::Accepted(Principal::admin())
        );
        let token = named(&store, Role::Operator, &["h1"], None);
        let Verdict::Accepted(principal) = guard.verify(&store, local, &token).expect("verify")
        else {
            panic!("the named token is refused");
        };
        assert_eq!(principal.role, Role::Operator);
        assert!(
            principal
                .may(Access::Operate, false, Some("h1"), None)
                .is_ok()
        );
        assert!(
            principal
                .may(Access::Operate, false, Some("h2"), None)
                .is_err()
        );
        assert!(principal.may(Access::Admin, false, None, None).is_err());
        let used = store.api_token_list().expect("list")[0].last_used_at;
        assert!(used.is_some(), "last use recorded");

        let (_other, expired_store) = open_store();
        let expired = named(&expired_store, Role::Admin, &[], Some(now_ms() - 1));
        assert_eq!(
            guard
                .verify(&expired_store, local, &expired)
                .expect("verify"),
            Verdict::Expired("t".to_owned())
        );
    }

    #[test]
    fn read_only_reads_only() {
        let principal = Principal {
            name: "viewer".to_owned(),
            role: Role::ReadOnly,
            hosts: Vec::new(),
            vm: None,
        };
        assert!(
            principal
                .may(Access::Read, false, Some("any"), None)
                .is_ok()
        );
        assert!(
            principal
                .may(Access::Operate, false, Some("any"), None)
                .is_err()
        );
        assert!(principal.may(Access::Admin, false, None, None).is_err());
    }
}
