//! Large files through upload links: the page's multipart path.
//!
//! Above a threshold the upload page stops posting a form and uses S3's multipart upload
//! instead, so a phone on a flaky network loses at most one part, and a reloaded page resumes:
//! - `POST /-/u/{token}/uploads` `{filename, size, content_type}` starts an upload the link
//!   allows (size, type, prefix; it counts as one of the link's files) →
//!   `{key, upload_id, part_size, part_count}`; the key is the file's name under the link's
//!   prefix, or `name (2).ext`, `name (3).ext`, ... when that name is taken;
//! - `GET /-/u/{token}/uploads/{id}/parts/{n}` → `{url}`: a presigned `PUT` for part `n`, so the
//!   browser sends the bytes straight to the S3 API without holding a secret;
//! - `GET /-/u/{token}/uploads/{id}` → `{parts: [{part_number, etag, size}]}`, to resume;
//! - `POST /-/u/{token}/uploads/{id}/complete` completes with every uploaded part, in order,
//!   refusing a total above the link's maximum; `DELETE /-/u/{token}/uploads/{id}` aborts.
//!
//! What a link guarantees, on every path (this page, Uppy's routes, a form posted with the
//! link's policy, S3 requests on a link's upload):
//! - each file takes one of the link's slots, once: the slot is taken in the transaction that
//!   creates the upload (or before a form's file is read) and given back only by the statement
//!   that really removes an unfinished upload (abort, expiry, revocation) or by a refused form;
//! - only uploads signed for the link count against it (see `link::check_form`);
//! - every part is checked against the link when it arrives (open, size left), see
//!   `s3::multipart::upload_part`;
//! - types follow `LinkRecord::accepts_type` (in `link`);
//! - uploads are create-only: a link never replaces an object (412 PreconditionFailed).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::link::{self, Need, allowed_type, file_name, free_key};
use crate::db::links::LinkRecord;
use crate::db::uploads::{PartRecord, UploadRecord};
use crate::error::JsonError;
use crate::objects::write::ObjectHeaders;
use crate::state::AppState;

pub(crate) const PART_URL_LIFETIME_SECS: i64 = 3600;

/// A link's upload: one the link began (its `link_id`), in the link's bucket.
pub(crate) async fn link_upload(
    app: &AppState,
    link: &LinkRecord,
    upload_id: &str,
) -> Result<UploadRecord, JsonError> {
    let found = app.uploads.get_of_link(&link.id, upload_id).await?;
    match found {
        Some(record) if record.bucket == link.bucket => {
            crate::telemetry::note(|t| t.key = Some(record.key.clone()));
            Ok(record)
        }
        _ => Err(JsonError::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        )),
    }
}

/// The open link behind `token` and its upload `upload_id`.
pub(crate) async fn open_upload(
    app: &AppState,
    token: &str,
    upload_id: &str,
) -> Result<(LinkRecord, UploadRecord), JsonError> {
    let link = link::load(app, token, Need::Open).await?;
    let upload = link_upload(app, &link, upload_id).await?;
    Ok((link, upload))
}

/// The parts uploaded so far, in part-number order.
pub(crate) async fn part_list(
    app: &AppState,
    upload_id: &str,
) -> Result<Vec<PartRecord>, JsonError> {
    app.uploads
        .parts(upload_id, 0, 10_000)
        .await
        .map_err(JsonError::from)
}

/// A presigned `PUT` URL for part `number` of the link's upload, signed with the link's key.
pub(crate) async fn sign_part_url(
    app: &AppState,
    link: &LinkRecord,
    upload: &UploadRecord,
    number: u32,
    headers: &axum::http::HeaderMap,
) -> Result<String, JsonError> {
    if !(1..=crate::objects::multipart::MAX_PART_NUMBER).contains(&number) {
        return Err(JsonError::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive",
        ));
    }
    let Ok(Some(key)) = app.find_key(&link.access_key).await else {
        return Err(JsonError::new(
            StatusCode::GONE,
            "LinkUnavailable",
            "The key that created this link no longer exists.",
        ));
    };
    let base = crate::state::base_url(app, headers);
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

