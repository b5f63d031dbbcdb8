//! How a head row reaches the API: one create per message ([`single`]), or bulk jobs that carry
//! the heads of many conversations at once ([`bulk`]). The engine (`send::row`) hands the
//! transport a [`Head`] and gets back one [`Sent`]: created (with what the audit check needs),
//! failed (with what the failure calls for), unknown (with how long to settle), or stopped. The
//! mode is matched once, in [`Transport::build`].
//!
//! Both transports settle the rows a dead bulk run left in a job by reading that job
//! ([`Transport::read_job`]), through the batcher of [`bulk`], which in single mode sends no
//! jobs.

pub mod bulk;
pub mod single;

use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::client::{ApiClient, ApiError, CreatedMessage, Timing};
use crate::retry::{RequestKind, RetryAction};

use super::control::Control;
use super::lanes::LaneBoard;
use super::ledger::Ledger;
use super::options::SendMode;

/// The row the engine hands over: the head of its conversation, the only one of it in flight.
pub struct Head<'a> {
    pub line: u64,
    pub conversation_id: &'a str,
    pub body: &'a str,
    /// The conversation's rows still to send, this one included (asked only when it matters:
    /// whether the row rides a bulk job).
    pub rows_left: &'a (dyn Fn() -> u64 + Sync),
}

/// What a transport remembers about a head row between its tries; kept by the engine while the
/// row's lane is parked, read and written only here.
#[derive(Debug, Default)]
pub struct HeadState {
    /// The batcher sent the row back to go alone: its next tries are single creates too.
    alone: bool,
    /// When an earlier run last sent the row (epoch ms): a dead run's job is read once it
    /// should be done, not before.
    sent_at_ms: Option<i64>,
}

impl HeadState {
    /// The state of a row an earlier run last sent at `sent_at_ms`, if it did.
    pub fn sent_at(sent_at_ms: Option<i64>) -> HeadState {
        HeadState {
            alone: false,
            sent_at_ms,
        }
    }
}

/// What became of a head row handed to a transport.
pub enum Sent {
    Created(Created),
    Failed(Failure),
    /// The row may or may not exist: wait `settle`, then look it up. Never resent blind.
    Unknown {
        why: String,
        settle: Duration,
    },
    /// The bulk job holding the row may still be running after `--max-job-wait`: the row ends
    /// `failed` with `outcome_unknown` (its conversation held), and `resume` reads the job
    /// again before anything else.
    JobOutlasted {
        why: String,
    },
    /// The run is stopping; the row stays as it is (resume settles it).
    Stopped,
}

/// A created message, and what its audit check needs.
pub struct Created {
    pub message_id: String,
    pub http_status: Option<u16>,
    pub timing: Timing,
    /// The message as Kustomer stored it, when the transport has it: a single create's answer;
    /// for bulk, the sampled read-back (see [`bulk`]).
    pub stored: Option<CreatedMessage>,
}

/// A create known not to have stored the row.
pub struct Failure {
    pub error: ApiError,
    pub timing: Timing,
    pub remedy: Remedy,
}

/// What a failed create calls for. An answer that may hide a write is not a failure: it is a
/// [`Sent::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Refused outright (401, 403) or sent elsewhere (3xx): nothing more may be sent.
    StopRun,
    /// Permanent for this row (400, 404, 409, 422, ...).
    FailRow,
    /// 429: sent again when the common pause ends; uses no attempt.
    RateLimited,
    /// Nothing reached the API: sent again after a reconnect wait; uses no attempt.
    NeverSent,
}

/// A create request's error, by the one classification ([`ApiError::retry_action`]): an answer
/// that may follow a write is an unknown outcome.
pub fn create_error(error: ApiError, timing: Timing, settle: &SettleRule) -> Sent {
    let remedy = match error.retry_action(RequestKind::Create) {
        RetryAction::OutcomeUnknown | RetryAction::RetryRead => {
            return Sent::Unknown {
                why: error.to_string(),
                settle: settle.wait(Writing::Request),
            }
        }
        RetryAction::StopRun => Remedy::StopRun,
        RetryAction::FailRow => Remedy::FailRow,
        RetryAction::RateLimited => Remedy::RateLimited,
        RetryAction::NeverSent => Remedy::NeverSent,
    };
    Sent::Failed(Failure {
        error,
        timing,
        remedy,
    })
}

/// What a bulk item's own error status means for its row (the API note, section Bulk):
/// 400/404/409/422 permanent, 429 refused before processing (sent again); `None` for anything
/// else (5xx, 401, an unexpected status): the item may have been stored, an unknown outcome.
pub fn item_error_remedy(status: u16) -> Option<Remedy> {
    match status {
        400 | 404 | 409 | 422 => Some(Remedy::FailRow),
        429 => Some(Remedy::RateLimited),
        _ => None,
    }
}

/// What may still be writing a row whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writing {
    /// A request whose answer was lost, or an item of a finished job that did not account
    /// for it.
    Request,
    /// A bulk job that may exist and still be running; the slowest job seen so far took
    /// `slowest` (zero: none seen yet).
    Job { slowest: Duration },
}

/// How long an unknown outcome waits before its lookup, so that a slow write has landed before a
/// lookup says it did not happen. The one rule, for both transports and for rows a dead run left
/// `sending`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SettleRule {
    /// `--settle-delay`.
    pub settle_delay: Duration,
    /// How long a job is taken to last until one is measured (`--job-seconds`).
    pub assumed_job: Duration,
}

