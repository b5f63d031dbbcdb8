//! Raw command-line flags, exactly as typed. Nothing here is trusted: `config` turns these into a
//! validated configuration before anything runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The checkpoint every command uses unless told otherwise (`--db`).
pub const DEFAULT_CHECKPOINT: &str = "kustomer-import.sqlite";
/// The time zone of timestamps that carry none, unless told otherwise (`--timezone`).
pub const DEFAULT_TIMEZONE: &str = "UTC";

#[derive(Debug, Parser)]
#[command(
    name = "kustomer-import",
    version,
    about = "Import historical support messages into Kustomer: ordered, rate-aware, resumable.",
    after_help = "The API key comes from KUSTOMER_API_KEY or --api-key-file. \
                  Exit codes: 0 all imported, 1 some rows invalid/duplicate/failed, 2 usage or input \
                  error (nothing sent), 3 fatal API condition (resumable), 4 error budget spent \
                  (resumable), 5 checkpoint unwritable (resumable), 130 interrupted (resumable)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stage and validate INPUT into a new checkpoint, then send it.
    Run(RunArgs),
    /// Continue the job in the checkpoint (the input file is no longer needed once staged).
    Resume(ResumeArgs),
    /// Counts by state and the job's settings; safe while a run is going on.
    Status(StatusArgs),
    /// What happened to every row, as text, JSON, CSV or an HTML page; or the rejected rows to fix.
    Report(ReportArgs),
    /// Parse and validate INPUT only: no network, no checkpoint.
    Validate(ValidateArgs),
    /// Check the key, region, roles and rate budget before a migration, and say what to fix.
    Check(CheckArgs),
    /// Requests and time each mode (single, bulk) would take, before a migration: no network.
    Plan(PlanArgs),
    /// Run the local Kustomer-compatible API (for trials and tests).
    Sandbox(SandboxArgs),
    /// Import the built-in sample into an in-process sandbox and print the report.
    Demo(DemoArgs),
    /// Measure throughput, staging speed and memory against the local sandbox.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Csv,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// API base URL [default: $KUSTOMER_BASE_URL, else https://api.kustomerapp.com]
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Read the API key from this file instead of $KUSTOMER_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Input file (.csv, .ndjson or .jsonl, optionally .gz), or - for stdin (needs --format).
    #[arg(value_name = "INPUT")]
    pub input: String,
    /// Checkpoint file: a new one for this job (SQLite; keeps every row's fate).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CHECKPOINT)]
    pub db: PathBuf,
    /// Input format, when the file name does not say.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub send: SendArgs,
    /// importedAt stamped on every message [default: the job's creation time].
    #[arg(long, value_name = "RFC3339")]
    pub imported_at: Option<String>,
    /// createdBy for rows that name none (24-hex user id).
    #[arg(long, value_name = "USER_ID")]
    pub created_by: Option<String>,
    /// Agents' user ids for `createdByEmail`: a CSV of `email,id` (Kustomer's user list).
    #[arg(long, value_name = "FILE")]
    pub users_map: Option<PathBuf>,
    /// Do not send createdAt/createdBy/modifiedAt/modifiedBy (for keys without org.admin).
    #[arg(long)]
    pub no_audit_fields: bool,
    /// Time zone for timestamps without an offset (IANA name).
    #[arg(long, value_name = "TZ", default_value = DEFAULT_TIMEZONE)]
    pub timezone: String,
    /// Drop columns the API does not know instead of refusing the input.
    #[arg(long)]
    pub ignore_unknown: bool,
    /// Most physical lines one quoted CSV field may span before it is taken for a quote that
    /// never closed.
    #[arg(long, value_name = "N", default_value_t = crate::input::DEFAULT_MAX_FIELD_LINES)]
    pub max_field_lines: u64,
    /// Stage and validate, show what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How the send phase spends the API: shared by `run` and `resume`.
