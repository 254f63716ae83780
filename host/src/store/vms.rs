//! VM records known to the panel. The hypervisor is the truth for existence
//! and power state; these rows hold the operator's configuration and keys.

use rusqlite::{OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::model::VmSettings;

use super::{Store, StoreError, StoreResult, now_ms, off_reactor};

#[derive(Clone, Debug)]
pub struct VmRecord {
    pub host: String,
    pub vm_uuid: String,
    pub config: VmSettings,
    /// The hypervisor's UUID of the VM (empty until the engine answered one).
    pub domain_uuid: String,
    pub upload_key: String,
    pub power_status: String,
    /// Traffic of the current period, MB.
    pub flu_usage: f64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The first day of the period `flu_usage` counts (`YYYY-MM-DD`).
    pub flu_period: String,
    /// The over-quota measure in force: `throttle`, `pause` or empty.
    pub flu_limited: String,
}

const VM_COLUMNS: &str = "host, vm_uuid, config, upload_key, power_status, flu_usage, created_at, \
                          updated_at, flu_period, flu_limited";

/// A VM's traffic after an addition.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficState {
    pub usage_mb: f64,
    /// The addition opened a new period (the old one's count is gone).
    pub new_period: bool,
    pub limited: String,
}

fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<(VmRecord, String)> {
    Ok((
        VmRecord {
            host: row.get(0)?,
            vm_uuid: row.get(1)?,
            config: VmSettings::default(),
            domain_uuid: String::new(),
            upload_key: row.get(3)?,
            power_status: row.get(4)?,
            flu_usage: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
            flu_period: row.get(8)?,
            flu_limited: row.get(9)?,
        },
        row.get(2)?,
    ))
}

/// The `config` column: the VM's settings and the core's own `domain_uuid`.
#[derive(Deserialize)]
struct StoredConfig {
    #[serde(flatten)]
    settings: VmSettings,
    #[serde(default)]
    domain_uuid: String,
}

#[derive(Serialize)]
struct StoredConfigRef<'a> {
    #[serde(flatten)]
    settings: &'a VmSettings,
    domain_uuid: &'a str,
}

fn encode_config(settings: &VmSettings, domain_uuid: &str) -> StoreResult<String> {
    Ok(serde_json::to_string(&StoredConfigRef {
        settings,
        domain_uuid,
    })?)
}

fn decode_config(text: &str) -> StoreResult<StoredConfig> {
    Ok(serde_json::from_str(text)?)
}

fn decode_vm((mut vm, config_text): (VmRecord, String)) -> StoreResult<VmRecord> {
    let stored = decode_config(&config_text)?;
    vm.config = stored.settings;
    vm.domain_uuid = stored.domain_uuid;
    Ok(vm)
}

fn not_found(host: &str, vm_uuid: &str) -> StoreError {
    StoreError::NotFound(format!("vm {vm_uuid:?} not found on host {host:?}"))
}

