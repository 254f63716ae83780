//! `openidcs:engine/log`: log records tagged with the plugin's name.

use std::sync::Arc;

use super::HostScope;
use crate::plugin::bindings::openidcs::engine::log::{Host, Level};
use crate::store::{LogLevel, NewLog, Store};

/// Longest message kept; a plugin cannot fill the database with one call.
const MAX_MESSAGE_BYTES: usize = 4096;
/// Records one call may write; the rest are counted and summarised.
const MAX_RECORDS_PER_CALL: u32 = 100;

pub struct LogCall {
    store: Arc<Store>,
    plugin: Arc<str>,
    host: Option<Arc<HostScope>>,
    written: u32,
}

impl LogCall {
    pub fn new(store: Arc<Store>, plugin: Arc<str>, host: Option<Arc<HostScope>>) -> LogCall {
        LogCall {
            store,
            plugin,
            host,
            written: 0,
        }
    }

    /// Write one record tagged with the plugin (also used for captured
    /// stdout/stderr lines).
    pub fn write(&mut self, level: LogLevel, message: &str) {
        self.written += 1;
        if self.written > MAX_RECORDS_PER_CALL {
            return;
        }
        let mut text = message.trim_end().to_owned();
        if text.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" …");
        }
        if level == LogLevel::Warn {
            crate::tasks::note_warning(&text);
        }
        let actions = format!("plugin:{}", self.plugin);
        tracing::event!(tracing::Level::INFO, plugin = %self.plugin, level = level.as_str(), "{text}");
        let mut record = NewLog::new(level, actions, text);
        if let Some(host) = &self.host {
            record = record.host(host.name.clone());
        }
        if let Err(error) = self.store.log_insert(&record) {
            tracing::error!(plugin = %self.plugin, "cannot store a plugin log record: {error}");
        }
    }

    /// Records dropped by the per-call cap, reported once at the end of the call.
    pub fn finish(&mut self) {
        if self.written > MAX_RECORDS_PER_CALL {
            let dropped = self.written - MAX_RECORDS_PER_CALL;
            self.written = 0;
            self.write(
                LogLevel::Warn,
                &format!("{dropped} more log records of this call were dropped"),
            );
        }
    }
}

impl Host for LogCall {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.write(level, &message);
        Ok(())
    }
}
