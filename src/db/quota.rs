//! Quotas: a bucket's limits (bytes, objects) and a link's total, what is used of them, and the
//! reservations that hold room for uploads whose bytes are still arriving.
//!
//! Used bytes are counted from three places: the bucket's objects (`bucket_usage`, kept by
//! triggers), the parts of its unfinished multipart uploads, and `quota_reservations`. Every
//! reservation and every commit checks the limit in the writer's transaction, so concurrent
//! uploads cannot pass it together.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

/// A bucket's limits; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub max_size: Option<u64>,
    pub max_objects: Option<u64>,
}

impl Quota {
    pub fn is_set(&self) -> bool {
        self.max_size.is_some() || self.max_objects.is_some()
    }
}

/// Which limit a write would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    BucketSize { max: u64 },
    BucketObjects { max: u64 },
    LinkTotal { max: u64 },
}

/// What a bucket holds, against its quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Bytes of its objects.
    pub bytes: u64,
    pub objects: u64,
    /// Bytes of the parts of its unfinished multipart uploads.
    pub part_bytes: u64,
    /// Bytes and new keys held by uploads in progress.
    pub reserved_bytes: u64,
    pub reserved_objects: u64,
}

/// Sets (or, with both limits `None`, clears) a bucket's quota. `false`: no such bucket.
pub fn set(conn: &Connection, bucket: &str, quota: Quota) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE buckets SET quota_max_size = ?2, quota_max_objects = ?3 WHERE name = ?1",
        params![
            bucket,
            quota.max_size.map(|n| n as i64),
            quota.max_objects.map(|n| n as i64)
        ],
    )? > 0)
}

