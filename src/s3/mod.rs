//! The S3 REST API: turns (method, host, path, query) into an `Endpoint`, authenticates the
//! caller, checks the endpoint's permission in one place, and hands over to a thin handler.
//!
//! Addressing: path-style `/{bucket}/{key}` always; virtual-host `{bucket}.{domain}` when
//! `--domain` is set. The `/-/` prefix is reserved for postgate's own pages and API (no bucket
//! can be named `-`).

mod authn;
mod bucket;
mod cors;
mod list;
pub mod multipart;
mod object;
mod post_object;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use crate::app::AppState;
use crate::db::buckets::{BucketRecord, Perm};
use crate::error::{S3Error, S3ErrorCode, S3Result};
pub use authn::Caller;
pub use multipart::expire_uploads;
/// Reached by the fuzz targets through [`crate::fuzzing`].
pub(crate) use {multipart::CompleteMultipartUpload, object::parse_range, post_object::check_form};

/// A parsed S3 request, before authentication.
pub struct S3Request {
    pub method: Method,
    pub uri: axum::http::Uri,
    pub headers: HeaderMap,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// Decoded query parameters in order (`+` is not a space in S3 query strings).
    pub query: Vec<(String, String)>,
    /// The resource as SigV2 signs it: `/bucket/key` with the key as sent.
    pub v2_resource: String,
    /// Whether the bucket came from the Host header (`bucket.DOMAIN`) rather than the path.
    pub virtual_host: bool,
}

impl S3Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    pub fn header(&self, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn bucket(&self) -> &str {
        self.bucket.as_deref().unwrap_or_default()
    }

    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }
}

/// Every operation postgate answers, named as AWS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ListBuckets,
    CreateBucket,
    DeleteBucket,
    HeadBucket,
    GetBucketLocation,
    GetBucketVersioning,
    GetBucketAcl,
    PutBucketAcl,
    ListObjects,
    ListObjectsV2,
    DeleteObjects,
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    DeleteObject,
    GetObjectAcl,
    PutObjectAcl,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
}

/// What the caller must be allowed to do on the bucket for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No bucket involved (ListBuckets) or checked by the handler (CreateBucket).
    Service,
    Read,
    Write,
    /// Bucket-level configuration: owner or admin only.
    Owner,
}

impl Endpoint {
    fn resolve(req: &S3Request) -> S3Result<Endpoint> {
        use Endpoint::*;
        let m = &req.method;
        let has = |p: &str| req.has_param(p);
        let ep = match (&req.bucket, &req.key) {
            (None, _) if *m == Method::GET => ListBuckets,
            (None, _) => return Err(not_implemented()),
            (Some(_), None) => match *m {
                Method::GET if has("location") => GetBucketLocation,
                Method::GET if has("versioning") => GetBucketVersioning,
                Method::GET if has("acl") => GetBucketAcl,
                Method::PUT if has("acl") => PutBucketAcl,
                Method::POST if has("delete") => DeleteObjects,
                Method::GET if has("uploads") => ListMultipartUploads,
                Method::GET if has("cors") => GetBucketCors,
                Method::PUT if has("cors") => PutBucketCors,
                Method::DELETE if has("cors") => DeleteBucketCors,
                _ if req.query.iter().any(|(k, _)| is_unsupported_subresource(k)) => {
                    return Err(not_implemented());
                }
                Method::GET if req.param("list-type") == Some("2") => ListObjectsV2,
                Method::GET => ListObjects,
                Method::PUT => CreateBucket,
                Method::DELETE => DeleteBucket,
                Method::HEAD => HeadBucket,
                _ => return Err(not_implemented()),
            },
            (Some(_), Some(_)) => match *m {
                Method::GET if has("acl") => GetObjectAcl,
                Method::PUT if has("acl") => PutObjectAcl,
                Method::POST if has("uploads") => CreateMultipartUpload,
                Method::POST if has("uploadId") => CompleteMultipartUpload,
                Method::PUT if has("uploadId") && req.headers.contains_key("x-amz-copy-source") => {
                    UploadPartCopy
                }
                Method::PUT if has("uploadId") => UploadPart,
                Method::GET if has("uploadId") => ListParts,
                Method::DELETE if has("uploadId") => AbortMultipartUpload,
                _ if req.query.iter().any(|(k, _)| is_unsupported_subresource(k)) => {
                    return Err(not_implemented());
                }
                Method::PUT if req.headers.contains_key("x-amz-copy-source") => CopyObject,
                Method::PUT => PutObject,
                Method::GET => GetObject,
                Method::HEAD => HeadObject,
                Method::DELETE => DeleteObject,
                Method::POST => {
                    return Err(S3Error::code(S3ErrorCode::MethodNotAllowed)
                        .with("Method", "POST")
                        .with("ResourceType", "OBJECT"));
                }
                _ => return Err(not_implemented()),
            },
        };
        Ok(ep)
    }

