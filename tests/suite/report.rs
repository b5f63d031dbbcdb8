//! The report side, end to end through the compiled binary against a sandbox process: rejects
//! copied byte for byte (CSV, NDJSON, gzip), the HTML page (numbers equal to the JSON report,
//! rendered by headless Chromium without console errors), the CSV report agreeing with `status`
//! and the input, and `status` answering while a run writes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(180);
const CHROMIUM: &str = "/usr/bin/chromium";
/// Conversation ids the sandbox answers 404 for.
const DEAD_CONVERSATION: &str = "dead00000000000000000001";

fn run_import(dir: &Path, sandbox: &Sandbox, input: &str, extra: &[&str]) -> Output {
    let mut command = importer_for(dir, sandbox, ADMIN_KEY);
    command
        .args(["run", input, "--db", "job.sqlite", "--quiet"])
        .args(send_flags(extra));
    run_bounded(command, LIMIT)
}

fn importer_output(dir: &Path, args: &[&str]) -> Output {
    let mut command = importer(dir);
    command.args(args);
    run_bounded(command, LIMIT)
}

/// `samples/bad_rows.csv` plus two rows of a conversation Kustomer does not know: the first is
/// refused with 404, the second failed without being sent. Both are permanent failures.
fn bad_rows_with_unknown_conversation() -> Vec<u8> {
    let mut bytes = std::fs::read(samples_dir().join("bad_rows.csv")).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    let columns =
        String::from_utf8_lossy(&bytes[..bytes.iter().position(|b| *b == b'\n').unwrap()])
            .split(',')
            .count();
    for (id, minute) in [("dead-001", "00"), ("dead-002", "05")] {
        let mut fields = vec![
            DEAD_CONVERSATION.to_string(),
            id.to_string(),
            "zendesk".into(),
            "email".into(),
            "in".into(),
            String::new(),
            format!("2021-06-01T09:{minute}:00Z"),
            String::new(),
            "Unknown conversation.".into(),
        ];
        fields.resize(columns, String::new());
        bytes.extend_from_slice(fields.join(",").as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// The exact bytes of each CSV record (header = line 1), found by the `csv` crate: an oracle
/// independent of the importer's own reader.
fn csv_record_bytes(bytes: &[u8]) -> BTreeMap<u64, Vec<u8>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut starts = Vec::new();
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).unwrap() {
        let position = record.position().unwrap();
        starts.push((position.line(), position.byte() as usize));
    }
    let mut spans = BTreeMap::new();
    for (i, (line, start)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(bytes.len(), |next| next.1);
        spans.insert(*line, bytes[*start..end].to_vec());
    }
    spans
}

/// line → (state, httpStatus) from the CSV report.
fn states_by_line(dir: &Path) -> BTreeMap<u64, (String, String)> {
    report_rows(dir, "job.sqlite")
        .into_iter()
        .map(|row| {
            (
                row["line"].parse().unwrap(),
                (row["state"].clone(), row["httpStatus"].clone()),
            )
        })
        .collect()
}

/// Lines that are rejects: invalid, or failed (these tests inject no transient failure, so
/// every failure is permanent).
fn rejected_lines(states: &BTreeMap<u64, (String, String)>) -> Vec<u64> {
    states
        .iter()
        .filter(|(_, (state, _))| state == "invalid" || state == "failed")
        .map(|(line, _)| *line)
        .collect()
}

fn write_rejects(dir: &Path, file: &str) -> Output {
    importer_output(dir, &["report", "--db", "job.sqlite", "--rejects", file])
}

/// The sidecar's (line, state) pairs, after checking its header.
fn sidecar(dir: &Path, file: &str) -> Vec<(u64, String, String)> {
    let path = dir.join(format!("{file}.errors.csv"));
    let mut reader = csv::Reader::from_path(&path).unwrap();
    assert_eq!(
        reader.headers().unwrap(),
        vec!["line", "state", "errorCode", "reason"]
    );
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            assert!(
                !record[3].is_empty(),
                "every reject has a reason: {record:?}"
            );
            (
                record[0].parse().unwrap(),
                record[1].to_string(),
                record[2].to_string(),
            )
        })
        .collect()
}

