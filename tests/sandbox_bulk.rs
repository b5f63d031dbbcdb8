//! The sandbox binary's bulk switches reach its bulk endpoints: a smoke test through the
//! process (the behaviours themselves are tested beside the code, in `src/sandbox/bulk/`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
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
    ]);
    let items: Vec<Value> = (0..3)
        .map(|index| {
            json!({
                "conversation": "0123456789abcdef01234567",
                "channel": "email",
                "app": "zendesk",
                "externalId": format!("bulk-{index}"),
                "_clientRef": format!("r{index}"),
            })
        })
        .collect();
    let client = http();
    let created = client
        .post(format!("{}/v1/messages/bulk", sandbox.url))
        .bearer_auth(ADMIN_KEY)
        .json(&items)
        .send()
        .expect("bulk POST answers");
    assert_eq!(created.status().as_u16(), 200, "--bulk-answer-200");
    let job: Value = created.json().expect("job document");
    let id = job["data"]["id"].as_str().expect("job id").to_owned();
    let started = Instant::now();
    let results = loop {
        let listed: Value = client
            .get(format!("{}/v1/bulk/{id}/batches", sandbox.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .expect("batches answer")
            .json()
            .expect("batches JSON");
        let listed = listed.as_array().expect("--bulk-bare-batches").clone();
        if !listed.is_empty() {
            break listed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job never completed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let references: Vec<&str> = results
        .iter()
        .map(|result| result["_clientRef"].as_str().expect("ref"))
        .collect();
    assert_eq!(references, ["r0", "r1", "r2"], "--bulk-in-order");
    assert!(results
        .iter()
        .all(|result| result["error"]["status"] == 409));
    assert_eq!(sandbox.stat(&["bulk_jobs"]), 1);
    assert_eq!(sandbox.stat(&["faults_injected", "bulk_item_error"]), 3);
    assert_eq!(sandbox.stored(), 0);
}

#[test]
fn invalid_bulk_switches_stop_the_sandbox_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for flags in [
        &["--bulk-item-error", "1.5"][..],
        &["--bulk-item-error-status", "418"],
        &["--bulk-drop-after-create=-1"],
        &["--bulk-delay-ms", "600001"],
    ] {
        let mut command = importer(dir.path());
        command
            .args(["sandbox", "--listen", "127.0.0.1:0"])
            .args(flags);
        let output = run_bounded(command, Duration::from_secs(60));
        assert_eq!(code(&output), 2, "{flags:?}: {}", text(&output));
    }
}
