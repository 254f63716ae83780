//! Status samples of VMs (from the poller and from `upload`), with retention.

use rusqlite::params;

use crate::model::Sample;

use super::{Store, StoreResult, now_ms, off_reactor};

#[derive(Clone, Debug)]
pub struct SampleRecord {
    pub source: String,
    pub sample: Sample,
    pub created_at: i64,
}

impl Store {
    pub fn sample_insert(
        &self,
        host: &str,
        vm_uuid: &str,
        source: &str,
        sample: &Sample,
    ) -> StoreResult<()> {
        off_reactor(|| {
            self.connection()
            .prepare_cached(
                "INSERT INTO samples (host, vm_uuid, source, sample, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![host, vm_uuid, source, serde_json::to_string(sample)?, now_ms()])?;
            Ok(())
        })
    }

    /// Samples of one VM newer than `since_ms`, oldest first, at most `limit`.
    pub fn sample_history(
        &self,
        host: &str,
        vm_uuid: &str,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<SampleRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection.prepare_cached(
                "SELECT source, sample, created_at FROM (
                SELECT id, source, sample, created_at FROM samples
                WHERE host = ?1 AND vm_uuid = ?2 AND created_at >= ?3
                ORDER BY created_at DESC, id DESC LIMIT ?4
             ) ORDER BY created_at, id",
            )?;
            let rows = statement
                .query_map(params![host, vm_uuid, since_ms, limit], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(source, sample, created_at)| {
                    Ok(SampleRecord {
                        source,
                        sample: serde_json::from_str(&sample)?,
                        created_at,
                    })
                })
                .collect()
        })
    }

    /// The newest sample of every VM of a host, in one query.
    pub fn sample_latest_by_vm(
        &self,
        host: &str,
    ) -> StoreResult<std::collections::HashMap<String, SampleRecord>> {
        off_reactor(|| {
            let connection = self.reader();
            let mut statement = connection.prepare_cached(
                "SELECT vm_uuid, source, sample, created_at FROM samples
             WHERE id IN (SELECT MAX(id) FROM samples WHERE host = ?1 GROUP BY vm_uuid)",
            )?;
            let rows = statement
                .query_map([host], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(vm_uuid, source, sample, created_at)| {
                    Ok((
                        vm_uuid,
                        SampleRecord {
                            source,
                            sample: serde_json::from_str(&sample)?,
                            created_at,
                        },
                    ))
                })
                .collect()
        })
    }

    /// Drop samples older than `max_age_ms`, and beyond the newest
    /// `max_count` of each VM.
    pub fn sample_prune(&self, max_age_ms: i64, max_count: u32) -> StoreResult<usize> {
        off_reactor(|| {
            let connection = self.connection();
            let by_age = connection.execute(
                "DELETE FROM samples WHERE created_at < ?1",
                [now_ms() - max_age_ms],
            )?;
            let by_count = connection.execute(
            "DELETE FROM samples WHERE id IN (
                SELECT id FROM (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY host, vm_uuid ORDER BY id DESC) AS position
                    FROM samples
                ) WHERE position > ?1
             )",
            [max_count],
        )?;
            Ok(by_age + by_count)
        })
    }
}
