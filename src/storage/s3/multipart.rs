//! Multipart uploads in the backend: what a client's multipart upload maps onto (its parts
//! streamed through, never held whole), and what an [`Uploader`](super::Uploader) uses for a
//! large body.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use reqwest::Method;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wire::{
    self, CompleteMultipartUploadResult, CopyPartResult, InitiateMultipartUploadResult,
    ListMultipartUploadsResult, ListPartsResult,
};
use super::{Backend, Call, Code, Error, Finished, MAX_ANSWER, Meta, Payload, Retry};

/// Chunks of a [`PendingPart`] queued between its writer and the backend request: the writer
/// waits when they are all taken, so a slow backend slows the client instead of filling memory.
const PENDING_CHUNKS: usize = 4;

/// A write's condition on the key it writes (S3's conditional writes): the refusal is
/// `412 PreconditionFailed`, [`Code::PreconditionFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteIf {
    /// `If-None-Match: *`: only if the key holds no object (a create).
    Absent,
    /// `If-Match: <etag>`: only if the key's current version has this ETag.
    Matches(String),
}

impl WriteIf {
    /// The request header. The ETag goes bare: Ceph 16 compares `If-Match` with the unquoted
    /// ETag (docs/cluster.md section 7), AWS and postgate take it either way.
    pub(super) fn header(&self) -> (&'static str, String) {
        match self {
            WriteIf::Absent => ("if-none-match", "*".to_owned()),
            WriteIf::Matches(etag) => ("if-match", bare(etag).to_owned()),
        }
    }
}

/// An ETag without its quotes.
pub(super) fn bare(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// A multipart upload in progress, as ListMultipartUploads shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    /// When CreateMultipartUpload made it; None if the backend's answer had no readable time.
    pub initiated: Option<SystemTime>,
}

/// A part named in CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub number: u32,
    /// As UploadPart answered it.
    pub etag: String,
}

/// A part ListParts shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// One page of ListParts.
#[derive(Debug, Clone, Default)]
pub struct PartsPage {
    pub parts: Vec<PartInfo>,
    /// Given when more parts follow: the next request's `marker`.
    pub next_marker: Option<u32>,
}

/// A client's UploadPart on its way to the backend, its **last chunk held back**: the part is
/// streamed through as it arrives, and only [`PendingPart::send`] (called once the caller has
/// checked the whole body: its declared checksum, the quota, a link's budget) lets the backend
/// have the request's last bytes and store the part. Dropping it (or [`PendingPart::abort`])
/// makes the request's body fail before its end instead, so the backend stores nothing and an
/// earlier part of the same number stays, as S3 keeps it after a failed UploadPart.
pub struct PendingPart {
    /// Chunks to the request; None once closed (sent, or failed).
    chunks: Option<mpsc::Sender<Bytes>>,
    /// The newest chunk, not given to the request yet.
    held: Option<Bytes>,
    /// Set by `send` before the channel closes: the body ends there. A channel closed without
    /// it (a drop) is a failed body.
    finished: Arc<AtomicBool>,
    request: Option<JoinHandle<Result<String, Error>>>,
    len: u64,
    written: u64,
}

impl PendingPart {
    /// Adds `chunk` to the part; waits while the backend is slower than the caller (a few
    /// chunks are queued at most).
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.written += chunk.len() as u64;
        if self.written > self.len {
            self.chunks = None;
            return Err(Error::Protocol(format!(
                "part body longer than its declared {} bytes",
                self.len
            )));
        }
        match self.held.replace(chunk) {
            Some(previous) => self.forward(previous).await,
            None => Ok(()),
        }
    }

    /// Writes the held chunk, ends the body and answers the part's ETag once the backend has
    /// stored it. A body shorter than declared is not sent: the part is dropped (nothing
    /// stored) and the error says so.
    pub async fn send(mut self) -> Result<String, Error> {
        if self.written != self.len {
            return Err(Error::Protocol(format!(
                "part body of {} bytes, {} declared",
                self.written, self.len
            )));
        }
        if let Some(last) = self.held.take() {
            self.forward(last).await?;
        }
        self.finished.store(true, Ordering::Release);
        self.chunks = None;
        self.outcome().await
    }

    /// Fails the request's body and waits until the backend request has ended (a drop does
    /// the same without waiting).
    pub async fn abort(mut self) {
        self.chunks = None;
        let _ = self.outcome().await;
    }

    async fn forward(&mut self, chunk: Bytes) -> Result<(), Error> {
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The request stopped taking the body: its answer says why.
        self.chunks = None;
        Err(match self.outcome().await {
            Err(e) => e,
            Ok(_) => Error::Protocol("the backend answered before the part's end".into()),
        })
    }

    async fn outcome(&mut self) -> Result<String, Error> {
        let Some(request) = self.request.take() else {
            return Err(Error::Protocol("the part's request already ended".into()));
        };
        request
            .await
            .unwrap_or_else(|e| Err(Error::Transport(format!("part request: {e}"))))
    }
}

