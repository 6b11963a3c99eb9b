//! Power loss: the server's data directory on crashfs (tests/powerloss), a FUSE filesystem that
//! keeps in memory every write, create, rename and unlink not yet made durable by an fsync (of
//! the file, or of the directory for names), and drops them all at a "power cut" while the
//! server is killed. kill -9 alone keeps the page cache and cannot show a missing fsync; this
//! can. Each iteration runs a mixed workload (inline and blob PUTs, browser POSTs, multipart
//! uploads, overwrites, deletes) from several clients, cuts the power at a random moment,
//! checks the disk as it was left (`PRAGMA integrity_check`, every referenced blob present),
//! restarts the server on it and checks that every write answered 2xx reads back byte for byte
//! with its ETag, and that everything else is either the previous state or a whole unanswered
//! write.
//!
//! Short mode (CI): `cargo nextest run --test api powerloss`. Long mode:
//! `POWERLOSS_ITERATIONS=200 cargo nextest run --test api powerloss --no-capture`;
//! `POWERLOSS_SEED=N` repeats a run's workload and cut moments. Needs root and /dev/fuse; skips with a message otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use md5::Digest;
use postgate::policy::{KeySpec, PostPolicyRequest, issue};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use tokio::process::{Child, Command};

use crate::helpers::{
    ADMIN_AK, ADMIN_SK, REGION, blob_files, free_port, md5_hex, pattern, req_to, serve_args,
    wait_ready, xml_tag,
};

const BUCKET: &str = "powerloss";
const WORKERS: usize = 3;
const KEYS_PER_WORKER: usize = 4;

/// A version of an object: its bytes and the ETag S3 gives them.
#[derive(Clone)]
struct Version {
    body: Arc<Vec<u8>>,
    etag: String,
}

/// What a key may hold: the last version answered 2xx (`None`: absent or deleted), and the
/// writes sent after it that got no 2xx (cut off, or failed), any one of which may have landed.
#[derive(Clone, Default)]
struct KeyState {
    acked: Option<Version>,
    maybe: Vec<Option<Version>>,
}

/// xorshift64*: the moments and the workload follow from one printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A server on crashfs: `unshare --mount crashfs DISK MNT -- postgate serve --data-dir MNT`.
struct Machine {
    child: Child,
    conn: Arc<Conn>,
}

struct Conn {
    base: String,
    host: String,
    http: reqwest::Client,
}

impl Conn {
    fn req(&self, method: Method, path: &str) -> crate::helpers::Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }
}

/// Why this machine cannot run the test, if it cannot.
fn unsupported() -> Option<String> {
    // Opening /dev/fuse read-write needs root (crw------- root).
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        return Some("/dev/fuse cannot be opened (needs root and the fuse module)".into());
    }
    let unshare = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status();
    if !matches!(unshare, Ok(s) if s.success()) {
        return Some("`unshare --mount` does not work here (needs root)".into());
    }
    None
}

/// Builds tests/powerloss (its own workspace and lock file) and returns the binary.
fn crashfs_bin() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--locked",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building tests/powerloss failed");
    dir.join("target/release/crashfs")
}

impl Machine {
    async fn start(crashfs: &Path, disk: &Path, mnt: &Path) -> Machine {
        let host = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private"])
            .arg(crashfs)
            .arg(disk)
            .arg(mnt)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_postgate"));
        serve_args(&mut cmd, mnt, &host, "error");
        let child = cmd.stderr(Stdio::inherit()).spawn().unwrap();
        let conn = Arc::new(Conn {
            base: format!("http://{host}"),
            host,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        });
        let mut m = Machine { child, conn };
        wait_ready(
            &m.conn.http,
            &m.conn.base,
            &mut m.child,
            Duration::from_secs(30),
        )
        .await;
        m
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("crashfs running");
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Cuts the power: crashfs drops every change not made durable and kills the server.
    async fn power_cut(mut self) {
        self.signal("USR1");
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "crashfs after the power cut: {status}");
    }

    /// Stops the server cleanly (crashfs then writes everything, as a clean unmount would).
    async fn stop(mut self) {
        self.signal("TERM");
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "clean stop: {status}");
    }

    /// The data directory as the server sees it, through its mount namespace.
    fn seen(&self, mnt: &Path) -> PathBuf {
        let pid = self.child.id().expect("crashfs running");
        Path::new(&format!("/proc/{pid}/root")).join(mnt.strip_prefix("/").unwrap())
    }
}

