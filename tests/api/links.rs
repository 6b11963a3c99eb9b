//! Upload links hold every limit on every path: each file takes one slot and gives it back at
//! most once, only forms the link signed count against it, multipart parts are held to the link's
//! size and state, type lists are matched exactly, and link uploads never replace a file.

use reqwest::Method;

use crate::helpers::*;
use crate::linkkit::*;

/// How many files the link has counted (`uploaded_files` in the links API).
async fn counted(app: &TestApp, id: &str) -> u64 {
    let (res, json) = api(
        app,
        Method::GET,
        "/-/api/links",
        (ADMIN_AK, ADMIN_SK),
        serde_json::Value::Null,
    )
    .await;
    res.assert_status(200);
    json["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap()["uploaded_files"]
        .as_u64()
        .unwrap()
}

/// Posts a text file with the page's generic form (key `prefix${filename}`).
async fn post_text(app: &TestApp, token: &str, name: &str, body: &[u8]) -> Resp {
    let (url, fields) = link_form(app, token, "").await;
    post_form(
        app,
        &url,
        &fields,
        &[("Content-Type", "text/plain")],
        name,
        body,
    )
    .await
}

/// Begins a multipart upload through the page's route: (status, JSON).
async fn begin(
    app: &TestApp,
    token: &str,
    filename: &str,
    size: u64,
    content_type: &str,
) -> (Resp, serde_json::Value) {
    call(
        app,
        Method::POST,
        &format!("/-/u/{token}/uploads"),
        Some(serde_json::json!({"filename": filename, "size": size, "content_type": content_type})),
    )
    .await
}

/// Begins and asserts success: (key, upload id).
async fn begun(app: &TestApp, token: &str, filename: &str, size: u64) -> (String, String) {
    let (res, json) = begin(app, token, filename, size, "application/octet-stream").await;
    res.assert_status(200);
    (
        json["key"].as_str().unwrap().to_owned(),
        json["upload_id"].as_str().unwrap().to_owned(),
    )
}

/// PUTs `body` as part `n` through the page's presigned part URL.
async fn put_part(app: &TestApp, token: &str, upload: &str, n: u32, body: Vec<u8>) -> Resp {
    let (res, json) = call(
        app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}/parts/{n}"),
        None,
    )
    .await;
    res.assert_status(200);
    let url = json["url"].as_str().unwrap();
    Resp::read(app.http.put(url).body(body).send().await.unwrap()).await
}

/// Keys of the bucket's objects, through ListObjectsV2.
async fn keys(app: &TestApp, bucket: &str) -> Vec<String> {
    let res = app
        .req(Method::GET, &format!("/{bucket}"))
        .query("list-type=2")
        .send()
        .await;
    res.assert_status(200);
    xml_tags(&res.text(), "Key")
}

/// Posts files with one form until the link refuses one; answers how many it took.
async fn fill(app: &TestApp, token: &str, tag: &str) -> usize {
    let (url, fields) = link_form(app, token, "").await;
    for n in 0..10 {
        let name = format!("{tag}-{n}.txt");
        let res = post_form(
            app,
            &url,
            &fields,
            &[("Content-Type", "text/plain")],
            &name,
            b"x",
        )
        .await;
        if res.status != 201 {
            res.assert_error(403, "AccessDenied");
            assert!(
                res.text().contains("all the files it accepts"),
                "{}",
                res.text()
            );
            return n;
        }
    }
    panic!("the link never filled up");
}

fn json_code(json: &serde_json::Value) -> &str {
    json["error"]["code"].as_str().unwrap_or_default()
}

// 1. A slot is released exactly once.

