//! The batcher's task: gathers the heads the lanes hand over and decides when a job goes
//! ([`next_move`]), then sends each job and follows it to every row's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::now_ms;
use crate::retry::{RequestKind, RetryAction};
use crate::send::lanes::LaneBoard;
use crate::send::transport::{Parts, SettleRule, Writing};

use super::results::{follow_job, read_dead_job, Reading};
use super::timer::{JobTimer, Pace, Seen};
use super::{answer_all, client_ref, BulkOutcome, Waiting, MIN_JOB_ROWS};

/// How long the batcher waits for more heads once none has come in.
const LINGER: Duration = Duration::from_millis(60);
/// How long heads wait for lanes still working (not in a job, not here) before a thin job goes.
const FILL_WAIT: Duration = Duration::from_secs(1);

/// A head row handed to the batcher, until its job goes.
pub(super) struct Queued {
    pub(super) line: u64,
    pub(super) conversation_id: String,
    pub(super) body: String,
    /// Rows its conversation still has to send, this one included.
    pub(super) depth: u64,
    pub(super) reply: oneshot::Sender<BulkOutcome>,
}

pub(super) enum Request {
    Send(Queued),
    /// A row a dead run sent in this job: its result, read once per job.
    Read {
        line: u64,
        job_id: String,
        sent_at_ms: Option<i64>,
        reply: oneshot::Sender<BulkOutcome>,
    },
}

/// What the batcher's task and its jobs work with.
pub(super) struct Crew {
    pub(super) parts: Parts,
    pub(super) settle: SettleRule,
    pub(super) pace: Pace,
    /// How long jobs take, learned as they finish.
    pub(super) timer: Mutex<JobTimer>,
    /// Every unfinished lane: when all of them have their head here or in a job, no other head
    /// can come until a job ends.
    pub(super) board: Arc<LaneBoard>,
}

impl Crew {
    pub(super) fn timer(&self) -> JobTimer {
        self.timer
            .lock()
            .map(|timer| *timer)
            .unwrap_or(JobTimer::new(self.pace.assumed_job()))
    }

    fn learn(&self, seen: Seen) {
        if let Ok(mut timer) = self.timer.lock() {
            timer.observe(seen);
        }
    }

    /// How long the rows of a job whose POST answer was lost wait before their lookups.
    fn lost_post_settle(&self) -> Duration {
        self.settle.wait(Writing::Job {
            slowest: self.timer().slowest,
        })
    }
}

/// What a job task reports when it ends.
struct JobEnd {
    sequence: u64,
    /// None when its results never showed.
    seen: Option<Seen>,
}

/// A job under way, as the batcher counts it.
struct InFlight {
    rows: usize,
    deepest: u64,
}

/// What the batcher knows when it decides whether a job goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gathering {
    pub(super) heads: usize,
    pub(super) batch: usize,
    pub(super) in_flight: usize,
    /// Jobs the budget pays for during one job time.
    pub(super) target: usize,
    /// No head has come in for [`LINGER`].
    pub(super) lingered: bool,
    /// The oldest head has waited [`FILL_WAIT`].
    pub(super) waited: bool,
    /// Some lane is neither here nor in a job: its head may come soon.
    pub(super) more_coming: bool,
    /// The deepest conversation's rounds take longer than the budget needs for every request
    /// left: time is what is short, not requests, so thin jobs may go.
    pub(super) budget_spare: bool,
}

/// What the batcher does next with its heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Move {
    Wait,
    /// A job of the deepest heads, up to a full one.
    Job,
    /// Too few heads for a job and nothing to wait for: they go as single creates.
    Alone,
}

/// When a job goes: when it is full, or when waiting for more heads would cost more time than
/// the budget has to spare; never beyond the jobs the budget pays for.
pub(super) fn next_move(now: Gathering) -> Move {
    if now.heads == 0 || now.in_flight >= now.target {
        return Move::Wait;
    }
    if now.heads >= now.batch {
        return Move::Job;
    }
    if !now.lingered || (now.more_coming && !now.waited) {
        return Move::Wait;
    }
    // A job in flight brings its heads back when it ends: worth waiting for, unless time is
    // what is short.
    let go_now = now.in_flight == 0 || now.budget_spare;
    match (go_now, now.heads >= MIN_JOB_ROWS) {
        (false, _) => Move::Wait,
        (true, true) => Move::Job,
        (true, false) => Move::Alone,
    }
}

