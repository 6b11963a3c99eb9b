//! The invariants a postgate data directory must hold after a crash, checked from the outside:
//! reusable by any harness that crashes a server (kill -9, power loss).
//!
//! Inputs: the data directory (read directly: the SQLite file and `data/blobs`) and a
//! [`WriteLog`], the harness's record of every write it sent and what it was answered. Each write
//! stores a body derived from a unique id (`wid`) and carries that id as `x-amz-meta-wid`, so a
//! read names the write it came from and a mix of two writes shows as a wrong body.
//!
//! - [`check_store`]: `PRAGMA integrity_check` is `ok`; every blob a row refers to (objects,
//!   manifests, parts) exists with the size the row says; every file in `data/blobs` is referred
//!   to; `data/tmp` is empty (after the start-up sweep); each link's `uploaded_files` equals the
//!   objects uploaded through it plus its unfinished multipart uploads.
//! - [`check_objects`]: every key reads back as one of the states the log allows (see
//!   [`KeyLog::allowed`]): byte for byte, with its ETag, `Content-Type` and `x-amz-meta-wid`.
//!
//! To use it from another harness: `#[path = "../api/helpers.rs"] mod helpers;` and
//! `#[path = "../crash/invariants.rs"] mod invariants;` at the crate root; record each write with
//! `WriteLog::record` (start from `WriteLog::tick` before sending), then after the restart run
//! `check_store(data_dir)` and `check_objects(...)`. See `main.rs` for the crash loop using it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use md5::Digest as _;
use reqwest::Method;

use crate::helpers::{obj, pattern, req_to};

/// How a version's body is made: `pattern(len, seed)` pieces, concatenated (one piece for a
/// single PUT, one per part for a multipart object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodySpec(pub Vec<(usize, u64)>);

impl BodySpec {
    pub fn single(len: usize, seed: u64) -> BodySpec {
        BodySpec(vec![(len, seed)])
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(len, seed) in &self.0 {
            out.extend_from_slice(&pattern(len, seed));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|p| p.0).sum()
    }

    /// S3's ETag: the MD5 of the body, or for a multipart object the MD5 of the parts' MD5s
    /// followed by `-<parts>`.
    pub fn etag(&self, multipart: bool) -> String {
        if !multipart {
            return format!("\"{}\"", hex::encode(md5::Md5::digest(self.bytes())));
        }
        let mut all = Vec::new();
        for &(len, seed) in &self.0 {
            all.extend_from_slice(&md5::Md5::digest(pattern(len, seed)));
        }
        format!(
            "\"{}-{}\"",
            hex::encode(md5::Md5::digest(&all)),
            self.0.len()
        )
    }
}

/// One write's result as stored: body, ETag, `Content-Type`, and its id in `x-amz-meta-wid`.
#[derive(Debug, PartialEq, Eq)]
pub struct Version {
    pub wid: u64,
    pub body: BodySpec,
    pub etag: String,
    pub content_type: String,
}

/// A key's state: no object, or one version.
#[derive(Debug, Clone)]
pub enum State {
    Absent,
    Present(Arc<Version>),
}

impl State {
    fn describe(&self) -> String {
        match self {
            State::Absent => "absent".into(),
            State::Present(v) => format!("wid {}", v.wid),
        }
    }
}

/// A write (PUT, POST, copy, multipart completion, delete) sent during an epoch.
#[derive(Debug, Clone)]
pub struct Op {
    pub outcome: State,
    /// Sequence numbers from [`WriteLog::tick`]: when it was sent, and when its 2xx answer
    /// arrived (`None`: no answer, the server died; it may or may not have happened).
    pub start: u64,
    pub end: Option<u64>,
}

/// What the harness knows about one key: its state when the epoch began, and the writes of the
/// epoch that may have changed it. Writes answered with an error are not recorded: an error
/// answer means the write did nothing.
#[derive(Debug, Clone)]
pub struct KeyLog {
    pub known: State,
    pub ops: Vec<Op>,
}

impl KeyLog {
    /// The states the key may be in: the outcome of any write not surely overwritten, that is
    /// every write except those that were answered before some other answered write was sent
    /// (which then came after them). The state at the epoch's start counts as a write answered
    /// at time 0. Unanswered writes are never excluded: they may have committed at the last
    /// moment.
    pub fn allowed(&self) -> Vec<&State> {
        let last_acked_start = self
            .ops
            .iter()
            .filter(|o| o.end.is_some())
            .map(|o| o.start)
            .max();
        let mut out = Vec::new();
        if last_acked_start.is_none() {
            out.push(&self.known);
        }
        for op in &self.ops {
            match (op.end, last_acked_start) {
                (None, _) | (_, None) => out.push(&op.outcome),
                (Some(end), Some(s)) if end > s => out.push(&op.outcome),
                _ => {}
            }
        }
        out
    }
}

