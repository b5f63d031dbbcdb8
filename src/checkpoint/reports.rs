//! Read queries for reports: counts by state, send activity, held rows, error groups and
//! classes, row outcomes, rejects, result buckets, latencies and budget waits, the slowest
//! conversations. Used by `report` (`status`, `report` in every format, `--rejects`) and by
//! `app`'s summaries. Each query aggregates in SQL or streams, so memory stays bounded however
//! many rows the job has.

use rusqlite::params;

use super::{Checkpoint, CheckpointError, Result, RowState, SqliteResultExt};

/// Counts of rows by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub pending: u64,
    pub sending: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub invalid: u64,
    pub duplicate: u64,
}

impl StateCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.sending + self.succeeded + self.failed + self.invalid + self.duplicate
    }

    /// The count for one state.
    pub fn get(&self, state: RowState) -> u64 {
        match state {
            RowState::Pending => self.pending,
            RowState::Sending => self.sending,
            RowState::Succeeded => self.succeeded,
            RowState::Failed => self.failed,
            RowState::Invalid => self.invalid,
            RowState::Duplicate => self.duplicate,
        }
    }

    fn slot(&mut self, state: RowState) -> &mut u64 {
        match state {
            RowState::Pending => &mut self.pending,
            RowState::Sending => &mut self.sending,
            RowState::Succeeded => &mut self.succeeded,
            RowState::Failed => &mut self.failed,
            RowState::Invalid => &mut self.invalid,
            RowState::Duplicate => &mut self.duplicate,
        }
    }
}

/// When sends happened, for rates and elapsed time; all times in ms since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Earliest first attempt of any row.
    pub first_attempt_ms: Option<i64>,
    /// Latest time a row became succeeded or failed.
    pub last_result_ms: Option<i64>,
    /// Rows with a final result (succeeded or failed).
    pub finished: u64,
    /// Rows whose result came at or after the `since_ms` asked for.
    pub finished_since: u64,
    /// Earliest last attempt among the rows whose result came at or after `since_ms`: when the
    /// work behind those results began, so a run younger than the window (or resumed within it)
    /// is measured over the time it actually ran.
    pub recent_work_started_ms: Option<i64>,
}

/// Rows sharing one error code and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorGroup {
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub count: u64,
    /// The first few input lines with this error, ascending.
    pub example_lines: Vec<u64>,
}

/// Everything recorded about one input row except its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    pub line: u64,
    pub external_id: Option<String>,
    pub conversation_id: Option<String>,
    pub state: RowState,
    pub message_id: Option<String>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    /// The bulk job its last attempt went in (bulk mode).
    pub bulk_job_id: Option<String>,
    /// For a row naming a source ticket: the ticket, its customer's Kustomer id and the
    /// conversation it was resolved to (once known).
    pub conversation_external_id: Option<String>,
    pub customer_id: Option<String>,
    pub resolved_conversation_id: Option<String>,
}

/// States whose rows carry an error worth reporting.
const ERROR_STATES_SQL: &str = "('failed', 'invalid', 'duplicate')";

