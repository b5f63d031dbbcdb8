//! `kustomer-import bench`: throughput, staging speed and peak memory, each reported next to a
//! reference measured in the same run on the same machine, so the ratios mean something on a
//! shared, noisy host where absolute numbers do not.
//!
//! - Staging: rows/s of `run`'s staging (parse, validate, stamp, write the checkpoint) against a
//!   bare parse of the same file by the same reader.
//! - Sending: messages/s of the full send phase (checkpoint writes, ordering, retries) against
//!   raw concurrent POSTs of the same bodies through the same client, both into an in-process
//!   sandbox with no added latency.
//! - Live integrations: a live client bursting beside the import in an org limited like issue
//!   10's (1,800/min, bursts of 24/s and 12/s, 60% on average; 15 s windows instead of 60 s),
//!   the import at the plain ceiling (as before adaptive pacing) and with its adaptive share, in
//!   the same run: the live client's 429s, and the share of what it left that the import used.
//! - Memory: peak resident set (VmHWM) of a child `kustomer-import` process staging, then
//!   staging and sending, a large generated file (Linux only).
//! - Bulk mode (`bulk`): messages per request of any kind on a heavy-tailed and a typical file,
//!   against `plan`'s strict-order lower bound, and `plan`'s predictions against the actual;
//!   single mode on the same files for reference.
//! - Exactly-once (`faults`): lookups and extra requests that unknown outcomes cost, and the wall
//!   time against a fault-free run of the same job at the same budget.
//! - Concurrency under faults (`faults`, `--conc-faults`, alone): issue 15's measurement at
//!   150 ms of latency and 1,200/min, wall time against the time the requests need at the budget.

mod bulk;
mod faults;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::checkpoint::Checkpoint;
use crate::cli::BenchArgs;
use crate::client::{ApiClient, ApiKey, ClientConfig};
use crate::config::{format_utc, InputArg, StagingChoices};
use crate::exit_codes::ExitCode;
use crate::input::{self, Format, InputSource};
use crate::progress::Display;
use crate::sandbox::{self, SandboxConfig};
use crate::send::{self, SendOptions, SendStats, SendStop};
use crate::throttle::{ConcurrencyLimit, RateBudget, Throttle};

const CONVERSATION_SIZE: u64 = 20;

/// The send phase's warnings, printed as `run` prints them.
fn send_warnings() -> send::Events {
    super::pipeline::print_send_events().0
}

