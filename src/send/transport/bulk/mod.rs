//! The bulk transport: the head rows of up to `--batch-size` different conversations in one
//! `POST /v1/messages/bulk`, their results read back by `_clientRef` (the API note, section
//! Bulk).
//!
//! Each lane still has at most one row in flight, across all jobs and single creates, so order
//! holds whatever order the API processes items or finishes jobs in. A lane hands its head row
//! to the batcher ([`Jobs`]) and waits for that row's [`BulkOutcome`], which [`Jobs`] turns into
//! the engine's [`Sent`].
//!
//! Pace: the batcher keeps as many jobs in flight as the budget pays for during one job time
//! ([`crate::plan::jobs_in_flight`], with the job time learned as jobs finish, `--job-seconds`
//! until then), at most `--max-jobs`. Heads go deepest-remaining-first. A job goes when it is
//! full, or when waiting for more heads would cost time the budget does not need
//! ([`next_move`]); fewer than [`MIN_JOB_ROWS`] heads go as single creates. A conversation deeper
//! than the rounds `plan` allows sends its first rows alone ([`Bulk::create`]).
//!
//! Results ([`judge`]): final only when `GET /v1/bulk/{id}` says `complete`, or when every
//! `_clientRef` sent has a result; a partial list never decides anything. Each job is read when
//! it is likely done (its batches first: most jobs cost their POST and that one read; the job
//! itself only when no listed batch is unfinished), soon again after a near miss
//! ([`poll_after`]), then at most once per learned job time, up to `--max-job-wait`; after that
//! the rows it has not answered end `outcome_unknown` and `resume` reads the job again. Item errors 400/404/409/422 are permanent,
//! 429 goes again, anything else (5xx, an unreadable item, a row missing from a complete job, a
//! job that lists a `_clientRef` never sent, a ref listed twice with different answers) is an
//! unknown outcome, looked up once the job is complete. A POST whose answer was lost leaves a
//! job that may exist: its rows wait three times the slowest job seen ([`SettleRule`]).
//!
//! Bulk results carry no message body: the first message a run creates by bulk, and one in every
//! thousand after, is read back: its audit fields and its conversation are checked.
//!
//! Durability: the rows of a job are durably `sending` with a local batch id before its POST;
//! the job id is recorded as soon as it is known. On resume a row with a job id is settled by
//! reading that job (once, when it should be done), never resent; one without is an unknown
//! outcome like any other. In single mode the batcher sends no job and only reads those of a
//! dead run.
//!
//! The batcher reaches nothing of the engine's state: its parts (client, ledger, control, the
//! settle rule, the lane board) are given to it explicitly, and its task and jobs end with
//! [`Jobs::shutdown`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{now_ms, Checkpoint, CheckpointError};
use crate::client::{
    ApiError, BatchStatus, BulkBatches, BulkResultItem, CreatedMessage, ItemOutcome, Timing,
};
use crate::retry::{RequestKind, RetryAction};

use super::super::control::Halt;
use super::super::lanes::LaneBoard;
use super::single::Creates;
use super::{
    create_error, item_error_remedy, Created, Failure, Head, HeadState, Parts, Remedy, Sent,
    SettleRule, Writing,
};

/// Fewer rows than this go as single creates: a job costs at least two requests.
pub const MIN_JOB_ROWS: usize = 3;
/// How long the batcher waits for more heads once none has come in.
const LINGER: Duration = Duration::from_millis(60);
/// How long heads wait for lanes still working (not in a job, not here) before a thin job goes.
const FILL_WAIT: Duration = Duration::from_secs(1);
/// The shortest wait before a job's first read, however fast jobs have been.
const SHORTEST_JOB_GUESS: Duration = Duration::from_millis(50);
/// The shortest wait between two reads of one job.
const SHORTEST_POLL: Duration = Duration::from_millis(100);
/// Reads of a job, its first included, after which it is read once per learned job time.
const NEAR_MISS_READS: u32 = 3;

