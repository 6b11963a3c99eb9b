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
//! - only uploads signed for the link count against it (see `check_form`);
//! - every part is checked against the link when it arrives (open, size left), see
//!   `s3::multipart::upload_part`;
//! - types follow [`LinkRecord::accepts_type`];
//! - uploads are create-only: a link never replaces an object (412 PreconditionFailed).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::db::links::{LinkRecord, Refusal};
use crate::db::uploads::{PartRecord, UploadRecord};
use crate::error::{S3Error, S3ErrorCode};
use crate::upload::ObjectHeaders;

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

/// The link behind `token`, if it can take a new file (open and not full).
pub(crate) async fn usable_link(app: &AppState, token: &str) -> Result<LinkRecord, Response> {
    let link = find_link(app, token).await?;
    match link.unusable() {
        None => Ok(link),
        Some(reason) => Err(json_error(StatusCode::GONE, "LinkUnavailable", reason)),
    }
}

/// The link behind `token`, if it is open (not revoked, not expired). Routes on an upload the
/// link already counted need no more: a full link lets its uploads finish.
pub(crate) async fn open_link(app: &AppState, token: &str) -> Result<LinkRecord, Response> {
    let link = find_link(app, token).await?;
    match link.closed() {
        None => Ok(link),
        Some(reason) => Err(json_error(StatusCode::GONE, "LinkUnavailable", reason)),
    }
}

async fn find_link(app: &AppState, token: &str) -> Result<LinkRecord, Response> {
    let t = token.to_owned();
    match app.db.read(move |c| crate::db::links::get(c, &t)).await {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(json_error(
            StatusCode::NOT_FOUND,
            "LinkUnavailable",
            "This upload link does not exist.",
        )),
        Err(e) => Err(from_s3(e.into())),
    }
}

/// A link's upload: one the link began (its `link_id`), in the link's bucket.
pub(crate) async fn link_upload(
    app: &AppState,
    link: &LinkRecord,
    upload_id: &str,
) -> Result<UploadRecord, Response> {
    let (id, link_id) = (upload_id.to_owned(), link.id.clone());
    let found = app
        .db
        .read(move |c| crate::db::uploads::get_of_link(c, &link_id, &id))
        .await
        .map_err(|e| from_s3(e.into()))?;
    match found {
        Some(record) if record.bucket == link.bucket => Ok(record),
        _ => Err(json_error(
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
) -> Result<(LinkRecord, UploadRecord), Response> {
    let link = open_link(app, token).await?;
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

/// Completes the link's upload from `parts` (`s3::multipart::complete` holds it to the link:
/// open, total within the maximum, key still free); answers `{bucket, key, etag, location}`.
pub(crate) async fn finish(
    app: &AppState,
    link: &LinkRecord,
    upload: &UploadRecord,
    parts: Vec<(u32, String)>,
    headers: &axum::http::HeaderMap,
) -> Response {
    let done =
        crate::s3::multipart::complete(app, &link.bucket, &upload.key, &upload.upload_id, parts)
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

/// Checks a file against the link (size when known, type, name) and, in one transaction, takes
/// one of the link's slots, picks a free key for the file under the link's prefix and creates its
/// multipart upload. Returns the key and the upload id.
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
    let name = file_name(filename).map_err(from_s3)?;
    let headers = ObjectHeaders {
        content_type: Some(content_type),
        meta: vec![("upload-link".to_owned(), link.id.clone())],
        acl: "private".to_owned(),
        ..ObjectHeaders::default()
    };
    let mut record = crate::s3::multipart::upload_record(
        &link.bucket,
        "",
        &link.access_key,
        headers,
        Some(link.id.clone()),
    )
    .map_err(from_s3)?;
    let (bucket, prefix, link_id) = (link.bucket.clone(), link.prefix.clone(), link.id.clone());
    let created = app
        .db
        .write(move |c| {
            record.key = free_key(c, &bucket, &prefix, &name)?;
            if let Err(e) = crate::names::validate_key(&record.key) {
                return Ok(Err(from_s3(e)));
            }
            if let Err(refusal) = crate::db::links::reserve_upload(c, &link_id)? {
                return Ok(Err(refused(refusal)));
            }
            crate::db::uploads::create(c, &record)?;
            Ok(Ok((record.key, record.upload_id)))
        })
        .await;
    match created {
        Ok(done) => done,
        Err(e) => Err(from_s3(e.into())),
    }
}

/// The JSON answer for a link that refused a new upload.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unknown => json_error(
            StatusCode::NOT_FOUND,
            "LinkUnavailable",
            "This upload link does not exist.",
        ),
        Refusal::Unusable(reason) => json_error(StatusCode::GONE, "LinkUnavailable", reason),
    }
}

/// The file's Content-Type (default `binary/octet-stream`), if the link accepts it
/// ([`LinkRecord::accepts_type`]).
pub(crate) fn allowed_type(
    link: &LinkRecord,
    content_type: Option<String>,
) -> Result<String, S3Error> {
    let content_type = content_type
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "binary/octet-stream".to_owned());
    if !link.accepts_type(&content_type) {
        return Err(wrong_type(link));
    }
    Ok(content_type)
}

