-- kustomer-import checkpoint, schema version 7: customers and conversations created in bulk
-- jobs (issue 16, bulk mode). As for rows (0005): the local batch a record was last sent in,
-- and the bulk job's id once the API named it. A record left `sending` with a job id is settled
-- by reading that job's results; one with a batch but no job id is an unknown outcome, looked
-- up by externalId like any other.
ALTER TABLE customer ADD COLUMN bulk_batch TEXT;
ALTER TABLE customer ADD COLUMN bulk_job_id TEXT;
CREATE INDEX customer_by_bulk_batch ON customer (bulk_batch) WHERE bulk_batch IS NOT NULL;
ALTER TABLE conversation ADD COLUMN bulk_batch TEXT;
ALTER TABLE conversation ADD COLUMN bulk_job_id TEXT;
CREATE INDEX conversation_by_bulk_batch ON conversation (bulk_batch) WHERE bulk_batch IS NOT NULL;
