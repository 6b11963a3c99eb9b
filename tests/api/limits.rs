//! Bounded cost per request: `Connection: close` whenever the connection will be closed, the cap
//! on form data before the file, the body idle timeout, the connection limit and the shutdown bound.
//! Raw TCP clients, so that what the server reads and when it closes can be seen.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::Ordering::Relaxed;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::helpers::*;

/// A server with its limits set by the test.
struct Server {
    base: String,
    host: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    state: postgate::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn server(set: impl FnOnce(&mut postgate::config::Limits)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    set(&mut config.limits);
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    state
        .db
        .write(|c| postgate::db::buckets::create(c, "open", ADMIN_AK, "public-read-write"))
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(postgate::serve(listener, state.clone(), async move {
        stop_rx.await.ok();
    }));
    Server {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        http: reqwest::Client::new(),
        dir,
        state,
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn req(&self, method: Method, path: &str) -> Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.host).await.unwrap()
    }

    async fn assert_no_object(&self, key: &str) {
        let res = self.req(Method::GET, &obj("open", key)).send().await;
        res.assert_error(404, "NoSuchKey");
    }
}

/// Reads one HTTP/1.1 response (status line, headers, `Content-Length` body) off `stream`.
/// A reset after the whole response has arrived does not matter.
async fn read_response(stream: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(resp) = parse_response(&buf) {
            return resp;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => panic!(
                "connection ended before a whole response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn parse_response(buf: &[u8]) -> Option<Resp> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(n.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(v.trim()).unwrap(),
        );
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    (buf.len() >= end + len).then(|| Resp {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(&buf[end..end + len]),
    })
}

fn says_close(res: &Resp) -> bool {
    res.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Whether the server closed `stream` (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

// ---------------------------------------------------------------------------------------------
// Connection: close
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_error_before_the_body_is_read_says_connection_close() {
    let app = server(|_| {}).await;
    app.req(Method::PUT, "/private")
        .send()
        .await
        .assert_status(200);
    let p = app
        .req(Method::PUT, &obj("private", "k"))
        .anonymous()
        .prepare();
    let mut stream = app.connect().await;
    // The server refuses at the headers and never reads the 200 KB body.
    stream.write_all(&p.head_bytes(200_000)).await.unwrap();
    stream.write_all(&[b'x'; 1000]).await.unwrap();
    let res = read_response(&mut stream).await;
    res.assert_error(403, "AccessDenied");
    assert!(says_close(&res), "no Connection: close: {:?}", res.headers);
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_fully_read_body_keeps_the_connection_for_the_next_request() {
    let app = server(|_| {}).await;
    let mut stream = app.connect().await;
    let body = pattern(100_000, 1);
    let p = app
        .req(Method::PUT, &obj("open", "k"))
        .body(body.clone())
        .prepare();
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let res = read_response(&mut stream).await;
    res.assert_status(200);
    assert!(!says_close(&res));

    // An error found after the whole body was read keeps it too.
    let p = app
        .req(Method::PUT, &obj("open", "k2"))
        .header("content-md5", &content_md5(b"other"))
        .body(body.clone())
        .prepare();
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let res = read_response(&mut stream).await;
    res.assert_error(400, "BadDigest");
    assert!(!says_close(&res));

    let p = app.req(Method::GET, &obj("open", "k")).prepare();
    stream.write_all(&p.head_bytes(0)).await.unwrap();
    let res = read_response(&mut stream).await;
    res.assert_status(200);
    assert_eq!(&res.body[..], &body[..]);
}

// ---------------------------------------------------------------------------------------------
// Form data before the file
// ---------------------------------------------------------------------------------------------

const BOUNDARY: &str = "limitsboundary";

/// What a client can have written when the server stops reading after about 21 KiB: hyper's
/// read-ahead (16 KiB) plus the kernel's socket buffers on both ends, with room to spare. The server
/// used to read such forms to tens of MiB before answering.
const MAX_SENT: usize = 4 << 20;

/// Posts an anonymous form to `open` whose body is `head` followed by `unit` repeated without end
/// (the declared length is 256 MiB), until the answer arrives. Returns the answer and how many
/// bytes the client had written by then.
async fn post_endless(app: &Server, head: &str, unit: &[u8]) -> (Resp, usize) {
    let declared = 256 << 20;
    let p = app
        .req(Method::POST, "/open")
        .anonymous()
        .header(
            "content-type",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .prepare();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small send buffer, so that what the client has written is close to what the server read.
    socket.set_send_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(app.host.parse().unwrap()).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let unit = unit.repeat((64 * 1024 / unit.len()).max(1));
    let head_bytes = p.head_bytes(declared);
    let head = head.as_bytes().to_owned();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&head_bytes).await?;
        wr.write_all(&head).await?;
        counter.fetch_add(head.len(), Relaxed);
        while counter.load(Relaxed) < declared {
            wr.write_all(&unit).await?;
            counter.fetch_add(unit.len(), Relaxed);
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let res = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(r) = parse_response(&buf) {
                return r;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!("no answer: {:?}", String::from_utf8_lossy(&buf)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server answered while the client was still sending");
    writer.abort();
    let _ = writer.await;
    (res, sent.load(Relaxed))
}

fn part_head(name: &str) -> String {
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
}

#[tokio::test]
async fn a_part_header_that_never_ends_is_refused_early() {
    let app = server(|_| {}).await;
    let head = format!(
        "{}k\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: ",
        part_head("key")
    );
    let (res, sent) = post_endless(&app, &head, b"a").await;
    res.assert_error(400, "MaxPostPreDataLengthExceeded");
    assert_eq!(
        xml_tag(&res.text(), "MaxPostPreDataLengthBytes").as_deref(),
        Some("20480")
    );
    assert!(says_close(&res));
    assert!(
        sent < MAX_SENT,
        "the client sent {sent} bytes before the answer"
    );
    app.assert_no_object("k").await;
}

#[tokio::test]
async fn a_huge_field_value_is_refused_early() {
    let app = server(|_| {}).await;
    let (res, sent) = post_endless(&app, &part_head("key"), b"k").await;
    res.assert_error(400, "MaxPostPreDataLengthExceeded");
    assert!(
        sent < MAX_SENT,
        "the client sent {sent} bytes before the answer"
    );
    assert!(says_close(&res));
}

#[tokio::test]
async fn ten_thousand_tiny_fields_are_refused_early() {
    let app = server(|_| {}).await;
    let fields: String = (0..10_000)
        .map(|i| format!("{}{i}\r\n", part_head(&format!("x-ignore-{i}"))))
        .collect();
    let head = format!("{}k\r\n{fields}", part_head("key"));
    let (res, sent) = post_endless(&app, &head, part_head("x-ignore-more").as_bytes()).await;
    res.assert_error(400, "MaxPostPreDataLengthExceeded");
    assert!(
        sent < MAX_SENT,
        "the client sent {sent} bytes before the answer"
    );
    app.assert_no_object("k").await;
}

// ---------------------------------------------------------------------------------------------
// Slow senders
// ---------------------------------------------------------------------------------------------

/// The body timeout the slow-sender tests configure.
const BODY_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `p`'s head declaring `declared` bytes and `burst` at once, then one byte every 200 ms
/// (far under the 1 KiB a body must bring per timeout) for up to 30 s, and reads the answer.
/// Returns it with the time it took after the burst.
async fn trickle(app: &Server, p: &Prepared, declared: usize, burst: &[u8]) -> (Resp, Duration) {
    let stream = app.connect().await;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(&p.head_bytes(declared)).await.unwrap();
    wr.write_all(burst).await.unwrap();
    let start = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let res = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(r) = parse_response(&buf) {
                return r;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => panic!("no answer: {:?}", String::from_utf8_lossy(&buf)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("a trickling body is answered");
    let took = start.elapsed();
    writer.abort();
    (res, took)
}

#[track_caller]
fn assert_timed_out(res: &Resp, took: Duration) {
    res.assert_error(400, "RequestTimeout");
    assert!(says_close(res), "no Connection: close: {:?}", res.headers);
    // The body timeout plus room for a slow machine, far below the 30 s the trickle lasts.
    assert!(took < BODY_TIMEOUT * 8, "answered after {took:?}");
}

/// Asserts the upload left no temp file behind.
async fn assert_no_temp_files(app: &Server) {
    let dir = app.dir.path().to_owned();
    assert!(
        poll_until(Duration::from_secs(5), || tmp_files(&dir).is_empty()).await,
        "temp files left: {:?}",
        tmp_files(&dir)
    );
}

#[tokio::test]
async fn a_trickling_put_is_request_timeout_and_stores_nothing() {
    let app = server(|l| l.body_timeout = BODY_TIMEOUT).await;
    let p = app
        .req(Method::PUT, &obj("open", "slow"))
        .unsigned()
        .prepare();
    // Past the inline threshold first, so that the upload has a temp file to discard.
    let (res, took) = trickle(&app, &p, 200_000, &pattern(100_000, 1)).await;
    assert_timed_out(&res, took);
    app.assert_no_object("slow").await;
    assert_no_temp_files(&app).await;
}

#[tokio::test]
async fn a_trickling_post_is_request_timeout_and_stores_nothing() {
    let app = server(|l| l.body_timeout = BODY_TIMEOUT).await;
    let p = app
        .req(Method::POST, "/open")
        .anonymous()
        .header(
            "content-type",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .prepare();
    let mut burst = format!(
        "{}slow\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n",
        part_head("key")
    )
    .into_bytes();
    burst.extend_from_slice(&pattern(100_000, 2));
    let (res, took) = trickle(&app, &p, 300_000, &burst).await;
    assert_timed_out(&res, took);
    app.assert_no_object("slow").await;
    assert_no_temp_files(&app).await;

    // Slow before the file too.
    let (res, took) = trickle(&app, &p, 300_000, part_head("key").as_bytes()).await;
    assert_timed_out(&res, took);
}

#[tokio::test]
async fn a_trickling_part_is_request_timeout() {
    let app = server(|l| l.body_timeout = BODY_TIMEOUT).await;
    let res = app
        .req(Method::POST, &obj("open", "mpu"))
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    let id = xml_tag(&res.text(), "UploadId").unwrap();
    let p = app
        .req(Method::PUT, &obj("open", "mpu"))
        .query(&format!("partNumber=1&uploadId={id}"))
        .unsigned()
        .prepare();
    let (res, took) = trickle(&app, &p, 6 << 20, &pattern(100_000, 3)).await;
    assert_timed_out(&res, took);
    assert_no_temp_files(&app).await;
    let res = app
        .req(Method::GET, &obj("open", "mpu"))
        .query(&format!("uploadId={id}"))
        .send()
        .await;
    res.assert_status(200);
    assert!(
        xml_tags(&res.text(), "PartNumber").is_empty(),
        "{}",
        res.text()
    );
}

#[tokio::test]
async fn a_trickling_complete_multipart_upload_is_request_timeout() {
    let app = server(|l| l.body_timeout = BODY_TIMEOUT).await;
    let res = app
        .req(Method::POST, &obj("open", "mpu"))
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    let id = xml_tag(&res.text(), "UploadId").unwrap();
    let p = app
        .req(Method::POST, &obj("open", "mpu"))
        .query(&format!("uploadId={id}"))
        .unsigned()
        .prepare();
    let (res, took) = trickle(&app, &p, 1000, b"<CompleteMultipartUpload>").await;
    assert_timed_out(&res, took);
    app.assert_no_object("mpu").await;
}

#[tokio::test]
async fn a_trickling_json_body_is_request_timeout() {
    let app = server(|l| l.body_timeout = BODY_TIMEOUT).await;
    let p = app
        .req(Method::POST, "/-/api/presign/post")
        .header("content-type", "application/json")
        .unsigned()
        .prepare();
    let (res, took) = trickle(&app, &p, 1000, b"{").await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert!(res.text().contains("\"RequestTimeout\""), "{}", res.text());
    assert!(says_close(&res));
    assert!(took < BODY_TIMEOUT * 8, "answered after {took:?}");
}

#[tokio::test]
async fn a_body_that_keeps_coming_is_not_timed_out() {
    // 1 KiB every 400 ms keeps a 1 s timeout at bay: only stalls are refused, not slow links.
    let app = server(|l| l.body_timeout = BODY_TIMEOUT).await;
    let body = pattern(8 * 1024, 4);
    let p = app
        .req(Method::PUT, &obj("open", "steady"))
        .unsigned()
        .prepare();
    let mut stream = app.connect().await;
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    for piece in body.chunks(1024) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(piece).await.unwrap();
    }
    let res = read_response(&mut stream).await;
    res.assert_status(200);
}

// ---------------------------------------------------------------------------------------------
// Connection limit, header timeout, shutdown
// ---------------------------------------------------------------------------------------------

/// Sends a health check on `stream` and reads the answer.
async fn health(app: &Server, stream: &mut TcpStream) -> Resp {
    let p = app.req(Method::GET, "/-/health").anonymous().prepare();
    stream.write_all(&p.head_bytes(0)).await.unwrap();
    read_response(stream).await
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let app = server(|l| l.max_connections = Some(2)).await;
    let mut a = app.connect().await;
    let mut b = app.connect().await;
    health(&app, &mut a).await.assert_status(200);
    health(&app, &mut b).await.assert_status(200);

    // A third connection is not served while both are open...
    let mut c = app.connect().await;
    let p = app.req(Method::GET, "/-/health").anonymous().prepare();
    c.write_all(&p.head_bytes(0)).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c.read(&mut byte))
            .await
            .is_err(),
        "a connection past the limit was served"
    );
    // ...and is as soon as one closes.
    drop(a);
    let res = tokio::time::timeout(Duration::from_secs(10), read_response(&mut c))
        .await
        .expect("served once a connection closed");
    res.assert_status(200);
    health(&app, &mut b).await.assert_status(200);
}

#[tokio::test]
async fn headers_that_never_end_are_timed_out() {
    let app = server(|l| l.header_timeout = Duration::from_secs(1)).await;
    let mut stream = app.connect().await;
    stream
        .write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);

    // A kept-alive connection that sends nothing more is closed too.
    let mut stream = app.connect().await;
    health(&app, &mut stream).await.assert_status(200);
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn shutdown_drops_a_stuck_upload_within_its_bound() {
    let mut app = server(|l| l.shutdown_timeout = Duration::from_secs(1)).await;
    let p = app
        .req(Method::PUT, &obj("open", "stuck"))
        .unsigned()
        .prepare();
    let mut stream = app.connect().await;
    stream.write_all(&p.head_bytes(1 << 20)).await.unwrap();
    stream.write_all(&pattern(200_000, 5)).await.unwrap();
    let dir = app.dir.path().to_owned();
    assert!(poll_until(Duration::from_secs(5), || !tmp_files(&dir).is_empty()).await);

    drop(app.stop.take());
    tokio::time::timeout(Duration::from_secs(10), &mut app.task)
        .await
        .expect("shutdown returned within its bound")
        .unwrap()
        .unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    assert_no_temp_files(&app).await;
    assert!(blob_files(&dir).is_empty());
}

/// Overload: ten times more clients than the connection limit, all at once. The excess waits to
/// be accepted (nothing is refused or dropped), every upload is stored whole, and the clients that
/// were admitted first keep being served promptly on their open connections meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_more_clients_than_the_limit_wait_and_the_admitted_keep_being_served() {
    const LIMIT: usize = 4;
    const ADMITTED: usize = 2;
    let app = server(|l| l.max_connections = Some(LIMIT as u32)).await;

    // Two admitted clients on kept-alive connections, uploading in a loop until the crowd is done.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut admitted = Vec::new();
    for c in 0..ADMITTED {
        let mut stream = app.connect().await;
        health(&app, &mut stream).await.assert_status(200);
        let (app_base, app_host, done) = (app.base.clone(), app.host.clone(), done.clone());
        admitted.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut served, mut slowest) = (0usize, Duration::ZERO);
            while !done.load(Relaxed) {
                let body = pattern(10_000, (c * 1000 + served) as u64);
                let key = format!("admitted-{c}-{served}");
                let p = req_to(&app_base, &app_host, &http, Method::PUT, &obj("open", &key))
                    .body(body)
                    .prepare();
                let started = tokio::time::Instant::now();
                stream.write_all(&p.head_bytes(p.body.len())).await.unwrap();
                stream.write_all(&p.body).await.unwrap();
                read_response(&mut stream).await.assert_status(200);
                slowest = slowest.max(started.elapsed());
                served += 1;
            }
            (served, slowest)
        }));
    }

    // The crowd: 10x the limit, each on a connection of its own, all at once.
    let crowd = (0..10 * LIMIT).map(|i| {
        let app = &app;
        async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let body = pattern(100_000, 50_000 + i as u64);
            let p = req_to(
                &app.base,
                &app.host,
                &http,
                Method::PUT,
                &obj("open", &format!("crowd-{i}")),
            )
            .body(body.clone())
            .prepare();
            let res = http
                .request(p.method, &p.url)
                .headers(p.headers)
                .body(p.body)
                .send()
                .await
                .expect("a waiting client is served, not dropped");
            assert_eq!(res.status(), 200, "crowd-{i}");
            body
        }
    });
    let bodies = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(crowd),
    )
    .await
    .expect("every waiting client was served");
    done.store(true, Relaxed);
    for (c, task) in admitted.into_iter().enumerate() {
        let (served, slowest) = task.await.unwrap();
        assert!(served > 0, "admitted client {c} was served nothing");
        assert!(
            slowest < Duration::from_secs(2),
            "admitted client {c} waited {slowest:?} for an answer"
        );
    }
    for (i, body) in bodies.iter().enumerate() {
        let got = app
            .req(Method::GET, &obj("open", &format!("crowd-{i}")))
            .send()
            .await;
        got.assert_status(200);
        assert!(got.body[..] == body[..], "crowd-{i} stored whole");
    }
}

