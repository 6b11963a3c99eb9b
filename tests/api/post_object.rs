//! POST Object: browser uploads with signed POST policies (`multipart/form-data` to the bucket
//! URL). Every expectation is AWS's behaviour as recorded in `S3-POST-REFERENCE.md` (error table,
//! §1 and §4): status, `<Code>`, the exact message where AWS's is known, and the extra elements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use postgate::auth::checksum::ChecksumAlgorithm;
use postgate::policy::{
    ContentTypeRule, KeySpec, PostPolicyRequest, SigVersion, issue, sign_v2, sign_v4,
};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::helpers::{
    ADMIN_AK, ADMIN_SK, REGION, Resp, TestApp, checksum, etag_of, obj, pattern, spawn_app, xml_tag,
};

/// The bucket most tests upload to.
pub(crate) const B: &str = "pgb";
/// A condition that lets any key through (hand-written policies need one: `key` is not exempt).
pub(crate) const ANY_KEY: &str = r#"["starts-with", "$key", ""]"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

pub(crate) async fn app_with_bucket() -> TestApp {
    let app = spawn_app().await;
    app.create_bucket(B).await;
    app
}

/// A boto3-like request for bucket `B`: exact key, 10 MiB max, one hour, SigV4.
fn request(key: &str) -> PostPolicyRequest {
    PostPolicyRequest::new(B, KeySpec::Exact(key.to_owned()), 10 * 1024 * 1024)
}

/// The form fields in send order; names compared case-insensitively when edited.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    fn add(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_owned(), value.to_owned()));
        self
    }

    fn remove(mut self, name: &str) -> Self {
        let before = self.0.len();
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        assert!(self.0.len() < before, "no field {name} to remove");
        self
    }

    fn set(mut self, name: &str, value: &str) -> Self {
        let field = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("no field {name} to set"));
        field.1 = value.to_owned();
        self
    }

    fn rename(mut self, name: &str, to: &str) -> Self {
        let field = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .unwrap_or_else(|| panic!("no field {name} to rename"));
        field.0 = to.to_owned();
        self
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no field {name}"))
    }

    /// The fields as text parts, in order (the file is added after).
    fn form(&self) -> Form {
        self.0
            .iter()
            .fold(Form::new(), |form, (n, v)| form.text(n.clone(), v.clone()))
    }

    /// The fields, then `file` with a file name.
    fn with_file(&self, filename: &str, data: &[u8]) -> Form {
        self.form().part(
            "file",
            Part::bytes(data.to_vec()).file_name(filename.to_owned()),
        )
    }
}

/// A form issued by the crate's own issuer, as the admin, now.
fn issued(app: &TestApp, req: &PostPolicyRequest) -> Fields {
    issued_by(app, req, ADMIN_AK, ADMIN_SK, OffsetDateTime::now_utc())
}

fn issued_by(
    app: &TestApp,
    req: &PostPolicyRequest,
    ak: &str,
    sk: &str,
    now: OffsetDateTime,
) -> Fields {
    let url = format!("{}/{}", app.base, req.bucket);
    Fields(issue(req, ak, sk, REGION, &url, now).unwrap().fields)
}

fn amz_date(now: OffsetDateTime) -> String {
    now.format(format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .unwrap()
}

fn expiration_in(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].000Z"
        ))
        .unwrap()
}

/// A SigV4 form (admin key) over a hand-written policy. `conditions` is raw JSON text (so that
/// escapes, floats and odd spellings reach the server as written); the bucket condition (for
/// `B`: every policy must name its bucket) and the three SigV4 conditions are appended.
/// `fields` come first, then the SigV4 fields, `policy` and `x-amz-signature`.
pub(crate) fn hand_v4(conditions: &str, fields: &[(&str, &str)]) -> Fields {
    let now = OffsetDateTime::now_utc();
    let date = amz_date(now);
    let credential = format!("{ADMIN_AK}/{}/{REGION}/s3/aws4_request", &date[..8]);
    let sep = if conditions.trim().is_empty() {
        ""
    } else {
        ", "
    };
    let json = format!(
        r#"{{"expiration": "{}", "conditions": [{conditions}{sep}{{"bucket": "{B}"}}, {{"x-amz-algorithm": "AWS4-HMAC-SHA256"}}, {{"x-amz-credential": "{credential}"}}, {{"x-amz-date": "{date}"}}]}}"#,
        expiration_in(3600)
    );
    let policy = B64.encode(json);
    let signature = sign_v4(ADMIN_SK, &date[..8], REGION, &policy);
    let mut out = Fields::default();
    for (n, v) in fields {
        out = out.add(n, v);
    }
    out.add("x-amz-algorithm", "AWS4-HMAC-SHA256")
        .add("x-amz-credential", &credential)
        .add("x-amz-date", &date)
        .add("policy", &policy)
        .add("x-amz-signature", &signature)
}

