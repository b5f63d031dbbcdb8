//! One function per subcommand.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use crate::checkpoint::{Checkpoint, CheckpointError, JobLock};
use crate::cli::{
    CheckArgs, DemoArgs, LookupRouteArg, PlanArgs, ReportArgs, ReportFormatArg, ResetUnitArg,
    ResumeArgs, RunArgs, SandboxArgs, SandboxBulkArgs, SandboxOutcomeArgs, SendArgs, StatusArgs,
    ValidateArgs,
};
use crate::client::{ApiClient, LookupAnswer};
use crate::config::{
    self, ApiConfig, InputArg, PlanConfig, PlanSource, RunConfig, SendConfig, StagingChoices,
};
use crate::exit_codes::ExitCode;
use crate::input::{self, InputError, InputSource};
use crate::output::{Destination, OutputFile, Protected};
use crate::plan::Workload;
use crate::progress::Display;
use crate::report::{self, ReportFormat};
use crate::row::{self, StampOptions, ValidationOptions};
use crate::sandbox::{self, LookupSpelling, SandboxConfig};
use crate::text::escape_control;
use crate::throttle;

use super::pipeline::{self, JobRequest, StageCounts};
use super::{runtime, say, signals, AppError};

/// The sample the demo imports, embedded so the demo works from any directory.
const SAMPLE_CSV: &str = include_str!("../../samples/messages.csv");

pub fn run(args: &RunArgs) -> Result<ExitCode, AppError> {
    let config = RunConfig::from_args(args)?;
    if config.dry_run {
        return dry_run(&config);
    }
    let api = config.api.clone().ok_or(config::ConfigError::MissingKey)?;
    let request = JobRequest {
        input: config.input.clone(),
        db: config.db.clone(),
        staging: config.staging.clone(),
        base_url: config.base_url.clone(),
        settings: args
            .send
            .into_job_settings(pipeline::staging_settings(&config.staging))?,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        let interrupt = signals::install();
        // Locked once the job exists: a second `run` on the same checkpoint is already refused
        // by the job record itself, and a refused input leaves no lock file behind.
        let (mut checkpoint, job, source) =
            pipeline::create_job_interruptible(&request, Some(&interrupt))?;
        let _lock = JobLock::acquire(&config.db)?;
        if config.send.display != Display::Quiet {
            eprintln!("staging {}", pipeline::describe_source(&source));
        }
        let Some(counts) = pipeline::stage(
            &mut checkpoint,
            &job,
            &source,
            config.send.display,
            Some(&interrupt),
        )?
        else {
            eprintln!(
                "interrupted while staging; continue with: kustomer-import resume --db {}",
                config.db.display()
            );
            return Ok(ExitCode::Interrupted);
        };
        if config.send.display != Display::Quiet {
            report_staging(&counts);
            if config.send.mode == crate::config::SendMode::Single {
                if let Some(hint) = crate::plan::bulk_would_halve(&checkpoint)? {
                    eprintln!("{hint}");
                }
            }
        }
        drop(checkpoint);
        pipeline::send_and_summarise(&config.db, &api, &job, &config.send, &interrupt, true).await
    })
}

fn report_staging(counts: &StageCounts) {
    eprintln!(
        "staged: {} valid, {} invalid, {} duplicate",
        counts.valid, counts.invalid, counts.duplicate
    );
}

/// A dry run's job settings: the staging choices, and that it is a dry run.
fn dry_run_settings(staging: &StagingChoices) -> serde_json::Value {
    let mut settings = pipeline::staging_settings(staging);
    if let Some(object) = settings.as_object_mut() {
        object.insert("dry_run".into(), serde_json::Value::Bool(true));
    }
    settings
}

