//! A new job: the checkpoint claimed and locked, stdin spooled beside it, the input surveyed and
//! the job recorded. Nothing is staged here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint::{Checkpoint, Job, JobLock};
use crate::config::{format_utc, InputArg, StagingChoices};
use crate::input::{self, Compression, Format, InputSource};

use super::input_checks::{check_field_names, refuse_unknown_agents};
use super::signals::Interrupt;
use super::AppError;

/// What a new job is made of.
pub struct JobRequest {
    pub input: InputArg,
    pub db: PathBuf,
    pub staging: StagingChoices,
    pub base_url: String,
    pub settings: serde_json::Value,
}

/// Refuses a checkpoint that already holds a job, and a `--db` that is not a checkpoint at all
/// (a user's file is never turned into one), before anything else is touched.
pub fn refuse_existing_job(db: &Path) -> Result<(), AppError> {
    // An empty database is what a run killed as it created the checkpoint leaves: adopt it.
    if !db.exists() || crate::checkpoint::is_empty_database(db) {
        return Ok(());
    }
    let checkpoint = Checkpoint::open_read_only(db)?;
    if let Some(job) = checkpoint.job()? {
        return Err(crate::checkpoint::CheckpointError::JobExists {
            path: db.to_path_buf(),
            input: job.input_display,
        }
        .into());
    }
    Ok(())
}

/// A checkpoint locked for a new job before its input is read. A refused job removes what the
/// claim created (the empty database, the lock file), so a refusal leaves nothing behind.
pub struct CheckpointClaim {
    lock: JobLock,
    created: Vec<PathBuf>,
}

impl CheckpointClaim {
    /// The job exists: the lock is held for the rest of the command.
    pub fn keep(self) -> JobLock {
        self.lock
    }