/// A client that does not follow redirects (a 303 answer is what the tests look at).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_form_to(app: &TestApp, path: &str, form: Form) -> Resp {
    let res = client()
        .post(format!("{}{path}", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

/// POSTs the fields and a file (`file.bin`) to bucket `B`.
pub(crate) async fn post(app: &TestApp, fields: &Fields, data: &[u8]) -> Resp {
    post_form_to(app, &format!("/{B}"), fields.with_file("file.bin", data)).await
}

/// POSTs a hand-built body with this `Content-Type`.
async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
    let res = client()
        .post(format!("{}{path}", app.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Resp::read(res).await
}

const BOUNDARY: &str = "----postgateTestBoundary7MA4YWxkTrZu0gW";

/// A multipart body: each part is `(raw header lines, value)`.
fn raw_multipart(parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (headers, value) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n{headers}\r\n\r\n").as_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// Text parts for `fields`, then a file part with this `Content-Disposition` tail.
fn raw_form(fields: &Fields, file_disposition: &str, data: &[u8]) -> Vec<u8> {
    let mut parts: Vec<(String, Vec<u8>)> = fields
        .0
        .iter()
        .map(|(n, v)| {
            (
                format!("Content-Disposition: form-data; name=\"{n}\""),
                v.as_bytes().to_vec(),
            )
        })
        .collect();
    parts.push((
        format!("Content-Disposition: form-data; name=\"file\"{file_disposition}"),
        data.to_vec(),
    ));
    raw_multipart(&parts)
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The text of `<tag>` in the response body.
fn tag(res: &Resp, name: &str) -> Option<String> {
    xml_tag(&res.text(), name)
}

#[track_caller]
fn assert_message(res: &Resp, message: &str) {
    assert_eq!(
        tag(res, "Message").as_deref(),
        Some(message),
        "{}",
        res.text()
    );
}

/// Asserts the object's bytes, and returns the GET response for header checks.
async fn assert_object(app: &TestApp, bucket: &str, key: &str, data: &[u8]) -> Resp {
    let got = app.get(&obj(bucket, key)).await;
    got.assert_status(200);
    assert_eq!(got.body.len(), data.len(), "size of {bucket}/{key}");
    assert!(got.body[..] == data[..], "bytes of {bucket}/{key}");
    got
}

async fn assert_no_object(app: &TestApp, bucket: &str, key: &str) {
    app.get(&obj(bucket, key))
        .await
        .assert_error(404, "NoSuchKey");
}

/// A body of `total` bytes in 64 KiB chunks that counts what the client actually pulled.
fn counted_stream(
    total: u64,
    pulled: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let chunks = total.div_ceil(CHUNK);
    futures_util::stream::iter((0..chunks).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK);
        pulled.fetch_add(len, Ordering::SeqCst);
        Ok(chunk.slice(..len as usize))
    }))
}

// ---------------------------------------------------------------------------------------------
// Success modes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_success_is_204_with_empty_body_etag_and_location() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("docs/hello.txt"));
    let res = post(&app, &fields, b"hello world").await;
    res.assert_status(204);
    assert!(res.body.is_empty());
    assert_eq!(
        res.header("etag"),
        Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\"")
    );
    assert_eq!(
        res.header("location"),
        Some(format!("{}/{B}/docs/hello.txt", app.base).as_str())
    );
    assert_eq!(res.header("content-type"), None, "204 carries no body type");
    let got = assert_object(&app, B, "docs/hello.txt", b"hello world").await;
    assert_eq!(got.header("etag"), Some(etag_of(b"hello world").as_str()));
}

#[tokio::test]
async fn success_action_status_200_is_empty() {
    let app = app_with_bucket().await;
    let mut req = request("k.txt");
    req.success_action_status = Some(200);
    let res = post(&app, &issued(&app, &req), b"abc").await;
    res.assert_status(200);
    assert!(res.body.is_empty(), "body: {}", res.text());
    assert_eq!(res.header("etag"), Some(etag_of(b"abc").as_str()));
    assert_object(&app, B, "k.txt", b"abc").await;
}

#[tokio::test]
async fn success_action_status_201_returns_post_response() {
    let app = app_with_bucket().await;
    let key = "dir/key\u{2014}x y.txt";
    let mut req = request(key);
    req.success_action_status = Some(201);
    let res = post(&app, &issued(&app, &req), b"abc").await;
    res.assert_status(201);
    let text = res.text();
    assert!(text.contains("<PostResponse"), "{text}");
    let location = format!("{}/{B}/dir/key%E2%80%94x%20y.txt", app.base);
    assert_eq!(tag(&res, "Location").as_deref(), Some(location.as_str()));
    assert_eq!(tag(&res, "Bucket").as_deref(), Some(B));
    assert_eq!(tag(&res, "Key").as_deref(), Some(key));
    assert_eq!(tag(&res, "ETag"), Some(etag_of(b"abc")));
    assert_eq!(res.header("location"), Some(location.as_str()));
    assert_eq!(res.header("etag"), Some(etag_of(b"abc").as_str()));
    assert_object(&app, B, key, b"abc").await;
}

#[tokio::test]
async fn invalid_success_action_status_gives_204() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"success_action_status": "302"}}"#),
        &[("key", "k"), ("success_action_status", "302")],
    );
    let res = post(&app, &fields, b"abc").await;
    res.assert_status(204);
    assert!(res.body.is_empty());
    assert_object(&app, B, "k", b"abc").await;
}

#[tokio::test]
async fn success_action_redirect_is_303_with_bucket_key_etag_added() {
    let app = app_with_bucket().await;
    let mut req = request("dir/k.txt");
    req.success_action_redirect = Some("https://example.com/done?a=b".to_owned());
    let res = post(&app, &issued(&app, &req), b"abc").await;
    res.assert_status(303);
    assert!(res.body.is_empty(), "body: {}", res.text());
    let location = res.header("location").unwrap();
    assert!(
        location.starts_with("https://example.com/done?a=b&"),
        "{location}"
    );
    let url = url::Url::parse(location).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let expected: Vec<(String, String)> = [
        ("a", "b"),
        ("bucket", B),
        ("key", "dir/k.txt"),
        ("etag", etag_of(b"abc").as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(pairs, expected);
    assert_object(&app, B, "dir/k.txt", b"abc").await;
}

#[tokio::test]
async fn deprecated_redirect_field_also_redirects() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"redirect": "http://example.com/r"}}"#),
        &[("key", "k"), ("redirect", "http://example.com/r")],
    );
    let res = post(&app, &fields, b"abc").await;
    res.assert_status(303);
    let location = res.header("location").unwrap();
    assert!(
        location.starts_with("http://example.com/r?bucket=pgb&key=k&etag="),
        "{location}"
    );
    assert_object(&app, B, "k", b"abc").await;
}