/// Imports `input_name` (holding `original` on disk, whose decompressed bytes are `plain`),
/// writes the rejects and checks them against the original rows.
fn check_csv_rejects(input_name: &str, on_disk: &[u8], plain: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    std::fs::write(dir.path().join(input_name), on_disk).unwrap();
    let output = run_import(dir.path(), &sandbox, input_name, &[]);
    assert_eq!(code(&output), 1, "some rows are bad: {}", text(&output));

    let states = states_by_line(dir.path());
    let rejected = rejected_lines(&states);
    let failed: Vec<_> = states
        .values()
        .filter(|(state, _)| state == "failed")
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "both rows of the unknown conversation fail"
    );
    assert!(states.values().any(|(state, _)| state == "duplicate"));

    let output = write_rejects(dir.path(), "rejects.csv");
    assert_eq!(code(&output), 0, "{}", text(&output));
    let invalid = rejected.len() - 2;
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!(
            "wrote {} rejected rows ({invalid} invalid, 2 failed permanently)",
            rejected.len()
        )),
        "{}",
        text(&output)
    );

    let records = csv_record_bytes(plain);
    let mut expected = records[&1].clone();
    for line in &rejected {
        expected.extend_from_slice(&records[line]);
    }
    let written = std::fs::read(dir.path().join("rejects.csv")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&written),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(written, expected, "byte for byte");

    let reasons = sidecar(dir.path(), "rejects.csv");
    let lines: Vec<u64> = reasons.iter().map(|r| r.0).collect();
    assert_eq!(lines, rejected);
    for (line, state, _) in &reasons {
        assert_eq!(&states[line].0, state, "line {line}");
    }
    assert!(
        reasons
            .iter()
            .filter(|(_, state, _)| state == "failed")
            .all(|(_, _, code)| !code.is_empty()),
        "{reasons:?}"
    );

    // Fixable and importable as a new job: validation finds the same invalid rows.
    let output = importer_output(dir.path(), &["validate", "rejects.csv"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().last().unwrap();
    assert!(
        summary.ends_with(&format!("2 valid, {invalid} invalid, 0 duplicate")),
        "{summary}"
    );
}

#[test]
fn csv_rejects_are_the_original_rows_byte_for_byte() {
    let input = bad_rows_with_unknown_conversation();
    check_csv_rejects("bad.csv", &input, &input);
}

#[test]
fn gzip_csv_rejects_are_decompressed_original_rows() {
    let input = bad_rows_with_unknown_conversation();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&input).unwrap();
    let compressed = encoder.finish().unwrap();
    check_csv_rejects("bad.csv.gz", &compressed, &input);
}

#[test]
fn ndjson_rejects_are_the_original_lines_and_a_changed_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    let conversation = "64b7f0c2a1e3d5f7a9c1e3f5";
    let row = |conversation: &str, id: &str, channel: &str, sent_at: &str| {
        format!(
            r#"{{"conversationId":"{conversation}","externalId":"{id}","channel":"{channel}","app":"tests","sentAt":"{sent_at}","preview":"ünïcödé ✓ \"quoted\""}}"#
        )
    };
    let lines = [
        row(conversation, "nd-1", "chat", "2021-06-01T09:00:00Z"),
        row(conversation, "nd-2", "chat", "not a date"),
        String::new(),
        r#"{"conversationId": oops"#.to_string(),
        row(conversation, "nd-4", "chat", "2021-06-01T09:01:00Z"),
        row(conversation, "nd-5", "pigeon", "2021-06-01T09:02:00Z"),
        row(DEAD_CONVERSATION, "nd-6", "chat", "2021-06-01T09:00:00Z"),
        row(conversation, "nd-1", "chat", "2021-06-01T09:03:00Z"),
    ];
    // One line ends in CRLF: the rejects keep it as it was.
    let mut input = String::new();
    for (i, line) in lines.iter().enumerate() {
        input.push_str(line);
        input.push_str(if i == 1 { "\r\n" } else { "\n" });
    }
    std::fs::write(dir.path().join("in.ndjson"), &input).unwrap();
    let output = run_import(dir.path(), &sandbox, "in.ndjson", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));

    let states = states_by_line(dir.path());
    let rejected = rejected_lines(&states);
    assert_eq!(rejected, vec![2, 4, 6, 7], "{states:?}");
    assert_eq!(states[&8].0, "duplicate");

    let output = write_rejects(dir.path(), "rejects.ndjson");
    assert_eq!(code(&output), 0, "{}", text(&output));
    let physical: Vec<&str> = input.split_inclusive('\n').collect();
    let expected: String = rejected
        .iter()
        .map(|line| physical[*line as usize - 1])
        .collect();
    let written = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap();
    assert_eq!(written, expected);
    let reasons = sidecar(dir.path(), "rejects.ndjson");
    assert_eq!(reasons.iter().map(|r| r.0).collect::<Vec<_>>(), rejected);

    // The rejects are spans of the staged file: a different file is refused, not cut up.
    let mut changed = input.clone().into_bytes();
    changed[0] = b' ';
    std::fs::write(dir.path().join("in.ndjson"), &changed).unwrap();
    let output = write_rejects(dir.path(), "again.ndjson");
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("has changed since it was staged"),
        "{}",
        text(&output)
    );
    assert!(!dir.path().join("again.ndjson").exists());
    std::fs::remove_file(dir.path().join("in.ndjson")).unwrap();
    let output = write_rejects(dir.path(), "again.ndjson");
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is gone"),
        "{}",
        text(&output)
    );
}

