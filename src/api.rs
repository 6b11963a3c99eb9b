//! The JSON API under `/-/api/` that a web app's backend calls: "sign me a POST policy"
//! (`POST /-/api/presign/post`), and "make me a shareable upload link" (`/-/api/links`).
//!
//! Authentication: a SigV4-signed request (any AWS SDK's request signer works), or
//! `Authorization: Bearer <access key>:<secret>` for curl. The caller only gets policies for
//! buckets it may write to. Answers `{"url": ..., "fields": {...}}`, exactly the shape of boto3's
//! `generate_presigned_post`. Errors are JSON: `{"error": {"code", "message"}}`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::db::keys::KeyRecord;
use crate::db::links::LinkRecord;
use crate::error::S3Error;
use crate::policy::{ContentTypeRule, KeySpec, PostPolicyRequest, SigVersion};
use crate::state::AppState;
use crate::state::base_url;
use crate::units::{Seconds, Size};

/// Largest JSON body the API reads.
const MAX_BODY: usize = 64 * 1024;
/// Longest policy lifetime the API issues, as for presigned URLs.
const MAX_EXPIRES_SECS: u64 = 7 * 86_400;
/// Longest lifetime of an upload link (each page load still gets a policy of its own).
const MAX_LINK_SECS: u64 = 366 * 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresignPostRequest {
    pub bucket: String,
    /// Exact key; or use `key_prefix`.
    pub key: Option<String>,
    /// Any key under this prefix; the form's key is `prefix${filename}`.
    pub key_prefix: Option<String>,
    /// Lifetime in seconds (default 3600, at most 7 days).
    pub expires_in: Option<Seconds>,
    pub max_size: Option<Size>,
    pub min_size: Option<Size>,
    /// Exact Content-Type.
    pub content_type: Option<String>,
    /// Content-Type prefix, such as `image/`.
    pub content_type_prefix: Option<String>,
    /// Allowed Content-Types (issued as their common prefix; see `policy::ContentTypeRule`).
    pub content_types: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    pub success_action_status: Option<u16>,
    pub success_action_redirect: Option<String>,
    pub acl: Option<String>,
    /// `v4` (default) or `v2`.
    pub signature_version: Option<String>,
    /// The file's bytes must match its declared Content-Type: adds the field and condition
    /// `x-postgate-verify-type: on`.
    #[serde(default)]
    pub verify_type: bool,
}

/// The JSON API's errors: the `/-/` routes' one JSON shape.
pub type ApiError = crate::error::JsonError;

