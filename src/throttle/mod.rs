//! Pacing of every request the job makes: the org rate budget (`budget`) and the number of
//! requests in flight (`concurrency`), consulted by the API client around each request so that
//! creates, lookups and auth checks all count, and all report signs of overload.

mod budget;
mod concurrency;
mod share;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, RETRY_AFTER};

pub use budget::{RateBudget, DEFAULT_MAX_PAUSE};
pub use concurrency::{ConcurrencyLimit, ConcurrencyView, Signal, Slot, ADAPTIVE_START};
pub use share::{Reserve, ShareView};

/// The share of the org limit a job takes when `--max-rpm` is not given.
pub const DEFAULT_BUDGET_SHARE: f64 = 0.5;
/// Kustomer's smallest plan allows 300 requests a minute; used when the API does not say.
pub const SMALLEST_ORG_LIMIT: u32 = 300;

/// How the job's budget was chosen, for the person running it.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetSource {
    /// `--max-rpm`.
    Flag,
    /// A share of the limit the API reported in `x-ratelimit-limit`.
    Reported { org_limit: u32, share: f64 },
    /// The API reported no limit: a share of the smallest plan's.
    Assumed { share: f64 },
}

/// The job's budget in requests per minute, and why.
pub fn choose_budget(
    max_rpm: Option<u32>,
    share: f64,
    reported: Option<u32>,
) -> (u32, BudgetSource) {
    if let Some(rpm) = max_rpm {
        return (rpm.max(1), BudgetSource::Flag);
    }
    let share_of = |limit: u32| ((f64::from(limit) * share).floor() as u32).max(1);
    match reported {
        Some(org_limit) if org_limit > 0 => (
            share_of(org_limit),
            BudgetSource::Reported { org_limit, share },
        ),
        _ => (
            share_of(SMALLEST_ORG_LIMIT),
            BudgetSource::Assumed { share },
        ),
    }
}

impl BudgetSource {
    pub fn describe(&self, rpm: u32) -> String {
        match self {
            BudgetSource::Flag => format!("rate budget: {rpm} requests/minute (--max-rpm)"),
            BudgetSource::Reported { org_limit, share } => format!(
                "rate budget: {rpm} requests/minute ({:.0}% of the org limit of {org_limit} reported by x-ratelimit-limit; set --max-rpm or --budget-share to change)",
                share * 100.0
            ),
            BudgetSource::Assumed { share } => format!(
                "rate budget: {rpm} requests/minute ({:.0}% of {SMALLEST_ORG_LIMIT}, the smallest plan's limit, because the API reported none; set --max-rpm to use more)",
                share * 100.0
            ),
        }
    }
}

/// The budget and the concurrency limit, shared by every request of the job.
pub struct Throttle {
    pub budget: RateBudget,
    pub concurrency: ConcurrencyLimit,
    /// Once closed, requests still waiting for admission give up: they were never sent, so
    /// stopping them is safe, unlike a request already on the wire.
    closed: tokio_util::sync::CancellationToken,
}

/// Admission of one request; settle it with what happened.
pub struct Ticket {
    slot: Slot,
    /// The admission's sequence number in the budget.
    seq: u64,
}

