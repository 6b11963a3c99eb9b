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

use super::object::{
    check_copy_conditions, copy_source, object_headers, receive_body,
    refuse_unsupported_write_headers,
};
use super::{Caller, PartNumber, S3Request, empty, iso8601, xml_response};
use crate::auth::checksum::{ChecksumAlgorithm, ChecksumType};
use crate::db::uploads::UploadRecord;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::multipart::{self, NewPart, abort_if, complete_if};
use crate::objects::write;
use crate::objects::{copy, quota};
use crate::state::AppState;
use crate::xml::{self, XmlWriter};

pub async fn create_multipart_upload(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
) -> S3Result<Response> {
    refuse_unsupported_write_headers(req)?;
    let headers = object_headers(req)?;
    // Under the S3 backend the metadata goes to the backend's CreateMultipartUpload as it is.
    crate::objects::write::check_reserved(&app.store, &headers)?;
    crate::objects::write::check_backend_key(&app.store, req.bucket(), req.key())?;
    let checksum = upload_checksum(req)?;
    let record = multipart::upload_record(
        req.bucket(),
        req.key(),
        caller.access_key().unwrap_or_default(),
        headers,
        checksum,
        None,
    )?;
    let upload_id = record.upload_id.clone();
    multipart::create(&app.db, &app.uploads, &app.store, record, |c, record| {
        let fits =
            crate::objects::quota::check_new_upload(c, &record.bucket, &record.key, None, None)?;
        Ok(fits.map_err(S3Error::from))
    })
    .await??;
    let mut w = XmlWriter::new();
    w.root("InitiateMultipartUploadResult");
    w.elem("Bucket", req.bucket());
    w.elem("Key", req.key());
    w.elem("UploadId", &upload_id);
    w.close("InitiateMultipartUploadResult");
    let mut res = xml_response(w.finish());
    if let Some((algo, kind)) = checksum {
        let h = res.headers_mut();
        h.insert(
            "x-amz-checksum-algorithm",
            HeaderValue::from_static(algo.as_str()),
        );
        h.insert(
            "x-amz-checksum-type",
            HeaderValue::from_static(kind.as_str()),
        );
    }
    Ok(res)
}

/// CreateMultipartUpload's `x-amz-checksum-algorithm` and `x-amz-checksum-type`: the type
/// defaults to the algorithm's (FULL_OBJECT for CRC64NVME, COMPOSITE otherwise); a type the
/// algorithm cannot have, or a type without an algorithm, is InvalidRequest.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html>
fn upload_checksum(req: &S3Request) -> S3Result<Option<(ChecksumAlgorithm, ChecksumType)>> {
    let kind = req
        .header("x-amz-checksum-type")
        .map(|t| ChecksumType::from_name(t).ok_or_else(|| invalid_checksum_type(t)))
        .transpose()?;
    let Some(a) = req.header("x-amz-checksum-algorithm") else {
        return match kind {
            None => Ok(None),
            Some(_) => Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "The x-amz-checksum-type header requires x-amz-checksum-algorithm.",
            )),
        };
    };
    let algo = ChecksumAlgorithm::from_name(a).ok_or_else(|| {
        S3Error::invalid_argument(
            "Checksum algorithm provided is unsupported.",
            "x-amz-checksum-algorithm",
            a,
        )
    })?;
    let kind = kind.unwrap_or(algo.default_type());
    if !algo.allows(kind) {
        return Err(S3Error::new(
            S3ErrorCode::InvalidRequest,
            format!(
                "The {} checksum type cannot be used with the {} checksum algorithm.",
                kind.as_str(),
                algo.as_str().to_ascii_lowercase()
            ),
        ));
    }
    Ok(Some((algo, kind)))
}

fn invalid_checksum_type(value: &str) -> S3Error {
    S3Error::invalid_argument(
        "Value for x-amz-checksum-type header is invalid.",
        "x-amz-checksum-type",
        value,
    )
}

