//! `run` and `resume`: a job from staging to its last send (and `run --dry-run`).

use std::io::Write;

use crate::checkpoint::{Checkpoint, CheckpointError, JobLock};
use crate::cli::{ResumeArgs, RunArgs, SendArgs};
use crate::config::{self, ApiConfig, RunConfig, SendConfig, StagingChoices};
use crate::exit_codes::ExitCode;
use crate::progress::Display;
use crate::report::{self};
use crate::text::escape_control;

use crate::app::pipeline::{self, JobRequest, StageCounts};
use crate::app::{runtime, signals, AppError};

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
        // Locked before the input is read: reading stdin can take minutes, and a second `run` on
        // the same checkpoint must be refused during them too.
        let claim = pipeline::claim_checkpoint(&config.db)?;
        let (mut checkpoint, job, source) =
            match pipeline::create_job_interruptible(&request, Some(&interrupt)) {
                Ok(created) => created,
                Err(err) => {
                    claim.abandon();
                    return Err(err);
                }
            };
        let _lock = claim.keep();
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
                if let Some(saving) = crate::plan::bulk_would_halve(&checkpoint)? {
                    eprintln!("{}", crate::report::bulk_hint(checkpoint.path(), saving));
                }
            }
        }
        drop(checkpoint);
        pipeline::send_and_summarise(&config.db, &api, &job, &config.send, &interrupt, true).await
    })
}

pub(super) fn report_staging(counts: &StageCounts) {
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
