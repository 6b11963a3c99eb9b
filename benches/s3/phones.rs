//! Figures 14-16: many phones at once. Memory is read as RSS (`/proc/PID/status`) and the WAL as
//! its file size, both independent of how loaded the machine is; rates are given beside the
//! loopback limit of the same run where they matter.
//!
//! 15. Slow uploads (group `uploads`): `--uploads N` (default 100) presigned PutObjects of
//!     `--upload-mib M` (default 64) MiB at once, each client paced at `--upload-rate` bytes/s
//!     (default 2 MB/s, a phone on a slow network), over raw TCP (a request head, then the body in
//!     50 ms slices). (a) the server's peak VmRSS over the burst minus its idle VmRSS, per upload
//!     (budget 256 KiB); (b) VmRSS 60 s after the last upload answered, against twice the idle
//!     value; every upload must be answered 200.
//! 16. WAL bound (group `wal`): PutObject 4 KiB at 64 connections for `--wal-secs` (default 60;
//!     the 10 minutes is `--wal-secs 600`), the WAL's size sampled every second: the
//!     largest (budget 64 MiB), its size after the run, the rate beside the loopback limit.
//! 17. Idle connections (group `idle`): `--idle N` (default 10,000) keep-alive connections, each
//!     after one `GET /-/health`, held open (server `--header-timeout 10m`): VmRSS growth per
//!     connection (budget 64 KiB); then a new client's PutObject and GetObject must be served.

use super::*;

/// Per-upload budget of figure 15a, KiB.
const UPLOAD_RSS_BUDGET_KIB: f64 = 256.0;
/// Budget of figure 16, MiB.
const WAL_BUDGET_MIB: f64 = 64.0;
/// Budget of figure 17, KiB per idle connection.
const IDLE_RSS_BUDGET_KIB: f64 = 64.0;
/// A paced client writes this often.
const SLICE: Duration = Duration::from_millis(50);

/// The server's VmRSS, sampled every `every` until `stop`; returns the largest reading.
fn sample_peak(pid: u32, every: Duration, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut peak = 0f64;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(every).await;
        }
        peak.max(rss_mib(pid))
    })
}