#[tokio::test]
async fn unparseable_redirect_is_ignored_and_gives_204() {
    let app = app_with_bucket().await;
    let mut req = request("k");
    req.success_action_redirect = Some("not a url at all".to_owned());
    let res = post(&app, &issued(&app, &req), b"abc").await;
    res.assert_status(204);
    assert_object(&app, B, "k", b"abc").await;
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigv4_form_stores_the_bytes() {
    let app = app_with_bucket().await;
    let data = pattern(300_000, 1);
    let fields = issued(&app, &request("big.bin"));
    assert!(fields.0.iter().any(|(n, _)| n == "x-amz-signature"));
    post(&app, &fields, &data).await.assert_status(204);
    assert_object(&app, B, "big.bin", &data).await;
}

#[tokio::test]
async fn sigv2_form_stores_the_bytes() {
    let app = app_with_bucket().await;
    let data = pattern(5000, 2);
    let mut req = request("v2.bin");
    req.sig = SigVersion::V2;
    let fields = issued(&app, &req);
    assert_eq!(fields.get("AWSAccessKeyId"), ADMIN_AK);
    post(&app, &fields, &data).await.assert_status(204);
    assert_object(&app, B, "v2.bin", &data).await;
}

#[tokio::test]
async fn expired_policy_is_403_policy_expired() {
    let app = app_with_bucket().await;
    let two_hours_ago = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let fields = issued_by(&app, &request("k"), ADMIN_AK, ADMIN_SK, two_hours_ago);
    let res = post(&app, &fields, b"abc").await;
    res.assert_error(403, "AccessDenied");
    assert_message(&res, "Invalid according to Policy: Policy expired.");
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn eq_on_key_violated_echoes_the_condition_as_written() {
    let app = app_with_bucket().await;
    // Compact JSON and `$Key` casing: AWS echoes the array joined by ", " with `$` and casing kept.
    let fields = hand_v4(r#"["eq","$Key","allowed.txt"]"#, &[("key", "other.txt")]);
    let res = post(&app, &fields, b"abc").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["eq", "$Key", "allowed.txt"]"#,
    );
    // postgate's extra elements: the condition and the field it names (lowercased).
    assert_eq!(
        tag(&res, "Condition").as_deref(),
        Some(r#"["eq", "$Key", "allowed.txt"]"#)
    );
    assert_eq!(tag(&res, "FieldName").as_deref(), Some("key"));
    assert_no_object(&app, B, "other.txt").await;

    let fields = hand_v4(r#"["eq","$Key","allowed.txt"]"#, &[("key", "allowed.txt")]);
    post(&app, &fields, b"abc").await.assert_status(204);
    assert_object(&app, B, "allowed.txt", b"abc").await;
}

#[tokio::test]
async fn starts_with_on_key_prefix() {
    let app = app_with_bucket().await;
    let mut req = request("");
    req.key = KeySpec::Prefix("user/alice/".to_owned());
    let fields = issued(&app, &req);
    assert_eq!(fields.get("key"), "user/alice/${filename}");

    let res = post(&app, &fields.clone().set("key", "user/alice/x.txt"), b"1").await;
    res.assert_status(204);
    assert_object(&app, B, "user/alice/x.txt", b"1").await;

    let res = post(&app, &fields.set("key", "user/bob/x.txt"), b"2").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "user/alice/"]"#,
    );
    assert_no_object(&app, B, "user/bob/x.txt").await;
}

#[tokio::test]
async fn empty_starts_with_matches_anything() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, ["starts-with", "$x-amz-meta-tag", ""]"#);
    let fields = hand_v4(&conditions, &[("key", "a"), ("x-amz-meta-tag", "whatever")]);
    post(&app, &fields, b"1").await.assert_status(204);
    let got = assert_object(&app, B, "a", b"1").await;
    assert_eq!(got.header("x-amz-meta-tag"), Some("whatever"));

    let fields = hand_v4(&conditions, &[("key", "b"), ("x-amz-meta-tag", "")]);
    post(&app, &fields, b"2").await.assert_status(204);
    assert_object(&app, B, "b", b"2").await;
}

#[tokio::test]
async fn content_type_list_fails_when_one_item_does_not_match() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, ["starts-with", "$Content-Type", "image/"]"#);
    let fields = hand_v4(
        &conditions,
        &[("key", "k"), ("Content-Type", "image/png,text/plain")],
    );
    let res = post(&app, &fields, b"1").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["starts-with", "$Content-Type", "image/"]"#,
    );
    assert_no_object(&app, B, "k").await;

    let fields = hand_v4(
        &conditions,
        &[("key", "k"), ("Content-Type", "image/png,image/jpeg")],
    );
    post(&app, &fields, b"1").await.assert_status(204);
    assert_object(&app, B, "k", b"1").await;
}

#[tokio::test]
async fn content_length_range_accepts_numeric_strings() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, ["content-length-range", "1", "10"]"#);
    let fields = hand_v4(&conditions, &[("key", "k")]);
    post(&app, &fields, b"12345").await.assert_status(204);
    assert_object(&app, B, "k", b"12345").await;

    let fields = hand_v4(&conditions, &[("key", "k2")]);
    let res = post(&app, &fields, b"12345678901").await;
    res.assert_error(400, "EntityTooLarge");
    assert_eq!(tag(&res, "MaxSizeAllowed").as_deref(), Some("10"));
    assert_no_object(&app, B, "k2").await;
}

#[tokio::test]
async fn non_numeric_content_length_range_fails_the_condition() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, ["content-length-range", "test", "10"]"#);
    let res = post(&app, &hand_v4(&conditions, &[("key", "k")]), b"1").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["content-length-range", "test", "10"]"#,
    );
}

#[tokio::test]
async fn file_larger_than_max_is_entity_too_large() {
    let app = app_with_bucket().await;
    let mut req = request("k");
    req.max_size = 10;
    let res = post(&app, &issued(&app, &req), b"12345678901").await;
    res.assert_error(400, "EntityTooLarge");
    assert_message(
        &res,
        "Your proposed upload exceeds the maximum allowed size",
    );
    assert_eq!(tag(&res, "ProposedSize").as_deref(), Some("11"));
    assert_eq!(tag(&res, "MaxSizeAllowed").as_deref(), Some("10"));
    assert_no_object(&app, B, "k").await;

    // The bounds are inclusive.
    post(&app, &issued(&app, &req), b"1234567890")
        .await
        .assert_status(204);
    assert_object(&app, B, "k", b"1234567890").await;
}

#[tokio::test]
async fn file_smaller_than_min_is_entity_too_small() {
    let app = app_with_bucket().await;
    let mut req = request("k");
    req.min_size = 5;
    req.max_size = 100;
    let res = post(&app, &issued(&app, &req), b"12").await;
    res.assert_error(400, "EntityTooSmall");
    assert_message(
        &res,
        "Your proposed upload is smaller than the minimum allowed size",
    );
    assert_eq!(tag(&res, "ProposedSize").as_deref(), Some("2"));
    assert_eq!(tag(&res, "MinSizeAllowed").as_deref(), Some("5"));
    assert_no_object(&app, B, "k").await;

    post(&app, &issued(&app, &req), b"12345")
        .await
        .assert_status(204);
    assert_object(&app, B, "k", b"12345").await;
}

