//! The customer and conversation routes the resolve phase uses (`shared/kustomer-api.md`,
//! "Customers and conversations"): lookups by externalId and email, and single creates. Same
//! exchange, throttle, bounded reading and error classification as messages; "not found" is
//! read leniently (404, or 200 with `data` empty or null), and a 404 is kept apart from an empty
//! 200 because only the latter proves the route exists.

use percent_encoding::utf8_percent_encode;
use reqwest::StatusCode;
use serde_json::Value;

use super::{ApiClient, ApiError, Timing, PATH_SEGMENT};

/// What a lookup of a customer or conversation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityLookup<T> {
    /// 200 with `data` empty or null: the route works and knows no such record.
    Empty,
    /// 404: no such record, or no such route (the two look alike).
    Missing,
    Found(T),
}

impl<T> EntityLookup<T> {
    pub fn found(self) -> Option<T> {
        match self {
            EntityLookup::Found(found) => Some(found),
            _ => None,
        }
    }
}

/// A customer as an answer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCustomer {
    pub id: String,
    pub external_id: Option<String>,
    /// `attributes.emails[].email`, as answered.
    pub emails: Vec<String>,
}

/// A conversation as an answer names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundConversation {
    pub id: String,
    pub external_id: Option<String>,
    /// `relationships.customer.data.id` (or `attributes.customer`).
    pub customer_id: Option<String>,
}

impl ApiClient {
    /// `GET /v1/customers/externalId={externalId}`.
    pub async fn find_customer_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<EntityLookup<FoundCustomer>, ApiError> {
        let path = format!(
            "/v1/customers/externalId={}",
            utf8_percent_encode(external_id, PATH_SEGMENT)
        );
        self.lookup_entity(&path, "customer", read_customer).await
    }

    /// `GET /v1/customers/email={email}`. Whether the API compares emails case-insensitively is
    /// unverified: the caller sends the email in lower case and checks the answer itself.
    pub async fn find_customer_by_email(
        &self,
        email: &str,
    ) -> Result<EntityLookup<FoundCustomer>, ApiError> {
        let path = format!(
            "/v1/customers/email={}",
            utf8_percent_encode(email, PATH_SEGMENT)
        );
        self.lookup_entity(&path, "customer", read_customer).await
    }

    /// `GET /v1/conversations/externalId={externalId}`, with the conversation's customer.
    pub async fn find_conversation_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<EntityLookup<FoundConversation>, ApiError> {
        let path = format!(
            "/v1/conversations/externalId={}",
            utf8_percent_encode(external_id, PATH_SEGMENT)
        );
        self.lookup_entity(&path, "conversation", read_conversation)
            .await
    }

    /// `POST /v1/customers`: the new customer's id. Any 2xx naming an id is a success; one that
    /// names none is unreadable (the customer may exist all the same).
    pub async fn create_customer(&self, body: &str) -> (Result<String, ApiError>, Timing) {
        self.create_entity("/v1/customers", body, "created customer")
            .await
    }

    /// `POST /v1/conversations`: the new conversation's id.
    pub async fn create_conversation(&self, body: &str) -> (Result<String, ApiError>, Timing) {
        self.create_entity("/v1/conversations", body, "created conversation")
            .await
    }

    async fn create_entity(
        &self,
        path: &str,
        body: &str,
        what: &str,
    ) -> (Result<String, ApiError>, Timing) {
        let (answer, timing) = self.exchange(self.post_json(path, body)).await;
        let result = answer.and_then(|answer| {
            let (status, json) = answer.into_json(what)?;
            entity_id(&json["data"])
                .map(str::to_string)
                .ok_or(ApiError::Protocol {
                    status,
                    detail: format!("no data.id in the {what}"),
                })
        });
        (result, timing)
    }

    async fn lookup_entity<T>(
        &self,
        path: &str,
        what: &str,
        read: fn(&Value) -> Option<T>,
    ) -> Result<EntityLookup<T>, ApiError> {
        let answer = self.exchange(self.get(path)).await.0?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(EntityLookup::Missing);
        }
        let (status, json) = answer.into_json(&format!("{what} lookup"))?;
        read_entity_lookup(&json, read).map_err(|detail| ApiError::Protocol {
            status,
            detail: format!("{what} lookup: {detail}"),
        })
    }
}

fn entity_id(data: &Value) -> Option<&str> {
    data["id"].as_str().filter(|id| !id.is_empty())
}

