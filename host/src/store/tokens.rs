//! The admin token and the named API tokens, stored only as SHA-256 hashes.

use rusqlite::OptionalExtension;

use super::{Store, StoreError, StoreResult, now_ms, off_reactor};
use crate::model::{Role, TokenView};

impl Store {
    /// The hash of the current admin token, if one was ever set.
    pub fn token_hash(&self) -> StoreResult<Option<Vec<u8>>> {
        off_reactor(|| {
            Ok(self
                .reader()
                .prepare_cached("SELECT hash FROM tokens WHERE id = 1")?
                .query_row([], |row| row.get(0))
                .optional()?)
        })
    }

    /// The token hash as `token_hash` answers it, re-read from the database
    /// only when its files changed since the last read. Every request checks
    /// the token; a `stat` is far cheaper than a query, and any writer (this
    /// server, or `openidcs token reset` in another process) changes the files.
    pub fn token_hash_cached(&self) -> StoreResult<Option<Vec<u8>>> {
        let signature = self.file_signature();
        if let Some((cached_signature, hash)) = self.token_cache.read().as_ref()
            && Some(*cached_signature) == signature
        {
            return Ok(hash.clone());
        }
        // Signature first, then the read: a write in between changes the
        // files again, so the next request reads again.
        let hash = self.token_hash()?;
        if let Some(signature) = signature {
            *self.token_cache.write() = Some((signature, hash.clone()));
        }
        Ok(hash)
    }

    /// Replace the admin token; the old one stops working with this commit.
    pub fn set_token_hash(&self, hash: &[u8]) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "INSERT INTO tokens (id, hash, created_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at",
                rusqlite::params![hash, now_ms()],
            )?;
            Ok(())
        })
    }
}

/// A named token's row (`api_tokens`).
#[derive(Clone, Debug)]
pub struct ApiTokenRecord {
    pub name: String,
    pub role: Role,
    pub hosts: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiTokenRecord {
    pub fn view(&self) -> TokenView {
        TokenView {
            name: self.name.clone(),
            role: self.role,
            hosts: self.hosts.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
        }
    }
}

const TOKEN_COLUMNS: &str = "name, role, hosts, created_at, expires_at, last_used_at";

fn token_row(row: &rusqlite::Row) -> rusqlite::Result<(ApiTokenRecord, String)> {
    let role: String = row.get(1)?;
    let hosts: String = row.get(2)?;
    Ok((
        ApiTokenRecord {
            name: row.get(0)?,
            // An unknown role (a newer server wrote it) reaches nothing.
            role: Role::parse(&role).unwrap_or(Role::ReadOnly),
            hosts: Vec::new(),
            created_at: row.get(3)?,
            expires_at: row.get(4)?,
            last_used_at: row.get(5)?,
        },
        hosts,
    ))
}

fn with_hosts((mut record, hosts): (ApiTokenRecord, String)) -> StoreResult<ApiTokenRecord> {
    record.hosts = serde_json::from_str(&hosts)?;
    Ok(record)
}

impl Store {
    /// Store a new named token; a taken name is a conflict.
    pub fn api_token_insert(&self, record: &ApiTokenRecord, hash: &[u8]) -> StoreResult<()> {
        let hosts = serde_json::to_string(&record.hosts)?;
        off_reactor(|| {
            let inserted = self.connection().execute(
                "INSERT INTO api_tokens (name, role, hosts, hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
                rusqlite::params![
                    record.name,
                    record.role.as_str(),
                    hosts,
                    hash,
                    record.created_at,
                    record.expires_at
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "name: a token named {:?} exists",
                    record.name
                )));
            }
            Ok(())
        })
    }

    pub fn api_token_list(&self) -> StoreResult<Vec<ApiTokenRecord>> {
        off_reactor(|| {
            let reader = self.reader();
            let mut statement = reader.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name"
            ))?;
            let rows = statement.query_map([], token_row)?;
            rows.map(|row| with_hosts(row?)).collect()
        })
    }

    /// The named token with this hash, if any.
    pub fn api_token_by_hash(&self, hash: &[u8]) -> StoreResult<Option<ApiTokenRecord>> {
        off_reactor(|| {
            let found = self
                .reader()
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE hash = ?1"
                ))?
                .query_row([hash], token_row)
                .optional()?;
            found.map(with_hosts).transpose()
        })
    }

    /// Revoke a named token; an unknown name is not found.
    pub fn api_token_delete(&self, name: &str) -> StoreResult<()> {
        off_reactor(|| {
            let deleted = self
                .connection()
                .execute("DELETE FROM api_tokens WHERE name = ?1", [name])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("no token named {name:?}")));
            }
            Ok(())
        })
    }

    pub fn api_token_touch(&self, name: &str, at: i64) -> StoreResult<()> {
        off_reactor(|| {
            self.connection().execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE name = ?1",
                rusqlite::params![name, at],
            )?;
            Ok(())
        })
    }
}
