//! AWS-exact authentication: what a signature must cover, and the refusals AWS gives when it
//! does not. Each test replays an attack over real HTTP and checks the answer and what is stored.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use postgate::auth::{sigv2, sigv4};
use postgate::policy::sign_v4;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::helpers::{
    ADMIN_AK, ADMIN_SK, Creds, REGION, Resp, TestApp, content_md5, spawn_app, xml_tag,
};

const B: &str = "strict";

async fn app_with_bucket() -> TestApp {
    let app = spawn_app().await;
    app.create_bucket(B).await;
    app
}

/// Sends a prepared (signed) request after `tamper` had its way with the headers.
async fn send_tampered(
    app: &TestApp,
    req: crate::helpers::Req<'_>,
    tamper: impl FnOnce(&mut HeaderMap),
) -> Resp {
    let mut p = req.prepare();
    tamper(&mut p.headers);
    let res = app
        .http
        .request(p.method, &p.url)
        .headers(p.headers)
        .body(p.body)
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

#[track_caller]
fn assert_not_signed(res: &Resp, headers: &str) {
    res.assert_error(403, "AccessDenied");
    assert_eq!(
        xml_tag(&res.text(), "Message").as_deref(),
        Some("There were headers present in the request which were not signed")
    );
    assert_eq!(
        xml_tag(&res.text(), "HeadersNotSigned").as_deref(),
        Some(headers)
    );
}

/// SigV4 header auth over exactly the headers `signed` names, as a hand-rolled client would.
fn sign_v4_header(
    app: &TestApp,
    method: &Method,
    path: &str,
    query: &str,
    signed: &[&str],
    headers: &mut HeaderMap,
    payload_hash: &str,
) {
    let now = OffsetDateTime::now_utc();
    let amz_date = sigv4::format_amz_date(now);
    let scope = sigv4::scope(&amz_date[..8], REGION, "s3");
    headers.insert("host", HeaderValue::from_str(&app.host).unwrap());
    headers.insert("x-amz-date", HeaderValue::from_str(&amz_date).unwrap());
    let signed: Vec<String> = signed.iter().map(|s| (*s).to_owned()).collect();
    let creq = sigv4::canonical_request(
        method.as_str(),
        &sigv4::canonical_uri(path),
        &sigv4::canonical_query(&sigv4::parse_query(query), false),
        &sigv4::canonical_headers(&signed, headers, None),
        &signed,
        payload_hash,
    );
    let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
    let key = sigv4::signing_key(ADMIN_SK, &amz_date[..8], REGION, "s3");
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={ADMIN_AK}/{scope},SignedHeaders={},Signature={}",
        signed.join(";"),
        sigv4::sign(&key, &sts)
    );
    headers.insert("authorization", HeaderValue::from_str(&auth).unwrap());
}

async fn send(
    app: &TestApp,
    method: Method,
    target: &str,
    headers: HeaderMap,
    body: &[u8],
) -> Resp {
    let res = app
        .http
        .request(method, format!("{}{target}", app.base))
        .headers(headers)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

async fn anonymous_get(app: &TestApp, path: &str) -> Resp {
    send(app, Method::GET, path, HeaderMap::new(), b"").await
}

// ---------------------------------------------------------------------------------------------
// Every x-amz-* header and host must be signed (SigV4)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unsigned_acl_added_to_a_signed_put_is_refused_and_nothing_is_stored() {
    let app = app_with_bucket().await;
    let put = app
        .req(Method::PUT, "/strict/page.html")
        .body("<h1>hi</h1>");
    let res = send_tampered(&app, put, |h| {
        h.insert("x-amz-acl", HeaderValue::from_static("public-read"));
    })
    .await;
    assert_not_signed(&res, "x-amz-acl");
    app.get("/strict/page.html")
        .await
        .assert_error(404, "NoSuchKey");
    anonymous_get(&app, "/strict/page.html")
        .await
        .assert_error(403, "AccessDenied");

    // Several unsigned headers are all named, sorted; a copy source cannot be smuggled in.
    app.put_object(B, "secret.txt", "s3cr3t").await;
    let put = app.req(Method::PUT, "/strict/copy.txt").body("x");
    let res = send_tampered(&app, put, |h| {
        h.insert(
            "x-amz-copy-source",
            HeaderValue::from_static("/strict/secret.txt"),
        );
        h.insert("x-amz-meta-owner", HeaderValue::from_static("mallory"));
    })
    .await;
    assert_not_signed(&res, "x-amz-copy-source, x-amz-meta-owner");
    app.get("/strict/copy.txt")
        .await
        .assert_error(404, "NoSuchKey");

    // The same headers, signed, are fine.
    app.req(Method::PUT, "/strict/page.html")
        .header("x-amz-acl", "public-read")
        .body("<h1>hi</h1>")
        .send()
        .await
        .assert_status(200);
    anonymous_get(&app, "/strict/page.html")
        .await
        .assert_status(200);
}

