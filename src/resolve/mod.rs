//! The resolve phase, between staging and sending: each source ticket the input names becomes a
//! Kustomer conversation of the right customer, found or created exactly once.
//!
//! Per ticket: look the conversation up by externalId; found, it is used only when it belongs to
//! the customer the rows name (else its rows fail, nothing is posted into it); not found, the
//! customer is found (by externalId, then by email) or created, and the conversation created.
//! Every create is durably `sending` in the checkpoint before it leaves; an answer that may hide
//! a write (5xx, timeout, lost connection, unreadable 2xx) is settled by a lookup after the
//! settle delay before anything is resent, under the same [`RetryAction`] rules as messages. A
//! "not found" is trusted after an unknown outcome only from a route proven to find records
//! (it answered 200 once, or found a record this job resolved). Tickets run concurrently within
//! the shared throttle; a customer shared by several tickets is resolved once (one lock each).
//! In bulk mode the creates go in bulk jobs first (module `bulk`); what they leave unsettled is
//! resolved here, ticket by ticket, exactly as in single mode.

mod bodies;
mod bulk;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{
    now_ms, Checkpoint, CheckpointError, CustomerRecord, Entity, EntityState, ResolvedBy,
    TicketRecord,
};
use crate::client::{ApiClient, ApiError, EntityLookup, FoundConversation};
use crate::retry::{
    reconnect_delay, RequestKind, RetryAction, RetryPolicy, RetrySchedule, MAX_RATE_LIMITED_PER_ROW,
};
use crate::send::SendStop;

/// Error code of rows whose conversation could not be found or created.
pub const CONVERSATION_UNRESOLVED: &str = "conversation_unresolved";
/// Error code of rows whose ticket exists in Kustomer under another customer.
pub const CONVERSATION_OF_ANOTHER_CUSTOMER: &str = "conversation_of_another_customer";

/// How often, and how long apart at least, a create with an unknown outcome waits for a record
/// to prove its lookup route on before it is left unsettled.
const PROOF_TRIES: u32 = 10;
const PROOF_WAIT: Duration = Duration::from_millis(500);

/// Roles the resolve phase needs (permission-set names, then their legacy equivalents).
pub const RESOLVE_ROLES: [(&str, &str); 4] = [
    ("org.permission.customer.read", "org.user.customer.read"),
    ("org.permission.customer.create", "org.user.customer.write"),
    (
        "org.permission.conversation.read",
        "org.user.conversation.read",
    ),
    (
        "org.permission.conversation.create",
        "org.user.conversation.write",
    ),
];

/// The roles among [`RESOLVE_ROLES`] that a key's roles lack (none when the roles are unknown).
pub fn missing_roles(roles: Option<&[String]>) -> Vec<&'static str> {
    let Some(roles) = roles else {
        return Vec::new();
    };
    RESOLVE_ROLES
        .iter()
        .filter(|(role, legacy)| !roles.iter().any(|r| r == role || r == legacy))
        .map(|(role, _)| *role)
        .collect()
}

/// How the phase runs.
#[derive(Debug, Clone)]
pub struct ResolvePlan {
    pub checkpoint: PathBuf,
    /// Tickets worked on at once.
    pub workers: usize,
    pub retry: RetryPolicy,
    pub settle_delay: Duration,
    pub request_timeout: Duration,
    pub unreachable_after: Duration,
    /// The job's importedAt, stamped on everything created.
    pub imported_at: String,
    /// Send the conversation's createdAt (needs org.admin, like the messages' audit fields).
    pub audit_fields: bool,
    /// Bulk mode: customers and conversations to create go in bulk jobs of at most this many
    /// items (None: single creates).
    pub bulk_items: Option<usize>,
    /// How long a bulk job is taken to last until one is measured (`--job-seconds`): a job
    /// whose POST answer was lost is waited for four times this before its records are looked up.
    pub assumed_job: Duration,
}

