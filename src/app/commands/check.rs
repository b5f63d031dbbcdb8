//! `check`: the preflight alone, for a person.

use crate::checkpoint::Checkpoint;
use crate::cli::CheckArgs;
use crate::client::{ApiClient, LookupAnswer};
use crate::config::{self, ApiConfig};
use crate::exit_codes::ExitCode;
use crate::send;
use crate::text::escape_control;
use crate::throttle;

use crate::app::{runtime, say, AppError};

/// The preflight on its own, printed for a person: key, region, roles, budget, lookup route.
pub fn check(args: &CheckArgs) -> Result<ExitCode, AppError> {
    if !(args.budget_share > 0.0 && args.budget_share <= 1.0) {
        return Err(config::ConfigError::BudgetShare.into());
    }
    let api = ApiConfig {
        base_url: config::resolve_base_url(args.api.base_url.as_deref())?,
        key: config::read_key(&args.api)?,
    };
    let client = ApiClient::new(api.client_config(config::DEFAULT_REQUEST_TIMEOUT), None)?;
    // A message an earlier run created, to prove the lookup route on.
    let known = match &args.db {
        Some(db) => Checkpoint::open_read_only(db)?.known_created_message()?,
        None => None,
    };
    let runtime = runtime()?;
    runtime.block_on(async {
        say!("API base URL   {}", api.base_url);
        let token = match client.current_token().await {
            Ok(token) => token,
            Err(err) => {
                say!("key            NOT USABLE: {}", escape_control(&err.to_string()));
                return Ok(ExitCode::ApiFatal);
            }
        };
        say!("key            accepted (GET /v1/auth/tokens/current answered)");
        let mut problems = Vec::new();
        match &token.roles {
            None => {
                say!("roles          not readable from the token record; the import checks each created message's audit fields instead");
            }
            Some(roles) => {
                say!("roles          {}", escape_control(&roles.join(", ")));
                let has = |wanted: &[&str]| roles.iter().any(|r| wanted.contains(&r.as_str()));
                if token.is_admin() == Some(true) {
                    say!("audit fields   kept as sent (org.admin)");
                } else {
                    say!("audit fields   would be overwritten by Kustomer: no org.admin");
                    problems.push("use an org.admin key to keep original authors and times, or import with --no-audit-fields");
                }
                if !has(&["org.admin", "org.permission.message.create", "org.user.message.write"]) {
                    problems.push("the key cannot create messages (org.permission.message.create)");
                }
                if !has(&["org.admin", "org.permission.message.read", "org.user.message.read"]) {
                    problems.push("the key cannot read messages (org.permission.message.read): unknown outcomes could not be checked");
                }
                if has(&send::CONVERSATION_READ_ROLES) {
                    say!("collisions     an externalId also used in another conversation is settled by reading the row's own conversation");
                } else {
                    say!("collisions     a row whose externalId the lookup finds only in another conversation fails and holds its conversation; {} would settle it", send::CONVERSATION_READ_ROLES[0]);
                }
            }
        }
        let (rpm, source) = throttle::choose_budget(None, args.budget_share, token.rate.limit);
        say!("{}", source.describe(rpm).replacen("rate budget:", "rate budget    ", 1));
        if let Some(remaining) = token.rate.remaining {
            say!("org window     {remaining} requests left in the current window");
        }
        let probe = format!("kustomer-import-check-{}", jiff::Timestamp::now().as_millisecond());
        match client.find_by_external_id(&probe).await {
            Ok(LookupAnswer::Empty) => say!("lookup         GET /v1/messages/externalId=… answers 200 with no data for an unknown id: its \"not found\" can be believed"),
            Ok(LookupAnswer::Missing) => say!("lookup         GET /v1/messages/externalId=… answers 404 for an unknown id; a 404 looks the same as a missing route"),
            Ok(LookupAnswer::Found(_)) => {
                say!("lookup         answered a message for a made-up externalId: the route ignores the id");
                problems.push("lookups by externalId answer messages that do not match: unknown outcomes could not be checked");
            }
            Err(err) => {
                say!("lookup         FAILED: {}", escape_control(&err.to_string()));
                problems.push("lookups by externalId fail: unknown outcomes could not be checked");
            }
        }
        match known {
            None => say!("lookup route   unproven: no message is known to exist yet (pass --db with a job's checkpoint to prove it on one of its messages); a run proves it on the first message it creates, and stops (exit 3) if it cannot"),
            Some(known) => match client.find_by_external_id(&known.external_id).await {
                Ok(LookupAnswer::Found(found)) if found.iter().any(|m| m.id == known.message_id) => {
                    say!(
                        "lookup route   proven: found message {} (line {}) by its externalId{}",
                        escape_control(&known.message_id),
                        known.line,
                        client.lookup_spelling().map(|s| format!(" (spelling {s})")).unwrap_or_default()
                    );
                }
                Ok(_) => {
                    say!("lookup route   BROKEN: message {} (line {}) exists but was not found by its externalId", escape_control(&known.message_id), known.line);
                    problems.push("the lookup route does not find messages that exist: a run would stop (exit 3) at its first unknown outcome");
                }
                Err(err) => say!("lookup route   unproven: the lookup failed ({})", escape_control(&err.to_string())),
            },
        }
        if problems.is_empty() {
            say!("\nready to import");
            Ok(ExitCode::Success)
        } else {
            say!("\nfix before importing:");
            for problem in &problems {
                say!("  - {problem}");
            }
            Ok(ExitCode::ApiFatal)
        }
    })
}
