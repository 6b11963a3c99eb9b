//! PutObject, GetObject, HeadObject, DeleteObject, CopyObject, DeleteObjects, canned ACLs.

use postgate::auth::checksum::ChecksumAlgorithm;
use reqwest::Method;
use time::OffsetDateTime;

use crate::helpers::{
    ADMIN_AK, Creds, TestApp, checksum, content_md5, etag_of, obj, pattern, spawn_app, xml_blocks,
    xml_tag, xml_tags,
};

async fn app_with_bucket(bucket: &str) -> TestApp {
    let app = spawn_app().await;
    app.create_bucket(bucket).await;
    app
}

#[tokio::test]
async fn put_then_get_returns_the_bytes_and_quoted_md5_etag() {
    let app = app_with_bucket("bk1").await;
    let res = app.put("/bk1/hello.txt", "hello world").await;
    res.assert_status(200);
    assert_eq!(
        res.header("etag"),
        Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\"")
    );
    let got = app.get("/bk1/hello.txt").await;
    got.assert_status(200);
    assert_eq!(&got.body[..], b"hello world");
    assert_eq!(
        got.header("etag"),
        Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\"")
    );
    assert_eq!(got.header("content-length"), Some("11"));
    assert_eq!(got.header("content-type"), Some("binary/octet-stream"));
    assert!(got.header("last-modified").unwrap().ends_with(" GMT"));
}

#[tokio::test]
async fn head_returns_headers_without_body() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "k", "0123456789").await;
    let res = app.head("/bk1/k").await;
    res.assert_status(200);
    assert!(res.body.is_empty());
    assert_eq!(res.header("content-length"), Some("10"));
    assert_eq!(res.header("etag"), Some(etag_of(b"0123456789").as_str()));
    assert_eq!(res.header("accept-ranges"), Some("bytes"));
}

#[tokio::test]
async fn delete_is_204_and_also_204_when_absent() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "k", "x").await;
    app.delete("/bk1/k").await.assert_status(204);
    app.get("/bk1/k").await.assert_error(404, "NoSuchKey");
    app.delete("/bk1/k").await.assert_status(204);
    app.delete("/bk1/never-was").await.assert_status(204);
}

#[tokio::test]
async fn stored_headers_and_user_metadata_come_back() {
    let app = app_with_bucket("bk1").await;
    let res = app
        .req(Method::PUT, "/bk1/doc")
        .header("content-type", "text/markdown; charset=utf-8")
        .header("cache-control", "max-age=60")
        .header("content-disposition", "attachment; filename=\"doc.md\"")
        .header("content-encoding", "gzip")
        .header("content-language", "fr-CA")
        .header("expires", "Thu, 01 Jan 2037 00:00:00 GMT")
        .header("X-Amz-Meta-Camel-Case", "Value One")
        .header("x-amz-meta-lower", "two")
        .body("# title")
        .send()
        .await;
    res.assert_status(200);
    for res in [app.get("/bk1/doc").await, app.head("/bk1/doc").await] {
        res.assert_status(200);
        assert_eq!(
            res.header("content-type"),
            Some("text/markdown; charset=utf-8")
        );
        assert_eq!(res.header("cache-control"), Some("max-age=60"));
        assert_eq!(
            res.header("content-disposition"),
            Some("attachment; filename=\"doc.md\"")
        );
        assert_eq!(res.header("content-encoding"), Some("gzip"));
        assert_eq!(res.header("content-language"), Some("fr-CA"));
        assert_eq!(res.header("expires"), Some("Thu, 01 Jan 2037 00:00:00 GMT"));
        assert_eq!(res.header("x-amz-meta-camel-case"), Some("Value One"));
        assert_eq!(res.header("x-amz-meta-lower"), Some("two"));
        let names: Vec<&str> = res
            .headers
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("x-amz-meta-"))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

#[tokio::test]
async fn last_modified_is_within_the_put_window() {
    let app = app_with_bucket("bk1").await;
    let before = OffsetDateTime::now_utc().unix_timestamp();
    app.put_object("bk1", "k", "x").await;
    let after = OffsetDateTime::now_utc().unix_timestamp();
    let res = app.head("/bk1/k").await;
    let lm = httpdate::parse_http_date(res.header("last-modified").unwrap()).unwrap();
    let lm = lm.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(
        lm >= before - 1 && lm <= after + 1,
        "{lm} not in {before}..{after}"
    );
}

#[tokio::test]
async fn content_md5_that_matches_is_accepted() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/k")
        .header("content-md5", &content_md5(b"payload"))
        .body("payload")
        .send()
        .await
        .assert_status(200);
    assert_eq!(&app.get("/bk1/k").await.body[..], b"payload");
}

