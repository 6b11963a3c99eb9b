//! End-to-end S3 benchmark of the release `postgate` binary, every figure next to the limit that
//! bounds it, all measured in the same run on the same machine.
//!
//! ```text
//! cargo bench --bench s3                 # full: 1 s warm-up + 5 s per load case, 1 GiB transfers (~1.5 min)
//! cargo bench --bench s3 -- --quick      # smoke test: 0.3 s + 1.5 s per load case, 64 MiB (~15 s)
//!
//! flags (after `--`):
//!   --quick              shorter durations, 64 MiB instead of 1 GiB, 16 MiB instead of 100 MiB
//!                        for the oversized POSTs (case 10), fewer trials
//!   --out PATH           where to write the JSON (default: <target dir>/bench/s3.json, i.e.
//!                        target/bench/s3.json, or $CARGO_TARGET_DIR/bench/s3.json)
//!   --postgate PATH      server binary (default: the one cargo built for this bench)
//!   --keep               keep the scratch directory (<target dir>/bench/run-<pid>) for inspection
//!   --perf DIR           record `perf record -g` of the server during each server case into
//!                        DIR/<case>.data (needs `perf`; read with `perf report -i DIR/<case>.data`)
//!   --only GROUPS        run only these figure groups (comma-separated: small = 4-5, big = 6-7 and 11,
//!                        post = 8-10, slow = 12, ops = 13, typecheck = 14; and, only when named
//!                        here: uploads = 15, wal = 16, idle = 17, count = instructions per 4 KiB
//!                        PUT/POST/GET under callgrind, alone, no limits; cluster = 18, alone,
//!                        against a Ceph cluster it starts); the limits are always measured
//!   --uploads N, --upload-mib M, --upload-rate B   figure 15: N uploads of M MiB at B bytes/s each
//!                        (default 100, 64 (8 with --quick), 2000000)
//!   --wal-secs S         figure 16's duration (default 60, 10 with --quick)
//!   --idle N             figure 17's idle connections (default 10000, 2000 with --quick)
//!   --do-nothing-server  internal: run the do-nothing HTTP server and print its port
//! ```
//!
//! The table and `s3.json` list, for each figure, its value, the limit it is compared with, the
//! ratio, the target and PASS/FAIL. Numbers are only comparable within one run: the limits are
//! re-measured every time so that a busy or different machine moves both sides together.
//!
//! # Limits, and why each is the right yardstick
//! 1. **Loopback limit** (req/s): a hyper HTTP/1.1 server in a separate process (this binary
//!    with `--do-nothing-server`) answering every GET with 4 KiB from memory, driven by the very
//!    same load generator at 64 connections. It is postgate's own HTTP stack (hyper's http1 server
//!    on a multi-threaded tokio runtime) doing no work, so it is the ceiling for any
//!    request/response figure: the rest of the gap is postgate's (routing, SigV4, SQLite, disk).
//!    The same server streams N bytes at `/big/N` (limit 1b), the ceiling for one large transfer
//!    over loopback.
//! 2. **Disk limit** (MB/s): `dd if=/dev/zero bs=1M count=1024 conv=fdatasync` in the scratch
//!    directory, which is on the same filesystem as the server's data directory. A 1 GiB upload
//!    must land on that disk and be fsync'd before it is acknowledged, so this is its ceiling.
//! 3. **fsync'd-files floor** (files/s; measured before and after dd, the higher reading counts):
//!    64 threads each creating a 4 KiB file and `fdatasync`ing
//!    it, back to back. This is what a naive "one durable file per object" store achieves at 64
//!    concurrent uploads; postgate keeps small objects inline in SQLite and group-commits them, so
//!    4 KiB PUTs must beat this by a wide margin (target ≥ 4×).
//! 4. **MD5 limit** (MB/s, information): the `md-5` crate over 1 GiB in memory on one core. A
//!    large upload's ETag is the MD5 of all its bytes, one serial hash, so figures 6 and 9 cannot
//!    beat it whatever the disk does; their notes give the ratio to it.
//!
//! # Server figures (release `postgate serve` as a subprocess, fresh data directory)
//! 4. PutObject 4 KiB at 64 connections, SigV4 with the real payload hash, distinct keys, every
//!    answer must be 200 → req/s (target ≥ 4× limit 3), p50/p99 latency. Signatures are
//!    precomputed with `postgate::auth::sigv4` so the load generator does no crypto while timing.
//! 5. GetObject 4 KiB at 64 connections over 1024 preloaded keys → req/s (target ≥ 15% of
//!    limit 1), p99.
//! 6. PutObject 1 GiB streamed from memory in 1 MiB chunks, `UNSIGNED-PAYLOAD`, Content-Length
//!    set → MB/s (target ≥ 95% of limit 2). Server peak RSS (VmHWM) on a fresh process, and, as
//!    the baseline, VmHWM of another fresh process after a single 1 MiB PutObject; both < 32 MiB.
//! 7. GetObject 1 GiB → MB/s (information, against the loopback stream) and VmHWM of a fresh
//!    server process (< 32 MiB).
//! 8. POST Object (browser upload) 4 KiB at 64 connections: a `multipart/form-data` body with the
//!    fields of one SigV4 POST policy issued by `postgate::policy::issue` (`KeySpec::Prefix`, key
//!    `post/${filename}`), then `file` under a distinct file name; every answer must be 204 →
//!    req/s (target ≥ 4× limit 3), p50, and p99 (target < 20 ms).
//! 9. POST Object 1 GiB (policy max 5 GiB), the file streamed from memory in 1 MiB chunks,
//!    Content-Length set → MB/s (target ≥ 95% of limit 2) and VmHWM of a fresh server (< 32 MiB).
//! 10. A 100 MiB file against a policy of at most 1 KiB, over a raw `TcpStream` (client
//!     `SO_SNDBUF` shrunk) so that exactly what is written is known, 15 trials:
//!     (a) with Content-Length: from the file part's header written to the status line read
//!     (median, target < 1 ms; must be EntityTooLarge), the file bytes the client managed to
//!     write meanwhile, and of those, how many the server process read: written minus the
//!     client's send queue minus the server's receive queue, both read from `/proc/net/tcp` when
//!     the status line arrives (exact only while the server's end is still open; it closes
//!     right after answering). Written bytes mostly sit in kernel buffers; what the server read
//!     is the read-ahead of its HTTP read buffer while it parsed the fields.
//!     (b) chunked (no Content-Length), 16 KiB chunks written in lockstep so that at most 32 KiB are
//!     unread by the server at any time: file bytes the server read past the maximum when it
//!     answered EntityTooLarge (same arithmetic; worst of 5 trials; target < 64 KiB). The
//!     window keeps the kernel buffers from hiding the answer; it also caps each server read.
//! 11. CopyObject of case 6's object on a fresh server → MB/s (information, against limit 2).
//!     Last in the run (group `big`), so that the gigabyte it writes cannot slow the cases after it.
//! 12. Slow connections (group `slow`), on a fresh server with its default limits: 2,000
//!     connections each send the headers of an upload (half PutObject, half a POST form with its
//!     fields and the file's part header), then one byte every 5 s, all open at once, while one
//!     client runs 4 KiB PutObjects back to back. (a) that client's p99 (target < 100 ms; its p99
//!     alone on the same server in the note); (b) the server's VmRSS growth per slow connection
//!     (target ≤ 64 KiB); (c) every slow connection must be answered 400 RequestTimeout once the
//!     body timeout (20 s) has passed.
//! 13. What watching costs (group `ops`): browser POST Object 4 KiB @64 on two servers side by
//!     side, one with the JSON access log on (info, to its log file) and `/-/metrics` scraped
//!     every second under load, one with the access log filtered out and no scrapes; 3
//!     repetitions of on/off/off/on slices twice (order alternating), a ratio on/off each; the median
//!     ratio must be ≥ 0.95 (every ratio is in the note), and the servers' CPU per request too.
//! 14. What type checks cost (group `typecheck`): one server, POST Object 4 KiB @64 in two
//!     alternating rounds, a plain form (the type is detected and recorded, as on every upload)
//!     and a form whose policy asks for verification (`x-postgate-verify-type: on`, a PNG declared
//!     `image/png`); best of each, the verified rate must be ≥ 95% of the plain one. Then one
//!     verified POST of 1 GiB (64 MiB quick) against L2. Detection itself is always on: compare
//!     rows 8 and 9 with an older binary's (`--postgate`) to see what it costs against none.
//! 15. to 17. Many phones at once (groups `uploads`, `wal`, `idle`; `s3/phones.rs`): memory per
//!     slow upload in flight and after the burst, the WAL under sustained 4 KiB writes, memory per
//!     idle keep-alive connection.
//! 18. In front of a cluster (group `cluster`; `s3/cluster.rs`): 4 KiB PUT/POST rates and 1 GiB
//!     PUT/POST MB/s of the local store, `--backend s3` over Ceph RGW, RGW alone, and two gateway
//!     nodes against one; the gateway's overhead on 1 GiB as a ratio to RGW's own rate.
//!
//! # Load generator
//! tokio + hyper HTTP/1.1 client, exactly 64 keep-alive connections, each sending its next request
//! as soon as the previous answer is fully read, for a warm-up then a measured window; the answers
//! that complete inside the window are counted (latencies sorted for p50/p99).
//!
//! # Adding a case
//! Each case is a [`RequestSource`] (builds the n-th request of connection c) plus the expected
//! status, run by [`run_load`]; single large transfers are a `Request<BenchBody>` given to
//! [`one_request`]. POST uploads frame their multipart body with [`PostForm`] and
//! `BenchBody::framed(prefix, chunk, len, suffix)` ([`PostSmall`], `figure_post`); requests that
//! must be written byte by byte use [`raw_post`].

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use postgate::auth::sigv4;
use postgate::policy::{KeySpec, PostPolicyRequest, PresignedPost};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

#[path = "s3/cluster.rs"]
mod cluster;
#[path = "s3/count.rs"]
mod count;
#[path = "s3/phones.rs"]
mod phones;

const CONNECTIONS: usize = 64;
const SMALL: usize = 4 * 1024;
const CHUNK: usize = 1024 * 1024;
const RSS_LIMIT_MIB: f64 = 32.0;
const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "PGBENCHADMIN0000";
const SECRET_KEY: &str = "pgbench-secret-key-0000000000000000000000";
const REGION: &str = "us-east-1";
/// Keys preloaded for the 4 KiB GET case: CONNECTIONS × this.
const GET_KEYS_PER_CONN: u64 = 16;

// =============================================================================================
// Options

struct Opts {
    quick: bool,
    warmup: Duration,
    measure: Duration,
    fsync_secs: Duration,
    big: u64,
    /// Precomputed PUT signatures per connection; beyond it the client signs on the fly (counted).
    put_pool_per_conn: u64,
    out: Option<PathBuf>,
    postgate: PathBuf,
    keep: bool,
    perf: Option<PathBuf>,
    only: Option<Vec<String>>,
    /// Figure 15: slow uploads at once, their size (MiB) and each one's pace (bytes/s).
    uploads: usize,
    upload_mib: u64,
    upload_rate: u64,
    /// Figure 16: how long the WAL run lasts.
    wal_secs: u64,
    /// Figure 17: idle keep-alive connections held.
    idle: usize,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Opts {
            quick,
            warmup: Duration::from_millis(if quick { 300 } else { 1000 }),
            measure: Duration::from_millis(if quick { 1500 } else { 5000 }),
            fsync_secs: Duration::from_millis(if quick { 1000 } else { 3000 }),
            big: if quick { 64 << 20 } else { 1 << 30 },
            put_pool_per_conn: if quick { 1024 } else { 4096 },
            out: None,
            postgate: PathBuf::from(env!("CARGO_BIN_EXE_postgate")),
            keep: false,
            perf: None,
            only: None,
            uploads: 100,
            upload_mib: if quick { 8 } else { 64 },
            upload_rate: 2_000_000,
            wal_secs: if quick { 10 } else { 60 },
            idle: if quick { 2000 } else { 10_000 },
        };
        let num = |v: Option<&String>| -> u64 {
            v.and_then(|v| v.parse().ok())
                .expect("this flag needs a whole number")
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" | "--bench" => {}
                "--keep" => o.keep = true,
                "--perf" => o.perf = it.next().map(PathBuf::from),
                "--out" => o.out = it.next().map(PathBuf::from),
                "--only" => o.only = it.next().map(|g| g.split(',').map(str::to_owned).collect()),
                "--uploads" => o.uploads = num(it.next()) as usize,
                "--upload-mib" => o.upload_mib = num(it.next()),
                "--upload-rate" => o.upload_rate = num(it.next()),
                "--wal-secs" => o.wal_secs = num(it.next()),
                "--idle" => o.idle = num(it.next()) as usize,
                "--postgate" => {
                    o.postgate = PathBuf::from(it.next().expect("--postgate needs a path"))
                }
                other => eprintln!("s3 bench: ignoring unknown argument {other:?}"),
            }
        }
        o
    }

    fn wants(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|g| g == group))
    }

    /// Groups run only when named in `--only`.
    fn asks(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_some_and(|only| only.iter().any(|g| g == group))
    }

    fn size_label(&self) -> &'static str {
        if self.big == 1 << 30 {
            "1 GiB"
        } else {
            "64 MiB"
        }
    }
}

/// The directory cargo built this bench in (`<target>` of `<target>/release/postgate`), where
/// the scratch directories, profiles and the JSON go, whichever server `--postgate` names.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_postgate"))
        .parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// =============================================================================================
// Request bodies

/// `prefix`, then `len` bytes made of repeats of `chunk` (each frame at most one chunk, shared,
/// never copied), then `suffix`. Exact size hint, so hyper sends Content-Length framing.
/// Multipart POST bodies are `framed(form fields + file header, chunk, len, closing boundary)`.
pub struct BenchBody {
    prefix: Option<Bytes>,
    chunk: Bytes,
    remaining: u64,
    suffix: Option<Bytes>,
    left_total: u64,
}

