//! `demo`: the sandbox, the sample import and its report, in one process.

use std::io::Write;
use std::path::PathBuf;

use crate::checkpoint::Checkpoint;
use crate::cli::{DemoArgs, SendArgs};
use crate::config::{ApiConfig, InputArg, SendConfig, StagingChoices};
use crate::exit_codes::ExitCode;
use crate::progress::Display;
use crate::report::{self, ReportFormat};
use crate::sandbox::{self, SandboxConfig};

use super::job::report_staging;
use crate::app::pipeline::{self, JobRequest};
use crate::app::{runtime, signals, AppError};

/// The sample the demo imports, embedded so the demo works from any directory.
const SAMPLE_CSV: &str = include_str!("../../../samples/messages.csv");

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
