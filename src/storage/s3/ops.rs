//! Reads, listings, deletes and server-side copies.

use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{CONTENT_RANGE, HeaderMap};

use super::multipart::{WriteIf, bare};
use super::wire::{self, CopyObjectResult, DeleteResult, ListBucketResult};
use super::{Backend, ByteStream, Call, Error, Finished, MAX_ANSWER, Meta, ObjectInfo, Payload};

/// A byte range of a GET, as HTTP's `Range: bytes=` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, both included.
    Inclusive(u64, u64),
    /// `first-`: to the end.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    fn header(self) -> String {
        match self {
            ByteRange::Inclusive(first, last) => format!("bytes={first}-{last}"),
            ByteRange::From(first) => format!("bytes={first}-"),
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// A GET's answer: the object's headers and its bytes, streamed.
pub struct GetObject {
    /// `info.size` is the whole object's size, also for a range.
    pub info: ObjectInfo,
    /// The range served (first, last included), when a range was asked for.
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

/// One ListObjectsV2 request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub prefix: Option<String>,
    pub delimiter: Option<String>,
    pub continuation_token: Option<String>,
    pub start_after: Option<String>,
    pub max_keys: Option<u32>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ListedObject>,
    pub common_prefixes: Vec<String>,
    /// Given when the listing goes on: pass it as the next request's `continuation_token`.
    pub next_continuation_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
    /// As listed (ISO 8601).
    pub last_modified: String,
}

/// CopyObject's answer.
#[derive(Debug, Clone)]
pub struct CopyResult {
    pub etag: String,
    /// As the answer gives it (ISO 8601).
    pub last_modified: String,
}

/// Characters `x-amz-copy-source` keeps as they are: AWS's URI encoding of a key, `/` kept.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// DeleteObjects takes at most this many keys per request.
const DELETE_BATCH: usize = 1000;

impl Backend {
    /// HEAD: the object's size, ETag, last-modified and metadata.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, Error> {
        let response = self.send(Call::new(Method::HEAD, Some(key))).await?;
        Ok(ObjectInfo::from_headers(response.headers()))
    }

    /// GET, whole or a range; the body is streamed as it arrives, never held whole.
    pub async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject, Error> {
        self.get_if(key, range, None).await
    }

    /// GET of the version whose ETag is `if_match` (when given): another version, or none,
    /// answers `PreconditionFailed` / `NoSuchKey`, so that a read never mixes two versions.
    pub async fn get_if(
        &self,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<GetObject, Error> {
        let mut call = Call::new(Method::GET, Some(key));
        if let Some(range) = range {
            call = call.header("range", range.header());
        }
        if let Some(etag) = if_match {
            call = call.header("if-match", etag);
        }
        let response = self.send(call).await?;
        let mut info = ObjectInfo::from_headers(response.headers());
        let mut served = None;
        if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            let content_range = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range)
                .ok_or_else(|| Error::Protocol("206 without a usable Content-Range".into()))?;
            served = Some((content_range.0, content_range.1));
            info.size = content_range.2;
        }
        Ok(GetObject {
            info,
            range: served,
            body: self.stream(response),
        })
    }

    /// One page of ListObjectsV2. Keys are asked URL-encoded (`encoding-type=url`, so that a
    /// key with characters XML 1.0 cannot carry lists too) and decoded here.
    pub async fn list(&self, request: &ListRequest) -> Result<ListPage, Error> {
        let mut call = Call::new(Method::GET, None)
            .query("list-type", "2")
            .query("encoding-type", "url");
        let optional = [
            ("prefix", &request.prefix),
            ("delimiter", &request.delimiter),
            ("continuation-token", &request.continuation_token),
            ("start-after", &request.start_after),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                call = call.query(name, value.clone());
            }
        }
        if let Some(max) = request.max_keys {
            call = call.query("max-keys", max.to_string());
        }
        let (_, body) = self.send_read(call, MAX_ANSWER).await?;
        let page: ListBucketResult = wire::parse("ListObjectsV2", &body)?;
        let objects = page
            .contents
            .into_iter()
            .map(|c| {
                Ok(ListedObject {
                    key: url_decode(&c.key)?,
                    size: c.size,
                    etag: c.etag,
                    last_modified: c.last_modified,
                })
            })
            .collect::<Result<_, Error>>()?;
        let common_prefixes = page
            .common_prefixes
            .into_iter()
            .map(|p| url_decode(&p.prefix))
            .collect::<Result<_, Error>>()?;
        let next_continuation_token = page
            .is_truncated
            .then_some(page.next_continuation_token)
            .flatten();
        if page.is_truncated && next_continuation_token.is_none() {
            return Err(Error::Protocol(
                "a truncated listing without NextContinuationToken".into(),
            ));
        }
        Ok(ListPage {
            objects,
            common_prefixes,
            next_continuation_token,
        })
    }

    /// DeleteObject. A missing key is no error (S3 answers 204 either way).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.delete_if(key, None).await
    }

    /// DeleteObject of the version whose ETag is `if_match` (when given; AWS honours it since
    /// 2024, a backend that ignores it deletes whatever is current).
    pub async fn delete_if(&self, key: &str, if_match: Option<&str>) -> Result<(), Error> {
        let mut call = Call::new(Method::DELETE, Some(key));
        if let Some(etag) = if_match {
            call = call.header("if-match", etag);
        }
        self.send(call).await?;
        Ok(())
    }

    /// PutObject of a body held in memory (retried as it is), with its metadata (and its
    /// additional checksum) and the write's condition; answers what was stored.
    pub async fn put_bytes(
        &self,
        key: &str,
        meta: &Meta,
        body: bytes::Bytes,
        condition: Option<&WriteIf>,
    ) -> Result<Finished, Error> {
        let size = body.len() as u64;
        let mut call = Call::new(Method::PUT, Some(key));
        call.headers.extend(meta.headers(true));
        if let Some(condition) = condition {
            let (name, value) = condition.header();
            call = call.header(name, value);
        }
        call.body = Payload::Bytes(body);
        let response = self.send(call).await?;
        let etag = super::multipart::etag_of(response.headers())?;
        let at = answer_time(response.headers());
        self.written(key, &etag, Some(size), at).await
    }

    /// DeleteObjects, in batches of 1000 (quiet mode: only failures come back). Answers the
    /// keys that could not be deleted, each with its error.
    pub async fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, Error)>, Error> {
        use base64::Engine as _;
        use md5::Digest as _;
        let mut failed = Vec::new();
        for batch in keys.chunks(DELETE_BATCH) {
            let mut body = String::from("<Delete><Quiet>true</Quiet>");
            for key in batch {
                body.push_str("<Object><Key>");
                body.push_str(&wire::escape(key));
                body.push_str("</Key></Object>");
            }
            body.push_str("</Delete>");
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            let mut call = Call::new(Method::POST, None)
                .query("delete", "")
                .header("content-md5", md5)
                .header("content-type", "application/xml");
            call.body = Payload::Bytes(body.into());
            let (_, answer) = self.send_read(call, MAX_ANSWER).await?;
            let result: DeleteResult = wire::parse("DeleteObjects", &answer)?;
            for e in result.errors {
                let error = Error::S3 {
                    status: 200,
                    code: super::Code::parse(&e.code),
                    message: e.message,
                };
                failed.push((e.key, error));
            }
        }
        Ok(failed)
    }

    /// `x-amz-copy-source` naming `source_key` in this bucket.
    pub(super) fn copy_source(&self, source_key: &str) -> String {
        format!(
            "/{}/{}",
            self.inner.bucket.name(),
            utf8_percent_encode(source_key, COPY_SOURCE)
        )
    }

    /// CopyObject within the bucket, server-side: `meta` None keeps the source's metadata
    /// (`COPY`), Some replaces it (`REPLACE`). With `source_etag`, only while the source still
    /// has that ETag (`x-amz-copy-source-if-match`), and with `condition`, only if the
    /// destination is absent / that version; a refusal is `412 PreconditionFailed`. Up to
    /// 5 GiB; a larger object is copied part by part with `upload_part_copy`.
    pub async fn copy(
        &self,
        source_key: &str,
        source_etag: Option<&str>,
        key: &str,
        meta: Option<&Meta>,
        condition: Option<&WriteIf>,
    ) -> Result<CopyResult, Error> {
        let mut call = Call::new(Method::PUT, Some(key))
            .header("x-amz-copy-source", self.copy_source(source_key));
        if let Some(etag) = source_etag {
            // Ceph 16's CopyObject reads the condition under the name `x-amz-copy-if-match` and
            // ignores S3's (docs/cluster.md section 8); AWS and others ignore the other name.
            call = call
                .header("x-amz-copy-source-if-match", bare(etag))
                .header("x-amz-copy-if-match", bare(etag));
        }
        if let Some(condition) = condition {
            let (name, value) = condition.header();
            call = call.header(name, value);
        }
        match meta {
            None => call = call.header("x-amz-metadata-directive", "COPY"),
            Some(meta) => {
                call = call.header("x-amz-metadata-directive", "REPLACE");
                call.headers.extend(meta.headers(false));
            }
        }
        let (_, body) = self.send_read(call, MAX_ANSWER).await?;
        let result: CopyObjectResult = wire::parse("CopyObject", &body)?;
        Ok(CopyResult {
            // Quoted, as HEAD gives it: Ceph 16 answers this one bare.
            etag: format!("\"{}\"", bare(&result.etag)),
            last_modified: result.last_modified,
        })
    }

    /// What an upload this backend just finished stored, from its answer: the ETag it gave
    /// (quoted, as HEAD gives it), the `size` postgate sent, and the time `at` the answer gives
    /// ([`answer_time`]: PutObject and Complete answer no Last-Modified; the object's
    /// Last-Modified is the time its write ended, which is when this answer was made). No
    /// second request: under `--backend s3` reads take the time from the backend's own HEAD,
    /// so this one only stands for the write itself. When the answer gave no ETag (Ceph 16's
    /// CompleteMultipartUpload answers `<ETag></ETag>`) or the size is not known here (a
    /// client's multipart upload), they are read back with HEAD.
    pub async fn written(
        &self,
        key: &str,
        etag: &str,
        size: Option<u64>,
        at: Option<SystemTime>,
    ) -> Result<Finished, Error> {
        if let Some(size) = size.filter(|_| !etag.is_empty()) {
            return Ok(Finished {
                etag: format!("\"{}\"", bare(etag)),
                size,
                last_modified: at.unwrap_or_else(SystemTime::now),
            });
        }
        let info = self.head(key).await?;
        if !etag.is_empty() && !same_etag(&info.etag, etag) {
            // Another writer's version is current already: this write's ETag stands, and HEAD
            // did not describe it.
            return Err(Error::Protocol(format!(
                "{key}: the upload's answer gave no size and HEAD shows another version"
            )));
        }
        Ok(Finished {
            etag: info.etag,
            size: info.size,
            last_modified: info.last_modified.unwrap_or_else(SystemTime::now),
        })
    }
}

/// The time an answer says its object was written: `Last-Modified` when given, else `Date`.
pub(super) fn answer_time(headers: &HeaderMap) -> Option<SystemTime> {
    [reqwest::header::LAST_MODIFIED, reqwest::header::DATE]
        .iter()
        .find_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            httpdate::parse_http_date(value).ok()
        })
}

/// ETags compared without their quotes: Ceph 16 answers a repeated CompleteMultipartUpload
/// with the object's ETag unquoted.
fn same_etag(a: &str, b: &str) -> bool {
    a.trim_matches('"') == b.trim_matches('"')
}

/// `bytes first-last/size` → (first, last, size).
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, size.parse().ok()?))
}

/// A key or prefix of an `encoding-type=url` listing: `+` is a space, then percent-decoding.
fn url_decode(text: &str) -> Result<String, Error> {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::Protocol(format!("listed key {text:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_and_content_ranges_decode() {
        assert_eq!(url_decode("a+b%2Bc/%C3%A9").unwrap(), "a b+c/é");
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 19, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(ByteRange::Suffix(5).header(), "bytes=-5");
    }
}