#[tokio::test]
async fn concurrent_aborts_of_one_upload_release_its_slot_once() {
    let app = spawn_app().await;
    app.create_bucket("once").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "once", "prefix": "in/", "max_files": 2}),
    )
    .await;
    post_text(&app, &token, "first.txt", b"1")
        .await
        .assert_status(201);
    let (_, upload) = begun(&app, &token, "big.bin", 10).await;
    assert_eq!(counted(&app, &id).await, 2);

    let path = format!("/-/u/{token}/uploads/{upload}");
    let aborts = (0..24).map(|_| call(&app, Method::DELETE, &path, None));
    let answers = futures_util::future::join_all(aborts).await;
    let ok = answers.iter().filter(|(r, _)| r.status == 204).count();
    assert_eq!(ok, 1, "exactly one abort removes the upload");
    for (res, json) in answers.iter().filter(|(r, _)| r.status != 204) {
        assert_eq!(res.status, 404, "{}", res.text());
        assert_eq!(json_code(json), "NoSuchUpload");
    }
    assert_eq!(counted(&app, &id).await, 1);
    // The link takes exactly two files in all.
    assert_eq!(fill(&app, &token, "more").await, 1);
    assert_eq!(keys(&app, "once").await.len(), 2);
}

#[tokio::test]
async fn complete_racing_aborts_counts_the_upload_once() {
    let app = spawn_app().await;
    app.create_bucket("race").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "race", "prefix": "in/", "max_files": 2}),
    )
    .await;
    let (key, upload) = begun(&app, &token, "v.bin", 5).await;
    put_part(&app, &token, &upload, 1, b"12345".to_vec())
        .await
        .assert_status(200);
    let (done_path, path) = (
        format!("/-/u/{token}/uploads/{upload}/complete"),
        format!("/-/u/{token}/uploads/{upload}"),
    );
    let complete = call(&app, Method::POST, &done_path, None);
    let aborts =
        futures_util::future::join_all((0..12).map(|_| call(&app, Method::DELETE, &path, None)));
    let ((done, _), aborted) = tokio::join!(complete, aborts);
    let aborted = aborted.iter().filter(|(r, _)| r.status == 204).count();
    let completed = usize::from(done.status == 200);
    assert_eq!(completed + aborted, 1, "one of them wins: {}", done.text());
    let stored = keys(&app, "race").await;
    assert_eq!(stored.contains(&key), completed == 1);
    assert_eq!(counted(&app, &id).await, completed as u64);
    // Whichever won, the link takes two files in all.
    let more = fill(&app, &token, "more").await;
    assert_eq!(completed + more, 2);
    assert_eq!(keys(&app, "race").await.len(), 2);
}

#[tokio::test]
async fn the_expiry_sweep_releases_a_links_slot_once() {
    let app = spawn_app().await;
    app.create_bucket("sweep").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "sweep", "prefix": "in/", "max_files": 1}),
    )
    .await;
    let (_, upload) = begun(&app, &token, "old.bin", 5).await;
    put_part(&app, &token, &upload, 1, b"12345".to_vec())
        .await
        .assert_status(200);
    let (res, json) = begin(&app, &token, "other.bin", 5, "binary/octet-stream").await;
    assert_eq!(res.status, 410, "the link is full while the upload runs");
    assert_eq!(json_code(&json), "LinkUnavailable");

    // Two sweeps and an abort at once: the upload goes once, its slot comes back once.
    let cutoff = postgate::db::now_millis() + 60_000;
    let path = format!("/-/u/{token}/uploads/{upload}");
    let abort = call(&app, Method::DELETE, &path, None);
    let (a, b, (res, _)) = tokio::join!(
        postgate::objects::multipart::expire(
            &app.state.db,
            &app.state.uploads,
            &app.state.store,
            cutoff
        ),
        postgate::objects::multipart::expire(
            &app.state.db,
            &app.state.uploads,
            &app.state.store,
            cutoff
        ),
        abort
    );
    let removed = a.unwrap() + b.unwrap() + usize::from(res.status == 204);
    assert_eq!(removed, 1);
    assert_eq!(counted(&app, &id).await, 0);
    assert!(blob_files(app.data_dir()).is_empty(), "the part is freed");
    assert_eq!(fill(&app, &token, "after").await, 1);
}

// 2. Only the link's own uploads count against it.

