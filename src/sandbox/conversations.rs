//! `POST /v1/conversations`, `GET /v1/conversations/externalId=<id>` (and by id) and
//! `GET /v1/conversations/{id}/messages` (paged), as `shared/kustomer-api.md` and the OpenAPI
//! file describe them.
//!
//! A route module: imports `http`, `messages` (the message document), `creates`, `customers`' lookup
//! rules, the state and `validate`; never the router or `admin`.

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::creates::{create_record, CreateSpec, NewRecord, RecordKind, Refused};
use super::customers::{found_or_missing, lookup_fault, relationship};
use super::directory::{CreateKind, StoredRecord};
use super::http::{api_error, forbidden, Caller};
use super::messages::{MessageDocument, UNKNOWN_CONVERSATION_PREFIX};
use super::state::{
    KeyProfile, Shared, ORG_ID, ROLE_CONVERSATION_CREATE, ROLE_CONVERSATION_READ, ROLE_MESSAGE_READ,
};
use super::validate::{format_timestamp, is_object_id, BodyValidator};

pub(crate) const CONVERSATIONS_ROUTE: &str = "/v1/conversations";

/// The largest `pageSize` the messages listing answers (larger asks get this many).
pub const MAX_PAGE_SIZE: u64 = 100;

static VALIDATOR: LazyLock<BodyValidator> = LazyLock::new(BodyValidator::conversations);

static CREATE: CreateSpec = CreateSpec {
    kind: CreateKind::Conversation,
    role: ROLE_CONVERSATION_CREATE,
    validator: &VALIDATOR,
    prepare: prepare_conversation,
    render: conversation_document,
};

/// `POST /v1/conversations`, served by [`create_record`].
pub(crate) struct Conversations;

impl RecordKind for Conversations {
    fn spec() -> &'static CreateSpec {
        &CREATE
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(CONVERSATIONS_ROUTE, post(create_record::<Conversations>))
        .route("/v1/conversations/{spec}", get(lookup_conversation))
}

/// The schema requires `customer` as an object id; it must also name a customer created or
/// seeded here (404). Then what Kustomer fills in on a created conversation (the spec's
/// example's defaults); the body's `id` and `customer` leave the attributes (the server owns the
/// id, the customer is a relationship).
fn prepare_conversation(
    shared: &Shared,
    key: &KeyProfile,
    mut attributes: Map<String, Value>,
) -> Result<NewRecord, Refused> {
    let customer = attributes
        .get("customer")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if shared.world().directory.customer(&customer).is_none() {
        return Err(Refused {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("Customer {customer} not found"),
        });
    }
    let now = format_timestamp(jiff::Timestamp::now());
    attributes.remove("id");
    attributes.remove("customer");
    let defaults = [
        ("name", json!("")),
        ("channels", json!([])),
        ("status", json!("open")),
        ("messageCount", json!(0)),
        ("noteCount", json!(0)),
        ("satisfaction", json!(0)),
        ("createdAt", json!(now)),
        ("tags", json!([])),
        ("suggestedTags", json!([])),
        ("sentiment", json!({})),
        ("lastMessageIn", json!({})),
        ("assignedUsers", json!([])),
        ("assignedTeams", json!([])),
        ("firstResponse", json!({})),
        ("direction", json!("in")),
        ("outboundMessageCount", json!(0)),
    ];
    for (field, value) in defaults {
        attributes.entry(field).or_insert(value);
    }
    attributes.insert("updatedAt".into(), now.clone().into());
    attributes.insert("modifiedAt".into(), now.into());
    attributes.insert("rev".into(), json!(1));
    Ok(NewRecord {
        customer_id: Some(customer),
        created_by: key.user_id.to_owned(),
        modified_by: key.user_id.to_owned(),
        attributes,
    })
}

/// The JSON:API document of one conversation, shaped like the spec's example.
pub(crate) fn conversation_document(conversation: &StoredRecord) -> Value {
    let id = &conversation.id;
    let customer = conversation.customer_id.as_deref().unwrap_or_default();
    json!({"data": {
        "type": "conversation",
        "id": id,
        "attributes": conversation.attributes,
        "relationships": {
            "org": relationship("org", "orgs", ORG_ID),
            "customer": relationship("customer", "customers", customer),
            "messages": {"links": {"self": format!("/v1/conversations/{id}/messages")}},
            "createdBy": relationship("user", "users", &conversation.created_by),
            "modifiedBy": relationship("user", "users", &conversation.modified_by),
        },
        "links": {"self": format!("/v1/conversations/{id}")},
    }})
}

