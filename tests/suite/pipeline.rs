//! End to end through the compiled binary against a sandbox process: inputs in every format,
//! stamping, ordering, bad rows, refusals, and the exit codes.

use std::io::Write;
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(120);

fn run_import(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    input: &str,
    extra: &[&str],
) -> std::process::Output {
    run_job(dir, sandbox, ADMIN_KEY, input, extra)
}

#[test]
fn csv_rows_are_created_once_in_order_with_stamps() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    let expected = write_csv(&dir.path().join("in.csv"), 300, 12, 1);
    let output = run_import(
        dir.path(),
        &sandbox,
        "in.csv",
        &["--imported-at", "2024-06-01T08:00:00+02:00"],
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);

    for messages in sandbox.messages().values() {
        for message in messages {
            assert_eq!(message["importedAt"], "2024-06-01T06:00:00.000Z");
            // createdAt defaults to sentAt; modifiedAt to createdAt; modifiedBy to createdBy.
            assert_eq!(message["createdAt"], message["sentAt"]);
            assert_eq!(message["modifiedAt"], message["sentAt"]);
            assert_eq!(message["createdBy"], "5f0000000000000000000001");
            assert_eq!(message["modifiedBy"], "5f0000000000000000000001");
        }
    }

    // The report names Kustomer's id for every source row.
    let stored_ids: std::collections::HashMap<String, String> = sandbox
        .messages()
        .values()
        .flatten()
        .map(|m| {
            (
                m["externalId"].as_str().unwrap().to_string(),
                m["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let report = report_rows(dir.path(), "job.sqlite");
    assert_eq!(report.len(), expected.len());
    for row in &report {
        assert_eq!(row["state"], "succeeded", "{row:?}");
        assert_eq!(stored_ids[&row["externalId"]], row["messageId"]);
    }
}

#[test]
fn ndjson_and_gzip_inputs_import_the_same_messages() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();

    // NDJSON sample shipped with the project.
    let ndjson = samples_dir().join("messages.ndjson");
    let output = run_import(dir.path(), &sandbox, ndjson.to_str().unwrap(), &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let ndjson_count = sandbox.stored();
    assert!(
        ndjson_count >= 150,
        "sample should hold ~200 rows, stored {ndjson_count}"
    );

    // The CSV sample, gzip-compressed, into a fresh sandbox: same number of messages.
    let sandbox = Sandbox::start(&[]);
    let csv_bytes = std::fs::read(samples_dir().join("messages.csv")).unwrap();
    let gz_path = dir.path().join("messages.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).unwrap(),
        flate2::Compression::default(),
    );
    encoder.write_all(&csv_bytes).unwrap();
    encoder.finish().unwrap();
    let output = {
        let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
        command.args(["run", "messages.csv.gz", "--db", "gz.sqlite", "--quiet"]);
        run_bounded(command, LIMIT)
    };
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(sandbox.stored(), ndjson_count);
    assert_eq!(sandbox.stats()["duplicate_external_ids"], 0);

    // Order within each conversation follows sentAt.
    for (conversation, messages) in sandbox.messages() {
        let times: Vec<&str> = messages
            .iter()
            .map(|m| m["sentAt"].as_str().unwrap())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted, "conversation {conversation} out of order");
    }
}

#[test]
fn stdin_input_needs_format_and_then_works() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 40, 4, 2);

    let output = {
        let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
        command.args(["run", "-", "--db", "a.sqlite"]);
        run_bounded(command, LIMIT)
    };
    assert_eq!(code(&output), 2, "{}", text(&output));

    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command
        .args(["run", "-", "--format", "csv", "--db", "b.sqlite", "--quiet"])
        .stdin(std::fs::File::open(dir.path().join("in.csv")).unwrap());
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn bad_rows_are_reported_with_line_and_reason_and_good_rows_still_go() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bad = samples_dir().join("bad_rows.csv");
    let output = run_import(dir.path(), &sandbox, bad.to_str().unwrap(), &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));

    let report = report_rows(dir.path(), "job.sqlite");
    let invalid: Vec<_> = report.iter().filter(|r| r["state"] == "invalid").collect();
    let succeeded: Vec<_> = report
        .iter()
        .filter(|r| r["state"] == "succeeded")
        .collect();
    let duplicate: Vec<_> = report
        .iter()
        .filter(|r| r["state"] == "duplicate")
        .collect();
    assert!(
        invalid.len() >= 10,
        "bad_rows.csv shows every validation error: {invalid:?}"
    );
    assert!(!succeeded.is_empty());
    assert_eq!(duplicate.len(), 1, "{report:?}");
    for row in &invalid {
        assert!(row["line"].parse::<u64>().unwrap() >= 2);
        assert!(!row["errorMessage"].is_empty(), "{row:?}");
    }
    assert_eq!(sandbox.stored(), succeeded.len() as u64);

    // `validate` finds the same rows without network or checkpoint.
    let mut command = importer(dir.path());
    command.args(["validate", bad.to_str().unwrap()]);
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for row in &invalid {
        assert!(
            stdout.contains(&format!("line {}:", row["line"])),
            "validate misses line {}: {stdout}",
            row["line"]
        );
    }
}

