//! Crash loop: the real `postgate` binary under a mixed workload from several clients, killed
//! with SIGKILL at a random moment, restarted on the same data directory, and checked against
//! every invariant of `invariants.rs` (what was answered 2xx is there byte for byte, what was not
//! is absent or whole, blobs match rows, link counters match their uploads, and multipart uploads
//! left open can be continued or aborted).
//!
//! `cargo nextest run --test crash` runs 20 iterations (CI). `POSTGATE_CRASH_ITERATIONS=300`
//! runs more; `POSTGATE_CRASH_SEED=<n>` replays a run (the seed is printed at the start).

#[path = "../api/helpers.rs"]
mod helpers;
mod invariants;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgate::policy::{ContentTypeRule, KeySpec, PostPolicyRequest, issue};
use reqwest::Method;
use time::OffsetDateTime;
use tokio::process::Command;

use helpers::{
    ADMIN_AK, ADMIN_SK, Payload, Prepared, REGION, Resp, obj, req_to, xml_blocks, xml_tag,
};
use invariants::{BodySpec, Endpoint, State, Version, WriteLog, check_objects, check_store};

const BUCKET: &str = "crash";
/// Keys the clients overwrite, copy onto, complete uploads onto and delete, all at once.
const SHARED_KEYS: u64 = 12;
const CLIENTS: usize = 4;
const PART: usize = 5 * 1024 * 1024;
/// Open multipart uploads at most (each holds a 5 MiB part).
const MAX_OPEN_UPLOADS: usize = 4;

/// splitmix64: a small seeded generator, so that a run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64) as usize
    }
}

/// A `postgate serve` process on the data directory.
type Server = helpers::ServerProcess;

async fn start_server(dir: &Path) -> Server {
    let cmd = Command::new(env!("CARGO_BIN_EXE_postgate"));
    helpers::start_process(cmd, dir, "error", Duration::from_secs(30)).await
}

impl Server {
    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            base: &self.base,
            host: &self.host,
            http: &self.http,
        }
    }

    fn req(&self, method: Method, path: &str) -> helpers::Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }

    async fn kill(mut self) {
        let _ = self.child.start_kill();
        self.child.wait().await.unwrap();
    }
}