    pub fn access(self) -> Access {
        use Endpoint::*;
        match self {
            ListBuckets | CreateBucket => Access::Service,
            HeadBucket | GetBucketLocation | GetBucketVersioning | ListObjects | ListObjectsV2
            | GetObject | HeadObject | GetObjectAcl => Access::Read,
            ListParts | ListMultipartUploads => Access::Read,
            PutObject
            | CopyObject
            | DeleteObject
            | DeleteObjects
            | CreateMultipartUpload
            | UploadPart
            | UploadPartCopy
            | CompleteMultipartUpload
            | AbortMultipartUpload => Access::Write,
            DeleteBucket | GetBucketAcl | PutBucketAcl | PutObjectAcl | GetBucketCors
            | PutBucketCors | DeleteBucketCors => Access::Owner,
        }
    }
}

/// Sub-resources S3 has that postgate does not implement: answered 501 rather than mistaken for
/// a plain GET/PUT of the bucket or object.
fn is_unsupported_subresource(name: &str) -> bool {
    matches!(
        name,
        "policy"
            | "lifecycle"
            | "website"
            | "logging"
            | "notification"
            | "replication"
            | "encryption"
            | "tagging"
            | "object-lock"
            | "retention"
            | "legal-hold"
            | "versions"
            | "uploads"
            | "uploadId"
            | "partNumber"
            | "restore"
            | "select"
            | "torrent"
            | "accelerate"
            | "requestPayment"
            | "analytics"
            | "metrics"
            | "inventory"
            | "intelligent-tiering"
            | "ownershipControls"
            | "publicAccessBlock"
            | "attributes"
    )
}

fn not_implemented() -> S3Error {
    S3Error::new(
        S3ErrorCode::NotImplemented,
        "A header you provided implies functionality that is not implemented",
    )
}

/// Splits host and path into bucket and key.
fn parse_request(
    app: &AppState,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> S3Result<S3Request> {
    let raw_path = uri.path();
    let host_bucket = app.config.domain.as_deref().and_then(|domain| {
        let host = headers.get(header::HOST)?.to_str().ok()?;
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let bucket = host.strip_suffix(domain)?.strip_suffix('.')?;
        (!bucket.is_empty()).then(|| bucket.to_owned())
    });
    let decode = |s: &str| -> S3Result<String> {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| S3Error::new(S3ErrorCode::InvalidArgument, "URI is not valid UTF-8"))
    };
    let virtual_host = host_bucket.is_some();
    let (bucket, key, v2_resource) = match host_bucket {
        Some(bucket) => {
            let key_raw = raw_path.strip_prefix('/').unwrap_or(raw_path);
            let key = (!key_raw.is_empty()).then(|| decode(key_raw)).transpose()?;
            let resource = format!("/{bucket}/{key_raw}");
            (Some(bucket), key, resource)
        }
        None => {
            let rest = raw_path.strip_prefix('/').unwrap_or(raw_path);
            match rest.split_once('/') {
                None if rest.is_empty() => (None, None, "/".to_owned()),
                None => (Some(decode(rest)?), None, format!("/{rest}")),
                Some((b, k)) => {
                    let key = (!k.is_empty()).then(|| decode(k)).transpose()?;
                    let resource = if k.is_empty() {
                        format!("/{b}/")
                    } else {
                        format!("/{b}/{k}")
                    };
                    (Some(decode(b)?), key, resource)
                }
            }
        }
    };
    let query = parse_query(uri.query().unwrap_or(""));
    Ok(S3Request {
        method,
        uri,
        headers,
        bucket,
        key,
        query,
        v2_resource,
        virtual_host,
    })
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            )
        })
        .collect()
}

