//! The SQLite WAL stays bounded under sustained writes, with reads running beside them.
//!
//! Small objects are stored inline in their SQLite row, so every upload adds its body to the WAL.
//! A checkpoint that has to win the write lock from a writer that takes it back microseconds
//! after each commit never gets it, and the WAL grows by the whole upload stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::*;

/// The bound the WAL must stay under: the server starts it over once it passes 32 MiB, between
/// two batches, and a batch here adds at most 32 uploads (15 MiB).
const WAL_BOUND: u64 = 48 << 20;
/// Stored inline (the server below keeps objects up to 1 MiB in SQLite): each upload puts about
/// 120 pages in the WAL, so the database writer, not the HTTP side, is the busy one.
const OBJECT: usize = 480 * 1024;
/// Bodies written in all: sixteen times the bound, so a WAL that is not started over passes it.
const TOTAL: u64 = 16 * WAL_BOUND;

/// A server that keeps objects up to 1 MiB inline, with a bucket `wal`.
struct Server {
    base: String,
    host: String,
    http: reqwest::Client,
    wal: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = postgate::Config::for_data_dir(dir.path());
        config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
        config.inline_max_bytes = 1 << 20;
        let (state, _) = postgate::AppState::open(config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(postgate::serve(listener, state, async move {
            stop_rx.await.ok();
        }));
        let server = Server {
            base: format!("http://{addr}"),
            host: addr.to_string(),
            http: reqwest::Client::new(),
            wal: dir.path().join("postgate.db-wal"),
            _dir: dir,
            _stop: stop,
        };
        server
            .req(Method::PUT, "/wal")
            .send()
            .await
            .assert_status(200);
        server
    }

    fn req(&self, method: Method, path: &str) -> Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sustained_inline_puts_keep_the_wal_under_its_bound() {
    let server = Arc::new(Server::start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, peak, server) = (stop.clone(), peak.clone(), server.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let len = std::fs::metadata(&server.wal).map_or(0, |m| m.len());
                peak.fetch_max(len, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Readers that keep SQLite snapshots open beside the writes, as a busy server has.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    server
                        .req(Method::GET, "/wal")
                        .query("list-type=2&max-keys=50")
                        .send()
                        .await
                        .assert_status(200);
                }
            })
        })
        .collect();
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let body = Arc::new(pattern(OBJECT, 16));
    let writers: Vec<_> = (0..32)
        .map(|_| {
            let (server, next, body) = (server.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i * OBJECT as u64 >= TOTAL {
                        break;
                    }
                    // 64 keys, overwritten: the database stays small, the WAL still takes
                    // every page each upload changes.
                    server
                        .req(Method::PUT, &obj("wal", &format!("k{}", i % 64)))
                        .body(body.as_slice())
                        .unsigned()
                        .send()
                        .await
                        .assert_status(200);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    watcher.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak < WAL_BOUND,
        "the WAL reached {} MiB while {} MiB of uploads were stored in {took:.1?}",
        peak >> 20,
        TOTAL >> 20
    );
    let last = server.req(Method::GET, &obj("wal", "k0")).send().await;
    last.assert_status(200);
    assert_eq!(last.body.len(), OBJECT);
}
