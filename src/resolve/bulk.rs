//! Bulk mode's creates of customers and conversations: `POST /v1/customers/bulk`, then
//! `POST /v1/conversations/bulk` (a conversation needs its customer's id), at most
//! `bulk_items` per job, each item the single create's body with a `_clientRef`.
//!
//! Durability as for message jobs: a job's records are `sending` with its local batch in one
//! transaction before the POST, and the job's id is recorded as soon as it is known. Its results
//! are read after a job time, at most once per job time, for at most [`LONGEST_JOB`], until
//! final (every `_clientRef` answered, or the job says `complete`). `created` resolves a record; 400/404/409/422 fail
//! it; 429 sends it again in a later job; anything else (another status, a missing, repeated or
//! unreadable result, a lost POST answer, a job that never completes) leaves it `sending`, an
//! unknown outcome the ticket-by-ticket pass settles by lookup after the settle delay, never by
//! a blind resend. On resume, records `sending` in a known job are settled by reading that job.
//! Fewer than [`MIN_JOB_ITEMS`] creates of a kind go as single creates in that pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::settle::Refusals;
use super::tickets::{
    customer_failed, find_customer, finish_ticket, resolve_customer, stop_or_fail, use_found,
};
use super::{bodies, concurrently, Halt, Route, Shared};
use crate::checkpoint::{now_ms, Entity, EntityState, ResolvedBy, TicketRecord};
use crate::client::{BulkKind, BulkResultItem, EntityLookup, ItemOutcome, MAX_BULK_REF_CHARS};
use crate::retry::{RequestKind, RetryAction, MAX_RATE_LIMITED_PER_ROW};
use crate::send::SendStop;

/// Fewer creates of a kind than this go as single creates: a job costs at least three requests.
pub(super) const MIN_JOB_ITEMS: usize = 3;
/// The wait before the first read of the first job, before any job was measured.
pub(super) const FIRST_JOB_WAIT: Duration = Duration::from_millis(1_000);
/// The shortest wait before a job's read, however fast jobs have been.
const SHORTEST_JOB_WAIT: Duration = Duration::from_millis(50);
/// The longest a job may take to complete before its records count as unknown outcomes.
const LONGEST_JOB: Duration = Duration::from_secs(15 * 60);

