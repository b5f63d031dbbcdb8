//! One input record made ready to stage: a valid row, or why it is invalid. Shared by staging
//! (`pipeline::stage`) and `validate`, which then tell duplicates apart their own way (the
//! checkpoint's externalId index, or a map in memory). Uses `input`, `row` and the
//! checkpoint's staged-row type only; prints nothing.

use crate::checkpoint::StagedKind;
use crate::input::{Format, RawRecord};
use crate::row::{self, StampOptions, ValidationOptions};

/// Prepares the records of one input with one job's options.
pub struct RowPreparer<'a> {
    pub format: Format,
    pub validation: &'a ValidationOptions,
    pub stamp: &'a StampOptions,
}

impl RowPreparer<'_> {
    /// The record as a row to stage, or the reason it cannot be sent.
    pub fn kind(&self, record: &RawRecord) -> StagedKind {
        match &record.fields {
            Err(reason) => StagedKind::Invalid {
                reason: reason.clone(),
                conversation_id: None,
                external_id: None,
            },
            Ok(fields) => {
                match row::prepare(
                    fields,
                    self.format,
                    record.line,
                    self.validation,
                    self.stamp,
                ) {
                    Ok(valid) => StagedKind::Valid(valid),
                    Err(err) => StagedKind::Invalid {
                        reason: err.to_string(),
                        conversation_id: err.conversation_id.clone(),
                        external_id: err.external_id.clone(),
                    },
                }
            }
        }
    }
}