/// The harness's log of writes, shared by its clients.
#[derive(Default)]
pub struct WriteLog {
    seq: AtomicU64,
    keys: std::sync::Mutex<BTreeMap<String, KeyLog>>,
}

impl WriteLog {
    /// A global order of events (sends and answers) across clients.
    pub fn tick(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Records a write on `key` sent at `start`; `answered`: whether a 2xx answer came.
    pub fn record(&self, key: &str, outcome: State, start: u64, answered: bool) {
        let end = answered.then(|| self.tick());
        let mut keys = self.keys.lock().unwrap();
        keys.entry(key.to_owned())
            .or_insert(KeyLog {
                known: State::Absent,
                ops: Vec::new(),
            })
            .ops
            .push(Op {
                outcome,
                start,
                end,
            });
    }

    /// Sets what a check found (or a write made while nothing else ran).
    pub fn set_known(&self, key: &str, state: State) {
        let mut keys = self.keys.lock().unwrap();
        keys.insert(
            key.to_owned(),
            KeyLog {
                known: state,
                ops: Vec::new(),
            },
        );
    }

    /// Stops tracking `key` (after a final check).
    pub fn forget(&self, key: &str) {
        self.keys.lock().unwrap().remove(key);
    }

    pub fn snapshot(&self) -> BTreeMap<String, KeyLog> {
        self.keys.lock().unwrap().clone()
    }

    /// The known state of `key` (after a check).
    pub fn known(&self, key: &str) -> Option<State> {
        self.keys.lock().unwrap().get(key).map(|k| k.known.clone())
    }
}

/// Where the server answers S3 requests (signed by the admin key).
pub struct Endpoint<'a> {
    pub base: &'a str,
    pub host: &'a str,
    pub http: &'a reqwest::Client,
}

