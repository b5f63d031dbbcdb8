-- kustomer-import checkpoint, schema version 3.
-- `latency_ms` is the last attempt's time from request start to response; the time that attempt
-- waited for the rate budget and a concurrency slot before it could start is kept apart, so the
-- latency chart measures the API and not our own pacing.
ALTER TABLE row ADD COLUMN budget_wait_ms INTEGER;
