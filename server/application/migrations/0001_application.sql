-- Online applications: catalogue overrides, applications, attachments, history, signed evidence.

-- A municipality's switch for a national procedure (absent = enabled).
CREATE TABLE application_procedure_settings (
    municipality_code TEXT NOT NULL REFERENCES municipalities(code),
    procedure_code TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (municipality_code, procedure_code)
) WITHOUT ROWID;

-- A municipality's own procedures (code starts with "local."), definition as JSON.
CREATE TABLE application_local_procedures (
    municipality_code TEXT NOT NULL REFERENCES municipalities(code),
    procedure_code TEXT NOT NULL,
    definition TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (municipality_code, procedure_code)
) WITHOUT ROWID;

CREATE TABLE applications (
    application_id TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    municipality_code TEXT NOT NULL REFERENCES municipalities(code),
    procedure_code TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'submitted', 'accepted', 'correction_requested',
                                           'resubmitted', 'decided', 'withdrawn')),
    version INTEGER NOT NULL,
    form_json TEXT NOT NULL,
    corrections_json TEXT NOT NULL DEFAULT '[]',
    decision TEXT NOT NULL DEFAULT '' CHECK (decision IN ('', 'approved', 'rejected')),
    result_text TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    submitted_at_ms INTEGER,
    last_submitted_at_ms INTEGER,
    accepted_at_ms INTEGER,
    decided_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX applications_resident ON applications(resident_id, application_id);
CREATE INDEX applications_queue ON applications(municipality_code, submitted_at_ms, application_id);

CREATE TABLE application_attachments (
    attachment_id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications(application_id),
    slot TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    filename TEXT NOT NULL DEFAULT '',
    uploaded_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX application_attachments_app ON application_attachments(application_id, slot);
CREATE INDEX application_attachments_sha ON application_attachments(sha256);

CREATE TABLE application_history (
    application_id TEXT NOT NULL REFERENCES applications(application_id),
    seq INTEGER NOT NULL,
    actor TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    version INTEGER NOT NULL,
    PRIMARY KEY (application_id, seq)
) WITHOUT ROWID;

-- What was signed, the signature and the certificate, kept for audit (never changed).
CREATE TABLE application_evidence (
    evidence_id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications(application_id),
    version INTEGER NOT NULL,
    canonical BLOB NOT NULL,
    signature BLOB NOT NULL,
    certificate BLOB NOT NULL,
    certificate_issuer TEXT NOT NULL,
    certificate_serial TEXT NOT NULL,
    arrived_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX application_evidence_app ON application_evidence(application_id, arrived_at_ms, evidence_id);
