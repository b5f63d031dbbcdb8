//! The message row model: which fields exist, how a raw record becomes the exact JSON body
//! Kustomer will receive, and why a row is refused.
//!
//! Validation follows `shared/kustomer-api.md` and the OpenAPI request schema. Stamping
//! (importedAt, audit fields, derived externalId) happens here too, so the body stored in the
//! checkpoint is byte-for-byte what is sent, on every attempt and every resume.

#[cfg(test)]
mod sample_files;
mod schema;
mod ticket;
mod time;

use serde_json::{Map, Value};

use crate::input::Format;
use schema::{Shape, ATTRIBUTES, BODY_ORDER};
pub use ticket::{
    disagreement, email_problem, CustomerRef, TicketConsistency, TicketRef, UsersMap, UsersMapError,
};

pub use schema::is_object_id;

/// The path parameter, given per row.
const CONVERSATION_ID: &str = "conversationId";

/// Prefix of columns that each set one key of `meta`.
const META_PREFIX: &str = "meta.";

/// Attributes the API has but the importer will not take from input, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "directionType",
        "Kustomer derives it from where the message lands in the conversation; the importer \
         sends each conversation's messages in chronological order instead",
    ),
    (
        "importedAt",
        "the importer stamps one importedAt on every message of the job; set it with --imported-at",
    ),
    (
        "conversation",
        "name the conversation in conversationId (its 24-character hex id)",
    ),
    ("customer", "the message joins the conversation's customer"),
    (
        "id",
        "Kustomer assigns message ids; put the source system's id in externalId",
    ),
];

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
    if name == CONVERSATION_ID
        || name == ticket::CREATED_BY_EMAIL
        || ticket::TICKET_COLUMNS.contains(&name)
        || schema::attribute(name).is_some()
        || meta_key(name).is_some()
    {
        return FieldVerdict::Known;
    }
    match REFUSED.iter().find(|(refused, _)| *refused == name) {
        Some((_, reason)) => FieldVerdict::Refused(reason),
        None => FieldVerdict::Unknown,
    }
}

