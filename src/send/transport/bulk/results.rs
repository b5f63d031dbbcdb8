//! Reading and judging a job's results: following a job (or a dead run's job) until its answers
//! are final, judging each row's answer, and delivering it to the waiting lane.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::checkpoint::now_ms;
use crate::client::{ApiError, BatchStatus, BulkBatches, BulkResultItem, ItemOutcome};
use crate::retry::{RequestKind, RetryAction};
use crate::send::control::Halt;
use crate::send::transport::{item_error_remedy, Remedy, Writing};

use super::batcher::Crew;
use super::timer::{poll_after, SHORTEST_POLL};
use super::{answer_all, client_ref, BulkOutcome, Waiting};

/// A row a dead run sent in a job.
pub(super) struct Reading {
    pub(super) line: u64,
    pub(super) sent_at_ms: Option<i64>,
    pub(super) reply: oneshot::Sender<BulkOutcome>,
}

/// Reads a dead run's job once it should be done (its rows' last send plus a job time), then
/// follows it like any job of this run, up to `--max-job-wait` from now.
pub(super) async fn read_dead_job(crew: &Crew, job_id: String, readers: Vec<Reading>) {
    let sent_at = readers
        .iter()
        .filter_map(|reading| reading.sent_at_ms)
        .max();
    let since_sent = sent_at
        .map(|at| u64::try_from(now_ms().saturating_sub(at)).unwrap_or(0))
        .map(Duration::from_millis)
        .unwrap_or(Duration::MAX);
    let now = Instant::now();
    let first_read = now + crew.timer().expected.saturating_sub(since_sent);
    let waiting = readers
        .into_iter()
        .map(|Reading { line, reply, .. }| Waiting { line, reply })
        .collect();
    follow_job(
        crew,
        &job_id,
        waiting,
        first_read,
        now + crew.parts.max_job_wait,
    )
    .await;
}

/// Reads the job's results from `first_read` on until they are final, at most once per learned
/// job time, until `deadline`; answers every waiting row. Returns when the results were found
/// final and whether on the first read (None when they never were).
pub(super) async fn follow_job(
    crew: &Crew,
    job_id: &str,
    waiting: Vec<Waiting>,
    first_read: Instant,
    deadline: Instant,
) -> Option<(Instant, bool)> {
    let control = &crew.parts.control;
    let refs: Vec<String> = waiting.iter().map(|row| client_ref(row.line)).collect();
    let mut next_read = first_read.min(deadline);
    let mut reads = 0u32;
    let mut failures = 0u32;
    // The latest batches of a job still running: at `deadline`, what they answer for sure.
    let mut last: Option<BulkBatches> = None;
    loop {
        let waited = tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(next_read)) => true,
            () = control.stop().cancelled() => false,
        };
        if !waited {
            answer_all(waiting, || BulkOutcome::Stopped);
            return None;
        }
        if Instant::now() >= deadline && reads > 0 {
            let why = format!(
                "bulk job {job_id} had not finished after --max-job-wait ({}s); it may still be running",
                crew.parts.max_job_wait.as_secs()
            );
            outlasted(job_id, &refs, last.as_ref(), waiting, &why);
            return None;
        }
        if reads > 0 {
            crew.parts.ledger.stats().add_bulk_poll();
        }
        reads += 1;
        let read = read_once(crew, job_id, &refs).await;
        let err = match read {
            Ok(Read::Final(verdicts)) => {
                let read_at = Instant::now();
                deliver(crew, job_id, verdicts, waiting);
                return Some((read_at, reads == 1));
            }
            Ok(Read::Running(batches)) => {
                last = Some(batches);
                failures = 0;
                next_read =
                    (Instant::now() + poll_after(crew.timer().expected, reads)).min(deadline);
                continue;
            }
            Err(err) => err,
        };
        let pause = match err.retry_action(RequestKind::Lookup) {
            RetryAction::StopRun => {
                control.halt(Halt::Api(err));
                answer_all(waiting, || BulkOutcome::Stopped);
                return None;
            }
            // The client's throttle has paused every request: the next read waits for it.
            RetryAction::RateLimited => err
                .rate()
                .and_then(|rate| rate.retry_after)
                .unwrap_or(SHORTEST_POLL),
            RetryAction::NeverSent => {
                if let Some(down_for) = control.unreachable_for(crew.parts.unreachable_after) {
                    control.halt(Halt::Unreachable(format!(
                        "every request failed to connect for {}s while reading bulk job {job_id} ({err})",
                        down_for.as_secs()
                    )));
                    answer_all(waiting, || BulkOutcome::Stopped);
                    return None;
                }
                failures = failures.saturating_add(1);
                crate::retry::reconnect_delay(failures)
            }
            _ => {
                failures = failures.saturating_add(1);
                crate::retry::reconnect_delay(failures)
            }
        };
        next_read = (Instant::now() + pause.min(crew.parts.max_pause)).min(deadline);
    }
}

