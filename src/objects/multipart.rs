//! Multipart uploads in the core: their rows, completion, abort and expiry, for every entry point
//! (S3's multipart operations, the upload links' multipart and Uppy routes).

use md5::{Digest, Md5};

use crate::auth::checksum::{ChecksumAlgorithm, ChecksumType};
use crate::control::Uploads;
use crate::db::objects::Body as Stored;
use crate::db::uploads::{self, PartRecord, UploadRecord};
use crate::db::{self, Db, DbError};
use crate::objects::delete::same_time;
use crate::objects::error::{Error, Result};
use crate::objects::quota::Hold;
use crate::objects::write::{ObjectHeaders, WriteCondition};
use crate::sniff::Sniffer;
use crate::storage::{Staged, Storage};

/// Aborts uploads started before `cutoff_millis`, and those of revoked or expired upload links,
/// and removes their parts; a link's upload gives its slot back, once (an upload a concurrent
/// abort removed first is skipped). Returns how many it aborted.
///
/// With shared upload rows every node sweeps: each row is deleted by one statement, which
/// answers it to exactly one node, the one that aborts the backend's upload behind it.
pub async fn expire(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    cutoff_millis: i64,
) -> std::result::Result<usize, DbError> {
    if let Some(pg) = uploads.shared() {
        let mut aborted = 0;
        loop {
            let batch = pg.delete_expired_uploads(cutoff_millis, 256).await?;
            for upload in &batch {
                abort_backend_upload(store, upload).await;
            }
            aborted += batch.len();
            if batch.len() < 256 {
                return Ok(aborted);
            }
        }
    }
    let (aborted, blobs) = db
        .write(move |c| {
            let mut blobs = Vec::new();
            let mut ids = uploads::expired(c, cutoff_millis)?;
            ids.extend(uploads::of_closed_links(c, db::now_millis())?);
            ids.sort();
            ids.dedup();
            let mut aborted = Vec::new();
            for id in &ids {
                let record = uploads::get_by_id(c, id)?;
                if let Some(b) = uploads::abort(c, id)? {
                    blobs.extend(b);
                    aborted.extend(record);
                }
            }
            Ok((aborted, blobs))
        })
        .await?;
    if store.backend().is_some() {
        // The rows are gone: the backend's uploads behind them go too.
        for upload in &aborted {
            abort_backend_upload(store, upload).await;
        }
        return Ok(aborted.len());
    }
    for blob in blobs {
        store.remove(blob).await;
    }
    Ok(aborted.len())
}

/// Under the S3 backend: aborts the backend's multipart uploads that no `uploads` row names and
/// that began more than `older_than` ago (a killed node's streamed bodies and copies, an upload
/// whose row was never written; [`crate::storage::cluster::sweep_orphans`]). The rows are read
/// before the backend is listed, so an upload made since is young and spared by the age bound,
/// which is also what keeps another live node's in-flight uploads safe. Answers how many.
pub async fn sweep_orphans(
    uploads: &Uploads,
    store: &Storage,
    older_than: std::time::Duration,
) -> std::result::Result<usize, DbError> {
    let Some(backend) = store.backend() else {
        return Ok(0);
    };
    let named = uploads
        .all_headers()
        .await?
        .iter()
        .filter_map(|json| {
            serde_json::from_str::<UploadHeaders>(json)
                .ok()?
                .backend_upload_id
        })
        .collect();
    let before = std::time::SystemTime::now() - older_than;
    crate::storage::cluster::sweep_orphans(backend, &named, before)
        .await
        .map_err(|e| DbError::File(crate::storage::cluster::io_error(e)))
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
    /// `COMPOSITE` or `FULL_OBJECT`; absent in uploads created before it was kept, which
    /// then get the algorithm's default type.
    #[serde(default)]
    pub checksum_type: Option<String>,
    /// Under the S3 backend, the backend's multipart upload behind this one (its parts go
    /// there as they arrive; docs/cluster.md 9.6). Kept in the headers' JSON: no migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_upload_id: Option<String>,
}

/// The backend's multipart upload behind `upload` (S3 backend), if it has one.
pub fn backend_upload_id(upload: &UploadRecord) -> Option<String> {
    serde_json::from_str::<UploadHeaders>(&upload.headers)
        .ok()?
        .backend_upload_id
}

/// Creates a multipart upload: under the S3 backend, first the backend's upload for the
/// record's key (S3 fixes the object's metadata there), its id kept in the record's headers;
/// then `insert` runs in one transaction (the caller's checks; it may not change the record's
/// key under the S3 backend) and, when it accepts, the row is stored: in that same transaction
/// with local rows, else in the shared control database right after it. A refusal or failure
/// aborts the backend's upload again. Returns `insert`'s answer.
pub async fn create<T, E, F>(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    mut record: UploadRecord,
    insert: F,
) -> Result<std::result::Result<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(
            &rusqlite::Connection,
            &mut UploadRecord,
        ) -> std::result::Result<std::result::Result<T, E>, DbError>
        + Send
        + 'static,
{
    if let Some(backend) = store.backend() {
        let mut saved: UploadHeaders = serde_json::from_str(&record.headers)
            .map_err(|e| DbError::Corrupt(format!("upload headers: {e}")))?;
        // Every caller's metadata, whatever route it came by: never a forged reserved name.
        crate::objects::write::check_reserved(store, &saved.headers)?;
        crate::objects::write::check_backend_key(store, &record.bucket, &record.key)?;
        let meta = saved
            .headers
            .clone()
            .into_meta(0, String::new(), record.owner.clone());
        let write_id = uuid::Uuid::new_v4().simple().to_string();
        let key = crate::storage::cluster::backend_key(&record.bucket, &record.key);
        let id = backend
            .create_multipart(
                &key,
                &crate::storage::cluster::backend_meta(&meta, &write_id),
            )
            .await
            .map_err(|e| Error::Io(crate::storage::cluster::io_error(e)))?;
        saved.backend_upload_id = Some(id);
        record.headers = serde_json::to_string(&saved).map_err(Error::Encode)?;
    }
    let kept = record.clone();
    let local = uploads.shared().is_none();
    let outcome = db
        .write(move |c| {
            let answer = insert(c, &mut record)?;
            if answer.is_ok() && local {
                uploads::create(c, &record)?;
            }
            Ok((answer, record))
        })
        .await;
    let outcome = match (outcome, uploads.shared()) {
        (Ok((Ok(done), record)), Some(pg)) => pg.create_upload(&record).await.map(|()| Ok(done)),
        (outcome, _) => outcome.map(|(answer, _)| answer),
    };
    if !matches!(outcome, Ok(Ok(_))) {
        abort_backend_upload(store, &kept).await;
    }
    Ok(outcome?)
}

