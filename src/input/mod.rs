//! Streaming readers for the input file: CSV or NDJSON, optionally gzip-compressed.
//!
//! Readers are purely syntactic: they turn bytes into [`RawRecord`]s (field name to JSON value,
//! every CSV cell a string) with the physical line and byte span each row came from. What the
//! fields mean is the `row` module's business. Memory stays constant however large the input.

mod csv;
mod ndjson;
mod stream;

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Rows longer than this are refused (as row errors) instead of being buffered: no sane
/// message is that large, and a missing closing quote must not exhaust memory.
pub const MAX_ROW_BYTES: usize = 64 * 1024 * 1024;

/// Default of `--max-field-lines`: a quoted CSV field spanning more physical lines than this is
/// taken for a quote that never closed, swallowing the rows after it.
pub const DEFAULT_MAX_FIELD_LINES: u64 = 200;

/// The two bytes every gzip member starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

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
    /// Rows (CSV records after the header, non-blank NDJSON lines).
    pub rows: u64,
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
    #[error("{path}: line {line}: a quoted field opened on line {line} is never closed: it runs to the end of the input and would swallow every row after it; nothing was staged")]
    UnclosedQuote { path: PathBuf, line: u64 },
    #[error("{path}: no rows in input (a header and nothing else, or no lines)")]
    NoRows { path: PathBuf },
}