#[tokio::test]
async fn only_forms_signed_for_the_link_count_against_it() {
    let app = spawn_app().await;
    app.state
        .db
        .write(|c| postgate::db::buckets::create(c, "open", ADMIN_AK, "public-read-write"))
        .await
        .unwrap();
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "open", "prefix": "in/", "max_files": 1}),
    )
    .await;
    let url = format!("{}/open", app.base);

    // Anyone may post into a public-write bucket, but naming the link there is refused.
    let res = post_form(
        &app,
        &url,
        &[],
        &[("key", "in/anon.txt"), ("x-amz-meta-upload-link", &id)],
        "anon.txt",
        b"anon",
    )
    .await;
    res.assert_error(403, "AccessDenied");
    assert!(
        res.text().contains("not signed for that link"),
        "{}",
        res.text()
    );

    // Another key may write to the bucket, but the API will not sign the link's field for it...
    let other = app.create_key("other").await;
    app.allow("open", &other.ak, postgate::db::buckets::Perm::Write)
        .await;
    let (res, json) = api(
        &app,
        Method::POST,
        "/-/api/presign/post",
        (&other.ak, &other.sk),
        serde_json::json!({"bucket": "open", "key": "in/other.txt",
                           "metadata": {"upload-link": id}}),
    )
    .await;
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(json_code(&json), "InvalidRequest");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upload-link")
    );

    // ... and a policy it signs itself with the field is not the link's either.
    let req = postgate::policy::PostPolicyRequest {
        metadata: vec![("upload-link".into(), id.clone())],
        ..postgate::policy::PostPolicyRequest::new(
            "open",
            postgate::policy::KeySpec::Exact("in/other.txt".into()),
            1024,
        )
    };
    let post = postgate::policy::issue(
        &req,
        &other.ak,
        &other.sk,
        REGION,
        &url,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let res = post_form(&app, &url, &post.fields, &[], "other.txt", b"other").await;
    res.assert_error(403, "AccessDenied");

    assert!(keys(&app, "open").await.is_empty(), "nothing stored");
    assert_eq!(counted(&app, &id).await, 0, "nothing counted");
    // The link's own file still goes through, and then it is full.
    post_text(&app, &token, "mine.txt", b"mine")
        .await
        .assert_status(201);
    assert_eq!(counted(&app, &id).await, 1);
    assert_eq!(keys(&app, "open").await, ["in/mine.txt"]);
}

// 3. A one-file link accepts one multipart upload.

#[tokio::test]
async fn a_one_file_link_takes_one_multipart_upload() {
    let app = spawn_app().await;
    app.create_bucket("single").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "single", "prefix": "in/", "max_files": 1}),
    )
    .await;
    let (key, upload) = begun(&app, &token, "movie.bin", 7).await;
    put_part(&app, &token, &upload, 1, b"movie!!".to_vec())
        .await
        .assert_status(200);
    let (res, parts) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}"),
        None,
    )
    .await;
    res.assert_status(200);
    assert_eq!(parts["parts"][0]["size"], 7);
    let (res, done) = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/uploads/{upload}/complete"),
        None,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(done["key"], key);
    assert_eq!(
        &app.get(&format!("/single/{key}")).await.body[..],
        b"movie!!"
    );
    assert_eq!(counted(&app, &id).await, 1);
    // Now it is full.
    let (res, _) = begin(&app, &token, "again.bin", 7, "binary/octet-stream").await;
    assert_eq!(res.status, 410);
}

// 4. Size, type and revocation hold for multipart parts.

