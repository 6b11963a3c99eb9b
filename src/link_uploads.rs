//! Large files through upload links: the page's multipart path.
//!
//! Above a threshold the upload page stops posting a form and uses S3's multipart upload
//! instead, so a phone on a flaky network loses at most one part, and a reloaded page resumes:
//! - `POST /-/u/{token}/uploads` `{filename, size, content_type}` starts an upload the link
//!   allows (size, type, prefix; it counts as one of the link's files) →
//!   `{key, upload_id, part_size, part_count}`;
//! - `GET /-/u/{token}/uploads/{id}/parts/{n}` → `{url}`: a presigned `PUT` for part `n`, so the
//!   browser sends the bytes straight to the S3 API without holding a secret;
//! - `GET /-/u/{token}/uploads/{id}` → `{parts: [{part_number, etag, size}]}`, to resume;
//! - `POST /-/u/{token}/uploads/{id}/complete` completes with every uploaded part, in order,
//!   refusing a total above the link's maximum; `DELETE /-/u/{token}/uploads/{id}` aborts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::db::links::LinkRecord;
use crate::db::uploads::{PartRecord, UploadRecord};
use crate::error::{S3Error, S3ErrorCode};
use crate::upload::ObjectHeaders;
use rusqlite::OptionalExtension;

/// Part size the page uses: large enough for S3's 5 MiB minimum, small enough that a lost part
/// costs little on a phone.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Files above this size take the multipart path on the page.
pub const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
pub(crate) const PART_URL_LIFETIME_SECS: i64 = 3600;

pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn from_s3(e: S3Error) -> Response {
    if e.s3_code() == S3ErrorCode::InternalError {
        tracing::error!(error = %e, "link upload failed");
    }
    json_error(e.s3_code().status(), e.s3_code().as_str(), e.message())
}

pub(crate) async fn usable_link(app: &AppState, token: &str) -> Result<LinkRecord, Response> {
    let t = token.to_owned();
    match app.db.read(move |c| crate::db::links::get(c, &t)).await {
        Ok(Some(link)) => match link.unusable() {
            None => Ok(link),
            Some(reason) => Err(json_error(StatusCode::GONE, "LinkUnavailable", reason)),
        },
        Ok(None) => Err(json_error(
            StatusCode::NOT_FOUND,
            "LinkUnavailable",
            "This upload link does not exist.",
        )),
        Err(e) => Err(from_s3(e.into())),
    }
}

/// A link's upload: it must exist under the link's bucket and prefix and carry the link's id.
pub(crate) async fn link_upload(
    app: &AppState,
    link: &LinkRecord,
    upload_id: &str,
) -> Result<UploadRecord, Response> {
    let (id, bucket) = (upload_id.to_owned(), link.bucket.clone());
    let found = app
        .db
        .read(move |c| {
            let key: Option<String> = c
                .query_row(
                    "SELECT key FROM uploads WHERE upload_id = ?1 AND bucket = ?2",
                    rusqlite::params![id, bucket],
                    |r| r.get(0),
                )
                .optional()?;
            match key {
                Some(key) => crate::db::uploads::get(c, &bucket, &key, &id),
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| from_s3(e.into()))?;
    let marker = format!("\"{}\"", link.id);
    match found {
        Some(record)
            if record.key.starts_with(&link.prefix) && record.headers.contains(&marker) =>
        {
            Ok(record)
        }
        _ => Err(json_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        )),
    }
}

/// The usable link behind `token` and its upload `upload_id`.
pub(crate) async fn open_upload(
    app: &AppState,
    token: &str,
    upload_id: &str,
) -> Result<(LinkRecord, UploadRecord), Response> {
    let link = usable_link(app, token).await?;
    let upload = link_upload(app, &link, upload_id).await?;
    Ok((link, upload))
}

/// The parts uploaded so far, in part-number order.
pub(crate) async fn part_list(
    app: &AppState,
    upload_id: &str,
) -> Result<Vec<PartRecord>, Response> {
    let id = upload_id.to_owned();
    app.db
        .read(move |c| crate::db::uploads::parts(c, &id, 0, 10_000))
        .await
        .map_err(|e| from_s3(e.into()))
}

/// A presigned `PUT` URL for part `number` of the link's upload, signed with the link's key.
pub(crate) async fn sign_part_url(
    app: &AppState,
    link: &LinkRecord,
    upload: &UploadRecord,
    number: u32,
    headers: &axum::http::HeaderMap,
) -> Result<String, Response> {
    if !(1..=crate::s3::multipart::MAX_PART_NUMBER).contains(&number) {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
        ));
    }
    let Ok(Some(key)) = app.find_key(&link.access_key).await else {
        return Err(json_error(
            StatusCode::GONE,
            "LinkUnavailable",
            "The key that created this link no longer exists.",
        ));
    };
    let base = crate::ui::base_url(app, headers);
    let path = format!(
        "/{}/{}",
        link.bucket,
        crate::auth::sigv4::uri_encode(&upload.key, false)
    );
    let query = format!("partNumber={number}&uploadId={}", upload.upload_id);
    Ok(crate::auth::sigv4::presign_url(
        &crate::auth::sigv4::Presign {
            method: "PUT",
            base: &base,
            path: &path,
            query: &query,
            access_key: &key.access_key,
            secret: &key.secret_key,
            region: &app.config.region,
            expires_secs: PART_URL_LIFETIME_SECS,
            now: time::OffsetDateTime::now_utc(),
        },
    ))
}

