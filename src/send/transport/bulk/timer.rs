//! How the batcher paces its jobs and learns how long they take: when a job is read first, and
//! how often again.

use std::time::Duration;

/// The shortest wait before a job's first read, however fast jobs have been.
pub(super) const SHORTEST_JOB_GUESS: Duration = Duration::from_millis(50);
/// The longest wait before a job's first read, however slow jobs have been: a day.
const LONGEST_JOB_GUESS: Duration = Duration::from_secs(24 * 3600);
/// The shortest wait between two reads of one job.
pub(super) const SHORTEST_POLL: Duration = Duration::from_millis(100);
/// Reads of a job, its first included, after which it is read once per learned job time.
pub(super) const NEAR_MISS_READS: u32 = 4;
/// The wait before the first read after a miss, as a share of the learned job time; it doubles
/// with each miss, up to the whole job time.
const NEAR_MISS_SHARE: f64 = 0.1;
/// How the wait before a job's first read moves: down a little when the read found the job
/// done, up more when it did not. At equilibrium about one first read in twenty finds the job
/// unfinished (`ln(1/SHRINK) / (ln(1/SHRINK) + ln GROW)` = 5%): the wait tracks the 95th
/// percentile of the job time, so most jobs cost their POST and one read, and a job that ends
/// just after its read costs one more read soon after, not a whole job time. Small steps keep
/// the wait close to that percentile: every tenth of a second above it is paid on each of the
/// deepest conversation's rounds.
const SHRINK: f64 = 0.995;
const GROW: f64 = 1.1;

/// How bulk mode is asked to run: how the batcher paces its jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub batch_size: usize,
    /// The requests per minute the job may spend.
    pub rpm: u32,
    /// How long a job is taken to last until one is measured (`--job-seconds`).
    pub job_seconds: f64,
    /// The most jobs in flight at once (`--max-jobs`).
    pub max_jobs: usize,
}

impl Pace {
    /// The pace of a batcher that sends nothing and only reads the jobs of a dead run.
    pub fn reading_only() -> Pace {
        Pace {
            batch_size: 1,
            rpm: u32::MAX / 2,
            job_seconds: crate::plan::DEFAULT_JOB_SECONDS,
            max_jobs: 1,
        }
    }

    pub(super) fn assumed_job(&self) -> Duration {
        Duration::try_from_secs_f64(self.job_seconds).unwrap_or(Duration::ZERO)
    }

    /// Enough conversations open to fill every job that may be in flight, and one job more to
    /// choose the deepest heads from.
    pub fn lanes(&self) -> usize {
        self.batch_size
            .max(1)
            .saturating_mul(self.max_jobs.max(1).saturating_add(1))
    }

    /// Jobs the budget pays for during one job time, as jobs take now.
    pub(super) fn in_flight(&self, job_time: Duration) -> usize {
        crate::plan::jobs_in_flight(self.rpm, job_time.as_secs_f64(), self.max_jobs)
    }
}

/// How many recent jobs the timer keeps, to tell a slow job from slow jobs.
pub(super) const RECENT_JOBS: usize = 16;

/// How long jobs take, learned as they finish.
#[derive(Debug, Clone, Copy)]
pub struct JobTimer {
    /// When to read a job's results first.
    pub(super) expected: Duration,
    /// The longest a job has taken to show its results.
    pub(super) slowest: Duration,
    /// What the last jobs took (a ring; `seen` counts every job).
    recent: [Duration; RECENT_JOBS],
    seen: usize,
}

impl JobTimer {
    pub(super) fn new(expected: Duration) -> JobTimer {
        JobTimer {
            expected,
            slowest: Duration::ZERO,
            recent: [Duration::ZERO; RECENT_JOBS],
            seen: 0,
        }
    }

    /// Learns from one job. `took` is measured from the POST's answer to the read that found
    /// the results, so it says when a job was done at the latest, never how early: the wait is
    /// moved by whether the first read found the job done ([`SHRINK`], [`GROW`]), a quantile
    /// tracker that needs no more. One slow job raises it by a step only; slow jobs, one after
    /// another, raise it at once to the median of the recent jobs (once there are enough).
    pub(super) fn observe(&mut self, seen: Seen) {
        if seen.took.is_zero() {
            return;
        }
        self.slowest = self.slowest.max(seen.took);
        if let Some(slot) = self.recent.get_mut(self.seen % RECENT_JOBS) {
            *slot = seen.took;
        }
        self.seen += 1;
        // A miss raises the wait a step above the one that job was read after, not above the
        // current one: jobs in flight together were read after the same wait, and when they
        // miss together that is one lesson, not one per job.
        let expected = if seen.first_read {
            self.expected.mul_f64(SHRINK)
        } else {
            let raised = self.expected.max(seen.waited.mul_f64(GROW));
            if self.seen >= RECENT_JOBS {
                raised.max(self.recent_median())
            } else {
                raised
            }
        };
        self.expected = expected.clamp(SHORTEST_JOB_GUESS, LONGEST_JOB_GUESS);
    }

    fn recent_median(&self) -> Duration {
        let mut recent: Vec<Duration> = self
            .recent
            .iter()
            .take(self.seen.min(RECENT_JOBS))
            .copied()
            .collect();
        recent.sort_unstable();
        recent.get(recent.len() / 2).copied().unwrap_or_default()
    }
}

/// How a job's results showed: when, and whether on the first read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    pub(super) took: Duration,
    /// The wait before its first read.
    pub(super) waited: Duration,
    pub(super) first_read: bool,
}

/// The wait before the next read of a job whose `reads`-th read found it unfinished: a tenth of
/// the learned job time after the first miss, doubling with each miss up to the whole job time
/// (so a job that ends just after its first read costs one more read and little time on the
/// critical path), then once per learned job time.
pub(super) fn poll_after(learned: Duration, reads: u32) -> Duration {
    let doublings = reads.saturating_sub(1).min(NEAR_MISS_READS);
    let share = (NEAR_MISS_SHARE * f64::from(1u32 << doublings)).min(1.0);
    learned.mul_f64(share).max(SHORTEST_POLL)
}