/// Aborts the backend's multipart upload behind `upload`, if any (S3 backend), after its rows
/// are gone. A failure is logged: the backend's lifecycle rule for incomplete uploads is the
/// fallback.
pub async fn abort_backend_upload(store: &Storage, upload: &UploadRecord) {
    let (Some(backend), Some(id)) = (store.backend(), backend_upload_id(upload)) else {
        return;
    };
    let key = crate::storage::cluster::backend_key(&upload.bucket, &upload.key);
    if let Err(e) = backend.abort_multipart(&key, &id).await
        && e.code() != Some(&crate::storage::s3::Code::NoSuchUpload)
    {
        tracing::warn!(bucket = %upload.bucket, key = %upload.key, error = %e,
            "could not abort the backend's multipart upload");
    }
}

/// The checksum algorithm and type an upload was created with (ListParts answers them), `None`
/// for an upload created without one.
pub fn upload_checksum(upload: &UploadRecord) -> Option<(ChecksumAlgorithm, ChecksumType)> {
    let saved: UploadHeaders = serde_json::from_str(&upload.headers).ok()?;
    let algo = ChecksumAlgorithm::from_name(saved.checksum_algorithm.as_deref()?)?;
    let kind = saved
        .checksum_type
        .as_deref()
        .and_then(ChecksumType::from_name)
        .unwrap_or(algo.default_type());
    Some((algo, kind))
}

/// What a CompleteMultipartUpload declares about the object it makes, checked in the
/// completing transaction: a mismatch completes nothing and leaves the upload to retry.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    /// `x-amz-mp-object-size`: the object's total size.
    pub object_size: Option<u64>,
    /// `x-amz-checksum-type`: must be the type the upload was created with.
    pub checksum_type: Option<ChecksumType>,
    /// `x-amz-checksum-<crc>` without a `-<parts>` suffix: the CRC of the whole object.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
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
///
/// When the bucket or the upload's link verifies types, the first part's bytes must match the
/// declared type (`sniff::check`), or 400 `XPostgateContentMismatch` and no object.
#[allow(clippy::too_many_arguments)]
pub async fn complete(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<(u32, String)>,
    origin: crate::events::Origin,
) -> Result<String> {
    complete_if(
        db,
        uploads,
        store,
        bucket,
        key,
        upload_id,
        parts,
        WriteCondition::default(),
        Declared::default(),
        origin,
    )
    .await
    .map(|done| done.etag)
}

/// What a completion made: the object's ETag and its additional checksum, if any.
#[derive(Debug, Clone)]
pub struct Completed {
    pub etag: String,
    /// (`CRC32`|`CRC32C`|`CRC64NVME`|`SHA1`|`SHA256`, composite value `<base64>-<parts>` or
    /// full-object value).
    pub checksum: Option<(String, String)>,
}

/// [`complete`] with S3's conditional write (`If-None-Match: *`, `If-Match`), checked against
/// the current version in the completing transaction; a refused completion leaves the upload as
/// it was, so the client may retry or abort.
///
/// A completion repeated after it succeeded (a client retrying after a lost answer) finds no
/// upload; S3 then answers 200 with the same ETag while the object is the one that completion
/// made (recorded against AWS in adobe/S3Mock#2586 and minio/minio#13318; moto follows it). The
/// part list identifies that object: its multipart ETag is the MD5 of the listed part MD5s, so
/// the retry is answered from the current object when its ETag is the one the list describes,
/// and is NoSuchUpload otherwise (the object was replaced, or the upload never completed).
///
/// `declared` is checked against what the parts make (see [`Declared`]): another size is
/// `ObjectSizeMismatch`, another checksum type `ChecksumTypeMismatch`, another full-object CRC
/// `ChecksumMismatch`. An upload of type FULL_OBJECT (CRC64NVME always) gets the CRC of its
/// whole bytes, combined from its parts' CRCs and sizes.
#[allow(clippy::too_many_arguments)]
pub async fn complete_if(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<(u32, String)>,
    cond: WriteCondition,
    declared: Declared,
    origin: crate::events::Origin,
) -> Result<Completed> {
    if parts.is_empty() {
        return Err(Error::NoParts);
    }
    if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Error::InvalidPartOrder {
            upload_id: upload_id.to_owned(),
        });
    }
    if store.backend().is_some() {
        return complete_s3(
            db, uploads, store, bucket, key, upload_id, parts, cond, declared, origin,
        )
        .await;
    }
    let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
    let catalog = store.catalog();
    let (outcome, garbage) = db
        .write(
            move |c| -> std::result::Result<(Result<Completed>, Vec<String>), DbError> {
                let Some(upload) = uploads::get(c, &b, &k, &id)? else {
                    let current = catalog.get(c, &b, &k, false)?;
                    let done = multipart_etag(&parts).and_then(|etag| {
                        current.filter(|o| o.meta.etag == etag).map(|o| Completed {
                            etag,
                            checksum: o.meta.checksum,
                        })
                    });
                    return Ok((done.ok_or(Error::NoSuchUpload(id)), Vec::new()));
                };
                if cond.if_none_match_any || cond.if_match.is_some() {
                    let current = catalog.get(c, &b, &k, false)?;
                    if let Err(refused) = cond.check(current.as_ref().map(|o| &o.meta), &k) {
                        return Ok((Err(refused), Vec::new()));
                    }
                }
                let mut max_size = None;
                // Types are verified when the bucket or the upload's link asks for it.
                let mut verify_type =
                    crate::db::buckets::get(c, &b)?.is_some_and(|r| r.verify_type);
                if let Some(link_id) = &upload.link_id {
                    let link = crate::db::links::get_by_id(c, link_id)?;
                    if let Some(reason) = super::link::closed(link.as_ref()) {
                        return Ok((Err(Error::LinkClosed(reason)), Vec::new()));
                    }
                    if catalog.get(c, &b, &k, false)?.is_some() {
                        let blobs = uploads::abort(c, &id)?.unwrap_or_default();
                        return Ok((Err(Error::LinkNameTaken(k)), blobs));
                    }
                    verify_type |= link.as_ref().is_some_and(|l| l.verify_type);
                    max_size = link.map(|l| l.max_size);
                }
                let Assembled {
                    size,
                    etag,
                    meta,
                    checksum,
                    manifest,
                } = match assemble(
                    &uploads::parts(c, &id, 0, usize::MAX >> 1)?,
                    &upload,
                    &parts,
                    &declared,
                    verify_type,
                    max_size,
                )? {
                    Ok(done) => done,
                    Err(e) => return Ok((Err(e), Vec::new())),
                };
                let fail =
                    |e: Error| -> std::result::Result<_, DbError> { Ok((Err(e), Vec::new())) };
                // Settled last: it counts the bytes against the upload's link.
                if let Err(e) = crate::objects::quota::settle_completion(
                    c,
                    &b,
                    &k,
                    size,
                    upload.link_id.as_deref(),
                )? {
                    return fail(Error::QuotaExceeded(e));
                }
                let used: Vec<String> = manifest.iter().map(|(b, _)| b.clone()).collect();
                let mut garbage = catalog.put(c, &b, &k, &meta, &Stored::Parts(manifest))?;
                if let Some(link_id) = &upload.link_id {
                    crate::objects::lifecycle::apply_link_expiry(c, link_id, &b, &k)?;
                }
                origin
                    .with_link(upload.link_id.clone())
                    .created(c, &b, &k, &meta)?;
                garbage.extend(
                    uploads::remove(c, &id)?
                        .into_iter()
                        .filter(|b| !used.contains(b)),
                );
                Ok((Ok(Completed { etag, checksum }), garbage))
            },
        )
        .await?;
    for blob in garbage {
        store.remove(blob).await;
    }
    outcome
}