/// What one look at a job found.
enum Read {
    /// The job's final answers, one per row.
    Final(Vec<Verdict>),
    /// The job still runs; its batches as listed.
    Running(BulkBatches),
}

/// One look at a job: its batches, and when they do not make the results final, the job's own
/// status (and the batches again once it is complete).
async fn read_once(crew: &Crew, job_id: &str, refs: &[String]) -> Result<Read, ApiError> {
    let client = &crew.parts.client;
    let control = &crew.parts.control;
    let batches = client.bulk_batches(job_id).await;
    control.observe(&batches);
    let batches = batches?;
    if let Some(verdicts) = judge(refs, &batches, false) {
        return Ok(Read::Final(verdicts));
    }
    if batches
        .batches
        .iter()
        .any(|batch| *batch != BatchStatus::Complete)
    {
        // A batch listed as still queued or scheduled: the job is not complete, no need to ask.
        return Ok(Read::Running(batches));
    }
    let job = client.bulk_job(job_id).await;
    control.observe(&job);
    if !job?.is_complete() {
        return Ok(Read::Running(batches));
    }
    crew.parts.ledger.stats().add_bulk_poll();
    let batches = client.bulk_batches(job_id).await;
    control.observe(&batches);
    match judge(refs, &batches?, true) {
        Some(verdicts) => Ok(Read::Final(verdicts)),
        None => Err(ApiError::Protocol {
            status: 200,
            detail: format!("bulk job {job_id} is complete but its results are not final"),
        }),
    }
}

/// Past `--max-job-wait`: the rows a complete batch answered for sure (created, or an item
/// error known not stored) are decided by that answer; every other row of the job ends
/// `outcome_unknown`, since the job may still be running.
fn outlasted(
    job_id: &str,
    refs: &[String],
    last: Option<&BulkBatches>,
    waiting: Vec<Waiting>,
    why: &str,
) {
    let verdicts = last
        .and_then(|batches| judge(refs, batches, true))
        .unwrap_or_default();
    let mut verdicts = verdicts.into_iter();
    for Waiting { reply, .. } in waiting {
        let outcome = verdicts
            .next()
            .and_then(|verdict| decided(job_id, verdict).ok())
            .unwrap_or_else(|| BulkOutcome::Outlasted(why.to_string()));
        let _ = reply.send(outcome);
    }
}

/// What a job's results say about one row it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Created(String),
    Failed {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Nothing trustworthy about the row (see [`judge`]): it may have been stored.
    Unknown(String),
}

