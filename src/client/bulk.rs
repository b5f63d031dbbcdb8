//! The bulk endpoints of `shared/kustomer-api.md` (section Bulk): create a job, read the job,
//! read its batches and their per-item results.
//!
//! The results are read exactly as answered and judged nowhere here: every item is kept in the
//! order listed, duplicates and `_clientRef`s never sent included, because only the send engine
//! knows what it sent. What cannot be read is kept as [`ItemOutcome::Unreadable`] rather than
//! dropped, so that no answer quietly turns into "not in the results". Every number the server
//! gives is bounded before use; every text is cut to [`MAX_QUOTED_ERROR_CHARS`].

use percent_encoding::utf8_percent_encode;
use serde_json::{Map, Value};

use super::{
    truncate, unexpected, ApiClient, ApiError, Timing, MAX_QUOTED_ERROR_CHARS, PATH_SEGMENT,
};

/// The most result items one batches answer may list: a job holds at most 100 items, so
/// anything far beyond is not an answer to read (the whole answer is refused, not cut, so
/// that no contradicting item is silently left out).
pub const MAX_BULK_RESULT_ITEMS: usize = 1_000;
/// The most batches one batches answer may list (one item a batch at most 100, plus slack).
pub const MAX_BULK_BATCHES: usize = 1_000;
/// The longest `_clientRef` or `objectId` read; longer ones make the item unreadable (the API
/// allows 255 characters for a `_clientRef`).
pub const MAX_BULK_REF_CHARS: usize = 255;
/// Longest status word kept from an answer (anything longer is cut).
const MAX_STATUS_CHARS: usize = 64;

/// What a bulk job creates: the route it is posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkKind {
    Messages,
    Customers,
    Conversations,
}

impl BulkKind {
    pub fn path(self) -> &'static str {
        match self {
            BulkKind::Messages => "/v1/messages/bulk",
            BulkKind::Customers => "/v1/customers/bulk",
            BulkKind::Conversations => "/v1/conversations/bulk",
        }
    }
}

/// `attributes.status` of a job (`GET /v1/bulk/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkJobStatus {
    Queued,
    Running,
    Complete,
    /// A status the note does not document, as answered (cut to 64 characters; empty when the
    /// answer had none).
    Other(String),
}

/// `attributes.batches` of a job: how many of its batches are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub complete: u32,
    pub total: u32,
}

/// A bulk job as `GET /v1/bulk/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkJob {
    pub status: BulkJobStatus,
    /// `attributes.completed` when it is `true` (false when absent or anything else).
    pub completed: bool,
    /// `attributes.batches`, or None when absent or unreadable (not whole numbers, more than
    /// [`MAX_BULK_BATCHES`], or more complete than total).
    pub batches: Option<BatchCounts>,
}

impl BulkJob {
    /// The job says it is complete: its results are final (the note: "the results are final
    /// only when the job says `complete`"). The status decides; `completed` alone does not.
    pub fn is_complete(&self) -> bool {
        self.status == BulkJobStatus::Complete
    }
}

/// `attributes.status` of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStatus {
    Queued,
    Scheduled,
    Complete,
    /// A status the note does not document, as answered (cut; empty when the batch had none).
    Other(String),
}

/// One item of a batch's `results`, as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkResultItem {
    /// `_clientRef`: None when absent, or when it could not be read (then the outcome is
    /// [`ItemOutcome::Unreadable`]).
    pub client_ref: Option<String>,
    pub outcome: ItemOutcome,
}

/// What one result item says happened to its item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// `status: "created"` with an `objectId`: the message's id.
    Created { object_id: String },
    /// `status: "error"` with an `error.status` in 100..=599 (a number or a numeric string).
    /// `message` joins `error.title` and `error.detail` (or `error.message`), cut to
    /// [`MAX_QUOTED_ERROR_CHARS`].
    Failed {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// An item that does not read as documented (no status, an unknown status, `created`
    /// without an `objectId`, an error without a readable status, a `_clientRef` that is not
    /// a string of 1 to 255 characters): what it says about its item is unknown.
    Unreadable { why: String },
}

/// `GET /v1/bulk/{id}/batches` as answered: each listed batch's status, and every result item
/// of every listed batch in the order listed (duplicates and unknown refs kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkBatches {
    pub batches: Vec<BatchStatus>,
    pub items: Vec<BulkResultItem>,
}

