//! When to try a transient failure again: exponential backoff with jitter, bounded in attempts
//! and in total wait.
//!
//! This is the only module that touches the `backoff` crate, which RustSec marks unmaintained
//! (RUSTSEC-2025-0012): swapping it means changing this file alone.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

/// How persistent to be with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Cap on the sum of waits for one row.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total_wait: Duration::from_secs(300),
        }
    }
}

/// The waits of one row's retries, in order.
pub struct RetrySchedule {
    policy: RetryPolicy,
    backoff: ExponentialBackoff,
    attempts: u32,
    waited: Duration,
}

impl RetrySchedule {
    /// A schedule for a row whose first attempt is about to be made.
    pub fn new(policy: RetryPolicy) -> Self {
        let backoff = backoff::ExponentialBackoffBuilder::new()
            .with_initial_interval(policy.initial_delay)
            .with_max_interval(policy.max_delay)
            .with_multiplier(2.0)
            .with_randomization_factor(0.5)
            // Our own attempt and wait caps decide when to stop; elapsed wall time would also
            // count the requests themselves.
            .with_max_elapsed_time(None)
            .build();
        RetrySchedule {
            policy,
            backoff,
            attempts: 1,
            waited: Duration::ZERO,
        }
    }

    /// Attempts made so far, counting the one in progress.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a failed attempt: how long to wait before the next one, or `None` when the row has
    /// used up its attempts or its wait budget. `at_least` is the server's own hint
    /// (`Retry-After`), which is honoured even when longer than our backoff.
    pub fn next_delay(&mut self, at_least: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let jittered = self.backoff.next_backoff().unwrap_or(self.policy.max_delay);
        let delay = at_least.map_or(jittered, |hint| hint.max(jittered));
        if self.waited + delay > self.policy.max_total_wait {
            return None;
        }
        self.waited += delay;
        self.attempts += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_total_wait: Duration::from_secs(60),
        }
    }

    #[test]
    fn stops_after_max_attempts() {
        let mut schedule = RetrySchedule::new(policy(3));
        assert!(schedule.next_delay(None).is_some());
        assert!(schedule.next_delay(None).is_some());
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(schedule.next_delay(None), None);
    }

    #[test]
    fn delays_grow_within_jitter_bounds_and_cap() {
        let mut schedule = RetrySchedule::new(policy(20));
        let delays: Vec<Duration> = (0..8).filter_map(|_| schedule.next_delay(None)).collect();
        assert_eq!(delays.len(), 8);
        // Randomization factor 0.5 around 100ms, 200ms, 400ms ... capped at 2s (+50%).
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        assert!(delays[2] >= Duration::from_millis(200) && delays[2] <= Duration::from_millis(600));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(3)));
    }

    #[test]
    fn server_hint_wins_when_longer() {
        let mut schedule = RetrySchedule::new(policy(5));
        let delay = schedule.next_delay(Some(Duration::from_secs(7))).unwrap();
        assert_eq!(delay, Duration::from_secs(7));
    }

    #[test]
    fn total_wait_is_capped() {
        let mut schedule = RetrySchedule::new(RetryPolicy {
            max_total_wait: Duration::from_secs(10),
            ..policy(100)
        });
        assert!(schedule.next_delay(Some(Duration::from_secs(6))).is_some());
        assert_eq!(schedule.next_delay(Some(Duration::from_secs(6))), None);
    }
}
