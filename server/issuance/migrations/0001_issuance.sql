-- Kiosk issuance (コンビニ交付): settings per municipality, kiosk transactions and their answered
-- steps, issued documents, charges, the 123 yen per copy owed to store operators, 利用登録.

-- A municipality's kiosk settings; a municipality without a row has the defaults (see rules.py).
CREATE TABLE kiosk_settings (
    municipality_code TEXT PRIMARY KEY REFERENCES municipalities(code),
    settings_json TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- One customer's transaction at one kiosk. state: begun -> signed_in -> ordered -> paid ->
-- finished, or cancelled / expired / locked. The card holder is bound to this row only.
CREATE TABLE kiosk_transactions (
    txn_id TEXT PRIMARY KEY,
    kiosk_id TEXT NOT NULL,
    kiosk_transaction_id TEXT NOT NULL,
    operator TEXT NOT NULL,
    kiosk_kind TEXT NOT NULL,
    kiosk_lg TEXT,
    state TEXT NOT NULL,
    challenge_id TEXT NOT NULL,
    resident_id TEXT REFERENCES residents(resident_id),
    order_json TEXT,
    quote_yen INTEGER,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    UNIQUE (kiosk_id, kiosk_transaction_id)
) WITHOUT ROWID;
CREATE INDEX kiosk_transactions_open ON kiosk_transactions(state, expires_at_ms);

-- The first answer to every step (the response with document PDFs stripped; they are re-read
-- from the blob store on a replay).
CREATE TABLE kiosk_steps (
    kiosk_id TEXT NOT NULL,
    kiosk_transaction_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    response BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (kiosk_id, kiosk_transaction_id, step_id)
) WITHOUT ROWID;

-- Serial numbers per issuing municipality and year.
CREATE TABLE issuance_serials (
    municipality_code TEXT NOT NULL,
    year INTEGER NOT NULL,
    last_no INTEGER NOT NULL,
    PRIMARY KEY (municipality_code, year)
) WITHOUT ROWID;

-- One row per issued copy. status: issued (handed to the printer) -> printed | voided.
CREATE TABLE issued_documents (
    document_id TEXT PRIMARY KEY,
    txn_id TEXT NOT NULL REFERENCES kiosk_transactions(txn_id),
    copy_no INTEGER NOT NULL,
    serial TEXT NOT NULL UNIQUE,
    verification_code TEXT NOT NULL UNIQUE,
    certificate_type INTEGER NOT NULL,
    municipality_code TEXT NOT NULL,
    subject_resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    holder_resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    pdf_sha256 TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('issued', 'printed', 'voided')),
    issued_at_ms INTEGER NOT NULL,
    resolved_at_ms INTEGER,
    UNIQUE (txn_id, copy_no)
) WITHOUT ROWID;

-- The fee for one copy: pending when the document is issued, posted by a confirmed print,
-- voided by a failed print, a cancel or an expiry.
CREATE TABLE issuance_charges (
    charge_id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL UNIQUE REFERENCES issued_documents(document_id),
    txn_id TEXT NOT NULL,
    municipality_code TEXT NOT NULL,
    operator TEXT NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'voided')),
    created_at_ms INTEGER NOT NULL,
    resolved_at_ms INTEGER
) WITHOUT ROWID;

-- What the municipality owes the store operator: 123 yen per issued (printed) copy.
CREATE TABLE operator_fee_lines (
    document_id TEXT PRIMARY KEY REFERENCES issued_documents(document_id),
    municipality_code TEXT NOT NULL,
    operator TEXT NOT NULL,
    month TEXT NOT NULL,               -- YYYY-MM (JST)
    amount_yen INTEGER NOT NULL,
    fee_collected_yen INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX operator_fee_lines_month ON operator_fee_lines(municipality_code, month, operator);

-- 利用登録: a resident's one-time registration to take 本籍地 certificates at kiosks.
CREATE TABLE honseki_usages (
    usage_id TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    honseki_code TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    applied_at_ms INTEGER NOT NULL,
    decided_at_ms INTEGER,
    UNIQUE (resident_id, honseki_code)
) WITHOUT ROWID;
CREATE INDEX honseki_usages_code ON honseki_usages(honseki_code, usage_id);
