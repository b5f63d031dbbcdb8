//! Customers, conversations, the messages listing, their roles, faults and seeding (issue 16),
//! over real loopback HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

use super::tests::seed_messages;
use super::*;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn sandbox_with(configure: impl FnOnce(&mut SandboxConfig)) -> RunningSandbox {
    let mut config = SandboxConfig::new(loopback());
    configure(&mut config);
    start(config).await.expect("sandbox starts")
}

fn client() -> Client {
    // No connection reuse: some tests make the server close connections.
    super::tests::fresh_connection_client()
}

async fn post(sandbox: &RunningSandbox, key: &str, path: &str, body: &Value) -> Response {
    client()
        .post(format!("{}{path}", sandbox.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request completes")
}

async fn get(sandbox: &RunningSandbox, key: &str, path: &str) -> Response {
    client()
        .get(format!("{}{path}", sandbox.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .expect("request completes")
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

fn is_object_id(value: &Value) -> bool {
    value.as_str().is_some_and(validate::is_object_id)
}

fn customer_body(external_id: &str, email: &str) -> Value {
    json!({
        "externalId": external_id,
        "name": "Ann Example",
        "emails": [{"type": "work", "email": email}],
        "phones": [{"phone": "+1 800 555 1212"}],
        "importedAt": "2024-05-06T07:08:09.123456Z",
    })
}

async fn create_customer(sandbox: &RunningSandbox, external_id: &str, email: &str) -> String {
    let created = post(
        sandbox,
        ADMIN_KEY,
        "/v1/customers",
        &customer_body(external_id, email),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let document = json_of(created).await;
    document["data"]["id"].as_str().expect("id").to_owned()
}

async fn create_conversation(sandbox: &RunningSandbox, external_id: &str, customer: &str) -> Value {
    let body = json!({"customer": customer, "externalId": external_id, "name": "Ticket",
                      "tags": ["imported"], "createdAt": "2020-01-02T03:04:05Z"});
    let created = post(sandbox, ADMIN_KEY, "/v1/conversations", &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    json_of(created).await
}

fn message_body(external_id: &str) -> Value {
    json!({"channel": "email", "app": "zendesk", "externalId": external_id, "direction": "in"})
}

async fn post_message(sandbox: &RunningSandbox, conversation: &str, external_id: &str) -> Value {
    let path = format!("/v1/conversations/{conversation}/messages");
    let created = post(sandbox, ADMIN_KEY, &path, &message_body(external_id)).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    json_of(created).await
}

#[tokio::test]
async fn a_customer_is_created_in_kustomers_shape_and_found_by_external_id_and_email() {
    let sandbox = sandbox_with(|_| {}).await;
    let created = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/customers",
        &customer_body("crm-1", "Ann.Example+x@Example.COM"),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let document = json_of(created).await;
    let data = &document["data"];
    assert_eq!(data["type"], "customer");
    assert!(is_object_id(&data["id"]));
    let id = data["id"].as_str().expect("id");
    let attributes = &data["attributes"];
    assert_eq!(attributes["externalId"], "crm-1");
    assert_eq!(attributes["name"], "Ann Example");
    assert_eq!(attributes["displayName"], "Ann Example");
    assert_eq!(
        attributes["emails"],
        json!([{"type": "work", "email": "Ann.Example+x@Example.COM", "verified": false, "id": null}])
    );
    assert_eq!(attributes["phones"][0]["phone"], "+1 800 555 1212");
    assert_eq!(attributes["importedAt"], "2024-05-06T07:08:09.123Z");
    assert!(attributes["createdAt"].is_string());
    assert_eq!(data["relationships"]["org"]["data"]["type"], "org");
    assert_eq!(data["links"]["self"], format!("/v1/customers/{id}"));

    let by_external_id = get(&sandbox, ADMIN_KEY, "/v1/customers/externalId=crm-1").await;
    assert_eq!(by_external_id.status(), StatusCode::OK);
    assert_eq!(json_of(by_external_id).await["data"]["id"], id);
    // Case-insensitive, url-decoded (`+` and `@` encoded as a client would).
    let by_email = get(
        &sandbox,
        ADMIN_KEY,
        "/v1/customers/email=ann.example%2Bx%40example.com",
    )
    .await;
    assert_eq!(by_email.status(), StatusCode::OK);
    assert_eq!(json_of(by_email).await["data"]["id"], id);
    let by_id = get(&sandbox, ADMIN_KEY, &format!("/v1/customers/{id}")).await;
    assert_eq!(json_of(by_id).await["data"]["id"], id);

    for missing in [
        "/v1/customers/externalId=crm-2",
        "/v1/customers/email=nobody%40example.com",
    ] {
        let miss = get(&sandbox, ADMIN_KEY, missing).await;
        assert_eq!(miss.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(json_of(miss).await["errors"][0]["code"], "not_found");
    }
    let stats = sandbox.stats().customers;
    assert_eq!((stats.creates, stats.stored), (1, 1));
    assert_eq!(stats.lookups.external_id, HitMiss { hit: 1, miss: 1 });
    assert_eq!(stats.lookups.email, HitMiss { hit: 1, miss: 1 });
    let dump = sandbox.customers();
    assert_eq!(dump.records.len(), 1);
    assert_eq!(dump.records[0].emails, ["Ann.Example+x@Example.COM"]);
    assert_eq!(dump.created_by_external_id["crm-1"], 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn customer_bodies_are_checked_against_the_spec_schema() {
    let sandbox = sandbox_with(|_| {}).await;
    let refused = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/customers",
        &json!({"externalId": "", "emails": [{"email": "no-at-sign"}], "nickname": "x"}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let errors = json_of(refused).await;
    let pointers: Vec<&str> = errors["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|error| error["source"]["pointer"].as_str())
        .collect();
    for expected in [
        "/data/attributes/externalId",
        "/data/attributes/emails/0/email",
        "/data/attributes/nickname",
    ] {
        assert!(pointers.contains(&expected), "{expected} in {pointers:?}");
    }
    let not_json = client()
        .post(format!("{}/v1/customers", sandbox.base_url()))
        .bearer_auth(ADMIN_KEY)
        .body("{}")
        .send()
        .await
        .expect("answers");
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    // No field is required.
    let empty = post(&sandbox, ADMIN_KEY, "/v1/customers", &json!({})).await;
    assert_eq!(empty.status(), StatusCode::CREATED);
    assert_eq!(sandbox.stats().customers.stored, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_conversation_needs_an_existing_customer_and_its_messages_join_that_customer() {
    let sandbox = sandbox_with(|_| {}).await;
    let missing = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/conversations",
        &json!({"externalId": "t-1"}),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(missing).await["errors"][0]["source"]["pointer"],
        "/data/attributes/customer"
    );
    let unknown = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/conversations",
        &json!({"customer": "0123456789abcdef01234567"}),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad_status = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/conversations",
        &json!({"customer": "0123456789abcdef01234567", "status": "pending"}),
    )
    .await;
    assert_eq!(bad_status.status(), StatusCode::BAD_REQUEST);

    let customer = create_customer(&sandbox, "crm-1", "a@example.com").await;
    let document = create_conversation(&sandbox, "t-1", &customer).await;
    let data = &document["data"];
    assert_eq!(data["type"], "conversation");
    let conversation = data["id"].as_str().expect("id").to_owned();
    assert_eq!(data["relationships"]["customer"]["data"]["id"], customer);
    assert_eq!(
        data["relationships"]["customer"]["data"]["type"],
        "customer"
    );
    let attributes = &data["attributes"];
    assert_eq!(attributes["externalId"], "t-1");
    assert_eq!(attributes["status"], "open");
    assert_eq!(attributes["tags"], json!(["imported"]));
    assert_eq!(attributes["createdAt"], "2020-01-02T03:04:05.000Z");
    assert!(attributes.get("customer").is_none());

    let found = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=t-1").await;
    assert_eq!(found.status(), StatusCode::OK);
    let found = json_of(found).await;
    assert_eq!(found["data"]["id"], conversation.as_str());
    assert_eq!(
        found["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );
    let miss = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=t-2").await;
    assert_eq!(miss.status(), StatusCode::NOT_FOUND);

    let message = post_message(&sandbox, &conversation, "m-1").await;
    assert_eq!(
        message["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );
    // A conversation the sandbox never created keeps its implicit customer.
    let implicit = post_message(&sandbox, "0123456789abcdef01234567", "m-2").await;
    assert_ne!(
        implicit["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );
    let stats = sandbox.stats().conversations;
    assert_eq!((stats.creates, stats.stored), (4, 1));
    assert_eq!(stats.lookups.external_id, HitMiss { hit: 1, miss: 1 });
    let dump = sandbox.conversations();
    assert_eq!(dump.records[0].customer.as_deref(), Some(customer.as_str()));
    assert_eq!(dump.created_by_external_id["t-1"], 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_messages_listing_pages_in_storing_order() {
    let sandbox = sandbox_with(|_| {}).await;
    let conversation = "0123456789abcdef0123abcd";
    for index in 0..5 {
        post_message(&sandbox, conversation, &format!("m-{index}")).await;
    }
    post_message(&sandbox, "0123456789abcdef01234567", "elsewhere").await;
    let path = |query: &str| format!("/v1/conversations/{conversation}/messages{query}");
    let page = json_of(get(&sandbox, READONLY_KEY, &path("?page=2&pageSize=2")).await).await;
    assert_eq!(page["meta"], json!({"pageSize": 2, "page": 2}));
    let ids: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|message| message["attributes"]["externalId"].as_str())
        .collect();
    assert_eq!(ids, ["m-2", "m-3"]);
    assert_eq!(page["data"][0]["type"], "message");
    assert_eq!(
        page["data"][0]["relationships"]["conversation"]["data"]["id"],
        conversation
    );
    let base = format!("/v1/conversations/{conversation}/messages");
    assert_eq!(page["links"]["prev"], format!("{base}?page=1&pageSize=2"));
    assert_eq!(page["links"]["next"], format!("{base}?page=3&pageSize=2"));
    let last = json_of(get(&sandbox, ADMIN_KEY, &path("?page=3&pageSize=2")).await).await;
    assert_eq!(last["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(last["links"]["next"], Value::Null);
    let whole = json_of(get(&sandbox, ADMIN_KEY, &path("?pageSize=5000")).await).await;
    assert_eq!(whole["meta"], json!({"pageSize": 100, "page": 1}));
    assert_eq!(whole["data"].as_array().map(Vec::len), Some(5));
    assert_eq!(whole["links"]["prev"], Value::Null);
    let empty = json_of(get(&sandbox, ADMIN_KEY, &path("?page=9")).await).await;
    assert_eq!(empty["data"], json!([]));
    for bad in ["?pageSize=0", "?page=x", "?page=-1"] {
        let refused = get(&sandbox, ADMIN_KEY, &path(bad)).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let unknown = get(
        &sandbox,
        ADMIN_KEY,
        "/v1/conversations/dead456789abcdef01234567/messages",
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(sandbox.stats().conversations.message_list_reads, 4);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn every_new_route_needs_its_role() {
    let sandbox = sandbox_with(|_| {}).await;
    let token = json_of(get(&sandbox, ADMIN_KEY, "/v1/auth/tokens/current").await).await;
    let roles = token["data"]["attributes"]["roles"].clone();
    let limited = json_of(get(&sandbox, MESSAGES_ONLY_KEY, "/v1/auth/tokens/current").await).await;
    let limited_roles = limited["data"]["attributes"]["roles"].clone();
    for role in [
        "org.permission.customer.read",
        "org.permission.customer.create",
        "org.permission.conversation.read",
        "org.permission.conversation.create",
    ] {
        assert!(roles.as_array().is_some_and(|r| r.contains(&json!(role))));
        assert!(!limited_roles
            .as_array()
            .is_some_and(|r| r.contains(&json!(role))));
    }
    assert!(limited_roles
        .as_array()
        .is_some_and(|r| r.contains(&json!("org.admin"))));
    let customer = create_customer(&sandbox, "crm-1", "a@example.com").await;
    let forbidden = [
        (
            post(&sandbox, MESSAGES_ONLY_KEY, "/v1/customers", &json!({})).await,
            "org.permission.customer.create",
        ),
        (
            get(
                &sandbox,
                MESSAGES_ONLY_KEY,
                "/v1/customers/externalId=crm-1",
            )
            .await,
            "org.permission.customer.read",
        ),
        (
            get(
                &sandbox,
                READONLY_KEY,
                "/v1/customers/email=a%40example.com",
            )
            .await,
            "org.permission.customer.read",
        ),
        (
            post(
                &sandbox,
                MESSAGES_ONLY_KEY,
                "/v1/conversations",
                &json!({ "customer": customer }),
            )
            .await,
            "org.permission.conversation.create",
        ),
        (
            get(
                &sandbox,
                MESSAGES_ONLY_KEY,
                "/v1/conversations/externalId=t",
            )
            .await,
            "org.permission.conversation.read",
        ),
    ];
    for (response, role) in forbidden {
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role}");
        let body = json_of(response).await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(role), "{message}");
    }
    // The agent key may resolve (no org.admin needed), the messages-only key may still list.
    let agent = post(
        &sandbox,
        AGENT_KEY,
        "/v1/conversations",
        &json!({ "customer": customer }),
    )
    .await;
    assert_eq!(agent.status(), StatusCode::CREATED);
    let listing = get(
        &sandbox,
        MESSAGES_ONLY_KEY,
        "/v1/conversations/0123456789abcdef01234567/messages",
    )
    .await;
    assert_eq!(listing.status(), StatusCode::OK);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn stored_then_error_applies_to_customer_and_conversation_creates() {
    let sandbox = sandbox_with(|config| {
        config.faults.store_then_error = 1.0;
        config.faults.store_then_error_statuses = vec![502];
    })
    .await;
    let answered = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/customers",
        &customer_body("crm-1", "a@example.com"),
    )
    .await;
    assert_eq!(answered.status(), StatusCode::BAD_GATEWAY);
    let customer = sandbox.customers().records[0].id.clone();
    let answered = post(
        &sandbox,
        ADMIN_KEY,
        "/v1/conversations",
        &json!({"customer": customer, "externalId": "t-1"}),
    )
    .await;
    assert_eq!(answered.status(), StatusCode::BAD_GATEWAY);
    let stats = sandbox.stats();
    assert_eq!(stats.customers.faults.store_then_error, 1);
    assert_eq!(stats.conversations.faults.store_then_error, 1);
    assert_eq!(stats.faults_injected.store_then_error, 2);
    assert_eq!(sandbox.conversations().created_by_external_id["t-1"], 1);
    sandbox.shutdown().await;
}

/// A fault switch, its counter, the status answered (None: the connection closes unanswered)
/// and how many customers end up stored.
type FaultCase = (
    fn(&mut Faults),
    fn(&CreateFaultCounts) -> u64,
    Option<u16>,
    u64,
);

#[tokio::test]
async fn each_create_fault_fires_on_customers() {
    let cases: [FaultCase; 8] = [
        (|f| f.error_500 = 1.0, |c| c.error_500, Some(500), 0),
        (|f| f.error_503 = 1.0, |c| c.error_503, Some(503), 0),
        (|f| f.oversize_body = 1.0, |c| c.oversize_body, Some(201), 1),
        (
            |f| f.drop_before_store = 1.0,
            |c| c.drop_before_store,
            None,
            0,
        ),
        (|f| f.store_then_drop = 1.0, |c| c.store_then_drop, None, 1),
        (|f| f.accepted_202 = 1.0, |c| c.accepted_202, Some(202), 1),
        (
            |f| f.created_without_id = 1.0,
            |c| c.created_without_id,
            Some(201),
            1,
        ),
        (
            |f| {
                f.slow_store = 1.0;
                f.slow_store_delay = Duration::from_millis(10);
            },
            |c| c.slow_store,
            Some(201),
            1,
        ),
    ];
    for (configure, counted, status, stored) in cases {
        let sandbox = sandbox_with(|config| configure(&mut config.faults)).await;
        let answer = client()
            .post(format!("{}/v1/customers", sandbox.base_url()))
            .bearer_auth(ADMIN_KEY)
            .json(&customer_body("crm-1", "a@example.com"))
            .send()
            .await;
        match status {
            Some(expected) => {
                let answer = answer.expect("answered");
                assert_eq!(answer.status().as_u16(), expected);
                let document = json_of(answer).await;
                if expected == 201 && sandbox.stats().customers.faults.created_without_id == 1 {
                    assert!(document["data"].get("id").is_none());
                }
            }
            None => assert!(answer.is_err(), "the connection closes unanswered"),
        }
        let stats = sandbox.stats().customers;
        assert_eq!(counted(&stats.faults), 1);
        assert_eq!(stats.stored, stored);
        sandbox.shutdown().await;
    }
    let limited = sandbox_with(|config| config.error_429 = 1.0).await;
    let answer = post(&limited, ADMIN_KEY, "/v1/customers", &json!({})).await;
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.stats().customers.faults.injected_429, 1);
    assert_eq!(limited.stats().injected_429, 1);
    limited.shutdown().await;
}

/// Statuses of `count` message creates, with a customer create before each when asked.
async fn message_statuses(scope: FaultScope, with_customers: bool) -> Vec<u16> {
    let sandbox = sandbox_with(|config| {
        config.seed = 11;
        config.faults.error_500 = 0.5;
        config.fault_scope = scope;
    })
    .await;
    let mut statuses = Vec::new();
    for index in 0..16 {
        if with_customers {
            post(&sandbox, ADMIN_KEY, "/v1/customers", &json!({})).await;
        }
        let path = "/v1/conversations/0123456789abcdef01234567/messages";
        let answer = post(
            &sandbox,
            ADMIN_KEY,
            path,
            &message_body(&format!("m{index}")),
        )
        .await;
        statuses.push(answer.status().as_u16());
    }
    sandbox.shutdown().await;
    statuses
}

#[tokio::test]
async fn a_kind_out_of_the_fault_scope_draws_nothing() {
    let messages_only = FaultScope {
        messages: true,
        customers: false,
        conversations: false,
    };
    let alone = message_statuses(FaultScope::default(), false).await;
    assert!(alone.contains(&500) && alone.contains(&201), "{alone:?}");
    assert_eq!(message_statuses(messages_only, true).await, alone);
    assert_ne!(message_statuses(FaultScope::default(), true).await, alone);

    let customers_spared = sandbox_with(|config| {
        config.faults.error_500 = 1.0;
        config.fault_scope = messages_only;
    })
    .await;
    let answer = post(&customers_spared, ADMIN_KEY, "/v1/customers", &json!({})).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert_eq!(customers_spared.stats().customers.faults.error_500, 0);
    customers_spared.shutdown().await;
}

#[tokio::test]
async fn lookup_faults_and_lenient_misses_apply_to_the_new_lookups() {
    let sandbox = sandbox_with(|config| config.not_found_as_empty = true).await;
    for path in [
        "/v1/customers/externalId=nobody",
        "/v1/customers/email=nobody%40example.com",
        "/v1/conversations/externalId=nothing",
    ] {
        let miss = get(&sandbox, ADMIN_KEY, path).await;
        assert_eq!(miss.status(), StatusCode::OK, "{path}");
        assert_eq!(json_of(miss).await, json!({"data": []}));
    }
    client()
        .post(format!("{}/_sandbox/lookups/fail", sandbox.base_url()))
        .send()
        .await
        .expect("control answers");
    for path in [
        "/v1/customers/externalId=nobody",
        "/v1/conversations/externalId=nothing",
        "/v1/conversations/0123456789abcdef01234567/messages",
    ] {
        let failed = get(&sandbox, ADMIN_KEY, path).await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let stats = sandbox.stats();
    assert_eq!(stats.customers.lookups.lookup_503, 1);
    assert_eq!(stats.conversations.lookups.lookup_503, 2);
    assert_eq!(stats.faults_injected.lookup_503, 3);
    sandbox.shutdown().await;

    let limited = sandbox_with(|config| config.faults.lookup_429 = 1.0).await;
    let answer = get(&limited, ADMIN_KEY, "/v1/customers/email=a%40b.c").await;
    assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.stats().customers.lookups.lookup_429, 1);
    limited.shutdown().await;
}

#[tokio::test]
async fn seeding_creates_existing_customers_conversations_and_messages() {
    let sandbox = sandbox_with(|_| {}).await;
    let refused = seed_messages(
        &sandbox,
        &json!({"conversations": [{"externalId": "t-9", "customerExternalId": "nobody"}]}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(sandbox.conversations().records.is_empty());

    let seeded = seed_messages(
        &sandbox,
        &json!({
            "customers": [{"externalId": "crm-1", "name": "Ann", "emails": ["ANN@Example.com"]}],
            "conversations": [{"externalId": "t-1", "customerExternalId": "crm-1"}],
            "messages": [{"conversationExternalId": "t-1", "externalId": "m-1"}],
        }),
    )
    .await;
    assert_eq!(seeded.status(), StatusCode::CREATED);
    let seeded = json_of(seeded).await;
    let customer = seeded["data"]["customers"][0]["id"].clone();
    assert!(is_object_id(&customer));
    assert_eq!(seeded["data"]["conversations"][0]["customer"], customer);
    let conversation = seeded["data"]["conversations"][0]["id"].clone();
    assert_eq!(
        seeded["data"]["messages"][0]["conversationId"],
        conversation
    );

    let by_email = get(&sandbox, ADMIN_KEY, "/v1/customers/email=ann%40example.COM").await;
    assert_eq!(json_of(by_email).await["data"]["id"], customer);
    let found = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=t-1").await;
    let found = json_of(found).await;
    assert_eq!(
        found["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );
    let message = get(&sandbox, ADMIN_KEY, "/v1/messages/externalId=m-1").await;
    let message = json_of(message).await;
    assert_eq!(
        message["data"]["relationships"]["customer"]["data"]["id"],
        customer
    );

    let customers = sandbox.customers();
    assert!(customers.records[0].seeded);
    assert!(customers.created_by_external_id.is_empty());
    let stats = sandbox.stats();
    assert_eq!((stats.customers.seeded, stats.customers.stored), (1, 0));
    assert_eq!(stats.conversations.seeded, 1);
    assert_eq!(stats.seeded, 1);

    // A create under a seeded externalId is no duplicate; a second create is.
    create_customer(&sandbox, "crm-1", "b@example.com").await;
    create_customer(&sandbox, "crm-1", "c@example.com").await;
    assert_eq!(sandbox.stats().customers.duplicate_external_ids, 1);
    assert_eq!(sandbox.customers().created_by_external_id["crm-1"], 2);
    // The array form still seeds messages alone.
    let array = seed_messages(
        &sandbox,
        &json!([{"conversationId": "0123456789abcdef01234567", "externalId": "m-2"}]),
    )
    .await;
    assert_eq!(array.status(), StatusCode::CREATED);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookup_other_first_answers_the_other_integrations_message() {
    for other_first in [false, true] {
        let sandbox = sandbox_with(|config| config.lookup_other_first = other_first).await;
        let theirs = "0123456789abcdef0123abcd";
        let seeded = seed_messages(
            &sandbox,
            &json!({"messages": [{"conversationId": theirs, "externalId": "shared-1"}]}),
        )
        .await;
        assert_eq!(seeded.status(), StatusCode::CREATED);
        let ours = "0123456789abcdef01234567";
        post_message(&sandbox, ours, "shared-1").await;
        let found = get(&sandbox, ADMIN_KEY, "/v1/messages/externalId=shared-1").await;
        let found = json_of(found).await;
        let conversation = &found["data"]["relationships"]["conversation"]["data"]["id"];
        let expected = if other_first { theirs } else { ours };
        assert_eq!(conversation, expected);
        assert_eq!(sandbox.stats().lookups.other_first, u64::from(other_first));
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn lookup_list_answers_every_match_newest_first() {
    let sandbox = sandbox_with(|config| config.lookup_list = true).await;
    let first = create_customer(&sandbox, "crm-1", "Shared@Example.com").await;
    let second = create_customer(&sandbox, "crm-2", "shared@example.COM").await;
    let listed = get(
        &sandbox,
        ADMIN_KEY,
        "/v1/customers/email=SHARED%40example.com",
    )
    .await;
    let listed = json_of(listed).await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|customer| customer["id"].as_str())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(listed["data"][0]["type"], "customer");
    let conversation = create_conversation(&sandbox, "t-1", &first).await;
    let listed = get(&sandbox, ADMIN_KEY, "/v1/conversations/externalId=t-1").await;
    let listed = json_of(listed).await;
    assert_eq!(listed["data"][0]["id"], conversation["data"]["id"]);
    let miss = get(&sandbox, ADMIN_KEY, "/v1/customers/externalId=none").await;
    assert_eq!(miss.status(), StatusCode::NOT_FOUND);
    sandbox.shutdown().await;
}
