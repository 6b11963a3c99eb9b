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
    /// Its files' bytes must match their declared type (`--verify-type`, `sniff::check`).
    pub verify_type: bool,
    /// Files uploaded through the link expire this many milliseconds after their upload.
    pub expire_objects_after: Option<i64>,
    /// The most bytes the link's files may take together.
    pub max_total_size: Option<u64>,
    /// Bytes of the files stored through the link so far.
    pub uploaded_bytes: u64,
}

const COLUMNS: &str =
    "token, id, bucket, prefix, max_size, content_type, max_files, uploaded_files,
    access_key, created_at, expires_at, revoked, verify_type, expire_objects_after,
    max_total_size, uploaded_bytes";

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
        verify_type: r.get(12)?,
        expire_objects_after: r.get(13)?,
        max_total_size: r.get::<_, Option<i64>>(14)?.map(|n| n as u64),
        uploaded_bytes: r.get::<_, i64>(15)?.max(0) as u64,
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
             uploaded_files, access_key, created_at, expires_at, revoked, verify_type,
             expire_objects_after, max_total_size)
         VALUES (?1, ?10, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, 0, ?11, ?12, ?13)",
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
            l.id,
            l.verify_type,
            l.expire_objects_after,
            l.max_total_size.map(|n| n as i64)
        ],
    )?;
    Ok(())
}

/// This node's copy of a link kept in the shared control database (`control::Links::Shared`):
/// inserted, or its terms and revocation updated. `uploaded_files` is copied as read (the
/// shared row's counts); `uploaded_bytes` stays this node's (what its SQLite quotas settle).
pub fn mirror(conn: &Connection, l: &LinkRecord) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO links (token, id, bucket, prefix, max_size, content_type, max_files,
             uploaded_files, access_key, created_at, expires_at, revoked, verify_type,
             expire_objects_after, max_total_size)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (token) DO UPDATE SET
             prefix = excluded.prefix, max_size = excluded.max_size,
             content_type = excluded.content_type, max_files = excluded.max_files,
             uploaded_files = excluded.uploaded_files, access_key = excluded.access_key,
             expires_at = excluded.expires_at, revoked = excluded.revoked,
             verify_type = excluded.verify_type,
             expire_objects_after = excluded.expire_objects_after,
             max_total_size = excluded.max_total_size",
    )?
    .execute(params![
        l.token,
        l.id,
        l.bucket,
        l.prefix,
        l.max_size as i64,
        l.content_type,
        l.max_files.map(|n| n as i64),
        l.uploaded_files as i64,
        l.access_key,
        l.created_at,
        l.expires_at,
        l.revoked,
        l.verify_type,
        l.expire_objects_after,
        l.max_total_size.map(|n| n as i64)
    ])?;
    Ok(())
}

/// Whether two copies of a link agree on everything but their counters (what
/// [`mirror`] needs to refresh).
pub fn same_terms(a: &LinkRecord, b: &LinkRecord) -> bool {
    a.token == b.token
        && a.id == b.id
        && a.bucket == b.bucket
        && a.prefix == b.prefix
        && a.max_size == b.max_size
        && a.content_type == b.content_type
        && a.max_files == b.max_files
        && a.access_key == b.access_key
        && a.expires_at == b.expires_at
        && a.revoked == b.revoked
        && a.verify_type == b.verify_type
        && a.expire_objects_after == b.expire_objects_after
        && a.max_total_size == b.max_total_size
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
    Refused(Box<LinkRecord>),
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
        Some(link) => Reservation::Refused(Box::new(link)),
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

/// Takes a slot for a form upload of `bucket/key` ([`reserve_upload`]) and records it in
/// `link_form_slots`, so that a crash before the file is stored or refused cannot leak it (see
/// [`settle_form_slots`]). Returns the record's id, for [`end_form_slot`], or the
/// reservation that was not [`Reservation::Taken`].
pub fn reserve_form(
    conn: &Connection,
    link_id: &str,
    bucket: &str,
    key: &str,
) -> Result<Result<String, Reservation>, DbError> {
    let reservation = reserve_upload(conn, link_id)?;
    if !matches!(reservation, Reservation::Taken) {
        return Ok(Err(reservation));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    conn.prepare_cached(
        "INSERT INTO link_form_slots (id, link_id, bucket, key, taken_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, link_id, bucket, key, now_millis()])?;
    Ok(Ok(id))
}

/// Ends a form's slot record: `stored`, the slot stays taken (the file is the link's); else it is
/// given back. Only the call that deletes the record acts, so a slot is given back at most once.
pub fn end_form_slot(conn: &Connection, slot: &str, stored: bool) -> Result<(), DbError> {
    let link_id: Option<String> = conn
        .prepare_cached("DELETE FROM link_form_slots WHERE id = ?1 RETURNING link_id")?
        .query_row([slot], |r| r.get(0))
        .optional()?;
    if let (Some(link_id), false) = (link_id, stored) {
        release_upload(conn, &link_id)?;
    }
    Ok(())
}

/// At start-up: the form slots a killed server left open. A slot whose file was stored (an object
/// at its key, carrying its link's id, written since the slot was taken) stays taken; any other
/// is given back. Returns how many were given back.
pub fn settle_form_slots(conn: &Connection) -> Result<usize, DbError> {
    let mut stmt = conn.prepare(
        "SELECT s.id, EXISTS (
             SELECT 1 FROM objects o, json_each(o.meta) m
             WHERE o.bucket = s.bucket AND o.key = s.key AND o.last_modified >= s.taken_at
               AND json_extract(m.value, '$[0]') = 'upload-link'
               AND json_extract(m.value, '$[1]') = s.link_id)
         FROM link_form_slots s",
    )?;
    let slots = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut released = 0;
    for (id, stored) in slots {
        end_form_slot(conn, &id, stored)?;
        released += usize::from(!stored);
    }
    Ok(released)
}
