//! The send phase's single writer: one thread, one connection, grouped commits.
//!
//! Workers ask for a row to be marked `sending` and wait until that is durable; results are
//! queued and become durable with the next commit. Because the writer applies commands in the
//! order it receives them, a durable `sending` mark implies every earlier result is durable too.
//!
//! When a commit fails (disk full, file unwritable) the writer stops writing: `sending` marks and
//! flushes fail from then on so nothing more is sent, while results keep queueing in memory and
//! [`WriterHandle::close`] makes one last attempt to write them.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::{CheckpointError, RowState, SqliteResultExt};

/// Most commands applied in one transaction: bounds the time a waiter sits behind others.
const MAX_COMMANDS_PER_COMMIT: usize = 1_000;

/// The recorded outcome of a row's send.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    /// Succeeded, Failed, or Pending (sent back, e.g. on 401 or after reconciliation).
    pub state: RowState,
    pub message_id: Option<String>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// For failed rows: a retry might succeed.
    pub retryable: bool,
    /// The last attempt's time from request start to response, in milliseconds.
    pub latency_ms: Option<u64>,
    /// How long the last attempt waited for the rate budget and a concurrency slot before it
    /// started, in milliseconds (None when not measured).
    pub budget_wait_ms: Option<u64>,
    /// When the result was known, ms since the Unix epoch.
    pub at_ms: i64,
}

type Done = oneshot::Sender<Result<(), CheckpointError>>;

enum Command {
    MarkSending {
        line: u64,
        at_ms: i64,
        done: Done,
    },
    /// The rows of one bulk job, `sending` together under a local batch id.
    MarkSendingBatch {
        lines: Vec<u64>,
        batch: String,
        at_ms: i64,
        done: Done,
    },
    /// The id the API gave the batch's job.
    RecordBulkJob {
        batch: String,
        job_id: String,
    },
    Record {
        line: u64,
        result: RowResult,
    },
    Flush {
        done: Done,
    },
    Close,
    /// Lets tests reach the writer's own connection (e.g. to cap its size) and pause the thread.
    #[cfg(test)]
    OnConnection(Box<dyn FnOnce(&Connection) + Send>),
}

pub struct WriterHandle {
    commands: mpsc::Sender<Command>,
    /// Taken by `close` (or `Drop`), which waits for the thread's last word.
    thread: Option<JoinHandle<Result<(), CheckpointError>>>,
    #[cfg(test)]
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn writer_gone() -> CheckpointError {
    CheckpointError::WriterGone {
        detail: "the writer thread ended unexpectedly".to_string(),
    }
}

impl WriterHandle {
    /// Spawns the writer thread on `conn`, a connection of its own to the checkpoint at `path`.
    pub(super) fn start(conn: Connection, path: PathBuf) -> Result<WriterHandle, CheckpointError> {
        let (commands, received) = mpsc::channel();
        let writer = Writer {
            conn,
            path,
            failure: None,
            unwritten: Vec::new(),
            #[cfg(test)]
            commits: Default::default(),
        };
        #[cfg(test)]
        let commits = writer.commits.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".to_string())
            .spawn(move || writer.run(received))
            .map_err(|err| CheckpointError::WriterGone {
                detail: format!("cannot start the writer thread: {err}"),
            })?;
        Ok(WriterHandle {
            commands,
            thread: Some(thread),
            #[cfg(test)]
            commits,
        })
    }

    fn send(&self, command: Command) -> Result<(), CheckpointError> {
        self.commands.send(command).map_err(|_| writer_gone())
    }

    async fn send_and_wait(
        &self,
        command: impl FnOnce(Done) -> Command,
    ) -> Result<(), CheckpointError> {
        let (done, finished) = oneshot::channel();
        self.send(command(done))?;
        finished.await.map_err(|_| writer_gone())?
    }

    /// Marks a row `sending`, counts an attempt, and returns once that is durable.
    pub async fn mark_sending(&self, line: u64, at_ms: i64) -> Result<(), CheckpointError> {
        self.send_and_wait(|done| Command::MarkSending { line, at_ms, done })
            .await
    }