/// Sends a prepared request; `Err` when no whole answer came (the server died).
async fn try_send(http: &reqwest::Client, p: Prepared) -> Result<Resp, reqwest::Error> {
    let res = http
        .request(p.method, &p.url)
        .headers(p.headers)
        .body(p.body)
        .send()
        .await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// A multipart upload the harness began, with every part it sent.
#[derive(Debug, Clone)]
struct OpenUpload {
    key: String,
    upload_id: String,
    wid: u64,
    content_type: String,
    /// Part number → (length, seed, answered 2xx).
    parts: BTreeMap<u32, (usize, u64, bool)>,
    /// A completion or abort was sent and not answered: the upload may be gone.
    ending_sent: bool,
}

/// What lives across iterations.
struct Run {
    log: WriteLog,
    next_wid: AtomicU64,
    uploads: Mutex<Vec<OpenUpload>>,
    link_token: String,
    writes_sent: AtomicUsize,
    writes_answered: AtomicUsize,
    unexpected: Mutex<Vec<String>>,
}

impl Run {
    fn wid(&self) -> u64 {
        self.next_wid.fetch_add(1, Ordering::SeqCst)
    }
}

/// One client of one epoch: sends random writes until `stop`.
async fn client(run: Arc<Run>, server: Arc<Server>, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng(seed);
    while !stop.load(Ordering::SeqCst) {
        let key = format!("k/{}", rng.below(SHARED_KEYS));
        match rng.below(20) {
            0..=6 => put(&run, &server, &mut rng, &key).await,
            7..=8 => post_form(&run, &server, &mut rng, &key).await,
            9..=10 => copy(&run, &server, &mut rng, &key).await,
            11..=13 => delete(&run, &server, &key).await,
            14..=15 => multipart(&run, &server, &mut rng, &key).await,
            16..=17 => link_upload(&run, &server, &mut rng).await,
            _ => {
                // A read in the mix: whatever it finds, it must be whole (checked at the end).
                let p = server.req(Method::GET, &obj(BUCKET, &key)).prepare();
                let _ = try_send(&server.http, p).await;
            }
        }
    }
}

/// Sends a write of `key` whose outcome, if it happens, is `outcome`, and records it.
async fn write(run: &Run, server: &Server, key: &str, outcome: State, p: Prepared) -> Option<Resp> {
    run.writes_sent.fetch_add(1, Ordering::Relaxed);
    let start = run.log.tick();
    match try_send(&server.http, p).await {
        Ok(res) if (200..300).contains(&res.status) => {
            run.writes_answered.fetch_add(1, Ordering::Relaxed);
            run.log.record(key, outcome, start, true);
            Some(res)
        }
        Ok(res) => {
            // An error answer: the write did nothing. None is expected in this workload.
            run.unexpected
                .lock()
                .unwrap()
                .push(format!("{key}: {} {}", res.status, res.text()));
            None
        }
        Err(_) => {
            run.log.record(key, outcome, start, false);
            None
        }
    }
}

fn version(wid: u64, body: BodySpec, multipart: bool) -> Arc<Version> {
    Arc::new(Version {
        wid,
        etag: body.etag(multipart),
        body,
        content_type: format!("application/x-crash-{wid}"),
    })
}

async fn put(run: &Run, server: &Server, rng: &mut Rng, key: &str) {
    let wid = run.wid();
    let (len, chunked) = match rng.below(4) {
        0 | 1 => (rng.range(0, 64 * 1024), false),
        2 => (rng.range(64 * 1024, 2 * 1024 * 1024), false),
        _ => (rng.range(100 * 1024, 1024 * 1024), true),
    };
    let v = version(wid, BodySpec::single(len, wid), false);
    let mut req = server
        .req(Method::PUT, &obj(BUCKET, key))
        .header("content-type", &v.content_type)
        .header("x-amz-meta-wid", &wid.to_string())
        .body(v.body.bytes());
    if chunked {
        req = req.payload(Payload::Chunked {
            chunk_size: 64 * 1024,
            corrupt: None,
        });
    }
    write(run, server, key, State::Present(v), req.prepare()).await;
}

async fn post_form(run: &Run, server: &Server, rng: &mut Rng, key: &str) {
    let wid = run.wid();
    let len = rng.range(1, 300 * 1024);
    let v = version(wid, BodySpec::single(len, wid), false);
    let policy = PostPolicyRequest {
        content_type: Some(ContentTypeRule::Exact(v.content_type.clone())),
        metadata: vec![("wid".into(), wid.to_string())],
        ..PostPolicyRequest::new(BUCKET, KeySpec::Exact(key.into()), 10 << 20)
    };
    let url = format!("{}/{BUCKET}", server.base);
    let signed = issue(
        &policy,
        ADMIN_AK,
        ADMIN_SK,
        REGION,
        &url,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let form = multipart_form(&signed.fields, &format!("{wid}.bin"), &v.body.bytes());
    write_form(run, server, key, State::Present(v), &url, form).await;
}

/// A browser's form: the fields in order, then the file.
fn multipart_form(
    fields: &[(String, String)],
    name: &str,
    body: &[u8],
) -> reqwest::multipart::Form {
    let form = fields
        .iter()
        .fold(reqwest::multipart::Form::new(), |f, (k, v)| {
            f.text(k.clone(), v.clone())
        });
    form.part(
        "file",
        reqwest::multipart::Part::bytes(body.to_vec()).file_name(name.to_owned()),
    )
}

async fn write_form(
    run: &Run,
    server: &Server,
    key: &str,
    outcome: State,
    url: &str,
    form: reqwest::multipart::Form,
) {
    run.writes_sent.fetch_add(1, Ordering::Relaxed);
    let start = run.log.tick();
    let res = match server.http.post(url).multipart(form).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            res.bytes().await.map(|b| (status, b))
        }
        Err(e) => Err(e),
    };
    match res {
        Ok((status, _)) if (200..300).contains(&status) => {
            run.writes_answered.fetch_add(1, Ordering::Relaxed);
            run.log.record(key, outcome, start, true);
        }
        Ok((status, body)) => run.unexpected.lock().unwrap().push(format!(
            "POST {key}: {status} {}",
            String::from_utf8_lossy(&body)
        )),
        Err(_) => run.log.record(key, outcome, start, false),
    }
}

