//! The price of exactly-once: the same job sent twice at the same budget, once against a sandbox
//! that answers every create, once against one that stores some messages and then answers 5xx
//! and drops some connections (before and after storing). Reported: lookups made, requests spent
//! beyond one per row, and the wall time of the faulty run against the clean one.
//!
//! Concurrency under faults (issue 15, `--conc-faults`): the same pair at Kustomer-like latency
//! (150 ms) and a real budget (1,200/min), reporting each run's wall time against the time its
//! requests need at the budget, the smallest concurrency reached and the lookups spent (early
//! and after the full settle delay); the faulty run once more without the early lookup shows
//! what it saves.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::client::ApiClient;
use crate::sandbox::{self, Faults, SandboxConfig};
use crate::send::{
    self, SendOptions, SendStats, SendStop, DEFAULT_EARLY_LOOKUP, DEFAULT_SETTLE_DELAY,
};
use crate::throttle::{ConcurrencyLimit, ConcurrencyView, RateBudget, Throttle, ADAPTIVE_START};

use super::{client_config, generate, loopback, stage_job};

/// Runs both jobs of `rows` rows at `rpm` requests per minute and prints the comparison.
pub async fn bench_faults(workdir: &Path, rows: u64, rpm: u32) -> Result<(), AppError> {
    let file = workdir.join(format!("bench-faults-{rows}.csv"));
    generate(&file, rows)?;
    let faulty = Faults {
        store_then_error: 0.05,
        drop_before_store: 0.025,
        store_then_drop: 0.025,
        ..Faults::default()
    };
    let clean = send_once(
        &file,
        workdir,
        "clean",
        Faults::default(),
        rpm,
        DEFAULT_EARLY_LOOKUP,
    )
    .await?;
    let faults = send_once(&file, workdir, "faulty", faulty, rpm, DEFAULT_EARLY_LOOKUP).await?;
    println!(
        "exactly-once, {rows} rows at {rpm}/min: fault-free {:.1}s, {} requests; with 5% stored-then-5xx and 5% dropped connections {:.1}s ({:.2}x), {} requests ({} beyond one per row, {:.1}%), {} lookups ({} early, {} of them found the row), {} unknown outcomes ({} found already stored), stored {} of {rows}, {} duplicates",
        clean.secs,
        clean.requests,
        faults.secs,
        faults.secs / clean.secs.max(0.001),
        faults.requests,
        faults.requests.saturating_sub(rows),
        faults.requests.saturating_sub(rows) as f64 * 100.0 / rows.max(1) as f64,
        faults.lookups,
        faults.early_lookups,
        faults.early_hits,
        faults.unknown,
        faults.reconciled,
        faults.stored,
        faults.duplicates,
    );
    Ok(())
}

/// Issue 15's measurement: Kustomer-like latency and a real budget.
const CONC_LATENCY: Duration = Duration::from_millis(150);
const CONC_RPM: u32 = 1_200;

