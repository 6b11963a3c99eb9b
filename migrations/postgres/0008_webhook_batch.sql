-- A webhook target's batch (SQLite's migration 0019): the most records one POST carries when
-- several of its deliveries are due at once (1: one record per POST, as S3 sends; up to 100).
ALTER TABLE webhooks ADD COLUMN batch INTEGER NOT NULL DEFAULT 1 CHECK (batch BETWEEN 1 AND 100);
