//! Store and job: opening a checkpoint (read-write, read-only, or immutable when no run is live),
//! the job record and its settings, the job lock, and the checks that a file is a checkpoint at
//! all (empty database, foreign file, newer schema). Used by `app` to create, adopt and resume a
//! job, and by every command that opens a `--db`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{migrate, now_ms, Checkpoint, CheckpointError, Result, SqliteResultExt};
use crate::input::{Compression, Format};

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

/// How long a connection waits for another's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The size of a WAL file's header: a `-wal` no longer than this holds no frames (a run killed
/// as it began its first write transaction leaves exactly this).
const WAL_HEADER_BYTES: u64 = 32;

/// The first bytes of a rollback journal that SQLite would roll back (a hot journal); a journal
/// whose transaction ended has a zeroed header.
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// What a `-journal` beside the database says: `Some(true)` when it is hot and the database had
/// no pages before its transaction (rolling back empties it), `Some(false)` when it is hot with
/// pages to restore, `None` when there is none to roll back.
fn hot_journal_of_an_empty_database(path: &Path) -> Option<bool> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(companion(path, "-journal"))
        .and_then(|mut journal| journal.read_exact(&mut header))
        .ok()?;
    if header[..8] != JOURNAL_MAGIC {
        return None;
    }
    // Bytes 16..20: the database's size in pages when the transaction began.
    Some(header[16..20] == [0, 0, 0, 0])
}

/// A database with nothing in it, not even a schema: what a `run` killed while creating the file
/// leaves behind. `run` may adopt it; it is no other program's data. Judged by what a reader
/// would see once SQLite recovers it: a hot rollback journal (a kill while the file was switched
/// to WAL) rolled back, only the committed part of a `-wal` (whatever the `-wal` file's size).
/// A read-only look cannot roll a journal back, so its header says what was there before.
pub fn is_empty_database(path: &Path) -> bool {
    if let Some(was_empty) = hot_journal_of_an_empty_database(path) {
        return was_empty && std::fs::metadata(path).is_ok_and(|meta| meta.is_file());
    }
    let wal_has_frames =
        std::fs::metadata(companion(path, "-wal")).is_ok_and(|m| m.len() > WAL_HEADER_BYTES);
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 && !wal_has_frames => return true,
        Ok(meta) if meta.is_file() => {}
        _ => return false,
    }
    // Not immutable: the reader also sees what was committed to the `-wal`.
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    })
    .is_ok_and(|objects| objects == 0)
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

