//! The storage backend seam: where an object's bytes go, and how the core reaches them.
//!
//! The core (`objects/`) and `state` hold one [`Storage`] and call only its methods; no other
//! room reaches a backend (`tests/architecture.rs` forbids the areas to import `storage`).
//! Today there is one backend, the local filesystem store ([`fs::FsStore`]); an S3 backend
//! (`--backend s3`, see docs/cluster.md) is a second variant, built on [`s3`], the client of an
//! S3 cluster (streaming uploads with bounded memory, ranged reads, listings, multipart).
//!
//! # An enum, not a trait object
//!
//! The surface is async (`ingest`, `persist`, `stream_segments`, ...). A `dyn Backend` needs a
//! boxed future per call (`async fn` in a trait is not object-safe), on the hot path of every
//! upload and read; a generic `AppState<B: Backend>` would carry its parameter through every
//! handler and the router. An enum with one variant per backend is static dispatch: each method
//! is one `match` that the compiler inlines, the futures stay unboxed, and a new backend is a new
//! variant whose missing arms the compiler lists. The set of backends is closed (the binary
//! knows them all), which is the case an enum is for.
//!
//! # What the seam carries today
//!
//! The bytes ([`Storage`]: stage a body, make it durable, copy ranges, stream ranges, remove,
//! sweep) and the object catalog ([`Catalog`]: an object's row, its metadata and where its bytes
//! lie). The value types ([`Hashes`], [`Digests`], [`Ingested`], [`Staged`], [`Segment`],
//! [`IngestError`]) are the filesystem store's and backend-neutral except for
//! [`Staged::Temp`]/[`TempBlob`] and [`Segment`], which name local blobs: an S3 backend adds its
//! own staged form (an upload in the backend not yet made current) beside them.
//!
//! # The S3 variant
//!
//! [`Storage::S3`] (`--backend s3`, experimental) stores each object in one bucket of an S3
//! cluster ([`cluster`]: names, metadata, ingest, publish, reads). Its reads, PutObject, POST
//! forms, deletes and client multipart uploads (parts streamed into the backend's upload,
//! [`Dest::BackendPart`]) are wired (docs/cluster.md section 9); the methods of the filesystem
//! store's flows that it does not use (persist, stage_bytes, copy_segments, the blob sweep)
//! answer [`not_built`]; copies are the backend's own ([`cluster::NewVersion::Copy`]) and its
//! sweep is of orphan multipart uploads ([`cluster::sweep_orphans`]).

pub mod catalog;
pub mod cluster;
pub mod fs;
pub mod s3;

use std::io;
use std::path::Path;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;

pub use catalog::Catalog;
pub use fs::{
    Digests, FsStore, Hashes, IngestError, Ingested, Segment, Staged, TempBlob, private_dir,
    segments_of,
};

/// Where a body being ingested goes: the S3 backend must know it before the bytes arrive (a
/// body past memory is uploaded as it comes); the filesystem store ignores it.
#[derive(Debug, Clone, Copy)]
pub enum Dest<'a> {
    /// An object's body (PutObject, a POST form's file) for `bucket/key`, stored with `meta`
    /// (its size and ETag are not known yet).
    Object {
        bucket: &'a str,
        key: &'a str,
        meta: &'a crate::db::objects::ObjectMeta,
    },
    /// A part of a client's multipart upload (filesystem store).
    Part,
    /// Part `number` (`len` bytes, as declared) of the backend's multipart upload `upload_id`
    /// of `bucket/key` (S3 backend): streamed through as it arrives (docs/cluster.md 9.2).
    BackendPart {
        bucket: &'a str,
        key: &'a str,
        upload_id: &'a str,
        number: u32,
        len: u64,
    },
}

/// The configured storage backend. Cheap to clone (shared handles inside).
#[derive(Debug, Clone)]
pub enum Storage {
    /// Blobs under the data directory, metadata in SQLite (the default, `--backend fs`).
    Fs(FsStore),
    /// Objects (bytes and metadata) in one bucket of an S3 cluster (`--backend s3`,
    /// docs/cluster.md section 9).
    S3(s3::Backend),
}

/// What an arm of the S3 backend that is not written yet answers: an `Unsupported` I/O error
/// naming the operation. Unreachable while start-up refuses `--backend s3`.
pub fn not_built(operation: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the S3 backend's {operation} is not built yet (docs/cluster.md section 9)"),
    )
}

