//! Interruptions of every kind, then `resume`: nothing lost, nothing created twice, order kept.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(180);

fn spawn_run(dir: &std::path::Path, sandbox: &Sandbox, key: &str, extra: &[&str]) -> Child {
    let mut command = importer_for(dir, sandbox, key);
    command
        .args(["run", "in.csv", "--db", "job.sqlite", "--quiet"])
        .args(send_flags(extra))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().expect("spawn run")
}

fn resume(
    dir: &std::path::Path,
    sandbox: &Sandbox,
    key: &str,
    extra: &[&str],
) -> std::process::Output {
    resume_job(dir, sandbox, key, extra)
}

/// Resumes until the job is done (each resume may itself be cut short by a fault).
fn resume_until_done(dir: &std::path::Path, sandbox: &Sandbox) {
    for _ in 0..10 {
        let output = resume(dir, sandbox, ADMIN_KEY, &[]);
        match code(&output) {
            0 => return,
            1 => {
                // Rows failed for transient reasons: put them back and go on.
                let output = resume(dir, sandbox, ADMIN_KEY, &["--retry-failed"]);
                if code(&output) == 0 {
                    return;
                }
            }
            _ => panic!("resume failed: {}", text(&output)),
        }
    }
    panic!("job not done after 10 resumes");
}

#[test]
fn kill_9_at_several_points_then_resume_loses_and_duplicates_nothing() {
    let sandbox = Sandbox::start(&["--latency-ms", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 1500, 40, 11);

    // First cut: as soon as the checkpoint exists (still staging, or just done), with the door
    // closed so that the run cannot get further; later cuts: once sending is under way, the
    // run held at the door after some hundreds of requests.
    sandbox.hold();
    let mut child = spawn_run(dir.path(), &sandbox, ADMIN_KEY, &["--concurrency", "8"]);
    wait_until(LIMIT, "the checkpoint created", || {
        dir.path().join("job.sqlite").exists()
    });
    kill_9_while_held(&sandbox, &mut child, LIMIT);

    for requests in [200u64, 500, 500] {
        sandbox.hold_after(requests);
        let mut child = if staging_progress(&dir.path().join("job.sqlite")).is_none() {
            // Killed before the job was recorded (no checkpoint yet, or one without a job):
            // start over with run.
            spawn_run(dir.path(), &sandbox, ADMIN_KEY, &["--concurrency", "8"])
        } else {
            let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
            command
                .args(["resume", "--db", "job.sqlite", "--quiet"])
                .args(send_flags(&["--concurrency", "8"]))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            command.spawn().unwrap()
        };
        wait_until(LIMIT, "requests held mid-run", || {
            // A run that ended (refused the checkpoint the last kill left) fails at once.
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("the run ended before {requests} requests: {status:?}");
            }
            sandbox.stat(&["held"]) > 0
        });
        kill_9_while_held(&sandbox, &mut child, LIMIT);
    }
    assert!(
        sandbox.stored() > 0 && sandbox.stored() < 1500,
        "{}",
        sandbox.stats()
    );
    resume_until_done(dir.path(), &sandbox);
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    let report = report_rows(dir.path(), "job.sqlite");
    assert!(report.iter().all(|r| r["state"] == "succeeded"));
}

/// The two files a `run` killed while creating its checkpoint was found to leave (by killing it
/// at random): the new file switched to WAL with a `-wal` of no frames, and, killed during the
/// switch itself, a hot rollback journal of the empty file. `run` adopts either; `status` calls
/// it empty, not someone else's database.
#[test]
fn a_checkpoint_left_half_created_by_kill_9_is_adopted_by_run() {
    // A rollback journal's header: its magic, no records, a nonce, the database's size before
    // the transaction (0 pages), sector and page size.
    let mut hot_journal = vec![0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
    hot_journal.extend_from_slice(&[0, 0, 0, 0, 0xa8, 0x3d, 0xaa, 0x66, 0, 0, 0, 0]);
    hot_journal.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0x10, 0]);
    hot_journal.resize(512, 0);
    for (companion, bytes) in [("-wal", vec![0u8; 32]), ("-journal", hot_journal)] {
        let sandbox = Sandbox::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let expected = write_csv(&dir.path().join("in.csv"), 40, 4, 61);
        let db = dir.path().join("job.sqlite");
        let mode: String = rusqlite::Connection::open(&db)
            .unwrap()
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        std::fs::write(dir.path().join(format!("job.sqlite{companion}")), bytes).unwrap();

        let status = importer(dir.path())
            .args(["status", "--db", "job.sqlite"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&status.stderr).contains("it is empty"),
            "{companion}: {}",
            text(&status)
        );
        let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
        assert_eq!(code(&output), 0, "{companion}: {}", text(&output));
        assert_stored_exactly_once_in_order(&sandbox, &expected);
    }
}

