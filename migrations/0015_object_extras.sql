-- The S3 backend (`--backend s3`): what postgate knows of an object stored in the cluster that
-- cannot ride in the object's own metadata, because S3 fixes that metadata when the bytes are
-- stored (docs/cluster.md section 9.1): the ACL after PutObjectAcl, the detected type and the
-- additional checksum of a body sent as a backend multipart upload, a link's expiry time. One
-- row per object written through postgate, in the transaction that settles the write; a row
-- applies only while `etag` is the backend's current ETag. It also gives the quota its "size
-- being replaced" and keeps `bucket_usage` (as `objects` does under the filesystem store).
-- Under `--backend fs` the table stays empty.
CREATE TABLE object_extras (
    bucket        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    etag          TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    acl           TEXT,
    detected_type TEXT,
    checksum      TEXT,
    expires_at    INTEGER,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE INDEX object_extras_expiring ON object_extras(expires_at) WHERE expires_at IS NOT NULL;

CREATE TRIGGER object_extras_usage_insert AFTER INSERT ON object_extras BEGIN
    INSERT OR IGNORE INTO bucket_usage (bucket) VALUES (NEW.bucket);
    UPDATE bucket_usage SET bytes = bytes + NEW.size, objects = objects + 1
        WHERE bucket = NEW.bucket;
END;
CREATE TRIGGER object_extras_usage_update AFTER UPDATE OF size ON object_extras BEGIN
    UPDATE bucket_usage SET bytes = bytes - OLD.size + NEW.size WHERE bucket = NEW.bucket;
END;
CREATE TRIGGER object_extras_usage_delete AFTER DELETE ON object_extras BEGIN
    UPDATE bucket_usage SET bytes = bytes - OLD.size, objects = objects - 1
        WHERE bucket = OLD.bucket;
END;
