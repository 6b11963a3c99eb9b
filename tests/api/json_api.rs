//! The JSON API under `/-/api/`: presigned POST policies (`/-/api/presign/post`) and its
//! OpenAPI document.

use crate::helpers::*;

pub(crate) async fn api_policy(app: &TestApp, body: serde_json::Value) -> serde_json::Value {
    let res = Resp::read(
        app.http
            .post(format!("{}/-/api/presign/post", app.base))
            .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    res.assert_status(200);
    serde_json::from_slice(&res.body).unwrap()
}

#[tokio::test]
async fn policy_api_needs_credentials_and_write_permission() {
    let app = spawn_app().await;
    app.create_bucket("apib").await;
    let call = |auth: Option<String>| {
        let mut req = app
            .http
            .post(format!("{}/-/api/presign/post", app.base))
            .body(r#"{"bucket":"apib","key":"k"}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { Resp::read(req.send().await.unwrap()).await }
    };
    assert_eq!(call(None).await.status, 401);
    assert_eq!(
        call(Some(format!("Bearer {ADMIN_AK}:wrong"))).await.status,
        403
    );
    let reader = app.create_key("reader").await;
    app.allow("apib", &reader.ak, postgate::db::buckets::Perm::Read)
        .await;
    let denied = call(Some(format!("Bearer {}:{}", reader.ak, reader.sk))).await;
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("AccessDenied"));
    let writer = app.create_key("writer").await;
    app.allow("apib", &writer.ak, postgate::db::buckets::Perm::Write)
        .await;
    let ok = call(Some(format!("Bearer {}:{}", writer.ak, writer.sk))).await;
    ok.assert_status(200);
    let json: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
    assert!(json["url"].as_str().unwrap().ends_with("/apib"));
    assert_eq!(json["fields"]["key"], "k");
    assert!(
        json["fields"]["x-amz-credential"]
            .as_str()
            .unwrap()
            .starts_with(&writer.ak)
    );
    let missing = Resp::read(
        app.http
            .post(format!("{}/-/api/presign/post", app.base))
            .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
            .body(r#"{"bucket":"nobucket","key":"k"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, 404);
    let bad = Resp::read(
        app.http
            .post(format!("{}/-/api/presign/post", app.base))
            .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
            .body(r#"{"bucket":"apib","key":"k","key_prefix":"p/"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn policy_api_output_is_usable_for_a_post() {
    let app = spawn_app().await;
    app.create_bucket("apiuse").await;
    let policy = api_policy(
        &app,
        serde_json::json!({"bucket": "apiuse", "key_prefix": "photos/", "max_size": 100,
                           "content_type_prefix": "image/", "metadata": {"Owner": "ann"},
                           "success_action_status": 201}),
    )
    .await;
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in policy["fields"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    form = form.text("Content-Type", "image/png");
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(b"png".to_vec()).file_name("a.png"),
    );
    let res = Resp::read(
        app.http
            .post(policy["url"].as_str().unwrap())
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    res.assert_status(201);
    assert_eq!(xml_tag(&res.text(), "Key").as_deref(), Some("photos/a.png"));
    let got = app.get("/apiuse/photos/a.png").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"png");
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("x-amz-meta-owner"), Some("ann"));
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let res = app
        .http
        .get(format!("{}/-/api/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let doc: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/-/api/presign/post"]["post"].is_object());
    assert!(doc["paths"]["/-/api/links"]["post"].is_object());
    assert!(doc["paths"]["/-/api/links/{id}"]["delete"].is_object());
}