/// `POST /-/api/presign/post`
pub async fn presign_post(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let base = base_url(&app, &parts.headers);
    let (key, body) = authenticate(&app, parts, body).await?;
    let input: PresignPostRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    crate::telemetry::note(|t| {
        t.bucket = Some(input.bucket.clone());
        t.key = input.key.clone().or(input.key_prefix.clone());
    });
    crate::names::validate_bucket(&input.bucket)?;
    let may_write = may_write(&app, &key, &input.bucket).await?;
    if !may_write {
        return Err(S3Error::access_denied().into());
    }
    let policy_req = to_policy_request(&input)?;
    let url = format!("{base}/{}", input.bucket);
    let post = crate::policy::issue(
        &policy_req,
        &key.access_key,
        &key.secret_key,
        &app.config.region,
        &url,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let json = serde_json::to_string(&post).map_err(|e| ApiError::from(S3Error::internal(e)))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Builds the policy request, checking the combinations the caller may send.
pub fn to_policy_request(input: &PresignPostRequest) -> Result<PostPolicyRequest, ApiError> {
    let key = match (&input.key, &input.key_prefix) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give key or key_prefix, not both"));
        }
        (Some(k), None) => {
            crate::names::validate_key(k)?;
            KeySpec::Exact(k.clone())
        }
        (None, p) => KeySpec::Prefix(p.clone().unwrap_or_default()),
    };
    let content_type = match (
        &input.content_type,
        &input.content_type_prefix,
        &input.content_types,
    ) {
        (None, None, None) => None,
        (Some(t), None, None) => Some(ContentTypeRule::Exact(t.clone())),
        (None, Some(p), None) => Some(ContentTypeRule::Prefix(p.clone())),
        (None, None, Some(list)) => Some(ContentTypeRule::OneOf(list.clone())),
        _ => {
            return Err(ApiError::bad_request(
                "give one of content_type, content_type_prefix, content_types",
            ));
        }
    };
    let expires = input.expires_in.map_or(3600, |s| s.0);
    if expires == 0 || expires > MAX_EXPIRES_SECS {
        return Err(ApiError::bad_request(
            "expires_in must be between 1 and 604800 seconds",
        ));
    }
    let sig = match input.signature_version.as_deref() {
        None | Some("v4") => SigVersion::V4,
        Some("v2") => SigVersion::V2,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown signature_version {other:?}"
            )));
        }
    };
    if let Some(acl) = &input.acl {
        crate::objects::write::parse_canned_acl(Some(acl))?;
    }
    // `upload-link` marks a form an upload link signed; only the link's own page signs it.
    if input
        .metadata
        .keys()
        .any(|k| format!("x-amz-meta-{k}").eq_ignore_ascii_case(crate::links::LINK_META_FIELD))
    {
        return Err(ApiError::bad_request(
            "metadata may not contain upload-link: only an upload link signs that field",
        ));
    }
    Ok(PostPolicyRequest {
        bucket: input.bucket.clone(),
        key,
        expires_in: std::time::Duration::from_secs(expires),
        min_size: input.min_size.map_or(0, |s| s.0),
        max_size: input
            .max_size
            .map_or(crate::policy::MAX_POST_OBJECT_SIZE, |s| s.0),
        content_type,
        metadata: input.metadata.clone().into_iter().collect(),
        success_action_status: input.success_action_status,
        success_action_redirect: input.success_action_redirect.clone(),
        acl: input.acl.clone(),
        sig,
        verify_type: input.verify_type,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkRequest {
    pub bucket: String,
    /// Key prefix the uploads go under (default: the bucket's root).
    #[serde(default)]
    pub prefix: String,
    /// Largest file (default 100 MiB, at most 5 GiB).
    pub max_size: Option<Size>,
    /// How long the link works (default 7 days, at most 366 days).
    pub expires_in: Option<Seconds>,
    /// How many files the link accepts (default: no limit).
    pub max_files: Option<u64>,
    /// Accepted types, comma-separated, enforced exactly (`LinkRecord::accepts_type`): `image/`
    /// takes the family, `image/png` exactly that type.
    pub content_type: Option<String>,
    /// The declared webhook target (by name, never a URL) told of every upload through the link.
    pub webhook: Option<String>,
    /// The files' bytes must match their declared type (`sniff::check`).
    #[serde(default)]
    pub verify_type: bool,
    /// Files uploaded through the link expire this long after their upload (default: never).
    pub expire_objects_after: Option<Seconds>,
    /// The most bytes all the link's files may take together (default: no limit).
    pub max_total_size: Option<Size>,
}

/// `POST /-/api/links`: a shareable upload link whose uploads the caller's key signs.
pub async fn create_link(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let base = base_url(&app, &parts.headers);
    let (key, body) = authenticate(&app, parts, body).await?;
    let input: CreateLinkRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    crate::telemetry::note(|t| t.bucket = Some(input.bucket.clone()));
    crate::names::validate_bucket(&input.bucket)?;
    if !may_write(&app, &key, &input.bucket).await? {
        return Err(S3Error::access_denied().into());
    }
    let max_size = input.max_size.map_or(100 << 20, |s| s.0);
    if max_size == 0 || max_size > crate::policy::MAX_POST_OBJECT_SIZE {
        return Err(ApiError::bad_request(
            "max_size must be between 1 byte and 5 GiB",
        ));
    }
    let expires = input.expires_in.map_or(7 * 86_400, |s| s.0);
    if expires == 0 || expires > MAX_LINK_SECS {
        return Err(ApiError::bad_request(
            "expires_in must be between 1 second and 366 days",
        ));
    }
    if input.max_files == Some(0) {
        return Err(ApiError::bad_request("max_files must be at least 1"));
    }
    if input.prefix.len() > 900 {
        return Err(ApiError::bad_request("prefix is too long"));
    }
    if input.expire_objects_after.is_some_and(|s| s.0 == 0) {
        return Err(ApiError::bad_request(
            "expire_objects_after must be at least 1 second",
        ));
    }
    if input.max_total_size.is_some_and(|s| s.0 == 0) {
        return Err(ApiError::bad_request(
            "max_total_size must be at least 1 byte",
        ));
    }
    let content_type = input.content_type.filter(|t| !t.trim().is_empty());
    // Only a target the operator declared: a caller of this API must not make the server POST
    // to an address of its choosing.
    if let Some(name) = &input.webhook {
        app.reload_events().await?;
        if app.events.target(name).is_none() {
            return Err(ApiError::bad_request(format!(
                "webhook {name:?} is not a webhook target declared on this server"
            )));
        }
    }
    let mut link = crate::links::new_link(
        &input.bucket,
        &input.prefix,
        max_size,
        content_type,
        input.max_files,
        std::time::Duration::from_secs(expires),
        &key.access_key,
    );
    link.verify_type = input.verify_type;
    link.expire_objects_after = input.expire_objects_after.map(|s| s.0 as i64 * 1000);
    link.max_total_size = input.max_total_size.map(|s| s.0);
    app.links.create(&link, input.webhook.clone()).await?;
    if input.webhook.is_some() {
        app.events.reload(&app.db).await?;
    }
    let mut json = link_json(&link, &base);
    json["webhook"] = serde_json::json!(input.webhook);
    crate::telemetry::note(|t| t.link = Some(link.id.clone()));
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response())
}

/// `GET /-/api/links`: the caller's links (every link for the admin key), oldest first.
pub async fn list_links(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let base = base_url(&app, &parts.headers);
    let (key, _) = authenticate(&app, parts, body).await?;
    let links = app.links.list().await?;
    let links: Vec<_> = links
        .iter()
        .filter(|l| key.is_admin || l.access_key == key.access_key)
        .map(|l| {
            let mut json = link_json(l, &base);
            json["webhook"] = serde_json::json!(app.events.link_target(&l.id));
            json
        })
        .collect();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "links": links }).to_string(),
    )
        .into_response())
}