fn wrong_type(link: &LinkRecord) -> S3Error {
    S3Error::new(
        S3ErrorCode::AccessDenied,
        format!(
            "This link only accepts files of type {}.",
            link.content_type.as_deref().unwrap_or_default()
        ),
    )
}

/// The refusal of a link upload whose key is taken: a link never replaces a file.
pub(crate) fn name_taken(key: &str) -> S3Error {
    S3Error::new(
        S3ErrorCode::PreconditionFailed,
        format!(
            "A file named {key} already exists, and an upload link never replaces a file. \
             Rename the file and upload it again."
        ),
    )
    .with("Condition", "If-None-Match")
}

/// The name a file gets under a link: the file name's last path segment.
pub(crate) fn file_name(filename: &str) -> Result<String, S3Error> {
    let name = crate::policy::expand_filename("${filename}", Some(filename));
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(S3Error::new(
            S3ErrorCode::InvalidArgument,
            "Invalid file name.",
        ));
    }
    Ok(name)
}

/// How many numbered names (`name (2).ext` ...) are tried before a random one.
const NUMBERED_NAMES: u32 = 100;

/// The first key under `prefix` for a file called `name` that no object and no unfinished
/// upload uses: `name.ext`, then `name (2).ext`, `name (3).ext`, ... Link uploads are
/// create-only, so a name already taken would only be refused.
pub(crate) fn free_key(
    c: &rusqlite::Connection,
    bucket: &str,
    prefix: &str,
    name: &str,
) -> Result<String, crate::db::DbError> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    let taken = |key: &str| -> Result<bool, crate::db::DbError> {
        Ok(crate::db::objects::get(c, bucket, key, false)?.is_some()
            || crate::db::uploads::key_in_progress(c, bucket, key)?)
    };
    let first = format!("{prefix}{name}");
    if !taken(&first)? {
        return Ok(first);
    }
    for n in 2..=NUMBERED_NAMES {
        let key = format!("{prefix}{stem} ({n}){ext}");
        if !taken(&key)? {
            return Ok(key);
        }
    }
    let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
    Ok(format!("{prefix}{stem} ({random}){ext}"))
}

