//! Object expiry: a bucket's lifecycle rules (S3's `Expiration` and
//! `AbortIncompleteMultipartUpload`), objects' own expiry times (set by upload links with
//! `expire_objects_after`), and the sweeper that applies both.
//!
//! The sweeper works in bounded batches: it reads up to [`BATCH`] candidates on the read pool,
//! deletes them in one write transaction (each delete conditional on the version it chose, so
//! an object rewritten meanwhile stays), removes their blobs as DeleteObject does, and yields
//! before the next batch, so uploads queued on the writer never wait behind a long sweep.
//!
//! Days are S3's: an object expires at the first midnight UTC at least `Days` days after it was
//! last modified (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-expire-general-considerations.html>).
//! For tests, a debug "day" can be made a few seconds long (as Ceph's `rgw_lc_debug_interval`),
//! and then no rounding applies.

use crate::events::Origin;
use std::time::Duration;

use crate::db::lifecycle::{self as rows, Expired};
use crate::db::{self, Db, DbError};
use crate::storage::Storage;

/// Rows per write transaction.
pub const BATCH: usize = 500;
const DAY_MS: i64 = 86_400_000;

/// A bucket's lifecycle configuration, as stored (JSON) and as the S3 area renders it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

/// One rule: which objects (a key prefix) and what happens to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    pub id: Option<String>,
    pub enabled: bool,
    pub prefix: String,
    /// The prefix came in `<Filter>` (rendered back there) rather than as the legacy `<Prefix>`.
    pub in_filter: bool,
    pub expiration_days: Option<u32>,
    /// `Expiration/Date`, as given (ISO 8601, midnight UTC), and in milliseconds.
    pub expiration_date: Option<(String, i64)>,
    pub abort_incomplete_days: Option<u32>,
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: usize,
    pub uploads: usize,
}

/// The time at or before which an object (or upload) `days` days old at `now` was last
/// modified (begun), under S3's rounding (`day`: `None`) or a debug day of that length.
pub fn cutoff(now: i64, days: u32, day: Option<Duration>) -> i64 {
    match day {
        Some(len) => now - i64::from(days) * len.as_millis() as i64,
        // Expires at ceil_to_midnight(t + days), which is <= now exactly when
        // t + days <= floor_to_midnight(now).
        None => now - now.rem_euclid(DAY_MS) - i64::from(days) * DAY_MS,
    }
}

/// One enabled lifecycle rule of a bucket, with its times resolved at a sweep's `now`: objects
/// under `prefix` last modified at or before `expire_by` expire, uploads begun at or before
/// `abort_by` are aborted.
struct DueRule {
    bucket: String,
    prefix: String,
    expire_by: Option<i64>,
    abort_by: Option<i64>,
}

/// Every bucket's enabled rules, as [`DueRule`]s (both stores' sweeps walk the same list).
async fn due_rules(db: &Db, now: i64, day: Option<Duration>) -> Result<Vec<DueRule>, DbError> {
    let mut due = Vec::new();
    for (bucket, json) in db.read(rows::with_rules).await? {
        let Ok(config) = serde_json::from_str::<Rules>(&json) else {
            tracing::warn!(%bucket, "unreadable lifecycle rules skipped");
            continue;
        };
        for rule in config.rules.into_iter().filter(|r| r.enabled) {
            let expire_by = match (rule.expiration_days, &rule.expiration_date) {
                (Some(days), _) => Some(cutoff(now, days, day)),
                (None, Some((_, date))) if *date <= now => Some(i64::MAX),
                _ => None,
            };
            due.push(DueRule {
                bucket: bucket.clone(),
                prefix: rule.prefix,
                expire_by,
                abort_by: rule
                    .abort_incomplete_days
                    .map(|days| cutoff(now, days, day)),
            });
        }
    }
    Ok(due)
}

