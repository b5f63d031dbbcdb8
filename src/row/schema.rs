//! The create-message attributes and their shapes, transcribed from the OpenAPI request schema
//! (`paths["/conversations/{id}/messages"].post.requestBody`), and a small validator that names
//! every problem with the path of the offending value.

use std::collections::HashSet;

use serde_json::Value;

/// What a value must look like.
#[derive(Debug)]
pub(super) enum Shape {
    /// A string of `min_chars..=max_chars` characters (Unicode scalar values, not bytes).
    Text {
        min_chars: usize,
        max_chars: Option<usize>,
    },
    /// A MongoDB ObjectId: 24 lowercase hex characters.
    ObjectId,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// An RFC 3339 date-time; normalised by `row::time`, not here.
    DateTime,
    Number {
        allowed: Option<&'static [f64]>,
        range: Option<(f64, f64)>,
    },
    Boolean,
    /// Any JSON object, optionally with a cap on its number of properties.
    AnyObject {
        max_properties: Option<usize>,
    },
    Record(&'static Record),
    List {
        items: &'static Shape,
        unique: bool,
    },
    /// `attachments`: either all attachment objects or all attachment ids.
    Attachments,
}

/// An object with declared properties.
#[derive(Debug)]
pub(super) struct Record {
    properties: &'static [(&'static str, Shape)],
    required: &'static [&'static str],
    /// At least one of these must be present (the schema's `anyOf` of `required`).
    required_any: &'static [&'static str],
    /// `additionalProperties: false`.
    closed: bool,
}

pub(super) const CHANNELS: &[&str] = &[
    "email",
    "sms",
    "chat",
    "facebook",
    "twitter-dm",
    "twitter-tweet",
    "voice",
    "instagram",
    "whatsapp",
];

const TEXT: Shape = Shape::Text {
    min_chars: 0,
    max_chars: None,
};

const fn text_up_to(max_chars: usize) -> Shape {
    Shape::Text {
        min_chars: 0,
        max_chars: Some(max_chars),
    }
}

const NUMBER: Shape = Shape::Number {
    allowed: None,
    range: None,
};

const ANY_OBJECT: Shape = Shape::AnyObject {
    max_properties: None,
};

const OBJECT_ID: Shape = Shape::ObjectId;

static REFERENCE: Record = Record {
    properties: &[
        ("message", Shape::ObjectId),
        ("type", Shape::OneOf(&["reply", "replyAll", "forward"])),
    ],
    required: &["message", "type"],
    required_any: &[],
    closed: true,
};

static ERROR: Record = Record {
    properties: &[
        ("status", NUMBER),
        ("code", TEXT),
        ("title", TEXT),
        ("detail", TEXT),
        ("source", ANY_OBJECT),
        ("meta", ANY_OBJECT),
        ("links", ANY_OBJECT),
    ],
    required: &[],
    required_any: &[],
    closed: true,
};

pub(super) static ATTACHMENT: Record = Record {
    properties: &[
        ("_id", Shape::ObjectId),
        ("name", TEXT),
        ("contentType", TEXT),
        ("contentLength", NUMBER),
        ("sourceId", Shape::ObjectId),
    ],
    required: &["_id", "name", "contentType", "contentLength"],
    required_any: &[],
    closed: true,
};

static LOCATION: Record = Record {
    properties: &[
        ("name", TEXT),
        ("address", text_up_to(256)),
        ("address2", text_up_to(256)),
        ("address3", text_up_to(256)),
        ("latitude", NUMBER),
        ("longitude", NUMBER),
        (
            "countryCode",
            Shape::Text {
                min_chars: 2,
                max_chars: Some(2),
            },
        ),
        ("countryName", text_up_to(64)),
        ("regionCode", text_up_to(2)),
        ("regionName", text_up_to(128)),
        ("cityName", text_up_to(128)),
        ("zipCode", text_up_to(30)),
        ("areaCode", text_up_to(30)),
    ],
    required: &[],
    required_any: &[],
    // The schema does not forbid other properties here.
    closed: false,
};

