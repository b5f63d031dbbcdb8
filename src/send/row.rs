//! One row's way through the API: create, and after any answer that may hide a write, settle,
//! look the row up, and only then resend. Every decision goes through
//! [`ApiError::retry_action`](crate::retry::RetryAction) and [`judge_lookup`].
//!
//! A row that must wait (its settle delay, the route's proof) hands its lane back to the board
//! with its progress kept in [`HeadProgress`]; nothing here sleeps longer than a backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::checkpoint::{now_ms, CheckpointError, QueuedRow, RowState};
use crate::client::{ApiError, Timing};
use crate::retry::{RequestKind, RetryAction, RetrySchedule, MAX_RATE_LIMITED_PER_ROW};

use super::bulk::BulkOutcome;
use super::outcome::{self, Verdict};
use super::route::KnownMessage;
use super::{Halt, Shared};

/// What the head row does next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Create,
    /// Wait until the moment, then look up.
    Settle(Instant),
    Lookup,
    /// Read the results of the bulk job a dead run sent the row in.
    ReadJob(String),
}

/// Why the row is being looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// An earlier create's outcome is unknown.
    Reconcile,
    /// `--skip-existing`: has this row been created before, by any earlier import?
    PreCheck,
}

/// A head row's progress, kept while its lane is parked.
pub struct HeadProgress {
    line: u64,
    step: Step,
    purpose: Purpose,
    schedule: RetrySchedule,
    rate_limited: u32,
    /// The error that made the outcome unknown, for the record if it stays unknown.
    unknown_because: Option<String>,
    /// Consecutive connection failures, for the reconnect backoff.
    never_sent: u32,
    /// Bulk mode: the row may ride a job (the lane decides, see `Shared::bulk_rounds`).
    pub bulk: bool,
    /// The batcher sent it back to go alone.
    single_only: bool,
}

impl HeadProgress {
    pub fn new(shared: &Shared, row: &QueuedRow) -> HeadProgress {
        let plan = &shared.plan;
        let (step, purpose) = match (&row.state, &row.bulk_job_id) {
            // Sent in a bulk job the API named: its results say what happened.
            (RowState::Sending, Some(job_id)) => {
                (Step::ReadJob(job_id.clone()), Purpose::Reconcile)
            }
            // Left `sending` by an earlier run: its request may still have been on the wire
            // until the client's timeout, and may land up to the settle delay after that.
            (RowState::Sending, None) => {
                let since_attempt = row
                    .last_attempt_ms
                    .map(|at| u64::try_from(now_ms().saturating_sub(at)).unwrap_or(0))
                    .map(Duration::from_millis)
                    .unwrap_or_default();
                let wait = (plan.request_timeout + plan.settle_delay).saturating_sub(since_attempt);
                (Step::Settle(Instant::now() + wait), Purpose::Reconcile)
            }
            _ if plan.skip_existing => (Step::Lookup, Purpose::PreCheck),
            _ => (Step::Create, Purpose::Reconcile),
        };
        HeadProgress {
            line: row.line,
            step,
            purpose,
            schedule: RetrySchedule::new(plan.retry),
            rate_limited: 0,
            unknown_because: (row.state == RowState::Sending)
                .then(|| "interrupted while its request was in flight".to_string()),
            never_sent: 0,
            bulk: false,
            single_only: false,
        }
    }

    pub fn line(&self) -> u64 {
        self.line
    }
}

/// How the head row's turn ended.
pub enum RowEnd {
    /// Settled (succeeded or failed for good): the lane goes on to its next row.
    Finished,
    /// 404 on create: the conversation does not exist; its later rows are not sent.
    ConversationMissing { reason: String },
    /// The row failed in a way a later retry can fix: the rest of the conversation waits.
    Hold,
    /// Wait until then (settle delay), then come back.
    Park(Instant),
    /// A lookup said "not found" on a route not yet proven: wait for the proof.
    AwaitRoute,
    /// The run is stopping.
    Stopped,
}

enum Wait {
    Elapsed,
    Exhausted,
    Stopped,
}

/// Drives the head row until it settles or must wait.
pub async fn advance(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
    body: &str,
    progress: &mut HeadProgress,
) -> Result<RowEnd, CheckpointError> {
    loop {
        if shared.stop.is_cancelled() {
            return Ok(RowEnd::Stopped);
        }
        match progress.step.clone() {
            Step::ReadJob(job_id) => {
                if let Some(end) =
                    read_job(shared, conversation_id, row, body, progress, &job_id).await?
                {
                    return Ok(end);
                }
                if progress.step == Step::ReadJob(job_id) {
                    // Not settled by the job (it was not read): look the row up instead.
                    progress.step = Step::Lookup;
                }
            }
            Step::Settle(until) => {
                if until > Instant::now() {
                    return Ok(RowEnd::Park(until));
                }
                progress.step = Step::Lookup;
            }
            Step::Lookup => {
                if let Some(end) = lookup(shared, conversation_id, row, progress).await? {
                    return Ok(end);
                }
            }
            Step::Create => {
                if let Some(end) = create(shared, conversation_id, row, body, progress).await? {
                    return Ok(end);
                }
            }
        }
    }
}

