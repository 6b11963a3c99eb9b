-- The outbox's CHECK on `state` without an IN list. SQLite compiles `state IN ('pending',
-- 'delivered', 'dead')` in a CHECK into an ephemeral b-tree that every INSERT and every UPDATE of
-- the row builds, fills with the three values, probes and drops (~20k instructions, half of an
-- outbox row's insert, inside the commit every upload a target wants waits for). The same rule
-- written as comparisons is a few instructions. SQLite cannot change a CHECK in place: the table
-- is made again with the same columns, rows, ids and indexes.
CREATE TABLE outbox_new (
    id               INTEGER PRIMARY KEY,
    target           TEXT    NOT NULL,
    configuration_id TEXT    NOT NULL,
    bucket           TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    record           TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead'),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- Start of its retry window: creation, or the operator's last retry.
    since            INTEGER NOT NULL,
    next_at          INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    owner            TEXT,
    size             INTEGER,
    etag             TEXT,
    content_type     TEXT,
    detected_type    TEXT,
    metadata         TEXT,
    principal        TEXT,
    source_ip        TEXT,
    request_id       TEXT,
    link_id          TEXT
);

INSERT INTO outbox_new (id, target, configuration_id, bucket, key, name, record, state, attempts,
                        since, next_at, last_error, created_at, owner, size, etag, content_type,
                        detected_type, metadata, principal, source_ip, request_id, link_id)
SELECT id, target, configuration_id, bucket, key, name, record, state, attempts, since, next_at,
       last_error, created_at, owner, size, etag, content_type, detected_type, metadata,
       principal, source_ip, request_id, link_id
FROM outbox;

DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;

CREATE INDEX outbox_lane ON outbox (target, next_at) WHERE state = 'pending';
CREATE INDEX outbox_delivered ON outbox (id) WHERE state = 'delivered';