/// What became of a row handed to the batcher.
pub enum BulkOutcome {
    Created {
        message_id: String,
        job_id: String,
    },
    /// The item's own error, known not stored: permanent or refused before processing
    /// ([`item_error_remedy`]).
    ItemFailed(ApiError, Remedy),
    /// The row may or may not exist: settle this long ([`SettleRule`]), then look it up.
    Unknown(String, Duration),
    /// The job may still be running after `--max-job-wait`.
    Outlasted(String),
    /// Send it as a single create instead.
    Single,
    /// The POST was refused before any processing (429, no connection, a stopping run).
    NotSent(ApiError),
    /// The `sending` marks could not be written.
    StorageFailed,
    Stopped,
}

/// A head row handed to the batcher, until its job goes.
struct Queued {
    line: u64,
    conversation_id: String,
    body: String,
    /// Rows its conversation still has to send, this one included.
    depth: u64,
    reply: oneshot::Sender<BulkOutcome>,
}

enum Request {
    Send(Queued),
    /// A row a dead run sent in this job: its result, read once per job.
    Read {
        line: u64,
        job_id: String,
        sent_at_ms: Option<i64>,
        reply: oneshot::Sender<BulkOutcome>,
    },
}

/// How bulk mode is asked to run: how the batcher paces its jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub batch_size: usize,
    /// The requests per minute the job may spend.
    pub rpm: u32,
    /// How long a job is taken to last until one is measured (`--job-seconds`).
    pub job_seconds: f64,
    /// The most jobs in flight at once (`--max-jobs`).
    pub max_jobs: usize,
}

impl Pace {
    /// The pace of a batcher that sends nothing and only reads the jobs of a dead run.
    pub fn reading_only() -> Pace {
        Pace {
            batch_size: 1,
            rpm: u32::MAX / 2,
            job_seconds: crate::plan::DEFAULT_JOB_SECONDS,
            max_jobs: 1,
        }
    }

    fn assumed_job(&self) -> Duration {
        Duration::try_from_secs_f64(self.job_seconds).unwrap_or(Duration::ZERO)
    }

    /// Jobs the budget pays for during one job time, as jobs take now.
    fn in_flight(&self, job_time: Duration) -> usize {
        crate::plan::jobs_in_flight(self.rpm, job_time.as_secs_f64(), self.max_jobs)
    }
}

/// What the batcher's task and its jobs work with.
struct Crew {
    parts: Parts,
    settle: SettleRule,
    pace: Pace,
    /// How long jobs take, learned as they finish.
    timer: Mutex<JobTimer>,
    /// Every unfinished lane: when all of them have their head here or in a job, no other head
    /// can come until a job ends.
    board: Arc<LaneBoard>,
}

