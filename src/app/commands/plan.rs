//! `plan`: what each mode would cost; sends nothing.

use std::io::Write;

use crate::checkpoint::Checkpoint;
use crate::cli::PlanArgs;
use crate::config::{self, PlanConfig, PlanSource};
use crate::exit_codes::ExitCode;
use crate::plan::Workload;
use crate::progress::Display;
use crate::text::escape_control;

use crate::app::pipeline::{self, JobRequest};
use crate::app::AppError;

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
        crate::report::plan_text(&planned, &escape_control(&source), &notes)
    };
    writeln!(out, "{}", text.trim_end())
        .and_then(|()| out.flush())
        .map_err(AppError::io("cannot write to stdout"))?;
    Ok(ExitCode::Success)
}