/// A POST form that names upload link `link_id` (field `x-amz-meta-upload-link`): it counts
/// against the link only if the link signed it, that is, the form is signed with the link's key,
/// posts to the link's bucket, and its policy pins the field to the link's id with an exact
/// condition. Anything else (an anonymous form into a public-write bucket, a form another key
/// signed) is refused with 403 AccessDenied before the file is read, so that no one can use up a
/// link by naming it. A form the link signed must also fit the link (prefix, exact type), and
/// then takes one of its slots, held by the returned [`FormSlot`] until the file is stored.
pub(crate) async fn check_form(
    app: &AppState,
    link_id: &str,
    bucket: &str,
    signer: Option<(&str, &crate::policy::Policy)>,
    key: &str,
    content_type: Option<&str>,
) -> Result<FormSlot, S3Error> {
    let id = link_id.to_owned();
    let link = app
        .db
        .read(move |c| crate::db::links::get_by_id(c, &id))
        .await?;
    let pinned = |policy: &crate::policy::Policy| {
        policy.conditions().iter().any(|c| {
            matches!(c.kind(), crate::policy::ConditionKind::Eq { field, value }
                if field.name() == Some(crate::ui::LINK_META_FIELD) && value == link_id)
        })
    };
    let signed_for_link = link.as_ref().is_some_and(|l| {
        l.bucket == bucket
            && signer.is_some_and(|(ak, policy)| ak == l.access_key && pinned(policy))
    });
    let Some(link) = link.filter(|_| signed_for_link) else {
        return Err(S3Error::new(
            S3ErrorCode::AccessDenied,
            format!(
                "This form names upload link {link_id} ({}) but is not signed for that link.",
                crate::ui::LINK_META_FIELD
            ),
        ));
    };
    if !key.starts_with(&link.prefix) {
        return Err(S3Error::new(
            S3ErrorCode::AccessDenied,
            format!("This link only accepts keys under {}.", link.prefix),
        ));
    }
    if !link.accepts_type(content_type.unwrap_or("binary/octet-stream")) {
        return Err(wrong_type(&link));
    }
    let (id, b, k) = (link.id.clone(), bucket.to_owned(), key.to_owned());
    match app
        .db
        .write(move |c| crate::db::links::reserve_form(c, &id, &b, &k))
        .await?
    {
        Ok(slot) => Ok(FormSlot {
            db: app.db.clone(),
            slot: Some(slot),
        }),
        Err(Refusal::Unusable(reason)) => Err(S3Error::new(S3ErrorCode::AccessDenied, reason)),
        Err(Refusal::Unknown) => Err(S3Error::new(
            S3ErrorCode::AccessDenied,
            "Unknown upload link.",
        )),
    }
}

/// The slot a form took on its link ([`check_form`]): [`FormSlot::keep`] once the file is
/// stored, else it is given back exactly once: by [`FormSlot::release`] on a failed upload, or,
/// if the request is dropped midway (the client went away), when the guard is dropped. The slot
/// is recorded in `link_form_slots` until then, so that if the server dies first, start-up
/// settles it ([`crate::db::links::settle_form_slots`]).
pub(crate) struct FormSlot {
    db: crate::db::Db,
    /// The `link_form_slots` record.
    slot: Option<String>,
}

impl FormSlot {
    /// The file is stored: the slot is the link's file now. Its record is dropped in the
    /// background (if the server dies first, start-up finds the file and keeps the slot).
    pub(crate) fn keep(mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let db = self.db.clone();
            rt.spawn(async move { end_slot(&db, slot, true).await });
        }
    }

    /// The upload failed: gives the slot back before the answer goes out.
    pub(crate) async fn release(mut self) {
        if let Some(slot) = self.slot.take() {
            end_slot(&self.db, slot, false).await;
        }
    }
}

impl Drop for FormSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let db = self.db.clone();
            rt.spawn(async move { end_slot(&db, slot, false).await });
        }
    }
}

async fn end_slot(db: &crate::db::Db, slot: String, stored: bool) {
    let id = slot.clone();
    if let Err(e) = db
        .write(move |c| crate::db::links::end_form_slot(c, &id, stored))
        .await
    {
        tracing::error!(error = %e, slot = %slot, "ending a link form's slot failed");
    }
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

/// `DELETE /-/u/{token}/uploads/{id}`: of concurrent aborts of one upload, one answers 204 and
/// gives back the link's slot; the others find no upload (404).
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
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified upload does not exist.",
        ),
        Err(e) => from_s3(e),
    }
}
