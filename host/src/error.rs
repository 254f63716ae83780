//! The one error type of the HTTP API and the one place that maps lower-level
//! errors (store, engine) to API codes.
//!
//! Every answer is the envelope `{code, msg, data}` with HTTP status = `code`.
//! Faults (500) carry a [`Fault`] marker in the response extensions so that
//! the logging middleware records them once, not every handler.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::api::envelope::Envelope;
use crate::plugin::EngineError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Internal(String),
    /// A task failed with `source`; the task runner already wrote its log
    /// record, and the answer carries the task id.
    #[error("{source}")]
    Task { task_id: i64, source: Box<ApiError> },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Task { source, .. } => source.status(),
        }
    }

    pub fn bad_field(field: &str, rule: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest(format!("{field}: {rule}"))
    }
}

/// Marker left in the response extensions of every error answer; the
/// logging middleware turns it into one log record.
#[derive(Clone, Debug)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
    /// The task runner logged it already.
    pub logged: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let (data, logged) = match &self {
            ApiError::Task { task_id, .. } => (serde_json::json!({ "task_id": task_id }), true),
            _ => (Value::Null, false),
        };
        let mut response = Envelope::<Value> {
            code: status.as_u16(),
            msg: message.clone(),
            data,
        }
        .into_response_with(status);
        response.extensions_mut().insert(Fault {
            status,
            message,
            logged,
        });
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Invalid(what) => ApiError::BadRequest(what),
            other => ApiError::Internal(format!("database: {other}")),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        use crate::plugin::bindings::PluginError;
        let message = error.to_string();
        match error {
            EngineError::Plugin { error, .. } => match error {
                PluginError::NotFound(_) => ApiError::NotFound(message),
                PluginError::Invalid(_) | PluginError::Unsupported(_) => {
                    ApiError::BadRequest(message)
                }
                PluginError::Conflict(_) => ApiError::Conflict(message),
                PluginError::Denied(_) => ApiError::Forbidden(message),
                PluginError::Failed(_) => ApiError::Internal(message),
            },
            EngineError::UnknownEngine(_) => ApiError::BadRequest(message),
            EngineError::NotLoaded { .. }
            | EngineError::Trap { .. }
            | EngineError::Timeout { .. }
            | EngineError::MemoryLimit { .. }
            | EngineError::Busy { .. } => ApiError::Internal(message),
        }
    }
}
