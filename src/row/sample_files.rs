//! The files in `samples/` against the validator: the demo's messages must all be valid (in
//! both formats, with identical bodies), and `bad_rows.csv` must fail exactly as its README says.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::*;
use crate::input::{self, InputSource};

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

fn stamp(input_sha256: String) -> StampOptions {
    StampOptions {
        imported_at: "2024-05-01T12:00:00.000Z".to_string(),
        audit_fields: true,
        created_by: Some("5e8f1c2a9b3d4e0017a1b2c9".to_string()),
        input_sha256,
        users: None,
    }
}

fn validation(zone: &str) -> ValidationOptions {
    ValidationOptions {
        timezone: jiff::tz::TimeZone::get(zone).unwrap(),
        ignore_unknown: false,
    }
}

/// Every row of a sample file, prepared; panics on an unreadable row.
fn prepared(name: &str, zone: &str) -> Vec<(u64, Result<ValidRow, RowError>)> {
    let source = InputSource::detect(&sample(name), None).unwrap();
    let survey = input::survey(&source).unwrap();
    for (field, line) in &survey.field_names {
        assert_eq!(
            classify_field(field),
            FieldVerdict::Known,
            "{name}:{line}: {field}"
        );
    }
    let stamp = stamp(survey.sha256);
    input::records(&source)
        .unwrap()
        .map(|record| {
            let record = record.unwrap();
            let fields = record
                .fields
                .unwrap_or_else(|reason| panic!("{name}:{}: {reason}", record.line));
            let outcome = prepare(
                &fields,
                source.format,
                record.line,
                &validation(zone),
                &stamp,
            );
            (record.line, outcome)
        })
        .collect()
}

fn valid_rows(name: &str) -> Vec<ValidRow> {
    prepared(name, "UTC")
        .into_iter()
        .map(|(line, outcome)| outcome.unwrap_or_else(|error| panic!("{name}:{line}: {error}")))
        .collect()
}

#[test]
fn every_demo_message_is_valid_and_both_formats_send_the_same_bodies() {
    let from_csv = valid_rows("messages.csv");
    let from_ndjson = valid_rows("messages.ndjson");
    assert_eq!(from_csv.len(), 200);
    assert_eq!(from_csv, from_ndjson);

    let conversations: HashSet<&str> = from_csv
        .iter()
        .filter_map(|r| r.conversation_id.as_deref())
        .collect();
    assert_eq!(conversations.len(), 12);
    // The sandbox answers 404 for conversations whose id starts with "dead".
    assert!(conversations.iter().all(|id| !id.starts_with("dead")));
    let external_ids: HashSet<&str> = from_csv.iter().map(|r| r.external_id.as_str()).collect();
    assert_eq!(external_ids.len(), from_csv.len(), "externalIds repeat");
    // Shuffled: the importer, not the file, must put each conversation in time order.
    assert!(from_csv
        .windows(2)
        .any(|pair| pair[0].sent_at_micros > pair[1].sent_at_micros));
    assert!(from_csv
        .iter()
        .all(|row| ("2019".."2024").contains(&&row.sent_at[..4])));
}

/// The README's table: (line, `valid` or the exact problem).
fn documented_outcomes() -> Vec<(u64, String)> {
    let readme = std::fs::read_to_string(sample("README.md")).unwrap();
    let table = readme
        .split("## bad_rows.csv: expected problems")
        .nth(1)
        .expect("the README documents bad_rows.csv");
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let number = cells.first()?.strip_prefix("| ")?.parse::<u64>().ok()?;
            let outcome = cells[1..].join(" | ");
            let outcome = outcome.strip_suffix(" |")?;
            let outcome = outcome
                .strip_prefix('`')
                .and_then(|o| o.strip_suffix('`'))
                .unwrap_or(outcome);
            Some((number, outcome.to_string()))
        })
        .collect()
}

#[test]
fn bad_rows_fail_exactly_as_documented() {
    let source = InputSource::detect(&sample("bad_rows.csv"), None).unwrap();
    let stamp = stamp(input::survey(&source).unwrap().sha256);
    let validation = validation("America/New_York");
    let mut first_line_of_external_id: HashMap<String, u64> = HashMap::new();
    let mut outcomes = Vec::new();
    for record in input::records(&source).unwrap() {
        let record = record.unwrap();
        let fields = match record.fields {
            Ok(fields) => fields,
            Err(reason) => {
                outcomes.push((record.line, reason));
                continue;
            }
        };
        match prepare(&fields, source.format, record.line, &validation, &stamp) {
            Err(error) => outcomes.extend(error.problems.into_iter().map(|p| (record.line, p))),
            // Staging stores a valid row whose externalId is taken as a duplicate.
            Ok(row) => match first_line_of_external_id.get(&row.external_id) {
                Some(first) => outcomes.push((
                    record.line,
                    format!(
                        "duplicate: externalId {} already used by line {first}",
                        row.external_id
                    ),
                )),
                None => {
                    first_line_of_external_id.insert(row.external_id, record.line);
                    outcomes.push((record.line, "valid".to_string()));
                }
            },
        }
    }
    let documented = documented_outcomes();
    assert!(documented.len() > 40, "README table not found or too short");
    assert_eq!(outcomes, documented);
}
