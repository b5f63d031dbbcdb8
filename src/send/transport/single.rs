//! One create per message: the row is durably `sending`, then `POST
//! /v1/conversations/{id}/messages`; the answer carries the stored message, so every created
//! message's audit fields can be checked.

use std::sync::Arc;

use crate::checkpoint::{now_ms, CheckpointError};
use crate::client::ApiClient;
use crate::plan::DEFAULT_JOB_SECONDS;

use super::super::control::Control;
use super::super::ledger::Ledger;
use super::bulk::{Jobs, Pace};
use super::{create_error, Created, Head, Parts, Sent, SettleRule};

/// Single creates, as the single transport sends every row and the bulk transport the rows that
/// go alone.
#[derive(Clone)]
pub struct Creates {
    client: Arc<ApiClient>,
    ledger: Arc<Ledger>,
    control: Arc<Control>,
    settle: SettleRule,
}

impl Creates {
    pub fn new(parts: &Parts, settle: SettleRule) -> Creates {
        Creates {
            client: Arc::clone(&parts.client),
            ledger: Arc::clone(&parts.ledger),
            control: Arc::clone(&parts.control),
            settle,
        }
    }

    pub async fn create(&self, head: &Head<'_>) -> Result<Sent, CheckpointError> {
        self.ledger
            .writer()
            .mark_sending(head.line, now_ms())
            .await?;
        let (result, timing) = self
            .client
            .create_message(head.conversation_id, head.body)
            .await;
        self.control.observe(&result);
        Ok(match result {
            Ok(created) => Sent::Created(Created {
                message_id: created.id.clone(),
                http_status: Some(201),
                timing,
                stored: Some(created),
            }),
            Err(error) => create_error(error, timing, &self.settle),
        })
    }
}

/// The single transport: every row alone.
pub struct Single {
    creates: Creates,
    /// Reads the jobs a dead bulk run left rows in (it sends none).
    jobs: Jobs,
}

impl Single {
    pub fn new(parts: Parts) -> Single {
        // A row of a bulk job whose id never came back may belong to a job still running: until
        // a job is measured, it is taken to last as long as `plan` assumes.
        let settle = SettleRule {
            settle_delay: parts.settle_delay,
            assumed_job: std::time::Duration::from_secs_f64(DEFAULT_JOB_SECONDS),
        };
        let creates = Creates::new(&parts, settle);
        let jobs = Jobs::new(parts, creates.clone(), settle, Pace::reading_only());
        Single { creates, jobs }
    }

    pub async fn create(&self, head: &Head<'_>) -> Result<Sent, CheckpointError> {
        self.creates.create(head).await
    }

    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }
}
