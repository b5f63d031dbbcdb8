//! How bulk jobs behave ([`BulkConfig`]) and the dice one job draws when it is created
//! ([`JobDice`]): always the same count of draws per job and per item, whatever the switches,
//! so that the same seed and the same requests give the same jobs.
//!
//! Part of the state: imports only `SandboxError`; never a route module.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::MAX_BULK_ITEMS;
use crate::sandbox::SandboxError;

/// The longest processing delay (and jitter) a job may be given.
pub const MAX_BULK_DELAY: Duration = Duration::from_secs(600);
/// The statuses `item_error` may draw: Kustomer's permanent item errors, 429 (refused before
/// processing) and two 5xx (refused here before storing; see `item_stored_error` for a 500
/// after storing).
pub const BULK_ITEM_ERROR_STATUSES: [u16; 7] = [400, 404, 409, 422, 429, 500, 503];
/// `BulkConfig::delay` unless told otherwise.
pub const DEFAULT_BULK_DELAY: Duration = Duration::from_millis(200);
/// `BulkConfig::jitter` unless told otherwise.
pub const DEFAULT_BULK_JITTER: Duration = Duration::from_millis(100);
/// `BulkConfig::batch_items` unless told otherwise: a full job of 100 items has four batches.
pub const DEFAULT_BULK_BATCH_ITEMS: usize = 25;
/// `BulkConfig::slow_factor` unless told otherwise.
pub const DEFAULT_BULK_SLOW_FACTOR: u32 = 10;
/// The largest `BulkConfig::slow_factor`.
pub const MAX_BULK_SLOW_FACTOR: u32 = 100;

/// How bulk jobs behave. Probabilities are in 0..=1.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkConfig {
    /// Processing time of a job (queued for the first half, running for the second), and its
    /// uniform jitter (+/-).
    pub delay: Duration,
    pub jitter: Duration,
    /// Items per batch (1 to 100): a job is split into batches of this many items, in
    /// processing order, that complete one after another while the job runs.
    pub batch_items: usize,
    /// Process a job's items in array order instead of a random order.
    pub in_order: bool,
    /// Probability that a job is held back until a job created after it has completed, so later
    /// jobs finish first (a held-back job with no later job to wait for goes after
    /// [`BulkConfig::held_back_limit`]).
    pub out_of_order: f64,
    /// Probability that an item fails with a status drawn from `item_error_statuses`, before
    /// anything is stored (whatever the status: a 429 is refused before processing, and the
    /// 500 and 503 drawn here store nothing either).
    pub item_error: f64,
    /// Statuses of injected item errors, each one of [`BULK_ITEM_ERROR_STATUSES`]; not empty.
    pub item_error_statuses: Vec<u16>,
    /// Probability that an item is stored and then reported as error 500.
    pub item_stored_error: f64,
    /// Probability that a job takes `slow_factor` times its drawn processing time.
    pub slow_jobs: f64,
    /// 1 to [`MAX_BULK_SLOW_FACTOR`].
    pub slow_factor: u32,
    /// Probability that one batch of a job (drawn uniformly) stays `scheduled` forever: its
    /// items are never processed, the job stays `running`.
    pub never_complete: f64,
    /// Probability that the first batch of a job to complete also lists a result for a
    /// `_clientRef` that was never sent (created, with an id no message has).
    pub unknown_ref: f64,
    /// Probability that one item of a job (drawn uniformly) is listed twice: its own result,
    /// then a contradicting one under the same `_clientRef` (created → error 400; error →
    /// created with an id no message has).
    pub duplicate_ref: f64,
    /// Probability that a read of a job or its batches is answered 429 (Retry-After and rate
    /// headers as for the org limit).
    pub read_429: f64,
    /// Probability that a read of a job or its batches closes the connection without an answer.
    pub read_drop: f64,
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

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            delay: DEFAULT_BULK_DELAY,
            jitter: DEFAULT_BULK_JITTER,
            batch_items: DEFAULT_BULK_BATCH_ITEMS,
            in_order: false,
            out_of_order: 0.0,
            item_error: 0.0,
            item_error_statuses: BULK_ITEM_ERROR_STATUSES.to_vec(),
            item_stored_error: 0.0,
            slow_jobs: 0.0,
            slow_factor: DEFAULT_BULK_SLOW_FACTOR,
            never_complete: 0.0,
            unknown_ref: 0.0,
            duplicate_ref: 0.0,
            read_429: 0.0,
            read_drop: 0.0,
            drop_after_create: 0.0,
            bare_batches: false,
            reject_invalid: false,
            answer_200: false,
        }
    }
}

/// What the dice decided for one job when it was created.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobDice {
    pub drop_answer: bool,
    pub held_back: bool,
    /// Its processing time, slow factor applied.
    pub delay: Duration,
    pub slow: bool,
    /// Item indexes (array order) in processing order.
    pub order: Vec<usize>,
    /// Per item (array order): the status of an injected error, if any.
    pub item_errors: Vec<Option<u16>>,
    /// Per item (array order): stored, then reported as error 500.
    pub stored_errors: Vec<bool>,
    /// The batch (index in processing order) that never completes.
    pub stuck_batch: Option<usize>,
    /// The first batch to complete also lists a `_clientRef` never sent.
    pub unknown_ref: bool,
    /// The item (array order) listed twice with contradicting answers.
    pub duplicate_item: Option<usize>,
}

