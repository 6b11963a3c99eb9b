-- postgate's metadata. Object bytes live in data/blobs/ (named by UUID) or, for small objects,
-- inline in objects.data. Keys are TEXT compared with the default BINARY collation, which is
-- UTF-8 byte order: the order S3 lists keys in.

CREATE TABLE access_keys (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    access_key  TEXT    NOT NULL UNIQUE,
    secret_key  TEXT    NOT NULL,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE buckets (
    name        TEXT    PRIMARY KEY,
    owner       TEXT    NOT NULL,
    acl         TEXT    NOT NULL DEFAULT 'private',
    cors        TEXT,
    created_at  INTEGER NOT NULL
);

CREATE TABLE grants (
    bucket      TEXT    NOT NULL REFERENCES buckets(name) ON DELETE CASCADE,
    access_key  TEXT    NOT NULL,
    perm        TEXT    NOT NULL CHECK (perm IN ('read', 'write', 'readwrite')),
    PRIMARY KEY (bucket, access_key)
);

CREATE TABLE objects (
    id                  INTEGER PRIMARY KEY,
    bucket              TEXT    NOT NULL REFERENCES buckets(name),
    key                 TEXT    NOT NULL,
    size                INTEGER NOT NULL,
    etag                TEXT    NOT NULL,
    last_modified       INTEGER NOT NULL,
    owner               TEXT    NOT NULL,
    acl                 TEXT    NOT NULL DEFAULT 'private',
    content_type        TEXT,
    cache_control       TEXT,
    content_disposition TEXT,
    content_encoding    TEXT,
    content_language    TEXT,
    expires             TEXT,
    meta                TEXT    NOT NULL DEFAULT '[]',
    checksum            TEXT,
    tagging             TEXT,
    blob                TEXT,
    data                BLOB,
    UNIQUE (bucket, key)
);

CREATE INDEX objects_blob ON objects(blob) WHERE blob IS NOT NULL;