#[tokio::test]
async fn link_parts_are_held_to_what_the_link_has_left() {
    let app = spawn_app().await;
    app.create_bucket("parts").await;
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "parts", "prefix": "in/", "max_size": "1MiB"}),
    )
    .await;
    let (_, upload) = begun(&app, &token, "v.bin", 1 << 20).await;
    for size in [3 << 20, 12 << 20] {
        let res = put_part(&app, &token, &upload, 1, vec![b'a'; size]).await;
        res.assert_error(400, "EntityTooLarge");
    }
    assert_eq!(part_count(&app, &token, &upload).await, 0, "nothing kept");
    assert!(blob_files(app.data_dir()).is_empty());
    assert!(tmp_files(app.data_dir()).is_empty());

    // The running total counts: 600 KiB, then 600 KiB more is too much, 424 KiB fits exactly.
    put_part(&app, &token, &upload, 1, vec![b'a'; 600 << 10])
        .await
        .assert_status(200);
    put_part(&app, &token, &upload, 2, vec![b'b'; 600 << 10])
        .await
        .assert_error(400, "EntityTooLarge");
    put_part(&app, &token, &upload, 2, vec![b'b'; 424 << 10])
        .await
        .assert_status(200);
    // Replacing a part counts its new size only.
    put_part(&app, &token, &upload, 1, vec![b'c'; 600 << 10])
        .await
        .assert_status(200);
    put_part(&app, &token, &upload, 3, vec![b'd'; 1])
        .await
        .assert_error(400, "EntityTooLarge");
    assert_eq!(part_count(&app, &token, &upload).await, 2);
    assert_eq!(blob_files(app.data_dir()).len(), 2);
    assert!(tmp_files(app.data_dir()).is_empty());

    // Concurrent parts cannot pass the limit together: the total is checked where they commit.
    let (_, second) = begun(&app, &token, "w.bin", 1 << 20).await;
    let puts = (1..=4).map(|n| put_part(&app, &token, &second, n, vec![b'e'; 400 << 10]));
    let answers = futures_util::future::join_all(puts).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 2, "two 400 KiB parts fit in 1 MiB, not three");
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(400, "EntityTooLarge");
    }
}

async fn part_count(app: &TestApp, token: &str, upload: &str) -> usize {
    let (_, json) = call(
        app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}"),
        None,
    )
    .await;
    json["parts"].as_array().unwrap().len()
}

#[tokio::test]
async fn revoking_a_link_stops_its_parts_and_frees_its_uploads() {
    let app = spawn_app().await;
    app.create_bucket("revoke").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "revoke", "prefix": "in/", "max_files": 3}),
    )
    .await;
    let (_, upload) = begun(&app, &token, "v.bin", 200 << 10).await;
    put_part(&app, &token, &upload, 1, vec![b'a'; 100 << 10])
        .await
        .assert_status(200);
    // A part URL handed out before the revocation.
    let (_, signed) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}/parts/2"),
        None,
    )
    .await;
    let late_url = signed["url"].as_str().unwrap().to_owned();
    assert_eq!(blob_files(app.data_dir()).len(), 1);

    let (res, _) = api(
        &app,
        Method::DELETE,
        &format!("/-/api/links/{id}"),
        (ADMIN_AK, ADMIN_SK),
        serde_json::Value::Null,
    )
    .await;
    res.assert_status(204);
    assert!(
        blob_files(app.data_dir()).is_empty(),
        "the unfinished upload's parts are freed"
    );
    assert_eq!(counted(&app, &id).await, 0);
    let late = Resp::read(
        app.http
            .put(&late_url)
            .body(vec![b'b'; 100 << 10])
            .send()
            .await
            .unwrap(),
    )
    .await;
    late.assert_error(404, "NoSuchUpload");
    assert!(blob_files(app.data_dir()).is_empty());
    let (res, _) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}/parts/3"),
        None,
    )
    .await;
    assert_eq!(res.status, 410);
}

