//! HTTP routes of the sandbox: the `/v1` imitation of Kustomer behind one gate (latency, auth,
//! org limit, rate headers, status counting) and the unauthenticated `/_sandbox` controls.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::creates::{answer_before_store, json_body, OVERSIZE_PADDING};
use super::directory::CreateKind;
use super::faults::OnceStored;
use super::server::ConnectionKill;
use super::state::{
    customer_of, KeyProfile, LookupOutcome, MissShape, NewMessage, RateSnapshot, Refusal, Shared,
    Spelling, StoreRefusal, StoredMessage, ORG_ID, ROLE_ADMIN, ROLE_MESSAGE_CREATE,
    ROLE_MESSAGE_READ,
};
use super::validate::{format_timestamp, is_object_id, FieldError};
use super::{LookupSpelling, ResetUnit, SandboxError};

const CREATE_ROUTE: &str = "/v1/conversations/{id}/messages";

/// Conversation ids starting with this are "unknown" (404); every other valid id exists.
pub(crate) const UNKNOWN_CONVERSATION_PREFIX: &str = "dead";

static RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The authenticated key of a /v1 request, put in its extensions by the gate.
#[derive(Clone, Copy)]
pub(crate) struct Caller(pub(crate) &'static KeyProfile);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/auth/tokens/current", get(current_token))
        .route(
            CREATE_ROUTE,
            post(create_message).get(super::conversations::list_messages),
        )
        .route("/v1/messages/{spec}", get(lookup_message))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/messages", get(messages))
        .route("/_sandbox/customers", get(super::seeding::customers))
        .route(
            "/_sandbox/conversations",
            get(super::seeding::conversations),
        )
        .route("/_sandbox/revoke", post(revoke))
        .route("/_sandbox/restore", post(restore))
        .route("/_sandbox/seed", post(super::seeding::seed))
        .route("/_sandbox/hold", post(hold))
        .route("/_sandbox/release", post(release))
        .route("/_sandbox/redirected", any(redirected))
        .route("/_sandbox/lookups/fail", post(fail_lookups))
        .route("/_sandbox/lookups/heal", post(heal_lookups))
        .route("/_sandbox/lookups/miss", post(miss_lookups))
        .route("/_sandbox/forbid", post(forbid))
        .merge(super::bulk::routes())
        .merge(super::customers::routes())
        .merge(super::conversations::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Runs before every /v1 handler: latency, auth, org limit, then the rate headers and the status
/// count on the way out. Control endpoints pass straight through.
async fn gate(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let _in_flight = shared.enter();
    if let Some(target) = &shared.config.redirect_to {
        return redirect(&shared, target);
    }
    shared.pass_hold().await;
    let delay = shared.next_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let create = create_kind(&request);
    match create {
        Some(CreateKind::Message) => {
            if let Some(conversation) = create_path_conversation(request.uri().path()) {
                shared.count_create(conversation);
            }
        }
        Some(kind) => shared.with_kind_counts(kind, |counts| counts.creates += 1),
        None => {}
    }
    let bearer = bearer_token(request.headers());
    let is_message_create = create == Some(CreateKind::Message);
    let (admission, rate) = shared.admit(bearer, is_message_create, Instant::now());
    let mut response = match admission {
        Ok(_) if create.is_some_and(|kind| shared.roll_injected_429_for(kind)) => rate_limited_for(
            &shared,
            "Rate limit exceeded (injected)",
            rate.reset_seconds,
        ),
        Ok(profile) => {
            request.extensions_mut().insert(Caller(profile));
            next.run(request).await
        }
        Err(Refusal::Unauthorized) => api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The API key is missing, unknown or revoked",
        ),
        Err(Refusal::OrgLimited) => rate_limited_for(
            &shared,
            "Organization rate limit exceeded",
            rate.reset_seconds,
        ),
    };
    add_rate_headers(&shared, response.headers_mut(), rate);
    shared.record_status(response.status().as_u16());
    response
}

/// What a request creates, if it is a create (`POST` on a create route).
fn create_kind(request: &Request) -> Option<CreateKind> {
    if request.method() != Method::POST {
        return None;
    }
    match request.extensions().get::<MatchedPath>()?.as_str() {
        CREATE_ROUTE => Some(CreateKind::Message),
        super::customers::CUSTOMERS_ROUTE => Some(CreateKind::Customer),
        super::conversations::CONVERSATIONS_ROUTE => Some(CreateKind::Conversation),
        _ => None,
    }
}

/// The conversation id in a create request's path.
fn create_path_conversation(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/conversations/")?
        .strip_suffix("/messages")
}

/// Checks `redirect_to` at start: an absolute http(s) URL, or a path on this sandbox.
pub(crate) fn check_redirect_target(target: &str) -> Result<(), SandboxError> {
    let invalid = |why: &str| {
        SandboxError::InvalidConfig(format!(
            "redirect target {target:?} {why}: give an absolute http(s) URL or a path starting with /"
        ))
    };
    HeaderValue::from_str(target).map_err(|_| invalid("is not a valid header value"))?;
    let uri: axum::http::Uri = target.parse().map_err(|_| invalid("is not a URL"))?;
    let absolute = matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some();
    let local_path = uri.scheme().is_none()
        && uri.authority().is_none()
        && target.starts_with('/')
        && !target.starts_with("//");
    if absolute || local_path {
        Ok(())
    } else {
        Err(invalid("is neither an absolute http(s) URL nor a path"))
    }
}

/// 307 to the configured target: nothing is processed, charged or stored.
fn redirect(shared: &Shared, target: &str) -> Response {
    shared.count_redirected();
    shared.record_status(StatusCode::TEMPORARY_REDIRECT.as_u16());
    match HeaderValue::from_str(target) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response(),
        // Checked at start; kept total rather than trusting that.
        Err(_) => StatusCode::TEMPORARY_REDIRECT.into_response(),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn add_rate_headers(shared: &Shared, headers: &mut HeaderMap, rate: RateSnapshot) {
    if !shared.config.rate_headers {
        return;
    }
    let reset = match shared.config.reset_unit {
        ResetUnit::Seconds => rate.reset_seconds,
        ResetUnit::EpochSeconds => rate.reset_epoch,
        ResetUnit::EpochMillis => rate.reset_epoch_ms,
    };
    headers.insert(RATE_LIMIT.clone(), HeaderValue::from(rate.limit));
    headers.insert(RATE_REMAINING.clone(), HeaderValue::from(rate.remaining));
    headers.insert(RATE_RESET.clone(), HeaderValue::from(reset));
}

/// A 429 with `Retry-After` as configured: the seconds to the reset, a verbatim value, or none.
fn rate_limited_for(shared: &Shared, message: &str, seconds: u64) -> Response {
    let response = api_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
    if !shared.config.retry_after {
        return response;
    }
    with_retry_after(shared, response, seconds)
}

/// `response` with `Retry-After`: the seconds given, or the configured verbatim value.
pub(crate) fn with_retry_after(shared: &Shared, mut response: Response, seconds: u64) -> Response {
    let value = match &shared.config.retry_after_value {
        // Only a value HTTP cannot carry at all (control characters) is left out.
        Some(verbatim) => match HeaderValue::from_str(verbatim) {
            Ok(value) => value,
            Err(_) => return response,
        },
        None => HeaderValue::from(seconds.max(1)),
    };
    response.headers_mut().insert(RETRY_AFTER, value);
    response
}

/// A 429 raised inside a handler, with `Retry-After` until the current window ends.
pub(crate) fn rate_limited(shared: &Shared, message: &str) -> Response {
    rate_limited_for(
        shared,
        message,
        shared.clock.seconds_to_reset(Instant::now()),
    )
}

/// The usual Kustomer error body.
pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "meta": {}}]});
    (status, Json(body)).into_response()
}

