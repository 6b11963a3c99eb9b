-- Shareable upload links: anyone with the token may upload into `bucket` under `prefix`, within
-- the limits below, with policies the server signs on the creator's behalf.

CREATE TABLE links (
    token         TEXT    PRIMARY KEY,
    -- Public id, stored on uploaded objects as x-amz-meta-upload-link (the token stays secret).
    id            TEXT    NOT NULL UNIQUE,
    bucket        TEXT    NOT NULL REFERENCES buckets(name) ON DELETE CASCADE,
    prefix        TEXT    NOT NULL,
    max_size      INTEGER NOT NULL,
    content_type  TEXT,
    max_files     INTEGER,
    uploaded_files INTEGER NOT NULL DEFAULT 0,
    access_key    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0
);
