//! Validated configuration: raw flags and environment become typed settings here, before
//! anything is read, staged or sent. Every check that can fail on user input fails here, with
//! exit code 2 and nothing sent.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{ApiArgs, FormatArg, PlanArgs, RetryFailedArg, RunArgs, SendArgs};

use crate::client::{ApiKey, ClientConfig};
use crate::input::Format;
use crate::progress::Display;
use crate::retry::RetryPolicy;

pub use crate::send::{
    ErrorBudget, SendMode, DEFAULT_EARLY_LOOKUP, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SETTLE_DELAY,
};

pub const DEFAULT_BASE_URL: &str = "https://api.kustomerapp.com";
pub const API_KEY_ENV: &str = "KUSTOMER_API_KEY";
pub const BASE_URL_ENV: &str = "KUSTOMER_BASE_URL";
const MAX_CONCURRENCY: usize = 1024;
/// How long the client waits for a connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no API key: set {API_KEY_ENV} or pass --api-key-file PATH")]
    MissingKey,
    #[error("cannot read the API key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API key file {0} is empty")]
    EmptyKeyFile(PathBuf),
    #[error("base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("--imported-at {value:?} is not an RFC 3339 date-time with offset (e.g. 2024-05-01T12:00:00Z)")]
    ImportedAt { value: String },
    #[error("--created-by {0:?} is not a user id (24 lowercase hex characters)")]
    CreatedBy(String),
    #[error("--timezone {name:?} is not a known IANA time zone (e.g. UTC, Europe/Paris, America/New_York)")]
    TimeZone { name: String },
    #[error("--concurrency must be `auto` or a number from 1 to {MAX_CONCURRENCY}, and --max-concurrency from 1 to {MAX_CONCURRENCY}")]
    Concurrency,
    #[error("--max-errors {0:?} must be a count (e.g. 500) or a percentage of the rows to send (e.g. 2%)")]
    MaxErrors(String),
    #[error("--budget-share must be greater than 0 and at most 1")]
    BudgetShare,
    #[error("--max-rpm must be at least 1")]
    MaxRpm,
    #[error("--max-attempts must be at least 1")]
    MaxAttempts,
    #[error("--mode {0:?} must be single or bulk")]
    Mode(String),
    #[error("--reserve {0:?} must be a number of requests per window (e.g. 100) or a share of the limit below 100% (e.g. 10%)")]
    Reserve(String),
    #[error("--max-pause must be at least 1 second")]
    MaxPause,
    #[error("{flag} {value:?} must be a number of seconds from {min} to {max}")]
    Seconds {
        flag: &'static str,
        value: String,
        min: f64,
        max: f64,
    },
    #[error("reading from stdin (-) needs --format csv or --format ndjson")]
    StdinNeedsFormat,
    #[error("input {0} does not exist")]
    InputMissing(PathBuf),
    #[error("--created-by sets the createdBy audit field, which --no-audit-fields leaves out; pass one or the other")]
    CreatedByWithoutAuditFields,
    #[error(transparent)]
    UsersMap(crate::row::UsersMapError),
    #[error("--max-field-lines must be at least 1")]
    MaxFieldLines,
    #[error("--org-limit must be at least 1")]
    OrgLimit,
    #[error("--batch-size must be from 1 to {max}", max = crate::plan::MAX_BATCH_SIZE)]
    BatchSize,
    #[error("the job's stored settings cannot be read ({0}); pass the send settings to resume explicitly")]
    StoredSettings(String),
}

/// Where the API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub base_url: String,
    pub key: ApiKey,
}

