//! The link itself and its rules, for every path that uploads through one (its page, its
//! multipart routes, Uppy's routes, a form posted with its policy, S3 parts of its uploads):
//! creation, whether it is open or full, the types it accepts, the names its files get, and the
//! slot each file takes.

use axum::http::StatusCode;

use crate::db::DbError;
use crate::db::links::{LinkRecord, Reservation};
use crate::error::{JsonError, S3Error, S3ErrorCode};
use crate::state::AppState;

/// Metadata field pinned by every link policy: the link's public id.
pub const LINK_META_FIELD: &str = "x-amz-meta-upload-link";

/// What a route needs of the link behind a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The link exists, whatever its state: enough to abort one of its uploads.
    Exists,
    /// Not revoked, not expired: enough for an upload the link already counted (a full link
    /// lets its uploads finish).
    Open,
    /// Open and not full: it can take a new file.
    Usable,
}

/// Why a token does not lead to a link a route can use.
#[derive(Debug)]
pub enum Unavailable {
    /// No link has this token.
    Unknown,
    /// Revoked, expired or full: the reason, for the person uploading.
    Closed(&'static str),
    /// The database failed.
    Failed(DbError),
}

/// Loads the link behind `token`, then checks it can serve what the route `need`s: the one
/// place that does, for the page, its JSON routes and Uppy's.
pub async fn load(app: &AppState, token: &str, need: Need) -> Result<LinkRecord, Unavailable> {
    let link = match app.links.get(token).await {
        Ok(Some(link)) => link,
        Ok(None) => return Err(Unavailable::Unknown),
        Err(e) => return Err(Unavailable::Failed(e)),
    };
    app.know_link(&link).await;
    // Every link route's access-log line names the link, its bucket and the key that signs
    // its uploads.
    crate::telemetry::note(|t| {
        t.link = Some(link.id.clone());
        t.bucket = Some(link.bucket.clone());
        t.access_key = Some(link.access_key.clone());
    });
    let refusal = match need {
        Need::Exists => None,
        Need::Open => link.closed(),
        Need::Usable => link.unusable(),
    };
    match refusal {
        None => Ok(link),
        Some(reason) => Err(Unavailable::Closed(reason)),
    }
}

impl From<Unavailable> for JsonError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::Unknown => JsonError::new(
                StatusCode::NOT_FOUND,
                "LinkUnavailable",
                "This upload link does not exist.",
            ),
            Unavailable::Closed(reason) => {
                JsonError::new(StatusCode::GONE, "LinkUnavailable", reason)
            }
            Unavailable::Failed(e) => e.into(),
        }
    }
}

/// Why a reservation was refused, for the person uploading (`None` once the slot is taken).
pub fn refusal(reservation: &Reservation) -> Option<Unavailable> {
    match reservation {
        Reservation::Taken => None,
        Reservation::Unknown => Some(Unavailable::Unknown),
        Reservation::Refused(link) => Some(Unavailable::Closed(link.unusable().unwrap_or(FULL))),
    }
}

/// A byte count as people read it: `512 bytes`, `10 MiB`, `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// A new link record with a fresh token and public id.
pub fn new_link(
    bucket: &str,
    prefix: &str,
    max_size: u64,
    content_type: Option<String>,
    max_files: Option<u64>,
    expires_in: std::time::Duration,
    access_key: &str,
) -> LinkRecord {
    let now = crate::db::now_millis();
    LinkRecord {
        token: crate::db::links::new_token(),
        id: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        max_size,
        content_type,
        max_files,
        uploaded_files: 0,
        access_key: access_key.to_owned(),
        created_at: now,
        expires_at: now + expires_in.as_millis() as i64,
        revoked: false,
        verify_type: false,
        expire_objects_after: None,
        max_total_size: None,
        uploaded_bytes: 0,
    }
}

/// `closed()`, the rule the core also enforces, is defined in `objects::link`.
impl LinkRecord {
    /// Whether every file the link accepts is received or on its way. A full link still lets
    /// the uploads it counted finish (their parts, their completion).
    pub fn full(&self) -> bool {
        self.max_files.is_some_and(|m| self.uploaded_files >= m)
    }

