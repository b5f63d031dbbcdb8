//! Rows that name their conversation by the source system's ids (`conversationExternalId` and
//! the customer) instead of a Kustomer `conversationId`, and agents named by email
//! (`createdByEmail`, resolved through `--users-map`). The resolve phase (`crate::resolve`)
//! finds or creates what these name before any message is sent.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::schema::{self, Shape};
use crate::input::Format;

pub(super) const CONVERSATION_EXTERNAL_ID: &str = "conversationExternalId";
pub(super) const CREATED_BY_EMAIL: &str = "createdByEmail";

/// Columns that describe the ticket's customer and conversation (not message attributes).
pub(super) const TICKET_COLUMNS: &[&str] = &[
    CONVERSATION_EXTERNAL_ID,
    "customerExternalId",
    "customerEmail",
    "customerName",
    "customerPhone",
    "conversationName",
    "conversationStatus",
    "conversationTags",
];

/// Kustomer's limits on one conversation tag (`tags.items` of `POST /v1/conversations`).
const MAX_TAGS: usize = 20;
const MAX_TAG_CHARS: usize = 64;
/// RFC 5321's longest address.
const MAX_EMAIL_CHARS: usize = 254;
const MAX_PHONE_CHARS: usize = 64;

const ID_TEXT: Shape = Shape::Text {
    min_chars: 1,
    max_chars: Some(256),
};
const NAME_TEXT: Shape = Shape::Text {
    min_chars: 1,
    max_chars: Some(256),
};
const STATUS: Shape = Shape::OneOf(&["open", "done"]);

/// The customer a ticket belongs to, as the export names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CustomerRef {
    pub external_id: Option<String>,
    /// As written in the input (compared case-insensitively).
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
}

impl CustomerRef {
    /// The checkpoint's key for this customer: its externalId when it has one, else its email
    /// in lower case.
    pub fn key(&self) -> String {
        match (&self.external_id, &self.email) {
            (Some(id), _) => format!("externalId:{id}"),
            (None, Some(email)) => format!("email:{}", email.to_lowercase()),
            // Validation requires one of the two.
            (None, None) => String::new(),
        }
    }

    /// What every row of one ticket must agree on.
    pub fn identity(&self) -> String {
        format!(
            "{}\u{1f}{}",
            self.external_id.as_deref().unwrap_or(""),
            self.email.as_deref().unwrap_or("").to_lowercase()
        )
    }

    /// How the identity reads in a message.
    pub fn describe(&self) -> String {
        match (&self.external_id, &self.email) {
            (Some(id), Some(email)) => format!(
                "customerExternalId {} customerEmail {}",
                schema::quoted(id),
                schema::quoted(email)
            ),
            (Some(id), None) => format!("customerExternalId {}", schema::quoted(id)),
            (None, Some(email)) => format!("customerEmail {}", schema::quoted(email)),
            (None, None) => "no customer".into(),
        }
    }
}

/// A row's ticket: the source conversation and its customer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TicketRef {
    pub external_id: String,
    pub customer: CustomerRef,
    /// Conversation attributes; the ticket takes them from its earliest row.
    pub name: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
}

/// Emails of agents → their Kustomer user ids, from `--users-map` (CSV `email,id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsersMap(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error)]
pub enum UsersMapError {
    #[error("cannot read --users-map {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--users-map {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: u64,
        reason: String,
    },
}

