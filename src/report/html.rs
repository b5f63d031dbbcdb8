//! `report --format html`: one self-contained page for the people running a migration.
//!
//! No scripts, no fonts, no fetches of any kind: inline CSS and server-drawn inline SVG, so the
//! file opens anywhere (mail attachment, air-gapped laptop) and prints. Every figure is
//! aggregated by SQL in one read snapshot, so the page costs the same memory for a hundred rows
//! or a million. Machine-readable numbers sit in `data-metric`/`data-value` attributes, which
//! is how the tests compare the page with the JSON report.

use std::fmt;
use std::io::{self, Write};

use crate::checkpoint::{
    Checkpoint, ConversationTiming, ErrorClass, LatencyCount, ResultBucket, RowState,
};

use super::summary::{rfc3339, summarize};
use super::text::{human_duration, serde_plain, shell_quoted};
use super::{send_settings_text, ReportError, RunState, StatusSummary};
use crate::text::thousands;

/// Error codes shown, and messages per code.
const ERROR_CLASSES: u64 = 12;
const MESSAGES_PER_CLASS: u64 = 3;
const EXAMPLES_PER_MESSAGE: u64 = 5;
/// Conversations in the "slowest" table.
const SLOWEST_CONVERSATIONS: u64 = 10;
/// Most bars in the throughput chart: enough for a shape, few enough to stay legible.
const MAX_BUCKETS: i64 = 60;
/// Messages longer than this are cut in the page (the CSV report has them whole).
const MESSAGE_CHARS: usize = 300;

/// Bucket widths the throughput chart picks from (ms): the smallest that fits the run in
/// [`MAX_BUCKETS`] bars, so a 50 ms demo and a week-long migration both get a readable chart.
const BUCKET_WIDTHS_MS: [i64; 29] = [
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];

/// Everything the page shows, read in one snapshot.
struct PageData {
    summary: StatusSummary,
    retryable_failed: u64,
    throughput: Option<Throughput>,
    latency: Option<Latency>,
    /// Time attempts waited for the rate budget and a concurrency slot, apart from latency.
    budget_wait: Option<Latency>,
    error_classes: Vec<ErrorClass>,
    slowest: Vec<ConversationTiming>,
}

pub(super) fn write_html(
    cp: &Checkpoint,
    now_ms: i64,
    live: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let data = PageData {
        summary: summarize(cp, now_ms, live)?,
        retryable_failed: cp.retryable_failed_count()?,
        throughput: throughput(cp)?,
        latency: latency(cp)?,
        budget_wait: budget_wait(cp)?,
        error_classes: cp.error_classes(ERROR_CLASSES, MESSAGES_PER_CLASS, EXAMPLES_PER_MESSAGE)?,
        slowest: cp.slowest_conversations(SLOWEST_CONVERSATIONS)?,
    };
    render(&data, out)?;
    out.flush()?;
    Ok(())
}

/// Results over time, one bucket per bar, empty buckets included.
#[derive(Debug, Clone, PartialEq)]
struct Throughput {
    origin_ms: i64,
    width_ms: i64,
    /// Milliseconds from the origin to the last result.
    span_ms: i64,
    buckets: Vec<ResultBucket>,
}

fn bucket_width(span_ms: i64) -> i64 {
    BUCKET_WIDTHS_MS
        .into_iter()
        .find(|width| span_ms / width < MAX_BUCKETS)
        .unwrap_or(span_ms / MAX_BUCKETS + 1)
}

fn throughput(cp: &Checkpoint) -> Result<Option<Throughput>, ReportError> {
    let Some((first_ms, last_ms)) = cp.result_span()? else {
        return Ok(None);
    };
    // Align to the width from the first result so bars start at round times.
    let mut width_ms = bucket_width(last_ms - first_ms);
    let mut origin_ms = first_ms - first_ms.rem_euclid(width_ms);
    if (last_ms - origin_ms) / width_ms >= MAX_BUCKETS {
        // Alignment pushed the last result one bucket too far.
        width_ms = bucket_width(last_ms - origin_ms);
        origin_ms = first_ms - first_ms.rem_euclid(width_ms);
    }
    let count = ((last_ms - origin_ms) / width_ms + 1) as usize;
    let mut buckets: Vec<ResultBucket> = (0..count as u64)
        .map(|index| ResultBucket {
            index,
            ..ResultBucket::default()
        })
        .collect();
    for bucket in cp.result_buckets(origin_ms, width_ms)? {
        if let Some(slot) = buckets.get_mut(bucket.index as usize) {
            *slot = bucket;
        }
    }
    Ok(Some(Throughput {
        origin_ms,
        width_ms,
        span_ms: last_ms - origin_ms,
        buckets,
    }))
}

