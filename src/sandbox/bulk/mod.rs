//! Bulk message creation, as `shared/kustomer-api.md` (section Bulk) describes it:
//! `POST /v1/messages/bulk` accepts up to 100 message bodies and answers a queued job at once;
//! the job runs in the background (queued, then running, then complete), split into batches that
//! complete one after another, and stores each item exactly as a single create would;
//! `GET /v1/bulk/{id}` answers its status and batch counts, `GET /v1/bulk/{id}/batches` its
//! batches, each complete one with its per-item results.
//!
//! Every rule and switch is listed in the sandbox's module doc (section "Bulk"). The dice come
//! from streams of their own, seeded from the sandbox seed, so bulk traffic never shifts the
//! create, latency or lookup dice. One job's dice are all drawn when it is created, in a fixed
//! count per job and per item whatever the switches, so the same seed and the same requests give
//! the same jobs; reads draw from a stream apart from the jobs'. The jobs, their dice and the
//! documents they answer are in the state (`state::bulk`).
//!
//! `POST /v1/customers/bulk` and `POST /v1/conversations/bulk` make jobs of the same machinery,
//! each item checked and stored like the single create of its kind (its `creates::CreateSpec`:
//! schema, role, checks and defaults), counted in the kind's stats (`bulk`).
//!
//! Owns the bulk routes only. Imports the HTTP helpers, `messages` (a bulk item is prepared like a
//! single create), `creates`, the state and `validate`; never the router or another route module
//! (the router names the record kinds of [`record_jobs`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};

use super::http::{
    api_error, drop_connection, forbidden, is_json_content_type, rate_limited, validation_error,
    Caller,
};
use super::messages::{prepare_message, UNKNOWN_CONVERSATION_PREFIX};
use super::server::ConnectionKill;
use super::state::{KeyProfile, Shared, StoreRefusal, ROLE_MESSAGE_CREATE};
use super::validate::{is_object_id, FieldError};
use super::{creates, directory::CreateKind};

pub use super::state::bulk::{
    BulkConfig, BulkFaultCounts, BulkStats, BULK_ITEM_ERROR_STATUSES, DEFAULT_BULK_BATCH_ITEMS,
    DEFAULT_BULK_DELAY, DEFAULT_BULK_JITTER, DEFAULT_BULK_SLOW_FACTOR, MAX_BULK_DELAY,
    MAX_BULK_ITEMS, MAX_BULK_SLOW_FACTOR,
};
use super::state::bulk::{ItemError, ItemFate, ItemResult, JobDice, ReadFault};

/// Where bulk jobs are created.
pub(crate) const BULK_ROUTE: &str = "/v1/messages/bulk";
/// The longest `_clientRef`, in characters.
pub const MAX_CLIENT_REF_CHARS: usize = 255;
/// The role reading bulk jobs and their results needs.
pub(crate) const ROLE_BULK_READ: &str = "org.permission.bulk.read";
/// The most a bulk request body may weigh: 100 bodies of up to 10,240 characters of preview
/// each (4 bytes a character at worst) plus the rest. Kustomer's own limit is unverified.
const MAX_BULK_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A bulk item as accepted: its reference, and its body checked like a single create's.
struct Item {
    client_ref: Option<String>,
    checked: Result<CheckedItem, ItemError>,
}

enum CheckedItem {
    Message {
        conversation: String,
        attributes: Map<String, Value>,
    },
    /// A customer or conversation: its attributes, past the kind's schema.
    Record {
        spec: &'static creates::CreateSpec,
        attributes: Map<String, Value>,
    },
}

/// What a bulk route creates: messages, or customers or conversations (each item stored like
/// the single create of its kind, through its [`creates::CreateSpec`]).
#[derive(Clone, Copy)]
enum Target {
    Messages,
    Records(&'static creates::CreateSpec),
}

impl Target {
    fn kind(self) -> CreateKind {
        match self {
            Self::Messages => CreateKind::Message,
            Self::Records(spec) => spec.kind,
        }
    }

