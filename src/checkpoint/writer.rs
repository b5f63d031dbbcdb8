//! The send phase's single writer: one thread, one connection, grouped commits.
//!
//! Workers ask for a row to be marked `sending` and wait until that is durable; results are
//! queued and become durable with the next commit. Because the writer applies commands in the
//! order it receives them, a durable `sending` mark implies every earlier result is durable too.

use super::{CheckpointError, RowState};

/// The recorded outcome of a row's send.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    /// Succeeded, Failed, or Pending (sent back, e.g. on 401 or after reconciliation).
    pub state: RowState,
    pub message_id: Option<String>,
    pub http_status: Option<u16>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// For failed rows: a retry might succeed.
    pub retryable: bool,
    /// Duration of the last attempt in milliseconds.
    pub latency_ms: Option<u64>,
    /// When the result was known, ms since the Unix epoch.
    pub at_ms: i64,
}

pub struct WriterHandle {}

impl WriterHandle {
    /// Marks a row `sending`, counts an attempt, and returns once that is durable.
    pub async fn mark_sending(&self, line: u64, at_ms: i64) -> Result<(), CheckpointError> {
        let _ = (line, at_ms);
        todo!()
    }

    /// Queues a row's result; it is durable after the next commit.
    pub fn record(&self, line: u64, result: RowResult) -> Result<(), CheckpointError> {
        let _ = (line, result);
        todo!()
    }

    /// Commits everything queued so far.
    pub async fn flush(&self) -> Result<(), CheckpointError> {
        todo!()
    }

    /// Commits what is queued and stops the thread.
    pub fn close(self) -> Result<(), CheckpointError> {
        todo!()
    }
}
