//! A slow upload holds only what has arrived: its bytes reach the temp file as they come, not once
//! a full batch has gathered in memory. Raw TCP, so that the client can pause mid-body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The status line's code of the response on `stream`.
async fn read_status(stream: &mut tokio::net::TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a status line");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The largest file in `data/tmp`, in bytes.
fn largest_temp(app: &TestApp) -> u64 {
    app.tmp_files()
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_paused_put_has_written_what_arrived_and_completes_exactly() {
    let app = spawn_app().await;
    app.create_bucket("slow").await;
    let body = pattern(2 << 20, 16);
    // Past the inline threshold (64 KiB) and well short of a fast body's 512 KiB batch.
    let first = 300 * 1024;
    let p = app
        .req(Method::PUT, &obj("slow", "phone"))
        .body(body.clone())
        .prepare();
    let mut stream = app.connect().await;
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    stream.write_all(&body[..first]).await.unwrap();

    // The client pauses: what it sent is handed to the writer rather than held in memory.
    let deadline = Instant::now() + Duration::from_secs(10);
    while largest_temp(&app) < first as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        largest_temp(&app),
        first as u64,
        "the bytes sent before the pause are in the temp file"
    );

    // The rest in uneven pieces with pauses; the signed SHA-256 and the MD5 cover every byte once.
    for piece in body[first..].chunks(170_001) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(read_status(&mut stream).await, 200);
    let got = app.get(&obj("slow", "phone")).await;
    got.assert_status(200);
    assert_eq!(&got.body[..], &body[..]);
    let etag = format!("\"{}\"", hex::encode(Md5::digest(&body)));
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    assert!(app.tmp_files().is_empty(), "no temp file left");
}

/// A client that goes away mid-body leaves nothing behind, with the bytes it sent already written.
#[tokio::test]
async fn a_slow_put_cut_off_leaves_no_object_and_no_temp_file() {
    let app = spawn_app().await;
    app.create_bucket("slow").await;
    let body = pattern(1 << 20, 17);
    let p = app
        .req(Method::PUT, &obj("slow", "gone"))
        .body(body.clone())
        .prepare();
    let mut stream = app.connect().await;
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    stream.write_all(&body[..200 * 1024]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while largest_temp(&app) < 200 * 1024 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.tmp_files().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.tmp_files().is_empty(), "the temp file is removed");
    app.head(&obj("slow", "gone")).await.assert_status(404);
}

/// Threads of this process: the server runs in it.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Fifty slow PUTs at once share the few threads that write and hash uploads' batches. A thread
/// costs about 1 MiB of resident memory once it has run; holding a writer and a hasher thread per
/// upload (about 100 here), or handing each batch to tokio's blocking pool (a new thread for
/// every job that finds none idle), made memory grow by that much per slow upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_slow_puts_share_a_few_threads_and_land_exactly() {
    let app = spawn_app().await;
    app.create_bucket("slow").await;
    // Past the inline threshold, sent in 24 pieces 30 ms apart, all uploads in step (as phones
    // pacing their sends on a timer are): their hand-overs come at the same moments.
    let (n, piece, pieces) = (50, 32 * 1024, 24);
    // The same number of uploads at once first, each past the inline threshold: the blocking
    // pool grows to what starting and ending that many uploads at once takes (checks, closing
    // fsyncs, renames), and keeps those threads a while. Counted from here, the threads started
    // are those the slow uploads hold while they trickle in.
    let warm_paths: Vec<String> = (0..n).map(|i| obj("slow", &format!("w{i}"))).collect();
    let warm =
        (warm_paths.iter().enumerate()).map(|(i, p)| app.put(p, pattern(piece * 4, i as u64)));
    for put in futures_util::future::join_all(warm).await {
        put.assert_status(200);
    }
    let idle = threads();
    // Uploads whose body is sent but for its last piece: threads are counted until all are
    // there. Ending the uploads (closing fsyncs and renames on the blocking pool, as many at
    // once as end at once) is not what a slow upload holds while it trickles in.
    let trickling = Arc::new(AtomicUsize::new(n));
    let mut uploads = Vec::new();
    for i in 0..n {
        let body = pattern(piece * pieces, 100 + i as u64);
        let p = app
            .req(Method::PUT, &obj("slow", &format!("p{i}")))
            .body(body.clone())
            .prepare();
        let mut stream = app.connect().await;
        let trickling = trickling.clone();
        uploads.push(tokio::spawn(async move {
            stream.write_all(&p.head_bytes(body.len())).await.unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(30));
            for (k, part) in body.chunks(piece).enumerate() {
                tick.tick().await;
                if k == pieces - 1 {
                    trickling.fetch_sub(1, Ordering::SeqCst);
                }
                stream.write_all(part).await.unwrap();
            }
            (read_status(&mut stream).await, body)
        }));
    }
    let mut peak = idle;
    while trickling.load(Ordering::SeqCst) > 0 {
        peak = peak.max(threads());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, upload) in uploads.into_iter().enumerate() {
        let (status, body) = upload.await.unwrap();
        assert_eq!(status, 200, "upload {i}");
        let etag = format!("\"{}\"", hex::encode(Md5::digest(&body)));
        let got = app.head(&obj("slow", &format!("p{i}"))).await;
        assert_eq!(got.header("etag"), Some(etag.as_str()), "upload {i}");
    }
    assert!(
        peak - idle <= 12,
        "{n} slow uploads started {} threads (idle {idle}, peak {peak})",
        peak - idle
    );
    assert!(app.tmp_files().is_empty(), "no temp file left");
}

