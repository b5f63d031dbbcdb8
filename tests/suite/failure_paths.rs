//! The failure paths that decide a conversation's fate, end to end through the binary: an
//! unknown conversation, the lookup spelling fallback, SIGTERM and a second Ctrl-C. Each test
//! also proves its fault fired, and waits for events, never on the clock.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(180);

const DEAD_CONVERSATION: &str = "dead00000000000000000001";

/// `run in.csv --db job.sqlite --quiet EXTRA...`, not waited for.
fn run_command(dir: &Path, sandbox: &Sandbox, extra: &[&str]) -> std::process::Command {
    let mut command = importer_for(dir, sandbox, ADMIN_KEY);
    command
        .args(["run", "in.csv", "--db", "job.sqlite", "--quiet"])
        .args(send_flags(extra));
    command
}

/// A CSV of `per_conversation` rows in each of `conversations`, in time order per conversation,
/// lines interleaved across conversations. Returns each row as expected.
fn write_conversations(
    path: &Path,
    conversations: &[&str],
    per_conversation: usize,
) -> Vec<Expected> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        file,
        "conversationId,externalId,channel,app,direction,sentAt,preview,createdBy"
    )
    .unwrap();
    let mut expected = Vec::new();
    for position in 0..per_conversation {
        for (index, conversation) in conversations.iter().enumerate() {
            let minutes = (index * 1_000 + position * 3) as i64;
            let sent = jiff::Timestamp::from_second(1_600_000_000 + minutes * 60).unwrap();
            let row = Expected {
                line: expected.len() as u64 + 2,
                conversation_id: (*conversation).to_string(),
                external_id: format!("fp-{index}-{position}"),
                sent_at: sent.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            };
            writeln!(
                file,
                "{},{},chat,tests,in,{},hello {position},{AGENT_USER}",
                row.conversation_id, row.external_id, row.sent_at
            )
            .unwrap();
            expected.push(row);
        }
    }
    file.flush().unwrap();
    expected
}

#[test]
fn a_404_fails_the_rest_of_its_conversation_without_sending_it() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let conversations = [
        "0000000000000000000fa001",
        DEAD_CONVERSATION,
        "0000000000000000000fa002",
        "0000000000000000000fa003",
    ];
    let rows = write_conversations(&dir.path().join("in.csv"), &conversations, 6);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "some rows failed: {}", text(&output));

    // The fault fired (lookups may answer 404 too), and only the conversation's first row was
    // ever sent.
    let stats = sandbox.stats();
    assert!(sandbox.stat(&["requests_by_status", "404"]) >= 1, "{stats}");
    assert_eq!(
        sandbox.stat(&["creates_by_conversation", DEAD_CONVERSATION]),
        1,
        "{stats}"
    );
    let (dead, alive): (Vec<Expected>, Vec<Expected>) = rows
        .into_iter()
        .partition(|row| row.conversation_id == DEAD_CONVERSATION);
    assert_stored_exactly_once_in_order(&sandbox, &alive);

    let report = report_rows(dir.path(), "job.sqlite");
    let mut dead_rows: Vec<_> = report
        .iter()
        .filter(|row| row["conversationId"] == DEAD_CONVERSATION)
        .collect();
    dead_rows.sort_by_key(|row| row["line"].parse::<u64>().unwrap());
    assert_eq!(dead_rows.len(), dead.len());
    let (first, later) = dead_rows.split_first().unwrap();
    assert_eq!(first["externalId"], dead[0].external_id, "sent in order");
    assert_eq!(first["state"], "failed");
    assert_eq!(first["httpStatus"], "404", "{first:?}");
    for row in later {
        assert_eq!(row["state"], "failed", "{row:?}");
        assert_eq!(row["errorCode"], "conversation_not_found", "{row:?}");
        assert_eq!(row["httpStatus"], "", "never sent: {row:?}");
    }
    assert!(report
        .iter()
        .filter(|row| row["conversationId"] != DEAD_CONVERSATION)
        .all(|row| row["state"] == "succeeded"));
}

#[test]
fn unknown_outcomes_fall_back_to_the_lower_case_lookup_spelling() {
    let sandbox = Sandbox::start(&[
        "--lookup-route",
        "lower",
        "--store-then-drop",
        "0.2",
        "--seed",
        "21",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 120, 8, 31);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);

    let stats = sandbox.stats();
    assert!(
        sandbox.stat(&["faults_injected", "store_then_drop"]) > 0,
        "the fault must have fired: {stats}"
    );
    assert!(
        sandbox.stat(&["lookups", "camel", "no_route"]) > 0,
        "externalId= lookups answered 404: {stats}"
    );
    assert!(
        sandbox.stat(&["lookups", "lower", "hit"]) > 0,
        "externalid= lookups found the messages: {stats}"
    );
    assert_eq!(sandbox.stat(&["lookups", "camel", "hit"]), 0, "{stats}");
}

