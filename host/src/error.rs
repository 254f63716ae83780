//! The one error type of the HTTP API and the one place that maps the
//! services' errors (by their [`ErrorKind`]) to API codes.
//!
//! Every answer is the envelope `{code, msg, data}` with HTTP status = `code`.
//! Faults (500) carry a [`Fault`] marker in the response extensions so that
//! the logging middleware records them once, not every handler.

use crate::model::Invalid;
use crate::service::{ErrorKind, ServiceError};
use crate::tasks::TaskFailed;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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

/// An error answer: `data` is null, or `{task_id}` when a task failed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Failure {
    /// The HTTP status (unless `always_http_200`).
    #[schema(example = 404)]
    pub code: u16,
    /// What went wrong; a bad input names the field and the rule.
    #[schema(example = "host \"h1\" not found")]
    pub msg: String,
    #[schema(required)]
    pub data: Option<FailedTask>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct FailedTask {
    /// The failed task (see `tasget`).
    pub task_id: i64,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        let (data, logged) = match &self {
            ApiError::Task { task_id, .. } => (Some(FailedTask { task_id: *task_id }), true),
            _ => (None, false),
        };
        let failure = Failure {
            code: status.as_u16(),
            msg: message.clone(),
            data,
        };
        let mut response = (status, axum::Json(failure)).into_response();
        response.extensions_mut().insert(Fault {
            status,
            message,
            logged,
        });
        response
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::BadRequest(invalid.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = error.message();
        match error.kind() {
            ErrorKind::Invalid => ApiError::BadRequest(message),
            ErrorKind::Unauthorized => ApiError::Unauthorized(message),
            ErrorKind::Forbidden => ApiError::Forbidden(message),
            ErrorKind::NotFound => ApiError::NotFound(message),
            ErrorKind::Conflict => ApiError::Conflict(message),
            ErrorKind::Limited => ApiError::TooManyRequests(message),
            ErrorKind::Fault => ApiError::Internal(message),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::from(ServiceError::from(error))
    }
}

impl From<TaskFailed> for ApiError {
    fn from(failed: TaskFailed) -> Self {
        let source = ApiError::from(failed.error);
        match failed.task_id {
            Some(task_id) => ApiError::Task {
                task_id,
                source: Box::new(source),
            },
            None => source,
        }
    }
}