impl InputSource {
    /// Works out format and compression from the file name, unless `format` is given.
    ///
    /// Compression is gzip when the name ends in `.gz` or, defensively, when the file starts
    /// with the gzip magic bytes (a renamed `.gz` file still reads).
    pub fn detect(path: &Path, format: Option<Format>) -> Result<Self, InputError> {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let (stem, gz_suffix) = match name.strip_suffix(".gz") {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        let format = match format {
            Some(format) => format,
            None if stem.ends_with(".csv") => Format::Csv,
            None if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") => Format::Ndjson,
            None => {
                return Err(InputError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        let compression = if gz_suffix || starts_with_gzip_magic(path)? {
            Compression::Gzip
        } else {
            Compression::None
        };
        Ok(InputSource {
            path: path.to_path_buf(),
            format,
            compression,
        })
    }

    fn io_error(&self, source: std::io::Error) -> InputError {
        InputError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Names a failure while reading the (possibly decompressed) stream: decoder complaints
    /// about the data are gzip errors, anything else is plain I/O.
    fn read_error(&self, source: std::io::Error) -> InputError {
        use std::io::ErrorKind;
        let corrupt = matches!(
            source.kind(),
            ErrorKind::InvalidInput | ErrorKind::InvalidData | ErrorKind::UnexpectedEof
        );
        if self.compression == Compression::Gzip && corrupt {
            InputError::Gzip {
                path: self.path.clone(),
                source,
            }
        } else {
            self.io_error(source)
        }
    }

    fn open(&self) -> Result<File, InputError> {
        File::open(&self.path).map_err(|source| self.io_error(source))
    }
}

fn starts_with_gzip_magic(path: &Path) -> Result<bool, InputError> {
    let file = File::open(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = Vec::with_capacity(GZIP_MAGIC.len());
    file.take(GZIP_MAGIC.len() as u64)
        .read_to_end(&mut magic)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(magic == GZIP_MAGIC)
}

/// Hashes the file and collects its field names, reading it once from start to end.
pub fn survey(source: &InputSource) -> Result<Survey, InputError> {
    let mut on_disk = stream::Hashing::new(source.open()?);
    let (header, field_names, rows) = {
        let decoded = stream::decoded(&mut on_disk, source.compression);
        let text = stream::TextStream::open(decoded).map_err(|e| source.read_error(e))?;
        match source.format {
            Format::Csv => {
                let mut reader = csv::CsvReader::new(text, MAX_ROW_BYTES, DEFAULT_MAX_FIELD_LINES);
                let (header, header_line) = reader.read_header(source)?;
                // The rest is read so that the hash covers the whole file (and a corrupt gzip
                // tail is noticed now rather than halfway through sending), and so that a quote
                // left open, which would merge every later row into one, stops the job now.
                let (rows, unclosed) = reader.drain().map_err(|e| source.read_error(e))?;
                if let Some(line) = unclosed {
                    return Err(InputError::UnclosedQuote {
                        path: source.path.clone(),
                        line,
                    });
                }
                let names = header
                    .iter()
                    .filter(|name| !name.is_empty())
                    .map(|name| (name.clone(), header_line))
                    .collect();
                (Some(header), names, rows)
            }
            Format::Ndjson => {
                let mut lines = ndjson::LineSplitter::new(text, MAX_ROW_BYTES);
                let mut seen = HashSet::new();
                let mut names = Vec::new();
                let mut buffer = Vec::new();
                let mut rows = 0;
                while let Some(line) = lines
                    .next_line(&mut buffer)
                    .map_err(|e| source.read_error(e))?
                {
                    rows += 1;
                    if line.oversize {
                        continue;
                    }
                    for key in ndjson::top_level_keys(&buffer) {
                        if !seen.contains(&key) {
                            seen.insert(key.clone());
                            names.push((key, line.line));
                        }
                    }
                }
                (None, names, rows)
            }
        }
    };
    let (sha256, size) = on_disk.finish();
    Ok(Survey {
        size,
        sha256,
        header,
        field_names,
        rows,
    })
}

/// Streams the rows of the input in file order, with the default `--max-field-lines`.
pub fn records(
    source: &InputSource,
) -> Result<Box<dyn Iterator<Item = Result<RawRecord, InputError>> + Send>, InputError> {
    records_limited(source, MAX_ROW_BYTES, DEFAULT_MAX_FIELD_LINES)
}

/// [`records`] with the most physical lines a quoted CSV field may span.
pub fn records_with_field_lines(
    source: &InputSource,
    max_field_lines: u64,
) -> Result<Box<dyn Iterator<Item = Result<RawRecord, InputError>> + Send>, InputError> {
    records_limited(source, MAX_ROW_BYTES, max_field_lines)
}

/// [`records`] with configurable limits, so tests can exercise the guards cheaply.
fn records_limited(
    source: &InputSource,
    max_row_bytes: usize,
    max_field_lines: u64,
) -> Result<Box<dyn Iterator<Item = Result<RawRecord, InputError>> + Send>, InputError> {
    let decoded = stream::decoded(source.open()?, source.compression);
    let text = stream::TextStream::open(decoded).map_err(|e| source.read_error(e))?;
    Ok(match source.format {
        Format::Csv => {
            let mut reader = csv::CsvReader::new(text, max_row_bytes, max_field_lines);
            let (header, _) = reader.read_header(source)?;
            Box::new(csv::CsvRecords::new(source.clone(), reader, header))
        }
        Format::Ndjson => Box::new(ndjson::NdjsonRecords::new(
            source.clone(),
            ndjson::LineSplitter::new(text, max_row_bytes),
        )),
    })
}

/// "1 field", "3 fields": row errors are read by people.
fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// "64 MiB" for whole mebibytes, else "100 bytes".
fn size_text(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use serde_json::json;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn fixture(name: &str, bytes: &[u8]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        Fixture { _dir: dir, path }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(name: &str, bytes: &[u8]) -> Vec<RawRecord> {
        let file = fixture(name, bytes);
        let source = InputSource::detect(&file.path, None).unwrap();
        records(&source)
            .unwrap()
            .map(|record| record.unwrap())
            .collect()
    }

    fn object(value: serde_json::Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// Every record's span must slice the original bytes back to the row, exactly.
    fn assert_spans(bytes: &[u8], records: &[RawRecord], expected_rows: &[&str]) {
        let slices: Vec<&str> = records
            .iter()
            .map(|record| {
                let start = record.byte_offset as usize;
                std::str::from_utf8(&bytes[start..start + record.byte_len as usize]).unwrap()
            })
            .collect();
        assert_eq!(slices, expected_rows);
    }

    #[test]
    fn detect_reads_format_and_compression_from_the_name() {
        let plain = fixture("x", b"a\n1\n");
        let dir = plain.path.parent().unwrap();
        let cases = [
            ("m.csv", Format::Csv, Compression::None),
            ("m.CSV.GZ", Format::Csv, Compression::Gzip),
            ("m.ndjson", Format::Ndjson, Compression::None),
            ("m.jsonl", Format::Ndjson, Compression::None),
            ("m.jsonl.gz", Format::Ndjson, Compression::Gzip),
        ];
        for (name, format, compression) in cases {
            let path = dir.join(name);
            std::fs::write(&path, b"a\n1\n").unwrap();
            let source = InputSource::detect(&path, None).unwrap();
            assert_eq!(
                (source.format, source.compression),
                (format, compression),
                "{name}"
            );
        }
    }

    #[test]
    fn detect_refuses_unknown_names_unless_told_the_format() {
        let file = fixture("messages.txt", b"a\n1\n");
        assert!(matches!(
            InputSource::detect(&file.path, None),
            Err(InputError::UnknownFormat { .. })
        ));
        let source = InputSource::detect(&file.path, Some(Format::Csv)).unwrap();
        assert_eq!(source.format, Format::Csv);
        assert_eq!(source.compression, Compression::None);
        // An explicit format wins over the name.
        let file = fixture("messages.csv", b"{}\n");
        let source = InputSource::detect(&file.path, Some(Format::Ndjson)).unwrap();
        assert_eq!(source.format, Format::Ndjson);
    }

    #[test]
    fn detect_notices_gzip_without_the_suffix() {
        let file = fixture("messages.csv", &gzip(b"a,b\n1,2\n"));
        let source = InputSource::detect(&file.path, None).unwrap();
        assert_eq!(source.compression, Compression::Gzip);
        let rows: Vec<_> = records(&source).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fields, Ok(object(json!({"a": "1", "b": "2"}))));
    }

    #[test]
    fn detect_of_a_missing_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.csv");
        assert!(matches!(
            InputSource::detect(&missing, None),
            Err(InputError::Io { .. })
        ));
    }

    #[test]
    fn survey_of_csv_hashes_the_file_and_names_the_header() {
        let file = fixture("m.csv", b"a,b\n1,2\n");
        let survey = survey(&InputSource::detect(&file.path, None).unwrap()).unwrap();
        assert_eq!(survey.size, 8);
        assert_eq!(
            survey.sha256,
            "492d5ea496056f1a6a6592241032fab764c321596317930b4fa0e1e8bc3b7470"
        );
        assert_eq!(survey.header, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(
            survey.field_names,
            vec![("a".to_string(), 1), ("b".to_string(), 1)]
        );
    }

    #[test]
    fn survey_of_gzip_hashes_the_compressed_bytes() {
        use sha2::{Digest, Sha256};
        let compressed = gzip(b"a,b\n1,2\n");
        let file = fixture("m.csv.gz", &compressed);
        let survey = survey(&InputSource::detect(&file.path, None).unwrap()).unwrap();
        assert_eq!(survey.size, compressed.len() as u64);
        let expected: String = Sha256::digest(&compressed)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(survey.sha256, expected);
        assert_ne!(
            survey.sha256,
            "492d5ea496056f1a6a6592241032fab764c321596317930b4fa0e1e8bc3b7470"
        );
    }

    #[test]
    fn survey_of_ndjson_lists_keys_in_first_seen_order_with_their_line() {
        let text = b"{\"b\":1,\"a\":{\"nested\":true}}\n\nnot json\n[1,2]\n{\"a\":2,\"c\":[{\"x\":1}]}\n{\"d\":null}";
        let file = fixture("m.ndjson", text);
        let survey = survey(&InputSource::detect(&file.path, None).unwrap()).unwrap();
        assert_eq!(survey.header, None);
        assert_eq!(
            survey.field_names,
            vec![
                ("b".to_string(), 1),
                ("a".to_string(), 1),
                ("c".to_string(), 5),
                ("d".to_string(), 6)
            ]
        );
    }

    #[test]
    fn survey_reports_a_bad_csv_header() {
        let file = fixture("m.csv", b"a,a\n1,2\n");
        assert!(matches!(
            survey(&InputSource::detect(&file.path, None).unwrap()),
            Err(InputError::BadHeader { .. })
        ));
    }

    #[test]
    fn csv_handles_quotes_commas_and_newlines_with_starting_lines() {
        let text = "a,b,c\n\"x, y\",\"he said \"\"hi\"\"\",plain\n\"multi\nline\nvalue\",,z\nlast,row,here\n";
        let rows = read_all("m.csv", text.as_bytes());
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 6]);
        assert_eq!(
            rows[0].fields,
            Ok(object(
                json!({"a": "x, y", "b": "he said \"hi\"", "c": "plain"})
            ))
        );
        // The empty cell is absent, not an empty string.
        assert_eq!(
            rows[1].fields,
            Ok(object(json!({"a": "multi\nline\nvalue", "c": "z"})))
        );
        assert_spans(
            text.as_bytes(),
            &rows,
            &[
                "\"x, y\",\"he said \"\"hi\"\"\",plain\n",
                "\"multi\nline\nvalue\",,z\n",
                "last,row,here\n",
            ],
        );
    }

    #[test]
    fn csv_spans_cover_crlf_terminators_and_an_unterminated_last_row() {
        let text = "a,b\r\n1,2\r\n\"3\r\n4\",5\r\n6,7";
        let rows = read_all("m.csv", text.as_bytes());
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 5]);
        assert_spans(
            text.as_bytes(),
            &rows,
            &["1,2\r\n", "\"3\r\n4\",5\r\n", "6,7"],
        );
        assert_eq!(rows[1].fields, Ok(object(json!({"a": "3\r\n4", "b": "5"}))));
    }

    #[test]
    fn csv_counts_a_lone_carriage_return_as_a_line_break() {
        let text = "a\r1\r2\r";
        let rows = read_all("m.csv", text.as_bytes());
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
        assert_spans(text.as_bytes(), &rows, &["1\r", "2\r"]);
    }

    #[test]
    fn csv_skips_blank_lines_and_reports_the_real_start() {
        let text = "a,b\n\n\r\n1,2\n\n\n3,4\n\n";
        let rows = read_all("m.csv", text.as_bytes());
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [4, 7]);
        assert_spans(text.as_bytes(), &rows, &["1,2\n", "3,4\n"]);
    }

    #[test]
    fn csv_header_after_blank_lines_is_named_with_its_line() {
        let text = b"\n\r\na,b\n1,2\n";
        let file = fixture("m.csv", text);
        let source = InputSource::detect(&file.path, None).unwrap();
        let survey = survey(&source).unwrap();
        assert_eq!(
            survey.field_names,
            vec![("a".to_string(), 3), ("b".to_string(), 3)]
        );
        let rows: Vec<_> = records(&source).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(rows[0].line, 4);
        assert_spans(text, &rows, &["1,2\n"]);
    }

    #[test]
    fn csv_bom_does_not_leak_into_the_first_name_and_offsets_count_it() {
        let mut bytes = vec![0xef, 0xbb, 0xbf];
        bytes.extend_from_slice(b"conversationId,app\nabc,zendesk\n");
        let file = fixture("m.csv", &bytes);
        let source = InputSource::detect(&file.path, None).unwrap();
        let survey = survey(&source).unwrap();
        assert_eq!(
            survey.header,
            Some(vec!["conversationId".to_string(), "app".to_string()])
        );
        let rows: Vec<_> = records(&source).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(
            rows[0].fields,
            Ok(object(json!({"conversationId": "abc", "app": "zendesk"})))
        );
        assert_spans(&bytes, &rows, &["abc,zendesk\n"]);
    }

    #[test]
    fn csv_row_problems_are_row_errors_not_input_errors() {
        let mut bytes = b"a,b\n1\n1,2,3\n".to_vec();
        bytes.extend_from_slice(b"ok,\xff\xfe\n4,5\n");
        let rows = read_all("m.csv", &bytes);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].fields,
            Err("has 1 field but the header has 2".to_string())
        );
        assert_eq!(
            rows[1].fields,
            Err("has 3 fields but the header has 2".to_string())
        );
        let utf8_error = rows[2].fields.clone().unwrap_err();
        assert!(
            utf8_error.starts_with("column \"b\" is not valid UTF-8"),
            "{utf8_error}"
        );
        assert_eq!(rows[3].fields, Ok(object(json!({"a": "4", "b": "5"}))));
    }

