//! The conversations whose heads are away from the batcher: riding a job, or on their way back
//! (their job ended, or their head went alone, and the lane has not handed over its next row
//! yet). The deepest of them is the critical path that the heads waiting in the batcher are
//! measured against, so a job that just ended does not look like an empty road.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a conversation whose head is due back still counts: a lane records its row's
/// answer and reads its next row in milliseconds, or is parked (a settle delay, a retry) and
/// no longer on the road this round.
pub(super) const RETURN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(super) struct Away {
    chains: HashMap<String, Chain>,
}

#[derive(Debug, Clone, Copy)]
struct Chain {
    /// Rows the conversation has left, the one away included while it rides.
    depth: u64,
    /// Set once its head is due back: after this it no longer counts.
    back_by: Option<Instant>,
}

impl Away {
    /// Its head rides a job, `depth` rows left with it.
    pub(super) fn riding(&mut self, conversation: &str, depth: u64) {
        self.chains.insert(
            conversation.to_string(),
            Chain {
                depth,
                back_by: None,
            },
        );
    }

    /// The job that carried its head (sent with `depth` rows left) has ended: its next head,
    /// if it has one, is due back. Nothing changes if the head is already back.
    pub(super) fn job_ended(&mut self, conversation: &str, depth: u64, now: Instant) {
        let Some(chain) = self.chains.get_mut(conversation) else {
            return;
        };
        if chain.depth != depth || chain.back_by.is_some() {
            return;
        }
        if depth <= 1 {
            self.chains.remove(conversation);
        } else {
            chain.depth = depth - 1;
            chain.back_by = Some(now + RETURN_GRACE);
        }
    }

    /// Its head, sent with `depth` rows left, goes alone: its next head is due back soon.
    pub(super) fn alone(&mut self, conversation: &str, depth: u64, now: Instant) {
        if depth > 1 {
            self.chains.insert(
                conversation.to_string(),
                Chain {
                    depth: depth - 1,
                    back_by: Some(now + RETURN_GRACE),
                },
            );
        }
    }

    /// Its next head is back in the batcher.
    pub(super) fn back(&mut self, conversation: &str) {
        self.chains.remove(conversation);
    }

    /// Conversations away, as of the last [`Away::deepest`].
    pub(super) fn len(&self) -> usize {
        self.chains.len()
    }

    /// The most rows any conversation away has left (0 when none), forgetting those overdue.
    pub(super) fn deepest(&mut self, now: Instant) -> u64 {
        self.chains
            .retain(|_, chain| chain.back_by.is_none_or(|back_by| now < back_by));
        self.chains
            .values()
            .map(|chain| chain.depth)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_counts_while_it_rides_and_until_its_next_head_is_back() {
        let now = Instant::now();
        let mut away = Away::default();
        away.riding("deep", 40);
        away.riding("shallow", 1);
        assert_eq!(away.deepest(now), 40);
        // Its job ended: one row fewer, due back.
        away.job_ended("deep", 40, now);
        away.job_ended("shallow", 1, now);
        assert_eq!(away.deepest(now), 39);
        // A second end of the same ride changes nothing.
        away.job_ended("deep", 40, now);
        assert_eq!(away.deepest(now), 39);
        away.back("deep");
        assert_eq!(away.deepest(now), 0, "the shallow one had no row left");
    }

    #[test]
    fn a_head_that_is_back_and_riding_again_is_not_ended_by_its_old_job() {
        let now = Instant::now();
        let mut away = Away::default();
        away.riding("c", 10);
        // The lane's next head came back and rode a new job before the old job's end was seen.
        away.back("c");
        away.riding("c", 9);
        away.job_ended("c", 10, now);
        assert_eq!(away.deepest(now), 9);
    }

    #[test]
    fn a_head_due_back_stops_counting_after_the_grace() {
        let now = Instant::now();
        let mut away = Away::default();
        away.alone("parked", 30, now);
        away.alone("last", 1, now);
        assert_eq!(away.deepest(now), 29);
        assert_eq!(away.deepest(now + RETURN_GRACE), 0);
    }
}
