-- Challenges are no longer stored when made (server/auth/challenges.py): their ids are MAC'd with
-- this key, shared by every server process on the database (the first to start makes it).
CREATE TABLE challenge_keys (
    key_id INTEGER PRIMARY KEY,
    secret BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- A row is a spent challenge, kept until an hour past its expiry: the key makes a nonce sign in
-- once, across processes (an id's expiry is part of the id, so (expiry, id) is unique exactly when
-- the id is). Expiry first: the purge and the timers' count read a range of the key, and no second
-- index costs every sign-in a page write. (Challenges outstanding at the upgrade are not carried
-- over: they live two minutes and their callers ask for new ones.)
DROP TABLE challenges;
CREATE TABLE challenges (
    expires_at_ms INTEGER NOT NULL,
    challenge_id TEXT NOT NULL,
    used_at_ms INTEGER NOT NULL,
    PRIMARY KEY (expires_at_ms, challenge_id)
) WITHOUT ROWID;
