//! The token check, as an extractor and as the middleware in front of every
//! route but `upload`: who the caller is ([`Caller`]) and whether the route
//! (its [`Access`] in [`super::access_table`]) and the host it names are
//! within the caller's role and hosts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{Access, AuthGuard, Principal, Verdict};
use crate::error::ApiError;
use crate::sessions::SessionOwner;
use crate::state::AppState;

/// A request whose token was accepted: the token as presented (`tquery`
/// echoes it) and whom it stands for. The middleware puts it in the
/// request's extensions; handlers take it as `Extension<Caller>`.
#[derive(Clone)]
pub struct Caller {
    pub token: String,
    pub principal: Principal,
    /// The session cookie it came with (no `Authorization` header).
    pub session: Option<String>,
}

impl Caller {
    /// Whom the caller stands for now: a long-lived answer (the event
    /// stream) asks again, so that a revoked or expired token, or an ended
    /// session, stops it. Counts nothing against the address.
    pub fn current(&self, state: &AppState) -> Result<Principal, ApiError> {
        if let Some(session) = &self.session {
            return session_principal(state, session);
        }
        match AuthGuard::verify_hash(&state.store, &crate::auth::hash_token(&self.token))? {
            Some(Verdict::Accepted(principal)) => Ok(principal),
            Some(Verdict::Expired(name)) => Err(expired(&name)),
            Some(Verdict::Rejected | Verdict::Throttled) | None => Err(ApiError::Unauthorized(
                "the token is no longer valid".to_owned(),
            )),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            // A browser signed in (the web panel, or `templogin`) carries a
            // session.
            if let Some(session) = session_cookie(parts) {
                return Ok(Caller {
                    token: String::new(),
                    principal: session_principal(state, session)?,
                    session: Some(session.to_owned()),
                });
            }
            return Err(ApiError::Unauthorized(
                "missing Authorization: Bearer <token>".to_owned(),
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be: Bearer <token>".to_owned())
            })?;
        let principal = verify_token(state, client_address(&parts.extensions), token)?;
        Ok(Caller {
            token: token.to_owned(),
            principal,
            session: None,
        })
    }
}

/// The address the request came from (unspecified when unknown).
pub fn client_address(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Whom a presented token stands for; wrong guesses count against `client`.
pub fn verify_token(state: &AppState, client: IpAddr, token: &str) -> Result<Principal, ApiError> {
    match state.auth.verify(&state.store, client, token)? {
        Verdict::Accepted(principal) => Ok(principal),
        Verdict::Rejected => Err(ApiError::Unauthorized("invalid token".to_owned())),
        Verdict::Expired(name) => Err(expired(&name)),
        Verdict::Throttled => Err(ApiError::TooManyRequests(
            "too many invalid tokens from this address; try again later".to_owned(),
        )),
    }
}

fn expired(name: &str) -> ApiError {
    ApiError::Unauthorized(format!("token {name:?} has expired"))
}

/// Whom a session cookie stands for now: a VM's customer, or the token the
/// browser signed in with as it stands (revoked: the session has ended).
fn session_principal(state: &AppState, session: &str) -> Result<Principal, ApiError> {
    let ended = || ApiError::Unauthorized("the session has ended; sign in again".to_owned());
    match state.sessions.owner(session).ok_or_else(ended)? {
        SessionOwner::Vm(principal) => Ok(principal),
        SessionOwner::Token(hash) => match AuthGuard::verify_hash(&state.store, &hash)? {
            Some(Verdict::Accepted(principal)) => Ok(principal),
            Some(Verdict::Expired(name)) => Err(expired(&name)),
            Some(Verdict::Rejected | Verdict::Throttled) | None => Err(ended()),
        },
    }
}

/// The value of the session cookie, if the request carries one.
fn session_cookie(parts: &Parts) -> Option<&str> {
    session_cookie_value(&parts.headers)
}

/// The value of the session cookie in `headers`, if any.
pub fn session_cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == crate::sessions::COOKIE)
        .map(|(_, value)| value)
}

/// Route layer: refuse the request unless its token is accepted and its
/// principal may call this route on the host (and VM) the path names.
pub async fn require_token(
    caller: Caller,
    matched: Option<MatchedPath>,
    parameters: Result<RawPathParams, RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // A path missing from the table needs the most: new routes are closed
    // until they are given an access.
    let access = matched
        .and_then(|path| super::access_table().get(path.as_str()).copied())
        .unwrap_or(super::RouteAccess {
            need: Access::Admin,
            customer: false,
        });
    let parameters = parameters.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    };
    caller
        .principal
        .may(
            access.need,
            access.customer,
            parameter("hs_name"),
            parameter("vm_uuid"),
        )
        .map_err(ApiError::Forbidden)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
