//! The admin token, stored only as its SHA-256 hash.

use rusqlite::OptionalExtension;

use super::{Store, StoreResult, now_ms, off_reactor};

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
