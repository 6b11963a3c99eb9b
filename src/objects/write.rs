//! Writing an object, for every entry point (PutObject, CopyObject, POST forms): the object's headers as
//! S3 stores them, the checks on what arrived (Content-MD5, SHA-256, additional checksums), and the
//! commit that makes a staged body visible.
//!
//! Order of a write: bytes are staged (in memory, or in a synced temp file renamed into the blob
//! tree), then the metadata row commits in the writer's next group commit, then the blob the old
//! version used is removed. A crash before the commit leaves the old object and an orphan blob for
//! the start-up sweep; after it, the new object and at worst an orphan old blob. Readers see one
//! whole version or the other.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::auth::checksum::ChecksumAlgorithm;
use crate::db::Db;
use crate::db::objects::{Body, ObjectMeta};
use crate::objects::error::{Error, Result};
use crate::objects::quota::{Hold, settle_object};
use crate::storage::Storage;
/// The store's values a write's caller handles (what to hash, what arrived, where it is staged),
/// so that the areas reach the store only through the core.
pub use crate::storage::{Hashes, IngestError, Ingested, Staged};

/// S3's limit for a single PUT or POST.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's limit on user metadata (names and values of `x-amz-meta-*`).
pub const MAX_USER_METADATA: usize = 2048;
/// Under the S3 backend, what of [`MAX_USER_METADATA`] postgate keeps for its own
/// `x-amz-meta-postgate-*` (owner, ACL, detected type, checksum, write id: at most ~430 bytes
/// with their names); the client's metadata and tagging share the rest, so the backend (AWS
/// refuses more than 2 KiB) never sees more than S3 allows.
pub const RESERVED_METADATA: usize = 512;

/// The stored headers of a new object, read from request headers or from POST form fields.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObjectHeaders {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    pub meta: Vec<(String, String)>,
    pub acl: String,
    pub tagging: Option<String>,
}

impl ObjectHeaders {
    /// Reads the headers through `get`, a case-insensitive lookup (request headers or form
    /// fields), with `names` listing every name present (to find `x-amz-meta-*`).
    pub fn read<'a>(
        get: impl Fn(&str) -> Option<String>,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<ObjectHeaders> {
        let mut meta: Vec<(String, String)> = Vec::new();
        for name in names {
            let lower = name.to_ascii_lowercase();
            if let Some(short) = lower.strip_prefix("x-amz-meta-")
                && !meta.iter().any(|(n, _)| n == short)
                && let Some(v) = get(&lower)
            {
                meta.push((short.to_owned(), v));
            }
        }
        let meta_size: usize = meta.iter().map(|(n, v)| n.len() + v.len()).sum();
        if meta_size > MAX_USER_METADATA {
            return Err(Error::MetadataTooLarge(meta_size));
        }
        if let Some(class) = get("x-amz-storage-class") {
            check_storage_class(&class)?;
        }
        // `aws-chunked` describes the request framing, not the object.
        let content_encoding = get("content-encoding").and_then(|v| {
            let rest: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            (!rest.is_empty()).then(|| rest.join(","))
        });
        Ok(ObjectHeaders {
            content_type: get("content-type"),
            cache_control: get("cache-control"),
            content_disposition: get("content-disposition"),
            content_encoding,
            content_language: get("content-language"),
            expires: get("expires"),
            meta,
            acl: parse_canned_acl(get("x-amz-acl").as_deref())?,
            tagging: get("x-amz-tagging"),
        })
    }

    pub fn into_meta(self, size: u64, etag: String, owner: String) -> ObjectMeta {
        ObjectMeta {
            size,
            etag,
            last_modified: crate::db::now_millis(),
            owner,
            acl: self.acl,
            content_type: self.content_type,
            cache_control: self.cache_control,
            content_disposition: self.content_disposition,
            content_encoding: self.content_encoding,
            content_language: self.content_language,
            expires: self.expires,
            meta: self.meta,
            checksum: None,
            tagging: self.tagging,
            detected_type: None,
        }
    }
}

/// AWS's storage classes are accepted (every object is stored the same way); others refused.
pub fn check_storage_class(class: &str) -> Result<()> {
    const KNOWN: &[&str] = &[
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "OUTPOSTS",
        "SNOW",
        "EXPRESS_ONEZONE",
    ];
    if KNOWN.contains(&class) {
        Ok(())
    } else {
        Err(Error::InvalidStorageClass(class.to_owned()))
    }
}