    fn role(self) -> &'static str {
        match self {
            Self::Messages => ROLE_MESSAGE_CREATE,
            Self::Records(spec) => spec.role,
        }
    }

    /// What one item is, for the refusals' wording.
    fn noun(self) -> &'static str {
        match self.kind() {
            CreateKind::Message => "message",
            CreateKind::Customer => "customer",
            CreateKind::Conversation => "conversation",
        }
    }
}

/// Where bulk customers and conversations are created.
pub(crate) const CUSTOMERS_BULK_ROUTE: &str = "/v1/customers/bulk";
pub(crate) const CONVERSATIONS_BULK_ROUTE: &str = "/v1/conversations/bulk";

/// The bulk routes, to merge into the sandbox router (behind its gate).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            BULK_ROUTE,
            post(create_bulk).layer(DefaultBodyLimit::max(MAX_BULK_BODY_BYTES)),
        )
        .route("/v1/bulk/{id}", get(job_status))
        .route("/v1/bulk/{id}/batches", get(job_batches))
        .route("/_sandbox/bulk/hold", post(hold))
        .route("/_sandbox/bulk/release", post(release))
}

/// `POST /v1/customers/bulk` or `/v1/conversations/bulk` for the kind `K` (the router names
/// the kind: this module imports no other route module).
pub(crate) fn record_jobs<K: creates::RecordKind + 'static>() -> MethodRouter<Arc<Shared>> {
    post(create_bulk_records::<K>).layer(DefaultBodyLimit::max(MAX_BULK_BODY_BYTES))
}

async fn hold(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.bulk.set_hold(true);
    StatusCode::NO_CONTENT
}

async fn release(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.bulk.set_hold(false);
    StatusCode::NO_CONTENT
}

fn bad_request(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Why a bulk POST is refused whole (400, no job).
enum Refused {
    /// The array's shape: the usual error body.
    Shape(String),
    /// Invalid items under `reject_invalid`: the JSON:API body of a single create's 400.
    Items(Vec<FieldError>),
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Shape(message) => bad_request(&message),
            Self::Items(problems) => validation_error(&problems),
        }
    }
}

async fn create_bulk(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(kill): Extension<ConnectionKill>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create_job(shared, key, kill, headers, body, Target::Messages).await
}

/// `POST /v1/customers/bulk` and `POST /v1/conversations/bulk`: jobs like message jobs.
async fn create_bulk_records<K: creates::RecordKind>(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(kill): Extension<ConnectionKill>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    create_job(shared, key, kill, headers, body, Target::Records(K::spec())).await
}

async fn create_job(
    shared: Arc<Shared>,
    key: &'static KeyProfile,
    kill: ConnectionKill,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    target: Target,
) -> Response {
    if !key.has_role(target.role()) {
        return forbidden(target.role());
    }
    let body = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            return api_error(rejection.status(), "bad_request", &rejection.body_text())
        }
    };
    if !is_json_content_type(&headers) {
        return bad_request("Content-Type must be application/json");
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => return bad_request(&format!("Malformed JSON: {error}")),
    };
    let items = match accept_items(&shared, parsed, target) {
        Ok(items) => items,
        Err(refused) => return refused.into_response(),
    };
    let config = &shared.config.bulk;
    let (id, sequence, dice) = shared.bulk.create(config, items.len());
    shared.with_kind_counts(target.kind(), |counts| {
        counts.bulk.jobs += 1;
        counts.bulk.items += items.len() as u64;
    });
    // The document as created (queued), before the job can run.
    let document = shared.bulk.job_document(&id);
    let drop_answer = dice.drop_answer;
    tokio::spawn(run_job(
        Arc::clone(&shared),
        key,
        id.clone(),
        sequence,
        dice,
        items,
        target,
    ));
    if drop_answer {
        shared.count_dropped_connection();
        return drop_connection(&kill).await;
    }
    let status = if config.answer_200 {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    match document {
        Some(document) => (status, Json(document)).into_response(),
        None => unknown_job(&id),
    }
}

