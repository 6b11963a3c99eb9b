//! The S3 backend's client (`postgate::storage::s3`) against a real postgate server as the
//! cluster: it speaks S3 with SigV4 on 127.0.0.1, so every call here crosses real HTTP. A tiny
//! TCP proxy in front of it answers 503 SlowDown / 500 on demand, counts requests and open
//! connections (retries, parts in parallel).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use postgate::storage::s3::{
    Addressing, Backend, ByteRange, Code, CompletedPart, Error, ListRequest, Meta, Options, WriteIf,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

const MIB: usize = 1024 * 1024;

/// A backend on `endpoint` for `bucket`, 5 MiB parts, spooling into `spool`.
fn backend_at(
    endpoint: &str,
    bucket: &str,
    spool: &std::path::Path,
    tweak: impl FnOnce(&mut Options),
) -> Backend {
    let mut options = Options {
        part_size: 5 * MIB as u64,
        spool_dir: spool.to_owned(),
        backoff_base: Duration::from_millis(20),
        ..Options::default()
    };
    tweak(&mut options);
    Backend::new(endpoint, bucket, REGION, ADMIN_AK, ADMIN_SK, options).unwrap()
}

async fn setup(bucket: &str) -> (TestApp, tempfile::TempDir, Backend) {
    let app = spawn_app().await;
    app.create_bucket(bucket).await;
    let spool = tempfile::tempdir().unwrap();
    let backend = backend_at(&app.base, bucket, spool.path(), |_| {});
    (app, spool, backend)
}

async fn read_all(backend: &Backend, key: &str, range: Option<ByteRange>) -> Vec<u8> {
    let mut got = backend.get(key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = got.body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn spool_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// Writes `data` in uneven chunks (never aligned with a part).
async fn write_chunked(up: &mut postgate::storage::s3::Uploader, data: &[u8]) {
    for chunk in data.chunks(300_007) {
        up.write(chunk).await.unwrap();
    }
}

fn code(e: &Error) -> Option<Code> {
    e.code().cloned()
}

#[tokio::test]
async fn small_body_is_one_put_with_its_metadata() {
    let (app, spool, backend) = setup("bkt").await;
    let mut meta = Meta {
        content_type: Some("text/plain; charset=utf-8".into()),
        content_disposition: Some("attachment; filename=\"a.txt\"".into()),
        content_language: Some("fr".into()),
        cache_control: Some("max-age=60".into()),
        ..Meta::default()
    };
    meta.user.insert("colour".into(), "blue".into());
    meta.user.insert("owner".into(), "ada".into());
    let mut up = backend.uploader("dir/hello world.txt", meta.clone());
    up.write(b"hello ").await.unwrap();
    up.write(b"world").await.unwrap();
    let done = up.finish().await.unwrap();
    assert_eq!(done.etag, format!("\"{}\"", md5_hex(b"hello world")));
    assert_eq!(done.size, 11);
    assert!(done.last_modified.elapsed().unwrap() < Duration::from_secs(60));

    let info = backend.head("dir/hello world.txt").await.unwrap();
    assert_eq!(info.size, 11);
    assert_eq!(info.etag, done.etag);
    assert_eq!(info.meta.user, meta.user);
    assert_eq!(info.meta.content_type, meta.content_type);
    assert_eq!(info.meta.content_disposition, meta.content_disposition);
    assert_eq!(info.meta.content_language, meta.content_language);
    assert_eq!(info.meta.cache_control, meta.cache_control);
    assert_eq!(
        read_all(&backend, "dir/hello world.txt", None).await,
        b"hello world"
    );
    // Seen by a plain S3 client too.
    let res = app.get(&obj("bkt", "dir/hello world.txt")).await;
    res.assert_status(200);
    assert_eq!(res.header("x-amz-meta-colour"), Some("blue"));
    assert!(spool_files(spool.path()).is_empty());

    // An empty body is an empty object.
    let done = backend
        .uploader("empty", Meta::default())
        .finish()
        .await
        .unwrap();
    assert_eq!(done.size, 0);
    assert_eq!(read_all(&backend, "empty", None).await, b"");
}

#[tokio::test]
async fn exactly_one_part_stays_one_put() {
    let (_app, _spool, backend) = setup("bkt").await;
    let data = pattern(5 * MIB, 3);
    let mut up = backend.uploader("five", Meta::default());
    write_chunked(&mut up, &data).await;
    let done = up.finish().await.unwrap();
    assert_eq!(
        done.etag,
        format!("\"{}\"", md5_hex(&data)),
        "a plain PUT's ETag"
    );
}

#[tokio::test]
async fn twenty_mib_goes_as_parallel_parts_and_reads_back_whole_and_ranged() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    let proxy = Proxy::start(
        app.base.trim_start_matches("http://").parse().unwrap(),
        0,
        0,
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    let backend = backend_at(&proxy.url(), "bkt", spool.path(), |_| {});
    let data = pattern(20 * MIB + 123, 7);
    let mut meta = Meta {
        content_type: Some("application/octet-stream".into()),
        ..Meta::default()
    };
    meta.user.insert("big".into(), "yes".into());
    let mut up = backend.uploader("big.bin", meta);
    write_chunked(&mut up, &data).await;
    // Nothing visible before finish.
    backend.head("big.bin").await.unwrap_err();
    let done = up.finish().await.unwrap();
    assert!(done.etag.ends_with("-5\""), "{}", done.etag);
    assert_eq!(done.size, data.len() as u64);
    assert!(
        proxy.max_open.load(Ordering::SeqCst) >= 2,
        "parts went one at a time: {} connections at most",
        proxy.max_open.load(Ordering::SeqCst)
    );
    assert!(spool_files(spool.path()).is_empty(), "spool files left");

    let info = backend.head("big.bin").await.unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.meta.user.get("big").map(String::as_str), Some("yes"));
    assert_eq!(read_all(&backend, "big.bin", None).await, data);

    let first = 5 * MIB as u64 - 10;
    let mut got = backend
        .get("big.bin", Some(ByteRange::Inclusive(first, first + 19)))
        .await
        .unwrap();
    assert_eq!(got.range, Some((first, first + 19)));
    assert_eq!(got.info.size, data.len() as u64);
    let mut bytes = Vec::new();
    while let Some(chunk) = got.body.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(bytes, &data[first as usize..first as usize + 20]);
    let tail = read_all(&backend, "big.bin", Some(ByteRange::Suffix(7))).await;
    assert_eq!(tail, &data[data.len() - 7..]);
    let from = read_all(&backend, "big.bin", Some(ByteRange::From(20 * MIB as u64))).await;
    assert_eq!(from, &data[20 * MIB..]);
    let past = backend
        .get("big.bin", Some(ByteRange::From(data.len() as u64 + 5)))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&past), Some(Code::InvalidRange));
}

#[tokio::test]
async fn abort_leaves_no_object_no_upload_and_no_spool_file() {
    let (app, spool, backend) = setup("bkt").await;
    let mut up = backend.uploader("gone", Meta::default());
    write_chunked(&mut up, &pattern(12 * MIB, 1)).await;
    // Two parts sealed: the multipart upload exists in the backend, the object does not.
    assert_eq!(backend.list_multipart_uploads("").await.unwrap().len(), 1);
    assert!(backend.head("gone").await.unwrap_err().is_not_found());
    up.abort().await;
    assert!(backend.list_multipart_uploads("").await.unwrap().is_empty());
    let listed = app
        .req(reqwest::Method::GET, "/bkt")
        .query("uploads")
        .send()
        .await;
    listed.assert_status(200);
    assert!(
        xml_tags(&listed.text(), "UploadId").is_empty(),
        "{}",
        listed.text()
    );
    assert!(backend.head("gone").await.unwrap_err().is_not_found());
    assert!(spool_files(spool.path()).is_empty());
}