    /// Marks the rows of one bulk job `sending` under `batch`, counts an attempt for each, and
    /// returns once that is durable: only then may the job be posted.
    pub async fn mark_sending_batch(
        &self,
        lines: Vec<u64>,
        batch: String,
        at_ms: i64,
    ) -> Result<(), CheckpointError> {
        self.send_and_wait(|done| Command::MarkSendingBatch {
            lines,
            batch,
            at_ms,
            done,
        })
        .await
    }

    /// Queues the job id of a batch; durable after the next commit.
    pub fn record_bulk_job(&self, batch: String, job_id: String) -> Result<(), CheckpointError> {
        self.send(Command::RecordBulkJob { batch, job_id })
    }

    /// Queues a row's result; it is durable after the next commit.
    pub fn record(&self, line: u64, result: RowResult) -> Result<(), CheckpointError> {
        self.send(Command::Record { line, result })
    }

    /// Commits everything queued so far.
    pub async fn flush(&self) -> Result<(), CheckpointError> {
        self.send_and_wait(|done| Command::Flush { done }).await
    }

    /// Commits what is queued and stops the thread.
    pub fn close(mut self) -> Result<(), CheckpointError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), CheckpointError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // A send error means the thread already ended; joining still yields its result.
        let _ = self.commands.send(Command::Close);
        thread.join().map_err(|_| CheckpointError::WriterGone {
            detail: "the writer thread panicked".to_string(),
        })?
    }

    #[cfg(test)]
    fn on_connection(&self, hook: impl FnOnce(&Connection) + Send + 'static) {
        self.send(Command::OnConnection(Box::new(hook)))
            .expect("writer thread alive");
    }

    #[cfg(test)]
    fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for WriterHandle {
    /// A handle dropped without `close` still gets its queued results written (or the failure
    /// logged): results are never dropped silently.
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::error!(error = %err, "checkpoint writer could not write its last results");
        }
    }
}

/// Why the writer stopped writing, kept so every later caller gets an equivalent error
/// (`rusqlite::Error` is not `Clone`).
#[derive(Debug, Clone)]
struct Failure {
    sqlite: Option<rusqlite::ffi::Error>,
    message: String,
}

impl Failure {
    fn of(err: &CheckpointError) -> Failure {
        match err {
            CheckpointError::Sqlite {
                source: rusqlite::Error::SqliteFailure(code, message),
                ..
            } => Failure {
                sqlite: Some(*code),
                message: message.clone().unwrap_or_else(|| code.to_string()),
            },
            other => Failure {
                sqlite: None,
                message: other.to_string(),
            },
        }
    }