/// Applies objects' own expiry times and every bucket's lifecycle rules once.
/// Each deletion records its `LifecycleExpiration:Delete` event through `origin` (the sweeper's,
/// [`crate::events::Kind::LifecycleExpiration`]) in the deleting transaction.
pub async fn sweep(
    db: &Db,
    uploads: &crate::control::Uploads,
    store: &Storage,
    day: Option<Duration>,
    origin: &Origin,
) -> Result<Swept, DbError> {
    let now = db::now_millis();
    let mut swept = Swept::default();
    if store.backend().is_some() {
        return sweep_s3(db, uploads, store, day, origin, now).await;
    }
    loop {
        let found = db.read(move |c| rows::expiring(c, now, BATCH)).await?;
        let n = found.len();
        swept.objects += delete_batch(db, store, found, Expired::ExpiresBy(now), origin).await?;
        if n < BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    for rule in due_rules(db, now, day).await? {
        if let Some(by) = rule.expire_by {
            swept.objects +=
                expire_prefix(db, store, &rule.bucket, &rule.prefix, by, origin).await?;
        }
        if let Some(by) = rule.abort_by {
            swept.uploads +=
                abort_prefix(db, uploads, store, &rule.bucket, &rule.prefix, by).await?;
        }
    }
    Ok(swept)
}

/// [`sweep`] under the S3 backend: the objects live in the backend, so the candidates are its
/// listing of each rule's prefix (last modified at or before the rule's time) and the
/// `object_extras` rows whose link expiry time has come; each is deleted only while its
/// current version is the one chosen (the listed ETag, checked again on HEAD and sent as
/// `If-Match`), so a fresh overwrite stays. Each deletion records the same
/// `LifecycleExpiration:Delete` event as the filesystem store's. Uploads past a rule's
/// `AbortIncompleteMultipartUpload` lose their rows and their backend uploads.
async fn sweep_s3(
    db: &Db,
    uploads: &crate::control::Uploads,
    store: &Storage,
    day: Option<Duration>,
    origin: &Origin,
    now: i64,
) -> Result<Swept, DbError> {
    let mut swept = Swept::default();
    loop {
        let found = db
            .read(move |c| db::extras::expiring(c, now, BATCH))
            .await?;
        let n = found.len();
        for (bucket, key, etag) in found {
            if expire_s3(db, store, &bucket, &key, &etag, origin).await? {
                swept.objects += 1;
            } else {
                // Another version is current (or none): its row no longer applies.
                let (b, k) = (bucket.clone(), key.clone());
                db.write(move |c| db::extras::delete_version(c, &b, &k, &etag))
                    .await?;
            }
        }
        if n < BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    let backend = store.backend().expect("the S3 path");
    for rule in due_rules(db, now, day).await? {
        let bucket = &rule.bucket;
        if let Some(by) = rule.expire_by {
            let listed = crate::storage::cluster::list_prefix(backend, bucket, &rule.prefix)
                .await
                .map_err(|e| DbError::File(crate::storage::cluster::io_error(e)))?;
            for (key, etag, modified) in listed {
                if modified <= by && expire_s3(db, store, bucket, &key, &etag, origin).await? {
                    swept.objects += 1;
                }
            }
        }
        if let Some(by) = rule.abort_by {
            swept.uploads += abort_prefix(db, uploads, store, bucket, &rule.prefix, by).await?;
        }
    }
    Ok(swept)
}

/// Deletes `bucket/key` from the backend if its current version is still `etag` (HEAD first:
/// Ceph 16 ignores `If-Match` on DeleteObject, docs/cluster.md 8.1; the header is sent for
/// backends that honour it), then forgets its `object_extras` row and records the event.
/// Whether it deleted.
async fn expire_s3(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    etag: &str,
    origin: &Origin,
) -> Result<bool, DbError> {
    let backend = store.backend().expect("the S3 path");
    let current = store.head(bucket, key).await.map_err(DbError::File)?;
    if current.is_none_or(|o| o.meta.etag.trim_matches('"') != etag.trim_matches('"')) {
        return Ok(false);
    }
    let backend_key = crate::storage::cluster::backend_key(bucket, key);
    match backend.delete_if(&backend_key, Some(etag)).await {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.code(),
                Some(crate::storage::s3::Code::PreconditionFailed)
                    | Some(crate::storage::s3::Code::NoSuchKey)
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(DbError::File(crate::storage::cluster::io_error(e))),
    }
    let (b, k, recorder) = (bucket.to_owned(), key.to_owned(), origin.clone());
    db.write(move |c| {
        db::extras::delete(c, &b, &k)?;
        recorder.removed(c, &b, &k)
    })
    .await?;
    origin.flush(db).await?;
    Ok(true)
}

/// Deletes the objects of `bucket` under `prefix` last modified at or before `by`.
async fn expire_prefix(
    db: &Db,
    store: &Storage,
    bucket: &str,
    prefix: &str,
    by: i64,
    origin: &Origin,
) -> Result<usize, DbError> {
    let mut after = String::new();
    let mut deleted = 0;
    loop {
        let (b, p, a) = (bucket.to_owned(), prefix.to_owned(), after.clone());
        let keys = db
            .read(move |c| rows::modified_by(c, &b, &p, &a, by, BATCH))
            .await?;
        let n = keys.len();
        if let Some(last) = keys.last() {
            after = last.clone();
        }
        let found = keys.into_iter().map(|k| (bucket.to_owned(), k)).collect();
        deleted += delete_batch(db, store, found, Expired::ModifiedBy(by), origin).await?;
        if n < BATCH {
            return Ok(deleted);
        }
        tokio::task::yield_now().await;
    }
}

/// Deletes each (bucket, key) whose current version is still `expired`, in one transaction,
/// through the core's delete (blobs removed once it commits).
async fn delete_batch(
    db: &Db,
    store: &Storage,
    found: Vec<(String, String)>,
    expired: Expired,
    origin: &Origin,
) -> Result<usize, DbError> {
    if found.is_empty() {
        return Ok(0);
    }
    super::delete::expired(db, store, found, expired, origin.clone()).await
}

/// Aborts the unfinished uploads of `bucket` under `prefix` begun at or before `by`.
async fn abort_prefix(
    db: &Db,
    uploads: &crate::control::Uploads,
    store: &Storage,
    bucket: &str,
    prefix: &str,
    by: i64,
) -> Result<usize, DbError> {
    let mut aborted = 0;
    if let Some(pg) = uploads.shared() {
        // Each row deleted by one statement, answered to one node: that one aborts the
        // backend's upload behind it.
        loop {
            let batch = pg.delete_stale_uploads(bucket, prefix, by, BATCH).await?;
            for record in &batch {
                super::multipart::abort_backend_upload(store, record).await;
            }
            aborted += batch.len();
            if batch.len() < BATCH {
                return Ok(aborted);
            }
        }
    }
    loop {
        let (b, p) = (bucket.to_owned(), prefix.to_owned());
        let (n, blobs, records) = db
            .write(move |c| {
                let ids = rows::stale_uploads(c, &b, &p, by, BATCH)?;
                let mut blobs = Vec::new();
                let mut records = Vec::new();
                for id in &ids {
                    let record = db::uploads::get_by_id(c, id)?;
                    if let Some(b) = db::uploads::abort(c, id)? {
                        blobs.extend(b);
                        records.extend(record);
                    }
                }
                Ok((ids.len(), blobs, records))
            })
            .await?;
        aborted += n;
        if store.backend().is_some() {
            // The rows are gone: the backend's uploads behind them go too.
            for record in &records {
                super::multipart::abort_backend_upload(store, record).await;
            }
        } else {
            for blob in blobs {
                store.remove(blob).await;
            }
        }
        if n < BATCH {
            return Ok(aborted);
        }
        tokio::task::yield_now().await;
    }
}

/// In the transaction that stores a file uploaded through link `link_id`: gives the object the
/// expiry time the link sets, if it sets one.
pub fn apply_link_expiry(
    c: &rusqlite::Connection,
    link_id: &str,
    bucket: &str,
    key: &str,
) -> Result<(), DbError> {
    if let Some(at) = rows::link_object_expiry(c, link_id, db::now_millis())? {
        rows::set_object_expiry(c, bucket, key, at)?;
    }
    Ok(())
}

/// How often the sweeper runs: every 10 minutes (per-object expiry times are kept within that),
/// or twice per debug day.
pub fn interval(day: Option<Duration>) -> Duration {
    match day {
        Some(len) => (len / 2).max(Duration::from_millis(100)),
        None => Duration::from_secs(600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_to_midnight_utc_as_s3_does() {
        // 2026-03-10T15:00:00Z; an object of 2026-03-09T10:00Z with Days=1 expires at
        // 2026-03-11T00:00Z: not yet. One of 2026-03-08T23:00Z expires 2026-03-10T00:00Z.
        let now = 1_773_154_800_000;
        let by = cutoff(now, 1, None);
        assert_eq!(by, 1_773_100_800_000 - DAY_MS);
        assert!(1_773_050_400_000 > by);
        assert!(1_773_010_800_000 <= by);
        assert_eq!(cutoff(10_000, 2, Some(Duration::from_secs(3))), 4_000);
    }
}