/// Authenticates a non-S3 request (the JSON API) the way S3 requests are, and reads its body
/// (up to `limit` bytes) checking the signed payload hash. Anonymous requests give `None`.
pub async fn authenticate_request(
    app: &AppState,
    parts: axum::http::request::Parts,
    body: Body,
    limit: usize,
) -> S3Result<(Option<crate::db::keys::KeyRecord>, bytes::Bytes)> {
    let mut headers = parts.headers;
    let generic_v4 = !headers.contains_key("x-amz-content-sha256")
        && headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"AWS4-"));
    if generic_v4 {
        // Signers for services other than S3 sign the payload's hash without sending it as
        // `x-amz-content-sha256`; supply it so the canonical request is the one they signed.
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| S3Error::code(S3ErrorCode::IncompleteBody))?;
        let hash = crate::auth::sigv4::hex_sha256(&bytes);
        if let Ok(v) = axum::http::HeaderValue::from_str(&hash) {
            headers.insert("x-amz-content-sha256", v);
        }
        let req = parse_request(app, parts.method, parts.uri, headers)?;
        let caller = authn::authenticate(app, &req).await?;
        return Ok((caller.key().cloned(), bytes));
    }
    let req = parse_request(app, parts.method, parts.uri, headers)?;
    let caller = authn::authenticate(app, &req).await?;
    let bytes = caller.read_small_body(&req, body, limit).await?;
    Ok((caller.key().cloned(), bytes))
}

/// The bucket as the permission check needs it.
pub struct BucketCtx {
    pub record: BucketRecord,
    /// Whether the caller may read / write, after owner, admin, grant and ACL rules.
    pub can_read: bool,
    pub can_write: bool,
    pub is_owner: bool,
    /// For GetObject and HeadObject: the object's row, read in the same database round trip as
    /// the bucket's (`None` for other operations; `Some(None)` when the key does not exist).
    pub object: Option<Option<crate::db::objects::ObjectRecord>>,
}

/// The axum fallback: every S3 request comes through here.
pub async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    match handle(app, req).await {
        Ok(res) => res,
        Err(err) => err.into_response(),
    }
}

async fn handle(app: AppState, req: Request) -> S3Result<Response> {
    let (parts, body) = req.into_parts();
    if parts.uri.path().starts_with("/-/") {
        return Err(S3Error::code(S3ErrorCode::NoSuchKey));
    }
    let req = parse_request(&app, parts.method, parts.uri, parts.headers)?;
    if req.method == Method::OPTIONS {
        return cors::preflight(&app, &req).await;
    }
    let mut res = match route(&app, &req, body).await {
        Ok(res) => res,
        Err(err) => err.into_response(),
    };
    cors::apply(&app, &req, &mut res).await;
    Ok(res)
}

async fn route(app: &AppState, req: &S3Request, body: Body) -> S3Result<Response> {
    if let Some(bucket) = &req.bucket {
        if req.method != Method::PUT || req.key.is_some() {
            // Only CreateBucket reports InvalidBucketName; elsewhere a bad name cannot exist.
            if crate::names::validate_bucket(bucket).is_err() {
                return Err(S3Error::no_such_bucket(bucket));
            }
        } else {
            crate::names::validate_bucket(bucket)?;
        }
    }
    if let Some(key) = &req.key {
        crate::names::validate_key(key)?;
    }
    // Browser POST uploads carry their authentication in the form, not in headers.
    if req.method == Method::POST
        && req.bucket.is_some()
        && req.key.is_none()
        && req.query.is_empty()
    {
        return post_object::post_object(app, req, body).await;
    }
    let endpoint = Endpoint::resolve(req)?;
    let caller = authn::authenticate(app, req).await?;
    let ctx = match endpoint.access() {
        Access::Service => None,
        access => Some(authorize(app, req, &caller, endpoint, access).await?),
    };
    use Endpoint::*;
    match endpoint {
        ListBuckets => bucket::list_buckets(app, &caller).await,
        CreateBucket => bucket::create_bucket(app, req, &caller, body).await,
        DeleteBucket => bucket::delete_bucket(app, req).await,
        HeadBucket => bucket::head_bucket(app, req).await,
        GetBucketLocation => bucket::get_bucket_location(app).await,
        GetBucketVersioning => bucket::get_bucket_versioning().await,
        GetBucketAcl => bucket::get_bucket_acl(app, req, ctx_of(ctx)?).await,
        PutBucketAcl => bucket::put_bucket_acl(app, req, &caller, body).await,
        ListObjects => list::list_objects(app, req, false).await,
        ListObjectsV2 => list::list_objects(app, req, true).await,
        DeleteObjects => object::delete_objects(app, req, &caller, body).await,
        PutObject => object::put_object(app, req, &caller, body).await,
        CopyObject => object::copy_object(app, req, &caller, ctx_of(ctx)?).await,
        GetObject => object::get_object(app, req, &caller, ctx_of(ctx)?, true).await,
        HeadObject => object::get_object(app, req, &caller, ctx_of(ctx)?, false).await,
        DeleteObject => object::delete_object(app, req).await,
        GetObjectAcl => object::get_object_acl(app, req, ctx_of(ctx)?).await,
        PutObjectAcl => object::put_object_acl(app, req, &caller, body).await,
        CreateMultipartUpload => multipart::create_multipart_upload(app, req, &caller).await,
        UploadPart => multipart::upload_part(app, req, &caller, body).await,
        UploadPartCopy => multipart::upload_part_copy(app, req, &caller).await,
        CompleteMultipartUpload => {
            multipart::complete_multipart_upload(app, req, &caller, body).await
        }
        AbortMultipartUpload => multipart::abort_multipart_upload(app, req).await,
        ListParts => multipart::list_parts(app, req).await,
        ListMultipartUploads => multipart::list_multipart_uploads(app, req).await,
        GetBucketCors => cors::get_bucket_cors(ctx_of(ctx)?).await,
        PutBucketCors => cors::put_bucket_cors(app, req, &caller, body).await,
        DeleteBucketCors => cors::delete_bucket_cors(app, req).await,
    }
}

