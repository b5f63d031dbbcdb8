//! How many requests may be in flight at once: fixed (`--concurrency N`) or adaptive
//! (`--concurrency auto`), in the AIMD manner of Vector's adaptive request concurrency.
//!
//! Adaptive: once per observation window (about one round-trip time), the limit
//! - is cut by a quarter when the window saw a sign of overload: a 429, a 503 carrying
//!   `Retry-After`, or latency well past its baseline (the p50 of the last
//!   [`LATENCY_SAMPLES`] answers above [`LATENCY_SURGE`] times the lowest such p50 of the last
//!   [`BASELINE_WINDOWS`] windows);
//! - else grows by one when the limit was used and latency stayed near its moving average.
//!
//! A plain 5xx, a timeout, a reset or a connection that never opened says nothing about load (a
//! failing gateway, a bad network), so it changes nothing: cutting on them collapsed the limit to
//! 1 under faults, and at Kustomer's 100-300 ms one or two requests in flight cannot spend the
//! budget. Nor does the limit ever go below what the budget needs at the latency observed, the
//! floor `ceil(B × p50) + 1` (B: the rate budget's pace in requests per second, p50: of the last
//! [`LATENCY_SAMPLES`] answers), and never above the ceiling (`--max-concurrency`) nor below one.
//! [`Signal::of`] is the one place an outcome is classified.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const DECREASE_RATIO: f64 = 0.75;
/// Latency this much above its moving average stops growth.
const LATENCY_TOLERANCE: f64 = 1.3;
/// Latency "well past its baseline": the recent p50 above this many times the baseline is a
/// sign of overload and cuts the limit. Twice, so that ordinary jitter never cuts.
pub const LATENCY_SURGE: f64 = 2.0;
/// Answers whose latency makes the recent p50 (bounded memory).
pub const LATENCY_SAMPLES: usize = 64;
/// Windows over which the baseline is the lowest recent p50: long enough that a surge does not
/// become its own baseline at once, short enough that a lasting change of latency does.
pub const BASELINE_WINDOWS: usize = 32;
/// Fewer answers than this make no p50 to judge a surge by.
const FEWEST_SAMPLES_FOR_SURGE: usize = 8;
const EWMA_WEIGHT: f64 = 0.3;
const SHORTEST_WINDOW: Duration = Duration::from_millis(50);
/// Where an adaptive limit starts.
pub const ADAPTIVE_START: usize = 4;

/// What a finished request tells the limiter; made by [`Signal::of`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered, not a sign of overload (2xx, 3xx, 4xx but 408 and 429): its latency is a
    /// sample of the service's speed.
    Healthy,
    /// A plain 5xx, a 408, a timeout, a reset, a connection that never opened: a failure that
    /// says nothing about load. Changes nothing, and its latency is no sample (a failing
    /// gateway's speed is not the service's).
    Failed,
    /// The server says it is overloaded: cut.
    Overloaded(Overload),
}

/// Why the limit was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// 429.
    RateLimited,
    /// 503 with `Retry-After`.
    Unavailable,
    /// The recent p50 latency well past its baseline.
    SlowAnswers,
}

impl Signal {
    /// What an outcome says about load: `status` is `None` when no answer arrived (timeout,
    /// reset, connection never opened); `retry_after` whether the answer carried `Retry-After`.
    pub fn of(status: Option<u16>, retry_after: bool) -> Signal {
        match status {
            Some(429) => Signal::Overloaded(Overload::RateLimited),
            Some(503) if retry_after => Signal::Overloaded(Overload::Unavailable),
            Some(408) | Some(500..=599) | None => Signal::Failed,
            Some(_) => Signal::Healthy,
        }
    }
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overload::RateLimited => "429",
            Overload::Unavailable => "503 Retry-After",
            Overload::SlowAnswers => "latency",
        })
    }
}

/// The last change of the limit, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Grew by one: healthy, used, latency steady.
    Grew,
    Cut(Overload),
    /// Held at or raised to the floor: the budget needs this many in flight at the latency
    /// observed.
    Floor {
        need: usize,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Grew => f.write_str("grew"),
            Change::Cut(cause) => write!(f, "cut: {cause}"),
            Change::Floor { need } => write!(f, "floor: budget needs {need}"),
        }
    }
}

