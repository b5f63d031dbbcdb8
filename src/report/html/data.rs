//! What the page shows, read from the store in one snapshot: the status summary, throughput
//! buckets, latency histograms, error classes, the slowest conversations.

use crate::checkpoint::{Checkpoint, ConversationTiming, ErrorClass, LatencyCount, ResultBucket};

use crate::report::summary::summarize;
use crate::report::{ReportError, StatusSummary, Timings};

/// Error codes shown, and messages per code.
pub(super) const ERROR_CLASSES: u64 = 12;
pub(super) const MESSAGES_PER_CLASS: u64 = 3;
pub(super) const EXAMPLES_PER_MESSAGE: u64 = 5;
/// Conversations in the "slowest" table.
pub(super) const SLOWEST_CONVERSATIONS: u64 = 10;
/// Most bars in the throughput chart: enough for a shape, few enough to stay legible.
pub(super) const MAX_BUCKETS: i64 = 60;
/// Messages longer than this are cut in the page (the CSV report has them whole).
pub(super) const MESSAGE_CHARS: usize = 300;

/// Bucket widths the throughput chart picks from (ms): the smallest that fits the run in
/// [`MAX_BUCKETS`] bars, so a 50 ms demo and a week-long migration both get a readable chart.
pub(super) const BUCKET_WIDTHS_MS: [i64; 29] = [
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];

/// Everything the page shows, read in one snapshot.
pub(super) struct PageData {
    pub(super) summary: StatusSummary,
    pub(super) retryable_failed: u64,
    pub(super) throughput: Option<Throughput>,
    pub(super) latency: Option<Latency>,
    /// Time attempts waited for the rate budget and a concurrency slot, apart from latency.
    pub(super) budget_wait: Option<Latency>,
    pub(super) error_classes: Vec<ErrorClass>,
    pub(super) slowest: Vec<ConversationTiming>,
}

impl PageData {
    /// Every figure of the page, read from `cp` (already in one read snapshot).
    pub(super) fn read(cp: &Checkpoint, now_ms: i64, live: bool) -> Result<PageData, ReportError> {
        Ok(PageData {
            summary: summarize(cp, now_ms, live)?,
            retryable_failed: cp.retryable_failed_count()?,
            throughput: throughput(cp)?,
            latency: latency(cp)?,
            budget_wait: budget_wait(cp)?,
            error_classes: cp.error_classes(
                ERROR_CLASSES,
                MESSAGES_PER_CLASS,
                EXAMPLES_PER_MESSAGE,
            )?,
            slowest: cp.slowest_conversations(SLOWEST_CONVERSATIONS)?,
        })
    }
}

/// Results over time, one bucket per bar, empty buckets included.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Throughput {
    pub(super) origin_ms: i64,
    pub(super) width_ms: i64,
    /// Milliseconds from the origin to the last result.
    pub(super) span_ms: i64,
    pub(super) buckets: Vec<ResultBucket>,
}

pub(super) fn bucket_width(span_ms: i64) -> i64 {
    BUCKET_WIDTHS_MS
        .into_iter()
        .find(|width| span_ms / width < MAX_BUCKETS)
        .unwrap_or(span_ms / MAX_BUCKETS + 1)
}

pub(super) fn throughput(cp: &Checkpoint) -> Result<Option<Throughput>, ReportError> {
    let Some((first_ms, last_ms)) = cp.result_span()? else {
        return Ok(None);
    };
    // Align to the width from the first result so bars start at round times.
    let mut width_ms = bucket_width(last_ms - first_ms);
    let mut origin_ms = first_ms - first_ms.rem_euclid(width_ms);
    if (last_ms - origin_ms) / width_ms >= MAX_BUCKETS {
        // Alignment pushed the last result one bucket too far.
        width_ms = bucket_width(last_ms - origin_ms);
        origin_ms = first_ms - first_ms.rem_euclid(width_ms);
    }
    let count = ((last_ms - origin_ms) / width_ms + 1) as usize;
    let mut buckets: Vec<ResultBucket> = (0..count as u64)
        .map(|index| ResultBucket {
            index,
            ..ResultBucket::default()
        })
        .collect();
    for bucket in cp.result_buckets(origin_ms, width_ms)? {
        if let Some(slot) = buckets.get_mut(bucket.index as usize) {
            *slot = bucket;
        }
    }
    Ok(Some(Throughput {
        origin_ms,
        width_ms,
        span_ms: last_ms - origin_ms,
        buckets,
    }))
}

/// Latency histogram on a roughly logarithmic scale, with exact percentiles.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Latency {
    /// `(lower, upper)` bounds in ms (upper exclusive) and the count of each bar.
    pub(super) bars: Vec<(u64, u64, u64)>,
    pub(super) count: u64,
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) max: u64,
}

/// Bar edges: every ms up to 5, then 1, 1.5, 2, 3, 4, 5, 7 per decade; whole milliseconds so
/// no bar covers an empty range.
pub(super) fn latency_edges(max: u64) -> Vec<u64> {
    let mut edges = vec![0, 1, 2, 3, 4, 5, 7];
    let mut decade = 10u64;
    while *edges.last().unwrap_or(&0) <= max {
        for step in [10, 15, 20, 30, 40, 50, 70] {
            edges.push(decade / 10 * step);
        }
        decade = decade.saturating_mul(10);
    }
    edges
}

pub(super) fn latency(cp: &Checkpoint) -> Result<Option<Latency>, ReportError> {
    // One entry per distinct millisecond value: bounded by the latency range, not the rows.
    let mut values: Vec<LatencyCount> = Vec::new();
    cp.for_each_latency(|value| {
        values.push(value);
        Ok::<(), ReportError>(())
    })?;
    Ok(latency_from(&values))
}

pub(super) fn budget_wait(cp: &Checkpoint) -> Result<Option<Latency>, ReportError> {
    let mut values: Vec<LatencyCount> = Vec::new();
    cp.for_each_budget_wait(|value| {
        values.push(value);
        Ok::<(), ReportError>(())
    })?;
    Ok(latency_from(&values))
}

pub(super) fn latency_from(values: &[LatencyCount]) -> Option<Latency> {
    let Timings {
        count,
        p50,
        p90,
        p99,
        max,
    } = Timings::of(values)?;
    let edges = latency_edges(max);
    let mut bars: Vec<(u64, u64, u64)> =
        edges.windows(2).map(|pair| (pair[0], pair[1], 0)).collect();
    let mut bar = 0;
    for value in values {
        while bar + 1 < bars.len() && value.latency_ms >= bars[bar].1 {
            bar += 1;
        }
        bars[bar].2 += value.count;
    }
    let first = bars.iter().position(|b| b.2 > 0).unwrap_or(0);
    let last = bars.iter().rposition(|b| b.2 > 0).unwrap_or(0);
    Some(Latency {
        bars: bars[first..=last].to_vec(),
        count,
        p50,
        p90,
        p99,
        max,
    })
}
