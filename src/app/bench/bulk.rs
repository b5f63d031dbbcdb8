//! Bulk mode's price, in requests of any kind: two generated files (a heavy tail, where one
//! conversation holds 4% of the rows and the top 1% of conversations a fifth; a typical export,
//! most conversations 2-10 messages), each planned by `plan` and sent in bulk mode and in single
//! mode at the same budget into an in-process sandbox with its default bulk jobs (0.2 s +/- 0.1 s,
//! items in random order). Reported per file and mode: every request the sandbox received, the
//! messages per request against `plan`'s strict-order lower bound, `plan`'s predicted requests
//! and duration against the actual, and whether every row is stored once and in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::checkpoint::Checkpoint;
use crate::client::ApiClient;
use crate::plan::{Plan, PlanInputs, Workload};
use crate::sandbox::{self, MessagesDump, SandboxConfig, SandboxStats};
use crate::send::{self, SendMode, SendOptions, SendStats, SendStop};
use crate::text::thousands;
use crate::throttle::{ConcurrencyLimit, RateBudget, Throttle};

use super::{client_config, conversation_id, loopback, stage_job, write_rows};

/// Rows per bulk job, the API's most.
const BATCH_SIZE: usize = 100;
/// A scenario predicted to take longer than this is skipped, with the reason said.
const LONGEST_SCENARIO: Duration = Duration::from_secs(5 * 60);

/// How long a sandbox job takes with its defaults, at most: what `--job-seconds` should say for it.
fn sandbox_job_seconds() -> f64 {
    (sandbox::DEFAULT_BULK_DELAY + sandbox::DEFAULT_BULK_JITTER).as_secs_f64()
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

/// Both files, both modes, at `rpm` requests a minute.
pub async fn bench_bulk(
    workdir: &Path,
    rows: u64,
    rpm: u32,
    job_seconds: Option<f64>,
) -> Result<(), AppError> {
    let job_seconds = job_seconds
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .unwrap_or_else(sandbox_job_seconds);
    crate::app::say!(
        "bulk      {rows} rows per file at {rpm}/min, --batch-size {BATCH_SIZE}, --job-seconds {job_seconds} (the sandbox's job time: {} ms +/- {} ms); every request the sandbox received counted, the preflight's token check included",
        sandbox::DEFAULT_BULK_DELAY.as_millis(),
        sandbox::DEFAULT_BULK_JITTER.as_millis(),
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
    };
    // Bulk first for both files: the figures the scenario is for come before the references.
    for mode in [bulk, SendMode::Single] {
        for (shape, file, expected) in &files {
            let run = Scenario {
                shape: *shape,
                file,
                workdir,
                mode,
                rpm,
                expected,
            };
            run.measure().await?;
        }
    }
    Ok(())
}

struct Scenario<'a> {
    shape: Shape,
    file: &'a Path,
    workdir: &'a Path,
    mode: SendMode,
    rpm: u32,
    expected: &'a BTreeMap<String, Vec<String>>,
}

impl Scenario<'_> {
    fn mode_label(&self) -> &'static str {
        match self.mode {
            SendMode::Bulk { .. } => "bulk",
            SendMode::Single => "single",
        }
    }

    async fn measure(&self) -> Result<(), AppError> {
        let mut config = SandboxConfig::new(loopback());
        config.seed = 9;
        let sandbox = sandbox::start(config).await?;
        let db = self.workdir.join(format!(
            "bench-bulk-{}-{}.sqlite",
            self.shape.slug(),
            self.mode_label()
        ));
        let job = stage_job(self.file, &db, &sandbox.base_url())?;
        // Single mode's plan does not depend on it.
        let job_seconds = match self.mode {
            SendMode::Bulk { job_seconds, .. } => job_seconds,
            SendMode::Single => sandbox_job_seconds(),
        };
        let plan = {
            let checkpoint = Checkpoint::open_existing(&db)?;
            crate::plan::plan(
                &Workload::of_checkpoint(&checkpoint)?,
                PlanInputs {
                    rpm: self.rpm,
                    batch: BATCH_SIZE as u64,
                    job_seconds,
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
            return Ok(());
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
                return Ok(());
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
        let deadline = Duration::from_secs_f64(predicted_secs * 3.0 + 60.0);
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
            counters,
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
        crate::app::say!(
            "{heading}\n{}",
            self.figures(&plan, &stats, secs, predicted_secs, out_of_order)
        );
        Ok(())
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

    fn figures(
        &self,
        plan: &Plan,
        stats: &SandboxStats,
        secs: f64,
        predicted_secs: f64,
        out_of_order: usize,
    ) -> String {
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
        format!(
            "          {} requests: {} bulk POSTs ({items_per_job:.1} items each), {} status polls, {} results reads, {} single creates, {} lookups, {other} other (token check, audit read-backs)\n\
             \x20         {per_request:.2} messages/request; {against_bound}\n\
             \x20         plan predicted {} requests: actual {:+.1}% (goal within 30%); wall {secs:.1} s against plan's {predicted_secs:.1} s ({:.2}x)\n\
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
        )
    }
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
