//! Multipart uploads in the core: their rows, completion, abort and expiry, for every entry point
//! (S3's multipart operations, the upload links' multipart and Uppy routes).

use md5::{Digest, Md5};

use crate::db::objects::{self, Body as Stored};
use crate::db::uploads::{self, UploadRecord};
use crate::db::{self, Db, DbError};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::write::ObjectHeaders;
use crate::store::BlobStore;

/// Aborts uploads started before `cutoff_millis`, and those of revoked or expired upload links,
/// and removes their parts; a link's upload gives its slot back, once (an upload a concurrent
/// abort removed first is skipped). Returns how many it aborted.
pub async fn expire(db: &Db, store: &BlobStore, cutoff_millis: i64) -> Result<usize, DbError> {
    let (aborted, blobs) = db
        .write(move |c| {
            let mut blobs = Vec::new();
            let mut ids = uploads::expired(c, cutoff_millis)?;
            ids.extend(uploads::of_closed_links(c, db::now_millis())?);
            ids.sort();
            ids.dedup();
            let mut aborted = 0;
            for id in &ids {
                if let Some(b) = uploads::abort(c, id)? {
                    blobs.extend(b);
                    aborted += 1;
                }
            }
            Ok((aborted, blobs))
        })
        .await?;
    for blob in blobs {
        store.remove(blob).await;
    }
    Ok(aborted)
}

/// S3's smallest part, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PART_NUMBER: u32 = 10_000;

/// What Create stored for Complete to apply.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct UploadHeaders {
    pub headers: ObjectHeaders,
    pub checksum_algorithm: Option<String>,
}

/// Completes an upload from its (part number, ETag) list, in one transaction: checks the list
/// (order, ETags, part sizes), makes the object visible with a manifest of the part blobs, and
/// removes what is no longer used. Returns the object's ETag.
///
/// An upload link's upload (on every path: the link's routes and S3's own
/// CompleteMultipartUpload) also needs its link open, a total within the link's maximum, and a
/// free key: link uploads never replace an object. When the key is taken the upload can never
/// complete, so it is aborted in the same transaction (its slot and its parts freed) and the
/// answer is 412 PreconditionFailed.
pub async fn complete(
    db: &Db,
    store: &BlobStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<(u32, String)>,
    origin: crate::events::Origin,
) -> S3Result<String> {
    if parts.is_empty() {
        return Err(S3Error::code(S3ErrorCode::MalformedXML));
    }
    if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::code(S3ErrorCode::InvalidPartOrder).with("UploadId", upload_id));
    }
    let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
    let (outcome, garbage) = db
        .write(
            move |c| -> Result<(S3Result<String>, Vec<String>), crate::db::DbError> {
                let Some(upload) = uploads::get(c, &b, &k, &id)? else {
                    return Ok((Err(S3Error::no_such_upload(&id)), Vec::new()));
                };
                let mut max_size = None;
                if let Some(link_id) = &upload.link_id {
                    let link = crate::db::links::get_by_id(c, link_id)?;
                    let closed = match &link {
                        None => Some("This upload link no longer exists."),
                        Some(l) => l.closed(),
                    };
                    if let Some(reason) = closed {
                        return Ok((
                            Err(S3Error::new(S3ErrorCode::AccessDenied, reason)),
                            Vec::new(),
                        ));
                    }
                    if objects::get(c, &b, &k, false)?.is_some() {
                        let blobs = uploads::abort(c, &id)?.unwrap_or_default();
                        return Ok((Err(S3Error::link_name_taken(&k)), blobs));
                    }
                    max_size = link.map(|l| l.max_size);
                }
                let fail =
                    |e: S3Error| -> Result<_, crate::db::DbError> { Ok((Err(e), Vec::new())) };
                let stored = uploads::parts(c, &id, 0, usize::MAX >> 1)?;
                let mut manifest = Vec::with_capacity(parts.len());
                let mut md5s = Md5::new();
                let last = parts.len() - 1;
                for (i, (number, want_etag)) in parts.iter().enumerate() {
                    let found = stored.iter().find(|p| p.part_number == *number);
                    let Some(part) = found
                        .filter(|p| p.etag.trim_matches('"') == want_etag.trim().trim_matches('"'))
                    else {
                        return fail(
                            S3Error::code(S3ErrorCode::InvalidPart)
                                .with("UploadId", &id)
                                .with("PartNumber", number.to_string())
                                .with("ETag", want_etag),
                        );
                    };
                    if i < last && part.size < MIN_PART_SIZE {
                        return fail(
                            S3Error::code(S3ErrorCode::EntityTooSmall)
                                .with("ProposedSize", part.size.to_string())
                                .with("MinSizeAllowed", MIN_PART_SIZE.to_string())
                                .with("PartNumber", part.part_number.to_string())
                                .with("ETag", &part.etag),
                        );
                    }
                    md5s.update(hex::decode(part.etag.trim_matches('"')).unwrap_or_default());
                    manifest.push((part.blob.clone(), part.size));
                }
                let size: u64 = manifest.iter().map(|(_, s)| s).sum();
                if let Some(max) = max_size
                    && size > max
                {
                    return fail(
                        S3Error::code(S3ErrorCode::EntityTooLarge)
                            .with("ProposedSize", size.to_string())
                            .with("MaxSizeAllowed", max.to_string()),
                    );
                }
                let etag = format!("\"{}-{}\"", hex::encode(md5s.finalize()), parts.len());
                let saved: UploadHeaders = serde_json::from_str(&upload.headers)
                    .map_err(|e| crate::db::DbError::Corrupt(format!("upload headers: {e}")))?;
                let meta = saved
                    .headers
                    .into_meta(size, etag.clone(), upload.owner.clone());
                let used: Vec<String> = manifest.iter().map(|(b, _)| b.clone()).collect();
                let mut garbage = objects::put(c, &b, &k, &meta, &Stored::Parts(manifest))?;
                origin
                    .with_link(upload.link_id.clone())
                    .created(c, &b, &k, &meta)?;
                garbage.extend(
                    uploads::remove(c, &id)?
                        .into_iter()
                        .filter(|b| !used.contains(b)),
                );
                Ok((Ok(etag), garbage))
            },
        )
        .await?;
    for blob in garbage {
        store.remove(blob).await;
    }
    outcome
}

/// A new upload's row for `bucket/key` with the given headers, held by `link_id`'s slot when
/// given (the upload-link routes and CreateMultipartUpload). The caller
/// inserts it with [`uploads::create`].
pub fn upload_record(
    bucket: &str,
    key: &str,
    owner: &str,
    headers: ObjectHeaders,
    checksum_algorithm: Option<String>,
    link_id: Option<String>,
) -> S3Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: uuid::Uuid::new_v4().simple().to_string(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        owner: owner.to_owned(),
        initiated: crate::db::now_millis(),
        headers: serde_json::to_string(&UploadHeaders {
            headers,
            checksum_algorithm,
        })
        .map_err(S3Error::internal)?,
        link_id,
    })
}

/// Aborts an upload and removes its parts (giving back its link slot, if it held one). `false`
/// when there was no such upload: of concurrent aborts, exactly one answers `true`.
pub async fn abort(
    db: &Db,
    store: &BlobStore,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> S3Result<bool> {
    let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
    let blobs = db
        .write(move |c| match uploads::get(c, &b, &k, &id)? {
            Some(_) => uploads::abort(c, &id),
            None => Ok(None),
        })
        .await?;
    let Some(blobs) = blobs else {
        return Ok(false);
    };
    for blob in blobs {
        store.remove(blob).await;
    }
    Ok(true)
}