/// The open-file limit is raised to its maximum at start, and the connection cap is derived from
/// what was granted: a server started under a soft limit of 1,024 (the usual default) holds
/// 3,000 idle keep-alive connections (6,000 descriptors in this one process) and still serves a
/// new client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_file_limit_is_raised_and_idle_connections_do_not_lock_out_new_clients() {
    use rlimit::Resource;
    let (_, hard) = Resource::NOFILE.get().unwrap();
    if hard < 8192 {
        eprintln!("skipped: the hard open-file limit ({hard}) is too low for 3,000 connections");
        return;
    }
    Resource::NOFILE.set(1024, hard).unwrap();
    let s = server(|_| {}).await;
    // The serve loop raises the limit as it starts.
    assert!(
        poll_until(Duration::from_secs(10), || Resource::NOFILE
            .get()
            .is_ok_and(|(soft, _)| soft == hard))
        .await,
        "the soft open-file limit stayed at {:?}",
        Resource::NOFILE.get()
    );
    let mut idle = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let mut c = s.connect().await;
        c.write_all(format!("GET /-/health HTTP/1.1\r\nhost: {}\r\n\r\n", s.host).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_response(&mut c).await.status, 200);
        idle.push(c);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        s.req(Method::PUT, &obj("open", "after-idle"))
            .body(b"still served".to_vec())
            .send(),
    )
    .await
    .expect("a new client waited behind idle connections");
    assert_eq!(res.status, 200);
    drop(idle);
}

