//! What a mutation answers: its result with the task that did it, or, when
//! the task outlasts the wait (or `?async=true`), only the task.

use serde::Serialize;
use utoipa::ToSchema;

/// A mutation's answer: its result with `task_id` added, or `{task_id,
/// state: "running"}` with `?async=true` or when the task outlasts the wait.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Mutation<T> {
    Done(Finished<T>),
    Running(TaskRunning),
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Finished<T> {
    #[serde(flatten)]
    pub value: T,
    /// The task that did it.
    pub task_id: i64,
    /// What the engine warned of while doing it, when it did the work in
    /// another way than asked (a NIC that applies from the VM's next start
    /// on a host that cannot change NICs live); absent when nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A mutation whose result is `null` (deletions).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Removal {
    Done(Null),
    Running(TaskRunning),
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TaskRunning {
    pub task_id: i64,
    pub state: RunningState,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunningState {
    Running,
}

/// JSON `null`: what a removal answers.
#[derive(Clone, Copy, Debug)]
pub struct Null;

impl Serialize for Null {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl utoipa::PartialSchema for Null {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Null)
            .into()
    }
}

impl ToSchema for Null {}

/// Where a task is: recorded, running, or finished one way or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Done,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Done,
            TaskState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}