impl Crew {
    fn timer(&self) -> JobTimer {
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

/// The lanes' side of the batcher: hands it head rows (to send, or to settle from a dead run's
/// job) and turns its answers into [`Sent`].
pub struct Jobs {
    requests: mpsc::UnboundedSender<Request>,
    /// The batcher's side, until its task starts.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Ends the batcher's task and its jobs.
    quit: CancellationToken,
    parts: Parts,
    /// Rows the batcher sends back to go alone.
    creates: Creates,
    settle: SettleRule,
    pace: Pace,
}

impl Jobs {
    pub fn new(parts: Parts, creates: Creates, settle: SettleRule, pace: Pace) -> Jobs {
        let (requests, inbox) = mpsc::unbounded_channel();
        Jobs {
            requests,
            inbox: Mutex::new(Some(inbox)),
            task: Mutex::new(None),
            quit: CancellationToken::new(),
            parts,
            creates,
            settle,
            pace: Pace {
                batch_size: pace.batch_size.max(1),
                ..pace
            },
        }
    }

    pub fn settle(&self) -> &SettleRule {
        &self.settle
    }

    /// Starts the batcher's task (once); it ends when the run stops or at [`Jobs::shutdown`].
    pub fn start(&self, board: Arc<LaneBoard>) {
        let Some(inbox) = self.inbox.lock().ok().and_then(|mut inbox| inbox.take()) else {
            return;
        };
        let crew = Arc::new(Crew {
            parts: self.parts.clone(),
            settle: self.settle,
            pace: self.pace,
            timer: Mutex::new(JobTimer::new(
                self.pace.assumed_job().max(SHORTEST_JOB_GUESS),
            )),
            board,
        });
        let task = tokio::spawn(run(crew, inbox, self.quit.clone()));
        if let Ok(mut slot) = self.task.lock() {
            *slot = Some(task);
        }
    }

    /// Ends the batcher's task and waits until it and its jobs are gone.
    pub async fn shutdown(&self) {
        self.quit.cancel();
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Hands a head row over to ride a job, and says what became of it.
    pub async fn send(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
    ) -> Result<Sent, CheckpointError> {
        let (conversation_id, body) = (head.conversation_id.to_string(), head.body.to_string());
        let depth = (head.rows_left)();
        self.ask(head, state, |reply| {
            Request::Send(Queued {
                line: head.line,
                conversation_id,
                body,
                depth,
                reply,
            })
        })
        .await
    }

    /// The result of the head row in job `job_id`, sent by an earlier run.
    pub async fn read(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
        job_id: &str,
    ) -> Result<Sent, CheckpointError> {
        let job_id = job_id.to_string();
        let sent_at_ms = state.sent_at_ms;
        self.ask(head, state, |reply| Request::Read {
            line: head.line,
            job_id,
            sent_at_ms,
            reply,
        })
        .await
    }

    /// Sends the batcher a request about the head row and waits for its answer.
    async fn ask(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
        request: impl FnOnce(oneshot::Sender<BulkOutcome>) -> Request,
    ) -> Result<Sent, CheckpointError> {
        let (reply, outcome) = oneshot::channel();
        let outcome = match self.requests.send(request(reply)) {
            Ok(()) => outcome.await.unwrap_or(BulkOutcome::Stopped),
            Err(_) => BulkOutcome::Stopped,
        };
        self.answered(head, state, outcome).await
    }

    /// What a job said about the row, as the engine reads it.
    async fn answered(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
        outcome: BulkOutcome,
    ) -> Result<Sent, CheckpointError> {
        Ok(match outcome {
            BulkOutcome::Created { message_id, job_id } => {
                match self.read_back(head, &message_id, &job_id).await {
                    Ok(stored) => Sent::Created(Created {
                        message_id,
                        http_status: None,
                        timing: Timing::default(),
                        stored,
                    }),
                    Err(()) => Sent::Stopped,
                }
            }
            BulkOutcome::ItemFailed(error, remedy) => Sent::Failed(Failure {
                error,
                timing: Timing::default(),
                remedy,
            }),
            BulkOutcome::NotSent(err) => create_error(err, Timing::default(), &self.settle),
            BulkOutcome::Unknown(why, settle) => Sent::Unknown { why, settle },
            BulkOutcome::Outlasted(why) => Sent::JobOutlasted { why },
            BulkOutcome::Single => {
                state.alone = true;
                if self.parts.control.stopping() {
                    Sent::Stopped
                } else {
                    self.creates.create(head).await?
                }
            }
            BulkOutcome::StorageFailed => {
                self.parts.ledger.writer().flush().await?;
                Sent::Stopped
            }
            BulkOutcome::Stopped => Sent::Stopped,
        })
    }

    /// The first message created by bulk in this run, and one in every thousand after, read
    /// back for its audit fields (bulk results carry no message body) and its conversation: a
    /// message in another conversation than the row's stops the run (`Err`).
    async fn read_back(
        &self,
        head: &Head<'_>,
        message_id: &str,
        job_id: &str,
    ) -> Result<Option<CreatedMessage>, ()> {
        let checked = self.parts.ledger.stats().bulk_created(1);
        if !(checked == 1 || checked.is_multiple_of(1000)) {
            return Ok(None);
        }
        let stored = match self.parts.client.message(message_id).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(error = %err, job_id, "could not read a bulk-created message back to check it");
                return Ok(None);
            }
        };
        match stored.conversation_id.as_deref() {
            Some(conversation) if conversation != head.conversation_id => {
                self.parts.control.halt(Halt::Api(ApiError::Protocol {
                    status: 200,
                    detail: format!(
                        "bulk job {job_id} reported line {} created as message {message_id}, \
                         but that message is in conversation {conversation}, not {}: the job's \
                         results cannot be trusted",
                        head.line, head.conversation_id
                    ),
                }));
                Err(())
            }
            _ => Ok(self.parts.verify_audit_fields.then_some(stored)),
        }
    }
}

/// The bulk transport: heads ride jobs, except the first rows of a conversation deeper than the
/// rounds allow and the rows the batcher sends back, which go alone.
pub struct Bulk {
    jobs: Jobs,
    creates: Creates,
    /// The most rows of one conversation that ride jobs; deeper conversations send the rest
    /// first as single creates, so they do not stretch the run over hundreds of rounds.
    rounds: u64,
    pace: Pace,
}

impl Bulk {
    /// Orders `conversations` deepest first and takes the rounds from the rule `plan` models,
    /// so that its estimate is what the run does.
    pub fn new(
        parts: Parts,
        pace: Pace,
        checkpoint: &Checkpoint,
        conversations: &mut [String],
    ) -> Result<Bulk, CheckpointError> {
        // Deepest first: a deep conversation that starts late ends alone, in thin jobs.
        let depths: HashMap<String, u64> = checkpoint
            .depths_to_send()?
            .into_iter()
            .map(|depth| (depth.conversation_id, depth.rows))
            .collect();
        conversations.sort_by_key(|id| std::cmp::Reverse(depths.get(id).copied().unwrap_or(0)));
        let workload = crate::plan::Workload::of_checkpoint(checkpoint)?;
        let estimate = crate::plan::plan(
            &workload,
            crate::plan::PlanInputs {
                rpm: pace.rpm,
                batch: pace.batch_size as u64,
                job_seconds: pace.job_seconds,
                max_jobs: pace.max_jobs,
            },
        );
        let settle = SettleRule {
            settle_delay: parts.settle_delay,
            assumed_job: pace.assumed_job(),
        };
        let creates = Creates::new(&parts, settle);
        Ok(Bulk {
            jobs: Jobs::new(parts, creates.clone(), settle, pace),
            creates,
            rounds: estimate.bulk.critical_path_rounds,
            pace,
        })
    }

