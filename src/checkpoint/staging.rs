//! Staging: validated and invalid input rows written into the checkpoint in batches that a
//! killed run resumes after. Used by `app`'s pipeline (`run`, `validate`, `demo`, `bench`) before
//! anything is sent.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Checkpoint, CheckpointError, Result, RowState, SqliteResultExt};
use crate::row::ValidRow;

/// Rows staged per transaction: large enough that commits cost little, small enough that a
/// killed staging loses only seconds of work.
const STAGING_BATCH_ROWS: u64 = 2_000;

/// One row to stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    pub line: u64,
    pub byte_offset: u64,
    pub byte_len: u64,
    pub kind: StagedKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StagedKind {
    Valid(ValidRow),
    Invalid {
        reason: String,
        conversation_id: Option<String>,
        external_id: Option<String>,
    },
}

impl Checkpoint {
    /// Stages rows in batches. Rows with a line already staged are skipped (resumed staging);
    /// a valid row whose externalId is already taken is stored as `duplicate`.
    pub fn stager(&mut self) -> Stager<'_> {
        Stager {
            checkpoint: self,
            in_transaction: false,
            rows_in_batch: 0,
            highest_line: None,
            aborted: None,
        }
    }
}

/// Batched staging; see [`Checkpoint::stager`].
///
/// One transaction stays open across [`Stager::add`] calls and is committed every
/// `STAGING_BATCH_ROWS` rows together with `job.staged_through_line`, so a killed staging
/// resumes exactly after the last committed batch. Dropped without [`Stager::finish`], the open
/// batch is rolled back.
pub struct Stager<'a> {
    checkpoint: &'a mut Checkpoint,
    in_transaction: bool,
    rows_in_batch: u64,
    /// Highest line in the table (committed or in the open batch); lines above it need no
    /// lookup. Loaded on first use.
    highest_line: Option<u64>,
    /// Set after an error rolled the batch back: later rows would silently leave a gap.
    aborted: Option<String>,
}

impl Stager<'_> {
    /// Adds one row; returns the state it was stored in.
    pub fn add(&mut self, row: StagedRow) -> Result<RowState> {
        self.check_not_aborted()?;
        let outcome = self.add_unguarded(row);
        if let Err(err) = &outcome {
            self.abort(err);
        }
        outcome
    }

    /// Commits what is buffered and marks staging complete.
    pub fn finish(mut self) -> Result<()> {
        self.check_not_aborted()?;
        let outcome = self.finish_unguarded();
        if let Err(err) = &outcome {
            self.abort(err);
        }
        outcome
    }

    fn check_not_aborted(&self) -> Result<()> {
        match &self.aborted {
            Some(first) => Err(CheckpointError::WriterGone {
                detail: format!(
                    "staging stopped after an earlier error ({first}); rows since the last \
                     commit were rolled back and will be staged again on resume"
                ),
            }),
            None => Ok(()),
        }
    }

    fn abort(&mut self, err: &CheckpointError) {
        self.aborted = Some(err.to_string());
        self.rollback_open_batch();
    }

    fn rollback_open_batch(&mut self) {
        // SQLite may already have rolled back by itself (disk full, I/O error).
        if self.in_transaction && !self.checkpoint.conn.is_autocommit() {
            if let Err(err) = self.checkpoint.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %err, "rolling back the open staging batch failed");
            }
        }
        self.in_transaction = false;
        self.rows_in_batch = 0;
        self.highest_line = None;
    }

    fn begin_if_needed(&mut self) -> Result<()> {
        if !self.in_transaction {
            let cp = &self.checkpoint;
            cp.conn.execute_batch("BEGIN IMMEDIATE").at(&cp.path)?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn add_unguarded(&mut self, row: StagedRow) -> Result<RowState> {
        self.begin_if_needed()?;
        let cp = &*self.checkpoint;
        let highest = match self.highest_line {
            Some(highest) => highest,
            None => cp
                .conn
                .query_row("SELECT COALESCE(MAX(line), 0) FROM row", [], |r| r.get(0))
                .at(&cp.path)?,
        };
        if row.line <= highest {
            let existing: Option<String> = cp
                .conn
                .prepare_cached("SELECT state FROM row WHERE line = ?1")
                .and_then(|mut stmt| stmt.query_row([row.line], |r| r.get("state")).optional())
                .at(&cp.path)?;
            if let Some(state) = existing {
                self.highest_line = Some(highest);
                return cp.parse_state(&state);
            }
        }
        let state = stage_row(cp, &row)?;
        self.highest_line = Some(highest.max(row.line));
        self.rows_in_batch += 1;
        if self.rows_in_batch >= STAGING_BATCH_ROWS {
            self.commit_batch(false)?;
        }
        Ok(state)
    }

    fn finish_unguarded(&mut self) -> Result<()> {
        self.begin_if_needed()?;
        self.commit_batch(true)
    }

    /// Commits the open batch with the staging progress it reaches.
    fn commit_batch(&mut self, complete: bool) -> Result<()> {
        let cp = &*self.checkpoint;
        let highest = match self.highest_line {
            Some(highest) => highest,
            None => cp
                .conn
                .query_row("SELECT COALESCE(MAX(line), 0) FROM row", [], |r| r.get(0))
                .at(&cp.path)?,
        };
        let updated = cp
            .conn
            .prepare_cached(STAGING_PROGRESS_SQL)
            .and_then(|mut stmt| stmt.execute(params![highest, complete, now_ms()]))
            .at(&cp.path)?;
        if updated == 0 {
            return Err(CheckpointError::NoJob {
                path: cp.path.clone(),
            });
        }
        cp.conn.execute_batch("COMMIT").at(&cp.path)?;
        self.in_transaction = false;
        self.rows_in_batch = 0;
        self.highest_line = Some(highest);
        Ok(())
    }
}

const INSERT_ROW_SQL: &str = "INSERT INTO row (line, byte_offset, byte_len, external_id,
    conversation_id, sent_at, sent_at_micros, body, state, error_code, error_message,
    ticket_key, customer_key, ticket_json)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// The first valid row holding an externalId: the owner a later row would duplicate.
