-- MyKey platform and the municipal points ledger. By rule no My Number, and no lending or purchase
-- history (what was borrowed or bought) is kept anywhere here: only who is a member where, and
-- amounts of points.

-- MyKey ID: 8 random letters/digits, bound to the card's authentication certificate (issuer+serial).
CREATE TABLE mykeys (
    mykey_id TEXT PRIMARY KEY CHECK (length(mykey_id) = 8),
    resident_id TEXT NOT NULL UNIQUE,
    auth_issuer TEXT NOT NULL,
    auth_serial TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    relinked_at_ms INTEGER
) WITHOUT ROWID;
CREATE UNIQUE INDEX mykeys_card ON mykeys(auth_issuer, auth_serial);

-- Accounts that move value, bound with a fresh card signature. One owner per account.
CREATE TABLE points_bound_accounts (
    kind TEXT NOT NULL CHECK (kind IN ('partner', 'payment')),
    provider TEXT NOT NULL,
    account_ref TEXT NOT NULL,
    mykey_id TEXT NOT NULL REFERENCES mykeys(mykey_id),
    bound_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, provider, account_ref)
) WITHOUT ROWID;

-- Facility memberships: the facility's own member number, nothing else.
CREATE TABLE memberships (
    facility_id TEXT NOT NULL,
    mykey_id TEXT NOT NULL REFERENCES mykeys(mykey_id),
    facility_kind TEXT NOT NULL,
    member_number TEXT NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    PRIMARY KEY (facility_id, mykey_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX memberships_number ON memberships(facility_id, member_number);

CREATE TABLE points_partner_rates (
    partner_id TEXT PRIMARY KEY,
    rate_milli INTEGER NOT NULL CHECK (rate_milli > 0),
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE points_rules (
    municipality_code TEXT PRIMARY KEY,
    expiry_months INTEGER NOT NULL CHECK (expiry_months > 0),
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE points_events (
    event_id TEXT PRIMARY KEY,
    municipality_code TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE points_event_merchants (
    event_id TEXT NOT NULL REFERENCES points_events(event_id),
    merchant_id TEXT NOT NULL,
    PRIMARY KEY (event_id, merchant_id)
) WITHOUT ROWID;

-- Ledger accounts. balance = credits - debits posted; pending = debits held by redemptions.
-- resident/holding accounts may never be overdrawn, holds included (the CHECK is the last guard).
CREATE TABLE points_accounts (
    account_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('resident', 'holding', 'issuance', 'partner', 'merchant', 'expired', 'event_fund')),
    owner TEXT NOT NULL,                       -- mykey id, partner id, merchant id, event id, '' (issuance/expired)
    municipality_code TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL DEFAULT '',         -- a resident's support event account
    balance INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0 CHECK (pending >= 0),
    CHECK (kind NOT IN ('resident', 'holding') OR balance - pending >= 0),
    UNIQUE (kind, owner, municipality_code, event_id)
);

-- Posted transfers: immutable (triggers below); a correction is a new transfer.
CREATE TABLE points_transfers (
    seq INTEGER PRIMARY KEY,
    transfer_id TEXT NOT NULL UNIQUE,
    debit_account_id INTEGER NOT NULL REFERENCES points_accounts(account_id),
    credit_account_id INTEGER NOT NULL REFERENCES points_accounts(account_id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    code TEXT NOT NULL CHECK (code IN ('grant', 'convert', 'place', 'capture', 'donate', 'expire')),
    ref TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    CHECK (debit_account_id <> credit_account_id)
);
CREATE INDEX points_transfers_debit ON points_transfers(debit_account_id, seq);
CREATE INDEX points_transfers_credit ON points_transfers(credit_account_id, seq);
CREATE TRIGGER points_transfers_immutable BEFORE UPDATE ON points_transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;
CREATE TRIGGER points_transfers_undeletable BEFORE DELETE ON points_transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;

-- Lots: each credit to a resident account, consumed oldest first by spending and expiry.
CREATE TABLE points_lots (
    lot_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES points_accounts(account_id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    granted_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX points_lots_open ON points_lots(account_id, expires_at_ms, lot_id) WHERE remaining > 0;
CREATE INDEX points_lots_expiry ON points_lots(expires_at_ms) WHERE remaining > 0;

-- Converted partner points waiting (up to 14 days) in the holding account for a municipality.
CREATE TABLE points_conversions (
    conversion_id TEXT PRIMARY KEY,
    mykey_id TEXT NOT NULL REFERENCES mykeys(mykey_id),
    partner_id TEXT NOT NULL,
    partner_points INTEGER NOT NULL,
    municipal_points INTEGER NOT NULL CHECK (municipal_points > 0),
    held_until_ms INTEGER NOT NULL,
    placed_at_ms INTEGER,
    placed_municipality TEXT
) WITHOUT ROWID;
CREATE INDEX points_conversions_held ON points_conversions(held_until_ms) WHERE placed_at_ms IS NULL;
CREATE INDEX points_conversions_mykey ON points_conversions(mykey_id, conversion_id);

-- Redemption holds (authorise -> capture | void | expire). A hold resolves once.
CREATE TABLE points_holds (
    hold_id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES points_accounts(account_id),
    merchant_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    state TEXT NOT NULL CHECK (state IN ('pending', 'captured', 'voided', 'expired')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    resolved_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX points_holds_pending ON points_holds(account_id, expires_at_ms) WHERE state = 'pending';
CREATE INDEX points_holds_expiry ON points_holds(expires_at_ms) WHERE state = 'pending';
CREATE TRIGGER points_holds_resolve_once BEFORE UPDATE ON points_holds WHEN OLD.state <> 'pending'
BEGIN SELECT RAISE(ABORT, 'a hold resolves once'); END;

-- First outcome of every points request (the idempotency key), stored in the same transaction.
CREATE TABLE points_requests (
    caller TEXT NOT NULL,
    method TEXT NOT NULL,
    request_id TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    failed INTEGER NOT NULL,
    outcome BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (caller, method, request_id)
) WITHOUT ROWID;