/// `DELETE /-/api/links/{id}`: revokes one of the caller's links (any link for the admin key).
pub async fn revoke_link(
    State(app): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let (key, _) = authenticate(&app, parts, body).await?;
    crate::telemetry::note(|t| t.link = Some(id.clone()));
    let found = app
        .links
        .get_by_id(&id)
        .await?
        .filter(|l| key.is_admin || l.access_key == key.access_key);
    let Some(link) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchLink",
            format!("no upload link {id}"),
        ));
    };
    crate::telemetry::note(|t| t.bucket = Some(link.bucket.clone()));
    // Revoked for every node first (with a shared control database), then here: its unfinished
    // uploads are aborted in the same transaction; their parts are freed too.
    app.links.revoke_shared(&link.id).await?;
    crate::objects::link::revoke(&app.db, &app.uploads, &app.store, &link.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn link_json(l: &LinkRecord, base: &str) -> serde_json::Value {
    let rfc3339 = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
    };
    serde_json::json!({
        "id": l.id,
        "url": format!("{base}/-/u/{}", l.token),
        "bucket": l.bucket,
        "prefix": l.prefix,
        "max_size": l.max_size,
        "max_files": l.max_files,
        "uploaded_files": l.uploaded_files,
        "content_type": l.content_type,
        "created_at": rfc3339(l.created_at),
        "expires_at": rfc3339(l.expires_at),
        "revoked": l.revoked,
        "expire_objects_after": l.expire_objects_after.map(|ms| ms / 1000),
        "max_total_size": l.max_total_size,
        "uploaded_bytes": l.uploaded_bytes,
        "active": l.unusable().is_none(),
        "verify_type": l.verify_type,
    })
}

async fn may_write(app: &AppState, key: &KeyRecord, bucket: &str) -> Result<bool, ApiError> {
    let who = if key.is_admin { "" } else { &key.access_key };
    let found = app.bucket_with_grant(bucket, who).await?;
    let Some((record, grant)) = found else {
        return Err(S3Error::no_such_bucket(bucket).into());
    };
    let who = crate::objects::access::Who {
        is_admin: key.is_admin,
        access_key: Some(&key.access_key),
    };
    Ok(crate::objects::access::may_write(who, &record, grant))
}

