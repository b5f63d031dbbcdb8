//! The page's panels other than the charts: header, summary cards, state bar, errors by
//! class, slowest conversations, next steps, the job's settings.

use std::io::{self, Write};

use crate::checkpoint::{ConversationTiming, RowState};
use crate::report::text::serde_plain;
use crate::report::{send_settings_text, RunState, StatusSummary};
use crate::text::thousands;
use crate::text::{duration, shell_quoted, whole_seconds};

use super::data::*;
use super::{clipped, esc, time_or_dash};

pub(super) fn header(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
    let counts = &summary.counts;
    let problems = counts.failed + counts.invalid + counts.duplicate;
    let (class, label) = if summary.run_state != RunState::Complete {
        ("busy", summary.run_state.label())
    } else if problems > 0 {
        ("warn", "Finished, with rows to look at")
    } else {
        ("ok", "Complete: every row imported")
    };
    writeln!(
        out,
        "<header><div><h1>Import report</h1>\
         <p class=\"sub\">{} → {}<br>importedAt {} · report generated {}</p></div>\
         <span class=\"badge {class}\" data-metric=\"status\" data-value=\"{class}\">{label}</span></header>",
        esc(&summary.job.input_display),
        esc(&summary.job.base_url),
        esc(&summary.job.imported_at),
        esc(&summary.generated_at),
    )
}

/// One summary card; `value` is machine-readable, `shown` is for people.
pub(super) fn card(
    out: &mut dyn Write,
    class: &str,
    label: &str,
    metric: &str,
    value: &str,
    shown: &str,
    note: &str,
) -> io::Result<()> {
    writeln!(
        out,
        "<div class=\"card {class}\"><span class=\"label\">{}</span>\
         <span class=\"value\" data-metric=\"{}\" data-value=\"{}\">{}</span>\
         <span class=\"note\">{}</span></div>",
        esc(label),
        esc(metric),
        esc(value),
        esc(shown),
        esc(note)
    )
}

pub(super) fn share(count: u64, total: u64) -> String {
    if total == 0 {
        String::new()
    } else {
        format!("{:.1}% of rows", count as f64 * 100.0 / total as f64)
    }
}

pub(super) fn cards(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "<section class=\"cards\" aria-label=\"Summary\">")?;
    for count in count_cards(data) {
        card(
            out,
            count.class,
            count.label,
            count.metric,
            &count.n.to_string(),
            &thousands(count.n),
            &count.note,
        )?;
    }
    elapsed_card(&data.summary, out)?;
    rate_card(&data.summary, out)?;
    writeln!(out, "</section>")
}

/// A card that shows a number of rows.
struct CountCard {
    class: &'static str,
    label: &'static str,
    metric: &'static str,
    n: u64,
    note: String,
}

/// The row counts, in the order the cards are shown.
fn count_cards(data: &PageData) -> [CountCard; 7] {
    let summary = &data.summary;
    let counts = &summary.counts;
    let total = summary.total;
    let count_card = |class, label, metric, n, note| CountCard {
        class,
        label,
        metric,
        n,
        note,
    };
    [
        count_card(
            "total",
            "Rows",
            "total",
            total,
            format!("{} finished", thousands(summary.finished)),
        ),
        count_card(
            "succeeded",
            "Succeeded",
            "succeeded",
            counts.succeeded,
            share(counts.succeeded, total),
        ),
        count_card(
            "failed",
            "Failed",
            "failed",
            counts.failed,
            if data.retryable_failed > 0 {
                format!("{} retryable", thousands(data.retryable_failed))
            } else {
                share(counts.failed, total)
            },
        ),
        count_card(
            "invalid",
            "Invalid",
            "invalid",
            counts.invalid,
            share(counts.invalid, total),
        ),
        count_card(
            "duplicate",
            "Duplicate",
            "duplicate",
            counts.duplicate,
            share(counts.duplicate, total),
        ),
        count_card(
            "pending",
            "Remaining",
            "remaining",
            summary.remaining,
            format!(
                "{} pending, {} sending",
                thousands(counts.pending),
                thousands(counts.sending)
            ),
        ),
        count_card(
            "held",
            "Held",
            "held",
            summary.held,
            "waiting behind a failure".to_string(),
        ),
    ]
}

fn elapsed_card(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
    let elapsed = summary.elapsed_seconds;
    card(
        out,
        "elapsed",
        "Elapsed",
        "elapsed_seconds",
        &elapsed.map_or_else(String::new, |s| s.to_string()),
        &elapsed.map_or_else(|| "—".to_string(), elapsed_text),
        "first send to last result",
    )
}