/// A generated CSV of valid rows followed by rows that are invalid (one with markup in it),
/// duplicate, and of an unknown conversation. Returns how many records (rows) it holds.
fn write_mixed_csv(path: &Path, rows: usize, conversations: usize, seed: u64) -> usize {
    let expected = write_csv(path, rows, conversations, seed);
    let conversation = &expected[0].conversation_id;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    let extra = [
        format!("{conversation},bad-sentat,chat,tests,in,not-a-date,hello,{AGENT_USER}"),
        format!(
            "{conversation},bad-channel,<script>alert(1)</script>,tests,in,2021-06-01T09:00:00Z,hi,{AGENT_USER}"
        ),
        format!("{DEAD_CONVERSATION},dead-1,chat,tests,in,2021-06-01T09:00:00Z,gone,{AGENT_USER}"),
        format!("{DEAD_CONVERSATION},dead-2,chat,tests,in,2021-06-01T09:05:00Z,gone,{AGENT_USER}"),
        format!(
            "{conversation},{},chat,tests,in,2021-06-01T09:00:00Z,again,{AGENT_USER}",
            expected[0].external_id
        ),
    ];
    for line in &extra {
        writeln!(file, "{line}").unwrap();
    }
    rows + extra.len()
}

fn json_report(dir: &Path) -> serde_json::Value {
    let output = importer_output(dir, &["report", "--db", "job.sqlite", "--format", "json"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `data-metric` name → `data-value`, for every metric in the page.
fn html_metrics(html: &str) -> HashMap<String, String> {
    let mut metrics = HashMap::new();
    let mut rest = html;
    while let Some(at) = rest.find("data-metric=\"") {
        rest = &rest[at + "data-metric=\"".len()..];
        let name = &rest[..rest.find('"').unwrap()];
        let tag_end = rest.find('>').unwrap();
        if let Some(value_at) = rest[..tag_end].find("data-value=\"") {
            let value = &rest[value_at + "data-value=\"".len()..];
            let value = &value[..value.find('"').unwrap()];
            metrics.entry(name.to_string()).or_insert(value.to_string());
        }
    }
    metrics
}

/// What headless Chromium reported while loading `page`: the screenshot's bytes, console
/// messages, and the files it loaded.
struct Rendered {
    png: Vec<u8>,
    console: Vec<String>,
    loaded: Vec<String>,
}

fn render_in_chromium(page: &Path) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let png = profile.path().join("shot.png");
    let mut command = std::process::Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,2000",
            "--enable-logging=stderr",
            // Verbose level 1 also logs every file the page loads.
            "--v=1",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null());
    let output = run_bounded(command, Duration::from_secs(90));
    assert!(output.status.success(), "chromium: {}", text(&output));
    let log = String::from_utf8_lossy(&output.stderr);
    let console = log
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let loaded = log
        .lines()
        .filter_map(|line| line.split("FileURLLoader::Start: ").nth(1))
        .map(str::to_string)
        .collect();
    Rendered {
        png: std::fs::read(&png).unwrap_or_default(),
        console,
        loaded,
    }
}

fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing and CI is set: .ci/run installs it"
    );
    eprintln!("\n!!!!! skipped: chromium not installed ({CHROMIUM}); the HTML report was not rendered !!!!!\n");
    false
}

