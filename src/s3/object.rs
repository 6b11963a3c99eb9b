//! Object operations: PutObject, CopyObject, GetObject/HeadObject, DeleteObject, DeleteObjects and
//! the object ACL.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html> and siblings.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::bucket::acl_document;
use super::{BucketCtx, Caller, S3Request, empty, http_date, iso8601, xml_response};
use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::db::objects::{Body as Stored, ObjectRecord};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::events::Kind;
use crate::objects::delete::{DeleteCondition, Refused};
use crate::objects::quota::{self, Hold, Size};
use crate::objects::write::{self, Expected, MAX_OBJECT_SIZE, ObjectHeaders, WriteCondition};
use crate::objects::{copy, delete};
use crate::sniff::Sniffer;
use crate::state::AppState;
use crate::xml::{self, XmlWriter};

/// `verify_type`: the bucket demands that the bytes match the declared Content-Type.
pub async fn put_object(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
    verify_type: bool,
) -> S3Result<Response> {
    refuse_unsupported_write_headers(req)?;
    let headers = object_headers(req)?;
    write::check_reserved(&app.store, &headers)?;
    write::check_backend_key(&app.store, req.bucket(), req.key())?;
    let cond = write_condition(req)?;
    let sniff = Sniffer::new(headers.content_type.as_deref(), verify_type);
    let mut hold = reserve_put(app, req).await?;
    let owner = caller.access_key().unwrap_or_default();
    let dest = write::Dest::Object {
        bucket: req.bucket(),
        key: req.key(),
        headers: &headers,
        owner,
    };
    let (ingested, checksum) = receive_body(
        app,
        req,
        caller,
        body,
        hold.limit(MAX_OBJECT_SIZE),
        app.config.inline_max_bytes,
        sniff,
        dest,
    )
    .await
    .map_err(|e| quota_passed(&hold, e, MAX_OBJECT_SIZE))?;

    let etag = write::provisional_etag(&ingested.digests);
    let mut meta = headers.into_meta(
        ingested.size,
        etag.clone(),
        caller.access_key().unwrap_or_default().to_owned(),
    );
    meta.checksum = checksum;
    meta.detected_type = ingested.detected.map(str::to_owned);
    let origin = app.events.origin(Kind::Put, caller.principal());
    // The stored version's ETag: a backend may store a large body in parts (`"...-N"`).
    let etag = write::commit_reserved(
        &app.db,
        &app.store,
        req.bucket(),
        req.key(),
        meta.clone(),
        ingested.staged,
        cond,
        &mut hold,
        origin,
    )
    .await?;

    let mut res = empty(StatusCode::OK);
    set(res.headers_mut(), header::ETAG, &etag);
    if let Some(found) = &meta.detected_type {
        set_named(res.headers_mut(), "x-postgate-detected-type", found);
    }
    if let Some((algo, value)) = &meta.checksum {
        set_named(
            res.headers_mut(),
            &format!("x-amz-checksum-{}", algo.to_ascii_lowercase()),
            value,
        );
    }
    Ok(res)
}

/// Holds room for a PutObject's body under the bucket's quota, before it is read.
async fn reserve_put(app: &AppState, req: &S3Request) -> S3Result<Hold> {
    let size = declared_size(req);
    if matches!(size, Size::Exact(n) if n > MAX_OBJECT_SIZE) {
        // Refused as EntityTooLarge by `receive_body`.
        return Ok(Hold::none());
    }
    let quota = bucket_quota(app, req.bucket()).await?;
    Ok(quota::reserve_object(&app.db, quota, req.bucket(), req.key(), size, None).await?)
}

/// A body refused as too large (read against [`Hold::limit`]`(max)`): the quota's refusal when
/// it was the quota, not `max`, that it passed.
pub(super) fn quota_passed(hold: &Hold, err: S3Error, max: u64) -> S3Error {
    match hold.passed(max) {
        Some(refusal) if err.s3_code() == S3ErrorCode::EntityTooLarge => refusal.into(),
        _ => err,
    }
}

/// The bucket's quota, from its (cached) record: buckets without one take no reservation.
pub(super) async fn bucket_quota(
    app: &AppState,
    bucket: &str,
) -> S3Result<crate::db::quota::Quota> {
    Ok(app
        .bucket_with_grant(bucket, "")
        .await?
        .map(|(record, _)| record.quota)
        .unwrap_or_default())
}