/// One lookup and what it decides; `None` means go on with the next step.
async fn lookup(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
    progress: &mut HeadProgress,
) -> Result<Option<RowEnd>, CheckpointError> {
    shared.counters.add_lookup();
    let answer = shared.client.find_by_external_id(&row.external_id).await;
    shared.connectivity.observe(&answer);
    let err = match answer {
        Ok(answer) => {
            return match outcome::judge_lookup(&answer, &row.external_id, conversation_id) {
                Verdict::Own { message_id } => {
                    shared.route_proven();
                    let code = (progress.purpose == Purpose::PreCheck).then(|| {
                        (
                            outcome::FOUND_EXISTING,
                            "already in Kustomer before this job sent it (--skip-existing): not sent again".to_string(),
                        )
                    });
                    if progress.purpose == Purpose::Reconcile {
                        shared.counters.add_reconciled(1);
                    }
                    shared.record(row.line, outcome::found(message_id, code))?;
                    Ok(Some(RowEnd::Finished))
                }
                Verdict::ElsewhereOnly {
                    conversation_id: elsewhere,
                } if progress.purpose == Purpose::Reconcile => {
                    let message = format!(
                        "not created: its outcome was unknown ({}), and a lookup by externalId found \
                         a message with this externalId only in conversation {elsewhere}, which is \
                         not this row's (another system used the same source id). Later rows of \
                         this conversation are held; `resume --retry-failed` creates it",
                        progress.unknown_because.as_deref().unwrap_or("no answer")
                    );
                    shared.record(
                        row.line,
                        outcome::failed(outcome::EXTERNAL_ID_ELSEWHERE, message, true),
                    )?;
                    Ok(Some(RowEnd::Hold))
                }
                // Before a first send, another conversation's message is simply not this row.
                Verdict::ElsewhereOnly { .. } => {
                    progress.step = Step::Create;
                    Ok(None)
                }
                Verdict::NotFound { trusted_answer } => {
                    if !trusted_answer && !shared.route.is_proven() {
                        return Ok(Some(RowEnd::AwaitRoute));
                    }
                    if progress.purpose == Purpose::Reconcile && !progress.schedule.use_attempt() {
                        // Known not created, and out of attempts: a retry later keeps order.
                        let message = format!(
                            "not created after {} attempts (last: {})",
                            progress.schedule.attempts(),
                            progress.unknown_because.as_deref().unwrap_or("unknown")
                        );
                        shared.record(
                            row.line,
                            outcome::failed("attempts_exhausted", message, true),
                        )?;
                        return Ok(Some(RowEnd::Hold));
                    }
                    progress.step = Step::Create;
                    Ok(None)
                }
            };
        }
        Err(err) => err,
    };
    match err.retry_action(RequestKind::Lookup) {
        RetryAction::StopRun => {
            shared.halt(Halt::Api(err));
            Ok(Some(RowEnd::Stopped))
        }
        RetryAction::RateLimited => {
            // The throttle has paused every request; the read simply goes again.
            if too_often_rate_limited(progress) {
                return give_up_lookup(shared, row, progress, &err).map(Some);
            }
            Ok(None)
        }
        RetryAction::NeverSent => match reconnect_wait(shared, progress, &err).await {
            Wait::Elapsed => Ok(None),
            Wait::Stopped | Wait::Exhausted => Ok(Some(RowEnd::Stopped)),
        },
        _ => match wait_before_retry(shared, &mut progress.schedule, &err).await {
            Wait::Elapsed => Ok(None),
            Wait::Stopped => Ok(Some(RowEnd::Stopped)),
            Wait::Exhausted => give_up_lookup(shared, row, progress, &err).map(Some),
        },
    }
}

/// The lookup did not answer within the row's attempts.
fn give_up_lookup(
    shared: &Shared,
    row: &QueuedRow,
    progress: &HeadProgress,
    err: &ApiError,
) -> Result<RowEnd, CheckpointError> {
    let result = match progress.purpose {
        Purpose::Reconcile => outcome::failed(
            outcome::OUTCOME_UNKNOWN,
            format!(
                "outcome unknown: the create got no usable answer ({}), and the lookup by \
                 externalId did not answer either ({err}). `resume` looks it up again before \
                 anything is resent",
                progress.unknown_because.as_deref().unwrap_or("no answer")
            ),
            true,
        ),
        Purpose::PreCheck => outcome::failed(
            "lookup_failed",
            format!("not sent: --skip-existing could not look it up ({err})"),
            true,
        ),
    };
    shared.record(row.line, result)?;
    Ok(RowEnd::Hold)
}