/// (staged_through_line, staging_complete) read straight from the checkpoint, if it has a job.
fn staging_progress(db: &std::path::Path) -> Option<(u64, bool)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(
        "SELECT staged_through_line, staging_complete FROM job",
        [],
        |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? != 0)),
    )
    .ok()
}

#[test]
fn kill_9_during_staging_resumes_staging_from_the_recorded_input() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 30_000, 300, 12);
    let db = dir.path().join("job.sqlite");
    let mut child = spawn_run(dir.path(), &sandbox, ADMIN_KEY, &[]);
    // Cut as soon as a first batch is committed and staging is still going.
    wait_until(LIMIT, "a staged batch", || {
        matches!(staging_progress(&db), Some((line, _)) if line > 0)
            || child.try_wait().unwrap().is_some()
    });
    child.kill().unwrap();
    wait_child(&mut child, LIMIT);
    let (staged_through, complete) = staging_progress(&db).expect("job recorded");
    assert!(!complete, "the cut must land during staging");
    assert!(staged_through > 0 && staged_through < 30_001);
    assert_eq!(
        sandbox.stats()["requests_total"],
        0,
        "nothing sent while staging"
    );

    // A changed input is refused while staging is unfinished, and nothing is sent.
    let original = std::fs::read(dir.path().join("in.csv")).unwrap();
    std::fs::write(dir.path().join("in.csv"), b"conversationId,channel\n").unwrap();
    let output = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("changed"),
        "{}",
        text(&output)
    );
    std::fs::remove_file(dir.path().join("in.csv")).unwrap();
    let output = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 2, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("gone"),
        "{}",
        text(&output)
    );
    assert_eq!(sandbox.stats()["requests_total"], 0);

    std::fs::write(dir.path().join("in.csv"), original).unwrap();
    resume_until_done(dir.path(), &sandbox);
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn store_then_drop_never_duplicates_during_the_run_nor_after_resume() {
    let sandbox = Sandbox::start(&["--store-then-drop", "0.15", "--seed", "7"]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 400, 10, 13);

    // A run cut short while connections are being dropped, then resumed.
    sandbox.hold_after(200);
    let mut child = spawn_run(dir.path(), &sandbox, ADMIN_KEY, &[]);
    wait_until(LIMIT, "requests held mid-run", || {
        sandbox.stat(&["held"]) > 0
    });
    kill_9_while_held(&sandbox, &mut child, LIMIT);
    resume_until_done(dir.path(), &sandbox);

    assert_stored_exactly_once_in_order(&sandbox, &expected);
    let stats = sandbox.stats();
    assert!(
        stats["faults_injected"]["store_then_drop"]
            .as_u64()
            .unwrap()
            > 10,
        "the fault must actually have fired: {stats}"
    );
}

