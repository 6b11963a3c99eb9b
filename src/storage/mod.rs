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

pub mod catalog;
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

/// The configured storage backend. Cheap to clone (shared handles inside).
#[derive(Debug, Clone)]
pub enum Storage {
    /// Blobs under the data directory, metadata in SQLite (the default, `--backend fs`).
    Fs(FsStore),
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
    ) -> Result<Ingested, IngestError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        match self {
            Storage::Fs(fs) => fs.ingest(body, max_size, inline_max, hashes, sniff).await,
        }
    }

    /// Makes a staged temp blob durable under a generated name; returns that name.
    pub async fn persist(&self, temp: TempBlob) -> io::Result<String> {
        match self {
            Storage::Fs(fs) => fs.persist(temp).await,
        }
    }

    /// Bytes already in memory as a staged temp blob (a small multipart part).
    pub async fn stage_bytes(&self, bytes: Vec<u8>) -> io::Result<TempBlob> {
        match self {
            Storage::Fs(fs) => fs.stage_bytes(bytes).await,
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
        }
    }

    /// Removes a blob no row refers to any more (deferred while a reader streams it).
    pub async fn remove(&self, id: String) {
        match self {
            Storage::Fs(fs) => fs.remove(id).await,
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
        }
    }
}
