//! Browser uploads via POST Object (`multipart/form-data` to the bucket URL).
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html>
//!
//! The form is read with multer straight off the request body (no body-size limit, nothing
//! buffered but the small fields before `file`). Fields are collected until `file`; then, before a
//! byte of the file is stored, the signature, the expiry and every policy condition are checked.
//! The file streams through the same write path as PutObject with a running size check that stops
//! at the first chunk past the policy's maximum. Fields after `file` are ignored, as S3 does.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{S3Request, empty};
use crate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use crate::db::buckets::BucketRecord;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::write::{self, Expected, ObjectHeaders, WriteCondition};
use crate::objects::{access, quota};
use crate::policy::{
    self, ContentLengthRange, FormFields, PostAuth, SizeViolation, SuccessActionStatus,
};
use crate::sniff::Sniffer;
use crate::state::AppState;

/// AWS's cap on the form data before the file (fields plus their part headers).
pub const MAX_PRE_DATA: usize = 20 * 1024;

/// Key characters kept literal in a `Location` URL.
const KEY_IN_URL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A file whose size `Content-Length` already puts this far past the maximum is refused before
/// its body is read. The margin covers part headers we can only estimate.
const EARLY_REJECT_MARGIN: u64 = 1024;

/// The most of a refused form's remaining body read (and discarded) before answering. Closing a
/// connection with unread data makes the kernel reset it, and a client that is still sending
/// (a browser posting an oversize file) then sees a network error instead of S3's answer; small
/// remainders are therefore read. Larger ones are not: the answer goes out and the connection
/// closes, as S3 does.
const DRAIN_MAX: u64 = 1024 * 1024;

pub async fn post_object(app: &AppState, req: &S3Request, body: Body) -> S3Result<Response> {
    let declared = req
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = read.clone();
    let stream = body.into_data_stream().map_ok(move |chunk| {
        counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        chunk
    });
    let pre_data = std::sync::Arc::new(PreData::default());
    let mut stream = PreDataLimit {
        inner: stream,
        rest: bytes::Bytes::new(),
        given: 0,
        paused: false,
        shared: pre_data.clone(),
    };
    let result = post_form(app, req, declared, &mut stream, &pre_data).await;
    if result.is_err()
        && let Some(total) = declared
    {
        let so_far = read.load(std::sync::atomic::Ordering::Relaxed);
        if total.saturating_sub(so_far) <= DRAIN_MAX {
            let drain = async {
                while let Some(Ok(_)) = futures_util::StreamExt::next(&mut stream).await {}
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
        }
    }
    result
}

/// Raw bytes handed to multer before the `file` part starts may exceed `MAX_PRE_DATA` by at most
/// this much (the piece in which the file's part header ends).
const PRE_DATA_PIECE: usize = 1024;

/// What the form parser and `PreDataLimit` share.
#[derive(Default)]
struct PreData {
    /// The `file` part has started: bytes pass through unchanged and uncounted.
    file_started: std::sync::atomic::AtomicBool,
    /// More than `MAX_PRE_DATA + PRE_DATA_PIECE` raw bytes came before the file.
    exceeded: std::sync::atomic::AtomicBool,
}

impl PreData {
    fn exceeded(&self) -> bool {
        self.exceeded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The cap on the form data before the file, counted on the raw bytes as they arrive. Until the
/// file starts, the body is handed to multer in pieces of `PRE_DATA_PIECE` bytes, so that a part
/// header that never ends, a huge field or thousands of tiny ones are refused once about 21 KiB
/// have been read, however large the chunks the client sends (multer would otherwise buffer, and
/// rescan, whatever it is given while looking for the end of a header). From the file on, chunks
/// pass through as they come, at full speed.
///
/// multer reads its stream until it is pending, so each piece is followed by one pending poll
/// that wakes the task at once: multer then parses what it has, and only asks for more when it
/// needs more.
struct PreDataLimit<S> {
    inner: S,
    /// The rest of the last chunk read, not yet handed on.
    rest: bytes::Bytes,
    /// Raw bytes handed on before the file.
    given: usize,
    /// A piece was just handed on: the next poll yields once (see `poll_next`).
    paused: bool,
    shared: std::sync::Arc<PreData>,
}

#[derive(Debug, thiserror::Error)]
#[error("form data before the file exceeds {MAX_PRE_DATA} bytes")]
struct PreDataTooLong;

impl<S> futures_util::Stream for PreDataLimit<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    type Item = Result<bytes::Bytes, axum::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::sync::atomic::Ordering::Relaxed;
        use std::task::Poll;
        let this = self.get_mut();
        // After the file starts, or once refused (a small remainder may still be drained).
        if this.shared.file_started.load(Relaxed) || this.shared.exceeded.load(Relaxed) {
            if !this.rest.is_empty() {
                return Poll::Ready(Some(Ok(std::mem::take(&mut this.rest))));
            }
            return std::pin::Pin::new(&mut this.inner).poll_next(cx);
        }
        // multer pulls chunks until the stream is pending: after each piece it is made to parse
        // what it has (the task is woken at once) before it gets another.
        if std::mem::take(&mut this.paused) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.rest.is_empty() {
            match std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(chunk)) => this.rest = chunk,
                other => return Poll::Ready(other),
            }
        }
        if this.given >= MAX_PRE_DATA + PRE_DATA_PIECE {
            this.shared.exceeded.store(true, Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(PreDataTooLong))));
        }
        let piece = this.rest.split_to(PRE_DATA_PIECE.min(this.rest.len()));
        this.given += piece.len();
        this.paused = true;
        Poll::Ready(Some(Ok(piece)))
    }
}