/// VmRSS of `pid`, MiB (NaN once it is gone).
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One paced upload: the head of a presigned PUT of `len` bytes, then the body at `rate`
/// bytes/s, then the answer's status (None: closed without one).
async fn paced_put(
    addr: SocketAddr,
    url: String,
    len: u64,
    rate: u64,
    chunk: Bytes,
) -> Option<u16> {
    let target = url
        .split_once(&addr.to_string())
        .map(|(_, t)| t.to_owned())?;
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head = format!("PUT {target} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {len}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let per_slice = (rate as f64 * SLICE.as_secs_f64()) as u64;
    let mut tick = tokio::time::interval(SLICE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while sent < len {
        tick.tick().await;
        let mut n = per_slice.min(len - sent);
        while n > 0 {
            let piece = n.min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..piece]).await.ok()?;
            n -= piece as u64;
            sent += piece as u64;
        }
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
}

/// Figure 15: slow uploads at once; memory per upload in flight, and memory after the burst.
pub(super) async fn figure_uploads(o: &Opts, scratch: &Path, rows: &mut Vec<Row>) {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("s3 bench: cannot raise the open-file limit: {e}");
    }
    let (n, len, rate) = (o.uploads, o.upload_mib << 20, o.upload_rate);
    let server = spawn_postgate(o, &scratch.join("uploads"), "uploads").await;
    let signer = create_bucket(&server).await;
    // One upload first, so that idle means warm (runtime threads, a reader, the writer).
    let warm = PutSmall::new(signer, "warm", 1);
    let t = one_request(server.addr, warm.build(0, 0))
        .await
        .expect("warm-up PUT");
    expect_ok("warm-up PUT", &t);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_mib(server.pid());

    step(&format!(
        "slow uploads: {n} x {} MiB at {:.1} MB/s",
        o.upload_mib,
        rate as f64 / 1e6
    ));
    let base = format!("http://{}", server.addr);
    let now = time::OffsetDateTime::now_utc();
    let chunk = pattern(64 * 1024, 7);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak(server.pid(), Duration::from_millis(200), stop.clone());
    let t0 = Instant::now();
    let uploads: Vec<_> = (0..n)
        .map(|i| {
            let url = sigv4::presign_url(&sigv4::Presign {
                method: "PUT",
                base: &base,
                path: &format!("/{BUCKET}/phones/p{i:05}"),
                query: "",
                access_key: ACCESS_KEY,
                secret: SECRET_KEY,
                region: REGION,
                expires_secs: 3600,
                now,
            });
            tokio::spawn(paced_put(server.addr, url, len, rate, chunk.clone()))
        })
        .collect();
    let mut ok = 0usize;
    let mut other = Vec::new();
    for u in uploads {
        match u.await.expect("upload task panicked") {
            Some(200) => ok += 1,
            s => other.push(s),
        }
    }
    let burst_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    let per_upload_kib = (peak - idle) * 1024.0 / n as f64;

    step("slow uploads: RSS after the burst (60 s)");
    let done = Instant::now();
    let mut back_within_2x = None;
    let mut after = rss_mib(server.pid());
    while done.elapsed() < Duration::from_secs(60) {
        after = rss_mib(server.pid());
        if back_within_2x.is_none() && after <= 2.0 * idle {
            back_within_2x = Some(done.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    after = after.min(rss_mib(server.pid()));
    server.stop();

    let aggregate = (n as u64 * len) as f64 / burst_secs / 1e6;
    rows.push(Row {
        figure: format!(
            "15a memory per in-flight upload ({n} PUTs of {} MiB at {:.1} MB/s)",
            o.upload_mib,
            rate as f64 / 1e6
        ),
        value: per_upload_kib,
        unit: "KiB",
        limit: Some(("budget".into(), UPLOAD_RSS_BUDGET_KIB)),
        target: Target::Below,
        must: Some((
            ok == n,
            format!("{} of {n} not answered 200: {:?}", other.len(), &other[..other.len().min(3)]),
        )),
        note: format!(
            "VmRSS idle {idle:.1} MiB, peak {peak:.1} MiB; burst {burst_secs:.1} s, {aggregate:.0} MB/s in all; \
             cargo bench --bench s3 -- --only uploads --uploads {n} --upload-mib {}",
            o.upload_mib
        ),
    });
    rows.push(Row {
        figure: "15b RSS 60 s after the burst (budget: twice idle)".into(),
        value: after,
        unit: "MiB",
        limit: Some(("2x idle".into(), 2.0 * idle)),
        target: Target::Below,
        must: None,
        note: match back_within_2x {
            Some(s) => format!("within twice idle {s:.0} s after the last answer"),
            None => "not within twice idle during the minute".into(),
        },
    });
}

/// Figure 16: PutObject 4 KiB at 64 connections for `--wal-secs`; the WAL's size every second.
pub(super) async fn figure_wal(o: &Opts, scratch: &Path, rows: &mut Vec<Row>, loopback: f64) {
    let data = scratch.join("wal");
    let server = spawn_postgate(o, &data, "wal").await;
    let signer = create_bucket(&server).await;
    let put = Arc::new(PutSmall::new(signer, "wal", o.put_pool_per_conn));
    step(&format!("WAL: PutObject 4 KiB @64 for {} s", o.wal_secs));
    let wal_path = data.join("postgate.db-wal");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, wal_path) = (stop.clone(), wal_path.clone());
        tokio::spawn(async move {
            let mut sizes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sizes.push(std::fs::metadata(&wal_path).map_or(0, |m| m.len()));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            sizes
        })
    };
    let secs = Duration::from_secs(o.wal_secs);
    let r = run_load(server.addr, put.clone(), StatusCode::OK, move |start| {
        Plan::Timed {
            measure_start: start,
            end: start + secs,
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let sizes = watcher.await.unwrap();
    let (restart_ms, restarts) = wal_restarts(server.addr).await;
    let after = std::fs::metadata(&wal_path).map_or(0, |m| m.len());
    let db_len = std::fs::metadata(data.join("postgate.db")).map_or(0, |m| m.len());
    server.stop();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let largest = sizes.iter().copied().max().unwrap_or(0);
    // The WAL over the run, one reading per tenth of it.
    let step_by = (sizes.len() / 10).max(1);
    let over_time: Vec<String> = sizes
        .iter()
        .step_by(step_by)
        .map(|&b| format!("{:.0}", mib(b)))
        .collect();
    rows.push(Row {
        figure: format!("16a WAL largest, PutObject 4 KiB @64 for {} s", o.wal_secs),
        value: mib(largest),
        unit: "MiB",
        limit: Some(("budget".into(), WAL_BUDGET_MIB)),
        target: Target::Below,
        must: Some((
            r.errors == 0,
            format!("{} errors (first: {})", r.errors, r.first_error.clone().unwrap_or_default()),
        )),
        note: format!(
            "MiB every {step_by} s: [{}]; database {:.0} MiB; cargo bench --bench s3 -- --only wal --wal-secs {}",
            over_time.join(" "),
            mib(db_len),
            o.wal_secs
        ),
    });
    rows.push(Row::limit(
        "16b WAL after the run",
        mib(after),
        "MiB",
        String::new(),
    ));
    rows.push(Row {
        figure: format!(
            "16c PutObject 4 KiB @64 over the WAL run ({} s)",
            o.wal_secs
        ),
        value: r.rps,
        unit: "req/s",
        limit: Some(("L1".into(), loopback)),
        target: Target::None,
        must: None,
        note: format!(
            "{} uploads, p50 {:.2} ms, p99 {:.2} ms",
            r.completed, r.p50_ms, r.p99_ms
        ),
    });
    rows.push(Row::limit(
        "16d WAL restart over the run, mean",
        restart_ms,
        "ms",
        restarts,
    ));
}

/// One idle keep-alive connection: a `GET /-/health` answered, then held until `release`.
async fn idle_conn(addr: SocketAddr, release: Arc<tokio::sync::Notify>, held: Arc<AtomicU64>) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let req = format!("GET /-/health HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"ok\n") {
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    held.fetch_add(1, Ordering::Relaxed);
    release.notified().await;
}

/// Figure 17: idle keep-alive connections; server memory per connection, and a new client.
pub(super) async fn figure_idle(o: &Opts, scratch: &Path, rows: &mut Vec<Row>) {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("s3 bench: cannot raise the open-file limit: {e}");
    }
    let n = o.idle;
    let server = spawn_postgate_with(
        o,
        &scratch.join("idle"),
        "idle",
        &[("POSTGATE_HEADER_TIMEOUT", "10m")],
    )
    .await;
    let signer = create_bucket(&server).await;
    let put = PutSmall::new(signer.clone(), "idle", 1);
    let t = one_request(server.addr, put.build(0, 0))
        .await
        .expect("warm-up PUT");
    expect_ok("warm-up PUT", &t);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(server.pid());

    step(&format!("idle connections: opening {n}"));
    let release = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(idle_conn(
            server.addr,
            release.clone(),
            held.clone(),
        )));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (held.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let open = held.load(Ordering::Relaxed);
    let with = rss_mib(server.pid());

    step("idle connections: a new client");
    let t0 = Instant::now();
    let put_ok = tokio::time::timeout(
        Duration::from_secs(10),
        one_request(server.addr, put.build(1, 0)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .is_some_and(|t| t.status == StatusCode::OK);
    let get = signer.signed(
        Method::GET,
        &put.path(0, 0),
        sigv4::EMPTY_SHA256,
        BenchBody::empty(),
    );
    let get_ok = tokio::time::timeout(Duration::from_secs(10), one_request(server.addr, get))
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|t| t.status == StatusCode::OK && t.received == SMALL as u64);
    let served_ms = t0.elapsed().as_secs_f64() * 1e3;
    release.notify_waiters();
    for t in tasks {
        t.abort();
    }
    server.stop();
    let per_conn_kib = (with - before) * 1024.0 / open.max(1) as f64;
    rows.push(Row {
        figure: format!("17 server RSS per idle keep-alive connection ({open} open)"),
        value: per_conn_kib,
        unit: "KiB",
        limit: Some(("budget".into(), IDLE_RSS_BUDGET_KIB)),
        target: Target::Below,
        must: Some((
            open as usize == n && put_ok && get_ok,
            format!("{open} of {n} held; new client's PUT ok: {put_ok}, GET ok: {get_ok}"),
        )),
        note: format!(
            "VmRSS {before:.1} MiB before, {with:.1} MiB with them open; a new client's PUT + GET in {served_ms:.1} ms; \
             cargo bench --bench s3 -- --only idle --idle {n}"
        ),
    });
}
