//! The sandbox's one router: merges the route sets of the messages, the controls (`/_sandbox`),
//! bulk, customers and conversations behind one gate (latency, auth, org limit, rate headers,
//! status counting), and the redirect switch.
//!
//! Owns the gate and the route table only. It may import every route module, the HTTP helpers and
//! the state; no other sandbox module imports it (except the sandbox's entry in `mod.rs`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::directory::CreateKind;
use super::http::{api_error, not_found, rate_limited_for, Caller};
use super::messages::{create_message, CREATE_ROUTE};
use super::state::{RateSnapshot, Refusal, Shared};
use super::{ResetUnit, SandboxError};

static RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        // One path, two concerns: creating a message, and listing a conversation's messages.
        .route(
            CREATE_ROUTE,
            post(create_message).get(super::conversations::list_messages),
        )
        .merge(super::messages::routes())
        .merge(super::admin::routes())
        .merge(super::bulk::routes())
        .route(
            super::bulk::CUSTOMERS_BULK_ROUTE,
            super::bulk::record_jobs::<super::customers::Customers>(),
        )
        .route(
            super::bulk::CONVERSATIONS_BULK_ROUTE,
            super::bulk::record_jobs::<super::conversations::Conversations>(),
        )
        .merge(super::customers::routes())
        .merge(super::conversations::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Runs before every /v1 handler: latency, auth, org limit, then the rate headers and the status
/// count on the way out. Control endpoints pass straight through.
async fn gate(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let _in_flight = shared.enter();
    if let Some(target) = &shared.config.redirect_to {
        return redirect(&shared, target);
    }
    shared.pass_hold().await;
    let delay = shared.next_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let create = create_kind(&request);
    match create {
        Some(CreateKind::Message) => {
            if let Some(conversation) = create_path_conversation(request.uri().path()) {
                shared.count_create(conversation);
            }
        }
        Some(kind) => shared.with_kind_counts(kind, |counts| counts.creates += 1),
        None => {}
    }
    let bearer = bearer_token(request.headers());
    let is_message_create = create == Some(CreateKind::Message);
    let (admission, rate) = shared.admit(bearer, is_message_create, Instant::now());
    let mut response = match admission {
        Ok(_) if create.is_some_and(|kind| shared.roll_injected_429_for(kind)) => rate_limited_for(
            &shared,
            "Rate limit exceeded (injected)",
            rate.reset_seconds,
        ),
        Ok(profile) => {
            request.extensions_mut().insert(Caller(profile));
            next.run(request).await
        }
        Err(Refusal::Unauthorized) => api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "The API key is missing, unknown or revoked",
        ),
        Err(Refusal::OrgLimited) => rate_limited_for(
            &shared,
            "Organization rate limit exceeded",
            rate.reset_seconds,
        ),
    };
    add_rate_headers(&shared, response.headers_mut(), rate);
    shared.record_status(response.status().as_u16());
    response
}

/// What a request creates, if it is a create (`POST` on a create route).
fn create_kind(request: &Request) -> Option<CreateKind> {
    if request.method() != Method::POST {
        return None;
    }
    match request.extensions().get::<MatchedPath>()?.as_str() {
        CREATE_ROUTE => Some(CreateKind::Message),
        super::customers::CUSTOMERS_ROUTE => Some(CreateKind::Customer),
        super::conversations::CONVERSATIONS_ROUTE => Some(CreateKind::Conversation),
        _ => None,
    }
}

/// The conversation id in a create request's path.
fn create_path_conversation(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/conversations/")?
        .strip_suffix("/messages")
}

/// Checks `redirect_to` at start: an absolute http(s) URL, or a path on this sandbox.
pub(crate) fn check_redirect_target(target: &str) -> Result<(), SandboxError> {
    let invalid = |why: &str| {
        SandboxError::InvalidConfig(format!(
            "redirect target {target:?} {why}: give an absolute http(s) URL or a path starting with /"
        ))
    };
    HeaderValue::from_str(target).map_err(|_| invalid("is not a valid header value"))?;
    let uri: axum::http::Uri = target.parse().map_err(|_| invalid("is not a URL"))?;
    let absolute = matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some();
    let local_path = uri.scheme().is_none()
        && uri.authority().is_none()
        && target.starts_with('/')
        && !target.starts_with("//");
    if absolute || local_path {
        Ok(())
    } else {
        Err(invalid("is neither an absolute http(s) URL nor a path"))
    }
}

/// 307 to the configured target: nothing is processed, charged or stored.
fn redirect(shared: &Shared, target: &str) -> Response {
    shared.count_redirected();
    shared.record_status(StatusCode::TEMPORARY_REDIRECT.as_u16());
    match HeaderValue::from_str(target) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, location)],
        )
            .into_response(),
        // Checked at start; kept total rather than trusting that.
        Err(_) => StatusCode::TEMPORARY_REDIRECT.into_response(),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn add_rate_headers(shared: &Shared, headers: &mut HeaderMap, rate: RateSnapshot) {
    if !shared.config.rate_headers {
        return;
    }
    let reset = match shared.config.reset_unit {
        ResetUnit::Seconds => rate.reset_seconds,
        ResetUnit::EpochSeconds => rate.reset_epoch,
        ResetUnit::EpochMillis => rate.reset_epoch_ms,
    };
    headers.insert(RATE_LIMIT.clone(), HeaderValue::from(rate.limit));
    headers.insert(RATE_REMAINING.clone(), HeaderValue::from(rate.remaining));
    headers.insert(RATE_RESET.clone(), HeaderValue::from(reset));
}
