//! Hosted upload pages under `/-/u/<token>` (shareable upload links) and their static files.
//!
//! A link lets anyone holding it upload into one bucket, under one prefix, within the link's
//! limits. The page carries a POST policy the server signs on the link creator's behalf; the
//! limits are enforced by that policy (size range, key prefix, content type, expiry), and the
//! policy also pins `x-amz-meta-upload-link` to the link's public id, so the POST handler knows
//! the form as the link's (`link::check_form`): it counts the file, checks its type
//! against the link's exact list, refuses to replace an object, and refuses uploads on a revoked,
//! expired or full link even with a policy issued earlier.
//! Without JavaScript the page is a plain form that follows `success_action_redirect` to a
//! "received" page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::i18n::Tr;
use super::link::{self, Need, Unavailable};
use crate::db::links::LinkRecord;
use crate::error::JsonError;
use crate::policy::{ContentTypeRule, KeySpec, PostPolicyRequest, PresignedPost};
use crate::state::{AppState, base_url};

/// A page's policy lives at most this long (or until the link expires, if sooner).
const POLICY_LIFETIME_SECS: i64 = 3600;

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    t: Tr,
    token: String,
    bucket: String,
    prefix: String,
    max_size: String,
    max_size_bytes: u64,
    multipart_threshold: u64,
    content_type: Option<String>,
    /// The link's types in words ("images or PDF files"), for the page and its script.
    type_words: Option<String>,
    content_type_default: String,
    /// The policy pins the one type the link takes: the form carries it already.
    type_in_form: bool,
    /// The picker's `accept`: the link's types, families written `image/*` (empty: any).
    accept: String,
    /// Every type the link takes is an image: phones may offer the camera (`capture`).
    images_only: bool,
    /// Anyone may read what arrives (a public-read bucket): the page may link to it.
    public_read: bool,
    files_left: Option<u64>,
    /// "3 more files accepted", in the page's language.
    files_left_text: String,
    /// "This link expires " / "." around the `<time>` element, in the page's language.
    expires_before: String,
    expires_after: String,
    /// The expiry as RFC 3339 (`<time datetime>`, read by the script) and in words, UTC.
    expires_iso: String,
    expires_exact: String,
    /// Every word the script writes, in the page's language (JSON).
    script_words: String,
    form: PresignedPost,
}

/// The link's types in words ("images or PDF files"), or `None` for a link that takes any type.
fn type_words(t: &Tr, rule: Option<&str>) -> Option<String> {
    use link::TypeEntry;
    let words: Vec<String> = link::type_entries(rule.unwrap_or_default())
        .map(|e| match e {
            TypeEntry::Family(f) => {
                let family = f.trim_end_matches('/').to_ascii_lowercase();
                match family.as_str() {
                    "image" | "video" | "audio" | "text" => t.get(&format!("types.{family}")),
                    _ => t.fmt("types.files", &[("name", &family)]),
                }
            }
            TypeEntry::Exact(exact) => {
                let sub = exact.rsplit('/').next().unwrap_or(exact);
                let sub = sub.strip_prefix("x-").unwrap_or(sub).to_ascii_uppercase();
                t.fmt("types.files", &[("name", &sub)])
            }
        })
        .collect();
    match &words[..] {
        [] => None,
        [one] => Some(one.clone()),
        [init @ .., last] => Some(t.fmt("types.or", &[("list", &init.join(", ")), ("last", last)])),
    }
}

