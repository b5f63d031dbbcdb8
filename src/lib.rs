//! kustomer-import: resumable, ordered, rate-aware import of historical messages into Kustomer.
//!
//! Data flows one way: `cli` flags become a validated `config`; `input` readers stream raw
//! records; `row` validates and stamps them; `checkpoint` stores every row's fate; `send`
//! sends through `client` with `retry`; `report` reads the checkpoint back; `plan` models
//! what each send mode would cost from the checkpoint's rows still to send. `app` wires the
//! commands together and `exit_codes` maps outcomes to the process exit status.

pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod config;
pub mod exit_codes;
pub mod input;
pub mod output;
pub mod plan;
pub mod progress;
pub mod report;
pub mod resolve;
pub mod retry;
pub mod row;
pub mod sandbox;
pub mod send;
pub mod text;
pub mod throttle;

/// Diagnostics on stderr, filtered by `RUST_LOG` (default: warnings). Nothing logged carries the
/// API key: it lives only in a sensitive Authorization header, which is never logged.
/// Colour only on a terminal, and never when `NO_COLOR` is set.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let colour = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .try_init();
}