/// A burst of connections deeper than the usual listen backlog (1,024) arriving before the
/// server accepts any: every one waits in the queue `postgate::http::listen` makes and is
/// answered once serving starts. With a 1,024 queue the rest overflow into SYN cookies and wait
/// on retransmissions or are reset.
#[tokio::test]
async fn a_burst_of_connections_waits_in_the_listen_queue() {
    const BURST: usize = 1500;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        somaxconn > BURST,
        "net.core.somaxconn is {somaxconn}: this test needs a queue deeper than {BURST}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = postgate::http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    // Nobody accepts yet: every handshake the kernel completes sits in the queue.
    let mut streams = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&host))
            .await
            .expect("the handshake completes while the queue has room")
            .unwrap();
        s.write_all(b"GET /-/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        streams.push(s);
    }
    let (stop, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(postgate::serve(listener, state, async move {
        stop_rx.await.ok();
    }));
    let answered = futures_util::future::join_all(streams.into_iter().map(|mut s| async move {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        matches!(read, Ok(Ok(_))) && got.starts_with(b"HTTP/1.1 200")
    }))
    .await;
    let ok = answered.iter().filter(|a| **a).count();
    assert_eq!(ok, BURST, "connections answered within 5 s of serving");
    drop(stop);
}

// ---------------------------------------------------------------------------------------------
// Lingering close: an early answer reaches a client that is still sending
// ---------------------------------------------------------------------------------------------

