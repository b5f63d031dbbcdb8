//! The sandbox binary's customer and conversation routes and switches (issue 16), through the
//! process: find or create with faults, seeding, roles, hold, the messages listing and
//! `--lookup-other-first` (the behaviours in detail are tested beside the code, in
//! `src/sandbox/directory_tests.rs`).

use std::time::Duration;

use crate::common::*;
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

const MESSAGES_ONLY_KEY: &str = "sandbox-messages-only-key";

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client")
}

fn post(sandbox: &Sandbox, key: &str, path: &str, body: &Value) -> Response {
    http()
        .post(format!("{}{path}", sandbox.url))
        .bearer_auth(key)
        .json(body)
        .send()
        .expect("answered")
}

fn get(sandbox: &Sandbox, key: &str, path: &str) -> Response {
    http()
        .get(format!("{}{path}", sandbox.url))
        .bearer_auth(key)
        .send()
        .expect("answered")
}

fn found_id(response: Response) -> String {
    assert_eq!(response.status().as_u16(), 200);
    let document: Value = response.json().expect("document");
    document["data"]["id"].as_str().expect("data.id").to_owned()
}

#[test]
fn find_or_create_settles_stored_then_5xx_creates_by_lookup() {
    let sandbox = Sandbox::start(&[
        "--store-then-error",
        "1",
        "--store-then-error-status",
        "502",
        "--fault-scope",
        "customers,conversations",
    ]);
    let seeded = sandbox.post_json(
        "/_sandbox/seed",
        &json!({"customers": [{"externalId": "old-1", "name": "Old", "emails": ["Old.One@Example.COM"]}]}),
    );
    let old = seeded["data"]["customers"][0]["id"].as_str().expect("id");
    assert_eq!(
        found_id(get(
            &sandbox,
            ADMIN_KEY,
            "/v1/customers/email=old.one%40example.com"
        )),
        old
    );

    let missing = get(&sandbox, ADMIN_KEY, "/v1/customers/externalId=new-1");
    assert_eq!(missing.status().as_u16(), 404);
    let body = json!({"externalId": "new-1", "name": "New", "emails": [{"email": "new@example.com"}],
                      "importedAt": "2024-01-01T00:00:00Z"});
    let created = post(&sandbox, ADMIN_KEY, "/v1/customers", &body);
    assert_eq!(
        created.status().as_u16(),
        502,
        "stored, then a gateway page"
    );
    let customer = found_id(get(&sandbox, ADMIN_KEY, "/v1/customers/externalId=new-1"));

    let body = json!({"customer": customer, "externalId": "ticket-1", "name": "Ticket 1"});
    let created = post(&sandbox, ADMIN_KEY, "/v1/conversations", &body);
    assert_eq!(created.status().as_u16(), 502);
    let found = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=ticket-1");
    let found: Value = found.json().expect("conversation");
    assert_eq!(
        found["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );
    let conversation = found["data"]["id"].as_str().expect("id").to_owned();

    // Messages are out of the fault scope: created at once, into the customer's conversation.
    let message = json!({"channel": "email", "app": "zendesk", "externalId": "m-1"});
    let path = format!("/v1/conversations/{conversation}/messages");
    let created = post(&sandbox, ADMIN_KEY, &path, &message);
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().expect("message");
    assert_eq!(
        created["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );
    let listed: Value = get(&sandbox, ADMIN_KEY, &format!("{path}?page=1&pageSize=10"))
        .json()
        .expect("listing");
    assert_eq!(listed["data"][0]["attributes"]["externalId"], "m-1");
    assert_eq!(listed["meta"], json!({"pageSize": 10, "page": 1}));

    let customers: Value = http()
        .get(format!("{}/_sandbox/customers", sandbox.url))
        .send()
        .expect("inspection")
        .json()
        .expect("dump");
    assert_eq!(customers["createdByExternalId"], json!({"new-1": 1}));
    assert_eq!(customers["records"][0]["seeded"], true);
    let conversations: Value = http()
        .get(format!("{}/_sandbox/conversations", sandbox.url))
        .send()
        .expect("inspection")
        .json()
        .expect("dump");
    assert_eq!(conversations["createdByExternalId"], json!({"ticket-1": 1}));
    assert_eq!(conversations["records"][0]["customer"], customer);
    assert_eq!(
        sandbox.stat(&["customers", "faults", "store_then_error"]),
        1
    );
    assert_eq!(
        sandbox.stat(&["conversations", "faults", "store_then_error"]),
        1
    );
    assert_eq!(sandbox.stat(&["customers", "lookups", "email", "hit"]), 1);
    assert_eq!(
        sandbox.stat(&["customers", "lookups", "external_id", "miss"]),
        1
    );
    assert_eq!(sandbox.stat(&["conversations", "message_list_reads"]), 1);
    assert_eq!(sandbox.stat(&["faults_injected", "store_then_error"]), 2);
}

#[test]
fn roles_hold_and_lenient_misses_reach_the_new_routes() {
    let sandbox = Sandbox::start(&["--not-found-as-empty"]);
    let refused = post(&sandbox, MESSAGES_ONLY_KEY, "/v1/customers", &json!({}));
    assert_eq!(refused.status().as_u16(), 403);
    let refused = get(
        &sandbox,
        MESSAGES_ONLY_KEY,
        "/v1/conversations/externalId=t",
    );
    assert_eq!(refused.status().as_u16(), 403);
    let miss = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=t");
    assert_eq!(miss.status().as_u16(), 200);
    assert_eq!(miss.json::<Value>().expect("body"), json!({"data": []}));

    sandbox.hold();
    let url = sandbox.url.clone();
    let held = std::thread::spawn(move || {
        http()
            .post(format!("{url}/v1/customers"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"externalId": "held-1"}))
            .send()
            .map(|response| response.status().as_u16())
    });
    wait_until(Duration::from_secs(30), "the create is held", || {
        sandbox.stat(&["held"]) == 1
    });
    assert_eq!(sandbox.stat(&["customers", "stored"]), 0);
    sandbox.release();
    let status = held.join().expect("thread").expect("answered");
    assert_eq!(status, 201);
    assert_eq!(sandbox.stat(&["customers", "stored"]), 1);
}

#[test]
fn lookup_other_first_answers_the_colliding_conversations_message() {
    let sandbox = Sandbox::start(&["--lookup-other-first"]);
    let theirs = "0123456789abcdef0123abcd";
    sandbox.post_json(
        "/_sandbox/seed",
        &json!({"messages": [{"conversationId": theirs, "externalId": "collide-1"}]}),
    );
    let ours = "0123456789abcdef01234567";
    let message = json!({"channel": "email", "app": "zendesk", "externalId": "collide-1"});
    let created = post(
        &sandbox,
        ADMIN_KEY,
        &format!("/v1/conversations/{ours}/messages"),
        &message,
    );
    assert_eq!(created.status().as_u16(), 201);
    let found: Value = get(&sandbox, ADMIN_KEY, "/v1/messages/externalId=collide-1")
        .json()
        .expect("lookup");
    assert_eq!(
        found["data"]["relationships"]["conversation"]["data"]["id"],
        theirs
    );
    // Its own conversation's listing shows the message the lookup hid.
    let listed: Value = get(
        &sandbox,
        ADMIN_KEY,
        &format!("/v1/conversations/{ours}/messages"),
    )
    .json()
    .expect("listing");
    assert_eq!(listed["data"][0]["attributes"]["externalId"], "collide-1");
    assert_eq!(sandbox.stat(&["lookups", "other_first"]), 1);
}

#[test]
fn an_unknown_fault_scope_stops_the_sandbox_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = importer(dir.path());
    command.args([
        "sandbox",
        "--listen",
        "127.0.0.1:0",
        "--fault-scope",
        "messages,tickets",
    ]);
    let output = run_bounded(command, Duration::from_secs(60));
    assert_eq!(code(&output), 2, "{}", text(&output));
}
