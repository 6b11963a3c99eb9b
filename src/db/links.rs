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
    /// Why the link is closed (revoked or expired), if it is. A closed link takes nothing more:
    /// no new upload, no part, no completion.
    pub fn closed(&self) -> Option<&'static str> {
        if self.revoked {
            Some("This upload link has been revoked.")
        } else if self.expires_at <= now_millis() {
            Some("This upload link has expired.")
        } else {
            None
        }
    }

    /// Whether every file the link accepts is received or on its way. A full link still lets
    /// the uploads it counted finish (their parts, their completion).
    pub fn full(&self) -> bool {
        self.max_files.is_some_and(|m| self.uploaded_files >= m)
    }

    /// Why the link cannot take a new file, if it can't: closed, or full.
    pub fn unusable(&self) -> Option<&'static str> {
        self.closed().or_else(|| self.full().then_some(FULL))
    }

    /// Whether the link accepts a file of type `content_type` (a `Content-Type` value).
    ///
    /// The one rule for every path (form POST, multipart, Uppy): the link's list is split on
    /// commas; an entry ending in `/` (or `/*`) is a family and matches any type in it
    /// (`image/` takes `image/svg+xml`); any other entry must equal the file's media type.
    /// Comparisons ignore case and the parameters after `;`. A value that is not one
    /// `type/subtype` media type (such as a comma list) matches nothing. No (or an empty) list:
    /// any type.
    pub fn accepts_type(&self, content_type: &str) -> bool {
        let Some(rule) = &self.content_type else {
            return true;
        };
        if type_entries(rule).next().is_none() {
            return true;
        }
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let valid = media.split_once('/').is_some_and(|(t, s)| {
            let token = |x: &str| !x.is_empty() && x.bytes().all(is_token_byte);
            token(t) && token(s)
        });
        if !valid {
            return false;
        }
        let media = media.to_ascii_lowercase();
        type_entries(rule).any(|entry| match entry {
            TypeEntry::Family(family) => media.starts_with(&family.to_ascii_lowercase()),
            TypeEntry::Exact(exact) => media == exact.to_ascii_lowercase(),
        })
    }
}

/// One entry of a link's type list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeEntry<'a> {
    /// `image/` (written `image/` or `image/*`): every type of the family.
    Family(&'a str),
    /// `image/png`: exactly this media type.
    Exact(&'a str),
}

/// The entries of a link's `content_type` list, in order (empty entries skipped).
pub fn type_entries(rule: &str) -> impl Iterator<Item = TypeEntry<'_>> {
    rule.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.strip_suffix('*') {
            Some(family) if family.ends_with('/') => TypeEntry::Family(family),
            _ if e.ends_with('/') => TypeEntry::Family(e),
            _ => TypeEntry::Exact(e),
        })
}

/// RFC 9110 `tchar`: the bytes of a media type's type and subtype.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const FULL: &str = "This upload link has received all the files it accepts.";

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

/// Why a link refused a new upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No link has this id.
    Unknown,
    /// Revoked, expired or full: the reason, for the person uploading.
    Unusable(&'static str),
}

/// Takes one of the link's slots for a new upload, with one conditional `UPDATE`, so that
/// concurrent uploads can never take more than `max_files` between them. Call it in the same
/// transaction as the change it pays for (the upload row it creates), or give the slot back with
/// [`release_upload`] exactly once if that change fails.
pub fn reserve_upload(conn: &Connection, id: &str) -> Result<Result<(), Refusal>, DbError> {
    let taken = conn
        .prepare_cached(
            "UPDATE links SET uploaded_files = uploaded_files + 1
             WHERE id = ?1 AND NOT revoked AND expires_at > ?2
               AND (max_files IS NULL OR uploaded_files < max_files)",
        )?
        .execute(params![id, now_millis()])?;
    if taken == 1 {
        return Ok(Ok(()));
    }
    Ok(Err(match get_by_id(conn, id)? {
        None => Refusal::Unknown,
        Some(link) => Refusal::Unusable(link.unusable().unwrap_or(FULL)),
    }))
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
/// [`settle_form_slots`]). Returns the record's id, for [`end_form_slot`].
pub fn reserve_form(
    conn: &Connection,
    link_id: &str,
    bucket: &str,
    key: &str,
) -> Result<Result<String, Refusal>, DbError> {
    if let Err(refusal) = reserve_upload(conn, link_id)? {
        return Ok(Err(refusal));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_types(rule: &str) -> LinkRecord {
        crate::ui::new_link(
            "b",
            "",
            1,
            Some(rule.to_owned()),
            None,
            std::time::Duration::from_secs(60),
            "ak",
        )
    }

    #[test]
    fn a_type_list_is_matched_exactly() {
        let l = with_types("image/png, image/jpeg");
        assert!(l.accepts_type("image/png"));
        assert!(l.accepts_type("IMAGE/JPEG; charset=binary"));
        assert!(!l.accepts_type("image/svg+xml"));
        assert!(!l.accepts_type("image/pngx"));
        assert!(!l.accepts_type("text/html"));
        assert!(!l.accepts_type("image/png,text/html"));
        assert!(!l.accepts_type(""));
    }

    #[test]
    fn a_family_takes_its_members_only() {
        for rule in ["image/", "image/*"] {
            let l = with_types(rule);
            assert!(l.accepts_type("image/svg+xml"), "{rule}");
            assert!(!l.accepts_type("image/png, text/html"), "{rule}");
            assert!(!l.accepts_type("imagex/png"), "{rule}");
            assert!(!l.accepts_type("text/plain"), "{rule}");
        }
        let open = LinkRecord {
            content_type: None,
            ..with_types("x/")
        };
        assert!(open.accepts_type("anything"));
        assert!(with_types(" , ").accepts_type("text/html"));
    }
}
