//! Live progress on stderr: indicatif bars on a terminal, a plain line every 10 seconds
//! otherwise (CI, cron, logs), nothing with `--quiet`.
//!
//! The send phase only bumps atomic counters; rendering happens on a timer, so progress output
//! never slows the send loop.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::checkpoint::RowState;
use crate::throttle::{PacingSnapshot, Throttle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bars,
    Lines,
    Quiet,
}

impl Display {
    pub fn detect(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Lines
        }
    }
}

const PLAIN_LINE_EVERY: Duration = Duration::from_secs(10);

/// Counters of the send phase, bumped by the workers.
#[derive(Debug, Default)]
pub struct SendCounters {
    /// Rows with work when the phase started.
    pub total: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Rows left pending behind a transient failure earlier in their conversation.
    pub held: AtomicU64,
    /// Rows whose unknown outcome a lookup by externalId settled as created.
    pub reconciled: AtomicU64,
    /// Creates whose outcome was unknown (5xx, timeout, lost connection, unreadable success).
    pub unknown: AtomicU64,
    /// Lookups by externalId made (reconciliation, the route's proof, the re-import guard).
    pub lookups: AtomicU64,
    /// Conversations waiting out the settle delay before a lookup, and waiting for the lookup
    /// route to be proven.
    settling: AtomicU64,
    awaiting_route: AtomicU64,
    /// Bulk jobs posted, those not yet answered, and results reads beyond the first per job.
    pub bulk_jobs: AtomicU64,
    bulk_jobs_in_flight: AtomicI64,
    pub bulk_polls: AtomicU64,
    bulk_created: AtomicU64,
    retrying: AtomicI64,
}

impl SendCounters {
    pub fn with_total(total: u64) -> Arc<SendCounters> {
        let counters = SendCounters::default();
        counters.total.store(total, Ordering::Relaxed);
        Arc::new(counters)
    }

