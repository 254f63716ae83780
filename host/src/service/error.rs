//! The services' error: what went wrong, in the kinds the API answers.
//! `ServiceError::kind` is the one classification; `crate::error` maps a
//! kind to an HTTP status and the task runner to a log level.

use crate::model::Invalid;
use crate::plugin::EngineError;
use crate::plugin::bindings::PluginError;
use crate::service::console::LimitExceeded;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request the server does not serve (say, a console protocol other
    /// than VNC); unlike [`Invalid`], the message is not `field: rule`.
    #[error("{0}")]
    Unsupported(String),
    /// A limit on open sessions is reached: try again later.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What kind of failure an error is, whoever raised it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller's input breaks a rule (or asks for what the engine cannot do).
    Invalid,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    /// A limit on concurrent use is reached; nothing is wrong with the input.
    Limited,
    /// The server's or an engine's fault; logged as an error.
    Fault,
}

impl ServiceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Invalid(_) => ErrorKind::Invalid,
            ServiceError::Unauthorized(_) => ErrorKind::Unauthorized,
            ServiceError::Forbidden(_) => ErrorKind::Forbidden,
            ServiceError::NotFound(_) => ErrorKind::NotFound,
            ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Unsupported(_) => ErrorKind::Invalid,
            ServiceError::Limit(_) => ErrorKind::Limited,
            ServiceError::Internal(_) => ErrorKind::Fault,
            ServiceError::Store(error) => match error {
                StoreError::NotFound(_) => ErrorKind::NotFound,
                StoreError::Conflict(_) => ErrorKind::Conflict,
                StoreError::Invalid(_) => ErrorKind::Invalid,
                _ => ErrorKind::Fault,
            },
            ServiceError::Engine(error) => match error {
                EngineError::Plugin { error, .. } => match error {
                    PluginError::NotFound(_) => ErrorKind::NotFound,
                    PluginError::Invalid(_) | PluginError::Unsupported(_) => ErrorKind::Invalid,
                    PluginError::Conflict(_) => ErrorKind::Conflict,
                    PluginError::Denied(_) => ErrorKind::Forbidden,
                    PluginError::Failed(_) => ErrorKind::Fault,
                },
                EngineError::UnknownEngine(_) => ErrorKind::Invalid,
                EngineError::NotLoaded { .. }
                | EngineError::Trap { .. }
                | EngineError::Timeout { .. }
                | EngineError::MemoryLimit { .. }
                | EngineError::Busy { .. } => ErrorKind::Fault,
            },
        }
    }

    /// The message an answer carries: a database fault says so.
    pub fn message(&self) -> String {
        match self {
            ServiceError::Store(error) if self.kind() == ErrorKind::Fault => {
                format!("database: {error}")
            }
            other => other.to_string(),
        }
    }

    pub fn not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