fn rate_card(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
    let rate = summary.average_rate_per_second;
    card(
        out,
        "rate",
        "Average rate",
        "average_rate_per_second",
        &rate.map_or_else(String::new, |r| r.to_string()),
        &rate.map_or_else(|| "—".to_string(), |r| format!("{r:.1}/s")),
        &match summary.last_minute_rate_per_second {
            Some(current) => format!("{current:.1}/s now"),
            None => summary.run_state.describe().to_string(),
        },
    )
}

/// Sub-second runs (the demo) read better in milliseconds than as "0s".
pub(super) fn elapsed_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else {
        duration(whole_seconds(seconds))
    }
}

pub(super) fn state_bar(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
    let total = summary.total.max(1) as f64;
    write!(
        out,
        "<div class=\"statebar\" role=\"img\" aria-label=\"Rows by state\">"
    )?;
    let order = [
        RowState::Succeeded,
        RowState::Failed,
        RowState::Invalid,
        RowState::Duplicate,
        RowState::Sending,
        RowState::Pending,
    ];
    for state in order {
        let count = summary.counts.get(state);
        if count > 0 {
            write!(
                out,
                "<span class=\"{}-bg\" style=\"width:{:.3}%\" title=\"{}: {}\"></span>",
                state.as_str(),
                count as f64 * 100.0 / total,
                state.as_str(),
                thousands(count)
            )?;
        }
    }
    write!(out, "</div><ul class=\"legend\">")?;
    for state in order {
        write!(
            out,
            "<li><i class=\"{}-bg\"></i>{} {}</li>",
            state.as_str(),
            state.as_str(),
            thousands(summary.counts.get(state))
        )?;
    }
    writeln!(out, "</ul>")
}

pub(super) fn lines_text(lines: &[u64], count: u64) -> String {
    let listed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let more = if count > lines.len() as u64 {
        ", …"
    } else {
        ""
    };
    format!(
        "line{} {}{more}",
        if lines.len() == 1 && count == 1 {
            ""
        } else {
            "s"
        },
        listed.join(", ")
    )
}

pub(super) fn errors_panel(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "<section class=\"panel\"><header><h2>Errors by class</h2>\
         <span class=\"key\">failed, invalid and duplicate rows, by error code</span></header>"
    )?;
    if data.error_classes.is_empty() {
        return writeln!(out, "<p class=\"empty\">No errors.</p></section>");
    }
    writeln!(
        out,
        "<table><thead><tr><th>Error code</th><th class=\"num\">Rows</th><th class=\"num\">Share</th>\
         <th>Most frequent messages (with example input lines)</th></tr></thead><tbody>"
    )?;
    let total = data.summary.total.max(1);
    for class in &data.error_classes {
        let code = class.error_code.as_deref().unwrap_or("(no code)");
        write!(
            out,
            "<tr><td><code>{}</code><span class=\"state {}-bg\">{}</span></td>\
             <td class=\"num\" data-metric=\"error_class_rows\" data-code=\"{}\" data-value=\"{}\">{}</td>\
             <td class=\"num\">{:.1}%</td><td><ul class=\"messages\">",
            esc(code),
            class.state.as_str(),
            class.state.as_str(),
            esc(code),
            class.count,
            thousands(class.count),
            class.count as f64 * 100.0 / total as f64
        )?;
        for message in &class.top_messages {
            let text = message.error_message.as_deref().unwrap_or("(no message)");
            write!(
                out,
                "<li><span class=\"count\">{} ×</span> {} <span class=\"lines\">({})</span></li>",
                thousands(message.count),
                esc(&clipped(text, MESSAGE_CHARS)),
                esc(&lines_text(&message.example_lines, message.count))
            )?;
        }
        let shown = class.top_messages.len() as u64;
        if class.distinct_messages > shown {
            write!(
                out,
                "<li class=\"lines\">and {} other messages</li>",
                thousands(class.distinct_messages - shown)
            )?;
        }
        writeln!(out, "</ul></td></tr>")?;
    }
    writeln!(out, "</tbody></table></section>")
}

