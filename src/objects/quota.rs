//! Quotas in the core: every write that adds bytes to a bucket (PutObject, POST forms, copies,
//! parts, completions; through a link or not) holds room for them before its body is read, and
//! settles in the transaction that commits it.
//!
//! 1. Before the body: [`reserve_object`] / [`reserve_part`] check the bucket's quota and the
//!    link's total against what is stored, the parts of unfinished uploads and the other
//!    reservations, and hold the room in `quota_reservations` (nothing is written when no limit
//!    applies). A size known up front that does not fit is refused at once; a size only bounded
//!    (a form's file) holds only its new key, and gets a cap (the room now) its body is read
//!    against.
//! 2. At commit: [`settle_object`] / [`settle_part`] check again with the real size and the
//!    current version (another writer may have changed it), and drop the reservation in the
//!    same transaction. This is where an upload of unknown size is decided: exactly as many fit
//!    as the room holds, and one that does not is refused with its staged bytes discarded.
//! 3. A failed write drops its reservation ([`Hold`] does, even when the request is dropped);
//!    start-up drops any a killed server left.

use crate::db::quota::{self, Claim, Exceeded, Quota};
use crate::db::{Db, DbError};
use crate::objects::error::Error;
use rusqlite::Connection;

/// What a write will bring, as far as it is known before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Exactly this many bytes (`Content-Length`, a copy's source).
    Exact(u64),
    /// At most this many (a form's file: the body's length bounds it).
    AtMost(u64),
}

/// Room held for one write. Dropped without [`Hold::settled`], it gives the room back.
#[must_use]
pub struct Hold {
    db: Option<Db>,
    id: Option<String>,
    /// The most bytes the body may bring before it passes a limit (`None`: no limit applies).
    /// A body read against it may still be refused at commit, if concurrent writes took the
    /// room it did not hold.
    pub cap: Option<u64>,
}

impl Hold {
    /// No limit applies to the write.
    pub fn none() -> Hold {
        Hold {
            db: None,
            id: None,
            cap: None,
        }
    }

    /// The reservation, for the commit to settle.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The write committed: its transaction dropped the reservation.
    pub fn settled(mut self) {
        self.id = None;
    }

    /// The most a body may bring: `max`, or less when the quota leaves less.
    pub fn limit(&self, max: u64) -> u64 {
        self.cap.map_or(max, |cap| cap.min(max))
    }

    /// For a body refused as too large (read against [`Hold::limit`]`(max)`): the quota's
    /// refusal when it was the quota, not `max`, that the body passed.
    pub fn passed(&self, max: u64) -> Option<Error> {
        (self.limit(max) < max).then_some(Error::QuotaRoomPassed)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let (Some(id), Some(db)) = (self.id.take(), self.db.take())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = db.write(move |c| quota::release(c, &id)).await {
                    tracing::warn!(error = %e, "releasing a quota reservation failed");
                }
            });
        }
    }
}

/// Holds room for a new version of `bucket/key` of `size`, when a limit applies: the bucket's
/// `quota` (from its record, so that buckets without one cost nothing here), or the `link_id` it
/// comes through (link uploads always hold a reservation: the commit learns the link from it).
pub async fn reserve_object(
    db: &Db,
    bucket_quota: Quota,
    bucket: &str,
    key: &str,
    size: Size,
    link_id: Option<&str>,
) -> Result<Hold, Error> {
    if !bucket_quota.is_set() && link_id.is_none() {
        return Ok(Hold::none());
    }
    let (b, k, l) = (
        bucket.to_owned(),
        key.to_owned(),
        link_id.map(str::to_owned),
    );
    let held = db
        .write(move |c| {
            let old = quota::current_size(c, &b, &k)?;
            let claim = Claim {
                bucket: &b,
                link_id: l.as_deref(),
                bytes: exact(size),
                replaces: old.unwrap_or(0),
                new_object: old.is_none(),
            };
            hold(c, &claim, size)
        })
        .await?
        .map_err(Error::QuotaExceeded)?;
    Ok(Hold {
        db: Some(db.clone()),
        id: Some(held.0),
        cap: held.1,
    })
}

/// Holds room for part `number` of `upload` (replacing that part's earlier upload, if any).
pub async fn reserve_part(
    db: &Db,
    bucket_quota: Quota,
    upload: &crate::db::uploads::UploadRecord,
    number: u32,
    size: Size,
) -> Result<Hold, Error> {
    if !bucket_quota.is_set() && upload.link_id.is_none() {
        return Ok(Hold::none());
    }
    let (b, id, l) = (
        upload.bucket.clone(),
        upload.upload_id.clone(),
        upload.link_id.clone(),
    );
    let held = db
        .write(move |c| {
            let old = quota::current_part_size(c, &id, number)?;
            let claim = Claim {
                bucket: &b,
                link_id: l.as_deref(),
                bytes: exact(size),
                replaces: old.unwrap_or(0),
                new_object: false,
            };
            hold(c, &claim, size)
        })
        .await?
        .map_err(Error::QuotaExceeded)?;
    Ok(Hold {
        db: Some(db.clone()),
        id: Some(held.0),
        cap: held.1,
    })
}

fn exact(size: Size) -> Option<u64> {
    match size {
        Size::Exact(n) => Some(n),
        Size::AtMost(_) => None,
    }
}