/// The job's answers for the rows sent under `refs` (in that order), or None while they are not
/// final: final when the job says `complete`, or when every ref sent has a result and none of
/// them is in doubt. A ref listed twice with different answers is in doubt; a ref never sent
/// (or an item whose ref cannot be read) puts every answer of the job in doubt; a 5xx or an
/// unreadable item is in doubt; so is a ref missing from a complete job. What is in doubt is an
/// unknown outcome, decided only once the job is complete.
pub(super) fn judge(
    refs: &[String],
    batches: &BulkBatches,
    job_complete: bool,
) -> Option<Vec<Verdict>> {
    let sent: HashSet<&str> = refs.iter().map(String::as_str).collect();
    let mut answers: HashMap<&str, Vec<&ItemOutcome>> = HashMap::new();
    let mut stranger: Option<String> = None;
    for BulkResultItem {
        client_ref,
        outcome,
    } in &batches.items
    {
        match client_ref.as_deref() {
            Some(reference) if sent.contains(reference) => {
                answers.entry(reference).or_default().push(outcome);
            }
            Some(reference) => {
                stranger.get_or_insert_with(|| {
                    format!("its results list a _clientRef this run never sent ({reference:?})")
                });
            }
            None => {
                stranger.get_or_insert_with(|| {
                    "its results list an item without a readable _clientRef".to_string()
                });
            }
        }
    }
    let verdicts: Vec<Verdict> = refs
        .iter()
        .map(|reference| {
            if let Some(why) = &stranger {
                return Verdict::Unknown(why.clone());
            }
            let Some(listed) = answers.get(reference.as_str()) else {
                return Verdict::Unknown("missing from the results of the complete job".into());
            };
            if listed.iter().any(|outcome| *outcome != listed[0]) {
                return Verdict::Unknown(
                    "listed more than once in the results, with different answers".into(),
                );
            }
            match listed[0] {
                ItemOutcome::Created { object_id } => Verdict::Created(object_id.clone()),
                ItemOutcome::Failed {
                    status,
                    code,
                    message,
                } if item_error_remedy(*status).is_some() => Verdict::Failed {
                    status: *status,
                    code: code.clone(),
                    message: message.clone(),
                },
                ItemOutcome::Failed {
                    status, message, ..
                } => Verdict::Unknown(format!(
                    "its item answered error {status} ({message}), which may follow a write"
                )),
                ItemOutcome::Unreadable { why } => {
                    Verdict::Unknown(format!("its result could not be read ({why})"))
                }
            }
        })
        .collect();
    let every_ref_answered = refs
        .iter()
        .all(|reference| answers.contains_key(reference.as_str()));
    let in_doubt = verdicts
        .iter()
        .any(|verdict| matches!(verdict, Verdict::Unknown(_)));
    (job_complete || (every_ref_answered && !in_doubt)).then_some(verdicts)
}

/// Answers each waiting row from the job's final verdicts.
fn deliver(crew: &Crew, job_id: &str, verdicts: Vec<Verdict>, waiting: Vec<Waiting>) {
    // The job is complete (or answered every row): a lookup after the settle delay is conclusive.
    let settle = crew.settle.wait(Writing::Request);
    for (Waiting { reply, .. }, verdict) in waiting.into_iter().zip(verdicts) {
        let outcome = decided(job_id, verdict).unwrap_or_else(|why| {
            BulkOutcome::Unknown(format!("bulk job {job_id}: {why}"), settle)
        });
        let _ = reply.send(outcome);
    }
}

/// A verdict that decides its row: created, or an item error known not stored. `Err` says why
/// the row's outcome is unknown.
fn decided(job_id: &str, verdict: Verdict) -> Result<BulkOutcome, String> {
    match verdict {
        Verdict::Created(message_id) => Ok(BulkOutcome::Created {
            message_id,
            job_id: job_id.to_string(),
        }),
        Verdict::Failed {
            status,
            code,
            message,
        } => Ok(BulkOutcome::ItemFailed(
            ApiError::Http {
                status,
                code,
                message,
                rate: crate::client::RateInfo::default(),
            },
            item_error_remedy(status).unwrap_or(Remedy::FailRow),
        )),
        Verdict::Unknown(why) => Err(why),
    }
}