/// `Content-MD5`: base64 of 16 bytes, else `InvalidDigest`.
pub fn parse_content_md5(value: Option<&str>) -> Result<Option<[u8; 16]>> {
    let Some(v) = value else { return Ok(None) };
    B64.decode(v.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or_else(|| Error::InvalidDigest(v.to_owned()))
}

/// What the client said the bytes must hash to.
#[derive(Debug, Default)]
pub struct Expected {
    pub md5: Option<[u8; 16]>,
    pub sha256_hex: Option<String>,
    /// Additional checksum and its value; the value may only arrive in the trailer.
    pub checksum: Option<(ChecksumAlgorithm, Option<String>)>,
}

impl Expected {
    /// Compares an upload's digests with what the client declared.
    pub fn verify(&self, got: &Ingested, trailer_value: Option<&str>) -> Result<()> {
        if let Some(md5) = self.md5 {
            // Asked for whenever a client sends `Content-MD5` ([`wants_md5`]).
            let Some(calculated) = got.digests.md5 else {
                return Err(Error::Io(std::io::Error::other(
                    "Content-MD5 sent but the body's MD5 was not computed",
                )));
            };
            if md5 != calculated {
                return Err(Error::BadDigest {
                    expected: B64.encode(md5),
                    calculated: B64.encode(calculated),
                });
            }
        }
        if let (Some(want), Some(have)) = (&self.sha256_hex, &got.digests.sha256)
            && !want.eq_ignore_ascii_case(&hex::encode(have))
        {
            return Err(Error::Sha256Mismatch {
                client: want.clone(),
                computed: hex::encode(have),
            });
        }
        if let Some((algo, declared)) = &self.checksum {
            let want = declared.as_deref().or(trailer_value);
            let have = got.digests.checksum.as_deref().unwrap_or_default();
            match want {
                Some(want) if want != have => {
                    return Err(Error::ChecksumMismatch(algo.as_str()));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Canned ACLs postgate stores. `x-amz-acl` values outside this list are refused.
pub fn parse_canned_acl(value: Option<&str>) -> Result<String> {
    match value {
        None => Ok("private".into()),
        Some(v @ ("private" | "public-read" | "public-read-write")) => Ok(v.to_owned()),
        Some(
            "authenticated-read"
            | "aws-exec-read"
            | "bucket-owner-read"
            | "bucket-owner-full-control",
        ) => Ok("private".into()),
        Some(other) => Err(Error::InvalidCannedAcl(other.to_owned())),
    }
}

/// A condition the current version must meet for a write to go ahead (conditional PUT).
#[derive(Debug, Clone, Default)]
pub struct WriteCondition {
    /// `If-None-Match: *`: only if the key does not exist.
    pub if_none_match_any: bool,
    /// `If-Match: "etag"`: only if the current version has this ETag.
    pub if_match: Option<String>,
}

impl WriteCondition {
    /// Checks the condition against the current version (`None`: the key has no object).
    pub fn check(&self, current: Option<&ObjectMeta>, key: &str) -> Result<()> {
        match (current, &self.if_match) {
            (Some(_), _) if self.if_none_match_any => {
                Err(Error::PreconditionFailed("If-None-Match"))
            }
            (None, Some(_)) => Err(Error::NoSuchKey(key.to_owned())),
            (Some(cur), Some(want)) if !etag_matches(want, &cur.etag) => {
                Err(Error::PreconditionFailed("If-Match"))
            }
            _ => Ok(()),
        }
    }
}

/// Where a body [`receive`] reads goes (the S3 backend uploads a large body as it arrives, so it
/// must know the object's key and metadata first).
#[derive(Debug, Clone, Copy)]
pub enum Dest<'a> {
    /// An object's body (PutObject, a POST form's file), stored with `headers` for `owner`.
    Object {
        bucket: &'a str,
        key: &'a str,
        headers: &'a ObjectHeaders,
        owner: &'a str,
    },
    /// A part of a multipart upload.
    Part,
    /// Under the S3 backend, part `number` (`len` bytes, as declared) of `bucket/key`, whose
    /// backend multipart upload is `upload_id`.
    BackendPart {
        bucket: &'a str,
        key: &'a str,
        upload_id: &'a str,
        number: u32,
        len: u64,
    },
}

/// Under the S3 backend, user metadata named `x-amz-meta-postgate-*` is postgate's own (the
/// owner, ACL, type and checksum it keeps with the object, docs/cluster.md section 9.1): a
/// client may not send it, so that it can never be forged. Refused with `InvalidArgument`
/// before the body is read; nothing changes under the filesystem store.
pub fn check_reserved(store: &Storage, headers: &ObjectHeaders) -> Result<()> {
    check_reserved_meta(store, &headers.meta)?;
    if store.backend().is_some() {
        let size = headers
            .meta
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
            + headers.tagging.as_ref().map_or(0, String::len);
        if size > MAX_USER_METADATA - RESERVED_METADATA {
            return Err(Error::MetadataTooLarge(size));
        }
    }
    Ok(())
}

/// Under the S3 backend the object is `{bucket}/{key}` in the backend bucket, and S3 caps a
/// key at 1024 bytes: a key that only fits without its bucket is refused with KeyTooLongError
/// before its body is read (docs/cluster.md section 9.1). Nothing changes under the filesystem
/// store, whose keys are checked by [`crate::names::validate_key`] alone.
///
/// Nor may a key have a `.` or `..` segment there: the backend's URL would resolve it away and
/// name another key, or another bucket (`a/../../other/x`); refused with InvalidArgument. The
/// client refuses to send one as well ([`crate::storage::s3::addressable`]), so reads of such a
/// key find nothing.
pub fn check_backend_key(store: &Storage, bucket: &str, key: &str) -> Result<()> {
    if store.backend().is_none() {
        return Ok(());
    }
    let len = bucket.len() + 1 + key.len();
    if len > crate::names::MAX_KEY_BYTES {
        return Err(Error::KeyTooLong(len));
    }
    if !crate::storage::s3::addressable(key) {
        return Err(Error::UnaddressableKey(key.to_owned()));
    }
    Ok(())
}

fn check_reserved_meta(store: &Storage, meta: &[(String, String)]) -> Result<()> {
    if store.backend().is_none() {
        return Ok(());
    }
    match meta.iter().find(|(name, _)| {
        name.to_ascii_lowercase()
            .starts_with(crate::storage::cluster::RESERVED_PREFIX)
    }) {
        Some((name, _)) => Err(Error::ReservedMetadata(format!("x-amz-meta-{name}"))),
        None => Ok(()),
    }
}

/// Receives a body into the store (in memory up to `inline_max` bytes, else a synced temp blob),
/// refusing it past `max` bytes and computing the digests `hashes` asks for: the first step of
/// every write (PutObject, UploadPart, a POST form's file), before [`Expected::verify`] and
/// [`commit`]. `sniff` sees the first bytes as they pass (the detected type, or a mismatch
/// that stops the body when verification is on).
pub async fn receive<S, E>(
    store: &Storage,
    body: S,
    max: u64,
    inline_max: usize,
    hashes: Hashes,
    sniff: crate::sniff::Sniffer,
    dest: Dest<'_>,
) -> std::result::Result<Ingested, IngestError<E>>
where
    S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
{
    // The filesystem store ignores the destination.
    let meta;
    let dest = match dest {
        Dest::Object {
            bucket,
            key,
            headers,
            owner,
        } if store.backend().is_some() => {
            meta = headers
                .clone()
                .into_meta(0, String::new(), owner.to_owned());
            crate::storage::Dest::Object {
                bucket,
                key,
                meta: &meta,
            }
        }
        Dest::BackendPart {
            bucket,
            key,
            upload_id,
            number,
            len,
        } => crate::storage::Dest::BackendPart {
            bucket,
            key,
            upload_id,
            number,
            len,
        },
        _ => crate::storage::Dest::Part,
    };
    store
        .ingest(body, max, inline_max, hashes, sniff, dest)
        .await
}

/// What a write found when it came to commit.
enum Found {
    Committed(Vec<String>),
    Refused(Error),
}

/// Makes a staged body the current version of `bucket/key`, atomically, and removes what the old
/// version used. On any failure the new bytes are removed and the old version stays. The event
/// `origin` describes is recorded in the same transaction (when a target wants it).
#[allow(clippy::too_many_arguments)]
pub async fn commit(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
    staged: Staged,
    cond: WriteCondition,
    origin: crate::events::Origin,
) -> Result<()> {
    commit_reserved(
        db,
        store,
        bucket,
        key,
        meta,
        staged,
        cond,
        &mut Hold::none(),
        origin,
    )
    .await
    .map(|_| ())
}

/// [`commit`] for a write that holds room under a quota ([`crate::objects::quota`]): the limits
/// are checked again in the commit's transaction, which also drops the reservation (and, for a
/// link's file, counts it against the link and gives it the link's expiry time). Answers the
/// stored version's ETag (under the S3 backend, a body sent in parts has a multipart ETag).
#[allow(clippy::too_many_arguments)]
pub async fn commit_reserved(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
    staged: Staged,
    cond: WriteCondition,
    hold: &mut Hold,
    origin: crate::events::Origin,
) -> Result<String> {
    if store.backend().is_some() {
        let from = crate::storage::cluster::NewVersion::Staged(staged);
        return commit_s3(db, store, bucket, key, meta, from, cond, hold, origin).await;
    }
    let etag = meta.etag.clone();
    let reservation = hold.id().map(str::to_owned);
    let body = match staged {
        Staged::Inline(bytes) => Body::Inline(bytes),
        Staged::Temp(temp) => Body::Blob(store.persist(temp).await?),
        // Only the S3 backend stages this way (`commit_s3`).
        Staged::Backend(upload) => {
            upload.abort().await;
            return Err(crate::storage::not_built("commit").into());
        }
        Staged::Part(_) => return Err(crate::storage::not_built("commit of a part").into()),
    };
    let new_blob = match &body {
        Body::Blob(id) => Some(id.clone()),
        _ => None,
    };
    let (b, k) = (bucket.to_owned(), key.to_owned());
    // Built here, not on the writer thread that every commit waits for.
    let event = origin.prepare_created(bucket, key, &meta);
    let catalog = store.catalog();
    let outcome = db
        .write(move |c| {
            if cond.if_none_match_any || cond.if_match.is_some() {
                let current = catalog.get(c, &b, &k, false)?;
                if let Err(refused) = cond.check(current.as_ref().map(|o| &o.meta), &k) {
                    return Ok(Found::Refused(refused));
                }
            }
            let Some(record) = crate::db::buckets::get(c, &b)? else {
                return Ok(Found::Refused(Error::NoSuchBucket(b.clone())));
            };
            let settled =
                settle_object(c, record.quota, &b, &k, meta.size, reservation.as_deref())?;
            let link_id = match settled {
                Ok(link_id) => link_id,
                Err(e) => return Ok(Found::Refused(Error::QuotaExceeded(e))),
            };
            let old = catalog.put(c, &b, &k, &meta, &body)?;
            if let Some(link_id) = &link_id {
                crate::objects::lifecycle::apply_link_expiry(c, link_id, &b, &k)?;
            }
            event.record(c, Some(&meta), link_id, Some(&record.owner))?;
            Ok(Found::Committed(old))
        })
        .await;
    match outcome {
        Ok(Found::Committed(old)) => {
            std::mem::replace(hold, Hold::none()).settled();
            for blob in old {
                store.remove(blob).await;
            }
            Ok(etag)
        }
        other => {
            if let Some(id) = new_blob {
                store.remove(id).await;
            }
            match other {
                Ok(Found::Refused(refused)) => Err(refused),
                Err(e) => Err(e.into()),
                Ok(Found::Committed(_)) => unreachable!("handled above"),
            }
        }
    }
}

/// [`commit_reserved`] under the S3 backend, in the three steps of docs/cluster.md section 9.4:
/// T1 checks what can be checked before the version exists (the bucket, the quota's room for
/// the exact size); B stores it in the backend with the write's condition (`If-None-Match: *`,
/// `If-Match`), which makes it visible; T2 settles (the reservation into the bucket's usage,
/// the link's bytes and expiry, the `object_extras` row, the event). A refusal in T1 or B
/// leaves nothing in the backend (the staged upload is aborted); a refusal or failure of T2
/// deletes the stored version again, with `If-Match` on its ETag so that a newer writer's
/// version is never removed. The client is answered after T2.
///
/// `from` is the new version's body (a staged one) or a server-side copy (CopyObject, whose
/// destination condition Ceph 16 ignores: it is checked with HEAD first as well, not atomic
/// there, docs/cluster.md 8.1).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit_s3(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    mut meta: ObjectMeta,
    staged: crate::storage::cluster::NewVersion,
    cond: WriteCondition,
    hold: &mut Hold,
    origin: crate::events::Origin,
) -> Result<String> {
    use crate::storage::cluster::NewVersion;
    use crate::storage::s3::{self, WriteIf};
    let reservation = hold.id().map(str::to_owned);
    let give_up = |staged: NewVersion| async move {
        if let NewVersion::Staged(Staged::Backend(upload)) = staged {
            upload.abort().await;
        }
    };
    if let Err(e) =
        check_reserved_meta(store, &meta.meta).and_then(|()| check_backend_key(store, bucket, key))
    {
        give_up(staged).await;
        return Err(e);
    }
    // T1.
    let (b, k, r, size) = (
        bucket.to_owned(),
        key.to_owned(),
        reservation.clone(),
        meta.size,
    );
    let checked = db
        .write(move |c| {
            let Some(record) = crate::db::buckets::get(c, &b)? else {
                return Ok(Err(Error::NoSuchBucket(b.clone())));
            };
            let fits =
                crate::objects::quota::check_object(c, record.quota, &b, &k, size, r.as_deref())?;
            Ok(fits.map_err(Error::QuotaExceeded))
        })
        .await;
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => {
            give_up(staged).await;
            return Err(refused);
        }
        Err(e) => {
            give_up(staged).await;
            return Err(e.into());
        }
    }
    // B. One condition goes with the request; both together (never true at once), or a
    // copy's, are checked on a HEAD first.
    let both = cond.if_none_match_any && cond.if_match.is_some();
    let is_copy = matches!(staged, NewVersion::Copy { .. });
    if both || (is_copy && (cond.if_none_match_any || cond.if_match.is_some())) {
        let current = match store.head(bucket, key).await {
            Ok(current) => current,
            Err(e) => {
                give_up(staged).await;
                return Err(e.into());
            }
        };
        if let Err(refused) = cond.check(current.as_ref().map(|o| &o.meta), key) {
            give_up(staged).await;
            return Err(refused);
        }
    }
    let condition = if cond.if_none_match_any {
        Some(WriteIf::Absent)
    } else {
        cond.if_match.clone().map(WriteIf::Matches)
    };
    let stored = match store
        .publish(bucket, key, staged, &meta, condition.as_ref())
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            return Err(match e.code() {
                // A copy's source replaced or deleted meanwhile (its ETag is named).
                Some(s3::Code::PreconditionFailed | s3::Code::NoSuchKey)
                    if condition.is_none() && is_copy =>
                {
                    Error::NoSuchKey(key.to_owned())
                }
                Some(s3::Code::PreconditionFailed) if cond.if_none_match_any => {
                    Error::PreconditionFailed("If-None-Match")
                }
                Some(s3::Code::PreconditionFailed) => Error::PreconditionFailed("If-Match"),
                Some(s3::Code::NoSuchKey) if cond.if_match.is_some() => {
                    Error::NoSuchKey(key.to_owned())
                }
                _ => Error::Io(crate::storage::cluster::io_error(e)),
            });
        }
    };
    meta.etag = stored.etag.clone();
    meta.size = stored.size;
    meta.last_modified = stored
        .last_modified
        .duration_since(std::time::UNIX_EPOCH)
        .map_or_else(|_| crate::db::now_millis(), |d| d.as_millis() as i64);
    // T2.
    let event = origin.prepare_created(bucket, key, &meta);
    let extras = crate::db::extras::Extras {
        etag: meta.etag.clone(),
        size: meta.size,
        acl: Some(meta.acl.clone()),
        detected_type: meta.detected_type.clone(),
        checksum: meta.checksum.as_ref().map(|(a, v)| format!("{a} {v}")),
        expires_at: None,
    };
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let settled = db
        .write(move |c| {
            let Some(record) = crate::db::buckets::get(c, &b)? else {
                return Ok(Err(Error::NoSuchBucket(b.clone())));
            };
            let settled =
                settle_object(c, record.quota, &b, &k, meta.size, reservation.as_deref())?;
            let link_id = match settled {
                Ok(link_id) => link_id,
                Err(e) => return Ok(Err(Error::QuotaExceeded(e))),
            };
            let mut extras = extras;
            if let Some(link_id) = &link_id {
                extras.expires_at =
                    crate::db::lifecycle::link_object_expiry(c, link_id, crate::db::now_millis())?;
            }
            crate::db::extras::put(c, &b, &k, &extras)?;
            event.record(c, Some(&meta), link_id, Some(&record.owner))?;
            Ok(Ok(()))
        })
        .await;
    let failure = match settled {
        Ok(Ok(())) => {
            std::mem::replace(hold, Hold::none()).settled();
            // Settled: the version stays, even if its event cannot be written (500).
            origin.flush(db).await?;
            return Ok(stored.etag);
        }
        Ok(Err(refused)) => refused,
        Err(e) => Error::Db(e),
    };
    // T2 refused or failed: the version must not stay (the reservation goes with `hold`).
    let backend = store.backend().expect("S3 path");
    let backend_key = crate::storage::cluster::backend_key(bucket, key);
    if let Err(e) = backend.delete_if(&backend_key, Some(&stored.etag)).await {
        tracing::warn!(bucket, key, error = %e,
            "a write whose settling failed could not be removed from the backend");
    }
    Err(failure)
}

/// PutObjectAcl: gives `bucket/key` the canned ACL `acl`; `false` if there is no such object.
pub async fn set_acl(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    acl: String,
) -> std::result::Result<bool, crate::db::DbError> {
    if store.backend().is_some() {
        // S3: the object stays as it is (a CopyObject onto itself would change a multipart
        // object's ETag); its `object_extras` row, valid while the HEAD's ETag is current,
        // carries the new ACL.
        let Some(found) = store
            .head(bucket, key)
            .await
            .map_err(crate::db::DbError::File)?
        else {
            return Ok(false);
        };
        let (b, k) = (bucket.to_owned(), key.to_owned());
        let (etag, size) = (found.meta.etag, found.meta.size);
        db.write(move |c| crate::db::extras::set_acl(c, &b, &k, &etag, size, &acl))
            .await?;
        return Ok(true);
    }
    let (b, k) = (bucket.to_owned(), key.to_owned());
    let catalog = store.catalog();
    db.write(move |c| catalog.set_acl(c, &b, &k, &acl)).await
}

/// Whether an `If-Match`/`If-None-Match` list matches `etag` (`*` matches anything; quotes and
/// weak prefixes are optional, as clients differ).
pub fn etag_matches(list: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.trim_start_matches("W/").trim_matches('"') == bare
    })
}

