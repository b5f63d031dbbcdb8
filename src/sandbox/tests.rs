//! End-to-end tests of the sandbox over real loopback HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const CONVERSATION: &str = "0123456789abcdef01234567";
const OTHER_CONVERSATION: &str = "0123456789abcdef0123abcd";
const ADMIN_USER: &str = "5a5a5a5a5a5a5a5a5a5a5a5a";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn sandbox_with(configure: impl FnOnce(&mut SandboxConfig)) -> RunningSandbox {
    let mut config = SandboxConfig::new(loopback());
    configure(&mut config);
    start(config).await.expect("sandbox starts")
}

async fn sandbox() -> RunningSandbox {
    sandbox_with(|_| {}).await
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

/// A client that never reuses a connection, for tests where the server closes connections.
pub(super) fn fresh_connection_client() -> Client {
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

fn minimal_body(external_id: &str) -> Value {
    json!({"channel": "email", "app": "zendesk", "externalId": external_id, "direction": "in"})
}

async fn create_with(
    client: &Client,
    sandbox: &RunningSandbox,
    key: &str,
    conversation: &str,
    body: &Value,
) -> reqwest::Result<Response> {
    client
        .post(format!(
            "{}/v1/conversations/{conversation}/messages",
            sandbox.base_url()
        ))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
}

async fn create(sandbox: &RunningSandbox, body: &Value) -> Response {
    create_with(&client(), sandbox, ADMIN_KEY, CONVERSATION, body)
        .await
        .expect("request completes")
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("JSON body")
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

fn header_number(response: &Response, name: &str) -> u64 {
    header(response, name)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("numeric header {name}"))
}

async fn lookup(sandbox: &RunningSandbox, spelling: &str, external_id: &str) -> Response {
    let encoded =
        percent_encoding::utf8_percent_encode(external_id, percent_encoding::NON_ALPHANUMERIC);
    client()
        .get(format!(
            "{}/v1/messages/{spelling}={encoded}",
            sandbox.base_url()
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request completes")
}

async fn token(sandbox: &RunningSandbox, key: &str) -> Response {
    client()
        .get(format!("{}/v1/auth/tokens/current", sandbox.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .expect("request completes")
}

fn is_object_id(value: &Value) -> bool {
    value.as_str().is_some_and(validate::is_object_id)
}

#[tokio::test]
async fn created_message_has_the_kustomer_shape_and_admin_audit_fields_are_kept() {
    let sandbox = sandbox().await;
    let body = json!({
        "channel": "email",
        "app": "zendesk",
        "externalId": "zd-1001",
        "direction": "out",
        "preview": "Hello there",
        "sentAt": "2020-05-01T10:00:00+02:00",
        "importedAt": "2024-06-01T00:00:00Z",
        "createdAt": "2020-05-01T08:00:00.123Z",
        "createdBy": ADMIN_USER,
        "modifiedAt": "2020-05-02T08:00:00Z",
        "modifiedBy": ADMIN_USER,
        "meta": {"ticket": 7}
    });
    let response = create(&sandbox, &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(header(&response, "x-ratelimit-limit"), Some("1000000"));
    assert_eq!(header_number(&response, "x-ratelimit-remaining"), 999_999);
    let document = json_of(response).await;
    let data = &document["data"];
    assert_eq!(data["type"], "message");
    assert!(is_object_id(&data["id"]), "id {}", data["id"]);
    let id = data["id"].as_str().expect("id");
    assert_eq!(data["links"]["self"], format!("/v1/messages/{id}"));
    let attributes = &data["attributes"];
    assert_eq!(attributes["externalId"], "zd-1001");
    assert_eq!(attributes["channel"], "email");
    assert_eq!(attributes["app"], "zendesk");
    assert_eq!(attributes["direction"], "out");
    assert_eq!(attributes["preview"], "Hello there");
    assert_eq!(attributes["sentAt"], "2020-05-01T08:00:00.000Z");
    assert_eq!(attributes["importedAt"], "2024-06-01T00:00:00.000Z");
    assert_eq!(attributes["createdAt"], "2020-05-01T08:00:00.123Z");
    assert_eq!(attributes["modifiedAt"], "2020-05-02T08:00:00.000Z");
    assert!(attributes["updatedAt"].is_string());
    assert_eq!(attributes["meta"], json!({"ticket": 7}));
    let relationships = &data["relationships"];
    assert_eq!(
        relationships["conversation"]["data"],
        json!({"type": "conversation", "id": CONVERSATION})
    );
    assert_eq!(
        relationships["conversation"]["links"]["self"],
        format!("/v1/conversations/{CONVERSATION}")
    );
    assert_eq!(relationships["createdBy"]["data"]["id"], ADMIN_USER);
    assert_eq!(relationships["modifiedBy"]["data"]["id"], ADMIN_USER);
    for name in ["customer", "org"] {
        assert!(is_object_id(&relationships[name]["data"]["id"]), "{name}");
        assert!(relationships[name]["links"]["self"].is_string(), "{name}");
    }

    let listed = &sandbox.messages().conversations[CONVERSATION];
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].created_by, ADMIN_USER);
    assert_eq!(
        listed[0].created_at.as_deref(),
        Some("2020-05-01T08:00:00.123Z")
    );
    assert_eq!(listed[0].external_id.as_deref(), Some("zd-1001"));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn admin_defaults_fill_absent_audit_fields() {
    let sandbox = sandbox().await;
    let before = jiff::Timestamp::now();
    let document = json_of(create(&sandbox, &minimal_body("zd-1")).await).await;
    let attributes = &document["data"]["attributes"];
    let created: jiff::Timestamp = attributes["createdAt"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .expect("createdAt is a timestamp");
    assert!(created.as_millisecond() >= before.as_millisecond());
    assert_eq!(attributes["sentAt"], attributes["createdAt"]);
    assert_eq!(attributes["meta"], json!({}));
    let admin = json_of(token(&sandbox, ADMIN_KEY).await).await;
    assert_eq!(
        document["data"]["relationships"]["createdBy"]["data"]["id"],
        admin["data"]["attributes"]["user"]
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn schema_violations_answer_json_api_400s_and_store_nothing() {
    let sandbox = sandbox().await;
    let cases = [
        (
            json!({"channel": "email", "app": "a", "directionType": "initial"}),
            "/data/attributes/directionType",
        ),
        (json!({"app": "a"}), "/data/attributes/channel"),
        (
            json!({"channel": "fax", "app": "a"}),
            "/data/attributes/channel",
        ),
        (
            json!({"channel": "email", "app": "a", "externalId": "x".repeat(257)}),
            "/data/attributes/externalId",
        ),
        (
            json!({"channel": "email", "app": "a", "createdBy": "not-an-object-id"}),
            "/data/attributes/createdBy",
        ),
        (
            json!({"channel": "email", "app": "a", "sentAt": "2020-13-01"}),
            "/data/attributes/sentAt",
        ),
        (
            json!({"channel": "email", "app": "a", "direction": "both"}),
            "/data/attributes/direction",
        ),
    ];
    for (body, pointer) in cases {
        let response = create(&sandbox, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let document = json_of(response).await;
        let errors = document["errors"].as_array().expect("errors array");
        assert_eq!(errors.len(), 1, "{document}");
        assert_eq!(errors[0]["status"], 400);
        assert_eq!(errors[0]["code"], "bad_request");
        assert_eq!(errors[0]["title"], "Bad Request");
        assert!(errors[0]["detail"].is_string());
        assert_eq!(errors[0]["source"]["pointer"], pointer, "{document}");
    }

    let several = json!({"channel": "fax", "direction": "both", "directionType": "initial"});
    let document = json_of(create(&sandbox, &several).await).await;
    assert_eq!(document["errors"].as_array().map(Vec::len), Some(4));

    let malformed = client()
        .post(format!(
            "{}/v1/conversations/{CONVERSATION}/messages",
            sandbox.base_url()
        ))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("{\"channel\": ")
        .send()
        .await
        .expect("request completes");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(malformed).await["errors"][0]["code"], "bad_request");

    let bad_id = create_with(
        &client(),
        &sandbox,
        ADMIN_KEY,
        "0123456789ABCDEF01234567",
        &minimal_body("x"),
    )
    .await
    .expect("request completes");
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);

    assert_eq!(sandbox.stats().messages_stored, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn conversations_starting_with_dead_are_unknown() {
    let sandbox = sandbox().await;
    let unknown = "dead0000000000000000beef";
    let response = create_with(&client(), &sandbox, ADMIN_KEY, unknown, &minimal_body("x"))
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_of(response).await,
        json!({"errors": [{
            "code": "not_found",
            "message": format!("Conversation {unknown} not found"),
            "meta": {}
        }]})
    );
    assert_eq!(sandbox.stats().messages_stored, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn bad_keys_and_revoked_admin_answer_401_until_restored() {
    let sandbox = sandbox().await;
    let url = format!(
        "{}/v1/conversations/{CONVERSATION}/messages",
        sandbox.base_url()
    );
    let anonymous = client()
        .post(&url)
        .json(&minimal_body("a"))
        .send()
        .await
        .expect("request completes");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&anonymous, "x-ratelimit-remaining").is_some());
    assert_eq!(
        json_of(anonymous).await["errors"][0]["code"],
        "unauthorized"
    );
    let unknown = create_with(
        &client(),
        &sandbox,
        "nope",
        CONVERSATION,
        &minimal_body("a"),
    )
    .await
    .expect("request completes");
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let control = |path: &str| format!("{}/_sandbox/{path}", sandbox.base_url());
    let revoked = client()
        .post(control("revoke"))
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    assert_eq!(
        create(&sandbox, &minimal_body("b")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        token(&sandbox, ADMIN_KEY).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let agent = create_with(
        &client(),
        &sandbox,
        AGENT_KEY,
        CONVERSATION,
        &minimal_body("c"),
    )
    .await
    .expect("request completes");
    assert_eq!(agent.status(), StatusCode::CREATED);
    let restored = client()
        .post(control("restore"))
        .send()
        .await
        .expect("restore");
    assert!(restored.status().is_success());
    assert_eq!(
        create(&sandbox, &minimal_body("d")).await.status(),
        StatusCode::CREATED
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn admin_key_is_revoked_after_the_configured_number_of_creates() {
    let sandbox = sandbox_with(|config| config.faults.revoke_admin_after = Some(2)).await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(
            create(&sandbox, &minimal_body(&format!("r{n}")))
                .await
                .status(),
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED
        ]
    );
    assert_eq!(
        token(&sandbox, ADMIN_KEY).await.status(),
        StatusCode::UNAUTHORIZED
    );
    sandbox.set_admin_revoked(false);
    assert_eq!(
        create(&sandbox, &minimal_body("r9")).await.status(),
        StatusCode::CREATED
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn agent_key_audit_fields_are_silently_overwritten() {
    let sandbox = sandbox().await;
    let agent = json_of(token(&sandbox, AGENT_KEY).await).await;
    let agent_user = agent["data"]["attributes"]["user"].clone();
    assert!(is_object_id(&agent_user));
    let body = json!({
        "channel": "chat",
        "app": "zendesk",
        "externalId": "zd-agent",
        "createdAt": "2019-01-01T00:00:00.000Z",
        "createdBy": ADMIN_USER,
        "modifiedAt": "2019-01-01T00:00:00.000Z",
        "modifiedBy": ADMIN_USER
    });
    let response = create_with(&client(), &sandbox, AGENT_KEY, CONVERSATION, &body)
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::CREATED);
    let data = json_of(response).await["data"].clone();
    assert_ne!(data["attributes"]["createdAt"], "2019-01-01T00:00:00.000Z");
    assert_ne!(data["attributes"]["modifiedAt"], "2019-01-01T00:00:00.000Z");
    assert_eq!(data["relationships"]["createdBy"]["data"]["id"], agent_user);
    assert_eq!(
        data["relationships"]["modifiedBy"]["data"]["id"],
        agent_user
    );
    let listed = &sandbox.messages().conversations[CONVERSATION][0];
    assert_eq!(Some(listed.created_by.as_str()), agent_user.as_str());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn read_only_key_may_look_up_but_not_create() {
    let sandbox = sandbox().await;
    let response = create_with(
        &client(),
        &sandbox,
        READONLY_KEY,
        CONVERSATION,
        &minimal_body("ro"),
    )
    .await
    .expect("request completes");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(response).await["errors"][0]["code"], "forbidden");
    let lookup = client()
        .get(format!("{}/v1/messages/externalId=ro", sandbox.base_url()))
        .bearer_auth(READONLY_KEY)
        .send()
        .await
        .expect("request completes");
    assert_eq!(lookup.status(), StatusCode::NOT_FOUND);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_shows_roles_unless_hidden() {
    let sandbox = sandbox().await;
    let admin = json_of(token(&sandbox, ADMIN_KEY).await).await;
    assert_eq!(admin["data"]["type"], "token");
    assert!(is_object_id(&admin["data"]["id"]));
    let attributes = &admin["data"]["attributes"];
    assert!(is_object_id(&attributes["user"]));
    assert!(is_object_id(&attributes["org"]));
    let roles = attributes["roles"].as_array().expect("roles");
    assert!(roles.contains(&json!("org.admin")));
    assert!(roles.contains(&json!("org.permission.message.create")));
    let agent = json_of(token(&sandbox, AGENT_KEY).await).await;
    let agent_roles = agent["data"]["attributes"]["roles"]
        .as_array()
        .expect("roles");
    assert!(!agent_roles.contains(&json!("org.admin")));
    assert!(agent_roles.contains(&json!("org.permission.message.read")));
    assert_ne!(agent["data"]["attributes"]["user"], attributes["user"]);
    assert_eq!(agent["data"]["attributes"]["org"], attributes["org"]);
    sandbox.shutdown().await;

    let hidden = sandbox_with(|config| config.hide_roles = true).await;
    let admin = json_of(token(&hidden, ADMIN_KEY).await).await;
    assert!(admin["data"]["attributes"].get("roles").is_none());
    assert!(is_object_id(&admin["data"]["attributes"]["user"]));
    hidden.shutdown().await;
}

#[tokio::test]
async fn a_message_is_read_back_by_its_id() {
    let sandbox = sandbox().await;
    let created = json_of(create(&sandbox, &minimal_body("by-id")).await).await;
    let id = created["data"]["id"].as_str().expect("an id");
    let read = |path: String| {
        let url = format!("{}/v1/messages/{path}", sandbox.base_url());
        async move {
            client()
                .get(url)
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .expect("request completes")
        }
    };
    let response = read(id.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, created);
    let missing = read("000000000000000000000000".into()).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookup_finds_the_latest_message_by_either_spelling() {
    let sandbox = sandbox().await;
    let external_id = "zd/42 ü";
    let first = json_of(create(&sandbox, &minimal_body(external_id)).await).await;
    let second = json_of(create(&sandbox, &minimal_body(external_id)).await).await;
    assert_ne!(first["data"]["id"], second["data"]["id"]);
    for spelling in ["externalId", "externalid"] {
        let response = lookup(&sandbox, spelling, external_id).await;
        assert_eq!(response.status(), StatusCode::OK, "{spelling}");
        let found = json_of(response).await;
        assert_eq!(found["data"]["id"], second["data"]["id"]);
        assert_eq!(found["data"]["attributes"]["externalId"], external_id);
        assert_eq!(
            found["data"]["relationships"],
            second["data"]["relationships"]
        );
    }
    let missing = lookup(&sandbox, "externalId", "never-stored").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(missing).await["errors"][0]["code"], "not_found");
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 2);
    assert_eq!(stats.duplicate_external_ids, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookup_can_accept_a_single_spelling() {
    for (only, accepted, refused) in [
        (LookupSpelling::CamelOnly, "externalId", "externalid"),
        (LookupSpelling::LowerOnly, "externalid", "externalId"),
    ] {
        let sandbox = sandbox_with(|config| config.lookup = only).await;
        create(&sandbox, &minimal_body("one")).await;
        assert_eq!(
            lookup(&sandbox, accepted, "one").await.status(),
            StatusCode::OK
        );
        assert_eq!(
            lookup(&sandbox, refused, "one").await.status(),
            StatusCode::NOT_FOUND
        );
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn org_limit_answers_429_with_headers_and_resets_with_the_window() {
    let sandbox = sandbox_with(|config| {
        config.org_limit = Some(3);
        config.window = Duration::from_secs(2);
    })
    .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = token(&sandbox, ADMIN_KEY).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some("3"));
        remaining.push(header_number(&response, "x-ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    // Lookups and creates share the same budget.
    let limited = create(&sandbox, &minimal_body("over")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_number(&limited, "x-ratelimit-remaining"), 0);
    let reset = header_number(&limited, "x-ratelimit-reset");
    let retry_after = header_number(&limited, "retry-after");
    assert!((1..=2).contains(&reset), "reset {reset}");
    assert_eq!(retry_after, reset);
    assert_eq!(
        json_of(limited).await["errors"][0]["code"],
        "too_many_requests"
    );
    assert_eq!(sandbox.stats().faults_injected.rate_limited_org, 1);

    tokio::time::sleep(Duration::from_secs(reset) + Duration::from_millis(100)).await;
    let after_reset = create(&sandbox, &minimal_body("after")).await;
    assert_eq!(after_reset.status(), StatusCode::CREATED);
    assert_eq!(header_number(&after_reset, "x-ratelimit-remaining"), 2);
    assert_eq!(sandbox.stats().messages_stored, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn org_limit_can_omit_retry_after_and_send_epoch_resets() {
    let sandbox = sandbox_with(|config| {
        config.org_limit = Some(1);
        config.retry_after = false;
        config.reset_unit = super::ResetUnit::EpochSeconds;
    })
    .await;
    assert_eq!(token(&sandbox, ADMIN_KEY).await.status(), StatusCode::OK);
    let limited = token(&sandbox, ADMIN_KEY).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&limited, "retry-after").is_none());
    let now = jiff::Timestamp::now().as_second().unsigned_abs();
    let reset = header_number(&limited, "x-ratelimit-reset");
    assert!(reset > now && reset <= now + 61, "reset {reset}, now {now}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn customer_limit_spares_messages_with_imported_at() {
    let sandbox = sandbox_with(|config| config.customer_limit = 3).await;
    for n in 0..3 {
        let response = create(&sandbox, &minimal_body(&format!("live{n}"))).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let limited = create(&sandbox, &minimal_body("live3")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&limited, "retry-after").is_some());
    for n in 0..5 {
        let mut body = minimal_body(&format!("old{n}"));
        body["importedAt"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(create(&sandbox, &body).await.status(), StatusCode::CREATED);
    }
    let other = create_with(
        &client(),
        &sandbox,
        ADMIN_KEY,
        OTHER_CONVERSATION,
        &minimal_body("elsewhere"),
    )
    .await
    .expect("request completes");
    assert_eq!(other.status(), StatusCode::CREATED);
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 9);
    assert_eq!(stats.faults_injected.rate_limited_customer, 1);
    sandbox.shutdown().await;
}

/// Sends one create over a raw socket and returns every byte the server sent back.
async fn raw_create(sandbox: &RunningSandbox, external_id: &str) -> Vec<u8> {
    let body = minimal_body(external_id).to_string();
    let request = format!(
        "POST /v1/conversations/{CONVERSATION}/messages HTTP/1.1\r\nHost: sandbox\r\n\
         Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sandbox.addr)
        .await
        .expect("connects");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request written");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection in time");
    // A reset instead of an orderly close is also "no answer"; only the bytes matter here.
    drop(read);
    answer
}

#[tokio::test]
async fn store_then_drop_closes_without_answer_yet_stores() {
    let sandbox = sandbox_with(|config| config.faults.store_then_drop = 1.0).await;
    assert!(raw_create(&sandbox, "kept-1").await.is_empty());
    let outcome = create_with(
        &fresh_connection_client(),
        &sandbox,
        ADMIN_KEY,
        CONVERSATION,
        &minimal_body("kept-2"),
    )
    .await;
    let error = outcome.expect_err("no response arrives");
    assert!(error.status().is_none());
    let listed: Vec<Option<String>> = sandbox.messages().conversations[CONVERSATION]
        .iter()
        .map(|message| message.external_id.clone())
        .collect();
    assert_eq!(
        listed,
        [Some("kept-1".to_owned()), Some("kept-2".to_owned())]
    );
    let stats = sandbox.stats();
    assert_eq!(stats.dropped_connections, 2);
    assert_eq!(stats.faults_injected.store_then_drop, 2);
    assert_eq!(stats.requests_total, 2);
    assert!(stats.requests_by_status.is_empty());
    assert_eq!(
        lookup(&sandbox, "externalId", "kept-2").await.status(),
        StatusCode::OK
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn drop_before_store_closes_without_answer_and_stores_nothing() {
    let sandbox = sandbox_with(|config| config.faults.drop_before_store = 1.0).await;
    assert!(raw_create(&sandbox, "lost-1").await.is_empty());
    let outcome = create_with(
        &fresh_connection_client(),
        &sandbox,
        ADMIN_KEY,
        CONVERSATION,
        &minimal_body("lost-2"),
    )
    .await;
    assert!(outcome.is_err());
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 0);
    assert_eq!(stats.dropped_connections, 2);
    assert_eq!(stats.faults_injected.drop_before_store, 2);
    // Other endpoints are unaffected by the create-only faults.
    assert_eq!(token(&sandbox, ADMIN_KEY).await.status(), StatusCode::OK);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn injected_server_errors_use_the_usual_error_shape() {
    let sandbox = sandbox_with(|config| config.faults.error_503 = 1.0).await;
    let response = create(&sandbox, &minimal_body("x")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), None);
    assert_eq!(
        json_of(response).await["errors"][0]["code"],
        "service_unavailable"
    );
    sandbox.shutdown().await;
    let sandbox = sandbox_with(|config| config.faults.error_500 = 1.0).await;
    let response = create(&sandbox, &minimal_body("x")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let stats = sandbox.stats();
    assert_eq!(stats.faults_injected.error_500, 1);
    assert_eq!(stats.messages_stored, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn injected_503s_can_carry_retry_after_as_a_429_would() {
    let sandbox = sandbox_with(|config| {
        config.faults.error_503 = 1.0;
        config.faults.error_503_retry_after = true;
        config.window = Duration::from_secs(30);
    })
    .await;
    let response = create(&sandbox, &minimal_body("x")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = header_number(&response, "retry-after");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(sandbox.stats().faults_injected.error_503, 1);
    sandbox.shutdown().await;
    let sandbox = sandbox_with(|config| {
        config.faults.error_503 = 1.0;
        config.faults.error_503_retry_after = true;
        config.retry_after_value = Some("7".into());
    })
    .await;
    let response = create(&sandbox, &minimal_body("x")).await;
    assert_eq!(header(&response, "retry-after"), Some("7"));
    sandbox.shutdown().await;
}

/// The outcome of each of `count` sequential creates: a status code, or 0 for a dropped
/// connection.
async fn fault_sequence(seed: u64, count: usize) -> (Vec<u16>, SandboxStats) {
    let sandbox = sandbox_with(|config| {
        config.seed = seed;
        config.faults.error_500 = 0.2;
        config.faults.error_503 = 0.2;
        config.faults.drop_before_store = 0.2;
        config.faults.store_then_drop = 0.2;
    })
    .await;
    let client = fresh_connection_client();
    let mut outcomes = Vec::with_capacity(count);
    for n in 0..count {
        let body = minimal_body(&format!("seq-{n}"));
        let outcome = create_with(&client, &sandbox, ADMIN_KEY, CONVERSATION, &body).await;
        outcomes.push(outcome.map_or(0, |response| response.status().as_u16()));
    }
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    (outcomes, stats)
}

#[tokio::test]
async fn a_seed_reproduces_the_fault_sequence() {
    let (first, first_stats) = fault_sequence(42, 40).await;
    let (again, again_stats) = fault_sequence(42, 40).await;
    let (other, _) = fault_sequence(43, 40).await;
    assert_eq!(first, again);
    assert_eq!(first_stats.faults_injected, again_stats.faults_injected);
    assert_ne!(first, other);
    for expected in [0, 201, 500, 503] {
        assert!(first.contains(&expected), "{expected} missing in {first:?}");
    }
    let faults = &first_stats.faults_injected;
    let dropped = faults.drop_before_store + faults.store_then_drop;
    assert_eq!(
        dropped as usize,
        first.iter().filter(|status| **status == 0).count()
    );
    assert_eq!(
        first_stats.messages_stored,
        first.iter().filter(|status| **status == 201).count() as u64 + faults.store_then_drop
    );
}

#[tokio::test]
async fn stats_count_v1_requests_by_status_but_not_control_requests() {
    let sandbox = sandbox().await;
    create(&sandbox, &minimal_body("s1")).await;
    create(&sandbox, &minimal_body("s1")).await;
    create(&sandbox, &json!({"channel": "email"})).await;
    create_with(
        &client(),
        &sandbox,
        ADMIN_KEY,
        "dead00000000000000000000",
        &minimal_body("s2"),
    )
    .await
    .expect("request completes");
    token(&sandbox, "wrong").await;
    let url = format!("{}/_sandbox/stats", sandbox.base_url());
    let from_endpoint: SandboxStats = client()
        .get(&url)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON");
    let again: SandboxStats = client()
        .get(&url)
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(from_endpoint, again);
    assert_eq!(from_endpoint, sandbox.stats());
    assert_eq!(from_endpoint.requests_total, 5);
    assert_eq!(from_endpoint.messages_stored, 2);
    assert_eq!(from_endpoint.duplicate_external_ids, 1);
    let by_status: Vec<(&str, u64)> = from_endpoint
        .requests_by_status
        .iter()
        .map(|(status, count)| (status.as_str(), *count))
        .collect();
    assert_eq!(by_status, [("201", 2), ("400", 1), ("401", 1), ("404", 1)]);

    let dump: Value = client()
        .get(format!("{}/_sandbox/messages", sandbox.base_url()))
        .send()
        .await
        .expect("messages")
        .json()
        .await
        .expect("messages JSON");
    let listed = dump["conversations"][CONVERSATION]
        .as_array()
        .expect("conversation list");
    assert_eq!(listed.len(), 2);
    for field in [
        "id",
        "externalId",
        "sentAt",
        "createdAt",
        "createdBy",
        "modifiedAt",
        "modifiedBy",
        "importedAt",
        "direction",
        "preview",
    ] {
        assert!(listed[0].get(field).is_some(), "{field} missing");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn latency_applies() {
    let sandbox = sandbox_with(|config| config.faults.latency = Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_eq!(token(&sandbox, AGENT_KEY).await.status(), StatusCode::OK);
    // A lower bound only: a sleep never ends early, however loaded the machine.
    assert!(started.elapsed() >= Duration::from_millis(300));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn held_requests_stay_in_flight_until_released_and_max_concurrency_is_measured() {
    let sandbox = sandbox().await;
    sandbox.set_hold(true);
    let client = client();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let request = client
                .get(format!("{}/v1/auth/tokens/current", sandbox.base_url()))
                .bearer_auth(AGENT_KEY);
            tokio::spawn(request.send())
        })
        .collect();
    eventually("six requests held", || sandbox.stats().held == 6).await;
    let stats = sandbox.stats();
    assert_eq!(stats.in_flight, 6);
    assert_eq!(stats.max_concurrency, 6);
    assert!(requests.iter().all(|request| !request.is_finished()));
    let released = client
        .post(format!("{}/_sandbox/release", sandbox.base_url()))
        .send()
        .await
        .expect("release");
    assert_eq!(released.status(), StatusCode::NO_CONTENT);
    for request in requests {
        let response = request.await.expect("task joins");
        assert_eq!(
            response.expect("request completes").status(),
            StatusCode::OK
        );
    }
    let stats = sandbox.stats();
    assert_eq!(
        (stats.held, stats.in_flight, stats.max_concurrency),
        (0, 0, 6)
    );
    // Control endpoints are never held.
    let hold = client
        .post(format!("{}/_sandbox/hold", sandbox.base_url()))
        .send()
        .await
        .expect("hold");
    assert_eq!(hold.status(), StatusCode::NO_CONTENT);
    assert_eq!(sandbox.messages().conversations.len(), 0);
    let held = tokio::spawn(
        client
            .post(format!(
                "{}/v1/conversations/{CONVERSATION}/messages",
                sandbox.base_url()
            ))
            .bearer_auth(ADMIN_KEY)
            .json(&minimal_body("after-hold"))
            .send(),
    );
    eventually("the create held", || sandbox.stats().held == 1).await;
    assert_eq!(
        sandbox.stats().creates,
        0,
        "held before anything is processed"
    );
    sandbox.set_hold(false);
    let created = held.await.expect("joins").expect("request completes");
    assert_eq!(created.status(), StatusCode::CREATED);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let sandbox = sandbox().await;
    let mut stream = tokio::net::TcpStream::connect(sandbox.addr)
        .await
        .expect("connects");
    let request = format!(
        "GET /v1/auth/tokens/current HTTP/1.1\r\nHost: sandbox\r\nAuthorization: Bearer {AGENT_KEY}\r\n\r\n"
    );
    let mut answered = Vec::new();
    for _ in 0..2 {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request written");
        let mut buffer = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("answer in time")
            .expect("readable");
        answered.push(String::from_utf8_lossy(&buffer[..read]).into_owned());
    }
    for answer in answered {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn unknown_v1_paths_are_404_and_counted() {
    let sandbox = sandbox().await;
    let response = client()
        .get(format!("{}/v1/nothing/here", sandbox.base_url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request completes");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(header(&response, "x-ratelimit-limit").is_some());
    assert_eq!(sandbox.stats().requests_by_status.get("404"), Some(&1));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refuses_non_loopback_addresses_and_invalid_faults() {
    let outside = SocketAddr::from(([0, 0, 0, 0], 0));
    assert!(matches!(
        start(SandboxConfig::new(outside)).await,
        Err(SandboxError::NotLoopback(_))
    ));
    let mut config = SandboxConfig::new(loopback());
    config.faults.store_then_drop = 2.0;
    assert!(matches!(
        start(config).await,
        Err(SandboxError::InvalidConfig(_))
    ));
    let mut config = SandboxConfig::new(loopback());
    config.window = Duration::ZERO;
    assert!(matches!(
        start(config).await,
        Err(SandboxError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let sandbox = sandbox().await;
    let addr = sandbox.addr;
    assert_eq!(token(&sandbox, ADMIN_KEY).await.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), sandbox.shutdown())
        .await
        .expect("shutdown completes");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn rate_switches_shape_the_headers_a_client_sees() {
    let sandbox = sandbox_with(|config| {
        config.org_limit = Some(1);
        config.reset_unit = super::ResetUnit::EpochMillis;
        config.retry_after_value = Some("18446744073709551615".into());
    })
    .await;
    assert_eq!(token(&sandbox, ADMIN_KEY).await.status(), StatusCode::OK);
    let limited = token(&sandbox, ADMIN_KEY).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&limited, "retry-after"),
        Some("18446744073709551615")
    );
    let now_ms = jiff::Timestamp::now().as_millisecond().unsigned_abs();
    let reset = header_number(&limited, "x-ratelimit-reset");
    assert!(
        reset > now_ms && reset <= now_ms + 61_000,
        "reset {reset}, now {now_ms}"
    );
    sandbox.shutdown().await;

    let sandbox = sandbox_with(|config| {
        config.rate_headers = false;
        config.error_429 = 1.0;
    })
    .await;
    let refused = create(&sandbox, &minimal_body("x")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&refused, "x-ratelimit-limit").is_none());
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(sandbox.stats().injected_429, 1);
    assert_eq!(sandbox.stats().messages_stored, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_live_client_spends_the_org_window_and_counts_its_429s() {
    let sandbox = sandbox_with(|config| {
        config.org_limit = Some(5);
        config.window = Duration::from_secs(60);
        config.live_client = Some("constant:200".parse().unwrap());
    })
    .await;
    // 200/s against 5 a minute: the window is spent at once and the rest is refused.
    let mut stats = sandbox.stats();
    for _ in 0..3_000 {
        if stats.live_client.rate_limited > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = sandbox.stats();
    }
    assert_eq!(stats.live_client.ok, 5, "{stats:?}");
    assert!(stats.live_client.rate_limited > 0, "{stats:?}");
    assert_eq!(
        stats.requests_total, 0,
        "the live client is not in the request counts"
    );
    let refused = token(&sandbox, ADMIN_KEY).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    sandbox.shutdown().await;
}

// ---- Issue 7 switches: unknown create outcomes and misleading lookups ----

/// Polls until `condition` holds, or panics after a generous limit (machines are shared).
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stored_external_ids(sandbox: &RunningSandbox, conversation: &str) -> Vec<String> {
    sandbox
        .messages()
        .conversations
        .get(conversation)
        .map(|listed| {
            listed
                .iter()
                .filter_map(|message| message.external_id.clone())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn seed_messages(sandbox: &RunningSandbox, items: &Value) -> Response {
    client()
        .post(format!("{}/_sandbox/seed", sandbox.base_url()))
        .json(items)
        .send()
        .await
        .expect("request completes")
}

#[tokio::test]
async fn store_then_error_stores_then_answers_a_gateway_page_or_a_json_error() {
    let sandbox = sandbox_with(|config| {
        config.faults.store_then_error = 1.0;
        config.faults.store_then_error_statuses = vec![502];
    })
    .await;
    let response = create(&sandbox, &minimal_body("ste-1")).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(&response, "content-type"), Some("text/html"));
    let page = response.text().await.expect("body");
    assert!(page.contains("<h1>502 Bad Gateway</h1>"), "{page}");
    assert_eq!(stored_external_ids(&sandbox, CONVERSATION), ["ste-1"]);
    assert_eq!(
        lookup(&sandbox, "externalId", "ste-1").await.status(),
        StatusCode::OK
    );
    let stats = sandbox.stats();
    assert_eq!(stats.faults_injected.store_then_error, 1);
    assert_eq!(stats.messages_stored, 1);
    sandbox.shutdown().await;

    for (status, code) in [(500, "internal_server_error"), (408, "request_timeout")] {
        let sandbox = sandbox_with(|config| {
            config.faults.store_then_error = 1.0;
            config.faults.store_then_error_statuses = vec![status];
        })
        .await;
        let response = create(&sandbox, &minimal_body("ste-2")).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(json_of(response).await["errors"][0]["code"], code);
        assert_eq!(sandbox.stats().messages_stored, 1);
        sandbox.shutdown().await;
    }
}

#[tokio::test]
async fn store_then_error_draws_every_listed_status_and_keeps_the_seed_sequence() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sandbox = sandbox_with(|config| {
            config.seed = seed;
            config.faults.store_then_error = 0.5;
            config.faults.store_then_error_statuses = vec![500, 502, 504, 522];
        })
        .await;
        let mut seen = Vec::new();
        for n in 0..60 {
            let response = create(&sandbox, &minimal_body(&format!("d-{n}"))).await;
            seen.push(response.status().as_u16());
        }
        let stats = sandbox.stats();
        assert_eq!(stats.messages_stored, 60, "every create is stored");
        let errors = seen.iter().filter(|status| **status != 201).count() as u64;
        assert_eq!(stats.faults_injected.store_then_error, errors);
        sandbox.shutdown().await;
        seen
    }
    let first = statuses(11).await;
    assert_eq!(first, statuses(11).await);
    for status in [201, 500, 502, 504, 522] {
        assert!(first.contains(&status), "{status} missing in {first:?}");
    }
}

#[tokio::test]
async fn lookup_route_none_answers_404_to_every_spelling_like_a_miss() {
    let sandbox = sandbox_with(|config| config.lookup = LookupSpelling::NoRoute).await;
    create(&sandbox, &minimal_body("here")).await;
    for spelling in ["externalId", "externalid"] {
        let response = lookup(&sandbox, spelling, "here").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{spelling}");
        let routeless = json_of(response).await;
        let miss = json_of(lookup(&sandbox, spelling, "here").await).await;
        assert_eq!(routeless, miss);
        assert_eq!(routeless["errors"][0]["code"], "not_found");
    }
    let lookups = sandbox.stats().lookups;
    assert_eq!(lookups.camel.no_route, 2);
    assert_eq!(lookups.lower.no_route, 2);
    assert_eq!(lookups.camel.hit + lookups.lower.hit, 0);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookups_are_counted_by_spelling_and_outcome() {
    let sandbox = sandbox_with(|config| config.lookup = LookupSpelling::LowerOnly).await;
    create(&sandbox, &minimal_body("counted")).await;
    lookup(&sandbox, "externalId", "counted").await;
    lookup(&sandbox, "externalid", "counted").await;
    lookup(&sandbox, "externalid", "counted").await;
    lookup(&sandbox, "externalid", "absent").await;
    let lookups = sandbox.stats().lookups;
    assert_eq!(
        lookups,
        LookupCounts {
            camel: SpellingCounts {
                hit: 0,
                miss: 0,
                no_route: 1
            },
            lower: SpellingCounts {
                hit: 2,
                miss: 1,
                no_route: 0
            },
            lookup_429: 0,
            other_first: 0,
        }
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn not_found_as_empty_answers_a_miss_with_empty_data() {
    let sandbox = sandbox_with(|config| {
        config.not_found_as_empty = true;
        config.lookup = LookupSpelling::CamelOnly;
    })
    .await;
    let created = json_of(create(&sandbox, &minimal_body("there")).await).await;
    let miss = lookup(&sandbox, "externalId", "nowhere").await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert_eq!(json_of(miss).await, json!({"data": []}));
    let hit = json_of(lookup(&sandbox, "externalId", "there").await).await;
    assert_eq!(hit["data"]["id"], created["data"]["id"]);
    // A spelling that has no route still answers 404.
    assert_eq!(
        lookup(&sandbox, "externalid", "nowhere").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(sandbox.stats().lookups.camel.miss, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookup_list_answers_every_message_under_the_id_newest_first() {
    let sandbox = sandbox_with(|config| config.lookup_list = true).await;
    let seeded = seed_messages(
        &sandbox,
        &json!([{"conversationId": OTHER_CONVERSATION, "externalId": "shared-id"}]),
    )
    .await;
    assert_eq!(seeded.status(), StatusCode::CREATED);
    let seeded_id = json_of(seeded).await["data"][0]["id"].clone();
    let own = json_of(create(&sandbox, &minimal_body("shared-id")).await).await;
    let listed = json_of(lookup(&sandbox, "externalid", "shared-id").await).await;
    let data = listed["data"].as_array().expect("a list");
    assert_eq!(data.len(), 2, "{listed}");
    assert_eq!(data[0]["id"], own["data"]["id"]);
    assert_eq!(
        data[0]["relationships"]["conversation"]["data"]["id"],
        CONVERSATION
    );
    assert_eq!(data[1]["id"], seeded_id);
    assert_eq!(
        data[1]["relationships"]["conversation"]["data"]["id"],
        OTHER_CONVERSATION
    );
    assert_eq!(
        lookup(&sandbox, "externalId", "nothing").await.status(),
        StatusCode::NOT_FOUND
    );
    sandbox.shutdown().await;

    let empty = sandbox_with(|config| {
        config.lookup_list = true;
        config.not_found_as_empty = true;
    })
    .await;
    let miss = lookup(&empty, "externalId", "nothing").await;
    assert_eq!(miss.status(), StatusCode::OK);
    assert_eq!(json_of(miss).await, json!({"data": []}));
    empty.shutdown().await;
}

#[tokio::test]
async fn slow_store_lands_even_after_the_client_gave_up() {
    let sandbox = sandbox_with(|config| {
        config.faults.slow_store = 1.0;
        config.faults.slow_store_delay = Duration::from_millis(300);
    })
    .await;
    let impatient = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client builds");
    let outcome = create_with(
        &impatient,
        &sandbox,
        ADMIN_KEY,
        CONVERSATION,
        &minimal_body("late"),
    )
    .await;
    assert!(outcome.expect_err("the client times out").is_timeout());
    eventually("the held message to be stored", || {
        sandbox.stats().messages_stored == 1
    })
    .await;
    assert_eq!(stored_external_ids(&sandbox, CONVERSATION), ["late"]);
    assert_eq!(sandbox.stats().faults_injected.slow_store, 1);

    // A patient client gets its 201, no sooner than the hold.
    let started = Instant::now();
    let response = create(&sandbox, &minimal_body("patient")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(is_object_id(&json_of(response).await["data"]["id"]));
    assert_eq!(sandbox.stats().faults_injected.slow_store, 2);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn accepted_202_stores_and_answers_the_usual_document() {
    let sandbox = sandbox_with(|config| config.faults.accepted_202 = 1.0).await;
    let response = create(&sandbox, &minimal_body("acc")).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let document = json_of(response).await;
    assert!(is_object_id(&document["data"]["id"]));
    assert_eq!(document["data"]["attributes"]["externalId"], "acc");
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 1);
    assert_eq!(stats.faults_injected.accepted_202, 1);
    assert_eq!(stats.requests_by_status.get("202"), Some(&1));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn created_without_id_stores_but_names_no_id() {
    let sandbox = sandbox_with(|config| config.faults.created_without_id = 1.0).await;
    let response = create(&sandbox, &minimal_body("noid")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let document = json_of(response).await;
    assert!(document["data"].get("id").is_none(), "{document}");
    assert!(document["data"].get("links").is_none(), "{document}");
    assert_eq!(document["data"]["type"], "message");
    assert_eq!(document["data"]["attributes"]["externalId"], "noid");
    let stored = &sandbox.messages().conversations[CONVERSATION];
    assert!(!document.to_string().contains(&stored[0].id));
    assert_eq!(sandbox.stats().faults_injected.created_without_id, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn oversize_body_pads_the_document_past_two_mib_before_the_id() {
    let sandbox = sandbox_with(|config| config.faults.oversize_body = 1.0).await;
    let response = create(&sandbox, &minimal_body("big")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = response.bytes().await.expect("body");
    assert!(body.len() > 2 * 1024 * 1024, "{} bytes", body.len());
    let document: Value = serde_json::from_slice(&body).expect("still valid JSON");
    let id = document["data"]["id"].as_str().expect("id").to_owned();
    let text = String::from_utf8_lossy(&body);
    let first_id = text.find(&id).expect("id in the body");
    assert!(first_id > 1024 * 1024, "the id must lie past the first MiB");
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 1);
    assert_eq!(stats.faults_injected.oversize_body, 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn redirect_answers_307_processes_nothing_and_counts_who_followed() {
    let sandbox =
        sandbox_with(|config| config.redirect_to = Some("/_sandbox/redirected".into())).await;
    let not_following = Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds");
    let response = create_with(
        &not_following,
        &sandbox,
        ADMIN_KEY,
        CONVERSATION,
        &minimal_body("moved"),
    )
    .await
    .expect("request completes");
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(header(&response, "location"), Some("/_sandbox/redirected"));
    let token = not_following
        .get(format!("{}/v1/auth/tokens/current", sandbox.base_url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request completes");
    assert_eq!(token.status(), StatusCode::TEMPORARY_REDIRECT);
    let stats = sandbox.stats();
    assert_eq!(stats.messages_stored, 0);
    assert_eq!(stats.creates, 0, "nothing processed");
    assert_eq!(stats.redirect_hits, 0);
    assert_eq!(stats.faults_injected.redirected, 2);
    assert_eq!(stats.requests_by_status.get("307"), Some(&2));

    // A client that follows lands on the control endpoint, which counts it.
    let followed = create(&sandbox, &minimal_body("moved")).await;
    assert_eq!(followed.status(), StatusCode::NO_CONTENT);
    assert_eq!(sandbox.stats().redirect_hits, 1);
    assert_eq!(sandbox.stats().messages_stored, 0);
    sandbox.shutdown().await;

    let elsewhere = sandbox_with(|config| {
        config.redirect_to = Some("https://example.invalid/v1".into());
    })
    .await;
    let response = not_following
        .get(format!("{}/v1/auth/tokens/current", elsewhere.base_url()))
        .send()
        .await
        .expect("request completes");
    assert_eq!(
        header(&response, "location"),
        Some("https://example.invalid/v1")
    );
    elsewhere.shutdown().await;

    for bad in [
        "ftp://host/x",
        "//host/x",
        "relative/path",
        "http://",
        "a\nb",
    ] {
        let mut config = SandboxConfig::new(loopback());
        config.redirect_to = Some(bad.into());
        assert!(
            matches!(start(config).await, Err(SandboxError::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn seeded_messages_are_marked_found_by_lookups_and_not_counted_as_imported() {
    let sandbox = sandbox().await;
    let response = seed_messages(
        &sandbox,
        &json!([
            {"conversationId": OTHER_CONVERSATION, "externalId": "live-1"},
            {"conversationId": OTHER_CONVERSATION, "externalId": "live-2"}
        ]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer = json_of(response).await;
    assert_eq!(answer["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(answer["data"][0]["externalId"], "live-1");

    let found = json_of(lookup(&sandbox, "externalId", "live-1").await).await;
    assert_eq!(found["data"]["id"], answer["data"][0]["id"]);
    assert_eq!(
        found["data"]["relationships"]["conversation"]["data"]["id"],
        OTHER_CONVERSATION
    );
    // The importer creating the same externalId in its own conversation is no duplicate.
    assert_eq!(
        create(&sandbox, &minimal_body("live-1")).await.status(),
        StatusCode::CREATED
    );
    let stats = sandbox.stats();
    assert_eq!(stats.seeded, 2);
    assert_eq!(stats.messages_stored, 1);
    assert_eq!(stats.duplicate_external_ids, 0);
    let dump: Value = client()
        .get(format!("{}/_sandbox/messages", sandbox.base_url()))
        .send()
        .await
        .expect("messages")
        .json()
        .await
        .expect("messages JSON");
    assert_eq!(dump["conversations"][OTHER_CONVERSATION][0]["seeded"], true);
    assert_eq!(dump["conversations"][CONVERSATION][0]["seeded"], false);

    for bad in [
        json!({"conversationId": OTHER_CONVERSATION, "externalId": "x"}),
        json!([{"conversationId": "nope", "externalId": "x"}]),
        json!([{"conversationId": "dead0000000000000000beef", "externalId": "x"}]),
        json!([{"conversationId": OTHER_CONVERSATION, "externalId": ""}]),
        json!([{"conversationId": OTHER_CONVERSATION, "externalId": "x", "extra": 1}]),
    ] {
        let response = seed_messages(&sandbox, &bad).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(sandbox.stats().seeded, 2, "a refused batch stores nothing");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookup_429_refuses_lookups_with_retry_after_and_spares_creates() {
    let sandbox = sandbox_with(|config| config.faults.lookup_429 = 1.0).await;
    assert_eq!(
        create(&sandbox, &minimal_body("l429")).await.status(),
        StatusCode::CREATED
    );
    let limited = lookup(&sandbox, "externalId", "l429").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header_number(&limited, "retry-after") >= 1);
    assert!(header(&limited, "x-ratelimit-reset").is_some());
    assert_eq!(
        json_of(limited).await["errors"][0]["code"],
        "too_many_requests"
    );
    let stats = sandbox.stats();
    assert_eq!(stats.lookups.lookup_429, 1);
    assert_eq!(stats.faults_injected.lookup_429, 1);
    assert_eq!(stats.lookups.camel, SpellingCounts::default());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookup_dice_never_shift_the_create_faults() {
    async fn outcomes(lookups_between: bool) -> Vec<u16> {
        let sandbox = sandbox_with(|config| {
            config.seed = 5;
            config.faults.error_500 = 0.3;
            config.faults.lookup_429 = 0.5;
        })
        .await;
        let mut seen = Vec::new();
        for n in 0..30 {
            seen.push(
                create(&sandbox, &minimal_body(&format!("s{n}")))
                    .await
                    .status()
                    .as_u16(),
            );
            if lookups_between {
                lookup(&sandbox, "externalId", "s0").await;
            }
        }
        sandbox.shutdown().await;
        seen
    }
    assert_eq!(outcomes(false).await, outcomes(true).await);
}

#[tokio::test]
async fn creates_are_counted_in_all_and_by_conversation() {
    let sandbox = sandbox_with(|config| config.faults.error_503 = 1.0).await;
    create(&sandbox, &minimal_body("c1")).await;
    create(&sandbox, &minimal_body("c2")).await;
    create_with(
        &client(),
        &sandbox,
        "wrong-key",
        OTHER_CONVERSATION,
        &minimal_body("c3"),
    )
    .await
    .expect("request completes");
    token(&sandbox, ADMIN_KEY).await;
    let stats = sandbox.stats();
    assert_eq!(stats.creates, 3);
    assert_eq!(
        stats.creates_by_conversation,
        std::collections::BTreeMap::from([
            (CONVERSATION.to_owned(), 2),
            (OTHER_CONVERSATION.to_owned(), 1)
        ])
    );
    sandbox.shutdown().await;
}

async fn control(sandbox: &RunningSandbox, path_and_query: &str) -> StatusCode {
    client()
        .post(format!("{}{path_and_query}", sandbox.base_url()))
        .send()
        .await
        .expect("control request completes")
        .status()
}

#[tokio::test]
async fn forbid_answers_creates_403_until_restored() {
    let sandbox = sandbox().await;
    assert_eq!(create(&sandbox, &minimal_body("f-1")).await.status(), 201);
    assert_eq!(control(&sandbox, "/_sandbox/forbid").await, 204);
    let refused = create(&sandbox, &minimal_body("f-2")).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(json_of(refused).await["errors"][0]["code"], "forbidden");
    assert_eq!(sandbox.stats().faults_injected.forbidden, 1);
    assert_eq!(control(&sandbox, "/_sandbox/restore").await, 204);
    assert_eq!(create(&sandbox, &minimal_body("f-3")).await.status(), 201);
    assert_eq!(sandbox.stats().messages_stored, 2);
}

#[tokio::test]
async fn lookups_fail_with_408_and_misses_answer_each_empty_shape() {
    let sandbox = sandbox().await;
    assert_eq!(
        control(&sandbox, "/_sandbox/lookups/fail?status=408").await,
        204
    );
    assert_eq!(lookup(&sandbox, "externalId", "x").await.status(), 408);
    assert_eq!(sandbox.stats().faults_injected.lookup_408, 1);
    assert_eq!(
        control(&sandbox, "/_sandbox/lookups/fail?status=404").await,
        400
    );
    assert_eq!(control(&sandbox, "/_sandbox/lookups/heal").await, 204);
    for (shape, data) in [
        ("null", json!(null)),
        ("object", json!({})),
        ("list", json!([])),
    ] {
        let path = format!("/_sandbox/lookups/miss?data={shape}");
        assert_eq!(control(&sandbox, &path).await, 204);
        let miss = lookup(&sandbox, "externalId", "x").await;
        assert_eq!(miss.status(), 200, "{shape}");
        assert_eq!(json_of(miss).await, json!({ "data": data }), "{shape}");
    }
    assert_eq!(
        control(&sandbox, "/_sandbox/lookups/miss?data=x").await,
        400
    );
    assert_eq!(control(&sandbox, "/_sandbox/lookups/heal").await, 204);
    assert_eq!(lookup(&sandbox, "externalId", "x").await.status(), 404);
}

#[tokio::test]
async fn hold_after_lets_that_many_requests_through_then_holds_until_released() {
    let sandbox = sandbox().await;
    assert_eq!(control(&sandbox, "/_sandbox/hold?after=2").await, 204);
    for _ in 0..2 {
        assert_eq!(token(&sandbox, ADMIN_KEY).await.status(), 200);
    }
    let base = sandbox.base_url();
    let third = tokio::spawn(async move {
        client()
            .get(format!("{base}/v1/auth/tokens/current"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .map(|response| response.status())
    });
    let started = Instant::now();
    while sandbox.stats().held == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(control(&sandbox, "/_sandbox/release").await, 204);
    let status = third.await.expect("task").expect("answered");
    assert_eq!(status, 200);
    // Released means disarmed: later requests pass.
    assert_eq!(token(&sandbox, ADMIN_KEY).await.status(), 200);
    assert_eq!(sandbox.stats().max_requests_in_a_window, 4);
}

#[tokio::test]
async fn the_first_lookup_after_an_unknown_outcome_is_timed_from_the_answer() {
    let sandbox = sandbox_with(|config| config.faults.store_then_error = 1.0).await;
    assert!(create(&sandbox, &minimal_body("u-1"))
        .await
        .status()
        .is_server_error());
    assert_eq!(sandbox.stats().lookup_after_unknown_outcome_min_ms, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lookup(&sandbox, "externalId", "u-1").await.status(), 200);
    let waited = sandbox.stats().lookup_after_unknown_outcome_min_ms;
    assert!(waited.is_some_and(|ms| ms >= 300), "{waited:?}");
    // Only the first lookup after the answer counts.
    assert_eq!(lookup(&sandbox, "externalId", "u-1").await.status(), 200);
    assert_eq!(sandbox.stats().lookup_after_unknown_outcome_min_ms, waited);
}