/// What a PUT body will bring, from its headers: exact when the length of the object's bytes
/// is declared (`x-amz-decoded-content-length`, or `Content-Length` of a plain body), an upper
/// bound when only the framed length of an aws-chunked body is.
pub(super) fn declared_size(req: &S3Request) -> Size {
    let number = |name: &str| req.header(name).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = number("x-amz-decoded-content-length") {
        return Size::Exact(n);
    }
    let chunked = req
        .header("x-amz-content-sha256")
        .is_some_and(|v| v.starts_with("STREAMING-"))
        || req
            .header(header::CONTENT_ENCODING)
            .is_some_and(|v| v.contains("aws-chunked"));
    match number("content-length") {
        Some(n) if !chunked => Size::Exact(n),
        Some(n) => Size::AtMost(n),
        None => Size::AtMost(u64::MAX),
    }
}

/// Write headers that ask for something postgate does not do, refused before the body is read
/// rather than ignored, since the client relies on them: SSE-C and KMS encryption (the object
/// would be stored and served unencrypted, without the key) are 501 NotImplemented; Object Lock
/// retention and legal holds (the object would stay deletable) are 400 InvalidRequest, S3's
/// answer on a bucket without Object Lock. SSE-S3 (`AES256`) is accepted: encryption at rest is
/// the data disk's.
pub(super) fn refuse_unsupported_write_headers(req: &S3Request) -> S3Result<()> {
    let not_implemented = |header: &str| {
        S3Error::new(
            S3ErrorCode::NotImplemented,
            "A header you provided implies functionality that is not implemented",
        )
        .with("Header", header)
    };
    match req.header("x-amz-server-side-encryption") {
        None | Some("AES256") => {}
        Some("aws:kms" | "aws:kms:dsse") => {
            return Err(not_implemented("x-amz-server-side-encryption"));
        }
        Some(other) => {
            return Err(S3Error::invalid_argument(
                "The encryption method specified is not supported",
                "x-amz-server-side-encryption",
                other,
            ));
        }
    }
    for header in [
        "x-amz-server-side-encryption-customer-algorithm",
        "x-amz-copy-source-server-side-encryption-customer-algorithm",
    ] {
        if req.headers.contains_key(header) {
            return Err(not_implemented(header));
        }
    }
    for header in [
        "x-amz-object-lock-mode",
        "x-amz-object-lock-retain-until-date",
        "x-amz-object-lock-legal-hold",
    ] {
        if req.headers.contains_key(header) {
            return Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "Bucket is missing Object Lock Configuration",
            ));
        }
    }
    Ok(())
}

/// S3's conditional write headers (PutObject, CompleteMultipartUpload): `If-None-Match: *` and
/// `If-Match: <etag>`. S3 takes no other `If-None-Match` value on a write: 501 NotImplemented.
pub(super) fn write_condition(req: &S3Request) -> S3Result<WriteCondition> {
    let if_none_match = req.header(header::IF_NONE_MATCH).map(str::trim);
    if if_none_match.is_some_and(|v| v != "*") {
        return Err(S3Error::new(
            S3ErrorCode::NotImplemented,
            "A header you provided implies functionality that is not implemented",
        )
        .with("Header", "If-None-Match"));
    }
    Ok(WriteCondition {
        if_none_match_any: if_none_match.is_some(),
        if_match: req.header(header::IF_MATCH).map(str::to_owned),
    })
}

/// Reads a PUT body (PutObject, UploadPart) into the store, checking everything the request
/// declared: Content-MD5, the signed SHA-256, an additional checksum (in a header or the
/// aws-chunked trailer), the size limit, and (`sniff`) the type of the first bytes. Returns the
/// staged body and the checksum to store.
#[allow(clippy::too_many_arguments)]
pub(super) async fn receive_body(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
    max: u64,
    inline_max: usize,
    sniff: Sniffer,
    dest: write::Dest<'_>,
) -> S3Result<(write::Ingested, Option<(String, String)>)> {
    let algo = requested_checksum(req)?;
    let upload_body = caller.upload_body(req, body)?;
    let expected = Expected {
        md5: write::parse_content_md5(req.header("content-md5"))?,
        sha256_hex: upload_body.sha256_hex.clone(),
        checksum: algo.clone(),
    };
    if req.headers.get(header::CONTENT_LENGTH).is_none() && upload_body.decoded_length.is_none() {
        return Err(S3Error::code(S3ErrorCode::MissingContentLength));
    }
    if let Some(len) = upload_body.decoded_length.or_else(|| {
        req.header(header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }) && len > max
    {
        return Err(S3Error::code(S3ErrorCode::EntityTooLarge)
            .with("ProposedSize", len.to_string())
            .with("MaxSizeAllowed", max.to_string()));
    }
    let hashes = write::Hashes::new(
        write::wants_md5(&app.store, expected.md5.as_ref()),
        expected.sha256_hex.is_some(),
        algo.as_ref().map(|(a, _)| Checksummer::new(*a)),
    );
    let trailer = upload_body.trailer.clone();
    let ingested = write::receive(
        &app.store,
        upload_body.stream,
        max,
        inline_max,
        hashes,
        sniff,
        dest,
    )
    .await
    .map_err(|e| S3Error::from_ingest(e, max))?;
    let trailer_value = match (&trailer, &algo) {
        (Some(t), Some((a, _))) => t.value(a.header_name()),
        _ => None,
    };
    if let Err(e) = expected.verify(&ingested, trailer_value.as_deref()) {
        ingested.staged.discard().await;
        return Err(e.into());
    }
    let checksum = algo
        .as_ref()
        .zip(ingested.digests.checksum.clone())
        .map(|((a, _), v)| (a.as_str().to_owned(), v));
    Ok((ingested, checksum))
}

pub(super) fn object_headers(req: &S3Request) -> S3Result<ObjectHeaders> {
    Ok(ObjectHeaders::read(
        |name| {
            req.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        },
        req.headers.keys().map(HeaderName::as_str),
    )?)
}

/// The additional checksum the request asks for: `x-amz-checksum-<alg>` (value in the header) or
/// `x-amz-sdk-checksum-algorithm` / `x-amz-trailer` (value in the trailer).
pub(super) fn requested_checksum(
    req: &S3Request,
) -> S3Result<Option<(ChecksumAlgorithm, Option<String>)>> {
    for (name, value) in &req.headers {
        if let Some(algo) = ChecksumAlgorithm::from_header_name(name.as_str()) {
            let value = value.to_str().unwrap_or_default();
            crate::auth::checksum::validate_value(algo, value).map_err(|_| {
                S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    format!("Value for {} header is invalid.", name.as_str()),
                )
            })?;
            return Ok(Some((algo, Some(value.to_owned()))));
        }
    }
    if let Some(trailer) = req.header("x-amz-trailer")
        && let Some(algo) = ChecksumAlgorithm::from_header_name(trailer.trim())
    {
        return Ok(Some((algo, None)));
    }
    Ok(None)
}