/// The JSON:API error body used for schema violations, one object per problem.
pub(crate) fn validation_error(problems: &[FieldError]) -> Response {
    let errors: Vec<Value> = problems
        .iter()
        .map(|problem| {
            json!({
                "status": 400,
                "code": "bad_request",
                "title": "Bad Request",
                "detail": problem.detail,
                "source": {"pointer": problem.pointer},
            })
        })
        .collect();
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response()
}

pub(crate) fn forbidden(role: &str) -> Response {
    api_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("This key lacks the role {role}"),
    )
}

async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not_found", "No such route")
}

/// Closes the caller's connection without answering; the returned future never completes.
pub(crate) async fn drop_connection(kill: &ConnectionKill) -> Response {
    kill.trigger();
    std::future::pending::<Response>().await
}

async fn current_token(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
) -> Response {
    let mut attributes = Map::new();
    attributes.insert("name".into(), key.name.into());
    if !shared.config.hide_roles {
        attributes.insert("roles".into(), json!(key.roles));
    }
    attributes.insert("user".into(), key.user_id.into());
    attributes.insert("org".into(), ORG_ID.into());
    let body = json!({"data": {"type": "token", "id": key.token_id, "attributes": attributes}});
    (StatusCode::OK, Json(body)).into_response()
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(kill): Extension<ConnectionKill>,
    conversation: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !key.has_role(ROLE_MESSAGE_CREATE) || shared.create_forbidden() {
        return forbidden(ROLE_MESSAGE_CREATE);
    }
    let roll = shared.roll_create_faults(CreateKind::Message);
    if let Some(answer) = answer_before_store(&shared, roll.before_store, &kill).await {
        return answer;
    }
    let conversation_id = match conversation {
        Ok(Path(id)) if is_object_id(&id) => id,
        Ok(Path(id)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("Conversation id {id:?} is not a 24-character lowercase hex id"),
            )
        }
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &rejection.body_text(),
            )
        }
    };
    if conversation_id.starts_with(UNKNOWN_CONVERSATION_PREFIX) {
        let message = match &shared.config.error_body_text {
            Some(text) => text.clone(),
            None => format!("Conversation {conversation_id} not found"),
        };
        return api_error(StatusCode::NOT_FOUND, "not_found", &message);
    }
    let parsed = match json_body(&headers, body) {
        Ok(value) => value,
        Err(refusal) => return refusal.into_response(),
    };
    let attributes = match shared.validator.validate(parsed) {
        Ok(attributes) => attributes,
        Err(problems) => return validation_error(&problems),
    };
    let message = prepare_message(key, conversation_id, attributes);
    let outcome = roll.once_stored;
    let stored = if outcome == OnceStored::Slow {
        match store_slowly(&shared, message).await {
            Ok(stored) => stored,
            Err(response) => return response,
        }
    } else {
        let stored = shared.store(message, Instant::now());
        if let Ok(message) = &stored {
            shared.count_once_stored(outcome, message_external_id(message));
        }
        stored
    };
    match stored {
        Ok(stored) => answer_stored(&stored, outcome, &kill).await,
        Err(StoreRefusal::CustomerLimited) => rate_limited(
            &shared,
            "Customer message rate limit exceeded (messages with importedAt are exempt)",
        ),
    }
}

