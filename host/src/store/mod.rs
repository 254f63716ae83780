//! The one database access layer: every SQL string of the server lives under
//! this module. SQLite (bundled) in WAL mode; a write returns only after it is
//! committed. Schema changes are versioned migrations applied at open.
//!
//! One writer connection behind a mutex (SQLite serialises writers anyway,
//! the statements here are short, and `busy_timeout` covers other processes,
//! the `openidcs token reset` CLI, writing the same file) and a few read-only
//! readers. Every use of the writer bumps the store's generation after its
//! commit; answers derived from the database are cached by generation
//! (`statistics` here, listup answers in the service layer).
//!
//! Every method that touches SQLite runs its work through [`off_reactor`],
//! so no tokio worker blocks on the database.

mod hosts;
mod logs;
mod migrations;
mod network;
mod samples;
mod tasks;
mod tokens;
mod vms;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use hosts::HostRecord;
pub use logs::{LogFilter, LogLevel, NewLog};
pub use network::{NatRuleRecord, ProxyRecord, RateLimitRecord};
pub use samples::SampleRecord;
pub use tasks::{NewTask, TaskFilter, TaskState};
pub use tokens::ApiTokenRecord;
pub use vms::{TrafficState, VmRecord};

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
    /// The one writer.
    connection: Mutex<Connection>,
    /// Readers: WAL lets them read committed data while the writer writes,
    /// so hot GETs (auth, statis, listings) do not queue behind one mutex.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The admin token hash with the file signature it was read at.
    token_cache: RwLock<Option<(FileSignature, Option<Vec<u8>>)>>,
    /// Bumped when the writer is released, after what it wrote committed.
    generation: AtomicU64,
    /// `statistics` with the generation it was counted at.
    statistics_cache: RwLock<Option<(u64, [u64; 4])>>,
}

/// The writer, lent out; dropping it bumps the generation. A transaction
/// borrows the guard, so it has committed (or rolled back) by then.
struct WriterGuard<'a> {
    connection: MutexGuard<'a, Connection>,
    generation: &'a AtomicU64,
}

impl Deref for WriterGuard<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Modification time and size of the database file and its WAL.
type FileSignature = [(std::time::SystemTime, u64); 2];

/// Reader connections; the machine has 2 cores, a few more absorb waits.
const READERS: usize = 4;

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
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            reader.busy_timeout(std::time::Duration::from_secs(10))?;
            readers.push(Mutex::new(reader));
        }
        Ok(Store {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            token_cache: RwLock::new(None),
            generation: AtomicU64::new(0),
            statistics_cache: RwLock::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer (parking_lot: a panic elsewhere does not poison it).
    fn connection(&self) -> WriterGuard<'_> {
        WriterGuard {
            connection: self.connection.lock(),
            generation: &self.generation,
        }
    }

    /// Changes whenever this process may have written to the database. A
    /// value derived from a read that began at generation `g` is current
    /// while `generation()` still answers `g`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn file_signature(&self) -> Option<FileSignature> {
        let signature_of = |path: &Path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        };
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Some([signature_of(&self.path)?, signature_of(Path::new(&wal))?])
    }

    /// Counts for `statis`: hosts, VMs, running VMs, unfinished tasks. Only
    /// this process writes those tables, so the counts are kept until the
    /// next write.
    pub fn statistics(&self) -> StoreResult<[u64; 4]> {
        let generation = self.generation();
        if let Some((counted_at, counts)) = *self.statistics_cache.read()
            && counted_at == generation
        {
            return Ok(counts);
        }
        let counts = self.count_statistics()?;
        *self.statistics_cache.write() = Some((generation, counts));
        Ok(counts)
    }

    fn count_statistics(&self) -> StoreResult<[u64; 4]> {
        off_reactor(|| {
            Ok(self
                .reader()
                .prepare_cached(
                    "SELECT (SELECT COUNT(*) FROM hosts), (SELECT COUNT(*) FROM vms),
                    (SELECT COUNT(*) FROM vms WHERE power_status = 'running'),
                    (SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running'))",
                )?
                .query_row([], |row| {
                    Ok([row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?])
                })?)
        })
    }

    /// A reader connection: the first free one from a rotating start, else
    /// wait for the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for offset in 0..self.readers.len() {
            if let Some(guard) = self.readers[(start + offset) % self.readers.len()].try_lock() {
                return guard;
            }
        }
        self.readers[start % self.readers.len()].lock()
    }

    /// Write a consistent copy of the whole database to `target` (which must
    /// not exist) and answer its size in bytes.
    pub fn snapshot(&self, target: &Path) -> StoreResult<u64> {
        off_reactor(|| {
            let target_text = target.to_str().ok_or_else(|| {
                StoreError::Invalid(format!("snapshot path {} is not UTF-8", target.display()))
            })?;
            self.connection().execute("VACUUM INTO ?1", [target_text])?;
            let metadata = std::fs::metadata(target).map_err(|source| StoreError::Io {
                context: format!("reading {}", target.display()),
                source,
            })?;
            Ok(metadata.len())
        })
    }

    /// `PRAGMA integrity_check` answers `ok` on a sound file.
    pub fn integrity_check(&self) -> StoreResult<String> {
        off_reactor(|| {
            Ok(self
                .connection()
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
        })
    }
}

/// Run SQLite work (a query, a commit, the wait for the writer) without
/// stalling the async runtime: on a tokio worker, `block_in_place` first
/// hands the worker's other tasks to another thread, so requests keep being
/// served while this one waits for the disk. It keeps the store's plain
/// `&self` API (callers lend their arguments; nothing is copied into a
/// `'static` closure for `spawn_blocking`). Outside a multi-thread runtime
/// (the CLI, current-thread tests, a `spawn_blocking` thread) the work just
/// runs, as blocking there stalls nobody.
fn off_reactor<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
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
