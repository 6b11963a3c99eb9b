//! Signature Version 2: header and query-string authentication.

use reqwest::Method;
use time::OffsetDateTime;

use crate::helpers::{Creds, TestApp, spawn_app, xml_tag};

async fn app_with_bucket() -> TestApp {
    let app = spawn_app().await;
    app.create_bucket("sv2").await;
    app
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn header_auth_put_and_get() {
    let app = app_with_bucket().await;
    app.req(Method::PUT, "/sv2/file.txt")
        .v2(&Creds::admin())
        .header("content-type", "text/plain")
        .header("content-md5", &crate::helpers::content_md5(b"v2 body"))
        .header("x-amz-meta-via", "sigv2")
        .body("v2 body")
        .send()
        .await
        .assert_status(200);
    let res = app
        .req(Method::GET, "/sv2/file.txt")
        .v2(&Creds::admin())
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(res.text(), "v2 body");
    assert_eq!(res.header("content-type"), Some("text/plain"));
    assert_eq!(res.header("x-amz-meta-via"), Some("sigv2"));
}

#[tokio::test]
async fn header_auth_signs_sub_resources() {
    let app = app_with_bucket().await;
    let res = app
        .req(Method::GET, "/sv2")
        .query("acl")
        .v2(&Creds::admin())
        .send()
        .await;
    res.assert_status(200);
    assert!(res.text().contains("AccessControlPolicy"));
    let res = app
        .req(Method::GET, "/sv2")
        .query("prefix=a%20b&max-keys=5")
        .v2(&Creds::admin())
        .send()
        .await;
    res.assert_status(200);
}

#[tokio::test]
async fn query_auth_get() {
    let app = app_with_bucket().await;
    app.put_object("sv2", "q", "query auth").await;
    let url = app.presign_v2(&Creds::admin(), Method::GET, "/sv2/q", "", now() + 300);
    let res = app.send_url(Method::GET, &url, Vec::new()).await;
    res.assert_status(200);
    assert_eq!(res.text(), "query auth");
}

#[tokio::test]
async fn query_auth_with_response_override() {
    let app = app_with_bucket().await;
    app.put_object("sv2", "q", "query auth").await;
    let url = app.presign_v2(
        &Creds::admin(),
        Method::GET,
        "/sv2/q",
        "response-content-type=text%2Fcsv",
        now() + 300,
    );
    let res = app.send_url(Method::GET, &url, Vec::new()).await;
    res.assert_status(200);
    assert_eq!(res.header("content-type"), Some("text/csv"));
}

#[tokio::test]
async fn expired_query_auth_is_access_denied() {
    let app = app_with_bucket().await;
    app.put_object("sv2", "q", "x").await;
    let url = app.presign_v2(&Creds::admin(), Method::GET, "/sv2/q", "", now() - 60);
    let res = app.send_url(Method::GET, &url, Vec::new()).await;
    res.assert_error(403, "AccessDenied");
    assert_eq!(
        xml_tag(&res.text(), "Message").as_deref(),
        Some("Request has expired")
    );
}

#[tokio::test]
async fn bad_signature_is_signature_does_not_match() {
    let app = app_with_bucket().await;
    app.put_object("sv2", "q", "x").await;
    let wrong = Creds::new(crate::helpers::ADMIN_AK, "wrong-secret");
    app.req(Method::GET, "/sv2/q")
        .v2(&wrong)
        .send()
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    app.req(Method::PUT, "/sv2/q")
        .v2(&wrong)
        .body("overwrite")
        .send()
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    let url = app.presign_v2(&wrong, Method::GET, "/sv2/q", "", now() + 300);
    app.send_url(Method::GET, &url, Vec::new())
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    assert_eq!(app.get("/sv2/q").await.text(), "x");
}

#[tokio::test]
async fn v2_unknown_key_is_invalid_access_key_id() {
    let app = app_with_bucket().await;
    app.req(Method::GET, "/sv2")
        .v2(&Creds::new("PGNOSUCHKEY000000000", "s"))
        .send()
        .await
        .assert_error(403, "InvalidAccessKeyId");
}

#[tokio::test]
async fn header_auth_with_x_amz_date_instead_of_date() {
    let app = app_with_bucket().await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    app.req(Method::PUT, "/sv2/amzdate")
        .v2(&Creds::admin())
        .header("x-amz-date", &date)
        .body("dated")
        .send()
        .await
        .assert_status(200);
    assert_eq!(app.get("/sv2/amzdate").await.text(), "dated");
}

#[tokio::test]
async fn header_auth_with_skewed_date_is_request_time_too_skewed() {
    let app = app_with_bucket().await;
    app.req(Method::GET, "/sv2")
        .v2(&Creds::admin())
        .at(OffsetDateTime::now_utc() - time::Duration::minutes(20))
        .send()
        .await
        .assert_error(403, "RequestTimeTooSkewed");
}
