//! Soak: the release `postgate` binary under mixed traffic at the highest rate the machine allows,
//! beside 1,000 idle and 200 slow connections, for a fixed time. Every second it samples the
//! server's RSS, open descriptors (`/proc/PID/fd`) and SQLite WAL size, and prints them as a table
//! over time; at the end, the p99 of a normal client's 4 KiB uploads (target < 50 ms) and the
//! failed requests (target: none; idle connections closed by the header timeout and slow uploads
//! answered 400 RequestTimeout are refusals on purpose, counted apart).
//!
//! ```text
//! cargo bench --bench soak                       # 2 minutes
//! cargo bench --bench soak -- --minutes 30       # long mode
//! cargo test --bench soak -- --minutes 2 --p99-report-only   # CI: the unoptimised build
//! flags: --minutes N, --workers N (default 8), --idle N (1000), --slow N (200),
//!        --every N (print one table row per N seconds; default 1, or 30 from 10 minutes on),
//!        --p99-report-only (print the p99 against its target without failing on it)
//! ```
//!
//! It fails (exit 1) on any failed request, on RSS or descriptors growing past 1.5x the first
//! minute's maximum (plus slack), on a WAL above 64 MiB, and on the p99 target unless
//! `--p99-report-only`: CI runs the unoptimised build on a shared runner, where the p99 says more
//! about the runner than about postgate; the release build on a quiet machine is the measurement.
//!
//! Mixed traffic: each worker keeps 32 keys of its own and, back to back, PUTs 4 KiB or 64 KiB–1 MiB
//! bodies (some aws-chunked), POSTs browser forms signed with a policy, copies, reads and deletes
//! them; each answer is checked against what the worker knows it stored (status, and the body of
//! every GET). The data set stays bounded, so RSS, descriptors and WAL must too.

#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use helpers::{ADMIN_AK, ADMIN_SK, Payload, Prepared, REGION, md5_hex, pattern, req_to};
use postgate::policy::{KeySpec, PostPolicyRequest, issue};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUCKET: &str = "soak";
const P99_TARGET_MS: f64 = 50.0;
/// The WAL must stay under this through the run (a bounded WAL: checkpoints keep up).
const WAL_LIMIT_KIB: f64 = 64.0 * 1024.0;
/// The server's default body timeout.
const BODY_TIMEOUT: Duration = Duration::from_secs(20);

struct Opts {
    minutes: f64,
    workers: usize,
    idle: usize,
    slow: usize,
    every: Option<u64>,
    p99_gate: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        minutes: 2.0,
        workers: 8,
        idle: 1000,
        slow: 200,
        every: None,
        p99_gate: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--p99-report-only" {
            o.p99_gate = false;
            continue;
        }
        let mut val = || {
            it.next()
                .expect("flag value")
                .parse::<f64>()
                .expect("a number")
        };
        match a.as_str() {
            "--minutes" => o.minutes = val(),
            "--workers" => o.workers = val() as usize,
            "--idle" => o.idle = val() as usize,
            "--slow" => o.slow = val() as usize,
            "--every" => o.every = Some(val() as u64),
            "--bench" => {}
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// Counters shared by every task.
#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Idle connections the server closed (header timeout): on purpose.
    idle_closed: AtomicU64,
    /// Slow uploads answered 400 RequestTimeout: on purpose.
    slow_refused: AtomicU64,
    /// Slow uploads reset past the body timeout (the 400 lost to the reset): on purpose.
    slow_reset: AtomicU64,
    first_failures: std::sync::Mutex<Vec<String>>,
}

impl Stats {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_failures.lock().unwrap();
        if f.len() < 10 {
            // Also at once, so a long run shows what failed and when.
            eprintln!("failure: {what}");
            f.push(what);
        }
    }
}

struct Target {
    base: String,
    host: String,
    http: reqwest::Client,
}

