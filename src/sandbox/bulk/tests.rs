//! Bulk endpoints over real loopback HTTP: one test per behaviour of the module doc.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

use crate::sandbox::{
    start, BulkConfig, RunningSandbox, SandboxConfig, ADMIN_KEY, AGENT_KEY, MESSAGES_ONLY_KEY,
    READONLY_KEY,
};

const CONVERSATION: &str = "0123456789abcdef01234567";
const ADMIN_USER: &str = "5a5a5a5a5a5a5a5a5a5a5a5a";

/// A sandbox whose jobs complete as soon as they can, unless `configure` says otherwise.
async fn sandbox_with(configure: impl FnOnce(&mut SandboxConfig)) -> RunningSandbox {
    let mut config = SandboxConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.bulk = BulkConfig {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        ..BulkConfig::default()
    };
    configure(&mut config);
    start(config).await.expect("sandbox starts")
}

/// Every request on a fresh connection: a dropped answer must not poison the next request.
fn client() -> Client {
    crate::sandbox::tests::fresh_connection_client()
}

/// A valid item of conversation `conversation` with a `_clientRef`.
fn item(conversation: &str, reference: &str) -> Value {
    json!({
        "conversation": conversation,
        "channel": "email",
        "app": "zendesk",
        "direction": "in",
        "externalId": format!("ext-{reference}"),
        "importedAt": "2024-06-01T00:00:00Z",
        "_clientRef": reference,
    })
}

/// `count` items, each in its own conversation, referenced `r0`, `r1`, ...
fn items(count: usize) -> Vec<Value> {
    (0..count)
        .map(|index| item(&format!("{index:024x}"), &format!("r{index}")))
        .collect()
}

