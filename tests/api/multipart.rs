//! Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
//! ListMultipartUploads, the expiry sweep, and how they behave under concurrency and restarts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use md5::Digest as _;
use reqwest::Method;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    Creds, Resp, TestApp, blob_files, etag_of, obj, pattern, poll_until, send_partial, spawn_app,
    spawn_app_in, xml_tag, xml_tags,
};

pub(crate) const MIB: usize = 1024 * 1024;
const NO_SUCH_ID: &str = "00000000000000000000000000000000";

/// CreateMultipartUpload with extra headers; asserts 200 and returns the upload id.
pub(crate) async fn create_with(
    app: &TestApp,
    bucket: &str,
    key: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = app.req(Method::POST, &obj(bucket, key)).query("uploads");
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let res = req.send().await;
    res.assert_status(200);
    let text = res.text();
    assert_eq!(xml_tag(&text, "Bucket").as_deref(), Some(bucket), "{text}");
    assert_eq!(xml_tag(&text, "Key").as_deref(), Some(key), "{text}");
    let id = xml_tag(&text, "UploadId").expect("no UploadId");
    assert!(!id.is_empty());
    id
}

async fn create(app: &TestApp, bucket: &str, key: &str) -> String {
    create_with(app, bucket, key, &[]).await
}

pub(crate) async fn upload_part_req(
    app: &TestApp,
    bucket: &str,
    key: &str,
    id: &str,
    number: &str,
    body: &[u8],
) -> Resp {
    app.req(Method::PUT, &obj(bucket, key))
        .query(&format!("partNumber={number}&uploadId={id}"))
        .body(body.to_vec())
        .send()
        .await
}

/// UploadPart; asserts 200 and that the ETag is the part's quoted MD5, and returns it.
pub(crate) async fn upload_part(
    app: &TestApp,
    bucket: &str,
    key: &str,
    id: &str,
    number: u32,
    body: &[u8],
) -> String {
    let res = upload_part_req(app, bucket, key, id, &number.to_string(), body).await;
    res.assert_status(200);
    let etag = res.header("etag").expect("no ETag").to_owned();
    assert_eq!(etag, etag_of(body));
    etag
}

