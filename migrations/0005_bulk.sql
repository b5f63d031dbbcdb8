-- kustomer-import checkpoint, schema version 5: bulk jobs.
-- The local batch a row was last sent in, and the bulk job's id once the API named it. A row
-- left `sending` with a job id is settled by reading that job's results, never by resending it;
-- one with a batch but no job id is an unknown outcome, looked up like any other.
ALTER TABLE row ADD COLUMN bulk_batch TEXT;
ALTER TABLE row ADD COLUMN bulk_job_id TEXT;
CREATE INDEX row_by_bulk_batch ON row (bulk_batch) WHERE bulk_batch IS NOT NULL;
-- What the running job has spent, for `status`'s messages per request: its requests of every
-- kind, and when the run began.
ALTER TABLE pacing ADD COLUMN requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pacing ADD COLUMN run_started_ms INTEGER;