    #[test]
    fn csv_header_must_exist_and_be_unambiguous() {
        for (text, reason_part) in [
            (&b""[..], "empty"),
            (&b"\n\n"[..], "empty"),
            (&b"a,b,a\n1,2,3\n"[..], "\"a\" appears more than once"),
            (&b"a,\xff\n"[..], "column 2 is not valid UTF-8"),
        ] {
            let file = fixture("m.csv", text);
            let source = InputSource::detect(&file.path, None).unwrap();
            match records(&source).map(|_| ()) {
                Err(InputError::BadHeader { reason, .. }) => {
                    assert!(reason.contains(reason_part), "{reason}")
                }
                other => panic!("expected a bad header, got {other:?}"),
            }
        }
    }

    #[test]
    fn unnamed_columns_are_accepted_while_their_cells_are_empty() {
        // Excel's trailing comma: an unnamed last column, empty in every row.
        let rows = read_all("m.csv", b"a,b,\n1,2,\n3,4,x\n");
        assert_eq!(rows[0].fields, Ok(object(json!({"a": "1", "b": "2"}))));
        assert_eq!(
            rows[1].fields,
            Err("column 3 has no name in the header but holds a value in this row".to_string())
        );
        let file = fixture("m.csv", b"a,b,\n1,2,\n");
        let survey = survey(&InputSource::detect(&file.path, None).unwrap()).unwrap();
        assert_eq!(survey.field_names, vec![("a".into(), 1), ("b".into(), 1)]);
        assert_eq!(survey.rows, 1);
    }

