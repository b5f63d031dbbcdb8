//! The error codes recorded with a row's result, as the reports, `status` and the README name
//! them. They are the checkpoint's vocabulary: the send phase records them, `resume` and
//! `report` read them back.

/// Created or not, nobody could tell: `resume` looks the row up before anything is resent.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
/// A message with the row's externalId exists, but only in another conversation.
pub const EXTERNAL_ID_ELSEWHERE: &str = "external_id_in_other_conversation";
/// `--skip-existing` found the row already in Kustomer: succeeded without being sent.
pub const FOUND_EXISTING: &str = "found_existing";
/// An earlier row of the conversation was refused because the conversation does not exist.
pub const CONVERSATION_NOT_FOUND: &str = "conversation_not_found";
/// Created, but Kustomer replaced createdAt/createdBy.
pub const AUDIT_OVERWRITTEN: &str = "audit_fields_overwritten";
/// Answered 429 more often than one row may be.
pub const RATE_LIMITED_TOO_OFTEN: &str = "rate_limited";
/// Known not created, and out of attempts.
pub const ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";
/// `--skip-existing` could not look the row up, so it was not sent.
pub const LOOKUP_FAILED: &str = "lookup_failed";
