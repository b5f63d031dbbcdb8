//! The checkpoint: one SQLite file holding one job and the fate of every input row.
//!
//! Schema lives in `migrations/` as numbered SQL files, applied at open by a small runner over
//! `PRAGMA user_version` (see `migrate`). WAL mode lets `status` read while a run writes. All
//! writes of the send phase go through one writer thread (`writer`), which groups them into
//! transactions; a row is durably `sending` before its request leaves.

mod depths;
mod migrate;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::input::{Compression, Format};
use crate::row::ValidRow;

pub use depths::ConversationDepth;

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

/// Held by a process for as long as it stages or sends a job. Two processes sending the same
/// checkpoint would both send its pending rows, so the second is refused.
///
/// Two OS file locks (flock), both gone with the process however it ends, so a `kill -9` never
/// leaves a stale lock:
/// - on the database file itself, for exclusivity: it follows the file's identity, so a symlink,
///   `./x` against `/abs/x`, or a hard link all meet the same lock. SQLite's own locks are POSIX
///   record locks, a separate kind that flock does not disturb; but closing any descriptor of the
///   file drops this process's POSIX locks, so the lock is released only after every connection
///   of the command is closed (declare it before them);
/// - on `<canonical path>.lock`, which [`run_in_progress`] probes: a reader such as `status` must
///   not open and close a descriptor of the database file while its own connection reads it.
#[derive(Debug)]
pub struct JobLock {
    _database: std::fs::File,
    _probe: std::fs::File,
}

/// Tries to take the job lock before a held one is taken to mean another run.
const LOCK_ATTEMPTS: u32 = 10;
const LOCK_RETRY_PAUSE: Duration = Duration::from_millis(20);

impl JobLock {
    pub fn acquire(checkpoint: &Path) -> Result<JobLock> {
        let lock_error = |source| CheckpointError::Lock {
            path: checkpoint.to_path_buf(),
            source,
        };
        let database = std::fs::File::open(checkpoint).map_err(lock_error)?;
        let canonical = std::fs::canonicalize(checkpoint).map_err(lock_error)?;
        let probe = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(companion(&canonical, ".lock"))
            .map_err(lock_error)?;
        // `status` takes the probe lock shared for an instant to see whether a run is live: a
        // few short retries keep that probe from refusing a run that starts at the same moment.
        for file in [&database, &probe] {
            let mut attempts = 0;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) if attempts + 1 < LOCK_ATTEMPTS => {
                        attempts += 1;
                        std::thread::sleep(LOCK_RETRY_PAUSE);
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(CheckpointError::Busy {
                            path: checkpoint.to_path_buf(),
                        })
                    }
                    Err(std::fs::TryLockError::Error(source)) => return Err(lock_error(source)),
                }
            }
        }
        Ok(JobLock {
            _database: database,
            _probe: probe,
        })
    }
}

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

/// How long a connection waits for another's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows staged per transaction: large enough that commits cost little, small enough that a
/// killed staging loses only seconds of work.
const STAGING_BATCH_ROWS: u64 = 2_000;

/// How much a connection promises about durability at COMMIT.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Durability {
    /// WAL + NORMAL: a commit survives a killed process, not necessarily a power loss.
    Process,
    /// WAL + FULL: a commit survives a power loss (the send phase's `sending` marks).
    PowerLoss,
}

/// Settings every connection gets, read-only or not.
fn configure(conn: &Connection, path: &Path) -> Result<()> {
    // Readers in WAL mode wait only while a crashed writer's WAL is being recovered; writers
    // wait for each other (the writer thread and a `requeue_failed`, say).
    conn.busy_timeout(BUSY_TIMEOUT).at(path)?;
    // Without the query planner stability guarantee, SQLite re-prepares a statement on every
    // new binding when a bound value might change its plan (the externalId lookup did, on each
    // staged row, tripling staging time). Our plans never depend on the values.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .at(path)?;
    // Error groups are formed on the message with its ids and numbers replaced.
    conn.create_scalar_function(
        "normalised_message",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let message: Option<String> = ctx.get(0)?;
            Ok(message.map(|m| crate::text::normalise_message(&m)))
        },
    )
    .at(path)?;
    Ok(())
}

/// `<checkpoint><suffix>`: the SQLite companions (`-wal`, `-shm`) and our `.lock`.
pub fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// True while a `run` or `resume` process holds the job's lock: the job is being worked on now.
/// Never creates the lock file, so it works on read-only media. Takes the lock shared for an
/// instant only when it is free.
pub fn run_in_progress(checkpoint: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(checkpoint) else {
        return false;
    };
    let Ok(file) = std::fs::File::open(companion(&canonical, ".lock")) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// Refuses a `--db` that cannot be a checkpoint file before SQLite sees it: a directory, or a
/// file in a directory that does not exist.
fn check_checkpoint_path(path: &Path) -> Result<()> {
    let not_a_checkpoint = |reason: &str| CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if path.is_dir() {
        return Err(not_a_checkpoint("it is a directory"));
    }
    if !path.exists() {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(not_a_checkpoint("its directory does not exist"));
        }
    }
    Ok(())
}

/// A SQLite error that means "this file is not a database at all".
fn not_a_database(path: &Path, err: CheckpointError) -> CheckpointError {
    match &err {
        CheckpointError::Sqlite { source, .. }
            if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) =>
        {
            CheckpointError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: "it is not a SQLite database".to_string(),
            }
        }
        _ => err,
    }
}

/// `file:` URI for `path` with `immutable=1`: SQLite reads it without locks and never creates a
/// `-wal` or `-shm` beside it.
fn immutable_uri(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path).map_err(|err| CheckpointError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })?;
    let mut uri = String::from("file:");
    for byte in absolute.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(*byte))
            }
            other => uri.push_str(&format!("%{other:02X}")),
        }
    }
    uri.push_str("?immutable=1");
    Ok(uri)
}

/// Opens a read-write connection in WAL mode with our pragmas; no schema work.
pub(crate) fn open_read_write(path: &Path, durability: Durability) -> Result<Connection> {
    // No SQLITE_OPEN_URI: a user's path starting with `file:` must stay a path.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).at(path)?;
    configure(&conn, path)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .at(path)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CheckpointError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "cannot switch to WAL journal mode (got {mode}); is the file on a network filesystem?"
            ),
        });
    }
    let synchronous = match durability {
        Durability::Process => "NORMAL",
        Durability::PowerLoss => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .at(path)?;
    Ok(conn)
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Csv => "csv",
        Format::Ndjson => "ndjson",
    }
}

fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
    }
}

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

    /// The count for one state.
    pub fn get(&self, state: RowState) -> u64 {
        match state {
            RowState::Pending => self.pending,
            RowState::Sending => self.sending,
            RowState::Succeeded => self.succeeded,
            RowState::Failed => self.failed,
            RowState::Invalid => self.invalid,
            RowState::Duplicate => self.duplicate,
        }
    }

    fn slot(&mut self, state: RowState) -> &mut u64 {
        match state {
            RowState::Pending => &mut self.pending,
            RowState::Sending => &mut self.sending,
            RowState::Succeeded => &mut self.succeeded,
            RowState::Failed => &mut self.failed,
            RowState::Invalid => &mut self.invalid,
            RowState::Duplicate => &mut self.duplicate,
        }
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
    /// When its last request was sent, ms since the Unix epoch.
    pub last_attempt_ms: Option<i64>,
}

/// A message this job created, as recorded: a lookup by its externalId must find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMessage {
    pub line: u64,
    pub external_id: String,
    pub conversation_id: String,
    pub message_id: String,
}

/// Which failed rows `resume --retry-failed` puts back to pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryScope {
    Transient,
    All,
}