/// `declared`: the request's Content-Length, when it has one.
async fn post_form<S>(
    app: &AppState,
    req: &S3Request,
    declared: Option<u64>,
    body: &mut S,
    limit: &PreData,
) -> S3Result<Response>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + Unpin,
{
    let boundary = req
        .header(header::CONTENT_TYPE)
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            S3Error::code(S3ErrorCode::PreconditionFailed).with(
                "Condition",
                "Bucket POST must be of the enclosure-type multipart/form-data",
            )
        })?;
    let bucket = req.bucket().to_owned();
    let Some((record, _)) = app.bucket_with_grant(&bucket, "").await? else {
        return Err(S3Error::no_such_bucket(&bucket));
    };

    let mut form = multer::Multipart::new(body, boundary.clone());
    let (fields, file, pre_data) = read_form(&mut form, &boundary, limit).await?;
    let filename = file_name(&file)?;
    let signer = authorize(app, &fields, &record).await?;
    let fields = fields.expand_filename(filename.as_deref());
    let range = match &signer {
        Signer::Key { policy, sig, .. } => policy
            .check(&fields, &bucket, time::OffsetDateTime::now_utc(), *sig)
            .map_err(S3Error::from)?,
        Signer::Anonymous => ContentLengthRange::default(),
    };
    let key = fields.get("key").unwrap_or_default().to_owned();
    crate::telemetry::note(|t| t.key = Some(key.clone()));
    crate::names::validate_key(&key)?;

    // A body whose length proves the file cannot fit is answered before it is read. The same
    // estimate of the file's size is what a refusal reports as ProposedSize.
    let size_hint =
        declared.map(|total| total.saturating_sub(pre_data as u64 + boundary.len() as u64 + 8));
    if let Some(file_at_least) = size_hint
        && file_at_least > range.max() + EARLY_REJECT_MARGIN
    {
        return Err(S3Error::from(SizeViolation::TooLarge {
            proposed_size: file_at_least,
            max_size_allowed: range.max(),
        }));
    }

    // A form naming an upload link counts against it only if the link signed it; it must fit the
    // link (prefix, exact type), is create-only, and a revoked, expired or full link stops
    // working even for policies it signed earlier. The slot it takes is given back, once, if the
    // upload fails or the request is dropped.
    let link = match fields.get(crate::links::LINK_META_FIELD) {
        Some(id) => {
            let signed = match &signer {
                Signer::Key {
                    access_key, policy, ..
                } => Some((access_key.as_str(), policy.as_ref())),
                Signer::Anonymous => None,
            };
            let content_type = fields.get("content-type");
            Some(
                crate::links::link::check_form(app, id, &bucket, signed, &key, content_type)
                    .await?,
            )
        }
        None => None,
    };
    // Verification, opt-in three ways: the bucket's setting, the link's, or the form's field
    // (which a signed policy covers like any other: a policy that pins it to `on` cannot be
    // posted without it).
    let verify_type = record.verify_type
        || link.as_ref().is_some_and(|l| l.verify_type)
        || fields
            .get(crate::sniff::VERIFY_TYPE_FIELD)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("on"));
    let target = Target {
        bucket: &bucket,
        key: &key,
        range,
        owner: signer.owner(&record),
        size_hint,
        create_only: link.is_some(),
        origin: app
            .events
            .origin(crate::events::Kind::Post, signer.principal())
            .with_link(
                link.is_some()
                    .then(|| fields.get(crate::links::LINK_META_FIELD).map(str::to_owned))
                    .flatten(),
            )
            .with_slot(link.as_ref().and_then(|l| l.id())),
        quota: record.quota,
        link_id: link
            .as_ref()
            .and_then(|_| fields.get(crate::links::LINK_META_FIELD)),
        verify_type,
    };
    let result = store_upload(app, req, &fields, target, file).await;
    let Some(slot) = link else { return result };
    crate::telemetry::note(|t| t.link_upload = true);
    match result {
        Ok(res) => {
            slot.keep();
            Ok(res)
        }
        Err(e) => {
            slot.release().await;
            if e.s3_code() == S3ErrorCode::PreconditionFailed {
                return Err(S3Error::link_name_taken(&key));
            }
            Err(e)
        }
    }
}