#[tokio::test]
async fn signed_headers_without_host_are_refused() {
    let app = app_with_bucket().await;
    app.put_object(B, "k", "body").await;
    let mut h = HeaderMap::new();
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static(sigv4::EMPTY_SHA256),
    );
    let mut no_host = h.clone();
    sign_v4_header(
        &app,
        &Method::GET,
        "/strict/k",
        "",
        &["x-amz-content-sha256", "x-amz-date"],
        &mut no_host,
        sigv4::EMPTY_SHA256,
    );
    assert_not_signed(
        &send(&app, Method::GET, "/strict/k", no_host, b"").await,
        "host",
    );
    // With host signed, the same hand-signed request works.
    sign_v4_header(
        &app,
        &Method::GET,
        "/strict/k",
        "",
        &["host", "x-amz-content-sha256", "x-amz-date"],
        &mut h,
        sigv4::EMPTY_SHA256,
    );
    let res = send(&app, Method::GET, "/strict/k", h, b"").await;
    res.assert_status(200);
    assert_eq!(res.text(), "body");
}

#[tokio::test]
async fn unsigned_amz_header_on_a_multipart_part_is_refused() {
    let app = app_with_bucket().await;
    let res = app
        .req(Method::POST, "/strict/big")
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    let upload_id = xml_tag(&res.text(), "UploadId").unwrap();
    let part = app
        .req(Method::PUT, "/strict/big")
        .query(&format!("partNumber=1&uploadId={upload_id}"))
        .body("part");
    let res = send_tampered(&app, part, |h| {
        h.insert(
            "x-amz-copy-source",
            HeaderValue::from_static("/strict/other"),
        );
    })
    .await;
    assert_not_signed(&res, "x-amz-copy-source");
}

#[tokio::test]
async fn presigned_url_needs_host_and_every_amz_header_signed() {
    let app = app_with_bucket().await;
    let url = app.presign_v4(
        &Creds::admin(),
        Method::PUT,
        "/strict/up.txt",
        "",
        300,
        OffsetDateTime::now_utc(),
    );
    let res = Resp::read(
        app.http
            .put(&url)
            .header("x-amz-acl", "public-read")
            .body("x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_not_signed(&res, "x-amz-acl");
    app.get("/strict/up.txt")
        .await
        .assert_error(404, "NoSuchKey");
    // What browsers and SDKs send with a presigned PUT (no x-amz-* headers) still works.
    let res = Resp::read(
        app.http
            .put(&url)
            .header("content-type", "text/plain")
            .body("ok")
            .send()
            .await
            .unwrap(),
    )
    .await;
    res.assert_status(200);

    // A presigned URL whose X-Amz-SignedHeaders leaves out host.
    let amz_date = sigv4::format_amz_date(OffsetDateTime::now_utc());
    let scope = sigv4::scope(&amz_date[..8], REGION, "s3");
    let query = format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires=300&X-Amz-SignedHeaders=x-amz-date",
        sigv4::uri_encode(&format!("{ADMIN_AK}/{scope}"), true)
    );
    let signed = vec!["x-amz-date".to_owned()];
    let creq = sigv4::canonical_request(
        "GET",
        "/strict/up.txt",
        &sigv4::canonical_query(&sigv4::parse_query(&query), true),
        &sigv4::canonical_headers(&signed, &HeaderMap::new(), None),
        &signed,
        sigv4::UNSIGNED_PAYLOAD,
    );
    let sts = sigv4::string_to_sign(&amz_date, &scope, &creq);
    let sig = sigv4::sign(
        &sigv4::signing_key(ADMIN_SK, &amz_date[..8], REGION, "s3"),
        &sts,
    );
    let url = format!("{}/strict/up.txt?{query}&X-Amz-Signature={sig}", app.base);
    assert_not_signed(&app.send_url(Method::GET, &url, Vec::new()).await, "host");
}

/// `x-amz-content-sha256` is the canonical request's payload line, so a signer may leave it out
/// of SignedHeaders (the JSON API supplies it for generic SigV4 signers); it stays covered.
#[tokio::test]
async fn content_sha256_need_not_be_listed_but_stays_covered() {
    let app = app_with_bucket().await;
    let hash = sigv4::hex_sha256(b"payload");
    let mut h = HeaderMap::new();
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_str(&hash).unwrap(),
    );
    sign_v4_header(
        &app,
        &Method::PUT,
        "/strict/p",
        "",
        &["host", "x-amz-date"],
        &mut h,
        &hash,
    );
    send(&app, Method::PUT, "/strict/p", h.clone(), b"payload")
        .await
        .assert_status(200);
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static(sigv4::UNSIGNED_PAYLOAD),
    );
    send(&app, Method::PUT, "/strict/p", h, b"other")
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    assert_eq!(app.get("/strict/p").await.text(), "payload");
}

