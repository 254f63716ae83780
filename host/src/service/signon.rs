//! Single sign-on from a billing panel: `temptoken` issues a single-use
//! token for one VM, `templogin` trades it for a VM session (a cookie the
//! API then accepts for that VM's customer routes only) and sends the
//! browser to the VM's page of the web panel.

use std::time::UNIX_EPOCH;

use super::error::{ServiceError, ServiceResult};
use super::vms::{self, VmRef};
use crate::model::TempTokenAnswer;
use crate::state::AppState;

pub fn temp_token(state: &AppState, vm: &VmRef) -> ServiceResult<TempTokenAnswer> {
    let (token, expires) = state
        .sessions
        .issue(&vm.host.name, vm.key())
        .map_err(|full| ServiceError::Conflict(full.to_string()))?;
    Ok(TempTokenAnswer {
        url: format!(
            "{}/api/client/templogin?token={token}",
            state.public_base_url()
        ),
        temp_token: token,
        expire: expires
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or_default(),
    })
}

/// A signed-in browser: the session cookie's value and where to send it.
pub struct SignedIn {
    pub session: String,
    pub max_age_s: u64,
    pub location: String,
}

/// Redeem a sign-on token (once) for a session of its VM.
pub fn temp_login(state: &AppState, token: &str) -> ServiceResult<SignedIn> {
    let (host, vm) = state.sessions.redeem(token).ok_or_else(|| {
        ServiceError::Unauthorized(
            "token: this sign-on link is used, expired or unknown; open it again from the panel"
                .to_owned(),
        )
    })?;
    let vm = vms::vm_ref(state, &host, &vm)?;
    let session = state
        .sessions
        .open_vm(&vm.host.name, vm.key())
        .map_err(|full| ServiceError::Conflict(full.to_string()))?;
    // The VM's page of the web panel (its customer page); names are
    // [A-Za-z0-9_.-], nothing to escape.
    let location = format!("/#/vm/{}/{}", vm.host.name, vm.key());
    Ok(SignedIn {
        session,
        max_age_s: state.sessions.session_seconds(),
        location,
    })
}
