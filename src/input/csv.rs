//! CSV rows, driven directly on `csv-core` so that every row's physical line and exact byte
//! span are known (the `csv` crate's positions count blank lines into the next record and end
//! CRLF rows before their `\n`).
//!
//! Line breaks are `\n`, `\r\n` and a lone `\r`, inside quoted fields too, so a row's line is the
//! one an editor shows.

use std::collections::HashSet;
use std::io;

use csv_core::ReadRecordResult;
use serde_json::{Map, Value};

use super::stream::TextStream;
use super::{count_of, InputError, InputSource, RawRecord};

/// More fields than this in one row is not a message export; refuse rather than grow forever.
const MAX_FIELDS: usize = 1 << 20;

/// Counts physical lines over consumed bytes.
struct LineCounter {
    /// Line of the next unconsumed byte.
    line: u64,
    /// The last consumed byte was `\r` (a following `\n` completes the same line break).
    after_cr: bool,
}

impl LineCounter {
    fn advance(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match byte {
                b'\r' => self.line += 1,
                b'\n' if !self.after_cr => self.line += 1,
                _ => {}
            }
            self.after_cr = byte == b'\r';
        }
    }
}

/// Why a row's fields were not kept.
#[derive(Debug, Clone, Copy)]
enum TooLarge {
    Bytes(usize),
    Fields,
}

/// Where one row sits; its fields are in the reader's buffers until the next row is read.
struct RowSpan {
    line: u64,
    byte_offset: u64,
    byte_len: u64,
    field_count: usize,
    too_large: Option<TooLarge>,
}

pub(super) struct CsvReader<'a> {
    text: TextStream<'a>,
    core: csv_core::Reader,
    lines: LineCounter,
    max_row_bytes: usize,
    field_bytes: Vec<u8>,
    field_ends: Vec<usize>,
    /// A read failure met after a complete row, reported on the next call.
    deferred_error: Option<io::Error>,
}

impl<'a> CsvReader<'a> {
    pub(super) fn new(text: TextStream<'a>, max_row_bytes: usize) -> Self {
        CsvReader {
            text,
            core: csv_core::Reader::new(),
            lines: LineCounter {
                line: 1,
                after_cr: false,
            },
            max_row_bytes,
            field_bytes: vec![0; 4096.min(max_row_bytes.max(1))],
            field_ends: vec![0; 64],
            deferred_error: None,
        }
    }

    /// Reads the first row as column names; also returns the line it is on (1 unless blank
    /// lines come first).
    pub(super) fn read_header(
        &mut self,
        source: &InputSource,
    ) -> Result<(Vec<String>, u64), InputError> {
        let bad = |reason: String| InputError::BadHeader {
            path: source.path.clone(),
            reason,
        };
        let Some(row) = self.next_row().map_err(|e| source.read_error(e))? else {
            return Err(bad(
                "the file is empty; its first line must name the columns".to_string(),
            ));
        };
        if row.too_large.is_some() {
            return Err(bad("the first row is too large to be a header".to_string()));
        }
        let mut names = Vec::with_capacity(row.field_count);
        let mut seen = HashSet::new();
        for (index, bytes) in self.fields(&row).enumerate() {
            let column = index + 1;
            let name = std::str::from_utf8(bytes)
                .map_err(|_| bad(format!("column {column} is not valid UTF-8")))?;
            if name.trim().is_empty() {
                return Err(bad(format!("column {column} has no name")));
            }
            if !seen.insert(name) {
                return Err(bad(format!("column \"{name}\" appears more than once")));
            }
            names.push(name.to_string());
        }
        Ok((names, row.line))
    }

    /// Reads to the end without parsing.
    pub(super) fn drain(&mut self) -> io::Result<()> {
        if let Some(error) = self.deferred_error.take() {
            return Err(error);
        }
        loop {
            let available = self.text.fill_buf()?.len();
            if available == 0 {
                return Ok(());
            }
            self.text.consume(available);
        }
    }

