//! Bulk mode end to end: every row exactly once and in order per conversation, with the
//! sandbox's items processed in random order (its default), many jobs in flight finishing out
//! of order, jobs split into batches that complete over time, slow jobs, jobs that never
//! complete, items stored and then reported 500, `_clientRef`s never sent or listed twice, 429s
//! and dropped connections while reading results, a dead server, lost answers, item errors, and
//! `kill -9` at moments chosen by events, each followed by `resume`. Each test asserts that its
//! fault fired (sandbox stats).

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

/// Lookups by externalId that got one of `answers` (`hit`, `miss`), both spellings. The
/// re-import guard's lookups before the first send miss; the route's proof is one hit; a row
/// looked up after an unknown outcome is a hit when it was stored.
fn lookups(sandbox: &Sandbox, answers: &[&str]) -> u64 {
    ["camel", "lower"]
        .iter()
        .flat_map(|spelling| answers.iter().map(move |answer| (*spelling, *answer)))
        .map(|(spelling, answer)| sandbox.stat(&["lookups", spelling, answer]))
        .sum()
}

/// `BULK` with more flags (theirs win).
fn bulk_with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut flags: Vec<&str> = extra.to_vec();
    let mut index = 0;
    while index + 1 < BULK.len() {
        if !extra.contains(&BULK[index]) {
            flags.extend([BULK[index], BULK[index + 1]]);
        }
        index += 2;
    }
    flags
}

/// Report rows whose error code is `code`.
fn rows_with_code(dir: &std::path::Path, code: &str) -> usize {
    report_rows(dir, "job.sqlite")
        .iter()
        .filter(|row| row["errorCode"] == code)
        .count()
}

#[test]
fn shuffled_items_and_jobs_finishing_out_of_order_keep_every_conversation_in_order() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "150",
        "--bulk-jitter-ms",
        "100",
        "--bulk-out-of-order",
        "0.3",
        "--seed",
        "31",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 1_200, 300, 31);
    // Jobs of 20: 300 conversations fill many at once, and the budget pays for ten in flight.
    let flags = bulk_with(&["--batch-size", "20"]);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    assert!(stat(&sandbox, "bulk_jobs") >= 60, "{}", sandbox.stats());
    assert!(
        stat(&sandbox, "bulk_out_of_order") > 0,
        "{}",
        sandbox.stats()
    );
    // Many jobs in flight at once, and later jobs finishing before earlier ones.
    assert!(
        stat(&sandbox, "bulk_jobs_most_in_flight") > 1,
        "{}",
        sandbox.stats()
    );
    assert!(
        stat(&sandbox, "bulk_jobs_overtaking") > 0,
        "{}",
        sandbox.stats()
    );
    // Far fewer requests than one per message.
    assert!(
        sandbox.stats()["requests_total"].as_u64().unwrap() < 600,
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
fn shallow_conversations_wait_to_fill_the_deep_one_s_jobs_instead_of_leaving_it_thin_ones() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "40",
        "--bulk-jitter-ms",
        "10",
        "--seed",
        "47",
    ]);
    let dir = tempfile::tempdir().unwrap();
    // One conversation of 30 rows among 135 of 2: the deep one sets 30 rounds. Spread over
    // them, the shallow ones fill nine seats of every job of 10 beside it: 30 full jobs (the
    // lower bound), no single create. Sent as fast as the budget allows, they would be gone in
    // a few rounds and leave the deep one to end alone, in single creates or thin jobs.
    let mut depths = vec![2; 135];
    depths.insert(0, 30);
    let expected = write_csv_with_depths(&dir.path().join("in.csv"), &depths, 47);
    let flags = bulk_with(&["--batch-size", "10", "--job-seconds", "0.05"]);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    let (jobs, creates) = (stat(&sandbox, "bulk_jobs"), stat(&sandbox, "creates"));
    assert!(
        jobs <= 36 && creates <= 6,
        "{jobs} jobs and {creates} single creates for 300 rows that 30 full jobs carry: {}",
        sandbox.stats()
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

#[test]
fn several_batches_per_job_completing_over_time_are_read_as_one_answer() {
    // Batches of 10 items: a job of 80 completes in eight steps, listed partially meanwhile.
    let sandbox = Sandbox::start(&[
        "--bulk-batch-items",
        "10",
        "--bulk-delay-ms",
        "300",
        "--bulk-jitter-ms",
        "0",
        "--seed",
        "41",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 400, 80, 41);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    let (jobs, batches) = (stat(&sandbox, "bulk_jobs"), stat(&sandbox, "bulk_batches"));
    assert!(batches >= 2 * jobs, "{}", sandbox.stats());
    // A partial list never made a row an unknown outcome: no row was looked up (the one hit
    // is the lookup route's proof).
    assert!(lookups(&sandbox, &["hit"]) <= 1, "{}", sandbox.stats());
}

#[test]
fn an_item_stored_then_reported_500_is_looked_up_never_resent_blind() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "80",
        "--bulk-item-stored-error",
        "0.1",
        "--seed",
        "42",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 300, 60, 42);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let fired = stat(&sandbox, "bulk_item_stored_error");
    assert!(fired > 0, "{}", sandbox.stats());
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    // Each such row was found by a lookup instead of being sent again.
    assert!(lookups(&sandbox, &["hit"]) >= fired, "{}", sandbox.stats());
}

