//! The shape of errors: S3 XML bodies, request ids, status codes, HEAD without body.

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, pattern, send_partial, spawn_app, xml_tag};

async fn app_with_bucket() -> TestApp {
    let app = spawn_app().await;
    app.create_bucket("errs").await;
    app
}

#[tokio::test]
async fn every_error_is_s3_xml_with_code_message_request_id() {
    let app = app_with_bucket().await;
    let res = app.get("/errs/missing").await;
    res.assert_error(404, "NoSuchKey");
    let text = res.text();
    assert!(text.starts_with("<?xml"), "{text}");
    assert!(text.contains("<Error>"), "{text}");
    assert_eq!(res.header("content-type"), Some("application/xml"));
    let id = res.header("x-amz-request-id").unwrap();
    assert_eq!(xml_tag(&text, "RequestId").as_deref(), Some(id));
    assert!(xml_tag(&text, "Message").is_some_and(|m| !m.is_empty()));
    // Successful responses carry a request id as well, and each is different.
    let ok = app.head("/errs").await;
    let other = ok.header("x-amz-request-id").unwrap();
    assert_ne!(id, other);
}

#[tokio::test]
async fn no_such_bucket_is_404() {
    let app = spawn_app().await;
    let res = app.get("/nobucket/key").await;
    res.assert_error(404, "NoSuchBucket");
    assert_eq!(
        xml_tag(&res.text(), "BucketName").as_deref(),
        Some("nobucket")
    );
    app.req(Method::GET, "/nobucket")
        .query("list-type=2")
        .send()
        .await
        .assert_error(404, "NoSuchBucket");
    app.put("/nobucket/key", "x")
        .await
        .assert_error(404, "NoSuchBucket");
}

#[tokio::test]
async fn no_such_key_is_404_with_key() {
    let app = app_with_bucket().await;
    let res = app.get("/errs/dir/missing.txt").await;
    res.assert_error(404, "NoSuchKey");
    assert_eq!(
        xml_tag(&res.text(), "Key").as_deref(),
        Some("dir/missing.txt")
    );
    assert_eq!(
        xml_tag(&res.text(), "Message").as_deref(),
        Some("The specified key does not exist.")
    );
}

#[tokio::test]
async fn unknown_sub_resource_is_not_implemented() {
    let app = app_with_bucket().await;
    for q in ["replication", "policy", "website", "tagging"] {
        app.req(Method::GET, "/errs")
            .query(q)
            .send()
            .await
            .assert_error(501, "NotImplemented");
    }
    app.req(Method::PUT, "/errs/k")
        .query("tagging")
        .body("<Tagging/>")
        .send()
        .await
        .assert_error(501, "NotImplemented");
    // The 501 did not turn into a plain bucket listing or object write.
    app.get("/errs/k").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn post_to_an_object_is_method_not_allowed() {
    let app = app_with_bucket().await;
    let res = app.req(Method::POST, "/errs/key").body("x").send().await;
    res.assert_error(405, "MethodNotAllowed");
}

#[tokio::test]
async fn head_errors_have_no_body() {
    let app = app_with_bucket().await;
    for (path, status) in [
        ("/errs/missing", 404),
        ("/nobucket/k", 404),
        ("/nobucket", 404),
    ] {
        let res = app.head(path).await;
        assert_eq!(res.status, status, "{path}");
        assert!(res.body.is_empty(), "{path}");
        assert!(res.header("x-amz-request-id").is_some());
    }
    // Also on the wire: nothing follows the header block.
    let mut s = app.connect().await;
    let req = format!(
        "HEAD /errs/missing HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        app.host
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 403") || text.starts_with("HTTP/1.1 404"),
        "{text}"
    );
    let (_, after) = text.split_once("\r\n\r\n").unwrap();
    assert!(after.is_empty(), "HEAD sent a body: {after:?}");
}

#[tokio::test]
async fn truncated_body_leaves_no_object() {
    let app = app_with_bucket().await;
    let p = app
        .req(Method::PUT, "/errs/truncated")
        .unsigned()
        .body(pattern(100_000, 3))
        .prepare();
    let mut s = app.connect().await;
    send_partial(&mut s, &p, 100_000, 1000).await;
    s.shutdown().await.unwrap();
    // Wait for the server to finish with the connection (an answer or a close).
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("server never closed the truncated connection");
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
    drop(s);
    app.get("/errs/truncated")
        .await
        .assert_error(404, "NoSuchKey");
    let list = app
        .req(Method::GET, "/errs")
        .query("list-type=2")
        .send()
        .await;
    assert_eq!(xml_tag(&list.text(), "KeyCount").as_deref(), Some("0"));
    assert!(app.tmp_files().is_empty());
}

#[tokio::test]
async fn put_without_content_length_is_missing_content_length() {
    let app = app_with_bucket().await;
    let p = app.req(Method::PUT, "/errs/chunked").unsigned().prepare();
    let mut s = app.connect().await;
    let mut head = format!("PUT {} HTTP/1.1\r\n", p.target).into_bytes();
    for (n, v) in &p.headers {
        head.extend_from_slice(format!("{}: {}\r\n", n, v.to_str().unwrap()).as_bytes());
    }
    head.extend_from_slice(
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    s.write_all(&head).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 411"), "{text}");
    assert!(text.contains("<Code>MissingContentLength</Code>"), "{text}");
}
