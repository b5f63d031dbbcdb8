//! Reads a checkpoint back and tells what happened: `status` and `report`.
//!
//! Everything here works on a read-only connection while a run writes: each report reads one
//! consistent snapshot (a WAL read transaction, which never blocks the writer), aggregates with
//! SQL, and streams rows, so memory stays constant however many rows the job has.
//!
//! `summary` reads the figures from the store; `text` (the `status` summary, the text report,
//! the problem rows), `json`, `csv`, `html/` and `rejects` write them; `plan_text` writes
//! `plan`'s model in words. This module reads `checkpoint`, `input` (rejects), `plan` and
//! `text`; it may not import the commands, their flags or configuration (`app`, `cli`,
//! `config`, `progress`), nor the send engine (`send`, `client`, `throttle`).
//!
//! # JSON report fields
//!
//! `write_report(.., ReportFormat::Json, ..)` writes one JSON object, these field names stable:
//!
//! | field | meaning |
//! |---|---|
//! | `checkpoint` | path of the checkpoint file |
//! | `generated_at` | when the report was made (RFC 3339 UTC) |
//! | `job` | the job's settings: `input_display`, `input_path`, `input_size`, `input_sha256`, `format`, `compression`, `base_url`, `imported_at`, `audit_fields`, `created_by`, `timezone`, `ignore_unknown`, `settings` (object), `tool_version`, `created_at_ms`, `staged_through_line`, `staging_complete` |
//! | `counts` | rows by state: `pending`, `sending`, `succeeded`, `failed`, `invalid`, `duplicate` |
//! | `total` | rows in the checkpoint (sum of `counts`) |
//! | `held` | pending rows waiting behind a retryable failure earlier in their conversation |
//! | `remaining` | rows still to send: pending + sending |
//! | `staging` | `staged_through_line` (highest input line staged), `complete` (bool) |
//! | `first_attempt_at` | first send attempt (RFC 3339 UTC) or null |
//! | `last_result_at` | latest succeeded/failed result (RFC 3339 UTC) or null |
//! | `elapsed_seconds` | from `first_attempt_at` to `last_result_at`, or null |
//! | `finished` | rows with a final result (succeeded + failed) |
//! | `average_rate_per_second` | `finished / elapsed_seconds`, or null |
//! | `run_state` | `live` (a run holds the job's lock now), `complete` (nothing left to send), `interrupted` (rows were in flight or staging unfinished when the last run ended), `stopped` (rows left, nothing running) |
//! | `retryable_failed` | failed rows a retry may fix (`resume --retry-failed`) |
//! | `rate_window_seconds` | the window the current rate is measured over: the last 60 s, or less when the run is younger; null unless `live` |
//! | `last_minute_rate_per_second` | results in that window, per second; null unless `live` |
//! | `eta_seconds` | `remaining / last_minute_rate_per_second`; null unless `live` with a rate |
//! | `latency_ms` | the last attempt of each sent row, from request start to response: `count`, `p50`, `p90`, `p99`, `max`; null before any |
//! | `budget_wait_ms` | the time those attempts waited for the rate budget and a concurrency slot before starting, same shape; null when not recorded |
//! | `top_errors` | the 10 largest error groups: `error_code`, `error_message` (ids and numbers replaced by `<id>` and `<n>`), `count`, `example_lines` |
//! | `resolution` | for rows naming source tickets: `customers` and `conversations`, each `found_by_external_id`, `found_by_email`, `created`, `failed`, `waiting` (not resolved yet); null otherwise |
//! | `errors` | every error group (failed, invalid and duplicate rows), largest first, same shape |
//!
//! # CSV report
//!
//! Header `line,externalId,conversationId,state,messageId,httpStatus,errorCode,errorMessage,`
//! `attempts,firstAttemptAt,lastAttemptAt,bulkJobId,conversationExternalId,customerId,`
//! `resolvedConversationId`, then one record per input row (invalid and duplicate
//! rows included) in line order; times RFC 3339 UTC, absent values empty.
//!
//! # HTML report and rejects
//!
//! `html` renders one self-contained page (summary cards, throughput and latency charts, errors
//! by class, slowest conversations, the job's settings); `rejects` copies the invalid and
//! permanently failed rows back out of the input, byte for byte.

mod csv;
mod html;
mod json;
mod plan_text;
mod rejects;
mod summary;
#[cfg(test)]
mod tests;
mod text;

use std::io::Write;
use std::path::PathBuf;

use crate::checkpoint::{Checkpoint, CheckpointError};

pub use self::csv::CSV_HEADER;
pub use json::status_json;
pub use plan_text::{bulk_hint, plan_text};
pub use rejects::{errors_path, write_rejects, RejectsSummary, ERRORS_HEADER};
pub use summary::{status, RunState, StagingProgress, StatusSummary, Timings};
pub use text::{render_status_text, send_settings_text, write_problem_rows};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write the CSV report: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("cannot write the JSON report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the job's input {path} is gone: the rejects are copied out of it, so put it back where it was staged from")]
    InputMissing { path: PathBuf },
    #[error("the job's input {path} has changed since it was staged ({detail}); the rejects are copied out of the staged file, so restore it")]
    InputChanged { path: PathBuf, detail: String },
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the checkpoint's row positions do not fit {path}: {detail}")]
    Spans { path: PathBuf, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
    /// One self-contained page; see the `html` module.
    Html,
}

/// How a report is written for its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Escape control and bidi characters in CSV values (for a terminal; a file keeps them).
    pub escape_csv: bool,
    /// Print the commands to go further (not for a checkpoint about to be deleted).
    pub next_steps: bool,
    /// Show the largest error groups in the summary (`status`; the text report lists them all
    /// once instead).
    pub top_errors: bool,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            escape_csv: false,
            next_steps: true,
            top_errors: true,
        }
    }
}

/// Writes the report in `format`, streaming rows; see the module docs for the layouts.
pub fn write_report(
    cp: &Checkpoint,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    write_report_styled(cp, format, out, Style::default())
}

/// [`write_report`] for a given reader (a terminal, a temporary checkpoint).
pub fn write_report_styled(
    cp: &Checkpoint,
    format: ReportFormat,
    out: &mut dyn Write,
    style: Style,
) -> Result<(), ReportError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let live = crate::checkpoint::run_in_progress(cp.path());
    cp.read_consistent(|cp| match format {
        ReportFormat::Text => text::write_text(cp, now_ms, live, style, out),
        ReportFormat::Json => json::write_json(cp, now_ms, live, out),
        ReportFormat::Csv => self::csv::write_csv(cp, style.escape_csv, out),
        ReportFormat::Html => html::write_html(cp, now_ms, live, out),
    })
}
