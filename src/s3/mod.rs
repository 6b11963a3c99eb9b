//! The S3 REST API: turns (method, host, path, query) into an `Endpoint`, authenticates the
//! caller, checks the endpoint's permission in one place, and hands over to a thin handler.
//!
//! Addressing: path-style `/{bucket}/{key}` always; virtual-host `{bucket}.{domain}` when
//! `--domain` is set. The `/-/` prefix is reserved for postgate's own pages and API (no bucket
//! can be named `-`).

mod authn;
mod bucket;
mod cors;
mod lifecycle;
mod list;
pub mod multipart;
mod notification;
mod object;
mod post_object;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use crate::db::buckets::BucketRecord;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::access;
use crate::state::AppState;
pub use authn::Caller;
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

/// Every operation postgate answers, named as AWS names them, with the parameters the request
/// carries for it besides the bucket and key (which `S3Request` holds), parsed once here so that
/// no handler reads the query again. `Endpoint::access` is each one's permission.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `partNumber` reads one part of the object.
    GetObject {
        part_number: Option<PartNumber>,
    },
    HeadObject {
        part_number: Option<PartNumber>,
    },
    DeleteObject,
    GetObjectAcl,
    PutObjectAcl,
    CreateMultipartUpload,
    UploadPart {
        upload_id: String,
        part_number: PartNumber,
    },
    UploadPartCopy {
        upload_id: String,
        part_number: PartNumber,
    },
    CompleteMultipartUpload {
        upload_id: String,
    },
    AbortMultipartUpload {
        upload_id: String,
    },
    ListParts {
        upload_id: String,
    },
    ListMultipartUploads,
    GetBucketCors,
    PutBucketCors,
    DeleteBucketCors,
    GetBucketNotificationConfiguration,
    PutBucketNotificationConfiguration,
    GetBucketLifecycleConfiguration,
    PutBucketLifecycleConfiguration,
    DeleteBucketLifecycle,
}

/// `partNumber` as the request sent it. It is checked (an integer from 1 to 10000) by the
/// handler, after authentication and the permission check, so that a caller who may not write
/// (or read) learns nothing more than AccessDenied, as before the endpoint carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartNumber(pub String);

