//! A server per test (temp dir, fresh SQLite file, port 0) and a request signer built on the
//! crate's AWS-vector-pinned signing functions, so every test speaks real SigV4/SigV2 on the wire.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::Digest as _;
use postgate::auth::checksum::{ChecksumAlgorithm, Checksummer};
use postgate::auth::{ChunkSigner, sigv2, sigv4};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub const ADMIN_AK: &str = "PGTESTADMIN000000001";
pub const ADMIN_SK: &str = "test-admin-secret-key/0000000000000000000";
pub const REGION: &str = "us-east-1";

/// An access key id and its secret.
#[derive(Debug, Clone)]
pub struct Creds {
    pub ak: String,
    pub sk: String,
}

impl Creds {
    pub fn new(ak: &str, sk: &str) -> Creds {
        Creds {
            ak: ak.to_owned(),
            sk: sk.to_owned(),
        }
    }

    pub fn admin() -> Creds {
        Creds::new(ADMIN_AK, ADMIN_SK)
    }
}

pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`, as the `Host` header carries it.
    pub host: String,
    pub state: postgate::AppState,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_in(tempfile::tempdir().unwrap()).await
}

/// A server on an existing data directory (e.g. one the CLI prepared).
pub async fn spawn_app_in(dir: tempfile::TempDir) -> TestApp {
    spawn_app_in_with(dir, |_| {}).await
}

/// A server on a fresh data directory whose configuration `tweak` adjusts (e.g. `--backend s3`).
pub async fn spawn_app_with(tweak: impl FnOnce(&mut postgate::Config)) -> TestApp {
    spawn_app_in_with(tempfile::tempdir().unwrap(), tweak).await
}

/// A server on the data directory `dir` whose configuration `tweak` adjusts.
pub async fn spawn_app_in_with(
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut postgate::Config),
) -> TestApp {
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    tweak(&mut config);
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(postgate::serve(listener, state.clone(), async move {
        stop_rx.await.ok();
    }));
    TestApp {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        state,
        http: reqwest::Client::new(),
        dir,
        _stop: stop,
        task,
    }
}

impl TestApp {
    /// Shuts the server down (in-flight requests finish, the database closes) and hands back
    /// its data directory.
    pub async fn stop(self) -> tempfile::TempDir {
        let TestApp {
            _stop, task, dir, ..
        } = self;
        drop(_stop);
        task.await.unwrap().unwrap();
        dir
    }

    /// A request signed with SigV4 by the admin key, payload hash signed.
    pub fn req(&self, method: Method, path: &str) -> Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path).send().await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.req(Method::HEAD, path).send().await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path).send().await
    }

    pub async fn put(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.req(Method::PUT, path).body(body).send().await
    }

    /// Creates a bucket as the admin and asserts 200.
    pub async fn create_bucket(&self, bucket: &str) {
        let res = self.req(Method::PUT, &format!("/{bucket}")).send().await;
        assert_eq!(res.status, 200, "create bucket {bucket}: {}", res.text());
    }

    /// Puts an object as the admin and asserts 200; returns the ETag.
    pub async fn put_object(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) -> String {
        let res = self.put(&obj(bucket, key), body).await;
        assert_eq!(res.status, 200, "put {bucket}/{key}: {}", res.text());
        res.header("etag").unwrap().to_owned()
    }

    /// A non-admin access key, inserted through the public db API.
    pub async fn create_key(&self, name: &str) -> Creds {
        let (ak, sk) = postgate::db::keys::generate();
        let (n, a, s) = (name.to_owned(), ak.clone(), sk.clone());
        self.state
            .db
            .write(move |c| postgate::db::keys::insert(c, &n, &a, &s, false))
            .await
            .unwrap();
        Creds { ak, sk }
    }

    /// Grants `perm` on `bucket` to `ak`.
    pub async fn allow(&self, bucket: &str, ak: &str, perm: postgate::db::buckets::Perm) {
        let (b, a) = (bucket.to_owned(), ak.to_owned());
        let ok = self
            .state
            .db
            .write(move |c| postgate::db::buckets::allow(c, &b, &a, perm))
            .await
            .unwrap();
        assert!(ok, "no bucket {bucket}");
    }

    /// Sends a request to a full URL (a presigned one) with nothing added.
    pub async fn send_url(&self, method: Method, url: &str, body: Vec<u8>) -> Resp {
        let res = self
            .http
            .request(method, url)
            .body(body)
            .send()
            .await
            .unwrap();
        Resp::read(res).await
    }

    /// A SigV4 presigned URL (`X-Amz-*` query, `host` signed, `UNSIGNED-PAYLOAD`).
    /// `extra_query` is raw (already encoded) and may be empty.
    pub fn presign_v4(
        &self,
        creds: &Creds,
        method: Method,
        path: &str,
        extra_query: &str,
        expires_secs: i64,
        at: OffsetDateTime,
    ) -> String {
        presign_v4(
            &self.base,
            &self.host,
            creds,
            method,
            path,
            extra_query,
            expires_secs,
            at,
        )
    }

    /// A SigV2 query-authenticated URL (`AWSAccessKeyId`, `Expires`, `Signature`).
    pub fn presign_v2(
        &self,
        creds: &Creds,
        method: Method,
        path: &str,
        extra_query: &str,
        expires_epoch: i64,
    ) -> String {
        let params = sigv4::parse_query(extra_query);
        let sts = sigv2::string_to_sign(
            method.as_str(),
            "",
            "",
            &expires_epoch.to_string(),
            "",
            &sigv2::canonical_resource(path, &params),
        );
        let sig = sigv2::sign(&creds.sk, &sts);
        let sep = if extra_query.is_empty() { "" } else { "&" };
        format!(
            "{}{path}?{extra_query}{sep}AWSAccessKeyId={}&Expires={expires_epoch}&Signature={}",
            self.base,
            sigv4::uri_encode(&creds.ak, true),
            sigv4::uri_encode(&sig, true)
        )
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Files in `data/tmp`.
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        tmp_files(self.dir.path())
    }

    /// A raw TCP connection to the server.
    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.host).await.unwrap()
    }
}

/// A request to any server (e.g. a subprocess), signed with SigV4 by the admin key.
pub fn req_to<'a>(
    base: &'a str,
    host: &'a str,
    http: &'a reqwest::Client,
    method: Method,
    path: &str,
) -> Req<'a> {
    Req {
        base,
        host,
        http,
        method,
        path: path.to_owned(),
        query: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        auth: Auth::V4(Creds::admin()),
        payload: Payload::Signed,
        at: OffsetDateTime::now_utc(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn presign_v4(
    base: &str,
    host: &str,
    creds: &Creds,
    method: Method,
    path: &str,
    extra_query: &str,
    expires_secs: i64,
    at: OffsetDateTime,
) -> String {
    let amz_date = sigv4::format_amz_date(at);
    let scope = sigv4::scope(&amz_date[..8], REGION, "s3");
    let mut query = extra_query.to_owned();
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(&format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires_secs}&X-Amz-SignedHeaders=host",
        sigv4::uri_encode(&format!("{}/{scope}", creds.ak), true)
    ));
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_str(host).unwrap());
    let signed = vec!["host".to_owned()];
    let creq = sigv4::canonical_request(
        method.as_str(),
        &sigv4::canonical_uri(path),
        &sigv4::canonical_query(&sigv4::parse_query(&query), true),
        &sigv4::canonical_headers(&signed, &headers, None),
        &signed,
        sigv4::UNSIGNED_PAYLOAD,
    );
    let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
    let key = sigv4::signing_key(&creds.sk, &amz_date[..8], REGION, "s3");
    let sig = sigv4::sign(&key, &sts);
    format!("{base}{path}?{query}&X-Amz-Signature={sig}")
}

pub fn tmp_files(data_dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(data_dir.join("tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every regular file under `data/blobs`.
pub fn blob_files(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("blobs"), &mut out);
    out
}

/// How a request is authenticated.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    V4(Creds),
    V2(Creds),
}

/// What `x-amz-content-sha256` says, and how the body is framed.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The hex SHA-256 of the body.
    Signed,
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
    /// This value, whatever the body is (to provoke a mismatch).
    Claimed(String),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: aws-chunked with chunk signatures; the signature of
    /// chunk `corrupt` (0-based; the final empty chunk counts) is altered.
    Chunked {
        chunk_size: usize,
        corrupt: Option<usize>,
    },
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with an `x-amz-checksum-crc32` trailer: the correct
    /// CRC32, or `crc32` when given.
    UnsignedTrailer {
        chunk_size: usize,
        crc32: Option<String>,
    },
}

/// A request being built; `prepare` signs it, `send` sends it through reqwest.
pub struct Req<'a> {
    base: &'a str,
    host: &'a str,
    http: &'a reqwest::Client,
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    auth: Auth,
    payload: Payload,
    at: OffsetDateTime,
}

/// A signed request, ready to go on the wire.
pub struct Prepared {
    pub method: Method,
    /// Path and query, encoded, as the request line carries them.
    pub target: String,
    pub url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Prepared {
    /// The request line and headers (with `Content-Length: content_length`), ending in CRLFCRLF.
    pub fn head_bytes(&self, content_length: usize) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {content_length}\r\n\r\n").as_bytes());
        out
    }
}

impl<'a> Req<'a> {
    /// Raw (already encoded) query string, without `?`.
    pub fn query(mut self, raw: &str) -> Self {
        self.query = raw.to_owned();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn anonymous(mut self) -> Self {
        self.auth = Auth::Anonymous;
        self
    }

    /// SigV4 with these credentials.
    pub fn creds(mut self, creds: &Creds) -> Self {
        self.auth = Auth::V4(creds.clone());
        self
    }

    /// SigV2 header auth with these credentials.
    pub fn v2(mut self, creds: &Creds) -> Self {
        self.auth = Auth::V2(creds.clone());
        self
    }

    pub fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }

    pub fn unsigned(self) -> Self {
        self.payload(Payload::Unsigned)
    }

    /// Signs as if the client's clock said `at`.
    pub fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }

    pub fn prepare(self) -> Prepared {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(self.host).unwrap());
        for (n, v) in &self.headers {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let params = sigv4::parse_query(&self.query);
        let mut body = self.body;
        match &self.auth {
            Auth::Anonymous => {
                if let Payload::UnsignedTrailer { chunk_size, crc32 } = &self.payload {
                    set_streaming_headers(&mut headers, body.len(), true);
                    headers.insert(
                        "x-amz-content-sha256",
                        HeaderValue::from_static(sigv4::STREAMING_UNSIGNED_TRAILER),
                    );
                    body = encode_unsigned_trailer(&body, *chunk_size, crc32.as_deref());
                }
            }
            Auth::V2(creds) => {
                // With `x-amz-date` the Date line is empty (the time is in the amz headers).
                let date = if headers.contains_key("x-amz-date") {
                    String::new()
                } else {
                    let date = httpdate::fmt_http_date(self.at.into());
                    headers.insert("date", HeaderValue::from_str(&date).unwrap());
                    date
                };
                let get = |n: &str| {
                    headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                let sts = sigv2::string_to_sign(
                    self.method.as_str(),
                    &get("content-md5"),
                    &get("content-type"),
                    &date,
                    &sigv2::canonical_amz_headers(&headers),
                    &sigv2::canonical_resource(&self.path, &params),
                );
                let sig = sigv2::sign(&creds.sk, &sts);
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!("AWS {}:{sig}", creds.ak)).unwrap(),
                );
            }
            Auth::V4(creds) => {
                let amz_date = sigv4::format_amz_date(self.at);
                let date = &amz_date[..8];
                let scope = sigv4::scope(date, REGION, "s3");
                let payload_hash = match &self.payload {
                    Payload::Signed => sigv4::hex_sha256(&body),
                    Payload::Unsigned => sigv4::UNSIGNED_PAYLOAD.to_owned(),
                    Payload::Claimed(h) => h.clone(),
                    Payload::Chunked { .. } => {
                        set_streaming_headers(&mut headers, body.len(), false);
                        sigv4::STREAMING_SIGNED.to_owned()
                    }
                    Payload::UnsignedTrailer { .. } => {
                        set_streaming_headers(&mut headers, body.len(), true);
                        sigv4::STREAMING_UNSIGNED_TRAILER.to_owned()
                    }
                };
                headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
                headers.insert(
                    "x-amz-content-sha256",
                    HeaderValue::from_str(&payload_hash).unwrap(),
                );
                let mut signed: Vec<String> =
                    headers.keys().map(|k| k.as_str().to_owned()).collect();
                signed.sort();
                signed.dedup();
                let creq = sigv4::canonical_request(
                    self.method.as_str(),
                    &sigv4::canonical_uri(&self.path),
                    &sigv4::canonical_query(&params, false),
                    &sigv4::canonical_headers(&signed, &headers, None),
                    &signed,
                    &payload_hash,
                );
                let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
                let key = sigv4::signing_key(&creds.sk, date, REGION, "s3");
                let sig = sigv4::sign(&key, &sts);
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&format!(
                        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={},Signature={sig}",
                        creds.ak,
                        signed.join(";")
                    ))
                    .unwrap(),
                );
                match &self.payload {
                    Payload::Chunked {
                        chunk_size,
                        corrupt,
                    } => {
                        let signer = ChunkSigner::new(key, amz_date.clone(), scope, sig);
                        body = encode_signed_chunks(&signer, &body, *chunk_size, *corrupt);
                    }
                    Payload::UnsignedTrailer { chunk_size, crc32 } => {
                        body = encode_unsigned_trailer(&body, *chunk_size, crc32.as_deref());
                    }
                    _ => {}
                }
            }
        }
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        Prepared {
            method: self.method,
            url: format!("{}{target}", self.base),
            target,
            headers,
            body,
        }
    }

    pub async fn send(self) -> Resp {
        let http = self.http;
        let p = self.prepare();
        let res = http
            .request(p.method, &p.url)
            .headers(p.headers)
            .body(p.body)
            .send()
            .await
            .unwrap();
        Resp::read(res).await
    }
}

fn set_streaming_headers(headers: &mut HeaderMap, decoded_len: usize, trailer: bool) {
    headers.insert("content-encoding", HeaderValue::from_static("aws-chunked"));
    headers.insert(
        "x-amz-decoded-content-length",
        HeaderValue::from_str(&decoded_len.to_string()).unwrap(),
    );
    if trailer {
        headers.insert(
            "x-amz-trailer",
            HeaderValue::from_static("x-amz-checksum-crc32"),
        );
    }
}

/// aws-chunked with chunk signatures, the final zero-length chunk signed too.
pub fn encode_signed_chunks(
    signer: &ChunkSigner,
    data: &[u8],
    chunk_size: usize,
    corrupt: Option<usize>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    let mut prev = signer.seed_signature().to_owned();
    let empty: &[u8] = &[];
    for (i, chunk) in data
        .chunks(chunk_size)
        .chain(std::iter::once(empty))
        .enumerate()
    {
        let sts = signer.chunk_string_to_sign(&prev, &sigv4::hex_sha256(chunk));
        let mut sig = signer.sign(&sts);
        prev = sig.clone();
        if corrupt == Some(i) {
            let last = if sig.ends_with('0') { "1" } else { "0" };
            sig.replace_range(sig.len() - 1.., last);
        }
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// aws-chunked without signatures, ending in an `x-amz-checksum-crc32` trailer, framed as
/// botocore and the JS SDK frame it.
pub fn encode_unsigned_trailer(data: &[u8], chunk_size: usize, crc32: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    for chunk in data.chunks(chunk_size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    let value = crc32.map_or_else(|| checksum(ChecksumAlgorithm::Crc32, data), str::to_owned);
    out.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{value}\r\n\r\n").as_bytes());
    out
}

/// A response, read whole.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub async fn read(res: reqwest::Response) -> Resp {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.bytes().await.unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `<Code>` of an S3 error body.
    pub fn code(&self) -> Option<String> {
        xml_tag(&self.text(), "Code")
    }

    /// Asserts an S3 error: status, `<Code>`, and the XML shape every error has.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        let text = self.text();
        assert_eq!(self.status, status, "status; body: {text}");
        assert_eq!(self.code().as_deref(), Some(code), "code; body: {text}");
        assert!(text.contains("<Message>"), "no <Message>: {text}");
        assert!(text.contains("<RequestId>"), "no <RequestId>: {text}");
        assert!(self.header("x-amz-request-id").is_some());
    }

    /// Asserts a successful status, showing the body when not.
    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.text());
    }
}

/// `/bucket/key` with the key encoded as clients encode it. A key with `.`/`..` segments has
/// its slashes encoded too, so that no URL layer resolves the dot segments.
pub fn obj(bucket: &str, key: &str) -> String {
    let dotted = key.split('/').any(|s| s == "." || s == "..");
    format!("/{bucket}/{}", sigv4::uri_encode(key, dotted))
}

/// The text of the first `<tag>…</tag>`, unescaped.
pub fn xml_tag(body: &str, tag: &str) -> Option<String> {
    xml_tags(body, tag).into_iter().next()
}

/// The texts of every `<tag>…</tag>` (not nested in themselves), unescaped.
pub fn xml_tags(body: &str, tag: &str) -> Vec<String> {
    xml_blocks(body, tag).iter().map(|s| unescape(s)).collect()
}

/// The raw inner markup of every `<tag>…</tag>` (also `<tag attr=…>`).
pub fn xml_blocks(body: &str, tag: &str) -> Vec<String> {
    let open_plain = format!("<{tag}>");
    let open_attr = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let a = rest.find(&open_plain);
        let b = rest.find(&open_attr);
        let start = match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        let after = &rest[start..];
        let Some(gt) = after.find('>') else { break };
        if after[..gt].ends_with('/') {
            out.push(String::new());
            rest = &after[gt + 1..];
            continue;
        }
        let inner = &after[gt + 1..];
        let Some(end) = inner.find(&close) else { break };
        out.push(inner[..end].to_owned());
        rest = &inner[end + close.len()..];
    }
    out
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

/// The quoted hex MD5, as S3's ETag of a single-part object.
pub fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", md5_hex(data))
}

pub fn content_md5(data: &[u8]) -> String {
    B64.encode(md5::Md5::digest(data))
}

pub fn checksum(algo: ChecksumAlgorithm, data: &[u8]) -> String {
    let mut c = Checksummer::new(algo);
    c.update(data);
    c.finish()
}

/// `len` deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the head of `p` declaring `content_length`, then the first `send` bytes of its body,
/// and returns the still-open stream.
pub async fn send_partial(
    stream: &mut TcpStream,
    p: &Prepared,
    content_length: usize,
    send: usize,
) {
    stream
        .write_all(&p.head_bytes(content_length))
        .await
        .unwrap();
    stream.write_all(&p.body[..send]).await.unwrap();
    stream.flush().await.unwrap();
}

/// A free port on 127.0.0.1 for a server started as a process of its own.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Adds `serve --data-dir DIR --addr HOST` and the admin key to `cmd`: the `postgate` binary, or a
/// wrapper (`unshare`, crashfs) whose last words run it. For the tests that kill the server (the
/// durability tests, the crash loop, the power-loss test) and the soak, which run it as a process.
pub fn serve_args(cmd: &mut tokio::process::Command, dir: &Path, host: &str, log: &str) {
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .arg("--addr")
        .arg(host)
        .env("POSTGATE_ACCESS_KEY", ADMIN_AK)
        .env("POSTGATE_SECRET_KEY", ADMIN_SK)
        .env("POSTGATE_LOG", log)
        .env_remove("POSTGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
}

/// Waits until the server at `base` answers its health check; panics if `child` exits first or
/// `within` passes.
pub async fn wait_ready(
    http: &reqwest::Client,
    base: &str,
    child: &mut tokio::process::Child,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(res) = http.get(format!("{base}/-/health")).send().await
            && res.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited before it was ready: {status}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `postgate serve` process of its own, with a client for it.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    pub host: String,
    pub http: reqwest::Client,
}

/// Starts `cmd` (see `serve_args`) on `dir` at a free port, its stderr shown, killed on drop, and
/// waits until it is ready.
pub async fn start_process(
    mut cmd: tokio::process::Command,
    dir: &Path,
    log: &str,
    within: Duration,
) -> ServerProcess {
    let host = format!("127.0.0.1:{}", free_port());
    serve_args(&mut cmd, dir, &host, log);
    let child = cmd
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut server = ServerProcess {
        child,
        base: format!("http://{host}"),
        host,
        http: reqwest::Client::new(),
    };
    wait_ready(&server.http, &server.base, &mut server.child, within).await;
    server
}