/// Completes the link's upload from `parts` (`objects::multipart::complete` holds it to the
/// link: open, total within the maximum, key still free, bytes of the declared type if the link
/// verifies types); answers `{bucket, key, etag, location, detected_type}`.
pub(crate) async fn finish(
    app: &AppState,
    link: &LinkRecord,
    upload: &UploadRecord,
    parts: Vec<(u32, String)>,
    headers: &axum::http::HeaderMap,
) -> Result<Response, JsonError> {
    crate::telemetry::note(|t| {
        t.bucket = Some(link.bucket.clone());
        t.key = Some(upload.key.clone());
        t.link_upload = true;
    });
    let origin = app.events.origin(
        crate::events::Kind::CompleteMultipartUpload,
        &link.access_key,
    );
    let etag = crate::objects::multipart::complete(
        &app.db,
        &app.uploads,
        &app.store,
        &link.bucket,
        &upload.key,
        &upload.upload_id,
        parts,
        origin,
    )
    .await?;
    let base = crate::state::base_url(app, headers);
    let location = crate::state::object_url(&base, &link.bucket, &upload.key);
    // What the file's first bytes showed, as now recorded with it (a link never replaces a file,
    // so the row read is the one just committed).
    let stored = crate::objects::read::head(&app.db, &app.store, &link.bucket, &upload.key, false);
    let detected_type = stored.await?.and_then(|o| o.meta.detected_type);
    Ok(Json(serde_json::json!({
        "bucket": link.bucket, "key": upload.key, "etag": etag, "location": location,
        "detected_type": detected_type,
    }))
    .into_response())
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
) -> Result<Response, JsonError> {
    let link = link::load(&app, &token, Need::Usable).await?;
    let (key, upload_id) =
        begin(&app, &link, &req.filename, Some(req.size), req.content_type).await?;
    // The part size is the server's setting (`--link-part-size`), told to the page here.
    let part_size = app.config.link_uploads.part_size;
    Ok(Json(serde_json::json!({
        "key": key,
        "upload_id": upload_id,
        "part_size": part_size,
        "part_count": req.size.div_ceil(part_size).max(1),
    }))
    .into_response())
}

/// Checks a file against the link (size when known, type, name) and, in one transaction, takes
/// one of the link's slots, picks a free key for the file under the link's prefix and creates its
/// multipart upload. Returns the key and the upload id.
pub(crate) async fn begin(
    app: &AppState,
    link: &LinkRecord,
    filename: &str,
    size: Option<u64>,
    content_type: Option<String>,
) -> Result<(String, String), JsonError> {
    if size.is_some_and(|s| s > link.max_size) {
        return Err(JsonError::new(
            StatusCode::BAD_REQUEST,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
        ));
    }
    let content_type = allowed_type(link, content_type)?;
    let name = file_name(filename)?;
    let headers = ObjectHeaders {
        content_type: Some(content_type),
        meta: vec![("upload-link".to_owned(), link.id.clone())],
        acl: "private".to_owned(),
        ..ObjectHeaders::default()
    };
    let mut record = crate::objects::multipart::upload_record(
        &link.bucket,
        "",
        &link.access_key,
        headers,
        None,
        Some(link.id.clone()),
    )?;
    // Under the S3 backend the backend's upload is made for the key before the transaction, so
    // the free name is picked first and must still be free in the transaction (another file may
    // have taken it meanwhile: then picked again, a few times).
    let on_backend = app.on_s3_backend();
    // With a shared control database the slot is taken there, before the transaction (which
    // then takes none in this node's copy of the link), and given back if no upload is made.
    let shared = match app.links.reserve_upload_shared(&link.id).await? {
        None => false,
        Some(reservation) => match link::refusal(&reservation) {
            Some(refused) => return Err(refused.into()),
            None => true,
        },
    };
    let made = make_upload(app, link, &name, size, &mut record, on_backend, shared).await;
    if made.is_err() && shared {
        app.links.release_upload_shared(&link.id).await?;
    }
    let (key, upload_id) = made?;
    crate::telemetry::note(|t| t.key = Some(key.clone()));
    Ok((key, upload_id))
}