#[tokio::test]
async fn field_not_in_policy_is_extra_input_field() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k")).add("x-amz-meta-foo", "bar");
    let res = post(&app, &fields, b"1").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        "Invalid according to Policy: Extra input fields: x-amz-meta-foo",
    );
    assert_eq!(tag(&res, "FieldName").as_deref(), Some("x-amz-meta-foo"));
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn x_ignore_fields_are_exempt_and_not_stored() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"))
        .add("x-ignore-submit", "Upload")
        .add("X-Ignore-Other", "1");
    post(&app, &fields, b"1").await.assert_status(204);
    let got = assert_object(&app, B, "k", b"1").await;
    assert!(
        !got.headers.keys().any(|k| k.as_str().contains("ignore")),
        "{:?}",
        got.headers
    );
}

#[tokio::test]
async fn field_names_are_case_insensitive_values_case_sensitive() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, ["starts-with", "$content-type", "image/"]"#);
    let capitalised = |fields: Fields| {
        fields
            .rename("policy", "Policy")
            .rename("x-amz-signature", "X-Amz-Signature")
            .rename("x-amz-algorithm", "X-Amz-Algorithm")
            .rename("x-amz-credential", "X-Amz-Credential")
            .rename("x-amz-date", "X-Amz-Date")
    };
    let fields = capitalised(hand_v4(
        &conditions,
        &[("key", "k"), ("Content-Type", "image/png")],
    ));
    post(&app, &fields, b"png").await.assert_status(204);
    let got = assert_object(&app, B, "k", b"png").await;
    assert_eq!(got.header("content-type"), Some("image/png"));

    let fields = capitalised(hand_v4(
        &conditions,
        &[("key", "k2"), ("Content-Type", "Image/png")],
    ));
    let res = post(&app, &fields, b"png").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["starts-with", "$content-type", "image/"]"#,
    );
    assert_no_object(&app, B, "k2").await;
}

#[tokio::test]
async fn duplicate_fields_are_matched_comma_joined() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"x-amz-meta-tag": "Ninja,Stallman"}}"#),
        &[
            ("key", "k"),
            ("x-amz-meta-tag", "Ninja"),
            ("x-amz-meta-tag", "Stallman"),
        ],
    );
    post(&app, &fields, b"1").await.assert_status(204);
    let got = assert_object(&app, B, "k", b"1").await;
    assert_eq!(got.header("x-amz-meta-tag"), Some("Ninja,Stallman"));
}

#[tokio::test]
async fn bucket_condition_uses_the_url_bucket_with_or_without_a_bucket_field() {
    let app = app_with_bucket().await;
    // boto3: the bucket is a condition, never a field.
    let fields = issued(&app, &request("boto"));
    assert!(!fields.0.iter().any(|(n, _)| n == "bucket"));
    post(&app, &fields, b"1").await.assert_status(204);
    assert_object(&app, B, "boto", b"1").await;

    // The JS SDK sends the bucket as a field too.
    let fields = issued(&app, &request("js")).add("bucket", B);
    post(&app, &fields, b"2").await.assert_status(204);
    assert_object(&app, B, "js", b"2").await;

    // A policy for another bucket does not work on this one.
    let mut other = request("other");
    other.bucket = "another-bucket".to_owned();
    let fields = issued(&app, &other);
    let res = post(&app, &fields, b"3").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["eq", "$bucket", "another-bucket"]"#,
    );
    assert_no_object(&app, B, "other").await;
}

#[tokio::test]
async fn condition_on_a_field_the_form_lacks_fails() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"acl": "public-read"}}"#),
        &[("key", "k")],
    );
    let res = post(&app, &fields, b"1").await;
    res.assert_error(403, "AccessDenied");
    assert_message(
        &res,
        r#"Invalid according to Policy: Policy Condition failed: ["eq", "$acl", "public-read"]"#,
    );
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn simple_condition_with_two_properties_is_invalid_policy_document() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"acl": "private", "x-amz-meta-a": "b"}}"#),
        &[("key", "k"), ("acl", "private"), ("x-amz-meta-a", "b")],
    );
    let res = post(&app, &fields, b"1").await;
    res.assert_error(400, "InvalidPolicyDocument");
    assert_message(
        &res,
        "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one property specified.",
    );
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn dollar_escape_in_policy_matches_a_literal_dollar() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, {{"x-amz-meta-price": "\$5"}}"#);
    assert!(conditions.contains(r"\$5"));
    let fields = hand_v4(&conditions, &[("key", "k"), ("x-amz-meta-price", "$5")]);
    post(&app, &fields, b"1").await.assert_status(204);
    let got = assert_object(&app, B, "k", b"1").await;
    assert_eq!(got.header("x-amz-meta-price"), Some("$5"));
}

#[tokio::test]
async fn float_in_content_length_range_is_invalid_json() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, ["content-length-range", 0, 10.5]"#),
        &[("key", "k")],
    );
    let res = post(&app, &fields, b"1").await;
    res.assert_error(400, "InvalidPolicyDocument");
    assert_message(&res, "Invalid Policy: Invalid JSON.");
    assert_no_object(&app, B, "k").await;
}

