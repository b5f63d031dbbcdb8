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
mod settle;
mod tickets;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::client::ApiClient;
use crate::retry::RetryPolicy;
use crate::send::SendStop;
use tickets::resolve_ticket;

/// Error code of rows whose conversation could not be found or created.
pub const CONVERSATION_UNRESOLVED: &str = "conversation_unresolved";
/// Error code of rows whose ticket exists in Kustomer under another customer.
pub const CONVERSATION_OF_ANOTHER_CUSTOMER: &str = "conversation_of_another_customer";

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
