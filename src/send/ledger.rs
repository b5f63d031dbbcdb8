//! The ledger: where every row's fate is written (the checkpoint writer), counted
//! ([`SendStats`]) and held against the error budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::checkpoint::{CheckpointError, RowResult, RowState, WriterHandle};

use super::control::{Control, Halt};
use super::stats::SendStats;

pub struct Ledger {
    writer: WriterHandle,
    stats: Arc<SendStats>,
    failed_rows: AtomicU64,
    max_failed_rows: u64,
    /// Told when the error budget is spent.
    control: Arc<Control>,
}

impl Ledger {
    pub fn new(
        writer: WriterHandle,
        stats: Arc<SendStats>,
        max_failed_rows: u64,
        control: Arc<Control>,
    ) -> Ledger {
        Ledger {
            writer,
            stats,
            failed_rows: AtomicU64::new(0),
            max_failed_rows,
            control,
        }
    }

    /// Records a row's result, counts it, and stops the run once more rows failed than allowed.
    pub fn record(&self, line: u64, result: RowResult) -> Result<(), CheckpointError> {
        let failed = result.state == RowState::Failed;
        self.stats.record(result.state);
        self.writer.record(line, result)?;
        if failed {
            let failed = self.failed_rows.fetch_add(1, Ordering::Relaxed) + 1;
            if failed > self.max_failed_rows {
                self.control.halt(Halt::ErrorBudget {
                    failed,
                    allowed: self.max_failed_rows,
                });
            }
        }
        Ok(())
    }

    /// The checkpoint writer, for `sending` marks and bulk job ids.
    pub fn writer(&self) -> &WriterHandle {
        &self.writer
    }

    pub fn stats(&self) -> &SendStats {
        &self.stats
    }

    /// Commits what is queued and stops the writer.
    pub fn close(self) -> Result<(), CheckpointError> {
        self.writer.close()
    }
}
