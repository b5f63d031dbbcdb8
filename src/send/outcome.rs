//! Turning an answer into a row's fate: what a lookup answer means for this row, whether the
//! audit fields survived, and the recorded results themselves (their error codes are the
//! checkpoint's, in [`crate::checkpoint::codes`]).

use crate::checkpoint::{now_ms, RowResult, RowState};
use crate::client::{ApiError, CreatedMessage, FoundMessage, LookupAnswer, Timing};

/// What a lookup answer says about one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The row's own message: its externalId, in its conversation.
    Own { message_id: String },
    /// Messages with the row's externalId exist, but only in other conversations (another
    /// system used the same source id): not this row's.
    ElsewhereOnly { conversation_id: String },
    /// Nothing with this externalId. `trusted_answer`: the route said so explicitly (200 with
    /// empty data); a bare 404 is trusted only on a proven route.
    NotFound { trusted_answer: bool },
}

/// Reads a lookup answer strictly: a hit counts only if its externalId and conversation are the
/// row's own; among several, the one in the row's conversation wins.
pub fn judge_lookup(answer: &LookupAnswer, external_id: &str, conversation_id: &str) -> Verdict {
    let found = match answer {
        LookupAnswer::Empty => {
            return Verdict::NotFound {
                trusted_answer: true,
            }
        }
        LookupAnswer::Missing => {
            return Verdict::NotFound {
                trusted_answer: false,
            }
        }
        LookupAnswer::Found(found) => found,
    };
    let same_id: Vec<&FoundMessage> = found
        .iter()
        .filter(|message| message.external_id.as_deref() == Some(external_id))
        .collect();
    if let Some(own) = same_id
        .iter()
        .find(|message| message.conversation_id.as_deref() == Some(conversation_id))
    {
        return Verdict::Own {
            message_id: own.id.clone(),
        };
    }
    match same_id
        .iter()
        .find_map(|message| message.conversation_id.clone())
    {
        Some(conversation_id) => Verdict::ElsewhereOnly { conversation_id },
        // Messages for other externalIds, or ones that do not say where they live: a route that
        // answers without honouring the filter has not said "found".
        None => Verdict::NotFound {
            trusted_answer: false,
        },
    }
}

/// The audit fields as sent in a body.
#[derive(serde::Deserialize)]
struct SentAudit {
    #[serde(rename = "createdAt")]
    created_at: Option<String>,
    #[serde(rename = "createdBy")]
    created_by: Option<String>,
}