pub async fn copy_object(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    dest: BucketCtx,
) -> S3Result<Response> {
    refuse_unsupported_write_headers(req)?;
    // The copy's checksum, computed over its bytes as they are copied (API reference
    // CopyObject, "x-amz-checksum-algorithm"); without it the source's is kept.
    let checksum = req
        .header("x-amz-checksum-algorithm")
        .map(|a| {
            ChecksumAlgorithm::from_name(a).ok_or_else(|| {
                S3Error::invalid_argument(
                    "Checksum algorithm provided is unsupported.",
                    "x-amz-checksum-algorithm",
                    a,
                )
            })
        })
        .transpose()?;
    let cond = write_condition(req)?;
    let (src_bucket, src_key, src) = copy_source(app, req, caller).await?;
    check_copy_conditions(req, &src)?;

    let replace = match req.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(other) => {
            return Err(S3Error::invalid_argument(
                "Unknown metadata directive.",
                "x-amz-metadata-directive",
                other,
            ));
        }
    };
    if !replace
        && src_bucket == req.bucket()
        && src_key == req.key()
        && req.header("x-amz-storage-class").is_none()
    {
        return Err(S3Error::new(
            S3ErrorCode::InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
        ));
    }
    let owner = caller.access_key().unwrap_or_default().to_owned();
    let mut meta = if replace {
        let mut m = object_headers(req)?.into_meta(src.meta.size, src.meta.etag.clone(), owner);
        m.checksum = src.meta.checksum.clone();
        m.detected_type = src.meta.detected_type.clone();
        m
    } else {
        let mut m = src.meta.clone();
        m.owner = owner;
        m.acl = crate::objects::write::parse_canned_acl(req.header("x-amz-acl"))?;
        m.last_modified = crate::db::now_millis();
        m
    };
    meta.last_modified = crate::db::now_millis();
    // Tags have their own directive, independent of the metadata's.
    meta.tagging = match req.header("x-amz-tagging-directive") {
        None | Some("COPY") => src.meta.tagging.clone(),
        Some("REPLACE") => req.header("x-amz-tagging").map(str::to_owned),
        Some(other) => {
            return Err(S3Error::invalid_argument(
                "Unknown tagging directive.",
                "x-amz-tagging-directive",
                other,
            ));
        }
    };
    // A bucket that verifies types holds copies to it too.
    if dest.record.verify_type {
        copy::check_type(&meta)?;
    }
    let mut hold = quota::reserve_object(
        &app.db,
        dest.record.quota,
        req.bucket(),
        req.key(),
        Size::Exact(meta.size),
        None,
    )
    .await?;
    let last_modified = meta.last_modified;
    let origin = app.events.origin(Kind::Copy, caller.principal());
    let (etag, stored) = copy::object(
        &app.db,
        &app.store,
        &src_key,
        src,
        req.bucket(),
        req.key(),
        meta,
        checksum,
        cond,
        &mut hold,
        origin,
    )
    .await?;
    let mut w = XmlWriter::new();
    w.root("CopyObjectResult");
    w.elem("LastModified", &iso8601(last_modified));
    w.elem("ETag", &etag);
    if let Some((algo, value)) = &stored {
        w.elem(&format!("Checksum{algo}"), value);
        w.elem(
            "ChecksumType",
            crate::auth::checksum::ChecksumType::of_value(value).as_str(),
        );
    }
    w.close("CopyObjectResult");
    Ok(xml_response(w.finish()))
}

