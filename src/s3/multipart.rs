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
use serde::Deserialize;

use super::object::{check_copy_conditions, copy_source, object_headers, receive_body};
use super::{Caller, PartNumber, S3Request, empty, iso8601, xml_response};
use crate::auth::checksum::ChecksumAlgorithm;
use crate::db::uploads::{self, UploadRecord};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::multipart::{self, NewPart, abort, complete};
use crate::objects::write;
use crate::objects::{copy, quota};
use crate::state::AppState;
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
    app.db
        .write(move |c| {
            let fits = crate::objects::quota::check_new_upload(
                c,
                &record.bucket,
                &record.key,
                None,
                None,
            )?;
            if let Err(e) = fits {
                return Ok(Err(S3Error::from(e)));
            }
            uploads::create(c, &record).map(Ok)
        })
        .await??;
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
    Ok(multipart::get(&app.db, req.bucket(), req.key(), upload_id).await?)
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
    let max = multipart::part_budget(&app.db, &upload, number).await?;
    let quota = super::object::bucket_quota(app, req.bucket()).await?;
    let size = super::object::declared_size(req);
    let mut hold = match size {
        // Refused as EntityTooLarge by `receive_body`.
        quota::Size::Exact(n) if n > max => quota::Hold::none(),
        size => quota::reserve_part(&app.db, quota, &upload, number, size).await?,
    };
    let (ingested, checksum) = receive_body(app, req, caller, body, hold.limit(max), 0)
        .await
        .map_err(|e| super::object::quota_passed(&hold, e, max))?;
    let checksum = checksum.map(|(a, v)| format!("{a} {v}"));
    let etag = write::etag_of(&ingested.digests.md5);
    let part = NewPart {
        number,
        size: ingested.size,
        etag: etag.clone(),
        checksum: checksum.clone(),
        body: ingested.staged,
    };
    multipart::store_part(&app.db, &app.store, &upload, part, &mut hold).await?;
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
    let max = multipart::part_budget(&app.db, &upload, number).await?;
    if len > max {
        return Err(crate::objects::Error::TooLarge { size: len, max }.into());
    }
    let quota = super::object::bucket_quota(app, req.bucket()).await?;
    let mut hold =
        quota::reserve_part(&app.db, quota, &upload, number, quota::Size::Exact(len)).await?;
    let (temp, md5) = copy::range(&app.store, &src, start, len).await?;
    let etag = write::etag_of(&md5);
    let part = NewPart {
        number,
        size: len,
        etag: etag.clone(),
        checksum: None,
        body: write::Staged::Temp(temp),
    };
    multipart::store_part(&app.db, &app.store, &upload, part, &mut hold).await?;
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
    let etag = complete(
        &app.db,
        &app.store,
        req.bucket(),
        req.key(),
        upload_id,
        parts,
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
