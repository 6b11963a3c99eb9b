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
        if let Some(md5) = self.md5
            && md5 != got.digests.md5
        {
            return Err(Error::BadDigest {
                expected: B64.encode(md5),
                calculated: B64.encode(got.digests.md5),
            });
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
) -> std::result::Result<Ingested, IngestError<E>>
where
    S: futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
{
    store.ingest(body, max, inline_max, hashes, sniff).await
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
}

/// [`commit`] for a write that holds room under a quota ([`crate::objects::quota`]): the limits
/// are checked again in the commit's transaction, which also drops the reservation (and, for a
/// link's file, counts it against the link and gives it the link's expiry time).
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
) -> Result<()> {
    let reservation = hold.id().map(str::to_owned);
    let body = match staged {
        Staged::Inline(bytes) => Body::Inline(bytes),
        Staged::Temp(temp) => Body::Blob(store.persist(temp).await?),
        // Published by the backend before the control transaction (docs/cluster.md 9.4).
        Staged::Backend(upload) => {
            upload.abort().await;
            return Err(crate::storage::not_built("commit").into());
        }
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
            Ok(())
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

/// PutObjectAcl: gives `bucket/key` the canned ACL `acl`; `false` if there is no such object.
pub async fn set_acl(
    db: &Db,
    store: &Storage,
    bucket: &str,
    key: &str,
    acl: String,
) -> std::result::Result<bool, crate::db::DbError> {
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

/// The quoted hex MD5 S3 uses as the ETag of a single-part object.
pub fn etag_of(md5: &[u8; 16]) -> String {
    format!("\"{}\"", hex::encode(md5))
}
