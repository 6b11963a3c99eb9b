//! Figure 18 (group `cluster`, alone, only when named: `cargo bench --bench s3 -- --only
//! cluster`): postgate as the upload gateway in front of a real Ceph cluster, side by side in one
//! run with what the cluster does alone.
//!
//! The cluster is `tests/ceph/cluster.sh` (one monitor, three memstore OSDs, pool size 3,
//! radosgw), started here with `CEPH_MEMSTORE_BYTES` raised for the 1 GiB objects and stopped at
//! the end. Four ways of uploading, each driven by the same load generator as the other groups:
//! (a) postgate on its local store; (b) postgate `--backend s3` over RGW; (c) RGW alone, SigV4
//! PUTs and POST Object forms (issued by `postgate::policy::issue` with RGW's keys) straight to
//! it; (d) two postgate nodes over the same RGW bucket with the 64 connections split 32/32,
//! beside (b) on one node. For each: PutObject and POST Object 4 KiB at 64 connections (req/s,
//! p99) and one 1 GiB PutObject and POST Object (MB/s; best of two, the two sides alternating so
//! that the machine's drift lands on both). For (d) at 1 GiB: two 1 GiB PUTs at once, one per
//! node, against both on one node, and RGW alone taking the same two (its ceiling).
//!
//! The gateway's overhead is (b)/(c) on the 1 GiB uploads (target ≥ 0.90: under 10% of the
//! backend's own rate). On this machine the gateway, RGW, its OSDs and the load generator share
//! the same cores, so that wall ratio is bounded by the CPU the gateway takes from RGW; rows 18e
//! give the CPU seconds per GiB of the gateway (its pid only) and of RGW+OSDs, through the
//! gateway and alone, and the gateway's capacity per core over RGW's rate (target ≥ 1.11: with
//! cores of its own, the gateway then costs at most 10%). Every object written to RGW lives in RAM three times, so each 1 GiB
//! object is deleted from RGW after its measurement and RGW's garbage collector is run
//! (`radosgw-admin gc process --include-all`) before the next one.

use super::*;

/// Each OSD's memstore capacity: two 1 GiB objects at once, plus what the small cases wrote.
const MEMSTORE_BYTES: u64 = 4 << 30;
/// Signatures precomputed per connection for the 4 KiB PUTs; RGW takes far fewer than the local
/// store in a 5 s window, and the rest is signed on the fly (counted in the note).
const PUT_POOL_PER_CONN: u64 = 512;
/// Gateway overhead target on 1 GiB uploads: at least this fraction of RGW's own rate.
const OVERHEAD_TARGET: f64 = 0.90;
/// The same target where the gateway has cores of its own: its capacity per core at least
/// RGW's rate / 0.9 (the gateway then adds at most 10% to an upload's time).
const CAPACITY_TARGET: f64 = 1.0 / 0.9;
/// The RGW bucket behind every gateway of the run (RGW's own uploads go to [`BUCKET`]).
const BACKEND_BUCKET: &str = "pgbackend";

/// The cluster of `tests/ceph/cluster.sh`, stopped on drop.
struct Ceph {
    dir: PathBuf,
    endpoint: String,
    addr: SocketAddr,
    access: String,
    secret: String,
    conf: String,
}