/// What the phase did in this run, for the progress line and the summary.
#[derive(Debug, Default)]
pub struct ResolveCounters {
    pub tickets: AtomicU64,
    pub conversations_found: AtomicU64,
    pub conversations_created: AtomicU64,
    pub customers_found: AtomicU64,
    pub customers_created: AtomicU64,
    pub failed: AtomicU64,
    pub unknown: AtomicU64,
    pub lookups: AtomicU64,
}

impl ResolveCounters {
    pub fn describe(&self) -> String {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        format!(
            "resolved {} tickets: conversations {} found, {} created; customers {} found, {} \
             created; {} tickets failed; {} creates with an unknown outcome looked up; {} lookups \
             in all",
            get(&self.tickets),
            get(&self.conversations_found),
            get(&self.conversations_created),
            get(&self.customers_found),
            get(&self.customers_created),
            get(&self.failed),
            get(&self.unknown),
            get(&self.lookups)
        )
    }
}

/// Why one ticket, customer or request ended without a result.
#[derive(Debug)]
enum Halt {
    /// The run stops (key refused, checkpoint unwritable, API unreachable, interrupted).
    Stop(SendStop),
    /// This ticket or customer failed; the others go on.
    Fail {
        code: String,
        message: String,
        retryable: bool,
    },
}

impl From<CheckpointError> for Halt {
    fn from(err: CheckpointError) -> Halt {
        Halt::Stop(SendStop::Storage(err))
    }
}

/// The routes whose "not found" can be believed after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    CustomerByExternalId,
    CustomerByEmail,
    ConversationByExternalId,
}

struct Shared {
    plan: ResolvePlan,
    client: Arc<ApiClient>,
    checkpoint: Mutex<Checkpoint>,
    counters: Arc<ResolveCounters>,
    /// One lock per customer (per email when it has one): tickets of one customer, and customers
    /// sharing an email, wait for the first to resolve it.
    customers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    proven: [AtomicBool; 3],
    stop: Mutex<Option<SendStop>>,
    cancel: CancellationToken,
    /// When the API last answered anything (for the unreachable watchdog).
    last_answer: Mutex<Instant>,
    /// How long the last bulk job took to complete: the wait before reading the next one.
    job_time: Mutex<Duration>,
}

/// Resolves every ticket with waiting rows. `Completed` when the phase ran to its end (some
/// tickets may have failed: their rows say why); any other stop ends the run.
pub async fn resolve_all(
    plan: &ResolvePlan,
    client: Arc<ApiClient>,
    counters: Arc<ResolveCounters>,
    interrupt: CancellationToken,
) -> Result<SendStop, CheckpointError> {
    let mut checkpoint = Checkpoint::open_existing(&plan.checkpoint)?;
    checkpoint.durable_against_power_loss()?;
    checkpoint.prepare_resolution()?;
    let tickets = checkpoint.tickets_to_resolve()?;
    if tickets.is_empty() {
        return Ok(SendStop::Completed);
    }
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        client,
        checkpoint: Mutex::new(checkpoint),
        counters,
        customers: Mutex::new(HashMap::new()),
        proven: Default::default(),
        stop: Mutex::new(None),
        cancel: interrupt.child_token(),
        last_answer: Mutex::new(Instant::now()),
        job_time: Mutex::new(bulk::FIRST_JOB_WAIT),
    });
    let tickets = match plan.bulk_items {
        Some(items) => match bulk::create_in_bulk(&shared, tickets, items).await {
            Ok(()) => shared
                .write(|cp| cp.tickets_to_resolve())
                .unwrap_or_default(),
            Err(halt) => {
                if let Halt::Stop(stop) = halt {
                    shared.halt(stop);
                }
                Vec::new()
            }
        },
        None => tickets,
    };
    concurrently(&shared, tickets, |shared, ticket| async move {
        resolve_ticket(&shared, ticket).await;
    })
    .await;
    let stopped = shared
        .stop
        .lock()
        .map(|mut stop| stop.take())
        .ok()
        .flatten();
    Ok(match stopped {
        Some(stop) => stop,
        None if interrupt.is_cancelled() => SendStop::Interrupted,
        None => SendStop::Completed,
    })
}