pub(super) async fn run(
    crew: Arc<Crew>,
    mut inbox: mpsc::UnboundedReceiver<Request>,
    quit: CancellationToken,
) {
    let mut pending: Vec<Queued> = Vec::new();
    let mut oldest = Instant::now();
    let mut last_arrival = Instant::now();
    let mut jobs: tokio::task::JoinSet<JobEnd> = tokio::task::JoinSet::new();
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut reads: HashMap<String, Vec<Reading>> = HashMap::new();
    let mut sequence = 0u64;
    let batch = crew.pace.batch_size;
    let per_second = f64::from(crew.pace.rpm.max(1)) / 60.0;
    let stop = crew.parts.control.stop().clone();
    loop {
        let armed = !pending.is_empty() || !reads.is_empty();
        let wake = tokio::time::Instant::from_std(
            (last_arrival + LINGER).max(Instant::now() + LINGER / 2),
        );
        tokio::select! {
            request = inbox.recv() => match request {
                None => return,
                Some(Request::Send(queued)) => {
                    if pending.is_empty() {
                        oldest = Instant::now();
                    }
                    pending.push(queued);
                    last_arrival = Instant::now();
                }
                Some(Request::Read { line, job_id, sent_at_ms, reply }) => {
                    reads.entry(job_id).or_default().push(Reading { line, sent_at_ms, reply });
                    last_arrival = Instant::now();
                }
            },
            finished = jobs.join_next(), if !jobs.is_empty() => {
                if let Some(Ok(end)) = finished {
                    in_flight.remove(&end.sequence);
                    if let Some(seen) = end.seen {
                        crew.learn(seen);
                    }
                }
            }
            () = tokio::time::sleep_until(wake), if armed => {}
            () = quit.cancelled() => {
                jobs.shutdown().await;
                return;
            }
            () = stop.cancelled() => {
                for queued in pending.drain(..) {
                    let _ = queued.reply.send(BulkOutcome::Stopped);
                }
                for (_, readers) in reads.drain() {
                    for reading in readers {
                        let _ = reading.reply.send(BulkOutcome::Stopped);
                    }
                }
                // Jobs under way answer their rows Stopped themselves.
                tokio::select! {
                    () = async { while jobs.join_next().await.is_some() {} } => {}
                    () = quit.cancelled() => jobs.shutdown().await,
                }
                return;
            }
        }
        let lingered = last_arrival.elapsed() >= LINGER;
        if lingered {
            // Every row of a dead run's job asks within the linger: the job is read once.
            for (job_id, readers) in reads.drain() {
                sequence += 1;
                let crew = Arc::clone(&crew);
                in_flight.insert(
                    sequence,
                    InFlight {
                        rows: readers.len(),
                        deepest: 0,
                    },
                );
                jobs.spawn(async move {
                    read_dead_job(&crew, job_id, readers).await;
                    JobEnd {
                        sequence,
                        seen: None,
                    }
                });
            }
        }
        loop {
            let timer = crew.timer();
            let rows_in_flight: usize = in_flight.values().map(|job| job.rows).sum();
            let deepest = pending
                .iter()
                .map(|queued| queued.depth)
                .chain(in_flight.values().map(|job| job.deepest))
                .max()
                .unwrap_or(0);
            let stats = crew.parts.ledger.stats();
            let rows_left = stats
                .total
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(stats.done());
            let budget_seconds = rows_left as f64 * 2.0 / batch as f64 / per_second;
            let gathering = Gathering {
                heads: pending.len(),
                batch,
                in_flight: in_flight.len(),
                target: crew.pace.in_flight(timer.expected),
                lingered,
                waited: oldest.elapsed() >= FILL_WAIT,
                more_coming: pending.len() + rows_in_flight < crew.board.unfinished(),
                budget_spare: deepest as f64 * timer.expected.as_secs_f64() >= budget_seconds,
            };
            match next_move(gathering) {
                Move::Wait => break,
                Move::Alone => {
                    for queued in pending.drain(..) {
                        let _ = queued.reply.send(BulkOutcome::Single);
                    }
                }
                Move::Job => {
                    // Deepest remaining first (stable: the earliest heads first on a tie).
                    pending.sort_by_key(|queued| std::cmp::Reverse(queued.depth));
                    let take = pending.len().min(batch);
                    let rows: Vec<Queued> = pending.drain(..take).collect();
                    oldest = Instant::now();
                    sequence += 1;
                    in_flight.insert(
                        sequence,
                        InFlight {
                            rows: rows.len(),
                            deepest: rows.first().map(|queued| queued.depth).unwrap_or(0),
                        },
                    );
                    let local_batch = format!("{}-{sequence}", now_ms());
                    let crew = Arc::clone(&crew);
                    jobs.spawn(async move {
                        let seen = send_job(&crew, local_batch, rows).await;
                        JobEnd { sequence, seen }
                    });
                }
            }
        }
    }
}

