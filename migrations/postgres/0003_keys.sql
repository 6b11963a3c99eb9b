-- Access keys and grants the nodes share (`--control-db`, docs/cluster.md sections 3-4): the same
-- columns as SQLite's `access_keys` and `grants` (migrations/0001). The secret is kept as SQLite
-- keeps it, in clear: SigV4 verification needs the secret itself (an HMAC key), so it cannot be
-- hashed; it is protected by who may read this database, as SQLite's by the private data
-- directory. Each node's admin key (POSTGATE_ACCESS_KEY) stays in its own SQLite.
CREATE TABLE access_keys (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT    NOT NULL,
    access_key  TEXT    NOT NULL UNIQUE,
    secret_key  TEXT    NOT NULL,
    is_admin    BOOLEAN NOT NULL DEFAULT false,
    created_at  BIGINT  NOT NULL
);

-- A key's permission on a bucket (buckets are still each node's: no reference to them). A
-- deleted key takes its grants with it.
CREATE TABLE grants (
    bucket      TEXT NOT NULL,
    access_key  TEXT NOT NULL REFERENCES access_keys (access_key) ON DELETE CASCADE,
    perm        TEXT NOT NULL CHECK (perm IN ('read', 'write', 'readwrite')),
    PRIMARY KEY (bucket, access_key)
);

-- Every change to either table, by postgate or by hand, tells the listening nodes
-- (`LISTEN postgate_keys`) to drop their cached keys and re-read the grants.
CREATE FUNCTION postgate_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('postgate_keys', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER access_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON access_keys
    FOR EACH STATEMENT EXECUTE FUNCTION postgate_keys_changed();
CREATE TRIGGER grants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION postgate_keys_changed();