    /// Enough conversations open to fill every job that may be in flight, and one job more to
    /// choose the deepest heads from.
    pub fn lanes(&self) -> usize {
        self.pace
            .batch_size
            .max(1)
            .saturating_mul(self.pace.max_jobs.max(1).saturating_add(1))
    }

    pub async fn create(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
    ) -> Result<Sent, CheckpointError> {
        if !state.alone && (head.rows_left)() <= self.rounds {
            self.jobs.send(head, state).await
        } else {
            self.creates.create(head).await
        }
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }
}

/// A row waiting in a job.
struct Waiting {
    line: u64,
    reply: oneshot::Sender<BulkOutcome>,
}

/// How many recent jobs the timer keeps, to tell a slow job from slow jobs.
const RECENT_JOBS: usize = 16;

/// How long jobs take, learned as they finish.
#[derive(Debug, Clone, Copy)]
pub struct JobTimer {
    /// When to read a job's results first.
    expected: Duration,
    /// The longest a job has taken to show its results.
    slowest: Duration,
    /// What the last jobs took (a ring; `seen` counts every job).
    recent: [Duration; RECENT_JOBS],
    seen: usize,
}

impl JobTimer {
    fn new(expected: Duration) -> JobTimer {
        JobTimer {
            expected,
            slowest: Duration::ZERO,
            recent: [Duration::ZERO; RECENT_JOBS],
            seen: 0,
        }
    }