#[tokio::test]
async fn an_expired_link_takes_no_part() {
    let app = spawn_app().await;
    app.create_bucket("expired").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "expired", "prefix": "in/"}),
    )
    .await;
    let (_, upload) = begun(&app, &token, "v.bin", 10).await;
    let (_, signed) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}/parts/1"),
        None,
    )
    .await;
    let url = signed["url"].as_str().unwrap().to_owned();
    app.state
        .db
        .write(move |c| {
            c.execute("UPDATE links SET expires_at = 1 WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
        .unwrap();
    let res = Resp::read(
        app.http
            .put(&url)
            .body(b"late".to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    res.assert_error(403, "AccessDenied");
    assert!(res.text().contains("expired"));
    assert!(blob_files(app.data_dir()).is_empty());
    // The next sweep aborts the expired link's upload, whatever its age.
    let swept = postgate::objects::multipart::expire(
        &app.state.db,
        &app.state.uploads,
        &app.state.store,
        0,
    )
    .await
    .unwrap();
    assert_eq!(swept, 1);
    let res = app
        .req(Method::GET, "/expired/in/v.bin")
        .query(&format!("uploadId={upload}"))
        .send()
        .await;
    res.assert_error(404, "NoSuchUpload");
}

#[tokio::test]
async fn the_cli_revocation_frees_the_links_uploads() {
    let app = spawn_app().await;
    app.create_bucket("clirevoke").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "clirevoke", "prefix": "in/"}),
    )
    .await;
    let (_, upload) = begun(&app, &token, "v.bin", 200 << 10).await;
    put_part(&app, &token, &upload, 1, vec![b'a'; 100 << 10])
        .await
        .assert_status(200);
    assert_eq!(blob_files(app.data_dir()).len(), 1);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .arg("--data-dir")
        .arg(app.data_dir())
        .args(["link", "revoke", &id])
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
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    assert!(blob_files(app.data_dir()).is_empty());
    let res = put_part_url(&app, &token, &upload).await;
    assert_eq!(res, 410);
}

async fn put_part_url(app: &TestApp, token: &str, upload: &str) -> u16 {
    call(
        app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}/parts/2"),
        None,
    )
    .await
    .0
    .status
}

// 5. A type list is enforced exactly.

#[tokio::test]
async fn a_type_list_is_enforced_exactly_on_every_path() {
    let app = spawn_app().await;
    app.create_bucket("types").await;
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "types", "prefix": "in/",
                           "content_type": "image/png,image/jpeg"}),
    )
    .await;
    // The page's generic form: the policy can only sign the list's common prefix; the server
    // holds the form to the list itself.
    let (url, fields) = link_form(&app, &token, "").await;
    for bad in [
        "image/svg+xml",
        "image/pngx",
        "text/html",
        "image/png, text/html",
    ] {
        let res = post_form(
            &app,
            &url,
            &fields,
            &[("Content-Type", bad)],
            "x.svg",
            b"<svg/>",
        )
        .await;
        res.assert_error(403, "AccessDenied");
        if matches!(bad, "image/svg+xml" | "image/pngx") {
            assert!(
                res.text().contains("only accepts files of type"),
                "{bad}: {}",
                res.text()
            );
        }
    }
    for good in ["image/png", "image/JPEG; q=1"] {
        post_form(
            &app,
            &url,
            &fields,
            &[("Content-Type", good)],
            &format!("{}.img", good.len()),
            b"img",
        )
        .await
        .assert_status(201);
    }
    assert_eq!(keys(&app, "types").await.len(), 2);

    // The page's per-file form and the multipart begin refuse the type before any byte.
    let (res, json) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/policy?filename=x.svg&type=image%2Fsvg%2Bxml"),
        None,
    )
    .await;
    assert_eq!(res.status, 403);
    assert_eq!(json_code(&json), "AccessDenied");
    let (res, json) = begin(&app, &token, "x.svg", 10, "image/svg+xml").await;
    assert_eq!(res.status, 403);
    assert_eq!(json_code(&json), "AccessDenied");
    let (res, _) = begin(&app, &token, "ok.jpg", 10, "image/jpeg").await;
    res.assert_status(200);

    // Uppy: params and multipart refuse it too; an accepted type is pinned in the policy.
    let (res, json) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/s3/params?filename=x.html&type=text%2Fhtml"),
        None,
    )
    .await;
    assert_eq!(res.status, 403);
    assert_eq!(json_code(&json), "AccessDenied");
    let (res, json) = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(serde_json::json!({"filename": "x.svg", "type": "image/svg+xml"})),
    )
    .await;
    assert_eq!(res.status, 403);
    assert_eq!(json_code(&json), "AccessDenied");
    let (res, json) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/s3/params?filename=p.png&type=image%2Fpng"),
        None,
    )
    .await;
    res.assert_status(200);
    assert_eq!(json["fields"]["Content-Type"], "image/png");
    let policy = policy_json(json["fields"]["policy"].as_str().unwrap());
    assert!(
        policy.contains(r#"{"Content-Type":"image/png"}"#),
        "{policy}"
    );
    assert_eq!(
        keys(&app, "types").await.len(),
        2,
        "nothing refused was stored"
    );
}

