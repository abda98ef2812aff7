-- Sign-in challenges: single use, short life; shared by every server process on this database.
CREATE TABLE challenges (
    challenge_id TEXT PRIMARY KEY,
    nonce BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX challenges_expiry ON challenges(expires_at_ms);

-- Resident sessions. Tokens are stored only as SHA-256 hashes.
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    access_hash BLOB NOT NULL UNIQUE,
    refresh_hash BLOB NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    access_expires_ms INTEGER NOT NULL,
    absolute_expires_ms INTEGER NOT NULL,
    ended_at_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX sessions_resident ON sessions(resident_id);

-- Card revocation lists received through SubmitRevocationList (newest per issuer).
CREATE TABLE card_crls (
    issuer TEXT PRIMARY KEY,
    der BLOB NOT NULL,
    this_update_ms INTEGER NOT NULL
) WITHOUT ROWID;