static SENTIMENT: Record = Record {
    properties: &[
        (
            "polarity",
            Shape::Number {
                allowed: Some(&[-1.0, 0.0, 1.0]),
                range: None,
            },
        ),
        (
            "confidence",
            Shape::Number {
                allowed: None,
                range: Some((-1.0, 1.0)),
            },
        ),
    ],
    required: &["polarity", "confidence"],
    required_any: &[],
    closed: true,
};

static QUEUE: Record = Record {
    properties: &[
        ("id", Shape::ObjectId),
        ("external", Shape::OneOf(&["amazon-connect"])),
    ],
    required: &[],
    required_any: &["id", "external"],
    closed: true,
};

/// Most properties `meta` and `custom` may have.
pub(super) const MAX_PROPERTIES: usize = 100;

/// Every attribute the importer takes from input, in the schema's property order (which is
/// also the order of keys in the body sent).
pub(super) static ATTRIBUTES: &[(&str, Shape)] = &[
    (
        "externalId",
        Shape::Text {
            min_chars: 1,
            max_chars: Some(256),
        },
    ),
    ("reference", Shape::Record(&REFERENCE)),
    ("channel", Shape::OneOf(CHANNELS)),
    ("preview", text_up_to(10_240)),
    ("subject", text_up_to(256)),
    ("direction", Shape::OneOf(&["in", "out"])),
    (
        "app",
        Shape::Text {
            min_chars: 1,
            max_chars: None,
        },
    ),
    ("size", NUMBER),
    ("related", TEXT),
    ("status", Shape::OneOf(&["sent", "received", "error"])),
    ("error", Shape::Record(&ERROR)),
    ("errorAt", Shape::DateTime),
    ("auto", Shape::Boolean),
    ("sentAt", Shape::DateTime),
    ("source", Shape::OneOf(&["bulk", "satisfaction"])),
    (
        "shortcuts",
        Shape::List {
            items: &OBJECT_ID,
            unique: false,
        },
    ),
    (
        "kbArticles",
        Shape::List {
            items: &OBJECT_ID,
            unique: false,
        },
    ),
    ("attachments", Shape::Attachments),
    ("location", Shape::Record(&LOCATION)),
    // The 100-property cap on meta applies after the meta.<key> columns are merged in.
    ("meta", ANY_OBJECT),
    (
        "custom",
        Shape::AnyObject {
            max_properties: Some(MAX_PROPERTIES),
        },
    ),
    ("sentiment", Shape::Record(&SENTIMENT)),
    ("createdAt", Shape::DateTime),
    ("modifiedAt", Shape::DateTime),
    ("createdBy", Shape::ObjectId),
    ("modifiedBy", Shape::ObjectId),
    ("lang", text_up_to(100)),
    ("queue", Shape::Record(&QUEUE)),
];

/// Keys of the body, in order: the schema's properties minus those Kustomer fills itself
/// (`id`, `customer`, `conversation`).
pub(super) const BODY_ORDER: &[&str] = &[
    "externalId",
    "reference",
    "channel",
    "preview",
    "subject",
    "direction",
    "app",
    "size",
    "related",
    "status",
    "error",
    "errorAt",
    "auto",
    "sentAt",
    "source",
    "shortcuts",
    "kbArticles",
    "attachments",
    "location",
    "meta",
    "custom",
    "sentiment",
    "createdAt",
    "modifiedAt",
    "createdBy",
    "modifiedBy",
    "importedAt",
    "lang",
    "queue",
];

pub(super) fn attribute(name: &str) -> Option<&'static Shape> {
    ATTRIBUTES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, shape)| shape)
}