/// What CompleteMultipartUpload declares in its headers: `x-amz-mp-object-size`,
/// `x-amz-checksum-type`, and a whole-object `x-amz-checksum-<crc>` (a composite value,
/// `<base64>-<parts>`, describes the parts, each verified when it arrived, and is not
/// rechecked).
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html>
fn declared(req: &S3Request) -> S3Result<multipart::Declared> {
    let object_size = req
        .header("x-amz-mp-object-size")
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                S3Error::invalid_argument(
                    "Value for x-amz-mp-object-size header is invalid.",
                    "x-amz-mp-object-size",
                    v,
                )
            })
        })
        .transpose()?;
    let checksum_type = req
        .header("x-amz-checksum-type")
        .map(|t| ChecksumType::from_name(t).ok_or_else(|| invalid_checksum_type(t)))
        .transpose()?;
    let mut checksum = None;
    for algo in ChecksumAlgorithm::ALL {
        if let Some(value) = req.header(algo.header_name())
            && !value.contains('-')
        {
            crate::auth::checksum::validate_value(algo, value)?;
            checksum = Some((algo, value.trim().to_owned()));
        }
    }
    Ok(multipart::Declared {
        object_size,
        checksum_type,
        checksum,
    })
}

async fn load_upload(app: &AppState, req: &S3Request, upload_id: &str) -> S3Result<UploadRecord> {
    Ok(multipart::get(&app.uploads, req.bucket(), req.key(), upload_id).await?)
}

/// `verify_type`: the bucket demands that uploads' bytes match their declared type.
pub async fn upload_part(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
    upload_id: &str,
    part_number: &PartNumber,
    verify_type: bool,
) -> S3Result<Response> {
    let number = part_number.get()?;
    refuse_unsupported_write_headers(req)?;
    let upload = load_upload(app, req, upload_id).await?;
    // A link's upload streams no more than the link has left for it.
    let max = multipart::part_budget(&app.db, &app.uploads, &upload, number).await?;
    let sniff = multipart::part_sniffer(&app.db, &upload, number, verify_type).await?;
    let quota = super::object::bucket_quota(app, req.bucket()).await?;
    let size = super::object::declared_size(req);
    let mut hold = match size {
        // Refused as EntityTooLarge by `receive_body`.
        quota::Size::Exact(n) if n > max => quota::Hold::none(),
        size => quota::reserve_part(&app.db, quota, &upload, number, size).await?,
    };
    // Under the S3 backend the part streams into the backend's upload, which needs its length.
    let backend_upload = multipart::backend_upload_id(&upload);
    let dest = match (&backend_upload, app.store.backend(), size) {
        (Some(upload_id), Some(_), quota::Size::Exact(len)) => write::Dest::BackendPart {
            bucket: req.bucket(),
            key: req.key(),
            upload_id,
            number,
            len,
        },
        (_, Some(_), quota::Size::Exact(_)) => {
            return Err(S3Error::new(
                S3ErrorCode::NotImplemented,
                "This upload was begun without the S3 backend.",
            ));
        }
        (_, Some(_), _) => return Err(S3Error::code(S3ErrorCode::MissingContentLength)),
        (_, None, _) => write::Dest::Part,
    };
    let (ingested, checksum) =
        receive_body(app, req, caller, body, hold.limit(max), 0, sniff, dest)
            .await
            .map_err(|e| super::object::quota_passed(&hold, e, max))?;
    let checksum = checksum.map(|(a, v)| format!("{a} {v}"));
    let part = NewPart {
        number,
        size: ingested.size,
        etag: ingested.digests.md5.as_ref().map(write::etag_of),
        checksum: checksum.clone(),
        detected_type: ingested.detected.map(str::to_owned),
        body: ingested.staged,
    };
    // The backend's part ETag when no MD5 was computed (S3 backend, no Content-MD5).
    let etag =
        multipart::store_part(&app.db, &app.uploads, &app.store, &upload, part, &mut hold).await?;
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
    let max = multipart::part_budget(&app.db, &app.uploads, &upload, number).await?;
    if len > max {
        return Err(crate::objects::Error::TooLarge { size: len, max }.into());
    }
    let quota = super::object::bucket_quota(app, req.bucket()).await?;
    let mut hold =
        quota::reserve_part(&app.db, quota, &upload, number, quota::Size::Exact(len)).await?;
    if app.on_s3_backend() {
        // The backend copies the range itself (docs/cluster.md 9.6).
        let etag = multipart::copy_part(
            &app.db,
            &app.uploads,
            &app.store,
            &upload,
            number,
            &src,
            start,
            len,
            &mut hold,
        )
        .await?;
        return Ok(copy_part_result(&etag));
    }
    // The copied bytes were detected when the source was stored; a range from its start keeps
    // the source's type.
    let detected_type = (start == 0)
        .then(|| src.meta.detected_type.clone())
        .flatten();
    let (temp, md5) = copy::range(&app.store, &src, start, len).await?;
    let part = NewPart {
        number,
        size: len,
        etag: Some(write::etag_of(&md5)),
        checksum: None,
        detected_type,
        body: write::Staged::Temp(temp),
    };
    let etag =
        multipart::store_part(&app.db, &app.uploads, &app.store, &upload, part, &mut hold).await?;
    Ok(copy_part_result(&etag))
}

