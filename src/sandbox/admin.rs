//! The unauthenticated `/_sandbox` controls: stats and dumps, seeding, and the switches tests
//! flip mid-run (hold and release, failing or missing lookups, forbid, revoke and restore).
//!
//! Imports the state and `seeding`; never another route module.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::state::{MissShape, Shared};

/// The control routes, to merge into the sandbox router (the gate lets them straight through).
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/messages", get(messages))
        .route("/_sandbox/customers", get(super::seeding::customers))
        .route(
            "/_sandbox/conversations",
            get(super::seeding::conversations),
        )
        .route("/_sandbox/revoke", post(revoke))
        .route("/_sandbox/restore", post(restore))
        .route("/_sandbox/seed", post(super::seeding::seed))
        .route("/_sandbox/hold", post(hold))
        .route("/_sandbox/release", post(release))
        .route("/_sandbox/redirected", any(redirected))
        .route("/_sandbox/lookups/fail", post(fail_lookups))
        .route("/_sandbox/lookups/heal", post(heal_lookups))
        .route("/_sandbox/lookups/miss", post(miss_lookups))
        .route("/_sandbox/forbid", post(forbid))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.stats()).into_response()
}

async fn messages(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.messages()).into_response()
}

/// `?status=408`: lookups time out instead of answering 503.
#[derive(Deserialize)]
struct FailLookups {
    status: Option<u16>,
}

async fn fail_lookups(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<FailLookups>,
) -> StatusCode {
    match query.status {
        None | Some(503) => shared.set_lookups_failing(Some(503)),
        Some(408) => shared.set_lookups_failing(Some(408)),
        Some(_) => return StatusCode::BAD_REQUEST,
    }
    StatusCode::NO_CONTENT
}

async fn heal_lookups(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_lookups_failing(None);
    shared.set_miss_shape(None);
    StatusCode::NO_CONTENT
}

/// `?data=null|object|list`: the `data` of a lookup miss answered 200.
#[derive(Deserialize)]
struct MissLookups {
    data: String,
}

async fn miss_lookups(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<MissLookups>,
) -> StatusCode {
    let shape = match query.data.as_str() {
        "list" => MissShape::EmptyList,
        "null" => MissShape::Null,
        "object" => MissShape::EmptyObject,
        _ => return StatusCode::BAD_REQUEST,
    };
    shared.set_miss_shape(Some(shape));
    StatusCode::NO_CONTENT
}

async fn forbid(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_creates_forbidden(true);
    StatusCode::NO_CONTENT
}

async fn revoke(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_admin_revoked(true);
    StatusCode::NO_CONTENT
}

async fn restore(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_admin_revoked(false);
    shared.set_creates_forbidden(false);
    StatusCode::NO_CONTENT
}

/// `?after=N`: let N more `/v1` requests through first.
#[derive(Deserialize)]
struct HoldAfter {
    after: Option<u64>,
}

async fn hold(State(shared): State<Arc<Shared>>, Query(query): Query<HoldAfter>) -> StatusCode {
    match query.after {
        Some(passes) => shared.hold_after(passes),
        None => shared.set_hold(true),
    }
    StatusCode::NO_CONTENT
}

async fn release(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.set_hold(false);
    StatusCode::NO_CONTENT
}

/// Counts a followed redirect; answers 204 to any method.
async fn redirected(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.count_redirect_hit();
    StatusCode::NO_CONTENT
}
