//! Bulk mode's price, in requests of any kind and in wall time: two generated files (a heavy
//! tail, where one conversation holds 4% of the rows and the top 1% of conversations a fifth; a
//! typical export, most conversations 2-10 messages), each planned by `plan` and sent in bulk
//! mode and in single mode at the same budget into an in-process sandbox whose bulk jobs take
//! `--bulk-delay-ms` +/- `--bulk-jitter-ms` (items in random order, four batches a job); then the
//! typical file again with 3% of items stored and reported 500 and 5% of jobs ten times slower.
//! Reported per run: every request the sandbox received, the messages per request against
//! `plan`'s strict-order lower bound, the wall time against max(the lower bound's requests at the
//! budget, the deepest conversation x the job time), the most jobs in flight at once, `plan`'s
//! predicted requests and duration against the actual, whether every row is stored once and in
//! order; for the faulty run, the faults that fired, the lookups spent and the wall time against
//! the fault-free run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::checkpoint::Checkpoint;
use crate::cli::BulkRun;
use crate::client::ApiClient;
use crate::plan::{Plan, PlanInputs, Workload};
use crate::sandbox::{self, BulkConfig, MessagesDump, SandboxConfig, SandboxStats};
use crate::send::{self, SendMode, SendOptions, SendStats, SendStop};
use crate::text::thousands;
use crate::throttle::{ConcurrencyLimit, RateBudget, Throttle};

use super::{client_config, conversation_id, loopback, stage_job, write_rows};

/// Rows per bulk job, the API's most.
const BATCH_SIZE: usize = 100;
/// A scenario predicted to take longer than this is skipped, with the reason said.
const LONGEST_SCENARIO: Duration = Duration::from_secs(10 * 60);

/// The faulty run's share of items stored and then reported 500.
const STORED_THEN_500: f64 = 0.03;
/// The faulty run's share of jobs ten times slower than the rest.
const SLOW_JOBS: f64 = 0.05;

/// How the sandbox's bulk jobs behave in the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobTime {
    pub delay: Duration,
    pub jitter: Duration,
}

impl JobTime {
    /// How long a job takes at most: what `--job-seconds` should say for it.
    fn longest_seconds(self) -> f64 {
        (self.delay + self.jitter).as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A fifth as many conversations as rows; the deepest holds 4% of the rows, the top 1% of
    /// conversations 20%; the rest 1-10 rows (about 4 on average).
    HeavyTail,
    /// Most conversations 2-10 rows (about 6 on average), a few of 1 and of 14-20.
    Typical,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::HeavyTail => "heavy tail",
            Shape::Typical => "typical",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Shape::HeavyTail => "heavy-tail",
            Shape::Typical => "typical",
        }
    }

    /// Rows per conversation, adding up to `rows` exactly.
    fn depths(self, rows: u64) -> Vec<u64> {
        match self {
            Shape::HeavyTail => heavy_tail(rows),
            Shape::Typical => cycled(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 4, 5, 6, 1, 14, 20], rows),
        }
    }
}

/// Depths from `pattern` repeated until they hold `rows`, the last one cut to fit.
fn cycled(pattern: &[u64], rows: u64) -> Vec<u64> {
    let mut depths = Vec::new();
    let mut left = rows;
    for &depth in pattern.iter().cycle() {
        if left == 0 || depth == 0 {
            break;
        }
        let depth = depth.min(left);
        depths.push(depth);
        left -= depth;
    }
    depths
}

fn heavy_tail(rows: u64) -> Vec<u64> {
    let conversations = (rows / 5).max(1);
    let top = (conversations / 100).max(1);
    let deepest = (rows / 25).max(1);
    let top_rows = (rows / 5).max(deepest);
    let mut depths = vec![deepest];
    // The rest of the top 1% share their rows in falling proportions (2:1 from first to last).
    let others = top - 1;
    let weights: Vec<u64> = (0..others).map(|i| 2 * others - i).collect();
    let weight_sum: u64 = weights.iter().sum::<u64>().max(1);
    for weight in weights {
        depths.push(((top_rows - deepest) * weight / weight_sum).max(1));
    }
    let rest = conversations.saturating_sub(top);
    let mut tail: Vec<u64> = [1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 10]
        .iter()
        .copied()
        .cycle()
        .take(usize::try_from(rest).unwrap_or(0))
        .collect();
    let target = rows.saturating_sub(depths.iter().sum());
    fit(&mut tail, target);
    depths.extend(tail);
    // Files too small for a tail: the deepest takes what is left.
    let left = rows.saturating_sub(depths.iter().sum());
    depths[0] += left;
    depths
}