/// When sends happened, for rates and elapsed time; all times in ms since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Earliest first attempt of any row.
    pub first_attempt_ms: Option<i64>,
    /// Latest time a row became succeeded or failed.
    pub last_result_ms: Option<i64>,
    /// Rows with a final result (succeeded or failed).
    pub finished: u64,
    /// Rows whose result came at or after the `since_ms` asked for.
    pub finished_since: u64,
    /// Earliest last attempt among the rows whose result came at or after `since_ms`: when the
    /// work behind those results began, so a run younger than the window (or resumed within it)
    /// is measured over the time it actually ran.
    pub recent_work_started_ms: Option<i64>,
}

/// Rows sharing one error code and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorGroup {
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub count: u64,
    /// The first few input lines with this error, ascending.
    pub example_lines: Vec<u64>,
}

/// Everything recorded about one input row except its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOutcome {
    pub line: u64,
    pub external_id: Option<String>,
    pub conversation_id: Option<String>,
    pub state: RowState,
    pub message_id: Option<String>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
}

/// States whose rows carry an error worth reporting.
const ERROR_STATES_SQL: &str = "('failed', 'invalid', 'duplicate')";

pub struct Checkpoint {
    conn: Connection,
    path: PathBuf,
    /// The file's schema version (`PRAGMA user_version`): a read-only open applies no
    /// migrations, so queries of newer columns ask first.
    schema: i64,
}

