//! Single messages: `POST /v1/conversations/{id}/messages` (its faults, slow stores and lost
//! answers), `GET /v1/messages/{spec}` lookups by id or external id, `GET
//! /v1/auth/tokens/current`, and the JSON:API documents a message is answered in.
//!
//! Imports the HTTP helpers, the state, `creates` and `validate`; never the router, `admin` or
//! another route module.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::creates::{answer_before_store, json_body, OVERSIZE_PADDING};
use super::directory::CreateKind;
use super::faults::OnceStored;
use super::http::{
    api_error, drop_connection, forbidden, gateway_error, rate_limited, validation_error, Caller,
};
use super::server::ConnectionKill;
use super::state::{
    customer_of, KeyProfile, LookupOutcome, MissShape, NewMessage, Shared, Spelling, StoreRefusal,
    StoredMessage, ORG_ID, ROLE_ADMIN, ROLE_MESSAGE_CREATE, ROLE_MESSAGE_READ,
};
use super::validate::{format_timestamp, is_object_id};
use super::LookupSpelling;

pub(crate) const CREATE_ROUTE: &str = "/v1/conversations/{id}/messages";

/// Conversation ids starting with this are "unknown" (404); every other valid id exists.
pub(crate) const UNKNOWN_CONVERSATION_PREFIX: &str = "dead";

/// The single-message routes, to merge into the sandbox router. The create route itself is
/// registered by the router, which pairs it with the conversation's message listing.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/auth/tokens/current", get(current_token))
        .route("/v1/messages/{spec}", get(lookup_message))
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

pub(crate) async fn create_message(
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
