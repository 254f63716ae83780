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
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{Access, Principal, Verdict};
use crate::error::ApiError;
use crate::state::AppState;

/// A request whose token was accepted: the token as presented (`tquery`
/// echoes it) and whom it stands for. The middleware puts it in the
/// request's extensions; handlers take it as `Extension<Caller>`.
#[derive(Clone)]
pub struct Caller {
    pub token: String,
    pub principal: Principal,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            // A browser signed in by `templogin` carries its VM session.
            if let Some(session) = session_cookie(parts) {
                let principal = state.sessions.principal(session).ok_or_else(|| {
                    ApiError::Unauthorized("the session has expired; sign in again".to_owned())
                })?;
                return Ok(Caller {
                    token: String::new(),
                    principal,
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
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        match state.auth.verify(&state.store, client, token)? {
            Verdict::Accepted(principal) => Ok(Caller {
                token: token.to_owned(),
                principal,
            }),
            Verdict::Rejected => Err(ApiError::Unauthorized("invalid token".to_owned())),
            Verdict::Expired(name) => Err(ApiError::Unauthorized(format!(
                "token {name:?} has expired"
            ))),
            Verdict::Throttled => Err(ApiError::TooManyRequests(
                "too many invalid tokens from this address; try again later".to_owned(),
            )),
        }
    }
}

/// The value of the VM session cookie, if the request carries one.
fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
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
