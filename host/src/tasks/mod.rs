//! Tasks: every mutation runs as one, recorded from queued to done/failed.
//!
//! The work runs on its own tokio task, so a client that disconnects never
//! leaves a mutation half-done; the handler waits for it (bounded) and
//! answers its result with the task id, or only the id with `?async=true`.
//! A failed task writes one log record with its host and VM.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::api::envelope::{ApiOk, ApiResult};
use crate::error::ApiError;
use crate::store::{LogLevel, NewLog, NewTask, Store};

pub struct Tasks {
    store: Arc<Store>,
    wait: Duration,
}

/// How a task ended, as far as the handler waited.
pub enum TaskOutcome<T> {
    Done { task_id: i64, value: T },
    Pending { task_id: i64 },
}

impl Tasks {
    pub fn new(store: Arc<Store>, wait: Duration) -> Tasks {
        Tasks { store, wait }
    }

    /// Record a task, run `work` to its end on its own tokio task, and wait
    /// for it unless `detach`.
    pub async fn run<T, F>(
        &self,
        task: NewTask,
        detach: bool,
        work: F,
    ) -> Result<TaskOutcome<T>, ApiError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ApiError>> + Send + 'static,
    {
        let task_id = self.store.task_insert(&task)?;
        let store = self.store.clone();
        let handle = tokio::spawn(async move {
            if let Err(error) = store.task_start(task_id) {
                tracing::error!(task_id, "cannot mark the task running: {error}");
            }
            let result = work.await;
            let (success, message) = match &result {
                Ok(_) => (true, "done".to_owned()),
                Err(error) => (false, error.to_string()),
            };
            if let Err(error) = store.task_finish(task_id, success, &message) {
                tracing::error!(task_id, "cannot record the end of the task: {error}");
            }
            if let Err(error) = &result {
                let level = if error.status().is_server_error() {
                    LogLevel::Error
                } else {
                    LogLevel::Warn
                };
                let record = NewLog::new(
                    level,
                    task.actions.clone(),
                    format!("task {task_id} failed: {error}"),
                )
                .host(task.host.clone())
                .vm(task.vm_uuid.clone());
                if let Err(log_error) = store.log_insert(&record) {
                    tracing::error!(task_id, "cannot store a log record: {log_error}");
                }
            }
            result
        });
        if detach {
            return Ok(TaskOutcome::Pending { task_id });
        }
        match tokio::time::timeout(self.wait, handle).await {
            Err(_still_running) => Ok(TaskOutcome::Pending { task_id }),
            Ok(Err(join_error)) => Err(ApiError::Task {
                task_id,
                source: Box::new(ApiError::Internal(format!(
                    "task {task_id} crashed: {join_error}"
                ))),
            }),
            Ok(Ok(Err(error))) => Err(ApiError::Task {
                task_id,
                source: Box::new(error),
            }),
            Ok(Ok(Ok(value))) => Ok(TaskOutcome::Done { task_id, value }),
        }
    }
}

impl<T: Serialize> TaskOutcome<T> {
    /// The API answer: the value, with `task_id` added when it is an object;
    /// `{task_id, state: "running"}` when the task is still going.
    pub fn into_answer(self) -> ApiResult<Value> {
        match self {
            TaskOutcome::Done { task_id, value } => {
                let mut value = serde_json::to_value(value)
                    .map_err(|error| ApiError::Internal(format!("encoding the answer: {error}")))?;
                if let Value::Object(object) = &mut value {
                    object.insert("task_id".to_owned(), Value::from(task_id));
                }
                Ok(ApiOk(value))
            }
            TaskOutcome::Pending { task_id } => Ok(ApiOk(serde_json::json!({
                "task_id": task_id,
                "state": "running",
            }))),
        }
    }
}