/// Holds the create `slow_store_delay`, then stores it. The store runs in its own task: axum
/// drops this handler's future when the client hangs up, and the message must land regardless.
async fn store_slowly(
    shared: &Arc<Shared>,
    message: NewMessage,
) -> Result<Result<Arc<StoredMessage>, StoreRefusal>, Response> {
    let shared = Arc::clone(shared);
    let delay = shared.config.faults.slow_store_delay;
    let landing = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let stored = shared.store(message, Instant::now());
        if let Ok(message) = &stored {
            shared.count_once_stored(OnceStored::Slow, message_external_id(message));
        }
        stored
    });
    landing.await.map_err(|_| {
        api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "The delayed store failed",
        )
    })
}

/// The answer to a create once its message is stored, as the dice decided.
async fn answer_stored(
    stored: &StoredMessage,
    outcome: OnceStored,
    kill: &ConnectionKill,
) -> Response {
    let document = MessageDocument::of(stored);
    match outcome {
        OnceStored::Created | OnceStored::Slow => {
            (StatusCode::CREATED, Json(document)).into_response()
        }
        OnceStored::Drop => drop_connection(kill).await,
        OnceStored::Error(status) => gateway_error(status),
        OnceStored::Accepted => (StatusCode::ACCEPTED, Json(document)).into_response(),
        OnceStored::WithoutId => (StatusCode::CREATED, Json(document.without_id())).into_response(),
        OnceStored::Oversize => (StatusCode::CREATED, Json(document.padded())).into_response(),
    }
}

