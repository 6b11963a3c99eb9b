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
    let grantee = who.access_key.unwrap_or_default().to_owned();
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let catalog = store.catalog();
    let (bucket_row, object) = db
        .read(move |c| {
            Ok((
                crate::db::buckets::get_with_grant(c, &b, &grantee)?,
                catalog.get(c, &b, &k, true)?,
            ))
        })
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
    object.ok_or_else(|| Error::NoSuchKey(key.to_owned()))
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

/// CopyObject's work: `src` (read from `src_key`) becomes `bucket/key` with `meta`, settling the
/// room `hold` keeps under the bucket's quota and recording `origin`'s event. Blobs are copied, not shared, so either object
/// can be replaced or deleted alone.
///
/// With `checksum` (CopyObject's `x-amz-checksum-algorithm`), the copy's checksum is that
/// algorithm over its bytes, computed as they are copied, in place of `meta`'s. Returns the
/// copy's checksum, as stored.
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
    hold: &mut Hold,
    origin: crate::events::Origin,
) -> Result<Option<(String, String)>> {
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
                    checksum.map(|a| Hashes::new(false, Some(a.checksummer()))),
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
    write::commit_reserved(
        db,
        store,
        bucket,
        key,
        meta,
        staged,
        WriteCondition::default(),
        hold,
        origin,
    )
    .await?;
    Ok(stored)
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
                .copy_segments(segments(body, start, len), Some(Hashes::new(false, None)))
                .await?;
            (temp, digests.map(|d| d.md5).unwrap_or_default())
        }
    })
}
