-- The outbox as one row per event and target. Before, each wanted change inserted a row in
-- `events` (the record) and one per target in `deliveries`, each table with AUTOINCREMENT (a read
-- and a write of `sqlite_sequence` per insert), and `deliveries` carried two indexes; the worker
-- then UPDATEd each delivered row and pruned it an hour later. That cost every upload a target
-- wants about a third of what the upload itself costs. Now:
-- - one row per event and target holds the record (an event two targets want is stored twice:
--   rare, and small next to a second table per event);
-- - one index, a target's pending rows by next attempt (its delivery lane's queue); a key's order
--   is kept in the lane's memory (rebuilt from the pending rows at start), which parks a key's
--   later rows (`next_at` = 9223372036854775807) while an earlier one is pending;
-- - a delivered row is deleted in the write that records its outcome, except the row with the
--   highest id, which stays as 'delivered' until a newer row exists: ids (a delivery's
--   `x-postgate-delivery`, its event's sequencer) must never be handed out again, and without
--   AUTOINCREMENT SQLite takes the highest id plus one.
-- Pending and dead rows keep their ids (what `events list` showed and `events retry` takes).
-- A row's sequencer is its id: per target and key it grows with every change, as before (a
-- delivery's id was never below its event's).
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    target           TEXT    NOT NULL,
    configuration_id TEXT    NOT NULL,
    bucket           TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    record           TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    -- Start of its retry window: creation, or the operator's last retry.
    since            INTEGER NOT NULL,
    next_at          INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL
);

INSERT INTO outbox (id, target, configuration_id, bucket, key, name, record, state, attempts,
                    since, next_at, last_error, created_at)
SELECT d.id, d.target, d.configuration_id, d.bucket, d.key, e.name, e.record, d.state,
       d.attempts, d.since, d.next_at, d.last_error, e.created_at
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.state IN ('pending', 'dead');

-- The highest id ever handed out, kept as a delivered row (see above).
INSERT INTO outbox (id, target, configuration_id, bucket, key, name, record, state, since,
                    next_at, created_at)
SELECT seq, '', '', '', '', '', '', 'delivered', 0, 0, 0
FROM sqlite_sequence
WHERE name = 'deliveries' AND seq > (SELECT coalesce(max(id), 0) FROM outbox);

DROP TABLE deliveries;
DROP TABLE events;

CREATE INDEX outbox_lane ON outbox (target, next_at) WHERE state = 'pending';
-- The delivered row left as the highest id, found without a scan once a newer row exists.
CREATE INDEX outbox_delivered ON outbox (id) WHERE state = 'delivered';
