//! Object expiry: S3's bucket lifecycle API (Put/Get/DeleteBucketLifecycleConfiguration), the
//! sweeper that removes expired objects (as DeleteObject does: row and blobs) and aborts stale
//! multipart uploads in bounded batches, and links whose files expire.

use std::time::Duration;

use reqwest::Method;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::*;
use crate::linkkit::{api, link_form, make_link, post_form};

const RULES: &str = r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status>
    <Expiration><Days>1</Days></Expiration></Rule>
  <Rule><ID>uploads</ID><Prefix></Prefix><Status>Enabled</Status>
    <AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
  <Rule><ID>off</ID><Filter><Prefix>keep/</Prefix></Filter><Status>Disabled</Status>
    <Expiration><Days>1</Days></Expiration></Rule>
</LifecycleConfiguration>"#;

async fn put_rules(app: &TestApp, bucket: &str, xml: &str) -> Resp {
    app.req(Method::PUT, &format!("/{bucket}"))
        .query("lifecycle")
        .header("content-md5", &content_md5(xml.as_bytes()))
        .body(xml.to_owned())
        .send()
        .await
}

/// One sweep with a "day" of `day` (the hidden `--lifecycle-debug-day-secs`).
async fn sweep(app: &TestApp, day: Duration) -> postgate::objects::lifecycle::Swept {
    postgate::objects::lifecycle::sweep(
        &app.state.db,
        &app.state.uploads,
        &app.state.store,
        Some(day),
        &app.state.lifecycle_origin(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn lifecycle_configuration_round_trips_and_can_be_deleted() {
    let app = spawn_app().await;
    app.create_bucket("lcrt").await;
    app.req(Method::GET, "/lcrt")
        .query("lifecycle")
        .send()
        .await
        .assert_error(404, "NoSuchLifecycleConfiguration");
    put_rules(&app, "lcrt", RULES).await.assert_status(200);
    let got = app
        .req(Method::GET, "/lcrt")
        .query("lifecycle")
        .send()
        .await;
    got.assert_status(200);
    let text = got.text();
    assert_eq!(xml_tags(&text, "ID"), ["tmp", "uploads", "off"]);
    assert_eq!(
        xml_tags(&text, "Status"),
        ["Enabled", "Enabled", "Disabled"]
    );
    assert_eq!(xml_tags(&text, "Days"), ["1", "1"]);
    assert_eq!(xml_tags(&text, "DaysAfterInitiation"), ["2"]);
    assert!(
        text.contains("<Filter><Prefix>tmp/</Prefix></Filter>"),
        "{text}"
    );
    app.req(Method::DELETE, "/lcrt")
        .query("lifecycle")
        .send()
        .await
        .assert_status(204);
    app.req(Method::GET, "/lcrt")
        .query("lifecycle")
        .send()
        .await
        .assert_error(404, "NoSuchLifecycleConfiguration");
    // Bucket configuration: the owner's (or the admin's) only.
    let writer = app.create_key("writer").await;
    app.allow("lcrt", &writer.ak, postgate::db::buckets::Perm::ReadWrite)
        .await;
    app.req(Method::PUT, "/lcrt")
        .query("lifecycle")
        .creds(&writer)
        .body(RULES)
        .send()
        .await
        .assert_error(403, "AccessDenied");
}

#[tokio::test]
async fn what_postgate_cannot_apply_is_refused_not_stored() {
    let app = spawn_app().await;
    app.create_bucket("lcbad").await;
    let rule = |inner: &str| {
        format!(
            "<LifecycleConfiguration><Rule><Status>Enabled</Status>{inner}</Rule></LifecycleConfiguration>"
        )
    };
    for (inner, status, code) in [
        (
            "<Filter><Tag><Key>a</Key><Value>b</Value></Tag></Filter><Expiration><Days>1</Days></Expiration>",
            501,
            "NotImplemented",
        ),
        (
            "<Filter/><Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition>",
            501,
            "NotImplemented",
        ),
        (
            "<Filter/><Expiration><Days>0</Days></Expiration>",
            400,
            "InvalidArgument",
        ),
        ("<Filter/>", 400, "InvalidRequest"),
        ("<Filter/><Expiration><Days>x</Days>", 400, "MalformedXML"),
    ] {
        put_rules(&app, "lcbad", &rule(inner))
            .await
            .assert_error(status, code);
    }
    let res = app
        .req(Method::PUT, "/lcbad")
        .query("lifecycle")
        .header("content-md5", &content_md5(b"other"))
        .body(RULES)
        .send()
        .await;
    res.assert_error(400, "BadDigest");
    app.req(Method::GET, "/lcbad")
        .query("lifecycle")
        .send()
        .await
        .assert_error(404, "NoSuchLifecycleConfiguration");
}

#[tokio::test]
async fn expired_objects_go_as_a_delete_would_and_stale_uploads_are_aborted() {
    let app = spawn_app().await;
    app.create_bucket("lcexp").await;
    put_rules(&app, "lcexp", RULES).await.assert_status(200);
    let big = pattern(200 << 10, 1);
    app.put_object("lcexp", "tmp/big", big.clone()).await;
    app.put_object("lcexp", "tmp/small", b"s".to_vec()).await;
    app.put_object("lcexp", "keep/a", b"k".to_vec()).await;
    app.put_object("lcexp", "other", b"o".to_vec()).await;
    let res = app
        .req(Method::POST, &obj("lcexp", "tmp/mp"))
        .query("uploads")
        .send()
        .await;
    let upload = xml_tag(&res.text(), "UploadId").unwrap();
    app.req(Method::PUT, &obj("lcexp", "tmp/mp"))
        .query(&format!("partNumber=1&uploadId={upload}"))
        .body(vec![1; 100 << 10])
        .send()
        .await
        .assert_status(200);
    assert_eq!(blob_files(app.data_dir()).len(), 2);
    let day = Duration::from_millis(400);
    // Younger than a day: nothing goes.
    assert_eq!(sweep(&app, day).await, Default::default());
    tokio::time::sleep(day + Duration::from_millis(100)).await;
    // A day old: the objects under tmp/ go; the upload (2 days) stays.
    let swept = sweep(&app, day).await;
    assert_eq!((swept.objects, swept.uploads), (2, 0));
    app.get(&obj("lcexp", "tmp/big"))
        .await
        .assert_error(404, "NoSuchKey");
    app.get(&obj("lcexp", "tmp/small"))
        .await
        .assert_error(404, "NoSuchKey");
    app.get(&obj("lcexp", "keep/a")).await.assert_status(200);
    app.get(&obj("lcexp", "other")).await.assert_status(200);
    assert_eq!(blob_files(app.data_dir()).len(), 1, "the part's blob only");
    tokio::time::sleep(day + Duration::from_millis(100)).await;
    let swept = sweep(&app, day).await;
    assert_eq!((swept.objects, swept.uploads), (0, 1));
    let uploads = app.req(Method::GET, "/lcexp").query("uploads").send().await;
    assert!(xml_tags(&uploads.text(), "UploadId").is_empty());
    assert!(blob_files(app.data_dir()).is_empty());
    // An object rewritten since it was last modified is young again.
    app.put_object("lcexp", "tmp/new", b"n".to_vec()).await;
    assert_eq!(sweep(&app, day).await.objects, 0);
    app.get(&obj("lcexp", "tmp/new")).await.assert_status(200);
}

/// Many expired objects: every batch (500 rows per transaction) is swept, and uploads made
/// meanwhile are neither stalled nor removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sweep_goes_in_batches_without_stalling_uploads() {
    let app = spawn_app().await;
    app.create_bucket("lcmany").await;
    const N: usize = 5_300;
    app.state
        .db
        .write(|c| {
            let old = postgate::db::now_millis() - 10_000;
            let mut stmt = c.prepare(
                "INSERT INTO objects (bucket, key, size, etag, last_modified, owner, data)
                 VALUES ('lcmany', ?1, 1, '\"x\"', ?2, 'o', x'61')",
            )?;
            for i in 0..N {
                stmt.execute(rusqlite::params![format!("tmp/{i:05}"), old])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    put_rules(&app, "lcmany", RULES).await.assert_status(200);
    let sweeper = {
        let (db, uploads, store) = (
            app.state.db.clone(),
            app.state.uploads.clone(),
            app.state.store.clone(),
        );
        let origin = app.state.lifecycle_origin();
        tokio::spawn(async move {
            postgate::objects::lifecycle::sweep(
                &db,
                &uploads,
                &store,
                Some(Duration::from_secs(1)),
                &origin,
            )
            .await
            .unwrap()
        })
    };
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = std::time::Instant::now();
        app.put_object("lcmany", &format!("tmp/live-{i}"), b"l".to_vec())
            .await;
        slowest = slowest.max(started.elapsed());
    }
    let swept = sweeper.await.unwrap();
    assert_eq!(swept.objects, N);
    let res = app
        .req(Method::GET, "/lcmany")
        .query("list-type=2")
        .send()
        .await;
    assert_eq!(xml_tags(&res.text(), "Key").len(), 20);
    eprintln!("slowest PUT during the sweep of {N} objects: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
}

/// A server whose lifecycle day lasts one second: its own sweeper applies the rules.
#[tokio::test]
async fn the_background_sweeper_applies_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = postgate::Config::for_data_dir(dir.path());
    config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
    config.lifecycle_debug_day = Some(Duration::from_secs(1));
    let (state, _) = postgate::AppState::open(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(postgate::serve(listener, state, async move {
        stop_rx.await.ok();
    }));
    let (base, host, http) = (
        format!("http://{addr}"),
        addr.to_string(),
        reqwest::Client::new(),
    );
    let req = |m: Method, p: &str| req_to(&base, &host, &http, m, p);
    req(Method::PUT, "/auto").send().await.assert_status(200);
    req(Method::PUT, "/auto")
        .query("lifecycle")
        .body(RULES)
        .send()
        .await
        .assert_status(200);
    req(Method::PUT, "/auto/tmp/x")
        .body("x")
        .send()
        .await
        .assert_status(200);
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if req(Method::HEAD, "/auto/tmp/x").send().await.status == 404 {
            gone = true;
            break;
        }
    }
    assert!(gone, "the object was not expired within 5 s");
    drop(stop);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn files_uploaded_through_an_expiring_link_expire() {
    let app = spawn_app().await;
    app.create_bucket("lclink").await;
    let (id, token) = make_link(
        &app,
        serde_json::json!({"bucket": "lclink", "prefix": "in/", "expire_objects_after": 1}),
    )
    .await;
    let (_, links) = api(
        &app,
        Method::GET,
        "/-/api/links",
        (ADMIN_AK, ADMIN_SK),
        serde_json::Value::Null,
    )
    .await;
    let link = links["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(link["expire_objects_after"].as_u64(), Some(1));
    let (url, fields) = link_form(&app, &token, "").await;
    for name in ["a.txt", "b.txt"] {
        let res = post_form(
            &app,
            &url,
            &fields,
            &[("Content-Type", "text/plain")],
            name,
            b"hello",
        )
        .await;
        assert!(res.status < 300, "{name}: {}", res.status);
    }
    // An object not uploaded through the link, and one of its files replaced by a plain PUT,
    // have no expiry of their own.
    app.put_object("lclink", "in/mine.txt", b"m".to_vec()).await;
    app.put_object("lclink", "in/b.txt", b"replaced".to_vec())
        .await;
    let day = Duration::from_secs(3600);
    assert_eq!(sweep(&app, day).await.objects, 0);
    app.get(&obj("lclink", "in/a.txt")).await.assert_status(200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sweep(&app, day).await.objects, 1);
    app.get(&obj("lclink", "in/a.txt"))
        .await
        .assert_error(404, "NoSuchKey");
    app.get(&obj("lclink", "in/b.txt")).await.assert_status(200);
    app.get(&obj("lclink", "in/mine.txt"))
        .await
        .assert_status(200);
}

/// A stranger's configuration is bounded as S3 bounds it: 1,000 rules are taken (and swept),
/// 1,001 are refused, and so is a body over 1 MiB; a refused configuration leaves the stored one
/// as it was.
#[tokio::test]
async fn a_configuration_is_bounded_to_a_thousand_rules_and_a_mebibyte() {
    let app = spawn_app().await;
    app.create_bucket("lcmany").await;
    let rules = |n: usize, pad: usize| {
        let mut xml = String::from(
            r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
        );
        for i in 0..n {
            xml.push_str(&format!(
                "<Rule><ID>r{i}</ID><Filter><Prefix>p{i}/{}</Prefix></Filter><Status>Enabled</Status>\
                 <Expiration><Days>1</Days></Expiration></Rule>",
                "x".repeat(pad)
            ));
        }
        xml.push_str("</LifecycleConfiguration>");
        xml
    };
    put_rules(&app, "lcmany", &rules(1000, 0))
        .await
        .assert_status(200);
    for i in [0, 499, 999] {
        app.put_object("lcmany", &format!("p{i}/old"), b"expires".to_vec())
            .await;
    }
    app.put_object("lcmany", "elsewhere/kept", b"stays".to_vec())
        .await;
    // Every rule applies: a "day" later the three matching objects are gone, the other stays.
    let day = Duration::from_millis(400);
    tokio::time::sleep(day + Duration::from_millis(100)).await;
    assert_eq!(sweep(&app, day).await.objects, 3);
    for i in [0, 499, 999] {
        app.get(&obj("lcmany", &format!("p{i}/old")))
            .await
            .assert_error(404, "NoSuchKey");
    }
    app.get(&obj("lcmany", "elsewhere/kept"))
        .await
        .assert_status(200);

    put_rules(&app, "lcmany", &rules(1001, 0))
        .await
        .assert_error(400, "MalformedXML");
    // 1,000 rules with long prefixes: over 1 MiB of XML.
    let big = rules(1000, 1100);
    assert!(big.len() > 1024 * 1024);
    put_rules(&app, "lcmany", &big)
        .await
        .assert_error(400, "MalformedXML");
    let got = app
        .req(Method::GET, "/lcmany")
        .query("lifecycle")
        .send()
        .await;
    got.assert_status(200);
    let ids = xml_tags(&got.text(), "ID");
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids[999], "r999");
}