impl Shared {
    fn halt(&self, stop: SendStop) {
        if let Ok(mut slot) = self.stop.lock() {
            slot.get_or_insert(stop);
        }
        self.cancel.cancel();
    }

    /// Runs a checkpoint write off the async workers' hot path.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut Checkpoint) -> Result<T, CheckpointError>,
    ) -> Result<T, Halt> {
        let result = tokio::task::block_in_place(|| match self.checkpoint.lock() {
            Ok(mut checkpoint) => op(&mut checkpoint),
            Err(_) => Err(CheckpointError::WriterGone {
                detail: "the resolve phase's checkpoint lock was poisoned".into(),
            }),
        });
        result.map_err(Halt::from)
    }

    fn proven(&self, route: Route) -> bool {
        self.proven[route as usize].load(Ordering::Relaxed)
    }

    fn answered(&self) {
        if let Ok(mut at) = self.last_answer.lock() {
            *at = Instant::now();
        }
    }

    /// Sleeps, unless the run stops first.
    async fn pause(&self, wait: Duration) -> Result<(), Halt> {
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            () = self.cancel.cancelled() => Err(Halt::Stop(SendStop::Interrupted)),
        }
    }

    /// One lookup, retried as lookups are (reads again after 5xx, timeouts and 429s).
    async fn lookup<T, F, Fut>(&self, route: Route, ask: F) -> Result<EntityLookup<T>, Halt>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<EntityLookup<T>, ApiError>>,
    {
        let mut schedule = RetrySchedule::new(self.plan.retry);
        let mut refusals = Refusals::default();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Halt::Stop(SendStop::Interrupted));
            }
            self.counters.lookups.fetch_add(1, Ordering::Relaxed);
            let err = match ask().await {
                Ok(answer) => {
                    self.answered();
                    if !matches!(answer, EntityLookup::Missing) {
                        self.proven[route as usize].store(true, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                Err(err) => err,
            };
            match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => return Err(Halt::Stop(SendStop::ApiFatal(err))),
                action @ (RetryAction::RateLimited | RetryAction::NeverSent) => {
                    self.wait_to_resend(action, &err, &mut refusals).await?;
                }
                _ => {
                    self.answered();
                    match schedule.next_delay(None) {
                        Some(delay) => self.pause(delay).await?,
                        None => return Err(transient(&err)),
                    }
                }
            }
        }
    }

    /// Before sending again what the API refused unprocessed (429), or what never left (the
    /// connection did not open): the throttle's pause, or a reconnect backoff under the
    /// unreachable watchdog. Both bounded: 429s per request, and the watchdog.
    async fn wait_to_resend(
        &self,
        action: RetryAction,
        err: &ApiError,
        refusals: &mut Refusals,
    ) -> Result<(), Halt> {
        if action == RetryAction::RateLimited {
            self.answered();
            refusals.rate_limited += 1;
            if refusals.rate_limited > MAX_RATE_LIMITED_PER_ROW {
                return Err(transient(err));
            }
            return Ok(());
        }
        refusals.never_sent += 1;
        self.unless_unreachable(err)?;
        self.pause(reconnect_delay(refusals.never_sent)).await
    }

    fn unless_unreachable(&self, err: &ApiError) -> Result<(), Halt> {
        let since = self
            .last_answer
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default();
        if since > self.plan.unreachable_after {
            return Err(Halt::Stop(SendStop::Unreachable(format!(
                "no answer for {}s ({err})",
                since.as_secs()
            ))));
        }
        Ok(())
    }

    /// Creates one customer or conversation exactly once: durably `sending` before each
    /// request, an unknown outcome settled by `settle` (a lookup) after the settle delay before
    /// any resend. Returns the new id.
    async fn create_once<C, CFut, S, SFut>(
        &self,
        entity: Entity,
        key: &str,
        route: Route,
        create: C,
        settle: S,
    ) -> Result<String, Halt>
    where
        C: Fn() -> CFut,
        CFut: std::future::Future<Output = Result<String, ApiError>>,
        S: Fn() -> SFut,
        SFut: std::future::Future<Output = Result<Option<String>, Halt>>,
    {
        let mut schedule = RetrySchedule::new(self.plan.retry);
        let mut refusals = Refusals::default();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Halt::Stop(SendStop::Interrupted));
            }
            self.write(|cp| cp.entity_sending(entity, key))?;
            let err = match create().await {
                Ok(id) => {
                    self.answered();
                    return Ok(id);
                }
                Err(err) => err,
            };
            match err.retry_action(RequestKind::Create) {
                RetryAction::StopRun => return Err(Halt::Stop(SendStop::ApiFatal(err))),
                RetryAction::FailRow => {
                    self.answered();
                    return Err(Halt::Fail {
                        code: err.code(),
                        message: err.to_string(),
                        retryable: false,
                    });
                }
                action @ (RetryAction::RateLimited | RetryAction::NeverSent) => {
                    self.wait_to_resend(action, &err, &mut refusals).await?;
                }
                RetryAction::OutcomeUnknown | RetryAction::RetryRead => {
                    self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    self.pause(self.plan.settle_delay).await?;
                    if let Some(id) = settle().await? {
                        return Ok(id);
                    }
                    self.believe_not_found(entity, route, &err).await?;
                    if !schedule.use_attempt() {
                        return Err(Halt::Fail {
                            code: crate::send::OUTCOME_UNKNOWN.into(),
                            message: format!(
                                "{err}; not found by lookup after {} attempts",
                                schedule.attempts()
                            ),
                            retryable: true,
                        });
                    }
                }
            }
        }
    }

    /// After an unknown outcome and a lookup that found nothing: resending is safe only if the
    /// route's "not found" is believable. An unproven route is proven on a record this job
    /// resolved; without one, the create stays unsettled (failed, looked up again on resume).
    async fn believe_not_found(
        &self,
        entity: Entity,
        route: Route,
        cause: &ApiError,
    ) -> Result<(), Halt> {
        if self.proven(route) {
            return Ok(());
        }
        let by_email = route == Route::CustomerByEmail;
        // Early in a run nothing may be resolved yet to prove the route on: other tickets may
        // resolve one meanwhile, so wait a little, a bounded number of times.
        for _ in 0..PROOF_TRIES {
            let known = self.write(|cp| cp.known_resolved(entity, by_email))?;
            let Some((source, id)) = known else {
                self.pause(self.plan.settle_delay.max(PROOF_WAIT)).await?;
                continue;
            };
            let lowered = source.to_lowercase();
            let found = match route {
                Route::CustomerByExternalId => self
                    .lookup(route, || self.client.find_customer_by_external_id(&source))
                    .await?
                    .found()
                    .map(|c| c.id),
                Route::CustomerByEmail => self
                    .lookup(route, || self.client.find_customer_by_email(&lowered))
                    .await?
                    .found()
                    .map(|c| c.id),
                Route::ConversationByExternalId => self
                    .lookup(route, || {
                        self.client.find_conversation_by_external_id(&source)
                    })
                    .await?
                    .found()
                    .map(|c| c.id),
            };
            if found.as_deref() == Some(id.as_str()) {
                self.proven[route as usize].store(true, Ordering::Relaxed);
                return Ok(());
            }
            break;
        }
        Err(Halt::Fail {
            code: crate::send::OUTCOME_UNKNOWN.into(),
            message: format!(
                "{cause}; the lookup answered 404, and the route is not proven to find records \
                 (nothing this job resolved could be found by it), so the create is not resent"
            ),
            retryable: true,
        })
    }
}

