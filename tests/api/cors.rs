//! Bucket CORS: the XML API, preflight matching, headers on actual and error responses.

use reqwest::Method;

use crate::helpers::*;
use crate::json_api::api_policy;

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

pub(crate) async fn preflight(
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
