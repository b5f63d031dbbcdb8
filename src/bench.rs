//! TEMPORARY stub.
use crate::app::AppError;
use crate::exit_codes::ExitCode;
pub fn run(_: &crate::cli::BenchArgs) -> Result<ExitCode, AppError> { todo!() }
