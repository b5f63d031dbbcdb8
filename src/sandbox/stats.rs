//! The public shapes of what the sandbox reports: `GET /_sandbox/stats` ([`SandboxStats`] and its
//! counts) and `GET /_sandbox/messages` ([`MessagesDump`]).
//!
//! Plain data: imports only the sandbox's other public report types, no route module or state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BulkFaultCounts, BulkStats, KindCounts, LiveClientStats};

/// What `GET /_sandbox/stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    pub messages_stored: u64,
    /// Stored messages whose externalId had already been stored.
    pub duplicate_external_ids: u64,
    /// Every `/v1` request received, answered or not.
    pub requests_total: u64,
    /// Answered `/v1` requests by status code ("201" → n).
    pub requests_by_status: BTreeMap<String, u64>,
    /// Connections closed without an answer by the drop faults.
    pub dropped_connections: u64,
    /// Highest number of `/v1` requests in flight at once.
    pub max_concurrency: u64,
    pub faults_injected: FaultCounts,
    /// The live client's requests and 429s (all zero without one).
    #[serde(default)]
    pub live_client: LiveClientStats,
    /// Creates answered 429 by [`SandboxConfig::error_429`].
    #[serde(default)]
    pub injected_429: u64,
    /// Create requests received (`POST /v1/conversations/{id}/messages`), answered or not.
    #[serde(default)]
    pub creates: u64,
    /// Create requests received per conversation id in the path.
    #[serde(default)]
    pub creates_by_conversation: BTreeMap<String, u64>,
    /// ExternalId lookups by spelling and outcome.
    #[serde(default)]
    pub lookups: LookupCounts,
    /// Messages stored by `POST /_sandbox/seed` (not in `messages_stored`).
    #[serde(default)]
    pub seeded: u64,
    /// Requests to `/_sandbox/redirected` (a redirect someone followed).
    #[serde(default)]
    pub redirect_hits: u64,
    /// `/v1` requests in flight right now.
    #[serde(default)]
    pub in_flight: u64,
    /// `/v1` requests waiting on `POST /_sandbox/hold` right now.
    #[serde(default)]
    pub held: u64,
    /// The most requests charged to the org in one rate-limit window (the live client's too).
    #[serde(default)]
    pub max_requests_in_a_window: u64,
    /// The shortest time, in ms, from a create stored but answered with no usable answer
    /// (`store_then_drop`, `store_then_error`) to the first lookup of its externalId; null
    /// until such a lookup arrives.
    #[serde(default)]
    pub lookup_after_unknown_outcome_min_ms: Option<u64>,
    /// Bulk jobs, items, polls and results reads (`bulk_*` keys at the top level).
    #[serde(flatten, default)]
    pub bulk: BulkStats,
    /// Customer creates, lookups and faults (issue 16).
    #[serde(default)]
    pub customers: KindCounts,
    /// Conversation creates, lookups, messages listings and faults (issue 16).
    #[serde(default)]
    pub conversations: KindCounts,
}

/// ExternalId lookups (`GET /v1/messages/externalId=..` and `externalid=..`) that reached the
/// lookup handler (past auth, the org limit and the read role).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupCounts {
    /// `externalId=`.
    pub camel: SpellingCounts,
    /// `externalid=`.
    pub lower: SpellingCounts,
    /// Lookups answered 429 by the `lookup_429` dice (either spelling; not in the above).
    /// Also counts the customer and conversation reads it answered 429 (see their sections).
    pub lookup_429: u64,
    /// Hits answered with a seeded message first under `lookup_other_first`.
    #[serde(default)]
    pub other_first: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpellingCounts {
    /// Answered with a message (or a non-empty list).
    pub hit: u64,
    /// Spelling accepted, nothing stored under the id: 404, or 200 with empty data.
    pub miss: u64,
    /// Spelling not accepted (`lookup` setting): 404 as if the route did not exist.
    pub no_route: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    pub error_500: u64,
    pub error_503: u64,
    pub drop_before_store: u64,
    pub store_then_drop: u64,
    pub rate_limited_org: u64,
    pub rate_limited_customer: u64,
    #[serde(default)]
    pub store_then_error: u64,
    /// Counted once the held message is stored.
    #[serde(default)]
    pub slow_store: u64,
    #[serde(default)]
    pub accepted_202: u64,
    #[serde(default)]
    pub created_without_id: u64,
    #[serde(default)]
    pub oversize_body: u64,
    #[serde(default)]
    pub lookup_429: u64,
    /// Lookups answered 503 while `POST /_sandbox/lookups/fail` is in force.
    #[serde(default)]
    pub lookup_503: u64,
    /// Lookups answered 408 while `POST /_sandbox/lookups/fail?status=408` is in force.
    #[serde(default)]
    pub lookup_408: u64,
    /// Creates answered 403 while `POST /_sandbox/forbid` is in force.
    #[serde(default)]
    pub forbidden: u64,
    /// `/v1` requests answered 307 by `redirect_to`.
    #[serde(default)]
    pub redirected: u64,
    /// Bulk faults (`bulk_*` keys beside the others).
    #[serde(flatten, default)]
    pub bulk: BulkFaultCounts,
}

/// What `GET /_sandbox/messages` answers: stored messages per conversation, in storing order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesDump {
    pub conversations: BTreeMap<String, Vec<SandboxMessage>>,
}

/// One stored message as listed by `GET /_sandbox/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMessage {
    pub id: String,
    pub external_id: Option<String>,
    pub sent_at: Option<String>,
    pub created_at: Option<String>,
    pub created_by: String,
    pub modified_at: Option<String>,
    pub modified_by: String,
    pub imported_at: Option<String>,
    pub direction: Option<String>,
    pub preview: Option<String>,
    /// Stored by `POST /_sandbox/seed`, as if by another integration.
    #[serde(default)]
    pub seeded: bool,
}