/// One create and what it decides; `None` means go on with the next step.
async fn create(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
    body: &str,
    progress: &mut HeadProgress,
) -> Result<Option<RowEnd>, CheckpointError> {
    if progress.bulk && !progress.single_only {
        if let Some(batcher) = &shared.batcher {
            let answer = batcher.send(row.line, conversation_id, body).await;
            return bulk_answer(shared, conversation_id, row, body, progress, answer).await;
        }
    }
    shared.writer.mark_sending(row.line, now_ms()).await?;
    let (result, timing) = shared.client.create_message(conversation_id, body).await;
    shared.connectivity.observe(&result);
    match result {
        Ok(created) => {
            let mut result = outcome::succeeded(created.id.clone(), Some(201), timing);
            let overwritten = shared
                .plan
                .verify_audit_fields
                .then(|| outcome::audit_mismatch(body, &created))
                .flatten();
            created_as(
                shared,
                conversation_id,
                row,
                created.id,
                &mut result,
                overwritten,
            )
        }
        Err(err) => create_failed(shared, row, progress, err, timing, false).await,
    }
}

/// Reads the job a dead run sent the row in, instead of sending it again.
async fn read_job(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
    body: &str,
    progress: &mut HeadProgress,
    job_id: &str,
) -> Result<Option<RowEnd>, CheckpointError> {
    let Some(batcher) = &shared.batcher else {
        progress.step = Step::Lookup;
        return Ok(None);
    };
    let answer = batcher.read(row.line, job_id).await;
    bulk_answer(shared, conversation_id, row, body, progress, answer).await
}

/// What a bulk job said about the row.
async fn bulk_answer(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
    body: &str,
    progress: &mut HeadProgress,
    answer: BulkOutcome,
) -> Result<Option<RowEnd>, CheckpointError> {
    match answer {
        BulkOutcome::Created { message_id, job_id } => {
            let mut result = outcome::succeeded(message_id.clone(), None, Default::default());
            // Bulk results carry no message body: the first created message of the run, and
            // one in every thousand after, is read back to check its audit fields.
            let checked = shared.counters.bulk_created(1);
            let overwritten = if shared.plan.verify_audit_fields
                && (checked == 1 || checked.is_multiple_of(1000))
            {
                match shared.client.message(&message_id).await {
                    Ok(created) => outcome::audit_mismatch(body, &created),
                    Err(err) => {
                        tracing::warn!(error = %err, job_id, "could not read a bulk-created message back to check its audit fields");
                        None
                    }
                }
            } else {
                None
            };
            created_as(
                shared,
                conversation_id,
                row,
                message_id,
                &mut result,
                overwritten,
            )
        }
        BulkOutcome::ItemFailed(err) => {
            create_failed(shared, row, progress, err, Default::default(), true).await
        }
        BulkOutcome::NotSent(err) => {
            create_failed(shared, row, progress, err, Default::default(), false).await
        }
        BulkOutcome::Unknown(why) => {
            shared.counters.add_unknown();
            progress.unknown_because = Some(why);
            progress.purpose = Purpose::Reconcile;
            progress.step = Step::Settle(Instant::now() + shared.plan.settle_delay);
            Ok(None)
        }
        BulkOutcome::Single => {
            progress.single_only = true;
            progress.step = Step::Create;
            Ok(None)
        }
        BulkOutcome::StorageFailed => {
            shared.writer.flush().await?;
            Ok(Some(RowEnd::Stopped))
        }
        BulkOutcome::Stopped => Ok(Some(RowEnd::Stopped)),
    }
}

/// Records a created row (checking its audit fields when they came back) and proves the lookup
/// route on it.
fn created_as(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
    message_id: String,
    result: &mut crate::checkpoint::RowResult,
    overwritten: Option<String>,
) -> Result<Option<RowEnd>, CheckpointError> {
    shared.prove_route_with(KnownMessage {
        line: row.line,
        external_id: row.external_id.clone(),
        conversation_id: conversation_id.to_string(),
        message_id,
    });
    if let Some(detail) = overwritten {
        result.error_code = Some(outcome::AUDIT_OVERWRITTEN.into());
        result.error_message = Some(detail.clone());
        shared.record(row.line, result.clone())?;
        shared.halt(Halt::AuditOverwritten(format!(
            "line {}: {detail}",
            row.line
        )));
        return Ok(Some(RowEnd::Stopped));
    }
    shared.record(row.line, result.clone())?;
    Ok(Some(RowEnd::Finished))
}

