//! `POST /v1/customers` and the customer lookups (`externalId=`, `email=`, by id), plus the
//! lookup rules every customer and conversation lookup shares. Routes and answers are those of
//! `shared/kustomer-api.md` ("Customers and conversations") and the OpenAPI file's examples.
//!
//! A route module: imports `http`, `creates`, the state, `directory`, `validate`; never the router,
//! `admin` or another route module.

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};

use super::creates::{create_record, CreateSpec, NewRecord, RecordKind, Refused};
use super::directory::{CreateKind, HitMiss, KindLookupCounts, StoredRecord};
use super::http::{api_error, forbidden, rate_limited, Caller};
use super::state::{KeyProfile, Shared, ORG_ID, ROLE_CUSTOMER_CREATE, ROLE_CUSTOMER_READ};
use super::validate::{format_timestamp, BodyValidator};

pub(crate) const CUSTOMERS_ROUTE: &str = "/v1/customers";

static VALIDATOR: LazyLock<BodyValidator> = LazyLock::new(BodyValidator::customers);

static CREATE: CreateSpec = CreateSpec {
    kind: CreateKind::Customer,
    role: ROLE_CUSTOMER_CREATE,
    validator: &VALIDATOR,
    prepare: prepare_customer,
    render: customer_document,
};

/// `POST /v1/customers`, served by [`create_record`].
pub(crate) struct Customers;

impl RecordKind for Customers {
    fn spec() -> &'static CreateSpec {
        &CREATE
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(CUSTOMERS_ROUTE, post(create_record::<Customers>))
        .route("/v1/customers/{spec}", get(lookup_customer))
}

/// What Kustomer adds to a created customer: display name, verification flags and null ids on
/// emails and phones, the externalId mirrored in `externalIds`, empty collections, timestamps.
fn prepare_customer(
    _shared: &Shared,
    key: &KeyProfile,
    mut attributes: Map<String, Value>,
) -> Result<NewRecord, Refused> {
    let now = format_timestamp(jiff::Timestamp::now());
    for contacts in ["emails", "phones"] {
        if let Some(Value::Array(entries)) = attributes.get_mut(contacts) {
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                entry.entry("verified").or_insert(Value::Bool(false));
                entry.entry("type").or_insert_with(|| "other".into());
                entry.entry("id").or_insert(Value::Null);
            }
        }
    }
    let display_name = attributes
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| first_email(&attributes));
    if let Some(name) = display_name {
        attributes.entry("displayName").or_insert(name.into());
    }
    if let Some(external_id) = attributes.get("externalId").and_then(Value::as_str) {
        let mirrored = json!([{"externalId": external_id, "verified": true, "id": null}]);
        attributes.entry("externalIds").or_insert(mirrored);
    }
    for empty in [
        "externalIds",
        "sharedExternalIds",
        "emails",
        "sharedEmails",
        "phones",
        "sharedPhones",
        "socials",
        "sharedSocials",
        "urls",
        "locations",
        "tags",
    ] {
        attributes.entry(empty).or_insert_with(|| json!([]));
    }
    attributes
        .entry("createdAt")
        .or_insert_with(|| now.clone().into());
    attributes.insert("updatedAt".into(), now.clone().into());
    attributes.insert("modifiedAt".into(), now.into());
    attributes.insert(
        "conversationCounts".into(),
        json!({"all": 0, "snoozed": 0, "open": 0, "done": 0}),
    );
    attributes.insert("verified".into(), Value::Bool(false));
    attributes.insert("rev".into(), Value::from(1));
    Ok(NewRecord {
        customer_id: None,
        created_by: key.user_id.to_owned(),
        modified_by: key.user_id.to_owned(),
        attributes,
    })
}

fn first_email(attributes: &Map<String, Value>) -> Option<String> {
    attributes
        .get("emails")?
        .as_array()?
        .first()?
        .get("email")?
        .as_str()
        .map(str::to_owned)
}

/// `{"links":{"self"},"data":{"type","id"}}`, as the spec's examples write relationships.
pub(crate) fn relationship(kind: &str, collection: &str, id: &str) -> Value {
    json!({"links": {"self": format!("/v1/{collection}/{id}")}, "data": {"type": kind, "id": id}})
}

