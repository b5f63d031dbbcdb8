//! `status` and `report`: a job's checkpoint read back, never written.

use std::io::Write;

use crate::checkpoint::Checkpoint;
use crate::cli::{ReportArgs, ReportFormatArg, StatusArgs};
use crate::config::InputArg;
use crate::exit_codes::ExitCode;
use crate::output::{Destination, OutputFile, Protected};
use crate::report::{self, ReportFormat};

use crate::app::{say, AppError};

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
