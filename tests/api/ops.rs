//! What an operator watches: `/-/metrics` scraped after a known workload (counts and bytes equal
//! what was sent), its bearer token, `/-/ready` (200, then 503 for too little disk and for a
//! database that cannot be written), and the JSON access log of the real binary.

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postgate::config::MinFree;
use postgate::policy::{KeySpec, PostPolicyRequest, issue};
use reqwest::Method;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{ADMIN_AK, ADMIN_SK, Creds, REGION, Resp, obj, pattern, presign_v4, req_to};

/// An in-process server with a configuration of the test's choosing.
struct Server {
    base: String,
    host: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    state: postgate::AppState,
    _stop: oneshot::Sender<()>,
}

async fn server_with(configure: impl FnOnce(&mut postgate::Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    config.ready_min_free = MinFree::Bytes(0);
    configure(&mut config);
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(postgate::serve(listener, state.clone(), async move {
        stop_rx.await.ok();
    }));
    Server {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        http: reqwest::Client::new(),
        dir,
        state,
        _stop: stop,
    }
}

impl Server {
    async fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Resp {
        req_to(&self.base, &self.host, &self.http, method, path)
            .body(body)
            .send()
            .await
    }

    async fn get_plain(&self, path: &str, token: Option<&str>) -> Resp {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Resp::read(req.send().await.unwrap()).await
    }

    /// A browser POST form (SigV4, admin) for `key` in `bucket`, at most `max` bytes, sent as a
    /// hand-built `multipart/form-data` body so that its length is known. Returns the answer and
    /// the body's length.
    async fn post_form(
        &self,
        bucket: &str,
        key: &str,
        max: u64,
        data: &[u8],
        at: OffsetDateTime,
    ) -> (Resp, u64) {
        let req = PostPolicyRequest::new(bucket, KeySpec::Exact(key.to_owned()), max);
        let url = format!("{}/{bucket}", self.base);
        let fields = issue(&req, ADMIN_AK, ADMIN_SK, REGION, &url, at)
            .unwrap()
            .fields;
        let boundary = "----opsboundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        for (name, value) in &fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let len = body.len() as u64;
        let res = self
            .http
            .post(&url)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        (Resp::read(res).await, len)
    }
}

/// The value of one sample (`name{labels}` exactly as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn requests(text: &str, op: &str, class: &str) -> f64 {
    sample(
        text,
        &format!("postgate_requests_total{{operation=\"{op}\",status=\"{class}\"}}"),
    )
}

