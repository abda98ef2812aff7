-- Challenges are no longer stored when made (server/auth/challenges.py): their ids are MAC'd with
-- this key, shared by every server process on the database (the first to start makes it).
CREATE TABLE challenge_keys (
    key_id INTEGER PRIMARY KEY,
    secret BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- A row is a spent challenge, kept until an hour past its expiry: the primary key makes a nonce
-- sign in once, across processes. (Challenges outstanding at the upgrade are not carried over:
-- they live two minutes and their callers ask for new ones.)
DROP TABLE challenges;
CREATE TABLE challenges (
    challenge_id TEXT PRIMARY KEY,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX challenges_expiry ON challenges(expires_at_ms);