    /// Why the link cannot take a new file, if it can't: closed, or full.
    pub fn unusable(&self) -> Option<&'static str> {
        self.closed().or_else(|| self.full().then_some(FULL))
    }

    /// Whether the link accepts a file of type `content_type` (a `Content-Type` value).
    ///
    /// The one rule for every path (form POST, multipart, Uppy): the link's list is split on
    /// commas; an entry ending in `/` (or `/*`) is a family and matches any type in it
    /// (`image/` takes `image/svg+xml`); any other entry must equal the file's media type.
    /// Comparisons ignore case and the parameters after `;`. A value that is not one
    /// `type/subtype` media type (such as a comma list) matches nothing. No (or an empty) list:
    /// any type.
    pub fn accepts_type(&self, content_type: &str) -> bool {
        let Some(rule) = &self.content_type else {
            return true;
        };
        if type_entries(rule).next().is_none() {
            return true;
        }
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let valid = media.split_once('/').is_some_and(|(t, s)| {
            let token = |x: &str| !x.is_empty() && x.bytes().all(is_token_byte);
            token(t) && token(s)
        });
        if !valid {
            return false;
        }
        let media = media.to_ascii_lowercase();
        type_entries(rule).any(|entry| match entry {
            TypeEntry::Family(family) => media.starts_with(&family.to_ascii_lowercase()),
            TypeEntry::Exact(exact) => media == exact.to_ascii_lowercase(),
        })
    }
}

/// One entry of a link's type list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeEntry<'a> {
    /// `image/` (written `image/` or `image/*`): every type of the family.
    Family(&'a str),
    /// `image/png`: exactly this media type.
    Exact(&'a str),
}

/// The entries of a link's `content_type` list, in order (empty entries skipped).
pub fn type_entries(rule: &str) -> impl Iterator<Item = TypeEntry<'_>> {
    rule.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.strip_suffix('*') {
            Some(family) if family.ends_with('/') => TypeEntry::Family(family),
            _ if e.ends_with('/') => TypeEntry::Family(e),
            _ => TypeEntry::Exact(e),
        })
}

/// RFC 9110 `tchar`: the bytes of a media type's type and subtype.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

const FULL: &str = "This upload link has received all the files it accepts.";

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

/// The keys [`free_key`] tries for a file called `name` under `prefix`, in order: `name.ext`,
/// then `name (2).ext`, `name (3).ext`, ...
fn candidate_keys(prefix: &str, name: &str) -> Vec<String> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
    std::iter::once(format!("{prefix}{name}"))
        .chain((2..=NUMBERED_NAMES).map(|n| format!("{prefix}{stem} ({n}){ext}")))
        .collect()
}

/// The keys [`free_key`] would try that unfinished uploads in the shared control database use
/// (none with this node's own upload rows, which `free_key` reads in its transaction): passed
/// to it as `busy`.
pub(crate) async fn busy_keys(
    app: &AppState,
    bucket: &str,
    prefix: &str,
    name: &str,
) -> Result<Vec<String>, crate::db::DbError> {
    app.uploads
        .keys_in_progress(bucket, &candidate_keys(prefix, name))
        .await
}

