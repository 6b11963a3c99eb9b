//! Uploads checked against what they claim to be: every upload's type is detected from its first
//! bytes and recorded (`x-postgate-detected-type`); where a link, a policy or the bucket asks for
//! it, bytes that are not the declared type are refused with 400 `XPostgateContentMismatch`
//! before anything is stored, on every path (link form, presigned POST, PUT, multipart, copy).

use reqwest::Method;

use crate::helpers::*;
use crate::linkkit::{make_link, post_form};

/// The first bytes of a PNG (signature and IHDR): what `image/png` must start with.
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
/// The first bytes of a JPEG (SOI, APP0 JFIF).
const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";
/// A page that runs script wherever it is served as HTML.
const HTML: &[u8] = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>";
/// A Windows executable's first bytes.
const EXE: &[u8] = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xFF\xFF\0\0";

const DETECTED: &str = "x-postgate-detected-type";

/// `bytes` padded to `len` with a filler that changes nothing about their type.
fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(len, b' ');
    v
}

/// A JSON API call as the admin (Bearer token): (response, JSON body).
async fn api(app: &TestApp, method: Method, path: &str, body: serde_json::Value) -> Resp {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"));
    if !body.is_null() {
        req = req.body(body.to_string());
    }
    Resp::read(req.send().await.unwrap()).await
}

fn json(res: &Resp) -> serde_json::Value {
    serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null)
}

