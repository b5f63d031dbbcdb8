//! Pacing end to end through the binary, against a sandbox process: every wait a server asks for
//! is read in any of its forms and bounded (issue 7, case 6), and the import never starves the
//! org's live integrations (issue 10). Assertions are about outcomes (rows stored once and in
//! order, the live client never refused), never about how long anything took; commands only
//! have the harness's generous bound.

use crate::common::*;

/// Longer than any test command may run (`COMMAND_LIMIT`): a wait misread as hours or years
/// would hang the run in a clamped pause and fail the test instead of passing by the clamp.
const PAUSE_CEILING_BEYOND_THE_LIMIT: &str = "600";

/// Creates answered 429 at random (seeded), so that the 429 path runs whatever the pacing.
const SOME_429S: &str = "0.1";

fn injected_429s(sandbox: &Sandbox) -> u64 {
    sandbox.stats()["injected_429"]
        .as_u64()
        .expect("injected_429")
}

#[test]
fn reset_in_epoch_milliseconds_without_retry_after() {
    let sandbox = Sandbox::start(&[
        "--org-limit",
        "40",
        "--window-secs",
        "2",
        "--reset-unit",
        "epoch-ms",
        "--no-retry-after",
        "--error-429",
        SOME_429S,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 80, 8, 61);
    let output = run_job(
        dir.path(),
        &sandbox,
        ADMIN_KEY,
        "in.csv",
        &[
            "--max-rpm",
            "6000",
            "--max-pause",
            PAUSE_CEILING_BEYOND_THE_LIMIT,
        ],
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    // Each of those 429s paused every worker until the reset, read from epoch milliseconds.
    assert!(injected_429s(&sandbox) > 0, "{}", sandbox.stats());
}

#[test]
fn absurd_dated_or_garbage_retry_after_is_bounded() {
    for retry_after in [
        "18446744073709551615",
        "Fri, 31 Dec 2100 23:59:59 GMT",
        "in a little while",
    ] {
        let sandbox =
            Sandbox::start(&["--error-429", SOME_429S, "--retry-after-value", retry_after]);
        let dir = tempfile::tempdir().unwrap();
        let expected = write_csv(&dir.path().join("in.csv"), 40, 4, 62);
        // The first two ask for a day or more: only --max-pause brings the run back.
        let output = run_job(
            dir.path(),
            &sandbox,
            ADMIN_KEY,
            "in.csv",
            &["--max-rpm", "6000", "--max-pause", "1"],
        );
        assert_eq!(
            code(&output),
            0,
            "Retry-After {retry_after:?}: {}",
            text(&output)
        );
        assert_stored_exactly_once_in_order(&sandbox, &expected);
        assert!(
            injected_429s(&sandbox) > 0,
            "Retry-After {retry_after:?}: {}",
            sandbox.stats()
        );
    }
}

#[test]
fn the_live_integration_is_never_refused_while_the_import_completes() {
    // Issue 10's scenario with 10 s windows instead of 60 s: an org limited to 1,800 requests a
    // minute (300 per 10 s), a live client spending 60% of it in bursts (24/s, then 12/s), and
    // the import's ceiling at half the limit per minute (900/min, what --budget-share 0.5 gives
    // against a 60 s window).
    let sandbox = Sandbox::start(&[
        "--org-limit",
        "300",
        "--window-secs",
        "10",
        "--live-client",
        "bursts:24/2.5,12/2.5",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 180, 18, 63);
    let output = run_job(
        dir.path(),
        &sandbox,
        ADMIN_KEY,
        "in.csv",
        &["--max-rpm", "900"],
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    let stats = sandbox.stats();
    let live = &stats["live_client"];
    assert!(live["requests"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(
        live["rate_limited"], 0,
        "the live client was refused: {stats}"
    );

    // The summary says how long the import yielded; status shows the others' rate and ours.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("yielded to the org's other clients for"),
        "{stderr}"
    );
    let status = status_json(dir.path(), "job.sqlite");
    let pacing = &status["pacing"];
    assert_eq!(pacing["adaptive"], true, "{status}");
    assert_eq!(pacing["ceiling_per_minute"], 900, "{status}");
    assert_eq!(pacing["org_limit"], 300, "{status}");
    assert_eq!(pacing["reserve"], 30, "{status}");
    assert!(
        pacing["others_per_minute"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    let mut command = importer(dir.path());
    command.args(["status", "--db", "job.sqlite"]);
    let text_status = run_bounded(command, std::time::Duration::from_secs(60));
    let text_status = String::from_utf8_lossy(&text_status.stdout);
    assert!(
        text_status.contains("Pacing") && text_status.contains("others ~"),
        "{text_status}"
    );
}

#[test]
fn without_rate_headers_the_import_paces_as_before_and_says_so_once() {
    let sandbox = Sandbox::start(&["--no-rate-headers"]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 30, 3, 64);
    let output = run_job(
        dir.path(),
        &sandbox,
        ADMIN_KEY,
        "in.csv",
        &["--max-rpm", "6000"],
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr
            .matches("the API sends no x-ratelimit-* headers")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("(no rate-limit headers)"), "{stderr}");
    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(status["pacing"]["rate_headers_missing"], true, "{status}");
    assert_eq!(status["pacing"]["adaptive"], false, "{status}");
}

#[test]
fn a_row_answered_429_more_than_50_times_fails_and_holds_its_conversation() {
    // Every create is answered 429 at once (Retry-After 0: each pause is the importer's
    // shortest), so only the per-row bound ends the run.
    let sandbox = Sandbox::start(&["--error-429", "1", "--retry-after-value", "0"]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 3, 1, 65);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    // The first row: its first send and 50 more, each answered 429; the rows behind it never go.
    assert_eq!(injected_429s(&sandbox), 51, "{}", sandbox.stats());
    assert_eq!(sandbox.stat(&["creates"]), 51, "{}", sandbox.stats());
    assert_eq!(sandbox.stored(), 0);
    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(status["counts"]["failed"], 1, "{status}");
    assert_eq!(status["held"], 2, "{status}");
    let report = report_rows(dir.path(), "job.sqlite");
    let failed: Vec<_> = report.iter().filter(|r| r["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{report:?}");
    assert_eq!(failed[0]["errorCode"], "rate_limited", "{report:?}");
    assert!(
        failed[0]["errorMessage"].contains("429 50 times"),
        "{report:?}"
    );
}

/// `--reserve N` and `--reserve P%`: the import leaves that much of every window to the org's
/// other clients. Counted by the sandbox: with no other client, no window counts more than the
/// limit minus the reserve (plus the probe of one request a second while the import yields),
/// and nothing is refused.
#[test]
fn the_reserve_is_left_free_in_every_window() {
    for (reserve, requests) in [("40", 40u64), ("25%", 25)] {
        let sandbox = Sandbox::start(&["--org-limit", "100", "--window-secs", "2"]);
        let dir = tempfile::tempdir().unwrap();
        let expected = write_csv(&dir.path().join("in.csv"), 150, 15, 66);
        let output = run_job(
            dir.path(),
            &sandbox,
            ADMIN_KEY,
            "in.csv",
            &["--max-rpm", "60000", "--reserve", reserve],
        );
        assert_eq!(code(&output), 0, "{reserve}: {}", text(&output));
        assert_stored_exactly_once_in_order(&sandbox, &expected);
        let status = status_json(dir.path(), "job.sqlite");
        assert_eq!(status["pacing"]["reserve"], requests, "{reserve}: {status}");
        let most = sandbox.stat(&["max_requests_in_a_window"]);
        assert!(
            most <= 100 - requests + 2,
            "{reserve}: {most} requests in one window: {}",
            sandbox.stats()
        );
        assert_eq!(
            sandbox.stat(&["faults_injected", "rate_limited_org"]),
            0,
            "{reserve}: {}",
            sandbox.stats()
        );
    }
}