/// What a server or the gateway in front of it answers after the write went through: an HTML
/// page for gateway statuses (502, 504, Cloudflare's 520-529), the usual JSON error otherwise.
pub(crate) fn gateway_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Server Error");
    let code = status.as_u16();
    if matches!(code, 502 | 504 | 520..=529) {
        let page = format!(
            "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
             <center><h1>{code} {reason}</h1></center>\r\n<hr><center>gateway</center>\r\n\
             </body>\r\n</html>\r\n"
        );
        return (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("text/html"))],
            page,
        )
            .into_response();
    }
    let error_code = match code {
        408 => "request_timeout",
        500 => "internal_server_error",
        503 => "service_unavailable",
        _ => "server_error",
    };
    api_error(status, error_code, reason)
}

pub(crate) fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Applies Kustomer's storage rules: server-owned fields leave the attributes, audit fields are
/// kept only for `org.admin` keys, defaults fill what was not sent.
pub(crate) fn prepare_message(
    key: &KeyProfile,
    conversation_id: String,
    mut attributes: Map<String, Value>,
) -> NewMessage {
    let now = format_timestamp(jiff::Timestamp::now());
    // The path's conversation (and its customer) win; a body id never becomes the message id.
    for server_owned in ["id", "conversation", "customer"] {
        attributes.remove(server_owned);
    }
    let sent_by = |attributes: &mut Map<String, Value>, field: &str| match attributes.remove(field)
    {
        Some(Value::String(user)) => Some(user),
        _ => None,
    };
    let sent_created_by = sent_by(&mut attributes, "createdBy");
    let sent_modified_by = sent_by(&mut attributes, "modifiedBy");
    let (created_by, modified_by) = if key.has_role(ROLE_ADMIN) {
        let created_by = sent_created_by.unwrap_or_else(|| key.user_id.to_owned());
        let modified_by = sent_modified_by.unwrap_or_else(|| key.user_id.to_owned());
        (created_by, modified_by)
    } else {
        attributes.insert("createdAt".into(), now.clone().into());
        attributes.insert("modifiedAt".into(), now.clone().into());
        (key.user_id.to_owned(), key.user_id.to_owned())
    };
    attributes
        .entry("createdAt")
        .or_insert_with(|| now.clone().into());
    attributes
        .entry("modifiedAt")
        .or_insert_with(|| now.clone().into());
    let created_at = attributes.get("createdAt").cloned().unwrap_or(Value::Null);
    attributes.entry("sentAt").or_insert(created_at);
    attributes.insert("updatedAt".into(), now.into());
    attributes
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let counts_against_customer = !attributes.contains_key("importedAt");
    NewMessage {
        customer_id: customer_of(&conversation_id),
        conversation_id,
        created_by,
        modified_by,
        attributes,
        counts_against_customer,
    }
}

