//! Deleting objects: the row goes in one transaction, then the blobs it used. A conditional
//! delete (S3, 2024) checks the current version in that same transaction.

use crate::db::objects::ObjectMeta;
use crate::db::{Db, DbError};
use crate::events::Origin;
use crate::objects::error::{Error, Result};
use crate::objects::write::etag_matches;
use crate::storage::Storage;

/// What the current version must be for a delete to go ahead: DeleteObject's `If-Match`,
/// `x-amz-if-match-last-modified-time` and `x-amz-if-match-size`, or DeleteObjects' `<ETag>`,
/// `<LastModifiedTime>` and `<Size>` of one key. Each field that is set must hold.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html> and
/// <https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html>
#[derive(Debug, Clone, Default)]
pub struct DeleteCondition {
    /// An ETag list or `*` (any version): a missing object fails it with NoSuchKey, as a
    /// conditional write's `If-Match` does.
    pub if_match: Option<String>,
    /// The version's last-modified time, in Unix milliseconds; a whole second (an HTTP date)
    /// matches any time within that second. A missing object passes (S3 answers 204).
    pub last_modified: Option<i64>,
    /// The version's size in bytes. A missing object passes (S3 answers 204).
    pub size: Option<u64>,
}

impl DeleteCondition {
    /// Whether any condition is set: such a delete tells its caller something about the
    /// current version (its ETag, size or time, or that it exists), so it needs read
    /// permission as well as write ([`crate::objects::access::may_delete`]).
    pub fn is_set(&self) -> bool {
        self.if_match.is_some() || self.last_modified.is_some() || self.size.is_some()
    }

    /// Checks the condition against the current version (`None`: no object at `key`); the error
    /// names the header that failed, or is `NoSuchKey`.
    pub fn check(&self, current: Option<&ObjectMeta>, key: &str) -> Result<()> {
        if let Some(list) = &self.if_match {
            match current {
                None => return Err(Error::NoSuchKey(key.to_owned())),
                Some(cur) if !etag_matches(list, &cur.etag) => {
                    return Err(Error::PreconditionFailed("If-Match"));
                }
                Some(_) => {}
            }
        }
        let Some(cur) = current else {
            return Ok(());
        };
        if let Some(at) = self.last_modified
            && !same_time(at, cur.last_modified)
        {
            return Err(Error::PreconditionFailed(
                "x-amz-if-match-last-modified-time",
            ));
        }
        if self.size.is_some_and(|size| size != cur.size) {
            return Err(Error::PreconditionFailed("x-amz-if-match-size"));
        }
        Ok(())
    }
}

/// Whether a client's timestamp names a stored one: exactly, or (an HTTP date, which has no
/// fraction) the same second.
pub(crate) fn same_time(given_ms: i64, stored_ms: i64) -> bool {
    given_ms == stored_ms
        || (given_ms.rem_euclid(1000) == 0
            && given_ms.div_euclid(1000) == stored_ms.div_euclid(1000))
}

/// Why DeleteObjects did not delete one of its keys (S3 answers it per key, not for the whole
/// request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A key that cannot be an object's.
    InvalidKey,
    /// Its condition did not hold: the object stays.
    PreconditionFailed,
    /// Its `<ETag>` named an object that does not exist.
    NoSuchKey,
    /// It carried a condition and the caller may not read the bucket
    /// ([`crate::objects::access::may_delete`]): nothing was checked or deleted.
    AccessDenied,
}

/// Deletes `bucket/key` if it exists (S3's DeleteObject succeeds either way) and `cond` holds,
/// checked in the delete's own transaction. A removal records its event (when a target wants
/// it) in the same transaction. `can_read`: whether the caller may read the bucket; a
/// conditioned delete without it is refused with AccessDenied before the row is looked at.
pub async fn one(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    cond: DeleteCondition,
    can_read: bool,
    origin: Origin,
) -> Result<()> {
    if !crate::objects::access::may_delete(&cond, can_read) {
        return Err(Error::AccessDenied);
    }
    if store.backend().is_some() {
        return one_s3(db, store, bucket, key, &cond, &origin).await;
    }
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let catalog = store.catalog();
    let removed = db
        .write(move |c| {
            let removed = catalog.delete_if(c, &b, &k, |cur| cond.check(cur, &k))?;
            if let Ok(Some(_)) = removed {
                origin.removed(c, &b, &k)?;
            }
            Ok(removed)
        })
        .await??;
    for blob in removed.unwrap_or_default() {
        store.remove(blob).await;
    }
    Ok(())
}

