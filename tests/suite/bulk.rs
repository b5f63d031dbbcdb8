//! Bulk mode end to end: every row exactly once and in order per conversation, with the
//! sandbox's items processed in random order (its default), jobs finishing out of order, lost
//! answers, item errors, and `kill -9` at moments chosen by events, each followed by `resume`.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// Bulk mode at a budget where jobs pay (the deep-conversation rule of `plan` keeps every row in
/// jobs when they take 0.2 s), plus the harness's short waits.
const BULK: [&str; 6] = [
    "--mode",
    "bulk",
    "--max-rpm",
    "6000",
    "--job-seconds",
    "0.2",
];

fn stat(sandbox: &Sandbox, key: &str) -> u64 {
    let stats = sandbox.stats();
    stats[key]
        .as_u64()
        .or_else(|| stats["faults_injected"][key].as_u64())
        .unwrap_or_else(|| panic!("no {key} in {stats}"))
}

#[test]
fn shuffled_items_and_jobs_finishing_out_of_order_keep_every_conversation_in_order() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "100",
        "--bulk-jitter-ms",
        "80",
        "--bulk-out-of-order",
        "0.3",
        "--seed",
        "31",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 600, 40, 31);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    assert!(stat(&sandbox, "bulk_jobs") >= 15, "{}", sandbox.stats());
    assert!(
        stat(&sandbox, "bulk_out_of_order") > 0,
        "{}",
        sandbox.stats()
    );
    // Far fewer requests than one per message.
    assert!(
        sandbox.stats()["requests_total"].as_u64().unwrap() < 300,
        "{}",
        sandbox.stats()
    );
    let report = report_rows(dir.path(), "job.sqlite");
    assert!(report.iter().all(|r| !r["bulkJobId"].is_empty()));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("messages per request"),
        "{}",
        text(&output)
    );
}

#[test]
fn lost_answers_item_errors_and_5xx_never_duplicate_in_bulk_mode() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "80",
        "--bulk-drop-after-create",
        "0.15",
        "--bulk-item-error",
        "0.08",
        "--bulk-item-error-status",
        "429,500,503",
        "--store-then-error",
        "0.1",
        "--seed",
        "32",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 500, 40, 32);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    assert!(stat(&sandbox, "bulk_drop_after_create") > 0);
    assert!(stat(&sandbox, "bulk_item_error") > 0);
}

#[test]
fn a_permanent_item_error_fails_that_row_and_its_conversation_goes_on() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "50",
        "--bulk-item-error",
        "0.05",
        "--bulk-item-error-status",
        "422",
        "--seed",
        "33",
    ]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 300, 20, 33);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let report = report_rows(dir.path(), "job.sqlite");
    let failed: Vec<_> = report.iter().filter(|r| r["state"] == "failed").collect();
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|r| r["httpStatus"] == "422"),
        "{failed:?}"
    );
    let succeeded = report.iter().filter(|r| r["state"] == "succeeded").count();
    assert_eq!(
        succeeded + failed.len(),
        300,
        "nothing held by a permanent failure"
    );
    assert_eq!(sandbox.stored(), succeeded as u64);
    assert_eq!(sandbox.stats()["duplicate_external_ids"], 0);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
}

#[test]
fn kill_9_while_jobs_are_in_flight_then_resume_reads_them_and_creates_nothing_twice() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "300",
        "--bulk-jitter-ms",
        "100",
        "--bulk-drop-after-create",
        "0.1",
        "--seed",
        "34",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 800, 60, 34);
    for threshold in [1u64, 250, 500] {
        let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
        let verb: &[&str] = if threshold == 1 {
            &["run", "in.csv", "--db", "job.sqlite", "--quiet"]
        } else {
            &["resume", "--db", "job.sqlite", "--quiet"]
        };
        command
            .args(verb)
            .args(send_flags(&BULK))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("spawn");
        // Killed once a job beyond those already counted has been posted: rows in flight.
        let posted = stat(&sandbox, "bulk_jobs");
        wait_until(Duration::from_secs(120), "a job in flight", || {
            (stat(&sandbox, "bulk_jobs") > posted && sandbox.stored() >= threshold)
                || child.try_wait().unwrap().is_some()
        });
        signal(&child, "KILL");
        let _ = child.wait();
    }
    for _ in 0..5 {
        let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &BULK);
        if code(&output) == 0 {
            break;
        }
        assert_eq!(code(&output), 1, "{}", text(&output));
    }
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    assert!(stat(&sandbox, "bulk_batch_reads") > 0);
}

#[test]
fn bulk_mode_needs_a_key_that_reads_bulk_results() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 20, 4, 35);
    let output = run_job(
        dir.path(),
        &sandbox,
        AGENT_KEY,
        "in.csv",
        &["--mode", "bulk", "--no-audit-fields"],
    );
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("org.permission.bulk.read"),
        "{}",
        text(&output)
    );
    assert_eq!(sandbox.stored(), 0);
}
