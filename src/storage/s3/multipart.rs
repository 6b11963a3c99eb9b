//! Multipart uploads in the backend: what a client's multipart upload maps onto (its parts
//! streamed through, never held whole), and what an [`Uploader`](super::Uploader) uses for a
//! large body.

use std::path::PathBuf;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt as _};
use reqwest::Method;

use super::wire::{
    self, CompleteMultipartUploadResult, InitiateMultipartUploadResult, ListMultipartUploadsResult,
    ListPartsResult,
};
use super::{Backend, Call, Code, Error, Finished, MAX_ANSWER, Meta, Payload, Retry};

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
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Finished, Error> {
        self.complete(key, upload_id, parts, None).await
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
        call.body = Payload::Bytes(body.into());
        let answer = match self.send_read(call, MAX_ANSWER).await.map_err(upload_gone) {
            Ok((_, answer)) => answer,
            Err(e) => return self.after_failed_complete(key, upload_id, parts, e).await,
        };
        let result: CompleteMultipartUploadResult =
            wire::parse("CompleteMultipartUpload", &answer)?;
        self.written(key, &result.etag, size).await
    }

    /// A Complete that failed because the upload is gone may have succeeded in an earlier
    /// attempt whose answer was lost (a retry then finds no upload: AWS answers NoSuchUpload,
    /// Ceph 16 a 500 "This multipart completion is already in progress", also for an upload
    /// that never existed). If the upload is gone and the key holds exactly these parts (its
    /// ETag is the MD5 of the parts' MD5s, `-N`), the Complete is done; a gone upload is
    /// otherwise NoSuchUpload, and any other failure stands.
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

    /// Every multipart upload in progress under `prefix`, as (key, upload id): for a sweeper
    /// of uploads a crashed node left behind.
    pub async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, Error> {
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
            out.extend(page.uploads.into_iter().map(|u| (u.key, u.upload_id)));
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