#[tokio::test]
async fn a_list_without_a_common_prefix_still_refuses_other_types() {
    let app = spawn_app().await;
    app.create_bucket("mixed").await;
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "mixed", "prefix": "in/",
                           "content_type": "image/png,application/pdf"}),
    )
    .await;
    let (url, fields) = link_form(&app, &token, "").await;
    post_form(
        &app,
        &url,
        &fields,
        &[("Content-Type", "text/html")],
        "x.html",
        b"<p>",
    )
    .await
    .assert_error(403, "AccessDenied");
    post_form(
        &app,
        &url,
        &fields,
        &[("Content-Type", "application/pdf")],
        "x.pdf",
        b"%PDF",
    )
    .await
    .assert_status(201);

    // One exact type is signed exactly (`eq`), and the page's form carries it.
    let (_, token) = make_link(
        &app,
        serde_json::json!({"bucket": "mixed", "prefix": "png/", "content_type": "image/png"}),
    )
    .await;
    let (url, fields) = link_form(&app, &token, "").await;
    let policy = policy_json(&fields.iter().find(|(k, _)| k == "policy").unwrap().1);
    assert!(
        policy.contains(r#"{"Content-Type":"image/png"}"#),
        "{policy}"
    );
    post_form(&app, &url, &fields, &[], "a.png", b"png")
        .await
        .assert_status(201);
    let page = app
        .http
        .get(format!("{}/-/u/{token}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("name=\"Content-Type\"").count(), 1, "{page}");
}