/// [`complete_if`] under the S3 backend, in the steps of docs/cluster.md 9.4: T1 checks the part
/// list as the filesystem store's completion does (changing nothing); the key's condition (and,
/// for a link's upload, that the key is free) is read with HEAD and sent with the backend's
/// Complete, which names exactly the parts the client named; T2 settles (the link's bytes, the
/// object's extras row with the type of part 1 and the checksum, the link's expiry, the event)
/// and removes the upload's rows. A refused or failed Complete leaves the upload for a retry; a
/// refused or failed T2 removes the version again (`If-Match` on its ETag).
///
/// Ceph RGW 16 refuses (400 InvalidPart) a Complete that leaves out an uploaded part
/// (docs/cluster.md 8.1): there, a client naming a subset gets that answer, not S3's object.
#[allow(clippy::too_many_arguments)]
async fn complete_s3(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<(u32, String)>,
    cond: WriteCondition,
    declared: Declared,
    origin: crate::events::Origin,
) -> Result<Completed> {
    use crate::storage::s3::{Code, CompletedPart, WriteIf};
    let backend = store.backend().expect("S3 path");
    let backend_key = crate::storage::cluster::backend_key(bucket, key);
    // A completion repeated after it succeeded: answered from the object (see `complete_if`).
    let already_done = |id: String| async {
        let etag = multipart_etag(&parts);
        let current = store.head(bucket, key).await?;
        match (etag, current) {
            (Some(etag), Some(o)) if o.meta.etag.trim_matches('"') == etag.trim_matches('"') => {
                Ok(Completed {
                    etag: o.meta.etag,
                    checksum: o.meta.checksum,
                })
            }
            _ => Err(Error::NoSuchUpload(id)),
        }
    };
    // T1: the row and its parts (read together: with shared rows, a part recorded between the
    // two reads is one the client did not name, or replaces one it named with another ETag,
    // which the check refuses), then what the bucket and the link require.
    let Some(upload) = uploads.get(bucket, key, upload_id).await? else {
        return already_done(upload_id.to_owned()).await;
    };
    let stored = uploads.parts(upload_id, 0, usize::MAX >> 1).await?;
    let (b, named) = (bucket.to_owned(), parts.clone());
    let checked = db
        .read(move |c| {
            let mut max_size = None;
            let mut verify_type = crate::db::buckets::get(c, &b)?.is_some_and(|r| r.verify_type);
            if let Some(link_id) = &upload.link_id {
                let link = crate::db::links::get_by_id(c, link_id)?;
                if let Some(reason) = super::link::closed(link.as_ref()) {
                    return Ok(Err(Error::LinkClosed(reason)));
                }
                verify_type |= link.as_ref().is_some_and(|l| l.verify_type);
                max_size = link.map(|l| l.max_size);
            }
            let assembled = assemble(&stored, &upload, &named, &declared, verify_type, max_size)?;
            Ok(assembled.map(|a| (upload, a)))
        })
        .await?;
    let (upload, assembled) = match checked {
        Ok(done) => done,
        // The row's parts went between the two reads: a concurrent Complete (through this node
        // or another) removed the upload. Answered as a retry is, from the object.
        Err(refused) => {
            return match uploads.get(bucket, key, upload_id).await? {
                None => already_done(upload_id.to_owned()).await,
                Some(_) => Err(refused),
            };
        }
    };
    let Some(backend_upload) = backend_upload_id(&upload) else {
        return Err(Error::Io(crate::storage::not_built(
            "completion of an upload begun without the S3 backend",
        )));
    };
    // The condition, read first: Ceph 16's Complete ignores it (docs/cluster.md 8.1), so this
    // HEAD is the check there (not atomic), and the header below the check elsewhere.
    let link_upload = upload.link_id.is_some();
    if link_upload || cond.if_none_match_any || cond.if_match.is_some() {
        let current = store.head(bucket, key).await?;
        if link_upload && current.is_some() {
            // A link never replaces a file: this upload can never complete.
            if abort(db, uploads, store, bucket, key, upload_id).await? {
                return Err(Error::LinkNameTaken(key.to_owned()));
            }
            return Err(Error::NoSuchUpload(upload_id.to_owned()));
        }
        cond.check(current.as_ref().map(|o| &o.meta), key)?;
    }
    // B.
    let condition = if link_upload || cond.if_none_match_any {
        Some(WriteIf::Absent)
    } else {
        cond.if_match.clone().map(WriteIf::Matches)
    };
    let named: Vec<CompletedPart> = parts
        .iter()
        .zip(&assembled.manifest)
        .map(|((number, _), (backend_etag, _))| CompletedPart {
            number: *number,
            etag: backend_etag.clone(),
        })
        .collect();
    let stored = match backend
        .complete_multipart(&backend_key, &backend_upload, &named, condition.as_ref())
        .await
    {
        // Completed meanwhile by a concurrent Complete (through this node or another):
        // answered as a retry is, from the object.
        Err(e) if e.code() == Some(&Code::NoSuchUpload) => {
            return already_done(upload_id.to_owned()).await;
        }
        stored => stored,
    }
    .map_err(|e| match e.code() {
        Some(Code::PreconditionFailed) if cond.if_match.is_some() => {
            Error::PreconditionFailed("If-Match")
        }
        Some(Code::PreconditionFailed) => Error::PreconditionFailed("If-None-Match"),
        Some(Code::NoSuchUpload) => Error::NoSuchUpload(upload_id.to_owned()),
        Some(Code::InvalidPart) => Error::InvalidPart {
            upload_id: upload_id.to_owned(),
            part_number: 0,
            etag: String::new(),
        },
        _ => Error::Io(crate::storage::cluster::io_error(e)),
    })?;
    // T2.
    let mut meta = assembled.meta;
    meta.etag = stored.etag.clone();
    meta.size = stored.size;
    let extras = crate::db::extras::Extras {
        etag: stored.etag.clone(),
        size: stored.size,
        acl: Some(meta.acl.clone()),
        detected_type: meta.detected_type.clone(),
        checksum: meta.checksum.as_ref().map(|(a, v)| format!("{a} {v}")),
        expires_at: None,
    };
    let (b, k, id, size) = (
        bucket.to_owned(),
        key.to_owned(),
        upload_id.to_owned(),
        assembled.size,
    );
    let link_id = upload.link_id.clone();
    let origin_flushed = origin.clone();
    // Shared rows: the row is deleted first, by one statement that answers it to one
    // completion only. A concurrent Complete of the same upload (through another node) that
    // made the same object, or an abort, took it: this one settles nothing more and answers
    // as a retry does, 200 with the object's ETag (S3's answer to a repeated Complete).
    if let Some(pg) = uploads.shared()
        && pg.delete_upload(upload_id).await?.is_none()
    {
        return already_done(upload_id.to_owned()).await;
    }
    let local = uploads.shared().is_none();
    let settled = db
        .write(move |c| {
            // Local rows gone: a concurrent Complete settled this very version first (its
            // extras carry the ETag), so this one settles nothing and answers with the same
            // ETag, as a repeated Complete is answered. Or an Abort took the rows after the
            // backend made the version: it is settled here, by the Complete that made it.
            if local
                && uploads::get(c, &b, &k, &id)?.is_none()
                && crate::db::extras::get(c, &b, &k)?.is_some_and(|e| e.etag == extras.etag)
            {
                return Ok(Ok(()));
            }
            if let Err(e) =
                crate::objects::quota::settle_completion(c, &b, &k, size, link_id.as_deref())?
            {
                return Ok(Err(Error::QuotaExceeded(e)));
            }
            let mut extras = extras;
            if let Some(link_id) = &link_id {
                extras.expires_at =
                    crate::db::lifecycle::link_object_expiry(c, link_id, crate::db::now_millis())?;
            }
            crate::db::extras::put(c, &b, &k, &extras)?;
            origin
                .with_link(link_id.clone())
                .created(c, &b, &k, &meta)?;
            if local {
                uploads::remove(c, &id)?;
            }
            Ok(Ok(()))
        })
        .await;
    let failure = match settled {
        Ok(Ok(())) => {
            // Settled: the version stays, even if its event cannot be written (500).
            origin_flushed.flush(db).await?;
            return Ok(Completed {
                etag: stored.etag,
                checksum: assembled.checksum,
            });
        }
        Ok(Err(refused)) => refused,
        Err(e) => Error::Db(e),
    };
    // T2 refused or failed: the version must not stay.
    if let Err(e) = backend.delete_if(&backend_key, Some(&stored.etag)).await {
        tracing::warn!(bucket, key, error = %e,
            "a completion whose settling failed could not be removed from the backend");
    }
    Err(failure)
}

