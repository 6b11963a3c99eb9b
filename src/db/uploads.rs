//! Multipart uploads in progress and their parts.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

#[derive(Debug, Clone)]
pub struct UploadRecord {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub owner: String,
    pub initiated: i64,
    /// JSON of the object headers given at Create.
    pub headers: String,
    /// The upload link whose slot this upload holds (`None`: an ordinary S3 upload).
    pub link_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PartRecord {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    pub blob: String,
    pub last_modified: i64,
    pub checksum: Option<String>,
    /// The type the part's first bytes showed (`sniff::detect`): the object's, for the first
    /// part of a completed upload.
    pub detected_type: Option<String>,
}

fn upload_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: r.get(0)?,
        bucket: r.get(1)?,
        key: r.get(2)?,
        owner: r.get(3)?,
        initiated: r.get(4)?,
        headers: r.get(5)?,
        link_id: r.get(6)?,
    })
}

fn part_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PartRecord> {
    Ok(PartRecord {
        part_number: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        etag: r.get(2)?,
        blob: r.get(3)?,
        last_modified: r.get(4)?,
        checksum: r.get(5)?,
        detected_type: r.get(6)?,
    })
}

pub fn create(conn: &Connection, u: &UploadRecord) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO uploads (upload_id, bucket, key, owner, initiated, headers, link_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            u.upload_id,
            u.bucket,
            u.key,
            u.owner,
            u.initiated,
            u.headers,
            u.link_id
        ],
    )?;
    Ok(())
}

/// The upload, if it exists and belongs to `bucket`/`key`.
pub fn get(
    conn: &Connection,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<UploadRecord>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT upload_id, bucket, key, owner, initiated, headers, link_id FROM uploads
             WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3",
        )?
        .query_row(params![upload_id, bucket, key], upload_from_row)
        .optional()?)
}