fn policy_json(b64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

// 6. Link uploads never replace an existing object.

#[tokio::test]
async fn link_uploads_never_replace_a_file() {
    let app = spawn_app().await;
    app.create_bucket("keep").await;
    let (id, token) = make_link(&app, serde_json::json!({"bucket": "keep", "prefix": "in/"})).await;
    post_text(&app, &token, "a.txt", b"first")
        .await
        .assert_status(201);
    // The generic form names the same key: refused, the first file kept, nothing counted.
    let res = post_text(&app, &token, "a.txt", b"second").await;
    res.assert_error(412, "PreconditionFailed");
    assert!(res.text().contains("already exists"), "{}", res.text());
    assert_eq!(&app.get("/keep/in/a.txt").await.body[..], b"first");
    assert_eq!(counted(&app, &id).await, 1);

    // The page asks for a form for its file: the server picks the next free name.
    let (url, fields) = link_form(&app, &token, "?filename=a.txt&type=text%2Fplain").await;
    let key = &fields.iter().find(|(k, _)| k == "key").unwrap().1;
    assert_eq!(key, "in/a (2).txt");
    post_form(&app, &url, &fields, &[], "a.txt", b"second")
        .await
        .assert_status(201);
    assert_eq!(&app.get("/keep/in/a%20(2).txt").await.body[..], b"second");

    // Multipart: begin picks a free name (files and unfinished uploads alike).
    let (key3, _) = begun(&app, &token, "a.txt", 5).await;
    assert_eq!(key3, "in/a (3).txt");
    let (key4, _) = begun(&app, &token, "a.txt", 5).await;
    assert_eq!(key4, "in/a (4).txt");
    // Uppy's form and multipart alike.
    let (_, params) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/s3/params?filename=a.txt&type=text%2Fplain"),
        None,
    )
    .await;
    assert_eq!(params["fields"]["key"], "in/a (5).txt");
    let (_, created) = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(serde_json::json!({"filename": "a.txt", "type": "text/plain"})),
    )
    .await;
    assert_eq!(created["key"], "in/a (5).txt");

    // A key taken while an upload runs: complete answers 412 and frees the upload and its slot.
    let (key, upload) = begun(&app, &token, "b.bin", 5).await;
    put_part(&app, &token, &upload, 1, b"parts".to_vec())
        .await
        .assert_status(200);
    app.put(&format!("/keep/{key}"), b"theirs".to_vec())
        .await
        .assert_status(200);
    let before = counted(&app, &id).await;
    let (res, json) = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/uploads/{upload}/complete"),
        None,
    )
    .await;
    assert_eq!(res.status, 412, "{}", res.text());
    assert_eq!(json_code(&json), "PreconditionFailed");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert_eq!(&app.get(&format!("/keep/{key}")).await.body[..], b"theirs");
    assert_eq!(counted(&app, &id).await, before - 1);
    let (res, _) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/uploads/{upload}"),
        None,
    )
    .await;
    assert_eq!(res.status, 404);

    // Uppy's multipart complete is create-only too.
    let (_, created) = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart"),
        Some(serde_json::json!({"filename": "c.bin", "type": "text/plain"})),
    )
    .await;
    let upload = created["uploadId"].as_str().unwrap();
    let key = created["key"].as_str().unwrap();
    let (_, signed) = call(
        &app,
        Method::GET,
        &format!("/-/u/{token}/s3/multipart/{upload}/1"),
        None,
    )
    .await;
    let put = Resp::read(
        app.http
            .put(signed["url"].as_str().unwrap())
            .body(b"c".to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    put.assert_status(200);
    app.put(&format!("/keep/{key}"), b"theirs".to_vec())
        .await
        .assert_status(200);
    let etag = put.header("etag").unwrap().to_owned();
    let (res, _) = call(
        &app,
        Method::POST,
        &format!("/-/u/{token}/s3/multipart/{upload}/complete"),
        Some(serde_json::json!({"parts": [{"PartNumber": 1, "ETag": etag}]})),
    )
    .await;
    assert_eq!(res.status, 412, "{}", res.text());
    assert_eq!(&app.get(&format!("/keep/{key}")).await.body[..], b"theirs");
}

#[tokio::test]
async fn a_form_dropped_midway_gives_its_slot_back() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app().await;
    app.create_bucket("dropped").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "dropped", "prefix": "in/", "max_files": 1}),
    )
    .await;
    let (url, fields) = link_form(&app, &token, "").await;
    let mut body = Vec::new();
    let field = |body: &mut Vec<u8>, name: &str, value: &str| {
        body.extend_from_slice(
            format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    };
    for (k, v) in &fields {
        field(&mut body, k, v);
    }
    field(&mut body, "Content-Type", "text/plain");
    body.extend_from_slice(
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.txt\"\r\n\r\n",
    );
    let sent = body.len() + (100 << 10);
    body.extend(std::iter::repeat_n(b'x', 200 << 10));
    body.extend_from_slice(b"\r\n--B--\r\n");
    let path = url.strip_prefix(&app.base).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=B\r\n\
         Content-Length: {}\r\n\r\n",
        app.host,
        body.len()
    );
    let mut stream = app.connect().await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream.flush().await.unwrap();
    // The slot is taken while the file arrives...
    let mut taken = false;
    for _ in 0..100 {
        if counted(&app, &id).await == 1 {
            taken = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(taken, "the form took its slot");
    // ... and given back when the client goes away.
    drop(stream);
    let mut back = false;
    for _ in 0..250 {
        if counted(&app, &id).await == 0 {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(back, "the dropped form gave its slot back");
    assert!(keys(&app, "dropped").await.is_empty());
    post_text(&app, &token, "x.txt", b"x")
        .await
        .assert_status(201);
}
