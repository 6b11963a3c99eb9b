//! Reading an object: its current version from the catalog (HEAD, GET), where its bytes lie in
//! the store, and a stream of them.

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::db::buckets::{BucketRecord, Perm};
use crate::db::objects::{Body, ObjectRecord};
use crate::db::{Db, DbError};
use crate::storage::{Segment, Storage, segments_of};

/// The current version of `bucket/key` as the storage's catalog holds it (HEAD, GET, the ACL of
/// an object), with an inline body's bytes when `with_body`; on the read pool.
pub async fn head(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    with_body: bool,
) -> Result<Option<ObjectRecord>, DbError> {
    if store.backend().is_some() {
        let b = bucket.to_owned();
        let record = db.read(move |c| crate::db::buckets::get(c, &b)).await?;
        let owner = record.map(|r| r.owner).unwrap_or_default();
        return head_s3(db, store, bucket, key, &owner).await;
    }
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let catalog = store.catalog();
    db.lookup(move |c| catalog.get(c, &b, &k, with_body)).await
}

/// [`head`] under the S3 backend: the backend's HEAD, joined with the read of the object's
/// `object_extras` row (its ACL, detected type, checksum while its ETag is current); an object
/// that names no owner (written around postgate) is `bucket_owner`'s.
async fn head_s3(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    bucket_owner: &str,
) -> Result<Option<ObjectRecord>, DbError> {
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let (found, extras) = tokio::join!(
        store.head(bucket, key),
        db.read(move |c| crate::db::extras::get(c, &b, &k))
    );
    let Some(mut record) = found.map_err(DbError::File)? else {
        return Ok(None);
    };
    if record.meta.owner.is_empty() {
        record.meta.owner = bucket_owner.to_owned();
    }
    if let Some(extras) = extras?.filter(|x| x.etag == record.meta.etag) {
        let meta = &mut record.meta;
        meta.acl = extras.acl.unwrap_or(std::mem::take(&mut meta.acl));
        meta.detected_type = extras.detected_type.or(meta.detected_type.take());
        meta.checksum = extras
            .checksum
            .and_then(|c| c.split_once(' ').map(|(a, v)| (a.to_owned(), v.to_owned())))
            .or(meta.checksum.take());
    }
    Ok(Some(record))
}

/// A bucket's row with `grantee`'s grant and, when the bucket exists, the current version of
/// `key` ([`head`]): GET and HEAD need both, read in one trip to the read pool.
#[allow(clippy::type_complexity)]
pub async fn bucket_and_head(
    db: &Db,
    store: &Storage,
    bucket: String,
    grantee: String,
    key: String,
    with_body: bool,
) -> Result<
    (
        Option<(BucketRecord, Option<Perm>)>,
        Option<Option<ObjectRecord>>,
    ),
    DbError,
> {
    if store.backend().is_some() {
        let (b, g) = (bucket.clone(), grantee);
        let found = db
            .read(move |c| crate::db::buckets::get_with_grant(c, &b, &g))
            .await?;
        let object = match &found {
            Some((record, _)) => Some(head_s3(db, store, &bucket, &key, &record.owner).await?),
            None => None,
        };
        return Ok((found, object));
    }
    let catalog = store.catalog();
    db.lookup(move |c| {
        let found = crate::db::buckets::get_with_grant(c, &bucket, &grantee)?;
        let object = match found {
            Some(_) => Some(catalog.get(c, &bucket, &key, with_body)?),
            None => None,
        };
        Ok((found, object))
    })
    .await
}

/// Bytes `start..start + len` of a body stored in blobs (not inline), as a stream. The blobs are
/// pinned until the stream is dropped, so a newer version committing meanwhile cannot remove
/// them. `NotFound`: a newer version removed them before the stream opened (read the row again).
pub async fn stream(
    store: &Storage,
    body: &Body,
    start: u64,
    len: u64,
) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
    if let Body::Backend { key, etag } = body {
        return store.stream_backend(key, etag, start, len).await;
    }
    store.stream_segments(segments(body, start, len)).await
}

/// The blob segments holding bytes `start..start + len` of a stored body (none for a body
/// stored inline in its row).
pub fn segments(body: &Body, start: u64, len: u64) -> Vec<Segment> {
    match body {
        Body::Blob(id) => vec![Segment {
            blob: id.clone(),
            offset: start,
            len,
        }],
        Body::Parts(parts) => segments_of(parts, start, len),
        // A backend object is read with one ranged GET ([`stream`]), not by segments.
        Body::Inline(_) | Body::NotLoaded | Body::Backend { .. } => Vec::new(),
    }
}
