//! Live progress on stderr: indicatif bars on a terminal, a plain line every 10 seconds
//! otherwise (CI, cron, logs), nothing with `--quiet`.
//!
//! The send phase only bumps its atomic counters ([`SendStats`], which this module reads and
//! never the reverse); rendering happens on a timer, so progress output never slows the send
//! loop.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::send::SendStats;
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

/// Rows settled, failing, held and waiting, for the progress line.
fn summary_line(stats: &SendStats) -> String {
    let mut line = format!(
        "{} ok, {} failed, {} retrying",
        stats.succeeded.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.retrying.load(Ordering::Relaxed).max(0),
    );
    let held = stats.held.load(Ordering::Relaxed);
    if held > 0 {
        line.push_str(&format!(", {held} held"));
    }
    let jobs = stats.bulk_jobs.load(Ordering::Relaxed);
    if jobs > 0 {
        line.push_str(&format!(
            ", {} bulk jobs in flight ({jobs} posted)",
            stats.bulk_jobs_in_flight.load(Ordering::Relaxed).max(0)
        ));
    }
    let settling = stats.settling.load(Ordering::Relaxed);
    if settling > 0 {
        line.push_str(&format!(", {settling} settling before lookup"));
    }
    let awaiting_route = stats.awaiting_route.load(Ordering::Relaxed);
    if awaiting_route > 0 {
        line.push_str(&format!(", {awaiting_route} waiting for the lookup route"));
    }
    let unknown = stats.unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        let reconciled = stats.reconciled.load(Ordering::Relaxed);
        let early_hits = stats.early_hits.load(Ordering::Relaxed);
        line.push_str(&format!(
            ", {unknown} unknown outcomes ({reconciled} found by lookup, {early_hits} early)"
        ));
    }
    line
}

/// A running progress display; `finish` removes bars before the final summary is printed.
pub struct ProgressView {
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressView {
    /// Shows the send phase until `finish`.
    pub fn sending(
        stats: Arc<SendStats>,
        throttle: Arc<Throttle>,
        display: Display,
    ) -> ProgressView {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = match display {
            Display::Quiet => None,
            Display::Bars => Some(tokio::spawn(render_bar(stats, throttle, stop.clone()))),
            Display::Lines => Some(tokio::spawn(render_lines(stats, throttle, stop.clone()))),
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
fn per_request(stats: &SendStats, throttle: &Throttle) -> String {
    let requests = throttle.budget.admitted.load(Ordering::Relaxed);
    if requests == 0 {
        return String::new();
    }
    format!(
        " · {:.1} msg/req",
        stats.succeeded.load(Ordering::Relaxed) as f64 / requests as f64
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
    stats: Arc<SendStats>,
    throttle: Arc<Throttle>,
    stop: tokio_util::sync::CancellationToken,
) {
    let total = stats.total.load(Ordering::Relaxed);
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
        let done = stats.done();
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        bar.set_position(done);
        bar.set_message(format!(
            "{rate:.0}/s · {} · {}",
            summary_line(&stats),
            pacing(&throttle) + &per_request(&stats, &throttle)
        ));
    }
    bar.set_position(stats.done());
    bar.finish_and_clear();
}

async fn render_lines(
    stats: Arc<SendStats>,
    throttle: Arc<Throttle>,
    stop: tokio_util::sync::CancellationToken,
) {
    let started = Instant::now();
    let total = stats.total.load(Ordering::Relaxed);
    let mut ticker = tokio::time::interval(PLAIN_LINE_EVERY);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => break,
        }
        let done = stats.done();
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!(
            "progress: {done}/{total} rows ({:.0}/s): {}; {}",
            done as f64 / secs,
            summary_line(&stats),
            pacing(&throttle) + &per_request(&stats, &throttle)
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
