//! The message row model: which fields exist, how a raw record becomes the exact JSON body
//! Kustomer will receive, and why a row is refused.
//!
//! Validation follows `shared/kustomer-api.md` and the OpenAPI request schema. Stamping
//! (importedAt, audit fields, derived externalId) happens here too, so the body stored in the
//! checkpoint is byte-for-byte what is sent, on every attempt and every resume.

use serde_json::{Map, Value};

use crate::input::Format;

/// What the importer makes of a field name found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldVerdict {
    /// An API attribute (or `conversationId`, or a `meta.<key>` column).
    Known,
    /// Not an API attribute: a typo or a column from another system.
    Unknown,
    /// An API attribute the importer will not take from input, with the reason.
    Refused(&'static str),
}

/// Classifies one input field name.
pub fn classify_field(name: &str) -> FieldVerdict {
    let _ = name;
    todo!("row::classify_field")
}

/// How raw values are read.
#[derive(Debug, Clone)]
pub struct ValidationOptions {
    /// Zone in which timestamps without an offset are read.
    pub timezone: jiff::tz::TimeZone,
    /// Drop unknown fields instead of refusing them (the run already checked the names).
    pub ignore_unknown: bool,
}

/// What the importer adds to every body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampOptions {
    /// RFC 3339 UTC timestamp, identical on every message of the job.
    pub imported_at: String,
    /// Stamp createdAt/createdBy/modifiedAt/modifiedBy (needs an org.admin key).
    pub audit_fields: bool,
    /// createdBy for rows that do not name one (24 lowercase hex).
    pub created_by: Option<String>,
    /// Seed for derived externalIds: the input's SHA-256 (hex).
    pub input_sha256: String,
}

/// A row ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRow {
    pub conversation_id: String,
    pub external_id: String,
    /// sentAt normalised to UTC, RFC 3339 with milliseconds (`2021-03-04T10:00:00.000Z`).
    pub sent_at: String,
    /// sentAt as microseconds since the Unix epoch, for ordering.
    pub sent_at_micros: i64,
    /// The exact JSON request body (without conversationId, which goes in the path).
    pub body: String,
}

/// Why a row was refused: every problem found, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct RowError {
    pub problems: Vec<String>,
    /// The row's conversationId and externalId when they were readable, for the report.
    pub conversation_id: Option<String>,
    pub external_id: Option<String>,
}

/// Validates one record and stamps it into the body to send.
pub fn prepare(
    fields: &Map<String, Value>,
    origin: Format,
    line: u64,
    validation: &ValidationOptions,
    stamp: &StampOptions,
) -> Result<ValidRow, RowError> {
    let _ = (fields, origin, line, validation, stamp);
    todo!("row::prepare")
}

/// The externalId given to a row that has none: stable across resumes of the same input.
pub fn derived_external_id(input_sha256: &str, line: u64) -> String {
    format!(
        "kimp-{}-{line}",
        &input_sha256[..input_sha256.len().min(16)]
    )
}
pub fn suggest_field(name: &str) -> Option<&'static str> {
    let _ = name;
    None
}
