//! The bulk transport: the head rows of up to `--batch-size` different conversations in one
//! `POST /v1/messages/bulk`, their results read back by `_clientRef`.
//!
//! Each lane still has at most one row in flight, so order holds whatever order the API
//! processes items or finishes jobs in. A lane hands its head row to the batcher ([`Jobs`]) and
//! waits for that row's [`BulkOutcome`], which [`Jobs`] turns into the engine's [`Sent`]. The
//! batcher's task decides when a job is full enough to be worth its two requests (its POST and
//! one results read), and a job that would hold fewer than [`MIN_JOB_ROWS`] rows goes as single
//! creates instead (one request each is cheaper). A conversation deeper than the rounds `plan`
//! allows sends its first rows alone ([`Bulk::create`]).
//!
//! Bulk results carry no message body: the first message a run creates by bulk, and one in every
//! thousand after, is read back so its audit fields can be checked.
//!
//! Durability: the rows of a job are durably `sending` with a local batch id before its POST;
//! the job id is recorded as soon as it is known. On resume a row with a job id is settled by
//! reading that job's results (never resent); one without is an unknown outcome like any other.
//! In single mode the batcher sends no job and only reads those of a dead run.
//!
//! The batcher reaches nothing of the engine's state: its parts (client, ledger, control, the
//! settle rule, the lane board) are given to it explicitly, and its task and jobs end with
//! [`Jobs::shutdown`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{now_ms, Checkpoint, CheckpointError};
use crate::client::{ApiError, BulkItem, CreatedMessage, RateInfo, Timing};
use crate::retry::{RequestKind, RetryAction};

use super::super::control::Halt;
use super::super::lanes::LaneBoard;
use super::single::Creates;
use super::{create_error, Created, ErrorOf, Head, HeadState, Parts, Sent, SettleRule, Writing};

/// Fewer rows than this go as single creates: a job costs at least two requests.
pub const MIN_JOB_ROWS: usize = 3;
/// How long the batcher waits for more heads once none has come in.
const LINGER: Duration = Duration::from_millis(60);
/// How long fewer than [`MIN_JOB_ROWS`] heads wait for others before going as single creates.
const FILL_WAIT: Duration = Duration::from_secs(1);
/// The longest a job may take to show its results before its rows count as unknown outcomes.
const LONGEST_JOB: Duration = Duration::from_secs(15 * 60);
/// First guess of how long a job takes, before any has been measured.
const FIRST_JOB_GUESS: Duration = Duration::from_millis(1_000);
/// The shortest wait before a job's first read, however fast jobs have been.
const SHORTEST_JOB_GUESS: Duration = Duration::from_millis(50);

/// What became of a row handed to the batcher.
pub enum BulkOutcome {
    Created {
        message_id: String,
        job_id: String,
    },
    /// The item's own error, with the status it carried: classified like a single create's, but
    /// known not created (the job says so).
    ItemFailed(ApiError),
    /// The row may or may not exist (the POST's answer was lost, the item is missing from the
    /// results, the results never came): settle this long ([`SettleRule`]), then look it up.
    Unknown(String, Duration),
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
    reply: oneshot::Sender<BulkOutcome>,
}

enum Request {
    Send(Queued),
    /// A row a dead run sent in this job: its result, read once per job.
    Read {
        line: u64,
        job_id: String,
        reply: oneshot::Sender<BulkOutcome>,
    },
}

/// What the batcher's task and its jobs work with.
struct Crew {
    parts: Parts,
    settle: SettleRule,
    /// Every unfinished lane: when all of them have their head waiting, no other head can come.
    board: Arc<LaneBoard>,
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
    batch_size: usize,
}