/// Adds or takes one row at a time, round robin, until `depths` add up to `total`; a depth
/// never falls below 1 (the excess then stays).
fn fit(depths: &mut [u64], total: u64) {
    let mut sum: u64 = depths.iter().sum();
    let mut index = 0;
    let mut idle = 0;
    while sum != total && !depths.is_empty() && idle < depths.len() {
        let slot = &mut depths[index % depths.len()];
        if sum < total {
            *slot += 1;
            sum += 1;
            idle = 0;
        } else if *slot > 1 {
            *slot -= 1;
            sum -= 1;
            idle = 0;
        } else {
            idle += 1;
        }
        index += 1;
    }
}

/// `(conversation, position)` of every row, conversations interleaved (position 0 of each, then
/// position 1 of those deep enough, ...), as exports often are.
fn interleave(depths: &[u64]) -> Vec<(u64, u64)> {
    let deepest = depths.iter().copied().max().unwrap_or(0);
    let mut rows = Vec::with_capacity(depths.iter().sum::<u64>() as usize);
    for position in 0..deepest {
        for (conversation, &depth) in depths.iter().enumerate() {
            if position < depth {
                rows.push((conversation as u64, position));
            }
        }
    }
    rows
}

/// Each conversation's externalIds in file order, which is their sentAt order.
fn expected_order(rows: &[(u64, u64)]) -> BTreeMap<String, Vec<String>> {
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (index, (conversation, _)) in rows.iter().enumerate() {
        expected
            .entry(conversation_id(*conversation))
            .or_default()
            .push(format!("bench-{index}"));
    }
    expected
}

/// Conversations whose stored externalIds are not exactly their rows in file order (a missing,
/// doubled or misplaced message).
fn conversations_out_of_order(
    dump: &MessagesDump,
    expected: &BTreeMap<String, Vec<String>>,
) -> usize {
    expected
        .iter()
        .filter(|(conversation, ids)| {
            let stored: Vec<&str> = dump
                .conversations
                .get(*conversation)
                .map(|messages| {
                    messages
                        .iter()
                        .filter_map(|message| message.external_id.as_deref())
                        .collect()
                })
                .unwrap_or_default();
            stored != ids.iter().map(String::as_str).collect::<Vec<_>>()
        })
        .count()
}