pub fn is_object_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads a CSV cell as the JSON value the shape expects: text stays text, numbers and
/// booleans are parsed, objects and arrays come from the cell's JSON text.
pub(super) fn from_csv_cell(shape: &Shape, cell: &str) -> Result<Value, String> {
    match shape {
        Shape::Text { .. } | Shape::ObjectId | Shape::OneOf(_) | Shape::DateTime => {
            Ok(Value::String(cell.to_string()))
        }
        Shape::Number { .. } => cell
            .trim()
            .parse::<serde_json::Number>()
            .map(Value::Number)
            .map_err(|_| format!("{} is not a number", quoted(cell))),
        Shape::Boolean => match cell.trim() {
            text if text.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            text if text.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(format!("{} is not true or false", quoted(cell))),
        },
        Shape::AnyObject { .. } | Shape::Record(_) | Shape::List { .. } | Shape::Attachments => {
            serde_json::from_str(cell).map_err(|error| format!("not valid JSON ({error})"))
        }
    }
}

/// Checks `value` against `shape`, adding one problem per fault, each prefixed by `path`.
pub(super) fn validate(shape: &Shape, value: &Value, path: &str, problems: &mut Vec<String>) {
    match shape {
        Shape::Text {
            min_chars,
            max_chars,
        } => validate_text(*min_chars, *max_chars, value, path, problems),
        Shape::ObjectId | Shape::DateTime => validate_id_or_time(shape, value, path, problems),
        Shape::OneOf(choices) => validate_choice(choices, value, path, problems),
        Shape::Number { allowed, range } => {
            validate_number(*allowed, *range, value, path, problems)
        }
        Shape::Boolean => {
            if !value.is_boolean() {
                problems.push(wrong_type(path, "true or false", value));
            }
        }
        Shape::AnyObject { max_properties } => {
            validate_object(*max_properties, value, path, problems)
        }
        Shape::Record(record) => validate_record(record, value, path, problems),
        Shape::List { items, unique } => validate_list(items, *unique, value, path, problems),
        Shape::Attachments => validate_attachments(value, path, problems),
    }
}

/// Text: a string, not blank when one character is the least, within its length.
fn validate_text(
    min_chars: usize,
    max_chars: Option<usize>,
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(text) = expect_string(value, path, problems) else {
        return;
    };
    let chars = text.chars().count();
    if min_chars == 1 && text.trim().is_empty() {
        problems.push(format!("{path}: must not be empty"));
    } else if chars < min_chars {
        problems.push(format!(
            "{path}: {} is too short; at least {} characters are needed",
            quoted(text),
            min_chars
        ));
    }
    if let Some(max) = max_chars {
        if chars > max {
            problems.push(format!(
                "{path}: {} characters; at most {} are allowed",
                thousands(chars),
                thousands(max)
            ));
        }
    }
}

/// An id or a timestamp: a string, and an id in its 24 hex characters (timestamps are read by
/// `time::normalize`).
fn validate_id_or_time(shape: &Shape, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(text) = expect_string(value, path, problems) else {
        return;
    };
    if matches!(shape, Shape::ObjectId) && !is_object_id(text) {
        problems.push(format!(
            "{path}: {} is not a 24-character lowercase hex id",
            quoted(text)
        ));
    }
}

/// One of a fixed list of words.
fn validate_choice(choices: &[&str], value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(text) = expect_string(value, path, problems) else {
        return;
    };
    if !choices.contains(&text) {
        problems.push(format!(
            "{path}: {} is not one of {}",
            quoted(text),
            choices.join(", ")
        ));
    }
}

/// A number, one of the allowed values and within the range where the schema says so.
fn validate_number(
    allowed: Option<&[f64]>,
    range: Option<(f64, f64)>,
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(number) = value.as_f64() else {
        problems.push(wrong_type(path, "a number", value));
        return;
    };
    if let Some(allowed) = allowed {
        if !allowed.contains(&number) {
            let listed: Vec<String> = allowed.iter().map(|n| n.to_string()).collect();
            problems.push(format!(
                "{path}: {value} is not one of {}",
                listed.join(", ")
            ));
        }
    }
    if let Some((low, high)) = range {
        if number < low || number > high {
            problems.push(format!("{path}: {value} is not between {low} and {high}"));
        }
    }
}