fn get(conn: &Connection, bucket: &str) -> Result<Quota, DbError> {
    Ok(conn
        .prepare_cached("SELECT quota_max_size, quota_max_objects FROM buckets WHERE name = ?1")?
        .query_row([bucket], |r| {
            Ok(Quota {
                max_size: r.get::<_, Option<i64>>(0)?.map(|n| n as u64),
                max_objects: r.get::<_, Option<i64>>(1)?.map(|n| n as u64),
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// What `bucket` uses; `except`: a reservation not to count (the one of the write asking).
pub fn usage(conn: &Connection, bucket: &str, except: Option<&str>) -> Result<Usage, DbError> {
    let (bytes, objects): (i64, i64) = conn
        .prepare_cached("SELECT bytes, objects FROM bucket_usage WHERE bucket = ?1")?
        .query_row([bucket], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    let part_bytes: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(p.size), 0) FROM uploads u JOIN parts p ON p.upload_id = u.upload_id
             WHERE u.bucket = ?1",
        )?
        .query_row([bucket], |r| r.get(0))?;
    let (reserved_bytes, reserved_objects): (i64, i64) = conn
        .prepare_cached(
            "SELECT coalesce(sum(bytes), 0), coalesce(sum(objects), 0) FROM quota_reservations
             WHERE bucket = ?1 AND id IS NOT ?2",
        )?
        .query_row(params![bucket, except], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let n = |v: i64| v.max(0) as u64;
    Ok(Usage {
        bytes: n(bytes),
        objects: n(objects),
        part_bytes: n(part_bytes),
        reserved_bytes: n(reserved_bytes),
        reserved_objects: n(reserved_objects),
    })
}

/// A link's total limit and the bytes it has taken: its stored files, the parts of its
/// unfinished uploads and its reservations (but `except`). `None`: the link has no total.
fn link_room(
    conn: &Connection,
    link_id: &str,
    except: Option<&str>,
) -> Result<Option<(u64, u64)>, DbError> {
    let row: Option<(Option<i64>, i64)> = conn
        .prepare_cached("SELECT max_total_size, uploaded_bytes FROM links WHERE id = ?1")?
        .query_row([link_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(max), uploaded)) = row else {
        return Ok(None);
    };
    let pending: i64 = conn
        .prepare_cached(
            "SELECT (SELECT coalesce(sum(p.size), 0) FROM uploads u
                     JOIN parts p ON p.upload_id = u.upload_id WHERE u.link_id = ?1)
                  + (SELECT coalesce(sum(bytes), 0) FROM quota_reservations
                     WHERE link_id = ?1 AND id IS NOT ?2)",
        )?
        .query_row(params![link_id, except], |r| r.get(0))?;
    Ok(Some((max as u64, (uploaded + pending).max(0) as u64)))
}

/// What a write would add, and what it frees in the same change.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub bucket: &'a str,
    /// The upload link the bytes come through, if any (its total applies).
    pub link_id: Option<&'a str>,
    /// The most bytes the write may bring (`None`: not yet known).
    pub bytes: Option<u64>,
    /// Bytes the write frees in the bucket (the version or part it replaces).
    pub replaces: u64,
    /// Whether the write adds a key.
    pub new_object: bool,
}

/// How much room a write has: the most bytes it may bring (`None`: no limit applies), or the
/// limit it passes.
pub fn room(
    conn: &Connection,
    claim: &Claim<'_>,
    except: Option<&str>,
) -> Result<Result<Option<u64>, Exceeded>, DbError> {
    let quota = get(conn, claim.bucket)?;
    let mut most: Option<u64> = None;
    if quota.is_set() {
        let used = usage(conn, claim.bucket, except)?;
        if let Some(max) = quota.max_objects
            && claim.new_object
            && used.objects + used.reserved_objects >= max
        {
            return Ok(Err(Exceeded::BucketObjects { max }));
        }
        if let Some(max) = quota.max_size {
            let taken = used.bytes + used.part_bytes + used.reserved_bytes;
            let free = (max + claim.replaces).saturating_sub(taken);
            if claim.bytes.is_some_and(|b| b > free) {
                return Ok(Err(Exceeded::BucketSize { max }));
            }
            most = Some(free);
        }
    }
    if let Some(link_id) = claim.link_id
        && let Some((max, taken)) = link_room(conn, link_id, except)?
    {
        let free = max.saturating_sub(taken);
        if claim.bytes.is_some_and(|b| b > free) {
            return Ok(Err(Exceeded::LinkTotal { max }));
        }
        most = Some(most.map_or(free, |m| m.min(free)));
    }
    Ok(Ok(most))
}

/// Holds room for a write whose bytes are about to arrive: `bytes` (less what it replaces) and
/// its new key, if it adds one. Returns the reservation's id, for [`release`], or for the commit
/// to drop in its own transaction.
pub fn reserve(conn: &Connection, claim: &Claim<'_>, bytes: u64) -> Result<String, DbError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    conn.prepare_cached(
        "INSERT INTO quota_reservations (id, bucket, link_id, bytes, objects)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        claim.bucket,
        claim.link_id,
        bytes.saturating_sub(claim.replaces) as i64,
        i64::from(claim.new_object)
    ])?;
    Ok(id)
}

/// Drops a reservation (its write committed or failed); dropping one twice is harmless.
pub fn release(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM quota_reservations WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// At start-up: no upload survives a restart, so neither does any reservation.
pub fn clear_reservations(conn: &Connection) -> Result<usize, DbError> {
    Ok(conn.execute("DELETE FROM quota_reservations", [])?)
}

/// The link a reservation was taken for (set when the upload came through a link).
pub fn link_of(conn: &Connection, reservation: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached("SELECT link_id FROM quota_reservations WHERE id = ?1")?
        .query_row([reservation], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Counts a stored file's bytes against the link it came through.
pub fn add_link_bytes(conn: &Connection, link_id: &str, bytes: u64) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE links SET uploaded_bytes = uploaded_bytes + ?2 WHERE id = ?1")?
        .execute(params![link_id, bytes as i64])?;
    Ok(())
}

/// The size of the object at `bucket/key` (0 when there is none) and whether there is one.
/// Under the S3 backend the object's size is its `object_extras` row's (the `objects` table is
/// empty there, as `object_extras` is under the filesystem store).
pub fn current_size(conn: &Connection, bucket: &str, key: &str) -> Result<Option<u64>, DbError> {
    Ok(conn
        .prepare_cached(
            "SELECT size FROM objects WHERE bucket = ?1 AND key = ?2
             UNION ALL SELECT size FROM object_extras WHERE bucket = ?1 AND key = ?2 LIMIT 1",
        )?
        .query_row(params![bucket, key], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|n| n as u64))
}

/// The size of part `number` of an upload, if it was uploaded.
pub fn current_part_size(
    conn: &Connection,
    upload_id: &str,
    number: u32,
) -> Result<Option<u64>, DbError> {
    Ok(conn
        .prepare_cached("SELECT size FROM parts WHERE upload_id = ?1 AND part_number = ?2")?
        .query_row(params![upload_id, number], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|n| n as u64))
}
