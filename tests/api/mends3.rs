//! Review mends: conditioned deletes need read permission; the POST policy cache belongs to
//! one server and sees a grant taken back at once; the text access log keeps tracing's line.

use postgate::db::buckets::Perm;
use reqwest::Method;

use crate::helpers::{Creds, Resp, TestApp, content_md5, obj, spawn_app, xml_blocks, xml_tag};

const B: &str = "mends";

/// An app with the admin's bucket `mends` holding `k` (returns its ETag), and a key granted
/// `perm` on it.
async fn with_grant(perm: Perm) -> (TestApp, Creds, String) {
    let app = spawn_app().await;
    app.create_bucket(B).await;
    let etag = app.put_object(B, "k", "kept").await;
    let key = app.create_key("writer").await;
    app.allow(B, &key.ak, perm).await;
    (app, key, etag)
}

async fn delete_with(app: &TestApp, creds: &Creds, key: &str, header: (&str, &str)) -> Resp {
    app.req(Method::DELETE, &obj(B, key))
        .creds(creds)
        .header(header.0, header.1)
        .send()
        .await
}

/// AWS's conditional-deletes guide: "conditional deletes with a specific ETag value require
/// both s3:DeleteObject and s3:GetObject permissions". A write-only key's conditioned
/// DeleteObject is 403 AccessDenied whatever the object is (right or wrong ETag, missing key),
/// so it learns nothing; the object stays. Its plain delete still works.
#[tokio::test]
async fn conditioned_delete_without_read_is_denied_whatever_the_object() {
    let (app, writer, etag) = with_grant(Perm::Write).await;
    let wrong = "\"0123456789abcdef0123456789abcdef\"";
    let time = app.head(&obj(B, "k")).await;
    let time = time.header("last-modified").unwrap().to_owned();
    let conditions = [
        ("if-match", etag.as_str()),
        ("if-match", wrong),
        ("if-match", "*"),
        ("x-amz-if-match-size", "4"),
        ("x-amz-if-match-size", "5"),
        ("x-amz-if-match-last-modified-time", time.as_str()),
    ];
    for cond in conditions {
        for key in ["k", "missing"] {
            let res = delete_with(&app, &writer, key, cond).await;
            res.assert_error(403, "AccessDenied");
            assert!(!res.text().contains("NoSuchKey"), "{cond:?} {key}");
        }
    }
    assert_eq!(app.get(&obj(B, "k")).await.text(), "kept");
    app.req(Method::DELETE, &obj(B, "k"))
        .creds(&writer)
        .send()
        .await
        .assert_status(204);
    app.head(&obj(B, "k")).await.assert_status(404);
}

/// A key that may read and write keeps its conditioned deletes: 412 on a wrong ETag, 204 on
/// the right one.
#[tokio::test]
async fn conditioned_delete_with_read_and_write_is_checked() {
    let (app, both, etag) = with_grant(Perm::ReadWrite).await;
    let wrong = "\"0123456789abcdef0123456789abcdef\"";
    delete_with(&app, &both, "k", ("if-match", wrong))
        .await
        .assert_error(412, "PreconditionFailed");
    delete_with(&app, &both, "k", ("if-match", &etag))
        .await
        .assert_status(204);
    app.head(&obj(B, "k")).await.assert_status(404);
}

/// DeleteObjects by a write-only key: each entry with `<ETag>`, `<Size>` or
/// `<LastModifiedTime>` is an AccessDenied `<Error>` (an existing object's and a missing
/// one's alike) and stays; the plain entry is deleted.
#[tokio::test]
async fn delete_objects_conditioned_entries_without_read_are_denied() {
    let (app, writer, etag) = with_grant(Perm::Write).await;
    app.put_object(B, "plain", "x").await;
    app.put_object(B, "sized", "four").await;
    let body = format!(
        "<Delete>\
         <Object><Key>k</Key><ETag>{}</ETag></Object>\
         <Object><Key>plain</Key></Object>\
         <Object><Key>missing</Key><ETag>*</ETag></Object>\
         <Object><Key>sized</Key><Size>4</Size></Object>\
         <Object><Key>timed</Key><LastModifiedTime>2020-01-01T00:00:00.000Z</LastModifiedTime></Object>\
         </Delete>",
        etag.replace('"', "&quot;")
    );
    let res = app
        .req(Method::POST, &format!("/{B}"))
        .query("delete")
        .creds(&writer)
        .header("content-md5", &content_md5(body.as_bytes()))
        .body(body)
        .send()
        .await;
    res.assert_status(200);
    let text = res.text();
    let keys = |tag: &str| -> Vec<String> {
        let blocks = xml_blocks(&text, tag);
        blocks.iter().map(|b| xml_tag(b, "Key").unwrap()).collect()
    };
    assert_eq!(keys("Deleted"), ["plain"], "{text}");
    assert_eq!(keys("Error"), ["k", "missing", "sized", "timed"], "{text}");
    let codes: Vec<String> = xml_blocks(&text, "Error")
        .iter()
        .map(|b| xml_tag(b, "Code").unwrap())
        .collect();
    assert!(codes.iter().all(|c| c == "AccessDenied"), "{text}");
    assert_eq!(app.get(&obj(B, "k")).await.text(), "kept");
    assert_eq!(app.get(&obj(B, "sized")).await.text(), "four");
    app.head(&obj(B, "plain")).await.assert_status(404);
}

