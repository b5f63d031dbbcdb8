//! Unit tests of the report module.

use super::summary::summarize;
use super::*;
use crate::checkpoint::test_support::{checkpoint_with_job, invalid, stage, valid};
use crate::checkpoint::{RowResult, RowState, StateCounts};
use crate::text::thousands;

const T0: i64 = 1_000_000;

fn result(
    state: RowState,
    code: Option<&str>,
    message: &str,
    retryable: bool,
    at_ms: i64,
) -> RowResult {
    RowResult {
        state,
        message_id: (state == RowState::Succeeded).then(|| "0123456789abcdef01234567".to_string()),
        http_status: Some(match code {
            Some("http_503") => 503,
            Some(_) => 400,
            None => 201,
        }),
        error_code: code.map(str::to_string),
        error_message: code.map(|_| message.to_string()),
        retryable,
        latency_ms: Some(5),
        budget_wait_ms: Some(40),
        at_ms,
    }
}

/// c1: lines 8 (earliest), 1 (fails, retryable), 2, 3 — so 2 and 3 are held;
/// c2: lines 4 (succeeds), 5 (fails for good); line 6 invalid; line 7 duplicates line 4.
async fn sample_checkpoint() -> (tempfile::TempDir, Checkpoint) {
    let (dir, mut cp) = checkpoint_with_job();
    stage(
        &mut cp,
        vec![
            valid(1, "c1", "e1", 10),
            valid(2, "c1", "e2", 20),
            valid(3, "c1", "e3", 30),
            valid(4, "c2", "e4", 10),
            valid(5, "c2", "e5", 20),
            invalid(6, "sentAt: not a date"),
            valid(7, "c2", "e4", 30),
            valid(8, "c1", "e8", 5),
        ],
    );
    let writer = cp.writer().unwrap();
    writer.mark_sending(1, T0).await.unwrap();
    writer
        .record(
            1,
            result(
                RowState::Failed,
                Some("http_503"),
                "unavailable",
                true,
                T0 + 10_000,
            ),
        )
        .unwrap();
    writer.mark_sending(4, T0 + 5_000).await.unwrap();
    writer
        .record(4, result(RowState::Succeeded, None, "", false, T0 + 20_000))
        .unwrap();
    writer.mark_sending(5, T0 + 6_000).await.unwrap();
    writer
        .record(
            5,
            result(
                RowState::Failed,
                Some("http_400"),
                "bad, \"quoted\"",
                false,
                T0 + 30_000,
            ),
        )
        .unwrap();
    writer.close().unwrap();
    (dir, cp)
}

