-- Multipart uploads in progress and their parts, shared by the nodes (`--control-db`): an
-- upload begun on one node continues, lists, completes or aborts on any other. The same columns
-- as SQLite's `uploads`/`parts` (migrations/0002, 0004, 0009); `headers` is the JSON of the
-- headers given at Create, with the S3 backend's `backend_upload_id`. Under the S3 backend a
-- part's `blob` is the backend's part ETag.
CREATE TABLE uploads (
    upload_id  TEXT   PRIMARY KEY,
    bucket     TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    owner      TEXT   NOT NULL,
    initiated  BIGINT NOT NULL,
    headers    TEXT   NOT NULL,
    -- The upload link whose slot the upload holds (NULL: an ordinary S3 upload).
    link_id    TEXT
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, initiated);
CREATE INDEX uploads_by_initiated ON uploads (initiated);
CREATE INDEX uploads_by_link ON uploads (link_id) WHERE link_id IS NOT NULL;

CREATE TABLE parts (
    upload_id     TEXT   NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    part_number   INTEGER NOT NULL,
    size          BIGINT NOT NULL,
    etag          TEXT   NOT NULL,
    blob          TEXT   NOT NULL,
    last_modified BIGINT NOT NULL,
    checksum      TEXT,
    detected_type TEXT,
    PRIMARY KEY (upload_id, part_number)
);
