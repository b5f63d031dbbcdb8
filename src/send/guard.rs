//! The re-import guard: before a job's first row is ever sent, look up the first row of a sample
//! of conversations spread through the file. The same export run again as a new job (from
//! another directory, with a fresh checkpoint) would otherwise create every message a second
//! time without a word.

use std::sync::Arc;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::retry::{RequestKind, RetryAction};

use super::control::Halt;
use super::events::SendEvent;
use super::outcome::{judge_lookup, Verdict};
use super::Shared;

/// Conversations sampled: enough to catch a re-import of any real export, few enough to cost
/// nothing against the budget.
pub const SAMPLE_CONVERSATIONS: usize = 20;

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

/// The first row (in send order) of up to [`SAMPLE_CONVERSATIONS`] conversations, evenly spread
/// over `conversations` (ordered by where they start in the file).
pub fn sample(
    checkpoint: &Checkpoint,
    conversations: &[String],
) -> Result<Vec<SampleRow>, CheckpointError> {
    let count = conversations.len().min(SAMPLE_CONVERSATIONS);
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
