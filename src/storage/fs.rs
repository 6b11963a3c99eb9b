//! Object bytes on the filesystem.
//!
//! An upload streams into memory while it is small (it will be stored inline in its SQLite row)
//! and spills to `data/tmp/<uuid>` once it passes the inline threshold. Past that point a writer
//! and a hasher work side by side: one writes the bytes, one hashes them (MD5 for the ETag, plus
//! SHA-256 or an additional checksum when the request asks), so a large upload runs at the speed
//! of the slower of the two, not their sum. The body's chunks reach both in batches, shared
//! (never copied) and written with one `writev`: at least 512 KiB when the body arrives faster
//! than they take it, and whatever has arrived when it arrives slowly, so that a slow upload holds
//! neither a thread nor a full batch. A slow upload's batches are short jobs on a few threads
//! shared by every upload; a fast one's writer and hasher get threads of their own (see `Pipe`).
//! The writer (`Writeback`) starts the write-out of each 8 MiB as it goes and runs an `fdatasync`
//! in the background every 32 MiB, so the disk is busy while the body still arrives and the
//! closing fsync is short. Server-side copies write through it too.
//!
//! The temp file is fsynced and renamed into `data/blobs/ab/cd/<uuid>` (`cd` fsynced, and `ab` and
//! `blobs` the first time a new fan-out directory is made)
//! before the metadata row commits; `TempBlob`'s `Drop` removes a temp file that never got that
//! far. Blob names are generated, never derived from a key.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, Stream, StreamExt};
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

use crate::auth::checksum::Checksummer;

#[derive(Debug, thiserror::Error)]
pub enum IngestError<E> {
    #[error("request body failed: {0}")]
    Body(E),
    #[error("body exceeds the maximum size after {seen} bytes")]
    TooLarge { seen: u64 },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The first bytes are not what the upload declared (verification on): nothing is kept.
    #[error("{0}")]
    Mismatch(crate::sniff::Mismatch),
}

/// The digests an upload is checked against. MD5 is only computed when asked for: the
/// filesystem store's ETag is the body's MD5, but under the S3 backend the ETag is the
/// backend's and the MD5 only serves a client's `Content-MD5` check (it was about half of the
/// gateway's CPU on a large PutObject, docs/cluster.md 10.3).
pub struct Hashes {
    md5: Option<Md5>,
    sha256: Option<Sha256>,
    checksum: Option<Checksummer>,
}

/// What the hashes came to once the body ended.
#[derive(Debug, Clone)]
pub struct Digests {
    /// `None` when it was not asked for: never stands in for one (it would become an ETag).
    pub md5: Option<[u8; 16]>,
    pub sha256: Option<[u8; 32]>,
    /// Base64 of the additional checksum, when one was asked for.
    pub checksum: Option<String>,
}

impl Hashes {
    pub fn new(want_md5: bool, want_sha256: bool, checksum: Option<Checksummer>) -> Hashes {
        Hashes {
            md5: want_md5.then(Md5::new),
            sha256: want_sha256.then(Sha256::new),
            checksum,
        }
    }

    /// Whether any digest is asked for: with none, a body need not pass a hashing job.
    pub(crate) fn any(&self) -> bool {
        self.md5.is_some() || self.sha256.is_some() || self.checksum.is_some()
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(c) = &mut self.checksum {
            c.update(data);
        }
    }

    pub(crate) fn finish(self) -> Digests {
        Digests {
            md5: self.md5.map(|h| h.finalize().into()),
            sha256: self.sha256.map(|h| h.finalize().into()),
            checksum: self.checksum.map(|c| c.finish()),
        }
    }
}

/// An upload whose bytes are durable in `data/tmp` (or in memory, when small), not yet committed.
pub struct Ingested {
    pub size: u64,
    pub digests: Digests,
    /// The type the first bytes show ([`crate::sniff::detect`]).
    pub detected: Option<&'static str>,
    pub staged: Staged,
}

pub enum Staged {
    Inline(Vec<u8>),
    Temp(TempBlob),
    /// The S3 backend's staged body: its bytes on their way into the backend, nothing visible
    /// until the write publishes it; dropped, it aborts the backend's upload. Not produced yet
    /// (docs/cluster.md section 9.2).
    Backend(Box<super::s3::Uploader>),
    /// The S3 backend's part of a client's multipart upload, streamed into the backend's
    /// UploadPart with its last chunk held back: `send` stores it, a drop stores nothing.
    Part(Box<super::s3::PendingPart>),
}

impl Staged {
    /// Lets go of a body that will not be committed (a digest or size check refused it). A
    /// backend upload is aborted before this returns, so the refusal answered next leaves no
    /// open upload behind; dropping it would abort later, in a task of its own.
    pub async fn discard(self) {
        if let Staged::Backend(upload) = self {
            upload.abort().await;
        }
    }
}

