//! Events and webhooks over real HTTP: a receiver on 127.0.0.1 (a small axum server in the test)
//! gets each operation's S3 event, signed; a receiver that is down, or answers 500, still gets
//! every event; a refused upload makes none; bucket notification configuration through S3's API.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::helpers::*;

pub(crate) const SECRET: &str = "whsec-test-0123456789";

/// One request the receiver answered 2xx.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    /// `x-postgate-delivery`: the same on every retry of one delivery.
    pub(crate) delivery: String,
    pub(crate) timestamp: String,
    pub(crate) signature: String,
    pub(crate) body: String,
    pub(crate) json: Value,
}

impl Received {
    pub(crate) fn record(&self) -> &Value {
        &self.json["Records"][0]
    }
}

/// A webhook receiver on 127.0.0.1: answers `status` and keeps what it answered 2xx; the first
/// `stall` requests it never answers, the next `fail` it answers 500.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) got: Arc<Mutex<Vec<Received>>>,
    pub(crate) status: Arc<AtomicU16>,
    pub(crate) hits: Arc<AtomicUsize>,
    /// When each request arrived.
    pub(crate) hit_at: Arc<Mutex<Vec<tokio::time::Instant>>>,
    pub(crate) stall: Arc<AtomicUsize>,
    pub(crate) fail: Arc<AtomicUsize>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub(crate) fn on(listener: TcpListener) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let hit_at = Arc::new(Mutex::new(Vec::new()));
        let stall = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(AtomicUsize::new(0));
        let (g, s, h, at, st, f) = (
            got.clone(),
            status.clone(),
            hits.clone(),
            hit_at.clone(),
            stall.clone(),
            fail.clone(),
        );
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (g, s, h, at, st, f) = (
                    g.clone(),
                    s.clone(),
                    h.clone(),
                    at.clone(),
                    st.clone(),
                    f.clone(),
                );
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    at.lock().unwrap().push(tokio::time::Instant::now());
                    if st
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        std::future::pending::<()>().await;
                    }
                    let status = match f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    {
                        Ok(_) => 500,
                        Err(_) => s.load(Ordering::SeqCst),
                    };
                    if status < 300 {
                        let header = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        g.lock().unwrap().push(Received {
                            delivery: header("x-postgate-delivery"),
                            timestamp: header("x-postgate-timestamp"),
                            signature: header("x-postgate-signature"),
                            json: serde_json::from_str(&body).unwrap_or_default(),
                            body,
                        });
                    }
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            got,
            status,
            hits,
            hit_at,
            stall,
            fail,
            task,
        }
    }

    /// Waits (up to 20 s) until `n` events arrived; returns them in arrival order.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} events arrived: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Declares target `name` → `url` the way `postgate webhook add` does (in the same database).
pub(crate) async fn declare(app: &TestApp, name: &str, url: &str) {
    declare_batched(app, name, url, 1).await;
}

/// [`declare`] with `--batch`.
async fn declare_batched(app: &TestApp, name: &str, url: &str, batch: u32) {
    let w = postgate::db::events::WebhookRecord {
        name: name.into(),
        url: url.into(),
        secret: SECRET.into(),
        batch,
    };
    app.state
        .db
        .write(move |c| postgate::db::events::put_webhook(c, &w))
        .await
        .unwrap();
}

pub(crate) fn notification_xml(arn: &str, events: &[&str], prefix: Option<&str>) -> String {
    let events: String = events
        .iter()
        .map(|e| format!("<Event>{e}</Event>"))
        .collect();
    let filter = prefix
        .map(|p| {
            format!(
                "<Filter><S3Key><FilterRule><Name>prefix</Name><Value>{p}</Value></FilterRule>\
                 </S3Key></Filter>"
            )
        })
        .unwrap_or_default();
    format!(
        "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <QueueConfiguration><Id>cfg1</Id><Queue>{arn}</Queue>{events}{filter}</QueueConfiguration>\
         </NotificationConfiguration>"
    )
}

