//! Staging: every row of the input prepared and recorded in the checkpoint, with the options
//! the job's stored settings fix so that a resumed staging reads the same way.

use std::sync::Arc;

use crate::checkpoint::{Checkpoint, Job, RowState, StagedRow};
use crate::config::StagingChoices;
use crate::input::{self, Compression, InputSource};
use crate::progress::{Display, StagingView};
use crate::row::{self, StampOptions, ValidationOptions};

use super::prepare::RowPreparer;
use super::signals::Interrupt;
use super::AppError;

/// Rows staged in this pass, by outcome.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageCounts {
    pub valid: u64,
    pub invalid: u64,
    pub duplicate: u64,
}

/// Key of `--max-field-lines` in the job's settings: staging resumed later reads the same way.
const MAX_FIELD_LINES_KEY: &str = "max-field-lines";

/// The staging choices kept in the job's settings object (beside the send settings).
pub fn staging_settings(staging: &StagingChoices) -> serde_json::Value {
    let mut settings = serde_json::json!({ MAX_FIELD_LINES_KEY: staging.max_field_lines });
    if let Some(users) = &staging.users {
        settings[USERS_MAP_KEY] = serde_json::json!(users.as_ref());
    }
    settings
}

fn max_field_lines(job: &Job) -> u64 {
    job.settings
        .get(MAX_FIELD_LINES_KEY)
        .and_then(serde_json::Value::as_u64)
        .filter(|lines| *lines > 0)
        .unwrap_or(input::DEFAULT_MAX_FIELD_LINES)
}

/// The options `row::prepare` needs for this job.
pub fn row_options(job: &Job) -> Result<(ValidationOptions, StampOptions), AppError> {
    let (_, timezone) = crate::config::parse_timezone(&job.timezone)?;
    Ok((
        ValidationOptions {
            timezone,
            ignore_unknown: job.ignore_unknown,
        },
        StampOptions {
            imported_at: job.imported_at.clone(),
            audit_fields: job.audit_fields,
            created_by: job.created_by.clone(),
            input_sha256: job.input_sha256.clone(),
            users: users_map(job)?.map(Arc::new),
        },
    ))
}

/// Key of the `--users-map` contents in the job's settings: a resumed staging resolves agents'
/// emails exactly as the first run did, even if the file has changed or gone.
const USERS_MAP_KEY: &str = "users-map";

fn users_map(job: &Job) -> Result<Option<row::UsersMap>, AppError> {
    job.settings
        .get(USERS_MAP_KEY)
        .map(|value| {
            serde_json::from_value(value.clone()).map_err(|err| {
                AppError::Fields(format!("the job's stored users map is unreadable: {err}"))
            })
        })
        .transpose()
}

/// Stages every row not yet staged. Safe to call again after an interruption: rows already
/// committed are skipped.
pub fn stage(
    checkpoint: &mut Checkpoint,
    job: &Job,
    source: &InputSource,
    display: Display,
    interrupt: Option<&Interrupt>,
) -> Result<Option<StageCounts>, AppError> {
    let (validation, stamp) = row_options(job)?;
    let mut counts = StageCounts::default();
    // Offsets are in the decompressed stream, so only a plain file's size is a usable total.
    let total_bytes = (source.compression == Compression::None).then_some(job.input_size);
    let mut view = StagingView::new(display, total_bytes);
    let mut stager = checkpoint.stager();
    let mut seen = 0u64;
    let preparer = RowPreparer {
        format: job.format,
        validation: &validation,
        stamp: &stamp,
    };
    for record in input::records_with_field_lines(source, max_field_lines(job))? {
        let record = record?;
        seen += 1;
        if record.line <= job.staged_through_line {
            continue;
        }
        if interrupt.is_some_and(Interrupt::requested) {
            // Dropping the stager rolls back the open batch; staged_through_line says where
            // the next attempt starts.
            view.finish();
            return Ok(None);
        }
        let kind = preparer.kind(&record);
        let state = stager.add(StagedRow {
            line: record.line,
            byte_offset: record.byte_offset,
            byte_len: record.byte_len,
            kind,
        })?;
        match state {
            RowState::Invalid => counts.invalid += 1,
            RowState::Duplicate => counts.duplicate += 1,
            _ => counts.valid += 1,
        }
        view.update(seen, record.byte_offset + record.byte_len, counts.invalid);
    }
    stager.finish()?;
    view.finish();
    // Tickets whose rows disagree about their customer are refused as a whole.
    let refused = checkpoint.prepare_resolution()?;
    counts.valid = counts.valid.saturating_sub(refused);
    counts.invalid += refused;
    Ok(Some(counts))
}