#[tokio::test]
async fn drop_without_finish_leaves_nothing() {
    let (_app, spool, backend) = setup("bkt").await;
    let mut up = backend.uploader("dropped", Meta::default());
    write_chunked(&mut up, &pattern(16 * MIB, 2)).await;
    assert_eq!(backend.list_multipart_uploads("").await.unwrap().len(), 1);
    drop(up);
    assert!(
        spool_files(spool.path()).is_empty(),
        "spool files outlive the drop"
    );
    let mut left = 1;
    for _ in 0..100 {
        left = backend.list_multipart_uploads("").await.unwrap().len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the dropped upload was not aborted");
    assert!(backend.head("dropped").await.unwrap_err().is_not_found());

    // A small body dropped unfinished never reached the backend at all.
    let mut up = backend.uploader("small", Meta::default());
    up.write(b"abc").await.unwrap();
    drop(up);
    assert!(spool_files(spool.path()).is_empty());
    assert!(backend.head("small").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn list_pages_with_delimiter_and_continuation() {
    let (app, _spool, backend) = setup("bkt").await;
    let keys = ["a/1", "a/2", "b/x y+z", "c", "d", "e é", "f"];
    for key in keys {
        app.put_object("bkt", key, key.as_bytes().to_vec()).await;
    }
    let mut request = ListRequest {
        delimiter: Some("/".into()),
        max_keys: Some(2),
        ..ListRequest::default()
    };
    let (mut objects, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = backend.list(&request).await.unwrap();
        pages += 1;
        assert!(page.objects.len() + page.common_prefixes.len() <= 2);
        objects.extend(page.objects);
        prefixes.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(token) => request.continuation_token = Some(token),
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(prefixes, ["a/", "b/"]);
    let names: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(names, ["c", "d", "e é", "f"]);
    assert_eq!(objects[0].size, 1);
    assert_eq!(objects[0].etag, format!("\"{}\"", md5_hex(b"c")));

    let page = backend
        .list(&ListRequest {
            prefix: Some("b/".into()),
            ..ListRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(page.objects[0].key, "b/x y+z");
    let page = backend
        .list(&ListRequest {
            start_after: Some("d".into()),
            ..ListRequest::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(names, ["e é", "f"]);
}

#[tokio::test]
async fn delete_one_and_many_and_copy_with_either_directive() {
    let (app, _spool, backend) = setup("bkt").await;
    let mut meta = Meta {
        content_type: Some("image/png".into()),
        ..Meta::default()
    };
    meta.user.insert("k".into(), "v".into());
    let mut up = backend.uploader("src/ä b", meta);
    up.write(b"pixels").await.unwrap();
    let src = up.finish().await.unwrap();

    let copied = backend
        .copy("src/ä b", None, "copy1", None, None)
        .await
        .unwrap();
    assert_eq!(copied.etag, src.etag);
    let info = backend.head("copy1").await.unwrap();
    assert_eq!(info.meta.content_type.as_deref(), Some("image/png"));
    assert_eq!(info.meta.user.get("k").map(String::as_str), Some("v"));

    let mut other = Meta {
        content_type: Some("text/plain".into()),
        ..Meta::default()
    };
    other.user.insert("new".into(), "1".into());
    backend
        .copy("src/ä b", None, "copy2", Some(&other), None)
        .await
        .unwrap();
    let info = backend.head("copy2").await.unwrap();
    assert_eq!(info.meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(info.meta.user.len(), 1);
    assert_eq!(info.meta.user.get("new").map(String::as_str), Some("1"));
    assert_eq!(read_all(&backend, "copy2", None).await, b"pixels");

    let missing = backend
        .copy("nope", None, "copy3", None, None)
        .await
        .unwrap_err();
    assert_eq!(code(&missing), Some(Code::NoSuchKey));

    backend.delete("copy1").await.unwrap();
    assert!(backend.head("copy1").await.unwrap_err().is_not_found());
    backend.delete("copy1").await.unwrap();
    let mut keys: Vec<String> = (0..1005).map(|i| format!("many/{i:04} <&>")).collect();
    for key in keys.iter().take(3) {
        app.put_object("bkt", key, b"x".to_vec()).await;
    }
    keys.push("copy2".into());
    keys.push("src/ä b".into());
    let failed = backend.delete_many(&keys).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    let page = backend.list(&ListRequest::default()).await.unwrap();
    assert!(page.objects.is_empty(), "{:?}", page.objects);
}

#[tokio::test]
async fn client_multipart_passes_through_with_streamed_parts() {
    let (_app, _spool, backend) = setup("bkt").await;
    let mut meta = Meta {
        content_type: Some("video/mp4".into()),
        ..Meta::default()
    };
    meta.user.insert("from".into(), "client".into());
    let id = backend.create_multipart("movie.mp4", &meta).await.unwrap();
    let one = pattern(5 * MIB, 11);
    let two = pattern(1000, 12);
    // Part 2 first: order of arrival does not matter.
    let stream_of = |data: Vec<u8>| {
        futures_util::stream::iter(
            data.chunks(64 * 1024)
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    };
    let etag2 = backend
        .upload_part(
            "movie.mp4",
            &id,
            2,
            stream_of(two.clone()),
            two.len() as u64,
            Some(&content_md5(&two)),
        )
        .await
        .unwrap();
    let etag1 = backend
        .upload_part(
            "movie.mp4",
            &id,
            1,
            stream_of(one.clone()),
            one.len() as u64,
            None,
        )
        .await
        .unwrap();
    assert_eq!(etag1, format!("\"{}\"", md5_hex(&one)));
    // A wrong Content-MD5 is the backend's refusal, typed.
    let bad = backend
        .upload_part(
            "movie.mp4",
            &id,
            3,
            stream_of(two.clone()),
            two.len() as u64,
            Some(&content_md5(b"other")),
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::S3 { status: 400, .. }), "{bad:?}");

    let page = backend.list_parts("movie.mp4", &id, None).await.unwrap();
    let numbers: Vec<(u32, u64)> = page.parts.iter().map(|p| (p.number, p.size)).collect();
    assert_eq!(numbers, [(1, one.len() as u64), (2, two.len() as u64)]);
    let page = backend.list_parts("movie.mp4", &id, Some(1)).await.unwrap();
    assert_eq!(page.parts.len(), 1);
    assert_eq!(page.parts[0].etag, etag2);

    let wrong = backend
        .complete_multipart(
            "movie.mp4",
            &id,
            &[CompletedPart {
                number: 1,
                etag: etag2.clone(),
            }],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&wrong), Some(Code::InvalidPart));
    backend.head("movie.mp4").await.unwrap_err();

    let parts = [
        CompletedPart {
            number: 2,
            etag: etag2.clone(),
        },
        CompletedPart {
            number: 1,
            etag: etag1.clone(),
        },
    ];
    let done = backend
        .complete_multipart("movie.mp4", &id, &parts, None)
        .await
        .unwrap();
    assert!(done.etag.ends_with("-2\""), "{}", done.etag);
    // The same Complete again (as a retry after a lost answer sends it): the upload is gone,
    // the key holds exactly these parts, so it is done.
    let again = backend
        .complete_multipart("movie.mp4", &id, &parts, None)
        .await
        .unwrap();
    assert_eq!(again.etag, done.etag);
    // Other parts for the gone upload: NoSuchUpload.
    let e = backend
        .complete_multipart(
            "movie.mp4",
            &id,
            &[CompletedPart {
                number: 1,
                etag: etag1.clone(),
            }],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::NoSuchUpload));
    assert_eq!(done.size, (one.len() + two.len()) as u64);
    let info = backend.head("movie.mp4").await.unwrap();
    assert_eq!(info.meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(
        info.meta.user.get("from").map(String::as_str),
        Some("client")
    );
    let mut whole = one.clone();
    whole.extend_from_slice(&two);
    assert_eq!(read_all(&backend, "movie.mp4", None).await, whole);

    // Abort, and what an unknown upload answers.
    let id = backend
        .create_multipart("x", &Meta::default())
        .await
        .unwrap();
    backend.abort_multipart("x", &id).await.unwrap();
    assert!(backend.list_multipart_uploads("").await.unwrap().is_empty());
    let e = backend.list_parts("x", &id, None).await.unwrap_err();
    assert_eq!(code(&e), Some(Code::NoSuchUpload));
}

#[tokio::test]
async fn errors_are_typed() {
    let (app, spool, backend) = setup("bkt").await;
    let e = backend.head("missing").await.unwrap_err();
    assert_eq!(code(&e), Some(Code::NoSuchKey));
    let e = backend.get("missing", None).await.err().unwrap();
    assert!(
        matches!(
            &e,
            Error::S3 {
                status: 404,
                code: Code::NoSuchKey,
                ..
            }
        ),
        "{e:?}"
    );
    let other = backend_at(&app.base, "no-such-bucket", spool.path(), |_| {});
    let e = other.get("k", None).await.err().unwrap();
    assert_eq!(code(&e), Some(Code::NoSuchBucket));
    // A key without a grant on the bucket.
    let creds = app.create_key("nobody").await;
    let stranger = Backend::new(
        &app.base,
        "bkt",
        REGION,
        &creds.ak,
        &creds.sk,
        Options {
            spool_dir: spool.path().to_owned(),
            ..Options::default()
        },
    )
    .unwrap();
    let e = stranger.get("k", None).await.err().unwrap();
    assert_eq!(code(&e), Some(Code::AccessDenied));
    let wrong = Backend::new(
        &app.base,
        "bkt",
        REGION,
        ADMIN_AK,
        "wrong-secret",
        Options::default(),
    )
    .unwrap();
    let e = wrong.list(&ListRequest::default()).await.unwrap_err();
    assert_eq!(code(&e), Some(Code::Other("SignatureDoesNotMatch".into())));
    // No server: a transport error, not an S3 one.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nothing = backend_at(
        &format!("http://127.0.0.1:{port}"),
        "bkt",
        spool.path(),
        |o| o.retries = 1,
    );
    let e = nothing.head("k").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(!e.to_string().contains("X-Amz-Signature"), "{e}");
}

#[tokio::test]
async fn busy_answers_are_retried_with_backoff_then_given_up() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    app.put_object("bkt", "k", b"value".to_vec()).await;
    let upstream: SocketAddr = app.host.parse().unwrap();
    let spool = tempfile::tempdir().unwrap();

    // Two SlowDowns, then the real answer: retried, and the caller sees the object.
    let proxy = Proxy::start(upstream, 2, 503).await;
    let backend = backend_at(&proxy.url(), "bkt", spool.path(), |_| {});
    let started = Instant::now();
    assert_eq!(read_all(&backend, "k", None).await, b"value");
    assert_eq!(proxy.requests.load(Ordering::SeqCst), 3);
    // 20 ms then 40 ms steps, each at least half.
    assert!(started.elapsed() >= Duration::from_millis(30));

    // A 500, then the rest: an Uploader's multipart upload goes through.
    let proxy = Proxy::start(upstream, 1, 500).await;
    let backend = backend_at(&proxy.url(), "bkt", spool.path(), |_| {});
    let data = pattern(11 * MIB, 5);
    let mut up = backend.uploader("retried", Meta::default());
    write_chunked(&mut up, &data).await;
    up.finish().await.unwrap();
    assert_eq!(read_all(&backend, "retried", None).await, data);

    // More failures than retries: the last answer's typed error.
    let proxy = Proxy::start(upstream, 10, 503).await;
    let backend = backend_at(&proxy.url(), "bkt", spool.path(), |o| o.retries = 2);
    let e = backend.head("k").await.unwrap_err();
    assert_eq!(code(&e), Some(Code::SlowDown));
    assert_eq!(
        proxy.requests.load(Ordering::SeqCst),
        3,
        "one try and two retries"
    );
    let e = backend.get("k", None).await.err().unwrap();
    assert_eq!(code(&e), Some(Code::SlowDown));

    // A caller's stream is sent once: never retried.
    let proxy = Proxy::start(upstream, 1, 503).await;
    let backend = backend_at(&proxy.url(), "bkt", spool.path(), |_| {});
    let direct = backend_at(&app.base, "bkt", spool.path(), |_| {});
    let id = direct
        .create_multipart("p", &Meta::default())
        .await
        .unwrap();
    let body =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let e = backend
        .upload_part("p", &id, 1, body, 3, None)
        .await
        .unwrap_err();
    assert!(
        e.code() == Some(&Code::SlowDown) || matches!(e, Error::Transport(_)),
        "{e:?}"
    );
    assert_eq!(proxy.requests.load(Ordering::SeqCst), 1);

    // Retries off: the first failure stands.
    let proxy = Proxy::start(upstream, 1, 503).await;
    let backend = backend_at(&proxy.url(), "bkt", spool.path(), |o| o.retries = 0);
    backend.head("k").await.unwrap_err();
    assert_eq!(proxy.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let spool = tempfile::tempdir().unwrap();
    let backend = backend_at(&format!("http://{addr}"), "bkt", spool.path(), |o| {
        o.idle_timeout = Duration::from_millis(300);
        o.retries = 1;
    });
    let started = Instant::now();
    let e = backend.head("k").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// The idle timeout follows the body: a part that keeps moving for longer than it is not cut,
/// one that stops is.
#[tokio::test]
async fn a_slow_body_is_cut_only_when_it_stops() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    let spool = tempfile::tempdir().unwrap();
    let backend = backend_at(&app.base, "bkt", spool.path(), |o| {
        o.idle_timeout = Duration::from_millis(400);
    });
    let id = backend
        .create_multipart("slow", &Meta::default())
        .await
        .unwrap();
    // 12 chunks, one every 100 ms: 1.2 s in all, three idle timeouts.
    let slow = futures_util::stream::unfold(0, |n| async move {
        if n == 12 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789")),
            n + 1,
        ))
    });
    let started = Instant::now();
    backend
        .upload_part("slow", &id, 1, slow, 120, None)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1200));

    // One chunk, then nothing.
    let stalled =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))])
            .chain(futures_util::stream::pending());
    let started = Instant::now();
    let e = backend
        .upload_part("slow", &id, 2, stalled, 100, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let parts = backend.list_parts("slow", &id, None).await.unwrap();
    assert_eq!(parts.parts.len(), 1, "the cut part is not stored");
}

