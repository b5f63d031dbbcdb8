//! The create path shared by messages, customers and conversations: the fault scope, the dice
//! (one stream for every kind in scope), the answers before and after storing, the slow store
//! and the per-kind counters. Each kind's handler only validates and builds its record.
//!
//! Below the route modules: imports `http`, the state, `directory`, `faults`, `server`, `validate`;
//! never a route module or the router.

use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

use axum::extract::State;
use axum::Extension;

use super::directory::{CreateKind, KindCounts, StoredRecord};
use super::faults::{BeforeStore, FaultRoll, OnceStored};
use super::http::{
    api_error, drop_connection, forbidden, gateway_error, is_json_content_type, validation_error,
    with_retry_after, Caller,
};
use super::server::ConnectionKill;
use super::state::{KeyProfile, Shared};
use super::validate::BodyValidator;

/// Which kinds of create the fault dice (`Faults` and `error_429`) apply to. A kind out of scope
/// draws nothing, so it never shifts the dice of the kinds in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultScope {
    pub messages: bool,
    pub customers: bool,
    pub conversations: bool,
}

impl Default for FaultScope {
    /// Every kind: a test that creates only messages draws exactly as before issue 16.
    fn default() -> Self {
        Self {
            messages: true,
            customers: true,
            conversations: true,
        }
    }
}

impl FaultScope {
    pub(crate) fn covers(self, kind: CreateKind) -> bool {
        match kind {
            CreateKind::Message => self.messages,
            CreateKind::Customer => self.customers,
            CreateKind::Conversation => self.conversations,
        }
    }
}

/// A kind's own checks and defaults: the record to store, or why not.
pub(crate) type Prepare =
    fn(&Shared, &KeyProfile, Map<String, Value>) -> Result<NewRecord, Refused>;

/// What distinguishes the create of one kind of record (customer or conversation).
pub(crate) struct CreateSpec {
    pub kind: CreateKind,
    /// The role the key needs (403 without).
    pub role: &'static str,
    pub validator: &'static LazyLock<BodyValidator>,
    /// The kind's own checks and defaults, once the body passed its schema.
    pub prepare: Prepare,
    /// The JSON:API document a stored record is answered with.
    pub render: fn(&StoredRecord) -> Value,
}

/// A kind of record, named by a type so that one handler serves every kind's create route.
pub(crate) trait RecordKind {
    fn spec() -> &'static CreateSpec;
}

/// `POST /v1/customers` and `POST /v1/conversations`, in the order of a message create: role
/// (403), the fault dice (an answer before storing), `Content-Type` and JSON (400), the schema
/// (400), the kind's checks, store, then the answer the dice chose once stored.
pub(crate) async fn create_record<K: RecordKind>(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(kill): Extension<ConnectionKill>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let spec = K::spec();
    if !key.has_role(spec.role) {
        return forbidden(spec.role);
    }
    let roll = shared.roll_create_faults(spec.kind);
    if let Some(answer) = answer_before_store(&shared, roll.before_store, &kill).await {
        return answer;
    }
    let body = match json_body(&headers, body) {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let attributes = match spec.validator.validate(body) {
        Ok(attributes) => attributes,
        Err(problems) => return validation_error(&problems),
    };
    match (spec.prepare)(&shared, key, attributes) {
        Ok(record) => store_and_answer(&shared, spec, record, roll.once_stored, &kill).await,
        Err(refused) => refused.into_response(),
    }
}

/// A customer or conversation ready to store: everything but its id.
pub(crate) struct NewRecord {
    pub customer_id: Option<String>,
    pub created_by: String,
    pub modified_by: String,
    pub attributes: Map<String, Value>,
}

const NO_FAULT: FaultRoll = FaultRoll {
    before_store: BeforeStore::Proceed,
    once_stored: OnceStored::Created,
};

impl Shared {
    /// The create dice for one request of this kind, counted; no draw out of scope.
    pub(crate) fn roll_create_faults(&self, kind: CreateKind) -> FaultRoll {
        if !self.config.fault_scope.covers(kind) {
            return NO_FAULT;
        }
        let roll = self.roll_faults();
        self.with_kind_counts(kind, |counts| {
            counts.faults.count_before_store(roll.before_store);
        });
        roll
    }

    /// Whether the gate answers this create 429 by the `error_429` dice (counted when it does).
    pub(crate) fn roll_injected_429_for(&self, kind: CreateKind) -> bool {
        if !self.config.fault_scope.covers(kind) || !self.roll_injected_429() {
            return false;
        }
        self.with_kind_counts(kind, |counts| counts.faults.injected_429 += 1);
        true
    }

    /// Runs `update` on the counters of a customer or conversation create (no-op for messages,
    /// whose counters live at the top level of the stats).
    pub(crate) fn with_kind_counts(&self, kind: CreateKind, update: impl FnOnce(&mut KindCounts)) {
        if let Some(counts) = self.world().directory.counts_mut(kind) {
            update(counts);
        }
    }

    /// Gives the record its id and stores it (no limits apply to customers and conversations).
    pub(crate) fn insert_record(
        &self,
        kind: CreateKind,
        record: NewRecord,
        seeded: bool,
    ) -> Arc<StoredRecord> {
        let mut world = self.world();
        let stored = StoredRecord {
            id: world.mint_id(),
            customer_id: record.customer_id,
            created_by: record.created_by,
            modified_by: record.modified_by,
            attributes: record.attributes,
            seeded,
        };
        match kind {
            CreateKind::Conversation => world.directory.insert_conversation(stored),
            CreateKind::Customer | CreateKind::Message => world.directory.insert_customer(stored),
        }
    }

    /// Counts a once-stored fault acted upon, at the top level and for its kind.
    fn count_record_outcome(&self, kind: CreateKind, outcome: OnceStored) {
        self.count_once_stored(outcome, None);
        self.with_kind_counts(kind, |counts| counts.faults.count_once_stored(outcome));
    }
}

/// The answer the dice give before anything is stored, if any.
pub(crate) async fn answer_before_store(
    shared: &Shared,
    before: BeforeStore,
    kill: &ConnectionKill,
) -> Option<Response> {
    match before {
        BeforeStore::Proceed => None,
        BeforeStore::Error500 => Some(api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "Injected fault: internal error",
        )),
        BeforeStore::Error503 => {
            let response = api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Injected fault: service unavailable",
            );
            if !shared.config.faults.error_503_retry_after {
                return Some(response);
            }
            // `--retry-after-on-503`: an overloaded server saying when to come back.
            let seconds = shared.clock.seconds_to_reset(std::time::Instant::now());
            Some(with_retry_after(shared, response, seconds))
        }
        BeforeStore::DropConnection => Some(drop_connection(kill).await),
    }
}