impl ApiConfig {
    pub fn client_config(&self, request_timeout: Duration) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            key: self.key.clone(),
            request_timeout,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// A number of seconds from a flag (fractions allowed), within `min..=max`.
pub fn parse_seconds(
    flag: &'static str,
    raw: &str,
    min: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    let refuse = || ConfigError::Seconds {
        flag,
        value: raw.to_string(),
        min,
        max,
    };
    let secs: f64 = raw.trim().parse().map_err(|_| refuse())?;
    if !(secs.is_finite() && (min..=max).contains(&secs)) {
        return Err(refuse());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The input as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputArg {
    Stdin,
    File(PathBuf),
}

impl InputArg {
    pub fn parse(raw: &str) -> InputArg {
        if raw == "-" {
            InputArg::Stdin
        } else {
            InputArg::File(PathBuf::from(raw))
        }
    }

    pub fn display(&self) -> String {
        match self {
            InputArg::Stdin => "-".into(),
            InputArg::File(path) => path.display().to_string(),
        }
    }
}

/// How rows are read and stamped.
#[derive(Debug, Clone)]
pub struct StagingChoices {
    pub format: Option<Format>,
    pub timezone_name: String,
    pub timezone: jiff::tz::TimeZone,
    pub ignore_unknown: bool,
    /// RFC 3339 UTC; None means the job's creation time.
    pub imported_at: Option<String>,
    pub audit_fields: bool,
    pub created_by: Option<String>,
    /// Most physical lines one quoted CSV field may span.
    pub max_field_lines: u64,
    /// `--users-map`: agents' emails → user ids, for `createdByEmail`.
    pub users: Option<std::sync::Arc<crate::row::UsersMap>>,
}

impl StagingChoices {
    /// UTC, audit fields on, nothing ignored: the demo's and the benchmark's choices.
    pub fn utc_defaults(format: Option<Format>) -> StagingChoices {
        StagingChoices {
            format,
            timezone_name: "UTC".into(),
            timezone: jiff::tz::TimeZone::UTC,
            ignore_unknown: false,
            imported_at: None,
            audit_fields: true,
            created_by: None,
            max_field_lines: crate::input::DEFAULT_MAX_FIELD_LINES,
            users: None,
        }
    }
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub input: InputArg,
    pub db: PathBuf,
    /// None only for a dry run without a key.
    pub api: Option<ApiConfig>,
    pub base_url: String,
    pub staging: StagingChoices,
    pub send: SendConfig,
    pub dry_run: bool,
}

/// Requests in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConcurrencyChoice {
    /// AIMD up to this ceiling.
    Auto {
        ceiling: usize,
    },
    Fixed(usize),
}

impl ConcurrencyChoice {
    /// Conversations worked on at once: each holds at most one request in flight.
    pub fn workers(self) -> usize {
        match self {
            ConcurrencyChoice::Auto { ceiling } => ceiling,
            ConcurrencyChoice::Fixed(n) => n,
        }
    }

    pub fn describe(self) -> String {
        match self {
            ConcurrencyChoice::Auto { ceiling } => format!("auto (up to {ceiling})"),
            ConcurrencyChoice::Fixed(n) => n.to_string(),
        }
    }
}

/// `--max-errors`: a count of rows (`500`) or a share of the rows to send (`2%`).
pub fn parse_error_budget(raw: &str) -> Result<ErrorBudget, ConfigError> {
    let fail = || ConfigError::MaxErrors(raw.to_string());
    let raw = raw.trim();
    match raw.strip_suffix('%') {
        Some(number) => {
            let percent: f64 = number.trim().parse().map_err(|_| fail())?;
            if (0.0..=100.0).contains(&percent) {
                Ok(ErrorBudget::Percent(percent))
            } else {
                Err(fail())
            }
        }
        None => raw.parse().map(ErrorBudget::Rows).map_err(|_| fail()),
    }
}

/// How the send phase spends the API, validated.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub concurrency: ConcurrencyChoice,
    pub max_rpm: Option<u32>,
    pub budget_share: f64,
    pub retry: RetryPolicy,
    pub max_errors: ErrorBudget,
    pub display: Display,
    /// Room kept in every window for the org's other clients.
    pub reserve: crate::throttle::Reserve,
    /// Longest common pause for the rate limit.
    pub max_pause: Duration,
    /// After an unknown outcome, how long the conversation waits before looking the row up.
    pub settle_delay: Duration,
    /// After an unknown outcome, when the early lookup goes (zero: none).
    pub early_lookup: Duration,
    pub request_timeout: Duration,
    /// Look every row up before creating it (re-importing into an org that has some of it).
    pub skip_existing: bool,
    pub mode: SendMode,
}

/// `--mode`, `--batch-size` and `--job-seconds`.
fn parse_send_mode(
    mode: Option<&str>,
    batch_size: Option<usize>,
    job_seconds: Option<&str>,
) -> Result<SendMode, ConfigError> {
    let job_seconds = match job_seconds {
        Some(raw) => parse_seconds("--job-seconds", raw, 0.0, 3600.0)?.as_secs_f64(),
        None => crate::plan::DEFAULT_JOB_SECONDS,
    };
    let most = crate::plan::MAX_BATCH_SIZE as usize;
    let batch_size = batch_size.unwrap_or(most);
    if !(1..=most).contains(&batch_size) {
        return Err(ConfigError::BatchSize);
    }
    match mode.map(str::trim) {
        None | Some("single") => Ok(SendMode::Single),
        Some("bulk") => Ok(SendMode::Bulk {
            batch_size,
            job_seconds,
        }),
        Some(other) => Err(ConfigError::Mode(other.to_string())),
    }
}

/// The defaults of the send settings, applied to whatever the user did not choose.
const DEFAULT_CONCURRENCY: &str = "auto";
const DEFAULT_MAX_CONCURRENCY: usize = 64;
const DEFAULT_MAX_ATTEMPTS: u32 = crate::retry::DEFAULT_MAX_ATTEMPTS;
const DEFAULT_RESERVE: &str = "10%";
const DEFAULT_MAX_PAUSE_SECS: u64 = crate::throttle::DEFAULT_MAX_PAUSE.as_secs();
const DEFAULT_MAX_RETRY_WAIT_SECS: u64 = crate::retry::DEFAULT_MAX_TOTAL_WAIT.as_secs();
const DEFAULT_MAX_ERRORS: &str = "1000";

/// The `[default: ..]` of each send flag's help, and the sandbox's list defaults, are text: these
/// tests hold them to the constants above and to the ones they come from.
#[cfg(test)]
mod default_texts;

use crate::checkpoint::SEND_SETTINGS_KEY;

impl SendArgs {
    /// These settings with every one `given` sets replaced by its value. Works on the serialized
    /// form, so a new field needs no code here.
    pub fn overridden_by(&self, given: &SendArgs) -> Result<SendArgs, ConfigError> {
        let mut merged = settings_object(self)?;
        merged.extend(settings_object(given)?);
        let mut settings: SendArgs = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|err| ConfigError::StoredSettings(err.to_string()))?;
        settings.quiet = given.quiet;
        Ok(settings)
    }