const LINGER_BODY: u64 = 64 << 20;

/// A body of `size` bytes, produced as fast as the client takes it.
fn fast_body(size: u64) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 256 * 1024]);
    let n = size.div_ceil(chunk.len() as u64);
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    ))
}

/// A signed POST policy for `open` (key `key`) whose file may be at most 1 KiB.
async fn small_form(app: &Server, key: &str) -> serde_json::Value {
    let res = Resp::read(
        app.http
            .post(format!("{}/-/api/presign/post", app.base))
            .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
            // Not kept alive: a test with a limit of one connection needs it.
            .header("connection", "close")
            .body(serde_json::json!({"bucket": "open", "key": key, "max_size": 1024}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    res.assert_status(200);
    serde_json::from_slice(&res.body).unwrap()
}

/// Sends `tries` requests made by `make` (each with a 64 MiB body sent at full speed) one after
/// the other on fresh connections; every one must get the whole answer, never a reset.
async fn every_try_gets_the_answer(
    tries: usize,
    make: impl Fn() -> reqwest::RequestBuilder,
    status: u16,
    code: &str,
) {
    let mut failures = Vec::new();
    for i in 0..tries {
        match make().send().await {
            Ok(res) => {
                let res = Resp::read(res).await;
                res.assert_error(status, code);
            }
            Err(e) => failures.push(format!("try {i}: {e:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tries} tries saw no answer: {failures:#?}",
        failures.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_form_gets_the_whole_early_answer_every_time() {
    let app = server(|_| {}).await;
    let policy = small_form(&app, "huge").await;
    let make = || {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in policy["fields"].as_object().unwrap() {
            form = form.text(k.clone(), v.as_str().unwrap().to_owned());
        }
        let part =
            reqwest::multipart::Part::stream_with_length(fast_body(LINGER_BODY), LINGER_BODY)
                .file_name("huge.bin");
        // A fresh connection each time: the last one was closed after its answer.
        reqwest::Client::new()
            .post(policy["url"].as_str().unwrap())
            .multipart(form.part("file", part))
    };
    every_try_gets_the_answer(20, make, 400, "EntityTooLarge").await;
    app.assert_no_object("huge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_put_over_a_quota_gets_the_whole_early_answer_every_time() {
    let app = server(|_| {}).await;
    let quota = postgate::db::quota::Quota {
        max_size: Some(1024),
        max_objects: None,
    };
    app.state
        .write_bucket(move |c| postgate::db::quota::set(c, "open", quota))
        .await
        .unwrap();
    let make = || {
        let p = app
            .req(Method::PUT, &obj("open", "huge"))
            .unsigned()
            .prepare();
        reqwest::Client::new()
            .put(&p.url)
            .headers(p.headers)
            .header("content-length", LINGER_BODY.to_string())
            .body(fast_body(LINGER_BODY))
    };
    every_try_gets_the_answer(20, make, 400, "XPostgateQuotaExceeded").await;
    app.assert_no_object("huge").await;
}

/// After an early answer, a client that neither reads nor closes (nor sends more) keeps its
/// connection, and its permit, for the lingering bound only: with a limit of one connection, the
/// next client is served once that bound is over.
#[tokio::test]
async fn a_client_that_never_reads_nor_closes_is_cut_after_the_linger_bound() {
    let app = server(|l| l.max_connections = Some(1)).await;
    let policy = small_form(&app, "silent").await;
    let boundary = "lingerboundary";
    let mut head = String::new();
    for (k, v) in policy["fields"].as_object().unwrap() {
        head += &format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{}\r\n",
            v.as_str().unwrap()
        );
    }
    head += &format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
    );
    let request = format!(
        "POST /open HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{head}",
        app.host, LINGER_BODY
    );
    let mut silent = app.connect().await;
    silent.write_all(request.as_bytes()).await.unwrap();
    silent.write_all(&[b'x'; 4096]).await.unwrap();
    let sent = std::time::Instant::now();
    // Give the server time to answer; the client then neither reads nor closes nor sends.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = app.connect().await;
    let p = app.req(Method::GET, "/-/health").anonymous().prepare();
    next.write_all(&p.head_bytes(0)).await.unwrap();
    let res = tokio::time::timeout(Duration::from_secs(15), read_response(&mut next))
        .await
        .expect("the next client is served once the linger bound is over");
    let waited = sent.elapsed();
    res.assert_status(200);
    eprintln!("the silent client held its connection for {waited:?}");
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(8)).contains(&waited),
        "the next client waited {waited:?}, the linger bound is 5 s"
    );
    // The silent client's answer was sent whole, and its connection is closed.
    let answer = read_response(&mut silent).await;
    answer.assert_error(400, "EntityTooLarge");
    assert!(closed_within(&mut silent, Duration::from_secs(1)).await);
}

/// Graceful shutdown's abort ends a lingering connection too.
#[tokio::test]
async fn shutdown_ends_a_lingering_connection() {
    let mut app = server(|l| l.shutdown_timeout = Duration::from_secs(1)).await;
    let p = app
        .req(Method::PUT, &obj("open", "big"))
        .unsigned()
        .prepare();
    let mut stream = app.connect().await;
    // Past the largest object: refused before the body, which is never sent.
    stream.write_all(&p.head_bytes(6 << 40)).await.unwrap();
    stream.write_all(&[b'x'; 4096]).await.unwrap();
    read_response(&mut stream)
        .await
        .assert_error(400, "EntityTooLarge");
    let started = std::time::Instant::now();
    drop(app.stop.take());
    tokio::time::timeout(Duration::from_secs(10), &mut app.task)
        .await
        .expect("shutdown returned")
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    eprintln!("shutdown with a lingering connection took {took:?}");
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}