/// The link as the links API shows it.
async fn link_json(app: &TestApp, id: &str) -> serde_json::Value {
    let res = api(app, Method::GET, "/-/api/links", serde_json::Value::Null).await;
    res.assert_status(200);
    json(&res)["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap()
        .clone()
}

/// An unauthenticated call to a link route, JSON in and out.
async fn call(app: &TestApp, method: Method, path: &str, body: Option<serde_json::Value>) -> Resp {
    let mut req = app.http.request(method, format!("{}{path}", app.base));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    Resp::read(req.send().await.unwrap()).await
}

/// Posts a file through the link's page form, declaring `content_type`.
async fn post_to_link(
    app: &TestApp,
    token: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Resp {
    let res = call(app, Method::GET, &format!("/-/u/{token}/policy"), None).await;
    res.assert_status(200);
    let j = json(&res);
    let fields: Vec<(String, String)> = j["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let url = j["url"].as_str().unwrap();
    post_form(
        app,
        url,
        &fields,
        &[("Content-Type", content_type)],
        name,
        body,
    )
    .await
}

/// The postgate CLI on the running server's data directory.
fn cli(app: &TestApp, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(app.data_dir())
        .args(args)
        .env_remove("POSTGATE_ACCESS_KEY")
        .env_remove("POSTGATE_SECRET_KEY")
        .env_remove("POSTGATE_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A bucket whose uploads must match their declared types (`postgate bucket verify-type`).
async fn verifying_bucket(app: &TestApp, bucket: &str) {
    app.create_bucket(bucket).await;
    let out = cli(app, &["bucket", "verify-type", bucket, "on"]);
    assert!(out.contains(bucket), "{out}");
}

async fn put_typed(app: &TestApp, bucket: &str, key: &str, ct: &str, body: &[u8]) -> Resp {
    app.req(Method::PUT, &obj(bucket, key))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
}

/// Asserts the refusal: 400 `XPostgateContentMismatch`, naming both types.
#[track_caller]
fn assert_mismatch(res: &Resp, declared: &str, detected: &str) {
    res.assert_error(400, "XPostgateContentMismatch");
    let text = res.text();
    assert_eq!(
        xml_tag(&text, "DeclaredType").as_deref(),
        Some(declared),
        "{text}"
    );
    assert_eq!(
        xml_tag(&text, "DetectedType").as_deref(),
        Some(detected),
        "{text}"
    );
    let message = xml_tag(&text, "Message").unwrap();
    assert!(message.contains(declared), "{message}");
    assert!(
        detected == "unknown" || message.contains(detected),
        "{message}"
    );
}

/// Asserts nothing is stored at `bucket/key` and no temp file is left.
async fn assert_not_stored(app: &TestApp, bucket: &str, key: &str) {
    app.get(&obj(bucket, key))
        .await
        .assert_error(404, "NoSuchKey");
    assert!(
        poll_until(std::time::Duration::from_secs(5), || app
            .tmp_files()
            .is_empty())
        .await,
        "temp files left: {:?}",
        app.tmp_files()
    );
}

// 1. Through a link that verifies types.

#[tokio::test]
async fn a_png_through_a_verifying_link_is_stored_with_its_detected_type() {
    let app = spawn_app().await;
    app.create_bucket("photos").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "photos", "prefix": "in/", "verify_type": true}),
    )
    .await;
    assert_eq!(link_json(&app, &id).await["verify_type"], true);

    let res = post_to_link(&app, &token, "cat.png", "image/png", &padded(PNG, 20_000)).await;
    res.assert_status(201);
    assert_eq!(res.header(DETECTED), Some("image/png"));
    let got = app.get("/photos/in/cat.png").await;
    got.assert_status(200);
    assert_eq!(got.header(DETECTED), Some("image/png"));
    assert_eq!(got.header("content-type"), Some("image/png"));
    let head = app.head("/photos/in/cat.png").await;
    assert_eq!(head.header(DETECTED), Some("image/png"));

    // Aliases: a JPEG declared as image/jpg is a JPEG.
    post_to_link(&app, &token, "dog.jpg", "image/jpg", JPEG)
        .await
        .assert_status(201);
    assert_eq!(
        app.head("/photos/in/dog.jpg").await.header(DETECTED),
        Some("image/jpeg")
    );
    assert_eq!(link_json(&app, &id).await["uploaded_files"], 2);
}

#[tokio::test]
async fn html_posted_as_png_through_a_verifying_link_is_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.create_bucket("photos").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "photos", "prefix": "in/", "max_files": 1,
            "verify_type": true}),
    )
    .await;

    // Small (inline) and larger than the prefix the check reads: both refused.
    for (name, body) in [
        ("photo.png", HTML.to_vec()),
        ("big.png", padded(HTML, 300_000)),
    ] {
        let res = post_to_link(&app, &token, name, "image/png", &body).await;
        assert_mismatch(&res, "image/png", "text/html");
        assert_not_stored(&app, "photos", &format!("in/{name}")).await;
        assert_eq!(link_json(&app, &id).await["uploaded_files"], 0);
    }
    // An executable named as a PDF.
    let res = post_to_link(&app, &token, "report.pdf", "application/pdf", EXE).await;
    assert_mismatch(
        &res,
        "application/pdf",
        "application/vnd.microsoft.portable-executable",
    );
    assert_not_stored(&app, "photos", "in/report.pdf").await;
    // Bytes with no recognisable type under a type that always has one.
    let res = post_to_link(&app, &token, "blank.png", "image/png", b"just text").await;
    assert_mismatch(&res, "image/png", "unknown");

    // The slot was given back each time: the one file the link takes is still free.
    post_to_link(&app, &token, "real.png", "image/png", PNG)
        .await
        .assert_status(201);
    assert_eq!(link_json(&app, &id).await["uploaded_files"], 1);
}

