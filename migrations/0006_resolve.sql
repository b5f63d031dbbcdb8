-- kustomer-import checkpoint, schema version 6: resolving source tickets (issue 16).
-- A row may name its conversation by the source ticket's id instead of a Kustomer id: it is
-- staged with conversation_id NULL (so no send query picks it) and its ticket key, and gets the
-- resolved conversation id once the resolve phase has found or created it.
ALTER TABLE row ADD COLUMN ticket_key TEXT;
-- The customer the row names (customer.source_key), and the ticket's attributes as the row gives
-- them (JSON of row::TicketRef): the ticket takes them from its earliest row.
ALTER TABLE row ADD COLUMN customer_key TEXT;
ALTER TABLE row ADD COLUMN ticket_json TEXT;
CREATE INDEX row_by_ticket ON row (ticket_key, sent_at_micros, line) WHERE ticket_key IS NOT NULL;

-- One per customer named by the input: found by externalId, by email, or created once.
-- state: pending (nothing asked yet), sending (a create may be in flight or stored: settled by
-- lookup before any resend), resolved, failed.
CREATE TABLE customer (
    source_key      TEXT PRIMARY KEY,
    external_id     TEXT,
    email           TEXT,
    name            TEXT,
    phone           TEXT,
    kustomer_id     TEXT,
    resolved_by     TEXT CHECK (resolved_by IN
                        ('found_by_external_id', 'found_by_email', 'created', 'failed')),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'sending', 'resolved', 'failed')),
    error_code      TEXT,
    error_message   TEXT,
    retryable       INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    last_attempt_ms INTEGER,
    finished_ms     INTEGER
);

-- One per source ticket: found by externalId (when it belongs to the row's customer) or created.
CREATE TABLE conversation (
    source_key      TEXT PRIMARY KEY,
    customer_key    TEXT NOT NULL REFERENCES customer (source_key),
    name            TEXT,
    status          TEXT,
    tags_json       TEXT NOT NULL DEFAULT '[]',
    created_at      TEXT,
    kustomer_id     TEXT,
    resolved_by     TEXT CHECK (resolved_by IN ('found_by_external_id', 'created', 'failed')),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN
                        ('pending', 'sending', 'resolved', 'failed')),
    error_code      TEXT,
    error_message   TEXT,
    retryable       INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    last_attempt_ms INTEGER,
    finished_ms     INTEGER
);
CREATE INDEX conversation_by_customer ON conversation (customer_key);
