//! The counters behind `/_sandbox/stats` and the dumps of what is stored: what the state counts
//! per request, fault and lookup, and how it reports them.
//!
//! Part of the state (reads `World` through `Shared`); imports no route module.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::super::faults::OnceStored;
use super::super::{FaultCounts, LookupCounts, MessagesDump, SandboxStats};
use super::{LookupOutcome, Shared, Spelling};

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) requests_total: u64,
    pub(super) requests_by_status: BTreeMap<u16, u64>,
    pub(super) dropped_connections: u64,
    pub(super) duplicate_external_ids: u64,
    pub(super) faults: FaultCounts,
    pub(super) live_client: super::super::LiveClientStats,
    pub(super) injected_429: u64,
    pub(super) creates_by_conversation: HashMap<String, u64>,
    pub(super) lookups: LookupCounts,
    pub(super) seeded: u64,
    pub(super) redirect_hits: u64,
    pub(super) max_requests_in_a_window: u64,
    /// Shortest time from an unknown-outcome answer to the first lookup of its externalId.
    pub(super) lookup_after_unknown_outcome_min_ms: Option<u64>,
}

impl Shared {
    pub(crate) fn record_status(&self, status: u16) {
        *self
            .world()
            .counters
            .requests_by_status
            .entry(status)
            .or_insert(0) += 1;
    }

    /// Counts a fault of the once-stored draw that was acted upon (the message is stored); an
    /// answer that leaves the outcome unknown starts the clock of the message's first lookup.
    /// `external_id`: the message's, when the record is a message (the clock is for message
    /// lookups only).
    pub(crate) fn count_once_stored(&self, outcome: OnceStored, external_id: Option<&str>) {
        let mut world = self.world();
        if matches!(outcome, OnceStored::Drop | OnceStored::Error(_)) {
            if let Some(external_id) = external_id {
                world
                    .unknown_outcomes
                    .insert(external_id.to_owned(), Instant::now());
            }
        }
        let counters = &mut world.counters;
        let faults = &mut counters.faults;
        match outcome {
            OnceStored::Created => {}
            OnceStored::Drop => {
                faults.store_then_drop += 1;
                counters.dropped_connections += 1;
            }
            OnceStored::Error(_) => faults.store_then_error += 1,
            OnceStored::Slow => faults.slow_store += 1,
            OnceStored::Accepted => faults.accepted_202 += 1,
            OnceStored::WithoutId => faults.created_without_id += 1,
            OnceStored::Oversize => faults.oversize_body += 1,
        }
    }

    /// Counts a create request by the conversation id in its path.
    pub(crate) fn count_create(&self, conversation: &str) {
        *self
            .world()
            .counters
            .creates_by_conversation
            .entry(conversation.to_owned())
            .or_insert(0) += 1;
    }

    pub(crate) fn count_lookup(&self, spelling: Spelling, outcome: LookupOutcome) {
        let mut world = self.world();
        let lookups = &mut world.counters.lookups;
        let counts = match spelling {
            Spelling::Camel => &mut lookups.camel,
            Spelling::Lower => &mut lookups.lower,
        };
        let count = match outcome {
            LookupOutcome::Hit => &mut counts.hit,
            LookupOutcome::Miss => &mut counts.miss,
            LookupOutcome::NoRoute => &mut counts.no_route,
        };
        *count += 1;
    }

    /// Counts a `/v1` request answered with the configured redirect.
    pub(crate) fn count_redirected(&self) {
        let mut world = self.world();
        world.counters.requests_total += 1;
        world.counters.faults.redirected += 1;
    }

    /// Counts a connection a handler closes without answering (outside the create dice).
    pub(crate) fn count_dropped_connection(&self) {
        self.world().counters.dropped_connections += 1;
    }

    pub(crate) fn count_redirect_hit(&self) {
        self.world().counters.redirect_hits += 1;
    }

    pub(crate) fn stats(&self) -> SandboxStats {
        let world = self.world();
        let counters = &world.counters;
        SandboxStats {
            messages_stored: (world.messages.len() as u64).saturating_sub(counters.seeded),
            duplicate_external_ids: counters.duplicate_external_ids,
            requests_total: counters.requests_total,
            requests_by_status: counters
                .requests_by_status
                .iter()
                .map(|(status, count)| (status.to_string(), *count))
                .collect(),
            dropped_connections: counters.dropped_connections,
            max_concurrency: self.max_in_flight.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            faults_injected: FaultCounts {
                bulk: self.bulk.fault_counts(),
                ..counters.faults.clone()
            },
            live_client: counters.live_client,
            injected_429: counters.injected_429,
            creates: world.creates_seen,
            creates_by_conversation: counters
                .creates_by_conversation
                .iter()
                .map(|(conversation, count)| (conversation.clone(), *count))
                .collect(),
            lookups: counters.lookups.clone(),
            seeded: counters.seeded,
            redirect_hits: counters.redirect_hits,
            max_requests_in_a_window: counters.max_requests_in_a_window,
            lookup_after_unknown_outcome_min_ms: counters.lookup_after_unknown_outcome_min_ms,
            bulk: self.bulk.stats(),
            customers: world.directory.customer_stats(),
            conversations: world.directory.conversation_stats(),
        }
    }

    pub(crate) fn messages(&self) -> MessagesDump {
        let world = self.world();
        let conversations = world
            .by_conversation
            .iter()
            .map(|(conversation, indexes)| {
                let listed = indexes
                    .iter()
                    .filter_map(|index| world.messages.get(*index))
                    .map(|message| message.summary())
                    .collect();
                (conversation.clone(), listed)
            })
            .collect();
        MessagesDump { conversations }
    }
}