/// Both files, both modes, at `rpm` requests a minute; then the typical file with faults.
pub async fn bench_bulk(
    workdir: &Path,
    rows: u64,
    rpm: u32,
    job_seconds: Option<f64>,
    job_time: JobTime,
    runs: &[BulkRun],
) -> Result<(), AppError> {
    let job_seconds = job_seconds
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .unwrap_or_else(|| job_time.longest_seconds());
    crate::app::say!(
        "bulk      {rows} rows per file at {rpm}/min, --batch-size {BATCH_SIZE}, --job-seconds {job_seconds}, --max-jobs {} (the sandbox's job time: {} ms +/- {} ms); every request the sandbox received counted, the preflight's token check included",
        crate::plan::DEFAULT_MAX_JOBS,
        job_time.delay.as_millis(),
        job_time.jitter.as_millis(),
    );
    let mut files = Vec::new();
    for shape in [Shape::HeavyTail, Shape::Typical] {
        let layout = interleave(&shape.depths(rows));
        let file = workdir.join(format!("bench-bulk-{}-{rows}.csv", shape.slug()));
        write_rows(&file, layout.iter().copied())?;
        files.push((shape, file, expected_order(&layout)));
    }
    let bulk = SendMode::Bulk {
        batch_size: BATCH_SIZE,
        job_seconds,
        max_jobs: crate::plan::DEFAULT_MAX_JOBS,
        max_job_wait: send::DEFAULT_MAX_JOB_WAIT,
    };
    let jobs = BulkConfig {
        delay: job_time.delay,
        jitter: job_time.jitter,
        ..BulkConfig::default()
    };
    let faulty = BulkConfig {
        item_stored_error: STORED_THEN_500,
        slow_jobs: SLOW_JOBS,
        slow_factor: 10,
        ..jobs.clone()
    };
    // Bulk first for both files: the figures the scenario is for come before the references.
    let mut fault_free_secs = None;
    for mode in [bulk, SendMode::Single] {
        let run = Run {
            workdir,
            mode,
            rpm,
            job_time,
        };
        for file in &files {
            let wanted = match (mode.is_bulk(), file.0) {
                (false, _) => runs.contains(&BulkRun::Single),
                (true, Shape::HeavyTail) => runs.contains(&BulkRun::HeavyTail),
                (true, Shape::Typical) => runs.contains(&BulkRun::Typical),
            };
            if !wanted {
                continue;
            }
            let secs = run.scenario(file, &jobs, None).measure().await?;
            if mode.is_bulk() && file.0 == Shape::Typical {
                fault_free_secs = secs;
            }
        }
        if let (true, true, Some(typical)) = (
            mode.is_bulk(),
            runs.contains(&BulkRun::Faulty),
            files.last(),
        ) {
            run.scenario(typical, &faulty, fault_free_secs)
                .measure()
                .await?;
        }
    }
    Ok(())
}

/// A generated file: its shape, its path, each conversation's externalIds in order.
type BenchFile = (Shape, std::path::PathBuf, BTreeMap<String, Vec<String>>);

/// What every run of one mode shares.
struct Run<'a> {
    workdir: &'a Path,
    mode: SendMode,
    rpm: u32,
    job_time: JobTime,
}

impl<'a> Run<'a> {
    fn scenario(
        &self,
        (shape, file, expected): &'a BenchFile,
        jobs: &'a BulkConfig,
        fault_free_secs: Option<f64>,
    ) -> Scenario<'a> {
        Scenario {
            shape: *shape,
            file: file.as_path(),
            workdir: self.workdir,
            mode: self.mode,
            rpm: self.rpm,
            expected,
            jobs,
            job_time: self.job_time,
            fault_free_secs,
        }
    }
}

struct Scenario<'a> {
    shape: Shape,
    file: &'a Path,
    workdir: &'a Path,
    mode: SendMode,
    rpm: u32,
    expected: &'a BTreeMap<String, Vec<String>>,
    /// The sandbox's bulk jobs (faults included, for the faulty run).
    jobs: &'a BulkConfig,
    job_time: JobTime,
    /// The fault-free run's wall time, for the faulty run.
    fault_free_secs: Option<f64>,
}