pub fn run(args: &BenchArgs) -> Result<ExitCode, AppError> {
    let scratch =
        tempfile::tempdir().map_err(AppError::io("cannot create a temporary directory"))?;
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&workdir)
        .map_err(AppError::io(format!("cannot create {}", workdir.display())))?;
    let runtime = crate::app::runtime()?;
    crate::app::say!("kustomer-import bench ({} cores)", num_cpus());
    if args.conc_faults {
        runtime.block_on(faults::bench_concurrency(&workdir, args.conc_faults_rows))?;
        return Ok(ExitCode::Success);
    }

    let staging_file = workdir.join(format!("bench-{}.csv", args.staging_rows));
    generate(&staging_file, args.staging_rows)?;
    bench_staging(&staging_file, &workdir, args.staging_rows)?;

    let send_file = workdir.join(format!("bench-{}.csv", args.rows));
    generate(&send_file, args.rows)?;
    for &concurrency in &args.concurrency {
        runtime.block_on(bench_sending(&send_file, &workdir, args.rows, concurrency))?;
    }

    if args.budget_secs > 0 {
        let secs = Duration::from_secs(args.budget_secs);
        let rows = u64::from(args.org_limit) * 2 * (args.budget_secs / 60 + 1);
        let budget_file = workdir.join(format!("bench-budget-{rows}.csv"));
        generate(&budget_file, rows)?;
        // The default: half the reported org limit. Then a job that asks for 1.5 times the whole
        // org limit, which only the API's answers (remaining, 429, reset) can rein in.
        let default_budget = None;
        let greedy_budget = Some(args.org_limit.saturating_mul(3) / 2);
        for max_rpm in [default_budget, greedy_budget] {
            runtime.block_on(bench_budget(
                &budget_file,
                &workdir,
                args.org_limit,
                max_rpm,
                secs,
            ))?;
        }
    }
    if args.fault_rows > 0 {
        runtime.block_on(faults::bench_faults(
            &workdir,
            args.fault_rows,
            args.fault_rpm,
        ))?;
    }
    if args.bulk_rows > 0 {
        runtime.block_on(bulk::bench_bulk(
            &workdir,
            args.bulk_rows,
            args.bulk_rpm,
            args.bulk_job_seconds,
            bulk::JobTime {
                delay: Duration::from_millis(args.bulk_delay_ms),
                jitter: Duration::from_millis(args.bulk_jitter_ms),
            },
            &args.bulk_runs,
        ))?;
    }
    if args.share_secs > 0 {
        let secs = Duration::from_secs(args.share_secs);
        let rows = SHARE_CEILING_PER_MINUTE * (args.share_secs / 60 + 1);
        let share_file = workdir.join(format!("bench-share-{rows}.csv"));
        generate(&share_file, rows)?;
        for adaptive in [false, true] {
            runtime.block_on(bench_share(&share_file, &workdir, adaptive, secs))?;
        }
    }
    if !args.no_memory {
        runtime.block_on(bench_memory(&staging_file, &workdir, args.staging_rows))?;
    }
    Ok(ExitCode::Success)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A deterministic file of `rows` valid messages, `CONVERSATION_SIZE` per conversation, with
/// conversations interleaved the way exports from a helpdesk usually are.
pub fn generate(path: &Path, rows: u64) -> Result<(), AppError> {
    let conversations = rows.div_ceil(CONVERSATION_SIZE).max(1);
    write_rows(
        path,
        (0..rows).map(|index| (index % conversations, index / conversations)),
    )
}

