//! NDJSON rows: one JSON object per `\n`-terminated line (a trailing `\r` is dropped), blank
//! lines skipped. Lines are read with a size cap so a file without newlines cannot exhaust memory.

use std::fmt;
use std::io;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::stream::TextStream;
use super::{InputError, InputSource, RawRecord};

/// One physical line; its content (without terminator) is in the caller's buffer.
pub(super) struct LineSpan {
    pub(super) line: u64,
    pub(super) byte_offset: u64,
    pub(super) byte_len: u64,
    /// The line was longer than the cap; the buffer holds only its start.
    pub(super) oversize: bool,
}

/// Splits the stream into non-blank lines.
pub(super) struct LineSplitter<'a> {
    text: TextStream<'a>,
    /// Number of the next line to be read.
    next_line: u64,
    max_line_bytes: usize,
}

impl<'a> LineSplitter<'a> {
    pub(super) fn new(text: TextStream<'a>, max_line_bytes: usize) -> Self {
        LineSplitter {
            text,
            next_line: 1,
            max_line_bytes,
        }
    }

    /// Reads the next line that holds more than JSON whitespace into `content`.
    pub(super) fn next_line(&mut self, content: &mut Vec<u8>) -> io::Result<Option<LineSpan>> {
        loop {
            content.clear();
            let byte_offset = self.text.offset();
            let mut oversize = false;
            loop {
                let input = self.text.fill_buf()?;
                if input.is_empty() {
                    break;
                }
                let newline = input.iter().position(|&byte| byte == b'\n');
                let line_part = newline.unwrap_or(input.len());
                let room = self.max_line_bytes.saturating_sub(content.len());
                if line_part > room {
                    oversize = true;
                }
                content.extend_from_slice(&input[..line_part.min(room)]);
                self.text
                    .consume(line_part + usize::from(newline.is_some()));
                if newline.is_some() {
                    break;
                }
            }
            let byte_len = self.text.offset() - byte_offset;
            if byte_len == 0 {
                return Ok(None);
            }
            let line = self.next_line;
            self.next_line += 1;
            if !oversize && content.last() == Some(&b'\r') {
                content.pop();
            }
            let blank = content
                .iter()
                .all(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'));
            if oversize || !blank {
                return Ok(Some(LineSpan {
                    line,
                    byte_offset,
                    byte_len,
                    oversize,
                }));
            }
        }
    }
}

/// The top-level keys of a line that is a JSON object, in order; empty for anything else.
/// Values are skipped without being built, which keeps the survey cheap.
pub(super) fn top_level_keys(line: &[u8]) -> Vec<String> {
    struct Keys(Vec<String>);
    struct KeysVisitor;

    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Keys;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(Keys(keys))
        }
    }

    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Keys, D::Error> {
            deserializer.deserialize_map(KeysVisitor)
        }
    }

    serde_json::from_slice::<Keys>(line)
        .map(|keys| keys.0)
        .unwrap_or_default()
}

/// A line's top-level JSON value: an object whose keys are all distinct, or what else it is.
enum TopLevel {
    Object(Map<String, Value>),
    Other(&'static str),
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TopLevel, D::Error> {
        deserializer.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    /// Builds the object, refusing a key given twice: `serde_json::Value` would keep the last
    /// value silently, and which of two values the export meant is not ours to guess.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears more than once"
                )));
            }
            object.insert(key, value);
        }
        Ok(TopLevel::Object(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other("an array"))
    }

    fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a string"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a number"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("a boolean"))
    }

    fn visit_unit<E>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other("null"))
    }
}

/// Why a line is not a JSON object, or the object.
fn parse_object(line: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(line).map_err(|error| {
        format!(
            "not valid UTF-8 (byte {} of the line)",
            error.valid_up_to() + 1
        )
    })?;
    match serde_json::from_str::<TopLevel>(text) {
        Ok(TopLevel::Object(object)) => Ok(object),
        Ok(TopLevel::Other(what)) => Err(format!("a JSON object was expected, found {what}")),
        // Our own refusal (a repeated key) is a data error; anything else is bad syntax.
        Err(error) if error.is_data() => Err(error.to_string()),
        Err(error) => Err(format!("not valid JSON: {error}")),
    }
}

/// The lines of an NDJSON stream, as [`RawRecord`]s.
pub(super) struct NdjsonRecords {
    source: InputSource,
    lines: LineSplitter<'static>,
    content: Vec<u8>,
    finished: bool,
}

impl NdjsonRecords {
    pub(super) fn new(source: InputSource, lines: LineSplitter<'static>) -> Self {
        NdjsonRecords {
            source,
            lines,
            content: Vec::new(),
            finished: false,
        }
    }
}

impl Iterator for NdjsonRecords {
    type Item = Result<RawRecord, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.lines.next_line(&mut self.content) {
            Ok(Some(span)) => {
                let fields = if span.oversize {
                    Err(format!(
                        "the line is longer than {} and was not read",
                        super::size_text(self.lines.max_line_bytes)
                    ))
                } else {
                    parse_object(&self.content)
                };
                // A huge line's buffer is not kept around for the rest of the file.
                if self.content.capacity() > 1024 * 1024 {
                    self.content = Vec::new();
                }
                Some(Ok(RawRecord {
                    line: span.line,
                    byte_offset: span.byte_offset,
                    byte_len: span.byte_len,
                    fields,
                }))
            }
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