/// Checks the array's shape (refused whole with a 400) and each item like a single create (a
/// 400 in the item's result, or the whole request refused with `reject_invalid`).
fn accept_items(shared: &Shared, parsed: Value, target: Target) -> Result<Vec<Item>, Refused> {
    let noun = target.noun();
    let Value::Array(bodies) = parsed else {
        return Err(Refused::Shape(format!(
            "The body must be a JSON array of {noun} bodies"
        )));
    };
    if bodies.is_empty() {
        return Err(Refused::Shape(format!("The array holds no {noun}")));
    }
    if bodies.len() > MAX_BULK_ITEMS {
        return Err(Refused::Shape(format!(
            "The array holds {} {noun}s; at most {MAX_BULK_ITEMS} are accepted",
            bodies.len()
        )));
    }
    let mut objects = Vec::with_capacity(bodies.len());
    for (index, body) in bodies.into_iter().enumerate() {
        match body {
            Value::Object(object) => objects.push(object),
            _ => return Err(Refused::Shape(format!("Item {index} is not a JSON object"))),
        }
    }
    let client_refs = take_client_refs(&mut objects)?;
    let mut items = Vec::with_capacity(objects.len());
    let mut problems = Vec::new();
    for (index, (object, client_ref)) in objects.into_iter().zip(client_refs).enumerate() {
        let checked = match target {
            Target::Messages => check_item(shared, object),
            Target::Records(spec) => spec
                .validator
                .validate(Value::Object(object))
                .map(|attributes| CheckedItem::Record { spec, attributes }),
        };
        if let Err(item_problems) = &checked {
            problems.extend(item_problems.iter().map(|problem| FieldError {
                pointer: format!("/{index}{}", problem.pointer),
                detail: format!("item {index}: {}", problem.detail),
            }));
        }
        items.push(Item {
            client_ref,
            checked: checked.map_err(|item_problems| {
                let details: Vec<&str> = item_problems.iter().map(|p| p.detail.as_str()).collect();
                ItemError::new(400, details.join("; "))
            }),
        });
    }
    if shared.config.bulk.reject_invalid && !problems.is_empty() {
        return Err(Refused::Items(problems));
    }
    Ok(items)
}

