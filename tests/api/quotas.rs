//! Quotas: a bucket's limits (bytes, objects) and a link's total hold on every path (PUT, POST
//! forms, copies, multipart parts and completions, link forms and link parts); an upload that
//! would pass one is refused with `XPostgateQuotaExceeded` before its bytes are stored, and
//! concurrent uploads cannot pass it together.

use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::linkkit::make_link;
use postgate::db::quota::{Quota, Usage};

const QUOTA: &str = "XPostgateQuotaExceeded";

/// Sets `bucket`'s quota as `postgate bucket quota` does (through the server's bucket cache,
/// which forgets the bucket).
async fn set_quota(app: &TestApp, bucket: &str, max_size: Option<u64>, max_objects: Option<u64>) {
    let b = bucket.to_owned();
    let quota = Quota {
        max_size,
        max_objects,
    };
    let found = app
        .state
        .write_bucket(move |c| postgate::db::quota::set(c, &b, quota))
        .await
        .unwrap();
    assert!(found);
}

async fn usage(app: &TestApp, bucket: &str) -> Usage {
    let b = bucket.to_owned();
    app.state
        .db
        .read(move |c| postgate::db::quota::usage(c, &b, None))
        .await
        .unwrap()
}

/// (count, total bytes) of the bucket's objects, through ListObjectsV2.
async fn listed(app: &TestApp, bucket: &str) -> (usize, u64) {
    let res = app
        .req(Method::GET, &format!("/{bucket}"))
        .query("list-type=2")
        .send()
        .await;
    res.assert_status(200);
    let sizes = xml_tags(&res.text(), "Size");
    (
        sizes.len(),
        sizes.iter().map(|s| s.parse::<u64>().unwrap()).sum(),
    )
}

/// Reservations left behind (there must be none once every upload has answered).
async fn reservations(app: &TestApp) -> i64 {
    // A failed upload gives its room back in the background, just after its answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.state
        .db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM quota_reservations", [], |r| r.get(0))?))
        .await
        .unwrap()
}

#[tokio::test]
async fn puts_are_held_to_the_bucket_quota_and_overwrites_count_the_difference() {
    let app = spawn_app().await;
    app.create_bucket("qput").await;
    set_quota(&app, "qput", Some(1000), Some(3)).await;
    app.put_object("qput", "a", vec![b'a'; 600]).await;
    let over = app.put(&obj("qput", "b"), vec![b'b'; 401]).await;
    over.assert_error(400, QUOTA);
    app.get(&obj("qput", "b"))
        .await
        .assert_error(404, "NoSuchKey");
    // Replacing `a` frees its 600 bytes: 900 fits, then 100 more.
    app.put_object("qput", "a", vec![b'A'; 900]).await;
    app.put_object("qput", "b", vec![b'b'; 100]).await;
    app.put(&obj("qput", "c"), vec![b'c'; 1])
        .await
        .assert_error(400, QUOTA);
    // The quota of objects: a third key fits, a fourth does not; an overwrite adds none.
    set_quota(&app, "qput", Some(10_000), Some(3)).await;
    app.put_object("qput", "c", vec![b'c'; 10]).await;
    app.put(&obj("qput", "d"), vec![b'd'; 10])
        .await
        .assert_error(400, QUOTA);
    app.put_object("qput", "c", vec![b'C'; 20]).await;
    // A deleted object gives its room back.
    app.delete(&obj("qput", "a")).await.assert_status(204);
    app.put_object("qput", "d", vec![b'd'; 10]).await;
    let used = usage(&app, "qput").await;
    assert_eq!(
        (used.objects as usize, used.bytes),
        listed(&app, "qput").await
    );
    assert_eq!((used.objects, used.bytes), (3, 130));
    assert_eq!(reservations(&app).await, 0);
}

/// The refusal comes from the declared length, before a byte of the body is read.
#[tokio::test]
async fn a_put_that_cannot_fit_is_answered_before_its_body_is_sent() {
    let app = spawn_app().await;
    app.create_bucket("qearly").await;
    set_quota(&app, "qearly", Some(1 << 20), None).await;
    let before = (app.tmp_files().len(), blob_files(app.data_dir()).len());
    let body = vec![b'x'; 2 << 20];
    let p = app
        .req(Method::PUT, &obj("qearly", "big"))
        .body(body.clone())
        .unsigned()
        .prepare();
    let mut stream = app.connect().await;
    // The head only: the server must answer without waiting for the 2 MiB.
    stream.write_all(&p.head_bytes(body.len())).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            if n == 0 || String::from_utf8_lossy(&buf).contains("</Error>") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer before the body was sent");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains(QUOTA), "{text}");
    assert_eq!(
        (app.tmp_files().len(), blob_files(app.data_dir()).len()),
        before
    );
    app.get(&obj("qearly", "big"))
        .await
        .assert_error(404, "NoSuchKey");
}