/// Reads the form up to the `file` part: the fields before it, in order, the part itself and
/// the pre-data counted so far. A form without `key` or without `file` is refused here, as S3
/// does (missing `key` first).
async fn read_form<'r>(
    form: &mut multer::Multipart<'r>,
    boundary: &str,
    limit: &PreData,
) -> S3Result<(FormFields, multer::Field<'r>, usize)> {
    let mut fields = FormFields::new();
    let mut pre_data = 0usize;
    let file = loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break None,
            Err(e) => return Err(pre_data_error(limit, e)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        pre_data += part_overhead(boundary, field.headers());
        if pre_data > MAX_PRE_DATA {
            return Err(pre_data_exceeded());
        }
        if name.eq_ignore_ascii_case("file") {
            limit
                .file_started
                .store(true, std::sync::atomic::Ordering::Relaxed);
            break Some(field);
        }
        let value = read_field(field, &mut pre_data, limit).await?;
        fields.push(name, value);
    };
    if fields.get("key").is_none() {
        return Err(missing_key());
    }
    let Some(file) = file else {
        return Err(S3Error::code(
            S3ErrorCode::IncorrectNumberOfFilesInPostRequest,
        ));
    };
    Ok((fields, file, pre_data))
}

/// The file name of the `file` part's `Content-Disposition`, for `${filename}`.
fn file_name(file: &multer::Field<'_>) -> S3Result<Option<String>> {
    match file.headers().get(header::CONTENT_DISPOSITION) {
        Some(cd) => {
            policy::filename_from_content_disposition(&String::from_utf8_lossy(cd.as_bytes()))
                .map_err(|e| S3Error::invalid_argument(e.to_string(), "file", ""))
        }
        None => Ok(None),
    }
}

/// Fuzzing entry point (`fuzz/`, reached through `crate::fuzzing::post_form`): the part of
/// [`post_object`] that needs no server, on a body delivered in `chunks` as a network might
/// split it. The same pre-data cap and form reading, `${filename}`, the signature (checked
/// against `secret` whatever access key the form names), the policy decode and conditions at
/// `now`, key validation, the stored headers, `Content-MD5` and checksum fields, then the file,
/// read while it stays within the policy's maximum and `max_file`. Returns the file's size
/// when the form would be stored.
pub(crate) async fn check_form(
    content_type: &str,
    chunks: Vec<bytes::Bytes>,
    bucket: &str,
    secret: &str,
    now: time::OffsetDateTime,
    max_file: u64,
) -> S3Result<u64> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| S3Error::code(S3ErrorCode::PreconditionFailed))?;
    let shared = std::sync::Arc::new(PreData::default());
    let stream = PreDataLimit {
        inner: futures_util::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>)),
        rest: bytes::Bytes::new(),
        given: 0,
        paused: false,
        shared: shared.clone(),
    };
    let mut form = multer::Multipart::new(stream, boundary.clone());
    let (fields, mut file, _) = read_form(&mut form, &boundary, &shared).await?;
    let filename = file_name(&file)?;
    let auth = policy::parse_post_auth(&fields, "us-east-1").map_err(S3Error::from)?;
    let policy_b64 = fields.get("policy").unwrap_or_default();
    let expanded = fields.expand_filename(filename.as_deref());
    let range = match auth.sig_version() {
        None => ContentLengthRange::default(),
        Some(sig) => {
            if !auth.verify(secret, policy_b64) {
                return Err(S3Error::code(S3ErrorCode::SignatureDoesNotMatch));
            }
            let policy = policy::Policy::from_base64(policy_b64).map_err(S3Error::from)?;
            policy
                .check(&expanded, bucket, now, sig)
                .map_err(S3Error::from)?
        }
    };
    let fields = expanded;
    crate::names::validate_key(fields.get("key").unwrap_or_default())?;
    form_headers(&fields)?;
    form_checksum(&fields)?;
    write::parse_content_md5(fields.get("content-md5"))?;
    let _ = policy::redirect_location(
        fields.get("success_action_redirect").unwrap_or_default(),
        bucket,
        fields.get("key").unwrap_or_default(),
        "\"etag\"",
    );
    let mut size = 0u64;
    while let Some(chunk) = file.chunk().await.map_err(S3Error::from)? {
        size += chunk.len() as u64;
        if size > range.max().min(max_file) {
            return Err(S3Error::from(SizeViolation::TooLarge {
                proposed_size: size,
                max_size_allowed: range.max(),
            }));
        }
    }
    range.check(size).map_err(S3Error::from)?;
    Ok(size)
}