impl Checkpoint {
    /// Opens or creates the checkpoint for writing and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        check_checkpoint_path(path)?;
        let mut conn =
            open_read_write(path, Durability::Process).map_err(|err| not_a_database(path, err))?;
        migrate::migrate(&mut conn, path).map_err(|err| not_a_database(path, err))?;
        Ok(Checkpoint {
            conn,
            path: path.to_path_buf(),
            schema: migrate::newest_version(),
        })
    }

    /// Opens an existing checkpoint for writing; a missing file is an error.
    pub fn open_existing(path: &Path) -> Result<Checkpoint> {
        check_checkpoint_path(path)?;
        if !path.exists() {
            return Err(CheckpointError::Missing {
                path: path.to_path_buf(),
            });
        }
        // Another program's database must not get our tables: only a checkpoint is opened for
        // writing.
        drop(Checkpoint::open_read_only(path)?);
        Checkpoint::open(path)
    }

    /// Opens an existing checkpoint read-only; never blocks a writer in another process and never
    /// writes beside the file, so it works on read-only media and on a copy mailed to someone.
    ///
    /// While a run is live (its `-wal` file exists) the connection reads the WAL too. Otherwise
    /// the file is read as immutable: no lock, no `-wal`/`-shm` created. Applies no migrations:
    /// a file from an older build is read as it is.
    pub fn open_read_only(path: &Path) -> Result<Checkpoint> {
        check_checkpoint_path(path)?;
        if !path.exists() {
            return Err(CheckpointError::Missing {
                path: path.to_path_buf(),
            });
        }
        let conn = if companion(path, "-wal").exists() {
            match Checkpoint::read_only_connection(path, false) {
                Ok(conn) => conn,
                Err(err) => {
                    // A `-wal` left by a crashed run on read-only media cannot be recovered
                    // here: read the last checkpointed state rather than nothing.
                    tracing::warn!(
                        error = %err,
                        "cannot read the checkpoint's -wal file; showing the state as of its last checkpoint"
                    );
                    Checkpoint::read_only_connection(path, true)?
                }
            }
        } else {
            Checkpoint::read_only_connection(path, true)?
        };
        let found = migrate::user_version(&conn, path).map_err(|err| not_a_database(path, err))?;
        let supported = migrate::newest_version();
        if found > supported {
            return Err(CheckpointError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        if found < 1 {
            return Err(CheckpointError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: "it has no checkpoint schema".to_string(),
            });
        }
        Ok(Checkpoint {
            conn,
            path: path.to_path_buf(),
            schema: found,
        })
    }

    fn read_only_connection(path: &Path, immutable: bool) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if immutable {
            // A URI only for this form, built from the path: a user's `file:`-looking path
            // stays a path.
            Connection::open_with_flags(immutable_uri(path)?, flags | OpenFlags::SQLITE_OPEN_URI)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .at(path)?;
        configure(&conn, path)?;
        // Opening is lazy: read the header now so that a file that is not a database says so.
        migrate::user_version(&conn, path).map_err(|err| not_a_database(path, err))?;
        Ok(conn)
    }

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

    pub fn job(&self) -> Result<Option<Job>> {
        struct Stored {
            input_display: String,
            input_path: String,
            input_size: u64,
            input_sha256: String,
            format: String,
            compression: String,
            base_url: String,
            imported_at: String,
            audit_fields: bool,
            created_by: Option<String>,
            timezone: String,
            ignore_unknown: bool,
            settings_json: String,
            tool_version: String,
            created_at_ms: i64,
            staged_through_line: u64,
            staging_complete: bool,
        }
        let stored = self
            .conn
            .query_row(
                "SELECT input_display, input_path, input_size, input_sha256, format, compression,
                        base_url, imported_at, audit_fields, created_by, timezone, ignore_unknown,
                        settings_json, tool_version, created_at_ms, staged_through_line,
                        staging_complete
                 FROM job WHERE id = 1",
                [],
                |row| {
                    Ok(Stored {
                        input_display: row.get(0)?,
                        input_path: row.get(1)?,
                        input_size: row.get(2)?,
                        input_sha256: row.get(3)?,
                        format: row.get(4)?,
                        compression: row.get(5)?,
                        base_url: row.get(6)?,
                        imported_at: row.get(7)?,
                        audit_fields: row.get(8)?,
                        created_by: row.get(9)?,
                        timezone: row.get(10)?,
                        ignore_unknown: row.get(11)?,
                        settings_json: row.get(12)?,
                        tool_version: row.get(13)?,
                        created_at_ms: row.get(14)?,
                        staged_through_line: row.get(15)?,
                        staging_complete: row.get(16)?,
                    })
                },
            )
            .optional()
            .at(&self.path)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let format = match stored.format.as_str() {
            "csv" => Format::Csv,
            "ndjson" => Format::Ndjson,
            other => return Err(self.corrupt(format!("unknown input format {other:?}"))),
        };
        let compression = match stored.compression.as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            other => return Err(self.corrupt(format!("unknown compression {other:?}"))),
        };
        let settings = serde_json::from_str(&stored.settings_json)
            .map_err(|err| self.corrupt(format!("job settings are not JSON: {err}")))?;
        Ok(Some(Job {
            input_display: stored.input_display,
            input_path: PathBuf::from(stored.input_path),
            input_size: stored.input_size,
            input_sha256: stored.input_sha256,
            format,
            compression,
            base_url: stored.base_url,
            imported_at: stored.imported_at,
            audit_fields: stored.audit_fields,
            created_by: stored.created_by,
            timezone: stored.timezone,
            ignore_unknown: stored.ignore_unknown,
            settings,
            tool_version: stored.tool_version,
            created_at_ms: stored.created_at_ms,
            staged_through_line: stored.staged_through_line,
            staging_complete: stored.staging_complete,
        }))
    }

    /// Records a new job; refuses with `JobExists` when the checkpoint already holds one.
    /// Replaces the job's settings (a `resume` that changed some records what it now uses).
    pub fn update_settings(&mut self, settings: &serde_json::Value) -> Result<()> {
        let changed = self
            .conn
            .execute(
                "UPDATE job SET settings_json = ?1, updated_at_ms = ?2 WHERE id = 1",
                params![settings.to_string(), now_ms()],
            )
            .at(&self.path)?;
        if changed == 0 {
            return Err(CheckpointError::NoJob {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    pub fn create_job(&mut self, job: &Job) -> Result<()> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(&path)?;
        let existing: Option<String> = tx
            .query_row("SELECT input_display FROM job WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()
            .at(&path)?;
        if let Some(input) = existing {
            return Err(CheckpointError::JobExists { path, input });
        }
        tx.execute(
            "INSERT INTO job (id, input_display, input_path, input_size, input_sha256, format,
                              compression, base_url, imported_at, audit_fields, created_by,
                              timezone, ignore_unknown, settings_json, tool_version, created_at_ms,
                              staged_through_line, staging_complete, updated_at_ms)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18)",
            params![
                job.input_display,
                // Non-UTF-8 paths are stored lossily; the sha256 check at resume catches a
                // mismatch rather than reading a different file silently.
                job.input_path.to_string_lossy(),
                job.input_size,
                job.input_sha256,
                format_name(job.format),
                compression_name(job.compression),
                job.base_url,
                job.imported_at,
                job.audit_fields,
                job.created_by,
                job.timezone,
                job.ignore_unknown,
                job.settings.to_string(),
                job.tool_version,
                job.created_at_ms,
                job.staged_through_line,
                job.staging_complete,
                now_ms(),
            ],
        )
        .at(&path)?;
        tx.commit().at(&path)
    }

    /// Stages rows in batches. Rows with a line already staged are skipped (resumed staging);
    /// a valid row whose externalId is already taken is stored as `duplicate`.
    pub fn stager(&mut self) -> Stager<'_> {
        Stager {
            checkpoint: self,
            in_transaction: false,
            rows_in_batch: 0,
            highest_line: None,
            aborted: None,
        }
    }

    pub fn counts(&self) -> Result<StateCounts> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM row GROUP BY state")
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        let mut counts = StateCounts::default();
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get(0).at(&self.path)?;
            let count: u64 = row.get(1).at(&self.path)?;
            *counts.slot(self.parse_state(&state)?) = count;
        }
        Ok(counts)
    }

    /// Conversations that have rows `pending` or `sending`, ordered by their first input line
    /// (the first line of any of their sendable rows, whatever its state).
    pub fn conversations_with_work(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT conversation_id FROM row
                 WHERE state NOT IN ('invalid', 'duplicate')
                   AND conversation_id IN
                       (SELECT conversation_id FROM row WHERE state IN ('pending', 'sending'))
                 GROUP BY conversation_id
                 ORDER BY MIN(line)",
            )
            .at(&self.path)?;
        let ids = stmt
            .query_map([], |row| row.get(0))
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<String>>>()
            .at(&self.path)?;
        Ok(ids)
    }

    /// The rows of one conversation that are pending, sending or failed, in send order
    /// (sentAt, then line).
    pub fn conversation_queue(&self, conversation_id: &str) -> Result<Vec<QueuedRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT line, external_id, state, retryable, attempts, last_attempt_ms FROM row
                 WHERE conversation_id = ?1 AND state IN ('pending', 'sending', 'failed')
                 ORDER BY sent_at_micros, line",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([conversation_id]).at(&self.path)?;
        let mut queue = Vec::new();
        while let Some(row) = rows.next().at(&self.path)? {
            let line: u64 = row.get(0).at(&self.path)?;
            let external_id: Option<String> = row.get(1).at(&self.path)?;
            let state: String = row.get(2).at(&self.path)?;
            let external_id = external_id
                .ok_or_else(|| self.corrupt(format!("row at line {line} has no externalId")))?;
            queue.push(QueuedRow {
                line,
                external_id,
                state: self.parse_state(&state)?,
                retryable: row.get("retryable").at(&self.path)?,
                attempts: row.get("attempts").at(&self.path)?,
                last_attempt_ms: row.get("last_attempt_ms").at(&self.path)?,
            });
        }
        Ok(queue)
    }

    /// The exact body stored for a row.
    pub fn body(&self, line: u64) -> Result<String> {
        let body: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT body FROM row WHERE line = ?1")
            .and_then(|mut stmt| stmt.query_row([line], |row| row.get(0)).optional())
            .at(&self.path)?;
        match body {
            Some(Some(body)) => Ok(body),
            Some(None) => Err(self.corrupt(format!("row at line {line} has no body"))),
            None => Err(self.corrupt(format!("no row at line {line}"))),
        }
    }

    /// Puts failed rows back to pending; returns how many.
    ///
    /// Attempts and attempt times are kept: they describe what already happened. Rows whose
    /// outcome is unknown are not touched: they may exist, so every run looks them up first
    /// ([`Checkpoint::reopen_unknown_outcomes`]) and never sends them blind.
    pub fn requeue_failed(&mut self, scope: RetryScope) -> Result<u64> {
        let only_transient = match scope {
            RetryScope::Transient => " AND retryable = 1",
            RetryScope::All => "",
        };
        let sql = format!(
            "UPDATE row SET state = 'pending', http_status = NULL, error_code = NULL,
                            error_message = NULL, retryable = 0, finished_ms = NULL
             WHERE state = 'failed' AND error_code IS NOT '{}'{only_transient}",
            crate::send::OUTCOME_UNKNOWN
        );
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .at(&path)?;
        let changed = tx.execute(&sql, []).at(&path)?;
        tx.execute("UPDATE job SET updated_at_ms = ?1 WHERE id = 1", [now_ms()])
            .at(&path)?;
        tx.commit().at(&path)?;
        Ok(changed as u64)
    }

    /// Turns failed rows with `code` (outcome unknown) back into `sending`, the state whose
    /// rows are looked up before anything is sent; returns how many.
    pub fn reopen_unknown_outcomes(&mut self, code: &str) -> Result<u64> {
        let changed = self
            .conn
            .execute(
                "UPDATE row SET state = 'sending', finished_ms = NULL
                 WHERE state = 'failed' AND error_code = ?1",
                [code],
            )
            .at(&self.path)?;
        Ok(changed as u64)
    }

    /// A message this job created (the lowest line), to prove the lookup route on.
    pub fn known_created_message(&self) -> Result<Option<KnownMessage>> {
        self.conn
            .query_row(
                "SELECT line, external_id, conversation_id, message_id FROM row
                 WHERE state = 'succeeded' AND message_id IS NOT NULL
                   AND external_id IS NOT NULL AND conversation_id IS NOT NULL
                   AND error_code IS NULL
                 ORDER BY line LIMIT 1",
                [],
                |row| {
                    Ok(KnownMessage {
                        line: row.get("line")?,
                        external_id: row.get("external_id")?,
                        conversation_id: row.get("conversation_id")?,
                        message_id: row.get("message_id")?,
                    })
                },
            )
            .optional()
            .at(&self.path)
    }

    /// Whether any row of the job was ever sent.
    pub fn anything_sent(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM row WHERE attempts > 0 OR state = 'succeeded')",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Starts the writer thread for the send phase, on its own connection.
    pub fn writer(&self) -> Result<WriterHandle> {
        let conn = open_read_write(&self.path, Durability::PowerLoss)?;
        WriterHandle::start(conn, self.path.clone())
    }

    /// Runs `read` inside one read transaction, so every query in it sees the same snapshot
    /// even while a run commits (WAL readers never block the writer).
    pub fn read_consistent<T, E>(
        &self,
        read: impl FnOnce(&Checkpoint) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<CheckpointError>,
    {
        let tx = self.conn.unchecked_transaction().at(&self.path)?;
        let value = read(self)?;
        // Nothing was written: ending the read transaction either way releases the snapshot.
        tx.rollback().at(&self.path)?;
        Ok(value)
    }

    /// Send timing for rates: see [`Activity`].
    pub fn activity(&self, since_ms: i64) -> Result<Activity> {
        let (first_attempt_ms, last_result_ms, finished, finished_since, recent_work_started_ms) =
            self.conn
                .query_row(
                    "SELECT (SELECT MIN(first_attempt_ms) FROM row WHERE first_attempt_ms IS NOT NULL),
                        (SELECT MAX(finished_ms) FROM row WHERE finished_ms IS NOT NULL),
                        (SELECT COUNT(*) FROM row WHERE finished_ms IS NOT NULL),
                        (SELECT COUNT(*) FROM row WHERE finished_ms IS NOT NULL
                                                    AND finished_ms >= ?1),
                        (SELECT MIN(last_attempt_ms) FROM row WHERE finished_ms IS NOT NULL
                                                    AND finished_ms >= ?1)",
                    [since_ms],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    },
                )
                .at(&self.path)?;
        Ok(Activity {
            first_attempt_ms,
            last_result_ms,
            finished,
            finished_since,
            recent_work_started_ms,
        })
    }

    /// Pending rows held back because an earlier row (in send order) of their conversation
    /// failed transiently: they wait so the conversation stays in order.
    pub fn held_count(&self) -> Result<u64> {
        self.conn
            .query_row(
                "WITH first_failure AS (
                     SELECT conversation_id, sent_at_micros, line FROM (
                         SELECT conversation_id, sent_at_micros, line,
                                ROW_NUMBER() OVER (PARTITION BY conversation_id
                                                   ORDER BY sent_at_micros, line) AS rank
                         FROM row WHERE state = 'failed' AND retryable = 1)
                     WHERE rank = 1)
                 SELECT COUNT(*) FROM row AS held JOIN first_failure AS f
                     ON held.conversation_id = f.conversation_id
                 WHERE held.state = 'pending'
                   AND (held.sent_at_micros, held.line) > (f.sent_at_micros, f.line)",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Calls `each` for groups of failed, invalid and duplicate rows sharing an error code and
    /// normalised message (ids and numbers replaced, see `text::normalise_message`), largest first, with up to `examples` lines each; at most `limit` groups.
    pub fn for_each_error_group<E>(
        &self,
        limit: Option<u64>,
        examples: u32,
        mut each: impl FnMut(ErrorGroup) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let sql = format!(
            "WITH normalised AS (
                 SELECT line, error_code, normalised_message(error_message) AS error_message
                 FROM row WHERE state IN {ERROR_STATES_SQL}),
             ranked AS (
                 SELECT line, error_code, error_message,
                        ROW_NUMBER() OVER (PARTITION BY error_code, error_message ORDER BY line)
                            AS rank,
                        COUNT(*) OVER (PARTITION BY error_code, error_message) AS size
                 FROM normalised)
             SELECT error_code, error_message, size, group_concat(line, ',' ORDER BY line)
             FROM ranked WHERE rank <= ?1
             GROUP BY error_code, error_message
             ORDER BY size DESC, error_code, error_message
             LIMIT ?2"
        );
        // SQLite reads a negative LIMIT as "no limit".
        let limit = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
        let mut rows = stmt.query(params![examples, limit]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            let lines: String = row.get(3).at(&self.path)?;
            let example_lines = lines
                .split(',')
                .map(|line| {
                    line.parse::<u64>()
                        .map_err(|_| self.corrupt(format!("bad example line list {lines:?}")))
                })
                .collect::<Result<Vec<u64>>>()?;
            each(ErrorGroup {
                error_code: row.get(0).at(&self.path)?,
                error_message: row.get(1).at(&self.path)?,
                count: row.get(2).at(&self.path)?,
                example_lines,
            })?;
        }
        Ok(())
    }

    /// Calls `each` for every row in line order, streaming (constant memory).
    pub fn for_each_row_outcome<E>(
        &self,
        mut each: impl FnMut(&RowOutcome) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT line, external_id, conversation_id, state, message_id, http_status,
                        error_code, error_message, attempts, first_attempt_ms, last_attempt_ms
                 FROM row ORDER BY line",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get(3).at(&self.path)?;
            let outcome = RowOutcome {
                line: row.get(0).at(&self.path)?,
                external_id: row.get(1).at(&self.path)?,
                conversation_id: row.get(2).at(&self.path)?,
                state: self.parse_state(&state)?,
                message_id: row.get(4).at(&self.path)?,
                http_status: row.get(5).at(&self.path)?,
                error_code: row.get(6).at(&self.path)?,
                error_message: row.get(7).at(&self.path)?,
                attempts: row.get(8).at(&self.path)?,
                first_attempt_ms: row.get(9).at(&self.path)?,
                last_attempt_ms: row.get(10).at(&self.path)?,
            };
            each(&outcome)?;
        }
        Ok(())
    }
}

