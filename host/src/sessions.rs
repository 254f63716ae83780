//! Browser sessions, kept in an HttpOnly cookie so that no script holds a
//! credential:
//! - single sign-on from a billing panel to one VM: the panel asks for a
//!   short-lived, single-use token (`temptoken`), the customer's browser
//!   redeems it (`templogin`) for a session that reaches that VM's customer
//!   routes and nothing else;
//! - the web panel's sign-in with a token (`POST /api/system/session`): the
//!   session stands for that token, checked again on every request (a
//!   revoked or reset token ends its sessions).
//!
//! All live in memory (a restart signs browsers out), hashed, bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::auth::{Principal, generate_token, hash_token};
use crate::model::Role;

/// The session cookie's name.
pub const COOKIE: &str = "openidcs_session";
/// At most this many pending tokens, and as many sessions: past it, expired
/// ones are dropped, and if none are, new ones are refused.
const MAX_ENTRIES: usize = 10_000;

struct Grant<T> {
    owner: T,
    expires: Instant,
}

/// A sign-on token's or a VM session's VM.
#[derive(Clone)]
struct VmGrant {
    host: String,
    vm: String,
}

/// Whom an open session stands for.
#[derive(Clone)]
enum Owner {
    Vm(VmGrant),
    /// The hash of the token the browser signed in with.
    Token([u8; 32]),
}

/// Whom a session cookie stands for, as the token check needs it.
pub enum SessionOwner {
    /// A VM's customer: the principal, final.
    Vm(Principal),
    /// A token's holder: the token's hash, to check against the tokens now.
    Token([u8; 32]),
}

/// The pending sign-on tokens and the open sessions.
pub struct Sessions {
    temp_ttl: Duration,
    session_ttl: Duration,
    pending: Mutex<HashMap<[u8; 32], Grant<VmGrant>>>,
    open: Mutex<HashMap<[u8; 32], Grant<Owner>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many sign-on tokens or sessions are open; try again later")]
pub struct Full;

fn insert<T>(
    map: &Mutex<HashMap<[u8; 32], Grant<T>>>,
    key: [u8; 32],
    grant: Grant<T>,
) -> Result<(), Full> {
    let mut map = map.lock();
    if map.len() >= MAX_ENTRIES {
        let now = Instant::now();
        map.retain(|_, grant| grant.expires > now);
        if map.len() >= MAX_ENTRIES {
            return Err(Full);
        }
    }
    map.insert(key, grant);
    Ok(())
}

impl Sessions {
    pub fn new(temp_ttl: Duration, session_ttl: Duration) -> Sessions {
        Sessions {
            temp_ttl,
            session_ttl,
            pending: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A new sign-on token for VM `vm` of `host`, and when it expires.
    pub fn issue(&self, host: &str, vm: &str) -> Result<(String, SystemTime), Full> {
        let token = generate_token();
        let grant = Grant {
            owner: VmGrant {
                host: host.to_owned(),
                vm: vm.to_owned(),
            },
            expires: Instant::now() + self.temp_ttl,
        };
        insert(&self.pending, hash_token(&token), grant)?;
        Ok((token, SystemTime::now() + self.temp_ttl))
    }

    /// Use a sign-on token (once): the VM it is for, if it is valid.
    pub fn redeem(&self, token: &str) -> Option<(String, String)> {
        let grant = self.pending.lock().remove(&hash_token(token))?;
        (grant.expires > Instant::now()).then_some((grant.owner.host, grant.owner.vm))
    }

    /// Open a session for the VM's customer; answers the cookie's value.
    pub fn open_vm(&self, host: &str, vm: &str) -> Result<String, Full> {
        self.open(Owner::Vm(VmGrant {
            host: host.to_owned(),
            vm: vm.to_owned(),
        }))
    }

    /// Open a session for a token (already accepted); answers the cookie's
    /// value.
    pub fn open_token(&self, token: &str) -> Result<String, Full> {
        self.open(Owner::Token(hash_token(token)))
    }

    fn open(&self, owner: Owner) -> Result<String, Full> {
        let session = generate_token();
        let grant = Grant {
            owner,
            expires: Instant::now() + self.session_ttl,
        };
        insert(&self.open, hash_token(&session), grant)?;
        Ok(session)
    }

    /// End a session (signing out); unknown ones are already ended.
    pub fn close(&self, session: &str) {
        self.open.lock().remove(&hash_token(session));
    }

    /// Seconds a session lasts (the cookie's Max-Age).
    pub fn session_seconds(&self) -> u64 {
        self.session_ttl.as_secs()
    }

    /// Whom a session cookie stands for, while it lasts.
    pub fn owner(&self, session: &str) -> Option<SessionOwner> {
        let open = self.open.lock();
        let grant = open.get(&hash_token(session))?;
        if grant.expires <= Instant::now() {
            return None;
        }
        Some(match &grant.owner {
            Owner::Vm(VmGrant { host, vm }) => SessionOwner::Vm(Principal {
                name: format!("session of {host}/{vm}"),
                role: Role::Operator,
                hosts: vec![host.clone()],
                vm: Some(vm.clone()),
            }),
            Owner::Token(hash) => SessionOwner::Token(*hash),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let sessions = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let (token, _) = sessions.issue("h1", "vm1").expect("issued");
        assert_eq!(
            sessions.redeem(&token),
            Some(("h1".to_owned(), "vm1".to_owned()))
        );
        assert_eq!(sessions.redeem(&token), None, "single use");
        let (late, _) = sessions.issue("h1", "vm1").expect("issued");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.redeem(&late), None, "expired");
        assert_eq!(sessions.redeem("made-up"), None);

        let cookie = sessions.open_vm("h1", "vm1").expect("opened");
        let Some(SessionOwner::Vm(principal)) = sessions.owner(&cookie) else {
            panic!("a VM session");
        };
        assert_eq!(principal.vm.as_deref(), Some("vm1"));
        assert_eq!(principal.hosts, ["h1"]);
        assert!(sessions.owner("made-up").is_none());
    }

    #[test]
    fn a_token_session_stands_for_its_token_until_it_is_closed() {
        let sessions = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let cookie = sessions.open_token("the-token").expect("opened");
        let Some(SessionOwner::Token(hash)) = sessions.owner(&cookie) else {
            panic!("a token session");
        };
        assert_eq!(hash, hash_token("the-token"));
        sessions.close(&cookie);
        assert!(sessions.owner(&cookie).is_none(), "signed out");
    }
}
