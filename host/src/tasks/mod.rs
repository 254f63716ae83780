//! Tasks: every mutation runs as one, recorded from queued to done/failed.
//!
//! The work runs on its own tokio task, so a client that disconnects never
//! leaves a mutation half-done; the handler waits for it (bounded) and
//! answers its result with the task id, or only the id with `?async=true`.
//! A failed task writes one log record with its host and VM.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::events::Events;
use crate::model::event::{Event, TaskEvent};
use crate::model::task::TaskState;
use crate::model::task::{Null, RunningState};
use crate::model::{Finished, Mutation, Removal, TaskRunning};
use crate::service::{ErrorKind, ServiceError};
use crate::store::{LogLevel, NewLog, NewTask, Store};

pub struct Tasks {
    store: Arc<Store>,
    events: Events,
    wait: Duration,
}

tokio::task_local! {
    /// The warnings noted while a task's work runs ([`note_warning`]).
    static WARNINGS: RefCell<Vec<String>>;
    /// The task this code runs in ([`progress`]).
    static CURRENT: Current;
}

/// Record how far the task this code runs in got (a reinstall's steps), so
/// `GET /api/system/tasks` shows it while it runs. Outside a task, nothing.
pub fn progress(percent: u8, step: &str) {
    let _ = CURRENT.try_with(|current| {
        let task_id = current.task_id;
        if let Err(error) = current.store.task_progress(task_id, percent, step) {
            tracing::warn!(task_id, "cannot record the task's progress: {error}");
        }
        current.publish(TaskState::Running, percent, step);
    });
}

/// A running task: where its record is and whom to tell of its changes.
#[derive(Clone)]
struct Current {
    store: Arc<Store>,
    events: Events,
    task_id: i64,
    task: NewTask,
}

impl Current {
    fn publish(&self, state: TaskState, progress: u8, message: &str) {
        self.events.publish(Event::Task(TaskEvent {
            task_id: self.task_id,
            state,
            actions: self.task.actions.clone(),
            hs_name: self.task.host.clone(),
            vm_uuid: self.task.vm_uuid.clone(),
            progress,
            message: message.to_owned(),
        }));
    }
}

/// Note a warning for the answer of the task this code runs in: an engine
/// that did what was asked in another way than asked says so (a NIC that
/// applies from the VM's next start). Outside a task, nothing happens.
pub fn note_warning(message: &str) {
    let _ = WARNINGS.try_with(|warnings| warnings.borrow_mut().push(message.to_owned()));
}

/// How a task ended, as far as the handler waited.
pub enum TaskOutcome<T> {
    Done {
        task_id: i64,
        value: T,
        warnings: Vec<String>,
    },
    Pending {
        task_id: i64,
    },
}

/// A task that failed (or could not be recorded, without an id).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct TaskFailed {
    pub task_id: Option<i64>,
    pub error: ServiceError,
}

impl Tasks {
    pub fn new(store: Arc<Store>, events: Events, wait: Duration) -> Tasks {
        Tasks {
            store,
            events,
            wait,
        }
    }

    /// Record a task, run `work` to its end on its own tokio task, and wait
    /// for it unless `detach`.
    pub async fn run<T, F>(
        &self,
        task: NewTask,
        detach: bool,
        work: F,
    ) -> Result<TaskOutcome<T>, TaskFailed>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
    {
        let task_id = self.store.task_insert(&task).map_err(|error| TaskFailed {
            task_id: None,
            error: error.into(),
        })?;
        let store = self.store.clone();
        let current = Current {
            store: store.clone(),
            events: self.events.clone(),
            task_id,
            task: task.clone(),
        };
        current.publish(TaskState::Queued, 0, "");
        let handle = tokio::spawn(async move {
            if let Err(error) = store.task_start(task_id) {
                tracing::error!(task_id, "cannot mark the task running: {error}");
            }
            current.publish(TaskState::Running, 0, "");
            let finished = current.clone();
            let (result, warnings) = WARNINGS
                .scope(
                    RefCell::new(Vec::new()),
                    CURRENT.scope(current, async move {
                        let result = work.await;
                        (result, WARNINGS.with(|warnings| warnings.take()))
                    }),
                )
                .await;
            let (success, message) = match &result {
                Ok(_) => (true, "done".to_owned()),
                Err(error) => (false, error.message()),
            };
            if let Err(error) = store.task_finish(task_id, success, &message) {
                tracing::error!(task_id, "cannot record the end of the task: {error}");
            }
            let end = if success {
                TaskState::Done
            } else {
                TaskState::Failed
            };
            finished.publish(end, 100, &message);
            if let Err(error) = &result {
                let level = if error.kind() == ErrorKind::Fault {
                    LogLevel::Error
                } else {
                    LogLevel::Warn
                };
                let record = NewLog::new(
                    level,
                    task.actions.clone(),
                    format!("task {task_id} failed: {}", error.message()),
                )
                .host(task.host.clone())
                .vm(task.vm_uuid.clone());
                if let Err(log_error) = store.log_insert(&record) {
                    tracing::error!(task_id, "cannot store a log record: {log_error}");
                }
            }
            result.map(|value| (value, warnings))
        });
        if detach {
            return Ok(TaskOutcome::Pending { task_id });
        }
        let failed = |error| TaskFailed {
            task_id: Some(task_id),
            error,
        };
        match tokio::time::timeout(self.wait, handle).await {
            Err(_still_running) => Ok(TaskOutcome::Pending { task_id }),
            Ok(Err(join_error)) => Err(failed(ServiceError::Internal(format!(
                "task {task_id} crashed: {join_error}"
            )))),
            Ok(Ok(Err(error))) => Err(failed(error)),
            Ok(Ok(Ok((value, warnings)))) => Ok(TaskOutcome::Done {
                task_id,
                value,
                warnings,
            }),
        }
    }
}

fn running(task_id: i64) -> TaskRunning {
    TaskRunning {
        task_id,
        state: RunningState::Running,
    }
}

impl<T> TaskOutcome<T> {
    /// The answer of a mutation with a result: the value with `task_id`.
    pub fn answer(self) -> Mutation<T> {
        match self {
            TaskOutcome::Done {
                task_id,
                value,
                warnings,
            } => Mutation::Done(Finished {
                value,
                task_id,
                warnings,
            }),
            TaskOutcome::Pending { task_id } => Mutation::Running(running(task_id)),
        }
    }
}

impl TaskOutcome<()> {
    /// The answer of a removal: `null`, or the task while it runs.
    pub fn removal(self) -> Removal {
        match self {
            TaskOutcome::Done { .. } => Removal::Done(Null),
            TaskOutcome::Pending { task_id } => Removal::Running(running(task_id)),
        }
    }
}