/// A temp file that is removed on drop unless `persist` moved it into the blob tree.
pub struct TempBlob {
    id: uuid::Uuid,
    path: PathBuf,
    armed: bool,
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `len` bytes of blob `blob` from `offset`.
#[derive(Debug, Clone)]
pub struct Segment {
    pub blob: String,
    pub offset: u64,
    pub len: u64,
}

/// The segments covering bytes `start..start + len` of an object made of `parts` (blob, size).
pub fn segments_of(parts: &[(String, u64)], start: u64, len: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    let (mut pos, end) = (0u64, start + len);
    for (blob, size) in parts {
        let (from, to) = (pos.max(start), (pos + size).min(end));
        if from < to {
            out.push(Segment {
                blob: blob.clone(),
                offset: from - pos,
                len: to - from,
            });
        }
        pos += size;
    }
    out
}

#[derive(Debug, Clone)]
pub struct FsStore {
    // Shared, not owned: a store is cloned into every write's blocking task and every read's
    // pins, and a clone should not copy its paths.
    blobs: Arc<Path>,
    tmp: Arc<Path>,
    pins: Arc<Mutex<Pins>>,
    /// Fan-out directories (`blobs/ab/cd`) whose own names this process has made durable.
    durable_dirs: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Blobs that responses and copies are reading, and blobs whose removal waits for them.
///
/// A newer version may commit while an older one is being read and remove the older blobs.
/// A reader pins the blobs of the version it read (after reading its row), so that it can open
/// them one at a time as it streams: removal of a pinned blob is deferred until the last pin
/// goes. A blob being removed cannot be pinned (the reader reads the row again and finds the
/// newer version).
#[derive(Debug, Default)]
struct Pins {
    readers: HashMap<String, usize>,
    /// Removed (logically): no new pins; unlinked when no reader is left.
    doomed: HashSet<String>,
}

/// Holds pins on some blobs; dropping it removes those whose removal was deferred.
pub struct PinGuard {
    store: FsStore,
    ids: Vec<String>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut unlink = Vec::new();
        {
            let mut pins = self.store.pins.lock().unwrap_or_else(|e| e.into_inner());
            for id in self.ids.drain(..) {
                if let Some(n) = pins.readers.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        pins.readers.remove(&id);
                        if pins.doomed.remove(&id) {
                            unlink.push(id);
                        }
                    }
                }
            }
        }
        if unlink.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = unlink.iter().map(|id| self.store.path_of(id)).collect();
        let remove = move || paths.iter().for_each(|p| drop(std::fs::remove_file(p)));
        // Usually dropped by a response body on an async worker: unlink on the blocking pool.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Chunks are handed over in batches of at least this many bytes while the body arrives faster
/// than the jobs take it: one wake-up of each job and one `writev` per batch rather than per
/// network read. A body that arrives slowly is handed over in smaller batches (`SLOW_BODY`).
const BATCH_BYTES: usize = 512 * 1024;
/// A batch still short of `BATCH_BYTES` this long after its first chunk comes from a slow body:
/// it is handed over as it is, so that a slow upload does not hold its chunks (and the read
/// buffers they share) for the seconds a full batch would take. A fast body (hundreds of MB/s)
/// fills a batch well within it.
const SLOW_BODY: std::time::Duration = std::time::Duration::from_millis(10);
/// A batch grows to this while the writer or the hasher is still busy with the previous one;
/// then the body waits. With the batch being written, at most twice this is held per upload.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Body bytes held by every upload together between the network and the disk: gathered into
/// batches, or being written and hashed. A chunk takes its length from this budget before it
/// joins a batch and gives it back once its batch is written and hashed; when the budget is
/// spent, the body waits (and TCP slows the client), the backpressure a busy disk should give.
/// Without it, 100 slow uploads whose jobs stalled together (each starting a flush as they all
/// crossed 32 MiB) each grew a batch to `MAX_BATCH_BYTES` meanwhile: 4 MiB per upload at the
/// peak. Twice `MAX_BATCH_BYTES` keeps one fast upload's batches flowing on their own (one
/// batch being written while the next gathers); 1 GiB uploads measured within noise of
/// 8 MiB, and many slow uploads hold half the bytes.
const BODY_BUDGET: usize = 4 * 1024 * 1024;

/// The shared budget of `BODY_BUDGET` bytes.
static BODY_BYTES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODY_BUDGET);

impl FsStore {
    pub fn open(data_dir: &Path) -> io::Result<FsStore> {
        let store = FsStore {
            blobs: data_dir.join("blobs").into(),
            tmp: data_dir.join("tmp").into(),
            pins: Arc::default(),
            durable_dirs: Arc::default(),
        };
        private_dir(&store.blobs)?;
        private_dir(&store.tmp)?;
        // Their names in the data directory, in case they were just created.
        sync_dir(data_dir)?;
        Ok(store)
    }

    /// A fresh temp file name under `data/tmp`, removed on drop unless persisted.
    fn new_temp(&self) -> TempBlob {
        let id = uuid::Uuid::new_v4();
        TempBlob {
            id,
            path: self.tmp.join(id.simple().to_string()),
            armed: true,
        }
    }

    /// `data/blobs/ab/cd/<uuid>`: two levels of fan-out keep directories small.
    pub fn path_of(&self, id: &str) -> PathBuf {
        let a = id.get(0..2).unwrap_or("00");
        let b = id.get(2..4).unwrap_or("00");
        self.blobs.join(a).join(b).join(id)
    }

