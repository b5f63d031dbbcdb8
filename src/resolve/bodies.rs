//! The bodies of `POST /v1/customers` and `POST /v1/conversations`, built from the checkpoint's
//! records: `externalId` is the source key (so a lookup finds what a lost answer created), and
//! `importedAt` is the job's.

use serde_json::{json, Map, Value};

use super::ResolvePlan;
use crate::checkpoint::TicketRecord;
use crate::row::CustomerRef;

pub(super) fn customer(customer: &CustomerRef, plan: &ResolvePlan) -> String {
    let mut body = Map::new();
    if let Some(id) = &customer.external_id {
        body.insert("externalId".into(), json!(id));
    }
    if let Some(name) = &customer.name {
        body.insert("name".into(), json!(name));
    }
    if let Some(email) = &customer.email {
        body.insert("emails".into(), json!([{"type": "other", "email": email}]));
    }
    if let Some(phone) = &customer.phone {
        body.insert("phones".into(), json!([{"type": "other", "phone": phone}]));
    }
    body.insert("importedAt".into(), json!(plan.imported_at));
    Value::Object(body).to_string()
}

pub(super) fn conversation(ticket: &TicketRecord, customer_id: &str, plan: &ResolvePlan) -> String {
    let mut body = Map::new();
    body.insert("customer".into(), json!(customer_id));
    body.insert("externalId".into(), json!(ticket.key));
    if let Some(name) = &ticket.name {
        body.insert("name".into(), json!(name));
    }
    if let Some(status) = &ticket.status {
        body.insert("status".into(), json!(status));
    }
    if !ticket.tags.is_empty() {
        body.insert("tags".into(), json!(ticket.tags));
    }
    if plan.audit_fields {
        if let Some(created_at) = &ticket.created_at {
            body.insert("createdAt".into(), json!(created_at));
        }
    }
    body.insert("importedAt".into(), json!(plan.imported_at));
    Value::Object(body).to_string()
}
