//! Dice for injected faults and latency. All randomness comes from seeded generators so that a
//! seed reproduces the same fault sequence for the same order of requests.
//!
//! Plain dice: imports only the sandbox's public config types; nothing else of the sandbox.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::{Faults, SandboxError};

/// What the dice decided for one create request that got past auth and the org limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultRoll {
    pub before_store: BeforeStore,
    /// Only acted upon if the message actually gets stored.
    pub once_stored: OnceStored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeforeStore {
    Proceed,
    Error500,
    Error503,
    DropConnection,
}

/// How a create that passes every check is stored and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnceStored {
    /// Stored, 201 with the message document.
    Created,
    /// Stored, then the connection closes with no answer.
    Drop,
    /// Stored, then answered with this status (408 or 5xx) and a gateway-like body.
    Error(u16),
    /// Held `slow_store_delay`, then stored (even if the client has gone), then 201.
    Slow,
    /// Stored, 202 with the message document.
    Accepted,
    /// Stored, 201 with a document that names no message id.
    WithoutId,
    /// Stored, 201 with the document padded to about 2 MiB.
    Oversize,
}

/// Whether an externalId lookup is answered 429.
pub(crate) fn roll_lookup_429(probability: f64, rng: &mut StdRng) -> bool {
    let draw: f64 = rng.random();
    draw < probability
}

fn check_probability(name: &str, probability: f64) -> Result<(), SandboxError> {
    if (0.0..=1.0).contains(&probability) {
        Ok(())
    } else {
        Err(SandboxError::InvalidConfig(format!(
            "fault probability {name} must be within 0..=1, got {probability}"
        )))
    }
}

fn check_exclusive(names: &str, sum: f64) -> Result<(), SandboxError> {
    if sum > 1.0 + f64::EPSILON {
        return Err(SandboxError::InvalidConfig(format!(
            "{names} must not exceed 1 (exclusive outcomes of one draw), got {sum}"
        )));
    }
    Ok(())
}

/// The most a create may be held by `slow_store`.
pub(crate) const MAX_SLOW_STORE_DELAY: Duration = Duration::from_secs(600);

impl Faults {
    /// Rejects probabilities outside 0..=1, exclusive outcomes of one draw summing above 1, a
    /// store-then-error status that is neither 408 nor 5xx (or none at all) and a slow store held
    /// longer than ten minutes.
    pub(crate) fn check(&self) -> Result<(), SandboxError> {
        let named = [
            ("error_500", self.error_500),
            ("error_503", self.error_503),
            ("drop_before_store", self.drop_before_store),
            ("store_then_drop", self.store_then_drop),
            ("store_then_error", self.store_then_error),
            ("slow_store", self.slow_store),
            ("accepted_202", self.accepted_202),
            ("created_without_id", self.created_without_id),
            ("oversize_body", self.oversize_body),
            ("lookup_429", self.lookup_429),
        ];
        for (name, probability) in named {
            check_probability(name, probability)?;
        }
        check_exclusive(
            "error_500 + error_503 + drop_before_store",
            self.error_500 + self.error_503 + self.drop_before_store,
        )?;
        check_exclusive(
            "store_then_drop + store_then_error + slow_store + accepted_202 + \
             created_without_id + oversize_body",
            self.once_stored_table(500).iter().map(|(p, _)| p).sum(),
        )?;
        if self.store_then_error_statuses.is_empty() {
            return Err(SandboxError::InvalidConfig(
                "store_then_error needs at least one status".into(),
            ));
        }
        if let Some(status) = self
            .store_then_error_statuses
            .iter()
            .find(|status| !(**status == 408 || (500..=599).contains(*status)))
        {
            return Err(SandboxError::InvalidConfig(format!(
                "store_then_error status {status} is neither 408 nor within 500..=599"
            )));
        }
        if self.slow_store_delay > MAX_SLOW_STORE_DELAY {
            return Err(SandboxError::InvalidConfig(format!(
                "slow_store_delay must be at most {} ms, got {} ms",
                MAX_SLOW_STORE_DELAY.as_millis(),
                self.slow_store_delay.as_millis()
            )));
        }
        Ok(())
    }

    /// The exclusive outcomes of the second draw, in the order their ranges are laid out.
    fn once_stored_table(&self, error_status: u16) -> [(f64, OnceStored); 6] {
        [
            (self.store_then_drop, OnceStored::Drop),
            (self.store_then_error, OnceStored::Error(error_status)),
            (self.slow_store, OnceStored::Slow),
            (self.accepted_202, OnceStored::Accepted),
            (self.created_without_id, OnceStored::WithoutId),
            (self.oversize_body, OnceStored::Oversize),
        ]
    }

