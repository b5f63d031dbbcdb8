//! Bulk message creation, as `shared/kustomer-api.md` (section Bulk) describes it:
//! `POST /v1/messages/bulk` accepts up to 100 message bodies and answers a queued job at once;
//! the job runs in the background (queued, then running, then complete) and stores each item
//! exactly as a single create would; `GET /v1/bulk/{id}` answers its status and
//! `GET /v1/bulk/{id}/batches` its per-item results once it is complete.
//!
//! Every rule and switch is listed in the sandbox's module doc (section "Bulk"). The dice come
//! from a stream of their own, seeded from the sandbox seed, so bulk traffic never shifts the
//! create, latency or lookup dice. One job's dice are all drawn when it is created, in a fixed
//! count per job and per item whatever the switches, so the same seed and the same requests give
//! the same jobs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::api::{
    api_error, drop_connection, forbidden, is_json_content_type, prepare_message, validation_error,
    Caller, UNKNOWN_CONVERSATION_PREFIX,
};
use super::server::ConnectionKill;
use super::state::{object_id, KeyProfile, Shared, StoreRefusal, ROLE_MESSAGE_CREATE};
use super::validate::{is_object_id, FieldError};
use super::SandboxError;

/// Where bulk jobs are created.
pub(crate) const BULK_ROUTE: &str = "/v1/messages/bulk";
/// The most message bodies one bulk request may carry.
pub const MAX_BULK_ITEMS: usize = 100;
/// The longest `_clientRef`, in characters.
pub const MAX_CLIENT_REF_CHARS: usize = 255;
/// The role reading bulk jobs and their results needs.
pub(crate) const ROLE_BULK_READ: &str = "org.permission.bulk.read";
/// The most a bulk request body may weigh: 100 bodies of up to 10,240 characters of preview
/// each (4 bytes a character at worst) plus the rest. Kustomer's own limit is unverified.
const MAX_BULK_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The longest processing delay (and jitter) a job may be given.
pub const MAX_BULK_DELAY: Duration = Duration::from_secs(600);
/// The statuses `item_error` may draw: Kustomer's permanent and transient item errors.
pub const BULK_ITEM_ERROR_STATUSES: [u16; 7] = [400, 404, 409, 422, 429, 500, 503];

/// How bulk jobs behave. Probabilities are in 0..=1.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkConfig {
    /// Processing time of a job (queued for the first half, running for the second), and its
    /// uniform jitter (+/-).
    pub delay: Duration,
    pub jitter: Duration,
    /// Process a job's items in array order instead of a random order.
    pub in_order: bool,
    /// Probability that a job is held back until a job created after it has completed, so later
    /// jobs finish first (a held-back job with no later job to wait for goes after
    /// [`BulkConfig::held_back_limit`]).
    pub out_of_order: f64,
    /// Probability that an item fails with a status drawn from `item_error_statuses`.
    pub item_error: f64,
    /// Statuses of injected item errors, each one of [`BULK_ITEM_ERROR_STATUSES`]; not empty.
    pub item_error_statuses: Vec<u16>,
    /// Probability that the job is created (and runs) but the POST's connection is closed
    /// without an answer.
    pub drop_after_create: f64,
    /// `GET /v1/bulk/{id}/batches` answers a bare JSON array instead of `{"data": [..]}`.
    pub bare_batches: bool,
    /// A POST with any invalid item is refused whole with a 400, instead of accepting the job
    /// and failing those items (400 in their results).
    pub reject_invalid: bool,
    /// Answer a created job 200 (as the OpenAPI file says) instead of 201 (as the docs say).
    pub answer_200: bool,
}

/// `BulkConfig::delay` unless told otherwise.
pub const DEFAULT_BULK_DELAY: Duration = Duration::from_millis(200);
/// `BulkConfig::jitter` unless told otherwise.
pub const DEFAULT_BULK_JITTER: Duration = Duration::from_millis(100);

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            delay: DEFAULT_BULK_DELAY,
            jitter: DEFAULT_BULK_JITTER,
            in_order: false,
            out_of_order: 0.0,
            item_error: 0.0,
            item_error_statuses: BULK_ITEM_ERROR_STATUSES.to_vec(),
            drop_after_create: 0.0,
            bare_batches: false,
            reject_invalid: false,
            answer_200: false,
        }
    }
}

