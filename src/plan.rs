//! `plan`: how many requests and how long an import takes in each mode, before it starts, from
//! the number of rows still to send in each conversation (its *depth*) and the rate budget.
//! A pure model: it reads the store (`checkpoint`) and computes; it prints nothing (its words
//! are `report::plan_text`) and imports nothing above the store.
//!
//! # The model
//! `R` rows to send in `C` conversations of depths `d_i`; a budget of `rpm` requests a minute
//! (every request counts); `B` rows at most per bulk job (`--batch-size`, 100).
//!
//! - **Single mode**: one create per row plus the token check: `R + 1` requests, taking
//!   `requests / (rpm / 60)` seconds.
//! - **Strict-order lower bound.** An importer that keeps each conversation in order keeps at
//!   most one row per conversation in flight, so a bulk job holds at most `B` rows of distinct
//!   conversations and costs at least 2 requests (its POST and one results read); a single create
//!   costs 1. With `J` bulk jobs at most `bulk(J) = min(B·J, Σ min(d_i, J))` rows go by bulk (a
//!   conversation is in at most one row of each job; this many is reachable, by max-flow over
//!   jobs and conversations), the rest one by one:
//!   `requests(J) = 1 + 2J + (R - bulk(J))`. The lower bound is the minimum over `J >= 0`
//!   (`J = 0` is single mode), computed exactly in `O(C log C + max d_i)`: depths sorted,
//!   `Σ min(d_i, J)` from a running prefix sum for every `J` up to the deepest depth `D`. Past
//!   `D` that sum is `R`, so `requests(J)` falls while the jobs fill (`B·J < R`) and rises after:
//!   the best `J > D` is `⌊R/B⌋` or `⌈R/B⌉` (many shallow conversations need more jobs than
//!   their depth: 2,000 conversations of 5 rows take 100 jobs of 100).
//! - **Bulk estimate**: what the importer's bulk mode does. Jobs hold up to `B` heads of distinct
//!   conversations; a job that would hold fewer than 3 rows goes as single creates (the smallest
//!   `J` reaching the minimum is used, so its last job saves at least 3 requests); each job costs
//!   its POST, one results read and [`EXTRA_POLLS_PER_JOB`] (0.2) polls on average; rows beyond
//!   what the jobs can carry go as single creates. So `bulk.requests = requests(J) +
//!   ceil(0.2 · J)` for the chosen `J`, and `bulk.seconds = max(bulk.requests / (rpm / 60),
//!   rounds · job_seconds)`, where `rounds` (`critical_path_rounds`) is how many jobs the
//!   deepest conversation waits on one after the other. A conversation far deeper than the rest
//!   must not make the run last that many rounds when the budget would allow its rows as single
//!   creates: so the rows of each conversation sent by bulk are capped at the largest `K` (at
//!   most the lower bound's `J` and the deepest depth) with `K · job_seconds <=
//!   max(bulk.requests(K), rows + 1) / (rpm / 60)`, i.e. rounds that take no longer than the
//!   budget needs for the requests, or than single mode would take: the fewest requests, never
//!   slower than single mode. The rest of a capped conversation's rows go as single creates;
//!   without a cap that binds this is the lower bound's `J` exactly.
//! - `job_seconds` (`--job-seconds`, default 5) is an **assumption to measure**: how long
//!   Kustomer takes to process a bulk job is unverified. The latency of single creates is left
//!   out of the critical path (the deepest conversation's single creates are assumed to fit in
//!   the time the budget sets).

use crate::checkpoint::{Checkpoint, CheckpointError, ConversationDepth, ResolutionWork};

/// The most rows one bulk job may hold (`POST /v1/messages/bulk` takes at most 100 bodies).
pub const MAX_BATCH_SIZE: u64 = 100;
/// Polls beyond the first results read a bulk job is assumed to cost on average.
pub const EXTRA_POLLS_PER_JOB: f64 = 0.2;
/// The same as one extra poll every this many jobs, for exact integer rounding.
const JOBS_PER_EXTRA_POLL: u64 = 5;
/// How long Kustomer is assumed to take to process one bulk job, unless told (unverified).
pub const DEFAULT_JOB_SECONDS: f64 = 5.0;
/// Requests a bulk job costs at the least: its POST and one results read.
const REQUESTS_PER_JOB: u64 = 2;
/// The most bulk jobs in flight at once unless told (`--max-jobs`).
pub const DEFAULT_MAX_JOBS: usize = 50;