// ---------------------------------------------------------------------------------------------
// Signatures and permissions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tampered_policy_is_signature_does_not_match() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    let json = String::from_utf8(B64.decode(fields.get("policy")).unwrap()).unwrap();
    assert!(json.contains(",10485760]"), "{json}");
    let tampered = B64.encode(json.replace(",10485760]", ",99999999999]"));
    let signature = fields.get("x-amz-signature").to_owned();
    let res = post(&app, &fields.set("policy", &tampered), b"1").await;
    res.assert_error(403, "SignatureDoesNotMatch");
    assert_message(
        &res,
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    );
    assert_eq!(tag(&res, "AWSAccessKeyId").as_deref(), Some(ADMIN_AK));
    assert_eq!(tag(&res, "StringToSign"), Some(tampered));
    assert_eq!(tag(&res, "SignatureProvided"), Some(signature));
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn wrong_secret_is_signature_does_not_match_for_v4_and_v2() {
    let app = app_with_bucket().await;
    let now = OffsetDateTime::now_utc();
    let fields = issued_by(&app, &request("k"), ADMIN_AK, "not-the-secret", now);
    post(&app, &fields, b"1")
        .await
        .assert_error(403, "SignatureDoesNotMatch");
    let mut req = request("k");
    req.sig = SigVersion::V2;
    let fields = issued_by(&app, &req, ADMIN_AK, "not-the-secret", now);
    let res = post(&app, &fields, b"1").await;
    res.assert_error(403, "SignatureDoesNotMatch");
    assert_eq!(
        tag(&res, "SignatureProvided").as_deref(),
        Some(sign_v2("not-the-secret", fields.get("policy")).as_str())
    );
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn unknown_access_key_is_invalid_access_key_id() {
    let app = app_with_bucket().await;
    let now = OffsetDateTime::now_utc();
    let fields = issued_by(&app, &request("k"), "AKNOBODY", "secret", now);
    let res = post(&app, &fields, b"1").await;
    res.assert_error(403, "InvalidAccessKeyId");
    assert_message(
        &res,
        "The AWS Access Key Id you provided does not exist in our records.",
    );
    assert_eq!(tag(&res, "AWSAccessKeyId").as_deref(), Some("AKNOBODY"));
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn some_v4_fields_missing_is_invalid_argument() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    for (missing, argument) in [
        ("x-amz-algorithm", "X-Amz-Algorithm"),
        ("x-amz-credential", "X-Amz-Credential"),
        ("x-amz-date", "X-Amz-Date"),
        ("x-amz-signature", "X-Amz-Signature"),
    ] {
        let res = post(&app, &fields.clone().remove(missing), b"1").await;
        res.assert_error(400, "InvalidArgument");
        assert_message(
            &res,
            &format!(
                "Bucket POST must contain a field named '{argument}'.  If it is specified, please check the order of the fields."
            ),
        );
        assert_eq!(tag(&res, "ArgumentName").as_deref(), Some(argument));
        assert_eq!(tag(&res, "ArgumentValue").as_deref(), Some(""));
    }
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn v2_signature_field_missing_is_invalid_argument() {
    let app = app_with_bucket().await;
    let mut req = request("k");
    req.sig = SigVersion::V2;
    let fields = issued(&app, &req);
    let res = post(&app, &fields.clone().remove("signature"), b"1").await;
    res.assert_error(400, "InvalidArgument");
    assert_eq!(tag(&res, "ArgumentName").as_deref(), Some("Signature"));
    let res = post(&app, &fields.remove("AWSAccessKeyId"), b"1").await;
    res.assert_error(400, "InvalidArgument");
    assert_message(
        &res,
        "Bucket POST must contain a field named 'AWSAccessKeyId'.  If it is specified, please check the order of the fields.",
    );
    assert_eq!(tag(&res, "ArgumentName").as_deref(), Some("AWSAccessKeyId"));
}

#[tokio::test]
async fn policy_without_any_signature_fields_is_access_denied() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    let bare = Fields::default()
        .add("key", "k")
        .add("policy", fields.get("policy"));
    let res = post(&app, &bare, b"1").await;
    res.assert_error(403, "AccessDenied");
    assert_message(&res, "Access Denied");
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn key_without_write_permission_is_access_denied() {
    let app = app_with_bucket().await;
    app.state
        .db
        .write(|c| postgate::db::keys::insert(c, "other", "AKOTHER", "sk", false))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let fields = issued_by(&app, &request("k"), "AKOTHER", "sk", now);
    let res = post(&app, &fields, b"1").await;
    res.assert_error(403, "AccessDenied");
    assert_no_object(&app, B, "k").await;

    app.allow(B, "AKOTHER", postgate::db::buckets::Perm::Read)
        .await;
    post(&app, &fields, b"1")
        .await
        .assert_error(403, "AccessDenied");

    app.allow(B, "AKOTHER", postgate::db::buckets::Perm::Write)
        .await;
    post(&app, &fields, b"1").await.assert_status(204);
    assert_object(&app, B, "k", b"1").await;
}

#[tokio::test]
async fn anonymous_post_needs_a_public_read_write_bucket() {
    let app = app_with_bucket().await;
    app.state
        .db
        .write(|c| postgate::db::buckets::create(c, "open", ADMIN_AK, "public-read-write"))
        .await
        .unwrap();
    let fields = Fields::default().add("key", "anon.txt");

    let res = post(&app, &fields, b"private").await;
    res.assert_error(403, "AccessDenied");
    assert_no_object(&app, B, "anon.txt").await;

    let res = post_form_to(&app, "/open", fields.with_file("a.txt", b"public")).await;
    res.assert_status(204);
    assert_eq!(res.header("etag"), Some(etag_of(b"public").as_str()));
    assert_object(&app, "open", "anon.txt", b"public").await;
}

// ---------------------------------------------------------------------------------------------
// Form handling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_multipart_body_is_412_precondition_failed() {
    let app = app_with_bucket().await;
    let res = post_raw(
        &app,
        "/pgb",
        "application/x-www-form-urlencoded",
        b"key=k&file=abc".to_vec(),
    )
    .await;
    res.assert_error(412, "PreconditionFailed");
    assert_message(
        &res,
        "At least one of the pre-conditions you specified did not hold",
    );
    assert_eq!(
        tag(&res, "Condition").as_deref(),
        Some("Bucket POST must be of the enclosure-type multipart/form-data")
    );
}

#[tokio::test]
async fn missing_key_field_is_invalid_argument() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k")).remove("key");
    let res = post(&app, &fields, b"1").await;
    res.assert_error(400, "InvalidArgument");
    assert_message(
        &res,
        "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.",
    );
    assert_eq!(tag(&res, "ArgumentName").as_deref(), Some("key"));
    assert_eq!(tag(&res, "ArgumentValue").as_deref(), Some(""));

    // `key` after `file` does not count.
    let fields = issued(&app, &request("k"));
    let form = fields
        .clone()
        .remove("key")
        .with_file("f", b"1")
        .text("key", "k");
    let res = post_form_to(&app, "/pgb", form).await;
    res.assert_error(400, "InvalidArgument");
    assert_eq!(tag(&res, "ArgumentName").as_deref(), Some("key"));
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn no_file_is_incorrect_number_of_files() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    let res = post_form_to(&app, "/pgb", fields.form()).await;
    res.assert_error(400, "IncorrectNumberOfFilesInPostRequest");
    assert_message(&res, "POST requires exactly one file upload per request.");
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn malformed_multipart_is_malformed_post_request() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    let good = raw_form(&fields, "; filename=\"a.txt\"", b"data");

    // A part header line that is not a header.
    let mut bad_header = raw_form(&fields, "", b"");
    let head = format!("--{BOUNDARY}\r\nthis is not a header\r\n\r\nvalue\r\n");
    bad_header.splice(0..0, head.into_bytes());
    // The body stops in the middle of the file, without the closing boundary.
    let truncated = good[..good.len() - BOUNDARY.len() - 10].to_vec();

    for (what, body) in [("bad part header", bad_header), ("truncated", truncated)] {
        let res = post_raw(&app, "/pgb", &multipart_type(), body).await;
        assert_eq!(res.status, 400, "{what}: {}", res.text());
        assert_eq!(
            res.code().as_deref(),
            Some("MalformedPOSTRequest"),
            "{what}: {}",
            res.text()
        );
        assert_message(
            &res,
            "The body of your POST request is not well-formed multipart/form-data.",
        );
    }
    assert_no_object(&app, B, "k").await;

    // The control: the same form, well formed, is stored.
    post_raw(&app, "/pgb", &multipart_type(), good)
        .await
        .assert_status(204);
    assert_object(&app, B, "k", b"data").await;
}

