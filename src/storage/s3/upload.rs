//! An upload of a body whose length is not known in advance (a browser POST's file, a PUT in
//! aws-chunked encoding), in bounded memory.
//!
//! Bytes are spooled to a local part file; when a part is full and more bytes come, the part
//! is sealed and uploaded from its file (a known Content-Length, read in 512 KiB chunks, never
//! held whole) while the next one fills; at most `parts_in_flight` parts go at once, and a
//! writer waits for one to finish before sealing another. So memory stays at a few buffers and
//! the local disk holds at most `parts_in_flight + 1` parts. Nothing is visible in the backend
//! until [`Uploader::finish`]: a body that fit in one part is one PutObject then; a larger one
//! is a multipart upload, created when its first part was sealed and completed then. Without
//! `finish` (an [`Uploader::abort`], an error, or a drop), the multipart upload is aborted and
//! the spool files removed.

use std::path::PathBuf;
use std::time::SystemTime;

use reqwest::Method;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinSet;

use super::multipart::etag_of;
use super::{Backend, Call, Code, CompletedPart, Error, Meta, Payload, WriteIf};

/// What [`Uploader::finish`] (or CompleteMultipartUpload) stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// As the backend gives it, quoted (read back with HEAD when Complete's answer has none).
    pub etag: String,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// One upload in progress; see the module's doc.
pub struct Uploader {
    backend: Backend,
    key: String,
    meta: Meta,
    /// Names this upload's spool files.
    spool_id: String,
    /// The part being written.
    current: Option<Spool>,
    next_number: u32,
    upload_id: Option<String>,
    in_flight: JoinSet<Result<CompletedPart, Error>>,
    done: Vec<CompletedPart>,
    /// Every spool file made; removed (again, harmlessly) when the upload ends either way.
    spool_files: Vec<PathBuf>,
    total: u64,
    /// Finished or aborted: Drop has nothing to undo.
    settled: bool,
    /// The write's condition, given to `finish_if`.
    condition: Option<WriteIf>,
}

/// Bytes gathered before one write to a spool file. Each write of a `tokio::fs::File` is a hop
/// to the blocking pool; a body's frames are 16-64 KiB, so unbuffered that is 16+ hops (and
/// their wake-ups) per MiB, a tenth of the gateway's CPU on a big upload (docs/cluster.md
/// section 10.3).
const SPOOL_BUFFER: usize = 512 * 1024;

struct Spool {
    file: tokio::io::BufWriter<tokio::fs::File>,
    path: PathBuf,
    len: u64,
}

impl Backend {
    /// An upload to `key` with `meta`. The metadata is given now, not at `finish`: S3 fixes a
    /// multipart object's metadata when the upload is created, which happens while the body
    /// still arrives.
    pub fn uploader(&self, key: &str, meta: Meta) -> Uploader {
        Uploader {
            backend: self.clone(),
            key: key.to_owned(),
            meta,
            spool_id: uuid::Uuid::new_v4().simple().to_string(),
            current: None,
            next_number: 1,
            upload_id: None,
            in_flight: JoinSet::new(),
            done: Vec::new(),
            spool_files: Vec::new(),
            total: 0,
            settled: false,
            condition: None,
        }
    }
}