fn complete_xml(parts: &[(u32, &str)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        xml.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            etag.replace('"', "&quot;")
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

pub(crate) async fn complete(
    app: &TestApp,
    bucket: &str,
    key: &str,
    id: &str,
    parts: &[(u32, &str)],
) -> Resp {
    app.req(Method::POST, &obj(bucket, key))
        .query(&format!("uploadId={id}"))
        .body(complete_xml(parts))
        .send()
        .await
}

pub(crate) async fn abort(app: &TestApp, bucket: &str, key: &str, id: &str) -> Resp {
    app.req(Method::DELETE, &obj(bucket, key))
        .query(&format!("uploadId={id}"))
        .send()
        .await
}

pub(crate) async fn list_parts(app: &TestApp, bucket: &str, key: &str, id: &str) -> Resp {
    app.req(Method::GET, &obj(bucket, key))
        .query(&format!("uploadId={id}"))
        .send()
        .await
}

/// ListMultipartUploads; asserts 200 and returns the `(Key, UploadId)` pairs.
pub(crate) async fn list_uploads(
    app: &TestApp,
    bucket: &str,
    query: &str,
) -> Vec<(String, String)> {
    let q = if query.is_empty() {
        "uploads".to_owned()
    } else {
        format!("uploads&{query}")
    };
    let res = app
        .req(Method::GET, &format!("/{bucket}"))
        .query(&q)
        .send()
        .await;
    res.assert_status(200);
    let text = res.text();
    let keys = xml_tags(&text, "Key");
    // `xml_tags` matches `<Key>`/`<UploadId>` only, not the `*Marker` elements.
    let ids = xml_tags(&text, "UploadId");
    assert_eq!(keys.len(), ids.len(), "{text}");
    keys.into_iter().zip(ids).collect()
}

/// S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, then `-N`.
pub(crate) fn multipart_etag(parts: &[&[u8]]) -> String {
    let mut h = md5::Md5::new();
    for p in parts {
        h.update(md5::Md5::digest(p));
    }
    format!("\"{}-{}\"", hex::encode(h.finalize()), parts.len())
}

/// Racing Completes of one upload both answered 200 with the ETag of the object `parts` make,
/// and `reader` serves `path` as their bytes.
pub(crate) async fn assert_both_completed(
    answers: [&Resp; 2],
    reader: &TestApp,
    path: &str,
    parts: &[&[u8]],
) {
    let etag = multipart_etag(parts);
    for res in answers {
        res.assert_status(200);
        assert_eq!(
            xml_tag(&res.text(), "ETag").map(|e| crate::helpers::unescape(&e)),
            Some(etag.clone())
        );
    }
    let got = reader.get(path).await;
    got.assert_status(200);
    assert!(got.body == parts.concat());
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Reads one HTTP/1.1 response with a Content-Length body from a raw stream. Returns the
/// status, the head, and the body read (shorter than declared if the server cut it off).
async fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        }
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, head, buf[end + 4..end + 4 + len].to_vec());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap_or(0);
        if n == 0 {
            let end = head_end.expect("connection closed before the response head");
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            return (status, head, buf[end + 4..].to_vec());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn three_part_upload_lists_parts_completes_and_reads_back_byte_exact_with_headers() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create_with(
        &app,
        "mpu",
        "big/file.bin",
        &[
            ("content-type", "application/x-test"),
            ("x-amz-meta-color", "blue"),
            ("x-amz-meta-owner-name", "Ada"),
        ],
    )
    .await;
    let p1 = pattern(5 * MIB, 1);
    let p2 = pattern(5 * MIB, 2);
    let p3 = pattern(123_457, 3);
    let e1 = upload_part(&app, "mpu", "big/file.bin", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "big/file.bin", &id, 2, &p2).await;
    let e3 = upload_part(&app, "mpu", "big/file.bin", &id, 3, &p3).await;

    let res = list_parts(&app, "mpu", "big/file.bin", &id).await;
    res.assert_status(200);
    let text = res.text();
    assert_eq!(xml_tag(&text, "UploadId").as_deref(), Some(id.as_str()));
    assert_eq!(xml_tag(&text, "IsTruncated").as_deref(), Some("false"));
    assert_eq!(xml_tags(&text, "PartNumber"), ["1", "2", "3"], "{text}");
    assert_eq!(
        xml_tags(&text, "ETag"),
        [e1.clone(), e2.clone(), e3.clone()],
        "{text}"
    );
    let sizes = [p1.len(), p2.len(), p3.len()].map(|n| n.to_string());
    assert_eq!(xml_tags(&text, "Size"), sizes, "{text}");

    let res = complete(
        &app,
        "mpu",
        "big/file.bin",
        &id,
        &[(1, &e1), (2, &e2), (3, &e3)],
    )
    .await;
    res.assert_status(200);
    let want_etag = multipart_etag(&[&p1, &p2, &p3]);
    let text = res.text();
    assert_eq!(xml_tag(&text, "ETag").as_deref(), Some(want_etag.as_str()));
    assert_eq!(xml_tag(&text, "Bucket").as_deref(), Some("mpu"));
    assert_eq!(xml_tag(&text, "Key").as_deref(), Some("big/file.bin"));
    assert!(xml_tag(&text, "Location").is_some(), "{text}");

    let got = app.get("/mpu/big/file.bin").await;
    got.assert_status(200);
    let whole = concat(&[&p1, &p2, &p3]);
    assert_eq!(got.body.len(), whole.len());
    assert!(got.body[..] == whole[..], "bytes differ");
    assert_eq!(got.header("etag"), Some(want_etag.as_str()));
    assert_eq!(got.header("content-type"), Some("application/x-test"));
    assert_eq!(got.header("x-amz-meta-color"), Some("blue"));
    assert_eq!(got.header("x-amz-meta-owner-name"), Some("Ada"));
    let len = whole.len().to_string();
    assert_eq!(got.header("content-length"), Some(len.as_str()));

    let head = app.head("/mpu/big/file.bin").await;
    head.assert_status(200);
    assert_eq!(head.header("etag"), Some(want_etag.as_str()));
    assert_eq!(head.header("content-length"), Some(len.as_str()));

    // The upload is gone once completed.
    list_parts(&app, "mpu", "big/file.bin", &id)
        .await
        .assert_error(404, "NoSuchUpload");
    assert!(list_uploads(&app, "mpu", "").await.is_empty());
}

#[tokio::test]
async fn range_get_across_a_part_boundary_returns_the_exact_bytes() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "r").await;
    let p1 = pattern(5 * MIB, 11);
    let p2 = pattern(300_000, 12);
    let e1 = upload_part(&app, "mpu", "r", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "r", &id, 2, &p2).await;
    complete(&app, "mpu", "r", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    let whole = concat(&[&p1, &p2]);
    let total = whole.len();

    let (a, b) = (5 * MIB - 1000, 5 * MIB + 999);
    let got = app
        .req(Method::GET, "/mpu/r")
        .header("range", &format!("bytes={a}-{b}"))
        .send()
        .await;
    got.assert_status(206);
    let want_range = format!("bytes {a}-{b}/{total}");
    assert_eq!(got.header("content-range"), Some(want_range.as_str()));
    assert_eq!(got.body.len(), 2000);
    assert!(got.body[..] == whole[a..=b]);

    // A range wholly inside the second part, and a suffix range.
    let got = app
        .req(Method::GET, "/mpu/r")
        .header("range", &format!("bytes={}-{}", 5 * MIB + 10, 5 * MIB + 19))
        .send()
        .await;
    got.assert_status(206);
    assert!(got.body[..] == whole[5 * MIB + 10..5 * MIB + 20]);
    let got = app
        .req(Method::GET, "/mpu/r")
        .header("range", "bytes=-400000")
        .send()
        .await;
    got.assert_status(206);
    assert!(got.body[..] == whole[total - 400_000..]);
}