/// Cuts made so far, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cuts {
    pub rate_limited: u64,
    pub unavailable: u64,
    pub slow_answers: u64,
}

impl Cuts {
    pub fn total(&self) -> u64 {
        self.rate_limited + self.unavailable + self.slow_answers
    }

    fn count(&mut self, cause: Overload) {
        let counter = match cause {
            Overload::RateLimited => &mut self.rate_limited,
            Overload::Unavailable => &mut self.unavailable,
            Overload::SlowAnswers => &mut self.slow_answers,
        };
        *counter += 1;
    }
}

/// The limit's figures, for the progress line, the summary and the bench.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrencyView {
    pub limit: usize,
    pub ceiling: usize,
    pub adaptive: bool,
    pub last_change: Option<Change>,
    pub cuts: Cuts,
    /// The smallest limit a cut left (`None`: never cut).
    pub lowest_after_cut: Option<usize>,
    /// p50 of the recent answers, when any.
    pub p50_latency: Option<Duration>,
}

impl ConcurrencyView {
    /// `12/64 (cut: 429)`; just `8` when fixed.
    pub fn describe(&self) -> String {
        if !self.adaptive {
            return self.limit.to_string();
        }
        match self.last_change {
            Some(change) => format!("{}/{} ({change})", self.limit, self.ceiling),
            None => format!("{}/{}", self.limit, self.ceiling),
        }
    }

    /// `12 of 64 (never cut)` or `5 of 64 (cut 3 times: 2 on 429, 1 on latency; lowest 5)`.
    pub fn summary(&self) -> String {
        let total = self.cuts.total();
        if total == 0 {
            return format!("{} of {} (never cut)", self.limit, self.ceiling);
        }
        let causes: Vec<String> = [
            (self.cuts.rate_limited, Overload::RateLimited),
            (self.cuts.unavailable, Overload::Unavailable),
            (self.cuts.slow_answers, Overload::SlowAnswers),
        ]
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, cause)| format!("{count} on {cause}"))
        .collect();
        format!(
            "{} of {} (cut {total} time{}: {}; lowest {})",
            self.limit,
            self.ceiling,
            if total == 1 { "" } else { "s" },
            causes.join(", "),
            self.lowest_after_cut.unwrap_or(self.limit)
        )
    }
}

pub struct ConcurrencyLimit {
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
    adaptive: bool,
    ceiling: usize,
}

struct State {
    limit: usize,
    in_flight: usize,
    /// Permits to retire as they come back, after a decrease.
    owed: usize,
    /// Moving average of the windows' mean latency: the window's length, and what growth
    /// compares with.
    rtt_average: Option<f64>,
    /// Latency of the last [`LATENCY_SAMPLES`] healthy answers, in seconds.
    recent: VecDeque<f64>,
    /// The recent p50 at each of the last [`BASELINE_WINDOWS`] windows.
    p50_history: VecDeque<f64>,
    window_started: Instant,
    window_rtt_sum: f64,
    window_rtt_count: u32,
    window_peak_in_flight: usize,
    window_overload: Option<Overload>,
    last_change: Option<Change>,
    cuts: Cuts,
    lowest_after_cut: Option<usize>,
}

/// A slot for one request; give it back with [`ConcurrencyLimit::release`].
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
}

impl Slot {
    /// The request leaves now (after waiting for the budget): its latency counts from here.
    pub fn on_the_wire(&mut self) {
        self.started = Instant::now();
    }
}

impl ConcurrencyLimit {
    pub fn fixed(limit: usize) -> ConcurrencyLimit {
        ConcurrencyLimit::build(limit.max(1), limit.max(1), false)
    }

    pub fn adaptive(ceiling: usize) -> ConcurrencyLimit {
        let ceiling = ceiling.max(1);
        ConcurrencyLimit::build(ADAPTIVE_START.min(ceiling), ceiling, true)
    }