/// How many bulk jobs the budget can pay for during one job time, so that jobs overlap enough
/// to spend it: `ceil(rpm / 60 · job_seconds / 2)` (each job costs its POST and one read), at
/// least 1 and at most `max_jobs`. The send engine keeps this many in flight (with the job time
/// it has learned), and `plan` models the same.
pub fn jobs_in_flight(rpm: u32, job_seconds: f64, max_jobs: usize) -> usize {
    let per_second = f64::from(rpm.max(1)) / 60.0;
    let affordable = (per_second * job_seconds.max(0.0) / REQUESTS_PER_JOB as f64).ceil();
    let most = max_jobs.max(1);
    if affordable.is_finite() && affordable < most as f64 {
        (affordable as usize).max(1)
    } else {
        most
    }
}

/// How many bulk jobs the run keeps in flight: enough to carry the rows that ride jobs within
/// the deepest conversation's rounds, `ceil(rows_by_bulk / (batch · rounds))`, since more would
/// only empty the shallow conversations early and leave the deep ones to end in thin jobs; at
/// most what the budget pays for ([`jobs_in_flight`]), and at least one.
pub fn jobs_kept_in_flight(rows_by_bulk: u64, batch: u64, rounds: u64, affordable: u64) -> u64 {
    let spread = rows_by_bulk.div_ceil(batch.max(1).saturating_mul(rounds.max(1)));
    spread.clamp(1, affordable.max(1))
}

/// The rows still to send, by conversation.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// Depth of every conversation, ascending.
    depths: Vec<u64>,
    rows: u64,
    deepest: Option<ConversationDepth>,
    /// Source tickets still to resolve before their rows can go.
    resolution: ResolutionWork,
}

impl Workload {
    pub fn new(conversations: Vec<ConversationDepth>) -> Self {
        // The first of the deepest by id, so the answer does not depend on the query's order.
        let deepest = conversations
            .iter()
            .max_by(|a, b| {
                a.rows
                    .cmp(&b.rows)
                    .then_with(|| b.conversation_id.cmp(&a.conversation_id))
            })
            .cloned();
        let mut depths: Vec<u64> = conversations.iter().map(|c| c.rows).collect();
        depths.sort_unstable();
        Self {
            rows: depths.iter().sum(),
            depths,
            deepest,
            resolution: ResolutionWork::default(),
        }
    }

