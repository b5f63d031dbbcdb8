//! The HTTP answers every route module shares: Kustomer's error bodies (`api_error`,
//! `validation_error`, `forbidden`, `not_found`, gateway pages), 429s with `Retry-After`, dropped
//! connections, the JSON content-type check, and the `Caller` the gate hands each handler.
//!
//! Imports only the state, the connection kill switch and the validator's `FieldError`: never a
//! route module, so every route module may import it.

use std::time::Instant;

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::server::ConnectionKill;
use super::state::{KeyProfile, Shared};
use super::validate::FieldError;

/// The authenticated key of a /v1 request, put in its extensions by the gate.
#[derive(Clone, Copy)]
pub(crate) struct Caller(pub(crate) &'static KeyProfile);
/// A 429 with `Retry-After` as configured: the seconds to the reset, a verbatim value, or none.
pub(crate) fn rate_limited_for(shared: &Shared, message: &str, seconds: u64) -> Response {
    let response = api_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
    if !shared.config.retry_after {
        return response;
    }
    with_retry_after(shared, response, seconds)
}

/// `response` with `Retry-After`: the seconds given, or the configured verbatim value.
pub(crate) fn with_retry_after(shared: &Shared, mut response: Response, seconds: u64) -> Response {
    let value = match &shared.config.retry_after_value {
        // Only a value HTTP cannot carry at all (control characters) is left out.
        Some(verbatim) => match HeaderValue::from_str(verbatim) {
            Ok(value) => value,
            Err(_) => return response,
        },
        None => HeaderValue::from(seconds.max(1)),
    };
    response.headers_mut().insert(RETRY_AFTER, value);
    response
}

/// A 429 raised inside a handler, with `Retry-After` until the current window ends.
pub(crate) fn rate_limited(shared: &Shared, message: &str) -> Response {
    rate_limited_for(
        shared,
        message,
        shared.clock.seconds_to_reset(Instant::now()),
    )
}

/// The usual Kustomer error body.
pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "meta": {}}]});
    (status, Json(body)).into_response()
}

/// The JSON:API error body used for schema violations, one object per problem.
pub(crate) fn validation_error(problems: &[FieldError]) -> Response {
    let errors: Vec<Value> = problems
        .iter()
        .map(|problem| {
            json!({
                "status": 400,
                "code": "bad_request",
                "title": "Bad Request",
                "detail": problem.detail,
                "source": {"pointer": problem.pointer},
            })
        })
        .collect();
    (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response()
}

pub(crate) fn forbidden(role: &str) -> Response {
    api_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("This key lacks the role {role}"),
    )
}

pub(crate) async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not_found", "No such route")
}

/// Closes the caller's connection without answering; the returned future never completes.
pub(crate) async fn drop_connection(kill: &ConnectionKill) -> Response {
    kill.trigger();
    std::future::pending::<Response>().await
}
/// What a server or the gateway in front of it answers after the write went through: an HTML
/// page for gateway statuses (502, 504, Cloudflare's 520-529), the usual JSON error otherwise.
pub(crate) fn gateway_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Server Error");
    let code = status.as_u16();
    if matches!(code, 502 | 504 | 520..=529) {
        let page = format!(
            "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n\
             <center><h1>{code} {reason}</h1></center>\r\n<hr><center>gateway</center>\r\n\
             </body>\r\n</html>\r\n"
        );
        return (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("text/html"))],
            page,
        )
            .into_response();
    }
    let error_code = match code {
        408 => "request_timeout",
        500 => "internal_server_error",
        503 => "service_unavailable",
        _ => "server_error",
    };
    api_error(status, error_code, reason)
}

pub(crate) fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}
