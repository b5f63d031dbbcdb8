//! `POST /_sandbox/seed`: messages (a JSON array) or, with a JSON object, customers,
//! conversations and messages that "already exist" (another integration made them), all
//! checked before any is stored; the inspection endpoints `GET /_sandbox/customers` and
//! `GET /_sandbox/conversations`; and the ordering of `lookup_other_first`.
//!
//! Imports `http`, `messages`, `creates`, the state, `directory`, `validate`; never the router or
//! `admin` (which merely mounts its handlers).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::creates::NewRecord;
use super::directory::CreateKind;
use super::http::api_error;
use super::messages::UNKNOWN_CONVERSATION_PREFIX;
use super::state::{customer_of, NewMessage, Shared, StoredMessage};
use super::validate::{format_timestamp, is_object_id};
use super::SeedMessage;

/// The machine user of the "other integration" that seeded messages come from.
const SEED_USER: &str = "65a00000000000000000d0d4";

/// Stores messages as another integration would have: every item is checked before any is
/// stored. Answers 201 `{"data":[{"id","conversationId","externalId"}, ..]}`. A JSON object
/// instead of an array seeds customers and conversations too (below).
pub(crate) async fn seed(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &rejection.body_text(),
            )
        }
    };
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{') {
        return seed_directory(&shared, &bytes);
    }
    let items: Vec<SeedMessage> = match serde_json::from_slice(&bytes) {
        Ok(items) => items,
        Err(why) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("Expected a JSON array of {{conversationId, externalId}}: {why}"),
            )
        }
    };
    if let Err(why) = check_seed_messages(&items) {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", &why);
    }
    let messages = items
        .into_iter()
        .map(|item| seeded_message(item.conversation_id, item.external_id))
        .collect();
    (
        StatusCode::CREATED,
        Json(json!({ "data": seed_messages(&shared, messages) })),
    )
        .into_response()
}

/// Every seeded message names an existing conversation and a 1 to 256 character externalId.
fn check_seed_messages(items: &[SeedMessage]) -> Result<(), String> {
    if let Some(bad) = items.iter().find(|item| {
        !is_object_id(&item.conversation_id)
            || item
                .conversation_id
                .starts_with(UNKNOWN_CONVERSATION_PREFIX)
    }) {
        return Err(format!(
            "conversationId {:?} is not an existing conversation (24 lowercase hex, not dead...)",
            bad.conversation_id
        ));
    }
    if let Some(bad) = items
        .iter()
        .find(|item| item.external_id.is_empty() || item.external_id.chars().count() > 256)
    {
        return Err(format!(
            "externalId {:?} must hold 1 to 256 characters",
            bad.external_id
        ));
    }
    Ok(())
}

/// Stores seeded messages; answers `[{"id","conversationId","externalId"}, ..]`.
fn seed_messages(shared: &Shared, messages: Vec<NewMessage>) -> Vec<Value> {
    shared
        .seed(messages)
        .iter()
        .map(|stored| {
            json!({
                "id": stored.id,
                "conversationId": stored.conversation_id,
                "externalId": stored.attributes.get("externalId"),
            })
        })
        .collect()
}