fn ctx_of(ctx: Option<BucketCtx>) -> S3Result<BucketCtx> {
    ctx.ok_or_else(|| S3Error::internal("bucket context missing"))
}

/// The one permission check: admin and owner may do everything; other keys what `bucket allow`
/// granted; anonymous callers only reads of public-read buckets and objects (checked again per
/// object by the GET handler, since an object's own ACL can make it public).
async fn authorize(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    endpoint: Endpoint,
    access: Access,
) -> S3Result<BucketCtx> {
    let bucket = req.bucket().to_owned();
    // No grant can matter to the admin key.
    let who = match caller.is_admin() {
        true => String::new(),
        false => caller.access_key().unwrap_or_default().to_owned(),
    };
    let object_key = match endpoint {
        Endpoint::GetObject => Some((req.key().to_owned(), true)),
        Endpoint::HeadObject => Some((req.key().to_owned(), false)),
        _ => None,
    };
    let (found, object) = match object_key {
        None => (app.bucket_with_grant(&bucket, &who).await?, None),
        // An object read needs its row anyway: one trip to the read pool for both.
        Some((key, with_body)) => {
            app.db
                .read(move |c| {
                    let found = crate::db::buckets::get_with_grant(c, &bucket, &who)?;
                    let object = match found {
                        Some(_) => Some(crate::db::objects::get(c, &bucket, &key, with_body)?),
                        None => None,
                    };
                    Ok((found, object))
                })
                .await?
        }
    };
    let Some((record, grant)) = found else {
        return Err(S3Error::no_such_bucket(req.bucket()));
    };
    let is_owner = caller.is_admin() || caller.access_key() == Some(record.owner.as_str());
    let public_read = record.acl == "public-read" || record.acl == "public-read-write";
    let can_read = is_owner || grant.is_some_and(Perm::can_read) || public_read;
    let can_write = is_owner || grant.is_some_and(Perm::can_write);
    let allowed = match access {
        Access::Service => true,
        // Anonymous object reads are decided per object (its ACL may be public-read).
        Access::Read if matches!(endpoint, Endpoint::GetObject | Endpoint::HeadObject) => true,
        Access::Read => can_read && (caller.is_authenticated() || public_read),
        Access::Write => can_write,
        Access::Owner => is_owner,
    };
    if !allowed {
        return Err(S3Error::access_denied());
    }
    Ok(BucketCtx {
        record,
        can_read,
        can_write,
        is_owner,
        object,
    })
}

/// A response with an empty body and the given status.
pub fn empty(status: axum::http::StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// An XML response body.
pub fn xml_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// Canned ACLs postgate stores. `x-amz-acl` values outside this list are refused.
pub fn parse_canned_acl(value: Option<&str>) -> S3Result<String> {
    match value {
        None => Ok("private".into()),
        Some(v @ ("private" | "public-read" | "public-read-write")) => Ok(v.to_owned()),
        Some(
            "authenticated-read"
            | "aws-exec-read"
            | "bucket-owner-read"
            | "bucket-owner-full-control",
        ) => Ok("private".into()),
        Some(other) => Err(S3Error::invalid_argument(
            "Invalid canned ACL",
            "x-amz-acl",
            other,
        )),
    }
}

/// ISO 8601 with milliseconds, as S3 lists timestamps.
pub fn iso8601(millis: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(f).unwrap_or_default()
}

/// RFC 7231 date, as `Last-Modified` carries it.
pub fn http_date(millis: i64) -> String {
    let secs = (millis / 1000).max(0) as u64;
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}