/// `GET /v1/conversations/externalId=<id>` and `GET /v1/conversations/<id>` (a conversation
/// created or seeded here).
async fn lookup_conversation(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    spec: Result<Path<String>, PathRejection>,
) -> Response {
    if !key.has_role(ROLE_CONVERSATION_READ) {
        return forbidden(ROLE_CONVERSATION_READ);
    }
    let Ok(Path(spec)) = spec else {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", "Malformed path");
    };
    let kind = CreateKind::Conversation;
    if let Some(external_id) = spec.strip_prefix("externalId=") {
        if let Some(answer) = lookup_fault(&shared, kind) {
            return answer;
        }
        let found = shared
            .world()
            .directory
            .conversations_by_external_id(external_id);
        return found_or_missing(
            &shared,
            kind,
            &found,
            conversation_document,
            |lookups| &mut lookups.external_id,
            &format!("Conversation with externalId {external_id} not found"),
        );
    }
    let found = shared.world().directory.conversation(&spec);
    match found {
        Some(conversation) => {
            (StatusCode::OK, Json(conversation_document(&conversation))).into_response()
        }
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Conversation {spec} not found"),
        ),
    }
}

/// `page` and `pageSize` as sent (the spec types them `number`).
#[derive(Deserialize)]
pub(crate) struct PageQuery {
    page: Option<String>,
    #[serde(rename = "pageSize")]
    page_size: Option<String>,
}

/// A whole number within `1..`, or why not.
fn positive(name: &str, text: Option<&str>, default: u64) -> Result<u64, String> {
    let Some(text) = text else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(value) if value >= 1 => Ok(value),
        _ => Err(format!(
            "{name} must be a whole number of at least 1, got {text:?}"
        )),
    }
}

/// `GET /v1/conversations/{id}/messages?page=N&pageSize=M`: the conversation's messages in the
/// order stored, `{"meta":{"pageSize","page"},"data":[..],"links":{"self","first","prev",
/// "next"}}` (`prev`/`next` null at the ends). Needs `org.permission.message.read`.
pub(crate) async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    conversation: Result<Path<String>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    if !key.has_role(ROLE_MESSAGE_READ) {
        return forbidden(ROLE_MESSAGE_READ);
    }
    let conversation = match conversation {
        Ok(Path(id)) if is_object_id(&id) => id,
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "The conversation id is not a 24-character lowercase hex id",
            )
        }
    };
    let Ok(Query(query)) = query else {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", "Malformed query");
    };
    let (page, page_size) = match (
        positive("page", query.page.as_deref(), 1),
        positive("pageSize", query.page_size.as_deref(), MAX_PAGE_SIZE),
    ) {
        (Ok(page), Ok(size)) => (page, size.min(MAX_PAGE_SIZE)),
        (Err(why), _) | (_, Err(why)) => {
            return api_error(StatusCode::BAD_REQUEST, "bad_request", &why)
        }
    };
    if conversation.starts_with(UNKNOWN_CONVERSATION_PREFIX) {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Conversation {conversation} not found"),
        );
    }
    let kind = CreateKind::Conversation;
    if let Some(answer) = lookup_fault(&shared, kind) {
        return answer;
    }
    shared.with_kind_counts(kind, |counts| counts.message_list_reads += 1);
    let messages = shared.conversation_messages(&conversation);
    let skip = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let take = usize::try_from(page_size).unwrap_or(usize::MAX);
    let data: Vec<_> = messages
        .iter()
        .skip(skip)
        .take(take)
        .map(|message| MessageDocument::of(message).data)
        .collect();
    let more = messages.len() > skip.saturating_add(take);
    let link = |page: u64| {
        format!("/v1/conversations/{conversation}/messages?page={page}&pageSize={page_size}")
    };
    let body = json!({
        "meta": {"pageSize": page_size, "page": page},
        "data": data,
        "links": {
            "self": link(page),
            "first": link(1),
            "prev": (page > 1).then(|| link(page - 1)),
            "next": more.then(|| link(page + 1)),
        },
    });
    (StatusCode::OK, Json(body)).into_response()
}