/// Stages into a throwaway checkpoint, shows what would be sent, sends nothing.
fn dry_run(config: &RunConfig) -> Result<ExitCode, AppError> {
    let scratch =
        tempfile::tempdir().map_err(AppError::io("cannot create a temporary directory"))?;
    let request = JobRequest {
        input: config.input.clone(),
        db: scratch.path().join("dry-run.sqlite"),
        staging: config.staging.clone(),
        base_url: config.base_url.clone(),
        settings: dry_run_settings(&config.staging),
    };
    let (mut checkpoint, job, source) = pipeline::create_job(&request)?;
    let counts = pipeline::stage(&mut checkpoint, &job, &source, config.send.display, None)?
        .unwrap_or_default();
    let conversations = checkpoint.conversations_with_work()?;
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock, text: String| {
        writeln!(out, "{text}").map_err(AppError::io("cannot write to stdout"))
    };
    write(
        &mut out,
        format!(
            "dry run of {}: nothing will be sent",
            pipeline::describe_source(&source)
        ),
    )?;
    write(
        &mut out,
        format!(
            "rows: {} valid, {} invalid, {} duplicate",
            counts.valid, counts.invalid, counts.duplicate
        ),
    )?;
    write(
        &mut out,
        format!(
            "would send {} messages in {} conversations to {} (importedAt {}, audit fields {})",
            counts.valid,
            conversations.len(),
            config.base_url,
            job.imported_at,
            if job.audit_fields { "on" } else { "off" }
        ),
    )?;
    if let Some(conversation) = conversations.first() {
        if let Some(first) = checkpoint.conversation_queue(conversation)?.first() {
            let body = checkpoint.body(first.line)?;
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .and_then(|value| serde_json::to_string_pretty(&value))
                .unwrap_or(body);
            let pretty: Vec<_> = pretty.lines().map(escape_control).collect();
            let pretty = pretty.join("\n");
            write(
                &mut out,
                format!(
                    "\nsample request (line {}):\nPOST {}/v1/conversations/{conversation}/messages\n{pretty}",
                    first.line, config.base_url
                ),
            )?;
        }
    }
    drop(out);
    if counts.invalid + counts.duplicate > 0 {
        let mut report_out = std::io::stdout().lock();
        writeln!(report_out, "\nrows that would not be sent:")
            .map_err(AppError::io("cannot write to stdout"))?;
        report::write_problem_rows(&checkpoint, &mut report_out, 50)?;
        return Ok(ExitCode::Incomplete);
    }
    Ok(ExitCode::Success)
}

pub fn resume(args: &ResumeArgs) -> Result<ExitCode, AppError> {
    // The lock is taken before any connection is opened and released after all are closed (see
    // `JobLock`): a second process must be refused before SQLite opens the file under another
    // name (a hard link would get a WAL file of its own).
    if !args.db.exists() {
        Checkpoint::open_existing(&args.db)?;
    }
    let _lock = JobLock::acquire(&args.db)?;
    let mut checkpoint = Checkpoint::open_existing(&args.db)?;
    let mut job = checkpoint.job()?.ok_or_else(|| CheckpointError::NoJob {
        path: args.db.clone(),
    })?;
    // The job's own settings, with every flag given now taking precedence and recorded.
    let stored = SendArgs::from_job_settings(&job.settings)?;
    let settings = stored.overridden_by(&args.send)?;
    let send = SendConfig::from_args(&settings)?;
    let display = send.display;
    if settings.describe() != stored.describe() {
        job.settings = settings.into_job_settings(job.settings.clone())?;
        checkpoint.update_settings(&job.settings)?;
    }
    let base_url = match &args.base_url {
        Some(url) => config::check_base_url(url)?,
        None => config::check_base_url(&job.base_url)?,
    };
    let key = config::read_key_from(args.api_key_file.as_deref())?;
    let api = ApiConfig { base_url, key };
    let quiet = display == Display::Quiet;
    if !quiet {
        let chosen = settings.describe();
        eprintln!(
            "send settings: {}",
            if chosen.is_empty() {
                "all at their defaults".to_string()
            } else {
                format!("{chosen} (the rest at their defaults)")
            }
        );
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let interrupt = signals::install();
        if !job.staging_complete {
            let source = pipeline::verify_input_unchanged(&job)?;
            if !quiet {
                eprintln!(
                    "finishing staging of {} from line {}",
                    pipeline::describe_source(&source),
                    job.staged_through_line + 1
                );
            }
            let Some(counts) =
                pipeline::stage(&mut checkpoint, &job, &source, display, Some(&interrupt))?
            else {
                return Ok(ExitCode::Interrupted);
            };
            if !quiet {
                report_staging(&counts);
            }
        }
        if let Some(scope) = args.retry_failed {
            let requeued = checkpoint.requeue_failed(scope.into())?;
            if !quiet {
                eprintln!("{requeued} failed rows put back in the queue");
            }
        }
        drop(checkpoint);
        pipeline::send_and_summarise(&args.db, &api, &job, &send, &interrupt, true).await
    })
}