impl BenchBody {
    fn empty() -> Self {
        Self::framed(Bytes::new(), Bytes::new(), 0, Bytes::new())
    }
    fn bytes(b: Bytes) -> Self {
        let n = b.len() as u64;
        Self::framed(Bytes::new(), b, n, Bytes::new())
    }
    fn repeat(chunk: Bytes, len: u64) -> Self {
        Self::framed(Bytes::new(), chunk, len, Bytes::new())
    }
    fn framed(prefix: Bytes, chunk: Bytes, len: u64, suffix: Bytes) -> Self {
        assert!(len == 0 || !chunk.is_empty());
        let left_total = prefix.len() as u64 + len + suffix.len() as u64;
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            chunk,
            remaining: len,
            suffix: (!suffix.is_empty()).then_some(suffix),
            left_total,
        }
    }
    fn len(&self) -> u64 {
        self.left_total
    }
}

impl Body for BenchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let data = if let Some(p) = this.prefix.take() {
            p
        } else if this.remaining > 0 {
            let n = this.remaining.min(this.chunk.len() as u64) as usize;
            this.remaining -= n as u64;
            this.chunk.slice(..n)
        } else if let Some(s) = this.suffix.take() {
            s
        } else {
            return Poll::Ready(None);
        };
        this.left_total -= data.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left_total == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left_total)
    }
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

// =============================================================================================
// SigV4 signing with the crate's own pure functions

const SIGNED_HEADERS: &str = "host;x-amz-content-sha256;x-amz-date";

#[derive(Clone)]
struct Signer {
    key: [u8; 32],
    access: String,
    amz_date: String,
    scope: String,
    credential_prefix: String,
    host: String,
    signed: Vec<String>,
}

impl Signer {
    /// Fixes the request time now: a bench phase lasts far less than the 15-minute skew window.
    fn new(host: &str) -> Signer {
        Signer::with_keys(host, ACCESS_KEY, SECRET_KEY)
    }

    /// [`Signer::new`] with another service's keys (the `cluster` group's Ceph RGW).
    fn with_keys(host: &str, access: &str, secret: &str) -> Signer {
        let amz_date = sigv4::format_amz_date(time::OffsetDateTime::now_utc());
        let date = &amz_date[..8];
        let scope = sigv4::scope(date, REGION, "s3");
        Signer {
            key: sigv4::signing_key(secret, date, REGION, "s3"),
            access: access.to_owned(),
            credential_prefix: format!(
                "{} Credential={access}/{scope}, SignedHeaders={SIGNED_HEADERS}, Signature=",
                sigv4::ALGORITHM
            ),
            amz_date,
            scope,
            host: host.to_owned(),
            signed: SIGNED_HEADERS.split(';').map(str::to_owned).collect(),
        }
    }

    /// Raw signature of `method path` (no query) with the three signed headers.
    fn signature(&self, method: &str, path: &str, payload_hash: &str) -> [u8; 32] {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_str(&self.host).unwrap());
        h.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(payload_hash).unwrap(),
        );
        h.insert("x-amz-date", HeaderValue::from_str(&self.amz_date).unwrap());
        let creq = sigv4::canonical_request(
            method,
            &sigv4::canonical_uri(path),
            "",
            &sigv4::canonical_headers(&self.signed, &h, None),
            &self.signed,
            payload_hash,
        );
        let sts = sigv4::string_to_sign(&self.amz_date, &self.scope, &creq);
        let hex_sig = sigv4::sign(&self.key, &sts);
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_sig, &mut out).unwrap();
        out
    }

    /// A signed request from a precomputed signature.
    fn request(
        &self,
        method: Method,
        path: &str,
        payload_hash: &'static str,
        sig: &[u8; 32],
        body: BenchBody,
    ) -> Request<BenchBody> {
        let mut auth = String::with_capacity(self.credential_prefix.len() + 64);
        auth.push_str(&self.credential_prefix);
        auth.push_str(&hex::encode(sig));
        let len = body.len();
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("x-amz-content-sha256", payload_hash)
            .header("x-amz-date", &self.amz_date)
            .header("authorization", auth);
        if len > 0 {
            b = b.header("content-length", len);
        }
        b.body(body).unwrap()
    }

    /// Signs and builds in one go (outside timed loops, or as the pool's fallback).
    fn signed(
        &self,
        method: Method,
        path: &str,
        payload_hash: &'static str,
        body: BenchBody,
    ) -> Request<BenchBody> {
        let sig = self.signature(method.as_str(), path, payload_hash);
        self.request(method, path, payload_hash, &sig, body)
    }

    /// Signs with `extra` headers (e.g. `x-amz-copy-source`) among the signed ones, as the
    /// server requires every `x-amz-*` header it is sent to be signed.
    fn signed_with(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: BenchBody,
    ) -> Request<BenchBody> {
        let payload_hash = sigv4::EMPTY_SHA256;
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_str(&self.host).unwrap());
        h.insert(
            "x-amz-content-sha256",
            HeaderValue::from_str(payload_hash).unwrap(),
        );
        h.insert("x-amz-date", HeaderValue::from_str(&self.amz_date).unwrap());
        for (name, value) in extra {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut signed: Vec<String> = self.signed.clone();
        signed.extend(extra.iter().map(|(n, _)| n.to_string()));
        signed.sort();
        let creq = sigv4::canonical_request(
            method.as_str(),
            &sigv4::canonical_uri(path),
            "",
            &sigv4::canonical_headers(&signed, &h, None),
            &signed,
            payload_hash,
        );
        let sts = sigv4::string_to_sign(&self.amz_date, &self.scope, &creq);
        let auth = format!(
            "{} Credential={}/{}, SignedHeaders={}, Signature={}",
            sigv4::ALGORITHM,
            self.access,
            self.scope,
            signed.join(";"),
            sigv4::sign(&self.key, &sts)
        );
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", auth);
        for (name, value) in h.iter() {
            b = b.header(name, value);
        }
        b.body(body).unwrap()
    }
}

// =============================================================================================
// Request sources: one per load case

/// Builds request number `seq` of connection `conn`. One implementation per load case; a POST
/// upload case is one more of these.
trait RequestSource: Send + Sync + 'static {
    fn build(&self, conn: usize, seq: u64) -> Request<BenchBody>;
}

/// `GET /` on the do-nothing server.
struct PlainGet {
    host: String,
}

impl RequestSource for PlainGet {
    fn build(&self, _conn: usize, _seq: u64) -> Request<BenchBody> {
        Request::get("/")
            .header("host", &self.host)
            .body(BenchBody::empty())
            .unwrap()
    }
}

/// PutObject of the same 4 KiB body to distinct keys `{prefix}/c{conn}/{seq}`, signed with the
/// real payload hash. Signatures for the first `per_conn` requests of each connection are
/// computed before the clock starts.
struct PutSmall {
    signer: Signer,
    prefix: &'static str,
    body: Bytes,
    body_hash: &'static str,
    pool: Vec<Vec<[u8; 32]>>,
    signed_on_the_fly: AtomicU64,
}

