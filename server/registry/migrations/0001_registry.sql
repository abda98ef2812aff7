-- Municipalities and wards of Japan (real 6-digit local-government codes, check digit included).
CREATE TABLE municipalities (
    code TEXT PRIMARY KEY CHECK (length(code) = 6),
    prefecture TEXT NOT NULL,
    name TEXT NOT NULL,
    name_kana TEXT NOT NULL,
    url TEXT NOT NULL DEFAULT '',
    latitude REAL,
    longitude REAL
) WITHOUT ROWID;

CREATE TABLE households (
    household_id TEXT PRIMARY KEY,
    municipality_code TEXT NOT NULL REFERENCES municipalities(code),
    head_resident_id TEXT
) WITHOUT ROWID;

-- A resident as the municipality's resident register (住民基本台帳) knows them. No My Number is
-- stored, by rule; residents are known by a platform id.
CREATE TABLE residents (
    resident_id TEXT PRIMARY KEY,
    municipality_code TEXT NOT NULL REFERENCES municipalities(code),
    household_id TEXT REFERENCES households(household_id),
    name TEXT NOT NULL,
    name_kana TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL,            -- YYYY-MM-DD
    sex TEXT NOT NULL CHECK (sex IN ('1', '2', '3')),
    address TEXT NOT NULL,
    relationship TEXT NOT NULL DEFAULT '',  -- 続柄 to the head of household
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'moving_out', 'moved_out', 'deceased')),
    moved_in_on TEXT,
    moved_out_on TEXT,
    dv_protection INTEGER NOT NULL DEFAULT 0,
    honseki_code TEXT REFERENCES municipalities(code),  -- 本籍地
    version INTEGER NOT NULL DEFAULT 1,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX residents_municipality ON residents(municipality_code, resident_id);
CREATE INDEX residents_household ON residents(household_id);

-- The card certificates bound to a resident (issuer + serial of both). One active link per card.
CREATE TABLE card_links (
    link_id TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    auth_issuer TEXT NOT NULL,
    auth_serial TEXT NOT NULL,
    sign_issuer TEXT NOT NULL,
    sign_serial TEXT NOT NULL,
    linked_at_ms INTEGER NOT NULL,
    unlinked_at_ms INTEGER
) WITHOUT ROWID;
CREATE UNIQUE INDEX card_links_auth_active ON card_links(auth_issuer, auth_serial) WHERE unlinked_at_ms IS NULL;
CREATE UNIQUE INDEX card_links_sign_active ON card_links(sign_issuer, sign_serial) WHERE unlinked_at_ms IS NULL;
CREATE INDEX card_links_resident ON card_links(resident_id);
