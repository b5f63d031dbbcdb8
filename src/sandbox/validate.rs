//! Validation of create bodies (messages, customers, conversations) against the request schemas
//! extracted verbatim from the OpenAPI file (`create_message_schema.json`,
//! `create_customer_schema.json`, `create_conversation_schema.json`), plus the normalisation
//! Kustomer applies to what it stores (date-times become UTC with millisecond precision, as a
//! MongoDB date would).
//!
//! The spec's own formats `object-id` (24 lowercase hex), `email-relaxed` (something, `@`,
//! something, no blank) and `phone-number` (digits with `+ -.()` and blanks, at least 3 digits)
//! are checked; every other format as the `jsonschema` crate knows it.
//! The OpenAPI 3.0 schemas are adapted to JSON Schema in three documented ways: `nullable: true`
//! becomes a `null` alternative of the type; `custom` loses `additionalProperties: false` (the
//! spec declares no custom attribute, which would forbid them all, while `kustomer-api.md` allows
//! up to 100); `app` gains `minLength: 1` (`kustomer-api.md`: "non-empty string").
//!
//! Imports nothing of the sandbox.

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::{Map, Value};

/// The request schemas exactly as the OpenAPI file has them.
const MESSAGE_SCHEMA: &str = include_str!("create_message_schema.json");
const CUSTOMER_SCHEMA: &str = include_str!("create_customer_schema.json");
const CONVERSATION_SCHEMA: &str = include_str!("create_conversation_schema.json");

/// Attributes holding RFC 3339 date-times that get normalised when stored, per body kind.
pub(crate) const DATE_TIME_FIELDS: [&str; 5] =
    ["sentAt", "importedAt", "createdAt", "modifiedAt", "errorAt"];
const CUSTOMER_DATE_TIME_FIELDS: &[&str] = &[
    "signedUpAt",
    "lastActivityAt",
    "lastCustomerActivityAt",
    "lastSeenAt",
    "birthdayAt",
    "createdAt",
    "importedAt",
];
const CONVERSATION_DATE_TIME_FIELDS: &[&str] = &["createdAt", "importedAt"];

/// Where a JSON:API error points: every body attribute lives under this prefix.
const POINTER_PREFIX: &str = "/data/attributes";

/// One problem with a request body, rendered as one JSON:API error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub pointer: String,
    pub detail: String,
}

/// One compiled request schema; build once per sandbox.
pub(crate) struct BodyValidator {
    validator: Validator,
    date_time_fields: &'static [&'static str],
}

impl BodyValidator {
    /// `POST /v1/conversations/{id}/messages` (and each bulk item).
    pub(crate) fn messages() -> Self {
        Self::compile(MESSAGE_SCHEMA, &DATE_TIME_FIELDS)
    }

    /// `POST /v1/customers`.
    pub(crate) fn customers() -> Self {
        Self::compile(CUSTOMER_SCHEMA, CUSTOMER_DATE_TIME_FIELDS)
    }

    /// `POST /v1/conversations`.
    pub(crate) fn conversations() -> Self {
        Self::compile(CONVERSATION_SCHEMA, CONVERSATION_DATE_TIME_FIELDS)
    }

    fn compile(raw: &str, date_time_fields: &'static [&'static str]) -> Self {
        let raw: Value = serde_json::from_str(raw)
            .expect("the embedded schema is valid JSON (checked by the tests)");
        let schema = adapt_openapi_schema(raw);
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .with_format("object-id", is_object_id)
            .with_format("email-relaxed", is_relaxed_email)
            .with_format("phone-number", is_phone_number)
            .build(&schema)
            .expect("the embedded schema compiles (checked by the tests)");
        Self {
            validator,
            date_time_fields,
        }
    }

    /// Checks `body` and returns its attributes with date-times normalised, or every problem.
    pub(crate) fn validate(&self, body: Value) -> Result<Map<String, Value>, Vec<FieldError>> {
        let mut problems: Vec<FieldError> = Vec::new();
        for error in self.validator.iter_errors(&body) {
            let at = error.instance_path().as_str().to_owned();
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    problems.push(FieldError {
                        pointer: pointer_to(&at, Some(name)),
                        detail: format!("{} is required", display_path(&at, Some(name))),
                    });
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        problems.push(FieldError {
                            pointer: pointer_to(&at, Some(name)),
                            detail: format!("{} is not allowed", display_path(&at, Some(name))),
                        });
                    }
                }
                _ => problems.push(FieldError {
                    pointer: pointer_to(&at, None),
                    detail: error.masked_with(display_path(&at, None)).to_string(),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let Value::Object(mut attributes) = body else {
            // The schema's top-level `type: object` has already rejected anything else.
            return Err(vec![FieldError {
                pointer: POINTER_PREFIX.to_owned(),
                detail: "the body must be a JSON object".to_owned(),
            }]);
        };
        for field in self.date_time_fields.iter().copied() {
            if let Some(Value::String(text)) = attributes.get_mut(field) {
                match normalize_date_time(text) {
                    Some(normalized) => *text = normalized,
                    None => problems.push(FieldError {
                        pointer: format!("{POINTER_PREFIX}/{field}"),
                        detail: format!("{field} is not a \"date-time\""),
                    }),
                }
            }
        }
        if problems.is_empty() {
            Ok(attributes)
        } else {
            Err(problems)
        }
    }
}

/// Renders an instant the way Kustomer answers: UTC, millisecond precision, `Z` suffix.
pub(crate) fn format_timestamp(instant: jiff::Timestamp) -> String {
    format!("{instant:.3}")
}

/// Parses an RFC 3339 date-time and re-renders it truncated to milliseconds in UTC.
fn normalize_date_time(text: &str) -> Option<String> {
    let instant: jiff::Timestamp = text.parse().ok()?;
    let truncated = jiff::Timestamp::from_millisecond(instant.as_millisecond()).ok()?;
    Some(format_timestamp(truncated))
}

