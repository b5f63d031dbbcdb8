//! The send phase: every conversation's rows go out one at a time in (sentAt, line) order, many
//! conversations at once, each row's fate recorded through the checkpoint writer.
//!
//! The engine knows no screen and no flags: the command builds [`SendOptions`], reads
//! [`SendStats`] and prints the [`SendEvent`]s it is given.
//!
//! - `options`: [`SendOptions`], [`SendMode`], [`ErrorBudget`] and the defaults.
//! - `worker`: a worker's loop over lanes, and one lane driven row after row.
//! - `lanes`: which conversation a worker takes next; where a waiting conversation parks.
//! - `row`: one row through create, early lookup, settle, lookup, resend (or, for an externalId
//!   found only in another conversation, a read of the row's own conversation), by the one
//!   classification in [`crate::retry`].
//! - `transport`: how a head row reaches the API (`single` creates or `bulk` jobs), answering
//!   one outcome type; the mode is matched once, where the transport is built.
//! - `outcome`: what a lookup answer means for the row, and the results recorded (their codes
//!   are the checkpoint's, [`crate::checkpoint::codes`]).
//! - `route`: whether a 404 from the lookup route may be believed, and its proof.
//! - `guard`: the re-import guard before a new job's first row.
//! - `preflight`: the key, its roles and the API's reachability before anything is sent.
//! - `control` (stop, halt, connectivity, events), `ledger` (writer, stats, error budget),
//!   `stats` ([`SendStats`]) and `events` ([`SendEvent`]): the parts every task shares.
//!
//! Invariants that make a run safe to kill at any moment:
//! - a row is durably `sending` before its request leaves, so a crash leaves evidence;
//! - nothing that may have been stored is sent again before a lookup, made after the settle
//!   delay, has said it was not; and a 404 says so only on a proven route;
//! - a conversation stops at a row that failed for a reason a retry can fix, so a later
//!   `resume --retry-failed` cannot put an older message after newer ones;
//! - the first created message whose createdAt/createdBy came back different from what was sent
//!   stops the run, before more history is written under the wrong author or time.

mod control;
mod events;
mod guard;
mod lanes;
mod ledger;
mod options;
mod outcome;
mod preflight;
mod route;
mod row;
mod stats;
mod transport;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::client::{ApiClient, ApiError};

pub use crate::checkpoint::codes::{
    CONVERSATION_NOT_FOUND, EXTERNAL_ID_ELSEWHERE, FOUND_EXISTING, OUTCOME_UNKNOWN,
};
pub use events::{Events, SendEvent};
pub use guard::{sample_size as reimport_guard_sample_size, Existing};
pub use options::{
    ErrorBudget, SendMode, SendOptions, DEFAULT_EARLY_LOOKUP, DEFAULT_MAX_JOB_WAIT,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SETTLE_DELAY, DEFAULT_SHUTDOWN_GRACE,
};
pub use preflight::CONVERSATION_READ_ROLES;
pub use preflight::{preflight, Preflight};
pub use route::KnownMessage;
pub use stats::SendStats;

use control::{Control, Halt};
use lanes::{LaneBoard, RouteView};
use ledger::Ledger;
use route::RouteProof;
use transport::Transport;

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

/// What every task of the send phase shares, by purpose.
struct Shared {
    options: SendOptions,
    /// Lookups (the transport holds its own handle for creates and jobs).
    client: Arc<ApiClient>,
    /// Stop, halt, connectivity, events.
    control: Arc<Control>,
    /// Writer, stats, error budget.
    ledger: Arc<Ledger>,
    /// Whether a lookup's 404 may be believed, and the proof under way.
    route: RouteProof,
    board: Arc<LaneBoard>,
    transport: Transport,
}

impl Shared {
    fn stats(&self) -> &SendStats {
        self.ledger.stats()
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
            let task = tokio::spawn(async move { route::prove(&shared, known).await });
            self.route.keep_proof(task);
        }
    }
}

/// Sends every pending row of the checkpoint's job. Returns why it stopped; the checkpoint holds
/// every row's fate, flushed before this returns. Warnings go to `events` as they happen.
pub async fn send_all(
    options: &SendOptions,
    client: Arc<ApiClient>,
    stats: Arc<SendStats>,
    interrupt: CancellationToken,
    events: Events,
) -> Result<SendStop, SendError> {
    let mut checkpoint = Checkpoint::open_existing(&options.checkpoint)?;
    // Rows whose outcome stayed unknown in an earlier run are looked up again, never resent blind.
    checkpoint.reopen_unknown_outcomes(OUTCOME_UNKNOWN)?;
    let mut conversations = checkpoint.conversations_with_work()?;
    let known = checkpoint.known_created_message()?;
    let never_sent = !checkpoint.anything_sent()?;
    let control = Arc::new(Control::new(&interrupt, events));
    let ledger = Arc::new(Ledger::new(
        checkpoint.writer()?,
        stats,
        options.max_failed_rows,
        Arc::clone(&control),
    ));
    let parts = transport::Parts {
        client: Arc::clone(&client),
        ledger: Arc::clone(&ledger),
        control: Arc::clone(&control),
        settle_delay: options.settle_delay,
        verify_audit_fields: options.verify_audit_fields,
        unreachable_after: options.unreachable_after,
        max_pause: options.max_pause,
        max_job_wait: options.mode.max_job_wait(),
    };
    let transport = Transport::build(
        options.mode,
        options.rpm,
        parts,
        &checkpoint,
        &mut conversations,
    )?;
    let workers = transport
        .lanes(options.workers)
        .max(1)
        .min(conversations.len().max(1));
    let guard_sample = if options.reimport_guard && never_sent && !options.skip_existing {
        guard::sample(&checkpoint, &conversations, options.mode)?
    } else {
        Vec::new()
    };
    drop(checkpoint);
    let board = Arc::new(LaneBoard::new(conversations));
    transport.start(Arc::clone(&board));
    let shared = Arc::new(Shared {
        options: options.clone(),
        client,
        control,
        ledger,
        route: RouteProof::default(),
        board,
        transport,
    });

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
    let readers = Arc::new(worker::Readers::new(options.checkpoint.clone()));
    for _ in 0..workers {
        let shared = Arc::clone(&shared);
        let readers = Arc::clone(&readers);
        tasks.spawn(async move { worker::work(&shared, &readers).await });
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
                    shared.control.stop().cancel();
                }
                Some(Err(join_error)) if join_error.is_cancelled() => {}
                Some(Err(join_error)) => {
                    let detail = match join_error.try_into_panic() {
                        Ok(panic) => panic_text(panic.as_ref()),
                        Err(other) => other.to_string(),
                    };
                    worker_failure.get_or_insert(detail);
                    shared.control.stop().cancel();
                }
            },
            () = shared.control.stop().cancelled(), if grace_deadline.is_none() => {
                shared.client.stop_admitting();
                grace_deadline = Some(tokio::time::Instant::now() + options.shutdown_grace);
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
    // Neither has durable effects left to make: a job's rows are `sending` with their ids.
    shared.route.end_proof().await;
    shared.transport.shutdown().await;
    let outlived = || SendError::Worker("a task outlived the send phase".into());
    let Shared {
        control,
        ledger,
        transport,
        ..
    } = Arc::try_unwrap(shared).map_err(|_| outlived())?;
    drop(transport);
    let halt = control.take_halt();
    let closed = Arc::try_unwrap(ledger).map_err(|_| outlived())?.close();
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
