//! The JSON report and `status --json`; see the module docs of `report` for the fields.

use std::io::Write;

use serde::Serialize;

use crate::checkpoint::Checkpoint;

use super::summary::{summarize, StatusSummary, EXAMPLE_LINES};
use super::ReportError;

pub(super) fn write_json(
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