/// A message as the "other integration" stores it: app `other-integration`, now as every time.
fn seeded_message(conversation_id: String, external_id: String) -> NewMessage {
    let now = format_timestamp(jiff::Timestamp::now());
    let attributes = json!({
        "channel": "email",
        "app": "other-integration",
        "externalId": external_id,
        "direction": "in",
        "createdAt": now,
        "modifiedAt": now,
        "sentAt": now,
        "updatedAt": now,
        "meta": {},
    });
    NewMessage {
        customer_id: customer_of(&conversation_id),
        conversation_id,
        created_by: SEED_USER.to_owned(),
        modified_by: SEED_USER.to_owned(),
        attributes: match attributes {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        counts_against_customer: false,
    }
}

/// The object form of `POST /_sandbox/seed`; every list is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct SeedRequest {
    customers: Vec<SeedCustomer>,
    conversations: Vec<SeedConversation>,
    messages: Vec<SeedRequestMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedCustomer {
    external_id: Option<String>,
    name: Option<String>,
    /// Addresses in any letter case, kept as given.
    #[serde(default)]
    emails: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedConversation {
    external_id: Option<String>,
    name: Option<String>,
    /// The customer's id, or
    customer: Option<String>,
    /// the externalId of a customer seeded earlier or in this request.
    customer_external_id: Option<String>,
}

/// A seeded message names its conversation by id or by a seeded conversation's externalId.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedRequestMessage {
    conversation_id: Option<String>,
    conversation_external_id: Option<String>,
    external_id: String,
}

fn bad_request(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn check_external_id(external_id: Option<&String>) -> Result<(), String> {
    match external_id {
        Some(id) if id.is_empty() || id.chars().count() > 256 => {
            Err(format!("externalId {id:?} must hold 1 to 256 characters"))
        }
        _ => Ok(()),
    }
}

/// Seeds `{"customers":[..],"conversations":[..],"messages":[..]}` in that order; answers 201
/// `{"data":{"customers":[{"id","externalId"}],"conversations":[{"id","externalId","customer"}],
/// "messages":[{"id","conversationId","externalId"}]}}`, or 400 storing nothing.
pub(crate) fn seed_directory(shared: &Arc<Shared>, bytes: &[u8]) -> Response {
    let request: SeedRequest = match serde_json::from_slice(bytes) {
        Ok(request) => request,
        Err(why) => {
            return bad_request(&format!(
                "Expected {{\"customers\":[{{externalId, name, emails}}], \"conversations\":\
                 [{{externalId, name, customer | customerExternalId}}], \"messages\":\
                 [{{conversationId | conversationExternalId, externalId}}]}}: {why}"
            ))
        }
    };
    if let Err(why) = check(shared, &request) {
        return bad_request(&why);
    }
    let now = format_timestamp(jiff::Timestamp::now());
    let customers: Vec<Value> = request
        .customers
        .into_iter()
        .map(|customer| {
            let mut attributes = Map::new();
            if let Some(external_id) = customer.external_id {
                attributes.insert("externalId".into(), external_id.into());
            }
            if let Some(name) = customer.name {
                attributes.insert("name".into(), name.into());
            }
            let emails: Vec<Value> = customer
                .emails
                .into_iter()
                .map(
                    |email| json!({"email": email, "verified": false, "type": "other", "id": null}),
                )
                .collect();
            attributes.insert("emails".into(), emails.into());
            attributes.insert("createdAt".into(), now.clone().into());
            let stored =
                shared.insert_record(CreateKind::Customer, seeded_record(None, attributes), true);
            json!({"id": stored.id, "externalId": stored.external_id()})
        })
        .collect();
    let conversations: Vec<Value> = request
        .conversations
        .into_iter()
        .map(|conversation| {
            let customer = conversation
                .customer
                .or_else(|| {
                    let external_id = conversation.customer_external_id?;
                    let world = shared.world();
                    let found = world.directory.customer_by_external_id(&external_id)?;
                    Some(found.id.clone())
                })
                .unwrap_or_default();
            let mut attributes = Map::new();
            if let Some(external_id) = conversation.external_id {
                attributes.insert("externalId".into(), external_id.into());
            }
            attributes.insert("name".into(), conversation.name.unwrap_or_default().into());
            attributes.insert("status".into(), "open".into());
            attributes.insert("createdAt".into(), now.clone().into());
            let stored = shared.insert_record(
                CreateKind::Conversation,
                seeded_record(Some(customer), attributes),
                true,
            );
            json!({
                "id": stored.id,
                "externalId": stored.external_id(),
                "customer": stored.customer_id,
            })
        })
        .collect();
    let messages = request
        .messages
        .into_iter()
        .filter_map(|message| {
            let conversation = match message.conversation_id {
                Some(id) => id,
                None => {
                    let external_id = message.conversation_external_id?;
                    let world = shared.world();
                    world
                        .directory
                        .conversation_by_external_id(&external_id)?
                        .id
                        .clone()
                }
            };
            Some(seeded_message(conversation, message.external_id))
        })
        .collect();
    let messages = seed_messages(shared, messages);
    let data =
        json!({"customers": customers, "conversations": conversations, "messages": messages});
    (StatusCode::CREATED, Json(json!({ "data": data }))).into_response()
}

fn seeded_record(customer_id: Option<String>, attributes: Map<String, Value>) -> NewRecord {
    NewRecord {
        customer_id,
        created_by: SEED_USER.to_owned(),
        modified_by: SEED_USER.to_owned(),
        attributes,
    }
}

/// Checks every item and every reference before anything is stored.
fn check(shared: &Shared, request: &SeedRequest) -> Result<(), String> {
    let mut customer_keys: HashSet<&str> = HashSet::new();
    for customer in &request.customers {
        check_external_id(customer.external_id.as_ref())?;
        if let Some(bad) = customer.emails.iter().find(|email| !email.contains('@')) {
            return Err(format!("email {bad:?} has no @"));
        }
        if let Some(external_id) = &customer.external_id {
            customer_keys.insert(external_id);
        }
    }
    let mut conversation_keys: HashSet<&str> = HashSet::new();
    for conversation in &request.conversations {
        check_external_id(conversation.external_id.as_ref())?;
        let world = shared.world();
        let known = match (&conversation.customer, &conversation.customer_external_id) {
            (Some(id), None) => world.directory.customer(id).is_some(),
            (None, Some(external_id)) => {
                customer_keys.contains(external_id.as_str())
                    || world
                        .directory
                        .customer_by_external_id(external_id)
                        .is_some()
            }
            _ => {
                return Err(
                    "a seeded conversation names its customer by exactly one of customer \
                     and customerExternalId"
                        .to_owned(),
                )
            }
        };
        if !known {
            return Err(format!(
                "the customer of seeded conversation {:?} does not exist",
                conversation.external_id
            ));
        }
        if let Some(external_id) = &conversation.external_id {
            conversation_keys.insert(external_id);
        }
    }
    let mut by_id = Vec::new();
    for message in &request.messages {
        match (&message.conversation_id, &message.conversation_external_id) {
            (Some(id), None) => by_id.push(SeedMessage {
                conversation_id: id.clone(),
                external_id: message.external_id.clone(),
            }),
            (None, Some(external_id)) => {
                let known = conversation_keys.contains(external_id.as_str())
                    || shared
                        .world()
                        .directory
                        .conversation_by_external_id(external_id)
                        .is_some();
                if !known {
                    return Err(format!("no conversation has externalId {external_id:?}"));
                }
                check_external_id(Some(&message.external_id))?;
            }
            _ => {
                return Err("a seeded message names its conversation by exactly one of \
                     conversationId and conversationExternalId"
                    .to_owned())
            }
        }
    }
    check_seed_messages(&by_id)
}

/// `GET /_sandbox/customers`.
pub(crate) async fn customers(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.world().directory.customers_dump()).into_response()
}

/// `GET /_sandbox/conversations`.
pub(crate) async fn conversations(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.world().directory.conversations_dump()).into_response()
}

impl Shared {
    /// `lookup_other_first`: the messages another integration stored (seeded) come first, each
    /// group keeping its newest-first order. Counted when it changes which message leads.
    pub(crate) fn put_other_first(&self, found: &mut [Arc<StoredMessage>]) {
        let leader = found.first().map(|message| message.id.clone());
        found.sort_by_key(|message| !message.seeded);
        if found.first().map(|message| &message.id) != leader.as_ref() {
            self.world().count_other_first();
        }
    }
}
