//! Schema migrations: the SQL files in `migrations/`, embedded at build time and applied in order,
//! each in its own transaction, tracked by `PRAGMA user_version`.

use rusqlite::Connection;

use super::DbError;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_multipart.sql"),
    include_str!("../../migrations/0003_links.sql"),
    include_str!("../../migrations/0004_link_uploads.sql"),
    include_str!("../../migrations/0005_bucket_active_content.sql"),
    include_str!("../../migrations/0006_link_form_slots.sql"),
    include_str!("../../migrations/0007_ready_probe.sql"),
    include_str!("../../migrations/0009_detected_type.sql"),
    include_str!("../../migrations/0010_lifecycle_quotas.sql"),
    include_str!("../../migrations/0011_events.sql"),
    include_str!("../../migrations/0013_event_queue.sql"),
    include_str!("../../migrations/0014_delivery_lanes.sql"),
    include_str!("../../migrations/0015_object_extras.sql"),
    include_str!("../../migrations/0016_outbox_rows.sql"),
    include_str!("../../migrations/0017_outbox_fields.sql"),
    include_str!("../../migrations/0018_outbox_check.sql"),
    include_str!("../../migrations/0019_webhook_batch.sql"),
];

pub fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let current: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(DbError::Corrupt(format!(
            "database schema version {current} is newer than this postgate ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    /// A database at version 9 (0001..0007, 0009, 0010: what postgate had before events) gains
    /// the events tables and keeps its objects.
    #[test]
    fn a_version_9_database_migrates_forward_to_events() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..9] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 9).unwrap();
        conn.execute_batch(
            "INSERT INTO buckets (name, owner, created_at) VALUES ('b', 'AK', 0);
             INSERT INTO objects (bucket, key, size, etag, last_modified, owner, detected_type)
                 VALUES ('b', 'x', 1, '', 0, 'AK', 'image/png');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let n: i64 = conn
            .query_row("SELECT count(*) FROM webhooks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let t: String = conn
            .query_row("SELECT detected_type FROM objects", [], |r| r.get(0))
            .unwrap();
        assert_eq!(t, "image/png");
    }

    /// 0010 counts what existing buckets hold, and from then on the triggers keep the count
    /// through inserts, overwrites (upserts) and deletes.
    #[test]
    fn bucket_usage_starts_from_existing_objects_and_follows_changes() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 7).unwrap();
        conn.execute_batch(
            "INSERT INTO buckets (name, owner, created_at) VALUES ('b', 'AK', 0), ('e', 'AK', 0);
             INSERT INTO objects (bucket, key, size, etag, last_modified, owner)
                 VALUES ('b', 'x', 10, '', 0, 'AK'), ('b', 'y', 5, '', 0, 'AK');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let usage = |conn: &Connection, b: &str| -> (i64, i64) {
            conn.query_row(
                "SELECT bytes, objects FROM bucket_usage WHERE bucket = ?1",
                [b],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or((0, 0))
        };
        assert_eq!(usage(&conn, "b"), (15, 2));
        conn.execute_batch(
            "INSERT INTO objects (bucket, key, size, etag, last_modified, owner)
                 VALUES ('e', 'z', 7, '', 0, 'AK');
             INSERT INTO objects (bucket, key, size, etag, last_modified, owner)
                 VALUES ('b', 'x', 3, '', 0, 'AK')
                 ON CONFLICT(bucket, key) DO UPDATE SET size = excluded.size;
             DELETE FROM objects WHERE key = 'y';",
        )
        .unwrap();
        assert_eq!(usage(&conn, "b"), (3, 1));
        assert_eq!(usage(&conn, "e"), (7, 1));
    }

    /// 0004 finds the uploads a link page began before `uploads.link_id` existed: the link's id
    /// as `upload-link` metadata, the link's bucket and key; nothing else is taken for one.
    #[test]
    fn link_uploads_are_found_from_their_metadata() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        let headers = |id: &str| {
            format!(
                r#"{{"headers":{{"meta":[["a","b"],["upload-link","{id}"]],"acl":"private"}},"checksum_algorithm":null}}"#
            )
        };
        conn.execute_batch(&format!(
            "INSERT INTO buckets (name, owner, created_at) VALUES ('b', 'AK', 0);
             INSERT INTO links (token, id, bucket, prefix, max_size, access_key, created_at,
                 expires_at) VALUES ('t', 'L1', 'b', '', 1, 'AK', 0, 1);
             INSERT INTO uploads VALUES ('page', 'b', 'k', 'AK', 0, '{}');
             INSERT INTO uploads VALUES ('other-key', 'b', 'k', 'XX', 0, '{}');
             INSERT INTO uploads VALUES ('plain', 'b', 'k', 'AK', 0, '{}');",
            headers("L1"),
            headers("L1"),
            headers("nope")
        ))
        .unwrap();
        migrate(&mut conn).unwrap();
        let link_of = |id: &str| -> Option<String> {
            conn.query_row(
                "SELECT link_id FROM uploads WHERE upload_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(link_of("page").as_deref(), Some("L1"));
        assert_eq!(link_of("other-key"), None);
        assert_eq!(link_of("plain"), None);
    }
    /// 0018 makes the outbox again (its CHECK without an IN list): every row keeps its id,
    /// state and fields, the highest id stays the highest, and its indexes are there.
    #[test]
    fn the_outbox_keeps_its_rows_and_ids_through_0018() {
        let mut conn = Connection::open_in_memory().unwrap();
        let at = MIGRATIONS.len() - 1;
        for sql in &MIGRATIONS[..at] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", at as i64).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox (id, target, configuration_id, bucket, key, name, record, state,
                 attempts, since, next_at, last_error, created_at, owner, size, etag)
             VALUES (3, 'h', 'c', 'b', 'k', 'ObjectCreated:Put', '', 'pending', 0, 5, 5, NULL,
                     5, 'O', 4, '\"e\"'),
                    (7, 'h', 'c', 'b', 'k', 'ObjectCreated:Put', '{}', 'dead', 9, 1, 1, '500',
                     1, NULL, NULL, NULL),
                    (12, '', '', '', '', '', '', 'delivered', 0, 0, 0, NULL, 0, NULL, NULL,
                     NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        type Row = (i64, String, i64, Option<String>, Option<i64>);
        let rows: Vec<Row> = conn
            .prepare("SELECT id, state, attempts, record, size FROM outbox ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (3, "pending".into(), 0, Some(String::new()), Some(4)),
                (7, "dead".into(), 9, Some("{}".into()), None),
                (12, "delivered".into(), 0, Some(String::new()), None),
            ]
        );
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'
                 AND name IN ('outbox_lane', 'outbox_delivered')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 2);
        conn.execute(
            "INSERT INTO outbox (target, configuration_id, bucket, key, name, record, since,
                 next_at, created_at) VALUES ('h', 'c', 'b', 'j', 'n', '', 0, 0, 0)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 13);
    }
}