/// One job, from its `sending` marks to every row's answer. Returns how long it took to show
/// its results (None when it never did).
async fn send_job(crew: &Crew, batch: String, rows: Vec<Queued>) -> Option<Seen> {
    let lines: Vec<u64> = rows.iter().map(|queued| queued.line).collect();
    let mut items = Vec::with_capacity(rows.len());
    let mut waiting = Vec::with_capacity(rows.len());
    for Queued {
        line,
        conversation_id,
        body,
        reply,
        ..
    } in rows
    {
        let mut item = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null);
        if let Value::Object(fields) = &mut item {
            fields.insert("conversation".into(), Value::String(conversation_id));
            fields.insert("_clientRef".into(), Value::String(client_ref(line)));
        }
        items.push(item);
        waiting.push(Waiting { line, reply });
    }
    let ledger = &crew.parts.ledger;
    let control = &crew.parts.control;
    if ledger
        .writer()
        .mark_sending_batch(lines, batch.clone(), now_ms())
        .await
        .is_err()
    {
        answer_all(waiting, || BulkOutcome::StorageFailed);
        return None;
    }
    let body = Value::Array(items).to_string();
    ledger.stats().add_bulk_job(1);
    let (created, _) = crew.parts.client.create_bulk_job(&body).await;
    control.observe(&created);
    let posted = Instant::now();
    let job_id = match created {
        Ok(job_id) => job_id,
        Err(err) => {
            ledger.stats().add_bulk_job(-1);
            match err.retry_action(RequestKind::Create) {
                RetryAction::RateLimited | RetryAction::NeverSent | RetryAction::StopRun => {
                    answer_all(waiting, || BulkOutcome::NotSent(err.clone()));
                }
                // The job as a whole was refused: each row gets its own verdict alone.
                RetryAction::FailRow => answer_all(waiting, || BulkOutcome::Single),
                RetryAction::OutcomeUnknown | RetryAction::RetryRead => {
                    // The job may exist and still be running: look only once it must be done.
                    let why = format!("bulk job's answer lost ({err}); the job may exist");
                    let wait = crew.lost_post_settle();
                    answer_all(waiting, || BulkOutcome::Unknown(why.clone(), wait));
                }
            }
            return None;
        }
    };
    if let Err(err) = ledger.writer().record_bulk_job(batch, job_id.clone()) {
        tracing::error!(error = %err, "cannot record a bulk job id");
    }
    let first_read = posted + crew.timer().expected;
    let deadline = posted + crew.parts.max_job_wait;
    let seen = follow_job(crew, &job_id, waiting, first_read, deadline)
        .await
        .map(|(read_at, first_read)| Seen {
            took: read_at.saturating_duration_since(posted),
            first_read,
        });
    ledger.stats().add_bulk_job(-1);
    seen
}