#[tokio::test]
async fn status_counts_held_rates_and_errors() {
    let (_dir, cp) = sample_checkpoint().await;
    let reader = Checkpoint::open_read_only(cp.path()).unwrap();
    let summary = reader
        .read_consistent(|r| summarize(r, T0 + 60_000, true))
        .unwrap();
    assert_eq!(summary.counts, reader.counts().unwrap());
    assert_eq!(
        (
            summary.counts.pending,
            summary.counts.succeeded,
            summary.counts.failed
        ),
        (3, 1, 2)
    );
    assert_eq!((summary.counts.invalid, summary.counts.duplicate), (1, 1));
    assert_eq!(summary.total, 8);
    assert_eq!(
        summary.held, 2,
        "lines 2 and 3 wait behind line 1; line 8 comes first"
    );
    assert_eq!(summary.remaining, 3);
    assert_eq!(
        summary.staging,
        StagingProgress {
            staged_through_line: 8,
            complete: true
        }
    );
    assert_eq!(
        summary.first_attempt_at.as_deref(),
        Some("1970-01-01T00:16:40.000Z")
    );
    assert_eq!(
        summary.last_result_at.as_deref(),
        Some("1970-01-01T00:17:10.000Z")
    );
    assert_eq!(summary.elapsed_seconds, Some(30.0));
    assert_eq!(summary.finished, 3);
    assert_eq!(summary.average_rate_per_second, Some(0.1));
    assert_eq!(summary.run_state, RunState::Live);
    assert_eq!(summary.last_minute_rate_per_second, Some(3.0 / 60.0));
    assert_eq!(summary.rate_window_seconds, Some(60.0));
    assert_eq!(summary.eta_seconds, Some(60.0));
    assert_eq!(summary.retryable_failed, 1);
    let latency = summary.latency_ms.unwrap();
    assert_eq!((latency.count, latency.p50, latency.max), (3, 5, 5));
    let wait = summary.budget_wait_ms.unwrap();
    assert_eq!(
        (wait.count, wait.p50),
        (3, 40),
        "budget wait kept apart from latency"
    );
    let codes: Vec<_> = summary
        .top_errors
        .iter()
        .map(|g| {
            (
                g.error_code.clone().unwrap(),
                g.count,
                g.example_lines.clone(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ("duplicate_external_id".to_string(), 1, vec![7]),
            ("http_400".to_string(), 1, vec![5]),
            ("http_503".to_string(), 1, vec![1]),
            ("invalid_row".to_string(), 1, vec![6]),
        ]
    );

    // Right after the last result the work of the last minute began 30 s ago: the rate is
    // over those 30 s, not over a minute the run was not there for.
    let young = reader
        .read_consistent(|r| summarize(r, T0 + 30_000, true))
        .unwrap();
    assert_eq!(young.rate_window_seconds, Some(30.0));
    assert_eq!(young.last_minute_rate_per_second, Some(0.1));
    assert_eq!(young.eta_seconds, Some(30.0));

    // An hour later nothing finished in the last minute: no rate, no ETA.
    let later = reader
        .read_consistent(|r| summarize(r, T0 + 3_600_000, true))
        .unwrap();
    assert_eq!(later.last_minute_rate_per_second, Some(0.0));
    assert_eq!(later.eta_seconds, None);

    // Nothing running: no current rate and no ETA, and the text says why.
    let stopped = reader
        .read_consistent(|r| summarize(r, T0 + 60_000, false))
        .unwrap();
    assert_eq!(stopped.run_state, RunState::Stopped);
    assert_eq!(stopped.last_minute_rate_per_second, None);
    assert_eq!(stopped.eta_seconds, None);
    let text = render_status_text(&stopped, Style::default());
    assert!(text.contains("— stopped, 3 rows left"), "{text}");
    assert!(!text.contains("rows/s (over"), "{text}");
}

#[tokio::test]
async fn csv_to_a_terminal_escapes_what_a_file_keeps() {
    let (_dir, mut cp) = checkpoint_with_job();
    stage(&mut cp, vec![invalid(1, "bad \u{1b}[2J\u{202e}(line 5)")]);
    let csv_of = |escape_csv| {
        let mut out = Vec::new();
        let style = Style {
            escape_csv,
            ..Style::default()
        };
        write_report_styled(&cp, ReportFormat::Csv, &mut out, style).unwrap();
        String::from_utf8(out).unwrap()
    };
    let terminal = csv_of(true);
    assert!(
        terminal.contains(r"bad \u{1b}[2J\u{202e}(line 5)"),
        "{terminal}"
    );
    assert!(!terminal.contains('\u{1b}') && !terminal.contains('\u{202e}'));
    assert!(csv_of(false).contains("bad \u{1b}[2J\u{202e}(line 5)"));
    let mut text = Vec::new();
    write_report(&cp, ReportFormat::Text, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{202e}'),
        "{text}"
    );
}

#[tokio::test]
async fn error_groups_count_rows_and_cap_examples() {
    let (_dir, mut cp) = checkpoint_with_job();
    stage(
        &mut cp,
        (1..=12).map(|l| invalid(l, "sentAt: missing")).collect(),
    );
    let summary = status(&cp).unwrap();
    assert_eq!(summary.top_errors.len(), 1);
    assert_eq!(summary.top_errors[0].count, 12);
    assert_eq!(summary.top_errors[0].example_lines, vec![1, 2, 3, 4, 5]);
    assert_eq!(summary.run_state, RunState::Complete, "nothing to send");
    assert_eq!(summary.eta_seconds, None);
}

#[tokio::test]
async fn csv_has_every_row_in_line_order_and_agrees_with_counts() {
    let (_dir, cp) = sample_checkpoint().await;
    let reader = Checkpoint::open_read_only(cp.path()).unwrap();
    let mut out = Vec::new();
    write_report(&reader, ReportFormat::Csv, &mut out).unwrap();
    let mut csv = ::csv::Reader::from_reader(out.as_slice());
    assert_eq!(csv.headers().unwrap(), CSV_HEADER.as_slice());
    let records: Vec<::csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let lines: Vec<&str> = records.iter().map(|r| &r[0]).collect();
    assert_eq!(lines, vec!["1", "2", "3", "4", "5", "6", "7", "8"]);

    let mut from_csv = StateCounts::default();
    for record in &records {
        match RowState::parse(&record[3]).unwrap() {
            RowState::Pending => from_csv.pending += 1,
            RowState::Sending => from_csv.sending += 1,
            RowState::Succeeded => from_csv.succeeded += 1,
            RowState::Failed => from_csv.failed += 1,
            RowState::Invalid => from_csv.invalid += 1,
            RowState::Duplicate => from_csv.duplicate += 1,
        }
    }
    assert_eq!(from_csv, reader.counts().unwrap());

    let row4: Vec<&str> = records[3].iter().collect();
    assert_eq!(
        row4,
        vec![
            "4",
            "e4",
            "c2",
            "succeeded",
            "0123456789abcdef01234567",
            "201",
            "",
            "",
            "1",
            "1970-01-01T00:16:45.000Z",
            "1970-01-01T00:16:45.000Z",
            "",
            "",
            "",
            ""
        ]
    );
    assert_eq!(&records[4][7], "bad, \"quoted\"", "quoting round-trips");
    assert_eq!(&records[5][3], "invalid");
    assert_eq!(&records[5][7], "sentAt: not a date");
    assert_eq!(&records[6][7], "externalId e4 already used by line 4");
    assert_eq!(&records[1][8], "0");
    assert_eq!(&records[1][9], "");
}

#[tokio::test]
async fn json_is_one_object_with_documented_fields() {
    let (_dir, cp) = sample_checkpoint().await;
    let mut out = Vec::new();
    write_report(&cp, ReportFormat::Json, &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for field in [
        "checkpoint",
        "generated_at",
        "job",
        "counts",
        "total",
        "held",
        "remaining",
        "staging",
        "first_attempt_at",
        "last_result_at",
        "elapsed_seconds",
        "finished",
        "average_rate_per_second",
        "run_state",
        "retryable_failed",
        "rate_window_seconds",
        "last_minute_rate_per_second",
        "eta_seconds",
        "latency_ms",
        "budget_wait_ms",
        "top_errors",
        "errors",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    assert_eq!(json["counts"]["pending"], 3);
    assert_eq!(json["total"], 8);
    assert_eq!(json["held"], 2);
    assert_eq!(json["job"]["input_display"], "messages.csv");
    assert_eq!(json["job"]["format"], "csv");
    assert_eq!(json["job"]["settings"]["concurrency"], 8);
    assert_eq!(json["run_state"], "stopped");
    assert_eq!(json["budget_wait_ms"]["p50"], 40);
    assert_eq!(json["staging"]["complete"], true);
    assert_eq!(json["errors"].as_array().unwrap().len(), 4);
    assert_eq!(json["errors"][0]["error_code"], "duplicate_external_id");
    assert_eq!(json["errors"][0]["example_lines"], serde_json::json!([7]));
}

#[tokio::test]
async fn text_report_shows_summary_errors_and_next_steps() {
    let (_dir, cp) = sample_checkpoint().await;
    let mut out = Vec::new();
    write_report(&cp, ReportFormat::Text, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("messages.csv (csv, gzip, 1,234 bytes)"),
        "{text}"
    );
    assert!(text.contains("2 held behind a retryable failure"), "{text}");
    assert!(text.contains("Errors by code and message"), "{text}");
    assert!(text.contains("http_503  unavailable"), "{text}");
    assert!(text.contains("line 1"), "{text}");
    assert!(text.contains("kustomer-import resume --db"), "{text}");
    assert!(text.contains("--format csv"), "{text}");
    let rows_line = text.lines().find(|l| l.contains("succeeded")).unwrap();
    assert!(rows_line.contains(" 1 "), "{rows_line}");
}

#[tokio::test]
async fn status_works_while_a_writer_holds_a_transaction() {
    let (_dir, cp) = sample_checkpoint().await;
    let writer = rusqlite::Connection::open(cp.path()).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; UPDATE row SET state = 'sending' WHERE line = 2;")
        .unwrap();
    let reader = Checkpoint::open_read_only(cp.path()).unwrap();
    let started = std::time::Instant::now();
    let summary = status(&reader).unwrap();
    let mut out = Vec::new();
    write_report(&reader, ReportFormat::Csv, &mut out).unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "reader waited"
    );
    assert_eq!(
        summary.counts.sending, 0,
        "uncommitted writes are invisible"
    );
    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(status(&reader).unwrap().counts.sending, 1);
}

#[tokio::test]
async fn report_queries_aggregate_results_errors_and_rejects() {
    let (_dir, cp) = sample_checkpoint().await;
    let reader = Checkpoint::open_read_only(cp.path()).unwrap();
    assert_eq!(reader.first_row_offset().unwrap(), Some(100));
    let mut rejected = Vec::new();
    reader
        .for_each_rejected_row(|row| {
            rejected.push((row.line, row.byte_offset, row.state));
            Ok::<(), CheckpointError>(())
        })
        .unwrap();
    assert_eq!(
        rejected,
        vec![(5, 500, RowState::Failed), (6, 600, RowState::Invalid)],
        "the retryable failure (1) and the duplicate (7) are not rejects"
    );
    assert_eq!(reader.retryable_failed_count().unwrap(), 1);

    assert_eq!(
        reader.result_span().unwrap(),
        Some((T0 + 10_000, T0 + 30_000))
    );
    let buckets: Vec<(u64, u64, u64)> = reader
        .result_buckets(T0, 10_000)
        .unwrap()
        .iter()
        .map(|b| (b.index, b.succeeded, b.failed))
        .collect();
    assert_eq!(buckets, vec![(1, 0, 1), (2, 1, 0), (3, 0, 1)]);

    let mut latencies = Vec::new();
    reader
        .for_each_latency(|value| {
            latencies.push((value.latency_ms, value.count));
            Ok::<(), CheckpointError>(())
        })
        .unwrap();
    assert_eq!(latencies, vec![(5, 3)]);

    let classes: Vec<(String, RowState, u64)> = reader
        .error_classes(12, 3, 5)
        .unwrap()
        .into_iter()
        .map(|c| (c.error_code.unwrap(), c.state, c.count))
        .collect();
    assert_eq!(
        classes,
        vec![
            ("duplicate_external_id".to_string(), RowState::Duplicate, 1),
            ("http_400".to_string(), RowState::Failed, 1),
            ("http_503".to_string(), RowState::Failed, 1),
            ("invalid_row".to_string(), RowState::Invalid, 1),
        ]
    );
    assert_eq!(reader.error_classes(1, 3, 5).unwrap().len(), 1);

    let slowest: Vec<(String, u64, u64, u64, i64)> = reader
        .slowest_conversations(10)
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.conversation_id.clone(),
                c.rows,
                c.succeeded,
                c.failed,
                c.duration_ms(),
            )
        })
        .collect();
    assert_eq!(
        slowest,
        vec![
            ("c2".to_string(), 2, 1, 1, 25_000),
            ("c1".to_string(), 4, 0, 1, 10_000),
        ]
    );
}