    #[test]
    fn a_quote_never_closed_is_an_input_error_naming_its_line() {
        let bytes = b"a,b\n1,2\n3,\"oops\n4,5\n6,7\n";
        let file = fixture("m.csv", bytes);
        let source = InputSource::detect(&file.path, None).unwrap();
        match survey(&source) {
            Err(InputError::UnclosedQuote { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected an unclosed quote, got {other:?}"),
        }
        let rows = read_all("m.csv", bytes);
        assert_eq!(rows.len(), 2, "the open quote swallows the rest: {rows:?}");
        let reason = rows[1].fields.clone().unwrap_err();
        assert!(
            reason.contains("a quoted field opened on line 3 is never closed")
                && reason.contains("line 5"),
            "{reason}"
        );
    }

    #[test]
    fn a_record_spanning_lines_says_which_lines_when_its_field_count_is_wrong() {
        // Line 3 opens a quote that closes on line 5, merging three physical rows.
        let bytes = b"a,b,c\n1,2,3\n4,\"x\n6,7,8\n9,y\"\n10,11,12\n";
        let rows = read_all("m.csv", bytes);
        let reason = rows[1].fields.clone().unwrap_err();
        assert_eq!(
            reason,
            "spans lines 3-5: a quoted field opened on line 3 runs to line 5; the row has 2 \
             fields, the header has 3 fields",
            "{rows:?}"
        );
        assert_eq!(rows[2].line, 6);
        // A doubled quote inside a quoted field does not close it.
        let rows = read_all("m.csv", b"a,b\n1,\"say \"\"hi\"\"\nthere\"\n");
        assert_eq!(
            rows[0].fields,
            Ok(object(json!({"a": "1", "b": "say \"hi\"\nthere"})))
        );
    }

    #[test]
    fn a_quoted_field_longer_than_max_field_lines_is_refused() {
        let mut bytes = b"a,b\n1,\"".to_vec();
        for _ in 0..5 {
            bytes.extend_from_slice(b"text\n");
        }
        bytes.extend_from_slice(b"end\"\n2,3\n");
        let file = fixture("m.csv", &bytes);
        let source = InputSource::detect(&file.path, None).unwrap();
        let within: Vec<_> = records_with_field_lines(&source, 6)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(within[0].fields.is_ok(), "{:?}", within[0]);
        let beyond: Vec<_> = records_with_field_lines(&source, 5)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            beyond[0].fields,
            Err(
                "spans lines 2-7: a quoted field opened on line 2 runs to line 7, more than \
                 --max-field-lines (5) allows; is a quote missing its closing quote?"
                    .to_string()
            )
        );
        assert_eq!(beyond[1].line, 8);
        assert!(beyond[1].fields.is_ok());
    }

    #[test]
    fn empty_inputs_have_no_rows() {
        for (name, bytes) in [
            ("m.csv", &b"a,b\n"[..]),
            ("m.csv", &b"a,b\n\n\r\n"[..]),
            ("m.ndjson", &b""[..]),
            ("m.ndjson", &b"\n  \n"[..]),
        ] {
            let file = fixture(name, bytes);
            let survey = survey(&InputSource::detect(&file.path, None).unwrap()).unwrap();
            assert_eq!(survey.rows, 0, "{name} {bytes:?}");
        }
    }

    #[test]
    fn ndjson_repeated_keys_are_refused() {
        let rows = read_all(
            "m.ndjson",
            b"{\"a\":1,\"b\":2,\"a\":3}\n{\"a\":{\"x\":1},\"b\":[1,2]}\n[1]\n",
        );
        let reason = rows[0].fields.clone().unwrap_err();
        assert!(
            reason.contains("the key \"a\" appears more than once"),
            "{reason}"
        );
        assert_eq!(
            rows[1].fields,
            Ok(object(json!({"a": {"x": 1}, "b": [1, 2]})))
        );
        assert_eq!(
            rows[2].fields,
            Err("a JSON object was expected, found an array".to_string())
        );
    }

    #[test]
    fn csv_header_alone_yields_no_rows() {
        assert!(read_all("m.csv", b"a,b\n").is_empty());
    }

    #[test]
    fn csv_row_larger_than_the_limit_is_a_row_error_and_reading_goes_on() {
        let text = "a,b\n\"0123456789012345678901234567890123456789\",x\n1,2\n";
        let file = fixture("m.csv", text.as_bytes());
        let source = InputSource::detect(&file.path, None).unwrap();
        let rows: Vec<_> = records_limited(&source, 16, DEFAULT_MAX_FIELD_LINES)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].fields,
            Err("the row is larger than 16 bytes and was not read".to_string())
        );
        assert_eq!(rows[1].line, 3);
        assert_eq!(rows[1].fields, Ok(object(json!({"a": "1", "b": "2"}))));
        assert_spans(
            text.as_bytes(),
            &rows,
            &["\"0123456789012345678901234567890123456789\",x\n", "1,2\n"],
        );
    }

    #[test]
    fn corrupt_gzip_mid_stream_yields_one_gzip_error_then_ends() {
        let mut text = String::from("a,b\n");
        for index in 0..20_000 {
            text.push_str(&format!("{index},value {index} {}\n", index * 7919));
        }
        let mut compressed = gzip(text.as_bytes());
        let middle = compressed.len() / 2;
        for byte in &mut compressed[middle..middle + 64] {
            *byte ^= 0x5a;
        }
        let file = fixture("m.csv.gz", &compressed);
        let source = InputSource::detect(&file.path, None).unwrap();
        let results: Vec<_> = records(&source).unwrap().collect();
        let errors: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
        assert_eq!(errors.len(), 1);
        assert!(matches!(results.last(), Some(Err(InputError::Gzip { .. }))));
        assert!(matches!(survey(&source), Err(InputError::Gzip { .. })));
    }

    #[test]
    fn truncated_gzip_is_a_gzip_error() {
        let compressed = gzip(b"{\"a\":1}\n{\"a\":2}\n");
        let file = fixture("m.ndjson.gz", &compressed[..compressed.len() - 6]);
        let source = InputSource::detect(&file.path, None).unwrap();
        let results: Vec<_> = records(&source).unwrap().collect();
        assert!(matches!(results.last(), Some(Err(InputError::Gzip { .. }))));
    }

    #[test]
    fn ndjson_reads_objects_and_reports_other_lines() {
        let text = "{\"a\":\"x\",\"n\":1}\r\n\n   \n[1]\n{\"a\":\nnull\n\"s\"\n{\"b\":true}";
        let rows = read_all("m.ndjson", text.as_bytes());
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 4, 5, 6, 7, 8]
        );
        assert_eq!(rows[0].fields, Ok(object(json!({"a": "x", "n": 1}))));
        assert_eq!(
            rows[1].fields,
            Err("a JSON object was expected, found an array".to_string())
        );
        assert!(rows[2]
            .fields
            .clone()
            .unwrap_err()
            .starts_with("not valid JSON: "));
        assert_eq!(
            rows[3].fields,
            Err("a JSON object was expected, found null".to_string())
        );
        assert_eq!(
            rows[4].fields,
            Err("a JSON object was expected, found a string".to_string())
        );
        assert_eq!(rows[5].fields, Ok(object(json!({"b": true}))));
        assert_spans(
            text.as_bytes(),
            &rows,
            &[
                "{\"a\":\"x\",\"n\":1}\r\n",
                "[1]\n",
                "{\"a\":\n",
                "null\n",
                "\"s\"\n",
                "{\"b\":true}",
            ],
        );
    }

    #[test]
    fn ndjson_invalid_utf8_is_a_row_error() {
        let rows = read_all("m.ndjson", b"{\"a\":\"\xff\"}\n{\"a\":\"ok\"}\n");
        assert_eq!(
            rows[0].fields,
            Err("not valid UTF-8 (byte 7 of the line)".to_string())
        );
        assert_eq!(rows[1].fields, Ok(object(json!({"a": "ok"}))));
    }

    #[test]
    fn ndjson_line_longer_than_the_limit_is_a_row_error_and_reading_goes_on() {
        let text = "{\"a\":\"0123456789012345678901234567890123456789\"}\n{\"a\":1}\n";
        let file = fixture("m.ndjson", text.as_bytes());
        let source = InputSource::detect(&file.path, None).unwrap();
        let rows: Vec<_> = records_limited(&source, 16, DEFAULT_MAX_FIELD_LINES)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            rows[0].fields,
            Err("the line is longer than 16 bytes and was not read".to_string())
        );
        assert_eq!(rows[1].fields, Ok(object(json!({"a": 1}))));
        assert_spans(
            text.as_bytes(),
            &rows,
            &[
                "{\"a\":\"0123456789012345678901234567890123456789\"}\n",
                "{\"a\":1}\n",
            ],
        );
    }

    #[test]
    fn a_line_exactly_at_the_limit_is_read() {
        let text = "{\"a\":\"0123456\"}\r\n";
        let file = fixture("m.ndjson", text.as_bytes());
        let source = InputSource::detect(&file.path, None).unwrap();
        let rows: Vec<_> = records_limited(&source, 16, DEFAULT_MAX_FIELD_LINES)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows[0].fields, Ok(object(json!({"a": "0123456"}))));
    }

    #[test]
    fn record_streams_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let file = fixture("m.csv", b"a\n1\n");
        let iterator = records(&InputSource::detect(&file.path, None).unwrap()).unwrap();
        assert_send(&iterator);
    }
}
