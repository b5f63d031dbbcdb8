//! Builders shared by the checkpoint's tests and the writer's and report's
//! (`#[cfg(test)]` only).

use std::path::PathBuf;

use rusqlite::Connection;

use super::{Checkpoint, Job, StagedKind, StagedRow};
use crate::input::{Compression, Format};
use crate::row::ValidRow;

pub(crate) fn sample_job() -> Job {
    Job {
        input_display: "messages.csv".to_string(),
        input_path: PathBuf::from("/data/messages.csv"),
        input_size: 1234,
        input_sha256: "ab".repeat(32),
        format: Format::Csv,
        compression: Compression::Gzip,
        base_url: "https://acme.api.kustomerapp.com".to_string(),
        imported_at: "2024-05-01T12:00:00.000Z".to_string(),
        audit_fields: true,
        created_by: Some("0123456789abcdef01234567".to_string()),
        timezone: "Europe/Paris".to_string(),
        ignore_unknown: false,
        settings: serde_json::json!({"concurrency": 8, "rate": 250}),
        tool_version: "0.1.0".to_string(),
        created_at_ms: 1_714_564_800_000,
        staged_through_line: 0,
        staging_complete: false,
    }
}

pub(crate) fn valid(line: u64, conversation: &str, external_id: &str, micros: i64) -> StagedRow {
    StagedRow {
        line,
        byte_offset: line * 100,
        byte_len: 100,
        kind: StagedKind::Valid(ValidRow {
            conversation_id: Some(conversation.to_string()),
            ticket: None,
            external_id: external_id.to_string(),
            sent_at: format!("t{micros}"),
            sent_at_micros: micros,
            body: format!("{{\"externalId\":\"{external_id}\",\"line\":{line}}}"),
        }),
    }
}

pub(crate) fn invalid(line: u64, reason: &str) -> StagedRow {
    StagedRow {
        line,
        byte_offset: line * 100,
        byte_len: 100,
        kind: StagedKind::Invalid {
            reason: reason.to_string(),
            conversation_id: Some("c-bad".to_string()),
            external_id: None,
        },
    }
}

/// A checkpoint in a temporary directory holding [`sample_job`].
pub(crate) fn checkpoint_with_job() -> (tempfile::TempDir, Checkpoint) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cp = Checkpoint::open(&dir.path().join("cp.db")).expect("open");
    cp.create_job(&sample_job()).expect("create job");
    (dir, cp)
}

/// Stages `rows` and finishes staging.
pub(crate) fn stage(cp: &mut Checkpoint, rows: Vec<StagedRow>) {
    let mut stager = cp.stager();
    for row in rows {
        stager.add(row).expect("stage row");
    }
    stager.finish().expect("finish staging");
}

/// A second, independent connection, to see only what is committed.
pub(crate) fn observer(cp: &Checkpoint) -> Connection {
    Connection::open(cp.path()).expect("observer connection")
}

pub(crate) fn state_of(conn: &Connection, line: u64) -> String {
    conn.query_row("SELECT state FROM row WHERE line = ?1", [line], |r| {
        r.get("state")
    })
    .expect("row exists")
}