/// The JSON:API document of one customer, shaped like the spec's example.
pub(crate) fn customer_document(customer: &StoredRecord) -> Value {
    let id = &customer.id;
    json!({"data": {
        "type": "customer",
        "id": id,
        "attributes": customer.attributes,
        "relationships": {
            "org": relationship("org", "orgs", ORG_ID),
            "messages": {"links": {"self": format!("/v1/customers/{id}/messages")}},
            "createdBy": relationship("user", "users", &customer.created_by),
            "modifiedBy": relationship("user", "users", &customer.modified_by),
        },
        "links": {"self": format!("/v1/customers/{id}")},
    }})
}

/// The read path's faults, shared by every customer and conversation lookup and the messages
/// listing: 503 while lookups fail, then the `lookup_429` dice. Counted for `kind`.
pub(crate) fn lookup_fault(shared: &Shared, kind: CreateKind) -> Option<Response> {
    match shared.lookup_fails() {
        None => {}
        Some(408) => {
            return Some(api_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Lookups are timing out (POST /_sandbox/lookups/fail?status=408)",
            ));
        }
        Some(_) => {
            shared.with_kind_counts(kind, |counts| counts.lookups.lookup_503 += 1);
            return Some(api_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "Lookups are failing (POST /_sandbox/lookups/fail)",
            ));
        }
    }
    if shared.roll_lookup_429() {
        shared.with_kind_counts(kind, |counts| counts.lookups.lookup_429 += 1);
        return Some(rate_limited(shared, "Rate limit exceeded"));
    }
    None
}

/// 200 with the latest record's document (with `lookup_list`, `{"data": [..]}` with every
/// match, newest first), or a miss: 404, or 200 `{"data": []}` with `not_found_as_empty`.
/// `tally` picks the hit/miss counter to bump.
pub(crate) fn found_or_missing(
    shared: &Shared,
    kind: CreateKind,
    found: &[Arc<StoredRecord>],
    render: fn(&StoredRecord) -> Value,
    tally: fn(&mut KindLookupCounts) -> &mut HitMiss,
    missing: &str,
) -> Response {
    let Some(latest) = found.first() else {
        shared.with_kind_counts(kind, |counts| tally(&mut counts.lookups).miss += 1);
        if shared.config.not_found_as_empty {
            return (StatusCode::OK, Json(json!({"data": []}))).into_response();
        }
        return api_error(StatusCode::NOT_FOUND, "not_found", missing);
    };
    shared.with_kind_counts(kind, |counts| tally(&mut counts.lookups).hit += 1);
    if shared.config.lookup_list {
        let data: Vec<Value> = found
            .iter()
            .map(|record| render(record)["data"].take())
            .collect();
        return (StatusCode::OK, Json(json!({ "data": data }))).into_response();
    }
    (StatusCode::OK, Json(render(latest))).into_response()
}

/// `GET /v1/customers/externalId=<id>`, `GET /v1/customers/email=<email>` (case-insensitive)
/// and `GET /v1/customers/<id>`.
async fn lookup_customer(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(key)): Extension<Caller>,
    spec: Result<Path<String>, PathRejection>,
) -> Response {
    if !key.has_role(ROLE_CUSTOMER_READ) {
        return forbidden(ROLE_CUSTOMER_READ);
    }
    let Ok(Path(spec)) = spec else {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", "Malformed path");
    };
    let kind = CreateKind::Customer;
    if let Some(external_id) = spec.strip_prefix("externalId=") {
        if let Some(answer) = lookup_fault(&shared, kind) {
            return answer;
        }
        let found = shared
            .world()
            .directory
            .customers_by_external_id(external_id);
        return found_or_missing(
            &shared,
            kind,
            &found,
            customer_document,
            |lookups| &mut lookups.external_id,
            &format!("Customer with externalId {external_id} not found"),
        );
    }
    if let Some(email) = spec.strip_prefix("email=") {
        if let Some(answer) = lookup_fault(&shared, kind) {
            return answer;
        }
        let found = shared.world().directory.customers_by_email(email);
        return found_or_missing(
            &shared,
            kind,
            &found,
            customer_document,
            |lookups| &mut lookups.email,
            &format!("Customer with email {email} not found"),
        );
    }
    let found = shared.world().directory.customer(&spec);
    match found {
        Some(customer) => (StatusCode::OK, Json(customer_document(&customer))).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Customer {spec} not found"),
        ),
    }
}
