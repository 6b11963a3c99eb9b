//! The S3 arm of the seam (`--backend s3`, docs/cluster.md section 9): how postgate's objects are
//! named and described in the one backend bucket, and the backend calls behind
//! [`super::Storage`]'s methods (ingest, publish, HEAD, ranged reads, listings, deletes).
//!
//! - Names: `bucket/key` is the backend key `"{bucket}/{key}"` (section 9.1).
//! - Metadata: the stored headers and `x-amz-meta-*` go as they are; postgate's own attributes
//!   ride in reserved `x-amz-meta-postgate-*` names (owner, ACL, tagging, detected type,
//!   checksum, the write's id), which a client may not send (the core refuses them).
//! - Bodies: up to `inline_max` bytes are held in memory and sent as one PutObject from bytes
//!   (retryable); a longer body goes into an [`s3::Uploader`] as it arrives (spooled parts, a
//!   multipart upload past one part), nothing visible until it is published.

use std::io;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt as _};

use super::s3::{self, ByteRange, Code, CompletedPart, Finished, WriteIf};
use super::{Digests, Hashes, IngestError, Ingested, Staged};
use crate::db::objects::{Body, ObjectMeta, ObjectRecord};

/// The prefix of the user-metadata names postgate keeps for itself in the backend.
pub const RESERVED_PREFIX: &str = "postgate-";

/// The backend key of `bucket/key`.
pub fn backend_key(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// The backend metadata of an object described by `meta` (its size and ETag are the backend's),
/// with the write's id.
pub fn backend_meta(meta: &ObjectMeta, write_id: &str) -> s3::Meta {
    let mut out = s3::Meta {
        content_type: meta.content_type.clone(),
        content_disposition: meta.content_disposition.clone(),
        content_encoding: meta.content_encoding.clone(),
        content_language: meta.content_language.clone(),
        cache_control: meta.cache_control.clone(),
        expires: meta.expires.clone(),
        ..s3::Meta::default()
    };
    for (name, value) in &meta.meta {
        out.user.insert(name.to_ascii_lowercase(), value.clone());
    }
    let mut reserved = |name: &str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.user.insert(format!("{RESERVED_PREFIX}{name}"), value);
        }
    };
    reserved("owner", Some(meta.owner.clone()));
    reserved("acl", Some(meta.acl.clone()));
    reserved("tagging", meta.tagging.clone());
    reserved("detected-type", meta.detected_type.clone());
    reserved(
        "checksum",
        meta.checksum.as_ref().map(|(a, v)| format!("{a} {v}")),
    );
    reserved("write", Some(write_id.to_owned()));
    out
}

/// The record HEAD gives of backend object `backend_key` of `key`: the owner is empty when the
/// object carries none (written around postgate: the caller gives it the bucket's owner).
pub fn record_of(key: &str, backend_key: String, info: s3::ObjectInfo) -> ObjectRecord {
    let mut user = info.meta.user;
    let mut take = |name: &str| user.remove(&format!("{RESERVED_PREFIX}{name}"));
    let owner = take("owner").unwrap_or_default();
    let acl = take("acl").unwrap_or_else(|| "private".into());
    let tagging = take("tagging");
    let detected_type = take("detected-type");
    let checksum =
        take("checksum").and_then(|c| c.split_once(' ').map(|(a, v)| (a.to_owned(), v.to_owned())));
    user.retain(|name, _| !name.starts_with(RESERVED_PREFIX));
    let last_modified = info
        .last_modified
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    ObjectRecord {
        key: key.to_owned(),
        meta: ObjectMeta {
            size: info.size,
            etag: info.etag.clone(),
            last_modified,
            owner,
            acl,
            content_type: info.meta.content_type,
            cache_control: info.meta.cache_control,
            content_disposition: info.meta.content_disposition,
            content_encoding: info.meta.content_encoding,
            content_language: info.meta.content_language,
            expires: info.meta.expires,
            meta: user.into_iter().collect(),
            checksum,
            tagging,
            detected_type,
        },
        body: Body::Backend {
            key: backend_key,
            etag: info.etag,
        },
    }
}

/// A backend error as an I/O error: a missing object is `NotFound`.
pub fn io_error(e: s3::Error) -> io::Error {
    match e.code() {
        Some(Code::NoSuchKey) => io::Error::new(io::ErrorKind::NotFound, e),
        _ => io::Error::other(e),
    }
}

