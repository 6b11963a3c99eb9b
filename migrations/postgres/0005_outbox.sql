-- The event outbox the nodes share (`--control-db`, docs/cluster.md section 5): one row per
-- event and webhook target, the columns of SQLite's `outbox` (migrations/0016, 0017), written
-- after the node's own commit (for a link's form, in the transaction that ends its slot) and
-- delivered by whichever node leases it first.
CREATE TABLE outbox (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event's id (the slot id for a link's form upload): with the target and the
    -- configuration id, a second insert of the same event is a no-op.
    dedupe           TEXT    NOT NULL,
    target           TEXT    NOT NULL,
    configuration_id TEXT    NOT NULL,
    bucket           TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    -- 'pending' (leased or not), 'delivered' (kept for the dedupe key, pruned after the retry
    -- window), 'dead' (`postgate events retry` puts it back).
    state            TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- The start of its retry window and when it is due, in the writing and delivering nodes'
    -- clocks (ms since the epoch).
    since            BIGINT  NOT NULL,
    next_at          BIGINT  NOT NULL,
    -- The node delivering it and until when (PostgreSQL's clock, ms): no other node takes the
    -- row before that.
    leased_by        TEXT,
    lease_until      BIGINT,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    owner            TEXT    NOT NULL,
    size             BIGINT,
    etag             TEXT,
    content_type     TEXT,
    detected_type    TEXT,
    metadata         TEXT,
    principal        TEXT    NOT NULL,
    source_ip        TEXT    NOT NULL,
    request_id       TEXT    NOT NULL,
    link_id          TEXT,
    UNIQUE (dedupe, target, configuration_id)
);
-- What the workers take: pending rows by due time.
CREATE INDEX outbox_due ON outbox (next_at, id) WHERE state = 'pending';
-- A row is taken only when no earlier pending row of its target and key exists.
CREATE INDEX outbox_key ON outbox (target, bucket, key, id) WHERE state = 'pending';

-- Each insert wakes the listening workers (`LISTEN postgate_outbox`).
CREATE FUNCTION postgate_outbox_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('postgate_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_added AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION postgate_outbox_added();
