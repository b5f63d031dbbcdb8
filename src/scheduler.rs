//! The send phase: every conversation's rows go out one at a time in (sentAt, line) order, up to
//! `concurrency` conversations at once, each row's fate recorded through the checkpoint writer.
//!
//! Invariants that make a run safe to kill at any moment:
//! - a row is durably `sending` before its request leaves, so a crash leaves evidence;
//! - a request whose outcome is unknown (timeout, lost connection, a crash while `sending`) is
//!   never simply sent again: the message is first looked up by externalId;
//! - a conversation stops at a row that failed for a transient reason (retries exhausted), so a
//!   later `resume --retry-failed` cannot put an older message after newer ones;
//! - the first created message whose createdAt/createdBy came back different from what was sent
//!   stops the run, before more history is written under the wrong author or time.
//!
//! Pacing (rate budget, concurrency, the common pause on 429) lives in the client's throttle; a
//! 429 therefore waits there and does not use up a row's attempts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{
    now_ms, Checkpoint, CheckpointError, QueuedRow, RowResult, RowState, WriterHandle,
};
use crate::client::{ApiClient, ApiError, CreatedMessage, RetryAction};
use crate::progress::SendCounters;
use crate::retry::{RetryPolicy, RetrySchedule};

/// How to run the send phase.
#[derive(Debug, Clone)]
pub struct SendPlan {
    pub checkpoint: std::path::PathBuf,
    /// Conversations worked on at once.
    pub workers: usize,
    pub retry: RetryPolicy,
    /// Failed rows this run may produce before it stops.
    pub max_failed_rows: u64,
    /// Check each created message's createdAt/createdBy against what was sent.
    pub verify_audit_fields: bool,
    /// After an interrupt, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
}

/// Why the send phase ended.
#[derive(Debug)]
pub enum SendStop {
    /// Every conversation was worked through (some rows may have failed or be held).
    Completed,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The API refused the key or its roles; nothing more was sent.
    ApiFatal(ApiError),
    /// The checkpoint could not be written; nothing more was sent.
    Storage(CheckpointError),
    /// The preflight check refused to start (e.g. audit fields with a non-admin key).
    Refused(String),
    /// Kustomer replaced the audit fields of a created message.
    AuditOverwritten(String),
    /// More rows failed in this run than `--max-errors` allows.
    ErrorBudget { failed: u64, allowed: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("a send worker failed unexpectedly: {0}")]
    Worker(String),
}

/// The fate of one row's attempts in this run.
enum RowFate {
    Finished,
    /// 404: the conversation does not exist; its other rows need not be tried.
    ConversationMissing {
        line: u64,
        reason: String,
    },
    /// Transient failure with retries exhausted: hold the rest of the conversation.
    HoldConversation,
    /// Stop requested (interrupt, fatal API error, storage failure).
    Stopped,
}

/// Why the run was stopped from inside.
enum Halt {
    Api(ApiError),
    AuditOverwritten(String),
    ErrorBudget { failed: u64, allowed: u64 },
}

struct Shared {
    client: Arc<ApiClient>,
    writer: WriterHandle,
    retry: RetryPolicy,
    max_failed_rows: u64,
    verify_audit_fields: bool,
    failed_rows: AtomicU64,
    stop: CancellationToken,
    halt: Mutex<Option<Halt>>,
    counters: Arc<SendCounters>,
    conversations: Vec<String>,
    next_conversation: AtomicUsize,
}

impl Shared {
    fn halt(&self, why: Halt) {
        if let Ok(mut halt) = self.halt.lock() {
            halt.get_or_insert(why);
        }
        self.stop.cancel();
    }

    fn record(&self, line: u64, result: RowResult) -> Result<(), CheckpointError> {
        let failed = result.state == RowState::Failed;
        self.counters.record(result.state);
        self.writer.record(line, result)?;
        if failed {
            let failed = self.failed_rows.fetch_add(1, Ordering::Relaxed) + 1;
            if failed > self.max_failed_rows {
                self.halt(Halt::ErrorBudget {
                    failed,
                    allowed: self.max_failed_rows,
                });
            }
        }
        Ok(())
    }
}