#[test]
fn jobs_far_slower_than_the_rest_are_waited_for_not_given_up() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "60",
        "--bulk-jitter-ms",
        "20",
        "--bulk-slow-jobs",
        "0.2",
        "--bulk-slow-factor",
        "20",
        "--seed",
        "43",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 600, 15, 43);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(stat(&sandbox, "bulk_slow_jobs") > 0, "{}", sandbox.stats());
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    // Their rows waited for the job's own answer: none became an unknown outcome.
    assert!(lookups(&sandbox, &["hit"]) <= 1, "{}", sandbox.stats());
}

#[test]
fn a_job_that_never_completes_ends_outcome_unknown_and_is_read_again_on_resume() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "50",
        "--bulk-never-complete",
        "0.3",
        "--seed",
        "44",
    ]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 200, 40, 44);
    let flags = bulk_with(&["--max-job-wait", "1"]);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        stat(&sandbox, "bulk_never_complete") > 0,
        "{}",
        sandbox.stats()
    );
    let unknown = rows_with_code(dir.path(), "outcome_unknown");
    assert!(unknown > 0);
    let status = status_json(dir.path(), "job.sqlite");
    assert!(
        status.to_string().contains("outcome_unknown"),
        "counted by status: {status}"
    );
    // Rows whose batch completed were decided by it; the stuck ones were never resent.
    let reads = stat(&sandbox, "bulk_batch_reads");
    let posted = stat(&sandbox, "bulk_items");
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &flags);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(stat(&sandbox, "bulk_batch_reads") > reads, "read again");
    assert_eq!(stat(&sandbox, "bulk_items"), posted, "nothing sent again");
    assert_eq!(rows_with_code(dir.path(), "outcome_unknown"), unknown);
    assert_eq!(sandbox.stats()["duplicate_external_ids"], 0);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
}

#[test]
fn results_that_come_after_max_job_wait_are_settled_by_resume() {
    let sandbox = Sandbox::start(&["--bulk-delay-ms", "50", "--seed", "45"]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 150, 30, 45);
    // Jobs run but store nothing until released: their results never complete in this run.
    sandbox.post("/_sandbox/bulk/hold");
    let flags = bulk_with(&["--max-job-wait", "1"]);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let unknown = rows_with_code(dir.path(), "outcome_unknown");
    assert!(unknown > 0, "{}", text(&output));
    assert_eq!(
        stat(&sandbox, "bulk_jobs_complete"),
        0,
        "held: {}",
        sandbox.stats()
    );
    let posted = stat(&sandbox, "bulk_items");
    sandbox.post("/_sandbox/bulk/release");
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    assert_eq!(rows_with_code(dir.path(), "outcome_unknown"), 0);
    // The held jobs' rows were settled by reading those jobs, not sent again.
    assert_eq!(
        stat(&sandbox, "bulk_items"),
        posted + (expected.len() as u64 - unknown as u64),
        "{}",
        sandbox.stats()
    );
}

