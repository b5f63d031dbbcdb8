//! The sandbox binary's bulk switches reach its bulk endpoints: through the process, each
//! switch requests a job, reads it, checks the documented shape and that the switch's counter
//! in `/_sandbox/stats` fired (the behaviours in detail are tested beside the code, in
//! `src/sandbox/bulk/`).

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// `count` valid items of one conversation, referenced `r0`, `r1`, ...
fn items(count: usize) -> Vec<Value> {
    (0..count)
        .map(|index| {
            json!({
                "conversation": "0123456789abcdef01234567",
                "channel": "email",
                "app": "zendesk",
                "externalId": format!("bulk-{index}"),
                "_clientRef": format!("r{index}"),
            })
        })
        .collect()
}

/// Posts a job; its id and the status it was answered with.
fn create_job(sandbox: &Sandbox, items: &[Value]) -> (String, u16) {
    let created = http()
        .post(format!("{}/v1/messages/bulk", sandbox.url))
        .bearer_auth(ADMIN_KEY)
        .json(items)
        .send()
        .expect("bulk POST answers");
    let status = created.status().as_u16();
    let job: Value = created.json().expect("job document");
    assert_eq!(job["data"]["type"], "bulk");
    assert_eq!(job["data"]["attributes"]["status"], "queued");
    assert_eq!(job["data"]["attributes"]["completed"], false);
    let id = job["data"]["id"].as_str().expect("job id").to_owned();
    (id, status)
}

/// `GET path` with the admin key: status and JSON body (Null when not JSON).
fn read(sandbox: &Sandbox, path: &str) -> reqwest::Result<(u16, Value)> {
    let answer = http()
        .get(format!("{}{path}", sandbox.url))
        .bearer_auth(ADMIN_KEY)
        .send()?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().unwrap_or(Value::Null)))
}

/// The job's attributes (`GET /v1/bulk/{id}`).
fn job(sandbox: &Sandbox, id: &str) -> Value {
    let (status, document) = read(sandbox, &format!("/v1/bulk/{id}")).expect("job answers");
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["data"]["id"], id);
    document["data"]["attributes"].clone()
}

/// The job's batches (`GET /v1/bulk/{id}/batches`), wrapped or bare.
fn batches(sandbox: &Sandbox, id: &str) -> Vec<Value> {
    let (status, listed) =
        read(sandbox, &format!("/v1/bulk/{id}/batches")).expect("batches answer");
    assert_eq!(status, 200, "{listed}");
    let list = if listed.is_array() {
        &listed
    } else {
        &listed["data"]
    };
    list.as_array()
        .expect("a list of batches")
        .iter()
        .map(|batch| {
            assert_eq!(batch["type"], "bulk_batch", "{batch}");
            batch["attributes"].clone()
        })
        .collect()
}

/// Waits (bounded) until the job's batches counts say `complete` of them are complete.
fn wait_for_batches(sandbox: &Sandbox, id: &str, complete: u64) -> Value {
    let started = Instant::now();
    loop {
        let attributes = job(sandbox, id);
        if attributes["batches"]["complete"] == complete {
            return attributes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job {id} never reached {complete} complete batches: {attributes}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every result of every batch, in the order listed.
fn results(batches: &[Value]) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|batch| batch["results"].as_array().expect("results").clone())
        .collect()
}

#[test]
fn bulk_switches_reach_the_sandbox_process() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "0",
        "--bulk-jitter-ms",
        "0",
        "--bulk-in-order",
        "--bulk-item-error",
        "1",
        "--bulk-item-error-status",
        "409",
        "--bulk-bare-batches",
        "--bulk-answer-200",
        "--bulk-batch-items",
        "2",
    ]);
    let (id, status) = create_job(&sandbox, &items(3));
    assert_eq!(status, 200, "--bulk-answer-200");
    let attributes = wait_for_batches(&sandbox, &id, 2);
    assert_eq!(
        attributes,
        json!({"status": "complete", "completed": true, "batches": {"complete": 2, "total": 2}}),
        "--bulk-batch-items 2: three items in two batches"
    );
    let listed = batches(&sandbox, &id);
    assert_eq!(listed.len(), 2, "--bulk-bare-batches lists batches");
    let results = results(&listed);
    let references: Vec<&str> = results
        .iter()
        .map(|result| result["_clientRef"].as_str().expect("ref"))
        .collect();
    assert_eq!(references, ["r0", "r1", "r2"], "--bulk-in-order");
    assert!(results
        .iter()
        .all(|result| result["error"]["status"] == 409 && result["error"]["title"] == "Conflict"));
    assert_eq!(listed[0]["failureCount"], 2);
    assert_eq!(listed[0]["objectIds"], json!([]));
    assert_eq!(sandbox.stat(&["bulk_jobs"]), 1);
    assert_eq!(sandbox.stat(&["bulk_batches"]), 2);
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_item_error"]), 3);
    assert_eq!(sandbox.stored(), 0);
}

