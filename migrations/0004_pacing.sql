-- kustomer-import checkpoint, schema version 4 (version 3 belongs to another change; the runner
-- only needs versions to increase).
-- The send phase's view of the org's rate-limit window, so that `status` (another process) can
-- show what the other clients spend and what the import takes: one row, replaced every few
-- seconds by the running `run` or `resume`, and left as it last was when the run ends.
CREATE TABLE pacing (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    updated_at_ms        INTEGER NOT NULL,
    -- 1 once responses carried x-ratelimit-limit/-remaining/-reset and the share adapts.
    adaptive             INTEGER NOT NULL,
    -- 1 when responses came back without those headers (paced at the ceiling alone).
    rate_headers_missing INTEGER NOT NULL,
    ceiling_per_minute   INTEGER NOT NULL,
    org_limit            INTEGER,
    reserve              INTEGER,
    others_per_minute    REAL,
    import_per_minute    REAL,
    allowed_per_minute   REAL,
    yielded_ms           INTEGER NOT NULL,
    paused_until_ms      INTEGER
);