pub fn status(args: &StatusArgs) -> Result<ExitCode, AppError> {
    let checkpoint = Checkpoint::open_read_only(&args.db)?;
    let summary = report::status(&checkpoint)?;
    let text = if args.json {
        report::status_json(&summary)?
    } else {
        report::render_status_text(&summary, report::Style::default())
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(AppError::io("cannot write to stdout"))?;
    Ok(ExitCode::Success)
}

/// The files no report may overwrite: the checkpoint with its companions, and the job's input.
fn protected_files(checkpoint: &Checkpoint) -> Result<Protected, AppError> {
    let mut protected = Protected::checkpoint(checkpoint.path());
    if let Some(job) = checkpoint.job()? {
        protected.add(&job.input_path, "the job's input");
        if let InputArg::File(named) = InputArg::parse(&job.input_display) {
            protected.add(&named, "the job's input");
        }
    }
    Ok(protected)
}

pub fn report(args: &ReportArgs) -> Result<ExitCode, AppError> {
    let checkpoint = Checkpoint::open_read_only(&args.db)?;
    if let Some(rejects_path) = &args.rejects {
        return write_rejects(&checkpoint, rejects_path, args.force);
    }
    let format = match args.format {
        ReportFormatArg::Text => ReportFormat::Text,
        ReportFormatArg::Json => ReportFormat::Json,
        ReportFormatArg::Csv => ReportFormat::Csv,
        ReportFormatArg::Html => ReportFormat::Html,
    };
    match args.output.as_deref().map(Destination::parse) {
        Some(Destination::File(path)) => {
            let mut file = OutputFile::create(&path, args.force, &protected_files(&checkpoint)?)?;
            report::write_report(&checkpoint, format, file.writer())?;
            file.finish()?;
        }
        None | Some(Destination::Stdout) => {
            let stdout = std::io::stdout();
            // Text meant for a person is escaped when it goes to a terminal (CSV included);
            // piped into a file or a program, the values stay as they are.
            let style = report::Style {
                escape_csv: std::io::IsTerminal::is_terminal(&stdout),
                ..report::Style::default()
            };
            let mut out = std::io::BufWriter::new(stdout.lock());
            report::write_report_styled(&checkpoint, format, &mut out, style)?;
            out.flush()
                .map_err(AppError::io("cannot write to stdout"))?;
        }
    }
    Ok(ExitCode::Success)
}

/// `report --rejects FILE`: writes the rows to fix and says what is (and is not) in them.
fn write_rejects(
    checkpoint: &Checkpoint,
    rejects_path: &std::path::Path,
    force: bool,
) -> Result<ExitCode, AppError> {
    let db = checkpoint.path().display();
    let written = match Destination::parse(rejects_path) {
        Destination::Stdout => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = report::write_rejects(checkpoint, &mut out, &mut std::io::sink())?;
            out.flush()
                .map_err(AppError::io("cannot write to stdout"))?;
            eprintln!(
                "wrote {} rejected rows ({} invalid, {} failed permanently) to stdout; their \
                 reasons are in `kustomer-import report --db {db} --format csv`",
                written.rows, written.invalid, written.failed
            );
            written
        }
        Destination::File(path) => {
            let protected = protected_files(checkpoint)?;
            let errors_path = report::errors_path(&path);
            let mut rejects = OutputFile::create(&path, force, &protected)?;
            let mut errors = OutputFile::create(&errors_path, force, &protected)?;
            let written = report::write_rejects(checkpoint, rejects.writer(), errors.writer())?;
            rejects.finish()?;
            errors.finish()?;
            say!(
                "wrote {} rejected rows ({} invalid, {} failed permanently) to {}; reasons in {}",
                written.rows,
                written.invalid,
                written.failed,
                path.display(),
                errors_path.display()
            );
            written
        }
    };
    if written.retryable_failed > 0 {
        eprintln!(
            "not included: {} rows that failed transiently; send them again with \
             `kustomer-import resume --db {db} --retry-failed`",
            written.retryable_failed
        );
    }
    if !written.staging_complete {
        eprintln!(
            "staging is not complete: rows past the staged lines are not judged yet; \
             finish it with `kustomer-import resume --db {db}`"
        );
    }
    eprintln!(
        "duplicates are not rejects: their externalId was already imported from an earlier row"
    );
    Ok(ExitCode::Success)
}

