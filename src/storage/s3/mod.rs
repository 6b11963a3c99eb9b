//! A client of an S3-compatible cluster, the backend postgate stores into when it runs in front
//! of Ceph RGW, MinIO, Garage, AWS or R2 (docs/cluster.md).
//!
//! rusty-s3 signs (SigV4, presigned: the signature travels in the query, the payload is
//! `UNSIGNED-PAYLOAD`, so a body streams without being hashed first) and the project's reqwest
//! carries the bytes both ways, streamed: an upload is read from a spool file or the caller's
//! stream, a download is handed on as a stream. The XML answers are read with quick-xml.
//!
//! - [`Backend`]: one bucket of one cluster; reads, lists, deletes, copies (`ops.rs`) and the
//!   multipart calls a client's multipart upload maps onto (`multipart.rs`).
//! - [`Uploader`] (`upload.rs`): a body of unknown length in bounded memory, spooled to local
//!   part files and uploaded part by part while it still arrives.
//! - Every request has a connect timeout and an idle timeout (no byte moved either way for that
//!   long); an idempotent request whose body can be sent again (none, bytes or a spool file) is
//!   retried a bounded number of times with exponential backoff and jitter when the cluster is
//!   busy or failing (5xx, SlowDown) or could not be reached.

mod error;
mod multipart;
mod ops;
mod upload;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, HeaderMap};

pub use error::{Code, Error};
pub use multipart::{CompletedPart, PartInfo, PartsPage, PendingPart, UploadInfo, WriteIf};
pub use ops::{ByteRange, CopyResult, GetObject, ListPage, ListRequest, ListedObject};
pub use upload::{Finished, Uploader};

/// A body streamed to or from the backend.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

/// How the bucket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Addressing {
    /// `ENDPOINT/bucket/key`: what self-hosted clusters reached by address or one name expect.
    #[default]
    Path,
    /// `bucket.ENDPOINT-HOST/key`: AWS's default; needs DNS (or [`Options::resolve`]) for it.
    VirtualHost,
}

/// The backend's settings; `Options::default()` holds the defaults named on each field.
#[derive(Debug, Clone)]
pub struct Options {
    pub addressing: Addressing,
    /// Time to open a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Longest time a request may go without a byte moving either way (default 30 s): a body
    /// that stops being read, an answer that does not come, a download that stalls.
    pub idle_timeout: Duration,
    /// How many times a retryable request is sent again (default 3; 0 turns retries off).
    pub retries: u32,
    /// First backoff (default 100 ms), doubled for each retry up to `backoff_max` (default 5 s);
    /// each wait is drawn between half the step and the step.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Part size of an [`Uploader`] (default 8 MiB; at least 5 MiB, S3's smallest non-last part).
    pub part_size: u64,
    /// Parts of one [`Uploader`] sent at the same time (default 4).
    pub parts_in_flight: usize,
    /// A copy of a larger source is a multipart upload of UploadPartCopy ranges of this size
    /// (default 5 GiB, S3's largest CopyObject and part; at least 5 MiB); a source up to it is
    /// one CopyObject.
    pub copy_part_size: u64,
    /// Where an [`Uploader`] spools its parts (default: the system's temporary directory).
    pub spool_dir: PathBuf,
    /// Host names pinned to addresses, bypassing DNS (a cluster without DNS names for its
    /// virtual hosts; tests).
    pub resolve: Vec<(String, SocketAddr)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            addressing: Addressing::Path,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            retries: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: 4,
            copy_part_size: 5 << 30,
            spool_dir: std::env::temp_dir(),
            resolve: Vec::new(),
        }
    }
}

pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's smallest part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// How long a request's presigned URL is valid. It is signed again for every attempt, and S3
/// checks it when the request arrives, so it only needs to cover the trip there.
const SIGNATURE_LIFETIME: u64 = 15 * 60;
/// A spool file is sent in reads of this size.
const SPOOL_READ: usize = 512 * 1024;
/// An error answer's body (S3's `<Error>` document) is read up to this many bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A document answer (a list page: at most 1000 keys of at most 1 KiB each, plus their XML).
const MAX_ANSWER: usize = 8 << 20;