/// The spec's `email-relaxed`: a local part, `@`, a domain, no blanks.
fn is_relaxed_email(text: &str) -> bool {
    text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !text.chars().any(char::is_whitespace)
    })
}

/// The spec's `phone-number`, read leniently: digits and the usual separators, 3 digits at least.
fn is_phone_number(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '(' | ')' | ' '))
        && text.chars().filter(char::is_ascii_digit).count() >= 3
}

/// Kustomer ids are MongoDB ObjectIds: 24 lowercase hex characters.
pub(crate) fn is_object_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn pointer_to(instance_path: &str, child: Option<&str>) -> String {
    match child {
        Some(name) => format!(
            "{POINTER_PREFIX}{instance_path}/{}",
            name.replace('~', "~0").replace('/', "~1")
        ),
        None => format!("{POINTER_PREFIX}{instance_path}"),
    }
}

/// A readable name for the offending value, e.g. `reference.type` or `body`.
fn display_path(instance_path: &str, child: Option<&str>) -> String {
    let mut segments: Vec<String> = instance_path
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect();
    if let Some(name) = child {
        segments.push(name.to_owned());
    }
    if segments.is_empty() {
        "body".to_owned()
    } else {
        segments.join(".")
    }
}

/// Turns the OpenAPI 3.0 dialect into JSON Schema and applies the adaptations listed in the
/// module doc.
fn adapt_openapi_schema(mut schema: Value) -> Value {
    convert_nullable(&mut schema);
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        if let Some(custom) = properties.get_mut("custom").and_then(Value::as_object_mut) {
            custom.remove("additionalProperties");
        }
        if let Some(app) = properties.get_mut("app").and_then(Value::as_object_mut) {
            app.insert("minLength".to_owned(), Value::from(1));
        }
    }
    schema
}

fn convert_nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(kind)) = map.get("type").cloned() {
                    map.insert("type".to_owned(), serde_json::json!([kind, "null"]));
                }
            }
            map.values_mut().for_each(convert_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(convert_nullable),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(body: Value) -> Vec<FieldError> {
        BodyValidator::messages()
            .validate(body)
            .expect_err("body should be rejected")
    }

    #[test]
    fn accepts_a_full_valid_body_and_normalises_date_times() {
        let attributes = BodyValidator::messages()
            .validate(json!({
                "channel": "email",
                "app": "zendesk",
                "direction": "in",
                "externalId": "zd-1",
                "preview": "hello",
                "sentAt": "2021-03-04T05:06:07.123456+02:00",
                "importedAt": "2024-01-01T00:00:00Z",
                "createdBy": "0123456789abcdef01234567",
                "meta": {"a": 1},
                "custom": {"orderStr": "x"},
                "lang": null,
                "reference": {"message": "0123456789abcdef01234567", "type": "reply"},
                "attachments": ["0123456789abcdef01234567"],
                "sentiment": {"polarity": 1, "confidence": 0.5}
            }))
            .expect("valid body");
        assert_eq!(attributes["sentAt"], "2021-03-04T03:06:07.123Z");
        assert_eq!(attributes["importedAt"], "2024-01-01T00:00:00.000Z");
        assert_eq!(attributes["preview"], "hello");
    }

    #[test]
    fn rejects_direction_type_as_an_unknown_property() {
        let errors = errors_of(json!({"channel": "email", "app": "a", "directionType": "initial"}));
        assert_eq!(
            errors,
            vec![FieldError {
                pointer: "/data/attributes/directionType".into(),
                detail: "directionType is not allowed".into(),
            }]
        );
    }

    #[test]
    fn reports_every_problem_with_its_pointer() {
        let errors = errors_of(json!({
            "channel": "pigeon",
            "direction": "sideways",
            "preview": "x".repeat(10_241),
            "sentAt": "yesterday",
            "createdBy": "ABCDEF0123456789ABCDEF01",
            "reference": {"message": "0123456789abcdef01234567", "type": "quote"}
        }));
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for expected in [
            "/data/attributes/app",
            "/data/attributes/channel",
            "/data/attributes/direction",
            "/data/attributes/preview",
            "/data/attributes/sentAt",
            "/data/attributes/createdBy",
            "/data/attributes/reference/type",
        ] {
            assert!(
                pointers.contains(&expected),
                "{expected} missing in {errors:?}"
            );
        }
        let preview = errors
            .iter()
            .find(|e| e.pointer.ends_with("/preview"))
            .expect("preview error");
        assert_eq!(preview.detail, "preview is longer than 10240 characters");
    }

    #[test]
    fn limits_meta_and_custom_to_one_hundred_properties() {
        let many: Map<String, Value> = (0..101).map(|i| (format!("k{i}"), json!(i))).collect();
        let errors =
            errors_of(json!({"channel": "chat", "app": "a", "meta": many, "custom": many}));
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            vec!["/data/attributes/meta", "/data/attributes/custom"]
        );
    }

    #[test]
    fn rejects_an_empty_app_and_a_non_object_body() {
        let errors = errors_of(json!({"channel": "chat", "app": ""}));
        assert_eq!(errors[0].pointer, "/data/attributes/app");
        let errors = errors_of(json!(["channel"]));
        assert_eq!(errors[0].pointer, "/data/attributes");
    }

    #[test]
    fn object_ids_are_24_lowercase_hex() {
        assert!(is_object_id("0123456789abcdef01234567"));
        assert!(!is_object_id("0123456789ABCDEF01234567"));
        assert!(!is_object_id("0123456789abcdef0123456"));
        assert!(!is_object_id("0123456789abcdef0123456g"));
    }
}
