//! How to run the send phase: plain values, built by the command from its validated config
//! (`config` parses the flags into these types; the engine never reads a flag or a screen).

use std::path::PathBuf;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// How long the client waits for an answer unless told otherwise (`--request-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a conversation waits after an unknown outcome before its lookup (`--settle-delay`).
pub const DEFAULT_SETTLE_DELAY: Duration = Duration::from_secs(30);
/// After an interrupt, how long in-flight requests may take to finish (README: "15 s").
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// How long after an unknown outcome its first, early lookup goes (`--early-lookup`): a
/// message found then proves itself; nothing is resent before the full settle delay.
pub const DEFAULT_EARLY_LOOKUP: Duration = Duration::from_secs(2);

/// One message per request, or bulk jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SendMode {
    Single,
    Bulk {
        batch_size: usize,
        /// How long one job is taken to last (`--job-seconds`).
        job_seconds: f64,
    },
}

impl SendMode {
    pub fn is_bulk(self) -> bool {
        matches!(self, SendMode::Bulk { .. })
    }
}

/// How many failed rows one run may produce before it stops (`--max-errors`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorBudget {
    Rows(u64),
    Percent(f64),
}

impl ErrorBudget {
    /// The most failed rows allowed when `rows_to_send` rows have work.
    pub fn allowed(self, rows_to_send: u64) -> u64 {
        match self {
            ErrorBudget::Rows(n) => n,
            ErrorBudget::Percent(percent) => {
                ((rows_to_send as f64) * percent / 100.0).floor() as u64
            }
        }
    }
}

/// How to run the send phase.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub checkpoint: PathBuf,
    /// Conversations worked on at once.
    pub workers: usize,
    pub retry: RetryPolicy,
    /// Failed rows this run may produce before it stops ([`ErrorBudget::allowed`]).
    pub max_failed_rows: u64,
    /// Check each created message's createdAt/createdBy against what was sent.
    pub verify_audit_fields: bool,
    /// After an interrupt, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// After an unknown outcome, how long the row's conversation waits before the lookup, so a
    /// slow write has landed before we decide it did not happen.
    pub settle_delay: Duration,
    /// After an unknown outcome, when a first lookup goes: a hit settles the row at once, a miss
    /// waits for the full settle delay. Zero, or not shorter than the settle delay: no early
    /// lookup.
    pub early_lookup: Duration,
    /// Whether the key may read conversations (`org.permission.conversation.read`), as the
    /// preflight read its roles (None: unreadable). A row whose externalId the lookup finds only
    /// in another conversation is settled by reading its own conversation's messages unless
    /// this is `Some(false)`.
    pub reads_conversations: Option<bool>,
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
    pub mode: SendMode,
    /// The requests per minute the job may spend: in bulk mode it decides how many rows of a
    /// deep conversation ride jobs (the rest go as single creates), as `plan` models it.
    pub rpm: u32,
}

impl SendOptions {
    /// `run`'s defaults for a checkpoint and a number of workers (the benchmark's runs).
    pub fn standard(checkpoint: PathBuf, workers: usize) -> SendOptions {
        SendOptions {
            checkpoint,
            workers,
            retry: RetryPolicy::default(),
            max_failed_rows: u64::MAX,
            verify_audit_fields: true,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            settle_delay: DEFAULT_SETTLE_DELAY,
            early_lookup: DEFAULT_EARLY_LOOKUP,
            reads_conversations: Some(true),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            skip_existing: false,
            reimport_guard: true,
            unreachable_after: RetryPolicy::default().max_total_wait,
            max_pause: crate::throttle::DEFAULT_MAX_PAUSE,
            mode: SendMode::Single,
            rpm: u32::MAX / 2,
        }
    }
}