/// A bucket whose every create and remove goes to a fresh receiver through target `hook`.
async fn bucket_with_receiver(app: &TestApp, bucket: &str) -> Receiver {
    let receiver = Receiver::start().await;
    declare(app, "hook", &receiver.url).await;
    app.create_bucket(bucket).await;
    let xml = notification_xml(
        "arn:postgate:sqs::hook:webhook",
        &["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        None,
    );
    app.req(Method::PUT, &format!("/{bucket}"))
        .query("notification")
        .body(xml)
        .send()
        .await
        .assert_status(200);
    receiver
}

async fn api(app: &TestApp, method: Method, path: &str, body: Value) -> (u16, Value) {
    let res = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("authorization", format!("Bearer {ADMIN_AK}:{ADMIN_SK}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// Posts a file with `policy` (the presign API's or a link's `{url, fields}`).
async fn post_with(app: &TestApp, policy: &Value, extra: &[(&str, &str)], data: &[u8]) -> Resp {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in policy["fields"].as_object().unwrap() {
        form = form.text(k.clone(), v.as_str().unwrap().to_owned());
    }
    for (k, v) in extra {
        form = form.text(k.to_string(), v.to_string());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(data.to_vec()).file_name("f.txt"),
    );
    let url = policy["url"].as_str().unwrap();
    Resp::read(app.http.post(url).multipart(form).send().await.unwrap()).await
}

/// Outbox rows ever written: delivered rows are deleted, but ids are handed out from 1 up and
/// the highest is kept.
async fn deliveries(app: &TestApp) -> usize {
    app.state
        .db
        .read(|c| {
            Ok(
                c.query_row("SELECT coalesce(max(id), 0) FROM outbox", [], |r| {
                    r.get::<_, i64>(0)
                })?,
            )
        })
        .await
        .unwrap() as usize
}

#[tokio::test]
async fn every_operation_sends_its_s3_event_with_the_right_fields() {
    let app = spawn_app().await;
    let receiver = bucket_with_receiver(&app, "evs").await;

    // PutObject, with a key S3 would encode.
    app.req(Method::PUT, "/evs/a%20b+c.txt")
        .header("x-amz-meta-cms-id", "42")
        .body(b"hello".to_vec())
        .send()
        .await
        .assert_status(200);
    // CopyObject.
    app.req(Method::PUT, "/evs/copy.txt")
        .header("x-amz-copy-source", "/evs/a%20b+c.txt")
        .send()
        .await
        .assert_status(200);
    // A browser POST, with the form's metadata.
    let (status, policy) = api(
        &app,
        Method::POST,
        "/-/api/presign/post",
        serde_json::json!({"bucket": "evs", "key": "form.txt", "metadata": {"album": "x"}}),
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    post_with(&app, &policy, &[], b"posted")
        .await
        .assert_status(204);
    // CompleteMultipartUpload.
    let created = app
        .req(Method::POST, "/evs/big.bin")
        .query("uploads")
        .send()
        .await;
    created.assert_status(200);
    let upload_id = xml_tag(&created.text(), "UploadId").unwrap();
    let part = app
        .req(Method::PUT, "/evs/big.bin")
        .query(&format!("partNumber=1&uploadId={upload_id}"))
        .body(b"part-one".to_vec())
        .send()
        .await;
    part.assert_status(200);
    let etag = part.header("etag").unwrap().to_owned();
    app.req(Method::POST, "/evs/big.bin")
        .query(&format!("uploadId={upload_id}"))
        .body(format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part>\
             </CompleteMultipartUpload>"
        ))
        .send()
        .await
        .assert_status(200);
    // DeleteObject and DeleteObjects.
    app.delete("/evs/copy.txt").await.assert_status(204);
    app.req(Method::POST, "/evs")
        .query("delete")
        .body(
            "<Delete><Object><Key>form.txt</Key></Object><Object><Key>none</Key></Object></Delete>",
        )
        .send()
        .await
        .assert_status(200);

    let got = receiver.wait_for(6).await;
    let names: Vec<&str> = got
        .iter()
        .map(|r| r.record()["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ObjectCreated:Put",
            "ObjectCreated:Copy",
            "ObjectCreated:Post",
            "ObjectCreated:CompleteMultipartUpload",
            "ObjectRemoved:Delete",
            "ObjectRemoved:Delete",
        ]
    );
    let put = got[0].record();
    assert_eq!(put["eventVersion"], "2.1");
    assert_eq!(put["eventSource"], "aws:s3");
    assert_eq!(put["awsRegion"], REGION);
    assert!(put["eventTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(put["userIdentity"]["principalId"], ADMIN_AK);
    assert_eq!(put["requestParameters"]["sourceIPAddress"], "127.0.0.1");
    assert_eq!(put["s3"]["configurationId"], "cfg1");
    assert_eq!(put["s3"]["bucket"]["name"], "evs");
    assert_eq!(put["s3"]["bucket"]["arn"], "arn:aws:s3:::evs");
    assert_eq!(put["s3"]["object"]["key"], "a+b%2Bc.txt");
    assert_eq!(put["s3"]["object"]["size"], 5);
    assert_eq!(put["s3"]["object"]["eTag"], md5_hex(b"hello"));
    assert_eq!(
        put["s3"]["object"]["userMetadata"]["X-Amz-Meta-Cms-Id"],
        "42"
    );
    let post = got[2].record();
    assert_eq!(post["s3"]["object"]["key"], "form.txt");
    assert_eq!(
        post["s3"]["object"]["userMetadata"]["X-Amz-Meta-Album"],
        "x"
    );
    let mpu = got[3].record();
    assert_eq!(mpu["s3"]["object"]["size"], 8);
    assert!(
        mpu["s3"]["object"]["eTag"]
            .as_str()
            .unwrap()
            .ends_with("-1")
    );
    let removed = got[4].record();
    assert_eq!(removed["s3"]["object"]["key"], "copy.txt");
    assert!(removed["s3"]["object"].get("size").is_none());
    assert_eq!(got[5].record()["s3"]["object"]["key"], "form.txt");
    // Sequencers: same width, growing.
    let seq: Vec<&str> = got
        .iter()
        .map(|r| r.record()["s3"]["object"]["sequencer"].as_str().unwrap())
        .collect();
    assert!(
        seq.windows(2)
            .all(|w| w[0].len() == w[1].len() && w[0] < w[1]),
        "{seq:?}"
    );
    // Every delivery is signed over "<timestamp>.<body>" with the target's secret.
    for r in &got {
        let ts: i64 = r.timestamp.parse().unwrap();
        assert_eq!(r.signature, postgate::events::sign(SECRET, ts, &r.body));
    }
}

/// The `x-amz-request-id` a response carried.
fn request_id(res: &Resp) -> String {
    let id = res.header("x-amz-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    id
}

#[tokio::test]
async fn each_event_carries_the_request_id_of_the_request_that_caused_it() {
    let app = spawn_app().await;
    let receiver = bucket_with_receiver(&app, "evid").await;
    let mut ids = Vec::new();

    let put = app
        .req(Method::PUT, "/evid/put.txt")
        .body(b"hello".to_vec())
        .send()
        .await;
    put.assert_status(200);
    ids.push(request_id(&put));
    let (status, policy) = api(
        &app,
        Method::POST,
        "/-/api/presign/post",
        serde_json::json!({"bucket": "evid", "key": "form.txt"}),
    )
    .await;
    assert_eq!(status, 200, "{policy}");
    let post = post_with(&app, &policy, &[], b"posted").await;
    post.assert_status(204);
    ids.push(request_id(&post));
    let created = app
        .req(Method::POST, "/evid/big.bin")
        .query("uploads")
        .send()
        .await;
    created.assert_status(200);
    let upload_id = xml_tag(&created.text(), "UploadId").unwrap();
    let part = app
        .req(Method::PUT, "/evid/big.bin")
        .query(&format!("partNumber=1&uploadId={upload_id}"))
        .body(b"part-one".to_vec())
        .send()
        .await;
    part.assert_status(200);
    let etag = part.header("etag").unwrap().to_owned();
    let complete = app
        .req(Method::POST, "/evid/big.bin")
        .query(&format!("uploadId={upload_id}"))
        .body(format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part>\
             </CompleteMultipartUpload>"
        ))
        .send()
        .await;
    complete.assert_status(200);
    ids.push(request_id(&complete));
    let copy = app
        .req(Method::PUT, "/evid/copy.txt")
        .header("x-amz-copy-source", "/evid/put.txt")
        .send()
        .await;
    copy.assert_status(200);
    ids.push(request_id(&copy));
    let delete = app.delete("/evid/copy.txt").await;
    delete.assert_status(204);
    ids.push(request_id(&delete));

    let got = receiver.wait_for(5).await;
    let names: Vec<&str> = got
        .iter()
        .map(|r| r.record()["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "ObjectCreated:Put",
            "ObjectCreated:Post",
            "ObjectCreated:CompleteMultipartUpload",
            "ObjectCreated:Copy",
            "ObjectRemoved:Delete",
        ]
    );
    for (r, id) in got.iter().zip(&ids) {
        let elements = &r.record()["responseElements"];
        assert_eq!(elements["x-amz-request-id"], id.as_str(), "{}", r.body);
        // postgate answers the same id in `x-amz-id-2`.
        assert_eq!(elements["x-amz-id-2"], id.as_str(), "{}", r.body);
    }
}

#[tokio::test]
async fn filters_pick_the_events_and_keys_and_unknown_arns_are_refused() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    declare(&app, "hook", &receiver.url).await;
    app.create_bucket("flt").await;
    // An ARN no target has: S3's InvalidArgument, nothing stored.
    app.req(Method::PUT, "/flt")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::nobody:webhook",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_error(400, "InvalidArgument");
    app.req(Method::PUT, "/flt")
        .query("notification")
        .body(notification_xml(
            "arn:aws:sqs:us-east-1:123456789012:queue",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_error(400, "InvalidArgument");
    let xml = notification_xml(
        "arn:postgate:sqs::hook:webhook",
        &["s3:ObjectCreated:Put"],
        Some("img/"),
    );
    app.req(Method::PUT, "/flt")
        .query("notification")
        .body(xml)
        .send()
        .await
        .assert_status(200);
    let got = app
        .req(Method::GET, "/flt")
        .query("notification")
        .send()
        .await;
    got.assert_status(200);
    let text = got.text();
    assert_eq!(
        xml_tag(&text, "Queue").as_deref(),
        Some("arn:postgate:sqs::hook:webhook")
    );
    assert_eq!(
        xml_tag(&text, "Event").as_deref(),
        Some("s3:ObjectCreated:Put")
    );
    assert_eq!(xml_tag(&text, "Value").as_deref(), Some("img/"));

    app.put_object("flt", "doc/a.txt", b"no".to_vec()).await;
    app.put_object("flt", "img/a.png", b"yes".to_vec()).await;
    app.delete("/flt/img/a.png").await.assert_status(204);
    let got = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1);
    assert_eq!(got[0].record()["s3"]["object"]["key"], "img/a.png");
    assert_eq!(
        deliveries(&app).await,
        1,
        "unwanted changes write no outbox row"
    );
}

#[tokio::test]
async fn a_refused_upload_makes_no_event() {
    let app = spawn_app().await;
    let receiver = bucket_with_receiver(&app, "ref").await;
    let (_, policy) = api(
        &app,
        Method::POST,
        "/-/api/presign/post",
        serde_json::json!({"bucket": "ref", "key": "small.txt", "max_size": 3}),
    )
    .await;
    let res = post_with(&app, &policy, &[], b"far too large").await;
    res.assert_error(400, "EntityTooLarge");
    // A conditional PUT that fails is refused too.
    app.put_object("ref", "k", b"1".to_vec()).await;
    app.req(Method::PUT, "/ref/k")
        .header("if-none-match", "*")
        .body(b"2".to_vec())
        .send()
        .await
        .assert_error(412, "PreconditionFailed");
    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the stored PUT: {got:#?}");
    assert_eq!(got[0].record()["s3"]["object"]["key"], "k");
    assert_eq!(deliveries(&app).await, 1);
}

#[tokio::test]
async fn a_receiver_answering_500_gets_retries_until_it_accepts() {
    let app = spawn_app().await;
    let receiver = bucket_with_receiver(&app, "r500").await;
    receiver.status.store(500, Ordering::SeqCst);
    app.put_object("r500", "k", b"x".to_vec()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while receiver.hits.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no retry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, list) = api(&app, Method::GET, "/-/api/events?failed=1", Value::Null).await;
    assert_eq!(status, 200);
    let failed = &list["events"][0];
    assert_eq!(failed["state"], "pending");
    assert!(failed["attempts"].as_u64().unwrap() >= 1);
    assert!(failed["last_error"].as_str().unwrap().contains("500"));
    receiver.status.store(200, Ordering::SeqCst);
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].record()["s3"]["object"]["key"], "k");
    let metrics = app
        .http
        .get(format!("{}/-/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("postgate_event_deliveries_total{outcome=\"failed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("postgate_event_deliveries_total{outcome=\"delivered\"} 1"));
}

#[tokio::test]
async fn a_receiver_that_is_down_then_up_gets_every_event_in_order() {
    let app = spawn_app().await;
    // A port nobody listens on yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    declare(&app, "hook", &format!("http://{addr}/hook")).await;
    app.create_bucket("down").await;
    app.req(Method::PUT, "/down")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::hook:webhook",
            &["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    for i in 0..3 {
        app.put_object("down", "same", vec![b'a' + i; 3]).await;
        app.put_object("down", &format!("other-{i}"), b"o".to_vec())
            .await;
    }
    app.delete("/down/same").await.assert_status(204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let receiver = Receiver::on(TcpListener::bind(addr).await.unwrap());
    let got = receiver.wait_for(7).await;
    let same: Vec<(String, Value)> = got
        .iter()
        .map(|r| r.record())
        .filter(|r| r["s3"]["object"]["key"] == "same")
        .map(|r| {
            (
                r["eventName"].as_str().unwrap().to_owned(),
                r["s3"]["object"]["eTag"].clone(),
            )
        })
        .collect();
    let etags: Vec<Value> = (0..3u8)
        .map(|i| Value::from(md5_hex(&[b'a' + i; 3])))
        .collect();
    assert_eq!(
        same,
        vec![
            ("ObjectCreated:Put".to_owned(), etags[0].clone()),
            ("ObjectCreated:Put".to_owned(), etags[1].clone()),
            ("ObjectCreated:Put".to_owned(), etags[2].clone()),
            ("ObjectRemoved:Delete".to_owned(), Value::Null),
        ],
        "one key's events arrive in order"
    );
    receiver.task.abort();
}

/// Every record of these POSTs, in arrival order.
pub(crate) fn records(posts: &[Received]) -> Vec<Value> {
    posts
        .iter()
        .flat_map(|p| p.json["Records"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Waits (up to 20 s) until the POSTs `receiver` accepted hold `n` records.
pub(crate) async fn wait_for_records(receiver: &Receiver, n: usize) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = receiver.got.lock().unwrap().clone();
        if records(&got).len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} records arrived",
            records(&got).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A target declared with `--batch 10` whose receiver was down gets the backlog in POSTs of
/// up to 10 records, each POST signed over its whole body and naming its records' ids in
/// `X-Postgate-Delivery`; a POST answered 500 is retried whole; one key's events still arrive in
/// order. A target of batch 1 on the same events gets one record per POST, as S3 sends.
#[tokio::test]
async fn a_batched_target_gets_a_backlog_in_few_signed_posts_in_order_per_key() {
    let app = spawn_app_with(|c| c.event_retry_min = Duration::from_millis(200)).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let single = Receiver::start().await;
    declare_batched(&app, "batched", &format!("http://{addr}/hook"), 10).await;
    declare(&app, "single", &single.url).await;
    app.create_bucket("many").await;
    let queue = |id: &str, target: &str| {
        format!(
            "<QueueConfiguration><Id>{id}</Id><Queue>arn:postgate:sqs::{target}:webhook</Queue>\
             <Event>s3:ObjectCreated:*</Event><Event>s3:ObjectRemoved:*</Event></QueueConfiguration>"
        )
    };
    app.req(Method::PUT, "/many")
        .query("notification")
        .body(format!(
            "<NotificationConfiguration>{}{}</NotificationConfiguration>",
            queue("b", "batched"),
            queue("s", "single")
        ))
        .send()
        .await
        .assert_status(200);
    for i in 0..3 {
        app.put_object("many", "same", vec![b'a' + i; 3]).await;
    }
    for i in 0..20 {
        app.put_object("many", &format!("other-{i:02}"), b"o".to_vec())
            .await;
    }
    app.delete("/many/same").await.assert_status(204);
    const EVENTS: usize = 24;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let batched = Receiver::on(TcpListener::bind(addr).await.unwrap());
    // Its first POST is answered 500: every record of it comes again.
    batched.fail.store(1, Ordering::SeqCst);
    let posts = wait_for_records(&batched, EVENTS).await;
    let all = records(&posts);
    assert!(posts.iter().all(|p| {
        let n = p.json["Records"].as_array().unwrap().len();
        (1..=10).contains(&n)
    }));
    assert!(
        posts.len() < EVENTS
            && posts
                .iter()
                .any(|p| p.json["Records"].as_array().unwrap().len() > 1),
        "{} POSTs for {EVENTS} records",
        posts.len()
    );
    // Each record once (at least once: none lost), each POST signed, ids = sequencers.
    let mut sequencers: Vec<String> = all
        .iter()
        .map(|r| r["s3"]["object"]["sequencer"].as_str().unwrap().to_owned())
        .collect();
    sequencers.sort();
    sequencers.dedup();
    assert_eq!(sequencers.len(), EVENTS);
    for p in &posts {
        let ts: i64 = p.timestamp.parse().unwrap();
        assert_eq!(p.signature, postgate::events::sign(SECRET, ts, &p.body));
        let ids: Vec<String> = p
            .delivery
            .split(',')
            .map(|id| postgate::events::message::sequencer(id.parse().unwrap()))
            .collect();
        let object = |field: &str| -> Vec<String> {
            records(std::slice::from_ref(p))
                .iter()
                .map(|r| r["s3"]["object"][field].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            ids,
            object("sequencer"),
            "X-Postgate-Delivery names the records in order"
        );
        let keys = object("key");
        assert!(
            keys.iter().filter(|k| *k == "same").count() <= 1,
            "a POST holds at most one of a key's events: {keys:?}"
        );
    }
    assert_eq!(
        batched.hits.load(Ordering::SeqCst),
        posts.len() + 1,
        "one 500, retried"
    );
    let same: Vec<(String, Value)> = all
        .iter()
        .filter(|r| r["s3"]["object"]["key"] == "same")
        .map(|r| {
            (
                r["eventName"].as_str().unwrap().to_owned(),
                r["s3"]["object"]["eTag"].clone(),
            )
        })
        .collect();
    let mut expected: Vec<(String, Value)> = (0..3u8)
        .map(|i| {
            (
                "ObjectCreated:Put".to_owned(),
                Value::from(md5_hex(&[b'a' + i; 3])),
            )
        })
        .collect();
    expected.push(("ObjectRemoved:Delete".to_owned(), Value::Null));
    // The first POST (answered 500) was sent again: its records count once here.
    let mut seen = std::collections::HashSet::new();
    let same: Vec<(String, Value)> = same
        .into_iter()
        .filter(|(name, etag)| seen.insert((name.clone(), etag.to_string())))
        .collect();
    assert_eq!(same, expected, "one key's events arrive in order");
    // Batch 1: one record per POST.
    let one = single.wait_for(EVENTS).await;
    assert!(
        one.iter()
            .all(|p| p.json["Records"].as_array().unwrap().len() == 1)
    );
    assert_eq!(records(&one).len(), EVENTS);
    batched.task.abort();
    single.task.abort();
}

/// `postgate webhook add --batch` takes 1-100, and `webhook list` shows it.
#[tokio::test]
async fn webhook_add_takes_a_batch_of_1_to_100() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("POSTGATE_CONFIG")
            .env_remove("POSTGATE_DATA_DIR")
            .output()
            .unwrap()
    };
    let add = |batch: &str| {
        run(&[
            "webhook",
            "add",
            "h",
            "--url",
            "http://127.0.0.1:9/h",
            "--secret",
            "s",
            "--batch",
            batch,
        ])
    };
    for refused in ["0", "101"] {
        let out = add(refused);
        assert!(!out.status.success(), "--batch {refused} was taken");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--batch must be 1-100"));
    }
    assert!(add("25").status.success());
    let list = String::from_utf8(run(&["webhook", "list"]).stdout).unwrap();
    let line = list.lines().find(|l| l.starts_with("h ")).unwrap();
    assert_eq!(line.split_whitespace().nth(2), Some("25"), "{list}");
}

#[tokio::test]
async fn a_links_webhook_hears_of_its_uploads_and_only_a_declared_target_may_be_named() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    declare(&app, "cms", &receiver.url).await;
    app.create_bucket("lnk").await;
    // A free URL, or a name nobody declared, is refused: no request forgery through the API.
    for bad in ["http://169.254.169.254/latest", "nobody"] {
        let (status, json) = api(
            &app,
            Method::POST,
            "/-/api/links",
            serde_json::json!({"bucket": "lnk", "webhook": bad}),
        )
        .await;
        assert_eq!(status, 400, "{json}");
    }
    let (status, link) = api(
        &app,
        Method::POST,
        "/-/api/links",
        serde_json::json!({"bucket": "lnk", "prefix": "in/", "webhook": "cms"}),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["webhook"], "cms");
    let url = link["url"].as_str().unwrap();
    let token = url.rsplit('/').next().unwrap();
    let res = app
        .http
        .get(format!("{}/-/u/{token}/policy", app.base))
        .send()
        .await
        .unwrap();
    let policy: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    post_with(
        &app,
        &policy,
        &[("Content-Type", "text/plain")],
        b"from the link",
    )
    .await
    .assert_status(201);
    // An upload to the bucket that is not the link's: no event (the bucket has no configuration).
    app.put_object("lnk", "in/direct.txt", b"d".to_vec()).await;
    let got = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1);
    let r = got[0].record();
    assert_eq!(r["eventName"], "ObjectCreated:Post");
    assert_eq!(r["postgate"]["linkId"], link["id"]);
    assert!(
        r["s3"]["object"]["key"]
            .as_str()
            .unwrap()
            .starts_with("in/")
    );
    let (_, links) = api(&app, Method::GET, "/-/api/links", Value::Null).await;
    assert_eq!(links["links"][0]["webhook"], "cms");
}

/// The README's Python verifier, run as a receiver would: it accepts a real delivery, and
/// refuses a tampered body, a wrong secret and a stale timestamp.
#[tokio::test]
async fn the_documented_python_verifier_accepts_deliveries_and_refuses_forgeries() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python\n# verify_postgate.py")
        .expect("the README has the Python verifier");
    let code = &readme[start + "```python\n".len()..];
    let code = &code[..code.find("```").unwrap()];
    let python = std::path::Path::new("/work/main/.venv/bin/python");
    let python = if python.exists() {
        python.to_str().unwrap()
    } else {
        "python3"
    };

    let app = spawn_app().await;
    let receiver = bucket_with_receiver(&app, "ver").await;
    app.put_object("ver", "k", b"v".to_vec()).await;
    let got = receiver.wait_for(1).await.remove(0);
    let check = |secret: &str, timestamp: &str, body: &str| {
        let script = format!(
            "{code}\nimport sys\nprint(verify(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode()))"
        );
        let out = std::process::Command::new(python)
            .arg("-c")
            .arg(script)
            .args([secret, timestamp, &got.signature, body])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(check(SECRET, &got.timestamp, &got.body), "True");
    let tampered = got.body.replace("\"k\"", "\"evil\"");
    assert_ne!(tampered, got.body);
    assert_eq!(check(SECRET, &got.timestamp, &tampered), "False");
    assert_eq!(check("wrong-secret", &got.timestamp, &got.body), "False");
    let stale = (got.timestamp.parse::<i64>().unwrap() - 3600).to_string();
    assert_eq!(check(SECRET, &stale, &got.body), "False");
}

/// `postgate serve` as a process (so that it can be killed with SIGKILL), with `config` as its
/// configuration file; waits for its health check.
async fn start_server(
    dir: &std::path::Path,
    config: &std::path::Path,
    port: u16,
) -> tokio::process::Child {
    let host = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_postgate"))
        .args(["serve", "--addr", &host, "--event-retry-min", "1s"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .env("POSTGATE_ACCESS_KEY", ADMIN_AK)
        .env("POSTGATE_SECRET_KEY", ADMIN_SK)
        .env("POSTGATE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(res) = reqwest::get(format!("http://{host}/-/health")).await
            && res.status() == 200
        {
            return child;
        }
        assert!(child.try_wait().unwrap().is_none(), "server exited");
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An upload acknowledged just before a kill -9, while its receiver is down, is delivered after
/// the restart: the event was committed with the object.
#[tokio::test]
async fn kill_9_between_commit_and_delivery_still_delivers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let hook_addr = free();
    let config = dir.path().join("postgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"hook\"\nurl = \"http://{hook_addr}/hook\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free().port();
    let base = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = start_server(&data, &config, port).await;
    let req = |m: Method, p: &str| req_to(&base, &host, &http, m, p);
    req(Method::PUT, "/crash").send().await.assert_status(200);
    req(Method::PUT, "/crash")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::hook:webhook",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    req(Method::PUT, "/crash/acked")
        .body(b"durable".to_vec())
        .send()
        .await
        .assert_status(200);
    server.kill().await.unwrap();

    let receiver = Receiver::on(TcpListener::bind(hook_addr).await.unwrap());
    let _server = start_server(&data, &config, port).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].record()["s3"]["object"]["key"], "acked");
    assert_eq!(got[0].record()["s3"]["object"]["eTag"], md5_hex(b"durable"));
}

/// The lifecycle sweeper's deletions are events too, under S3's name for them
/// (`LifecycleExpiration:Delete`), in the sweep's own transaction; `s3:ObjectRemoved:*` does not
/// ask for them (as in S3), `s3:LifecycleExpiration:*` does. A created object's record carries
/// the type its bytes showed (`detectedType`).
#[tokio::test]
async fn expiry_by_the_lifecycle_sweeper_sends_lifecycle_expiration_delete() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    declare(&app, "hook", &receiver.url).await;
    app.create_bucket("evlc").await;
    let xml = notification_xml(
        "arn:postgate:sqs::hook:webhook",
        &[
            "s3:ObjectCreated:*",
            "s3:ObjectRemoved:*",
            "s3:LifecycleExpiration:*",
        ],
        None,
    );
    app.req(Method::PUT, "/evlc")
        .query("notification")
        .body(xml)
        .send()
        .await
        .assert_status(200);
    let rules = r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status>
    <Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>"#;
    app.req(Method::PUT, "/evlc")
        .query("lifecycle")
        .header("content-md5", &content_md5(rules.as_bytes()))
        .body(rules.to_owned())
        .send()
        .await
        .assert_status(200);
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&[0; 64]);
    app.put_object("evlc", "tmp/a.png", png).await;
    let day = Duration::from_millis(300);
    tokio::time::sleep(day + Duration::from_millis(100)).await;
    let swept = postgate::objects::lifecycle::sweep(
        &app.state.db,
        &app.state.uploads,
        &app.state.store,
        Some(day),
        &app.state.lifecycle_origin(),
    )
    .await
    .unwrap();
    assert_eq!(swept.objects, 1);
    let got = receiver.wait_for(2).await;
    let created = got[0].record();
    assert_eq!(created["eventName"], "ObjectCreated:Put");
    assert_eq!(created["s3"]["object"]["detectedType"], "image/png");
    let expired = got[1].record();
    assert_eq!(expired["eventName"], "LifecycleExpiration:Delete");
    assert_eq!(expired["s3"]["object"]["key"], "tmp/a.png");
    // No request caused it: the sweep's own id, as S3 gives its lifecycle events one.
    let sweep_id = expired["responseElements"]["x-amz-request-id"]
        .as_str()
        .unwrap();
    assert_eq!(sweep_id.len(), 16, "{sweep_id}");
    assert_ne!(
        sweep_id,
        created["responseElements"]["x-amz-request-id"]
            .as_str()
            .unwrap()
    );
    assert!(expired["s3"]["object"].get("size").is_none());

    // A bucket that asks for removals only hears of DeleteObject, not of expiry.
    let only_removed = bucket_with_receiver(&app, "evlc2").await;
    app.req(Method::PUT, "/evlc2")
        .query("lifecycle")
        .header("content-md5", &content_md5(rules.as_bytes()))
        .body(rules.to_owned())
        .send()
        .await
        .assert_status(200);
    app.put_object("evlc2", "tmp/b", b"b".to_vec()).await;
    tokio::time::sleep(day + Duration::from_millis(100)).await;
    let swept = postgate::objects::lifecycle::sweep(
        &app.state.db,
        &app.state.uploads,
        &app.state.store,
        Some(day),
        &app.state.lifecycle_origin(),
    )
    .await
    .unwrap();
    assert_eq!(swept.objects, 1);
    app.put_object("evlc2", "after", b"x".to_vec()).await;
    let got = only_removed.wait_for(2).await;
    let names: Vec<&str> = got
        .iter()
        .map(|r| r.record()["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ObjectCreated:Put", "ObjectCreated:Put"]);
}

/// Delivery lanes: a target whose receiver accepts connections and never answers holds back only
/// its own events. Another target wanting the same events gets every one promptly, not after the
/// silent one's attempts time out (10 s each).
#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_back_another_targets_events() {
    let app = spawn_app().await;
    // Connections complete in the listener's backlog; nothing ever reads or answers them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    declare(
        &app,
        "silent",
        &format!("http://{}/hook", silent.local_addr().unwrap()),
    )
    .await;
    let receiver = Receiver::start().await;
    declare(&app, "hook", &receiver.url).await;
    app.create_bucket("lanes").await;
    let queue = |id: &str, target: &str| {
        format!(
            "<QueueConfiguration><Id>{id}</Id><Queue>arn:postgate:sqs::{target}:webhook</Queue>\
             <Event>s3:ObjectCreated:*</Event></QueueConfiguration>"
        )
    };
    let xml = format!(
        "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{}{}\
         </NotificationConfiguration>",
        queue("to-silent", "silent"),
        queue("to-hook", "hook"),
    );
    app.req(Method::PUT, "/lanes")
        .query("notification")
        .body(xml)
        .send()
        .await
        .assert_status(200);
    // More uploads than a lane has in flight: the silent target's window fills.
    const N: usize = 40;
    for i in 0..N {
        app.put_object("lanes", &format!("k{i:02}"), b"x".to_vec())
            .await;
    }
    let uploaded = tokio::time::Instant::now();
    let deadline = uploaded + Duration::from_secs(2);
    loop {
        let got = receiver.got.lock().unwrap().len();
        if got >= N {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the healthy target got {got} of {N} events within 2 s while another never answers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.wait_for(N).await;
    let mut keys: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(r.record()["s3"]["configurationId"], "to-hook");
            r.record()["s3"]["object"]["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), N, "every upload's event, once each: {keys:?}");
    // The silent target's are still pending: held back, not lost.
    let (status, list) = api(&app, Method::GET, "/-/api/events", Value::Null).await;
    assert_eq!(status, 200);
    let pending = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "silent" && e["state"] == "pending")
        .count();
    assert_eq!(pending, N);
    drop(silent);
    receiver.task.abort();
}

/// The record is built before the upload's transaction, naming the bucket owner postgate had
/// cached; the transaction checks it against the bucket it reads. A bucket whose owner changed
/// since (deleted and made again by another key) gets its current owner in the event.
#[tokio::test]
async fn an_event_names_the_buckets_current_owner() {
    let app = spawn_app().await;
    let receiver = bucket_with_receiver(&app, "owned").await;
    let owner = app
        .state
        .db
        .read(|c| postgate::db::buckets::get(c, "owned"))
        .await
        .unwrap()
        .unwrap()
        .owner;
    app.put_object("owned", "first", b"1".to_vec()).await;
    let got = receiver.wait_for(1).await;
    let named = |r: &Received| r.record()["s3"]["bucket"]["ownerIdentity"]["principalId"].clone();
    assert_eq!(named(&got[0]), owner.as_str());
    // Another owner, which the cache does not know yet (it is read again every 5 s).
    app.state
        .db
        .write(|c| {
            c.execute(
                "UPDATE buckets SET owner = 'SOMEONE-ELSE' WHERE name = 'owned'",
                [],
            )
            .unwrap();
            Ok(())
        })
        .await
        .unwrap();
    app.put_object("owned", "second", b"2".to_vec()).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(named(&got[1]), "SOMEONE-ELSE");
    receiver.task.abort();
}

/// A database as postgate left it before the outbox became one row per event and target
/// (migrations up to 0014: `events` + `deliveries`, both AUTOINCREMENT), with pending, dead and
/// delivered rows, upgraded by starting the new server: the pending events are delivered, a key's
/// in order, under their old delivery ids (which a receiver may have seen on an earlier attempt);
/// the dead one is still listed under its id and can be retried; a new event gets an id above
/// every id handed out before (a pruned row's included), so no receiver mistakes it for a
/// duplicate or for an older change of its key.
#[tokio::test]
async fn an_event_pending_before_the_outbox_migration_is_delivered_after_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        let conn = rusqlite::Connection::open(data.join("postgate.db")).unwrap();
        let mut files: Vec<_> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.ends_with(".sql") && name[..4].parse::<u32>().unwrap() <= 14
                })
                .collect();
        files.sort();
        for f in &files {
            conn.execute_batch(&std::fs::read_to_string(f).unwrap())
                .unwrap();
        }
        conn.pragma_update(None, "user_version", files.len() as i64)
            .unwrap();
        let config = postgate::events::rules::NotificationConfig {
            queues: vec![postgate::events::rules::QueueRule {
                id: "cfg".into(),
                target: "hook".into(),
                events: vec!["s3:ObjectCreated:*".into()],
                prefix: None,
                suffix: None,
            }],
        };
        let record = |key: &str, name: &str| {
            serde_json::json!({"eventVersion": "2.1", "eventName": name,
                "s3": {"bucket": {"name": "old"}, "object": {"key": key}}})
            .to_string()
        };
        conn.execute(
            "INSERT INTO buckets (name, owner, created_at) VALUES ('old', ?1, 0)",
            [ADMIN_AK],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO bucket_notifications (bucket, config) VALUES ('old', ?1)",
            [serde_json::to_string(&config).unwrap()],
        )
        .unwrap();
        let mut event = conn
            .prepare(
                "INSERT INTO events (id, bucket, key, name, record, created_at)
                 VALUES (?1, 'old', ?2, ?3, ?4, 0)",
            )
            .unwrap();
        let mut delivery = conn
            .prepare(
                "INSERT INTO deliveries (id, event_id, target, configuration_id, bucket, key,
                     state, attempts, since, next_at, last_error, updated_at)
                 VALUES (?1, ?2, 'hook', 'cfg', 'old', ?3, ?4, ?5, ?6, 0, ?7, 0)",
            )
            .unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        // (delivery id, event id, key, event, state, attempts, last error)
        type Row<'a> = (i64, i64, &'a str, &'a str, &'a str, i64, Option<&'a str>);
        let rows: [Row; 4] = [
            (
                5,
                1,
                "k",
                "ObjectCreated:Put",
                "pending",
                2,
                Some("the receiver answered 500"),
            ),
            (6, 2, "k", "ObjectRemoved:Delete", "pending", 0, None),
            (7, 3, "j", "ObjectCreated:Put", "delivered", 1, None),
            (8, 4, "x", "ObjectCreated:Put", "dead", 9, Some("gave up")),
        ];
        for (id, event_id, key, name, state, attempts, error) in rows {
            event
                .execute(rusqlite::params![event_id, key, name, record(key, name)])
                .unwrap();
            delivery
                .execute(rusqlite::params![
                    id, event_id, key, state, attempts, now, error
                ])
                .unwrap();
        }
        // Ids up to 20 were handed out; the rows above 8 were pruned since.
        conn.execute(
            "UPDATE sqlite_sequence SET seq = 20 WHERE name = 'deliveries'",
            [],
        )
        .unwrap();
    }

    let receiver = Receiver::start().await;
    let config = dir.path().join("postgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"hook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
            receiver.url
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (base, host) = (
        format!("http://127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
    );
    let http = reqwest::Client::new();
    let _server = start_server(&data, &config, port).await;
    let got = receiver.wait_for(2).await;
    let seen: Vec<(&str, &str, &str)> = got
        .iter()
        .map(|r| {
            (
                r.delivery.as_str(),
                r.record()["eventName"].as_str().unwrap(),
                r.record()["s3"]["object"]["sequencer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("5", "ObjectCreated:Put", "0000000000000005"),
            ("6", "ObjectRemoved:Delete", "0000000000000006"),
        ],
        "the old pending events, in order, under their ids"
    );
    for r in &got {
        let ts: i64 = r.timestamp.parse().unwrap();
        assert_eq!(r.signature, postgate::events::sign(SECRET, ts, &r.body));
    }

    let req = |m: Method, p: &str| req_to(&base, &host, &http, m, p);
    // The receiver has the bodies a moment before the server records their outcome.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listed = req(Method::GET, "/-/api/events").send().await;
        listed.assert_status(200);
        let listed: Value = serde_json::from_slice(&listed.body).unwrap();
        let left: Vec<(u64, String)> = listed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["id"].as_u64().unwrap(),
                    e["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if left == [(8, "dead".to_owned())] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    req(Method::PUT, "/old/new")
        .body(b"after".to_vec())
        .send()
        .await
        .assert_status(200);
    let got = receiver.wait_for(3).await;
    assert_eq!(got[2].record()["s3"]["object"]["key"], "new");
    let id: i64 = got[2].delivery.parse().unwrap();
    assert!(id > 20, "a new id above every one handed out: {id}");

    req(Method::POST, "/-/api/events/8/retry")
        .send()
        .await
        .assert_status(204);
    let got = receiver.wait_for(4).await;
    assert_eq!(got[3].delivery, "8");
    assert_eq!(got[3].record()["s3"]["object"]["key"], "x");
}

/// A key's events wait in order while the receiver is down (the later ones parked behind the
/// first, which is retried); after a kill -9 the restarted server rebuilds that order from the
/// outbox and delivers them in it.
#[tokio::test]
async fn a_keys_order_survives_a_kill_9_while_its_receiver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let hook_addr = free();
    let config = dir.path().join("postgate.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhook]]\nname = \"hook\"\nurl = \"http://{hook_addr}/hook\"\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free().port();
    let base = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = start_server(&data, &config, port).await;
    let req = |m: Method, p: &str| req_to(&base, &host, &http, m, p);
    req(Method::PUT, "/order").send().await.assert_status(200);
    req(Method::PUT, "/order")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::hook:webhook",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    for i in 0..4u8 {
        req(Method::PUT, "/order/same")
            .body(vec![b'a' + i; 2])
            .send()
            .await
            .assert_status(200);
    }
    // The first attempts fail (nobody listens) and the later rows get parked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().await.unwrap();

    let receiver = Receiver::on(TcpListener::bind(hook_addr).await.unwrap());
    let _server = start_server(&data, &config, port).await;
    let got = receiver.wait_for(4).await;
    let etags: Vec<&str> = got
        .iter()
        .map(|r| r.record()["s3"]["object"]["eTag"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..4u8).map(|i| md5_hex(&[b'a' + i; 2])).collect();
    assert_eq!(etags, want, "one key's events arrive in order");
}

/// A database at `version` (the migration files numbered up to it), as an older postgate left
/// it.
fn database_at(path: &std::path::Path, version: u32) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".sql") && name[..4].parse::<u32>().unwrap() <= version
        })
        .collect();
    files.sort();
    for f in &files {
        conn.execute_batch(&std::fs::read_to_string(f).unwrap())
            .unwrap();
    }
    conn.pragma_update(None, "user_version", files.len() as i64)
        .unwrap();
    conn
}

/// What the outbox of migration 0016 stored for an event: its whole body, with an empty
/// configuration id and a placeholder sequencer (a POST through a link, then its removal).
const STORED_0016: [&str; 2] = [
    r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-02T11:00:00.123Z","eventName":"ObjectCreated:Post","userIdentity":{"principalId":"AK"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"0123456789ABCDEF","x-amz-id-2":"0123456789ABCDEF"},"s3":{"s3SchemaVersion":"1.0","configurationId":"","bucket":{"name":"old","ownerIdentity":{"principalId":"O"},"arn":"arn:aws:s3:::old"},"object":{"key":"k+1","size":3,"eTag":"abc","contentType":"image/png","detectedType":"image/png","userMetadata":{"X-Amz-Meta-Cms-Id":"7"},"sequencer":"0000000000000000"}},"postgate":{"linkId":"L1"}}]}"#,
    r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-02T11:00:01.456Z","eventName":"ObjectRemoved:Delete","userIdentity":{"principalId":"AK"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"FEDCBA9876543210","x-amz-id-2":"FEDCBA9876543210"},"s3":{"s3SchemaVersion":"1.0","configurationId":"","bucket":{"name":"old","ownerIdentity":{"principalId":"O"},"arn":"arn:aws:s3:::old"},"object":{"key":"k+1","sequencer":"0000000000000000"}}}]}"#,
];

/// Rows the outbox of migration 0016 holds when postgate is upgraded (their rendered bodies)
/// are delivered after the upgrade byte for byte as 0016 would have sent them: the target's
/// configuration id and the row's id as sequencer written into their slots, in key order.
#[tokio::test]
async fn rows_stored_whole_before_the_fields_migration_are_sent_byte_identical() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = database_at(&dir.path().join("postgate.db"), 16);
        conn.execute(
            "INSERT INTO buckets (name, owner, created_at) VALUES ('old', 'O', 0)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO webhooks (name, url, secret, created_at) VALUES ('hook', ?1, ?2, 0)",
            [&receiver.url, SECRET],
        )
        .unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let names = ["ObjectCreated:Post", "ObjectRemoved:Delete"];
        for (i, (name, record)) in names.into_iter().zip(STORED_0016).enumerate() {
            let id = i as i64 + 5;
            conn.execute(
                "INSERT INTO outbox (id, target, configuration_id, bucket, key, name, record,
                     since, next_at, created_at)
                 VALUES (?1, 'hook', 'cfg', 'old', 'k 1', ?2, ?3, ?4, ?4, ?4)",
                rusqlite::params![id, name, record, now],
            )
            .unwrap();
        }
    }
    let _app = spawn_app_in(dir).await;
    let got = receiver.wait_for(2).await;
    for (i, (r, stored)) in got.iter().zip(STORED_0016).enumerate() {
        let id = i + 5;
        let expected = stored
            .replace(r#""configurationId":"""#, r#""configurationId":"cfg""#)
            .replace("0000000000000000", &format!("{id:016X}"));
        assert_eq!(r.body, expected);
        assert_eq!(r.delivery, id.to_string());
        let ts: i64 = r.timestamp.parse().unwrap();
        assert_eq!(r.signature, postgate::events::sign(SECRET, ts, &r.body));
    }
}

/// An upload a target wants stores its event's fields in the outbox, not its rendered S3 record
/// (~1.1 KB of JSON built and written inside the upload's commit): the record is rendered when
/// it is sent.
#[tokio::test]
async fn an_outbox_row_keeps_the_events_fields_not_its_rendered_record() {
    let app = spawn_app().await;
    // A target nobody listens on: the row stays pending.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    declare(&app, "hook", &format!("http://{closed}/hook")).await;
    app.create_bucket("small").await;
    app.req(Method::PUT, "/small")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::hook:webhook",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    app.req(Method::PUT, "/small/photos/a b.png")
        .header("x-amz-meta-cms-id", "42")
        .header("content-type", "image/png")
        .body(b"not really a png".to_vec())
        .send()
        .await
        .assert_status(200);
    let (record, bytes, metadata, etag): (String, i64, Option<String>, Option<String>) = app
        .state
        .db
        .read(|c| {
            Ok(c.query_row(
                "SELECT record,
                     length(target) + length(configuration_id) + length(bucket) + length(key)
                     + length(name) + length(record) + length(owner) + 8 + length(etag)
                     + coalesce(length(content_type), 0) + coalesce(length(detected_type), 0)
                     + coalesce(length(metadata), 0) + length(principal) + length(source_ip)
                     + length(request_id) + coalesce(length(link_id), 0),
                     metadata, etag
                 FROM outbox WHERE state = 'pending'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(record, "", "no rendered record is stored");
    assert!(bytes < 300, "{bytes} bytes of fields");
    assert_eq!(metadata.as_deref(), Some(r#"[["cms-id","42"]]"#));
    assert_eq!(etag, Some(format!("\"{}\"", md5_hex(b"not really a png"))));
}

/// An https target is reached over TLS, its certificate verified against the system's roots: a
/// receiver whose certificate no trusted root signed completes no delivery, and the failed
/// attempt says why.
#[tokio::test]
async fn an_https_target_is_reached_over_tls_and_its_certificate_is_checked() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hellos = Arc::new(AtomicUsize::new(0));
    let seen = hellos.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A TLS client's first byte is a handshake record (22).
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.is_ok() && first[0] == 22 {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                let _ = acceptor.accept(tcp).await;
            });
        }
    });

    let app = spawn_app().await;
    declare(&app, "tls", &format!("https://{addr}/hook")).await;
    app.create_bucket("secure").await;
    app.req(Method::PUT, "/secure")
        .query("notification")
        .body(notification_xml(
            "arn:postgate:sqs::tls:webhook",
            &["s3:ObjectCreated:*"],
            None,
        ))
        .send()
        .await
        .assert_status(200);
    app.put_object("secure", "k", b"x".to_vec()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let failed = loop {
        let (_, list) = api(&app, Method::GET, "/-/api/events?failed=1", Value::Null).await;
        if let Some(e) = list["events"].as_array().and_then(|a| a.first()) {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["state"], "pending");
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert!(hellos.load(Ordering::SeqCst) >= 1, "no TLS handshake");
}