    /// The send settings stored with a job; none for a job recorded before they were stored.
    pub fn from_job_settings(settings: &serde_json::Value) -> Result<SendArgs, ConfigError> {
        match settings.get(SEND_SETTINGS_KEY) {
            None => Ok(SendArgs::default()),
            Some(stored) => serde_json::from_value(stored.clone())
                .map_err(|err| ConfigError::StoredSettings(err.to_string())),
        }
    }

    /// The job's settings object with these as its send settings.
    pub fn into_job_settings(
        &self,
        mut settings: serde_json::Value,
    ) -> Result<serde_json::Value, ConfigError> {
        let send = serde_json::Value::Object(settings_object(self)?);
        match settings.as_object_mut() {
            Some(object) => {
                object.insert(SEND_SETTINGS_KEY.to_string(), send);
            }
            None => settings = serde_json::json!({ SEND_SETTINGS_KEY: send }),
        }
        Ok(settings)
    }

    /// `--max-rpm 300, --concurrency 8`: the settings given, as the flags that set them.
    pub fn describe(&self) -> String {
        settings_object(self)
            .map(|object| {
                object
                    .iter()
                    .map(|(key, value)| match value {
                        serde_json::Value::String(text) => format!("--{key} {text}"),
                        other => format!("--{key} {other}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

/// The settings that are set, as a JSON object keyed by flag name.
fn settings_object(
    settings: &SendArgs,
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    match serde_json::to_value(settings) {
        Ok(serde_json::Value::Object(object)) => Ok(object
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .collect()),
        Ok(other) => Err(ConfigError::StoredSettings(format!(
            "expected an object, found {other}"
        ))),
        Err(err) => Err(ConfigError::StoredSettings(err.to_string())),
    }
}

impl SendConfig {
    /// The defaults of `run`, for the demo and the benchmark.
    pub fn standard(display: Display) -> SendConfig {
        SendConfig {
            concurrency: ConcurrencyChoice::Auto {
                ceiling: DEFAULT_MAX_CONCURRENCY,
            },
            max_rpm: None,
            budget_share: crate::throttle::DEFAULT_BUDGET_SHARE,
            retry: RetryPolicy::default(),
            max_errors: ErrorBudget::Rows(1000),
            display,
            reserve: crate::throttle::Reserve::default(),
            max_pause: crate::throttle::DEFAULT_MAX_PAUSE,
            settle_delay: DEFAULT_SETTLE_DELAY,
            early_lookup: DEFAULT_EARLY_LOOKUP,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            skip_existing: false,
            mode: SendMode::Single,
        }
    }

    /// Validates the settings, applying the default of each one not given.
    pub fn from_args(args: &SendArgs) -> Result<SendConfig, ConfigError> {
        let ceiling = check_concurrency(args.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY))?;
        let concurrency = match args
            .concurrency
            .as_deref()
            .unwrap_or(DEFAULT_CONCURRENCY)
            .trim()
        {
            "auto" => ConcurrencyChoice::Auto { ceiling },
            number => ConcurrencyChoice::Fixed(check_concurrency(
                number.parse().map_err(|_| ConfigError::Concurrency)?,
            )?),
        };
        let budget_share = args
            .budget_share
            .unwrap_or(crate::throttle::DEFAULT_BUDGET_SHARE);
        if !(budget_share > 0.0 && budget_share <= 1.0) {
            return Err(ConfigError::BudgetShare);
        }
        if args.max_rpm == Some(0) {
            return Err(ConfigError::MaxRpm);
        }
        let max_attempts = args.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(ConfigError::MaxAttempts);
        }
        if args.max_pause == Some(0) {
            return Err(ConfigError::MaxPause);
        }
        Ok(SendConfig {
            concurrency,
            max_rpm: args.max_rpm,
            budget_share,
            retry: RetryPolicy {
                max_attempts,
                max_total_wait: Duration::from_secs(
                    args.max_retry_wait.unwrap_or(DEFAULT_MAX_RETRY_WAIT_SECS),
                ),
                ..RetryPolicy::default()
            },
            max_errors: parse_error_budget(
                args.max_errors.as_deref().unwrap_or(DEFAULT_MAX_ERRORS),
            )?,
            display: Display::detect(args.quiet),
            reserve: parse_reserve(args.reserve.as_deref().unwrap_or(DEFAULT_RESERVE))?,
            max_pause: Duration::from_secs(args.max_pause.unwrap_or(DEFAULT_MAX_PAUSE_SECS)),
            settle_delay: match &args.settle_delay {
                Some(raw) => parse_seconds("--settle-delay", raw, 0.0, 3600.0)?,
                None => DEFAULT_SETTLE_DELAY,
            },
            early_lookup: match &args.early_lookup {
                Some(raw) => parse_seconds("--early-lookup", raw, 0.0, 300.0)?,
                None => DEFAULT_EARLY_LOOKUP,
            },
            request_timeout: match &args.request_timeout {
                Some(raw) => parse_seconds("--request-timeout", raw, 0.1, 600.0)?,
                None => DEFAULT_REQUEST_TIMEOUT,
            },
            skip_existing: args.skip_existing.unwrap_or(false),
            mode: parse_send_mode(
                args.mode.as_deref(),
                args.batch_size,
                args.job_seconds.as_deref(),
            )?,
        })
    }
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> Result<RunConfig, ConfigError> {
        let input = InputArg::parse(&args.input);
        let format = args.format.map(Format::from);
        match &input {
            InputArg::Stdin if format.is_none() => return Err(ConfigError::StdinNeedsFormat),
            InputArg::File(path) if !path.exists() => {
                return Err(ConfigError::InputMissing(path.clone()))
            }
            _ => {}
        }
        let base_url = resolve_base_url(args.api.base_url.as_deref())?;
        let api = match read_key(&args.api) {
            Ok(key) => Some(ApiConfig {
                base_url: base_url.clone(),
                key,
            }),
            Err(ConfigError::MissingKey) if args.dry_run => None,
            Err(err) => return Err(err),
        };
        let (timezone_name, timezone) = parse_timezone(&args.timezone)?;
        let imported_at = args
            .imported_at
            .as_deref()
            .map(normalise_imported_at)
            .transpose()?;
        let created_by = match &args.created_by {
            Some(_) if args.no_audit_fields => {
                return Err(ConfigError::CreatedByWithoutAuditFields)
            }
            Some(id) if !is_object_id(id) => return Err(ConfigError::CreatedBy(id.clone())),
            other => other.clone(),
        };
        if args.max_field_lines == 0 {
            return Err(ConfigError::MaxFieldLines);
        }
        Ok(RunConfig {
            input,
            db: args.db.clone(),
            api,
            base_url,
            staging: StagingChoices {
                format,
                timezone_name,
                timezone,
                ignore_unknown: args.ignore_unknown,
                imported_at,
                audit_fields: !args.no_audit_fields,
                created_by,
                max_field_lines: args.max_field_lines,
                users: load_users_map(args.users_map.as_deref())?,
            },
            send: SendConfig::from_args(&args.send)?,
            dry_run: args.dry_run,
        })
    }
}

/// The createdBy of `plan`'s throwaway staging (never sent).
const PLAN_PLACEHOLDER_USER: &str = "000000000000000000000000";

/// Reads `--users-map` when given.
pub fn load_users_map(
    path: Option<&Path>,
) -> Result<Option<std::sync::Arc<crate::row::UsersMap>>, ConfigError> {
    path.map(|path| crate::row::UsersMap::load(path).map(std::sync::Arc::new))
        .transpose()
        .map_err(ConfigError::UsersMap)
}

/// What `plan` reads: an input to stage into a throwaway checkpoint, or a job's checkpoint.
#[derive(Debug, Clone)]
pub enum PlanSource {
    Input {
        input: InputArg,
        staging: StagingChoices,
    },
    Checkpoint(PathBuf),
}

/// Everything `plan` needs, validated.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub source: PlanSource,
    pub inputs: crate::plan::PlanInputs,
    /// The budget and where it comes from, for a person.
    pub budget: String,
    pub json: bool,
}

/// The longest bulk job `plan` may be told to assume, in seconds (a day).
const MAX_JOB_SECONDS: f64 = 86_400.0;

impl PlanConfig {
    pub fn from_args(args: &PlanArgs) -> Result<PlanConfig, ConfigError> {
        let source = match (&args.db, &args.input) {
            (Some(db), _) => PlanSource::Checkpoint(db.clone()),
            (None, raw) => {
                // clap requires INPUT when --db is absent; an empty one is a missing file.
                let input = InputArg::parse(raw.as_deref().unwrap_or_default());
                let format = args.format.map(Format::from);
                match &input {
                    InputArg::Stdin if format.is_none() => {
                        return Err(ConfigError::StdinNeedsFormat)
                    }
                    InputArg::File(path) if !path.exists() => {
                        return Err(ConfigError::InputMissing(path.clone()))
                    }
                    _ => {}
                }
                if args.max_field_lines == 0 {
                    return Err(ConfigError::MaxFieldLines);
                }
                let (timezone_name, timezone) = parse_timezone(&args.timezone)?;
                PlanSource::Input {
                    input,
                    staging: StagingChoices {
                        timezone_name,
                        timezone,
                        ignore_unknown: args.ignore_unknown,
                        max_field_lines: args.max_field_lines,
                        // Agents do not change the requests: rows naming them by
                        // createdByEmail count as valid without a users map. The throwaway
                        // checkpoint is never sent.
                        created_by: Some(PLAN_PLACEHOLDER_USER.to_string()),
                        ..StagingChoices::utc_defaults(format)
                    },
                }
            }
        };
        let share = args.budget_share.unwrap_or(0.5);
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::BudgetShare);
        }
        let (rpm, budget) = match (args.max_rpm, args.org_limit) {
            (Some(0), _) => return Err(ConfigError::MaxRpm),
            (Some(rpm), _) => (rpm, format!("{rpm} requests/minute (--max-rpm)")),
            (None, Some(0)) => return Err(ConfigError::OrgLimit),
            (None, Some(limit)) => {
                let rpm = ((f64::from(limit) * share).floor() as u32).max(1);
                let percent = share * 100.0;
                (
                    rpm,
                    format!("{rpm} requests/minute ({percent:.0}% of the org limit of {limit})"),
                )
            }
            // clap requires one of the two.
            (None, None) => return Err(ConfigError::MaxRpm),
        };
        if !(1..=crate::plan::MAX_BATCH_SIZE).contains(&args.batch_size) {
            return Err(ConfigError::BatchSize);
        }
        let job_seconds = parse_seconds("--job-seconds", &args.job_seconds, 0.0, MAX_JOB_SECONDS)?;
        Ok(PlanConfig {
            source,
            inputs: crate::plan::PlanInputs {
                rpm,
                batch: args.batch_size,
                job_seconds: job_seconds.as_secs_f64(),
            },
            budget,
            json: args.json,
        })
    }
}

impl From<FormatArg> for Format {
    fn from(arg: FormatArg) -> Format {
        match arg {
            FormatArg::Csv => Format::Csv,
            FormatArg::Ndjson => Format::Ndjson,
        }
    }
}

impl From<RetryFailedArg> for crate::checkpoint::RetryScope {
    fn from(arg: RetryFailedArg) -> Self {
        match arg {
            RetryFailedArg::Transient => crate::checkpoint::RetryScope::Transient,
            RetryFailedArg::All => crate::checkpoint::RetryScope::All,
        }
    }
}

/// `--reserve`: `10%` of the limit, or `100` requests per window.
pub fn parse_reserve(raw: &str) -> Result<crate::throttle::Reserve, ConfigError> {
    use crate::throttle::Reserve;
    let fail = || ConfigError::Reserve(raw.to_string());
    let raw = raw.trim();
    match raw.strip_suffix('%') {
        Some(number) => {
            let percent: f64 = number.trim().parse().map_err(|_| fail())?;
            if (0.0..100.0).contains(&percent) {
                Ok(Reserve::Percent(percent))
            } else {
                Err(fail())
            }
        }
        None => raw.parse().map(Reserve::Requests).map_err(|_| fail()),
    }
}

pub fn check_concurrency(value: usize) -> Result<usize, ConfigError> {
    if (1..=MAX_CONCURRENCY).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Concurrency)
    }
}

