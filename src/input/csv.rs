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

/// Where the parser is relative to quotes: mirrors csv-core's own state machine (RFC 4180,
/// doubled quotes inside quoted fields) over the same bytes, which csv-core does not expose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A `"` inside a quoted field: either the closing quote or the first of a doubled one.
    QuoteInQuoted,
}

/// A quoted field's extent in physical lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuotedSpan {
    opened: u64,
    closed: u64,
}

impl QuotedSpan {
    fn lines(self) -> u64 {
        self.closed - self.opened + 1
    }
}

/// Counts physical lines over consumed bytes and follows the quoting.
struct LineCounter {
    /// Line of the next unconsumed byte.
    line: u64,
    /// The last consumed byte was `\r` (a following `\n` completes the same line break).
    after_cr: bool,
    quoting: Quoting,
    /// Line of the opening quote of the quoted field being read.
    quote_opened: u64,
    /// Line of the last `"` seen inside the quoted field being read.
    quote_seen: u64,
    /// The current row's quoted field that spans the most lines.
    longest_quoted: Option<QuotedSpan>,
    /// Line of the last byte consumed that is not a line break.
    last_content_line: u64,
}

impl LineCounter {
    fn new() -> LineCounter {
        LineCounter {
            line: 1,
            after_cr: false,
            quoting: Quoting::FieldStart,
            quote_opened: 0,
            quote_seen: 0,
            longest_quoted: None,
            last_content_line: 0,
        }
    }

    fn advance(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.follow_quotes(byte);
            match byte {
                b'\r' => self.line += 1,
                b'\n' if !self.after_cr => self.line += 1,
                b'\n' => {}
                _ => self.last_content_line = self.line,
            }
            self.after_cr = byte == b'\r';
        }
    }

    fn follow_quotes(&mut self, byte: u8) {
        let separator = matches!(byte, b',' | b'\r' | b'\n');
        self.quoting = match (self.quoting, byte) {
            (Quoting::FieldStart, b'"') => {
                self.quote_opened = self.line;
                Quoting::Quoted
            }
            (Quoting::FieldStart | Quoting::Unquoted, _) if separator => Quoting::FieldStart,
            (Quoting::FieldStart | Quoting::Unquoted, _) => Quoting::Unquoted,
            (Quoting::Quoted, b'"') => {
                self.quote_seen = self.line;
                Quoting::QuoteInQuoted
            }
            (Quoting::Quoted, _) => Quoting::Quoted,
            (Quoting::QuoteInQuoted, b'"') => Quoting::Quoted,
            (Quoting::QuoteInQuoted, _) => {
                self.close_quoted();
                if separator {
                    Quoting::FieldStart
                } else {
                    Quoting::Unquoted
                }
            }
        };
    }

    fn close_quoted(&mut self) {
        let span = QuotedSpan {
            opened: self.quote_opened,
            closed: self.quote_seen,
        };
        if self
            .longest_quoted
            .is_none_or(|longest| span.lines() > longest.lines())
        {
            self.longest_quoted = Some(span);
        }
    }

    /// At the end of a row: its longest quoted field, and the line of a quote never closed.
    fn end_row(&mut self) -> (Option<QuotedSpan>, Option<u64>) {
        let unclosed = match self.quoting {
            Quoting::Quoted => Some(self.quote_opened),
            Quoting::QuoteInQuoted => {
                self.close_quoted();
                None
            }
            Quoting::FieldStart | Quoting::Unquoted => None,
        };
        self.quoting = Quoting::FieldStart;
        (self.longest_quoted.take(), unclosed)
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
    /// The row's quoted field spanning the most lines.
    longest_quoted: Option<QuotedSpan>,
    /// The line of a quote still open at the end of the input (the row runs to the end).
    unclosed_quote: Option<u64>,
    /// The last physical line the row's content is on.
    last_line: u64,
}