    /// Learns from one job. `took` is measured from the POST's answer to the read that found
    /// the results, so it is never less than the wait before the first read: averaging it alone
    /// could only go up. So a job found done on the first read shortens the wait a little (2%),
    /// and one that needed more reads raises it at once to 110% of what that job took: a second
    /// read costs a request, a late read only time. A job more than twice as slow as expected
    /// raises it only as far as the median of the recent jobs says: one slow job must not slow
    /// every round that follows, but slow jobs must.
    fn observe(&mut self, seen: Seen) {
        if seen.took.is_zero() {
            return;
        }
        self.slowest = self.slowest.max(seen.took);
        if let Some(slot) = self.recent.get_mut(self.seen % RECENT_JOBS) {
            *slot = seen.took;
        }
        self.seen += 1;
        self.expected = if seen.first_read {
            (self.expected * 49 / 50).max(SHORTEST_JOB_GUESS)
        } else if seen.took > self.expected * 2 {
            self.expected.max(self.recent_median() * 11 / 10)
        } else {
            self.expected.max(seen.took * 11 / 10)
        };
    }

    fn recent_median(&self) -> Duration {
        let mut recent: Vec<Duration> = self
            .recent
            .iter()
            .take(self.seen.min(RECENT_JOBS))
            .copied()
            .collect();
        recent.sort_unstable();
        recent.get(recent.len() / 2).copied().unwrap_or_default()
    }
}

/// How a job's results showed: when, and whether on the first read.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    took: Duration,
    first_read: bool,
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
struct Gathering {
    heads: usize,
    batch: usize,
    in_flight: usize,
    /// Jobs the budget pays for during one job time.
    target: usize,
    /// No head has come in for [`LINGER`].
    lingered: bool,
    /// The oldest head has waited [`FILL_WAIT`].
    waited: bool,
    /// Some lane is neither here nor in a job: its head may come soon.
    more_coming: bool,
    /// The deepest conversation's rounds take longer than the budget needs for every request
    /// left: time is what is short, not requests, so thin jobs may go.
    budget_spare: bool,
}

/// What the batcher does next with its heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Wait,
    /// A job of the deepest heads, up to a full one.
    Job,
    /// Too few heads for a job and nothing to wait for: they go as single creates.
    Alone,
}