#[tokio::test]
async fn a_verifying_links_multipart_upload_refuses_a_first_part_of_another_type() {
    let app = spawn_app().await;
    app.create_bucket("photos").await;
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "photos", "prefix": "in/", "verify_type": true}),
    )
    .await;
    let res = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/uploads"),
        Some(
            serde_json::json!({"filename": "x.png", "size": 300_000, "content_type": "image/png"}),
        ),
    )
    .await;
    res.assert_status(200);
    let (key, upload) = {
        let j = json(&res);
        (
            j["key"].as_str().unwrap().to_owned(),
            j["upload_id"].as_str().unwrap().to_owned(),
        )
    };
    let put_part = |n: u32, body: Vec<u8>| {
        let (app, token, upload) = (&app, &token, &upload);
        async move {
            let path = format!("/-/u/{token}/uploads/{upload}/parts/{n}");
            let res = call(app, Method::GET, &path, None).await;
            res.assert_status(200);
            let url = json(&res)["url"].as_str().unwrap().to_owned();
            Resp::read(app.http.put(url).body(body).send().await.unwrap()).await
        }
    };
    // Part 1 is the object's first bytes: refused at once, nothing kept.
    let res = put_part(1, padded(HTML, 300_000)).await;
    assert_mismatch(&res, "image/png", "text/html");
    assert!(app.tmp_files().is_empty());
    let done = format!("/-/u/{token}/uploads/{upload}/complete");
    let res = call(&app, Method::POST, &done, None).await;
    assert!(res.status >= 400, "{}", res.text());
    assert_not_stored(&app, "photos", &key).await;

    // The real file goes through, and the result names its type.
    put_part(1, padded(PNG, 300_000)).await.assert_status(200);
    let res = call(&app, Method::POST, &done, None).await;
    res.assert_status(200);
    assert_eq!(json(&res)["detected_type"], "image/png");
    assert_eq!(
        app.head(&obj("photos", &key)).await.header(DETECTED),
        Some("image/png")
    );
}

// 2. A presigned POST whose policy asks for the check.

