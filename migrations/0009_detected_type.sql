-- Type checks: what an upload's first bytes show (e.g. `image/png`), recorded with the object and
-- with each multipart part (Complete takes the first part's); NULL when nothing was recognised or
-- for rows stored before detection. Verification (bytes must match the declared Content-Type) is
-- opt-in per link and per bucket; presigned POST policies opt in with a form field.
ALTER TABLE objects ADD COLUMN detected_type TEXT;
ALTER TABLE parts ADD COLUMN detected_type TEXT;
ALTER TABLE links ADD COLUMN verify_type INTEGER NOT NULL DEFAULT 0;
ALTER TABLE buckets ADD COLUMN verify_type INTEGER NOT NULL DEFAULT 0;
