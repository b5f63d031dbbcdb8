//! HTTP client for the few Kustomer endpoints the importer uses, and the error type that says
//! what to do next ([`ApiError::retry_action`]).
//!
//! Where `shared/kustomer-api.md` marks something unverified, the client reads leniently: both
//! error body shapes, both spellings of the externalId lookup, roles wherever the token record
//! puts them, and rate-limit resets as epoch seconds or seconds from now.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::Value;

pub use crate::throttle::RateInfo;
use crate::throttle::Throttle;

/// Error bodies quoted into the checkpoint and reports are cut to this many characters.
pub const MAX_QUOTED_ERROR_CHARS: usize = 500;

/// An API key. It is only ever put in the Authorization header: Debug and Display hide it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(secret: String) -> Self {
        ApiKey(secret)
    }

    /// The secret itself, for the Authorization header and for tests that search for leaks.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What to do after an [`ApiError`]: the one place that classifies failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Transient, and the request is known not to have taken effect: send again after a wait.
    Retry,
    /// Transient, but the request may have taken effect: look the message up before resending.
    ReconcileThenRetry,
    /// Permanent for this row: record it failed and move on.
    FailRow,
    /// The key or its roles are wrong: stop the whole run.
    StopRun,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The connection could not be made: the request never left.
    #[error("cannot connect to the API: {detail}")]
    Connect { detail: String },
    /// The run is stopping and the request was never sent.
    #[error("not sent: the run is stopping")]
    NotSent,
    #[error("no response within {secs} s (the request may or may not have been processed)")]
    Timeout { secs: u64 },
    #[error("connection lost before a response arrived: {detail}")]
    ConnectionLost { detail: String },
    #[error("{}", describe_http(*.status, .code.as_deref(), .message))]
    Http {
        status: u16,
        code: Option<String>,
        message: String,
        rate: RateInfo,
    },
    /// A response that does not read as the API documents it.
    #[error("unexpected response (HTTP {status}): {detail}")]
    Protocol { status: u16, detail: String },
}

fn describe_http(status: u16, code: Option<&str>, message: &str) -> String {
    let hint = match status {
        401 => {
            " (the API key was rejected: check KUSTOMER_API_KEY or --api-key-file, and that the \
             base URL is your org's region; a key used against another region fails authentication)"
        }
        403 => {
            " (the API key lacks a role: creating messages needs org.permission.message.create, \
             audit fields need org.admin)"
        }
        404 => " (unknown conversation, or wrong base URL)",
        429 => " (rate limited)",
        _ => "",
    };
    match code {
        Some(code) => format!("HTTP {status} {code}: {message}{hint}"),
        None => format!("HTTP {status}: {message}{hint}"),
    }
}

impl ApiError {
    pub fn retry_action(&self) -> RetryAction {
        match self {
            ApiError::Connect { .. } | ApiError::NotSent => RetryAction::Retry,
            ApiError::Timeout { .. } | ApiError::ConnectionLost { .. } => {
                RetryAction::ReconcileThenRetry
            }
            ApiError::Http { status, .. } => match *status {
                401 | 403 => RetryAction::StopRun,
                408 | 429 | 500 | 502 | 503 | 504 => RetryAction::Retry,
                _ => RetryAction::FailRow,
            },
            // A success we cannot read may still have created the message.
            ApiError::Protocol { status, .. } if (200..300).contains(status) => {
                RetryAction::ReconcileThenRetry
            }
            ApiError::Protocol { .. } => RetryAction::FailRow,
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } | ApiError::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short machine-readable code for the checkpoint and reports.
    pub fn code(&self) -> String {
        match self {
            ApiError::Connect { .. } => "connect_error".into(),
            ApiError::NotSent => "not_sent".into(),
            ApiError::Timeout { .. } => "timeout".into(),
            ApiError::ConnectionLost { .. } => "connection_lost".into(),
            ApiError::Http {
                code: Some(code), ..
            } => code.clone(),
            ApiError::Http { status, .. } => format!("http_{status}"),
            ApiError::Protocol { .. } => "unexpected_response".into(),
        }
    }

    pub fn rate(&self) -> Option<RateInfo> {
        match self {
            ApiError::Http { rate, .. } => Some(*rate),
            _ => None,
        }
    }
}

/// A message the API reports as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedMessage {
    pub id: String,
    /// `data.attributes.createdAt` as answered, to check the audit fields were kept.
    pub created_at: Option<String>,
    /// `data.relationships.createdBy.data.id` (or `attributes.createdBy`).
    pub created_by: Option<String>,
    pub rate: RateInfo,
}