/// Deletes each of `keys` whose condition holds, in one transaction; one outcome per key, in
/// order. `can_read` as for [`one`]: without it, each conditioned key is refused with
/// AccessDenied, whether its object exists or not.
pub async fn many(
    db: &Db,
    store: &Storage,
    bucket: &str,
    keys: Vec<(String, DeleteCondition)>,
    can_read: bool,
    origin: Origin,
) -> std::result::Result<Vec<std::result::Result<(), Refused>>, DbError> {
    if store.backend().is_some() {
        let mut outcomes = Vec::with_capacity(keys.len());
        for (key, cond) in &keys {
            if crate::names::validate_key(key).is_err() {
                outcomes.push(Err(Refused::InvalidKey));
                continue;
            }
            if !crate::objects::access::may_delete(cond, can_read) {
                outcomes.push(Err(Refused::AccessDenied));
                continue;
            }
            outcomes.push(match one_s3(db, store, bucket, key, cond, &origin).await {
                Ok(()) => Ok(()),
                Err(Error::NoSuchKey(_)) => Err(Refused::NoSuchKey),
                Err(Error::PreconditionFailed(_)) => Err(Refused::PreconditionFailed),
                Err(Error::Db(e)) => return Err(e),
                Err(Error::Io(e)) => return Err(DbError::File(e)),
                Err(other) => return Err(DbError::File(std::io::Error::other(other))),
            });
        }
        return Ok(outcomes);
    }
    let bucket = bucket.to_owned();
    let catalog = store.catalog();
    let results = db
        .write(move |c| {
            let mut out = Vec::with_capacity(keys.len());
            for (key, cond) in &keys {
                if crate::names::validate_key(key).is_err() {
                    out.push(Err(Refused::InvalidKey));
                    continue;
                }
                if !crate::objects::access::may_delete(cond, can_read) {
                    out.push(Err(Refused::AccessDenied));
                    continue;
                }
                match catalog.delete_if(c, &bucket, key, |cur| cond.check(cur, key))? {
                    Ok(removed) => {
                        if removed.is_some() {
                            origin.removed(c, &bucket, key)?;
                        }
                        out.push(Ok(removed.unwrap_or_default()));
                    }
                    Err(Error::NoSuchKey(_)) => out.push(Err(Refused::NoSuchKey)),
                    Err(_) => out.push(Err(Refused::PreconditionFailed)),
                }
            }
            Ok(out)
        })
        .await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        outcomes.push(match result {
            Ok(blobs) => {
                for blob in blobs {
                    store.remove(blob).await;
                }
                Ok(())
            }
            Err(e) => Err(e),
        });
    }
    Ok(outcomes)
}

/// [`one`] under the S3 backend, backend first (docs/cluster.md section 9.4): HEAD reads the
/// version the condition is checked on; the backend's DeleteObject carries `If-Match` with that
/// version's ETag when the client gave a condition (so a version written meanwhile is not
/// deleted on the strength of a check made on another; a backend that ignores `If-Match` on
/// deletes leaves this a known gap); then one transaction forgets the object's
/// `object_extras` row and records the removal, when there was an object.
async fn one_s3(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    cond: &DeleteCondition,
    origin: &Origin,
) -> Result<()> {
    let backend = store.backend().expect("the S3 path");
    let current = store.head(bucket, key).await?;
    cond.check(current.as_ref().map(|o| &o.meta), key)?;
    let Some(current) = current else {
        return Ok(());
    };
    let conditional =
        cond.if_match.is_some() || cond.last_modified.is_some() || cond.size.is_some();
    let if_match = conditional.then_some(current.meta.etag.as_str());
    let backend_key = crate::storage::cluster::backend_key(bucket, key);
    match backend.delete_if(&backend_key, if_match).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(&crate::storage::s3::Code::PreconditionFailed) => {
            return Err(Error::PreconditionFailed("If-Match"));
        }
        Err(e) if e.code() == Some(&crate::storage::s3::Code::NoSuchKey) => {}
        Err(e) => return Err(Error::Io(crate::storage::cluster::io_error(e))),
    }
    let (b, k, recorder) = (bucket.to_owned(), key.to_owned(), origin.clone());
    db.write(move |c| {
        crate::db::extras::delete(c, &b, &k)?;
        recorder.removed(c, &b, &k)
    })
    .await?;
    origin.flush(db).await?;
    Ok(())
}

/// Deletes each (bucket, key) whose current version is still `expired` (the lifecycle
/// sweeper's batch), in one transaction with their events (`origin`'s, `LifecycleExpiration:Delete`);
/// then the blobs they used. Returns how many it deleted.
pub async fn expired(
    db: &Db,
    store: &Storage,
    found: Vec<(String, String)>,
    expired: crate::db::lifecycle::Expired,
    origin: Origin,
) -> std::result::Result<usize, DbError> {
    let removed = db
        .write(move |c| {
            let mut removed = Vec::new();
            for (bucket, key) in &found {
                if let Some(blobs) = crate::db::lifecycle::delete_expired(c, bucket, key, expired)?
                {
                    origin.removed(c, bucket, key)?;
                    removed.push(blobs);
                }
            }
            Ok(removed)
        })
        .await?;
    let n = removed.len();
    for blob in removed.into_iter().flatten() {
        store.remove(blob).await;
    }
    Ok(n)
}