/// Checks the claim and takes its reservation: (its id, the cap on the body).
fn hold(
    c: &Connection,
    claim: &Claim<'_>,
    size: Size,
) -> Result<Result<(String, Option<u64>), Exceeded>, DbError> {
    let most = match quota::room(c, claim, None)? {
        Ok(most) => most,
        Err(e) => return Ok(Err(e)),
    };
    // A size only bounded (a form's file: its body's length and the policy's maximum) holds
    // no bytes: holding what *may* come would refuse uploads early (ten forms of 1 KiB under a
    // quota of 10 KiB, the last holding its body's length) and let doomed concurrent uploads
    // crowd out ones that fit. Its body is read against the room there is now, and its commit
    // decides with its real size against what is stored and held by others then, in the
    // writer's transaction: the first bytes committed win and the total is never passed.
    let bytes = match size {
        Size::Exact(n) => n,
        Size::AtMost(_) => 0,
    };
    let id = quota::reserve(c, claim, bytes.min(i64::MAX as u64))?;
    Ok(Ok((id, most)))
}

/// In the transaction that commits `size` bytes as the new version of `bucket/key`: checks the
/// limits again against the version being replaced now, and drops the write's reservation.
/// Returns the upload link the write came through (from its reservation), if any.
pub fn settle_object(
    c: &Connection,
    bucket_quota: Quota,
    bucket: &str,
    key: &str,
    size: u64,
    reservation: Option<&str>,
) -> Result<Result<Option<String>, Exceeded>, DbError> {
    let link_id = match reservation {
        Some(id) => quota::link_of(c, id)?,
        None => None,
    };
    if bucket_quota.is_set() || link_id.is_some() {
        let old = quota::current_size(c, bucket, key)?;
        let claim = Claim {
            bucket,
            link_id: link_id.as_deref(),
            bytes: Some(size),
            replaces: old.unwrap_or(0),
            new_object: old.is_none(),
        };
        if let Err(e) = quota::room(c, &claim, reservation)? {
            return Ok(Err(e));
        }
    }
    if let Some(id) = reservation {
        quota::release(c, id)?;
    }
    if let Some(link) = &link_id {
        quota::add_link_bytes(c, link, size)?;
    }
    Ok(Ok(link_id))
}

/// [`settle_object`]'s check alone, changing nothing: under the S3 backend, the first
/// transaction of a write checks the room for its exact size before the backend stores it
/// (docs/cluster.md section 9.4); `settle_object` checks again and settles afterwards.
pub fn check_object(
    c: &Connection,
    bucket_quota: Quota,
    bucket: &str,
    key: &str,
    size: u64,
    reservation: Option<&str>,
) -> Result<Result<(), Exceeded>, DbError> {
    let link_id = match reservation {
        Some(id) => quota::link_of(c, id)?,
        None => None,
    };
    if !bucket_quota.is_set() && link_id.is_none() {
        return Ok(Ok(()));
    }
    let old = quota::current_size(c, bucket, key)?;
    let claim = Claim {
        bucket,
        link_id: link_id.as_deref(),
        bytes: Some(size),
        replaces: old.unwrap_or(0),
        new_object: old.is_none(),
    };
    Ok(quota::room(c, &claim, reservation)?.map(|_| ()))
}

/// In the transaction that records part `number` (`size` bytes) of an upload: checks the limits
/// again and drops the part's reservation.
pub fn settle_part(
    c: &Connection,
    upload: &crate::db::uploads::UploadRecord,
    number: u32,
    size: u64,
    reservation: Option<&str>,
) -> Result<Result<(), Exceeded>, DbError> {
    let bucket_quota = crate::db::buckets::get(c, &upload.bucket)?
        .map(|b| b.quota)
        .unwrap_or_default();
    if bucket_quota.is_set() || upload.link_id.is_some() {
        let old = quota::current_part_size(c, &upload.upload_id, number)?;
        let claim = Claim {
            bucket: &upload.bucket,
            link_id: upload.link_id.as_deref(),
            bytes: Some(size),
            replaces: old.unwrap_or(0),
            new_object: false,
        };
        if let Err(e) = quota::room(c, &claim, reservation)? {
            return Ok(Err(e));
        }
    }
    if let Some(id) = reservation {
        quota::release(c, id)?;
    }
    Ok(Ok(()))
}

/// In the transaction that completes an upload into `bucket/key`: its bytes are counted already
/// (as parts); a new key must fit the bucket's quota of objects. A link's upload counts its
/// `size` against the link.
pub fn settle_completion(
    c: &Connection,
    bucket: &str,
    key: &str,
    size: u64,
    link_id: Option<&str>,
) -> Result<Result<(), Exceeded>, DbError> {
    let new_object = quota::current_size(c, bucket, key)?.is_none();
    let claim = Claim {
        bucket,
        link_id: None,
        bytes: Some(0),
        replaces: 0,
        new_object,
    };
    if let Err(e) = quota::room(c, &claim, None)? {
        return Ok(Err(e));
    }
    if let Some(link) = link_id {
        quota::add_link_bytes(c, link, size)?;
    }
    Ok(Ok(()))
}

/// Before a multipart upload begins (S3's CreateMultipartUpload, a link page's or Uppy's start):
/// refuses at once an upload that could never complete, a new key past the quota of objects or
/// a declared `size` past the room left, instead of after its parts are sent.
pub fn check_new_upload(
    c: &Connection,
    bucket: &str,
    key: &str,
    link_id: Option<&str>,
    size: Option<u64>,
) -> Result<Result<(), Exceeded>, DbError> {
    let old = quota::current_size(c, bucket, key)?;
    let claim = Claim {
        bucket,
        link_id,
        bytes: size,
        replaces: old.unwrap_or(0),
        new_object: old.is_none(),
    };
    Ok(quota::room(c, &claim, None)?.map(|_| ()))
}
