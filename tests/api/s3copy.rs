//! Copies, lifecycle expiry and the sweep of orphan uploads under `--backend s3`
//! (docs/cluster.md section 9): a postgate gateway with the S3 backend in front of a second
//! postgate (filesystem store) as the cluster, over real HTTP on 127.0.0.1. CopyObject and
//! UploadPartCopy are the backend's own server-side copies, with postgate's checks (read on the
//! source, its conditions, the destination's condition, the quota) made before them and its
//! event and `object_extras` row after.

use std::time::Duration;

use postgate::db::buckets::Perm;
use postgate::storage::cluster::NewVersion;
use reqwest::Method;

use crate::helpers::*;
use crate::s3wire::Gateway;

/// The backend bucket every gateway stores into.
const CLUSTER: &str = "cluster";
const MIB: usize = 1024 * 1024;

impl Gateway {
    async fn put(&self, path: &str, data: &[u8]) -> String {
        let res = self.req(Method::PUT, path).body(data.to_vec()).send().await;
        res.assert_status(200);
        res.header("etag").unwrap().to_owned()
    }

    fn copy(&self, dest: &str, source: &str) -> Req<'_> {
        self.req(Method::PUT, dest)
            .header("x-amz-copy-source", source)
    }

    /// A non-admin key with `grants` (bucket, permission).
    async fn key(&self, name: &str, grants: &[(&str, Perm)]) -> Creds {
        let (ak, sk) = postgate::db::keys::generate();
        let (n, a, s) = (name.to_owned(), ak.clone(), sk.clone());
        self.state
            .db
            .write(move |c| postgate::db::keys::insert(c, &n, &a, &s, false))
            .await
            .unwrap();
        for (bucket, perm) in grants {
            let (b, a, p) = (bucket.to_string(), ak.clone(), *perm);
            assert!(
                self.state
                    .db
                    .write(move |c| postgate::db::buckets::allow(c, &b, &a, p))
                    .await
                    .unwrap()
            );
        }
        Creds { ak, sk }
    }

    /// Every create and remove in `bucket` is recorded for a webhook that never answers, so
    /// the outbox keeps them ([`Gateway::events`]).
    async fn watch(&self, bucket: &str) {
        let hook = postgate::db::events::WebhookRecord {
            name: "hook".into(),
            url: "http://127.0.0.1:9/".into(),
            secret: "s".repeat(32),
            batch: 1,
        };
        self.state
            .db
            .write(move |c| postgate::db::events::put_webhook(c, &hook))
            .await
            .unwrap();
        let xml = "<NotificationConfiguration><QueueConfiguration><Id>c</Id>\
                   <Queue>arn:postgate:sqs::hook:webhook</Queue>\
                   <Event>s3:ObjectCreated:*</Event><Event>s3:ObjectRemoved:*</Event>\
                   <Event>s3:LifecycleExpiration:*</Event>\
                   </QueueConfiguration></NotificationConfiguration>";
        self.req(Method::PUT, &format!("/{bucket}"))
            .query("notification")
            .body(xml)
            .send()
            .await
            .assert_status(200);
    }

    /// (key, event name) of every event recorded, oldest first.
    async fn events(&self) -> Vec<(String, String)> {
        self.state
            .db
            .read(|c| {
                let mut stmt = c.prepare("SELECT key, name FROM outbox ORDER BY id")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap()
    }
}

async fn setup(tweak: impl FnOnce(&mut postgate::Config)) -> (TestApp, Gateway) {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gateway = Gateway::start_with(&backend, tweak).await;
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

/// The backend bucket's open multipart uploads.
async fn backend_uploads(backend: &TestApp) -> Vec<String> {
    let res = backend
        .req(Method::GET, &format!("/{CLUSTER}"))
        .query("uploads")
        .send()
        .await;
    res.assert_status(200);
    xml_tags(&res.text(), "UploadId")
}

/// A copy of a small (inline) and of a large (past `--inline-max`, sent as an upload) object,
/// by a key that may read the source and write the destination: the backend holds the copies
/// under `{bucket}/{key}` with the copier as owner, the bytes and metadata read back through the
/// gateway, the answer's ETag is the copy's, and the `ObjectCreated:Copy` event is recorded.
#[tokio::test]
async fn copies_small_and_large_objects_inside_the_backend() {
    let (backend, gw) = setup(|c| c.inline_max_bytes = 16 * 1024).await;
    gw.create_bucket("src").await;
    gw.create_bucket("dst").await;
    gw.watch("dst").await;
    let small = b"small body".to_vec();
    let large = pattern(MIB + 7, 3);
    gw.req(Method::PUT, "/src/small.txt")
        .header("content-type", "text/plain")
        .header("x-amz-meta-colour", "blue")
        .body(small.clone())
        .send()
        .await
        .assert_status(200);
    let large_etag = gw.put("/src/large.bin", &large).await;
    let copier = gw
        .key("copier", &[("src", Perm::Read), ("dst", Perm::Write)])
        .await;

    for (source, dest, data) in [
        ("/src/small.txt", "/dst/c/small.txt", &small),
        ("/src/large.bin", "/dst/c/large.bin", &large),
    ] {
        let res = gw.copy(dest, source).creds(&copier).send().await;
        res.assert_status(200);
        let etag = xml_tag(&res.text(), "ETag").map(|e| unescape(&e));
        assert_eq!(etag.as_deref(), Some(etag_of(data).as_str()), "{dest}");
        let got = gw.req(Method::GET, dest).send().await;
        got.assert_status(200);
        assert_eq!(&got.body[..], &data[..], "{dest}");
        let stored = backend
            .get(&obj(
                CLUSTER,
                &format!("dst{}", dest.trim_start_matches("/dst")),
            ))
            .await;
        stored.assert_status(200);
        assert_eq!(
            stored.header("x-amz-meta-postgate-owner"),
            Some(copier.ak.as_str())
        );
        assert!(stored.header("x-amz-meta-postgate-write").is_some());
    }
    assert_eq!(large_etag, etag_of(&large));
    let head = gw.req(Method::HEAD, "/dst/c/small.txt").send().await;
    assert_eq!(head.header("content-type"), Some("text/plain"));
    assert_eq!(head.header("x-amz-meta-colour"), Some("blue"));
    assert!(head.header("x-amz-meta-postgate-owner").is_none());
    assert_eq!(
        gw.events().await,
        [
            ("c/small.txt".to_owned(), "ObjectCreated:Copy".to_owned()),
            ("c/large.bin".to_owned(), "ObjectCreated:Copy".to_owned()),
        ]
    );
    assert_eq!(backend_uploads(&backend).await, Vec::<String>::new());
}

/// `x-amz-metadata-directive: REPLACE`: the copy has the request's headers and metadata, not the
/// source's; with `x-amz-checksum-algorithm` its checksum is computed over the bytes (streamed
/// from the backend) and read back.
#[tokio::test]
async fn replaced_metadata_and_a_computed_checksum_are_read_back() {
    let (_backend, gw) = setup(|_| {}).await;
    gw.create_bucket("bkt").await;
    let data = pattern(200_000, 9);
    gw.req(Method::PUT, "/bkt/src.bin")
        .header("content-type", "application/x-old")
        .header("x-amz-meta-old", "1")
        .body(data.clone())
        .send()
        .await
        .assert_status(200);
    gw.copy("/bkt/new.bin", "/bkt/src.bin")
        .header("x-amz-metadata-directive", "REPLACE")
        .header("content-type", "application/x-new")
        .header("x-amz-meta-new", "2")
        .send()
        .await
        .assert_status(200);
    let head = gw.req(Method::HEAD, "/bkt/new.bin").send().await;
    head.assert_status(200);
    assert_eq!(head.header("content-type"), Some("application/x-new"));
    assert_eq!(head.header("x-amz-meta-new"), Some("2"));
    assert!(head.header("x-amz-meta-old").is_none());

    let res = gw
        .copy("/bkt/summed.bin", "/bkt/src.bin")
        .header("x-amz-checksum-algorithm", "CRC32")
        .send()
        .await;
    res.assert_status(200);
    let want = checksum(postgate::auth::checksum::ChecksumAlgorithm::Crc32, &data);
    assert_eq!(xml_tag(&res.text(), "ChecksumCRC32"), Some(want.clone()));
    let head = gw
        .req(Method::HEAD, "/bkt/summed.bin")
        .header("x-amz-checksum-mode", "ENABLED")
        .send()
        .await;
    assert_eq!(head.header("x-amz-checksum-crc32"), Some(want.as_str()));
    assert_eq!(
        &gw.req(Method::GET, "/bkt/summed.bin").send().await.body[..],
        &data[..]
    );
}

/// The source's conditions (checked by postgate on its own HEAD: Ceph 16 honours only one of
/// them) and the destination's `If-None-Match: *` refuse with 412, and nothing is written.
#[tokio::test]
async fn refused_copy_conditions_store_nothing() {
    let (backend, gw) = setup(|_| {}).await;
    gw.create_bucket("bkt").await;
    let etag = gw.put("/bkt/src", b"source").await;
    gw.put("/bkt/taken", b"taken").await;
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    for (name, value) in [
        (
            "x-amz-copy-source-if-match",
            "\"0123456789abcdef0123456789abcdef\"",
        ),
        ("x-amz-copy-source-if-none-match", etag.as_str()),
        ("x-amz-copy-source-if-unmodified-since", past.as_str()),
    ] {
        gw.copy("/bkt/dest", "/bkt/src")
            .header(name, value)
            .send()
            .await
            .assert_error(412, "PreconditionFailed");
    }
    gw.copy("/bkt/taken", "/bkt/src")
        .header("if-none-match", "*")
        .send()
        .await
        .assert_error(412, "PreconditionFailed");
    assert_eq!(
        gw.req(Method::GET, "/bkt/taken").send().await.text(),
        "taken"
    );
    assert_eq!(backend_keys(&backend).await, ["bkt/src", "bkt/taken"]);
    // The right conditions copy.
    gw.copy("/bkt/dest", "/bkt/src")
        .header("x-amz-copy-source-if-match", &etag)
        .header("if-none-match", "*")
        .send()
        .await
        .assert_status(200);
    assert_eq!(
        gw.req(Method::GET, "/bkt/dest").send().await.text(),
        "source"
    );
}

/// A key without read on the source is refused (403), a copy past the destination's quota too
/// (nothing in the backend), and a source key with a `..` segment is refused before the backend.
#[tokio::test]
async fn a_copy_needs_read_on_the_source_and_room_in_the_quota() {
    let (backend, gw) = setup(|_| {}).await;
    gw.create_bucket("src").await;
    gw.create_bucket("dst").await;
    gw.put("/src/a", &pattern(50_000, 1)).await;
    let writer = gw.key("writer", &[("dst", Perm::Write)]).await;
    gw.copy("/dst/a", "/src/a")
        .creds(&writer)
        .send()
        .await
        .assert_error(403, "AccessDenied");
    let quota = postgate::db::quota::Quota {
        max_size: Some(10_000),
        max_objects: None,
    };
    gw.state
        .write_bucket(move |c| postgate::db::quota::set(c, "dst", quota))
        .await
        .unwrap();
    let res = gw.copy("/dst/a", "/src/a").send().await;
    assert_eq!(
        res.code().as_deref(),
        Some("XPostgateQuotaExceeded"),
        "{}",
        res.text()
    );
    gw.copy("/dst/a", "/src/x/../a")
        .send()
        .await
        .assert_error(400, "InvalidArgument");
    assert_eq!(backend_keys(&backend).await, ["src/a"]);
}

/// UploadPartCopy: a client's multipart upload made of two ranges of a source copied inside the
/// backend (the second given as the rest of the source) completes into the same bytes.
#[tokio::test]
async fn upload_part_copy_round_trips() {
    let (backend, gw) = setup(|_| {}).await;
    gw.create_bucket("bkt").await;
    let data = pattern(6 * MIB + 11, 4);
    gw.put("/bkt/src.bin", &data).await;
    let created = gw
        .req(Method::POST, "/bkt/joined.bin")
        .query("uploads")
        .send()
        .await;
    created.assert_status(200);
    let id = xml_tag(&created.text(), "UploadId").unwrap();
    let split = 5 * MIB;
    let mut etags = Vec::new();
    for (number, range) in [
        (1, format!("bytes=0-{}", split - 1)),
        (2, format!("bytes={split}-{}", data.len() - 1)),
    ] {
        let res = gw
            .copy("/bkt/joined.bin", "/bkt/src.bin")
            .query(&format!("partNumber={number}&uploadId={id}"))
            .header("x-amz-copy-source-range", &range)
            .send()
            .await;
        res.assert_status(200);
        etags.push(unescape(&xml_tag(&res.text(), "ETag").unwrap()));
    }
    assert_eq!(etags[0], etag_of(&data[..split]));
    let parts: String = etags
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>",
                i + 1
            )
        })
        .collect();
    gw.req(Method::POST, "/bkt/joined.bin")
        .query(&format!("uploadId={id}"))
        .body(format!(
            "<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>"
        ))
        .send()
        .await
        .assert_status(200);
    let got = gw.req(Method::GET, "/bkt/joined.bin").send().await;
    got.assert_status(200);
    assert_eq!(got.body.len(), data.len());
    assert!(got.body[..] == data[..]);
    assert_eq!(backend_uploads(&backend).await, Vec::<String>::new());
}

