//! Log records: warnings and failures the operator reads through `logget`.

use rusqlite::{Row, params};

use super::{Store, StoreResult, now_ms, off_reactor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<LogLevel> {
        [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ]
        .into_iter()
        .find(|level| level.as_str() == text)
    }
}

#[derive(Clone, Debug)]
pub struct NewLog {
    pub level: LogLevel,
    pub host: String,
    pub vm_uuid: String,
    pub actions: String,
    pub message: String,
    pub success: bool,
}

impl NewLog {
    pub fn new(level: LogLevel, actions: impl Into<String>, message: impl Into<String>) -> NewLog {
        NewLog {
            level,
            host: String::new(),
            vm_uuid: String::new(),
            actions: actions.into(),
            message: message.into(),
            success: matches!(level, LogLevel::Debug | LogLevel::Info),
        }
    }

    pub fn host(mut self, host: impl Into<String>) -> NewLog {
        self.host = host.into();
        self
    }

    pub fn vm(mut self, vm_uuid: impl Into<String>) -> NewLog {
        self.vm_uuid = vm_uuid.into();
        self
    }
}

#[derive(Clone, Debug)]
pub struct LogRecord {
    pub id: i64,
    pub level: String,
    pub host: String,
    pub vm_uuid: String,
    pub actions: String,
    pub message: String,
    pub success: bool,
    pub created_at: i64,
}

#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    pub host: Option<String>,
    pub level: Option<LogLevel>,
    pub limit: u32,
    pub offset: u32,
}

fn log_from_row(row: &Row<'_>) -> rusqlite::Result<LogRecord> {
    Ok(LogRecord {
        id: row.get(0)?,
        level: row.get(1)?,
        host: row.get(2)?,
        vm_uuid: row.get(3)?,
        actions: row.get(4)?,
        message: row.get(5)?,
        success: row.get(6)?,
        created_at: row.get(7)?,
    })
}

impl Store {
    pub fn log_insert(&self, log: &NewLog) -> StoreResult<i64> {
        off_reactor(|| {
            let connection = self.connection();
            connection
                .prepare_cached(
                    "INSERT INTO logs (level, host, vm_uuid, actions, message, success, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    log.level.as_str(),
                    log.host,
                    log.vm_uuid,
                    log.actions,
                    log.message,
                    log.success,
                    now_ms()
                ])?;
            Ok(connection.last_insert_rowid())
        })
    }

    /// Newest first, filtered and paged.
    pub fn log_list(&self, filter: &LogFilter) -> StoreResult<Vec<LogRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let where_clause = "WHERE (?1 IS NULL OR host = ?1) AND (?2 IS NULL OR level = ?2)";
            let level = filter.level.map(LogLevel::as_str);
            let mut statement = connection.prepare_cached(&format!(
                "SELECT id, level, host, vm_uuid, actions, message, success, created_at
             FROM logs {where_clause} ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let logs = statement
                .query_map(
                    params![filter.host, level, filter.limit, filter.offset],
                    log_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(logs)
        })
    }
}
