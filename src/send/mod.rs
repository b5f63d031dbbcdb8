//! The send phase: every conversation's rows go out one at a time in (sentAt, line) order, many
//! conversations at once, each row's fate recorded through the checkpoint writer.
//!
//! - `lanes`: which conversation a worker takes next; where a waiting conversation parks.
//! - `row`: one row through create, settle, lookup, resend, by the one classification in
//!   [`crate::retry`].
//! - `outcome`: what an answer means for the row, and the results recorded.
//! - `route`: whether a 404 from the lookup route may be believed.
//! - `guard`: the re-import guard before a new job's first row.
//! - `preflight`: the key, its roles and the API's reachability before anything is sent.
//!
//! Invariants that make a run safe to kill at any moment:
//! - a row is durably `sending` before its request leaves, so a crash leaves evidence;
//! - nothing that may have been stored is sent again before a lookup, made after the settle
//!   delay, has said it was not; and a 404 says so only on a proven route;
//! - a conversation stops at a row that failed for a reason a retry can fix, so a later
//!   `resume --retry-failed` cannot put an older message after newer ones;
//! - the first created message whose createdAt/createdBy came back different from what was sent
//!   stops the run, before more history is written under the wrong author or time.

mod bulk;
mod guard;
mod lanes;
mod outcome;
mod preflight;
mod route;
mod row;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError, RowResult, RowState, WriterHandle};
use crate::client::{ApiClient, ApiError, LookupAnswer};
use crate::progress::SendCounters;
use crate::retry::{RequestKind, RetryAction, RetryPolicy};

pub use guard::Existing;
pub use outcome::{CONVERSATION_NOT_FOUND, EXTERNAL_ID_ELSEWHERE, FOUND_EXISTING, OUTCOME_UNKNOWN};
pub use preflight::{preflight, Preflight};
pub use route::KnownMessage;

use lanes::{Lane, LaneBoard, Next, RouteView};
use row::{HeadProgress, RowEnd};

/// How to run the send phase.
#[derive(Debug, Clone)]
pub struct SendPlan {
    pub checkpoint: PathBuf,
    /// Conversations worked on at once.
    pub workers: usize,
    pub retry: RetryPolicy,
    /// Failed rows this run may produce before it stops.
    pub max_failed_rows: u64,
    /// Check each created message's createdAt/createdBy against what was sent.
    pub verify_audit_fields: bool,
    /// After an interrupt, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// After an unknown outcome, how long the row's conversation waits before the lookup, so a
    /// slow write has landed before we decide it did not happen.
    pub settle_delay: Duration,
    /// The client's request timeout: a row left `sending` by a crash may have been on the wire
    /// this long.
    pub request_timeout: Duration,
    /// Look every row up before creating it; found rows succeed with `found_existing`.
    pub skip_existing: bool,
    /// Before a job's first row is ever sent, look up a sample to catch a re-import.
    pub reimport_guard: bool,
    /// How long every request may fail to connect before the run stops.
    pub unreachable_after: Duration,
    /// The longest wait a server's `Retry-After` may ask of one row (`--max-pause`).
    pub max_pause: Duration,
    /// Bulk jobs, or one create per message.
    pub mode: crate::config::SendMode,
    /// The requests per minute the job may spend: in bulk mode it decides how many rows of a
    /// deep conversation ride jobs (the rest go as single creates), as `plan` models it.
    pub rpm: u32,
}

impl SendPlan {
    /// `run`'s defaults for a checkpoint and a number of workers (the benchmark's runs).
    pub fn standard(checkpoint: PathBuf, workers: usize) -> SendPlan {
        SendPlan {
            checkpoint,
            workers,
            retry: RetryPolicy::default(),
            max_failed_rows: u64::MAX,
            verify_audit_fields: true,
            shutdown_grace: Duration::from_secs(5),
            settle_delay: crate::config::DEFAULT_SETTLE_DELAY,
            request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
            skip_existing: false,
            reimport_guard: true,
            unreachable_after: RetryPolicy::default().max_total_wait,
            max_pause: crate::throttle::DEFAULT_MAX_PAUSE,
            mode: crate::config::SendMode::Single,
            rpm: u32::MAX / 2,
        }
    }
}