impl UsersMap {
    /// Reads a CSV of `email,id` (a header line naming `email` and `id` is optional).
    pub fn load(path: &Path) -> Result<UsersMap, UsersMapError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UsersMapError::Read {
            path: shown.clone(),
            source,
        })?;
        UsersMap::parse(&text).map_err(|(line, reason)| UsersMapError::Line {
            path: shown,
            line,
            reason,
        })
    }

    fn parse(text: &str) -> Result<UsersMap, (u64, String)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut map = BTreeMap::new();
        for (index, record) in reader.records().enumerate() {
            let line = record
                .as_ref()
                .ok()
                .and_then(|r| r.position())
                .map_or(index as u64 + 1, csv::Position::line);
            let record = record.map_err(|err| (line, err.to_string()))?;
            let fields: Vec<&str> = record.iter().collect();
            if fields.iter().all(|field| field.is_empty()) {
                continue;
            }
            let [email, id] = fields[..] else {
                return Err((
                    line,
                    format!("expected 2 fields (email,id), found {}", fields.len()),
                ));
            };
            if index == 0 && email.eq_ignore_ascii_case("email") && id.eq_ignore_ascii_case("id") {
                continue;
            }
            if let Some(reason) = email_problem(email) {
                return Err((line, format!("email: {reason}")));
            }
            if !schema::is_object_id(id) {
                return Err((
                    line,
                    format!("{} is not a user id (24 lowercase hex)", schema::quoted(id)),
                ));
            }
            if let Some(other) = map.insert(email.to_lowercase(), id.to_string()) {
                if other != id {
                    return Err((
                        line,
                        format!(
                            "{} is listed twice with different ids",
                            schema::quoted(email)
                        ),
                    ));
                }
            }
        }
        Ok(UsersMap(map))
    }

    /// The user id of an agent's email, compared case-insensitively.
    pub fn user_id(&self, email: &str) -> Option<&str> {
        self.0.get(&email.to_lowercase()).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a text is not an email address we send, if it is not: one `@`, a non-empty local part, a
/// domain with a dot, no spaces or control characters, at most 254 characters.
pub fn email_problem(text: &str) -> Option<String> {
    let chars = text.chars().count();
    if chars > MAX_EMAIL_CHARS {
        return Some(format!(
            "{chars} characters; at most {MAX_EMAIL_CHARS} are allowed"
        ));
    }
    let valid = match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    (!valid).then(|| format!("{} is not an email address", schema::quoted(text)))
}

/// The ticket columns of one record, validated. `Ok(None)` when the row names no ticket.
/// `has_conversation_id`: the row also names a Kustomer conversationId.
pub(super) fn read_ticket(
    fields: &Map<String, Value>,
    origin: Format,
    has_conversation_id: bool,
    problems: &mut Vec<String>,
) -> Option<TicketRef> {
    let given = |name: &str| fields.get(name).filter(|value| !value.is_null());
    let named: Vec<&str> = TICKET_COLUMNS
        .iter()
        .copied()
        .filter(|name| given(name).is_some())
        .collect();
    if given(CONVERSATION_EXTERNAL_ID).is_none() {
        for name in named {
            problems.push(format!(
                "{name}: only read with {CONVERSATION_EXTERNAL_ID} (the source ticket's id), \
                 which this row does not give"
            ));
        }
        return None;
    };
    if has_conversation_id {
        problems.push(format!(
            "{CONVERSATION_EXTERNAL_ID}: give either conversationId (a Kustomer conversation) or \
             {CONVERSATION_EXTERNAL_ID} (the source ticket, resolved by the importer), not both"
        ));
        return None;
    }
    let before = problems.len();
    let mut text = |name: &str, shape: &Shape| -> Option<String> {
        let value = given(name)?;
        let at = problems.len();
        schema::validate(shape, value, name, problems);
        (problems.len() == at)
            .then(|| value.as_str().map(str::to_string))
            .flatten()
    };
    let external_id = text(CONVERSATION_EXTERNAL_ID, &ID_TEXT);
    let customer_external_id = text("customerExternalId", &ID_TEXT);
    let name = text("customerName", &NAME_TEXT);
    let conversation_name = text("conversationName", &NAME_TEXT);
    let status = text("conversationStatus", &STATUS);
    let email = given("customerEmail").and_then(|value| match value.as_str() {
        Some(email) => match email_problem(email) {
            Some(reason) => {
                problems.push(format!("customerEmail: {reason}"));
                None
            }
            None => Some(email.to_string()),
        },
        None => {
            problems.push(schema::wrong_type("customerEmail", "a string", value));
            None
        }
    });
    let phone = given("customerPhone").and_then(|value| match value.as_str() {
        Some(phone) => match phone_problem(phone) {
            Some(reason) => {
                problems.push(format!("customerPhone: {reason}"));
                None
            }
            None => Some(phone.trim().to_string()),
        },
        None => {
            problems.push(schema::wrong_type("customerPhone", "a string", value));
            None
        }
    });
    let tags = given("conversationTags")
        .map(|value| read_tags(value, origin, problems))
        .unwrap_or_default();
    if customer_external_id.is_none()
        && email.is_none()
        && given("customerExternalId").is_none()
        && given("customerEmail").is_none()
    {
        problems.push(format!(
            "customerExternalId: missing; a row with {CONVERSATION_EXTERNAL_ID} needs its \
             customer: customerExternalId and/or customerEmail"
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(TicketRef {
        external_id: external_id?,
        customer: CustomerRef {
            external_id: customer_external_id,
            email,
            name,
            phone,
        },
        name: conversation_name,
        status,
        tags,
    })
}

/// A phone number as the export gives it: digits with the usual separators, at most 64 characters.
fn phone_problem(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let chars = trimmed.chars().count();
    if chars > MAX_PHONE_CHARS {
        return Some(format!(
            "{chars} characters; at most {MAX_PHONE_CHARS} are allowed"
        ));
    }
    let valid = trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.'));
    (!valid).then(|| format!("{} is not a phone number", schema::quoted(text)))
}

/// `conversationTags`: comma-separated in a CSV cell, an array of strings in NDJSON. Each tag
/// as Kustomer takes it: 1 to 64 characters of letters, digits, space and `_/<>-.` (not
/// starting with a space), unique, at most 20.
fn read_tags(value: &Value, origin: Format, problems: &mut Vec<String>) -> Vec<String> {
    let tags: Vec<String> = match (origin, value) {
        (Format::Csv, Value::String(cell)) => cell
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_string)
            .collect(),
        (_, Value::Array(items)) => {
            let mut tags = Vec::new();
            for (index, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(tag) => tags.push(tag.to_string()),
                    None => problems.push(schema::wrong_type(
                        &format!("conversationTags[{index}]"),
                        "a string",
                        item,
                    )),
                }
            }
            tags
        }
        (_, other) => {
            problems.push(schema::wrong_type(
                "conversationTags",
                "an array of strings",
                other,
            ));
            return Vec::new();
        }
    };
    if tags.len() > MAX_TAGS {
        problems.push(format!(
            "conversationTags: {} tags; at most {MAX_TAGS} are allowed",
            tags.len()
        ));
    }
    for tag in &tags {
        let chars = tag.chars().count();
        let allowed = |c: char| {
            c.is_ascii_alphanumeric()
                || ('\u{c0}'..='\u{ff}').contains(&c)
                || matches!(c, '_' | '/' | '<' | '>' | '-' | '.' | ' ')
        };
        if chars == 0 || chars > MAX_TAG_CHARS || tag.starts_with(' ') || !tag.chars().all(allowed)
        {
            problems.push(format!(
                "conversationTags: {} is not a tag (1 to {MAX_TAG_CHARS} letters, digits, spaces \
                 or _/<>-., not starting with a space)",
                schema::quoted(tag)
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for tag in &tags {
        if !seen.insert(tag.as_str()) {
            problems.push(format!(
                "conversationTags: {} is listed twice",
                schema::quoted(tag)
            ));
        }
    }
    tags
}

/// `createdByEmail`: the agent's user id from the users map. `Ok(None)` when the row gives
/// none, or when its email is unknown and `--created-by` is the fallback.
pub(super) fn read_created_by_email(
    fields: &Map<String, Value>,
    users: Option<&UsersMap>,
    fallback: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    let value = fields.get(CREATED_BY_EMAIL).filter(|v| !v.is_null())?;
    let Some(email) = value.as_str() else {
        problems.push(schema::wrong_type(CREATED_BY_EMAIL, "a string", value));
        return None;
    };
    if fields.get("createdBy").is_some_and(|v| !v.is_null()) {
        problems.push(format!(
            "{CREATED_BY_EMAIL}: give either createdBy (a user id) or {CREATED_BY_EMAIL}, not both"
        ));
        return None;
    }
    if let Some(reason) = email_problem(email) {
        problems.push(format!("{CREATED_BY_EMAIL}: {reason}"));
        return None;
    }
    match users.and_then(|users| users.user_id(email)) {
        Some(id) => Some(id.to_string()),
        None if fallback => None,
        None if users.is_none() => {
            problems.push(format!(
                "{CREATED_BY_EMAIL}: {} needs --users-map FILE (CSV email,id) to become a user id",
                schema::quoted(email)
            ));
            None
        }
        None => {
            problems.push(format!(
                "{CREATED_BY_EMAIL}: {} is not in --users-map, and no --created-by fallback is given",
                schema::quoted(email)
            ));
            None
        }
    }
}

/// Collects, across rows, each ticket's first customer and every row that disagrees with it.
#[derive(Debug, Default)]
pub struct TicketConsistency {
    first: std::collections::HashMap<String, (u64, CustomerRef)>,
}

impl TicketConsistency {
    /// The problem of a row whose customer differs from its ticket's first row, if it does.
    pub fn check(&mut self, line: u64, ticket: &TicketRef) -> Option<String> {
        match self.first.get(&ticket.external_id) {
            None => {
                self.first
                    .insert(ticket.external_id.clone(), (line, ticket.customer.clone()));
                None
            }
            Some((first_line, first)) if first.identity() != ticket.customer.identity() => {
                Some(disagreement(
                    &ticket.external_id,
                    line,
                    &ticket.customer,
                    *first_line,
                    first,
                ))
            }
            Some(_) => None,
        }
    }
}

/// The message for rows of one ticket that name different customers.
pub fn disagreement(
    ticket: &str,
    line: u64,
    customer: &CustomerRef,
    other_line: u64,
    other: &CustomerRef,
) -> String {
    format!(
        "{CONVERSATION_EXTERNAL_ID}: the rows of ticket {} disagree about its customer: line \
         {line} names {}, line {other_line} names {}",
        schema::quoted(ticket),
        customer.describe(),
        other.describe()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn a_ticket_row_reads_its_customer_and_conversation() {
        let mut problems = Vec::new();
        let row = fields(json!({
            "conversationExternalId": "t-1", "customerEmail": "Ann@Example.com",
            "customerName": "Ann", "customerPhone": "+1 555 0100",
            "conversationStatus": "done", "conversationTags": "vip, billing"
        }));
        let ticket = read_ticket(&row, Format::Csv, false, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ticket.customer.key(), "email:ann@example.com");
        assert_eq!(ticket.tags, vec!["vip", "billing"]);
        assert_eq!(ticket.status.as_deref(), Some("done"));
    }

    #[test]
    fn ticket_problems_name_their_field() {
        let mut problems = Vec::new();
        let row = fields(json!({
            "conversationExternalId": "t-1", "customerEmail": "not-an-email",
            "conversationStatus": "closed", "conversationTags": ["ok", 7, " lead"]
        }));
        assert!(read_ticket(&row, Format::Ndjson, false, &mut problems).is_none());
        assert_eq!(
            problems,
            vec![
                "conversationStatus: \"closed\" is not one of open, done",
                "customerEmail: \"not-an-email\" is not an email address",
                "conversationTags[1]: expected a string, found a number",
                "conversationTags: \" lead\" is not a tag (1 to 64 letters, digits, spaces or _/<>-., not starting with a space)",
            ]
        );
    }

    #[test]
    fn conversation_id_and_external_id_exclude_each_other_and_the_customer_is_required() {
        let mut problems = Vec::new();
        let row = fields(json!({"conversationExternalId": "t-1", "customerEmail": "a@b.co"}));
        assert!(read_ticket(&row, Format::Csv, true, &mut problems).is_none());
        assert!(problems[0].contains("not both"), "{problems:?}");

        let mut problems = Vec::new();
        let row = fields(json!({"conversationExternalId": "t-1"}));
        assert!(read_ticket(&row, Format::Csv, false, &mut problems).is_none());
        assert!(problems[0].starts_with("customerExternalId: missing"));

        let mut problems = Vec::new();
        let row = fields(json!({"customerEmail": "a@b.co"}));
        assert!(read_ticket(&row, Format::Csv, false, &mut problems).is_none());
        assert!(problems[0].starts_with("customerEmail: only read with"));
    }

    #[test]
    fn users_map_reads_csv_with_or_without_header_case_insensitively() {
        let map = UsersMap::parse("email,id\nAgent@Acme.com,5f3c9a7e1b2d4c00aaaaaaaa\n\n").unwrap();
        assert_eq!(
            map.user_id("agent@ACME.com"),
            Some("5f3c9a7e1b2d4c00aaaaaaaa")
        );
        assert_eq!(map.len(), 1);
        let error = UsersMap::parse("a@b.co,xyz\n").unwrap_err();
        assert_eq!(error.0, 1);
        assert!(error.1.contains("not a user id"));
    }

    #[test]
    fn created_by_email_resolves_or_falls_back_or_is_refused() {
        let users = UsersMap::parse("a@b.co,5f3c9a7e1b2d4c00aaaaaaaa").unwrap();
        let row = fields(json!({"createdByEmail": "A@B.co"}));
        let mut problems = Vec::new();
        assert_eq!(
            read_created_by_email(&row, Some(&users), false, &mut problems).as_deref(),
            Some("5f3c9a7e1b2d4c00aaaaaaaa")
        );
        let row = fields(json!({"createdByEmail": "x@b.co"}));
        assert_eq!(
            read_created_by_email(&row, Some(&users), true, &mut problems),
            None
        );
        assert!(problems.is_empty());
        read_created_by_email(&row, Some(&users), false, &mut problems);
        assert_eq!(
            problems,
            vec!["createdByEmail: \"x@b.co\" is not in --users-map, and no --created-by fallback is given"]
        );
    }

    #[test]
    fn disagreeing_customers_are_named_with_both_lines() {
        let ticket = |email: &str| TicketRef {
            external_id: "t-1".into(),
            customer: CustomerRef {
                external_id: None,
                email: Some(email.into()),
                name: None,
                phone: None,
            },
            name: None,
            status: None,
            tags: vec![],
        };
        let mut check = TicketConsistency::default();
        assert_eq!(check.check(2, &ticket("a@b.co")), None);
        assert_eq!(check.check(3, &ticket("A@B.CO")), None);
        let problem = check.check(9, &ticket("c@b.co")).unwrap();
        assert!(
            problem.contains(
                "line 9 names customerEmail \"c@b.co\", line 2 names customerEmail \"a@b.co\""
            ),
            "{problem}"
        );
    }
}
