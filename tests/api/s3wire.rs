//! `--backend s3` wired (docs/cluster.md section 9): a postgate gateway started with the S3
//! backend in front of a second postgate (filesystem store) as the cluster, everything over
//! real HTTP on 127.0.0.1. Each object is `{bucket}/{key}` in the backend bucket, with its
//! bytes, its headers and postgate's reserved `x-amz-meta-postgate-*` metadata, read back
//! through the gateway and straight from the backend.

use std::time::Duration;

use postgate::policy::{ContentTypeRule, KeySpec, PostPolicyRequest, issue};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::*;

/// The backend bucket every gateway stores into.
const CLUSTER: &str = "cluster";
const MIB: usize = 1024 * 1024;

/// A postgate running `--backend s3`, in this process (the S3-backend modules share it).
pub(crate) struct Gateway {
    pub(crate) base: String,
    pub(crate) host: String,
    pub(crate) state: postgate::AppState,
    pub(crate) http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Gateway {
    async fn start(backend: &TestApp) -> Gateway {
        Self::start_with(backend, |_| {}).await
    }

    /// [`Gateway::start`] with `tweak` applied to its configuration first.
    pub(crate) async fn start_with(
        backend: &TestApp,
        tweak: impl FnOnce(&mut postgate::Config),
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let mut config = postgate::Config::for_data_dir(dir.path());
        config.admin_key = Some((ADMIN_AK.to_owned(), ADMIN_SK.to_owned()));
        config.backend = postgate::config::Backend::S3(postgate::config::S3Backend {
            endpoint: backend.base.clone(),
            bucket: CLUSTER.into(),
            region: REGION.into(),
            access_key_id: ADMIN_AK.into(),
            secret_access_key: ADMIN_SK.into(),
        });
        tweak(&mut config);
        let (state, _) = postgate::AppState::open(config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(postgate::serve(listener, state.clone(), async move {
            stop_rx.await.ok();
        }));
        Gateway {
            base: format!("http://{addr}"),
            host: addr.to_string(),
            state,
            http: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    pub(crate) fn req(&self, method: Method, path: &str) -> Req<'_> {
        req_to(&self.base, &self.host, &self.http, method, path)
    }

    pub(crate) async fn create_bucket(&self, bucket: &str) {
        self.req(Method::PUT, &format!("/{bucket}"))
            .send()
            .await
            .assert_status(200);
    }

    /// A form issued by the crate's issuer for this gateway, as the admin.
    pub(crate) fn form(&self, req: &PostPolicyRequest) -> Vec<(String, String)> {
        let url = format!("{}/{}", self.base, req.bucket);
        issue(
            req,
            ADMIN_AK,
            ADMIN_SK,
            REGION,
            &url,
            OffsetDateTime::now_utc(),
        )
        .unwrap()
        .fields
    }

    pub(crate) async fn post(
        &self,
        bucket: &str,
        fields: &[(String, String)],
        content_type: &str,
        data: &[u8],
    ) -> Resp {
        let form = fields
            .iter()
            .fold(Form::new(), |f, (n, v)| f.text(n.clone(), v.clone()));
        let file = Part::bytes(data.to_vec())
            .file_name("file.bin")
            .mime_str(content_type)
            .unwrap();
        let res = self
            .http
            .post(format!("{}/{bucket}", self.base))
            .multipart(form.part("file", file))
            .send()
            .await
            .unwrap();
        Resp::read(res).await
    }
}

/// The backend postgate with its bucket, and a gateway in front of it.
async fn setup() -> (TestApp, Gateway) {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gateway = Gateway::start(&backend).await;
    (backend, gateway)
}

/// The keys of the backend bucket.
async fn backend_keys(backend: &TestApp) -> Vec<String> {
    let res = backend
        .req(Method::GET, &format!("/{CLUSTER}"))
        .query("list-type=2")
        .send()
        .await;
    res.assert_status(200);
    xml_tags(&res.text(), "Key")
}

#[tokio::test]
async fn put_get_head_range_list_and_delete_go_through_the_backend() {
    let (backend, gw) = setup().await;
    gw.create_bucket("photos").await;
    let data = pattern(100_000, 7);
    let put = gw
        .req(Method::PUT, "/photos/dir/a b.bin")
        .header("content-type", "application/x-test")
        .header("cache-control", "max-age=60")
        .header("x-amz-meta-colour", "blue")
        .body(data.clone())
        .send()
        .await;
    put.assert_status(200);
    assert_eq!(put.header("etag"), Some(etag_of(&data).as_str()));
    gw.req(Method::PUT, "/photos/dir/sub/c.txt")
        .body(b"c".to_vec())
        .send()
        .await
        .assert_status(200);
    gw.req(Method::PUT, "/photos/top.txt")
        .body(b"top".to_vec())
        .send()
        .await
        .assert_status(200);

    // In the backend: `{bucket}/{key}`, the bytes, the headers and the reserved metadata.
    let stored = backend.get(&obj(CLUSTER, "photos/dir/a b.bin")).await;
    stored.assert_status(200);
    assert_eq!(&stored.body[..], &data[..]);
    assert_eq!(stored.header("content-type"), Some("application/x-test"));
    assert_eq!(stored.header("x-amz-meta-colour"), Some("blue"));
    assert_eq!(stored.header("x-amz-meta-postgate-owner"), Some(ADMIN_AK));
    assert_eq!(stored.header("x-amz-meta-postgate-acl"), Some("private"));
    assert!(stored.header("x-amz-meta-postgate-write").is_some());

    // Through the gateway: the same bytes and metadata, none of the reserved names.
    let got = gw.req(Method::GET, "/photos/dir/a b.bin").send().await;
    got.assert_status(200);
    assert_eq!(&got.body[..], &data[..]);
    assert_eq!(got.header("etag"), Some(etag_of(&data).as_str()));
    assert_eq!(got.header("x-amz-meta-colour"), Some("blue"));
    assert_eq!(got.header("cache-control"), Some("max-age=60"));
    assert!(got.header("x-amz-meta-postgate-owner").is_none());
    let head = gw.req(Method::HEAD, "/photos/dir/a b.bin").send().await;
    head.assert_status(200);
    assert_eq!(head.header("content-length"), Some("100000"));
    assert_eq!(head.header("content-type"), Some("application/x-test"));
    let ranged = gw
        .req(Method::GET, "/photos/dir/a b.bin")
        .header("range", "bytes=10-19")
        .send()
        .await;
    ranged.assert_status(206);
    assert_eq!(&ranged.body[..], &data[10..20]);
    assert_eq!(ranged.header("content-range"), Some("bytes 10-19/100000"));
    let suffix = gw
        .req(Method::GET, "/photos/dir/a b.bin")
        .header("range", "bytes=-5")
        .send()
        .await;
    assert_eq!(&suffix.body[..], &data[data.len() - 5..]);

    // Listings: keys without the bucket's prefix, common prefixes, V1 and V2.
    let all = gw
        .req(Method::GET, "/photos")
        .query("list-type=2")
        .send()
        .await;
    all.assert_status(200);
    assert_eq!(
        xml_tags(&all.text(), "Key"),
        ["dir/a b.bin", "dir/sub/c.txt", "top.txt"]
    );
    let rolled = gw
        .req(Method::GET, "/photos")
        .query("list-type=2&delimiter=%2F")
        .send()
        .await;
    assert_eq!(xml_tags(&rolled.text(), "Key"), ["top.txt"]);
    assert_eq!(xml_tags(&rolled.text(), "Prefix")[1..], ["dir/"]);
    let page = gw
        .req(Method::GET, "/photos")
        .query("max-keys=1")
        .send()
        .await;
    assert_eq!(xml_tags(&page.text(), "Key"), ["dir/a b.bin"]);
    assert_eq!(
        xml_tag(&page.text(), "IsTruncated").as_deref(),
        Some("true")
    );
    let under = gw
        .req(Method::GET, "/photos")
        .query("prefix=dir%2Fsub%2F&marker=dir%2F")
        .send()
        .await;
    assert_eq!(xml_tags(&under.text(), "Key"), ["dir/sub/c.txt"]);

    // Delete: gone from the backend and from the gateway.
    gw.req(Method::DELETE, "/photos/dir/a b.bin")
        .send()
        .await
        .assert_status(204);
    backend
        .get(&obj(CLUSTER, "photos/dir/a b.bin"))
        .await
        .assert_status(404);
    gw.req(Method::GET, "/photos/dir/a b.bin")
        .send()
        .await
        .assert_error(404, "NoSuchKey");
    // DeleteObjects.
    let body = "<Delete><Object><Key>top.txt</Key></Object><Object><Key>dir/sub/c.txt</Key></Object></Delete>";
    gw.req(Method::POST, "/photos")
        .query("delete")
        .header("content-md5", &content_md5(body.as_bytes()))
        .body(body.as_bytes().to_vec())
        .send()
        .await
        .assert_status(200);
    assert!(backend_keys(&backend).await.is_empty());
}

/// Conditional writes are the backend's: `If-None-Match: *` on a taken key is refused, and the
/// object stays; PutObjectAcl changes what the gateway answers, not the stored object.
#[tokio::test]
async fn conditions_and_acl() {
    let (backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    gw.req(Method::PUT, "/bkt/k")
        .body(b"one".to_vec())
        .send()
        .await
        .assert_status(200);
    gw.req(Method::PUT, "/bkt/k")
        .header("if-none-match", "*")
        .body(b"two".to_vec())
        .send()
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(&backend.get(&obj(CLUSTER, "bkt/k")).await.body[..], b"one");
    gw.req(Method::PUT, "/bkt/k")
        .header("if-match", &etag_of(b"nope"))
        .body(b"two".to_vec())
        .send()
        .await
        .assert_error(412, "PreconditionFailed");
    gw.req(Method::PUT, "/bkt/k")
        .query("acl")
        .header("x-amz-acl", "public-read")
        .send()
        .await
        .assert_status(200);
    let anonymous = gw.req(Method::GET, "/bkt/k").anonymous().send().await;
    anonymous.assert_status(200);
    assert_eq!(&anonymous.body[..], b"one");
}

/// A client may not send postgate's reserved metadata names under `--backend s3`: PUT and POST
/// are refused with InvalidArgument and nothing reaches the backend.
#[tokio::test]
async fn a_client_cannot_send_reserved_metadata() {
    let (backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    let res = gw
        .req(Method::PUT, "/bkt/forged")
        .header("x-amz-meta-postgate-owner", "someone-else")
        .body(b"x".to_vec())
        .send()
        .await;
    res.assert_error(400, "InvalidArgument");
    let req = PostPolicyRequest {
        metadata: vec![("postgate-acl".into(), "public-read".into())],
        ..PostPolicyRequest::new("bkt", KeySpec::Exact("forged-form".into()), 1000)
    };
    let res = gw.post("bkt", &gw.form(&req), "text/plain", b"x").await;
    res.assert_error(400, "InvalidArgument");
    // CreateMultipartUpload fixes the object's metadata in the backend: the same refusal, and
    // no backend upload opened.
    let res = gw
        .req(Method::POST, "/bkt/forged-parts")
        .query("uploads")
        .header("x-amz-meta-postgate-acl", "public-read")
        .send()
        .await;
    res.assert_error(400, "InvalidArgument");
    assert_eq!(backend_uploads(&backend).await, Vec::<String>::new());
    assert!(backend_keys(&backend).await.is_empty());
}

/// 20 MiB through PutObject goes into the backend as a multipart upload while it arrives (8 MiB
/// parts: the multipart ETag `-3`), reads back whole and ranged, and leaves no spool file.
#[tokio::test]
async fn a_large_put_is_a_backend_multipart_upload() {
    let (backend, gw) = setup().await;
    gw.create_bucket("big").await;
    let data = pattern(20 * MIB, 11);
    let put = gw
        .req(Method::PUT, "/big/blob")
        .body(data.clone())
        .send()
        .await;
    put.assert_status(200);
    let etag = put.header("etag").unwrap().to_owned();
    assert!(etag.ends_with("-3\""), "{etag}");
    let stored = backend.head(&obj(CLUSTER, "big/blob")).await;
    assert_eq!(stored.header("etag"), Some(etag.as_str()));
    assert_eq!(
        stored.header("x-amz-meta-postgate-owner"),
        Some(ADMIN_AK),
        "the metadata given at CreateMultipartUpload"
    );
    let got = gw.req(Method::GET, "/big/blob").send().await;
    got.assert_status(200);
    assert!(got.body[..] == data[..], "20 MiB read back");
    let ranged = gw
        .req(Method::GET, "/big/blob")
        .header("range", "bytes=8388600-8388620")
        .send()
        .await;
    assert_eq!(&ranged.body[..], &data[8_388_600..=8_388_620]);
    assert!(tmp_files(gw._dir.path()).is_empty());
}

/// A large PUT whose Content-MD5 is wrong is found out only after its parts went to the
/// backend: the refusal is answered after the backend upload was aborted, not while an abort
/// is still on its way (a client listing uploads right after the 400 sees none).
#[tokio::test]
async fn a_large_put_refused_by_its_digest_leaves_no_upload_when_answered() {
    let (backend, gw) = setup().await;
    gw.create_bucket("big").await;
    for round in 0..3 {
        let put = gw
            .req(Method::PUT, "/big/bad")
            .header("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")
            .body(pattern(12 * MIB, round))
            .send()
            .await;
        put.assert_status(400);
        assert_eq!(put.code().as_deref(), Some("BadDigest"));
        assert_eq!(
            backend_uploads(&backend).await,
            Vec::<String>::new(),
            "round {round}"
        );
    }
    assert!(backend_keys(&backend).await.is_empty());
}

/// A browser POST form with policy conditions stores its file in the backend; the refused ones
/// (over the policy's size, a type that does not match with verify-type, past the bucket's
/// quota) leave nothing there.
#[tokio::test]
async fn post_forms_store_or_leave_nothing() {
    let (backend, gw) = setup().await;
    gw.create_bucket("forms").await;
    let req = PostPolicyRequest {
        content_type: Some(ContentTypeRule::Exact("image/png".into())),
        metadata: vec![("album".into(), "summer".into())],
        success_action_status: Some(201),
        ..PostPolicyRequest::new("forms", KeySpec::Prefix("in/".into()), 200_000)
    };
    let png = {
        let mut d = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        d.extend(pattern(150_000, 3));
        d
    };
    let fields: Vec<(String, String)> = gw
        .form(&req)
        .into_iter()
        .chain([("key".to_owned(), "in/${filename}".to_owned())])
        .collect();
    let fields: Vec<_> = {
        // The issuer's `key` field first would be overridden; keep one `key`.
        let mut seen = false;
        fields
            .into_iter()
            .rev()
            .filter(|(n, _)| !(n == "key" && std::mem::replace(&mut seen, true)))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    };
    let res = gw.post("forms", &fields, "image/png", &png).await;
    res.assert_status(201);
    assert_eq!(xml_tag(&res.text(), "Key").as_deref(), Some("in/file.bin"));
    let stored = backend.get(&obj(CLUSTER, "forms/in/file.bin")).await;
    stored.assert_status(200);
    assert_eq!(&stored.body[..], &png[..]);
    assert_eq!(stored.header("x-amz-meta-album"), Some("summer"));
    let head = gw.req(Method::HEAD, "/forms/in/file.bin").send().await;
    assert_eq!(head.header("x-amz-meta-album"), Some("summer"));

    // Over the policy's size (in memory, then past memory into a backend upload).
    for size in [200_001, 3 * MIB] {
        let exact = PostPolicyRequest::new("forms", KeySpec::Exact(format!("big-{size}")), 200_000);
        let res = gw
            .post("forms", &gw.form(&exact), "text/plain", &pattern(size, 1))
            .await;
        res.assert_error(400, "EntityTooLarge");
    }
    // Over the policy's size with no length given (a streamed form): read until the limit,
    // past one backend part, so that a backend multipart upload was open and is aborted.
    let nine = PostPolicyRequest::new("forms", KeySpec::Exact("streamed".into()), 9 * MIB as u64);
    let form = gw
        .form(&nine)
        .into_iter()
        .fold(Form::new(), |f, (n, v)| f.text(n, v));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = pattern(12 * MIB, 8)
        .chunks(256 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let file = Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(
        chunks,
    )))
    .file_name("streamed.bin");
    let res = gw
        .http
        .post(format!("{}/forms", gw.base))
        .multipart(form.part("file", file))
        .send()
        .await
        .unwrap();
    let res = Resp::read(res).await;
    res.assert_error(400, "EntityTooLarge");
    // Verify-type: a form that declares a PNG and sends text.
    let typed = PostPolicyRequest {
        content_type: Some(ContentTypeRule::Exact("image/png".into())),
        verify_type: true,
        ..PostPolicyRequest::new("forms", KeySpec::Exact("fake.png".into()), 10 * MIB as u64)
    };
    let res = gw
        .post("forms", &gw.form(&typed), "image/png", &pattern(2 * MIB, 5))
        .await;
    assert_eq!(res.status, 400, "{}", res.text());
    // Quota: room for what is stored and a little more.
    let quota = postgate::db::quota::Quota {
        max_size: Some(160_000),
        max_objects: None,
    };
    gw.state
        .write_bucket(move |c| postgate::db::quota::set(c, "forms", quota))
        .await
        .unwrap();
    let over = PostPolicyRequest::new("forms", KeySpec::Exact("over".into()), 10 * MIB as u64);
    let res = gw
        .post("forms", &gw.form(&over), "text/plain", &pattern(100_000, 2))
        .await;
    assert_eq!(
        res.code().as_deref(),
        Some("XPostgateQuotaExceeded"),
        "{}",
        res.text()
    );
    let res = gw
        .req(Method::PUT, "/forms/over-put")
        .body(pattern(2 * MIB, 2))
        .send()
        .await;
    assert_eq!(
        res.code().as_deref(),
        Some("XPostgateQuotaExceeded"),
        "{}",
        res.text()
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend_keys(&backend).await, ["forms/in/file.bin"]);
    assert_eq!(backend_uploads(&backend).await, Vec::<String>::new());
    assert!(tmp_files(gw._dir.path()).is_empty(), "spool files left");
}

/// When the settling transaction fails after the backend stored the version, that version is
/// deleted again (with If-Match on its ETag) and the client gets a 500: nothing stays.
#[tokio::test]
async fn a_failed_settle_removes_the_stored_version() {
    let (backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    gw.state
        .db
        .write(|c| {
            c.execute_batch(
                "CREATE TRIGGER fail_settle BEFORE INSERT ON object_extras
                 WHEN NEW.key LIKE 'doomed%' BEGIN SELECT RAISE(ABORT, 'settle fails'); END;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
    for (key, size) in [("doomed-small", 10), ("doomed-large", 9 * MIB)] {
        let res = gw
            .req(Method::PUT, &format!("/bkt/{key}"))
            .body(pattern(size, 4))
            .send()
            .await;
        assert_eq!(res.status, 500, "{key}: {}", res.text());
    }
    assert!(backend_keys(&backend).await.is_empty());
    gw.req(Method::PUT, "/bkt/fine")
        .body(b"ok".to_vec())
        .send()
        .await
        .assert_status(200);
    assert_eq!(backend_keys(&backend).await, ["bkt/fine"]);
}

/// Two gateways over one backend: what one writes, the other reads, lists and deletes.
#[tokio::test]
async fn two_gateways_share_the_objects() {
    let (backend, one) = setup().await;
    let two = Gateway::start(&backend).await;
    // Buckets are control state, per node until it is shared (docs/cluster.md section 3).
    one.create_bucket("shared").await;
    two.create_bucket("shared").await;
    let data = pattern(300_000, 9);
    one.req(Method::PUT, "/shared/x")
        .header("x-amz-meta-from", "one")
        .body(data.clone())
        .send()
        .await
        .assert_status(200);
    let got = two.req(Method::GET, "/shared/x").send().await;
    got.assert_status(200);
    assert_eq!(&got.body[..], &data[..]);
    assert_eq!(got.header("x-amz-meta-from"), Some("one"));
    let listed = two
        .req(Method::GET, "/shared")
        .query("list-type=2")
        .send()
        .await;
    assert_eq!(xml_tags(&listed.text(), "Key"), ["x"]);
    // A POST form issued by one node is accepted by the other, and read through the first.
    let req = PostPolicyRequest::new("shared", KeySpec::Exact("posted".into()), 1000);
    two.post("shared", &one.form(&req), "text/plain", b"posted to two")
        .await
        .assert_status(204);
    let posted = one.req(Method::GET, "/shared/posted").send().await;
    assert_eq!(&posted.body[..], b"posted to two");
    one.req(Method::DELETE, "/shared/posted")
        .send()
        .await
        .assert_status(204);
    two.req(Method::DELETE, "/shared/x")
        .send()
        .await
        .assert_status(204);
    one.req(Method::GET, "/shared/x")
        .send()
        .await
        .assert_error(404, "NoSuchKey");
    assert!(backend_keys(&backend).await.is_empty());
}

/// Copies are wired (tests/api/s3copy.rs): a missing source is NoSuchKey, not 501.
#[tokio::test]
async fn a_copy_of_a_missing_source_is_no_such_key() {
    let (_backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    let res = gw
        .req(Method::PUT, "/bkt/copy")
        .header("x-amz-copy-source", "/bkt/k")
        .send()
        .await;
    res.assert_error(404, "NoSuchKey");
}

/// Upload links over the S3 backend: a link's form upload is stored in the backend and counted
/// against the link; its key is never replaced (the backend's `If-None-Match: *`), the next
/// free name is picked from what this node stored, and past `max_files` nothing more is stored.
#[tokio::test]
async fn link_form_uploads_count_and_never_replace() {
    use crate::linkkit::{api, link_form, make_link, post_form};
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let endpoint = backend.base.clone();
    let gw = spawn_app_with(|config| {
        config.backend = postgate::config::Backend::S3(postgate::config::S3Backend {
            endpoint,
            bucket: CLUSTER.into(),
            region: REGION.into(),
            access_key_id: ADMIN_AK.into(),
            secret_access_key: ADMIN_SK.into(),
        });
    })
    .await;
    gw.create_bucket("keep").await;
    let (id, token) = make_link(
        &gw,
        serde_json::json!({"bucket": "keep", "prefix": "in/", "max_files": 2}),
    )
    .await;
    let text = [("Content-Type", "text/plain")];
    let (url, fields) = link_form(&gw, &token, "").await;
    post_form(&gw, &url, &fields, &text, "a.txt", b"first")
        .await
        .assert_status(201);
    // The generic form names the same key: refused by the backend, the first file kept.
    let (url, fields) = link_form(&gw, &token, "").await;
    let res = post_form(&gw, &url, &fields, &text, "a.txt", b"second").await;
    res.assert_error(412, "PreconditionFailed");
    assert_eq!(
        &backend.get(&obj(CLUSTER, "keep/in/a.txt")).await.body[..],
        b"first"
    );
    // A form for its file gets the next free name.
    let (url, fields) = link_form(&gw, &token, "?filename=a.txt&type=text%2Fplain").await;
    let key = &fields.iter().find(|(k, _)| k == "key").unwrap().1;
    assert_eq!(key, "in/a (2).txt");
    post_form(&gw, &url, &fields, &[], "a.txt", b"second")
        .await
        .assert_status(201);
    // The link is full: its page gives no more forms, and nothing more is stored.
    let (res, _) =
        crate::linkkit::call(&gw, Method::GET, &format!("/-/u/{token}/policy"), None).await;
    assert!(res.status >= 400, "{} {}", res.status, res.text());
    assert_eq!(
        backend_keys(&backend).await,
        ["keep/in/a (2).txt", "keep/in/a.txt"]
    );
    let (_, links) = api(
        &gw,
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
        .unwrap();
    assert_eq!(link["uploaded_files"], 2, "{link}");
}

/// Starts a multipart upload of `bucket/key` through the gateway; answers its id.
async fn create_upload(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = gw.req(Method::POST, path).query("uploads");
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let res = req.send().await;
    res.assert_status(200);
    xml_tag(&res.text(), "UploadId").unwrap()
}

/// UploadPart `number` of `data`, with extra headers; answers the response.
async fn put_part(
    gw: &Gateway,
    path: &str,
    id: &str,
    number: u32,
    data: &[u8],
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = gw
        .req(Method::PUT, path)
        .query(&format!("partNumber={number}&uploadId={id}"))
        .body(data.to_vec());
    for (n, v) in headers {
        req = req.header(n, v);
    }
    req.send().await
}

fn complete_body(parts: &[(u32, &str)]) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        body.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    body + "</CompleteMultipartUpload>"
}

/// The backend's open multipart uploads (ListMultipartUploads of the cluster bucket).
async fn backend_uploads(backend: &TestApp) -> Vec<String> {
    let res = backend
        .req(Method::GET, &format!("/{CLUSTER}"))
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    xml_tags(&res.text(), "UploadId")
}

/// A client's multipart upload maps onto the backend's: three parts streamed through (part 2
/// sent twice: the second wins; part 3 sent again with a wrong Content-MD5: refused, the first
/// part 3 stays), completed into one object with the multipart ETag, its metadata and bytes
/// read back through the gateway and straight from the backend, and no upload left open.
#[tokio::test]
async fn a_client_multipart_upload_goes_through_the_backend() {
    let (backend, gw) = setup().await;
    gw.create_bucket("photos").await;
    let path = "/photos/big.bin";
    let id = create_upload(
        &gw,
        path,
        &[
            ("content-type", "application/x-test"),
            ("x-amz-meta-color", "blue"),
        ],
    )
    .await;
    assert_eq!(backend_uploads(&backend).await.len(), 1);
    let one = pattern(5 * MIB, 1);
    let two_old = pattern(5 * MIB, 9);
    let two = pattern(5 * MIB, 2);
    let three = pattern(1000, 3);
    let mut etags = Vec::new();
    for (n, data) in [(1, &one), (2, &two_old), (2, &two), (3, &three)] {
        let res = put_part(&gw, path, &id, n, data, &[]).await;
        res.assert_status(200);
        if n as usize > etags.len() {
            etags.push(String::new());
        }
        etags[n as usize - 1] = res.header("etag").unwrap().to_owned();
    }
    // A retry of part 3 refused by its digest leaves the earlier part 3.
    let wrong_md5 = "1B2M2Y8AsgTpgAmY7PhCfg==";
    let res = put_part(
        &gw,
        path,
        &id,
        3,
        &pattern(1000, 4),
        &[("content-md5", wrong_md5)],
    )
    .await;
    res.assert_error(400, "BadDigest");
    let parts: Vec<(u32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(i, e)| (i as u32 + 1, e.as_str()))
        .collect();
    let res = gw
        .req(Method::POST, path)
        .query(&format!("uploadId={id}"))
        .body(complete_body(&parts))
        .send()
        .await;
    res.assert_status(200);
    let etag = xml_tag(&res.text(), "ETag").unwrap();
    assert!(etag.trim_matches('"').ends_with("-3"), "{etag}");
    let mut whole = one.clone();
    whole.extend_from_slice(&two);
    whole.extend_from_slice(&three);
    let got = gw.req(Method::GET, path).send().await;
    got.assert_status(200);
    assert!(got.body[..] == whole[..], "the gateway's bytes differ");
    assert_eq!(got.header("x-amz-meta-color"), Some("blue"));
    assert_eq!(got.header("content-type"), Some("application/x-test"));
    assert_eq!(
        got.header("etag").unwrap().trim_matches('"'),
        etag.trim_matches('"')
    );
    let direct = backend.get(&obj(CLUSTER, "photos/big.bin")).await;
    assert!(direct.body[..] == whole[..], "the backend's bytes differ");
    assert_eq!(direct.header("x-amz-meta-color"), Some("blue"));
    assert!(backend_uploads(&backend).await.is_empty());
}

/// AbortMultipartUpload aborts the backend's upload too: nothing stays open there.
#[tokio::test]
async fn an_aborted_upload_leaves_no_backend_upload() {
    let (backend, gw) = setup().await;
    gw.create_bucket("photos").await;
    let path = "/photos/gone.bin";
    let id = create_upload(&gw, path, &[]).await;
    put_part(&gw, path, &id, 1, &pattern(1000, 1), &[])
        .await
        .assert_status(200);
    assert_eq!(backend_uploads(&backend).await.len(), 1);
    gw.req(Method::DELETE, path)
        .query(&format!("uploadId={id}"))
        .send()
        .await
        .assert_status(204);
    assert!(backend_uploads(&backend).await.is_empty());
    assert!(backend_keys(&backend).await.is_empty());
    gw.req(Method::GET, path).send().await.assert_status(404);
}

/// A gateway over a fresh backend with bucket `race`, whose objects' creations each write one
/// outbox row (to a target nothing listens on, so the rows stay to be counted).
async fn racing_gateway() -> (TestApp, TestApp) {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gw = gateway_app(&backend).await;
    gw.create_bucket("race").await;
    crate::events::declare(&gw, "hook", "http://127.0.0.1:9/").await;
    let xml = crate::events::notification_xml(
        "arn:postgate:sqs::hook:webhook",
        &["s3:ObjectCreated:*"],
        None,
    );
    gw.req(Method::PUT, "/race")
        .query("notification")
        .body(xml)
        .send()
        .await
        .assert_status(200);
    (backend, gw)
}

/// Round `round` of a race: an upload of `race-<round>.bin` with part 1 `one` and a short part 2,
/// answered as (key, upload id, the two parts' ETags, part 2's bytes).
async fn racing_upload(
    gw: &TestApp,
    round: u64,
    one: &[u8],
) -> (String, String, [String; 2], Vec<u8>) {
    use crate::multipart::{create_with, upload_part};
    let key = format!("race-{round}.bin");
    let tail = format!("tail {round}").into_bytes();
    let id = create_with(gw, "race", &key, &[]).await;
    let e1 = upload_part(gw, "race", &key, &id, 1, one).await;
    let e2 = upload_part(gw, "race", &key, &id, 2, &tail).await;
    (key, id, [e1, e2], tail)
}

/// What the races settled in bucket `race`: (objects, bytes) of its usage and the events
/// written; no part bytes counted and no upload left in the gateway or the backend.
async fn race_settled(backend: &TestApp, gw: &TestApp) -> (u64, u64, u64) {
    let used = gw
        .state
        .db
        .read(|c| postgate::db::quota::usage(c, "race", None))
        .await
        .unwrap();
    assert_eq!(used.part_bytes, 0);
    let events = gw
        .state
        .db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))?))
        .await
        .unwrap();
    assert!(
        crate::multipart::list_uploads(gw, "race", "")
            .await
            .is_empty()
    );
    assert!(backend_uploads(backend).await.is_empty());
    (used.objects, used.bytes, events as u64)
}

/// Two Completes of one upload racing through one gateway (its upload rows in its own SQLite):
/// both answer 200 with the object's ETag, the object is the upload's bytes, it is counted
/// once in the bucket's usage with one event, and no upload is left in the gateway or the
/// backend. Several rounds, to meet the race (the second Complete finding the rows gone between
/// its reads, or in its settling transaction).
#[tokio::test]
async fn two_completes_racing_through_one_gateway_make_one_object() {
    use crate::multipart::{MIB, assert_both_completed, complete};
    let (backend, gw) = racing_gateway().await;
    let one = pattern(5 * MIB, 3);
    let mut total = 0;
    for round in 0..6 {
        let (key, id, [e1, e2], tail) = racing_upload(&gw, round, &one).await;
        let parts = [(1, e1.as_str()), (2, e2.as_str())];
        let (ra, rb) = tokio::join!(
            complete(&gw, "race", &key, &id, &parts),
            complete(&gw, "race", &key, &id, &parts)
        );
        let path = format!("/race/{key}");
        assert_both_completed([&ra, &rb], &gw, &path, &[&one, &tail]).await;
        total += (one.len() + tail.len()) as u64;
    }
    assert_eq!(race_settled(&backend, &gw).await, (6, total, 6));
}

/// A Complete racing an Abort of one upload through one gateway: whichever way it falls, the
/// object exists exactly when the Complete answered 200, and then it is the upload's bytes,
/// counted once in the bucket's usage with one event; otherwise the Complete is NoSuchUpload
/// and nothing is counted. No upload is left in the gateway or the backend.
#[tokio::test]
async fn a_complete_racing_an_abort_through_one_gateway_settles_what_stays() {
    use crate::multipart::{MIB, abort, complete};
    let (backend, gw) = racing_gateway().await;
    let one = pattern(5 * MIB, 4);
    let (mut stayed, mut total) = (0, 0);
    for round in 0..6 {
        let (key, id, [e1, e2], tail) = racing_upload(&gw, round, &one).await;
        let parts = [(1, e1.as_str()), (2, e2.as_str())];
        let (done, aborted) = tokio::join!(
            complete(&gw, "race", &key, &id, &parts),
            abort(&gw, "race", &key, &id)
        );
        assert!(matches!(aborted.status, 204 | 404), "{}", aborted.text());
        let got = gw.get(&format!("/race/{key}")).await;
        if done.status == 200 {
            got.assert_status(200);
            assert!(got.body == [one.as_slice(), tail.as_slice()].concat());
            stayed += 1;
            total += (one.len() + tail.len()) as u64;
        } else {
            done.assert_error(404, "NoSuchUpload");
            got.assert_status(404);
        }
    }
    assert_eq!(race_settled(&backend, &gw).await, (stayed, total, stayed));
}

/// A gateway with `--backend s3` in front of `backend`, as a `TestApp`.
async fn gateway_app(backend: &TestApp) -> TestApp {
    let endpoint = backend.base.clone();
    spawn_app_with(|config| {
        config.backend = postgate::config::Backend::S3(postgate::config::S3Backend {
            endpoint,
            bucket: CLUSTER.into(),
            region: REGION.into(),
            access_key_id: ADMIN_AK.into(),
            secret_access_key: ADMIN_SK.into(),
        });
    })
    .await
}

/// A JSON call to a link route, as Uppy makes it.
async fn uppy_call(
    app: &TestApp,
    method: Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> (Resp, serde_json::Value) {
    let mut req = app.http.request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = Resp::read(req.send().await.unwrap()).await;
    let json = serde_json::from_slice(&res.body).unwrap_or(serde_json::Value::Null);
    (res, json)
}

/// A link's multipart upload through the Uppy routes over the S3 backend: its parts go to the
/// backend's upload, a part past the link's maximum is refused (the earlier parts kept), the
/// completed file is counted against the link and stored in the backend, and an aborted upload
/// leaves no backend upload open.
#[tokio::test]
async fn a_links_multipart_upload_goes_through_the_backend() {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gw = gateway_app(&backend).await;
    gw.create_bucket("media").await;
    let link = postgate::links::new_link(
        "media",
        "up/",
        6 * MIB as u64,
        None,
        None,
        Duration::from_secs(3600),
        ADMIN_AK,
    );
    let (link_id, l) = (link.id.clone(), link.clone());
    gw.state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    let base = format!("{}/-/u/{}", gw.base, link.token);
    let (res, created) = uppy_call(
        &gw,
        Method::POST,
        &format!("{base}/s3/multipart"),
        Some(serde_json::json!({"filename": "clip.mp4", "type": "video/mp4"})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(created["key"], "up/clip.mp4");
    let upload_id = created["uploadId"].as_str().unwrap().to_owned();
    assert_eq!(backend_uploads(&backend).await.len(), 1);
    let key_q = "key=up%2Fclip.mp4";
    let first = pattern(5 * MIB, 5);
    let last = b"the end".to_vec();
    let over = vec![b'z'; MIB];
    let mut etags = Vec::new();
    for (n, bytes, status) in [(1, &first, 200), (2, &last, 200), (3, &over, 400)] {
        let (_, signed) = uppy_call(
            &gw,
            Method::GET,
            &format!("{base}/s3/multipart/{upload_id}/{n}?{key_q}"),
            None,
        )
        .await;
        let put = gw
            .http
            .put(signed["url"].as_str().unwrap())
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        let put = Resp::read(put).await;
        assert_eq!(put.status, status, "part {n}: {}", put.text());
        if status == 400 {
            put.assert_error(400, "EntityTooLarge");
        } else {
            etags.push(put.header("etag").unwrap().trim_matches('"').to_owned());
        }
    }
    let (res, done) = uppy_call(
        &gw,
        Method::POST,
        &format!("{base}/s3/multipart/{upload_id}/complete?{key_q}"),
        Some(serde_json::json!({"parts": [
            {"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}
        ]})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(done["key"], "up/clip.mp4");
    let mut whole = first.clone();
    whole.extend_from_slice(&last);
    let got = gw.get("/media/up/clip.mp4").await;
    got.assert_status(200);
    assert!(got.body[..] == whole[..]);
    assert_eq!(got.header("content-type"), Some("video/mp4"));
    assert!(got.header("etag").unwrap().ends_with("-2\""));
    let direct = backend.get(&obj(CLUSTER, "media/up/clip.mp4")).await;
    assert!(direct.body[..] == whole[..]);
    assert!(backend_uploads(&backend).await.is_empty());
    let id = link_id.clone();
    let counted = gw
        .state
        .db
        .read(move |c| postgate::db::links::get_by_id(c, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counted.uploaded_files, 1);
    assert_eq!(counted.uploaded_bytes, whole.len() as u64);

    // The same name again is a new key; aborted, nothing stays open in the backend.
    let (res, created) = uppy_call(
        &gw,
        Method::POST,
        &format!("{base}/s3/multipart"),
        Some(serde_json::json!({"filename": "clip.mp4", "type": "video/mp4"})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(created["key"], "up/clip (2).mp4");
    let gone = created["uploadId"].as_str().unwrap();
    assert_eq!(backend_uploads(&backend).await.len(), 1);
    let (res, _) = uppy_call(
        &gw,
        Method::DELETE,
        &format!("{base}/s3/multipart/{gone}?key=up%2Fclip%20%282%29.mp4"),
        None,
    )
    .await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert!(backend_uploads(&backend).await.is_empty());
    assert_eq!(backend_keys(&backend).await, ["media/up/clip.mp4"]);
}

/// Revoking a link aborts its unfinished uploads in the backend too.
#[tokio::test]
async fn revoking_a_link_aborts_its_backend_uploads() {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gw = gateway_app(&backend).await;
    gw.create_bucket("media").await;
    let link = postgate::links::new_link(
        "media",
        "up/",
        MIB as u64,
        None,
        None,
        Duration::from_secs(3600),
        ADMIN_AK,
    );
    let l = link.clone();
    gw.state
        .db
        .write(move |c| postgate::db::links::insert(c, &l))
        .await
        .unwrap();
    let base = format!("{}/-/u/{}", gw.base, link.token);
    let (res, _) = uppy_call(
        &gw,
        Method::POST,
        &format!("{base}/s3/multipart"),
        Some(serde_json::json!({"filename": "a.bin"})),
    )
    .await;
    res.assert_status(200);
    assert_eq!(backend_uploads(&backend).await.len(), 1);
    postgate::objects::link::revoke(&gw.state.db, &gw.state.uploads, &gw.state.store, &link.id)
        .await
        .unwrap();
    assert!(backend_uploads(&backend).await.is_empty());
}

/// A conditional Complete (`If-None-Match: *`) onto a taken key is refused: the object stays,
/// and so does the upload (in postgate and in the backend), which may then complete elsewhere
/// or be aborted. A Complete naming a part ETag that was never uploaded is InvalidPart.
#[tokio::test]
async fn a_refused_complete_keeps_the_object_and_the_upload() {
    let (backend, gw) = setup().await;
    gw.create_bucket("photos").await;
    let path = "/photos/taken.txt";
    gw.req(Method::PUT, path)
        .body(b"old".to_vec())
        .send()
        .await
        .assert_status(200);
    let id = create_upload(&gw, path, &[]).await;
    let res = put_part(&gw, path, &id, 1, b"new", &[]).await;
    res.assert_status(200);
    let etag = res.header("etag").unwrap().to_owned();
    let complete = |parts: String, cond: bool| {
        let mut req = gw
            .req(Method::POST, path)
            .query(&format!("uploadId={id}"))
            .body(parts);
        if cond {
            req = req.header("if-none-match", "*");
        }
        req.send()
    };
    complete(
        complete_body(&[(1, "\"00000000000000000000000000000000\"")]),
        false,
    )
    .await
    .assert_error(400, "InvalidPart");
    complete(complete_body(&[(1, &etag)]), true)
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(&gw.req(Method::GET, path).send().await.body[..], b"old");
    assert_eq!(backend_uploads(&backend).await.len(), 1);
    let res = complete(complete_body(&[(1, &etag)]), false).await;
    res.assert_status(200);
    assert_eq!(&gw.req(Method::GET, path).send().await.body[..], b"new");
    assert!(backend_uploads(&backend).await.is_empty());
}

/// S3 caps a key at 1024 bytes, and the backend's key is `{bucket}/{key}`: under the S3
/// backend a key that would pass the cap only as postgate's own is refused with
/// KeyTooLongError before its body is read, by every route that names a new key.
#[tokio::test]
async fn a_key_too_long_for_the_backend_is_refused_before_its_body() {
    let (backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    let long = "k".repeat(1024 - "bkt/".len() + 1);
    let res = gw
        .req(Method::PUT, &format!("/bkt/{long}"))
        .body(b"x".to_vec())
        .send()
        .await;
    res.assert_error(400, "KeyTooLongError");
    let res = gw
        .req(Method::POST, &format!("/bkt/{long}"))
        .query("uploads")
        .send()
        .await;
    res.assert_error(400, "KeyTooLongError");
    let req = PostPolicyRequest::new("bkt", KeySpec::Exact(long.clone()), 1000);
    let res = gw.post("bkt", &gw.form(&req), "text/plain", b"x").await;
    res.assert_error(400, "KeyTooLongError");
    // The longest key that fits is stored and read back.
    let fits = &long[1..];
    gw.req(Method::PUT, &format!("/bkt/{fits}"))
        .body(b"fits".to_vec())
        .send()
        .await
        .assert_status(200);
    let got = gw.req(Method::GET, &format!("/bkt/{fits}")).send().await;
    assert_eq!(&got.body[..], b"fits");
    assert_eq!(backend_keys(&backend).await, [format!("bkt/{fits}")]);
}

/// The backend keeps postgate's own `x-amz-meta-postgate-*` beside the client's metadata
/// within S3's 2 KiB: under the S3 backend a client's metadata and tagging may take 1,536
/// bytes, and more is MetadataTooLarge before the body, on PUT, POST and
/// CreateMultipartUpload alike.
#[tokio::test]
async fn client_metadata_leaves_room_for_postgates_own() {
    let (backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    // "x-amz-meta-" is not counted: the name "note" (4) and its value.
    let fits = "v".repeat(1536 - 4);
    let over = "v".repeat(1536 - 4 + 1);
    gw.req(Method::PUT, "/bkt/fits")
        .header("x-amz-meta-note", &fits)
        .body(b"x".to_vec())
        .send()
        .await
        .assert_status(200);
    let head = backend.head(&obj(CLUSTER, "bkt/fits")).await;
    assert_eq!(head.header("x-amz-meta-note"), Some(fits.as_str()));
    let res = gw
        .req(Method::PUT, "/bkt/over")
        .header("x-amz-meta-note", &over)
        .body(b"x".to_vec())
        .send()
        .await;
    res.assert_error(400, "MetadataTooLarge");
    let res = gw
        .req(Method::PUT, "/bkt/tagged")
        .header("x-amz-meta-note", &fits)
        .header("x-amz-tagging", "k=v")
        .body(b"x".to_vec())
        .send()
        .await;
    res.assert_error(400, "MetadataTooLarge");
    let res = gw
        .req(Method::POST, "/bkt/over-parts")
        .query("uploads")
        .header("x-amz-meta-note", &over)
        .send()
        .await;
    res.assert_error(400, "MetadataTooLarge");
    let req = PostPolicyRequest {
        metadata: vec![("note".into(), over.clone())],
        ..PostPolicyRequest::new("bkt", KeySpec::Exact("over-form".into()), 1000)
    };
    let res = gw.post("bkt", &gw.form(&req), "text/plain", b"x").await;
    res.assert_error(400, "MetadataTooLarge");
    assert_eq!(backend_keys(&backend).await, ["bkt/fits"]);
}

/// A presigned form lets its user pick any key under its prefix: one that climbs out of it with
/// `..` segments (or names itself with `.`) would, in the backend's URL, name another bucket's
/// object or another backend bucket. Refused with InvalidArgument, nothing stored anywhere.
#[tokio::test]
async fn a_form_key_with_dot_segments_is_refused() {
    let (backend, gw) = setup().await;
    gw.create_bucket("bkt").await;
    gw.create_bucket("other").await;
    let req = PostPolicyRequest::new("bkt", KeySpec::Prefix("up/".into()), 1000);
    for key in [
        "up/../../other/evil",
        "up/../../../escape",
        "up/./x",
        "up/..",
    ] {
        let mut fields = gw.form(&req);
        for (name, value) in fields.iter_mut() {
            if name == "key" {
                *value = key.to_owned();
            }
        }
        let res = gw.post("bkt", &fields, "text/plain", b"x").await;
        res.assert_error(400, "InvalidArgument");
    }
    let fine = gw.post("bkt", &gw.form(&req), "text/plain", b"ok").await;
    assert!(fine.status < 300, "{}", fine.text());
    assert_eq!(backend_keys(&backend).await, ["bkt/up/file.bin"]);
}