/// What a completion makes of an upload's part list, checked against the stored parts.
struct Assembled {
    size: u64,
    etag: String,
    meta: crate::db::objects::ObjectMeta,
    checksum: Option<(String, String)>,
    /// The named parts' (blob, size): under the S3 backend the blob is the backend's part ETag.
    manifest: Vec<(String, u64)>,
}

/// Checks the part list of a completion against the stored parts (ETags, sizes, a link's
/// maximum, the declared size, checksum and type, the type of part 1) and builds the object's
/// metadata, changing nothing: both backends' completions run it in their transaction.
fn assemble(
    stored: &[PartRecord],
    upload: &UploadRecord,
    parts: &[(u32, String)],
    declared: &Declared,
    verify_type: bool,
    max_size: Option<u64>,
) -> std::result::Result<Result<Assembled>, DbError> {
    let fail = |e: Error| -> std::result::Result<Result<Assembled>, DbError> { Ok(Err(e)) };
    let id = upload.upload_id.clone();
    let mut manifest = Vec::with_capacity(parts.len());
    let mut part_checksums = Vec::with_capacity(parts.len());
    let mut detected_type = None;
    let mut md5s = Md5::new();
    let last = parts.len() - 1;
    for (i, (number, want_etag)) in parts.iter().enumerate() {
        let found = stored.iter().find(|p| p.part_number == *number);
        let Some(part) =
            found.filter(|p| p.etag.trim_matches('"') == want_etag.trim().trim_matches('"'))
        else {
            return fail(Error::InvalidPart {
                upload_id: id.clone(),
                part_number: *number,
                etag: want_etag.clone(),
            });
        };
        if i < last && part.size < MIN_PART_SIZE {
            return fail(Error::PartTooSmall {
                size: part.size,
                min: MIN_PART_SIZE,
                part_number: part.part_number,
                etag: part.etag.clone(),
            });
        }
        part_checksums.push((part.checksum.clone(), part.size));
        if i == 0 {
            detected_type = part.detected_type.clone();
        }
        md5s.update(hex::decode(part.etag.trim_matches('"')).unwrap_or_default());
        manifest.push((part.blob.clone(), part.size));
    }
    let size: u64 = manifest.iter().map(|(_, s)| s).sum();
    if let Some(max) = max_size
        && size > max
    {
        return fail(Error::TooLarge { size, max });
    }
    if let Some(declared_size) = declared.object_size
        && declared_size != size
    {
        return fail(Error::ObjectSizeMismatch {
            declared: declared_size,
            actual: size,
        });
    }
    let etag = format!("\"{}-{}\"", hex::encode(md5s.finalize()), parts.len());
    let saved: UploadHeaders = serde_json::from_str(&upload.headers)
        .map_err(|e| DbError::Corrupt(format!("upload headers: {e}")))?;
    let mut meta = saved
        .headers
        .into_meta(size, etag.clone(), upload.owner.clone());
    let algorithm = saved
        .checksum_algorithm
        .as_deref()
        .and_then(ChecksumAlgorithm::from_name);
    let kind = saved
        .checksum_type
        .as_deref()
        .and_then(ChecksumType::from_name)
        .or(algorithm.map(ChecksumAlgorithm::default_type));
    if let Some(want) = declared.checksum_type
        && Some(want) != kind
    {
        return fail(Error::ChecksumTypeMismatch {
            declared: want.as_str(),
            upload: kind.map(ChecksumType::as_str),
        });
    }
    if let Err(e) = verify_declared_checksum(declared, algorithm, &part_checksums) {
        return fail(e);
    }
    meta.checksum = match (algorithm, kind) {
        (Some(a), Some(ChecksumType::FullObject)) => {
            full_crc(a, &part_checksums).map(|v| (a.as_str().to_owned(), v))
        }
        (Some(a), _) => composite_checksum(a, &part_checksums),
        (None, _) => None,
    };
    let checksum = meta.checksum.clone();
    // The object's first bytes are its first part's: whatever part arrived when,
    // they are checked here before the object exists.
    if verify_type
        && let Err(m) = crate::sniff::check(
            meta.content_type.as_deref().unwrap_or_default(),
            detected_type.as_deref(),
        )
    {
        return fail(Error::ContentMismatch(m));
    }
    meta.detected_type = detected_type;
    Ok(Ok(Assembled {
        size,
        etag,
        meta,
        checksum,
        manifest,
    }))
}