/// The key from `--api-key-file`, else `KUSTOMER_API_KEY`. The key's value never appears in an
/// error.
pub fn read_key(api: &ApiArgs) -> Result<ApiKey, ConfigError> {
    read_key_from(api.api_key_file.as_deref())
}

pub fn read_key_from(file: Option<&Path>) -> Result<ApiKey, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        let key = text.trim();
        if key.is_empty() {
            return Err(ConfigError::EmptyKeyFile(path.to_path_buf()));
        }
        return Ok(ApiKey::new(key.to_string()));
    }
    match std::env::var(API_KEY_ENV) {
        Ok(key) if !key.trim().is_empty() => Ok(ApiKey::new(key.trim().to_string())),
        _ => Err(ConfigError::MissingKey),
    }
}

/// `--base-url`, else `KUSTOMER_BASE_URL`, else the US endpoint; https only, except loopback
/// (the sandbox).
pub fn resolve_base_url(flag: Option<&str>) -> Result<String, ConfigError> {
    let raw = match flag {
        Some(url) => url.to_string(),
        None => std::env::var(BASE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
    };
    check_base_url(&raw)
}

pub fn check_base_url(raw: &str) -> Result<String, ConfigError> {
    let fail = |reason: &str| ConfigError::BaseUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(raw.trim()).map_err(|err| fail(&err.to_string()))?;
    let Some(host) = url.host_str() else {
        return Err(fail("it has no host"));
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(fail(
            "must be https (plain http is allowed only for loopback addresses such as the sandbox)",
        )),
        _ => return Err(fail("must be an https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "must not carry credentials; the key comes from KUSTOMER_API_KEY",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail("must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/');
    if path == "/v1" {
        return Err(fail("leave out /v1: the importer adds it"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

pub fn parse_timezone(name: &str) -> Result<(String, jiff::tz::TimeZone), ConfigError> {
    jiff::tz::TimeZone::get(name)
        .map(|tz| (name.to_string(), tz))
        .map_err(|_| ConfigError::TimeZone {
            name: name.to_string(),
        })
}

/// RFC 3339 with an explicit offset, normalised to UTC with milliseconds.
pub fn normalise_imported_at(value: &str) -> Result<String, ConfigError> {
    value
        .parse::<jiff::Timestamp>()
        .map(format_utc)
        .map_err(|_| ConfigError::ImportedAt {
            value: value.to_string(),
        })
}

/// `2021-03-04T10:00:00.000Z`: the one timestamp format the importer sends.
pub fn format_utc(timestamp: jiff::Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn is_object_id(value: &str) -> bool {
    value.len() == 24
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