impl Ceph {
    fn start(scratch: &Path) -> Ceph {
        let dir = scratch.join("ceph");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph/cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .env("CEPH_MEMSTORE_BYTES", MEMSTORE_BYTES.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/ceph/cluster.sh");
        assert!(out.status.success(), "tests/ceph/cluster.sh start failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("cluster.sh printed no {name}"))
                .to_owned()
        };
        let endpoint = var("CEPH_RGW_ENDPOINT");
        let addr = endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("RGW endpoint is http://IP:PORT");
        Ceph {
            dir,
            addr,
            endpoint,
            access: var("CEPH_RGW_ACCESS_KEY"),
            secret: var("CEPH_RGW_SECRET_KEY"),
            conf: var("CEPH_CONF"),
        }
    }

    fn signer(&self) -> Signer {
        Signer::with_keys(&self.addr.to_string(), &self.access, &self.secret)
    }

    /// Deletes `bucket/key` from RGW and runs its garbage collector at once, so that the OSDs'
    /// memory is given back before the next big object.
    async fn delete_now(&self, bucket: &str, key: &str) {
        let req = self.signer().signed(
            Method::DELETE,
            &format!("/{bucket}/{key}"),
            sigv4::EMPTY_SHA256,
            BenchBody::empty(),
        );
        let t = one_request(self.addr, req).await.expect("DELETE on RGW");
        expect_ok("DELETE on RGW", &t);
        let conf = self.conf.clone();
        tokio::task::spawn_blocking(move || {
            let st = Command::new("radosgw-admin")
                .args(["-c", &conf, "gc", "process", "--include-all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            assert!(st.is_ok_and(|s| s.success()), "radosgw-admin gc process");
        })
        .await
        .unwrap();
    }

    /// The pids of radosgw and of the OSDs (`DIR/run/*.pid`).
    fn pids(&self) -> (Vec<u32>, Vec<u32>) {
        let (mut rgw, mut osds) = (Vec::new(), Vec::new());
        for entry in std::fs::read_dir(self.dir.join("run"))
            .into_iter()
            .flatten()
        {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            else {
                continue;
            };
            if name.starts_with("client.rgw") {
                rgw.push(pid);
            } else if name.starts_with("osd.") {
                osds.push(pid);
            }
        }
        (rgw, osds)
    }

    /// Requests radosgw has served so far (`perf dump` on its admin socket: `rgw.req`).
    fn rgw_requests(&self) -> f64 {
        let asok = self.dir.join("run/client.rgw.asok");
        Command::new("ceph")
            .arg("--admin-daemon")
            .arg(asok)
            .args(["perf", "dump"])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["rgw"]["req"].as_f64())
            .unwrap_or(f64::NAN)
    }

    /// The OSDs' VmRSS, MiB in all (memstore: what RGW stores, three times, is in there).
    fn osd_rss_mib(&self) -> f64 {
        self.pids().1.into_iter().map(vm_rss_mib).sum()
    }
}

/// VmRSS of `pid`, MiB (0 once it is gone).
fn vm_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds so far of the processes an upload goes through: the bench's own load generator,
/// the gateway (when there is one), radosgw, the OSDs.
#[derive(Clone, Copy, Default)]
struct Cpu {
    client: f64,
    gateway: f64,
    rgw: f64,
    osds: f64,
}

impl Cpu {
    fn now(ceph: &Ceph, gateway: Option<u32>) -> Cpu {
        let (rgw, osds) = ceph.pids();
        Cpu {
            client: cpu_secs(std::process::id()),
            gateway: gateway.map_or(0.0, cpu_secs),
            rgw: rgw.into_iter().map(cpu_secs).sum(),
            osds: osds.into_iter().map(cpu_secs).sum(),
        }
    }

    fn add_since(&mut self, before: Cpu, after: Cpu) {
        self.client += after.client - before.client;
        self.gateway += after.gateway - before.gateway;
        self.rgw += after.rgw - before.rgw;
        self.osds += after.osds - before.osds;
    }

    fn total(&self) -> f64 {
        self.client + self.gateway + self.rgw + self.osds
    }

    /// Per GiB uploaded, over `gib` GiB.
    fn text(&self, gib: f64, wall: f64) -> String {
        format!(
            "CPU s per GiB: client {:.1}, gateway {:.1}, radosgw {:.1}, OSDs {:.1} (wall {:.1} s per GiB)",
            self.client / gib,
            self.gateway / gib,
            self.rgw / gib,
            self.osds / gib,
            wall / gib
        )
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph/cluster.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// One place uploads go to: a postgate node or RGW itself, with its signer and POST keys.
struct Place {
    addr: SocketAddr,
    signer: Signer,
    access: String,
    secret: String,
}

impl Place {
    fn postgate(p: &Proc) -> Place {
        Place {
            addr: p.addr,
            signer: Signer::new(&p.addr.to_string()),
            access: ACCESS_KEY.into(),
            secret: SECRET_KEY.into(),
        }
    }

    fn rgw(c: &Ceph) -> Place {
        Place {
            addr: c.addr,
            signer: c.signer(),
            access: c.access.clone(),
            secret: c.secret.clone(),
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn post(&self, key: KeySpec, max_size: u64) -> PresignedPost {
        postgate::policy::issue(
            &PostPolicyRequest::new(BUCKET, key, max_size),
            &self.access,
            &self.secret,
            REGION,
            &format!("http://{}/{BUCKET}", self.addr),
            time::OffsetDateTime::now_utc(),
        )
        .expect("issuing the POST policy")
    }

    async fn create_bucket(&self, name: &str) {
        let req = self.signer.signed(
            Method::PUT,
            &format!("/{name}"),
            sigv4::EMPTY_SHA256,
            BenchBody::empty(),
        );
        let t = one_request(self.addr, req).await.expect("CreateBucket");
        expect_ok("CreateBucket", &t);
    }
}

/// Connection `c` of the 64 goes to `targets[c % n]`, each with its own request source (SigV4
/// signs the host, so each node needs its own). Otherwise as [`run_load`].
async fn run_split(
    targets: &[(SocketAddr, Arc<dyn RequestSource>)],
    expected: StatusCode,
    plan_of: impl FnOnce(Instant) -> Plan,
) -> LoadResult {
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for c in 0..CONNECTIONS {
        let (addr, _) = &targets[c % targets.len()];
        senders.push(connect(*addr).await.expect("connecting the load generator"));
    }
    let start = Instant::now();
    let cpu_start = cpu_secs_of("/proc/self/stat");
    let plan = plan_of(start);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, s)| {
            let source = targets[c % targets.len()].1.clone();
            tokio::spawn(connection_loop(s, c, source, expected, plan))
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut completed, mut sent, mut errors, mut first_error) = (0, 0, 0, None);
    for t in tasks {
        let st = t.await.expect("connection task panicked");
        completed += st.completed;
        sent += st.sent;
        errors += st.errors;
        latencies.extend(st.latencies_us);
        first_error = first_error.or(st.first_error);
    }
    let client_cpu_s = cpu_secs_of("/proc/self/stat") - cpu_start;
    let elapsed = match plan {
        Plan::Timed { measure_start, end } => end - measure_start,
        Plan::Count(_) => start.elapsed(),
    };
    latencies.sort_unstable();
    LoadResult {
        completed,
        sent,
        client_cpu_s,
        errors,
        rps: completed as f64 / elapsed.as_secs_f64(),
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        first_error,
    }
}

/// 4 KiB PutObject at 64 connections split over `places`, keys under `prefix`.
async fn small_put(o: &Opts, places: &[&Place], prefix: &'static str) -> LoadResult {
    let targets: Vec<(SocketAddr, Arc<dyn RequestSource>)> = places
        .iter()
        .map(|p| {
            let src: Arc<dyn RequestSource> = Arc::new(PutSmall::new(
                p.signer.clone(),
                prefix,
                PUT_POOL_PER_CONN.min(o.put_pool_per_conn),
            ));
            (p.addr, src)
        })
        .collect();
    run_split(&targets, StatusCode::OK, timed(o)).await
}

/// 4 KiB POST Object at 64 connections split over `places`, keys `{prefix}${filename}`.
async fn small_post(o: &Opts, places: &[&Place], prefix: &str) -> LoadResult {
    let targets: Vec<(SocketAddr, Arc<dyn RequestSource>)> = places
        .iter()
        .map(|p| {
            let post = p.post(KeySpec::Prefix(prefix.into()), SMALL as u64);
            let src: Arc<dyn RequestSource> = Arc::new(PostSmall {
                host: p.host(),
                form: PostForm::new(&post),
                file: pattern(SMALL, 43),
            });
            (p.addr, src)
        })
        .collect();
    run_split(&targets, StatusCode::NO_CONTENT, timed(o)).await
}

/// One big upload of `o.big` bytes to `place` as `key` (PUT, or POST Object when `post`);
/// its seconds.
async fn big_upload(o: &Opts, place: &Place, key: &str, post: bool) -> f64 {
    let chunk = pattern(CHUNK, 11);
    let req = if post {
        let form = PostForm::new(&place.post(
            KeySpec::Exact(key.into()),
            postgate::policy::MAX_POST_OBJECT_SIZE,
        ));
        form.request(&place.host(), "big.bin", chunk, o.big)
    } else {
        place.signer.signed(
            Method::PUT,
            &format!("/{BUCKET}/{key}"),
            sigv4::UNSIGNED_PAYLOAD,
            BenchBody::repeat(chunk, o.big),
        )
    };
    let t = one_request(place.addr, req).await.unwrap();
    expect_ok(&format!("big upload {key}"), &t);
    t.secs
}

/// RGW requests per 4 KiB upload through `place`: `n` PUTs, then `n` POSTs, one at a time.
async fn requests_per_small_upload(ceph: &Ceph, place: &Place, n: u64) -> (f64, f64) {
    let body = pattern(SMALL, 44);
    let hash: &'static str = Box::leak(sigv4::hex_sha256(&body).into_boxed_str());
    let before = ceph.rgw_requests();
    for i in 0..n {
        let req = place.signer.signed(
            Method::PUT,
            &format!("/{BUCKET}/count/put-{i}"),
            hash,
            BenchBody::bytes(body.clone()),
        );
        expect_ok("counted PUT", &one_request(place.addr, req).await.unwrap());
    }
    let mid = ceph.rgw_requests();
    let form = PostForm::new(&place.post(KeySpec::Prefix("count/".into()), SMALL as u64));
    for i in 0..n {
        let req = form.request(
            &place.host(),
            &format!("post-{i}"),
            body.clone(),
            SMALL as u64,
        );
        expect_ok("counted POST", &one_request(place.addr, req).await.unwrap());
    }
    let after = ceph.rgw_requests();
    ((mid - before) / n as f64, (after - mid) / n as f64)
}

/// Two big PUTs at once, one to each of `places` (or both to the one place); seconds until
/// both were answered.
async fn two_big_puts(o: &Opts, places: [&Place; 2], keys: [&str; 2]) -> f64 {
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        big_upload(o, places[0], keys[0], false),
        big_upload(o, places[1], keys[1], false)
    );
    let _ = (a, b);
    t0.elapsed().as_secs_f64()
}

fn small_rows(rows: &mut Vec<Row>, label: &str, what: &str, r: &LoadResult, rgw: Option<f64>) {
    rows.push(Row {
        figure: format!("18{label} {what} 4 KiB @64 conns"),
        value: r.rps,
        unit: "req/s",
        limit: rgw.map(|v| ("18c RGW".to_owned(), v)),
        target: Target::None,
        must: Some(must_all(
            r.errors,
            r.completed,
            if what == "PUT" {
                StatusCode::OK
            } else {
                StatusCode::NO_CONTENT
            },
            r.first_error.as_ref(),
        )),
        note: format!(
            "{} counted; p50 {:.2} ms, p99 {:.2} ms",
            r.completed, r.p50_ms, r.p99_ms
        ),
    });
    rows.push(Row::limit(
        format!("18{label} {what} 4 KiB p99 latency"),
        r.p99_ms,
        "ms",
        String::new(),
    ));
}

pub(super) async fn figure_cluster(o: &Opts, scratch: &Path, rows: &mut Vec<Row>) {
    let label = o.size_label();
    step("starting the Ceph cluster (tests/ceph/cluster.sh)");
    let ceph = Ceph::start(scratch);
    step(&format!("  RGW at {}", ceph.endpoint));
    let rgw = Place::rgw(&ceph);
    rgw.create_bucket(BUCKET).await;
    rgw.create_bucket(BACKEND_BUCKET).await;

    let backend_env = [
        ("POSTGATE_BACKEND", "s3"),
        ("POSTGATE_BACKEND_ENDPOINT", ceph.endpoint.as_str()),
        ("POSTGATE_BACKEND_BUCKET", BACKEND_BUCKET),
        ("POSTGATE_BACKEND_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ceph.access.as_str()),
        ("AWS_SECRET_ACCESS_KEY", ceph.secret.as_str()),
    ];
    let local = spawn_postgate(o, &scratch.join("cl-local"), "cl-local").await;
    let node1 = spawn_postgate_with(o, &scratch.join("cl-node1"), "cl-node1", &backend_env).await;
    let node2 = spawn_postgate_with(o, &scratch.join("cl-node2"), "cl-node2", &backend_env).await;
    let (pl_local, pl_1, pl_2) = (
        Place::postgate(&local),
        Place::postgate(&node1),
        Place::postgate(&node2),
    );
    for p in [&pl_local, &pl_1, &pl_2] {
        p.create_bucket(BUCKET).await;
    }

    // --- 4 KiB: RGW alone first (the yardstick), then the gateway, then the two nodes.
    step("18c RGW alone: PUT, POST 4 KiB @64");
    let c_put = small_put(o, &[&rgw], "put-c").await;
    let c_post = small_post(o, &[&rgw], "post-c/").await;
    step("18a local store: PUT, POST 4 KiB @64");
    let a_put = small_put(o, &[&pl_local], "put-a").await;
    let a_post = small_post(o, &[&pl_local], "post-a/").await;
    step("18b --backend s3, one node: PUT, POST 4 KiB @64");
    let b_put = small_put(o, &[&pl_1], "put-b").await;
    let b_post = small_post(o, &[&pl_1], "post-b/").await;
    step("18d --backend s3, two nodes 32+32: PUT, POST 4 KiB @64");
    let d_put = small_put(o, &[&pl_1, &pl_2], "put-d").await;
    let d_post = small_post(o, &[&pl_1, &pl_2], "post-d/").await;

    let (put_reqs, post_reqs) = requests_per_small_upload(&ceph, &pl_1, 20).await;

    small_rows(rows, "a", "PUT", &a_put, Some(c_put.rps));
    small_rows(rows, "a", "POST", &a_post, Some(c_post.rps));
    small_rows(rows, "b", "PUT", &b_put, Some(c_put.rps));
    small_rows(rows, "b", "POST", &b_post, Some(c_post.rps));
    for (row, n) in [(rows.len() - 4, put_reqs), (rows.len() - 2, post_reqs)] {
        let _ = write!(rows[row].note, "; RGW requests per upload: {n:.1}");
    }
    small_rows(rows, "c", "PUT", &c_put, None);
    small_rows(rows, "c", "POST", &c_post, None);
    for (what, two, one) in [("PUT", &d_put, &b_put), ("POST", &d_post, &b_post)] {
        small_rows(rows, "d", what, two, Some(c_put.rps));
        let last = rows.len() - 2;
        rows[last].figure = format!("18d {what} 4 KiB @64 conns, two nodes 32+32");
        rows[last].limit = Some(("18b one node".into(), one.rps));
        rows[last + 1].figure = format!("18d {what} 4 KiB p99 latency, two nodes");
    }

    // --- Big uploads, one at a time, best of two; RGW and the gateway alternate (c b b c).
    // Where the time goes: the CPU each process spent on the uploads of each side (b, c), summed
    // over both rounds, beside their wall time.
    let mut best: std::collections::HashMap<&str, f64> = Default::default();
    let mut cpu: std::collections::HashMap<&str, (Cpu, f64)> = Default::default();
    let mut keep = |name: &'static str, secs: f64, before: Cpu, after: Cpu| {
        let rate = o.big as f64 / secs / 1e6;
        let e = best.entry(name).or_insert(0.0);
        *e = e.max(rate);
        let c = cpu.entry(name).or_default();
        c.0.add_since(before, after);
        c.1 += secs;
        eprintln!("s3 bench:   {name}: {secs:.2} s, {rate:.0} MB/s");
    };
    let osd_rss_before = ceph.osd_rss_mib();
    let mut big_reqs: std::collections::HashMap<&str, f64> = Default::default();
    for post in [false, true] {
        let (how, a_key, b_key, c_key) = if post {
            ("POST", "a", "b", "c")
        } else {
            ("PUT", "a", "b", "c")
        };
        let (a_name, b_name, c_name): (&'static str, &'static str, &'static str) = if post {
            ("a POST", "b POST", "c POST")
        } else {
            ("a PUT", "b PUT", "c PUT")
        };
        for round in 0..2 {
            step(&format!("{how} {label}: round {round}"));
            let order: [bool; 2] = if round == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for rgw_first in order {
                if rgw_first {
                    let key = format!("big-{c_key}-{how}");
                    let before = Cpu::now(&ceph, None);
                    let secs = big_upload(o, &rgw, &key, post).await;
                    keep(c_name, secs, before, Cpu::now(&ceph, None));
                    ceph.delete_now(BUCKET, &key).await;
                } else {
                    let key = format!("big-{b_key}-{how}");
                    let before = Cpu::now(&ceph, Some(node1.pid()));
                    let reqs = ceph.rgw_requests();
                    let perf = Perf::start(o, &node1, &format!("cluster-b-{how}-{round}"));
                    let secs = big_upload(o, &pl_1, &key, post).await;
                    perf.stop();
                    keep(b_name, secs, before, Cpu::now(&ceph, Some(node1.pid())));
                    big_reqs.insert(how, ceph.rgw_requests() - reqs);
                    ceph.delete_now(BACKEND_BUCKET, &format!("{BUCKET}/{key}"))
                        .await;
                }
            }
            let key = format!("big-{a_key}-{how}-{round}");
            let before = Cpu::now(&ceph, Some(local.pid()));
            let secs = big_upload(o, &pl_local, &key, post).await;
            keep(a_name, secs, before, Cpu::now(&ceph, Some(local.pid())));
        }
    }

    // Two big PUTs at once: one per node, both on one node, both straight to RGW.
    step(&format!(
        "two {label} PUTs at once: two nodes, one node, RGW"
    ));
    let two = |secs: f64| 2.0 * o.big as f64 / secs / 1e6;
    let d_two = two(two_big_puts(o, [&pl_1, &pl_2], ["big-d1", "big-d2"]).await);
    for k in ["big-d1", "big-d2"] {
        ceph.delete_now(BACKEND_BUCKET, &format!("{BUCKET}/{k}"))
            .await;
    }
    let d_one = two(two_big_puts(o, [&pl_1, &pl_1], ["big-e1", "big-e2"]).await);
    for k in ["big-e1", "big-e2"] {
        ceph.delete_now(BACKEND_BUCKET, &format!("{BUCKET}/{k}"))
            .await;
    }
    let c_two = two(two_big_puts(o, [&rgw, &rgw], ["big-f1", "big-f2"]).await);
    for k in ["big-f1", "big-f2"] {
        ceph.delete_now(BUCKET, k).await;
    }
    let osd_rss_after = ceph.osd_rss_mib();
    let gib = 2.0 * o.big as f64 / f64::from(1u32 << 30);

    for how in ["PUT", "POST"] {
        let get = |side: &str| best[format!("{side} {how}").as_str()];
        let cpu_of = |side: &str| {
            let (c, wall) = cpu[format!("{side} {how}").as_str()];
            c.text(gib, wall)
        };
        rows.push(Row {
            figure: format!("18a {how} {label}, local store (best of 2)"),
            value: get("a"),
            unit: "MB/s",
            limit: Some(("18c RGW".into(), get("c"))),
            target: Target::None,
            must: None,
            note: cpu_of("a"),
        });
        rows.push(Row {
            figure: format!("18b {how} {label}, --backend s3 over RGW (best of 2)"),
            value: get("b"),
            unit: "MB/s",
            limit: Some(("18c RGW".into(), get("c"))),
            target: Target::RatioAtLeast(OVERHEAD_TARGET),
            must: None,
            note: format!(
                "the gateway's overhead: {:.1}% of RGW's own rate; {}; RGW requests for the \
                 last one: {:.0}; all CPU of RGW alone / all CPU through the gateway: {:.2} \
                 (the rate's ratio if the shared cores are what bounds both)",
                (1.0 - get("b") / get("c")) * 100.0,
                cpu_of("b"),
                big_reqs[how],
                cpu[format!("c {how}").as_str()].0.total()
                    / cpu[format!("b {how}").as_str()].0.total()
            ),
        });
        rows.push(Row::limit(
            format!("18c {how} {label}, RGW alone (best of 2)"),
            get("c"),
            "MB/s",
            cpu_of("c"),
        ));
        // The wall ratio above mixes the gateway's cost with the cores it takes from RGW on
        // this machine; these rows separate them (CPU seconds per GiB, both rounds).
        let (b_cpu, c_cpu) = (
            cpu[format!("b {how}").as_str()].0,
            cpu[format!("c {how}").as_str()].0,
        );
        let gateway = b_cpu.gateway / gib;
        rows.push(Row::limit(
            format!("18e {how} {label}: gateway CPU per GiB (postgate process)"),
            gateway,
            "s/GiB",
            "utime+stime of the gateway's pid, /proc/PID/stat before and after".into(),
        ));
        for (side, c) in [("through the gateway", b_cpu), ("straight to RGW", c_cpu)] {
            rows.push(Row::limit(
                format!("18e {how} {label}: RGW+OSDs CPU per GiB, {side}"),
                (c.rgw + c.osds) / gib,
                "s/GiB",
                format!("radosgw {:.1}, OSDs {:.1}", c.rgw / gib, c.osds / gib),
            ));
        }
        // What one core of gateway carries, against what RGW managed here: with the gateway on
        // cores of its own, it keeps up within 10% when this is at least 1/0.9.
        let capacity = f64::from(1u32 << 30) / gateway / 1e6;
        rows.push(Row {
            figure: format!("18e {how} {label}: gateway capacity per core / RGW's measured rate"),
            value: capacity,
            unit: "MB/s",
            limit: Some(("18c RGW".into(), get("c"))),
            target: Target::RatioAtLeast(CAPACITY_TARGET),
            must: None,
            note: format!(
                "1 GiB / the gateway's CPU s per GiB; RGW+OSDs took {:.1} s per GiB alone \
                 ({:.0} MB/s per core of theirs)",
                (c_cpu.rgw + c_cpu.osds) / gib,
                f64::from(1u32 << 30) / ((c_cpu.rgw + c_cpu.osds) / gib) / 1e6
            ),
        });
    }
    rows.push(Row {
        figure: format!("18d two {label} PUTs at once, one per node"),
        value: d_two,
        unit: "MB/s",
        limit: Some(("both on one node".into(), d_one)),
        target: Target::None,
        must: None,
        note: format!(
            "both straight to RGW: {} MB/s ({:.2}x of it); the OSDs' VmRSS before the big \
             uploads {osd_rss_before:.0} MiB, after (deleted, collected) {osd_rss_after:.0} MiB",
            fmt_num(c_two),
            d_two / c_two
        ),
    });

    local.stop();
    node1.stop();
    node2.stop();
    drop(ceph);
    step("  cluster stopped");
}
