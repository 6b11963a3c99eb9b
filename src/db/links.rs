//! Shareable upload links.

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

impl LinkRecord {
    /// Why the link can no longer be used, if it can't.
    pub fn unusable(&self) -> Option<&'static str> {
        if self.revoked {
            Some("This upload link has been revoked.")
        } else if self.expires_at <= now_millis() {
            Some("This upload link has expired.")
        } else if self.max_files.is_some_and(|m| self.uploaded_files >= m) {
            Some("This upload link has received all the files it accepts.")
        } else {
            None
        }
    }
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

/// Revokes by token or public id.
pub fn revoke(conn: &Connection, token_or_id: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE links SET revoked = 1 WHERE token = ?1 OR id = ?1",
        [token_or_id],
    )? > 0)
}

/// Reserves one upload on the link with public id `id`: refused (with the reason) when the link is
/// revoked, expired or full. `Ok(None)`: no such link.
pub fn reserve_upload(
    conn: &Connection,
    id: &str,
) -> Result<Option<Result<(), &'static str>>, DbError> {
    let Some(link) = get_by_id(conn, id)? else {
        return Ok(None);
    };
    if let Some(reason) = link.unusable() {
        return Ok(Some(Err(reason)));
    }
    conn.execute(
        "UPDATE links SET uploaded_files = uploaded_files + 1 WHERE id = ?1",
        [id],
    )?;
    Ok(Some(Ok(())))
}

/// Gives back a reservation whose upload failed.
pub fn release_upload(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE links SET uploaded_files = max(uploaded_files - 1, 0) WHERE id = ?1",
        [id],
    )?;
    Ok(())
}
