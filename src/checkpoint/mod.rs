//! The checkpoint: one SQLite file holding one job and the fate of every input row.
//!
//! Schema lives in `migrations/` as numbered SQL files, applied at open by a small runner over
//! `PRAGMA user_version` (see `migrate`). WAL mode lets `status` read while a run writes. All
//! writes of the send phase go through one writer thread (`writer`), which groups them into
//! transactions; a row is durably `sending` before its request leaves.

mod migrate;
pub mod writer;

use std::path::{Path, PathBuf};

use crate::input::{Compression, Format};
use crate::row::ValidRow;

pub use writer::{RowResult, WriterHandle};

/// The life of a row. Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    Pending,
    Sending,
    Succeeded,
    Failed,
    Invalid,
    Duplicate,
}

impl RowState {
    pub const ALL: [RowState; 6] = [
        RowState::Pending,
        RowState::Sending,
        RowState::Succeeded,
        RowState::Failed,
        RowState::Invalid,
        RowState::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Sending => "sending",
            RowState::Succeeded => "succeeded",
            RowState::Failed => "failed",
            RowState::Invalid => "invalid",
            RowState::Duplicate => "duplicate",
        }
    }

    pub fn parse(text: &str) -> Option<RowState> {
        RowState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("checkpoint {path} was written by a newer kustomer-import (schema {found}, this build knows up to {supported})")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("no checkpoint at {path}: start a job with `kustomer-import run <INPUT> --db {path}`")]
    Missing { path: PathBuf },
    #[error(
        "checkpoint {path} holds no job: start one with `kustomer-import run <INPUT> --db {path}`"
    )]
    NoJob { path: PathBuf },
    #[error("checkpoint {path} already holds a job (input {input}); continue it with `kustomer-import resume --db {path}`, or pass another --db for a new job")]
    JobExists { path: PathBuf, input: String },
    #[error("checkpoint {path} is inconsistent: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("checkpoint writer stopped: {detail}")]
    WriterGone { detail: String },
}

impl CheckpointError {
    /// True when the disk is full or the file cannot be written: nothing more may be sent.
    pub fn is_storage_failure(&self) -> bool {
        todo!("CheckpointError::is_storage_failure")
    }
}

pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// The job's settings and staging progress, as recorded at `run`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Job {
    /// Input as the user named it (`-` for stdin).
    pub input_display: String,
    /// Absolute path read (for stdin, the spooled copy beside the checkpoint).
    pub input_path: PathBuf,
    pub input_size: u64,
    pub input_sha256: String,
    pub format: Format,
    pub compression: Compression,
    pub base_url: String,
    /// RFC 3339 UTC, identical on every message of the job.
    pub imported_at: String,
    pub audit_fields: bool,
    pub created_by: Option<String>,
    /// IANA zone name for timestamps without offset.
    pub timezone: String,
    pub ignore_unknown: bool,
    /// Further settings as a JSON object (concurrency and the like), for `status`.
    pub settings: serde_json::Value,
    pub tool_version: String,
    pub created_at_ms: i64,
    /// Highest input line whose row is staged (0 before any).
    pub staged_through_line: u64,
    pub staging_complete: bool,
}

/// One row to stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedRow {
    pub line: u64,
    pub byte_offset: u64,
    pub byte_len: u64,
    pub kind: StagedKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StagedKind {
    Valid(ValidRow),
    Invalid {
        reason: String,
        conversation_id: Option<String>,
        external_id: Option<String>,
    },
}

/// Counts of rows by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub pending: u64,
    pub sending: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub invalid: u64,
    pub duplicate: u64,
}

impl StateCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.sending + self.succeeded + self.failed + self.invalid + self.duplicate
    }
}

/// A row of a conversation that still has work, in send order.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedRow {
    pub line: u64,
    pub external_id: String,
    pub state: RowState,
    /// For failed rows: whether the failure was transient (a retry may succeed).
    pub retryable: bool,
    pub attempts: u32,
}

/// Which failed rows `resume --retry-failed` puts back to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryScope {
    Transient,
    All,
}

pub struct Checkpoint {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl Checkpoint {
    /// Opens or creates the checkpoint for writing and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let _ = path;
        todo!()
    }

    /// Opens an existing checkpoint for writing; a missing file is an error.
    pub fn open_existing(path: &Path) -> Result<Checkpoint> {
        let _ = path;
        todo!()
    }

    /// Opens an existing checkpoint read-only; never blocks a writer in another process.
    pub fn open_read_only(path: &Path) -> Result<Checkpoint> {
        let _ = path;
        todo!()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn job(&self) -> Result<Option<Job>> {
        todo!()
    }

    /// Records a new job; refuses with `JobExists` when the checkpoint already holds one.
    pub fn create_job(&mut self, job: &Job) -> Result<()> {
        let _ = job;
        todo!()
    }

    /// Stages rows in batches. Rows with a line already staged are skipped (resumed staging);
    /// a valid row whose externalId is already taken is stored as `duplicate`.
    pub fn stager(&mut self) -> Stager<'_> {
        todo!()
    }

    pub fn counts(&self) -> Result<StateCounts> {
        todo!()
    }

    /// Conversations that have rows `pending` or `sending`, ordered by their first input line.
    pub fn conversations_with_work(&self) -> Result<Vec<String>> {
        todo!()
    }

    /// The rows of one conversation that are pending, sending or failed, in send order
    /// (sentAt, then line).
    pub fn conversation_queue(&self, conversation_id: &str) -> Result<Vec<QueuedRow>> {
        let _ = conversation_id;
        todo!()
    }

    /// The exact body stored for a row.
    pub fn body(&self, line: u64) -> Result<String> {
        let _ = line;
        todo!()
    }

    /// Puts failed rows back to pending; returns how many.
    pub fn requeue_failed(&mut self, scope: RetryScope) -> Result<u64> {
        let _ = scope;
        todo!()
    }

    /// Starts the writer thread for the send phase, on its own connection.
    pub fn writer(&self) -> Result<WriterHandle> {
        todo!()
    }
}

/// Batched staging; see [`Checkpoint::stager`].
pub struct Stager<'a> {
    checkpoint: &'a mut Checkpoint,
}

impl Stager<'_> {
    /// Adds one row; returns the state it was stored in.
    pub fn add(&mut self, row: StagedRow) -> Result<RowState> {
        let _ = (row, &self.checkpoint);
        todo!()
    }

    /// Commits what is buffered and marks staging complete.
    pub fn finish(self) -> Result<()> {
        todo!()
    }
}