impl Scenario<'_> {
    fn faulty(&self) -> bool {
        self.jobs.item_stored_error > 0.0 || self.jobs.slow_jobs > 0.0
    }

    fn mode_label(&self) -> &'static str {
        match (self.mode, self.faulty()) {
            (SendMode::Bulk { .. }, false) => "bulk",
            (SendMode::Bulk { .. }, true) => "bulk with faults",
            (SendMode::Single, _) => "single",
        }
    }

    /// The run's wall time (None when skipped).
    async fn measure(&self) -> Result<Option<f64>, AppError> {
        let mut config = SandboxConfig::new(loopback());
        config.seed = 9;
        config.bulk = self.jobs.clone();
        let sandbox = sandbox::start(config).await?;
        let db = self.workdir.join(format!(
            "bench-bulk-{}-{}.sqlite",
            self.shape.slug(),
            self.mode_label().replace(' ', "-")
        ));
        let job = stage_job(self.file, &db, &sandbox.base_url())?;
        // Single mode's plan does not depend on it.
        let job_seconds = match self.mode {
            SendMode::Bulk { job_seconds, .. } => job_seconds,
            SendMode::Single => self.job_time.longest_seconds(),
        };
        let plan = {
            let checkpoint = Checkpoint::open_existing(&db)?;
            crate::plan::plan(
                &Workload::of_checkpoint(&checkpoint)?,
                PlanInputs {
                    rpm: self.rpm,
                    batch: BATCH_SIZE as u64,
                    job_seconds,
                    max_jobs: crate::plan::DEFAULT_MAX_JOBS,
                },
            )
        };
        let predicted_secs = match self.mode {
            SendMode::Bulk { .. } => plan.bulk.seconds,
            SendMode::Single => plan.single.seconds,
        };
        let heading = self.heading(&plan);
        if predicted_secs > LONGEST_SCENARIO.as_secs_f64() {
            sandbox.shutdown().await;
            crate::app::say!(
                "{heading}: skipped, plan predicts {predicted_secs:.0} s at {}/min (longer than {} s): lower --bulk-rows or raise --bulk-rpm",
                self.rpm,
                LONGEST_SCENARIO.as_secs()
            );
            return Ok(None);
        }

        // `run`'s path: the preflight (one token check, unthrottled), then the send phase with the
        // throttle at the budget and the mode and budget in the plan.
        let started = Instant::now();
        let unthrottled = ApiClient::new(client_config(&sandbox.base_url()), None)?;
        match send::preflight(&unthrottled, &job, self.mode.is_bulk()).await {
            Ok(preflight) => {
                for warning in &preflight.warnings {
                    eprintln!("{warning}");
                }
            }
            Err(stop) => {
                sandbox.shutdown().await;
                crate::app::say!("{heading}: the preflight refused to start: {stop:?}");
                return Ok(None);
            }
        }
        let throttle = Arc::new(Throttle::new(
            RateBudget::new(self.rpm),
            ConcurrencyLimit::adaptive(64),
        ));
        let client = Arc::new(ApiClient::new(
            client_config(&sandbox.base_url()),
            Some(throttle),
        )?);
        let send_plan = SendOptions {
            mode: self.mode,
            rpm: self.rpm,
            ..SendOptions::standard(db, 64)
        };
        // Never hangs: stopped as by Ctrl-C well past the prediction.
        let interrupt = tokio_util::sync::CancellationToken::new();
        let deadline = Duration::from_secs_f64(predicted_secs * 3.0 + 180.0);
        let timer = {
            let interrupt = interrupt.clone();
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                interrupt.cancel();
            })
        };
        let counters = SendStats::with_total(plan.rows);
        let stop = send::send_all(
            &send_plan,
            client,
            Arc::clone(&counters),
            interrupt,
            super::send_warnings(),
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        timer.abort();
        let stats = sandbox.stats();
        let out_of_order = conversations_out_of_order(&sandbox.messages(), self.expected);
        sandbox.shutdown().await;
        if !matches!(stop, SendStop::Completed) {
            eprintln!(
                "warning: the {} {} run ended {stop:?} after {secs:.0} s",
                self.shape.label(),
                self.mode_label()
            );
        }
        let most_in_flight = counters
            .bulk_jobs_most_in_flight
            .load(std::sync::atomic::Ordering::Relaxed);
        let measured = Measured {
            stats,
            secs,
            predicted_secs,
            out_of_order,
            most_in_flight,
        };
        crate::app::say!("{heading}\n{}", self.figures(&plan, &measured));
        Ok(Some(secs))
    }

    fn heading(&self, plan: &Plan) -> String {
        let top = (plan.conversations / 100).max(1);
        let top_rows: u64 = {
            let mut depths: Vec<u64> = self.expected.values().map(|ids| ids.len() as u64).collect();
            depths.sort_unstable_by(|a, b| b.cmp(a));
            depths.iter().take(top as usize).sum()
        };
        format!(
            "bulk      {} file, {} mode: {} rows in {} conversations (depth p50 {}, p90 {}, p99 {}, max {}; top 1% hold {:.1}%)",
            self.shape.label(),
            self.mode_label(),
            thousands(plan.rows),
            thousands(plan.conversations),
            plan.depth.p50,
            plan.depth.p90,
            plan.depth.p99,
            plan.depth.max,
            100.0 * top_rows as f64 / plan.rows.max(1) as f64,
        )
    }

    fn figures(&self, plan: &Plan, measured: &Measured) -> String {
        let Measured {
            stats,
            secs,
            predicted_secs,
            out_of_order,
            most_in_flight,
        } = measured;
        let (secs, predicted_secs, out_of_order) = (*secs, *predicted_secs, *out_of_order);
        let rows = plan.rows;
        let requests = stats.requests_total;
        let lookups = [&stats.lookups.camel, &stats.lookups.lower]
            .iter()
            .map(|spelling| spelling.hit + spelling.miss + spelling.no_route)
            .sum::<u64>()
            + stats.lookups.lookup_429;
        let bulk = &stats.bulk;
        let counted =
            bulk.bulk_jobs + bulk.bulk_polls + bulk.bulk_batch_reads + stats.creates + lookups;
        let other = requests.saturating_sub(counted);
        let per_request = rows as f64 / requests.max(1) as f64;
        let bound = plan.bulk.lower_bound_requests;
        let bound_per_request = rows as f64 / bound.max(1) as f64;
        let (predicted, against_bound) = match self.mode {
            SendMode::Bulk { .. } => (
                plan.bulk.requests,
                format!(
                    "lower bound {} requests = {bound_per_request:.2}/request; ratio {:.1}% (goal >= 85%)",
                    thousands(bound),
                    100.0 * per_request / bound_per_request.max(f64::MIN_POSITIVE)
                ),
            ),
            SendMode::Single => (
                plan.single.requests,
                "single mode's reference (its model: 1.0)".to_string(),
            ),
        };
        let items_per_job = bulk.bulk_items as f64 / bulk.bulk_jobs.max(1) as f64;
        let mut out = format!(
            "          {} requests: {} bulk POSTs ({items_per_job:.1} items each), {} status polls, {} results reads, {} single creates, {} lookups, {other} other (token check, audit read-backs)\n\
             \x20         {per_request:.2} messages/request; {against_bound}\n\
             \x20         plan predicted {} requests: actual {:+.1}% (goal within 30%); wall {secs:.1} s against plan's {predicted_secs:.1} s ({:.2}x; goal within 30%)\n\
             \x20         stored {} of {}, {} duplicates, {} of {} conversations out of order",
            thousands(requests),
            thousands(bulk.bulk_jobs),
            thousands(bulk.bulk_polls),
            thousands(bulk.bulk_batch_reads),
            thousands(stats.creates),
            thousands(lookups),
            thousands(predicted),
            100.0 * (requests as f64 - predicted as f64) / predicted.max(1) as f64,
            secs / predicted_secs.max(0.001),
            thousands(stats.messages_stored),
            thousands(rows),
            stats.duplicate_external_ids,
            out_of_order,
            self.expected.len(),
        );
        if let SendMode::Bulk { .. } = self.mode {
            let per_second = f64::from(self.rpm.max(1)) / 60.0;
            let budget_secs = bound as f64 / per_second;
            let path_secs = plan.depth.max as f64 * self.job_time.delay.as_secs_f64();
            let floor = budget_secs.max(path_secs);
            // The run's fixed checks, which no bound counts: the re-import guard's lookups (sized
            // to the job) and the route's proof, the audit read-backs (the token check is in the
            // bound).
            let sampled = send::reimport_guard_sample_size(rows, self.mode) as u64;
            let guard = sampled.min(plan.conversations) + 1;
            let fixed = lookups.min(guard) + other.saturating_sub(1);
            let engine = requests.saturating_sub(fixed);
            out.push_str(&format!(
                "\n          without the run's fixed checks ({} re-import guard and route proof lookups, {} audit read-backs): {} requests = {:.2}/request, {:.1}% of the lower bound",
                lookups.min(guard),
                other.saturating_sub(1),
                thousands(engine),
                rows as f64 / engine.max(1) as f64,
                100.0 * (rows as f64 / engine.max(1) as f64) / bound_per_request.max(f64::MIN_POSITIVE),
            ));
            out.push_str(&format!(
                "\n          wall {secs:.1} s against max(lower bound at the budget {budget_secs:.1} s, deepest conversation {} x job time {:.2} s = {path_secs:.1} s) = {floor:.1} s: {:.2}x (goal <= 1.3x); jobs in flight at most {most_in_flight} (plan keeps {}), {} jobs overtaken by later ones",
                plan.depth.max,
                self.job_time.delay.as_secs_f64(),
                secs / floor.max(0.001),
                plan.bulk.jobs_in_flight,
                bulk.bulk_jobs_overtaking,
            ));
        }
        if self.faulty() {
            let faults = &stats.faults_injected.bulk;
            let against = self
                .fault_free_secs
                .map(|free| {
                    format!(
                        "{:.2}x the fault-free run's {free:.1} s",
                        secs / free.max(0.001)
                    )
                })
                .unwrap_or_else(|| "no fault-free run to compare".into());
            out.push_str(&format!(
                "\n          faults fired: {} items stored then reported 500, {} jobs ten times slower; {} duplicates (must be 0); {} lookups spent; wall {against}",
                faults.bulk_item_stored_error,
                faults.bulk_slow_jobs,
                stats.duplicate_external_ids,
                thousands(lookups),
            ));
        }
        out
    }
}