/// Where a POST upload goes, once the form is accepted.
struct Target<'a> {
    bucket: &'a str,
    key: &'a str,
    range: ContentLengthRange,
    owner: &'a str,
    /// The file's size as `Content-Length` suggests it, when known.
    size_hint: Option<u64>,
    /// Refuse (412) rather than replace an existing object: upload-link forms.
    create_only: bool,
    /// The event this upload makes (who signed, through which link).
    origin: crate::events::Origin,
    /// The bucket's quota, and the upload link the form counts against (its total).
    quota: crate::db::quota::Quota,
    link_id: Option<&'a str>,
    /// The file's bytes must match its declared Content-Type (`sniff::check`).
    verify_type: bool,
}

/// Streams the file into the store and commits it; answers as the form asked.
async fn store_upload(
    app: &AppState,
    req: &S3Request,
    fields: &FormFields,
    target: Target<'_>,
    file: multer::Field<'_>,
) -> S3Result<Response> {
    let range = target.range;
    let headers = form_headers(fields)?;
    write::check_reserved(&app.store, &headers)?;
    write::check_backend_key(&app.store, target.bucket, target.key)?;
    let algo = form_checksum(fields)?;
    // A `Content-MD5` field is checked as the PUT header is: malformed is InvalidDigest before
    // the file is read, a mismatch BadDigest after, with nothing stored.
    let expected = Expected {
        md5: write::parse_content_md5(fields.get("content-md5"))?,
        checksum: algo.clone(),
        ..Expected::default()
    };
    let hashes = write::Hashes::new(
        write::wants_md5(&app.store, expected.md5.as_ref()),
        false,
        algo.as_ref().map(|(a, _)| Checksummer::new(*a)),
    );
    let sniff = Sniffer::new(headers.content_type.as_deref(), target.verify_type);
    // The file's size is only bounded (by the body's length and the policy): the room held
    // under a quota is what may come, and the file is read against the room there is.
    let bound = target.size_hint.map_or(range.max(), |hint| {
        (hint + EARLY_REJECT_MARGIN).min(range.max())
    });
    let mut hold = quota::reserve_object(
        &app.db,
        target.quota,
        target.bucket,
        target.key,
        quota::Size::AtMost(bound),
        target.link_id,
    )
    .await?;
    let stream = file.map_err(S3Error::from);
    let ingested = write::receive(
        &app.store,
        stream,
        hold.limit(range.max()),
        app.config.inline_max_bytes,
        hashes,
        sniff,
        write::Dest::Object {
            bucket: target.bucket,
            key: target.key,
            headers: &headers,
            owner: target.owner,
        },
    )
    .await
    .map_err(|e| match e {
        write::IngestError::TooLarge { seen } => hold
            .passed(range.max())
            .map(S3Error::from)
            .unwrap_or_else(|| {
                S3Error::from(SizeViolation::TooLarge {
                    proposed_size: seen.max(target.size_hint.unwrap_or(0)),
                    max_size_allowed: range.max(),
                })
            }),
        other => S3Error::from_ingest(other, range.max()),
    })?;
    let checked = range
        .check(ingested.size)
        .map_err(S3Error::from)
        .and_then(|()| expected.verify(&ingested, None).map_err(S3Error::from));
    if let Err(e) = checked {
        ingested.staged.discard().await;
        return Err(e);
    }

    let etag = write::provisional_etag(&ingested.digests);
    let mut meta = headers.into_meta(ingested.size, etag.clone(), target.owner.to_owned());
    meta.detected_type = ingested.detected.map(str::to_owned);
    meta.checksum = algo
        .as_ref()
        .zip(ingested.digests.checksum.clone())
        .map(|((a, _), v)| (a.as_str().to_owned(), v));
    let (bucket, key) = (target.bucket, target.key);
    let detected = meta.detected_type.clone();
    let stored_checksum = meta.checksum.clone();
    // The stored version's ETag: a backend may store a large file in parts (`"...-N"`).
    let etag = write::commit_reserved(
        &app.db,
        &app.store,
        bucket,
        key,
        meta,
        ingested.staged,
        WriteCondition {
            if_none_match_any: target.create_only,
            ..WriteCondition::default()
        },
        &mut hold,
        target.origin,
    )
    .await?;
    let mut res = success(app, req, fields, bucket, key, &etag);
    // What the first bytes showed, for the page or app that posted the form.
    if let Some(v) = detected.and_then(|d| HeaderValue::from_str(&d).ok()) {
        res.headers_mut().insert("x-postgate-detected-type", v);
    }
    // As PutObject answers it (AWS adds the checksum headers to a POST's answer too).
    if let Some((algo, value)) = stored_checksum
        && let (Some(algo), Ok(v)) = (
            ChecksumAlgorithm::from_name(&algo),
            HeaderValue::from_str(&value),
        )
    {
        let h = res.headers_mut();
        h.insert(algo.header_name(), v);
        h.insert(
            "x-amz-checksum-type",
            HeaderValue::from_static("FULL_OBJECT"),
        );
    }
    Ok(res)
}