/// Headers an object carries in the backend, given on upload and read back by HEAD and GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub content_type: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*`, by their name after the prefix, lowercase.
    pub user: BTreeMap<String, String>,
    /// An additional checksum, e.g. `("crc32", "base64 value")`, sent as
    /// `x-amz-checksum-crc32`. Sent with a single PutObject only: a multipart object's checksum
    /// would need one per part, and Ceph 16 keeps neither (docs/cluster.md), so postgate keeps
    /// its checksums itself.
    pub checksum: Option<(String, String)>,
}

impl Meta {
    /// The request headers that store this metadata (lowercase names).
    fn headers(&self, with_checksum: bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let standard = [
            ("content-type", &self.content_type),
            ("content-disposition", &self.content_disposition),
            ("content-encoding", &self.content_encoding),
            ("content-language", &self.content_language),
            ("cache-control", &self.cache_control),
            ("expires", &self.expires),
        ];
        for (name, value) in standard {
            if let Some(value) = value {
                out.push((name.to_owned(), value.clone()));
            }
        }
        for (name, value) in &self.user {
            out.push((
                format!("x-amz-meta-{}", name.to_ascii_lowercase()),
                value.clone(),
            ));
        }
        if let (true, Some((algorithm, value))) = (with_checksum, &self.checksum) {
            out.push((
                format!("x-amz-checksum-{}", algorithm.to_ascii_lowercase()),
                value.clone(),
            ));
        }
        out
    }

    /// The metadata an answer's headers carry.
    fn from_headers(headers: &HeaderMap) -> Meta {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut meta = Meta {
            content_type: text("content-type"),
            content_disposition: text("content-disposition"),
            content_encoding: text("content-encoding"),
            content_language: text("content-language"),
            cache_control: text("cache-control"),
            expires: text("expires"),
            ..Meta::default()
        };
        for (name, value) in headers {
            let Ok(value) = value.to_str() else { continue };
            if let Some(user) = name.as_str().strip_prefix("x-amz-meta-") {
                meta.user.insert(user.to_owned(), value.to_owned());
            } else if let Some(algorithm) = name.as_str().strip_prefix("x-amz-checksum-")
                && algorithm != "type"
            {
                meta.checksum = Some((algorithm.to_owned(), value.to_owned()));
            }
        }
        meta
    }
}

/// What HEAD (or a GET's headers) says of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The whole object's size (also for a ranged GET).
    pub size: u64,
    /// As the backend sends it, quoted.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    pub meta: Meta,
}

impl ObjectInfo {
    fn from_headers(headers: &HeaderMap) -> ObjectInfo {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        ObjectInfo {
            size: text(CONTENT_LENGTH)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: text(reqwest::header::ETAG).unwrap_or_default().to_owned(),
            last_modified: text(reqwest::header::LAST_MODIFIED)
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            meta: Meta::from_headers(headers),
        }
    }
}

/// One bucket of one S3-compatible cluster. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Backend {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: rusty_s3::Bucket,
    access_key: String,
    secret: String,
    client: reqwest::Client,
    options: Options,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Backend")
            .field("bucket", &self.inner.bucket.base_url().as_str())
            .field("access_key", &self.inner.access_key)
            .finish_non_exhaustive()
    }
}

/// A caller's body for the backend (a client's part, streamed through).
type CallerStream = std::pin::Pin<
    Box<dyn Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

/// What a request sends as its body.
enum Payload {
    Empty,
    Bytes(Bytes),
    /// A spool file, opened again for every attempt.
    File {
        path: PathBuf,
        len: u64,
    },
    /// A caller's stream: sent once, so its request is never retried.
    Stream(Option<(CallerStream, u64)>),
}

/// A successful answer: streaming, or read whole (`Backend::send_read`).
enum Answer {
    Streaming(reqwest::Response),
    Read(HeaderMap, Bytes),
}

/// Whether a request may be sent again after a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent (GET, HEAD, DELETE, UploadPart, Complete, Copy, PutObject of a spool file):
    /// retried on any retryable failure.
    Idempotent,
    /// Creates something on each success (CreateMultipartUpload): retried only when the
    /// request surely had no effect: refused by the cluster with a retryable answer, or never
    /// connected.
    WhenNotDone,
    Never,
}