/// A test that fails leaves no server behind: the power cut kills it.
impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-USR1")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// One client's writes to its own keys, until `stop`. Every write is recorded in `keys` before
/// it is sent (as `maybe`) and promoted to `acked` when answered 2xx.
async fn worker(
    conn: Arc<Conn>,
    mut keys: Vec<(String, KeyState)>,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) -> (Vec<(String, KeyState)>, usize) {
    let mut answered = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.below(keys.len() as u64) as usize;
        let key = keys[k].0.clone();
        let seed = rng.next();
        let op = rng.below(20);
        // Deletes; inline PUTs (under the 64 KiB inline limit); blob PUTs; PUTs of either kind;
        // browser POSTs; multipart uploads of a 5 MiB part and a small one.
        let version = match op {
            0..=2 => None,
            3..=5 => Some(pattern(rng.below(3000) as usize, seed)),
            6..=8 => Some(pattern(70_000 + rng.below(1_200_000) as usize, seed)),
            9..=13 => Some(pattern(rng.below(300_000) as usize, seed)),
            14..=16 => Some(pattern(rng.below(150_000) as usize, seed)),
            _ => Some(pattern(5 * 1024 * 1024 + rng.below(100_000) as usize, seed)),
        };
        let multipart = op >= 17;
        let post = (14..=16).contains(&op);
        let expected = version.map(|body| Version {
            etag: if multipart {
                multipart_etag(&body)
            } else {
                format!("\"{}\"", md5_hex(&body))
            },
            body: Arc::new(body),
        });
        keys[k].1.maybe.push(expected.clone());
        let ok = match &expected {
            None => delete(&conn, &key).await,
            Some(v) if post => post_form(&conn, &key, &v.body).await,
            Some(v) if multipart => multipart_upload(&conn, &key, &v.body).await,
            Some(v) => put(&conn, &key, &v.body).await,
        };
        if let Some(etag) = ok {
            if let (Some(etag), Some(v)) = (etag, &expected) {
                assert_eq!(etag, v.etag, "ETag answered for {key}");
            }
            keys[k].1 = KeyState {
                acked: expected,
                maybe: Vec::new(),
            };
            answered += 1;
        }
    }
    (keys, answered)
}

/// `Some(etag header)` when answered 2xx.
async fn send(conn: &Conn, req: crate::helpers::Req<'_>) -> Option<Option<String>> {
    let p = req.prepare();
    let res = conn
        .http
        .request(p.method, &p.url)
        .headers(p.headers)
        .body(p.body)
        .send()
        .await
        .ok()?;
    let ok = res.status().is_success();
    let etag = res
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.bytes().await.ok()?;
    // CompleteMultipartUpload gives its ETag in the body.
    ok.then(|| etag.or_else(|| xml_tag(&String::from_utf8_lossy(&body), "ETag")))
}

async fn put(conn: &Conn, key: &str, body: &[u8]) -> Option<Option<String>> {
    send(
        conn,
        conn.req(Method::PUT, &format!("/{BUCKET}/{key}"))
            .body(body.to_vec()),
    )
    .await
}

async fn delete(conn: &Conn, key: &str) -> Option<Option<String>> {
    send(conn, conn.req(Method::DELETE, &format!("/{BUCKET}/{key}")))
        .await
        .map(|_| None)
}

