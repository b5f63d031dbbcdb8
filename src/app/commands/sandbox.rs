//! `sandbox`: the local API, its fault switches mapped onto its configuration.

use std::io::Write;

use crate::cli::{
    FaultScopeArg, LookupRouteArg, ResetUnitArg, SandboxArgs, SandboxBulkArgs, SandboxOutcomeArgs,
};
use crate::exit_codes::ExitCode;
use crate::sandbox::{self, LookupSpelling, SandboxConfig};

use crate::app::{runtime, say, AppError};

pub fn sandbox(args: &SandboxArgs) -> Result<ExitCode, AppError> {
    let config = sandbox_config(args)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let running = sandbox::start(config).await?;
        // Scripts and tests read this first line to learn the port.
        say!(
            "kustomer-import sandbox listening on {}",
            running.base_url()
        );
        say!(
            "admin key: {}   non-admin key: {}   (Ctrl-C to stop)",
            sandbox::ADMIN_KEY,
            sandbox::AGENT_KEY
        );
        let _ = std::io::stdout().flush();
        let _ = tokio::signal::ctrl_c().await;
        running.shutdown().await;
        Ok(ExitCode::Success)
    })
}

fn sandbox_config(args: &SandboxArgs) -> Result<SandboxConfig, AppError> {
    let mut config = SandboxConfig::new(args.listen);
    config.org_limit = args.org_limit;
    config.window = std::time::Duration::from_secs(args.window_secs.max(1));
    config.retry_after = !args.no_retry_after;
    config.reset_unit = match (args.reset_unit, args.reset_as_epoch) {
        (Some(ResetUnitArg::Seconds), _) | (None, false) => sandbox::ResetUnit::Seconds,
        (Some(ResetUnitArg::Epoch), _) | (None, true) => sandbox::ResetUnit::EpochSeconds,
        (Some(ResetUnitArg::EpochMs), _) => sandbox::ResetUnit::EpochMillis,
    };
    config.retry_after_value = args.retry_after_value.clone();
    config.rate_headers = !args.no_rate_headers;
    config.error_429 = args.error_429;
    config.live_client = args
        .live_client
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|reason| {
            sandbox::SandboxError::InvalidConfig(format!("--live-client {reason}"))
        })?;
    config.seed = args.seed;
    config.hide_roles = args.hide_roles;
    config.error_body_text = args
        .error_body_text
        .as_deref()
        .map(crate::text::unescape_code_points);
    config.faults.latency = std::time::Duration::from_millis(args.latency_ms);
    config.faults.jitter = std::time::Duration::from_millis(args.jitter_ms);
    config.faults.error_500 = args.error_500;
    config.faults.error_503 = args.error_503;
    config.faults.error_503_retry_after = args.retry_after_on_503;
    config.faults.drop_before_store = args.drop_before_store;
    config.faults.store_then_drop = args.store_then_drop;
    config.faults.revoke_admin_after = args.revoke_admin_after;
    apply_outcome_switches(&args.outcomes, &mut config);
    apply_bulk_switches(&args.bulk, &mut config);
    Ok(config)
}

/// The issue 9 switches: bulk jobs.
fn apply_bulk_switches(args: &SandboxBulkArgs, config: &mut SandboxConfig) {
    config.bulk = sandbox::BulkConfig {
        delay: std::time::Duration::from_millis(args.bulk_delay_ms),
        jitter: std::time::Duration::from_millis(args.bulk_jitter_ms),
        batch_items: args.bulk_batch_items,
        in_order: args.bulk_in_order,
        out_of_order: args.bulk_out_of_order,
        item_error: args.bulk_item_error,
        item_error_statuses: args.bulk_item_error_status.clone(),
        item_stored_error: args.bulk_item_stored_error,
        slow_jobs: args.bulk_slow_jobs,
        slow_factor: args.bulk_slow_factor,
        never_complete: args.bulk_never_complete,
        unknown_ref: args.bulk_unknown_ref,
        duplicate_ref: args.bulk_duplicate_ref,
        read_429: args.bulk_read_429,
        read_drop: args.bulk_read_drop,
        drop_after_create: args.bulk_drop_after_create,
        bare_batches: args.bulk_bare_batches,
        reject_invalid: args.bulk_reject_invalid,
        answer_200: args.bulk_answer_200,
    };
}