/// The checksum S3 gives a multipart object created with `x-amz-checksum-algorithm`: the
/// algorithm over the concatenated binary checksums of the parts, base64, then `-` and the
/// number of parts (a "COMPOSITE" checksum). `None` when a part was sent without a checksum of
/// that algorithm, and for CRC64NVME, which S3 only gives as a full-object checksum.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html#large-object-checksums>
fn composite_checksum(
    algorithm: ChecksumAlgorithm,
    parts: &[(Option<String>, u64)],
) -> Option<(String, String)> {
    use base64::Engine as _;
    if algorithm == ChecksumAlgorithm::Crc64Nvme {
        return None;
    }
    let mut summer = algorithm.checksummer();
    for (part, _) in parts {
        let (part_algo, value) = part.as_deref()?.split_once(' ')?;
        if ChecksumAlgorithm::from_name(part_algo) != Some(algorithm) {
            return None;
        }
        summer.update(
            &base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?,
        );
    }
    let value = format!("{}-{}", summer.finish(), parts.len());
    Some((algorithm.as_str().to_owned(), value))
}

/// The CRC of the whole object from its parts' `algo` CRCs and sizes; `None` when a part was
/// uploaded without one (or `algo` is a hash).
fn full_crc(algo: ChecksumAlgorithm, parts: &[(Option<String>, u64)]) -> Option<String> {
    let pieces = parts
        .iter()
        .map(|(checksum, size)| {
            let (part_algo, value) = checksum.as_deref()?.split_once(' ')?;
            (ChecksumAlgorithm::from_name(part_algo) == Some(algo)).then_some((value, *size))
        })
        .collect::<Option<Vec<_>>>()?;
    crate::auth::checksum::combine_crcs(algo, &pieces)
}

/// Checks the full-object checksum the completion declared against the one the parts' CRCs
/// give, whatever the upload's type: a checksum is never taken on trust. It must be of the
/// upload's algorithm, if the upload has one; `ChecksumUnverifiable` when the parts carry no
/// CRC of that algorithm (or it is a hash, which parts cannot give for the whole).
fn verify_declared_checksum(
    declared: &Declared,
    upload: Option<ChecksumAlgorithm>,
    parts: &[(Option<String>, u64)],
) -> Result<()> {
    let Some((algo, value)) = &declared.checksum else {
        return Ok(());
    };
    if let Some(upload) = upload.filter(|u| u != algo) {
        return Err(Error::ChecksumAlgorithmMismatch {
            upload: upload.as_str(),
            declared: algo.as_str(),
        });
    }
    let Some(whole) = full_crc(*algo, parts) else {
        return Err(Error::ChecksumUnverifiable(algo.as_str()));
    };
    if value.trim() != whole {
        return Err(Error::ChecksumMismatch(algo.as_str()));
    }
    Ok(())
}

/// The ETag S3 gives the object completed from `parts`: the MD5 of the parts' binary MD5s, then
/// `-` and the number of parts. `None` when an ETag in the list is not an MD5.
fn multipart_etag(parts: &[(u32, String)]) -> Option<String> {
    let mut md5s = Md5::new();
    for (_, etag) in parts {
        let md5 = hex::decode(etag.trim().trim_matches('"')).ok()?;
        if md5.len() != 16 {
            return None;
        }
        md5s.update(md5);
    }
    Some(format!(
        "\"{}-{}\"",
        hex::encode(md5s.finalize()),
        parts.len()
    ))
}

/// A new upload's row for `bucket/key` with the given headers, held by `link_id`'s slot when
/// given (the upload-link routes and CreateMultipartUpload). The caller
/// inserts it with [`uploads::create`].
pub fn upload_record(
    bucket: &str,
    key: &str,
    owner: &str,
    headers: ObjectHeaders,
    checksum: Option<(ChecksumAlgorithm, ChecksumType)>,
    link_id: Option<String>,
) -> Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: uuid::Uuid::new_v4().simple().to_string(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        owner: owner.to_owned(),
        initiated: crate::db::now_millis(),
        headers: serde_json::to_string(&UploadHeaders {
            headers,
            checksum_algorithm: checksum.map(|(a, _)| a.as_str().to_owned()),
            checksum_type: checksum.map(|(_, t)| t.as_str().to_owned()),
            backend_upload_id: None,
        })
        .map_err(Error::Encode)?,
        link_id,
    })
}