/// Who signed the form, with the policy they signed.
enum Signer {
    Anonymous,
    Key {
        access_key: String,
        policy: Arc<policy::Policy>,
        sig: policy::SigVersion,
    },
}

impl Signer {
    /// The event's `principalId`: the signing key, or `anonymous`.
    fn principal(&self) -> &str {
        match self {
            Signer::Key { access_key, .. } => access_key,
            Signer::Anonymous => "anonymous",
        }
    }

    fn owner<'a>(&'a self, bucket: &'a BucketRecord) -> &'a str {
        match self {
            Signer::Key { access_key, .. } => access_key,
            Signer::Anonymous => &bucket.owner,
        }
    }
}

/// At most this many cached policies (emptied when full: a handful are in use at a time).
const POLICIES_MAX: usize = 256;
/// Longer policies are decoded every time (they would make the cache's memory unbounded-ish).
const POLICY_CACHE_MAX_LEN: usize = 8 * 1024;

/// [`policy::Policy::from_base64`] through the server's cache of decoded policies
/// (`AppState::post_policies`), by their base64 text as sent: a presigned form is typically
/// reused for many uploads (every file a page sends), and decoding it (base64, JSON, conditions)
/// was the largest share of a small POST after the body's hashes. Only policies whose signature
/// verified get here, and the decode is a pure function of the text, so a hit answers exactly
/// what a fresh decode would; the signer's key, its grant and the time checks (`expiration`)
/// are checked on every request, before the cache is asked. Errors are not cached.
fn decode_policy(app: &AppState, b64: &str) -> S3Result<Arc<policy::Policy>> {
    let cacheable = b64.len() <= POLICY_CACHE_MAX_LEN;
    let cache = || app.post_policies.lock().unwrap_or_else(|e| e.into_inner());
    if cacheable && let Some(p) = cache().get(b64).cloned() {
        return Ok(p);
    }
    let parsed = Arc::new(policy::Policy::from_base64(b64).map_err(S3Error::from)?);
    if cacheable {
        let mut cache = cache();
        if cache.len() >= POLICIES_MAX {
            cache.clear();
        }
        cache.insert(b64.into(), parsed.clone());
    }
    Ok(parsed)
}