/// Latency histogram on a roughly logarithmic scale, with exact percentiles.
#[derive(Debug, Clone, PartialEq)]
struct Latency {
    /// `(lower, upper)` bounds in ms (upper exclusive) and the count of each bar.
    bars: Vec<(u64, u64, u64)>,
    count: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

/// Bar edges: every ms up to 5, then 1, 1.5, 2, 3, 4, 5, 7 per decade; whole milliseconds so
/// no bar covers an empty range.
fn latency_edges(max: u64) -> Vec<u64> {
    let mut edges = vec![0, 1, 2, 3, 4, 5, 7];
    let mut decade = 10u64;
    while *edges.last().unwrap_or(&0) <= max {
        for step in [10, 15, 20, 30, 40, 50, 70] {
            edges.push(decade / 10 * step);
        }
        decade = decade.saturating_mul(10);
    }
    edges
}

fn latency(cp: &Checkpoint) -> Result<Option<Latency>, ReportError> {
    // One entry per distinct millisecond value: bounded by the latency range, not the rows.
    let mut values: Vec<LatencyCount> = Vec::new();
    cp.for_each_latency(|value| {
        values.push(value);
        Ok::<(), ReportError>(())
    })?;
    Ok(latency_from(&values))
}

fn budget_wait(cp: &Checkpoint) -> Result<Option<Latency>, ReportError> {
    let mut values: Vec<LatencyCount> = Vec::new();
    cp.for_each_budget_wait(|value| {
        values.push(value);
        Ok::<(), ReportError>(())
    })?;
    Ok(latency_from(&values))
}

fn latency_from(values: &[LatencyCount]) -> Option<Latency> {
    let count: u64 = values.iter().map(|v| v.count).sum();
    let max = values.last()?.latency_ms;
    if count == 0 {
        return None;
    }
    // Nearest-rank percentiles.
    let percentile = |p: f64| -> u64 {
        let rank = ((p * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for value in values {
            seen += value.count;
            if seen >= rank {
                return value.latency_ms;
            }
        }
        max
    };
    let edges = latency_edges(max);
    let mut bars: Vec<(u64, u64, u64)> =
        edges.windows(2).map(|pair| (pair[0], pair[1], 0)).collect();
    let mut bar = 0;
    for value in values {
        while bar + 1 < bars.len() && value.latency_ms >= bars[bar].1 {
            bar += 1;
        }
        bars[bar].2 += value.count;
    }
    let first = bars.iter().position(|b| b.2 > 0).unwrap_or(0);
    let last = bars.iter().rposition(|b| b.2 > 0).unwrap_or(0);
    Some(Latency {
        bars: bars[first..=last].to_vec(),
        count,
        p50: percentile(0.50),
        p90: percentile(0.90),
        p99: percentile(0.99),
        max,
    })
}

/// Text made safe for HTML content and quoted attribute values: markup escaped, and control and
/// bidi-override characters shown as `\u{202e}` (U+202E would otherwise turn `(line 5)` into
/// `(5 enil)` on the page).
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let visible = crate::text::escape_control(self.0);
        let mut rest: &str = &visible;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

fn esc(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// `text` cut to `limit` characters, with an ellipsis when cut.
fn clipped(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn time_or_dash(ms: Option<i64>) -> String {
    ms.and_then(rfc3339).unwrap_or_else(|| "—".to_string())
}

const STYLE: &str = r#"
:root { --ink:#1a202c; --muted:#5a6473; --line:#e2e6ec; --panel:#ffffff; --page:#f4f6f9;
  --succeeded:#2f855a; --failed:#c53030; --invalid:#b7791f; --duplicate:#718096;
  --pending:#3182ce; --sending:#805ad5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--page); color:var(--ink);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1200px; margin:0 auto; padding:24px 28px 40px; }
h1 { font-size:22px; margin:0 0 2px; }
h2 { font-size:16px; margin:0 0 12px; }
.sub { color:var(--muted); margin:0; overflow-wrap:anywhere; }
header { display:flex; justify-content:space-between; align-items:flex-start; gap:16px; margin-bottom:18px; }
.badge { display:inline-block; padding:4px 10px; border-radius:999px; font-weight:600; font-size:13px; white-space:nowrap; border:1px solid; }
.badge.ok { color:var(--succeeded); border-color:var(--succeeded); background:#f0fff4; }
.badge.warn { color:#975a16; border-color:#d69e2e; background:#fffaf0; }
.badge.busy { color:var(--pending); border-color:var(--pending); background:#ebf8ff; }
.cards { display:grid; grid-template-columns:repeat(9,minmax(0,1fr)); gap:8px; margin-bottom:12px; }
.card, .panel { background:var(--panel); border:1px solid var(--line); border-radius:8px; break-inside:avoid; page-break-inside:avoid; }
.card { padding:8px 10px; border-top:4px solid var(--line); }
.card .label { color:var(--muted); font-size:11px; text-transform:uppercase; letter-spacing:.04em; white-space:nowrap; }
.card .value { display:block; font-size:20px; letter-spacing:-.01em; white-space:nowrap; font-weight:650; font-variant-numeric:tabular-nums; margin-top:2px; }
.card .note { color:var(--muted); font-size:12px; }
.card.succeeded { border-top-color:var(--succeeded); } .card.failed { border-top-color:var(--failed); }
.card.invalid { border-top-color:var(--invalid); } .card.duplicate { border-top-color:var(--duplicate); }
.card.pending { border-top-color:var(--pending); } .card.held { border-top-color:var(--sending); }
.statebar { display:flex; height:12px; border-radius:6px; overflow:hidden; background:var(--line); margin:4px 0 6px; }
.statebar span { display:block; height:100%; }
.legend { display:flex; flex-wrap:wrap; gap:4px 16px; color:var(--muted); font-size:12px; margin:0 0 18px; padding:0; list-style:none; }
.legend i, .key i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px; vertical-align:-1px; }
.succeeded-bg { background:var(--succeeded); } .failed-bg { background:var(--failed); }
.invalid-bg { background:var(--invalid); } .duplicate-bg { background:var(--duplicate); }
.pending-bg { background:var(--pending); } .sending-bg { background:var(--sending); }
.charts { display:grid; grid-template-columns:1fr 1fr; gap:14px; margin-bottom:14px; }
.panel { padding:14px 16px; margin-bottom:14px; }
.charts .panel { margin-bottom:0; }
.panel header { margin-bottom:6px; align-items:baseline; }
.panel header h2 { margin:0; }
.key { color:var(--muted); font-size:12px; white-space:nowrap; }
.key span { margin-left:10px; }
svg { display:block; width:100%; height:auto; }
svg text { font-size:11px; fill:var(--muted); font-family:inherit; }
svg .axis-title { font-size:11px; fill:var(--ink); }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .axis { stroke:#a0aec0; stroke-width:1; }
svg .s { fill:var(--succeeded); } svg .f { fill:var(--failed); } svg .l { fill:#4a5568; }
svg .marker { stroke:var(--ink); stroke-width:1; stroke-dasharray:3 3; }
svg .marker-label { fill:var(--ink); font-weight:600; }
.figures { display:flex; flex-wrap:wrap; gap:4px 18px; margin:8px 0 0; color:var(--muted); font-size:13px; }
.figures b { color:var(--ink); font-variant-numeric:tabular-nums; }
.empty { color:var(--muted); font-style:italic; margin:8px 0; }
table { width:100%; border-collapse:collapse; font-size:13px; }
th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr { break-inside:avoid; page-break-inside:avoid; }
code, .mono { font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace; font-size:12px; }
.messages { margin:0; padding:0; list-style:none; }
.messages li { margin-bottom:4px; overflow-wrap:anywhere; }
.messages .count { color:var(--muted); font-variant-numeric:tabular-nums; }
.lines { color:var(--muted); font-size:12px; }
.state { display:inline-block; font-size:11px; padding:0 6px; border-radius:4px; color:#fff; margin-left:6px; vertical-align:1px; }
dl.settings { display:grid; grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr); gap:6px 18px; margin:0; }
@media (max-width: 900px) { dl.settings { grid-template-columns:max-content minmax(0,1fr); } }
dl.settings dt { color:var(--muted); }
dl.settings dd { margin:0; overflow-wrap:anywhere; }
.next { margin:0; padding-left:18px; }
.next li { margin-bottom:4px; }
.next code { background:var(--page); padding:1px 5px; border-radius:4px; overflow-wrap:anywhere; }
footer { color:var(--muted); font-size:12px; margin-top:18px; }
@media (max-width: 1100px) { .cards { grid-template-columns:repeat(auto-fill,minmax(130px,1fr)); } }
@media (max-width: 900px) { .charts { grid-template-columns:1fr; } }
@media print {
  @page { margin:14mm; }
  .cards { grid-template-columns:repeat(5,minmax(0,1fr)); }
  body { background:#fff; font-size:12px; }
  main { max-width:none; padding:0; }
  .card, .panel { border-color:#cbd2d9; }
  .charts { grid-template-columns:1fr; }
  .panel, .card, figure, svg { break-inside:avoid; page-break-inside:avoid; }
  h2 { break-after:avoid; page-break-after:avoid; }
  .statebar, .state, .legend i, .key i, svg rect { -webkit-print-color-adjust:exact; print-color-adjust:exact; }
}
"#;

fn render(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
    let summary = &data.summary;
    let job = &summary.job;
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"kustomer-import {}\">\n\
         <title>Import report: {}</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n<style>{STYLE}</style>\n</head>\n<body>\n<main>",
        esc(env!("CARGO_PKG_VERSION")),
        esc(&job.input_display),
    )?;
    header(summary, out)?;
    cards(data, out)?;
    state_bar(summary, out)?;
    writeln!(out, "<div class=\"charts\">")?;
    throughput_panel(data.throughput.as_ref(), out)?;
    latency_panel(data.latency.as_ref(), data.budget_wait.as_ref(), out)?;
    writeln!(out, "</div>")?;
    errors_panel(data, out)?;
    slowest_panel(&data.slowest, out)?;
    next_steps_panel(data, out)?;
    settings_panel(summary, out)?;
    writeln!(
        out,
        "<footer>Generated {} by kustomer-import {} from <span class=\"mono\">{}</span>. \
         Times are UTC.</footer>\n</main>\n</body>\n</html>",
        esc(&summary.generated_at),
        esc(env!("CARGO_PKG_VERSION")),
        esc(&summary.checkpoint.display().to_string()),
    )
}

fn header(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
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
fn card(
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

fn share(count: u64, total: u64) -> String {
    if total == 0 {
        String::new()
    } else {
        format!("{:.1}% of rows", count as f64 * 100.0 / total as f64)
    }
}

fn cards(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
    let summary = &data.summary;
    let counts = &summary.counts;
    let total = summary.total;
    writeln!(out, "<section class=\"cards\" aria-label=\"Summary\">")?;
    let count_card =
        |out: &mut dyn Write, class: &str, label: &str, metric: &str, n: u64, note: &str| {
            card(
                out,
                class,
                label,
                metric,
                &n.to_string(),
                &thousands(n),
                note,
            )
        };
    count_card(
        out,
        "total",
        "Rows",
        "total",
        total,
        &format!("{} finished", thousands(summary.finished)),
    )?;
    count_card(
        out,
        "succeeded",
        "Succeeded",
        "succeeded",
        counts.succeeded,
        &share(counts.succeeded, total),
    )?;
    count_card(
        out,
        "failed",
        "Failed",
        "failed",
        counts.failed,
        &if data.retryable_failed > 0 {
            format!("{} retryable", thousands(data.retryable_failed))
        } else {
            share(counts.failed, total)
        },
    )?;
    count_card(
        out,
        "invalid",
        "Invalid",
        "invalid",
        counts.invalid,
        &share(counts.invalid, total),
    )?;
    count_card(
        out,
        "duplicate",
        "Duplicate",
        "duplicate",
        counts.duplicate,
        &share(counts.duplicate, total),
    )?;
    count_card(
        out,
        "pending",
        "Remaining",
        "remaining",
        summary.remaining,
        &format!(
            "{} pending, {} sending",
            thousands(counts.pending),
            thousands(counts.sending)
        ),
    )?;
    count_card(
        out,
        "held",
        "Held",
        "held",
        summary.held,
        "waiting behind a failure",
    )?;
    let elapsed = summary.elapsed_seconds;
    card(
        out,
        "elapsed",
        "Elapsed",
        "elapsed_seconds",
        &elapsed.map_or_else(String::new, |s| s.to_string()),
        &elapsed.map_or_else(|| "—".to_string(), elapsed_text),
        "first send to last result",
    )?;
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
    )?;
    writeln!(out, "</section>")
}

/// Sub-second runs (the demo) read better in milliseconds than as "0s".
fn elapsed_text(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else {
        human_duration(seconds)
    }
}

fn state_bar(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
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

/// Chart geometry (SVG user units; the SVG scales to its panel).
const CHART_W: f64 = 560.0;
const CHART_H: f64 = 250.0;
const PLOT_LEFT: f64 = 56.0;
const PLOT_RIGHT: f64 = 548.0;
const PLOT_TOP: f64 = 22.0;
const PLOT_BOTTOM: f64 = 204.0;

/// A "nice" axis step (1, 2 or 5 × 10ⁿ) giving at most five gridlines above zero.
fn nice_step(max: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if max.div_ceil(candidate) <= 5 {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Draws the y gridlines and labels; returns the value at the top of the plot.
fn y_axis(out: &mut dyn Write, max: u64, title: &str) -> io::Result<f64> {
    let step = nice_step(max.max(1));
    let top = (max.max(1).div_ceil(step) * step) as f64;
    let mut value = 0;
    while value as f64 <= top {
        let y = PLOT_BOTTOM - (value as f64 / top) * (PLOT_BOTTOM - PLOT_TOP);
        writeln!(
            out,
            "<line class=\"{}\" x1=\"{PLOT_LEFT}\" x2=\"{PLOT_RIGHT}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            if value == 0 { "axis" } else { "grid" },
            PLOT_LEFT - 6.0,
            y + 4.0,
            thousands(value)
        )?;
        value += step;
    }
    writeln!(
        out,
        "<text class=\"axis-title\" x=\"8\" y=\"12\">{}</text>",
        esc(title)
    )?;
    Ok(top)
}

fn x_title(out: &mut dyn Write, title: &str) -> io::Result<()> {
    writeln!(
        out,
        "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        CHART_H - 6.0,
        esc(title)
    )
}

fn svg_open(out: &mut dyn Write, label: &str) -> io::Result<()> {
    writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(label)
    )
}

/// Human text for a bucket width.
fn width_text(width_ms: i64) -> String {
    match width_ms {
        w if w < 1_000 => format!("{w} ms"),
        w if w < 60_000 => format!("{} s", w / 1_000),
        w if w < 3_600_000 => format!("{} min", w / 60_000),
        w if w < 86_400_000 => format!("{} h", w / 3_600_000),
        w => format!("{} d", w / 86_400_000),
    }
}

/// Label of a bucket's start: seconds from the first bucket for runs under a minute, else UTC
/// clock time (with the date once the run spans days).
fn time_label(chart: &Throughput, index: u64) -> String {
    let offset_ms = index as i64 * chart.width_ms;
    if chart.span_ms < 60_000 {
        let decimals = match chart.width_ms {
            w if w < 10 => 3,
            w if w < 100 => 2,
            w if w < 1_000 => 1,
            _ => 0,
        };
        return format!("{:.*}", decimals, offset_ms as f64 / 1000.0);
    }
    let pattern = if chart.span_ms >= 86_400_000 {
        "%m-%d %H:%M"
    } else if chart.width_ms < 60_000 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    jiff::Timestamp::from_millisecond(chart.origin_ms + offset_ms)
        .map(|at| at.strftime(pattern).to_string())
        .unwrap_or_default()
}

fn throughput_panel(chart: Option<&Throughput>, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "<section class=\"panel\"><header><h2>Throughput</h2>\
         <span class=\"key\"><span><i class=\"succeeded-bg\"></i>succeeded</span>\
         <span><i class=\"failed-bg\"></i>failed</span></span></header>"
    )?;
    let Some(chart) = chart else {
        return writeln!(
            out,
            "<p class=\"empty\">No results recorded yet.</p></section>"
        );
    };
    svg_open(out, "Rows finished per time bucket")?;
    let max = chart
        .buckets
        .iter()
        .map(|b| b.succeeded + b.failed)
        .max()
        .unwrap_or(0);
    let top = y_axis(
        out,
        max,
        &format!("rows finished per {}", width_text(chart.width_ms)),
    )?;
    let slot = (PLOT_RIGHT - PLOT_LEFT) / chart.buckets.len() as f64;
    let gap = if slot > 6.0 { slot * 0.18 } else { 0.0 };
    let scale = (PLOT_BOTTOM - PLOT_TOP) / top;
    for bucket in &chart.buckets {
        let x = PLOT_LEFT + bucket.index as f64 * slot + gap / 2.0;
        let width = (slot - gap).max(0.5);
        let succeeded_h = bucket.succeeded as f64 * scale;
        let failed_h = bucket.failed as f64 * scale;
        write!(
            out,
            "<g><title>{}: {} succeeded, {} failed</title>",
            esc(&time_label(chart, bucket.index)),
            thousands(bucket.succeeded),
            thousands(bucket.failed)
        )?;
        if bucket.succeeded > 0 {
            write!(
                out,
                "<rect class=\"s\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{width:.2}\" height=\"{succeeded_h:.2}\"/>",
                PLOT_BOTTOM - succeeded_h
            )?;
        }
        if bucket.failed > 0 {
            write!(
                out,
                "<rect class=\"f\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{width:.2}\" height=\"{failed_h:.2}\"/>",
                PLOT_BOTTOM - succeeded_h - failed_h
            )?;
        }
        writeln!(out, "</g>")?;
    }
    // About six time labels, at bucket starts.
    let every = (chart.buckets.len() as u64).div_ceil(6).max(1);
    for index in (0..chart.buckets.len() as u64).step_by(every as usize) {
        let x = PLOT_LEFT + index as f64 * slot;
        writeln!(
            out,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_BOTTOM}\" y2=\"{:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            PLOT_BOTTOM + 4.0,
            PLOT_BOTTOM + 16.0,
            esc(&time_label(chart, index))
        )?;
    }
    let title = if chart.span_ms < 60_000 {
        format!(
            "seconds since {} UTC",
            jiff::Timestamp::from_millisecond(chart.origin_ms)
                .map(|at| at.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string())
                .unwrap_or_default()
        )
    } else {
        let day = jiff::Timestamp::from_millisecond(chart.origin_ms)
            .map(|at| at.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default();
        format!("time (UTC), from {day}")
    };
    x_title(out, &title)?;
    writeln!(out, "</svg>")?;
    writeln!(
        out,
        "<p class=\"figures\"><span>bucket <b data-metric=\"bucket_ms\" data-value=\"{}\">{}</b></span>\
         <span>peak <b>{}</b> per bucket</span></p></section>",
        chart.width_ms,
        width_text(chart.width_ms),
        thousands(max)
    )
}

fn latency_label(ms: u64) -> String {
    if ms < 1_000 {
        ms.to_string()
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", ms as f64 / 1_000.0)
    }
}

fn latency_panel(
    latency: Option<&Latency>,
    budget_wait: Option<&Latency>,
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(
        out,
        "<section class=\"panel\"><header><h2>Latency</h2>\
         <span class=\"key\">last attempt of each sent row, from request start to response</span></header>"
    )?;
    let Some(latency) = latency else {
        return writeln!(
            out,
            "<p class=\"empty\">No request timings recorded yet.</p></section>"
        );
    };
    svg_open(out, "Latency distribution")?;
    let max_count = latency.bars.iter().map(|b| b.2).max().unwrap_or(0);
    let top = y_axis(out, max_count, "rows")?;
    let slot = (PLOT_RIGHT - PLOT_LEFT) / latency.bars.len() as f64;
    let gap = if slot > 6.0 { slot * 0.12 } else { 0.0 };
    let scale = (PLOT_BOTTOM - PLOT_TOP) / top;
    for (i, (lower, upper, count)) in latency.bars.iter().enumerate() {
        let x = PLOT_LEFT + i as f64 * slot + gap / 2.0;
        let height = *count as f64 * scale;
        let range = if upper - lower == 1 {
            format!("{lower} ms")
        } else {
            format!("{lower}–{} ms", upper - 1)
        };
        writeln!(
            out,
            "<g><title>{range}: {} rows</title><rect class=\"l\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{height:.2}\"/></g>",
            thousands(*count),
            PLOT_BOTTOM - height,
            (slot - gap).max(0.5)
        )?;
    }
    let every = latency.bars.len().div_ceil(12).max(1);
    for (i, (lower, _, _)) in latency.bars.iter().enumerate().step_by(every) {
        let x = PLOT_LEFT + i as f64 * slot;
        writeln!(
            out,
            "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_BOTTOM}\" y2=\"{:.1}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            PLOT_BOTTOM + 4.0,
            PLOT_BOTTOM + 16.0,
            latency_label(*lower)
        )?;
    }
    // Percentile markers, placed proportionally inside the bar that holds them.
    let position = |value: u64| -> f64 {
        let index = latency
            .bars
            .iter()
            .position(|(lower, upper, _)| value >= *lower && value < *upper)
            .unwrap_or(latency.bars.len() - 1);
        let (lower, upper, _) = latency.bars[index];
        let within = (value.saturating_sub(lower) as f64 + 0.5) / (upper - lower) as f64;
        PLOT_LEFT + (index as f64 + within.min(1.0)) * slot
    };
    let mut last_label_x = f64::NEG_INFINITY;
    for (name, value) in [
        ("p50", latency.p50),
        ("p90", latency.p90),
        ("p99", latency.p99),
    ] {
        let x = position(value);
        writeln!(
            out,
            "<line class=\"marker\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{PLOT_TOP}\" y2=\"{PLOT_BOTTOM}\"/>"
        )?;
        // Labels of close markers would overlap: the later one moves right.
        let label_x = x.max(last_label_x + 26.0);
        last_label_x = label_x;
        writeln!(
            out,
            "<text class=\"marker-label\" x=\"{label_x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>",
            PLOT_TOP - 2.0
        )?;
    }
    x_title(out, "milliseconds (bars widen on a log scale)")?;
    writeln!(out, "</svg>")?;
    write!(out, "<p class=\"figures\">")?;
    for (name, value) in [
        ("p50", latency.p50),
        ("p90", latency.p90),
        ("p99", latency.p99),
        ("max", latency.max),
    ] {
        write!(
            out,
            "<span>{name} <b data-metric=\"latency_{name}_ms\" data-value=\"{value}\">{} ms</b></span>",
            thousands(value)
        )?;
    }
    writeln!(
        out,
        "<span>timed <b data-metric=\"latency_count\" data-value=\"{}\">{}</b> rows</span></p>",
        latency.count,
        thousands(latency.count)
    )?;
    budget_wait_figures(budget_wait, out)?;
    writeln!(out, "</section>")
}

/// Time spent waiting for the rate budget before requests started: our own pacing, not the
/// API's speed, so shown apart from the latency.
fn budget_wait_figures(wait: Option<&Latency>, out: &mut dyn Write) -> io::Result<()> {
    let Some(wait) = wait else {
        return writeln!(
            out,
            "<p class=\"figures\">Waiting for the rate budget before each request: not recorded.</p>"
        );
    };
    write!(
        out,
        "<p class=\"figures\">Waiting for the rate budget before each request (not in the latency above):"
    )?;
    for (name, value) in [("p50", wait.p50), ("p90", wait.p90), ("max", wait.max)] {
        write!(
            out,
            " <span>{name} <b data-metric=\"budget_wait_{name}_ms\" data-value=\"{value}\">{} ms</b></span>",
            thousands(value)
        )?;
    }
    writeln!(out, "</p>")
}

fn lines_text(lines: &[u64], count: u64) -> String {
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

fn errors_panel(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
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

fn slowest_panel(slowest: &[ConversationTiming], out: &mut dyn Write) -> io::Result<()> {
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

fn next_steps_panel(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
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

fn settings_panel(summary: &StatusSummary, out: &mut dyn Write) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain ünïcödé").to_string(), "plain ünïcödé");
        assert_eq!(clipped("abcdef", 3), "abc…");
        assert_eq!(clipped("ééé", 3), "ééé");
    }

    #[test]
    fn bucket_width_fits_runs_from_milliseconds_to_weeks() {
        assert_eq!(bucket_width(0), 1);
        assert_eq!(bucket_width(59), 1);
        assert_eq!(bucket_width(60), 2);
        assert_eq!(bucket_width(3_000), 100);
        assert_eq!(bucket_width(10 * 60_000), 15_000);
        assert_eq!(bucket_width(3 * 86_400_000), 7_200_000);
        assert_eq!(bucket_width(400 * 86_400_000), 604_800_000);
        assert_eq!(
            bucket_width(4_000 * 86_400_000),
            4_000 * 86_400_000 / 60 + 1
        );
        for span in [
            0,
            1,
            999,
            61_000,
            3_600_000,
            10 * 86_400_000,
            60 * 86_400_000,
        ] {
            assert!(span / bucket_width(span) < MAX_BUCKETS, "span {span}");
        }
    }

    #[test]
    fn latency_percentiles_are_nearest_rank_and_bars_cover_every_value() {
        let values: Vec<LatencyCount> = (1..=100)
            .map(|ms| LatencyCount {
                latency_ms: ms,
                count: 1,
            })
            .collect();
        let latency = latency_from(&values).unwrap();
        assert_eq!(
            (latency.p50, latency.p90, latency.p99, latency.max),
            (50, 90, 99, 100)
        );
        assert_eq!(latency.count, 100);
        assert_eq!(latency.bars.iter().map(|b| b.2).sum::<u64>(), 100);
        assert_eq!(
            latency.bars.first().map(|b| b.0),
            Some(1),
            "leading empty bars dropped"
        );
        let last = latency.bars.last().unwrap();
        assert!(last.0 <= 100 && 100 < last.1, "{last:?}");
        for pair in latency.bars.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "bars are contiguous");
        }

        let skewed = [
            LatencyCount {
                latency_ms: 3,
                count: 98,
            },
            LatencyCount {
                latency_ms: 2_500,
                count: 2,
            },
        ];
        let latency = latency_from(&skewed).unwrap();
        assert_eq!((latency.p50, latency.p90, latency.p99), (3, 3, 2_500));
        assert_eq!(latency_from(&[]), None);
    }

    #[test]
    fn time_labels_suit_the_run_length() {
        let chart = |span_ms: i64, width_ms: i64| Throughput {
            origin_ms: 1_700_000_000_000,
            width_ms,
            span_ms,
            buckets: Vec::new(),
        };
        assert_eq!(time_label(&chart(60, 2), 5), "0.010");
        assert_eq!(time_label(&chart(20_000, 500), 3), "1.5");
        assert_eq!(time_label(&chart(120_000, 2_000), 8), "22:13:36");
        assert_eq!(time_label(&chart(7_200_000, 120_000), 1), "22:15");
        assert_eq!(
            time_label(&chart(3 * 86_400_000, 7_200_000), 1),
            "11-15 00:13"
        );
    }

    #[test]
    fn y_axis_steps_are_round() {
        assert_eq!(nice_step(1), 1);
        assert_eq!(nice_step(7), 2);
        assert_eq!(nice_step(23), 5);
        assert_eq!(nice_step(480), 100);
        assert_eq!(nice_step(1_000_000), 200_000);
    }
}
