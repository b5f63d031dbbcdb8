//! The commands: each takes validated configuration, drives the library modules, prints for a
//! person, and returns the exit code. `main.rs` only maps the result to the process status.
//!
//! `commands/` holds one file per command family, `pipeline` the steps `run`, `resume` and the
//! demo share, each in a file of its own (`new_job`, `input_checks`, `staging`, `send_phase`,
//! `summary`), `prepare` the record-to-row step staging and `validate` share, `signals` the
//! interrupt, `bench` the benchmarks. `app` is the top: it may import
//! every module of the importer, and nothing imports it.

mod bench;
mod commands;
mod input_checks;
mod new_job;
mod pipeline;
mod prepare;
mod send_phase;
mod signals;
mod staging;
mod summary;

use crate::checkpoint::CheckpointError;
use crate::cli::{Cli, Command};
use crate::config::ConfigError;
use crate::exit_codes::ExitCode;
use crate::input::InputError;

pub use pipeline::{create_job, create_job_interruptible, stage, JobRequest, StageCounts};

/// Everything that can end a command early, each with the exit code it means.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Input(#[from] InputError),
    /// Columns or keys that stop the run before anything is staged.
    #[error("{0}")]
    Fields(String),
    #[error("{0}")]
    InputChanged(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientBuildError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    #[error(transparent)]
    Send(#[from] crate::send::SendError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    /// Ctrl-C or SIGTERM before the job could start.
    #[error("{0}")]
    Interrupted(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl AppError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AppError::Checkpoint(err) if err.is_storage_failure() => ExitCode::Storage,
            AppError::Send(crate::send::SendError::Checkpoint(err)) if err.is_storage_failure() => {
                ExitCode::Storage
            }
            AppError::Send(crate::send::SendError::Worker(_)) => ExitCode::Internal,
            AppError::Send(_) => ExitCode::Storage,
            AppError::Interrupted(_) => ExitCode::Interrupted,
            _ => ExitCode::Usage,
        }
    }

    /// True when the error is stdout (or another pipe) closed by its reader, as in
    /// `status | head -1`: like ripgrep, the command then stops quietly with success.
    pub fn is_broken_pipe(&self) -> bool {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = current {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return true;
                }
            }
            if let Some(csv) = err.downcast_ref::<csv::Error>() {
                if let csv::ErrorKind::Io(io) = csv.kind() {
                    if io.kind() == std::io::ErrorKind::BrokenPipe {
                        return true;
                    }
                }
            }
            if let Some(json) = err.downcast_ref::<serde_json::Error>() {
                if json.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) {
                    return true;
                }
            }
            current = err.source();
        }
        false
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
        let context = context.into();
        move |source| AppError::Io { context, source }
    }
}

/// Runs one command to its end.
pub fn run(cli: Cli) -> Result<ExitCode, AppError> {
    match cli.command {
        Command::Run(args) => commands::run(&args),
        Command::Resume(args) => commands::resume(&args),
        Command::Status(args) => commands::status(&args),
        Command::Report(args) => commands::report(&args),
        Command::Validate(args) => commands::validate(&args),
        Command::Check(args) => commands::check(&args),
        Command::Plan(args) => commands::plan(&args),
        Command::Sandbox(args) => commands::sandbox(&args),
        Command::Demo(args) => commands::demo(&args),
        Command::Bench(args) => bench::run(&args),
    }
}

/// Writes one line to stdout. A failed write (a closed pipe above all) is an error, never a
/// panic as with `println!`; `main` ends quietly on a closed pipe.
pub(crate) fn print_line(line: std::fmt::Arguments) -> Result<(), AppError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(AppError::io("cannot write to stdout"))
}

/// `println!` that returns an error instead of panicking: see [`print_line`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::app::print_line(format_args!($($arg)*))?
    };
}
pub(crate) use say;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)
}
