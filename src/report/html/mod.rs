//! `report --format html`: one self-contained page for the people running a migration.
//!
//! No scripts, no fonts, no fetches of any kind: inline CSS and server-drawn inline SVG, so the
//! file opens anywhere (mail attachment, air-gapped laptop) and prints. Every figure is
//! aggregated by SQL in one read snapshot, so the page costs the same memory for a hundred rows
//! or a million. Machine-readable numbers sit in `data-metric`/`data-value` attributes, which
//! is how the tests compare the page with the JSON report.
//!
//! `data` reads the figures, `charts` draws the SVG charts, `panels` the rest of the page; the
//! CSS is `report.css`, included at build time. Reads the store through `report::summary`;
//! imports nothing above `report`.

mod charts;
mod data;
mod panels;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, Write};

use crate::checkpoint::Checkpoint;

use super::summary::rfc3339;
use super::ReportError;
use charts::{latency_panel, throughput_panel};
use data::PageData;
use panels::{
    cards, errors_panel, header, next_steps_panel, settings_panel, slowest_panel, state_bar,
};

/// The page's style sheet.
const STYLE: &str = include_str!("report.css");

pub(in crate::report) fn write_html(
    cp: &Checkpoint,
    now_ms: i64,
    live: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let data = PageData::read(cp, now_ms, live)?;
    render(&data, out)?;
    out.flush()?;
    Ok(())
}

fn render(data: &PageData, out: &mut dyn Write) -> io::Result<()> {
    let summary = &data.summary;
    let job = &summary.job;
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"kustomer-import {}\">\n\
         <title>Import report: {}</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>",
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
