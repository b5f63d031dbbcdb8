//! The re-import guard: before a job's first row is ever sent, look up the first row of a sample
//! of conversations spread through the file. The same export run again as a new job (from
//! another directory, with a fresh checkpoint) would otherwise create every message a second
//! time without a word.

use std::sync::Arc;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::retry::{RequestKind, RetryAction};

use super::control::Halt;
use super::events::SendEvent;
use super::options::SendMode;
use super::outcome::{judge_lookup, Verdict};
use super::Shared;

/// The most conversations sampled: enough to catch a re-import of any real export, even one
/// stopped part way.
pub const SAMPLE_CONVERSATIONS: usize = 20;
/// The fewest conversations sampled (fewer when the job has fewer).
pub const MIN_SAMPLE_CONVERSATIONS: usize = 10;

/// How many conversations to sample for a job of `rows` rows sent in `mode`: a twentieth of the
/// requests those rows need at least (one a row, or a POST and a results read per full bulk job),
/// between [`MIN_SAMPLE_CONVERSATIONS`] and [`SAMPLE_CONVERSATIONS`]. The guard is insurance and
/// must not cost a bulk run more than about 5% of its requests: 10,000 rows in bulk need 200,
/// where 20 lookups would be a tenth. A whole export imported before is found by its first
/// lookup; ten still find, 98 times in 100, one that had begun a third of its conversations.
pub fn sample_size(rows: u64, mode: SendMode) -> usize {
    let least_requests = match mode {
        SendMode::Single => rows,
        SendMode::Bulk { batch_size, .. } => {
            rows.div_ceil(batch_size.max(1) as u64).saturating_mul(2)
        }
    };
    usize::try_from(least_requests / 20)
        .unwrap_or(usize::MAX)
        .clamp(MIN_SAMPLE_CONVERSATIONS, SAMPLE_CONVERSATIONS)
}

/// A sampled row found already in Kustomer, in its own conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub line: u64,
    pub external_id: String,
    pub conversation_id: String,
    pub message_id: String,
}

/// A row to look up: (line, externalId, conversation).
pub type SampleRow = (u64, String, String);

/// The first row (in send order) of as many conversations as [`sample_size`] says for the rows
/// the job has to send in `mode`, evenly spread over `conversations` (ordered by where they
/// start in the file).
pub fn sample(
    checkpoint: &Checkpoint,
    conversations: &[String],
    mode: SendMode,
) -> Result<Vec<SampleRow>, CheckpointError> {
    let size = sample_size(checkpoint.counts()?.pending, mode);
    let count = conversations.len().min(size);
    let mut rows = Vec::with_capacity(count);
    for index in 0..count {
        let conversation = &conversations[index * conversations.len() / count];
        if let Some(first) = checkpoint.conversation_queue(conversation)?.first() {
            rows.push((first.line, first.external_id.clone(), conversation.clone()));
        }
    }
    Ok(rows)
}

pub enum GuardVerdict {
    Clear,
    Found(Vec<Existing>),
    Stopped,
}

/// Looks the sample up. Lookups that fail make the guard inconclusive, which is said once (a
/// [`SendEvent::GuardInconclusive`]) and does not stop the run: the rows themselves are still
/// sent exactly once by this job.
pub async fn check(shared: &Arc<Shared>, sample: &[SampleRow]) -> GuardVerdict {
    let mut existing = Vec::new();
    let mut unanswered = 0;
    // Alternate spellings while neither is known to work: a re-imported export has most of the
    // sample in Kustomer, so half the sample per spelling finds it, for half the requests.
    for (index, (line, external_id, conversation_id)) in sample.iter().enumerate() {
        if shared.control.stopping() {
            return GuardVerdict::Stopped;
        }
        shared.stats().add_lookup();
        let answer = shared
            .client
            .find_by_external_id_once(external_id, index % 2 == 1)
            .await;
        shared.control.observe(&answer);
        match answer {
            Ok(answer) => {
                if let Verdict::Own { message_id } =
                    judge_lookup(&answer, external_id, conversation_id)
                {
                    shared.route_proven();
                    existing.push(Existing {
                        line: *line,
                        external_id: external_id.clone(),
                        conversation_id: conversation_id.clone(),
                        message_id,
                    });
                }
            }
            Err(err) => match err.retry_action(RequestKind::Lookup) {
                RetryAction::StopRun => {
                    shared.control.halt(Halt::Api(err));
                    return GuardVerdict::Stopped;
                }
                _ => unanswered += 1,
            },
        }
    }
    if unanswered > 0 {
        shared.control.emit(SendEvent::GuardInconclusive {
            unanswered,
            sampled: sample.len(),
        });
    }
    if existing.is_empty() {
        GuardVerdict::Clear
    } else {
        GuardVerdict::Found(existing)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bulk(batch_size: usize) -> SendMode {
        SendMode::Bulk {
            batch_size,
            job_seconds: 3.0,
            max_jobs: 50,
            max_job_wait: Duration::from_secs(1800),
        }
    }

    #[test]
    fn the_sample_is_a_twentieth_of_the_least_requests_between_ten_and_twenty() {
        assert_eq!(sample_size(60, SendMode::Single), 10);
        assert_eq!(sample_size(300, SendMode::Single), 15);
        assert_eq!(sample_size(10_000, SendMode::Single), 20);
        // 100 jobs: 200 requests at least.
        assert_eq!(sample_size(10_000, bulk(100)), 10);
        assert_eq!(sample_size(30_000, bulk(100)), 20);
        assert_eq!(sample_size(0, bulk(100)), 10);
        assert_eq!(sample_size(u64::MAX, bulk(0)), 20);
    }
}