///
/// Every setting is optional so that a flag the user gave can be told from a default: the ones
/// given are stored with the job (as this struct, in the job's settings), `resume` uses them, a
/// flag given to `resume` overrides the stored value and is recorded. Defaults are applied in
/// `config::SendConfig`. A new send setting is one more `Option` field here (plus its use in
/// `config`; unset fields are left out of the stored object). `quiet` is about this process's
/// output, not the job, and is not stored.
#[derive(Debug, Clone, Default, PartialEq, Args, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SendArgs {
    /// Requests in flight at once: `auto` adapts to the API (AIMD) up to --max-concurrency, or a
    /// fixed number [default: auto].
    #[arg(long, value_name = "N|auto")]
    pub concurrency: Option<String>,
    /// Ceiling for `--concurrency auto` [default: 64].
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Most requests per minute this job may spend, every request counted [default: --budget-share
    /// of the org limit reported by the API].
    #[arg(long, value_name = "N")]
    pub max_rpm: Option<u32>,
    /// Share of the org limit to take when --max-rpm is not given [default: 0.5].
    #[arg(long, value_name = "0..1")]
    pub budget_share: Option<f64>,
    /// Attempts per row for transient failures, the first included [default: 8].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Most seconds one row may spend waiting between attempts [default: 300].
    #[arg(long, value_name = "SECS")]
    pub max_retry_wait: Option<u64>,
    /// Stop after this many failed rows in one run, or this share of the rows to send (`5%`)
    /// [default: 1000].
    #[arg(long, value_name = "N|P%")]
    pub max_errors: Option<String>,
    /// Room left in every rate-limit window for the org's other clients (live integrations):
    /// a share of x-ratelimit-limit (`10%`) or a number of requests per window. Under its
    /// ceiling the import adapts to what the others spend, keeping this much unspent
    /// [default: 10%].
    #[arg(long, value_name = "N|P%")]
    pub reserve: Option<String>,
    /// Longest common pause for the rate limit, in seconds, whatever Retry-After or
    /// x-ratelimit-reset ask for [default: 900].
    #[arg(long, value_name = "SECS")]
    pub max_pause: Option<u64>,
    /// After a create whose outcome is unknown (5xx, timeout, lost connection), how long its
    /// conversation waits before looking the row up, so a slow write has landed first. Other
    /// conversations go on meanwhile [default: 30].
    #[arg(long, value_name = "SECS")]
    pub settle_delay: Option<String>,
    /// After a create whose outcome is unknown, when to look the row up first: found then, it is
    /// settled at once; not found, it waits for the full --settle-delay before the lookup that
    /// decides a resend. 0 turns it off [default: 2].
    #[arg(long, value_name = "SECS")]
    pub early_lookup: Option<String>,
    /// How long to wait for an answer to one request [default: 60].
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<String>,
    /// `single`: one request per message. `bulk`: up to --batch-size messages of different
    /// conversations per `POST /v1/messages/bulk` (each conversation still in order) [default:
    /// single].
    #[arg(long, value_name = "single|bulk")]
    pub mode: Option<String>,
    /// In bulk mode, the most messages in one bulk job, 1 to 100 [default: 100].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// In bulk mode, how long one bulk job is taken to last, as `plan` assumes: a conversation
    /// whose bulk rounds would outlast what the budget takes sends its extra rows alone
    /// [default: 5].
    #[arg(long, value_name = "SECS")]
    pub job_seconds: Option<String>,
    /// In bulk mode, the most bulk jobs in flight at once, 1 to 1000; fewer go when the budget
    /// cannot pay for more during one job time [default: 50].
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<usize>,
    /// In bulk mode, how long a job's rows wait for its results before they end failed with
    /// outcome_unknown (their conversation held); `resume` reads the job again [default: 1800].
    #[arg(long, value_name = "SECS")]
    pub max_job_wait: Option<String>,
    /// Look every row up by externalId before creating it, and skip those already in their
    /// conversation (recorded succeeded, code found_existing). One extra request per row.
    /// `--skip-existing=false` turns it off for a resume.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub skip_existing: Option<bool>,
    /// Print only the final summary.
    #[arg(long, short)]
    #[serde(skip)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetryFailedArg {
    /// Failed rows whose failure was transient.
    Transient,
    /// Every failed row.
    All,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Checkpoint file of the job to continue.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CHECKPOINT)]
    pub db: PathBuf,
    #[command(flatten)]
    pub send: SendArgs,
    /// Base URL, when it must differ from the one recorded in the job.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Read the API key from this file instead of $KUSTOMER_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Put failed rows back in the queue first (transient failures, or all).
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "transient")]
    pub retry_failed: Option<RetryFailedArg>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Share of the org limit a job would take.
    #[arg(long, value_name = "0..1", default_value_t = crate::throttle::DEFAULT_BUDGET_SHARE)]
    pub budget_share: f64,
    /// A job's checkpoint: one of its created messages proves the lookup route.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// `plan INPUT` or `plan --db PATH`, with a budget: `--max-rpm N` or `--org-limit N`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("budget").required(true).args(["max_rpm", "org_limit"])))]