#[tokio::test]
async fn reuploading_a_part_number_replaces_it_and_complete_uses_the_new_bytes() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "re").await;
    let old = pattern(200_000, 21);
    let new = pattern(150_000, 22);
    let e_old = upload_part(&app, "mpu", "re", &id, 1, &old).await;
    assert_eq!(blob_files(app.data_dir()).len(), 1);
    let e_new = upload_part(&app, "mpu", "re", &id, 1, &new).await;
    assert_ne!(e_old, e_new);
    // The replaced part's blob is removed.
    assert_eq!(blob_files(app.data_dir()).len(), 1);

    let text = list_parts(&app, "mpu", "re", &id).await.text();
    assert_eq!(xml_tags(&text, "PartNumber"), ["1"], "{text}");
    assert_eq!(xml_tags(&text, "ETag"), [e_new.as_str()], "{text}");
    assert_eq!(xml_tags(&text, "Size"), ["150000"], "{text}");

    // The old ETag no longer names a part.
    complete(&app, "mpu", "re", &id, &[(1, &e_old)])
        .await
        .assert_error(400, "InvalidPart");
    let res = complete(&app, "mpu", "re", &id, &[(1, &e_new)]).await;
    res.assert_status(200);
    let got = app.get("/mpu/re").await;
    got.assert_status(200);
    assert!(got.body[..] == new[..]);
    let want = multipart_etag(&[&new]);
    assert_eq!(got.header("etag"), Some(want.as_str()));
}

#[tokio::test]
async fn part_numbers_outside_1_to_10000_are_invalid_argument() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "k").await;
    for bad in ["0", "10001", "-1", "abc"] {
        let res = upload_part_req(&app, "mpu", "k", &id, bad, b"data").await;
        res.assert_error(400, "InvalidArgument");
        assert!(
            res.text()
                .contains("Part number must be an integer between 1 and 10000, inclusive"),
            "{bad}: {}",
            res.text()
        );
    }
    // The bounds themselves are fine.
    upload_part(&app, "mpu", "k", &id, 1, b"first").await;
    upload_part(&app, "mpu", "k", &id, 10_000, b"last").await;
    let text = list_parts(&app, "mpu", "k", &id).await.text();
    assert_eq!(xml_tags(&text, "PartNumber"), ["1", "10000"], "{text}");
    assert!(blob_files(app.data_dir()).len() == 2);
}

#[tokio::test]
async fn a_small_part_that_is_not_last_fails_complete_with_entity_too_small() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "small").await;
    let p1 = pattern(5 * MIB - 1, 31);
    let p2 = pattern(1000, 32);
    let e1 = upload_part(&app, "mpu", "small", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "small", &id, 2, &p2).await;
    let res = complete(&app, "mpu", "small", &id, &[(1, &e1), (2, &e2)]).await;
    res.assert_error(400, "EntityTooSmall");
    let text = res.text();
    assert_eq!(
        xml_tag(&text, "ProposedSize").as_deref(),
        Some((5 * MIB - 1).to_string().as_str()),
        "{text}"
    );
    assert_eq!(
        xml_tag(&text, "MinSizeAllowed").as_deref(),
        Some("5242880"),
        "{text}"
    );
    assert_eq!(xml_tag(&text, "PartNumber").as_deref(), Some("1"), "{text}");
    assert!(xml_tag(&text, "ETag").is_some(), "{text}");

    // The upload survives a failed Complete, and nothing became visible.
    list_parts(&app, "mpu", "small", &id)
        .await
        .assert_status(200);
    app.get("/mpu/small").await.assert_error(404, "NoSuchKey");
    // A small part is fine when it is the last (here: the only) one.
    let res = complete(&app, "mpu", "small", &id, &[(2, &e2)]).await;
    res.assert_status(200);
    let got = app.get("/mpu/small").await;
    assert!(got.body[..] == p2[..]);
    // The part not named in the list is removed with the upload.
    assert_eq!(blob_files(app.data_dir()).len(), 1);
}

