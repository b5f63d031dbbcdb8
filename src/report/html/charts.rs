//! The inline SVG charts: throughput over time and the latency and budget-wait histograms,
//! drawn on the server with their axes; no scripts.

use std::io::{self, Write};

use crate::text::thousands;

use super::data::*;
use super::esc;

/// Chart geometry (SVG user units; the SVG scales to its panel).
pub(super) const CHART_W: f64 = 560.0;
pub(super) const CHART_H: f64 = 250.0;
pub(super) const PLOT_LEFT: f64 = 56.0;
pub(super) const PLOT_RIGHT: f64 = 548.0;
pub(super) const PLOT_TOP: f64 = 22.0;
pub(super) const PLOT_BOTTOM: f64 = 204.0;

/// A "nice" axis step (1, 2 or 5 × 10ⁿ) giving at most five gridlines above zero.
pub(super) fn nice_step(max: u64) -> u64 {
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
pub(super) fn y_axis(out: &mut dyn Write, max: u64, title: &str) -> io::Result<f64> {
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

pub(super) fn x_title(out: &mut dyn Write, title: &str) -> io::Result<()> {
    writeln!(
        out,
        "<text class=\"axis-title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        CHART_H - 6.0,
        esc(title)
    )
}

pub(super) fn svg_open(out: &mut dyn Write, label: &str) -> io::Result<()> {
    writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(label)
    )
}

/// Human text for a bucket width.
pub(super) fn width_text(width_ms: i64) -> String {
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
pub(super) fn time_label(chart: &Throughput, index: u64) -> String {
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

pub(super) fn throughput_panel(chart: Option<&Throughput>, out: &mut dyn Write) -> io::Result<()> {
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

pub(super) fn latency_label(ms: u64) -> String {
    if ms < 1_000 {
        ms.to_string()
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", ms as f64 / 1_000.0)
    }
}

pub(super) fn latency_panel(
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
pub(super) fn budget_wait_figures(wait: Option<&Latency>, out: &mut dyn Write) -> io::Result<()> {
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
