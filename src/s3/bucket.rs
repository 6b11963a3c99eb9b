//! Bucket operations: ListBuckets, CreateBucket, DeleteBucket, HeadBucket, GetBucketLocation,
//! GetBucketVersioning and the bucket ACL.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_Operations_Amazon_Simple_Storage_Service.html>

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

use super::{BucketCtx, Caller, S3Request, empty, iso8601, xml_response};
use crate::db::buckets::{self, Created, Deleted};
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::state::AppState;
use crate::xml::{self, XmlWriter};

/// Request bodies of bucket-level calls are small XML documents.
const MAX_CONFIG_BODY: usize = 64 * 1024;

/// The page size S3 applies when the request names none (and the most it accepts).
const MAX_BUCKETS: usize = 10_000;

/// ListBuckets, with the 2024 parameters: `prefix`, `max-buckets` (1 to 10000), an opaque
/// `continuation-token` (base64url of the last name of the previous page; names are listed in
/// order, so the next page starts after it) and `bucket-region` (every bucket lives in the one
/// region postgate serves, so another region lists nothing).
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListBuckets.html>
pub async fn list_buckets(app: &AppState, req: &S3Request, caller: &Caller) -> S3Result<Response> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
    let Some(key) = caller.access_key().map(str::to_owned) else {
        return Err(S3Error::access_denied());
    };
    let max = match req.param("max-buckets") {
        None => MAX_BUCKETS,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_BUCKETS).contains(n))
            .ok_or_else(|| {
                S3Error::invalid_argument(
                    "Argument max-buckets must be an integer between 1 and 10000",
                    "max-buckets",
                    v,
                )
            })?,
    };
    let after = match req.param("continuation-token").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            TOKEN
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    S3Error::invalid_argument(
                        "The continuation token provided is incorrect",
                        "continuation-token",
                        t,
                    )
                })?,
        ),
    };
    let prefix = req.param("prefix").unwrap_or_default();
    let region = &app.config.region;
    let other_region = req.param("bucket-region").is_some_and(|r| r != region);
    let admin = caller.is_admin();
    let list = app
        .db
        .read(move |c| {
            if admin {
                buckets::list(c)
            } else {
                buckets::list_visible(c, &key)
            }
        })
        .await?;
    let mut matching = list
        .iter()
        .filter(|b| !other_region && b.name.starts_with(prefix))
        .filter(|b| after.as_deref().is_none_or(|a| b.name.as_str() > a));
    let page: Vec<_> = matching.by_ref().take(max).collect();
    let next = match (matching.next(), page.last()) {
        (Some(_), Some(last)) => Some(TOKEN.encode(&last.name)),
        _ => None,
    };
    let mut w = XmlWriter::new();
    w.root("ListAllMyBucketsResult");
    w.open("Owner");
    w.elem("ID", caller.access_key().unwrap_or_default());
    w.elem("DisplayName", caller.name());
    w.close("Owner");
    w.open("Buckets");
    for b in &page {
        w.open("Bucket");
        w.elem("Name", &b.name);
        w.elem("CreationDate", &iso8601(b.created_at));
        w.elem("BucketRegion", region);
        w.close("Bucket");
    }
    w.close("Buckets");
    if let Some(token) = &next {
        w.elem("ContinuationToken", token);
    }
    if req.has_param("prefix") {
        w.elem("Prefix", prefix);
    }
    w.close("ListAllMyBucketsResult");
    Ok(xml_response(w.finish()))
}

pub async fn create_bucket(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let Some(owner) = caller.access_key().map(str::to_owned) else {
        return Err(S3Error::access_denied());
    };
    let body = caller.read_small_body(req, body, MAX_CONFIG_BODY).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let _: xml::CreateBucketConfiguration = xml::parse(&body)?;
    }
    refuse_unsupported_bucket_headers(req)?;
    let acl = crate::objects::write::parse_canned_acl(req.header("x-amz-acl"))?;
    let created = app.create_bucket(req.bucket(), &owner, &acl).await?;
    match created {
        Created::Created => {
            let mut res = empty(StatusCode::OK);
            if let Ok(v) = format!("/{}", req.bucket()).parse() {
                res.headers_mut().insert("location", v);
            }
            Ok(res)
        }
        Created::AlreadyOwnedByYou => {
            Err(S3Error::code(S3ErrorCode::BucketAlreadyOwnedByYou)
                .with("BucketName", req.bucket()))
        }
        Created::AlreadyExists => {
            Err(S3Error::code(S3ErrorCode::BucketAlreadyExists).with("BucketName", req.bucket()))
        }
    }
}