impl Throttle {
    pub fn new(budget: RateBudget, concurrency: ConcurrencyLimit) -> Throttle {
        Throttle {
            budget,
            concurrency,
            closed: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Waits for a concurrency slot, then for the budget (and any common pause). `None` once the
    /// throttle is closed: the request must not be sent.
    pub async fn admit(&self) -> Option<Ticket> {
        tokio::select! {
            biased;
            () = self.closed.cancelled() => None,
            admitted = async {
                let mut slot = self.concurrency.acquire().await;
                let seq = self.budget.admit().await;
                slot.on_the_wire();
                (slot, seq)
            } => Some(Ticket { slot: admitted.0, seq: admitted.1 }),
        }
    }

    /// Stops admitting requests (the run is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// `status` is None when no response arrived (timeout, lost connection).
    pub fn settle(&self, ticket: Ticket, status: Option<u16>, rate: &RateInfo) {
        self.budget.observe(status, rate, ticket.seq);
        let signal = Signal::of(status, rate.retry_after.is_some());
        self.concurrency
            .release(ticket.slot, signal, self.budget.pace_per_second());
    }
}

/// The pacing figures, plain data kept by the checkpoint; read off the throttle here.
pub use crate::checkpoint::PacingSnapshot;

impl PacingSnapshot {
    /// The throttle's figures now.
    pub fn of(throttle: &Throttle) -> PacingSnapshot {
        let budget = &throttle.budget;
        let share = budget.share_view().unwrap_or_default();
        let now = jiff::Timestamp::now().as_millisecond();
        let paused_until_ms = budget.paused_until().map(|until| {
            let wait = until.saturating_duration_since(tokio::time::Instant::now());
            now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
        });
        PacingSnapshot {
            updated_at_ms: now,
            adaptive: share.adaptive,
            rate_headers_missing: budget.rate_headers_missing(),
            ceiling_per_minute: budget.requests_per_minute(),
            org_limit: share.org_limit,
            reserve: share.reserve,
            others_per_minute: share.others_per_minute,
            import_per_minute: budget.recent_rate_per_minute(),
            allowed_per_minute: share.allowed_per_minute,
            yielded_ms: u64::try_from(share.yielded.as_millis()).unwrap_or(u64::MAX),
            paused_until_ms,
            requests: budget.admitted.load(std::sync::atomic::Ordering::Relaxed),
            run_started_ms: None,
        }
    }

    /// `others ~1,080/min, import 540/min of 900, yielded 42s`.
    pub fn describe(&self) -> String {
        let mut text = self.rates();
        if self.yielded_ms >= 1_000 && !self.rate_headers_missing {
            text.push_str(&format!(", yielded {}", self.yielded()));
        }
        text
    }

    /// `others ~1,080/min, import 540/min of 900`, or why the others cannot be seen.
    pub fn rates(&self) -> String {
        let per_minute = |rate: f64| crate::text::thousands(rate.max(0.0).round() as u64);
        let ceiling = crate::text::thousands(u64::from(self.ceiling_per_minute));
        let import = self
            .import_per_minute
            .map_or_else(|| "…".to_string(), per_minute);
        match self.others_per_minute {
            _ if self.rate_headers_missing => {
                format!("import {import}/min of {ceiling} (no rate-limit headers)")
            }
            Some(others) if self.adaptive => {
                format!(
                    "others ~{}/min, import {import}/min of {ceiling}",
                    per_minute(others)
                )
            }
            _ => format!("import {import}/min of {ceiling}"),
        }
    }

    /// How long the import held back for the others, for people.
    pub fn yielded(&self) -> String {
        crate::text::duration(Duration::from_millis(self.yielded_ms))
    }
}

/// Said once when answers carry no rate-limit headers.
pub const NO_RATE_HEADERS_NOTE: &str = "the API sends no x-ratelimit-* headers: the import \
    cannot see what other clients spend, so it paces at its budget alone (as without adaptive \
    pacing); lower --max-rpm or --budget-share to leave them more room";

/// The longest wait any server-given number may ask for, applied when the headers are read: a
/// number beyond it is absurd (or a unit we misread), and bounding it here keeps every later
/// sum or `Instant` addition safe. Pauses are clamped further to `--max-pause`.
pub const LONGEST_SERVER_WAIT: Duration = Duration::from_secs(86_400);

/// What a response said about the org's rate budget. Every duration in it is at most
/// [`LONGEST_SERVER_WAIT`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// Time until the window resets, from `x-ratelimit-reset`: seconds from now, epoch seconds
    /// or epoch milliseconds (the unit is unverified, so it is decided by magnitude).
    pub reset_in: Option<Duration>,
    /// From `Retry-After` (delta-seconds or an HTTP date; undocumented by Kustomer).
    pub retry_after: Option<Duration>,
}

impl RateInfo {
    pub fn from_headers(headers: &HeaderMap) -> RateInfo {
        let text = |name: &str| headers.get(name)?.to_str().ok();
        let count = |name: &str| {
            text(name)
                .and_then(parse_count)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        RateInfo {
            limit: count("x-ratelimit-limit"),
            remaining: count("x-ratelimit-remaining"),
            reset_in: text("x-ratelimit-reset").and_then(|value| parse_reset(value, unix_now())),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|value| parse_retry_after(value, unix_now())),
        }
    }