impl Storage {
    /// The local filesystem store under `data_dir` (creates `blobs/` and `tmp/`).
    pub fn open_fs(data_dir: &Path) -> io::Result<Storage> {
        FsStore::open(data_dir).map(Storage::Fs)
    }

    /// Where this backend keeps object metadata. A `Copy` value, so that the core's transaction
    /// closures can take it along for nothing.
    pub fn catalog(&self) -> Catalog {
        match self {
            Storage::Fs(_) => Catalog::Sqlite,
            Storage::S3(_) => Catalog::S3,
        }
    }

    /// Reads `body` to its end into a staged body, refusing it past `max_size` bytes, with the
    /// digests `hashes` asks for and the first bytes shown to `sniff` ([`FsStore::ingest`]).
    pub async fn ingest<S, E>(
        &self,
        body: S,
        max_size: u64,
        inline_max: usize,
        hashes: Hashes,
        sniff: crate::sniff::Sniffer,
        dest: Dest<'_>,
    ) -> Result<Ingested, IngestError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        match (self, dest) {
            (Storage::Fs(fs), _) => fs.ingest(body, max_size, inline_max, hashes, sniff).await,
            (Storage::S3(backend), Dest::Object { bucket, key, meta }) => {
                let key = cluster::backend_key(bucket, key);
                cluster::ingest(
                    backend, body, max_size, inline_max, hashes, sniff, key, meta,
                )
                .await
            }
            (
                Storage::S3(backend),
                Dest::BackendPart {
                    bucket,
                    key,
                    upload_id,
                    number,
                    len,
                },
            ) => {
                let part = backend.pending_part(
                    &cluster::backend_key(bucket, key),
                    upload_id,
                    number,
                    len,
                    None,
                );
                cluster::ingest_part(part, body, max_size, hashes, sniff).await
            }
            (Storage::S3(_), Dest::Part) => Err(IngestError::Io(not_built("UploadPart"))),
        }
    }

    /// The S3 backend's client, `None` under the filesystem store: the core's S3 paths
    /// (docs/cluster.md section 9.6) match on it once at their top.
    pub fn backend(&self) -> Option<&s3::Backend> {
        match self {
            Storage::Fs(_) => None,
            Storage::S3(backend) => Some(backend),
        }
    }

    /// S3: whether the backend holds no object of `bucket` (one listed key is enough to say
    /// no). An error: the backend cannot answer now.
    pub async fn is_empty(&self, bucket: &str) -> io::Result<bool> {
        let Storage::S3(backend) = self else {
            return Err(not_built("is_empty (filesystem store: read the catalog)"));
        };
        let page = backend
            .list(&s3::ListRequest {
                prefix: Some(cluster::backend_key(bucket, "")),
                max_keys: Some(1),
                ..s3::ListRequest::default()
            })
            .await
            .map_err(cluster::io_error)?;
        Ok(page.objects.is_empty())
    }

    /// S3: the current version of `bucket/key` as HEAD describes it (`None`: no such object).
    /// Its owner is empty when the object carries none.
    pub async fn head(
        &self,
        bucket: &str,
        key: &str,
    ) -> io::Result<Option<crate::db::objects::ObjectRecord>> {
        let Storage::S3(backend) = self else {
            return Err(not_built("head (filesystem store: read the catalog)"));
        };
        let backend_key = cluster::backend_key(bucket, key);
        match backend.head(&backend_key).await {
            Ok(info) => Ok(Some(cluster::record_of(key, backend_key, info))),
            Err(e) if e.code() == Some(&s3::Code::NoSuchKey) => Ok(None),
            Err(e) => Err(cluster::io_error(e)),
        }
    }

    /// S3: makes `from` (a staged body, or a server-side copy) the current version of
    /// `bucket/key` with `meta`, if `condition` holds (step B of docs/cluster.md section 9.4).
    /// On any failure nothing is stored.
    pub async fn publish(
        &self,
        bucket: &str,
        key: &str,
        from: cluster::NewVersion,
        meta: &crate::db::objects::ObjectMeta,
        condition: Option<&s3::WriteIf>,
    ) -> Result<s3::Finished, s3::Error> {
        let Storage::S3(backend) = self else {
            return Err(s3::Error::Config("publish needs the S3 backend".into()));
        };
        let key = cluster::backend_key(bucket, key);
        cluster::publish(backend, &key, from, meta, condition).await
    }

    /// Makes a staged temp blob durable under a generated name; returns that name.
    pub async fn persist(&self, temp: TempBlob) -> io::Result<String> {
        match self {
            Storage::Fs(fs) => fs.persist(temp).await,
            Storage::S3(_) => Err(not_built("persist")),
        }
    }

    /// Bytes already in memory as a staged temp blob (a small multipart part).
    pub async fn stage_bytes(&self, bytes: Vec<u8>) -> io::Result<TempBlob> {
        match self {
            Storage::Fs(fs) => fs.stage_bytes(bytes).await,
            Storage::S3(_) => Err(not_built("stage_bytes")),
        }
    }

    /// Byte ranges of stored blobs, in order, into one staged temp blob (CopyObject,
    /// UploadPartCopy), hashed when `hashes` is given.
    pub async fn copy_segments(
        &self,
        segments: Vec<Segment>,
        hashes: Option<Hashes>,
    ) -> io::Result<(TempBlob, Option<Digests>)> {
        match self {
            Storage::Fs(fs) => fs.copy_segments(segments, hashes).await,
            Storage::S3(_) => Err(not_built("copy_segments")),
        }
    }

    /// A stream of byte ranges of stored blobs; `NotFound` when one is already gone (a newer
    /// version committed: read the row again).
    pub async fn stream_segments(
        &self,
        segments: Vec<Segment>,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        match self {
            Storage::Fs(fs) => fs.stream_segments(segments).await,
            Storage::S3(_) => Err(not_built("stream_segments")),
        }
    }

    /// S3: bytes `start..start + len` of backend object `key` in its version `etag` (one
    /// ranged GET with `If-Match`); `NotFound` when that version is no longer current.
    pub async fn stream_backend(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        len: u64,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        match self {
            Storage::Fs(_) => Err(not_built("stream_backend (filesystem store)")),
            Storage::S3(backend) => cluster::stream(backend, key, etag, start, len).await,
        }
    }

    /// Removes a blob no row refers to any more (deferred while a reader streams it).
    pub async fn remove(&self, id: String) {
        match self {
            Storage::Fs(fs) => fs.remove(id).await,
            // No blobs: what a replaced or refused S3 write leaves is undone by the backend
            // calls of the write itself (docs/cluster.md section 9.3), never by blob id.
            Storage::S3(_) => {
                tracing::warn!(blob = %id, "{}", not_built("remove"));
            }
        }
    }

    /// Start-up sweep of unfinished uploads and unreferenced blobs: `(temps, orphans)` removed.
    /// Blocking: run it on the blocking pool.
    pub fn sweep(
        &self,
        referenced: &std::collections::HashSet<String>,
    ) -> io::Result<(usize, usize)> {
        match self {
            Storage::Fs(fs) => fs.sweep(referenced),
            Storage::S3(_) => Err(not_built("sweep")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the S3 variant does not do yet answers `Unsupported` naming itself, its catalog is
    /// `Catalog::S3`, and nothing touches the network (the endpoint is never called).
    #[tokio::test]
    async fn the_s3_variant_answers_not_built() {
        let backend = s3::Backend::new(
            "http://127.0.0.1:9",
            "postgate",
            "us-east-1",
            "key",
            "secret",
            s3::Options::default(),
        )
        .unwrap();
        let store = Storage::S3(backend);
        assert_eq!(store.catalog(), Catalog::S3);
        let unsupported = |e: io::Error, what: &str| {
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert!(e.to_string().contains(what), "{e}");
        };
        let body = futures_util::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"x"))]);
        match store
            .ingest(
                body,
                10,
                0,
                Hashes::new(true, false, None),
                crate::sniff::Sniffer::detect_only(),
                Dest::Part,
            )
            .await
        {
            Err(IngestError::Io(e)) => unsupported(e, "UploadPart"),
            other => panic!("ingest: {:?}", other.err()),
        }
        unsupported(
            store.stage_bytes(b"x".to_vec()).await.err().unwrap(),
            "stage_bytes",
        );
        unsupported(
            store.copy_segments(Vec::new(), None).await.err().unwrap(),
            "copy_segments",
        );
        unsupported(
            store.stream_segments(Vec::new()).await.err().unwrap(),
            "stream_segments",
        );
        unsupported(store.sweep(&Default::default()).unwrap_err(), "sweep");
        store.remove("blob".into()).await;
    }
}
