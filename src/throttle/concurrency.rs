//! How many requests may be in flight at once: fixed (`--concurrency N`) or adaptive
//! (`--concurrency auto`), in the AIMD manner of Vector's adaptive request concurrency.
//!
//! Adaptive: once per observation window (about one round-trip time), if the window saw no
//! back-pressure (429, 5xx, timeouts, lost connections), the limit was actually used, and latency
//! stayed near its moving average, the limit grows by one; any back-pressure cuts it by a quarter.
//! It never exceeds the ceiling (`--max-concurrency`) nor drops below one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const DECREASE_RATIO: f64 = 0.75;
/// Latency this much above its moving average counts as the service slowing down.
const LATENCY_TOLERANCE: f64 = 1.3;
const EWMA_WEIGHT: f64 = 0.3;
const SHORTEST_WINDOW: Duration = Duration::from_millis(50);
const ADAPTIVE_START: usize = 4;

/// What a finished request tells the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered, and not a sign of overload (2xx, most 4xx).
    Healthy,
    /// 429, 5xx, timeout, lost connection: slow down.
    BackPressure,
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
    rtt_average: Option<f64>,
    window_started: Instant,
    window_rtt_sum: f64,
    window_rtt_count: u32,
    window_peak_in_flight: usize,
    window_back_pressure: bool,
}

/// A slot for one request; give it back with [`Slot::release`].
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
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
                window_started: Instant::now(),
                window_rtt_sum: 0.0,
                window_rtt_count: 0,
                window_peak_in_flight: 0,
                window_back_pressure: false,
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

    pub fn release(&self, slot: Slot, signal: Signal) {
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
            }
            Signal::BackPressure => state.window_back_pressure = true,
        }
        let window = state
            .rtt_average
            .map_or(SHORTEST_WINDOW, Duration::from_secs_f64)
            .max(SHORTEST_WINDOW);
        if state.window_started.elapsed() >= window {
            self.adjust(&mut state);
        }
    }

    fn adjust(&self, state: &mut State) {
        let window_rtt = (state.window_rtt_count > 0)
            .then(|| state.window_rtt_sum / f64::from(state.window_rtt_count));
        if state.window_back_pressure {
            let decreased = ((state.limit as f64) * DECREASE_RATIO).floor() as usize;
            let target = decreased.max(1);
            self.shrink_to(state, target);
        } else if let Some(rtt) = window_rtt {
            let steady = state
                .rtt_average
                .is_none_or(|average| rtt <= average * LATENCY_TOLERANCE);
            if steady && state.window_peak_in_flight >= state.limit && state.limit < self.ceiling {
                state.limit += 1;
                if state.owed > 0 {
                    state.owed -= 1;
                } else {
                    self.semaphore.add_permits(1);
                }
            }
        }
        if let Some(rtt) = window_rtt {
            state.rtt_average = Some(match state.rtt_average {
                Some(average) => average * (1.0 - EWMA_WEIGHT) + rtt * EWMA_WEIGHT,
                None => rtt,
            });
        }
        state.window_started = Instant::now();
        state.window_rtt_sum = 0.0;
        state.window_rtt_count = 0;
        state.window_peak_in_flight = state.in_flight;
        state.window_back_pressure = false;
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn round(limit: &ConcurrencyLimit, requests: usize, rtt: Duration, signal: Signal) {
        let mut slots = Vec::new();
        for _ in 0..requests {
            slots.push(limit.acquire().await);
        }
        tokio::time::sleep(rtt).await;
        for slot in slots {
            limit.release(slot, signal);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_never_moves() {
        let limit = ConcurrencyLimit::fixed(8);
        for _ in 0..20 {
            round(&limit, 8, Duration::from_millis(60), Signal::BackPressure).await;
        }
        assert_eq!(limit.limit(), 8);
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
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_grow_when_the_limit_is_not_used() {
        let limit = ConcurrencyLimit::adaptive(64);
        for _ in 0..20 {
            round(&limit, 1, Duration::from_millis(60), Signal::Healthy).await;
        }
        assert_eq!(limit.limit(), ADAPTIVE_START);
    }

    #[tokio::test(start_paused = true)]
    async fn back_pressure_cuts_multiplicatively_and_retires_permits() {
        let limit = ConcurrencyLimit::adaptive(64);
        for _ in 0..30 {
            let current = limit.limit();
            round(&limit, current, Duration::from_millis(60), Signal::Healthy).await;
        }
        let before = limit.limit();
        assert!(before > 20, "{before}");
        round(&limit, 2, Duration::from_millis(60), Signal::BackPressure).await;
        let after = limit.limit();
        assert_eq!(after, ((before as f64) * DECREASE_RATIO).floor() as usize);
        // The semaphore now admits exactly `after` at once.
        let mut slots = Vec::new();
        for _ in 0..after {
            slots.push(limit.acquire().await);
        }
        assert!(limit.semaphore.try_acquire().is_err());
        for slot in slots {
            limit.release(slot, Signal::Healthy);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slowing_latency_stops_growth() {
        let limit = ConcurrencyLimit::adaptive(64);
        for _ in 0..5 {
            let current = limit.limit();
            round(&limit, current, Duration::from_millis(60), Signal::Healthy).await;
        }
        // Requests answered in the same instant as an adjustment count in the next window, so
        // the first slow round still measures the old latency; from the second one on, latency
        // well above its moving average holds the limit.
        let mut rtt = Duration::from_millis(120);
        let current = limit.limit();
        round(&limit, current, rtt, Signal::Healthy).await;
        let before = limit.limit();
        for _ in 0..4 {
            rtt *= 2;
            let current = limit.limit();
            round(&limit, current, rtt, Signal::Healthy).await;
        }
        assert_eq!(limit.limit(), before);
    }
}
