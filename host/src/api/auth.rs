//! The Bearer-token check, as an extractor and as the middleware that puts it
//! in front of every route but `upload`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::Verdict;
use crate::error::ApiError;
use crate::state::AppState;

/// A request that presented the current admin token.
pub struct Authenticated {
    pub token: String,
}

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <token>".to_owned())
        })?;
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
            Verdict::Accepted => Ok(Authenticated {
                token: token.to_owned(),
            }),
            Verdict::Rejected => Err(ApiError::Unauthorized("invalid token".to_owned())),
            Verdict::Throttled => Err(ApiError::TooManyRequests(
                "too many invalid tokens from this address; try again later".to_owned(),
            )),
        }
    }
}

/// Route layer: refuse the request unless it is [`Authenticated`].
pub async fn require_token(
    State(_state): State<Arc<AppState>>,
    _authenticated: Authenticated,
    request: Request,
    next: Next,
) -> Response {
    next.run(request).await
}