impl Checkpoint {
    pub fn counts(&self) -> Result<StateCounts> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) AS count FROM row GROUP BY state")
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        let mut counts = StateCounts::default();
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get("state").at(&self.path)?;
            let count: u64 = row.get("count").at(&self.path)?;
            *counts.slot(self.parse_state(&state)?) = count;
        }
        Ok(counts)
    }

    /// Runs `read` inside one read transaction, so every query in it sees the same snapshot
    /// even while a run commits (WAL readers never block the writer).
    pub fn read_consistent<T, E>(
        &self,
        read: impl FnOnce(&Checkpoint) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<CheckpointError>,
    {
        let tx = self.conn.unchecked_transaction().at(&self.path)?;
        let value = read(self)?;
        // Nothing was written: ending the read transaction either way releases the snapshot.
        tx.rollback().at(&self.path)?;
        Ok(value)
    }

    /// Send timing for rates: see [`Activity`].
    pub fn activity(&self, since_ms: i64) -> Result<Activity> {
        let (first_attempt_ms, last_result_ms, finished, finished_since, recent_work_started_ms) =
            self.conn
                .query_row(
                    "SELECT (SELECT MIN(first_attempt_ms) FROM row WHERE first_attempt_ms IS NOT NULL)
                            AS first_attempt_ms,
                        (SELECT MAX(finished_ms) FROM row WHERE finished_ms IS NOT NULL) AS last_result_ms,
                        (SELECT COUNT(*) FROM row WHERE finished_ms IS NOT NULL) AS finished,
                        (SELECT COUNT(*) FROM row WHERE finished_ms IS NOT NULL
                                                    AND finished_ms >= ?1) AS finished_since,
                        (SELECT MIN(last_attempt_ms) FROM row WHERE finished_ms IS NOT NULL
                                                    AND finished_ms >= ?1)
                            AS recent_work_started_ms",
                    [since_ms],
                    |row| {
                        Ok((
                            row.get("first_attempt_ms")?,
                            row.get("last_result_ms")?,
                            row.get("finished")?,
                            row.get("finished_since")?,
                            row.get("recent_work_started_ms")?,
                        ))
                    },
                )
                .at(&self.path)?;
        Ok(Activity {
            first_attempt_ms,
            last_result_ms,
            finished,
            finished_since,
            recent_work_started_ms,
        })
    }

    /// Pending rows held back because an earlier row (in send order) of their conversation
    /// failed transiently: they wait so the conversation stays in order.
    pub fn held_count(&self) -> Result<u64> {
        self.conn
            .query_row(
                "WITH first_failure AS (
                     SELECT conversation_id, sent_at_micros, line FROM (
                         SELECT conversation_id, sent_at_micros, line,
                                ROW_NUMBER() OVER (PARTITION BY conversation_id
                                                   ORDER BY sent_at_micros, line) AS rank
                         FROM row WHERE state = 'failed' AND retryable = 1)
                     WHERE rank = 1)
                 SELECT COUNT(*) FROM row AS held JOIN first_failure AS f
                     ON held.conversation_id = f.conversation_id
                 WHERE held.state = 'pending'
                   AND (held.sent_at_micros, held.line) > (f.sent_at_micros, f.line)",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Calls `each` for groups of failed, invalid and duplicate rows sharing an error code and
    /// normalised message (ids and numbers replaced, see `text::normalise_message`), largest first, with up to `examples` lines each; at most `limit` groups.
    pub fn for_each_error_group<E>(
        &self,
        limit: Option<u64>,
        examples: u32,
        mut each: impl FnMut(ErrorGroup) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let sql = format!(
            "WITH normalised AS (
                 SELECT line, error_code, normalised_message(error_message) AS error_message
                 FROM row WHERE state IN {ERROR_STATES_SQL}),
             ranked AS (
                 SELECT line, error_code, error_message,
                        ROW_NUMBER() OVER (PARTITION BY error_code, error_message ORDER BY line)
                            AS rank,
                        COUNT(*) OVER (PARTITION BY error_code, error_message) AS size
                 FROM normalised)
             SELECT error_code, error_message, size, group_concat(line, ',' ORDER BY line) AS lines
             FROM ranked WHERE rank <= ?1
             GROUP BY error_code, error_message
             ORDER BY size DESC, error_code, error_message
             LIMIT ?2"
        );
        // SQLite reads a negative LIMIT as "no limit".
        let limit = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
        let mut rows = stmt.query(params![examples, limit]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            let lines: String = row.get("lines").at(&self.path)?;
            let example_lines = lines
                .split(',')
                .map(|line| {
                    line.parse::<u64>()
                        .map_err(|_| self.corrupt(format!("bad example line list {lines:?}")))
                })
                .collect::<Result<Vec<u64>>>()?;
            each(ErrorGroup {
                error_code: row.get("error_code").at(&self.path)?,
                error_message: row.get("error_message").at(&self.path)?,
                count: row.get("size").at(&self.path)?,
                example_lines,
            })?;
        }
        Ok(())
    }

    /// Calls `each` for every row in line order, streaming (constant memory).
    /// Bulk jobs whose rows are still `sending`.
    pub fn bulk_jobs_sending(&self) -> Result<u64> {
        if self.schema < 5 {
            return Ok(0);
        }
        self.conn
            .query_row(
                "SELECT COUNT(DISTINCT bulk_job_id) FROM row
                 WHERE state = 'sending' AND bulk_job_id IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    pub fn for_each_row_outcome<E>(
        &self,
        mut each: impl FnMut(&RowOutcome) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        // A read-only open does not migrate: a file from before bulk mode has no job column.
        let bulk_job_id = if self.schema >= 5 {
            "row.bulk_job_id AS bulk_job_id"
        } else {
            "NULL AS bulk_job_id"
        };
        // Rows naming source tickets (schema 6): the ticket and what it was resolved to.
        let (ticket_columns, ticket_joins) = if self.schema >= 6 {
            (
                "row.ticket_key AS conversation_external_id, k.kustomer_id AS customer_id,
                 c.kustomer_id AS resolved_conversation_id",
                "LEFT JOIN conversation c ON c.source_key = row.ticket_key
                 LEFT JOIN customer k ON k.source_key = row.customer_key",
            )
        } else {
            (
                "NULL AS conversation_external_id, NULL AS customer_id,
                 NULL AS resolved_conversation_id",
                "",
            )
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT row.line AS line, row.external_id AS external_id,
                        row.conversation_id AS conversation_id, row.state AS state,
                        row.message_id AS message_id, row.http_status AS http_status,
                        row.error_code AS error_code, row.error_message AS error_message,
                        row.attempts AS attempts, row.first_attempt_ms AS first_attempt_ms,
                        row.last_attempt_ms AS last_attempt_ms, {bulk_job_id}, {ticket_columns}
                 FROM row {ticket_joins} ORDER BY row.line"
            ))
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get("state").at(&self.path)?;
            let outcome = RowOutcome {
                line: row.get("line").at(&self.path)?,
                external_id: row.get("external_id").at(&self.path)?,
                conversation_id: row.get("conversation_id").at(&self.path)?,
                state: self.parse_state(&state)?,
                message_id: row.get("message_id").at(&self.path)?,
                http_status: row.get("http_status").at(&self.path)?,
                error_code: row.get("error_code").at(&self.path)?,
                error_message: row.get("error_message").at(&self.path)?,
                attempts: row.get("attempts").at(&self.path)?,
                first_attempt_ms: row.get("first_attempt_ms").at(&self.path)?,
                last_attempt_ms: row.get("last_attempt_ms").at(&self.path)?,
                bulk_job_id: row.get("bulk_job_id").at(&self.path)?,
                conversation_external_id: row.get("conversation_external_id").at(&self.path)?,
                customer_id: row.get("customer_id").at(&self.path)?,
                resolved_conversation_id: row.get("resolved_conversation_id").at(&self.path)?,
            };
            each(&outcome)?;
        }
        Ok(())
    }
}