/// CopyObject onto `key` from a source written just before (and never changed).
async fn copy(run: &Run, server: &Server, rng: &mut Rng, key: &str) {
    let wid = run.wid();
    let src = format!("src/{wid}");
    let len = rng.range(0, 200 * 1024);
    let v = version(wid, BodySpec::single(len, wid), false);
    let p = server
        .req(Method::PUT, &obj(BUCKET, &src))
        .header("content-type", &v.content_type)
        .header("x-amz-meta-wid", &wid.to_string())
        .body(v.body.bytes())
        .prepare();
    if write(run, server, &src, State::Present(v.clone()), p)
        .await
        .is_none()
    {
        return;
    }
    let p = server
        .req(Method::PUT, &obj(BUCKET, key))
        .header("x-amz-copy-source", &format!("/{BUCKET}/{src}"))
        .prepare();
    write(run, server, key, State::Present(v), p).await;
}

async fn delete(run: &Run, server: &Server, key: &str) {
    let p = server.req(Method::DELETE, &obj(BUCKET, key)).prepare();
    write(run, server, key, State::Absent, p).await;
}

fn part_seed(wid: u64, n: u32) -> u64 {
    (wid << 8) | u64::from(n)
}

/// Sends part `n` of `u` and records it in the run's list of uploads.
async fn upload_part(run: &Run, server: &Server, u: &OpenUpload, n: u32, len: usize) -> bool {
    let seed = part_seed(u.wid, n);
    let p = server
        .req(Method::PUT, &obj(BUCKET, &u.key))
        .query(&format!("partNumber={n}&uploadId={}", u.upload_id))
        .body(helpers::pattern(len, seed))
        .prepare();
    let ok = matches!(try_send(&server.http, p).await, Ok(r) if r.status == 200);
    let mut uploads = run.uploads.lock().unwrap();
    if let Some(entry) = uploads.iter_mut().find(|x| x.upload_id == u.upload_id) {
        let part = entry.parts.entry(n).or_insert((len, seed, false));
        part.2 |= ok;
    }
    ok
}