/// 16 uploads at once into a quota that fits 10: exactly 10 are stored, the rest refused, and
/// what the bucket counts is what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_cannot_overshoot_the_quota_together() {
    let app = spawn_app().await;
    app.create_bucket("qrace").await;
    const SIZE: usize = 100 << 10; // above the inline threshold: blob files
    set_quota(&app, "qrace", Some(10 * SIZE as u64), None).await;
    let puts = (0..16).map(|i| {
        let app = &app;
        async move {
            app.put(&obj("qrace", &format!("f{i}")), vec![i as u8; SIZE])
                .await
        }
    });
    let answers = futures_util::future::join_all(puts).await;
    let stored = answers.iter().filter(|r| r.status == 200).count();
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(400, QUOTA);
    }
    assert_eq!(stored, 10);
    let used = usage(&app, "qrace").await;
    assert_eq!(listed(&app, "qrace").await, (10, 10 * SIZE as u64));
    assert_eq!((used.objects, used.bytes), (10, 10 * SIZE as u64));
    assert_eq!(blob_files(app.data_dir()).len(), 10);
    assert_eq!(reservations(&app).await, 0);
}

#[tokio::test]
async fn forms_and_copies_are_held_to_the_quota() {
    let app = spawn_app().await;
    app.create_bucket("qform").await;
    set_quota(&app, "qform", Some(1000), None).await;
    let policy = crate::json_api::api_policy(
        &app,
        serde_json::json!({"bucket": "qform", "key_prefix": "f/"}),
    )
    .await;
    let post = |key: &'static str, len: usize| post_form(&app, &policy, key, len);
    let ok = post("f/one", 700).await;
    assert!(ok.status < 300, "{}", ok.text());
    post("f/two", 400).await.assert_error(400, QUOTA);
    app.get(&obj("qform", "f/two"))
        .await
        .assert_error(404, "NoSuchKey");
    let ok = post("f/two", 300).await;
    assert!(ok.status < 300, "{}", ok.text());
    // A copy brings its source's size: nothing is left.
    app.req(Method::PUT, &obj("qform", "copy"))
        .header("x-amz-copy-source", "/qform/f/two")
        .send()
        .await
        .assert_error(400, QUOTA);
    app.get(&obj("qform", "copy"))
        .await
        .assert_error(404, "NoSuchKey");
    // Replacing `one` with a copy of `two` frees 400 bytes.
    app.req(Method::PUT, &obj("qform", "f/one"))
        .header("x-amz-copy-source", "/qform/f/two")
        .send()
        .await
        .assert_status(200);
    assert_eq!(listed(&app, "qform").await, (2, 600));
    assert_eq!(reservations(&app).await, 0);
}

async fn create_upload(app: &TestApp, bucket: &str, key: &str) -> String {
    let res = app
        .req(Method::POST, &obj(bucket, key))
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    xml_tag(&res.text(), "UploadId").unwrap()
}

async fn upload_part(app: &TestApp, path: &str, id: &str, n: u32, body: Vec<u8>) -> Resp {
    app.req(Method::PUT, path)
        .query(&format!("partNumber={n}&uploadId={id}"))
        .body(body)
        .send()
        .await
}