#[tokio::test]
async fn fields_before_the_file_over_20kb_are_refused() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    let res = post(
        &app,
        &fields.clone().add("x-ignore-pad", &"p".repeat(21 * 1024)),
        b"1",
    )
    .await;
    res.assert_error(400, "MaxPostPreDataLengthExceeded");
    assert_message(
        &res,
        "Your POST request fields preceeding the upload file was too large.",
    );
    assert_eq!(
        tag(&res, "MaxPostPreDataLengthBytes").as_deref(),
        Some("20480")
    );
    assert_no_object(&app, B, "k").await;

    // Just under the limit is fine, and a large file after the fields does not count.
    let data = pattern(64 * 1024, 3);
    let res = post(
        &app,
        &fields.add("x-ignore-pad", &"p".repeat(16 * 1024)),
        &data,
    )
    .await;
    res.assert_status(204);
    assert_object(&app, B, "k", &data).await;
}

#[tokio::test]
async fn post_to_an_object_url_is_405() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    let res = post_form_to(&app, "/pgb/k", fields.with_file("f", b"1")).await;
    res.assert_error(405, "MethodNotAllowed");
    assert_message(
        &res,
        "The specified method is not allowed against this resource.",
    );
    assert_eq!(tag(&res, "Method").as_deref(), Some("POST"));
    assert_eq!(tag(&res, "ResourceType").as_deref(), Some("OBJECT"));
    assert_no_object(&app, B, "k").await;
}

#[tokio::test]
async fn post_to_a_missing_bucket_is_404() {
    let app = app_with_bucket().await;
    let mut req = request("k");
    req.bucket = "nosuchbucket".to_owned();
    let fields = issued(&app, &req);
    let res = post_form_to(&app, "/nosuchbucket", fields.with_file("f", b"1")).await;
    res.assert_error(404, "NoSuchBucket");
    assert_message(&res, "The specified bucket does not exist");
    assert_eq!(tag(&res, "BucketName").as_deref(), Some("nosuchbucket"));
}

#[tokio::test]
async fn filename_variable_in_key_uses_the_base_name() {
    let app = app_with_bucket().await;
    let mut req = request("");
    req.key = KeySpec::Prefix("up/".to_owned());
    let fields = issued(&app, &req);
    for (filename, data) in [
        ("C:\\dir\\a.txt", &b"windows"[..]),
        ("dir/b.txt", &b"unix"[..]),
        ("c.txt", &b"plain"[..]),
    ] {
        let res = post_form_to(&app, "/pgb", fields.with_file(filename, data)).await;
        res.assert_status(204);
    }
    assert_object(&app, B, "up/a.txt", b"windows").await;
    assert_object(&app, B, "up/b.txt", b"unix").await;
    assert_object(&app, B, "up/c.txt", b"plain").await;
}