async fn post_form(conn: &Conn, key: &str, body: &[u8]) -> Option<Option<String>> {
    let policy = PostPolicyRequest::new(BUCKET, KeySpec::Exact(key.into()), 10 << 20);
    let url = format!("{}/{BUCKET}", conn.base);
    let signed = issue(
        &policy,
        ADMIN_AK,
        ADMIN_SK,
        REGION,
        &url,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let form = signed
        .fields
        .iter()
        .fold(Form::new(), |form, (name, value)| {
            form.text(name.clone(), value.clone())
        });
    let form = form.part("file", Part::bytes(body.to_vec()).file_name("f.bin"));
    let res = conn.http.post(&url).multipart(form).send().await.ok()?;
    let ok = res.status().is_success();
    let etag = res
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    res.bytes().await.ok()?;
    ok.then_some(etag)
}

/// Parts of 5 MiB and the rest.
fn parts_of(body: &[u8]) -> Vec<&[u8]> {
    body.chunks(5 * 1024 * 1024).collect()
}

fn multipart_etag(body: &[u8]) -> String {
    let parts = parts_of(body);
    let mut all = Vec::new();
    for p in &parts {
        all.extend_from_slice(&md5::Md5::digest(p));
    }
    format!("\"{}-{}\"", md5_hex(&all), parts.len())
}

async fn multipart_upload(conn: &Conn, key: &str, body: &[u8]) -> Option<Option<String>> {
    let path = format!("/{BUCKET}/{key}");
    let p = conn.req(Method::POST, &path).query("uploads").prepare();
    let res = conn
        .http
        .request(p.method, &p.url)
        .headers(p.headers)
        .send()
        .await
        .ok()?;
    let text = res.text().await.ok()?;
    let upload_id = xml_tag(&text, "UploadId")?;
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (i, part) in parts_of(body).into_iter().enumerate() {
        let q = format!("partNumber={}&uploadId={upload_id}", i + 1);
        let etag = send(
            conn,
            conn.req(Method::PUT, &path).query(&q).body(part.to_vec()),
        )
        .await??;
        xml.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>",
            i + 1
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    let q = format!("uploadId={upload_id}");
    send(
        conn,
        conn.req(Method::POST, &path)
            .query(&q)
            .body(xml.into_bytes()),
    )
    .await
}

/// The disk as the power cut left it, checked without the server: the database is whole and
/// every blob it refers to exists. Returns the referenced blobs. Works on a copy, so that the
/// recovery the check does (SQLite replaying its WAL) leaves the disk as the cut left it.
fn check_disk(disk: &Path, scratch: &Path) -> std::collections::HashSet<String> {
    let _ = std::fs::remove_dir_all(scratch);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(disk)
        .arg(scratch)
        .status()
        .unwrap();
    assert!(status.success());
    let conn = rusqlite::Connection::open(scratch.join("postgate.db")).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        integrity, "ok",
        "PRAGMA integrity_check after the power cut"
    );
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'objects'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        tables, 1,
        "the database lost its schema at the power cut: commits were not durable"
    );
    let referenced = postgate::db::objects::referenced_blobs(&conn).unwrap();
    let present: HashMap<String, u64> = blob_files(scratch)
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::metadata(p).unwrap().len())
        })
        .collect();
    let mut missing: Vec<&String> = referenced
        .iter()
        .filter(|b| !present.contains_key(*b))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "blobs referenced but missing after the power cut: {missing:?}"
    );
    for (blob, size) in blob_sizes(&conn) {
        assert_eq!(
            present[&blob], size,
            "blob {blob}: bytes on disk after the power cut vs the size its row gives \
             (the bytes were not durable when the row committed)"
        );
    }
    referenced
}

/// fsyncs every file and directory under `dir`, as the kernel's writeback would in time: the
/// next iteration starts from a disk that holds everything, and leftovers the start-up sweep
/// removed (without syncing their directories) do not pile up from one cut to the next.
fn sync_everything(dir: &Path) {
    // A blob the server removes meanwhile (an aborted upload's part) is skipped.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sync_everything(&path);
        } else if let Ok(file) = std::fs::File::open(&path) {
            file.sync_all().unwrap();
        }
    }
    if let Ok(dir) = std::fs::File::open(dir) {
        dir.sync_all().unwrap();
    }
}

/// (blob, size) of every blob the database refers to: single-blob objects, the parts of
/// multipart objects (`manifest`), and the parts of uploads in progress.
fn blob_sizes(conn: &rusqlite::Connection) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare("SELECT blob, size, manifest FROM objects WHERE blob IS NOT NULL OR manifest IS NOT NULL")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        match row.unwrap() {
            (Some(blob), size, _) => out.push((blob, size)),
            (None, _, Some(manifest)) => {
                out.extend(serde_json::from_str::<Vec<(String, u64)>>(&manifest).unwrap())
            }
            (None, _, None) => unreachable!(),
        }
    }
    let mut stmt = conn.prepare("SELECT blob, size FROM parts").unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    out.extend(rows.map(Result::unwrap));
    out
}

