//! The CSV report: one record per input row, in line order.

use std::io::Write;

use crate::checkpoint::{Checkpoint, RowOutcome};
use crate::text::escape_control;

use super::summary::rfc3339;
use super::ReportError;

/// The CSV report's header, in column order.
pub const CSV_HEADER: [&str; 15] = [
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
    "conversationExternalId",
    "customerId",
    "resolvedConversationId",
];

pub(super) fn write_csv(
    cp: &Checkpoint,
    escape: bool,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
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
            text(&row.conversation_external_id),
            text(&row.customer_id),
            text(&row.resolved_conversation_id),
        ])?;
        Ok::<(), ReportError>(())
    })?;
    csv.flush()?;
    Ok(())
}
