//! The job's share of the org's request budget, shared by every worker: a GCRA rate limiter
//! (governor) paced at the ceiling (`--max-rpm`), the adaptive share under it (`share`), and a
//! common pause when the API says the window is spent.
//!
//! Kustomer's limit is org-wide and shared with the customer's live integrations, so a 429 or a
//! nearly spent `x-ratelimit-remaining` is a fact about everyone: all workers stop together until
//! the window resets, instead of each retrying on its own and prolonging the storm. Every pause
//! is clamped to `--max-pause`, whatever the server asked for.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::share::{Gate, Reserve, SharePacer, ShareView};
use super::RateInfo;

/// When the API gives no hint, how long the first pause after a 429 lasts; later ones double.
const FIRST_BLIND_PAUSE: Duration = Duration::from_secs(2);
const LONGEST_BLIND_PAUSE: Duration = Duration::from_secs(60);
/// `--max-pause` unless told otherwise.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

pub struct RateBudget {
    requests_per_minute: u32,
    limiter: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    max_pause: Duration,
    consecutive_429: AtomicU32,
    /// The adaptive share; `None` paces at the ceiling alone (as before issue 10).
    share: Option<Mutex<SharePacer>>,
    /// Requests admitted, and 429s seen.
    pub admitted: AtomicU64,
    pub rate_limited: AtomicU64,
    pub pauses: AtomicU64,
    /// Answers that carried no rate-limit headers, and answers that did.
    answers_without_headers: AtomicU64,
    answers_with_headers: AtomicU64,
    /// Samples of `admitted` over the last minute, taken when someone asks for our rate.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// Our rate is measured over this much recent time.
const RATE_SPAN: Duration = Duration::from_secs(60);

impl RateBudget {
    /// Paced at `requests_per_minute` alone: no adaptive share.
    pub fn new(requests_per_minute: u32) -> RateBudget {
        let rpm = NonZeroU32::new(requests_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        // Burst of about one second's worth: a full minute's burst at start would spend the
        // whole window in an instant and collide with the org's other traffic.
        let burst = NonZeroU32::new((rpm.get() / 60).max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rpm).allow_burst(burst);
        RateBudget {
            requests_per_minute: rpm.get(),
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            max_pause: DEFAULT_MAX_PAUSE,
            consecutive_429: AtomicU32::new(0),
            share: None,
            admitted: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            answers_without_headers: AtomicU64::new(0),
            answers_with_headers: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Under the ceiling, adapts to what the org's other clients spend, keeping `reserve`.
    pub fn sharing(mut self, reserve: Reserve) -> RateBudget {
        self.share = Some(Mutex::new(SharePacer::new(
            reserve,
            self.requests_per_minute,
        )));
        self
    }

    /// No pause lasts longer than `max_pause` (at least 100 ms).
    pub fn with_max_pause(mut self, max_pause: Duration) -> RateBudget {
        self.max_pause = max_pause.max(Duration::from_millis(100));
        self
    }

    pub fn requests_per_minute(&self) -> u32 {
        self.requests_per_minute
    }

    /// Requests per second the budget lets through now: the ceiling, or under it the adaptive
    /// share's allowance once known. The concurrency floor is sized to carry it.
    pub fn pace_per_second(&self) -> f64 {
        let ceiling = f64::from(self.requests_per_minute) / 60.0;
        match self.pacer().and_then(|pacer| pacer.allowed_per_second()) {
            Some(allowed) => allowed.min(ceiling),
            None => ceiling,
        }
    }

    pub fn max_pause(&self) -> Duration {
        self.max_pause
    }

    fn pacer(&self) -> Option<MutexGuard<'_, SharePacer>> {
        self.share
            .as_ref()
            .map(|pacer| pacer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits for the common pause to end, for the share and for a slot under the ceiling.
    /// Returns the admission's sequence number (for [`RateBudget::observe`]).
    pub async fn admit(&self) -> u64 {
        loop {
            if let Some(until) = self.paused_until() {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let seq = self.wait_for_share().await;
            self.limiter.until_ready().await;
            // A pause may have begun while we waited for the slot.
            if self.paused_until().is_none() {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                return seq;
            }
        }
    }

    /// Waits until the adaptive share lets one more request go; its sequence number.
    async fn wait_for_share(&self) -> u64 {
        let mut waited = false;
        let seq = loop {
            let gate = match self.pacer() {
                None => break self.admitted.load(Ordering::Relaxed) + 1,
                Some(mut pacer) => {
                    let now = Instant::now();
                    let gate = pacer.gate(now);
                    if gate == Gate::Go && waited {
                        pacer.waiting(false, now);
                    } else if gate != Gate::Go && !waited {
                        pacer.waiting(true, now);
                    }
                    match gate {
                        Gate::Go => break pacer.granted(),
                        Gate::WaitUntil(until) => until,
                    }
                }
            };
            waited = true;
            // Dropped while waiting (the run stops): the yield ends with it.
            let guard = YieldGuard(self);
            tokio::time::sleep_until(gate).await;
            std::mem::forget(guard);
        };
        seq
    }

    /// The end of the common pause, if one is under way.
    pub fn paused_until(&self) -> Option<Instant> {
        let mut guard = self.paused_until.lock().ok()?;
        match *guard {
            Some(until) if until > Instant::now() => Some(until),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }

    /// Learns from the answer to admission `seq` (`None`: no answer arrived): a 429 pauses
    /// everyone until the window resets (`Retry-After`, else `x-ratelimit-reset`, else a
    /// doubling wait); a nearly spent window pauses everyone until it resets; the rate-limit
    /// headers feed the adaptive share.
    pub fn observe(&self, status: Option<u16>, rate: &RateInfo, seq: u64) {
        if status.is_some() {
            let counter = if rate.has_window() {
                &self.answers_with_headers
            } else {
                &self.answers_without_headers
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(mut pacer) = self.pacer() {
            pacer.observe(rate, seq, Instant::now());
        }
        if status == Some(429) {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let streak = self.consecutive_429.fetch_add(1, Ordering::Relaxed);
            let blind = FIRST_BLIND_PAUSE
                .saturating_mul(1u32 << streak.min(5))
                .min(LONGEST_BLIND_PAUSE);
            let wait = rate.retry_after.or(rate.reset_in).unwrap_or(blind);
            self.pause_for(wait.max(Duration::from_millis(100)));
            return;
        }
        if status.is_some() {
            self.consecutive_429.store(0, Ordering::Relaxed);
        }
        if let (Some(limit), Some(remaining), Some(reset_in)) =
            (rate.limit, rate.remaining, rate.reset_in)
        {
            if remaining <= low_water(limit) && !reset_in.is_zero() {
                self.pause_for(reset_in);
            }
        }
    }

    /// Pauses every worker for `wait`, clamped to `--max-pause`.
    fn pause_for(&self, wait: Duration) {
        let now = Instant::now();
        let Some(until) = now.checked_add(wait.min(self.max_pause)) else {
            return;
        };
        if let Ok(mut guard) = self.paused_until.lock() {
            match *guard {
                Some(current) if current >= until => {}
                Some(current) if current > now => *guard = Some(until),
                _ => {
                    *guard = Some(until);
                    self.pauses.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// True once answers have come back and none carried the rate-limit headers: the import
    /// then paces at its ceiling alone, blind to the org's other clients.
    pub fn rate_headers_missing(&self) -> bool {
        self.answers_with_headers.load(Ordering::Relaxed) == 0
            && self.answers_without_headers.load(Ordering::Relaxed) > 0
    }

    /// Requests per minute the job admitted over the last minute (or since the first call);
    /// `None` until two samples a second apart exist. Sampled by the callers (progress,
    /// `status` writer), so the admission path pays nothing for it.
    pub fn recent_rate_per_minute(&self) -> Option<f64> {
        let now = Instant::now();
        let admitted = self.admitted.load(Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= Duration::from_secs(1))
        {
            samples.push_back((now, admitted));
        }
        while samples.len() > 2
            && samples
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RATE_SPAN)
        {
            samples.pop_front();
        }
        let (since, then) = *samples.front()?;
        let span = now.saturating_duration_since(since);
        (span >= Duration::from_secs(1))
            .then(|| admitted.saturating_sub(then) as f64 * 60.0 / span.as_secs_f64())
    }

    /// The adaptive share's figures (`None` when the budget does not adapt).
    pub fn share_view(&self) -> Option<ShareView> {
        self.pacer().map(|pacer| pacer.view(Instant::now()))
    }
}

/// Ends a waiter's yield if its wait is cancelled (the run stopping drops the future).
struct YieldGuard<'a>(&'a RateBudget);

impl Drop for YieldGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut pacer) = self.0.pacer() {
            pacer.waiting(false, Instant::now());
        }
    }
}

/// Remaining requests at or below which the window counts as spent: a little headroom for
/// requests already in flight and for the org's other integrations.
fn low_water(limit: u32) -> u32 {
    (limit / 100).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u32, remaining: u32, reset_secs: u64) -> RateInfo {
        RateInfo {
            limit: Some(limit),
            remaining: Some(remaining),
            reset_in: Some(Duration::from_secs(reset_secs)),
            retry_after: None,
        }
    }

    // governor keeps its own clock, so this one runs in real time. Only the lower bound is a
    // property (never faster than the budget); the upper bound just catches a stall.
    #[tokio::test]
    async fn never_faster_than_the_budget() {
        let budget = RateBudget::new(6_000); // 100 per second, burst 100
        let started = std::time::Instant::now();
        for _ in 0..150 {
            budget.admit().await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
        assert_eq!(budget.admitted.load(Ordering::Relaxed), 150);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_everyone_for_retry_after() {
        let budget = RateBudget::new(60_000);
        let hint = RateInfo {
            retry_after: Some(Duration::from_secs(7)),
            ..rate(1000, 0, 30)
        };
        budget.observe(Some(429), &hint, 1);
        let started = Instant::now();
        budget.admit().await;
        assert!(started.elapsed() >= Duration::from_secs(7));
        assert!(started.elapsed() < Duration::from_secs(8));
        assert_eq!(budget.rate_limited.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_without_hints_backs_off_doubling() {
        let budget = RateBudget::new(60_000);
        let none = RateInfo::default();
        budget.observe(Some(429), &none, 1);
        let first = budget.paused_until().unwrap() - Instant::now();
        tokio::time::sleep(first).await;
        budget.observe(Some(429), &none, 1);
        let second = budget.paused_until().unwrap() - Instant::now();
        assert!(
            second >= first * 2 - Duration::from_millis(10),
            "{first:?} {second:?}"
        );
        budget.observe(Some(201), &none, 1);
        assert_eq!(budget.consecutive_429.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nearly_spent_window_pauses_until_reset() {
        let budget = RateBudget::new(60_000);
        budget.observe(Some(201), &rate(1000, 500, 20), 1);
        assert!(budget.paused_until().is_none());
        budget.observe(Some(201), &rate(1000, 3, 20), 1);
        let pause = budget.paused_until().unwrap() - Instant::now();
        assert!(pause > Duration::from_secs(19) && pause <= Duration::from_secs(20));
        // A shorter pause never cuts a longer one short.
        budget.observe(Some(201), &rate(1000, 1, 5), 1);
        assert!(budget.paused_until().unwrap() - Instant::now() > Duration::from_secs(19));
    }

    #[tokio::test(start_paused = true)]
    async fn every_pause_is_clamped_to_max_pause() {
        let budget = RateBudget::new(60_000).with_max_pause(Duration::from_secs(3));
        let absurd = RateInfo {
            retry_after: Some(crate::throttle::LONGEST_SERVER_WAIT),
            ..rate(1000, 0, 86_400)
        };
        budget.observe(Some(429), &absurd, 1);
        let pause = budget.paused_until().unwrap() - Instant::now();
        assert!(pause <= Duration::from_secs(3), "{pause:?}");
        budget.observe(Some(201), &rate(1000, 1, 86_400), 2);
        let pause = budget.paused_until().unwrap() - Instant::now();
        assert!(pause <= Duration::from_secs(3), "{pause:?}");
        let started = Instant::now();
        budget.admit().await;
        assert!(started.elapsed() <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sharing_budget_reports_its_view_and_missing_headers() {
        let budget = RateBudget::new(600).sharing(Reserve::default());
        assert!(!budget.rate_headers_missing());
        let seq = budget.admit().await;
        budget.observe(Some(201), &RateInfo::default(), seq);
        assert!(budget.rate_headers_missing());
        assert!(!budget.share_view().unwrap().adaptive);
        let seq = budget.admit().await;
        budget.observe(Some(201), &rate(1000, 900, 30), seq);
        assert!(!budget.rate_headers_missing());
        let view = budget.share_view().unwrap();
        assert!(view.adaptive);
        assert_eq!(view.org_limit, Some(1000));
        assert_eq!(view.reserve, Some(100));
        assert!(RateBudget::new(600).share_view().is_none());
    }
}
