//! Deleting objects: the row goes in one transaction, then the blobs it used.

use crate::db::{Db, DbError};
use crate::events::Origin;
use crate::storage::Storage;

/// A key DeleteObjects named that cannot be an object's (S3 answers it per key, not for the
/// whole request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKey;

/// Deletes `bucket/key` if it exists (S3's DeleteObject succeeds either way). A removal records
/// its event (when a target wants it) in the same transaction.
pub async fn one(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    origin: Origin,
) -> Result<(), DbError> {
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let catalog = store.catalog();
    let removed = db
        .write(move |c| {
            let removed = catalog.delete(c, &b, &k)?;
            if removed.is_some() {
                origin.removed(c, &b, &k)?;
            }
            Ok(removed)
        })
        .await?;
    for blob in removed.unwrap_or_default() {
        store.remove(blob).await;
    }
    Ok(())
}

/// Deletes each of `keys` in one transaction; one outcome per key, in order.
pub async fn many(
    db: &Db,
    store: &Storage,
    bucket: &str,
    keys: Vec<String>,
    origin: Origin,
) -> Result<Vec<Result<(), InvalidKey>>, DbError> {
    let bucket = bucket.to_owned();
    let catalog = store.catalog();
    let results = db
        .write(move |c| {
            let mut out = Vec::with_capacity(keys.len());
            for key in &keys {
                if crate::names::validate_key(key).is_err() {
                    out.push(Err(InvalidKey));
                    continue;
                }
                let removed = catalog.delete(c, &bucket, key)?;
                if removed.is_some() {
                    origin.removed(c, &bucket, key)?;
                }
                out.push(Ok(removed.unwrap_or_default()));
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

/// Deletes each (bucket, key) whose current version is still `expired` (the lifecycle
/// sweeper's batch), in one transaction with their events (`origin`'s, `LifecycleExpiration:Delete`);
/// then the blobs they used. Returns how many it deleted.
pub async fn expired(
    db: &Db,
    store: &Storage,
    found: Vec<(String, String)>,
    expired: crate::db::lifecycle::Expired,
    origin: Origin,
) -> Result<usize, DbError> {
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
