//! HTTP client for the few Kustomer endpoints the importer uses, and the typed error that the
//! retry policy classifies ([`crate::retry::RetryAction`]).
//!
//! Where `shared/kustomer-api.md` marks something unverified, the client reads leniently: both
//! error body shapes, both spellings of the externalId lookup, roles wherever the token record
//! puts them. It never follows a redirect and never reads more than [`MAX_BODY_BYTES`] of an
//! answer: both are the server's numbers and choices, and neither may steer or swamp us.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::Value;

mod resolve;

pub use crate::throttle::RateInfo;
use crate::throttle::Throttle;
pub use resolve::{EntityLookup, FoundConversation, FoundCustomer};

mod bulk;

pub use bulk::{
    BatchCounts, BatchStatus, BulkBatches, BulkJob, BulkJobStatus, BulkKind, BulkResultItem,
    ItemOutcome, MAX_BULK_BATCHES, MAX_BULK_REF_CHARS, MAX_BULK_RESULT_ITEMS,
};

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

/// Most bytes of any response body read; the rest is left unread.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
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
    /// A 3xx: the base URL points somewhere that moved. Never followed: a redirect could take
    /// the key to another host, and a create replayed by a redirect is a duplicate.
    #[error("the API answered HTTP {status} redirecting to {location}: check --base-url (use https://<org>.api.kustomerapp.com or your region's API host); redirects are never followed")]
    Redirect { status: u16, location: String },
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
    pub fn http_status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. }
            | ApiError::Protocol { status, .. }
            | ApiError::Redirect { status, .. } => Some(*status),
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
            ApiError::Redirect { .. } => "redirected".into(),
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
    /// `data.relationships.conversation.data.id` (or `attributes.conversation`), so that a
    /// message read back can be checked to be in the row's conversation.
    pub conversation_id: Option<String>,
}

/// One message named by a lookup answer. Its externalId and conversation are whatever the answer
/// said (None when it did not say): whether it is the row's own message is for the caller to
/// decide, since another system may have used the same externalId elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    pub id: String,
    pub external_id: Option<String>,
    pub conversation_id: Option<String>,
}

/// What a lookup by externalId answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupAnswer {
    /// 200 with `data` empty, null or `[]`: the route works and knows no such message.
    Empty,
    /// 404 on every spelling tried: no such message, or no such route (the two look alike).
    Missing,
    /// The messages the answer named, in the order given.
    Found(Vec<FoundMessage>),
}

/// One page of a conversation's messages (`GET /v1/conversations/{id}/messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    /// The messages the page named, in the order given.
    pub messages: Vec<FoundMessage>,
    /// The answer says a next page exists (`links.next`), or, without links, the page was full.
    pub more: bool,
}