async fn post_bulk(sandbox: &RunningSandbox, key: &str, body: &Value) -> reqwest::Result<Response> {
    client()
        .post(format!("{}/v1/messages/bulk", sandbox.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
}

/// Posts `body` with the admin key and returns the new job's id.
async fn create_job(sandbox: &RunningSandbox, body: &Value) -> String {
    let response = post_bulk(sandbox, ADMIN_KEY, body)
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("JSON body");
    assert_eq!(document["data"]["type"], "bulk");
    assert_eq!(document["data"]["attributes"]["status"], "queued");
    let id = document["data"]["id"].as_str().expect("job id").to_owned();
    assert!(crate::sandbox::validate::is_object_id(&id), "{id}");
    id
}

async fn get(sandbox: &RunningSandbox, key: &str, path: &str) -> Response {
    client()
        .get(format!("{}{path}", sandbox.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .expect("request completes")
}

/// The job's attributes (`GET /v1/bulk/{id}`).
async fn job_attributes(sandbox: &RunningSandbox, id: &str) -> Value {
    let response = get(sandbox, ADMIN_KEY, &format!("/v1/bulk/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("JSON body");
    assert_eq!(document["data"]["id"], id);
    assert_eq!(document["data"]["type"], "bulk");
    document["data"]["attributes"].clone()
}

async fn status_of(sandbox: &RunningSandbox, id: &str) -> String {
    job_attributes(sandbox, id).await["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

/// Polls the job until its status is `wanted` (bounded: machines are shared).
async fn wait_for_status(sandbox: &RunningSandbox, id: &str, wanted: &str) {
    let started = Instant::now();
    loop {
        let status = status_of(sandbox, id).await;
        if status == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job {id} still {status}, waiting for {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The attributes of every batch of a job, as answered (wrapped in `data`).
async fn batches(sandbox: &RunningSandbox, id: &str) -> Vec<Value> {
    let response = get(sandbox, ADMIN_KEY, &format!("/v1/bulk/{id}/batches")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("JSON body");
    document["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|batch| {
            assert_eq!(batch["type"], "bulk_batch");
            assert!(batch["id"].is_string(), "{batch}");
            batch["attributes"].clone()
        })
        .collect()
}

/// Every result of every batch, in the order listed.
fn results_of(batches: &[Value]) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|batch| batch["results"].as_array().expect("results").clone())
        .collect()
}

/// Results by `_clientRef`.
fn by_reference(results: &[Value]) -> BTreeMap<String, Value> {
    results
        .iter()
        .map(|result| {
            (
                result["_clientRef"]
                    .as_str()
                    .expect("_clientRef")
                    .to_owned(),
                result.clone(),
            )
        })
        .collect()
}

/// Runs a job to completion: its results, every batch's in the order listed.
async fn completed_results(sandbox: &RunningSandbox, body: &Value) -> Vec<Value> {
    let id = create_job(sandbox, body).await;
    wait_for_status(sandbox, &id, "complete").await;
    let listed = batches(sandbox, &id).await;
    assert!(listed.iter().all(|batch| batch["status"] == "complete"));
    results_of(&listed)
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Waits (bounded) until `condition` holds on the stats.
async fn wait_for_stats(
    sandbox: &RunningSandbox,
    what: &str,
    condition: impl Fn(&crate::sandbox::SandboxStats) -> bool,
) {
    let started = Instant::now();
    while !condition(&sandbox.stats()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never: {what}: {:?}",
            sandbox.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_job_stores_every_item_like_a_single_create_and_lists_its_results() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut body = items(3);
    body[0]["createdAt"] = json!("2020-05-01T08:00:00.123Z");
    body[0]["createdBy"] = json!(ADMIN_USER);
    body[0]["sentAt"] = json!("2020-05-01T10:00:00+02:00");
    let results = completed_results(&sandbox, &Value::Array(body)).await;
    assert_eq!(results.len(), 3);
    let results = by_reference(&results);
    for reference in ["r0", "r1", "r2"] {
        let result = &results[reference];
        assert_eq!(result["status"], "created", "{result}");
        assert!(result["error"].is_null());
        let object_id = result["objectId"].as_str().expect("objectId");
        // The lookup finds the message with the document of a single create.
        let found: Value = get(
            &sandbox,
            ADMIN_KEY,
            &format!("/v1/messages/externalId=ext-{reference}"),
        )
        .await
        .json()
        .await
        .expect("JSON body");
        assert_eq!(found["data"]["id"], object_id);
        assert_eq!(found["data"]["type"], "message");
        assert_eq!(
            found["data"]["attributes"]["importedAt"],
            "2024-06-01T00:00:00.000Z"
        );
        assert!(found["data"]["attributes"].get("_clientRef").is_none());
        assert!(found["data"]["attributes"].get("conversation").is_none());
    }
    let first = &sandbox.messages().conversations[&format!("{:024x}", 0)][0];
    assert_eq!(first.id, results["r0"]["objectId"].as_str().expect("id"));
    assert_eq!(first.created_by, ADMIN_USER);
    assert_eq!(
        first.created_at.as_deref(),
        Some("2020-05-01T08:00:00.123Z")
    );
    assert_eq!(first.sent_at.as_deref(), Some("2020-05-01T08:00:00.000Z"));

    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 3);
    assert_eq!(stats.bulk.bulk_jobs, 1);
    assert_eq!(stats.bulk.bulk_items, 3);
    assert_eq!(stats.bulk.bulk_items_created, 3);
    assert_eq!(stats.bulk.bulk_jobs_complete, 1);
    assert!(stats.bulk.bulk_polls >= 1);
    assert_eq!(stats.bulk.bulk_batch_reads, 1);
    assert_eq!(stats.creates, 0, "bulk items are not single creates");
    // The stats keys sit at the top level of /_sandbox/stats.
    let raw: Value = client()
        .get(format!("{}/_sandbox/stats", sandbox.base_url()))
        .send()
        .await
        .expect("stats answer")
        .json()
        .await
        .expect("JSON body");
    for key in [
        "bulk_jobs",
        "bulk_items",
        "bulk_batches",
        "bulk_batches_complete",
        "bulk_polls",
        "bulk_batch_reads",
    ] {
        assert!(raw[key].is_u64(), "{key} in {raw}");
    }
    for key in [
        "bulk_item_error",
        "bulk_item_stored_error",
        "bulk_drop_after_create",
        "bulk_out_of_order",
        "bulk_slow_jobs",
        "bulk_never_complete",
        "bulk_unknown_ref",
        "bulk_duplicate_ref",
        "bulk_read_429",
        "bulk_read_drop",
    ] {
        assert!(raw["faults_injected"][key].is_u64(), "{key} in {raw}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn items_without_client_refs_are_accepted_and_listed_with_null_refs() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut body = items(2);
    for each in &mut body {
        each.as_object_mut().expect("object").remove("_clientRef");
    }
    let results = completed_results(&sandbox, &Value::Array(body)).await;
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|result| result.get("_clientRef").is_none() && result["status"] == "created"));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_agent_key_has_its_audit_fields_overwritten_and_cannot_read_jobs() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut body = items(1);
    body[0]["createdBy"] = json!(ADMIN_USER);
    body[0]["createdAt"] = json!("2020-05-01T08:00:00Z");
    let response = post_bulk(&sandbox, AGENT_KEY, &Value::Array(body))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("JSON body");
    let id = document["data"]["id"].as_str().expect("id").to_owned();
    for path in [format!("/v1/bulk/{id}"), format!("/v1/bulk/{id}/batches")] {
        let refused = get(&sandbox, AGENT_KEY, &path).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
        let text = refused.text().await.expect("body");
        assert!(text.contains("org.permission.bulk.read"), "{text}");
    }
    wait_for_status(&sandbox, &id, "complete").await;
    let stored = &sandbox.messages().conversations[&format!("{:024x}", 0)][0];
    assert_eq!(stored.created_by, "65a00000000000000000b0b2");
    assert_ne!(
        stored.created_at.as_deref(),
        Some("2020-05-01T08:00:00.000Z")
    );

    let response = post_bulk(&sandbox, READONLY_KEY, &Value::Array(items(1)))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(sandbox.stats().bulk.bulk_jobs, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_malformed_array_is_refused_whole_and_creates_no_job() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut mixed_refs = items(2);
    mixed_refs[1]
        .as_object_mut()
        .expect("object")
        .remove("_clientRef");
    let mut repeated_refs = items(2);
    repeated_refs[1]["_clientRef"] = json!("r0");
    let mut long_ref = items(1);
    long_ref[0]["_clientRef"] = json!("é".repeat(256));
    let mut numeric_ref = items(1);
    numeric_ref[0]["_clientRef"] = json!(7);
    let mut empty_ref = items(1);
    empty_ref[0]["_clientRef"] = json!("");
    let cases = [
        ("an object", json!({"conversation": CONVERSATION})),
        ("an empty array", json!([])),
        ("101 items", Value::Array(items(101))),
        (
            "an item that is no object",
            json!([item(CONVERSATION, "a"), 5]),
        ),
        ("_clientRef on some items only", Value::Array(mixed_refs)),
        ("a repeated _clientRef", Value::Array(repeated_refs)),
        ("a _clientRef of 256 characters", Value::Array(long_ref)),
        ("a _clientRef that is no string", Value::Array(numeric_ref)),
        ("an empty _clientRef", Value::Array(empty_ref)),
    ];
    for (what, body) in cases {
        let response = post_bulk(&sandbox, ADMIN_KEY, &body)
            .await
            .expect("request completes");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let document: Value = response.json().await.expect("JSON body");
        assert_eq!(document["errors"][0]["code"], "bad_request", "{what}");
    }
    let mut longest = items(1);
    longest[0]["_clientRef"] = json!("é".repeat(255));
    let results = completed_results(&sandbox, &Value::Array(longest)).await;
    assert_eq!(results[0]["status"], "created");
    let broken = client()
        .post(format!("{}/v1/messages/bulk", sandbox.base_url()))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("[{")
        .send()
        .await
        .expect("request completes");
    assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
    let stats = sandbox.stats();
    assert_eq!(stats.bulk.bulk_jobs, 1);
    assert_eq!(stats.messages_stored, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_invalid_item_fails_alone_with_400_unless_invalid_items_refuse_the_request() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut body = items(4);
    body[1]["channel"] = json!("pigeon");
    body[2]
        .as_object_mut()
        .expect("object")
        .remove("conversation");
    body[3]["directionType"] = json!("initial");
    let results = by_reference(&completed_results(&sandbox, &Value::Array(body.clone())).await);
    assert_eq!(results["r0"]["status"], "created");
    for (reference, says) in [
        ("r1", "channel"),
        ("r2", "conversation is required"),
        ("r3", "directionType is not allowed"),
    ] {
        let result = &results[reference];
        assert_eq!(result["status"], "error", "{result}");
        assert!(result.get("objectId").is_none(), "{result}");
        assert_eq!(result["error"]["status"], 400);
        assert_eq!(result["error"]["code"], "bad_request");
        let message = result["error"]["detail"].as_str().expect("detail");
        assert!(message.contains(says), "{reference}: {message}");
    }
    assert_eq!(sandbox.stats().messages_stored, 1);
    sandbox.shutdown().await;

    let strict = sandbox_with(|config| config.bulk.reject_invalid = true).await;
    let response = post_bulk(&strict, ADMIN_KEY, &Value::Array(body))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let document: Value = response.json().await.expect("JSON body");
    let pointers: Vec<&str> = document["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|error| error["source"]["pointer"].as_str())
        .collect();
    for expected in [
        "/1/data/attributes/channel",
        "/2/data/attributes/conversation",
        "/3/data/attributes/directionType",
    ] {
        assert!(pointers.contains(&expected), "{expected} in {pointers:?}");
    }
    let stats = strict.stats();
    assert_eq!((stats.bulk.bulk_jobs, stats.messages_stored), (0, 0));
    strict.shutdown().await;
}

#[tokio::test]
async fn an_unknown_conversation_fails_its_item_with_404() {
    let sandbox = sandbox_with(|_| {}).await;
    let body = json!([
        item("dead00000000000000000001", "gone"),
        item(CONVERSATION, "here")
    ]);
    let results = by_reference(&completed_results(&sandbox, &body).await);
    assert_eq!(results["gone"]["status"], "error");
    assert_eq!(results["gone"]["error"]["status"], 404);
    assert_eq!(results["gone"]["error"]["code"], "not_found");
    assert_eq!(results["here"]["status"], "created");
    let stats = sandbox.stats();
    assert_eq!(stats.bulk.bulk_items_failed, 1);
    assert_eq!(stats.faults_injected.bulk.bulk_item_error, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn items_without_imported_at_count_against_the_customer_limit() {
    let sandbox = sandbox_with(|config| config.customer_limit = 1).await;
    let mut body: Vec<Value> = (0..3)
        .map(|index| item(CONVERSATION, &format!("c{index}")))
        .collect();
    body[0]
        .as_object_mut()
        .expect("object")
        .remove("importedAt");
    body[1]
        .as_object_mut()
        .expect("object")
        .remove("importedAt");
    let results = by_reference(&completed_results(&sandbox, &Value::Array(body)).await);
    let limited: Vec<_> = results
        .values()
        .filter(|result| result["error"]["status"] == 429)
        .collect();
    assert_eq!(limited.len(), 1, "{results:?}");
    assert_eq!(results["c2"]["status"], "created", "importedAt is exempt");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn jobs_are_queued_then_running_then_complete_and_list_no_batch_while_queued() {
    // A job with a long delay is still queued when polled: no batch listed yet.
    let slow = sandbox_with(|config| config.bulk.delay = Duration::from_secs(120)).await;
    let id = create_job(&slow, &Value::Array(items(2))).await;
    assert_eq!(status_of(&slow, &id).await, "queued");
    assert!(batches(&slow, &id).await.is_empty());
    slow.trigger_shutdown();

    // Held: the job starts running but stores nothing until released; its batches are listed,
    // the first `scheduled`, the rest `queued`, none with results.
    let sandbox = sandbox_with(|config| config.bulk.batch_items = 1).await;
    sandbox.shared.bulk.set_hold(true);
    let id = create_job(&sandbox, &Value::Array(items(2))).await;
    wait_for_status(&sandbox, &id, "running").await;
    let pending = batches(&sandbox, &id).await;
    assert_eq!(
        pending,
        [
            json!({"status": "scheduled", "results": []}),
            json!({"status": "queued", "results": []})
        ]
    );
    assert_eq!(sandbox.stats().messages_stored, 0);
    let release = client()
        .post(format!("{}/_sandbox/bulk/release", sandbox.base_url()))
        .send()
        .await
        .expect("release answers");
    assert_eq!(release.status(), StatusCode::NO_CONTENT);
    wait_for_status(&sandbox, &id, "complete").await;
    assert_eq!(batches(&sandbox, &id).await.len(), 2);
    assert_eq!(sandbox.stats().messages_stored, 2);

    let unknown = get(&sandbox, ADMIN_KEY, "/v1/bulk/ffffffffffffffffffffffff").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let unknown = get(&sandbox, ADMIN_KEY, "/v1/bulk/nope/batches").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    sandbox.shutdown().await;
}

/// The `_clientRef`s of one 100-item job on one conversation, in the order the sandbox
/// processed them, and the order the messages were stored in.
async fn processing_order(in_order: bool, seed: u64) -> (Vec<String>, Vec<String>) {
    let sandbox = sandbox_with(|config| {
        config.bulk.in_order = in_order;
        config.seed = seed;
    })
    .await;
    let body: Vec<Value> = (0..100)
        .map(|index| item(CONVERSATION, &format!("{index:03}")))
        .collect();
    let listed: Vec<String> = completed_results(&sandbox, &Value::Array(body))
        .await
        .iter()
        .map(|result| result["_clientRef"].as_str().expect("ref").to_owned())
        .collect();
    let stored = sandbox.messages().conversations[CONVERSATION]
        .iter()
        .map(|message| {
            message
                .external_id
                .as_deref()
                .and_then(|id| id.strip_prefix("ext-"))
                .expect("externalId")
                .to_owned()
        })
        .collect();
    sandbox.shutdown().await;
    (listed, stored)
}

#[tokio::test]
async fn items_are_processed_in_random_order_unless_in_order() {
    let array_order: Vec<String> = (0..100).map(|index| format!("{index:03}")).collect();
    let (listed, stored) = processing_order(false, 11).await;
    assert_ne!(listed, array_order, "shuffled by default");
    assert_eq!(listed, stored, "results list the processing order");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, array_order, "every item once");
    let (again, _) = processing_order(false, 11).await;
    assert_eq!(again, listed, "the seed decides the order");

    let (listed, stored) = processing_order(true, 11).await;
    assert_eq!(listed, array_order);
    assert_eq!(stored, array_order);
}

#[tokio::test]
async fn a_held_back_job_completes_only_after_a_later_one() {
    let sandbox = sandbox_with(|config| config.bulk.out_of_order = 1.0).await;
    let first = create_job(&sandbox, &Value::Array(items(2))).await;
    let second = create_job(&sandbox, &json!([item(CONVERSATION, "later")])).await;
    wait_for_status(&sandbox, &first, "complete").await;
    // The first waited for a job created after it: the second (which itself waited out the
    // held-back limit, no job coming after it).
    assert_eq!(status_of(&sandbox, &second).await, "complete");
    let stats = sandbox.stats();
    assert_eq!(stats.faults_injected.bulk.bulk_out_of_order, 2);
    assert_eq!(stats.bulk.bulk_jobs_overtaking, 1);
    assert_eq!(stats.messages_stored, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn injected_item_errors_use_the_listed_statuses_and_store_nothing() {
    let sandbox = sandbox_with(|config| {
        config.bulk.item_error = 1.0;
        config.bulk.item_error_statuses = vec![409, 429, 503];
    })
    .await;
    let results = completed_results(&sandbox, &Value::Array(items(40))).await;
    let mut statuses: Vec<u64> = results
        .iter()
        .map(|result| {
            assert_eq!(result["status"], "error");
            assert!(result.get("objectId").is_none(), "{result}");
            result["error"]["status"].as_u64().expect("status")
        })
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    assert_eq!(
        statuses,
        [409, 429, 503],
        "a 429 is refused before processing"
    );
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 0);
    assert_eq!(stats.faults_injected.bulk.bulk_item_error, 40);
    assert_eq!(stats.bulk.bulk_items_failed, 40);
    sandbox.shutdown().await;
}

/// The status of one single create in `CONVERSATION`.
async fn single_create(sandbox: &RunningSandbox) -> u16 {
    client()
        .post(format!(
            "{}/v1/conversations/{CONVERSATION}/messages",
            sandbox.base_url()
        ))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"channel": "email", "app": "zendesk"}))
        .send()
        .await
        .expect("request completes")
        .status()
        .as_u16()
}

/// The result of each item of three jobs, by `_clientRef`, with half the items failing.
async fn item_outcomes(seed: u64, singles_between: bool) -> BTreeMap<String, String> {
    let sandbox = sandbox_with(|config| {
        config.seed = seed;
        config.bulk.item_error = 0.5;
        config.faults.error_500 = 0.5;
    })
    .await;
    let mut outcomes = BTreeMap::new();
    for job in 0..3 {
        let body: Vec<Value> = (0..10)
            .map(|index| item(CONVERSATION, &format!("j{job}-{index}")))
            .collect();
        for result in completed_results(&sandbox, &Value::Array(body)).await {
            let outcome = match result["error"]["status"].as_u64() {
                Some(status) => status.to_string(),
                None => "created".to_owned(),
            };
            outcomes.insert(
                result["_clientRef"].as_str().expect("ref").to_owned(),
                outcome,
            );
        }
        if singles_between {
            single_create(&sandbox).await;
        }
    }
    sandbox.shutdown().await;
    outcomes
}

/// The statuses of five single creates, with bulk jobs before them or not.
async fn create_statuses(bulk_first: bool) -> Vec<u16> {
    let sandbox = sandbox_with(|config| {
        config.seed = 5;
        config.faults.error_500 = 0.5;
        config.bulk.item_error = 0.5;
    })
    .await;
    if bulk_first {
        completed_results(&sandbox, &Value::Array(items(20))).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(single_create(&sandbox).await);
    }
    sandbox.shutdown().await;
    statuses
}

#[tokio::test]
async fn bulk_dice_follow_the_seed_on_their_own_stream() {
    let outcomes = item_outcomes(3, false).await;
    assert!(outcomes.values().any(|outcome| outcome == "created"));
    assert!(outcomes.values().any(|outcome| outcome != "created"));
    assert_eq!(
        item_outcomes(3, false).await,
        outcomes,
        "same seed, same dice"
    );
    assert_eq!(
        item_outcomes(3, true).await,
        outcomes,
        "single creates do not shift the bulk dice"
    );
    assert_ne!(item_outcomes(4, false).await, outcomes);
    assert_eq!(
        create_statuses(true).await,
        create_statuses(false).await,
        "bulk jobs do not shift the create dice"
    );
}

#[tokio::test]
async fn a_dropped_answer_still_leaves_a_job_that_runs() {
    let sandbox = sandbox_with(|config| config.bulk.drop_after_create = 1.0).await;
    let outcome = post_bulk(&sandbox, ADMIN_KEY, &Value::Array(items(3))).await;
    assert!(outcome.is_err(), "the connection closes without an answer");
    let started = Instant::now();
    while sandbox.stats().bulk.bulk_jobs_complete < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job never completed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = sandbox.stats();
    assert_eq!(stats.bulk.bulk_jobs, 1);
    assert_eq!(stats.messages_stored, 3);
    assert_eq!(stats.faults_injected.bulk.bulk_drop_after_create, 1);
    assert_eq!(stats.dropped_connections, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bulk_requests_count_against_the_org_limit_and_carry_rate_headers() {
    let sandbox = sandbox_with(|config| config.org_limit = Some(3)).await;
    let response = post_bulk(&sandbox, ADMIN_KEY, &Value::Array(items(5)))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()["x-ratelimit-remaining"].to_str().ok(),
        Some("2")
    );
    let document: Value = response.json().await.expect("JSON body");
    let id = document["data"]["id"].as_str().expect("id").to_owned();
    let poll = get(&sandbox, ADMIN_KEY, &format!("/v1/bulk/{id}")).await;
    assert_eq!(poll.status(), StatusCode::OK);
    assert_eq!(
        poll.headers()["x-ratelimit-remaining"].to_str().ok(),
        Some("1")
    );
    let read = get(&sandbox, ADMIN_KEY, &format!("/v1/bulk/{id}/batches")).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        read.headers()["x-ratelimit-remaining"].to_str().ok(),
        Some("0")
    );
    for path in [format!("/v1/bulk/{id}"), format!("/v1/bulk/{id}/batches")] {
        let limited = get(&sandbox, ADMIN_KEY, &path).await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(limited.headers().contains_key("retry-after"));
        assert!(limited.headers().contains_key("x-ratelimit-reset"));
    }
    let limited = post_bulk(&sandbox, ADMIN_KEY, &Value::Array(items(1)))
        .await
        .expect("request completes");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let stats = sandbox.stats();
    assert_eq!(stats.bulk.bulk_jobs, 1);
    assert_eq!(stats.faults_injected.rate_limited_org, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bare_batches_and_200_answers_on_request() {
    let sandbox = sandbox_with(|config| {
        config.bulk.bare_batches = true;
        config.bulk.answer_200 = true;
    })
    .await;
    let response = post_bulk(&sandbox, ADMIN_KEY, &Value::Array(items(2)))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("JSON body");
    let id = document["data"]["id"].as_str().expect("id").to_owned();
    let pending: Value = get(&sandbox, ADMIN_KEY, &format!("/v1/bulk/{id}/batches"))
        .await
        .json()
        .await
        .expect("JSON body");
    assert!(pending.is_array());
    wait_for_status(&sandbox, &id, "complete").await;
    let listed: Value = get(&sandbox, ADMIN_KEY, &format!("/v1/bulk/{id}/batches"))
        .await
        .json()
        .await
        .expect("JSON body");
    let listed = listed.as_array().expect("a bare array");
    assert_eq!(listed.len(), 1, "two items fit one batch");
    assert_eq!(listed[0]["type"], "bulk_batch");
    let results = results_of(&[listed[0]["attributes"].clone()]);
    assert_eq!(results.len(), 2);
    assert!(results
        .iter()
        .all(|result| result["status"] == "created" && result["objectId"].is_string()));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_bulk_settings_are_refused_at_start() {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let cases: [fn(&mut BulkConfig); 16] = [
        |bulk| bulk.item_error = 1.5,
        |bulk| bulk.item_stored_error = -0.5,
        |bulk| bulk.slow_jobs = 1.1,
        |bulk| bulk.never_complete = 2.0,
        |bulk| bulk.unknown_ref = -1.0,
        |bulk| bulk.duplicate_ref = 1.01,
        |bulk| bulk.read_429 = 3.0,
        |bulk| bulk.read_drop = -0.01,
        |bulk| bulk.batch_items = 0,
        |bulk| bulk.batch_items = 101,
        |bulk| bulk.slow_factor = 0,
        |bulk| bulk.slow_factor = 101,
        |bulk| bulk.out_of_order = -0.1,
        |bulk| bulk.drop_after_create = 2.0,
        |bulk| bulk.item_error_statuses = vec![418],
        |bulk| bulk.delay = Duration::from_secs(601),
    ];
    for configure in cases {
        let mut config = SandboxConfig::new(loopback);
        configure(&mut config.bulk);
        assert!(start(config).await.is_err(), "{:?}", {
            let mut bulk = BulkConfig::default();
            configure(&mut bulk);
            bulk
        });
    }
    let mut config = SandboxConfig::new(loopback);
    config.bulk.item_error_statuses = vec![];
    assert!(start(config).await.is_err());
}

#[test]
fn delays_stay_within_the_jitter_and_dice_are_always_drawn_alike() {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    let config = BulkConfig {
        delay: Duration::from_millis(200),
        jitter: Duration::from_millis(100),
        ..BulkConfig::default()
    };
    assert_eq!(config.draw_delay(0.0), Duration::from_millis(100));
    assert_eq!(config.draw_delay(1.0), Duration::from_millis(300));
    assert_eq!(config.pick_status(0.0), 400);
    assert_eq!(config.pick_status(0.999_999), 503);
    // Switches change what the dice mean, never how many are drawn.
    let mut plain = StdRng::seed_from_u64(1);
    let mut switched = StdRng::seed_from_u64(1);
    let loud = BulkConfig {
        in_order: true,
        item_error: 1.0,
        out_of_order: 1.0,
        drop_after_create: 1.0,
        item_stored_error: 1.0,
        slow_jobs: 1.0,
        slow_factor: 7,
        never_complete: 1.0,
        unknown_ref: 1.0,
        duplicate_ref: 1.0,
        batch_items: 3,
        ..config.clone()
    };
    let quiet = config.roll(&mut plain, 7);
    let dice = loud.roll(&mut switched, 7);
    let next = |rng: &mut StdRng| rand::Rng::random::<u64>(rng);
    assert_eq!(next(&mut plain), next(&mut switched));
    // The slow factor multiplies the drawn delay; the stuck batch and the duplicate are drawn.
    assert!(!quiet.slow && dice.slow);
    assert_eq!(dice.delay, quiet.delay * 7);
    assert!(dice.stuck_batch.is_some_and(|batch| batch < 3), "{dice:?}");
    assert!(dice.duplicate_item.is_some_and(|item| item < 7), "{dice:?}");
    assert!(dice.stored_errors.iter().all(|stored| *stored));
    assert_eq!((quiet.stuck_batch, quiet.duplicate_item), (None, None));
    // Reads draw two numbers each, whatever the switches; 429 wins over a drop.
    let reads = BulkConfig {
        read_429: 1.0,
        read_drop: 1.0,
        ..config.clone()
    };
    let mut a = StdRng::seed_from_u64(2);
    let mut b = StdRng::seed_from_u64(2);
    assert_eq!(reads.roll_read(&mut a), super::ReadFault::TooManyRequests);
    assert_eq!(config.roll_read(&mut b), super::ReadFault::None);
    assert_eq!(next(&mut a), next(&mut b));
    let drops = BulkConfig {
        read_drop: 1.0,
        ..config.clone()
    };
    assert_eq!(drops.roll_read(&mut a), super::ReadFault::Drop);
}

#[tokio::test]
async fn a_job_answers_in_the_documented_shapes_batch_by_batch() {
    let sandbox = sandbox_with(|_| {}).await;
    let mut body = items(100);
    body[7]["channel"] = json!("pigeon");
    let response = post_bulk(&sandbox, ADMIN_KEY, &Value::Array(body))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("JSON body");
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created,
        json!({"data": {"type": "bulk", "id": id, "attributes": {
            "status": "queued", "completed": false,
            "batches": {"complete": 0, "total": 4}}}}),
        "a 100-item job has four batches of 25 by default"
    );
    wait_for_status(&sandbox, &id, "complete").await;
    assert_eq!(
        job_attributes(&sandbox, &id).await,
        json!({"status": "complete", "completed": true, "batches": {"complete": 4, "total": 4}})
    );
    let listed = batches(&sandbox, &id).await;
    assert_eq!(listed.len(), 4);
    let mut references = Vec::new();
    for batch in &listed {
        assert_eq!(
            keys(batch),
            [
                "failureCount",
                "objectIds",
                "results",
                "status",
                "successCount"
            ]
        );
        assert_eq!(batch["status"], "complete");
        let results = batch["results"].as_array().expect("results");
        assert_eq!(results.len(), 25);
        let object_ids: Vec<&Value> = results
            .iter()
            .filter_map(|result| result.get("objectId"))
            .collect();
        assert_eq!(
            batch["objectIds"]
                .as_array()
                .expect("ids")
                .iter()
                .collect::<Vec<_>>(),
            object_ids
        );
        assert_eq!(batch["successCount"], object_ids.len());
        assert_eq!(batch["failureCount"], results.len() - object_ids.len());
        for result in results {
            references.push(result["_clientRef"].as_str().expect("ref").to_owned());
            if result["status"] == "created" {
                assert_eq!(keys(result), ["_clientRef", "objectId", "status"]);
            } else {
                assert_eq!(keys(result), ["_clientRef", "error", "status"]);
                assert_eq!(
                    keys(&result["error"]),
                    ["code", "detail", "status", "title"]
                );
                assert_eq!(result["error"]["status"], 400);
                assert_eq!(result["error"]["title"], "Bad Request");
            }
        }
    }
    references.sort();
    references.dedup();
    assert_eq!(references.len(), 100, "every item once");
    let stats = sandbox.stats();
    assert_eq!(
        (stats.bulk.bulk_batches, stats.bulk.bulk_batches_complete),
        (4, 4)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_client_reads_the_sandboxs_answers() {
    use crate::client::{
        ApiClient, ApiKey, BatchCounts, BatchStatus, BulkJobStatus, ClientConfig, ItemOutcome,
    };
    // One batch stuck: the job stays running with one batch complete, one scheduled.
    let sandbox = sandbox_with(|config| {
        config.bulk.batch_items = 2;
        config.bulk.never_complete = 1.0;
        config.bulk.in_order = true;
    })
    .await;
    let api = ApiClient::new(
        ClientConfig {
            base_url: sandbox.base_url(),
            key: ApiKey::new(ADMIN_KEY.into()),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        },
        None,
    )
    .expect("client builds");
    let mut body = items(4);
    body[1]["channel"] = json!("pigeon");
    let (created, _) = api.create_bulk_job(&Value::Array(body).to_string()).await;
    let id = created.expect("a job id");
    wait_for_stats(&sandbox, "one batch complete", |stats| {
        stats.bulk.bulk_batches_complete == 1
    })
    .await;
    let job = api.bulk_job(&id).await.expect("the job reads");
    assert_eq!(job.status, BulkJobStatus::Running);
    assert!(!job.completed && !job.is_complete());
    assert_eq!(
        job.batches,
        Some(BatchCounts {
            complete: 1,
            total: 2
        })
    );
    let read = api.bulk_batches(&id).await.expect("the batches read");
    assert_eq!(read.batches.len(), 2);
    assert!(read.batches.contains(&BatchStatus::Complete));
    assert!(read.batches.contains(&BatchStatus::Scheduled));
    assert_eq!(read.items.len(), 2);
    for item in &read.items {
        match (item.client_ref.as_deref(), &item.outcome) {
            (Some("r0" | "r2" | "r3"), ItemOutcome::Created { .. }) => {}
            (Some("r1"), ItemOutcome::Failed { status: 400, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!read.all_listed_complete(), "not all complete");
    // A created message read back names its conversation: item `rN` went to conversation N.
    let (reference, object_id) = read
        .items
        .iter()
        .find_map(|item| match (&item.client_ref, &item.outcome) {
            (Some(reference), ItemOutcome::Created { object_id }) => {
                Some((reference.clone(), object_id.clone()))
            }
            _ => None,
        })
        .expect("either batch holds a created item");
    let index: usize = reference
        .strip_prefix('r')
        .and_then(|index| index.parse().ok())
        .expect("rN");
    let message = api.message(&object_id).await.expect("the message reads");
    assert_eq!(message.conversation_id, Some(format!("{index:024x}")));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_stored_item_can_be_reported_as_error_500() {
    let sandbox = sandbox_with(|config| config.bulk.item_stored_error = 1.0).await;
    let results = completed_results(&sandbox, &Value::Array(items(3))).await;
    for result in &results {
        assert_eq!(result["status"], "error");
        assert_eq!(result["error"]["status"], 500);
        assert_eq!(result["error"]["code"], "internal_server_error");
        assert!(result.get("objectId").is_none());
    }
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 3, "stored all the same");
    assert_eq!(stats.faults_injected.bulk.bulk_item_stored_error, 3);
    assert_eq!(stats.bulk.bulk_items_created, 3);
    assert_eq!(stats.bulk.bulk_items_failed, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_slow_job_is_counted_and_takes_its_factor() {
    let sandbox = sandbox_with(|config| {
        config.bulk.delay = Duration::from_secs(10);
        config.bulk.slow_jobs = 1.0;
        config.bulk.slow_factor = 100;
    })
    .await;
    let id = create_job(&sandbox, &Value::Array(items(2))).await;
    assert_eq!(sandbox.stats().faults_injected.bulk.bulk_slow_jobs, 1);
    assert_eq!(status_of(&sandbox, &id).await, "queued");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_batch_that_never_completes_keeps_its_job_running() {
    let sandbox = sandbox_with(|config| {
        config.bulk.batch_items = 1;
        config.bulk.never_complete = 1.0;
    })
    .await;
    let id = create_job(&sandbox, &Value::Array(items(3))).await;
    wait_for_stats(&sandbox, "the other batches complete", |stats| {
        stats.bulk.bulk_batches_complete == 2 && stats.faults_injected.bulk.bulk_never_complete == 1
    })
    .await;
    let listed = batches(&sandbox, &id).await;
    let statuses: Vec<&str> = listed
        .iter()
        .map(|batch| batch["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "complete").count(), 2);
    let stuck: Vec<&Value> = listed
        .iter()
        .filter(|b| b["status"] == "scheduled")
        .collect();
    assert_eq!(stuck, [&json!({"status": "scheduled", "results": []})]);
    assert_eq!(
        job_attributes(&sandbox, &id).await,
        json!({"status": "running", "completed": false, "batches": {"complete": 2, "total": 3}})
    );
    let stats = sandbox.stats();
    assert_eq!(
        stats.messages_stored, 2,
        "the stuck batch's item is never processed"
    );
    assert_eq!(stats.bulk.bulk_jobs_complete, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_result_can_name_a_ref_never_sent_or_list_a_ref_twice() {
    let sandbox = sandbox_with(|config| {
        config.bulk.batch_items = 2;
        config.bulk.unknown_ref = 1.0;
        config.bulk.duplicate_ref = 1.0;
    })
    .await;
    let results = completed_results(&sandbox, &Value::Array(items(4))).await;
    assert_eq!(results.len(), 6, "four items, one ghost, one contradiction");
    let mut by_ref: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for result in &results {
        by_ref
            .entry(result["_clientRef"].as_str().expect("ref"))
            .or_default()
            .push(result);
    }
    let unknown: Vec<&&str> = by_ref.keys().filter(|r| !r.starts_with('r')).collect();
    assert_eq!(unknown.len(), 1, "{by_ref:?}");
    let twice: Vec<_> = by_ref.values().filter(|listed| listed.len() == 2).collect();
    assert_eq!(twice.len(), 1, "{by_ref:?}");
    assert_ne!(
        twice[0][0]["status"], twice[0][1]["status"],
        "contradicting answers"
    );
    let stats = sandbox.stats();
    assert_eq!(stats.faults_injected.bulk.bulk_unknown_ref, 1);
    assert_eq!(stats.faults_injected.bulk.bulk_duplicate_ref, 1);
    assert_eq!(stats.messages_stored, 4, "nothing stored for the ghosts");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reads_can_be_answered_429_or_dropped() {
    let limited = sandbox_with(|config| config.bulk.read_429 = 1.0).await;
    let id = create_job(&limited, &Value::Array(items(1))).await;
    for path in [format!("/v1/bulk/{id}"), format!("/v1/bulk/{id}/batches")] {
        let answer = get(&limited, ADMIN_KEY, &path).await;
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        for header in ["retry-after", "x-ratelimit-limit", "x-ratelimit-reset"] {
            assert!(answer.headers().contains_key(header), "{header} on {path}");
        }
    }
    let stats = limited.stats();
    assert_eq!(stats.faults_injected.bulk.bulk_read_429, 2);
    assert_eq!((stats.bulk.bulk_polls, stats.bulk.bulk_batch_reads), (1, 1));
    limited.shutdown().await;

    let dropping = sandbox_with(|config| config.bulk.read_drop = 1.0).await;
    let id = create_job(&dropping, &Value::Array(items(1))).await;
    for path in [format!("/v1/bulk/{id}"), format!("/v1/bulk/{id}/batches")] {
        let answer = client()
            .get(format!("{}{path}", dropping.base_url()))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await;
        assert!(answer.is_err(), "{path}: the connection closes unanswered");
    }
    let stats = dropping.stats();
    assert_eq!(stats.faults_injected.bulk.bulk_read_drop, 2);
    assert_eq!(stats.dropped_connections, 2);
    dropping.shutdown().await;
}

/// Posts a JSON array to a bulk route with `key`.
async fn post_to(sandbox: &RunningSandbox, key: &str, route: &str, body: &Value) -> Response {
    client()
        .post(format!("{}{route}", sandbox.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request completes")
}

/// Runs a job of customers or conversations to completion: its results by `_clientRef`.
async fn completed_record_results(
    sandbox: &RunningSandbox,
    route: &str,
    body: &Value,
) -> BTreeMap<String, Value> {
    let response = post_to(sandbox, ADMIN_KEY, route, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.expect("JSON body");
    assert_eq!(document["data"]["type"], "bulk");
    let id = document["data"]["id"].as_str().expect("job id").to_owned();
    wait_for_status(sandbox, &id, "complete").await;
    by_reference(&results_of(&batches(sandbox, &id).await))
}

fn customer_item(reference: &str) -> Value {
    json!({
        "externalId": format!("cust-{reference}"),
        "name": format!("Customer {reference}"),
        "emails": [{"type": "other", "email": format!("{reference}@example.com")}],
        "importedAt": "2024-06-01T00:00:00Z",
        "_clientRef": reference,
    })
}

#[tokio::test]
async fn customers_and_conversations_go_in_jobs_and_are_stored_like_single_creates() {
    let sandbox = sandbox_with(|_| {}).await;
    let body = json!([customer_item("c1"), customer_item("c2")]);
    let customers = completed_record_results(&sandbox, "/v1/customers/bulk", &body).await;
    assert_eq!(customers["c1"]["status"], "created");
    let c1 = customers["c1"]["objectId"].as_str().expect("id").to_owned();
    let found = get(&sandbox, ADMIN_KEY, "/v1/customers/externalId=cust-c1").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found: Value = found.json().await.expect("JSON body");
    assert_eq!(
        found["data"]["id"],
        c1.as_str(),
        "stored like a single create"
    );
    assert_eq!(found["data"]["attributes"]["displayName"], "Customer c1");

    let body = json!([
        {"customer": c1, "externalId": "t-1", "_clientRef": "t1"},
        {"customer": "ffffffffffffffffffffffff", "externalId": "t-2", "_clientRef": "t2"},
        {"externalId": "t-3", "_clientRef": "t3"},
    ]);
    let conversations = completed_record_results(&sandbox, "/v1/conversations/bulk", &body).await;
    assert_eq!(conversations["t1"]["status"], "created");
    assert_eq!(
        conversations["t2"]["error"]["status"], 404,
        "unknown customer"
    );
    assert_eq!(
        conversations["t3"]["error"]["status"], 400,
        "customer required"
    );
    let found = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=t-1").await;
    let found: Value = found.json().await.expect("JSON body");
    assert_eq!(
        found["data"]["relationships"]["customer"]["data"]["id"],
        c1.as_str()
    );

    let stats = sandbox.stats();
    assert_eq!(stats.customers.creates, 0, "no single create");
    assert_eq!(
        (stats.customers.bulk.jobs, stats.customers.bulk.items),
        (1, 2)
    );
    assert_eq!(
        (stats.customers.bulk.stored, stats.customers.stored),
        (2, 2)
    );
    assert_eq!(
        (
            stats.conversations.bulk.jobs,
            stats.conversations.bulk.stored
        ),
        (1, 1)
    );
    assert_eq!(stats.conversations.stored, 1);
    assert_eq!(stats.bulk.bulk_jobs, 2, "the same jobs as messages");
    assert_eq!(stats.messages_stored, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn record_jobs_need_the_kinds_create_role() {
    let sandbox = sandbox_with(|_| {}).await;
    for (route, role) in [
        ("/v1/customers/bulk", "org.permission.customer.create"),
        (
            "/v1/conversations/bulk",
            "org.permission.conversation.create",
        ),
    ] {
        let response = post_to(&sandbox, MESSAGES_ONLY_KEY, route, &json!([{}])).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let said = response.text().await.expect("body");
        assert!(said.contains(role), "{said}");
    }
    let response = post_to(&sandbox, ADMIN_KEY, "/v1/customers/bulk", &json!([])).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.expect("body").contains("no customer"));
    assert_eq!(sandbox.stats().bulk.bulk_jobs, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn item_faults_apply_to_the_kinds_in_the_fault_scope() {
    for customers_in_scope in [true, false] {
        let sandbox = sandbox_with(|config| {
            config.bulk.item_stored_error = 1.0;
            config.fault_scope.customers = customers_in_scope;
        })
        .await;
        let body = json!([customer_item("c1"), customer_item("c2")]);
        let results = completed_record_results(&sandbox, "/v1/customers/bulk", &body).await;
        let stats = sandbox.stats();
        assert_eq!(stats.customers.stored, 2, "stored either way");
        if customers_in_scope {
            assert!(results.values().all(|r| r["error"]["status"] == 500));
            assert_eq!(stats.customers.bulk.item_stored_error, 2);
            assert_eq!(stats.faults_injected.bulk.bulk_item_stored_error, 2);
        } else {
            assert!(results.values().all(|r| r["status"] == "created"));
            assert_eq!(stats.customers.bulk.item_stored_error, 0);
        }
        sandbox.shutdown().await;
    }
}