async fn lookup_message(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    spec: Result<Path<String>, PathRejection>,
) -> Response {
    if !key.has_role(ROLE_MESSAGE_READ) {
        return forbidden(ROLE_MESSAGE_READ);
    }
    let Ok(Path(spec)) = spec else {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", "Malformed path");
    };
    let (spelling, external_id) = if let Some(id) = spec.strip_prefix("externalId=") {
        (Spelling::Camel, id)
    } else if let Some(id) = spec.strip_prefix("externalid=") {
        (Spelling::Lower, id)
    } else {
        // `GET /v1/messages/{id}`: one message by its id.
        return match shared.by_id(&spec) {
            Some(stored) => (StatusCode::OK, Json(MessageDocument::of(&stored))).into_response(),
            None => api_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("Message {spec} not found"),
            ),
        };
    };
    shared.note_lookup(external_id);
    match shared.lookup_fails() {
        None => {}
        Some(408) => {
            return api_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Lookups are timing out (POST /_sandbox/lookups/fail?status=408)",
            )
        }
        Some(_) => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Lookups are failing (POST /_sandbox/lookups/fail)",
            )
        }
    }
    if shared.roll_lookup_429() {
        return rate_limited(&shared, "Rate limit exceeded");
    }
    let routed = match shared.config.lookup {
        LookupSpelling::Both => true,
        LookupSpelling::CamelOnly => spelling == Spelling::Camel,
        LookupSpelling::LowerOnly => spelling == Spelling::Lower,
        LookupSpelling::NoRoute => false,
    };
    // A missing route answers exactly as a miss would: a client cannot tell them apart.
    let not_found = || {
        api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Message with externalId {external_id} not found"),
        )
    };
    if !routed {
        shared.count_lookup(spelling, LookupOutcome::NoRoute);
        return not_found();
    }
    let mut found = shared.by_external_id(external_id);
    if shared.config.lookup_other_first {
        shared.put_other_first(&mut found);
    }
    let Some(latest) = found.first() else {
        shared.count_lookup(spelling, LookupOutcome::Miss);
        let shape = shared.miss_shape().or(shared
            .config
            .not_found_as_empty
            .then_some(MissShape::EmptyList));
        return match shape {
            Some(MissShape::EmptyList) => {
                (StatusCode::OK, Json(json!({"data": []}))).into_response()
            }
            Some(MissShape::Null) => (StatusCode::OK, Json(json!({"data": null}))).into_response(),
            Some(MissShape::EmptyObject) => {
                (StatusCode::OK, Json(json!({"data": {}}))).into_response()
            }
            None => not_found(),
        };
    };
    shared.count_lookup(spelling, LookupOutcome::Hit);
    if shared.config.lookup_list {
        let data = found
            .iter()
            .map(|message| MessageDocument::of(message).data)
            .collect();
        return (StatusCode::OK, Json(MessageList { data })).into_response();
    }
    (StatusCode::OK, Json(MessageDocument::of(latest))).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn messages(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.messages()).into_response()
}

/// `?status=408`: lookups time out instead of answering 503.
#[derive(Deserialize)]
struct FailLookups {
    status: Option<u16>,
}

async fn fail_lookups(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<FailLookups>,
) -> StatusCode {
    match query.status {
        None | Some(503) => shared.set_lookups_failing(Some(503)),
        Some(408) => shared.set_lookups_failing(Some(408)),
        Some(_) => return StatusCode::BAD_REQUEST,
    }
    StatusCode::NO_CONTENT
}

async fn heal_lookups(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_lookups_failing(None);
    shared.set_miss_shape(None);
    StatusCode::NO_CONTENT
}

/// `?data=null|object|list`: the `data` of a lookup miss answered 200.
#[derive(Deserialize)]
struct MissLookups {
    data: String,
}

async fn miss_lookups(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<MissLookups>,
) -> StatusCode {
    let shape = match query.data.as_str() {
        "list" => MissShape::EmptyList,
        "null" => MissShape::Null,
        "object" => MissShape::EmptyObject,
        _ => return StatusCode::BAD_REQUEST,
    };
    shared.set_miss_shape(Some(shape));
    StatusCode::NO_CONTENT
}