pub fn validate(args: &ValidateArgs) -> Result<ExitCode, AppError> {
    let path = match InputArg::parse(&args.input) {
        InputArg::File(path) => path,
        InputArg::Stdin => {
            return Err(AppError::Fields(
                "validate reads a file; save stdin to a file first".into(),
            ))
        }
    };
    if !path.exists() {
        return Err(config::ConfigError::InputMissing(path).into());
    }
    if args.max_field_lines == 0 {
        return Err(config::ConfigError::MaxFieldLines.into());
    }
    let source = InputSource::detect(&path, args.format.map(Into::into))?;
    let survey = match input::survey(&source) {
        Ok(survey) => survey,
        // Found by the survey, before any row: the quote merges every row after it.
        Err(InputError::UnclosedQuote { line, .. }) => {
            say!(
                "line {line}: a quoted field opened on line {line} is never closed: it runs to \
                 the end of the input and would swallow every row after it"
            );
            say!(
                "{}: not importable until the quote is closed",
                escape_control(&pipeline::describe_source(&source))
            );
            return Ok(ExitCode::Incomplete);
        }
        Err(err) => return Err(err.into()),
    };
    if survey.rows == 0 {
        return Err(InputError::NoRows { path: source.path }.into());
    }
    pipeline::check_field_names(&survey.field_names, args.ignore_unknown)?;
    let (_, timezone) = config::parse_timezone(&args.timezone)?;
    let validation = ValidationOptions {
        timezone,
        ignore_unknown: args.ignore_unknown,
    };
    let stamp = StampOptions {
        imported_at: config::format_utc(jiff::Timestamp::now()),
        audit_fields: true,
        created_by: None,
        input_sha256: survey.sha256.clone(),
    };
    // externalId → first line that used it; validate keeps no checkpoint, so this map is the
    // one thing that grows with the input.
    let mut external_ids: HashMap<String, u64> = HashMap::new();
    let mut counts = StageCounts::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Messages quote the input: escaped, so that a hostile file cannot drive the terminal.
    let mut emit = |text: String| {
        writeln!(out, "{}", escape_control(&text)).map_err(AppError::io("cannot write to stdout"))
    };
    for record in input::records_with_field_lines(&source, args.max_field_lines)? {
        let record = record?;
        let fields = match &record.fields {
            Ok(fields) => fields,
            Err(reason) => {
                counts.invalid += 1;
                emit(format!("line {}: {reason}", record.line))?;
                continue;
            }
        };
        match row::prepare(fields, source.format, record.line, &validation, &stamp) {
            Ok(valid) => match external_ids.get(&valid.external_id) {
                Some(first) => {
                    counts.duplicate += 1;
                    emit(format!(
                        "line {}: duplicate: externalId {} already used by line {first}",
                        record.line, valid.external_id
                    ))?;
                }
                None => {
                    counts.valid += 1;
                    external_ids.insert(valid.external_id, record.line);
                }
            },
            Err(err) => {
                counts.invalid += 1;
                emit(format!("line {}: {err}", record.line))?;
            }
        }
    }
    emit(format!(
        "{}: {} valid, {} invalid, {} duplicate",
        pipeline::describe_source(&source),
        counts.valid,
        counts.invalid,
        counts.duplicate
    ))?;
    out.flush()
        .map_err(AppError::io("cannot write to stdout"))?;
    Ok(if counts.invalid + counts.duplicate > 0 {
        ExitCode::Incomplete
    } else {
        ExitCode::Success
    })
}