impl BulkConfig {
    /// Rejects probabilities outside 0..=1, an empty or foreign status list, and delays or
    /// jitter above ten minutes.
    pub(crate) fn check(&self) -> Result<(), SandboxError> {
        for (name, probability) in [
            ("bulk out_of_order", self.out_of_order),
            ("bulk item_error", self.item_error),
            ("bulk drop_after_create", self.drop_after_create),
        ] {
            if !(0.0..=1.0).contains(&probability) {
                return Err(SandboxError::InvalidConfig(format!(
                    "{name} must be within 0..=1, got {probability}"
                )));
            }
        }
        if self.item_error_statuses.is_empty() {
            return Err(SandboxError::InvalidConfig(
                "bulk item errors need at least one status".into(),
            ));
        }
        if let Some(status) = self
            .item_error_statuses
            .iter()
            .find(|status| !BULK_ITEM_ERROR_STATUSES.contains(status))
        {
            return Err(SandboxError::InvalidConfig(format!(
                "bulk item error status {status} is not one of {BULK_ITEM_ERROR_STATUSES:?}"
            )));
        }
        for (name, span) in [("delay", self.delay), ("jitter", self.jitter)] {
            if span > MAX_BULK_DELAY {
                return Err(SandboxError::InvalidConfig(format!(
                    "bulk {name} must be at most {} ms, got {} ms",
                    MAX_BULK_DELAY.as_millis(),
                    span.as_millis()
                )));
            }
        }
        Ok(())
    }

    /// How long a held-back job waits for a later job to complete before it goes anyway: four
    /// of its longest processing times, at least one second.
    pub fn held_back_limit(&self) -> Duration {
        self.delay
            .saturating_add(self.jitter)
            .saturating_mul(4)
            .max(Duration::from_secs(1))
    }

    /// A delay uniform in `delay ± jitter`, never below zero, from exactly one draw.
    fn draw_delay(&self, draw: f64) -> Duration {
        let low = self.delay.saturating_sub(self.jitter);
        let high = self.delay.saturating_add(self.jitter);
        low + (high - low).mul_f64(draw.clamp(0.0, 1.0))
    }

    /// The status of an injected item error for a uniform draw in 0..1.
    fn pick_status(&self, draw: f64) -> u16 {
        let statuses = &self.item_error_statuses;
        // Truncation is the point: the draw's share of the list, clamped for draw ~ 1.
        let index = ((draw * statuses.len() as f64) as usize).min(statuses.len().saturating_sub(1));
        statuses.get(index).copied().unwrap_or(500)
    }

    /// Every die of one job of `items` items, always the same number of draws.
    fn roll(&self, rng: &mut StdRng, items: usize) -> JobDice {
        let drop_answer = rng.random::<f64>() < self.drop_after_create;
        let held_back = rng.random::<f64>() < self.out_of_order;
        let delay = self.draw_delay(rng.random());
        let mut order: Vec<usize> = (0..items).collect();
        order.shuffle(rng);
        if self.in_order {
            order.sort_unstable();
        }
        let item_errors = (0..items)
            .map(|_| {
                let hit: f64 = rng.random();
                let pick: f64 = rng.random();
                (hit < self.item_error).then(|| self.pick_status(pick))
            })
            .collect();
        JobDice {
            drop_answer,
            held_back,
            delay,
            order,
            item_errors,
        }
    }
}

/// Bulk traffic in `GET /_sandbox/stats` (flattened into its top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkStats {
    /// Bulk jobs created (a dropped answer included).
    pub bulk_jobs: u64,
    /// Items in the jobs created.
    pub bulk_items: u64,
    /// `GET /v1/bulk/{id}` requests that got past auth and the org limit.
    pub bulk_polls: u64,
    /// `GET /v1/bulk/{id}/batches` requests that got past auth and the org limit.
    pub bulk_batch_reads: u64,
    /// Items stored as messages.
    pub bulk_items_created: u64,
    /// Items that ended in an error (injected or not).
    pub bulk_items_failed: u64,
    /// Jobs complete now.
    pub bulk_jobs_complete: u64,
    /// Jobs that completed while a job created before them had not.
    pub bulk_jobs_overtaking: u64,
}

