//! `plan` through the binary: the sample's numbers, a job's checkpoint read-only, the budget
//! flags, usage errors, and the line `run` prints when bulk would halve the requests.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn plan(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut command = importer(dir);
    command.arg("plan").args(args);
    run_bounded(command, LIMIT)
}

fn plan_json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = plan(dir, &args);
    assert_eq!(code(&output), 0, "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {}", text(&output)))
}

fn number(plan: &Value, pointer: &str) -> f64 {
    plan.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {plan}"))
}

fn sample() -> String {
    samples_dir()
        .join("messages.csv")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_sample_plan_has_every_field_and_consistent_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_json(dir.path(), &[&sample(), "--max-rpm", "600"]);
    assert_eq!(number(&plan, "/rows"), 200.0);
    assert_eq!(number(&plan, "/single/requests"), 201.0);
    // 600 a minute is 10 a second.
    assert!(
        (number(&plan, "/single/seconds") - 20.1).abs() < 1e-9,
        "{plan}"
    );
    let lower = number(&plan, "/bulk/lower_bound_requests");
    let bulk = number(&plan, "/bulk/requests");
    let single = number(&plan, "/single/requests");
    assert!(lower <= bulk && bulk <= single, "{plan}");
    assert!(
        number(&plan, "/bulk/seconds") >= bulk / 10.0 - 1e-9,
        "{plan}"
    );
    assert!(
        number(&plan, "/bulk/seconds")
            >= number(&plan, "/bulk/critical_path_rounds") * number(&plan, "/bulk/job_seconds")
                - 1e-9
    );
    let conversations = number(&plan, "/conversations");
    assert!((1.0..=200.0).contains(&conversations));
    let max = number(&plan, "/depth/max");
    assert_eq!(number(&plan, "/deepest_conversation/rows"), max);
    assert!(plan["deepest_conversation"]["id"].is_string());
    let (p50, p90, p99) = (
        number(&plan, "/depth/p50"),
        number(&plan, "/depth/p90"),
        number(&plan, "/depth/p99"),
    );
    assert!(p50 <= p90 && p90 <= p99 && p99 <= max, "{plan}");
    assert_eq!(
        number(&plan, "/bulk/rows_by_bulk") + number(&plan, "/bulk/rows_single"),
        200.0
    );
    // The sample's conversations are deep enough for bulk to pay: the lower bound is far below.
    assert!(lower * 2.0 < single, "{plan}");
    assert_eq!(plan["budget"], "600 requests/minute (--max-rpm)");
    assert_eq!(number(&plan, "/staged/valid"), 200.0);
    assert!(plan["bulk"]["rounds_capped"].is_boolean());

    let output = self::plan(dir.path(), &[&sample(), "--max-rpm", "600"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let shown = String::from_utf8_lossy(&output.stdout);
    for line in [
        "rows to send        200 in ",
        "single mode         201 requests, 20s",
        "bulk mode           about ",
        "critical path: ",
        "lower bound         ",
        "budget              600 requests/minute",
    ] {
        assert!(shown.contains(line), "{line:?} in {shown}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "plan leaves no file behind"
    );
}

#[test]
fn the_budget_comes_from_max_rpm_or_a_share_of_the_org_limit() {
    let dir = tempfile::tempdir().unwrap();
    let half = plan_json(dir.path(), &[&sample(), "--org-limit", "1000"]);
    assert_eq!(number(&half, "/rpm"), 500.0);
    assert!((number(&half, "/single/seconds") - 201.0 / (500.0 / 60.0)).abs() < 0.01);
    let fifth = plan_json(
        dir.path(),
        &[&sample(), "--org-limit", "1000", "--budget-share", "0.2"],
    );
    assert_eq!(number(&fifth, "/rpm"), 200.0);
    assert_eq!(
        fifth["budget"],
        "200 requests/minute (20% of the org limit of 1000)"
    );
    let small_jobs = plan_json(
        dir.path(),
        &[&sample(), "--max-rpm", "600", "--batch-size", "2"],
    );
    assert_eq!(number(&small_jobs, "/batch_size"), 2.0);
    let full_jobs = plan_json(dir.path(), &[&sample(), "--max-rpm", "600"]);
    assert!(
        number(&small_jobs, "/bulk/lower_bound_requests")
            >= number(&full_jobs, "/bulk/lower_bound_requests")
    );
    let slow_jobs = plan_json(
        dir.path(),
        &[&sample(), "--max-rpm", "600", "--job-seconds", "0.5"],
    );
    assert_eq!(number(&slow_jobs, "/bulk/job_seconds"), 0.5);
}

#[test]
fn plan_db_counts_the_rows_still_to_send_and_changes_nothing() {
    // The admin key is revoked after 60 creates: the run stops with rows left to send.
    let sandbox = Sandbox::start(&["--revoke-admin-after", "60"]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 300, 12, 21);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 3, "{}", text(&output));
    let status = status_json(dir.path(), "job.sqlite");
    let to_send = status["counts"]["pending"].as_u64().unwrap()
        + status["counts"]["sending"].as_u64().unwrap();
    assert!(to_send > 0 && to_send < 300, "{status}");

    let checkpoint = dir.path().join("job.sqlite");
    let before = std::fs::read(&checkpoint).unwrap();
    let plan = plan_json(dir.path(), &["--db", "job.sqlite", "--max-rpm", "600"]);
    assert_eq!(number(&plan, "/rows"), to_send as f64, "{plan}");
    assert_eq!(number(&plan, "/single/requests"), to_send as f64 + 1.0);
    assert!(number(&plan, "/conversations") <= 12.0);
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before, "read-only");
    assert!(plan["source"]
        .as_str()
        .is_some_and(|source| source.contains("job.sqlite")));
    assert!(plan.get("staged").is_none(), "nothing staged for --db");
}

#[test]
fn plan_db_of_a_job_staged_but_not_sent_agrees_with_plan_of_its_input() {
    // The agent key lacks org.admin: the run stages everything, then refuses to send.
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let output = run_job(dir.path(), &sandbox, AGENT_KEY, &sample(), &[]);
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert_eq!(sandbox.stat(&["creates"]), 0);
    let from_db = plan_json(dir.path(), &["--db", "job.sqlite", "--org-limit", "1000"]);
    let from_input = plan_json(dir.path(), &[&sample(), "--org-limit", "1000"]);
    for field in [
        "rows",
        "conversations",
        "depth",
        "deepest_conversation",
        "single",
        "bulk",
    ] {
        assert_eq!(from_db[field], from_input[field], "{field}");
    }
    assert_eq!(number(&from_db, "/rows"), 200.0);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample();
    let cases: [&[&str]; 12] = [
        &[&sample],
        &[&sample, "--max-rpm", "600", "--org-limit", "1000"],
        &[&sample, "--max-rpm", "600", "--budget-share", "0.5"],
        &["--max-rpm", "600"],
        &[&sample, "--db", "job.sqlite", "--max-rpm", "600"],
        &[&sample, "--max-rpm", "0"],
        &[&sample, "--org-limit", "1000", "--budget-share", "1.5"],
        &[&sample, "--max-rpm", "600", "--batch-size", "0"],
        &[&sample, "--max-rpm", "600", "--batch-size", "101"],
        &[&sample, "--max-rpm", "600", "--job-seconds", "-1"],
        &["missing.csv", "--max-rpm", "600"],
        &["--db", "missing.sqlite", "--max-rpm", "600"],
    ];
    for args in cases {
        let output = plan(dir.path(), args);
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output));
        assert!(output.stdout.is_empty(), "{args:?}: {}", text(&output));
    }
    let output = plan(dir.path(), &["-", "--max-rpm", "600"]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no checkpoint was created"
    );
}

#[test]
fn run_says_when_bulk_would_halve_the_requests_unless_quiet() {
    let hint = "bulk mode would need about";
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command
        .args(["run", &sample(), "--db", "job.sqlite"])
        .args(send_flags(&[]));
    let output = run_bounded(command, COMMAND_LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains(hint))
        .unwrap_or_else(|| panic!("no hint in {stderr}"));
    assert!(line.contains("instead of 201"), "{line}");
    assert!(
        line.contains("kustomer-import plan --db job.sqlite"),
        "{line}"
    );

    let quiet_sandbox = Sandbox::start(&[]);
    let quiet_dir = tempfile::tempdir().unwrap();
    let output = run_job(quiet_dir.path(), &quiet_sandbox, ADMIN_KEY, &sample(), &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(hint));
}

#[test]
fn run_says_nothing_when_bulk_would_not_halve_the_requests() {
    // One conversation: bulk cannot beat single creates.
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 30, 1, 5);
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command
        .args(["run", "in.csv", "--db", "job.sqlite"])
        .args(send_flags(&[]));
    let output = run_bounded(command, COMMAND_LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("bulk mode would need"),
        "{}",
        text(&output)
    );
}