async fn forbid(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_creates_forbidden(true);
    StatusCode::NO_CONTENT
}

async fn revoke(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_admin_revoked(true);
    StatusCode::NO_CONTENT
}

async fn restore(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_admin_revoked(false);
    shared.set_creates_forbidden(false);
    StatusCode::NO_CONTENT
}

/// `?after=N`: let N more `/v1` requests through first.
#[derive(Deserialize)]
struct HoldAfter {
    after: Option<u64>,
}

async fn hold(State(shared): State<Arc<Shared>>, Query(query): Query<HoldAfter>) -> StatusCode {
    match query.after {
        Some(passes) => shared.hold_after(passes),
        None => shared.set_hold(true),
    }
    StatusCode::NO_CONTENT
}

async fn release(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_hold(false);
    StatusCode::NO_CONTENT
}

/// Counts a followed redirect; answers 204 to any method.
async fn redirected(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.count_redirect_hit();
    StatusCode::NO_CONTENT
}

/// The JSON:API document Kustomer answers for one message, serialised without copying it.
#[derive(Serialize)]
pub(crate) struct MessageDocument<'a> {
    pub(crate) data: MessageResource<'a>,
}

#[derive(Serialize)]
pub(crate) struct MessageResource<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    /// None only for the `created_without_id` fault (which drops `links` too: they name the id).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    attributes: &'a Map<String, Value>,
    relationships: Relationships<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<Links>,
}

/// Several messages, for `lookup_list`.
#[derive(Serialize)]
struct MessageList<'a> {
    data: Vec<MessageResource<'a>>,
}

/// The `oversize_body` answer: the padding comes first, so a client that reads only the first
/// MiB never reaches the message id.
#[derive(Serialize)]
struct PaddedDocument<'a> {
    meta: Padding,
    data: MessageResource<'a>,
}

#[derive(Serialize)]
struct Padding {
    padding: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationships<'a> {
    conversation: Relationship<'a>,
    customer: Relationship<'a>,
    created_by: Relationship<'a>,
    modified_by: Relationship<'a>,
    org: Relationship<'a>,
}

#[derive(Serialize)]
struct Relationship<'a> {
    data: ResourceId<'a>,
    links: Links,
}

#[derive(Serialize)]
struct ResourceId<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    self_link: String,
}

impl<'a> MessageDocument<'a> {
    pub(crate) fn of(message: &'a StoredMessage) -> Self {
        // Type names and link collections as in the spec's example response.
        let relationship = |kind: &'static str, collection: &str, id: &'a str| Relationship {
            data: ResourceId { kind, id },
            links: Links {
                self_link: format!("/v1/{collection}/{id}"),
            },
        };
        Self {
            data: MessageResource {
                kind: "message",
                id: Some(&message.id),
                attributes: &message.attributes,
                relationships: Relationships {
                    conversation: relationship(
                        "conversation",
                        "conversations",
                        &message.conversation_id,
                    ),
                    customer: relationship("customers", "customers", &message.customer_id),
                    created_by: relationship("user", "users", &message.created_by),
                    modified_by: relationship("user", "users", &message.modified_by),
                    org: relationship("org", "orgs", ORG_ID),
                },
                links: Some(Links {
                    self_link: format!("/v1/messages/{}", message.id),
                }),
            },
        }
    }

    fn without_id(mut self) -> Self {
        self.data.id = None;
        self.data.links = None;
        self
    }

    fn padded(self) -> PaddedDocument<'a> {
        PaddedDocument {
            meta: Padding {
                padding: "x".repeat(OVERSIZE_PADDING),
            },
            data: self.data,
        }
    }
}

fn message_external_id(message: &StoredMessage) -> Option<&str> {
    message.attributes.get("externalId").and_then(Value::as_str)
}