#[test]
fn html_report_numbers_match_json_and_it_renders_cleanly_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&["--error-503", "0.1", "--seed", "7"]);
    write_mixed_csv(&dir.path().join("in.csv"), 240, 8, 11);
    let output = run_import(dir.path(), &sandbox, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));

    let json = json_report(dir.path());
    let page = dir.path().join("report.html");
    let output = importer_output(
        dir.path(),
        &[
            "report",
            "--db",
            "job.sqlite",
            "--format",
            "html",
            "--output",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    let html = std::fs::read_to_string(&page).unwrap();
    let metrics = html_metrics(&html);
    for state in ["succeeded", "failed", "invalid", "duplicate"] {
        assert_eq!(metrics[state], json["counts"][state].to_string(), "{state}");
    }
    for field in ["total", "held", "remaining"] {
        assert_eq!(metrics[field], json[field].to_string(), "{field}");
    }
    let close = |metric: &str, field: &str| {
        let html: f64 = metrics[metric].parse().unwrap();
        let json = json[field].as_f64().unwrap();
        assert!((html - json).abs() < 1e-9, "{metric}: {html} vs {json}");
    };
    close("elapsed_seconds", "elapsed_seconds");
    close("average_rate_per_second", "average_rate_per_second");
    assert_eq!(
        json["counts"]["failed"], 2,
        "the unknown conversation's rows"
    );
    assert!(metrics["latency_count"].parse::<u64>().unwrap() > 0);
    // Error classes add up to the rows with errors.
    let class_rows: u64 = html
        .split("data-metric=\"error_class_rows\"")
        .skip(1)
        .map(|rest| {
            let value = &rest[rest.find("data-value=\"").unwrap() + 12..];
            value[..value.find('"').unwrap()].parse::<u64>().unwrap()
        })
        .sum();
    let counts = &json["counts"];
    assert_eq!(
        class_rows,
        ["failed", "invalid", "duplicate"]
            .iter()
            .map(|s| counts[*s].as_u64().unwrap())
            .sum::<u64>()
    );
    assert!(!html.contains("<script>alert"), "input markup is escaped");
    assert!(!html.contains("<script"), "the page has no scripts");

    if !chromium_available() {
        return;
    }
    let rendered = render_in_chromium(&page);
    assert!(
        rendered.png.starts_with(b"\x89PNG\r\n\x1a\n") && rendered.png.len() > 10_000,
        "screenshot of {} bytes",
        rendered.png.len()
    );
    assert_eq!(rendered.console, Vec::<String>::new(), "console messages");
    let page_url = format!("file://{}", page.display());
    assert_eq!(
        rendered.loaded,
        vec![page_url],
        "the page loads nothing else"
    );

    // The detector itself: a page with a console error and a missing image is caught.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        "<!DOCTYPE html><title>x</title><img src=\"missing.png\"><script>console.error('boom')</script>",
    )
    .unwrap();
    let rendered = render_in_chromium(&broken);
    assert!(
        rendered.console.iter().any(|m| m.contains("boom")),
        "{:?}",
        rendered.console
    );
    assert!(
        rendered
            .loaded
            .iter()
            .any(|url| url.ends_with("missing.png")),
        "{:?}",
        rendered.loaded
    );
}