/// Where a request's time went: waiting for our own throttle, then on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// Waiting for a concurrency slot and the rate budget (and any common pause).
    pub admission: std::time::Duration,
    /// From sending the request to the end of the answer; None when nothing was sent.
    pub latency: Option<std::time::Duration>,
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
            .redirect(reqwest::redirect::Policy::none())
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

    /// `POST /v1/conversations/{id}/messages` with the exact stored body. Any 2xx naming a
    /// message id is a success (201 as documented, but also 200 or 202).
    pub async fn create_message(
        &self,
        conversation_id: &str,
        body: &str,
    ) -> (Result<CreatedMessage, ApiError>, Timing) {
        let path = format!(
            "/v1/conversations/{}/messages",
            utf8_percent_encode(conversation_id, PATH_SEGMENT)
        );
        let (answer, timing) = self.exchange(self.post_json(&path, body)).await;
        let result = answer.and_then(|answer| {
            let (status, json) = answer.into_json("created message")?;
            read_message(&json["data"]).ok_or(ApiError::Protocol {
                status,
                detail: "no data.id in the created message".into(),
            })
        });
        (result, timing)
    }

    /// `GET /v1/messages/externalId=<id>`, falling back to the spec's `externalid=` spelling on
    /// 404 until one spelling has answered 200. The answer is read strictly (see
    /// [`LookupAnswer`]); it is not trusted here: a 404 may mean "no such route".
    pub async fn find_by_external_id(&self, external_id: &str) -> Result<LookupAnswer, ApiError> {
        let spellings: &[u8] = match self.lookup_spelling.load(Ordering::Relaxed) {
            LOOKUP_CAMEL => &[LOOKUP_CAMEL],
            LOOKUP_LOWER => &[LOOKUP_LOWER],
            _ => &[LOOKUP_CAMEL, LOOKUP_LOWER],
        };
        for &spelling in spellings {
            if let Some(answer) = self.lookup_spelled(external_id, spelling).await? {
                return Ok(answer);
            }
        }
        Ok(LookupAnswer::Missing)
    }

    /// A lookup with one spelling only while none is known to work (`second`: `externalid=`),
    /// else with the one that works: for many lookups that need not all succeed (the re-import
    /// guard's sample), half the requests of trying both each time.
    pub async fn find_by_external_id_once(
        &self,
        external_id: &str,
        second: bool,
    ) -> Result<LookupAnswer, ApiError> {
        let spelling = match self.lookup_spelling.load(Ordering::Relaxed) {
            LOOKUP_UNKNOWN if second => LOOKUP_LOWER,
            LOOKUP_UNKNOWN => LOOKUP_CAMEL,
            known => known,
        };
        Ok(self
            .lookup_spelled(external_id, spelling)
            .await?
            .unwrap_or(LookupAnswer::Missing))
    }

    /// One lookup with one spelling; `None` for a 404.
    async fn lookup_spelled(
        &self,
        external_id: &str,
        spelling: u8,
    ) -> Result<Option<LookupAnswer>, ApiError> {
        let prefix = if spelling == LOOKUP_CAMEL {
            "externalId="
        } else {
            "externalid="
        };
        let path = format!(
            "/v1/messages/{prefix}{}",
            utf8_percent_encode(external_id, PATH_SEGMENT)
        );
        let answer = self.exchange(self.get(&path)).await.0?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let (status, json) = answer.into_json("lookup answer")?;
        let lookup = read_lookup(&json).map_err(unexpected(status))?;
        self.lookup_spelling.store(spelling, Ordering::Relaxed);
        Ok(Some(lookup))
    }

    /// The lookup path spelling that has answered 200, once one has.
    pub fn lookup_spelling(&self) -> Option<&'static str> {
        match self.lookup_spelling.load(Ordering::Relaxed) {
            LOOKUP_CAMEL => Some("externalId="),
            LOOKUP_LOWER => Some("externalid="),
            _ => None,
        }
    }

    /// `GET /v1/conversations/{id}/messages?page=N&pageSize=M`: one page of the conversation's
    /// messages, read as the spec's example shows (`data` a list, `links.next` null on the last
    /// page).
    pub async fn conversation_messages(
        &self,
        conversation_id: &str,
        page: u32,
        page_size: u32,
    ) -> Result<MessagePage, ApiError> {
        let path = format!(
            "/v1/conversations/{}/messages?page={page}&pageSize={page_size}",
            utf8_percent_encode(conversation_id, PATH_SEGMENT)
        );
        let (status, json) = self.get_json(&path, "conversation's messages").await?;
        read_message_page(&json, page_size).map_err(unexpected(status))
    }

    /// `GET /v1/messages/{id}`: a created message, to check its audit fields and its
    /// conversation.
    pub async fn message(&self, id: &str) -> Result<CreatedMessage, ApiError> {
        let path = format!("/v1/messages/{}", utf8_percent_encode(id, PATH_SEGMENT));
        let (status, json) = self.get_json(&path, "message").await?;
        read_message(&json["data"]).ok_or_else(|| unexpected(status)("no data.id in the message"))
    }

    /// `GET /v1/auth/tokens/current`.
    pub async fn current_token(&self) -> Result<TokenInfo, ApiError> {
        let answer = self.exchange(self.get("/v1/auth/tokens/current")).await.0?;
        if !answer.status.is_success() {
            return Err(answer.into_error());
        }
        let json: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        Ok(TokenInfo {
            roles: find_roles(&json),
            rate: answer.rate,
        })
    }

    /// `GET path` through the throttle: its 2xx JSON body (`what` names it in errors).
    async fn get_json(&self, path: &str, what: &str) -> Result<(u16, Value), ApiError> {
        self.exchange(self.get(path)).await.0?.into_json(what)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(self.key.expose())
    }

    fn post_json(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.key.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
    }

    /// Sends one request through the throttle and reads at most [`MAX_BODY_BYTES`] of the
    /// answer. Never follows a redirect: a 3xx comes back as [`ApiError::Redirect`].
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> (Result<Answer, ApiError>, Timing) {
        let waiting = Instant::now();
        let ticket = match &self.throttle {
            Some(throttle) => match throttle.admit().await {
                Some(ticket) => Some(ticket),
                None => {
                    let timing = Timing {
                        admission: waiting.elapsed(),
                        latency: None,
                    };
                    return (Err(ApiError::NotSent), timing);
                }
            },
            None => None,
        };
        let admission = waiting.elapsed();
        let started = Instant::now();
        let result = async {
            let mut response = request.send().await?;
            let status = response.status();
            let rate = RateInfo::from_headers(response.headers());
            let location = response
                .headers()
                .get(LOCATION)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            let mut body = Vec::new();
            let mut truncated = false;
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_BODY_BYTES - body.len();
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>(Answer {
                status,
                rate,
                location,
                body: String::from_utf8_lossy(&body).into_owned(),
                truncated,
            })
        }
        .await;
        let timing = Timing {
            admission,
            latency: Some(started.elapsed()),
        };
        if let (Some(throttle), Some(ticket)) = (&self.throttle, ticket) {
            match &result {
                Ok(answer) => throttle.settle(ticket, Some(answer.status.as_u16()), &answer.rate),
                Err(_) => throttle.settle(ticket, None, &RateInfo::default()),
            }
        }
        let result = result
            .map_err(|err| self.transport(err))
            .and_then(|answer| {
                if answer.status.is_redirection() {
                    Err(ApiError::Redirect {
                        status: answer.status.as_u16(),
                        location: truncate(
                            answer.location.as_deref().unwrap_or("(no Location header)"),
                            200,
                        ),
                    })
                } else {
                    Ok(answer)
                }
            });
        (result, timing)
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

/// A response as read: status, rate headers, and at most [`MAX_BODY_BYTES`] of its body.
struct Answer {
    status: StatusCode,
    rate: RateInfo,
    location: Option<String>,
    body: String,
    /// The body was longer than what was read.
    truncated: bool,
}

impl Answer {
    fn into_error(self) -> ApiError {
        http_error(self.status, self.rate, &self.body)
    }

    /// A 2xx answer's JSON body (`what` names it in errors); any other status is the API's
    /// error. A body cut at [`MAX_BODY_BYTES`] or not JSON is unreadable: for a create, an
    /// unknown outcome.
    fn into_json(self, what: &str) -> Result<(u16, Value), ApiError> {
        if !self.status.is_success() {
            return Err(self.into_error());
        }
        let status = self.status.as_u16();
        if self.truncated {
            return Err(ApiError::Protocol {
                status,
                detail: format!("{what} larger than {MAX_BODY_BYTES} bytes, not read"),
            });
        }
        let json = serde_json::from_str(&self.body).map_err(|err| ApiError::Protocol {
            status,
            detail: format!("{what} is not JSON ({err})"),
        })?;
        Ok((status, json))
    }
}

/// A 2xx answer of status `status` that does not read as documented, for `detail`'s reason.
fn unexpected(status: u16) -> impl FnOnce(&str) -> ApiError {
    move |detail| ApiError::Protocol {
        status,
        detail: detail.into(),
    }
}

/// A message document's `data`: its id and audit fields; None without an id.
fn read_message(data: &Value) -> Option<CreatedMessage> {
    let id = data["id"].as_str().filter(|id| !id.is_empty())?;
    let created_by = data["relationships"]["createdBy"]["data"]["id"]
        .as_str()
        .or_else(|| data["attributes"]["createdBy"].as_str());
    Some(CreatedMessage {
        id: id.to_string(),
        created_at: data["attributes"]["createdAt"].as_str().map(str::to_string),
        created_by: created_by.map(str::to_string),
        conversation_id: conversation_of(data).map(str::to_string),
    })
}

/// The conversation a message document names: `relationships.conversation.data.id`, else
/// `attributes.conversation` or `attributes.conversationId`.
fn conversation_of(data: &Value) -> Option<&str> {
    data["relationships"]["conversation"]["data"]["id"]
        .as_str()
        .or_else(|| data["attributes"]["conversation"].as_str())
        .or_else(|| data["attributes"]["conversationId"].as_str())
}

/// Reads a 200 lookup answer: `data` as one message, a list of messages, or nothing at all.
fn read_lookup(json: &Value) -> Result<LookupAnswer, &'static str> {
    let items: Vec<&Value> = match &json["data"] {
        Value::Null => return Ok(LookupAnswer::Empty),
        Value::Array(items) if items.is_empty() => return Ok(LookupAnswer::Empty),
        Value::Object(object) if object.is_empty() => return Ok(LookupAnswer::Empty),
        Value::Array(items) => items.iter().collect(),
        object @ Value::Object(_) => vec![object],
        _ => return Err("lookup answered a `data` that is neither a message nor a list"),
    };
    let found: Vec<FoundMessage> = items.into_iter().filter_map(read_found).collect();
    if found.is_empty() {
        return Err("lookup answered messages without an id");
    }
    Ok(LookupAnswer::Found(found))
}

