//! How many requests the cluster takes per upload through a `--backend s3` gateway
//! (docs/cluster.md section 10.3): a small PutObject or POST form is one backend PutObject, with
//! no HEAD after it, and what the gateway answers and stores is what it was when it read the
//! object back. The cluster is a second postgate (filesystem store) whose own `/-/metrics`
//! count the requests it served, by S3 operation.

use std::collections::BTreeMap;
use std::time::Duration;

use postgate::policy::{KeySpec, PostPolicyRequest};
use reqwest::Method;

use crate::helpers::*;
use crate::s3wire::Gateway;

/// The backend bucket `Gateway::start_with` stores into (`s3wire`'s `CLUSTER`).
const CLUSTER: &str = "cluster";

/// The cluster's `postgate_requests_total` by operation (all statuses together), the scrapes
/// of the metrics left out.
async fn served(backend: &TestApp) -> BTreeMap<String, f64> {
    // A request is counted once its answer has gone out: let the last one land.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let text = backend.get("/-/metrics").await.text();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("postgate_requests_total{operation=\"") else {
            continue;
        };
        let (op, rest) = rest.split_once('"').unwrap();
        if op == "metrics" {
            // The readings themselves.
            continue;
        }
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        *out.entry(op.to_owned()).or_default() += value;
    }
    out
}

/// What the cluster served between two [`served`] readings (operations that did not move left
/// out).
fn since(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n != 0.0)
        .collect()
}

fn only(op: &str, n: usize) -> BTreeMap<String, f64> {
    BTreeMap::from([(op.to_owned(), n as f64)])
}

/// A POST form for `bucket` with the exact key `key`, issued by the crate for the gateway.
async fn post(gw: &Gateway, bucket: &str, key: &str, data: &[u8]) -> Resp {
    let req = PostPolicyRequest::new(bucket, KeySpec::Exact(key.into()), 1 << 20);
    gw.post(bucket, &gw.form(&req), "application/octet-stream", data)
        .await
}

/// A started gateway in front of a started cluster, its bucket `bkt` made and one object written
/// (so that whatever a first request does once is behind us).
async fn setup() -> (TestApp, Gateway) {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gw = Gateway::start_with(&backend, |_| {}).await;
    gw.create_bucket("bkt").await;
    gw.req(Method::PUT, "/bkt/warm")
        .body(b"w".to_vec())
        .send()
        .await
        .assert_status(200);
    (backend, gw)
}

#[tokio::test]
async fn a_small_put_or_post_is_one_backend_request() {
    let (backend, gw) = setup().await;
    let n = 5;

    // 4 KiB PUTs: held in memory, one PutObject from bytes.
    let before = served(&backend).await;
    for i in 0..n {
        gw.req(Method::PUT, &format!("/bkt/small-{i}"))
            .body(pattern(4096, i as u64))
            .send()
            .await
            .assert_status(200);
    }
    assert_eq!(
        since(&before, &served(&backend).await),
        only("PutObject", n)
    );

    // 200 KB PUTs: past the inline size, spooled by an Uploader, still one part: one PutObject.
    let before = served(&backend).await;
    for i in 0..n {
        gw.req(Method::PUT, &format!("/bkt/medium-{i}"))
            .body(pattern(200_000, i as u64))
            .send()
            .await
            .assert_status(200);
    }
    assert_eq!(
        since(&before, &served(&backend).await),
        only("PutObject", n)
    );

    // A conditional create: the condition rides on the one PutObject.
    let before = served(&backend).await;
    gw.req(Method::PUT, "/bkt/create-only")
        .header("if-none-match", "*")
        .body(pattern(4096, 99))
        .send()
        .await
        .assert_status(200);
    assert_eq!(
        since(&before, &served(&backend).await),
        only("PutObject", 1)
    );

    // POST forms.
    let before = served(&backend).await;
    for i in 0..n {
        post(
            &gw,
            "bkt",
            &format!("form-{i}"),
            &pattern(4096, 50 + i as u64),
        )
        .await
        .assert_status(204);
    }
    assert_eq!(
        since(&before, &served(&backend).await),
        only("PutObject", n)
    );
}

/// What a small upload answers, and what HEAD, GET, the ACL and the listing show through the
/// gateway afterwards, is what the cluster holds: the ETag the gateway kept from PutObject's
/// answer is the one HEAD gives (so the object's `object_extras` row, ACL included, applies).
#[tokio::test]
async fn answers_after_a_small_upload_match_the_cluster() {
    let (backend, gw) = setup().await;
    for (key, len, seed) in [("put4k", 4096, 1), ("put200k", 200_000, 2)] {
        let data = pattern(len, seed);
        let res = gw
            .req(Method::PUT, &format!("/bkt/{key}"))
            .header("x-amz-acl", "public-read")
            .header("content-type", "text/plain")
            .header("x-amz-meta-colour", "blue")
            .body(data.clone())
            .send()
            .await;
        res.assert_status(200);
        assert_eq!(res.header("etag"), Some(etag_of(&data).as_str()));

        let head = gw.req(Method::HEAD, &format!("/bkt/{key}")).send().await;
        head.assert_status(200);
        let raw = backend.head(&obj(CLUSTER, &format!("bkt/{key}"))).await;
        raw.assert_status(200);
        assert_eq!(head.header("etag"), raw.header("etag"));
        assert_eq!(head.header("etag"), Some(etag_of(&data).as_str()));
        assert_eq!(
            head.header("content-length"),
            Some(len.to_string().as_str())
        );
        assert_eq!(head.header("last-modified"), raw.header("last-modified"));
        assert_eq!(head.header("content-type"), Some("text/plain"));
        assert_eq!(head.header("x-amz-meta-colour"), Some("blue"));

        let got = gw.req(Method::GET, &format!("/bkt/{key}")).send().await;
        got.assert_status(200);
        assert_eq!(&got.body[..], &data[..]);

        // The ACL lives in the gateway's `object_extras` row, kept under the ETag PutObject
        // answered: it applies only if that is the ETag HEAD gives.
        let acl = gw
            .req(Method::GET, &format!("/bkt/{key}"))
            .query("acl")
            .send()
            .await;
        acl.assert_status(200);
        assert!(acl.text().contains("AllUsers"), "{}", acl.text());
        let anonymous = gw
            .http
            .get(format!("{}/bkt/{key}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 200);
    }
    let data = pattern(4096, 3);
    post(&gw, "bkt", "form", &data).await.assert_status(204);
    let head = gw.req(Method::HEAD, "/bkt/form").send().await;
    head.assert_status(200);
    assert_eq!(head.header("etag"), Some(etag_of(&data).as_str()));

    let list = gw
        .req(Method::GET, "/bkt")
        .query("list-type=2")
        .send()
        .await;
    list.assert_status(200);
    let text = list.text();
    assert_eq!(
        xml_tags(&text, "Key"),
        ["form", "put200k", "put4k", "warm"],
        "{text}"
    );
    let etags = xml_tags(&text, "ETag");
    assert_eq!(etags[0], etag_of(&data));
    assert_eq!(etags[2], etag_of(&pattern(4096, 1)));
}