/// One request to the bucket.
struct Call<'a> {
    method: Method,
    /// None: the bucket itself.
    key: Option<&'a str>,
    query: Vec<(&'static str, String)>,
    /// Lowercase names; the `x-amz-*` ones are signed.
    headers: Vec<(String, String)>,
    body: Payload,
    retry: Retry,
}

/// Whether a URL can carry `key` as it is: a `.` or `..` segment would be resolved away when the
/// URL is built (`bkt/../../other/x` becomes the path `/other/x`: another bucket), so a key with
/// one is never sent. S3 keys may hold such segments; postgate refuses them under this backend.
pub fn addressable(key: &str) -> bool {
    !key.split('/')
        .any(|segment| segment == "." || segment == "..")
}

impl<'a> Call<'a> {
    fn new(method: Method, key: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Payload::Empty,
            retry: Retry::Idempotent,
        }
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }
}

impl Backend {
    /// A backend for `bucket` at `endpoint` (`http://host:port`, `https://s3.example.com`).
    pub fn new(
        endpoint: &str,
        bucket: &str,
        region: &str,
        access_key: &str,
        secret: &str,
        options: Options,
    ) -> Result<Backend, Error> {
        if options.part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "part size {} is below S3's minimum of 5 MiB",
                options.part_size
            )));
        }
        if options.parts_in_flight == 0 {
            return Err(Error::Config("parts in flight must be at least 1".into()));
        }
        let url: url::Url = endpoint
            .parse()
            .map_err(|e| Error::Config(format!("endpoint {endpoint:?}: {e}")))?;
        let style = match options.addressing {
            Addressing::Path => rusty_s3::UrlStyle::Path,
            Addressing::VirtualHost => rusty_s3::UrlStyle::VirtualHost,
        };
        let bucket = rusty_s3::Bucket::new(url, style, bucket.to_owned(), region.to_owned())
            .map_err(|e| Error::Config(format!("bucket {bucket:?} at {endpoint:?}: {e:?}")))?;
        let mut client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            // An S3 answer is never a redirect to follow with the same signature.
            .redirect(reqwest::redirect::Policy::none());
        for (host, addr) in &options.resolve {
            client = client.resolve(host, *addr);
        }
        let client = client
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Backend {
            inner: Arc::new(Inner {
                bucket,
                access_key: access_key.to_owned(),
                secret: secret.to_owned(),
                client,
                options,
            }),
        })
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The presigned URL of one attempt of `call`.
    fn sign(&self, call: &Call<'_>) -> url::Url {
        let bucket = &self.inner.bucket;
        let url = match call.key {
            Some(key) => bucket.object_url(key),
            None => bucket.base_url().clone(),
        };
        let method = match call.method {
            Method::GET => rusty_s3::Method::Get,
            Method::HEAD => rusty_s3::Method::Head,
            Method::POST => rusty_s3::Method::Post,
            Method::PUT => rusty_s3::Method::Put,
            _ => rusty_s3::Method::Delete,
        };
        let mut query: Vec<(&str, &str)> =
            call.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        query.sort_unstable();
        let mut signed: Vec<(&str, &str)> = call
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-amz-"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        signed.sort_unstable();
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            url,
            &self.inner.access_key,
            &self.inner.secret,
            None,
            bucket.region(),
            SIGNATURE_LIFETIME,
            query.into_iter(),
            signed.into_iter(),
        )
    }

    /// Sends `call`, again after a retryable failure as its `retry` allows; a success is a 2xx
    /// answer (its body not read yet), anything else an [`Error`].
    async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, Error> {
        match self.exchange(call, None).await? {
            Answer::Streaming(response) => Ok(response),
            Answer::Read(..) => unreachable!("no limit, no read body"),
        }
    }

    /// Like `send`, and reads the answer's body (at most `limit` bytes) within the retries: an
    /// S3 `<Error>` document in a 200 answer (CompleteMultipartUpload and CopyObject send one
    /// when they fail after their status went out) is that error, retried like any other.
    async fn send_read(&self, call: Call<'_>, limit: usize) -> Result<(HeaderMap, Bytes), Error> {
        match self.exchange(call, Some(limit)).await? {
            Answer::Read(headers, body) => Ok((headers, body)),
            Answer::Streaming(_) => unreachable!("a limit, a read body"),
        }
    }

    async fn exchange(&self, mut call: Call<'_>, read: Option<usize>) -> Result<Answer, Error> {
        if let Some(key) = call.key
            && !addressable(key)
        {
            return Err(Error::Unaddressable(key.to_owned()));
        }
        let options = &self.inner.options;
        let mut attempt = 0;
        loop {
            let (error, not_done) = match self.attempt(&mut call, read).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let again = match call.retry {
                Retry::Idempotent => error.is_retryable(),
                Retry::WhenNotDone => not_done && error.is_retryable(),
                Retry::Never => false,
            };
            if !again || attempt >= options.retries {
                return Err(error);
            }
            tracing::debug!(attempt, %error, "backend request failed, retrying");
            tokio::time::sleep(backoff(options, attempt)).await;
            attempt += 1;
        }
    }

    /// One attempt. Its error says whether the request surely had no effect (refused with an
    /// error answer, or no connection made).
    async fn attempt(
        &self,
        call: &mut Call<'_>,
        read: Option<usize>,
    ) -> Result<Answer, (Error, bool)> {
        let url = self.sign(call);
        let mut request = self.inner.client.request(call.method.clone(), url);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        // Chunks of the body handed to the connection: progress for the idle timeout.
        let progress = Arc::new(AtomicU64::new(0));
        let body = match &mut call.body {
            Payload::Empty => None,
            Payload::Bytes(bytes) => Some((reqwest::Body::from(bytes.clone()), bytes.len() as u64)),
            Payload::File { path, len } => {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| (Error::Spool(e), true))?;
                // Large reads: each is a hop to the blocking pool (see `upload::SPOOL_BUFFER`).
                let stream = tokio_util::io::ReaderStream::with_capacity(file, SPOOL_READ);
                Some((counted(stream, &progress), *len))
            }
            Payload::Stream(body) => body
                .take()
                .map(|(stream, len)| (counted(stream, &progress), len)),
        };
        if let Some((body, len)) = body {
            // A known length: S3 wants Content-Length on PutObject and UploadPart (it refuses a
            // chunked body without aws-chunked framing), and the body goes as it is, unbuffered.
            request = request.header(CONTENT_LENGTH, len).body(body);
        } else if matches!(call.method, Method::PUT | Method::POST) {
            request = request.header(CONTENT_LENGTH, 0);
        }
        let response = self.watch(request.send(), &progress).await?;
        let status = response.status();
        if status.is_success() {
            let Some(limit) = read else {
                return Ok(Answer::Streaming(response));
            };
            let headers = response.headers().clone();
            let body = self
                .read_body(response, limit)
                .await
                .map_err(|e| (e, false))?;
            if error::parse_error_document(&body).is_some() {
                return Err((Error::from_answer(status.as_u16(), &body), true));
            }
            return Ok(Answer::Read(headers, body));
        }
        let body = if call.method == Method::HEAD {
            Bytes::new()
        } else {
            self.read_small(response).await.unwrap_or_default()
        };
        Err((Error::from_answer(status.as_u16(), &body), true))
    }

    /// Waits for the answer while the body keeps moving: fails after `idle_timeout` without
    /// a chunk of the body taken and without an answer. (reqwest's own read timeout counts from
    /// the request's start, so it would cut a long upload.)
    async fn watch(
        &self,
        request: impl Future<Output = reqwest::Result<reqwest::Response>>,
        progress: &AtomicU64,
    ) -> Result<reqwest::Response, (Error, bool)> {
        let idle = self.inner.options.idle_timeout;
        tokio::pin!(request);
        let mut seen = progress.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                result = &mut request => {
                    return result.map_err(|e| {
                        let connect = e.is_connect();
                        (Error::transport(e), connect)
                    });
                }
                () = tokio::time::sleep(idle) => {
                    let now = progress.load(Ordering::Relaxed);
                    if now == seen {
                        return Err((Error::Transport(format!(
                            "no progress for {idle:?}"
                        )), false));
                    }
                    seen = now;
                }
            }
        }
    }

    /// A small answer body (an error document, a list page), within the idle timeout per chunk
    /// and `limit` bytes.
    async fn read_body(&self, response: reqwest::Response, limit: usize) -> Result<Bytes, Error> {
        let mut stream = self.stream(response);
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() > limit {
                return Err(Error::Protocol(format!("answer longer than {limit} bytes")));
            }
        }
        Ok(body.into())
    }

    async fn read_small(&self, response: reqwest::Response) -> Result<Bytes, Error> {
        self.read_body(response, MAX_ERROR_BODY).await
    }

    /// An answer's body as a stream, each chunk within the idle timeout.
    fn stream(&self, response: reqwest::Response) -> ByteStream {
        let idle = self.inner.options.idle_timeout;
        let inner = Box::pin(response.bytes_stream());
        Box::pin(futures_util::stream::unfold(
            Some(inner),
            move |state| async move {
                let mut inner = state?;
                match tokio::time::timeout(idle, inner.next()).await {
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(inner))),
                    Ok(Some(Err(e))) => Some((Err(Error::transport(e)), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(Error::Transport(format!("no byte for {idle:?}"))), None)),
                }
            },
        ))
    }
}

