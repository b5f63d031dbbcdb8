//! One ticket's way through the phase: its conversation looked up, used or created, its
//! customer found or created first, and how each ended recorded in the checkpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{
    bodies, Halt, Route, Shared, CONVERSATION_OF_ANOTHER_CUSTOMER, CONVERSATION_UNRESOLVED,
};
use crate::checkpoint::{now_ms, CustomerRecord, Entity, EntityState, ResolvedBy, TicketRecord};
use crate::client::{ApiError, EntityLookup, FoundConversation};
use crate::send::SendStop;

/// Works one ticket to its end: resolved, failed (its rows with it), or stopped with the run.
pub(super) async fn resolve_ticket(shared: &Shared, ticket: TicketRecord) {
    let result = resolve_conversation(shared, &ticket).await;
    finish_ticket(shared, &ticket.key, result);
}

/// Records how a ticket ended: its conversation and how it was resolved, or why not.
pub(super) fn finish_ticket(
    shared: &Shared,
    key: &str,
    result: Result<(String, ResolvedBy), Halt>,
) {
    match result {
        Ok((id, how)) => {
            let recorded =
                shared.write(|cp| cp.entity_resolved(Entity::Conversation, key, &id, how));
            if let Err(halt) = recorded {
                stop_or_fail(shared, key, halt);
                return;
            }
            shared.counters.tickets.fetch_add(1, Ordering::Relaxed);
            let counter = match how {
                ResolvedBy::Created => &shared.counters.conversations_created,
                _ => &shared.counters.conversations_found,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(halt) => stop_or_fail(shared, key, halt),
    }
}

pub(super) fn stop_or_fail(shared: &Shared, key: &str, halt: Halt) {
    match halt {
        Halt::Stop(stop) => shared.halt(stop),
        Halt::Fail {
            code,
            message,
            retryable,
        } => {
            shared.counters.failed.fetch_add(1, Ordering::Relaxed);
            let code = if code == CONVERSATION_OF_ANOTHER_CUSTOMER {
                code
            } else {
                CONVERSATION_UNRESOLVED.to_string()
            };
            let message = crate::client::truncate(
                &format!("ticket {key:?} could not be resolved: {message}"),
                crate::client::MAX_QUOTED_ERROR_CHARS,
            );
            if let Err(Halt::Stop(stop)) = shared
                .write(|cp| cp.entity_failed(Entity::Conversation, key, &code, &message, retryable))
            {
                shared.halt(stop);
            }
        }
    }
}

async fn resolve_conversation(
    shared: &Shared,
    ticket: &TicketRecord,
) -> Result<(String, ResolvedBy), Halt> {
    let route = Route::ConversationByExternalId;
    let find = || shared.client.find_conversation_by_external_id(&ticket.key);
    // A create an earlier run may have sent: wait until it would have landed, then look.
    if ticket.state == EntityState::Sending {
        shared
            .pause(wait_after(shared, ticket.last_attempt_ms))
            .await?;
    }
    let existing = shared.lookup(route, find).await?;
    if let EntityLookup::Found(found) = existing {
        return use_found(shared, ticket, found).await;
    }
    // An earlier create may have stored it: "not found" must come from a proven route.
    if ticket.last_attempt_ms.is_some() && matches!(existing, EntityLookup::Missing) {
        let cause = ApiError::NotSent;
        shared
            .believe_not_found(Entity::Conversation, route, &cause)
            .await?;
    }
    let customer = resolve_customer(shared, &ticket.customer_key, true)
        .await?
        .ok_or_else(|| Halt::Fail {
            code: CONVERSATION_UNRESOLVED.into(),
            message: "its customer could not be resolved".into(),
            retryable: true,
        })?;
    let body = bodies::conversation(ticket, &customer, &shared.plan);
    let id = shared
        .create_once(
            Entity::Conversation,
            &ticket.key,
            route,
            || async { shared.client.create_conversation(&body).await.0 },
            || async {
                let found = shared.lookup(route, find).await?.found();
                match found {
                    Some(found) if found.customer_id.as_deref() == Some(customer.as_str()) => {
                        Ok(Some(found.id))
                    }
                    Some(found) => Err(Halt::Fail {
                        code: CONVERSATION_OF_ANOTHER_CUSTOMER.into(),
                        message: format!(
                            "after an unknown outcome, the conversation found by externalId ({}) \
                             belongs to another customer",
                            found.id
                        ),
                        retryable: false,
                    }),
                    None => Ok(None),
                }
            },
        )
        .await?;
    Ok((id, ResolvedBy::Created))
}

/// A conversation found by the ticket's externalId: ours if this job created it (the customer
/// is then ours too), else its customer must be the one the rows name.
pub(super) async fn use_found(
    shared: &Shared,
    ticket: &TicketRecord,
    found: FoundConversation,
) -> Result<(String, ResolvedBy), Halt> {
    let customer = resolve_customer(shared, &ticket.customer_key, false).await?;
    match (found.customer_id.as_deref(), customer.as_deref()) {
        (Some(owner), Some(ours)) if owner == ours => Ok((
            found.id,
            if ticket.last_attempt_ms.is_some() {
                ResolvedBy::Created
            } else {
                ResolvedBy::FoundByExternalId
            },
        )),
        (owner, ours) => {
            Err(Halt::Fail {
                code: CONVERSATION_OF_ANOTHER_CUSTOMER.into(),
                message: format!(
                "Kustomer already has conversation {} with this externalId, and it belongs to {}, \
                 not to the customer the rows name ({}); nothing is posted into it",
                found.id,
                owner.map_or("an unnamed customer".to_string(), |id| format!("customer {id}")),
                ours.map_or("not in Kustomer".to_string(), |id| format!("customer {id}")),
            ),
                retryable: false,
            })
        }
    }
}

/// How long to wait before looking up a create an earlier run left `sending`.
fn wait_after(shared: &Shared, last_attempt_ms: Option<i64>) -> Duration {
    let since = last_attempt_ms
        .map(|at| u64::try_from(now_ms().saturating_sub(at)).unwrap_or(0))
        .map(Duration::from_millis)
        .unwrap_or_default();
    (shared.plan.request_timeout + shared.plan.settle_delay).saturating_sub(since)
}

/// The customer's Kustomer id: as recorded, else found (externalId, then email), else created
/// when `may_create`. `None`: not in Kustomer and not created.
pub(super) async fn resolve_customer(
    shared: &Shared,
    key: &str,
    may_create: bool,
) -> Result<Option<String>, Halt> {
    let record = read_customer_record(shared, key)?;
    // Customers sharing an email are worked one after the other, so that one created for a
    // ticket is found by email for the next instead of being created twice.
    let lock_key = record.customer.email.as_ref().map_or_else(
        || key.to_string(),
        |email| format!("email:{}", email.to_lowercase()),
    );
    let lock = {
        let mut customers = shared.customers.lock().map_err(|_| {
            Halt::Stop(SendStop::Refused(
                "the resolve phase's customer locks were poisoned".into(),
            ))
        })?;
        Arc::clone(customers.entry(lock_key).or_default())
    };
    let _turn = lock.lock().await;
    let record = read_customer_record(shared, key)?;
    if let (EntityState::Resolved, Some(id)) = (record.state, &record.kustomer_id) {
        return Ok(Some(id.clone()));
    }
    if record.state == EntityState::Sending {
        shared
            .pause(wait_after(shared, record.last_attempt_ms))
            .await?;
    }
    let outcome = find_customer(shared, &record).await;
    let found = match outcome {
        Ok(found) => found,
        Err(halt) => return Err(customer_failed(shared, key, halt)),
    };
    if let Some((id, how)) = found {
        let how = if record.last_attempt_ms.is_some() {
            ResolvedBy::Created
        } else {
            how
        };
        shared.write(|cp| cp.entity_resolved(Entity::Customer, key, &id, how))?;
        let counter = match how {
            ResolvedBy::Created => &shared.counters.customers_created,
            _ => &shared.counters.customers_found,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return Ok(Some(id));
    }
    if !may_create {
        return Ok(None);
    }
    let route = customer_route(&record);
    if record.last_attempt_ms.is_some() {
        let cause = ApiError::NotSent;
        if let Err(halt) = shared
            .believe_not_found(Entity::Customer, route, &cause)
            .await
        {
            return Err(customer_failed(shared, key, halt));
        }
    }
    let body = bodies::customer(&record.customer, &shared.plan);
    let created = shared
        .create_once(
            Entity::Customer,
            key,
            route,
            || async { shared.client.create_customer(&body).await.0 },
            || async { Ok(find_customer(shared, &record).await?.map(|(id, _)| id)) },
        )
        .await;
    match created {
        Ok(id) => {
            shared
                .write(|cp| cp.entity_resolved(Entity::Customer, key, &id, ResolvedBy::Created))?;
            shared
                .counters
                .customers_created
                .fetch_add(1, Ordering::Relaxed);
            Ok(Some(id))
        }
        Err(halt) => Err(customer_failed(shared, key, halt)),
    }
}

fn read_customer_record(shared: &Shared, key: &str) -> Result<CustomerRecord, Halt> {
    shared
        .write(|cp| cp.customer_record(key))?
        .ok_or_else(|| Halt::Fail {
            code: CONVERSATION_UNRESOLVED.into(),
            message: format!("customer {key:?} is not recorded in the checkpoint"),
            retryable: false,
        })
}

/// Records a customer's failure (a stop passes through) and says why for its ticket.
pub(super) fn customer_failed(shared: &Shared, key: &str, halt: Halt) -> Halt {
    match halt {
        Halt::Fail {
            code,
            message,
            retryable,
        } => {
            let message = format!("customer {key:?}: {message}");
            if let Err(stop) = shared
                .write(|cp| cp.entity_failed(Entity::Customer, key, &code, &message, retryable))
            {
                return stop;
            }
            Halt::Fail {
                code,
                message,
                retryable,
            }
        }
        stop => stop,
    }
}

fn customer_route(record: &CustomerRecord) -> Route {
    if record.customer.external_id.is_some() {
        Route::CustomerByExternalId
    } else {
        Route::CustomerByEmail
    }
}

/// Finds a customer by externalId, then by email (compared case-insensitively: the answer must
/// carry the email, or carry no emails at all).
pub(super) async fn find_customer(
    shared: &Shared,
    record: &CustomerRecord,
) -> Result<Option<(String, ResolvedBy)>, Halt> {
    if let Some(external_id) = &record.customer.external_id {
        let found = shared
            .lookup(Route::CustomerByExternalId, || {
                shared.client.find_customer_by_external_id(external_id)
            })
            .await?
            .found();
        if let Some(found) = found {
            if found
                .external_id
                .as_deref()
                .is_none_or(|id| id == external_id)
            {
                return Ok(Some((found.id, ResolvedBy::FoundByExternalId)));
            }
        }
    }
    if let Some(email) = &record.customer.email {
        let wanted = email.to_lowercase();
        let found = shared
            .lookup(Route::CustomerByEmail, || {
                shared.client.find_customer_by_email(&wanted)
            })
            .await?
            .found();
        if let Some(found) = found {
            let same =
                found.emails.is_empty() || found.emails.iter().any(|e| e.to_lowercase() == wanted);
            if same {
                return Ok(Some((found.id, ResolvedBy::FoundByEmail)));
            }
        }
    }
    Ok(None)
}
