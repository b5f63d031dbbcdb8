//! The bulk jobs a sandbox knows: each split into batches that complete one after another,
//! their results, the counters of `/_sandbox/stats`, and the documents the read endpoints
//! answer (in exactly the shapes of `shared/kustomer-api.md`, section Bulk).
//!
//! Part of the state: imports `state` (ids) and `config`; never a route module.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::object_id;
use super::config::{BulkConfig, JobDice, ReadFault};

/// Bulk traffic in `GET /_sandbox/stats` (flattened into its top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkStats {
    /// Bulk jobs created (a dropped answer included).
    pub bulk_jobs: u64,
    /// Items in the jobs created.
    pub bulk_items: u64,
    /// Batches the jobs created were split into.
    pub bulk_batches: u64,
    /// Batches complete now.
    pub bulk_batches_complete: u64,
    /// `GET /v1/bulk/{id}` requests that got past auth and the org limit.
    pub bulk_polls: u64,
    /// `GET /v1/bulk/{id}/batches` requests that got past auth and the org limit.
    pub bulk_batch_reads: u64,
    /// Items stored as messages (a stored item reported as error 500 included).
    pub bulk_items_created: u64,
    /// Items whose result is an error (injected or not, stored or not).
    pub bulk_items_failed: u64,
    /// Jobs complete now.
    pub bulk_jobs_complete: u64,
    /// Jobs that completed while a job created before them had not.
    pub bulk_jobs_overtaking: u64,
}

/// Bulk faults in `faults_injected` (flattened into it), each counted when acted upon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BulkFaultCounts {
    /// Items failed by the `item_error` dice (nothing stored).
    pub bulk_item_error: u64,
    /// Items stored and then reported as error 500.
    pub bulk_item_stored_error: u64,
    /// Jobs created whose POST was answered by closing the connection.
    pub bulk_drop_after_create: u64,
    /// Jobs held back by the `out_of_order` dice.
    pub bulk_out_of_order: u64,
    /// Jobs given `slow_factor` times their processing time.
    pub bulk_slow_jobs: u64,
    /// Batches left `scheduled` forever (once their turn came).
    pub bulk_never_complete: u64,
    /// Results listed for a `_clientRef` never sent.
    pub bulk_unknown_ref: u64,
    /// Items listed a second time with a contradicting answer.
    pub bulk_duplicate_ref: u64,
    /// Job or batches reads answered 429.
    pub bulk_read_429: u64,
    /// Job or batches reads answered by closing the connection.
    pub bulk_read_drop: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Queued,
    Running,
    Complete,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Complete => "complete",
        }
    }
}

/// Why an item was not stored (or, for a stored-then-500, what it is reported as), in the
/// documented shape of its result's `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ItemError {
    status: u16,
    code: &'static str,
    title: &'static str,
    detail: String,
}

impl ItemError {
    pub(crate) fn new(status: u16, detail: String) -> Self {
        let (code, title) = match status {
            400 => ("bad_request", "Bad Request"),
            404 => ("not_found", "Not Found"),
            409 => ("conflict", "Conflict"),
            422 => ("unprocessable_entity", "Unprocessable Entity"),
            429 => ("too_many_requests", "Too Many Requests"),
            503 => ("service_unavailable", "Service Unavailable"),
            _ => ("internal_server_error", "Internal Server Error"),
        };
        Self {
            status,
            code,
            title,
            detail,
        }
    }
}

/// One item's result in a complete batch: `{"_clientRef","objectId","status":"created"}` or
/// `{"_clientRef","status":"error","error":{..}}` (`_clientRef` left out when none was given).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ItemResult {
    #[serde(rename = "_clientRef", skip_serializing_if = "Option::is_none")]
    client_ref: Option<String>,
    #[serde(rename = "objectId", skip_serializing_if = "Option::is_none")]
    object_id: Option<String>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

impl ItemResult {
    pub(crate) fn created(client_ref: Option<String>, object_id: String) -> Self {
        Self {
            client_ref,
            object_id: Some(object_id),
            status: "created",
            error: None,
        }
    }

    pub(crate) fn failed(client_ref: Option<String>, error: ItemError) -> Self {
        Self {
            client_ref,
            object_id: None,
            status: "error",
            error: Some(error),
        }
    }
}