/// The first Ctrl-C or SIGTERM mid-run: no new request starts, the ones in flight finish and are
/// recorded (nothing left `sending`), exit 130; resume then finishes with every row once.
fn first_signal_records_in_flight_and_resume_finishes(signal_name: &str, seed: u64) {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 800, 16, seed);
    // Held at the door mid-way, so the signal reaches a run that is still sending, with
    // requests in flight; they go through once it has seen the signal.
    sandbox.hold_after(150);
    let mut run = Watched::spawn(run_command(dir.path(), &sandbox, &[]));
    wait_until(LIMIT, "requests held mid-run", || {
        sandbox.stat(&["held"]) > 0
    });
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the run ended first"
    );
    signal(&run.child, signal_name);
    run.wait_for_line("interrupted", LIMIT);
    sandbox.release();
    let status = run.wait(LIMIT);
    assert_eq!(status.code(), Some(130), "{}", run.stderr_text());
    assert!(
        run.stderr_text().contains("interrupted"),
        "the signal was seen: {}",
        run.stderr_text()
    );

    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(status["counts"]["sending"], 0, "{status}");
    assert!(
        status["remaining"].as_u64().unwrap() > 0,
        "cut mid-run: {status}"
    );
    assert_eq!(
        status["counts"]["succeeded"].as_u64().unwrap(),
        sandbox.stored(),
        "checkpoint and sandbox agree: {status}"
    );

    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn sigterm_mid_run_records_what_was_in_flight_exits_130_and_resume_finishes() {
    first_signal_records_in_flight_and_resume_finishes("TERM", 32);
}

#[test]
fn ctrl_c_mid_run_records_what_was_in_flight_exits_130_and_resume_finishes() {
    first_signal_records_in_flight_and_resume_finishes("INT", 15);
}

#[test]
fn a_second_ctrl_c_exits_at_once_while_requests_are_held_and_resume_finishes() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 160, 8, 33);
    // After 40 requests every request waits in the sandbox: the first Ctrl-C cannot finish
    // them, and the run cannot end before the signals.
    sandbox.hold_after(40);
    let mut run = Watched::spawn(run_command(dir.path(), &sandbox, &["--concurrency", "4"]));
    wait_until(LIMIT, "creates held in the sandbox", || {
        sandbox.stat(&["held"]) >= 1
    });
    assert!(run.child.try_wait().unwrap().is_none(), "still running");
    signal(&run.child, "INT");
    run.wait_for_line("interrupted", LIMIT);
    signal(&run.child, "INT");
    let status = run.wait(LIMIT);
    assert_eq!(status.code(), Some(130), "{}", run.stderr_text());
    assert!(
        run.stderr_text().contains("stopped at once"),
        "{}",
        run.stderr_text()
    );

    // The held rows were left `sending` for resume to reconcile.
    let status = status_json(dir.path(), "job.sqlite");
    assert!(
        status["counts"]["sending"].as_u64().unwrap() >= 1,
        "{status}"
    );

    // Let the held requests through (they may still store) and wait until the sandbox is idle,
    // so resume's lookups see everything they will ever see.
    sandbox.release();
    wait_until(LIMIT, "the sandbox idle", || {
        sandbox.stat(&["in_flight"]) == 0
    });
    // A row left `sending` waits out the request timeout before its lookup: keep it short.
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &["--request-timeout", "2"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn a_403_mid_run_stops_with_exit_3_and_the_rows_resume() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 200, 10, 34);
    // Some rows go, then the door closes; the key loses its create role while requests wait.
    sandbox.hold_after(40);
    let mut run = Watched::spawn(run_command(dir.path(), &sandbox, &[]));
    wait_until(LIMIT, "creates held mid-run", || {
        sandbox.stat(&["held"]) > 0
    });
    sandbox.post("/_sandbox/forbid");
    sandbox.release();
    let status = run.wait(LIMIT);
    assert_eq!(status.code(), Some(3), "{}", run.stderr_text());
    assert!(run.stderr_text().contains("403"), "{}", run.stderr_text());
    assert!(
        sandbox.stat(&["faults_injected", "forbidden"]) > 0,
        "{}",
        sandbox.stats()
    );
    let stored = sandbox.stored();
    assert!(stored > 0 && stored < 200, "{stored} stored");
    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(status["counts"]["failed"], 0, "{status}");
    assert_eq!(status["counts"]["sending"], 0, "{status}");
    assert!(
        status["counts"]["pending"].as_u64().unwrap() > 0,
        "{status}"
    );

    sandbox.post("/_sandbox/restore");
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn retry_failed_all_sends_permanent_failures_again_and_plain_retry_failed_does_not() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let conversations = ["0000000000000000000fb001", DEAD_CONVERSATION];
    write_conversations(&dir.path().join("in.csv"), &conversations, 3);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let dead_creates = || sandbox.stat(&["creates_by_conversation", DEAD_CONVERSATION]);
    assert_eq!(dead_creates(), 1, "{}", sandbox.stats());

    // A 404 is permanent: `--retry-failed` (transient failures only) leaves it alone.
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &["--retry-failed"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert_eq!(dead_creates(), 1, "{}", sandbox.stats());

    // `=all` puts every failed row back: the conversation's first row is sent again (and
    // answered 404 again), its later rows fail unsent behind it as before.
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &["--retry-failed=all"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert_eq!(dead_creates(), 2, "{}", sandbox.stats());
    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(status["counts"]["failed"], 3, "{status}");
    assert_eq!(status["counts"]["succeeded"], 3, "{status}");
    assert_eq!(sandbox.stored(), 3);
}
