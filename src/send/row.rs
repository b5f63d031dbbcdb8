//! One row's way through the API: create (through the transport, which answers one [`Sent`]),
//! and after any answer that may hide a write, settle, look the row up, and only then resend.
//! Every decision goes through [`ApiError::retry_action`](crate::retry::RetryAction) and
//! [`judge_lookup`](super::outcome::judge_lookup).
//!
//! An unknown outcome is looked up twice: early (`--early-lookup` after the answer), where a
//! message found proves itself and settles the row at once, and, only when that found nothing,
//! again once the full settle delay is over; only that second lookup may lead to a resend. A
//! lookup that finds the row's externalId only in another conversation is settled by reading
//! the row's own conversation's messages, when the key may read conversations.
//!
//! A row that must wait (its settle delay, the route's proof) hands its lane back to the board
//! with its progress kept in [`HeadProgress`]; nothing here sleeps longer than a backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::checkpoint::codes::{
    ATTEMPTS_EXHAUSTED, AUDIT_OVERWRITTEN, EXTERNAL_ID_ELSEWHERE, FOUND_EXISTING, LOOKUP_FAILED,
    OUTCOME_UNKNOWN, RATE_LIMITED_TOO_OFTEN,
};
use crate::checkpoint::{now_ms, CheckpointError, QueuedRow, RowState};
use crate::client::ApiError;
use crate::retry::{RequestKind, RetryAction, RetrySchedule, MAX_RATE_LIMITED_PER_ROW};

use super::control::Halt;
use super::outcome::{self, Verdict};
use super::route::KnownMessage;
use super::transport::{Failure, Head, HeadState, Remedy, Sent, Writing};
use super::Shared;

/// What the head row does next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Create,
    /// Wait until `at`, then look up early: a hit settles the row, anything else waits for the
    /// full settle delay, over at `settled`.
    Early {
        at: Instant,
        settled: Instant,
    },
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
    /// What the transport keeps about the row between tries.
    transport: HeadState,
}