impl PartNumber {
    pub fn get(&self) -> S3Result<u32> {
        self.0
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=crate::objects::multipart::MAX_PART_NUMBER).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Part number must be an integer between 1 and 10000, inclusive",
                    "partNumber",
                    &self.0,
                )
            })
    }
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
    /// The operation's name as AWS gives it: the `operation` label of `/-/metrics` and the
    /// access log.
    pub fn name(&self) -> &'static str {
        use Endpoint::*;
        match self {
            ListBuckets => "ListBuckets",
            CreateBucket => "CreateBucket",
            DeleteBucket => "DeleteBucket",
            HeadBucket => "HeadBucket",
            GetBucketLocation => "GetBucketLocation",
            GetBucketVersioning => "GetBucketVersioning",
            GetBucketAcl => "GetBucketAcl",
            PutBucketAcl => "PutBucketAcl",
            ListObjects => "ListObjects",
            ListObjectsV2 => "ListObjectsV2",
            DeleteObjects => "DeleteObjects",
            PutObject => "PutObject",
            CopyObject => "CopyObject",
            GetObject { .. } => "GetObject",
            HeadObject { .. } => "HeadObject",
            DeleteObject => "DeleteObject",
            GetObjectAcl => "GetObjectAcl",
            PutObjectAcl => "PutObjectAcl",
            CreateMultipartUpload => "CreateMultipartUpload",
            UploadPart { .. } => "UploadPart",
            UploadPartCopy { .. } => "UploadPartCopy",
            CompleteMultipartUpload { .. } => "CompleteMultipartUpload",
            AbortMultipartUpload { .. } => "AbortMultipartUpload",
            ListParts { .. } => "ListParts",
            ListMultipartUploads => "ListMultipartUploads",
            GetBucketCors => "GetBucketCors",
            PutBucketCors => "PutBucketCors",
            DeleteBucketCors => "DeleteBucketCors",
            GetBucketNotificationConfiguration => "GetBucketNotificationConfiguration",
            PutBucketNotificationConfiguration => "PutBucketNotificationConfiguration",
            GetBucketLifecycleConfiguration => "GetBucketLifecycleConfiguration",
            PutBucketLifecycleConfiguration => "PutBucketLifecycleConfiguration",
            DeleteBucketLifecycle => "DeleteBucketLifecycle",
        }
    }

    fn resolve(req: &S3Request) -> S3Result<Endpoint> {
        use Endpoint::*;
        let m = &req.method;
        let has = |p: &str| req.has_param(p);
        let upload_id = || req.param("uploadId").unwrap_or_default().to_owned();
        let part_number = || PartNumber(req.param("partNumber").unwrap_or_default().to_owned());
        let read_part = || req.param("partNumber").map(|n| PartNumber(n.to_owned()));
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
                Method::GET if has("notification") => GetBucketNotificationConfiguration,
                Method::PUT if has("notification") => PutBucketNotificationConfiguration,
                Method::GET if has("lifecycle") => GetBucketLifecycleConfiguration,
                Method::PUT if has("lifecycle") => PutBucketLifecycleConfiguration,
                Method::DELETE if has("lifecycle") => DeleteBucketLifecycle,
                _ if req.query.iter().any(|(k, _)| is_unsupported_subresource(k)) => {
                    return Err(not_implemented_operation(req));
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
                Method::POST if has("uploadId") => CompleteMultipartUpload {
                    upload_id: upload_id(),
                },
                Method::PUT if has("uploadId") && req.headers.contains_key("x-amz-copy-source") => {
                    UploadPartCopy {
                        upload_id: upload_id(),
                        part_number: part_number(),
                    }
                }
                Method::PUT if has("uploadId") => UploadPart {
                    upload_id: upload_id(),
                    part_number: part_number(),
                },
                Method::GET if has("uploadId") => ListParts {
                    upload_id: upload_id(),
                },
                Method::DELETE if has("uploadId") => AbortMultipartUpload {
                    upload_id: upload_id(),
                },
                // `partNumber` alone on a read selects one part of the object.
                Method::GET | Method::HEAD
                    if has("partNumber")
                        && !req
                            .query
                            .iter()
                            .any(|(k, _)| k != "partNumber" && is_unsupported_subresource(k)) =>
                {
                    if *m == Method::GET {
                        GetObject {
                            part_number: read_part(),
                        }
                    } else {
                        HeadObject {
                            part_number: read_part(),
                        }
                    }
                }
                _ if req.query.iter().any(|(k, _)| is_unsupported_subresource(k)) => {
                    return Err(not_implemented_operation(req));
                }
                Method::PUT if req.headers.contains_key("x-amz-copy-source") => CopyObject,
                Method::PUT => PutObject,
                Method::GET => GetObject { part_number: None },
                Method::HEAD => HeadObject { part_number: None },
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

    pub fn access(&self) -> Access {
        use Endpoint::*;
        match self {
            ListBuckets | CreateBucket => Access::Service,
            HeadBucket
            | GetBucketLocation
            | GetBucketVersioning
            | ListObjects
            | ListObjectsV2
            | GetObject { .. }
            | HeadObject { .. }
            | GetObjectAcl => Access::Read,
            ListParts { .. } | ListMultipartUploads => Access::Read,
            PutObject
            | CopyObject
            | DeleteObject
            | DeleteObjects
            | CreateMultipartUpload
            | UploadPart { .. }
            | UploadPartCopy { .. }
            | CompleteMultipartUpload { .. }
            | AbortMultipartUpload { .. } => Access::Write,
            DeleteBucket | GetBucketAcl | PutBucketAcl | PutObjectAcl | GetBucketCors
            | PutBucketCors | DeleteBucketCors => Access::Owner,
            GetBucketNotificationConfiguration | PutBucketNotificationConfiguration => {
                Access::Owner
            }
            GetBucketLifecycleConfiguration
            | PutBucketLifecycleConfiguration
            | DeleteBucketLifecycle => Access::Owner,
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

/// The AWS operation a request for a sub-resource postgate does not implement would be, so
/// that the 501 says what is missing (`None` for shapes S3 itself does not have).
fn unimplemented_operation(req: &S3Request) -> Option<&'static str> {
    let object = req.key.is_some();
    let verb = match req.method {
        Method::GET => 0,
        Method::PUT => 1,
        Method::DELETE => 2,
        Method::POST => 3,
        _ => return None,
    };
    // (sub-resource, on an object, [GET, PUT, DELETE, POST]).
    #[rustfmt::skip]
    const TABLE: &[(&str, bool, [&str; 4])] = &[
        ("policy", false, ["GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy", ""]),
        ("lifecycle", false, ["GetBucketLifecycleConfiguration", "PutBucketLifecycleConfiguration", "DeleteBucketLifecycle", ""]),
        ("website", false, ["GetBucketWebsite", "PutBucketWebsite", "DeleteBucketWebsite", ""]),
        ("logging", false, ["GetBucketLogging", "PutBucketLogging", "", ""]),
        ("notification", false, ["GetBucketNotificationConfiguration", "PutBucketNotificationConfiguration", "", ""]),
        ("replication", false, ["GetBucketReplication", "PutBucketReplication", "DeleteBucketReplication", ""]),
        ("encryption", false, ["GetBucketEncryption", "PutBucketEncryption", "DeleteBucketEncryption", ""]),
        ("tagging", false, ["GetBucketTagging", "PutBucketTagging", "DeleteBucketTagging", ""]),
        ("tagging", true, ["GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging", ""]),
        ("object-lock", false, ["GetObjectLockConfiguration", "PutObjectLockConfiguration", "", ""]),
        ("retention", true, ["GetObjectRetention", "PutObjectRetention", "", ""]),
        ("legal-hold", true, ["GetObjectLegalHold", "PutObjectLegalHold", "", ""]),
        ("versions", false, ["ListObjectVersions", "", "", ""]),
        ("restore", true, ["", "", "", "RestoreObject"]),
        ("select", true, ["", "", "", "SelectObjectContent"]),
        ("torrent", true, ["GetObjectTorrent", "", "", ""]),
        ("accelerate", false, ["GetBucketAccelerateConfiguration", "PutBucketAccelerateConfiguration", "", ""]),
        ("requestPayment", false, ["GetBucketRequestPayment", "PutBucketRequestPayment", "", ""]),
        ("analytics", false, ["GetBucketAnalyticsConfiguration", "PutBucketAnalyticsConfiguration", "DeleteBucketAnalyticsConfiguration", ""]),
        ("metrics", false, ["GetBucketMetricsConfiguration", "PutBucketMetricsConfiguration", "DeleteBucketMetricsConfiguration", ""]),
        ("inventory", false, ["GetBucketInventoryConfiguration", "PutBucketInventoryConfiguration", "DeleteBucketInventoryConfiguration", ""]),
        ("intelligent-tiering", false, ["GetBucketIntelligentTieringConfiguration", "PutBucketIntelligentTieringConfiguration", "DeleteBucketIntelligentTieringConfiguration", ""]),
        ("ownershipControls", false, ["GetBucketOwnershipControls", "PutBucketOwnershipControls", "DeleteBucketOwnershipControls", ""]),
        ("publicAccessBlock", false, ["GetPublicAccessBlock", "PutPublicAccessBlock", "DeletePublicAccessBlock", ""]),
        ("attributes", true, ["GetObjectAttributes", "", "", ""]),
    ];
    TABLE
        .iter()
        .find(|(name, on_object, _)| *on_object == object && req.has_param(name))
        .map(|(_, _, ops)| ops[verb])
        .filter(|op| !op.is_empty())
}

/// 501 NotImplemented naming the AWS operation when the request is one postgate lacks.
fn not_implemented_operation(req: &S3Request) -> S3Error {
    match unimplemented_operation(req) {
        Some(op) => S3Error::new(
            S3ErrorCode::NotImplemented,
            format!("{op} is not implemented by postgate."),
        ),
        None => not_implemented(),
    }
}

fn not_implemented() -> S3Error {
    S3Error::new(
        S3ErrorCode::NotImplemented,
        "A header you provided implies functionality that is not implemented",
    )
}

/// Splits host and path into bucket and key.
fn parse_request(
    domain: Option<&str>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> S3Result<S3Request> {
    let raw_path = uri.path();
    let host_bucket = domain.and_then(|domain| {
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
        let req = parse_request(
            app.config.domain.as_deref(),
            parts.method,
            parts.uri,
            headers,
        )?;
        let caller = authn::authenticate(app, &req).await?;
        return Ok((caller.key().cloned(), bytes));
    }
    let req = parse_request(
        app.config.domain.as_deref(),
        parts.method,
        parts.uri,
        headers,
    )?;
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
    let req = parse_request(
        app.config.domain.as_deref(),
        parts.method,
        parts.uri,
        parts.headers,
    )?;
    crate::telemetry::note(|t| {
        t.bucket = req.bucket.clone();
        t.key = req.key.clone();
    });
    if req.method == Method::OPTIONS {
        crate::telemetry::note(|t| t.operation = Some("PreflightRequest"));
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
        crate::telemetry::note(|t| t.operation = Some("PostObject"));
        return post_object::post_object(app, req, body).await;
    }
    let endpoint = Endpoint::resolve(req)?;
    crate::telemetry::note(|t| t.operation = Some(endpoint.name()));
    let caller = authn::authenticate(app, req).await?;
    let ctx = match endpoint.access() {
        Access::Service => None,
        access => Some(authorize(app, req, &caller, &endpoint, access).await?),
    };
    // The bucket demands that uploads' bytes match their declared type (PUT and parts here;
    // POST forms and multipart completion read the setting themselves).
    let verify_type = ctx.as_ref().is_some_and(|c| c.record.verify_type);
    use Endpoint::*;
    match endpoint {
        ListBuckets => bucket::list_buckets(app, req, &caller).await,
        CreateBucket => bucket::create_bucket(app, req, &caller, body).await,
        DeleteBucket => bucket::delete_bucket(app, req).await,
        HeadBucket => bucket::head_bucket(app, req).await,
        GetBucketLocation => bucket::get_bucket_location(app).await,
        GetBucketVersioning => bucket::get_bucket_versioning().await,
        GetBucketAcl => bucket::get_bucket_acl(app, req, ctx_of(ctx)?).await,
        PutBucketAcl => bucket::put_bucket_acl(app, req, &caller, body).await,
        ListObjects => list::list_objects(app, req, false).await,
        ListObjectsV2 => list::list_objects(app, req, true).await,
        DeleteObjects => {
            let can_read = ctx_of(ctx)?.can_read;
            object::delete_objects(app, req, &caller, body, can_read).await
        }
        PutObject => object::put_object(app, req, &caller, body, verify_type).await,
        CopyObject => object::copy_object(app, req, &caller, ctx_of(ctx)?).await,
        GetObject { part_number } => {
            let part = part_number.as_ref();
            object::get_object(app, req, &caller, ctx_of(ctx)?, true, part).await
        }
        HeadObject { part_number } => {
            let part = part_number.as_ref();
            object::get_object(app, req, &caller, ctx_of(ctx)?, false, part).await
        }
        DeleteObject => {
            let can_read = ctx_of(ctx)?.can_read;
            object::delete_object(app, req, &caller, can_read).await
        }
        GetObjectAcl => object::get_object_acl(app, req, ctx_of(ctx)?).await,
        PutObjectAcl => object::put_object_acl(app, req, &caller, body).await,
        CreateMultipartUpload => multipart::create_multipart_upload(app, req, &caller).await,
        UploadPart {
            upload_id,
            part_number,
        } => {
            let (id, n) = (&upload_id, &part_number);
            multipart::upload_part(app, req, &caller, body, id, n, verify_type).await
        }
        UploadPartCopy {
            upload_id,
            part_number,
        } => multipart::upload_part_copy(app, req, &caller, &upload_id, &part_number).await,
        CompleteMultipartUpload { upload_id } => {
            multipart::complete_multipart_upload(app, req, &caller, body, &upload_id).await
        }
        AbortMultipartUpload { upload_id } => {
            multipart::abort_multipart_upload(app, req, &upload_id).await
        }
        ListParts { upload_id } => multipart::list_parts(app, req, &upload_id).await,
        ListMultipartUploads => multipart::list_multipart_uploads(app, req).await,
        GetBucketCors => cors::get_bucket_cors(ctx_of(ctx)?).await,
        PutBucketCors => cors::put_bucket_cors(app, req, &caller, body).await,
        DeleteBucketCors => cors::delete_bucket_cors(app, req).await,
        GetBucketNotificationConfiguration => notification::get(app, req).await,
        PutBucketNotificationConfiguration => notification::put(app, req, &caller, body).await,
        GetBucketLifecycleConfiguration => lifecycle::get_bucket_lifecycle(ctx_of(ctx)?).await,
        PutBucketLifecycleConfiguration => {
            lifecycle::put_bucket_lifecycle(app, req, &caller, body).await
        }
        DeleteBucketLifecycle => lifecycle::delete_bucket_lifecycle(app, req).await,
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
    endpoint: &Endpoint,
    access: Access,
) -> S3Result<BucketCtx> {
    let bucket = req.bucket().to_owned();
    // No grant can matter to the admin key.
    let who = match caller.is_admin() {
        true => String::new(),
        false => caller.access_key().unwrap_or_default().to_owned(),
    };
    let object_key = match endpoint {
        Endpoint::GetObject { .. } => Some((req.key().to_owned(), true)),
        Endpoint::HeadObject { .. } => Some((req.key().to_owned(), false)),
        _ => None,
    };
    let (found, object) = match object_key {
        None => (app.bucket_with_grant(&bucket, &who).await?, None),
        Some((key, with_body)) => {
            let (found, object) = app.bucket_and_head(bucket, who, key, with_body).await?;
            (found, Some(object))
        }
    };
    let Some((record, grant)) = found else {
        return Err(S3Error::no_such_bucket(req.bucket()));
    };
    check_expected_owner(req.header("x-amz-expected-bucket-owner"), &record.owner)?;
    let who = access::Who {
        is_admin: caller.is_admin(),
        access_key: caller.access_key(),
    };
    let is_owner = access::is_owner(who, &record);
    let public_read = access::is_public_read(&record);
    let can_read = access::may_read(who, &record, grant);
    let can_write = access::may_write(who, &record, grant);
    let allowed = match access {
        Access::Service => true,
        // Anonymous object reads are decided per object (its ACL may be public-read).
        Access::Read
            if matches!(
                endpoint,
                Endpoint::GetObject { .. } | Endpoint::HeadObject { .. }
            ) =>
        {
            true
        }
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

/// `x-amz-expected-bucket-owner` (and `x-amz-source-expected-bucket-owner` for a copy's source):
/// a client's guard against writing to or reading from a bucket someone else owns. postgate's
/// owner ID is the owning key's access key id, as GetBucketAcl and ListBuckets show it; any other
/// value is 403 AccessDenied, as S3 answers a mismatch.
pub(crate) fn check_expected_owner(expected: Option<&str>, owner: &str) -> S3Result<()> {
    match expected {
        Some(expected) if expected.trim() != owner => Err(S3Error::access_denied()),
        _ => Ok(()),
    }
}

/// A response with an empty body and the given status.
pub fn empty(status: axum::http::StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// An XML response body.
pub fn xml_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Request headers in a test: (name, value) pairs.
    type Headers<'a> = &'a [(&'a str, &'a str)];

    fn resolve(method: &str, target: &str, headers: Headers) -> S3Result<Endpoint> {
        resolve_on(None, method, target, headers).map(|(_, e)| e)
    }

    fn resolve_on(
        domain: Option<&str>,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> S3Result<(S3Request, Endpoint)> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let req = parse_request(domain, method, target.parse().unwrap(), map)?;
        let endpoint = Endpoint::resolve(&req)?;
        Ok((req, endpoint))
    }

    /// The request shapes of AWS's API reference for each operation postgate implements
    /// (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_Operations_Amazon_Simple_Storage_Service.html>),
    /// path-style: method, path and query, and the header that tells a copy from a write.
    #[test]
    fn aws_request_shapes_resolve_to_their_operation() {
        use Endpoint::*;
        let copy = [("x-amz-copy-source", "/src/key")];
        let upload = || "abc".to_owned();
        let part = |n: &str| PartNumber(n.to_owned());
        let table: Vec<(&str, &str, Headers, Endpoint)> = vec![
            ("GET", "/", &[], ListBuckets),
            ("PUT", "/b", &[], CreateBucket),
            ("DELETE", "/b", &[], DeleteBucket),
            ("HEAD", "/b", &[], HeadBucket),
            ("GET", "/b?location", &[], GetBucketLocation),
            ("GET", "/b?versioning", &[], GetBucketVersioning),
            ("GET", "/b?acl", &[], GetBucketAcl),
            ("PUT", "/b?acl", &[], PutBucketAcl),
            ("GET", "/b", &[], ListObjects),
            ("GET", "/b?prefix=a&delimiter=/", &[], ListObjects),
            ("GET", "/b?list-type=2&prefix=a", &[], ListObjectsV2),
            ("POST", "/b?delete", &[], DeleteObjects),
            ("GET", "/b?uploads", &[], ListMultipartUploads),
            ("GET", "/b?cors", &[], GetBucketCors),
            ("PUT", "/b?cors", &[], PutBucketCors),
            ("DELETE", "/b?cors", &[], DeleteBucketCors),
            (
                "GET",
                "/b?notification",
                &[],
                GetBucketNotificationConfiguration,
            ),
            (
                "PUT",
                "/b?notification",
                &[],
                PutBucketNotificationConfiguration,
            ),
            ("GET", "/b?lifecycle", &[], GetBucketLifecycleConfiguration),
            ("PUT", "/b?lifecycle", &[], PutBucketLifecycleConfiguration),
            ("DELETE", "/b?lifecycle", &[], DeleteBucketLifecycle),
            ("PUT", "/b/k", &[], PutObject),
            ("PUT", "/b/k", &copy, CopyObject),
            ("GET", "/b/k", &[], GetObject { part_number: None }),
            ("HEAD", "/b/k", &[], HeadObject { part_number: None }),
            (
                "GET",
                "/b/k?partNumber=2",
                &[],
                GetObject {
                    part_number: Some(part("2")),
                },
            ),
            (
                "HEAD",
                "/b/k?partNumber=x",
                &[],
                HeadObject {
                    part_number: Some(part("x")),
                },
            ),
            ("DELETE", "/b/k", &[], DeleteObject),
            ("GET", "/b/k?acl", &[], GetObjectAcl),
            ("PUT", "/b/k?acl", &[], PutObjectAcl),
            ("POST", "/b/k?uploads", &[], CreateMultipartUpload),
            (
                "PUT",
                "/b/k?partNumber=2&uploadId=abc",
                &[],
                UploadPart {
                    upload_id: upload(),
                    part_number: part("2"),
                },
            ),
            (
                "PUT",
                "/b/k?partNumber=3&uploadId=abc",
                &copy,
                UploadPartCopy {
                    upload_id: upload(),
                    part_number: part("3"),
                },
            ),
            (
                "POST",
                "/b/k?uploadId=abc",
                &[],
                CompleteMultipartUpload {
                    upload_id: upload(),
                },
            ),
            (
                "DELETE",
                "/b/k?uploadId=abc",
                &[],
                AbortMultipartUpload {
                    upload_id: upload(),
                },
            ),
            (
                "GET",
                "/b/k?uploadId=abc&max-parts=10",
                &[],
                ListParts {
                    upload_id: upload(),
                },
            ),
        ];
        for (method, target, headers, want) in table {
            let got = resolve(method, target, headers)
                .unwrap_or_else(|e| panic!("{method} {target}: {e}"));
            assert_eq!(got, want, "{method} {target}");
        }
    }

    #[test]
    fn each_operation_carries_its_permission() {
        use Endpoint::*;
        let id = || "abc".to_owned();
        for (endpoint, access) in [
            (ListBuckets, Access::Service),
            (CreateBucket, Access::Service),
            (GetObject { part_number: None }, Access::Read),
            (ListParts { upload_id: id() }, Access::Read),
            (PutObject, Access::Write),
            (AbortMultipartUpload { upload_id: id() }, Access::Write),
            (PutBucketCors, Access::Owner),
            (PutBucketNotificationConfiguration, Access::Owner),
            (GetBucketNotificationConfiguration, Access::Owner),
            (PutBucketLifecycleConfiguration, Access::Owner),
            (GetBucketLifecycleConfiguration, Access::Owner),
            (DeleteBucketLifecycle, Access::Owner),
            (PutObjectAcl, Access::Owner),
            (DeleteBucket, Access::Owner),
        ] {
            assert_eq!(endpoint.access(), access, "{endpoint:?}");
        }
    }

    #[test]
    fn part_numbers_are_checked_by_the_handler() {
        assert_eq!(PartNumber("10000".into()).get().unwrap(), 10000);
        for bad in ["0", "10001", "", "x"] {
            let err = PartNumber(bad.into()).get().unwrap_err();
            assert_eq!(err.s3_code(), S3ErrorCode::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn shapes_postgate_does_not_implement_are_refused() {
        let code = |m, t| resolve(m, t, &[]).unwrap_err().s3_code();
        assert_eq!(code("GET", "/b?policy"), S3ErrorCode::NotImplemented);
        assert_eq!(code("PUT", "/b/k?tagging"), S3ErrorCode::NotImplemented);
        assert_eq!(code("POST", "/b/k"), S3ErrorCode::MethodNotAllowed);
        assert_eq!(code("PATCH", "/b/k"), S3ErrorCode::NotImplemented);
        assert_eq!(
            code("PUT", "/b/k?partNumber=1"),
            S3ErrorCode::NotImplemented
        );
        let message = |m, t| resolve(m, t, &[]).unwrap_err().message().to_owned();
        assert!(message("DELETE", "/b?policy").contains("DeleteBucketPolicy"));
        assert!(message("GET", "/b/k?partNumber=1&tagging").contains("GetObjectTagging"));
        assert!(message("PUT", "/b?tagging").contains("PutBucketTagging"));
    }

    #[test]
    fn virtual_host_requests_take_the_bucket_from_the_host() {
        let host = [("host", "photos.s3.example.com:9000")];
        let (req, endpoint) =
            resolve_on(Some("s3.example.com"), "GET", "/a%20b.jpg", &host).unwrap();
        assert_eq!((req.bucket(), req.key()), ("photos", "a b.jpg"));
        assert_eq!(endpoint, Endpoint::GetObject { part_number: None });
    }
}