/// Answers of one request that sent nothing through: 429s, and connections that never opened.
#[derive(Debug, Default)]
struct Refusals {
    rate_limited: u32,
    never_sent: u32,
}

fn transient(err: &ApiError) -> Halt {
    Halt::Fail {
        code: err.code(),
        message: err.to_string(),
        retryable: true,
    }
}

/// Runs `work` on every item, at most `workers` at once, until the run stops. Returns what
/// each finished one gave.
async fn concurrently<T, R, F, Fut>(shared: &Arc<Shared>, items: Vec<T>, work: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<Shared>, T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(shared.plan.workers.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for item in items {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        if shared.cancel.is_cancelled() {
            break;
        }
        let task = work(Arc::clone(shared), item);
        tasks.spawn(async move {
            let _slot = slot;
            task.await
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => done.push(result),
            Err(err) => {
                tracing::error!(error = %err, "a resolve task failed");
                shared.halt(SendStop::Refused(format!(
                    "internal error in the resolve phase ({err}); every state is in the \
                     checkpoint: resume continues safely"
                )));
            }
        }
    }
    done
}

/// Works one ticket to its end: resolved, failed (its rows with it), or stopped with the run.
async fn resolve_ticket(shared: &Shared, ticket: TicketRecord) {
    let result = resolve_conversation(shared, &ticket).await;
    finish_ticket(shared, &ticket.key, result);
}

/// Records how a ticket ended: its conversation and how it was resolved, or why not.
fn finish_ticket(shared: &Shared, key: &str, result: Result<(String, ResolvedBy), Halt>) {
    match result {
        Ok((id, how)) => {
            let recorded =
                shared.write(|cp| cp.entity_resolved(Entity::Conversation, key, &id, how));
            if let Err(halt) = recorded {
                stop_or_fail(shared, key, halt);
                return;
            }
            shared.counters.tickets.fetch_add(1, Ordering::Relaxed);
            let counter = match how {
                ResolvedBy::Created => &shared.counters.conversations_created,
                _ => &shared.counters.conversations_found,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(halt) => stop_or_fail(shared, key, halt),
    }
}

fn stop_or_fail(shared: &Shared, key: &str, halt: Halt) {
    match halt {
        Halt::Stop(stop) => shared.halt(stop),
        Halt::Fail {
            code,
            message,
            retryable,
        } => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            let code = if code == CONVERSATION_OF_ANOTHER_CUSTOMER {
                code
            } else {
                CONVERSATION_UNRESOLVED.to_string()
            };
            let message = crate::client::truncate(
                &format!("ticket {key:?} could not be resolved: {message}"),
                crate::client::MAX_QUOTED_ERROR_CHARS,
            );
            if let Err(Halt::Stop(stop)) = shared
                .write(|cp| cp.entity_failed(Entity::Conversation, key, &code, &message, retryable))
            {
                shared.halt(stop);
            }
        }
    }
}

async fn resolve_conversation(
    shared: &Shared,
    ticket: &TicketRecord,
) -> Result<(String, ResolvedBy), Halt> {
    let route = Route::ConversationByExternalId;
    let find = || shared.client.find_conversation_by_external_id(&ticket.key);
    // A create an earlier run may have sent: wait until it would have landed, then look.
    if ticket.state == EntityState::Sending {
        shared
            .pause(wait_after(shared, ticket.last_attempt_ms))
            .await?;
    }
    let existing = shared.lookup(route, find).await?;
    if let EntityLookup::Found(found) = existing {
        return use_found(shared, ticket, found).await;
    }
    // An earlier create may have stored it: "not found" must come from a proven route.
    if ticket.last_attempt_ms.is_some() && matches!(existing, EntityLookup::Missing) {
        let cause = ApiError::NotSent;
        shared
            .believe_not_found(Entity::Conversation, route, &cause)
            .await?;
    }
    let customer = resolve_customer(shared, &ticket.customer_key, true)
        .await?
        .ok_or_else(|| Halt::Fail {
            code: CONVERSATION_UNRESOLVED.into(),
            message: "its customer could not be resolved".into(),
            retryable: true,
        })?;
    let body = bodies::conversation(ticket, &customer, &shared.plan);
    let id = shared
        .create_once(
            Entity::Conversation,
            &ticket.key,
            route,
            || async { shared.client.create_conversation(&body).await.0 },
            || async {
                let found = shared.lookup(route, find).await?.found();
                match found {
                    Some(found) if found.customer_id.as_deref() == Some(customer.as_str()) => {
                        Ok(Some(found.id))
                    }
                    Some(found) => Err(Halt::Fail {
                        code: CONVERSATION_OF_ANOTHER_CUSTOMER.into(),
                        message: format!(
                            "after an unknown outcome, the conversation found by externalId ({}) \
                             belongs to another customer",
                            found.id
                        ),
                        retryable: false,
                    }),
                    None => Ok(None),
                }
            },
        )
        .await?;
    Ok((id, ResolvedBy::Created))
}

/// A conversation found by the ticket's externalId: ours if this job created it (the customer
/// is then ours too), else its customer must be the one the rows name.
async fn use_found(
    shared: &Shared,
    ticket: &TicketRecord,
    found: FoundConversation,
) -> Result<(String, ResolvedBy), Halt> {
    let customer = resolve_customer(shared, &ticket.customer_key, false).await?;
    match (found.customer_id.as_deref(), customer.as_deref()) {
        (Some(owner), Some(ours)) if owner == ours => Ok((
            found.id,
            if ticket.last_attempt_ms.is_some() {
                ResolvedBy::Created
            } else {
                ResolvedBy::FoundByExternalId
            },
        )),
        (owner, ours) => {
            Err(Halt::Fail {
                code: CONVERSATION_OF_ANOTHER_CUSTOMER.into(),
                message: format!(
                "Kustomer already has conversation {} with this externalId, and it belongs to {}, \
                 not to the customer the rows name ({}); nothing is posted into it",
                found.id,
                owner.map_or("an unnamed customer".to_string(), |id| format!("customer {id}")),
                ours.map_or("not in Kustomer".to_string(), |id| format!("customer {id}")),
            ),
                retryable: false,
            })
        }
    }
}

/// How long to wait before looking up a create an earlier run left `sending`.
fn wait_after(shared: &Shared, last_attempt_ms: Option<i64>) -> Duration {
    let since = last_attempt_ms
        .map(|at| u64::try_from(now_ms().saturating_sub(at)).unwrap_or(0))
        .map(Duration::from_millis)
        .unwrap_or_default();
    (shared.plan.request_timeout + shared.plan.settle_delay).saturating_sub(since)
}

/// The customer's Kustomer id: as recorded, else found (externalId, then email), else created
/// when `may_create`. `None`: not in Kustomer and not created.
async fn resolve_customer(
    shared: &Shared,
    key: &str,
    may_create: bool,
) -> Result<Option<String>, Halt> {
    let record = read_customer_record(shared, key)?;
    // Customers sharing an email are worked one after the other, so that one created for a
    // ticket is found by email for the next instead of being created twice.
    let lock_key = record.customer.email.as_ref().map_or_else(
        || key.to_string(),
        |email| format!("email:{}", email.to_lowercase()),
    );
    let lock = {
        let mut customers = shared.customers.lock().map_err(|_| {
            Halt::Stop(SendStop::Refused(
                "the resolve phase's customer locks were poisoned".into(),
            ))
        })?;
        Arc::clone(customers.entry(lock_key).or_default())
    };
    let _turn = lock.lock().await;
    let record = read_customer_record(shared, key)?;
    if let (EntityState::Resolved, Some(id)) = (record.state, &record.kustomer_id) {
        return Ok(Some(id.clone()));
    }
    if record.state == EntityState::Sending {
        shared
            .pause(wait_after(shared, record.last_attempt_ms))
            .await?;
    }
    let outcome = find_customer(shared, &record).await;
    let found = match outcome {
        Ok(found) => found,
        Err(halt) => return Err(customer_failed(shared, key, halt)),
    };
    if let Some((id, how)) = found {
        let how = if record.last_attempt_ms.is_some() {
            ResolvedBy::Created
        } else {
            how
        };
        shared.write(|cp| cp.entity_resolved(Entity::Customer, key, &id, how))?;
        let counter = match how {
            ResolvedBy::Created => &shared.counters.customers_created,
            _ => &shared.counters.customers_found,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return Ok(Some(id));
    }
    if !may_create {
        return Ok(None);
    }
    let route = customer_route(&record);
    if record.last_attempt_ms.is_some() {
        let cause = ApiError::NotSent;
        if let Err(halt) = shared
            .believe_not_found(Entity::Customer, route, &cause)
            .await
        {
            return Err(customer_failed(shared, key, halt));
        }
    }
    let body = bodies::customer(&record.customer, &shared.plan);
    let created = shared
        .create_once(
            Entity::Customer,
            key,
            route,
            || async { shared.client.create_customer(&body).await.0 },
            || async { Ok(find_customer(shared, &record).await?.map(|(id, _)| id)) },
        )
        .await;
    match created {
        Ok(id) => {
            shared
                .write(|cp| cp.entity_resolved(Entity::Customer, key, &id, ResolvedBy::Created))?;
            shared
                .counters
                .customers_created
                .fetch_add(1, Ordering::Relaxed);
            Ok(Some(id))
        }
        Err(halt) => Err(customer_failed(shared, key, halt)),
    }
}

fn read_customer_record(shared: &Shared, key: &str) -> Result<CustomerRecord, Halt> {
    shared
        .write(|cp| cp.customer_record(key))?
        .ok_or_else(|| Halt::Fail {
            code: CONVERSATION_UNRESOLVED.into(),
            message: format!("customer {key:?} is not recorded in the checkpoint"),
            retryable: false,
        })
}

/// Records a customer's failure (a stop passes through) and says why for its ticket.
fn customer_failed(shared: &Shared, key: &str, halt: Halt) -> Halt {
    match halt {
        Halt::Fail {
            code,
            message,
            retryable,
        } => {
            let message = format!("customer {key:?}: {message}");
            if let Err(stop) = shared
                .write(|cp| cp.entity_failed(Entity::Customer, key, &code, &message, retryable))
            {
                return stop;
            }
            Halt::Fail {
                code,
                message,
                retryable,
            }
        }
        stop => stop,
    }
}

fn customer_route(record: &CustomerRecord) -> Route {
    if record.customer.external_id.is_some() {
        Route::CustomerByExternalId
    } else {
        Route::CustomerByEmail
    }
}

/// Finds a customer by externalId, then by email (compared case-insensitively: the answer must
/// carry the email, or carry no emails at all).
async fn find_customer(
    shared: &Shared,
    record: &CustomerRecord,
) -> Result<Option<(String, ResolvedBy)>, Halt> {
    if let Some(external_id) = &record.customer.external_id {
        let found = shared
            .lookup(Route::CustomerByExternalId, || {
                shared.client.find_customer_by_external_id(external_id)
            })
            .await?
            .found();
        if let Some(found) = found {
            if found
                .external_id
                .as_deref()
                .is_none_or(|id| id == external_id)
            {
                return Ok(Some((found.id, ResolvedBy::FoundByExternalId)));
            }
        }
    }
    if let Some(email) = &record.customer.email {
        let wanted = email.to_lowercase();
        let found = shared
            .lookup(Route::CustomerByEmail, || {
                shared.client.find_customer_by_email(&wanted)
            })
            .await?
            .found();
        if let Some(found) = found {
            let same =
                found.emails.is_empty() || found.emails.iter().any(|e| e.to_lowercase() == wanted);
            if same {
                return Ok(Some((found.id, ResolvedBy::FoundByEmail)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_roles_accept_legacy_names_and_unknown_roles_pass() {
        let roles: Vec<String> = [
            "org.permission.customer.read",
            "org.user.customer.write",
            "org.permission.conversation.read",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            missing_roles(Some(&roles)),
            vec!["org.permission.conversation.create"]
        );
        assert!(missing_roles(None).is_empty());
        assert_eq!(missing_roles(Some(&[])).len(), 4);
    }
}
