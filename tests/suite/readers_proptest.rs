//! Property tests of the input readers through the public API: they never panic, every record
//! carries fields or a reason, lines rise strictly and stay inside the file, and rows written
//! by standard writers read back with the same values, lines and exact byte spans.

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;

use kustomer_import::input::{self, InputError, InputSource, RawRecord};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A file in its own temporary directory (removed when dropped).
struct TempInput {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn temp_input(name: &str, bytes: &[u8]) -> TempInput {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    TempInput { _dir: dir, path }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Line breaks as the CSV reader counts them: `\n`, `\r\n` and a lone `\r` each end a line.
fn csv_line_breaks(bytes: &[u8]) -> u64 {
    let mut breaks = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let lone_lf = byte == b'\n' && (index == 0 || bytes[index - 1] != b'\r');
        if byte == b'\r' || lone_lf {
            breaks += 1;
        }
    }
    breaks
}

/// Line breaks as the NDJSON reader counts them: only `\n` ends a line.
fn ndjson_line_breaks(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&byte| byte == b'\n').count() as u64
}

/// Reads everything, stopping at (and returning) an input error.
fn read_all(source: &InputSource) -> (Vec<RawRecord>, Option<InputError>) {
    let mut rows = Vec::new();
    let iterator = match input::records(source) {
        Ok(iterator) => iterator,
        Err(error) => return (rows, Some(error)),
    };
    for record in iterator {
        match record {
            Ok(record) => rows.push(record),
            Err(error) => return (rows, Some(error)),
        }
    }
    (rows, None)
}

/// Invariants that hold for any input: reasons are given, lines rise strictly within the
/// file, and byte spans are ordered, disjoint and inside the decompressed bytes.
fn check_invariants(rows: &[RawRecord], decompressed: &[u8], physical_lines: u64) {
    let mut previous_line = 0;
    let mut previous_end = 0;
    for row in rows {
        if let Err(reason) = &row.fields {
            assert!(!reason.is_empty(), "a row error without a reason");
        }
        assert!(row.line > previous_line, "lines must rise: {rows:?}");
        assert!(
            row.line >= 1 && row.line <= physical_lines,
            "line {} of {physical_lines}",
            row.line
        );
        assert!(row.byte_offset >= previous_end, "spans overlap: {rows:?}");
        assert!(row.byte_len > 0, "an empty span: {rows:?}");
        let end = row.byte_offset + row.byte_len;
        assert!(end <= decompressed.len() as u64, "span past the end");
        previous_line = row.line;
        previous_end = end;
    }
}

/// Bytes that mean something to CSV or JSON, mixed with anything at all.
fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b",\"\r\n{}[]:a 1\\".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..400)
}

fn check_arbitrary(bytes: &[u8], format_suffix: &str, compressed: bool) {
    let (name, on_disk) = if compressed {
        (format!("x{format_suffix}.gz"), gzip(bytes))
    } else {
        (format!("x{format_suffix}"), bytes.to_vec())
    };
    let file = temp_input(&name, &on_disk);
    let source = InputSource::detect(&file.path, None).unwrap();
    // The survey may refuse the input (a bad CSV header), but must not panic.
    let _ = input::survey(&source);
    let (rows, error) = read_all(&source);
    // Plain bytes that happen to start like gzip are read as gzip and may fail to decode.
    let decoded_as_gzip = compressed || bytes.starts_with(&[0x1f, 0x8b]);
    match error {
        None => {
            let breaks = if format_suffix == ".csv" {
                csv_line_breaks(bytes)
            } else {
                ndjson_line_breaks(bytes)
            };
            check_invariants(&rows, bytes, breaks + 1);
        }
        Some(InputError::BadHeader { .. }) => assert!(rows.is_empty()),
        Some(InputError::Gzip { .. }) => assert!(decoded_as_gzip),
        Some(other) => panic!("unexpected input error: {other}"),
    }
}

/// Cell text with the characters that make CSV hard.
fn cell() -> impl Strategy<Value = String> {
    prop::string::string_regex("[a-z ,\"\r\né日🙂]{0,8}").unwrap()
}

fn csv_table() -> impl Strategy<Value = (usize, Vec<Vec<String>>)> {
    (1usize..5).prop_flat_map(|columns| {
        (
            Just(columns),
            prop::collection::vec(prop::collection::vec(cell(), columns), 0..12),
        )
    })
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        cell().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        prop::collection::vec(cell(), 0..3).prop_map(Value::from),
    ]
}

fn json_objects() -> impl Strategy<Value = Vec<Map<String, Value>>> {
    let key = prop::string::string_regex("[a-zA-Zé_.]{1,6}").unwrap();
    let object = prop::collection::vec((key, json_value()), 0..5)
        .prop_map(|pairs| pairs.into_iter().collect::<Map<String, Value>>());
    prop::collection::vec(object, 0..10)
}

/// Writes `bytes` (optionally gzip-wrapped) under `name` and reads every record back.
fn write_and_read(name: &str, bytes: &[u8], compressed: bool) -> (TempInput, InputSource) {
    let on_disk = if compressed {
        gzip(bytes)
    } else {
        bytes.to_vec()
    };
    let file = temp_input(name, &on_disk);
    let source = InputSource::detect(&file.path, None).unwrap();
    (file, source)
}