    fn build(limit: usize, ceiling: usize, adaptive: bool) -> ConcurrencyLimit {
        ConcurrencyLimit {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                owed: 0,
                rtt_average: None,
                recent: VecDeque::with_capacity(LATENCY_SAMPLES),
                p50_history: VecDeque::with_capacity(BASELINE_WINDOWS),
                window_started: Instant::now(),
                window_rtt_sum: 0.0,
                window_rtt_count: 0,
                window_peak_in_flight: 0,
                window_overload: None,
                last_change: None,
                cuts: Cuts::default(),
                lowest_after_cut: None,
            }),
            adaptive,
            ceiling,
        }
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    pub fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().map_or(0, |state| state.limit)
    }

    /// The limit, why it changed last, and its cuts.
    pub fn view(&self) -> ConcurrencyView {
        // The state is plain numbers: a panic elsewhere cannot leave it unreadable.
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        ConcurrencyView {
            limit: state.limit,
            ceiling: self.ceiling,
            adaptive: self.adaptive,
            last_change: state.last_change,
            cuts: state.cuts,
            lowest_after_cut: state.lowest_after_cut,
            p50_latency: median(&state.recent).map(Duration::from_secs_f64),
        }
    }

    pub async fn acquire(&self) -> Slot {
        // The semaphore is never closed, so acquiring cannot fail; if it ever did, running
        // without a slot is safer than stopping the import.
        let permit = Arc::clone(&self.semaphore).acquire_owned().await.ok();
        if let Ok(mut state) = self.state.lock() {
            state.in_flight += 1;
            state.window_peak_in_flight = state.window_peak_in_flight.max(state.in_flight);
        }
        Slot {
            permit,
            started: Instant::now(),
        }
    }

    /// Gives the slot back with what its request said; `budget_per_second` is the pace the
    /// rate budget allows now, which the floor must be able to carry.
    pub fn release(&self, slot: Slot, signal: Signal, budget_per_second: f64) {
        let rtt = slot.started.elapsed().as_secs_f64();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        match slot.permit {
            Some(permit) if state.owed > 0 => {
                state.owed -= 1;
                permit.forget();
            }
            permit => drop(permit),
        }
        if !self.adaptive {
            return;
        }
        match signal {
            Signal::Healthy => {
                state.window_rtt_sum += rtt;
                state.window_rtt_count += 1;
                if state.recent.len() == LATENCY_SAMPLES {
                    state.recent.pop_front();
                }
                state.recent.push_back(rtt);
            }
            Signal::Failed => {}
            Signal::Overloaded(cause) => {
                // A 429 or 503 outranks slow answers as the reason shown.
                state.window_overload = Some(cause);
            }
        }
        let window = state
            .rtt_average
            .map_or(SHORTEST_WINDOW, Duration::from_secs_f64)
            .max(SHORTEST_WINDOW);
        if state.window_started.elapsed() >= window {
            self.adjust(&mut state, budget_per_second);
        }
    }

    /// What the budget needs in flight at the recent p50: `ceil(B × p50) + 1`, within 1 and the
    /// ceiling; 1 before any answer.
    fn floor(&self, p50: Option<f64>, budget_per_second: f64) -> usize {
        let Some(p50) = p50 else {
            return 1;
        };
        let need = (budget_per_second.max(0.0) * p50).ceil();
        // Compared as floats first: a huge or NaN product must not wrap when cast.
        if need.is_nan() || need >= self.ceiling as f64 {
            return self.ceiling;
        }
        (need as usize + 1).clamp(1, self.ceiling)
    }

    fn adjust(&self, state: &mut State, budget_per_second: f64) {
        let window_rtt = (state.window_rtt_count > 0)
            .then(|| state.window_rtt_sum / f64::from(state.window_rtt_count));
        let p50 = median(&state.recent);
        let floor = self.floor(p50, budget_per_second);
        let surge = match (p50, baseline(&state.p50_history)) {
            (Some(p50), Some(baseline)) if state.recent.len() >= FEWEST_SAMPLES_FOR_SURGE => {
                p50 > baseline * LATENCY_SURGE
            }
            _ => false,
        };
        let overload = state
            .window_overload
            .or(surge.then_some(Overload::SlowAnswers));
        if let Some(cause) = overload {
            let decreased = ((state.limit as f64) * DECREASE_RATIO).floor() as usize;
            let target = decreased.max(floor).max(1);
            if target < state.limit {
                self.shrink_to(state, target);
                state.last_change = Some(Change::Cut(cause));
                state.cuts.count(cause);
                state.lowest_after_cut = Some(
                    state
                        .lowest_after_cut
                        .map_or(target, |lowest| lowest.min(target)),
                );
            } else {
                // The budget paces the requests; fewer in flight than it needs would only
                // leave it unspent.
                self.grow_to(state, floor);
                state.last_change = Some(Change::Floor { need: floor });
            }
        } else if state.limit < floor {
            self.grow_to(state, floor);
            state.last_change = Some(Change::Floor { need: floor });
        } else if let Some(rtt) = window_rtt {
            let steady = state
                .rtt_average
                .is_none_or(|average| rtt <= average * LATENCY_TOLERANCE);
            if steady && state.window_peak_in_flight >= state.limit && state.limit < self.ceiling {
                self.grow_to(state, state.limit + 1);
                state.last_change = Some(Change::Grew);
            }
        }
        if let Some(rtt) = window_rtt {
            state.rtt_average = Some(match state.rtt_average {
                Some(average) => average * (1.0 - EWMA_WEIGHT) + rtt * EWMA_WEIGHT,
                None => rtt,
            });
        }
        if let Some(p50) = p50 {
            if state.p50_history.len() == BASELINE_WINDOWS {
                state.p50_history.pop_front();
            }
            state.p50_history.push_back(p50);
        }
        state.window_started = Instant::now();
        state.window_rtt_sum = 0.0;
        state.window_rtt_count = 0;
        state.window_peak_in_flight = state.in_flight;
        state.window_overload = None;
    }

    fn grow_to(&self, state: &mut State, target: usize) {
        let more = target.saturating_sub(state.limit);
        state.limit = state.limit.max(target);
        // Permits still owed from a cut are forgiven first.
        let forgiven = more.min(state.owed);
        state.owed -= forgiven;
        self.semaphore.add_permits(more - forgiven);
    }

    fn shrink_to(&self, state: &mut State, target: usize) {
        let mut surplus = state.limit.saturating_sub(target);
        state.limit = target;
        // Free permits are retired now; the rest as requests in flight come back.
        while surplus > 0 {
            match self.semaphore.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    surplus -= 1;
                }
                Err(_) => break,
            }
        }
        state.owed += surplus;
    }
}