/// A source larger than the client's `copy_part_size` is copied as a backend multipart upload
/// of UploadPartCopy ranges (here 5 MiB, for a 12 MiB source: three parts); a source replaced
/// since its HEAD fails the copy and leaves neither the key nor an upload.
#[tokio::test]
async fn a_large_source_is_copied_in_ranges() {
    let backend_app = spawn_app().await;
    backend_app.create_bucket(CLUSTER).await;
    let spool = tempfile::tempdir().unwrap();
    let client = postgate::storage::s3::Backend::new(
        &backend_app.base,
        CLUSTER,
        REGION,
        ADMIN_AK,
        ADMIN_SK,
        postgate::storage::s3::Options {
            copy_part_size: 5 * MIB as u64,
            spool_dir: spool.path().to_owned(),
            ..Default::default()
        },
    )
    .unwrap();
    let store = postgate::storage::Storage::S3(client);
    let data = pattern(12 * MIB, 8);
    let etag = backend_app
        .put_object(CLUSTER, "bkt/src", data.clone())
        .await;
    let meta = postgate::db::objects::ObjectMeta {
        owner: ADMIN_AK.into(),
        acl: "private".into(),
        ..Default::default()
    };
    let copied = store
        .publish(
            "b",
            "dst",
            NewVersion::Copy {
                key: "bkt/src".into(),
                etag: etag.clone(),
                size: data.len() as u64,
            },
            &meta,
            None,
        )
        .await
        .unwrap();
    assert!(copied.etag.ends_with("-3\""), "{}", copied.etag);
    assert_eq!(copied.size, data.len() as u64);
    let got = backend_app.get(&obj(CLUSTER, "b/dst")).await;
    assert!(got.body[..] == data[..]);
    assert_eq!(got.header("x-amz-meta-postgate-owner"), Some(ADMIN_AK));

    let stale = store
        .publish(
            "b",
            "stale",
            NewVersion::Copy {
                key: "bkt/src".into(),
                etag: "\"0123456789abcdef0123456789abcdef\"".into(),
                size: data.len() as u64,
            },
            &meta,
            None,
        )
        .await;
    assert!(stale.is_err(), "{stale:?}");
    backend_app
        .get(&obj(CLUSTER, "b/stale"))
        .await
        .assert_error(404, "NoSuchKey");
    assert_eq!(backend_uploads(&backend_app).await, Vec::<String>::new());
}