#[tokio::test]
async fn a_presigned_post_with_the_verify_condition_refuses_a_mismatch() {
    let app = spawn_app().await;
    app.create_bucket("posts").await;
    let res = api(
        &app,
        Method::POST,
        "/-/api/presign/post",
        serde_json::json!({"bucket": "posts", "key_prefix": "up/",
            "content_type_prefix": "image/", "verify_type": true}),
    )
    .await;
    res.assert_status(200);
    let j = json(&res);
    let url = j["url"].as_str().unwrap().to_owned();
    let fields: Vec<(String, String)> = j["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert!(
        fields
            .iter()
            .any(|(k, v)| k == "x-postgate-verify-type" && v == "on"),
        "{fields:?}"
    );
    let policy = fields.iter().find(|(k, _)| k == "policy").unwrap();
    let doc = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &policy.1).unwrap(),
    )
    .unwrap();
    assert!(doc.contains(r#"{"x-postgate-verify-type":"on"}"#), "{doc}");

    let ct = [("Content-Type", "image/png")];
    let res = post_form(&app, &url, &fields, &ct, "evil.png", HTML).await;
    assert_mismatch(&res, "image/png", "text/html");
    assert_not_stored(&app, "posts", "up/evil.png").await;

    // The field cannot be dropped: the policy pins it.
    let without: Vec<_> = fields
        .iter()
        .filter(|(k, _)| k != "x-postgate-verify-type")
        .cloned()
        .collect();
    let res = post_form(&app, &url, &without, &ct, "evil.png", HTML).await;
    res.assert_error(403, "AccessDenied");
    assert!(
        res.text().contains("x-postgate-verify-type"),
        "{}",
        res.text()
    );
    assert_not_stored(&app, "posts", "up/evil.png").await;

    let res = post_form(&app, &url, &fields, &ct, "fine.png", PNG).await;
    assert!(res.status < 300, "{}", res.text());
    assert_eq!(
        app.head("/posts/up/fine.png").await.header(DETECTED),
        Some("image/png")
    );

    // The field is no exemption: a policy that does not cover it refuses a form that adds it.
    let res = api(
        &app,
        Method::POST,
        "/-/api/presign/post",
        serde_json::json!({"bucket": "posts", "key_prefix": "up/",
            "content_type_prefix": "image/"}),
    )
    .await;
    let j = json(&res);
    let plain: Vec<(String, String)> = j["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let extra = [
        ("Content-Type", "image/png"),
        ("x-postgate-verify-type", "on"),
    ];
    let res = post_form(&app, &url, &plain, &extra, "x.png", PNG).await;
    res.assert_error(403, "AccessDenied");
}

// 3. A bucket that verifies types: PUT, multipart, copies.

#[tokio::test]
async fn a_verifying_bucket_refuses_a_put_of_another_type() {
    let app = spawn_app().await;
    verifying_bucket(&app, "strict").await;

    let res = put_typed(&app, "strict", "a.png", "image/png", HTML).await;
    assert_mismatch(&res, "image/png", "text/html");
    assert_not_stored(&app, "strict", "a.png").await;
    // Larger than the inline threshold: refused from the first bytes, no temp file left.
    let res = put_typed(&app, "strict", "b.png", "image/png", &padded(HTML, 1 << 20)).await;
    assert_mismatch(&res, "image/png", "text/html");
    assert_not_stored(&app, "strict", "b.png").await;
    // A PNG is not a JPEG, whatever the alias.
    let res = put_typed(&app, "strict", "c.jpg", "image/jpg", PNG).await;
    assert_mismatch(&res, "image/jpg", "image/png");

    let res = put_typed(&app, "strict", "d.png", "image/png", &padded(PNG, 1 << 20)).await;
    res.assert_status(200);
    assert_eq!(res.header(DETECTED), Some("image/png"));
    assert_eq!(
        app.head("/strict/d.png").await.header(DETECTED),
        Some("image/png")
    );
    // Generic types claim nothing: they pass, and the detected type is still recorded.
    put_typed(&app, "strict", "e.bin", "application/octet-stream", HTML)
        .await
        .assert_status(200);
    assert_eq!(
        app.head("/strict/e.bin").await.header(DETECTED),
        Some("text/html")
    );

    // Turned off, the same PUT is stored (its detected type says what it is). A running
    // server sees the CLI's change once its bucket cache lets it go (5 s at most).
    cli(&app, &["bucket", "verify-type", "strict", "off"]);
    let started = std::time::Instant::now();
    loop {
        let res = put_typed(&app, "strict", "a.png", "image/png", HTML).await;
        if res.status == 200 {
            break;
        }
        assert_mismatch(&res, "image/png", "text/html");
        assert!(
            started.elapsed().as_secs() < 10,
            "the setting never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.head("/strict/a.png").await.header(DETECTED),
        Some("text/html")
    );
}

/// CreateMultipartUpload with a Content-Type; returns the upload id.
async fn create_upload(app: &TestApp, bucket: &str, key: &str, ct: &str) -> String {
    let res = app
        .req(Method::POST, &obj(bucket, key))
        .query("uploads")
        .header("content-type", ct)
        .send()
        .await;
    res.assert_status(200);
    xml_tag(&res.text(), "UploadId").unwrap()
}

async fn upload_part(
    app: &TestApp,
    bucket: &str,
    key: &str,
    id: &str,
    n: u32,
    body: &[u8],
) -> Resp {
    app.req(Method::PUT, &obj(bucket, key))
        .query(&format!("partNumber={n}&uploadId={id}"))
        .body(body.to_vec())
        .send()
        .await
}

async fn complete(app: &TestApp, bucket: &str, key: &str, id: &str, parts: &[(u32, &str)]) -> Resp {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            etag.replace('"', "&quot;")
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    app.req(Method::POST, &obj(bucket, key))
        .query(&format!("uploadId={id}"))
        .body(xml)
        .send()
        .await
}

#[tokio::test]
async fn a_verifying_bucket_checks_a_multipart_uploads_first_part() {
    let app = spawn_app().await;
    verifying_bucket(&app, "strict").await;
    let part2 = padded(b"more bytes", 1000);

    // Part 1 refused as it arrives; the upload stays open for the real part 1.
    let id = create_upload(&app, "strict", "m.png", "image/png").await;
    let res = upload_part(&app, "strict", "m.png", &id, 1, &padded(HTML, 5 << 20)).await;
    assert_mismatch(&res, "image/png", "text/html");
    assert!(app.tmp_files().is_empty());
    let list = app
        .req(Method::GET, "/strict/m.png")
        .query(&format!("uploadId={id}"))
        .send()
        .await;
    assert!(
        xml_tags(&list.text(), "PartNumber").is_empty(),
        "{}",
        list.text()
    );
    let res = upload_part(&app, "strict", "m.png", &id, 1, &padded(PNG, 5 << 20)).await;
    res.assert_status(200);
    let e1 = res.header("etag").unwrap().to_owned();
    let res = upload_part(&app, "strict", "m.png", &id, 2, &part2).await;
    let e2 = res.header("etag").unwrap().to_owned();
    complete(&app, "strict", "m.png", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    assert_eq!(
        app.head("/strict/m.png").await.header(DETECTED),
        Some("image/png")
    );

    // Parts that arrived before the bucket verified: Complete checks the first part.
    app.create_bucket("later").await;
    let id = create_upload(&app, "later", "n.png", "image/png").await;
    let res = upload_part(&app, "later", "n.png", &id, 1, &padded(HTML, 5 << 20)).await;
    res.assert_status(200);
    let e1 = res.header("etag").unwrap().to_owned();
    let res = upload_part(&app, "later", "n.png", &id, 2, &part2).await;
    let e2 = res.header("etag").unwrap().to_owned();
    cli(&app, &["bucket", "verify-type", "later", "on"]);
    let res = complete(&app, "later", "n.png", &id, &[(1, &e1), (2, &e2)]).await;
    assert_mismatch(&res, "image/png", "text/html");
    assert_not_stored(&app, "later", "n.png").await;
}

#[tokio::test]
async fn a_copy_into_a_verifying_bucket_is_held_to_the_sources_bytes() {
    let app = spawn_app().await;
    app.create_bucket("loose").await;
    verifying_bucket(&app, "strict").await;
    put_typed(&app, "loose", "page.png", "image/png", HTML)
        .await
        .assert_status(200);
    let res = app
        .req(Method::PUT, "/strict/copy.png")
        .header("x-amz-copy-source", "/loose/page.png")
        .send()
        .await;
    assert_mismatch(&res, "image/png", "text/html");
    assert_not_stored(&app, "strict", "copy.png").await;
    // With its real type it is accepted, and keeps its detected type.
    let res = app
        .req(Method::PUT, "/strict/copy.html")
        .header("x-amz-copy-source", "/loose/page.png")
        .header("x-amz-metadata-directive", "REPLACE")
        .header("content-type", "text/html")
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(
        app.head("/strict/copy.html").await.header(DETECTED),
        Some("text/html")
    );
}

// 4. Without verification a mismatch is stored, and what it is is recorded.

#[tokio::test]
async fn without_verification_a_mismatch_is_stored_with_its_detected_type() {
    let app = spawn_app().await;
    app.create_bucket("open").await;
    put_typed(&app, "open", "x.png", "image/png", HTML)
        .await
        .assert_status(200);
    let got = app.get("/open/x.png").await;
    got.assert_status(200);
    assert_eq!(got.body.as_ref(), HTML);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header(DETECTED), Some("text/html"));

    let (_, token) = make_link(&app, serde_json::json!({"bucket": "open", "prefix": "l/"})).await;
    let res = post_to_link(&app, &token, "y.pdf", "application/pdf", EXE).await;
    res.assert_status(201);
    assert_eq!(
        app.head("/open/l/y.pdf").await.header(DETECTED),
        Some("application/vnd.microsoft.portable-executable")
    );

    // Nothing recognisable: no header.
    put_typed(&app, "open", "t.txt", "text/plain", b"hello")
        .await
        .assert_status(200);
    assert_eq!(app.head("/open/t.txt").await.header(DETECTED), None);
}