/// How an item's result came about, for the fault counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ItemFate {
    /// Stored and reported created.
    Stored,
    /// Stored, then reported as error 500 (`item_stored_error`).
    StoredThenError,
    /// Failed by the `item_error` dice, nothing stored.
    InjectedError,
    /// Failed on its own merits (invalid, unknown conversation, customer limit).
    Failed,
}

struct Batch {
    id: String,
    complete: bool,
    results: Vec<ItemResult>,
}

struct Job {
    sequence: u64,
    status: JobStatus,
    batches: Vec<Batch>,
    /// The batch being processed now, and the one that never completes: both `scheduled`.
    current: Option<usize>,
    stuck: Option<usize>,
}

/// Everything bulk behind one mutex (never held together with the world's).
struct Jobs {
    rng: StdRng,
    /// Dice of the reads (`read_429`, `read_drop`), apart from the jobs' dice.
    read_rng: StdRng,
    id_salt: u64,
    sequence: u64,
    /// Ids minted for batches and for messages that do not exist.
    minted: u64,
    jobs: HashMap<String, Job>,
    /// Sequence numbers of the jobs not complete yet (a stalled job is left out: nothing
    /// waits for it).
    incomplete: BTreeSet<u64>,
    stats: BulkStats,
    faults: BulkFaultCounts,
}

impl Jobs {
    /// A fresh 24-hex id from a range apart from the jobs'.
    fn mint(&mut self) -> String {
        self.minted += 1;
        object_id(self.id_salt.wrapping_add(1 << 40).wrapping_add(self.minted))
    }
}

/// The bulk part of a sandbox's state.
pub(crate) struct BulkState {
    jobs: Mutex<Jobs>,
    /// The highest sequence number of a completed job: held-back jobs wait for it to pass theirs.
    completed: tokio::sync::watch::Sender<u64>,
    /// While true, no job stores an item (`POST /_sandbox/bulk/hold` / `release`).
    hold: tokio::sync::watch::Sender<bool>,
}

/// Mixed into the sandbox seed so the bulk streams are independent of every other stream.
const BULK_STREAM: u64 = 0x6275_6c6b_6a6f_6273;
/// Mixed into the sandbox seed for the reads' dice.
const BULK_READ_STREAM: u64 = 0x6275_6c6b_7265_6164;