/// Runs `rows` rows at 1,200/min with 150 ms of latency, fault-free and with 5% stored-then-5xx
/// and 3% dropped connections (half before storing, half after), and prints each run's wall
/// time against the time its requests need at the budget, and the concurrency it kept.
pub async fn bench_concurrency(workdir: &Path, rows: u64) -> Result<(), AppError> {
    let file = workdir.join(format!("bench-conc-{rows}.csv"));
    generate(&file, rows)?;
    let clean = Faults {
        latency: CONC_LATENCY,
        ..Faults::default()
    };
    let faulty = Faults {
        store_then_error: 0.05,
        drop_before_store: 0.015,
        store_then_drop: 0.015,
        ..clean.clone()
    };
    let standard = DEFAULT_EARLY_LOOKUP;
    let clean = send_once(&file, workdir, "conc-clean", clean, CONC_RPM, standard).await?;
    let faults = send_once(
        &file,
        workdir,
        "conc-faulty",
        faulty.clone(),
        CONC_RPM,
        standard,
    )
    .await?;
    let late_only = send_once(
        &file,
        workdir,
        "conc-late",
        faulty,
        CONC_RPM,
        Duration::ZERO,
    )
    .await?;
    println!(
        "concurrency under faults (issue 15), {rows} rows at {CONC_RPM}/min, {} ms of latency, default settle delay ({}s), early lookup after {}s:",
        CONC_LATENCY.as_millis(),
        DEFAULT_SETTLE_DELAY.as_secs(),
        standard.as_secs_f64()
    );
    for (label, outcome) in [
        ("fault-free", &clean),
        ("5% stored-then-5xx, 3% drops", &faults),
        ("the same faults, --early-lookup 0", &late_only),
    ] {
        let at_budget = outcome.requests as f64 * 60.0 / f64::from(CONC_RPM);
        println!(
            "  {label}: {:.1}s wall for {} requests, which need {at_budget:.1}s at the budget ({:.2}x); {} unknown outcomes, stored {} of {rows}, {} duplicates; lookups {} ({} early, {} of them found the row; {} after the full delay or for the route's proof and the re-import guard); concurrency ended at {}, smallest {}; the sandbox saw at most {} in flight",
            outcome.secs,
            outcome.requests,
            outcome.secs / at_budget.max(0.001),
            outcome.unknown,
            outcome.stored,
            outcome.duplicates,
            outcome.lookups,
            outcome.early_lookups,
            outcome.early_hits,
            outcome.lookups.saturating_sub(outcome.early_lookups),
            outcome.concurrency.summary(),
            smallest(&outcome.concurrency),
            outcome.max_in_flight,
        );
    }
    println!(
        "  with the faults against fault-free: {:.2}x; without the early lookup: {:.2}x",
        faults.secs / clean.secs.max(0.001),
        late_only.secs / clean.secs.max(0.001)
    );
    Ok(())
}

/// The smallest limit of the run: the lowest a cut left, else the start (it only grew).
fn smallest(view: &ConcurrencyView) -> String {
    match view.lowest_after_cut {
        Some(lowest) => format!("{lowest} (after a cut)"),
        None => format!(
            "{} (the start; never cut)",
            view.ceiling.min(ADAPTIVE_START)
        ),
    }
}

struct Outcome {
    secs: f64,
    requests: u64,
    lookups: u64,
    early_lookups: u64,
    early_hits: u64,
    unknown: u64,
    reconciled: u64,
    stored: u64,
    duplicates: u64,
    concurrency: ConcurrencyView,
    max_in_flight: u64,
}

async fn send_once(
    file: &Path,
    workdir: &Path,
    label: &str,
    faults: Faults,
    rpm: u32,
    early_lookup: Duration,
) -> Result<Outcome, AppError> {
    let mut config = SandboxConfig::new(loopback());
    config.faults = faults;
    config.seed = 7;
    let sandbox = sandbox::start(config).await?;
    let db = workdir.join(format!("bench-faults-{label}.sqlite"));
    stage_job(file, &db, &sandbox.base_url())?;

    let throttle = Arc::new(Throttle::new(
        RateBudget::new(rpm),
        ConcurrencyLimit::adaptive(64),
    ));
    let client = Arc::new(ApiClient::new(
        client_config(&sandbox.base_url()),
        Some(Arc::clone(&throttle)),
    )?);
    let counters = SendStats::with_total(0);
    let plan = SendOptions {
        early_lookup,
        ..SendOptions::standard(db, 64)
    };
    let started = Instant::now();
    let stop = send::send_all(
        &plan,
        client,
        Arc::clone(&counters),
        Default::default(),
        super::send_warnings(),
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    if !matches!(stop, SendStop::Completed) {
        eprintln!("warning: the {label} run ended {stop:?}");
    }
    Ok(Outcome {
        secs,
        requests: stats.requests_total,
        lookups: counters.lookups.load(Ordering::Relaxed),
        early_lookups: counters.early_lookups.load(Ordering::Relaxed),
        early_hits: counters.early_hits.load(Ordering::Relaxed),
        unknown: counters.unknown.load(Ordering::Relaxed),
        reconciled: counters.reconciled.load(Ordering::Relaxed),
        stored: stats.messages_stored,
        duplicates: stats.duplicate_external_ids,
        concurrency: throttle.concurrency.view(),
        max_in_flight: stats.max_concurrency,
    })
}