impl Store {
    pub fn vm_list(&self, host: &str) -> StoreResult<Vec<VmRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {VM_COLUMNS} FROM vms WHERE host = ?1 ORDER BY created_at, vm_uuid"
            ))?;
            let rows = statement
                .query_map([host], vm_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(decode_vm).collect()
        })
    }

    pub fn vm_get(&self, host: &str, vm_uuid: &str) -> StoreResult<VmRecord> {
        off_reactor(|| {
            let row = self
                .reader()
                .prepare_cached(&format!(
                    "SELECT {VM_COLUMNS} FROM vms WHERE host = ?1 AND vm_uuid = ?2"
                ))?
                .query_row([host, vm_uuid], vm_from_row)
                .optional()?;
            row.map(decode_vm)
                .unwrap_or_else(|| Err(not_found(host, vm_uuid)))
        })
    }

    /// The hosts that have a VM with key `vm_uuid` (panels name VMs by key alone).
    pub fn vm_hosts_of(&self, vm_uuid: &str) -> StoreResult<Vec<String>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection
                .prepare_cached("SELECT host FROM vms WHERE vm_uuid = ?1 ORDER BY host")?;
            let hosts = statement
                .query_map([vm_uuid], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(hosts)
        })
    }

    /// Set the traffic a VM used this month, MB (the panel's reset is 0).
    pub fn vm_set_traffic(&self, host: &str, vm_uuid: &str, flu_usage: f64) -> StoreResult<()> {
        off_reactor(|| {
            let changed = self.connection().execute(
                "UPDATE vms SET flu_usage = ?3, updated_at = ?4 WHERE host = ?1 AND vm_uuid = ?2",
                params![host, vm_uuid, flu_usage, now_ms()],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!(
                    "vm {vm_uuid:?} not found on host {host:?}"
                )));
            }
            Ok(())
        })
    }

    pub fn vm_by_upload_key(&self, upload_key: &str) -> StoreResult<Option<VmRecord>> {
        off_reactor(|| {
            let row = self
                .reader()
                .prepare_cached(&format!(
                    "SELECT {VM_COLUMNS} FROM vms WHERE upload_key = ?1"
                ))?
                .query_row([upload_key], vm_from_row)
                .optional()?;
            row.map(decode_vm).transpose()
        })
    }

    /// Number of VMs, on one host or on all.
    pub fn vm_count(&self, host: Option<&str>) -> StoreResult<u64> {
        off_reactor(|| {
            let connection = self.reader();
            Ok(match host {
                Some(host) => connection
                    .prepare_cached("SELECT COUNT(*) FROM vms WHERE host = ?1")?
                    .query_row([host], |row| row.get(0))?,
                None => connection
                    .prepare_cached("SELECT COUNT(*) FROM vms")?
                    .query_row([], |row| row.get(0))?,
            })
        })
    }

    /// Number of VMs of each host that has any.
    pub fn vm_count_by_host(&self) -> StoreResult<std::collections::HashMap<String, u64>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement =
                connection.prepare_cached("SELECT host, COUNT(*) FROM vms GROUP BY host")?;
            let counts = statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(counts)
        })
    }

    /// Insert a VM; `Conflict` when the key is taken on that host, or when
    /// the host already holds `limit` VMs (0 = no limit). Both checks and the
    /// insert are one transaction, so concurrent creates cannot overshoot.
    pub fn vm_insert(
        &self,
        host: &str,
        vm_uuid: &str,
        config: &VmSettings,
        domain_uuid: &str,
        upload_key: &str,
        limit: u64,
    ) -> StoreResult<VmRecord> {
        off_reactor(|| {
            {
                let mut connection = self.connection();
                let transaction = connection
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let count: u64 = transaction.query_row(
                    "SELECT COUNT(*) FROM vms WHERE host = ?1",
                    [host],
                    |row| row.get(0),
                )?;
                if limit > 0 && count >= limit {
                    return Err(StoreError::Conflict(format!(
                        "host {host:?} is at its limit of {limit} VMs (limits_nums)"
                    )));
                }
                // Paths name a VM by its key or its libvirt UUID: a key equal
                // to another VM's UUID would make them ambiguous. Only a
                // UUID-shaped key can be one, and only such a key pays for
                // reading the host's VMs (a scan imports thousands of keys).
                let shadowed: Option<String> = if uuid::Uuid::try_parse(vm_uuid).is_ok() {
                    transaction
                        .query_row(
                            "SELECT vm_uuid FROM vms WHERE host = ?1
                             AND json_extract(config, '$.domain_uuid') = ?2",
                            [host, vm_uuid],
                            |row| row.get(0),
                        )
                        .optional()?
                } else {
                    None
                };
                if let Some(owner) = shadowed {
                    return Err(StoreError::Conflict(format!(
                        "vm_uuid {vm_uuid:?} is the libvirt UUID of vm {owner:?} on host {host:?}"
                    )));
                }
                let now = now_ms();
                let inserted = transaction.execute(
                    "INSERT INTO vms (host, vm_uuid, config, upload_key, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (host, vm_uuid) DO NOTHING",
                    params![
                        host,
                        vm_uuid,
                        encode_config(config, domain_uuid)?,
                        upload_key,
                        now
                    ],
                )?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(format!(
                        "vm {vm_uuid:?} already exists on host {host:?}"
                    )));
                }
                transaction.commit()?;
            }
            self.vm_get(host, vm_uuid)
        })
    }

    pub fn vm_update_config(
        &self,
        host: &str,
        vm_uuid: &str,
        config: &VmSettings,
        domain_uuid: &str,
    ) -> StoreResult<VmRecord> {
        off_reactor(|| {
            let updated = self.connection().execute(
                "UPDATE vms SET config = ?3, updated_at = ?4 WHERE host = ?1 AND vm_uuid = ?2",
                params![host, vm_uuid, encode_config(config, domain_uuid)?, now_ms()],
            )?;
            if updated == 0 {
                return Err(not_found(host, vm_uuid));
            }
            self.vm_get(host, vm_uuid)
        })
    }

    /// Store a VM's power state; whether it changed.
    pub fn vm_set_power(&self, host: &str, vm_uuid: &str, power_status: &str) -> StoreResult<bool> {
        off_reactor(|| {
            let changed = self.connection().execute(
                "UPDATE vms SET power_status = ?3 \
                 WHERE host = ?1 AND vm_uuid = ?2 AND power_status IS NOT ?3",
                params![host, vm_uuid, power_status],
            )?;
            Ok(changed > 0)
        })
    }

    /// Delete a VM and, through the foreign keys, its NAT rules, IPs and proxies.
    pub fn vm_delete(&self, host: &str, vm_uuid: &str) -> StoreResult<()> {
        off_reactor(|| {
            let deleted = self.connection().execute(
                "DELETE FROM vms WHERE host = ?1 AND vm_uuid = ?2",
                [host, vm_uuid],
            )?;
            if deleted == 0 {
                return Err(not_found(host, vm_uuid));
            }
            Ok(())
        })
    }
}

