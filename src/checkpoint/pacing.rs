//! The send phase's pacing figures (the org window as the import sees it), kept in the
//! checkpoint so that `status`, another process, can show them. The running job replaces the
//! one row every few seconds on a connection of its own: a tiny transaction, never one of the
//! row writer's, so a slow `status` or a busy writer never holds the other up for long
//! (both wait on the busy timeout).

use rusqlite::{params, OptionalExtension};

use super::{open_read_write, Checkpoint, Durability, Result, SqliteResultExt};

/// The pacing figures of a running job, for the progress line, `status` (through this store)
/// and the final summary. Rates are requests per minute. Plain data: `throttle` fills it
/// (`PacingSnapshot::of`) and says it in words.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PacingSnapshot {
    pub updated_at_ms: i64,
    /// The share adapts to the others (the API reports its window).
    pub adaptive: bool,
    /// Responses came back without rate-limit headers: paced at the ceiling alone.
    pub rate_headers_missing: bool,
    pub ceiling_per_minute: u32,
    pub org_limit: Option<u32>,
    pub reserve: Option<u32>,
    pub others_per_minute: Option<f64>,
    pub import_per_minute: Option<f64>,
    pub allowed_per_minute: Option<f64>,
    /// How long the import held back for the others so far in this run.
    pub yielded_ms: u64,
    /// End of a common pause under way, ms since the Unix epoch.
    pub paused_until_ms: Option<i64>,
    /// Requests of every kind this run has sent so far, and when it began (ms since the epoch).
    pub requests: u64,
    pub run_started_ms: Option<i64>,
}

/// A connection of the running job that replaces the pacing row.
pub struct PacingWriter {
    checkpoint: Checkpoint,
}

impl PacingWriter {
    pub fn open(path: &std::path::Path) -> Result<PacingWriter> {
        let conn = open_read_write(path, Durability::Process)?;
        Ok(PacingWriter {
            checkpoint: Checkpoint {
                conn,
                path: path.to_path_buf(),
                schema: super::migrate::newest_version(),
            },
        })
    }

    pub fn write(&self, record: &PacingSnapshot) -> Result<()> {
        let cp = &self.checkpoint;
        cp.conn
            .execute(
                "INSERT OR REPLACE INTO pacing (id, updated_at_ms, adaptive, rate_headers_missing,
                     ceiling_per_minute, org_limit, reserve, others_per_minute, import_per_minute,
                     allowed_per_minute, yielded_ms, paused_until_ms, requests, run_started_ms)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    record.updated_at_ms,
                    record.adaptive,
                    record.rate_headers_missing,
                    record.ceiling_per_minute,
                    record.org_limit,
                    record.reserve,
                    record.others_per_minute,
                    record.import_per_minute,
                    record.allowed_per_minute,
                    i64::try_from(record.yielded_ms).unwrap_or(i64::MAX),
                    record.paused_until_ms,
                    i64::try_from(record.requests).unwrap_or(i64::MAX),
                    record.run_started_ms,
                ],
            )
            .at(&cp.path)?;
        Ok(())
    }
}

impl Checkpoint {
    /// The last pacing figures a run wrote; `None` before any send, or in a checkpoint from a
    /// build without them (read-only opens do not migrate).
    pub fn pacing(&self) -> Result<Option<PacingSnapshot>> {
        let has_table: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'pacing')",
                [],
                |row| row.get(0),
            )
            .at(&self.path)?;
        if !has_table {
            return Ok(None);
        }
        // A read-only open does not migrate: before schema 5 the run's spend was not kept.
        let spend = if self.schema >= 5 {
            "requests, run_started_ms"
        } else {
            "0 AS requests, NULL AS run_started_ms"
        };
        self.conn
            .query_row(
                &format!(
                    "SELECT updated_at_ms, adaptive, rate_headers_missing, ceiling_per_minute,
                            org_limit, reserve, others_per_minute, import_per_minute,
                            allowed_per_minute, yielded_ms, paused_until_ms, {spend}
                     FROM pacing WHERE id = 1"
                ),
                [],
                |row| {
                    Ok(PacingSnapshot {
                        updated_at_ms: row.get("updated_at_ms")?,
                        adaptive: row.get("adaptive")?,
                        rate_headers_missing: row.get("rate_headers_missing")?,
                        ceiling_per_minute: row.get("ceiling_per_minute")?,
                        org_limit: row.get("org_limit")?,
                        reserve: row.get("reserve")?,
                        others_per_minute: row.get("others_per_minute")?,
                        import_per_minute: row.get("import_per_minute")?,
                        allowed_per_minute: row.get("allowed_per_minute")?,
                        yielded_ms: row.get::<_, i64>("yielded_ms")?.max(0).unsigned_abs(),
                        paused_until_ms: row.get("paused_until_ms")?,
                        requests: row.get::<_, i64>("requests")?.max(0).unsigned_abs(),
                        run_started_ms: row.get("run_started_ms")?,
                    })
                },
            )
            .optional()
            .at(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_round_trips_and_is_absent_until_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.sqlite");
        let checkpoint = Checkpoint::open(&path).unwrap();
        assert_eq!(checkpoint.pacing().unwrap(), None);
        let writer = PacingWriter::open(&path).unwrap();
        let mut record = PacingSnapshot {
            updated_at_ms: 1_700_000_000_000,
            adaptive: true,
            rate_headers_missing: false,
            ceiling_per_minute: 900,
            org_limit: Some(1800),
            reserve: Some(180),
            others_per_minute: Some(1080.5),
            import_per_minute: Some(540.0),
            allowed_per_minute: Some(560.0),
            yielded_ms: 12_345,
            paused_until_ms: None,
            requests: 42,
            run_started_ms: Some(1_700_000_000_000),
        };
        writer.write(&record).unwrap();
        record.yielded_ms = 20_000;
        writer.write(&record).unwrap();
        let reader = Checkpoint::open_read_only(&path).unwrap();
        assert_eq!(reader.pacing().unwrap(), Some(record));
    }
}