#[tokio::test]
async fn metrics_count_a_known_workload_exactly() {
    let s = server_with(|_| {}).await;
    s.send(Method::PUT, "/mbk", Vec::new())
        .await
        .assert_status(200);
    let before = s.get_plain("/-/metrics", None).await;
    before.assert_status(200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let before_text = before.text();

    // Phase 1: 5 PUTs of 1000 bytes, 3 accepted POSTs of 300 bytes, one GET of 1000 bytes.
    let (n_put, put_len) = (5u64, 1000usize);
    let mut sent_in = 0u64;
    let mut received_out = before.body.len() as u64;
    for i in 0..n_put {
        let res = s
            .send(
                Method::PUT,
                &obj("mbk", &format!("put/{i}")),
                pattern(put_len, i),
            )
            .await;
        res.assert_status(200);
        sent_in += put_len as u64;
        received_out += res.body.len() as u64;
    }
    let now = OffsetDateTime::now_utc();
    for i in 0..3 {
        let (res, len) = s
            .post_form("mbk", &format!("post/{i}"), 1 << 20, &pattern(300, 9), now)
            .await;
        res.assert_status(204);
        sent_in += len;
        received_out += res.body.len() as u64;
    }
    let got = s.send(Method::GET, &obj("mbk", "put/0"), Vec::new()).await;
    got.assert_status(200);
    assert_eq!(got.body.len(), put_len);
    received_out += got.body.len() as u64;
    // The last answer is counted once its body has gone out: give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mid = s.get_plain("/-/metrics", None).await.text();

    let delta = |name: &str| sample(&mid, name) - sample(&before_text, name);
    assert_eq!(requests(&mid, "PutObject", "2xx"), n_put as f64, "{mid}");
    assert_eq!(requests(&mid, "PostObject", "2xx"), 3.0);
    assert_eq!(requests(&mid, "GetObject", "2xx"), 1.0);
    assert_eq!(requests(&mid, "CreateBucket", "2xx"), 1.0);
    assert_eq!(
        sample(
            &mid,
            "postgate_request_duration_seconds_count{operation=\"PutObject\"}"
        ),
        n_put as f64
    );
    assert_eq!(delta("postgate_received_bytes_total"), sent_in as f64);
    assert_eq!(delta("postgate_sent_bytes_total"), received_out as f64);
    assert_eq!(sample(&mid, "postgate_uploads_in_flight"), 0.0);
    // Every write went through the group-committing writer: each batch took at least one job.
    assert!(sample(&mid, "postgate_db_commit_batch_size_count") >= 1.0);
    assert!(sample(&mid, "postgate_db_commit_batch_size_sum") >= (n_put + 3) as f64);
    assert!(sample(&mid, "postgate_data_dir_free_bytes") > 0.0);
    assert!(sample(&mid, "postgate_sqlite_wal_bytes") > 0.0);
    assert_eq!(sample(&mid, "postgate_multipart_uploads_open"), 0.0);

    // Phase 2: 4 refused POSTs with known codes (2 too large, 2 expired), an open multipart.
    for i in 0..2 {
        let (res, _) = s
            .post_form("mbk", &format!("big/{i}"), 10, &pattern(300, 1), now)
            .await;
        res.assert_error(400, "EntityTooLarge");
    }
    let long_ago = now - time::Duration::hours(2);
    for i in 0..2 {
        let (res, _) = s
            .post_form("mbk", &format!("old/{i}"), 1 << 20, b"x", long_ago)
            .await;
        res.assert_error(403, "AccessDenied");
    }
    let res = req_to(&s.base, &s.host, &s.http, Method::POST, &obj("mbk", "mp"))
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = s.get_plain("/-/metrics", None).await.text();
    assert_eq!(requests(&after, "PostObject", "4xx"), 4.0, "{after}");
    assert_eq!(
        sample(
            &after,
            "postgate_post_refusals_total{code=\"EntityTooLarge\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &after,
            "postgate_post_refusals_total{code=\"AccessDenied\"}"
        ),
        2.0
    );
    assert_eq!(requests(&after, "CreateMultipartUpload", "2xx"), 1.0);
    assert_eq!(sample(&after, "postgate_multipart_uploads_open"), 1.0);
    // The scrapes count under their own name.
    assert!(requests(&after, "metrics", "2xx") >= 2.0);
}

#[tokio::test]
async fn link_uploads_are_counted_once_stored() {
    let s = server_with(|_| {}).await;
    s.send(Method::PUT, "/lnk", Vec::new())
        .await
        .assert_status(200);
    let link = postgate::links::new_link(
        "lnk",
        "in/",
        16,
        None,
        None,
        Duration::from_secs(3600),
        ADMIN_AK,
    );
    let l = link.clone();
    s.state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    let policy = s
        .get_plain(&format!("/-/u/{}/policy", link.token), None)
        .await;
    policy.assert_status(200);
    let json: serde_json::Value = serde_json::from_slice(&policy.body).unwrap();
    let url = json["url"].as_str().unwrap();
    let post = |name: &'static str, body: Vec<u8>| {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in json["fields"].as_object().unwrap() {
            form = form.text(k.clone(), v.as_str().unwrap().to_owned());
        }
        form = form.text("Content-Type", "text/plain");
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(body).file_name(name),
        );
        let req = s.http.post(url).multipart(form);
        async move { Resp::read(req.send().await.unwrap()).await }
    };
    for name in ["a.txt", "b.txt"] {
        let res = post(name, b"abc".to_vec()).await;
        assert!(res.status < 400, "{} {}", res.status, res.text());
    }
    post("big.txt", vec![b'x'; 100])
        .await
        .assert_error(400, "EntityTooLarge");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = s.get_plain("/-/metrics", None).await.text();
    assert_eq!(sample(&text, "postgate_link_uploads_total"), 2.0, "{text}");
    assert_eq!(requests(&text, "link_page", "2xx"), 1.0);
    assert_eq!(
        sample(
            &text,
            "postgate_post_refusals_total{code=\"EntityTooLarge\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn the_metrics_token_protects_the_route() {
    let s = server_with(|c| c.metrics_token = Some("m3trics-t0ken".into())).await;
    let none = s.get_plain("/-/metrics", None).await;
    none.assert_status(401);
    assert!(none.text().contains("\"AccessDenied\""), "{}", none.text());
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    s.get_plain("/-/metrics", Some("wrong"))
        .await
        .assert_status(401);
    // The S3 signature is no way in either.
    req_to(&s.base, &s.host, &s.http, Method::GET, "/-/metrics")
        .send()
        .await
        .assert_status(401);
    let ok = s.get_plain("/-/metrics", Some("m3trics-t0ken")).await;
    ok.assert_status(200);
    assert!(ok.text().contains("postgate_requests_total"));
    // The other operator routes need no token.
    s.get_plain("/-/ready", None).await.assert_status(200);
    s.get_plain("/-/health", None).await.assert_status(200);
}

#[tokio::test]
async fn ready_is_200_normally_and_503_below_the_free_space_threshold() {
    let s = server_with(|_| {}).await;
    let ok = s.get_plain("/-/ready", None).await;
    ok.assert_status(200);
    assert_eq!(ok.text(), r#"{"ready":true}"#);

    let s = server_with(|c| c.ready_min_free = MinFree::Bytes(1 << 60)).await;
    let res = s.get_plain("/-/ready", None).await;
    res.assert_status(503);
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(body["error"]["code"], "InsufficientFreeSpace", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("free"));
    // Liveness does not depend on it.
    s.get_plain("/-/health", None).await.assert_status(200);

    let s = server_with(|c| c.ready_min_free = MinFree::Percent(100.0)).await;
    s.get_plain("/-/ready", None).await.assert_status(503);
}

#[tokio::test]
async fn ready_is_503_while_the_database_cannot_be_written() {
    let s = server_with(|_| {}).await;
    s.get_plain("/-/ready", None).await.assert_status(200);
    // Another process (an operator's sqlite3 shell, a backup tool) holds the write lock: reads
    // still work, no write can commit.
    let db = s.dir.path().join("postgate.db");
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let res = s.get_plain("/-/ready", None).await;
    res.assert_status(503);
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(body["error"]["code"], "DatabaseUnwritable", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    s.get_plain("/-/health", None).await.assert_status(200);
    locker.execute_batch("ROLLBACK").unwrap();
    // Once the lock is gone the writer catches up and the server is ready again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if s.get_plain("/-/ready", None).await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real binary, its log (tracing writes to stdout) in a file.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_binary(dir: &Path, host: &str) -> Proc {
    spawn_binary_with(dir, host, "info").await
}

async fn spawn_binary_with(dir: &Path, host: &str, filter: &str) -> Proc {
    let log = dir.join("server.log");
    let data = dir.join("data");
    let child = Command::new(env!("CARGO_BIN_EXE_postgate"))
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(["--addr", host])
        .env("POSTGATE_ACCESS_KEY", ADMIN_AK)
        .env("POSTGATE_SECRET_KEY", ADMIN_SK)
        .env("POSTGATE_LOG", filter)
        .env("POSTGATE_LOG_FORMAT", "json")
        .env_remove("POSTGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let proc = Proc { child, log };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("http://{host}/-/health"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc
}

fn log_lines(proc: &Proc) -> Vec<serde_json::Value> {
    let mut text = String::new();
    std::fs::File::open(&proc.log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn json_logs_carry_one_access_line_per_request_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{host}");
    let proc = spawn_binary(dir.path(), &host).await;
    let http = reqwest::Client::new();
    req_to(&base, &host, &http, Method::PUT, "/logb")
        .send()
        .await
        .assert_status(200);
    req_to(&base, &host, &http, Method::PUT, "/logb/dir/k.txt")
        .body(b"hello access log".to_vec())
        .send()
        .await
        .assert_status(200);
    // A presigned GET: its signature rides in the query, which must not reach the log.
    let url = presign_v4(
        &base,
        &host,
        &Creds::admin(),
        Method::GET,
        "/logb/dir/k.txt",
        "",
        600,
        OffsetDateTime::now_utc(),
    );
    let signature = url.rsplit_once("X-Amz-Signature=").unwrap().1.to_owned();
    let got = Resp::read(http.get(&url).send().await.unwrap()).await;
    got.assert_status(200);
    req_to(&base, &host, &http, Method::GET, "/logb/missing")
        .send()
        .await
        .assert_error(404, "NoSuchKey");

    let deadline = Instant::now() + Duration::from_secs(10);
    let access = loop {
        let access: Vec<_> = log_lines(&proc)
            .into_iter()
            .filter(|l| l["target"] == "postgate::access")
            .collect();
        if access.len() >= 5 || Instant::now() > deadline {
            break access;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The health checks while starting, then the four requests, one line each.
    let s3: Vec<_> = access.iter().filter(|l| l["bucket"] == "logb").collect();
    assert_eq!(
        s3.len(),
        4,
        "{access:#?} {}",
        std::fs::read_to_string(&proc.log).unwrap()
    );
    let put = s3.iter().find(|l| l["operation"] == "PutObject").unwrap();
    assert_eq!(put["level"], "INFO");
    assert_eq!(put["key"], "dir/k.txt");
    assert_eq!(put["status"], 200);
    assert_eq!(put["bytes_in"], 16);
    assert_eq!(put["bytes_out"], 0);
    assert_eq!(put["access_key"], ADMIN_AK);
    assert_eq!(put["error_code"], "");
    assert!(put["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(put["request_id"].as_str().unwrap().len(), 16);
    assert!(put["duration_ms"].as_f64().unwrap() >= 0.0);
    // The line is written without tracing's formatter, in tracing's shape: the documented keys
    // in the documented order, and a timestamp like tracing's own lines'.
    const KEYS: [&str; 17] = [
        "timestamp",
        "level",
        "message",
        "request_id",
        "remote",
        "method",
        "operation",
        "bucket",
        "key",
        "status",
        "error_code",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "access_key",
        "link",
        "target",
    ];
    let mut keys: Vec<&str> = put
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut documented = KEYS.to_vec();
    documented.sort_unstable();
    assert_eq!(keys, documented);
    let raw = std::fs::read_to_string(&proc.log).unwrap();
    let raw = raw
        .lines()
        .find(|l| l.contains(put["request_id"].as_str().unwrap()))
        .unwrap();
    let at: Vec<usize> = KEYS
        .iter()
        .map(|k| raw.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(at.is_sorted(), "keys out of order: {raw}");
    let other = log_lines(&proc)
        .into_iter()
        .find(|l| l["target"] != "postgate::access")
        .expect("a line of tracing's own");
    let stamp = |l: &serde_json::Value| l["timestamp"].as_str().unwrap().to_owned();
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    for t in [stamp(put), stamp(&other)] {
        assert_eq!(t.len(), "2026-01-01T00:00:00.000000Z".len(), "{t}");
        OffsetDateTime::parse(&t, rfc3339).unwrap();
    }
    assert_eq!(put["message"], "request");
    let get = s3
        .iter()
        .find(|l| l["operation"] == "GetObject" && l["status"] == 200)
        .unwrap();
    assert_eq!(get["bytes_out"], 16);
    assert_eq!(get["access_key"], ADMIN_AK);
    let missing = s3.iter().find(|l| l["status"] == 404).unwrap();
    assert_eq!(missing["error_code"], "NoSuchKey");
    assert_eq!(missing["key"], "missing");

    let all = std::fs::read_to_string(&proc.log).unwrap();
    assert!(!all.contains(ADMIN_SK), "the secret key is in the log");
    assert!(!all.contains(&signature), "a signature is in the log");
    assert!(!all.contains("Signature="), "a query string is in the log");
}

/// The access-log line of the request whose response carried `res`'s request id.
async fn access_line(proc: &Proc, res: &Resp) -> serde_json::Value {
    let id = res.header("x-amz-request-id").unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = log_lines(proc)
            .into_iter()
            .find(|l| l["target"] == "postgate::access" && l["request_id"] == id.as_str())
        {
            return line;
        }
        assert!(Instant::now() < deadline, "no access line for {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn link_uppy_and_api_routes_log_bucket_key_signer_and_link() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{host}");
    let proc = spawn_binary(dir.path(), &host).await;
    let http = reqwest::Client::new();
    req_to(&base, &host, &http, Method::PUT, "/linklog")
        .send()
        .await
        .assert_status(200);
    let bearer = format!("Bearer {ADMIN_AK}:{ADMIN_SK}");
    let call = |method: Method, path: &str, auth: bool, body: Option<serde_json::Value>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if auth {
            req = req.header("authorization", &bearer);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        async move { Resp::read(req.send().await.unwrap()).await }
    };

    // JSON API: the caller's key and the bucket; the new link's id.
    let created = call(
        Method::POST,
        "/-/api/links",
        true,
        Some(serde_json::json!({"bucket": "linklog", "prefix": "in/"})),
    )
    .await;
    created.assert_status(201);
    let link: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    let id = link["id"].as_str().unwrap().to_owned();
    let token = link["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let line = access_line(&proc, &created).await;
    assert_eq!(line["operation"], "api");
    assert_eq!(line["bucket"], "linklog");
    assert_eq!(line["access_key"], ADMIN_AK);
    assert_eq!(line["link"], id.as_str());
    let policy = call(
        Method::POST,
        "/-/api/presign/post",
        true,
        Some(serde_json::json!({"bucket": "linklog", "key": "api/k.txt"})),
    )
    .await;
    policy.assert_status(200);
    let line = access_line(&proc, &policy).await;
    assert_eq!(
        (&line["bucket"], &line["key"], &line["access_key"]),
        (&"linklog".into(), &"api/k.txt".into(), &ADMIN_AK.into())
    );

    // The page: the link, its bucket, the key that signs its uploads.
    let page = call(Method::GET, &format!("/-/u/{token}"), false, None).await;
    page.assert_status(200);
    let line = access_line(&proc, &page).await;
    assert_eq!(line["operation"], "link_page");
    assert_eq!(line["link"], id.as_str());
    assert_eq!(line["bucket"], "linklog");
    assert_eq!(line["access_key"], ADMIN_AK);

    // The page's multipart route: the key chosen for the file.
    let started = call(
        Method::POST,
        &format!("/-/u/{token}/uploads"),
        false,
        Some(serde_json::json!({"filename": "big.bin", "size": 10, "content_type": "application/octet-stream"})),
    )
    .await;
    started.assert_status(200);
    let upload: serde_json::Value = serde_json::from_slice(&started.body).unwrap();
    let line = access_line(&proc, &started).await;
    assert_eq!(line["operation"], "link_multipart");
    assert_eq!(line["key"], "in/big.bin");
    assert_eq!(line["link"], id.as_str());
    assert_eq!(line["access_key"], ADMIN_AK);
    let upload_id = upload["upload_id"].as_str().unwrap();
    let aborted = call(
        Method::DELETE,
        &format!("/-/u/{token}/uploads/{upload_id}"),
        false,
        None,
    )
    .await;
    aborted.assert_status(204);
    let line = access_line(&proc, &aborted).await;
    assert_eq!(
        (&line["key"], &line["link"]),
        (&"in/big.bin".into(), &id.as_str().into())
    );

    // Uppy's routes, then the form Uppy posts: the key, the signer and the link on both.
    let params = call(
        Method::GET,
        &format!("/-/u/{token}/s3/params?filename=u.txt&type=text%2Fplain"),
        false,
        None,
    )
    .await;
    params.assert_status(200);
    let line = access_line(&proc, &params).await;
    assert_eq!(line["operation"], "uppy");
    assert_eq!(line["key"], "in/u.txt");
    assert_eq!(line["bucket"], "linklog");
    assert_eq!(line["link"], id.as_str());
    assert_eq!(line["access_key"], ADMIN_AK);
    let params: serde_json::Value = serde_json::from_slice(&params.body).unwrap();
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in params["fields"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("blob"),
    );
    let posted = Resp::read(
        http.post(params["url"].as_str().unwrap())
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    posted.assert_status(201);
    let line = access_line(&proc, &posted).await;
    assert_eq!(line["operation"], "PostObject");
    assert_eq!(line["bucket"], "linklog");
    assert_eq!(line["key"], "in/u.txt");
    assert_eq!(line["access_key"], ADMIN_AK);
    assert_eq!(line["link"], id.as_str());

    // Revoking names the link and its bucket.
    let revoked = call(Method::DELETE, &format!("/-/api/links/{id}"), true, None).await;
    assert!(revoked.status < 300, "{}", revoked.text());
    let line = access_line(&proc, &revoked).await;
    assert_eq!(
        (&line["link"], &line["bucket"]),
        (&id.as_str().into(), &"linklog".into())
    );

    // The token is the link's credential: it is never logged.
    let all = std::fs::read_to_string(&proc.log).unwrap();
    assert!(!all.contains(&token), "a link token is in the log");
    assert!(!all.contains(ADMIN_SK), "the secret key is in the log");
}

/// `postgate::access=off` silences the access log alone, JSON lines included.
#[tokio::test]
async fn the_access_log_can_be_filtered_out() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    let proc = spawn_binary_with(dir.path(), &host, "info,postgate::access=off").await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        http.get(format!("http://{host}/-/health"))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = log_lines(&proc);
    assert!(!lines.is_empty(), "tracing's own lines are still written");
    assert!(
        lines.iter().all(|l| l["target"] != "postgate::access"),
        "{lines:#?}"
    );
}
