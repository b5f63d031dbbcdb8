//! How the batcher paces its jobs and learns how long they take: when a job is read first, and
//! how often again.

use std::time::Duration;

/// The shortest wait before a job's first read, however fast jobs have been.
pub(super) const SHORTEST_JOB_GUESS: Duration = Duration::from_millis(50);
/// The shortest wait between two reads of one job.
pub(super) const SHORTEST_POLL: Duration = Duration::from_millis(100);
/// Reads of a job, its first included, after which it is read once per learned job time.
pub(super) const NEAR_MISS_READS: u32 = 3;

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
    /// the results, so it is never less than the wait before the first read: averaging it alone
    /// could only go up. So a job found done on the first read shortens the wait a little (2%),
    /// and one that needed more reads raises it at once to 110% of what that job took: a second
    /// read costs a request, a late read only time. A job more than twice as slow as expected
    /// raises it only as far as the median of the recent jobs says: one slow job must not slow
    /// every round that follows, but slow jobs must.
    pub(super) fn observe(&mut self, seen: Seen) {
        if seen.took.is_zero() {
            return;
        }
        self.slowest = self.slowest.max(seen.took);
        if let Some(slot) = self.recent.get_mut(self.seen % RECENT_JOBS) {
            *slot = seen.took;
        }
        self.seen += 1;
        self.expected = if seen.first_read {
            (self.expected * 49 / 50).max(SHORTEST_JOB_GUESS)
        } else if seen.took > self.expected * 2 {
            self.expected.max(self.recent_median() * 11 / 10)
        } else {
            self.expected.max(seen.took * 11 / 10)
        };
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
    pub(super) first_read: bool,
}

/// The wait before the next read of a job whose `reads`-th read found it unfinished: a quarter
/// of the learned job time for the first reads after a near miss (so a job that ends just after
/// its first read does not cost a whole job time on the critical path, nor teach the timer twice
/// its duration), then once per learned job time.
pub(super) fn poll_after(learned: Duration, reads: u32) -> Duration {
    let wait = if reads <= NEAR_MISS_READS {
        learned / 4
    } else {
        learned
    };
    wait.max(SHORTEST_POLL)
}
