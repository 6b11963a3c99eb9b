-- The nodes serving with --control-db and when each was last heard from (docs/cluster.md
-- section 4): every node renews its row every few seconds (`--node-heartbeat`); the form slots
-- of a node whose row is older than `--node-expiry`, or that has none, are settled by the
-- sweeper of any other node. `seen_at` is PostgreSQL's clock (ms since the epoch), never a
-- node's, so the nodes' clocks need not agree.
CREATE TABLE nodes (
    id      TEXT   PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
