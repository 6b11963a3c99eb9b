//! `object_extras`: under the S3 backend, what postgate knows of an object in the cluster that
//! the object's own metadata cannot carry (its ACL after PutObjectAcl, the detected type and
//! checksum of a body sent in parts, a link's expiry time), and its size for the quota. A row
//! applies only while its `etag` is the object's current ETag in the backend (docs/cluster.md
//! section 9.1). Empty under the filesystem store.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

/// One object's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Quoted, as the backend gives it.
    pub etag: String,
    pub size: u64,
    pub acl: Option<String>,
    pub detected_type: Option<String>,
    /// `"<ALGO> <base64>"`, as `objects.checksum`.
    pub checksum: Option<String>,
    pub expires_at: Option<i64>,
}

pub fn get(conn: &Connection, bucket: &str, key: &str) -> Result<Option<Extras>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT etag, size, acl, detected_type, checksum, expires_at FROM object_extras
             WHERE bucket = ?1 AND key = ?2",
        )?
        .query_row(params![bucket, key], |r| {
            Ok(Extras {
                etag: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                acl: r.get(2)?,
                detected_type: r.get(3)?,
                checksum: r.get(4)?,
                expires_at: r.get(5)?,
            })
        })
        .optional()?)
}

/// The row of the version just stored (the settling transaction of a write).
pub fn put(conn: &Connection, bucket: &str, key: &str, extras: &Extras) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO object_extras (bucket, key, etag, size, acl, detected_type, checksum,
                                    expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(bucket, key) DO UPDATE SET etag = excluded.etag, size = excluded.size,
             acl = excluded.acl, detected_type = excluded.detected_type,
             checksum = excluded.checksum, expires_at = excluded.expires_at",
    )?
    .execute(params![
        bucket,
        key,
        extras.etag,
        extras.size as i64,
        extras.acl,
        extras.detected_type,
        extras.checksum,
        extras.expires_at
    ])?;
    Ok(())
}

/// Forgets `bucket/key` (deleted from the backend); whether there was a row.
pub fn delete(conn: &Connection, bucket: &str, key: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM object_extras WHERE bucket = ?1 AND key = ?2")?
        .execute(params![bucket, key])?
        > 0)
}

/// Up to `limit` objects whose own expiry time (a link's `expire_objects_after`) is at or
/// before `now`: (bucket, key, the ETag of the version the time was given to).
pub fn expiring(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<(String, String, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT bucket, key, etag FROM object_extras WHERE expires_at <= ?1
         ORDER BY expires_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Forgets `bucket/key`'s row if it still describes version `etag`; whether it did.
pub fn delete_version(
    conn: &Connection,
    bucket: &str,
    key: &str,
    etag: &str,
) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM object_extras WHERE bucket = ?1 AND key = ?2 AND etag = ?3")?
        .execute(params![bucket, key, etag])?
        > 0)
}

/// PutObjectAcl on the version whose HEAD showed `etag` and `size`: the row of that version
/// gets `acl` (made if the version was written around postgate, or by another node).
pub fn set_acl(
    conn: &Connection,
    bucket: &str,
    key: &str,
    etag: &str,
    size: u64,
    acl: &str,
) -> Result<(), DbError> {
    match get(conn, bucket, key)? {
        Some(mut row) if row.etag == etag => {
            row.acl = Some(acl.to_owned());
            put(conn, bucket, key, &row)
        }
        _ => put(
            conn,
            bucket,
            key,
            &Extras {
                etag: etag.to_owned(),
                size,
                acl: Some(acl.to_owned()),
                ..Extras::default()
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_bucket_usage() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::db::migrate::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO buckets (name, owner, created_at) VALUES ('b', 'o', 0)",
            [],
        )
        .unwrap();
        let row = Extras {
            etag: "\"e\"".into(),
            size: 10,
            ..Extras::default()
        };
        put(&conn, "b", "k", &row).unwrap();
        put(
            &conn,
            "b",
            "k",
            &Extras {
                size: 4,
                ..row.clone()
            },
        )
        .unwrap();
        set_acl(&conn, "b", "k", "\"e\"", 4, "public-read").unwrap();
        let got = get(&conn, "b", "k").unwrap().unwrap();
        assert_eq!(got.acl.as_deref(), Some("public-read"));
        let usage = |c: &Connection| -> (i64, i64) {
            c.query_row(
                "SELECT bytes, objects FROM bucket_usage WHERE bucket = 'b'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(usage(&conn), (4, 1));
        assert!(delete(&conn, "b", "k").unwrap());
        assert_eq!(usage(&conn), (0, 0));
    }
}