/// Bulk faults in `faults_injected` (flattened into it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkFaultCounts {
    /// Items failed by the `item_error` dice.
    pub bulk_item_error: u64,
    /// Jobs created whose POST was answered by closing the connection.
    pub bulk_drop_after_create: u64,
    /// Jobs held back by the `out_of_order` dice.
    pub bulk_out_of_order: u64,
}

/// What the dice decided for one job when it was created.
#[derive(Debug, Clone, PartialEq)]
struct JobDice {
    drop_answer: bool,
    held_back: bool,
    delay: Duration,
    /// Item indexes in processing order.
    order: Vec<usize>,
    /// Per item (array order): the status of an injected error, if any.
    item_errors: Vec<Option<u16>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobStatus {
    Queued,
    Running,
    Complete,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Complete => "complete",
        }
    }
}

/// Why an item was not stored, as its result's `error` says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ItemError {
    status: u16,
    code: &'static str,
    message: String,
}

impl ItemError {
    fn new(status: u16, message: String) -> Self {
        let code = match status {
            400 => "bad_request",
            404 => "not_found",
            409 => "conflict",
            422 => "unprocessable_entity",
            429 => "too_many_requests",
            503 => "service_unavailable",
            _ => "internal_server_error",
        };
        Self {
            status,
            code,
            message,
        }
    }
}

/// One item's result, listed by `GET /v1/bulk/{id}/batches`.
#[derive(Debug, Clone, Serialize)]
struct ItemResult {
    #[serde(rename = "_clientRef")]
    client_ref: Option<String>,
    #[serde(rename = "objectId")]
    object_id: Option<String>,
    status: &'static str,
    error: Option<ItemError>,
}

/// A bulk item as accepted: its reference, and its body checked like a single create's.
struct Item {
    client_ref: Option<String>,
    checked: Result<CheckedItem, ItemError>,
}

struct CheckedItem {
    conversation: String,
    attributes: Map<String, Value>,
}

struct Job {
    sequence: u64,
    status: JobStatus,
    /// In processing order.
    results: Vec<ItemResult>,
}

/// Everything bulk behind one mutex (never held together with the world's).
struct Jobs {
    rng: StdRng,
    id_salt: u64,
    sequence: u64,
    jobs: HashMap<String, Job>,
    /// Sequence numbers of the jobs not complete yet.
    incomplete: BTreeSet<u64>,
    stats: BulkStats,
    faults: BulkFaultCounts,
}

/// The bulk part of a sandbox's state.
pub(crate) struct BulkState {
    jobs: Mutex<Jobs>,
    /// The highest sequence number of a completed job: held-back jobs wait for it to pass theirs.
    completed: tokio::sync::watch::Sender<u64>,
    /// While true, no job stores an item (`POST /_sandbox/bulk/hold` / `release`).
    hold: tokio::sync::watch::Sender<bool>,
}

/// Mixed into the sandbox seed so the bulk stream is independent of every other stream.
const BULK_STREAM: u64 = 0x6275_6c6b_6a6f_6273;