#[tokio::test]
async fn json_api_refuses_unsigned_amz_headers_too() {
    let app = app_with_bucket().await;
    let body = br#"{"bucket":"strict","key":"k"}"#;
    // A generic SigV4 signer: host and x-amz-date signed, the body hashed, no
    // x-amz-content-sha256 header.
    let hash = sigv4::hex_sha256(body);
    let mut h = HeaderMap::new();
    sign_v4_header(
        &app,
        &Method::POST,
        "/-/api/presign/post",
        "",
        &["host", "x-amz-date"],
        &mut h,
        &hash,
    );
    send(&app, Method::POST, "/-/api/presign/post", h.clone(), body)
        .await
        .assert_status(200);
    h.insert("x-amz-meta-x", HeaderValue::from_static("1"));
    let res = send(&app, Method::POST, "/-/api/presign/post", h, body).await;
    assert_eq!(res.status, 403, "{}", res.text());
    let json: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(json["error"]["code"], "AccessDenied");
}

// ---------------------------------------------------------------------------------------------
// SigV2 bucket-level requests: `/bucket` and `/bucket/` are both accepted
// ---------------------------------------------------------------------------------------------

/// SigV2 header auth over `resource` (which may differ from the path, as boto3 signs it).
fn sign_v2(method: &Method, resource: &str, query: &str, extra: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in extra {
        h.insert(
            reqwest::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    h.insert("date", HeaderValue::from_str(&date).unwrap());
    let get = |n: &str| {
        h.get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let sts = sigv2::string_to_sign(
        method.as_str(),
        &get("content-md5"),
        &get("content-type"),
        &date,
        &sigv2::canonical_amz_headers(&h),
        &sigv2::canonical_resource(resource, &sigv4::parse_query(query)),
    );
    let auth = format!("AWS {ADMIN_AK}:{}", sigv2::sign(ADMIN_SK, &sts));
    h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
    h
}

#[tokio::test]
async fn sigv2_bucket_requests_signed_with_a_trailing_slash_work() {
    let app = spawn_app().await;
    // boto3 (signature_version="s3", path-style) signs `/v2b/` for `PUT /v2b`.
    let h = sign_v2(&Method::PUT, "/v2b/", "", &[]);
    send(&app, Method::PUT, "/v2b", h, b"")
        .await
        .assert_status(200);
    app.put_object("v2b", "photos/a.jpg", "a").await;
    // …and `/v2b/` for `GET /v2b?prefix=…` (prefix is not a sub-resource, so not signed).
    let h = sign_v2(&Method::GET, "/v2b/", "prefix=photos%2F", &[]);
    let res = send(&app, Method::GET, "/v2b?prefix=photos%2F", h, b"").await;
    res.assert_status(200);
    assert_eq!(xml_tag(&res.text(), "Key").as_deref(), Some("photos/a.jpg"));
    // Sub-resources are still signed: `/v2b/?acl`.
    let h = sign_v2(&Method::GET, "/v2b/", "acl", &[]);
    send(&app, Method::GET, "/v2b?acl", h, b"")
        .await
        .assert_status(200);
    // The spelling without the slash, as other clients sign it, keeps working, for a path
    // with the slash too.
    let h = sign_v2(&Method::GET, "/v2b", "", &[]);
    send(&app, Method::GET, "/v2b/", h, b"")
        .await
        .assert_status(200);
    // Objects have one spelling only: a signature over `/v2b/photos/a.jpg/` is wrong.
    let h = sign_v2(&Method::GET, "/v2b/photos/a.jpg/", "", &[]);
    send(&app, Method::GET, "/v2b/photos/a.jpg", h, b"")
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    // Another bucket's signature does not carry over.
    let h = sign_v2(&Method::GET, "/other/", "", &[]);
    send(&app, Method::GET, "/v2b", h, b"")
        .await
        .assert_error(403, "SignatureDoesNotMatch");
}

#[tokio::test]
async fn sigv2_signs_amz_headers_by_construction() {
    let app = spawn_app().await;
    app.create_bucket("v2h").await;
    let mut h = sign_v2(
        &Method::PUT,
        "/v2h/k",
        "",
        &[("content-type", "text/plain")],
    );
    h.insert("x-amz-acl", HeaderValue::from_static("public-read"));
    send(&app, Method::PUT, "/v2h/k", h, b"x")
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    app.get("/v2h/k").await.assert_error(404, "NoSuchKey");
}

// ---------------------------------------------------------------------------------------------
// Empty Authorization
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn empty_authorization_is_403_access_denied() {
    let app = app_with_bucket().await;
    app.req(Method::PUT, "/strict")
        .query("acl")
        .header("x-amz-acl", "public-read")
        .send()
        .await
        .assert_status(200);
    anonymous_get(&app, "/strict").await.assert_status(200);
    for value in ["", "   "] {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(value).unwrap());
        let res = send(&app, Method::PUT, "/strict/k", h.clone(), b"x").await;
        res.assert_error(403, "AccessDenied");
        assert_eq!(
            xml_tag(&res.text(), "Message").as_deref(),
            Some("Access Denied")
        );
        send(&app, Method::PUT, "/newbucket", h.clone(), b"")
            .await
            .assert_error(403, "AccessDenied");
        // Not taken as anonymous either: a public bucket still refuses it.
        send(&app, Method::GET, "/strict", h.clone(), b"")
            .await
            .assert_error(403, "AccessDenied");
        // The JSON API answers in JSON, 403.
        let res = send(
            &app,
            Method::POST,
            "/-/api/presign/post",
            h,
            br#"{"bucket":"strict","key":"k"}"#,
        )
        .await;
        assert_eq!(res.status, 403, "{}", res.text());
        let json: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(json["error"]["code"], "AccessDenied");
    }
    app.get("/strict/k").await.assert_error(404, "NoSuchKey");
    // `Bearer` without a token is a malformed token (401), not an unknown scheme (400).
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Bearer "));
    let res = send(&app, Method::POST, "/-/api/presign/post", h, b"{}").await;
    assert_eq!(res.status, 401, "{}", res.text());
    let json: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(json["error"]["code"], "InvalidToken");
}

// ---------------------------------------------------------------------------------------------
// POST forms: Content-MD5 and what a policy must say
// ---------------------------------------------------------------------------------------------

/// A SigV4 form (admin key) over `conditions` (raw JSON, the SigV4 conditions appended).
fn form_fields(conditions: &str, fields: &[(&str, &str)]) -> Vec<(String, String)> {
    let now = OffsetDateTime::now_utc();
    let date = sigv4::format_amz_date(now);
    let credential = format!("{ADMIN_AK}/{}/{REGION}/s3/aws4_request", &date[..8]);
    let expiration = (now + time::Duration::hours(1))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].000Z"
        ))
        .unwrap();
    let json = format!(
        r#"{{"expiration": "{expiration}", "conditions": [{conditions}, {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}}, {{"x-amz-date": "{date}"}}]}}"#
    );
    let policy = B64.encode(json);
    let signature = sign_v4(ADMIN_SK, &date[..8], REGION, &policy);
    let mut out: Vec<(String, String)> = fields
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    for (n, v) in [
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        ("x-amz-credential", credential.as_str()),
        ("x-amz-date", date.as_str()),
        ("policy", policy.as_str()),
        ("x-amz-signature", signature.as_str()),
    ] {
        out.push((n.to_owned(), v.to_owned()));
    }
    out
}