/// The middle of the samples (the upper one of an even count); `None` when there are none.
fn median(samples: &VecDeque<f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// The latency baseline: the lowest recent p50 of the last windows.
fn baseline(history: &VecDeque<f64>) -> Option<f64> {
    history.iter().copied().reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_BUDGET: f64 = 0.0;
    const RATE_LIMITED: Signal = Signal::Overloaded(Overload::RateLimited);

    /// `requests` requests in flight together for `rtt`, answered with `signals` in turn (the
    /// last one repeated), while the budget allows `budget` requests a second.
    async fn round_of(
        limit: &ConcurrencyLimit,
        requests: usize,
        rtt: Duration,
        signals: &[Signal],
        budget: f64,
    ) {
        let mut slots = Vec::new();
        for _ in 0..requests {
            slots.push(limit.acquire().await);
        }
        tokio::time::sleep(rtt).await;
        for (index, slot) in slots.into_iter().enumerate() {
            let signal = signals
                .get(index)
                .or(signals.last())
                .copied()
                .unwrap_or(Signal::Healthy);
            limit.release(slot, signal, budget);
        }
    }

    async fn round(limit: &ConcurrencyLimit, requests: usize, rtt: Duration, signal: Signal) {
        round_of(limit, requests, rtt, &[signal], NO_BUDGET).await;
    }

    /// The semaphore admits exactly `count` requests at once.
    async fn admits_exactly(limit: &ConcurrencyLimit, count: usize) {
        let mut slots = Vec::new();
        for _ in 0..count {
            slots.push(limit.acquire().await);
        }
        assert!(limit.semaphore.try_acquire().is_err());
        for slot in slots {
            limit.release(slot, Signal::Failed, NO_BUDGET);
        }
    }

    /// Healthy rounds at `rtt` that use the whole limit, until it passes `above`.
    async fn grow_past(limit: &ConcurrencyLimit, above: usize, rtt: Duration) {
        for _ in 0..100 {
            if limit.limit() > above {
                return;
            }
            round(limit, limit.limit(), rtt, Signal::Healthy).await;
        }
        panic!("the limit never passed {above}: {}", limit.limit());
    }

    #[test]
    fn outcomes_are_classified_by_what_they_say_about_load() {
        assert_eq!(Signal::of(Some(201), false), Signal::Healthy);
        assert_eq!(Signal::of(Some(404), false), Signal::Healthy);
        assert_eq!(Signal::of(Some(400), true), Signal::Healthy);
        assert_eq!(Signal::of(Some(429), false), RATE_LIMITED);
        assert_eq!(Signal::of(Some(429), true), RATE_LIMITED);
        assert_eq!(
            Signal::of(Some(503), true),
            Signal::Overloaded(Overload::Unavailable)
        );
        for failure in [
            Some(503),
            Some(500),
            Some(502),
            Some(504),
            Some(520),
            Some(408),
            None,
        ] {
            assert_eq!(Signal::of(failure, false), Signal::Failed, "{failure:?}");
        }
        assert_eq!(Signal::of(Some(500), true), Signal::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_never_moves() {
        let limit = ConcurrencyLimit::fixed(8);
        for _ in 0..20 {
            round(&limit, 8, Duration::from_millis(60), RATE_LIMITED).await;
        }
        assert_eq!(limit.limit(), 8);
        assert_eq!(limit.view().describe(), "8");
    }

    #[tokio::test(start_paused = true)]
    async fn grows_additively_while_healthy_and_used_up_to_the_ceiling() {
        let limit = ConcurrencyLimit::adaptive(10);
        assert_eq!(limit.limit(), ADAPTIVE_START);
        for _ in 0..40 {
            let current = limit.limit();
            round(&limit, current, Duration::from_millis(60), Signal::Healthy).await;
        }
        assert_eq!(limit.limit(), 10);
        assert_eq!(limit.view().describe(), "10/10 (grew)");
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_grow_when_the_limit_is_not_used() {
        let limit = ConcurrencyLimit::adaptive(64);
        for _ in 0..20 {
            round(&limit, 1, Duration::from_millis(60), Signal::Healthy).await;
        }
        assert_eq!(limit.limit(), ADAPTIVE_START);
        assert_eq!(limit.view().describe(), "4/64");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_cuts_multiplicatively_and_retires_permits() {
        let limit = ConcurrencyLimit::adaptive(64);
        grow_past(&limit, 20, Duration::from_millis(60)).await;
        let before = limit.limit();
        round(&limit, 2, Duration::from_millis(60), RATE_LIMITED).await;
        let after = limit.limit();
        assert_eq!(after, ((before as f64) * DECREASE_RATIO).floor() as usize);
        let view = limit.view();
        assert_eq!(view.last_change, Some(Change::Cut(Overload::RateLimited)));
        assert_eq!(view.describe(), format!("{after}/64 (cut: 429)"));
        assert_eq!(view.lowest_after_cut, Some(after));
        assert_eq!(
            view.summary(),
            format!("{after} of 64 (cut 1 time: 1 on 429; lowest {after})")
        );
        admits_exactly(&limit, after).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_cuts_only_with_retry_after() {
        let limit = ConcurrencyLimit::adaptive(64);
        grow_past(&limit, 20, Duration::from_millis(60)).await;
        let plain_503 = Signal::of(Some(503), false);
        // The first round's release closes a window of healthy answers (it may grow once).
        round(&limit, 4, Duration::from_millis(60), plain_503).await;
        let before = limit.limit();
        for _ in 0..10 {
            round(&limit, 4, Duration::from_millis(60), plain_503).await;
        }
        assert_eq!(limit.limit(), before);
        round(
            &limit,
            4,
            Duration::from_millis(60),
            Signal::of(Some(503), true),
        )
        .await;
        assert!(limit.limit() < before, "{} {before}", limit.limit());
        let view = limit.view();
        assert_eq!(view.last_change, Some(Change::Cut(Overload::Unavailable)));
        assert_eq!(view.cuts.unavailable, 1);
        assert!(view.describe().ends_with("(cut: 503 Retry-After)"));
    }

    #[tokio::test(start_paused = true)]
    async fn drops_timeouts_and_plain_5xx_never_shrink() {
        let limit = ConcurrencyLimit::adaptive(64);
        grow_past(&limit, 20, Duration::from_millis(60)).await;
        let failures = [None, Some(500), Some(502), Some(504), Some(503), Some(408)]
            .map(|status| Signal::of(status, false));
        // The first round's release closes a window of healthy answers (it may grow once).
        round_of(&limit, 4, Duration::from_millis(60), &failures, NO_BUDGET).await;
        let before = limit.limit();
        for _ in 0..30 {
            round_of(
                &limit,
                limit.limit(),
                Duration::from_millis(60),
                &failures,
                NO_BUDGET,
            )
            .await;
            assert_eq!(limit.limit(), before);
        }
        // Mixed with successes, they hold growth no more than the successes allow.
        for _ in 0..5 {
            let mixed = [Signal::Healthy, failures[0], Signal::Healthy, failures[1]];
            round_of(
                &limit,
                limit.limit(),
                Duration::from_millis(60),
                &mixed,
                0.0,
            )
            .await;
            assert!(limit.limit() >= before);
        }
        let view = limit.view();
        assert_eq!(view.cuts.total(), 0);
        assert_eq!(view.lowest_after_cut, None);
        assert_eq!(view.summary(), format!("{} of 64 (never cut)", view.limit));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_well_past_its_baseline_cuts_and_a_moderate_rise_does_not() {
        let limit = ConcurrencyLimit::adaptive(64);
        grow_past(&limit, 20, Duration::from_millis(60)).await;
        let before = limit.limit();
        // 1.8 times the baseline: slower, not overloaded.
        for _ in 0..20 {
            round(
                &limit,
                limit.limit(),
                Duration::from_millis(108),
                Signal::Healthy,
            )
            .await;
        }
        assert!(limit.limit() >= before, "{} {before}", limit.limit());
        assert_eq!(limit.view().cuts.total(), 0);
        let before = limit.limit();
        // Five times the baseline: once the recent p50 shows it, the limit is cut.
        for _ in 0..20 {
            round(
                &limit,
                limit.limit(),
                Duration::from_millis(300),
                Signal::Healthy,
            )
            .await;
            if limit.view().cuts.slow_answers > 0 {
                break;
            }
        }
        let view = limit.view();
        assert!(view.cuts.slow_answers >= 1, "{view:?}");
        assert!(view.limit < before, "{view:?}");
        assert_eq!(view.last_change, Some(Change::Cut(Overload::SlowAnswers)));
        assert!(view.describe().ends_with("(cut: latency)"));
    }

    #[tokio::test(start_paused = true)]
    async fn never_below_what_the_budget_needs_at_the_observed_p50() {
        let ceiling = 64;
        for budget in [0.0, 7.5, 20.0, 100.0, 1e12] {
            for rtt_ms in [50, 250, 500, 1_000] {
                let rtt = Duration::from_millis(rtt_ms);
                let need = ((budget * rtt.as_secs_f64()).ceil().min(ceiling as f64) as usize + 1)
                    .min(ceiling);
                let limit = ConcurrencyLimit::adaptive(ceiling);
                // One answer gives the p50; from then on every round starts with a 429.
                round_of(&limit, 1, rtt, &[Signal::Healthy], budget).await;
                let signals = [RATE_LIMITED, Signal::Healthy];
                for _ in 0..40 {
                    let current = limit.limit();
                    round_of(&limit, current, rtt, &signals, budget).await;
                    assert!(
                        limit.limit() >= need,
                        "budget {budget}/s, p50 {rtt:?}: limit {} below {need}",
                        limit.limit()
                    );
                }
                // Cut down to the floor, and held there.
                assert_eq!(limit.limit(), need, "budget {budget}/s, p50 {rtt:?}");
                let view = limit.view();
                assert_eq!(view.last_change, Some(Change::Floor { need }));
                assert_eq!(
                    view.describe(),
                    format!("{need}/64 (floor: budget needs {need})")
                );
                assert_eq!(view.p50_latency, Some(rtt));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rising_floor_raises_the_limit_at_once() {
        let limit = ConcurrencyLimit::adaptive(64);
        // 40 a second at 250 ms need 11 in flight: more than the start.
        round(&limit, 1, Duration::from_millis(250), Signal::Healthy).await;
        round_of(
            &limit,
            1,
            Duration::from_millis(250),
            &[Signal::Healthy],
            40.0,
        )
        .await;
        assert_eq!(limit.limit(), 11);
        assert_eq!(limit.view().last_change, Some(Change::Floor { need: 11 }));
        admits_exactly(&limit, 11).await;
    }
}