async fn send(http: &reqwest::Client, p: Prepared) -> Result<(u16, bytes::Bytes), String> {
    let res = http
        .request(p.method, &p.url)
        .headers(p.headers)
        .body(p.body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// What a worker's key holds: the seed and length of its body, or nothing.
type Slot = Option<(u64, usize)>;

/// One worker of the mixed traffic, on its own keys.
async fn worker(t: Arc<Target>, id: usize, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut stored: Vec<Option<(u64, usize)>> = vec![None; 32];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let seed = (id as u64) << 40 | seq;
        let slot = (next() % 32) as usize;
        let key = format!("/{BUCKET}/w{id}/{slot}");
        let req = |m: Method| req_to(&t.base, &t.host, &t.http, m, &key);
        let (what, p, want, outcome): (&str, Prepared, u16, Option<Slot>) = match next() % 10 {
            0..=2 => {
                let len = 4096;
                (
                    "PUT 4 KiB",
                    req(Method::PUT).body(pattern(len, seed)).prepare(),
                    200,
                    Some(Some((seed, len))),
                )
            }
            3 => {
                let len = 64 * 1024 + (next() % (960 * 1024)) as usize;
                let mut r = req(Method::PUT).body(pattern(len, seed));
                if next() % 2 == 0 {
                    r = r.payload(Payload::Chunked {
                        chunk_size: 64 * 1024,
                        corrupt: None,
                    });
                }
                ("PUT large", r.prepare(), 200, Some(Some((seed, len))))
            }
            4 => {
                let len = 1 + (next() % (128 * 1024)) as usize;
                post_form(&t, &key, seed, len, &stats).await;
                stored[slot] = Some((seed, len));
                continue;
            }
            5 => match stored[(slot + 1) % 32] {
                Some(src) => (
                    "CopyObject",
                    req(Method::PUT)
                        .header(
                            "x-amz-copy-source",
                            &format!("/{BUCKET}/w{id}/{}", (slot + 1) % 32),
                        )
                        .prepare(),
                    200,
                    Some(Some(src)),
                ),
                None => continue,
            },
            6 => ("DELETE", req(Method::DELETE).prepare(), 204, Some(None)),
            _ => (
                "GET",
                req(Method::GET).prepare(),
                if stored[slot].is_some() { 200 } else { 404 },
                None,
            ),
        };
        match send(&t.http, p).await {
            Ok((status, body)) if status == want => {
                if what == "GET"
                    && let Some((s, len)) = stored[slot]
                    && body[..] != pattern(len, s)[..]
                {
                    stats.fail(format!("GET {key}: wrong body ({} bytes)", body.len()));
                    continue;
                }
                stats.ok.fetch_add(1, Ordering::Relaxed);
                if let Some(o) = outcome {
                    stored[slot] = o;
                }
            }
            Ok((status, body)) => {
                stats.fail(format!(
                    "{what} {key}: {status} {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
                // What the key holds is unknown now: learn it again.
                stored[slot] = None;
                let _ = send(&t.http, req(Method::DELETE).prepare()).await;
            }
            Err(e) => {
                stats.fail(format!("{what} {key}: {e}"));
                stored[slot] = None;
                let _ = send(&t.http, req(Method::DELETE).prepare()).await;
            }
        }
    }
}

/// A browser upload: the fields of a SigV4 POST policy, then the file.
async fn post_form(t: &Target, key: &str, seed: u64, len: usize, stats: &Stats) {
    let key = key.trim_start_matches(&format!("/{BUCKET}/")).to_owned();
    let url = format!("{}/{BUCKET}", t.base);
    let policy = PostPolicyRequest::new(BUCKET, KeySpec::Exact(key.clone()), 10 << 20);
    let signed = issue(
        &policy,
        ADMIN_AK,
        ADMIN_SK,
        REGION,
        &url,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let form = signed
        .fields
        .iter()
        .fold(reqwest::multipart::Form::new(), |f, (k, v)| {
            f.text(k.clone(), v.clone())
        })
        .part(
            "file",
            reqwest::multipart::Part::bytes(pattern(len, seed)).file_name("f.bin"),
        );
    match t.http.post(&url).multipart(form).send().await {
        Ok(res) if res.status() == 204 => {
            stats.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(res) => stats.fail(format!("POST {key}: {}", res.status())),
        Err(e) => stats.fail(format!("POST {key}: {e}")),
    }
}

/// The normal client: a 4 KiB PutObject every 10 ms on its own connection; latencies in µs.
async fn normal_client(t: Arc<Target>, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> Vec<u32> {
    let http = reqwest::Client::new();
    let mut lat = Vec::new();
    let mut i = 0u64;
    let body = pattern(4096, 7);
    let etag = format!("\"{}\"", md5_hex(&body));
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let p = req_to(
            &t.base,
            &t.host,
            &http,
            Method::PUT,
            &format!("/{BUCKET}/normal/{}", i % 64),
        )
        .body(body.clone())
        .prepare();
        let t0 = Instant::now();
        let res = http
            .request(p.method, &p.url)
            .headers(p.headers)
            .body(p.body)
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 200 && r.headers().get("etag").is_some_and(|e| *e == *etag) => {
                let _ = r.bytes().await;
                lat.push(t0.elapsed().as_micros() as u32);
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => stats.fail(format!("normal PUT: {}", r.status())),
            Err(e) => stats.fail(format!("normal PUT: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lat
}

/// An idle connection: opens, sends nothing; when the server closes it (header timeout), opens
/// another.
async fn idle_conn(host: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&host).await else {
            stats.fail("idle connect failed".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let mut b = [0u8; 256];
        loop {
            tokio::select! {
                r = s.read(&mut b) => {
                    match r {
                        Ok(0) | Err(_) => { stats.idle_closed.fetch_add(1, Ordering::Relaxed); }
                        Ok(_) => stats.fail("idle connection got bytes".into()),
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                }
            }
        }
    }
}

/// A slow upload: the headers of a 1 MiB PUT, then one byte every 2 s; the server must answer
/// 400 RequestTimeout once the body timeout passes; then another one.
async fn slow_conn(t: Arc<Target>, n: usize, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let p = req_to(
            &t.base,
            &t.host,
            &t.http,
            Method::PUT,
            &format!("/{BUCKET}/slow/{n}-{round}"),
        )
        .unsigned()
        .prepare();
        let Ok(mut s) = TcpStream::connect(&t.host).await else {
            stats.fail("slow connect failed".into());
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let opened = Instant::now();
        if s.write_all(&p.head_bytes(1 << 20)).await.is_err() {
            stats.fail("slow head write failed".into());
            continue;
        }
        let mut got = Vec::new();
        let mut b = [0u8; 1024];
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                r = s.read(&mut b) => {
                    match r {
                        Ok(n) if n > 0 => {
                            got.extend_from_slice(&b[..n]);
                            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                                let text = String::from_utf8_lossy(&got);
                                if text.starts_with("HTTP/1.1 400") {
                                    stats.slow_refused.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    stats.fail(format!("slow upload: {}", text.lines().next().unwrap_or("")));
                                }
                                break;
                            }
                        }
                        // The server answers 400 and closes; a byte written meanwhile can turn
                        // the close into a reset that destroys the unread answer. Past the body
                        // timeout, that is the same refusal.
                        _ if opened.elapsed() >= BODY_TIMEOUT => {
                            stats.slow_reset.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        _ => { stats.fail("slow upload closed early without an answer".into()); break; }
                    }
                }
                _ = tick.tick() => {
                    if stop.load(Ordering::Relaxed) { return; }
                    let _ = s.write_all(b"x").await;
                }
            }
        }
    }
}

/// One sample of the server process.
struct Sample {
    secs: u64,
    rss_mib: f64,
    fds: usize,
    wal_kib: f64,
    ok: u64,
}

fn sample(pid: u32, data: &Path, secs: u64, ok: u64) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_mib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let wal_kib =
        std::fs::metadata(data.join("postgate.db-wal")).map_or(0.0, |m| m.len() as f64 / 1024.0);
    Sample {
        secs,
        rss_mib,
        fds,
        wal_kib,
        ok,
    }
}

fn main() {
    let o = opts();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("soak: cannot raise the open-file limit: {e}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(o));
}

async fn run(o: Opts) {
    let scratch = tempfile::tempdir().unwrap();
    let data: PathBuf = scratch.path().join("data");
    let host = format!("127.0.0.1:{}", helpers::free_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"));
    helpers::serve_args(&mut cmd, &data, &host, "error");
    let mut child = cmd.kill_on_drop(true).spawn().unwrap();
    let pid = child.id().unwrap();
    let t = Arc::new(Target {
        base: format!("http://{host}"),
        host: host.clone(),
        http: reqwest::Client::new(),
    });
    helpers::wait_ready(&t.http, &t.base, &mut child, Duration::from_secs(20)).await;
    let (status, _) = send(
        &t.http,
        req_to(
            &t.base,
            &t.host,
            &t.http,
            Method::PUT,
            &format!("/{BUCKET}"),
        )
        .prepare(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..o.idle {
        tasks.push(tokio::spawn(idle_conn(
            host.clone(),
            stats.clone(),
            stop.clone(),
        )));
    }
    for n in 0..o.slow {
        tasks.push(tokio::spawn(slow_conn(
            t.clone(),
            n,
            stats.clone(),
            stop.clone(),
        )));
    }
    for w in 0..o.workers {
        tasks.push(tokio::spawn(worker(
            t.clone(),
            w,
            stats.clone(),
            stop.clone(),
        )));
    }
    let normal = tokio::spawn(normal_client(t.clone(), stats.clone(), stop.clone()));

    let total = Duration::from_secs_f64(o.minutes * 60.0);
    let every = o.every.unwrap_or(if o.minutes >= 10.0 { 30 } else { 1 });
    println!(
        "soak: {:.0} min, {} workers, {} idle and {} slow connections; one row per {every} s",
        o.minutes, o.workers, o.idle, o.slow
    );
    println!(
        "{:>6} {:>9} {:>6} {:>9} {:>8} {:>7}",
        "t(s)", "RSS MiB", "fds", "WAL KiB", "req/s", "failed"
    );
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_ok = 0;
    while started.elapsed() < total {
        tick.tick().await;
        let secs = started.elapsed().as_secs();
        let ok = stats.ok.load(Ordering::Relaxed);
        let s = sample(pid, &data, secs, ok - last_ok);
        last_ok = ok;
        if secs.is_multiple_of(every) {
            println!(
                "{:>6} {:>9.1} {:>6} {:>9.0} {:>8} {:>7}",
                s.secs,
                s.rss_mib,
                s.fds,
                s.wal_kib,
                s.ok,
                stats.failed.load(Ordering::Relaxed)
            );
        }
        samples.push(s);
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the server exited: {st}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = normal.await.unwrap();
    for task in tasks {
        task.abort();
    }
    let _ = child.start_kill();

    lat.sort_unstable();
    let q = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).map_or(f64::NAN, |v| f64::from(*v) / 1000.0)
    };
    let (p50, p99) = (q(0.50), q(0.99));
    let stat = |f: &dyn Fn(&Sample) -> f64| {
        let v: Vec<f64> = samples.iter().map(f).collect();
        let max = v.iter().cloned().fold(f64::MIN, f64::max);
        let first_min = v.iter().take(60).cloned().fold(f64::MIN, f64::max);
        (
            v.first().copied().unwrap_or(0.0),
            first_min,
            max,
            v.last().copied().unwrap_or(0.0),
        )
    };
    let rss = stat(&|s| s.rss_mib);
    let fds = stat(&|s| s.fds as f64);
    let wal = stat(&|s| s.wal_kib);
    let reqs: u64 = samples.iter().map(|s| s.ok).sum();
    let failed = stats.failed.load(Ordering::Relaxed);
    println!();
    println!("                  first   max(1st min)   max      last");
    println!(
        "RSS MiB        {:>8.1} {:>12.1} {:>8.1} {:>8.1}",
        rss.0, rss.1, rss.2, rss.3
    );
    println!(
        "open fds       {:>8.0} {:>12.0} {:>8.0} {:>8.0}",
        fds.0, fds.1, fds.2, fds.3
    );
    println!(
        "WAL KiB        {:>8.0} {:>12.0} {:>8.0} {:>8.0}",
        wal.0, wal.1, wal.2, wal.3
    );
    println!(
        "requests answered as expected: {reqs} ({:.0}/s); failed: {failed}; refused on purpose: {} idle connections closed by the header timeout, {} slow uploads answered 400 RequestTimeout ({} more reset past the timeout)",
        reqs as f64 / samples.len().max(1) as f64,
        stats.idle_closed.load(Ordering::Relaxed),
        stats.slow_refused.load(Ordering::Relaxed),
        stats.slow_reset.load(Ordering::Relaxed)
    );
    println!(
        "normal client, 4 KiB PutObject every 10 ms: {} uploads, p50 {p50:.2} ms, p99 {p99:.2} ms (target < {P99_TARGET_MS} ms): {}",
        lat.len(),
        if p99 < P99_TARGET_MS { "PASS" } else { "FAIL" }
    );
    for f in stats.first_failures.lock().unwrap().iter() {
        println!("failure: {f}");
    }
    let bounded =
        rss.2 <= rss.1 * 1.5 + 16.0 && fds.2 <= fds.1 * 1.5 + 64.0 && wal.2 < WAL_LIMIT_KIB;
    println!(
        "bounded (RSS and fds within 1.5x of the first minute's max plus slack, WAL < 64 MiB): {}",
        if bounded { "PASS" } else { "FAIL" }
    );
    let p99_failed = o.p99_gate && p99 >= P99_TARGET_MS;
    if failed > 0 || p99_failed || !bounded {
        std::process::exit(1);
    }
}