#[tokio::test]
async fn error_classes_keep_top_messages_with_examples() {
    let (_dir, mut cp) = checkpoint_with_job();
    let mut rows: Vec<_> = (1..=7).map(|l| invalid(l, "sentAt: missing")).collect();
    rows.extend((8..=10).map(|l| invalid(l, "channel: unknown")));
    rows.push(invalid(11, "app: empty"));
    rows.push(invalid(12, "app: empty"));
    stage(&mut cp, rows);
    let classes = cp.error_classes(5, 2, 3).unwrap();
    assert_eq!(classes.len(), 1);
    let class = &classes[0];
    assert_eq!((class.count, class.distinct_messages), (12, 3));
    let messages: Vec<(&str, u64, Vec<u64>)> = class
        .top_messages
        .iter()
        .map(|m| {
            (
                m.error_message.as_deref().unwrap(),
                m.count,
                m.example_lines.clone(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            ("sentAt: missing", 7, vec![1, 2, 3]),
            ("channel: unknown", 3, vec![8, 9, 10]),
        ]
    );
}

#[tokio::test]
async fn html_report_is_self_contained_escaped_and_agrees_with_json() {
    let (_dir, cp) = sample_checkpoint().await;
    let mut out = Vec::new();
    write_report(&cp, ReportFormat::Html, &mut out).unwrap();
    let html = String::from_utf8(out).unwrap();
    let metric = |name: &str| -> String {
        let needle = format!("data-metric=\"{name}\" data-value=\"");
        let start = html
            .find(&needle)
            .unwrap_or_else(|| panic!("{name} missing"))
            + needle.len();
        html[start..start + html[start..].find('"').unwrap()].to_string()
    };
    let mut json = Vec::new();
    write_report(&cp, ReportFormat::Json, &mut json).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    for state in ["succeeded", "failed", "invalid", "duplicate"] {
        assert_eq!(metric(state), json["counts"][state].to_string(), "{state}");
    }
    for field in ["total", "held", "remaining"] {
        assert_eq!(metric(field), json[field].to_string(), "{field}");
    }
    assert_eq!(metric("elapsed_seconds"), "30");
    assert_eq!(metric("latency_p99_ms"), "5");
    assert_eq!(
        metric("budget_wait_p50_ms"),
        "40",
        "the wait for the budget is shown apart from the latency"
    );
    assert_eq!(
        metric("bucket_ms"),
        "500",
        "20 s of results in at most 60 bars"
    );
    assert!(html.contains("bad, &quot;quoted&quot;"), "message escaped");
    assert!(!html.contains("<script"), "no scripts");
    for external in [
        "http://",
        "https://",
        "url(",
        "@import",
        "<link rel=\"stylesheet",
    ] {
        let allowed = [
            "http://www.w3.org/2000/svg",
            "https://acme.api.kustomerapp.com",
        ];
        let mut rest = html.as_str();
        while let Some(at) = rest.find(external) {
            let tail = &rest[at..];
            assert!(
                allowed.iter().any(|ok| tail.starts_with(ok)),
                "external reference at {}",
                &tail[..tail.len().min(60)]
            );
            rest = &rest[at + external.len()..];
        }
    }
    assert!(html.contains("--retry-failed"), "next steps name the retry");
    assert!(html.contains("--rejects"), "next steps name the rejects");
}

#[test]
fn status_without_a_job_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cp.db");
    drop(Checkpoint::open(&path).unwrap());
    let reader = Checkpoint::open_read_only(&path).unwrap();
    assert!(matches!(
        status(&reader),
        Err(ReportError::Checkpoint(CheckpointError::NoJob { .. }))
    ));
}

#[test]
fn number_and_duration_formatting() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000), "1,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

#[test]
fn send_settings_are_described_from_the_stored_object() {
    let stored =
        serde_json::json!({"send": {"max-rpm": 6000, "concurrency": "2", "reserve": null}});
    assert_eq!(
        send_settings_text(&stored),
        "--max-rpm 6000, --concurrency 2 (the rest at their defaults)"
    );
    assert_eq!(
        send_settings_text(&serde_json::json!({"send": {}})),
        "all at their defaults"
    );
    assert_eq!(
        send_settings_text(&serde_json::json!({})),
        "all at their defaults"
    );
    assert!(send_settings_text(&serde_json::json!({"send": 3})).starts_with("unreadable"));
}