    /// Counts a settled row; rows sent back to pending or left `sending` are not settled.
    pub fn record(&self, state: RowState) {
        match state {
            RowState::Succeeded => self.succeeded.fetch_add(1, Ordering::Relaxed),
            RowState::Failed => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    pub fn add_held(&self, rows: u64) {
        self.held.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn add_reconciled(&self, rows: u64) {
        self.reconciled.fetch_add(rows, Ordering::Relaxed);
    }

    pub fn add_unknown(&self) {
        self.unknown.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_waiting(&self, settling: usize, awaiting_route: usize) {
        self.settling.store(settling as u64, Ordering::Relaxed);
        self.awaiting_route
            .store(awaiting_route as u64, Ordering::Relaxed);
    }

    /// A bulk job posted (`+1`) or done (`-1`).
    pub fn add_bulk_job(&self, delta: i64) {
        if delta > 0 {
            self.bulk_jobs.fetch_add(1, Ordering::Relaxed);
        }
        self.bulk_jobs_in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts rows created by bulk jobs; returns the count so far, this one included.
    pub fn bulk_created(&self, rows: u64) -> u64 {
        self.bulk_created.fetch_add(rows, Ordering::Relaxed) + rows
    }

    pub fn add_bulk_poll(&self) {
        self.bulk_polls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_lookup(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retry_waits(&self, delta: i64) {
        self.retrying.fetch_add(delta, Ordering::Relaxed);
    }

    /// Rows whose fate this run has settled.
    pub fn done(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    fn summary_line(&self) -> String {
        let mut line = format!(
            "{} ok, {} failed, {} retrying",
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.retrying.load(Ordering::Relaxed).max(0),
        );
        let held = self.held.load(Ordering::Relaxed);
        if held > 0 {
            line.push_str(&format!(", {held} held"));
        }
        let jobs = self.bulk_jobs.load(Ordering::Relaxed);
        if jobs > 0 {
            line.push_str(&format!(
                ", {} bulk jobs in flight ({jobs} posted)",
                self.bulk_jobs_in_flight.load(Ordering::Relaxed).max(0)
            ));
        }
        let settling = self.settling.load(Ordering::Relaxed);
        if settling > 0 {
            line.push_str(&format!(", {settling} settling before lookup"));
        }
        let awaiting_route = self.awaiting_route.load(Ordering::Relaxed);
        if awaiting_route > 0 {
            line.push_str(&format!(", {awaiting_route} waiting for the lookup route"));
        }
        let unknown = self.unknown.load(Ordering::Relaxed);
        if unknown > 0 {
            let reconciled = self.reconciled.load(Ordering::Relaxed);
            line.push_str(&format!(
                ", {unknown} unknown outcomes ({reconciled} found by lookup)"
            ));
        }
        line
    }
}

/// A running progress display; `finish` removes bars before the final summary is printed.
pub struct ProgressView {
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressView {
    /// Shows the send phase until `finish`.
    pub fn sending(
        counters: Arc<SendCounters>,
        throttle: Arc<Throttle>,
        display: Display,
    ) -> ProgressView {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = match display {
            Display::Quiet => None,
            Display::Bars => Some(tokio::spawn(render_bar(counters, throttle, stop.clone()))),
            Display::Lines => Some(tokio::spawn(render_lines(counters, throttle, stop.clone()))),
        };
        ProgressView { stop, task }
    }

    pub async fn finish(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Budget, concurrency, the org window's use and any common pause, for the progress line.
/// Messages created per request spent so far (every request counts against the org budget).
fn per_request(counters: &SendCounters, throttle: &Throttle) -> String {
    let requests = throttle.budget.admitted.load(Ordering::Relaxed);
    if requests == 0 {
        return String::new();
    }
    format!(
        " · {:.1} msg/req",
        counters.succeeded.load(Ordering::Relaxed) as f64 / requests as f64
    )
}

fn pacing(throttle: &Throttle) -> String {
    let budget = &throttle.budget;
    let concurrency = throttle.concurrency.view().describe();
    let snapshot = PacingSnapshot::of(throttle);
    let mut text = format!(
        "{} · conc {concurrency} · 429s {}",
        snapshot.describe(),
        budget.rate_limited.load(Ordering::Relaxed)
    );
    if let Some(until) = budget.paused_until() {
        let wait = until.saturating_duration_since(tokio::time::Instant::now());
        let resume_at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_millis(
                i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
            ))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        text.push_str(&format!(
            " · PAUSED for rate limit, {} left (until {} UTC)",
            crate::text::duration(wait + Duration::from_millis(999)),
            resume_at.strftime("%H:%M:%S")
        ));
    } else if snapshot.adaptive && budget.share_view().is_some_and(|share| share.yielding) {
        text.push_str(" · yielding to other clients");
    }
    text
}

async fn render_bar(
    counters: Arc<SendCounters>,
    throttle: Arc<Throttle>,
    stop: tokio_util::sync::CancellationToken,
) {
    let total = counters.total.load(Ordering::Relaxed);
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("sending {bar:24} {pos}/{len} ETA {eta} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => break,
        }
        let done = counters.done();
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_position(done);
        bar.set_message(format!(
            "{rate:.0}/s · {} · {}",
            counters.summary_line(),
            pacing(&throttle) + &per_request(&counters, &throttle)
        ));
    }
    bar.set_position(counters.done());
    bar.finish_and_clear();
}

async fn render_lines(
    counters: Arc<SendCounters>,
    throttle: Arc<Throttle>,
    stop: tokio_util::sync::CancellationToken,
) {
    let started = Instant::now();
    let total = counters.total.load(Ordering::Relaxed);
    let mut ticker = tokio::time::interval(PLAIN_LINE_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => break,
        }
        let done = counters.done();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "progress: {done}/{total} rows ({:.0}/s): {}; {}",
            done as f64 / secs,
            counters.summary_line(),
            pacing(&throttle) + &per_request(&counters, &throttle)
        );
    }
}

/// Staging progress: bytes read (a bar when the total is known), rows per second, invalid rows.
pub struct StagingView {
    bar: Option<ProgressBar>,
    display: Display,
    started: Instant,
    last_line: Instant,
}

impl StagingView {
    pub fn new(display: Display, total_bytes: Option<u64>) -> StagingView {
        let bar = (display == Display::Bars).then(|| {
            let bar = ProgressBar::with_draw_target(total_bytes, ProgressDrawTarget::stderr());
            let template = if total_bytes.is_some() {
                "staging {bar:30} {bytes}/{total_bytes}  {msg}"
            } else {
                "staging {spinner} {bytes}  {msg}"
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        StagingView {
            bar,
            display,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// `rows` read so far, up to byte `position`, `invalid` of them refused.
    pub fn update(&mut self, rows: u64, position: u64, invalid: u64) {
        let rate = || rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        if let Some(bar) = &self.bar {
            if rows.is_multiple_of(256) {
                bar.set_position(position);
                bar.set_message(format!("{rows} rows ({:.0}/s), {invalid} invalid", rate()));
            }
        } else if self.display == Display::Lines && self.last_line.elapsed() >= PLAIN_LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!(
                "staging: {rows} rows read ({:.0}/s), {position} bytes, {invalid} invalid",
                rate()
            );
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