/// When a job goes: when it is full, or when waiting for more heads would cost more time than
/// the budget has to spare; never beyond the jobs the budget pays for.
fn next_move(now: Gathering) -> Move {
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

async fn run(
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

/// A row a dead run sent in a job.
struct Reading {
    line: u64,
    sent_at_ms: Option<i64>,
    reply: oneshot::Sender<BulkOutcome>,
}

/// Reads a dead run's job once it should be done (its rows' last send plus a job time), then
/// follows it like any job of this run, up to `--max-job-wait` from now.
async fn read_dead_job(crew: &Crew, job_id: String, readers: Vec<Reading>) {
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
async fn follow_job(
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

/// The wait before the next read of a job whose `reads`-th read found it unfinished: a quarter
/// of the learned job time for the first reads after a near miss (so a job that ends just after
/// its first read does not cost a whole job time on the critical path, nor teach the timer twice
/// its duration), then once per learned job time.
fn poll_after(learned: Duration, reads: u32) -> Duration {
    let wait = if reads <= NEAR_MISS_READS {
        learned / 4
    } else {
        learned
    };
    wait.max(SHORTEST_POLL)
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
enum Verdict {
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
fn judge(refs: &[String], batches: &BulkBatches, job_complete: bool) -> Option<Vec<Verdict>> {
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

fn answer_all(waiting: Vec<Waiting>, outcome: impl Fn() -> BulkOutcome) {
    for Waiting { reply, .. } in waiting {
        let _ = reply.send(outcome());
    }
}

/// The `_clientRef` of a row: its input line, stable across runs.
fn client_ref(line: u64) -> String {
    format!("line-{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_time_is_learned_smoothly() {
        let mut timer = JobTimer::new(Duration::from_secs(1));
        // Read too early: the wait grows at once to a little over what the job took.
        let late = Seen {
            took: Duration::from_millis(1_500),
            first_read: false,
        };
        timer.observe(late);
        assert_eq!(timer.expected, Duration::from_millis(1_650));
        // Found done on the first read: the wait shrinks slowly, however long that read waited.
        let early = Seen {
            took: Duration::from_secs(5),
            first_read: true,
        };
        timer.observe(early);
        assert_eq!(timer.expected, Duration::from_millis(1_617));
        assert_eq!(timer.slowest, Duration::from_secs(5));
        // One job ten times slower: the slowest, but the wait follows the recent median.
        let slow = Seen {
            took: Duration::from_secs(16),
            first_read: false,
        };
        timer.observe(slow);
        assert_eq!(timer.expected, Duration::from_millis(5_500));
        assert_eq!(timer.slowest, slow.took);
        for _ in 0..500 {
            timer.observe(early);
        }
        assert_eq!(timer.expected, SHORTEST_JOB_GUESS);
        // Slow jobs, one after another: the median follows them.
        for _ in 0..RECENT_JOBS {
            timer.observe(slow);
        }
        assert_eq!(timer.expected, Duration::from_millis(17_600));
        // A job that never showed results teaches nothing.
        timer.observe(Seen::default());
        assert_eq!(timer.expected, Duration::from_millis(17_600));
    }

    #[test]
    fn a_job_is_read_again_soon_after_a_near_miss_then_once_per_job_time() {
        let learned = Duration::from_secs(4);
        assert_eq!(poll_after(learned, 1), Duration::from_secs(1));
        assert_eq!(poll_after(learned, NEAR_MISS_READS), Duration::from_secs(1));
        assert_eq!(poll_after(learned, NEAR_MISS_READS + 1), learned);
        assert_eq!(poll_after(Duration::ZERO, 9), SHORTEST_POLL);
    }

    #[test]
    fn client_refs_name_the_line() {
        assert_eq!(client_ref(42), "line-42");
    }

    const GATHERING: Gathering = Gathering {
        heads: 40,
        batch: 100,
        in_flight: 3,
        target: 10,
        lingered: true,
        waited: true,
        more_coming: false,
        budget_spare: false,
    };

    #[test]
    fn a_job_goes_when_full_or_when_waiting_costs_time_the_budget_does_not_need() {
        // Full: goes at once, without lingering.
        let full = Gathering {
            heads: 100,
            lingered: false,
            ..GATHERING
        };
        assert_eq!(next_move(full), Move::Job);
        // Never beyond the jobs the budget pays for.
        let busy = Gathering { target: 3, ..full };
        assert_eq!(next_move(busy), Move::Wait);
        // Part-filled while jobs in flight will bring heads back, and requests are short.
        assert_eq!(next_move(GATHERING), Move::Wait);
        // ... but time is short: it goes.
        let spare = Gathering {
            budget_spare: true,
            ..GATHERING
        };
        assert_eq!(next_move(spare), Move::Job);
        // Nothing in flight: nothing else to wait for.
        let idle = Gathering {
            in_flight: 0,
            ..GATHERING
        };
        assert_eq!(next_move(idle), Move::Job);
        // Heads still arriving, or lanes still working for less than FILL_WAIT: wait.
        let arriving = Gathering {
            lingered: false,
            ..idle
        };
        assert_eq!(next_move(arriving), Move::Wait);
        let working = Gathering {
            more_coming: true,
            waited: false,
            ..idle
        };
        assert_eq!(next_move(working), Move::Wait);
        // Too few for a job: alone.
        let two = Gathering { heads: 2, ..idle };
        assert_eq!(next_move(two), Move::Alone);
        let none = Gathering { heads: 0, ..idle };
        assert_eq!(next_move(none), Move::Wait);
    }

    fn item(reference: &str, outcome: ItemOutcome) -> BulkResultItem {
        BulkResultItem {
            client_ref: Some(reference.to_string()),
            outcome,
        }
    }

    fn created(id: &str) -> ItemOutcome {
        ItemOutcome::Created {
            object_id: id.to_string(),
        }
    }

    fn failed(status: u16) -> ItemOutcome {
        ItemOutcome::Failed {
            status,
            code: None,
            message: "x".into(),
        }
    }

    fn listed(items: Vec<BulkResultItem>) -> BulkBatches {
        BulkBatches {
            batches: vec![BatchStatus::Complete],
            items,
        }
    }

    fn refs(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|line| line.to_string()).collect()
    }

    fn unknown(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Unknown(_))
    }

    #[test]
    fn results_are_final_when_the_job_is_complete_or_every_ref_has_a_trusted_answer() {
        let sent = refs(&["a", "b", "c"]);
        let partial = listed(vec![item("a", created("m1")), item("b", failed(422))]);
        // A partial list decides nothing while the job runs.
        assert_eq!(judge(&sent, &partial, false), None);
        // Once complete, the missing row is an unknown outcome.
        let verdicts = judge(&sent, &partial, true).expect("final");
        assert_eq!(verdicts[0], Verdict::Created("m1".into()));
        assert!(matches!(verdicts[1], Verdict::Failed { status: 422, .. }));
        assert!(unknown(&verdicts[2]));
        // Every ref answered, none in doubt: final without the job's word.
        let whole = listed(vec![
            item("a", created("m1")),
            item("b", failed(429)),
            item("c", failed(409)),
        ]);
        let verdicts = judge(&sent, &whole, false).expect("final");
        assert!(matches!(verdicts[1], Verdict::Failed { status: 429, .. }));
    }

    #[test]
    fn a_5xx_an_unreadable_item_or_a_contradiction_is_decided_only_once_the_job_is_complete() {
        let sent = refs(&["a", "b", "c"]);
        let doubtful = listed(vec![
            item("a", failed(500)),
            item(
                "b",
                ItemOutcome::Unreadable {
                    why: "no status".into(),
                },
            ),
            item("c", created("m3")),
            item("c", failed(400)),
        ]);
        assert_eq!(judge(&sent, &doubtful, false), None);
        let verdicts = judge(&sent, &doubtful, true).expect("final");
        assert!(verdicts.iter().all(unknown), "{verdicts:?}");
        // Listed twice with the same answer: trusted.
        let twice = listed(vec![
            item("a", created("m1")),
            item("a", created("m1")),
            item("b", created("m2")),
            item("c", created("m3")),
        ]);
        assert!(judge(&sent, &twice, false)
            .expect("final")
            .iter()
            .all(|verdict| !unknown(verdict)));
    }

    #[test]
    fn a_ref_never_sent_puts_every_answer_of_the_job_in_doubt() {
        let sent = refs(&["a", "b"]);
        let stranger = listed(vec![
            item("a", created("m1")),
            item("b", created("m2")),
            item("zz", created("m9")),
        ]);
        assert_eq!(judge(&sent, &stranger, false), None);
        let verdicts = judge(&sent, &stranger, true).expect("final");
        assert!(verdicts.iter().all(unknown), "{verdicts:?}");
        let nameless = listed(vec![
            item("a", created("m1")),
            item("b", created("m2")),
            BulkResultItem {
                client_ref: None,
                outcome: created("m3"),
            },
        ]);
        assert!(judge(&sent, &nameless, true)
            .expect("final")
            .iter()
            .all(unknown));
    }
}