/// The error a [`PendingPart`]'s body fails with when it is dropped before `send`.
fn abandoned() -> Box<dyn std::error::Error + Send + Sync> {
    "the part was abandoned before its end".into()
}

impl Backend {
    /// CreateMultipartUpload; `meta` is the object's metadata (S3 fixes it here, not at
    /// Complete). Answers the upload id.
    pub async fn create_multipart(&self, key: &str, meta: &Meta) -> Result<String, Error> {
        let mut call = Call::new(Method::POST, Some(key)).query("uploads", "");
        call.headers.extend(meta.headers(false));
        // A second create after a lost answer would leave a stray upload behind.
        call.retry = Retry::WhenNotDone;
        let (_, body) = self.send_read(call, MAX_ANSWER).await?;
        let result: InitiateMultipartUploadResult = wire::parse("CreateMultipartUpload", &body)?;
        Ok(result.upload_id)
    }

    /// UploadPart of a caller's body of `len` bytes, streamed as it comes (a stream is sent
    /// once, so this request is not retried). Answers the part's ETag.
    pub async fn upload_part<S, E>(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: S,
        len: u64,
        content_md5: Option<&str>,
    ) -> Result<String, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let body: super::CallerStream = Box::pin(body.map_err(Into::into));
        self.put_part(
            key,
            upload_id,
            number,
            Payload::Stream(Some((body, len))),
            content_md5,
        )
        .await
    }

    /// UploadPart of a client's part of `len` bytes, written chunk by chunk into the returned
    /// [`PendingPart`], the last chunk held until [`PendingPart::send`]. `content_md5` is
    /// forwarded so the backend checks it too. Must be called within a Tokio runtime (the
    /// request runs as its own task).
    pub fn pending_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        len: u64,
        content_md5: Option<&str>,
    ) -> PendingPart {
        let (chunks, mut received) = mpsc::channel::<Bytes>(PENDING_CHUNKS);
        let finished = Arc::new(AtomicBool::new(false));
        let (backend, key, upload_id) = (self.clone(), key.to_owned(), upload_id.to_owned());
        let content_md5 = content_md5.map(str::to_owned);
        let done = finished.clone();
        let request = tokio::spawn(async move {
            // No request before a first chunk (or the end of an empty part): a part dropped
            // before any byte costs the backend nothing.
            let first = received.recv().await;
            if first.is_none() && !done.load(Ordering::Acquire) {
                return Err(Error::Protocol(abandoned().to_string()));
            }
            let rest = futures_util::stream::unfold(Some(received), move |state| {
                let done = done.clone();
                async move {
                    let mut received = state?;
                    match received.recv().await {
                        Some(chunk) => Some((Ok(chunk), Some(received))),
                        None if done.load(Ordering::Acquire) => None,
                        None => Some((Err(abandoned()), None)),
                    }
                }
            });
            let body = futures_util::stream::iter(first.map(Ok)).chain(rest);
            let body: super::CallerStream = Box::pin(body);
            backend
                .put_part(
                    &key,
                    &upload_id,
                    number,
                    Payload::Stream(Some((body, len))),
                    content_md5.as_deref(),
                )
                .await
        });
        PendingPart {
            chunks: Some(chunks),
            held: None,
            finished,
            request: Some(request),
            len,
            written: 0,
        }
    }

    /// UploadPartCopy: part `number` of `upload_id` (for `key`) is `range` (first, last
    /// included; None: all) of the object `source_key`, copied inside the backend. With
    /// `source_etag`, only while the source still has that ETag (`x-amz-copy-source-if-match`,
    /// and the source read again after the copy for backends that ignore it; else
    /// `412 PreconditionFailed`). Answers the part's ETag.
    pub async fn upload_part_copy(
        &self,
        source_key: &str,
        source_etag: Option<&str>,
        range: Option<(u64, u64)>,
        key: &str,
        upload_id: &str,
        number: u32,
    ) -> Result<String, Error> {
        let mut call = Call::new(Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id)
            .header("x-amz-copy-source", self.copy_source(source_key));
        if let Some(etag) = source_etag {
            call = call.header("x-amz-copy-source-if-match", bare(etag));
        }
        if let Some((first, last)) = range {
            call = call.header("x-amz-copy-source-range", format!("bytes={first}-{last}"));
        }
        // Not `upload_gone`: a NoSuchKey here may be the source's.
        let (_, body) = self.send_read(call, MAX_ANSWER).await?;
        let result: CopyPartResult = wire::parse("UploadPartCopy", &body)?;
        if result.etag.is_empty() {
            return Err(Error::Protocol(
                "UploadPartCopy answered without ETag".into(),
            ));
        }
        // Ceph 16 ignores the condition on UploadPartCopy (docs/cluster.md section 8): the
        // source read again afterwards must still be the version named, or the part is refused
        // as the backend would have refused it (it stays until the number is written again).
        if let Some(etag) = source_etag {
            let now = self.head(source_key).await?;
            if bare(&now.etag) != bare(etag) {
                return Err(Error::S3 {
                    status: 412,
                    code: Code::PreconditionFailed,
                    message: "the copy source changed during UploadPartCopy".into(),
                });
            }
        }
        // Quoted, as UploadPart answers it: Ceph 16 answers this one bare.
        Ok(format!("\"{}\"", bare(&result.etag)))
    }

    /// UploadPart from a spool file, sent again from the file when it fails.
    pub(super) async fn upload_part_file(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        path: PathBuf,
        len: u64,
    ) -> Result<String, Error> {
        self.put_part(key, upload_id, number, Payload::File { path, len }, None)
            .await
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: Payload,
        content_md5: Option<&str>,
    ) -> Result<String, Error> {
        let mut call = Call::new(Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id);
        if let Some(md5) = content_md5 {
            call = call.header("content-md5", md5);
        }
        if matches!(body, Payload::Stream(_)) {
            call.retry = Retry::Never;
        }
        call.body = body;
        let response = self.send(call).await.map_err(upload_gone)?;
        etag_of(response.headers())
    }

    /// CompleteMultipartUpload with `parts` (in any order: sent sorted). The ETag is the
    /// backend's; Ceph 16 answers an empty one, so it is then read back with HEAD.
    /// With `condition`, only if the key holds no object / that version (S3's conditional
    /// Complete): else `412 PreconditionFailed`, and the upload stays for another Complete.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        condition: Option<&WriteIf>,
    ) -> Result<Finished, Error> {
        self.complete_if(key, upload_id, parts, None, condition)
            .await
    }

    /// CompleteMultipartUpload; `size`, when the caller knows it, stands if HEAD shows another
    /// writer's version already.
    pub(super) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        size: Option<u64>,
    ) -> Result<Finished, Error> {
        self.complete_if(key, upload_id, parts, size, None).await
    }

    /// `complete` with the write's condition.
    pub(super) async fn complete_if(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        size: Option<u64>,
        condition: Option<&WriteIf>,
    ) -> Result<Finished, Error> {
        let mut sorted: Vec<&CompletedPart> = parts.iter().collect();
        sorted.sort_by_key(|p| p.number);
        let mut body = String::from("<CompleteMultipartUpload>");
        for part in sorted {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                part.number,
                wire::escape(&part.etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut call = Call::new(Method::POST, Some(key))
            .query("uploadId", upload_id)
            .header("content-type", "application/xml");
        if let Some(condition) = condition {
            let (name, value) = condition.header();
            call = call.header(name, value);
        }
        call.body = Payload::Bytes(body.into());
        let (headers, answer) = match self.send_read(call, MAX_ANSWER).await.map_err(upload_gone) {
            Ok(read) => read,
            Err(e) => return self.after_failed_complete(key, upload_id, parts, e).await,
        };
        let result: CompleteMultipartUploadResult =
            wire::parse("CompleteMultipartUpload", &answer)?;
        let at = super::ops::answer_time(&headers);
        self.written(key, &result.etag, size, at).await
    }

    /// A Complete that failed because the upload is gone may have succeeded in an earlier
    /// attempt whose answer was lost (a retry then finds no upload: AWS answers NoSuchUpload,
    /// Ceph 16 a 500 "This multipart completion is already in progress", also for an upload
    /// that never existed; a conditional Complete's retry finds its own object: 412). If the
    /// upload is gone and the key holds exactly these parts (its ETag is the MD5 of the parts'
    /// MD5s, `-N`), the Complete is done; a gone upload is otherwise NoSuchUpload, and any
    /// other failure stands (a 412 whose upload is still there is a refusal).
    async fn after_failed_complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        error: Error,
    ) -> Result<Finished, Error> {
        let maybe_gone = matches!(
            &error,
            Error::S3 {
                code: Code::NoSuchUpload,
                ..
            } | Error::S3 { status: 500, .. }
                | Error::S3 {
                    code: Code::PreconditionFailed,
                    ..
                }
        );
        if !maybe_gone {
            return Err(error);
        }
        match self.list_parts(key, upload_id, None).await {
            Err(e) if e.code() == Some(&Code::NoSuchUpload) => {}
            _ => return Err(error),
        }
        if let (Some(expected), Ok(info)) = (multipart_etag(parts), self.head(key).await)
            && info.etag.trim_matches('"') == expected.trim_matches('"')
        {
            return Ok(Finished {
                etag: info.etag,
                size: info.size,
                last_modified: info
                    .last_modified
                    .unwrap_or_else(std::time::SystemTime::now),
            });
        }
        if error.code() == Some(&Code::PreconditionFailed) {
            // Gone, and not into this key: aborted meanwhile.
            return Err(error);
        }
        Err(Error::S3 {
            status: 404,
            code: Code::NoSuchUpload,
            message: "the multipart upload does not exist".into(),
        })
    }

    /// AbortMultipartUpload: its parts are dropped by the backend.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        let call = Call::new(Method::DELETE, Some(key)).query("uploadId", upload_id);
        self.send(call).await.map_err(upload_gone)?;
        Ok(())
    }

    /// One page of ListParts, from after part `marker`.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
        marker: Option<u32>,
    ) -> Result<PartsPage, Error> {
        let mut call = Call::new(Method::GET, Some(key)).query("uploadId", upload_id);
        if let Some(marker) = marker {
            call = call.query("part-number-marker", marker.to_string());
        }
        let (_, body) = self
            .send_read(call, MAX_ANSWER)
            .await
            .map_err(upload_gone)?;
        let result: ListPartsResult = wire::parse("ListParts", &body)?;
        Ok(PartsPage {
            parts: result
                .parts
                .into_iter()
                .map(|p| PartInfo {
                    number: p.part_number,
                    etag: p.etag,
                    size: p.size,
                })
                .collect(),
            next_marker: result
                .is_truncated
                .then_some(result.next_part_number_marker)
                .flatten(),
        })
    }

    /// Every multipart upload in progress under `prefix`, with its key, id and initiation
    /// time: for a sweeper of uploads a crashed node left behind (older than any upload may
    /// last).
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<UploadInfo>, Error> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Method::GET, None)
                .query("uploads", "")
                .query("prefix", prefix);
            if let Some((key, id)) = &markers {
                call = call
                    .query("key-marker", key.clone())
                    .query("upload-id-marker", id.clone());
            }
            let (_, body) = self.send_read(call, MAX_ANSWER).await?;
            let page: ListMultipartUploadsResult = wire::parse("ListMultipartUploads", &body)?;
            out.extend(page.uploads.into_iter().map(|u| UploadInfo {
                initiated: u.initiated.parse::<jiff::Timestamp>().ok().map(Into::into),
                key: u.key,
                upload_id: u.upload_id,
            }));
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(out),
            }
        }
    }
}