#[tokio::test]
async fn content_md5_that_differs_is_bad_digest_and_not_stored() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/k")
        .header("content-md5", &content_md5(b"something else"))
        .body("payload")
        .send()
        .await
        .assert_error(400, "BadDigest");
    app.get("/bk1/k").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn content_md5_not_base64_of_16_bytes_is_invalid_digest() {
    let app = app_with_bucket("bk1").await;
    for bad in ["not base64!!", "AAAAAAAAAAAAAAAAAAAA", "YWJj"] {
        app.req(Method::PUT, "/bk1/k")
            .header("content-md5", bad)
            .body("payload")
            .send()
            .await
            .assert_error(400, "InvalidDigest");
    }
    app.get("/bk1/k").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn checksum_headers_are_verified_and_returned_only_with_checksum_mode() {
    let app = app_with_bucket("bk1").await;
    let data = b"checksummed body";
    for (algo, name) in [
        (ChecksumAlgorithm::Crc32, "x-amz-checksum-crc32"),
        (ChecksumAlgorithm::Crc32c, "x-amz-checksum-crc32c"),
        (ChecksumAlgorithm::Sha256, "x-amz-checksum-sha256"),
    ] {
        let value = checksum(algo, data);
        let path = format!("/bk1/{name}");
        app.req(Method::PUT, &path)
            .header(name, &value)
            .body(&data[..])
            .send()
            .await
            .assert_status(200);
        let plain = app.get(&path).await;
        assert_eq!(&plain.body[..], data);
        assert_eq!(plain.header(name), None, "{name} without checksum mode");
        let get = app
            .req(Method::GET, &path)
            .header("x-amz-checksum-mode", "ENABLED")
            .send()
            .await;
        assert_eq!(get.header(name), Some(value.as_str()));
        let head = app
            .req(Method::HEAD, &path)
            .header("x-amz-checksum-mode", "ENABLED")
            .send()
            .await;
        assert_eq!(head.header(name), Some(value.as_str()));
    }
}

#[tokio::test]
async fn checksum_header_that_differs_is_bad_digest() {
    let app = app_with_bucket("bk1").await;
    for (algo, name) in [
        (ChecksumAlgorithm::Crc32, "x-amz-checksum-crc32"),
        (ChecksumAlgorithm::Crc32c, "x-amz-checksum-crc32c"),
        (ChecksumAlgorithm::Sha256, "x-amz-checksum-sha256"),
    ] {
        app.req(Method::PUT, "/bk1/k")
            .header(name, &checksum(algo, b"other bytes"))
            .body("real bytes")
            .send()
            .await
            .assert_error(400, "BadDigest");
    }
    app.get("/bk1/k").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn malformed_checksum_header_is_invalid_request() {
    let app = app_with_bucket("bk1").await;
    for name in [
        "x-amz-checksum-crc32",
        "x-amz-checksum-crc32c",
        "x-amz-checksum-sha256",
    ] {
        let res = app
            .req(Method::PUT, "/bk1/k")
            .header(name, "not-a-checksum")
            .body("x")
            .send()
            .await;
        res.assert_error(400, "InvalidRequest");
        assert!(res.text().contains(name), "{}", res.text());
    }
}

#[tokio::test]
async fn small_inline_and_large_blob_objects_round_trip_byte_exact() {
    let app = app_with_bucket("bk1").await;
    for (key, len) in [("small", 1024usize), ("large", 3 * 1024 * 1024)] {
        let data = pattern(len, len as u64);
        let etag = app.put_object("bk1", key, data.clone()).await;
        assert_eq!(etag, etag_of(&data));
        let got = app.get(&format!("/bk1/{key}")).await;
        got.assert_status(200);
        assert_eq!(got.body.len(), len);
        assert!(got.body[..] == data[..], "{key} differs");
    }
}

#[tokio::test]
async fn unusual_keys_are_plain_data() {
    let app = app_with_bucket("bk1").await;
    let keys = [
        "../../etc/passwd",
        "a//b",
        "%2F",
        "with space and +plus",
        "emoji 🎉/ünïcödé",
        "trailing/",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = format!("body {i}");
        app.put_object("bk1", key, body.clone()).await;
        let got = app.get(&obj("bk1", key)).await;
        got.assert_status(200);
        assert_eq!(got.text(), body, "{key}");
    }
    let list = app
        .req(Method::GET, "/bk1")
        .query("list-type=2")
        .send()
        .await;
    let mut listed = xml_tags(&list.text(), "Key");
    listed.sort();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    // `%2F` is a literal percent sign: encoded once more on the wire, not a slash.
    assert_eq!(obj("bk1", "%2F"), "/bk1/%252F");
    assert!(!std::path::Path::new("/etc/passwd-postgate").exists());
}

#[tokio::test]
async fn key_of_1024_bytes_is_ok_and_1025_is_key_too_long() {
    let app = app_with_bucket("bk1").await;
    let ok = "k".repeat(1024);
    app.put_object("bk1", &ok, "fits").await;
    assert_eq!(app.get(&obj("bk1", &ok)).await.text(), "fits");
    let long = "k".repeat(1025);
    app.put(&obj("bk1", &long), "too long")
        .await
        .assert_error(400, "KeyTooLongError");
    // Multi-byte characters count as bytes: 342 × 3 = 1026.
    let wide = "€".repeat(342);
    app.put(&obj("bk1", &wide), "x")
        .await
        .assert_error(400, "KeyTooLongError");
}

async fn range(app: &TestApp, value: &str) -> crate::helpers::Resp {
    app.req(Method::GET, "/bk1/r")
        .header("range", value)
        .send()
        .await
}

#[tokio::test]
async fn ranges_give_206_with_content_range() {
    let app = app_with_bucket("bk1").await;
    let data = pattern(100, 7);
    app.put_object("bk1", "r", data.clone()).await;

    let res = range(&app, "bytes=0-9").await;
    res.assert_status(206);
    assert_eq!(&res.body[..], &data[0..10]);
    assert_eq!(res.header("content-range"), Some("bytes 0-9/100"));
    assert_eq!(res.header("content-length"), Some("10"));

    let res = range(&app, "bytes=5-").await;
    res.assert_status(206);
    assert_eq!(&res.body[..], &data[5..]);
    assert_eq!(res.header("content-range"), Some("bytes 5-99/100"));

    let res = range(&app, "bytes=-3").await;
    res.assert_status(206);
    assert_eq!(&res.body[..], &data[97..]);
    assert_eq!(res.header("content-range"), Some("bytes 97-99/100"));

    let res = range(&app, "bytes=90-500").await;
    res.assert_status(206);
    assert_eq!(&res.body[..], &data[90..]);
}

#[tokio::test]
async fn range_on_a_blob_object_reads_the_right_slice() {
    let app = app_with_bucket("bk1").await;
    let data = pattern(300 * 1024, 8);
    app.put_object("bk1", "r", data.clone()).await;
    let res = range(&app, "bytes=200000-200099").await;
    res.assert_status(206);
    assert_eq!(&res.body[..], &data[200_000..200_100]);
}

#[tokio::test]
async fn range_past_the_end_is_invalid_range() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "r", pattern(100, 7)).await;
    let res = range(&app, "bytes=100-").await;
    res.assert_error(416, "InvalidRange");
    assert_eq!(
        xml_tag(&res.text(), "ActualObjectSize").as_deref(),
        Some("100")
    );
    range(&app, "bytes=500-600")
        .await
        .assert_error(416, "InvalidRange");
}