impl Jobs {
    pub fn new(parts: Parts, creates: Creates, settle: SettleRule, batch_size: usize) -> Jobs {
        let (requests, inbox) = mpsc::unbounded_channel();
        Jobs {
            requests,
            inbox: Mutex::new(Some(inbox)),
            task: Mutex::new(None),
            quit: CancellationToken::new(),
            parts,
            creates,
            settle,
            batch_size: batch_size.max(1),
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
            board,
        });
        let task = tokio::spawn(run(crew, inbox, self.batch_size, self.quit.clone()));
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
        self.ask(head, state, |reply| {
            Request::Send(Queued {
                line: head.line,
                conversation_id,
                body,
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
        self.ask(head, state, |reply| Request::Read {
            line: head.line,
            job_id,
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
                let stored = self.read_back(&message_id, &job_id).await;
                Sent::Created(Created {
                    message_id,
                    http_status: None,
                    timing: Timing::default(),
                    stored,
                })
            }
            BulkOutcome::ItemFailed(err) => {
                create_error(err, Timing::default(), ErrorOf::Item, &self.settle)
            }
            BulkOutcome::NotSent(err) => {
                create_error(err, Timing::default(), ErrorOf::Request, &self.settle)
            }
            BulkOutcome::Unknown(why, settle) => Sent::Unknown { why, settle },
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
    /// back for its audit fields (bulk results carry no message body).
    async fn read_back(&self, message_id: &str, job_id: &str) -> Option<CreatedMessage> {
        let checked = self.parts.ledger.stats().bulk_created(1);
        if !(self.parts.verify_audit_fields && (checked == 1 || checked.is_multiple_of(1000))) {
            return None;
        }
        match self.parts.client.message(message_id).await {
            Ok(created) => Some(created),
            Err(err) => {
                tracing::warn!(error = %err, job_id, "could not read a bulk-created message back to check its audit fields");
                None
            }
        }
    }
}

/// How bulk mode is asked to run.
pub struct Shape {
    pub batch_size: usize,
    pub job_seconds: f64,
    pub rpm: u32,
}

/// The bulk transport: heads ride jobs, except the first rows of a conversation deeper than the
/// rounds allow and the rows the batcher sends back, which go alone.
pub struct Bulk {
    jobs: Jobs,
    creates: Creates,
    /// The most rows of one conversation that ride jobs; deeper conversations send the rest
    /// first as single creates, so they do not stretch the run over hundreds of rounds.
    rounds: u64,
    batch_size: usize,
}

impl Bulk {
    /// Orders `conversations` deepest first and takes the rounds from the rule `plan` models,
    /// so that its estimate is what the run does.
    pub fn new(
        parts: Parts,
        shape: Shape,
        checkpoint: &Checkpoint,
        conversations: &mut [String],
    ) -> Result<Bulk, CheckpointError> {
        // Deepest first: a deep conversation that starts late ends alone, in thin jobs; started
        // first, its rows ride the full jobs of the shallow ones (what the lower bound counts).
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
                rpm: shape.rpm,
                batch: shape.batch_size as u64,
                job_seconds: shape.job_seconds,
            },
        );
        let settle = SettleRule {
            settle_delay: parts.settle_delay,
            assumed_job: Duration::from_secs_f64(shape.job_seconds),
        };
        let creates = Creates::new(&parts, settle);
        Ok(Bulk {
            jobs: Jobs::new(parts, creates.clone(), settle, shape.batch_size),
            creates,
            rounds: estimate.bulk.critical_path_rounds,
            batch_size: shape.batch_size,
        })
    }

    /// One job's worth of lanes, deepest first: every round then carries the deep
    /// conversations' next rows together with shallow ones, which is the packing the lower bound
    /// counts. More lanes would use up the shallow conversations early and leave the deep ones
    /// to end alone in thin jobs: fewer rounds, more requests.
    pub fn lanes(&self) -> usize {
        self.batch_size
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

/// How long jobs take, learned as they finish (an exponentially weighted mean).
#[derive(Clone, Copy)]
pub struct JobTimer {
    expected: Duration,
}

impl JobTimer {
    /// Learns from one job. `took` is measured from the POST's answer to the read that found
    /// the results, so it is never less than the wait before the first read: averaging it alone
    /// could only go up (a first guess of 1 s kept every 0.3 s job waiting a second). So a job
    /// found done on the first read shortens the wait a little (2%), and one that needed more
    /// reads raises it at once to 110% of what that job took: a second read costs a request, a
    /// late read only time. Measured: about 2 extra reads per 100 jobs (`plan` assumes 20).
    fn observe(&mut self, seen: Seen) {
        if seen.took.is_zero() {
            return;
        }
        // Reading too early costs a request; reading a little late costs only time: shrink
        // slowly, grow at once to a little over what the job took.
        self.expected = if seen.first_read {
            (self.expected * 49 / 50).max(SHORTEST_JOB_GUESS)
        } else {
            self.expected.max(seen.took * 11 / 10)
        };
    }
}

/// How a job's results showed: when (zero: never), and whether on the first read.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    took: Duration,
    first_read: bool,
}

async fn run(
    crew: Arc<Crew>,
    mut inbox: mpsc::UnboundedReceiver<Request>,
    batch_size: usize,
    quit: CancellationToken,
) {
    let mut pending: Vec<Queued> = Vec::new();
    let mut oldest = Instant::now();
    let mut jobs: tokio::task::JoinSet<Seen> = tokio::task::JoinSet::new();
    let mut timer = JobTimer {
        expected: FIRST_JOB_GUESS,
    };
    let mut reads: HashMap<String, Vec<Waiting>> = HashMap::new();
    let mut sequence = 0u64;
    let mut last_arrival = Instant::now();
    let stop = crew.parts.control.stop().clone();
    loop {
        let wake = if pending.len() >= MIN_JOB_ROWS || pending.is_empty() {
            last_arrival + LINGER
        } else {
            // Too few for a job: look again every LINGER whether others can still come (lanes
            // finishing do not wake the batcher).
            (last_arrival + LINGER).max((oldest + FILL_WAIT).min(Instant::now() + LINGER))
        };
        let wake = tokio::time::Instant::from_std(wake);
        // While a job is in flight a part-filled job waits for it (no timer: that would spin).
        let timer_armed = (!pending.is_empty() && jobs.is_empty()) || !reads.is_empty();
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
                Some(Request::Read { line, job_id, reply }) => {
                    reads.entry(job_id).or_default().push(Waiting { line, reply });
                    last_arrival = Instant::now();
                }
            },
            finished = jobs.join_next(), if !jobs.is_empty() => {
                if let Some(Ok(seen)) = finished {
                    timer.observe(seen);
                }
            }
            () = tokio::time::sleep_until(wake), if timer_armed => {}
            () = quit.cancelled() => {
                jobs.shutdown().await;
                return;
            }
            () = stop.cancelled() => {
                for queued in pending.drain(..) {
                    let _ = queued.reply.send(BulkOutcome::Stopped);
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
        // Every unfinished lane has its head here: waiting cannot bring another (the deepest
        // conversation's last rows, alone at the end, would each wait FILL_WAIT for nothing).
        let all_here =
            !pending.is_empty() && jobs.is_empty() && pending.len() >= crew.board.unfinished();
        // Enough for a job once no more heads come in; too few, once they have waited a while.
        let filled = all_here
            || (lingered && (pending.len() >= MIN_JOB_ROWS || oldest.elapsed() >= FILL_WAIT));
        if lingered {
            // Every row of a dead run's job asks within the linger: the job is read once.
            for (job_id, readers) in reads.drain() {
                let crew = Arc::clone(&crew);
                let timer_now = JobTimer {
                    expected: Duration::ZERO,
                };
                jobs.spawn(async move {
                    read_results(&crew, &job_id, readers, timer_now, Instant::now()).await;
                    Seen::default()
                });
            }
        }
        // A job that is not full goes only when none is in flight (the lanes of a job in flight
        // bring their next heads as soon as it ends) and the heads have had time to gather.
        while pending.len() >= batch_size || (filled && !pending.is_empty() && jobs.is_empty()) {
            let take = pending.len().min(batch_size);
            let rows: Vec<Queued> = pending.drain(..take).collect();
            oldest = Instant::now();
            if rows.len() < MIN_JOB_ROWS {
                for queued in rows {
                    let _ = queued.reply.send(BulkOutcome::Single);
                }
                continue;
            }
            sequence += 1;
            let batch = format!("{}-{sequence}", now_ms());
            let crew = Arc::clone(&crew);
            let timer_now = timer;
            jobs.spawn(async move { send_job(&crew, batch, rows, timer_now).await });
        }
    }
}

/// One job, from its `sending` marks to every row's answer. Returns how long it took to show
/// its results (zero when it never did).
async fn send_job(crew: &Crew, batch: String, rows: Vec<Queued>, timer: JobTimer) -> Seen {
    let lines: Vec<u64> = rows.iter().map(|queued| queued.line).collect();
    let mut items = Vec::with_capacity(rows.len());
    let mut waiting = Vec::with_capacity(rows.len());
    for Queued {
        line,
        conversation_id,
        body,
        reply,
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
        return Seen::default();
    }
    let body = Value::Array(items).to_string();
    ledger.stats().add_bulk_job(1);
    let (created, _) = crew.parts.client.create_bulk_job(&body).await;
    control.observe(&created);
    let started = Instant::now();
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
                    let wait = job_settle(crew, timer);
                    answer_all(waiting, || BulkOutcome::Unknown(why.clone(), wait));
                }
            }
            return Seen::default();
        }
    };
    if let Err(err) = ledger.writer().record_bulk_job(batch, job_id.clone()) {
        tracing::error!(error = %err, "cannot record a bulk job id");
    }
    let seen = read_results(crew, &job_id, waiting, timer, started).await;
    ledger.stats().add_bulk_job(-1);
    seen
}

/// Waits about as long as jobs take, then reads the results until they are there; answers
/// every waiting row. Returns how long the job took (zero when it never showed results).
async fn read_results(
    crew: &Crew,
    job_id: &str,
    waiting: Vec<Waiting>,
    timer: JobTimer,
    started: Instant,
) -> Seen {
    let control = &crew.parts.control;
    let mut pause = timer.expected;
    let mut failures = 0u32;
    let mut first_read = true;
    loop {
        let waited = tokio::select! {
            () = tokio::time::sleep(pause) => true,
            () = control.stop().cancelled() => false,
        };
        if !waited {
            answer_all(waiting, || BulkOutcome::Stopped);
            return Seen::default();
        }
        if !first_read {
            crew.parts.ledger.stats().add_bulk_poll();
        }
        let on_first_read = first_read;
        first_read = false;
        let read = crew.parts.client.bulk_results(job_id).await;
        control.observe(&read);
        match read {
            Ok(Some(items)) => {
                let took = started.elapsed();
                deliver(crew, job_id, items, waiting);
                return Seen {
                    took,
                    first_read: on_first_read,
                };
            }
            Ok(None) if started.elapsed() < LONGEST_JOB => {
                // Not done: look again after a part of the usual job time.
                pause = (timer.expected / 2).max(Duration::from_millis(200));
            }
            Ok(None) => {
                let why = format!("bulk job {job_id} showed no results within {LONGEST_JOB:?}");
                let wait = job_settle(crew, timer);
                answer_all(waiting, || BulkOutcome::Unknown(why.clone(), wait));
                return Seen::default();
            }
            Err(err) => match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => {
                    control.halt(Halt::Api(err));
                    answer_all(waiting, || BulkOutcome::Stopped);
                    return Seen::default();
                }
                RetryAction::RateLimited | RetryAction::NeverSent => {
                    pause = Duration::from_millis(500);
                }
                _ => {
                    failures += 1;
                    if failures >= crew.parts.max_attempts {
                        let why = format!("bulk job {job_id}'s results could not be read ({err})");
                        let wait = job_settle(crew, timer);
                        answer_all(waiting, || BulkOutcome::Unknown(why.clone(), wait));
                        return Seen::default();
                    }
                    pause = crate::retry::reconnect_delay(failures);
                }
            },
        }
    }
}

