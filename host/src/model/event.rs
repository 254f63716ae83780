//! The event stream (`GET /api/system/events`): what changed, as it
//! happens: a task's state, a VM's power state, a VM's new sample.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::task::TaskState;
use super::vm::{PowerStatus, SampleView};

/// One event; `kind` says which. Sent as a server-sent event whose `event:`
/// line is the kind and whose `data:` line is this object as JSON.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Task(TaskEvent),
    Power(PowerEvent),
    Sample(SampleEvent),
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Task(_) => "task",
            Event::Power(_) => "power",
            Event::Sample(_) => "sample",
        }
    }

    /// The host and VM the event is about (empty when none: a system task).
    pub fn subject(&self) -> (&str, &str) {
        match self {
            Event::Task(task) => (&task.hs_name, &task.vm_uuid),
            Event::Power(power) => (&power.hs_name, &power.vm_uuid),
            Event::Sample(sample) => (&sample.hs_name, &sample.vm_uuid),
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TaskEvent {
    pub task_id: i64,
    /// `queued` when recorded, `running` (again at each recorded step,
    /// with its progress), then `done` or `failed`.
    pub state: TaskState,
    /// What the task does (`create`, `powers`, `natadd`, …).
    pub actions: String,
    pub hs_name: String,
    pub vm_uuid: String,
    /// 0–100.
    pub progress: u8,
    /// The step while running; `done` or the error when finished.
    pub message: String,
}

/// A VM's power state changed (by an action, a scan or the poller).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PowerEvent {
    pub hs_name: String,
    pub vm_uuid: String,
    pub power_status: PowerStatus,
}

/// A VM's new sample (from the poller or the VM's upload).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SampleEvent {
    pub hs_name: String,
    pub vm_uuid: String,
    pub sample: SampleView,
}

/// `system/events` query: both empty = every event the caller may see.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this host's events.
    #[serde(default)]
    pub hs_name: String,
    /// Only this VM's events.
    #[serde(default)]
    pub vm_uuid: String,
}

/// `POST /api/system/session`: sign a browser in with a token.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionInput {
    /// The admin token or a named token.
    pub token: String,
}

/// Whom the session (or the Bearer token) stands for: what the web panel
/// shows and hides.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The token's name (`admin` for the admin token) or the VM session's.
    pub name: String,
    /// `admin`, `operator` or `read-only`.
    pub role: super::Role,
    /// The hosts reached (empty: every host).
    pub hosts: Vec<String>,
    /// For a customer's VM session: the one VM it reaches.
    #[schema(required)]
    pub vm_uuid: Option<String>,
}
