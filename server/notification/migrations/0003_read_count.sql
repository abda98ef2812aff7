-- Reads counted on the notice as they happen (MarkNoticeRead, AnswerSurvey), so showing a notice's
-- delivered and read counts costs one row, whatever the size of its audience.
ALTER TABLE notices ADD COLUMN read_count INTEGER NOT NULL DEFAULT 0;
