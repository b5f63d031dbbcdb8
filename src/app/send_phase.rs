//! The send phase: the key checked, the budget chosen, source tickets resolved, the rows sent
//! with their warnings and pacing figures recorded as they come, then the summary.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{Checkpoint, Job};
use crate::client::ApiClient;
use crate::config::{ApiConfig, ConcurrencyChoice, SendConfig};
use crate::exit_codes::ExitCode;
use crate::progress::{Display, ProgressView};
use crate::send::{self, preflight, Events, SendOptions, SendStats, SendStop};
use crate::throttle::{
    self, ConcurrencyLimit, PacingSnapshot, RateBudget, Throttle, NO_RATE_HEADERS_NOTE,
};

use super::signals::Interrupt;
use super::summary::{exit_for, print_summary, Hints};
use super::AppError;

/// Sends what the checkpoint has pending and prints the final summary; `next_steps` says whether
/// the commands to go further are worth printing (not for a checkpoint about to be deleted).
pub async fn send_and_summarise(
    db: &Path,
    api: &ApiConfig,
    job: &Job,
    send: &SendConfig,
    interrupt: &Interrupt,
    next_steps: bool,
) -> Result<ExitCode, AppError> {
    let started = Instant::now();
    let before = Checkpoint::open_existing(db)?.counts()?;
    let unthrottled = ApiClient::new(api.client_config(send.request_timeout), None)?;
    let (stop, throttle) = match preflight(&unthrottled, job, send.mode.is_bulk()).await {
        Err(stop) => (stop, None),
        Ok(preflight) => {
            for warning in &preflight.warnings {
                eprintln!("{warning}");
            }
            let (rpm, source) =
                throttle::choose_budget(send.max_rpm, send.budget_share, preflight.org_limit);
            if send.display != Display::Quiet {
                eprintln!(
                    "{}; concurrency {}; under it the import adapts to the org's other clients, \
                     keeping {} free for them (--reserve)",
                    source.describe(rpm),
                    send.concurrency.describe(),
                    send.reserve.describe()
                );
            }
            let concurrency = match send.concurrency {
                ConcurrencyChoice::Auto { ceiling } => ConcurrencyLimit::adaptive(ceiling),
                ConcurrencyChoice::Fixed(n) => ConcurrencyLimit::fixed(n),
            };
            let budget = RateBudget::new(rpm)
                .sharing(send.reserve)
                .with_max_pause(send.max_pause);
            let throttle = Arc::new(Throttle::new(budget, concurrency));
            let client = Arc::new(ApiClient::new(
                api.client_config(send.request_timeout),
                Some(Arc::clone(&throttle)),
            )?);
            if let Some(stop) = resolve_tickets(
                db,
                job,
                send,
                preflight.roles.as_deref(),
                &client,
                interrupt,
            )
            .await?
            {
                let finished = Checkpoint::open_existing(db)?;
                let after = finished.counts()?;
                drop(finished);
                return Ok(exit_for(&stop, &after, db));
            }
            let resolved = Checkpoint::open_existing(db)?.counts()?;
            let to_send = resolved.pending + resolved.sending;
            let stats = SendStats::with_total(to_send);
            let view =
                ProgressView::sending(Arc::clone(&stats), Arc::clone(&throttle), send.display);
            let options = SendOptions {
                checkpoint: db.to_path_buf(),
                workers: send.concurrency.workers(),
                retry: send.retry,
                max_failed_rows: send.max_errors.allowed(to_send),
                verify_audit_fields: job.audit_fields,
                shutdown_grace: send::DEFAULT_SHUTDOWN_GRACE,
                settle_delay: send.settle_delay,
                early_lookup: send.early_lookup,
                reads_conversations: preflight.reads_conversations,
                request_timeout: send.request_timeout,
                skip_existing: send.skip_existing,
                reimport_guard: true,
                unreachable_after: send.retry.max_total_wait,
                max_pause: send.max_pause,
                mode: send.mode,
                rpm,
            };
            let recorder = PacingRecorder::start(db, Arc::clone(&throttle));
            let (events, printer) = print_send_events();
            let stop = send::send_all(
                &options,
                client,
                Arc::clone(&stats),
                interrupt.token.clone(),
                events,
            )
            .await?;
            // Every warning said before the summary (the phase has dropped its end by now).
            let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
            view.finish().await;
            recorder.finish().await;
            (stop, Some((throttle, stats)))
        }
    };
    let finished = Checkpoint::open_existing(db)?;
    let after = finished.counts()?;
    let retryable_failed = finished.retryable_failed_count()?;
    drop(finished);
    print_summary(
        &before,
        &after,
        started.elapsed(),
        throttle.as_ref(),
        next_steps.then_some(Hints {
            db,
            retryable_failed,
        }),
    );
    Ok(exit_for(&stop, &after, db))
}

