-- One row that `GET /-/ready` rewrites through the group-committing writer: readiness means
-- SQLite accepts a write and makes it durable, which a read (or `PRAGMA user_version`) cannot show.
CREATE TABLE ready_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
