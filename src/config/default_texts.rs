use clap::Args;

use super::*;

fn help_of(command: &clap::Command, flag: &str) -> String {
    let arg = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(flag))
        .unwrap_or_else(|| panic!("no --{flag}"));
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    help.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn send_flag_help_names_the_defaults_in_force() {
    let command = crate::cli::SendArgs::augment_args(clap::Command::new("run"));
    let expected = [
        ("concurrency", DEFAULT_CONCURRENCY.to_string()),
        ("max-concurrency", DEFAULT_MAX_CONCURRENCY.to_string()),
        (
            "budget-share",
            crate::throttle::DEFAULT_BUDGET_SHARE.to_string(),
        ),
        ("max-attempts", DEFAULT_MAX_ATTEMPTS.to_string()),
        ("max-retry-wait", DEFAULT_MAX_RETRY_WAIT_SECS.to_string()),
        ("max-errors", DEFAULT_MAX_ERRORS.to_string()),
        ("reserve", DEFAULT_RESERVE.to_string()),
        ("max-pause", DEFAULT_MAX_PAUSE_SECS.to_string()),
        ("settle-delay", DEFAULT_SETTLE_DELAY.as_secs().to_string()),
        (
            "request-timeout",
            DEFAULT_REQUEST_TIMEOUT.as_secs().to_string(),
        ),
        ("batch-size", crate::plan::MAX_BATCH_SIZE.to_string()),
        ("job-seconds", crate::plan::DEFAULT_JOB_SECONDS.to_string()),
    ];
    for (flag, value) in expected {
        let help = help_of(&command, flag);
        assert!(
            help.contains(&format!("[default: {value}]")),
            "--{flag}: help {help:?} does not say [default: {value}]"
        );
    }
}

#[test]
fn sandbox_status_lists_default_to_the_sandbox_constants() {
    let command = crate::cli::SandboxArgs::augment_args(clap::Command::new("sandbox"));
    let default_of = |flag: &str| -> Vec<u16> {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag))
            .unwrap_or_else(|| panic!("no --{flag}"));
        arg.get_default_values()
            .iter()
            .flat_map(|value| {
                value
                    .to_string_lossy()
                    .split(',')
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|status| status.parse().unwrap_or_else(|_| panic!("{status:?}")))
            .collect()
    };
    assert_eq!(
        default_of("bulk-item-error-status"),
        crate::sandbox::BULK_ITEM_ERROR_STATUSES
    );
    assert_eq!(
        default_of("store-then-error-status"),
        crate::sandbox::DEFAULT_STORE_THEN_ERROR_STATUSES
    );
}
