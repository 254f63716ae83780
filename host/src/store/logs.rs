//! Log records: warnings and failures the operator reads through `logget`.

use rusqlite::{Row, params};

use super::{Store, StoreResult, format_ms, now_ms, off_reactor};
use crate::model::LogEntry;

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

#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    pub host: Option<String>,
    pub level: Option<LogLevel>,
    pub limit: u32,
    pub offset: u32,
}

/// A row as the API shows it (the model's `LogEntry`).
fn log_from_row(row: &Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        id: row.get(0)?,
        level: row.get(1)?,
        host: row.get(2)?,
        vm_uuid: row.get(3)?,
        actions: row.get(4)?,
        message: row.get(5)?,
        success: row.get(6)?,
        created_at: format_ms(row.get(7)?),
    })
}

/// Longest message a record keeps, in characters; longer ones are cut
/// (a request path or an engine's answer must not fill the disk).
pub const MAX_LOG_MESSAGE: usize = 2_000;
/// Longest `actions` (a method and path, a task name), in characters.
pub const MAX_LOG_ACTIONS: usize = 200;
/// Longest host or VM name kept (names are at most 64; paths may say more).
const MAX_LOG_NAME: usize = 64;

/// `text` cut to at most `max` characters, marked when cut.
fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

impl Store {
    /// Store a record, its texts capped ([`MAX_LOG_MESSAGE`], [`MAX_LOG_ACTIONS`]).
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
                    capped(&log.host, MAX_LOG_NAME),
                    capped(&log.vm_uuid, MAX_LOG_NAME),
                    capped(&log.actions, MAX_LOG_ACTIONS),
                    capped(&log.message, MAX_LOG_MESSAGE),
                    log.success,
                    now_ms()
                ])?;
            Ok(connection.last_insert_rowid())
        })
    }

    /// Drop records older than `max_age_ms`, then all but the newest
    /// `max_rows`; answers how many went.
    pub fn log_prune(&self, max_age_ms: i64, max_rows: u64) -> StoreResult<usize> {
        off_reactor(|| {
            let connection = self.connection();
            let by_age = connection.execute(
                "DELETE FROM logs WHERE created_at < ?1",
                [now_ms() - max_age_ms],
            )?;
            let by_count = connection.execute(
                "DELETE FROM logs WHERE id <= (SELECT id FROM logs ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [max_rows as i64],
            )?;
            Ok(by_age + by_count)
        })
    }

    /// Newest first, filtered and paged.
    pub fn log_list(&self, filter: &LogFilter) -> StoreResult<Vec<LogEntry>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let directory = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&directory.path().join("test.db")).expect("opens");
        (directory, store)
    }

    #[test]
    fn long_texts_are_capped() {
        let (_directory, store) = store();
        let id = store
            .log_insert(
                &NewLog::new(LogLevel::Warn, "p".repeat(5_000), "m".repeat(50_000))
                    .host("h".repeat(300)),
            )
            .expect("inserts");
        let filter = LogFilter {
            limit: 10,
            ..LogFilter::default()
        };
        let records = store.log_list(&filter).expect("lists");
        let record = records
            .iter()
            .find(|record| record.id == id)
            .expect("stored");
        assert_eq!(record.message.chars().count(), MAX_LOG_MESSAGE + 1);
        assert_eq!(record.actions.chars().count(), MAX_LOG_ACTIONS + 1);
        assert_eq!(record.host.chars().count(), MAX_LOG_NAME + 1);
    }

    #[test]
    fn retention_keeps_the_newest_rows_and_drops_old_ones() {
        let (_directory, store) = store();
        for number in 0..30 {
            store
                .log_insert(&NewLog::new(
                    LogLevel::Info,
                    "test",
                    format!("record {number}"),
                ))
                .expect("inserts");
        }
        let pruned = store.log_prune(i64::MAX / 2, 10).expect("prunes");
        assert_eq!(pruned, 20);
        let filter = LogFilter {
            limit: 100,
            ..LogFilter::default()
        };
        let records = store.log_list(&filter).expect("lists");
        assert_eq!(records.len(), 10);
        assert_eq!(records[0].message, "record 29", "newest first, kept");
        // Everything is older than a zero maximum age.
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.log_prune(0, 1_000).expect("prunes");
        assert!(store.log_list(&filter).expect("lists").is_empty());
    }
}
