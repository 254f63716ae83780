//! The admin token, stored only as its SHA-256 hash.

use rusqlite::OptionalExtension;

use super::{Store, StoreResult, now_ms};

impl Store {
    /// The hash of the current admin token, if one was ever set.
    pub fn token_hash(&self) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .connection()
            .prepare_cached("SELECT hash FROM tokens WHERE id = 1")?
            .query_row([], |row| row.get(0))
            .optional()?)
    }

    /// Replace the admin token; the old one stops working with this commit.
    pub fn set_token_hash(&self, hash: &[u8]) -> StoreResult<()> {
        self.connection().execute(
            "INSERT INTO tokens (id, hash, created_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, created_at = excluded.created_at",
            rusqlite::params![hash, now_ms()],
        )?;
        Ok(())
    }
}