/// An input row that `report --rejects` copies back out of the input: invalid, or failed for
/// good (a failure a retry would not fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub line: u64,
    /// Span of the row in the decompressed input stream.
    pub byte_offset: u64,
    pub byte_len: u64,
    pub state: RowState,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Results that arrived in one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultBucket {
    /// Bucket number counted from the origin asked for (bucket `n` starts at
    /// `origin + n * width`).
    pub index: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// How many results took exactly `latency_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyCount {
    pub latency_ms: u64,
    pub count: u64,
}

/// Rows sharing one error code, with their most frequent messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorClass {
    pub error_code: Option<String>,
    /// The state of the class's rows (failed, invalid or duplicate); the most frequent one when
    /// a code spans several.
    pub state: RowState,
    pub count: u64,
    /// Distinct messages under this code.
    pub distinct_messages: u64,
    /// The most frequent messages, largest first, each with its first few lines.
    pub top_messages: Vec<ErrorGroup>,
}

/// Send timing of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTiming {
    pub conversation_id: String,
    /// Rows of the conversation that were to be sent (invalid and duplicate rows excluded).
    pub rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub first_attempt_ms: i64,
    pub last_result_ms: i64,
}

impl ConversationTiming {
    /// Last result minus first attempt: how long the conversation kept a send slot busy.
    pub fn duration_ms(&self) -> i64 {
        self.last_result_ms - self.first_attempt_ms
    }
}

/// Read queries behind `report --rejects` and `report --format html`. Each aggregates in SQL or
/// streams, so memory stays bounded however many rows the job has.
impl Checkpoint {
    /// Offset of the first staged row in the decompressed input: the bytes before it are the
    /// CSV header (and BOM). None when no row is staged.
    pub fn first_row_offset(&self) -> Result<Option<u64>> {
        self.conn
            .query_row("SELECT MIN(byte_offset) FROM row", [], |row| row.get(0))
            .at(&self.path)
    }