/// CreateBucket's headers for features postgate lacks. `x-amz-bucket-object-lock-enabled: true`
/// asks for a bucket whose objects cannot be deleted or overwritten: postgate has no Object Lock,
/// so that bucket is refused with 501 NotImplemented (S3's code for "a header you provided
/// implies functionality that is not implemented") rather than created without the protection.
/// `x-amz-object-ownership`: the three values S3 defines are accepted; postgate has one model
/// whatever the value (the bucket's owner controls access, canned ACLs apply as sent), which
/// gives no one more access than the client asked for. Any other value is 400 InvalidArgument.
/// `x-amz-grant-*` are accepted and ignored, as on PutObject: only canned ACLs exist, and an
/// ignored grant opens nothing.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html>,
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>
fn refuse_unsupported_bucket_headers(req: &S3Request) -> S3Result<()> {
    const LOCK: &str = "x-amz-bucket-object-lock-enabled";
    if let Some(v) = req.header(LOCK) {
        if v.trim().eq_ignore_ascii_case("true") {
            return Err(S3Error::new(
                S3ErrorCode::NotImplemented,
                "Object Lock is not implemented by postgate",
            )
            .with("Header", LOCK));
        }
        if !v.trim().eq_ignore_ascii_case("false") {
            return Err(S3Error::invalid_argument(
                "Invalid value for x-amz-bucket-object-lock-enabled",
                LOCK,
                v,
            ));
        }
    }
    const OWNERSHIP: &str = "x-amz-object-ownership";
    match req.header(OWNERSHIP) {
        None | Some("BucketOwnerEnforced" | "BucketOwnerPreferred" | "ObjectWriter") => Ok(()),
        Some(other) => Err(S3Error::invalid_argument(
            "Invalid x-amz-object-ownership header",
            OWNERSHIP,
            other,
        )),
    }
}

/// DeleteBucket. With a shared control database, the bucket's objects are the backend's (any
/// node may have written them): it must be empty there (409 BucketNotEmpty; 503 when the
/// backend cannot say), then it goes from PostgreSQL and every node's copy.
pub async fn delete_bucket(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let name = req.bucket().to_owned();
    let deleted = match app.links.shared() {
        None => app.write_bucket(move |c| buckets::delete(c, &name)).await?,
        Some(pg) => {
            match app.store.is_empty(&name).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(
                        S3Error::code(S3ErrorCode::BucketNotEmpty).with("BucketName", req.bucket())
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, bucket = %name, "cannot list the bucket in the backend");
                    return Err(S3Error::new(
                        S3ErrorCode::ServiceUnavailable,
                        "The storage backend cannot tell whether the bucket is empty",
                    ));
                }
            }
            let found = pg.delete_bucket(&name).await?;
            app.refresh_config().await?;
            match found {
                true => Deleted::Deleted,
                false => Deleted::NotFound,
            }
        }
    };
    match deleted {
        Deleted::Deleted => Ok(empty(StatusCode::NO_CONTENT)),
        Deleted::NotEmpty => {
            Err(S3Error::code(S3ErrorCode::BucketNotEmpty).with("BucketName", req.bucket()))
        }
        Deleted::NotFound => Err(S3Error::no_such_bucket(req.bucket())),
    }
}

pub async fn head_bucket(app: &AppState, _req: &S3Request) -> S3Result<Response> {
    let mut res = empty(StatusCode::OK);
    if let Ok(v) = app.config.region.parse() {
        res.headers_mut().insert("x-amz-bucket-region", v);
    }
    Ok(res)
}

pub async fn get_bucket_location(app: &AppState) -> S3Result<Response> {
    let mut w = XmlWriter::new();
    w.root("LocationConstraint");
    // AWS answers an empty constraint for us-east-1.
    if app.config.region != "us-east-1" {
        w.elem_text(&app.config.region);
    }
    w.close("LocationConstraint");
    Ok(xml_response(w.finish()))
}

pub async fn get_bucket_versioning() -> S3Result<Response> {
    let mut w = XmlWriter::new();
    w.root("VersioningConfiguration");
    w.close("VersioningConfiguration");
    Ok(xml_response(w.finish()))
}

/// An `AccessControlPolicy` document: the owner's FULL_CONTROL grant, plus READ (and WRITE) for
/// AllUsers when the canned ACL is public.
pub fn acl_document(owner: &str, acl: &str) -> String {
    const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
    let mut w = XmlWriter::new();
    w.root("AccessControlPolicy");
    w.open("Owner");
    w.elem("ID", owner);
    w.elem("DisplayName", owner);
    w.close("Owner");
    w.open("AccessControlList");
    w.raw("<Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\">");
    w.elem("ID", owner);
    w.elem("DisplayName", owner);
    w.raw("</Grantee><Permission>FULL_CONTROL</Permission></Grant>");
    let public: &[&str] = match acl {
        "public-read" => &["READ"],
        "public-read-write" => &["READ", "WRITE"],
        _ => &[],
    };
    for perm in public {
        w.raw("<Grant><Grantee xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"Group\">");
        w.elem("URI", ALL_USERS);
        w.raw("</Grantee>");
        w.elem("Permission", perm);
        w.close("Grant");
    }
    w.close("AccessControlList");
    w.close("AccessControlPolicy");
    w.finish()
}

pub async fn get_bucket_acl(
    _app: &AppState,
    _req: &S3Request,
    ctx: BucketCtx,
) -> S3Result<Response> {
    Ok(xml_response(acl_document(
        &ctx.record.owner,
        &ctx.record.acl,
    )))
}

pub async fn put_bucket_acl(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let body = caller.read_small_body(req, body, MAX_CONFIG_BODY).await?;
    if req.header("x-amz-acl").is_none() && !body.is_empty() {
        // Explicit grant lists are beyond the canned ACLs postgate stores.
        return Err(S3Error::new(
            S3ErrorCode::NotImplemented,
            "Only canned ACLs (x-amz-acl) are supported",
        ));
    }
    let acl = crate::objects::write::parse_canned_acl(req.header("x-amz-acl"))?;
    app.set_bucket(req.bucket(), buckets::Setting::Acl(acl))
        .await?;
    Ok(empty(StatusCode::OK))
}