/// The object `x-amz-copy-source` names (`bucket/key`, URL-encoded, optional leading `/`), after
/// checking the caller may read it.
pub(super) async fn copy_source(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
) -> S3Result<(String, String, ObjectRecord)> {
    let source = req.header("x-amz-copy-source").unwrap_or_default();
    let version = source
        .split_once('?')
        .map(|(_, q)| super::parse_query(q))
        .and_then(|q| {
            q.into_iter()
                .find(|(k, _)| k == "versionId")
                .map(|(_, v)| v)
        });
    check_version_id(version.as_deref())?;
    let decoded = percent_encoding::percent_decode_str(source.split('?').next().unwrap_or(""))
        .decode_utf8_lossy()
        .into_owned();
    let trimmed = decoded.strip_prefix('/').unwrap_or(&decoded);
    let Some((src_bucket, src_key)) = trimmed
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
    else {
        return Err(S3Error::invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            "x-amz-copy-source",
            source,
        ));
    };
    let (src_bucket, src_key) = (src_bucket.to_owned(), src_key.to_owned());
    // The source's owner may be asserted, like the destination's.
    let expected_owner = req.header("x-amz-source-expected-bucket-owner");
    let src = copy::source(
        &app.db,
        &app.store,
        caller.who(),
        expected_owner,
        &src_bucket,
        &src_key,
    )
    .await?;
    Ok((src_bucket, src_key, src))
}

/// The `x-amz-copy-source-if-*` conditions on the source, each failing with 412, in S3's order:
/// a true `if-match` overrides a false `if-unmodified-since`, and a false `if-none-match`
/// (the ETag matches) fails even when `if-modified-since` is true. Unparseable dates are ignored.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html#API_CopyObject_RequestSyntax>
pub(super) fn check_copy_conditions(req: &S3Request, src: &ObjectRecord) -> S3Result<()> {
    let failed = |c: &str| S3Error::code(S3ErrorCode::PreconditionFailed).with("Condition", c);
    let modified_secs = src.meta.last_modified / 1000;
    let date = |name: &str| header_date_secs(req, name);
    if let Some(m) = req.header("x-amz-copy-source-if-match") {
        if !write::etag_matches(m, &src.meta.etag) {
            return Err(failed("x-amz-copy-source-If-Match"));
        }
    } else if let Some(since) = date("x-amz-copy-source-if-unmodified-since")
        && modified_secs > since
    {
        return Err(failed("x-amz-copy-source-If-Unmodified-Since"));
    }
    if let Some(m) = req.header("x-amz-copy-source-if-none-match") {
        if write::etag_matches(m, &src.meta.etag) {
            return Err(failed("x-amz-copy-source-If-None-Match"));
        }
    } else if let Some(since) = date("x-amz-copy-source-if-modified-since")
        && modified_secs <= since
    {
        return Err(failed("x-amz-copy-source-If-Modified-Since"));
    }
    Ok(())
}