    /// The job was refused: release the lock and remove what this claim created.
    pub fn abandon(self) {
        let CheckpointClaim { lock, created } = self;
        drop(lock);
        for path in created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Refuses a checkpoint that holds a job or is not a checkpoint, creates an empty one when none
/// exists (an empty database is adopted by [`create_job`]), and takes the job lock on it.
pub fn claim_checkpoint(db: &Path) -> Result<CheckpointClaim, AppError> {
    refuse_existing_job(db)?;
    let lock_error = |source| crate::checkpoint::CheckpointError::Lock {
        path: db.to_path_buf(),
        source,
    };
    let mut created = Vec::new();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(db)
    {
        Ok(_) => created.push(db.to_path_buf()),
        // Another run created it a moment ago: its lock decides below.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(lock_error(err).into()),
    }
    let lock_file = std::fs::canonicalize(db)
        .map(|path| crate::checkpoint::companion(&path, ".lock"))
        .map_err(lock_error)?;
    let lock_file_is_new = !lock_file.exists();
    let lock = JobLock::acquire(db)?;
    if lock_file_is_new {
        created.push(lock_file);
    }
    Ok(CheckpointClaim { lock, created })
}

/// Reads the input once (hash, field names), refuses unknown or refused fields and an input
/// without rows, and records the job. Nothing is staged yet.
pub fn create_job(request: &JobRequest) -> Result<(Checkpoint, Job, InputSource), AppError> {
    create_job_interruptible(request, None)
}

/// [`create_job`] that gives up reading stdin when `interrupt` is asked for
/// ([`AppError::Interrupted`]).
pub fn create_job_interruptible(
    request: &JobRequest,
    interrupt: Option<&Interrupt>,
) -> Result<(Checkpoint, Job, InputSource), AppError> {
    refuse_existing_job(&request.db)?;
    match &request.input {
        InputArg::File(path) => {
            let path = std::fs::canonicalize(path)
                .map_err(AppError::io(format!("cannot open {}", path.display())))?;
            let source = InputSource::detect(&path, request.staging.format)?;
            record_job(request, source)
        }
        InputArg::Stdin => {
            let source = spool_stdin(&request.db, request.staging.format, interrupt)?;
            let spool = source.path.clone();
            // A refused input leaves no copy behind to be mistaken for a user's file.
            record_job(request, source).inspect_err(|_| {
                let _ = std::fs::remove_file(&spool);
            })
        }
    }
}

/// Surveys the input, refuses what cannot be a job, and records the job.
fn record_job(
    request: &JobRequest,
    source: InputSource,
) -> Result<(Checkpoint, Job, InputSource), AppError> {
    let survey = input::survey(&source)?;
    if survey.rows == 0 {
        return Err(input::InputError::NoRows { path: source.path }.into());
    }
    check_field_names(&survey.field_names, request.staging.ignore_unknown)?;
    refuse_unknown_agents(&source, &request.staging, &survey.field_names)?;

    let now = jiff::Timestamp::now();
    let job = Job {
        input_display: request.input.display(),
        input_path: source.path.clone(),
        input_size: survey.size,
        input_sha256: survey.sha256,
        format: source.format,
        compression: source.compression,
        base_url: request.base_url.clone(),
        imported_at: request
            .staging
            .imported_at
            .clone()
            .unwrap_or_else(|| format_utc(now)),
        audit_fields: request.staging.audit_fields,
        created_by: request.staging.created_by.clone(),
        timezone: request.staging.timezone_name.clone(),
        ignore_unknown: request.staging.ignore_unknown,
        settings: request.settings.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at_ms: now.as_millisecond(),
        staged_through_line: 0,
        staging_complete: false,
    };
    let mut checkpoint = Checkpoint::open(&request.db)?;
    checkpoint.create_job(&job)?;
    Ok((checkpoint, job, source))
}

/// Stdin cannot be read twice, and a killed staging must be able to read it again: it is copied
/// beside the checkpoint first, and the job refers to the copy. The copy runs on a thread of its
/// own so that Ctrl-C is obeyed at once even while stdin has nothing to read (the partial copy
/// is removed then).
fn spool_stdin(
    db: &Path,
    format: Option<Format>,
    interrupt: Option<&Interrupt>,
) -> Result<InputSource, AppError> {
    let format = format.ok_or(crate::config::ConfigError::StdinNeedsFormat)?;
    let extension = match format {
        Format::Csv => "csv",
        Format::Ndjson => "ndjson",
    };
    let mut spool_name = db.as_os_str().to_owned();
    spool_name.push(format!(".stdin.{extension}"));
    let spool = PathBuf::from(spool_name);
    // Never over an existing file: it may be the user's.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&spool)
        .map_err(AppError::io(format!(
            "cannot create {} for a copy of stdin (if it exists, it is not overwritten: remove \
             it or pass another --db)",
            spool.display()
        )))?;
    let (done, copied) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result =
            std::io::copy(&mut std::io::stdin().lock(), &mut file).and_then(|_| file.sync_all());
        let _ = done.send(result);
    });
    loop {
        match copied.recv_timeout(Duration::from_millis(100)) {
            Ok(result) => {
                result.map_err(AppError::io("cannot copy stdin"))?;
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if interrupt.is_some_and(Interrupt::requested) {
                    // The reading thread stays blocked on stdin; the process ends with it.
                    let _ = std::fs::remove_file(&spool);
                    return Err(AppError::Interrupted(
                        "interrupted while reading stdin; nothing was staged".into(),
                    ));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(AppError::Io {
                    context: "cannot copy stdin".into(),
                    source: std::io::Error::other("the copying thread ended without a result"),
                })
            }
        }
    }
    let path = std::fs::canonicalize(&spool)
        .map_err(AppError::io(format!("cannot open {}", spool.display())))?;
    // Sniff gzip on the copy: `InputSource::detect` honours the magic bytes.
    Ok(InputSource::detect(&path, Some(format))?)
}

/// A short human description of a job's input for messages.
pub fn describe_source(source: &InputSource) -> String {
    let format = match source.format {
        Format::Csv => "CSV",
        Format::Ndjson => "NDJSON",
    };
    let gzip = if source.compression == Compression::Gzip {
        ", gzip"
    } else {
        ""
    };
    format!("{} ({format}{gzip})", source.path.display())
}
