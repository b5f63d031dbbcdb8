//! Reads a checkpoint back and tells what happened: `status` and `report`.
//!
//! Everything here works on a read-only connection while a run writes: each report reads one
//! consistent snapshot (a WAL read transaction, which never blocks the writer), aggregates with
//! SQL, and streams rows, so memory stays constant however many rows the job has.
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
//! | `errors` | every error group (failed, invalid and duplicate rows), largest first, same shape |
//!
//! # CSV report
//!
//! Header `line,externalId,conversationId,state,messageId,httpStatus,errorCode,errorMessage,`
//! `attempts,firstAttemptAt,lastAttemptAt,bulkJobId`, then one record per input row (invalid and duplicate
//! rows included) in line order; times RFC 3339 UTC, absent values empty.
//!
//! # HTML report and rejects
//!
//! `html` renders one self-contained page (summary cards, throughput and latency charts, errors
//! by class, slowest conversations, the job's settings); `rejects` copies the invalid and
//! permanently failed rows back out of the input, byte for byte.

mod html;
mod rejects;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::text::{escape_control, thousands};

use crate::checkpoint::{
    Checkpoint, CheckpointError, ErrorGroup, Job, LatencyCount, RowOutcome, RowState, StateCounts,
};

pub use rejects::{errors_path, write_rejects, RejectsSummary, ERRORS_HEADER};

/// Error groups shown by `status`.
const TOP_ERRORS: u64 = 10;
/// Example lines given per error group.
const EXAMPLE_LINES: u32 = 5;
/// Window for the current rate.
const RATE_WINDOW_MS: i64 = 60_000;
/// The shortest window a rate is measured over, so one early result is not a huge rate.
const MIN_RATE_WINDOW_MS: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write the CSV report: {0}")]
    Csv(#[from] csv::Error),
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

/// How far staging got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StagingProgress {
    pub staged_through_line: u64,
    pub complete: bool,
}

/// Whether a run is working on the job now, or how the last one left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Live,
    Complete,
    Interrupted,
    Stopped,
}

impl RunState {
    fn of(live: bool, counts: &StateCounts, staging_complete: bool) -> RunState {
        if live {
            RunState::Live
        } else if counts.sending > 0 || !staging_complete {
            RunState::Interrupted
        } else if counts.pending > 0 {
            RunState::Stopped
        } else {
            RunState::Complete
        }
    }

    /// For a heading: "Running now".
    pub fn label(self) -> &'static str {
        match self {
            RunState::Live => "Running now",
            RunState::Complete => "Complete",
            RunState::Interrupted => "Interrupted",
            RunState::Stopped => "Stopped",
        }
    }

    /// Within a sentence: "stopped".
    pub fn describe(self) -> &'static str {
        match self {
            RunState::Live => "running now",
            RunState::Complete => "complete",
            RunState::Interrupted => "interrupted",
            RunState::Stopped => "stopped",
        }
    }
}

/// A distribution of millisecond timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timings {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Timings {
    /// From distinct values with their counts, ascending; None when there are none.
    pub(crate) fn of(values: &[LatencyCount]) -> Option<Timings> {
        let count: u64 = values.iter().map(|v| v.count).sum();
        if count == 0 {
            return None;
        }
        Some(Timings {
            count,
            p50: nearest_rank(values, count, 0.50),
            p90: nearest_rank(values, count, 0.90),
            p99: nearest_rank(values, count, 0.99),
            max: values.last()?.latency_ms,
        })
    }
}

