//! Upload links as the signing endpoint of Uppy's `@uppy/aws-s3` plugin.
//!
//! The plugin signs through a "Companion" server: `companionEndpoint: "<link URL>"` makes it call
//! the routes below, and the files still go straight to the bucket (a POST form for small files,
//! presigned part `PUT`s for large ones). Every call is checked against the link exactly as the
//! upload page is (size, type, prefix, expiry, number of files). The link URL is the only
//! credential, so these routes answer CORS for any origin; the bucket's own CORS configuration
//! decides whether a page may post to it and read the `ETag`.
//!
//! - `GET  s3/params?filename=&type=&metadata[..]=` → `{method, url, fields, headers}`: a POST
//!   policy for this file: the key `prefix + filename` (or `name (2).ext`, ... when taken), the
//!   type pinned after the link's check;
//! - `POST s3/multipart` `{filename, type, metadata}` → `{key, uploadId, bucket}`;
//! - `GET  s3/multipart/{uploadId}/{partNumber}?key=` → `{url, expires}`: a presigned `PUT`;
//! - `GET  s3/multipart/{uploadId}?key=` → `[{PartNumber, Size, ETag}]`;
//! - `POST s3/multipart/{uploadId}/complete?key=` `{parts: [{PartNumber, ETag}]}` →
//!   `{location, bucket, key}`;
//! - `DELETE s3/multipart/{uploadId}?key=` → 204.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::link::{self, Need};
use super::multipart::{self, finish, open_upload, part_list, sign_part_url};
use super::page;
use crate::error::JsonError;
use crate::state::AppState;

/// `GET /-/u/{token}/s3/params`
pub async fn params(
    State(app): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let link = link::load(&app, &token, Need::Usable).await?;
    let Some(filename) = query.get("filename") else {
        return Err(JsonError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "filename is required.",
        ));
    };
    // The form is for this one file: its type checked against the link and pinned, its key the
    // file's name under the prefix (or `name (2).ext`, ...: a link never replaces a file).
    // Uppy appends `file` to these fields and reports `url + key` as the location.
    let file = page::for_file(&app, &link, filename, query.get("type").cloned()).await?;
    let base = crate::state::base_url(&app, &headers);
    let Ok(post) = page::link_policy(
        &app,
        super::i18n::Tr::english(),
        &link,
        &base,
        None,
        Some(file),
    )
    .await
    else {
        return Err(JsonError::new(
            StatusCode::GONE,
            "LinkUnavailable",
            "This upload link can no longer be used.",
        ));
    };
    let fields: serde_json::Map<_, _> = post
        .fields
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Ok(Json(serde_json::json!({
        "method": "POST",
        "url": format!("{}/", post.url),
        "fields": fields,
        "headers": {},
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct CreateRequest {
    filename: String,
    #[serde(rename = "type")]
    content_type: Option<String>,
}

/// `POST /-/u/{token}/s3/multipart`
pub async fn create(
    State(app): State<AppState>,
    Path(token): Path<String>,
    Json(req): Json<CreateRequest>,
) -> Result<Response, JsonError> {
    let link = link::load(&app, &token, Need::Usable).await?;
    // Uppy does not send the size here; Complete refuses a total above the link's maximum.
    let (key, upload_id) =
        multipart::begin(&app, &link, &req.filename, None, req.content_type).await?;
    Ok(Json(serde_json::json!({
        "key": key, "uploadId": upload_id, "bucket": link.bucket,
    }))
    .into_response())
}

/// `GET /-/u/{token}/s3/multipart/{uploadId}/{partNumber}`
pub async fn sign_part(
    State(app): State<AppState>,
    Path((token, upload_id, number)): Path<(String, String, u32)>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let (link, upload) = open_upload(&app, &token, &upload_id).await?;
    let url = sign_part_url(&app, &link, &upload, number, &headers).await?;
    Ok(Json(serde_json::json!({
        "url": url, "expires": multipart::PART_URL_LIFETIME_SECS,
    }))
    .into_response())
}

/// `GET /-/u/{token}/s3/multipart/{uploadId}`
pub async fn list_parts(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
) -> Result<Response, JsonError> {
    open_upload(&app, &token, &upload_id).await?;
    let parts = part_list(&app, &upload_id).await?;
    Ok(Json(
        parts
            .iter()
            .map(|p| {
                serde_json::json!({
                    "PartNumber": p.part_number, "Size": p.size, "ETag": p.etag,
                })
            })
            .collect::<Vec<_>>(),
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct CompleteRequest {
    parts: Vec<CompletePart>,
}

#[derive(Deserialize)]
pub struct CompletePart {
    #[serde(rename = "PartNumber")]
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

/// `POST /-/u/{token}/s3/multipart/{uploadId}/complete`: completes with the parts Uppy lists,
/// as S3's CompleteMultipartUpload does, refusing a total above the link's maximum and a key
/// taken meanwhile (412).
pub async fn complete(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(req): Json<CompleteRequest>,
) -> Result<Response, JsonError> {
    let (link, upload) = open_upload(&app, &token, &upload_id).await?;
    let parts = req
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    finish(&app, &link, &upload, parts, &headers).await
}

/// Uppy's `@uppy/aws-s3` signs through these; the link is the credential, so any origin may call.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/-/u/{token}/s3/params", get(params))
        .route("/-/u/{token}/s3/multipart", post(create))
        .route(
            "/-/u/{token}/s3/multipart/{id}",
            get(list_parts).delete(multipart::abort),
        )
        .route("/-/u/{token}/s3/multipart/{id}/complete", post(complete))
        .route("/-/u/{token}/s3/multipart/{id}/{n}", get(sign_part))
        .layer(crate::cors::layer::routes(
            crate::cors::layer::Origins::Any,
            &[axum::http::header::CONTENT_TYPE],
            std::time::Duration::from_secs(3600),
        ))
}