#[test]
fn a_client_ref_never_sent_or_listed_twice_is_not_trusted() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "50",
        "--bulk-unknown-ref",
        "0.3",
        "--bulk-duplicate-ref",
        "0.4",
        "--seed",
        "46",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 300, 60, 46);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &BULK);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(
        stat(&sandbox, "bulk_unknown_ref") > 0,
        "{}",
        sandbox.stats()
    );
    assert!(
        stat(&sandbox, "bulk_duplicate_ref") > 0,
        "{}",
        sandbox.stats()
    );
    // The rows in doubt were looked up; no answer naming a message that does not exist (the
    // stranger's and the contradicting ones) was recorded.
    assert!(lookups(&sandbox, &["hit"]) > 1, "{}", sandbox.stats());
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
}

#[test]
fn rate_limits_and_dropped_connections_while_reading_results_are_ridden_out() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "50",
        "--bulk-read-429",
        "0.1",
        "--bulk-read-drop",
        "0.15",
        "--seed",
        "47",
    ]);
    let dir = tempfile::tempdir().unwrap();
    // 20 rounds of jobs: enough reads for the faults to hit. Each 429 pauses every request
    // through the shared pacer, at most --max-pause, and slows its pace for a while.
    let expected = write_csv(&dir.path().join("in.csv"), 300, 15, 47);
    let flags = bulk_with(&["--max-pause", "1"]);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(stat(&sandbox, "bulk_read_429") > 0, "{}", sandbox.stats());
    assert!(stat(&sandbox, "bulk_read_drop") > 0, "{}", sandbox.stats());
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
}

#[test]
fn a_dead_server_while_jobs_are_read_stops_the_run_with_exit_3() {
    let sandbox = Sandbox::start(&["--bulk-delay-ms", "50", "--seed", "48"]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 200, 40, 48);
    sandbox.post("/_sandbox/bulk/hold");
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command
        .args(["run", "in.csv", "--db", "job.sqlite", "--quiet"])
        .args(send_flags(&bulk_with(&["--max-retry-wait", "2"])));
    let mut watched = Watched::spawn(command);
    wait_until(Duration::from_secs(60), "a job in flight", || {
        stat(&sandbox, "bulk_jobs") > 0
    });
    assert_eq!(stat(&sandbox, "bulk_jobs_complete"), 0);
    // The server dies while the jobs are being read.
    drop(sandbox);
    let status = watched.wait(Duration::from_secs(120));
    assert_eq!(status.code(), Some(3), "{}", watched.stderr_text());
    assert!(
        watched.stderr_text().contains("unreachable"),
        "{}",
        watched.stderr_text()
    );
    // The jobs' rows stay `sending` with their job: resume reads those jobs.
    let report = report_rows(dir.path(), "job.sqlite");
    assert!(report
        .iter()
        .any(|row| row["state"] == "sending" && !row["bulkJobId"].is_empty()));
    assert!(report.iter().all(|row| row["state"] != "succeeded"));
}

/// One conversation of `deep` rows among `shallow` conversations of `depth`.
fn write_deep_csv(
    path: &std::path::Path,
    deep: usize,
    shallow: usize,
    depth: usize,
) -> Vec<Expected> {
    use std::io::Write;
    let mut expected = Vec::new();
    let mut push = |conversation: usize, position: usize| {
        let sent = 1_600_000_000 + (conversation * 50_000 + position * 60) as i64;
        let sent = jiff::Timestamp::from_second(sent).unwrap();
        expected.push(Expected {
            line: 0,
            conversation_id: format!("{:024x}", 0xdee000 + conversation),
            external_id: format!("deep-{conversation}-{position}"),
            sent_at: sent.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        });
    };
    for position in 0..deep {
        push(0, position);
    }
    for conversation in 1..=shallow {
        for position in 0..depth {
            push(conversation, position);
        }
    }
    // Newest first in the file: the importer orders by sentAt.
    expected.reverse();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        file,
        "conversationId,externalId,channel,app,direction,sentAt,preview"
    )
    .unwrap();
    for (index, row) in expected.iter_mut().enumerate() {
        row.line = index as u64 + 2;
        writeln!(
            file,
            "{},{},chat,tests,in,{},hello {}",
            row.conversation_id, row.external_id, row.sent_at, row.external_id
        )
        .unwrap();
    }
    file.flush().unwrap();
    expected
}

