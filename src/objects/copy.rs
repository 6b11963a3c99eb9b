//! Copying, for CopyObject and UploadPartCopy: the source object (if the caller may read it),
//! and its bytes, whole or a range, into a new blob.

use md5::{Digest, Md5};

use crate::auth::checksum::ChecksumAlgorithm;
use crate::db::Db;
use crate::db::buckets::Perm;
use crate::db::objects::{Body, ObjectMeta, ObjectRecord};
use crate::objects::access::{self, Who};
use crate::objects::error::{Error, Result};
use crate::objects::quota::Hold;
use crate::objects::read::segments;
use crate::objects::write::{self, WriteCondition};
use crate::storage::{Hashes, Staged, Storage, TempBlob};

/// The object at `bucket/key` with its body, for a copy by `who`. Reading a copy's source needs
/// the bucket's owner (or the admin) or a key granted read: a public-read ACL lets anyone
/// download, not copy. `expected_owner` (`x-amz-source-expected-bucket-owner`), when given, must
/// be the source bucket's owner.
pub async fn source(
    db: &Db,
    store: &Storage,
    who: Who<'_>,
    expected_owner: Option<&str>,
    bucket: &str,
    key: &str,
) -> Result<ObjectRecord> {
    write::check_backend_key(store, bucket, key)?;
    let grantee = who.access_key.unwrap_or_default().to_owned();
    let (bucket_row, object) = crate::objects::read::bucket_and_head(
        db,
        store,
        bucket.to_owned(),
        grantee,
        key.to_owned(),
        true,
    )
    .await?;
    let Some((record, grant)) = bucket_row else {
        return Err(Error::NoSuchBucket(bucket.to_owned()));
    };
    if expected_owner.is_some_and(|owner| owner.trim() != record.owner) {
        return Err(Error::AccessDenied);
    }
    if !(access::is_owner(who, &record) || grant.is_some_and(Perm::can_read)) {
        return Err(Error::AccessDenied);
    }
    object
        .flatten()
        .ok_or_else(|| Error::NoSuchKey(key.to_owned()))
}

/// For a bucket that verifies types, which holds copies to it too: the bytes are the source's,
/// detected when it was stored (`meta.detected_type`); the type is the one the copy will have.
pub fn check_type(meta: &ObjectMeta) -> Result<()> {
    crate::sniff::check(
        meta.content_type.as_deref().unwrap_or_default(),
        meta.detected_type.as_deref(),
    )
    .map_err(Error::ContentMismatch)
}

/// CopyObject's work: `src` (read from `src_key`) becomes `bucket/key` with `meta` if `cond`
/// holds on the destination, settling the room `hold` keeps under the bucket's quota and
/// recording `origin`'s event. Blobs are copied, not shared, so either object can be replaced
/// or deleted alone; under the S3 backend the copy is the backend's own ([`object_s3`]).
///
/// With `checksum` (CopyObject's `x-amz-checksum-algorithm`), the copy's checksum is that
/// algorithm over its bytes, computed as they are copied, in place of `meta`'s. Returns the
/// copy's ETag and checksum, as stored.
#[allow(clippy::too_many_arguments)]
pub async fn object(
    db: &Db,
    store: &Storage,
    src_key: &str,
    src: ObjectRecord,
    bucket: &str,
    key: &str,
    mut meta: ObjectMeta,
    checksum: Option<ChecksumAlgorithm>,
    cond: WriteCondition,
    hold: &mut Hold,
    origin: crate::events::Origin,
) -> Result<(String, Option<(String, String)>)> {
    if store.backend().is_some() {
        let conditional = cond.if_none_match_any || cond.if_match.is_some();
        let copied = object_s3(
            db, store, src_key, src, bucket, key, meta, checksum, cond, hold, origin,
        )
        .await;
        return match copied {
            // Without a destination condition, a missing key can only be the source's.
            Err(Error::NoSuchKey(_)) if !conditional => Err(Error::NoSuchKey(src_key.to_owned())),
            other => other,
        };
    }
    let computed =
        |value: Option<String>| checksum.zip(value).map(|(a, v)| (a.as_str().to_owned(), v));
    let staged = match src.body {
        Body::Inline(bytes) => {
            if let Some(algo) = checksum {
                let mut summer = algo.checksummer();
                summer.update(&bytes);
                meta.checksum = computed(Some(summer.finish()));
            }
            Staged::Inline(bytes)
        }
        body => Staged::Temp(
            store
                .copy_segments(
                    segments(&body, 0, src.meta.size),
                    checksum.map(|a| Hashes::new(false, false, Some(a.checksummer()))),
                )
                .await
                .map(|(t, digests)| {
                    if checksum.is_some() {
                        meta.checksum = computed(digests.and_then(|d| d.checksum));
                    }
                    t
                })
                .map_err(|e| {
                    // The source was replaced or deleted while being copied.
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::NoSuchKey(src_key.to_owned())
                    } else {
                        Error::Io(e)
                    }
                })?,
        ),
    };
    let stored = meta.checksum.clone();
    let etag =
        write::commit_reserved(db, store, bucket, key, meta, staged, cond, hold, origin).await?;
    Ok((etag, stored))
}

