//! The job's life shared by `run`, `resume` and `demo`: create the job, stage the input, check
//! the key, send, and sum up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{Checkpoint, Job, JobLock, RowState, StagedRow, StateCounts};
use crate::client::ApiClient;
use crate::config::{
    format_utc, ApiConfig, ConcurrencyChoice, InputArg, SendConfig, StagingChoices,
};
use crate::exit_codes::ExitCode;
use crate::input::{self, Compression, Format, InputSource};
use crate::progress::{Display, ProgressView, StagingView};
use crate::row::{self, FieldVerdict, StampOptions, ValidationOptions};
use crate::send::{self, preflight, Events, SendOptions, SendStats, SendStop};
use crate::throttle::{
    self, ConcurrencyLimit, PacingSnapshot, RateBudget, Throttle, NO_RATE_HEADERS_NOTE,
};

use super::prepare::RowPreparer;
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

/// Rows staged in this pass, by outcome.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageCounts {
    pub valid: u64,
    pub invalid: u64,
    pub duplicate: u64,
}

/// Key of `--max-field-lines` in the job's settings: staging resumed later reads the same way.
const MAX_FIELD_LINES_KEY: &str = "max-field-lines";

/// The staging choices kept in the job's settings object (beside the send settings).
pub fn staging_settings(staging: &StagingChoices) -> serde_json::Value {
    let mut settings = serde_json::json!({ MAX_FIELD_LINES_KEY: staging.max_field_lines });
    if let Some(users) = &staging.users {
        settings[USERS_MAP_KEY] = serde_json::json!(users.as_ref());
    }
    settings
}