/// The picker's `accept` for a link's type list, and whether every entry is an image type.
fn accept_for(rule: Option<&str>) -> (String, bool) {
    use link::TypeEntry;
    let entries: Vec<TypeEntry> = link::type_entries(rule.unwrap_or_default()).collect();
    let accept = entries
        .iter()
        .map(|e| match e {
            TypeEntry::Family(f) => format!("{f}*"),
            TypeEntry::Exact(t) => (*t).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let images = !entries.is_empty()
        && entries.iter().all(|e| match e {
            TypeEntry::Family(t) | TypeEntry::Exact(t) => {
                t.to_ascii_lowercase().starts_with("image/")
            }
        });
    (accept, images)
}

#[derive(Template)]
#[template(path = "received.html")]
struct ReceivedPage {
    t: Tr,
    bucket: String,
    key: String,
    etag: String,
    back: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: Tr,
    title: String,
    message: String,
}

fn render(status: StatusCode, t: Tr, page: impl Template) -> Response {
    render_uploading_to(status, t, page, None)
}

/// Renders a page with headers that keep it to what it needs: its own script and stylesheet,
/// no frames, nothing sniffed, no token-bearing `Referer` to other sites. A page that uploads
/// may also send to `base`, the server's configured URL, which need not be the origin the page
/// was opened on.
fn render_uploading_to(
    status: StatusCode,
    t: Tr,
    page: impl Template,
    base: Option<&str>,
) -> Response {
    let html = match page.render() {
        Ok(html) => html,
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let to = base
        .and_then(|b| url::Url::parse(b).ok())
        .map(|u| u.origin())
        .filter(url::Origin::is_tuple)
        .map(|o| format!(" {}", o.ascii_serialization()))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'{to}; form-action 'self'{to}; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut res = (status, Html(html)).into_response();
    let headers = res.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    // The words follow the request's Accept-Language: caches keep one page per language.
    headers.insert(
        header::CONTENT_LANGUAGE,
        header::HeaderValue::from_static(t.lang),
    );
    headers.insert(
        header::VARY,
        header::HeaderValue::from_static("Accept-Language"),
    );
    res
}

/// An error page in the visitor's language: `title` and `message` are keys, or (a link's
/// closed reason) English text with a translation.
fn error_page(status: StatusCode, t: Tr, title: &str, message: &str) -> Response {
    render(
        status,
        t,
        ErrorPage {
            t,
            title: t.get(title),
            message: t.from_english(&t.get(message)),
        },
    )
}

/// The link behind `token`, if it can take a new file; else the page that says why.
async fn load_link(app: &AppState, token: &str, t: Tr) -> Result<LinkRecord, Response> {
    link::load(app, token, Need::Usable)
        .await
        .map_err(|why| match why {
            Unavailable::Closed(reason) => {
                error_page(StatusCode::GONE, t, "error.unavailable", reason)
            }
            Unavailable::Unknown => error_page(
                StatusCode::NOT_FOUND,
                t,
                "error.not_found",
                "error.not_found_text",
            ),
            Unavailable::Failed(e) => {
                tracing::error!(error = %e, "loading link failed");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    t,
                    "error.failed",
                    "error.failed_text",
                )
            }
        })
}

/// One file a policy is signed for (the page's script and Uppy name the file first): its key and
/// its type, both already checked against the link, are then pinned exactly (`eq`).
pub(crate) struct ForFile {
    pub key: String,
    pub content_type: String,
}

/// What a link's policy signs for `Content-Type` when the file is not known: the tightest the
/// policy language allows (`eq` for one exact type, `starts-with` for one family, and for a
/// list the `starts-with` of its common prefix, since a policy cannot say "one of"). The POST
/// handler enforces the exact list in every case ([`LinkRecord::accepts_type`]).
fn link_type_rule(rule: Option<&str>) -> ContentTypeRule {
    use link::TypeEntry;
    let entries: Vec<TypeEntry> = link::type_entries(rule.unwrap_or_default()).collect();
    match entries[..] {
        // Without a restriction the browser may still send the file's type (starts-with "").
        [] => ContentTypeRule::Prefix(String::new()),
        [TypeEntry::Exact(only)] => ContentTypeRule::Exact(only.to_owned()),
        [TypeEntry::Family(family)] => ContentTypeRule::Prefix(family.to_owned()),
        _ => ContentTypeRule::OneOf(
            entries
                .iter()
                .map(|e| match e {
                    TypeEntry::Family(t) | TypeEntry::Exact(t) => (*t).to_owned(),
                })
                .collect(),
        ),
    }
}

/// Signs the policy a link's page posts with: with `redirect` for the plain form (303 to the
/// "received" page), without it for the page's script (201 with the `<PostResponse>`); for one
/// named file (`file`), or for any file under the link's prefix.
pub(crate) async fn link_policy(
    app: &AppState,
    t: Tr,
    link: &LinkRecord,
    base: &str,
    redirect: Option<String>,
    file: Option<ForFile>,
) -> Result<PresignedPost, Response> {
    let status = redirect.is_none().then_some(201);
    let ak = link.access_key.clone();
    let key = match app.find_key(&ak).await {
        Ok(Some(k)) => k,
        _ => {
            return Err(error_page(
                StatusCode::GONE,
                t,
                "error.unavailable",
                "error.key_gone",
            ));
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let remaining_secs = (link.expires_at - crate::db::now_millis()) / 1000;
    let lifetime = remaining_secs.clamp(1, POLICY_LIFETIME_SECS) as u64;
    let (key_spec, content_type) = match file {
        Some(f) => (
            KeySpec::Exact(f.key),
            ContentTypeRule::Exact(f.content_type),
        ),
        None => (
            KeySpec::Prefix(link.prefix.clone()),
            link_type_rule(link.content_type.as_deref()),
        ),
    };
    let req = PostPolicyRequest {
        expires_in: std::time::Duration::from_secs(lifetime),
        content_type: Some(content_type),
        metadata: vec![("upload-link".to_owned(), link.id.clone())],
        success_action_status: status,
        success_action_redirect: redirect,
        ..PostPolicyRequest::new(link.bucket.clone(), key_spec, link.max_size)
    };
    let url = format!("{base}/{}", link.bucket);
    crate::policy::issue(
        &req,
        &key.access_key,
        &key.secret_key,
        &app.config.region,
        &url,
        now,
    )
    .map_err(|e| {
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            t,
            "error.sign",
            &e.to_string(),
        )
    })
}

/// `GET /-/u/{token}`
pub async fn upload_page(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let t = Tr::from_headers(&headers);
    let link = match load_link(&app, &token, t).await {
        Ok(l) => l,
        Err(page) => return page,
    };
    let base = base_url(&app, &headers);
    let redirect = format!("{base}/-/u/{token}/done");
    let form = match link_policy(&app, t, &link, &base, Some(redirect), None).await {
        Ok(f) => f,
        Err(page) => return page,
    };
    let files_left = link
        .max_files
        .map(|m| m.saturating_sub(link.uploaded_files));
    let expires_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(link.expires_at.max(0) as i128 * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let expires_iso = expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let sentence = t.get("expires");
    let (expires_before, expires_after) = sentence.split_once("{when}").unwrap_or((&sentence, ""));
    let expires_exact = t.fmt("expires_on", &[("date", &t.date_utc(expires_at))]);
    let content_type_default = link
        .content_type
        .as_deref()
        .map(|ct| ct.split(',').next().unwrap_or(ct).trim().to_owned())
        .unwrap_or_default();
    let (accept, images_only) = accept_for(link.content_type.as_deref());
    let public_read = matches!(
        app.bucket_with_grant(&link.bucket, "").await,
        Ok(Some((b, _))) if crate::objects::access::is_public_read(&b)
    );
    render_uploading_to(
        StatusCode::OK,
        t,
        UploadPage {
            t,
            type_words: type_words(&t, link.content_type.as_deref()),
            expires_before: expires_before.to_owned(),
            expires_after: expires_after.to_owned(),
            expires_iso,
            expires_exact,
            script_words: t.script_words(),
            accept,
            images_only,
            public_read,
            bucket: link.bucket.clone(),
            prefix: link.prefix.clone(),
            max_size: link::human_size(link.max_size),
            max_size_bytes: link.max_size,
            multipart_threshold: app.config.link_uploads.multipart_threshold,
            content_type: link.content_type.clone(),
            content_type_default,
            type_in_form: form.field("Content-Type").is_some(),
            files_left,
            files_left_text: files_left
                .map(|n| t.count("files_left", n))
                .unwrap_or_default(),
            form,
            token,
        },
        Some(&base),
    )
}

#[derive(serde::Deserialize)]
pub struct PolicyQuery {
    filename: Option<String>,
    #[serde(rename = "type")]
    content_type: Option<String>,
}

/// `GET /-/u/{token}/policy[?filename=&type=]`: a fresh form for the page's script (JSON, like
/// the API's). With `filename`, the form is for that one file: its type is checked against the
/// link now (403 JSON if refused) and pinned, and its key is the file's name under the prefix,
/// or `name (2).ext`, ... when that name is taken (a link never replaces a file).
pub async fn link_policy_json(
    State(app): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<PolicyQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let t = Tr::from_headers(&headers);
    let link = match link::load(&app, &token, Need::Usable).await {
        Ok(link) => link,
        // The page's script shows the message (in the page's language): no database detail.
        Err(Unavailable::Failed(_)) => {
            return JsonError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "LinkUnavailable",
                t.get("error.failed_text"),
            )
            .into_response();
        }
        Err(Unavailable::Closed(reason)) => {
            return JsonError::new(StatusCode::GONE, "LinkUnavailable", t.from_english(reason))
                .into_response();
        }
        Err(why) => return JsonError::from(why).into_response(),
    };
    let json_error =
        |status, message| JsonError::new(status, "LinkUnavailable", message).into_response();
    let file = match query.filename {
        Some(name) => match for_file(&app, &link, &name, query.content_type).await {
            Ok(f) => Some(f),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let base = base_url(&app, &headers);
    match link_policy(&app, t, &link, &base, None, file).await {
        Ok(post) => match serde_json::to_string(&post) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "Please try again."),
        },
        Err(_) => json_error(StatusCode::GONE, "This upload link can no longer be used."),
    }
}

/// Checks a named file against the link (name, type) and picks its key: the file's name under
/// the link's prefix if free, else the first free `name (n).ext`. Errors are JSON answers.
pub(crate) async fn for_file(
    app: &AppState,
    link: &LinkRecord,
    filename: &str,
    content_type: Option<String>,
) -> Result<ForFile, JsonError> {
    use super::link::{allowed_type, busy_keys, file_name, free_key};
    let content_type = allowed_type(link, content_type)?;
    let name = file_name(filename)?;
    let busy = busy_keys(app, &link.bucket, &link.prefix, &name).await?;
    let (bucket, prefix) = (link.bucket.clone(), link.prefix.clone());
    let key = app
        .db
        .read(move |c| free_key(c, &bucket, &prefix, &name, &busy))
        .await?;
    crate::names::validate_key(&key)?;
    crate::telemetry::note(|t| t.key = Some(key.clone()));
    Ok(ForFile { key, content_type })
}

#[derive(serde::Deserialize)]
pub struct Received {
    bucket: Option<String>,
    key: Option<String>,
    etag: Option<String>,
}

/// `GET /-/u/{token}/done`: where the no-JavaScript form lands after a successful upload.
pub async fn received_page(
    Path(token): Path<String>,
    Query(q): Query<Received>,
    headers: axum::http::HeaderMap,
) -> Response {
    let t = Tr::from_headers(&headers);
    render(
        StatusCode::OK,
        t,
        ReceivedPage {
            t,
            bucket: q.bucket.unwrap_or_default(),
            key: q.key.unwrap_or_default(),
            etag: q.etag.unwrap_or_default(),
            back: Some(format!("/-/u/{token}")),
        },
    )
}

/// `GET /-/static/{file}`: the page's script and stylesheet, compiled into the binary.
pub async fn static_file(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "upload.js" => (
            include_str!("../../static/upload.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_str!("../../static/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
