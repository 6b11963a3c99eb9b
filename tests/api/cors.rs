//! Bucket CORS (the XML API, preflight matching, headers on actual and error responses), the
//! `/-/api/presign/post` JSON API, and shareable upload links.

use reqwest::Method;

use crate::helpers::*;

const RULES: &str = r#"<CORSConfiguration>
  <CORSRule>
    <ID>app</ID>
    <AllowedOrigin>https://*.app.test</AllowedOrigin>
    <AllowedMethod>PUT</AllowedMethod><AllowedMethod>POST</AllowedMethod><AllowedMethod>GET</AllowedMethod>
    <AllowedHeader>content-type</AllowedHeader><AllowedHeader>x-amz-*</AllowedHeader>
    <ExposeHeader>x-amz-meta-origin</ExposeHeader>
    <MaxAgeSeconds>600</MaxAgeSeconds>
  </CORSRule>
  <CORSRule>
    <AllowedOrigin>*</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
  </CORSRule>
</CORSConfiguration>"#;

async fn app_with_cors(bucket: &str) -> TestApp {
    let app = spawn_app().await;
    app.create_bucket(bucket).await;
    app.req(Method::PUT, &format!("/{bucket}"))
        .query("cors")
        .body(RULES)
        .send()
        .await
        .assert_status(200);
    app
}