#[tokio::test]
async fn complete_with_a_wrong_etag_or_missing_part_is_invalid_part() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "k").await;
    let p1 = pattern(1000, 41);
    let e1 = upload_part(&app, "mpu", "k", &id, 1, &p1).await;
    let wrong = etag_of(b"something else");
    let res = complete(&app, "mpu", "k", &id, &[(1, &wrong)]).await;
    res.assert_error(400, "InvalidPart");
    assert!(
        res.text()
            .contains("One or more of the specified parts could not be found."),
        "{}",
        res.text()
    );
    // A part number that was never uploaded.
    complete(&app, "mpu", "k", &id, &[(2, &e1)])
        .await
        .assert_error(400, "InvalidPart");
    app.get("/mpu/k").await.assert_error(404, "NoSuchKey");
    // ETags are accepted with or without quotes.
    let unquoted = e1.trim_matches('"').to_owned();
    complete(&app, "mpu", "k", &id, &[(1, &unquoted)])
        .await
        .assert_status(200);
    assert!(app.get("/mpu/k").await.body[..] == p1[..]);
}

#[tokio::test]
async fn parts_out_of_order_in_complete_are_invalid_part_order() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "k").await;
    let p1 = pattern(5 * MIB, 51);
    let p2 = pattern(1000, 52);
    let e1 = upload_part(&app, "mpu", "k", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "k", &id, 2, &p2).await;
    let res = complete(&app, "mpu", "k", &id, &[(2, &e2), (1, &e1)]).await;
    res.assert_error(400, "InvalidPartOrder");
    assert!(
        res.text()
            .contains("The list of parts was not in ascending order."),
        "{}",
        res.text()
    );
    app.get("/mpu/k").await.assert_error(404, "NoSuchKey");
    // The upload is still there and completes in order.
    complete(&app, "mpu", "k", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    assert!(app.get("/mpu/k").await.body[..] == concat(&[&p1, &p2])[..]);
}

#[tokio::test]
async fn unknown_upload_id_is_no_such_upload_for_every_call() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    // A real upload on another key: its id is unknown for this key.
    let other = create(&app, "mpu", "other").await;
    for id in [NO_SUCH_ID, other.as_str()] {
        let check = |res: Resp| {
            res.assert_error(404, "NoSuchUpload");
            assert!(
                res.text().contains("The specified upload does not exist."),
                "{}",
                res.text()
            );
            assert_eq!(xml_tag(&res.text(), "UploadId").as_deref(), Some(id));
        };
        check(upload_part_req(&app, "mpu", "k", id, "1", b"data").await);
        check(complete(&app, "mpu", "k", id, &[(1, &etag_of(b"data"))]).await);
        check(list_parts(&app, "mpu", "k", id).await);
        check(abort(&app, "mpu", "k", id).await);
    }
    // Nothing was stored for the failed part upload.
    assert!(blob_files(app.data_dir()).is_empty());
    assert!(app.tmp_files().is_empty());
}

#[tokio::test]
async fn abort_removes_part_blobs_and_the_upload_from_listings() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "gone").await;
    let keep = create(&app, "mpu", "kept").await;
    upload_part(&app, "mpu", "gone", &id, 1, &pattern(5 * MIB, 61)).await;
    upload_part(&app, "mpu", "gone", &id, 2, &pattern(70_000, 62)).await;
    upload_part(&app, "mpu", "kept", &keep, 1, &pattern(1000, 63)).await;
    assert_eq!(blob_files(app.data_dir()).len(), 3);
    let listed = list_uploads(&app, "mpu", "").await;
    assert_eq!(
        listed,
        [
            ("gone".to_owned(), id.clone()),
            ("kept".to_owned(), keep.clone())
        ]
    );

    let res = abort(&app, "mpu", "gone", &id).await;
    res.assert_status(204);
    assert!(res.body.is_empty());
    assert_eq!(blob_files(app.data_dir()).len(), 1, "part blobs left");
    assert_eq!(
        list_uploads(&app, "mpu", "").await,
        [("kept".to_owned(), keep.clone())]
    );
    list_parts(&app, "mpu", "gone", &id)
        .await
        .assert_error(404, "NoSuchUpload");
    upload_part_req(&app, "mpu", "gone", &id, "3", b"late")
        .await
        .assert_error(404, "NoSuchUpload");
    complete(&app, "mpu", "gone", &id, &[(1, &etag_of(b"x"))])
        .await
        .assert_error(404, "NoSuchUpload");
    abort(&app, "mpu", "gone", &id)
        .await
        .assert_error(404, "NoSuchUpload");
    app.get("/mpu/gone").await.assert_error(404, "NoSuchKey");
    assert_eq!(blob_files(app.data_dir()).len(), 1);
}