/// Signature (in AWS's order: fields, key, signature, then the policy document) and permission.
async fn authorize(app: &AppState, fields: &FormFields, bucket: &BucketRecord) -> S3Result<Signer> {
    let auth = policy::parse_post_auth(fields, &app.config.region).map_err(S3Error::from)?;
    let (access_key, sig) = match &auth {
        PostAuth::Anonymous => {
            if !access::may_post_anonymously(bucket) {
                return Err(S3Error::access_denied());
            }
            return Ok(Signer::Anonymous);
        }
        other => (
            other.access_key().unwrap_or_default().to_owned(),
            other.sig_version().unwrap_or(policy::SigVersion::V4),
        ),
    };
    crate::telemetry::note(|t| t.access_key = Some(access_key.clone()));
    let Some(key) = app.find_key(&access_key).await? else {
        return Err(
            S3Error::code(S3ErrorCode::InvalidAccessKeyId).with("AWSAccessKeyId", access_key)
        );
    };
    let policy_b64 = fields.get("policy").unwrap_or_default();
    if !auth.verify(&key.secret_key, policy_b64) {
        let provided = fields
            .get("x-amz-signature")
            .or_else(|| fields.get("signature"))
            .unwrap_or_default();
        return Err(S3Error::code(S3ErrorCode::SignatureDoesNotMatch)
            .with("AWSAccessKeyId", access_key)
            .with("StringToSign", policy_b64)
            .with("SignatureProvided", provided));
    }
    // The admin key and the bucket's owner may write; anyone else needs a grant.
    let who = access::Who {
        is_admin: key.is_admin,
        access_key: Some(&access_key),
    };
    let grant = match access::is_owner(who, bucket) {
        true => None,
        false => app
            .bucket_with_grant(&bucket.name, &access_key)
            .await?
            .and_then(|(_, g)| g),
    };
    if !access::may_write(who, bucket, grant) {
        return Err(S3Error::access_denied());
    }
    let policy = decode_policy(app, policy_b64)?;
    Ok(Signer::Key {
        access_key,
        policy,
        sig,
    })
}

/// Reads a field before `file`, counting it against the 20 KB pre-data cap.
async fn read_field(
    mut field: multer::Field<'_>,
    pre_data: &mut usize,
    limit: &PreData,
) -> S3Result<String> {
    let mut value = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| pre_data_error(limit, e))? {
        *pre_data += chunk.len();
        if *pre_data > MAX_PRE_DATA {
            return Err(pre_data_exceeded());
        }
        value.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&value).into_owned())
}

fn pre_data_exceeded() -> S3Error {
    S3Error::code(S3ErrorCode::MaxPostPreDataLengthExceeded)
        .with("MaxPostPreDataLengthBytes", MAX_PRE_DATA.to_string())
}

/// A form error before the file: the raw-byte cap, or what multer found.
fn pre_data_error(limit: &PreData, err: multer::Error) -> S3Error {
    if limit.exceeded() {
        pre_data_exceeded()
    } else {
        S3Error::from(err)
    }
}

/// Bytes a part takes besides its value: the boundary line, its headers and the line breaks.
fn part_overhead(boundary: &str, headers: &axum::http::HeaderMap) -> usize {
    let header_bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    // "--" boundary CRLF, headers, CRLF, value, CRLF
    2 + boundary.len() + 2 + header_bytes + 2 + 2
}

/// The stored headers of a POST upload: the same as PutObject's, from form fields (`acl` and
/// `tagging` are the form's names for `x-amz-acl` and `x-amz-tagging`).
fn form_headers(fields: &FormFields) -> S3Result<ObjectHeaders> {
    let tagging = match fields.get("tagging") {
        Some(xml) => Some(tagging_query(xml)?),
        None => None,
    };
    let mut headers = ObjectHeaders::read(
        |name| match name {
            "x-amz-acl" => fields.get("acl").map(str::to_owned),
            "x-amz-tagging" => None,
            other => fields.get(other).map(str::to_owned),
        },
        fields.iter().map(|(n, _)| n),
    )?;
    headers.tagging = tagging;
    Ok(headers)
}

/// `tagging` is a `<Tagging>` document in a POST form; it is stored as the query form
/// `x-amz-tagging` uses.
fn tagging_query(xml: &str) -> S3Result<String> {
    let doc: crate::xml::Tagging = crate::xml::parse(xml.as_bytes())?;
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for tag in &doc.tag_set.tags {
        out.append_pair(&tag.key, &tag.value);
    }
    Ok(out.finish())
}

