//! What a person touches (issue 8), end to end through the compiled binary: no file clobbered by
//! `report`, no rows merged by a quote left open, settings that survive `resume`, quiet closed
//! pipes, API text escaped on the way to a terminal or a page, honest rates and hints,
//! checkpoints opened read-only, errors grouped by what they say, and the small refusals.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(180);
/// Conversation ids the sandbox answers 404 for.
const DEAD: &str = "dead0000000000000000000";

fn importer_output(dir: &Path, args: &[&str]) -> Output {
    let mut command = importer(dir);
    command.args(args);
    run_bounded(command, LIMIT)
}

/// The importer with a key and a base URL where nothing listens: for refusals that must come
/// before any request.
fn run_without_api(dir: &Path, args: &[&str]) -> Output {
    let mut command = importer(dir);
    command
        .env("KUSTOMER_API_KEY", ADMIN_KEY)
        .args(args)
        .args(["--base-url", "http://127.0.0.1:9"]);
    run_bounded(command, LIMIT)
}

/// `report --db job.sqlite ARGS...` in `dir`.
fn report_job(dir: &Path, args: &[&str]) -> Output {
    let mut command = importer(dir);
    command.args(["report", "--db", "job.sqlite"]).args(args);
    run_bounded(command, LIMIT)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A CSV of `good` valid rows in one conversation and `dead` rows in unknown conversations (each
/// its own, so their 404 messages differ by id).
fn write_mixed(path: &Path, good: usize, dead: usize) {
    let mut csv = String::from("conversationId,externalId,channel,app,sentAt,preview\n");
    for index in 0..good {
        csv.push_str(&format!(
            "64b7f0c2a1e3d5f7a9c1e3f5,ok-{index},chat,tests,2021-01-01T00:{:02}:{:02}Z,hello\n",
            index / 60,
            index % 60
        ));
    }
    for index in 0..dead {
        csv.push_str(&format!(
            "{DEAD}{index},dead-{index},chat,tests,2021-01-01T01:00:00Z,lost\n"
        ));
    }
    std::fs::write(path, csv).unwrap();
}

fn sha(path: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// Runs a command whose stdout reader is already gone (as in `cmd | head -1` once head has
/// exited): every write to stdout fails with a broken pipe.
fn run_with_closed_stdout(mut command: Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn importer");
    drop(child.stdout.take());
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr_pipe, &mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("importer did not finish with a closed stdout");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap_or_default(),
    }
}

fn assert_quiet_success(output: &Output, what: &str) {
    let err = stderr(output);
    assert_eq!(code(output), 0, "{what}: {}", text(output));
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(!err.contains("Broken pipe"), "{what}: {err}");
}

// 1. ----------------------------------------------------------------------------------------

#[test]
fn report_outputs_never_clobber_the_checkpoint_the_input_or_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    write_mixed(&dir.path().join("in.csv"), 5, 2);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let db = dir.path().join("job.sqlite");
    let input = dir.path().join("in.csv");
    let (db_before, input_before) = (sha(&db), sha(&input));

    // The checkpoint, its companions and the input: refused, with or without --force.
    for target in ["job.sqlite", "job.sqlite-wal", "in.csv", "./sub/../in.csv"] {
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        for force in [false, true] {
            let mut args = vec!["report", "--db", "job.sqlite", "--rejects", target];
            if force {
                args.push("--force");
            }
            let output = importer_output(dir.path(), &args);
            assert_eq!(code(&output), 2, "{target}: {}", text(&output));
            assert!(
                stderr(&output).contains("never overwritten"),
                "{target}: {}",
                text(&output)
            );
            let mut args = vec!["report", "--db", "job.sqlite", "--output", target];
            if force {
                args.push("--force");
            }
            assert_eq!(code(&importer_output(dir.path(), &args)), 2, "{target}");
        }
    }
    assert_eq!(sha(&db), db_before, "checkpoint untouched");
    assert_eq!(sha(&input), input_before, "input untouched");
    assert!(!dir.path().join("job.sqlite-wal").exists());
    // A symlink to the checkpoint is the checkpoint.
    std::os::unix::fs::symlink(&db, dir.path().join("innocent.csv")).unwrap();
    let output = report_job(dir.path(), &["--rejects", "innocent.csv", "--force"]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert_eq!(sha(&db), db_before);

    // An existing file: only with --force.
    std::fs::write(dir.path().join("mine.csv"), "precious").unwrap();
    std::fs::write(dir.path().join("out.txt"), "precious").unwrap();
    let output = report_job(dir.path(), &["--rejects", "mine.csv"]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        stderr(&output).contains("already exists"),
        "{}",
        text(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine.csv")).unwrap(),
        "precious"
    );
    let output = report_job(dir.path(), &["--output", "out.txt"]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "precious"
    );
    let output = report_job(dir.path(), &["--output", "out.txt", "--force"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(std::fs::read_to_string(dir.path().join("out.txt"))
        .unwrap()
        .contains("Rows"));

    // A symlink is followed, not replaced.
    std::fs::write(dir.path().join("real.csv"), "old").unwrap();
    std::os::unix::fs::symlink("real.csv", dir.path().join("link.csv")).unwrap();
    let output = report_job(dir.path(), &["--rejects", "link.csv", "--force"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(std::fs::symlink_metadata(dir.path().join("link.csv"))
        .unwrap()
        .file_type()
        .is_symlink());
    let written = std::fs::read_to_string(dir.path().join("real.csv")).unwrap();
    assert!(written.starts_with("conversationId,"), "{written}");
    assert_eq!(written.lines().count(), 3, "header and the two 404 rows");

    // `-` is stdout, for both.
    let output = report_job(dir.path(), &["--rejects", "-"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(stdout(&output), written);
    let output = report_job(dir.path(), &["--format", "csv", "--output", "-"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(stdout(&output).starts_with("line,externalId"));
    assert!(!dir.path().join("-").exists(), "no file named -");
    // /dev/stdout is a symlink to whatever stdout is: written through, never replaced.
    let output = report_job(dir.path(), &["--output", "/dev/stdout", "--force"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert!(stdout(&output).contains("Rows"), "{}", text(&output));
    assert!(std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());
}

// 2. ----------------------------------------------------------------------------------------

#[test]
fn a_quote_left_open_merges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let header = "conversationId,externalId,channel,app,sentAt,preview\n";
    let row = |n: usize| {
        format!("64b7f0c2a1e3d5f7a9c1e3f5,q-{n},chat,tests,2021-01-01T00:00:{n:02}Z,hello {n}\n")
    };
    // Line 3 opens a quote in its preview that never closes.
    let mut open = String::from(header);
    open.push_str(&row(2));
    open.push_str("64b7f0c2a1e3d5f7a9c1e3f5,q-3,chat,tests,2021-01-01T00:00:03Z,\"oops\n");
    open.push_str(&row(4));
    open.push_str(&row(5));
    std::fs::write(dir.path().join("open.csv"), &open).unwrap();
    let output = importer_output(dir.path(), &["validate", "open.csv"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        stdout(&output).contains("line 3: a quoted field opened on line 3 is never closed"),
        "{}",
        text(&output)
    );
    assert!(!stdout(&output).contains("1 valid"), "{}", text(&output));

    // `run` stages nothing: no checkpoint is even created.
    let output = importer_output(
        dir.path(),
        &["run", "open.csv", "--db", "job.sqlite", "--dry-run"],
    );
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(stderr(&output).contains("line 3"), "{}", text(&output));
    let output = run_without_api(dir.path(), &["run", "open.csv", "--db", "job.sqlite"]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(!dir.path().join("job.sqlite").exists());

    // A quote that closes 15 lines later: the record says which lines it spans.
    let mut late = String::from(header);
    late.push_str(&row(2));
    late.push_str("64b7f0c2a1e3d5f7a9c1e3f5,q-3,\"chat,tests,2021-01-01T00:00:03Z,oops\n");
    for n in 4..18 {
        late.push_str(&row(n));
    }
    late.push_str("64b7f0c2a1e3d5f7a9c1e3f5,q-18\",chat,tests,2021-01-01T00:00:18Z,closed\n");
    late.push_str(&row(19));
    std::fs::write(dir.path().join("late.csv"), &late).unwrap();
    let output = importer_output(dir.path(), &["validate", "late.csv"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        stdout(&output).contains(
            "line 3: spans lines 3-18: a quoted field opened on line 3 runs to line 18; \
             the row has 7 fields, the header has 6 fields"
        ),
        "{}",
        text(&output)
    );
    assert!(stdout(&output).ends_with("2 valid, 1 invalid, 0 duplicate\n"));
    // Within --max-field-lines a long quoted field is fine; past it, it is refused.
    let output = importer_output(
        dir.path(),
        &["validate", "late.csv", "--max-field-lines", "10"],
    );
    assert!(
        stdout(&output).contains("more than --max-field-lines (10)"),
        "{}",
        text(&output)
    );
}

// 3. ----------------------------------------------------------------------------------------

#[test]
fn resume_without_flags_keeps_the_jobs_rate_budget() {
    let dir = tempfile::tempdir().unwrap();
    // A large org limit: the default budget (half of it) would send everything at once.
    // Windows of 2 s, so the sandbox counts how the requests spread.
    let sandbox = Sandbox::start(&[
        "--org-limit",
        "60000",
        "--window-secs",
        "2",
        "--revoke-admin-after",
        "4",
    ]);
    write_csv(&dir.path().join("in.csv"), 40, 4, 3);
    let output = run_job(
        dir.path(),
        &sandbox,
        ADMIN_KEY,
        "in.csv",
        &["--max-rpm", "240", "--concurrency", "2"],
    );
    assert_eq!(
        code(&output),
        3,
        "the key is revoked mid-run: {}",
        text(&output)
    );
    let sent_before = sandbox.stored();
    assert!(sent_before < 40);

    let status = importer_output(dir.path(), &["status", "--db", "job.sqlite"]);
    assert!(
        stdout(&status).contains("--concurrency 2, --max-rpm 240,")
            && stdout(&status).contains("(the rest at their defaults)"),
        "{}",
        text(&status)
    );

    sandbox.post("/_sandbox/restore");
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_eq!(sandbox.stored(), 40);
    // 240 requests a minute is 8 per 2-s window, plus a burst of a second's worth (4): 12 per
    // window and process at most, 24 where the run's last window is the resume's first. The
    // default budget would send the 30 or more rows left in one window.
    let most = sandbox.stat(&["max_requests_in_a_window"]);
    assert!(
        most <= 2 * 12,
        "{most} requests in one window: {}",
        sandbox.stats()
    );

    // A flag given to resume overrides the stored value and is recorded.
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &["--max-rpm", "600"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let status = status_json(dir.path(), "job.sqlite");
    assert_eq!(
        status["job"]["settings"]["send"]["max-rpm"], 600,
        "{status}"
    );
    assert_eq!(
        status["job"]["settings"]["send"]["concurrency"], "2",
        "{status}"
    );
}

// 4. ----------------------------------------------------------------------------------------

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    write_mixed(&dir.path().join("in.csv"), 50, 3);
    std::fs::write(
        dir.path().join("bad.csv"),
        "conversationId,externalId,channel,app,sentAt\n".to_string()
            + &"x,1,chat,tests,not a date\n".repeat(5_000),
    )
    .unwrap();
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));

    for args in [
        &["status", "--db", "job.sqlite"][..],
        &["status", "--db", "job.sqlite", "--json"],
        &["report", "--db", "job.sqlite"],
        &["report", "--db", "job.sqlite", "--format", "csv"],
        &["report", "--db", "job.sqlite", "--format", "json"],
        &["report", "--db", "job.sqlite", "--format", "html"],
        &["report", "--db", "job.sqlite", "--rejects", "-"],
        &["validate", "bad.csv"],
        &["validate", "in.csv"],
    ] {
        let mut command = importer(dir.path());
        command.args(args);
        assert_quiet_success(&run_with_closed_stdout(command), &args.join(" "));
    }
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command.arg("check");
    assert_quiet_success(&run_with_closed_stdout(command), "check");

    // The same through a real shell pipe into `head -1`.
    for pipeline in [
        "status --db job.sqlite | head -1",
        "report --db job.sqlite --format csv | head -1",
        "validate bad.csv | head -1",
    ] {
        let output = run_bounded(
            {
                let mut command = Command::new("sh");
                command
                    .current_dir(dir.path())
                    .arg("-c")
                    .arg(format!("\"{}\" {pipeline}", bin_path().display()));
                command
            },
            LIMIT,
        );
        assert_eq!(
            stdout(&output).lines().count(),
            1,
            "{pipeline}: {}",
            text(&output)
        );
        assert!(
            !stderr(&output).contains("panicked"),
            "{pipeline}: {}",
            text(&output)
        );
        assert!(
            !stderr(&output).contains("Broken pipe"),
            "{pipeline}: {}",
            text(&output)
        );
    }
}

// 5. ----------------------------------------------------------------------------------------

#[test]
fn api_error_text_is_escaped_on_output_and_stored_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = "\u{1b}[31mred\u{0} \u{202e}(line 5)";
    let sandbox = Sandbox::start(&["--error-body-text", r"\u{1b}[31mred\u{0} \u{202e}(line 5)"]);
    write_mixed(&dir.path().join("in.csv"), 2, 1);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    // Shown escaped (error groups also replace the ids and numbers in messages).
    let shown = [r"\u{1b}[", r"\u{0} \u{202e}(line "];

    for args in [
        &["status", "--db", "job.sqlite"][..],
        &["report", "--db", "job.sqlite"],
        &["report", "--db", "job.sqlite", "--format", "html"],
    ] {
        let output = importer_output(dir.path(), args);
        assert_eq!(code(&output), 0, "{}", text(&output));
        let out = stdout(&output);
        for raw in ['\u{1b}', '\u{0}', '\u{202e}'] {
            assert!(!out.contains(raw), "{args:?} shows {raw:?} raw:\n{out}");
        }
        for part in shown {
            assert!(out.contains(part), "{args:?}:\n{out}");
        }
    }
    // JSON escapes them too, and still means the original text.
    for args in [
        &["status", "--db", "job.sqlite", "--json"][..],
        &["report", "--db", "job.sqlite", "--format", "json"],
    ] {
        let output = importer_output(dir.path(), args);
        let out = stdout(&output);
        for raw in ['\u{1b}', '\u{0}', '\u{202e}'] {
            assert!(!out.contains(raw), "{args:?} shows {raw:?} raw:\n{out}");
        }
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let message = json["top_errors"][0]["error_message"].as_str().unwrap();
        assert!(message.contains("\u{202e}(line <n>)"), "{message}");
    }
    // The checkpoint keeps what the API said: the CSV report into a pipe (not a terminal)
    // carries the original bytes.
    let output = report_job(dir.path(), &["--format", "csv"]);
    assert!(stdout(&output).contains(hostile), "{}", text(&output));
}

// 6. ----------------------------------------------------------------------------------------

#[test]
fn status_shows_a_rate_and_eta_only_while_a_run_is_live() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&["--latency-ms", "150"]);
    write_csv(&dir.path().join("in.csv"), 60, 1, 4);
    // The run is held at the sandbox's door after a dozen requests: live for as long as the
    // test reads its status, and cut by the kill while it is still working.
    sandbox.hold_after(12);
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command
        .args([
            "run",
            "in.csv",
            "--db",
            "job.sqlite",
            "--quiet",
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut live = serde_json::Value::Null;
    wait_until(LIMIT, "a live run with results", || {
        if !dir.path().join("job.sqlite").exists() {
            return false;
        }
        let output = importer_output(dir.path(), &["status", "--db", "job.sqlite", "--json"]);
        if code(&output) != 0 {
            return false;
        }
        live = serde_json::from_slice(&output.stdout).unwrap();
        live["run_state"] == "live" && live["finished"].as_u64().unwrap_or(0) >= 3
    });
    let text_live = stdout(&importer_output(
        dir.path(),
        &["status", "--db", "job.sqlite"],
    ));
    wait_until(LIMIT, "the run held at the door", || {
        sandbox.stat(&["held"]) > 0
    });
    kill_9_while_held(&sandbox, &mut child, LIMIT);
    assert!(live["eta_seconds"].is_number(), "{live}");
    // The window is the time the run has been working, not a fixed minute.
    assert!(
        live["rate_window_seconds"].as_f64().unwrap() <= 60.0,
        "{live}"
    );
    assert!(text_live.contains("running now"), "{text_live}");
    assert!(
        !text_live.contains("resume"),
        "no resume while live:\n{text_live}"
    );
    assert!(
        text_live.contains("A run is working on this job now"),
        "{text_live}"
    );

    // Killed: not live any more, no rate, no ETA, and a resume is what applies now.
    let stopped = status_json(dir.path(), "job.sqlite");
    assert_ne!(stopped["run_state"], "live", "{stopped}");
    assert!(stopped["eta_seconds"].is_null(), "{stopped}");
    assert!(
        stopped["last_minute_rate_per_second"].is_null(),
        "{stopped}"
    );
    let shown = stdout(&importer_output(
        dir.path(),
        &["status", "--db", "job.sqlite"],
    ));
    assert!(
        shown.contains("kustomer-import resume --db job.sqlite"),
        "{shown}"
    );
    assert!(
        shown.contains("— interrupted") || shown.contains("— stopped"),
        "{shown}"
    );

    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let done = status_json(dir.path(), "job.sqlite");
    assert_eq!(done["run_state"], "complete", "{done}");
    assert!(done["eta_seconds"].is_null(), "{done}");
    let shown = stdout(&importer_output(
        dir.path(),
        &["status", "--db", "job.sqlite"],
    ));
    assert!(shown.contains("complete: nothing left to send"), "{shown}");
    assert!(!shown.contains("resume"), "nothing to resume:\n{shown}");
    // Latency is the API's answer time, the wait for the budget is shown apart.
    assert!(done["latency_ms"]["p50"].as_u64().unwrap() >= 150, "{done}");
    assert!(shown.contains("(request start to response)"), "{shown}");
}

// 7. ----------------------------------------------------------------------------------------

#[test]
fn status_and_report_read_a_read_only_copy_without_writing_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    write_mixed(&dir.path().join("in.csv"), 5, 1);
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));

    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let copy = media.join("mailed.sqlite");
    std::fs::copy(dir.path().join("job.sqlite"), &copy).unwrap();
    let before = sha(&copy);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&media, std::fs::Permissions::from_mode(0o555)).unwrap();

    for args in [
        &["status", "--db", "media/mailed.sqlite"][..],
        &["status", "--db", "media/mailed.sqlite", "--json"],
        &["report", "--db", "media/mailed.sqlite"],
        &["report", "--db", "media/mailed.sqlite", "--format", "csv"],
        &["report", "--db", "media/mailed.sqlite", "--format", "html"],
    ] {
        let output = importer_output(dir.path(), args);
        assert_eq!(code(&output), 0, "{args:?}: {}", text(&output));
        assert_counts_5_succeeded_1_failed(args, &stdout(&output));
    }
    // Even as root, where permissions stop nothing: no -wal or -shm beside it, not one byte
    // changed. The file is opened read-only, never for writing.
    let mut names: Vec<String> = std::fs::read_dir(&media)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["mailed.sqlite".to_string()]);
    assert_eq!(sha(&copy), before);
    std::fs::set_permissions(&media, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What `write_mixed(.., 5, 1)` leaves, as each format of `status` and `report` says it.
fn assert_counts_5_succeeded_1_failed(args: &[&str], shown: &str) {
    let has = |needle: &str| {
        assert!(
            shown.contains(needle),
            "{args:?} lacks {needle:?}:\n{shown}"
        )
    };
    if args.contains(&"--json") {
        let status: serde_json::Value = serde_json::from_str(shown).unwrap();
        assert_eq!(status["counts"]["succeeded"], 5, "{args:?}: {status}");
        assert_eq!(status["counts"]["failed"], 1, "{args:?}: {status}");
    } else if args.contains(&"csv") {
        let states: Vec<&str> = shown
            .lines()
            .skip(1)
            .map(|line| line.split(',').nth(3).unwrap_or(""))
            .collect();
        assert_eq!(states.len(), 6, "{args:?}:\n{shown}");
        assert_eq!(
            states.iter().filter(|s| **s == "succeeded").count(),
            5,
            "{shown}"
        );
        assert_eq!(
            states.iter().filter(|s| **s == "failed").count(),
            1,
            "{shown}"
        );
    } else if args.contains(&"html") {
        has(r#"data-metric="succeeded" data-value="5""#);
        has(r#"data-metric="failed" data-value="1""#);
    } else {
        let row = |name: &str| {
            shown
                .lines()
                .map(|line| line.split_whitespace().take(2).collect::<Vec<_>>())
                .find(|words| words.first() == Some(&name))
                .unwrap_or_else(|| panic!("{args:?}: no {name} line:\n{shown}"))
        };
        assert_eq!(row("succeeded"), ["succeeded", "5"], "{args:?}:\n{shown}");
        assert_eq!(row("failed"), ["failed", "1"], "{args:?}:\n{shown}");
    }
}

#[test]
fn a_db_that_is_not_a_checkpoint_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    std::fs::write(
        dir.path().join("notes.txt"),
        "just some notes, not a database\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("in.csv"),
        "conversationId,externalId,channel,app,sentAt\n64b7f0c2a1e3d5f7a9c1e3f5,a,chat,t,2021-01-01T00:00:00Z\n",
    )
    .unwrap();
    for (db, says) in [
        ("folder", "is a directory"),
        ("missing/job.sqlite", "directory does not exist"),
        ("notes.txt", "not a SQLite database"),
    ] {
        for args in [
            &["status", "--db", db][..],
            &["report", "--db", db],
            &["resume", "--db", db],
        ] {
            let mut command = importer(dir.path());
            command.env("KUSTOMER_API_KEY", ADMIN_KEY).args(args);
            let output = run_bounded(command, LIMIT);
            assert_eq!(code(&output), 2, "{args:?}: {}", text(&output));
            assert!(
                stderr(&output).contains(says),
                "{args:?}: {}",
                text(&output)
            );
            assert!(
                stderr(&output).contains("not a kustomer-import checkpoint"),
                "{args:?}: {}",
                text(&output)
            );
        }
    }
    let output = run_without_api(dir.path(), &["run", "in.csv", "--db", "notes.txt"]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "just some notes, not a database\n"
    );
}

// 8. ----------------------------------------------------------------------------------------

#[test]
fn hints_appear_only_when_they_apply() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    // Permanent failures (404) and an invalid row: rejects apply, a retry does not.
    write_mixed(&dir.path().join("in.csv"), 3, 2);
    let mut csv = std::fs::read_to_string(dir.path().join("in.csv")).unwrap();
    csv.push_str("64b7f0c2a1e3d5f7a9c1e3f5,bad,chat,tests,not a date,x\n");
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command.args(["run", "in.csv", "--db", "job.sqlite"]);
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let summary = stderr(&output);
    assert!(summary.contains("--rejects"), "{summary}");
    assert!(!summary.contains("--retry-failed"), "{summary}");
    assert!(!summary.contains("continue:"), "{summary}");

    let report = stdout(&importer_output(
        dir.path(),
        &["report", "--db", "job.sqlite"],
    ));
    assert!(!report.contains("Continue the job"), "{report}");
    assert!(!report.contains("resume"), "{report}");
    assert!(report.contains("--rejects"), "{report}");

    // The demo's checkpoint is deleted on exit: no command names it.
    let output = importer_output(dir.path(), &["demo"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    for command in ["report --db", "resume --db", "status --db"] {
        assert!(!stdout(&output).contains(command), "{}", text(&output));
        assert!(!stderr(&output).contains(command), "{}", text(&output));
    }
}

// 9. ----------------------------------------------------------------------------------------

#[test]
fn errors_are_grouped_by_code_and_normalised_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    // 8 unknown conversations (404, each message naming its id) and two invalid rows.
    write_mixed(&dir.path().join("in.csv"), 2, 8);
    let mut csv = std::fs::read_to_string(dir.path().join("in.csv")).unwrap();
    csv.push_str("64b7f0c2a1e3d5f7a9c1e3f5,bad-1,chat,tests,not a date,x\n");
    csv.push_str("64b7f0c2a1e3d5f7a9c1e3f5,bad-2,chat,tests,not a date,x\n");
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    let report = stdout(&importer_output(
        dir.path(),
        &["report", "--db", "job.sqlite"],
    ));
    assert_eq!(
        report.matches("Errors by code and message").count(),
        1,
        "{report}"
    );
    assert!(!report.contains("Top errors"), "listed once:\n{report}");
    let not_found: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("not_found"))
        .collect();
    assert_eq!(not_found.len(), 1, "one group for every 404:\n{report}");
    assert!(
        not_found[0].contains("Conversation <id> not found"),
        "{report}"
    );
    assert!(not_found[0].trim_start().starts_with("8 "), "{report}");
    let json = status_json(dir.path(), "job.sqlite");
    let groups = json["top_errors"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{json}");
}

// 10. ---------------------------------------------------------------------------------------

#[test]
fn small_refusals_and_acceptances() {
    let dir = tempfile::tempdir().unwrap();
    let header = "conversationId,externalId,channel,app,sentAt\n";
    // Empty inputs: exit 2, "no rows in input", for run and validate.
    std::fs::write(dir.path().join("empty.csv"), header).unwrap();
    std::fs::write(dir.path().join("empty.ndjson"), "\n").unwrap();
    for input in ["empty.csv", "empty.ndjson"] {
        let output = importer_output(dir.path(), &["validate", input]);
        assert_eq!(code(&output), 2, "{}", text(&output));
        assert!(
            stderr(&output).contains("no rows in input"),
            "{}",
            text(&output)
        );
        let output = importer_output(dir.path(), &["run", input, "--dry-run"]);
        assert_eq!(code(&output), 2, "{}", text(&output));
        assert!(
            stderr(&output).contains("no rows in input"),
            "{}",
            text(&output)
        );
    }
    // Excel's trailing empty column is accepted, even without --ignore-unknown.
    std::fs::write(
        dir.path().join("excel.csv"),
        "conversationId,externalId,channel,app,sentAt,\r\n64b7f0c2a1e3d5f7a9c1e3f5,a,chat,t,2021-01-01T00:00:00Z,\r\n",
    )
    .unwrap();
    let output = importer_output(dir.path(), &["validate", "excel.csv"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    // A repeated NDJSON key refuses the row.
    std::fs::write(
        dir.path().join("twice.ndjson"),
        r#"{"conversationId":"64b7f0c2a1e3d5f7a9c1e3f5","externalId":"a","channel":"chat","app":"t","sentAt":"2021-01-01T00:00:00Z","channel":"email"}"#,
    )
    .unwrap();
    let output = importer_output(dir.path(), &["validate", "twice.ndjson"]);
    assert_eq!(code(&output), 1, "{}", text(&output));
    assert!(
        stdout(&output).contains("line 1: the key \"channel\" appears more than once"),
        "{}",
        text(&output)
    );
    // The copy of stdin is made beside the checkpoint, never over an existing file.
    std::fs::write(dir.path().join("job.sqlite.stdin.csv"), "mine").unwrap();
    let output = run_without_api(
        dir.path(),
        &["run", "-", "--format", "csv", "--db", "job.sqlite"],
    );
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("job.sqlite.stdin.csv")).unwrap(),
        "mine"
    );
    // --created-by with --no-audit-fields would be ignored: refused.
    let output = importer_output(
        dir.path(),
        &[
            "run",
            "excel.csv",
            "--dry-run",
            "--no-audit-fields",
            "--created-by",
            "5f0000000000000000000001",
        ],
    );
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        stderr(&output).contains("--no-audit-fields"),
        "{}",
        text(&output)
    );
    // Help text names everything.
    let help = stdout(&importer_output(dir.path(), &["--help"]));
    assert!(
        help.contains("HTML") && help.contains("rejected rows"),
        "{help}"
    );
    for (command, wanted) in [
        ("status", "Checkpoint file"),
        ("report", "Checkpoint file"),
        ("resume", "Checkpoint file"),
        ("validate", "Input file"),
        ("validate", "Time zone"),
    ] {
        let help = stdout(&importer_output(dir.path(), &[command, "--help"]));
        assert!(help.contains(wanted), "{command}: {help}");
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        !readme.contains("default 16"),
        "README: one concurrency default"
    );
}

#[test]
fn resume_quiet_prints_only_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(&[]);
    let expected = write_csv(&dir.path().join("in.csv"), 10, 2, 5);
    // A key refused before anything is sent: every row stays pending.
    let output = run_job(dir.path(), &sandbox, AGENT_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 3, "{}", text(&output));
    assert_eq!(sandbox.stored(), 0);
    // As if staging had been cut short after line 6: resume must finish it, quietly.
    let db = rusqlite::Connection::open(dir.path().join("job.sqlite")).unwrap();
    db.execute_batch(
        "DELETE FROM row WHERE line > 6;
         UPDATE job SET staging_complete = 0, staged_through_line = 6;",
    )
    .unwrap();
    drop(db);
    let output = resume_job(dir.path(), &sandbox, ADMIN_KEY, &["--retry-failed"]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let err = stderr(&output);
    for noise in [
        "send settings",
        "staging",
        "put back in the queue",
        "rate budget",
    ] {
        assert!(
            !err.contains(noise),
            "{noise:?} in a --quiet resume:\n{err}"
        );
    }
    assert!(err.contains("10 rows: 10 succeeded"), "{err}");
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn ctrl_c_while_reading_stdin_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = importer(dir.path());
    command
        .env("KUSTOMER_API_KEY", ADMIN_KEY)
        .args([
            "run",
            "-",
            "--format",
            "csv",
            "--db",
            "job.sqlite",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut stdin,
        b"conversationId,externalId,channel,app,sentAt\n",
    )
    .unwrap();
    // Reading has begun once the spool file exists; stdin stays open (no EOF).
    let spool = dir.path().join("job.sqlite.stdin.csv");
    wait_until(LIMIT, "the stdin spool", || spool.exists());
    signal(&child, "INT");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < LIMIT,
            "still reading stdin after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    assert_eq!(status.code(), Some(130));
    assert!(!spool.exists(), "the partial copy is removed");
}
