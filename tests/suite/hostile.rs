//! A hostile API: every fault at once, a tight org limit, silent audit damage, an error budget.
//! Each ends with nothing lost, nothing duplicated and order kept, or with the documented exit.

use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = COMMAND_LIMIT;

fn run(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    key: &str,
    extra: &[&str],
) -> std::process::Output {
    run_job(dir, sandbox, key, "in.csv", extra)
}

fn resume(dir: &std::path::Path, sandbox: &Sandbox, extra: &[&str]) -> std::process::Output {
    resume_job(dir, sandbox, ADMIN_KEY, extra)
}

#[test]
fn every_fault_at_once_still_stores_each_row_exactly_once_in_order() {
    let sandbox = Sandbox::start(&[
        "--latency-ms",
        "2",
        "--jitter-ms",
        "2",
        "--error-500",
        "0.04",
        "--error-503",
        "0.04",
        "--drop-before-store",
        "0.04",
        "--store-then-drop",
        "0.04",
        "--org-limit",
        "300",
        "--window-secs",
        "1",
        // The adaptive pacing keeps the import under the org limit, so 429s are injected.
        "--error-429",
        "0.005",
        "--seed",
        "42",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 2_000, 50, 21);
    // A budget above the sandbox's limit: the API's rate headers, not the budget, rein it in.
    let output = run(dir.path(), &sandbox, ADMIN_KEY, &["--max-rpm", "30000"]);
    let mut code_seen = code(&output);
    for _ in 0..5 {
        if code_seen == 0 {
            break;
        }
        assert_eq!(code_seen, 1, "{}", text(&output));
        code_seen = code(&resume(
            dir.path(),
            &sandbox,
            &["--retry-failed", "--max-rpm", "30000"],
        ));
    }
    assert_eq!(code_seen, 0);
    assert_stored_exactly_once_in_order(&sandbox, &expected);

    let stats = sandbox.stats();
    let faults = &stats["faults_injected"];
    for fault in [
        "error_500",
        "error_503",
        "drop_before_store",
        "store_then_drop",
    ] {
        assert!(
            faults[fault].as_u64().unwrap() > 10,
            "{fault} should have fired: {stats}"
        );
    }
    assert!(
        sandbox.stat(&["injected_429"]) >= 3,
        "creates should have been answered 429: {stats}"
    );
    let report = report_rows(dir.path(), "job.sqlite");
    assert!(report.iter().all(|r| r["state"] == "succeeded"));
    assert!(
        report
            .iter()
            .any(|r| r["attempts"].parse::<u32>().unwrap() > 1),
        "some rows needed retries"
    );
}

#[test]
fn a_tight_org_limit_causes_no_storm_of_429s_and_the_run_completes() {
    for flags in [
        &["--org-limit", "40", "--window-secs", "1"][..],
        &[
            "--org-limit",
            "40",
            "--window-secs",
            "1",
            "--no-retry-after",
            "--reset-as-epoch",
        ][..],
    ] {
        let sandbox = Sandbox::start(flags);
        let dir = tempfile::tempdir().unwrap();
        let expected = write_csv(&dir.path().join("in.csv"), 240, 12, 22);
        // Ask for far more than the org allows: the API's answers must rein the job in.
        let output = run(dir.path(), &sandbox, ADMIN_KEY, &["--max-rpm", "60000"]);
        assert_eq!(code(&output), 0, "{flags:?}: {}", text(&output));
        assert_stored_exactly_once_in_order(&sandbox, &expected);
        let stats = sandbox.stats();
        let rate_limited = stats["requests_by_status"]["429"].as_u64().unwrap_or(0);
        let windows = 240 / 40;
        assert!(
            rate_limited <= 3 * windows as u64,
            "{flags:?}: {rate_limited} answers 429 for {windows} windows: {stats}"
        );
    }
}

#[test]
fn the_budget_is_never_exceeded() {
    // Counted by the sandbox in fixed windows of 2 s: 1,200 requests a minute is 40 a window,
    // and the limiter lets a burst of one second's worth (20) go at once, so no window may
    // count more than 60. The org itself is unlimited: only the budget holds the import back.
    let sandbox = Sandbox::start(&["--window-secs", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 120, 6, 23);
    let output = run(dir.path(), &sandbox, ADMIN_KEY, &["--max-rpm", "1200"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    let most = sandbox.stat(&["max_requests_in_a_window"]);
    let total = sandbox.stat(&["requests_total"]);
    assert!(
        most <= 40 + 20,
        "{most} requests in one window: {}",
        sandbox.stats()
    );
    // More than two windows' worth: unpaced, they would have gone in one window.
    assert!(total > 2 * 60, "{total} requests");
}

#[test]
fn hidden_roles_and_overwritten_audit_fields_stop_after_the_first_mismatch() {
    let sandbox = Sandbox::start(&["--hide-roles"]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 200, 10, 24);
    let output = run(dir.path(), &sandbox, AGENT_KEY, &["--concurrency", "1"]);
    assert_eq!(code(&output), 3, "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("roles could not be read"), "{stderr}");
    assert!(stderr.contains("overwrote its audit fields"), "{stderr}");
    assert_eq!(sandbox.stored(), 1, "stopped after the first mismatch");
    let report = report_rows(dir.path(), "job.sqlite");
    let flagged: Vec<_> = report
        .iter()
        .filter(|r| r["errorCode"] == "audit_fields_overwritten")
        .collect();
    assert_eq!(flagged.len(), 1, "{report:?}");
    assert_eq!(flagged[0]["state"], "succeeded", "the message was created");
    assert_eq!(
        report.iter().filter(|r| r["state"] == "pending").count(),
        199
    );
}

#[test]
fn error_budget_exhaustion_exits_4_and_the_job_resumes() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 30 rows in unknown conversations (404), 60 good ones, interleaved.
    let mut csv = String::from("conversationId,externalId,channel,app,sentAt\n");
    for index in 0..90 {
        let conversation = if index % 3 == 0 {
            format!("dead{:020x}", index)
        } else {
            format!("{:024x}", 0xbeef00 + index % 7)
        };
        csv.push_str(&format!(
            "{conversation},eb-{index},chat,tests,2021-01-01T00:{:02}:00Z\n",
            index % 60
        ));
    }
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    let output = run(
        dir.path(),
        &sandbox,
        ADMIN_KEY,
        &["--max-errors", "5", "--concurrency", "2"],
    );
    assert_eq!(code(&output), 4, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-errors"));
    let status = status_json(dir.path(), "job.sqlite");
    assert!(
        status["counts"]["pending"].as_u64().unwrap() > 0,
        "{status}"
    );
    let failed = status["counts"]["failed"].as_u64().unwrap();
    assert!(
        (6..=8).contains(&failed),
        "stops just past the budget: {status}"
    );

    // A percentage of the rows left to send: about a third of them fail, so 10% trips again.
    let output = resume(dir.path(), &sandbox, &["--max-errors", "10%"]);
    assert_eq!(code(&output), 4, "{}", text(&output));
    // The job keeps the budget its last resume recorded (10%): without flags it trips again.
    let output = resume(dir.path(), &sandbox, &[]);
    assert_eq!(code(&output), 4, "{}", text(&output));
    // A larger budget lets the job finish: exit 1, because rows failed.
    let output = resume(dir.path(), &sandbox, &["--max-errors", "1000"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(status["counts"]["failed"], 30, "{status}");
    assert_eq!(status["counts"]["succeeded"], 60, "{status}");
    assert_eq!(status["counts"]["pending"], 0, "{status}");
    assert_eq!(sandbox.stored(), 60);
}

#[test]
fn check_reports_key_roles_and_budget() {
    let sandbox = Sandbox::start(&["--org-limit", "1000"]);
    let dir = tempfile::tempdir().unwrap();

    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command.arg("check");
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("org.admin"), "{stdout}");
    assert!(stdout.contains("500 requests/minute"), "{stdout}");
    assert!(stdout.contains("ready to import"), "{stdout}");

    let mut command = importer_for(dir.path(), &sandbox, AGENT_KEY);
    command.arg("check");
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("--no-audit-fields"));

    let mut command = importer_for(dir.path(), &sandbox, "not-a-key");
    command.arg("check");
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("401"));
    assert_eq!(sandbox.stored(), 0);
}
