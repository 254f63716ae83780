//! NAT rules, IP entries and proxy entries of VMs, in insertion order (the
//! API addresses them by their position in that order), and the VMs' rate
//! limits.

use rusqlite::{Row, params};

use super::{Store, StoreError, StoreResult, now_ms, off_reactor};

#[derive(Clone, Debug)]
pub struct NatRuleRecord {
    pub id: i64,
    pub host: String,
    pub vm_uuid: String,
    pub protocol: String,
    pub wan_port: u16,
    pub lan_port: u16,
    pub lan_addr: String,
    pub nat_tips: String,
}

#[derive(Clone, Debug)]
pub struct ProxyRecord {
    pub id: i64,
    pub host: String,
    pub vm_uuid: String,
    pub domain: String,
    pub backend_ip: String,
    pub backend_port: u16,
    pub ssl_enabled: bool,
    pub description: String,
    /// PEM; empty unless `ssl_enabled`.
    pub ssl_cert: String,
    pub ssl_key: String,
}

/// A VM's rate limit as the NAT capability installed it for its engine
/// (kbit/s; 0: none that way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitRecord {
    pub host: String,
    pub vm_uuid: String,
    pub addresses: Vec<String>,
    pub upload_kbps: u64,
    pub download_kbps: u64,
}

const RATE_LIMIT_COLUMNS: &str = "host, vm_uuid, addresses, upload_kbps, download_kbps";

fn rate_limit_from_row(row: &Row<'_>) -> rusqlite::Result<(RateLimitRecord, String)> {
    Ok((
        RateLimitRecord {
            host: row.get(0)?,
            vm_uuid: row.get(1)?,
            addresses: Vec::new(),
            upload_kbps: row.get::<_, i64>(3)?.max(0).unsigned_abs(),
            download_kbps: row.get::<_, i64>(4)?.max(0).unsigned_abs(),
        },
        row.get(2)?,
    ))
}

/// The record with its addresses decoded from their JSON column.
fn with_addresses(
    (mut record, addresses): (RateLimitRecord, String),
) -> StoreResult<RateLimitRecord> {
    record.addresses = serde_json::from_str(&addresses)?;
    Ok(record)
}

fn kbps_column(kbps: u64) -> i64 {
    i64::try_from(kbps).unwrap_or(i64::MAX)
}

fn nat_from_row(row: &Row<'_>) -> rusqlite::Result<NatRuleRecord> {
    Ok(NatRuleRecord {
        id: row.get(0)?,
        host: row.get(1)?,
        vm_uuid: row.get(2)?,
        protocol: row.get(3)?,
        wan_port: row.get(4)?,
        lan_port: row.get(5)?,
        lan_addr: row.get(6)?,
        nat_tips: row.get(7)?,
    })
}

fn proxy_from_row(row: &Row<'_>) -> rusqlite::Result<ProxyRecord> {
    Ok(ProxyRecord {
        id: row.get(0)?,
        host: row.get(1)?,
        vm_uuid: row.get(2)?,
        domain: row.get(3)?,
        backend_ip: row.get(4)?,
        backend_port: row.get(5)?,
        ssl_enabled: row.get(6)?,
        description: row.get(7)?,
        ssl_cert: row.get(8)?,
        ssl_key: row.get(9)?,
    })
}

const NAT_COLUMNS: &str = "id, host, vm_uuid, protocol, wan_port, lan_port, lan_addr, nat_tips";
const PROXY_COLUMNS: &str = "id, host, vm_uuid, domain, backend_ip, backend_port, ssl_enabled, description, ssl_cert, ssl_key";

