//! Pacing of every request the job makes: the org rate budget (`budget`) and the number of
//! requests in flight (`concurrency`), consulted by the API client around each request so that
//! creates, lookups and auth checks all count, and all report back-pressure.

mod budget;
mod concurrency;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, RETRY_AFTER};

pub use budget::RateBudget;
pub use concurrency::{ConcurrencyLimit, Signal, Slot};

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
            slot = async {
                let slot = self.concurrency.acquire().await;
                self.budget.admit().await;
                slot
            } => Some(Ticket { slot }),
        }
    }

    /// Stops admitting requests (the run is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// `status` is None when no response arrived (timeout, lost connection).
    pub fn settle(&self, ticket: Ticket, status: Option<u16>, rate: &RateInfo) {
        self.budget.observe(status, rate);
        let signal = match status {
            Some(429) | Some(500..=599) | None => Signal::BackPressure,
            Some(_) => Signal::Healthy,
        };
        self.concurrency.release(ticket.slot, signal);
    }
}

/// What a response said about the org's rate budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// Time until the window resets, from `x-ratelimit-reset` (epoch seconds or seconds from
    /// now: the unit is unverified, so a value larger than a day is read as an epoch).
    pub reset_in: Option<Duration>,
    /// From `Retry-After`, when the server sends it (undocumented by Kustomer).
    pub retry_after: Option<Duration>,
}

impl RateInfo {
    pub fn from_headers(headers: &HeaderMap) -> RateInfo {
        let number = |name: &str| -> Option<u64> {
            headers
                .get(name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| n as u64)
        };
        let reset_in = number("x-ratelimit-reset").map(|value| {
            const ONE_DAY: u64 = 86_400;
            if value > ONE_DAY {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Duration::from_secs(value.saturating_sub(now))
            } else {
                Duration::from_secs(value)
            }
        });
        RateInfo {
            limit: number("x-ratelimit-limit").map(|n| n.min(u32::MAX as u64) as u32),
            remaining: number("x-ratelimit-remaining").map(|n| n.min(u32::MAX as u64) as u32),
            reset_in,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        }
    }
}

/// `Retry-After` is either delta-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    let secs = when.as_second().saturating_sub(now.as_second());
    Some(Duration::from_secs(secs.max(0) as u64))
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

    #[test]
    fn rate_headers_in_both_reset_units() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("17"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("42"));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let info = RateInfo::from_headers(&headers);
        assert_eq!(info.limit, Some(1000));
        assert_eq!(info.remaining, Some(17));
        assert_eq!(info.reset_in, Some(Duration::from_secs(42)));
        assert_eq!(info.retry_after, Some(Duration::from_secs(3)));

        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        headers.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&epoch.to_string()).unwrap(),
        );
        let reset = RateInfo::from_headers(&headers).reset_in.unwrap();
        assert!(reset <= Duration::from_secs(30) && reset >= Duration::from_secs(28));
    }
}