/// Removes `_clientRef` from every item: all or none, each a string of 1 to 255 characters,
/// all different.
fn take_client_refs(objects: &mut [Map<String, Value>]) -> Result<Vec<Option<String>>, Refused> {
    let refs: Vec<Option<Value>> = objects
        .iter_mut()
        .map(|object| object.remove("_clientRef"))
        .collect();
    let given = refs.iter().filter(|value| value.is_some()).count();
    if given == 0 {
        return Ok(vec![None; refs.len()]);
    }
    if given != refs.len() {
        return Err(Refused::Shape(format!(
            "_clientRef must be on every item or on none; {given} of {} items have one",
            refs.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(refs.len());
    for (index, value) in refs.into_iter().enumerate() {
        let Some(Value::String(text)) = value else {
            return Err(Refused::Shape(format!(
                "Item {index}: _clientRef must be a string"
            )));
        };
        let length = text.chars().count();
        if length == 0 || length > MAX_CLIENT_REF_CHARS {
            return Err(Refused::Shape(format!(
                "Item {index}: _clientRef must hold 1 to {MAX_CLIENT_REF_CHARS} characters, \
                 it holds {length}"
            )));
        }
        if !seen.insert(text.clone()) {
            return Err(Refused::Shape(format!(
                "Item {index}: _clientRef {text:?} is used by an earlier item"
            )));
        }
        out.push(Some(text));
    }
    Ok(out)
}

/// One item: `conversation` (24 lowercase hex) and a body a single create would accept.
fn check_item(
    shared: &Shared,
    mut object: Map<String, Value>,
) -> Result<CheckedItem, Vec<FieldError>> {
    let conversation = match object.get("conversation") {
        Some(Value::String(id)) if is_object_id(id) => Ok(id.clone()),
        Some(_) => Err(FieldError {
            pointer: "/data/attributes/conversation".into(),
            detail: "conversation is not a 24-character lowercase hex id".into(),
        }),
        None => Err(FieldError {
            pointer: "/data/attributes/conversation".into(),
            detail: "conversation is required".into(),
        }),
    };
    // The schema knows `conversation` (as a body field a single create ignores); checked above.
    object.remove("conversation");
    let attributes = shared.validator.validate(Value::Object(object));
    match (conversation, attributes) {
        (Ok(conversation), Ok(attributes)) => Ok(CheckedItem::Message {
            conversation,
            attributes,
        }),
        (conversation, attributes) => {
            let mut problems: Vec<FieldError> = conversation.err().into_iter().collect();
            problems.extend(attributes.err().unwrap_or_default());
            Err(problems)
        }
    }
}

/// A job's life: held back if the dice say so, queued for the first half of its delay, running
/// for the second half while its batches are processed one after another, each item stored in
/// processing order, evenly spread; then complete, unless a batch is stuck (then it stays
/// running, that batch `scheduled` and its items never processed).
async fn run_job(
    shared: Arc<Shared>,
    key: &'static KeyProfile,
    id: String,
    sequence: u64,
    dice: JobDice,
    items: Vec<Item>,
    target: Target,
) {
    let bulk = &shared.bulk;
    // A kind out of the fault scope draws its dice all the same (the streams stay fixed) and
    // ignores them.
    let in_scope = shared.config.fault_scope.covers(target.kind());
    let config = &shared.config.bulk;
    if dice.held_back {
        bulk.wait_for_a_later_job(sequence, config.held_back_limit())
            .await;
    }
    let queued_for = dice.delay / 2;
    tokio::time::sleep(queued_for).await;
    bulk.set_running(&id);
    let running_for = dice.delay - queued_for;
    let started = tokio::time::Instant::now();
    let count = u32::try_from(items.len()).unwrap_or(u32::MAX).max(1);
    let mut items: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    let mut done = 0u32;
    for (batch, indexes) in dice.order.chunks(config.batch_items.max(1)).enumerate() {
        if dice.stuck_batch == Some(batch) {
            bulk.count_stuck_batch();
            continue;
        }
        bulk.start_batch(&id, batch);
        for &index in indexes {
            done += 1;
            let due = running_for.mul_f64(f64::from(done) / f64::from(count));
            tokio::time::sleep_until(started + due).await;
            bulk.pass_hold().await;
            let Some(item) = items.get_mut(index).and_then(Option::take) else {
                continue;
            };
            let injected = dice
                .item_errors
                .get(index)
                .copied()
                .flatten()
                .filter(|_| in_scope);
            let stored_error = in_scope && dice.stored_errors.get(index).copied().unwrap_or(false);
            let (result, fate) = process_item(&shared, key, item, injected, stored_error);
            let contradicted = dice.duplicate_item == Some(index);
            bulk.record(&id, batch, result, fate, contradicted);
        }
        bulk.complete_batch(&id, batch, dice.unknown_ref);
    }
    if dice.stuck_batch.is_some() {
        bulk.stall(&id);
    } else {
        bulk.complete(&id);
    }
}

/// Stores one item as a single create of its kind would, or says why not, and how it came
/// about.
fn process_item(
    shared: &Shared,
    key: &'static KeyProfile,
    item: Item,
    injected: Option<u16>,
    stored_error: bool,
) -> (ItemResult, ItemFate) {
    let client_ref = item.client_ref;
    let failed =
        |error: ItemError, fate: ItemFate| (ItemResult::failed(client_ref.clone(), error), fate);
    let checked = match item.checked {
        Ok(checked) => checked,
        Err(error) => return failed(error, ItemFate::Failed),
    };
    let kind = match &checked {
        CheckedItem::Message { conversation, .. } => {
            if conversation.starts_with(UNKNOWN_CONVERSATION_PREFIX) {
                let message = format!("Conversation {conversation} not found");
                return failed(ItemError::new(404, message), ItemFate::Failed);
            }
            CreateKind::Message
        }
        CheckedItem::Record { spec, .. } => spec.kind,
    };
    if let Some(status) = injected {
        shared.with_kind_counts(kind, |counts| counts.bulk.item_error += 1);
        let message = format!("Injected fault: item error {status}");
        return failed(ItemError::new(status, message), ItemFate::InjectedError);
    }
    let object_id = match checked {
        CheckedItem::Message {
            conversation,
            attributes,
        } => {
            let message = prepare_message(key, conversation, attributes);
            match shared.store(message, Instant::now()) {
                Ok(stored) => stored.id.clone(),
                Err(StoreRefusal::CustomerLimited) => {
                    return failed(
                        ItemError::new(
                            429,
                            "Customer message rate limit exceeded (messages with importedAt are \
                             exempt)"
                                .into(),
                        ),
                        ItemFate::Failed,
                    )
                }
            }
        }
        CheckedItem::Record { spec, attributes } => match (spec.prepare)(shared, key, attributes) {
            Ok(record) => {
                let stored = shared.insert_record(spec.kind, record, false);
                shared.with_kind_counts(kind, |counts| counts.bulk.stored += 1);
                stored.id.clone()
            }
            Err(refused) => {
                let error = ItemError::new(refused.status.as_u16(), refused.message);
                return failed(error, ItemFate::Failed);
            }
        },
    };
    if stored_error {
        shared.with_kind_counts(kind, |counts| counts.bulk.item_stored_error += 1);
        let message = "Injected fault: stored, then reported as an internal error".to_owned();
        return failed(ItemError::new(500, message), ItemFate::StoredThenError);
    }
    (ItemResult::created(client_ref, object_id), ItemFate::Stored)
}

fn unknown_job(id: &str) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("Bulk job {id} not found"),
    )
}

/// The job id of a `/v1/bulk/{id}` read by a key allowed to read jobs, or the refusal.
fn readable_job_id(
    key: &KeyProfile,
    id: Result<Path<String>, PathRejection>,
) -> Result<String, Box<Response>> {
    if !key.has_role(ROLE_BULK_READ) {
        return Err(Box::new(forbidden(ROLE_BULK_READ)));
    }
    id.map(|Path(id)| id)
        .map_err(|_| Box::new(bad_request("Malformed path")))
}

/// The read dice's answer, if they give one: a 429 (as for the org limit) or a dropped
/// connection.
async fn read_fault(shared: &Shared, kill: &ConnectionKill) -> Option<Response> {
    match shared.bulk.roll_read(&shared.config.bulk) {
        ReadFault::None => None,
        ReadFault::TooManyRequests => Some(rate_limited(shared, "Rate limit exceeded")),
        ReadFault::Drop => {
            shared.count_dropped_connection();
            Some(drop_connection(kill).await)
        }
    }
}

async fn job_status(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(kill): Extension<ConnectionKill>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    shared.bulk.count_poll();
    let id = match readable_job_id(key, id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    if let Some(fault) = read_fault(&shared, &kill).await {
        return fault;
    }
    match shared.bulk.job_document(&id) {
        Some(document) => (StatusCode::OK, Json(document)).into_response(),
        None => unknown_job(&id),
    }
}

async fn job_batches(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(kill): Extension<ConnectionKill>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    shared.bulk.count_batch_read();
    let id = match readable_job_id(key, id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    if let Some(fault) = read_fault(&shared, &kill).await {
        return fault;
    }
    let Some(batches) = shared.bulk.batches(&id) else {
        return unknown_job(&id);
    };
    if shared.config.bulk.bare_batches {
        return (StatusCode::OK, Json(batches)).into_response();
    }
    (StatusCode::OK, Json(json!({ "data": batches }))).into_response()
}

#[cfg(test)]
mod tests;