/// What one run measured.
struct Measured {
    stats: SandboxStats,
    secs: f64,
    predicted_secs: f64,
    out_of_order: usize,
    most_in_flight: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_tail_has_the_issue_shape() {
        let depths = Shape::HeavyTail.depths(10_000);
        assert_eq!(depths.iter().sum::<u64>(), 10_000);
        assert_eq!(depths.len(), 2_000);
        assert_eq!(depths.iter().max(), Some(&400));
        let mut sorted = depths.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = sorted.iter().take(20).sum();
        assert!((1_900..=2_100).contains(&top), "top 1% hold {top}");
        assert!(depths.iter().all(|&depth| depth >= 1));
    }

    #[test]
    fn typical_shape_is_mostly_two_to_ten() {
        let depths = Shape::Typical.depths(10_000);
        assert_eq!(depths.iter().sum::<u64>(), 10_000);
        let within = depths.iter().filter(|&&d| (2..=10).contains(&d)).count();
        assert!(
            within * 10 >= depths.len() * 7,
            "{within} of {}",
            depths.len()
        );
    }

    #[test]
    fn small_files_keep_their_row_count() {
        for rows in [1, 7, 99, 250] {
            for shape in [Shape::HeavyTail, Shape::Typical] {
                assert_eq!(
                    shape.depths(rows).iter().sum::<u64>(),
                    rows,
                    "{shape:?} {rows}"
                );
            }
        }
    }