/// Writes one valid message per `(conversation, position)`, numbered in file order (externalId
/// `bench-{index}`); sentAt grows with the position, so file order within a conversation is its
/// chronological order whenever positions come in order.
pub fn write_rows(path: &Path, rows: impl IntoIterator<Item = (u64, u64)>) -> Result<(), AppError> {
    let file = std::fs::File::create(path)
        .map_err(AppError::io(format!("cannot create {}", path.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let fail = AppError::io(format!("cannot write {}", path.display()));
    let write = || -> std::io::Result<()> {
        writeln!(
            out,
            "conversationId,externalId,channel,app,direction,sentAt,preview,meta.ticket_id"
        )?;
        let start =
            jiff::Timestamp::from_second(1_577_836_800).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        for (index, (conversation, position)) in rows.into_iter().enumerate() {
            let sent = start
                .checked_add(jiff::SignedDuration::from_secs(
                    (conversation * 3_600 + position * 60) as i64,
                ))
                .unwrap_or(start);
            let direction = if position.is_multiple_of(2) {
                "in"
            } else {
                "out"
            };
            writeln!(
                out,
                "{},bench-{index},chat,bench,{direction},{},\"Message {position} of conversation {conversation}: the customer asks about order {index}, \"\"quoted\"\", with a comma.\",T{conversation}",
                conversation_id(conversation),
                format_utc(sent)
            )?;
        }
        out.flush()
    };
    write().map_err(fail)
}

/// The Kustomer conversation id of a generated conversation number.
pub fn conversation_id(conversation: u64) -> String {
    format!("{conversation:024x}")
}

fn bench_staging(file: &Path, workdir: &Path, rows: u64) -> Result<(), AppError> {
    let source = InputSource::detect(file, None)?;
    let started = Instant::now();
    let mut parsed = 0u64;
    for record in input::records(&source)? {
        record?;
        parsed += 1;
    }
    let parse_secs = started.elapsed().as_secs_f64();

    let db = workdir.join(format!("bench-staging-{rows}.sqlite"));
    remove_checkpoint(&db);
    let started = Instant::now();
    let request = crate::app::JobRequest {
        input: InputArg::File(file.to_path_buf()),
        db: db.clone(),
        staging: StagingChoices::utc_defaults(Some(Format::Csv)),
        base_url: "http://127.0.0.1:9".into(),
        settings: serde_json::json!({ "bench": true }),
    };
    let (mut checkpoint, job, source) = crate::app::create_job(&request)?;
    crate::app::stage(&mut checkpoint, &job, &source, Display::Quiet, None)?;
    let stage_secs = started.elapsed().as_secs_f64();
    crate::app::say!(
        "staging   {rows} rows: {:.0} rows/s (reference bare parse: {:.0} rows/s; ratio {:.2})",
        rows as f64 / stage_secs,
        parsed as f64 / parse_secs,
        parse_secs / stage_secs
    );
    Ok(())
}

fn remove_checkpoint(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

async fn bench_sending(
    file: &Path,
    workdir: &Path,
    rows: u64,
    concurrency: usize,
) -> Result<(), AppError> {
    // Reference: the same bodies posted with the same concurrency, no checkpoint, no ordering.
    let db = workdir.join(format!("bench-send-{rows}-c{concurrency}.sqlite"));
    remove_checkpoint(&db);
    let reference_sandbox = sandbox::start(SandboxConfig::new(loopback())).await?;
    let request = crate::app::JobRequest {
        input: InputArg::File(file.to_path_buf()),
        db: db.clone(),
        staging: StagingChoices::utc_defaults(Some(Format::Csv)),
        base_url: reference_sandbox.base_url(),
        settings: serde_json::json!({ "bench": true, "concurrency": concurrency }),
    };
    let (mut checkpoint, job, source) = crate::app::create_job(&request)?;
    crate::app::stage(&mut checkpoint, &job, &source, Display::Quiet, None)?;
    let requests = load_requests(&checkpoint)?;
    drop(checkpoint);

    let client = Arc::new(ApiClient::new(
        client_config(&reference_sandbox.base_url()),
        None,
    )?);
    let requests = Arc::new(requests);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
        tasks.spawn(async move {
            let mut failures = 0u64;
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((conversation, body)) = requests.get(index) else {
                    break;
                };
                if client.create_message(conversation, body).await.0.is_err() {
                    failures += 1;
                }
            }
            failures
        });
    }
    let mut reference_failures = 0;
    while let Some(joined) = tasks.join_next().await {
        reference_failures += joined.unwrap_or(0);
    }
    let reference_secs = started.elapsed().as_secs_f64();
    reference_sandbox.shutdown().await;

    // Measured: the real send phase, into a fresh sandbox.
    let measured_sandbox = sandbox::start(SandboxConfig::new(loopback())).await?;
    // The same concurrency as the reference and a budget far above what loopback can carry, so
    // the ratio measures the importer's own overhead, not pacing.
    let throttle = Arc::new(Throttle::new(
        RateBudget::new(u32::MAX / 2),
        ConcurrencyLimit::fixed(concurrency),
    ));
    let client = Arc::new(ApiClient::new(
        client_config(&measured_sandbox.base_url()),
        Some(throttle),
    )?);
    let counters = SendStats::with_total(rows);
    let plan = SendOptions {
        max_failed_rows: rows,
        ..SendOptions::standard(db.clone(), concurrency)
    };
    let started = Instant::now();
    let stop = send::send_all(
        &plan,
        client,
        counters.clone(),
        Default::default(),
        send_warnings(),
    )
    .await?;
    let send_secs = started.elapsed().as_secs_f64();
    let stored = measured_sandbox.stats().messages_stored;
    measured_sandbox.shutdown().await;
    let succeeded = counters
        .succeeded
        .load(std::sync::atomic::Ordering::Relaxed);
    if !matches!(stop, SendStop::Completed) || succeeded != rows {
        eprintln!("warning: the measured run ended {stop:?} with {succeeded} of {rows} succeeded");
    }
    crate::app::say!(
        "sending   {rows} rows at concurrency {concurrency}: {:.0} msg/s (reference raw POSTs: {:.0} req/s{}; ratio {:.2}); sandbox stored {stored}",
        rows as f64 / send_secs,
        rows as f64 / reference_secs,
        if reference_failures > 0 { format!(", {reference_failures} failed") } else { String::new() },
        reference_secs / send_secs,
    );
    Ok(())
}

/// Runs the send phase for `secs` against a sandbox whose org allows `org_limit` requests per
/// 60 s, and reports the rate achieved against the budget and the share of 429 answers.
async fn bench_budget(
    file: &Path,
    workdir: &Path,
    org_limit: u32,
    max_rpm: Option<u32>,
    secs: Duration,
) -> Result<(), AppError> {
    let mut config = SandboxConfig::new(loopback());
    config.org_limit = Some(org_limit);
    config.window = sandbox::DEFAULT_WINDOW;
    let sandbox = sandbox::start(config).await?;
    let db = workdir.join(format!("bench-budget-{}.sqlite", max_rpm.unwrap_or(0)));
    stage_job(file, &db, &sandbox.base_url())?;

    // The same decision `run` makes: preflight reads x-ratelimit-limit, then the budget is chosen.
    // Paced at that ceiling alone: how the adaptive share under it behaves beside other clients
    // is the live-integration scenario's to measure.
    let probe = ApiClient::new(client_config(&sandbox.base_url()), None)?;
    let reported = probe
        .current_token()
        .await
        .ok()
        .and_then(|token| token.rate.limit);
    let (rpm, source) =
        crate::throttle::choose_budget(max_rpm, crate::throttle::DEFAULT_BUDGET_SHARE, reported);
    let Measured {
        before,
        after,
        elapsed,
        ..
    } = send_for(&db, sandbox, RateBudget::new(rpm), secs).await?;

    let requests = after.requests_total - before.requests_total;
    let limited = after.requests_by_status.get("429").copied().unwrap_or(0)
        - before.requests_by_status.get("429").copied().unwrap_or(0);
    let allowed = f64::from(rpm.min(org_limit)) * elapsed / 60.0;
    crate::app::say!(
        "budget    {} over {elapsed:.0}s: {requests} requests = {:.0}/min, {:.1}% of the {} allowed (min of budget and org limit); {limited} answered 429 ({:.2}%)",
        source.describe(rpm),
        requests as f64 * 60.0 / elapsed,
        100.0 * requests as f64 / allowed,
        allowed.round(),
        100.0 * limited as f64 / (requests.max(1)) as f64,
    );
    Ok(())
}

/// Issue 10's org, with windows a quarter as long: 1,800 a minute is 450 per 15 s.
const SHARE_WINDOW: Duration = Duration::from_secs(15);
const SHARE_ORG_LIMIT: u32 = 450;
/// The live client: 24/s then 12/s, two cycles a window (60% of the limit on average).
const SHARE_LIVE_PATTERN: &str = "bursts:24/3.75,12/3.75";
/// Half the org's limit per minute: what `--budget-share 0.5` takes of a 60 s window.
const SHARE_CEILING_PER_MINUTE: u64 = 900;

/// Runs the send phase for `secs` beside a live client, at the plain ceiling or adaptive, and
/// reports the live client's 429s and the share of what it left that the import used.
async fn bench_share(
    file: &Path,
    workdir: &Path,
    adaptive: bool,
    secs: Duration,
) -> Result<(), AppError> {
    let mut config = SandboxConfig::new(loopback());
    config.org_limit = Some(SHARE_ORG_LIMIT);
    config.window = SHARE_WINDOW;
    config.live_client = Some(
        SHARE_LIVE_PATTERN
            .parse()
            .map_err(sandbox::SandboxError::InvalidConfig)?,
    );
    let db = workdir.join(format!("bench-share-{adaptive}.sqlite"));
    stage_job(file, &db, "http://127.0.0.1:9")?;
    let sandbox = sandbox::start(config).await?;
    let ceiling = u32::try_from(SHARE_CEILING_PER_MINUTE).unwrap_or(u32::MAX);
    let budget = if adaptive {
        RateBudget::new(ceiling).sharing(crate::throttle::Reserve::default())
    } else {
        RateBudget::new(ceiling)
    };
    let Measured {
        before,
        after,
        elapsed,
        throttle,
    } = send_for(&db, sandbox, budget, secs).await?;

    let status = |stats: &sandbox::SandboxStats, code: &str| {
        stats.requests_by_status.get(code).copied().unwrap_or(0)
    };
    let import_limited = status(&after, "429") - status(&before, "429");
    let import_spent = after.requests_total - before.requests_total - import_limited;
    let live_ok = after.live_client.ok - before.live_client.ok;
    let live_limited = after.live_client.rate_limited - before.live_client.rate_limited;
    let offered = f64::from(SHARE_ORG_LIMIT) * elapsed / SHARE_WINDOW.as_secs_f64();
    let left = (offered - live_ok as f64).max(1.0);
    let label = if adaptive {
        "adaptive share (10% reserve)"
    } else {
        "plain ceiling (before)      "
    };
    let yielded = throttle
        .budget
        .share_view()
        .map(|view| format!(", yielded {:.0}s", view.yielded.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "live      {label} over {elapsed:.0}s: live client {live_limited} x 429 of {} requests; import used {import_spent} of the {left:.0} the live client left ({:.1}%), {import_limited} x 429{yielded}",
        live_ok + live_limited,
        100.0 * import_spent as f64 / left,
    );
    Ok(())
}

/// Stages `file` into a fresh checkpoint at `db`.
fn stage_job(file: &Path, db: &Path, base_url: &str) -> Result<crate::checkpoint::Job, AppError> {
    remove_checkpoint(db);
    let request = crate::app::JobRequest {
        input: InputArg::File(file.to_path_buf()),
        db: db.to_path_buf(),
        staging: StagingChoices::utc_defaults(Some(Format::Csv)),
        base_url: base_url.to_string(),
        settings: serde_json::json!({ "bench": true }),
    };
    let (mut checkpoint, job, source) = crate::app::create_job(&request)?;
    crate::app::stage(&mut checkpoint, &job, &source, Display::Quiet, None)?;
    Ok(job)
}

/// What a timed send phase did, as the sandbox counted it.
struct Measured {
    before: sandbox::SandboxStats,
    after: sandbox::SandboxStats,
    elapsed: f64,
    throttle: Arc<Throttle>,
}

/// The send phase of the job in `db` against `sandbox`, paced by `budget`, for at most `secs`,
/// then stopped as by Ctrl-C; the sandbox is shut down after.
async fn send_for(
    db: &Path,
    sandbox: sandbox::RunningSandbox,
    budget: RateBudget,
    secs: Duration,
) -> Result<Measured, AppError> {
    let throttle = Arc::new(Throttle::new(budget, ConcurrencyLimit::adaptive(64)));
    let client = Arc::new(ApiClient::new(
        client_config(&sandbox.base_url()),
        Some(Arc::clone(&throttle)),
    )?);
    let plan = SendOptions::standard(db.to_path_buf(), 64);
    let stop = tokio_util::sync::CancellationToken::new();
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(secs).await;
            stop.cancel();
        })
    };
    let before = sandbox.stats();
    let started = Instant::now();
    send::send_all(
        &plan,
        client,
        SendStats::with_total(0),
        stop,
        send_warnings(),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    timer.abort();
    let after = sandbox.stats();
    sandbox.shutdown().await;
    Ok(Measured {
        before,
        after,
        elapsed,
        throttle,
    })
}

fn load_requests(checkpoint: &Checkpoint) -> Result<Vec<(String, String)>, AppError> {
    let mut requests = Vec::new();
    for conversation in checkpoint.conversations_with_work()? {
        for row in checkpoint.conversation_queue(&conversation)? {
            requests.push((conversation.clone(), checkpoint.body(row.line)?));
        }
    }
    Ok(requests)
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client_config(base_url: &str) -> ClientConfig {
    ClientConfig {
        base_url: base_url.to_string(),
        key: ApiKey::new(sandbox::ADMIN_KEY.to_string()),
        request_timeout: crate::config::DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: crate::config::CONNECT_TIMEOUT,
    }
}

/// Peak memory of child processes: `run --dry-run` (staging only) and `run` (staging and
/// sending) on the staging file, against an in-process sandbox.
async fn bench_memory(file: &Path, workdir: &Path, rows: u64) -> Result<(), AppError> {
    let exe = std::env::current_exe().map_err(AppError::io("cannot find this executable"))?;
    let file_mb = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let sandbox = sandbox::start(SandboxConfig::new(loopback())).await?;
    for (label, dry_run) in [("staging only", true), ("staging and sending", false)] {
        let db = workdir.join(format!("bench-memory-{rows}-{dry_run}.sqlite"));
        remove_checkpoint(&db);
        let mut command = std::process::Command::new(&exe);
        command
            .arg("run")
            .arg(file)
            .arg("--db")
            .arg(&db)
            .arg("--base-url")
            .arg(sandbox.base_url())
            .arg("--concurrency")
            .arg("64")
            .arg("--quiet")
            .env("KUSTOMER_API_KEY", sandbox::ADMIN_KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if dry_run {
            command.arg("--dry-run");
        }
        let started = Instant::now();
        // The child talks to the sandbox on this runtime, so the polling waits off it.
        let (status, peak_kb) = tokio::task::spawn_blocking(move || watch_peak_memory(command))
            .await
            .map_err(|err| AppError::io("measuring memory")(std::io::Error::other(err)))??;
        crate::app::say!(
            "memory    {rows} rows ({file_mb:.0} MB), {label}: peak RSS {:.1} MB in {:.1}s (exit {})",
            peak_kb as f64 / 1024.0,
            started.elapsed().as_secs_f64(),
            status.code().unwrap_or(-1)
        );
    }
    sandbox.shutdown().await;
    Ok(())
}

/// Runs the command to its end, sampling its peak resident set every 50 ms.
fn watch_peak_memory(
    mut command: std::process::Command,
) -> Result<(std::process::ExitStatus, u64), AppError> {
    let mut child = command
        .spawn()
        .map_err(AppError::io("cannot start the measured process"))?;
    let mut peak_kb = 0u64;
    loop {
        if let Some(kb) = peak_rss_kb(child.id()) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child
            .try_wait()
            .map_err(AppError::io("waiting for the measured process"))?
        {
            return Ok((status, peak_kb));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// VmHWM (peak resident set) of a live process, from /proc.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_file_is_valid_and_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.csv");
        generate(&path, 45).unwrap();
        let source = InputSource::detect(&path, None).unwrap();
        let (validation, stamp) = (
            crate::row::ValidationOptions {
                timezone: jiff::tz::TimeZone::UTC,
                ignore_unknown: false,
            },
            crate::row::StampOptions {
                imported_at: "2024-01-01T00:00:00.000Z".into(),
                audit_fields: true,
                created_by: None,
                input_sha256: "0".repeat(64),
                users: None,
            },
        );
        let mut conversations = std::collections::HashSet::new();
        let mut count = 0;
        for record in input::records(&source).unwrap() {
            let record = record.unwrap();
            let fields = record.fields.unwrap();
            let row = crate::row::prepare(&fields, Format::Csv, record.line, &validation, &stamp)
                .unwrap();
            conversations.insert(row.conversation_id);
            count += 1;
        }
        assert_eq!(count, 45);
        assert_eq!(conversations.len(), 3);
    }
}
