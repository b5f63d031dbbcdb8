//! The checkpoint: one SQLite file holding one job and the fate of every input row.
//!
//! Schema lives in `migrations/` as numbered SQL files, applied at open by a small runner over
//! `PRAGMA user_version` (see `migrate`). WAL mode lets `status` read while a run writes. All
//! writes of the send phase go through one writer thread (`writer`), which groups them into
//! transactions; a row is durably `sending` before its request leaves.
//!
//! Split by who uses it: `store` (opening, the job record, the job lock: `app`), `staging`
//! (`app`'s pipeline), `queue` (what `send` sends next, and the writer it records through),
//! `reports` (the read queries behind `status` and `report`), `pacing` (the adaptive share's
//! figures) and `codes` (the error codes a row's result is recorded with, used as
//! `checkpoint::codes::…`). Callers use the paths re-exported here, never the other submodules'.

pub mod codes;
mod depths;
mod migrate;
pub mod pacing;
mod queue;
mod reports;
mod resolve;
mod staging;
mod store;
#[cfg(test)]
pub(crate) mod test_support;
pub mod writer;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode};

pub use depths::ConversationDepth;
pub use pacing::{PacingSnapshot, PacingWriter};
pub use queue::{KnownMessage, QueuedRow, RetryScope};
pub use reports::{
    Activity, ConversationTiming, ErrorClass, ErrorGroup, LatencyCount, RejectedRow, ResultBucket,
    RowOutcome, StateCounts,
};
pub use resolve::{
    CustomerRecord, Entity, EntityState, ResolutionCounts, ResolutionWork, ResolvedBy, TicketRecord,
};
pub use staging::{StagedKind, StagedRow, Stager};
pub use store::{companion, is_empty_database, run_in_progress, Job, JobLock, SEND_SETTINGS_KEY};
pub(crate) use store::{open_read_write, Durability};
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
    #[error("another kustomer-import process is working on checkpoint {path}; wait for it to end (or stop it) before running or resuming this job, so that no row is sent twice")]
    Busy { path: PathBuf },
    #[error("{path} is not a kustomer-import checkpoint: {reason}; name the checkpoint file of a job with --db")]
    NotACheckpoint { path: PathBuf, reason: String },
    #[error("cannot lock checkpoint {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CheckpointError {
    /// True when the disk is full or the file cannot be written: nothing more may be sent.
    pub fn is_storage_failure(&self) -> bool {
        let CheckpointError::Sqlite { source, .. } = self else {
            return false;
        };
        // The primary code covers every extended variant (SQLITE_IOERR_FSYNC, SQLITE_READONLY_DBMOVED...).
        matches!(
            source.sqlite_error_code(),
            Some(
                ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::ReadOnly
                    | ErrorCode::CannotOpen
                    | ErrorCode::PermissionDenied
                    | ErrorCode::NotADatabase
                    | ErrorCode::DatabaseCorrupt
            )
        )
    }
}

pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// Attaches the checkpoint's path to a SQLite error.
pub(crate) trait SqliteResultExt<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> SqliteResultExt<T> for rusqlite::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| CheckpointError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub struct Checkpoint {
    conn: Connection,
    path: PathBuf,
    /// The file's schema version (`PRAGMA user_version`): a read-only open applies no
    /// migrations, so queries of newer columns ask first.
    schema: i64,
}

impl Checkpoint {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, detail: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn parse_state(&self, text: &str) -> Result<RowState> {
        RowState::parse(text).ok_or_else(|| self.corrupt(format!("unknown row state {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failure_classification() {
        let storage = |code: i32| CheckpointError::Sqlite {
            path: PathBuf::from("x"),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        assert!(storage(rusqlite::ffi::SQLITE_FULL).is_storage_failure());
        assert!(storage(rusqlite::ffi::SQLITE_IOERR_FSYNC).is_storage_failure());
        assert!(storage(rusqlite::ffi::SQLITE_READONLY_DBMOVED).is_storage_failure());
        assert!(storage(rusqlite::ffi::SQLITE_CANTOPEN).is_storage_failure());
        assert!(storage(rusqlite::ffi::SQLITE_NOTADB).is_storage_failure());
        assert!(!storage(rusqlite::ffi::SQLITE_BUSY).is_storage_failure());
        assert!(!storage(rusqlite::ffi::SQLITE_CONSTRAINT).is_storage_failure());
        assert!(!CheckpointError::Missing {
            path: PathBuf::from("x")
        }
        .is_storage_failure());
    }
}