/// A message found by externalId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    pub id: String,
    pub conversation_id: Option<String>,
}

/// The current token's record, read leniently (its shape is unverified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// None when the record names no roles we can find.
    pub roles: Option<Vec<String>>,
    pub rate: RateInfo,
}

impl TokenInfo {
    pub fn is_admin(&self) -> Option<bool> {
        self.roles
            .as_ref()
            .map(|roles| roles.iter().any(|r| r == "org.admin"))
    }
}

/// Settings of the HTTP client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Without trailing slash, e.g. `https://api.kustomerapp.com`.
    pub base_url: String,
    pub key: ApiKey,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

const LOOKUP_UNKNOWN: u8 = 0;
const LOOKUP_CAMEL: u8 = 1;
const LOOKUP_LOWER: u8 = 2;

/// Characters left alone in an externalId path segment: RFC 3986 unreserved.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    key: ApiKey,
    timeout: Duration,
    /// Which lookup spelling the server has answered 200 to, once known.
    lookup_spelling: AtomicU8,
    throttle: Option<Arc<Throttle>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(#[source] reqwest::Error);

impl ApiClient {
    /// A client whose every request waits for `throttle` (the job's budget and concurrency),
    /// or goes straight out without one (the preflight check, the benchmark's reference).
    pub fn new(
        config: ClientConfig,
        throttle: Option<Arc<Throttle>>,
    ) -> Result<ApiClient, ClientBuildError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("kustomer-import/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(ClientBuildError)?;
        Ok(ApiClient {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            key: config.key,
            timeout: config.request_timeout,
            lookup_spelling: AtomicU8::new(LOOKUP_UNKNOWN),
            throttle,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Turns away requests still waiting for the throttle; requests already sent finish.
    pub fn stop_admitting(&self) {
        if let Some(throttle) = &self.throttle {
            throttle.close();
        }
    }

    /// `POST /v1/conversations/{id}/messages` with the exact stored body.
    pub async fn create_message(
        &self,
        conversation_id: &str,
        body: &str,
    ) -> Result<CreatedMessage, ApiError> {
        let url = format!(
            "{}/v1/conversations/{}/messages",
            self.base_url,
            utf8_percent_encode(conversation_id, PATH_SEGMENT)
        );
        let request = self
            .http
            .post(url)
            .bearer_auth(self.key.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let (status, rate, document) = self.exchange(request).await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(http_error(status, rate, &document));
        }
        let json: Value = serde_json::from_str(&document).map_err(|err| ApiError::Protocol {
            status: status.as_u16(),
            detail: format!("body is not JSON ({err})"),
        })?;
        let data = &json["data"];
        let id = data["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ApiError::Protocol {
                status: status.as_u16(),
                detail: "no data.id in the created message".into(),
            })?;
        let created_by = data["relationships"]["createdBy"]["data"]["id"]
            .as_str()
            .or_else(|| data["attributes"]["createdBy"].as_str());
        Ok(CreatedMessage {
            id: id.to_string(),
            created_at: data["attributes"]["createdAt"].as_str().map(str::to_string),
            created_by: created_by.map(str::to_string),
            rate,
        })
    }

    /// `GET /v1/messages/externalId=<id>`, falling back to the spec's `externalid=` spelling on
    /// 404 until one spelling has been seen to work. `Ok(None)` means not found.
    pub async fn find_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<FoundMessage>, ApiError> {
        let spellings: &[u8] = match self.lookup_spelling.load(Ordering::Relaxed) {
            LOOKUP_CAMEL => &[LOOKUP_CAMEL],
            LOOKUP_LOWER => &[LOOKUP_LOWER],
            _ => &[LOOKUP_CAMEL, LOOKUP_LOWER],
        };
        for &spelling in spellings {
            let prefix = if spelling == LOOKUP_CAMEL {
                "externalId="
            } else {
                "externalid="
            };
            let url = format!(
                "{}/v1/messages/{prefix}{}",
                self.base_url,
                utf8_percent_encode(external_id, PATH_SEGMENT)
            );
            let request = self.http.get(url).bearer_auth(self.key.expose());
            let (status, rate, document) = self.exchange(request).await?;
            if status == StatusCode::NOT_FOUND {
                continue;
            }
            if !status.is_success() {
                return Err(http_error(status, rate, &document));
            }
            self.lookup_spelling.store(spelling, Ordering::Relaxed);
            let json: Value =
                serde_json::from_str(&document).map_err(|err| ApiError::Protocol {
                    status: status.as_u16(),
                    detail: format!("lookup body is not JSON ({err})"),
                })?;
            // Some list endpoints answer with an array; take the first match.
            let data = match &json["data"] {
                Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            let Some(id) = data["id"].as_str() else {
                return Err(ApiError::Protocol {
                    status: status.as_u16(),
                    detail: "lookup answered without data.id".into(),
                });
            };
            return Ok(Some(FoundMessage {
                id: id.to_string(),
                conversation_id: data["relationships"]["conversation"]["data"]["id"]
                    .as_str()
                    .map(str::to_string),
            }));
        }
        Ok(None)
    }

    /// `GET /v1/auth/tokens/current`.
    pub async fn current_token(&self) -> Result<TokenInfo, ApiError> {
        let url = format!("{}/v1/auth/tokens/current", self.base_url);
        let request = self.http.get(url).bearer_auth(self.key.expose());
        let (status, rate, document) = self.exchange(request).await?;
        if !status.is_success() {
            return Err(http_error(status, rate, &document));
        }
        let json: Value = serde_json::from_str(&document).unwrap_or(Value::Null);
        Ok(TokenInfo {
            roles: find_roles(&json),
            rate,
        })
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, RateInfo, String), ApiError> {
        let ticket = match &self.throttle {
            Some(throttle) => Some(throttle.admit().await.ok_or(ApiError::NotSent)?),
            None => None,
        };
        let result = async {
            let response = request.send().await?;
            let status = response.status();
            let rate = RateInfo::from_headers(response.headers());
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, rate, text))
        }
        .await;
        if let (Some(throttle), Some(ticket)) = (&self.throttle, ticket) {
            match &result {
                Ok((status, rate, _)) => throttle.settle(ticket, Some(status.as_u16()), rate),
                Err(_) => throttle.settle(ticket, None, &RateInfo::default()),
            }
        }
        result.map_err(|err| self.transport(err))
    }

    fn transport(&self, err: reqwest::Error) -> ApiError {
        if err.is_connect() {
            ApiError::Connect {
                detail: error_chain(&err),
            }
        } else if err.is_timeout() {
            ApiError::Timeout {
                secs: self.timeout.as_secs(),
            }
        } else {
            ApiError::ConnectionLost {
                detail: error_chain(&err),
            }
        }
    }
}

/// reqwest's Display hides the cause ("error sending request"); the chain says what happened.
/// The URL is left out: it is ours, and a lookup URL carries an externalId that is not an error.
fn error_chain(err: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        let mut text = err.to_string();
        if let Some(url) = err.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        parts.push(text);
    }
    truncate(&parts.join(": "), MAX_QUOTED_ERROR_CHARS)
}

/// Reads both error shapes of the note: `{"errors":[{"code","message"}]}` and JSON:API
/// `{"errors":[{"status","code","title","detail","source":{"pointer"}}]}`.
fn http_error(status: StatusCode, rate: RateInfo, document: &str) -> ApiError {
    let parsed: Option<Value> = serde_json::from_str(document).ok();
    let mut code = None;
    let mut messages = Vec::new();
    if let Some(errors) = parsed.as_ref().and_then(|v| v["errors"].as_array()) {
        for item in errors {
            if code.is_none() {
                code = match &item["code"] {
                    Value::String(c) if !c.is_empty() => Some(c.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
            }
            let text = item["message"]
                .as_str()
                .or_else(|| item["detail"].as_str())
                .or_else(|| item["title"].as_str());
            let pointer = item["source"]["pointer"].as_str();
            match (text, pointer) {
                (Some(text), Some(pointer)) => messages.push(format!("{text} (at {pointer})")),
                (Some(text), None) => messages.push(text.to_string()),
                (None, Some(pointer)) => messages.push(format!("problem at {pointer}")),
                (None, None) => {}
            }
        }
    }
    let message = if messages.is_empty() {
        let body = document.trim();
        if body.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string()
        } else {
            body.to_string()
        }
    } else {
        messages.join("; ")
    };
    ApiError::Http {
        status: status.as_u16(),
        code,
        message: truncate(&message, MAX_QUOTED_ERROR_CHARS),
        rate,
    }
}

fn find_roles(json: &Value) -> Option<Vec<String>> {
    let candidates = [
        &json["data"]["attributes"]["roles"],
        &json["data"]["roles"],
        &json["roles"],
        &json["data"]["attributes"]["permissions"],
    ];
    candidates.into_iter().find_map(|value| {
        value.as_array().map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
    })
}

/// Cuts text to at most `max` characters, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… [truncated]", &text[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let http = |status| ApiError::Http {
            status,
            code: None,
            message: String::new(),
            rate: RateInfo::default(),
        };
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(http(status).retry_action(), RetryAction::Retry, "{status}");
        }
        for status in [400, 404, 409, 422, 501] {
            assert_eq!(
                http(status).retry_action(),
                RetryAction::FailRow,
                "{status}"
            );
        }
        for status in [401, 403] {
            assert_eq!(
                http(status).retry_action(),
                RetryAction::StopRun,
                "{status}"
            );
        }
        let connect = ApiError::Connect {
            detail: "refused".into(),
        };
        assert_eq!(connect.retry_action(), RetryAction::Retry);
        let timeout = ApiError::Timeout { secs: 30 };
        assert_eq!(timeout.retry_action(), RetryAction::ReconcileThenRetry);
        let lost = ApiError::ConnectionLost {
            detail: "reset".into(),
        };
        assert_eq!(lost.retry_action(), RetryAction::ReconcileThenRetry);
        let unreadable_success = ApiError::Protocol {
            status: 201,
            detail: "no id".into(),
        };
        assert_eq!(
            unreadable_success.retry_action(),
            RetryAction::ReconcileThenRetry
        );
    }

    #[test]
    fn parses_plain_error_shape() {
        let body =
            r#"{"errors":[{"code":"bad_request","message":"channel is invalid","meta":{}}]}"#;
        let err = http_error(StatusCode::BAD_REQUEST, RateInfo::default(), body);
        match err {
            ApiError::Http { code, message, .. } => {
                assert_eq!(code.as_deref(), Some("bad_request"));
                assert_eq!(message, "channel is invalid");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_json_api_error_shape() {
        let body = r#"{"errors":[{"status":400,"code":"bad_request","title":"Bad Request","detail":"must be one of in, out","source":{"pointer":"/data/attributes/direction"}},{"detail":"too long","source":{"pointer":"/data/attributes/subject"}}]}"#;
        let err = http_error(StatusCode::BAD_REQUEST, RateInfo::default(), body);
        assert_eq!(
            err.to_string(),
            "HTTP 400 bad_request: must be one of in, out (at /data/attributes/direction); too long (at /data/attributes/subject)"
        );
    }

    #[test]
    fn non_json_error_body_is_quoted_and_truncated() {
        let body = "x".repeat(2_000);
        let err = http_error(StatusCode::BAD_GATEWAY, RateInfo::default(), &body);
        let ApiError::Http { message, .. } = err else {
            panic!("expected Http")
        };
        assert!(message.chars().count() < 600);
        assert!(message.ends_with("[truncated]"));
    }

    #[test]
    fn roles_found_wherever_the_record_puts_them() {
        let nested = serde_json::json!({"data":{"attributes":{"roles":["org.admin","x"]}}});
        assert_eq!(find_roles(&nested).unwrap(), vec!["org.admin", "x"]);
        let top = serde_json::json!({"roles":["org.user"]});
        assert_eq!(find_roles(&top).unwrap(), vec!["org.user"]);
        assert_eq!(find_roles(&serde_json::json!({"data":{}})), None);
    }

    #[test]
    fn key_is_hidden_from_debug() {
        let key = ApiKey::new("super-secret-value".into());
        assert!(!format!("{key:?}").contains("super-secret"));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("héllo", 2), "hé… [truncated]");
    }
}
