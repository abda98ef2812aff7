-- The attachment files each signed submission named (from its canonical bytes): an attachment
-- removed later (a correction replaces a photo) keeps its file while evidence names it, for audit.
CREATE TABLE application_evidence_blobs (
    sha256 TEXT NOT NULL,
    evidence_id TEXT NOT NULL REFERENCES application_evidence(evidence_id),
    PRIMARY KEY (sha256, evidence_id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO application_evidence_blobs (sha256, evidence_id)
    SELECT json_extract(a.value, '$.sha256'), e.evidence_id
    FROM application_evidence e, json_each(CAST(e.canonical AS TEXT), '$.attachments') a;
