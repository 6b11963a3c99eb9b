//! Serving what strangers uploaded and running on a public address: uploaded active content is
//! sandboxed, URLs never come from an untrusted `Host` or forwarding header, a rotated admin key
//! stops working, and the data directory is private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgate::Config;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{
    ADMIN_AK, ADMIN_SK, Creds, Resp, TestApp, obj, pattern, req_to, spawn_app, xml_tag,
};

const EVIL: &str = "evil.example";

/// A server on `data_dir` with a configuration the test adjusts (the helpers' `spawn_app`
/// always uses the defaults).
struct Server {
    base: String,
    host: String,
    http: reqwest::Client,
    state: postgate::AppState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(data_dir: &Path, edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::for_data_dir(data_dir);
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    edit(&mut config);
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(postgate::serve(listener, state.clone(), async move {
        stop_rx.await.ok();
    }));
    Server {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        http: no_redirects(),
        state,
        stop,
        task,
    }
}

impl Server {
    async fn stop(self) {
        drop(self.stop);
        self.task.await.unwrap().unwrap();
    }

    /// A request signed by the admin key (or `creds`), with `Host` as given.
    fn req(&self, method: Method, path: &str) -> crate::helpers::Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A GET of a `/-/` route with extra headers (e.g. a forged `Host`).
async fn get_with(base: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = no_redirects().get(format!("{base}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    Resp::read(req.send().await.unwrap()).await
}

async fn send_json(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> Resp {
    let mut req = no_redirects()
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    Resp::read(req.send().await.unwrap()).await
}

/// A link into `bucket` under `in/`, signed by the admin key; returns its token.
async fn create_link(state: &postgate::AppState, bucket: &str) -> String {
    let link = postgate::links::new_link(
        bucket,
        "in/",
        10 << 20,
        None,
        None,
        Duration::from_secs(3600),
        ADMIN_AK,
    );
    let token = link.token.clone();
    state
        .db
        .write(move |c| postgate::db::links::insert(c, &link))
        .await
        .unwrap();
    token
}

/// The hidden fields of the upload page's form, unescaped.
fn page_fields(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    html.split(r#"<input type="hidden" name=""#)
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap();
            let value = rest.split_once(r#"value=""#).unwrap().1;
            let value = value.split_once('"').unwrap().0;
            (unescape(name), unescape(value))
        })
        .collect()
}

fn form_of(fields: &[(String, String)], data: &[u8]) -> Form {
    fields
        .iter()
        .fold(Form::new(), |f, (n, v)| f.text(n.clone(), v.clone()))
        .part("file", Part::bytes(data.to_vec()).file_name("hello.txt"))
}

#[track_caller]
fn assert_no_evil(what: &str, res: &Resp) {
    let headers = format!("{:?}", res.headers);
    assert!(
        !res.text().contains(EVIL) && !headers.contains(EVIL),
        "{what} names {EVIL}: {headers} {}",
        res.text()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cli(data_dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("POSTGATE_ACCESS_KEY")
        .env_remove("POSTGATE_SECRET_KEY")
        .env_remove("POSTGATE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Uploaded active content is sandboxed
// ---------------------------------------------------------------------------------------------

const HTML: &[u8] = b"<script>parent.postMessage(localStorage.length, '*')</script>";

async fn public_bucket(app: &TestApp, bucket: &str) {
    app.req(Method::PUT, &format!("/{bucket}"))
        .header("x-amz-acl", "public-read-write")
        .send()
        .await
        .assert_status(200);
}

async fn put_typed(app: &TestApp, bucket: &str, key: &str, content_type: &str, body: &[u8]) {
    app.req(Method::PUT, &obj(bucket, key))
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .await
        .assert_status(200);
}

#[track_caller]
fn assert_sandboxed(what: &str, res: &Resp) {
    assert!(res.status < 300, "{what}: {} {}", res.status, res.text());
    assert_eq!(
        res.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        res.header("content-security-policy"),
        Some("sandbox"),
        "{what}"
    );
}

#[track_caller]
fn assert_not_sandboxed(what: &str, res: &Resp) {
    assert!(res.status < 300, "{what}: {} {}", res.status, res.text());
    assert_eq!(
        res.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(res.header("content-security-policy"), None, "{what}");
}

#[tokio::test]
async fn active_types_are_served_sandboxed_and_nothing_is_sniffed() {
    let app = spawn_app().await;
    public_bucket(&app, "pub").await;
    let active = [
        ("page.html", "text/html"),
        ("page2.html", "TEXT/HTML; charset=utf-8"),
        ("x.xhtml", "application/xhtml+xml"),
        ("img.svg", "image/svg+xml"),
        ("feed.xml", "text/xml"),
        ("doc.xml", "application/xml"),
        ("app.js", "text/javascript"),
        ("app2.js", "application/javascript"),
        ("odd", "application/x-unknown-thing"),
        ("empty-type", ""),
        ("garbage-type", "not a type"),
    ];
    for (key, ct) in active {
        put_typed(&app, "pub", key, ct, HTML).await;
        let path = obj("pub", key);
        // Anonymous reads (the public bucket), HEAD, a range, a signed GET.
        let get = app.req(Method::GET, &path).anonymous().send().await;
        assert_eq!(get.body.as_ref(), HTML);
        assert_sandboxed(&format!("GET {key} ({ct})"), &get);
        let head = app.req(Method::HEAD, &path).anonymous().send().await;
        assert_sandboxed(&format!("HEAD {key}"), &head);
        let ranged = app
            .req(Method::GET, &path)
            .anonymous()
            .header("range", "bytes=0-7")
            .send()
            .await;
        assert_eq!(ranged.status, 206);
        assert_sandboxed(&format!("ranged GET {key}"), &ranged);
        assert_sandboxed(&format!("signed GET {key}"), &app.get(&path).await);
    }
    // An anonymous POST into the public-read-write bucket, as a stranger would upload it.
    let form = Form::new()
        .text("key", "posted.html")
        .text("Content-Type", "text/html")
        .part("file", Part::bytes(HTML.to_vec()).file_name("x.html"));
    let res = reqwest::Client::new()
        .post(format!("{}/pub", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let get = app
        .req(Method::GET, "/pub/posted.html")
        .anonymous()
        .send()
        .await;
    assert_eq!(get.header("content-type"), Some("text/html"));
    assert_sandboxed("posted HTML", &get);

    // Passive types display as they are, still never sniffed.
    for (key, ct) in [
        ("a.png", "image/png"),
        ("a.mp4", "video/mp4"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.bin", "application/octet-stream"),
    ] {
        put_typed(&app, "pub", key, ct, HTML).await;
        let get = app
            .req(Method::GET, &obj("pub", key))
            .anonymous()
            .send()
            .await;
        assert_not_sandboxed(&format!("GET {key} ({ct})"), &get);
    }
    // No type given: S3's binary/octet-stream, a download.
    app.put_object("pub", "untyped", HTML).await;
    let get = app
        .req(Method::GET, "/pub/untyped")
        .anonymous()
        .send()
        .await;
    assert_not_sandboxed("untyped", &get);
}

#[tokio::test]
async fn the_type_decided_is_the_one_sent_after_overrides() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    put_typed(&app, "bkt", "a.png", "image/png", HTML).await;
    put_typed(&app, "bkt", "page.html", "text/html", HTML).await;
    let creds = Creds::admin();
    // A presigned URL overriding the type of a PNG to text/html is sandboxed...
    let url = app.presign_v4(
        &creds,
        Method::GET,
        "/bkt/a.png",
        "response-content-type=text%2Fhtml",
        600,
        time::OffsetDateTime::now_utc(),
    );
    let res = app.send_url(Method::GET, &url, Vec::new()).await;
    assert_eq!(res.header("content-type"), Some("text/html"));
    assert_sandboxed("presigned GET overridden to text/html", &res);
    // ... and one overriding HTML to text/plain is not (the browser shows text).
    let res = app
        .req(Method::GET, "/bkt/page.html")
        .query("response-content-type=text%2Fplain")
        .send()
        .await;
    assert_eq!(res.header("content-type"), Some("text/plain"));
    assert_not_sandboxed("GET overridden to text/plain", &res);
    let res = app
        .req(Method::GET, "/bkt/a.png")
        .query("response-content-type=image%2Fsvg%2Bxml")
        .send()
        .await;
    assert_sandboxed("GET overridden to SVG", &res);
}

#[tokio::test]
async fn multipart_objects_are_sandboxed_too() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    let res = app
        .req(Method::POST, "/bkt/big.html")
        .query("uploads")
        .header("content-type", "text/html")
        .send()
        .await;
    res.assert_status(200);
    let upload_id = xml_tag(&res.text(), "UploadId").unwrap();
    let part = pattern(5 << 20, 1);
    let res = app
        .req(Method::PUT, "/bkt/big.html")
        .query(&format!("partNumber=1&uploadId={upload_id}"))
        .body(part)
        .send()
        .await;
    res.assert_status(200);
    let etag = res.header("etag").unwrap().to_owned();
    let done = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    app.req(Method::POST, "/bkt/big.html")
        .query(&format!("uploadId={upload_id}"))
        .body(done)
        .send()
        .await
        .assert_status(200);
    assert_sandboxed("multipart GET", &app.get("/bkt/big.html").await);
    let ranged = app
        .req(Method::GET, "/bkt/big.html")
        .header("range", "bytes=100-200")
        .send()
        .await;
    assert_sandboxed("multipart ranged GET", &ranged);
}

#[tokio::test]
async fn a_bucket_the_operator_opts_out_serves_active_content_as_is() {
    let app = spawn_app().await;
    public_bucket(&app, "site").await;
    put_typed(&app, "site", "index.html", "text/html", HTML).await;
    let get = || app.req(Method::GET, "/site/index.html").anonymous().send();
    assert_sandboxed("before opting out", &get().await);
    // The running server sees the CLI's change within its bucket cache's 5 s; until then it
    // serves as before.
    let once = |sandboxed: bool| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(7);
        loop {
            let res = get().await;
            let now = res.header("content-security-policy").is_some();
            if now == sandboxed || std::time::Instant::now() > deadline {
                return res;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // The CLI, on the running server's data directory.
    let out = cli(
        app.data_dir(),
        &["bucket", "set", "site", "--active-content", "on"],
    );
    assert!(out.contains("site"), "{out}");
    assert!(cli(app.data_dir(), &["bucket", "list"]).contains(" on"));
    assert_not_sandboxed("after opting out", &once(false).await);
    assert_not_sandboxed("after opting out, again", &get().await);

    cli(
        app.data_dir(),
        &["bucket", "set", "site", "--active-content", "off"],
    );
    assert_sandboxed("after opting back in", &once(true).await);
    assert_sandboxed("after opting back in, again", &get().await);

    // A bucket created with the opt-out.
    cli(
        app.data_dir(),
        &[
            "bucket",
            "create",
            "site2",
            "--acl",
            "public-read",
            "--active-content",
        ],
    );
    put_typed(&app, "site2", "index.html", "text/html", HTML).await;
    let res = app
        .req(Method::GET, "/site2/index.html")
        .anonymous()
        .send()
        .await;
    assert_not_sandboxed("created with --active-content", &res);
}

#[tokio::test]
async fn pages_limit_what_they_load_and_where_they_send() {
    let app = spawn_app().await;
    app.create_bucket("bkt").await;
    let token = create_link(&app.state, "bkt").await;
    for path in [
        format!("/-/u/{token}"),
        format!("/-/u/{token}/done?bucket=bkt&key=k&etag=e"),
        "/-/u/no-such-token".to_owned(),
    ] {
        let res = get_with(&app.base, &path, &[]).await;
        let csp = res.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    }
    // The upload page may post to the server's configured URL.
    let res = get_with(&app.base, &format!("/-/u/{token}"), &[]).await;
    let csp = res.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' {}", app.base)),
        "{csp}"
    );
}

// ---------------------------------------------------------------------------------------------
// URLs never come from an untrusted Host or forwarding header
// ---------------------------------------------------------------------------------------------

/// Everything that builds a URL, asked with `headers` (a forged `Host`, forwarding headers);
/// returns the answers, each checked by the caller.
async fn url_answers(srv: &Server, headers: &[(&str, &str)]) -> Vec<(String, Resp)> {
    let mut out = Vec::new();
    let token = create_link(&srv.state, "bkt").await;
    let base = srv.base.as_str();

    // The page (form action, signed redirect) and its JSON policy.
    let page = get_with(base, &format!("/-/u/{token}"), headers).await;
    page.assert_status(200);
    let fields = page_fields(&page.text());
    out.push(("upload page".to_owned(), page));
    let policy = get_with(base, &format!("/-/u/{token}/policy"), headers).await;
    policy.assert_status(200);
    out.push(("page policy".to_owned(), policy));

    // The page's no-JavaScript form, posted as a browser would: 303 to the signed redirect.
    let mut fields = fields;
    fields.push(("Content-Type".to_owned(), "text/plain".to_owned()));
    let mut req = no_redirects()
        .post(format!("{base}/bkt"))
        .multipart(form_of(&fields, b"hello"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let posted = Resp::read(req.send().await.unwrap()).await;
    assert_eq!(posted.status, 303, "{}", posted.text());
    out.push(("form POST redirect".to_owned(), posted));

    // A POST answering 201 with <PostResponse><Location> (anonymous, public-read-write).
    let form = Form::new()
        .text("key", "anon.txt")
        .text("success_action_status", "201")
        .part("file", Part::bytes(b"hi".to_vec()).file_name("anon.txt"));
    let mut req = no_redirects().post(format!("{base}/bkt")).multipart(form);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let created = Resp::read(req.send().await.unwrap()).await;
    created.assert_status(201);
    out.push(("POST 201 Location".to_owned(), created));

    // S3 multipart complete, signed with the forged Host.
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map_or(srv.host.as_str(), |(_, v)| *v);
    let s3 = |method: Method, path: &str| {
        let mut r = req_to(&srv.base, host, &srv.http, method, path);
        for (n, v) in headers {
            if !n.eq_ignore_ascii_case("host") {
                r = r.header(n, v);
            }
        }
        r
    };
    let res = s3(Method::POST, "/bkt/mp.txt")
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    let upload_id = xml_tag(&res.text(), "UploadId").unwrap();
    let res = s3(Method::PUT, "/bkt/mp.txt")
        .query(&format!("partNumber=1&uploadId={upload_id}"))
        .body(b"part".to_vec())
        .send()
        .await;
    res.assert_status(200);
    let etag = res.header("etag").unwrap().to_owned();
    let res = s3(Method::POST, "/bkt/mp.txt")
        .query(&format!("uploadId={upload_id}"))
        .body(format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
        ))
        .send()
        .await;
    res.assert_status(200);
    out.push(("multipart complete Location".to_owned(), res));

    // The page's own multipart path: part URL and completion.
    let res = send_json(
        Method::POST,
        &format!("{base}/-/u/{token}/uploads"),
        headers,
        serde_json::json!({"filename": "big.txt", "size": 4, "content_type": "text/plain"}),
    )
    .await;
    res.assert_status(200);
    let started: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    let id = started["upload_id"].as_str().unwrap().to_owned();
    let part = get_with(base, &format!("/-/u/{token}/uploads/{id}/parts/1"), headers).await;
    part.assert_status(200);
    let url: serde_json::Value = serde_json::from_slice(&part.body).unwrap();
    // Sent to this server, with the host the URL names (it is signed), wherever that points.
    let url = url::Url::parse(url["url"].as_str().unwrap()).unwrap();
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap()),
        None => url.host_str().unwrap().to_owned(),
    };
    let put = no_redirects()
        .put(format!("{base}{}?{}", url.path(), url.query().unwrap()))
        .header("host", authority)
        .body("data")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    out.push(("link part URL".to_owned(), part));
    let done = send_json(
        Method::POST,
        &format!("{base}/-/u/{token}/uploads/{id}/complete"),
        headers,
        serde_json::json!({}),
    )
    .await;
    done.assert_status(200);
    out.push(("link multipart complete".to_owned(), done));

    // Uppy's routes: the POST params, and a multipart part URL.
    let params = get_with(
        base,
        &format!("/-/u/{token}/s3/params?filename=u.txt&type=text/plain"),
        headers,
    )
    .await;
    params.assert_status(200);
    out.push(("uppy params".to_owned(), params));
    let res = send_json(
        Method::POST,
        &format!("{base}/-/u/{token}/s3/multipart"),
        headers,
        serde_json::json!({"filename": "u2.txt", "type": "text/plain"}),
    )
    .await;
    res.assert_status(200);
    let created: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    let id = created["uploadId"].as_str().unwrap();
    let signed = get_with(base, &format!("/-/u/{token}/s3/multipart/{id}/1"), headers).await;
    signed.assert_status(200);
    out.push(("uppy part URL".to_owned(), signed));

    // The JSON API: a presigned POST and a new link's URL.
    let bearer = format!("Bearer {ADMIN_AK}:{ADMIN_SK}");
    let mut api_headers = headers.to_vec();
    api_headers.push(("authorization", bearer.as_str()));
    let res = send_json(
        Method::POST,
        &format!("{base}/-/api/presign/post"),
        &api_headers,
        serde_json::json!({"bucket": "bkt", "key_prefix": "x/", "max_size": "1MiB"}),
    )
    .await;
    res.assert_status(200);
    out.push(("API presigned POST".to_owned(), res));
    let res = send_json(
        Method::POST,
        &format!("{base}/-/api/links"),
        &api_headers,
        serde_json::json!({"bucket": "bkt", "prefix": "y/", "max_size": "1MiB", "expires_in": "1h"}),
    )
    .await;
    assert!(res.status < 300, "{}", res.text());
    out.push(("API link".to_owned(), res));
    out
}

async fn server_with_public_bucket(dir: &Path, edit: impl FnOnce(&mut Config)) -> Server {
    let srv = start(dir, edit).await;
    srv.req(Method::PUT, "/bkt")
        .header("x-amz-acl", "public-read-write")
        .send()
        .await
        .assert_status(200);
    srv
}

#[tokio::test]
async fn a_forged_host_never_reaches_a_built_url() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_public_bucket(dir.path(), |_| {}).await;
    let answers = url_answers(&srv, &[("host", EVIL)]).await;
    for (what, res) in &answers {
        assert_no_evil(what, res);
    }
    // They name the listen address instead.
    let (_, page) = &answers[0];
    assert!(
        page.text()
            .contains(&format!(r#"action="{}/bkt""#, srv.base)),
        "{}",
        page.text()
    );
    let (_, redirect) = &answers[2];
    let to = redirect.header("location").unwrap();
    assert!(to.starts_with(&format!("{}/-/u/", srv.base)), "{to}");
    srv.stop().await;
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // Trusts a proxy, but not this client.
    let srv = server_with_public_bucket(dir.path(), |c| {
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let forged = [("x-forwarded-host", EVIL), ("x-forwarded-proto", "https")];
    for (what, res) in url_answers(&srv, &forged).await {
        assert_no_evil(&what, &res);
        assert!(!res.text().contains("https://"), "{what}: {}", res.text());
    }
    srv.stop().await;
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_public_bucket(dir.path(), |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let page_path = format!("/-/u/{}", create_link(&srv.state, "bkt").await);
    let forwarded = [
        ("x-forwarded-host", "uploads.example.org"),
        ("x-forwarded-proto", "https"),
    ];
    let page = get_with(&srv.base, &page_path, &forwarded).await;
    let html = page.text();
    assert!(
        html.contains(r#"action="https://uploads.example.org/bkt""#),
        "{html}"
    );
    assert!(
        html.contains("https://uploads.example.org/-/u/"),
        "the signed redirect: {html}"
    );
    // A forwarded host that is not a plain host[:port] is not used.
    let odd = get_with(
        &srv.base,
        &page_path,
        &[("x-forwarded-host", "a@b.example/x")],
    )
    .await;
    assert!(!odd.text().contains("b.example"), "{}", odd.text());
    srv.stop().await;
}

#[tokio::test]
async fn the_public_url_wins_over_everything() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_public_bucket(dir.path(), |c| {
        c.public_url = Some("https://files.example.net".to_owned());
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let headers = [("host", EVIL), ("x-forwarded-host", EVIL)];
    for (what, res) in url_answers(&srv, &headers).await {
        assert_no_evil(&what, &res);
    }
    srv.stop().await;
}

#[tokio::test]
async fn virtual_host_locations_keep_the_bucket_host_of_the_configured_domain() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_public_bucket(dir.path(), |c| {
        c.domain = Some("s3.test".to_owned());
    })
    .await;
    let port = srv.host.rsplit_once(':').unwrap().1;
    let post = |host: String| {
        let form = Form::new()
            .text("key", "v.txt")
            .text("success_action_status", "201")
            .part("file", Part::bytes(b"v".to_vec()).file_name("v.txt"));
        no_redirects()
            .post(format!("{}/", srv.base))
            .header("host", host)
            .multipart(form)
            .send()
    };
    let res = Resp::read(post(format!("bkt.s3.test:{port}")).await.unwrap()).await;
    res.assert_status(201);
    assert_eq!(
        res.header("location"),
        Some(format!("http://bkt.s3.test:{port}/v.txt").as_str())
    );
    srv.stop().await;
}

/// Starts the binary on `addr` and returns what it logged once listening (then stops it).
fn start_log(data_dir: &Path, extra: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("serve")
        .args(extra)
        .env("POSTGATE_ACCESS_KEY", ADMIN_AK)
        .env("POSTGATE_SECRET_KEY", ADMIN_SK)
        .env("NO_COLOR", "1")
        .env_remove("POSTGATE_CONFIG")
        .env_remove("POSTGATE_PUBLIC_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("postgate listening") {
            break;
        }
    }
    // The warning comes right after "listening": give it a moment, then stop the server.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let rest = child.wait_with_output().unwrap();
    log.push_str(&String::from_utf8_lossy(&rest.stderr));
    log
}

#[tokio::test]
async fn a_public_address_without_a_public_url_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let log = start_log(dir.path(), &["--addr", "0.0.0.0:0"]);
    assert!(log.contains("without --public-url"), "{log}");
    let log = start_log(
        dir.path(),
        &["--addr", "0.0.0.0:0", "--public-url", "https://x.example"],
    );
    assert!(!log.contains("without --public-url"), "{log}");
    let log = start_log(dir.path(), &["--addr", "127.0.0.1:0"]);
    assert!(!log.contains("without --public-url"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Rotating the admin key
// ---------------------------------------------------------------------------------------------

const NEW_AK: &str = "PGTESTADMIN000000002";
const NEW_SK: &str = "rotated-admin-secret/000000000000000000000";

#[tokio::test]
async fn a_rotated_admin_key_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let old = Creds::admin();
    let new = Creds::new(NEW_AK, NEW_SK);
    let srv = start(dir.path(), |_| {}).await;
    srv.req(Method::PUT, "/kept")
        .send()
        .await
        .assert_status(200);
    srv.req(Method::PUT, "/kept/a.txt")
        .body(b"kept".to_vec())
        .send()
        .await
        .assert_status(200);
    let token = create_link(&srv.state, "kept").await;
    // A key the operator made is not an installed admin: it must survive the rotation.
    let other = Creds::new("PGOTHERKEY0000000001", "other-secret");
    srv.state
        .db
        .write(move |c| postgate::db::keys::insert(c, "other", &other.ak, &other.sk, false))
        .await
        .unwrap();
    srv.stop().await;

    let srv = start(dir.path(), |c| {
        c.admin_key = Some((NEW_AK.to_owned(), NEW_SK.to_owned()));
    })
    .await;
    srv.req(Method::GET, "/")
        .creds(&old)
        .send()
        .await
        .assert_error(403, "InvalidAccessKeyId");
    srv.req(Method::GET, "/kept/a.txt")
        .creds(&old)
        .send()
        .await
        .assert_error(403, "InvalidAccessKeyId");
    let res = srv.req(Method::GET, "/").creds(&new).send().await;
    res.assert_status(200);
    assert!(res.text().contains("<Name>kept</Name>"), "{}", res.text());
    let res = srv.req(Method::GET, "/kept/a.txt").creds(&new).send().await;
    res.assert_status(200);
    assert_eq!(res.body.as_ref(), b"kept");
    // What the old key owned is the new key's: the bucket and the link it signed.
    let bucket = srv
        .state
        .db
        .read(|c| postgate::db::buckets::get(c, "kept"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bucket.owner, NEW_AK);
    get_with(&srv.base, &format!("/-/u/{token}"), &[])
        .await
        .assert_status(200);
    srv.stop().await;

    let listed = cli(dir.path(), &["key", "list"]);
    assert!(!listed.contains(ADMIN_AK), "{listed}");
    let admin_line = listed.lines().find(|l| l.contains(NEW_AK)).unwrap();
    assert!(admin_line.contains("yes"), "{listed}");
    let other_line = listed.lines().find(|l| l.contains("PGOTHERKEY")).unwrap();
    assert!(other_line.contains("no"), "{listed}");

    // Starting again with the same key changes nothing.
    let srv = start(dir.path(), |c| {
        c.admin_key = Some((NEW_AK.to_owned(), NEW_SK.to_owned()));
    })
    .await;
    srv.req(Method::GET, "/")
        .creds(&new)
        .send()
        .await
        .assert_status(200);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The data directory is private
// ---------------------------------------------------------------------------------------------

fn blob_paths(data_dir: &Path) -> Vec<PathBuf> {
    crate::helpers::blob_files(data_dir)
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let srv = start(&data, |_| {}).await;
    srv.req(Method::PUT, "/bkt").send().await.assert_status(200);
    srv.req(Method::PUT, "/bkt/big")
        .body(pattern(300 << 10, 7))
        .send()
        .await
        .assert_status(200);
    assert_eq!(mode(&data), 0o700, "data dir");
    for name in ["postgate.db", "postgate.db-wal", "postgate.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&data.join("blobs")), 0o700);
    assert_eq!(mode(&data.join("tmp")), 0o700);
    let blobs = blob_paths(&data);
    assert!(!blobs.is_empty());
    for blob in &blobs {
        assert_eq!(mode(blob) & 0o077, 0, "{}", blob.display());
        assert_eq!(mode(blob.parent().unwrap()), 0o700);
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_loose_data_directory_is_tightened_at_start() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let srv = start(&data, |_| {}).await;
    srv.req(Method::PUT, "/bkt").send().await.assert_status(200);
    srv.stop().await;
    let loosen =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    loosen(&data, 0o755);
    loosen(&data.join("blobs"), 0o755);
    loosen(&data.join("tmp"), 0o777);
    loosen(&data.join("postgate.db"), 0o644);

    let srv = start(&data, |_| {}).await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("blobs")), 0o700);
    assert_eq!(mode(&data.join("tmp")), 0o700);
    assert_eq!(mode(&data.join("postgate.db")), 0o600);
    srv.req(Method::GET, "/bkt").send().await.assert_status(200);
    srv.stop().await;

    // The operator CLI opens the same files the same way.
    loosen(&data, 0o750);
    loosen(&data.join("postgate.db"), 0o640);
    cli(&data, &["key", "list"]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("postgate.db")), 0o600);
}
