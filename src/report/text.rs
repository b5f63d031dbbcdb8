//! Reports for people: the `status` summary, the text report, the problem rows.

use std::io::Write;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, ErrorGroup, RowState, SEND_SETTINGS_KEY};
use crate::text::{duration, escape_control, shell_quoted, thousands, whole_seconds};

use super::summary::{rfc3339, summarize, RunState, StatusSummary, EXAMPLE_LINES};
use super::{ReportError, Style};

/// Code and message of an error group, escaped: messages quote the input and the API.
fn error_label(group: &ErrorGroup) -> String {
    format!(
        "{}  {}",
        escape_control(group.error_code.as_deref().unwrap_or("(no code)")),
        escape_control(group.error_message.as_deref().unwrap_or("(no message)"))
    )
}

/// The send settings stored with the job, as the flags that chose them (the store keeps them
/// keyed by flag name, in the order given by `config`); a report knows no flags of its own.
pub fn send_settings_text(settings: &serde_json::Value) -> String {
    let chosen = match settings.get(SEND_SETTINGS_KEY) {
        None => String::new(),
        Some(serde_json::Value::Object(stored)) => stored
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(flag, value)| match value {
                serde_json::Value::String(text) => format!("--{flag} {text}"),
                other => format!("--{flag} {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => return format!("unreadable (expected an object, found {other})"),
    };
    if chosen.is_empty() {
        "all at their defaults".to_string()
    } else {
        format!("{chosen} (the rest at their defaults)")
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
    let mut out = Lines::default();
    job_lines(summary, &mut out);
    row_lines(summary, &mut out);
    resolution_lines(summary, &mut out);
    timing_lines(summary, &mut out);
    request_lines(summary, &mut out);
    let mut text = out.text;
    if style.top_errors {
        text.push_str(&top_errors(summary));
    }
    if style.next_steps {
        text.push_str(&next_steps(summary));
    }
    text
}

/// Aligned `label  value` lines; every value escaped.
#[derive(Default)]
struct Lines {
    text: String,
}

impl Lines {
    fn line(&mut self, label: &str, value: String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "  {label:<15} {}", escape_control(&value));
    }
}

/// Where the job comes from and goes to, its settings, how far staging got, the run's state.
fn job_lines(summary: &StatusSummary, out: &mut Lines) {
    let job = &summary.job;
    out.line("Checkpoint", summary.checkpoint.display().to_string());
    out.line(
        "Input",
        format!(
            "{} ({}, {}, {} bytes)",
            job.input_display,
            serde_plain(&job.format),
            serde_plain(&job.compression),
            thousands(job.input_size)
        ),
    );
    out.line("Target", job.base_url.clone());
    out.line(
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
    out.line("Timezone", job.timezone.clone());
    out.line("Send settings", send_settings_text(&job.settings));
    out.line(
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
    out.line("Run", summary.run_state.describe().to_string());
}

/// Rows by state, with their share and what the state means for them now.
fn row_lines(summary: &StatusSummary, out: &mut Lines) {
    let width = thousands(summary.total).len();
    out.line(
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
        out.line(
            &format!("  {}", state.as_str()),
            format!("{:>width$}  {share}{note}", thousands(count)),
        );
    }
}

/// How the source tickets' customers and conversations were resolved (found, created, failed).
fn resolution_lines(summary: &StatusSummary, out: &mut Lines) {
    let Some(resolution) = &summary.resolution else {
        return;
    };
    for (label, counts) in [
        ("Customers", &resolution.customers),
        ("Conversations", &resolution.conversations),
    ] {
        let mut parts = vec![format!(
            "{} found by externalId",
            thousands(counts.found_by_external_id)
        )];
        if label == "Customers" {
            parts.push(format!("{} by email", thousands(counts.found_by_email)));
        }
        parts.push(format!("{} created", thousands(counts.created)));
        parts.push(format!("{} failed", thousands(counts.failed)));
        if counts.waiting > 0 {
            parts.push(format!("{} not resolved yet", thousands(counts.waiting)));
        }
        out.line(
            label,
            format!("{}  ({})", thousands(counts.total()), parts.join(", ")),
        );
    }
}

/// When the work started and ended, its rates and what is left.
fn timing_lines(summary: &StatusSummary, out: &mut Lines) {
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "—".to_string());
    out.line("First attempt", or_dash(&summary.first_attempt_at));
    out.line("Last result", or_dash(&summary.last_result_at));
    out.line(
        "Elapsed",
        summary.elapsed_seconds.map_or_else(
            || "—".to_string(),
            |seconds| duration(whole_seconds(seconds)),
        ),
    );
    out.line(
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
        (Some(rate), Some(window)) => out.line(
            "Current rate",
            format!(
                "{rate:.1} rows/s (over the last {})",
                duration(whole_seconds(window))
            ),
        ),
        _ => out.line(
            "Current rate",
            format!("— ({})", summary.run_state.describe()),
        ),
    }
    let left = thousands(summary.remaining);
    out.line(
        "ETA",
        match (summary.run_state, summary.eta_seconds) {
            (RunState::Complete, _) => "complete: nothing left to send".to_string(),
            (RunState::Live, Some(eta)) => {
                format!("{} for {left} rows left", duration(whole_seconds(eta)))
            }
            (RunState::Live, None) => {
                format!("unknown: no results in the last minute ({left} rows left)")
            }
            (RunState::Interrupted, _) => format!("— interrupted, {left} rows left"),
            (RunState::Stopped, _) => format!("— stopped, {left} rows left"),
        },
    );
}

/// Latency, budget wait, pacing and what the requests carried.
fn request_lines(summary: &StatusSummary, out: &mut Lines) {
    if let Some(latency) = &summary.latency_ms {
        out.line(
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
        out.line(
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
        out.line("Pacing", format!("{} (as of {as_of})", pacing.describe()));
    }
    if let Some(per_request) = summary.messages_per_request {
        let jobs = match summary.bulk_jobs_in_flight {
            0 => String::new(),
            jobs => format!(", {jobs} bulk jobs in flight"),
        };
        out.line(
            "Spent",
            format!("{per_request:.2} messages per request in the last run{jobs}"),
        );
    }
}

/// The largest error groups, each with example lines; empty when there are none.
fn top_errors(summary: &StatusSummary) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    if !summary.top_errors.is_empty() {
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
pub(super) fn serde_plain(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

pub(super) fn write_text(
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