/// Creates in bulk jobs what the fresh tickets need (their lookups first, as in single mode),
/// after settling the jobs an earlier run left in flight. Only `Halt::Stop` comes back: every
/// other end is recorded on its ticket or customer.
pub(super) async fn create_in_bulk(
    shared: &Arc<Shared>,
    tickets: Vec<TicketRecord>,
    items_per_job: usize,
) -> Result<(), Halt> {
    let items_per_job = items_per_job.clamp(1, 100);
    for entity in [Entity::Customer, Entity::Conversation] {
        for (job_id, keys) in shared.write(|cp| cp.entities_in_bulk_jobs(entity))? {
            let refs = keys.into_iter().map(|key| (client_ref(entity, &key), key));
            read_job(shared, entity, &job_id, &refs.collect()).await?;
        }
    }
    let fresh: Vec<TicketRecord> = tickets
        .into_iter()
        .filter(|t| t.state == EntityState::Pending && t.last_attempt_ms.is_none())
        .collect();
    // Conversations first: a ticket found needs no create.
    let missing = concurrently(shared, fresh, |shared, ticket| async move {
        let route = Route::ConversationByExternalId;
        let find = || shared.client.find_conversation_by_external_id(&ticket.key);
        match shared.lookup(route, find).await {
            Ok(EntityLookup::Found(found)) => {
                let result = use_found(&shared, &ticket, found).await;
                finish_ticket(&shared, &ticket.key, result);
                None
            }
            Ok(_) => Some(ticket),
            Err(halt) => {
                stop_or_fail(&shared, &ticket.key, halt);
                None
            }
        }
    })
    .await;
    let missing: Vec<TicketRecord> = missing.into_iter().flatten().collect();
    stopped(shared)?;
    // Their customers, each found once (externalId, then email), else created in jobs.
    let customer_keys: Vec<String> = missing
        .iter()
        .map(|t| t.customer_key.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let absent = concurrently(shared, customer_keys, |shared, key| async move {
        match resolve_customer(&shared, &key, false).await {
            Ok(None) => Some(key),
            Ok(Some(_)) | Err(Halt::Fail { .. }) => None,
            Err(Halt::Stop(stop)) => {
                shared.halt(stop);
                None
            }
        }
    })
    .await;
    stopped(shared)?;
    let mut emails = HashSet::new();
    let mut customers = Vec::new();
    for key in absent.into_iter().flatten() {
        let Some(record) = shared.write(|cp| cp.customer_record(&key))? else {
            continue;
        };
        // Customers sharing an email: one is created here, the others then find it by email
        // in the ticket-by-ticket pass instead of being created twice.
        let email = record.customer.email.as_ref().map(|e| e.to_lowercase());
        let first_of_email = email.is_none_or(|email| emails.insert(email));
        if record.last_attempt_ms.is_none() && first_of_email {
            let fields = bodies::customer_fields(&record.customer, &shared.plan);
            customers.push((key, fields));
        }
    }
    let sent: Vec<String> = customers.iter().map(|(key, _)| key.clone()).collect();
    let unknown_before = shared.counters.unknown.load(Ordering::Relaxed);
    create_all(shared, Entity::Customer, customers, items_per_job).await?;
    if shared.counters.unknown.load(Ordering::Relaxed) > unknown_before {
        settle_customers(shared, sent).await?;
    }
    let unknown_before = shared.counters.unknown.load(Ordering::Relaxed);
    let mut conversations = Vec::new();
    for ticket in &missing {
        let Some(customer) = shared.write(|cp| cp.customer_record(&ticket.customer_key))? else {
            continue;
        };
        if let (EntityState::Resolved, Some(id)) = (customer.state, &customer.kustomer_id) {
            let fields = bodies::conversation_fields(ticket, id, &shared.plan);
            conversations.push((ticket.key.clone(), fields));
        }
    }
    create_all(shared, Entity::Conversation, conversations, items_per_job).await?;
    // Unknown outcomes are looked up next: only once what a job stored would show.
    if shared.counters.unknown.load(Ordering::Relaxed) > unknown_before {
        shared.pause(shared.plan.settle_delay).await?;
    }
    Ok(())
}

/// Customers a job left `sending` (an unknown outcome), looked up once the job is complete and
/// the settle delay has passed, so that their tickets' conversations can still go in jobs. One
/// not found is left to the ticket-by-ticket pass (which proves the route before a create).
async fn settle_customers(shared: &Arc<Shared>, sent: Vec<String>) -> Result<(), Halt> {
    shared.pause(shared.plan.settle_delay).await?;
    let mut unsettled = Vec::new();
    for key in sent {
        match shared.write(|cp| cp.customer_record(&key))? {
            Some(record) if record.state == EntityState::Sending => unsettled.push(record),
            _ => {}
        }
    }
    concurrently(shared, unsettled, |shared, record| async move {
        let found = match find_customer(&shared, &record).await {
            Ok(found) => found,
            Err(Halt::Stop(stop)) => return shared.halt(stop),
            Err(Halt::Fail { .. }) => None,
        };
        if let Some((id, _)) = found {
            let key = &record.key;
            match shared
                .write(|cp| cp.entity_resolved(Entity::Customer, key, &id, ResolvedBy::Created))
            {
                Ok(()) => {
                    shared
                        .counters
                        .customers_created
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(Halt::Stop(stop)) => shared.halt(stop),
                Err(Halt::Fail { .. }) => {}
            }
        }
    })
    .await;
    stopped(shared)
}

fn stopped(shared: &Shared) -> Result<(), Halt> {
    if shared.cancel.is_cancelled() {
        return Err(Halt::Stop(SendStop::Interrupted));
    }
    Ok(())
}

/// The `_clientRef` of a record's item: stable across runs, unique within a job.
fn client_ref(entity: Entity, key: &str) -> String {
    match entity {
        Entity::Customer => format!("customer-{key}"),
        Entity::Conversation => format!("conversation-{key}"),
    }
}

fn kind(entity: Entity) -> BulkKind {
    match entity {
        Entity::Customer => BulkKind::Customers,
        Entity::Conversation => BulkKind::Conversations,
    }
}

/// Creates `items` in jobs of `items_per_job`, sending again in later jobs what a job refused
/// unprocessed (a bounded number of times). Fewer than [`MIN_JOB_ITEMS`] go as single creates
/// in the ticket-by-ticket pass, like items whose `_clientRef` would be too long.
async fn create_all(
    shared: &Shared,
    entity: Entity,
    items: Vec<(String, Map<String, Value>)>,
    items_per_job: usize,
) -> Result<(), Halt> {
    let mut queue: VecDeque<(String, Value)> = items
        .into_iter()
        .map(|(key, fields)| {
            let reference = client_ref(entity, &key);
            (key, bodies::bulk_item(fields, &reference))
        })
        .filter(|(key, _)| client_ref(entity, key).chars().count() <= MAX_BULK_REF_CHARS)
        .collect();
    let mut rounds = 0;
    while queue.len() >= MIN_JOB_ITEMS && rounds <= MAX_RATE_LIMITED_PER_ROW {
        stopped(shared)?;
        let take = queue.len().min(items_per_job);
        let job: Vec<(String, Value)> = queue.drain(..take).collect();
        let refused = send_job(shared, entity, &job).await?;
        if !refused.is_empty() {
            rounds += 1;
            queue.extend(job.into_iter().filter(|(key, _)| refused.contains(key)));
        }
    }
    Ok(())
}

/// One job: durably `sending`, posted (again only after a refusal before processing), its id
/// recorded, then read. Returns the records it refused unprocessed (back to `pending`).
async fn send_job(
    shared: &Shared,
    entity: Entity,
    job: &[(String, Value)],
) -> Result<HashSet<String>, Halt> {
    let batch = format!("{}-{}", client_ref(entity, "batch"), now_ms());
    let keys: Vec<String> = job.iter().map(|(key, _)| key.clone()).collect();
    let payload = Value::Array(job.iter().map(|(_, item)| item.clone()).collect()).to_string();
    shared.write(|cp| cp.entities_bulk_sending(entity, &batch, &keys))?;
    let mut refusals = Refusals::default();
    let job_id = loop {
        stopped(shared)?;
        let err = match shared.client.create_bulk(kind(entity), &payload).await.0 {
            Ok(job_id) => {
                shared.answered();
                break Some(job_id);
            }
            Err(err) => err,
        };
        match err.retry_action(RequestKind::Create) {
            RetryAction::StopRun => return Err(Halt::Stop(SendStop::ApiFatal(err))),
            action @ (RetryAction::RateLimited | RetryAction::NeverSent) => {
                match shared.wait_to_resend(action, &err, &mut refusals).await {
                    Ok(()) => {}
                    Err(Halt::Fail { .. }) => break None,
                    Err(stop) => return Err(stop),
                }
            }
            // A lost or refused answer: the job may exist. Its records stay `sending`, settled
            // by lookup.
            _ => {
                shared.answered();
                tracing::warn!(error = %err, "a bulk job of {} may or may not exist", kind(entity).path());
                break None;
            }
        }
    };
    let Some(job_id) = job_id else {
        // The job may exist and run: its records are looked up only once it would be done.
        count_unknown(shared, keys.len());
        let learned = shared.job_time.lock().map(|t| *t).unwrap_or(FIRST_JOB_WAIT);
        let lost_job = learned.max(shared.plan.assumed_job).saturating_mul(4);
        shared.pause(shared.plan.settle_delay.max(lost_job)).await?;
        return Ok(HashSet::new());
    };
    shared.write(|cp| cp.entity_bulk_job(entity, &batch, &job_id))?;
    let refs = keys
        .into_iter()
        .map(|key| (client_ref(entity, &key), key))
        .collect();
    read_job(shared, entity, &job_id, &refs).await
}

fn count_unknown(shared: &Shared, n: usize) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    shared.counters.unknown.fetch_add(n, Ordering::Relaxed);
}

/// Waits for the job to complete, reads its results and settles each record of `refs`
/// (`_clientRef` → source key). Returns the records refused before processing.
async fn read_job(
    shared: &Shared,
    entity: Entity,
    job_id: &str,
    refs: &HashMap<String, String>,
) -> Result<HashSet<String>, Halt> {
    let results = await_results(shared, job_id, refs).await?;
    let mut refused = HashSet::new();
    let Some(items) = results else {
        count_unknown(shared, refs.len());
        return Ok(refused);
    };
    let mut by_ref: HashMap<&str, Vec<&ItemOutcome>> = HashMap::new();
    for item in &items {
        if let Some(reference) = &item.client_ref {
            by_ref
                .entry(reference.as_str())
                .or_default()
                .push(&item.outcome);
        }
    }
    for (reference, key) in refs {
        match by_ref.get(reference.as_str()).map(Vec::as_slice) {
            Some([ItemOutcome::Created { object_id }]) => created(shared, entity, key, object_id)?,
            Some(
                [ItemOutcome::Failed {
                    status,
                    code,
                    message,
                }],
            ) if matches!(status, 400 | 404 | 409 | 422) => {
                let fail = Halt::Fail {
                    code: code.clone().unwrap_or_else(|| format!("http_{status}")),
                    message: format!("the bulk job {job_id} refused it ({status}): {message}"),
                    retryable: false,
                };
                match entity {
                    Entity::Customer => {
                        if let Halt::Stop(stop) = customer_failed(shared, key, fail) {
                            return Err(Halt::Stop(stop));
                        }
                    }
                    Entity::Conversation => stop_or_fail(shared, key, fail),
                }
            }
            Some([ItemOutcome::Failed { status: 429, .. }]) => {
                shared.write(|cp| cp.entity_refused(entity, key))?;
                refused.insert(key.clone());
            }
            // Another error, no result, several, or one unreadable: the item may be stored.
            _ => count_unknown(shared, 1),
        }
    }
    Ok(refused)
}

fn created(shared: &Shared, entity: Entity, key: &str, id: &str) -> Result<(), Halt> {
    match entity {
        Entity::Customer => {
            shared.write(|cp| cp.entity_resolved(entity, key, id, ResolvedBy::Created))?;
            shared
                .counters
                .customers_created
                .fetch_add(1, Ordering::Relaxed);
        }
        Entity::Conversation => {
            finish_ticket(shared, key, Ok((id.to_string(), ResolvedBy::Created)));
        }
    }
    Ok(())
}

/// The job's result items once final: every `_clientRef` sent has a result, or the job says
/// `complete` (asked only once every listed batch is). Read at most once per job time, for at
/// most [`LONGEST_JOB`] (then `None`: unknown outcomes). The time a job took to answer in full
/// becomes the next job time.
async fn await_results(
    shared: &Shared,
    job_id: &str,
    refs: &HashMap<String, String>,
) -> Result<Option<Vec<BulkResultItem>>, Halt> {
    let started = Instant::now();
    loop {
        let wait = shared
            .job_time
            .lock()
            .map(|time| *time)
            .unwrap_or(FIRST_JOB_WAIT);
        shared.pause(wait.max(SHORTEST_JOB_WAIT)).await?;
        let read = match shared.client.bulk_batches(job_id).await {
            Ok(batches) => {
                shared.answered();
                let answered: HashSet<&str> = batches
                    .items
                    .iter()
                    .filter_map(|item| item.client_ref.as_deref())
                    .collect();
                let every_ref = refs.keys().all(|r| answered.contains(r.as_str()));
                let final_now = every_ref
                    || (batches.all_listed_complete()
                        && shared
                            .client
                            .bulk_job(job_id)
                            .await
                            .is_ok_and(|job| job.is_complete()));
                Ok(final_now.then_some(batches.items))
            }
            Err(err) => Err(err),
        };
        match read {
            Ok(Some(items)) => {
                if let Ok(mut time) = shared.job_time.lock() {
                    *time = started.elapsed().clamp(SHORTEST_JOB_WAIT, LONGEST_JOB);
                }
                return Ok(Some(items));
            }
            Ok(None) => {}
            Err(err) => match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => return Err(Halt::Stop(SendStop::ApiFatal(err))),
                RetryAction::NeverSent => shared.unless_unreachable(&err)?,
                // The job is unknown (404) or its reads refused: its records are looked up.
                RetryAction::FailRow => {
                    shared.answered();
                    tracing::warn!(error = %err, job_id, "a bulk job's results cannot be read");
                    return Ok(None);
                }
                _ => shared.answered(),
            },
        }
        if started.elapsed() >= LONGEST_JOB {
            return Ok(None);
        }
    }
}
