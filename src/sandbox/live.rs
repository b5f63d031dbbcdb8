//! A live integration inside the sandbox: chat widgets, email and webhooks spending the org's
//! limit beside the import, at a rate pattern given at start. Its requests are charged to the
//! org window exactly like `/v1` requests (so the import sees them in `x-ratelimit-remaining`),
//! but they never touch the network or the import's counters: `/_sandbox/stats` reports them on
//! their own, with the 429s this client received, the figure a migration must keep at zero.
//!
//! The loop is bounded: it issues at most the pattern's cumulative count, catches up at most
//! one second's worth after a stall, and ends when the sandbox shuts down.
//!
//! Imports only the state; never a route module.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::state::Shared;

/// How often the client wakes to catch up with its pattern.
const TICK: Duration = Duration::from_millis(10);

/// Requests per second over time, repeating.
#[derive(Debug, Clone, PartialEq)]
pub enum LivePattern {
    /// `constant:RATE`.
    Constant(f64),
    /// `bursts:RATE/SECS,RATE/SECS,...`: each phase's rate for its length, then the next, the
    /// whole cycle repeating.
    Phases(Vec<(f64, Duration)>),
}

/// What the live client did, in `/_sandbox/stats` as `live_client`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveClientStats {
    /// Requests it made (all charged to the org window).
    pub requests: u64,
    pub ok: u64,
    /// Requests the org limit refused: the live integration's outage.
    pub rate_limited: u64,
}

impl FromStr for LivePattern {
    type Err = String;

    fn from_str(text: &str) -> Result<LivePattern, String> {
        let rate = |raw: &str| -> Result<f64, String> {
            let rate: f64 = raw
                .trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not a rate"))?;
            if rate.is_finite() && (0.0..=100_000.0).contains(&rate) {
                Ok(rate)
            } else {
                Err(format!("rate {raw:?} must be within 0..=100000 per second"))
            }
        };
        let pattern = match text.trim().split_once(':') {
            Some(("constant", value)) => LivePattern::Constant(rate(value)?),
            Some(("bursts", phases)) => {
                let phases = phases
                    .split(',')
                    .map(|phase| {
                        let (value, secs) = phase
                            .split_once('/')
                            .ok_or_else(|| format!("phase {phase:?} must be RATE/SECS"))?;
                        let secs: f64 = secs
                            .trim()
                            .parse()
                            .map_err(|_| format!("{secs:?} is not a number of seconds"))?;
                        if !(secs.is_finite() && (0.01..=86_400.0).contains(&secs)) {
                            return Err(format!("phase length {secs} must be 0.01..=86400 s"));
                        }
                        Ok((rate(value)?, Duration::from_secs_f64(secs)))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                LivePattern::Phases(phases)
            }
            _ => {
                return Err(format!(
                    "{text:?}: expected constant:RATE or bursts:RATE/SECS,RATE/SECS"
                ))
            }
        };
        Ok(pattern)
    }
}

impl LivePattern {
    /// Requests the pattern has asked for from its start to `elapsed`.
    fn cumulative(&self, elapsed: Duration) -> f64 {
        match self {
            LivePattern::Constant(rate) => rate * elapsed.as_secs_f64(),
            LivePattern::Phases(phases) => {
                let cycle: f64 = phases.iter().map(|(_, len)| len.as_secs_f64()).sum();
                let per_cycle: f64 = phases
                    .iter()
                    .map(|(rate, len)| rate * len.as_secs_f64())
                    .sum();
                if cycle <= 0.0 {
                    return 0.0;
                }
                let t = elapsed.as_secs_f64();
                let whole = (t / cycle).floor();
                let mut total = whole * per_cycle;
                let mut into = t - whole * cycle;
                for (rate, len) in phases {
                    let span = into.min(len.as_secs_f64());
                    total += rate * span;
                    into -= span;
                    if into <= 0.0 {
                        break;
                    }
                }
                total
            }
        }
    }

    /// The fastest rate of the pattern: bounds how much one catch-up may issue.
    fn peak(&self) -> f64 {
        match self {
            LivePattern::Constant(rate) => *rate,
            LivePattern::Phases(phases) => phases.iter().map(|(rate, _)| *rate).fold(0.0, f64::max),
        }
    }
}

/// Spends the org window at `pattern` until `shutdown`.
pub(crate) async fn run(shared: Arc<Shared>, pattern: LivePattern, shutdown: CancellationToken) {
    let started = Instant::now();
    let catch_up_limit = pattern.peak().ceil().max(1.0) as u64;
    let mut issued = 0u64;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let due = pattern.cumulative(now.duration_since(started)).floor() as u64;
        // After a stall a real client would have lost those requests, not fired them at once.
        if due > issued + catch_up_limit {
            issued = due - catch_up_limit;
        }
        while issued < due {
            shared.charge_live_request(now);
            issued += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_accumulate() {
        let bursts: LivePattern = "bursts:24/15,12/15".parse().unwrap();
        assert_eq!(
            bursts,
            LivePattern::Phases(vec![
                (24.0, Duration::from_secs(15)),
                (12.0, Duration::from_secs(15))
            ])
        );
        let at = |secs: u64| bursts.cumulative(Duration::from_secs(secs)).round() as u64;
        assert_eq!(at(15), 360);
        assert_eq!(at(30), 540);
        assert_eq!(at(60), 1080);
        assert_eq!(at(75), 1440);
        assert_eq!(bursts.peak(), 24.0);
        let constant: LivePattern = "constant:18".parse().unwrap();
        assert_eq!(constant.cumulative(Duration::from_secs(60)).round(), 1080.0);
        for bad in [
            "",
            "steady:5",
            "constant:-1",
            "constant:NaN",
            "bursts:24",
            "bursts:24/0",
            "bursts:x/5",
        ] {
            assert!(bad.parse::<LivePattern>().is_err(), "{bad:?}");
        }
    }
}
