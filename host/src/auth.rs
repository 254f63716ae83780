//! Admin tokens: random 256-bit, URL-safe text; stored only as SHA-256
//! hashes; compared in constant time; wrong tokens rate limited per client
//! address.
//!
//! A plain SHA-256 is enough here (no password hashing): the token carries
//! 256 bits of randomness, so there is nothing to guess from the hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use rand::{RngCore, TryRngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Store, StoreResult};

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
    Accepted,
    Rejected,
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

    /// Check `presented` against the stored hash. The stored hash is read on
    /// every request so a `token reset` from the CLI applies at once. The
    /// right token is accepted even from an address that is throttled: the
    /// limiter slows wrong guesses, it must not lock the admin out.
    pub fn verify(&self, store: &Store, client: IpAddr, presented: &str) -> StoreResult<Verdict> {
        let accepted = match store.token_hash_cached()? {
            Some(stored) => bool::from(stored.as_slice().ct_eq(&hash_token(presented))),
            None => false,
        };
        if accepted {
            return Ok(Verdict::Accepted);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