/// An HTTP-date header as Unix seconds (`None` when absent or unparseable, which S3 ignores).
fn header_date_secs(req: &S3Request, name: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(req.header(name)?).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// GetObject and HeadObject (`with_body` false).
pub async fn get_object(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    mut ctx: BucketCtx,
    with_body: bool,
    part: Option<&super::PartNumber>,
) -> S3Result<Response> {
    // A blob can vanish between reading its row and opening it when a newer version commits in
    // between; reading the row again then finds that newer version.
    for _ in 0..4 {
        let found = match ctx.object.take() {
            Some(prefetched) => prefetched,
            None => {
                crate::objects::read::head(&app.db, &app.store, req.bucket(), req.key(), with_body)
                    .await?
            }
        };
        let Some(obj) = found else {
            if !ctx.can_read {
                return Err(S3Error::access_denied());
            }
            return Err(S3Error::no_such_key(req.key()));
        };
        let public = obj.meta.acl == "public-read" || obj.meta.acl == "public-read-write";
        if !(ctx.can_read && (caller.is_authenticated() || public || ctx.record.acl != "private"))
            && !public
        {
            return Err(S3Error::access_denied());
        }
        let active_content = ctx.record.active_content;
        match respond_object(req, caller, obj, with_body, part, active_content, app).await {
            Err(Retry) => continue,
            Ok(res) => return res,
        }
    }
    Err(S3Error::internal("object kept changing while being read"))
}

struct Retry;

async fn respond_object(
    req: &S3Request,
    caller: &Caller,
    obj: ObjectRecord,
    with_body: bool,
    part: Option<&super::PartNumber>,
    active_content: bool,
    app: &AppState,
) -> Result<S3Result<Response>, Retry> {
    let meta = &obj.meta;
    if let Some(status) = match evaluate_conditions(req, &meta.etag, meta.last_modified) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    } {
        let mut res = empty(status);
        set(res.headers_mut(), header::ETAG, &meta.etag);
        set(
            res.headers_mut(),
            header::LAST_MODIFIED,
            &http_date(meta.last_modified),
        );
        return Ok(if status == StatusCode::NOT_MODIFIED {
            Ok(res)
        } else {
            Err(S3Error::code(S3ErrorCode::PreconditionFailed).with("Condition", "If-Match"))
        });
    }
    if let Err(e) = check_version_id(req.param("versionId")) {
        return Ok(Err(e));
    }
    let part = match requested_part(part, &obj) {
        Ok(part) => part,
        Err(e) => return Ok(Err(e)),
    };
    let range = match (&part, req.header(header::RANGE)) {
        (Some(_), Some(_)) => {
            return Ok(Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter",
            )));
        }
        (Some(part), None) => part.range,
        (None, Some(r)) => match parse_range(r, meta.size) {
            Ok(range) => range.map(|(start, end)| (start, end + 1 - start)),
            Err(e) => return Ok(Err(e)),
        },
        (None, None) => None,
    };
    let mut headers = HeaderMap::new();
    if let Err(e) = object_response_headers(&mut headers, req, caller, &obj, range.is_none()) {
        return Ok(Err(e));
    }
    guard_active_content(&mut headers, active_content);
    if let Some(count) = part.and_then(|p| p.count) {
        set_named(&mut headers, "x-amz-mp-parts-count", &count.to_string());
    }
    let (status, start, len) = match range {
        Some((start, len)) => {
            if len > 0 {
                let end = start + len - 1;
                set(
                    &mut headers,
                    header::CONTENT_RANGE,
                    &format!("bytes {start}-{end}/{}", meta.size),
                );
            }
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        None => (StatusCode::OK, 0, meta.size),
    };
    set(&mut headers, header::CONTENT_LENGTH, &len.to_string());
    if !with_body {
        return Ok(Ok((status, headers, Body::empty()).into_response()));
    }
    let body = match obj.body {
        Stored::Inline(bytes) => {
            let end = (start + len) as usize;
            Body::from(bytes.get(start as usize..end).unwrap_or_default().to_vec())
        }
        stored => match crate::objects::read::stream(&app.store, &stored, start, len).await {
            Ok(stream) => Body::from_stream(stream),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Retry),
            Err(e) => return Ok(Err(S3Error::internal(e))),
        },
    };
    Ok(Ok((status, headers, body).into_response()))
}

/// `versionId` on a read or a copy source. postgate keeps no versions: an object's only version
/// is S3's `null` version (as in a bucket that never had versioning), and any other id is 404
/// NoSuchVersion rather than silently the current object.
fn check_version_id(version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        None | Some("null") => Ok(()),
        Some(other) => Err(S3Error::code(S3ErrorCode::NoSuchVersion).with("VersionId", other)),
    }
}

/// The part a GetObject/HeadObject `partNumber` selects.
struct PartRead {
    /// `(start, len)` of the part's bytes; `None`: the whole object (part 1 of an object that was
    /// not uploaded in parts).
    range: Option<(u64, u64)>,
    /// How many parts the object has (`x-amz-mp-parts-count`), for a multipart object.
    count: Option<usize>,
}

/// `partNumber` on a read: the n-th part of a completed multipart upload (in the order the
/// completion listed them), or, as S3 answers for an object uploaded whole, part 1 is the whole
/// object. A number past the last part is 416 InvalidPartNumber.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html#API_GetObject_RequestSyntax>
fn requested_part(
    part: Option<&super::PartNumber>,
    obj: &ObjectRecord,
) -> S3Result<Option<PartRead>> {
    let Some(part) = part else {
        return Ok(None);
    };
    let n = part.get()? as usize;
    let beyond =
        || S3Error::code(S3ErrorCode::InvalidPartNumber).with("PartNumberRequested", &part.0);
    match &obj.body {
        Stored::Parts(parts) => {
            let Some((_, len)) = parts.get(n - 1) else {
                return Err(beyond());
            };
            let start = parts[..n - 1].iter().map(|(_, size)| size).sum();
            Ok(Some(PartRead {
                range: Some((start, *len)),
                count: Some(parts.len()),
            }))
        }
        _ if n == 1 => Ok(Some(PartRead {
            range: None,
            count: None,
        })),
        _ => Err(beyond()),
    }
}