/// Why the send phase ended.
#[derive(Debug)]
pub enum SendStop {
    /// Every conversation was worked through (some rows may have failed or be held).
    Completed,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The API refused the key or its roles, or redirected; nothing more was sent.
    ApiFatal(ApiError),
    /// The checkpoint could not be written; nothing more was sent.
    Storage(CheckpointError),
    /// The preflight check refused to start (e.g. audit fields with a non-admin key).
    Refused(String),
    /// Kustomer replaced the audit fields of a created message.
    AuditOverwritten(String),
    /// More rows failed in this run than `--max-errors` allows.
    ErrorBudget { failed: u64, allowed: u64 },
    /// The lookup route could not be shown to find a message known to exist, and some row's
    /// fate depends on believing its "not found".
    LookupRouteUnproven(String),
    /// The API could not be reached (before sending, or for too long during the run).
    Unreachable(String),
    /// The re-import guard found sampled rows already in Kustomer, in their own conversations.
    AlreadyImported(Vec<Existing>),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("internal error: a send worker failed unexpectedly ({0}); this is a bug. Every row's state is in the checkpoint: `resume` continues safely")]
    Worker(String),
}

/// Why the run was stopped from inside.
enum Halt {
    Api(ApiError),
    AuditOverwritten(String),
    ErrorBudget { failed: u64, allowed: u64 },
    RouteUnproven(String),
    Unreachable(String),
}

/// Tracks whether the API answers at all: a streak of connections that never opened, longer than
/// allowed, stops the run instead of failing rows one by one.
#[derive(Default)]
struct Connectivity {
    down_since: Mutex<Option<Instant>>,
}

impl Connectivity {
    fn observe<T>(&self, result: &Result<T, ApiError>) {
        let Ok(mut down_since) = self.down_since.lock() else {
            return;
        };
        match result {
            Err(ApiError::Connect { .. }) => {
                down_since.get_or_insert_with(Instant::now);
            }
            Err(ApiError::NotSent) => {}
            _ => *down_since = None,
        }
    }

    /// How long the API has been unreachable, once that is longer than `limit`.
    fn unreachable_for(&self, limit: Duration) -> Option<Duration> {
        let since = (*self.down_since.lock().ok()?)?;
        let down_for = since.elapsed();
        (down_for > limit).then_some(down_for)
    }
}

struct Shared {
    client: Arc<ApiClient>,
    writer: WriterHandle,
    plan: SendPlan,
    failed_rows: AtomicU64,
    stop: CancellationToken,
    halt: Mutex<Option<Halt>>,
    counters: Arc<SendCounters>,
    board: LaneBoard,
    route: route::RouteProof,
    connectivity: Connectivity,
    /// The route's proof, when one runs: it has no durable effect, so it is aborted at the end.
    proof: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bulk jobs (and reading the jobs of an earlier run); its task is ended with the phase.
    batcher: Option<bulk::Batcher>,
    batcher_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// In bulk mode, the most rows of one conversation that ride jobs; deeper conversations send
    /// the rest first as single creates, so they do not stretch the run over hundreds of rounds.
    bulk_rounds: Option<u64>,
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
            if failed > self.plan.max_failed_rows {
                self.halt(Halt::ErrorBudget {
                    failed,
                    allowed: self.plan.max_failed_rows,
                });
            }
        }
        Ok(())
    }

    fn route_view(&self) -> RouteView {
        RouteView {
            proven: self.route.is_proven(),
            proving: self.route.is_proving(),
            broken: self.route.is_broken(),
        }
    }

    fn route_proven(&self) {
        if !self.route.is_proven() {
            self.route.proven();
            self.board.wake();
        }
    }

    /// Starts the route's proof on a message known to exist, unless proven or under way.
    fn prove_route_with(self: &Arc<Self>, known: KnownMessage) {
        if self.route.begin() {
            let shared = Arc::clone(self);
            let task = tokio::spawn(async move { prove_route(&shared, known).await });
            if let Ok(mut proof) = self.proof.lock() {
                *proof = Some(task);
            }
        }
    }
}

/// How many times the proof looks the known message up before calling the route broken, and
/// the wait between tries (an index may lag a fresh write).
const PROOF_TRIES: u32 = 3;

