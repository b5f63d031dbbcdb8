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

use super::away::Away;
use super::results::{follow_job, read_dead_job, Reading};
use super::timer::{JobTimer, Pace, Seen};
use super::{answer_all, client_ref, BulkOutcome, Waiting, MIN_JOB_ROWS};

/// How long the batcher waits for more heads once none has come in: the heads of a job that
/// ended arrive within a few milliseconds (measured: 2 ms for 100), and should ride one job
/// together; every millisecond more is paid on each of the deepest conversation's rounds.
const LINGER: Duration = Duration::from_millis(25);
/// How long a critical head waits for lanes still working toward their heads (opening their
/// conversation, finishing a single create) before a part-filled job or a single create goes.
const FILL_WAIT: Duration = Duration::from_millis(250);

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
    /// Every lane: those still working toward a head may hand one over soon.
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
    /// Each row's conversation and the rows it had left when the job went.
    rows: Vec<(String, u64)>,
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
    /// Some lane works toward a head that is neither here nor away: it may come soon.
    pub(super) more_coming: bool,
    /// The oldest head here has waited [`FILL_WAIT`].
    pub(super) waited: bool,
    /// Some head here is at least as deep as every conversation away (riding a job, or due
    /// back from one): holding it back would end the run later.
    pub(super) critical: bool,
    /// Rows riding jobs now, and heads due back from ended jobs (they will ride again soon).
    pub(super) rows_away: usize,
    /// Rows that must ride per job time for every row left to go within the deepest
    /// conversation's rounds: `ceil(rows left / deepest depth)`.
    pub(super) spread: usize,
}

/// What the batcher does next with its heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Move {
    Wait,
    /// A job of the deepest heads, up to a full one.
    Job,
    /// Too few heads for a job, and one of them would end the run later by waiting: they go
    /// as single creates.
    Alone,
}

/// When a job goes, never beyond the jobs the budget pays for:
/// - a head on the critical path (as deep as anything away) waits only for the rest of its
///   returning job's heads, and, when they would not fill a job, briefly for lanes still
///   working toward theirs: then a job goes, filled with the deepest heads here;
/// - otherwise only full jobs go, and only while they fit, with the rows away (riding jobs or
///   due back), within the even spread of the rows left over the deepest conversation's rounds.
///   Heads held back this way cost no time (they are shallower than the critical path) and
///   fill the jobs that the deep conversations send later, which would otherwise go thin.
///
/// This is highest-level-first scheduling of the conversations' chains, which finishes them in
/// the fewest rounds, with jobs kept full.
pub(super) fn next_move(now: Gathering) -> Move {
    if now.heads == 0 || now.in_flight >= now.target {
        return Move::Wait;
    }
    if now.critical {
        let thin = now.heads < now.batch;
        if !now.lingered || (thin && now.more_coming && !now.waited) {
            return Move::Wait;
        }
        return if now.heads >= MIN_JOB_ROWS {
            Move::Job
        } else {
            Move::Alone
        };
    }
    if now.heads >= now.batch && now.rows_away.saturating_add(now.batch) <= now.spread {
        return Move::Job;
    }
    Move::Wait
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
    let mut away = Away::default();
    let mut reads: HashMap<String, Vec<Reading>> = HashMap::new();
    let mut sequence = 0u64;
    let batch = crew.pace.batch_size;
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
                    away.back(&queued.conversation_id);
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
                    let now = Instant::now();
                    for (conversation, depth) in in_flight
                        .remove(&end.sequence)
                        .map(|job| job.rows)
                        .unwrap_or_default()
                    {
                        away.job_ended(&conversation, depth, now);
                    }
                    if let Some(seen) = end.seen {
                        crew.learn(seen);
                        tracing::debug!(
                            job = end.sequence,
                            took_ms = seen.took.as_millis() as u64,
                            first_read = seen.first_read,
                            expected_ms = crew.timer().expected.as_millis() as u64,
                            "bulk job ended"
                        );
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
                in_flight.insert(sequence, InFlight { rows: Vec::new() });
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
            let out = away.deepest(Instant::now());
            let here = pending.iter().map(|queued| queued.depth).max().unwrap_or(0);
            let deepest = here.max(out).max(1);
            let stats = crew.parts.ledger.stats();
            let rows_left = stats
                .total
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(stats.done());
            let gathering = Gathering {
                heads: pending.len(),
                batch,
                in_flight: in_flight.len(),
                target: crew.pace.in_flight(crew.timer().expected),
                lingered,
                more_coming: crew.board.coming(crew.pace.lanes()) > pending.len() + away.len(),
                waited: oldest.elapsed() >= FILL_WAIT,
                critical: here >= out,
                rows_away: away.len(),
                spread: usize::try_from(rows_left.div_ceil(deepest)).unwrap_or(usize::MAX),
            };
            match next_move(gathering) {
                Move::Wait => break,
                Move::Alone => {
                    tracing::debug!(rows = pending.len(), "heads go alone");
                    let now = Instant::now();
                    for queued in pending.drain(..) {
                        away.alone(&queued.conversation_id, queued.depth, now);
                        let _ = queued.reply.send(BulkOutcome::Single);
                    }
                }
                Move::Job => {
                    // Deepest remaining first (stable: the earliest heads first on a tie).
                    pending.sort_by_key(|queued| std::cmp::Reverse(queued.depth));
                    let take = pending.len().min(batch);
                    let rows: Vec<Queued> = pending.drain(..take).collect();
                    oldest = Instant::now();
                    tracing::debug!(
                        job = sequence + 1,
                        rows = rows.len(),
                        deepest = rows.first().map(|queued| queued.depth).unwrap_or(0),
                        left_here = pending.len(),
                        in_flight = gathering.in_flight,
                        rows_away = gathering.rows_away,
                        spread = gathering.spread,
                        critical = gathering.critical,
                        "bulk job goes"
                    );
                    sequence += 1;
                    let riders: Vec<(String, u64)> = rows
                        .iter()
                        .map(|queued| (queued.conversation_id.clone(), queued.depth))
                        .collect();
                    for (conversation, depth) in &riders {
                        away.riding(conversation, *depth);
                    }
                    in_flight.insert(sequence, InFlight { rows: riders });
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
    let waited = crew.timer().expected;
    let deadline = posted + crew.parts.max_job_wait;
    let seen = follow_job(crew, &job_id, waiting, posted + waited, deadline)
        .await
        .map(|(read_at, first_read)| Seen {
            took: read_at.saturating_duration_since(posted),
            waited,
            first_read,
        });
    ledger.stats().add_bulk_job(-1);
    seen
}