/// `Storage::ingest` under S3 for an object's body (see the module's doc): `meta` is what the
/// object is stored with if its body grows past memory.
#[allow(clippy::too_many_arguments)]
pub(super) async fn ingest<S, E>(
    backend: &s3::Backend,
    mut body: S,
    max_size: u64,
    inline_max: usize,
    mut hashes: Hashes,
    mut sniff: crate::sniff::Sniffer,
    key: String,
    meta: &ObjectMeta,
) -> Result<Ingested, IngestError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut size: u64 = 0;
    let mut buf: Vec<u8> = Vec::new();
    let mut upload: Option<s3::Uploader> = None;
    // A body held in memory is hashed here; past it, on the blocking pool (`HashJob`), unless
    // no digest is asked for (no MD5 under this backend without `Content-MD5`).
    let mut job: Option<HashJob> = None;
    let fed = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(IngestError::Body)?;
            size += chunk.len() as u64;
            if size > max_size {
                return Err(IngestError::TooLarge { seen: size });
            }
            sniff.feed(&chunk).map_err(IngestError::Mismatch)?;
            match &mut job {
                Some(job) => job.update(&chunk).await?,
                None if size as usize > inline_max && hashes.any() => {
                    let mut started = HashJob::start(std::mem::replace(
                        &mut hashes,
                        Hashes::new(false, false, None),
                    ));
                    started.update(&chunk).await?;
                    job = Some(started);
                }
                None => hashes.update(&chunk),
            }
            match &mut upload {
                Some(up) => up.write(&chunk).await.map_err(to_ingest)?,
                None if size as usize > inline_max => {
                    let write_id = uuid::Uuid::new_v4().simple().to_string();
                    let mut up = backend.uploader(&key, backend_meta(meta, &write_id));
                    let head = std::mem::take(&mut buf);
                    let written = async {
                        up.write(&head).await?;
                        up.write(&chunk).await
                    }
                    .await;
                    upload = Some(up);
                    written.map_err(to_ingest)?;
                }
                None => buf.extend_from_slice(&chunk),
            }
        }
        std::mem::take(&mut sniff)
            .finish()
            .map_err(IngestError::Mismatch)
    }
    .await;
    let detected = match fed {
        Ok(detected) => detected,
        Err(e) => {
            // Nothing of a refused or broken body stays in the backend.
            if let Some(up) = upload {
                up.abort().await;
            }
            return Err(e);
        }
    };
    let digests = match job {
        Some(job) => match job.finish().await {
            Ok(digests) => digests,
            Err(e) => {
                if let Some(up) = upload {
                    up.abort().await;
                }
                return Err(IngestError::Io(e));
            }
        },
        None => hashes.finish(),
    };
    let staged = match upload {
        Some(up) => Staged::Backend(Box::new(up)),
        None => Staged::Inline(buf),
    };
    Ok(Ingested {
        size,
        digests,
        detected,
        staged,
    })
}

/// Chunks are handed to the hashing job in batches of about this many bytes.
const HASH_BATCH: usize = 512 * 1024;
/// Batches queued for the hashing job; the body waits when they are all taken.
const HASH_DEPTH: usize = 4;

/// A body's digests (MD5, SHA-256, an additional checksum) computed on the blocking pool, as
/// the filesystem store's ingest does: hashing a large body on an async worker would hold up
/// every other request that worker serves. The chunks are shared with the job, not copied.
struct HashJob {
    tx: tokio::sync::mpsc::Sender<Vec<Bytes>>,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    task: tokio::task::JoinHandle<Digests>,
}

impl HashJob {
    fn start(mut hashes: Hashes) -> HashJob {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(HASH_DEPTH);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(batch) = rx.blocking_recv() {
                batch.iter().for_each(|chunk| hashes.update(chunk));
            }
            hashes.finish()
        });
        HashJob {
            tx,
            batch: Vec::new(),
            batch_bytes: 0,
            task,
        }
    }

    async fn update(&mut self, chunk: &Bytes) -> io::Result<()> {
        self.batch.push(chunk.clone());
        self.batch_bytes += chunk.len();
        if self.batch_bytes >= HASH_BATCH {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> io::Result<()> {
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        self.tx
            .send(batch)
            .await
            .map_err(|_| io::Error::other("the hashing job stopped"))
    }

    async fn finish(mut self) -> io::Result<Digests> {
        if !self.batch.is_empty() {
            self.send().await?;
        }
        drop(self.tx);
        self.task.await.map_err(io::Error::other)
    }
}

/// `Storage::ingest` under S3 for a part of a client's multipart upload: the chunks go to
/// `part` as they arrive (its last one held back), hashed and shown to `sniff`. A refused or
/// broken body drops the part, so the backend stores nothing and keeps an earlier part of that
/// number; the caller verifies the digests before it sends the part.
pub(super) async fn ingest_part<S, E>(
    mut part: s3::PendingPart,
    mut body: S,
    max_size: u64,
    hashes: Hashes,
    mut sniff: crate::sniff::Sniffer,
) -> Result<Ingested, IngestError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let mut size: u64 = 0;
    // Without a digest to compute (no MD5 asked for, no checksum), no hashing job.
    let mut job = hashes.any().then(|| HashJob::start(hashes));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(IngestError::Body)?;
        size += chunk.len() as u64;
        if size > max_size {
            return Err(IngestError::TooLarge { seen: size });
        }
        sniff.feed(&chunk).map_err(IngestError::Mismatch)?;
        if let Some(job) = &mut job {
            job.update(&chunk).await?;
        }
        part.write(chunk).await.map_err(to_ingest)?;
    }
    let detected = sniff.finish().map_err(IngestError::Mismatch)?;
    let digests = match job {
        Some(job) => job.finish().await?,
        None => Hashes::new(false, false, None).finish(),
    };
    Ok(Ingested {
        size,
        digests,
        detected,
        staged: Staged::Part(Box::new(part)),
    })
}

