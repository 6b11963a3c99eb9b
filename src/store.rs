//! Object bytes on the filesystem.
//!
//! An upload streams into memory while it is small (it will be stored inline in its SQLite row)
//! and spills to `data/tmp/<uuid>` once it passes the inline threshold. Past that point two
//! blocking threads work side by side: one writes the bytes, one hashes them (MD5 for the ETag,
//! plus SHA-256 or an additional checksum when the request asks), so a large upload runs at the
//! speed of the slower of the two, not their sum. Memory stays bounded by the channel depth.
//!
//! The temp file is fsynced and renamed into `data/blobs/ab/cd/<uuid>` (the directory fsynced too)
//! before the metadata row commits; `TempBlob`'s `Drop` removes a temp file that never got that
//! far. Blob names are generated, never derived from a key.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::auth::checksum::Checksummer;

/// Chunks in flight between the request and each of the writer and hasher threads.
const PIPE_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum IngestError<E> {
    #[error("request body failed: {0}")]
    Body(E),
    #[error("body exceeds the maximum size after {seen} bytes")]
    TooLarge { seen: u64 },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The digests an upload is checked against.
pub struct Hashes {
    md5: Md5,
    sha256: Option<Sha256>,
    checksum: Option<Checksummer>,
}

/// What the hashes came to once the body ended.
#[derive(Debug, Clone)]
pub struct Digests {
    pub md5: [u8; 16],
    pub sha256: Option<[u8; 32]>,
    /// Base64 of the additional checksum, when one was asked for.
    pub checksum: Option<String>,
}

impl Hashes {
    pub fn new(want_sha256: bool, checksum: Option<Checksummer>) -> Hashes {
        Hashes {
            md5: Md5::new(),
            sha256: want_sha256.then(Sha256::new),
            checksum,
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(c) = &mut self.checksum {
            c.update(data);
        }
    }

    fn finish(self) -> Digests {
        Digests {
            md5: self.md5.finalize().into(),
            sha256: self.sha256.map(|h| h.finalize().into()),
            checksum: self.checksum.map(|c| c.finish()),
        }
    }
}

/// An upload whose bytes are durable in `data/tmp` (or in memory, when small), not yet committed.
pub struct Ingested {
    pub size: u64,
    pub digests: Digests,
    pub staged: Staged,
}

pub enum Staged {
    Inline(Vec<u8>),
    Temp(TempBlob),
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

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

enum Msg {
    Data(Bytes),
    Finish,
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> io::Result<BlobStore> {
        let store = BlobStore {
            blobs: data_dir.join("blobs"),
            tmp: data_dir.join("tmp"),
        };
        std::fs::create_dir_all(&store.blobs)?;
        std::fs::create_dir_all(&store.tmp)?;
        Ok(store)
    }

    /// `data/blobs/ab/cd/<uuid>`: two levels of fan-out keep directories small.
    pub fn path_of(&self, id: &str) -> PathBuf {
        let a = id.get(0..2).unwrap_or("00");
        let b = id.get(2..4).unwrap_or("00");
        self.blobs.join(a).join(b).join(id)
    }

    /// Reads `body` to its end: inline when it stays within `inline_max` bytes, otherwise into a
    /// synced temp file. Fails with `TooLarge` at the first chunk that takes it past `max_size`,
    /// without reading further.
    pub async fn ingest<S, E>(
        &self,
        mut body: S,
        max_size: u64,
        inline_max: usize,
        mut hashes: Hashes,
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
                        staged: Staged::Inline(buf),
                    });
                }
                Some(Err(e)) => return Err(IngestError::Body(e)),
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > max_size {
                        return Err(IngestError::TooLarge { seen: size });
                    }
                    if size as usize > inline_max {
                        break chunk;
                    }
                    hashes.update(&chunk);
                    buf.extend_from_slice(&chunk);
                }
            }
        };

        // Large phase: writer and hasher threads, fed the same refcounted chunks.
        let id = uuid::Uuid::new_v4();
        let path = self.tmp.join(id.simple().to_string());
        let file = std::fs::File::create(&path)?;
        let temp = TempBlob {
            id,
            path,
            armed: true,
        };
        let (wtx, wrx) = mpsc::channel::<Msg>(PIPE_DEPTH);
        let (htx, hrx) = mpsc::channel::<Msg>(PIPE_DEPTH);
        let writer = tokio::task::spawn_blocking(move || write_file(file, wrx));
        let hasher = tokio::task::spawn_blocking(move || hash_chunks(hashes, hrx));

        let feed = async {
            // The head is hashed already (small phase); the writer still needs it.
            let head = Bytes::from(std::mem::take(&mut buf));
            if !head.is_empty() && wtx.send(Msg::Data(head)).await.is_err() {
                return Err(IngestError::Io(io::Error::other("blob writer stopped")));
            }
            send_both(&wtx, &htx, first_big).await?;
            while let Some(item) = body.next().await {
                let chunk = item.map_err(IngestError::Body)?;
                size += chunk.len() as u64;
                if size > max_size {
                    return Err(IngestError::TooLarge { seen: size });
                }
                send_both(&wtx, &htx, chunk).await?;
            }
            let _ = wtx.send(Msg::Finish).await;
            let _ = htx.send(Msg::Finish).await;
            Ok(())
        };
        let fed: Result<(), IngestError<E>> = feed.await;
        drop(wtx);
        drop(htx);
        let written = writer
            .await
            .map_err(|e| IngestError::Io(io::Error::other(e)))?;
        let digests = hasher
            .await
            .map_err(|e| IngestError::Io(io::Error::other(e)))?;
        fed?;
        written?;
        let digests = digests.ok_or_else(|| io::Error::other("hasher stopped early"))?;
        Ok(Ingested {
            size,
            digests,
            staged: Staged::Temp(temp),
        })
    }

    /// Moves a synced temp file into the blob tree and makes the rename durable.
    pub async fn persist(&self, mut temp: TempBlob) -> io::Result<String> {
        let id = temp.id.simple().to_string();
        let dest = self.path_of(&id);
        let from = temp.path.clone();
        let dest_clone = dest.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let dir = dest_clone.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&from, &dest_clone)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)??;
        temp.armed = false;
        Ok(id)
    }

    /// Copies a blob into a new synced temp file (CopyObject). `std::fs::copy` lets the kernel
    /// move the bytes (`copy_file_range`), so they never pass through this process.
    pub async fn copy_blob(&self, id: &str) -> io::Result<TempBlob> {
        let src = self.path_of(id);
        let new_id = uuid::Uuid::new_v4();
        let temp = TempBlob {
            id: new_id,
            path: self.tmp.join(new_id.simple().to_string()),
            armed: true,
        };
        let dest = temp.path.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::copy(&src, &dest)?;
            std::fs::File::open(&dest)?.sync_all()
        })
        .await
        .map_err(io::Error::other)??;
        Ok(temp)
    }

    /// Removes a blob no row refers to any more (after an overwrite or delete has committed).
    pub async fn remove(&self, id: String) {
        let path = self.path_of(&id);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    }

    pub async fn open_blob(&self, id: &str) -> io::Result<std::fs::File> {
        let path = self.path_of(id);
        tokio::task::spawn_blocking(move || std::fs::File::open(path))
            .await
            .map_err(io::Error::other)?
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

async fn send_both<E>(
    wtx: &mpsc::Sender<Msg>,
    htx: &mpsc::Sender<Msg>,
    chunk: Bytes,
) -> Result<(), IngestError<E>> {
    let (a, b) = tokio::join!(
        wtx.send(Msg::Data(chunk.clone())),
        htx.send(Msg::Data(chunk))
    );
    if a.is_err() || b.is_err() {
        return Err(IngestError::Io(io::Error::other("blob writer stopped")));
    }
    Ok(())
}

/// Writes chunks until `Finish`, then fsyncs. A closed channel without `Finish` is an aborted
/// upload: nothing is synced and the caller's `TempBlob` removes the file.
fn write_file(file: std::fs::File, mut rx: mpsc::Receiver<Msg>) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunk) => out.write_all(&chunk)?,
            Msg::Finish => {
                let file = out.into_inner().map_err(|e| e.into_error())?;
                return file.sync_all();
            }
        }
    }
    Err(io::Error::other("upload aborted"))
}

fn hash_chunks(mut hashes: Hashes, mut rx: mpsc::Receiver<Msg>) -> Option<Digests> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunk) => hashes.update(&chunk),
            Msg::Finish => return Some(hashes.finish()),
        }
    }
    None
}
