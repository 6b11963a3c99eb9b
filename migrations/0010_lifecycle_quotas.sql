-- Keeping a bucket tidy: object expiry (S3 lifecycle rules, and a per-object expiry that upload
-- links set) and quotas (per bucket: bytes and objects; per link: total bytes).

-- The bucket's lifecycle rules, as JSON (`objects::lifecycle::Rules`); NULL: none.
ALTER TABLE buckets ADD COLUMN lifecycle TEXT;
-- The bucket's quota (`postgate bucket quota`); NULL: no limit.
ALTER TABLE buckets ADD COLUMN quota_max_size INTEGER;
ALTER TABLE buckets ADD COLUMN quota_max_objects INTEGER;

-- When the object expires (milliseconds), whatever the bucket's rules: set for objects uploaded
-- through a link with `expire_objects_after`; any later write of the key clears it.
ALTER TABLE objects ADD COLUMN expires_at INTEGER;
CREATE INDEX objects_expiring ON objects(expires_at) WHERE expires_at IS NOT NULL;

-- Per link: objects uploaded through it expire this many milliseconds after their upload; the
-- most bytes all its files may take together, and the bytes its files took so far.
ALTER TABLE links ADD COLUMN expire_objects_after INTEGER;
ALTER TABLE links ADD COLUMN max_total_size INTEGER;
ALTER TABLE links ADD COLUMN uploaded_bytes INTEGER NOT NULL DEFAULT 0;

-- What each bucket's objects take, kept by triggers in the transaction of every change, so that
-- a quota check reads one row instead of summing the bucket.
CREATE TABLE bucket_usage (
    bucket  TEXT    PRIMARY KEY REFERENCES buckets(name) ON DELETE CASCADE,
    bytes   INTEGER NOT NULL DEFAULT 0,
    objects INTEGER NOT NULL DEFAULT 0
);
INSERT INTO bucket_usage (bucket, bytes, objects)
    SELECT bucket, sum(size), count(*) FROM objects GROUP BY bucket;

CREATE TRIGGER bucket_usage_insert AFTER INSERT ON objects BEGIN
    INSERT OR IGNORE INTO bucket_usage (bucket) VALUES (NEW.bucket);
    UPDATE bucket_usage SET bytes = bytes + NEW.size, objects = objects + 1
        WHERE bucket = NEW.bucket;
END;
CREATE TRIGGER bucket_usage_update AFTER UPDATE OF size ON objects BEGIN
    UPDATE bucket_usage SET bytes = bytes - OLD.size + NEW.size WHERE bucket = NEW.bucket;
END;
CREATE TRIGGER bucket_usage_delete AFTER DELETE ON objects BEGIN
    UPDATE bucket_usage SET bytes = bytes - OLD.size, objects = objects - 1
        WHERE bucket = OLD.bucket;
END;

-- Bytes (and a new key) an upload holds while its body arrives, taken before it is read and
-- dropped in the transaction that commits it (or when it fails). Rows outlive only a killed
-- server: start-up deletes them all, since no upload survives a restart.
CREATE TABLE quota_reservations (
    id       TEXT    PRIMARY KEY,
    bucket   TEXT    NOT NULL,
    link_id  TEXT,
    bytes    INTEGER NOT NULL,
    objects  INTEGER NOT NULL
);
CREATE INDEX quota_reservations_by_bucket ON quota_reservations(bucket);
CREATE INDEX quota_reservations_by_link ON quota_reservations(link_id) WHERE link_id IS NOT NULL;
