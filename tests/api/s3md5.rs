//! The body's MD5 under `--backend s3` (docs/cluster.md 10.3): the gateway computes it only
//! for a client's `Content-MD5`, since the ETag it answers, stores and lists is the backend's.
//! A gateway with the S3 backend in front of a second postgate (filesystem store) as the
//! cluster, over real HTTP on 127.0.0.1. That the MD5 is skipped at all is proven by
//! `objects::write::tests::md5_only_where_it_is_needed`; here, that nothing a client sees
//! depends on it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use postgate::auth::sigv4;
use postgate::policy::sign_v4;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::helpers::*;
use crate::s3wire::Gateway;

const CLUSTER: &str = "cluster";
const MIB: usize = 1024 * 1024;
/// Bodies past this are streamed into a backend upload (and hashed, if at all, off the
/// async workers), below it held in memory and sent as one PutObject.
const INLINE: usize = 64 * 1024;

async fn setup() -> (TestApp, Gateway) {
    let backend = spawn_app().await;
    backend.create_bucket(CLUSTER).await;
    let gateway = Gateway::start_with(&backend, |c| c.inline_max_bytes = INLINE).await;
    gateway.create_bucket("bkt").await;
    (backend, gateway)
}

/// POSTs `data` as the file of an admin-signed form for `bkt/key`, with `extra` fields (the
/// policy names each of them, with any value).
async fn post(gw: &Gateway, key: &str, data: &[u8], extra: &[(&str, &str)]) -> Resp {
    let now = OffsetDateTime::now_utc();
    let date = sigv4::format_amz_date(now);
    let credential = format!("{ADMIN_AK}/{}/{REGION}/s3/aws4_request", &date[..8]);
    let expiration = (now + time::Duration::hours(1))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].000Z"
        ))
        .unwrap();
    let any: String = extra
        .iter()
        .map(|(n, _)| format!(r#"["starts-with", "${n}", ""], "#))
        .collect();
    let json = format!(
        r#"{{"expiration": "{expiration}", "conditions": [{{"bucket": "bkt"}}, {{"key": "{key}"}}, {any}{{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}}, {{"x-amz-date": "{date}"}}]}}"#
    );
    let policy = B64.encode(json);
    let signature = sign_v4(ADMIN_SK, &date[..8], REGION, &policy);
    let fields = [
        ("key", key),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        ("x-amz-credential", &credential),
        ("x-amz-date", &date),
        ("policy", &policy),
        ("x-amz-signature", &signature),
    ];
    let form = fields.iter().chain(extra).fold(Form::new(), |f, (n, v)| {
        f.text(n.to_string(), v.to_string())
    });
    let file = Part::bytes(data.to_vec()).file_name("f.bin");
    let res = gw
        .http
        .post(format!("{}/bkt", gw.base))
        .multipart(form.part("file", file))
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

/// The ETag the backend itself gives `bkt/key` (HEAD straight on the cluster).
async fn backend_etag(backend: &TestApp, key: &str) -> String {
    let head = backend.head(&obj(CLUSTER, &format!("bkt/{key}"))).await;
    head.assert_status(200);
    head.header("etag").unwrap().to_owned()
}

/// GET, HEAD and the listing through the gateway all give `bkt/key` the ETag `etag`, and GET
/// its bytes `data`.
async fn agrees(gw: &Gateway, key: &str, etag: &str, data: &[u8]) {
    let path = format!("/bkt/{key}");
    let got = gw.req(Method::GET, &path).send().await;
    got.assert_status(200);
    assert!(got.body[..] == data[..], "{key}: bytes differ");
    assert_eq!(got.header("etag"), Some(etag), "{key}: GET");
    let head = gw.req(Method::HEAD, &path).send().await;
    assert_eq!(head.header("etag"), Some(etag), "{key}: HEAD");
    let list = gw
        .req(Method::GET, "/bkt")
        .query(&format!("list-type=2&prefix={key}"))
        .send()
        .await;
    list.assert_status(200);
    assert_eq!(xml_tags(&list.text(), "ETag"), [etag], "{key}: list");
}

/// PUT and POST bodies without `Content-MD5`, held in memory and streamed past it (one
/// backend PutObject, a backend multipart upload), answer the backend's ETag, and reads and
/// the listing agree with it; with a correct `Content-MD5` likewise.
#[tokio::test]
async fn puts_and_posts_without_content_md5_answer_the_backends_etag() {
    let (backend, gw) = setup().await;
    for (i, size) in [1000, 2 * MIB, 12 * MIB].into_iter().enumerate() {
        for md5 in [false, true] {
            let data = pattern(size, i as u64 * 2 + md5 as u64);
            let key = format!("put-{size}-{md5}");
            let mut put = gw.req(Method::PUT, &format!("/bkt/{key}"));
            if md5 {
                put = put.header("content-md5", &content_md5(&data));
            }
            let res = put.body(data.clone()).send().await;
            res.assert_status(200);
            let etag = res.header("etag").unwrap().to_owned();
            assert_eq!(etag, backend_etag(&backend, &key).await, "{key}");
            if size > 8 * MIB {
                // Past one backend part: the backend's multipart ETag.
                assert!(etag.contains('-'), "{key}: {etag}");
            } else {
                assert_eq!(etag, etag_of(&data), "{key}");
            }
            agrees(&gw, &key, &etag, &data).await;

            let key = format!("post-{size}-{md5}");
            let sum = content_md5(&data);
            let extra: &[(&str, &str)] = if md5 { &[("Content-MD5", &sum)] } else { &[] };
            let res = post(&gw, &key, &data, extra).await;
            res.assert_status(204);
            let etag = res.header("etag").unwrap().to_owned();
            assert_eq!(etag, backend_etag(&backend, &key).await, "{key}");
            agrees(&gw, &key, &etag, &data).await;
        }
    }
}

/// A wrong `Content-MD5` is still checked on every path: 400 BadDigest, nothing stored in the
/// backend (no object, no open upload), an earlier version kept.
#[tokio::test]
async fn a_wrong_content_md5_is_bad_digest_and_stores_nothing() {
    let (backend, gw) = setup().await;
    let old = pattern(100, 9);
    gw.req(Method::PUT, "/bkt/kept")
        .body(old.clone())
        .send()
        .await
        .assert_status(200);
    let wrong = content_md5(b"something else");
    for size in [1000, 2 * MIB, 12 * MIB] {
        let data = pattern(size, size as u64);
        for key in [format!("bad-{size}"), "kept".to_owned()] {
            let res = gw
                .req(Method::PUT, &format!("/bkt/{key}"))
                .header("content-md5", &wrong)
                .body(data.clone())
                .send()
                .await;
            res.assert_error(400, "BadDigest");
            let res = post(&gw, &key, &data, &[("Content-MD5", &wrong)]).await;
            res.assert_error(400, "BadDigest");
        }
    }
    let keys = backend
        .req(Method::GET, &format!("/{CLUSTER}"))
        .query("list-type=2")
        .send()
        .await;
    assert_eq!(xml_tags(&keys.text(), "Key"), ["bkt/kept"]);
    let uploads = backend
        .req(Method::GET, &format!("/{CLUSTER}"))
        .query("uploads")
        .send()
        .await;
    assert!(xml_tags(&uploads.text(), "UploadId").is_empty());
    agrees(&gw, "kept", &etag_of(&old), &old).await;
}

/// UploadPart without `Content-MD5` answers the backend's part ETag, which ListParts shows and
/// CompleteMultipartUpload accepts; a part with a correct `Content-MD5` beside it likewise,
/// one with a wrong one is BadDigest. The object's ETag is the backend's.
#[tokio::test]
async fn parts_without_content_md5_complete() {
    let (backend, gw) = setup().await;
    let path = "/bkt/parts";
    let res = gw.req(Method::POST, path).query("uploads").send().await;
    res.assert_status(200);
    let id = xml_tag(&res.text(), "UploadId").unwrap();
    let one = pattern(5 * MIB, 1);
    let two = pattern(1000, 2);
    let part = |n: u32, data: &[u8], md5: Option<String>| {
        let mut req = gw
            .req(Method::PUT, path)
            .query(&format!("partNumber={n}&uploadId={id}"))
            .body(data.to_vec());
        if let Some(md5) = md5 {
            req = req.header("content-md5", &md5);
        }
        req.send()
    };
    let res = part(1, &one, None).await;
    res.assert_status(200);
    let etag1 = res.header("etag").unwrap().to_owned();
    assert_eq!(etag1, etag_of(&one), "the backend's part ETag is its MD5");
    part(2, &two, Some(content_md5(b"x")))
        .await
        .assert_error(400, "BadDigest");
    let res = part(2, &two, Some(content_md5(&two))).await;
    res.assert_status(200);
    let etag2 = res.header("etag").unwrap().to_owned();
    assert_eq!(etag2, etag_of(&two));
    let listed = gw
        .req(Method::GET, path)
        .query(&format!("uploadId={id}"))
        .send()
        .await;
    listed.assert_status(200);
    assert_eq!(
        xml_tags(&listed.text(), "ETag"),
        [etag1.clone(), etag2.clone()]
    );
    let body = format!(
        "<CompleteMultipartUpload>\
         <Part><PartNumber>1</PartNumber><ETag>{etag1}</ETag></Part>\
         <Part><PartNumber>2</PartNumber><ETag>{etag2}</ETag></Part>\
         </CompleteMultipartUpload>"
    );
    let res = gw
        .req(Method::POST, path)
        .query(&format!("uploadId={id}"))
        .body(body)
        .send()
        .await;
    res.assert_status(200);
    let etag = xml_tag(&res.text(), "ETag").unwrap();
    assert!(etag.trim_matches('"').ends_with("-2"), "{etag}");
    assert_eq!(etag, backend_etag(&backend, "parts").await);
    let mut whole = one;
    whole.extend_from_slice(&two);
    agrees(&gw, "parts", &etag, &whole).await;
}