#[tokio::test]
async fn the_object_is_invisible_until_complete() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "later").await;
    app.get("/mpu/later").await.assert_error(404, "NoSuchKey");
    let p1 = pattern(5 * MIB, 71);
    let p2 = pattern(10, 72);
    let e1 = upload_part(&app, "mpu", "later", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "later", &id, 2, &p2).await;
    app.get("/mpu/later").await.assert_error(404, "NoSuchKey");
    assert_eq!(app.head("/mpu/later").await.status, 404);
    let listing = app
        .req(Method::GET, "/mpu")
        .query("list-type=2")
        .send()
        .await
        .text();
    assert_eq!(
        xml_tag(&listing, "KeyCount").as_deref(),
        Some("0"),
        "{listing}"
    );

    complete(&app, "mpu", "later", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    let got = app.get("/mpu/later").await;
    got.assert_status(200);
    assert!(got.body[..] == concat(&[&p1, &p2])[..]);
    let listing = app
        .req(Method::GET, "/mpu")
        .query("list-type=2")
        .send()
        .await
        .text();
    assert_eq!(xml_tags(&listing, "Key"), ["later"], "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn complete_replaces_an_existing_object_atomically_and_removes_its_blob() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let old = pattern(300_000, 81);
    let old_etag = app.put_object("mpu", "k", old.clone()).await;
    let old_blobs = blob_files(app.data_dir());
    assert_eq!(old_blobs.len(), 1);

    let id = create(&app, "mpu", "k").await;
    let p1 = pattern(5 * MIB, 82);
    let p2 = pattern(4321, 83);
    let e1 = upload_part(&app, "mpu", "k", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "k", &id, 2, &p2).await;
    let new = concat(&[&p1, &p2]);
    let new_etag = multipart_etag(&[&p1, &p2]);

    // Before Complete: the old version, whole.
    let got = app.get("/mpu/k").await;
    assert!(got.body[..] == old[..]);
    assert_eq!(got.header("etag"), Some(old_etag.as_str()));

    // Readers during Complete see the old version or the new one, whole, old then new.
    let done = AtomicBool::new(false);
    let completer = async {
        let res = complete(&app, "mpu", "k", &id, &[(1, &e1), (2, &e2)]).await;
        done.store(true, Ordering::SeqCst);
        res
    };
    let reader = async {
        let mut seen = Vec::new();
        while !done.load(Ordering::SeqCst) {
            let got = app.get("/mpu/k").await;
            got.assert_status(200);
            let etag = got.header("etag").unwrap().to_owned();
            if got.body[..] == old[..] {
                assert_eq!(etag, old_etag);
                seen.push(0);
            } else if got.body[..] == new[..] {
                assert_eq!(etag, new_etag);
                seen.push(1);
            } else {
                panic!("torn read: {} bytes, ETag {etag}", got.body.len());
            }
        }
        seen
    };
    let (res, seen) = tokio::join!(completer, reader);
    res.assert_status(200);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "went back: {seen:?}");

    let got = app.get("/mpu/k").await;
    got.assert_status(200);
    assert!(got.body[..] == new[..]);
    assert_eq!(got.header("etag"), Some(new_etag.as_str()));
    let blobs = blob_files(app.data_dir());
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert!(!old_blobs[0].exists(), "old blob not removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn complete_racing_put_object_leaves_exactly_one_whole_version() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let mut outcomes = [0usize; 2];
    for round in 0..8u64 {
        let id = create(&app, "mpu", "race").await;
        let part = pattern(100_000 + round as usize, 90 + 2 * round);
        let put = pattern(120_000 + round as usize, 91 + 2 * round);
        let e = upload_part(&app, "mpu", "race", &id, 1, &part).await;
        let mpu_etag = multipart_etag(&[&part]);
        let put_etag = etag_of(&put);

        let parts = [(1, e.as_str())];
        let path = obj("mpu", "race");
        // Stagger one side's start, one way then the other, so that both orders happen and
        // some rounds overlap closely (each request takes a few fsyncs).
        let stagger = Duration::from_millis([0, 5, 20, 40][(round / 2) as usize % 4]);
        let (c_delay, p_delay) = if round % 2 == 0 {
            (Duration::ZERO, stagger)
        } else {
            (stagger, Duration::ZERO)
        };
        let (c, p) = tokio::join!(
            async {
                tokio::time::sleep(c_delay).await;
                complete(&app, "mpu", "race", &id, &parts).await
            },
            async {
                tokio::time::sleep(p_delay).await;
                app.put(&path, put.clone()).await
            }
        );
        c.assert_status(200);
        p.assert_status(200);
        assert_eq!(
            xml_tag(&c.text(), "ETag").as_deref(),
            Some(mpu_etag.as_str())
        );
        assert_eq!(p.header("etag"), Some(put_etag.as_str()));

        let got = app.get("/mpu/race").await;
        got.assert_status(200);
        let etag = got.header("etag").unwrap().to_owned();
        if got.body[..] == part[..] {
            assert_eq!(etag, mpu_etag, "round {round}");
            outcomes[0] += 1;
        } else if got.body[..] == put[..] {
            assert_eq!(etag, put_etag, "round {round}");
            outcomes[1] += 1;
        } else {
            panic!("round {round}: torn object of {} bytes", got.body.len());
        }
        let head = app.head("/mpu/race").await;
        assert_eq!(head.header("etag"), Some(etag.as_str()));
        // Exactly the winner's blob remains.
        let blobs = blob_files(app.data_dir());
        assert_eq!(blobs.len(), 1, "round {round}: {blobs:?}");
        assert!(app.tmp_files().is_empty());
    }
    eprintln!("multipart won {} rounds, put {}", outcomes[0], outcomes[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_while_a_part_is_streaming_fails_the_part_with_no_such_upload_and_leaves_no_blob() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "k").await;
    let body = pattern(5 * MIB, 101);
    let p = app
        .req(Method::PUT, "/mpu/k")
        .query(&format!("partNumber=1&uploadId={id}"))
        .unsigned()
        .body(body.clone())
        .prepare();
    let mut s = app.connect().await;
    send_partial(&mut s, &p, body.len(), body.len() / 2).await;
    assert!(
        poll_until(Duration::from_secs(10), || !app.tmp_files().is_empty()).await,
        "part upload never reached data/tmp"
    );

    abort(&app, "mpu", "k", &id).await.assert_status(204);
    assert!(list_uploads(&app, "mpu", "").await.is_empty());

    s.write_all(&p.body[body.len() / 2..]).await.unwrap();
    s.flush().await.unwrap();
    let (status, head, resp_body) = read_response(&mut s).await;
    let text = String::from_utf8_lossy(&resp_body).into_owned();
    assert_eq!(status, 404, "{head}\n{text}");
    assert_eq!(
        xml_tag(&text, "Code").as_deref(),
        Some("NoSuchUpload"),
        "{text}"
    );

    assert!(blob_files(app.data_dir()).is_empty(), "part blob left");
    assert!(
        poll_until(Duration::from_secs(5), || app.tmp_files().is_empty()).await,
        "temp file left: {:?}",
        app.tmp_files()
    );
    list_parts(&app, "mpu", "k", &id)
        .await
        .assert_error(404, "NoSuchUpload");
    app.get("/mpu/k").await.assert_error(404, "NoSuchKey");
}

#[tokio::test]
async fn parts_survive_a_server_restart_between_parts() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create_with(&app, "mpu", "k", &[("content-type", "text/x-restart")]).await;
    let p1 = pattern(5 * MIB, 111);
    let p2 = pattern(77_777, 112);
    let e1 = upload_part(&app, "mpu", "k", &id, 1, &p1).await;
    let dir = app.stop().await;

    let app = spawn_app_in(dir).await;
    let text = list_parts(&app, "mpu", "k", &id).await.text();
    assert_eq!(xml_tags(&text, "PartNumber"), ["1"], "{text}");
    assert_eq!(xml_tags(&text, "ETag"), [e1.as_str()], "{text}");
    assert_eq!(
        list_uploads(&app, "mpu", "").await,
        [("k".to_owned(), id.clone())]
    );
    let e2 = upload_part(&app, "mpu", "k", &id, 2, &p2).await;
    complete(&app, "mpu", "k", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    let got = app.get("/mpu/k").await;
    got.assert_status(200);
    assert!(got.body[..] == concat(&[&p1, &p2])[..], "bytes differ");
    let want = multipart_etag(&[&p1, &p2]);
    assert_eq!(got.header("etag"), Some(want.as_str()));
    assert_eq!(got.header("content-type"), Some("text/x-restart"));

    // And the completed object survives a restart too.
    let dir = app.stop().await;
    let app = spawn_app_in(dir).await;
    let got = app.get("/mpu/k").await;
    assert!(got.body[..] == concat(&[&p1, &p2])[..]);
    assert_eq!(blob_files(app.data_dir()).len(), 2);
}

#[tokio::test]
async fn upload_part_copy_copies_a_source_range_from_existing_objects() {
    let app = spawn_app().await;
    app.create_bucket("src").await;
    app.create_bucket("mpu").await;
    let big = pattern(6 * MIB, 121);
    let small = pattern(1000, 122);
    app.put_object("src", "big", big.clone()).await;
    app.put_object("src", "small", small.clone()).await;
    let id = create(&app, "mpu", "copied").await;

    let copy_part = |n: u32, source: &'static str, range: Option<String>| {
        let mut req = app
            .req(Method::PUT, "/mpu/copied")
            .query(&format!("partNumber={n}&uploadId={id}"))
            .header("x-amz-copy-source", source);
        if let Some(r) = range {
            req = req.header("x-amz-copy-source-range", &r);
        }
        req.send()
    };

    let (a, b) = (100, 100 + 5 * MIB - 1);
    let res = copy_part(1, "/src/big", Some(format!("bytes={a}-{b}"))).await;
    res.assert_status(200);
    let want1 = &big[a..=b];
    let e1 = xml_tag(&res.text(), "ETag").expect("no ETag");
    assert_eq!(e1, etag_of(want1));
    assert!(xml_tag(&res.text(), "LastModified").is_some());

    // Without a range the whole source is copied.
    let res = copy_part(2, "src/big", None).await;
    res.assert_status(200);
    let e2 = xml_tag(&res.text(), "ETag").expect("no ETag");
    assert_eq!(e2, etag_of(&big));

    // A range of a small (inline-stored) source, as the last part.
    let res = copy_part(3, "/src/small", Some("bytes=10-209".to_owned())).await;
    res.assert_status(200);
    let want3 = &small[10..210];
    let e3 = xml_tag(&res.text(), "ETag").expect("no ETag");
    assert_eq!(e3, etag_of(want3));

    let text = list_parts(&app, "mpu", "copied", &id).await.text();
    let sizes = [want1.len(), big.len(), want3.len()].map(|n| n.to_string());
    assert_eq!(xml_tags(&text, "Size"), sizes, "{text}");

    complete(&app, "mpu", "copied", &id, &[(1, &e1), (2, &e2), (3, &e3)])
        .await
        .assert_status(200);
    let got = app.get("/mpu/copied").await;
    got.assert_status(200);
    let whole = concat(&[want1, &big, want3]);
    assert!(got.body[..] == whole[..], "bytes differ");
    let want_etag = multipart_etag(&[want1, &big, want3]);
    assert_eq!(got.header("etag"), Some(want_etag.as_str()));
    // The sources are untouched.
    assert!(app.get("/src/big").await.body[..] == big[..]);
}

#[tokio::test]
async fn presigned_upload_part_url_with_part_number_and_upload_id_works() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "pre/signed").await;
    let p1 = pattern(5 * MIB, 131);
    let p2 = pattern(2000, 132);
    let mut etags = Vec::new();
    for (n, body) in [(1u32, &p1), (2, &p2)] {
        let url = app.presign_v4(
            &Creds::admin(),
            Method::PUT,
            &obj("mpu", "pre/signed"),
            &format!("partNumber={n}&uploadId={id}"),
            3600,
            OffsetDateTime::now_utc(),
        );
        let res = app.send_url(Method::PUT, &url, body.clone()).await;
        res.assert_status(200);
        let etag = res.header("etag").expect("no ETag").to_owned();
        assert_eq!(etag, etag_of(body));
        etags.push(etag);
    }
    // A URL signed for another part number does not authorize this one.
    let url = app.presign_v4(
        &Creds::admin(),
        Method::PUT,
        &obj("mpu", "pre/signed"),
        &format!("partNumber=3&uploadId={id}"),
        3600,
        OffsetDateTime::now_utc(),
    );
    let tampered = url.replace("partNumber=3", "partNumber=4");
    app.send_url(Method::PUT, &tampered, b"x".to_vec())
        .await
        .assert_error(403, "SignatureDoesNotMatch");

    complete(
        &app,
        "mpu",
        "pre/signed",
        &id,
        &[(1, &etags[0]), (2, &etags[1])],
    )
    .await
    .assert_status(200);
    let got = app.get("/mpu/pre/signed").await;
    assert!(got.body[..] == concat(&[&p1, &p2])[..]);
}