/// `stream` as a request body, counting its chunks into `progress` (for the idle timeout).
fn counted<S, E>(stream: S, progress: &Arc<AtomicU64>) -> reqwest::Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let progress = progress.clone();
    reqwest::Body::wrap_stream(stream.inspect(move |_| {
        progress.fetch_add(1, Ordering::Relaxed);
    }))
}

/// The wait before retry number `attempt + 1`: `base * 2^attempt`, at most `max`, drawn
/// between half of it and all of it so that clients failed together do not retry together.
fn backoff(options: &Options, attempt: u32) -> Duration {
    let step = options
        .backoff_base
        .saturating_mul(1u32 << attempt.min(20))
        .min(options.backoff_max);
    let half = step / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let options = Options::default();
        for attempt in 0..30 {
            let wait = backoff(&options, attempt);
            let step =
                (Duration::from_millis(100) * 2u32.pow(attempt.min(20))).min(options.backoff_max);
            assert!(wait >= step / 2 && wait <= step, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn metadata_goes_out_and_comes_back_as_headers() {
        let mut meta = Meta {
            content_type: Some("text/plain".into()),
            cache_control: Some("no-store".into()),
            checksum: Some(("crc32".into(), "AAAAAA==".into())),
            ..Meta::default()
        };
        meta.user.insert("Colour".into(), "blue".into());
        let headers = meta.headers(true);
        let mut map = HeaderMap::new();
        for (k, v) in &headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let back = Meta::from_headers(&map);
        assert_eq!(back.user.get("colour").map(String::as_str), Some("blue"));
        assert_eq!(back.content_type, meta.content_type);
        assert_eq!(back.checksum, meta.checksum);
        assert!(
            !meta
                .headers(false)
                .iter()
                .any(|(k, _)| k.starts_with("x-amz-checksum"))
        );
    }

    #[test]
    fn settings_are_checked() {
        let small = Options {
            part_size: MIN_PART_SIZE - 1,
            ..Options::default()
        };
        assert!(matches!(
            Backend::new("http://127.0.0.1:1", "b", "us-east-1", "k", "s", small),
            Err(Error::Config(_))
        ));
        assert!(Backend::new("ftp://x", "b", "us-east-1", "k", "s", Options::default()).is_err());
        let vhost = Options {
            addressing: Addressing::VirtualHost,
            ..Options::default()
        };
        let backend = Backend::new(
            "http://s3.test:9000",
            "photos",
            "us-east-1",
            "k",
            "s",
            vhost,
        )
        .unwrap();
        let url = backend.sign(&Call::new(Method::GET, Some("a b/c")));
        assert!(
            url.as_str()
                .starts_with("http://photos.s3.test:9000/a%20b/c?"),
            "{url}"
        );
        let path = Backend::new(
            "http://127.0.0.1:9000",
            "photos",
            "r",
            "k",
            "s",
            Options::default(),
        )
        .unwrap();
        let url = path.sign(&Call::new(Method::GET, Some("k")));
        assert!(
            url.as_str().starts_with("http://127.0.0.1:9000/photos/k?"),
            "{url}"
        );
        assert!(!format!("{path:?}").contains("\"s\""));
    }
}