/// A message document's id, externalId and conversation; None without an id.
fn read_found(item: &Value) -> Option<FoundMessage> {
    let id = item["id"].as_str().filter(|id| !id.is_empty())?;
    let conversation = conversation_of(item);
    Some(FoundMessage {
        id: id.to_string(),
        external_id: item["attributes"]["externalId"]
            .as_str()
            .map(str::to_string),
        conversation_id: conversation.map(str::to_string),
    })
}

/// Reads one page of a conversation's messages: `data` a list (empty or null: no messages);
/// each entry's id, externalId and conversation as a lookup answer names them.
fn read_message_page(json: &Value, page_size: u32) -> Result<MessagePage, &'static str> {
    let items = match &json["data"] {
        Value::Null => {
            return Ok(MessagePage {
                messages: Vec::new(),
                more: false,
            })
        }
        Value::Array(items) => items,
        _ => return Err("the conversation's messages are not a list"),
    };
    let messages: Vec<FoundMessage> = items.iter().filter_map(read_found).collect();
    let more = match &json["links"]["next"] {
        Value::String(next) => !next.is_empty() && !items.is_empty(),
        Value::Null if json["links"].is_object() => false,
        _ => items.len() >= usize::try_from(page_size).unwrap_or(usize::MAX),
    };
    Ok(MessagePage { messages, more })
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
    fn a_message_read_back_names_its_conversation() {
        let document = serde_json::json!({"data":{"type":"message","id":"m1",
            "attributes":{"createdAt":"2020-01-01T00:00:00.000Z"},
            "relationships":{"conversation":{"data":{"type":"conversation","id":"c1"}},
                "createdBy":{"data":{"type":"user","id":"u1"}}}}});
        let read = read_message(&document["data"]).expect("an id");
        assert_eq!(read.conversation_id.as_deref(), Some("c1"));
        assert_eq!(read.created_by.as_deref(), Some("u1"));
        let bare = read_message(&serde_json::json!({"id":"m2"})).expect("an id");
        assert_eq!(bare.conversation_id, None);
    }

    /// The spec's example answer of `GET /conversations/{id}/messages`, verbatim.
    const SPEC_MESSAGE_PAGE: &str = r#"{"meta": {"pageSize": 100, "page": 1}, "data": [{"type": "message", "id": "57c8d2b01a57ed1400392073", "attributes": {"externalId": "<CADBFQxRPMLtQrBS9x+mt=7Wcy0GEw0FxcneO5sn=k4XgGDyVZg@mail.gmail.com>", "channel": "email", "app": "postmark", "size": 0, "direction": "in", "preview": "Can you please help me?", "sentiment": {}, "meta": {"inReplyTo": "<ef265bbbd801e5e38722f66fa3819c79cd07dc7971b4ad84fafce7e57737e911@kustomer.mail.kustomerapp.com>", "recipient": {"mailboxHash": "", "email": "support@kustomer.com"}, "cc": [], "to": [{"email": "support@kustomer.com"}], "from": "jeremy@kustomer.com", "subject": "Re: hey"}, "status": "received", "sentAt": "2016-09-02T01:15:14.000Z", "createdAt": "2016-09-02T01:15:31.140Z", "updatedAt": "2016-09-02T01:15:31.140Z"}, "relationships": {"org": {"links": {"self": "/v1/orgs/57bb5d2e32e83a130052e94e"}, "data": {"type": "org", "id": "57bb5d2e32e83a130052e94e"}}, "customer": {"links": {"self": "/v1/customers/57c08ccde595371400462df2"}, "data": {"type": "customers", "id": "57c08ccde595371400462df2"}}, "conversation": {"links": {"self": "/v1/conversations/57c8d2b365f7cc14004e674f"}, "data": {"type": "conversation", "id": "57c8d2b365f7cc14004e674f"}}}, "links": {"self": "/v1/messages/57c8d2b01a57ed1400392073", "related": "/v1/postmark/messages/57c8d2b01a57ed1400392073"}}], "links": {"self": "/v1/conversations/57c8d2b365f7cc14004e674f/messages?page=1&pageSize=100", "first": "/v1/conversations/57c8d2b365f7cc14004e674f/messages?page=1&pageSize=100", "prev": null, "next": null}}"#;

    #[test]
    fn a_conversations_message_page_reads_as_the_spec_shows() {
        let read = |text: &str, size| read_message_page(&serde_json::from_str(text).unwrap(), size);
        assert_eq!(
            read(SPEC_MESSAGE_PAGE, 100),
            Ok(MessagePage {
                messages: vec![FoundMessage {
                    id: "57c8d2b01a57ed1400392073".into(),
                    external_id: Some(
                        "<CADBFQxRPMLtQrBS9x+mt=7Wcy0GEw0FxcneO5sn=k4XgGDyVZg@mail.gmail.com>"
                            .into()
                    ),
                    conversation_id: Some("57c8d2b365f7cc14004e674f".into()),
                }],
                more: false,
            })
        );
        let next = SPEC_MESSAGE_PAGE.replace(
            r#""prev": null, "next": null"#,
            r#""prev": null, "next": "/v1/conversations/57c8d2b365f7cc14004e674f/messages?page=2&pageSize=100""#,
        );
        assert!(read(&next, 100).unwrap().more);
        // Without links, a full page may have a successor; a short one has none.
        assert!(read(r#"{"data":[{"id":"m1"}]}"#, 1).unwrap().more);
        assert!(!read(r#"{"data":[{"id":"m1"}]}"#, 2).unwrap().more);
        assert_eq!(read(r#"{"data":[]}"#, 2).unwrap().messages, vec![]);
        assert!(!read(r#"{"data":null}"#, 2).unwrap().more);
        assert!(read(r#"{"data":"m1"}"#, 2).is_err());
    }

    #[test]
    fn lookup_answers_read_strictly() {
        let read = |text: &str| read_lookup(&serde_json::from_str(text).unwrap());
        for empty in [
            r#"{"data":[]}"#,
            r#"{"data":null}"#,
            r#"{}"#,
            r#"{"data":{}}"#,
        ] {
            assert_eq!(read(empty), Ok(LookupAnswer::Empty), "{empty}");
        }
        let one = r#"{"data":{"id":"m1","attributes":{"externalId":"e1"},
            "relationships":{"conversation":{"data":{"id":"c1"}}}}}"#;
        assert_eq!(
            read(one),
            Ok(LookupAnswer::Found(vec![FoundMessage {
                id: "m1".into(),
                external_id: Some("e1".into()),
                conversation_id: Some("c1".into()),
            }]))
        );
        let list = r#"{"data":[{"id":"m1","attributes":{"externalId":"e1","conversation":"c9"}},
            {"id":"m2"}]}"#;
        let Ok(LookupAnswer::Found(found)) = read(list) else {
            panic!("expected a list")
        };
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].conversation_id.as_deref(), Some("c9"));
        assert_eq!(found[1].external_id, None);
        assert!(read(r#"{"data":[{"attributes":{}}]}"#).is_err());
        assert!(read(r#"{"data":"m1"}"#).is_err());
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