#[tokio::test]
async fn virtual_host_addressing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    config.domain = Some("s3.test".to_owned());
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(postgate::serve(listener, state, async move {
        stop_rx.await.ok();
    }));
    let spool = tempfile::tempdir().unwrap();
    let path_style = backend_at(&format!("http://{addr}"), "vhb", spool.path(), |_| {});
    // The bucket, made path-style.
    let (base, host, http) = (
        format!("http://{addr}"),
        addr.to_string(),
        reqwest::Client::new(),
    );
    req_to(&base, &host, &http, reqwest::Method::PUT, "/vhb")
        .send()
        .await
        .assert_status(200);

    let backend = backend_at(
        &format!("http://s3.test:{}", addr.port()),
        "vhb",
        spool.path(),
        |o| {
            o.addressing = Addressing::VirtualHost;
            o.resolve = vec![("vhb.s3.test".to_owned(), addr)];
        },
    );
    let mut up = backend.uploader("a/b c", Meta::default());
    up.write(b"virtual").await.unwrap();
    up.finish().await.unwrap();
    assert_eq!(read_all(&backend, "a/b c", None).await, b"virtual");
    assert_eq!(
        backend
            .list(&ListRequest::default())
            .await
            .unwrap()
            .objects
            .len(),
        1
    );
    // The same object, path-style.
    assert_eq!(read_all(&path_style, "a/b c", None).await, b"virtual");
}