fn span_of(record: &RawRecord) -> Range<usize> {
    record.byte_offset as usize..(record.byte_offset + record.byte_len) as usize
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn csv_reader_survives_any_bytes(bytes in tricky_bytes(), compressed in any::<bool>()) {
        check_arbitrary(&bytes, ".csv", compressed);
    }

    #[test]
    fn ndjson_reader_survives_any_bytes(bytes in tricky_bytes(), compressed in any::<bool>()) {
        check_arbitrary(&bytes, ".ndjson", compressed);
    }

    #[test]
    fn garbage_named_gz_is_an_input_error_not_a_panic(bytes in tricky_bytes()) {
        let file = temp_input("x.csv.gz", &bytes);
        let source = InputSource::detect(&file.path, None).unwrap();
        let _ = input::survey(&source);
        let (_, error) = read_all(&source);
        let is_gzip_error = matches!(error, Some(InputError::Gzip { .. }));
        // Only an empty file decodes as an empty stream, which has no CSV header.
        prop_assert!(is_gzip_error || bytes.is_empty(), "{:?}", error);
    }

    #[test]
    fn csv_rows_read_back_with_their_values_lines_and_bytes(
        (columns, rows) in csv_table(),
        crlf in any::<bool>(),
        bom in any::<bool>(),
        drop_last_terminator in any::<bool>(),
        compressed in any::<bool>(),
    ) {
        let header: Vec<String> = (0..columns).map(|index| format!("col{index}")).collect();
        let mut builder = csv::WriterBuilder::new();
        if crlf {
            builder.terminator(csv::Terminator::CRLF);
        }
        let prefix = if bom { vec![0xef, 0xbb, 0xbf] } else { Vec::new() };
        let mut writer = builder.from_writer(prefix);
        writer.write_record(&header).unwrap();
        writer.flush().unwrap();
        let mut spans = Vec::new();
        for row in &rows {
            let start = writer.get_ref().len();
            writer.write_record(row).unwrap();
            writer.flush().unwrap();
            spans.push(start..writer.get_ref().len());
        }
        let mut bytes = writer.into_inner().unwrap();
        if drop_last_terminator && !rows.is_empty() {
            let cut = if crlf { 2 } else { 1 };
            bytes.truncate(bytes.len() - cut);
            let last = spans.len() - 1;
            spans[last].end -= cut;
        }
        let (_file, source) = write_and_read("rows.csv", &bytes, compressed);
        let survey = input::survey(&source).unwrap();
        prop_assert_eq!(survey.header, Some(header.clone()));
        let (read, error) = read_all(&source);
        prop_assert!(error.is_none(), "{:?}", error);
        prop_assert_eq!(read.len(), rows.len());
        for ((record, row), span) in read.iter().zip(&rows).zip(&spans) {
            let expected: Map<String, Value> = header
                .iter()
                .zip(row)
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect();
            prop_assert_eq!(record.fields.as_ref(), Ok(&expected));
            prop_assert_eq!(record.line, csv_line_breaks(&bytes[..span.start]) + 1);
            prop_assert_eq!(&bytes[span_of(record)], &bytes[span.clone()]);
            prop_assert_eq!(span_of(record), span.clone());
        }
    }

    #[test]
    fn ndjson_lines_read_back_with_their_values_lines_and_bytes(
        objects in json_objects(),
        crlf in any::<bool>(),
        blank_lines in prop::collection::vec(prop::sample::select(vec!["", "  ", "\t", " \r"]), 0..10),
        drop_last_terminator in any::<bool>(),
        compressed in any::<bool>(),
    ) {
        let terminator = if crlf { "\r\n" } else { "\n" };
        let mut bytes = Vec::new();
        let mut spans = Vec::new();
        for (index, object) in objects.iter().enumerate() {
            if let Some(blank) = blank_lines.get(index) {
                bytes.extend_from_slice(blank.as_bytes());
                bytes.push(b'\n');
            }
            let start = bytes.len();
            bytes.extend_from_slice(serde_json::to_string(object).unwrap().as_bytes());
            bytes.extend_from_slice(terminator.as_bytes());
            spans.push(start..bytes.len());
        }
        if drop_last_terminator && !objects.is_empty() {
            bytes.truncate(bytes.len() - terminator.len());
            let last = spans.len() - 1;
            spans[last].end -= terminator.len();
        }
        let (_file, source) = write_and_read("rows.ndjson", &bytes, compressed);
        let survey = input::survey(&source).unwrap();
        let mut expected_names: Vec<String> = Vec::new();
        for object in &objects {
            for key in object.keys() {
                if !expected_names.contains(key) {
                    expected_names.push(key.clone());
                }
            }
        }
        let surveyed: Vec<String> = survey.field_names.iter().map(|(name, _)| name.clone()).collect();
        prop_assert_eq!(surveyed, expected_names);
        let (read, error) = read_all(&source);
        prop_assert!(error.is_none(), "{:?}", error);
        prop_assert_eq!(read.len(), objects.len());
        for ((record, object), span) in read.iter().zip(&objects).zip(&spans) {
            prop_assert_eq!(record.fields.as_ref(), Ok(object));
            prop_assert_eq!(record.line, ndjson_line_breaks(&bytes[..span.start]) + 1);
            prop_assert_eq!(span_of(record), span.clone());
        }
    }
}