/// What the dice decided for one read of a job or its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFault {
    None,
    TooManyRequests,
    Drop,
}

impl BulkConfig {
    /// Rejects probabilities outside 0..=1, an empty or foreign status list, delays or jitter
    /// above ten minutes, batches of 0 or over 100 items and a slow factor outside 1..=100.
    pub(crate) fn check(&self) -> Result<(), SandboxError> {
        for (name, probability) in [
            ("bulk out_of_order", self.out_of_order),
            ("bulk item_error", self.item_error),
            ("bulk item_stored_error", self.item_stored_error),
            ("bulk slow_jobs", self.slow_jobs),
            ("bulk never_complete", self.never_complete),
            ("bulk unknown_ref", self.unknown_ref),
            ("bulk duplicate_ref", self.duplicate_ref),
            ("bulk read_429", self.read_429),
            ("bulk read_drop", self.read_drop),
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
        if !(1..=MAX_BULK_ITEMS).contains(&self.batch_items) {
            return Err(SandboxError::InvalidConfig(format!(
                "bulk batch items must be within 1..={MAX_BULK_ITEMS}, got {}",
                self.batch_items
            )));
        }
        if !(1..=MAX_BULK_SLOW_FACTOR).contains(&self.slow_factor) {
            return Err(SandboxError::InvalidConfig(format!(
                "bulk slow factor must be within 1..={MAX_BULK_SLOW_FACTOR}, got {}",
                self.slow_factor
            )));
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

    /// How many batches a job of `items` items is split into.
    pub(crate) fn batch_count(&self, items: usize) -> usize {
        items.div_ceil(self.batch_items.max(1))
    }

    /// A delay uniform in `delay ± jitter`, never below zero, from exactly one draw.
    pub(crate) fn draw_delay(&self, draw: f64) -> Duration {
        let low = self.delay.saturating_sub(self.jitter);
        let high = self.delay.saturating_add(self.jitter);
        low + (high - low).mul_f64(draw.clamp(0.0, 1.0))
    }

    /// The status of an injected item error for a uniform draw in 0..1.
    pub(crate) fn pick_status(&self, draw: f64) -> u16 {
        pick_index(self.item_error_statuses.len(), draw)
            .and_then(|index| self.item_error_statuses.get(index).copied())
            .unwrap_or(500)
    }

    /// Every die of one job of `items` items, always the same number of draws: drop the
    /// answer, hold back, delay, the shuffle, three per item (error, its status, stored then
    /// 500), then slow, never complete (and which batch), unknown ref, duplicate ref (and
    /// which item).
    pub(crate) fn roll(&self, rng: &mut StdRng, items: usize) -> JobDice {
        let drop_answer = rng.random::<f64>() < self.drop_after_create;
        let held_back = rng.random::<f64>() < self.out_of_order;
        let delay = self.draw_delay(rng.random());
        let mut order: Vec<usize> = (0..items).collect();
        order.shuffle(rng);
        if self.in_order {
            order.sort_unstable();
        }
        let mut item_errors = Vec::with_capacity(items);
        let mut stored_errors = Vec::with_capacity(items);
        for _ in 0..items {
            let hit: f64 = rng.random();
            let status: f64 = rng.random();
            let stored_error: f64 = rng.random();
            item_errors.push((hit < self.item_error).then(|| self.pick_status(status)));
            stored_errors.push(stored_error < self.item_stored_error);
        }
        let slow = rng.random::<f64>() < self.slow_jobs;
        let stuck = rng.random::<f64>() < self.never_complete;
        let stuck_draw: f64 = rng.random();
        let unknown_ref = rng.random::<f64>() < self.unknown_ref;
        let duplicate = rng.random::<f64>() < self.duplicate_ref;
        let duplicate_draw: f64 = rng.random();
        JobDice {
            drop_answer,
            held_back,
            delay: if slow {
                delay.saturating_mul(self.slow_factor)
            } else {
                delay
            },
            slow,
            order,
            item_errors,
            stored_errors,
            stuck_batch: stuck
                .then(|| pick_index(self.batch_count(items), stuck_draw))
                .flatten(),
            unknown_ref,
            duplicate_item: duplicate
                .then(|| pick_index(items, duplicate_draw))
                .flatten(),
        }
    }

    /// The fault of one read, from exactly two draws (429, then drop).
    pub(crate) fn roll_read(&self, rng: &mut StdRng) -> ReadFault {
        let too_many = rng.random::<f64>() < self.read_429;
        let drop = rng.random::<f64>() < self.read_drop;
        if too_many {
            ReadFault::TooManyRequests
        } else if drop {
            ReadFault::Drop
        } else {
            ReadFault::None
        }
    }
}

/// The index of `len` a uniform draw in 0..1 falls on; None when `len` is 0.
fn pick_index(len: usize, draw: f64) -> Option<usize> {
    let last = len.checked_sub(1)?;
    // Truncation is the point: the draw's share of the list, clamped for draw ~ 1.
    Some(((draw.clamp(0.0, 1.0) * len as f64) as usize).min(last))
}