    /// Reads `body` to its end: inline when it stays within `inline_max` bytes, otherwise into a
    /// synced temp file. Fails with `TooLarge` at the first chunk that takes it past `max_size`,
    /// without reading further. `sniff` sees the first bytes as they pass; a `Mismatch` it
    /// reports stops the body there, and what was written is removed.
    pub async fn ingest<S, E>(
        &self,
        mut body: S,
        max_size: u64,
        inline_max: usize,
        mut hashes: Hashes,
        mut sniff: crate::sniff::Sniffer,
    ) -> Result<Ingested, IngestError<E>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let mut size: u64 = 0;
        let mut buf: Vec<u8> = Vec::new();
        // Small phase: collect in memory.
        let first_big = loop {
            match body.next().await {
                None => {
                    return Ok(Ingested {
                        size,
                        digests: hashes.finish(),
                        detected: sniff.finish().map_err(IngestError::Mismatch)?,
                        staged: Staged::Inline(buf),
                    });
                }
                Some(Err(e)) => return Err(IngestError::Body(e)),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > max_size {
                        return Err(IngestError::TooLarge { seen: size });
                    }
                    sniff.feed(&chunk).map_err(IngestError::Mismatch)?;
                    if size as usize > inline_max {
                        break chunk;
                    }
                    hashes.update(&chunk);
                    // Grown by doubling, but never past the inline threshold: a head that
                    // outgrows it goes to the file, and up to twice it would be held meanwhile
                    // (by every upload at once when many start together).
                    if buf.capacity() - buf.len() < chunk.len() {
                        let want = (2 * buf.capacity()).clamp(buf.len() + chunk.len(), inline_max);
                        buf.reserve_exact(want - buf.len());
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        };

        // Large phase: a writer and a hasher (jobs on shared threads, or threads of their own once
        // the body is fast), fed the same refcounted chunks.
        let temp = self.new_temp();
        let file = create_private(&temp.path)?;
        // The head is hashed already (small phase); only the writer still needs it.
        let head = Bytes::from(std::mem::take(&mut buf));
        let mut pipe = Pipe::new(Writeback::new(file), hashes, head.len());
        let mut batch = Batch::default();
        // How fast the body comes past the head (`Pipe::should_move`).
        let (large_from, large_since) =
            (size - first_big.len() as u64, tokio::time::Instant::now());
        for chunk in [head, first_big] {
            let held = budget(&mut pipe, &mut batch, chunk.len()).await?;
            batch.push(chunk, held);
        }
        let fed: Result<Option<&'static str>, IngestError<E>> = async {
            loop {
                // What the connection already holds joins the batch. A batch short of
                // `BATCH_BYTES` waits for more of the body until `SLOW_BODY` after its first
                // chunk; past that the body is slow, and what has gathered goes out as soon as
                // the jobs are free: a slow upload holds only what arrived lately, never a full
                // batch, while a fast one still goes in full batches (hyper hands over one read
                // at a time, so "nothing more ready" alone would cut it into 64 KiB jobs).
                let next = match body.next().now_or_never() {
                    Some(next) => next,
                    None if batch.bytes == 0 => body.next().await,
                    None => {
                        let due = batch.since + SLOW_BODY;
                        let more = tokio::select! {
                            next = body.next() => Some(next),
                            () = tokio::time::sleep_until(due) => None,
                        };
                        match more {
                            Some(next) => next,
                            // Slow: whichever comes first, more of the body or free jobs to
                            // take what has gathered (both cancel-safe).
                            None => tokio::select! {
                                next = body.next() => next,
                                freed = pipe.wait_idle() => {
                                    freed.map_err(IngestError::Io)?;
                                    pipe.send(batch.take()).await?;
                                    body.next().await
                                }
                            },
                        }
                    }
                };
                let Some(item) = next else { break };
                let chunk = item.map_err(IngestError::Body)?;
                size += chunk.len() as u64;
                if size > max_size {
                    return Err(IngestError::TooLarge { seen: size });
                }
                sniff.feed(&chunk).map_err(IngestError::Mismatch)?;
                let held = budget(&mut pipe, &mut batch, chunk.len()).await?;
                batch.push(chunk, held);
                if pipe.should_move(size - large_from, large_since.elapsed()) {
                    pipe.move_to_threads().await.map_err(IngestError::Io)?;
                }
                // A fast body: batches of at least `BATCH_BYTES`, growing while the disk or the
                // hasher is behind; past `MAX_BATCH_BYTES` the body waits for them.
                if (batch.bytes >= BATCH_BYTES && pipe.idle()) || batch.bytes >= MAX_BATCH_BYTES {
                    pipe.send(batch.take()).await?;
                }
            }
            if batch.bytes > 0 {
                pipe.send(batch.take()).await?;
            }
            std::mem::take(&mut sniff)
                .finish()
                .map_err(IngestError::Mismatch)
        }
        .await;
        // Not fed to the end: the file is left unsynced, and `temp`'s drop removes it.
        let finished = pipe.finish(fed.is_ok()).await;
        let (detected, digests) = match (fed, finished) {
            // A writer that failed (a full disk, say) is why the feed could not hand it more.
            (Ok(_) | Err(IngestError::Io(_)), Err(e)) => return Err(IngestError::Io(e)),
            (Err(e), _) => return Err(e),
            (Ok(detected), Ok(digests)) => (detected, digests.expect("finished when fed")),
        };
        Ok(Ingested {
            size,
            digests,
            detected,
            staged: Staged::Temp(temp),
        })
    }

    /// Moves a synced temp file into the blob tree and makes the rename durable.
    pub async fn persist(&self, mut temp: TempBlob) -> io::Result<String> {
        let id = temp.id.simple().to_string();
        let dest = self.path_of(&id);
        let from = temp.path.clone();
        let dest_clone = dest.clone();
        let (blobs, durable_dirs) = (self.blobs.clone(), self.durable_dirs.clone());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let dir = dest_clone.parent().unwrap_or(Path::new("."));
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::rename(&from, &dest_clone)?;
            sync_dir(dir)?;
            // A new `ab/cd` is an entry of `ab`, a new `ab` one of `blobs`: syncing `cd` does
            // not make them durable (fsync(2)). Once per directory and process; a concurrent
            // persist that finds the directory not yet marked syncs the parents itself.
            let known = durable_dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(dir);
            if !known {
                sync_dir(dir.parent().unwrap_or(&blobs))?;
                sync_dir(&blobs)?;
                durable_dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(dir.to_owned());
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)??;
        temp.armed = false;
        Ok(id)
    }