pub struct PlanArgs {
    /// Input file to plan (staged into a throwaway checkpoint, as `run --dry-run` does; nothing
    /// is sent), or - for stdin (needs --format).
    #[arg(
        value_name = "INPUT",
        required_unless_present = "db",
        conflicts_with = "db"
    )]
    pub input: Option<String>,
    /// Plan the rows still to send (pending or sending) of this job's checkpoint (read-only).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Input format, when the file name does not say.
    #[arg(long, value_enum, conflicts_with = "db")]
    pub format: Option<FormatArg>,
    /// Time zone for timestamps without an offset (IANA name).
    #[arg(long, value_name = "TZ", default_value = DEFAULT_TIMEZONE, conflicts_with = "db")]
    pub timezone: String,
    /// Drop columns the API does not know instead of refusing the input.
    #[arg(long, conflicts_with = "db")]
    pub ignore_unknown: bool,
    /// Most physical lines one quoted CSV field may span.
    #[arg(long, value_name = "N", default_value_t = crate::input::DEFAULT_MAX_FIELD_LINES, conflicts_with = "db")]
    pub max_field_lines: u64,
    /// The budget: requests per minute the job may spend, every request counted.
    #[arg(long, value_name = "N")]
    pub max_rpm: Option<u32>,
    /// The budget as a share of the org's limit (requests per minute; 300 to 2,000 by plan).
    #[arg(long, value_name = "N", conflicts_with = "max_rpm")]
    pub org_limit: Option<u32>,
    /// Share of --org-limit the job takes [default: 0.5].
    #[arg(
        long,
        value_name = "0..1",
        requires = "org_limit",
        conflicts_with = "max_rpm"
    )]
    pub budget_share: Option<f64>,
    /// Rows per bulk job at most (1 to 100).
    #[arg(long, value_name = "N", default_value_t = crate::plan::MAX_BATCH_SIZE)]
    pub batch_size: u64,
    /// Assumed processing time of one bulk job, in seconds (Kustomer's is unverified: measure
    /// it).
    #[arg(long, value_name = "SECS", default_value_t = crate::plan::DEFAULT_JOB_SECONDS.to_string())]
    pub job_seconds: String,
    /// The most bulk jobs in flight at once (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = crate::plan::DEFAULT_MAX_JOBS)]
    pub max_jobs: usize,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Checkpoint file of the job (opened read-only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CHECKPOINT)]
    pub db: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    Text,
    Json,
    Csv,
    Html,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Checkpoint file of the job (opened read-only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CHECKPOINT)]
    pub db: PathBuf,
    /// text and json: summary and errors; csv: one line per input row; html: one
    /// self-contained page with charts.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormatArg,
    /// Write to FILE instead of stdout (`-` is stdout). An existing FILE is not overwritten
    /// unless --force.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Instead of a report, write the invalid and permanently failed input rows to FILE, byte
    /// for byte in the input's format (CSV with its header), and their reasons to
    /// FILE.errors.csv. Needs the job's input file, unchanged. `-` writes the rows to stdout
    /// (and no reasons file).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["format", "output"])]
    pub rejects: Option<PathBuf>,
    /// Overwrite an existing --output or --rejects file. The job's checkpoint and input are
    /// never overwritten, even with --force.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Input file (.csv, .ndjson or .jsonl, optionally .gz).
    #[arg(value_name = "INPUT")]
    pub input: String,
    /// Input format, when the file name does not say.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Time zone for timestamps without an offset (IANA name).
    #[arg(long, value_name = "TZ", default_value = DEFAULT_TIMEZONE)]
    pub timezone: String,
    /// Accept columns the API does not know (run drops them) instead of refusing the input.
    #[arg(long)]
    pub ignore_unknown: bool,
    /// Agents' user ids for `createdByEmail`: a CSV of `email,id`.
    #[arg(long, value_name = "FILE")]
    pub users_map: Option<PathBuf>,
    /// The fallback user id for agents the users map lacks.
    #[arg(long, value_name = "USER_ID")]
    pub created_by: Option<String>,
    /// Most physical lines one quoted CSV field may span before it is taken for a quote that
    /// never closed.
    #[arg(long, value_name = "N", default_value_t = crate::input::DEFAULT_MAX_FIELD_LINES)]
    pub max_field_lines: u64,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Loopback address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Org-wide limit in requests per window (default: unlimited).
    #[arg(long, value_name = "N")]
    pub org_limit: Option<u32>,
    /// Length of the rate-limit window in seconds (Kustomer's is 60).
    #[arg(long, value_name = "SECS", default_value_t = crate::sandbox::DEFAULT_WINDOW.as_secs())]
    pub window_secs: u64,
    /// Answer 429 without a Retry-After header.
    #[arg(long)]
    pub no_retry_after: bool,
    /// Send x-ratelimit-reset as epoch seconds instead of seconds from now (= --reset-unit epoch).
    #[arg(long, conflicts_with = "reset_unit")]
    pub reset_as_epoch: bool,
    /// Unit of x-ratelimit-reset: seconds from now, epoch seconds, or epoch milliseconds.
    #[arg(long, value_enum, value_name = "UNIT")]
    pub reset_unit: Option<ResetUnitArg>,
    /// Send this exact Retry-After value with every 429 (e.g. `18446744073709551615`, an HTTP
    /// date, or garbage), instead of the seconds until the reset.
    #[arg(long, value_name = "VALUE", conflicts_with = "no_retry_after")]
    pub retry_after_value: Option<String>,
    /// Probability (0..1) of answering a create 429 although the org has room (with the rate
    /// headers and Retry-After as configured).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub error_429: f64,
    /// Send no x-ratelimit-* headers at all (an API that does not report its budget).
    #[arg(long)]
    pub no_rate_headers: bool,
    /// Run a live client inside the sandbox that spends the org's limit beside the import,
    /// counting its own 429s in /_sandbox/stats: `constant:RATE` or `bursts:HIGH/SECS,LOW/SECS`
    /// (requests per second; e.g. `bursts:24/15,12/15`). It starts with the sandbox and stops
    /// with it.
    #[arg(long, value_name = "PATTERN")]
    pub live_client: Option<String>,
    /// Added latency per request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform jitter around the added latency, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Probability (0..1) of answering a create with 500.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub error_500: f64,
    /// Probability (0..1) of answering a create with 503.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub error_503: f64,
    /// --error-503 answers carry Retry-After as a 429 would (seconds to the window's reset, or
    /// --retry-after-value): a service saying it is overloaded.
    #[arg(long)]
    pub retry_after_on_503: bool,
    /// Probability (0..1) of closing the connection before storing.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub drop_before_store: f64,
    /// Probability (0..1) of storing the message, then closing the connection without answering.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub store_then_drop: f64,
    /// Revoke the admin key after this many create requests (answers 401 from then on).
    #[arg(long, value_name = "N")]
    pub revoke_admin_after: Option<u64>,
    /// Answer the token record without roles.
    #[arg(long)]
    pub hide_roles: bool,
    /// Message of the error bodies the sandbox answers for unknown conversations (404), instead
    /// of "Conversation <id> not found": to see how API text reaches a terminal or a page.
    /// `\u{1b}` stands for any character (NUL included).
    #[arg(long, value_name = "TEXT")]
    pub error_body_text: Option<String>,
    /// Seed for the fault dice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub outcomes: SandboxOutcomeArgs,
    #[command(flatten)]
    pub bulk: SandboxBulkArgs,
}

