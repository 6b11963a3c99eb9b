//! Object rows: `(bucket, key)` → size, ETag, headers, user metadata and where the bytes are
//! (inline in the row for small objects, or a UUID-named blob file).

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

/// Where an object's bytes live.
#[derive(Debug, Clone)]
pub enum Body {
    /// Small objects: the bytes are in the row, committed with it.
    Inline(Vec<u8>),
    /// The blob id (a UUID); the file is `data/blobs/ab/cd/<uuid>`.
    Blob(String),
    /// A completed multipart upload: its part blobs and their sizes, in order.
    Parts(Vec<(String, u64)>),
    /// The bytes were not loaded (HEAD, listings).
    NotLoaded,
    /// The S3 backend's object `key` (`"{bucket}/{key}"` in the backend bucket) in its version
    /// `etag`: a read asks for that version only (docs/cluster.md section 9.2).
    Backend { key: String, etag: String },
}

/// Everything S3 stores about an object except its bytes.
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    pub size: u64,
    /// Quoted hex MD5, as sent in the `ETag` header.
    pub etag: String,
    pub last_modified: i64,
    pub owner: String,
    pub acl: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*` pairs, names lowercased and without the prefix.
    pub meta: Vec<(String, String)>,
    /// Additional checksum: (`CRC32`|`CRC32C`|`CRC64NVME`|`SHA1`|`SHA256`, base64 value).
    pub checksum: Option<(String, String)>,
    /// URL-encoded tag set (`a=1&b=2`), as `x-amz-tagging` carries it.
    pub tagging: Option<String>,
    /// The type the first bytes showed at upload (`sniff::detect`); `None` when nothing was
    /// recognised, or for objects stored before detection existed.
    pub detected_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ObjectRecord {
    pub key: String,
    pub meta: ObjectMeta,
    pub body: Body,
}

const META_COLUMNS: &str =
    "key, size, etag, last_modified, owner, acl, content_type, cache_control,
    content_disposition, content_encoding, content_language, expires, meta, checksum, tagging, blob,
    manifest, detected_type";

fn from_row(r: &rusqlite::Row<'_>, with_data: bool) -> rusqlite::Result<ObjectRecord> {
    let meta_json: String = r.get(12)?;
    let checksum: Option<String> = r.get(13)?;
    let blob: Option<String> = r.get(15)?;
    let manifest: Option<String> = r.get(16)?;
    let body = match (blob, manifest, with_data) {
        (Some(id), _, _) => Body::Blob(id),
        (None, Some(m), _) => Body::Parts(serde_json::from_str(&m).unwrap_or_default()),
        (None, None, true) => Body::Inline(r.get::<_, Option<Vec<u8>>>(18)?.unwrap_or_default()),
        (None, None, false) => Body::NotLoaded,
    };
    Ok(ObjectRecord {
        key: r.get(0)?,
        meta: ObjectMeta {
            size: r.get::<_, i64>(1)? as u64,
            etag: r.get(2)?,
            last_modified: r.get(3)?,
            owner: r.get(4)?,
            acl: r.get(5)?,
            content_type: r.get(6)?,
            cache_control: r.get(7)?,
            content_disposition: r.get(8)?,
            content_encoding: r.get(9)?,
            content_language: r.get(10)?,
            expires: r.get(11)?,
            meta: serde_json::from_str(&meta_json).unwrap_or_default(),
            checksum: checksum
                .and_then(|c| c.split_once(' ').map(|(a, v)| (a.to_owned(), v.to_owned()))),
            tagging: r.get(14)?,
            detected_type: r.get(17)?,
        },
        body,
    })
}

/// Loads an object's row; with `with_data` the inline bytes too.
pub fn get(
    conn: &Connection,
    bucket: &str,
    key: &str,
    with_data: bool,
) -> Result<Option<ObjectRecord>, DbError> {
    let sql = if with_data {
        format!("SELECT {META_COLUMNS}, data FROM objects WHERE bucket = ?1 AND key = ?2")
    } else {
        format!("SELECT {META_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2")
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    Ok(stmt
        .query_row(params![bucket, key], |r| from_row(r, with_data))
        .optional()?)
}

/// The blobs a row's body uses (its own blob, or its manifest's part blobs).
pub(super) fn blobs_of(blob: Option<String>, manifest: Option<String>) -> Vec<String> {
    match (blob, manifest) {
        (Some(b), _) => vec![b],
        (None, Some(m)) => serde_json::from_str::<Vec<(String, u64)>>(&m)
            .unwrap_or_default()
            .into_iter()
            .map(|(b, _)| b)
            .collect(),
        (None, None) => Vec::new(),
    }
}

/// Inserts or replaces `(bucket, key)`. Returns the blobs the old version used, which the caller
/// removes once this transaction has committed.
pub fn put(
    conn: &Connection,
    bucket: &str,
    key: &str,
    meta: &ObjectMeta,
    body: &Body,
) -> Result<Vec<String>, DbError> {
    let old: Vec<String> = conn
        .prepare_cached("SELECT blob, manifest FROM objects WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![bucket, key], |r| Ok(blobs_of(r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    let manifest_json;
    let (blob, data, manifest): (Option<&str>, Option<&[u8]>, Option<&str>) = match body {
        Body::Inline(bytes) => (None, Some(bytes), None),
        Body::Blob(id) => (Some(id), None, None),
        Body::Parts(parts) => {
            manifest_json = serde_json::to_string(parts)
                .map_err(|e| DbError::Corrupt(format!("manifest: {e}")))?;
            (None, None, Some(manifest_json.as_str()))
        }
        Body::NotLoaded => return Err(DbError::Corrupt("object stored without a body".into())),
        Body::Backend { .. } => {
            return Err(DbError::Corrupt(
                "an S3 backend's object has no row in `objects`".into(),
            ));
        }
    };
    let meta_json = serde_json::to_string(&meta.meta)
        .map_err(|e| DbError::Corrupt(format!("metadata: {e}")))?;
    let checksum = meta.checksum.as_ref().map(|(a, v)| format!("{a} {v}"));
    conn.prepare_cached(
        "INSERT INTO objects (bucket, key, size, etag, last_modified, owner, acl, content_type,
             cache_control, content_disposition, content_encoding, content_language, expires,
             meta, checksum, tagging, blob, data, manifest, detected_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19, ?20)
         ON CONFLICT(bucket, key) DO UPDATE SET size = excluded.size, etag = excluded.etag,
             last_modified = excluded.last_modified, owner = excluded.owner, acl = excluded.acl,
             content_type = excluded.content_type, cache_control = excluded.cache_control,
             content_disposition = excluded.content_disposition,
             content_encoding = excluded.content_encoding,
             content_language = excluded.content_language, expires = excluded.expires,
             meta = excluded.meta, checksum = excluded.checksum, tagging = excluded.tagging,
             blob = excluded.blob, data = excluded.data, manifest = excluded.manifest,
             detected_type = excluded.detected_type, expires_at = NULL",
    )?
    .execute(params![
        bucket,
        key,
        meta.size as i64,
        meta.etag,
        meta.last_modified,
        meta.owner,
        meta.acl,
        meta.content_type,
        meta.cache_control,
        meta.content_disposition,
        meta.content_encoding,
        meta.content_language,
        meta.expires,
        meta_json,
        checksum,
        meta.tagging,
        blob,
        data,
        manifest,
        meta.detected_type,
    ])?;
    let new: Vec<String> = match body {
        Body::Blob(id) => vec![id.clone()],
        Body::Parts(parts) => parts.iter().map(|(b, _)| b.clone()).collect(),
        _ => Vec::new(),
    };
    Ok(old.into_iter().filter(|b| !new.contains(b)).collect())
}

/// Deletes `(bucket, key)`. `None` when there was no such object; otherwise the blobs it used.
pub fn delete(conn: &Connection, bucket: &str, key: &str) -> Result<Option<Vec<String>>, DbError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob, manifest",
        )?
        .query_row(params![bucket, key], |r| Ok(blobs_of(r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Deletes `(bucket, key)` only when `check` accepts its current version (`None`: no object),
/// reading and deleting on the same connection, so inside the caller's write transaction: no
/// other write can land between the check and the delete (S3's conditional deletes). `Ok(Err)`
/// is `check`'s refusal, with nothing deleted; otherwise as [`delete`].
pub fn delete_if<E>(
    conn: &Connection,
    bucket: &str,
    key: &str,
    check: impl FnOnce(Option<&ObjectMeta>) -> Result<(), E>,
) -> Result<Result<Option<Vec<String>>, E>, DbError> {
    let current = get(conn, bucket, key, false)?;
    if let Err(refused) = check(current.as_ref().map(|r| &r.meta)) {
        return Ok(Err(refused));
    }
    Ok(Ok(delete(conn, bucket, key)?))
}

pub fn set_acl(conn: &Connection, bucket: &str, key: &str, acl: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE objects SET acl = ?3 WHERE bucket = ?1 AND key = ?2",
        params![bucket, key, acl],
    )? > 0)
}

/// One entry of a listing.
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: i64,
    pub owner: String,
}

/// The smallest string greater than every string that starts with `prefix` (in UTF-8 byte
/// order), or `None` when there is none (the prefix is all U+10FFFF).
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Up to `limit` rows of `bucket` with keys in `[from, until)` (`from` exclusive when
/// `exclusive`), in key order.
pub fn scan(
    conn: &Connection,
    bucket: &str,
    from: &str,
    exclusive: bool,
    until: Option<&str>,
    limit: usize,
) -> Result<Vec<ListEntry>, DbError> {
    let op = if exclusive { ">" } else { ">=" };
    let sql = match until {
        Some(_) => format!(
            "SELECT key, size, etag, last_modified, owner FROM objects
             WHERE bucket = ?1 AND key {op} ?2 AND key < ?3 ORDER BY key LIMIT ?4"
        ),
        None => format!(
            "SELECT key, size, etag, last_modified, owner FROM objects
             WHERE bucket = ?1 AND key {op} ?2 AND ?3 IS NULL ORDER BY key LIMIT ?4"
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![bucket, from, until, limit as i64], |r| {
        Ok(ListEntry {
            key: r.get(0)?,
            size: r.get::<_, i64>(1)? as u64,
            etag: r.get(2)?,
            last_modified: r.get(3)?,
            owner: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every blob id some row refers to: objects, manifests and uploaded parts (for the start-up
/// sweep of orphans).
pub fn referenced_blobs(conn: &Connection) -> Result<std::collections::HashSet<String>, DbError> {
    let mut set = std::collections::HashSet::new();
    let mut stmt = conn.prepare(
        "SELECT blob, manifest FROM objects WHERE blob IS NOT NULL OR manifest IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok(blobs_of(r.get(0)?, r.get(1)?)))?;
    for row in rows {
        set.extend(row?);
    }
    let mut stmt = conn.prepare("SELECT blob FROM parts")?;
    for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
        set.insert(row?);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_bounds_every_string_with_the_prefix() {
        assert_eq!(prefix_successor("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_successor("").as_deref(), None);
        let s = prefix_successor("x\u{10FFFF}").unwrap();
        assert_eq!(s, "y");
        assert!("a/zzz\u{10FFFF}" < prefix_successor("a/").unwrap().as_str());
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