#[tokio::test]
async fn multi_range_is_ignored_and_whole_object_returned() {
    let app = app_with_bucket("bk1").await;
    let data = pattern(100, 7);
    app.put_object("bk1", "r", data.clone()).await;
    let res = range(&app, "bytes=0-1,5-6").await;
    res.assert_status(200);
    assert_eq!(&res.body[..], &data[..]);
    assert_eq!(res.header("content-range"), None);
}

fn http_date_offset(secs: i64) -> String {
    let t = OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    httpdate::fmt_http_date(t.into())
}

async fn cond(app: &TestApp, headers: &[(&str, &str)]) -> crate::helpers::Resp {
    let mut req = app.req(Method::GET, "/bk1/c");
    for (n, v) in headers {
        req = req.header(n, v);
    }
    req.send().await
}

#[tokio::test]
async fn conditional_get_follows_s3_precedence() {
    let app = app_with_bucket("bk1").await;
    let etag = app.put_object("bk1", "c", "conditional").await;
    let future = http_date_offset(24 * 3600);
    let past = http_date_offset(-24 * 3600);

    cond(&app, &[("if-match", "\"0000\"")])
        .await
        .assert_error(412, "PreconditionFailed");
    let res = cond(&app, &[("if-match", &etag)]).await;
    res.assert_status(200);
    assert_eq!(res.text(), "conditional");

    let res = cond(&app, &[("if-none-match", &etag)]).await;
    assert_eq!(res.status, 304);
    assert!(res.body.is_empty());
    assert_eq!(res.header("etag"), Some(etag.as_str()));
    cond(&app, &[("if-none-match", "\"0000\"")])
        .await
        .assert_status(200);

    assert_eq!(
        cond(&app, &[("if-modified-since", &future)]).await.status,
        304
    );
    cond(&app, &[("if-modified-since", &past)])
        .await
        .assert_status(200);

    cond(&app, &[("if-unmodified-since", &past)])
        .await
        .assert_error(412, "PreconditionFailed");
    cond(&app, &[("if-unmodified-since", &future)])
        .await
        .assert_status(200);

    // If-Match that holds wins over If-Unmodified-Since that fails.
    let res = cond(&app, &[("if-match", &etag), ("if-unmodified-since", &past)]).await;
    res.assert_status(200);
    assert_eq!(res.text(), "conditional");
    // If-None-Match that fails (does not match) wins over If-Modified-Since that would give 304.
    cond(
        &app,
        &[
            ("if-none-match", "\"0000\""),
            ("if-modified-since", &future),
        ],
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn presigned_get_applies_response_header_overrides() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/pic")
        .header("content-type", "image/png")
        .body("png bytes")
        .send()
        .await
        .assert_status(200);
    let url = app.presign_v4(
        &Creds::admin(),
        Method::GET,
        "/bk1/pic",
        "response-content-type=text%2Fplain&response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22",
        300,
        OffsetDateTime::now_utc(),
    );
    let res = app.send_url(Method::GET, &url, Vec::new()).await;
    res.assert_status(200);
    assert_eq!(res.text(), "png bytes");
    assert_eq!(res.header("content-type"), Some("text/plain"));
    assert_eq!(
        res.header("content-disposition"),
        Some("attachment; filename=\"a b.txt\"")
    );
    // The stored type is unchanged.
    assert_eq!(
        app.head("/bk1/pic").await.header("content-type"),
        Some("image/png")
    );
}

#[tokio::test]
async fn conditional_put_if_none_match_star_refuses_to_overwrite() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/once")
        .header("if-none-match", "*")
        .body("first")
        .send()
        .await
        .assert_status(200);
    app.req(Method::PUT, "/bk1/once")
        .header("if-none-match", "*")
        .body("second")
        .send()
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(app.get("/bk1/once").await.text(), "first");
}