#[test]
fn unknown_and_refused_columns_stop_before_anything_is_staged() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.csv"),
        "conversationId,channel,app,sentat,preview\n5f00000000000000000000aa,chat,x,2020-01-01T00:00:00Z,hi\n",
    )
    .unwrap();
    let output = run_import(dir.path(), &sandbox, "typo.csv", &[]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sentat"), "{stderr}");
    assert!(stderr.contains("sentAt"), "suggestion expected: {stderr}");

    std::fs::write(
        dir.path().join("direction.csv"),
        "conversationId,channel,app,sentAt,directionType\n5f00000000000000000000aa,chat,x,2020-01-01T00:00:00Z,initial\n",
    )
    .unwrap();
    let output = {
        let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
        command.args([
            "run",
            "direction.csv",
            "--db",
            "d.sqlite",
            "--ignore-unknown",
        ]);
        run_bounded(command, LIMIT)
    };
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("directionType"));
    assert_eq!(sandbox.stats()["requests_total"], 0, "nothing may be sent");

    // With --ignore-unknown the typo column is dropped and the row goes.
    std::fs::write(
        dir.path().join("extra.csv"),
        "conversationId,channel,app,sentAt,preview,legacy_ticket\n5f00000000000000000000aa,chat,x,2020-01-01T00:00:00Z,hi,123\n",
    )
    .unwrap();
    let output = {
        let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
        command.args([
            "run",
            "extra.csv",
            "--db",
            "e.sqlite",
            "--ignore-unknown",
            "--quiet",
        ]);
        run_bounded(command, LIMIT)
    };
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(sandbox.stored(), 1);
}

#[test]
fn run_refuses_a_checkpoint_that_holds_a_job() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 10, 2, 3);
    let first = run_import(dir.path(), &sandbox, "in.csv", &[]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    let requests_before = sandbox.stats()["requests_total"].clone();

    let second = run_import(dir.path(), &sandbox, "in.csv", &[]);
    assert_eq!(code(&second), 2, "{}", text(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("resume"), "{stderr}");
    assert_eq!(
        sandbox.stats()["requests_total"],
        requests_before,
        "nothing sent"
    );
    assert_eq!(sandbox.stored(), 10);
}

#[test]
fn configuration_errors_exit_2_and_send_nothing() {
    // Every command points at a live sandbox, so "nothing sent" is counted, not assumed.
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 5, 1, 4);
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (vec!["run", "in.csv"], None, "KUSTOMER_API_KEY"),
        (vec!["run", "missing.csv"], Some("k"), "does not exist"),
        (
            vec!["run", "in.csv", "--base-url", "http://example.com"],
            Some("k"),
            "https",
        ),
        (
            vec!["run", "in.csv", "--timezone", "Mars/Base"],
            Some("k"),
            "time zone",
        ),
        (
            vec!["run", "in.csv", "--created-by", "bob"],
            Some("k"),
            "user id",
        ),
        (
            vec!["run", "in.csv", "--imported-at", "yesterday"],
            Some("k"),
            "RFC 3339",
        ),
        (
            vec!["resume", "--db", "none.sqlite"],
            Some("k"),
            "no checkpoint",
        ),
        (vec!["frobnicate"], None, "unrecognized subcommand"),
    ];
    for (args, key, needle) in cases {
        let mut command = importer(dir.path());
        command.env("KUSTOMER_BASE_URL", &sandbox.url).args(&args);
        if let Some(key) = key {
            command.env("KUSTOMER_API_KEY", key);
        }
        let output = run_bounded(command, LIMIT);
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(needle),
            "{args:?} should mention {needle:?}: {}",
            text(&output)
        );
    }
    assert!(!dir.path().join("kustomer-import.sqlite").exists());
    assert_eq!(sandbox.stat(&["requests_total"]), 0, "{}", sandbox.stats());
}

#[test]
fn dry_run_sends_nothing_and_shows_a_request() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 20, 2, 5);
    let output = run_import(dir.path(), &sandbox, "in.csv", &["--dry-run"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("would send 20 messages"), "{stdout}");
    assert!(stdout.contains("POST "), "{stdout}");
    assert!(stdout.contains("\"importedAt\""), "{stdout}");
    assert_eq!(sandbox.stats()["requests_total"], 0);
    assert!(
        !dir.path().join("job.sqlite").exists(),
        "dry run leaves no checkpoint"
    );
}

#[test]
fn non_admin_key_with_audit_fields_is_refused_before_sending() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 10, 2, 6);
    let mut command = importer_for(dir.path(), &sandbox, AGENT_KEY);
    command.args(["run", "in.csv", "--db", "job.sqlite", "--quiet"]);
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("org.admin"));
    assert_eq!(sandbox.stored(), 0);

    // Without audit fields the same key may import.
    let mut command = importer_for(dir.path(), &sandbox, AGENT_KEY);
    command.args([
        "run",
        "in.csv",
        "--db",
        "job2.sqlite",
        "--quiet",
        "--no-audit-fields",
    ]);
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(sandbox.stored(), 10);
}

#[test]
fn demo_runs_from_any_directory_without_key_or_network() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = importer(dir.path());
    command.arg("demo");
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("succeeded"), "{stdout}");
}

#[test]
fn status_and_report_agree() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bad = samples_dir().join("bad_rows.csv");
    let output = run_import(dir.path(), &sandbox, bad.to_str().unwrap(), &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let status = status_json(dir.path(), "job.sqlite");
    let report = report_rows(dir.path(), "job.sqlite");
    for state in [
        "succeeded",
        "failed",
        "invalid",
        "duplicate",
        "pending",
        "sending",
    ] {
        let in_report = report.iter().filter(|r| r["state"] == state).count() as u64;
        assert_eq!(
            status["counts"][state].as_u64().unwrap(),
            in_report,
            "{state}: {status}"
        );
    }
}
