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
use super::{Caller, PartNumber, S3Request, empty, iso8601, xml_response};
use crate::auth::checksum::ChecksumAlgorithm;
use crate::db::objects::Body as Stored;
use crate::db::uploads::{self, PartRecord, UploadRecord};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::multipart::{self, MAX_PART_SIZE, abort, complete};
use crate::objects::write;
use crate::state::AppState;
use crate::store::Staged;
use crate::xml::{self, XmlWriter};

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
    let record = multipart::upload_record(
        req.bucket(),
        req.key(),
        caller.access_key().unwrap_or_default(),
        headers,
        checksum_algorithm.clone(),
        None,
    )?;
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

async fn load_upload(app: &AppState, req: &S3Request, upload_id: &str) -> S3Result<UploadRecord> {
    let id = upload_id.to_owned();
    let (b, k, i) = (req.bucket().to_owned(), req.key().to_owned(), id.clone());
    app.db
        .read(move |c| uploads::get(c, &b, &k, &i))
        .await?
        .ok_or_else(|| S3Error::no_such_upload(&id))
}

pub async fn upload_part(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
    upload_id: &str,
    part_number: &PartNumber,
) -> S3Result<Response> {
    let number = part_number.get()?;
    let upload = load_upload(app, req, upload_id).await?;
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
    let etag = write::etag_of(&ingested.digests.md5);
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
                return Ok(Err(S3Error::no_such_upload(&id)));
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
    upload_id: &str,
    part_number: &PartNumber,
) -> S3Result<Response> {
    let number = part_number.get()?;
    let upload = load_upload(app, req, upload_id).await?;
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
    let etag = write::etag_of(&md5);
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
    upload_id: &str,
) -> S3Result<Response> {
    let bytes = caller.read_small_body(req, body, 4 * 1024 * 1024).await?;
    let doc: CompleteMultipartUpload = xml::parse(&bytes)?;
    let parts = doc
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    let origin = app.events.origin(
        crate::events::Kind::CompleteMultipartUpload,
        caller.principal(),
    );
    let etag = complete(
        &app.db,
        &app.store,
        req.bucket(),
        req.key(),
        upload_id,
        parts,
        origin,
    )
    .await?;
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

pub async fn abort_multipart_upload(
    app: &AppState,
    req: &S3Request,
    id: &str,
) -> S3Result<Response> {
    if !abort(&app.db, &app.store, req.bucket(), req.key(), id).await? {
        return Err(S3Error::no_such_upload(id));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn list_parts(app: &AppState, req: &S3Request, upload_id: &str) -> S3Result<Response> {
    let upload = load_upload(app, req, upload_id).await?;
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