fn complete_body(parts: &[(u32, String)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

/// Create, a 5 MiB part, then: leave it open (for after the crash), or a last small part and
/// complete, or abort.
async fn multipart(run: &Run, server: &Server, rng: &mut Rng, key: &str) {
    if run.uploads.lock().unwrap().len() >= MAX_OPEN_UPLOADS {
        return put(run, server, rng, key).await;
    }
    let wid = run.wid();
    let content_type = format!("application/x-crash-{wid}");
    let p = server
        .req(Method::POST, &obj(BUCKET, key))
        .query("uploads")
        .header("content-type", &content_type)
        .header("x-amz-meta-wid", &wid.to_string())
        .prepare();
    let Ok(res) = try_send(&server.http, p).await else {
        return;
    };
    let Some(upload_id) = xml_tag(&res.text(), "UploadId") else {
        return;
    };
    let u = OpenUpload {
        key: key.to_owned(),
        upload_id,
        wid,
        content_type,
        parts: BTreeMap::new(),
        ending_sent: false,
    };
    run.uploads.lock().unwrap().push(u.clone());
    if !upload_part(run, server, &u, 1, PART).await {
        return;
    }
    match rng.below(5) {
        0 | 1 => {}
        2 => {
            let p = server
                .req(Method::DELETE, &obj(BUCKET, key))
                .query(&format!("uploadId={}", u.upload_id))
                .prepare();
            end_upload(run, &u.upload_id, try_send(&server.http, p).await, 204);
        }
        _ => {
            let last = rng.range(1, 100 * 1024);
            if !upload_part(run, server, &u, 2, last).await {
                return;
            }
            let body = BodySpec(vec![(PART, part_seed(wid, 1)), (last, part_seed(wid, 2))]);
            let parts = vec![
                (
                    1,
                    format!(
                        "\"{}\"",
                        helpers::md5_hex(&helpers::pattern(PART, part_seed(wid, 1)))
                    ),
                ),
                (
                    2,
                    format!(
                        "\"{}\"",
                        helpers::md5_hex(&helpers::pattern(last, part_seed(wid, 2)))
                    ),
                ),
            ];
            let v = Arc::new(Version {
                wid,
                etag: body.etag(true),
                body,
                content_type: u.content_type.clone(),
            });
            let p = server
                .req(Method::POST, &obj(BUCKET, key))
                .query(&format!("uploadId={}", u.upload_id))
                .body(complete_body(&parts))
                .prepare();
            // Mark first: the completion may happen even if no answer comes.
            mark_ending(run, &u.upload_id);
            let res = write(run, server, key, State::Present(v), p).await;
            if let Some(res) = res {
                // CompleteMultipartUpload can fail inside a 200.
                if res.text().contains("<Error>") {
                    run.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("complete {key}: {}", res.text()));
                }
                run.uploads
                    .lock()
                    .unwrap()
                    .retain(|x| x.upload_id != u.upload_id);
            }
        }
    }
}

fn mark_ending(run: &Run, upload_id: &str) {
    if let Some(u) = run
        .uploads
        .lock()
        .unwrap()
        .iter_mut()
        .find(|x| x.upload_id == upload_id)
    {
        u.ending_sent = true;
    }
}

/// Abort's answer: answered → the upload is gone; no answer → it may be.
fn end_upload(run: &Run, upload_id: &str, res: Result<Resp, reqwest::Error>, want: u16) {
    match res {
        Ok(r) if r.status == want => run
            .uploads
            .lock()
            .unwrap()
            .retain(|x| x.upload_id != upload_id),
        Ok(r) => run.unexpected.lock().unwrap().push(format!(
            "abort {upload_id}: {} {}",
            r.status,
            r.text()
        )),
        Err(_) => mark_ending(run, upload_id),
    }
}

/// A file through the upload link's page form (`/-/u/{token}/policy`), as a browser sends it.
async fn link_upload(run: &Run, server: &Server, rng: &mut Rng) {
    let res = server
        .http
        .get(format!("{}/-/u/{}/policy", server.base, run.link_token))
        .send()
        .await;
    let Ok(res) = res else { return };
    let Ok(text) = res.text().await else { return };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let url = json["url"].as_str().unwrap().to_owned();
    let mut fields: Vec<(String, String)> = json["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    fields.push(("Content-Type".into(), "text/plain".into()));
    let wid = run.wid();
    let len = rng.range(1, 200 * 1024);
    let body = BodySpec::single(len, wid);
    let v = Arc::new(Version {
        wid,
        etag: body.etag(false),
        body,
        content_type: "text/plain".into(),
    });
    let name = format!("{wid}.bin");
    let form = multipart_form(&fields, &name, &v.body.bytes());
    write_form(
        run,
        server,
        &format!("link/{name}"),
        State::Present(v),
        &url,
        form,
    )
    .await;
}

/// After a restart: every upload the harness left open still holds the parts it was answered
/// for (and only parts it sent), and can be continued (one more part, complete) or aborted.
/// Uploads whose creation was not answered are found by listing, and aborted. Returns violations.
async fn continue_uploads(run: &Run, server: &Server, rng: &mut Rng) -> Vec<String> {
    let mut violations = Vec::new();
    let listing = server
        .req(Method::GET, &format!("/{BUCKET}"))
        .query("uploads")
        .send()
        .await;
    listing.assert_status(200);
    let listed: Vec<(String, String)> = xml_blocks(&listing.text(), "Upload")
        .iter()
        .map(|b| (xml_tag(b, "Key").unwrap(), xml_tag(b, "UploadId").unwrap()))
        .collect();
    let ours: Vec<OpenUpload> = std::mem::take(&mut *run.uploads.lock().unwrap());
    let known: HashSet<&str> = ours.iter().map(|u| u.upload_id.as_str()).collect();
    for (key, id) in &listed {
        if !known.contains(id.as_str()) {
            // Created without an answer: it must abort cleanly.
            let res = server
                .req(Method::DELETE, &obj(BUCKET, key))
                .query(&format!("uploadId={id}"))
                .send()
                .await;
            if res.status != 204 {
                violations.push(format!("abort of unlisted upload {id}: {}", res.status));
            }
        }
    }
    for u in ours {
        let exists = listed.iter().any(|(_, id)| *id == u.upload_id);
        if !exists {
            if !u.ending_sent {
                violations.push(format!(
                    "upload {} on {} vanished though never completed or aborted",
                    u.upload_id, u.key
                ));
            }
            continue;
        }
        if u.ending_sent
            && let Some(State::Present(v)) = run.log.known(&u.key)
            && v.wid == u.wid
        {
            violations.push(format!(
                "upload {} on {} is both completed (the key holds it) and still open",
                u.upload_id, u.key
            ));
        }
        let res = server
            .req(Method::GET, &obj(BUCKET, &u.key))
            .query(&format!("uploadId={}", u.upload_id))
            .send()
            .await;
        res.assert_status(200);
        let mut present: Vec<(u32, String, usize)> = Vec::new();
        for b in xml_blocks(&res.text(), "Part") {
            let n: u32 = xml_tag(&b, "PartNumber").unwrap().parse().unwrap();
            let etag = xml_tag(&b, "ETag").unwrap();
            let size: usize = xml_tag(&b, "Size").unwrap().parse().unwrap();
            match u.parts.get(&n) {
                Some(&(len, seed, _))
                    if len == size
                        && etag
                            == format!(
                                "\"{}\"",
                                helpers::md5_hex(&helpers::pattern(len, seed))
                            ) => {}
                _ => violations.push(format!(
                    "upload {} part {n}: listed with ETag {etag}, {size} bytes, not a part sent",
                    u.upload_id
                )),
            }
            present.push((n, etag, size));
        }
        for (n, &(_, _, answered)) in &u.parts {
            if answered && !present.iter().any(|p| p.0 == *n) {
                violations.push(format!(
                    "upload {} part {n} was answered 200 but is not listed",
                    u.upload_id
                ));
            }
        }
        if rng.below(2) == 0 {
            let res = server
                .req(Method::DELETE, &obj(BUCKET, &u.key))
                .query(&format!("uploadId={}", u.upload_id))
                .send()
                .await;
            if res.status != 204 {
                violations.push(format!(
                    "abort after restart: {} {}",
                    res.status,
                    res.text()
                ));
            }
            continue;
        }
        // One more part, then complete with the big first part (if there) and the new one.
        let n = u.parts.keys().max().copied().unwrap_or(0) + 1;
        let mut entry = u.clone();
        run.uploads.lock().unwrap().push(entry.clone());
        if !upload_part(run, server, &u, n, 1000 + n as usize).await {
            violations.push(format!("part {n} of {} after restart failed", u.upload_id));
            run.uploads.lock().unwrap().clear();
            continue;
        }
        run.uploads.lock().unwrap().clear();
        entry
            .parts
            .insert(n, (1000 + n as usize, part_seed(u.wid, n), true));
        let mut use_parts: Vec<(u32, String)> = Vec::new();
        let mut spec = Vec::new();
        if let Some((_, etag, size)) = present.iter().find(|p| p.0 == 1 && p.2 == PART) {
            use_parts.push((1, etag.clone()));
            spec.push((*size, part_seed(u.wid, 1)));
        }
        let last = (1000 + n as usize, part_seed(u.wid, n));
        use_parts.push((
            n,
            format!(
                "\"{}\"",
                helpers::md5_hex(&helpers::pattern(last.0, last.1))
            ),
        ));
        spec.push(last);
        let body = BodySpec(spec);
        let v = Arc::new(Version {
            wid: u.wid,
            etag: body.etag(true),
            body,
            content_type: u.content_type.clone(),
        });
        let res = server
            .req(Method::POST, &obj(BUCKET, &u.key))
            .query(&format!("uploadId={}", u.upload_id))
            .body(complete_body(&use_parts))
            .send()
            .await;
        if res.status != 200 || res.text().contains("<Error>") {
            violations.push(format!(
                "complete after restart of {}: {} {}",
                u.upload_id,
                res.status,
                res.text()
            ));
            continue;
        }
        run.log.set_known(&u.key, State::Present(v));
    }
    violations
}

fn iterations() -> usize {
    std::env::var("POSTGATE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_answered() {
    let seed = std::env::var("POSTGATE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let iterations = iterations();
    eprintln!("crash loop: {iterations} iterations, POSTGATE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();

    // Set-up: the bucket and an upload link under `link/`.
    let server = start_server(dir.path()).await;
    server
        .req(Method::PUT, &format!("/{BUCKET}"))
        .send()
        .await
        .assert_status(200);
    let res = server
        .http
        .post(format!("{}/-/api/links", server.base))
        .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
        .body(serde_json::json!({"bucket": BUCKET, "prefix": "link/"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let json: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let token = json["url"]
        .as_str()
        .unwrap()
        .rsplit_once("/-/u/")
        .unwrap()
        .1
        .to_owned();
    let run = Arc::new(Run {
        log: WriteLog::default(),
        next_wid: AtomicU64::new(1),
        uploads: Mutex::new(Vec::new()),
        link_token: token,
        writes_sent: AtomicUsize::new(0),
        writes_answered: AtomicUsize::new(0),
        unexpected: Mutex::new(Vec::new()),
    });
    let mut server = Arc::new(server);
    let mut violations: Vec<String> = Vec::new();
    let mut keys_checked = 0;
    let started = Instant::now();

    for i in 0..iterations {
        // Traffic, then SIGKILL at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                tokio::spawn(client(
                    run.clone(),
                    server.clone(),
                    rng.next(),
                    stop.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.range(100, 1500) as u64)).await;
        stop.store(true, Ordering::SeqCst);
        // SIGKILL through the pid (the clients still share the server), then let every client
        // see its request fail and stop.
        let pid = server.child.id().unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        for c in clients {
            c.await.unwrap();
        }
        Arc::try_unwrap(server).ok().unwrap().kill().await;

        // Restart and check.
        let restarted = start_server(dir.path()).await;
        let store = check_store(dir.path());
        violations.extend(
            store
                .violations
                .iter()
                .map(|v| format!("iteration {i}: {v}")),
        );
        let (n, v) = check_objects(&restarted.endpoint(), BUCKET, &run.log).await;
        keys_checked += n;
        violations.extend(v.iter().map(|v| format!("iteration {i}: {v}")));
        let v = continue_uploads(&run, &restarted, &mut rng).await;
        violations.extend(v.iter().map(|v| format!("iteration {i}: {v}")));
        let (n, v) = check_objects(&restarted.endpoint(), BUCKET, &run.log).await;
        keys_checked += n;
        violations.extend(v.iter().map(|v| format!("iteration {i}: {v}")));
        // Copy sources and link files are written once: checked, they are done with.
        for (key, _) in run.log.snapshot() {
            if key.starts_with("src/") {
                restarted
                    .req(Method::DELETE, &obj(BUCKET, &key))
                    .send()
                    .await
                    .assert_status(204);
                run.log.forget(&key);
            } else if key.starts_with("link/") {
                run.log.forget(&key);
            }
        }
        eprintln!(
            "iteration {i}: {} objects, {} blobs, {} parts; {} writes sent, {} answered; {} violations so far ({:.0?})",
            store.objects,
            store.blobs,
            store.parts,
            run.writes_sent.load(Ordering::Relaxed),
            run.writes_answered.load(Ordering::Relaxed),
            violations.len(),
            started.elapsed()
        );
        server = Arc::new(restarted);
    }
    if let Ok(s) = Arc::try_unwrap(server) {
        s.kill().await;
    }
    let unexpected = run.unexpected.lock().unwrap().clone();
    eprintln!(
        "crash loop done: {iterations} iterations, {} writes sent, {} answered 2xx, {keys_checked} key states checked, {} violations, {} unexpected error answers (seed {seed})",
        run.writes_sent.load(Ordering::Relaxed),
        run.writes_answered.load(Ordering::Relaxed),
        violations.len(),
        unexpected.len()
    );
    for v in &violations {
        eprintln!("VIOLATION {v}");
    }
    assert!(unexpected.is_empty(), "error answers: {unexpected:#?}");
    assert!(
        violations.is_empty(),
        "{} violations (seed {seed})",
        violations.len()
    );
}