impl PutSmall {
    fn new(signer: Signer, prefix: &'static str, per_conn: u64) -> PutSmall {
        let body = pattern(SMALL, 42);
        let body_hash: &'static str = Box::leak(sigv4::hex_sha256(&body).into_boxed_str());
        let mut src = PutSmall {
            signer,
            prefix,
            body,
            body_hash,
            pool: Vec::new(),
            signed_on_the_fly: AtomicU64::new(0),
        };
        // Two threads: the machine may only have two cores.
        let pool: Vec<Vec<[u8; 32]>> = std::thread::scope(|s| {
            let src = &src;
            let halves: Vec<_> = (0..2)
                .map(|t| {
                    s.spawn(move || {
                        (0..CONNECTIONS)
                            .filter(|c| c % 2 == t)
                            .map(|c| {
                                let sigs = (0..per_conn)
                                    .map(|i| {
                                        src.signer.signature("PUT", &src.path(c, i), src.body_hash)
                                    })
                                    .collect::<Vec<_>>();
                                (c, sigs)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all: Vec<(usize, Vec<[u8; 32]>)> =
                halves.into_iter().flat_map(|h| h.join().unwrap()).collect();
            all.sort_by_key(|(c, _)| *c);
            all.into_iter().map(|(_, v)| v).collect()
        });
        src.pool = pool;
        src
    }

    fn path(&self, conn: usize, seq: u64) -> String {
        format!("/{BUCKET}/{}/c{conn:02}/{seq:07}", self.prefix)
    }
}

impl RequestSource for PutSmall {
    fn build(&self, conn: usize, seq: u64) -> Request<BenchBody> {
        let path = self.path(conn, seq);
        let body = BenchBody::bytes(self.body.clone());
        match self.pool[conn].get(seq as usize) {
            Some(sig) => self
                .signer
                .request(Method::PUT, &path, self.body_hash, sig, body),
            None => {
                self.signed_on_the_fly.fetch_add(1, Ordering::Relaxed);
                self.signer.signed(Method::PUT, &path, self.body_hash, body)
            }
        }
    }
}

/// GetObject over a fixed set of keys, cycling so that all connections spread over all keys.
struct GetSmall {
    signer: Signer,
    keys: Vec<(String, [u8; 32])>,
}

impl GetSmall {
    fn new(signer: Signer, paths: Vec<String>) -> GetSmall {
        let keys = paths
            .into_iter()
            .map(|p| {
                let sig = signer.signature("GET", &p, sigv4::EMPTY_SHA256);
                (p, sig)
            })
            .collect();
        GetSmall { signer, keys }
    }
}

impl RequestSource for GetSmall {
    fn build(&self, conn: usize, seq: u64) -> Request<BenchBody> {
        let (path, sig) = &self.keys[(seq as usize * CONNECTIONS + conn) % self.keys.len()];
        self.signer.request(
            Method::GET,
            path,
            sigv4::EMPTY_SHA256,
            sig,
            BenchBody::empty(),
        )
    }
}

/// A presigned SigV4 POST form (`postgate::policy::issue`, as `generate_presigned_post` would
/// return it) for `bucket`, valid for an hour, file size in `0..=max_size`.
fn presign_post(addr: SocketAddr, key: KeySpec, max_size: u64) -> PresignedPost {
    presign_post_with(addr, PostPolicyRequest::new(BUCKET, key, max_size))
}

/// [`presign_post`] of a request built by the caller.
fn presign_post_with(addr: SocketAddr, req: PostPolicyRequest) -> PresignedPost {
    postgate::policy::issue(
        &req,
        ACCESS_KEY,
        SECRET_KEY,
        REGION,
        &format!("http://{addr}/{BUCKET}"),
        time::OffsetDateTime::now_utc(),
    )
    .expect("issuing the POST policy")
}

/// The `multipart/form-data` framing of a presigned form as a browser sends it: every policy
/// field, then the `file` part (its header carries the browser's file name), then the file bytes,
/// then the closing boundary.
struct PostForm {
    boundary: String,
    fields_part: Vec<u8>,
}

impl PostForm {
    fn new(post: &PresignedPost) -> PostForm {
        let boundary = "----postgatebench7MA4YWxkTrZu0gW".to_owned();
        let mut fields_part = Vec::new();
        for (name, value) in &post.fields {
            let _ = write!(
                fields_part,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            );
        }
        PostForm {
            boundary,
            fields_part,
        }
    }

    fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// Everything before the file's bytes: the fields and the `file` part's header.
    fn prefix(&self, filename: &str) -> Bytes {
        let mut v = Vec::with_capacity(self.fields_part.len() + 160);
        v.extend_from_slice(&self.fields_part);
        let _ = write!(
            v,
            "--{}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            self.boundary
        );
        Bytes::from(v)
    }

    /// Everything after the file's bytes.
    fn suffix(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }

    /// POST to the bucket URL of `len` file bytes (repeats of `chunk`), Content-Length framing.
    fn request(&self, host: &str, filename: &str, chunk: Bytes, len: u64) -> Request<BenchBody> {
        let body = BenchBody::framed(self.prefix(filename), chunk, len, self.suffix());
        Request::post(format!("/{BUCKET}"))
            .header("host", host)
            .header("content-type", self.content_type())
            .header("content-length", body.len())
            .body(body)
            .unwrap()
    }
}

/// Browser-style POST Object of the same 4 KiB file under distinct file names
/// `c{conn}-{seq}.bin`; one `KeySpec::Prefix` policy for all (key `post/${filename}`), signed once
/// before the clock starts, so the load generator only frames the body.
struct PostSmall {
    host: String,
    form: PostForm,
    file: Bytes,
}

impl RequestSource for PostSmall {
    fn build(&self, conn: usize, seq: u64) -> Request<BenchBody> {
        let filename = format!("c{conn:02}-{seq:07}.bin");
        self.form
            .request(&self.host, &filename, self.file.clone(), SMALL as u64)
    }
}

// =============================================================================================
// Load generator

#[derive(Clone, Copy)]
enum Plan {
    /// Run until `end`; count only requests that start at or after `measure_start`.
    Timed {
        measure_start: Instant,
        end: Instant,
    },
    /// Exactly this many requests per connection, all counted.
    Count(u64),
}

#[derive(Default)]
struct ConnStats {
    completed: u64,
    /// Requests sent, warm-up included: what the CPU times per request divide by.
    sent: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

struct LoadResult {
    completed: u64,
    sent: u64,
    /// The load generator's own CPU time (this process, user + system) over the run, seconds.
    client_cpu_s: f64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    first_error: Option<String>,
}

type Sender = hyper::client::conn::http1::SendRequest<BenchBody>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reads the whole body; keeps the first 2 KiB when `keep` (for error reports).
async fn drain(mut body: Incoming, keep: bool) -> Result<(u64, Vec<u8>), hyper::Error> {
    let mut n = 0u64;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
            if keep && kept.len() < 2048 {
                let take = data.len().min(2048 - kept.len());
                kept.extend_from_slice(&data[..take]);
            }
        }
    }
    Ok((n, kept))
}

async fn connection_loop(
    mut sender: Sender,
    conn: usize,
    source: Arc<dyn RequestSource>,
    expected: StatusCode,
    plan: Plan,
) -> ConnStats {
    let mut st = ConnStats::default();
    let mut seq = 0u64;
    loop {
        match plan {
            Plan::Timed { end, .. } if Instant::now() >= end => break,
            Plan::Count(n) if seq >= n => break,
            _ => {}
        }
        let req = source.build(conn, seq);
        let what = format!("{} {}", req.method(), req.uri());
        seq += 1;
        st.sent += 1;
        let t0 = Instant::now();
        let outcome = async {
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            let status = res.status();
            let (_, body) = drain(res.into_body(), status != expected).await?;
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let t1 = Instant::now();
        match outcome {
            Ok((status, _)) if status == expected => {
                // Throughput counts the answers that complete inside the window (a request that
                // straddles an edge is work done in both); counting only requests that also
                // start inside it would drop about one latency per connection at each edge.
                let counted = match plan {
                    Plan::Timed { measure_start, end } => t1 > measure_start && t1 <= end,
                    Plan::Count(_) => true,
                };
                if counted {
                    st.completed += 1;
                    st.latencies_us
                        .push(u32::try_from((t1 - t0).as_micros()).unwrap_or(u32::MAX));
                }
            }
            Ok((status, body)) => {
                st.errors += 1;
                st.first_error.get_or_insert_with(|| {
                    format!("{what}: {status}: {}", String::from_utf8_lossy(&body))
                });
            }
            Err(e) => {
                // The connection is gone; a load generator that reconnects would hide this.
                st.errors += 1;
                st.first_error
                    .get_or_insert_with(|| format!("{what}: transport error: {e}"));
                break;
            }
        }
    }
    st
}

/// Runs `source` on exactly [`CONNECTIONS`] keep-alive connections, back to back.
async fn run_load(
    addr: SocketAddr,
    source: Arc<dyn RequestSource>,
    expected: StatusCode,
    plan_of: impl FnOnce(Instant) -> Plan,
) -> LoadResult {
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        senders.push(connect(addr).await.expect("connecting the load generator"));
    }
    let start = Instant::now();
    let cpu_start = cpu_secs_of("/proc/self/stat");
    let plan = plan_of(start);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, s)| tokio::spawn(connection_loop(s, c, source.clone(), expected, plan)))
        .collect();
    let mut all = ConnStats::default();
    for t in tasks {
        let st = t.await.expect("connection task panicked");
        all.completed += st.completed;
        all.sent += st.sent;
        all.errors += st.errors;
        all.latencies_us.extend(st.latencies_us);
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let client_cpu_s = cpu_secs_of("/proc/self/stat") - cpu_start;
    let elapsed = match plan {
        Plan::Timed { measure_start, end } => end - measure_start,
        Plan::Count(_) => start.elapsed(),
    };
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let v = &all.latencies_us;
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        f64::from(v[i]) / 1000.0
    };
    LoadResult {
        completed: all.completed,
        sent: all.sent,
        client_cpu_s,
        errors: all.errors,
        rps: all.completed as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        first_error: all.first_error,
    }
}

/// CPU time per request sent of one load case (warm-up included), µs: the server process's and
/// the load generator's (this process).
#[derive(Clone, Copy)]
struct CpuPerRequest {
    server_us: f64,
    client_us: f64,
    /// The server's minor page faults per request: memory the allocator handed back to the
    /// kernel and took again (each fault maps and zeroes a page).
    server_faults: f64,
}

impl CpuPerRequest {
    /// The highest rate the machine's cores allow when every request costs this much CPU in the
    /// two processes together, req/s.
    fn cap_rps(self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores as f64 * 1e6 / (self.server_us + self.client_us)
    }
}

/// [`run_load`] against `server`, with both processes' CPU time per request.
async fn run_load_cpu(
    server: &Proc,
    source: Arc<dyn RequestSource>,
    expected: StatusCode,
    plan_of: impl FnOnce(Instant) -> Plan,
) -> (LoadResult, CpuPerRequest) {
    let before = cpu_secs(server.pid());
    let faults_before = minor_faults(server.pid());
    let r = run_load(server.addr, source, expected, plan_of).await;
    let sent = r.sent.max(1) as f64;
    let cpu = CpuPerRequest {
        server_us: (cpu_secs(server.pid()) - before) / sent * 1e6,
        client_us: r.client_cpu_s / sent * 1e6,
        server_faults: (minor_faults(server.pid()) - faults_before) / sent,
    };
    (r, cpu)
}

/// The row of a case's CPU per request. The two processes share the cores, so CPU alone caps
/// the case's rate at cores / (server + load generator CPU per request); the note gives that cap
/// as a ratio to the loopback rate L1 measured in the same run, the most the case can reach
/// against L1 on this machine whatever else it waits for.
fn cpu_row(figure: &str, cpu: CpuPerRequest, loopback_rps: f64) -> Row {
    Row::limit(
        format!("{figure} CPU per request (server)"),
        cpu.server_us,
        "µs",
        format!(
            "load generator {:.1} µs; the cores allow at most {:.0} req/s = {:.3}x L1; server \
             minor page faults per request {:.2}",
            cpu.client_us,
            cpu.cap_rps(),
            cpu.cap_rps() / loopback_rps,
            cpu.server_faults
        ),
    )
}

fn timed(o: &Opts) -> impl FnOnce(Instant) -> Plan + use<> {
    let (warmup, measure) = (o.warmup, o.measure);
    move |start| Plan::Timed {
        measure_start: start + warmup,
        end: start + warmup + measure,
    }
}

struct Transfer {
    status: StatusCode,
    received: u64,
    secs: f64,
    body: Vec<u8>,
}

/// One request on a fresh connection, timed from send to the last byte of the answer.
async fn one_request(addr: SocketAddr, req: Request<BenchBody>) -> Result<Transfer, String> {
    let mut sender = connect(addr).await?;
    let t0 = Instant::now();
    sender.ready().await.map_err(|e| e.to_string())?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = res.status();
    let (received, body) = drain(res.into_body(), !status.is_success())
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(Transfer {
        status,
        received,
        secs: t0.elapsed().as_secs_f64(),
        body,
    })
}

fn expect_ok(what: &str, t: &Transfer) {
    assert!(
        t.status.is_success(),
        "{what}: {} {}",
        t.status,
        String::from_utf8_lossy(&t.body)
    );
}

// =============================================================================================
// Raw-socket POSTs (case 10): exactly what is written, and when

/// Requested `SO_SNDBUF` of the raw client sockets (Linux doubles it and enforces a minimum), so
/// that the client's own kernel buffer holds little of what the server has not read.
const RAW_SNDBUF: u32 = 4096;
/// File bytes per write (Content-Length) or per chunk (chunked).
const RAW_PIECE: usize = 16 * 1024;
/// Chunked case: the next chunk is written only while at most this many bytes are written but not
/// yet read by the server process (client send queue + server receive queue).
const RAW_WINDOW: u64 = 32 * 1024;

/// The two kernel queues of one loopback connection that hold bytes the client wrote and the
/// server has not read, from `/proc/net/tcp`: `tx_queue` of the client's end (not yet acknowledged
/// by the server's kernel) and `rx_queue` of the server's end (arrived, not yet read).
#[derive(Clone, Copy, Debug, Default)]
struct Queues {
    client_tx: u64,
    /// `None` once the server has closed its end (its unread bytes are then discarded).
    server_rx: Option<u64>,
}

impl Queues {
    fn read(client: u16, server: u16) -> Queues {
        let mut q = Queues::default();
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
            return q;
        };
        let port = |a: &str| {
            a.rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
        };
        let hex = |v: &str| u64::from_str_radix(v, 16).unwrap_or(0);
        for line in table.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue ...
            let f: Vec<&str> = line.split_whitespace().take(5).collect();
            let [_, local, remote, _, queues] = f[..] else {
                continue;
            };
            let (Some(local), Some(remote), Some((tx, rx))) =
                (port(local), port(remote), queues.split_once(':'))
            else {
                continue;
            };
            if (local, remote) == (client, server) {
                q.client_tx = hex(tx);
            } else if (local, remote) == (server, client) {
                q.server_rx = Some(hex(rx));
            }
        }
        q
    }

    /// Bytes written by the client that no process has read yet, if the server's end is open.
    fn unread(&self) -> Option<u64> {
        self.server_rx.map(|rx| rx + self.client_tx)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` of the whole form; the file is written as fast as the socket takes it.
    Length,
    /// `Transfer-Encoding: chunked`, [`RAW_PIECE`] file bytes per chunk, at most [`RAW_WINDOW`]
    /// bytes unread by the server at any time.
    Chunked,
}

/// What a raw POST saw. Byte counts are wire bytes after the request head, the fields and the
/// `file` part header, i.e. the file bytes plus (chunked) the chunk framing.
struct RawPost {
    status: u16,
    answer: String,
    /// From the last byte of the file part's header written to the status line read.
    head_to_status: Duration,
    /// Bytes the client's kernel had accepted when the status line arrived, and both queues then.
    written: u64,
    queues: Queues,
    /// The last sample before the status line with the server's end still open: (written, unread).
    last_open: Option<(u64, u64)>,
    sndbuf: u32,
}

impl RawPost {
    /// Bounds of the bytes the server process read: exact if the server's end was still open at
    /// the status line, otherwise between the last open sample and everything not left in the
    /// client's own send queue.
    fn server_read(&self) -> (u64, u64) {
        match self.queues.unread() {
            Some(unread) => {
                let r = self.written.saturating_sub(unread);
                (r, r)
            }
            None => (
                self.last_open.map_or(0, |(w, u)| w.saturating_sub(u)),
                self.written.saturating_sub(self.queues.client_tx),
            ),
        }
    }
}

/// File bytes in the first `wire` bytes of [`RAW_PIECE`]-sized chunks (`4000\r\n` … `\r\n`).
fn chunked_file_bytes(wire: u64) -> u64 {
    let head = format!("{RAW_PIECE:x}\r\n").len() as u64;
    let per = head + RAW_PIECE as u64 + 2;
    (wire / per) * RAW_PIECE as u64 + (wire % per).saturating_sub(head).min(RAW_PIECE as u64)
}

/// POSTs `form` with a `file_len`-byte file over a raw socket and watches what happens: the
/// writer stops at the status line (or when the server closes), the reader timestamps it.
async fn raw_post(
    addr: SocketAddr,
    form: &PostForm,
    file_len: u64,
    framing: Framing,
    piece: &Bytes,
) -> Result<RawPost, String> {
    let e = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    let sock = TcpSocket::new_v4().map_err(e("socket"))?;
    sock.set_send_buffer_size(RAW_SNDBUF)
        .map_err(e("SO_SNDBUF"))?;
    let sndbuf = sock.send_buffer_size().map_err(e("SO_SNDBUF"))?;
    let stream = sock.connect(addr).await.map_err(e("connect"))?;
    stream.set_nodelay(true).map_err(e("nodelay"))?;
    let (client_port, server_port) = (stream.local_addr().map_err(e("addr"))?.port(), addr.port());
    let (mut rd, mut wr) = stream.into_split();

    let prefix = form.prefix("too-big.bin");
    let suffix = form.suffix();
    let mut first = format!(
        "POST /{BUCKET} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {}\r\n",
        form.content_type()
    );
    match framing {
        Framing::Length => {
            let total = prefix.len() as u64 + file_len + suffix.len() as u64;
            let _ = write!(first, "content-length: {total}\r\n\r\n");
        }
        Framing::Chunked => {
            let _ = write!(
                first,
                "transfer-encoding: chunked\r\n\r\n{:x}\r\n",
                prefix.len()
            );
        }
    }
    let mut first = first.into_bytes();
    first.extend_from_slice(&prefix);
    if framing == Framing::Chunked {
        first.extend_from_slice(b"\r\n");
    }
    wr.write_all(&first).await.map_err(e("write head"))?;
    let t0 = Instant::now();

    let written = Arc::new(AtomicU64::new(0));
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(false);
    let reader = {
        let written = written.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut tmp = vec![0u8; 16 * 1024];
            let mut at_status = None;
            // Until the server closes (it must: the body is unread), at most 10 s.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, rd.read(&mut tmp)).await {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
                if at_status.is_none() && buf.windows(2).any(|w| w == b"\r\n") {
                    let t = Instant::now();
                    let w = written.load(Ordering::SeqCst);
                    let q = Queues::read(client_port, server_port);
                    at_status = Some((t, w, q));
                    let _ = seen_tx.send(true);
                }
            }
            (at_status, buf)
        })
    };

    // Writes `buf`, counting every byte the kernel takes; false once the status line is in or
    // the connection is gone.
    let mut last_open = None;
    let mut write_counted = async |buf: &[u8], seen_rx: &mut tokio::sync::watch::Receiver<bool>| {
        let mut off = 0;
        while off < buf.len() {
            if *seen_rx.borrow() {
                return false;
            }
            tokio::select! {
                biased;
                _ = seen_rx.changed() => return false,
                r = wr.write(&buf[off..]) => match r {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        off += n;
                        written.fetch_add(n as u64, Ordering::SeqCst);
                    }
                },
            }
        }
        true
    };
    let mut sent = 0u64;
    let mut chunk_frame = Vec::with_capacity(RAW_PIECE + 16);
    'write: while sent < file_len {
        let n = (file_len - sent).min(RAW_PIECE as u64) as usize;
        let data: &[u8] = match framing {
            Framing::Length => &piece[..n],
            Framing::Chunked => {
                // Lockstep: wait until the server has read enough of what was sent.
                loop {
                    if *seen_rx.borrow() {
                        break 'write;
                    }
                    let q = Queues::read(client_port, server_port);
                    let Some(unread) = q.unread() else {
                        break 'write;
                    };
                    last_open = Some((written.load(Ordering::SeqCst), unread));
                    if unread + RAW_PIECE as u64 <= RAW_WINDOW {
                        break;
                    }
                    tokio::select! {
                        _ = seen_rx.changed() => break 'write,
                        () = tokio::time::sleep(Duration::from_micros(200)) => {}
                    }
                }
                chunk_frame.clear();
                let _ = write!(chunk_frame, "{n:x}\r\n");
                chunk_frame.extend_from_slice(&piece[..n]);
                chunk_frame.extend_from_slice(b"\r\n");
                &chunk_frame
            }
        };
        if !write_counted(data, &mut seen_rx).await {
            break;
        }
        sent += n as u64;
    }
    if sent == file_len {
        // The server read the whole file without answering: finish the form properly.
        let mut tail = suffix.to_vec();
        if framing == Framing::Chunked {
            tail = format!("{:x}\r\n", suffix.len()).into_bytes();
            tail.extend_from_slice(&suffix);
            tail.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        let _ = wr.write_all(&tail).await;
    }
    let (at_status, buf) = reader.await.map_err(|e| format!("reader: {e}"))?;
    drop(wr);
    let Some((t1, written, queues)) = at_status else {
        return Err(format!(
            "no answer; {} bytes written; got {:?}",
            written.load(Ordering::SeqCst),
            String::from_utf8_lossy(&buf)
        ));
    };
    let answer = String::from_utf8_lossy(&buf).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(RawPost {
        status,
        answer,
        head_to_status: t1 - t0,
        written,
        queues,
        last_open,
        sndbuf,
    })
}

// =============================================================================================
// Processes: the do-nothing server and postgate

/// Kills the child on drop, so a panicking bench leaves no servers behind.
struct Proc {
    child: Child,
    addr: SocketAddr,
    log: Option<PathBuf>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmHWM` (peak RSS since start) and `VmRSS`, in MiB.
    fn memory_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// SIGTERM (graceful), then SIGKILL after 5 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(log) = &self.log {
            eprintln!(
                "s3 bench: server did not stop in 5 s, killing it (log: {})",
                log.display()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `--perf DIR`: `perf record -g` attached to the server for the duration of one case.
struct Perf(Option<Child>);

impl Perf {
    fn start(o: &Opts, server: &Proc, case: &str) -> Perf {
        let Some(dir) = &o.perf else {
            return Perf(None);
        };
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new("perf")
            .args(["record", "-F", "999", "-g", "-o"])
            .arg(dir.join(format!("{case}.data")))
            .arg("-p")
            .arg(server.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("s3 bench: cannot run perf: {e}"))
            .ok();
        // Let perf attach before the load starts.
        std::thread::sleep(Duration::from_millis(300));
        Perf(child)
    }

    /// SIGINT makes perf write its file and exit.
    fn stop(self) {
        if let Some(mut child) = self.0 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }
}

fn spawn_do_nothing() -> Proc {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .arg("--do-nothing-server")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning the do-nothing server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("reading the do-nothing server's port");
    let port: u16 = line
        .trim()
        .parse()
        .expect("do-nothing server printed no port");
    Proc {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log: None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `postgate serve` on `data_dir` (created if missing) and waits for `/-/health`.
async fn spawn_postgate(o: &Opts, data_dir: &Path, tag: &str) -> Proc {
    spawn_postgate_with(o, data_dir, tag, &[]).await
}

/// `spawn_postgate` with extra environment variables (e.g. `POSTGATE_LOG`).
async fn spawn_postgate_with(o: &Opts, data_dir: &Path, tag: &str, env: &[(&str, &str)]) -> Proc {
    spawn_postgate_wrapped(o, data_dir, tag, env, &[]).await
}

/// `spawn_postgate_with`, the server run by `wrapper` (e.g. `valgrind --tool=callgrind`) when
/// not empty; a wrapped server gets 5 minutes instead of 20 s to become ready.
async fn spawn_postgate_wrapped(
    o: &Opts,
    data_dir: &Path,
    tag: &str,
    env: &[(&str, &str)],
    wrapper: &[String],
) -> Proc {
    std::fs::create_dir_all(data_dir).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = data_dir.with_extension(format!("{tag}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(&o.postgate);
            c
        }
        None => Command::new(&o.postgate),
    };
    let child = cmd
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--addr")
        .arg(addr.to_string())
        .env("POSTGATE_ACCESS_KEY", ACCESS_KEY)
        .env("POSTGATE_SECRET_KEY", SECRET_KEY)
        .env_remove("POSTGATE_CONFIG")
        .envs(env.iter().copied())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", o.postgate.display()));
    let mut p = Proc {
        child,
        addr,
        log: Some(log.clone()),
    };
    let ready_in = Duration::from_secs(if wrapper.is_empty() { 20 } else { 300 });
    let deadline = Instant::now() + ready_in;
    loop {
        let req = Request::get("/-/health")
            .header("host", addr.to_string())
            .body(BenchBody::empty())
            .unwrap();
        if let Ok(t) = one_request(addr, req).await
            && t.status == StatusCode::OK
        {
            return p;
        }
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!(
                "postgate exited ({st}) before becoming ready:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "postgate not ready after {ready_in:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Stores `GET_KEYS_PER_CONN` 4 KiB objects per connection for the GET figures; their paths.
async fn preload_get_keys(server: &Proc, signer: &Signer) -> Vec<String> {
    let preload = Arc::new(PutSmall::new(signer.clone(), "get", GET_KEYS_PER_CONN));
    let paths: Vec<String> = (0..CONNECTIONS)
        .flat_map(|c| (0..GET_KEYS_PER_CONN).map(move |i| (c, i)))
        .map(|(c, i)| preload.path(c, i))
        .collect();
    let pre = run_load(server.addr, preload, StatusCode::OK, |_| {
        Plan::Count(GET_KEYS_PER_CONN)
    })
    .await;
    assert_eq!(pre.errors, 0, "preloading GET keys: {:?}", pre.first_error);
    paths
}

async fn create_bucket(p: &Proc) -> Signer {
    let signer = Signer::new(&p.addr.to_string());
    let req = signer.signed(
        Method::PUT,
        &format!("/{BUCKET}"),
        sigv4::EMPTY_SHA256,
        BenchBody::empty(),
    );
    let t = one_request(p.addr, req).await.expect("CreateBucket");
    expect_ok("CreateBucket", &t);
    signer
}

/// `--do-nothing-server`: postgate's HTTP stack (hyper's HTTP/1.1 server on a multi-threaded
/// tokio runtime, `TCP_NODELAY`) doing nothing. `GET /` → 4 KiB, `GET /big/{n}` → n bytes
/// streamed in 1 MiB chunks. Prints its port, serves until killed.
fn do_nothing_server() {
    use hyper::service::service_fn;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let small = pattern(SMALL, 7);
        let chunk = pattern(CHUNK, 8);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (small, chunk) = (small.clone(), chunk.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                let body = match req.uri().path().strip_prefix("/big/") {
                    Some(n) => BenchBody::repeat(chunk.clone(), n.parse().unwrap_or(0)),
                    None => BenchBody::bytes(small.clone()),
                };
                std::future::ready(Ok::<_, Infallible>(hyper::Response::new(body)))
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

// =============================================================================================
// Disk limits

/// `dd … conv=fdatasync`, timed here (dd's own figure is printed alongside for reference).
fn dd_limit(dir: &Path, bytes: u64) -> (f64, String) {
    let file = dir.join("dd.bin");
    let t0 = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .arg("bs=1M")
        .arg(format!("count={}", bytes >> 20))
        .arg("conv=fdatasync")
        .output()
        .expect("running dd");
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "dd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&file);
    let dd_says = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    (bytes as f64 / secs / 1e6, dd_says)
}

/// 64 threads × (create a 4 KiB file, write, fdatasync, close), for `dur` → files/s. The files
/// are then unlinked by the same 64 threads, untimed (one thread would need many seconds).
/// MB/s of MD5 over `bytes` in memory on one core (1 MiB at a time, from cache): the rate no
/// large upload can beat, since its ETag is this one serial hash of all its bytes.
fn md5_limit(bytes: u64) -> f64 {
    use md5::Digest as _;
    let chunk = pattern(CHUNK, 13);
    let t0 = Instant::now();
    let mut hash = md5::Md5::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        hash.update(&chunk[..n]);
        left -= n as u64;
    }
    std::hint::black_box(hash.finalize());
    bytes as f64 / t0.elapsed().as_secs_f64() / 1e6
}

fn fsync_floor(dir: &Path, dur: Duration) -> f64 {
    let dir = dir.join("fsync-floor");
    std::fs::create_dir_all(&dir).unwrap();
    let data = pattern(SMALL, 9);
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let written = std::sync::Barrier::new(CONNECTIONS + 1);
    let t0 = Instant::now();
    let secs = std::thread::scope(|s| {
        for t in 0..CONNECTIONS {
            let (dir, data, count, stop, written) = (&dir, &data, &count, &stop, &written);
            s.spawn(move || {
                let name = |i: u64| dir.join(format!("t{t:02}-{i:07}"));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut f = std::fs::File::create(name(i)).unwrap();
                    f.write_all(data).unwrap();
                    f.sync_data().unwrap();
                    drop(f);
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
                written.wait();
                for j in 0..i {
                    let _ = std::fs::remove_file(name(j));
                }
            });
        }
        std::thread::sleep(dur);
        stop.store(true, Ordering::Relaxed);
        written.wait();
        // Files finished after `stop` are counted over the time they took too.
        t0.elapsed().as_secs_f64()
    });
    let _ = std::fs::remove_dir_all(&dir);
    count.load(Ordering::Relaxed) as f64 / secs
}

// =============================================================================================
// Report

enum Target {
    /// Information only.
    None,
    /// value / limit ≥ this.
    RatioAtLeast(f64),
    /// value / limit < 1 (the limit is a budget, e.g. 32 MiB of RSS).
    Below,
}

struct Row {
    figure: String,
    value: f64,
    unit: &'static str,
    /// (short name, value) of the limit this figure is compared with.
    limit: Option<(String, f64)>,
    target: Target,
    /// Extra condition for PASS (e.g. "every answer 200"), with its explanation when it fails.
    must: Option<(bool, String)>,
    note: String,
}

impl Row {
    fn limit(figure: impl Into<String>, value: f64, unit: &'static str, note: String) -> Row {
        Row {
            figure: figure.into(),
            value,
            unit,
            limit: None,
            target: Target::None,
            must: None,
            note,
        }
    }
    fn ratio(&self) -> Option<f64> {
        self.limit.as_ref().map(|(_, l)| self.value / l)
    }
    fn pass(&self) -> Option<bool> {
        let r = self.ratio();
        let by_target = match self.target {
            Target::None => None,
            Target::RatioAtLeast(min) => Some(r.is_some_and(|r| r >= min)),
            Target::Below => Some(r.is_some_and(|r| r < 1.0)),
        };
        match (&self.must, by_target) {
            (Some((ok, _)), Some(t)) => Some(*ok && t),
            (Some((ok, _)), None) => Some(*ok),
            (None, t) => t,
        }
    }
    fn target_text(&self) -> String {
        match self.target {
            Target::None => "-".into(),
            Target::RatioAtLeast(m) => format!(">= {m:.2}x"),
            Target::Below => "< 1.00x".into(),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v >= 100.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn print_table(rows: &[Row]) {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<52} {:>16}  {:<34} {:>8}  {:<9} result",
        "figure", "value", "limit", "ratio", "target"
    );
    let _ = writeln!(s, "{}", "-".repeat(132));
    for r in rows {
        let value = format!("{} {}", fmt_num(r.value), r.unit);
        let limit = r
            .limit
            .as_ref()
            .map_or("-".to_owned(), |(n, v)| format!("{n} {}", fmt_num(*v)));
        let ratio = r.ratio().map_or("-".to_owned(), |x| format!("{x:.3}x"));
        let result = match r.pass() {
            None => "info",
            Some(true) => "PASS",
            Some(false) => "FAIL",
        };
        let _ = writeln!(
            s,
            "{:<52} {:>16}  {:<34} {:>8}  {:<9} {}",
            r.figure,
            value,
            limit,
            ratio,
            r.target_text(),
            result
        );
        if !r.note.is_empty() {
            let _ = writeln!(s, "    {}", r.note);
        }
        if let Some((false, why)) = &r.must {
            let _ = writeln!(s, "    !! {why}");
        }
    }
    println!("{s}");
}

fn write_json(path: &Path, o: &Opts, rows: &[Row], machine: serde_json::Value, total_secs: f64) {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "figure": r.figure,
                "value": r.value,
                "unit": r.unit,
                "limit": r.limit.as_ref().map(|(n, v)| json!({"name": n, "value": v})),
                "ratio": r.ratio(),
                "target": r.target_text(),
                "pass": r.pass(),
                "must": r.must.as_ref().map(|(ok, why)| json!({"ok": ok, "why": why})),
                "note": r.note,
            })
        })
        .collect();
    let doc = json!({
        "bench": "s3",
        "quick": o.quick,
        "connections": CONNECTIONS,
        "warmup_secs": o.warmup.as_secs_f64(),
        "measure_secs": o.measure.as_secs_f64(),
        "big_bytes": o.big,
        "total_secs": total_secs,
        "machine": machine,
        "rows": rows,
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
}

fn machine_state() -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": read("/proc/loadavg"),
    })
}

// =============================================================================================
// The run

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--do-nothing-server") {
        do_nothing_server();
        return;
    }
    let o = Opts::parse(&args);
    assert!(
        o.postgate.exists(),
        "{} not found (cargo builds it for `cargo bench`; or pass --postgate)",
        o.postgate.display()
    );
    let target = target_dir();
    let scratch = target
        .join("bench")
        .join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| target.join("bench").join("s3.json"));
    let machine_before = machine_state();
    eprintln!(
        "s3 bench: {} mode, server {}, scratch {}, load {}",
        if o.quick { "quick" } else { "full" },
        o.postgate.display(),
        scratch.display(),
        machine_before["loadavg"]
    );
    let t_all = Instant::now();

    // The client gets two workers: the server needs the rest of a small machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(run_all(&o, &scratch));

    step("all cases done");
    let total = t_all.elapsed().as_secs_f64();
    print_table(&rows);
    let machine = json!({ "before": machine_before, "after": machine_state() });
    write_json(&out, &o, &rows, machine.clone(), total);
    println!(
        "total {total:.1} s; load average before: {}, after: {}; JSON: {}",
        machine["before"]["loadavg"],
        machine["after"]["loadavg"],
        out.display()
    );
    if o.keep {
        println!("scratch kept: {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
}

fn step(name: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("s3 bench: [{t:6.1} s] {name}");
}

async fn run_all(o: &Opts, scratch: &Path) -> Vec<Row> {
    let mut rows = Vec::new();

    // Instruction counts need no limits (nothing to compare with): alone, and only when named.
    if o.asks("count") {
        count::figure_count(o, scratch, &mut rows).await;
        return rows;
    }
    // In front of a real Ceph cluster: alone and only when named (it starts the cluster; its
    // yardstick is RGW itself, measured in the same run, not L1-L4).
    if o.asks("cluster") {
        cluster::figure_cluster(o, scratch, &mut rows).await;
        return rows;
    }

    // --- 1. Loopback limit.
    step("loopback limit (do-nothing server)");
    let nothing = spawn_do_nothing();
    let src = Arc::new(PlainGet {
        host: nothing.addr.to_string(),
    });
    let (loopback, loopback_cpu) = run_load_cpu(&nothing, src, StatusCode::OK, timed(o)).await;
    assert_eq!(
        loopback.errors, 0,
        "do-nothing server: {:?}",
        loopback.first_error
    );
    let req = Request::get(format!("/big/{}", o.big))
        .header("host", nothing.addr.to_string())
        .body(BenchBody::empty())
        .unwrap();
    let stream = one_request(nothing.addr, req).await.unwrap();
    expect_ok("do-nothing big GET", &stream);
    assert_eq!(stream.received, o.big);
    let loopback_bulk = o.big as f64 / stream.secs / 1e6;
    nothing.stop();
    step("  do-nothing server stopped");
    rows.push(Row::limit(
        "L1 loopback: do-nothing GET 4 KiB @64 conns",
        loopback.rps,
        "req/s",
        format!(
            "p50 {:.2} ms, p99 {:.2} ms; CPU per request: server {:.1} µs, load generator {:.1} µs \
             (cores allow {:.0} req/s)",
            loopback.p50_ms,
            loopback.p99_ms,
            loopback_cpu.server_us,
            loopback_cpu.client_us,
            loopback_cpu.cap_rps()
        ),
    ));
    rows.push(Row::limit(
        format!("L1b loopback: do-nothing GET {} stream", o.size_label()),
        loopback_bulk,
        "MB/s",
        String::new(),
    ));

    // --- 2. Disk limit; 3. fsync'd-files floor, measured before and after dd. On this kind of
    // virtual disk one reading now and then comes out ten times too low (the disk still busy
    // with earlier writes); the higher of the two is the floor, which can only make the small
    // write targets harder.
    step("fsync'd-files floor (before dd)");
    let floor_before = tokio::task::block_in_place(|| fsync_floor(scratch, o.fsync_secs));
    step("disk limit (dd conv=fdatasync)");
    let (dd, dd_says) = tokio::task::block_in_place(|| dd_limit(scratch, o.big));
    rows.push(Row::limit(
        format!("L2 disk: dd {} bs=1M conv=fdatasync", o.size_label()),
        dd,
        "MB/s",
        format!("dd says: {dd_says}"),
    ));
    step("fsync'd-files floor (after dd)");
    let floor_after = tokio::task::block_in_place(|| fsync_floor(scratch, o.fsync_secs));
    step("  fsync'd-files floor done");
    let floor = floor_before.max(floor_after);
    rows.push(Row::limit(
        "L3 disk: 64 thr x (4 KiB file + fdatasync)",
        floor,
        "files/s",
        format!(
            "higher of two readings: {} before dd, {} after",
            fmt_num(floor_before),
            fmt_num(floor_after)
        ),
    ));

    // --- L4. MD5 limit: a large upload's ETag is the MD5 of its bytes, one serial hash.
    step("MD5 limit (one core)");
    let md5 = tokio::task::block_in_place(|| md5_limit(o.big));
    rows.push(Row::limit(
        format!("L4 cpu: MD5 of {} in memory, one core", o.size_label()),
        md5,
        "MB/s",
        "a serial hash every large upload computes: a ceiling for figures 6 and 9 too".into(),
    ));

    // --- 4. PutObject 4 KiB; 5. GetObject 4 KiB.
    if o.wants("small") {
        figure_small(o, scratch, &mut rows, floor, loopback.rps).await;
    }

    // --- 13. Small uploads with the access log and metrics on, and off.
    if o.wants("ops") {
        figure_ops(o, scratch, &mut rows).await;
    }

    // --- 6. PutObject big, RSS; 7. GetObject big, RSS.
    if o.wants("big") {
        figure_big(o, scratch, &mut rows, dd, md5, loopback_bulk).await;
    }

    // --- 8. POST Object 4 KiB; 9. POST Object big, RSS; 10. oversized POSTs.
    if o.wants("post") {
        figure_post(o, scratch, &mut rows, [floor, dd, md5, loopback.rps]).await;
    }

    // --- 14. Type checks: verification on vs off, small and big POSTs.
    if o.wants("typecheck") {
        figure_typecheck(o, scratch, &mut rows, dd).await;
    }

    // --- 11. CopyObject big.
    if o.wants("big") {
        figure_copy(o, scratch, &mut rows, dd).await;
    }

    // --- 12. Slow connections beside a normal client.
    if o.wants("slow") {
        figure_slow(o, scratch, &mut rows).await;
    }

    // --- 15-17. Many phones: slow uploads, the WAL under sustained writes, idle connections.
    // Not in a plain run (minutes, gigabytes of disk): asked for with `--only`.
    if o.asks("uploads") {
        phones::figure_uploads(o, scratch, &mut rows).await;
    }
    if o.asks("wal") {
        phones::figure_wal(o, scratch, &mut rows, loopback.rps).await;
    }
    if o.asks("idle") {
        phones::figure_idle(o, scratch, &mut rows).await;
    }

    rows
}

/// Figure 13: what watching costs. Browser POST Object 4 KiB @64 on two servers running side by
/// side: "on" writes an access-log line per request (JSON, info level, to its log file) and is
/// scraped at `/-/metrics` every second while it is under load; "off" has the access log
/// filtered out (`POSTGATE_LOG=postgate=info,postgate::access=off`) and is never scraped.
///
/// A shared machine's load drifts within seconds, so one long run per side would compare two
/// different machines. Instead each of `OPS_REPEATS` repetitions runs eight short slices, on,
/// off, off, on twice (or off, on, on, off: the order alternates by repetition), which cancels a
/// linear drift, and gives the repetition's ratio on/off from the summed counts. The
/// figure is the median of the repetitions' ratios (target ≥ 0.95); every ratio is in the note
/// and in the JSON. The servers' CPU time per request, which the machine's other load moves far
/// less, is the second row.
async fn figure_ops(o: &Opts, scratch: &Path, rows: &mut Vec<Row>) {
    /// Distinct keys for every request of the figure: the slice, the connection, the sequence.
    struct OpsPost {
        host: String,
        form: PostForm,
        file: Bytes,
        slice: u32,
    }
    impl RequestSource for OpsPost {
        fn build(&self, conn: usize, seq: u64) -> Request<BenchBody> {
            let filename = format!("s{:03}-c{conn:02}-{seq:07}.bin", self.slice);
            self.form
                .request(&self.host, &filename, self.file.clone(), SMALL as u64)
        }
    }
    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
    const OPS_REPEATS: usize = 3;
    let mut servers = Vec::new();
    for (watched, env) in [
        (
            true,
            &[
                ("POSTGATE_LOG", "postgate=info"),
                ("POSTGATE_LOG_FORMAT", "json"),
            ][..],
        ),
        (
            false,
            &[("POSTGATE_LOG", "postgate=info,postgate::access=off")][..],
        ),
    ] {
        let tag = if watched { "ops-on" } else { "ops-off" };
        let server = spawn_postgate_with(o, &scratch.join(tag), tag, env).await;
        create_bucket(&server).await;
        let post = presign_post(server.addr, KeySpec::Prefix("ops/".into()), SMALL as u64);
        servers.push((server, PostForm::new(&post)));
    }
    // Short slices, interleaved twice per repetition: the finer the interleaving, the less of the
    // machine's drift lands on one side only.
    let slice_len = o.measure / 4;
    let mut slice = 0u32;
    // One slice of load on server `i`: (requests answered in the window, requests sent, CPU s).
    let mut run_slice = async |i: usize, warmup: Duration, errors: &mut u64| {
        let (server, form) = &servers[i];
        slice += 1;
        let src = Arc::new(OpsPost {
            host: server.addr.to_string(),
            form: PostForm {
                boundary: form.boundary.clone(),
                fields_part: form.fields_part.clone(),
            },
            file: pattern(SMALL, 13),
            slice,
        });
        let addr = server.addr;
        let scraper = (i == 0).then(|| {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let req = Request::get("/-/metrics")
                        .header("host", addr.to_string())
                        .body(BenchBody::empty())
                        .unwrap();
                    let _ = one_request(addr, req).await;
                }
            })
        });
        let cpu_before = cpu_secs(server.pid());
        let r = run_load(server.addr, src, StatusCode::NO_CONTENT, move |start| {
            Plan::Timed {
                measure_start: start + warmup,
                end: start + warmup + slice_len,
            }
        })
        .await;
        if let Some(s) = scraper {
            s.abort();
        }
        *errors += r.errors;
        if let Some(e) = &r.first_error {
            eprintln!("s3 bench:   ops: {e}");
        }
        (r.completed, r.sent, cpu_secs(server.pid()) - cpu_before)
    };
    let mut errors = 0;
    step("POST Object 4 KiB @64, access log + metrics on and off: warm-up");
    for i in [0, 1] {
        run_slice(i, o.warmup, &mut errors).await;
    }
    let mut ratios = Vec::new();
    let mut rates = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut cpu_us = [Vec::new(), Vec::new()];
    for rep in 0..OPS_REPEATS {
        step(&format!(
            "POST Object 4 KiB @64, on/off, repetition {}",
            rep + 1
        ));
        let order = if rep % 2 == 0 {
            [0, 1, 1, 0, 0, 1, 1, 0]
        } else {
            [1, 0, 0, 1, 1, 0, 0, 1]
        };
        let mut done = [0u64; 2];
        let mut sent = [0u64; 2];
        let mut cpu = [0f64; 2];
        for i in order {
            let (d, s, c) = run_slice(i, Duration::from_millis(200), &mut errors).await;
            done[i] += d;
            sent[i] += s;
            cpu[i] += c;
        }
        let secs = 4.0 * slice_len.as_secs_f64();
        let rate = [done[0] as f64 / secs, done[1] as f64 / secs];
        let per_req = [
            cpu[0] / sent[0].max(1) as f64 * 1e6,
            cpu[1] / sent[1].max(1) as f64 * 1e6,
        ];
        eprintln!(
            "s3 bench:   ops repetition {}: on {:.0} req/s, off {:.0} req/s, ratio {:.3}; \
             server CPU on {:.1} µs, off {:.1} µs per request",
            rep + 1,
            rate[0],
            rate[1],
            rate[0] / rate[1],
            per_req[0],
            per_req[1]
        );
        ratios.push(rate[0] / rate[1]);
        rates.push(rate);
        cpu_ratios.push(per_req[1] / per_req[0]);
        cpu_us[0].push(per_req[0]);
        cpu_us[1].push(per_req[1]);
    }
    for (server, _) in servers {
        server.stop();
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let median_rate = |i: usize| median(&rates.iter().map(|r| r[i]).collect::<Vec<_>>());
    // The row compares value/limit with the target: value = median ratio × off's median rate.
    let (on, off) = (median_rate(0), median_rate(1));
    rows.push(Row {
        figure: "13 POST Object 4 KiB @64, access log + metrics on".into(),
        value: median(&ratios) * off,
        unit: "req/s",
        limit: Some(("13off".into(), off)),
        target: Target::RatioAtLeast(0.95),
        must: Some((errors == 0, format!("{errors} non-204 answers"))),
        note: format!(
            "ratio on/off per repetition (on, off, off, on twice, slices of {:.2} s, order alternating): {}; \
             median ratio {:.3}; median rates on {on:.0}, off {off:.0} req/s",
            slice_len.as_secs_f64(),
            list(&ratios),
            median(&ratios),
        ),
    });
    // The rate moves with whatever else the machine runs; the server's CPU time per request does
    // not, and on a machine where postgate is CPU-bound the rate is its inverse.
    rows.push(Row {
        figure: "13 server CPU per POST Object 4 KiB, on vs off".into(),
        value: median(&cpu_ratios) * median(&cpu_us[0]),
        unit: "µs",
        limit: Some(("13on".into(), median(&cpu_us[0]))),
        target: Target::RatioAtLeast(0.95),
        must: None,
        note: format!(
            "off/on CPU per request per repetition: {}; median off {:.1} µs / on {:.1} µs",
            list(&cpu_ratios),
            median(&cpu_us[1]),
            median(&cpu_us[0])
        ),
    });
}

async fn figure_small(o: &Opts, scratch: &Path, rows: &mut Vec<Row>, floor: f64, loopback: f64) {
    let server = spawn_postgate(o, &scratch.join("small"), "small").await;
    let signer = create_bucket(&server).await;

    step("PutObject 4 KiB @64 (precomputing signatures)");
    let t = Instant::now();
    let put = Arc::new(PutSmall::new(signer.clone(), "put", o.put_pool_per_conn));
    eprintln!(
        "s3 bench:   {} signatures in {:.2} s",
        CONNECTIONS as u64 * o.put_pool_per_conn,
        t.elapsed().as_secs_f64()
    );
    let perf = Perf::start(o, &server, "put-4k");
    let (r, cpu) = run_load_cpu(&server, put.clone(), StatusCode::OK, timed(o)).await;
    perf.stop();
    let on_the_fly = put.signed_on_the_fly.load(Ordering::Relaxed);
    let all_ok = r.errors == 0 && r.completed > 0;
    rows.push(Row {
        figure: "4 PutObject 4 KiB @64 conns, distinct keys".into(),
        value: r.rps,
        unit: "req/s",
        limit: Some(("L3".into(), floor)),
        target: Target::RatioAtLeast(4.0),
        must: Some((
            all_ok,
            format!(
                "{} non-200 answers; first: {}",
                r.errors,
                r.first_error.clone().unwrap_or_default()
            ),
        )),
        note: format!(
            "{} counted, {} errors{}",
            r.completed,
            r.errors,
            if on_the_fly > 0 {
                format!(", {on_the_fly} requests signed on the fly (pool exhausted)")
            } else {
                String::new()
            }
        ),
    });
    rows.push(Row::limit(
        "4 PutObject 4 KiB p50 latency",
        r.p50_ms,
        "ms",
        String::new(),
    ));
    rows.push(Row::limit(
        "4 PutObject 4 KiB p99 latency",
        r.p99_ms,
        "ms",
        String::new(),
    ));
    rows.push(cpu_row("4 PutObject 4 KiB", cpu, loopback));
    let (mean, note) = wal_restarts(server.addr).await;
    rows.push(Row::limit(
        "4 PutObject 4 KiB: WAL restart, mean",
        mean,
        "ms",
        note,
    ));
    drop(put);

    step("GetObject 4 KiB @64 (preloading keys)");
    let paths = preload_get_keys(&server, &signer).await;
    let get = Arc::new(GetSmall::new(Signer::new(&server.addr.to_string()), paths));
    let perf = Perf::start(o, &server, "get-4k");
    let (r, cpu) = run_load_cpu(&server, get, StatusCode::OK, timed(o)).await;
    perf.stop();
    rows.push(Row {
        figure: format!(
            "5 GetObject 4 KiB @64 conns, {} keys",
            CONNECTIONS as u64 * GET_KEYS_PER_CONN
        ),
        value: r.rps,
        unit: "req/s",
        limit: Some(("L1".into(), loopback)),
        target: Target::RatioAtLeast(0.15),
        must: Some((
            r.errors == 0 && r.completed > 0,
            format!(
                "{} non-200 answers; first: {}",
                r.errors,
                r.first_error.clone().unwrap_or_default()
            ),
        )),
        note: format!("{} counted, p50 {:.2} ms", r.completed, r.p50_ms),
    });
    rows.push(Row::limit(
        "5 GetObject 4 KiB p99 latency",
        r.p99_ms,
        "ms",
        String::new(),
    ));
    rows.push(cpu_row("5 GetObject 4 KiB", cpu, loopback));
    server.stop();
    step("  server stopped");
}

fn must_all(
    errors: u64,
    completed: u64,
    expected: StatusCode,
    first: Option<&String>,
) -> (bool, String) {
    (
        errors == 0 && completed > 0,
        format!(
            "{errors} answers other than {expected}; first: {}",
            first.cloned().unwrap_or_default()
        ),
    )
}

fn median<T: Copy + Ord>(v: &[T]) -> Option<T> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// Figures 8 (POST Object 4 KiB at 64 connections) and 10 (oversized POSTs against a 1 KiB
/// maximum) on one server, then figure 9 (POST Object big) on a fresh server, with its peak RSS.
/// `limits`: L3 (fsync'd files/s), L2 (disk MB/s), L4 (MD5 MB/s), L1 (loopback req/s).
async fn figure_post(o: &Opts, scratch: &Path, rows: &mut Vec<Row>, limits: [f64; 4]) {
    let [floor, dd, md5, loopback] = limits;
    let server = spawn_postgate(o, &scratch.join("post"), "post").await;
    let signer = create_bucket(&server).await;
    let host = server.addr.to_string();

    step("POST Object 4 KiB @64");
    let post = presign_post(server.addr, KeySpec::Prefix("post/".into()), SMALL as u64);
    let src = Arc::new(PostSmall {
        host: host.clone(),
        form: PostForm::new(&post),
        file: pattern(SMALL, 43),
    });
    let perf = Perf::start(o, &server, "post-4k");
    let (r, cpu) = run_load_cpu(&server, src, StatusCode::NO_CONTENT, timed(o)).await;
    perf.stop();
    // The uploads really landed under the expanded key.
    let probe = signer.signed(
        Method::GET,
        &format!("/{BUCKET}/post/c00-0000000.bin"),
        sigv4::EMPTY_SHA256,
        BenchBody::empty(),
    );
    let stored = one_request(server.addr, probe).await.unwrap();
    let stored_ok = stored.status == StatusCode::OK && stored.received == SMALL as u64;
    let (ok, mut why) = must_all(
        r.errors,
        r.completed,
        StatusCode::NO_CONTENT,
        r.first_error.as_ref(),
    );
    if !stored_ok {
        why += &format!(
            "; GET post/c00-0000000.bin: {} with {} bytes",
            stored.status, stored.received
        );
    }
    rows.push(Row {
        figure: "8 POST Object 4 KiB @64 conns, distinct keys".into(),
        value: r.rps,
        unit: "req/s",
        limit: Some(("L3".into(), floor)),
        target: Target::RatioAtLeast(4.0),
        must: Some((ok && stored_ok, why)),
        note: format!(
            "{} counted, {} errors; multipart form with the SigV4 policy fields, key post/${{filename}}",
            r.completed, r.errors
        ),
    });
    rows.push(Row::limit(
        "8 POST Object 4 KiB p50 latency",
        r.p50_ms,
        "ms",
        String::new(),
    ));
    rows.push(Row {
        figure: "8 POST Object 4 KiB p99 latency".into(),
        value: r.p99_ms,
        unit: "ms",
        limit: Some(("budget".into(), 20.0)),
        target: Target::Below,
        must: None,
        note: String::new(),
    });
    rows.push(cpu_row("8 POST Object 4 KiB", cpu, loopback));

    rows.extend(figure_post_with_webhook(o, &server, &scratch.join("post"), r.rps).await);

    let too_large = figure_post_too_large(o, &server).await;
    server.stop();
    step("  server stopped");

    let label = o.size_label();
    step(&format!("POST Object {label} (fresh server)"));
    let server = spawn_postgate(o, &scratch.join("post-big"), "post-big").await;
    create_bucket(&server).await;
    let post = presign_post(
        server.addr,
        KeySpec::Exact("big-post".into()),
        postgate::policy::MAX_POST_OBJECT_SIZE,
    );
    let req = PostForm::new(&post).request(
        &server.addr.to_string(),
        "big.bin",
        pattern(CHUNK, 13),
        o.big,
    );
    let perf = Perf::start(o, &server, "post-big");
    let t = one_request(server.addr, req).await.unwrap();
    perf.stop();
    assert_eq!(
        t.status,
        StatusCode::NO_CONTENT,
        "POST Object big: {}",
        String::from_utf8_lossy(&t.body)
    );
    let (hwm, rss) = server.memory_mib();
    let of_l4 = format!("; {:.2}x of L4", o.big as f64 / t.secs / 1e6 / md5);
    rows.push(transfer_row(
        format!("9 POST Object {label}, multipart, Content-Length"),
        o.big,
        t.secs,
        ("L2", dd),
        Target::RatioAtLeast(0.95),
        &of_l4,
    ));
    rows.push(rss_row(
        format!("9 server VmHWM, fresh + POST Object {label}"),
        hwm,
        rss,
    ));
    server.stop();
    step("  server stopped");
    rows.extend(too_large);
}

/// Figure 8w: what a webhook target costs 4 KiB POSTs. On the same server as figure 8, with a
/// bucket notification for `s3:ObjectCreated:*` on keys `hook/*` and a receiver answering 204,
/// rounds alternate between a form whose keys no target wants (`plain/*`) and one whose every
/// upload is wanted (`hook/*`): the outbox row is written in the upload's own transaction and
/// delivered by the worker afterwards, so the best of the wanted rounds should be within 10% of
/// the best of the others. Alternating on one server keeps the database size, the WAL and the
/// machine's other load the same for both sides. Every event must arrive.
///
/// The receiver is a real HTTP server on a runtime and thread of its own (a receiver is another
/// program): it does not take the load generator's workers, and the OS shares the cores between
/// it, the server and the load as it would. The note gives the server's CPU per upload in each
/// kind of round, and the receiver's CPU per event.
///
/// Figure 8q, after every 8w event arrived: the same alternation with keys `queued/*` wanted by
/// a target whose receiver accepts connections and never answers, so that delivery is paused
/// (that target's lane has its window of attempts waiting out their timeout; the `bench` lane
/// has nothing to send): what the outbox write alone costs. On a
/// machine where the delivery's CPU (the server's and the receiver's) competes with the uploads
/// for the same cores, 8w pays that CPU and 8q shows the upload path's own cost.
async fn figure_post_with_webhook(o: &Opts, server: &Proc, data_dir: &Path, fig8: f64) -> Vec<Row> {
    let receivers = [HookReceiver::start(), HookReceiver::start()];
    let silent = declare_hooks(data_dir, &receivers);
    tokio::time::sleep(Duration::from_millis(5500)).await;

    let [single, batched] = receivers;
    let mut rows = vec![
        delivered_row(o, server, "hook/", single, fig8).await,
        delivered_row(o, server, "batch/", batched, fig8).await,
    ];
    let queued = alternate(o, server, "queued/").await;
    drop(silent);
    let per = |secs: f64, n: u64| secs * 1e6 / n.max(1) as f64;
    rows.push(Row {
        figure: "8q POST Object 4 KiB @64 conns, outbox only, delivery paused (best of 2)".into(),
        value: queued.best[1],
        unit: "req/s",
        limit: Some(("no target (best of 2)".into(), queued.best[0])),
        target: Target::RatioAtLeast(0.9),
        must: Some((queued.failures.is_empty(), queued.failures.join("; "))),
        note: format!(
            "after 8w; keys queued/* wanted by a target that never answers; server CPU per \
                 upload {:.0} us without a target, {:.0} us with the outbox row",
            per(queued.cpu[0], queued.sent[0]),
            per(queued.cpu[1], queued.sent[1]),
        ),
    });
    rows
}

/// Figure 8w (keys `hook/*`, target `bench`: one record per POST) or 8b (keys `batch/*`,
/// target `batched`: up to 100 records per POST): rounds alternating with `plain/*`, then
/// every event awaited at `receiver`.
async fn delivered_row(
    o: &Opts,
    server: &Proc,
    prefix: &str,
    receiver: HookReceiver,
    fig8: f64,
) -> Row {
    let cpu_before = cpu_secs(server.pid());
    let hook = alternate(o, server, prefix).await;
    // Every wanted upload's event reaches the receiver (at least once).
    let expected = hook.sent[1];
    let deadline = Instant::now() + Duration::from_secs(120);
    while receiver.received() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_cpu = cpu_secs(server.pid()) - cpu_before - hook.cpu[0] - hook.cpu[1];
    let delivered = receiver.received();
    let posts = receiver.posts();
    let receiver_cpu = receiver.stop();
    let mut failures = hook.failures;
    if delivered < expected {
        failures.push(format!("{delivered} of {expected} events delivered"));
    }
    let per = |secs: f64, n: u64| secs * 1e6 / n.max(1) as f64;
    let (plain, hooked) = (
        per(hook.cpu[0], hook.sent[0]),
        per(hook.cpu[1], hook.sent[1]),
    );
    let draining = per(drained_cpu.max(0.0), expected);
    let figure = match prefix {
        "hook/" => "8w POST Object 4 KiB @64 conns, webhook target configured (best of 2)",
        _ => "8b POST Object 4 KiB @64 conns, webhook target with --batch 100 (best of 2)",
    };
    Row {
        figure: figure.into(),
        value: hook.best[1],
        unit: "req/s",
        limit: Some(("no target (best of 2)".into(), hook.best[0])),
        target: Target::RatioAtLeast(0.9),
        must: Some((failures.is_empty(), failures.join("; "))),
        note: format!(
            "same server as 8 (which made {fig8:.0} req/s), rounds alternate keys plain/* and \
             {prefix}*; {delivered} of {expected} events delivered in {posts} POSTs; server CPU \
             per upload {:.0} us without a target, {:.0} us with one, +{:.0} us after the load \
             (delivery draining): {:.3}x the server's CPU per upload; receiver CPU {:.0} us \
             per event",
            plain,
            hooked,
            draining,
            plain / (hooked + draining).max(f64::MIN_POSITIVE),
            per(receiver_cpu, delivered),
        ),
    }
}

/// Declares, as `postgate webhook add` and PutBucketNotificationConfiguration would store them,
/// the targets of figures 8w/8q and of the count group: `bench` (keys `hook/*`) delivering to
/// `receiver`, and `paused` (keys `queued/*`) delivering to the returned listener, which accepts
/// nothing (connections complete in its backlog and no answer ever comes). A running server
/// reads them again within 5 s.
fn declare_hooks(data_dir: &Path, receivers: &[HookReceiver; 2]) -> std::net::TcpListener {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let conn = postgate::db::open_migrated(&data_dir.join("postgate.db")).unwrap();
    for (name, url, batch) in [
        ("bench", receivers[0].url.clone(), 1),
        ("batched", receivers[1].url.clone(), 100),
        (
            "paused",
            format!("http://{}/hook", silent.local_addr().unwrap()),
            1,
        ),
    ] {
        postgate::db::events::put_webhook(
            &conn,
            &postgate::db::events::WebhookRecord {
                name: name.into(),
                url,
                secret: "bench-secret".into(),
                batch,
            },
        )
        .unwrap();
    }
    let rule = |target: &str, prefix: &str| postgate::events::rules::QueueRule {
        id: target.into(),
        target: target.into(),
        events: vec!["s3:ObjectCreated:*".into()],
        prefix: Some(prefix.into()),
        suffix: None,
    };
    let config = postgate::events::rules::NotificationConfig {
        queues: vec![
            rule("bench", "hook/"),
            rule("batched", "batch/"),
            rule("paused", "queued/"),
        ],
    };
    let json = serde_json::to_string(&config).unwrap();
    postgate::db::events::set_notification(&conn, BUCKET, Some(&json)).unwrap();
    silent
}

/// Rounds of figure 8w/8q: `plain/*` then `prefix`, twice. Per kind: the best req/s, the
/// server's CPU seconds and the uploads sent (warm-up included) over both rounds.
struct Alternation {
    best: [f64; 2],
    cpu: [f64; 2],
    sent: [u64; 2],
    failures: Vec<String>,
}

async fn alternate(o: &Opts, server: &Proc, prefix: &str) -> Alternation {
    let host = server.addr.to_string();
    let mut a = Alternation {
        best: [0.0; 2],
        cpu: [0.0; 2],
        sent: [0; 2],
        failures: Vec::new(),
    };
    for round in 0..2 {
        for (i, kind) in ["plain/", prefix].into_iter().enumerate() {
            step(&format!(
                "POST Object 4 KiB @64, keys {kind}*, round {round}"
            ));
            // Fresh file names each round: keys would otherwise be overwritten.
            let key_prefix = format!("{kind}{}-r{round}-", &prefix[..prefix.len() - 1]);
            let post = presign_post(server.addr, KeySpec::Prefix(key_prefix), SMALL as u64);
            let src = Arc::new(PostSmall {
                host: host.clone(),
                form: PostForm::new(&post),
                file: pattern(SMALL, 44 + i as u64),
            });
            let tag = format!(
                "post-4k-{}-{}-{round}",
                &kind[..kind.len() - 1],
                &prefix[..1]
            );
            let perf = Perf::start(o, server, &tag);
            let cpu0 = cpu_secs(server.pid());
            let r = run_load(server.addr, src, StatusCode::NO_CONTENT, timed(o)).await;
            a.cpu[i] += cpu_secs(server.pid()) - cpu0;
            perf.stop();
            a.sent[i] += r.sent;
            a.best[i] = a.best[i].max(r.rps);
            let (ok, why) = must_all(
                r.errors,
                r.completed,
                StatusCode::NO_CONTENT,
                r.first_error.as_ref(),
            );
            if !ok {
                a.failures.push(format!("keys {kind}*: {why}"));
            }
        }
    }
    a
}

/// The fields of a stat(5) file after the process's name (field 3 is index 0), as numbers
/// (0 where one is not).
fn stat_fields(stat_path: &str) -> Vec<f64> {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, r)| r);
    after_name
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect()
}

/// A process's CPU time (user + system) so far, in seconds, from `/proc/<pid>/stat` (or
/// `/proc/thread-self/stat`: the calling thread's).
fn cpu_secs_of(stat_path: &str) -> f64 {
    let fields = stat_fields(stat_path);
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn cpu_secs(pid: u32) -> f64 {
    cpu_secs_of(&format!("/proc/{pid}/stat"))
}

/// A process's minor page faults so far (`minflt`, field 10 of stat(5): 7 after the name).
fn minor_faults(pid: u32) -> f64 {
    let fields = stat_fields(&format!("/proc/{pid}/stat"));
    fields.get(7).copied().unwrap_or(0.0)
}

/// The webhook receiver of figures 8w and 8b: an axum server answering 204 on its own thread
/// and current-thread runtime, counting the records (the ids `X-Postgate-Delivery` lists) and
/// the POSTs it received.
struct HookReceiver {
    url: String,
    received: Arc<AtomicU64>,
    posts: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<f64>,
}

impl HookReceiver {
    fn start() -> HookReceiver {
        let received = Arc::new(AtomicU64::new(0));
        let posts = Arc::new(AtomicU64::new(0));
        let (counter, post_counter) = (received.clone(), posts.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}/hook", listener.local_addr().unwrap());
                url_tx.send(url).unwrap();
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(
                        move |headers: axum::http::HeaderMap, _body: axum::body::Bytes| {
                            let ids = headers
                                .get("x-postgate-delivery")
                                .map_or(1, |v| v.as_bytes().split(|b| *b == b',').count());
                            counter.fetch_add(ids as u64, Ordering::Relaxed);
                            post_counter.fetch_add(1, Ordering::Relaxed);
                            async { StatusCode::NO_CONTENT }
                        },
                    ),
                );
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            // This thread's CPU: the receiver's whole cost.
            cpu_secs_of("/proc/thread-self/stat")
        });
        HookReceiver {
            url: url_rx.recv().unwrap(),
            received,
            posts,
            stop,
            thread,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn posts(&self) -> u64 {
        self.posts.load(Ordering::Relaxed)
    }

    /// Stops it; its CPU seconds.
    fn stop(self) -> f64 {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(0.0)
    }
}

/// Figure 14: what type checks cost. One server; POST Object 4 KiB @64 in two alternating
/// rounds: a plain form (detection only, as every upload) and a form whose policy asks for
/// verification with a PNG declared `image/png` (detection, then the check); best of each.
/// Then one verified big POST, against L2.
async fn figure_typecheck(o: &Opts, scratch: &Path, rows: &mut Vec<Row>, dd: f64) {
    let server = spawn_postgate(o, &scratch.join("typecheck"), "typecheck").await;
    create_bucket(&server).await;
    let host = server.addr.to_string();
    // A PNG's signature, then filler: what a verified `image/png` upload must start with.
    let png = |len: usize| {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        v.extend_from_slice(&pattern(len - v.len(), 44));
        Bytes::from(v)
    };
    let verified = |key: KeySpec, max: u64| {
        presign_post_with(
            server.addr,
            PostPolicyRequest {
                content_type: Some(postgate::policy::ContentTypeRule::Exact("image/png".into())),
                verify_type: true,
                ..PostPolicyRequest::new(BUCKET, key, max)
            },
        )
    };
    let plain = presign_post(server.addr, KeySpec::Prefix("plain/".into()), SMALL as u64);
    let checked = verified(KeySpec::Prefix("checked/".into()), SMALL as u64);
    let (mut best, mut failures) = ([0.0f64; 2], Vec::new());
    for round in 0..2 {
        for (i, (tag, post)) in [("plain", &plain), ("verified", &checked)]
            .into_iter()
            .enumerate()
        {
            step(&format!("POST Object 4 KiB @64, {tag}, round {round}"));
            let src = Arc::new(PostSmall {
                host: host.clone(),
                form: PostForm::new(post),
                file: png(SMALL),
            });
            let r = run_load(server.addr, src, StatusCode::NO_CONTENT, timed(o)).await;
            best[i] = best[i].max(r.rps);
            if r.errors > 0 {
                failures.push(format!("{tag}: {:?}", r.first_error));
            }
        }
    }
    rows.push(Row::limit(
        "14 POST Object 4 KiB @64, type detected (best of 2)",
        best[0],
        "req/s",
        "plain form: the type is detected and recorded, not checked".into(),
    ));
    rows.push(Row {
        figure: "14 POST Object 4 KiB @64, type verified (best of 2)".into(),
        value: best[1],
        unit: "req/s",
        limit: Some(("detected".into(), best[0])),
        target: Target::RatioAtLeast(0.95),
        must: Some((failures.is_empty(), failures.join("; "))),
        note: "policy with x-postgate-verify-type: on, a PNG declared image/png".into(),
    });

    let label = o.size_label();
    step(&format!("POST Object {label}, type verified"));
    let post = verified(
        KeySpec::Exact("big-checked".into()),
        postgate::policy::MAX_POST_OBJECT_SIZE,
    );
    let req = PostForm::new(&post).request(&host, "big.png", png(CHUNK), o.big);
    let t = one_request(server.addr, req).await.unwrap();
    assert_eq!(
        t.status,
        StatusCode::NO_CONTENT,
        "POST Object big, verified: {}",
        String::from_utf8_lossy(&t.body)
    );
    rows.push(transfer_row(
        format!("14 POST Object {label}, type verified"),
        o.big,
        t.secs,
        ("L2", dd),
        Target::RatioAtLeast(0.95),
        "; compare with row 9",
    ));
    server.stop();
    step("  server stopped");
}

/// Figure 10: a huge file against a policy of at most 1 KiB, over raw sockets: (a) announced by
/// Content-Length, answered before the file is read; (b) chunked, answered at the first chunk
/// past the maximum.
async fn figure_post_too_large(o: &Opts, server: &Proc) -> Vec<Row> {
    let mut rows = Vec::new();
    const MAX: u64 = 1024;
    let huge: u64 = if o.quick { 16 << 20 } else { 100 << 20 };
    let huge_label = format!("{} MiB", huge >> 20);
    let trials = if o.quick { 5 } else { 15 };
    let form = PostForm::new(&presign_post(
        server.addr,
        KeySpec::Exact("too-big".into()),
        MAX,
    ));
    let piece = pattern(RAW_PIECE, 12);
    let refused = |p: &RawPost| p.status == 400 && p.answer.contains("EntityTooLarge");

    step(&format!("POST {huge_label} vs 1 KiB max, Content-Length"));
    let mut bad = None;
    let (mut times, mut written, mut client_q, mut server_q, mut read_hi, mut read_lo) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut sndbuf = 0;
    for _ in 0..trials {
        match raw_post(server.addr, &form, huge, Framing::Length, &piece).await {
            Ok(p) if refused(&p) => {
                times.push(p.head_to_status);
                written.push(p.written);
                client_q.push(p.queues.client_tx);
                server_q.push(p.queues.server_rx);
                let (lo, hi) = p.server_read();
                read_lo.push(lo);
                read_hi.push(hi);
                sndbuf = p.sndbuf;
            }
            Ok(p) => {
                bad.get_or_insert(format!(
                    "{}: {}",
                    p.status,
                    p.answer.chars().take(400).collect::<String>()
                ));
            }
            Err(e) => {
                bad.get_or_insert(e);
            }
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let open = server_q.iter().filter(|q| q.is_some()).count();
    rows.push(Row {
        figure: format!("10a {huge_label} POST, 1 KiB max, length: head->status"),
        value: median(&times).map_or(f64::NAN, ms),
        unit: "ms",
        limit: Some(("budget".into(), 1.0)),
        target: Target::Below,
        must: Some((
            bad.is_none() && !times.is_empty(),
            format!("not EntityTooLarge: {}", bad.clone().unwrap_or_default()),
        )),
        note: format!(
            "median of {} trials (min {:.3}, max {:.3} ms); from the file part's header written to the status line read",
            times.len(),
            times.iter().copied().min().map_or(f64::NAN, ms),
            times.iter().copied().max().map_or(f64::NAN, ms),
        ),
    });
    rows.push(Row::limit(
        "10a   file bytes written before the status (median)",
        median(&written).map_or(f64::NAN, |b| b as f64),
        "B",
        format!(
            "client SO_SNDBUF {sndbuf} B; at the status: client send queue median {} B, server \
             receive queue median {} B (server end still open in {open} of {} trials)",
            median(&client_q).unwrap_or(0),
            median(&server_q.iter().flatten().copied().collect::<Vec<_>>())
                .map_or("n/a".to_owned(), |b| b.to_string()),
            server_q.len()
        ),
    ));
    // Exact only where the server's end was still open when the status line arrived (it closes
    // right after answering, and its unread bytes go with it).
    let exact: Vec<u64> = read_lo
        .iter()
        .zip(&read_hi)
        .filter(|(lo, hi)| lo == hi)
        .map(|(lo, _)| *lo)
        .collect();
    rows.push(Row {
        figure: "10a   file bytes the server read before answering".into(),
        value: exact.iter().copied().max().map_or(f64::NAN, |b| b as f64),
        unit: "B",
        limit: None,
        target: Target::None,
        must: None,
        note: format!(
            "max over the {} of {} trials where the server's end was still open at the status \
             (written minus both kernel queues); otherwise only <= written minus the client's \
             send queue: max {} B",
            exact.len(),
            read_hi.len(),
            read_hi.iter().copied().max().unwrap_or(0)
        ),
    });

    step(&format!("POST {huge_label} vs 1 KiB max, chunked"));
    let mut bad = None;
    let (mut past_hi, mut past_lo, mut written, mut times) = (vec![], vec![], vec![], vec![]);
    for _ in 0..trials.min(5) {
        match raw_post(server.addr, &form, huge, Framing::Chunked, &piece).await {
            Ok(p) if refused(&p) => {
                let (lo, hi) = p.server_read();
                past_lo.push(chunked_file_bytes(lo) as i64 - MAX as i64);
                past_hi.push(chunked_file_bytes(hi) as i64 - MAX as i64);
                written.push(chunked_file_bytes(p.written));
                times.push(p.head_to_status);
            }
            Ok(p) => {
                bad.get_or_insert(format!(
                    "{}: {}",
                    p.status,
                    p.answer.chars().take(400).collect::<String>()
                ));
            }
            Err(e) => {
                bad.get_or_insert(e);
            }
        }
    }
    rows.push(Row {
        figure: format!("10b {huge_label} POST, 1 KiB max, chunked: read past max"),
        value: past_hi
            .iter()
            .copied()
            .max()
            .map_or(f64::NAN, |b| b as f64 / 1024.0),
        unit: "KiB",
        limit: Some(("budget".into(), 64.0)),
        target: Target::Below,
        must: Some((
            bad.is_none() && !past_hi.is_empty(),
            format!("not EntityTooLarge: {}", bad.unwrap_or_default()),
        )),
        note: format!(
            "worst of {} trials, upper bound (written minus client send queue{}); lower bound {:.1} KiB; \
             file bytes written at the status: max {:.1} KiB; {RAW_PIECE} B chunks, <= {RAW_WINDOW} B unread \
             at any time; head->status median {:.2} ms",
            past_hi.len(),
            ", minus server receive queue when still open",
            past_lo.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
            written.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
            median(&times).map_or(f64::NAN, ms),
        ),
    });
    rows
}

/// MB/s of one transfer of `bytes`, against `limit`; the note starts with the seconds it took.
fn transfer_row(
    figure: String,
    bytes: u64,
    secs: f64,
    limit: (&str, f64),
    target: Target,
    more: &str,
) -> Row {
    Row {
        figure,
        value: bytes as f64 / secs / 1e6,
        unit: "MB/s",
        limit: Some((limit.0.into(), limit.1)),
        target,
        must: None,
        note: format!("{secs:.2} s{more}"),
    }
}

fn rss_row(figure: String, hwm: f64, rss: f64) -> Row {
    Row {
        figure,
        value: hwm,
        unit: "MiB",
        limit: Some(("budget".into(), RSS_LIMIT_MIB)),
        target: Target::Below,
        must: None,
        note: format!("VmRSS after: {rss:.1} MiB"),
    }
}

/// CopyObject of the object `figure_big` stored, on a fresh server over its data directory: a
/// copy on disk, fsync'd, with no network in the way.
async fn figure_copy(o: &Opts, scratch: &Path, rows: &mut Vec<Row>, dd: f64) {
    let label = o.size_label();
    step(&format!("CopyObject {label} (fresh server)"));
    let server = spawn_postgate(o, &scratch.join("big"), "copy").await;
    let signer = Signer::new(&server.addr.to_string());
    let source = format!("/{BUCKET}/big-object");
    let req = signer.signed_with(
        Method::PUT,
        &format!("/{BUCKET}/big-copy"),
        &[("x-amz-copy-source", &source)],
        BenchBody::empty(),
    );
    let t = one_request(server.addr, req).await.unwrap();
    expect_ok("CopyObject big", &t);
    rows.push(transfer_row(
        format!("11 CopyObject {label} (server-side copy)"),
        o.big,
        t.secs,
        ("L2", dd),
        Target::None,
        "",
    ));
    server.stop();
    step("  server stopped");
}

async fn figure_big(
    o: &Opts,
    scratch: &Path,
    rows: &mut Vec<Row>,
    dd: f64,
    md5: f64,
    loopback_bulk: f64,
) {
    let label = o.size_label();
    let chunk = pattern(CHUNK, 11);

    // Baseline: peak RSS of a fresh server after one 1 MiB PutObject.
    step("VmHWM after 1 MiB PutObject (fresh server)");
    let server = spawn_postgate(o, &scratch.join("rss-1mib"), "rss").await;
    let signer = create_bucket(&server).await;
    let req = signer.signed(
        Method::PUT,
        &format!("/{BUCKET}/one-mib"),
        sigv4::UNSIGNED_PAYLOAD,
        BenchBody::repeat(chunk.clone(), CHUNK as u64),
    );
    let t = one_request(server.addr, req).await.unwrap();
    expect_ok("PutObject 1 MiB", &t);
    let (hwm, rss) = server.memory_mib();
    rows.push(rss_row(
        "6 server VmHWM, fresh + 1 MiB PutObject".into(),
        hwm,
        rss,
    ));
    server.stop();
    step("  server stopped");

    // PutObject big on a fresh server.
    step(&format!("PutObject {label} (fresh server)"));
    let dir = scratch.join("big");
    let server = spawn_postgate(o, &dir, "put").await;
    let signer = create_bucket(&server).await;
    let (hwm_idle, _) = server.memory_mib();
    let path = format!("/{BUCKET}/big-object");
    let req = signer.signed(
        Method::PUT,
        &path,
        sigv4::UNSIGNED_PAYLOAD,
        BenchBody::repeat(chunk.clone(), o.big),
    );
    let perf = Perf::start(o, &server, "put-big");
    let t = one_request(server.addr, req).await.unwrap();
    perf.stop();
    expect_ok("PutObject big", &t);
    let (hwm, rss) = server.memory_mib();
    let of_l4 = format!("; {:.2}x of L4", o.big as f64 / t.secs / 1e6 / md5);
    rows.push(transfer_row(
        format!("6 PutObject {label}, 1 MiB chunks, UNSIGNED-PAYLOAD"),
        o.big,
        t.secs,
        ("L2", dd),
        Target::RatioAtLeast(0.95),
        &of_l4,
    ));
    rows.push(rss_row(
        format!("6 server VmHWM, fresh + PutObject {label}"),
        hwm,
        rss,
    ));
    rows.last_mut().unwrap().note += &format!("; VmHWM before the upload: {hwm_idle:.1} MiB");
    server.stop();
    step("  server stopped");

    // GetObject big on a fresh server process over the same data.
    step(&format!(
        "GetObject {label} (fresh server), then CopyObject"
    ));
    let server = spawn_postgate(o, &dir, "get").await;
    let signer = Signer::new(&server.addr.to_string());
    let req = signer.signed(Method::GET, &path, sigv4::EMPTY_SHA256, BenchBody::empty());
    let perf = Perf::start(o, &server, "get-big");
    let t = one_request(server.addr, req).await.unwrap();
    perf.stop();
    expect_ok("GetObject big", &t);
    assert_eq!(t.received, o.big, "GetObject big: wrong length");
    let (hwm, rss) = server.memory_mib();
    rows.push(transfer_row(
        format!("7 GetObject {label}"),
        o.big,
        t.secs,
        ("L1b", loopback_bulk),
        Target::None,
        " (object likely in page cache: written just before)",
    ));
    rows.push(rss_row(
        format!("7 server VmHWM, fresh + GetObject {label}"),
        hwm,
        rss,
    ));

    server.stop();
    step("  server stopped");
}

// =============================================================================================
// 12. Slow connections

/// Slow connections held open at once in figure 12.
const SLOW_CONNECTIONS: usize = 2000;
/// A slow connection sends one byte this often.
const SLOW_EVERY: Duration = Duration::from_secs(5);
/// Budget of the normal client's p99 beside them (figure 12a), ms.
const SLOW_P99_BUDGET_MS: f64 = 100.0;
/// Budget of the server's RSS growth per slow connection (figure 12b), KiB.
const SLOW_RSS_BUDGET_KIB: f64 = 64.0;
/// The server's default body timeout (`--body-timeout`): a slow connection is answered after it.
const SLOW_BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// The request line and headers of `req`, with `content-length: len`, ending in CRLFCRLF.
fn raw_head(req: &Request<BenchBody>, len: u64) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri()).into_bytes();
    for (name, value) in req.headers() {
        if name != http::header::CONTENT_LENGTH {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("content-length: {len}\r\n\r\n").as_bytes());
    out
}

/// One slow client: writes `head` (a request's headers, and for a POST its form fields and the
/// file's part header), then one byte every `SLOW_EVERY`, until the server answers or closes.
/// Returns the answer's status (None: closed without one) and how long after `head` it came.
async fn slow_client(
    addr: SocketAddr,
    head: Vec<u8>,
    opened: Arc<AtomicU64>,
) -> (Option<u16>, Duration) {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("s3 bench: slow connection: {e}");
            return (None, Duration::ZERO);
        }
    };
    let t0 = Instant::now();
    if stream.write_all(&head).await.is_err() {
        return (None, t0.elapsed());
    }
    opened.fetch_add(1, Ordering::Relaxed);
    let (mut rd, mut wr) = stream.split();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + SLOW_EVERY, SLOW_EVERY);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(n) if n > 0 => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(2).any(|w| w == b"\r\n") {
                        let code = std::str::from_utf8(&got)
                            .ok()
                            .and_then(|t| t.split(' ').nth(1))
                            .and_then(|c| c.parse().ok());
                        return (code, t0.elapsed());
                    }
                }
                _ => return (None, t0.elapsed()),
            },
            _ = tick.tick() => {
                let _ = wr.write_all(b"x").await;
            }
        }
    }
}