/// A create that failed, by the one classification. `item`: the error is a bulk item's own,
/// which the job reports only for items it did not store, so a 5xx there is known not created.
async fn create_failed(
    shared: &Arc<Shared>,
    row: &QueuedRow,
    progress: &mut HeadProgress,
    err: ApiError,
    timing: Timing,
    item: bool,
) -> Result<Option<RowEnd>, CheckpointError> {
    let action = match err.retry_action(RequestKind::Create) {
        RetryAction::OutcomeUnknown if item => RetryAction::RetryRead,
        action => action,
    };
    match action {
        RetryAction::StopRun => {
            // Refused outright (401, 403) or sent elsewhere (3xx): not created.
            shared.record(row.line, outcome::not_sent(&err))?;
            shared.halt(Halt::Api(err));
            Ok(Some(RowEnd::Stopped))
        }
        RetryAction::FailRow => {
            shared.record(
                row.line,
                outcome::failure(RowState::Failed, &err, false, timing),
            )?;
            if err.http_status() == Some(404) {
                return Ok(Some(RowEnd::ConversationMissing {
                    reason: err.to_string(),
                }));
            }
            Ok(Some(RowEnd::Finished))
        }
        RetryAction::RateLimited => {
            if too_often_rate_limited(progress) {
                let message = format!(
                    "not created: answered 429 {MAX_RATE_LIMITED_PER_ROW} times ({err}); `resume --retry-failed` sends it again"
                );
                shared.record(
                    row.line,
                    outcome::failed(outcome::RATE_LIMITED_TOO_OFTEN, message, true),
                )?;
                return Ok(Some(RowEnd::Hold));
            }
            Ok(None)
        }
        RetryAction::NeverSent => match reconnect_wait(shared, progress, &err).await {
            Wait::Elapsed => Ok(None),
            Wait::Stopped | Wait::Exhausted => {
                shared.record(row.line, outcome::not_sent(&err))?;
                Ok(Some(RowEnd::Stopped))
            }
        },
        // A bulk item the job says it did not store: sent again in a later job, an attempt used.
        RetryAction::RetryRead => {
            match wait_before_retry(shared, &mut progress.schedule, &err).await {
                Wait::Elapsed => Ok(None),
                Wait::Stopped => {
                    shared.record(row.line, outcome::not_sent(&err))?;
                    Ok(Some(RowEnd::Stopped))
                }
                Wait::Exhausted => {
                    shared.record(
                        row.line,
                        outcome::failure(RowState::Failed, &err, true, timing),
                    )?;
                    Ok(Some(RowEnd::Hold))
                }
            }
        }
        RetryAction::OutcomeUnknown => {
            tracing::debug!(line = row.line, error = %err, "outcome unknown; settling before a lookup");
            shared.counters.add_unknown();
            progress.unknown_because = Some(err.to_string());
            progress.purpose = Purpose::Reconcile;
            progress.step = Step::Settle(Instant::now() + shared.plan.settle_delay);
            Ok(None)
        }
    }
}

fn too_often_rate_limited(progress: &mut HeadProgress) -> bool {
    progress.rate_limited += 1;
    progress.rate_limited > MAX_RATE_LIMITED_PER_ROW
}

/// After a connection that never opened: wait a little, unless the API has been unreachable for
/// too long, which stops the whole run (rows stay pending: nothing was sent).
async fn reconnect_wait(shared: &Shared, progress: &mut HeadProgress, err: &ApiError) -> Wait {
    if matches!(err, ApiError::NotSent) {
        return Wait::Stopped;
    }
    if let Some(down_for) = shared
        .connectivity
        .unreachable_for(shared.plan.unreachable_after)
    {
        shared.halt(Halt::Unreachable(format!(
            "every request failed to connect for {}s ({err})",
            down_for.as_secs()
        )));
        return Wait::Stopped;
    }
    progress.never_sent = progress.never_sent.saturating_add(1);
    let delay = crate::retry::reconnect_delay(progress.never_sent);
    sleep_or_stop(shared, delay).await
}

async fn wait_before_retry(shared: &Shared, schedule: &mut RetrySchedule, err: &ApiError) -> Wait {
    // A server's hint is honoured, but never beyond --max-pause.
    let hint = err
        .rate()
        .and_then(|rate| rate.retry_after)
        .map(|hint| hint.min(shared.plan.max_pause));
    let Some(delay) = schedule.next_delay(hint) else {
        return Wait::Exhausted;
    };
    sleep_or_stop(shared, delay).await
}

async fn sleep_or_stop(shared: &Shared, delay: Duration) -> Wait {
    shared.counters.retry_waits(1);
    let waited = tokio::select! {
        () = tokio::time::sleep(delay) => Wait::Elapsed,
        () = shared.stop.cancelled() => Wait::Stopped,
    };
    shared.counters.retry_waits(-1);
    waited
}