pub(super) struct CsvReader<'a> {
    text: TextStream<'a>,
    core: csv_core::Reader,
    lines: LineCounter,
    max_row_bytes: usize,
    max_field_lines: u64,
    field_bytes: Vec<u8>,
    field_ends: Vec<usize>,
    /// A read failure met after a complete row, reported on the next call.
    deferred_error: Option<io::Error>,
}

impl<'a> CsvReader<'a> {
    pub(super) fn new(text: TextStream<'a>, max_row_bytes: usize, max_field_lines: u64) -> Self {
        CsvReader {
            text,
            core: csv_core::Reader::new(),
            lines: LineCounter::new(),
            max_row_bytes,
            max_field_lines,
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
        if let Some(opened) = row.unclosed_quote {
            return Err(bad(format!(
                "a quote opened on line {opened} is never closed"
            )));
        }
        if row.too_large.is_some() {
            return Err(bad("the first row is too large to be a header".to_string()));
        }
        let mut names = Vec::with_capacity(row.field_count);
        let mut seen = HashSet::new();
        for (index, bytes) in self.fields(&row).enumerate() {
            let column = index + 1;
            let name = std::str::from_utf8(bytes)
                .map_err(|_| bad(format!("column {column} is not valid UTF-8")))?;
            // An unnamed column (Excel's trailing comma) is kept as "": its cells must be empty,
            // which each row checks.
            if name.trim().is_empty() {
                names.push(String::new());
                continue;
            }
            if !seen.insert(name) {
                return Err(bad(format!("column \"{name}\" appears more than once")));
            }
            names.push(name.to_string());
        }
        Ok((names, row.line))
    }

    /// Reads the remaining rows without keeping them: how many there are, and the line of a
    /// quote still open at the end of the input.
    pub(super) fn drain(&mut self) -> io::Result<(u64, Option<u64>)> {
        let mut rows = 0;
        while let Some(row) = self.next_row()? {
            rows += 1;
            if row.unclosed_quote.is_some() {
                return Ok((rows, row.unclosed_quote));
            }
        }
        Ok((rows, None))
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
        let (longest_quoted, unclosed_quote) = self.lines.end_row();
        Ok(Some(RowSpan {
            line,
            byte_offset,
            byte_len: self.text.offset() - byte_offset,
            field_count: if too_large.is_some() { 0 } else { ends_len },
            too_large,
            longest_quoted,
            unclosed_quote,
            last_line: self.lines.last_content_line.max(line),
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
        if let Some(opened) = row.unclosed_quote {
            return Err(format!(
                "a quoted field opened on line {opened} is never closed: it runs to the end of \
                 the input (line {}) and would swallow every row after it",
                row.last_line
            ));
        }
        let quoted_extent = row
            .longest_quoted
            .filter(|span| span.lines() > 1)
            .map(|span| {
                format!(
                    "spans lines {}-{}: a quoted field opened on line {} runs to line {}",
                    row.line, row.last_line, span.opened, span.closed
                )
            });
        if row
            .longest_quoted
            .is_some_and(|span| span.lines() > self.reader.max_field_lines)
        {
            return Err(format!(
                "{}, more than --max-field-lines ({}) allows; is a quote missing its closing \
                 quote?",
                quoted_extent.unwrap_or_default(),
                self.reader.max_field_lines
            ));
        }
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
            return Err(match quoted_extent {
                Some(extent) => format!(
                    "{extent}; the row has {}, the header has {}",
                    count_of(row.field_count, "field"),
                    count_of(self.header.len(), "field")
                ),
                None => format!(
                    "has {} but the header has {}",
                    count_of(row.field_count, "field"),
                    self.header.len()
                ),
            });
        }
        let mut fields = Map::new();
        for (index, (name, bytes)) in self.header.iter().zip(self.reader.fields(row)).enumerate() {
            if bytes.is_empty() {
                continue;
            }
            if name.is_empty() {
                return Err(format!(
                    "column {} has no name in the header but holds a value in this row",
                    index + 1
                ));
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
