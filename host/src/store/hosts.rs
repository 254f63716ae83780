//! Hypervisor hosts known to the panel.

use rusqlite::{OptionalExtension, Row, params};

use crate::model::{CpuSetting, HostSettings, HostStatus, Patch};

use super::{Store, StoreError, StoreResult, now_ms, off_reactor};

#[derive(Clone, Debug)]
pub struct HostRecord {
    pub name: String,
    pub engine: String,
    pub config: HostSettings,
    pub enabled: bool,
    /// Last host status the engine reported, with its time.
    pub status: Option<HostStatus>,
    pub status_at: Option<i64>,
    /// When the poller last reached the host.
    pub polled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The CPU the engine's probe found for this host (`None`: not probed).
    pub cpu: Option<CpuSetting>,
}

const HOST_COLUMNS: &str =
    "name, engine, config, enabled, status, status_at, created_at, updated_at, polled_at, cpu";

type HostRow = (HostRecord, String, Option<String>, Option<String>);

fn host_from_row(row: &Row<'_>) -> rusqlite::Result<HostRow> {
    let config_text: String = row.get(2)?;
    let status_text: Option<String> = row.get(4)?;
    let cpu_text: Option<String> = row.get(9)?;
    Ok((
        HostRecord {
            name: row.get(0)?,
            engine: row.get(1)?,
            config: HostSettings::default(),
            enabled: row.get(3)?,
            status: None,
            status_at: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
            polled_at: row.get(8)?,
            cpu: None,
        },
        config_text,
        status_text,
        cpu_text,
    ))
}

fn decode_host((mut host, config_text, status_text, cpu_text): HostRow) -> StoreResult<HostRecord> {
    host.cpu = cpu_text
        .map(|text| serde_json::from_str(&text))
        .transpose()?;
    host.config = serde_json::from_str(&config_text)?;
    host.status = status_text
        .map(|text| serde_json::from_str(&text))
        .transpose()?;
    Ok(host)
}

impl Store {
    pub fn host_list(&self) -> StoreResult<Vec<HostRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection
                .prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name"))?;
            let rows = statement
                .query_map([], host_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(decode_host).collect()
        })
    }

    pub fn host_get(&self, name: &str) -> StoreResult<HostRecord> {
        off_reactor(|| {
            let row = self
                .reader()
                .prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE name = ?1"))?
                .query_row([name], host_from_row)
                .optional()?;
            match row {
                Some(row) => decode_host(row),
                None => Err(StoreError::NotFound(format!("host {name:?} not found"))),
            }
        })
    }

    pub fn host_count(&self) -> StoreResult<u64> {
        off_reactor(|| {
            Ok(self
                .reader()
                .prepare_cached("SELECT COUNT(*) FROM hosts")?
                .query_row([], |row| row.get(0))?)
        })
    }

    /// Insert a host; `Conflict` when the name is taken.
    pub fn host_insert(
        &self,
        name: &str,
        engine: &str,
        config: &HostSettings,
    ) -> StoreResult<HostRecord> {
        off_reactor(|| {
            let now = now_ms();
            let inserted = self.connection().execute(
                "INSERT INTO hosts (name, engine, config, enabled, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4) ON CONFLICT (name) DO NOTHING",
                params![name, engine, serde_json::to_string(config)?, now],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "host {name:?} already exists"
                )));
            }
            self.host_get(name)
        })
    }

    /// Replace a host's config (and engine, when given).
    pub fn host_update(
        &self,
        name: &str,
        engine: Option<&str>,
        config: &HostSettings,
    ) -> StoreResult<HostRecord> {
        off_reactor(|| {
            let updated = self.connection().execute(
            "UPDATE hosts SET config = ?2, engine = COALESCE(?3, engine), updated_at = ?4 WHERE name = ?1",
            params![name, serde_json::to_string(config)?, engine, now_ms()],
        )?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!("host {name:?} not found")));
            }
            self.host_get(name)
        })
    }

    pub fn host_set_enabled(&self, name: &str, enabled: bool) -> StoreResult<HostRecord> {
        off_reactor(|| {
            let updated = self.connection().execute(
                "UPDATE hosts SET enabled = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, enabled, now_ms()],
            )?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!("host {name:?} not found")));
            }
            self.host_get(name)
        })
    }

    pub fn host_set_status(&self, name: &str, status: &HostStatus) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE hosts SET status = ?2, status_at = ?3 WHERE name = ?1",
                params![name, serde_json::to_string(status)?, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Record that the host answered the poller now.
    /// Record the CPU the engine's probe found for the host (`None`: forget it).
    pub fn host_set_cpu(&self, name: &str, cpu: Option<&CpuSetting>) -> StoreResult<()> {
        let text = cpu.map(serde_json::to_string).transpose()?;
        off_reactor(|| {
            self.connection().execute(
                "UPDATE hosts SET cpu = ?2 WHERE name = ?1",
                params![name, text],
            )?;
            Ok(())
        })
    }

    pub fn host_touch(&self, name: &str) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE hosts SET polled_at = ?2 WHERE name = ?1",
                params![name, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Delete a host and, through the foreign keys, everything of its VMs
    /// (its rate limits, which have none, explicitly).
    pub fn host_delete(&self, name: &str) -> StoreResult<()> {
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction = connection.transaction()?;
            let deleted = transaction.execute("DELETE FROM hosts WHERE name = ?1", [name])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("host {name:?} not found")));
            }
            transaction.execute("DELETE FROM rate_limits WHERE host = ?1", [name])?;
            transaction.commit()?;
            Ok(())
        })
    }

    /// A host's plans: name → the config values (JSON object) as stored.
    pub fn plan_list(&self, host: &str) -> StoreResult<Vec<(String, Patch)>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection
                .prepare_cached("SELECT name, config FROM plans WHERE host = ?1 ORDER BY name")?;
            let rows = statement
                .query_map([host], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(name, config)| Ok((name, serde_json::from_str(&config)?)))
                .collect()
        })
    }

    /// Create or replace a plan of an existing host.
    pub fn plan_put(&self, host: &str, name: &str, config: &Patch) -> StoreResult<()> {
        let config = serde_json::to_string(config)?;
        off_reactor(|| {
            let connection = self.connection();
            let exists: bool = connection
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM hosts WHERE name = ?1)")?
                .query_row([host], |row| row.get(0))?;
            if !exists {
                return Err(StoreError::NotFound(format!("host {host:?} not found")));
            }
            connection.execute(
                "INSERT INTO plans (host, name, config, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (host, name) DO UPDATE SET config = excluded.config",
                rusqlite::params![host, name, config, now_ms()],
            )?;
            Ok(())
        })
    }

    pub fn plan_delete(&self, host: &str, name: &str) -> StoreResult<()> {
        off_reactor(|| {
            let deleted = self.connection().execute(
                "DELETE FROM plans WHERE host = ?1 AND name = ?2",
                [host, name],
            )?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!(
                    "host {host:?} has no plan {name:?}"
                )));
            }
            Ok(())
        })
    }
}