/// The preflight on its own, printed for a person: key, region, roles, budget, lookup route.
pub fn check(args: &CheckArgs) -> Result<ExitCode, AppError> {
    if !(args.budget_share > 0.0 && args.budget_share <= 1.0) {
        return Err(config::ConfigError::BudgetShare.into());
    }
    let api = ApiConfig {
        base_url: config::resolve_base_url(args.api.base_url.as_deref())?,
        key: config::read_key(&args.api)?,
    };
    let client = ApiClient::new(api.client_config(config::DEFAULT_REQUEST_TIMEOUT), None)?;
    // A message an earlier run created, to prove the lookup route on.
    let known = match &args.db {
        Some(db) => Checkpoint::open_read_only(db)?.known_created_message()?,
        None => None,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        say!("API base URL   {}", api.base_url);
        let token = match client.current_token().await {
            Ok(token) => token,
            Err(err) => {
                say!("key            NOT USABLE: {}", escape_control(&err.to_string()));
                return Ok(ExitCode::ApiFatal);
            }
        };
        say!("key            accepted (GET /v1/auth/tokens/current answered)");
        let mut problems = Vec::new();
        match &token.roles {
            None => {
                say!("roles          not readable from the token record; the import checks each created message's audit fields instead");
            }
            Some(roles) => {
                say!("roles          {}", escape_control(&roles.join(", ")));
                let has = |wanted: &[&str]| roles.iter().any(|r| wanted.contains(&r.as_str()));
                if token.is_admin() == Some(true) {
                    say!("audit fields   kept as sent (org.admin)");
                } else {
                    say!("audit fields   would be overwritten by Kustomer: no org.admin");
                    problems.push("use an org.admin key to keep original authors and times, or import with --no-audit-fields");
                }
                if !has(&["org.admin", "org.permission.message.create", "org.user.message.write"]) {
                    problems.push("the key cannot create messages (org.permission.message.create)");
                }
                if !has(&["org.admin", "org.permission.message.read", "org.user.message.read"]) {
                    problems.push("the key cannot read messages (org.permission.message.read): unknown outcomes could not be checked");
                }
            }
        }
        let (rpm, source) = throttle::choose_budget(None, args.budget_share, token.rate.limit);
        say!("{}", source.describe(rpm).replacen("rate budget:", "rate budget    ", 1));
        if let Some(remaining) = token.rate.remaining {
            say!("org window     {remaining} requests left in the current window");
        }
        let probe = format!("kustomer-import-check-{}", jiff::Timestamp::now().as_millisecond());
        match client.find_by_external_id(&probe).await {
            Ok(LookupAnswer::Empty) => say!("lookup         GET /v1/messages/externalId=… answers 200 with no data for an unknown id: its \"not found\" can be believed"),
            Ok(LookupAnswer::Missing) => say!("lookup         GET /v1/messages/externalId=… answers 404 for an unknown id; a 404 looks the same as a missing route"),
            Ok(LookupAnswer::Found(_)) => {
                say!("lookup         answered a message for a made-up externalId: the route ignores the id");
                problems.push("lookups by externalId answer messages that do not match: unknown outcomes could not be checked");
            }
            Err(err) => {
                say!("lookup         FAILED: {}", escape_control(&err.to_string()));
                problems.push("lookups by externalId fail: unknown outcomes could not be checked");
            }
        }
        match known {
            None => say!("lookup route   unproven: no message is known to exist yet (pass --db with a job's checkpoint to prove it on one of its messages); a run proves it on the first message it creates, and stops (exit 3) if it cannot"),
            Some(known) => match client.find_by_external_id(&known.external_id).await {
                Ok(LookupAnswer::Found(found)) if found.iter().any(|m| m.id == known.message_id) => {
                    say!(
                        "lookup route   proven: found message {} (line {}) by its externalId{}",
                        escape_control(&known.message_id),
                        known.line,
                        client.lookup_spelling().map(|s| format!(" (spelling {s})")).unwrap_or_default()
                    );
                }
                Ok(_) => {
                    say!("lookup route   BROKEN: message {} (line {}) exists but was not found by its externalId", escape_control(&known.message_id), known.line);
                    problems.push("the lookup route does not find messages that exist: a run would stop (exit 3) at its first unknown outcome");
                }
                Err(err) => say!("lookup route   unproven: the lookup failed ({})", escape_control(&err.to_string())),
            },
        }
        if problems.is_empty() {
            say!("\nready to import");
            Ok(ExitCode::Success)
        } else {
            say!("\nfix before importing:");
            for problem in &problems {
                say!("  - {problem}");
            }
            Ok(ExitCode::ApiFatal)
        }
    })
}

/// What each mode would cost, for a person or as one JSON object; sends nothing.
pub fn plan(args: &PlanArgs) -> Result<ExitCode, AppError> {
    let config = PlanConfig::from_args(args)?;
    let (workload, source, staged) = match &config.source {
        PlanSource::Checkpoint(db) => {
            let checkpoint = Checkpoint::open_read_only(db)?;
            let workload = checkpoint.read_consistent(Workload::of_checkpoint)?;
            let source = format!("the rows still to send in {}", db.display());
            (workload, source, None)
        }
        PlanSource::Input { input, staging } => {
            let scratch =
                tempfile::tempdir().map_err(AppError::io("cannot create a temporary directory"))?;
            let request = JobRequest {
                input: input.clone(),
                db: scratch.path().join("plan.sqlite"),
                staging: staging.clone(),
                base_url: config::DEFAULT_BASE_URL.to_string(),
                settings: serde_json::json!({ "plan": true }),
            };
            let (mut checkpoint, job, source) = pipeline::create_job(&request)?;
            let display = if config.json {
                Display::Quiet
            } else {
                Display::detect(false)
            };
            let staged =
                pipeline::stage(&mut checkpoint, &job, &source, display, None)?.unwrap_or_default();
            let workload = Workload::of_checkpoint(&checkpoint)?;
            (workload, pipeline::describe_source(&source), Some(staged))
        }
    };
    let planned = crate::plan::plan(&workload, config.inputs);
    let mut out = std::io::stdout().lock();
    let text = if config.json {
        let mut document = serde_json::to_value(&planned)
            .map_err(|err| AppError::Fields(format!("cannot write the plan as JSON: {err}")))?;
        if let Some(object) = document.as_object_mut() {
            object.insert("source".into(), source.into());
            object.insert("budget".into(), config.budget.clone().into());
            if let Some(staged) = staged {
                let staged = serde_json::json!({
                    "valid": staged.valid,
                    "invalid": staged.invalid,
                    "duplicate": staged.duplicate,
                });
                object.insert("staged".into(), staged);
            }
        }
        serde_json::to_string_pretty(&document)
            .map_err(|err| AppError::Fields(format!("cannot write the plan as JSON: {err}")))?
    } else {
        let mut notes = Vec::new();
        if let Some(staged) = staged {
            notes.push(format!(
                "input               {} valid rows, {} invalid, {} duplicate (only valid rows are sent)",
                crate::text::thousands(staged.valid),
                crate::text::thousands(staged.invalid),
                crate::text::thousands(staged.duplicate)
            ));
        }
        notes.push(format!("budget              {}", config.budget));
        crate::plan::render_text(&planned, &escape_control(&source), &notes)
    };
    writeln!(out, "{}", text.trim_end())
        .and_then(|()| out.flush())
        .map_err(AppError::io("cannot write to stdout"))?;
    Ok(ExitCode::Success)
}