/// Looks a message known to exist up by its externalId: it must come back, with the same id.
async fn prove_route(shared: &Shared, known: KnownMessage) {
    let mut misses = 0;
    let mut errors = 0u32;
    let verdict = loop {
        if shared.stop.is_cancelled() {
            break None;
        }
        shared.counters.add_lookup();
        let answer = shared.client.find_by_external_id(&known.external_id).await;
        shared.connectivity.observe(&answer);
        match answer {
            Ok(LookupAnswer::Found(found))
                if found.iter().any(|message| message.id == known.message_id) =>
            {
                break Some(Ok(()));
            }
            Ok(_) => {
                misses += 1;
                if misses >= PROOF_TRIES {
                    break Some(Err(format!(
                        "the lookup route does not work here: GET /v1/messages/externalId=… (and \
                         externalid=…) did not find message {} (line {}, externalId {:?}), which \
                         this job created, after {PROOF_TRIES} tries. Without a working lookup an \
                         unknown outcome cannot be settled, so nothing more was sent; every row \
                         is resumable. Check the key's org.permission.message.read role and the \
                         base URL, then `resume`",
                        known.message_id, known.line, known.external_id
                    )));
                }
            }
            Err(err) => match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => {
                    shared.halt(Halt::Api(err));
                    break None;
                }
                RetryAction::RateLimited | RetryAction::NeverSent => {}
                _ => {
                    errors += 1;
                    if errors >= shared.plan.retry.max_attempts {
                        break None;
                    }
                }
            },
        }
        let pause = shared.plan.settle_delay.min(Duration::from_secs(10));
        tokio::select! {
            () = tokio::time::sleep(pause.max(Duration::from_millis(100))) => {}
            () = shared.stop.cancelled() => {}
        }
    };
    match verdict {
        Some(Ok(())) => shared.route.proven(),
        Some(Err(reason)) => {
            shared.route.broken();
            if !shared.route.is_proven() {
                shared.halt(Halt::RouteUnproven(reason));
            }
        }
        None => shared.route.abandon(),
    }
    shared.board.wake();
}