    /// Copies byte ranges of blobs, in order, into one new synced temp file (CopyObject,
    /// UploadPartCopy). Without `hashes`, `std::io::copy` between files lets the kernel move the
    /// bytes (`copy_file_range`); with them, the bytes are read once to compute the MD5 a new
    /// ETag needs, or the checksum a copy asks for.
    pub async fn copy_segments(
        &self,
        segments: Vec<Segment>,
        hashes: Option<Hashes>,
    ) -> io::Result<(TempBlob, Option<Digests>)> {
        // Pinned, so that a newer version committing meanwhile cannot remove the sources.
        let guard = self.pin(&segments).await?;
        let temp = self.new_temp();
        let dest = temp.path.clone();
        let store = self.clone();
        let digests = tokio::task::spawn_blocking(move || -> io::Result<Option<Digests>> {
            use std::io::{Read, Seek};
            let _pinned = guard;
            let mut out = Writeback::new(create_private(&dest)?);
            let mut hashes = hashes;
            let mut buf = vec![0u8; if hashes.is_some() { 1 << 20 } else { 0 }];
            for seg in segments {
                let mut src = std::fs::File::open(store.path_of(&seg.blob))?;
                src.seek(io::SeekFrom::Start(seg.offset))?;
                let mut src = src.take(seg.len);
                let mut copied = 0u64;
                loop {
                    let got = match &mut hashes {
                        // A window at a time, so that write-out starts as the copy goes.
                        None => io::copy(&mut (&mut src).take(WRITEBACK_WINDOW), &mut out.file)?,
                        Some(h) => {
                            let got = src.read(&mut buf)?;
                            h.update(&buf[..got]);
                            out.file.write_all(&buf[..got])?;
                            got as u64
                        }
                    };
                    if got == 0 {
                        break;
                    }
                    copied += got;
                    out.advance(got)?;
                }
                if copied != seg.len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob shorter than recorded",
                    ));
                }
            }
            out.finish()?;
            Ok(hashes.map(Hashes::finish))
        })
        .await
        .map_err(io::Error::other)??;
        Ok((temp, digests))
    }

    /// Writes bytes held in memory to a synced temp file (a small multipart part).
    pub async fn stage_bytes(&self, bytes: Vec<u8>) -> io::Result<TempBlob> {
        let temp = self.new_temp();
        let dest = temp.path.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut f = create_private(&dest)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .await
        .map_err(io::Error::other)??;
        Ok(temp)
    }

    /// Pins every blob of `segments` (see `Pins`), then checks that each still exists. A blob
    /// already gone or being removed (a newer version committed since its row was read) is
    /// `NotFound`: the caller reads the row again.
    async fn pin(&self, segments: &[Segment]) -> io::Result<PinGuard> {
        let mut ids: Vec<String> = segments.iter().map(|s| s.blob.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        {
            let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
            if ids.iter().any(|id| pins.doomed.contains(id)) {
                return Err(io::Error::new(io::ErrorKind::NotFound, "blob removed"));
            }
            for id in &ids {
                *pins.readers.entry(id.clone()).or_default() += 1;
            }
        }
        let guard = PinGuard {
            store: self.clone(),
            ids,
        };
        let store = self.clone();
        let check: Vec<PathBuf> = guard.ids.iter().map(|id| store.path_of(id)).collect();
        tokio::task::spawn_blocking(move || {
            check
                .iter()
                .try_for_each(|path| std::fs::metadata(path).map(drop))
        })
        .await
        .map_err(io::Error::other)??;
        Ok(guard)
    }

    /// Streams byte ranges of blobs in order. The blobs are pinned before this returns, so a
    /// newer version committing while the response is sent cannot remove them; each file is
    /// opened only when the stream reaches it (one descriptor at a time, however many parts).
    /// A blob already gone is `NotFound` here, before any byte is sent.
    pub async fn stream_segments(
        &self,
        segments: Vec<Segment>,
    ) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
        let guard = self.pin(&segments).await?;
        let store = self.clone();
        // The closure owns the pins, so they last until the response's stream is dropped.
        let parts = futures_util::stream::iter(segments).then(move |seg| {
            let _pinned = &guard;
            let path = store.path_of(&seg.blob);
            async move {
                use tokio::io::AsyncReadExt;
                match open_at(path, seg.offset).await {
                    Ok(file) => {
                        tokio_util::io::ReaderStream::with_capacity(file.take(seg.len), 256 * 1024)
                            .left_stream()
                    }
                    Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
                }
            }
        });
        Ok(parts.flatten().boxed())
    }

    /// Removes a blob no row refers to any more (after an overwrite or delete has committed).
    /// While a reader has it pinned, the removal waits for that reader.
    pub async fn remove(&self, id: String) {
        {
            let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
            let pinned = pins.readers.contains_key(&id);
            pins.doomed.insert(id.clone());
            if pinned {
                return;
            }
        }
        let path = self.path_of(&id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
        self.pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .doomed
            .remove(&id);
    }

    /// Start-up sweep: every temp file is an upload that never finished; every blob no row
    /// refers to is left over from a crash between rename and commit, or commit and removal.
    pub fn sweep(
        &self,
        referenced: &std::collections::HashSet<String>,
    ) -> io::Result<(usize, usize)> {
        let mut temps = 0;
        for entry in std::fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && std::fs::remove_file(entry.path()).is_ok() {
                temps += 1;
            }
        }
        let mut orphans = 0;
        for a in std::fs::read_dir(&self.blobs)? {
            let a = a?;
            if !a.file_type()?.is_dir() {
                continue;
            }
            for b in std::fs::read_dir(a.path())? {
                let b = b?;
                if !b.file_type()?.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(b.path())? {
                    let f = f?;
                    let name = f.file_name().to_string_lossy().into_owned();
                    if !referenced.contains(&name) && std::fs::remove_file(f.path()).is_ok() {
                        orphans += 1;
                    }
                }
            }
        }
        Ok((temps, orphans))
    }
}

/// Creates `path` (and its missing parents) readable by the server's user only, or takes away
/// the group's and others' access from an existing one: the data directory holds every secret
/// key (in the database) and every uploaded file. Returns whether an existing directory was
/// looser, so the caller can say it tightened it.
pub fn private_dir(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    Ok(true)
}

/// Makes the entries of directory `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A new file only the server's user may read (blobs and temp files).
fn create_private(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Opens a blob positioned at `offset`.
async fn open_at(path: PathBuf, offset: u64) -> io::Result<tokio::fs::File> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(path).await?;
    if offset > 0 {
        file.seek(io::SeekFrom::Start(offset)).await?;
    }
    Ok(file)
}

/// Takes `len` bytes of the shared body budget (`BODY_BUDGET`) for a chunk about to join
/// `batch`. When the budget is spent, what this upload has gathered goes to its jobs first:
/// every upload that waits holds no gathered bytes, only bytes being written and hashed, which
/// come back whatever the others do.
async fn budget<E>(
    pipe: &mut Pipe,
    batch: &mut Batch,
    len: usize,
) -> Result<tokio::sync::SemaphorePermit<'static>, IngestError<E>> {
    // A chunk larger than the whole budget takes all of it.
    let n = len.min(BODY_BUDGET) as u32;
    if let Ok(held) = BODY_BYTES.try_acquire_many(n) {
        return Ok(held);
    }
    if batch.bytes > 0 {
        pipe.send(batch.take()).await?;
    }
    BODY_BYTES
        .acquire_many(n)
        .await
        .map_err(|_| IngestError::Io(io::Error::other("body budget closed")))
}

/// Chunks gathered for one hand-over, and their share of the body budget.
struct Batch {
    chunks: Vec<Bytes>,
    bytes: usize,
    held: Option<tokio::sync::SemaphorePermit<'static>>,
    /// When its first chunk arrived.
    since: tokio::time::Instant,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch {
            chunks: Vec::new(),
            bytes: 0,
            held: None,
            since: tokio::time::Instant::now(),
        }
    }
}

impl Batch {
    fn push(&mut self, chunk: Bytes, held: tokio::sync::SemaphorePermit<'static>) {
        if self.bytes == 0 {
            self.since = tokio::time::Instant::now();
        }
        self.bytes += chunk.len();
        self.chunks.push(chunk);
        match &mut self.held {
            Some(all) => all.merge(held),
            None => self.held = Some(held),
        }
    }