/// An input row that `report --rejects` copies back out of the input: invalid, or failed for
/// good (a failure a retry would not fix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub line: u64,
    /// Span of the row in the decompressed input stream.
    pub byte_offset: u64,
    pub byte_len: u64,
    pub state: RowState,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// Results that arrived in one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResultBucket {
    /// Bucket number counted from the origin asked for (bucket `n` starts at
    /// `origin + n * width`).
    pub index: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// How many results took exactly `latency_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyCount {
    pub latency_ms: u64,
    pub count: u64,
}

/// Rows sharing one error code, with their most frequent messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorClass {
    pub error_code: Option<String>,
    /// The state of the class's rows (failed, invalid or duplicate); the most frequent one when
    /// a code spans several.
    pub state: RowState,
    pub count: u64,
    /// Distinct messages under this code.
    pub distinct_messages: u64,
    /// The most frequent messages, largest first, each with its first few lines.
    pub top_messages: Vec<ErrorGroup>,
}

/// Send timing of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTiming {
    pub conversation_id: String,
    /// Rows of the conversation that were to be sent (invalid and duplicate rows excluded).
    pub rows: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub first_attempt_ms: i64,
    pub last_result_ms: i64,
}

impl ConversationTiming {
    /// Last result minus first attempt: how long the conversation kept a send slot busy.
    pub fn duration_ms(&self) -> i64 {
        self.last_result_ms - self.first_attempt_ms
    }
}

/// Read queries behind `report --rejects` and `report --format html`. Each aggregates in SQL or
/// streams, so memory stays bounded however many rows the job has.
impl Checkpoint {
    /// Offset of the first staged row in the decompressed input: the bytes before it are the
    /// CSV header (and BOM). None when no row is staged.
    pub fn first_row_offset(&self) -> Result<Option<u64>> {
        self.conn
            .query_row("SELECT MIN(byte_offset) FROM row", [], |row| row.get(0))
            .at(&self.path)
    }