fn to_ingest<E>(e: s3::Error) -> IngestError<E> {
    IngestError::Io(io_error(e))
}

/// What step B of a write (docs/cluster.md section 9.4) makes the new version from.
pub enum NewVersion {
    /// A body `ingest` staged (PutObject, a POST form's file).
    Staged(Staged),
    /// A server-side copy of the backend object `key` while its version is `etag` (CopyObject):
    /// `size` bytes, the bytes never pass through postgate.
    Copy {
        key: String,
        etag: String,
        size: u64,
    },
}

/// Makes `from` the object `key` with `meta` (PutObject from bytes, the Uploader's PutObject /
/// Complete, or a server-side copy), under `condition`. Nothing is visible on failure.
pub(super) async fn publish(
    backend: &s3::Backend,
    key: &str,
    from: NewVersion,
    meta: &ObjectMeta,
    condition: Option<&WriteIf>,
) -> Result<Finished, s3::Error> {
    let write_id = uuid::Uuid::new_v4().simple().to_string();
    match from {
        NewVersion::Staged(Staged::Inline(bytes)) => {
            backend
                .put_bytes(key, &backend_meta(meta, &write_id), bytes.into(), condition)
                .await
        }
        NewVersion::Staged(Staged::Backend(upload)) => upload.finish_if(condition).await,
        NewVersion::Staged(Staged::Temp(_) | Staged::Part(_)) => Err(s3::Error::Protocol(
            "a local temp blob or a part cannot be published as an object".into(),
        )),
        NewVersion::Copy {
            key: source,
            etag,
            size,
        } => {
            let meta = backend_meta(meta, &write_id);
            copy(backend, &source, &etag, size, key, &meta, condition).await
        }
    }
}

/// CopyObject inside the backend of `source` (version `etag`, `size` bytes) to `key` with
/// `meta` (REPLACE: postgate rewrites its reserved names). A source larger than the backend's
/// `copy_part_size` (S3's CopyObject takes up to 5 GiB) is copied as a multipart upload of
/// UploadPartCopy ranges, aborted on any failure. Every request names the source's ETag, so a
/// source replaced meanwhile fails the copy (`PreconditionFailed`) instead of mixing versions.
async fn copy(
    backend: &s3::Backend,
    source: &str,
    etag: &str,
    size: u64,
    key: &str,
    meta: &s3::Meta,
    condition: Option<&WriteIf>,
) -> Result<Finished, s3::Error> {
    let part_size = backend.options().copy_part_size;
    if size <= part_size {
        let copied = backend
            .copy(source, Some(etag), key, Some(meta), condition)
            .await?;
        // CopyObject's answer gives the copy's ETag and time: no HEAD needed.
        let at = copied
            .last_modified
            .parse::<jiff::Timestamp>()
            .ok()
            .map(std::time::SystemTime::from);
        return backend.written(key, &copied.etag, Some(size), at).await;
    }
    let upload_id = backend.create_multipart(key, meta).await?;
    let copied = async {
        let mut parts = Vec::new();
        for (number, (first, last)) in (1..).zip(copy_ranges(size, part_size)) {
            let part_etag = backend
                .upload_part_copy(
                    source,
                    Some(etag),
                    Some((first, last)),
                    key,
                    &upload_id,
                    number,
                )
                .await?;
            parts.push(CompletedPart {
                number,
                etag: part_etag,
            });
        }
        backend
            .complete_multipart(key, &upload_id, &parts, condition)
            .await
    }
    .await;
    if copied.is_err()
        && let Err(e) = backend.abort_multipart(key, &upload_id).await
        && e.code() != Some(&Code::NoSuchUpload)
    {
        tracing::warn!(key, error = %e, "could not abort a failed multipart copy");
    }
    copied
}