async fn copy(
    app: &TestApp,
    dest: &str,
    source: &str,
    extra: &[(&str, &str)],
) -> crate::helpers::Resp {
    let mut req = app
        .req(Method::PUT, dest)
        .header("x-amz-copy-source", source);
    for (n, v) in extra {
        req = req.header(n, v);
    }
    req.send().await
}

#[tokio::test]
async fn copy_object_within_and_across_buckets_keeps_metadata_by_default() {
    let app = app_with_bucket("src").await;
    app.create_bucket("dst").await;
    app.req(Method::PUT, "/src/orig")
        .header("content-type", "text/plain")
        .header("x-amz-meta-color", "blue")
        .body("copy me")
        .send()
        .await
        .assert_status(200);
    for dest in ["/src/copy", "/dst/copy"] {
        let res = copy(&app, dest, "/src/orig", &[]).await;
        res.assert_status(200);
        let text = res.text();
        assert!(text.contains("<CopyObjectResult"), "{text}");
        assert_eq!(
            xml_tag(&text, "ETag").as_deref(),
            Some(etag_of(b"copy me").as_str())
        );
        assert!(xml_tag(&text, "LastModified").is_some());
        let got = app.get(dest).await;
        assert_eq!(got.text(), "copy me");
        assert_eq!(got.header("content-type"), Some("text/plain"));
        assert_eq!(got.header("x-amz-meta-color"), Some("blue"));
    }
    // Without the leading slash, with the explicit COPY directive.
    copy(
        &app,
        "/dst/copy2",
        "src/orig",
        &[("x-amz-metadata-directive", "COPY")],
    )
    .await
    .assert_status(200);
    assert_eq!(
        app.get("/dst/copy2").await.header("x-amz-meta-color"),
        Some("blue")
    );
}