impl Uploader {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Appends `data`. Waits when `parts_in_flight` parts are already on their way. After an
    /// error, the upload is done for: `abort` it (or drop it).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let part_size = self.backend.options().part_size;
        while !data.is_empty() {
            // A full part is sealed only once a byte beyond it arrives, so that a body of
            // exactly one part stays one PutObject.
            if self.current.as_ref().is_some_and(|c| c.len == part_size) {
                self.seal().await?;
            }
            if self.current.is_none() {
                self.current = Some(self.new_spool().await?);
            }
            let spool = self.current.as_mut().expect("opened above");
            let n = (part_size - spool.len).min(data.len() as u64) as usize;
            spool.file.write_all(&data[..n]).await?;
            spool.len += n as u64;
            self.total += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Makes the object visible: one PutObject, or CompleteMultipartUpload. On failure the
    /// upload is aborted and nothing is left in the backend.
    pub async fn finish(self) -> Result<Finished, Error> {
        self.finish_if(None).await
    }

    /// [`Uploader::finish`] with a write condition: sent with the PutObject of a body that
    /// stayed one part; for a multipart upload, checked with HEAD just before the Complete (not
    /// atomic: Ceph 16 ignores conditions on Complete, docs/cluster.md section 7). A failed
    /// condition aborts the upload and answers `PreconditionFailed` (or `NoSuchKey` for
    /// `If-Match` on a missing key), as the backend would.
    pub async fn finish_if(mut self, condition: Option<&WriteIf>) -> Result<Finished, Error> {
        self.condition = condition.cloned();
        let result = self.commit().await;
        if result.is_err() {
            self.cleanup().await;
        } else {
            self.remove_spool_files();
        }
        self.settled = true;
        result
    }

    /// Gives the upload up: parts in flight are stopped, the multipart upload is aborted, the
    /// spool files removed.
    pub async fn abort(mut self) {
        self.cleanup().await;
        self.settled = true;
    }

    async fn commit(&mut self) -> Result<Finished, Error> {
        let Some(upload_id) = self.upload_id.clone() else {
            return self.put_whole().await;
        };
        self.check_condition().await?;
        if self.current.as_ref().is_some_and(|c| c.len > 0) {
            self.seal().await?;
        }
        while let Some(part) = self.in_flight.join_next().await {
            self.done.push(joined(part)?);
        }
        self.backend
            .complete(&self.key, &upload_id, &self.done, Some(self.total))
            .await
    }

    /// The condition of a multipart upload's Complete, checked against the current version.
    async fn check_condition(&self) -> Result<(), Error> {
        let Some(condition) = &self.condition else {
            return Ok(());
        };
        let refused = |code: Code, status: u16| Error::S3 {
            status,
            code,
            message: "the write's condition did not hold".into(),
        };
        let current = match self.backend.head(&self.key).await {
            Ok(info) => Some(info.etag),
            Err(e) if e.code() == Some(&Code::NoSuchKey) => None,
            Err(e) => return Err(e),
        };
        match (&current, condition) {
            (Some(_), WriteIf::Absent) => Err(refused(Code::PreconditionFailed, 412)),
            (None, WriteIf::Matches(_)) => Err(refused(Code::NoSuchKey, 404)),
            (Some(etag), WriteIf::Matches(want))
                if etag.trim_matches('"') != want.trim_matches('"') =>
            {
                Err(refused(Code::PreconditionFailed, 412))
            }
            _ => Ok(()),
        }
    }

    /// The whole body in one PutObject, from its spool file (sent again from it on a retry).
    async fn put_whole(&mut self) -> Result<Finished, Error> {
        let mut call = Call::new(Method::PUT, Some(&self.key));
        call.headers.extend(self.meta.headers(true));
        if let Some(condition) = &self.condition {
            let (name, value) = condition.header();
            call = call.header(name, value);
        }
        call.body = match self.current.take() {
            Some(mut spool) => {
                spool.file.flush().await?;
                Payload::File {
                    path: spool.path,
                    len: spool.len,
                }
            }
            None => Payload::Empty,
        };
        let response = self.backend.send(call).await?;
        let etag = etag_of(response.headers())?;
        let at = super::ops::answer_time(response.headers());
        self.backend
            .written(&self.key, &etag, Some(self.total), at)
            .await
    }

    /// Closes the current part and sends it; creates the multipart upload first if this is
    /// the first part.
    async fn seal(&mut self) -> Result<(), Error> {
        let Some(mut spool) = self.current.take() else {
            return Ok(());
        };
        spool.file.flush().await?;
        drop(spool.file);
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.backend.create_multipart(&self.key, &self.meta).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        // A part that failed already ends the upload now, not when the last byte came.
        while let Some(part) = self.in_flight.try_join_next() {
            self.done.push(joined(part)?);
        }
        while self.in_flight.len() >= self.backend.options().parts_in_flight {
            let part = self.in_flight.join_next().await.expect("not empty");
            self.done.push(joined(part)?);
        }
        let number = self.next_number;
        self.next_number += 1;
        let backend = self.backend.clone();
        let key = self.key.clone();
        self.in_flight.spawn(async move {
            let etag = backend
                .upload_part_file(&key, &upload_id, number, spool.path.clone(), spool.len)
                .await;
            // The file's bytes are in the backend, or the upload fails whole: either way the
            // file has served.
            let _ = tokio::fs::remove_file(&spool.path).await;
            Ok(CompletedPart {
                number,
                etag: etag?,
            })
        });
        Ok(())
    }

    async fn new_spool(&mut self) -> Result<Spool, Error> {
        let dir = &self.backend.options().spool_dir;
        let path = dir.join(format!(
            "postgate-s3-{}-{}.part",
            self.spool_id, self.next_number
        ));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        self.spool_files.push(path.clone());
        Ok(Spool {
            file: tokio::io::BufWriter::with_capacity(SPOOL_BUFFER, file),
            path,
            len: 0,
        })
    }

    /// Stops the parts in flight, aborts the multipart upload, removes the spool files.
    async fn cleanup(&mut self) {
        self.in_flight.shutdown().await;
        self.current = None;
        if let Some(upload_id) = self.upload_id.take() {
            abort_quietly(&self.backend, &self.key, &upload_id).await;
        }
        self.remove_spool_files();
    }

    fn remove_spool_files(&mut self) {
        for path in self.spool_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Uploader {
    /// An upload dropped unfinished (its request cancelled, a panic) leaves nothing behind: the
    /// spool files go now, the multipart upload is aborted by a task of its own once the parts
    /// in flight have stopped.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.current = None;
        self.remove_spool_files();
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let backend = self.backend.clone();
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    in_flight.shutdown().await;
                    abort_quietly(&backend, &key, &upload_id).await;
                });
            }
            Err(_) => tracing::warn!(
                key,
                "an unfinished multipart upload was dropped outside a runtime: not aborted"
            ),
        }
    }
}

/// Aborts, logging a failure (the backend's lifecycle rule for incomplete uploads is the
/// last resort) and taking NoSuchUpload as done.
async fn abort_quietly(backend: &Backend, key: &str, upload_id: &str) {
    match backend.abort_multipart(key, upload_id).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(&super::Code::NoSuchUpload) => {}
        Err(error) => tracing::warn!(key, %error, "could not abort a multipart upload"),
    }
}

fn joined(
    part: Result<Result<CompletedPart, Error>, tokio::task::JoinError>,
) -> Result<CompletedPart, Error> {
    part.map_err(|e| Error::Transport(format!("a part's upload stopped: {e}")))?
}
