use super::*;

#[test]
fn base_url_rules() {
    assert_eq!(
        check_base_url("https://api.prod2.kustomerapp.com/").unwrap(),
        "https://api.prod2.kustomerapp.com"
    );
    assert_eq!(
        check_base_url("http://127.0.0.1:8787").unwrap(),
        "http://127.0.0.1:8787"
    );
    assert!(check_base_url("http://localhost:1").is_ok());
    assert!(check_base_url("http://[::1]:9").is_ok());
    assert!(check_base_url("http://api.kustomerapp.com").is_err());
    assert!(check_base_url("http://10.0.0.1").is_err());
    assert!(check_base_url("ftp://x").is_err());
    assert!(check_base_url("https://api.kustomerapp.com/v1").is_err());
    assert!(check_base_url("https://user:pw@api.kustomerapp.com").is_err());
    assert!(check_base_url("not a url").is_err());
}

#[test]
fn imported_at_is_normalised_to_utc() {
    assert_eq!(
        normalise_imported_at("2024-05-01T14:00:00+02:00").unwrap(),
        "2024-05-01T12:00:00.000Z"
    );
    assert!(normalise_imported_at("2024-05-01 12:00").is_err());
    assert!(normalise_imported_at("2024-05-01T12:00:00").is_err());
}

#[test]
fn object_ids() {
    assert!(is_object_id("5f2b6c1e9d3a4b0012345678"));
    assert!(!is_object_id("5F2B6C1E9D3A4B0012345678"));
    assert!(!is_object_id("5f2b6c1e9d3a4b001234567"));
}

#[test]
fn error_budget_forms() {
    assert_eq!(parse_error_budget("250").unwrap(), ErrorBudget::Rows(250));
    assert_eq!(
        parse_error_budget("2.5%").unwrap(),
        ErrorBudget::Percent(2.5)
    );
    assert_eq!(parse_error_budget("2%").unwrap().allowed(1_000), 20);
    assert_eq!(parse_error_budget("10").unwrap().allowed(3), 10);
    assert!(parse_error_budget("lots").is_err());
    assert!(parse_error_budget("150%").is_err());
    assert!(parse_error_budget("-3").is_err());
}

#[test]
fn send_settings_given_override_stored_and_defaults_fill_the_rest() {
    let stored = SendArgs {
        max_rpm: Some(12_000),
        concurrency: Some("8".into()),
        ..SendArgs::default()
    };
    let job_settings = stored
        .into_job_settings(serde_json::json!({"demo": true}))
        .unwrap();
    assert_eq!(job_settings["demo"], true);
    assert_eq!(job_settings["send"]["max-rpm"], 12_000);
    let read_back = SendArgs::from_job_settings(&job_settings).unwrap();
    assert_eq!(read_back, stored);
    assert_eq!(read_back.describe(), "--concurrency 8, --max-rpm 12000");

    let given = SendArgs {
        max_rpm: Some(600),
        quiet: true,
        ..SendArgs::default()
    };
    let merged = read_back.overridden_by(&given).unwrap();
    assert_eq!(merged.max_rpm, Some(600));
    assert_eq!(merged.concurrency.as_deref(), Some("8"));
    assert!(merged.quiet);
    let config = SendConfig::from_args(&merged).unwrap();
    assert_eq!(config.max_rpm, Some(600));
    assert_eq!(config.concurrency, ConcurrencyChoice::Fixed(8));
    assert_eq!(config.retry.max_attempts, DEFAULT_MAX_ATTEMPTS);

    // A job recorded before settings were stored follows the defaults.
    let old = SendArgs::from_job_settings(&serde_json::json!({"concurrency": "auto (up to 64)"}))
        .unwrap();
    assert_eq!(old, SendArgs::default());
    let defaults = SendConfig::from_args(&old).unwrap();
    assert_eq!(
        defaults.concurrency,
        ConcurrencyChoice::Auto { ceiling: 64 }
    );
    assert_eq!(defaults.max_errors, ErrorBudget::Rows(1000));
}

#[test]
fn reserve_forms() {
    use crate::throttle::Reserve;
    assert_eq!(parse_reserve("10%").unwrap(), Reserve::Percent(10.0));
    assert_eq!(parse_reserve(" 0% ").unwrap(), Reserve::Percent(0.0));
    assert_eq!(parse_reserve("120").unwrap(), Reserve::Requests(120));
    for bad in ["100%", "-1%", "lots", "-3", "12.5"] {
        assert!(parse_reserve(bad).is_err(), "{bad}");
    }
}

#[test]
fn timezones() {
    assert!(parse_timezone("Europe/Paris").is_ok());
    assert!(parse_timezone("Mars/Olympus").is_err());
}

#[test]
fn key_file_is_trimmed_and_error_never_shows_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "  secret-key-123\n").unwrap();
    assert_eq!(
        read_key_from(Some(&path)).unwrap().expose(),
        "secret-key-123"
    );
    std::fs::write(&path, "\n").unwrap();
    let err = read_key_from(Some(&path)).unwrap_err();
    assert!(matches!(err, ConfigError::EmptyKeyFile(_)));
}