const EXTERNAL_ID_OWNER_SQL: &str = "SELECT line FROM row
    WHERE external_id = ?1 AND state NOT IN ('invalid', 'duplicate')
    ORDER BY line LIMIT 1";

const STAGING_PROGRESS_SQL: &str = "UPDATE job SET
    staged_through_line = MAX(staged_through_line, ?1),
    staging_complete = MAX(staging_complete, ?2),
    updated_at_ms = ?3
    WHERE id = 1";

/// Inserts one new row (its line is known to be absent) and returns the state it got.
fn stage_row(cp: &Checkpoint, row: &StagedRow) -> Result<RowState> {
    let insert = |state: RowState,
                  valid: Option<&ValidRow>,
                  conversation_id: Option<&str>,
                  external_id: Option<&str>,
                  error: Option<(&str, &str)>|
     -> Result<()> {
        let ticket = valid.and_then(|v| v.ticket.as_ref());
        let ticket_json = ticket
            .map(serde_json::to_string)
            .transpose()
            .map_err(|err| cp.corrupt(format!("ticket not serialisable: {err}")))?;
        cp.conn
            .prepare_cached(INSERT_ROW_SQL)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    row.line,
                    row.byte_offset,
                    row.byte_len,
                    external_id,
                    conversation_id,
                    valid.map(|v| v.sent_at.as_str()),
                    valid.map(|v| v.sent_at_micros),
                    valid.map(|v| v.body.as_str()),
                    state.as_str(),
                    error.map(|(code, _)| code),
                    error.map(|(_, message)| message),
                    ticket.map(|t| t.external_id.as_str()),
                    ticket.map(|t| t.customer.key()),
                    ticket_json,
                ])
            })
            .at(&cp.path)?;
        Ok(())
    };
    match &row.kind {
        StagedKind::Valid(valid) => {
            let taken_by: Option<u64> = cp
                .conn
                .prepare_cached(EXTERNAL_ID_OWNER_SQL)
                .and_then(|mut stmt| {
                    stmt.query_row([&valid.external_id], |r| r.get("line"))
                        .optional()
                })
                .at(&cp.path)?;
            let conversation_id = valid.conversation_id.as_deref();
            let external_id = Some(valid.external_id.as_str());
            match taken_by {
                Some(first_line) => {
                    let message = format!(
                        "externalId {} already used by line {first_line}",
                        valid.external_id
                    );
                    insert(
                        RowState::Duplicate,
                        Some(valid),
                        conversation_id,
                        external_id,
                        Some(("duplicate_external_id", &message)),
                    )?;
                    Ok(RowState::Duplicate)
                }
                None => {
                    insert(
                        RowState::Pending,
                        Some(valid),
                        conversation_id,
                        external_id,
                        None,
                    )?;
                    Ok(RowState::Pending)
                }
            }
        }
        StagedKind::Invalid {
            reason,
            conversation_id,
            external_id,
        } => {
            insert(
                RowState::Invalid,
                None,
                conversation_id.as_deref(),
                external_id.as_deref(),
                Some(("invalid_row", reason)),
            )?;
            Ok(RowState::Invalid)
        }
    }
}