/// Answers each waiting row from the job's results, by `_clientRef`.
fn deliver(crew: &Crew, job_id: &str, items: Vec<BulkItem>, waiting: Vec<Waiting>) {
    let mut by_ref: HashMap<String, BulkItem> = items
        .into_iter()
        .filter_map(|item| Some((item.client_ref.clone()?, item)))
        .collect();
    // An item the job did not account for may still have been stored by it.
    let unaccounted = crew.settle.wait(Writing::Request);
    for Waiting { line, reply } in waiting {
        let outcome = match by_ref.remove(&client_ref(line)) {
            None => BulkOutcome::Unknown(
                format!("missing from bulk job {job_id}'s results"),
                unaccounted,
            ),
            Some(item) if item.status == "created" => match item.object_id {
                Some(message_id) => BulkOutcome::Created {
                    message_id,
                    job_id: job_id.to_string(),
                },
                None => BulkOutcome::Unknown(
                    format!("created in bulk job {job_id} without an objectId"),
                    unaccounted,
                ),
            },
            Some(item) => match item.error_status {
                Some(status) => BulkOutcome::ItemFailed(ApiError::Http {
                    status,
                    code: item.error_code,
                    message: item
                        .error_message
                        .unwrap_or_else(|| format!("bulk item error in job {job_id}")),
                    rate: RateInfo::default(),
                }),
                None => BulkOutcome::Unknown(
                    format!(
                        "bulk job {job_id} answered {:?} with no status",
                        item.status
                    ),
                    unaccounted,
                ),
            },
        };
        let _ = reply.send(outcome);
    }
}

/// How long the rows of a job that may still be running wait before they are looked up.
fn job_settle(crew: &Crew, timer: JobTimer) -> Duration {
    crew.settle.wait(Writing::Job {
        learned: timer.expected,
    })
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
        let mut timer = JobTimer {
            expected: Duration::from_secs(1),
        };
        // Read too early: the wait grows at once to a little over what the job took.
        let late = Seen {
            took: Duration::from_secs(5),
            first_read: false,
        };
        timer.observe(late);
        assert_eq!(timer.expected, Duration::from_millis(5_500));
        // Found done on the first read: the wait shrinks slowly, however long that read waited.
        let early = Seen {
            took: Duration::from_secs(5),
            first_read: true,
        };
        timer.observe(early);
        assert_eq!(timer.expected, Duration::from_millis(5_390));
        for _ in 0..500 {
            timer.observe(early);
        }
        assert_eq!(timer.expected, SHORTEST_JOB_GUESS);
        // A job that never showed results teaches nothing.
        timer.observe(Seen::default());
        assert_eq!(timer.expected, SHORTEST_JOB_GUESS);
    }

    #[test]
    fn client_refs_name_the_line() {
        assert_eq!(client_ref(42), "line-42");
    }
}
