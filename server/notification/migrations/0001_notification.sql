-- Notices (お知らせ) from a municipality to residents, and what the notification area keeps for
-- the self-information view (自己情報表示). No My Number anywhere, by rule.

-- One notice = one sending: the template as staff wrote it, who it goes to, when.
-- status: scheduled (waiting for send_at), sent (deliveries written), cancelled (never sent).
CREATE TABLE notices (
    notice_id TEXT PRIMARY KEY,
    municipality_code TEXT NOT NULL,
    category TEXT NOT NULL,
    title TEXT NOT NULL,               -- template ({name} ... rendered per delivery)
    body TEXT NOT NULL,                -- template
    link TEXT NOT NULL DEFAULT '',
    audience TEXT NOT NULL,            -- JSON: {"kind": ..., ...} (see server/notification/audience.py)
    fields TEXT NOT NULL DEFAULT '{}', -- JSON: notice-wide personalisation values ({deadline} ...)
    survey TEXT,                       -- JSON list of {"choice_id", "label"}; NULL when not a survey
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'sent', 'cancelled')),
    source TEXT NOT NULL CHECK (source IN ('staff', 'rule', 'sink')),
    send_at_ms INTEGER,
    created_at_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    sent_at_ms INTEGER,
    sent_by TEXT,                      -- which process/caller did the fan-out
    cancelled_at_ms INTEGER,
    recipient_count INTEGER NOT NULL DEFAULT 0,
    dedupe_key TEXT UNIQUE             -- NoticeSink callers' key: a second send returns the first notice
) WITHOUT ROWID;
CREATE INDEX notices_due ON notices(status, send_at_ms) WHERE status = 'scheduled';
CREATE INDEX notices_municipality ON notices(municipality_code, notice_id);

-- One row per (notice, resident): the rendered text as it reached the inbox.
-- seq is the stream cursor: a per-database monotonically increasing sequence (AUTOINCREMENT never
-- reuses a value). Writers are serialised by SQLite, so a reader that sees seq N sees every seq < N.
CREATE TABLE deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id TEXT NOT NULL REFERENCES notices(notice_id),
    resident_id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    delivered_at_ms INTEGER NOT NULL,
    read_at_ms INTEGER,
    UNIQUE (notice_id, resident_id)
);
CREATE INDEX deliveries_inbox ON deliveries(resident_id, seq);

-- A rule fires once per subject (child or household) and occasion, across restarts and processes.
CREATE TABLE rule_firings (
    rule TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    occasion TEXT NOT NULL,
    municipality_code TEXT NOT NULL,
    as_of TEXT NOT NULL,
    notice_id TEXT,
    fired_at_ms INTEGER NOT NULL,
    PRIMARY KEY (rule, subject_id, occasion)
) WITHOUT ROWID;

-- The daily rules run, claimed once per municipality and day by whichever process gets there first.
CREATE TABLE rule_runs (
    municipality_code TEXT NOT NULL,
    as_of TEXT NOT NULL,
    ran_at_ms INTEGER NOT NULL,
    fired INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (municipality_code, as_of)
) WITHOUT ROWID;

-- Households receiving a benefit (registry-side flags owned by this area until the application
-- area's decided applications can be read): child_allowance (児童手当), child_rearing_allowance
-- (児童扶養手当, ひとり親), nursery (保育施設等の利用).
CREATE TABLE benefit_households (
    household_id TEXT NOT NULL,
    program TEXT NOT NULL CHECK (program IN ('child_allowance', 'child_rearing_allowance', 'nursery')),
    municipality_code TEXT NOT NULL,
    since TEXT NOT NULL,
    until TEXT,
    PRIMARY KEY (household_id, program)
) WITHOUT ROWID;

-- Routine vaccination history (予防接種履歴), written by staff, shown in the self-information view.
CREATE TABLE vaccinations (
    vaccination_id TEXT PRIMARY KEY,
    resident_id TEXT NOT NULL,
    municipality_code TEXT NOT NULL,
    vaccine TEXT NOT NULL,
    dose INTEGER NOT NULL CHECK (dose >= 1),
    given_on TEXT NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    recorded_by TEXT NOT NULL,
    UNIQUE (resident_id, vaccine, dose)
) WITHOUT ROWID;

-- Survey answers (アンケート): one per resident and notice.
CREATE TABLE survey_answers (
    notice_id TEXT NOT NULL REFERENCES notices(notice_id),
    resident_id TEXT NOT NULL,
    choice_id TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    answered_at_ms INTEGER NOT NULL,
    PRIMARY KEY (notice_id, resident_id)
) WITHOUT ROWID;

CREATE INDEX rule_firings_notice ON rule_firings(notice_id);
CREATE INDEX vaccinations_resident ON vaccinations(resident_id, given_on);
CREATE INDEX benefit_households_program ON benefit_households(municipality_code, program);
-- Segments by age select children by birth date range within a municipality (registry table; the
-- index is the notification area's, for its segments and rules).
CREATE INDEX IF NOT EXISTS notification_residents_birth ON residents(municipality_code, birth_date);