/// The form's checksum fields, read as PutObject reads the same headers: an
/// `x-amz-checksum-<alg>` value is verified against the file (BadDigest, nothing stored), an
/// `x-amz-checksum-algorithm` alone has the file's checksum computed with that algorithm; either
/// way the checksum is stored and answered. Two value fields, or an algorithm other than the
/// value's, are InvalidRequest. Like every field, they must be covered by the policy.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html> ("As the same
/// PUT headers"), <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>
fn form_checksum(fields: &FormFields) -> S3Result<Option<(ChecksumAlgorithm, Option<String>)>> {
    let mut found = None;
    for (name, value) in fields.iter() {
        if let Some(algo) = ChecksumAlgorithm::from_header_name(&name.to_ascii_lowercase()) {
            crate::auth::checksum::validate_value(algo, value)?;
            if found.is_some() {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            found = Some((algo, Some(value.to_owned())));
        }
    }
    if let Some(name) = fields.get("x-amz-checksum-algorithm") {
        let algo = ChecksumAlgorithm::from_name(name).ok_or_else(|| {
            S3Error::invalid_argument(
                "Checksum algorithm provided is unsupported.",
                "x-amz-checksum-algorithm",
                name,
            )
        })?;
        match &found {
            None => found = Some((algo, None)),
            Some((value_algo, _)) if *value_algo == algo => {}
            Some((value_algo, _)) => {
                return Err(S3Error::new(
                    S3ErrorCode::InvalidRequest,
                    format!(
                        "Value for x-amz-checksum-algorithm ({}) does not match the \
                         x-amz-checksum-{} field.",
                        algo.as_str(),
                        value_algo.as_str().to_ascii_lowercase()
                    ),
                ));
            }
        }
    }
    Ok(found)
}

fn success(
    app: &AppState,
    req: &S3Request,
    fields: &FormFields,
    bucket: &str,
    key: &str,
    etag: &str,
) -> Response {
    let location = object_url(app, req, bucket, key);
    let redirect = fields
        .get("success_action_redirect")
        .or_else(|| fields.get("redirect"))
        .and_then(|r| policy::redirect_location(r, bucket, key, etag));
    let mut res = if let Some(to) = redirect {
        let mut res = empty(StatusCode::SEE_OTHER);
        if let Ok(v) = HeaderValue::from_str(&to) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        res
    } else {
        match SuccessActionStatus::parse(fields.get("success_action_status")) {
            SuccessActionStatus::Created => {
                let mut w = crate::xml::XmlWriter::new();
                w.open("PostResponse");
                w.elem("Location", &location);
                w.elem("Bucket", bucket);
                w.elem("Key", key);
                w.elem("ETag", etag);
                w.close("PostResponse");
                let mut res = (
                    StatusCode::CREATED,
                    [(header::CONTENT_TYPE, "application/xml")],
                    w.finish(),
                )
                    .into_response();
                set_location(&mut res, &location);
                res
            }
            SuccessActionStatus::Ok => {
                let mut res = empty(StatusCode::OK);
                set_location(&mut res, &location);
                res
            }
            SuccessActionStatus::NoContent => {
                let mut res = empty(StatusCode::NO_CONTENT);
                set_location(&mut res, &location);
                res
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

fn set_location(res: &mut Response, location: &str) {
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
}

/// The object's absolute URL, in the addressing style the request used, built as
/// `state::base_url` builds it (never from a client's `Host`). The one exception is a virtual-host
/// request without `--public-url`: its `Host` matched `bucket.DOMAIN` with the configured
/// domain and an existing bucket, so it names this server.
pub fn object_url(app: &AppState, req: &S3Request, bucket: &str, key: &str) -> String {
    let key = utf8_percent_encode(key, KEY_IN_URL);
    if req.virtual_host
        && app.config.public_url.is_none()
        && let Some(host) = req.header(header::HOST)
    {
        let scheme = crate::state::forwarded_proto(&req.headers).unwrap_or("http");
        return format!("{scheme}://{host}/{key}");
    }
    let base = crate::state::base_url(app, &req.headers);
    format!("{base}/{bucket}/{key}")
}

fn missing_key() -> S3Error {
    S3Error::invalid_argument(
        "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.",
        "key",
        "",
    )
}
