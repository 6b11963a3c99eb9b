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
    include_str!("../../migrations/0008_events.sql"),
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
}
