-- The control state several postgate nodes share (`--control-db`, docs/cluster.md sections 3-4):
-- upload links, their file counters and the slots their form uploads hold. The same columns as
-- SQLite's `links` (migrations/0003, 0009, 0010), in PostgreSQL's types; each node keeps a copy
-- of the rows it serves in its SQLite (`db::links::mirror`) for the joins that stay there.
CREATE TABLE links (
    token                TEXT    PRIMARY KEY,
    -- Public id, stored on uploaded objects as x-amz-meta-upload-link (the token stays secret).
    id                   TEXT    NOT NULL UNIQUE,
    bucket               TEXT    NOT NULL,
    prefix               TEXT    NOT NULL,
    max_size             BIGINT  NOT NULL,
    content_type         TEXT,
    max_files            BIGINT,
    -- Taken slots: `reserve` adds one under the row's lock only while below max_files.
    uploaded_files       BIGINT  NOT NULL DEFAULT 0,
    access_key           TEXT    NOT NULL,
    created_at           BIGINT  NOT NULL,
    expires_at           BIGINT  NOT NULL,
    revoked              BOOLEAN NOT NULL DEFAULT false,
    verify_type          BOOLEAN NOT NULL DEFAULT false,
    expire_objects_after BIGINT,
    max_total_size       BIGINT,
    uploaded_bytes       BIGINT  NOT NULL DEFAULT 0,
    -- The webhook target named at creation (`link_webhooks` in SQLite).
    webhook              TEXT
);

-- A form upload's slot, from before its file is read until it is stored or refused; `node` is
-- the node that took it, so that a restarted node settles its own (HEAD of the key in the
-- backend: stored, the slot stays taken; else it is given back).
CREATE TABLE link_form_slots (
    id        TEXT   PRIMARY KEY,
    link_id   TEXT   NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    bucket    TEXT   NOT NULL,
    key       TEXT   NOT NULL,
    node      TEXT   NOT NULL,
    taken_at  BIGINT NOT NULL
);
CREATE INDEX link_form_slots_by_node ON link_form_slots (node);