    /// The error again, with its SQLite code so `is_storage_failure` still answers right.
    fn to_error(&self, path: &std::path::Path) -> CheckpointError {
        match self.sqlite {
            Some(code) => CheckpointError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::SqliteFailure(code, Some(self.message.clone())),
            },
            None => CheckpointError::WriterGone {
                detail: self.message.clone(),
            },
        }
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    failure: Option<Failure>,
    /// Results not yet durable because a commit failed, in arrival order.
    unwritten: Vec<Command>,
    #[cfg(test)]
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Writer {
    fn run(mut self, commands: mpsc::Receiver<Command>) -> Result<(), CheckpointError> {
        loop {
            let Ok(first) = commands.recv() else {
                return self.last_attempt();
            };
            let mut batch = vec![first];
            while batch.len() < MAX_COMMANDS_PER_COMMIT {
                match commands.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let closing = batch
                .iter()
                .any(|command| matches!(command, Command::Close));
            self.process(batch);
            if closing {
                return self.last_attempt();
            }
        }
    }

    /// Applies one batch in one transaction, then answers its waiters.
    fn process(&mut self, batch: Vec<Command>) {
        #[cfg(test)]
        let batch: Vec<Command> = batch
            .into_iter()
            .filter_map(|command| match command {
                Command::OnConnection(hook) => {
                    hook(&self.conn);
                    None
                }
                other => Some(other),
            })
            .collect();
        if let Some(failure) = &self.failure {
            let failure = failure.clone();
            self.refuse(batch, &failure);
            return;
        }
        match self.apply(&batch) {
            Ok(problems) => {
                for (command, problem) in batch.into_iter().zip(problems) {
                    let outcome = match problem {
                        Some(detail) => Err(CheckpointError::Corrupt {
                            path: self.path.clone(),
                            detail,
                        }),
                        None => Ok(()),
                    };
                    answer(command, outcome);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "checkpoint commit failed; no further sends");
                let failure = Failure::of(&err);
                self.failure = Some(failure.clone());
                self.refuse(batch, &failure);
            }
        }
    }

    /// In the failed state: results are kept for the last attempt, everyone waiting is told.
    fn refuse(&mut self, batch: Vec<Command>, failure: &Failure) {
        for command in batch {
            match command {
                Command::Record { .. } => self.unwritten.push(command),
                other => answer(other, Err(failure.to_error(&self.path))),
            }
        }
    }

    /// Writes `batch` in one transaction; for each command, a problem that concerns only its
    /// caller (a line with no row).
    fn apply(&mut self, batch: &[Command]) -> Result<Vec<Option<String>>, CheckpointError> {
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(path)?;
        let mut problems = Vec::with_capacity(batch.len());
        for command in batch {
            let problem = match command {
                Command::MarkSending { line, at_ms, .. } => {
                    let changed = mark_sending(&tx, *line, *at_ms, None).at(path)?;
                    (changed == 0).then(|| format!("no row at line {line} to mark sending"))
                }
                Command::MarkSendingBatch {
                    lines,
                    batch,
                    at_ms,
                    ..
                } => {
                    let mut missing = Vec::new();
                    for line in lines {
                        if mark_sending(&tx, *line, *at_ms, Some(batch)).at(path)? == 0 {
                            missing.push(line.to_string());
                        }
                    }
                    (!missing.is_empty())
                        .then(|| format!("no rows at lines {} to mark sending", missing.join(", ")))
                }
                Command::RecordBulkJob { batch, job_id } => {
                    tx.prepare_cached("UPDATE row SET bulk_job_id = ?2 WHERE bulk_batch = ?1")
                        .and_then(|mut stmt| stmt.execute(params![batch, job_id]))
                        .at(path)?;
                    None
                }
                Command::Record { line, result } => {
                    if write_result(&tx, *line, result).at(path)? == 0 {
                        tracing::error!(line, "a send result names a line with no row");
                    }
                    None
                }
                Command::Flush { .. } | Command::Close => None,
                #[cfg(test)]
                Command::OnConnection(_) => None,
            };
            problems.push(problem);
        }
        if !batch.is_empty() {
            tx.prepare_cached("UPDATE job SET updated_at_ms = ?1 WHERE id = 1")
                .and_then(|mut stmt| stmt.execute([super::now_ms()]))
                .at(path)?;
        }
        tx.commit().at(path)?;
        #[cfg(test)]
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(problems)
    }

    /// After `Close` or when every handle is gone: everything is durable, or the error says not.
    fn last_attempt(&mut self) -> Result<(), CheckpointError> {
        if self.failure.is_none() {
            return Ok(());
        }
        let unwritten = std::mem::take(&mut self.unwritten);
        match self.apply(&unwritten) {
            Ok(_) => {
                self.failure = None;
                Ok(())
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    results = unwritten.len(),
                    "checkpoint writer's last attempt failed; these rows stay `sending`"
                );
                Err(err)
            }
        }
    }
}

fn answer(command: Command, outcome: Result<(), CheckpointError>) {
    if let Command::MarkSending { done, .. }
    | Command::MarkSendingBatch { done, .. }
    | Command::Flush { done } = command
    {
        // The waiter may have been cancelled; the write stands either way.
        let _ = done.send(outcome);
    }
}

/// A row `sending`, one more attempt; `batch` names its bulk job's local batch (None for a
/// single create, which clears any earlier job's ids).
fn mark_sending(
    conn: &Connection,
    line: u64,
    at_ms: i64,
    batch: Option<&String>,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE row SET state = 'sending', attempts = attempts + 1,
                first_attempt_ms = COALESCE(first_attempt_ms, ?2),
                last_attempt_ms = ?2, bulk_batch = ?3, bulk_job_id = NULL
         WHERE line = ?1",
    )?
    .execute(params![line, at_ms, batch])
}