fn max_field_lines(job: &Job) -> u64 {
    job.settings
        .get(MAX_FIELD_LINES_KEY)
        .and_then(serde_json::Value::as_u64)
        .filter(|lines| *lines > 0)
        .unwrap_or(input::DEFAULT_MAX_FIELD_LINES)
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

/// Every field name the API does not know, or that the importer refuses, stops the run here,
/// each named with its line, so that a typo never drops data silently.
pub fn check_field_names(names: &[(String, u64)], ignore_unknown: bool) -> Result<(), AppError> {
    let mut problems = Vec::new();
    for (name, line) in names {
        match row::classify_field(name) {
            FieldVerdict::Known => {}
            FieldVerdict::Refused(reason) => {
                problems.push(format!("  {name:?} (line {line}): not accepted: {reason}"));
            }
            FieldVerdict::Unknown if ignore_unknown => {}
            FieldVerdict::Unknown => {
                let hint = row::suggest_field(name)
                    .map(|known| format!("; did you mean {known:?}?"))
                    .unwrap_or_default();
                problems.push(format!(
                    "  {name:?} (line {line}): not a Kustomer message attribute{hint}"
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let unknown_hint = if ignore_unknown {
        ""
    } else {
        "\nFix the names, or pass --ignore-unknown to drop columns the API does not know."
    };
    Err(AppError::Fields(format!(
        "the input has fields the importer will not send; nothing was staged:\n{}{unknown_hint}",
        problems.join("\n")
    )))
}

/// The options `row::prepare` needs for this job.
pub fn row_options(job: &Job) -> Result<(ValidationOptions, StampOptions), AppError> {
    let (_, timezone) = crate::config::parse_timezone(&job.timezone)?;
    Ok((
        ValidationOptions {
            timezone,
            ignore_unknown: job.ignore_unknown,
        },
        StampOptions {
            imported_at: job.imported_at.clone(),
            audit_fields: job.audit_fields,
            created_by: job.created_by.clone(),
            input_sha256: job.input_sha256.clone(),
            users: users_map(job)?.map(Arc::new),
        },
    ))
}

/// Key of the `--users-map` contents in the job's settings: a resumed staging resolves agents'
/// emails exactly as the first run did, even if the file has changed or gone.
const USERS_MAP_KEY: &str = "users-map";

fn users_map(job: &Job) -> Result<Option<row::UsersMap>, AppError> {
    job.settings
        .get(USERS_MAP_KEY)
        .map(|value| {
            serde_json::from_value(value.clone()).map_err(|err| {
                AppError::Fields(format!("the job's stored users map is unreadable: {err}"))
            })
        })
        .transpose()
}

/// Every `createdByEmail` that the users map lacks stops the job before anything is staged or
/// sent, all of them listed, unless `--created-by` is the fallback (or audit fields are off,
/// which sends no createdBy at all).
fn refuse_unknown_agents(
    source: &InputSource,
    staging: &StagingChoices,
    field_names: &[(String, u64)],
) -> Result<(), AppError> {
    let named = field_names.iter().any(|(name, _)| name == "createdByEmail");
    if !named || staging.created_by.is_some() || !staging.audit_fields {
        return Ok(());
    }
    let Some(users) = &staging.users else {
        return Err(AppError::Fields(
            "the input names agents by createdByEmail: pass --users-map FILE (CSV email,id, as \
             exported from Kustomer's user list), or --created-by USER_ID as the fallback; \
             nothing was staged"
                .into(),
        ));
    };
    let mut unknown: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for record in input::records_with_field_lines(source, staging.max_field_lines)? {
        let record = record?;
        let Ok(fields) = &record.fields else { continue };
        let Some(email) = fields
            .get("createdByEmail")
            .and_then(serde_json::Value::as_str)
        else {
            continue;
        };
        if users.user_id(email).is_none() {
            let entry = unknown
                .entry(email.to_lowercase())
                .or_insert((record.line, 0));
            entry.1 += 1;
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|(email, (line, rows))| {
            format!(
                "  {} ({rows} rows, first on line {line})",
                crate::text::escape_control(email)
            )
        })
        .collect();
    Err(AppError::Fields(format!(
        "{} agent emails in createdByEmail are not in --users-map ({} users); nothing was staged or sent:\n{}\nAdd them to the map, or pass --created-by USER_ID for rows whose agent is unknown.",
        unknown.len(),
        users.len(),
        listed.join("\n")
    )))
}

/// Stages every row not yet staged. Safe to call again after an interruption: rows already
/// committed are skipped.
pub fn stage(
    checkpoint: &mut Checkpoint,
    job: &Job,
    source: &InputSource,
    display: Display,
    interrupt: Option<&Interrupt>,
) -> Result<Option<StageCounts>, AppError> {
    let (validation, stamp) = row_options(job)?;
    let mut counts = StageCounts::default();
    // Offsets are in the decompressed stream, so only a plain file's size is a usable total.
    let total_bytes = (source.compression == Compression::None).then_some(job.input_size);
    let mut view = StagingView::new(display, total_bytes);
    let mut stager = checkpoint.stager();
    let mut seen = 0u64;
    let preparer = RowPreparer {
        format: job.format,
        validation: &validation,
        stamp: &stamp,
    };
    for record in input::records_with_field_lines(source, max_field_lines(job))? {
        let record = record?;
        seen += 1;
        if record.line <= job.staged_through_line {
            continue;
        }
        if interrupt.is_some_and(Interrupt::requested) {
            // Dropping the stager rolls back the open batch; staged_through_line says where
            // the next attempt starts.
            view.finish();
            return Ok(None);
        }
        let kind = preparer.kind(&record);
        let state = stager.add(StagedRow {
            line: record.line,
            byte_offset: record.byte_offset,
            byte_len: record.byte_len,
            kind,
        })?;
        match state {
            RowState::Invalid => counts.invalid += 1,
            RowState::Duplicate => counts.duplicate += 1,
            _ => counts.valid += 1,
        }
        view.update(seen, record.byte_offset + record.byte_len, counts.invalid);
    }
    stager.finish()?;
    view.finish();
    // Tickets whose rows disagree about their customer are refused as a whole.
    let refused = checkpoint.prepare_resolution()?;
    counts.valid = counts.valid.saturating_sub(refused);
    counts.invalid += refused;
    Ok(Some(counts))
}

/// The resumed job's input must be the very file that was surveyed: same size, same SHA-256.
pub fn verify_input_unchanged(job: &Job) -> Result<InputSource, AppError> {
    let path = &job.input_path;
    if !path.exists() {
        return Err(AppError::InputChanged(format!(
            "staging of this job was interrupted and must read its input again, but {} is gone; \
             put the same file back at that path and resume",
            path.display()
        )));
    }
    let source = InputSource {
        path: path.clone(),
        format: job.format,
        compression: job.compression,
    };
    let survey = input::survey(&source)?;
    if survey.size != job.input_size || survey.sha256 != job.input_sha256 {
        return Err(AppError::InputChanged(format!(
            "staging of this job was interrupted and must read its input again, but {} has \
             changed since the job started (size {} → {}, SHA-256 {} → {}); restore the original \
             file, or start a new job with another --db",
            path.display(),
            job.input_size,
            survey.size,
            short(&job.input_sha256),
            short(&survey.sha256)
        )));
    }
    Ok(source)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Sends what the checkpoint has pending and prints the final summary; `next_steps` says whether
/// the commands to go further are worth printing (not for a checkpoint about to be deleted).
pub async fn send_and_summarise(
    db: &Path,
    api: &ApiConfig,
    job: &Job,
    send: &SendConfig,
    interrupt: &Interrupt,
    next_steps: bool,
) -> Result<ExitCode, AppError> {
    let started = Instant::now();
    let before = Checkpoint::open_existing(db)?.counts()?;
    let unthrottled = ApiClient::new(api.client_config(send.request_timeout), None)?;
    let (stop, throttle) = match preflight(&unthrottled, job, send.mode.is_bulk()).await {
        Err(stop) => (stop, None),
        Ok(preflight) => {
            for warning in &preflight.warnings {
                eprintln!("{warning}");
            }
            let (rpm, source) =
                throttle::choose_budget(send.max_rpm, send.budget_share, preflight.org_limit);
            if send.display != Display::Quiet {
                eprintln!(
                    "{}; concurrency {}; under it the import adapts to the org's other clients, \
                     keeping {} free for them (--reserve)",
                    source.describe(rpm),
                    send.concurrency.describe(),
                    send.reserve.describe()
                );
            }
            let concurrency = match send.concurrency {
                ConcurrencyChoice::Auto { ceiling } => ConcurrencyLimit::adaptive(ceiling),
                ConcurrencyChoice::Fixed(n) => ConcurrencyLimit::fixed(n),
            };
            let budget = RateBudget::new(rpm)
                .sharing(send.reserve)
                .with_max_pause(send.max_pause);
            let throttle = Arc::new(Throttle::new(budget, concurrency));
            let client = Arc::new(ApiClient::new(
                api.client_config(send.request_timeout),
                Some(Arc::clone(&throttle)),
            )?);
            if let Some(stop) = resolve_tickets(
                db,
                job,
                send,
                preflight.roles.as_deref(),
                &client,
                interrupt,
            )
            .await?
            {
                let finished = Checkpoint::open_existing(db)?;
                let after = finished.counts()?;
                drop(finished);
                return Ok(exit_for(&stop, &after, db));
            }
            let resolved = Checkpoint::open_existing(db)?.counts()?;
            let to_send = resolved.pending + resolved.sending;
            let stats = SendStats::with_total(to_send);
            let view =
                ProgressView::sending(Arc::clone(&stats), Arc::clone(&throttle), send.display);
            let options = SendOptions {
                checkpoint: db.to_path_buf(),
                workers: send.concurrency.workers(),
                retry: send.retry,
                max_failed_rows: send.max_errors.allowed(to_send),
                verify_audit_fields: job.audit_fields,
                shutdown_grace: send::DEFAULT_SHUTDOWN_GRACE,
                settle_delay: send.settle_delay,
                early_lookup: send.early_lookup,
                reads_conversations: preflight.reads_conversations,
                request_timeout: send.request_timeout,
                skip_existing: send.skip_existing,
                reimport_guard: true,
                unreachable_after: send.retry.max_total_wait,
                max_pause: send.max_pause,
                mode: send.mode,
                rpm,
            };
            let recorder = PacingRecorder::start(db, Arc::clone(&throttle));
            let (events, printer) = print_send_events();
            let stop = send::send_all(
                &options,
                client,
                Arc::clone(&stats),
                interrupt.token.clone(),
                events,
            )
            .await?;
            // Every warning said before the summary (the phase has dropped its end by now).
            let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
            view.finish().await;
            recorder.finish().await;
            (stop, Some((throttle, stats)))
        }
    };
    let finished = Checkpoint::open_existing(db)?;
    let after = finished.counts()?;
    let retryable_failed = finished.retryable_failed_count()?;
    drop(finished);
    print_summary(
        &before,
        &after,
        started.elapsed(),
        throttle.as_ref(),
        next_steps.then_some(Hints {
            db,
            retryable_failed,
        }),
    );
    Ok(exit_for(&stop, &after, db))
}

/// How often the resolve phase says how far it is.
const RESOLVE_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The resolve phase, when the job's rows name source tickets: the key's roles are checked
/// first (exit 3 naming what is missing), then every waiting ticket is found or created. `Some`
/// when the run must stop here.
async fn resolve_tickets(
    db: &Path,
    job: &Job,
    send: &SendConfig,
    roles: Option<&[String]>,
    client: &Arc<ApiClient>,
    interrupt: &Interrupt,
) -> Result<Option<SendStop>, AppError> {
    if !Checkpoint::open_existing(db)?.names_tickets()? {
        return Ok(None);
    }
    let missing = crate::resolve::missing_roles(roles);
    if !missing.is_empty() {
        return Ok(Some(SendStop::Refused(format!(
            "the input names conversations by conversationExternalId, so the importer finds or \
             creates customers and conversations, and the API key lacks {}. Add the role(s) to \
             the key, then: kustomer-import resume --db {}",
            missing.join(", "),
            db.display()
        ))));
    }
    let plan = crate::resolve::ResolvePlan {
        checkpoint: db.to_path_buf(),
        workers: send.concurrency.workers(),
        retry: send.retry,
        settle_delay: send.settle_delay,
        request_timeout: send.request_timeout,
        unreachable_after: send.retry.max_total_wait,
        imported_at: job.imported_at.clone(),
        audit_fields: job.audit_fields,
        bulk_items: match send.mode {
            crate::config::SendMode::Bulk { batch_size, .. } => Some(batch_size),
            crate::config::SendMode::Single => None,
        },
        assumed_job: match send.mode {
            crate::config::SendMode::Bulk { job_seconds, .. } => {
                Duration::try_from_secs_f64(job_seconds).unwrap_or_default()
            }
            crate::config::SendMode::Single => Duration::ZERO,
        },
    };
    let counters = Arc::new(crate::resolve::ResolveCounters::default());
    if send.display != Display::Quiet {
        eprintln!("resolving customers and conversations named by source ids");
    }
    // A plain line every few seconds while tickets are resolved (the sending bar comes after).
    let ticker = (send.display != Display::Quiet).then(|| {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RESOLVE_PROGRESS_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                eprintln!("progress: {}", counters.describe());
            }
        })
    });
    let stop = crate::resolve::resolve_all(
        &plan,
        Arc::clone(client),
        Arc::clone(&counters),
        interrupt.token.clone(),
    )
    .await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let stop = stop?;
    if send.display != Display::Quiet {
        eprintln!("{}", counters.describe());
    }
    Ok(match stop {
        SendStop::Completed => None,
        stop => Some(stop),
    })
}

/// Prints the send phase's warnings on stderr as they come; the task ends once the phase has
/// dropped its end.
pub fn print_send_events() -> (Events, tokio::task::JoinHandle<()>) {
    let (events, mut received) = Events::channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = received.recv().await {
            eprintln!("{event}");
        }
    });
    (events, printer)
}

/// How often the running job writes its pacing figures for `status`.
const PACING_RECORD_EVERY: Duration = Duration::from_secs(2);

/// Keeps the checkpoint's pacing row current while the send phase runs, and says once when the
/// API sends no rate-limit headers. Its writes are display data: a failure is logged, never
/// fatal (the rows' own writes decide whether the run can go on).
struct PacingRecorder {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PacingRecorder {
    fn start(db: &Path, throttle: Arc<Throttle>) -> PacingRecorder {
        let stop = tokio_util::sync::CancellationToken::new();
        let db = db.to_path_buf();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let writer = match crate::checkpoint::PacingWriter::open(&db) {
                    Ok(writer) => Some(writer),
                    Err(err) => {
                        tracing::warn!(error = %err, "pacing figures will not reach status");
                        None
                    }
                };
                let mut said_no_headers = false;
                let run_started_ms = crate::checkpoint::now_ms();
                let mut ticker = tokio::time::interval(PACING_RECORD_EVERY);
                loop {
                    let stopping = tokio::select! {
                        _ = ticker.tick() => false,
                        () = stop.cancelled() => true,
                    };
                    let snapshot = PacingSnapshot {
                        run_started_ms: Some(run_started_ms),
                        ..PacingSnapshot::of(&throttle)
                    };
                    // A warning, so said even with --quiet; once.
                    if snapshot.rate_headers_missing && !said_no_headers {
                        said_no_headers = true;
                        eprintln!("warning: {NO_RATE_HEADERS_NOTE}");
                    }
                    if let Some(writer) = &writer {
                        // A short synchronous write on its own connection; rare enough (every
                        // 2 s) not to need the blocking pool.
                        if let Err(err) = writer.write(&snapshot) {
                            tracing::debug!(error = %err, "could not record pacing figures");
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            }
        });
        PacingRecorder { stop, task }
    }

    /// Writes the last figures and stops.
    async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn exit_for(stop: &SendStop, counts: &StateCounts, db: &Path) -> ExitCode {
    let db = db.display();
    match stop {
        SendStop::Completed if counts.succeeded == counts.total() => ExitCode::Success,
        SendStop::Completed => ExitCode::Incomplete,
        SendStop::Interrupted => {
            eprintln!("interrupted; continue with: kustomer-import resume --db {db}");
            ExitCode::Interrupted
        }
        SendStop::ApiFatal(err) => {
            let err = crate::text::escape_control(&err.to_string()).into_owned();
            eprintln!("stopped: {err}\nnothing more was sent; fix the key and continue with: kustomer-import resume --db {db}");
            ExitCode::ApiFatal
        }
        SendStop::Refused(reason) => {
            eprintln!("refused before sending: {reason}");
            ExitCode::ApiFatal
        }
        SendStop::AuditOverwritten(detail) => {
            eprintln!("stopped: {detail}\nnothing more was sent. Use a key with org.admin, or continue without audit fields in a new job (--no-audit-fields); the affected row is marked in the report (errorCode audit_fields_overwritten)");
            ExitCode::ApiFatal
        }
        SendStop::ErrorBudget { failed, allowed } => {
            eprintln!("stopped: {failed} rows failed in this run, more than --max-errors allows ({allowed}); the remaining rows stay pending. See the errors with: kustomer-import report --db {db}; then: kustomer-import resume --db {db}");
            ExitCode::ErrorBudget
        }
        SendStop::Storage(err) => {
            eprintln!("stopped: the checkpoint could not be written ({err}); nothing more was sent. Free space or fix permissions, then: kustomer-import resume --db {db}");
            ExitCode::Storage
        }
        SendStop::LookupRouteUnproven(reason) => {
            eprintln!("stopped: {reason}\ncontinue with: kustomer-import resume --db {db}");
            ExitCode::ApiFatal
        }
        SendStop::Unreachable(reason) => {
            eprintln!("stopped: the API is unreachable: {reason}\nrows not sent stay pending; once the API answers (check the network and --base-url), continue with: kustomer-import resume --db {db}");
            ExitCode::ApiFatal
        }
        SendStop::AlreadyImported(existing) => {
            eprintln!(
                "refused: {} of the sampled rows already exist in Kustomer, each in its own conversation:",
                existing.len()
            );
            for found in existing.iter().take(10) {
                eprintln!(
                    "  line {}: externalId {:?} is message {} in conversation {}",
                    found.line,
                    crate::text::escape_control(&found.external_id),
                    crate::text::escape_control(&found.message_id),
                    found.conversation_id
                );
            }
            eprintln!(
                "This export looks imported already (perhaps by another checkpoint). Nothing was sent.\n\
                 - to finish that import, resume its own checkpoint: kustomer-import resume --db ORIGINAL.sqlite\n\
                 - to import only what is missing: kustomer-import resume --db {db} --skip-existing\n  \
                 (every row is looked up first, one extra request each; rows found are recorded succeeded, code found_existing)"
            );
            ExitCode::Usage
        }
    }
}

/// What the summary's suggested commands depend on.
struct Hints<'a> {
    db: &'a Path,
    /// Failed rows a retry may fix (the rest failed for good and are rejects).
    retryable_failed: u64,
}

/// The end-of-run summary on stderr: the rows, what this run sent and spent, the commands that
/// apply next.
fn print_summary(
    before: &StateCounts,
    after: &StateCounts,
    elapsed: Duration,
    throttle: Option<&(Arc<Throttle>, Arc<SendStats>)>,
    hints: Option<Hints>,
) {
    let mut out = std::io::stderr().lock();
    row_summary(&mut out, before, after, elapsed);
    if let Some((throttle, counters)) = throttle {
        spend_summary(&mut out, throttle, counters);
    }
    if let Some(hints) = hints {
        next_commands(&mut out, after, &hints);
    }
}

/// The rows by state, and how many this run settled how fast.
fn row_summary(out: &mut impl Write, before: &StateCounts, after: &StateCounts, elapsed: Duration) {
    let sent_now =
        (after.succeeded + after.failed).saturating_sub(before.succeeded + before.failed);
    let secs = elapsed.as_secs_f64().max(0.001);
    let _ = writeln!(
        out,
        "\n{} rows: {} succeeded, {} failed, {} invalid, {} duplicate, {} pending, {} sending",
        after.total(),
        after.succeeded,
        after.failed,
        after.invalid,
        after.duplicate,
        after.pending,
        after.sending
    );
    let _ = writeln!(
        out,
        "this run: {sent_now} rows settled in {:.1}s ({:.1} rows/s)",
        secs,
        sent_now as f64 / secs
    );
}

/// What the run spent: unknown outcomes and lookups, pacing, requests, messages per request.
fn spend_summary(out: &mut impl Write, throttle: &Throttle, counters: &SendStats) {
    let unknown = counters.unknown.load(Ordering::Relaxed);
    if unknown > 0 || counters.lookups.load(Ordering::Relaxed) > 0 {
        let _ = writeln!(
            out,
            "unknown outcomes: {unknown}, lookups by externalId: {} ({} early, {} of them found \
             it), found already created: {}",
            counters.lookups.load(Ordering::Relaxed),
            counters.early_lookups.load(Ordering::Relaxed),
            counters.early_hits.load(Ordering::Relaxed),
            counters.reconciled.load(Ordering::Relaxed)
        );
        let reads = counters.conversation_reads.load(Ordering::Relaxed);
        if reads > 0 {
            let _ = writeln!(
                out,
                "conversation pages read to settle externalIds found in other conversations: {reads}"
            );
        }
    }
    let budget = &throttle.budget;
    let pacing = PacingSnapshot::of(throttle);
    let _ = if pacing.rate_headers_missing {
        writeln!(out, "pacing:   {}", pacing.describe())
    } else if pacing.adaptive {
        writeln!(
            out,
            "pacing:   yielded to the org's other clients for {} in all ({})",
            pacing.yielded(),
            pacing.rates()
        )
    } else {
        Ok(())
    };
    let _ = writeln!(
        out,
        "requests: {} within a budget of {}/min, {} answered 429, {} common pauses{}",
        budget.admitted.load(Ordering::Relaxed),
        budget.requests_per_minute(),
        budget.rate_limited.load(Ordering::Relaxed),
        budget.pauses.load(Ordering::Relaxed),
        if throttle.concurrency.is_adaptive() {
            format!(
                ", concurrency ended at {}",
                throttle.concurrency.view().summary()
            )
        } else {
            String::new()
        }
    );
    // Every request counts against the org's budget: how many messages each one bought.
    let requests = budget.admitted.load(Ordering::Relaxed);
    let created = counters.succeeded.load(Ordering::Relaxed);
    let jobs = counters.bulk_jobs.load(Ordering::Relaxed);
    if requests > 0 && (jobs > 0 || created > 0) {
        let _ = writeln!(
            out,
            "spent:    {:.2} messages per request ({created} rows settled as created with {requests} requests{})",
            created as f64 / requests as f64,
            if jobs > 0 {
                format!(
                    "; {jobs} bulk jobs, {} extra polls",
                    counters.bulk_polls.load(Ordering::Relaxed)
                )
            } else {
                String::new()
            }
        );
    }
}

/// The commands that apply after this run: the report, the rejects, a retry, a resume.
fn next_commands(out: &mut impl Write, after: &StateCounts, hints: &Hints) {
    let db = crate::text::shell_quoted(hints.db);
    let _ = writeln!(
        out,
        "report:   kustomer-import report --db {db} [--format csv|html]"
    );
    let rejects = after.invalid + after.failed.saturating_sub(hints.retryable_failed);
    if rejects > 0 {
        let _ = writeln!(
            out,
            "rejects:  kustomer-import report --db {db} --rejects rejects.csv ({rejects} rows to fix and import again)"
        );
    }
    if hints.retryable_failed > 0 {
        let _ = writeln!(
            out,
            "retry:    kustomer-import resume --db {db} --retry-failed ({} rows failed transiently)",
            hints.retryable_failed
        );
    }
    if after.pending + after.sending > 0 {
        let _ = writeln!(out, "continue: kustomer-import resume --db {db}");
    }
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