impl SettleRule {
    /// The settle delay; for a job that may still run (a POST whose answer was lost), three
    /// times the slowest job seen so far (or as assumed, if longer) when that is longer, so the
    /// job could have finished three times over before a lookup says its items do not exist.
    pub fn wait(&self, writing: Writing) -> Duration {
        match writing {
            Writing::Request => self.settle_delay,
            Writing::Job { slowest } => self.settle_delay.max(slowest.max(self.assumed_job) * 3),
        }
    }
}

/// What a transport works with, given explicitly.
#[derive(Clone)]
pub struct Parts {
    pub client: Arc<ApiClient>,
    pub ledger: Arc<Ledger>,
    pub control: Arc<Control>,
    pub settle_delay: Duration,
    /// Read a sample of bulk-created messages back to check their audit fields.
    pub verify_audit_fields: bool,
    /// How long every request may fail to connect before the run stops (exit 3).
    pub unreachable_after: Duration,
    /// The longest wait a read of a job's results may make at once (`--max-pause`).
    pub max_pause: Duration,
    /// How long a job's rows wait for its results before they end `outcome_unknown`.
    pub max_job_wait: Duration,
}

/// The two ways a head row goes out, behind one interface.
pub enum Transport {
    Single(single::Single),
    Bulk(bulk::Bulk),
}

impl Transport {
    /// The transport for `mode`. Bulk also orders `conversations` the way it packs best and
    /// decides, from the `plan` model at `rpm`, how many rows of a deep conversation ride jobs.
    pub fn build(
        mode: SendMode,
        rpm: u32,
        parts: Parts,
        checkpoint: &Checkpoint,
        conversations: &mut [String],
    ) -> Result<Transport, CheckpointError> {
        match mode {
            SendMode::Single => Ok(Transport::Single(single::Single::new(parts))),
            SendMode::Bulk {
                batch_size,
                job_seconds,
                max_jobs,
                ..
            } => bulk::Bulk::new(
                parts,
                bulk::Pace {
                    batch_size,
                    rpm,
                    job_seconds,
                    max_jobs,
                },
                checkpoint,
                conversations,
            )
            .map(Transport::Bulk),
        }
    }

    /// Lanes worked at once, given the workers asked for.
    pub fn lanes(&self, workers: usize) -> usize {
        match self {
            Transport::Single(_) => workers,
            Transport::Bulk(bulk) => bulk.lanes(),
        }
    }

    pub fn settle(&self) -> &SettleRule {
        self.jobs().settle()
    }

    /// Starts the batcher's task, which ends with [`Transport::shutdown`].
    pub fn start(&self, board: Arc<LaneBoard>) {
        self.jobs().start(board);
    }

    /// Sends the head row (marked `sending` first) and says what became of it.
    pub async fn create(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
    ) -> Result<Sent, CheckpointError> {
        match self {
            Transport::Single(single) => single.create(head).await,
            Transport::Bulk(bulk) => bulk.create(head, state).await,
        }
    }

    /// Reads the job a dead run sent the head row in, instead of sending it again.
    pub async fn read_job(
        &self,
        head: &Head<'_>,
        state: &mut HeadState,
        job_id: &str,
    ) -> Result<Sent, CheckpointError> {
        self.jobs().read(head, state, job_id).await
    }

    /// Ends the batcher's task (its jobs have no durable effect left to make: their rows are
    /// `sending` with their ids).
    pub async fn shutdown(&self) {
        self.jobs().shutdown().await;
    }

    fn jobs(&self) -> &bulk::Jobs {
        match self {
            Transport::Single(single) => single.jobs(),
            Transport::Bulk(bulk) => bulk.jobs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RateInfo;

    fn http(status: u16) -> ApiError {
        ApiError::Http {
            status,
            code: None,
            message: "x".into(),
            rate: RateInfo::default(),
        }
    }

    const RULE: SettleRule = SettleRule {
        settle_delay: Duration::from_secs(30),
        assumed_job: Duration::from_secs(5),
    };

    fn remedy(sent: Sent) -> Option<Remedy> {
        match sent {
            Sent::Failed(failure) => Some(failure.remedy),
            _ => None,
        }
    }

    #[test]
    fn a_request_5xx_is_unknown_and_an_item_5xx_is_unknown_too() {
        let request = create_error(http(503), Timing::default(), &RULE);
        assert!(matches!(request, Sent::Unknown { settle, .. } if settle == RULE.settle_delay));
        assert_eq!(
            remedy(create_error(http(422), Timing::default(), &RULE)),
            Some(Remedy::FailRow)
        );
        for permanent in [400, 404, 409, 422] {
            assert_eq!(item_error_remedy(permanent), Some(Remedy::FailRow));
        }
        assert_eq!(item_error_remedy(429), Some(Remedy::RateLimited));
        for unknown in [500, 502, 503, 504, 520, 401, 413, 0] {
            assert_eq!(item_error_remedy(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn a_job_that_may_still_run_settles_three_slowest_job_times() {
        assert_eq!(RULE.wait(Writing::Request), Duration::from_secs(30));
        let slowest = Duration::from_secs(20);
        assert_eq!(RULE.wait(Writing::Job { slowest }), Duration::from_secs(60));
        let fast = Duration::from_millis(300);
        assert_eq!(
            RULE.wait(Writing::Job { slowest: fast }),
            Duration::from_secs(30)
        );
    }
}
