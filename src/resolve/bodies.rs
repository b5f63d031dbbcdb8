//! The bodies of `POST /v1/customers` and `POST /v1/conversations`, built from the checkpoint's
//! records: `externalId` is the source key (so a lookup finds what a lost answer created), and
//! `importedAt` is the job's.

use serde_json::{json, Map, Value};

use super::ResolvePlan;
use crate::checkpoint::TicketRecord;
use crate::row::CustomerRef;

pub(super) fn customer(customer: &CustomerRef, plan: &ResolvePlan) -> String {
    Value::Object(customer_fields(customer, plan)).to_string()
}

pub(super) fn conversation(ticket: &TicketRecord, customer_id: &str, plan: &ResolvePlan) -> String {
    Value::Object(conversation_fields(ticket, customer_id, plan)).to_string()
}

/// One item of a bulk job: the single create's body with its `_clientRef`.
pub(super) fn bulk_item(mut fields: Map<String, Value>, client_ref: &str) -> Value {
    fields.insert("_clientRef".into(), json!(client_ref));
    Value::Object(fields)
}

pub(super) fn customer_fields(customer: &CustomerRef, plan: &ResolvePlan) -> Map<String, Value> {
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
    body
}

pub(super) fn conversation_fields(
    ticket: &TicketRecord,
    customer_id: &str,
    plan: &ResolvePlan,
) -> Map<String, Value> {
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
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::EntityState;

    fn plan(audit_fields: bool) -> ResolvePlan {
        ResolvePlan {
            checkpoint: "cp.db".into(),
            workers: 1,
            retry: crate::retry::RetryPolicy::default(),
            settle_delay: std::time::Duration::ZERO,
            request_timeout: std::time::Duration::ZERO,
            unreachable_after: std::time::Duration::ZERO,
            imported_at: "2024-05-01T12:00:00.000Z".into(),
            audit_fields,
            bulk_items: None,
            assumed_job: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn bodies_carry_the_source_keys_and_the_job_stamp() {
        let customer = CustomerRef {
            external_id: Some("zd-user-1".into()),
            email: Some("Ann@Example.com".into()),
            name: Some("Ann".into()),
            phone: None,
        };
        assert_eq!(
            super::customer(&customer, &plan(true)),
            r#"{"externalId":"zd-user-1","name":"Ann","emails":[{"type":"other","email":"Ann@Example.com"}],"importedAt":"2024-05-01T12:00:00.000Z"}"#
        );
        let ticket = TicketRecord {
            key: "zd-1".into(),
            customer_key: "externalId:zd-user-1".into(),
            name: Some("Refund".into()),
            status: Some("done".into()),
            tags: vec!["vip".into()],
            created_at: Some("2021-03-04T10:00:00.000Z".into()),
            kustomer_id: None,
            state: EntityState::Pending,
            last_attempt_ms: None,
        };
        assert_eq!(
            super::conversation(&ticket, "5f3c9a7e1b2d4c0000000001", &plan(true)),
            r#"{"customer":"5f3c9a7e1b2d4c0000000001","externalId":"zd-1","name":"Refund","status":"done","tags":["vip"],"createdAt":"2021-03-04T10:00:00.000Z","importedAt":"2024-05-01T12:00:00.000Z"}"#
        );
        assert!(!super::conversation(&ticket, "k", &plan(false)).contains("createdAt"));
    }
}
