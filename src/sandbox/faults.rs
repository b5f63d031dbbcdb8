//! Dice for injected faults and latency. All randomness comes from seeded generators so that a
//! seed reproduces the same fault sequence for the same order of requests.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{Faults, SandboxError};

/// What the dice decided for one create request that got past auth and the org limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultRoll {
    pub before_store: BeforeStore,
    /// Only acted upon if the message actually gets stored.
    pub drop_after_store: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeforeStore {
    Proceed,
    Error500,
    Error503,
    DropConnection,
}

impl Faults {
    /// Rejects probabilities outside 0..=1 and pre-store probabilities summing above 1 (they are
    /// exclusive outcomes of one draw).
    pub(crate) fn check(&self) -> Result<(), SandboxError> {
        let named = [
            ("error_500", self.error_500),
            ("error_503", self.error_503),
            ("drop_before_store", self.drop_before_store),
            ("store_then_drop", self.store_then_drop),
        ];
        for (name, probability) in named {
            if !(0.0..=1.0).contains(&probability) {
                return Err(SandboxError::InvalidConfig(format!(
                    "fault probability {name} must be within 0..=1, got {probability}"
                )));
            }
        }
        let before_store = self.error_500 + self.error_503 + self.drop_before_store;
        if before_store > 1.0 + f64::EPSILON {
            return Err(SandboxError::InvalidConfig(format!(
                "error_500 + error_503 + drop_before_store must not exceed 1, got {before_store}"
            )));
        }
        Ok(())
    }

    /// Always draws exactly two numbers, so the sequence stays aligned whatever the outcome.
    pub(crate) fn roll(&self, rng: &mut StdRng) -> FaultRoll {
        let before: f64 = rng.random();
        let after: f64 = rng.random();
        let before_store = if before < self.error_500 {
            BeforeStore::Error500
        } else if before < self.error_500 + self.error_503 {
            BeforeStore::Error503
        } else if before < self.error_500 + self.error_503 + self.drop_before_store {
            BeforeStore::DropConnection
        } else {
            BeforeStore::Proceed
        };
        FaultRoll {
            before_store,
            drop_after_store: after < self.store_then_drop,
        }
    }

    /// Latency for one request: uniform in `latency ± jitter`, never below zero.
    pub(crate) fn delay(&self, rng: &mut StdRng) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let low = self.latency.saturating_sub(self.jitter);
        let high = self.latency.saturating_add(self.jitter);
        rng.random_range(low..=high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn probabilities_out_of_range_are_refused() {
        let faults = Faults {
            error_500: 1.5,
            ..Faults::default()
        };
        assert!(faults.check().is_err());
        let faults = Faults {
            error_500: 0.5,
            error_503: 0.4,
            drop_before_store: 0.2,
            ..Faults::default()
        };
        assert!(faults.check().is_err());
        assert!(Faults::default().check().is_ok());
    }

    #[test]
    fn certain_outcomes_always_happen() {
        let mut rng = StdRng::seed_from_u64(7);
        let faults = Faults {
            error_503: 1.0,
            store_then_drop: 1.0,
            ..Faults::default()
        };
        for _ in 0..50 {
            let roll = faults.roll(&mut rng);
            assert_eq!(roll.before_store, BeforeStore::Error503);
            assert!(roll.drop_after_store);
        }
        let none = Faults::default();
        for _ in 0..50 {
            let roll = none.roll(&mut rng);
            assert_eq!(roll.before_store, BeforeStore::Proceed);
            assert!(!roll.drop_after_store);
        }
    }

    #[test]
    fn rolls_split_roughly_by_probability() {
        let mut rng = StdRng::seed_from_u64(1);
        let faults = Faults {
            error_500: 0.25,
            error_503: 0.25,
            drop_before_store: 0.25,
            ..Faults::default()
        };
        let mut proceed = 0;
        for _ in 0..4000 {
            if faults.roll(&mut rng).before_store == BeforeStore::Proceed {
                proceed += 1;
            }
        }
        assert!((800..1200).contains(&proceed), "proceed = {proceed}");
    }

    #[test]
    fn delay_stays_within_jitter_bounds() {
        let mut rng = StdRng::seed_from_u64(3);
        let faults = Faults {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(20),
            ..Faults::default()
        };
        for _ in 0..200 {
            assert!(faults.delay(&mut rng) <= Duration::from_millis(30));
        }
        let fixed = Faults {
            latency: Duration::from_millis(5),
            ..Faults::default()
        };
        assert_eq!(fixed.delay(&mut rng), Duration::from_millis(5));
    }
}