/// Sends every pending row of the checkpoint's job. Returns why it stopped; the checkpoint holds
/// every row's fate, flushed before this returns.
pub async fn send_all(
    plan: &SendPlan,
    client: Arc<ApiClient>,
    counters: Arc<SendCounters>,
    interrupt: CancellationToken,
) -> Result<SendStop, SchedulerError> {
    let checkpoint = Checkpoint::open_existing(&plan.checkpoint)?;
    let conversations = checkpoint.conversations_with_work()?;
    let writer = checkpoint.writer()?;
    drop(checkpoint);

    let workers = plan.workers.max(1).min(conversations.len().max(1));
    let shared = Arc::new(Shared {
        client,
        writer,
        retry: plan.retry,
        max_failed_rows: plan.max_failed_rows,
        verify_audit_fields: plan.verify_audit_fields,
        failed_rows: AtomicU64::new(0),
        stop: interrupt.child_token(),
        halt: Mutex::new(None),
        counters,
        conversations,
        next_conversation: AtomicUsize::new(0),
    });

    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let shared = Arc::clone(&shared);
        let path = plan.checkpoint.clone();
        tasks.spawn(async move {
            let mut reader = Checkpoint::open_read_only(&path)?;
            work_conversations(&shared, &mut reader).await
        });
    }

    let mut storage_failure: Option<CheckpointError> = None;
    let mut worker_failure: Option<String> = None;
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(err))) => {
                    storage_failure.get_or_insert(err);
                    shared.stop.cancel();
                }
                Some(Err(join_error)) if join_error.is_cancelled() => {}
                Some(Err(join_error)) => {
                    worker_failure.get_or_insert(join_error.to_string());
                    shared.stop.cancel();
                }
            },
            () = shared.stop.cancelled(), if grace_deadline.is_none() => {
                shared.client.stop_admitting();
                grace_deadline = Some(tokio::time::Instant::now() + plan.shutdown_grace);
            }
            () = sleep_until_opt(grace_deadline) => {
                // Requests still out after the grace period stay `sending`: resume reconciles
                // them by externalId, so abandoning them here loses nothing.
                tracing::warn!("abandoning {} in-flight request(s) after the grace period", tasks.len());
                tasks.abort_all();
                grace_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    }

    let shared = Arc::try_unwrap(shared)
        .map_err(|_| SchedulerError::Worker("a worker outlived the send phase".into()))?;
    let halt = shared.halt.into_inner().ok().flatten();
    let closed = shared.writer.close();

    if let Some(detail) = worker_failure {
        closed?;
        return Err(SchedulerError::Worker(detail));
    }
    if let Some(err) = storage_failure {
        return Ok(SendStop::Storage(err));
    }
    if let Err(err) = closed {
        return Ok(SendStop::Storage(err));
    }
    match halt {
        Some(Halt::Api(err)) => return Ok(SendStop::ApiFatal(err)),
        Some(Halt::AuditOverwritten(detail)) => return Ok(SendStop::AuditOverwritten(detail)),
        Some(Halt::ErrorBudget { failed, allowed }) => {
            return Ok(SendStop::ErrorBudget { failed, allowed })
        }
        None => {}
    }
    if interrupt.is_cancelled() {
        return Ok(SendStop::Interrupted);
    }
    Ok(SendStop::Completed)
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn work_conversations(
    shared: &Shared,
    reader: &mut Checkpoint,
) -> Result<(), CheckpointError> {
    while !shared.stop.is_cancelled() {
        let index = shared.next_conversation.fetch_add(1, Ordering::Relaxed);
        let Some(conversation_id) = shared.conversations.get(index) else {
            break;
        };
        work_conversation(shared, reader, conversation_id).await?;
    }
    Ok(())
}

async fn work_conversation(
    shared: &Shared,
    reader: &mut Checkpoint,
    conversation_id: &str,
) -> Result<(), CheckpointError> {
    // Point reads of an indexed table take microseconds; a hop to the blocking pool would cost
    // more than the read itself.
    let queue = reader.conversation_queue(conversation_id)?;
    let mut missing: Option<(u64, String)> = None;
    for (position, row) in queue.iter().enumerate() {
        if shared.stop.is_cancelled() {
            return Ok(());
        }
        match row.state {
            RowState::Pending | RowState::Sending => {}
            // A transient failure that is not being retried holds the rest of the
            // conversation, so that retrying it later keeps chronological order.
            RowState::Failed if row.retryable => {
                hold_rest(shared, &queue[position + 1..]);
                return Ok(());
            }
            _ => continue,
        }
        if let Some((line, reason)) = &missing {
            if row.state == RowState::Pending {
                shared.record(
                    row.line,
                    RowResult {
                        state: RowState::Failed,
                        message_id: None,
                        http_status: None,
                        error_code: Some("conversation_not_found".into()),
                        error_message: Some(format!(
                            "not sent: the conversation was not found when line {line} was sent ({reason})"
                        )),
                        retryable: false,
                        latency_ms: None,
                        budget_wait_ms: None,
                        at_ms: now_ms(),
                    },
                )?;
                continue;
            }
        }
        let body = reader.body(row.line)?;
        match send_row(shared, row, conversation_id, &body).await? {
            RowFate::Finished => {}
            RowFate::ConversationMissing { line, reason } => missing = Some((line, reason)),
            RowFate::HoldConversation => {
                hold_rest(shared, &queue[position + 1..]);
                return Ok(());
            }
            RowFate::Stopped => return Ok(()),
        }
    }
    Ok(())
}

