//! Expiry: the bucket's lifecycle rules, objects' own expiry times, and the rows the sweeper
//! finds and removes (`crate::objects::lifecycle`).

use rusqlite::{Connection, params};

use super::DbError;
use super::objects::{blobs_of, prefix_successor};

/// Stores (or, with `None`, deletes) a bucket's lifecycle rules. `false`: no such bucket.
pub fn set(conn: &Connection, bucket: &str, rules: Option<&str>) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE buckets SET lifecycle = ?2 WHERE name = ?1",
        params![bucket, rules],
    )? > 0)
}

/// Every bucket that has lifecycle rules, with them (JSON).
pub fn with_rules(conn: &Connection) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt =
        conn.prepare("SELECT name, lifecycle FROM buckets WHERE lifecycle IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Up to `limit` objects whose own expiry time is at or before `now`: (bucket, key).
pub fn expiring(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT bucket, key FROM objects WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Up to `limit` keys of `bucket` under `prefix`, after `after`, last modified at or before
/// `cutoff`, in key order.
pub fn modified_by(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    after: &str,
    cutoff: i64,
    limit: usize,
) -> Result<Vec<String>, DbError> {
    let from = if after.is_empty() { prefix } else { after };
    let until = prefix_successor(prefix);
    let mut stmt = conn.prepare_cached(
        "SELECT key FROM objects
         WHERE bucket = ?1 AND key >= ?2 AND key > ?3 AND (?4 IS NULL OR key < ?4)
           AND last_modified <= ?5
         ORDER BY key LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![bucket, from, after, until, cutoff, limit as i64],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Which version of a key an expiry may delete: the sweeper chose it by its age or its expiry
/// time, and a version written since then must stay.
#[derive(Debug, Clone, Copy)]
pub enum Expired {
    /// Last modified at or before this time (a lifecycle rule).
    ModifiedBy(i64),
    /// Its own expiry time is at or before this time (a link's `expire_objects_after`).
    ExpiresBy(i64),
}

/// Deletes `bucket/key` if its current version is `expired`; the blobs it used, if it did.
pub fn delete_expired(
    conn: &Connection,
    bucket: &str,
    key: &str,
    expired: Expired,
) -> Result<Option<Vec<String>>, DbError> {
    let (sql, at) = match expired {
        Expired::ModifiedBy(t) => (
            "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 AND last_modified <= ?3
             RETURNING blob, manifest",
            t,
        ),
        Expired::ExpiresBy(t) => (
            "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 AND expires_at <= ?3
             RETURNING blob, manifest",
            t,
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![bucket, key, at])?;
    match rows.next()? {
        Some(r) => Ok(Some(blobs_of(r.get(0)?, r.get(1)?))),
        None => Ok(None),
    }
}

/// Up to `limit` unfinished uploads of `bucket` under `prefix` begun at or before `cutoff`.
pub fn stale_uploads(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    cutoff: i64,
    limit: usize,
) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT upload_id FROM uploads
         WHERE bucket = ?1 AND substr(key, 1, length(?2)) = ?2 AND initiated <= ?3
         ORDER BY initiated LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![bucket, prefix, cutoff, limit as i64], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Gives `bucket/key` its own expiry time (an upload through a link with
/// `expire_objects_after`).
pub fn set_object_expiry(
    conn: &Connection,
    bucket: &str,
    key: &str,
    at: i64,
) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE objects SET expires_at = ?3 WHERE bucket = ?1 AND key = ?2")?
        .execute(params![bucket, key, at])?;
    Ok(())
}

/// When an object uploaded now through link `link_id` expires, if the link says.
pub fn link_object_expiry(
    conn: &Connection,
    link_id: &str,
    now: i64,
) -> Result<Option<i64>, DbError> {
    let after: Option<Option<i64>> = conn
        .prepare_cached("SELECT expire_objects_after FROM links WHERE id = ?1")?
        .query_row([link_id], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(after.flatten().map(|ms| now.saturating_add(ms)))
}

/// The object's own expiry time, if it has one.
pub fn object_expiry(conn: &Connection, bucket: &str, key: &str) -> Result<Option<i64>, DbError> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT expires_at FROM objects WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![bucket, key], |r| r.get(0))
        .optional()?
        .flatten())
}
