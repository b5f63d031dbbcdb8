//! Whether the externalId lookup route can be trusted to say "not found".
//!
//! A 404 from a route that does not exist looks exactly like "no such message", and resending on
//! that answer duplicates every message whose outcome was unknown. So a 404 is trusted only once
//! the route has found a message known to exist (one this job created), by its externalId, with
//! the same id. A 200 with empty `data` is an answer from a working route and needs no proof.

use std::sync::atomic::{AtomicU8, Ordering};

const UNPROVEN: u8 = 0;
const PROVING: u8 = 1;
const PROVEN: u8 = 2;
const BROKEN: u8 = 3;

pub use crate::checkpoint::KnownMessage;

/// The lookup route's standing for this run, shared by every lane.
#[derive(Debug, Default)]
pub struct RouteProof {
    state: AtomicU8,
}

impl RouteProof {
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
