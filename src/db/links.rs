//! Shareable upload links: their rows. Their rules (open, full, accepted types) are in
//! `crate::links::link`.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DbError, now_millis};

#[derive(Debug, Clone)]
pub struct LinkRecord {
    pub token: String,
    pub id: String,
    pub bucket: String,
    pub prefix: String,
    pub max_size: u64,
    /// `image/` (a prefix), `image/png` (exact) or `image/png,image/jpeg` (a list).
    pub content_type: Option<String>,
    pub max_files: Option<u64>,
    pub uploaded_files: u64,
    pub access_key: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
}

const COLUMNS: &str =
    "token, id, bucket, prefix, max_size, content_type, max_files, uploaded_files,
    access_key, created_at, expires_at, revoked";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LinkRecord> {
    Ok(LinkRecord {
        token: r.get(0)?,
        id: r.get(1)?,
        bucket: r.get(2)?,
        prefix: r.get(3)?,
        max_size: r.get::<_, i64>(4)? as u64,
        content_type: r.get(5)?,
        max_files: r.get::<_, Option<i64>>(6)?.map(|n| n as u64),
        uploaded_files: r.get::<_, i64>(7)? as u64,
        access_key: r.get(8)?,
        created_at: r.get(9)?,
        expires_at: r.get(10)?,
        revoked: r.get(11)?,
    })
}

/// A random, unguessable token (two UUIDv4s: 244 random bits).
pub fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

pub fn insert(conn: &Connection, l: &LinkRecord) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO links (token, id, bucket, prefix, max_size, content_type, max_files,
             uploaded_files, access_key, created_at, expires_at, revoked)
         VALUES (?1, ?10, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, 0)",
        params![
            l.token,
            l.bucket,
            l.prefix,
            l.max_size as i64,
            l.content_type,
            l.max_files.map(|n| n as i64),
            l.access_key,
            l.created_at,
            l.expires_at,
            l.id
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, token: &str) -> Result<Option<LinkRecord>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM links WHERE token = ?1"),
            [token],
            from_row,
        )
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<LinkRecord>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM links ORDER BY created_at"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get_by_id(conn: &Connection, id: &str) -> Result<Option<LinkRecord>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM links WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Revokes by token or public id, and aborts the link's unfinished multipart uploads in the
/// same transaction (their slots are given back). `None`: no such link; else the part blobs to
/// delete.
pub fn revoke(conn: &Connection, token_or_id: &str) -> Result<Option<Vec<String>>, DbError> {
    let id: Option<String> = conn
        .query_row(
            "UPDATE links SET revoked = 1 WHERE token = ?1 OR id = ?1 RETURNING id",
            [token_or_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else { return Ok(None) };
    let mut blobs = Vec::new();
    for upload_id in super::uploads::of_link(conn, &id)? {
        blobs.extend(super::uploads::abort(conn, &upload_id)?.unwrap_or_default());
    }
    Ok(Some(blobs))
}

/// What became of a request for one of a link's slots.
#[derive(Debug, Clone)]
pub enum Reservation {
    /// The slot is taken: the change it pays for may go ahead.
    Taken,
    /// No link has this id.
    Unknown,
    /// The link is revoked, expired or full (`links::Link` says which, for the person uploading).
    Refused(LinkRecord),
}

/// Takes one of the link's slots for a new upload, with one conditional `UPDATE`, so that
/// concurrent uploads can never take more than `max_files` between them. Call it in the same
/// transaction as the change it pays for (the upload row it creates), or give the slot back with
/// [`release_upload`] exactly once if that change fails.
pub fn reserve_upload(conn: &Connection, id: &str) -> Result<Reservation, DbError> {
    let taken = conn
        .prepare_cached(
            "UPDATE links SET uploaded_files = uploaded_files + 1
             WHERE id = ?1 AND NOT revoked AND expires_at > ?2
               AND (max_files IS NULL OR uploaded_files < max_files)",
        )?
        .execute(params![id, now_millis()])?;
    if taken == 1 {
        return Ok(Reservation::Taken);
    }
    Ok(match get_by_id(conn, id)? {
        None => Reservation::Unknown,
        Some(link) => Reservation::Refused(link),
    })
}

/// Gives back one slot: only for an upload that took one and that really ended without a file
/// (its row deleted by this transaction, or its form refused after the reservation).
pub fn release_upload(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE links SET uploaded_files = uploaded_files - 1 WHERE id = ?1 AND uploaded_files > 0",
    )?
    .execute([id])?;
    Ok(())
}