/// A 200 lookup answer: `data` one record, a list (the first readable one), or nothing.
fn read_entity_lookup<T>(
    json: &Value,
    read: fn(&Value) -> Option<T>,
) -> Result<EntityLookup<T>, &'static str> {
    let items: Vec<&Value> = match &json["data"] {
        Value::Null => return Ok(EntityLookup::Empty),
        Value::Array(items) if items.is_empty() => return Ok(EntityLookup::Empty),
        Value::Object(object) if object.is_empty() => return Ok(EntityLookup::Empty),
        Value::Array(items) => items.iter().collect(),
        object @ Value::Object(_) => vec![object],
        _ => return Err("`data` is neither a record nor a list"),
    };
    items
        .into_iter()
        .find_map(read)
        .map(EntityLookup::Found)
        .ok_or("records without an id")
}

fn read_customer(data: &Value) -> Option<FoundCustomer> {
    let id = entity_id(data)?;
    let attributes = &data["attributes"];
    let emails = attributes["emails"]
        .as_array()
        .map(|emails| {
            emails
                .iter()
                .filter_map(|entry| entry["email"].as_str().or_else(|| entry.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some(FoundCustomer {
        id: id.to_string(),
        external_id: attributes["externalId"].as_str().map(str::to_string),
        emails,
    })
}

fn read_conversation(data: &Value) -> Option<FoundConversation> {
    let id = entity_id(data)?;
    let customer = data["relationships"]["customer"]["data"]["id"]
        .as_str()
        .or_else(|| data["attributes"]["customer"].as_str())
        .filter(|id| !id.is_empty());
    Some(FoundConversation {
        id: id.to_string(),
        external_id: data["attributes"]["externalId"]
            .as_str()
            .map(str::to_string),
        customer_id: customer.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_customer_lookup_reads_the_documented_record() {
        let answer = json(
            r#"{"data":{"type":"customer","id":"5f3c9a7e1b2d4c0000000001",
                "attributes":{"externalId":"cust-1","name":"Ann",
                  "emails":[{"type":"home","email":"Ann@Example.com"}]}}}"#,
        );
        assert_eq!(
            read_entity_lookup(&answer, read_customer),
            Ok(EntityLookup::Found(FoundCustomer {
                id: "5f3c9a7e1b2d4c0000000001".into(),
                external_id: Some("cust-1".into()),
                emails: vec!["Ann@Example.com".into()],
            }))
        );
    }

    #[test]
    fn not_found_is_read_leniently_and_garbage_is_refused() {
        for empty in [r#"{"data":null}"#, r#"{"data":[]}"#, r#"{"data":{}}"#, "{}"] {
            assert_eq!(
                read_entity_lookup(&json(empty), read_customer),
                Ok(EntityLookup::Empty),
                "{empty}"
            );
        }
        assert!(read_entity_lookup(&json(r#"{"data":"x"}"#), read_customer).is_err());
        assert!(
            read_entity_lookup(&json(r#"{"data":[{"type":"customer"}]}"#), read_customer).is_err()
        );
    }

    #[test]
    fn a_conversation_lookup_names_its_customer() {
        let answer = json(
            r#"{"data":{"type":"conversation","id":"5f3c9a7e1b2d4c0000000002",
                "attributes":{"externalId":"t-1","name":"Refund"},
                "relationships":{"customer":{"data":{"type":"customer","id":"5f3c9a7e1b2d4c0000000001"}}}}}"#,
        );
        assert_eq!(
            read_entity_lookup(&answer, read_conversation),
            Ok(EntityLookup::Found(FoundConversation {
                id: "5f3c9a7e1b2d4c0000000002".into(),
                external_id: Some("t-1".into()),
                customer_id: Some("5f3c9a7e1b2d4c0000000001".into()),
            }))
        );
        let list = json(r#"{"data":[{"id":"c2","attributes":{"customer":"k9"}}]}"#);
        let found = read_entity_lookup(&list, read_conversation)
            .unwrap()
            .found()
            .unwrap();
        assert_eq!(found.customer_id.as_deref(), Some("k9"));
    }

    #[test]
    fn a_create_answer_names_the_new_id() {
        let created =
            json(r#"{"data":{"type":"customer","id":"5f3c9a7e1b2d4c0000000003","attributes":{}}}"#);
        assert_eq!(
            entity_id(&created["data"]),
            Some("5f3c9a7e1b2d4c0000000003")
        );
        assert_eq!(entity_id(&json(r#"{"data":{"id":""}}"#)["data"]), None);
    }
}