/// UploadPartCopy's answer: the part's ETag.
fn copy_part_result(etag: &str) -> Response {
    let mut w = XmlWriter::new();
    w.root("CopyPartResult");
    w.elem("LastModified", &iso8601(crate::db::now_millis()));
    w.elem("ETag", etag);
    w.close("CopyPartResult");
    xml_response(w.finish())
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
    let done = complete_if(
        &app.db,
        &app.uploads,
        &app.store,
        req.bucket(),
        req.key(),
        upload_id,
        parts,
        super::object::write_condition(req)?,
        declared(req)?,
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
    w.elem("ETag", &done.etag);
    if let Some((algo, value)) = &done.checksum {
        w.elem(&format!("Checksum{algo}"), value);
        w.elem("ChecksumType", ChecksumType::of_value(value).as_str());
    }
    w.close("CompleteMultipartUploadResult");
    Ok(xml_response(w.finish()))
}

pub async fn abort_multipart_upload(
    app: &AppState,
    req: &S3Request,
    id: &str,
) -> S3Result<Response> {
    // The 2024 conditional abort: 412 when the upload was initiated at another time; with the
    // header, an upload that does not exist is 204 (API reference AbortMultipartUpload,
    // "x-amz-if-match-initiated-time").
    const INITIATED: &str = "x-amz-if-match-initiated-time";
    let initiated = match req.header(INITIATED) {
        None => None,
        Some(v) => Some(super::object::parse_timestamp(v).ok_or_else(|| {
            S3Error::invalid_argument("The timestamp provided is not valid", INITIATED, v)
        })?),
    };
    let aborted = abort_if(
        &app.db,
        &app.uploads,
        &app.store,
        req.bucket(),
        req.key(),
        id,
        initiated,
    )
    .await?;
    if !aborted && initiated.is_none() {
        return Err(S3Error::no_such_upload(id));
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn list_parts(app: &AppState, req: &S3Request, upload_id: &str) -> S3Result<Response> {
    let upload = load_upload(app, req, upload_id).await?;
    let max = list_limit(req, "max-parts")?;
    let marker = match req.param("part-number-marker") {
        None => 0,
        Some(v) => v.parse::<u32>().map_err(|_| {
            S3Error::invalid_argument(
                "Provided part-number-marker not an integer or within integer range",
                "part-number-marker",
                v,
            )
        })?,
    };
    let mut parts = app
        .uploads
        .parts(&upload.upload_id, marker, max + 1)
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
    if let Some((algo, kind)) = multipart::upload_checksum(&upload) {
        w.elem("ChecksumAlgorithm", algo.as_str());
        w.elem("ChecksumType", kind.as_str());
    }
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

/// ListMultipartUploads: uploads in (key, initiation) order under `prefix`, after
/// `key-marker`/`upload-id-marker`, with keys rolled up into `CommonPrefixes` at `delimiter`
/// (each common prefix counts once toward `max-uploads`), and `encoding-type=url`.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListMultipartUploads.html>
pub async fn list_multipart_uploads(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let max = list_limit(req, "max-uploads")?;
    let url_encode = super::list::url_encoding(req)?;
    let enc = |s: &str| super::list::encode_if(url_encode, s);
    let prefix = req.param("prefix").unwrap_or("").to_owned();
    let delimiter = req.param("delimiter").unwrap_or("").to_owned();
    let key_marker = req.param("key-marker").unwrap_or("").to_owned();
    // Without a key marker S3 ignores the upload-id marker.
    let id_marker = match key_marker.is_empty() {
        true => String::new(),
        false => req.param("upload-id-marker").unwrap_or("").to_owned(),
    };
    let (items, truncated) = upload_page(
        &app.uploads,
        req.bucket(),
        &prefix,
        &delimiter,
        &key_marker,
        &id_marker,
        max,
    )
    .await?;
    let mut w = XmlWriter::new();
    w.root("ListMultipartUploadsResult");
    w.elem("Bucket", req.bucket());
    w.elem("KeyMarker", &enc(&key_marker));
    w.elem("UploadIdMarker", &id_marker);
    match items.last() {
        Some(UploadItem::Upload(last)) => {
            w.elem("NextKeyMarker", &enc(&last.key));
            w.elem("NextUploadIdMarker", &last.upload_id);
        }
        Some(UploadItem::Prefix(cp)) => {
            w.elem("NextKeyMarker", &enc(cp));
            w.elem("NextUploadIdMarker", "");
        }
        None => {}
    }
    w.elem("Prefix", &enc(&prefix));
    if !delimiter.is_empty() {
        w.elem("Delimiter", &enc(&delimiter));
    }
    if url_encode {
        w.elem("EncodingType", "url");
    }
    w.elem("MaxUploads", &max.to_string());
    w.elem("IsTruncated", if truncated { "true" } else { "false" });
    for item in &items {
        if let UploadItem::Upload(u) = item {
            w.open("Upload");
            w.elem("Key", &enc(&u.key));
            w.elem("UploadId", &u.upload_id);
            owner_elems(&mut w, "Initiator", &u.owner);
            owner_elems(&mut w, "Owner", &u.owner);
            w.elem("StorageClass", "STANDARD");
            w.elem("Initiated", &iso8601(u.initiated));
            w.close("Upload");
        }
    }
    for item in &items {
        if let UploadItem::Prefix(cp) = item {
            w.open("CommonPrefixes");
            w.elem("Prefix", &enc(cp));
            w.close("CommonPrefixes");
        }
    }
    w.close("ListMultipartUploadsResult");
    Ok(xml_response(w.finish()))
}

/// `max-uploads` / `max-parts`: an integer from 0, at most 1000 (larger asks get 1000, as S3
/// gives); anything else is InvalidArgument.
fn list_limit(req: &S3Request, name: &'static str) -> S3Result<usize> {
    match req.param(name) {
        None => Ok(1000),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| n.min(1000) as usize)
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    format!("Provided {name} not an integer or within integer range"),
                    name,
                    v,
                )
            }),
    }
}