pub fn sandbox(args: &SandboxArgs) -> Result<ExitCode, AppError> {
    let config = sandbox_config(args)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let running = sandbox::start(config).await?;
        // Scripts and tests read this first line to learn the port.
        say!(
            "kustomer-import sandbox listening on {}",
            running.base_url()
        );
        say!(
            "admin key: {}   non-admin key: {}   (Ctrl-C to stop)",
            sandbox::ADMIN_KEY,
            sandbox::AGENT_KEY
        );
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        running.shutdown().await;
        Ok(ExitCode::Success)
    })
}

fn sandbox_config(args: &SandboxArgs) -> Result<SandboxConfig, AppError> {
    let mut config = SandboxConfig::new(args.listen);
    config.org_limit = args.org_limit;
    config.window = std::time::Duration::from_secs(args.window_secs.max(1));
    config.retry_after = !args.no_retry_after;
    config.reset_unit = match (args.reset_unit, args.reset_as_epoch) {
        (Some(ResetUnitArg::Seconds), _) | (None, false) => sandbox::ResetUnit::Seconds,
        (Some(ResetUnitArg::Epoch), _) | (None, true) => sandbox::ResetUnit::EpochSeconds,
        (Some(ResetUnitArg::EpochMs), _) => sandbox::ResetUnit::EpochMillis,
    };
    config.retry_after_value = args.retry_after_value.clone();
    config.rate_headers = !args.no_rate_headers;
    config.error_429 = args.error_429;
    config.live_client = args
        .live_client
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|reason| {
            sandbox::SandboxError::InvalidConfig(format!("--live-client {reason}"))
        })?;
    config.seed = args.seed;
    config.hide_roles = args.hide_roles;
    config.error_body_text = args
        .error_body_text
        .as_deref()
        .map(crate::text::unescape_code_points);
    config.faults.latency = std::time::Duration::from_millis(args.latency_ms);
    config.faults.jitter = std::time::Duration::from_millis(args.jitter_ms);
    config.faults.error_500 = args.error_500;
    config.faults.error_503 = args.error_503;
    config.faults.drop_before_store = args.drop_before_store;
    config.faults.store_then_drop = args.store_then_drop;
    config.faults.revoke_admin_after = args.revoke_admin_after;
    apply_outcome_switches(&args.outcomes, &mut config);
    apply_bulk_switches(&args.bulk, &mut config);
    Ok(config)
}

/// The issue 9 switches: bulk jobs.
fn apply_bulk_switches(args: &SandboxBulkArgs, config: &mut SandboxConfig) {
    config.bulk = sandbox::BulkConfig {
        delay: std::time::Duration::from_millis(args.bulk_delay_ms),
        jitter: std::time::Duration::from_millis(args.bulk_jitter_ms),
        batch_items: args.bulk_batch_items,
        in_order: args.bulk_in_order,
        out_of_order: args.bulk_out_of_order,
        item_error: args.bulk_item_error,
        item_error_statuses: args.bulk_item_error_status.clone(),
        item_stored_error: args.bulk_item_stored_error,
        slow_jobs: args.bulk_slow_jobs,
        slow_factor: args.bulk_slow_factor,
        never_complete: args.bulk_never_complete,
        unknown_ref: args.bulk_unknown_ref,
        duplicate_ref: args.bulk_duplicate_ref,
        read_429: args.bulk_read_429,
        read_drop: args.bulk_read_drop,
        drop_after_create: args.bulk_drop_after_create,
        bare_batches: args.bulk_bare_batches,
        reject_invalid: args.bulk_reject_invalid,
        answer_200: args.bulk_answer_200,
    };
}