/// A form presigned by `creds` through the JSON API for `B/key`: (url, fields).
async fn presigned_form(
    app: &TestApp,
    creds: &Creds,
    key: &str,
) -> (String, Vec<(String, String)>) {
    let who = (creds.ak.as_str(), creds.sk.as_str());
    let spec = serde_json::json!({ "bucket": B, "key": key });
    let (res, json) =
        crate::linkkit::api(app, Method::POST, "/-/api/presign/post", who, spec).await;
    res.assert_status(200);
    let fields = json["fields"].as_object().unwrap().iter();
    let fields = fields.map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()));
    (json["url"].as_str().unwrap().to_owned(), fields.collect())
}

fn cached_policies(app: &TestApp) -> usize {
    app.state.post_policies.lock().unwrap().len()
}

/// The decoded-policy cache is one server's: a second server in the same process starts with
/// nothing cached. A cached policy does not outlive what signed it: a grant taken back refuses
/// the same form at once (403, nothing stored), and so does the deleted key on the next server
/// over the same data directory (403 InvalidAccessKeyId).
#[tokio::test]
async fn post_policy_cache_is_per_server_and_sees_revocation() {
    let (app, writer, _) = with_grant(Perm::Write).await;
    let other = spawn_app().await;
    let (url, fields) = presigned_form(&app, &writer, "up").await;
    for _ in 0..2 {
        let res = crate::linkkit::post_form(&app, &url, &fields, &[], "f.txt", b"hello").await;
        assert_eq!(res.status, 204, "{}", res.text());
    }
    assert_eq!(cached_policies(&app), 1);
    assert_eq!(
        cached_policies(&other),
        0,
        "another server shares the cache"
    );
    app.delete(&obj(B, "up")).await.assert_status(204);

    app.allow(B, &writer.ak, Perm::Read).await;
    let res = crate::linkkit::post_form(&app, &url, &fields, &[], "f.txt", b"again").await;
    res.assert_error(403, "AccessDenied");
    app.head(&obj(B, "up")).await.assert_status(404);

    app.allow(B, &writer.ak, Perm::Write).await;
    let ak = writer.ak.clone();
    let deleted = app
        .state
        .db
        .write(move |c| postgate::db::keys::delete(c, &ak));
    assert!(deleted.await.unwrap());
    let app = crate::helpers::spawn_app_in(app.stop().await).await;
    assert_eq!(cached_policies(&app), 0);
    let url = format!("{}/{B}", app.base);
    let res = crate::linkkit::post_form(&app, &url, &fields, &[], "f.txt", b"late").await;
    res.assert_error(403, "InvalidAccessKeyId");
    app.head(&obj(B, "up")).await.assert_status(404);
}

/// The text access log (the default format, stdout not a terminal) is written by postgate
/// itself, as tracing's text line: one line per request, strings quoted and escaped, the key's
/// quote and space included, no query (a presigned URL's signature) in it.
#[tokio::test]
async fn text_access_lines_have_tracings_form() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let host = format!("127.0.0.1:{}", crate::helpers::free_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"));
    crate::helpers::serve_args(&mut cmd, &dir.path().join("data"), &host, "info");
    cmd.env("POSTGATE_LOG_FORMAT", "text")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let (base, http) = (format!("http://{host}"), reqwest::Client::new());
    let within = std::time::Duration::from_secs(20);
    crate::helpers::wait_ready(&http, &base, &mut child, within).await;
    let url = format!("{base}/nobucket/a%20%22q%22?X-Amz-Signature=secret");
    let res = http.get(url).send().await.unwrap();
    let id = res.headers()["x-amz-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let found = crate::helpers::poll_until(within, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains(&id))
    });
    assert!(found.await, "no access line");
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains(&id)).unwrap();
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == 27, "{line}");
    let expected =
        format!(" INFO postgate::access: request request_id=\"{id}\" remote=\"127.0.0.1:");
    assert!(rest.starts_with(&expected), "{line}");
    let fields = " method=\"GET\" operation=\"GetObject\" bucket=\"nobucket\" \
                  key=\"a \\\"q\\\"\" status=400 \
                  error_code=\"AuthorizationQueryParametersError\" bytes_in=0 ";
    assert!(rest.contains(fields), "{line}");
    assert!(rest.ends_with(" access_key=\"\" link=\"\""), "{line}");
    assert!(!line.contains("secret"), "{line}");
}
