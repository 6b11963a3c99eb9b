//! Upload links as the signing endpoint of Uppy's `@uppy/aws-s3` plugin (its Companion routes).

use crate::helpers::*;

/// A link for the Uppy tests: prefix `up/`, the given limits, signed by the admin key.
async fn uppy_link(
    app: &TestApp,
    bucket: &str,
    max_size: u64,
    content_type: Option<&str>,
) -> String {
    let link = postgate::links::new_link(
        bucket,
        "up/",
        max_size,
        content_type.map(str::to_owned),
        None,
        std::time::Duration::from_secs(3600),
        ADMIN_AK,
    );
    let l = link.clone();
    app.state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    format!("{}/-/u/{}", app.base, link.token)
}

async fn json_call(
    app: &TestApp,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (Resp, serde_json::Value) {
    let mut req = app
        .http
        .request(method, url)
        .header("origin", "https://cms.example");
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

#[tokio::test]
async fn uppy_companion_params_give_a_form_for_the_requested_key() {
    let app = spawn_app().await;
    app.create_bucket("uppyform").await;
    let link = uppy_link(&app, "uppyform", 1024, Some("image/")).await;
    let (res, params) = json_call(
        &app,
        reqwest::Method::GET,
        &format!(
            "{link}/s3/params?filename=x1y2-cat.png&type=image%2Fpng&metadata%5Bname%5D=cat.png"
        ),
        None,
    )
    .await;
    res.assert_status(200);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(params["method"], "POST");
    let url = params["url"].as_str().unwrap();
    assert_eq!(url, format!("{}/uppyform/", app.base));
    assert_eq!(params["fields"]["key"], "up/x1y2-cat.png");
    assert_eq!(params["fields"]["Content-Type"], "image/png");

    // Posted as Uppy does: the fields, then `file` (a Blob: its file name is "blob").
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in params["fields"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(b"PNG".to_vec()).file_name("blob"),
    );
    let res = Resp::read(app.http.post(url).multipart(form).send().await.unwrap()).await;
    res.assert_status(201);
    assert!(res.header("etag").is_some());
    let got = app.get("/uppyform/up/x1y2-cat.png").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"PNG");
    assert_eq!(got.header("content-type"), Some("image/png"));

    // The link's type rule and the key rules hold here too.
    let (res, json) = json_call(
        &app,
        reqwest::Method::GET,
        &format!("{link}/s3/params?filename=a.exe&type=application%2Fx-msdownload"),
        None,
    )
    .await;
    assert_eq!(res.status, 403);
    assert_eq!(json["error"]["code"], "AccessDenied");
    let (res, _) = json_call(
        &app,
        reqwest::Method::GET,
        &format!("{link}/s3/params?type=image%2Fpng"),
        None,
    )
    .await;
    assert_eq!(res.status, 400);
    let (res, _) = json_call(
        &app,
        reqwest::Method::GET,
        &format!("{}/-/u/nope/s3/params?filename=a.png", app.base),
        None,
    )
    .await;
    assert_eq!(res.status, 404);
}

#[tokio::test]
async fn uppy_companion_multipart_creates_signs_lists_and_completes() {
    let app = spawn_app().await;
    app.create_bucket("uppymp").await;
    let link = uppy_link(&app, "uppymp", 6 << 20, None).await;
    let (res, created) = json_call(
        &app,
        reqwest::Method::POST,
        &format!("{link}/s3/multipart"),
        Some(serde_json::json!({"filename": "r4nd-video.mp4", "type": "video/mp4", "metadata": {"name": "video.mp4"}})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(created["key"], "up/r4nd-video.mp4");
    assert_eq!(created["bucket"], "uppymp");
    let upload_id = created["uploadId"].as_str().unwrap().to_owned();
    let key_q = "key=up%2Fr4nd-video.mp4";

    let first: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let last = b"the end".to_vec();
    let mut etags = Vec::new();
    for (n, bytes) in [(1, &first), (2, &last)] {
        let (res, signed) = json_call(
            &app,
            reqwest::Method::GET,
            &format!("{link}/s3/multipart/{upload_id}/{n}?{key_q}"),
            None,
        )
        .await;
        res.assert_status(200);
        assert_eq!(signed["expires"], 3600);
        let put = app
            .http
            .put(signed["url"].as_str().unwrap())
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
        etags.push(
            put.headers()["etag"]
                .to_str()
                .unwrap()
                .trim_matches('"')
                .to_owned(),
        );
    }
    let (res, listed) = json_call(
        &app,
        reqwest::Method::GET,
        &format!("{link}/s3/multipart/{upload_id}?{key_q}"),
        None,
    )
    .await;
    res.assert_status(200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["PartNumber"], 1);
    assert_eq!(listed[1]["Size"], 7);
    assert_eq!(
        listed[1]["ETag"].as_str().unwrap().trim_matches('"'),
        etags[1]
    );

    // A wrong ETag is refused as S3 refuses it; the right list (unquoted, as Uppy sends) completes.
    let (res, json) = json_call(
        &app,
        reqwest::Method::POST,
        &format!("{link}/s3/multipart/{upload_id}/complete?{key_q}"),
        Some(serde_json::json!({"parts": [{"PartNumber": 1, "ETag": "0000"}, {"PartNumber": 2, "ETag": etags[1]}]})),
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(json["error"]["code"], "InvalidPart");
    let (res, done) = json_call(
        &app,
        reqwest::Method::POST,
        &format!("{link}/s3/multipart/{upload_id}/complete?{key_q}"),
        Some(serde_json::json!({"parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}]})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(
        done["location"],
        format!("{}/uppymp/up/r4nd-video.mp4", app.base)
    );
    assert_eq!(done["key"], "up/r4nd-video.mp4");
    let got = app.get("/uppymp/up/r4nd-video.mp4").await;
    got.assert_status(200);
    assert_eq!(got.body.len(), first.len() + last.len());
    assert!(got.body[..first.len()] == first[..] && got.body[first.len()..] == last[..]);
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    assert!(got.header("etag").unwrap().ends_with("-2\""));

    // Abort: the upload is gone for every later call.
    let (_, created) = json_call(
        &app,
        reqwest::Method::POST,
        &format!("{link}/s3/multipart"),
        Some(serde_json::json!({"filename": "gone.bin"})),
    )
    .await;
    let gone = created["uploadId"].as_str().unwrap();
    let (res, _) = json_call(
        &app,
        reqwest::Method::DELETE,
        &format!("{link}/s3/multipart/{gone}?key=up%2Fgone.bin"),
        None,
    )
    .await;
    assert_eq!(res.status, 204);
    let (res, json) = json_call(
        &app,
        reqwest::Method::GET,
        &format!("{link}/s3/multipart/{gone}?key=up%2Fgone.bin"),
        None,
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(json["error"]["code"], "NoSuchUpload");
}

#[tokio::test]
async fn uppy_companion_multipart_part_above_the_links_maximum_is_refused() {
    let app = spawn_app().await;
    app.create_bucket("uppybig").await;
    let link = uppy_link(&app, "uppybig", 5 << 20, None).await;
    let (_, created) = json_call(
        &app,
        reqwest::Method::POST,
        &format!("{link}/s3/multipart"),
        Some(serde_json::json!({"filename": "big.bin"})),
    )
    .await;
    let upload_id = created["uploadId"].as_str().unwrap().to_owned();
    // Each part is held to what the link has left when it arrives: the byte past the maximum is
    // refused at its part URL, not at complete.
    for (n, len, status) in [(1, 5 << 20, 200), (2, 1, 400)] {
        let (_, signed) = json_call(
            &app,
            reqwest::Method::GET,
            &format!("{link}/s3/multipart/{upload_id}/{n}?key=up%2Fbig.bin"),
            None,
        )
        .await;
        let put = app
            .http
            .put(signed["url"].as_str().unwrap())
            .body(vec![b'z'; len])
            .send()
            .await
            .unwrap();
        let put = Resp::read(put).await;
        assert_eq!(put.status, status, "{}", put.text());
        if status == 400 {
            put.assert_error(400, "EntityTooLarge");
        }
    }
    app.get("/uppybig/up/big.bin")
        .await
        .assert_error(404, "NoSuchKey");
}
