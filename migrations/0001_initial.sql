-- kustomer-import checkpoint, schema version 1.
-- Released migrations are never edited: add a new numbered file instead.

-- The one job this checkpoint holds. The API key is never stored.
CREATE TABLE job (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    input_display       TEXT    NOT NULL,
    input_path          TEXT    NOT NULL,
    input_size          INTEGER NOT NULL,
    input_sha256        TEXT    NOT NULL,
    format              TEXT    NOT NULL CHECK (format IN ('csv', 'ndjson')),
    compression         TEXT    NOT NULL CHECK (compression IN ('none', 'gzip')),
    base_url            TEXT    NOT NULL,
    imported_at         TEXT    NOT NULL,
    audit_fields        INTEGER NOT NULL,
    created_by          TEXT,
    timezone            TEXT    NOT NULL,
    ignore_unknown      INTEGER NOT NULL,
    settings_json       TEXT    NOT NULL DEFAULT '{}',
    tool_version        TEXT    NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    staged_through_line INTEGER NOT NULL DEFAULT 0,
    staging_complete    INTEGER NOT NULL DEFAULT 0,
    updated_at_ms       INTEGER NOT NULL
);

-- One row per input row, keyed by the physical line where it starts.
CREATE TABLE row (
    line             INTEGER PRIMARY KEY,
    byte_offset      INTEGER NOT NULL,
    byte_len         INTEGER NOT NULL,
    external_id      TEXT,
    conversation_id  TEXT,
    sent_at          TEXT,
    sent_at_micros   INTEGER,
    body             TEXT,
    state            TEXT    NOT NULL CHECK (state IN
                         ('pending', 'sending', 'succeeded', 'failed', 'invalid', 'duplicate')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    http_status      INTEGER,
    message_id       TEXT,
    error_code       TEXT,
    error_message    TEXT,
    retryable        INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    last_attempt_ms  INTEGER,
    finished_ms      INTEGER,
    latency_ms       INTEGER
);

CREATE INDEX row_by_conversation ON row (conversation_id, sent_at_micros, line);
CREATE INDEX row_by_external_id ON row (external_id);
CREATE INDEX row_by_state ON row (state);
CREATE INDEX row_by_finished ON row (finished_ms) WHERE finished_ms IS NOT NULL;