/// Sandbox switches for bulk jobs (issue 9): `POST /v1/messages/bulk`, `GET /v1/bulk/{id}` and
/// `GET /v1/bulk/{id}/batches`.
#[derive(Debug, Args)]
pub struct SandboxBulkArgs {
    /// Processing time of a bulk job in milliseconds: queued for the first half, running (items
    /// stored one by one) for the second.
    #[arg(long, value_name = "MS", default_value_t = crate::sandbox::DEFAULT_BULK_DELAY.as_millis() as u64)]
    pub bulk_delay_ms: u64,
    /// Uniform jitter around --bulk-delay-ms, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = crate::sandbox::DEFAULT_BULK_JITTER.as_millis() as u64)]
    pub bulk_jitter_ms: u64,
    /// Items per batch, 1 to 100: a job is split into batches of this many items that complete
    /// one after another while it runs (a 100-item job has four batches by default).
    #[arg(long, value_name = "N", default_value_t = crate::sandbox::DEFAULT_BULK_BATCH_ITEMS)]
    pub bulk_batch_items: usize,
    /// Process a job's items in array order (default: a random order, since nothing promises
    /// otherwise).
    #[arg(long)]
    pub bulk_in_order: bool,
    /// Probability (0..1) that a job is held back until a job created after it has completed,
    /// so later jobs finish first.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_out_of_order: f64,
    /// Probability (0..1) that a bulk item fails with a status of --bulk-item-error-status
    /// (nothing stored for it, whatever the status: a 429 is refused before processing; for a
    /// 500 after storing see --bulk-item-stored-error).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_item_error: f64,
    /// Statuses an injected item error is drawn from (uniformly), each one of
    /// 400,404,409,422,429,500,503.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "400,404,409,422,429,500,503"
    )]
    pub bulk_item_error_status: Vec<u16>,
    /// Probability (0..1) that a bulk job is created (and runs) but its POST's connection is
    /// closed without an answer.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_drop_after_create: f64,
    /// Probability (0..1) that a bulk item is stored and then reported as error 500.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_item_stored_error: f64,
    /// Probability (0..1) that a bulk job takes --bulk-slow-factor times its processing time.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_slow_jobs: f64,
    /// How many times longer a slow bulk job takes, 1 to 100.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub bulk_slow_factor: u32,
    /// Probability (0..1) that one batch of a bulk job stays scheduled forever (its items never
    /// processed): the job stays running.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_never_complete: f64,
    /// Probability (0..1) that a bulk job's first complete batch also lists a result for a
    /// _clientRef that was never sent.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_unknown_ref: f64,
    /// Probability (0..1) that one item of a bulk job is listed twice under its _clientRef, the
    /// second time with a contradicting answer.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_duplicate_ref: f64,
    /// Probability (0..1) that a read of a bulk job or its batches is answered 429 (rate headers
    /// and Retry-After as for the org limit).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_read_429: f64,
    /// Probability (0..1) that a read of a bulk job or its batches closes the connection
    /// without an answer.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub bulk_read_drop: f64,
    /// Answer GET /v1/bulk/{id}/batches with a bare JSON array instead of {"data": [..]}.
    #[arg(long)]
    pub bulk_bare_batches: bool,
    /// Refuse a whole bulk POST with a 400 when any item is invalid (default: accept the job
    /// and fail those items with 400 in their results).
    #[arg(long)]
    pub bulk_reject_invalid: bool,
    /// Answer a created bulk job 200 (as the OpenAPI file says) instead of 201 (as the docs say).
    #[arg(long)]
    pub bulk_answer_200: bool,
}

