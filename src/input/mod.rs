//! Streaming readers for the input file: CSV or NDJSON, optionally gzip-compressed.
//!
//! Readers are purely syntactic: they turn bytes into [`RawRecord`]s (field name to JSON value,
//! every CSV cell a string) with the physical line and byte span each row came from. What the
//! fields mean is the `row` module's business. Memory stays constant however large the input.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The syntax of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

/// How the input file's bytes are wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// A readable input: a file on disk (stdin is spooled to a file before it gets here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSource {
    pub path: PathBuf,
    pub format: Format,
    pub compression: Compression,
}

/// One row as read, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// 1-based physical line where the row starts (a CSV row with quoted newlines spans several).
    pub line: u64,
    /// Offset of the row's first byte in the decompressed stream.
    pub byte_offset: u64,
    /// Length of the row's bytes in the decompressed stream, including its line terminator.
    pub byte_len: u64,
    /// The row's fields, or why the row could not be parsed at all.
    pub fields: Result<Map<String, Value>, String>,
}

/// What a first pass over the input learns before anything is staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Size of the file on disk, in bytes (compressed size for gzip).
    pub size: u64,
    /// Lowercase hex SHA-256 of the file on disk.
    pub sha256: String,
    /// CSV header names, in order (None for NDJSON).
    pub header: Option<Vec<String>>,
    /// Every distinct field name seen, each with the first line it appeared on, in first-seen order.
    pub field_names: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid gzip data: {source}")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell the format of {path}: name it .csv, .ndjson or .jsonl (optionally .gz), or pass --format")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: the CSV header is unusable: {reason}")]
    BadHeader { path: PathBuf, reason: String },
}

impl InputSource {
    /// Works out format and compression from the file name, unless `format` is given.
    pub fn detect(path: &Path, format: Option<Format>) -> Result<Self, InputError> {
        let _ = (path, format);
        todo!("input::InputSource::detect")
    }
}

/// Hashes the file and collects its field names, reading it once from start to end.
pub fn survey(source: &InputSource) -> Result<Survey, InputError> {
    let _ = source;
    todo!("input::survey")
}

/// Streams the rows of the input in file order.
pub fn records(
    source: &InputSource,
) -> Result<Box<dyn Iterator<Item = Result<RawRecord, InputError>> + Send>, InputError> {
    let _ = source;
    todo!("input::records")
}
