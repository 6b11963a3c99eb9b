//! Multipart uploads: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
//! AbortMultipartUpload, ListParts and ListMultipartUploads.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html>
//!
//! Each part is a blob file. Complete writes no bytes: the object row gets a manifest of its part
//! blobs, committed in one transaction that also checks the part list, so the object appears
//! whole, atomically, replacing any older version. Parts not named in the list are removed.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use md5::{Digest, Md5};
use serde::Deserialize;

use super::object::{
    body_segments, check_copy_conditions, copy_source, object_headers, receive_body,
};
use super::{Caller, S3Request, empty, iso8601, xml_response};
use crate::app::AppState;
use crate::auth::checksum::ChecksumAlgorithm;
use crate::db::objects::{self, Body as Stored};
use crate::db::uploads::{self, PartRecord, UploadRecord};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::store::Staged;
use crate::upload::{self, ObjectHeaders};
use crate::xml::{self, XmlWriter};

/// S3's smallest part, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PART_NUMBER: u32 = 10_000;

/// What Create stored for Complete to apply.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadHeaders {
    headers: ObjectHeaders,
    checksum_algorithm: Option<String>,
}

pub async fn create_multipart_upload(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
) -> S3Result<Response> {
    let headers = object_headers(req)?;
    let checksum_algorithm = match req.header("x-amz-checksum-algorithm") {
        Some(a) => Some(
            ChecksumAlgorithm::from_name(a)
                .ok_or_else(|| {
                    S3Error::invalid_argument(
                        "Checksum algorithm provided is unsupported.",
                        "x-amz-checksum-algorithm",
                        a,
                    )
                })?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let record = UploadRecord {
        upload_id: uuid::Uuid::new_v4().simple().to_string(),
        bucket: req.bucket().to_owned(),
        key: req.key().to_owned(),
        owner: caller.access_key().unwrap_or_default().to_owned(),
        initiated: crate::db::now_millis(),
        headers: serde_json::to_string(&UploadHeaders {
            headers,
            checksum_algorithm: checksum_algorithm.clone(),
        })
        .map_err(S3Error::internal)?,
        link_id: None,
    };
    let upload_id = record.upload_id.clone();
    app.db.write(move |c| uploads::create(c, &record)).await?;
    let mut w = XmlWriter::new();
    w.root("InitiateMultipartUploadResult");
    w.elem("Bucket", req.bucket());
    w.elem("Key", req.key());
    w.elem("UploadId", &upload_id);
    w.close("InitiateMultipartUploadResult");
    let mut res = xml_response(w.finish());
    if let Some(a) = checksum_algorithm.and_then(|a| HeaderValue::from_str(&a).ok()) {
        res.headers_mut().insert("x-amz-checksum-algorithm", a);
    }
    Ok(res)
}

fn part_number(req: &S3Request) -> S3Result<u32> {
    let raw = req.param("partNumber").unwrap_or_default();
    raw.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
                "partNumber",
                raw,
            )
        })
}

fn no_such_upload(id: &str) -> S3Error {
    S3Error::code(S3ErrorCode::NoSuchUpload).with("UploadId", id)
}

async fn load_upload(app: &AppState, req: &S3Request) -> S3Result<UploadRecord> {
    let id = req.param("uploadId").unwrap_or_default().to_owned();
    let (b, k, i) = (req.bucket().to_owned(), req.key().to_owned(), id.clone());
    app.db
        .read(move |c| uploads::get(c, &b, &k, &i))
        .await?
        .ok_or_else(|| no_such_upload(&id))
}

pub async fn upload_part(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let number = part_number(req)?;
    let upload = load_upload(app, req).await?;
    // A link's upload streams no more than the link has left for it.
    let max = match link_part_budget(app, &upload, number).await? {
        Some(budget) => budget.min(MAX_PART_SIZE),
        None => MAX_PART_SIZE,
    };
    let (ingested, checksum) = receive_body(app, req, caller, body, max, 0).await?;
    let temp = match ingested.staged {
        Staged::Temp(t) => t,
        Staged::Inline(bytes) => app.store.stage_bytes(bytes).await?,
    };
    let checksum = checksum.map(|(a, v)| format!("{a} {v}"));
    let etag = upload::etag_of(&ingested.digests.md5);
    store_part(
        app,
        &upload,
        number,
        ingested.size,
        etag.clone(),
        checksum.clone(),
        temp,
    )
    .await?;
    let mut res = empty(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    if let Some((name, value)) = checksum.as_deref().and_then(|c| c.split_once(' ')) {
        let name = format!("x-amz-checksum-{}", name.to_ascii_lowercase());
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            res.headers_mut().insert(n, v);
        }
    }
    Ok(res)
}

