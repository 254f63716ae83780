//! The one database access layer: every SQL string of the server lives under
//! this module. SQLite (bundled) in WAL mode; a write returns only after it is
//! committed. Schema changes are versioned migrations applied at open.
//!
//! One connection behind a mutex: SQLite serialises writers anyway, the
//! statements here are short, and `busy_timeout` covers other processes (the
//! `openidcs token reset` CLI) writing the same file.

mod hosts;
mod logs;
mod migrations;
mod network;
mod samples;
mod tasks;
mod tokens;
mod vms;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use hosts::HostRecord;
pub use logs::{LogFilter, LogLevel, LogRecord, NewLog};
pub use network::{NatRuleRecord, ProxyRecord};
pub use samples::SampleRecord;
pub use tasks::{NewTask, TaskFilter, TaskRecord, TaskState};
pub use vms::VmRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type StoreResult<T> = Result<T, StoreError>;

pub struct Store {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl Store {
    /// Open (creating if needed) the database and bring its schema up to date.
    pub fn open(path: &Path) -> StoreResult<Store> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                context: format!("creating {}", parent.display()),
                source,
            })?;
        }
        let mut connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable across process crashes in WAL mode (only an OS
        // crash can lose the last transactions); FULL makes every commit wait
        // for fsync, which the durability test does not need.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        migrations::apply(&mut connection)?;
        Ok(Store {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection; a panic elsewhere never makes the store unusable.
    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Write a consistent copy of the whole database to `target` (which must
    /// not exist) and answer its size in bytes.
    pub fn snapshot(&self, target: &Path) -> StoreResult<u64> {
        let target_text = target.to_str().ok_or_else(|| {
            StoreError::Invalid(format!("snapshot path {} is not UTF-8", target.display()))
        })?;
        self.connection().execute("VACUUM INTO ?1", [target_text])?;
        let metadata = std::fs::metadata(target).map_err(|source| StoreError::Io {
            context: format!("reading {}", target.display()),
            source,
        })?;
        Ok(metadata.len())
    }

    /// `PRAGMA integrity_check` answers `ok` on a sound file.
    pub fn integrity_check(&self) -> StoreResult<String> {
        Ok(self
            .connection()
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
    }
}

/// Milliseconds since the Unix epoch; the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 text of a stored timestamp, as the API shows it.
pub fn format_ms(timestamp_ms: i64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(timestamp_ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}
