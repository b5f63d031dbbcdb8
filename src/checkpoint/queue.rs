//! The send queue: which conversations have work, each one's rows in send order, their stored
//! bodies, the writer thread that records every attempt, and the state changes a run makes before
//! it sends (failed rows requeued, unknown outcomes reopened for lookup). Used by `send` while it
//! sends and by `app` when a run starts or resumes.

use rusqlite::{OptionalExtension, TransactionBehavior};

use super::{
    now_ms, open_read_write, Checkpoint, Durability, Result, RowState, SqliteResultExt,
    WriterHandle,
};

/// A row of a conversation that still has work, in send order.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRow {
    pub line: u64,
    pub external_id: String,
    pub state: RowState,
    /// For failed rows: whether the failure was transient (a retry may succeed).
    pub retryable: bool,
    pub attempts: u32,
    /// When its last request was sent, ms since the Unix epoch.
    pub last_attempt_ms: Option<i64>,
    /// The bulk job its last attempt went in, once the API named it.
    pub bulk_job_id: Option<String>,
    /// Its last attempt went in a bulk job (whose id may never have come back).
    pub in_bulk_batch: bool,
}

/// A message this job created, as recorded: a lookup by its externalId must find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMessage {
    pub line: u64,
    pub external_id: String,
    pub conversation_id: String,
    pub message_id: String,
}

/// Which failed rows `resume --retry-failed` puts back to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryScope {
    Transient,
    All,
}