    fn take(&mut self) -> Arc<Handed> {
        self.bytes = 0;
        Arc::new(Handed {
            chunks: std::mem::take(&mut self.chunks),
            _held: self.held.take(),
        })
    }
}

/// A batch handed to the writer and the hasher; its bytes go back to the budget when both are
/// done with it (the last to drop it).
struct Handed {
    chunks: Vec<Bytes>,
    _held: Option<tokio::sync::SemaphorePermit<'static>>,
}

/// A job's state: at rest between batches, or out on the blocking pool with one.
enum Job<S> {
    Idle(S),
    Busy(tokio::sync::oneshot::Receiver<(S, io::Result<()>)>),
    /// Its batch failed (or the job panicked). The error's kind and text are kept, so that
    /// every later call reports the same error: a full disk stays `StorageFull` (507) however
    /// the upload learns of it. Reporting it once and keeping no trace lost it when the first
    /// report went to a `select!` branch that was dropped (`Pipe::wait_idle` losing to the
    /// body): the next hand-over then failed with a bare "stopped" error, a 500.
    Failed(io::ErrorKind, String),
}

impl<S: Send + 'static> Job<S> {
    fn idle(&self) -> bool {
        match self {
            // A value sent: done. Nothing sent yet, or the job lost (a panic): busy; `settle`
            // reports the loss.
            Job::Busy(h) => !h.is_empty(),
            _ => true,
        }
    }

    /// Waits for the batch in hand; the job's error, every time it is asked, once it failed.
    async fn settle(&mut self) -> io::Result<()> {
        if let Job::Busy(h) = self {
            // Cancel-safe: the outcome is stored in the same poll that sees it.
            let joined = h.await;
            *self = match joined {
                Ok((state, Ok(()))) => Job::Idle(state),
                Ok((_, Err(e))) => Job::Failed(e.kind(), e.to_string()),
                Err(_) => Job::Failed(io::ErrorKind::Other, "blob job panicked".into()),
            };
        }
        match self {
            Job::Failed(kind, text) => Err(io::Error::new(*kind, text.clone())),
            _ => Ok(()),
        }
    }

    /// Hands `batch` to `work` on the blocking pool, once the previous batch is done.
    async fn start(
        &mut self,
        batch: Arc<Handed>,
        work: fn(&mut S, &[Bytes]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.settle().await?;
        let lost = Job::Failed(io::ErrorKind::Other, "blob job lost".into());
        if let Job::Idle(mut state) = std::mem::replace(self, lost) {
            let (done, rx) = tokio::sync::oneshot::channel();
            upload_jobs().spawn(move || {
                let outcome = work(&mut state, &batch.chunks);
                drop(batch);
                let _ = done.send((state, outcome));
            });
            *self = Job::Busy(rx);
        }
        Ok(())
    }

    /// The state, once the last batch is done.
    async fn into_state(mut self) -> io::Result<S> {
        self.settle().await?;
        match self {
            Job::Idle(state) => Ok(state),
            _ => Err(io::Error::other("blob job lost")),
        }
    }
}

/// The writer and the hasher of one upload, side by side, so that a large upload runs at the
/// speed of the slower of the two.
///
/// While the body trickles in, each takes a batch at a time as a short job on the shared job
/// threads (`upload_jobs`), and no thread is held between batches: a slow upload costs no thread
/// stack or allocator heap of its own. Once the body has come fast (`FAST_BODY_RATE`), the two
/// move onto threads of their own for the rest of the upload, fed through channels: a hop onto
/// a shared thread per batch, and each batch waiting for the previous one, cost a fast upload
/// a third to two thirds of its rate; two threads are worth their memory for the seconds it
/// lasts. An upload that slows down after that keeps its threads until it ends.
// One per upload, held in place for its whole life: the jobs' states stay unboxed.
#[allow(clippy::large_enum_variant)]
enum Pipe {
    Jobs {
        writer: Job<Writeback>,
        hasher: Job<(Hashes, usize)>,
    },
    Threads(Threads),
    /// A job failed while the pipe was moving onto threads (its error was reported then).
    Lost,
}

/// The writer and the hasher on threads of their own, each behind a channel of `PIPE_DEPTH`
/// batches, and how each ended.
struct Threads {
    writer: mpsc::Sender<Msg>,
    hasher: mpsc::Sender<Msg>,
    written: oneshot::Receiver<io::Result<()>>,
    hashed: oneshot::Receiver<Option<Digests>>,
}

enum Msg {
    Data(Arc<Handed>),
    /// The body ended: the writer fsyncs, the hasher finishes. A channel closed without it is an
    /// upload that stopped (nothing is synced).
    Finish,
}

/// Batches queued for each of a fast upload's writer and hasher threads.
const PIPE_DEPTH: usize = 4;

/// A body that has brought at least `FAST_AFTER` bytes past the inline head at an average of
/// at least this many bytes a second since then is fast (a phone on a slow network sends about
/// 2 MB/s; a client on a LAN or loopback hundreds). The average since the start, not one
/// batch's rate: a slow upload whose body waited for the shared budget reads the bytes that
/// queued meanwhile in a burst, but its average stays what its client sends.
const FAST_BODY_RATE: f64 = 16e6;
const FAST_AFTER: u64 = 4 << 20;

impl Pipe {
    /// `skip`: bytes at the start of the first batch the hashes have seen already.
    fn new(out: Writeback, hashes: Hashes, skip: usize) -> Pipe {
        Pipe::Jobs {
            writer: Job::Idle(out),
            hasher: Job::Idle((hashes, skip)),
        }
    }

    /// Whether a body that brought `bytes` in `elapsed` should move the pipe onto threads.
    fn should_move(&self, bytes: u64, elapsed: std::time::Duration) -> bool {
        matches!(self, Pipe::Jobs { .. })
            && bytes >= FAST_AFTER
            && bytes as f64 >= FAST_BODY_RATE * elapsed.as_secs_f64()
    }

