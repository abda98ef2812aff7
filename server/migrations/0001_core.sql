-- Idempotency records: a mutating RPC retried with the same request_id gets its first outcome.
-- The response (or google.rpc.Status of a failure) is stored in the same transaction as the work.
CREATE TABLE idempotency (
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    outcome BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (caller, method, request_id)
) WITHOUT ROWID;