#[tokio::test]
async fn copy_object_with_replace_directive_replaces_metadata() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/orig")
        .header("content-type", "text/plain")
        .header("x-amz-meta-color", "blue")
        .body("data")
        .send()
        .await
        .assert_status(200);
    copy(
        &app,
        "/bk1/new",
        "/bk1/orig",
        &[
            ("x-amz-metadata-directive", "REPLACE"),
            ("content-type", "application/json"),
            ("x-amz-meta-shape", "round"),
        ],
    )
    .await
    .assert_status(200);
    let got = app.get("/bk1/new").await;
    assert_eq!(got.text(), "data");
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.header("x-amz-meta-shape"), Some("round"));
    assert_eq!(got.header("x-amz-meta-color"), None);
    // Copying onto itself is allowed with REPLACE.
    copy(
        &app,
        "/bk1/orig",
        "/bk1/orig",
        &[
            ("x-amz-metadata-directive", "REPLACE"),
            ("x-amz-meta-color", "green"),
        ],
    )
    .await
    .assert_status(200);
    let got = app.get("/bk1/orig").await;
    assert_eq!(got.text(), "data");
    assert_eq!(got.header("x-amz-meta-color"), Some("green"));
}

#[tokio::test]
async fn copy_object_onto_itself_without_replace_is_invalid_request() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "self", "x").await;
    let res = copy(&app, "/bk1/self", "/bk1/self", &[]).await;
    res.assert_error(400, "InvalidRequest");
    assert!(
        res.text().contains("copy an object to itself"),
        "{}",
        res.text()
    );
}

#[tokio::test]
async fn copy_of_missing_source_is_no_such_key() {
    let app = app_with_bucket("bk1").await;
    copy(&app, "/bk1/to", "/bk1/nothing", &[])
        .await
        .assert_error(404, "NoSuchKey");
    copy(&app, "/bk1/to", "/nobucket/x", &[])
        .await
        .assert_error(404, "NoSuchBucket");
}

#[tokio::test]
async fn copy_of_large_blob_object_is_byte_exact_and_independent() {
    let app = app_with_bucket("bk1").await;
    app.create_bucket("bk2").await;
    let data = pattern(3 * 1024 * 1024 + 17, 99);
    app.put_object("bk1", "big", data.clone()).await;
    copy(&app, "/bk2/big", "/bk1/big", &[])
        .await
        .assert_status(200);
    // Deleting the source leaves the copy intact (it has its own blob).
    app.delete("/bk1/big").await.assert_status(204);
    let got = app.get("/bk2/big").await;
    got.assert_status(200);
    assert_eq!(got.body.len(), data.len());
    assert!(got.body[..] == data[..]);
    assert_eq!(got.header("etag"), Some(etag_of(&data).as_str()));
}

fn delete_body(keys: &[&str], quiet: bool) -> String {
    let mut s = String::from("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    if quiet {
        s.push_str("<Quiet>true</Quiet>");
    }
    for k in keys {
        s.push_str(&format!("<Object><Key>{k}</Key></Object>"));
    }
    s.push_str("</Delete>");
    s
}