/// Why a create was refused before storing: answered with the usual error body.
pub(crate) struct Refused {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        api_error(self.status, self.code, &self.message)
    }
}

/// A create's body: `Content-Type: application/json` and well-formed JSON, else a 400.
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Value, Refused> {
    let body = body.map_err(|rejection| Refused {
        status: rejection.status(),
        code: "bad_request",
        message: rejection.body_text(),
    })?;
    let bad_request = |message: String| Refused {
        status: StatusCode::BAD_REQUEST,
        code: "bad_request",
        message,
    };
    if !is_json_content_type(headers) {
        return Err(bad_request(
            "Content-Type must be application/json".to_owned(),
        ));
    }
    serde_json::from_slice(&body).map_err(|error| bad_request(format!("Malformed JSON: {error}")))
}

/// Stores a customer or conversation as the dice decided (held first for a slow store, in its
/// own task so that it lands even if the client hangs up) and answers with its document.
pub(crate) async fn store_and_answer(
    shared: &Arc<Shared>,
    spec: &CreateSpec,
    record: NewRecord,
    outcome: OnceStored,
    kill: &ConnectionKill,
) -> Response {
    let kind = spec.kind;
    let stored = if outcome == OnceStored::Slow {
        let landing = {
            let shared = Arc::clone(shared);
            let delay = shared.config.faults.slow_store_delay;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let stored = shared.insert_record(kind, record, false);
                shared.count_record_outcome(kind, outcome);
                stored
            })
        };
        match landing.await {
            Ok(stored) => stored,
            Err(_) => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_server_error",
                    "The delayed store failed",
                )
            }
        }
    } else {
        let stored = shared.insert_record(kind, record, false);
        shared.count_record_outcome(kind, outcome);
        stored
    };
    answer_stored_document((spec.render)(&stored), outcome, kill).await
}

/// The answer to a create once stored, as the dice decided, for any JSON:API document.
pub(crate) async fn answer_stored_document(
    mut document: Value,
    outcome: OnceStored,
    kill: &ConnectionKill,
) -> Response {
    match outcome {
        OnceStored::Created | OnceStored::Slow => {
            (StatusCode::CREATED, Json(document)).into_response()
        }
        OnceStored::Drop => drop_connection(kill).await,
        OnceStored::Error(status) => gateway_error(status),
        OnceStored::Accepted => (StatusCode::ACCEPTED, Json(document)).into_response(),
        OnceStored::WithoutId => {
            if let Some(data) = document.get_mut("data").and_then(Value::as_object_mut) {
                data.remove("id");
                data.remove("links");
            }
            (StatusCode::CREATED, Json(document)).into_response()
        }
        OnceStored::Oversize => {
            let padded = Padded {
                meta: Padding {
                    padding: "x".repeat(OVERSIZE_PADDING),
                },
                data: document.get("data").unwrap_or(&Value::Null),
            };
            (StatusCode::CREATED, Json(padded)).into_response()
        }
    }
}

/// Size of the `oversize_body` padding: twice the 1 MiB a client should read at most.
pub(crate) const OVERSIZE_PADDING: usize = 2 * 1024 * 1024;

/// The `oversize_body` answer: the padding comes first, so a client that reads only the first
/// MiB never reaches the id.
#[derive(Serialize)]
struct Padded<'a> {
    meta: Padding,
    data: &'a Value,
}

#[derive(Serialize)]
struct Padding {
    padding: String,
}