fn hold_rest(shared: &Shared, rest: &[QueuedRow]) {
    let held = rest
        .iter()
        .filter(|row| matches!(row.state, RowState::Pending | RowState::Sending))
        .count();
    shared.counters.add_held(held as u64);
}

enum Wait {
    Elapsed,
    Exhausted,
    Stopped,
}

async fn wait_before_retry(shared: &Shared, schedule: &mut RetrySchedule, err: &ApiError) -> Wait {
    let hint = err.rate().and_then(|rate| rate.retry_after);
    let Some(delay) = schedule.next_delay(hint) else {
        return Wait::Exhausted;
    };
    shared.counters.retry_waits(1);
    let waited = tokio::select! {
        () = tokio::time::sleep(delay) => Wait::Elapsed,
        () = shared.stop.cancelled() => Wait::Stopped,
    };
    shared.counters.retry_waits(-1);
    waited
}

async fn send_row(
    shared: &Shared,
    row: &QueuedRow,
    conversation_id: &str,
    body: &str,
) -> Result<RowFate, CheckpointError> {
    let mut schedule = RetrySchedule::new(shared.retry);
    let mut rate_limited = 0u32;
    // A row found `sending` was interrupted mid-request in an earlier run.
    let mut outcome_unknown = row.state == RowState::Sending;
    loop {
        if outcome_unknown {
            match shared.client.find_by_external_id(&row.external_id).await {
                Ok(Some(found)) => {
                    shared.counters.add_reconciled(1);
                    shared.record(row.line, succeeded(found.id, None, None))?;
                    return Ok(RowFate::Finished);
                }
                // Not created: fall through and send it.
                Ok(None) => {}
                Err(err) if err.retry_action() == RetryAction::StopRun => {
                    shared.halt(Halt::Api(err));
                    return Ok(RowFate::Stopped);
                }
                Err(err) => match wait_before_retry(shared, &mut schedule, &err).await {
                    Wait::Elapsed => continue,
                    Wait::Stopped => return Ok(RowFate::Stopped),
                    Wait::Exhausted => {
                        // Still unknown whether it was created: leave it `sending` (resume
                        // looks it up again) and hold the conversation behind it.
                        shared.record(row.line, unresolved(&err))?;
                        return Ok(RowFate::HoldConversation);
                    }
                },
            }
        }
        if shared.stop.is_cancelled() {
            return Ok(RowFate::Stopped);
        }

        shared.writer.mark_sending(row.line, now_ms()).await?;
        let started = Instant::now();
        let result = shared.client.create_message(conversation_id, body).await;
        let latency_ms = started.elapsed().as_millis() as u64;

        let err = match result {
            Ok(created) => {
                let overwritten = shared
                    .verify_audit_fields
                    .then(|| audit_mismatch(body, &created))
                    .flatten();
                let mut result = succeeded(created.id, Some(201), Some(latency_ms));
                if let Some(detail) = overwritten {
                    result.error_code = Some("audit_fields_overwritten".into());
                    result.error_message = Some(detail.clone());
                    shared.record(row.line, result)?;
                    shared.halt(Halt::AuditOverwritten(format!(
                        "line {}: {detail}",
                        row.line
                    )));
                    return Ok(RowFate::Stopped);
                }
                shared.record(row.line, result)?;
                return Ok(RowFate::Finished);
            }
            Err(err) => err,
        };
        if err.http_status() == Some(429) && rate_limited < MAX_RATE_LIMITED_PER_ROW {
            // The throttle has paused every worker until the window resets; the row was not
            // created, so it simply goes again once the pause is over.
            rate_limited += 1;
            continue;
        }
        match err.retry_action() {
            RetryAction::StopRun => {
                // Refused outright, so not created: back to pending for the resume.
                shared.record(
                    row.line,
                    failure(RowState::Pending, &err, false, latency_ms),
                )?;
                shared.halt(Halt::Api(err));
                return Ok(RowFate::Stopped);
            }
            RetryAction::FailRow => {
                shared.record(row.line, failure(RowState::Failed, &err, false, latency_ms))?;
                if err.http_status() == Some(404) {
                    return Ok(RowFate::ConversationMissing {
                        line: row.line,
                        reason: err.to_string(),
                    });
                }
                return Ok(RowFate::Finished);
            }
            RetryAction::Retry | RetryAction::ReconcileThenRetry => {
                outcome_unknown = err.retry_action() == RetryAction::ReconcileThenRetry;
                tracing::debug!(line = row.line, error = %err, "transient failure");
                match wait_before_retry(shared, &mut schedule, &err).await {
                    Wait::Elapsed => continue,
                    Wait::Stopped => {
                        if !outcome_unknown {
                            // Known not created: plain pending, no lookup needed on resume.
                            shared.record(
                                row.line,
                                failure(RowState::Pending, &err, true, latency_ms),
                            )?;
                        }
                        return Ok(RowFate::Stopped);
                    }
                    Wait::Exhausted if outcome_unknown => {
                        shared.record(row.line, unresolved(&err))?;
                        return Ok(RowFate::HoldConversation);
                    }
                    Wait::Exhausted => {
                        shared
                            .record(row.line, failure(RowState::Failed, &err, true, latency_ms))?;
                        return Ok(RowFate::HoldConversation);
                    }
                }
            }
        }
    }
}