impl BulkBatches {
    /// At least one batch is listed and every listed batch is complete. This alone does not make
    /// the results final (the list may be partial): only the job's own `complete` does, or
    /// every `_clientRef` sent having a result.
    pub fn all_listed_complete(&self) -> bool {
        !self.batches.is_empty() && self.batches.iter().all(|b| *b == BatchStatus::Complete)
    }
}

impl ApiClient {
    /// `POST /v1/messages/bulk` with a JSON array of items: the bulk job's id. Any 2xx naming a
    /// job id is accepted (the docs say 201, the spec 200); one that names none is unreadable,
    /// and the job may exist all the same.
    pub async fn create_bulk_job(&self, items: &str) -> (Result<String, ApiError>, Timing) {
        self.create_bulk(BulkKind::Messages, items).await
    }

    /// `POST /v1/{messages,customers,conversations}/bulk` with a JSON array of items: the bulk
    /// job's id, read as [`ApiClient::create_bulk_job`] reads it.
    pub async fn create_bulk(
        &self,
        kind: BulkKind,
        items: &str,
    ) -> (Result<String, ApiError>, Timing) {
        let (answer, timing) = self.exchange(self.post_json(kind.path(), items)).await;
        let result = answer.and_then(|answer| {
            let (status, json) = answer.into_json("bulk job")?;
            json["data"]["id"]
                .as_str()
                .filter(|id| !id.is_empty() && id.chars().count() <= MAX_BULK_REF_CHARS)
                .map(str::to_string)
                .ok_or(ApiError::Protocol {
                    status,
                    detail: "no data.id in the bulk job".into(),
                })
        });
        (result, timing)
    }

    /// `GET /v1/bulk/{id}`: the job's status and batch counts.
    pub async fn bulk_job(&self, job_id: &str) -> Result<BulkJob, ApiError> {
        let path = format!("/v1/bulk/{}", utf8_percent_encode(job_id, PATH_SEGMENT));
        let (status, json) = self.get_json(&path, "bulk job").await?;
        read_bulk_job(&json).map_err(unexpected(status))
    }

    /// `GET /v1/bulk/{id}/batches`: every listed batch and every result item, as answered
    /// (`{"data": [..]}` or a bare array). An answer that is neither, or lists more than
    /// [`MAX_BULK_BATCHES`] batches or [`MAX_BULK_RESULT_ITEMS`] items, is an
    /// [`ApiError::Protocol`].
    pub async fn bulk_batches(&self, job_id: &str) -> Result<BulkBatches, ApiError> {
        let path = format!(
            "/v1/bulk/{}/batches",
            utf8_percent_encode(job_id, PATH_SEGMENT)
        );
        let (status, json) = self.get_json(&path, "bulk batches").await?;
        read_bulk_batches(&json).map_err(unexpected(status))
    }
}

/// A status word as answered, cut, or empty when absent or not a string.
fn status_word(value: &Value) -> String {
    value
        .as_str()
        .map(|word| truncate(word, MAX_STATUS_CHARS))
        .unwrap_or_default()
}

/// Reads `GET /v1/bulk/{id}`: `{"data":{"type":"bulk","id","attributes":{..}}}`.
fn read_bulk_job(json: &Value) -> Result<BulkJob, &'static str> {
    let attributes = &json["data"]["attributes"];
    if !attributes.is_object() {
        return Err("the bulk job has no data.attributes");
    }
    let status = match attributes["status"].as_str() {
        Some("queued") => BulkJobStatus::Queued,
        Some("running") => BulkJobStatus::Running,
        Some("complete") => BulkJobStatus::Complete,
        _ => BulkJobStatus::Other(status_word(&attributes["status"])),
    };
    let count = |value: &Value| {
        value
            .as_u64()
            .filter(|n| *n <= MAX_BULK_BATCHES as u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let counts = &attributes["batches"];
    let batches = match (count(&counts["complete"]), count(&counts["total"])) {
        (Some(complete), Some(total)) if complete <= total => Some(BatchCounts { complete, total }),
        _ => None,
    };
    Ok(BulkJob {
        status,
        completed: attributes["completed"] == Value::Bool(true),
        batches,
    })
}

/// Reads `GET /v1/bulk/{id}/batches`: `{"data":[batch, ..]}` or a bare `[batch, ..]`, each batch
/// `{"type":"bulk_batch","id","attributes":{"status","results":[..],..}}` (a batch without the
/// `attributes` wrapper is read from its top level).
fn read_bulk_batches(json: &Value) -> Result<BulkBatches, &'static str> {
    let list = match json {
        Value::Array(list) => list,
        other => match &other["data"] {
            Value::Array(list) => list,
            _ => return Err("bulk batches are neither a list nor {\"data\": [..]}"),
        },
    };
    if list.len() > MAX_BULK_BATCHES {
        return Err("bulk batches list more batches than any job can have");
    }
    let mut read = BulkBatches::default();
    for entry in list {
        let Value::Object(entry) = entry else {
            return Err("a bulk batch is not a JSON object");
        };
        let batch = match entry.get("attributes") {
            Some(Value::Object(attributes)) => attributes,
            _ => entry,
        };
        read.batches
            .push(match batch.get("status").and_then(Value::as_str) {
                Some("queued") => BatchStatus::Queued,
                Some("scheduled") => BatchStatus::Scheduled,
                Some("complete") => BatchStatus::Complete,
                _ => BatchStatus::Other(status_word(batch.get("status").unwrap_or(&Value::Null))),
            });
        let results = match batch.get("results") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(results)) => results,
            Some(_) => return Err("a bulk batch's results are not a list"),
        };
        if read.items.len() + results.len() > MAX_BULK_RESULT_ITEMS {
            return Err("bulk batches list more results than any job can have");
        }
        read.items.extend(results.iter().map(read_result_item));
    }
    Ok(read)
}