    /// The rows still to send in a job's checkpoint (`pending` or `sending`).
    pub fn of_checkpoint(checkpoint: &Checkpoint) -> Result<Self, CheckpointError> {
        Ok(Self {
            resolution: checkpoint.resolution_work()?,
            ..Self::new(checkpoint.depths_to_send()?)
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn conversations(&self) -> u64 {
        self.depths.len() as u64
    }

    fn max_depth(&self) -> u64 {
        self.depths.last().copied().unwrap_or(0)
    }

    /// The depth at quantile `q` (nearest rank); 0 without conversations.
    fn depth_at(&self, q: f64) -> u64 {
        let count = self.depths.len();
        if count == 0 {
            return 0;
        }
        // Nearest rank: the smallest depth with at least q of the conversations at or below it.
        let rank = ((q * count as f64).ceil() as usize).clamp(1, count);
        self.depths.get(rank - 1).copied().unwrap_or(0)
    }

    pub fn depth_percentiles(&self) -> DepthPercentiles {
        DepthPercentiles {
            p50: self.depth_at(0.50),
            p90: self.depth_at(0.90),
            p99: self.depth_at(0.99),
            max: self.max_depth(),
        }
    }

    /// `Σ min(d_i, j)` for every `j` from 0 to the deepest depth.
    fn rows_within_rounds(&self) -> Vec<u64> {
        let max = self.max_depth();
        let mut within = Vec::with_capacity(usize::try_from(max).unwrap_or(0).saturating_add(1));
        let (mut shallower, mut shallower_rows) = (0usize, 0u64);
        for rounds in 0..=max {
            while let Some(&depth) = self.depths.get(shallower) {
                if depth >= rounds {
                    break;
                }
                shallower_rows += depth;
                shallower += 1;
            }
            let deeper = (self.depths.len() - shallower) as u64;
            within.push(shallower_rows + rounds * deeper);
        }
        within
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DepthPercentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// A number of bulk jobs and what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSplit {
    pub jobs: u64,
    /// Rows carried by the jobs; the rest go as single creates.
    pub bulk_rows: u64,
    /// The token check, two requests per job, one per single create.
    pub requests: u64,
}

/// The `requests(J)` curve of one workload and batch size.
struct Curve {
    rows: u64,
    batch: u64,
    /// `Σ min(d_i, j)` by `j`.
    within: Vec<u64>,
}

impl Curve {
    fn new(workload: &Workload, batch: u64) -> Self {
        Self {
            rows: workload.rows,
            batch: batch.max(1),
            within: workload.rows_within_rounds(),
        }
    }

    fn within(&self, rounds: u64) -> u64 {
        let last = self.within.len().saturating_sub(1);
        let index = usize::try_from(rounds).unwrap_or(usize::MAX).min(last);
        self.within.get(index).copied().unwrap_or(0)
    }

    /// `jobs` jobs, each conversation in at most `rounds_cap` of them.
    fn split(&self, jobs: u64, rounds_cap: u64) -> JobSplit {
        let bulk_rows = self
            .batch
            .saturating_mul(jobs)
            .min(self.within(jobs.min(rounds_cap)));
        JobSplit {
            jobs,
            bulk_rows,
            requests: 1 + REQUESTS_PER_JOB * jobs + (self.rows - bulk_rows),
        }
    }

    /// The fewest requests with each conversation in at most `rounds_cap` jobs, the fewest jobs
    /// on a tie. `best_uncapped[k]` is the best split with at most `k` jobs.
    fn best_capped(&self, rounds_cap: u64, best_uncapped: &[JobSplit]) -> JobSplit {
        let index = usize::try_from(rounds_cap)
            .unwrap_or(usize::MAX)
            .min(best_uncapped.len().saturating_sub(1));
        let mut best = best_uncapped
            .get(index)
            .copied()
            .unwrap_or_else(|| self.split(0, 0));
        // Past the cap more jobs only add room (B per job) for the capped rows: the cost falls
        // while the jobs fill and rises after, so the best is where they are just full.
        let capped_rows = self.within(rounds_cap);
        let full = capped_rows / self.batch;
        for jobs in [rounds_cap + 1, full, full + 1] {
            if jobs > rounds_cap {
                let candidate = self.split(jobs, rounds_cap);
                if candidate.requests < best.requests {
                    best = candidate;
                }
            }
        }
        best
    }
}

/// For each `k` from 0 to the deepest depth, the best split with at most `k` jobs (the fewest
/// jobs on a tie).
fn best_splits(curve: &Curve) -> Vec<JobSplit> {
    let mut best = curve.split(0, 0);
    (0..curve.within.len() as u64)
        .map(|jobs| {
            let split = curve.split(jobs, jobs);
            if split.requests < best.requests {
                best = split;
            }
            best
        })
        .collect()
}

/// The strict-order lower bound: the fewest requests any importer keeping each conversation in
/// order can use, with the number of jobs that reaches it (the fewest such).
pub fn lower_bound(workload: &Workload, batch: u64) -> JobSplit {
    let curve = Curve::new(workload, batch);
    curve.best_capped(workload.max_depth(), &best_splits(&curve))
}

/// What `plan` is asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInputs {
    /// Requests per minute this job may spend.
    pub rpm: u32,
    /// Rows per bulk job at most (1 to 100).
    pub batch: u64,
    /// Assumed processing time of one bulk job.
    pub job_seconds: f64,
    /// The most bulk jobs in flight at once (`--max-jobs`).
    pub max_jobs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SingleEstimate {
    pub requests: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BulkEstimate {
    /// Expected requests of the bulk mode (extra polls included).
    pub requests: u64,
    /// The fewest requests any strict-order importer can use on this workload.
    pub lower_bound_requests: u64,
    /// Jobs that reach the lower bound.
    pub lower_bound_jobs: u64,
    /// Jobs the estimate sends.
    pub jobs: u64,
    /// Rows carried by jobs, and rows sent as single creates.
    pub rows_by_bulk: u64,
    pub rows_single: u64,
    /// Jobs the deepest conversation waits on one after the other.
    pub critical_path_rounds: u64,
    /// Whether the rounds were capped (below the lower bound's jobs and the deepest depth) so
    /// they fit in the time the budget takes, deep conversations sending the rest one by one.
    pub rounds_capped: bool,
    pub seconds: f64,
    /// Jobs kept in flight at once ([`jobs_kept_in_flight`]).
    pub jobs_in_flight: u64,
    /// Rows per request of any kind.
    pub messages_per_request: f64,
    pub extra_polls_per_job: f64,
    pub job_seconds: f64,
}

/// The resolve phase's requests. Per ticket: its conversation looked up by externalId, then
/// created; per customer not yet resolved: looked up by externalId and/or email, then created.
/// `worst` is a first migration (nothing exists yet: every lookup and every create, which is
/// also what to expect then); `best` is everything found at the first lookup (a found
/// conversation's customer is looked up once to check it is the rows' own). Unknown outcomes
/// add a lookup each. In bulk mode (`bulk_worst_requests`) the creates of each kind go in jobs
/// of the batch size, each costing what a message job does (its POST, one results read, 0.2
/// extra reads on average), unless fewer than 3 are to be created (then single creates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolutionEstimate {
    pub tickets: u64,
    pub customers: u64,
    pub worst_requests: u64,
    pub best_requests: u64,
    /// The worst case in bulk mode: the same lookups, the creates in bulk jobs.
    pub bulk_worst_requests: u64,
}

/// Fewer creates of a kind than this go as single creates in bulk mode (as in `resolve`).
const MIN_RESOLVE_JOB_ITEMS: u64 = 3;

/// Requests to create `n` records of one kind in bulk mode, `batch` per job.
fn bulk_creates(n: u64, batch: u64) -> u64 {
    if n < MIN_RESOLVE_JOB_ITEMS {
        return n;
    }
    let jobs = n.div_ceil(batch.max(1));
    REQUESTS_PER_JOB * jobs + jobs.div_ceil(JOBS_PER_EXTRA_POLL)
}

impl ResolutionEstimate {
    fn of(work: ResolutionWork, batch: u64) -> Self {
        let customer_lookups = work.customers + work.customers_with_both_keys;
        let lookups = work.tickets + customer_lookups;
        ResolutionEstimate {
            tickets: work.tickets,
            customers: work.customers,
            worst_requests: lookups + work.tickets + work.customers,
            best_requests: work.tickets + work.customers,
            bulk_worst_requests: lookups
                + bulk_creates(work.tickets, batch)
                + bulk_creates(work.customers, batch),
        }
    }
}

/// The plan for one workload and budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub rows: u64,
    pub conversations: u64,
    pub deepest_conversation: Option<Deepest>,
    pub depth: DepthPercentiles,
    pub rpm: u32,
    pub batch_size: u64,
    pub single: SingleEstimate,
    pub bulk: BulkEstimate,
    /// Included in `single` and `bulk` (their worst case: `worst_requests` in single,
    /// `bulk_worst_requests` in bulk).
    pub resolution: ResolutionEstimate,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deepest {
    pub id: String,
    pub rows: u64,
}

/// Requests of a split with the expected extra polls.
fn expected_requests(split: JobSplit) -> u64 {
    split.requests + split.jobs.div_ceil(JOBS_PER_EXTRA_POLL)
}

/// `value` with at most `decimals` decimals, for output a person reads.
fn rounded(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Rounds the deepest conversation waits on, for a split under a cap.
fn rounds(split: JobSplit, cap: u64, max_depth: u64) -> u64 {
    split.jobs.min(cap).min(max_depth)
}

pub fn plan(workload: &Workload, inputs: PlanInputs) -> Plan {
    let per_second = f64::from(inputs.rpm.max(1)) / 60.0;
    let batch = inputs.batch.clamp(1, MAX_BATCH_SIZE);
    let curve = Curve::new(workload, batch);
    let best = best_splits(&curve);
    let max_depth = workload.max_depth();
    let bound = curve.best_capped(max_depth, &best);
    // From the lower bound's rounds down: the first cap whose rounds fit in the time the
    // budget needs for its requests, or in the time single mode would take if that is longer:
    // the fewest requests, but never slower than one create per message. A cap of 0 (single
    // creates only) always fits.
    let single_seconds = (workload.rows + 1) as f64 / per_second;
    let uncapped = bound.jobs.min(max_depth);
    let in_flight = jobs_in_flight(inputs.rpm, inputs.job_seconds, inputs.max_jobs) as u64;
    // Jobs go at most `in_flight` per job time: with too few in flight, that is the pace, as
    // is the deepest conversation's rounds.
    let job_time = |split: JobSplit, cap: u64| {
        let waves = split.jobs.div_ceil(in_flight.max(1));
        rounds(split, cap, max_depth).max(waves) as f64 * inputs.job_seconds
    };
    let (cap, split) = (0..=uncapped)
        .rev()
        .map(|cap| (cap, curve.best_capped(cap, &best)))
        .find(|(cap, split)| {
            let budget_seconds = expected_requests(*split) as f64 / per_second;
            job_time(*split, *cap) <= budget_seconds.max(single_seconds)
        })
        .unwrap_or((0, curve.split(0, 0)));
    let resolution = ResolutionEstimate::of(workload.resolution, batch);
    let requests = expected_requests(split) + resolution.bulk_worst_requests;
    let critical_path_rounds = rounds(split, cap, max_depth);
    let single_requests = workload.rows + 1 + resolution.worst_requests;
    Plan {
        rows: workload.rows,
        conversations: workload.conversations(),
        deepest_conversation: workload.deepest.as_ref().map(|deepest| Deepest {
            id: deepest.conversation_id.clone(),
            rows: deepest.rows,
        }),
        depth: workload.depth_percentiles(),
        rpm: inputs.rpm,
        batch_size: batch,
        single: SingleEstimate {
            requests: single_requests,
            seconds: rounded(single_requests as f64 / per_second, 2),
        },
        bulk: BulkEstimate {
            requests,
            lower_bound_requests: bound.requests,
            lower_bound_jobs: bound.jobs,
            jobs: split.jobs,
            rows_by_bulk: split.bulk_rows,
            rows_single: workload.rows - split.bulk_rows,
            critical_path_rounds,
            rounds_capped: cap < uncapped,
            seconds: rounded((requests as f64 / per_second).max(job_time(split, cap)), 2),
            jobs_in_flight: jobs_kept_in_flight(
                split.bulk_rows,
                batch,
                critical_path_rounds,
                in_flight,
            ),
            messages_per_request: rounded(workload.rows as f64 / requests.max(1) as f64, 3),
            extra_polls_per_job: EXTRA_POLLS_PER_JOB,
            job_seconds: inputs.job_seconds,
        },
        resolution,
    }
}

/// What bulk mode would save on the rows still to send in `checkpoint` when it needs under
/// half the requests of single mode (batches of 100, extra polls included, no cap for the
/// budget, which is not known yet); None otherwise.
pub fn bulk_would_halve(checkpoint: &Checkpoint) -> Result<Option<BulkSaving>, CheckpointError> {
    let workload = Workload::of_checkpoint(checkpoint)?;
    let bound = lower_bound(&workload, MAX_BATCH_SIZE);
    let bulk = expected_requests(bound);
    let single = workload.rows + 1;
    if bulk.saturating_mul(2) >= single {
        return Ok(None);
    }
    Ok(Some(BulkSaving {
        bulk_requests: bulk,
        single_requests: single,
    }))
}

/// Requests of the two modes, when bulk mode would need under half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkSaving {
    pub bulk_requests: u64,
    pub single_requests: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(depths: &[u64]) -> Workload {
        Workload::new(
            depths
                .iter()
                .enumerate()
                .map(|(index, rows)| ConversationDepth {
                    conversation_id: format!("{index:024x}"),
                    rows: *rows,
                })
                .collect(),
        )
    }

    /// The lower bound by brute force over every J, straight from the formula.
    fn brute_force(depths: &[u64], batch: u64) -> u64 {
        let rows: u64 = depths.iter().sum();
        // No more jobs than rows can help: every useful job carries a row.
        (0..=rows + 2)
            .map(|jobs| {
                let within: u64 = depths.iter().map(|d| (*d).min(jobs)).sum();
                1 + 2 * jobs + rows - (batch * jobs).min(within)
            })
            .min()
            .unwrap_or(1)
    }

    const RELAXED: PlanInputs = PlanInputs {
        rpm: 600,
        batch: 100,
        job_seconds: 0.0,
        max_jobs: DEFAULT_MAX_JOBS,
    };

    #[test]
    fn one_deep_conversation_gains_nothing_from_bulk() {
        let bound = lower_bound(&workload(&[400]), 100);
        // Each job carries one row and costs two requests: single creates win.
        assert_eq!(bound.requests, 401);
        assert_eq!(bound.jobs, 0);
        let plan = plan(&workload(&[400]), RELAXED);
        assert_eq!(plan.single.requests, 401);
        assert_eq!(plan.bulk.requests, 401);
        assert_eq!(plan.bulk.jobs, 0);
        assert_eq!(plan.bulk.critical_path_rounds, 0);
    }

    #[test]
    fn many_shallow_conversations_go_in_full_jobs() {
        // 2,000 conversations of 5 rows: 10,000 rows fit in 100 full jobs (5 rounds of 20 jobs
        // of 100 distinct conversations): 1 + 2 * 100 requests.
        let depths = vec![5; 2_000];
        let bound = lower_bound(&workload(&depths), 100);
        assert_eq!(bound.requests, 201);
        assert_eq!(bound.jobs, 100);
        assert_eq!(bound.requests, brute_force(&depths, 100));
        let plan = plan(&workload(&depths), RELAXED);
        assert_eq!(plan.bulk.requests, 201 + 20, "0.2 extra polls per job");
        assert_eq!(plan.bulk.critical_path_rounds, 5);
        assert_eq!(plan.bulk.rows_single, 0);
        assert_eq!(plan.depth.p50, 5);
    }

    #[test]
    fn a_heavy_tail_sends_what_jobs_cannot_carry_one_by_one() {
        // 1,980 conversations of 4, 19 of 100 and one of 400: 10,220 rows.
        let mut depths = vec![4; 1_980];
        depths.extend([100; 19]);
        depths.push(400);
        let bound = lower_bound(&workload(&depths), 100);
        assert_eq!(bound.requests, brute_force(&depths, 100));
        // Hand check: J = 100 carries min(10,000, 7,920 + 20 * 100) = 9,920 rows, leaving 300
        // singles: 1 + 200 + 300 = 501; J = 99: 9,900 rows (the batch binds): 1 + 198 + 320 =
        // 519; J = 101: min(10,100, 7,920 + 19 * 100 + 101) = 9,921: 1 + 202 + 299 = 502; past
        // 100 each job adds one row of the deepest conversation for two requests.
        assert_eq!(bound.requests, 501);
        assert_eq!(bound.jobs, 100);
        let plan = plan(&workload(&depths), RELAXED);
        assert_eq!(plan.bulk.lower_bound_requests, 501);
        assert_eq!(plan.bulk.requests, 521);
        assert_eq!(plan.bulk.critical_path_rounds, 100);
        assert_eq!(plan.bulk.rows_single, 300);
        assert_eq!(plan.depth.max, 400);
        assert_eq!(plan.depth.p99, 4);
        assert_eq!(plan.depth.p90, 4);
        assert_eq!(
            plan.deepest_conversation,
            Some(Deepest {
                id: format!("{:024x}", 1_999),
                rows: 400
            })
        );
    }

    #[test]
    fn the_lower_bound_matches_brute_force_on_assorted_shapes() {
        let shapes: [&[u64]; 8] = [
            &[],
            &[1],
            &[2, 2],
            &[3, 3, 3],
            &[1, 1, 1, 1, 1, 1, 1],
            &[10, 1, 1, 1, 7, 3, 2],
            &[50, 40, 30, 20, 10, 5, 5, 5, 5, 5, 5, 5],
            &[9; 37],
        ];
        for depths in shapes {
            for batch in [1, 2, 3, 5, 10, 100] {
                let bound = lower_bound(&workload(depths), batch);
                assert_eq!(
                    bound.requests,
                    brute_force(depths, batch),
                    "{depths:?} batch {batch}"
                );
                let rows: u64 = depths.iter().sum();
                assert!(bound.requests <= rows + 1);
                let curve = Curve::new(&workload(depths), batch);
                let best = best_splits(&curve);
                for cap in 0..=depths.iter().copied().max().unwrap_or(0) {
                    let brute = (0..=rows + 2)
                        .map(|jobs| curve.split(jobs, cap).requests)
                        .min();
                    assert_eq!(
                        Some(curve.best_capped(cap, &best).requests),
                        brute,
                        "{depths:?} batch {batch} cap {cap}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_job_of_fewer_than_three_rows_is_not_worth_sending() {
        // Two conversations of one row: a job of 2 rows costs 2 requests, as 2 single creates
        // do: the tie goes to single creates.
        let bound = lower_bound(&workload(&[1, 1]), 100);
        assert_eq!((bound.jobs, bound.requests), (0, 3));
        let bound = lower_bound(&workload(&[1, 1, 1]), 100);
        assert_eq!((bound.jobs, bound.requests), (1, 3));
    }

    #[test]
    fn the_deep_tail_goes_one_by_one_and_slow_jobs_cap_the_rounds() {
        // 1,000 conversations of 3 and one of 300: 3,300 rows.
        let mut depths = vec![3; 1_000];
        depths.push(300);
        // J = 31 carries min(3,100, 3,000 + 31) = 3,031 rows: 1 + 62 + 269 = 332 requests;
        // every further job carries one row of the deep conversation for two requests.
        let relaxed = plan(&workload(&depths), RELAXED);
        assert_eq!(relaxed.bulk.lower_bound_requests, 332);
        assert_eq!(relaxed.bulk.jobs, 31);
        assert_eq!(relaxed.bulk.critical_path_rounds, 31);
        assert_eq!(relaxed.bulk.rows_single, 269);
        assert_eq!(relaxed.bulk.requests, 332 + 7);
        // At 100 requests a second and 5 s a job, 31 rounds (155 s) would outlast even single
        // mode (3,301 requests, 33.01 s): each conversation sends at most K rows by bulk, the
        // largest K whose rounds fit in that time. K = 6 (30 s): the 31 jobs carry 3,000 + 6
        // rows, 294 go alone, 1 + 62 + 294 + 7 = 364 requests; K = 7 (35 s) would be slower
        // than single mode.
        let fast = plan(
            &workload(&depths),
            PlanInputs {
                rpm: 6_000,
                batch: 100,
                job_seconds: 5.0,
                max_jobs: DEFAULT_MAX_JOBS,
            },
        );
        let bulk = &fast.bulk;
        assert_eq!(bulk.critical_path_rounds, 6, "{bulk:?}");
        assert!(bulk.rounds_capped && !relaxed.bulk.rounds_capped);
        assert_eq!((bulk.jobs, bulk.rows_by_bulk), (31, 3_006));
        assert_eq!(bulk.requests, 364);
        assert_eq!(bulk.lower_bound_requests, 332);
        assert!((bulk.seconds - 30.0).abs() < 1e-9, "{bulk:?}");
        assert!(bulk.seconds < fast.single.seconds);
        // A budget so slow that the rounds never bind keeps the lower bound's jobs.
        let slow = plan(
            &workload(&depths),
            PlanInputs {
                rpm: 60,
                batch: 100,
                job_seconds: 5.0,
                max_jobs: DEFAULT_MAX_JOBS,
            },
        );
        assert_eq!(slow.bulk.critical_path_rounds, 31);
        assert_eq!(slow.bulk.requests, 339);
        assert_eq!(slow.bulk.seconds, 339.0);
    }

    #[test]
    fn bulk_lies_between_the_lower_bound_and_single_mode_on_random_shapes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..300 {
            let conversations = rng.random_range(0..60);
            let depths: Vec<u64> = (0..conversations)
                .map(|_| {
                    if rng.random_bool(0.1) {
                        rng.random_range(1..300)
                    } else {
                        rng.random_range(1..8)
                    }
                })
                .collect();
            let inputs = PlanInputs {
                rpm: rng.random_range(1..20_000),
                batch: rng.random_range(1..=100),
                job_seconds: rng.random_range(0.0..20.0),
                max_jobs: rng.random_range(1..=60),
            };
            let plan = plan(&workload(&depths), inputs);
            let bulk = &plan.bulk;
            assert_eq!(
                bulk.lower_bound_requests,
                brute_force(&depths, inputs.batch),
                "{depths:?} {inputs:?}"
            );
            assert!(
                bulk.lower_bound_requests <= bulk.requests && bulk.requests <= plan.single.requests,
                "{depths:?} {inputs:?} {bulk:?}"
            );
            assert_eq!(bulk.rows_by_bulk + bulk.rows_single, plan.rows);
            assert!(bulk.critical_path_rounds <= plan.depth.max);
            assert!(
                bulk.seconds <= plan.single.seconds + 0.01,
                "{depths:?} {inputs:?}"
            );
        }
    }

    #[test]
    fn seconds_follow_the_budget() {
        let plan = plan(
            &workload(&[5; 200]),
            PlanInputs {
                rpm: 120,
                batch: 100,
                job_seconds: 1.0,
                max_jobs: DEFAULT_MAX_JOBS,
            },
        );
        assert_eq!(plan.single.requests, 1_001);
        assert!((plan.single.seconds - 500.5).abs() < 1e-9);
        assert_eq!(plan.bulk.lower_bound_requests, 21);
        assert_eq!(plan.bulk.requests, 23);
        assert!((plan.bulk.seconds - 11.5).abs() < 1e-9);
    }

    #[test]
    fn jobs_in_flight_are_what_the_budget_pays_for_in_one_job_time() {
        // 600 requests a minute = 10 a second; a 2.5 s job: 25 requests, 12.5 jobs of two.
        assert_eq!(jobs_in_flight(600, 2.5, 50), 13);
        assert_eq!(jobs_in_flight(600, 2.5, 8), 8, "--max-jobs bounds it");
        assert_eq!(jobs_in_flight(500, 5.0, 50), 21);
        assert_eq!(jobs_in_flight(60, 0.1, 50), 1, "at least one");
        assert_eq!(jobs_in_flight(600, f64::INFINITY, 50), 50);
        assert_eq!(jobs_in_flight(600, 2.5, 0), 1);
        // Too few jobs in flight set the pace: 100 jobs, 2 in flight, 1 s each: 50 s.
        let plan = plan(
            &workload(&[5; 2_000]),
            PlanInputs {
                rpm: 6_000,
                batch: 100,
                job_seconds: 1.0,
                max_jobs: 2,
            },
        );
        assert_eq!(plan.bulk.jobs_in_flight, 2);
        assert!((plan.bulk.seconds - 50.0).abs() < 1e-9, "{:?}", plan.bulk);
    }

    #[test]
    fn the_run_keeps_in_flight_what_the_deepest_conversation_s_rounds_need() {
        // 10,000 rows over 20 rounds: 500 a round, five jobs of 100.
        assert_eq!(jobs_kept_in_flight(10_000, 100, 20, 15), 5);
        // A deep conversation's 107 rounds spread 9,700 rows: one job at a time.
        assert_eq!(jobs_kept_in_flight(9_700, 100, 107, 15), 1);
        // The budget bounds it, and one job at least.
        assert_eq!(jobs_kept_in_flight(100_000, 100, 5, 15), 15);
        assert_eq!(jobs_kept_in_flight(0, 100, 0, 15), 1);
    }

    #[test]
    fn nothing_to_send_costs_the_token_check() {
        let plan = plan(&Workload::default(), RELAXED);
        assert_eq!(
            (plan.rows, plan.single.requests, plan.bulk.requests),
            (0, 1, 1)
        );
        assert_eq!(plan.depth.max, 0);
        assert!(plan.deepest_conversation.is_none());
    }

    #[test]
    fn bulk_mode_creates_customers_and_conversations_in_jobs() {
        let work = ResolutionWork {
            tickets: 300,
            customers: 150,
            customers_with_both_keys: 150,
        };
        let estimate = ResolutionEstimate::of(work, 100);
        // Lookups: 300 conversations, 150 customers by externalId and by email.
        assert_eq!(estimate.worst_requests, 300 + 300 + 300 + 150);
        // Creates: 3 jobs of conversations, 2 of customers, two requests each and one extra
        // read per 5 jobs of a kind.
        assert_eq!(estimate.bulk_worst_requests, 600 + (6 + 1) + (4 + 1));
        let tiny = ResolutionEstimate::of(
            ResolutionWork {
                tickets: 2,
                customers: 1,
                customers_with_both_keys: 0,
            },
            100,
        );
        assert_eq!(tiny.bulk_worst_requests, tiny.worst_requests);
    }
}
