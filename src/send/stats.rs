//! The send phase's running figures: plain atomic counters the workers bump and anyone may read
//! (`progress` renders them, the command sums them up, `bench` reports them).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::checkpoint::RowState;

/// Counters of the send phase, bumped by the workers.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Rows with work when the phase started.
    pub total: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Rows left pending behind a transient failure earlier in their conversation.
    pub held: AtomicU64,
    /// Rows whose unknown outcome a lookup by externalId settled as created.
    pub reconciled: AtomicU64,
    /// Creates whose outcome was unknown (5xx, timeout, lost connection, unreadable success).
    pub unknown: AtomicU64,
    /// Lookups by externalId made (reconciliation, the route's proof, the re-import guard).
    pub lookups: AtomicU64,
    /// Of those, lookups made early ([`SendOptions::early_lookup`](super::SendOptions) after the
    /// answer), before the settle delay is over.
    pub early_lookups: AtomicU64,
    /// Early lookups that found the row, settling it without the full delay.
    pub early_hits: AtomicU64,
    /// Pages of a conversation's messages read to settle a row whose externalId the lookup
    /// found only in another conversation.
    pub conversation_reads: AtomicU64,
    /// Conversations waiting out the settle delay before a lookup.
    pub settling: AtomicU64,
    /// Conversations waiting for the lookup route to be proven.
    pub awaiting_route: AtomicU64,
    /// Bulk jobs posted.
    pub bulk_jobs: AtomicU64,
    /// Bulk jobs posted and not yet answered.
    pub bulk_jobs_in_flight: AtomicI64,
    /// The most bulk jobs in flight at once so far.
    pub bulk_jobs_most_in_flight: AtomicU64,
    /// Results reads beyond the first per job.
    pub bulk_polls: AtomicU64,
    /// Rows created by bulk jobs.
    pub bulk_created: AtomicU64,
    /// Rows waiting out a backoff before their next try.
    pub retrying: AtomicI64,
}

impl SendStats {
    pub fn with_total(total: u64) -> Arc<SendStats> {
        let stats = SendStats::default();
        stats.total.store(total, Ordering::Relaxed);
        Arc::new(stats)
    }

    /// Counts a settled row; rows sent back to pending or left `sending` are not settled.
    pub fn record(&self, state: RowState) {
        match state {
            RowState::Succeeded => self.succeeded.fetch_add(1, Ordering::Relaxed),
            RowState::Failed => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    pub fn add_held(&self, rows: u64) {
        self.held.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn add_reconciled(&self, rows: u64) {
        self.reconciled.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn add_unknown(&self) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_waiting(&self, settling: usize, awaiting_route: usize) {
        self.settling.store(settling as u64, Ordering::Relaxed);
        self.awaiting_route
            .store(awaiting_route as u64, Ordering::Relaxed);
    }

    /// A bulk job posted (`+1`) or done (`-1`).
    pub fn add_bulk_job(&self, delta: i64) {
        if delta > 0 {
            self.bulk_jobs.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.bulk_jobs_in_flight.fetch_add(delta, Ordering::Relaxed) + delta;
        self.bulk_jobs_most_in_flight
            .fetch_max(u64::try_from(now).unwrap_or(0), Ordering::Relaxed);
    }

    /// Counts rows created by bulk jobs; returns the count so far, this one included.
    pub fn bulk_created(&self, rows: u64) -> u64 {
        self.bulk_created.fetch_add(rows, Ordering::Relaxed) + rows
    }

    pub fn add_bulk_poll(&self) {
        self.bulk_polls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_lookup(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_early_lookup(&self) {
        self.early_lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_early_hit(&self) {
        self.early_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_conversation_read(&self) {
        self.conversation_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry_waits(&self, delta: i64) {
        self.retrying.fetch_add(delta, Ordering::Relaxed);
    }

    /// Rows whose fate this run has settled.
    pub fn done(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}