fn count_states(rows: &[HashMap<String, String>]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row["state"].clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn csv_report_agrees_with_status_and_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    let records = write_mixed_csv(&dir.path().join("in.csv"), 150, 6, 21);
    let output = run_import(dir.path(), &sandbox, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));

    let rows = report_rows(dir.path(), "job.sqlite");
    assert_eq!(rows.len(), records, "one report line per input record");
    let lines: Vec<u64> = rows.iter().map(|r| r["line"].parse().unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "input order");
    assert_eq!(lines[0], 2, "the first record follows the header");

    let status = status_json(dir.path(), "job.sqlite");
    let from_csv = count_states(&rows);
    for state in [
        "pending",
        "sending",
        "succeeded",
        "failed",
        "invalid",
        "duplicate",
    ] {
        assert_eq!(
            from_csv.get(state).copied().unwrap_or(0),
            status["counts"][state].as_u64().unwrap(),
            "{state}"
        );
    }
    assert_eq!(status["total"].as_u64().unwrap(), records as u64);
    assert_eq!(json_report(dir.path())["counts"], status["counts"]);
    assert_eq!(from_csv["succeeded"], sandbox.stored());
}

#[test]
fn status_answers_during_a_run_without_disturbing_it() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&["--latency-ms", "20"]);
    let rows = 600;
    let expected = write_csv(&dir.path().join("in.csv"), rows, 4, 31);
    // The sandbox holds the run's requests once 150 have gone through: the run cannot finish
    // before the samples taken while it is held.
    sandbox.hold_after(150);
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command
        .args(["run", "in.csv", "--db", "job.sqlite", "--quiet"])
        .args(send_flags(&["--concurrency", "4"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut run = command.spawn().unwrap();
    let sample = |samples: &mut Vec<serde_json::Value>| {
        // Bounded by `LIMIT`: a status that waited on the run would fail here.
        let output = importer_output(dir.path(), &["status", "--db", "job.sqlite", "--json"]);
        // Before the job is created there is nothing to read yet.
        if code(&output) == 0 {
            samples.push(serde_json::from_slice(&output.stdout).unwrap());
        }
    };

    let mut samples: Vec<serde_json::Value> = Vec::new();
    // Sampled while the run sends, until the sandbox holds it; then status must still
    // answer, showing the rows in flight.
    wait_until(LIMIT, "requests held", || {
        sample(&mut samples);
        sandbox.stat(&["held"]) >= 1
    });
    for _ in 0..3 {
        sample(&mut samples);
        let held = samples.last().expect("a sample while held");
        assert!(held["counts"]["sending"].as_u64() >= Some(1), "{held}");
    }
    assert!(run.try_wait().unwrap().is_none(), "the run is still going");
    sandbox.release();
    wait_until(LIMIT, "the run to finish", || {
        let done = run.try_wait().unwrap().is_some();
        if !done {
            sample(&mut samples);
        }
        done
    });
    let finished = wait_child(&mut run, LIMIT);
    assert_eq!(finished.code(), Some(0), "the run exits 0");

    let partial: Vec<&serde_json::Value> = samples
        .iter()
        .filter(|s| s["staging"]["complete"] == true && s["remaining"].as_u64() > Some(0))
        .collect();
    assert!(
        partial.len() >= 3,
        "status saw the run in progress only {} times",
        partial.len()
    );
    let mut last_succeeded = 0;
    for sample in &partial {
        let counts = &sample["counts"];
        let sum: u64 = [
            "pending",
            "sending",
            "succeeded",
            "failed",
            "invalid",
            "duplicate",
        ]
        .iter()
        .map(|s| counts[*s].as_u64().unwrap())
        .sum();
        assert_eq!(sum, rows as u64, "{sample}");
        assert_eq!(sample["total"], rows as u64);
        let succeeded = counts["succeeded"].as_u64().unwrap();
        assert!(succeeded >= last_succeeded, "progress never goes back");
        last_succeeded = succeeded;
        assert!(
            counts["sending"].as_u64().unwrap() <= 4,
            "at most --concurrency in flight"
        );
    }
    assert!(
        partial
            .iter()
            .any(|s| s["counts"]["succeeded"].as_u64() > Some(0)
                && s["last_minute_rate_per_second"].as_f64() > Some(0.0)
                && s["eta_seconds"].as_f64().is_some()),
        "a rate and an ETA while sending"
    );

    let last = status_json(dir.path(), "job.sqlite");
    assert_eq!(last["counts"]["succeeded"], rows as u64);
    assert_eq!(last["remaining"], 0);
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}