/// RFC 7232 order, as S3 applies it: If-Match, then If-Unmodified-Since (only without If-Match)
/// fail with 412; If-None-Match, then If-Modified-Since (only without If-None-Match) give 304.
fn evaluate_conditions(
    req: &S3Request,
    etag: &str,
    last_modified: i64,
) -> S3Result<Option<StatusCode>> {
    let modified_secs = last_modified / 1000;
    let date = |name: HeaderName| header_date_secs(req, name.as_str());
    if let Some(m) = req.header(header::IF_MATCH) {
        if !write::etag_matches(m, etag) {
            return Ok(Some(StatusCode::PRECONDITION_FAILED));
        }
    } else if let Some(since) = date(header::IF_UNMODIFIED_SINCE)
        && modified_secs > since
    {
        return Ok(Some(StatusCode::PRECONDITION_FAILED));
    }
    if let Some(m) = req.header(header::IF_NONE_MATCH) {
        if write::etag_matches(m, etag) {
            return Ok(Some(StatusCode::NOT_MODIFIED));
        }
    } else if let Some(since) = date(header::IF_MODIFIED_SINCE)
        && modified_secs <= since
    {
        return Ok(Some(StatusCode::NOT_MODIFIED));
    }
    Ok(None)
}

/// A single `bytes=` range, resolved against `size` to inclusive `(start, end)`. Syntax S3 does not
/// understand (several ranges, other units) is ignored, as S3 ignores it; an unsatisfiable range is
/// 416 InvalidRange.
pub(crate) fn parse_range(value: &str, size: u64) -> S3Result<Option<(u64, u64)>> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = || {
        S3Error::code(S3ErrorCode::InvalidRange)
            .with("RangeRequested", value)
            .with("ActualObjectSize", size.to_string())
    };
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => {
            if start >= size {
                return Err(unsatisfiable());
            }
            (start, end.min(size - 1))
        }
        (Ok(_), Ok(_)) => return Ok(None),
        (Ok(start), Err(_)) if b.is_empty() => {
            if start >= size {
                return Err(unsatisfiable());
            }
            (start, size - 1)
        }
        (Err(_), Ok(suffix)) if a.is_empty() => {
            if suffix == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        _ => return Ok(None),
    };
    Ok(Some(range))
}

fn object_response_headers(
    headers: &mut HeaderMap,
    req: &S3Request,
    caller: &Caller,
    obj: &ObjectRecord,
    whole: bool,
) -> S3Result<()> {
    let m = &obj.meta;
    set(headers, header::ETAG, &m.etag);
    set(headers, header::LAST_MODIFIED, &http_date(m.last_modified));
    set(headers, header::ACCEPT_RANGES, "bytes");
    set(
        headers,
        header::CONTENT_TYPE,
        m.content_type.as_deref().unwrap_or("binary/octet-stream"),
    );
    let optional = [
        (header::CACHE_CONTROL, &m.cache_control),
        (header::CONTENT_DISPOSITION, &m.content_disposition),
        (header::CONTENT_ENCODING, &m.content_encoding),
        (header::CONTENT_LANGUAGE, &m.content_language),
        (header::EXPIRES, &m.expires),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            set(headers, name, v);
        }
    }
    for (name, value) in &m.meta {
        let encoded = crate::policy::rfc2047_encode(value);
        set_named(headers, &format!("x-amz-meta-{name}"), &encoded);
    }
    if let Some(tags) = &m.tagging {
        let count = tags.split('&').filter(|t| !t.is_empty()).count();
        set_named(headers, "x-amz-tagging-count", &count.to_string());
    }
    // What the first bytes showed at upload, whatever the declared Content-Type says.
    if let Some(found) = &m.detected_type {
        set_named(headers, "x-postgate-detected-type", found);
    }
    if whole
        && req
            .header("x-amz-checksum-mode")
            .is_some_and(|v| v.eq_ignore_ascii_case("ENABLED"))
        && let Some((algo, value)) = &m.checksum
    {
        set_named(
            headers,
            &format!("x-amz-checksum-{}", algo.to_ascii_lowercase()),
            value,
        );
        // A multipart object's checksum is of its parts' checksums: `<base64>-<parts>`.
        let kind = match value.contains('-') {
            true => "COMPOSITE",
            false => "FULL_OBJECT",
        };
        set_named(headers, "x-amz-checksum-type", kind);
    }
    // Presigned and signed GETs may override response headers; anonymous ones may not.
    let overrides = [
        ("response-content-type", header::CONTENT_TYPE),
        ("response-content-language", header::CONTENT_LANGUAGE),
        ("response-expires", header::EXPIRES),
        ("response-cache-control", header::CACHE_CONTROL),
        ("response-content-disposition", header::CONTENT_DISPOSITION),
        ("response-content-encoding", header::CONTENT_ENCODING),
    ];
    for (param, name) in overrides {
        if let Some(v) = req.param(param) {
            if !caller.is_authenticated() {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    "Request specific response headers cannot be used for anonymous GET requests.",
                ));
            }
            set(headers, name, v);
        }
    }
    Ok(())
}