/// After the restart: each key holds its last acknowledged version or one of the unanswered
/// writes after it, whole, with its ETag; no other key exists. Settles the model on what is
/// there, and aborts the multipart uploads left in progress; returns how many.
async fn check_keys(conn: &Conn, model: &mut HashMap<String, KeyState>) -> usize {
    for (key, state) in model.iter_mut() {
        let p = conn.req(Method::GET, &format!("/{BUCKET}/{key}")).prepare();
        let sent = conn
            .http
            .request(p.method, &p.url)
            .headers(p.headers)
            .send()
            .await;
        let res = match sent {
            Ok(res) => match res.status().as_u16() {
                // A body cut short: the stored bytes are fewer than the row says.
                200 if res.content_length().is_some() => {
                    let (status, headers) = (res.status().as_u16(), res.headers().clone());
                    match res.bytes().await {
                        Ok(body) => crate::helpers::Resp {
                            status,
                            headers,
                            body,
                        },
                        Err(e) => {
                            panic!("{key}: GET broke off mid-body ({e}): the object is not whole")
                        }
                    }
                }
                _ => crate::helpers::Resp::read(res).await,
            },
            Err(e) => panic!("{key}: GET failed: {e}"),
        };
        let found = match res.status {
            200 => {
                let etag = res.header("etag").unwrap_or_default().to_owned();
                let candidates: Vec<&Version> = state
                    .acked
                    .iter()
                    .chain(state.maybe.iter().flatten())
                    .collect();
                let hit = candidates.iter().find(|v| v.body[..] == res.body[..]);
                let Some(hit) = hit else {
                    panic!(
                        "{key}: {} bytes (md5 {}) that are none of the {} versions it may hold \
                         (acknowledged: {:?})",
                        res.body.len(),
                        md5_hex(&res.body),
                        candidates.len(),
                        state.acked.as_ref().map(|v| (v.body.len(), v.etag.clone())),
                    )
                };
                assert_eq!(etag, hit.etag, "{key}: ETag of the stored version");
                Some((*hit).clone())
            }
            404 => {
                assert!(
                    state.acked.is_none() || state.maybe.iter().any(Option::is_none),
                    "{key}: an acknowledged write of {} bytes (ETag {}) is lost",
                    state.acked.as_ref().unwrap().body.len(),
                    state.acked.as_ref().unwrap().etag,
                );
                None
            }
            s => panic!("{key}: GET answered {s}: {}", res.text()),
        };
        *state = KeyState {
            acked: found,
            maybe: Vec::new(),
        };
    }
    let list = conn
        .req(Method::GET, &format!("/{BUCKET}"))
        .query("list-type=2")
        .send()
        .await;
    list.assert_status(200);
    for key in crate::helpers::xml_tags(&list.text(), "Key") {
        assert!(
            model.get(&key).is_some_and(|s| s.acked.is_some()),
            "unexpected key {key}"
        );
    }
    // Multipart uploads the cut interrupted can still be aborted (which frees their parts).
    let uploads = conn
        .req(Method::GET, &format!("/{BUCKET}"))
        .query("uploads")
        .send()
        .await;
    uploads.assert_status(200);
    let in_progress = crate::helpers::xml_blocks(&uploads.text(), "Upload");
    for upload in &in_progress {
        let key = xml_tag(upload, "Key").unwrap();
        let id = xml_tag(upload, "UploadId").unwrap();
        conn.req(Method::DELETE, &format!("/{BUCKET}/{key}"))
            .query(&format!("uploadId={id}"))
            .send()
            .await
            .assert_status(204);
    }
    in_progress.len()
}