/// A known field name close to `name` (same letters in another case or spelling of
/// separators, or a small typo), for "did you mean" hints.
pub fn suggest_field(name: &str) -> Option<&'static str> {
    let wanted = simplified(name);
    if wanted.is_empty() {
        return None;
    }
    let candidates = [CONVERSATION_ID, ticket::CREATED_BY_EMAIL]
        .into_iter()
        .chain(ticket::TICKET_COLUMNS.iter().copied())
        .chain(ATTRIBUTES.iter().map(|(known, _)| *known));
    let mut best: Option<(usize, &'static str)> = None;
    for candidate in candidates {
        if candidate == name {
            continue;
        }
        let distance = edit_distance(&wanted, &simplified(candidate));
        // Short names allow one slip, longer ones two: beyond that, hints turn into guesses.
        let tolerance = if wanted.len() <= 4 { 1 } else { 2 };
        if distance <= tolerance && best.is_none_or(|(shortest, _)| distance < shortest) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Lowercase, without the separators people put between words (`sent_at`, `Sent At`).
fn simplified(name: &str) -> Vec<char> {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' ' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// neighbours each cost one (a swap is the commonest typo: `extrenalId`).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// The key a `meta.<key>` column sets.
fn meta_key(name: &str) -> Option<&str> {
    name.strip_prefix(META_PREFIX).filter(|key| !key.is_empty())
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
    /// Agents' emails → user ids, for `createdByEmail` (`--users-map`).
    pub users: Option<std::sync::Arc<UsersMap>>,
}

/// A row ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRow {
    /// The Kustomer conversation, when the row names it; otherwise `ticket` is set.
    pub conversation_id: Option<String>,
    /// The source ticket the resolve phase turns into a conversation.
    pub ticket: Option<Box<TicketRef>>,
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
///
/// Every problem is collected, not just the first. CSV values arrive as text and are read as
/// the attribute's type; NDJSON values must already have it, and `null` there means absent.
pub fn prepare(
    fields: &Map<String, Value>,
    origin: Format,
    line: u64,
    validation: &ValidationOptions,
    stamp: &StampOptions,
) -> Result<ValidRow, RowError> {
    let columns = SortedColumns::of(fields, validation);
    let mut problems = Vec::new();
    let target = read_target(fields, origin, columns.conversation, stamp, &mut problems);
    let (mut accepted, instants) =
        read_attributes(columns.attributes, origin, validation, &mut problems);
    let meta_refused =
        fields.get("meta").is_some_and(|meta| !meta.is_null()) && !accepted.contains_key("meta");
    merge_meta_columns(
        &mut accepted,
        columns.meta,
        origin,
        meta_refused,
        &mut problems,
    );
    problems.extend(columns.name_problems);

    let own_external_id = fields
        .get("externalId")
        .and_then(Value::as_str)
        .map(str::to_string);
    if !problems.is_empty() {
        return Err(RowError {
            problems,
            conversation_id: columns
                .conversation
                .and_then(Value::as_str)
                .map(str::to_string),
            external_id: own_external_id,
        });
    }
    stamp_row(accepted, instants, target, own_external_id, line, stamp)
}

/// A record's non-null columns by what they are: the conversation, the message attributes (in
/// [`ATTRIBUTES`] order), the `meta.<key>` columns, and the names refused or unknown.
struct SortedColumns<'a> {
    conversation: Option<&'a Value>,
    attributes: Vec<Option<&'a Value>>,
    meta: Vec<(&'a str, &'a str, &'a Value)>,
    name_problems: Vec<String>,
}

impl<'a> SortedColumns<'a> {
    fn of(fields: &'a Map<String, Value>, validation: &ValidationOptions) -> SortedColumns<'a> {
        let mut name_problems = Vec::new();
        let mut conversation_value = None;
        let mut given: Vec<Option<&Value>> = vec![None; ATTRIBUTES.len()];
        let mut meta_columns = Vec::new();
        for (name, value) in fields {
            if value.is_null() {
                continue;
            }
            if name == CONVERSATION_ID {
                conversation_value = Some(value);
            } else if name == ticket::CREATED_BY_EMAIL
                || ticket::TICKET_COLUMNS.contains(&name.as_str())
            {
                // Read by `read_target`, together.
            } else if let Some(index) = ATTRIBUTES.iter().position(|(known, _)| known == name) {
                given[index] = Some(value);
            } else if let Some(key) = meta_key(name) {
                meta_columns.push((name.as_str(), key, value));
            } else {
                match classify_field(name) {
                    FieldVerdict::Refused(reason) => {
                        name_problems.push(format!("{name}: cannot be imported: {reason}"))
                    }
                    FieldVerdict::Unknown if validation.ignore_unknown => {}
                    FieldVerdict::Unknown => name_problems.push(unknown_field_problem(name)),
                    // Known names were all taken by the branches above.
                    FieldVerdict::Known => {}
                }
            }
        }
        SortedColumns {
            conversation: conversation_value,
            attributes: given,
            meta: meta_columns,
            name_problems,
        }
    }
}

/// Where the message goes and who wrote it, as the row names them.
struct Target {
    /// The Kustomer conversation, when the row names it.
    conversation_id: Option<String>,
    /// The source ticket, when the row names one instead.
    ticket: Option<TicketRef>,
    /// The agent's user id, from `createdByEmail` through the users map.
    created_by_from_email: Option<String>,
}

/// Reads the conversation (by id, or the source ticket that stands for it) and the agent named by
/// email.
fn read_target(
    fields: &Map<String, Value>,
    origin: Format,
    conversation_value: Option<&Value>,
    stamp: &StampOptions,
    problems: &mut Vec<String>,
) -> Target {
    let names_ticket = fields
        .get(ticket::CONVERSATION_EXTERNAL_ID)
        .is_some_and(|value| !value.is_null());
    let conversation_id = if names_ticket && conversation_value.is_none() {
        None
    } else {
        read_conversation_id(conversation_value, problems)
    };
    let ticket = ticket::read_ticket(fields, origin, conversation_value.is_some(), problems);
    let created_by_from_email = ticket::read_created_by_email(
        fields,
        stamp.users.as_deref(),
        stamp.created_by.is_some() || !stamp.audit_fields,
        problems,
    );
    Target {
        conversation_id,
        ticket,
        created_by_from_email,
    }
}

/// Reads each message attribute as its shape wants it: the ones accepted, and the timestamps
/// normalised to UTC (by attribute name).
fn read_attributes(
    given: Vec<Option<&Value>>,
    origin: Format,
    validation: &ValidationOptions,
    problems: &mut Vec<String>,
) -> (Map<String, Value>, Vec<(&'static str, time::Instant)>) {
    let mut accepted = Map::new();
    let mut instants = Vec::new();
    for ((name, shape), value) in ATTRIBUTES.iter().zip(given) {
        let Some(value) = value else {
            if let Some(why) = required_because(name) {
                problems.push(format!("{name}: missing; {why}"));
            }
            continue;
        };
        let value = match (origin, value) {
            (Format::Csv, Value::String(cell)) => match schema::from_csv_cell(shape, cell) {
                Ok(value) => value,
                Err(reason) => {
                    problems.push(format!("{name}: {reason}"));
                    continue;
                }
            },
            _ => value.clone(),
        };
        if matches!(shape, Shape::DateTime) {
            let Some(text) = value.as_str() else {
                problems.push(schema::wrong_type(name, "a string", &value));
                continue;
            };
            match time::normalize(text, &validation.timezone) {
                Ok(instant) => {
                    accepted.insert(name.to_string(), Value::String(instant.text.clone()));
                    instants.push((*name, instant));
                }
                Err(reason) => problems.push(format!("{name}: {reason}")),
            }
            continue;
        }
        let before = problems.len();
        schema::validate(shape, &value, name, problems);
        if problems.len() == before {
            accepted.insert(name.to_string(), value);
        }
    }
    (accepted, instants)
}

/// A row without problems, stamped: the agent from the users map, the ticket named after the
/// subject when it has no name, the externalId given or derived, and the body to send.
fn stamp_row(
    mut accepted: Map<String, Value>,
    instants: Vec<(&'static str, time::Instant)>,
    target: Target,
    own_external_id: Option<String>,
    line: u64,
    stamp: &StampOptions,
) -> Result<ValidRow, RowError> {
    let Target {
        conversation_id,
        mut ticket,
        created_by_from_email,
    } = target;
    if let Some(created_by) = created_by_from_email {
        accepted.insert("createdBy".to_string(), Value::String(created_by));
    }
    if let Some(ticket) = ticket.as_mut() {
        if ticket.name.is_none() {
            ticket.name = accepted
                .get("subject")
                .and_then(Value::as_str)
                .filter(|subject| !subject.trim().is_empty())
                .map(str::to_string);
        }
    }
    let (true, Some((_, sent_at))) = (
        conversation_id.is_some() != ticket.is_some(),
        instants.into_iter().find(|(name, _)| *name == "sentAt"),
    ) else {
        // Both are required: a missing one was reported above, so this is unreachable.
        return Err(RowError {
            problems: vec!["conversationId and sentAt are required".to_string()],
            conversation_id: None,
            external_id: own_external_id,
        });
    };
    let external_id =
        own_external_id.unwrap_or_else(|| derived_external_id(&stamp.input_sha256, line));
    let body = stamped_body(accepted, &external_id, stamp);
    Ok(ValidRow {
        conversation_id,
        ticket: ticket.map(Box::new),
        external_id,
        sent_at: sent_at.text,
        sent_at_micros: sent_at.micros,
        body,
    })
}

/// Why an attribute must be on every row, for those that must.
fn required_because(name: &str) -> Option<&'static str> {
    match name {
        "channel" => Some("Kustomer requires it (one of email, sms, chat, facebook, twitter-dm, twitter-tweet, voice, instagram, whatsapp)"),
        "app" => Some("Kustomer requires it; name the source system, e.g. zendesk"),
        "sentAt" => Some("every row needs its time, because each conversation's messages are created in chronological order"),
        _ => None,
    }
}

fn unknown_field_problem(name: &str) -> String {
    match suggest_field(name) {
        Some(known) => format!("{name}: unknown field (did you mean {known}?)"),
        None => format!("{name}: unknown field; it is not a Kustomer message attribute"),
    }
}

fn read_conversation_id(value: Option<&Value>, problems: &mut Vec<String>) -> Option<String> {
    let Some(value) = value else {
        problems.push(format!(
            "{CONVERSATION_ID}: missing; every message belongs to a conversation (its 24-character hex id)"
        ));
        return None;
    };
    let before = problems.len();
    schema::validate(&Shape::ObjectId, value, CONVERSATION_ID, problems);
    (problems.len() == before)
        .then(|| value.as_str().map(str::to_string))
        .flatten()
}

/// Adds the `meta.<key>` columns to `meta` (CSV cells as strings, NDJSON values as given).
fn merge_meta_columns(
    accepted: &mut Map<String, Value>,
    columns: Vec<(&str, &str, &Value)>,
    origin: Format,
    meta_refused: bool,
    problems: &mut Vec<String>,
) {
    let meta_given = accepted.contains_key("meta");
    if meta_refused {
        return;
    }
    let mut meta = match accepted.remove("meta") {
        Some(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    for (column, key, value) in columns {
        if meta.contains_key(key) {
            let place = match origin {
                Format::Csv => "the meta column",
                Format::Ndjson => "meta",
            };
            problems.push(format!(
                "{column}: the key {} is also set in {place}",
                schema::quoted(key)
            ));
            continue;
        }
        meta.insert(key.to_string(), value.clone());
    }
    schema::check_property_count(meta.len(), schema::MAX_PROPERTIES, "meta", problems);
    if meta_given || !meta.is_empty() {
        accepted.insert("meta".to_string(), Value::Object(meta));
    }
}

/// The body in [`BODY_ORDER`], with externalId, importedAt and the audit fields stamped.
fn stamped_body(
    mut accepted: Map<String, Value>,
    external_id: &str,
    stamp: &StampOptions,
) -> String {
    let audit: [(&str, Option<Value>); 4] = if stamp.audit_fields {
        let created_at = accepted
            .get("createdAt")
            .or_else(|| accepted.get("sentAt"))
            .cloned();
        let modified_at = accepted
            .get("modifiedAt")
            .cloned()
            .or_else(|| created_at.clone());
        let created_by = accepted
            .get("createdBy")
            .cloned()
            .or_else(|| stamp.created_by.clone().map(Value::String));
        let modified_by = accepted
            .get("modifiedBy")
            .cloned()
            .or_else(|| created_by.clone());
        [
            ("createdAt", created_at),
            ("modifiedAt", modified_at),
            ("createdBy", created_by),
            ("modifiedBy", modified_by),
        ]
    } else {
        [
            ("createdAt", None),
            ("modifiedAt", None),
            ("createdBy", None),
            ("modifiedBy", None),
        ]
    };
    for (name, value) in audit {
        accepted.remove(name);
        if let Some(value) = value {
            accepted.insert(name.to_string(), value);
        }
    }
    accepted.insert(
        "externalId".to_string(),
        Value::String(external_id.to_string()),
    );
    accepted.insert(
        "importedAt".to_string(),
        Value::String(stamp.imported_at.clone()),
    );
    let mut body = Map::new();
    for name in BODY_ORDER {
        if let Some(value) = accepted.remove(*name) {
            body.insert(name.to_string(), value);
        }
    }
    Value::Object(body).to_string()
}

/// The externalId given to a row that has none: stable across resumes of the same input.
pub fn derived_external_id(input_sha256: &str, line: u64) -> String {
    format!(
        "kimp-{}-{line}",
        &input_sha256[..input_sha256.len().min(16)]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONVERSATION: &str = "5f3c9a7e1b2d4c0012345678";
    const AGENT: &str = "5f3c9a7e1b2d4c00aaaaaaaa";
    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn stamp() -> StampOptions {
        StampOptions {
            imported_at: "2024-05-01T12:00:00.000Z".to_string(),
            audit_fields: true,
            created_by: Some(AGENT.to_string()),
            input_sha256: SHA.to_string(),
            users: None,
        }
    }

    fn in_zone(name: &str) -> ValidationOptions {
        ValidationOptions {
            timezone: jiff::tz::TimeZone::get(name).unwrap(),
            ignore_unknown: false,
        }
    }

    fn utc() -> ValidationOptions {
        in_zone("UTC")
    }

    /// A CSV record: every value a string, as the reader produces them.
    fn csv_row(extra: &[(&str, &str)]) -> Map<String, Value> {
        let mut row = Map::new();
        for (name, value) in [
            ("conversationId", CONVERSATION),
            ("channel", "email"),
            ("app", "zendesk"),
            ("sentAt", "2021-03-04T10:00:00Z"),
        ]
        .iter()
        .chain(extra)
        {
            row.insert(name.to_string(), Value::String(value.to_string()));
        }
        row
    }

    fn ndjson_row(extra: Value) -> Map<String, Value> {
        let mut row = csv_row(&[]);
        let Value::Object(extra) = extra else {
            panic!("extra must be an object")
        };
        row.extend(extra);
        row
    }

    fn prepare_csv(extra: &[(&str, &str)]) -> Result<ValidRow, RowError> {
        prepare(&csv_row(extra), Format::Csv, 7, &utc(), &stamp())
    }

    fn prepare_ndjson(extra: Value) -> Result<ValidRow, RowError> {
        prepare(&ndjson_row(extra), Format::Ndjson, 7, &utc(), &stamp())
    }

    fn body_of(result: Result<ValidRow, RowError>) -> Value {
        let row = result.unwrap_or_else(|error| panic!("row refused: {error}"));
        serde_json::from_str(&row.body).unwrap()
    }

    fn problems_of(result: Result<ValidRow, RowError>) -> Vec<String> {
        match result {
            Ok(row) => panic!("row accepted: {}", row.body),
            Err(error) => error.problems,
        }
    }

    fn assert_single_problem(result: Result<ValidRow, RowError>, expected: &str) {
        assert_eq!(problems_of(result), vec![expected.to_string()]);
    }

    #[test]
    fn a_minimal_row_becomes_an_exact_stamped_body() {
        let row = prepare_csv(&[]).unwrap();
        assert_eq!(row.conversation_id.as_deref(), Some(CONVERSATION));
        assert_eq!(row.external_id, "kimp-0123456789abcdef-7");
        assert_eq!(row.sent_at, "2021-03-04T10:00:00.000Z");
        assert_eq!(row.sent_at_micros, 1_614_852_000_000_000);
        assert_eq!(
            row.body,
            concat!(
                r#"{"externalId":"kimp-0123456789abcdef-7","channel":"email","app":"zendesk","#,
                r#""sentAt":"2021-03-04T10:00:00.000Z","createdAt":"2021-03-04T10:00:00.000Z","#,
                r#""modifiedAt":"2021-03-04T10:00:00.000Z","createdBy":"5f3c9a7e1b2d4c00aaaaaaaa","#,
                r#""modifiedBy":"5f3c9a7e1b2d4c00aaaaaaaa","importedAt":"2024-05-01T12:00:00.000Z"}"#
            )
        );
    }

    #[test]
    fn body_keys_follow_the_schema_order_whatever_the_input_order() {
        let mut row = Map::new();
        for (name, value) in [
            ("subject", "Hello"),
            ("direction", "in"),
            ("sentAt", "2021-03-04T10:00:00Z"),
            ("externalId", "zd-1"),
            ("app", "zendesk"),
            ("conversationId", CONVERSATION),
            ("channel", "email"),
            ("preview", "Hi there"),
        ] {
            row.insert(name.to_string(), Value::String(value.to_string()));
        }
        let mut stamp = stamp();
        stamp.audit_fields = false;
        let valid = prepare(&row, Format::Csv, 2, &utc(), &stamp).unwrap();
        assert_eq!(
            valid.body,
            concat!(
                r#"{"externalId":"zd-1","channel":"email","preview":"Hi there","subject":"Hello","#,
                r#""direction":"in","app":"zendesk","sentAt":"2021-03-04T10:00:00.000Z","#,
                r#""importedAt":"2024-05-01T12:00:00.000Z"}"#
            )
        );
        assert_eq!(valid.external_id, "zd-1");
    }

    #[test]
    fn without_audit_fields_none_of_the_four_is_sent() {
        let mut stamp = stamp();
        stamp.audit_fields = false;
        let row = csv_row(&[
            ("createdAt", "2021-03-04T09:00:00Z"),
            ("modifiedAt", "2021-03-04T09:30:00Z"),
            ("createdBy", AGENT),
            ("modifiedBy", AGENT),
        ]);
        let valid = prepare(&row, Format::Csv, 2, &utc(), &stamp).unwrap();
        let body: Value = serde_json::from_str(&valid.body).unwrap();
        for name in ["createdAt", "modifiedAt", "createdBy", "modifiedBy"] {
            assert!(body.get(name).is_none(), "{name} was sent");
        }
        assert_eq!(body["importedAt"], "2024-05-01T12:00:00.000Z");
    }

    #[test]
    fn audit_fields_prefer_the_row_and_fall_back_in_order() {
        let other = "5f3c9a7e1b2d4c00bbbbbbbb";
        let body = body_of(prepare_csv(&[
            ("createdAt", "2021-03-04T09:00:00+01:00"),
            ("createdBy", other),
        ]));
        assert_eq!(body["createdAt"], "2021-03-04T08:00:00.000Z");
        assert_eq!(body["modifiedAt"], "2021-03-04T08:00:00.000Z");
        assert_eq!(body["createdBy"], other);
        assert_eq!(body["modifiedBy"], other);

        let body = body_of(prepare_csv(&[
            ("modifiedAt", "2021-03-05T00:00:00Z"),
            ("modifiedBy", other),
        ]));
        assert_eq!(body["createdAt"], "2021-03-04T10:00:00.000Z");
        assert_eq!(body["modifiedAt"], "2021-03-05T00:00:00.000Z");
        assert_eq!(body["createdBy"], AGENT);
        assert_eq!(body["modifiedBy"], other);

        let mut no_default = stamp();
        no_default.created_by = None;
        let valid = prepare(&csv_row(&[]), Format::Csv, 2, &utc(), &no_default).unwrap();
        let body: Value = serde_json::from_str(&valid.body).unwrap();
        assert!(body.get("createdBy").is_none());
        assert!(body.get("modifiedBy").is_none());
        assert_eq!(body["createdAt"], "2021-03-04T10:00:00.000Z");
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let mut row = Map::new();
        row.insert("conversationId".into(), json!("abc"));
        row.insert("channel".into(), json!("Email"));
        row.insert("direction".into(), json!("inbound"));
        row.insert("externalId".into(), json!("zd-9"));
        let error = prepare(&row, Format::Csv, 3, &utc(), &stamp()).unwrap_err();
        assert_eq!(
            error.problems,
            vec![
                "conversationId: \"abc\" is not a 24-character lowercase hex id",
                "channel: \"Email\" is not one of email, sms, chat, facebook, twitter-dm, twitter-tweet, voice, instagram, whatsapp",
                "direction: \"inbound\" is not one of in, out",
                "app: missing; Kustomer requires it; name the source system, e.g. zendesk",
                "sentAt: missing; every row needs its time, because each conversation's messages are created in chronological order",
            ]
        );
        assert_eq!(error.conversation_id.as_deref(), Some("abc"));
        assert_eq!(error.external_id.as_deref(), Some("zd-9"));
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        let error = prepare(&Map::new(), Format::Csv, 3, &utc(), &stamp()).unwrap_err();
        assert_eq!(error.problems.len(), 4);
        assert!(error.problems[0].starts_with("conversationId: missing"));
        assert!(error.problems[1].starts_with("channel: missing"));
        assert!(error.problems[2].starts_with("app: missing"));
        assert!(error.problems[3].starts_with("sentAt: missing"));
        assert_eq!(error.conversation_id, None);
        assert_eq!(error.external_id, None);
    }

    #[test]
    fn upper_case_hex_ids_are_refused() {
        let mut row = csv_row(&[]);
        row.insert("conversationId".into(), json!("5F3C9A7E1B2D4C0012345678"));
        assert_single_problem(
            prepare(&row, Format::Csv, 2, &utc(), &stamp()),
            "conversationId: \"5F3C9A7E1B2D4C0012345678\" is not a 24-character lowercase hex id",
        );
    }

    #[test]
    fn app_must_not_be_blank() {
        assert_single_problem(prepare_ndjson(json!({"app": ""})), "app: must not be empty");
        assert_single_problem(prepare_csv(&[("app", "  ")]), "app: must not be empty");
    }

    #[test]
    fn enumerations_are_checked() {
        for (name, good, bad) in [
            ("direction", "out", "outbound"),
            ("status", "received", "delivered"),
            ("source", "satisfaction", "import"),
            ("channel", "twitter-dm", "fax"),
        ] {
            assert!(prepare_csv(&[(name, good)]).is_ok(), "{name}={good}");
            let problems = problems_of(prepare_csv(&[(name, bad)]));
            assert_eq!(problems.len(), 1);
            assert!(
                problems[0].starts_with(&format!("{name}: \"{bad}\" is not one of")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        for (name, max) in [
            ("preview", 10_240),
            ("subject", 256),
            ("externalId", 256),
            ("lang", 100),
        ] {
            let at_limit = "é".repeat(max);
            assert!(prepare_csv(&[(name, &at_limit)]).is_ok(), "{name}");
            let over = "é".repeat(max + 1);
            let expected = format!(
                "{name}: {} characters; at most {} are allowed",
                schema::thousands(max + 1),
                schema::thousands(max)
            );
            assert_single_problem(prepare_csv(&[(name, &over)]), &expected);
        }
        assert_single_problem(
            prepare_csv(&[("preview", &"x".repeat(10_241))]),
            "preview: 10,241 characters; at most 10,240 are allowed",
        );
    }

    #[test]
    fn external_id_must_not_be_empty() {
        assert_single_problem(
            prepare_ndjson(json!({"externalId": ""})),
            "externalId: must not be empty",
        );
    }

    #[test]
    fn user_ids_must_be_object_ids() {
        for name in ["createdBy", "modifiedBy"] {
            assert_single_problem(
                prepare_csv(&[(name, "agent-7")]),
                &format!("{name}: \"agent-7\" is not a 24-character lowercase hex id"),
            );
        }
    }

    #[test]
    fn every_date_time_is_normalised_and_named_when_wrong() {
        let body = body_of(prepare_csv(&[
            ("sentAt", "2021-03-04T12:00:00+02:00"),
            ("errorAt", "2021-03-04 10:00:01"),
            ("createdAt", "2021-03-04T10:00:00.1Z"),
            ("modifiedAt", "2021-03-04T05:00:00-05:00"),
        ]));
        assert_eq!(body["sentAt"], "2021-03-04T10:00:00.000Z");
        assert_eq!(body["errorAt"], "2021-03-04T10:00:01.000Z");
        assert_eq!(body["createdAt"], "2021-03-04T10:00:00.100Z");
        assert_eq!(body["modifiedAt"], "2021-03-04T10:00:00.000Z");
        for name in ["sentAt", "errorAt", "createdAt", "modifiedAt"] {
            let problems = problems_of(prepare_csv(&[(name, "04/03/2021")]));
            assert_eq!(problems.len(), 1);
            assert!(
                problems[0].starts_with(&format!("{name}: \"04/03/2021\" is not a date-time")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn local_times_use_the_configured_zone_and_refuse_dst_holes() {
        let row = csv_row(&[("sentAt", "2021-07-01T09:00:00")]);
        let valid = prepare(&row, Format::Csv, 2, &in_zone("America/New_York"), &stamp()).unwrap();
        assert_eq!(valid.sent_at, "2021-07-01T13:00:00.000Z");

        let gap = csv_row(&[("sentAt", "2021-03-14T02:15:00")]);
        let problems = problems_of(prepare(
            &gap,
            Format::Csv,
            2,
            &in_zone("America/New_York"),
            &stamp(),
        ));
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .starts_with("sentAt: \"2021-03-14T02:15:00\" does not exist in America/New_York"),
            "{problems:?}"
        );
        let overlap = csv_row(&[("createdAt", "2021-11-07 01:15:00")]);
        let problems = problems_of(prepare(
            &overlap,
            Format::Csv,
            2,
            &in_zone("America/New_York"),
            &stamp(),
        ));
        assert!(
            problems[0]
                .starts_with("createdAt: \"2021-11-07 01:15:00\" is ambiguous in America/New_York"),
            "{problems:?}"
        );
        // The same wall time is fine in a zone without DST.
        assert!(prepare(&gap, Format::Csv, 2, &in_zone("Asia/Tokyo"), &stamp()).is_ok());
    }

    #[test]
    fn csv_text_is_read_as_the_attribute_type() {
        let body = body_of(prepare_csv(&[
            ("size", "1024"),
            ("auto", "TRUE"),
            ("meta", r#"{"via":"web","tags":["a","b"]}"#),
            ("custom", r#"{"priorityNum":2}"#),
            ("shortcuts", r#"["5f3c9a7e1b2d4c0000000001"]"#),
        ]));
        assert_eq!(body["size"], json!(1024));
        assert_eq!(body["auto"], json!(true));
        assert_eq!(body["meta"], json!({"via": "web", "tags": ["a", "b"]}));
        assert_eq!(body["custom"], json!({"priorityNum": 2}));
        assert_eq!(body["shortcuts"], json!(["5f3c9a7e1b2d4c0000000001"]));
        assert_eq!(
            body_of(prepare_csv(&[("size", "12.5")]))["size"],
            json!(12.5)
        );
        assert_eq!(
            body_of(prepare_csv(&[("auto", "false")]))["auto"],
            json!(false)
        );
        assert_single_problem(
            prepare_csv(&[("size", "big")]),
            "size: \"big\" is not a number",
        );
        assert_single_problem(
            prepare_csv(&[("auto", "yes")]),
            "auto: \"yes\" is not true or false",
        );
        let problems = problems_of(prepare_csv(&[("meta", "{not json")]));
        assert!(
            problems[0].starts_with("meta: not valid JSON ("),
            "{problems:?}"
        );
        assert_single_problem(
            prepare_csv(&[("meta", "[1]")]),
            "meta: expected an object, found an array",
        );
    }

    #[test]
    fn ndjson_types_are_strict_and_null_means_absent() {
        assert_single_problem(
            prepare_ndjson(json!({"size": "12"})),
            "size: expected a number, found a string",
        );
        assert_single_problem(
            prepare_ndjson(json!({"auto": "true"})),
            "auto: expected true or false, found a string",
        );
        assert_single_problem(
            prepare_ndjson(json!({"channel": 1})),
            "channel: expected a string, found a number",
        );
        assert_single_problem(
            prepare_ndjson(json!({"externalId": 1234})),
            "externalId: expected a string, found a number",
        );
        assert_single_problem(
            prepare_ndjson(json!({"meta": "{}"})),
            "meta: expected an object, found a string",
        );
        assert_single_problem(
            prepare_ndjson(json!({"sentAt": 1614852000})),
            "sentAt: expected a string, found a number",
        );
        let body = body_of(prepare_ndjson(
            json!({"subject": null, "lang": null, "size": 3, "auto": false}),
        ));
        assert!(body.get("subject").is_none());
        assert!(body.get("lang").is_none());
        assert_eq!(body["size"], json!(3));
        let problems = problems_of(prepare_ndjson(json!({"sentAt": null})));
        assert!(problems[0].starts_with("sentAt: missing"), "{problems:?}");
    }

    #[test]
    fn meta_columns_merge_into_meta_as_strings() {
        let body = body_of(prepare_csv(&[
            ("meta", r#"{"via":"email"}"#),
            ("meta.ticket_id", "4711"),
            ("meta.brand", "Acme"),
        ]));
        assert_eq!(
            body["meta"],
            json!({"via": "email", "ticket_id": "4711", "brand": "Acme"})
        );
        let body = body_of(prepare_csv(&[("meta.ticket_id", "4711")]));
        assert_eq!(body["meta"], json!({"ticket_id": "4711"}));
        // From NDJSON a meta.<key> value keeps its JSON type.
        let body = body_of(prepare_ndjson(json!({"meta.ticket_id": 4711})));
        assert_eq!(body["meta"], json!({"ticket_id": 4711}));
    }

    #[test]
    fn a_meta_key_given_both_ways_is_refused() {
        assert_single_problem(
            prepare_csv(&[("meta", r#"{"ticket_id":"1"}"#), ("meta.ticket_id", "2")]),
            "meta.ticket_id: the key \"ticket_id\" is also set in the meta column",
        );
    }

    #[test]
    fn meta_and_custom_hold_at_most_100_properties() {
        let hundred: Map<String, Value> = (0..100).map(|i| (format!("k{i}"), json!(i))).collect();
        let meta_text = Value::Object(hundred.clone()).to_string();
        assert!(prepare_csv(&[("meta", &meta_text), ("custom", &meta_text)]).is_ok());
        // The cap counts the merged meta.
        assert_single_problem(
            prepare_csv(&[("meta", &meta_text), ("meta.extra", "x")]),
            "meta: 101 properties; at most 100 are allowed",
        );
        let mut many = hundred;
        many.insert("k100".into(), json!(100));
        assert_single_problem(
            prepare_ndjson(json!({"custom": many})),
            "custom: 101 properties; at most 100 are allowed",
        );
    }

    #[test]
    fn reference_follows_its_schema() {
        let id = "5f3c9a7e1b2d4c0000000001";
        assert!(prepare_ndjson(json!({"reference": {"message": id, "type": "reply"}})).is_ok());
        assert_eq!(
            problems_of(prepare_ndjson(
                json!({"reference": {"message": "x", "kind": "reply"}})
            )),
            vec![
                "reference.message: \"x\" is not a 24-character lowercase hex id",
                "reference.kind: not an attribute of reference (it takes message, type)",
                "reference.type: missing",
            ]
        );
        assert_single_problem(
            prepare_ndjson(json!({"reference": {"message": id, "type": "cc"}})),
            "reference.type: \"cc\" is not one of reply, replyAll, forward",
        );
    }

    #[test]
    fn error_object_is_closed_and_typed() {
        assert!(
            prepare_ndjson(json!({"error": {"status": 550, "code": "bounce", "meta": {}}})).is_ok()
        );
        assert_eq!(
            problems_of(prepare_ndjson(json!({"error": {"status": "550", "reason": "x"}}))),
            vec![
                "error.status: expected a number, found a string",
                "error.reason: not an attribute of error (it takes status, code, title, detail, source, meta, links)",
            ]
        );
    }

    #[test]
    fn attachments_are_ids_or_objects_and_unique() {
        let id = "5f3c9a7e1b2d4c0000000001";
        let other = "5f3c9a7e1b2d4c0000000002";
        assert!(prepare_ndjson(json!({"attachments": [id, other]})).is_ok());
        let attachment = json!({"_id": id, "name": "a.pdf", "contentType": "application/pdf", "contentLength": 10});
        assert!(prepare_ndjson(json!({"attachments": [attachment]})).is_ok());
        assert_single_problem(
            prepare_ndjson(json!({"attachments": [id, id]})),
            "attachments[1]: repeats an earlier item; items must be unique",
        );
        assert_single_problem(
            prepare_ndjson(json!({"attachments": [id, attachment]})),
            "attachments: must hold either attachment ids or attachment objects, not both",
        );
        assert_eq!(
            problems_of(prepare_ndjson(json!({"attachments": [{"_id": id, "name": "a.pdf", "url": "u"}]}))),
            vec![
                "attachments[0].url: not an attribute of attachments[0] (it takes _id, name, contentType, contentLength, sourceId)",
                "attachments[0].contentType: missing",
                "attachments[0].contentLength: missing",
            ]
        );
        assert_single_problem(
            prepare_ndjson(json!({"attachments": ["nope"]})),
            "attachments[0]: \"nope\" is not a 24-character lowercase hex id",
        );
    }

    #[test]
    fn location_lengths_are_checked_and_other_keys_allowed() {
        assert!(prepare_ndjson(
            json!({"location": {"countryCode": "FR", "cityName": "Lyon", "timezone": "x"}})
        )
        .is_ok());
        assert_eq!(
            problems_of(prepare_ndjson(
                json!({"location": {"countryCode": "FRA", "regionCode": "ABC", "latitude": "45"}})
            )),
            vec![
                "location.countryCode: 3 characters; at most 2 are allowed",
                "location.regionCode: 3 characters; at most 2 are allowed",
                "location.latitude: expected a number, found a string",
            ]
        );
        assert_single_problem(
            prepare_ndjson(json!({"location": {"countryCode": "F"}})),
            "location.countryCode: \"F\" is too short; at least 2 characters are needed",
        );
    }

    #[test]
    fn sentiment_values_are_bounded() {
        assert!(prepare_ndjson(json!({"sentiment": {"polarity": -1, "confidence": 0.75}})).is_ok());
        assert!(prepare_csv(&[("sentiment", r#"{"polarity":1.0,"confidence":-1}"#)]).is_ok());
        assert_eq!(
            problems_of(prepare_ndjson(
                json!({"sentiment": {"polarity": 2, "confidence": 1.5}})
            )),
            vec![
                "sentiment.polarity: 2 is not one of -1, 0, 1",
                "sentiment.confidence: 1.5 is not between -1 and 1",
            ]
        );
        assert_single_problem(
            prepare_ndjson(json!({"sentiment": {"polarity": 0}})),
            "sentiment.confidence: missing",
        );
    }

    #[test]
    fn queue_needs_an_id_or_an_external_queue() {
        assert!(prepare_ndjson(json!({"queue": {"id": "5f3c9a7e1b2d4c0000000001"}})).is_ok());
        assert!(prepare_ndjson(json!({"queue": {"external": "amazon-connect"}})).is_ok());
        assert_single_problem(
            prepare_ndjson(json!({"queue": {}})),
            "queue: needs id or external",
        );
        assert_single_problem(
            prepare_ndjson(json!({"queue": {"external": "genesys"}})),
            "queue.external: \"genesys\" is not one of amazon-connect",
        );
    }

    #[test]
    fn shortcuts_and_kb_articles_hold_object_ids() {
        assert_single_problem(
            prepare_ndjson(json!({"kbArticles": ["5f3c9a7e1b2d4c0000000001", "kb-2"]})),
            "kbArticles[1]: \"kb-2\" is not a 24-character lowercase hex id",
        );
        assert_single_problem(
            prepare_ndjson(json!({"shortcuts": "5f3c9a7e1b2d4c0000000001"})),
            "shortcuts: expected an array, found a string",
        );
    }

    #[test]
    fn size_and_related_keep_their_types() {
        let body = body_of(prepare_ndjson(json!({"size": 2.5, "related": "r-1"})));
        assert_eq!(body["size"], json!(2.5));
        assert_eq!(body["related"], "r-1");
        assert_single_problem(
            prepare_ndjson(json!({"related": 1})),
            "related: expected a string, found a number",
        );
    }

    #[test]
    fn refused_fields_say_why() {
        for (name, fragment) in [
            ("directionType", "chronological order"),
            ("importedAt", "--imported-at"),
            ("conversation", "conversationId"),
            ("customer", "conversation's customer"),
            ("id", "externalId"),
        ] {
            let problems = problems_of(prepare_csv(&[(name, "x")]));
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with(&format!("{name}: cannot be imported: ")));
            assert!(problems[0].contains(fragment), "{problems:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_unless_ignored() {
        assert_single_problem(
            prepare_csv(&[("sentat", "x")]),
            "sentat: unknown field (did you mean sentAt?)",
        );
        assert_single_problem(
            prepare_csv(&[("ticket_priority", "high")]),
            "ticket_priority: unknown field; it is not a Kustomer message attribute",
        );
        let mut lenient = utc();
        lenient.ignore_unknown = true;
        let row = csv_row(&[("ticket_priority", "high"), ("directionType", "initial")]);
        let error = prepare(&row, Format::Csv, 2, &lenient, &stamp()).unwrap_err();
        assert_eq!(error.problems.len(), 1);
        assert!(error.problems[0].starts_with("directionType: cannot be imported"));
        let row = csv_row(&[("ticket_priority", "high")]);
        let valid = prepare(&row, Format::Csv, 2, &lenient, &stamp()).unwrap();
        assert!(!valid.body.contains("ticket_priority"));
    }

    #[test]
    fn classify_field_sorts_names() {
        for name in [
            "conversationId",
            "externalId",
            "sentAt",
            "queue",
            "meta",
            "meta.ticket_id",
            "meta.a.b",
        ] {
            assert_eq!(classify_field(name), FieldVerdict::Known, "{name}");
        }
        for name in ["meta.", "Meta.x", "sentat", "ticket", "", "directiontype"] {
            assert_eq!(classify_field(name), FieldVerdict::Unknown, "{name}");
        }
        for name in [
            "directionType",
            "importedAt",
            "conversation",
            "customer",
            "id",
        ] {
            assert!(
                matches!(classify_field(name), FieldVerdict::Refused(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn suggest_field_finds_near_misses() {
        assert_eq!(suggest_field("sentat"), Some("sentAt"));
        assert_eq!(suggest_field("SENT_AT"), Some("sentAt"));
        assert_eq!(suggest_field("conversation_id"), Some("conversationId"));
        assert_eq!(suggest_field("Conversation ID"), Some("conversationId"));
        assert_eq!(suggest_field("extrenalId"), Some("externalId"));
        assert_eq!(suggest_field("external_idd"), Some("externalId"));
        assert_eq!(suggest_field("chanel"), Some("channel"));
        assert_eq!(suggest_field("aap"), Some("app"));
        assert_eq!(suggest_field("created_by"), Some("createdBy"));
        assert_eq!(suggest_field("ticket_priority"), None);
        assert_eq!(suggest_field("body"), None);
        assert_eq!(suggest_field(""), None);
        assert_eq!(suggest_field("sentAt"), None);
    }

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        let chars = |text: &str| text.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&chars("extrenalid"), &chars("externalid")), 1);
        assert_eq!(edit_distance(&chars("kitten"), &chars("sitting")), 3);
        assert_eq!(edit_distance(&chars(""), &chars("abc")), 3);
    }

    #[test]
    fn derived_external_ids_are_stable_per_input_and_line() {
        assert_eq!(derived_external_id(SHA, 12), "kimp-0123456789abcdef-12");
        let first = prepare(&csv_row(&[]), Format::Csv, 12, &utc(), &stamp()).unwrap();
        let again = prepare(&csv_row(&[]), Format::Csv, 12, &utc(), &stamp()).unwrap();
        assert_eq!(first, again);
        let other_line = prepare(&csv_row(&[]), Format::Csv, 13, &utc(), &stamp()).unwrap();
        assert_ne!(first.external_id, other_line.external_id);
    }
}