#[test]
fn revoked_key_mid_run_stops_with_exit_3_and_resume_finishes() {
    let sandbox = Sandbox::start(&["--revoke-admin-after", "120"]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 500, 10, 14);
    let mut command = importer_for(dir.path(), &sandbox, ADMIN_KEY);
    command.args(["run", "in.csv", "--db", "job.sqlite", "--quiet"]);
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 3, "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains(ADMIN_KEY), "the key must never be printed");

    let status = status_json(dir.path(), "job.sqlite");
    let pending = status["counts"]["pending"].as_u64().unwrap();
    assert!(pending > 0, "rows left pending: {status}");
    let stored_at_stop = sandbox.stored();
    assert!(stored_at_stop <= 120);

    sandbox.post("/_sandbox/restore");
    let output = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn the_key_appears_in_no_file_or_output() {
    let sandbox = Sandbox::start(&["--error-503", "0.1", "--seed", "3"]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 100, 5, 16);
    let key_file = dir.path().join("key.txt");
    std::fs::write(&key_file, ADMIN_KEY).unwrap();
    let mut command = importer(dir.path());
    command
        .env("KUSTOMER_BASE_URL", &sandbox.url)
        .env("RUST_LOG", "trace")
        .args([
            "run",
            "in.csv",
            "--db",
            "job.sqlite",
            "--api-key-file",
            "key.txt",
        ])
        .args(send_flags(&[]));
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 0, "{}", text(&output));
    let mut seen = String::from_utf8_lossy(&output.stdout).to_string();
    seen.push_str(&String::from_utf8_lossy(&output.stderr));
    for format in ["text", "json", "csv"] {
        let mut command = importer(dir.path());
        command.args(["report", "--db", "job.sqlite", "--format", format]);
        let output = run_bounded(command, LIMIT);
        seen.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    assert!(!seen.contains(ADMIN_KEY), "key leaked into output");
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path == key_file {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let needle = ADMIN_KEY.as_bytes();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "key found in {}",
            path.display()
        );
    }
}

#[test]
fn a_checkpoint_that_cannot_grow_stops_the_run_with_exit_5_and_loses_nothing() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 1_500, 30, 17);

    // Stage everything, then stop at the preflight: a revoked key sends nothing.
    sandbox.post("/_sandbox/revoke");
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 3, "{}", text(&output));
    sandbox.post("/_sandbox/restore");
    assert_eq!(sandbox.stored(), 0);

    // Resume with every file capped just above the checkpoint's size: the write-ahead log soon
    // cannot grow, as on a full disk. SIGXFSZ is ignored (inherited across exec), so writes
    // fail with an error instead of killing the process.
    let db_size = std::fs::metadata(dir.path().join("job.sqlite"))
        .unwrap()
        .len();
    let limit_kib = db_size / 1024 + 48;
    let mut command = std::process::Command::new("bash");
    command
        .current_dir(dir.path())
        .env_remove("KUSTOMER_API_KEY")
        .env("KUSTOMER_API_KEY", ADMIN_KEY)
        .env("KUSTOMER_BASE_URL", &sandbox.url)
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" resume --db job.sqlite --quiet --concurrency 4"
        ))
        .arg(bin_path());
    let output = run_bounded(command, Duration::from_secs(180));
    assert_eq!(code(&output), 5, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("checkpoint could not be written"),
        "{}",
        text(&output)
    );
    let stored_at_stop = sandbox.stored();
    assert!(
        stored_at_stop > 0 && stored_at_stop < 1_500,
        "the cap must bite mid-run: {stored_at_stop} stored"
    );

    // With room again, resume reconciles what was in flight and finishes: nothing lost, nothing
    // created twice.
    let output = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn a_second_process_on_the_same_checkpoint_is_refused() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 400, 4, 18);
    // The first run is held mid-way: still working whatever the second one takes.
    sandbox.hold_after(40);
    let mut first = spawn_run(dir.path(), &sandbox, ADMIN_KEY, &["--concurrency", "4"]);
    wait_until(LIMIT, "the first run held mid-way", || {
        sandbox.stat(&["held"]) > 0
    });

    let second = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&second), 2, "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another kustomer-import process"),
        "{}",
        text(&second)
    );
    assert!(first.try_wait().unwrap().is_none(), "the first run ended");
    sandbox.release();

    assert_eq!(wait_child(&mut first, LIMIT).code(), Some(0));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
    // Once the first process is gone the job can be resumed again (nothing left to do).
    let output = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
}