    /// Always draws exactly three numbers, so the sequence stays aligned whatever the outcome:
    /// the first picks what happens before storing (500, 503, drop, proceed), the second what
    /// happens once stored (laid out as in `once_stored_table`), the third which
    /// `store_then_error_statuses` entry answers.
    pub(crate) fn roll(&self, rng: &mut StdRng) -> FaultRoll {
        let before: f64 = rng.random();
        let after: f64 = rng.random();
        let status_pick: f64 = rng.random();
        let before_store = if before < self.error_500 {
            BeforeStore::Error500
        } else if before < self.error_500 + self.error_503 {
            BeforeStore::Error503
        } else if before < self.error_500 + self.error_503 + self.drop_before_store {
            BeforeStore::DropConnection
        } else {
            BeforeStore::Proceed
        };
        let mut once_stored = OnceStored::Created;
        let mut bound = 0.0;
        for (probability, outcome) in self.once_stored_table(self.pick_status(status_pick)) {
            bound += probability;
            if after < bound {
                once_stored = outcome;
                break;
            }
        }
        FaultRoll {
            before_store,
            once_stored,
        }
    }

    /// The status of a store-then-error for a uniform draw in 0..1.
    fn pick_status(&self, draw: f64) -> u16 {
        let statuses = &self.store_then_error_statuses;
        // Truncation is the point: the draw's share of the list, clamped for draw ~ 1.
        let index = ((draw * statuses.len() as f64) as usize).min(statuses.len().saturating_sub(1));
        statuses.get(index).copied().unwrap_or(500)
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
            assert_eq!(roll.once_stored, OnceStored::Drop);
        }
        let none = Faults::default();
        for _ in 0..50 {
            let roll = none.roll(&mut rng);
            assert_eq!(roll.before_store, BeforeStore::Proceed);
            assert_eq!(roll.once_stored, OnceStored::Created);
        }
    }

    #[test]
    fn once_stored_outcomes_are_checked_and_exclusive() {
        let too_many = Faults {
            store_then_drop: 0.5,
            accepted_202: 0.3,
            oversize_body: 0.3,
            ..Faults::default()
        };
        assert!(too_many.check().is_err());
        for statuses in [vec![], vec![404], vec![500, 600], vec![499]] {
            let faults = Faults {
                store_then_error_statuses: statuses.clone(),
                ..Faults::default()
            };
            assert!(faults.check().is_err(), "{statuses:?}");
        }
        let fine = Faults {
            store_then_error_statuses: vec![408, 500, 520, 599],
            lookup_429: 1.0,
            ..Faults::default()
        };
        assert!(fine.check().is_ok());
        let slow = Faults {
            slow_store_delay: MAX_SLOW_STORE_DELAY + Duration::from_millis(1),
            ..Faults::default()
        };
        assert!(slow.check().is_err());
        let negative = Faults {
            lookup_429: -0.1,
            ..Faults::default()
        };
        assert!(negative.check().is_err());

        let mut rng = StdRng::seed_from_u64(5);
        let certain: [(Faults, OnceStored); 4] = [
            (
                Faults {
                    slow_store: 1.0,
                    ..Faults::default()
                },
                OnceStored::Slow,
            ),
            (
                Faults {
                    accepted_202: 1.0,
                    ..Faults::default()
                },
                OnceStored::Accepted,
            ),
            (
                Faults {
                    created_without_id: 1.0,
                    ..Faults::default()
                },
                OnceStored::WithoutId,
            ),
            (
                Faults {
                    oversize_body: 1.0,
                    ..Faults::default()
                },
                OnceStored::Oversize,
            ),
        ];
        for (faults, outcome) in certain {
            for _ in 0..20 {
                assert_eq!(faults.roll(&mut rng).once_stored, outcome);
            }
        }
    }

    #[test]
    fn store_then_error_statuses_are_drawn_uniformly() {
        let mut rng = StdRng::seed_from_u64(9);
        let faults = Faults {
            store_then_error: 1.0,
            ..Faults::default()
        };
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..3000 {
            match faults.roll(&mut rng).once_stored {
                OnceStored::Error(status) => *seen.entry(status).or_insert(0) += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [500, 502, 504]);
        assert!(seen.values().all(|n| (800..1200).contains(n)), "{seen:?}");
        assert_eq!(faults.pick_status(0.999_999_999), 504);
        assert_eq!(faults.pick_status(0.0), 500);
    }

    #[test]
    fn lookup_dice_follow_their_probability() {
        let mut rng = StdRng::seed_from_u64(2);
        assert!((0..50).all(|_| roll_lookup_429(1.0, &mut rng)));
        assert!((0..50).all(|_| !roll_lookup_429(0.0, &mut rng)));
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