/// Uploaded files come from strangers and are served from the same origin as the upload pages
/// (whose link tokens live in the page's storage). Every object gets `nosniff`, so a browser
/// never decides for itself that bytes are HTML or script; and unless the bucket's owner allows
/// active content, a type a browser would run or render as a document gets
/// `Content-Security-Policy: sandbox`: it still displays, but without scripts, in an origin of
/// its own. Decided on the type actually sent, after any `response-content-type` override.
fn guard_active_content(headers: &mut HeaderMap, active_content: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let sent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !active_content && !is_passive_type(sent) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
}

/// Types a browser only displays or downloads: images (except SVG and other XML), audio, video,
/// fonts, plain text, CSS, CSV, JSON, PDF and opaque bytes. Everything else, including HTML,
/// XML, scripts and anything empty, unknown or unparseable, may run.
fn is_passive_type(content_type: Option<&str>) -> bool {
    let Some(essence) = content_type.and_then(|ct| ct.split(';').next()) else {
        return false;
    };
    let essence = essence.trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !token(kind) || !token(subtype) || subtype.ends_with("+xml") || subtype.contains("xml") {
        return false;
    }
    match kind {
        "image" | "audio" | "video" | "font" => true,
        "text" => matches!(subtype, "plain" | "css" | "csv"),
        "application" => matches!(subtype, "octet-stream" | "json" | "pdf"),
        "binary" => subtype == "octet-stream",
        _ => false,
    }
}

/// A timestamp of a conditional delete or abort, as Unix milliseconds: an HTTP date (how SDKs
/// send a timestamp in a header) or ISO 8601 (how they send one in XML, and how listings show
/// it). `None` when it is neither.
pub(super) fn parse_timestamp(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(t) = httpdate::parse_http_date(value) {
        return Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64);
    }
    let t =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// DeleteObject's conditions (S3, 2024): `If-Match` (an ETag or `*`),
/// `x-amz-if-match-last-modified-time` and `x-amz-if-match-size`, checked against the current
/// version in the delete's transaction. A value that does not parse is refused with 400
/// InvalidArgument rather than ignored, since ignoring it would delete what the client meant
/// to keep.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html>
fn delete_condition(req: &S3Request) -> S3Result<DeleteCondition> {
    const TIME: &str = "x-amz-if-match-last-modified-time";
    const SIZE: &str = "x-amz-if-match-size";
    let last_modified = match req.header(TIME) {
        None => None,
        Some(v) => Some(parse_timestamp(v).ok_or_else(|| {
            S3Error::invalid_argument("The timestamp provided is not valid", TIME, v)
        })?),
    };
    let size = match req.header(SIZE) {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            S3Error::invalid_argument("The size provided is not a valid integer", SIZE, v)
        })?),
    };
    Ok(DeleteCondition {
        if_match: req.header(header::IF_MATCH).map(str::to_owned),
        last_modified,
        size,
    })
}

/// DeleteObject; `can_read`: whether the caller may also read the bucket, which a conditioned
/// delete needs ([`crate::objects::access::may_delete`]).
pub async fn delete_object(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    can_read: bool,
) -> S3Result<Response> {
    let cond = delete_condition(req)?;
    let origin = app.events.origin(Kind::Delete, caller.principal());
    let (bucket, key) = (req.bucket(), req.key());
    delete::one(&app.db, &app.store, bucket, key, cond, can_read, origin).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// One `<Object>` of a DeleteObjects body: its key and its conditions (`<ETag>`,
/// `<LastModifiedTime>`, `<Size>`). A value that does not parse fails the schema: the whole
/// request is MalformedXML and nothing is deleted.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ObjectIdentifier.html>
fn delete_entry(o: xml::DeleteObject) -> S3Result<(String, DeleteCondition)> {
    let malformed = || S3Error::code(S3ErrorCode::MalformedXML);
    let last_modified = match o.last_modified_time.as_deref() {
        None => None,
        Some(v) => Some(parse_timestamp(v).ok_or_else(malformed)?),
    };
    let size = match o.size.as_deref() {
        None => None,
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| malformed())?),
    };
    let cond = DeleteCondition {
        if_match: o.etag,
        last_modified,
        size,
    };
    Ok((o.key, cond))
}