/// [`object`] under the S3 backend, in the T1 → B → T2 steps of PutObject
/// ([`write::commit_s3`]): B is the backend's server-side copy of the source's version (its ETag
/// named, so a source replaced meanwhile fails the copy), with postgate's reserved metadata
/// rewritten (REPLACE: the copy's owner and ACL, the source's detected type and checksum). With
/// `checksum` the bytes must be read to be summed: the source is then streamed from the backend
/// into a new upload, as a PutObject's body would be.
#[allow(clippy::too_many_arguments)]
async fn object_s3(
    db: &Db,
    store: &Storage,
    src_key: &str,
    src: ObjectRecord,
    bucket: &str,
    key: &str,
    mut meta: ObjectMeta,
    checksum: Option<ChecksumAlgorithm>,
    cond: WriteCondition,
    hold: &mut Hold,
    origin: crate::events::Origin,
) -> Result<(String, Option<(String, String)>)> {
    use crate::storage::cluster::NewVersion;
    let Body::Backend { key: source, etag } = src.body else {
        return Err(Error::Io(std::io::Error::other(
            "a copy source under the S3 backend has no backend object",
        )));
    };
    let from = match checksum {
        None => NewVersion::Copy {
            key: source,
            etag,
            size: src.meta.size,
        },
        Some(algo) => {
            let body = store
                .stream_backend(&source, &etag, 0, src.meta.size)
                .await?;
            let dest = crate::storage::Dest::Object {
                bucket,
                key,
                meta: &meta,
            };
            let hashes = Hashes::new(false, false, Some(algo.checksummer()));
            let sniff = crate::sniff::Sniffer::detect_only();
            let ingested = store
                .ingest(body, u64::MAX, 0, hashes, sniff, dest)
                .await
                .map_err(|e| match e {
                    crate::storage::IngestError::Body(e) | crate::storage::IngestError::Io(e)
                        if e.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Error::NoSuchKey(src_key.to_owned())
                    }
                    crate::storage::IngestError::Body(e) | crate::storage::IngestError::Io(e) => {
                        Error::Io(e)
                    }
                    other => Error::Io(std::io::Error::other(other.to_string())),
                })?;
            let sum = ingested.digests.checksum;
            meta.checksum = checksum.zip(sum).map(|(a, v)| (a.as_str().to_owned(), v));
            NewVersion::Staged(ingested.staged)
        }
    };
    let stored = meta.checksum.clone();
    let etag = write::commit_s3(db, store, bucket, key, meta, from, cond, hold, origin).await?;
    Ok((etag, stored))
}

/// UploadPartCopy's bytes: `len` bytes of `src` from `start`, in a temp blob, with their MD5.
pub async fn range(
    store: &Storage,
    src: &ObjectRecord,
    start: u64,
    len: u64,
) -> Result<(TempBlob, [u8; 16])> {
    Ok(match &src.body {
        Body::Inline(bytes) => {
            let slice = bytes
                .get(start as usize..(start + len) as usize)
                .unwrap_or_default()
                .to_vec();
            let md5: [u8; 16] = Md5::digest(&slice).into();
            (store.stage_bytes(slice).await?, md5)
        }
        body => {
            let (temp, digests) = store
                .copy_segments(
                    segments(body, start, len),
                    Some(Hashes::new(true, false, None)),
                )
                .await?;
            // Asked for above: never a made-up MD5, which would become the part's ETag.
            let md5 = digests.and_then(|d| d.md5).ok_or_else(|| {
                Error::Io(std::io::Error::other(
                    "a copied range's MD5 was not computed",
                ))
            })?;
            (temp, md5)
        }
    })
}