#[tokio::test]
async fn multipart_parts_and_completions_are_held_to_the_quota() {
    let app = spawn_app().await;
    app.create_bucket("qmp").await;
    const MIB: usize = 1 << 20;
    set_quota(&app, "qmp", Some(7 * MIB as u64), Some(1)).await;
    let path = obj("qmp", "big");
    let id = create_upload(&app, "qmp", "big").await;
    // Begun while the bucket has no object yet; it completes last.
    let path2 = obj("qmp", "second");
    let id2 = create_upload(&app, "qmp", "second").await;
    let p1 = upload_part(&app, &path, &id, 1, vec![1; 5 * MIB]).await;
    p1.assert_status(200);
    // Unfinished parts count: 5 MiB stored, 3 MiB more does not fit.
    upload_part(&app, &path, &id, 2, vec![2; 3 * MIB])
        .await
        .assert_error(400, QUOTA);
    app.put(&obj("qmp", "other"), vec![0; 3 * MIB])
        .await
        .assert_error(400, QUOTA);
    // Replacing part 1 counts the difference.
    upload_part(&app, &path, &id, 1, vec![1; 6 * MIB])
        .await
        .assert_status(200);
    let p2 = upload_part(&app, &path, &id, 2, vec![2; MIB]).await;
    p2.assert_status(200);
    let parts = app
        .req(Method::GET, &path)
        .query(&format!("uploadId={id}"))
        .send()
        .await;
    let etags = xml_tags(&parts.text(), "ETag");
    assert_eq!(etags.len(), 2);
    let complete = |path: String, id: String, etags: Vec<String>| {
        let body = format!(
            "<CompleteMultipartUpload>{}</CompleteMultipartUpload>",
            etags
                .iter()
                .enumerate()
                .map(|(i, e)| format!(
                    "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                    i + 1
                ))
                .collect::<String>()
        );
        let app = &app;
        async move {
            app.req(Method::POST, &path)
                .query(&format!("uploadId={id}"))
                .body(body)
                .send()
                .await
        }
    };
    complete(path.clone(), id.clone(), etags)
        .await
        .assert_status(200);
    assert_eq!(usage(&app, "qmp").await.bytes, 7 * MIB as u64);
    // The quota of objects holds at completion: a second key does not fit.
    set_quota(&app, "qmp", Some(100 * MIB as u64), Some(1)).await;
    let p = upload_part(&app, &path2, &id2, 1, vec![3; 10]).await;
    p.assert_status(200);
    let etag = p.header("etag").unwrap().to_owned();
    complete(path2.clone(), id2.clone(), vec![etag])
        .await
        .assert_error(400, QUOTA);
    // A new upload that could never complete is refused when it begins.
    app.req(Method::POST, &obj("qmp", "third"))
        .query("uploads")
        .send()
        .await
        .assert_error(400, QUOTA);
    app.get(&path2).await.assert_error(404, "NoSuchKey");
    let used = usage(&app, "qmp").await;
    assert_eq!((used.objects, used.bytes), (1, 7 * MIB as u64));
    assert_eq!(reservations(&app).await, 0);
}

