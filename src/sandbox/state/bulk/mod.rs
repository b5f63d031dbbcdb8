//! The bulk jobs store: every job created by `POST /v1/messages/bulk`, its dice drawn at creation
//! (`config`), its batches and per-item results and the documents they answer in (`jobs`).
//!
//! Part of the state: imports only other state and sandbox-wide types, never a route module
//! (the routes in `sandbox/bulk` import it).

mod config;
mod jobs;

pub use config::{
    BulkConfig, BULK_ITEM_ERROR_STATUSES, DEFAULT_BULK_BATCH_ITEMS, DEFAULT_BULK_DELAY,
    DEFAULT_BULK_JITTER, DEFAULT_BULK_SLOW_FACTOR, MAX_BULK_DELAY, MAX_BULK_SLOW_FACTOR,
};
pub(crate) use config::{JobDice, ReadFault};
pub(crate) use jobs::BulkState;
pub use jobs::{BulkFaultCounts, BulkStats};
pub(crate) use jobs::{ItemError, ItemFate, ItemResult};

/// The most message bodies one bulk request may carry.
pub const MAX_BULK_ITEMS: usize = 100;