/// The issue 7 switches: unknown create outcomes and misleading lookups.
fn apply_outcome_switches(args: &SandboxOutcomeArgs, config: &mut SandboxConfig) {
    config.lookup = match args.lookup_route {
        LookupRouteArg::Both => LookupSpelling::Both,
        LookupRouteArg::Camel => LookupSpelling::CamelOnly,
        LookupRouteArg::Lower => LookupSpelling::LowerOnly,
        LookupRouteArg::None => LookupSpelling::NoRoute,
    };
    config.not_found_as_empty = args.not_found_as_empty;
    config.lookup_list = args.lookup_list;
    config.redirect_to = args.redirect_to.clone();
    let faults = &mut config.faults;
    faults.store_then_error = args.store_then_error;
    faults.store_then_error_statuses = args.store_then_error_status.clone();
    faults.slow_store = args.slow_store;
    faults.slow_store_delay = std::time::Duration::from_millis(args.slow_store_ms);
    faults.accepted_202 = args.accepted_202;
    faults.created_without_id = args.created_without_id;
    faults.oversize_body = args.oversize_body;
    faults.lookup_429 = args.lookup_429;
}

/// Imports the embedded sample into an in-process sandbox and prints the report.
pub fn demo(args: &DemoArgs) -> Result<ExitCode, AppError> {
    let scratch =
        tempfile::tempdir().map_err(AppError::io("cannot create a temporary directory"))?;
    let input_path = scratch.path().join("messages.csv");
    std::fs::write(&input_path, SAMPLE_CSV).map_err(AppError::io(format!(
        "cannot write {}",
        input_path.display()
    )))?;
    let db: PathBuf = args
        .db
        .clone()
        .unwrap_or_else(|| scratch.path().join("demo.sqlite"));
    let runtime = runtime()?;
    let exit = runtime.block_on(async {
        let interrupt = signals::install();
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let running = sandbox::start(SandboxConfig::new(listen)).await?;
        let api = ApiConfig {
            base_url: running.base_url(),
            key: crate::client::ApiKey::new(sandbox::ADMIN_KEY.to_string()),
        };
        eprintln!(
            "demo: sandbox API on {}; importing the built-in sample ({} bytes)",
            running.base_url(),
            SAMPLE_CSV.len()
        );
        let request = JobRequest {
            input: InputArg::File(input_path.clone()),
            db: db.clone(),
            staging: StagingChoices::utc_defaults(None),
            base_url: api.base_url.clone(),
            settings: SendArgs::default().into_job_settings(serde_json::json!({ "demo": true }))?,
        };
        let display = Display::detect(false);
        let (mut checkpoint, job, source) = pipeline::create_job(&request)?;
        let Some(counts) =
            pipeline::stage(&mut checkpoint, &job, &source, display, Some(&interrupt))?
        else {
            return Ok(ExitCode::Interrupted);
        };
        report_staging(&counts);
        drop(checkpoint);
        let send = SendConfig::standard(display);
        // A temporary checkpoint is deleted on exit: no command naming it is worth printing.
        let kept = args.db.is_some();
        let exit = pipeline::send_and_summarise(&db, &api, &job, &send, &interrupt, kept).await?;
        let stats = running.stats();
        eprintln!(
            "sandbox now holds {} messages ({} duplicate externalIds)",
            stats.messages_stored, stats.duplicate_external_ids
        );
        running.shutdown().await;
        Ok::<_, AppError>(exit)
    })?;
    let checkpoint = Checkpoint::open_read_only(&db)?;
    let mut out = std::io::stdout().lock();
    let style = report::Style {
        next_steps: args.db.is_some(),
        ..report::Style::default()
    };
    report::write_report_styled(&checkpoint, ReportFormat::Text, &mut out, style)?;
    if args.db.is_none() {
        writeln!(
            out,
            "\n(the demo's checkpoint was temporary; pass --db PATH to keep it)"
        )
        .map_err(AppError::io("cannot write to stdout"))?;
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn sandbox_args(flags: &[&str]) -> Result<SandboxArgs, clap::Error> {
        let argv = ["kustomer-import", "sandbox"].iter().chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Sandbox(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn issue_7_switches_map_onto_the_sandbox_config() {
        let args = sandbox_args(&[
            "--store-then-error",
            "0.1",
            "--store-then-error-status",
            "408,520,599",
            "--lookup-route",
            "none",
            "--not-found-as-empty",
            "--lookup-list",
            "--slow-store",
            "0.2",
            "--slow-store-ms",
            "1500",
            "--accepted-202",
            "0.05",
            "--created-without-id",
            "0.04",
            "--oversize-body",
            "0.03",
            "--redirect-to",
            "/_sandbox/redirected",
            "--lookup-429",
            "0.5",
        ])
        .expect("flags parse");
        let config = sandbox_config(&args).expect("valid switches");
        assert_eq!(config.lookup, LookupSpelling::NoRoute);
        assert!(config.not_found_as_empty && config.lookup_list);
        assert_eq!(config.redirect_to.as_deref(), Some("/_sandbox/redirected"));
        let faults = &config.faults;
        assert_eq!(faults.store_then_error, 0.1);
        assert_eq!(faults.store_then_error_statuses, [408, 520, 599]);
        assert_eq!(faults.slow_store, 0.2);
        assert_eq!(faults.slow_store_delay, Duration::from_millis(1500));
        assert_eq!(faults.accepted_202, 0.05);
        assert_eq!(faults.created_without_id, 0.04);
        assert_eq!(faults.oversize_body, 0.03);
        assert_eq!(faults.lookup_429, 0.5);
        assert!(faults.check().is_ok());

        for (route, spelling) in [
            ("both", LookupSpelling::Both),
            ("camel", LookupSpelling::CamelOnly),
            ("lower", LookupSpelling::LowerOnly),
        ] {
            let args = sandbox_args(&["--lookup-route", route]).expect("flags parse");
            assert_eq!(
                sandbox_config(&args).expect("valid switches").lookup,
                spelling
            );
        }
    }

    #[test]
    fn bulk_switches_map_onto_the_sandbox_config() {
        let defaults = sandbox_config(&sandbox_args(&[]).expect("no flags parse"))
            .expect("the defaults are valid");
        assert_eq!(defaults.bulk, sandbox::BulkConfig::default());
        let args = sandbox_args(&[
            "--bulk-delay-ms",
            "50",
            "--bulk-jitter-ms",
            "7",
            "--bulk-in-order",
            "--bulk-out-of-order",
            "0.3",
            "--bulk-item-error",
            "0.2",
            "--bulk-item-error-status",
            "429,503",
            "--bulk-drop-after-create",
            "0.1",
            "--bulk-bare-batches",
            "--bulk-reject-invalid",
            "--bulk-answer-200",
            "--bulk-batch-items",
            "10",
            "--bulk-item-stored-error",
            "0.05",
            "--bulk-slow-jobs",
            "0.25",
            "--bulk-slow-factor",
            "4",
            "--bulk-never-complete",
            "0.01",
            "--bulk-unknown-ref",
            "0.02",
            "--bulk-duplicate-ref",
            "0.03",
            "--bulk-read-429",
            "0.4",
            "--bulk-read-drop",
            "0.6",
        ])
        .expect("flags parse");
        let bulk = sandbox_config(&args).expect("the switches are valid").bulk;
        assert_eq!(
            bulk,
            sandbox::BulkConfig {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(7),
                in_order: true,
                out_of_order: 0.3,
                item_error: 0.2,
                item_error_statuses: vec![429, 503],
                drop_after_create: 0.1,
                bare_batches: true,
                reject_invalid: true,
                answer_200: true,
                batch_items: 10,
                item_stored_error: 0.05,
                slow_jobs: 0.25,
                slow_factor: 4,
                never_complete: 0.01,
                unknown_ref: 0.02,
                duplicate_ref: 0.03,
                read_429: 0.4,
                read_drop: 0.6,
            }
        );
        assert!(sandbox_args(&["--bulk-item-error-status", "4xx"]).is_err());
    }

    #[test]
    fn issue_7_switches_default_to_off_and_bad_values_are_refused() {
        let config =
            sandbox_config(&sandbox_args(&[]).expect("no flags parse")).expect("valid switches");
        assert_eq!(config.lookup, LookupSpelling::Both);
        assert!(!config.not_found_as_empty && !config.lookup_list);
        assert!(config.redirect_to.is_none());
        assert_eq!(config.faults.store_then_error_statuses, [500, 502, 504]);
        assert_eq!(config.faults.store_then_error, 0.0);

        assert!(sandbox_args(&["--lookup-route", "upper"]).is_err());
        assert!(sandbox_args(&["--store-then-error-status", "5xx"]).is_err());
        for flags in [
            &["--store-then-error", "1.5"][..],
            &["--store-then-error-status", "404"],
            &["--lookup-429=-0.1"],
            &["--slow-store", "0.6", "--accepted-202", "0.6"],
            &["--slow-store-ms", "600001"],
        ] {
            let config =
                sandbox_config(&sandbox_args(flags).expect("flags parse")).expect("valid switches");
            assert!(config.faults.check().is_err(), "{flags:?}");
        }
    }
}