/// The first key under `prefix` for a file called `name` that no object and no unfinished
/// upload uses (nor `busy` names): `name.ext`, then `name (2).ext`, `name (3).ext`, ... Link
/// uploads are create-only, so a name already taken would only be refused.
pub(crate) fn free_key(
    c: &rusqlite::Connection,
    bucket: &str,
    prefix: &str,
    name: &str,
    busy: &[String],
) -> Result<String, crate::db::DbError> {
    let taken = |key: &str| -> Result<bool, crate::db::DbError> {
        // `object_extras`: an object stored in an S3 backend through this node (one written
        // by another node is caught by the create-only write's `If-None-Match: *`).
        Ok(busy.iter().any(|b| b == key)
            || crate::db::objects::get(c, bucket, key, false)?.is_some()
            || crate::db::extras::get(c, bucket, key)?.is_some()
            || crate::db::uploads::key_in_progress(c, bucket, key)?)
    };
    for key in candidate_keys(prefix, name) {
        if !taken(&key)? {
            return Ok(key);
        }
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    };
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
    crate::telemetry::note(|t| t.link = Some(link_id.to_owned()));
    let link = app.links.get_by_id(link_id).await?;
    if let Some(link) = &link {
        app.know_link(link).await;
    }
    let pinned = |policy: &crate::policy::Policy| {
        policy.conditions().iter().any(|c| {
            matches!(c.kind(), crate::policy::ConditionKind::Eq { field, value }
                if field.name() == Some(LINK_META_FIELD) && value == link_id)
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
                LINK_META_FIELD
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
    let reserved = app.links.reserve_form(&link.id, bucket, key).await?;
    match reserved {
        Ok(slot) => Ok(FormSlot {
            links: app.links.clone(),
            slot: Some(slot),
            verify_type: link.verify_type,
        }),
        Err(reservation) => match refusal(&reservation) {
            Some(Unavailable::Closed(reason)) => {
                Err(S3Error::new(S3ErrorCode::AccessDenied, reason))
            }
            _ => Err(S3Error::new(
                S3ErrorCode::AccessDenied,
                "Unknown upload link.",
            )),
        },
    }
}

/// The slot a form took on its link ([`check_form`]): [`FormSlot::keep`] once the file is
/// stored, else it is given back exactly once: by [`FormSlot::release`] on a failed upload, or,
/// if the request is dropped midway (the client went away), when the guard is dropped. The slot
/// is recorded in `link_form_slots` until then, so that if the server dies first, start-up
/// settles it ([`crate::db::links::settle_form_slots`], or over the shared control database the
/// node's start-up settle of its own slots).
pub(crate) struct FormSlot {
    links: crate::control::Links,
    /// The `link_form_slots` record.
    slot: Option<String>,
    /// The link demands that its files' bytes match their declared type.
    pub(crate) verify_type: bool,
}

impl FormSlot {
    /// The slot's id (its `link_form_slots` row) while it is held.
    pub(crate) fn id(&self) -> Option<&str> {
        self.slot.as_deref()
    }

    /// The file is stored: the slot is the link's file now. Its record is dropped in the
    /// background (if the server dies first, start-up finds the file and keeps the slot).
    pub(crate) fn keep(mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let links = self.links.clone();
            rt.spawn(async move { end_slot(&links, slot, true).await });
        }
    }

    /// The upload failed: gives the slot back before the answer goes out.
    pub(crate) async fn release(mut self) {
        if let Some(slot) = self.slot.take() {
            end_slot(&self.links, slot, false).await;
        }
    }
}

impl Drop for FormSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let links = self.links.clone();
            rt.spawn(async move { end_slot(&links, slot, false).await });
        }
    }
}

async fn end_slot(links: &crate::control::Links, slot: String, stored: bool) {
    if let Err(e) = links.end_form_slot(&slot, stored).await {
        tracing::error!(error = %e, slot = %slot, "ending a link form's slot failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_types(rule: &str) -> LinkRecord {
        new_link(
            "b",
            "",
            1,
            Some(rule.to_owned()),
            None,
            std::time::Duration::from_secs(60),
            "ak",
        )
    }

    #[test]
    fn a_type_list_is_matched_exactly() {
        let l = with_types("image/png, image/jpeg");
        assert!(l.accepts_type("image/png"));
        assert!(l.accepts_type("IMAGE/JPEG; charset=binary"));
        assert!(!l.accepts_type("image/svg+xml"));
        assert!(!l.accepts_type("image/pngx"));
        assert!(!l.accepts_type("text/html"));
        assert!(!l.accepts_type("image/png,text/html"));
        assert!(!l.accepts_type(""));
    }

    #[test]
    fn a_family_takes_its_members_only() {
        for rule in ["image/", "image/*"] {
            let l = with_types(rule);
            assert!(l.accepts_type("image/svg+xml"), "{rule}");
            assert!(!l.accepts_type("image/png, text/html"), "{rule}");
            assert!(!l.accepts_type("imagex/png"), "{rule}");
            assert!(!l.accepts_type("text/plain"), "{rule}");
        }
        let open = LinkRecord {
            content_type: None,
            ..with_types("x/")
        };
        assert!(open.accepts_type("anything"));
        assert!(with_types(" , ").accepts_type("text/html"));
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(100 << 20), "100 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