/// Whether a write's body must be hashed with MD5: always on the filesystem store (its ETag is
/// the MD5), and under the S3 backend only for a client's `Content-MD5` check, since there the
/// ETag answered, stored and evented is the one the backend gives ([`commit_s3`], and a part's
/// in `store_part`).
pub fn wants_md5(store: &Storage, content_md5: Option<&[u8; 16]>) -> bool {
    store.backend().is_none() || content_md5.is_some()
}

/// The ETag a write's metadata carries until it is committed: the body's MD5 on the filesystem
/// store (its final ETag); empty when the MD5 was not computed, which only happens under the
/// S3 backend, whose commit replaces it with the backend's ETag before anything reads it.
pub fn provisional_etag(digests: &crate::storage::Digests) -> String {
    digests.md5.as_ref().map(etag_of).unwrap_or_default()
}

/// The quoted hex MD5 S3 uses as the ETag of a single-part object.
pub fn etag_of(md5: &[u8; 16]) -> String {
    format!("\"{}\"", hex::encode(md5))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MD5 is computed on the filesystem store always, under the S3 backend only for a
    /// client's `Content-MD5`; a body not asked for it has none (never a made-up one).
    #[tokio::test]
    async fn md5_only_where_it_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Storage::open_fs(dir.path()).unwrap();
        let backend = crate::storage::s3::Backend::new(
            "http://127.0.0.1:9",
            "postgate",
            "us-east-1",
            "key",
            "secret",
            crate::storage::s3::Options::default(),
        )
        .unwrap();
        let s3 = Storage::S3(backend);
        let sent = [7u8; 16];
        assert!(wants_md5(&fs, None));
        assert!(wants_md5(&fs, Some(&sent)));
        assert!(!wants_md5(&s3, None));
        assert!(wants_md5(&s3, Some(&sent)));

        for want in [false, true] {
            let mut hashes = Hashes::new(want, false, None);
            assert_eq!(hashes.any(), want);
            hashes.update(b"abc");
            let digests = hashes.finish();
            let md5 = want.then(|| <[u8; 16]>::from(<md5::Md5 as md5::Digest>::digest(b"abc")));
            assert_eq!(digests.md5, md5);
            let etag = provisional_etag(&digests);
            assert_eq!(etag.is_empty(), !want, "{etag}");
        }
    }
}
