//! Entry point: parse flags, run the command, map the outcome to the exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    kustomer_import::init_logging();
    let cli = kustomer_import::cli::Cli::parse();
    match kustomer_import::app::run(cli) {
        Ok(code) => code.into(),
        // The reader of stdout went away (`status | head -1`): stop quietly, like ripgrep.
        Err(err) if err.is_broken_pipe() => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // Errors quote the input and the API: shown, never obeyed by the terminal.
            eprintln!(
                "error: {}",
                kustomer_import::text::escape_lines(&err.to_string())
            );
            err.exit_code().into()
        }
    }
}