async fn run(iterations: usize, seed: u64) {
    if let Some(why) = unsupported() {
        eprintln!("SKIPPED powerloss: {why}");
        return;
    }
    let crashfs = crashfs_bin();
    let root = tempfile::tempdir().unwrap();
    let (disk, mnt, scratch) = (
        root.path().join("disk"),
        root.path().join("mnt"),
        root.path().join("scratch"),
    );
    std::fs::create_dir(&disk).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    eprintln!("powerloss: {iterations} iterations, POWERLOSS_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let mut model: HashMap<String, KeyState> = HashMap::new();
    for w in 0..WORKERS {
        for k in 0..KEYS_PER_WORKER {
            model.insert(format!("w{w}/k{k}"), KeyState::default());
        }
    }

    let mut machine = Machine::start(&crashfs, &disk, &mnt).await;
    machine
        .conn
        .req(Method::PUT, &format!("/{BUCKET}"))
        .send()
        .await
        .assert_status(200);
    let mut totals = (0usize, 0usize);
    for i in 0..iterations {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..WORKERS {
            let mine: Vec<(String, KeyState)> = (0..KEYS_PER_WORKER)
                .map(|k| {
                    let key = format!("w{w}/k{k}");
                    let state = model.remove(&key).unwrap();
                    (key, state)
                })
                .collect();
            let r = Rng(rng.next() | 1);
            tasks.push(tokio::spawn(worker(
                machine.conn.clone(),
                mine,
                r,
                stop.clone(),
            )));
        }
        let at = Duration::from_millis(100 + rng.below(2500));
        tokio::time::sleep(at).await;
        // No new request from here; those under way meet the cut.
        stop.store(true, Ordering::Relaxed);
        machine.power_cut().await;
        let mut answered = 0;
        for t in tasks {
            let (keys, n) = t.await.unwrap();
            answered += n;
            model.extend(keys);
        }
        let referenced = check_disk(&disk, &scratch);

        machine = Machine::start(&crashfs, &disk, &mnt).await;
        // The start-up sweep has run: exactly the referenced blobs are left, no temp file.
        let seen = machine.seen(&mnt);
        let blobs: std::collections::HashSet<String> = blob_files(&seen)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(blobs, referenced, "blob files after the start-up sweep");
        assert!(
            crate::helpers::tmp_files(&seen).is_empty(),
            "temp files after the sweep"
        );
        let aborted = check_keys(&machine.conn, &mut model).await;
        sync_everything(&seen);
        totals.0 += answered;
        totals.1 += model.values().filter(|s| s.acked.is_some()).count();
        eprintln!(
            "powerloss: iteration {}/{iterations}: cut at {at:?} after {answered} acknowledged \
             writes; {} objects, {} blobs checked, {aborted} interrupted multipart uploads \
             aborted",
            i + 1,
            model.values().filter(|s| s.acked.is_some()).count(),
            blobs.len()
        );
    }
    machine.stop().await;
    // A clean stop writes everything: the disk is whole too.
    check_disk(&disk, &scratch);
    eprintln!(
        "powerloss: {iterations} power cuts, {} acknowledged writes, {} object checks: all held",
        totals.0, totals.1
    );
}

/// A few power cuts at random moments of a mixed workload (the long run: see the module doc).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn power_cut_loses_no_acknowledged_write() {
    let iterations = std::env::var("POWERLOSS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let seed = std::env::var("POWERLOSS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp_nanos() as u64);
    run(iterations, seed).await;
}

/// crashfs itself: after a power cut the disk holds what was synced, as POSIX allows it to,
/// and nothing else; after a clean stop it holds everything. (`sync FILE` is an fsync of FILE,
/// `sync DIR` of the directory.)
#[tokio::test]
async fn crashfs_keeps_only_what_was_synced() {
    if let Some(why) = unsupported() {
        eprintln!("SKIPPED crashfs: {why}");
        return;
    }
    let crashfs = crashfs_bin();
    let root = tempfile::tempdir().unwrap();
    let (disk, mnt) = (root.path().join("disk"), root.path().join("mnt"));
    std::fs::create_dir_all(disk.join("old")).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(disk.join("old/kept"), "on disk before").unwrap();
    let script = r#"set -e; cd "$1"
        printf synced > a; sync a
        printf named-not-synced > e
        mkdir d; printf x > d/x; sync d/x d
        sync .
        printf ' and more' >> a
        printf lost > b
        printf data > c; sync c
        mv old/kept moved
        mkdir new; sync new
        touch ready; sleep 60"#;
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(&crashfs)
        .arg(&disk)
        .arg(&mnt)
        .args(["--", "sh", "-c", script, "sh"])
        .arg(&mnt)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let ready =
        Path::new(&format!("/proc/{pid}/root")).join(mnt.join("ready").strip_prefix("/").unwrap());
    assert!(
        crate::helpers::poll_until(Duration::from_secs(10), || ready.exists()).await,
        "the script did not finish"
    );
    let cut = std::process::Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .unwrap();
    assert!(cut.success());
    assert!(child.wait().await.unwrap().success());

    let mut found: Vec<(String, String)> = Vec::new();
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.push((name + "/", String::new()));
                walk(&p, base, out);
            } else {
                out.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    walk(&disk, &disk, &mut found);
    found.sort();
    let want: Vec<(String, String)> = [
        ("a", "synced"), // the append after the sync is lost
        ("d/", ""),      // synced into the root before the cut, with its synced entry
        ("d/x", "x"),
        ("e", ""),    // its name was synced, its bytes never were
        ("old/", ""), // the rename was never synced: the file is in its old place
        ("old/kept", "on disk before"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // b, c (synced, but not its name), `moved` and `new` (its parent never synced) are gone.
    assert_eq!(found, want);
}
