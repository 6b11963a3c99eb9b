-- Events and webhooks. The outbox (`events` + `deliveries`) is written in the transaction that
-- commits or removes the object, so an acknowledged change always has its event and a refused
-- one never does; the delivery worker reads it back, POSTs, and records the outcome.

-- Webhook targets the operator declared (`postgate webhook add`); the config file may declare
-- more. Bucket notifications and links may only name these, never a free URL.
CREATE TABLE webhooks (
    name        TEXT    PRIMARY KEY,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A bucket's notification configuration (S3's PutBucketNotificationConfiguration), as JSON.
CREATE TABLE bucket_notifications (
    bucket      TEXT    PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    config      TEXT    NOT NULL
);

-- The target an upload link's uploads are announced to (`link create --webhook NAME`).
CREATE TABLE link_webhooks (
    link_id     TEXT    PRIMARY KEY,
    target      TEXT    NOT NULL
);

-- One change to one object; `record` is its S3 event record without the per-target fields.
-- The id is the event's sequencer: it grows with every change, so per key too.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket      TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    record      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One event for one target: pending until delivered, or dead once its retries ran out.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         INTEGER NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    target           TEXT    NOT NULL,
    configuration_id TEXT    NOT NULL,
    bucket           TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    since            INTEGER NOT NULL,
    next_at          INTEGER NOT NULL,
    last_error       TEXT,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_at);
CREATE INDEX deliveries_per_key ON deliveries (target, bucket, key, id) WHERE state = 'pending';