    /// True when the response carried the headers adaptive pacing needs.
    pub fn has_window(&self) -> bool {
        self.limit.is_some_and(|limit| limit > 0)
            && self.remaining.is_some()
            && self.reset_in.is_some()
    }
}

/// Now as time since the Unix epoch (zero if the clock is before 1970).
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// A non-negative whole number, written as an integer or a decimal (`"17"`, `"17.0"`); anything
/// else is garbage and ignored.
fn parse_count(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(n) = value.parse::<u64>() {
        return Some(n);
    }
    let n = value.parse::<f64>().ok()?;
    // `as` saturates at u64::MAX for huge values; NaN, infinities and negatives are refused.
    (n.is_finite() && n >= 0.0).then_some(n as u64)
}

/// Below this a reset is seconds from now (a window is at most a day long).
const RESET_RELATIVE_BELOW: u64 = 86_400;
/// From this on a reset is epoch milliseconds: 10^11 epoch seconds is the year 5138, while
/// 10^11 epoch milliseconds is 1973, so the two ranges cannot be confused for current times.
const RESET_EPOCH_MS_FROM: u64 = 100_000_000_000;

/// `x-ratelimit-reset` as a wait from `now` (time since the Unix epoch), bounded.
fn parse_reset(value: &str, now: Duration) -> Option<Duration> {
    let value = parse_count(value)?;
    let wait = if value < RESET_RELATIVE_BELOW {
        Duration::from_secs(value)
    } else if value < RESET_EPOCH_MS_FROM {
        Duration::from_secs(value).saturating_sub(now)
    } else {
        Duration::from_millis(value).saturating_sub(now)
    };
    Some(wait.min(LONGEST_SERVER_WAIT))
}

/// `Retry-After` is delta-seconds or an HTTP date (RFC 9110); either way a bounded wait from
/// `now`. A date in the past means no wait; anything unreadable is ignored.
fn parse_retry_after(value: &str, now: Duration) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too long for u64 is still a (huge) number of seconds.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(LONGEST_SERVER_WAIT));
    }
    let when = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let when = Duration::try_from(when.as_duration()).unwrap_or(Duration::ZERO);
    Some(when.saturating_sub(now).min(LONGEST_SERVER_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[tokio::test]
    async fn closing_turns_waiters_away() {
        let throttle = Throttle::new(RateBudget::new(60), ConcurrencyLimit::fixed(1));
        let first = throttle.admit().await.expect("a slot is free");
        let waiter = throttle.admit();
        throttle.close();
        assert!(waiter.await.is_none());
        throttle.settle(first, Some(201), &RateInfo::default());
        assert!(throttle.admit().await.is_none());
    }

    #[test]
    fn budget_rule() {
        assert_eq!(choose_budget(Some(900), 0.5, Some(2000)).0, 900);
        assert_eq!(
            choose_budget(None, 0.5, Some(1000)),
            (
                500,
                BudgetSource::Reported {
                    org_limit: 1000,
                    share: 0.5
                }
            )
        );
        assert_eq!(
            choose_budget(None, 0.25, None),
            (75, BudgetSource::Assumed { share: 0.25 })
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn rate_headers_are_read() {
        let info = RateInfo::from_headers(&headers(&[
            ("x-ratelimit-limit", "1000"),
            ("x-ratelimit-remaining", "17"),
            ("x-ratelimit-reset", "42"),
            ("retry-after", "3"),
        ]));
        assert_eq!(info.limit, Some(1000));
        assert_eq!(info.remaining, Some(17));
        assert_eq!(info.reset_in, Some(Duration::from_secs(42)));
        assert_eq!(info.retry_after, Some(Duration::from_secs(3)));
        assert!(info.has_window());
        assert!(!RateInfo::default().has_window());
    }

    #[test]
    fn reset_unit_is_decided_by_magnitude() {
        let now = Duration::from_secs(1_764_662_400); // 2025-12-02T08:00:00Z
        let secs = Some(Duration::from_secs(30));
        assert_eq!(parse_reset("30", now), secs);
        assert_eq!(parse_reset("1764662430", now), secs, "epoch seconds");
        assert_eq!(
            parse_reset("1764662430000", now),
            secs,
            "epoch milliseconds"
        );
        assert_eq!(
            parse_reset("1764662400250", now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_reset("1764662000", now), Some(Duration::ZERO), "past");
        assert_eq!(parse_reset("17.9", now), Some(Duration::from_secs(17)));
    }

    #[test]
    fn absurd_and_garbage_values_are_bounded_or_ignored() {
        let now = Duration::from_secs(1_764_662_400);
        for absurd in [
            "18446744073709551615",
            "99999999999999999999999999",
            "1e300",
            "86399",
        ] {
            let reset = parse_reset(absurd, now).unwrap();
            assert!(reset <= LONGEST_SERVER_WAIT, "{absurd}: {reset:?}");
        }
        for garbage in ["", "soon", "-5", "NaN", "inf", "0x10", "12 s"] {
            assert_eq!(parse_reset(garbage, now), None, "{garbage:?}");
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(LONGEST_SERVER_WAIT)
        );
        assert_eq!(
            parse_retry_after("184467440737095516150000", now),
            Some(LONGEST_SERVER_WAIT)
        );
        assert_eq!(parse_count("4294967296000"), Some(4_294_967_296_000));
        let info = RateInfo::from_headers(&headers(&[
            ("x-ratelimit-limit", "4294967296000"),
            ("x-ratelimit-remaining", "lots"),
        ]));
        assert_eq!(info.limit, Some(u32::MAX));
        assert_eq!(info.remaining, None);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let now = Duration::from_secs(1_764_662_400); // Tue, 02 Dec 2025 08:00:00 GMT
        assert_eq!(
            parse_retry_after("Tue, 02 Dec 2025 08:00:45 GMT", now),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("Tue, 02 Dec 2025 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means go now"
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 2100 23:59:59 GMT", now),
            Some(LONGEST_SERVER_WAIT)
        );
    }

    #[test]
    fn pacing_is_described_for_people() {
        let mut snapshot = PacingSnapshot {
            updated_at_ms: 0,
            adaptive: true,
            rate_headers_missing: false,
            ceiling_per_minute: 900,
            org_limit: Some(1800),
            reserve: Some(180),
            others_per_minute: Some(1080.4),
            import_per_minute: Some(540.0),
            allowed_per_minute: Some(560.0),
            yielded_ms: 42_500,
            paused_until_ms: None,
            requests: 0,
            run_started_ms: None,
        };
        assert_eq!(
            snapshot.describe(),
            "others ~1,080/min, import 540/min of 900, yielded 42s"
        );
        assert_eq!(snapshot.rates(), "others ~1,080/min, import 540/min of 900");
        snapshot.adaptive = false;
        snapshot.rate_headers_missing = true;
        assert_eq!(
            snapshot.describe(),
            "import 540/min of 900 (no rate-limit headers)"
        );
    }
}