/// The caller's key and the request body, from a Bearer token or a SigV4 signature.
async fn authenticate(
    app: &AppState,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<(KeyRecord, bytes::Bytes), ApiError> {
    // `Bearer` with no token (the server sees `Authorization: Bearer`, trailing space trimmed)
    // is a malformed token, not an unknown scheme. An empty header goes on to the S3 path,
    // which refuses it with 403 AccessDenied.
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
            scheme
                .eq_ignore_ascii_case("Bearer")
                .then(|| token.trim().to_owned())
        });
    if let Some(token) = bearer {
        let (ak, sk) = token.split_once(':').ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                "expected Bearer ACCESS:SECRET",
            )
        })?;
        // The access key id as claimed, for the access log (never the secret).
        crate::telemetry::note(|t| t.access_key = Some(ak.to_owned()));
        let key = app.find_key(ak).await?;
        let key = key
            .filter(|k| crate::auth::secret::ct_eq_str(&k.secret_key, sk))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "InvalidAccessKeyId",
                    "unknown access key or wrong secret",
                )
            })?;
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| ApiError::bad_request("body too large or incomplete"))?;
        return Ok((key, bytes));
    }
    let Some(SignatureCheck(check)) = parts.extensions.get::<SignatureCheck>().copied() else {
        return Err(S3Error::internal(
            "the JSON API's routes were built without a signature check",
        )
        .into());
    };
    let (key, bytes) = check(app.clone(), parts, body, MAX_BODY).await?;
    let key = key.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AccessDenied",
            "this API needs a signed request or a Bearer token",
        )
    })?;
    Ok((key, bytes))
}

/// `GET /-/api/events[?failed=1]`: the newest event deliveries (admin only).
pub async fn list_events(State(app): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let failed = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "failed" || p == "failed=1" || p == "failed=true")
    });
    let (parts, body) = req.into_parts();
    let (key, _) = authenticate(&app, parts, body).await?;
    if !key.is_admin {
        return Err(S3Error::access_denied().into());
    }
    let list = app.events.list(&app.db, failed, 1000).await?;
    let events: Vec<_> = list.iter().map(crate::events::delivery_json).collect();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "events": events }).to_string(),
    )
        .into_response())
}

/// `POST /-/api/events/{id}/retry`: puts a delivery back in the queue now (admin only).
pub async fn retry_event(
    State(app): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<i64>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let (key, _) = authenticate(&app, parts, body).await?;
    if !key.is_admin {
        return Err(S3Error::access_denied().into());
    }
    if !app.events.retry(&app.db, id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchEvent",
            format!("no event delivery {id}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /-/api/openapi.json`
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../static/openapi.json"),
    )
        .into_response()
}

/// The JSON API's routes, under the CORS the configuration allows them.
/// How the JSON API checks a signed request: S3's own check (`s3::authenticate_request`: the
/// caller's key, if any, and the body read up to a limit with its signed hash verified). The
/// router hands it in, so that the API shares S3's authentication without importing the S3
/// area.
pub type CheckSignature = fn(
    AppState,
    axum::http::request::Parts,
    Body,
    usize,
) -> futures_util::future::BoxFuture<
    'static,
    Result<(Option<KeyRecord>, bytes::Bytes), S3Error>,
>;

/// The signature check, as the routes' requests carry it (an extension).
#[derive(Clone, Copy)]
struct SignatureCheck(CheckSignature);

pub fn routes(
    config: &crate::config::Config,
    check_signature: CheckSignature,
) -> axum::Router<AppState> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/-/api/presign/post", post(presign_post))
        .route("/-/api/links", get(list_links).post(create_link))
        .route("/-/api/links/{id}", delete(revoke_link))
        .route("/-/api/events", get(list_events))
        .route("/-/api/events/{id}/retry", post(retry_event))
        .route("/-/api/openapi.json", get(openapi))
        .layer(axum::Extension(SignatureCheck(check_signature)))
        .layer(api_cors(&config.api_cors_origins))
}

/// CORS for the JSON API: the origins the configuration lists (`api_cors_origins`), or none.
fn api_cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, header};
    crate::cors::layer::routes(
        crate::cors::layer::Origins::Listed(origins),
        &[
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-amz-date"),
            HeaderName::from_static("x-amz-content-sha256"),
            HeaderName::from_static("x-amz-security-token"),
        ],
        std::time::Duration::from_secs(600),
    )
}