#[test]
fn a_read_only_checkpoint_stops_the_run_with_exit_5_and_loses_nothing() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 100, 10, 19);
    // Stage everything, then stop at the preflight: a revoked key sends nothing.
    sandbox.post("/_sandbox/revoke");
    let output = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&output), 3, "{}", text(&output));
    sandbox.post("/_sandbox/restore");

    // The checkpoint file read-only, its directory writable. Permissions stop nobody as root,
    // so there the resume runs as the unprivileged user `nobody` (setpriv, util-linux).
    use std::os::unix::fs::PermissionsExt;
    let db = dir.path().join("job.sqlite");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Its companions (the lock file, any -wal or -shm) stay writable, as their owner's are.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("job.sqlite") && path != db {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
    }
    let as_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|id| id.stdout.trim_ascii() == b"0");
    let mut command = if as_root {
        let mut command = std::process::Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin_path());
        command
    } else {
        std::process::Command::new(bin_path())
    };
    command
        .current_dir(dir.path())
        .env_clear()
        .env("KUSTOMER_API_KEY", ADMIN_KEY)
        .env("KUSTOMER_BASE_URL", &sandbox.url)
        .args(["resume", "--db", "job.sqlite", "--quiet"])
        .args(send_flags(&[]));
    let output = run_bounded(command, LIMIT);
    assert_eq!(code(&output), 5, "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("readonly database"),
        "{}",
        text(&output)
    );
    // Nothing may be sent that the checkpoint cannot record.
    assert_eq!(sandbox.stat(&["creates"]), 0, "{}", sandbox.stats());

    // Writable again: resume reconciles whatever was in flight and finishes, each row once.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = resume(dir.path(), &sandbox, ADMIN_KEY, &[]);
    assert_eq!(code(&output), 0, "{}", text(&output));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

#[test]
fn a_second_run_while_the_first_is_still_staging_is_refused() {
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let expected = write_csv(&dir.path().join("in.csv"), 5_000, 100, 20);
    let db = dir.path().join("job.sqlite");
    // The door is closed: whatever staging takes, the first run cannot get past its preflight.
    sandbox.hold();
    let mut first = spawn_run(dir.path(), &sandbox, ADMIN_KEY, &[]);
    wait_until(
        LIMIT,
        "a staged batch",
        || matches!(staging_progress(&db), Some((line, _)) if line > 0),
    );
    let second = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&second), 2, "{}", text(&second));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("resume"), "{}", text(&second));
    assert!(first.try_wait().unwrap().is_none(), "the first run ended");
    sandbox.release();
    assert_eq!(wait_child(&mut first, LIMIT).code(), Some(0));
    assert_stored_exactly_once_in_order(&sandbox, &expected);
}

/// Reading stdin can take as long as the program writing it: a second `run` on the same
/// checkpoint is refused during it too, and a first run stopped before its input ended leaves
/// no checkpoint or lock file behind.
#[test]
fn a_second_run_while_the_first_is_still_reading_stdin_is_refused() {
    use std::io::Write;
    let sandbox = Sandbox::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("in.csv"), 20, 2, 21);
    let db = dir.path().join("job.sqlite");
    let mut first = importer_for(dir.path(), &sandbox, ADMIN_KEY)
        .args([
            "run",
            "-",
            "--format",
            "csv",
            "--db",
            "job.sqlite",
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The header only: the first run keeps reading, its input still open.
    let mut input = first.stdin.take().unwrap();
    input.write_all(b"externalId,conversationId\n").unwrap();
    input.flush().unwrap();
    let lock_file = dir.path().join("job.sqlite.lock");
    wait_until(LIMIT, "the first run's lock", || lock_file.exists());
    let second = run_job(dir.path(), &sandbox, ADMIN_KEY, "in.csv", &[]);
    assert_eq!(code(&second), 2, "{}", text(&second));
    assert!(
        text(&second).contains("another kustomer-import process is working on checkpoint"),
        "{}",
        text(&second)
    );
    assert!(first.try_wait().unwrap().is_none(), "the first run ended");
    signal(&first, "INT");
    let status = wait_child(&mut first, LIMIT);
    drop(input);
    assert_eq!(status.code(), Some(130));
    assert!(
        !db.exists(),
        "a run stopped before its input ended left its checkpoint"
    );
    assert!(!lock_file.exists(), "and its lock file");
    assert_eq!(sandbox.stat(&["requests_total"]), 0, "nothing was sent");
}
