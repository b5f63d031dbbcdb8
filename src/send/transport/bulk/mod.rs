//! The bulk transport: the head rows of up to `--batch-size` different conversations in one
//! `POST /v1/messages/bulk`, their results read back by `_clientRef` (the API note, section
//! Bulk).
//!
//! Each lane still has at most one row in flight, across all jobs and single creates, so order
//! holds whatever order the API processes items or finishes jobs in. A lane hands its head row
//! to the batcher ([`Jobs`]) and waits for that row's [`BulkOutcome`], which [`Jobs`] turns into
//! the engine's [`Sent`].
//!
//! Pace ([`next_move`](batcher::next_move)): heads go deepest-remaining-first
//! (highest-level-first scheduling of the conversations' chains). A head at least as deep as
//! every conversation away ([`away`]) is on the critical path and goes as soon as its returning
//! job's other heads are in; other heads go only in full jobs, while fewer rows are away than
//! the even spread of the rows left over the deepest conversation's rounds needs, so shallow
//! conversations fill the deep ones' later jobs instead of running out early. Never more jobs
//! in flight than the budget pays for during one job time ([`crate::plan::jobs_in_flight`],
//! with the job time learned as jobs finish, `--job-seconds` until then), at most
//! `--max-jobs`; fewer than [`MIN_JOB_ROWS`] heads go as single creates. A conversation deeper
//! than the rounds `plan` allows sends its first rows alone ([`Bulk::create`]).
//!
//! Results ([`judge`](results::judge)): final only when `GET /v1/bulk/{id}` says `complete`, or when every
//! `_clientRef` sent has a result; a partial list never decides anything. Each job is read when
//! it is likely done ([`JobTimer`]: the 95th percentile of the job time; its batches first:
//! most jobs cost their POST and that one read; the job itself only when no listed batch is
//! unfinished), soon again after a near miss ([`poll_after`](timer::poll_after)), then at most
//! once per learned job time, up to `--max-job-wait`; after that
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

mod away;
mod batcher;
mod results;
mod timer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::client::{ApiError, CreatedMessage, Timing};

use super::super::control::Halt;
use super::super::lanes::LaneBoard;
use super::single::Creates;
use super::{create_error, Created, Failure, Head, HeadState, Parts, Remedy, Sent, SettleRule};
use batcher::{run, Crew, Queued, Request};
pub use timer::Pace;
use timer::{JobTimer, SHORTEST_JOB_GUESS};

/// Fewer rows than this go as single creates: a job costs at least two requests.
pub const MIN_JOB_ROWS: usize = 3;

/// What became of a row handed to the batcher.
pub enum BulkOutcome {
    Created {
        message_id: String,
        job_id: String,
    },
    /// The item's own error, known not stored: permanent or refused before processing
    /// ([`item_error_remedy`](super::item_error_remedy)).
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
        self.pace.lanes()
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

fn answer_all(waiting: Vec<Waiting>, outcome: impl Fn() -> BulkOutcome) {
    for Waiting { reply, .. } in waiting {
        let _ = reply.send(outcome());
    }
}

/// The `_clientRef` of a row: its input line, stable across runs.
fn client_ref(line: u64) -> String {
    format!("line-{line}")
}