/// A 200 MiB body through an Uploader with 32 MiB parts, 4 in flight: memory stays flat
/// (parts held in RAM would be 128 MiB and more; they go from spool files), the local disk holds
/// at most 5 parts, the object reads back with the right size and ETag shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_keeps_memory_flat() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    let spool = tempfile::tempdir().unwrap();
    let backend = backend_at(&app.base, "bkt", spool.path(), |o| {
        o.part_size = 32 * MIB as u64
    });
    let chunk = pattern(MIB, 9);
    let before = rss_bytes();
    let (peak, sampler) = sample_peak_rss(0);
    let started = Instant::now();
    let mut up = backend.uploader("huge", Meta::default());
    let mut max_spooled = 0;
    for i in 0..200 {
        up.write(&chunk).await.unwrap();
        if i % 10 == 0 {
            max_spooled = max_spooled.max(spool_files(spool.path()).len());
        }
    }
    let done = up.finish().await.unwrap();
    let took = started.elapsed();
    sampler.abort();
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);
    println!(
        "200 MiB through the Uploader: {took:?}, RSS before {} MiB, peak growth {} MiB, at most {max_spooled} spool files",
        before / MIB,
        growth / MIB
    );
    assert_eq!(done.size, 200 * MIB as u64);
    assert!(done.etag.ends_with("-7\""), "{}", done.etag);
    assert!(growth < 64 * MIB, "RSS grew by {} MiB", growth / MIB);
    assert!(max_spooled <= 5, "{max_spooled} spool files at once");
    assert!(spool_files(spool.path()).is_empty());
    assert_eq!(backend.head("huge").await.unwrap().size, 200 * MIB as u64);
}