/// The issue 7 switches: unknown create outcomes and misleading lookups.
fn apply_outcome_switches(args: &SandboxOutcomeArgs, config: &mut SandboxConfig) {
    config.lookup = match args.lookup_route {
        LookupRouteArg::Both => LookupSpelling::Both,
        LookupRouteArg::Camel => LookupSpelling::CamelOnly,
        LookupRouteArg::Lower => LookupSpelling::LowerOnly,
        LookupRouteArg::None => LookupSpelling::NoRoute,
    };
    config.not_found_as_empty = args.not_found_as_empty;
    config.lookup_list = args.lookup_list;
    config.lookup_other_first = args.lookup_other_first;
    config.fault_scope = sandbox::FaultScope {
        messages: args.fault_scope.contains(&FaultScopeArg::Messages),
        customers: args.fault_scope.contains(&FaultScopeArg::Customers),
        conversations: args.fault_scope.contains(&FaultScopeArg::Conversations),
    };
    config.redirect_to = args.redirect_to.clone();
    let faults = &mut config.faults;
    faults.store_then_error = args.store_then_error;
    faults.store_then_error_statuses = args.store_then_error_status.clone();
    faults.slow_store = args.slow_store;
    faults.slow_store_delay = std::time::Duration::from_millis(args.slow_store_ms);
    faults.accepted_202 = args.accepted_202;
    faults.created_without_id = args.created_without_id;
    faults.oversize_body = args.oversize_body;
    faults.lookup_429 = args.lookup_429;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn sandbox_args(flags: &[&str]) -> Result<SandboxArgs, clap::Error> {
        let argv = ["kustomer-import", "sandbox"].iter().chain(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Sandbox(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn issue_7_switches_map_onto_the_sandbox_config() {
        let args = sandbox_args(&[
            "--store-then-error",
            "0.1",
            "--store-then-error-status",
            "408,520,599",
            "--lookup-route",
            "none",
            "--not-found-as-empty",
            "--lookup-list",
            "--slow-store",
            "0.2",
            "--slow-store-ms",
            "1500",
            "--accepted-202",
            "0.05",
            "--created-without-id",
            "0.04",
            "--oversize-body",
            "0.03",
            "--redirect-to",
            "/_sandbox/redirected",
            "--lookup-429",
            "0.5",
        ])
        .expect("flags parse");
        let config = sandbox_config(&args).expect("valid switches");
        assert_eq!(config.lookup, LookupSpelling::NoRoute);
        assert!(config.not_found_as_empty && config.lookup_list);
        assert_eq!(config.redirect_to.as_deref(), Some("/_sandbox/redirected"));
        let faults = &config.faults;
        assert_eq!(faults.store_then_error, 0.1);
        assert_eq!(faults.store_then_error_statuses, [408, 520, 599]);
        assert_eq!(faults.slow_store, 0.2);
        assert_eq!(faults.slow_store_delay, Duration::from_millis(1500));
        assert_eq!(faults.accepted_202, 0.05);
        assert_eq!(faults.created_without_id, 0.04);
        assert_eq!(faults.oversize_body, 0.03);
        assert_eq!(faults.lookup_429, 0.5);
        assert!(faults.check().is_ok());

        for (route, spelling) in [
            ("both", LookupSpelling::Both),
            ("camel", LookupSpelling::CamelOnly),
            ("lower", LookupSpelling::LowerOnly),
        ] {
            let args = sandbox_args(&["--lookup-route", route]).expect("flags parse");
            assert_eq!(
                sandbox_config(&args).expect("valid switches").lookup,
                spelling
            );
        }
    }

    #[test]
    fn bulk_switches_map_onto_the_sandbox_config() {
        let defaults = sandbox_config(&sandbox_args(&[]).expect("no flags parse"))
            .expect("the defaults are valid");
        assert_eq!(defaults.bulk, sandbox::BulkConfig::default());
        let args = sandbox_args(&[
            "--bulk-delay-ms",
            "50",
            "--bulk-jitter-ms",
            "7",
            "--bulk-in-order",
            "--bulk-out-of-order",
            "0.3",
            "--bulk-item-error",
            "0.2",
            "--bulk-item-error-status",
            "429,503",
            "--bulk-drop-after-create",
            "0.1",
            "--bulk-bare-batches",
            "--bulk-reject-invalid",
            "--bulk-answer-200",
            "--bulk-batch-items",
            "10",
            "--bulk-item-stored-error",
            "0.05",
            "--bulk-slow-jobs",
            "0.25",
            "--bulk-slow-factor",
            "4",
            "--bulk-never-complete",
            "0.01",
            "--bulk-unknown-ref",
            "0.02",
            "--bulk-duplicate-ref",
            "0.03",
            "--bulk-read-429",
            "0.4",
            "--bulk-read-drop",
            "0.6",
        ])
        .expect("flags parse");
        let bulk = sandbox_config(&args).expect("the switches are valid").bulk;
        assert_eq!(
            bulk,
            sandbox::BulkConfig {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(7),
                in_order: true,
                out_of_order: 0.3,
                item_error: 0.2,
                item_error_statuses: vec![429, 503],
                drop_after_create: 0.1,
                bare_batches: true,
                reject_invalid: true,
                answer_200: true,
                batch_items: 10,
                item_stored_error: 0.05,
                slow_jobs: 0.25,
                slow_factor: 4,
                never_complete: 0.01,
                unknown_ref: 0.02,
                duplicate_ref: 0.03,
                read_429: 0.4,
                read_drop: 0.6,
            }
        );
        assert!(sandbox_args(&["--bulk-item-error-status", "4xx"]).is_err());
    }

    #[test]
    fn issue_16_switches_map_onto_the_sandbox_config() {
        let config =
            sandbox_config(&sandbox_args(&[]).expect("no flags parse")).expect("valid switches");
        assert_eq!(config.fault_scope, sandbox::FaultScope::default());
        assert!(!config.lookup_other_first);
        let args = sandbox_args(&["--fault-scope", "customers", "--lookup-other-first"])
            .expect("flags parse");
        let config = sandbox_config(&args).expect("valid switches");
        assert_eq!(
            config.fault_scope,
            sandbox::FaultScope {
                messages: false,
                customers: true,
                conversations: false,
            }
        );
        assert!(config.lookup_other_first);
        assert!(sandbox_args(&["--fault-scope", "tickets"]).is_err());
    }

    #[test]
    fn issue_7_switches_default_to_off_and_bad_values_are_refused() {
        let config =
            sandbox_config(&sandbox_args(&[]).expect("no flags parse")).expect("valid switches");
        assert_eq!(config.lookup, LookupSpelling::Both);
        assert!(!config.not_found_as_empty && !config.lookup_list);
        assert!(config.redirect_to.is_none());
        assert_eq!(config.faults.store_then_error_statuses, [500, 502, 504]);
        assert_eq!(config.faults.store_then_error, 0.0);

        assert!(sandbox_args(&["--lookup-route", "upper"]).is_err());
        assert!(sandbox_args(&["--store-then-error-status", "5xx"]).is_err());
        for flags in [
            &["--store-then-error", "1.5"][..],
            &["--store-then-error-status", "404"],
            &["--lookup-429=-0.1"],
            &["--slow-store", "0.6", "--accepted-202", "0.6"],
            &["--slow-store-ms", "600001"],
        ] {
            let config =
                sandbox_config(&sandbox_args(flags).expect("flags parse")).expect("valid switches");
            assert!(config.faults.check().is_err(), "{flags:?}");
        }
    }
}