/// A 404 NoSuchKey on a request that names an upload id means the upload is not there: Ceph 16
/// answers ListParts of an unknown upload so, where AWS says NoSuchUpload.
fn upload_gone(error: Error) -> Error {
    match error {
        Error::S3 {
            status: 404,
            code: Code::NoSuchKey,
            message,
        } => Error::S3 {
            status: 404,
            code: Code::NoSuchUpload,
            message,
        },
        other => other,
    }
}

/// The ETag S3 gives the object completed from `parts`: the MD5 of their MD5s, `-N`. None when
/// a part's ETag is not an MD5 (some backends with server-side encryption).
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::Digest as _;
    let mut sorted: Vec<&CompletedPart> = parts.iter().collect();
    sorted.sort_by_key(|p| p.number);
    let mut md5 = md5::Md5::new();
    for part in &sorted {
        let digest = hex::decode(part.etag.trim_matches('"')).ok()?;
        if digest.len() != 16 {
            return None;
        }
        md5.update(&digest);
    }
    Some(format!(
        "\"{}-{}\"",
        hex::encode(md5.finalize()),
        sorted.len()
    ))
}

/// The ETag header of an UploadPart or PutObject answer.
pub(super) fn etag_of(headers: &reqwest::header::HeaderMap) -> Result<String, Error> {
    headers
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Error::Protocol("an upload answered without ETag".into()))
}