/// Reads every key of `log` in `bucket` and compares it with the states the log allows. Each key
/// whose state matches one of them gets that state as its new known state (the epoch's writes are
/// settled). Returns (keys checked, violations).
pub async fn check_objects(
    ep: &Endpoint<'_>,
    bucket: &str,
    log: &WriteLog,
) -> (usize, Vec<String>) {
    let mut violations = Vec::new();
    let snapshot = log.snapshot();
    for (key, klog) in &snapshot {
        let res = req_to(ep.base, ep.host, ep.http, Method::GET, &obj(bucket, key))
            .send()
            .await;
        let allowed = klog.allowed();
        let found = match res.status {
            404 => {
                if allowed.iter().any(|s| matches!(s, State::Absent)) {
                    Some(State::Absent)
                } else {
                    None
                }
            }
            200 => {
                // Writes that cannot carry metadata (a link's form) have one possible version.
                let only = match allowed
                    .iter()
                    .filter(|s| matches!(s, State::Present(_)))
                    .collect::<Vec<_>>()[..]
                {
                    [State::Present(v)] => Some(v.wid),
                    _ => None,
                };
                let wid = match res.header("x-amz-meta-wid") {
                    Some(w) => w.parse::<u64>().ok(),
                    None => only,
                };
                let version = allowed.iter().find_map(|s| match s {
                    State::Present(v) if Some(v.wid) == wid => Some(v.clone()),
                    _ => None,
                });
                match version {
                    Some(v) => {
                        let body = v.body.bytes();
                        if res.body.len() != body.len() || res.body[..] != body[..] {
                            violations.push(format!(
                                "{key}: wid {} read back {} bytes that are not its body ({} bytes)",
                                v.wid,
                                res.body.len(),
                                body.len()
                            ));
                        }
                        if res.header("etag") != Some(v.etag.as_str()) {
                            violations.push(format!(
                                "{key}: wid {} has ETag {:?}, expected {}",
                                v.wid,
                                res.header("etag"),
                                v.etag
                            ));
                        }
                        if res.header("content-type") != Some(v.content_type.as_str()) {
                            violations.push(format!(
                                "{key}: wid {} has Content-Type {:?}, expected {}",
                                v.wid,
                                res.header("content-type"),
                                v.content_type
                            ));
                        }
                        Some(State::Present(v))
                    }
                    None => None,
                }
            }
            status => {
                violations.push(format!("{key}: GET answered {status}: {}", res.text()));
                continue;
            }
        };
        match found {
            Some(state) => log.set_known(key, state),
            None => {
                let seen = match res.status {
                    404 => "absent".to_owned(),
                    _ => format!(
                        "wid {:?} ({} bytes)",
                        res.header("x-amz-meta-wid"),
                        res.body.len()
                    ),
                };
                violations.push(format!(
                    "{key}: found {seen}; allowed: {}",
                    allowed
                        .iter()
                        .map(|s| s.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    (snapshot.len(), violations)
}

/// What [`check_store`] counted.
#[derive(Debug, Default)]
pub struct StoreReport {
    pub objects: usize,
    pub blobs: usize,
    pub parts: usize,
    pub links: usize,
    pub violations: Vec<String>,
}

/// Checks the data directory itself: the database's integrity, blobs against rows, temp files,
/// link counters. Run it while nothing writes (after start-up, before traffic).
pub fn check_store(data_dir: &Path) -> StoreReport {
    let mut r = StoreReport::default();
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("postgate.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    if integrity != "ok" {
        r.violations.push(format!("integrity_check: {integrity}"));
    }

    // Every referenced blob with the size its row gives it.
    let mut referenced: HashMap<String, u64> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT bucket, key, size, blob, manifest, data IS NOT NULL FROM objects")
        .unwrap();
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)? as u64,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, bool>(5)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (bucket, key, size, blob, manifest, inline) = row.unwrap();
        r.objects += 1;
        let mut twice = Vec::new();
        let mut add = |id: String, len: u64, what: &str| {
            if referenced.insert(id.clone(), len).is_some() {
                twice.push(format!(
                    "{bucket}/{key}: blob {id} ({what}) referred to twice"
                ));
            }
        };
        match (blob, manifest) {
            (Some(b), None) => add(b, size, "object"),
            (None, Some(m)) => {
                let parts: Vec<(String, u64)> = serde_json::from_str(&m).unwrap();
                let total: u64 = parts.iter().map(|p| p.1).sum();
                if total != size {
                    r.violations.push(format!(
                        "{bucket}/{key}: manifest sums to {total} bytes, row says {size}"
                    ));
                }
                for (b, len) in parts {
                    add(b, len, "manifest");
                }
            }
            (None, None) if inline || size == 0 => {}
            other => twice.push(format!(
                "{bucket}/{key}: blob/manifest {other:?}, inline {inline}"
            )),
        }
        r.violations.extend(twice);
    }
    let mut stmt = conn
        .prepare("SELECT upload_id, part_number, size, blob FROM parts")
        .unwrap();
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)? as u64,
                row.get::<_, String>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (upload, n, size, blob) = row.unwrap();
        r.parts += 1;
        if referenced.insert(blob.clone(), size).is_some() {
            r.violations.push(format!(
                "upload {upload} part {n}: blob {blob} referred to twice"
            ));
        }
    }

    let files = blob_files(data_dir);
    r.blobs = files.len();
    let mut on_disk = HashSet::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let len = std::fs::metadata(&path).unwrap().len();
        match referenced.get(&name) {
            None => r
                .violations
                .push(format!("blob {} is referred to by no row", path.display())),
            Some(&want) if want != len => r.violations.push(format!(
                "blob {name}: {len} bytes on disk, its row says {want}"
            )),
            Some(_) => {}
        }
        on_disk.insert(name);
    }
    for id in referenced.keys() {
        if !on_disk.contains(id) {
            r.violations
                .push(format!("blob {id} is referred to but missing"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(data_dir.join("tmp")) {
        let left: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        if !left.is_empty() {
            r.violations
                .push(format!("temp files left after start-up: {left:?}"));
        }
    }

    // A link's counter: files uploaded through it (objects carrying its id) plus its
    // unfinished multipart uploads.
    let mut stmt = conn
        .prepare(
            "SELECT l.id, l.uploaded_files,
               (SELECT count(*) FROM objects o, json_each(o.meta) m
                 WHERE json_extract(m.value, '$[0]') = 'upload-link'
                   AND json_extract(m.value, '$[1]') = l.id),
               (SELECT count(*) FROM uploads u WHERE u.link_id = l.id)
             FROM links l",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (id, counter, objects, uploads) = row.unwrap();
        r.links += 1;
        if counter != objects + uploads {
            r.violations.push(format!(
                "link {id}: uploaded_files = {counter}, but {objects} objects and {uploads} \
                 unfinished uploads came through it"
            ));
        }
    }
    r
}

/// Every regular file under `data/blobs`.
pub fn blob_files(data_dir: &Path) -> Vec<PathBuf> {
    crate::helpers::blob_files(data_dir)
}