    fn fields<'r>(&'r self, row: &RowSpan) -> impl Iterator<Item = &'r [u8]> + 'r {
        let ends = &self.field_ends[..row.field_count];
        ends.iter().enumerate().map(move |(index, &end)| {
            let start = if index == 0 { 0 } else { ends[index - 1] };
            &self.field_bytes[start..end]
        })
    }

    /// Reads the next non-blank row, or None at the end of the stream.
    fn next_row(&mut self) -> io::Result<Option<RowSpan>> {
        if let Some(error) = self.deferred_error.take() {
            return Err(error);
        }
        if !self.skip_blank_lines()? {
            return Ok(None);
        }
        let byte_offset = self.text.offset();
        let line = self.lines.line;
        let (mut bytes_len, mut ends_len) = (0, 0);
        let mut too_large = None;
        loop {
            let input = self.text.fill_buf()?;
            let (result, read, written, ended) = self.core.read_record(
                input,
                &mut self.field_bytes[bytes_len..],
                &mut self.field_ends[ends_len..],
            );
            self.lines.advance(&input[..read]);
            self.text.consume(read);
            bytes_len += written;
            ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if self.field_bytes.len() >= self.max_row_bytes {
                        // Keep parsing to find the row's end, but stop keeping its bytes.
                        too_large = Some(TooLarge::Bytes(self.max_row_bytes));
                        bytes_len = 0;
                        ends_len = 0;
                    } else {
                        let grown = (self.field_bytes.len() * 2).min(self.max_row_bytes);
                        self.field_bytes.resize(grown, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if self.field_ends.len() >= MAX_FIELDS {
                        too_large = too_large.or(Some(TooLarge::Fields));
                        bytes_len = 0;
                        ends_len = 0;
                    } else {
                        let grown = (self.field_ends.len() * 2).min(MAX_FIELDS);
                        self.field_ends.resize(grown, 0);
                    }
                }
                ReadRecordResult::Record => break,
                ReadRecordResult::End => return Ok(None),
            }
        }
        // csv-core ends a row at its `\r`; the `\n` of a CRLF still belongs to this row.
        if self.lines.after_cr {
            match self.text.fill_buf() {
                Ok(next) if next.first() == Some(&b'\n') => {
                    self.lines.advance(b"\n");
                    self.text.consume(1);
                }
                Ok(_) => {}
                Err(error) => self.deferred_error = Some(error),
            }
        }
        Ok(Some(RowSpan {
            line,
            byte_offset,
            byte_len: self.text.offset() - byte_offset,
            field_count: if too_large.is_some() { 0 } else { ends_len },
            too_large,
        }))
    }

    /// Consumes empty lines; false when the stream ended first.
    fn skip_blank_lines(&mut self) -> io::Result<bool> {
        loop {
            let input = self.text.fill_buf()?;
            if input.is_empty() {
                return Ok(false);
            }
            let blank = input
                .iter()
                .take_while(|byte| matches!(byte, b'\r' | b'\n'))
                .count();
            let rest_is_blank = blank == input.len();
            self.lines.advance(&input[..blank]);
            self.text.consume(blank);
            if !rest_is_blank {
                return Ok(true);
            }
        }
    }
}

/// The data rows after the header, as [`RawRecord`]s.
pub(super) struct CsvRecords {
    source: InputSource,
    reader: CsvReader<'static>,
    header: Vec<String>,
    finished: bool,
}

impl CsvRecords {
    pub(super) fn new(
        source: InputSource,
        reader: CsvReader<'static>,
        header: Vec<String>,
    ) -> Self {
        CsvRecords {
            source,
            reader,
            header,
            finished: false,
        }
    }

    fn fields_of(&self, row: &RowSpan) -> Result<Map<String, Value>, String> {
        match row.too_large {
            Some(TooLarge::Bytes(limit)) => {
                return Err(format!(
                    "the row is larger than {} and was not read",
                    super::size_text(limit)
                ))
            }
            Some(TooLarge::Fields) => {
                return Err(format!(
                    "the row has more than {MAX_FIELDS} fields and was not read"
                ))
            }
            None => {}
        }
        if row.field_count != self.header.len() {
            return Err(format!(
                "has {} but the header has {}",
                count_of(row.field_count, "field"),
                self.header.len()
            ));
        }
        let mut fields = Map::new();
        for (name, bytes) in self.header.iter().zip(self.reader.fields(row)) {
            if bytes.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(bytes)
                .map_err(|error| format!("column \"{name}\" is not valid UTF-8 ({error})"))?;
            fields.insert(name.clone(), Value::String(text.to_string()));
        }
        Ok(fields)
    }
}

impl Iterator for CsvRecords {
    type Item = Result<RawRecord, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.reader.next_row() {
            Ok(Some(row)) => Some(Ok(RawRecord {
                line: row.line,
                byte_offset: row.byte_offset,
                byte_len: row.byte_len,
                fields: self.fields_of(&row),
            })),
            Ok(None) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(self.source.read_error(error)))
            }
        }
    }
}