/// [`begin`]'s transaction, tried again when the free name it picked was taken meanwhile
/// (S3 backend). `shared`: the slot is already taken in the shared control database.
async fn make_upload(
    app: &AppState,
    link: &LinkRecord,
    name: &str,
    size: Option<u64>,
    record: &mut crate::db::uploads::UploadRecord,
    on_backend: bool,
    shared: bool,
) -> Result<(String, String), JsonError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Shared upload rows: the names other nodes' uploads hold (the backend's create-only
        // Complete refuses a name two nodes picked at once).
        let busy = link::busy_keys(app, &link.bucket, &link.prefix, name).await?;
        if on_backend {
            let (bucket, prefix, name, busy) = (
                link.bucket.clone(),
                link.prefix.clone(),
                name.to_owned(),
                busy.clone(),
            );
            record.key = app
                .db
                .read(move |c| free_key(c, &bucket, &prefix, &name, &busy))
                .await?;
        }
        let (bucket, prefix, link_id, name) = (
            link.bucket.clone(),
            link.prefix.clone(),
            link.id.clone(),
            name.to_owned(),
        );
        let created = crate::objects::multipart::create(
            &app.db,
            &app.uploads,
            &app.store,
            record.clone(),
            move |c, record| {
                let key = free_key(c, &bucket, &prefix, &name, &busy)?;
                if on_backend && key != record.key {
                    return Ok(Err(None));
                }
                record.key = key;
                if let Err(e) = crate::names::validate_key(&record.key) {
                    return Ok(Err(Some(JsonError::from(e))));
                }
                if let Err(e) = crate::objects::quota::check_new_upload(
                    c,
                    &bucket,
                    &record.key,
                    Some(&link_id),
                    size,
                )? {
                    return Ok(Err(Some(JsonError::from(crate::error::S3Error::from(e)))));
                }
                if !shared {
                    let reservation = crate::db::links::reserve_upload(c, &link_id)?;
                    if let Some(refused) = link::refusal(&reservation) {
                        return Ok(Err(Some(refused.into())));
                    }
                }
                Ok(Ok((record.key.clone(), record.upload_id.clone())))
            },
        )
        .await?;
        match created {
            Ok(done) => return Ok(done),
            Err(Some(refused)) => return Err(refused),
            Err(None) if attempts < 3 => continue,
            Err(None) => {
                return Err(JsonError::new(
                    StatusCode::CONFLICT,
                    "OperationAborted",
                    "Other uploads took this file's name meanwhile; try again.",
                ));
            }
        }
    }
}

/// `GET /-/u/{token}/uploads/{id}/parts/{n}`
pub async fn part_url(
    State(app): State<AppState>,
    Path((token, upload_id, number)): Path<(String, String, u32)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, JsonError> {
    let (link, upload) = open_upload(&app, &token, &upload_id).await?;
    let url = sign_part_url(&app, &link, &upload, number, &headers).await?;
    Ok(Json(serde_json::json!({ "url": url })).into_response())
}

/// `GET /-/u/{token}/uploads/{id}`
pub async fn parts(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
) -> Result<Response, JsonError> {
    open_upload(&app, &token, &upload_id).await?;
    let parts = part_list(&app, &upload_id).await?;
    Ok(Json(serde_json::json!({
        "parts": parts.iter().map(|p| serde_json::json!({
            "part_number": p.part_number, "etag": p.etag, "size": p.size,
        })).collect::<Vec<_>>()
    }))
    .into_response())
}

/// `POST /-/u/{token}/uploads/{id}/complete`: completes with every uploaded part, in order.
pub async fn complete(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, JsonError> {
    let (link, upload) = open_upload(&app, &token, &upload_id).await?;
    let parts = part_list(&app, &upload_id).await?;
    let list = parts.into_iter().map(|p| (p.part_number, p.etag)).collect();
    finish(&app, &link, &upload, list, &headers).await
}

/// `DELETE /-/u/{token}/uploads/{id}`: of concurrent aborts of one upload, one answers 204 and
/// gives back the link's slot; the others find no upload (404). A closed or full link may
/// still abort its uploads.
pub async fn abort(
    State(app): State<AppState>,
    Path((token, upload_id)): Path<(String, String)>,
) -> Result<Response, JsonError> {
    let link = link::load(&app, &token, Need::Exists).await?;
    let upload = link_upload(&app, &link, &upload_id).await?;
    let aborted = crate::objects::multipart::abort(
        &app.db,
        &app.uploads,
        &app.store,
        &link.bucket,
        &upload.key,
        &upload_id,
    );
    if aborted.await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(JsonError::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        ))
    }
}
