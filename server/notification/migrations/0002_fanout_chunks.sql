-- Large fan-outs are written in chunks (one transaction each, so other writers are not held up for
-- the whole audience): the keyset position (last resident_id written) and whether it is complete.
-- A notice with status 'sent' and fanout_done = 0 is still being written; any server process may
-- continue it (each chunk reads the position inside its own write transaction).
ALTER TABLE notices ADD COLUMN fanout_after TEXT;
ALTER TABLE notices ADD COLUMN fanout_done INTEGER NOT NULL DEFAULT 1;
CREATE INDEX notices_fanout_pending ON notices(fanout_done) WHERE fanout_done = 0;
