//! The figures a report is made of, read from one consistent snapshot of the store.

use serde::Serialize;
use std::path::PathBuf;

use crate::checkpoint::{
    Checkpoint, CheckpointError, ErrorGroup, Job, LatencyCount, ResolutionCounts, StateCounts,
};

use super::ReportError;

/// Error groups shown by `status`.
const TOP_ERRORS: u64 = 10;
/// Example lines given per error group.
pub(super) const EXAMPLE_LINES: u32 = 5;
/// Window for the current rate.
const RATE_WINDOW_MS: i64 = 60_000;
/// The shortest window a rate is measured over, so one early result is not a huge rate.
const MIN_RATE_WINDOW_MS: i64 = 1_000;

/// How far staging got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StagingProgress {
    pub staged_through_line: u64,
    pub complete: bool,
}

/// Whether a run is working on the job now, or how the last one left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Live,
    Complete,
    Interrupted,
    Stopped,
}

impl RunState {
    fn of(live: bool, counts: &StateCounts, staging_complete: bool) -> RunState {
        if live {
            RunState::Live
        } else if counts.sending > 0 || !staging_complete {
            RunState::Interrupted
        } else if counts.pending > 0 {
            RunState::Stopped
        } else {
            RunState::Complete
        }
    }

    /// For a heading: "Running now".
    pub fn label(self) -> &'static str {
        match self {
            RunState::Live => "Running now",
            RunState::Complete => "Complete",
            RunState::Interrupted => "Interrupted",
            RunState::Stopped => "Stopped",
        }
    }

    /// Within a sentence: "stopped".
    pub fn describe(self) -> &'static str {
        match self {
            RunState::Live => "running now",
            RunState::Complete => "complete",
            RunState::Interrupted => "interrupted",
            RunState::Stopped => "stopped",
        }
    }
}

/// A distribution of millisecond timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timings {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Timings {
    /// From distinct values with their counts, ascending; None when there are none.
    pub(crate) fn of(values: &[LatencyCount]) -> Option<Timings> {
        let count: u64 = values.iter().map(|v| v.count).sum();
        if count == 0 {
            return None;
        }
        Some(Timings {
            count,
            p50: nearest_rank(values, count, 0.50),
            p90: nearest_rank(values, count, 0.90),
            p99: nearest_rank(values, count, 0.99),
            max: values.last()?.latency_ms,
        })
    }
}

/// The nearest-rank percentile `p` of `count` values given as distinct values with counts.
fn nearest_rank(values: &[LatencyCount], count: u64, p: f64) -> u64 {
    let rank = ((p * count as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for value in values {
        seen += value.count;
        if seen >= rank {
            return value.latency_ms;
        }
    }
    values.last().map_or(0, |v| v.latency_ms)
}

fn timings(
    read: impl FnOnce(
        &mut dyn FnMut(LatencyCount) -> Result<(), ReportError>,
    ) -> Result<(), ReportError>,
) -> Result<Option<Timings>, ReportError> {
    let mut values = Vec::new();
    read(&mut |value| {
        values.push(value);
        Ok(())
    })?;
    Ok(Timings::of(&values))
}

/// What `status` shows; see the module docs for the field meanings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusSummary {
    pub checkpoint: PathBuf,
    pub generated_at: String,
    pub job: Job,
    pub counts: StateCounts,
    pub total: u64,
    pub held: u64,
    pub remaining: u64,
    pub staging: StagingProgress,
    pub first_attempt_at: Option<String>,
    pub last_result_at: Option<String>,
    pub elapsed_seconds: Option<f64>,
    pub finished: u64,
    pub average_rate_per_second: Option<f64>,
    pub run_state: RunState,
    pub retryable_failed: u64,
    pub rate_window_seconds: Option<f64>,
    pub last_minute_rate_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub latency_ms: Option<Timings>,
    pub budget_wait_ms: Option<Timings>,
    pub top_errors: Vec<ErrorGroup>,
    /// The org window as the last run saw it (others' rate, ours, time yielded).
    pub pacing: Option<crate::checkpoint::PacingSnapshot>,
    /// Bulk jobs whose rows are `sending` (in flight, or left by a run that died).
    pub bulk_jobs_in_flight: u64,
    /// Rows settled by the last run per request it spent (every kind counted), when known.
    pub messages_per_request: Option<f64>,
    /// How the customers and conversations named by source ids were resolved (None when the
    /// rows name Kustomer conversations only).
    pub resolution: Option<ResolutionSummary>,
}

/// Customers and conversations found, created, failed or still waiting in the resolve phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResolutionSummary {
    pub customers: ResolutionCounts,
    pub conversations: ResolutionCounts,
}