    /// Moves the writer and the hasher onto threads of their own, once their batches in hand are
    /// done. Without a thread to spare, they stay on jobs.
    async fn move_to_threads(&mut self) -> io::Result<()> {
        if !matches!(self, Pipe::Jobs { .. }) {
            return Ok(());
        }
        // The threads first: they wait for their state, so that a failed spawn loses nothing.
        let Ok((give_out, writer, written)) = spawn_stage("postgate-write", write_thread) else {
            return Ok(());
        };
        let Ok((give_hashes, hasher, hashed)) = spawn_stage("postgate-hash", hash_thread) else {
            return Ok(());
        };
        let Pipe::Jobs {
            writer: out,
            hasher: hashes,
        } = std::mem::replace(self, Pipe::Lost)
        else {
            unreachable!("checked above");
        };
        let (out, hashes) = tokio::join!(out.into_state(), hashes.into_state());
        let (out, hashes) = (out?, hashes?);
        if give_out.send(out).is_err() || give_hashes.send(hashes).is_err() {
            return Err(io::Error::other("blob thread lost"));
        }
        *self = Pipe::Threads(Threads {
            writer,
            hasher,
            written,
            hashed,
        });
        Ok(())
    }

    /// Free for the next batch: both jobs done; threads take batches into their channels.
    fn idle(&self) -> bool {
        match self {
            Pipe::Jobs { writer, hasher } => writer.idle() && hasher.idle(),
            _ => true,
        }
    }

    async fn send<E>(&mut self, batch: Arc<Handed>) -> Result<(), IngestError<E>> {
        match self {
            Pipe::Jobs { writer, hasher } => {
                let (w, h) = tokio::join!(
                    writer.start(batch.clone(), |out, b| out.write_batch(b)),
                    hasher.start(batch, hash_batch)
                );
                w.and(h).map_err(IngestError::Io)
            }
            Pipe::Threads(t) => {
                let (w, h) = tokio::join!(
                    t.writer.send(Msg::Data(batch.clone())),
                    t.hasher.send(Msg::Data(batch))
                );
                match (w, h) {
                    (Ok(()), Ok(())) => Ok(()),
                    // `finish` reports the writer's own error.
                    _ => Err(IngestError::Io(io::Error::other("blob writer stopped"))),
                }
            }
            Pipe::Lost => Err(IngestError::Io(io::Error::other("blob job lost"))),
        }
    }

    /// Waits until both jobs are free (cancel-safe).
    async fn wait_idle(&mut self) -> io::Result<()> {
        match self {
            Pipe::Jobs { writer, hasher } => {
                let (w, h) = tokio::join!(writer.settle(), hasher.settle());
                w.and(h)
            }
            _ => Ok(()),
        }
    }

    /// Waits for the last batches; with `complete`, fsyncs the file and returns the digests.
    /// Without, the file is left as it is (the caller removes it).
    async fn finish(self, complete: bool) -> io::Result<Option<Digests>> {
        match self {
            Pipe::Jobs { writer, hasher } => {
                let (out, hashes) = tokio::join!(writer.into_state(), hasher.into_state());
                let (out, (hashes, _)) = (out?, hashes?);
                if !complete {
                    return Ok(None);
                }
                tokio::task::spawn_blocking(move || out.finish())
                    .await
                    .map_err(io::Error::other)??;
                Ok(Some(hashes.finish()))
            }
            Pipe::Threads(t) => {
                if complete {
                    let _ = tokio::join!(t.writer.send(Msg::Finish), t.hasher.send(Msg::Finish));
                }
                drop((t.writer, t.hasher));
                t.written
                    .await
                    .unwrap_or_else(|_| Err(io::Error::other("blob writer thread lost")))?;
                if !complete {
                    return Ok(None);
                }
                let digests = t.hashed.await.ok().flatten();
                digests
                    .map(Some)
                    .ok_or_else(|| io::Error::other("hasher stopped early"))
            }
            Pipe::Lost => Err(io::Error::other("blob job lost")),
        }
    }
}

/// Starts a thread that waits for its state, then runs `run` over the batches of a channel.
/// Returns where to give it its state, its channel, and where its outcome will be.
#[allow(clippy::type_complexity)]
fn spawn_stage<S: Send + 'static, R: Send + 'static>(
    name: &str,
    run: fn(S, mpsc::Receiver<Msg>) -> R,
) -> io::Result<(oneshot::Sender<S>, mpsc::Sender<Msg>, oneshot::Receiver<R>)> {
    let (give, state) = oneshot::channel::<S>();
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    let (done, outcome) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Ok(state) = state.blocking_recv() {
                let _ = done.send(run(state, rx));
            }
        })?;
    Ok((give, tx, outcome))
}

/// A fast upload's writer: batches until `Finish`, then the fsync. A channel closed before is an
/// upload that stopped: nothing is synced, and the caller's `TempBlob` removes the file.
fn write_thread(mut out: Writeback, mut rx: mpsc::Receiver<Msg>) -> io::Result<()> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(batch) => out.write_batch(&batch.chunks)?,
            Msg::Finish => return out.finish(),
        }
    }
    Ok(())
}

/// A fast upload's hasher: the digests at `Finish`, none if the channel closed before.
fn hash_thread(mut state: (Hashes, usize), mut rx: mpsc::Receiver<Msg>) -> Option<Digests> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(batch) => hash_batch(&mut state, &batch.chunks).ok()?,
            Msg::Finish => return Some(state.0.finish()),
        }
    }
    None
}

/// The threads that write and hash uploads' batches, shared by every upload.
///
/// A thread costs about 1 MiB of resident memory once it has run jobs (its stack and its
/// allocator heap). Handed to tokio's blocking pool, a job that finds no idle thread starts a new
/// one, and a thread just done with its job is not idle yet when the upload, woken by that very
/// job, hands over its next batch: one 1 GiB upload grew the pool to its cap, and 100 slow uploads
/// handing over small batches at the same moments to about 100 threads. A fixed set of threads
/// queues the jobs instead; they are short and CPU- or disk-bound, so a few run them as fast as
/// the machine can.
const JOB_THREADS: usize = 4;

fn upload_jobs() -> &'static rayon_core::ThreadPool {
    static POOL: std::sync::LazyLock<rayon_core::ThreadPool> = std::sync::LazyLock::new(|| {
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(JOB_THREADS)
            .thread_name(|i| format!("postgate-job-{i}"))
            // A job that panics drops its sender: its upload fails with "blob job panicked".
            .panic_handler(|_| {})
            .build()
            .expect("starting the upload job threads")
    });
    &POOL
}