    /// Calls `each` for every invalid row and every row failed for good (`retryable = 0`), in
    /// input order.
    pub fn for_each_rejected_row<E>(
        &self,
        mut each: impl FnMut(&RejectedRow) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT line, byte_offset, byte_len, state, error_code, error_message FROM row
                 WHERE state = 'invalid' OR (state = 'failed' AND retryable = 0)
                 ORDER BY byte_offset",
            )
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            let state: String = row.get(3).at(&self.path)?;
            let rejected = RejectedRow {
                line: row.get(0).at(&self.path)?,
                byte_offset: row.get(1).at(&self.path)?,
                byte_len: row.get(2).at(&self.path)?,
                state: self.parse_state(&state)?,
                error_code: row.get(4).at(&self.path)?,
                error_message: row.get(5).at(&self.path)?,
            };
            each(&rejected)?;
        }
        Ok(())
    }

    /// Failed rows that a retry may fix (`resume --retry-failed`).
    pub fn retryable_failed_count(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM row WHERE state = 'failed' AND retryable = 1",
                [],
                |row| row.get(0),
            )
            .at(&self.path)
    }

    /// Earliest and latest result time (`finished_ms`), or None before any result.
    pub fn result_span(&self) -> Result<Option<(i64, i64)>> {
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT MIN(finished_ms), MAX(finished_ms) FROM row WHERE finished_ms IS NOT NULL",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .at(&self.path)?;
        Ok(first.zip(last))
    }

    /// Succeeded and failed results per bucket of `width_ms` from `origin_ms`, non-empty
    /// buckets only, in time order. Results before `origin_ms` are left out.
    pub fn result_buckets(&self, origin_ms: i64, width_ms: i64) -> Result<Vec<ResultBucket>> {
        if width_ms <= 0 {
            return Err(self.corrupt(format!("bucket width must be positive, got {width_ms}")));
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT (finished_ms - ?1) / ?2 AS bucket,
                        SUM(state = 'succeeded'), SUM(state = 'failed')
                 FROM row WHERE finished_ms IS NOT NULL AND finished_ms >= ?1
                 GROUP BY bucket ORDER BY bucket",
            )
            .at(&self.path)?;
        let buckets = stmt
            .query_map(params![origin_ms, width_ms], |row| {
                Ok(ResultBucket {
                    index: row.get(0)?,
                    succeeded: row.get(1)?,
                    failed: row.get(2)?,
                })
            })
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .at(&self.path)?;
        Ok(buckets)
    }

    /// Calls `each` for every distinct recorded latency, ascending, with how many results took
    /// it. Latencies are whole milliseconds, so there are few distinct values.
    pub fn for_each_latency<E>(
        &self,
        each: impl FnMut(LatencyCount) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        self.for_each_duration("latency_ms", each)
    }

    /// Like [`Checkpoint::for_each_latency`], for the time attempts waited for the rate budget
    /// and a concurrency slot (none in a checkpoint older than that column).
    pub fn for_each_budget_wait<E>(
        &self,
        each: impl FnMut(LatencyCount) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        if self.schema < 3 {
            return Ok(());
        }
        self.for_each_duration("budget_wait_ms", each)
    }

    /// Distinct values of a millisecond column with their counts, ascending.
    fn for_each_duration<E>(
        &self,
        column: &'static str,
        mut each: impl FnMut(LatencyCount) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<CheckpointError>,
    {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {column}, COUNT(*) FROM row WHERE {column} IS NOT NULL
                 GROUP BY {column} ORDER BY {column}"
            ))
            .at(&self.path)?;
        let mut rows = stmt.query([]).at(&self.path)?;
        while let Some(row) = rows.next().at(&self.path)? {
            each(LatencyCount {
                latency_ms: row.get(0).at(&self.path)?,
                count: row.get(1).at(&self.path)?,
            })?;
        }
        Ok(())
    }

    /// Failed, invalid and duplicate rows grouped by error code, largest first: at most
    /// `classes` codes, each with up to `messages` top messages and `examples` lines each.
    pub fn error_classes(
        &self,
        classes: u64,
        messages: u64,
        examples: u64,
    ) -> Result<Vec<ErrorClass>> {
        let sql = format!(
            "WITH normalised AS (
                 SELECT line, state, error_code, normalised_message(error_message) AS error_message
                 FROM row WHERE state IN {ERROR_STATES_SQL}),
             errors AS (
                 SELECT line, state, error_code, error_message,
                        ROW_NUMBER() OVER (PARTITION BY error_code, error_message ORDER BY line)
                            AS line_rank
                 FROM normalised),
             by_message AS (
                 SELECT error_code, error_message, COUNT(*) AS size, MIN(state) AS state,
                        group_concat(CASE WHEN line_rank <= ?3 THEN line END, ',' ORDER BY line)
                            AS lines
                 FROM errors GROUP BY error_code, error_message),
             by_state AS (
                 SELECT error_code, state, SUM(size) AS size FROM by_message
                 GROUP BY error_code, state),
             by_code AS (
                 SELECT error_code, SUM(size) AS size, COUNT(*) AS distinct_messages,
                        (SELECT s.state FROM by_state AS s WHERE s.error_code IS m.error_code
                         ORDER BY s.size DESC, s.state LIMIT 1) AS state
                 FROM by_message AS m GROUP BY error_code
                 ORDER BY size DESC, error_code LIMIT ?1),
             ranked AS (
                 SELECT m.error_code, m.error_message, m.size, m.lines,
                        ROW_NUMBER() OVER (PARTITION BY m.error_code
                                           ORDER BY m.size DESC, m.error_message) AS message_rank
                 FROM by_message AS m JOIN by_code AS c ON m.error_code IS c.error_code)
             SELECT c.error_code, c.state, c.size, c.distinct_messages,
                    r.error_message, r.size, r.lines
             FROM by_code AS c JOIN ranked AS r ON r.error_code IS c.error_code
             WHERE r.message_rank <= ?2
             ORDER BY c.size DESC, c.error_code, r.message_rank"
        );
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(&sql).at(&self.path)?;
        let mut rows = stmt
            .query(params![clamp(classes), clamp(messages), clamp(examples)])
            .at(&self.path)?;
        let mut found: Vec<ErrorClass> = Vec::new();
        while let Some(row) = rows.next().at(&self.path)? {
            let error_code: Option<String> = row.get(0).at(&self.path)?;
            let state: String = row.get(1).at(&self.path)?;
            let lines: Option<String> = row.get(6).at(&self.path)?;
            let example_lines = lines
                .unwrap_or_default()
                .split(',')
                .filter(|line| !line.is_empty())
                .map(|line| {
                    line.parse::<u64>()
                        .map_err(|_| self.corrupt(format!("bad example line list {line:?}")))
                })
                .collect::<Result<Vec<u64>>>()?;
            let message = ErrorGroup {
                error_code: error_code.clone(),
                error_message: row.get(4).at(&self.path)?,
                count: row.get(5).at(&self.path)?,
                example_lines,
            };
            match found.last_mut() {
                Some(class) if class.error_code == error_code => class.top_messages.push(message),
                _ => found.push(ErrorClass {
                    error_code,
                    state: self.parse_state(&state)?,
                    count: row.get(2).at(&self.path)?,
                    distinct_messages: row.get(3).at(&self.path)?,
                    top_messages: vec![message],
                }),
            }
        }
        Ok(found)
    }

    /// The `limit` conversations that took longest from their first attempt to their last
    /// result, longest first.
    pub fn slowest_conversations(&self, limit: u64) -> Result<Vec<ConversationTiming>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT conversation_id, COUNT(*), SUM(state = 'succeeded'), SUM(state = 'failed'),
                        MIN(first_attempt_ms) AS first, MAX(finished_ms) AS last
                 FROM row
                 WHERE conversation_id IS NOT NULL AND state NOT IN ('invalid', 'duplicate')
                 GROUP BY conversation_id
                 HAVING first IS NOT NULL AND last IS NOT NULL
                 ORDER BY last - first DESC, conversation_id
                 LIMIT ?1",
            )
            .at(&self.path)?;
        let timings = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                Ok(ConversationTiming {
                    conversation_id: row.get(0)?,
                    rows: row.get(1)?,
                    succeeded: row.get(2)?,
                    failed: row.get(3)?,
                    first_attempt_ms: row.get(4)?,
                    last_result_ms: row.get(5)?,
                })
            })
            .at(&self.path)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .at(&self.path)?;
        Ok(timings)
    }
}

/// Batched staging; see [`Checkpoint::stager`].
///
/// One transaction stays open across [`Stager::add`] calls and is committed every
/// `STAGING_BATCH_ROWS` rows together with `job.staged_through_line`, so a killed staging
/// resumes exactly after the last committed batch. Dropped without [`Stager::finish`], the open
/// batch is rolled back.
pub struct Stager<'a> {
    checkpoint: &'a mut Checkpoint,
    in_transaction: bool,
    rows_in_batch: u64,
    /// Highest line in the table (committed or in the open batch); lines above it need no
    /// lookup. Loaded on first use.
    highest_line: Option<u64>,
    /// Set after an error rolled the batch back: later rows would silently leave a gap.
    aborted: Option<String>,
}