/// DeleteObjects; `can_read` as for [`delete_object`], per key.
pub async fn delete_objects(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
    can_read: bool,
) -> S3Result<Response> {
    let bytes = caller.read_small_body(req, body, 2 * 1024 * 1024).await?;
    if let Some(md5) = write::parse_content_md5(req.header("content-md5"))? {
        let got: [u8; 16] = {
            use md5::Digest;
            md5::Md5::digest(&bytes).into()
        };
        if got != md5 {
            return Err(S3Error::code(S3ErrorCode::BadDigest));
        }
    }
    // SDKs send an additional checksum of the body instead of Content-MD5 (API reference
    // DeleteObjects, "x-amz-checksum-*"): verified as on PutObject, nothing deleted on a
    // mismatch.
    for algo in ChecksumAlgorithm::ALL {
        if let Some(value) = req.header(algo.header_name()) {
            let mut summer = algo.checksummer();
            summer.update(&bytes);
            crate::auth::checksum::verify_value(algo, value, &summer.finish())?;
        }
    }
    let doc: xml::Delete = xml::parse(&bytes)?;
    if doc.objects.is_empty() || doc.objects.len() > 1000 {
        return Err(S3Error::code(S3ErrorCode::MalformedXML));
    }
    let quiet = doc.quiet.unwrap_or(false);
    let entries = doc
        .objects
        .into_iter()
        .map(delete_entry)
        .collect::<S3Result<Vec<_>>>()?;
    let keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    let origin = app.events.origin(Kind::Delete, caller.principal());
    let (db, store) = (&app.db, &app.store);
    let results = delete::many(db, store, req.bucket(), entries, can_read, origin).await?;
    let mut w = XmlWriter::new();
    w.root("DeleteResult");
    for (key, result) in keys.iter().zip(results) {
        let (code, message) = match result {
            Ok(()) => {
                if !quiet {
                    w.open("Deleted");
                    w.elem("Key", key);
                    w.close("Deleted");
                }
                continue;
            }
            Err(Refused::InvalidKey) => ("KeyTooLongError", "Your key is too long"),
            Err(Refused::PreconditionFailed) => (
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            ),
            Err(Refused::NoSuchKey) => ("NoSuchKey", "The specified key does not exist."),
            Err(Refused::AccessDenied) => ("AccessDenied", "Access Denied"),
        };
        w.open("Error");
        w.elem("Key", key);
        w.elem("Code", code);
        w.elem("Message", message);
        w.close("Error");
    }
    w.close("DeleteResult");
    Ok(xml_response(w.finish()))
}

pub async fn get_object_acl(app: &AppState, req: &S3Request, ctx: BucketCtx) -> S3Result<Response> {
    let head = crate::objects::read::head(&app.db, &app.store, req.bucket(), req.key(), false);
    let Some(obj) = head.await? else {
        return Err(S3Error::no_such_key(req.key()));
    };
    let _ = ctx;
    Ok(xml_response(acl_document(&obj.meta.owner, &obj.meta.acl)))
}

pub async fn put_object_acl(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let body = caller.read_small_body(req, body, 64 * 1024).await?;
    if req.header("x-amz-acl").is_none() && !body.is_empty() {
        return Err(S3Error::new(
            S3ErrorCode::NotImplemented,
            "Only canned ACLs (x-amz-acl) are supported",
        ));
    }
    let acl = crate::objects::write::parse_canned_acl(req.header("x-amz-acl"))?;
    if !write::set_acl(&app.db, &app.store, req.bucket(), req.key(), acl).await? {
        return Err(S3Error::no_such_key(req.key()));
    }
    Ok(empty(StatusCode::OK))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn set_named(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(n, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passive_types_escape_the_sandbox() {
        for ct in [
            "image/png",
            "IMAGE/JPEG",
            "video/mp4",
            "text/plain; charset=utf-8",
            "application/octet-stream",
            "binary/octet-stream",
        ] {
            assert!(is_passive_type(Some(ct)), "{ct}");
        }
        for ct in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "application/xhtml+xml",
            "image/svg+xml",
            "text/xml",
            "application/xml",
            "application/rss+xml",
            "text/javascript",
            "application/javascript",
            "application/ecmascript",
            "text/x-unknown",
            "application/x-whatever",
            "",
            "html",
            "image/",
            "/png",
            "image/png\"",
        ] {
            assert!(!is_passive_type(Some(ct)), "{ct}");
        }
        assert!(!is_passive_type(None));
    }

    #[test]
    fn ranges_resolve_as_s3_does() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-200", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-200", 100).unwrap(), Some((0, 99)));
        assert_eq!(parse_range("bytes=50-", 100).unwrap(), Some((50, 99)));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(
            parse_range("bytes=100-", 100).unwrap_err().s3_code(),
            S3ErrorCode::InvalidRange
        );
        assert_eq!(
            parse_range("bytes=0-0", 0).unwrap_err().s3_code(),
            S3ErrorCode::InvalidRange
        );
    }
}