#[test]
fn stored_then_500_unknown_and_duplicate_refs_through_the_process() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "0",
        "--bulk-jitter-ms",
        "0",
        "--bulk-item-stored-error",
        "1",
        "--bulk-unknown-ref",
        "1",
        "--bulk-duplicate-ref",
        "1",
    ]);
    let (id, _) = create_job(&sandbox, &items(4));
    wait_for_batches(&sandbox, &id, 1);
    let results = results(&batches(&sandbox, &id));
    assert_eq!(
        results.len(),
        6,
        "four items, a ref never sent, a ref twice"
    );
    let errors = results
        .iter()
        .filter(|result| result["error"]["status"] == 500)
        .count();
    assert_eq!(errors, 4, "every item stored, then reported 500");
    let never_sent = results
        .iter()
        .filter(|result| !result["_clientRef"].as_str().expect("ref").starts_with('r'))
        .count();
    assert_eq!(never_sent, 1);
    assert_eq!(sandbox.stored(), 4);
    assert_eq!(
        sandbox.stat(&["faults_injected", "bulk_item_stored_error"]),
        4
    );
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_unknown_ref"]), 1);
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_duplicate_ref"]), 1);
}

#[test]
fn slow_jobs_and_batches_that_never_complete_through_the_process() {
    let sandbox = Sandbox::start(&[
        "--bulk-delay-ms",
        "0",
        "--bulk-jitter-ms",
        "0",
        "--bulk-batch-items",
        "1",
        "--bulk-never-complete",
        "1",
        "--bulk-slow-jobs",
        "1",
        "--bulk-slow-factor",
        "3",
    ]);
    let (id, _) = create_job(&sandbox, &items(3));
    let attributes = wait_for_batches(&sandbox, &id, 2);
    assert_eq!(attributes["status"], "running");
    assert_eq!(attributes["completed"], false);
    assert_eq!(attributes["batches"]["total"], 3);
    let listed = batches(&sandbox, &id);
    let scheduled: Vec<&Value> = listed
        .iter()
        .filter(|batch| batch["status"] == "scheduled")
        .collect();
    assert_eq!(scheduled, [&json!({"status": "scheduled", "results": []})]);
    assert_eq!(sandbox.stored(), 2);
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_never_complete"]), 1);
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_slow_jobs"]), 1);
    assert_eq!(sandbox.stat(&["bulk_jobs_complete"]), 0);
}

#[test]
fn reads_answered_429_through_the_process() {
    let sandbox = Sandbox::start(&["--bulk-read-429", "1", "--org-limit", "100"]);
    let (id, _) = create_job(&sandbox, &items(1));
    for path in [format!("/v1/bulk/{id}"), format!("/v1/bulk/{id}/batches")] {
        let answer = http()
            .get(format!("{}{path}", sandbox.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("answers");
        assert_eq!(answer.status().as_u16(), 429, "{path}");
        for header in ["retry-after", "x-ratelimit-remaining", "x-ratelimit-reset"] {
            assert!(answer.headers().contains_key(header), "{header} on {path}");
        }
        let body: Value = answer.json().expect("error body");
        assert_eq!(body["errors"][0]["code"], "too_many_requests");
    }
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_read_429"]), 2);
}

#[test]
fn reads_dropped_through_the_process() {
    let sandbox = Sandbox::start(&["--bulk-read-drop", "1"]);
    let (id, _) = create_job(&sandbox, &items(1));
    for path in [format!("/v1/bulk/{id}"), format!("/v1/bulk/{id}/batches")] {
        assert!(read(&sandbox, &path).is_err(), "{path}: closed unanswered");
    }
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_read_drop"]), 2);
    assert_eq!(sandbox.stat(&["dropped_connections"]), 2);
}

#[test]
fn invalid_bulk_switches_stop_the_sandbox_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for flags in [
        &["--bulk-item-error", "1.5"][..],
        &["--bulk-item-error-status", "418"],
        &["--bulk-drop-after-create=-1"],
        &["--bulk-delay-ms", "600001"],
        &["--bulk-batch-items", "0"],
        &["--bulk-batch-items", "101"],
        &["--bulk-slow-factor", "0"],
        &["--bulk-item-stored-error", "2"],
        &["--bulk-never-complete", "1.5"],
        &["--bulk-read-429=-0.5"],
    ] {
        let mut command = importer(dir.path());
        command
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .args(flags);
        let output = run_bounded(command, Duration::from_secs(60));
        assert_eq!(code(&output), 2, "{flags:?}: {}", text(&output));
    }
}