impl Drop for Stager<'_> {
    fn drop(&mut self) {
        self.rollback_open_batch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::test_support::*;

    #[test]
    fn staging_stores_states_and_detects_duplicates() {
        let (_dir, mut cp) = checkpoint_with_job();
        let mut stager = cp.stager();
        assert_eq!(
            stager.add(valid(2, "c1", "e1", 10)).unwrap(),
            RowState::Pending
        );
        assert_eq!(
            stager.add(invalid(3, "sentAt: not a date")).unwrap(),
            RowState::Invalid
        );
        assert_eq!(
            stager.add(valid(4, "c2", "e1", 5)).unwrap(),
            RowState::Duplicate
        );
        assert_eq!(
            stager.add(valid(5, "c2", "e2", 5)).unwrap(),
            RowState::Pending
        );
        stager.finish().unwrap();

        let counts = cp.counts().unwrap();
        assert_eq!(
            (counts.pending, counts.invalid, counts.duplicate),
            (2, 1, 1)
        );
        assert_eq!(counts.total(), 4);
        let (code, message): (String, String) = cp
            .conn
            .query_row(
                "SELECT error_code, error_message FROM row WHERE line = 4",
                [],
                |r| Ok((r.get("error_code")?, r.get("error_message")?)),
            )
            .unwrap();
        assert_eq!(code, "duplicate_external_id");
        assert_eq!(message, "externalId e1 already used by line 2");
        let (code, message, conversation): (String, String, String) = cp
            .conn
            .query_row(
                "SELECT error_code, error_message, conversation_id FROM row WHERE line = 3",
                [],
                |r| {
                    Ok((
                        r.get("error_code")?,
                        r.get("error_message")?,
                        r.get("conversation_id")?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            (code.as_str(), message.as_str(), conversation.as_str()),
            ("invalid_row", "sentAt: not a date", "c-bad")
        );
        assert_eq!(cp.body(2).unwrap(), "{\"externalId\":\"e1\",\"line\":2}");
        let job = cp.job().unwrap().unwrap();
        assert_eq!(job.staged_through_line, 5);
        assert!(job.staging_complete);
    }

    #[test]
    fn restaging_skips_present_lines_and_returns_their_state() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![valid(1, "c1", "e1", 1), valid(2, "c1", "e1", 2)],
        );
        let mut stager = cp.stager();
        assert_eq!(
            stager.add(valid(1, "c1", "e1", 1)).unwrap(),
            RowState::Pending
        );
        assert_eq!(
            stager.add(valid(2, "c1", "e1", 2)).unwrap(),
            RowState::Duplicate
        );
        assert_eq!(
            stager.add(valid(3, "c1", "e3", 3)).unwrap(),
            RowState::Pending
        );
        stager.finish().unwrap();
        assert_eq!(cp.counts().unwrap().total(), 3);
    }

    #[test]
    fn dropped_stager_keeps_only_committed_batches() {
        let (_dir, mut cp) = checkpoint_with_job();
        let rows = STAGING_BATCH_ROWS + 500;
        {
            let mut stager = cp.stager();
            for line in 1..=rows {
                stager
                    .add(valid(line, "c", &format!("e{line}"), line as i64))
                    .unwrap();
            }
            // Dropped without finish: the last 500 rows were never committed.
        }
        assert_eq!(cp.counts().unwrap().pending, STAGING_BATCH_ROWS);
        let job = cp.job().unwrap().unwrap();
        assert_eq!(job.staged_through_line, STAGING_BATCH_ROWS);
        assert!(!job.staging_complete);
        assert!(cp.conn.is_autocommit(), "no transaction left open");

        // Resuming from the start skips what is there and stages the rest.
        let mut stager = cp.stager();
        for line in 1..=rows {
            stager
                .add(valid(line, "c", &format!("e{line}"), line as i64))
                .unwrap();
        }
        stager.finish().unwrap();
        assert_eq!(cp.counts().unwrap().pending, rows);
        assert_eq!(cp.job().unwrap().unwrap().staged_through_line, rows);
    }

    #[test]
    fn staging_without_a_job_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("cp.db")).unwrap();
        let mut stager = cp.stager();
        stager.add(valid(1, "c", "e", 1)).unwrap();
        assert!(matches!(
            stager.finish(),
            Err(CheckpointError::NoJob { .. })
        ));
        assert_eq!(cp.counts().unwrap().total(), 0, "the batch was rolled back");
    }

    #[test]
    fn stager_refuses_rows_after_an_error() {
        let (_dir, mut cp) = checkpoint_with_job();
        cp.conn
            .execute_batch("DROP INDEX row_by_external_id; DROP TABLE row;")
            .unwrap();
        let mut stager = cp.stager();
        assert!(stager.add(valid(1, "c", "e", 1)).is_err());
        let err = stager.add(valid(2, "c", "e2", 2)).unwrap_err();
        assert!(
            err.to_string()
                .contains("staging stopped after an earlier error"),
            "{err}"
        );
    }

    /// Staging speed check: `cargo test --release --lib staging_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing measurement, run by hand"]
    fn staging_speed() {
        let (_dir, mut cp) = checkpoint_with_job();
        let started = std::time::Instant::now();
        let mut stager = cp.stager();
        for line in 1..=1_000_000u64 {
            let conversation = format!("{:024x}", line % 50_000);
            stager
                .add(valid(
                    line,
                    &conversation,
                    &format!("ext-{line}"),
                    line as i64,
                ))
                .unwrap();
        }
        stager.finish().unwrap();
        let staged = started.elapsed();
        let started = std::time::Instant::now();
        let counts = cp.counts().unwrap();
        let activity = cp.activity(0).unwrap();
        let held = cp.held_count().unwrap();
        println!(
            "staged 1,000,000 rows in {staged:?}; counts+activity+held in {:?} ({counts:?}, {activity:?}, {held})",
            started.elapsed()
        );
        assert_eq!(counts.pending, 1_000_000);
    }
}