impl Checkpoint {
    /// Conversations that have rows `pending` or `sending`, ordered by their first input line
    /// (the first line of any of their sendable rows, whatever its state).
    pub fn conversations_with_work(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT conversation_id FROM row
                 WHERE state NOT IN ('invalid', 'duplicate')
                   AND conversation_id IN
                       (SELECT conversation_id FROM row WHERE state IN ('pending', 'sending'))
                 GROUP BY conversation_id
                 ORDER BY MIN(line)",
            )
            .at(&self.path)?;
        let ids = stmt
            .query_map([], |row| row.get("conversation_id"))
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .at(&self.path)?;
        Ok(ids)
    }

    /// The rows of one conversation that are pending, sending or failed, in send order
    /// (sentAt, then line).
    pub fn conversation_queue(&self, conversation_id: &str) -> Result<Vec<QueuedRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT line, external_id, state, retryable, attempts, last_attempt_ms, bulk_job_id,
                        bulk_batch IS NOT NULL AS in_bulk_batch
                 FROM row
                 WHERE conversation_id = ?1 AND state IN ('pending', 'sending', 'failed')
                 ORDER BY sent_at_micros, line",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([conversation_id]).at(&self.path)?;
        let mut queue = Vec::new();
        while let Some(row) = rows.next().at(&self.path)? {
            let line: u64 = row.get("line").at(&self.path)?;
            let external_id: Option<String> = row.get("external_id").at(&self.path)?;
            let state: String = row.get("state").at(&self.path)?;
            let external_id = external_id
                .ok_or_else(|| self.corrupt(format!("row at line {line} has no externalId")))?;
            queue.push(QueuedRow {
                line,
                external_id,
                state: self.parse_state(&state)?,
                retryable: row.get("retryable").at(&self.path)?,
                attempts: row.get("attempts").at(&self.path)?,
                last_attempt_ms: row.get("last_attempt_ms").at(&self.path)?,
                bulk_job_id: row.get("bulk_job_id").at(&self.path)?,
                in_bulk_batch: row.get("in_bulk_batch").at(&self.path)?,
            });
        }
        Ok(queue)
    }

    /// The exact body stored for a row.
    pub fn body(&self, line: u64) -> Result<String> {
        let body: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT body FROM row WHERE line = ?1")
            .and_then(|mut stmt| stmt.query_row([line], |row| row.get("body")).optional())
            .at(&self.path)?;
        match body {
            Some(Some(body)) => Ok(body),
            Some(None) => Err(self.corrupt(format!("row at line {line} has no body"))),
            None => Err(self.corrupt(format!("no row at line {line}"))),
        }
    }

    /// Puts failed rows back to pending; returns how many.
    ///
    /// Attempts and attempt times are kept: they describe what already happened. Rows whose
    /// outcome is unknown are not touched: they may exist, so every run looks them up first
    /// ([`Checkpoint::reopen_unknown_outcomes`]) and never sends them blind.
    pub fn requeue_failed(&mut self, scope: RetryScope) -> Result<u64> {
        let only_transient = match scope {
            RetryScope::Transient => " AND retryable = 1",
            RetryScope::All => "",
        };
        let sql = format!(
            "UPDATE row SET state = 'pending', http_status = NULL, error_code = NULL,
                            error_message = NULL, retryable = 0, finished_ms = NULL
             WHERE state = 'failed' AND error_code IS NOT '{}'{only_transient}",
            super::codes::OUTCOME_UNKNOWN
        );
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(&path)?;
        let changed = tx.execute(&sql, []).at(&path)?;
        tx.execute("UPDATE job SET updated_at_ms = ?1 WHERE id = 1", [now_ms()])
            .at(&path)?;
        tx.commit().at(&path)?;
        Ok(changed as u64)
    }

    /// Turns failed rows with `code` (outcome unknown) back into `sending`, the state whose
    /// rows are looked up before anything is sent; returns how many.
    pub fn reopen_unknown_outcomes(&mut self, code: &str) -> Result<u64> {
        let changed = self
            .conn
            .execute(
                "UPDATE row SET state = 'sending', finished_ms = NULL
                 WHERE state = 'failed' AND error_code = ?1",
                [code],
            )
            .at(&self.path)?;
        Ok(changed as u64)
    }

    /// A message this job created (the lowest line), to prove the lookup route on.
    pub fn known_created_message(&self) -> Result<Option<KnownMessage>> {
        self.conn
            .query_row(
                "SELECT line, external_id, conversation_id, message_id FROM row
                 WHERE state = 'succeeded' AND message_id IS NOT NULL
                   AND external_id IS NOT NULL AND conversation_id IS NOT NULL
                   AND error_code IS NULL
                 ORDER BY line LIMIT 1",
                [],
                |row| {
                    Ok(KnownMessage {
                        line: row.get("line")?,
                        external_id: row.get("external_id")?,
                        conversation_id: row.get("conversation_id")?,
                        message_id: row.get("message_id")?,
                    })
                },
            )
            .optional()
            .at(&self.path)
    }

    /// Whether any row of the job was ever sent.
    pub fn anything_sent(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM row WHERE attempts > 0 OR state = 'succeeded')",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Starts the writer thread for the send phase, on its own connection.
    pub fn writer(&self) -> Result<WriterHandle> {
        let conn = open_read_write(&self.path, Durability::PowerLoss)?;
        WriterHandle::start(conn, self.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::test_support::*;
    use crate::checkpoint::CheckpointError;

    #[test]
    fn queues_follow_send_order_and_first_lines() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                valid(1, "c2", "a", 300),
                valid(2, "c1", "b", 200),
                valid(3, "c1", "c", 100),
                valid(4, "c2", "d", 300),
                valid(5, "c3", "e", 1),
                invalid(6, "bad"),
            ],
        );
        cp.conn
            .execute_batch(
                "UPDATE row SET state = 'succeeded' WHERE line = 5;
                 UPDATE row SET state = 'failed', retryable = 1, attempts = 2 WHERE line = 3;",
            )
            .unwrap();
        assert_eq!(cp.conversations_with_work().unwrap(), vec!["c2", "c1"]);
        let queue = cp.conversation_queue("c1").unwrap();
        assert_eq!(
            queue,
            vec![
                QueuedRow {
                    line: 3,
                    external_id: "c".into(),
                    state: RowState::Failed,
                    retryable: true,
                    attempts: 2,
                    last_attempt_ms: queue[0].last_attempt_ms,
                    bulk_job_id: None,
                    in_bulk_batch: false,
                },
                QueuedRow {
                    line: 2,
                    external_id: "b".into(),
                    state: RowState::Pending,
                    retryable: false,
                    attempts: 0,
                    last_attempt_ms: None,
                    bulk_job_id: None,
                    in_bulk_batch: false,
                },
            ]
        );
        let lines: Vec<u64> = cp
            .conversation_queue("c2")
            .unwrap()
            .iter()
            .map(|q| q.line)
            .collect();
        assert_eq!(lines, vec![1, 4], "equal sentAt falls back to line order");
        assert!(matches!(cp.body(99), Err(CheckpointError::Corrupt { .. })));
        assert!(matches!(cp.body(6), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn requeue_failed_by_scope() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            (1..=4)
                .map(|l| valid(l, "c", &format!("e{l}"), l as i64))
                .collect(),
        );
        cp.conn
            .execute_batch(
                "UPDATE row SET state = 'failed', retryable = 1, http_status = 503,
                        error_code = 'http_503', error_message = 'unavailable', finished_ms = 9
                     WHERE line IN (1, 2);
                 UPDATE row SET state = 'failed', retryable = 0, http_status = 400,
                        error_code = 'http_400', error_message = 'bad' WHERE line = 3;",
            )
            .unwrap();
        assert_eq!(cp.requeue_failed(RetryScope::Transient).unwrap(), 2);
        let cleared: (String, Option<i64>, Option<String>, Option<i64>) = cp
            .conn
            .query_row(
                "SELECT state, http_status, error_message, finished_ms FROM row WHERE line = 1",
                [],
                |r| {
                    Ok((
                        r.get("state")?,
                        r.get("http_status")?,
                        r.get("error_message")?,
                        r.get("finished_ms")?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(cleared, ("pending".to_string(), None, None, None));
        assert_eq!(cp.counts().unwrap().failed, 1);
        assert_eq!(cp.requeue_failed(RetryScope::All).unwrap(), 1);
        assert_eq!(cp.counts().unwrap().pending, 4);
    }
}