#[tokio::test]
async fn expiry_sweep_aborts_old_uploads_and_removes_their_parts() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let a = create(&app, "mpu", "a").await;
    let b = create(&app, "mpu", "b").await;
    upload_part(&app, "mpu", "a", &a, 1, &pattern(100_000, 141)).await;
    upload_part(&app, "mpu", "a", &a, 2, &pattern(1000, 142)).await;
    upload_part(&app, "mpu", "b", &b, 1, &pattern(5000, 143)).await;
    assert_eq!(blob_files(app.data_dir()).len(), 3);

    // A cutoff before the uploads began touches nothing.
    let n = postgate::objects::multipart::expire(
        &app.state.db,
        &app.state.uploads,
        &app.state.store,
        0,
    )
    .await
    .unwrap();
    assert_eq!(n, 0);
    assert_eq!(blob_files(app.data_dir()).len(), 3);
    assert_eq!(list_uploads(&app, "mpu", "").await.len(), 2);

    let far_future = (OffsetDateTime::now_utc().unix_timestamp() + 365 * 86_400) * 1000;
    let n = postgate::objects::multipart::expire(
        &app.state.db,
        &app.state.uploads,
        &app.state.store,
        far_future,
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    assert!(blob_files(app.data_dir()).is_empty(), "part blobs left");
    assert!(list_uploads(&app, "mpu", "").await.is_empty());
    for (key, id) in [("a", &a), ("b", &b)] {
        list_parts(&app, "mpu", key, id)
            .await
            .assert_error(404, "NoSuchUpload");
        upload_part_req(&app, "mpu", key, id, "3", b"late")
            .await
            .assert_error(404, "NoSuchUpload");
    }
    assert!(blob_files(app.data_dir()).is_empty());
}

