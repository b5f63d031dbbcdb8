//! Customers and conversations the sandbox has created or been seeded with (issue 16), their
//! indexes (by id, by externalId, by lowercased email) and their counters. It lives inside the
//! one locked `World` so that a message stored into a conversation created here joins that
//! conversation's customer in the same critical section.
//!
//! Part of the state's data: imports only `faults`; never a route module, `http` or the state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::faults::{BeforeStore, OnceStored};

/// What kind of object a create makes: the scope of the create dice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateKind {
    Message,
    Customer,
    Conversation,
}

/// A stored customer or conversation; the response builders share it read-only.
#[derive(Debug)]
pub(crate) struct StoredRecord {
    pub id: String,
    /// The conversation's customer (None for a customer).
    pub customer_id: Option<String>,
    pub created_by: String,
    pub modified_by: String,
    pub attributes: Map<String, Value>,
    /// Stored by `POST /_sandbox/seed`, as if by another integration.
    pub seeded: bool,
}

impl StoredRecord {
    pub(crate) fn external_id(&self) -> Option<&str> {
        self.attributes.get("externalId").and_then(Value::as_str)
    }

    /// Every address in `emails[].email`, as stored (any letter case).
    pub(crate) fn emails(&self) -> Vec<String> {
        self.attributes
            .get("emails")
            .and_then(Value::as_array)
            .map(|emails| {
                emails
                    .iter()
                    .filter_map(|entry| entry.get("email").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One kind's records and indexes.
#[derive(Debug, Default)]
struct Records {
    all: Vec<Arc<StoredRecord>>,
    by_id: HashMap<String, usize>,
    by_external_id: HashMap<String, Vec<usize>>,
    counts: KindCounts,
}

impl Records {
    fn insert(&mut self, record: StoredRecord) -> Arc<StoredRecord> {
        let record = Arc::new(record);
        let index = self.all.len();
        self.all.push(Arc::clone(&record));
        self.by_id.insert(record.id.clone(), index);
        if record.seeded {
            self.counts.seeded += 1;
        } else {
            self.counts.stored += 1;
        }
        if let Some(external_id) = record.external_id() {
            let all = &self.all;
            let repeated = index_external_id(&mut self.by_external_id, external_id, index, |at| {
                all.get(at).is_some_and(|earlier| !earlier.seeded)
            });
            if repeated && !record.seeded {
                self.counts.duplicate_external_ids += 1;
            }
        }
        record
    }

    fn by_id(&self, id: &str) -> Option<Arc<StoredRecord>> {
        self.by_id
            .get(id)
            .and_then(|index| self.all.get(*index))
            .cloned()
    }

    /// Every record stored under `external_id`, newest first.
    fn by_external_id(&self, external_id: &str) -> Vec<Arc<StoredRecord>> {
        self.newest_first(self.by_external_id.get(external_id))
    }

    fn newest_first(&self, indexes: Option<&Vec<usize>>) -> Vec<Arc<StoredRecord>> {
        indexes
            .map(|indexes| {
                indexes
                    .iter()
                    .rev()
                    .filter_map(|index| self.all.get(*index).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn dump(&self, with_customer: bool) -> RecordsDump {
        let mut created_by_external_id = BTreeMap::new();
        let records = self
            .all
            .iter()
            .map(|record| {
                if let (Some(external_id), false) = (record.external_id(), record.seeded) {
                    *created_by_external_id
                        .entry(external_id.to_owned())
                        .or_insert(0) += 1;
                }
                SandboxRecord {
                    id: record.id.clone(),
                    external_id: record.external_id().map(str::to_owned),
                    name: record
                        .attributes
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    emails: if with_customer {
                        Vec::new()
                    } else {
                        record.emails()
                    },
                    customer: record.customer_id.clone(),
                    imported_at: record
                        .attributes
                        .get("importedAt")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    created_at: record
                        .attributes
                        .get("createdAt")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    seeded: record.seeded,
                }
            })
            .collect();
        RecordsDump {
            records,
            created_by_external_id,
        }
    }
}

/// Indexes the object at `position` under `external_id`; whether an object created by an
/// import (`imported(position)`, as opposed to seeded) already carried it: a duplicate.
pub(crate) fn index_external_id(
    index: &mut HashMap<String, Vec<usize>>,
    external_id: &str,
    position: usize,
    imported: impl Fn(usize) -> bool,
) -> bool {
    let same = index.entry(external_id.to_owned()).or_default();
    let repeated = same.iter().any(|earlier| imported(*earlier));
    same.push(position);
    repeated
}

/// Customers and conversations, behind the world lock.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    customers: Records,
    conversations: Records,
    /// Lowercased email → customers carrying it, in storing order.
    by_email: HashMap<String, Vec<usize>>,
}

impl Directory {
    pub(crate) fn insert_customer(&mut self, record: StoredRecord) -> Arc<StoredRecord> {
        let index = self.customers.all.len();
        for email in record.emails() {
            self.by_email
                .entry(email.to_lowercase())
                .or_default()
                .push(index);
        }
        self.customers.insert(record)
    }

    pub(crate) fn insert_conversation(&mut self, record: StoredRecord) -> Arc<StoredRecord> {
        self.conversations.insert(record)
    }

    pub(crate) fn customer(&self, id: &str) -> Option<Arc<StoredRecord>> {
        self.customers.by_id(id)
    }

    pub(crate) fn conversation(&self, id: &str) -> Option<Arc<StoredRecord>> {
        self.conversations.by_id(id)
    }

    /// Customers stored under this externalId, newest first (a lookup answers the first).
    pub(crate) fn customers_by_external_id(&self, external_id: &str) -> Vec<Arc<StoredRecord>> {
        self.customers.by_external_id(external_id)
    }

    /// Customers with this email among their `emails`, compared case-insensitively, newest
    /// first.
    pub(crate) fn customers_by_email(&self, email: &str) -> Vec<Arc<StoredRecord>> {
        self.customers
            .newest_first(self.by_email.get(&email.to_lowercase()))
    }

    /// Conversations stored under this externalId, newest first.
    pub(crate) fn conversations_by_external_id(&self, external_id: &str) -> Vec<Arc<StoredRecord>> {
        self.conversations.by_external_id(external_id)
    }

    pub(crate) fn customer_by_external_id(&self, external_id: &str) -> Option<Arc<StoredRecord>> {
        self.customers_by_external_id(external_id)
            .into_iter()
            .next()
    }

    pub(crate) fn conversation_by_external_id(
        &self,
        external_id: &str,
    ) -> Option<Arc<StoredRecord>> {
        self.conversations_by_external_id(external_id)
            .into_iter()
            .next()
    }

    /// The customer of a conversation created or seeded here; None for every other id (which
    /// keeps its implicit customer).
    pub(crate) fn customer_of_conversation(&self, conversation_id: &str) -> Option<String> {
        self.conversations
            .by_id(conversation_id)
            .and_then(|conversation| conversation.customer_id.clone())
    }

    pub(crate) fn counts_mut(&mut self, kind: CreateKind) -> Option<&mut KindCounts> {
        match kind {
            CreateKind::Message => None,
            CreateKind::Customer => Some(&mut self.customers.counts),
            CreateKind::Conversation => Some(&mut self.conversations.counts),
        }
    }

    pub(crate) fn customer_stats(&self) -> KindCounts {
        self.customers.counts.clone()
    }

    pub(crate) fn conversation_stats(&self) -> KindCounts {
        self.conversations.counts.clone()
    }

    pub(crate) fn customers_dump(&self) -> RecordsDump {
        self.customers.dump(false)
    }

    pub(crate) fn conversations_dump(&self) -> RecordsDump {
        self.conversations.dump(true)
    }
}

/// Counters of one kind (customers or conversations), under `customers` / `conversations` in
/// `GET /_sandbox/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindCounts {
    /// Create requests received (`POST /v1/customers` or `/v1/conversations`), answered or not.
    pub creates: u64,
    /// Created by a create request (seeded ones excepted).
    pub stored: u64,
    /// Stored by `POST /_sandbox/seed`.
    pub seeded: u64,
    /// Created under an externalId a created (not seeded) one already carries.
    pub duplicate_external_ids: u64,
    /// Lookups past the gate and the read role, by route and outcome.
    pub lookups: KindLookupCounts,
    /// `GET /v1/conversations/{id}/messages` requests past the gate and the role (conversations
    /// only).
    pub message_list_reads: u64,
    /// Create faults acted upon for this kind (also counted in the top-level
    /// `faults_injected`).
    pub faults: CreateFaultCounts,
    /// Bulk jobs of this kind (`POST /v1/customers/bulk` or `/v1/conversations/bulk`); their
    /// stored items are also in `stored`.
    pub bulk: KindBulkCounts,
}

/// One kind's bulk traffic (its jobs also count in the top-level bulk stats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindBulkCounts {
    /// Jobs created (a dropped answer included).
    pub jobs: u64,
    /// Items in the jobs created.
    pub items: u64,
    /// Items stored (a stored item reported as error 500 included).
    pub stored: u64,
    /// Items failed by the `--bulk-item-error` dice (nothing stored).
    pub item_error: u64,
    /// Items stored and then reported as error 500 (`--bulk-item-stored-error`).
    pub item_stored_error: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindLookupCounts {
    /// `externalId=` lookups.
    pub external_id: HitMiss,
    /// `email=` lookups (customers only).
    pub email: HitMiss,
    /// Answered 429 by the `lookup_429` dice (also in `faults_injected.lookup_429`).
    pub lookup_429: u64,
    /// Answered 503 while lookups fail (also in `faults_injected.lookup_503`).
    pub lookup_503: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HitMiss {
    pub hit: u64,
    /// 404, or 200 with empty data under `not_found_as_empty`.
    pub miss: u64,
}

/// The create faults of one kind, named as in `faults_injected`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateFaultCounts {
    pub error_500: u64,
    pub error_503: u64,
    pub drop_before_store: u64,
    pub store_then_drop: u64,
    pub store_then_error: u64,
    pub slow_store: u64,
    pub accepted_202: u64,
    pub created_without_id: u64,
    pub oversize_body: u64,
    /// Answered 429 by `error_429` (also in the top-level `injected_429`).
    pub injected_429: u64,
}

impl CreateFaultCounts {
    pub(crate) fn count_before_store(&mut self, before: BeforeStore) {
        match before {
            BeforeStore::Proceed => {}
            BeforeStore::Error500 => self.error_500 += 1,
            BeforeStore::Error503 => self.error_503 += 1,
            BeforeStore::DropConnection => self.drop_before_store += 1,
        }
    }

    pub(crate) fn count_once_stored(&mut self, outcome: OnceStored) {
        match outcome {
            OnceStored::Created => {}
            OnceStored::Drop => self.store_then_drop += 1,
            OnceStored::Error(_) => self.store_then_error += 1,
            OnceStored::Slow => self.slow_store += 1,
            OnceStored::Accepted => self.accepted_202 += 1,
            OnceStored::WithoutId => self.created_without_id += 1,
            OnceStored::Oversize => self.oversize_body += 1,
        }
    }
}

/// What `GET /_sandbox/customers` and `GET /_sandbox/conversations` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordsDump {
    /// Every record in storing order, seeded ones included.
    pub records: Vec<SandboxRecord>,
    /// How many were created (not seeded) under each externalId: 1 everywhere means exactly once.
    pub created_by_external_id: BTreeMap<String, u64>,
}

/// One customer or conversation as listed by the inspection endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    pub id: String,
    pub external_id: Option<String>,
    pub name: Option<String>,
    /// A customer's `emails[].email` as stored (empty for conversations).
    #[serde(default)]
    pub emails: Vec<String>,
    /// A conversation's customer id (None for customers).
    pub customer: Option<String>,
    pub imported_at: Option<String>,
    pub created_at: Option<String>,
    pub seeded: bool,
}