/// Key of the send settings inside [`Job::settings`]: an object keyed by flag name
/// (`max-rpm`), holding only the settings given, so a report can show them as they were chosen.
pub const SEND_SETTINGS_KEY: &str = "send";

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
            let reason = if is_empty_database(path) {
                "it is empty (a run stopped as it created it): start the job with `run`"
            } else {
                "it has no checkpoint schema"
            };
            return Err(CheckpointError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: reason.to_string(),
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
                        input_display: row.get("input_display")?,
                        input_path: row.get("input_path")?,
                        input_size: row.get("input_size")?,
                        input_sha256: row.get("input_sha256")?,
                        format: row.get("format")?,
                        compression: row.get("compression")?,
                        base_url: row.get("base_url")?,
                        imported_at: row.get("imported_at")?,
                        audit_fields: row.get("audit_fields")?,
                        created_by: row.get("created_by")?,
                        timezone: row.get("timezone")?,
                        ignore_unknown: row.get("ignore_unknown")?,
                        settings_json: row.get("settings_json")?,
                        tool_version: row.get("tool_version")?,
                        created_at_ms: row.get("created_at_ms")?,
                        staged_through_line: row.get("staged_through_line")?,
                        staging_complete: row.get("staging_complete")?,
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
                row.get("input_display")
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::test_support::*;

    #[test]
    fn only_a_database_with_nothing_in_it_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.sqlite");
        std::fs::write(&zero, b"").unwrap();
        assert!(is_empty_database(&zero));
        let bare = dir.path().join("bare.sqlite");
        Connection::open(&bare)
            .unwrap()
            .pragma_update(None, "user_version", 0)
            .unwrap();
        assert!(is_empty_database(&bare));
        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute("CREATE TABLE t (x)", [])
            .unwrap();
        assert!(!is_empty_database(&other));
        let checkpoint = dir.path().join("job.sqlite");
        drop(Checkpoint::open(&checkpoint).unwrap());
        assert!(!is_empty_database(&checkpoint));
        assert!(!is_empty_database(&dir.path().join("missing.sqlite")));
        assert!(!is_empty_database(dir.path()));
    }

    /// What a writer killed mid-way leaves: its connection is never closed, so the `-wal` stays.
    /// With `rows`, a one-page cache makes even an uncommitted transaction spill frames into
    /// the `-wal`.
    fn killed_writer(path: &Path, rows: u32, commit: bool) {
        let conn = Connection::open(path).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("PRAGMA cache_size = 1; BEGIN IMMEDIATE; CREATE TABLE t (x);")
            .unwrap();
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO t SELECT randomblob(500) FROM n",
            [rows],
        )
        .unwrap();
        if commit {
            conn.execute_batch("COMMIT").unwrap();
        }
        std::mem::forget(conn);
    }

    /// The files of `from` copied to `to` as a dead process leaves them: the main file and the
    /// first `wal_bytes` of its `-wal`, no `-shm`. A copy, because this process still holds the
    /// writer's connection, which SQLite shares its view of the file with.
    fn left_behind(from: &Path, to: &Path, wal_bytes: usize) {
        std::fs::copy(from, to).unwrap();
        let wal = std::fs::read(companion(from, "-wal")).unwrap();
        std::fs::write(companion(to, "-wal"), &wal[..wal_bytes.min(wal.len())]).unwrap();
    }

    fn wal_len(path: &Path) -> u64 {
        std::fs::metadata(companion(path, "-wal")).map_or(0, |m| m.len())
    }

    #[test]
    fn a_hot_journal_is_judged_by_the_size_the_database_had_before_it() {
        let dir = tempfile::tempdir().unwrap();
        // As a `run` killed while switching a new file to WAL leaves it (found by killing `run`
        // at random): the new header page written, the journal of an empty database still hot.
        let mut header = JOURNAL_MAGIC.to_vec();
        header.extend_from_slice(&[0, 0, 0, 0, 0xa8, 0x3d, 0xaa, 0x66, 0, 0, 0, 0, 0, 0, 2, 0]);
        header.extend_from_slice(&[0, 0, 0x10, 0]);
        header.resize(512, 0);
        let switching = dir.path().join("switching.sqlite");
        let _: String = Connection::open(&switching)
            .unwrap()
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .unwrap();
        assert_eq!(std::fs::metadata(&switching).unwrap().len(), 4096);
        std::fs::write(companion(&switching, "-journal"), &header).unwrap();
        assert!(is_empty_database(&switching));
        // The same journal when the database had pages: someone's data to restore.
        let mut had_pages = header.clone();
        had_pages[16..20].copy_from_slice(&[0, 0, 0, 3]);
        let restoring = dir.path().join("restoring.sqlite");
        std::fs::copy(&switching, &restoring).unwrap();
        std::fs::write(companion(&restoring, "-journal"), &had_pages).unwrap();
        assert!(!is_empty_database(&restoring));
        // A journal whose transaction ended (zeroed header) is not rolled back.
        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute("CREATE TABLE t (x)", [])
            .unwrap();
        std::fs::write(companion(&other, "-journal"), vec![0u8; 512]).unwrap();
        assert!(!is_empty_database(&other));
        // And an adopted one opens as a checkpoint: SQLite rolls the journal back.
        drop(Checkpoint::open(&switching).unwrap());
        assert!(Checkpoint::open_read_only(&switching).is_ok());
    }

    #[test]
    fn a_wal_left_by_a_killed_run_is_judged_by_what_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        // Killed before its first commit, with frames in the WAL that were never committed.
        let writer = dir.path().join("uncommitted-writer.sqlite");
        killed_writer(&writer, 2_000, false);
        let uncommitted = dir.path().join("uncommitted.sqlite");
        left_behind(&writer, &uncommitted, usize::MAX);
        assert!(wal_len(&uncommitted) > WAL_HEADER_BYTES);
        assert!(is_empty_database(&uncommitted));

        let writer = dir.path().join("committed-writer.sqlite");
        killed_writer(&writer, 1, true);
        // A WAL of its header alone, as a `run` killed at random was found to leave.
        let header_only = dir.path().join("header.sqlite");
        left_behind(&writer, &header_only, WAL_HEADER_BYTES as usize);
        assert_eq!(wal_len(&header_only), WAL_HEADER_BYTES);
        assert!(is_empty_database(&header_only));
        // A table committed to the WAL only: not empty, whatever the main file holds.
        let committed = dir.path().join("committed.sqlite");
        left_behind(&writer, &committed, usize::MAX);
        assert!(wal_len(&committed) > WAL_HEADER_BYTES);
        assert!(!is_empty_database(&committed));
    }

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
}
