//! HTTP routes of the sandbox: the `/v1` imitation of Kustomer behind one gate (latency, auth,
//! org limit, rate headers, status counting) and the unauthenticated `/_sandbox` controls.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::faults::BeforeStore;
use super::server::ConnectionKill;
use super::state::{
    customer_of, KeyKind, KeyProfile, NewMessage, RateSnapshot, Refusal, Shared, StoreRefusal,
    StoredMessage, ORG_ID, ROLE_MESSAGE_CREATE, ROLE_MESSAGE_READ,
};
use super::validate::{format_timestamp, is_object_id, FieldError};
use super::{LookupSpelling, ResetUnit};

const CREATE_ROUTE: &str = "/v1/conversations/{id}/messages";

/// Conversation ids starting with this are "unknown" (404); every other valid id exists.
pub(crate) const UNKNOWN_CONVERSATION_PREFIX: &str = "dead";

static RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The authenticated key of a /v1 request, put in its extensions by the gate.
#[derive(Clone, Copy)]
struct Caller(&'static KeyProfile);

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/auth/tokens/current", get(current_token))
        .route(CREATE_ROUTE, post(create_message))
        .route("/v1/messages/{spec}", get(lookup_message))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/messages", get(messages))
        .route("/_sandbox/revoke", post(revoke))
        .route("/_sandbox/restore", post(restore))
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
    let delay = shared.next_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let is_create = request.method() == Method::POST
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|matched| matched.as_str() == CREATE_ROUTE);
    let bearer = bearer_token(request.headers());
    let (admission, rate) = shared.admit(bearer, is_create, Instant::now());
    let mut response = match admission {
        Ok(_) if is_create && shared.roll_injected_429() => rate_limited(
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
        Err(Refusal::OrgLimited) => rate_limited(
            &shared,
            "Organization rate limit exceeded",
            rate.reset_seconds,
        ),
    };
    add_rate_headers(&shared, response.headers_mut(), rate);
    shared.record_status(response.status().as_u16());
    response
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
fn rate_limited(shared: &Shared, message: &str, seconds: u64) -> Response {
    let mut response = api_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
    if !shared.config.retry_after {
        return response;
    }
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

/// The usual Kustomer error body.
fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "meta": {}}]});
    (status, Json(body)).into_response()
}

/// The JSON:API error body used for schema violations, one object per problem.
fn validation_error(problems: &[FieldError]) -> Response {
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

fn forbidden(role: &str) -> Response {
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
async fn drop_connection(kill: &ConnectionKill) -> Response {
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
    if !key.has_role(ROLE_MESSAGE_CREATE) {
        return forbidden(ROLE_MESSAGE_CREATE);
    }
    let roll = shared.roll_faults();
    match roll.before_store {
        BeforeStore::Proceed => {}
        BeforeStore::Error500 => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "Injected fault: internal error",
            )
        }
        BeforeStore::Error503 => {
            return api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Injected fault: service unavailable",
            )
        }
        BeforeStore::DropConnection => return drop_connection(&kill).await,
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
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Conversation {conversation_id} not found"),
        );
    }
    let body = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            return api_error(rejection.status(), "bad_request", &rejection.body_text())
        }
    };
    if !is_json_content_type(&headers) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Content-Type must be application/json",
        );
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("Malformed JSON: {error}"),
            )
        }
    };
    let attributes = match shared.validator.validate(parsed) {
        Ok(attributes) => attributes,
        Err(problems) => return validation_error(&problems),
    };
    let message = prepare_message(key, conversation_id, attributes);
    match shared.store(message, roll.drop_after_store, Instant::now()) {
        Ok(_) if roll.drop_after_store => drop_connection(&kill).await,
        Ok(stored) => (StatusCode::CREATED, Json(MessageDocument::of(&stored))).into_response(),
        Err(StoreRefusal::CustomerLimited) => rate_limited(
            &shared,
            "Customer message rate limit exceeded (messages with importedAt are exempt)",
            shared.clock.seconds_to_reset(Instant::now()),
        ),
    }
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Applies Kustomer's storage rules: server-owned fields leave the attributes, audit fields are
/// kept only for `org.admin` keys, defaults fill what was not sent.
fn prepare_message(
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
    let (created_by, modified_by) = if key.kind == KeyKind::Admin {
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
    let external_id = match shared.config.lookup {
        LookupSpelling::Both => spec
            .strip_prefix("externalId=")
            .or_else(|| spec.strip_prefix("externalid=")),
        LookupSpelling::CamelOnly => spec.strip_prefix("externalId="),
        LookupSpelling::LowerOnly => spec.strip_prefix("externalid="),
    };
    let Some(external_id) = external_id else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Message {spec} not found"),
        );
    };
    match shared.latest_by_external_id(external_id) {
        Some(stored) => (StatusCode::OK, Json(MessageDocument::of(&stored))).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Message with externalId {external_id} not found"),
        ),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn messages(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.messages()).into_response()
}

async fn revoke(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_admin_revoked(true);
    StatusCode::NO_CONTENT
}

async fn restore(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_admin_revoked(false);
    StatusCode::NO_CONTENT
}

/// The JSON:API document Kustomer answers for one message, serialised without copying it.
#[derive(Serialize)]
struct MessageDocument<'a> {
    data: MessageResource<'a>,
}

#[derive(Serialize)]
struct MessageResource<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    attributes: &'a Map<String, Value>,
    relationships: Relationships<'a>,
    links: Links,
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
    fn of(message: &'a StoredMessage) -> Self {
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
                id: &message.id,
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
                links: Links {
                    self_link: format!("/v1/messages/{}", message.id),
                },
            },
        }
    }
}
