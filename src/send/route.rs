//! Whether the externalId lookup route can be trusted to say "not found".
//!
//! A 404 from a route that does not exist looks exactly like "no such message", and resending on
//! that answer duplicates every message whose outcome was unknown. So a 404 is trusted only once
//! the route has found a message known to exist (one this job created), by its externalId, with
//! the same id. A 200 with empty `data` is an answer from a working route and needs no proof.
//! The proof ([`prove`]) runs as a task of its own, started on the first message known to exist.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::client::LookupAnswer;
use crate::retry::{RequestKind, RetryAction};

use super::control::Halt;
use super::Shared;

const UNPROVEN: u8 = 0;
const PROVING: u8 = 1;
const PROVEN: u8 = 2;
const BROKEN: u8 = 3;

pub use crate::checkpoint::KnownMessage;

/// The lookup route's standing for this run, shared by every lane.
#[derive(Debug, Default)]
pub struct RouteProof {
    state: AtomicU8,
    /// The proof's task, when one runs: it has no durable effect, so it is aborted at the end.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RouteProof {
    /// Keeps the proof's task, to end it with the run.
    pub fn keep_proof(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut slot) = self.task.lock() {
            *slot = Some(task);
        }
    }

    /// Aborts the proof's task, if one runs, and waits until it is gone.
    pub async fn end_proof(&self) {
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn is_proven(&self) -> bool {
        self.state.load(Ordering::Acquire) == PROVEN
    }

    pub fn is_proving(&self) -> bool {
        self.state.load(Ordering::Acquire) == PROVING
    }

    pub fn is_broken(&self) -> bool {
        self.state.load(Ordering::Acquire) == BROKEN
    }

    /// Claims the one proof attempt; false when one is under way or the question is settled.
    pub fn begin(&self) -> bool {
        self.state
            .compare_exchange(UNPROVEN, PROVING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The route found a message known to exist: its 404s mean "not found" from now on.
    pub fn proven(&self) {
        self.state.store(PROVEN, Ordering::Release);
    }

    /// The route did not find a message known to exist.
    pub fn broken(&self) {
        let _ = self
            .state
            .compare_exchange(PROVING, BROKEN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The proof could not finish (the run is stopping, the API did not answer): unproven again.
    pub fn abandon(&self) {
        let _ = self
            .state
            .compare_exchange(PROVING, UNPROVEN, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// How many times the proof looks the known message up before calling the route broken, and
/// the wait between tries (an index may lag a fresh write).
const PROOF_TRIES: u32 = 3;

/// Looks a message known to exist up by its externalId: it must come back, with the same id, or
/// a message with the same externalId must.
pub async fn prove(shared: &Shared, known: KnownMessage) {
    let mut misses = 0;
    let mut errors = 0u32;
    let verdict = loop {
        if shared.control.stopping() {
            break None;
        }
        shared.stats().add_lookup();
        let answer = shared.client.find_by_external_id(&known.external_id).await;
        shared.control.observe(&answer);
        match answer {
            // The known message, or another one under its externalId: another system may have
            // used the same externalId, and a lookup that answers its message first still
            // shows the route finds messages by externalId.
            Ok(LookupAnswer::Found(found))
                if found.iter().any(|message| {
                    message.id == known.message_id
                        || message.external_id.as_deref() == Some(known.external_id.as_str())
                }) =>
            {
                break Some(Ok(()));
            }
            Ok(_) => {
                misses += 1;
                if misses >= PROOF_TRIES {
                    break Some(Err(format!(
                        "the lookup route does not work here: GET /v1/messages/externalId=… (and \
                         externalid=…) did not find message {} (line {}, externalId {:?}), which \
                         this job created, after {PROOF_TRIES} tries. Without a working lookup an \
                         unknown outcome cannot be settled, so nothing more was sent; every row \
                         is resumable. Check the key's org.permission.message.read role and the \
                         base URL, then `resume`",
                        known.message_id, known.line, known.external_id
                    )));
                }
            }
            Err(err) => match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => {
                    shared.control.halt(Halt::Api(err));
                    break None;
                }
                RetryAction::RateLimited | RetryAction::NeverSent => {}
                _ => {
                    errors += 1;
                    if errors >= shared.options.retry.max_attempts {
                        break None;
                    }
                }
            },
        }
        let pause = shared.options.settle_delay.min(Duration::from_secs(10));
        tokio::select! {
            () = tokio::time::sleep(pause.max(Duration::from_millis(100))) => {}
            () = shared.control.stop().cancelled() => {}
        }
    };
    match verdict {
        Some(Ok(())) => shared.route.proven(),
        Some(Err(reason)) => {
            shared.route.broken();
            if !shared.route.is_proven() {
                shared.control.halt(Halt::RouteUnproven(reason));
            }
        }
        None => shared.route.abandon(),
    }
    shared.board.wake();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_proof_at_a_time_and_a_found_message_wins() {
        let route = RouteProof::default();
        assert!(!route.is_proven());
        assert!(route.begin());
        assert!(!route.begin(), "a second proof while one runs");
        route.abandon();
        assert!(route.begin(), "abandoned proofs can be tried again");
        route.broken();
        assert!(route.is_broken());
        assert!(!route.begin());
        // A lookup that finds the row's own message proves the route whatever came before.
        route.proven();
        assert!(route.is_proven());
        route.broken();
        assert!(route.is_proven(), "broken only replaces a proof under way");
    }
}