/// Completes the link's upload from `parts`, refusing a total above the link's maximum; answers
/// `{bucket, key, etag, location}`.
pub(crate) async fn finish(
    app: &AppState,
    link: &LinkRecord,
    upload: &UploadRecord,
    parts: Vec<(u32, String)>,
    headers: &axum::http::HeaderMap,
) -> Response {
    let done = crate::s3::multipart::complete(
        app,
        &link.bucket,
        &upload.key,
        &upload.upload_id,
        parts,
        Some(link.max_size),
    )
    .await;
    match done {
        Ok(etag) => {
            let base = crate::ui::base_url(app, headers);
            let location = crate::ui::object_url(&base, &link.bucket, &upload.key);
            Json(serde_json::json!({
                "bucket": link.bucket, "key": upload.key, "etag": etag, "location": location,
            }))
            .into_response()
        }
        Err(e) => from_s3(e),
    }
}

#[derive(Deserialize)]
pub struct StartRequest {
    filename: String,
    size: u64,
    content_type: Option<String>,
}

/// `POST /-/u/{token}/uploads`
pub async fn start(
    State(app): State<AppState>,
    Path(token): Path<String>,
    Json(req): Json<StartRequest>,
) -> Response {
    let link = match usable_link(&app, &token).await {
        Ok(l) => l,
        Err(res) => return res,
    };
    match begin(&app, &link, &req.filename, Some(req.size), req.content_type).await {
        Ok((key, upload_id)) => Json(serde_json::json!({
            "key": key,
            "upload_id": upload_id,
            "part_size": PART_SIZE,
            "part_count": req.size.div_ceil(PART_SIZE).max(1),
        }))
        .into_response(),
        Err(res) => res,
    }
}

/// Checks a file against the link (size when known, type, name), counts it as one of the
/// link's files and creates its multipart upload under the link's prefix. Returns the key and
/// the upload id.
pub(crate) async fn begin(
    app: &AppState,
    link: &LinkRecord,
    filename: &str,
    size: Option<u64>,
    content_type: Option<String>,
) -> Result<(String, String), Response> {
    if size.is_some_and(|s| s > link.max_size) {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
        ));
    }
    let content_type = allowed_type(link, content_type).map_err(from_s3)?;
    let key = key_for(link, filename).map_err(from_s3)?;
    let id = link.id.clone();
    match app
        .db
        .write(move |c| crate::db::links::reserve_upload(c, &id))
        .await
    {
        Ok(Some(Ok(()))) => {}
        Ok(Some(Err(reason))) => {
            return Err(json_error(StatusCode::GONE, "LinkUnavailable", reason));
        }
        Ok(None) => {
            return Err(json_error(
                StatusCode::NOT_FOUND,
                "LinkUnavailable",
                "Unknown upload link.",
            ));
        }
        Err(e) => return Err(from_s3(e.into())),
    }
    let headers = ObjectHeaders {
        content_type: Some(content_type),
        meta: vec![("upload-link".to_owned(), link.id.clone())],
        acl: "private".to_owned(),
        ..ObjectHeaders::default()
    };
    crate::s3::multipart::create(app, &link.bucket, &key, &link.access_key, headers)
        .await
        .map(|upload_id| (key, upload_id))
        .map_err(from_s3)
}