async fn preflight(
    app: &TestApp,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> Resp {
    let mut req = app
        .http
        .request(Method::OPTIONS, format!("{}{path}", app.base))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(h) = headers {
        req = req.header("access-control-request-headers", h);
    }
    Resp::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn cors_configuration_round_trips_and_can_be_deleted() {
    let app = app_with_cors("corsb").await;
    let got = app.req(Method::GET, "/corsb").query("cors").send().await;
    got.assert_status(200);
    let text = got.text();
    assert_eq!(xml_tags(&text, "CORSRule").len(), 2, "{text}");
    assert_eq!(xml_tag(&text, "ID").as_deref(), Some("app"));
    assert!(text.contains("<AllowedOrigin>https://*.app.test</AllowedOrigin>"));
    assert!(text.contains("<MaxAgeSeconds>600</MaxAgeSeconds>"));

    app.req(Method::DELETE, "/corsb")
        .query("cors")
        .send()
        .await
        .assert_status(204);
    app.req(Method::GET, "/corsb")
        .query("cors")
        .send()
        .await
        .assert_error(404, "NoSuchCORSConfiguration");
}

#[tokio::test]
async fn invalid_cors_configurations_are_refused() {
    let app = spawn_app().await;
    app.create_bucket("corsbad").await;
    let put = |body: String| {
        app.req(Method::PUT, "/corsbad")
            .query("cors")
            .body(body)
            .send()
    };
    put("<CORSConfiguration><CORSRule>".into())
        .await
        .assert_error(400, "MalformedXML");
    put("<CORSConfiguration></CORSConfiguration>".into())
        .await
        .assert_error(400, "MalformedXML");
    let patch = put(
        "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>".into(),
    )
    .await;
    patch.assert_error(400, "InvalidRequest");
    assert!(patch.text().contains("Unsupported method is PATCH"));
    let rule =
        "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>";
    put(format!(
        "<CORSConfiguration>{}</CORSConfiguration>",
        rule.repeat(101)
    ))
    .await
    .assert_error(400, "InvalidRequest");
    // Only the owner may change CORS.
    let other = app.create_key("other").await;
    app.allow("corsbad", &other.ak, postgate::db::buckets::Perm::ReadWrite)
        .await;
    app.req(Method::PUT, "/corsbad")
        .query("cors")
        .creds(&other)
        .body(format!("<CORSConfiguration>{rule}</CORSConfiguration>"))
        .send()
        .await
        .assert_error(403, "AccessDenied");
}

#[tokio::test]
async fn preflight_uses_the_first_matching_rule() {
    let app = app_with_cors("corsp").await;
    let res = preflight(
        &app,
        "/corsp/some/key",
        "https://www.app.test",
        "PUT",
        Some("Content-Type, X-Amz-Date"),
    )
    .await;
    res.assert_status(200);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://www.app.test")
    );
    assert_eq!(
        res.header("access-control-allow-methods"),
        Some("PUT, POST, GET")
    );
    assert_eq!(
        res.header("access-control-allow-headers"),
        Some("content-type, x-amz-date")
    );
    assert_eq!(res.header("access-control-max-age"), Some("600"));
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    assert!(res.header("vary").unwrap().contains("Origin"));

    // The wildcard rule answers `*` for any origin, GET only, no requested headers.
    let any = preflight(&app, "/corsp/k", "https://elsewhere.test", "GET", None).await;
    any.assert_status(200);
    assert_eq!(any.header("access-control-allow-origin"), Some("*"));
    assert!(any.header("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn preflight_without_a_match_is_forbidden_as_s3_answers() {
    let app = app_with_cors("corsn").await;
    for (origin, method, headers) in [
        ("https://evil.test", "PUT", None),
        ("https://www.app.test", "DELETE", None),
        ("https://www.app.test", "PUT", Some("authorization")),
        ("https://elsewhere.test", "GET", Some("x-custom")),
    ] {
        let res = preflight(&app, "/corsn/k", origin, method, headers).await;
        res.assert_error(403, "AccessForbidden");
        assert!(
            res.text()
                .contains("CORSResponse: This CORS request is not allowed")
        );
        assert!(res.header("access-control-allow-origin").is_none());
    }
    // A bucket without CORS, a missing bucket, and a preflight without Origin.
    app.create_bucket("nocors").await;
    let res = preflight(&app, "/nocors/k", "https://www.app.test", "PUT", None).await;
    res.assert_error(403, "AccessForbidden");
    assert!(res.text().contains("CORS is not enabled for this bucket"));
    let res = preflight(
        &app,
        "/missing-bucket/k",
        "https://www.app.test",
        "PUT",
        None,
    )
    .await;
    res.assert_error(403, "AccessForbidden");
    let res = Resp::read(
        app.http
            .request(Method::OPTIONS, format!("{}/corsn/k", app.base))
            .header("access-control-request-method", "PUT")
            .send()
            .await
            .unwrap(),
    )
    .await;
    res.assert_error(400, "BadRequest");
}

#[tokio::test]
async fn actual_responses_and_errors_carry_cors_headers_when_a_rule_matches() {
    let app = app_with_cors("corsa").await;
    app.put_object("corsa", "k", "hello").await;
    let ok = app
        .req(Method::GET, "/corsa/k")
        .header("origin", "https://www.app.test")
        .send()
        .await;
    ok.assert_status(200);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://www.app.test")
    );
    let expose = ok.header("access-control-expose-headers").unwrap();
    assert!(
        expose.contains("ETag") && expose.contains("x-amz-meta-origin"),
        "{expose}"
    );

    let missing = app
        .req(Method::GET, "/corsa/nope")
        .header("origin", "https://www.app.test")
        .send()
        .await;
    missing.assert_error(404, "NoSuchKey");
    assert_eq!(
        missing.header("access-control-allow-origin"),
        Some("https://www.app.test")
    );

    // An origin no rule allows: the request still works, without CORS headers.
    let other = app
        .req(Method::PUT, "/corsa/k2")
        .header("origin", "https://evil.test")
        .body("x")
        .send()
        .await;
    other.assert_status(200);
    assert!(other.header("access-control-allow-origin").is_none());
}

/// A form from the JSON API, posted with an `Origin`: every outcome carries CORS headers.
#[tokio::test]
async fn post_uploads_carry_cors_headers_on_every_outcome() {
    let app = app_with_cors("corspost").await;
    let policy = api_policy(
        &app,
        serde_json::json!({"bucket": "corspost", "key_prefix": "in/", "max_size": 10}),
    )
    .await;
    let url = policy["url"].as_str().unwrap().to_owned();
    let fields: Vec<(String, String)> = policy["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    for (body, status) in [
        (&b"small"[..], 204),
        (&b"far too large for the policy"[..], 400),
    ] {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in &fields {
            form = form.text(k.clone(), v.clone());
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(body.to_vec()).file_name("f.txt"),
        );
        let res = Resp::read(
            app.http
                .post(&url)
                .header("origin", "https://up.app.test")
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(res.status, status, "{}", res.text());
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some("https://up.app.test")
        );
        assert!(
            res.header("access-control-expose-headers")
                .unwrap()
                .contains("ETag")
        );
    }
}

async fn api_policy(app: &TestApp, body: serde_json::Value) -> serde_json::Value {
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

async fn create_link(
    app: &TestApp,
    bucket: &str,
    max_files: Option<u64>,
) -> postgate::db::links::LinkRecord {
    let link = postgate::links::new_link(
        bucket,
        "in/",
        16,
        None,
        max_files,
        std::time::Duration::from_secs(3600),
        ADMIN_AK,
    );
    let l = link.clone();
    app.state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    link
}

async fn link_form(app: &TestApp, token: &str) -> (String, Vec<(String, String)>) {
    let res = app
        .http
        .get(format!("{}/-/u/{token}/policy", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let fields = json["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (json["url"].as_str().unwrap().to_owned(), fields)
}

async fn post_link(
    app: &TestApp,
    url: &str,
    fields: &[(String, String)],
    name: &str,
    body: &[u8],
) -> Resp {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.clone(), v.clone());
    }
    form = form.text("Content-Type", "text/plain");
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(body.to_vec()).file_name(name.to_owned()),
    );
    Resp::read(app.http.post(url).multipart(form).send().await.unwrap()).await
}

#[tokio::test]
async fn upload_link_page_renders_and_enforces_its_limits() {
    let app = spawn_app().await;
    app.create_bucket("links").await;
    let link = create_link(&app, "links", Some(2)).await;
    let page = app
        .http
        .get(format!("{}/-/u/{}", app.base, link.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<form id=\"upload-form\"") && html.contains("name=\"policy\""));
    assert!(html.contains("2 more files accepted"));

    let (url, fields) = link_form(&app, &link.token).await;
    post_link(&app, &url, &fields, "a.txt", b"one")
        .await
        .assert_status(201);
    post_link(&app, &url, &fields, "big.txt", &[b'x'; 17])
        .await
        .assert_error(400, "EntityTooLarge");
    post_link(&app, &url, &fields, "b.txt", b"two")
        .await
        .assert_status(201);
    // Full: the third upload is refused even with a policy signed before.
    let full = post_link(&app, &url, &fields, "c.txt", b"three").await;
    full.assert_error(403, "AccessDenied");
    assert!(full.text().contains("all the files it accepts"));
    assert_eq!(&app.get("/links/in/a.txt").await.body[..], b"one");
    app.get("/links/in/c.txt")
        .await
        .assert_error(404, "NoSuchKey");
    let gone = app
        .http
        .get(format!("{}/-/u/{}", app.base, link.token))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 410);
}

#[tokio::test]
async fn revoked_and_unknown_links_show_a_clear_page() {
    let app = spawn_app().await;
    app.create_bucket("revoked").await;
    let link = create_link(&app, "revoked", None).await;
    let (url, fields) = link_form(&app, &link.token).await;
    let token = link.token.clone();
    app.state
        .db
        .write(move |c| postgate::db::links::revoke(c, &token))
        .await
        .unwrap();
    let res = app
        .http
        .get(format!("{}/-/u/{}", app.base, link.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 410);
    let html = res.text().await.unwrap();
    assert!(html.contains("revoked") && !html.contains("panicked"));
    post_link(&app, &url, &fields, "a.txt", b"x")
        .await
        .assert_error(403, "AccessDenied");
    let res = app
        .http
        .get(format!("{}/-/u/not-a-token", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("does not exist"));
}

/// Calls the links API with a Bearer token; answers the response and its JSON (if any).
async fn links_api(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    who: (&str, &str),
    body: Option<serde_json::Value>,
) -> (Resp, serde_json::Value) {
    let mut req = app
        .http
        .request(method, format!("{}/-/api/links{path}", app.base))
        .header("authorization", format!("Bearer {}:{}", who.0, who.1));
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

#[tokio::test]
async fn links_api_creates_a_link_that_uploads_lists_it_and_revokes_it() {
    let app = spawn_app().await;
    app.create_bucket("apilinks").await;
    let admin = (ADMIN_AK, ADMIN_SK);
    let (res, link) = links_api(
        &app,
        reqwest::Method::POST,
        "",
        admin,
        Some(
            serde_json::json!({"bucket": "apilinks", "prefix": "inbox/", "max_size": "1KiB",
                                "expires_in": "2d", "max_files": 1, "content_type": "text/"}),
        ),
    )
    .await;
    res.assert_status(201);
    assert_eq!(link["bucket"], "apilinks");
    assert_eq!(link["prefix"], "inbox/");
    assert_eq!(link["max_size"], 1024);
    assert_eq!(link["max_files"], 1);
    assert_eq!(link["active"], true);
    let url = link["url"].as_str().unwrap();
    let token = url.rsplit_once("/-/u/").unwrap().1;
    assert!(url.starts_with(&app.base), "{url}");
    let expires = time::OffsetDateTime::parse(
        link["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(left > time::Duration::hours(47) && left <= time::Duration::hours(48));

    // The link's limits are the policy's: size and type refused, then one file stored.
    let page = app.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let (post_url, fields) = link_form(&app, token).await;
    post_link(&app, &post_url, &fields, "big.txt", &[b'x'; 1025])
        .await
        .assert_error(400, "EntityTooLarge");
    post_link(&app, &post_url, &fields, "note.txt", b"hello")
        .await
        .assert_status(201);
    let got = app.get("/apilinks/inbox/note.txt").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"hello");

    let (res, listed) = links_api(&app, reqwest::Method::GET, "", admin, None).await;
    res.assert_status(200);
    let listed = listed["links"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], link["id"]);
    assert_eq!(listed[0]["uploaded_files"], 1);
    assert_eq!(listed[0]["active"], false, "max_files reached");

    let id = link["id"].as_str().unwrap();
    let (res, _) = links_api(
        &app,
        reqwest::Method::DELETE,
        &format!("/{id}"),
        admin,
        None,
    )
    .await;
    res.assert_status(204);
    let (_, listed) = links_api(&app, reqwest::Method::GET, "", admin, None).await;
    assert_eq!(listed["links"][0]["revoked"], true);
    let gone = app.http.get(url).send().await.unwrap();
    assert_eq!(gone.status(), 410);
}

#[tokio::test]
async fn links_api_checks_permission_ownership_and_input() {
    let app = spawn_app().await;
    app.create_bucket("linkperm").await;
    let reader = app.create_key("reader").await;
    app.allow("linkperm", &reader.ak, postgate::db::buckets::Perm::Read)
        .await;
    let writer = app.create_key("writer").await;
    app.allow("linkperm", &writer.ak, postgate::db::buckets::Perm::Write)
        .await;
    let body = serde_json::json!({"bucket": "linkperm"});
    let post = reqwest::Method::POST;

    let (res, json) = links_api(
        &app,
        post.clone(),
        "",
        (&reader.ak, &reader.sk),
        Some(body.clone()),
    )
    .await;
    assert_eq!(res.status, 403, "{}", res.text());
    assert_eq!(json["error"]["code"], "AccessDenied");
    let (res, _) = links_api(
        &app,
        post.clone(),
        "",
        (ADMIN_AK, "wrong"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(res.status, 403);
    let unsigned = app
        .http
        .post(format!("{}/-/api/links", app.base))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);

    let (res, mine) = links_api(
        &app,
        post.clone(),
        "",
        (&writer.ak, &writer.sk),
        Some(body.clone()),
    )
    .await;
    res.assert_status(201);
    assert_eq!(mine["max_size"], 100 << 20, "default 100 MiB");
    let (res, theirs) = links_api(
        &app,
        post.clone(),
        "",
        (ADMIN_AK, ADMIN_SK),
        Some(body.clone()),
    )
    .await;
    res.assert_status(201);

    // A key sees and revokes only its own links; the admin key sees all.
    let (_, listed) = links_api(
        &app,
        reqwest::Method::GET,
        "",
        (&writer.ak, &writer.sk),
        None,
    )
    .await;
    let ids: Vec<_> = listed["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].clone())
        .collect();
    assert_eq!(ids, vec![mine["id"].clone()]);
    let (_, listed) = links_api(&app, reqwest::Method::GET, "", (ADMIN_AK, ADMIN_SK), None).await;
    assert_eq!(listed["links"].as_array().unwrap().len(), 2);
    let other = format!("/{}", theirs["id"].as_str().unwrap());
    let (res, json) = links_api(
        &app,
        reqwest::Method::DELETE,
        &other,
        (&writer.ak, &writer.sk),
        None,
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(json["error"]["code"], "NoSuchLink");
    let (_, listed) = links_api(&app, reqwest::Method::GET, "", (ADMIN_AK, ADMIN_SK), None).await;
    assert!(
        listed["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["revoked"] == false)
    );

    for bad in [
        serde_json::json!({"bucket": "linkperm", "max_size": "6GiB"}),
        serde_json::json!({"bucket": "linkperm", "max_size": 0}),
        serde_json::json!({"bucket": "linkperm", "expires_in": 0}),
        serde_json::json!({"bucket": "linkperm", "expires_in": "400d"}),
        serde_json::json!({"bucket": "linkperm", "max_files": 0}),
        serde_json::json!({"bucket": "linkperm", "max_size": "ten"}),
        serde_json::json!({"bucket": "linkperm", "colour": "red"}),
    ] {
        let (res, json) = links_api(
            &app,
            post.clone(),
            "",
            (ADMIN_AK, ADMIN_SK),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
        assert_eq!(json["error"]["code"], "InvalidRequest", "{bad}");
    }
    let (res, json) = links_api(
        &app,
        post,
        "",
        (ADMIN_AK, ADMIN_SK),
        Some(serde_json::json!({"bucket": "nosuchbucket"})),
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(json["error"]["code"], "NoSuchBucket");
}

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