/// One entry of a ListMultipartUploads page.
enum UploadItem {
    Upload(UploadRecord),
    Prefix(String),
}

/// Up to `max` entries after the markers, and whether more follow.
async fn upload_page(
    uploads: &crate::control::Uploads,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    key_marker: &str,
    id_marker: &str,
    max: usize,
) -> Result<(Vec<UploadItem>, bool), crate::db::DbError> {
    const BATCH: usize = 1000;
    let (mut km, mut im) = (key_marker.to_owned(), id_marker.to_owned());
    let mut items: Vec<UploadItem> = Vec::new();
    loop {
        if items.len() == max {
            let more = !uploads.list(bucket, prefix, &km, &im, 1).await?.is_empty();
            return Ok((items, more && max > 0));
        }
        let rows = uploads.list(bucket, prefix, &km, &im, BATCH).await?;
        let fetched = rows.len();
        let mut jumped = false;
        for row in rows {
            let rest = &row.key[prefix.len()..];
            let rolled = (!delimiter.is_empty())
                .then(|| rest.find(delimiter))
                .flatten()
                .map(|i| row.key[..prefix.len() + i + delimiter.len()].to_owned());
            match rolled {
                Some(cp) => {
                    // Continue after every key under this common prefix (no key goes past
                    // the prefix followed by the last code point).
                    km = format!("{cp}{}", char::MAX);
                    im.clear();
                    let seen = matches!(items.last(), Some(UploadItem::Prefix(p)) if *p == cp);
                    // A prefix at or before the key marker was on an earlier page.
                    if !seen && cp.as_str() > key_marker {
                        items.push(UploadItem::Prefix(cp));
                    }
                    jumped = true;
                    break;
                }
                None => {
                    km = row.key.clone();
                    im = row.upload_id.clone();
                    items.push(UploadItem::Upload(row));
                    if items.len() == max {
                        break;
                    }
                }
            }
        }
        if fetched == 0 || (!jumped && items.len() < max && fetched < BATCH) {
            return Ok((items, false));
        }
    }
}

fn owner_elems(w: &mut XmlWriter, name: &str, owner: &str) {
    w.open(name);
    w.elem("ID", owner);
    w.elem("DisplayName", owner);
    w.close(name);
}