/// Names of this process's threads (the server runs in it).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// Waits up to 10 s for `pred` over the thread names.
async fn wait_threads(pred: impl Fn(&[String]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pred(&thread_names()) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn writers(names: &[String]) -> usize {
    names.iter().filter(|n| *n == "postgate-write").count()
}

/// A body that comes fast gets a writer and a hasher thread of its own for the rest of the
/// upload, as one long-running writer (handing each batch to shared job threads cost a fast
/// upload a third to two thirds of its rate); the threads end with the upload, and the object
/// is exact. A body that stays slow keeps to the shared threads (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_put_gets_threads_of_its_own_until_it_ends() {
    let app = spawn_app().await;
    app.create_bucket("fast").await;
    let body = pattern(24 << 20, 18);
    let p = app
        .req(Method::PUT, &obj("fast", "lan"))
        .body(body.clone())
        .prepare();
    let mut stream = app.connect().await;
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    // 16 MiB at loopback speed, then a pause: the upload has moved onto its own threads.
    let first = 16 << 20;
    stream.write_all(&body[..first]).await.unwrap();
    assert!(
        wait_threads(|names| writers(names) == 1 && names.iter().any(|n| n == "postgate-hash"))
            .await,
        "a writer and a hasher thread for the fast upload: {:?}",
        thread_names()
    );
    stream.write_all(&body[first..]).await.unwrap();
    assert_eq!(read_status(&mut stream).await, 200);
    let got = app.get(&obj("fast", "lan")).await;
    got.assert_status(200);
    assert_eq!(got.body.len(), body.len());
    assert!(got.body[..] == body[..], "the object is exact");
    let etag = format!("\"{}\"", hex::encode(Md5::digest(&body)));
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    assert!(
        wait_threads(|names| writers(names) == 0).await,
        "the upload's threads end with it"
    );
    assert!(app.tmp_files().is_empty(), "no temp file left");
}

/// A fast upload cut off while on its own threads leaves no object, no temp file and no thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_put_cut_off_leaves_nothing_behind() {
    let app = spawn_app().await;
    app.create_bucket("fast").await;
    let body = pattern(24 << 20, 19);
    let p = app
        .req(Method::PUT, &obj("fast", "gone"))
        .body(body.clone())
        .prepare();
    let mut stream = app.connect().await;
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    stream.write_all(&body[..16 << 20]).await.unwrap();
    assert!(
        wait_threads(|names| writers(names) == 1).await,
        "on its threads"
    );
    drop(stream);
    assert!(
        wait_threads(|names| writers(names) == 0).await,
        "the threads end"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.tmp_files().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.tmp_files().is_empty(), "the temp file is removed");
    app.head(&obj("fast", "gone")).await.assert_status(404);
}