/// Any object, with no more properties than allowed.
fn validate_object(
    max_properties: Option<usize>,
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(object) = value.as_object() else {
        problems.push(wrong_type(path, "an object", value));
        return;
    };
    if let Some(max) = max_properties {
        check_property_count(object.len(), max, path, problems);
    }
}

/// An array whose every item has the items' shape, each once when the schema says so.
fn validate_list(
    items: &Shape,
    unique: bool,
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    let Some(list) = value.as_array() else {
        problems.push(wrong_type(path, "an array", value));
        return;
    };
    for (index, item) in list.iter().enumerate() {
        validate(items, item, &format!("{path}[{index}]"), problems);
    }
    if unique {
        check_unique(list, path, problems);
    }
}

/// Attachments: all ids or all attachment objects, each once.
fn validate_attachments(value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(list) = value.as_array() else {
        problems.push(wrong_type(path, "an array", value));
        return;
    };
    let item_shape = if list.iter().all(Value::is_string) {
        Shape::ObjectId
    } else if list.iter().all(Value::is_object) {
        Shape::Record(&ATTACHMENT)
    } else {
        problems.push(format!(
            "{path}: must hold either attachment ids or attachment objects, not both"
        ));
        return;
    };
    for (index, item) in list.iter().enumerate() {
        validate(&item_shape, item, &format!("{path}[{index}]"), problems);
    }
    check_unique(list, path, problems);
}

pub(super) fn check_property_count(
    count: usize,
    max: usize,
    path: &str,
    problems: &mut Vec<String>,
) {
    if count > max {
        problems.push(format!(
            "{path}: {count} properties; at most {max} are allowed"
        ));
    }
}

fn validate_record(record: &Record, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        problems.push(wrong_type(path, "an object", value));
        return;
    };
    for (key, item) in object {
        match record.properties.iter().find(|(name, _)| name == key) {
            Some((_, shape)) => validate(shape, item, &format!("{path}.{key}"), problems),
            None if record.closed => {
                let names: Vec<&str> = record.properties.iter().map(|(name, _)| *name).collect();
                problems.push(format!(
                    "{path}.{key}: not an attribute of {path} (it takes {})",
                    names.join(", ")
                ));
            }
            None => {}
        }
    }
    for required in record.required {
        if !object.contains_key(*required) {
            problems.push(format!("{path}.{required}: missing"));
        }
    }
    if !record.required_any.is_empty()
        && !record
            .required_any
            .iter()
            .any(|name| object.contains_key(*name))
    {
        problems.push(format!(
            "{path}: needs {}",
            record.required_any.join(" or ")
        ));
    }
}

fn check_unique(list: &[Value], path: &str, problems: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for (index, item) in list.iter().enumerate() {
        if !seen.insert(item.to_string()) {
            problems.push(format!(
                "{path}[{index}]: repeats an earlier item; items must be unique"
            ));
        }
    }
}

fn expect_string<'v>(value: &'v Value, path: &str, problems: &mut Vec<String>) -> Option<&'v str> {
    let text = value.as_str();
    if text.is_none() {
        problems.push(wrong_type(path, "a string", value));
    }
    text
}

pub(super) fn wrong_type(path: &str, expected: &str, found: &Value) -> String {
    let found = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{path}: expected {expected}, found {found}")
}

/// A value as it appears in a message: JSON-quoted, cut short when long.
pub(super) fn quoted(text: &str) -> String {
    const SHOWN_CHARS: usize = 60;
    if text.chars().count() <= SHOWN_CHARS {
        Value::String(text.to_string()).to_string()
    } else {
        let start: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{}…", Value::String(start))
    }
}

/// 10240 → "10,240".
pub(super) fn thousands(number: usize) -> String {
    crate::text::thousands(number as u64)
}