/// One result item; whatever does not read as documented is [`ItemOutcome::Unreadable`].
fn read_result_item(item: &Value) -> BulkResultItem {
    let unreadable = |client_ref: Option<String>, why: &str| BulkResultItem {
        client_ref,
        outcome: ItemOutcome::Unreadable { why: why.into() },
    };
    let Value::Object(item) = item else {
        return unreadable(None, "a result item that is not a JSON object");
    };
    let client_ref = match item.get("_clientRef") {
        None | Some(Value::Null) => None,
        Some(Value::String(text))
            if !text.is_empty() && text.chars().count() <= MAX_BULK_REF_CHARS =>
        {
            Some(text.clone())
        }
        Some(_) => {
            return unreadable(
                None,
                "a _clientRef that is not a string of 1 to 255 characters",
            )
        }
    };
    match item.get("status").and_then(Value::as_str) {
        Some("created") => match item.get("objectId").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && id.chars().count() <= MAX_BULK_REF_CHARS => {
                BulkResultItem {
                    client_ref,
                    outcome: ItemOutcome::Created {
                        object_id: id.to_string(),
                    },
                }
            }
            _ => unreadable(client_ref, "created without a readable objectId"),
        },
        Some("error") => match item.get("error") {
            Some(error) => match read_item_error(error) {
                Some(outcome) => BulkResultItem {
                    client_ref,
                    outcome,
                },
                None => unreadable(client_ref, "an error without a status in 100..=599"),
            },
            None => unreadable(client_ref, "an error without an error object"),
        },
        Some(other) => BulkResultItem {
            client_ref,
            outcome: ItemOutcome::Unreadable {
                why: format!("status {:?}", truncate(other, MAX_STATUS_CHARS)),
            },
        },
        None => unreadable(client_ref, "no status"),
    }
}