#[test]
fn a_deep_conversation_sends_its_first_rows_alone_and_its_last_by_bulk_in_order() {
    let sandbox = Sandbox::start(&["--bulk-delay-ms", "500", "--seed", "49"]);
    let dir = tempfile::tempdir().unwrap();
    // 20 rows in one conversation among 100 of 8: the lower bound's 9 jobs carry at most 9 rows
    // of each conversation, so the deep one sends its first 11 alone, then rides jobs while the
    // shallow ones still fill them. Its 11 single creates take a few requests' time; the
    // shallow conversations' 8 rounds of half-second jobs take seconds, so the deep one finds
    // them still going however slow the machine (it goes alone again only while it is deeper
    // than every conversation away, which with 9 rows left against 8 is for one or two rows).
    let expected = write_deep_csv(&dir.path().join("in.csv"), 20, 100, 8);
    let flags = bulk_with(&["--job-seconds", "0.6"]);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    assert_every_success_is_real(&sandbox, dir.path(), "job.sqlite");
    let deep = format!("{:024x}", 0xdee000);
    let alone = sandbox.stats()["creates_by_conversation"][&deep]
        .as_u64()
        .unwrap_or(0);
    assert!(
        (11..20).contains(&alone),
        "{alone} of 20 alone: {}",
        sandbox.stats()
    );
    // In send order: the first rows alone, then rows that rode jobs (the very last may go
    // alone again once no other conversation is left to share a job with).
    let report = report_rows(dir.path(), "job.sqlite");
    let by_line: std::collections::HashMap<&str, &str> = report
        .iter()
        .map(|row| (row["line"].as_str(), row["bulkJobId"].as_str()))
        .collect();
    let mut rows: Vec<&Expected> = expected
        .iter()
        .filter(|row| row.conversation_id == deep)
        .collect();
    rows.sort_by(|a, b| (&a.sent_at, a.line).cmp(&(&b.sent_at, b.line)));
    let in_jobs: Vec<bool> = rows
        .iter()
        .map(|row| !by_line[row.line.to_string().as_str()].is_empty())
        .collect();
    assert!(in_jobs[..11].iter().all(|in_job| !*in_job), "{in_jobs:?}");
    assert!(in_jobs[11..].iter().any(|in_job| *in_job), "{in_jobs:?}");
}

/// The re-import guard in bulk mode: the same export run again as a new bulk job is refused
/// before any job goes, and the guard spent its sample's lookups, not 20 (a twentieth of the
/// requests 400 rows need in jobs of 100 is less than the least sample, 10).
#[test]
fn a_bulk_export_run_again_as_a_new_job_is_refused_by_a_sample_of_ten() {
    let sandbox = Sandbox::start(&["--seed", "53"]);
    let first = tempfile::tempdir().unwrap();
    let expected = write_csv(&first.path().join("in.csv"), 400, 40, 53);
    let flags = bulk_with(&[]);
    let output = run_job(first.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);

    let (jobs, creates, lookups_before) = (
        stat(&sandbox, "bulk_jobs"),
        stat(&sandbox, "creates"),
        lookups(&sandbox, &["hit", "miss"]),
    );
    let second = tempfile::tempdir().unwrap();
    std::fs::copy(first.path().join("in.csv"), second.path().join("in.csv")).unwrap();
    let output = run_job(second.path(), &sandbox, ADMIN_KEY, "in.csv", &flags);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("already exist"),
        "{}",
        text(&output)
    );
    assert_eq!(
        lookups(&sandbox, &["hit", "miss"]) - lookups_before,
        10,
        "{}",
        sandbox.stats()
    );
    assert_eq!(stat(&sandbox, "bulk_jobs"), jobs, "no job sent");
    assert_eq!(stat(&sandbox, "creates"), creates, "no single create sent");
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}