impl Stager<'_> {
    /// Adds one row; returns the state it was stored in.
    pub fn add(&mut self, row: StagedRow) -> Result<RowState> {
        self.check_not_aborted()?;
        let outcome = self.add_unguarded(row);
        if let Err(err) = &outcome {
            self.abort(err);
        }
        outcome
    }

    /// Commits what is buffered and marks staging complete.
    pub fn finish(mut self) -> Result<()> {
        self.check_not_aborted()?;
        let outcome = self.finish_unguarded();
        if let Err(err) = &outcome {
            self.abort(err);
        }
        outcome
    }

    fn check_not_aborted(&self) -> Result<()> {
        match &self.aborted {
            Some(first) => Err(CheckpointError::WriterGone {
                detail: format!(
                    "staging stopped after an earlier error ({first}); rows since the last \
                     commit were rolled back and will be staged again on resume"
                ),
            }),
            None => Ok(()),
        }
    }

    fn abort(&mut self, err: &CheckpointError) {
        self.aborted = Some(err.to_string());
        self.rollback_open_batch();
    }

    fn rollback_open_batch(&mut self) {
        // SQLite may already have rolled back by itself (disk full, I/O error).
        if self.in_transaction && !self.checkpoint.conn.is_autocommit() {
            if let Err(err) = self.checkpoint.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %err, "rolling back the open staging batch failed");
            }
        }
        self.in_transaction = false;
        self.rows_in_batch = 0;
        self.highest_line = None;
    }

    fn begin_if_needed(&mut self) -> Result<()> {
        if !self.in_transaction {
            let cp = &self.checkpoint;
            cp.conn.execute_batch("BEGIN IMMEDIATE").at(&cp.path)?;
            self.in_transaction = true;
        }
        Ok(())
    }

    fn add_unguarded(&mut self, row: StagedRow) -> Result<RowState> {
        self.begin_if_needed()?;
        let cp = &*self.checkpoint;
        let highest = match self.highest_line {
            Some(highest) => highest,
            None => cp
                .conn
                .query_row("SELECT COALESCE(MAX(line), 0) FROM row", [], |r| r.get(0))
                .at(&cp.path)?,
        };
        if row.line <= highest {
            let existing: Option<String> = cp
                .conn
                .prepare_cached("SELECT state FROM row WHERE line = ?1")
                .and_then(|mut stmt| stmt.query_row([row.line], |r| r.get(0)).optional())
                .at(&cp.path)?;
            if let Some(state) = existing {
                self.highest_line = Some(highest);
                return cp.parse_state(&state);
            }
        }
        let state = stage_row(cp, &row)?;
        self.highest_line = Some(highest.max(row.line));
        self.rows_in_batch += 1;
        if self.rows_in_batch >= STAGING_BATCH_ROWS {
            self.commit_batch(false)?;
        }
        Ok(state)
    }

    fn finish_unguarded(&mut self) -> Result<()> {
        self.begin_if_needed()?;
        self.commit_batch(true)
    }

    /// Commits the open batch with the staging progress it reaches.
    fn commit_batch(&mut self, complete: bool) -> Result<()> {
        let cp = &*self.checkpoint;
        let highest = match self.highest_line {
            Some(highest) => highest,
            None => cp
                .conn
                .query_row("SELECT COALESCE(MAX(line), 0) FROM row", [], |r| r.get(0))
                .at(&cp.path)?,
        };
        let updated = cp
            .conn
            .prepare_cached(STAGING_PROGRESS_SQL)
            .and_then(|mut stmt| stmt.execute(params![highest, complete, now_ms()]))
            .at(&cp.path)?;
        if updated == 0 {
            return Err(CheckpointError::NoJob {
                path: cp.path.clone(),
            });
        }
        cp.conn.execute_batch("COMMIT").at(&cp.path)?;
        self.in_transaction = false;
        self.rows_in_batch = 0;
        self.highest_line = Some(highest);
        Ok(())
    }
}

const INSERT_ROW_SQL: &str = "INSERT INTO row (line, byte_offset, byte_len, external_id,
    conversation_id, sent_at, sent_at_micros, body, state, error_code, error_message)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// The first valid row holding an externalId: the owner a later row would duplicate.
const EXTERNAL_ID_OWNER_SQL: &str = "SELECT line FROM row
    WHERE external_id = ?1 AND state NOT IN ('invalid', 'duplicate')
    ORDER BY line LIMIT 1";

const STAGING_PROGRESS_SQL: &str = "UPDATE job SET
    staged_through_line = MAX(staged_through_line, ?1),
    staging_complete = MAX(staging_complete, ?2),
    updated_at_ms = ?3
    WHERE id = 1";

/// Inserts one new row (its line is known to be absent) and returns the state it got.
fn stage_row(cp: &Checkpoint, row: &StagedRow) -> Result<RowState> {
    let insert = |state: RowState,
                  valid: Option<&ValidRow>,
                  conversation_id: Option<&str>,
                  external_id: Option<&str>,
                  error: Option<(&str, &str)>|
     -> Result<()> {
        cp.conn
            .prepare_cached(INSERT_ROW_SQL)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    row.line,
                    row.byte_offset,
                    row.byte_len,
                    external_id,
                    conversation_id,
                    valid.map(|v| v.sent_at.as_str()),
                    valid.map(|v| v.sent_at_micros),
                    valid.map(|v| v.body.as_str()),
                    state.as_str(),
                    error.map(|(code, _)| code),
                    error.map(|(_, message)| message),
                ])
            })
            .at(&cp.path)?;
        Ok(())
    };
    match &row.kind {
        StagedKind::Valid(valid) => {
            let taken_by: Option<u64> = cp
                .conn
                .prepare_cached(EXTERNAL_ID_OWNER_SQL)
                .and_then(|mut stmt| {
                    stmt.query_row([&valid.external_id], |r| r.get(0))
                        .optional()
                })
                .at(&cp.path)?;
            let conversation_id = Some(valid.conversation_id.as_str());
            let external_id = Some(valid.external_id.as_str());
            match taken_by {
                Some(first_line) => {
                    let message = format!(
                        "externalId {} already used by line {first_line}",
                        valid.external_id
                    );
                    insert(
                        RowState::Duplicate,
                        Some(valid),
                        conversation_id,
                        external_id,
                        Some(("duplicate_external_id", &message)),
                    )?;
                    Ok(RowState::Duplicate)
                }
                None => {
                    insert(
                        RowState::Pending,
                        Some(valid),
                        conversation_id,
                        external_id,
                        None,
                    )?;
                    Ok(RowState::Pending)
                }
            }
        }
        StagedKind::Invalid {
            reason,
            conversation_id,
            external_id,
        } => {
            insert(
                RowState::Invalid,
                None,
                conversation_id.as_deref(),
                external_id.as_deref(),
                Some(("invalid_row", reason)),
            )?;
            Ok(RowState::Invalid)
        }
    }
}

impl Drop for Stager<'_> {
    fn drop(&mut self) {
        self.rollback_open_batch();
    }
}

