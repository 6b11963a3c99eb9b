-- Buckets and their settings, bucket notification configurations and webhook targets, shared
-- by the nodes (`--control-db`, docs/cluster.md section 3): the same columns as SQLite's
-- `buckets` (migrations/0001, 0005, 0009, 0010), `bucket_notifications` and `webhooks`
-- (migrations/0011). Each node keeps a copy in its SQLite, where every bucket read joins them.
-- A webhook's secret is kept in clear as SQLite keeps it (deliveries are signed with it).
CREATE TABLE buckets (
    name              TEXT    PRIMARY KEY,
    owner             TEXT    NOT NULL,
    acl               TEXT    NOT NULL DEFAULT 'private',
    cors              TEXT,
    created_at        BIGINT  NOT NULL,
    active_content    BOOLEAN NOT NULL DEFAULT false,
    verify_type       BOOLEAN NOT NULL DEFAULT false,
    lifecycle         TEXT,
    quota_max_size    BIGINT,
    quota_max_objects BIGINT
);

CREATE TABLE bucket_notifications (
    bucket  TEXT PRIMARY KEY REFERENCES buckets (name) ON DELETE CASCADE,
    config  TEXT NOT NULL
);

CREATE TABLE webhooks (
    name        TEXT   PRIMARY KEY,
    url         TEXT   NOT NULL,
    secret      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Every change to any of them, by postgate or by hand, tells the listening nodes
-- (`LISTEN postgate_config`) to read them again.
CREATE FUNCTION postgate_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('postgate_config', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER buckets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON buckets
    FOR EACH STATEMENT EXECUTE FUNCTION postgate_config_changed();
CREATE TRIGGER bucket_notifications_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON bucket_notifications
    FOR EACH STATEMENT EXECUTE FUNCTION postgate_config_changed();
CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhooks
    FOR EACH STATEMENT EXECUTE FUNCTION postgate_config_changed();