/// The nearest-rank percentile `p` of `count` values given as distinct values with counts.
pub(crate) fn nearest_rank(values: &[LatencyCount], count: u64, p: f64) -> u64 {
    let rank = ((p * count as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for value in values {
        seen += value.count;
        if seen >= rank {
            return value.latency_ms;
        }
    }
    values.last().map_or(0, |v| v.latency_ms)
}

fn timings(
    read: impl FnOnce(
        &mut dyn FnMut(LatencyCount) -> Result<(), ReportError>,
    ) -> Result<(), ReportError>,
) -> Result<Option<Timings>, ReportError> {
    let mut values = Vec::new();
    read(&mut |value| {
        values.push(value);
        Ok(())
    })?;
    Ok(Timings::of(&values))
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

/// What `status` shows; see the module docs for the field meanings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusSummary {
    pub checkpoint: PathBuf,
    pub generated_at: String,
    pub job: Job,
    pub counts: StateCounts,
    pub total: u64,
    pub held: u64,
    pub remaining: u64,
    pub staging: StagingProgress,
    pub first_attempt_at: Option<String>,
    pub last_result_at: Option<String>,
    pub elapsed_seconds: Option<f64>,
    pub finished: u64,
    pub average_rate_per_second: Option<f64>,
    pub run_state: RunState,
    pub retryable_failed: u64,
    pub rate_window_seconds: Option<f64>,
    pub last_minute_rate_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub latency_ms: Option<Timings>,
    pub budget_wait_ms: Option<Timings>,
    pub top_errors: Vec<ErrorGroup>,
    /// The org window as the last run saw it (others' rate, ours, time yielded).
    pub pacing: Option<crate::throttle::PacingSnapshot>,
    /// Bulk jobs whose rows are `sending` (in flight, or left by a run that died).
    pub bulk_jobs_in_flight: u64,
    /// Rows settled by the last run per request it spent (every kind counted), when known.
    pub messages_per_request: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Text,
    Json,
    Csv,
    /// One self-contained page; see the `html` module.
    Html,
}

/// Summarises the checkpoint as of now.
pub fn status(cp: &Checkpoint) -> Result<StatusSummary, ReportError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let live = crate::checkpoint::run_in_progress(cp.path());
    cp.read_consistent(|cp| summarize(cp, now_ms, live))
}

fn summarize(cp: &Checkpoint, now_ms: i64, live: bool) -> Result<StatusSummary, ReportError> {
    let job = cp.job()?.ok_or_else(|| CheckpointError::NoJob {
        path: cp.path().to_path_buf(),
    })?;
    let counts = cp.counts()?;
    let held = cp.held_count()?;
    let pacing = cp.pacing()?;
    let activity = cp.activity(now_ms - RATE_WINDOW_MS)?;
    let mut top_errors = Vec::new();
    cp.for_each_error_group(Some(TOP_ERRORS), EXAMPLE_LINES, |group| {
        top_errors.push(group);
        Ok::<(), CheckpointError>(())
    })?;

    let elapsed_seconds = match (activity.first_attempt_ms, activity.last_result_ms) {
        (Some(first), Some(last)) if last >= first => Some((last - first) as f64 / 1000.0),
        _ => None,
    };
    let average_rate_per_second = elapsed_seconds
        .filter(|elapsed| *elapsed > 0.0)
        .map(|elapsed| activity.finished as f64 / elapsed);
    let remaining = counts.pending + counts.sending;
    let run_state = RunState::of(live, &counts, job.staging_complete);
    // The rate is measured over the time the recent results took, never longer than the
    // window: an 8-second-old run is not divided by 60 s. Only a live run has a current rate.
    let rate_window_ms = activity
        .recent_work_started_ms
        .map_or(RATE_WINDOW_MS, |started| now_ms - started)
        .clamp(MIN_RATE_WINDOW_MS, RATE_WINDOW_MS);
    let rate_window_seconds =
        (run_state == RunState::Live).then_some(rate_window_ms as f64 / 1000.0);
    let last_minute_rate_per_second =
        rate_window_seconds.map(|window| activity.finished_since as f64 / window);
    let eta_seconds = last_minute_rate_per_second
        .filter(|rate| *rate > 0.0)
        .map(|rate| remaining as f64 / rate);
    Ok(StatusSummary {
        checkpoint: cp.path().to_path_buf(),
        generated_at: rfc3339(now_ms).unwrap_or_default(),
        staging: StagingProgress {
            staged_through_line: job.staged_through_line,
            complete: job.staging_complete,
        },
        job,
        total: counts.total(),
        counts,
        held,
        remaining,
        first_attempt_at: activity.first_attempt_ms.and_then(rfc3339),
        last_result_at: activity.last_result_ms.and_then(rfc3339),
        elapsed_seconds,
        finished: activity.finished,
        average_rate_per_second,
        run_state,
        retryable_failed: cp.retryable_failed_count()?,
        rate_window_seconds,
        last_minute_rate_per_second,
        eta_seconds,
        latency_ms: timings(|each| cp.for_each_latency(each))?,
        budget_wait_ms: timings(|each| cp.for_each_budget_wait(each))?,
        top_errors,
        bulk_jobs_in_flight: cp.bulk_jobs_sending()?,
        messages_per_request: match &pacing {
            Some(pacing) if pacing.requests > 0 => pacing.run_started_ms.map(|since| {
                cp.activity(since)
                    .map(|activity| activity.finished_since as f64 / pacing.requests as f64)
            }),
            _ => None,
        }
        .transpose()?,
        pacing,
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds; None if out of range.
fn rfc3339(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|at| format!("{at:.3}"))
}

/// Seconds as `2h 05m 09s`, `4m 03s` or `12s`.
pub(crate) fn human_duration(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (hours, minutes, secs) = (total / 3600, total / 60 % 60, total % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m {secs:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// A path as a shell argument the user can paste.
pub(crate) fn shell_quoted(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain && !text.is_empty() {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Code and message of an error group, escaped: messages quote the input and the API.
fn error_label(group: &ErrorGroup) -> String {
    format!(
        "{}  {}",
        escape_control(group.error_code.as_deref().unwrap_or("(no code)")),
        escape_control(group.error_message.as_deref().unwrap_or("(no message)"))
    )
}

/// The send settings stored with the job, as the flags that chose them.
pub fn send_settings_text(settings: &serde_json::Value) -> String {
    match crate::cli::SendArgs::from_job_settings(settings) {
        Ok(send) => {
            let chosen = send.describe();
            if chosen.is_empty() {
                "all at their defaults".to_string()
            } else {
                format!("{chosen} (the rest at their defaults)")
            }
        }
        Err(err) => format!("unreadable ({err})"),
    }
}

fn example_list(lines: &[u64], count: u64) -> String {
    let listed: Vec<String> = lines.iter().map(u64::to_string).collect();
    let more = if count > lines.len() as u64 {
        ", …"
    } else {
        ""
    };
    format!(
        "line{} {}{more}",
        if count == 1 { "" } else { "s" },
        listed.join(", ")
    )
}

/// The summary for people: aligned, with the commands that apply to go further. Every string
/// from the input or the API is escaped (control and bidi characters shown, not obeyed).
pub fn render_status_text(summary: &StatusSummary, style: Style) -> String {
    use std::fmt::Write as _;
    let job = &summary.job;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let mut line = |label: &str, value: String| {
        let _ = writeln!(text, "  {label:<15} {}", escape_control(&value));
    };
    line("Checkpoint", summary.checkpoint.display().to_string());
    line(
        "Input",
        format!(
            "{} ({}, {}, {} bytes)",
            job.input_display,
            serde_plain(&job.format),
            serde_plain(&job.compression),
            thousands(job.input_size)
        ),
    );
    line("Target", job.base_url.clone());
    line(
        "Import stamp",
        format!(
            "importedAt {}{}",
            job.imported_at,
            if job.audit_fields {
                ", with audit fields"
            } else {
                ""
            }
        ),
    );
    line("Timezone", job.timezone.clone());
    line("Send settings", send_settings_text(&job.settings));
    line(
        "Staging",
        if summary.staging.complete {
            format!(
                "complete (through line {})",
                thousands(summary.staging.staged_through_line)
            )
        } else {
            format!(
                "{} (through line {})",
                if summary.run_state == RunState::Live {
                    "in progress"
                } else {
                    "interrupted"
                },
                thousands(summary.staging.staged_through_line)
            )
        },
    );
    line("Run", summary.run_state.describe().to_string());

    let width = thousands(summary.total).len();
    line(
        "Rows",
        format!("{:>width$}  total", thousands(summary.total)),
    );
    for state in RowState::ALL {
        let count = summary.counts.get(state);
        let share = if summary.total > 0 {
            format!("{:5.1}%", count as f64 * 100.0 / summary.total as f64)
        } else {
            String::new()
        };
        let note = match state {
            RowState::Pending if summary.held > 0 => format!(
                "  ({} held behind a retryable failure in their conversation)",
                thousands(summary.held)
            ),
            RowState::Sending if count > 0 && summary.run_state == RunState::Live => {
                "  (requests in flight)".to_string()
            }
            RowState::Sending if count > 0 => {
                "  (in flight when the run ended: resume looks each one up before sending)"
                    .to_string()
            }
            RowState::Failed if summary.retryable_failed > 0 => format!(
                "  ({} transient, may succeed with --retry-failed)",
                thousands(summary.retryable_failed)
            ),
            _ => String::new(),
        };
        line(
            &format!("  {}", state.as_str()),
            format!("{:>width$}  {share}{note}", thousands(count)),
        );
    }

    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "—".to_string());
    line("First attempt", or_dash(&summary.first_attempt_at));
    line("Last result", or_dash(&summary.last_result_at));
    line(
        "Elapsed",
        summary
            .elapsed_seconds
            .map_or_else(|| "—".to_string(), human_duration),
    );
    line(
        "Average rate",
        summary.average_rate_per_second.map_or_else(
            || "—".to_string(),
            |rate| {
                format!(
                    "{rate:.1} rows/s ({} finished)",
                    thousands(summary.finished)
                )
            },
        ),
    );
    match (
        summary.last_minute_rate_per_second,
        summary.rate_window_seconds,
    ) {
        (Some(rate), Some(window)) => line(
            "Current rate",
            format!(
                "{rate:.1} rows/s (over the last {})",
                human_duration(window)
            ),
        ),
        _ => line(
            "Current rate",
            format!("— ({})", summary.run_state.describe()),
        ),
    }
    let left = thousands(summary.remaining);
    line(
        "ETA",
        match (summary.run_state, summary.eta_seconds) {
            (RunState::Complete, _) => "complete: nothing left to send".to_string(),
            (RunState::Live, Some(eta)) => {
                format!("{} for {left} rows left", human_duration(eta))
            }
            (RunState::Live, None) => {
                format!("unknown: no results in the last minute ({left} rows left)")
            }
            (RunState::Interrupted, _) => format!("— interrupted, {left} rows left"),
            (RunState::Stopped, _) => format!("— stopped, {left} rows left"),
        },
    );
    if let Some(latency) = &summary.latency_ms {
        line(
            "Latency",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms (request start to response)",
                thousands(latency.p50),
                thousands(latency.p99),
                thousands(latency.max)
            ),
        );
    }
    if let Some(wait) = &summary.budget_wait_ms {
        line(
            "Budget wait",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms (before requests started, for the rate budget)",
                thousands(wait.p50),
                thousands(wait.p99),
                thousands(wait.max)
            ),
        );
    }

    if let Some(pacing) = &summary.pacing {
        let as_of = rfc3339(pacing.updated_at_ms).unwrap_or_default();
        line("Pacing", format!("{} (as of {as_of})", pacing.describe()));
    }
    if let Some(per_request) = summary.messages_per_request {
        let jobs = match summary.bulk_jobs_in_flight {
            0 => String::new(),
            jobs => format!(", {jobs} bulk jobs in flight"),
        };
        line(
            "Spent",
            format!("{per_request:.2} messages per request in the last run{jobs}"),
        );
    }

    if style.top_errors && !summary.top_errors.is_empty() {
        let _ = writeln!(text, "\n  Top errors");
        let width = summary
            .top_errors
            .iter()
            .map(|group| thousands(group.count).len())
            .max()
            .unwrap_or(1);
        for group in &summary.top_errors {
            let _ = writeln!(
                text,
                "    {:>width$}  {} ({})",
                thousands(group.count),
                error_label(group),
                example_list(&group.example_lines, group.count)
            );
        }
    }
    if style.next_steps {
        text.push_str(&next_steps(summary));
    }
    text
}

/// The commands that apply to the job as it is, each only when it does something.
fn next_steps(summary: &StatusSummary) -> String {
    use std::fmt::Write as _;
    let db = shell_quoted(&summary.checkpoint);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\n  Every row, with errors:  kustomer-import report --db {db} --format csv"
    );
    let rejects = summary.counts.invalid
        + summary
            .counts
            .failed
            .saturating_sub(summary.retryable_failed);
    if rejects > 0 {
        let _ = writeln!(
            text,
            "  Rows to fix:             kustomer-import report --db {db} --rejects rejects.csv"
        );
    }
    match summary.run_state {
        RunState::Live => {
            let _ = writeln!(
                text,
                "  A run is working on this job now; follow it with: kustomer-import status --db {db}"
            );
        }
        _ if summary.retryable_failed > 0 => {
            let _ = writeln!(
                text,
                "  Retry transient failures: kustomer-import resume --db {db} --retry-failed"
            );
        }
        RunState::Interrupted | RunState::Stopped => {
            let _ = writeln!(
                text,
                "  Continue the job:        kustomer-import resume --db {db}"
            );
        }
        RunState::Complete => {}
    }
    text
}

/// An enum's serde name (`csv`, `gzip`).
fn serde_plain(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
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
        ReportFormat::Text => write_text(cp, now_ms, live, style, out),
        ReportFormat::Json => write_json(cp, now_ms, live, out),
        ReportFormat::Csv => write_csv(cp, style.escape_csv, out),
        ReportFormat::Html => html::write_html(cp, now_ms, live, out),
    })
}

fn write_text(
    cp: &Checkpoint,
    now_ms: i64,
    live: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let summary = summarize(cp, now_ms, live)?;
    // Every error group follows, once: the summary's top ten would repeat them.
    let style = Style {
        top_errors: false,
        ..style
    };
    out.write_all(render_status_text(&summary, style).as_bytes())?;
    let mut any = false;
    cp.for_each_error_group(None, EXAMPLE_LINES, |group| {
        if !any {
            writeln!(out, "\n  Errors by code and message")?;
            any = true;
        }
        writeln!(
            out,
            "    {:>9}  {}\n               {}",
            thousands(group.count),
            error_label(&group),
            example_list(&group.example_lines, group.count)
        )?;
        Ok::<(), ReportError>(())
    })?;
    if !any {
        writeln!(out, "\n  No errors.")?;
    }
    out.flush()?;
    Ok(())
}

fn write_json(
    cp: &Checkpoint,
    now_ms: i64,
    live: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let summary = serde_json::to_value(summarize(cp, now_ms, live)?)?;
    // The summary is small; the error groups can be as many as the rows, so they are streamed
    // into the same object after the summary's fields.
    out.write_all(b"{")?;
    if let serde_json::Value::Object(fields) = &summary {
        for (key, value) in fields {
            out.write_all(to_json_text(key)?.as_bytes())?;
            out.write_all(b":")?;
            out.write_all(to_json_text(value)?.as_bytes())?;
            out.write_all(b",")?;
        }
    }
    out.write_all(b"\"errors\":[")?;
    let mut first = true;
    cp.for_each_error_group(None, EXAMPLE_LINES, |group| {
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        out.write_all(to_json_text(&group)?.as_bytes())?;
        Ok::<(), ReportError>(())
    })?;
    out.write_all(b"]}\n")?;
    out.flush()?;
    Ok(())
}

/// `value` as compact JSON with control and bidi characters written as `\uXXXX` escapes: the
/// same JSON to a parser, inert on a terminal.
fn to_json_text(value: &impl Serialize) -> Result<String, ReportError> {
    Ok(crate::text::json_escape_unsafe(&serde_json::to_string(value)?).into_owned())
}

/// `status --json`: the summary as pretty JSON, terminal-safe like the JSON report.
pub fn status_json(summary: &StatusSummary) -> Result<String, ReportError> {
    Ok(crate::text::json_escape_unsafe(&serde_json::to_string_pretty(summary)?).into_owned())
}

/// The CSV report's header, in column order.
pub const CSV_HEADER: [&str; 12] = [
    "line",
    "externalId",
    "conversationId",
    "state",
    "messageId",
    "httpStatus",
    "errorCode",
    "errorMessage",
    "attempts",
    "firstAttemptAt",
    "lastAttemptAt",
    "bulkJobId",
];

fn write_csv(cp: &Checkpoint, escape: bool, out: &mut dyn Write) -> Result<(), ReportError> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(CSV_HEADER)?;
    cp.for_each_row_outcome(|row: &RowOutcome| {
        let text = |value: &Option<String>| match value {
            Some(value) if escape => escape_control(value).into_owned(),
            Some(value) => value.clone(),
            None => String::new(),
        };
        let time = |ms: Option<i64>| ms.and_then(rfc3339).unwrap_or_default();
        csv.write_record([
            row.line.to_string(),
            text(&row.external_id),
            text(&row.conversation_id),
            row.state.as_str().to_string(),
            text(&row.message_id),
            row.http_status.map(|s| s.to_string()).unwrap_or_default(),
            text(&row.error_code),
            text(&row.error_message),
            row.attempts.to_string(),
            time(row.first_attempt_ms),
            time(row.last_attempt_ms),
            text(&row.bulk_job_id),
        ])?;
        Ok::<(), ReportError>(())
    })?;
    csv.flush()?;
    Ok(())
}

/// Lists rows that will not be (or were not) sent — invalid, duplicate, failed — one line each
/// as `line N: [state] reason`, at most `limit` of them, then how many more there are.
pub fn write_problem_rows(
    cp: &Checkpoint,
    out: &mut dyn Write,
    limit: usize,
) -> Result<(), ReportError> {
    let mut shown = 0usize;
    let mut more = 0u64;
    cp.for_each_row_outcome(|row| {
        if !matches!(
            row.state,
            RowState::Invalid | RowState::Duplicate | RowState::Failed
        ) {
            return Ok(());
        }
        if shown == limit {
            more += 1;
            return Ok(());
        }
        shown += 1;
        writeln!(
            out,
            "line {}: [{}] {}",
            row.line,
            row.state.as_str(),
            escape_control(row.error_message.as_deref().unwrap_or(""))
        )?;
        Ok::<(), ReportError>(())
    })?;
    if more > 0 {
        writeln!(
            out,
            "... and {more} more (see `kustomer-import report --format csv`)"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::test_support::{checkpoint_with_job, invalid, stage, valid};
    use crate::checkpoint::RowResult;

    const T0: i64 = 1_000_000;

    fn result(
        state: RowState,
        code: Option<&str>,
        message: &str,
        retryable: bool,
        at_ms: i64,
    ) -> RowResult {
        RowResult {
            state,
            message_id: (state == RowState::Succeeded)
                .then(|| "0123456789abcdef01234567".to_string()),
            http_status: Some(match code {
                Some("http_503") => 503,
                Some(_) => 400,
                None => 201,
            }),
            error_code: code.map(str::to_string),
            error_message: code.map(|_| message.to_string()),
            retryable,
            latency_ms: Some(5),
            budget_wait_ms: Some(40),
            at_ms,
        }
    }

    /// c1: lines 8 (earliest), 1 (fails, retryable), 2, 3 — so 2 and 3 are held;
    /// c2: lines 4 (succeeds), 5 (fails for good); line 6 invalid; line 7 duplicates line 4.
    async fn sample_checkpoint() -> (tempfile::TempDir, Checkpoint) {
        let (dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            vec![
                valid(1, "c1", "e1", 10),
                valid(2, "c1", "e2", 20),
                valid(3, "c1", "e3", 30),
                valid(4, "c2", "e4", 10),
                valid(5, "c2", "e5", 20),
                invalid(6, "sentAt: not a date"),
                valid(7, "c2", "e4", 30),
                valid(8, "c1", "e8", 5),
            ],
        );
        let writer = cp.writer().unwrap();
        writer.mark_sending(1, T0).await.unwrap();
        writer
            .record(
                1,
                result(
                    RowState::Failed,
                    Some("http_503"),
                    "unavailable",
                    true,
                    T0 + 10_000,
                ),
            )
            .unwrap();
        writer.mark_sending(4, T0 + 5_000).await.unwrap();
        writer
            .record(4, result(RowState::Succeeded, None, "", false, T0 + 20_000))
            .unwrap();
        writer.mark_sending(5, T0 + 6_000).await.unwrap();
        writer
            .record(
                5,
                result(
                    RowState::Failed,
                    Some("http_400"),
                    "bad, \"quoted\"",
                    false,
                    T0 + 30_000,
                ),
            )
            .unwrap();
        writer.close().unwrap();
        (dir, cp)
    }

    #[tokio::test]
    async fn status_counts_held_rates_and_errors() {
        let (_dir, cp) = sample_checkpoint().await;
        let reader = Checkpoint::open_read_only(cp.path()).unwrap();
        let summary = reader
            .read_consistent(|r| summarize(r, T0 + 60_000, true))
            .unwrap();
        assert_eq!(summary.counts, reader.counts().unwrap());
        assert_eq!(
            (
                summary.counts.pending,
                summary.counts.succeeded,
                summary.counts.failed
            ),
            (3, 1, 2)
        );
        assert_eq!((summary.counts.invalid, summary.counts.duplicate), (1, 1));
        assert_eq!(summary.total, 8);
        assert_eq!(
            summary.held, 2,
            "lines 2 and 3 wait behind line 1; line 8 comes first"
        );
        assert_eq!(summary.remaining, 3);
        assert_eq!(
            summary.staging,
            StagingProgress {
                staged_through_line: 8,
                complete: true
            }
        );
        assert_eq!(
            summary.first_attempt_at.as_deref(),
            Some("1970-01-01T00:16:40.000Z")
        );
        assert_eq!(
            summary.last_result_at.as_deref(),
            Some("1970-01-01T00:17:10.000Z")
        );
        assert_eq!(summary.elapsed_seconds, Some(30.0));
        assert_eq!(summary.finished, 3);
        assert_eq!(summary.average_rate_per_second, Some(0.1));
        assert_eq!(summary.run_state, RunState::Live);
        assert_eq!(summary.last_minute_rate_per_second, Some(3.0 / 60.0));
        assert_eq!(summary.rate_window_seconds, Some(60.0));
        assert_eq!(summary.eta_seconds, Some(60.0));
        assert_eq!(summary.retryable_failed, 1);
        let latency = summary.latency_ms.unwrap();
        assert_eq!((latency.count, latency.p50, latency.max), (3, 5, 5));
        let wait = summary.budget_wait_ms.unwrap();
        assert_eq!(
            (wait.count, wait.p50),
            (3, 40),
            "budget wait kept apart from latency"
        );
        let codes: Vec<_> = summary
            .top_errors
            .iter()
            .map(|g| {
                (
                    g.error_code.clone().unwrap(),
                    g.count,
                    g.example_lines.clone(),
                )
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                ("duplicate_external_id".to_string(), 1, vec![7]),
                ("http_400".to_string(), 1, vec![5]),
                ("http_503".to_string(), 1, vec![1]),
                ("invalid_row".to_string(), 1, vec![6]),
            ]
        );

        // Right after the last result the work of the last minute began 30 s ago: the rate is
        // over those 30 s, not over a minute the run was not there for.
        let young = reader
            .read_consistent(|r| summarize(r, T0 + 30_000, true))
            .unwrap();
        assert_eq!(young.rate_window_seconds, Some(30.0));
        assert_eq!(young.last_minute_rate_per_second, Some(0.1));
        assert_eq!(young.eta_seconds, Some(30.0));

        // An hour later nothing finished in the last minute: no rate, no ETA.
        let later = reader
            .read_consistent(|r| summarize(r, T0 + 3_600_000, true))
            .unwrap();
        assert_eq!(later.last_minute_rate_per_second, Some(0.0));
        assert_eq!(later.eta_seconds, None);

        // Nothing running: no current rate and no ETA, and the text says why.
        let stopped = reader
            .read_consistent(|r| summarize(r, T0 + 60_000, false))
            .unwrap();
        assert_eq!(stopped.run_state, RunState::Stopped);
        assert_eq!(stopped.last_minute_rate_per_second, None);
        assert_eq!(stopped.eta_seconds, None);
        let text = render_status_text(&stopped, Style::default());
        assert!(text.contains("— stopped, 3 rows left"), "{text}");
        assert!(!text.contains("rows/s (over"), "{text}");
    }

    #[tokio::test]
    async fn csv_to_a_terminal_escapes_what_a_file_keeps() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(&mut cp, vec![invalid(1, "bad \u{1b}[2J\u{202e}(line 5)")]);
        let csv_of = |escape_csv| {
            let mut out = Vec::new();
            let style = Style {
                escape_csv,
                ..Style::default()
            };
            write_report_styled(&cp, ReportFormat::Csv, &mut out, style).unwrap();
            String::from_utf8(out).unwrap()
        };
        let terminal = csv_of(true);
        assert!(
            terminal.contains(r"bad \u{1b}[2J\u{202e}(line 5)"),
            "{terminal}"
        );
        assert!(!terminal.contains('\u{1b}') && !terminal.contains('\u{202e}'));
        assert!(csv_of(false).contains("bad \u{1b}[2J\u{202e}(line 5)"));
        let mut text = Vec::new();
        write_report(&cp, ReportFormat::Text, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text}"
        );
    }

    #[tokio::test]
    async fn error_groups_count_rows_and_cap_examples() {
        let (_dir, mut cp) = checkpoint_with_job();
        stage(
            &mut cp,
            (1..=12).map(|l| invalid(l, "sentAt: missing")).collect(),
        );
        let summary = status(&cp).unwrap();
        assert_eq!(summary.top_errors.len(), 1);
        assert_eq!(summary.top_errors[0].count, 12);
        assert_eq!(summary.top_errors[0].example_lines, vec![1, 2, 3, 4, 5]);
        assert_eq!(summary.run_state, RunState::Complete, "nothing to send");
        assert_eq!(summary.eta_seconds, None);
    }

    #[tokio::test]
    async fn csv_has_every_row_in_line_order_and_agrees_with_counts() {
        let (_dir, cp) = sample_checkpoint().await;
        let reader = Checkpoint::open_read_only(cp.path()).unwrap();
        let mut out = Vec::new();
        write_report(&reader, ReportFormat::Csv, &mut out).unwrap();
        let mut csv = csv::Reader::from_reader(out.as_slice());
        assert_eq!(csv.headers().unwrap(), CSV_HEADER.as_slice());
        let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
        let lines: Vec<&str> = records.iter().map(|r| &r[0]).collect();
        assert_eq!(lines, vec!["1", "2", "3", "4", "5", "6", "7", "8"]);

        let mut from_csv = StateCounts::default();
        for record in &records {
            match RowState::parse(&record[3]).unwrap() {
                RowState::Pending => from_csv.pending += 1,
                RowState::Sending => from_csv.sending += 1,
                RowState::Succeeded => from_csv.succeeded += 1,
                RowState::Failed => from_csv.failed += 1,
                RowState::Invalid => from_csv.invalid += 1,
                RowState::Duplicate => from_csv.duplicate += 1,
            }
        }
        assert_eq!(from_csv, reader.counts().unwrap());

        let row4: Vec<&str> = records[3].iter().collect();
        assert_eq!(
            row4,
            vec![
                "4",
                "e4",
                "c2",
                "succeeded",
                "0123456789abcdef01234567",
                "201",
                "",
                "",
                "1",
                "1970-01-01T00:16:45.000Z",
                "1970-01-01T00:16:45.000Z",
                ""
            ]
        );
        assert_eq!(&records[4][7], "bad, \"quoted\"", "quoting round-trips");
        assert_eq!(&records[5][3], "invalid");
        assert_eq!(&records[5][7], "sentAt: not a date");
        assert_eq!(&records[6][7], "externalId e4 already used by line 4");
        assert_eq!(&records[1][8], "0");
        assert_eq!(&records[1][9], "");
    }

    #[tokio::test]
    async fn json_is_one_object_with_documented_fields() {
        let (_dir, cp) = sample_checkpoint().await;
        let mut out = Vec::new();
        write_report(&cp, ReportFormat::Json, &mut out).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for field in [
            "checkpoint",
            "generated_at",
            "job",
            "counts",
            "total",
            "held",
            "remaining",
            "staging",
            "first_attempt_at",
            "last_result_at",
            "elapsed_seconds",
            "finished",
            "average_rate_per_second",
            "run_state",
            "retryable_failed",
            "rate_window_seconds",
            "last_minute_rate_per_second",
            "eta_seconds",
            "latency_ms",
            "budget_wait_ms",
            "top_errors",
            "errors",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["counts"]["pending"], 3);
        assert_eq!(json["total"], 8);
        assert_eq!(json["held"], 2);
        assert_eq!(json["job"]["input_display"], "messages.csv");
        assert_eq!(json["job"]["format"], "csv");
        assert_eq!(json["job"]["settings"]["concurrency"], 8);
        assert_eq!(json["run_state"], "stopped");
        assert_eq!(json["budget_wait_ms"]["p50"], 40);
        assert_eq!(json["staging"]["complete"], true);
        assert_eq!(json["errors"].as_array().unwrap().len(), 4);
        assert_eq!(json["errors"][0]["error_code"], "duplicate_external_id");
        assert_eq!(json["errors"][0]["example_lines"], serde_json::json!([7]));
    }

    #[tokio::test]
    async fn text_report_shows_summary_errors_and_next_steps() {
        let (_dir, cp) = sample_checkpoint().await;
        let mut out = Vec::new();
        write_report(&cp, ReportFormat::Text, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("messages.csv (csv, gzip, 1,234 bytes)"),
            "{text}"
        );
        assert!(text.contains("2 held behind a retryable failure"), "{text}");
        assert!(text.contains("Errors by code and message"), "{text}");
        assert!(text.contains("http_503  unavailable"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert!(text.contains("kustomer-import resume --db"), "{text}");
        assert!(text.contains("--format csv"), "{text}");
        let rows_line = text.lines().find(|l| l.contains("succeeded")).unwrap();
        assert!(rows_line.contains(" 1 "), "{rows_line}");
    }

    #[tokio::test]
    async fn status_works_while_a_writer_holds_a_transaction() {
        let (_dir, cp) = sample_checkpoint().await;
        let writer = rusqlite::Connection::open(cp.path()).unwrap();
        writer
            .execute_batch("BEGIN IMMEDIATE; UPDATE row SET state = 'sending' WHERE line = 2;")
            .unwrap();
        let reader = Checkpoint::open_read_only(cp.path()).unwrap();
        let started = std::time::Instant::now();
        let summary = status(&reader).unwrap();
        let mut out = Vec::new();
        write_report(&reader, ReportFormat::Csv, &mut out).unwrap();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "reader waited"
        );
        assert_eq!(
            summary.counts.sending, 0,
            "uncommitted writes are invisible"
        );
        writer.execute_batch("COMMIT").unwrap();
        assert_eq!(status(&reader).unwrap().counts.sending, 1);
    }

    #[tokio::test]
    async fn report_queries_aggregate_results_errors_and_rejects() {
        let (_dir, cp) = sample_checkpoint().await;
        let reader = Checkpoint::open_read_only(cp.path()).unwrap();
        assert_eq!(reader.first_row_offset().unwrap(), Some(100));
        let mut rejected = Vec::new();
        reader
            .for_each_rejected_row(|row| {
                rejected.push((row.line, row.byte_offset, row.state));
                Ok::<(), CheckpointError>(())
            })
            .unwrap();
        assert_eq!(
            rejected,
            vec![(5, 500, RowState::Failed), (6, 600, RowState::Invalid)],
            "the retryable failure (1) and the duplicate (7) are not rejects"
        );
        assert_eq!(reader.retryable_failed_count().unwrap(), 1);

        assert_eq!(
            reader.result_span().unwrap(),
            Some((T0 + 10_000, T0 + 30_000))
        );
        let buckets: Vec<(u64, u64, u64)> = reader
            .result_buckets(T0, 10_000)
            .unwrap()
            .iter()
            .map(|b| (b.index, b.succeeded, b.failed))
            .collect();
        assert_eq!(buckets, vec![(1, 0, 1), (2, 1, 0), (3, 0, 1)]);

        let mut latencies = Vec::new();
        reader
            .for_each_latency(|value| {
                latencies.push((value.latency_ms, value.count));
                Ok::<(), CheckpointError>(())
            })
            .unwrap();
        assert_eq!(latencies, vec![(5, 3)]);

        let classes: Vec<(String, RowState, u64)> = reader
            .error_classes(12, 3, 5)
            .unwrap()
            .into_iter()
            .map(|c| (c.error_code.unwrap(), c.state, c.count))
            .collect();
        assert_eq!(
            classes,
            vec![
                ("duplicate_external_id".to_string(), RowState::Duplicate, 1),
                ("http_400".to_string(), RowState::Failed, 1),
                ("http_503".to_string(), RowState::Failed, 1),
                ("invalid_row".to_string(), RowState::Invalid, 1),
            ]
        );
        assert_eq!(reader.error_classes(1, 3, 5).unwrap().len(), 1);

        let slowest: Vec<(String, u64, u64, u64, i64)> = reader
            .slowest_conversations(10)
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c.conversation_id.clone(),
                    c.rows,
                    c.succeeded,
                    c.failed,
                    c.duration_ms(),
                )
            })
            .collect();
        assert_eq!(
            slowest,
            vec![
                ("c2".to_string(), 2, 1, 1, 25_000),
                ("c1".to_string(), 4, 0, 1, 10_000),
            ]
        );
    }

    #[tokio::test]
    async fn error_classes_keep_top_messages_with_examples() {
        let (_dir, mut cp) = checkpoint_with_job();
        let mut rows: Vec<_> = (1..=7).map(|l| invalid(l, "sentAt: missing")).collect();
        rows.extend((8..=10).map(|l| invalid(l, "channel: unknown")));
        rows.push(invalid(11, "app: empty"));
        rows.push(invalid(12, "app: empty"));
        stage(&mut cp, rows);
        let classes = cp.error_classes(5, 2, 3).unwrap();
        assert_eq!(classes.len(), 1);
        let class = &classes[0];
        assert_eq!((class.count, class.distinct_messages), (12, 3));
        let messages: Vec<(&str, u64, Vec<u64>)> = class
            .top_messages
            .iter()
            .map(|m| {
                (
                    m.error_message.as_deref().unwrap(),
                    m.count,
                    m.example_lines.clone(),
                )
            })
            .collect();
        assert_eq!(
            messages,
            vec![
                ("sentAt: missing", 7, vec![1, 2, 3]),
                ("channel: unknown", 3, vec![8, 9, 10]),
            ]
        );
    }

    #[tokio::test]
    async fn html_report_is_self_contained_escaped_and_agrees_with_json() {
        let (_dir, cp) = sample_checkpoint().await;
        let mut out = Vec::new();
        write_report(&cp, ReportFormat::Html, &mut out).unwrap();
        let html = String::from_utf8(out).unwrap();
        let metric = |name: &str| -> String {
            let needle = format!("data-metric=\"{name}\" data-value=\"");
            let start = html
                .find(&needle)
                .unwrap_or_else(|| panic!("{name} missing"))
                + needle.len();
            html[start..start + html[start..].find('"').unwrap()].to_string()
        };
        let mut json = Vec::new();
        write_report(&cp, ReportFormat::Json, &mut json).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        for state in ["succeeded", "failed", "invalid", "duplicate"] {
            assert_eq!(metric(state), json["counts"][state].to_string(), "{state}");
        }
        for field in ["total", "held", "remaining"] {
            assert_eq!(metric(field), json[field].to_string(), "{field}");
        }
        assert_eq!(metric("elapsed_seconds"), "30");
        assert_eq!(metric("latency_p99_ms"), "5");
        assert_eq!(
            metric("budget_wait_p50_ms"),
            "40",
            "the wait for the budget is shown apart from the latency"
        );
        assert_eq!(
            metric("bucket_ms"),
            "500",
            "20 s of results in at most 60 bars"
        );
        assert!(html.contains("bad, &quot;quoted&quot;"), "message escaped");
        assert!(!html.contains("<script"), "no scripts");
        for external in [
            "http://",
            "https://",
            "url(",
            "@import",
            "<link rel=\"stylesheet",
        ] {
            let allowed = [
                "http://www.w3.org/2000/svg",
                "https://acme.api.kustomerapp.com",
            ];
            let mut rest = html.as_str();
            while let Some(at) = rest.find(external) {
                let tail = &rest[at..];
                assert!(
                    allowed.iter().any(|ok| tail.starts_with(ok)),
                    "external reference at {}",
                    &tail[..tail.len().min(60)]
                );
                rest = &rest[at + external.len()..];
            }
        }
        assert!(html.contains("--retry-failed"), "next steps name the retry");
        assert!(html.contains("--rejects"), "next steps name the rejects");
    }

    #[test]
    fn status_without_a_job_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        drop(Checkpoint::open(&path).unwrap());
        let reader = Checkpoint::open_read_only(&path).unwrap();
        assert!(matches!(
            status(&reader),
            Err(ReportError::Checkpoint(CheckpointError::NoJob { .. }))
        ));
    }

    #[test]
    fn number_and_duration_formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(human_duration(9.4), "9s");
        assert_eq!(human_duration(243.0), "4m 03s");
        assert_eq!(human_duration(7509.0), "2h 05m 09s");
        assert_eq!(shell_quoted(Path::new("/tmp/cp.db")), "/tmp/cp.db");
        assert_eq!(
            shell_quoted(Path::new("/tmp/my cp's.db")),
            r"'/tmp/my cp'\''s.db'"
        );
    }
}
