//! NAT rules, IP entries and proxy entries of VMs, in insertion order (the
//! API addresses them by their position in that order).

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