async fn delete_objects(app: &TestApp, body: &str) -> crate::helpers::Resp {
    app.req(Method::POST, "/bk1")
        .query("delete")
        .header("content-md5", &content_md5(body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
}

#[tokio::test]
async fn delete_objects_lists_every_deleted_key() {
    let app = app_with_bucket("bk1").await;
    for k in ["a", "b", "c"] {
        app.put_object("bk1", k, k).await;
    }
    let res = delete_objects(&app, &delete_body(&["a", "b", "missing"], false)).await;
    res.assert_status(200);
    let text = res.text();
    assert!(text.contains("<DeleteResult"), "{text}");
    let deleted: Vec<String> = xml_blocks(&text, "Deleted")
        .iter()
        .filter_map(|b| xml_tag(b, "Key"))
        .collect();
    assert_eq!(deleted, ["a", "b", "missing"]);
    assert!(xml_blocks(&text, "Error").is_empty());
    app.get("/bk1/a").await.assert_error(404, "NoSuchKey");
    app.get("/bk1/b").await.assert_error(404, "NoSuchKey");
    assert_eq!(app.get("/bk1/c").await.text(), "c");
}

#[tokio::test]
async fn delete_objects_quiet_lists_nothing_but_deletes() {
    let app = app_with_bucket("bk1").await;
    for k in ["a", "b"] {
        app.put_object("bk1", k, k).await;
    }
    let res = delete_objects(&app, &delete_body(&["a", "b"], true)).await;
    res.assert_status(200);
    let text = res.text();
    assert!(text.contains("DeleteResult"), "{text}");
    assert!(xml_blocks(&text, "Deleted").is_empty(), "{text}");
    app.get("/bk1/a").await.assert_error(404, "NoSuchKey");
    app.get("/bk1/b").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn delete_objects_with_malformed_xml_is_malformed_xml() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "a", "a").await;
    delete_objects(&app, "<Delete><Object><Key>a</Key></Obj")
        .await
        .assert_error(400, "MalformedXML");
    delete_objects(&app, "not xml at all")
        .await
        .assert_error(400, "MalformedXML");
    assert_eq!(app.get("/bk1/a").await.text(), "a");
}

#[tokio::test]
async fn public_read_object_is_readable_anonymously_but_not_writable() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/pub")
        .header("x-amz-acl", "public-read")
        .body("for everyone")
        .send()
        .await
        .assert_status(200);
    let res = app.req(Method::GET, "/bk1/pub").anonymous().send().await;
    res.assert_status(200);
    assert_eq!(res.text(), "for everyone");
    app.req(Method::HEAD, "/bk1/pub")
        .anonymous()
        .send()
        .await
        .assert_status(200);
    app.req(Method::PUT, "/bk1/pub")
        .anonymous()
        .body("defaced")
        .send()
        .await
        .assert_error(403, "AccessDenied");
    app.req(Method::DELETE, "/bk1/pub")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
    assert_eq!(app.get("/bk1/pub").await.text(), "for everyone");
}

#[tokio::test]
async fn private_object_is_access_denied_anonymously() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "secret", "hidden").await;
    app.req(Method::GET, "/bk1/secret")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
    let head = app
        .req(Method::HEAD, "/bk1/secret")
        .anonymous()
        .send()
        .await;
    assert_eq!(head.status, 403);
    assert!(head.body.is_empty());
    // A missing key in a private bucket does not leak its absence.
    app.req(Method::GET, "/bk1/nothing")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
}

#[tokio::test]
async fn get_object_acl_shows_all_users_read_for_public_object() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/pub")
        .header("x-amz-acl", "public-read")
        .body("x")
        .send()
        .await
        .assert_status(200);
    app.put_object("bk1", "priv", "x").await;

    let res = app.req(Method::GET, "/bk1/pub").query("acl").send().await;
    res.assert_status(200);
    let text = res.text();
    let grants = xml_blocks(&text, "Grant");
    assert_eq!(grants.len(), 2, "{text}");
    assert_eq!(xml_tag(&grants[0], "ID").as_deref(), Some(ADMIN_AK));
    assert_eq!(
        xml_tag(&grants[0], "Permission").as_deref(),
        Some("FULL_CONTROL")
    );
    assert_eq!(
        xml_tag(&grants[1], "URI").as_deref(),
        Some("http://acs.amazonaws.com/groups/global/AllUsers")
    );
    assert_eq!(xml_tag(&grants[1], "Permission").as_deref(), Some("READ"));

    let res = app.req(Method::GET, "/bk1/priv").query("acl").send().await;
    res.assert_status(200);
    assert_eq!(xml_blocks(&res.text(), "Grant").len(), 1);
}

#[tokio::test]
async fn zero_byte_object_round_trips() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app_with_bucket("bk1").await;
    // Raw, so that `Content-Length: 0` is on the wire as SDKs send it.
    let p = app
        .req(Method::PUT, "/bk1/empty")
        .header("connection", "close")
        .prepare();
    let mut s = app.connect().await;
    s.write_all(&p.head_bytes(0)).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("etag: \"d41d8cd98f00b204e9800998ecf8427e\""),
        "{text}"
    );
    let got = app.get("/bk1/empty").await;
    got.assert_status(200);
    assert!(got.body.is_empty());
    assert_eq!(got.header("content-length"), Some("0"));
}

