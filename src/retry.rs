//! What to do after a request failed, and when to try again.
//!
//! [`RetryAction`] is the one written rule for every answer a create or a lookup can get (the
//! README's retry table is this function in prose); [`RetrySchedule`] is exponential backoff
//! with jitter, bounded in attempts and in total wait.
//!
//! This is the only module that touches the `backoff` crate, which RustSec marks unmaintained
//! (RUSTSEC-2025-0012): swapping it means changing this file alone.

use std::time::Duration;

use crate::client::ApiError;

/// Which request failed: a create changes the org, a lookup only reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Create,
    Lookup,
}

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// 429: refused before any processing. Send again when the common pause ends; uses no
    /// attempt (bounded separately, see [`MAX_RATE_LIMITED_PER_ROW`]).
    RateLimited,
    /// The connection never opened (refused, DNS, TLS handshake), or the run stopped before
    /// sending: nothing reached the API. Send again after a backoff; uses no attempt, because a
    /// dead API is the run's problem, stopped by the unreachable watchdog, not the row's.
    NeverSent,
    /// A create that may have been stored (any 5xx, 408, a timeout, a lost connection, a 2xx
    /// naming no message id): settle, then look the row up before anything is resent.
    OutcomeUnknown,
    /// A lookup that did not answer usefully (5xx, timeout, unreadable): read again after a
    /// backoff, using an attempt.
    RetryRead,
    /// Permanent for this row (400, 404, 409, 422, ...).
    FailRow,
    /// Nothing more may be sent: the key or its roles are refused (401, 403), or the API
    /// redirects (a wrong base URL).
    StopRun,
}

impl ApiError {
    /// The single classification of failures: see [`RetryAction`].
    pub fn retry_action(&self, kind: RequestKind) -> RetryAction {
        let unknown_or_read = match kind {
            RequestKind::Create => RetryAction::OutcomeUnknown,
            RequestKind::Lookup => RetryAction::RetryRead,
        };
        match self {
            ApiError::NotSent | ApiError::Connect { .. } => RetryAction::NeverSent,
            ApiError::Redirect { .. } => RetryAction::StopRun,
            ApiError::Timeout { .. } | ApiError::ConnectionLost { .. } => unknown_or_read,
            ApiError::Protocol { .. } => unknown_or_read,
            ApiError::Http { status, .. } => match *status {
                401 | 403 => RetryAction::StopRun,
                429 => RetryAction::RateLimited,
                408 | 500..=599 => unknown_or_read,
                400..=499 if kind == RequestKind::Create => RetryAction::FailRow,
                // A lookup's 4xx (other than 404, which is an answer) says the read itself
                // went wrong; 1xx or an unexpected status likewise.
                _ => unknown_or_read,
            },
        }
    }
}

/// The wait after the `failures`-th connection in a row that never opened: doubling from half a
/// second to eight. Unbounded in count on purpose: the unreachable watchdog ends the run.
pub fn reconnect_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(4);
    Duration::from_millis(500) * (1u32 << exponent)
}

/// 429s one row may meet, on its create and lookups together, before it is failed (retryable):
/// they use no attempts, but an API that answers 429 for ever must not hold a row for ever.
pub const MAX_RATE_LIMITED_PER_ROW: u32 = 50;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;

/// Attempts per row unless told otherwise (`--max-attempts`), the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// The longest one row may wait between attempts in all unless told otherwise
/// (`--max-retry-wait`).
pub const DEFAULT_MAX_TOTAL_WAIT: Duration = Duration::from_secs(300);

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
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total_wait: DEFAULT_MAX_TOTAL_WAIT,
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

    /// Uses an attempt without waiting (the settle delay already waited); false when none is
    /// left.
    pub fn use_attempt(&mut self) -> bool {
        if self.attempts >= self.policy.max_attempts {
            return false;
        }
        self.attempts += 1;
        true
    }

    /// After a failed attempt: how long to wait before the next one, or `None` when the row has
    /// used up its attempts or its wait budget. `at_least` is the server's own hint
    /// (`Retry-After`), which is honoured even when longer than our backoff.
    pub fn next_delay(&mut self, at_least: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        // A server hint is bounded like every server-given number: never past the whole budget.
        let at_least = at_least.map(|hint| hint.min(self.policy.max_total_wait));
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
    use crate::client::RateInfo;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_total_wait: Duration::from_secs(60),
        }
    }

    #[test]
    fn classification_table() {
        use RequestKind::{Create, Lookup};
        let http = |status| ApiError::Http {
            status,
            code: None,
            message: String::new(),
            rate: RateInfo::default(),
        };
        for status in [
            408, 500, 501, 502, 503, 504, 507, 520, 521, 522, 523, 524, 599,
        ] {
            assert_eq!(
                http(status).retry_action(Create),
                RetryAction::OutcomeUnknown,
                "{status}"
            );
            assert_eq!(
                http(status).retry_action(Lookup),
                RetryAction::RetryRead,
                "{status}"
            );
        }
        for status in [400, 404, 409, 422] {
            assert_eq!(
                http(status).retry_action(Create),
                RetryAction::FailRow,
                "{status}"
            );
        }
        assert_eq!(http(429).retry_action(Create), RetryAction::RateLimited);
        assert_eq!(http(429).retry_action(Lookup), RetryAction::RateLimited);
        for status in [401, 403] {
            assert_eq!(http(status).retry_action(Create), RetryAction::StopRun);
            assert_eq!(http(status).retry_action(Lookup), RetryAction::StopRun);
        }
        let redirect = ApiError::Redirect {
            status: 301,
            location: "https://elsewhere".into(),
        };
        assert_eq!(redirect.retry_action(Create), RetryAction::StopRun);
        let connect = ApiError::Connect {
            detail: "refused".into(),
        };
        assert_eq!(connect.retry_action(Create), RetryAction::NeverSent);
        assert_eq!(
            ApiError::NotSent.retry_action(Create),
            RetryAction::NeverSent
        );
        let after_sending = [
            ApiError::Timeout { secs: 30 },
            ApiError::ConnectionLost {
                detail: "reset".into(),
            },
            ApiError::Protocol {
                status: 202,
                detail: "no id".into(),
            },
        ];
        for err in &after_sending {
            assert_eq!(
                err.retry_action(Create),
                RetryAction::OutcomeUnknown,
                "{err}"
            );
            assert_eq!(err.retry_action(Lookup), RetryAction::RetryRead, "{err}");
        }
    }

    #[test]
    fn an_absurd_server_hint_is_bounded_by_the_wait_budget() {
        let mut schedule = RetrySchedule::new(policy(5));
        let delay = schedule.next_delay(Some(Duration::MAX)).unwrap();
        assert_eq!(delay, Duration::from_secs(60));
        assert_eq!(schedule.next_delay(None), None);
    }

    #[test]
    fn attempts_used_without_waiting_count_against_the_same_limit() {
        let mut schedule = RetrySchedule::new(policy(3));
        assert!(schedule.use_attempt());
        assert!(schedule.next_delay(None).is_some());
        assert!(!schedule.use_attempt());
        assert_eq!(schedule.attempts(), 3);
    }

    #[test]
    fn reconnect_waits_double_up_to_eight_seconds() {
        let waits: Vec<u64> = (1..=7)
            .map(|n| reconnect_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(reconnect_delay(u32::MAX), Duration::from_secs(8));
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