/// Records a part, replacing one with the same number. Returns the replaced part's blob.
pub fn put_part(
    conn: &Connection,
    upload_id: &str,
    p: &PartRecord,
) -> Result<Option<String>, DbError> {
    let old: Option<String> = conn
        .prepare_cached("SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2")?
        .query_row(params![upload_id, p.part_number], |r| r.get(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT INTO parts (upload_id, part_number, size, etag, blob, last_modified, checksum,
             detected_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(upload_id, part_number) DO UPDATE SET size = excluded.size,
             etag = excluded.etag, blob = excluded.blob, last_modified = excluded.last_modified,
             checksum = excluded.checksum, detected_type = excluded.detected_type",
    )?
    .execute(params![
        upload_id,
        p.part_number,
        p.size as i64,
        p.etag,
        p.blob,
        p.last_modified,
        p.checksum,
        p.detected_type
    ])?;
    Ok(old)
}

pub fn parts(
    conn: &Connection,
    upload_id: &str,
    after: u32,
    limit: usize,
) -> Result<Vec<PartRecord>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT part_number, size, etag, blob, last_modified, checksum, detected_type FROM parts
         WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![upload_id, after, limit as i64], part_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes a completed upload and its parts; returns the part blobs (the caller keeps those the
/// new object uses). A link's slot stays taken: it is now the link's file.
pub fn remove(conn: &Connection, upload_id: &str) -> Result<Vec<String>, DbError> {
    let blobs = parts(conn, upload_id, 0, usize::MAX >> 1)?
        .into_iter()
        .map(|p| p.blob)
        .collect();
    conn.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
    Ok(blobs)
}

/// Uploads of `bucket` in (key, initiated) order, after the given markers, as S3 pages them:
/// keys after `key_marker`; with an `upload_id_marker`, also the uploads of `key_marker` itself
/// that come after that upload (by initiation, or by id if that upload is gone).
pub fn list(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    key_marker: &str,
    upload_id_marker: &str,
    limit: usize,
) -> Result<Vec<UploadRecord>, DbError> {
    let marker_initiated: Option<i64> = conn
        .prepare_cached("SELECT initiated FROM uploads WHERE upload_id = ?1")?
        .query_row([upload_id_marker], |r| r.get(0))
        .optional()?;
    let mut stmt = conn.prepare_cached(
        "SELECT upload_id, bucket, key, owner, initiated, headers, link_id FROM uploads
         WHERE bucket = ?1 AND substr(key, 1, length(?2)) = ?2
           AND (key > ?3 OR (key = ?3 AND ?4 != '' AND CASE WHEN ?6 IS NULL
                THEN upload_id > ?4
                ELSE initiated > ?6 OR (initiated = ?6 AND upload_id > ?4) END))
         ORDER BY key, initiated, upload_id LIMIT ?5",
    )?;
    let rows = stmt.query_map(
        params![
            bucket,
            prefix,
            key_marker,
            upload_id_marker,
            limit as i64,
            marker_initiated
        ],
        upload_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ids of uploads started before `cutoff` (milliseconds), for the expiry sweep.
pub fn expired(conn: &Connection, cutoff: i64) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare("SELECT upload_id FROM uploads WHERE initiated < ?1")?;
    let rows = stmt.query_map([cutoff], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Aborts an upload: deletes it and its parts and, only if this statement really deleted it,
/// gives back the link slot it held, in the caller's transaction. Of any number of concurrent
/// aborts (or an abort racing a completion or the expiry sweep), one finds the row. `None`: no
/// such upload (any more).
pub fn abort(conn: &Connection, upload_id: &str) -> Result<Option<Vec<String>>, DbError> {
    let blobs = parts(conn, upload_id, 0, usize::MAX >> 1)?
        .into_iter()
        .map(|p| p.blob)
        .collect();
    let deleted: Option<Option<String>> = conn
        .prepare_cached("DELETE FROM uploads WHERE upload_id = ?1 RETURNING link_id")?
        .query_row([upload_id], |r| r.get(0))
        .optional()?;
    let Some(link_id) = deleted else {
        return Ok(None);
    };
    if let Some(link_id) = link_id {
        super::links::release_upload(conn, &link_id)?;
    }
    Ok(Some(blobs))
}

/// Ids of the unfinished uploads of revoked or expired links (`now` in milliseconds): they can
/// take no part and never complete.
pub fn of_closed_links(conn: &Connection, now: i64) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.upload_id FROM uploads u JOIN links l ON l.id = u.link_id
         WHERE l.revoked OR l.expires_at <= ?1",
    )?;
    let rows = stmt.query_map([now], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ids of the unfinished uploads of a link.
pub fn of_link(conn: &Connection, link_id: &str) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT upload_id FROM uploads WHERE link_id = ?1")?;
    let rows = stmt.query_map([link_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Bytes of an upload's parts other than part `except` (the one being replaced).
pub fn size_of_other_parts(
    conn: &Connection,
    upload_id: &str,
    except: u32,
) -> Result<u64, DbError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(size), 0) FROM parts WHERE upload_id = ?1 AND part_number != ?2",
        )?
        .query_row(params![upload_id, except], |r| r.get(0))?;
    Ok(n as u64)
}

/// Whether an unfinished upload targets `bucket/key`.
pub fn key_in_progress(conn: &Connection, bucket: &str, key: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM uploads WHERE bucket = ?1 AND key = ?2 LIMIT 1")?
        .exists(params![bucket, key])?)
}

/// The upload `upload_id`, whatever its key (the expiry and a link's revocation, which know
/// only ids, need its record to abort the backend's upload behind it).
pub fn get_by_id(conn: &Connection, upload_id: &str) -> Result<Option<UploadRecord>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT upload_id, bucket, key, owner, initiated, headers, link_id FROM uploads
             WHERE upload_id = ?1",
        )?
        .query_row([upload_id], upload_from_row)
        .optional()?)
}

/// The upload `upload_id` if link `link_id` began it.
pub fn get_of_link(
    conn: &Connection,
    link_id: &str,
    upload_id: &str,
) -> Result<Option<UploadRecord>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT upload_id, bucket, key, owner, initiated, headers, link_id FROM uploads
             WHERE upload_id = ?1 AND link_id = ?2",
        )?
        .query_row(params![upload_id, link_id], upload_from_row)
        .optional()?)
}

/// How many multipart uploads are open (started, neither completed nor aborted), for `/-/metrics`.
pub fn count_open(conn: &Connection) -> Result<u64, DbError> {
    Ok(conn.query_row("SELECT count(*) FROM uploads", [], |r| r.get::<_, i64>(0))? as u64)
}

/// Every open upload's saved headers (JSON): under the S3 backend they name the backend's
/// multipart upload behind each row, which the sweep of orphan backend uploads spares.
pub fn all_headers(conn: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT headers FROM uploads")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