    /// Calls `each` for every invalid row and every row failed for good (`retryable = 0`), in
    /// input order.
    pub fn for_each_rejected_row<E>(
        &self,
        mut each: impl FnMut(&RejectedRow) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT line, byte_offset, byte_len, state, error_code, error_message FROM row
                 WHERE state = 'invalid' OR (state = 'failed' AND retryable = 0)
                 ORDER BY byte_offset",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get("state").at(&self.path)?;
            let rejected = RejectedRow {
                line: row.get("line").at(&self.path)?,
                byte_offset: row.get("byte_offset").at(&self.path)?,
                byte_len: row.get("byte_len").at(&self.path)?,
                state: self.parse_state(&state)?,
                error_code: row.get("error_code").at(&self.path)?,
                error_message: row.get("error_message").at(&self.path)?,
            };
            each(&rejected)?;
        }
        Ok(())
    }

    /// Failed rows that a retry may fix (`resume --retry-failed`).
    pub fn retryable_failed_count(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM row WHERE state = 'failed' AND retryable = 1",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Earliest and latest result time (`finished_ms`), or None before any result.
    pub fn result_span(&self) -> Result<Option<(i64, i64)>> {
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT MIN(finished_ms) AS first_ms, MAX(finished_ms) AS last_ms
                 FROM row WHERE finished_ms IS NOT NULL",
                [],
                |row| Ok((row.get("first_ms")?, row.get("last_ms")?)),
            )
            .at(&self.path)?;
        Ok(first.zip(last))
    }

    /// Succeeded and failed results per bucket of `width_ms` from `origin_ms`, non-empty
    /// buckets only, in time order. Results before `origin_ms` are left out.
    pub fn result_buckets(&self, origin_ms: i64, width_ms: i64) -> Result<Vec<ResultBucket>> {
        if width_ms <= 0 {
            return Err(self.corrupt(format!("bucket width must be positive, got {width_ms}")));
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (finished_ms - ?1) / ?2 AS bucket,
                        SUM(state = 'succeeded') AS succeeded, SUM(state = 'failed') AS failed
                 FROM row WHERE finished_ms IS NOT NULL AND finished_ms >= ?1
                 GROUP BY bucket ORDER BY bucket",
            )
            .at(&self.path)?;
        let buckets = stmt
            .query_map(params![origin_ms, width_ms], |row| {
                Ok(ResultBucket {
                    index: row.get("bucket")?,
                    succeeded: row.get("succeeded")?,
                    failed: row.get("failed")?,
                })
            })
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .at(&self.path)?;
        Ok(buckets)
    }

    /// Calls `each` for every distinct recorded latency, ascending, with how many results took
    /// it. Latencies are whole milliseconds, so there are few distinct values.
    pub fn for_each_latency<E>(
        &self,
        each: impl FnMut(LatencyCount) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        self.for_each_duration("latency_ms", each)
    }

    /// Like [`Checkpoint::for_each_latency`], for the time attempts waited for the rate budget
    /// and a concurrency slot (none in a checkpoint older than that column).
    pub fn for_each_budget_wait<E>(
        &self,
        each: impl FnMut(LatencyCount) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        if self.schema < 3 {
            return Ok(());
        }
        self.for_each_duration("budget_wait_ms", each)
    }

    /// Distinct values of a millisecond column with their counts, ascending.
    fn for_each_duration<E>(
        &self,
        column: &'static str,
        mut each: impl FnMut(LatencyCount) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {column}, COUNT(*) AS count FROM row WHERE {column} IS NOT NULL
                 GROUP BY {column} ORDER BY {column}"
            ))
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            each(LatencyCount {
                latency_ms: row.get(column).at(&self.path)?,
                count: row.get("count").at(&self.path)?,
            })?;
        }
        Ok(())
    }

    /// Failed, invalid and duplicate rows grouped by error code, largest first: at most
    /// `classes` codes, each with up to `messages` top messages and `examples` lines each.
    pub fn error_classes(
        &self,
        classes: u64,
        messages: u64,
        examples: u64,
    ) -> Result<Vec<ErrorClass>> {
        let sql = format!(
            "WITH normalised AS (
                 SELECT line, state, error_code, normalised_message(error_message) AS error_message
                 FROM row WHERE state IN {ERROR_STATES_SQL}),
             errors AS (
                 SELECT line, state, error_code, error_message,
                        ROW_NUMBER() OVER (PARTITION BY error_code, error_message ORDER BY line)
                            AS line_rank
                 FROM normalised),
             by_message AS (
                 SELECT error_code, error_message, COUNT(*) AS size, MIN(state) AS state,
                        group_concat(CASE WHEN line_rank <= ?3 THEN line END, ',' ORDER BY line)
                            AS lines
                 FROM errors GROUP BY error_code, error_message),
             by_state AS (
                 SELECT error_code, state, SUM(size) AS size FROM by_message
                 GROUP BY error_code, state),
             by_code AS (
                 SELECT error_code, SUM(size) AS size, COUNT(*) AS distinct_messages,
                        (SELECT s.state FROM by_state AS s WHERE s.error_code IS m.error_code
                         ORDER BY s.size DESC, s.state LIMIT 1) AS state
                 FROM by_message AS m GROUP BY error_code
                 ORDER BY size DESC, error_code LIMIT ?1),
             ranked AS (
                 SELECT m.error_code, m.error_message, m.size, m.lines,
                        ROW_NUMBER() OVER (PARTITION BY m.error_code
                                           ORDER BY m.size DESC, m.error_message) AS message_rank
                 FROM by_message AS m JOIN by_code AS c ON m.error_code IS c.error_code)
             SELECT c.error_code AS error_code, c.state AS state, c.size AS class_size,
                    c.distinct_messages AS distinct_messages, r.error_message AS error_message,
                    r.size AS message_size, r.lines AS lines
             FROM by_code AS c JOIN ranked AS r ON r.error_code IS c.error_code
             WHERE r.message_rank <= ?2
             ORDER BY c.size DESC, c.error_code, r.message_rank"
        );
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
        let mut rows = stmt
            .query(params![clamp(classes), clamp(messages), clamp(examples)])
            .at(&self.path)?;
        let mut found: Vec<ErrorClass> = Vec::new();
        while let Some(row) = rows.next().at(&self.path)? {
            let error_code: Option<String> = row.get("error_code").at(&self.path)?;
            let state: String = row.get("state").at(&self.path)?;
            let lines: Option<String> = row.get("lines").at(&self.path)?;
            let example_lines = lines
                .unwrap_or_default()
                .split(',')
                .filter(|line| !line.is_empty())
                .map(|line| {
                    line.parse::<u64>()
                        .map_err(|_| self.corrupt(format!("bad example line list {line:?}")))
                })
                .collect::<Result<Vec<u64>>>()?;
            let message = ErrorGroup {
                error_code: error_code.clone(),
                error_message: row.get("error_message").at(&self.path)?,
                count: row.get("message_size").at(&self.path)?,
                example_lines,
            };
            match found.last_mut() {
                Some(class) if class.error_code == error_code => class.top_messages.push(message),
                _ => found.push(ErrorClass {
                    error_code,
                    state: self.parse_state(&state)?,
                    count: row.get("class_size").at(&self.path)?,
                    distinct_messages: row.get("distinct_messages").at(&self.path)?,
                    top_messages: vec![message],
                }),
            }
        }
        Ok(found)
    }

    /// The `limit` conversations that took longest from their first attempt to their last
    /// result, longest first.
    pub fn slowest_conversations(&self, limit: u64) -> Result<Vec<ConversationTiming>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT conversation_id, COUNT(*) AS row_count, SUM(state = 'succeeded') AS succeeded,
                        SUM(state = 'failed') AS failed,
                        MIN(first_attempt_ms) AS first, MAX(finished_ms) AS last
                 FROM row
                 WHERE conversation_id IS NOT NULL AND state NOT IN ('invalid', 'duplicate')
                 GROUP BY conversation_id
                 HAVING first IS NOT NULL AND last IS NOT NULL
                 ORDER BY last - first DESC, conversation_id
                 LIMIT ?1",
            )
            .at(&self.path)?;
        let timings = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok(ConversationTiming {
                    conversation_id: row.get("conversation_id")?,
                    rows: row.get("row_count")?,
                    succeeded: row.get("succeeded")?,
                    failed: row.get("failed")?,
                    first_attempt_ms: row.get("first")?,
                    last_result_ms: row.get("last")?,
                })
            })
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .at(&self.path)?;
        Ok(timings)
    }
}