pub(super) fn slowest_panel(slowest: &[ConversationTiming], out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "<section class=\"panel\"><header><h2>Slowest conversations</h2>\
         <span class=\"key\">first attempt to last result; rows of one conversation go one at a time</span></header>"
    )?;
    if slowest.is_empty() {
        return writeln!(out, "<p class=\"empty\">Nothing sent yet.</p></section>");
    }
    writeln!(
        out,
        "<table><thead><tr><th>Conversation</th><th class=\"num\">Rows</th><th class=\"num\">Succeeded</th>\
         <th class=\"num\">Failed</th><th>First attempt</th><th>Last result</th><th class=\"num\">Duration</th></tr></thead><tbody>"
    )?;
    for conversation in slowest {
        let seconds = conversation.duration_ms() as f64 / 1000.0;
        writeln!(
            out,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(&conversation.conversation_id),
            thousands(conversation.rows),
            thousands(conversation.succeeded),
            thousands(conversation.failed),
            esc(&time_or_dash(Some(conversation.first_attempt_ms))),
            esc(&time_or_dash(Some(conversation.last_result_ms))),
            esc(&elapsed_text(seconds))
        )?;
    }
    writeln!(out, "</tbody></table></section>")
}

pub(super) fn next_steps_panel(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
    let summary = &data.summary;
    let db = shell_quoted(&summary.checkpoint);
    let mut steps: Vec<(String, String)> = vec![(
        "Every row with its Kustomer message id or error:".to_string(),
        format!("kustomer-import report --db {db} --format csv --output results.csv"),
    )];
    if summary.counts.invalid > 0 || summary.counts.failed > data.retryable_failed {
        steps.push((
            "The invalid and permanently failed rows, as they were in the input, to fix and import as a new job:"
                .to_string(),
            format!("kustomer-import report --db {db} --rejects rejects.csv"),
        ));
    }
    if summary.run_state == RunState::Live {
        steps.push((
            "A run is working on this job now; follow it with:".to_string(),
            format!("kustomer-import status --db {db}"),
        ));
    } else if data.retryable_failed > 0 {
        steps.push((
            "Send the rows that failed transiently again:".to_string(),
            format!("kustomer-import resume --db {db} --retry-failed"),
        ));
    } else if summary.remaining > 0 || !summary.staging.complete {
        steps.push((
            "Continue the job:".to_string(),
            format!("kustomer-import resume --db {db}"),
        ));
    }
    writeln!(
        out,
        "<section class=\"panel\"><h2>Next steps</h2><ul class=\"next\">"
    )?;
    for (what, command) in steps {
        writeln!(
            out,
            "<li>{} <code>{}</code></li>",
            esc(&what),
            esc(&command)
        )?;
    }
    writeln!(out, "</ul></section>")
}

pub(super) fn settings_panel(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
    let job = &summary.job;
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    let audit = if job.audit_fields {
        match &job.created_by {
            Some(user) => format!("stamped (createdBy default {user})"),
            None => "stamped (createdBy from the rows)".to_string(),
        }
    } else {
        "not stamped (Kustomer sets them)".to_string()
    };
    let settings: Vec<(&str, String, bool)> = vec![
        ("Input", job.input_display.clone(), false),
        ("Input path", job.input_path.display().to_string(), true),
        (
            "Size",
            format!(
                "{} bytes ({}, {})",
                thousands(job.input_size),
                serde_plain(&job.format),
                serde_plain(&job.compression)
            ),
            false,
        ),
        ("SHA-256", job.input_sha256.clone(), true),
        ("Base URL", job.base_url.clone(), true),
        ("importedAt", job.imported_at.clone(), false),
        ("Audit fields", audit, false),
        ("Timezone", job.timezone.clone(), false),
        (
            "Unknown fields ignored",
            yes_no(job.ignore_unknown).to_string(),
            false,
        ),
        ("Send settings", send_settings_text(&job.settings), false),
        (
            "Staging",
            format!(
                "{} through line {}",
                if summary.staging.complete {
                    "complete"
                } else {
                    "incomplete"
                },
                thousands(summary.staging.staged_through_line)
            ),
            false,
        ),
        ("Job created", time_or_dash(Some(job.created_at_ms)), false),
        (
            "First attempt",
            summary
                .first_attempt_at
                .clone()
                .unwrap_or_else(|| "—".into()),
            false,
        ),
        (
            "Last result",
            summary.last_result_at.clone().unwrap_or_else(|| "—".into()),
            false,
        ),
        ("Tool version", job.tool_version.clone(), false),
        ("Checkpoint", summary.checkpoint.display().to_string(), true),
    ];
    writeln!(
        out,
        "<section class=\"panel\"><h2>Job settings</h2><dl class=\"settings\">"
    )?;
    for (label, value, mono) in settings {
        writeln!(
            out,
            "<dt>{}</dt><dd{}>{}</dd>",
            esc(label),
            if mono { " class=\"mono\"" } else { "" },
            esc(&value)
        )?;
    }
    writeln!(out, "</dl></section>")
}