/// The process's peak RSS (from `start`), sampled every 20 ms until the task is aborted.
fn sample_peak_rss(start: usize) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicUsize::new(start));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    (peak, sampler)
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A TCP proxy to `upstream` whose first `fail` connections get `status` (503: SlowDown, 412:
/// PreconditionFailed, else InternalError) and are closed; it counts connections and the most open at once.
struct Proxy {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, fail: usize, status: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (r, m) = (requests.clone(), max_open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = r.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    if n < fail {
                        refuse(&mut client, status).await;
                    } else if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Proxy {
            addr,
            requests,
            max_open,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads a request's head and answers `status` with S3's error document, then closes.
async fn refuse(client: &mut TcpStream, status: u16) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (reason, code) = match status {
        503 => ("Slow Down", "SlowDown"),
        412 => ("Precondition Failed", "PreconditionFailed"),
        _ => ("Internal Server Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>try again</Message></Error>"
    );
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
    // Drain what the client still sends (a body), so that the close is not a reset that
    // could beat the answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// `data` as a caller's stream of 64 KiB chunks.
fn chunks_of(
    data: &[u8],
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::iter(
        data.chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    )
}

/// Part `number` as ListParts shows it: (ETag, size).
async fn listed_part(backend: &Backend, key: &str, id: &str, number: u32) -> Option<(String, u64)> {
    let page = backend.list_parts(key, id, None).await.unwrap();
    page.parts
        .into_iter()
        .find(|p| p.number == number)
        .map(|p| (p.etag, p.size))
}

/// ListParts keeps showing `expected` for part `number` for a while (a dropped part's request
/// has had time to end and would have replaced it by then).
async fn part_stays(
    backend: &Backend,
    key: &str,
    id: &str,
    number: u32,
    expected: &Option<(String, u64)>,
) {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(&listed_part(backend, key, id, number).await, expected);
    }
}

#[tokio::test]
async fn a_pending_part_is_stored_on_send_and_never_when_dropped() {
    let (_app, _spool, backend) = setup("bkt").await;
    let id = backend
        .create_multipart("k", &Meta::default())
        .await
        .unwrap();
    let earlier = pattern(300_000, 1);
    let etag = backend
        .upload_part("k", &id, 1, chunks_of(&earlier), earlier.len() as u64, None)
        .await
        .unwrap();
    let kept = Some((etag.clone(), earlier.len() as u64));
    let newer = pattern(MIB, 2);

    // Dropped after every byte but the held last chunk went out: the request's body fails,
    // the earlier part 1 stays.
    let mut part = backend.pending_part("k", &id, 1, newer.len() as u64, None);
    for chunk in newer.chunks(64 * 1024) {
        part.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    drop(part);
    part_stays(&backend, "k", &id, 1, &kept).await;

    // The same with abort (which waits for the request's end), and for a new number: nothing.
    let mut part = backend.pending_part("k", &id, 1, newer.len() as u64, None);
    for chunk in newer.chunks(100_000) {
        part.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    part.abort().await;
    assert_eq!(listed_part(&backend, "k", &id, 1).await, kept);
    let mut part = backend.pending_part("k", &id, 2, 10, None);
    part.write(bytes::Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    drop(part);
    part_stays(&backend, "k", &id, 2, &None).await;

    // A body shorter than declared is not sent; a longer one is refused at the write.
    let mut part = backend.pending_part("k", &id, 1, 10, None);
    part.write(bytes::Bytes::from_static(b"012345678"))
        .await
        .unwrap();
    assert!(matches!(part.send().await, Err(Error::Protocol(_))));
    let mut part = backend.pending_part("k", &id, 1, 4, None);
    assert!(matches!(
        part.write(bytes::Bytes::from_static(b"01234")).await,
        Err(Error::Protocol(_))
    ));
    drop(part);
    // A wrong Content-MD5: the backend's refusal, typed, and part 1 is still the earlier one.
    let mut part = backend.pending_part("k", &id, 1, 5, Some(&content_md5(b"other")));
    part.write(bytes::Bytes::from_static(b"01234"))
        .await
        .unwrap();
    let e = part.send().await.unwrap_err();
    assert!(matches!(e, Error::S3 { status: 400, .. }), "{e:?}");
    part_stays(&backend, "k", &id, 1, &kept).await;

    // Sent: ListParts shows the new part 1, and it completes into the object.
    let mut part =
        backend.pending_part("k", &id, 1, newer.len() as u64, Some(&content_md5(&newer)));
    for chunk in newer.chunks(70_000) {
        part.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let sent = part.send().await.unwrap();
    assert_eq!(sent, format!("\"{}\"", md5_hex(&newer)));
    assert_eq!(
        listed_part(&backend, "k", &id, 1).await,
        Some((sent.clone(), newer.len() as u64))
    );
    // An empty part is a part too.
    let empty = backend
        .pending_part("k", &id, 3, 0, None)
        .send()
        .await
        .unwrap();
    assert_eq!(empty, format!("\"{}\"", md5_hex(b"")));
    let parts = [CompletedPart {
        number: 1,
        etag: sent,
    }];
    backend
        .complete_multipart("k", &id, &parts, None)
        .await
        .unwrap();
    assert_eq!(read_all(&backend, "k", None).await, newer);

    // A part for an upload that is gone: the write or the send says NoSuchUpload.
    let mut part = backend.pending_part("k", &id, 1, 4 * MIB as u64, None);
    let mut failed = None;
    for chunk in pattern(4 * MIB, 3).chunks(64 * 1024) {
        if let Err(e) = part.write(bytes::Bytes::copy_from_slice(chunk)).await {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => e,
        None => part.send().await.unwrap_err(),
    };
    assert_eq!(code(&e), Some(Code::NoSuchUpload), "{e:?}");
}

/// A 64 MiB part written through a PendingPart in 1 MiB chunks: the writer waits for the
/// backend (a few chunks queued at most), so memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_pending_part_keeps_memory_flat() {
    let (_app, _spool, backend) = setup("bkt").await;
    let id = backend
        .create_multipart("big", &Meta::default())
        .await
        .unwrap();
    let chunk = pattern(MIB, 5);
    let before = rss_bytes();
    let (peak, sampler) = sample_peak_rss(before);
    let started = Instant::now();
    let mut part = backend.pending_part("big", &id, 1, 64 * MIB as u64, None);
    for _ in 0..64 {
        part.write(bytes::Bytes::copy_from_slice(&chunk))
            .await
            .unwrap();
    }
    let etag = part.send().await.unwrap();
    sampler.abort();
    let growth = peak.load(Ordering::SeqCst).saturating_sub(before);
    println!(
        "64 MiB through a PendingPart: {:?}, RSS peak growth {} MiB",
        started.elapsed(),
        growth / MIB
    );
    assert!(growth < 24 * MIB, "RSS grew by {} MiB", growth / MIB);
    assert_eq!(
        listed_part(&backend, "big", &id, 1).await,
        Some((etag, 64 * MIB as u64))
    );
}

#[tokio::test]
async fn upload_part_copy_copies_a_range_while_the_source_is_unchanged() {
    let (_app, _spool, backend) = setup("bkt").await;
    let data = pattern(6 * MIB, 7);
    let mut up = backend.uploader("src", Meta::default());
    write_chunked(&mut up, &data).await;
    let src = up.finish().await.unwrap();
    let id = backend
        .create_multipart("dst", &Meta::default())
        .await
        .unwrap();

    let first = backend
        .upload_part_copy(
            "src",
            Some(&src.etag),
            Some((0, 5 * MIB as u64 - 1)),
            "dst",
            &id,
            1,
        )
        .await
        .unwrap();
    assert_eq!(first, format!("\"{}\"", md5_hex(&data[..5 * MIB])));
    let second = backend
        .upload_part_copy(
            "src",
            None,
            Some((5 * MIB as u64, data.len() as u64 - 1)),
            "dst",
            &id,
            2,
        )
        .await
        .unwrap();
    assert_eq!(second, format!("\"{}\"", md5_hex(&data[5 * MIB..])));
    // The source no longer the version named: refused, part 3 not made.
    let e = backend
        .upload_part_copy(
            "src",
            Some("\"0123456789abcdef0123456789abcdef\""),
            None,
            "dst",
            &id,
            3,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::S3 {
                status: 412,
                code: Code::PreconditionFailed,
                ..
            }
        ),
        "{e:?}"
    );
    let e = backend
        .upload_part_copy("missing", None, None, "dst", &id, 3)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(Code::NoSuchKey));
    assert_eq!(listed_part(&backend, "dst", &id, 3).await, None);
    // Whole, without a range.
    let whole = backend
        .upload_part_copy("src", Some(&src.etag), None, "dst", &id, 4)
        .await
        .unwrap();
    assert_eq!(whole, format!("\"{}\"", md5_hex(&data)));

    let parts = [
        CompletedPart {
            number: 1,
            etag: first,
        },
        CompletedPart {
            number: 2,
            etag: second,
        },
    ];
    backend
        .complete_multipart("dst", &id, &parts, None)
        .await
        .unwrap();
    assert_eq!(read_all(&backend, "dst", None).await, data);
}

#[tokio::test]
async fn conditional_copy_and_complete_are_refused_typed() {
    let (app, _spool, backend) = setup("bkt").await;
    let mut up = backend.uploader("src", Meta::default());
    up.write(b"version one").await.unwrap();
    let v1 = up.finish().await.unwrap();
    let mut up = backend.uploader("src", Meta::default());
    up.write(b"version two").await.unwrap();
    let v2 = up.finish().await.unwrap();

    // CopyObject naming the source's ETag, with REPLACE: a stale ETag is refused, nothing
    // written; the current one copies with the new metadata.
    let meta = Meta {
        content_type: Some("text/x-two".into()),
        ..Meta::default()
    };
    let e = backend
        .copy("src", Some(&v1.etag), "dst", Some(&meta), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::S3 {
                status: 412,
                code: Code::PreconditionFailed,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(backend.head("dst").await.unwrap_err().is_not_found());
    let copied = backend
        .copy("src", Some(&v2.etag), "dst", Some(&meta), None)
        .await
        .unwrap();
    assert_eq!(copied.etag, v2.etag);
    let info = backend.head("dst").await.unwrap();
    assert_eq!(info.meta.content_type.as_deref(), Some("text/x-two"));

    // CompleteMultipartUpload with If-None-Match: * on a taken key, and If-Match on a stale
    // ETag: refused, the upload stays and completes with the right condition.
    let id = backend
        .create_multipart("src", &Meta::default())
        .await
        .unwrap();
    let etag = backend
        .upload_part("src", &id, 1, chunks_of(b"three"), 5, None)
        .await
        .unwrap();
    let parts = [CompletedPart { number: 1, etag }];
    for condition in [WriteIf::Absent, WriteIf::Matches(v1.etag.clone())] {
        let e = backend
            .complete_multipart("src", &id, &parts, Some(&condition))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &e,
                Error::S3 {
                    status: 412,
                    code: Code::PreconditionFailed,
                    ..
                }
            ),
            "{condition:?}: {e:?}"
        );
        assert_eq!(read_all(&backend, "src", None).await, b"version two");
        assert_eq!(
            backend
                .list_parts("src", &id, None)
                .await
                .unwrap()
                .parts
                .len(),
            1
        );
    }
    let done = backend
        .complete_multipart("src", &id, &parts, Some(&WriteIf::Matches(v2.etag.clone())))
        .await
        .unwrap();
    assert_eq!(read_all(&backend, "src", None).await, b"three");
    // Its retry after a lost answer finds the key taken by itself: done, not refused.
    let again = backend
        .complete_multipart("src", &id, &parts, Some(&WriteIf::Matches(v2.etag.clone())))
        .await
        .unwrap();
    assert_eq!(again.etag, done.etag);

    // A conditional Complete whose answer was lost and whose retry is refused with 412 (the
    // key is taken, by this very upload): the upload is gone and the key holds its parts, so
    // it is done.
    let id = backend
        .create_multipart("lost", &Meta::default())
        .await
        .unwrap();
    let etag = backend
        .upload_part("lost", &id, 1, chunks_of(b"lost answer"), 11, None)
        .await
        .unwrap();
    let parts = [CompletedPart { number: 1, etag }];
    let done = backend
        .complete_multipart("lost", &id, &parts, Some(&WriteIf::Absent))
        .await
        .unwrap();
    let proxy = Proxy::start(app.host.parse().unwrap(), 1, 412).await;
    let spool = tempfile::tempdir().unwrap();
    let via_proxy = backend_at(&proxy.url(), "bkt", spool.path(), |_| {});
    let again = via_proxy
        .complete_multipart("lost", &id, &parts, Some(&WriteIf::Absent))
        .await
        .unwrap();
    assert_eq!(again.etag, done.etag);

    // A create-only Complete onto a free key.
    let id = backend
        .create_multipart("fresh", &Meta::default())
        .await
        .unwrap();
    let etag = backend
        .upload_part("fresh", &id, 1, chunks_of(b"new"), 3, None)
        .await
        .unwrap();
    let parts = [CompletedPart { number: 1, etag }];
    let done = backend
        .complete_multipart("fresh", &id, &parts, Some(&WriteIf::Absent))
        .await
        .unwrap();
    let again = backend
        .complete_multipart("fresh", &id, &parts, Some(&WriteIf::Absent))
        .await
        .unwrap();
    assert_eq!(again.etag, done.etag);
}

#[tokio::test]
async fn multipart_uploads_are_listed_with_their_initiation_time() {
    let (_app, _spool, backend) = setup("bkt").await;
    let before = std::time::SystemTime::now() - Duration::from_secs(2);
    let a = backend
        .create_multipart("a/1", &Meta::default())
        .await
        .unwrap();
    let b = backend
        .create_multipart("b/2", &Meta::default())
        .await
        .unwrap();
    let after = std::time::SystemTime::now() + Duration::from_secs(2);
    let all = backend.list_multipart_uploads("").await.unwrap();
    let ids: Vec<(&str, &str)> = all
        .iter()
        .map(|u| (u.key.as_str(), u.upload_id.as_str()))
        .collect();
    assert_eq!(ids, [("a/1", a.as_str()), ("b/2", b.as_str())]);
    for upload in &all {
        let initiated = upload.initiated.expect("an Initiated time");
        assert!(initiated > before && initiated < after, "{upload:?}");
    }
    let under_b = backend.list_multipart_uploads("b/").await.unwrap();
    assert_eq!(under_b.len(), 1);
    assert_eq!(under_b[0].upload_id, b);
}

/// Requests signed as the client signs them, for what the client has no call for (a
/// conditional PutObject or DeleteObject) against a real cluster.
struct Raw {
    endpoint: String,
    bucket: String,
    ak: String,
    sk: String,
}

impl Raw {
    /// `(status, S3 error code or "")`.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> (u16, String) {
        let signed_method = match method {
            reqwest::Method::PUT => rusty_s3::Method::Put,
            reqwest::Method::DELETE => rusty_s3::Method::Delete,
            _ => rusty_s3::Method::Get,
        };
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            signed_method,
            format!("{}/{}/{key}", self.endpoint, self.bucket)
                .parse()
                .unwrap(),
            &self.ak,
            &self.sk,
            None,
            REGION,
            600,
            std::iter::empty(),
            std::iter::empty(),
        );
        let mut request = reqwest::Client::new().request(method, url).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| code.to_owned())
            .unwrap_or_default();
        (status, code)
    }
}

/// The same client against a real cluster, by hand (docs/cluster.md, "Client against RGW"):
/// `tests/ceph/cluster.sh start DIR`, then
/// `set -a; . DIR/env; set +a; cargo nextest run --test api s3backend::against_a_real_cluster --run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running cluster: CEPH_RGW_ENDPOINT, CEPH_RGW_ACCESS_KEY, CEPH_RGW_SECRET_KEY"]
async fn against_a_real_cluster() {
    let var = |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (endpoint, ak, sk) = (
        var("CEPH_RGW_ENDPOINT"),
        var("CEPH_RGW_ACCESS_KEY"),
        var("CEPH_RGW_SECRET_KEY"),
    );
    let bucket = format!("s3client-{}", std::process::id());
    // The bucket, with a request signed like the backend's.
    let url = rusty_s3::signing::sign(
        &jiff::Timestamp::now(),
        rusty_s3::Method::Put,
        format!("{endpoint}/{bucket}").parse().unwrap(),
        &ak,
        &sk,
        None,
        REGION,
        600,
        std::iter::empty(),
        std::iter::empty(),
    );
    let made = reqwest::Client::new().put(url).send().await.unwrap();
    assert!(made.status().is_success(), "{:?}", made.text().await);
    let spool = tempfile::tempdir().unwrap();
    let options = Options {
        part_size: 5 * MIB as u64,
        spool_dir: spool.path().to_owned(),
        ..Options::default()
    };
    let backend = Backend::new(&endpoint, &bucket, REGION, &ak, &sk, options).unwrap();

    // Small, with metadata and a checksum.
    let mut meta = Meta {
        content_type: Some("text/plain".into()),
        content_disposition: Some("inline".into()),
        cache_control: Some("no-cache".into()),
        checksum: Some((
            "crc32".into(),
            checksum(postgate::auth::checksum::ChecksumAlgorithm::Crc32, b"hello"),
        )),
        ..Meta::default()
    };
    meta.user.insert("colour".into(), "blue".into());
    let mut up = backend.uploader("dir/small file", meta.clone());
    up.write(b"hello").await.unwrap();
    let done = up.finish().await.unwrap();
    println!("small: {done:?}");
    let info = backend.head("dir/small file").await.unwrap();
    println!("small head: {info:?}");
    assert_eq!(info.meta.user, meta.user);
    assert_eq!(info.meta.content_type, meta.content_type);
    assert_eq!(read_all(&backend, "dir/small file", None).await, b"hello");

    // 20 MiB: multipart, Complete's ETag.
    let data = pattern(20 * MIB + 5, 1);
    let mut up = backend.uploader("big", Meta::default());
    write_chunked(&mut up, &data).await;
    backend.head("big").await.unwrap_err();
    let done = up.finish().await.unwrap();
    println!("20 MiB: {done:?}");
    assert!(done.etag.ends_with("-5\""), "{}", done.etag);
    assert_eq!(done.size, data.len() as u64);
    assert_eq!(read_all(&backend, "big", None).await, data);
    let part = read_all(&backend, "big", Some(ByteRange::Inclusive(10, 29))).await;
    assert_eq!(part, &data[10..30]);

    // Listing.
    for key in ["a/1", "a/2", "b c+d", "é"] {
        let mut up = backend.uploader(key, Meta::default());
        up.write(key.as_bytes()).await.unwrap();
        up.finish().await.unwrap();
    }
    let mut request = ListRequest {
        delimiter: Some("/".into()),
        max_keys: Some(2),
        ..ListRequest::default()
    };
    let (mut keys, mut prefixes) = (Vec::new(), Vec::new());
    loop {
        let page = backend.list(&request).await.unwrap();
        keys.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_continuation_token {
            Some(token) => request.continuation_token = Some(token),
            None => break,
        }
    }
    assert_eq!(prefixes, ["a/", "dir/"]);
    assert_eq!(keys, ["b c+d", "big", "é"]);

    // Copy, both directives.
    backend
        .copy("dir/small file", None, "copied", None, None)
        .await
        .unwrap();
    assert_eq!(backend.head("copied").await.unwrap().meta.user, meta.user);
    let replaced = Meta {
        content_type: Some("image/png".into()),
        ..Meta::default()
    };
    backend
        .copy("dir/small file", None, "copied2", Some(&replaced), None)
        .await
        .unwrap();
    let info = backend.head("copied2").await.unwrap();
    assert!(info.meta.user.is_empty(), "{info:?}");
    assert_eq!(info.meta.content_type.as_deref(), Some("image/png"));

    // Client multipart passthrough.
    let id = backend.create_multipart("mp", &meta).await.unwrap();
    let one = pattern(5 * MIB, 2);
    let stream = futures_util::stream::iter(
        one.chunks(65536)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let etag1 = backend
        .upload_part("mp", &id, 1, stream, one.len() as u64, None)
        .await
        .unwrap();
    let two =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"tail"))]);
    let etag2 = backend
        .upload_part("mp", &id, 2, two, 4, None)
        .await
        .unwrap();
    let parts = backend.list_parts("mp", &id, None).await.unwrap();
    assert_eq!(parts.parts.len(), 2);
    let e = backend
        .complete_multipart(
            "mp",
            &id,
            &[CompletedPart {
                number: 1,
                etag: etag2.clone(),
            }],
            None,
        )
        .await
        .unwrap_err();
    println!("wrong part: {e:?}");
    let done = backend
        .complete_multipart(
            "mp",
            &id,
            &[
                CompletedPart {
                    number: 1,
                    etag: etag1.clone(),
                },
                CompletedPart {
                    number: 2,
                    etag: etag2.clone(),
                },
            ],
            None,
        )
        .await
        .unwrap();
    println!("passthrough: {done:?}");
    let again = backend
        .complete_multipart(
            "mp",
            &id,
            &[
                CompletedPart {
                    number: 1,
                    etag: etag1,
                },
                CompletedPart {
                    number: 2,
                    etag: etag2,
                },
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        again.etag, done.etag,
        "a repeated Complete is recognised as done"
    );
    assert_eq!(done.size, one.len() as u64 + 4);

    // Abort and drop leave no upload.
    let mut up = backend.uploader("aborted", Meta::default());
    write_chunked(&mut up, &pattern(11 * MIB, 3)).await;
    assert_eq!(backend.list_multipart_uploads("").await.unwrap().len(), 1);
    up.abort().await;
    assert!(backend.list_multipart_uploads("").await.unwrap().is_empty());
    let mut up = backend.uploader("dropped", Meta::default());
    write_chunked(&mut up, &pattern(11 * MIB, 4)).await;
    drop(up);
    let mut left = 1;
    for _ in 0..100 {
        left = backend.list_multipart_uploads("").await.unwrap().len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0);
    assert!(backend.head("aborted").await.unwrap_err().is_not_found());
    assert!(backend.head("dropped").await.unwrap_err().is_not_found());

    // Typed errors.
    let e = backend.get("missing", None).await.err().unwrap();
    assert_eq!(code(&e), Some(Code::NoSuchKey));
    let bogus = "2~no-such-upload";
    let e = backend.list_parts("mp", bogus, None).await.unwrap_err();
    println!("list_parts of an unknown upload: {e:?}");
    let e2 = backend.abort_multipart("mp", bogus).await.unwrap_err();
    println!("abort of an unknown upload: {e2:?}");
    let one =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]);
    let e3 = backend
        .upload_part("mp", bogus, 1, one, 1, None)
        .await
        .unwrap_err();
    println!("upload_part to an unknown upload: {e3:?}");
    let e4 = backend
        .complete_multipart(
            "mp",
            bogus,
            &[CompletedPart {
                number: 1,
                etag: "\"x\"".into(),
            }],
            None,
        )
        .await
        .unwrap_err();
    println!("complete of an unknown upload: {e4:?}");
    for e in [e, e2, e3, e4] {
        assert_eq!(code(&e), Some(Code::NoSuchUpload), "{e:?}");
    }

    // What docs/cluster.md section 8's table records (the wiring of section 9 rests on it).
    let raw = Raw {
        endpoint: endpoint.clone(),
        bucket: bucket.clone(),
        ak: ak.clone(),
        sk: sk.clone(),
    };
    // (a) An UploadPart whose body fails before its Content-Length (a PendingPart dropped with
    // its last chunk held): nothing stored, the earlier part of that number stays.
    let id = backend
        .create_multipart("pending", &Meta::default())
        .await
        .unwrap();
    let earlier = pattern(5 * MIB, 21);
    let etag = backend
        .upload_part(
            "pending",
            &id,
            1,
            chunks_of(&earlier),
            earlier.len() as u64,
            None,
        )
        .await
        .unwrap();
    let kept = Some((etag.clone(), earlier.len() as u64));
    let newer = pattern(5 * MIB + 7, 22);
    let mut part = backend.pending_part("pending", &id, 1, newer.len() as u64, None);
    for chunk in newer.chunks(64 * 1024) {
        part.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    drop(part);
    part_stays(&backend, "pending", &id, 1, &kept).await;
    let mut part = backend.pending_part("pending", &id, 2, newer.len() as u64, None);
    for chunk in newer.chunks(100_000) {
        part.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    part.abort().await;
    part_stays(&backend, "pending", &id, 2, &None).await;
    let mut part = backend.pending_part("pending", &id, 2, newer.len() as u64, None);
    for chunk in newer.chunks(100_000) {
        part.write(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let sent = part.send().await.unwrap();
    assert_eq!(sent, format!("\"{}\"", md5_hex(&newer)));
    assert_eq!(
        listed_part(&backend, "pending", &id, 2).await,
        Some((sent.clone(), newer.len() as u64))
    );
    println!("(a) a dropped or aborted PendingPart stored nothing; the earlier part 1 stayed");

    // (c) UploadPartCopy: a range and the whole source, the source's ETag named.
    let source = pattern(6 * MIB, 23);
    let mut up = backend.uploader("copy-src", Meta::default());
    write_chunked(&mut up, &source).await;
    let src = up.finish().await.unwrap();
    let ranged = backend
        .upload_part_copy(
            "copy-src",
            Some(&src.etag),
            Some((0, 5 * MIB as u64 - 1)),
            "pending",
            &id,
            3,
        )
        .await
        .unwrap();
    let whole = backend
        .upload_part_copy("copy-src", Some(&src.etag), None, "pending", &id, 4)
        .await
        .unwrap();
    println!(
        "(c) UploadPartCopy ETags: range {ranged} (MD5 of the range {}), whole {whole} (source's {}, MD5 {})",
        md5_hex(&source[..5 * MIB]),
        src.etag,
        md5_hex(&source)
    );
    assert_eq!(ranged, format!("\"{}\"", md5_hex(&source[..5 * MIB])));
    assert_eq!(whole, format!("\"{}\"", md5_hex(&source)));
    // (b) x-amz-copy-source-if-match on UploadPartCopy and CopyObject, a stale ETag.
    let stale = "\"0123456789abcdef0123456789abcdef\"";
    let upc = backend
        .upload_part_copy("copy-src", Some(stale), None, "pending", &id, 5)
        .await;
    println!(
        "(b) UploadPartCopy, stale x-amz-copy-source-if-match: {upc:?}, part 5 listed: {:?}",
        listed_part(&backend, "pending", &id, 5).await
    );
    assert!(
        matches!(&upc, Err(e) if e.code() == Some(&Code::PreconditionFailed)),
        "{upc:?}"
    );
    // A Complete naming some of the uploaded parts (AWS takes it).
    let subset = [
        CompletedPart {
            number: 2,
            etag: sent.clone(),
        },
        CompletedPart {
            number: 3,
            etag: ranged.clone(),
        },
    ];
    let e = backend
        .complete_multipart("pending", &id, &subset, None)
        .await
        .map(|f| f.etag);
    println!("    Complete naming 2 of the 5 uploaded parts: {e:?}");
    let listed = backend
        .list_parts("pending", &id, None)
        .await
        .unwrap()
        .parts;
    let parts: Vec<CompletedPart> = listed
        .iter()
        .map(|p| CompletedPart {
            number: p.number,
            etag: p.etag.clone(),
        })
        .collect();
    let done = backend
        .complete_multipart("pending", &id, &parts, None)
        .await
        .unwrap();
    assert_eq!(done.size, listed.iter().map(|p| p.size).sum::<u64>());
    let at = earlier.len() as u64;
    let got = read_all(
        &backend,
        "pending",
        Some(ByteRange::Inclusive(
            at,
            at + (newer.len() + 5 * MIB) as u64 - 1,
        )),
    )
    .await;
    let mut expected = newer.clone();
    expected.extend_from_slice(&source[..5 * MIB]);
    assert!(got == expected, "parts 2 and 3 read back");
    println!("    completed from all 5 parts (a sent PendingPart, copied ranges): {done:?}");

    let co = backend
        .copy("copy-src", Some(stale), "copy-dst", None, None)
        .await;
    assert!(
        matches!(&co, Err(e) if e.code() == Some(&Code::PreconditionFailed)),
        "{co:?}"
    );
    assert!(backend.head("copy-dst").await.unwrap_err().is_not_found());
    println!(
        "(b) CopyObject, stale x-amz-copy-source-if-match: {co:?}; destination: {:?}",
        backend.head("copy-dst").await.map(|i| i.etag)
    );
    let replaced = Meta {
        content_type: Some("text/x-replaced".into()),
        ..Meta::default()
    };
    let co = backend
        .copy(
            "copy-src",
            Some(&src.etag),
            "copy-dst",
            Some(&replaced),
            None,
        )
        .await;
    println!(
        "    CopyObject, current ETag, REPLACE: {co:?}, type {:?}",
        backend.head("copy-dst").await.map(|i| i.meta.content_type)
    );
    let co = backend
        .copy(
            "dir/small file",
            None,
            "copy-dst",
            None,
            Some(&WriteIf::Absent),
        )
        .await;
    println!(
        "(b) CopyObject, If-None-Match: * onto a taken key: {co:?}; destination size now {:?}",
        backend.head("copy-dst").await.map(|i| i.size)
    );
    let co = backend
        .copy(
            "dir/small file",
            None,
            "copy-dst2",
            None,
            Some(&WriteIf::Matches(stale.into())),
        )
        .await;
    println!("(b) CopyObject, If-Match onto a missing key: {co:?}");

    // (b) If-None-Match / If-Match on PutObject and DeleteObject (raw requests: the client's own
    // conditional PutObject/DeleteObject are the wiring's).
    let put = raw
        .send(
            reqwest::Method::PUT,
            "copy-src",
            &[("if-none-match", "*")],
            b"x",
        )
        .await;
    println!("(b) PutObject, If-None-Match: * onto a taken key: {put:?}");
    let put = raw
        .send(
            reqwest::Method::PUT,
            "cond-new",
            &[("if-none-match", "*")],
            b"x",
        )
        .await;
    println!("    PutObject, If-None-Match: * onto a free key: {put:?}");
    let put = raw
        .send(
            reqwest::Method::PUT,
            "copy-src",
            &[("if-match", stale.trim_matches('"'))],
            b"x",
        )
        .await;
    println!("(b) PutObject, If-Match stale: {put:?}");
    let del = raw
        .send(
            reqwest::Method::DELETE,
            "copy-src",
            &[("if-match", stale.trim_matches('"'))],
            b"",
        )
        .await;
    println!(
        "(b) DeleteObject, If-Match stale: {del:?}; object still there: {}",
        backend.head("copy-src").await.is_ok()
    );
    let current = backend
        .head("copy-src")
        .await
        .map(|i| i.etag)
        .unwrap_or_default();
    let del = raw
        .send(
            reqwest::Method::DELETE,
            "copy-src",
            &[("if-match", current.trim_matches('"'))],
            b"",
        )
        .await;
    println!(
        "    DeleteObject, If-Match current: {del:?}; object still there: {}",
        backend.head("copy-src").await.is_ok()
    );
    // (b) Complete with If-None-Match: * onto a taken key, and If-Match stale.
    for condition in [WriteIf::Absent, WriteIf::Matches(stale.into())] {
        let id = backend
            .create_multipart("dir/small file", &Meta::default())
            .await
            .unwrap();
        let etag = backend
            .upload_part("dir/small file", &id, 1, chunks_of(b"completed"), 9, None)
            .await
            .unwrap();
        let e = backend
            .complete_multipart(
                "dir/small file",
                &id,
                &[CompletedPart { number: 1, etag }],
                Some(&condition),
            )
            .await;
        println!(
            "(b) CompleteMultipartUpload, {condition:?} on a taken key: {:?}; body now {:?}",
            e.map(|f| f.etag),
            String::from_utf8_lossy(&read_all(&backend, "dir/small file", None).await)
        );
        let _ = backend.abort_multipart("dir/small file", &id).await;
    }

    // (d) User metadata: postgate's reserved names (~300 bytes) plus a client's up to 2 KiB in
    // all, then the largest single value RGW takes.
    let mut meta = Meta::default();
    for (name, len) in [
        ("owner", 64),
        ("acl", 20),
        ("detected-type", 40),
        ("checksum", 60),
        ("write", 36),
        ("slot", 36),
    ] {
        meta.user
            .insert(format!("postgate-{name}"), "o".repeat(len));
    }
    let reserved: usize = meta
        .user
        .iter()
        .map(|(k, v)| "x-amz-meta-".len() + k.len() + v.len())
        .sum();
    meta.user.insert(
        "client".into(),
        "c".repeat(2048 - reserved - "x-amz-meta-client".len()),
    );
    let total: usize = meta.user.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut up = backend.uploader("meta", meta.clone());
    up.write(b"m").await.unwrap();
    up.finish().await.unwrap();
    assert_eq!(backend.head("meta").await.unwrap().meta.user, meta.user);
    println!(
        "(d) reserved names {reserved} bytes + a client's up to 2 KiB ({total} bytes of names and values): stored and read back"
    );
    let fits = |len: usize| {
        let backend = backend.clone();
        async move {
            let mut meta = Meta::default();
            meta.user.insert("big".into(), "v".repeat(len));
            let mut up = backend.uploader("meta-big", meta.clone());
            up.write(b"m").await.unwrap();
            match up.finish().await {
                Ok(_) => Ok(backend.head("meta-big").await.unwrap().meta.user == meta.user),
                Err(e) => Err(e),
            }
        }
    };
    let (mut ok, mut bad) = (2048, 1 << 20);
    while bad - ok > 16 {
        let mid = (ok + bad) / 2;
        match fits(mid).await {
            Ok(true) => ok = mid,
            other => {
                println!("    one value of {mid} bytes: {other:?}");
                bad = mid;
            }
        }
    }
    println!("(d) the largest single x-amz-meta value RGW took: {ok} bytes (refused at {bad})");
    // And in all: n values of 8000 bytes each.
    for n in [2, 4, 8, 16] {
        let mut meta = Meta::default();
        for i in 0..n {
            meta.user.insert(format!("v{i}"), "v".repeat(8000));
        }
        let mut up = backend.uploader("meta-many", meta.clone());
        up.write(b"m").await.unwrap();
        let stored = match up.finish().await {
            Ok(_) => Ok(backend.head("meta-many").await.unwrap().meta.user == meta.user),
            Err(e) => Err(e),
        };
        println!(
            "(d) {n} values of 8000 bytes ({} in all): {stored:?}",
            n * 8000
        );
    }

    // 200 MiB, memory.
    let before = rss_bytes();
    let (peak, sampler) = sample_peak_rss(before);
    let started = Instant::now();
    let chunk = pattern(MIB, 9);
    let mut up = backend.uploader("huge", Meta::default());
    for _ in 0..200 {
        up.write(&chunk).await.unwrap();
    }
    let done = up.finish().await.unwrap();
    sampler.abort();
    println!(
        "200 MiB to RGW: {:?}, {done:?}, RSS peak growth {} MiB",
        started.elapsed(),
        peak.load(Ordering::SeqCst).saturating_sub(before) / MIB
    );

    // Clean up.
    let mut all = Vec::new();
    let mut request = ListRequest::default();
    loop {
        let page = backend.list(&request).await.unwrap();
        all.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_continuation_token {
            Some(token) => request.continuation_token = Some(token),
            None => break,
        }
    }
    let failed = backend.delete_many(&all).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        backend
            .list(&ListRequest::default())
            .await
            .unwrap()
            .objects
            .is_empty()
    );
}

/// A key with a `.` or `..` segment is never sent: its URL would be resolved to another key, or
/// to another bucket of the cluster (`data/../../other/x` is the path `/other/x`). Writes are
/// refused, reads and deletes find nothing, and the other bucket is untouched.
#[tokio::test]
async fn a_key_with_dot_segments_never_leaves_its_bucket() {
    let (app, _spool, backend) = setup("bkt").await;
    app.create_bucket("other").await;
    for key in ["data/../../other/x", "../other/x", "a/./b", "a/..", "."] {
        let put = backend
            .put_bytes(key, &Meta::default(), bytes::Bytes::from_static(b"x"), None)
            .await;
        assert!(
            matches!(put, Err(postgate::storage::s3::Error::Unaddressable(_))),
            "{key}: {put:?}"
        );
        assert!(backend.head(key).await.unwrap_err().is_not_found(), "{key}");
        assert!(
            backend.delete(key).await.unwrap_err().is_not_found(),
            "{key}"
        );
    }
    // Names that only look like paths are sent as they are.
    for key in ["a..b/c", "...", "a/.hidden", "a\\..\\b"] {
        backend
            .put_bytes(key, &Meta::default(), bytes::Bytes::from_static(b"y"), None)
            .await
            .unwrap();
        assert_eq!(read_all(&backend, key, None).await, b"y", "{key}");
    }
    let other = app.req(reqwest::Method::GET, "/other").send().await;
    assert!(!other.text().contains("<Key>"), "{}", other.text());
    let bkt = app.req(reqwest::Method::GET, "/bkt").send().await;
    assert_eq!(xml_tags(&bkt.text(), "Key").len(), 4, "{}", bkt.text());
}