impl BulkState {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ BULK_STREAM);
        let id_salt = rng.random();
        Self {
            jobs: Mutex::new(Jobs {
                rng,
                read_rng: StdRng::seed_from_u64(seed ^ BULK_READ_STREAM),
                id_salt,
                sequence: 0,
                minted: 0,
                jobs: HashMap::new(),
                incomplete: BTreeSet::new(),
                stats: BulkStats::default(),
                faults: BulkFaultCounts::default(),
            }),
            completed: tokio::sync::watch::Sender::new(0),
            hold: tokio::sync::watch::Sender::new(false),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // A panic while holding the lock leaves counters at worst slightly off; keep serving.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> BulkStats {
        self.jobs().stats.clone()
    }

    pub(crate) fn fault_counts(&self) -> BulkFaultCounts {
        self.jobs().faults.clone()
    }

    /// Holds (`true`) or releases (`false`) the storing of bulk items.
    pub(crate) fn set_hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    pub(crate) async fn pass_hold(&self) {
        let mut hold = self.hold.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` lives.
        let _ = hold.wait_for(|held| !*held).await;
    }

    /// Registers a new job of `items` items, draws its dice and splits it into batches.
    pub(crate) fn create(&self, config: &BulkConfig, items: usize) -> (String, u64, JobDice) {
        let mut jobs = self.jobs();
        let dice = config.roll(&mut jobs.rng, items);
        jobs.sequence += 1;
        let sequence = jobs.sequence;
        let id = object_id(jobs.id_salt.wrapping_add(sequence));
        let batches: Vec<Batch> = (0..config.batch_count(items))
            .map(|_| Batch {
                id: jobs.mint(),
                complete: false,
                results: Vec::new(),
            })
            .collect();
        jobs.stats.bulk_batches += batches.len() as u64;
        jobs.jobs.insert(
            id.clone(),
            Job {
                sequence,
                status: JobStatus::Queued,
                batches,
                current: None,
                stuck: dice.stuck_batch,
            },
        );
        jobs.incomplete.insert(sequence);
        jobs.stats.bulk_jobs += 1;
        jobs.stats.bulk_items += items as u64;
        if dice.held_back {
            jobs.faults.bulk_out_of_order += 1;
        }
        if dice.drop_answer {
            jobs.faults.bulk_drop_after_create += 1;
        }
        if dice.slow {
            jobs.faults.bulk_slow_jobs += 1;
        }
        (id, sequence, dice)
    }

    pub(crate) fn set_running(&self, id: &str) {
        if let Some(job) = self.jobs().jobs.get_mut(id) {
            job.status = JobStatus::Running;
        }
    }

    /// Batch `batch` starts being processed (`scheduled`).
    pub(crate) fn start_batch(&self, id: &str, batch: usize) {
        if let Some(job) = self.jobs().jobs.get_mut(id) {
            job.current = Some(batch);
        }
    }

    /// Batch `batch`'s turn came and it stays `scheduled` forever.
    pub(crate) fn count_stuck_batch(&self) {
        self.jobs().faults.bulk_never_complete += 1;
    }

    /// Records one item's result in its batch; with `contradicted`, lists it a second time
    /// under the same `_clientRef` with the opposite answer.
    pub(crate) fn record(
        &self,
        id: &str,
        batch: usize,
        result: ItemResult,
        fate: ItemFate,
        contradicted: bool,
    ) {
        let mut jobs = self.jobs();
        match fate {
            ItemFate::Stored => jobs.stats.bulk_items_created += 1,
            ItemFate::StoredThenError => {
                jobs.stats.bulk_items_created += 1;
                jobs.stats.bulk_items_failed += 1;
                jobs.faults.bulk_item_stored_error += 1;
            }
            ItemFate::InjectedError => {
                jobs.stats.bulk_items_failed += 1;
                jobs.faults.bulk_item_error += 1;
            }
            ItemFate::Failed => jobs.stats.bulk_items_failed += 1,
        }
        let contradiction = contradicted.then(|| {
            let client_ref = result.client_ref.clone();
            if result.error.is_some() {
                ItemResult::created(client_ref, jobs.mint())
            } else {
                let detail = "Injected fault: a contradicting result for this item".to_owned();
                ItemResult::failed(client_ref, ItemError::new(400, detail))
            }
        });
        if contradiction.is_some() {
            jobs.faults.bulk_duplicate_ref += 1;
        }
        if let Some(results) = jobs
            .jobs
            .get_mut(id)
            .and_then(|job| job.batches.get_mut(batch))
            .map(|batch| &mut batch.results)
        {
            results.push(result);
            results.extend(contradiction);
        }
    }

    /// Batch `batch` is complete; with `unknown_ref` and no batch of the job complete before,
    /// it also lists a result for a `_clientRef` never sent.
    pub(crate) fn complete_batch(&self, id: &str, batch: usize, unknown_ref: bool) {
        let mut jobs = self.jobs();
        let Some(first) = jobs
            .jobs
            .get(id)
            .map(|job| job.batches.iter().all(|batch| !batch.complete))
        else {
            return;
        };
        let ghost = (unknown_ref && first).then(|| {
            let object_id = jobs.mint();
            let reference = format!("never-sent-{}", jobs.minted);
            ItemResult::created(Some(reference), object_id)
        });
        if ghost.is_some() {
            jobs.faults.bulk_unknown_ref += 1;
        }
        jobs.stats.bulk_batches_complete += 1;
        if let Some(done) = jobs
            .jobs
            .get_mut(id)
            .and_then(|job| job.batches.get_mut(batch))
        {
            done.complete = true;
            done.results.extend(ghost);
        }
    }

    pub(crate) fn complete(&self, id: &str) {
        let mut jobs = self.jobs();
        let Some(sequence) = jobs.jobs.get_mut(id).map(|job| {
            job.status = JobStatus::Complete;
            job.current = None;
            job.sequence
        }) else {
            return;
        };
        jobs.incomplete.remove(&sequence);
        let overtaking = jobs
            .incomplete
            .first()
            .is_some_and(|earliest| *earliest < sequence);
        jobs.stats.bulk_jobs_complete += 1;
        if overtaking {
            jobs.stats.bulk_jobs_overtaking += 1;
        }
        drop(jobs);
        self.completed.send_if_modified(|highest| {
            let raised = sequence > *highest;
            *highest = (*highest).max(sequence);
            raised
        });
    }

    /// A job whose stuck batch never completes: it stays `running`, and no held-back job
    /// waits for it.
    pub(crate) fn stall(&self, id: &str) {
        let mut jobs = self.jobs();
        let Some(sequence) = jobs.jobs.get_mut(id).map(|job| {
            job.current = None;
            job.sequence
        }) else {
            return;
        };
        jobs.incomplete.remove(&sequence);
    }

    /// Waits until a job created after job `sequence` has completed. When none has after
    /// `limit`, and none created after it is still to complete, goes anyway (the newest job
    /// cannot wait for one that may never come); otherwise waits on for that later job.
    pub(crate) async fn wait_for_a_later_job(&self, sequence: u64, limit: Duration) {
        let mut completed = self.completed.subscribe();
        loop {
            let later_done = completed.wait_for(|highest| *highest > sequence);
            if let Ok(done) = tokio::time::timeout(limit, later_done).await {
                // Err only if the sender is gone, which cannot happen while `self` lives.
                drop(done);
                return;
            }
            let later_pending = self
                .jobs()
                .incomplete
                .last()
                .is_some_and(|newest| *newest > sequence);
            if !later_pending {
                return;
            }
        }
    }

    /// The job document (`GET /v1/bulk/{id}`), or None for an unknown job.
    pub(crate) fn job_document(&self, id: &str) -> Option<Value> {
        self.jobs().jobs.get(id).map(|job| job_document(id, job))
    }

    /// The batches of a job as listed (`GET /v1/bulk/{id}/batches`), or None for an unknown
    /// job: nothing while it is queued (its batches are not made yet); then every batch, a
    /// complete one with its counts, ids and results, the others `scheduled` (being
    /// processed, or stuck) or `queued` with `results: []`.
    pub(crate) fn batches(&self, id: &str) -> Option<Vec<Value>> {
        let jobs = self.jobs();
        let job = jobs.jobs.get(id)?;
        if job.status == JobStatus::Queued {
            return Some(Vec::new());
        }
        let listed = job
            .batches
            .iter()
            .enumerate()
            .map(|(index, batch)| {
                let attributes = if batch.complete {
                    let object_ids: Vec<&str> = batch
                        .results
                        .iter()
                        .filter_map(|result| result.object_id.as_deref())
                        .collect();
                    let failures = batch
                        .results
                        .iter()
                        .filter(|result| result.error.is_some())
                        .count();
                    json!({
                        "status": "complete",
                        "successCount": object_ids.len(),
                        "failureCount": failures,
                        "objectIds": object_ids,
                        "results": batch.results,
                    })
                } else if job.current == Some(index) || job.stuck == Some(index) {
                    json!({"status": "scheduled", "results": []})
                } else {
                    json!({"status": "queued", "results": []})
                };
                json!({"type": "bulk_batch", "id": batch.id, "attributes": attributes})
            })
            .collect();
        Some(listed)
    }

    pub(crate) fn count_poll(&self) {
        self.jobs().stats.bulk_polls += 1;
    }

    pub(crate) fn count_batch_read(&self) {
        self.jobs().stats.bulk_batch_reads += 1;
    }

    /// Draws the dice of one read and counts the fault it gives, if any.
    pub(crate) fn roll_read(&self, config: &BulkConfig) -> ReadFault {
        let mut jobs = self.jobs();
        let fault = config.roll_read(&mut jobs.read_rng);
        match fault {
            ReadFault::None => {}
            ReadFault::TooManyRequests => jobs.faults.bulk_read_429 += 1,
            ReadFault::Drop => jobs.faults.bulk_read_drop += 1,
        }
        fault
    }
}

/// `{"data":{"type":"bulk","id","attributes":{"status","completed","batches":{..}}}}`.
fn job_document(id: &str, job: &Job) -> Value {
    let complete = job.batches.iter().filter(|batch| batch.complete).count();
    json!({"data": {"type": "bulk", "id": id, "attributes": {
        "status": job.status.as_str(),
        "completed": job.status == JobStatus::Complete,
        "batches": {"complete": complete, "total": job.batches.len()},
    }}})
}