/// An item's `error`: `{"status","code","title","detail"}` as documented (also `message`, or
/// the error as a plain string for its text). None without a status in 100..=599.
fn read_item_error(error: &Value) -> Option<ItemOutcome> {
    let empty = Map::new();
    let fields = error.as_object().unwrap_or(&empty);
    let status = match fields.get("status") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|status| (100..=599).contains(status))
    .and_then(|status| u16::try_from(status).ok())?;
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .filter(|text| !text.trim().is_empty())
    };
    let code = match fields.get("code") {
        Some(Value::String(code)) if !code.is_empty() => Some(truncate(code, MAX_STATUS_CHARS)),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let message = match (text("title"), text("detail")) {
        (Some(title), Some(detail)) => format!("{title}: {detail}"),
        (Some(one), None) | (None, Some(one)) => one.to_string(),
        (None, None) => text("message")
            .or_else(|| error.as_str())
            .map_or_else(|| format!("bulk item error {status}"), str::to_string),
    };
    Some(ItemOutcome::Failed {
        status,
        code,
        message: truncate(&message, MAX_QUOTED_ERROR_CHARS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(text: &str) -> Result<BulkBatches, &'static str> {
        read_bulk_batches(&serde_json::from_str(text).expect("test JSON"))
    }

    fn created(reference: &str, object_id: &str) -> BulkResultItem {
        BulkResultItem {
            client_ref: Some(reference.into()),
            outcome: ItemOutcome::Created {
                object_id: object_id.into(),
            },
        }
    }

    /// The example of `shared/kustomer-api.md`, section Bulk, verbatim.
    const NOTE_EXAMPLE: &str = r#"{"data": [
  {"type": "bulk_batch", "id": "...",
   "attributes": {"status": "complete", "successCount": 2, "failureCount": 1,
                  "objectIds": ["<id of each created object>", "..."],
                  "results": [
                    {"_clientRef": "line-7", "objectId": "<message id>", "status": "created"},
                    {"_clientRef": "line-9", "status": "error",
                     "error": {"status": 400, "code": "bad_request", "title": "...", "detail": "..."}}]}},
  {"type": "bulk_batch", "id": "...", "attributes": {"status": "scheduled", "results": []}}]}"#;

    #[test]
    fn the_notes_example_reads_as_two_batches_and_two_items() {
        let read = batches(NOTE_EXAMPLE).expect("the documented shape reads");
        assert_eq!(
            read.batches,
            [BatchStatus::Complete, BatchStatus::Scheduled]
        );
        assert_eq!(
            read.items,
            [
                created("line-7", "<message id>"),
                BulkResultItem {
                    client_ref: Some("line-9".into()),
                    outcome: ItemOutcome::Failed {
                        status: 400,
                        code: Some("bad_request".into()),
                        message: "...: ...".into(),
                    },
                },
            ]
        );
        assert!(!read.all_listed_complete(), "a scheduled batch: not done");
    }

    #[test]
    fn a_bare_array_of_batches_reads_like_the_wrapped_list() {
        let value: Value = serde_json::from_str(NOTE_EXAMPLE).expect("test JSON");
        let bare = read_bulk_batches(&value["data"]).expect("bare array reads");
        assert_eq!(bare, batches(NOTE_EXAMPLE).expect("wrapped reads"));
    }

    #[test]
    fn a_partial_list_keeps_what_is_complete_and_says_it_is_not_all() {
        let partial = r#"{"data":[
            {"type":"bulk_batch","id":"b1","attributes":{"status":"complete","successCount":1,
             "failureCount":0,"objectIds":["m1"],
             "results":[{"_clientRef":"line-1","objectId":"m1","status":"created"}]}},
            {"type":"bulk_batch","id":"b2","attributes":{"status":"scheduled","results":[]}}]}"#;
        let read = batches(partial).expect("reads");
        assert_eq!(
            read.batches,
            [BatchStatus::Complete, BatchStatus::Scheduled]
        );
        assert_eq!(read.items, [created("line-1", "m1")]);
        assert!(!read.all_listed_complete());
        let done = partial.replace("\"scheduled\"", "\"complete\"");
        let done = batches(&done).expect("reads");
        assert!(done.all_listed_complete());
        assert_eq!(done.items, [created("line-1", "m1")]);
    }

    #[test]
    fn an_empty_list_is_no_batch_and_not_done() {
        for empty in ["[]", r#"{"data":[]}"#] {
            let read = batches(empty).expect("reads");
            assert_eq!(read, BulkBatches::default());
            assert!(!read.all_listed_complete());
        }
    }

    #[test]
    fn garbage_is_refused_and_odd_items_are_kept_unreadable() {
        for garbage in [
            r#"{"data":"x"}"#,
            r#"{}"#,
            r#"{"data":null}"#,
            "7",
            r#"[5]"#,
            r#"[{"attributes":{"status":"complete","results":{"a":1}}}]"#,
        ] {
            assert!(batches(garbage).is_err(), "{garbage}");
        }
        let odd = r#"[{"attributes":{"status":"done","results":[
            {"_clientRef":"a","status":"created"},
            {"_clientRef":7,"objectId":"m1","status":"created"},
            {"_clientRef":"b","status":"error","error":{"status":1000,"code":"x"}},
            {"_clientRef":"c","status":"error","error":{"status":"503","title":"Unavailable"}},
            {"_clientRef":"d"},
            {"_clientRef":"e","status":"weird"},
            {"_clientRef":"","objectId":"m2","status":"created"},
            "item",
            {"_clientRef":"f","objectId":"m3","status":"created"},
            {"_clientRef":"f","status":"error","error":{"status":500}},
            {"_clientRef":"never-sent","objectId":"m4","status":"created"}]}}]"#;
        let read = batches(odd).expect("reads");
        assert_eq!(read.batches, [BatchStatus::Other("done".into())]);
        let outcomes: Vec<(Option<&str>, &ItemOutcome)> = read
            .items
            .iter()
            .map(|item| (item.client_ref.as_deref(), &item.outcome))
            .collect();
        assert_eq!(outcomes.len(), 11, "every item kept, in order");
        let unreadable = |index: usize| matches!(outcomes[index].1, ItemOutcome::Unreadable { .. });
        for index in [0, 1, 2, 4, 5, 6, 7] {
            assert!(unreadable(index), "{index}: {:?}", outcomes[index]);
        }
        assert_eq!(outcomes[0].0, Some("a"), "the ref is kept when readable");
        assert_eq!(outcomes[1].0, None, "a numeric ref is not read as one");
        assert_eq!(
            outcomes[3].1,
            &ItemOutcome::Failed {
                status: 503,
                code: None,
                message: "Unavailable".into()
            }
        );
        assert_eq!(
            outcomes[8],
            (
                Some("f"),
                &ItemOutcome::Created {
                    object_id: "m3".into()
                }
            )
        );
        assert!(matches!(
            outcomes[9],
            (Some("f"), ItemOutcome::Failed { status: 500, .. })
        ));
        assert_eq!(
            outcomes[10],
            (
                Some("never-sent"),
                &ItemOutcome::Created {
                    object_id: "m4".into()
                }
            )
        );
        assert!(
            !read.all_listed_complete(),
            "an unknown batch status is not complete"
        );
    }

    #[test]
    fn too_many_results_are_refused_whole() {
        let item = r#"{"_clientRef":"a","objectId":"m","status":"created"}"#;
        let results = vec![item; MAX_BULK_RESULT_ITEMS + 1].join(",");
        let text = format!(r#"[{{"attributes":{{"status":"complete","results":[{results}]}}}}]"#);
        assert!(batches(&text).is_err());
        let just = vec![item; MAX_BULK_RESULT_ITEMS].join(",");
        let text = format!(r#"[{{"attributes":{{"status":"complete","results":[{just}]}}}}]"#);
        assert_eq!(
            batches(&text).expect("reads").items.len(),
            MAX_BULK_RESULT_ITEMS
        );
    }

    #[test]
    fn a_job_reads_its_status_and_bounded_counts() {
        let read = |text: &str| read_bulk_job(&serde_json::from_str(text).expect("test JSON"));
        let created = r#"{"data":{"type":"bulk","id":"j1","attributes":{"status":"queued","completed":false}}}"#;
        assert_eq!(
            read(created),
            Ok(BulkJob {
                status: BulkJobStatus::Queued,
                completed: false,
                batches: None
            })
        );
        let done = r#"{"data":{"type":"bulk","id":"j1","attributes":{"status":"complete",
            "completed":true,"batches":{"complete":4,"total":4}}}}"#;
        let job = read(done).expect("reads");
        assert!(job.is_complete());
        assert_eq!(
            job.batches,
            Some(BatchCounts {
                complete: 4,
                total: 4
            })
        );
        let running = r#"{"data":{"attributes":{"status":"running","completed":true,
            "batches":{"complete":5,"total":4}}}}"#;
        let job = read(running).expect("reads");
        assert!(!job.is_complete(), "the status decides");
        assert_eq!(job.batches, None, "more complete than total");
        for counts in [
            r#"{"complete":-1,"total":4}"#,
            r#"{"complete":1.5,"total":4}"#,
            r#"{"complete":0,"total":99999999999}"#,
            r#""4/4""#,
        ] {
            let text =
                format!(r#"{{"data":{{"attributes":{{"status":"running","batches":{counts}}}}}}}"#);
            assert_eq!(read(&text).expect("reads").batches, None, "{counts}");
        }
        let odd = format!(
            r#"{{"data":{{"attributes":{{"status":"{}"}}}}}}"#,
            "x".repeat(100)
        );
        let BulkJobStatus::Other(word) = read(&odd).expect("reads").status else {
            panic!("an unknown status is kept")
        };
        assert!(word.chars().count() < 100);
        assert!(read(r#"{"data":{}}"#).is_err());
        assert!(read("[]").is_err());
    }

    #[test]
    fn each_kind_posts_to_its_documented_bulk_route() {
        assert_eq!(BulkKind::Messages.path(), "/v1/messages/bulk");
        assert_eq!(BulkKind::Customers.path(), "/v1/customers/bulk");
        assert_eq!(BulkKind::Conversations.path(), "/v1/conversations/bulk");
    }
}