/// Sends every pending row of the checkpoint's job. Returns why it stopped; the checkpoint holds
/// every row's fate, flushed before this returns.
pub async fn send_all(
    plan: &SendPlan,
    client: Arc<ApiClient>,
    counters: Arc<SendCounters>,
    interrupt: CancellationToken,
) -> Result<SendStop, SendError> {
    let mut checkpoint = Checkpoint::open_existing(&plan.checkpoint)?;
    // Rows whose outcome stayed unknown in an earlier run are looked up again, never resent blind.
    checkpoint.reopen_unknown_outcomes(OUTCOME_UNKNOWN)?;
    let mut conversations = checkpoint.conversations_with_work()?;
    if let crate::config::SendMode::Bulk { .. } = plan.mode {
        // Deepest first: a deep conversation that starts late ends alone, in thin jobs; started
        // first, its rows ride the full jobs of the shallow ones (what the lower bound counts).
        let depths: std::collections::HashMap<String, u64> = checkpoint
            .depths_to_send()?
            .into_iter()
            .map(|depth| (depth.conversation_id, depth.rows))
            .collect();
        conversations.sort_by_key(|id| std::cmp::Reverse(depths.get(id).copied().unwrap_or(0)));
    }
    let known = checkpoint.known_created_message()?;
    let never_sent = !checkpoint.anything_sent()?;
    let writer = checkpoint.writer()?;

    let bulk_rounds = match plan.mode {
        crate::config::SendMode::Bulk {
            batch_size,
            job_seconds,
        } => {
            // The rule `plan` models, so that its estimate is what the run does.
            let workload = crate::plan::Workload::of_checkpoint(&checkpoint)?;
            let estimate = crate::plan::plan(
                &workload,
                crate::plan::PlanInputs {
                    rpm: plan.rpm,
                    batch: batch_size as u64,
                    job_seconds,
                },
            );
            Some(estimate.bulk.critical_path_rounds)
        }
        crate::config::SendMode::Single => None,
    };
    // In bulk mode, one job's worth of lanes, deepest first: every round then carries the deep
    // conversations' next rows together with shallow ones, which is the packing the lower bound
    // counts. More lanes would use up the shallow conversations early and leave the deep ones
    // to end alone in thin jobs: fewer rounds, more requests.
    let lanes = match plan.mode {
        crate::config::SendMode::Bulk { batch_size, .. } => batch_size,
        crate::config::SendMode::Single => plan.workers,
    };
    let workers = lanes.max(1).min(conversations.len().max(1));
    let guard_sample = if plan.reimport_guard && never_sent && !plan.skip_existing {
        guard::sample(&checkpoint, &conversations)?
    } else {
        Vec::new()
    };
    drop(checkpoint);
    let (batcher, inbox) = bulk::Batcher::new();
    let shared = Arc::new(Shared {
        client,
        writer,
        plan: plan.clone(),
        failed_rows: AtomicU64::new(0),
        stop: interrupt.child_token(),
        halt: Mutex::new(None),
        counters,
        board: LaneBoard::new(conversations),
        route: route::RouteProof::default(),
        connectivity: Connectivity::default(),
        proof: Mutex::new(None),
        batcher: Some(batcher),
        batcher_task: Mutex::new(None),
        bulk_rounds,
    });
    let batch_size = match plan.mode {
        crate::config::SendMode::Bulk { batch_size, .. } => batch_size,
        crate::config::SendMode::Single => 1,
    };
    let task = bulk::Batcher::start(&shared, inbox, batch_size);
    if let Ok(mut slot) = shared.batcher_task.lock() {
        *slot = Some(task);
    }

    if !guard_sample.is_empty() {
        match guard::check(&shared, &guard_sample).await {
            guard::GuardVerdict::Clear => {}
            guard::GuardVerdict::Found(existing) => {
                return finish(shared, Ok(SendStop::AlreadyImported(existing))).await;
            }
            guard::GuardVerdict::Stopped => return finish(shared, Ok(SendStop::Interrupted)).await,
        }
    }
    if let Some(known) = known {
        shared.prove_route_with(known);
    }

    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let shared = Arc::clone(&shared);
        let path = plan.checkpoint.clone();
        tasks.spawn(async move {
            let mut reader = Checkpoint::open_read_only(&path)?;
            work(&shared, &mut reader).await
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
                    let detail = match join_error.try_into_panic() {
                        Ok(panic) => panic_text(panic.as_ref()),
                        Err(other) => other.to_string(),
                    };
                    worker_failure.get_or_insert(detail);
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
    let outcome = match (worker_failure, storage_failure) {
        (Some(detail), _) => Err(SendError::Worker(detail)),
        (None, Some(err)) => Ok(SendStop::Storage(err)),
        (None, None) => Ok(SendStop::Completed),
    };
    let interrupted = interrupt.is_cancelled();
    finish(shared, outcome).await.map(|stop| match stop {
        SendStop::Completed if interrupted => SendStop::Interrupted,
        other => other,
    })
}

/// Closes the writer (every result durable, or the error says not) and says why the phase ended.
async fn finish(
    shared: Arc<Shared>,
    outcome: Result<SendStop, SendError>,
) -> Result<SendStop, SendError> {
    let background = [&shared.proof, &shared.batcher_task]
        .map(|task| task.lock().ok().and_then(|mut task| task.take()));
    for task in background.into_iter().flatten() {
        // Neither has durable effects left to make: a job's rows are `sending` with their ids.
        task.abort();
        let _ = task.await;
    }
    let shared = Arc::try_unwrap(shared)
        .map_err(|_| SendError::Worker("a task outlived the send phase".into()))?;
    let halt = shared.halt.into_inner().ok().flatten();
    let closed = shared.writer.close();
    let stop = outcome?;
    if let SendStop::Storage(_) = stop {
        return Ok(stop);
    }
    if let Err(err) = closed {
        return Ok(SendStop::Storage(err));
    }
    Ok(match (halt, stop) {
        (_, stop @ SendStop::AlreadyImported(_)) => stop,
        (Some(Halt::Api(err)), _) => SendStop::ApiFatal(err),
        (Some(Halt::AuditOverwritten(detail)), _) => SendStop::AuditOverwritten(detail),
        (Some(Halt::ErrorBudget { failed, allowed }), _) => {
            SendStop::ErrorBudget { failed, allowed }
        }
        (Some(Halt::RouteUnproven(reason)), _) => SendStop::LookupRouteUnproven(reason),
        (Some(Halt::Unreachable(reason)), _) => SendStop::Unreachable(reason),
        (None, stop) => stop,
    })
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a worker panicked".into())
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One worker: takes lanes from the board until none is left.
// `&mut` rather than `&`: a connection may move between threads but not be shared by them.
async fn work(shared: &Arc<Shared>, reader: &mut Checkpoint) -> Result<(), CheckpointError> {
    loop {
        let lane = match shared
            .board
            .next(|| shared.route_view(), &shared.stop)
            .await
        {
            Next::Done => return Ok(()),
            Next::RouteDeadlock => {
                let mut reason = String::from(
                    "every remaining row waits on a lookup by externalId that answered 404, and \
                     the lookup route has not been proven: no message of this job is known to \
                     exist to prove it on, so a 404 cannot be told from a missing route. Nothing \
                     more was sent; every row is resumable. Check the key's \
                     org.permission.message.read role and the base URL (`kustomer-import check`), \
                     then `resume`",
                );
                if shared.plan.skip_existing {
                    reason.push_str(
                        ". With --skip-existing every row is looked up before it is sent; if none \
                         of them can exist yet, resume with --skip-existing=false",
                    );
                }
                shared.halt(Halt::RouteUnproven(reason));
                return Ok(());
            }
            Next::Lane(lane) => *lane,
            Next::Fresh(conversation_id) => {
                let queue = reader.conversation_queue(&conversation_id)?;
                Lane::new(conversation_id, queue)
            }
        };
        // Every lane handed out goes back exactly once: finished, parked or waiting.
        let failure = match drive_lane(shared, reader, lane).await {
            Ok(LaneEnd::Done) => {
                shared.board.finished();
                None
            }
            Ok(LaneEnd::Park(lane, until)) => {
                shared.board.park(lane, until);
                None
            }
            Ok(LaneEnd::AwaitRoute(lane)) => {
                shared.board.await_route(lane);
                None
            }
            Err(err) => {
                shared.board.finished();
                Some(err)
            }
        };
        let (settling, awaiting_route) = shared.board.waiting();
        shared.counters.set_waiting(settling, awaiting_route);
        if let Some(err) = failure {
            return Err(err);
        }
    }
}

enum LaneEnd {
    Done,
    Park(Lane, tokio::time::Instant),
    AwaitRoute(Lane),
}

async fn drive_lane(
    shared: &Arc<Shared>,
    reader: &mut Checkpoint,
    mut lane: Lane,
) -> Result<LaneEnd, CheckpointError> {
    while let Some(row) = lane.queue.front() {
        if shared.stop.is_cancelled() {
            return Ok(LaneEnd::Done);
        }
        match row.state {
            RowState::Pending | RowState::Sending => {}
            // A failure that a retry can fix holds the rest of the conversation, so that
            // retrying it later keeps chronological order.
            RowState::Failed if row.retryable => {
                hold_rest(shared, &lane);
                return Ok(LaneEnd::Done);
            }
            _ => {
                lane.queue.pop_front();
                continue;
            }
        }
        if let Some((line, reason)) = &lane.missing {
            if row.state == RowState::Pending {
                let message = format!(
                    "not sent: the conversation was not found when line {line} was sent ({reason})"
                );
                shared.record(
                    row.line,
                    outcome::failed(CONVERSATION_NOT_FOUND, message, false),
                )?;
                lane.queue.pop_front();
                continue;
            }
        }
        #[cfg(debug_assertions)]
        panic_for_tests(row.line);
        let row = row.clone();
        let body = reader.body(row.line)?;
        let mut progress = match lane.head.take() {
            Some(progress) if progress.line() == row.line => progress,
            _ => HeadProgress::new(shared, &row),
        };
        // A conversation deeper than the bulk rounds sends its first rows alone, so that it
        // ends with the rest instead of stretching the run over hundreds of rounds.
        progress.bulk = shared.bulk_rounds.is_some_and(|rounds| {
            let remaining = lane
                .queue
                .iter()
                .filter(|row| matches!(row.state, RowState::Pending | RowState::Sending))
                .count();
            remaining as u64 <= rounds
        });
        match row::advance(shared, &lane.conversation_id, &row, &body, &mut progress).await? {
            RowEnd::Finished => {
                lane.queue.pop_front();
            }
            RowEnd::ConversationMissing { reason } => {
                lane.queue.pop_front();
                lane.missing = Some((row.line, reason));
            }
            RowEnd::Hold => {
                hold_rest(shared, &lane);
                return Ok(LaneEnd::Done);
            }
            RowEnd::Park(until) => {
                lane.head = Some(progress);
                return Ok(LaneEnd::Park(lane, until));
            }
            RowEnd::AwaitRoute => {
                lane.head = Some(progress);
                return Ok(LaneEnd::AwaitRoute(lane));
            }
            RowEnd::Stopped => return Ok(LaneEnd::Done),
        }
    }
    Ok(LaneEnd::Done)
}

/// Counts the rows waiting behind the lane's head for the progress display.
fn hold_rest(shared: &Shared, lane: &Lane) {
    let held = lane
        .queue
        .iter()
        .skip(1)
        .filter(|row| matches!(row.state, RowState::Pending | RowState::Sending))
        .count();
    shared.counters.add_held(held as u64);
}

/// Test builds only: `KUSTOMER_IMPORT_TEST_PANIC_AT_LINE=N` panics the worker that reaches line
/// N, so the tests can prove a panic is an internal error (exit 70) that leaves rows resumable.
#[cfg(debug_assertions)]
fn panic_for_tests(line: u64) {
    if std::env::var("KUSTOMER_IMPORT_TEST_PANIC_AT_LINE").ok() == Some(line.to_string()) {
        panic!("test panic at line {line}");
    }
}