fn hash_batch((hashes, skip): &mut (Hashes, usize), batch: &[Bytes]) -> io::Result<()> {
    for chunk in batch {
        let from = (*skip).min(chunk.len());
        *skip -= from;
        hashes.update(&chunk[from..]);
    }
    Ok(())
}

/// Bytes written between two requests to start writing them out.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Bytes written between two background `fdatasync`s.
const FLUSH_INTERVAL: u64 = 32 << 20;

/// Background `fdatasync`s running at once, across every upload. 100 slow uploads started
/// together cross each `FLUSH_INTERVAL` together: a flush each (a thread each) queued 100 cache
/// flushes on the disk at once, and every upload's writes waited behind them. A few at a time keep
/// the head start for the closing fsync without that.
const MAX_FLUSHES: usize = 4;

/// One of the `MAX_FLUSHES` background flushes, given back on drop.
struct FlushSlot;

static FLUSHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl FlushSlot {
    fn take() -> Option<FlushSlot> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        FLUSHES
            .fetch_update(AcqRel, Acquire, |n| (n < MAX_FLUSHES).then_some(n + 1))
            .ok()
            .map(|_| FlushSlot)
    }
}

impl Drop for FlushSlot {
    fn drop(&mut self) {
        FLUSHES.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A file written front to back whose bytes go to disk while the upload still streams.
///
/// Left alone, the kernel keeps a large upload in the page cache (up to `dirty_background_ratio`
/// of memory, gigabytes on a big machine) and the closing fsync writes all of it after the last
/// byte has arrived: the upload then takes receive time plus write time. Two things keep the
/// closing fsync short:
/// - every `WRITEBACK_WINDOW` bytes, `sync_file_range(SYNC_FILE_RANGE_WRITE)` queues the window
///   just filled for write-out and returns;
/// - every `FLUSH_INTERVAL` bytes, once the previous one is done, an `fdatasync` runs on a
///   thread of its own. Queued writes may still sit in the device's volatile cache, and the
///   closing fsync's cache flush would then write all of them: on the machine the bench runs on,
///   that flush alone took about a second after a 1 GiB upload.
///
/// Waiting for each window in the writer itself was measured slower: it stalls the pipeline.
struct Writeback {
    file: std::fs::File,
    written: u64,
    /// Start of the bytes whose write-out has not been asked for yet.
    pending: u64,
    /// How far the last background `fdatasync` reached when it started.
    flushed: u64,
    flush: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Writeback {
    fn new(file: std::fs::File) -> Writeback {
        Writeback {
            file,
            written: 0,
            pending: 0,
            flushed: 0,
            flush: None,
        }
    }

    /// Writes every chunk of `batch`, gathered (`writev`), never copied.
    fn write_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = batch.iter().map(|c| io::IoSlice::new(c)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = self.file.write_vectored(rest)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            io::IoSlice::advance_slices(&mut rest, n);
            self.advance(n as u64)?;
        }
        Ok(())
    }

    /// Counts `n` bytes just written, and starts the write-out and the background flush that
    /// have come due.
    fn advance(&mut self, n: u64) -> io::Result<()> {
        self.written += n;
        if self.written - self.pending >= WRITEBACK_WINDOW {
            self.start_writeback();
        }
        if self.written - self.flushed >= FLUSH_INTERVAL
            && self.flush.as_ref().is_none_or(|f| f.is_finished())
        {
            self.join_flush()?;
            // Only a head start for the closing fsync: when `MAX_FLUSHES` are running already,
            // or without a descriptor or a thread to spare, the upload goes on without it (and
            // asks again with its next bytes). The duplicate shares the open file with `self.file`.
            let Some(slot) = FlushSlot::take() else {
                return Ok(());
            };
            self.flushed = self.written;
            self.flush = self.file.try_clone().ok().and_then(|file| {
                std::thread::Builder::new()
                    .name("postgate-flush".into())
                    .spawn(move || {
                        let _slot = slot;
                        file.sync_data()
                    })
                    .ok()
            });
        }
        Ok(())
    }

    /// Waits for the background `fdatasync`, and fails with its error: the kernel reports a
    /// write-back error once per open file, so the closing fsync would not see it again.
    fn join_flush(&mut self) -> io::Result<()> {
        match self.flush.take() {
            Some(flush) => flush
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("flush thread panicked"))),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> io::Result<()> {
        self.join_flush()?;
        self.file.sync_all()
    }

    /// Starts the write-out of `[pending, written)`. A failure only loses the overlap: the
    /// closing fsync still makes the file durable, and reports any write error.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: a syscall on a descriptor this struct owns and keeps open; no memory is passed.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.pending as libc::off64_t,
                (self.written - self.pending) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.pending = self.written;
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_exactly_the_requested_range() {
        let parts = vec![
            ("a".to_owned(), 10),
            ("b".to_owned(), 10),
            ("c".to_owned(), 5),
        ];
        let segs = segments_of(&parts, 5, 12);
        let got: Vec<(&str, u64, u64)> = segs
            .iter()
            .map(|s| (s.blob.as_str(), s.offset, s.len))
            .collect();
        assert_eq!(got, vec![("a", 5, 5), ("b", 0, 7)]);
        let all = segments_of(&parts, 0, 25);
        assert_eq!(all.iter().map(|s| s.len).sum::<u64>(), 25);
        assert!(segments_of(&parts, 25, 0).is_empty());
    }

    /// A body past the background-flush interval and several writeback windows long, in uneven
    /// chunks, lands byte for byte with the MD5 of what was sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_ingest_across_writeback_windows_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let len = (FLUSH_INTERVAL + 2 * WRITEBACK_WINDOW) as usize + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let chunks: Vec<Result<Bytes, io::Error>> = data
            .chunks(100_003)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let got = store
            .ingest(
                futures_util::stream::iter(chunks),
                u64::MAX,
                64 << 10,
                Hashes::new(true, false, None),
                crate::sniff::Sniffer::detect_only(),
            )
            .await
            .unwrap();
        assert_eq!(got.size, len as u64);
        assert_eq!(got.digests.md5, Some(<[u8; 16]>::from(Md5::digest(&data))));
        let Staged::Temp(temp) = got.staged else {
            panic!("a body past the inline threshold is staged in a file");
        };
        let id = store.persist(temp).await.unwrap();
        assert_eq!(std::fs::read(store.path_of(&id)).unwrap(), data);
    }

    /// A copy longer than the background-flush interval, from two blobs with an offset into the
    /// first, is exact with and without the MD5 pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_copy_across_writeback_windows_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let len = (FLUSH_INTERVAL / 2 + WRITEBACK_WINDOW) as usize + 777;
        let a: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let b: Vec<u8> = (0..len).map(|i| (i * 13 % 241) as u8).collect();
        let (ida, idb) = (blob(&store, &a).await, blob(&store, &b).await);
        let mut want = a[1000..].to_vec();
        want.extend_from_slice(&b);
        for hash in [false, true] {
            let segments = vec![
                Segment {
                    blob: ida.clone(),
                    offset: 1000,
                    len: (len - 1000) as u64,
                },
                Segment {
                    blob: idb.clone(),
                    offset: 0,
                    len: len as u64,
                },
            ];
            let hashes = hash.then(|| Hashes::new(true, false, None));
            let (temp, digests) = store.copy_segments(segments, hashes).await.unwrap();
            let md5 = digests.and_then(|d| d.md5);
            assert_eq!(md5, hash.then(|| <[u8; 16]>::from(Md5::digest(&want))));
            let id = store.persist(temp).await.unwrap();
            assert_eq!(std::fs::read(store.path_of(&id)).unwrap(), want);
        }
    }

