-- Records kept by the municipality about a resident, read by other areas (kiosk/issuance):
-- seal registrations (印鑑登録), tax records (課税), family registers (戸籍), and the residents
-- columns for the family register, death and move-out.

-- 印鑑登録: at most one live (not abolished) registration per resident. Abolition is immediate.
CREATE TABLE seal_registrations (
    registration_id TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    registration_number TEXT NOT NULL,
    registered_on TEXT NOT NULL,           -- YYYY-MM-DD
    abolished_at_ms INTEGER,               -- NULL while the registration is in force
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX seal_registrations_live ON seal_registrations(resident_id) WHERE abolished_at_ms IS NULL;
CREATE INDEX seal_registrations_resident ON seal_registrations(resident_id);

-- Municipal tax record per fiscal year (amounts in yen).
CREATE TABLE tax_records (
    resident_id TEXT NOT NULL REFERENCES residents(resident_id),
    fiscal_year INTEGER NOT NULL,
    total_income INTEGER NOT NULL CHECK (total_income >= 0),
    taxable_income INTEGER NOT NULL CHECK (taxable_income >= 0),
    municipal_tax INTEGER NOT NULL CHECK (municipal_tax >= 0),
    prefectural_tax INTEGER NOT NULL CHECK (prefectural_tax >= 0),
    dependents INTEGER NOT NULL DEFAULT 0 CHECK (dependents >= 0),
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (resident_id, fiscal_year)
) WITHOUT ROWID;

-- 戸籍: one register per 本籍地 + 筆頭者. pending_notification = 1 while a notification (届出)
-- is received but not yet reflected in the register.
CREATE TABLE family_registers (
    register_id TEXT PRIMARY KEY,
    honseki_code TEXT NOT NULL REFERENCES municipalities(code),
    honseki_address TEXT NOT NULL,
    head_name TEXT NOT NULL,               -- 筆頭者
    pending_notification INTEGER NOT NULL DEFAULT 0 CHECK (pending_notification IN (0, 1)),
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Members of a family register (in register order). resident_id is NULL for members who are not
-- residents known to the platform (e.g. living abroad or deceased before the platform).
CREATE TABLE family_register_members (
    register_id TEXT NOT NULL REFERENCES family_registers(register_id),
    member_no INTEGER NOT NULL CHECK (member_no >= 1),
    resident_id TEXT REFERENCES residents(resident_id),
    name TEXT NOT NULL,
    birth_date TEXT NOT NULL,              -- YYYY-MM-DD
    sex TEXT NOT NULL CHECK (sex IN ('1', '2', '3')),
    relationship TEXT NOT NULL DEFAULT '', -- 続柄 (e.g. 筆頭者, 妻, 長男)
    removed INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),  -- 除籍
    PRIMARY KEY (register_id, member_no)
) WITHOUT ROWID;
CREATE INDEX family_register_members_resident ON family_register_members(resident_id);

ALTER TABLE residents ADD COLUMN family_register_id TEXT REFERENCES family_registers(register_id);
ALTER TABLE residents ADD COLUMN deceased_on TEXT;        -- YYYY-MM-DD, with status 'deceased'
ALTER TABLE residents ADD COLUMN moving_out_on TEXT;      -- planned move-out date (転出予定)
ALTER TABLE residents ADD COLUMN moved_out_to TEXT;       -- destination address or municipality