/// For the upload of an upload link: the most bytes part `number` may hold (the link's maximum
/// file size less the upload's other parts). A closed (revoked or expired) link takes no part.
/// `None`: not a link's upload.
async fn link_part_budget(
    app: &AppState,
    upload: &UploadRecord,
    number: u32,
) -> S3Result<Option<u64>> {
    let Some(link_id) = upload.link_id.clone() else {
        return Ok(None);
    };
    let id = upload.upload_id.clone();
    let budget = app
        .db
        .read(move |c| link_budget(c, &link_id, &id, number))
        .await??;
    Ok(Some(budget))
}

/// [`link_part_budget`]'s check, on a connection (also run again where the part row commits, so
/// that concurrent parts cannot pass the limit together).
fn link_budget(
    c: &rusqlite::Connection,
    link_id: &str,
    upload_id: &str,
    number: u32,
) -> Result<S3Result<u64>, crate::db::DbError> {
    let link = crate::db::links::get_by_id(c, link_id)?;
    let reason = match &link {
        None => Some("This upload link no longer exists."),
        Some(l) => l.closed(),
    };
    if let Some(reason) = reason {
        return Ok(Err(S3Error::new(S3ErrorCode::AccessDenied, reason)));
    }
    let max = link.map_or(0, |l| l.max_size);
    let others = uploads::size_of_other_parts(c, upload_id, number)?;
    Ok(Ok(max.saturating_sub(others)))
}

fn too_large(size: u64, max: u64) -> S3Error {
    S3Error::code(S3ErrorCode::EntityTooLarge)
        .with("ProposedSize", size.to_string())
        .with("MaxSizeAllowed", max.to_string())
}

/// Persists a part's blob and records it, unless the upload was completed or aborted meanwhile
/// (or, for a link's upload, the part no longer fits the link).
async fn store_part(
    app: &AppState,
    upload: &UploadRecord,
    number: u32,
    size: u64,
    etag: String,
    checksum: Option<String>,
    temp: crate::store::TempBlob,
) -> S3Result<()> {
    let blob = app.store.persist(temp).await?;
    let part = PartRecord {
        part_number: number,
        size,
        etag,
        blob: blob.clone(),
        last_modified: crate::db::now_millis(),
        checksum,
    };
    let (b, k, id) = (
        upload.bucket.clone(),
        upload.key.clone(),
        upload.upload_id.clone(),
    );
    let outcome = app
        .db
        .write(move |c| {
            let Some(current) = uploads::get(c, &b, &k, &id)? else {
                return Ok(Err(no_such_upload(&id)));
            };
            if let Some(link_id) = &current.link_id {
                match link_budget(c, link_id, &id, part.part_number)? {
                    Ok(budget) if part.size > budget => {
                        return Ok(Err(too_large(part.size, budget)));
                    }
                    Ok(_) => {}
                    Err(e) => return Ok(Err(e)),
                }
            }
            uploads::put_part(c, &id, &part).map(Ok)
        })
        .await;
    match outcome {
        Ok(Ok(old)) => {
            if let Some(old) = old {
                app.store.remove(old).await;
            }
            Ok(())
        }
        Ok(Err(e)) => {
            app.store.remove(blob).await;
            Err(e)
        }
        Err(e) => {
            app.store.remove(blob).await;
            Err(e.into())
        }
    }
}