fn resolution(cp: &Checkpoint) -> Result<Option<ResolutionSummary>, ReportError> {
    if !cp.names_tickets()? {
        return Ok(None);
    }
    let (customers, conversations) = cp.resolution_counts()?;
    Ok(Some(ResolutionSummary {
        customers,
        conversations,
    }))
}

/// Summarises the checkpoint as of now.
pub fn status(cp: &Checkpoint) -> Result<StatusSummary, ReportError> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let live = crate::checkpoint::run_in_progress(cp.path());
    cp.read_consistent(|cp| summarize(cp, now_ms, live))
}

pub(super) fn summarize(
    cp: &Checkpoint,
    now_ms: i64,
    live: bool,
) -> Result<StatusSummary, ReportError> {
    let job = cp.job()?.ok_or_else(|| CheckpointError::NoJob {
        path: cp.path().to_path_buf(),
    })?;
    let counts = cp.counts()?;
    let held = cp.held_count()?;
    let pacing = cp.pacing()?;
    let activity = cp.activity(now_ms - RATE_WINDOW_MS)?;
    let mut top_errors = Vec::new();
    cp.for_each_error_group(Some(TOP_ERRORS), EXAMPLE_LINES, |group| {
        top_errors.push(group);
        Ok::<(), CheckpointError>(())
    })?;

    let elapsed_seconds = match (activity.first_attempt_ms, activity.last_result_ms) {
        (Some(first), Some(last)) if last >= first => Some((last - first) as f64 / 1000.0),
        _ => None,
    };
    let average_rate_per_second = elapsed_seconds
        .filter(|elapsed| *elapsed > 0.0)
        .map(|elapsed| activity.finished as f64 / elapsed);
    let remaining = counts.pending + counts.sending;
    let run_state = RunState::of(live, &counts, job.staging_complete);
    // The rate is measured over the time the recent results took, never longer than the
    // window: an 8-second-old run is not divided by 60 s. Only a live run has a current rate.
    let rate_window_ms = activity
        .recent_work_started_ms
        .map_or(RATE_WINDOW_MS, |started| now_ms - started)
        .clamp(MIN_RATE_WINDOW_MS, RATE_WINDOW_MS);
    let rate_window_seconds =
        (run_state == RunState::Live).then_some(rate_window_ms as f64 / 1000.0);
    let last_minute_rate_per_second =
        rate_window_seconds.map(|window| activity.finished_since as f64 / window);
    let eta_seconds = last_minute_rate_per_second
        .filter(|rate| *rate > 0.0)
        .map(|rate| remaining as f64 / rate);
    Ok(StatusSummary {
        checkpoint: cp.path().to_path_buf(),
        generated_at: rfc3339(now_ms).unwrap_or_default(),
        staging: StagingProgress {
            staged_through_line: job.staged_through_line,
            complete: job.staging_complete,
        },
        job,
        total: counts.total(),
        counts,
        held,
        remaining,
        first_attempt_at: activity.first_attempt_ms.and_then(rfc3339),
        last_result_at: activity.last_result_ms.and_then(rfc3339),
        elapsed_seconds,
        finished: activity.finished,
        average_rate_per_second,
        run_state,
        retryable_failed: cp.retryable_failed_count()?,
        rate_window_seconds,
        last_minute_rate_per_second,
        eta_seconds,
        latency_ms: timings(|each| cp.for_each_latency(each))?,
        budget_wait_ms: timings(|each| cp.for_each_budget_wait(each))?,
        top_errors,
        bulk_jobs_in_flight: cp.bulk_jobs_sending()?,
        messages_per_request: match &pacing {
            Some(pacing) if pacing.requests > 0 => pacing.run_started_ms.map(|since| {
                cp.activity(since)
                    .map(|activity| activity.finished_since as f64 / pacing.requests as f64)
            }),
            _ => None,
        }
        .transpose()?,
        pacing,
        resolution: resolution(cp)?,
    })
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds; None if out of range.
pub(super) fn rfc3339(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|at| format!("{at:.3}"))
}