impl HeadProgress {
    pub fn new(shared: &Shared, row: &QueuedRow) -> HeadProgress {
        let options = &shared.options;
        let (step, purpose) = match (&row.state, &row.bulk_job_id) {
            // Sent in a bulk job the API named: its results say what happened.
            (RowState::Sending, Some(job_id)) => {
                (Step::ReadJob(job_id.clone()), Purpose::Reconcile)
            }
            // Left `sending` by an earlier run: its request may still have been on the wire
            // until the client's timeout, and may land up to the settle time after that.
            (RowState::Sending, None) => {
                let since_attempt = row
                    .last_attempt_ms
                    .map(|at| u64::try_from(now_ms().saturating_sub(at)).unwrap_or(0))
                    .map(Duration::from_millis)
                    .unwrap_or_default();
                // A row of a bulk job whose id never came back: the job may still be running.
                let writing = if row.in_bulk_batch {
                    Writing::Job {
                        slowest: Duration::ZERO,
                    }
                } else {
                    Writing::Request
                };
                let settle = shared.transport.settle().wait(writing);
                let wait = (options.request_timeout + settle).saturating_sub(since_attempt);
                // Its early lookup may go at once: a message found proves itself.
                let now = Instant::now();
                (look_up(shared, now, now + wait), Purpose::Reconcile)
            }
            _ if options.skip_existing => (Step::Lookup, Purpose::PreCheck),
            _ => (Step::Create, Purpose::Reconcile),
        };
        HeadProgress {
            line: row.line,
            step,
            purpose,
            schedule: RetrySchedule::new(options.retry),
            rate_limited: 0,
            unknown_because: (row.state == RowState::Sending)
                .then(|| "interrupted while its request was in flight".to_string()),
            never_sent: 0,
            transport: HeadState::sent_at(row.last_attempt_ms),
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
    head: &Head<'_>,
    row: &QueuedRow,
    progress: &mut HeadProgress,
) -> Result<RowEnd, CheckpointError> {
    loop {
        if shared.control.stopping() {
            return Ok(RowEnd::Stopped);
        }
        match progress.step.clone() {
            Step::ReadJob(job_id) => {
                // Read the job a dead run sent the row in, instead of sending it again.
                let sent = shared
                    .transport
                    .read_job(head, &mut progress.transport, &job_id)
                    .await?;
                if let Some(end) = answered(shared, head, row, progress, sent).await? {
                    return Ok(end);
                }
                if progress.step == Step::ReadJob(job_id) {
                    // Not settled by the job (it was not read): look the row up instead.
                    progress.step = Step::Lookup;
                }
            }
            Step::Early { at, settled } => {
                if at > Instant::now() {
                    return Ok(RowEnd::Park(at));
                }
                progress.step = Step::Settle(settled);
                if let Some(end) = early_lookup(shared, head.conversation_id, row).await? {
                    return Ok(end);
                }
            }
            Step::Settle(until) => {
                if until > Instant::now() {
                    return Ok(RowEnd::Park(until));
                }
                progress.step = Step::Lookup;
            }
            Step::Lookup => {
                if let Some(end) = lookup(shared, head.conversation_id, row, progress).await? {
                    return Ok(end);
                }
            }
            Step::Create => {
                let sent = shared
                    .transport
                    .create(head, &mut progress.transport)
                    .await?;
                if let Some(end) = answered(shared, head, row, progress, sent).await? {
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
    shared.stats().add_lookup();
    let answer = shared.client.find_by_external_id(&row.external_id).await;
    shared.control.observe(&answer);
    let err = match answer {
        Ok(answer) => {
            return match outcome::judge_lookup(&answer, &row.external_id, conversation_id) {
                Verdict::Own { message_id } => {
                    shared.route_proven();
                    let code = (progress.purpose == Purpose::PreCheck).then(|| {
                        (
                            FOUND_EXISTING,
                            "already in Kustomer before this job sent it (--skip-existing): not sent again".to_string(),
                        )
                    });
                    if progress.purpose == Purpose::Reconcile {
                        shared.stats().add_reconciled(1);
                    }
                    shared
                        .ledger
                        .record(row.line, outcome::found(message_id, code))?;
                    Ok(Some(RowEnd::Finished))
                }
                Verdict::ElsewhereOnly {
                    conversation_id: elsewhere,
                } if progress.purpose == Purpose::Reconcile => {
                    match read_own_conversation(shared, conversation_id, &row.external_id).await {
                        OwnConversation::Found { message_id } => {
                            shared.stats().add_reconciled(1);
                            shared
                                .ledger
                                .record(row.line, outcome::found(message_id, None))?;
                            Ok(Some(RowEnd::Finished))
                        }
                        // Absent once the settle delay is over: not created.
                        OwnConversation::Absent => resend(shared, row, progress),
                        OwnConversation::Stopped => Ok(Some(RowEnd::Stopped)),
                        OwnConversation::Undecided(why) => {
                            let message = format!(
                                "not created: its outcome was unknown ({}), and a lookup by \
                                 externalId found a message with this externalId only in \
                                 conversation {elsewhere}, which is not this row's (another \
                                 system used the same source id); {why}. Later rows of this \
                                 conversation are held; `resume --retry-failed` creates it",
                                progress.unknown_because.as_deref().unwrap_or("no answer")
                            );
                            shared.ledger.record(
                                row.line,
                                outcome::failed(EXTERNAL_ID_ELSEWHERE, message, true),
                            )?;
                            Ok(Some(RowEnd::Hold))
                        }
                    }
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
                    resend(shared, row, progress)
                }
            };
        }
        Err(err) => err,
    };
    match err.retry_action(RequestKind::Lookup) {
        RetryAction::StopRun => {
            shared.control.halt(Halt::Api(err));
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

/// Known not created: sent again, an attempt used (a reconciled row out of attempts fails,
/// retryable, so that a retry later keeps order).
fn resend(
    shared: &Shared,
    row: &QueuedRow,
    progress: &mut HeadProgress,
) -> Result<Option<RowEnd>, CheckpointError> {
    if progress.purpose == Purpose::Reconcile && !progress.schedule.use_attempt() {
        let message = format!(
            "not created after {} attempts (last: {})",
            progress.schedule.attempts(),
            progress.unknown_because.as_deref().unwrap_or("unknown")
        );
        shared
            .ledger
            .record(row.line, outcome::failed(ATTEMPTS_EXHAUSTED, message, true))?;
        return Ok(Some(RowEnd::Hold));
    }
    progress.step = Step::Create;
    Ok(None)
}

/// After an unknown outcome, the early lookup at `early` (when `--early-lookup` is on and that
/// comes before the full delay is over at `settled`), then the one at `settled`.
fn look_up(shared: &Shared, early: Instant, settled: Instant) -> Step {
    lookups_after_unknown(!shared.options.early_lookup.is_zero(), early, settled)
}

fn lookups_after_unknown(early_on: bool, early: Instant, settled: Instant) -> Step {
    if !early_on || early >= settled {
        Step::Settle(settled)
    } else {
        Step::Early { at: early, settled }
    }
}

/// The early lookup of an unknown outcome: the row's own message found (by the lookup, or in
/// its conversation when the lookup found the externalId only elsewhere) settles it; anything
/// else, an error or a "not found" on a route not yet proven included, only means waiting for
/// the full settle delay, which the caller has already set as the next step.
async fn early_lookup(
    shared: &Arc<Shared>,
    conversation_id: &str,
    row: &QueuedRow,
) -> Result<Option<RowEnd>, CheckpointError> {
    shared.stats().add_lookup();
    shared.stats().add_early_lookup();
    let answer = shared.client.find_by_external_id(&row.external_id).await;
    shared.control.observe(&answer);
    let message_id = match answer {
        Ok(answer) => match outcome::judge_lookup(&answer, &row.external_id, conversation_id) {
            Verdict::Own { message_id } => {
                shared.route_proven();
                message_id
            }
            Verdict::ElsewhereOnly { .. } if shared.options.reads_conversations != Some(false) => {
                match read_own_conversation(shared, conversation_id, &row.external_id).await {
                    OwnConversation::Found { message_id } => message_id,
                    OwnConversation::Stopped => return Ok(Some(RowEnd::Stopped)),
                    OwnConversation::Absent | OwnConversation::Undecided(_) => return Ok(None),
                }
            }
            Verdict::ElsewhereOnly { .. } | Verdict::NotFound { .. } => return Ok(None),
        },
        Err(err) if err.retry_action(RequestKind::Lookup) == RetryAction::StopRun => {
            shared.control.halt(Halt::Api(err));
            return Ok(Some(RowEnd::Stopped));
        }
        Err(_) => return Ok(None),
    };
    shared.stats().add_early_hit();
    shared.stats().add_reconciled(1);
    shared
        .ledger
        .record(row.line, outcome::found(message_id, None))?;
    Ok(Some(RowEnd::Finished))
}

/// A conversation's messages are read this many at a time: 50 previews of the most a message
/// may carry stay under the client's answer size limit in all but the worst case.
const CONVERSATION_PAGE_SIZE: u32 = 50;
/// The most pages read for one row: a deeper conversation stays undecided.
const MAX_CONVERSATION_PAGES: u32 = 40;

/// What the row's own conversation holds under its externalId.
enum OwnConversation {
    Found {
        message_id: String,
    },
    /// Every page read, none with the row's externalId.
    Absent,
    /// Could not be told, and why (in words that follow a semicolon).
    Undecided(String),
    Stopped,
}

/// Reads the row's conversation's messages, page after page (bounded), through the client's
/// throttle, for a message with the row's externalId. Used when the lookup found that externalId
/// only in another conversation, which may hide the row's own message behind it.
async fn read_own_conversation(
    shared: &Shared,
    conversation_id: &str,
    external_id: &str,
) -> OwnConversation {
    let role = super::CONVERSATION_READ_ROLES[0];
    if shared.options.reads_conversations == Some(false) {
        return OwnConversation::Undecided(format!(
            "a key with the {role} role would settle it by reading this conversation's messages"
        ));
    }
    let mut schedule = RetrySchedule::new(shared.options.retry);
    let mut page = 1;
    while page <= MAX_CONVERSATION_PAGES {
        shared.stats().add_conversation_read();
        let answer = shared
            .client
            .conversation_messages(conversation_id, page, CONVERSATION_PAGE_SIZE)
            .await;
        shared.control.observe(&answer);
        let err = match answer {
            Ok(read) => {
                let own = read
                    .messages
                    .into_iter()
                    .find(|message| message.external_id.as_deref() == Some(external_id));
                if let Some(own) = own {
                    return OwnConversation::Found { message_id: own.id };
                }
                if !read.more {
                    return OwnConversation::Absent;
                }
                page += 1;
                continue;
            }
            Err(err) => err,
        };
        if err.http_status() == Some(403) {
            return OwnConversation::Undecided(format!(
                "reading this conversation's messages was refused ({err}): a key with the {role} \
                 role would settle it"
            ));
        }
        let waited = match err.retry_action(RequestKind::Lookup) {
            RetryAction::StopRun => {
                shared.control.halt(Halt::Api(err));
                return OwnConversation::Stopped;
            }
            RetryAction::NeverSent if matches!(err, ApiError::NotSent) => Wait::Stopped,
            _ => wait_before_retry(shared, &mut schedule, &err).await,
        };
        match waited {
            Wait::Elapsed => {}
            Wait::Stopped => return OwnConversation::Stopped,
            Wait::Exhausted => {
                return OwnConversation::Undecided(format!(
                    "this conversation's messages could not be read ({err})"
                ))
            }
        }
    }
    OwnConversation::Undecided(format!(
        "this conversation has more than {} messages, too many to read through",
        MAX_CONVERSATION_PAGES * CONVERSATION_PAGE_SIZE
    ))
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
            OUTCOME_UNKNOWN,
            format!(
                "outcome unknown: the create got no usable answer ({}), and the lookup by \
                 externalId did not answer either ({err}). `resume` looks it up again before \
                 anything is resent",
                progress.unknown_because.as_deref().unwrap_or("no answer")
            ),
            true,
        ),
        Purpose::PreCheck => outcome::failed(
            LOOKUP_FAILED,
            format!("not sent: --skip-existing could not look it up ({err})"),
            true,
        ),
    };
    shared.ledger.record(row.line, result)?;
    Ok(RowEnd::Hold)
}

/// What the transport said about the row, and what it decides; `None` means go on with the
/// next step.
async fn answered(
    shared: &Arc<Shared>,
    head: &Head<'_>,
    row: &QueuedRow,
    progress: &mut HeadProgress,
    sent: Sent,
) -> Result<Option<RowEnd>, CheckpointError> {
    match sent {
        Sent::Created(created) => {
            let overwritten = created
                .stored
                .as_ref()
                .filter(|_| shared.options.verify_audit_fields)
                .and_then(|stored| outcome::audit_mismatch(head.body, stored));
            let result = outcome::succeeded(
                created.message_id.clone(),
                created.http_status,
                created.timing,
            );
            created_as(shared, head, row, created.message_id, result, overwritten)
        }
        Sent::Failed(failure) => create_failed(shared, row, progress, failure).await,
        Sent::Unknown { why, settle } => {
            tracing::debug!(line = row.line, why = %why, "outcome unknown; settling before a lookup");
            shared.stats().add_unknown();
            progress.unknown_because = Some(why);
            progress.purpose = Purpose::Reconcile;
            let answered_at = Instant::now();
            progress.step = look_up(
                shared,
                answered_at + shared.options.early_lookup,
                answered_at + settle,
            );
            Ok(None)
        }
        Sent::JobOutlasted { why } => {
            let message = format!(
                "outcome unknown: {why}. Later rows of this conversation are held; `resume` \
                 reads the job again before anything is resent"
            );
            shared
                .ledger
                .record(row.line, outcome::failed(OUTCOME_UNKNOWN, message, true))?;
            Ok(Some(RowEnd::Hold))
        }
        Sent::Stopped => Ok(Some(RowEnd::Stopped)),
    }
}

/// Records a created row (checking its audit fields when they came back) and proves the lookup
/// route on it.
fn created_as(
    shared: &Arc<Shared>,
    head: &Head<'_>,
    row: &QueuedRow,
    message_id: String,
    mut result: crate::checkpoint::RowResult,
    overwritten: Option<String>,
) -> Result<Option<RowEnd>, CheckpointError> {
    shared.prove_route_with(KnownMessage {
        line: row.line,
        external_id: row.external_id.clone(),
        conversation_id: head.conversation_id.to_string(),
        message_id,
    });
    if let Some(detail) = overwritten {
        result.error_code = Some(AUDIT_OVERWRITTEN.into());
        result.error_message = Some(detail.clone());
        shared.ledger.record(row.line, result)?;
        shared.control.halt(Halt::AuditOverwritten(format!(
            "line {}: {detail}",
            row.line
        )));
        return Ok(Some(RowEnd::Stopped));
    }
    shared.ledger.record(row.line, result)?;
    Ok(Some(RowEnd::Finished))
}

/// A create known not to have stored the row, by what the failure calls for.
async fn create_failed(
    shared: &Arc<Shared>,
    row: &QueuedRow,
    progress: &mut HeadProgress,
    failure: Failure,
) -> Result<Option<RowEnd>, CheckpointError> {
    let Failure {
        error: err,
        timing,
        remedy,
    } = failure;
    match remedy {
        Remedy::StopRun => {
            // Refused outright (401, 403) or sent elsewhere (3xx): not created.
            shared.ledger.record(row.line, outcome::not_sent(&err))?;
            shared.control.halt(Halt::Api(err));
            Ok(Some(RowEnd::Stopped))
        }
        Remedy::FailRow => {
            shared.ledger.record(
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
        Remedy::RateLimited => {
            if too_often_rate_limited(progress) {
                let message = format!(
                    "not created: answered 429 {MAX_RATE_LIMITED_PER_ROW} times ({err}); `resume --retry-failed` sends it again"
                );
                shared.ledger.record(
                    row.line,
                    outcome::failed(RATE_LIMITED_TOO_OFTEN, message, true),
                )?;
                return Ok(Some(RowEnd::Hold));
            }
            Ok(None)
        }
        Remedy::NeverSent => match reconnect_wait(shared, progress, &err).await {
            Wait::Elapsed => Ok(None),
            Wait::Stopped | Wait::Exhausted => {
                shared.ledger.record(row.line, outcome::not_sent(&err))?;
                Ok(Some(RowEnd::Stopped))
            }
        },
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
        .control
        .unreachable_for(shared.options.unreachable_after)
    {
        shared.control.halt(Halt::Unreachable(format!(
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
        .map(|hint| hint.min(shared.options.max_pause));
    let Some(delay) = schedule.next_delay(hint) else {
        return Wait::Exhausted;
    };
    sleep_or_stop(shared, delay).await
}

async fn sleep_or_stop(shared: &Shared, delay: Duration) -> Wait {
    shared.stats().retry_waits(1);
    let waited = tokio::select! {
        () = tokio::time::sleep(delay) => Wait::Elapsed,
        () = shared.control.stop().cancelled() => Wait::Stopped,
    };
    shared.stats().retry_waits(-1);
    waited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_early_lookup_goes_only_when_on_and_before_the_full_delay() {
        let now = Instant::now();
        let early = now + Duration::from_secs(2);
        let settled = now + Duration::from_secs(30);
        assert_eq!(
            lookups_after_unknown(true, early, settled),
            Step::Early { at: early, settled }
        );
        assert_eq!(
            lookups_after_unknown(false, early, settled),
            Step::Settle(settled)
        );
        // Not before the full delay (e.g. --early-lookup 2 with --settle-delay 0.2): one lookup.
        assert_eq!(
            lookups_after_unknown(true, settled, settled),
            Step::Settle(settled)
        );
        assert_eq!(
            lookups_after_unknown(true, settled + Duration::from_secs(1), settled),
            Step::Settle(settled)
        );
    }
}