/// Says how Kustomer changed createdAt/createdBy, if it did. Fields the response does not carry
/// cannot be checked and are not reported.
pub fn audit_mismatch(body: &str, created: &CreatedMessage) -> Option<String> {
    let sent: SentAudit = serde_json::from_str(body).ok()?;
    let mut changes = Vec::new();
    if let (Some(sent), Some(got)) = (&sent.created_at, &created.created_at) {
        let same_instant = match (
            sent.parse::<jiff::Timestamp>(),
            got.parse::<jiff::Timestamp>(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => sent == got,
        };
        if !same_instant {
            changes.push(format!("createdAt sent {sent}, stored {got}"));
        }
    }
    if let (Some(sent), Some(got)) = (&sent.created_by, &created.created_by) {
        if sent != got {
            changes.push(format!("createdBy sent {sent}, stored {got}"));
        }
    }
    (!changes.is_empty()).then(|| {
        format!(
            "created, but Kustomer overwrote its audit fields ({}): the key probably lacks org.admin",
            changes.join("; ")
        )
    })
}

fn millis(duration: Option<std::time::Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Created (or found) with this message id.
pub fn succeeded(message_id: String, http_status: Option<u16>, timing: Timing) -> RowResult {
    RowResult {
        state: RowState::Succeeded,
        message_id: Some(message_id),
        http_status,
        error_code: None,
        error_message: None,
        retryable: false,
        latency_ms: millis(timing.latency),
        budget_wait_ms: timing.latency.and(millis(Some(timing.admission))),
        at_ms: now_ms(),
    }
}

/// Found by lookup: with `code` when that is worth reporting (found_existing).
pub fn found(message_id: String, code: Option<(&str, String)>) -> RowResult {
    let mut result = succeeded(message_id, None, Timing::default());
    if let Some((code, message)) = code {
        result.error_code = Some(code.into());
        result.error_message = Some(message);
    }
    result
}

/// A failure recorded from an API error.
pub fn failure(state: RowState, err: &ApiError, retryable: bool, timing: Timing) -> RowResult {
    RowResult {
        state,
        message_id: None,
        http_status: err.http_status(),
        error_code: Some(err.code()),
        error_message: Some(err.to_string()),
        retryable,
        latency_ms: millis(timing.latency),
        budget_wait_ms: timing.latency.and(millis(Some(timing.admission))),
        at_ms: now_ms(),
    }
}

/// A failure with our own code and explanation. Retryable failures hold their conversation.
pub fn failed(code: &str, message: String, retryable: bool) -> RowResult {
    RowResult {
        state: RowState::Failed,
        message_id: None,
        http_status: None,
        error_code: Some(code.into()),
        error_message: Some(message),
        retryable,
        latency_ms: None,
        budget_wait_ms: None,
        at_ms: now_ms(),
    }
}

/// Back to pending: known not created (refused before processing, or never sent).
pub fn not_sent(err: &ApiError) -> RowResult {
    RowResult {
        state: RowState::Pending,
        message_id: None,
        http_status: err.http_status(),
        error_code: Some(err.code()),
        error_message: Some(err.to_string()),
        retryable: true,
        latency_ms: None,
        budget_wait_ms: None,
        at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, external: Option<&str>, conversation: Option<&str>) -> FoundMessage {
        FoundMessage {
            id: id.into(),
            external_id: external.map(str::to_string),
            conversation_id: conversation.map(str::to_string),
        }
    }

    #[test]
    fn a_hit_counts_only_in_the_rows_own_conversation() {
        let answer = LookupAnswer::Found(vec![
            message("m-other", Some("e1"), Some("c2")),
            message("m-own", Some("e1"), Some("c1")),
        ]);
        assert_eq!(
            judge_lookup(&answer, "e1", "c1"),
            Verdict::Own {
                message_id: "m-own".into()
            }
        );
        assert_eq!(
            judge_lookup(&answer, "e1", "c3"),
            Verdict::ElsewhereOnly {
                conversation_id: "c2".into()
            }
        );
    }

    #[test]
    fn answers_that_do_not_name_the_row_are_not_hits() {
        let wrong_id = LookupAnswer::Found(vec![message("m", Some("e2"), Some("c1"))]);
        assert_eq!(
            judge_lookup(&wrong_id, "e1", "c1"),
            Verdict::NotFound {
                trusted_answer: false
            }
        );
        let unplaced = LookupAnswer::Found(vec![message("m", Some("e1"), None)]);
        assert_eq!(
            judge_lookup(&unplaced, "e1", "c1"),
            Verdict::NotFound {
                trusted_answer: false
            }
        );
        assert_eq!(
            judge_lookup(&LookupAnswer::Empty, "e1", "c1"),
            Verdict::NotFound {
                trusted_answer: true
            }
        );
        assert_eq!(
            judge_lookup(&LookupAnswer::Missing, "e1", "c1"),
            Verdict::NotFound {
                trusted_answer: false
            }
        );
    }

    fn created(at: Option<&str>, by: Option<&str>) -> CreatedMessage {
        CreatedMessage {
            id: "x".into(),
            created_at: at.map(str::to_string),
            created_by: by.map(str::to_string),
            conversation_id: None,
        }
    }

    #[test]
    fn audit_fields_compared_as_instants_and_ids() {
        let body =
            r#"{"createdAt":"2020-01-01T10:00:00.000Z","createdBy":"5f0000000000000000000001"}"#;
        assert_eq!(
            audit_mismatch(
                body,
                &created(
                    Some("2020-01-01T10:00:00Z"),
                    Some("5f0000000000000000000001")
                )
            ),
            None
        );
        let changed = audit_mismatch(
            body,
            &created(
                Some("2026-11-26T14:00:00Z"),
                Some("5f00000000000000000000ff"),
            ),
        )
        .unwrap();
        assert!(
            changed.contains("createdAt sent 2020-01-01T10:00:00.000Z"),
            "{changed}"
        );
        assert!(
            changed.contains("createdBy sent 5f0000000000000000000001"),
            "{changed}"
        );
        assert_eq!(audit_mismatch(body, &created(None, None)), None);
        assert_eq!(
            audit_mismatch("{}", &created(Some("2026-11-26T14:00:00Z"), None)),
            None
        );
    }
}