impl BulkState {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ BULK_STREAM);
        let id_salt = rng.random();
        Self {
            jobs: Mutex::new(Jobs {
                rng,
                id_salt,
                sequence: 0,
                jobs: HashMap::new(),
                incomplete: BTreeSet::new(),
                stats: BulkStats::default(),
                faults: BulkFaultCounts::default(),
            }),
            completed: tokio::sync::watch::Sender::new(0),
            hold: tokio::sync::watch::Sender::new(false),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves counters at worst slightly off; keep serving.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> BulkStats {
        self.jobs().stats.clone()
    }

    pub(crate) fn fault_counts(&self) -> BulkFaultCounts {
        self.jobs().faults.clone()
    }

    /// Holds (`true`) or releases (`false`) the storing of bulk items.
    pub(crate) fn set_hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    async fn pass_hold(&self) {
        let mut hold = self.hold.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` lives.
        let _ = hold.wait_for(|held| !*held).await;
    }

    /// Registers a new job and draws its dice.
    fn create(&self, config: &BulkConfig, items: usize) -> (String, u64, JobDice) {
        let mut jobs = self.jobs();
        let dice = config.roll(&mut jobs.rng, items);
        jobs.sequence += 1;
        let sequence = jobs.sequence;
        let id = object_id(jobs.id_salt.wrapping_add(sequence));
        jobs.jobs.insert(
            id.clone(),
            Job {
                sequence,
                status: JobStatus::Queued,
                results: Vec::with_capacity(items),
            },
        );
        jobs.incomplete.insert(sequence);
        jobs.stats.bulk_jobs += 1;
        jobs.stats.bulk_items += items as u64;
        if dice.held_back {
            jobs.faults.bulk_out_of_order += 1;
        }
        if dice.drop_answer {
            jobs.faults.bulk_drop_after_create += 1;
        }
        (id, sequence, dice)
    }

    fn set_running(&self, id: &str) {
        if let Some(job) = self.jobs().jobs.get_mut(id) {
            job.status = JobStatus::Running;
        }
    }

    fn record(&self, id: &str, result: ItemResult, injected: bool) {
        let mut jobs = self.jobs();
        if result.error.is_some() {
            jobs.stats.bulk_items_failed += 1;
        } else {
            jobs.stats.bulk_items_created += 1;
        }
        if injected {
            jobs.faults.bulk_item_error += 1;
        }
        if let Some(job) = jobs.jobs.get_mut(id) {
            job.results.push(result);
        }
    }

    fn complete(&self, id: &str) {
        let mut jobs = self.jobs();
        let Some(sequence) = jobs.jobs.get_mut(id).map(|job| {
            job.status = JobStatus::Complete;
            job.sequence
        }) else {
            return;
        };
        jobs.incomplete.remove(&sequence);
        let overtaking = jobs
            .incomplete
            .first()
            .is_some_and(|earliest| *earliest < sequence);
        jobs.stats.bulk_jobs_complete += 1;
        if overtaking {
            jobs.stats.bulk_jobs_overtaking += 1;
        }
        drop(jobs);
        self.completed.send_if_modified(|highest| {
            let raised = sequence > *highest;
            *highest = (*highest).max(sequence);
            raised
        });
    }

    /// Waits until a job created after job `sequence` has completed. When none has after
    /// `limit`, and none created after it is still to complete, goes anyway (the newest job
    /// cannot wait for one that may never come); otherwise waits on for that later job.
    async fn wait_for_a_later_job(&self, sequence: u64, limit: Duration) {
        let mut completed = self.completed.subscribe();
        loop {
            let later_done = completed.wait_for(|highest| *highest > sequence);
            if let Ok(done) = tokio::time::timeout(limit, later_done).await {
                // Err only if the sender is gone, which cannot happen while `self` lives.
                drop(done);
                return;
            }
            let later_pending = self
                .jobs()
                .incomplete
                .last()
                .is_some_and(|newest| *newest > sequence);
            if !later_pending {
                return;
            }
        }
    }

    fn status(&self, id: &str) -> Option<JobStatus> {
        self.jobs().jobs.get(id).map(|job| job.status)
    }

    /// The results once complete; empty while not.
    fn results(&self, id: &str) -> Option<Vec<ItemResult>> {
        self.jobs().jobs.get(id).map(|job| match job.status {
            JobStatus::Complete => job.results.clone(),
            JobStatus::Queued | JobStatus::Running => Vec::new(),
        })
    }

    fn count_poll(&self) {
        self.jobs().stats.bulk_polls += 1;
    }

    fn count_batch_read(&self) {
        self.jobs().stats.bulk_batch_reads += 1;
    }
}

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
    if !key.has_role(ROLE_MESSAGE_CREATE) {
        return forbidden(ROLE_MESSAGE_CREATE);
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
    let items = match accept_items(&shared, parsed) {
        Ok(items) => items,
        Err(refused) => return refused.into_response(),
    };
    let config = &shared.config.bulk;
    let (id, sequence, dice) = shared.bulk.create(config, items.len());
    let drop_answer = dice.drop_answer;
    tokio::spawn(run_job(
        Arc::clone(&shared),
        key,
        id.clone(),
        sequence,
        dice,
        items,
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
    (status, Json(job_document(&id, JobStatus::Queued))).into_response()
}

fn job_document(id: &str, status: JobStatus) -> Value {
    json!({"data": {"type": "bulk", "id": id, "attributes": {"status": status.as_str()}}})
}

/// Checks the array's shape (refused whole with a 400) and each item like a single create (a
/// 400 in the item's result, or the whole request refused with `reject_invalid`).
fn accept_items(shared: &Shared, parsed: Value) -> Result<Vec<Item>, Refused> {
    let Value::Array(bodies) = parsed else {
        return Err(Refused::Shape(
            "The body must be a JSON array of message bodies".into(),
        ));
    };
    if bodies.is_empty() {
        return Err(Refused::Shape("The array holds no message".into()));
    }
    if bodies.len() > MAX_BULK_ITEMS {
        return Err(Refused::Shape(format!(
            "The array holds {} messages; at most {MAX_BULK_ITEMS} are accepted",
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
        let checked = check_item(shared, object);
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
        (Ok(conversation), Ok(attributes)) => Ok(CheckedItem {
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
/// for the second half while its items are stored one by one (in processing order, evenly
/// spread), then complete.
async fn run_job(
    shared: Arc<Shared>,
    key: &'static KeyProfile,
    id: String,
    sequence: u64,
    dice: JobDice,
    items: Vec<Item>,
) {
    let bulk = &shared.bulk;
    if dice.held_back {
        bulk.wait_for_a_later_job(sequence, shared.config.bulk.held_back_limit())
            .await;
    }
    let queued_for = dice.delay / 2;
    tokio::time::sleep(queued_for).await;
    bulk.set_running(&id);
    let running_for = dice.delay - queued_for;
    let started = tokio::time::Instant::now();
    let count = u32::try_from(items.len()).unwrap_or(u32::MAX).max(1);
    let mut items: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    for (done, index) in (1..).zip(dice.order.iter().copied()) {
        tokio::time::sleep_until(started + running_for.mul_f64(f64::from(done) / f64::from(count)))
            .await;
        bulk.pass_hold().await;
        let Some(item) = items.get_mut(index).and_then(Option::take) else {
            continue;
        };
        let injected = dice.item_errors.get(index).copied().flatten();
        let (result, was_injected) = process_item(&shared, key, item, injected);
        bulk.record(&id, result, was_injected);
    }
    bulk.complete(&id);
}

/// Stores one item as a single create would, or says why not. The second value is whether an
/// injected error decided it.
fn process_item(
    shared: &Shared,
    key: &'static KeyProfile,
    item: Item,
    injected: Option<u16>,
) -> (ItemResult, bool) {
    let failed = |error: ItemError| ItemResult {
        client_ref: item.client_ref.clone(),
        object_id: None,
        status: "error",
        error: Some(error),
    };
    let checked = match item.checked {
        Ok(checked) => checked,
        Err(error) => return (failed(error), false),
    };
    if checked
        .conversation
        .starts_with(UNKNOWN_CONVERSATION_PREFIX)
    {
        let message = format!("Conversation {} not found", checked.conversation);
        return (failed(ItemError::new(404, message)), false);
    }
    if let Some(status) = injected {
        let message = format!("Injected fault: item error {status}");
        return (failed(ItemError::new(status, message)), true);
    }
    let message = prepare_message(key, checked.conversation, checked.attributes);
    match shared.store(message, Instant::now()) {
        Ok(stored) => (
            ItemResult {
                client_ref: item.client_ref,
                object_id: Some(stored.id.clone()),
                status: "created",
                error: None,
            },
            false,
        ),
        Err(StoreRefusal::CustomerLimited) => (
            failed(ItemError::new(
                429,
                "Customer message rate limit exceeded (messages with importedAt are exempt)".into(),
            )),
            false,
        ),
    }
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

async fn job_status(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    shared.bulk.count_poll();
    let id = match readable_job_id(key, id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match shared.bulk.status(&id) {
        Some(status) => (StatusCode::OK, Json(job_document(&id, status))).into_response(),
        None => unknown_job(&id),
    }
}

async fn job_batches(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    shared.bulk.count_batch_read();
    let id = match readable_job_id(key, id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let Some(results) = shared.bulk.results(&id) else {
        return unknown_job(&id);
    };
    if shared.config.bulk.bare_batches {
        return (StatusCode::OK, Json(results)).into_response();
    }
    let data: Vec<Value> = results
        .into_iter()
        .map(|result| json!({"type": "bulk_batch", "attributes": result}))
        .collect();
    (StatusCode::OK, Json(json!({ "data": data }))).into_response()
}

#[cfg(test)]
mod tests;