pub async fn upload_part_copy(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
) -> S3Result<Response> {
    let number = part_number(req)?;
    let upload = load_upload(app, req).await?;
    let (_, _, src) = copy_source(app, req, caller).await?;
    check_copy_conditions(req, &src)?;
    let size = src.meta.size;
    let (start, len) = match req.header("x-amz-copy-source-range") {
        None => (0, size),
        Some(r) => {
            let bad = || {
                S3Error::invalid_argument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy",
                    "x-amz-copy-source-range",
                    r,
                )
            };
            let (a, b) = r
                .strip_prefix("bytes=")
                .and_then(|s| s.split_once('-'))
                .ok_or_else(bad)?;
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b || b >= size {
                return Err(S3Error::code(S3ErrorCode::InvalidRange)
                    .with("RangeRequested", r)
                    .with("ActualObjectSize", size.to_string()));
            }
            (a, b - a + 1)
        }
    };
    let max = match link_part_budget(app, &upload, number).await? {
        Some(budget) => budget.min(MAX_PART_SIZE),
        None => MAX_PART_SIZE,
    };
    if len > max {
        return Err(too_large(len, max));
    }
    let (temp, md5) = match &src.body {
        Stored::Inline(bytes) => {
            let slice = bytes
                .get(start as usize..(start + len) as usize)
                .unwrap_or_default()
                .to_vec();
            let md5: [u8; 16] = Md5::digest(&slice).into();
            (app.store.stage_bytes(slice).await?, md5)
        }
        body => {
            let (temp, md5) = app
                .store
                .copy_segments(body_segments(body, start, len), true)
                .await?;
            (temp, md5.unwrap_or_default())
        }
    };
    let etag = upload::etag_of(&md5);
    store_part(app, &upload, number, len, etag.clone(), None, temp).await?;
    let mut w = XmlWriter::new();
    w.root("CopyPartResult");
    w.elem("LastModified", &iso8601(crate::db::now_millis()));
    w.elem("ETag", &etag);
    w.close("CopyPartResult");
    Ok(xml_response(w.finish()))
}

#[derive(Debug, Deserialize)]
pub(crate) struct CompleteMultipartUpload {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletedPart>,
}

#[derive(Debug, Deserialize)]
struct CompletedPart {
    #[serde(rename = "PartNumber")]
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

pub async fn complete_multipart_upload(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let upload_id = req.param("uploadId").unwrap_or_default().to_owned();
    let bytes = caller.read_small_body(req, body, 4 * 1024 * 1024).await?;
    let doc: CompleteMultipartUpload = xml::parse(&bytes)?;
    let parts = doc
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    let etag = complete(app, req.bucket(), req.key(), &upload_id, parts).await?;
    let mut w = XmlWriter::new();
    w.root("CompleteMultipartUploadResult");
    w.elem(
        "Location",
        &super::post_object::object_url(app, req, req.bucket(), req.key()),
    );
    w.elem("Bucket", req.bucket());
    w.elem("Key", req.key());
    w.elem("ETag", &etag);
    w.close("CompleteMultipartUploadResult");
    Ok(xml_response(w.finish()))
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
    app: &AppState,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<(u32, String)>,
) -> S3Result<String> {
    if parts.is_empty() {
        return Err(S3Error::code(S3ErrorCode::MalformedXML));
    }
    if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::code(S3ErrorCode::InvalidPartOrder).with("UploadId", upload_id));
    }
    let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
    let (outcome, garbage) = app
        .db
        .write(
            move |c| -> Result<(S3Result<String>, Vec<String>), crate::db::DbError> {
                let Some(upload) = uploads::get(c, &b, &k, &id)? else {
                    return Ok((Err(no_such_upload(&id)), Vec::new()));
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
                        return Ok((Err(crate::link_uploads::name_taken(&k)), blobs));
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
        app.store.remove(blob).await;
    }
    outcome
}

/// A new upload's row for `bucket/key` with the given headers, held by `link_id`'s slot when
/// given (the upload-link routes use this; CreateMultipartUpload is the S3 form). The caller
/// inserts it with [`uploads::create`].
pub fn upload_record(
    bucket: &str,
    key: &str,
    owner: &str,
    headers: ObjectHeaders,
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
            checksum_algorithm: None,
        })
        .map_err(S3Error::internal)?,
        link_id,
    })
}

/// Aborts an upload and removes its parts (giving back its link slot, if it held one). `false`
/// when there was no such upload: of concurrent aborts, exactly one answers `true`.
pub async fn abort(app: &AppState, bucket: &str, key: &str, upload_id: &str) -> S3Result<bool> {
    let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
    let blobs = app
        .db
        .write(move |c| match uploads::get(c, &b, &k, &id)? {
            Some(_) => uploads::abort(c, &id),
            None => Ok(None),
        })
        .await?;
    let Some(blobs) = blobs else {
        return Ok(false);
    };
    for blob in blobs {
        app.store.remove(blob).await;
    }
    Ok(true)
}