#[tokio::test]
async fn filename_with_raw_backslashes_from_old_browsers_uses_the_base_name() {
    // Old IE sends the full client path in a quoted-string with the backslashes unescaped.
    let app = app_with_bucket().await;
    let mut req = request("");
    req.key = KeySpec::Prefix("up/".to_owned());
    let fields = issued(&app, &req);
    let body = raw_form(&fields, "; filename=\"C:\\dir\\a.txt\"", b"ie");
    assert!(String::from_utf8_lossy(&body).contains(r#"filename="C:\dir\a.txt""#));
    post_raw(&app, "/pgb", &multipart_type(), body)
        .await
        .assert_status(204);
    let listing = app
        .req(Method::GET, "/pgb")
        .query("list-type=2")
        .send()
        .await
        .text();
    assert!(listing.contains("<Key>up/a.txt</Key>"), "{listing}");
    assert_object(&app, B, "up/a.txt", b"ie").await;
}

#[tokio::test]
async fn filename_variable_in_a_metadata_field() {
    let app = app_with_bucket().await;
    let conditions = format!(r#"{ANY_KEY}, ["starts-with", "$x-amz-meta-orig", "name="]"#);
    let fields = hand_v4(
        &conditions,
        &[
            ("key", "k/${filename}"),
            ("x-amz-meta-orig", "name=${filename}"),
        ],
    );
    let res = post_form_to(&app, "/pgb", fields.with_file("dir/photo.jpg", b"1")).await;
    res.assert_status(204);
    let got = assert_object(&app, B, "k/photo.jpg", b"1").await;
    assert_eq!(got.header("x-amz-meta-orig"), Some("name=photo.jpg"));
}

#[tokio::test]
async fn file_part_without_filename_keeps_the_key_literal() {
    let app = app_with_bucket().await;
    let mut req = request("");
    req.key = KeySpec::Prefix("up/".to_owned());
    let fields = issued(&app, &req);
    let form = fields.form().text("file", "plain text content");
    post_form_to(&app, "/pgb", form).await.assert_status(204);
    assert_object(&app, B, "up/${filename}", b"plain text content").await;
}

#[tokio::test]
async fn rfc5987_filename_star_is_decoded() {
    let app = app_with_bucket().await;
    let mut req = request("");
    req.key = KeySpec::Prefix("up/".to_owned());
    let fields = issued(&app, &req);
    let body = raw_form(&fields, "; filename*=UTF-8''%E2%9C%93.txt", b"check");
    post_raw(&app, "/pgb", &multipart_type(), body)
        .await
        .assert_status(204);
    assert_object(&app, B, "up/\u{2713}.txt", b"check").await;
}

#[tokio::test]
async fn fields_after_the_file_are_ignored() {
    let app = app_with_bucket().await;
    let fields = issued(&app, &request("k"));
    // Not covered by the policy (so not checked), not stored, and no second `key`.
    let form = fields
        .with_file("f", b"1")
        .text("x-amz-meta-late", "x")
        .text("key", "other");
    post_form_to(&app, "/pgb", form).await.assert_status(204);
    let got = assert_object(&app, B, "k", b"1").await;
    assert_eq!(got.header("x-amz-meta-late"), None);
    assert_no_object(&app, B, "other").await;
}

#[tokio::test]
async fn content_type_comes_from_the_form_field_only() {
    let app = app_with_bucket().await;
    // The file part's own type is not used: binary/octet-stream.
    let fields = issued(&app, &request("a.png"));
    let file = Part::bytes(b"png".to_vec())
        .file_name("a.png")
        .mime_str("image/png")
        .unwrap();
    post_form_to(&app, "/pgb", fields.form().part("file", file))
        .await
        .assert_status(204);
    let got = assert_object(&app, B, "a.png", b"png").await;
    assert_eq!(got.header("content-type"), Some("binary/octet-stream"));

    // With the field, the field wins over the part's type.
    let mut req = request("b.png");
    req.content_type = Some(ContentTypeRule::Exact("text/plain".to_owned()));
    let fields = issued(&app, &req);
    let file = Part::bytes(b"txt".to_vec())
        .file_name("b.png")
        .mime_str("image/png")
        .unwrap();
    post_form_to(&app, "/pgb", fields.form().part("file", file))
        .await
        .assert_status(204);
    let got = assert_object(&app, B, "b.png", b"txt").await;
    assert_eq!(got.header("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn metadata_names_are_lowercased_and_non_ascii_values_rfc2047_encoded() {
    let app = app_with_bucket().await;
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"x-amz-meta-city": "Zürich"}}, {{"x-amz-meta-Plain": "ascii"}}"#),
        &[
            ("key", "k"),
            ("X-Amz-Meta-City", "Zürich"),
            ("X-AMZ-META-PLAIN", "ascii"),
        ],
    );
    post(&app, &fields, b"1").await.assert_status(204);
    for res in [app.get("/pgb/k").await, app.head("/pgb/k").await] {
        res.assert_status(200);
        assert_eq!(
            res.header("x-amz-meta-city"),
            Some("=?UTF-8?Q?Z=C3=BCrich?=")
        );
        assert_eq!(res.header("x-amz-meta-plain"), Some("ascii"));
    }
    let (b, k) = (B.to_owned(), "k".to_owned());
    let record = app
        .state
        .db
        .read(move |c| postgate::db::objects::get(c, &b, &k, false))
        .await
        .unwrap()
        .unwrap();
    let mut meta = record.meta.meta.clone();
    meta.sort();
    assert_eq!(
        meta,
        [
            ("city".to_owned(), "Zürich".to_owned()),
            ("plain".to_owned(), "ascii".to_owned())
        ]
    );
}

#[tokio::test]
async fn acl_public_read_makes_the_object_anonymously_readable() {
    let app = app_with_bucket().await;
    let mut req = request("pub.txt");
    req.acl = Some("public-read".to_owned());
    post(&app, &issued(&app, &req), b"public")
        .await
        .assert_status(204);
    let res = app
        .req(Method::GET, "/pgb/pub.txt")
        .anonymous()
        .send()
        .await;
    res.assert_status(200);
    assert_eq!(&res.body[..], b"public");

    // The control: without the acl the object stays private.
    post(&app, &issued(&app, &request("priv.txt")), b"private")
        .await
        .assert_status(204);
    app.req(Method::GET, "/pgb/priv.txt")
        .anonymous()
        .send()
        .await
        .assert_error(403, "AccessDenied");
}

#[tokio::test]
async fn tagging_field_is_stored_and_malformed_tagging_is_malformed_xml() {
    let app = app_with_bucket().await;
    let tagging = "<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag><Tag><Key>b</Key><Value>2</Value></Tag></TagSet></Tagging>";
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"tagging": "{tagging}"}}"#),
        &[("key", "k"), ("tagging", tagging)],
    );
    post(&app, &fields, b"1").await.assert_status(204);
    let got = assert_object(&app, B, "k", b"1").await;
    assert_eq!(got.header("x-amz-tagging-count"), Some("2"));

    let bad = "<Tagging><TagSet><Tag><Key>a</Key>";
    let fields = hand_v4(
        &format!(r#"{ANY_KEY}, {{"tagging": "{bad}"}}"#),
        &[("key", "k2"), ("tagging", bad)],
    );
    let res = post(&app, &fields, b"1").await;
    res.assert_error(400, "MalformedXML");
    assert_message(
        &res,
        "The XML you provided was not well-formed or did not validate against our published schema",
    );
    assert_no_object(&app, B, "k2").await;
}

