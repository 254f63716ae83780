//! Single sign-on from a billing panel to one VM: the panel asks for a
//! short-lived, single-use token (`temptoken`), the customer's browser
//! redeems it (`templogin`) for a session cookie that reaches that VM's
//! customer routes and nothing else. Both live in memory (a restart signs
//! customers out, which a panel's next click undoes), hashed, bounded.

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

struct Grant {
    host: String,
    vm: String,
    expires: Instant,
}

/// The pending sign-on tokens and the open VM sessions.
pub struct VmSessions {
    temp_ttl: Duration,
    session_ttl: Duration,
    pending: Mutex<HashMap<[u8; 32], Grant>>,
    open: Mutex<HashMap<[u8; 32], Grant>>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many sign-on tokens or sessions are open; try again later")]
pub struct Full;

fn insert(map: &Mutex<HashMap<[u8; 32], Grant>>, key: [u8; 32], grant: Grant) -> Result<(), Full> {
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

impl VmSessions {
    pub fn new(temp_ttl: Duration, session_ttl: Duration) -> VmSessions {
        VmSessions {
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
            host: host.to_owned(),
            vm: vm.to_owned(),
            expires: Instant::now() + self.temp_ttl,
        };
        insert(&self.pending, hash_token(&token), grant)?;
        Ok((token, SystemTime::now() + self.temp_ttl))
    }

    /// Use a sign-on token (once): the VM it is for, if it is valid.
    pub fn redeem(&self, token: &str) -> Option<(String, String)> {
        let grant = self.pending.lock().remove(&hash_token(token))?;
        (grant.expires > Instant::now()).then_some((grant.host, grant.vm))
    }

    /// Open a session for the VM; answers the cookie's value.
    pub fn open(&self, host: &str, vm: &str) -> Result<String, Full> {
        let session = generate_token();
        let grant = Grant {
            host: host.to_owned(),
            vm: vm.to_owned(),
            expires: Instant::now() + self.session_ttl,
        };
        insert(&self.open, hash_token(&session), grant)?;
        Ok(session)
    }

    /// Seconds a session lasts (the cookie's Max-Age).
    pub fn session_seconds(&self) -> u64 {
        self.session_ttl.as_secs()
    }

    /// Whom a session cookie stands for, while it lasts: an operator of one
    /// VM.
    pub fn principal(&self, session: &str) -> Option<Principal> {
        let open = self.open.lock();
        let grant = open.get(&hash_token(session))?;
        (grant.expires > Instant::now()).then(|| Principal {
            name: format!("session of {}/{}", grant.host, grant.vm),
            role: Role::Operator,
            hosts: vec![grant.host.clone()],
            vm: Some(grant.vm.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let sessions = VmSessions::new(Duration::from_millis(50), Duration::from_secs(60));
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

        let cookie = sessions.open("h1", "vm1").expect("opened");
        let principal = sessions.principal(&cookie).expect("a session");
        assert_eq!(principal.vm.as_deref(), Some("vm1"));
        assert_eq!(principal.hosts, ["h1"]);
        assert!(sessions.principal("made-up").is_none());
    }
}
