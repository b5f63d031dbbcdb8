//! `report --rejects FILE`: the input rows that will never be imported as they are — invalid, or
//! failed for good — copied byte for byte out of the original input, so they can be fixed and
//! imported as a new job. A sidecar `FILE.errors.csv` says why each was rejected.
//!
//! The input is checked against the size and SHA-256 recorded at `run` first: the checkpoint
//! knows rows only by their byte spans, and spans of a different file would cut rows in half.
//! Then it is read once, in order (decompressed as it streams), copying the rejected spans;
//! memory stays constant. Where the two outputs go (files under the overwrite rule, or stdout) is
//! the caller's business: see `crate::output`.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointError, Job, RejectedRow, RowState};
use crate::input::{self, Compression, Format, InputSource};

use super::ReportError;

/// Columns of the sidecar file.
pub const ERRORS_HEADER: [&str; 4] = ["line", "state", "errorCode", "reason"];

/// What [`write_rejects`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectsSummary {
    /// Rows written (invalid + failed).
    pub rows: u64,
    pub invalid: u64,
    pub failed: u64,
    /// Failed rows a retry may fix: not rejects, `resume --retry-failed` sends them again.
    pub retryable_failed: u64,
    /// False when staging has not finished: rows past the staged lines are not judged yet.
    pub staging_complete: bool,
}

/// The sidecar's path: the rejects file's name with `.errors.csv` appended.
pub fn errors_path(rejects_path: &Path) -> PathBuf {
    let mut name = rejects_path.as_os_str().to_owned();
    name.push(".errors.csv");
    PathBuf::from(name)
}

/// Writes the rejected rows to `rejects` and one line per row to `errors`; see the module docs.
/// Nothing is written when the input is missing or changed.
pub fn write_rejects(
    cp: &Checkpoint,
    rejects: &mut dyn Write,
    errors: &mut dyn Write,
) -> Result<RejectsSummary, ReportError> {
    cp.read_consistent(|cp| {
        let job = cp.job()?.ok_or_else(|| CheckpointError::NoJob {
            path: cp.path().to_path_buf(),
        })?;
        let source = InputSource {
            path: job.input_path.clone(),
            format: job.format,
            compression: job.compression,
        };
        check_unchanged(&job, &source)?;
        let counts = copy_rejected_rows(cp, &source, rejects, errors)?;
        rejects.flush()?;
        Ok(RejectsSummary {
            rows: counts.invalid + counts.failed,
            invalid: counts.invalid,
            failed: counts.failed,
            retryable_failed: cp.retryable_failed_count()?,
            staging_complete: job.staging_complete,
        })
    })
}

/// Refuses an input that is gone or differs from the one staged.
fn check_unchanged(job: &Job, source: &InputSource) -> Result<(), ReportError> {
    let changed = |detail: String| ReportError::InputChanged {
        path: job.input_path.clone(),
        detail,
    };
    let size = match std::fs::metadata(&job.input_path) {
        Ok(metadata) => metadata.len(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(ReportError::InputMissing {
                path: job.input_path.clone(),
            })
        }
        Err(source) => {
            return Err(ReportError::Read {
                path: job.input_path.clone(),
                source,
            })
        }
    };
    // The size is free to check; the hash needs a full read, so it comes second.
    if size != job.input_size {
        return Err(changed(format!(
            "it is {size} bytes now, {} when it was staged",
            job.input_size
        )));
    }
    let survey = input::survey(source)?;
    if survey.sha256 != job.input_sha256 {
        return Err(changed(format!(
            "its SHA-256 is {} now, {} when it was staged",
            survey.sha256, job.input_sha256
        )));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Copied {
    invalid: u64,
    failed: u64,
}

/// Streams the decompressed input once, writing the CSV header and every rejected row's bytes
/// to `rejects` and one line per row to `errors`.
fn copy_rejected_rows(
    cp: &Checkpoint,
    source: &InputSource,
    rejects: &mut dyn Write,
    errors: &mut dyn Write,
) -> Result<Copied, ReportError> {
    let read_error = |source_error: io::Error| ReportError::Read {
        path: source.path.clone(),
        source: source_error,
    };
    let file = File::open(&source.path).map_err(read_error)?;
    // Offsets count the decompressed bytes from the very first one (a UTF-8 BOM included).
    let decoded: Box<dyn Read> = match source.compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
    };
    let mut input = Span {
        reader: BufReader::with_capacity(256 * 1024, decoded),
        position: 0,
        path: &source.path,
    };

    if source.format == Format::Csv {
        if let Some(first_row) = cp.first_row_offset()? {
            input.copy_to(first_row, rejects)?;
        }
    }

    let mut errors_csv = csv::Writer::from_writer(errors);
    errors_csv.write_record(ERRORS_HEADER)?;
    let mut copied = Copied::default();
    cp.for_each_rejected_row(|row: &RejectedRow| {
        input.skip_to(row.byte_offset, row.line)?;
        input.copy_to(row.byte_offset + row.byte_len, rejects)?;
        match row.state {
            RowState::Invalid => copied.invalid += 1,
            _ => copied.failed += 1,
        }
        let reason = match (&row.error_message, row.state) {
            (Some(message), _) => message.clone(),
            (None, RowState::Invalid) => "invalid".to_string(),
            (None, _) => "failed".to_string(),
        };
        errors_csv.write_record([
            row.line.to_string(),
            row.state.as_str().to_string(),
            row.error_code.clone().unwrap_or_default(),
            reason,
        ])?;
        Ok::<(), ReportError>(())
    })?;
    errors_csv.flush()?;
    Ok(copied)
}

/// A position in the decompressed input that only moves forward.
struct Span<'a> {
    reader: BufReader<Box<dyn Read>>,
    position: u64,
    path: &'a Path,
}

impl Span<'_> {
    fn skip_to(&mut self, offset: u64, line: u64) -> Result<(), ReportError> {
        if offset < self.position {
            return Err(ReportError::Spans {
                path: self.path.to_path_buf(),
                detail: format!(
                    "the row at line {line} starts at byte {offset}, before the end of the \
                     previous one ({})",
                    self.position
                ),
            });
        }
        self.copy_to(offset, &mut io::sink())
    }

    /// Copies bytes up to (not including) `end`.
    fn copy_to(&mut self, end: u64, out: &mut dyn Write) -> Result<(), ReportError> {
        let wanted = end.saturating_sub(self.position);
        let copied = io::copy(&mut (&mut self.reader).take(wanted), out).map_err(|source| {
            ReportError::Read {
                path: self.path.to_path_buf(),
                source,
            }
        })?;
        self.position += copied;
        if copied < wanted {
            return Err(ReportError::Spans {
                path: self.path.to_path_buf(),
                detail: format!(
                    "the input ends at byte {}, before byte {end} the checkpoint refers to",
                    self.position
                ),
            });
        }
        Ok(())
    }
}