/// Aborts an upload and removes its parts (giving back its link slot, if it held one). `false`
/// when there was no such upload: of concurrent aborts, exactly one answers `true`.
pub async fn abort(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<bool> {
    abort_if(db, uploads, store, bucket, key, upload_id, None).await
}

/// [`abort`] only if the upload was initiated at `initiated` (Unix milliseconds; a whole second,
/// as an HTTP date gives it, matches any time within that second): AbortMultipartUpload's
/// `x-amz-if-match-initiated-time`, checked in the abort's own transaction. Another time is
/// `PreconditionFailed` and the upload stays. With shared rows the time is checked on the row
/// read before the deleting statement (an upload id is never reused, so the row deleted is the
/// one checked), and a link's slot stays taken (as [`crate::control::Links::reserve_upload_shared`]
/// says).
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html>
pub async fn abort_if(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    bucket: &str,
    key: &str,
    upload_id: &str,
    initiated: Option<i64>,
) -> Result<bool> {
    if let Some(pg) = uploads.shared() {
        let Some(upload) = uploads.get(bucket, key, upload_id).await? else {
            return Ok(false);
        };
        if initiated.is_some_and(|at| !same_time(at, upload.initiated)) {
            return Err(Error::PreconditionFailed("x-amz-if-match-initiated-time"));
        }
        let Some(upload) = pg.delete_upload(upload_id).await? else {
            return Ok(false);
        };
        abort_backend_upload(store, &upload).await;
        return Ok(true);
    }
    let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
    let blobs = db
        .write(move |c| match uploads::get(c, &b, &k, &id)? {
            Some(u) if initiated.is_some_and(|at| !same_time(at, u.initiated)) => Ok(Err(())),
            Some(u) => Ok(Ok(uploads::abort(c, &id)?.map(|blobs| (u, blobs)))),
            None => Ok(Ok(None)),
        })
        .await?
        .map_err(|()| Error::PreconditionFailed("x-amz-if-match-initiated-time"))?;
    let Some((upload, blobs)) = blobs else {
        return Ok(false);
    };
    if store.backend().is_some() {
        // The part rows name backend ETags, not blobs: the backend drops the parts.
        abort_backend_upload(store, &upload).await;
        return Ok(true);
    }
    for blob in blobs {
        store.remove(blob).await;
    }
    Ok(true)
}

/// The upload `upload_id` of `bucket/key`, else `NoSuchUpload`.
pub async fn get(
    uploads: &Uploads,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<UploadRecord> {
    uploads
        .get(bucket, key, upload_id)
        .await?
        .ok_or_else(|| Error::NoSuchUpload(upload_id.to_owned()))
}

/// The most bytes part `number` of `upload` may hold: S3's part limit, and for the upload of an
/// upload link the link's maximum file size less the upload's other parts. A closed (revoked or
/// expired) link takes no part.
pub async fn part_budget(
    db: &Db,
    uploads: &Uploads,
    upload: &UploadRecord,
    number: u32,
) -> Result<u64> {
    let Some(link_id) = upload.link_id.clone() else {
        return Ok(MAX_PART_SIZE);
    };
    let id = upload.upload_id.clone();
    let budget = match uploads.shared() {
        Some(_) => shared_link_budget(db, uploads, &link_id, &id, number).await??,
        None => {
            db.read(move |c| link_budget(c, &link_id, &id, number))
                .await??
        }
    };
    Ok(budget.min(MAX_PART_SIZE))
}

/// [`part_budget`]'s check of a link's upload, on a connection (also run again where the part
/// row commits, so that concurrent parts cannot pass the limit together).
fn link_budget(
    c: &rusqlite::Connection,
    link_id: &str,
    upload_id: &str,
    number: u32,
) -> std::result::Result<Result<u64>, DbError> {
    let link = crate::db::links::get_by_id(c, link_id)?;
    if let Some(reason) = super::link::closed(link.as_ref()) {
        return Ok(Err(Error::LinkClosed(reason)));
    }
    let max = link.map_or(0, |l| l.max_size);
    let others = uploads::size_of_other_parts(c, upload_id, number)?;
    Ok(Ok(max.saturating_sub(others)))
}

/// What a part's first bytes are checked against: every part's type is detected (the first
/// part's becomes the object's); part 1's must match the upload's declared type when the bucket
/// or the upload's link verifies types. Complete checks the first part again, whichever it is.
pub async fn part_sniffer(
    db: &Db,
    upload: &UploadRecord,
    number: u32,
    bucket_verifies: bool,
) -> Result<Sniffer> {
    if number != 1 {
        return Ok(Sniffer::detect_only());
    }
    let verify = bucket_verifies
        || match upload.link_id.clone() {
            Some(id) => db
                .read(move |c| crate::db::links::get_by_id(c, &id))
                .await?
                .is_some_and(|l| l.verify_type),
            None => false,
        };
    if !verify {
        return Ok(Sniffer::detect_only());
    }
    let saved: UploadHeaders = serde_json::from_str(&upload.headers)
        .map_err(|e| DbError::Corrupt(format!("upload headers: {e}")))?;
    Ok(Sniffer::new(saved.headers.content_type.as_deref(), true))
}

/// A part as it arrived, staged (a part is always stored as a blob of its own).
pub struct NewPart {
    pub number: u32,
    pub size: u64,
    /// The part's MD5 ETag; `None` under the S3 backend when the MD5 was not computed (no
    /// `Content-MD5`): the part's ETag is then the backend's, as for a copied part.
    pub etag: Option<String>,
    /// `"<ALGORITHM> <value>"`, the additional checksum to list.
    pub checksum: Option<String>,
    /// The type its first bytes show (`sniff::detect`).
    pub detected_type: Option<String>,
    pub body: Staged,
}

/// Persists a part's blob and records it, replacing an earlier part of the same number, unless
/// the upload was completed or aborted meanwhile (or, for a link's upload, the part no longer
/// fits the link; or it no longer fits a quota: the record settles the room `hold` keeps). On a
/// refusal the part's bytes are removed. Answers the part's ETag as recorded (the one
/// CompleteMultipartUpload is then given).
pub async fn store_part(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    upload: &UploadRecord,
    part: NewPart,
    hold: &mut Hold,
) -> Result<String> {
    let reservation = hold.id().map(str::to_owned);
    let temp = match part.body {
        Staged::Temp(t) => t,
        Staged::Inline(bytes) => store.stage_bytes(bytes).await?,
        // A part streams into the backend's upload (docs/cluster.md 9.2, `Staged::Part`).
        Staged::Backend(upload) => {
            upload.abort().await;
            return Err(crate::storage::not_built("store_part").into());
        }
        // S3 backend: the part row's blob is the backend's part ETag.
        Staged::Part(pending) => {
            let mut part_etag = String::new();
            store_backend_part(
                db,
                uploads,
                store,
                upload,
                part.number,
                part.size,
                BackendPart::Sent(*pending),
                |blob| {
                    part_etag = part.etag.unwrap_or_else(|| blob.clone());
                    PartRecord {
                        part_number: part.number,
                        size: part.size,
                        etag: part_etag.clone(),
                        blob,
                        last_modified: crate::db::now_millis(),
                        checksum: part.checksum,
                        detected_type: part.detected_type,
                    }
                },
                hold,
            )
            .await?;
            return Ok(part_etag);
        }
    };
    // The filesystem store's part is its MD5 (always computed there, `write::wants_md5`).
    let Some(etag) = part.etag else {
        // `temp` goes with its drop.
        return Err(Error::Io(std::io::Error::other(
            "a part's MD5 was not computed",
        )));
    };
    let blob = store.persist(temp).await?;
    let record = PartRecord {
        part_number: part.number,
        size: part.size,
        etag: etag.clone(),
        blob: blob.clone(),
        last_modified: crate::db::now_millis(),
        checksum: part.checksum,
        detected_type: part.detected_type,
    };
    let outcome = record_part(db, upload, record, reservation).await;
    match outcome {
        Ok(Ok(old)) => {
            std::mem::replace(hold, Hold::none()).settled();
            if let Some(old) = old {
                store.remove(old).await;
            }
            Ok(etag)
        }
        Ok(Err(e)) => {
            store.remove(blob).await;
            Err(e)
        }
        Err(e) => {
            store.remove(blob).await;
            Err(e.into())
        }
    }
}

/// UploadPartCopy under the S3 backend: part `number` of `upload` is bytes `start..start + len`
/// of `src` (a backend object), copied inside the backend in its version (its ETag named, so a
/// source replaced meanwhile refuses the part), checked and recorded as [`store_part`] records
/// a sent part. The part's ETag is the backend's (the MD5 of the range). A range from the
/// source's start keeps the source's detected type.
#[allow(clippy::too_many_arguments)]
pub async fn copy_part(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    upload: &UploadRecord,
    number: u32,
    src: &crate::db::objects::ObjectRecord,
    start: u64,
    len: u64,
    hold: &mut Hold,
) -> Result<String> {
    let Stored::Backend { key: source, etag } = &src.body else {
        return Err(Error::Io(std::io::Error::other(
            "a copy source under the S3 backend has no backend object",
        )));
    };
    let detected_type = (start == 0)
        .then(|| src.meta.detected_type.clone())
        .flatten();
    let part = BackendPart::Copied {
        source: source.clone(),
        etag: etag.clone(),
        range: (start, (start + len).max(1) - 1),
        empty: len == 0,
    };
    let mut part_etag = String::new();
    let stored = store_backend_part(
        db,
        uploads,
        store,
        upload,
        number,
        len,
        part,
        |blob| {
            part_etag = blob.clone();
            PartRecord {
                part_number: number,
                size: len,
                etag: blob.clone(),
                blob,
                last_modified: crate::db::now_millis(),
                checksum: None,
                detected_type,
            }
        },
        hold,
    )
    .await;
    match stored {
        // The source's version is named: gone or replaced, it is no longer there to copy.
        Err(Error::PreconditionFailed(_)) => Err(Error::NoSuchKey(src.key.clone())),
        Err(e) => Err(e),
        Ok(()) => Ok(part_etag),
    }
}

/// What a part of a backend multipart upload is made of.
enum BackendPart {
    /// A client's body, streamed as it came (its last chunk held back until the checks pass).
    Sent(crate::storage::s3::PendingPart),
    /// `range` (first, last) of the backend object `source` in its version `etag`, copied
    /// inside the backend (UploadPartCopy; `empty`: the whole of an empty source).
    Copied {
        source: String,
        etag: String,
        range: (u64, u64),
        empty: bool,
    },
}

/// [`store_part`] under the S3 backend (docs/cluster.md 9.6): T1 checks that the upload is still
/// there and, for a link's upload, that the part fits the link; only then is the part sent (its
/// last chunk was held back) or copied, and T2 records it with the backend's part ETag. A
/// refusal in T1 drops a sent part: the backend stores nothing and keeps an earlier part of
/// that number (a copied part is not made at all).
#[allow(clippy::too_many_arguments)]
async fn store_backend_part(
    db: &Db,
    uploads: &Uploads,
    store: &Storage,
    upload: &UploadRecord,
    number: u32,
    size: u64,
    part: BackendPart,
    record: impl FnOnce(String) -> PartRecord,
    hold: &mut Hold,
) -> Result<()> {
    let (b, k, id) = (
        upload.bucket.clone(),
        upload.key.clone(),
        upload.upload_id.clone(),
    );
    let checked = match uploads.shared() {
        Some(_) => check_shared_part(db, uploads, upload, number, size).await,
        None => {
            db.read(move |c| {
                let Some(current) = uploads::get(c, &b, &k, &id)? else {
                    return Ok(Err(Error::NoSuchUpload(id)));
                };
                if let Some(link_id) = &current.link_id {
                    match link_budget(c, link_id, &id, number)? {
                        Ok(max) if size > max => return Ok(Err(Error::TooLarge { size, max })),
                        Ok(_) => {}
                        Err(e) => return Ok(Err(e)),
                    }
                }
                Ok(Ok(()))
            })
            .await
        }
    };
    let refused = match checked {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(e.into()),
    };
    if let Some(refused) = refused {
        if let BackendPart::Sent(pending) = part {
            pending.abort().await;
        }
        return Err(refused);
    }
    let backend_etag = match part {
        BackendPart::Sent(pending) => pending.send().await,
        BackendPart::Copied {
            source,
            etag,
            range,
            empty,
        } => {
            let (Some(backend), Some(backend_upload)) =
                (store.backend(), backend_upload_id(upload))
            else {
                return Err(Error::Io(crate::storage::not_built(
                    "a part copied into an upload begun without the S3 backend",
                )));
            };
            let key = crate::storage::cluster::backend_key(&upload.bucket, &upload.key);
            let range = (!empty).then_some(range);
            backend
                .upload_part_copy(&source, Some(&etag), range, &key, &backend_upload, number)
                .await
        }
    }
    .map_err(|e| match e.code() {
        Some(crate::storage::s3::Code::PreconditionFailed) => {
            Error::PreconditionFailed("x-amz-copy-source-If-Match")
        }
        Some(crate::storage::s3::Code::NoSuchUpload) => {
            Error::NoSuchUpload(upload.upload_id.clone())
        }
        _ => Error::Io(crate::storage::cluster::io_error(e)),
    })?;
    let reservation = hold.id().map(str::to_owned);
    // Refused here (a concurrent part took the link's room, the upload went meanwhile), the
    // backend holds a part no row describes: Complete names the rows' ETags, so it is never
    // used, and the backend drops it with the upload.
    match uploads.shared() {
        Some(pg) => record_shared_part(db, pg, upload, record(backend_etag), reservation).await??,
        None => {
            record_part(db, upload, record(backend_etag), reservation).await??;
        }
    }
    std::mem::replace(hold, Hold::none()).settled();
    Ok(())
}

/// A link's maximum file size, unless the link is closed (read from this node's copy of the
/// link, refreshed whenever the link's token is read).
async fn link_max_size(db: &Db, link_id: &str) -> std::result::Result<Result<u64>, DbError> {
    let id = link_id.to_owned();
    let link = db
        .read(move |c| crate::db::links::get_by_id(c, &id))
        .await?;
    Ok(match super::link::closed(link.as_ref()) {
        Some(reason) => Err(Error::LinkClosed(reason)),
        None => Ok(link.map_or(0, |l| l.max_size)),
    })
}

/// [`store_backend_part`]'s T1 with shared rows: the upload is still there and, for a link's
/// upload, the part fits the link's maximum with the other parts recorded so far (checked
/// again under the upload's row lock where the part is recorded).
async fn check_shared_part(
    db: &Db,
    uploads: &Uploads,
    upload: &UploadRecord,
    number: u32,
    size: u64,
) -> std::result::Result<Result<()>, DbError> {
    let id = &upload.upload_id;
    let Some(current) = uploads.get(&upload.bucket, &upload.key, id).await? else {
        return Ok(Err(Error::NoSuchUpload(id.clone())));
    };
    let Some(link_id) = &current.link_id else {
        return Ok(Ok(()));
    };
    Ok(
        match shared_link_budget(db, uploads, link_id, id, number).await? {
            Ok(max) if size > max => Err(Error::TooLarge { size, max }),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    )
}

/// [`link_budget`] with shared rows: the link's maximum (unless closed) less the bytes of the
/// upload's other parts, as recorded by every node.
async fn shared_link_budget(
    db: &Db,
    uploads: &Uploads,
    link_id: &str,
    upload_id: &str,
    number: u32,
) -> std::result::Result<Result<u64>, DbError> {
    let max = match link_max_size(db, link_id).await? {
        Ok(max) => max,
        Err(e) => return Ok(Err(e)),
    };
    let others: u64 = uploads
        .parts(upload_id, 0, usize::MAX >> 1)
        .await?
        .iter()
        .filter(|p| p.part_number != number)
        .map(|p| p.size)
        .sum();
    Ok(Ok(max.saturating_sub(others)))
}

/// [`record_part`] with shared rows: this node's quota settles the room `reservation` kept,
/// then [`crate::control::Pg::put_part`] records the part under the upload's row lock, with
/// the link's budget checked there (so that concurrent parts through several nodes cannot pass
/// it together).
async fn record_shared_part(
    db: &Db,
    pg: &crate::control::Pg,
    upload: &UploadRecord,
    record: PartRecord,
    reservation: Option<String>,
) -> std::result::Result<Result<()>, DbError> {
    let max_total = match &upload.link_id {
        Some(link_id) => match link_max_size(db, link_id).await? {
            Ok(max) => Some(max),
            Err(e) => return Ok(Err(e)),
        },
        None => None,
    };
    let (current, number, size) = (upload.clone(), record.part_number, record.size);
    let settled = db
        .write(move |c| {
            crate::objects::quota::settle_part(c, &current, number, size, reservation.as_deref())
        })
        .await?;
    if let Err(e) = settled {
        return Ok(Err(Error::QuotaExceeded(e)));
    }
    Ok(
        match pg.put_part(&upload.upload_id, &record, max_total).await? {
            Ok(()) => Ok(()),
            Err(crate::control::uploads::PartRefused::NoSuchUpload) => {
                Err(Error::NoSuchUpload(upload.upload_id.clone()))
            }
            Err(crate::control::uploads::PartRefused::TooLarge { max }) => {
                Err(Error::TooLarge { size, max })
            }
        },
    )
}

/// The transaction that records a part: unless the upload was completed or aborted meanwhile,
/// or (a link's upload) the part no longer fits the link, or it no longer fits a quota (it
/// settles the room `reservation` keeps). Answers the replaced part's blob.
async fn record_part(
    db: &Db,
    upload: &UploadRecord,
    record: PartRecord,
    reservation: Option<String>,
) -> std::result::Result<Result<Option<String>>, DbError> {
    let (b, k, id) = (
        upload.bucket.clone(),
        upload.key.clone(),
        upload.upload_id.clone(),
    );
    db.write(move |c| {
        let Some(current) = uploads::get(c, &b, &k, &id)? else {
            return Ok(Err(Error::NoSuchUpload(id)));
        };
        if let Some(link_id) = &current.link_id {
            match link_budget(c, link_id, &id, record.part_number)? {
                Ok(max) if record.size > max => {
                    return Ok(Err(Error::TooLarge {
                        size: record.size,
                        max,
                    }));
                }
                Ok(_) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        let settled = crate::objects::quota::settle_part(
            c,
            &current,
            record.part_number,
            record.size,
            reservation.as_deref(),
        )?;
        if let Err(e) = settled {
            return Ok(Err(Error::QuotaExceeded(e)));
        }
        uploads::put_part(c, &id, &record).map(Ok)
    })
    .await
}