impl Store {
    /// NAT rules of one VM, or of a whole host when `vm_uuid` is None.
    pub fn nat_list(&self, host: &str, vm_uuid: Option<&str>) -> StoreResult<Vec<NatRuleRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection.prepare_cached(&format!(
            "SELECT {NAT_COLUMNS} FROM nat_rules WHERE host = ?1 AND (?2 IS NULL OR vm_uuid = ?2) ORDER BY id"
        ))?;
            let rules = statement
                .query_map(params![host, vm_uuid], nat_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rules)
        })
    }

    /// Insert a NAT rule. `wan_port` 0 picks the lowest free port of
    /// `range` for the protocol; the pick, the per-VM limit and the insert
    /// are one immediate transaction, so concurrent adds never collide.
    #[allow(clippy::too_many_arguments)]
    pub fn nat_insert(
        &self,
        host: &str,
        vm_uuid: &str,
        protocol: &str,
        wan_port: u16,
        range: std::ops::RangeInclusive<u16>,
        lan_port: u16,
        lan_addr: &str,
        nat_tips: &str,
        limit: u32,
    ) -> StoreResult<NatRuleRecord> {
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let count: u32 = transaction.query_row(
                "SELECT COUNT(*) FROM nat_rules WHERE host = ?1 AND vm_uuid = ?2",
                [host, vm_uuid],
                |row| row.get(0),
            )?;
            if count >= limit {
                return Err(StoreError::Conflict(format!(
                    "vm {vm_uuid:?} is at its limit of {limit} NAT rules (nat_num)"
                )));
            }
            let port = if wan_port == 0 {
                let mut taken = transaction.prepare(
                "SELECT wan_port FROM nat_rules WHERE host = ?1 AND protocol = ?2 ORDER BY wan_port",
            )?;
                let used: std::collections::BTreeSet<u16> = taken
                    .query_map([host, protocol], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                drop(taken);
                range
                    .clone()
                    .find(|port| !used.contains(port))
                    .ok_or_else(|| {
                        StoreError::Conflict(format!(
                            "no free {protocol} port left in {}..{}",
                            range.start(),
                            range.end()
                        ))
                    })?
            } else {
                wan_port
            };
            let inserted = transaction.execute(
            "INSERT INTO nat_rules (host, vm_uuid, protocol, wan_port, lan_port, lan_addr, nat_tips, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (host, protocol, wan_port) DO NOTHING",
            params![host, vm_uuid, protocol, port, lan_port, lan_addr, nat_tips, now_ms()],
        )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "{protocol} port {port} is already forwarded on host {host:?}"
                )));
            }
            let id = transaction.last_insert_rowid();
            transaction.commit()?;
            drop(connection);
            self.nat_get(id)
        })
    }

    pub fn nat_get(&self, id: i64) -> StoreResult<NatRuleRecord> {
        off_reactor(|| {
            self.reader()
                .prepare_cached(&format!(
                    "SELECT {NAT_COLUMNS} FROM nat_rules WHERE id = ?1"
                ))?
                .query_row([id], nat_from_row)
                .map_err(|error| match error {
                    rusqlite::Error::QueryReturnedNoRows => {
                        StoreError::NotFound(format!("NAT rule {id} not found"))
                    }
                    other => other.into(),
                })
        })
    }

    pub fn nat_set_addr(&self, id: i64, lan_addr: &str) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE nat_rules SET lan_addr = ?2 WHERE id = ?1",
                params![id, lan_addr],
            )?;
            Ok(())
        })
    }

    pub fn nat_delete(&self, id: i64) -> StoreResult<()> {
        off_reactor(|| {
            self.connection()
                .execute("DELETE FROM nat_rules WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Record a VM's rate limit (replacing its previous one, which it
    /// answers so that a failed install can put it back).
    pub fn rate_limit_put(&self, record: &RateLimitRecord) -> StoreResult<Option<RateLimitRecord>> {
        let addresses = serde_json::to_string(&record.addresses)?;
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let previous = rate_limit_of(&transaction, &record.host, &record.vm_uuid)?;
            transaction.execute(
                &format!("INSERT OR REPLACE INTO rate_limits ({RATE_LIMIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    record.host,
                    record.vm_uuid,
                    addresses,
                    kbps_column(record.upload_kbps),
                    kbps_column(record.download_kbps)
                ],
            )?;
            transaction.commit()?;
            Ok(previous)
        })
    }

    /// Forget a VM's rate limit; answers the one it had.
    pub fn rate_limit_delete(
        &self,
        host: &str,
        vm_uuid: &str,
    ) -> StoreResult<Option<RateLimitRecord>> {
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let previous = rate_limit_of(&transaction, host, vm_uuid)?;
            transaction.execute(
                "DELETE FROM rate_limits WHERE host = ?1 AND vm_uuid = ?2",
                params![host, vm_uuid],
            )?;
            transaction.commit()?;
            Ok(previous)
        })
    }

    /// A host's rate limits, by VM.
    pub fn rate_limit_list(&self, host: &str) -> StoreResult<Vec<RateLimitRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {RATE_LIMIT_COLUMNS} FROM rate_limits WHERE host = ?1 ORDER BY vm_uuid"
            ))?;
            let rows = statement
                .query_map([host], rate_limit_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(with_addresses).collect()
        })
    }

    /// Whether any host serves `domain` already (domains are unique).
    pub fn proxy_domain_taken(&self, domain: &str) -> StoreResult<bool> {
        off_reactor(|| {
            Ok(self
                .reader()
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM proxies WHERE domain = ?1)")?
                .query_row([domain], |row| row.get(0))?)
        })
    }

    pub fn proxy_list(&self, host: &str, vm_uuid: Option<&str>) -> StoreResult<Vec<ProxyRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection.prepare_cached(&format!(
            "SELECT {PROXY_COLUMNS} FROM proxies WHERE host = ?1 AND (?2 IS NULL OR vm_uuid = ?2) ORDER BY id"
        ))?;
            let proxies = statement
                .query_map(params![host, vm_uuid], proxy_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(proxies)
        })
    }

    /// Insert a proxy entry: the domain is unique across the panel, and the
    /// per-VM limit holds, in one immediate transaction.
    pub fn proxy_insert(&self, entry: &ProxyRecord, limit: u32) -> StoreResult<ProxyRecord> {
        off_reactor(|| {
            let mut connection = self.connection();
            let transaction =
                connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let count: u32 = transaction.query_row(
                "SELECT COUNT(*) FROM proxies WHERE host = ?1 AND vm_uuid = ?2",
                [&entry.host, &entry.vm_uuid],
                |row| row.get(0),
            )?;
            if count >= limit {
                return Err(StoreError::Conflict(format!(
                    "vm {:?} is at its limit of {limit} proxies (web_num)",
                    entry.vm_uuid
                )));
            }
            let inserted = transaction.execute(
            "INSERT INTO proxies (host, vm_uuid, domain, backend_ip, backend_port, ssl_enabled, description,
                                  ssl_cert, ssl_key, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (domain) DO NOTHING",
            params![
                entry.host,
                entry.vm_uuid,
                entry.domain,
                entry.backend_ip,
                entry.backend_port,
                entry.ssl_enabled,
                entry.description,
                entry.ssl_cert,
                entry.ssl_key,
                now_ms()
            ],
        )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "domain {:?} is already proxied",
                    entry.domain
                )));
            }
            let id = transaction.last_insert_rowid();
            transaction.commit()?;
            Ok(ProxyRecord {
                id,
                ..entry.clone()
            })
        })
    }

    pub fn proxy_set_backend(&self, id: i64, backend_ip: &str) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE proxies SET backend_ip = ?2 WHERE id = ?1",
                params![id, backend_ip],
            )?;
            Ok(())
        })
    }

    pub fn proxy_delete(&self, id: i64) -> StoreResult<()> {
        off_reactor(|| {
            self.connection()
                .execute("DELETE FROM proxies WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}

fn rate_limit_of(
    connection: &rusqlite::Connection,
    host: &str,
    vm_uuid: &str,
) -> StoreResult<Option<RateLimitRecord>> {
    let row = connection
        .prepare_cached(&format!(
            "SELECT {RATE_LIMIT_COLUMNS} FROM rate_limits WHERE host = ?1 AND vm_uuid = ?2"
        ))?
        .query_row(params![host, vm_uuid], rate_limit_from_row);
    match row {
        Ok(row) => with_addresses(row).map(Some),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HostSettings;

    fn limit(host: &str, vm: &str, upload_kbps: u64) -> RateLimitRecord {
        RateLimitRecord {
            host: host.to_owned(),
            vm_uuid: vm.to_owned(),
            addresses: vec!["10.0.0.2".to_owned(), "fd00::2".to_owned()],
            upload_kbps,
            download_kbps: 0,
        }
    }

    #[test]
    fn rate_limits_are_put_replaced_deleted_and_go_with_their_host() {
        let directory = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&directory.path().join("test.db")).expect("opens");
        assert_eq!(
            store.rate_limit_put(&limit("h1", "a", 8_000)).expect("put"),
            None
        );
        // Replacing answers the previous one, for an undo.
        assert_eq!(
            store.rate_limit_put(&limit("h1", "a", 1_000)).expect("put"),
            Some(limit("h1", "a", 8_000))
        );
        store.rate_limit_put(&limit("h1", "b", 2_000)).expect("put");
        store.rate_limit_put(&limit("h2", "a", 3_000)).expect("put");
        assert_eq!(
            store.rate_limit_list("h1").expect("list"),
            [limit("h1", "a", 1_000), limit("h1", "b", 2_000)]
        );
        assert_eq!(
            store.rate_limit_delete("h1", "b").expect("delete"),
            Some(limit("h1", "b", 2_000))
        );
        assert_eq!(store.rate_limit_delete("h1", "b").expect("delete"), None);
        // A host's limits go with it.
        store
            .host_insert("h1", "libvirt", &HostSettings::default())
            .expect("host");
        store.host_delete("h1").expect("deleted");
        assert!(store.rate_limit_list("h1").expect("list").is_empty());
        assert_eq!(store.rate_limit_list("h2").expect("list").len(), 1);
    }
}