/// How often the resolve phase says how far it is.
const RESOLVE_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The resolve phase, when the job's rows name source tickets: the key's roles are checked
/// first (exit 3 naming what is missing), then every waiting ticket is found or created. `Some`
/// when the run must stop here.
async fn resolve_tickets(
    db: &Path,
    job: &Job,
    send: &SendConfig,
    roles: Option<&[String]>,
    client: &Arc<ApiClient>,
    interrupt: &Interrupt,
) -> Result<Option<SendStop>, AppError> {
    if !Checkpoint::open_existing(db)?.names_tickets()? {
        return Ok(None);
    }
    let missing = crate::resolve::missing_roles(roles);
    if !missing.is_empty() {
        return Ok(Some(SendStop::Refused(format!(
            "the input names conversations by conversationExternalId, so the importer finds or \
             creates customers and conversations, and the API key lacks {}. Add the role(s) to \
             the key, then: kustomer-import resume --db {}",
            missing.join(", "),
            db.display()
        ))));
    }
    let plan = crate::resolve::ResolvePlan {
        checkpoint: db.to_path_buf(),
        workers: send.concurrency.workers(),
        retry: send.retry,
        settle_delay: send.settle_delay,
        request_timeout: send.request_timeout,
        unreachable_after: send.retry.max_total_wait,
        imported_at: job.imported_at.clone(),
        audit_fields: job.audit_fields,
        bulk_items: match send.mode {
            crate::config::SendMode::Bulk { batch_size, .. } => Some(batch_size),
            crate::config::SendMode::Single => None,
        },
        assumed_job: match send.mode {
            crate::config::SendMode::Bulk { job_seconds, .. } => {
                std::time::Duration::try_from_secs_f64(job_seconds).unwrap_or_default()
            }
            crate::config::SendMode::Single => std::time::Duration::ZERO,
        },
    };
    let counters = Arc::new(crate::resolve::ResolveCounters::default());
    if send.display != Display::Quiet {
        eprintln!("resolving customers and conversations named by source ids");
    }
    // A plain line every few seconds while tickets are resolved (the sending bar comes after).
    let ticker = (send.display != Display::Quiet).then(|| {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RESOLVE_PROGRESS_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                eprintln!("progress: {}", counters.describe());
            }
        })
    });
    let stop = crate::resolve::resolve_all(
        &plan,
        Arc::clone(client),
        Arc::clone(&counters),
        interrupt.token.clone(),
    )
    .await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let stop = stop?;
    if send.display != Display::Quiet {
        eprintln!("{}", counters.describe());
    }
    Ok(match stop {
        SendStop::Completed => None,
        stop => Some(stop),
    })
}

/// Prints the send phase's warnings on stderr as they come; the task ends once the phase has
/// dropped its end.
pub fn print_send_events() -> (Events, tokio::task::JoinHandle<()>) {
    let (events, mut received) = Events::channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = received.recv().await {
            eprintln!("{event}");
        }
    });
    (events, printer)
}

/// How often the running job writes its pacing figures for `status`.
const PACING_RECORD_EVERY: Duration = Duration::from_secs(2);

/// Keeps the checkpoint's pacing row current while the send phase runs, and says once when the
/// API sends no rate-limit headers. Its writes are display data: a failure is logged, never
/// fatal (the rows' own writes decide whether the run can go on).
struct PacingRecorder {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PacingRecorder {
    fn start(db: &Path, throttle: Arc<Throttle>) -> PacingRecorder {
        let stop = tokio_util::sync::CancellationToken::new();
        let db = db.to_path_buf();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let writer = match crate::checkpoint::PacingWriter::open(&db) {
                    Ok(writer) => Some(writer),
                    Err(err) => {
                        tracing::warn!(error = %err, "pacing figures will not reach status");
                        None
                    }
                };
                let mut said_no_headers = false;
                let run_started_ms = crate::checkpoint::now_ms();
                let mut ticker = tokio::time::interval(PACING_RECORD_EVERY);
                loop {
                    let stopping = tokio::select! {
                        _ = ticker.tick() => false,
                        () = stop.cancelled() => true,
                    };
                    let snapshot = PacingSnapshot {
                        run_started_ms: Some(run_started_ms),
                        ..PacingSnapshot::of(&throttle)
                    };
                    // A warning, so said even with --quiet; once.
                    if snapshot.rate_headers_missing && !said_no_headers {
                        said_no_headers = true;
                        eprintln!("warning: {NO_RATE_HEADERS_NOTE}");
                    }
                    if let Some(writer) = &writer {
                        // A short synchronous write on its own connection; rare enough (every
                        // 2 s) not to need the blocking pool.
                        if let Err(err) = writer.write(&snapshot) {
                            tracing::debug!(error = %err, "could not record pacing figures");
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            }
        });
        PacingRecorder { stop, task }
    }

    /// Writes the last figures and stops.
    async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
