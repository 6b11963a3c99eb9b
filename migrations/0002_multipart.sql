-- Multipart uploads (S3's CreateMultipartUpload / UploadPart / CompleteMultipartUpload).
-- Parts are blob files; a completed object keeps its parts as a manifest instead of rewriting
-- the bytes into one file, so Complete costs one metadata commit whatever the object's size.

CREATE TABLE uploads (
    upload_id   TEXT    PRIMARY KEY,
    bucket      TEXT    NOT NULL REFERENCES buckets(name),
    key         TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    initiated   INTEGER NOT NULL,
    -- JSON of the headers given at Create (content type, metadata, ACL, tagging, checksum).
    headers     TEXT    NOT NULL
);

CREATE INDEX uploads_by_key ON uploads(bucket, key, initiated);

CREATE TABLE parts (
    upload_id     TEXT    NOT NULL REFERENCES uploads(upload_id) ON DELETE CASCADE,
    part_number   INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    etag          TEXT    NOT NULL,
    blob          TEXT    NOT NULL,
    last_modified INTEGER NOT NULL,
    checksum      TEXT,
    PRIMARY KEY (upload_id, part_number)
);

-- A completed multipart object: JSON [[blob, size], ...] in part order; `blob` is then NULL.
ALTER TABLE objects ADD COLUMN manifest TEXT;