    #[test]
    fn order_check_sees_a_swap_and_a_gap() {
        let layout = interleave(&[2, 1]);
        assert_eq!(layout, vec![(0, 0), (1, 0), (0, 1)]);
        let expected = expected_order(&layout);
        let message = |external_id: &str| sandbox::SandboxMessage {
            id: external_id.into(),
            external_id: Some(external_id.into()),
            sent_at: None,
            created_at: None,
            created_by: String::new(),
            modified_at: None,
            modified_by: String::new(),
            imported_at: None,
            direction: None,
            preview: None,
            seeded: false,
        };
        let dump = |first: &[&str], second: &[&str]| MessagesDump {
            conversations: BTreeMap::from([
                (
                    conversation_id(0),
                    first.iter().map(|id| message(id)).collect(),
                ),
                (
                    conversation_id(1),
                    second.iter().map(|id| message(id)).collect(),
                ),
            ]),
        };
        assert_eq!(
            conversations_out_of_order(&dump(&["bench-0", "bench-2"], &["bench-1"]), &expected),
            0
        );
        assert_eq!(
            conversations_out_of_order(&dump(&["bench-2", "bench-0"], &["bench-1"]), &expected),
            1
        );
        assert_eq!(
            conversations_out_of_order(&dump(&["bench-0"], &[]), &expected),
            2
        );
    }
}
