-- Corrections: a grant made in error is corrected by a NEW reversing transfer (code 'correction',
-- ref = the corrected transfer's id), never by an edit. SQLite cannot alter a CHECK, so the table
-- is rebuilt with the wider code list; rows, indexes and the immutability triggers are kept.
DROP TRIGGER points_transfers_immutable;
DROP TRIGGER points_transfers_undeletable;
CREATE TABLE points_transfers_v2 (
    seq INTEGER PRIMARY KEY,
    transfer_id TEXT NOT NULL UNIQUE,
    debit_account_id INTEGER NOT NULL REFERENCES points_accounts(account_id),
    credit_account_id INTEGER NOT NULL REFERENCES points_accounts(account_id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    code TEXT NOT NULL CHECK (code IN ('grant', 'convert', 'place', 'capture', 'donate', 'expire', 'correction')),
    ref TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
INSERT INTO points_transfers_v2 (seq, transfer_id, debit_account_id, credit_account_id, amount, code, ref, created_at_ms)
    SELECT seq, transfer_id, debit_account_id, credit_account_id, amount, code, ref, created_at_ms FROM points_transfers;
DROP TABLE points_transfers;
ALTER TABLE points_transfers_v2 RENAME TO points_transfers;
CREATE INDEX points_transfers_debit ON points_transfers(debit_account_id, seq);
CREATE INDEX points_transfers_credit ON points_transfers(credit_account_id, seq);
CREATE INDEX points_transfers_ref ON points_transfers(ref) WHERE code = 'correction';
CREATE TRIGGER points_transfers_immutable BEFORE UPDATE ON points_transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;
CREATE TRIGGER points_transfers_undeletable BEFORE DELETE ON points_transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;