pub async fn abort_multipart_upload(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let id = req.param("uploadId").unwrap_or_default();
    if !abort(app, req.bucket(), req.key(), id).await? {
        return Err(no_such_upload(id));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn list_parts(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let upload = load_upload(app, req).await?;
    let max = req
        .param("max-parts")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1000)
        .min(1000);
    let marker = req
        .param("part-number-marker")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    let id = upload.upload_id.clone();
    let mut parts = app
        .db
        .read(move |c| uploads::parts(c, &id, marker, max + 1))
        .await?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    let mut w = XmlWriter::new();
    w.root("ListPartsResult");
    w.elem("Bucket", req.bucket());
    w.elem("Key", req.key());
    w.elem("UploadId", &upload.upload_id);
    owner_elems(&mut w, "Initiator", &upload.owner);
    owner_elems(&mut w, "Owner", &upload.owner);
    w.elem("StorageClass", "STANDARD");
    w.elem("PartNumberMarker", &marker.to_string());
    if let Some(last) = parts.last() {
        w.elem("NextPartNumberMarker", &last.part_number.to_string());
    }
    w.elem("MaxParts", &max.to_string());
    w.elem("IsTruncated", if truncated { "true" } else { "false" });
    for p in &parts {
        w.open("Part");
        w.elem("PartNumber", &p.part_number.to_string());
        w.elem("LastModified", &iso8601(p.last_modified));
        w.elem("ETag", &p.etag);
        w.elem("Size", &p.size.to_string());
        if let Some((algo, value)) = p.checksum.as_deref().and_then(|c| c.split_once(' ')) {
            w.elem(&format!("Checksum{algo}"), value);
        }
        w.close("Part");
    }
    w.close("ListPartsResult");
    Ok(xml_response(w.finish()))
}

pub async fn list_multipart_uploads(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let max = req
        .param("max-uploads")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1000)
        .min(1000);
    let prefix = req.param("prefix").unwrap_or("").to_owned();
    let key_marker = req.param("key-marker").unwrap_or("").to_owned();
    let id_marker = req.param("upload-id-marker").unwrap_or("").to_owned();
    let bucket = req.bucket().to_owned();
    let (p, km, im) = (prefix.clone(), key_marker.clone(), id_marker.clone());
    let mut list = app
        .db
        .read(move |c| uploads::list(c, &bucket, &p, &km, &im, max + 1))
        .await?;
    let truncated = list.len() > max;
    list.truncate(max);
    let mut w = XmlWriter::new();
    w.root("ListMultipartUploadsResult");
    w.elem("Bucket", req.bucket());
    w.elem("KeyMarker", &key_marker);
    w.elem("UploadIdMarker", &id_marker);
    if let Some(last) = list.last() {
        w.elem("NextKeyMarker", &last.key);
        w.elem("NextUploadIdMarker", &last.upload_id);
    }
    w.elem("Prefix", &prefix);
    w.elem("MaxUploads", &max.to_string());
    w.elem("IsTruncated", if truncated { "true" } else { "false" });
    for u in &list {
        w.open("Upload");
        w.elem("Key", &u.key);
        w.elem("UploadId", &u.upload_id);
        owner_elems(&mut w, "Initiator", &u.owner);
        owner_elems(&mut w, "Owner", &u.owner);
        w.elem("StorageClass", "STANDARD");
        w.elem("Initiated", &iso8601(u.initiated));
        w.close("Upload");
    }
    w.close("ListMultipartUploadsResult");
    Ok(xml_response(w.finish()))
}

fn owner_elems(w: &mut XmlWriter, name: &str, owner: &str) {
    w.open(name);
    w.elem("ID", owner);
    w.elem("DisplayName", owner);
    w.close(name);
}

/// Aborts uploads started before `cutoff_millis`, and those of revoked or expired upload links,
/// and removes their parts; a link's upload gives its slot back, once (an upload a concurrent
/// abort removed first is skipped).
pub async fn expire_uploads(app: &AppState, cutoff_millis: i64) -> S3Result<usize> {
    let blobs = app
        .db
        .write(move |c| {
            let mut blobs = Vec::new();
            let mut ids = uploads::expired(c, cutoff_millis)?;
            ids.extend(uploads::of_closed_links(c, crate::db::now_millis())?);
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
    for blob in blobs.1 {
        app.store.remove(blob).await;
    }
    Ok(blobs.0)
}
