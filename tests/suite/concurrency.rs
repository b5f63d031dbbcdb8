//! Adaptive concurrency under faults (issue 15): drops and 500s say nothing about load and never
//! cut the concurrency below what the budget needs at the latency observed, while 429s and 503s
//! carrying `Retry-After` still cut it. Read from the run's summary line, which states the limit
//! the run ended with, the cuts by cause and the lowest a cut left.

use crate::common::*;

/// The run's `concurrency ended at N of C (...)` summary: N and the text in parentheses.
fn concurrency_summary(output: &std::process::Output) -> (usize, String) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stderr
        .split("concurrency ended at ")
        .nth(1)
        .unwrap_or_else(|| panic!("no concurrency summary:\n{}", text(output)));
    let limit = summary
        .split_whitespace()
        .next()
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {summary:?}"));
    let detail = summary
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside.to_string())
        .unwrap_or_else(|| panic!("no detail in {summary:?}"));
    (limit, detail)
}

/// The lowest limit a cut left, from `cut N times: ...; lowest L`.
fn lowest_after_cut(detail: &str) -> usize {
    detail
        .rsplit("lowest ")
        .next()
        .and_then(|word| word.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lowest in {detail:?}"))
}

/// Imports `rows` rows in `conversations` at `max_rpm` with adaptive concurrency; every row
/// must be stored exactly once, in order.
fn import_all(
    sandbox: &Sandbox,
    rows: usize,
    conversations: usize,
    max_rpm: &str,
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), rows, conversations, 15);
    let output = run_job(
        dir.path(),
        sandbox,
        ADMIN_KEY,
        "in.csv",
        &["--max-rpm", max_rpm, "--concurrency", "auto"],
    );
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(sandbox, &expected);
    output
}

#[test]
fn drops_and_500s_never_cut_the_concurrency_below_what_the_budget_needs() {
    // 100 ms of latency at 100 requests a second: the budget needs ceil(100 x 0.1) + 1 = 11
    // requests in flight (more, as the observed p50 is a little above 100 ms).
    let sandbox = Sandbox::start(&[
        "--latency-ms",
        "100",
        "--error-500",
        "0.1",
        "--drop-before-store",
        "0.1",
        "--store-then-error",
        "0.05",
        "--seed",
        "15",
    ]);
    let output = import_all(&sandbox, 400, 40, "6000");
    for fault in ["error_500", "drop_before_store", "store_then_error"] {
        assert!(
            sandbox.stat(&["faults_injected", fault]) > 5,
            "{fault} should have fired: {}",
            sandbox.stats()
        );
    }
    let (limit, detail) = concurrency_summary(&output);
    assert!(
        limit >= 11,
        "ended at {limit} ({detail}), below the budget's need\n{}",
        text(&output)
    );
    assert!(
        !detail.contains("on 429") && !detail.contains("on 503"),
        "{detail}"
    );
    if detail != "never cut" {
        // Only a latency surge of a loaded machine may cut, and never below the need.
        assert!(lowest_after_cut(&detail) >= 11, "{detail}");
    }
}

#[test]
fn rate_limits_and_503s_with_retry_after_still_cut_it() {
    // No added latency: at 20 requests a second the budget needs 2 in flight, fewer than the 4
    // the limit starts at, so a cut shows.
    for (flags, fault, cause) in [
        (
            ["--error-429", "0.3", "--retry-after-value", "0"].as_slice(),
            "injected_429",
            "on 429",
        ),
        (
            [
                "--error-503",
                "0.3",
                "--retry-after-on-503",
                "--retry-after-value",
                "0",
            ]
            .as_slice(),
            "error_503",
            "on 503 Retry-After",
        ),
    ] {
        let sandbox = Sandbox::start(&[flags, &["--seed", "15"]].concat());
        let output = import_all(&sandbox, 80, 8, "1200");
        let fired = match fault {
            "injected_429" => sandbox.stat(&["injected_429"]),
            _ => sandbox.stat(&["faults_injected", fault]),
        };
        assert!(fired > 5, "{fault} should have fired: {}", sandbox.stats());
        let (_, detail) = concurrency_summary(&output);
        assert!(detail.contains(cause), "{cause}: {detail}");
        assert!(lowest_after_cut(&detail) < 4, "{cause}: {detail}");
    }
}