/// Builders shared by this module's tests and the writer's and report's.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub(crate) fn sample_job() -> Job {
        Job {
            input_display: "messages.csv".to_string(),
            input_path: PathBuf::from("/data/messages.csv"),
            input_size: 1234,
            input_sha256: "ab".repeat(32),
            format: Format::Csv,
            compression: Compression::Gzip,
            base_url: "https://acme.api.kustomerapp.com".to_string(),
            imported_at: "2024-05-01T12:00:00.000Z".to_string(),
            audit_fields: true,
            created_by: Some("0123456789abcdef01234567".to_string()),
            timezone: "Europe/Paris".to_string(),
            ignore_unknown: false,
            settings: serde_json::json!({"concurrency": 8, "rate": 250}),
            tool_version: "0.1.0".to_string(),
            created_at_ms: 1_714_564_800_000,
            staged_through_line: 0,
            staging_complete: false,
        }
    }

    pub(crate) fn valid(
        line: u64,
        conversation: &str,
        external_id: &str,
        micros: i64,
    ) -> StagedRow {
        StagedRow {
            line,
            byte_offset: line * 100,
            byte_len: 100,
            kind: StagedKind::Valid(ValidRow {
                conversation_id: conversation.to_string(),
                external_id: external_id.to_string(),
                sent_at: format!("t{micros}"),
                sent_at_micros: micros,
                body: format!("{{\"externalId\":\"{external_id}\",\"line\":{line}}}"),
            }),
        }
    }

    pub(crate) fn invalid(line: u64, reason: &str) -> StagedRow {
        StagedRow {
            line,
            byte_offset: line * 100,
            byte_len: 100,
            kind: StagedKind::Invalid {
                reason: reason.to_string(),
                conversation_id: Some("c-bad".to_string()),
                external_id: None,
            },
        }
    }

    /// A checkpoint in a temporary directory holding [`sample_job`].
    pub(crate) fn checkpoint_with_job() -> (tempfile::TempDir, Checkpoint) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cp = Checkpoint::open(&dir.path().join("cp.db")).expect("open");
        cp.create_job(&sample_job()).expect("create job");
        (dir, cp)
    }

    /// Stages `rows` and finishes staging.
    pub(crate) fn stage(cp: &mut Checkpoint, rows: Vec<StagedRow>) {
        let mut stager = cp.stager();
        for row in rows {
            stager.add(row).expect("stage row");
        }
        stager.finish().expect("finish staging");
    }

    /// A second, independent connection, to see only what is committed.
    pub(crate) fn observer(cp: &Checkpoint) -> Connection {
        Connection::open(cp.path()).expect("observer connection")
    }

    pub(crate) fn state_of(conn: &Connection, line: u64) -> String {
        conn.query_row("SELECT state FROM row WHERE line = ?1", [line], |r| {
            r.get(0)
        })
        .expect("row exists")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn a_run_is_in_progress_exactly_while_the_job_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        drop(Checkpoint::open(&path).unwrap());
        assert!(!run_in_progress(&path), "no lock file: nothing running");
        let lock = JobLock::acquire(&path).unwrap();
        assert!(run_in_progress(&path));
        drop(lock);
        assert!(!run_in_progress(&path));
        // The probe leaves the lock free for the next run.
        drop(JobLock::acquire(&path).unwrap());
    }

    #[test]
    fn read_only_opening_writes_nothing_beside_a_closed_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        drop(Checkpoint::open(&path).unwrap());
        let before = std::fs::read(&path).unwrap();
        let reader = Checkpoint::open_read_only(&path).unwrap();
        reader.counts().unwrap();
        drop(reader);
        assert!(!companion(&path, "-wal").exists());
        assert!(!companion(&path, "-shm").exists());
        assert_eq!(std::fs::read(&path).unwrap(), before);

        std::fs::write(dir.path().join("notes.txt"), "not a database at all").unwrap();
        for (path, reason) in [
            (dir.path().join("notes.txt"), "not a SQLite database"),
            (dir.path().to_path_buf(), "is a directory"),
            (dir.path().join("gone/cp.db"), "directory does not exist"),
        ] {
            match Checkpoint::open_read_only(&path) {
                Err(err @ CheckpointError::NotACheckpoint { .. }) => {
                    assert!(err.to_string().contains(reason), "{err}");
                    assert!(!err.is_storage_failure());
                }
                Err(other) => panic!("{path:?}: {other}"),
                Ok(_) => panic!("{path:?} opened"),
            }
        }
    }

    #[test]
    fn open_creates_and_open_existing_requires_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        assert!(matches!(
            Checkpoint::open_existing(&path),
            Err(CheckpointError::Missing { .. })
        ));
        assert!(matches!(
            Checkpoint::open_read_only(&path),
            Err(CheckpointError::Missing { .. })
        ));
        let cp = Checkpoint::open(&path).unwrap();
        assert_eq!(cp.job().unwrap(), None);
        let mode: String = cp
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(cp);
        let cp = Checkpoint::open_existing(&path).unwrap();
        assert_eq!(cp.path(), path);
    }

    #[test]
    fn read_only_refuses_foreign_and_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        let err = Checkpoint::open_read_only(&foreign).err().unwrap();
        assert!(
            err.to_string().contains("not a kustomer-import checkpoint"),
            "{err}"
        );

        let newer = dir.path().join("newer.db");
        drop(Checkpoint::open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Checkpoint::open_read_only(&newer),
            Err(CheckpointError::NewerSchema { found: 99, .. })
        ));
        assert!(matches!(
            Checkpoint::open(&newer),
            Err(CheckpointError::NewerSchema { found: 99, .. })
        ));
    }

    #[test]
    fn read_only_connection_cannot_write() {
        let (_dir, cp) = checkpoint_with_job();
        let reader = Checkpoint::open_read_only(cp.path()).unwrap();
        assert!(reader.job().unwrap().is_some());
        let err = reader
            .conn
            .execute("UPDATE job SET base_url = 'x'", [])
            .at(reader.path())
            .unwrap_err();
        assert!(
            err.is_storage_failure(),
            "read-only write is a storage failure: {err}"
        );
    }

    #[test]
    fn read_only_reads_while_another_connection_holds_a_write_transaction() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(&mut cp, vec![valid(1, "c1", "e1", 10)]);
        let writer = observer(&cp);
        writer
            .execute_batch("BEGIN IMMEDIATE; UPDATE row SET state = 'sending';")
            .unwrap();
        let reader = Checkpoint::open_read_only(cp.path()).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            reader.counts().unwrap().pending,
            1,
            "sees the last commit only"
        );
        assert!(started.elapsed() < BUSY_TIMEOUT, "the reader must not wait");
        // And the reader holding a snapshot does not stop the writer from committing.
        reader
            .read_consistent(|r| {
                assert_eq!(r.counts()?.pending, 1);
                writer.execute_batch("COMMIT").unwrap();
                assert_eq!(r.counts()?.pending, 1, "snapshot is stable");
                Ok::<_, CheckpointError>(())
            })
            .unwrap();
        assert_eq!(reader.counts().unwrap().sending, 1);
    }

    #[test]
    fn job_round_trips_and_a_second_job_is_refused() {
        let (_dir, mut cp) = checkpoint_with_job();
        let job = cp.job().unwrap().unwrap();
        assert_eq!(job, sample_job());
        let mut other = sample_job();
        other.input_display = "other.csv".to_string();
        match cp.create_job(&other) {
            Err(CheckpointError::JobExists { input, .. }) => assert_eq!(input, "messages.csv"),
            res => panic!("expected JobExists, got {res:?}"),
        }
    }

    #[test]
    fn staging_stores_states_and_detects_duplicates() {
        let (_dir, mut cp) = checkpoint_with_job();
        let mut stager = cp.stager();
        assert_eq!(
            stager.add(valid(2, "c1", "e1", 10)).unwrap(),
            RowState::Pending
        );
        assert_eq!(
            stager.add(invalid(3, "sentAt: not a date")).unwrap(),
            RowState::Invalid
        );
        assert_eq!(
            stager.add(valid(4, "c2", "e1", 5)).unwrap(),
            RowState::Duplicate
        );
        assert_eq!(
            stager.add(valid(5, "c2", "e2", 5)).unwrap(),
            RowState::Pending
        );
        stager.finish().unwrap();

        let counts = cp.counts().unwrap();
        assert_eq!(
            (counts.pending, counts.invalid, counts.duplicate),
            (2, 1, 1)
        );
        assert_eq!(counts.total(), 4);
        let (code, message): (String, String) = cp
            .conn
            .query_row(
                "SELECT error_code, error_message FROM row WHERE line = 4",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(code, "duplicate_external_id");
        assert_eq!(message, "externalId e1 already used by line 2");
        let (code, message, conversation): (String, String, String) = cp
            .conn
            .query_row(
                "SELECT error_code, error_message, conversation_id FROM row WHERE line = 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (code.as_str(), message.as_str(), conversation.as_str()),
            ("invalid_row", "sentAt: not a date", "c-bad")
        );
        assert_eq!(cp.body(2).unwrap(), "{\"externalId\":\"e1\",\"line\":2}");
        let job = cp.job().unwrap().unwrap();
        assert_eq!(job.staged_through_line, 5);
        assert!(job.staging_complete);
    }

    #[test]
    fn restaging_skips_present_lines_and_returns_their_state() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![valid(1, "c1", "e1", 1), valid(2, "c1", "e1", 2)],
        );
        let mut stager = cp.stager();
        assert_eq!(
            stager.add(valid(1, "c1", "e1", 1)).unwrap(),
            RowState::Pending
        );
        assert_eq!(
            stager.add(valid(2, "c1", "e1", 2)).unwrap(),
            RowState::Duplicate
        );
        assert_eq!(
            stager.add(valid(3, "c1", "e3", 3)).unwrap(),
            RowState::Pending
        );
        stager.finish().unwrap();
        assert_eq!(cp.counts().unwrap().total(), 3);
    }

    #[test]
    fn dropped_stager_keeps_only_committed_batches() {
        let (_dir, mut cp) = checkpoint_with_job();
        let rows = STAGING_BATCH_ROWS + 500;
        {
            let mut stager = cp.stager();
            for line in 1..=rows {
                stager
                    .add(valid(line, "c", &format!("e{line}"), line as i64))
                    .unwrap();
            }
            // Dropped without finish: the last 500 rows were never committed.
        }
        assert_eq!(cp.counts().unwrap().pending, STAGING_BATCH_ROWS);
        let job = cp.job().unwrap().unwrap();
        assert_eq!(job.staged_through_line, STAGING_BATCH_ROWS);
        assert!(!job.staging_complete);
        assert!(cp.conn.is_autocommit(), "no transaction left open");

        // Resuming from the start skips what is there and stages the rest.
        let mut stager = cp.stager();
        for line in 1..=rows {
            stager
                .add(valid(line, "c", &format!("e{line}"), line as i64))
                .unwrap();
        }
        stager.finish().unwrap();
        assert_eq!(cp.counts().unwrap().pending, rows);
        assert_eq!(cp.job().unwrap().unwrap().staged_through_line, rows);
    }

    #[test]
    fn staging_without_a_job_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::open(&dir.path().join("cp.db")).unwrap();
        let mut stager = cp.stager();
        stager.add(valid(1, "c", "e", 1)).unwrap();
        assert!(matches!(
            stager.finish(),
            Err(CheckpointError::NoJob { .. })
        ));
        assert_eq!(cp.counts().unwrap().total(), 0, "the batch was rolled back");
    }

    #[test]
    fn stager_refuses_rows_after_an_error() {
        let (_dir, mut cp) = checkpoint_with_job();
        cp.conn
            .execute_batch("DROP INDEX row_by_external_id; DROP TABLE row;")
            .unwrap();
        let mut stager = cp.stager();
        assert!(stager.add(valid(1, "c", "e", 1)).is_err());
        let err = stager.add(valid(2, "c", "e2", 2)).unwrap_err();
        assert!(
            err.to_string()
                .contains("staging stopped after an earlier error"),
            "{err}"
        );
    }

    #[test]
    fn queues_follow_send_order_and_first_lines() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                valid(1, "c2", "a", 300),
                valid(2, "c1", "b", 200),
                valid(3, "c1", "c", 100),
                valid(4, "c2", "d", 300),
                valid(5, "c3", "e", 1),
                invalid(6, "bad"),
            ],
        );
        cp.conn
            .execute_batch(
                "UPDATE row SET state = 'succeeded' WHERE line = 5;
                 UPDATE row SET state = 'failed', retryable = 1, attempts = 2 WHERE line = 3;",
            )
            .unwrap();
        assert_eq!(cp.conversations_with_work().unwrap(), vec!["c2", "c1"]);
        let queue = cp.conversation_queue("c1").unwrap();
        assert_eq!(
            queue,
            vec![
                QueuedRow {
                    line: 3,
                    external_id: "c".into(),
                    state: RowState::Failed,
                    retryable: true,
                    attempts: 2,
                    last_attempt_ms: queue[0].last_attempt_ms,
                },
                QueuedRow {
                    line: 2,
                    external_id: "b".into(),
                    state: RowState::Pending,
                    retryable: false,
                    attempts: 0,
                    last_attempt_ms: None,
                },
            ]
        );
        let lines: Vec<u64> = cp
            .conversation_queue("c2")
            .unwrap()
            .iter()
            .map(|q| q.line)
            .collect();
        assert_eq!(lines, vec![1, 4], "equal sentAt falls back to line order");
        assert!(matches!(cp.body(99), Err(CheckpointError::Corrupt { .. })));
        assert!(matches!(cp.body(6), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn a_second_job_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("job.sqlite");
        drop(Checkpoint::open(&db).unwrap());
        let first = JobLock::acquire(&db).unwrap();
        assert!(matches!(
            JobLock::acquire(&db),
            Err(CheckpointError::Busy { .. })
        ));
        drop(first);
        assert!(JobLock::acquire(&db).is_ok());
    }

    #[test]
    fn the_job_lock_follows_the_file_through_symlinks_relative_paths_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("job.sqlite");
        drop(Checkpoint::open(&db).unwrap());
        let symlink = dir.path().join("link.sqlite");
        std::os::unix::fs::symlink(&db, &symlink).unwrap();
        let hard = dir.path().join("hard.sqlite");
        std::fs::hard_link(&db, &hard).unwrap();
        let dotted = dir.path().join(".").join("job.sqlite");
        let _held = JobLock::acquire(&db).unwrap();
        for other in [&symlink, &hard, &dotted] {
            assert!(
                matches!(JobLock::acquire(other), Err(CheckpointError::Busy { .. })),
                "{}",
                other.display()
            );
        }
    }

    #[test]
    fn requeue_failed_by_scope() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            (1..=4)
                .map(|l| valid(l, "c", &format!("e{l}"), l as i64))
                .collect(),
        );
        cp.conn
            .execute_batch(
                "UPDATE row SET state = 'failed', retryable = 1, http_status = 503,
                        error_code = 'http_503', error_message = 'unavailable', finished_ms = 9
                     WHERE line IN (1, 2);
                 UPDATE row SET state = 'failed', retryable = 0, http_status = 400,
                        error_code = 'http_400', error_message = 'bad' WHERE line = 3;",
            )
            .unwrap();
        assert_eq!(cp.requeue_failed(RetryScope::Transient).unwrap(), 2);
        let cleared: (String, Option<i64>, Option<String>, Option<i64>) = cp
            .conn
            .query_row(
                "SELECT state, http_status, error_message, finished_ms FROM row WHERE line = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(cleared, ("pending".to_string(), None, None, None));
        assert_eq!(cp.counts().unwrap().failed, 1);
        assert_eq!(cp.requeue_failed(RetryScope::All).unwrap(), 1);
        assert_eq!(cp.counts().unwrap().pending, 4);
    }

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

    /// Staging speed check: `cargo test --release --lib staging_speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing measurement, run by hand"]
    fn staging_speed() {
        let (_dir, mut cp) = checkpoint_with_job();
        let started = std::time::Instant::now();
        let mut stager = cp.stager();
        for line in 1..=1_000_000u64 {
            let conversation = format!("{:024x}", line % 50_000);
            stager
                .add(valid(
                    line,
                    &conversation,
                    &format!("ext-{line}"),
                    line as i64,
                ))
                .unwrap();
        }
        stager.finish().unwrap();
        let staged = started.elapsed();
        let started = std::time::Instant::now();
        let counts = cp.counts().unwrap();
        let activity = cp.activity(0).unwrap();
        let held = cp.held_count().unwrap();
        println!(
            "staged 1,000,000 rows in {staged:?}; counts+activity+held in {:?} ({counts:?}, {activity:?}, {held})",
            started.elapsed()
        );
        assert_eq!(counts.pending, 1_000_000);
    }
}