async fn link_json(
    app: &TestApp,
    path: &str,
    body: Option<serde_json::Value>,
) -> (Resp, serde_json::Value) {
    let mut req = match &body {
        Some(_) => app.http.post(format!("{}{path}", app.base)),
        None => app.http.get(format!("{}{path}", app.base)),
    };
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

/// Posts a file with the link page's form.
async fn post_to_link(app: &TestApp, token: &str, name: &str, len: usize) -> Resp {
    let (res, json) = link_json(app, &format!("/-/u/{token}/policy"), None).await;
    res.assert_status(200);
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in json["fields"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    form = form.text("Content-Type", "text/plain");
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(vec![b'l'; len]).file_name(name.to_owned()),
    );
    let url = json["url"].as_str().unwrap();
    Resp::read(app.http.post(url).multipart(form).send().await.unwrap()).await
}

#[tokio::test]
async fn a_links_total_holds_on_its_forms_and_its_parts() {
    let app = spawn_app().await;
    app.create_bucket("qlink").await;
    const MIB: u64 = 1 << 20;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "qlink", "prefix": "in/", "max_total_size": 6 * MIB}),
    )
    .await;
    let first = post_to_link(&app, &token, "a.txt", 3 << 20).await;
    assert!(first.status < 300, "{}", first.text());
    let over = post_to_link(&app, &token, "b.txt", (3 << 20) + 1).await;
    over.assert_error(400, QUOTA);
    app.get(&obj("qlink", "in/b.txt"))
        .await
        .assert_error(404, "NoSuchKey");
    // The link's page multipart path: its parts count against the same total.
    let (res, json) = link_json(
        &app,
        &format!("/-/u/{token}/uploads"),
        Some(serde_json::json!({"filename": "c.bin", "size": 3 * MIB, "content_type": "application/octet-stream"})),
    )
    .await;
    res.assert_status(200);
    let upload = json["upload_id"].as_str().unwrap().to_owned();
    let (_, url) = link_json(
        &app,
        &format!("/-/u/{token}/uploads/{upload}/parts/1"),
        None,
    )
    .await;
    let part = Resp::read(
        app.http
            .put(url["url"].as_str().unwrap())
            .body(vec![b'p'; (3 << 20) + 1])
            .send()
            .await
            .unwrap(),
    )
    .await;
    part.assert_error(400, QUOTA);
    let part = Resp::read(
        app.http
            .put(url["url"].as_str().unwrap())
            .body(vec![b'p'; 3 << 20])
            .send()
            .await
            .unwrap(),
    )
    .await;
    part.assert_status(200);
    let (done, _) = link_json(
        &app,
        &format!("/-/u/{token}/uploads/{upload}/complete"),
        Some(serde_json::json!({})),
    )
    .await;
    done.assert_status(200);
    let listed = Resp::read(
        app.http
            .get(format!("{}/-/api/links", app.base))
            .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let json: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    let link = json["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id.as_str())
        .unwrap();
    assert_eq!(link["uploaded_bytes"].as_u64(), Some(6 * MIB));
    assert_eq!(link["max_total_size"].as_u64(), Some(6 * MIB));
    post_to_link(&app, &token, "d.txt", 1)
        .await
        .assert_error(400, QUOTA);
    // The page's multipart start declares the size: refused at once.
    let (res, json) = link_json(
        &app,
        &format!("/-/u/{token}/uploads"),
        Some(serde_json::json!({"filename": "e.bin", "size": 1, "content_type": "application/octet-stream"})),
    )
    .await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(json["error"]["code"], QUOTA);
    assert_eq!(reservations(&app).await, 0);
}

/// `postgate bucket quota` sets, shows and clears a quota on a running server's data directory.
#[tokio::test]
async fn the_cli_sets_shows_and_clears_a_quota() {
    let app = spawn_app().await;
    app.create_bucket("qcli").await;
    app.put_object("qcli", "k", vec![b'k'; 100]).await;
    let cli = |args: &'static [&'static str]| {
        let dir = app.data_dir().to_owned();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
                .arg("--data-dir")
                .arg(dir)
                .args(["bucket", "quota", "qcli"])
                .args(args)
                .env_remove("POSTGATE_ACCESS_KEY")
                .env_remove("POSTGATE_SECRET_KEY")
                .env_remove("POSTGATE_CONFIG")
                .env_remove("POSTGATE_DATA_DIR")
                .output()
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let set = cli(&["--max-size", "1KiB", "--max-objects", "5"]).await;
    assert!(set.contains("max size 1 KiB, max objects 5"), "{set}");
    let shown = cli(&[]).await;
    assert!(shown.contains("100 bytes in 1 objects"), "{shown}");
    // Every commit reads the quota from the database: it holds at once.
    app.put(&obj("qcli", "big"), vec![b'b'; 1000])
        .await
        .assert_error(400, QUOTA);
    let cleared = cli(&["--clear"]).await;
    assert!(
        cleared.contains("max size none, max objects none"),
        "{cleared}"
    );
    app.put_object("qcli", "big", vec![b'b'; 1000]).await;
}

/// Forms bring a size known only as a bound: 16 at once into a link whose total fits 10 never
/// store more than 10, and what the link and the bucket count is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_forms_cannot_overshoot_a_links_total() {
    let app = spawn_app().await;
    app.create_bucket("qforms").await;
    const SIZE: usize = 100 << 10;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "qforms", "prefix": "in/", "max_total_size": 10 * SIZE}),
    )
    .await;
    let posts = (0..16).map(|i| {
        let (app, token) = (&app, token.clone());
        async move { post_to_link(app, &token, &format!("f{i}.txt"), SIZE).await }
    });
    let answers = futures_util::future::join_all(posts).await;
    let stored = answers.iter().filter(|r| r.status < 300).count();
    for r in answers.iter().filter(|r| r.status >= 300) {
        r.assert_error(400, QUOTA);
    }
    assert_eq!(stored, 10, "{stored} stored");
    assert_eq!(
        listed(&app, "qforms").await,
        (stored, (stored * SIZE) as u64)
    );
    let link_id = id.clone();
    let uploaded: i64 = app
        .state
        .db
        .read(move |c| {
            Ok(c.query_row(
                "SELECT uploaded_bytes FROM links WHERE id = ?1",
                [&link_id],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(uploaded as usize, stored * SIZE);
    assert_eq!(blob_files(app.data_dir()).len(), stored);
    assert_eq!(reservations(&app).await, 0);
    eprintln!("{stored} of 16 concurrent forms stored under a total that fits 10");
}

/// Posts `len` bytes to `key` with a form policy of `bucket` (the file's size unknown up front).
async fn post_form(app: &TestApp, policy: &serde_json::Value, key: &str, len: usize) -> Resp {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in policy["fields"].as_object().unwrap() {
        let v = if k == "key" { key } else { v.as_str().unwrap() };
        form = form.text(k.clone(), v.to_owned());
    }
    form = form.part("file", reqwest::multipart::Part::bytes(vec![b'f'; len]));
    let req = app
        .http
        .post(policy["url"].as_str().unwrap())
        .multipart(form);
    Resp::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn uploads_fill_a_quota_exactly() {
    let app = spawn_app().await;
    const KIB: usize = 1024;
    // Forms: ten files of 1 KiB fit a quota of 10 KiB, the eleventh does not.
    app.create_bucket("qexact").await;
    set_quota(&app, "qexact", Some(10 * KIB as u64), None).await;
    let policy = crate::json_api::api_policy(
        &app,
        serde_json::json!({"bucket": "qexact", "key_prefix": "f/"}),
    )
    .await;
    for i in 0..10 {
        let r = post_form(&app, &policy, &format!("f/{i}"), KIB).await;
        assert!(r.status < 300, "form {i}: {} {}", r.status, r.text());
    }
    post_form(&app, &policy, "f/10", KIB)
        .await
        .assert_error(400, QUOTA);
    assert_eq!(listed(&app, "qexact").await, (10, 10 * KIB as u64));
    // PUTs: the same.
    app.create_bucket("qexactput").await;
    set_quota(&app, "qexactput", Some(10 * KIB as u64), None).await;
    for i in 0..10 {
        let r = app
            .put(&obj("qexactput", &format!("p{i}")), vec![b'p'; KIB])
            .await;
        assert!(r.status < 300, "put {i}: {} {}", r.status, r.text());
    }
    app.put(&obj("qexactput", "p10"), vec![b'p'; KIB])
        .await
        .assert_error(400, QUOTA);
    assert_eq!(listed(&app, "qexactput").await, (10, 10 * KIB as u64));
    // A link's total: the same.
    app.create_bucket("qexactlink").await;
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "qexactlink", "prefix": "in/", "max_total_size": 10 * KIB}),
    )
    .await;
    for i in 0..10 {
        let r = post_to_link(&app, &token, &format!("l{i}.txt"), KIB).await;
        assert!(r.status < 300, "link form {i}: {} {}", r.status, r.text());
    }
    post_to_link(&app, &token, "l10.txt", KIB)
        .await
        .assert_error(400, QUOTA);
    assert_eq!(listed(&app, "qexactlink").await, (10, 10 * KIB as u64));
    assert_eq!(reservations(&app).await, 0);
}

#[tokio::test]
async fn twenty_concurrent_uploads_against_room_for_ten_store_exactly_ten() {
    let app = spawn_app().await;
    const SIZE: usize = 100 << 10; // above the inline threshold: blob files
    for b in ["qcform", "qcput", "qclink"] {
        app.create_bucket(b).await;
    }
    set_quota(&app, "qcform", Some(10 * SIZE as u64), None).await;
    set_quota(&app, "qcput", Some(10 * SIZE as u64), None).await;
    let policy = crate::json_api::api_policy(
        &app,
        serde_json::json!({"bucket": "qcform", "key_prefix": "f/"}),
    )
    .await;
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "qclink", "prefix": "in/", "max_total_size": 10 * SIZE}),
    )
    .await;
    let check = |what: &str, answers: Vec<Resp>| {
        for r in answers.iter().filter(|r| r.status >= 300) {
            r.assert_error(400, QUOTA);
        }
        let stored = answers.iter().filter(|r| r.status < 300).count();
        assert_eq!(stored, 10, "{what}: {stored} of 20 stored");
    };
    let forms = (0..20).map(|i| {
        let (app, policy) = (&app, &policy);
        async move { post_form(app, policy, &format!("f/{i}"), SIZE).await }
    });
    check("forms", futures_util::future::join_all(forms).await);
    let puts = (0..20).map(|i| {
        let app = &app;
        async move {
            app.put(&obj("qcput", &format!("p{i}")), vec![b'p'; SIZE])
                .await
        }
    });
    check("puts", futures_util::future::join_all(puts).await);
    let links = (0..20).map(|i| {
        let (app, token) = (&app, token.clone());
        async move { post_to_link(app, &token, &format!("l{i}.txt"), SIZE).await }
    });
    check("link forms", futures_util::future::join_all(links).await);
    for b in ["qcform", "qcput", "qclink"] {
        assert_eq!(listed(&app, b).await, (10, 10 * SIZE as u64), "{b}");
    }
    assert_eq!(blob_files(app.data_dir()).len(), 30);
    assert_eq!(reservations(&app).await, 0);
}
