-- kustomer-import checkpoint, schema version 2.
-- `status` reports when the first send was attempted while a run writes; without an index that
-- is a scan of every row (bodies included) on each call.
CREATE INDEX row_by_first_attempt ON row (first_attempt_ms) WHERE first_attempt_ms IS NOT NULL;