/// Sandbox switches for the answers that make a create's outcome unknown or a lookup misleading
/// (issue 7). The probabilities after storing are exclusive outcomes of one draw, together with
/// --store-then-drop: their sum must not exceed 1.
#[derive(Debug, Args)]
pub struct SandboxOutcomeArgs {
    /// Probability (0..1) of storing a create, then answering one of --store-then-error-status.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub store_then_error: f64,
    /// Statuses a store-then-error answers, drawn uniformly (408 or 500..=599 each).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "500,502,504"
    )]
    pub store_then_error_status: Vec<u16>,
    /// Which spellings of GET /v1/messages/externalId=.. exist.
    #[arg(long, value_enum, default_value = "both")]
    pub lookup_route: LookupRouteArg,
    /// Answer a lookup miss 200 {"data": []} instead of 404.
    #[arg(long)]
    pub not_found_as_empty: bool,
    /// Answer lookups {"data": [..]} with every message under the externalId, newest first.
    #[arg(long)]
    pub lookup_list: bool,
    /// Probability (0..1) of holding a create --slow-store-ms, then storing it (even if the
    /// client has gone), then answering 201.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub slow_store: f64,
    /// How long --slow-store holds a create, in milliseconds (at most 600000).
    #[arg(long, value_name = "MS", default_value_t = crate::sandbox::DEFAULT_SLOW_STORE_DELAY.as_millis() as u64)]
    pub slow_store_ms: u64,
    /// Probability (0..1) of storing a create and answering 202.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub accepted_202: f64,
    /// Probability (0..1) of storing a create and answering 201 with no data.id.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub created_without_id: f64,
    /// Probability (0..1) of storing a create and answering 201 padded to about 2 MiB.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub oversize_body: f64,
    /// Answer every /v1 request 307 with this Location (absolute http(s) URL, or a path such as
    /// /_sandbox/redirected on this sandbox), processing nothing.
    #[arg(long, value_name = "URL")]
    pub redirect_to: Option<String>,
    /// Probability (0..1) of answering an externalId lookup 429.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub lookup_429: f64,
    /// Which creates the create fault switches (and --error-429) apply to.
    #[arg(
        long,
        value_enum,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "messages,customers,conversations"
    )]
    pub fault_scope: Vec<FaultScopeArg>,
    /// A message lookup by externalId answers another integration's (seeded) message first.
    #[arg(long)]
    pub lookup_other_first: bool,
}