/// The file's Content-Type (default `binary/octet-stream`), if the link accepts it.
pub(crate) fn allowed_type(
    link: &LinkRecord,
    content_type: Option<String>,
) -> Result<String, S3Error> {
    let content_type = content_type
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "binary/octet-stream".to_owned());
    if let Some(rule) = &link.content_type {
        let allowed = rule
            .split(',')
            .map(str::trim)
            .any(|prefix| content_type.starts_with(prefix));
        if !allowed {
            return Err(S3Error::new(
                S3ErrorCode::AccessDenied,
                format!("This link only accepts files of type {rule}."),
            ));
        }
    }
    Ok(content_type)
}

/// The key a file gets under the link: the prefix, then the file name's last path segment.
pub(crate) fn key_for(link: &LinkRecord, filename: &str) -> Result<String, S3Error> {
    let name = crate::policy::expand_filename("${filename}", Some(filename));
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(S3Error::new(
            S3ErrorCode::InvalidArgument,
            "Invalid file name.",
        ));
    }
    let key = format!("{}{name}", link.prefix);
    crate::names::validate_key(&key)?;
    Ok(key)
}

/// `GET /-/u/{token}/uploads/{id}/parts/{n}`
pub async fn part_url(
    State(app): State<AppState>,
    Path((token, upload_id, number)): Path<(String, String, u32)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let signed = match open_upload(&app, &token, &upload_id).await {
        Ok((link, upload)) => sign_part_url(&app, &link, &upload, number, &headers).await,
        Err(res) => Err(res),
    };
    match signed {
        Ok(url) => Json(serde_json::json!({ "url": url })).into_response(),
        Err(res) => res,
    }
}

/// `GET /-/u/{token}/uploads/{id}`
pub async fn parts(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
) -> Response {
    if let Err(res) = open_upload(&app, &token, &upload_id).await {
        return res;
    }
    match part_list(&app, &upload_id).await {
        Ok(parts) => Json(serde_json::json!({
            "parts": parts.iter().map(|p| serde_json::json!({
                "part_number": p.part_number, "etag": p.etag, "size": p.size,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(res) => res,
    }
}

/// `POST /-/u/{token}/uploads/{id}/complete`: completes with every uploaded part, in order.
pub async fn complete(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let (link, upload) = match open_upload(&app, &token, &upload_id).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    match part_list(&app, &upload_id).await {
        Ok(parts) => {
            let list = parts.into_iter().map(|p| (p.part_number, p.etag)).collect();
            finish(&app, &link, &upload, list, &headers).await
        }
        Err(res) => res,
    }
}

/// `DELETE /-/u/{token}/uploads/{id}`
pub async fn abort(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
) -> Response {
    let t = token.clone();
    let link = match app.db.read(move |c| crate::db::links::get(c, &t)).await {
        Ok(Some(link)) => link,
        Ok(None) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "LinkUnavailable",
                "This upload link does not exist.",
            );
        }
        Err(e) => return from_s3(e.into()),
    };
    let upload = match link_upload(&app, &link, &upload_id).await {
        Ok(u) => u,
        Err(res) => return res,
    };
    match crate::s3::multipart::abort(&app, &link.bucket, &upload.key, &upload_id).await {
        Ok(_) => {
            let id = link.id.clone();
            let _ = app
                .db
                .write(move |c| crate::db::links::release_upload(c, &id))
                .await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => from_s3(e),
    }
}
