//! Small uploads, fast paths that must not change an answer: a POST policy decoded once and
//! reused for the next forms that carry the same text is still checked (conditions, expiry)
//! on every form.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use postgate::policy::sign_v4;
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::helpers::{ADMIN_AK, ADMIN_SK, REGION, Resp, TestApp};
use crate::post_object::{B, app_with_bucket};

/// A SigV4 policy (admin key) for bucket `B`, key exactly `key`, expiring `secs` from now:
/// the fields a browser sends before the file, in order.
fn signed_form(key: &str, secs: i64) -> Vec<(String, String)> {
    let now = OffsetDateTime::now_utc();
    let date = now
        .format(format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap();
    let expiration = (now + time::Duration::seconds(secs))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].000Z"
        ))
        .unwrap();
    let credential = format!("{ADMIN_AK}/{}/{REGION}/s3/aws4_request", &date[..8]);
    let json = format!(
        r#"{{"expiration": "{expiration}", "conditions": [["eq", "$key", "{key}"], {{"bucket": "{B}"}}, {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}}, {{"x-amz-date": "{date}"}}]}}"#
    );
    let policy = B64.encode(json);
    let signature = sign_v4(ADMIN_SK, &date[..8], REGION, &policy);
    [
        ("x-amz-algorithm", "AWS4-HMAC-SHA256"),
        ("x-amz-credential", &credential),
        ("x-amz-date", &date),
        ("policy", &policy),
        ("x-amz-signature", &signature),
    ]
    .map(|(n, v)| (n.to_owned(), v.to_owned()))
    .to_vec()
}

/// POSTs `fields`, then `key`, then the file.
async fn post_with_key(app: &TestApp, fields: &[(String, String)], key: &str, data: &[u8]) -> Resp {
    let form = fields
        .iter()
        .fold(Form::new(), |f, (n, v)| f.text(n.clone(), v.clone()))
        .text("key", key.to_owned())
        .part("file", Part::bytes(data.to_vec()).file_name("f.bin"));
    let res = reqwest::Client::new()
        .post(format!("{}/{B}", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

#[tokio::test]
async fn a_reused_policy_is_checked_again_on_every_form() {
    let app = app_with_bucket().await;
    let fields = signed_form("allowed.txt", 3600);
    post_with_key(&app, &fields, "allowed.txt", b"one")
        .await
        .assert_status(204);
    // The same policy text again, with a key it does not allow: refused, nothing stored.
    let res = post_with_key(&app, &fields, "other.txt", b"two").await;
    res.assert_error(403, "AccessDenied");
    app.get(&format!("/{B}/other.txt")).await.assert_status(404);
    // And again with the right key: still accepted.
    post_with_key(&app, &fields, "allowed.txt", b"three")
        .await
        .assert_status(204);
    let res = app.get(&format!("/{B}/allowed.txt")).await;
    res.assert_status(200);
    assert_eq!(res.body.as_ref(), b"three");
}

#[tokio::test]
async fn a_reused_policy_expires() {
    let app = app_with_bucket().await;
    let fields = signed_form("soon.txt", 2);
    post_with_key(&app, &fields, "soon.txt", b"in time")
        .await
        .assert_status(204);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let res = post_with_key(&app, &fields, "soon.txt", b"too late").await;
    res.assert_error(403, "AccessDenied");
    assert!(
        res.text().contains("Policy expired"),
        "expected an expiry message: {}",
        res.text()
    );
    let res = app.get(&format!("/{B}/soon.txt")).await;
    assert_eq!(res.body.as_ref(), b"in time");
}