/// 429s one row may meet before they count against its attempts: a bound, so that an API that
/// answers 429 forever cannot hold a row for ever.
const MAX_RATE_LIMITED_PER_ROW: u32 = 50;

/// The audit fields as sent in a body.
#[derive(serde::Deserialize)]
struct SentAudit {
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    #[serde(rename = "createdBy")]
    created_by: Option<String>,
}

/// Says how Kustomer changed createdAt/createdBy, if it did. Fields the response does not carry
/// cannot be checked and are not reported.
fn audit_mismatch(body: &str, created: &CreatedMessage) -> Option<String> {
    let sent: SentAudit = serde_json::from_str(body).ok()?;
    let mut changes = Vec::new();
    if let (Some(sent), Some(got)) = (&sent.created_at, &created.created_at) {
        let same_instant = match (
            sent.parse::<jiff::Timestamp>(),
            got.parse::<jiff::Timestamp>(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => sent == got,
        };
        if !same_instant {
            changes.push(format!("createdAt sent {sent}, stored {got}"));
        }
    }
    if let (Some(sent), Some(got)) = (&sent.created_by, &created.created_by) {
        if sent != got {
            changes.push(format!("createdBy sent {sent}, stored {got}"));
        }
    }
    (!changes.is_empty()).then(|| {
        format!(
            "created, but Kustomer overwrote its audit fields ({}): the key probably lacks org.admin",
            changes.join("; ")
        )
    })
}

fn succeeded(message_id: String, http_status: Option<u16>, latency_ms: Option<u64>) -> RowResult {
    RowResult {
        state: RowState::Succeeded,
        message_id: Some(message_id),
        http_status,
        error_code: None,
        error_message: None,
        retryable: false,
        latency_ms,
        budget_wait_ms: None,
        at_ms: now_ms(),
    }
}

fn failure(state: RowState, err: &ApiError, retryable: bool, latency_ms: u64) -> RowResult {
    RowResult {
        state,
        message_id: None,
        http_status: err.http_status(),
        error_code: Some(err.code()),
        error_message: Some(err.to_string()),
        retryable,
        latency_ms: Some(latency_ms),
        budget_wait_ms: None,
        at_ms: now_ms(),
    }
}

/// The row stays `sending`: whether it was created is unknown until a lookup answers.
fn unresolved(err: &ApiError) -> RowResult {
    RowResult {
        state: RowState::Sending,
        message_id: None,
        http_status: err.http_status(),
        error_code: Some("outcome_unknown".into()),
        error_message: Some(format!(
            "outcome unknown, lookup by externalId did not answer: {err}"
        )),
        retryable: true,
        latency_ms: None,
        budget_wait_ms: None,
        at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(at: Option<&str>, by: Option<&str>) -> CreatedMessage {
        CreatedMessage {
            id: "x".into(),
            created_at: at.map(str::to_string),
            created_by: by.map(str::to_string),
            rate: Default::default(),
        }
    }

    #[test]
    fn audit_fields_compared_as_instants_and_ids() {
        let body =
            r#"{"createdAt":"2020-01-01T10:00:00.000Z","createdBy":"5f0000000000000000000001"}"#;
        assert_eq!(
            audit_mismatch(
                body,
                &created(
                    Some("2020-01-01T10:00:00Z"),
                    Some("5f0000000000000000000001")
                )
            ),
            None
        );
        let changed = audit_mismatch(
            body,
            &created(
                Some("2026-11-26T14:00:00Z"),
                Some("5f00000000000000000000ff"),
            ),
        )
        .unwrap();
        assert!(
            changed.contains("createdAt sent 2020-01-01T10:00:00.000Z"),
            "{changed}"
        );
        assert!(
            changed.contains("createdBy sent 5f0000000000000000000001"),
            "{changed}"
        );
        // Nothing to compare: no verdict.
        assert_eq!(audit_mismatch(body, &created(None, None)), None);
        assert_eq!(
            audit_mismatch("{}", &created(Some("2026-11-26T14:00:00Z"), None)),
            None
        );
    }
}