#[tokio::test]
async fn list_multipart_uploads_filters_by_prefix() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    app.create_bucket("other").await;
    let a1 = create(&app, "mpu", "photos/a.jpg").await;
    let a2 = create(&app, "mpu", "photos/b.jpg").await;
    let a3 = create(&app, "mpu", "photos/a.jpg").await;
    let d = create(&app, "mpu", "docs/x.pdf").await;
    let _elsewhere = create(&app, "other", "photos/c.jpg").await;

    let all = list_uploads(&app, "mpu", "").await;
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["docs/x.pdf", "photos/a.jpg", "photos/a.jpg", "photos/b.jpg"]
    );
    assert_eq!(all[0].1, d);

    let photos = list_uploads(&app, "mpu", "prefix=photos%2F").await;
    let keys: Vec<&str> = photos.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["photos/a.jpg", "photos/a.jpg", "photos/b.jpg"]);
    let mut ids: Vec<&str> = photos[..2].iter().map(|(_, i)| i.as_str()).collect();
    ids.sort();
    let mut want = [a1.as_str(), a3.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(photos[2].1, a2);

    let res = app
        .req(Method::GET, "/mpu")
        .query("uploads&prefix=photos%2Fa")
        .send()
        .await;
    res.assert_status(200);
    let text = res.text();
    assert_eq!(xml_tag(&text, "Prefix").as_deref(), Some("photos/a"));
    assert_eq!(xml_tags(&text, "Key"), ["photos/a.jpg", "photos/a.jpg"]);

    assert!(list_uploads(&app, "mpu", "prefix=nothing").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_streaming_a_multipart_object_survives_the_object_being_replaced() {
    let app = spawn_app().await;
    app.create_bucket("mpu").await;
    let id = create(&app, "mpu", "k").await;
    let p1 = pattern(8 * MIB, 151);
    let p2 = pattern(MIB, 152);
    let e1 = upload_part(&app, "mpu", "k", &id, 1, &p1).await;
    let e2 = upload_part(&app, "mpu", "k", &id, 2, &p2).await;
    complete(&app, "mpu", "k", &id, &[(1, &e1), (2, &e2)])
        .await
        .assert_status(200);
    let old = concat(&[&p1, &p2]);

    // A reader with a small receive window: the server is still in the first part when the
    // object is replaced.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut s = sock.connect(app.host.parse().unwrap()).await.unwrap();
    let p = app.req(Method::GET, "/mpu/k").prepare();
    s.write_all(&p.head_bytes(0)).await.unwrap();
    let mut first = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 0);
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.put_object("mpu", "k", pattern(200_000, 153)).await;

    // The rest of the response: the old version, whole.
    let mut raw = first[..n].to_vec();
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed in the head");
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < old.len() {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        body.len(),
        old.len(),
        "response cut off after {} of {} bytes",
        body.len(),
        old.len()
    );
    assert!(body[..] == old[..], "bytes differ");
}