/// Lifecycle expiry under S3: the rule's prefix is listed in the backend and what is old enough
/// is deleted there, with the `LifecycleExpiration:Delete` event; a key overwritten since is
/// spared (its listed version is fresh); an incomplete upload past its rule is aborted in the
/// backend too.
#[tokio::test]
async fn lifecycle_expiry_deletes_in_the_backend_and_spares_an_overwrite() {
    let day = Duration::from_secs(2);
    let (backend, gw) = setup(|c| c.lifecycle_debug_day = Some(Duration::from_secs(600))).await;
    gw.create_bucket("bkt").await;
    gw.watch("bkt").await;
    gw.put("/bkt/old/a", b"a").await;
    gw.put("/bkt/old/b", b"b").await;
    gw.put("/bkt/keep/c", b"c").await;
    let created = gw
        .req(Method::POST, "/bkt/old/up")
        .query("uploads")
        .send()
        .await;
    created.assert_status(200);
    let rules = r#"<LifecycleConfiguration>
      <Rule><ID>old</ID><Filter><Prefix>old/</Prefix></Filter><Status>Enabled</Status>
        <Expiration><Days>1</Days></Expiration>
        <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload>
      </Rule></LifecycleConfiguration>"#;
    gw.req(Method::PUT, "/bkt")
        .query("lifecycle")
        .body(rules)
        .send()
        .await
        .assert_status(200);
    tokio::time::sleep(day + Duration::from_millis(1200)).await;
    gw.put("/bkt/old/b", b"fresh").await;
    let origin = gw.state.lifecycle_origin();
    let swept = postgate::objects::lifecycle::sweep(
        &gw.state.db,
        &gw.state.uploads,
        &gw.state.store,
        Some(day),
        &origin,
    )
    .await
    .unwrap();
    assert_eq!(swept.objects, 1, "{swept:?}");
    assert_eq!(swept.uploads, 1, "{swept:?}");
    assert_eq!(backend_keys(&backend).await, ["bkt/keep/c", "bkt/old/b"]);
    assert_eq!(
        gw.req(Method::GET, "/bkt/old/b").send().await.text(),
        "fresh"
    );
    assert_eq!(backend_uploads(&backend).await, Vec::<String>::new());
    let events = gw.events().await;
    assert!(
        events.contains(&("old/a".into(), "LifecycleExpiration:Delete".into())),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|(k, n)| k == "old/b" && n.starts_with("Lifecycle")),
        "{events:?}"
    );
}

