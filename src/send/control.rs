//! The run's control, shared by every task of the send phase: the stop token, why the run was
//! stopped from inside, whether the API answers at all, and where warnings go.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::client::ApiError;

use super::events::{Events, SendEvent};

/// Why the run was stopped from inside.
pub enum Halt {
    Api(ApiError),
    AuditOverwritten(String),
    ErrorBudget { failed: u64, allowed: u64 },
    RouteUnproven(String),
    Unreachable(String),
}

/// Stop, halt, connectivity and events: what any part of the send phase may need to end the run
/// or say something, and nothing else.
pub struct Control {
    stop: CancellationToken,
    halt: Mutex<Option<Halt>>,
    connectivity: Connectivity,
    events: Events,
}

impl Control {
    /// A control stopped by `interrupt` (Ctrl-C) or from inside.
    pub fn new(interrupt: &CancellationToken, events: Events) -> Control {
        Control {
            stop: interrupt.child_token(),
            halt: Mutex::new(None),
            connectivity: Connectivity::default(),
            events,
        }
    }

    /// Cancelled when the run stops, for whatever reason.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Stops the run; the first reason given is the one reported.
    pub fn halt(&self, why: Halt) {
        if let Ok(mut halt) = self.halt.lock() {
            halt.get_or_insert(why);
        }
        self.stop.cancel();
    }

    /// Why the run was halted, if it was; taken once, at the end.
    pub fn take_halt(&self) -> Option<Halt> {
        self.halt.lock().ok().and_then(|mut halt| halt.take())
    }

    /// Notes whether a request reached the API.
    pub fn observe<T>(&self, result: &Result<T, ApiError>) {
        self.connectivity.observe(result);
    }

    /// How long the API has been unreachable, once that is longer than `limit`.
    pub fn unreachable_for(&self, limit: Duration) -> Option<Duration> {
        self.connectivity.unreachable_for(limit)
    }

    pub fn emit(&self, event: SendEvent) {
        self.events.emit(event);
    }
}

/// Tracks whether the API answers at all: a streak of connections that never opened, longer than
/// allowed, stops the run instead of failing rows one by one.
#[derive(Default)]
struct Connectivity {
    down_since: Mutex<Option<Instant>>,
}

impl Connectivity {
    fn observe<T>(&self, result: &Result<T, ApiError>) {
        let Ok(mut down_since) = self.down_since.lock() else {
            return;
        };
        match result {
            Err(ApiError::Connect { .. }) => {
                down_since.get_or_insert_with(Instant::now);
            }
            Err(ApiError::NotSent) => {}
            _ => *down_since = None,
        }
    }

    fn unreachable_for(&self, limit: Duration) -> Option<Duration> {
        let since = (*self.down_since.lock().ok()?)?;
        let down_for = since.elapsed();
        (down_for > limit).then_some(down_for)
    }
}