/// The ranges (first, last, inclusive) a `size`-byte source is copied in: parts of
/// `part_size` bytes (at least S3's smallest part, 5 MiB), the last one shorter.
pub fn copy_ranges(size: u64, part_size: u64) -> Vec<(u64, u64)> {
    let part = part_size.max(s3::MIN_PART_SIZE);
    (0..size.div_ceil(part))
        .map(|i| (i * part, ((i + 1) * part).min(size) - 1))
        .collect()
}

/// The backend's multipart uploads under its bucket that no `uploads` row names (`named`: the
/// rows' backend upload ids) and that began before `before`: a killed node's `Uploader`s and
/// multipart copies, and uploads whose row was never written. They are aborted; answers how
/// many. An upload whose initiation time the backend did not give is left alone.
pub async fn sweep_orphans(
    backend: &s3::Backend,
    named: &std::collections::HashSet<String>,
    before: std::time::SystemTime,
) -> Result<usize, s3::Error> {
    let mut aborted = 0;
    for upload in backend.list_multipart_uploads("").await? {
        let old = upload.initiated.is_some_and(|t| t < before);
        if !old || named.contains(&upload.upload_id) {
            continue;
        }
        match backend
            .abort_multipart(&upload.key, &upload.upload_id)
            .await
        {
            Ok(()) => aborted += 1,
            Err(e) if e.code() == Some(&Code::NoSuchUpload) => {}
            Err(e) => {
                tracing::warn!(key = %upload.key, error = %e, "could not abort an orphan upload")
            }
        }
    }
    Ok(aborted)
}

/// Every object of `bucket` under `prefix` in the backend, with its key (without the bucket),
/// ETag and last-modified time (milliseconds): the lifecycle sweep's candidates.
pub async fn list_prefix(
    backend: &s3::Backend,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, String, i64)>, s3::Error> {
    let strip = format!("{bucket}/");
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = backend
            .list(&s3::ListRequest {
                prefix: Some(format!("{strip}{prefix}")),
                continuation_token: token.take(),
                ..s3::ListRequest::default()
            })
            .await?;
        for object in page.objects {
            let Some(key) = object.key.strip_prefix(&strip) else {
                continue;
            };
            let modified = object
                .last_modified
                .parse::<jiff::Timestamp>()
                .map_or(i64::MAX, |t| t.as_millisecond());
            out.push((key.to_owned(), object.etag, modified));
        }
        match page.next_continuation_token {
            Some(next) => token = Some(next),
            None => return Ok(out),
        }
    }
}

/// Bytes `start..start + len` of the backend object `key` while its version is `etag`:
/// `NotFound` when another version (or none) is current (the GET reads the object again).
pub(super) async fn stream(
    backend: &s3::Backend,
    key: &str,
    etag: &str,
    start: u64,
    len: u64,
) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
    if len == 0 {
        return Ok(futures_util::stream::empty().boxed());
    }
    let range = ByteRange::Inclusive(start, start + len - 1);
    match backend.get_if(key, Some(range), Some(etag)).await {
        Ok(got) => Ok(got
            .body
            .map(|chunk| chunk.map_err(io::Error::other))
            .boxed()),
        Err(e) if matches!(e.code(), Some(Code::PreconditionFailed | Code::NoSuchKey)) => {
            Err(io::Error::new(io::ErrorKind::NotFound, e))
        }
        Err(e) => Err(io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_copy_is_planned_in_whole_parts_and_a_short_last_one() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(
            copy_ranges(12 * MIB, 5 * MIB),
            [
                (0, 5 * MIB - 1),
                (5 * MIB, 10 * MIB - 1),
                (10 * MIB, 12 * MIB - 1)
            ]
        );
        assert_eq!(copy_ranges(10 * MIB, 5 * MIB).len(), 2);
        // Never below S3's smallest part.
        assert_eq!(
            copy_ranges(6 * MIB, 1),
            [(0, 5 * MIB - 1), (5 * MIB, 6 * MIB - 1)]
        );
        // A 5 TiB source in 5 GiB parts stays within S3's 10,000 parts.
        assert_eq!(copy_ranges(5 << 40, 5 << 30).len(), 1024);
        assert_eq!(
            copy_ranges(5 << 40, 5 << 30).last(),
            Some(&((5 << 40) - (5 << 30), (5 << 40) - 1))
        );
    }
}