/// The sweep of orphan backend uploads: one no `uploads` row names and older than the bound
/// (`--multipart-expiry`) is aborted; a younger stray one, and an old one a client's upload row
/// names, stay.
#[tokio::test]
async fn the_orphan_sweep_aborts_only_old_unnamed_uploads() {
    let bound = Duration::from_secs(2);
    let (backend, gw) = setup(|c| c.multipart_expiry = bound).await;
    gw.create_bucket("bkt").await;
    let stray = |key: &'static str| {
        let backend = &backend;
        async move {
            let res = backend
                .req(Method::POST, &obj(CLUSTER, key))
                .query("uploads")
                .send()
                .await;
            res.assert_status(200);
            xml_tag(&res.text(), "UploadId").unwrap()
        }
    };
    let old_stray = stray("bkt/stray-old").await;
    let client = gw
        .req(Method::POST, "/bkt/client")
        .query("uploads")
        .send()
        .await;
    client.assert_status(200);
    let client_id = xml_tag(&client.text(), "UploadId").unwrap();
    let mut open = backend_uploads(&backend).await;
    assert_eq!(open.len(), 2, "{open:?}");
    open.retain(|id| *id != old_stray);
    let backend_of_client = open.pop().unwrap();
    tokio::time::sleep(bound + Duration::from_millis(1100)).await;
    let young_stray = stray("bkt/stray-young").await;
    gw.state.sweep_backend_uploads().await;
    let mut left = backend_uploads(&backend).await;
    left.sort();
    let mut want = vec![backend_of_client, young_stray];
    want.sort();
    assert_eq!(left, want);
    // The client's upload still works.
    gw.req(Method::GET, "/bkt/client")
        .query(&format!("uploadId={client_id}"))
        .send()
        .await
        .assert_status(200);
}

/// By hand (`--run-ignored only --no-capture`): 4 concurrent PUTs of 64 MiB through a gateway
/// (the body hashed for its ETag as it streams into the backend) while small GETs run; prints
/// the wall time and the slowest small GET (an async worker busy hashing delays it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timing_of_large_puts_through_the_gateway() {
    let (_backend, gw) = setup(|_| {}).await;
    gw.create_bucket("bkt").await;
    gw.put("/bkt/small", b"small").await;
    let data = bytes::Bytes::from(pattern(64 * MIB, 5));
    let gw = std::sync::Arc::new(gw);
    let started = std::time::Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (gw, done) = (gw.clone(), done.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                gw.req(Method::GET, "/bkt/small")
                    .send()
                    .await
                    .assert_status(200);
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        })
    };
    let puts: Vec<_> = (0..4)
        .map(|i| {
            let (gw, data) = (gw.clone(), data.clone());
            tokio::spawn(async move { gw.put(&format!("/bkt/big{i}"), &data).await })
        })
        .collect();
    for put in puts {
        put.await.unwrap();
    }
    let wall = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = prober.await.unwrap();
    println!(
        "4 x 64 MiB PUT through the gateway: {wall:?}; slowest small GET meanwhile: {worst:?}"
    );
}
