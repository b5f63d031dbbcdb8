//! Fixed rate-limit windows counted from server start, shared by the org and per-customer limits,
//! and the `x-ratelimit-*` values one response carries.
//!
//! Plain time arithmetic: imports nothing of the sandbox.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Fixed windows counted from server start, shared by the org and per-customer limits.
pub(crate) struct Clock {
    started: Instant,
    started_wall: SystemTime,
    window: Duration,
}

impl Clock {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            window,
        }
    }

    pub(super) fn window_index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started).as_nanos();
        // The window is checked to be non-zero at start.
        u64::try_from(elapsed / self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn window_end(&self, now: Instant) -> Duration {
        let next = u32::try_from(self.window_index(now).saturating_add(1)).unwrap_or(u32::MAX);
        self.window.saturating_mul(next)
    }

    /// Whole seconds until the current window ends, rounded up so a client never waits too little.
    pub(crate) fn seconds_to_reset(&self, now: Instant) -> u64 {
        let left = self
            .window_end(now)
            .saturating_sub(now.saturating_duration_since(self.started));
        ceil_seconds(left)
    }

    /// The end of the current window as Unix epoch seconds, rounded up.
    pub(crate) fn reset_epoch(&self, now: Instant) -> u64 {
        let end = self.started_wall + self.window_end(now);
        end.duration_since(UNIX_EPOCH).map_or(0, ceil_seconds)
    }

    /// The end of the current window as Unix epoch milliseconds, rounded up.
    pub(crate) fn reset_epoch_ms(&self, now: Instant) -> u64 {
        let end = self.started_wall + self.window_end(now);
        end.duration_since(UNIX_EPOCH).map_or(0, |since| {
            let millis = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
            millis + u64::from(since.subsec_nanos() % 1_000_000 > 0)
        })
    }
}

fn ceil_seconds(span: Duration) -> u64 {
    span.as_secs() + u64::from(span.subsec_nanos() > 0)
}

/// Requests used in one fixed window.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct WindowCount {
    window: u64,
    pub(super) used: u32,
}

impl WindowCount {
    pub(super) fn used_in(&mut self, window: u64) -> u32 {
        if self.window != window {
            self.window = window;
            self.used = 0;
        }
        self.used
    }

    /// Takes one unit whatever the count (for an unlimited org, which still reports usage).
    pub(super) fn take(&mut self, window: u64) {
        self.used = self.used_in(window).saturating_add(1);
    }

    /// Takes one unit if the limit allows it.
    pub(super) fn try_take(&mut self, window: u64, limit: u32) -> bool {
        if self.used_in(window) >= limit {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The `x-ratelimit-*` values for one response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateSnapshot {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
    pub reset_epoch: u64,
    pub reset_epoch_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_count_resets_on_a_new_window() {
        let mut count = WindowCount::default();
        assert!(count.try_take(0, 2));
        assert!(count.try_take(0, 2));
        assert!(!count.try_take(0, 2));
        assert!(count.try_take(1, 2));
        assert_eq!(count.used_in(1), 1);
        count.used = u32::MAX;
        count.take(1);
        assert_eq!(count.used_in(1), u32::MAX);
    }

    #[test]
    fn seconds_to_reset_rounds_up() {
        let clock = Clock::new(Duration::from_millis(1500));
        let now = clock.started + Duration::from_millis(200);
        assert_eq!(clock.seconds_to_reset(now), 2);
        let later = clock.started + Duration::from_millis(1600);
        assert_eq!(clock.window_index(later), 1);
        assert_eq!(clock.seconds_to_reset(later), 2);
        assert!(clock.reset_epoch(now) >= clock.reset_epoch(clock.started));
    }
}