async fn post_form(app: &TestApp, bucket: &str, fields: &[(String, String)], data: &[u8]) -> Resp {
    let form = fields
        .iter()
        .fold(Form::new(), |f, (n, v)| f.text(n.clone(), v.clone()))
        .part("file", Part::bytes(data.to_vec()).file_name("f.bin"));
    let res = app
        .http
        .post(format!("{}/{bucket}", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

const MD5_CONDITIONS: &str =
    r#"{"bucket": "strict"}, ["starts-with", "$key", ""], ["starts-with", "$Content-MD5", ""]"#;

#[tokio::test]
async fn post_content_md5_mismatch_is_bad_digest_and_nothing_is_stored() {
    let app = app_with_bucket().await;
    let wrong = content_md5(b"something else");
    let fields = form_fields(
        MD5_CONDITIONS,
        &[("key", "md5.txt"), ("Content-MD5", &wrong)],
    );
    let res = post_form(&app, B, &fields, b"the file").await;
    res.assert_error(400, "BadDigest");
    app.get("/strict/md5.txt")
        .await
        .assert_error(404, "NoSuchKey");
    assert!(app.tmp_files().is_empty(), "{:?}", app.tmp_files());

    // A digest that is not base64 of 16 bytes is InvalidDigest, as for PUT.
    for bad in ["not base64!", "AAAA"] {
        let fields = form_fields(MD5_CONDITIONS, &[("key", "md5.txt"), ("Content-MD5", bad)]);
        post_form(&app, B, &fields, b"the file")
            .await
            .assert_error(400, "InvalidDigest");
    }
    app.get("/strict/md5.txt")
        .await
        .assert_error(404, "NoSuchKey");

    // The right digest stores the file.
    let right = content_md5(b"the file");
    let fields = form_fields(
        MD5_CONDITIONS,
        &[("key", "md5.txt"), ("Content-MD5", &right)],
    );
    post_form(&app, B, &fields, b"the file")
        .await
        .assert_status(204);
    assert_eq!(app.get("/strict/md5.txt").await.text(), "the file");
}

#[tokio::test]
async fn post_policy_without_a_bucket_condition_is_refused() {
    let app = app_with_bucket().await;
    app.create_bucket("victim").await;
    // Signed for no bucket in particular, the policy would work on every bucket the key may
    // write to. AWS refuses it.
    let fields = form_fields(r#"["starts-with", "$key", ""]"#, &[("key", "x.html")]);
    for bucket in [B, "victim"] {
        let res = post_form(&app, bucket, &fields, b"<script>1</script>").await;
        res.assert_error(403, "AccessDenied");
        assert_eq!(
            xml_tag(&res.text(), "Message").as_deref(),
            Some("Invalid according to Policy: Extra input fields: bucket")
        );
        app.get(&format!("/{bucket}/x.html"))
            .await
            .assert_error(404, "NoSuchKey");
    }
    // A `bucket` form field alone does not name it in the policy either.
    let fields = form_fields(
        r#"["starts-with", "$key", ""]"#,
        &[("key", "x.html"), ("bucket", B)],
    );
    post_form(&app, B, &fields, b"x")
        .await
        .assert_error(403, "AccessDenied");
    // With the condition, the bucket it names is the only one it works on.
    let fields = form_fields(
        r#"{"bucket": "strict"}, ["starts-with", "$key", ""]"#,
        &[("key", "x.html")],
    );
    post_form(&app, "victim", &fields, b"x")
        .await
        .assert_error(403, "AccessDenied");
    post_form(&app, B, &fields, b"ok").await.assert_status(204);
}

#[tokio::test]
async fn negative_content_length_range_is_invalid_policy_document() {
    let app = app_with_bucket().await;
    for range in [r#"[-1, 0]"#, r#"[0, -1]"#, r#"["-5", "10"]"#] {
        let conditions = format!(
            r#"{{"bucket": "strict"}}, ["starts-with", "$key", ""], ["content-length-range", {}]"#,
            &range[1..range.len() - 1]
        );
        let fields = form_fields(&conditions, &[("key", "neg")]);
        let res = post_form(&app, B, &fields, b"").await;
        res.assert_error(400, "InvalidPolicyDocument");
    }
    app.get("/strict/neg").await.assert_error(404, "NoSuchKey");
}