fn write_result(conn: &Connection, line: u64, result: &RowResult) -> rusqlite::Result<usize> {
    let succeeded = result.state == RowState::Succeeded;
    let finished_ms =
        matches!(result.state, RowState::Succeeded | RowState::Failed).then_some(result.at_ms);
    // Stored as given: a success normally carries no error, but one whose audit fields Kustomer
    // overwrote is created *and* flagged, and the flag must reach the report.
    let (error_code, error_message) = (
        result.error_code.as_deref(),
        result.error_message.as_deref(),
    );
    conn.prepare_cached(
        "UPDATE row SET state = ?2, message_id = ?3, http_status = ?4, error_code = ?5,
                        error_message = ?6, retryable = ?7, latency_ms = ?8, finished_ms = ?9,
                        budget_wait_ms = ?10
         WHERE line = ?1",
    )?
    .execute(params![
        line,
        result.state.as_str(),
        result.message_id,
        result.http_status,
        error_code,
        error_message,
        result.retryable && !succeeded,
        result.latency_ms,
        finished_ms,
        result.budget_wait_ms,
    ])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::test_support::*;
    use crate::checkpoint::Checkpoint;

    fn succeeded(at_ms: i64) -> RowResult {
        RowResult {
            state: RowState::Succeeded,
            message_id: Some("aaaaaaaaaaaaaaaaaaaaaaaa".to_string()),
            http_status: Some(201),
            error_code: None,
            error_message: None,
            retryable: true,
            latency_ms: Some(42),
            budget_wait_ms: Some(3),
            at_ms,
        }
    }

    fn failed(message: &str, at_ms: i64) -> RowResult {
        RowResult {
            state: RowState::Failed,
            message_id: None,
            http_status: Some(503),
            error_code: Some("http_503".to_string()),
            error_message: Some(message.to_string()),
            retryable: true,
            latency_ms: Some(7),
            budget_wait_ms: None,
            at_ms,
        }
    }

    fn staged_checkpoint(rows: u64) -> (tempfile::TempDir, Checkpoint) {
        let (dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            (1..=rows)
                .map(|l| valid(l, "c", &format!("e{l}"), l as i64))
                .collect(),
        );
        (dir, cp)
    }

    #[tokio::test]
    async fn mark_sending_and_results_are_written() {
        let (_dir, cp) = staged_checkpoint(3);
        let writer = cp.writer().unwrap();
        writer.mark_sending(1, 1_000).await.unwrap();
        writer.mark_sending(1, 2_000).await.unwrap();
        writer.record(1, succeeded(2_500)).unwrap();
        writer.mark_sending(2, 3_000).await.unwrap();
        writer.record(2, failed("unavailable", 3_100)).unwrap();
        writer.flush().await.unwrap();
        let err = writer.mark_sending(99, 1).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        writer.close().unwrap();

        let conn = observer(&cp);
        type Stored = (
            String,
            i64,
            i64,
            i64,
            Option<i64>,
            Option<String>,
            Option<String>,
            bool,
        );
        let read = |line: u64| -> Stored {
            conn.query_row(
                "SELECT state, attempts, first_attempt_ms, last_attempt_ms, finished_ms,
                        message_id, error_message, retryable FROM row WHERE line = ?1",
                [line],
                |r| {
                    Ok((
                        r.get("state")?,
                        r.get("attempts")?,
                        r.get("first_attempt_ms")?,
                        r.get("last_attempt_ms")?,
                        r.get("finished_ms")?,
                        r.get("message_id")?,
                        r.get("error_message")?,
                        r.get("retryable")?,
                    ))
                },
            )
            .unwrap()
        };
        assert_eq!(
            read(1),
            (
                "succeeded".into(),
                2,
                1_000,
                2_000,
                Some(2_500),
                Some("aaaaaaaaaaaaaaaaaaaaaaaa".into()),
                None,
                false
            )
        );
        assert_eq!(
            read(2),
            (
                "failed".into(),
                1,
                3_000,
                3_000,
                Some(3_100),
                None,
                Some("unavailable".into()),
                true
            )
        );
        assert_eq!(state_of(&conn, 3), "pending");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_marks_share_commits() {
        let rows = 300;
        let (_dir, cp) = staged_checkpoint(rows);
        let writer = Arc::new(cp.writer().unwrap());
        // Hold the writer thread so every mark queues up behind it, then let it go.
        let (release, gate) = mpsc::channel::<()>();
        writer.on_connection(move |_| {
            let _ = gate.recv();
        });
        // Each task counts itself once its mark is queued (the first poll queues it), so the
        // writer is let go when all 300 wait, not after a guessed sleep.
        let queued = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for line in 1..=rows {
            let (writer, queued) = (writer.clone(), queued.clone());
            tasks.spawn(async move {
                let mark = writer.mark_sending(line, 5);
                tokio::pin!(mark);
                tokio::select! {
                    biased;
                    done = &mut mark => return done,
                    () = std::future::ready(()) => {}
                }
                queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                mark.await
            });
        }
        let started = std::time::Instant::now();
        while queued.load(std::sync::atomic::Ordering::SeqCst) < rows {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "marks not queued"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap().unwrap();
        }
        let commits = writer.commits();
        assert!(commits <= 3, "{rows} marks took {commits} commits");
        let sending: u64 = observer(&cp)
            .query_row(
                "SELECT COUNT(*) FROM row WHERE state = 'sending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            sending, rows,
            "every acknowledged mark is visible to another connection"
        );
        Arc::try_unwrap(writer).ok().unwrap().close().unwrap();
    }

    #[tokio::test]
    async fn a_durable_mark_implies_earlier_results_are_durable() {
        let rows = 200;
        let (_dir, cp) = staged_checkpoint(rows);
        let writer = cp.writer().unwrap();
        let conn = observer(&cp);
        writer.mark_sending(1, 1).await.unwrap();
        for line in 1..rows {
            writer.record(line, succeeded(line as i64)).unwrap();
            writer.mark_sending(line + 1, line as i64).await.unwrap();
            assert_eq!(state_of(&conn, line), "succeeded", "result of line {line}");
        }
        writer.close().unwrap();
    }

    /// Caps the writer's file at its current size, so the next growth fails with SQLITE_FULL.
    fn fill_disk(writer: &WriterHandle) {
        writer.on_connection(|conn| {
            let pages: i64 = conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            conn.pragma_update(None, "max_page_count", pages).unwrap();
        });
    }

    fn free_disk(writer: &WriterHandle) {
        writer.on_connection(|conn| {
            conn.pragma_update(None, "max_page_count", 1_000_000_000)
                .unwrap();
        });
    }

    #[tokio::test]
    async fn storage_failure_stops_marks_and_keeps_results_for_close() {
        let (_dir, cp) = staged_checkpoint(3);
        let writer = cp.writer().unwrap();
        writer.mark_sending(1, 10).await.unwrap();
        writer.mark_sending(3, 10).await.unwrap();
        fill_disk(&writer);
        writer.record(1, failed(&"x".repeat(200_000), 20)).unwrap();
        let err = writer.flush().await.unwrap_err();
        assert!(err.is_storage_failure(), "{err}");
        let err = writer.mark_sending(2, 30).await.unwrap_err();
        assert!(err.is_storage_failure(), "{err}");
        writer.record(3, succeeded(40)).unwrap();

        let conn = observer(&cp);
        assert_eq!(state_of(&conn, 1), "sending");
        assert_eq!(
            state_of(&conn, 2),
            "pending",
            "a refused mark is never written"
        );
        assert_eq!(state_of(&conn, 3), "sending");

        free_disk(&writer);
        writer.close().unwrap();
        assert_eq!(state_of(&conn, 1), "failed");
        assert_eq!(state_of(&conn, 2), "pending");
        assert_eq!(state_of(&conn, 3), "succeeded");
    }

    #[tokio::test]
    async fn close_reports_results_it_still_cannot_write() {
        let (_dir, cp) = staged_checkpoint(2);
        let writer = cp.writer().unwrap();
        writer.mark_sending(1, 10).await.unwrap();
        fill_disk(&writer);
        writer.record(1, failed(&"y".repeat(200_000), 20)).unwrap();
        assert!(writer.flush().await.unwrap_err().is_storage_failure());
        let err = writer.close().unwrap_err();
        assert!(err.is_storage_failure(), "{err}");
        assert_eq!(state_of(&observer(&cp), 1), "sending");
    }

    #[tokio::test]
    async fn dropping_the_handle_still_writes_queued_results() {
        let (_dir, cp) = staged_checkpoint(1);
        let writer = cp.writer().unwrap();
        writer.mark_sending(1, 10).await.unwrap();
        writer.record(1, succeeded(20)).unwrap();
        drop(writer);
        assert_eq!(state_of(&observer(&cp), 1), "succeeded");
    }
}