    /// While the writer and the hasher cannot keep up (here: their threads stalled), uploads
    /// together read at most the body budget off the network, plus a chunk and the inline head
    /// each: every one waits for the budget rather than gathering on. Without the budget each
    /// gathered up to `MAX_BATCH_BYTES`, 2 MiB per upload. Once the jobs run again, every upload
    /// lands exactly and the whole budget is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_jobs_hold_uploads_to_the_body_budget() {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        // Every job thread waits until its sender is dropped.
        let closed: Vec<std::sync::mpsc::Sender<()>> = (0..JOB_THREADS)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                upload_jobs().spawn(move || {
                    let _ = rx.recv();
                });
                tx
            })
            .collect();
        let (n, len, chunk, inline_max) = (24, 4 << 20, 64 << 10, 64 << 10);
        let pulled = Arc::new(AtomicUsize::new(0));
        let uploads: Vec<_> = (0..n)
            .map(|i| {
                let data: Vec<u8> = (0..len).map(|j| ((i * 7 + j * 31) % 251) as u8).collect();
                let chunks: Vec<Result<Bytes, io::Error>> = data
                    .chunks(chunk)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                let pulled = pulled.clone();
                let body = futures_util::stream::iter(chunks).inspect(move |c| {
                    pulled.fetch_add(c.as_ref().map_or(0, |c| c.len()), Relaxed);
                });
                let store = store.clone();
                tokio::spawn(async move {
                    let got = store
                        .ingest(
                            body,
                            u64::MAX,
                            inline_max,
                            Hashes::new(true, false, None),
                            crate::sniff::Sniffer::detect_only(),
                        )
                        .await
                        .unwrap();
                    (got, <[u8; 16]>::from(Md5::digest(&data)))
                })
            })
            .collect();
        // Until the uploads have read all they will while the jobs are stalled.
        let mut seen = usize::MAX;
        while pulled.load(Relaxed) != seen {
            seen = pulled.load(Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        // The figure itself, not `BODY_BUDGET`: raising the budget must fail here.
        let budget = 4 << 20;
        let bound = budget + n * (chunk + inline_max);
        assert!(
            seen <= bound,
            "{n} uploads read {seen} bytes with their jobs stalled (budget {budget}, bound {bound})"
        );
        drop(closed);
        for upload in uploads {
            let (got, md5) = upload.await.unwrap();
            assert_eq!((got.size, got.digests.md5), (len as u64, Some(md5)));
        }
        assert_eq!(
            BODY_BYTES.available_permits(),
            BODY_BUDGET,
            "the budget is all back"
        );
    }

    async fn blob(store: &FsStore, bytes: &[u8]) -> String {
        let temp = store.stage_bytes(bytes.to_vec()).await.unwrap();
        store.persist(temp).await.unwrap()
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    async fn collect(mut s: BoxStream<'static, io::Result<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    /// A response over many parts holds no descriptor per part: files open as the stream
    /// reaches them, and the bytes come out in order.
    #[tokio::test]
    async fn streaming_many_parts_opens_them_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let mut segments = Vec::new();
        let mut want = Vec::new();
        for i in 0..300u32 {
            let bytes = format!("part {i};").into_bytes();
            want.extend_from_slice(&bytes[1..]);
            segments.push(Segment {
                blob: blob(&store, &bytes).await,
                offset: 1,
                len: bytes.len() as u64 - 1,
            });
        }
        let before = open_fds();
        let stream = store.stream_segments(segments).await.unwrap();
        assert!(open_fds() < before + 5, "no file opened per part up front");
        assert_eq!(collect(stream).await, want);
    }

    /// Removing a blob a response is reading waits for that response; meanwhile a new reader
    /// cannot pin it (it reads the row again and finds the newer version).
    #[tokio::test]
    async fn removal_of_a_blob_being_read_waits_for_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (a, b) = (blob(&store, b"first ").await, blob(&store, b"second").await);
        let seg = |id: &String| Segment {
            blob: id.clone(),
            offset: 0,
            len: 6,
        };
        let stream = store.stream_segments(vec![seg(&a), seg(&b)]).await.unwrap();
        store.remove(a.clone()).await;
        store.remove(b.clone()).await;
        assert!(store.path_of(&b).exists(), "removal deferred while read");
        let again = store.stream_segments(vec![seg(&b)]).await.err().unwrap();
        assert_eq!(again.kind(), io::ErrorKind::NotFound);
        assert_eq!(collect(stream).await, b"first second");
        // The last reader gone, the deferred removals run (on the blocking pool).
        let gone = || !store.path_of(&a).exists() && !store.path_of(&b).exists();
        for _ in 0..200 {
            if gone() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(gone(), "removed once the reader finished");
        let gone = store.stream_segments(vec![seg(&a)]).await.err().unwrap();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }
}