impl Store {
    /// Change one VM's config inside an immediate transaction that also sees
    /// every other VM of the host: `change` gets (this VM's config, the
    /// other VMs' configs) and may refuse. Used where a value must be unique
    /// across the host (IP addresses, MACs), so concurrent requests cannot
    /// both take the same one.
    pub fn vm_change_config<T>(
        &self,
        host: &str,
        vm_uuid: &str,
        change: impl FnOnce(&mut VmSettings, &[VmSettings]) -> Result<T, StoreError>,
    ) -> StoreResult<T> {
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut config: Option<StoredConfig> = None;
            let mut others = Vec::new();
            {
                let mut statement =
                    transaction.prepare("SELECT vm_uuid, config FROM vms WHERE host = ?1")?;
                let rows = statement.query_map([host], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (uuid, text) = row?;
                    let decoded = decode_config(&text)?;
                    if uuid == vm_uuid {
                        config = Some(decoded);
                    } else {
                        others.push(decoded.settings);
                    }
                }
            }
            let mut config = config.ok_or_else(|| not_found(host, vm_uuid))?;
            let answer = change(&mut config.settings, &others)?;
            transaction.execute(
                "UPDATE vms SET config = ?3, updated_at = ?4 WHERE host = ?1 AND vm_uuid = ?2",
                params![
                    host,
                    vm_uuid,
                    encode_config(&config.settings, &config.domain_uuid)?,
                    now_ms()
                ],
            )?;
            transaction.commit()?;
            Ok(answer)
        })
    }

    /// Add traffic to the VM's count of `period` (its first day); a count of
    /// an older period starts over.
    pub fn vm_add_traffic(
        &self,
        host: &str,
        vm_uuid: &str,
        period: &str,
        megabytes: f64,
    ) -> StoreResult<TrafficState> {
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction = connection.transaction()?;
            let current: Option<(f64, String, String)> = transaction
                .query_row(
                    "SELECT flu_usage, flu_period, flu_limited FROM vms WHERE host = ?1 AND vm_uuid = ?2",
                    params![host, vm_uuid],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((usage, stored_period, limited)) = current else {
                return Err(StoreError::NotFound(format!(
                    "vm {vm_uuid:?} not found on host {host:?}"
                )));
            };
            let new_period = stored_period != period;
            let usage_mb = if new_period {
                megabytes
            } else {
                usage + megabytes
            };
            transaction.execute(
                "UPDATE vms SET flu_usage = ?3, flu_period = ?4 WHERE host = ?1 AND vm_uuid = ?2",
                params![host, vm_uuid, usage_mb, period],
            )?;
            transaction.commit()?;
            Ok(TrafficState {
                usage_mb,
                // A VM counted for the first time opens no "new" period.
                new_period: new_period && !stored_period.is_empty(),
                limited,
            })
        })
    }

    /// Record the over-quota measure in force (`""`: none).
    pub fn vm_set_limited(&self, host: &str, vm_uuid: &str, limited: &str) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE vms SET flu_limited = ?3 WHERE host = ?1 AND vm_uuid = ?2",
                params![host, vm_uuid, limited],
            )?;
            Ok(())
        })
    }
}