/// The p-quantile of sorted latencies in µs, in ms.
fn quantile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[i]) / 1000.0
}

/// One connection of 4 KiB PutObjects back to back for warm-up + measure: (p50, p99, answers
/// counted, errors and the first of them).
async fn normal_client(
    o: &Opts,
    addr: SocketAddr,
    put: Arc<PutSmall>,
) -> (f64, f64, u64, u64, Option<String>) {
    let sender = connect(addr).await.expect("connecting the normal client");
    let plan = timed(o)(Instant::now());
    let mut st = connection_loop(sender, 0, put, StatusCode::OK, plan).await;
    st.latencies_us.sort_unstable();
    (
        quantile_ms(&st.latencies_us, 0.50),
        quantile_ms(&st.latencies_us, 0.99),
        st.completed,
        st.errors,
        st.first_error,
    )
}

/// Figure 12: `SLOW_CONNECTIONS` connections each send the headers of an upload (half PUT, half
/// POST form with its fields) and then one byte every 5 s, all open at once, while one normal
/// client runs 4 KiB PutObjects back to back. (a) the normal client's p99 beside them, against
/// a 100 ms budget (its p99 alone, measured first on the same server, in the note); (b) the
/// server's RSS growth per slow connection (VmRSS with them open minus before), against 64 KiB;
/// (c) how many the server answers `400 RequestTimeout` once the default body timeout (20 s)
/// has passed, and when.
async fn figure_slow(o: &Opts, scratch: &Path, rows: &mut Vec<Row>) {
    // 2,000 client sockets, besides the load generator's.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("s3 bench: cannot raise the open-file limit: {e}");
    }
    let server = spawn_postgate(o, &scratch.join("slow"), "slow").await;
    let signer = create_bucket(&server).await;
    let put = Arc::new(PutSmall::new(signer.clone(), "normal", 0));

    step("slow connections: the normal client alone");
    let (p50_alone, p99_alone, n_alone, _, _) = normal_client(o, server.addr, put.clone()).await;
    let (_, rss_before) = server.memory_mib();

    step(&format!("slow connections: opening {SLOW_CONNECTIONS}"));
    let post = presign_post(server.addr, KeySpec::Prefix("slow/".into()), 5 << 30);
    let form = PostForm::new(&post);
    let host = server.addr.to_string();
    let opened = Arc::new(AtomicU64::new(0));
    let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
    for i in 0..SLOW_CONNECTIONS {
        let head = if i % 2 == 0 {
            let req = signer.signed(
                Method::PUT,
                &format!("/{BUCKET}/slow/put-{i:04}"),
                sigv4::UNSIGNED_PAYLOAD,
                BenchBody::empty(),
            );
            raw_head(&req, 1 << 20)
        } else {
            let prefix = form.prefix(&format!("post-{i:04}.bin"));
            let len = prefix.len() as u64 + (1 << 20) + form.suffix().len() as u64;
            let req = Request::post(format!("/{BUCKET}"))
                .header("host", &host)
                .header("content-type", form.content_type())
                .body(BenchBody::empty())
                .unwrap();
            let mut head = raw_head(&req, len);
            head.extend_from_slice(&prefix);
            head
        };
        slow.push(tokio::spawn(slow_client(server.addr, head, opened.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (opened.load(Ordering::Relaxed) as usize) < SLOW_CONNECTIONS && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the server read every header and form before its memory is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open_count = opened.load(Ordering::Relaxed);
    let (_, rss_open) = server.memory_mib();

    step("slow connections: the normal client beside them");
    let (p50_with, p99_with, n_with, errors, first_error) =
        normal_client(o, server.addr, put.clone()).await;
    let (_, rss_after) = server.memory_mib();
    let answered_early = slow.iter().filter(|t| t.is_finished()).count();
    let rss_growth_kib = (rss_open.max(rss_after) - rss_before) * 1024.0 / open_count.max(1) as f64;

    step("slow connections: waiting for the body timeout");
    let mut timeouts = 0usize;
    let mut latest = Duration::ZERO;
    let mut other = Vec::new();
    for t in slow {
        match t.await.expect("slow client panicked") {
            (Some(400), after) => {
                timeouts += 1;
                latest = latest.max(after);
            }
            answer => other.push(answer),
        }
    }
    server.stop();

    rows.push(Row {
        figure: format!("12a PutObject 4 KiB, 1 client, beside {SLOW_CONNECTIONS} slow connections: p99"),
        value: p99_with,
        unit: "ms",
        limit: Some(("budget".into(), SLOW_P99_BUDGET_MS)),
        target: Target::Below,
        must: Some((
            errors == 0 && n_with > 0 && open_count as usize == SLOW_CONNECTIONS && answered_early == 0,
            format!(
                "{errors} errors (first: {}); {open_count} slow connections opened, {answered_early} answered early",
                first_error.unwrap_or_default()
            ),
        )),
        note: format!(
            "p50 {p50_with:.2} ms, {n_with} uploads; alone: p50 {p50_alone:.2} ms, p99 {p99_alone:.2} ms, {n_alone} uploads"
        ),
    });
    rows.push(Row {
        figure: format!("12b server RSS growth per slow connection ({open_count} open)"),
        value: rss_growth_kib,
        unit: "KiB",
        limit: Some(("budget".into(), SLOW_RSS_BUDGET_KIB)),
        target: Target::Below,
        must: None,
        note: format!(
            "VmRSS {rss_before:.1} MiB before, {rss_open:.1} MiB with them open, {rss_after:.1} MiB after the normal client"
        ),
    });
    rows.push(Row {
        figure: "12c slow connections answered 400 RequestTimeout".into(),
        value: timeouts as f64,
        unit: "conns",
        limit: None,
        target: Target::None,
        must: Some((
            timeouts == SLOW_CONNECTIONS,
            format!(
                "{} not: {:?}",
                other.len(),
                other.iter().take(3).collect::<Vec<_>>()
            ),
        )),
        note: format!(
            "the last {:.1} s after its headers (body timeout {} s, one byte every {} s)",
            latest.as_secs_f64(),
            SLOW_BODY_TIMEOUT.as_secs(),
            SLOW_EVERY.as_secs()
        ),
    });
}

/// The server's WAL restarts so far (`postgate_sqlite_wal_restart_seconds` from `/-/metrics`):
/// their mean in ms (0 when there was none), and how many and the bucket bound that holds the
/// longest, for a row's note.
async fn wal_restarts(addr: SocketAddr) -> (f64, String) {
    let text = match metrics_text(addr).await {
        Ok(text) => text,
        Err(e) => return (0.0, format!("metrics: {e}")),
    };
    let name = "postgate_sqlite_wal_restart_seconds";
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let (mut count, mut sum, mut longest) = (0.0, 0.0, None);
    let mut below = 0.0;
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let rest = &line[name.len()..];
        if rest.starts_with("_count") {
            count = value(line).unwrap_or(0.0);
        } else if rest.starts_with("_sum") {
            sum = value(line).unwrap_or(0.0);
        } else if let Some(le) = rest.strip_prefix("_bucket{le=\"") {
            let bound = le.split('"').next().unwrap_or("");
            let n = value(line).unwrap_or(0.0);
            // The first bucket that holds every restart bounds the longest one.
            if longest.is_none() && n >= count && count > 0.0 {
                longest = Some(bound.to_owned());
            }
            if longest.is_none() {
                below = n;
            }
        }
    }
    // The writer's commits since the server started, and the writes each carried.
    let batch = "postgate_db_commit_batch_size";
    let total = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(batch) && l[batch.len()..].starts_with(suffix))
            .and_then(value)
            .unwrap_or(0.0)
    };
    let (commits, jobs) = (total("_count"), total("_sum"));
    let commits = format!(
        "; {commits:.0} commits since the server started, {:.1} writes each on average",
        jobs / commits.max(1.0)
    );
    if count == 0.0 {
        return (0.0, format!("no WAL restart{commits}"));
    }
    let ms = |s: &str| {
        s.parse::<f64>()
            .map_or(s.to_owned(), |v| format!("{:.1} ms", v * 1e3))
    };
    let note = format!(
        "{count:.0} restarts, each holding up every write; longest <= {} ({below:.0} within the bucket below){commits}",
        longest.as_deref().map_or("?".into(), ms)
    );
    (sum / count * 1e3, note)
}

/// The server's whole `/-/metrics` page.
async fn metrics_text(addr: SocketAddr) -> Result<String, String> {
    let req = Request::get("/-/metrics")
        .header("host", addr.to_string())
        .body(BenchBody::empty())
        .unwrap();
    let mut sender = connect(addr).await?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}