#[tokio::test]
async fn storage_class_standard_is_accepted_unknown_is_invalid() {
    let app = app_with_bucket().await;
    let form = |key: &str, class: &str| {
        hand_v4(
            &format!(r#"{ANY_KEY}, {{"x-amz-storage-class": "{class}"}}"#),
            &[("key", key), ("x-amz-storage-class", class)],
        )
    };
    post(&app, &form("k", "STANDARD"), b"1")
        .await
        .assert_status(204);
    assert_object(&app, B, "k", b"1").await;

    let res = post(&app, &form("k2", "FANCY"), b"1").await;
    res.assert_error(400, "InvalidStorageClass");
    assert_message(&res, "The storage class you specified is not valid");
    assert_eq!(tag(&res, "StorageClassRequested").as_deref(), Some("FANCY"));
    assert_no_object(&app, B, "k2").await;
}

#[tokio::test]
async fn checksum_sha256_field_is_verified_and_stored() {
    let app = app_with_bucket().await;
    let data = b"checksummed";
    let good = checksum(ChecksumAlgorithm::Sha256, data);
    let form = |key: &str, value: &str| {
        hand_v4(
            &format!(r#"{ANY_KEY}, {{"x-amz-checksum-sha256": "{value}"}}"#),
            &[("key", key), ("x-amz-checksum-sha256", value)],
        )
    };
    post(&app, &form("k", &good), data).await.assert_status(204);
    let got = app
        .req(Method::GET, "/pgb/k")
        .header("x-amz-checksum-mode", "ENABLED")
        .send()
        .await;
    got.assert_status(200);
    assert_eq!(&got.body[..], data);
    assert_eq!(got.header("x-amz-checksum-sha256"), Some(good.as_str()));

    let wrong = checksum(ChecksumAlgorithm::Sha256, b"something else");
    let res = post(&app, &form("k2", &wrong), data).await;
    res.assert_error(400, "BadDigest");
    assert_message(
        &res,
        "The SHA256 you specified did not match the calculated checksum.",
    );
    assert_no_object(&app, B, "k2").await;
}

#[tokio::test]
async fn failed_post_over_an_existing_key_leaves_the_old_object() {
    let app = app_with_bucket().await;
    let old = pattern(1000, 4);
    app.put_object(B, "k", old.clone()).await;
    let mut req = request("k");
    req.max_size = 100_000;
    // Past the maximum by one byte, so the refusal happens while streaming the file.
    let res = post(&app, &issued(&app, &req), &pattern(100_001, 5)).await;
    res.assert_error(400, "EntityTooLarge");
    assert_eq!(tag(&res, "MaxSizeAllowed").as_deref(), Some("100000"));
    let got = assert_object(&app, B, "k", &old).await;
    assert_eq!(got.header("etag"), Some(etag_of(&old).as_str()));
    assert!(app.tmp_files().is_empty(), "{:?}", app.tmp_files());
}

/// Sends `fields` plus a streamed file of `size` bytes (with or without a known length) against
/// a 1 KiB policy; returns the response (or the send error) and how many bytes the client pulled.
async fn post_streamed(
    app: &TestApp,
    fields: &Fields,
    size: u64,
    known_length: bool,
) -> (Result<Resp, reqwest::Error>, u64, Duration) {
    let pulled = Arc::new(AtomicU64::new(0));
    let body = reqwest::Body::wrap_stream(counted_stream(size, pulled.clone()));
    let part = if known_length {
        Part::stream_with_length(body, size)
    } else {
        Part::stream(body)
    }
    .file_name("big.bin");
    let form = fields.form().part("file", part);
    let started = Instant::now();
    let sent = app
        .http
        .post(format!("{}/{B}", app.base))
        .multipart(form)
        .send()
        .await;
    let res = match sent {
        Ok(res) => Ok(Resp::read(res).await),
        Err(e) => Err(e),
    };
    let (pulled, elapsed) = (pulled.load(Ordering::SeqCst), started.elapsed());
    eprintln!("{size} bytes (length known: {known_length}): {pulled} pulled in {elapsed:?}");
    (res, pulled, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_body_with_content_length_is_refused_before_it_is_read() {
    let app = app_with_bucket().await;
    let mut req = request("huge");
    req.max_size = 1024;
    let fields = issued(&app, &req);
    const HUNDRED_MIB: u64 = 100 * 1024 * 1024;
    let (res, pulled, elapsed) = post_streamed(&app, &fields, HUNDRED_MIB, true).await;
    // The server answers and closes while the client is still writing: with its lingering
    // close, the client reads the answer instead of a reset.
    let res = res.unwrap_or_else(|e| panic!("no answer after {elapsed:?} ({pulled} pulled): {e}"));
    res.assert_error(400, "EntityTooLarge");
    assert_eq!(tag(&res, "MaxSizeAllowed").as_deref(), Some("1024"));
    let proposed: u64 = tag(&res, "ProposedSize").unwrap().parse().unwrap();
    assert!(proposed > 1024, "ProposedSize {proposed}");
    assert!(
        elapsed < Duration::from_millis(1000),
        "took {elapsed:?} ({pulled} bytes pulled)"
    );
    assert!(pulled < HUNDRED_MIB / 4, "client sent {pulled} bytes");
    assert_no_object(&app, B, "huge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_chunked_body_is_refused_after_a_little_past_the_max() {
    let app = app_with_bucket().await;
    let mut req = request("huge");
    req.max_size = 1024;
    let fields = issued(&app, &req);
    const HUNDRED_MIB: u64 = 100 * 1024 * 1024;
    let (res, pulled, elapsed) = post_streamed(&app, &fields, HUNDRED_MIB, false).await;
    // The server answers and closes while the client is still writing: with its lingering
    // close, the client reads the answer instead of a reset.
    let res = res.unwrap_or_else(|e| panic!("no answer after {elapsed:?} ({pulled} pulled): {e}"));
    res.assert_error(400, "EntityTooLarge");
    assert_eq!(tag(&res, "MaxSizeAllowed").as_deref(), Some("1024"));
    let proposed: u64 = tag(&res, "ProposedSize").unwrap().parse().unwrap();
    assert!(
        (1025..=1024 + 256 * 1024).contains(&proposed),
        "ProposedSize {proposed}: the server read far past the max"
    );
    assert!(pulled < HUNDRED_MIB / 4, "client sent {pulled} bytes");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_no_object(&app, B, "huge").await;
}