/// A kind of create the fault switches may apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultScopeArg {
    Messages,
    Customers,
    Conversations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LookupRouteArg {
    /// externalId= and externalid=.
    Both,
    /// Only externalId=.
    Camel,
    /// Only externalid= (as the OpenAPI file spells it).
    Lower,
    /// Neither: every spelling answers 404.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResetUnitArg {
    Seconds,
    Epoch,
    EpochMs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's checkpoint here instead of a temporary directory.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Rows in the generated input for the throughput runs.
    #[arg(long, default_value_t = 20_000)]
    pub rows: u64,
    /// Rows in the generated input for the staging and memory runs.
    #[arg(long, default_value_t = 200_000)]
    pub staging_rows: u64,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub concurrency: Vec<usize>,
    /// Keep generated files and checkpoints here (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Seconds each rate-budget scenario runs against a sandbox with a 60 s org window (0 skips).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub budget_secs: u64,
    /// The sandbox's org limit for the rate-budget scenarios, per 60 s.
    #[arg(long, value_name = "N", default_value_t = 1200)]
    pub org_limit: u32,
    /// Skip the peak-memory runs.
    #[arg(long)]
    pub no_memory: bool,
    /// Rows of the exactly-once scenario: the same job with and without 5% stored-then-5xx and
    /// 5% dropped connections (0 skips).
    #[arg(long, value_name = "N", default_value_t = 3_000)]
    pub fault_rows: u64,
    /// The budget both runs of the exactly-once scenario are paced at, requests per minute.
    #[arg(long, value_name = "N", default_value_t = 6_000)]
    pub fault_rpm: u32,
    /// Run only the concurrency-under-faults scenario (issue 15): --conc-faults-rows rows at
    /// 1,200 requests/min with 150 ms of latency, fault-free and with 5% stored-then-5xx and 3%
    /// dropped connections, the faulty run once with the early lookup and once without.
    #[arg(long)]
    pub conc_faults: bool,
    /// Rows of the concurrency-under-faults scenario.
    #[arg(long, value_name = "N", default_value_t = 2_000)]
    pub conc_faults_rows: u64,
    /// Seconds of the live-integration scenario (a live client bursting beside the import,
    /// adaptive share against the plain ceiling; 0 skips). Windows are 15 s.
    #[arg(long, value_name = "SECS", default_value_t = 45)]
    pub share_secs: u64,
    /// Rows of each file of the bulk-mode scenario: a heavy tail and a typical shape, each sent
    /// in bulk mode and in single mode (0 skips).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub bulk_rows: u64,
    /// The budget of the bulk-mode scenario, requests per minute.
    #[arg(long, value_name = "N", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    pub bulk_rpm: u32,
    /// `--job-seconds` of the bulk-mode scenario's runs and plans (default: the sandbox's
    /// longest job time, delay plus jitter).
    #[arg(long, value_name = "SECS")]
    pub bulk_job_seconds: Option<f64>,
    /// The sandbox's bulk job time in the bulk-mode scenario, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2_500)]
    pub bulk_delay_ms: u64,
    /// The jitter (+/-) of the sandbox's bulk job time in the bulk-mode scenario, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub bulk_jitter_ms: u64,
    /// Which runs of the bulk-mode scenario to make, comma-separated (default: all of them).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "RUNS",
          default_values_t = [BulkRun::HeavyTail, BulkRun::Typical, BulkRun::Faulty, BulkRun::Single])]
    pub bulk_runs: Vec<BulkRun>,
}

/// One run of the bulk-mode scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BulkRun {
    /// The heavy-tailed file in bulk mode.
    HeavyTail,
    /// The typical file in bulk mode.
    Typical,
    /// The typical file in bulk mode with faults (needs `typical` for its comparison).
    Faulty,
    /// Both files in single mode, the reference.
    Single,
}