#[tokio::test]
async fn conditional_put_if_match_checks_the_current_etag() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/cas")
        .header("if-match", "\"00000000000000000000000000000000\"")
        .body("x")
        .send()
        .await
        .assert_error(404, "NoSuchKey");
    let etag = app.put_object("bk1", "cas", "v1").await;
    app.req(Method::PUT, "/bk1/cas")
        .header("if-match", "\"00000000000000000000000000000000\"")
        .body("v2")
        .send()
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(app.get("/bk1/cas").await.text(), "v1");
    app.req(Method::PUT, "/bk1/cas")
        .header("if-match", &etag)
        .body("v2")
        .send()
        .await
        .assert_status(200);
    assert_eq!(app.get("/bk1/cas").await.text(), "v2");
}

#[tokio::test]
async fn user_metadata_over_2_kib_is_metadata_too_large() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/meta")
        .header("x-amz-meta-big", &"v".repeat(2100))
        .body("x")
        .send()
        .await
        .assert_error(400, "MetadataTooLarge");
    app.get("/bk1/meta").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn unknown_storage_class_is_invalid_storage_class() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/sc")
        .header("x-amz-storage-class", "SUPER_FAST")
        .body("x")
        .send()
        .await
        .assert_error(400, "InvalidStorageClass");
    app.req(Method::PUT, "/bk1/sc")
        .header("x-amz-storage-class", "STANDARD_IA")
        .body("x")
        .send()
        .await
        .assert_status(200);
}

#[tokio::test]
async fn anonymous_get_cannot_override_response_headers() {
    let app = app_with_bucket("bk1").await;
    app.req(Method::PUT, "/bk1/pub")
        .header("x-amz-acl", "public-read")
        .body("x")
        .send()
        .await
        .assert_status(200);
    app.req(Method::GET, "/bk1/pub")
        .query("response-content-type=text%2Fhtml")
        .anonymous()
        .send()
        .await
        .assert_error(400, "InvalidRequest");
}

#[tokio::test]
async fn declared_length_over_5_gib_is_entity_too_large_before_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app_with_bucket("bk1").await;
    let p = app
        .req(Method::PUT, "/bk1/huge")
        .unsigned()
        .header("connection", "close")
        .prepare();
    let mut s = app.connect().await;
    s.write_all(&p.head_bytes(6 * 1024 * 1024 * 1024))
        .await
        .unwrap();
    s.write_all(&[0u8; 1024]).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&raw).contains("</Error>") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("no answer before the body was sent")
            .unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("<Code>EntityTooLarge</Code>"), "{text}");
    drop(s);
    app.get("/bk1/huge").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn copy_of_inline_object_survives_overwrite_of_source() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "src", "original").await;
    copy(&app, "/bk1/dst", "/bk1/src", &[])
        .await
        .assert_status(200);
    app.put_object("bk1", "src", "changed").await;
    assert_eq!(app.get("/bk1/dst").await.text(), "original");
}

#[tokio::test]
async fn copy_source_with_encoded_key_is_decoded() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "dir/a b+c.txt", "spaced").await;
    copy(&app, "/bk1/copied", "/bk1/dir/a%20b%2Bc.txt", &[])
        .await
        .assert_status(200);
    assert_eq!(app.get("/bk1/copied").await.text(), "spaced");
}

#[tokio::test]
async fn copy_source_if_match_that_fails_is_precondition_failed() {
    let app = app_with_bucket("bk1").await;
    let etag = app.put_object("bk1", "src", "data").await;
    copy(
        &app,
        "/bk1/dst",
        "/bk1/src",
        &[("x-amz-copy-source-if-match", "\"0123\"")],
    )
    .await
    .assert_error(412, "PreconditionFailed");
    app.get("/bk1/dst").await.assert_error(404, "NoSuchKey");
    copy(
        &app,
        "/bk1/dst",
        "/bk1/src",
        &[("x-amz-copy-source-if-match", &etag)],
    )
    .await
    .assert_status(200);
}

#[tokio::test]
async fn delete_objects_with_wrong_content_md5_is_bad_digest() {
    let app = app_with_bucket("bk1").await;
    app.put_object("bk1", "a", "a").await;
    app.req(Method::POST, "/bk1")
        .query("delete")
        .header("content-md5", &content_md5(b"something else"))
        .body(delete_body(&["a"], false))
        .send()
        .await
        .assert_error(400, "BadDigest");
    assert_eq!(app.get("/bk1/a").await.text(), "a");
}
