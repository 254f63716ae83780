//! Task records: one per mutation, from queued to done or failed.

use rusqlite::{Row, params};

use super::{Store, StoreResult, format_ms, now_ms, off_reactor};
use crate::model::TaskEntry;
pub use crate::model::task::TaskState;

#[derive(Clone, Debug)]
pub struct NewTask {
    pub actions: String,
    pub host: String,
    pub vm_uuid: String,
}

#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub host: Option<String>,
    pub state: Option<TaskState>,
    pub limit: u32,
    pub offset: u32,
}

/// A row as the API shows it (the model's `TaskEntry`).
fn task_from_row(row: &Row<'_>) -> rusqlite::Result<TaskEntry> {
    Ok(TaskEntry {
        id: row.get(0)?,
        actions: row.get(1)?,
        host: row.get(2)?,
        vm_uuid: row.get(3)?,
        state: row.get(4)?,
        progress: row.get(5)?,
        success: row.get(6)?,
        message: row.get(7)?,
        created_at: format_ms(row.get(8)?),
        started_at: row.get::<_, Option<i64>>(9)?.map(format_ms),
        finished_at: row.get::<_, Option<i64>>(10)?.map(format_ms),
    })
}

impl Store {
    pub fn task_insert(&self, task: &NewTask) -> StoreResult<i64> {
        off_reactor(|| {
            let connection = self.connection();
            connection.execute(
            "INSERT INTO tasks (actions, host, vm_uuid, state, created_at) VALUES (?1, ?2, ?3, 'queued', ?4)",
            params![task.actions, task.host, task.vm_uuid, now_ms()],
        )?;
            Ok(connection.last_insert_rowid())
        })
    }

    pub fn task_start(&self, id: i64) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE tasks SET state = 'running', progress = 10, started_at = ?2 WHERE id = ?1",
                params![id, now_ms()],
            )?;
            Ok(())
        })
    }

    /// A running task's progress (percent) and the step it is at.
    pub fn task_progress(&self, id: i64, progress: u8, message: &str) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE tasks SET progress = ?2, message = ?3 WHERE id = ?1 AND state = 'running'",
                params![id, progress.min(99), message],
            )?;
            Ok(())
        })
    }

    pub fn task_finish(&self, id: i64, success: bool, message: &str) -> StoreResult<()> {
        off_reactor(|| {
            let state = if success {
                TaskState::Done
            } else {
                TaskState::Failed
            };
            self.connection().execute(
            "UPDATE tasks SET state = ?2, progress = 100, success = ?3, message = ?4, finished_at = ?5
             WHERE id = ?1",
            params![id, state.as_str(), success, message, now_ms()],
        )?;
            Ok(())
        })
    }

    /// Tasks a previous run left unfinished (the process died): they failed.
    pub fn task_fail_unfinished(&self) -> StoreResult<usize> {
        off_reactor(|| {
            Ok(self.connection().execute(
                "UPDATE tasks SET state = 'failed', success = 0, finished_at = ?1,
                message = 'interrupted: the server stopped before the task ended'
             WHERE state IN ('queued', 'running')",
                [now_ms()],
            )?)
        })
    }

    /// Newest first, filtered and paged.
    pub fn task_list(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskEntry>> {
        off_reactor(|| {
            let connection = self.reader();
            let where_clause = "WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR state = ?2)";
            let state = filter.state.map(TaskState::as_str);
            let mut statement = connection.prepare_cached(&format!(
                "SELECT id, actions, host, vm_uuid, state, progress, success, message,
                    created_at, started_at, finished_at
             FROM tasks {where_clause} ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let tasks = statement
                .query_map(
                    params![filter.host, state, filter.limit, filter.offset],
                    task_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(tasks)
        })
    }
}
