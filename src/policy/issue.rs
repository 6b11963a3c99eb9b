//! Issuing presigned POST forms, shaped like boto3's `generate_presigned_post`.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html> and
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-post-example.html>; the output shape is
//! botocore's (`botocore/signers.py` `generate_presigned_post`, `botocore/auth.py`
//! `S3SigV4PostAuth` and `HmacV1PostAuth`):
//!
//! - fields, in order: the extra fields (Content-Type, `x-amz-meta-*`, `success_action_*`, `acl`),
//!   `key`, then for SigV4 `x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `policy`,
//!   `x-amz-signature`, and for SigV2 `AWSAccessKeyId`, `policy`, `signature`;
//! - conditions, in order: `content-length-range`, the extras, `{"bucket": …}` (the bucket is a
//!   condition, never a field, as boto3 does), the key, then the three SigV4 fields;
//! - `expiration` as `%Y-%m-%dT%H:%M:%SZ`; the policy JSON is base64'd with standard padding.
//!
//! Every form field is covered by a condition, so an issued form passes [`Policy::check`]
//! (`x-amz-signature`, `policy`, `AWSAccessKeyId`, `signature` are exempt there).
//!
//! [`Policy::check`]: super::Policy::check

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

use super::signature::{ALGORITHM, sign_v2, sign_v4};
use super::{MAX_POST_OBJECT_SIZE, SigVersion};

/// Which keys the form may upload to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    /// Exactly this key: field `key` = the key, condition `{"key": …}`.
    Exact(String),
    /// Any key under this prefix: field `key` = `prefix${filename}` (the browser's file name is
    /// substituted), condition `["starts-with", "$key", prefix]`. The user may also edit the key
    /// field to anything else under the prefix.
    Prefix(String),
}

/// What the form's `Content-Type` field may be.
///
/// The policy language cannot express "one of these types": `eq` names one value, and
/// `starts-with` one prefix. [`ContentTypeRule::OneOf`] is therefore issued as `starts-with` the
/// longest common prefix of the list (`["image/png", "image/jpeg"]` → `image/`), which admits more
/// than the list; enforce the exact list elsewhere if it matters. S3 never inspects the bytes, so
/// none of these restrict what the file really is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentTypeRule {
    /// The form carries `Content-Type` = this value, with a matching `eq` condition.
    Exact(String),
    /// The client adds a `Content-Type` field starting with this prefix (not added to `fields`).
    Prefix(String),
    /// The client adds a `Content-Type` field; see the type docs for how this is approximated.
    OneOf(Vec<String>),
}

/// What to allow, in the terms of `generate_presigned_post`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicyRequest {
    pub bucket: String,
    pub key: KeySpec,
    /// Lifetime of the policy from `now`.
    pub expires_in: Duration,
    /// Inclusive size range in bytes, issued as `["content-length-range", min, max]`.
    pub min_size: u64,
    pub max_size: u64,
    pub content_type: Option<ContentTypeRule>,
    /// User metadata, sent as `x-amz-meta-<name>` (name lowercased, as S3 stores it).
    pub metadata: Vec<(String, String)>,
    /// 200, 201 or 204.
    pub success_action_status: Option<u16>,
    pub success_action_redirect: Option<String>,
    /// A canned ACL (`private`, `public-read`, …).
    pub acl: Option<String>,
    pub sig: SigVersion,
    /// Adds the field and exact condition `x-postgate-verify-type: on`: the file's bytes must
    /// match its declared Content-Type.
    pub verify_type: bool,
}

impl PostPolicyRequest {
    /// `generate_presigned_post`'s defaults: valid for one hour, any size up to `max_size`, no
    /// further conditions, SigV4. Callers set the rest with struct update syntax.
    pub fn new(bucket: impl Into<String>, key: KeySpec, max_size: u64) -> PostPolicyRequest {
        PostPolicyRequest {
            bucket: bucket.into(),
            key,
            expires_in: Duration::from_secs(3600),
            min_size: 0,
            max_size,
            content_type: None,
            metadata: Vec::new(),
            success_action_status: None,
            success_action_redirect: None,
            acl: None,
            sig: SigVersion::V4,
            verify_type: false,
        }
    }
}

/// A ready-to-use form: POST `fields` (then `file`) to `url`.
///
/// Serialises like boto3's return value: `{"url": …, "fields": {name: value, …}}`, fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPost {
    pub url: String,
    pub fields: Vec<(String, String)>,
}

impl PresignedPost {
    /// The value of a field (exact name).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct OrderedFields<'a>(&'a [(String, String)]);

impl Serialize for OrderedFields<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Serialize for PresignedPost {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("url", &self.url)?;
        map.serialize_entry("fields", &OrderedFields(&self.fields))?;
        map.end()
    }
}

/// Why a request cannot be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("min_size {min} is larger than max_size {max}")]
    InvalidSizeRange { min: u64, max: u64 },
    #[error("max_size {0} exceeds the 5 GiB POST limit")]
    SizeTooLarge(u64),
    #[error("success_action_status must be 200, 201 or 204, not {0}")]
    InvalidSuccessActionStatus(u16),
    #[error("the content-type list is empty")]
    EmptyContentTypeList,
    #[error("the expiration time is out of range")]
    ExpirationOutOfRange,
}

/// Builds and signs a presigned POST form. `url` is where the form posts (the bucket URL);
/// `region` and `now` fix the SigV4 credential scope and `x-amz-date`.
pub fn issue(
    req: &PostPolicyRequest,
    access_key: &str,
    secret: &str,
    region: &str,
    url: &str,
    now: OffsetDateTime,
) -> Result<PresignedPost, IssueError> {
    if req.min_size > req.max_size {
        return Err(IssueError::InvalidSizeRange {
            min: req.min_size,
            max: req.max_size,
        });
    }
    if req.max_size > MAX_POST_OBJECT_SIZE {
        return Err(IssueError::SizeTooLarge(req.max_size));
    }
    let now = now
        .checked_to_offset(time::UtcOffset::UTC)
        .and_then(|t| t.replace_nanosecond(0).ok())
        .ok_or(IssueError::ExpirationOutOfRange)?;
    let expiration = time::Duration::try_from(req.expires_in)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or(IssueError::ExpirationOutOfRange)?
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|_| IssueError::ExpirationOutOfRange)?;

    let mut fields: Vec<(String, String)> = Vec::new();
    let mut conditions: Vec<Value> =
        vec![json!(["content-length-range", req.min_size, req.max_size])];
    let mut exact = |name: &str, value: &str, fields: &mut Vec<(String, String)>| {
        fields.push((name.to_owned(), value.to_owned()));
        conditions.push(json!({ name: value }));
    };

    let mut starts_with = None;
    match &req.content_type {
        None => {}
        Some(ContentTypeRule::Exact(value)) => exact("Content-Type", value, &mut fields),
        Some(ContentTypeRule::Prefix(prefix)) => starts_with = Some(prefix.clone()),
        Some(ContentTypeRule::OneOf(list)) => match list.as_slice() {
            [] => return Err(IssueError::EmptyContentTypeList),
            [only] => exact("Content-Type", only, &mut fields),
            [first, rest @ ..] => starts_with = Some(common_prefix(first, rest).to_owned()),
        },
    }
    for (name, value) in &req.metadata {
        exact(
            &format!("x-amz-meta-{}", name.to_ascii_lowercase()),
            value,
            &mut fields,
        );
    }
    if let Some(status) = req.success_action_status {
        if !matches!(status, 200 | 201 | 204) {
            return Err(IssueError::InvalidSuccessActionStatus(status));
        }
        exact("success_action_status", &status.to_string(), &mut fields);
    }
    if let Some(redirect) = &req.success_action_redirect {
        exact("success_action_redirect", redirect, &mut fields);
    }
    if let Some(acl) = &req.acl {
        exact("acl", acl, &mut fields);
    }
    if req.verify_type {
        exact(crate::sniff::VERIFY_TYPE_FIELD, "on", &mut fields);
    }
    if let Some(prefix) = starts_with {
        conditions.push(json!(["starts-with", "$Content-Type", prefix]));
    }

    conditions.push(json!({ "bucket": req.bucket }));
    let key_field = match &req.key {
        KeySpec::Exact(key) => {
            conditions.push(json!({ "key": key }));
            key.clone()
        }
        KeySpec::Prefix(prefix) => {
            conditions.push(json!(["starts-with", "$key", prefix]));
            format!("{prefix}${{filename}}")
        }
    };
    fields.push(("key".to_owned(), key_field));

    let (date, credential, amz_date) = match req.sig {
        SigVersion::V4 => {
            let date = now
                .format(format_description!("[year][month][day]"))
                .map_err(|_| IssueError::ExpirationOutOfRange)?;
            let amz_date = now
                .format(format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .map_err(|_| IssueError::ExpirationOutOfRange)?;
            let credential = format!("{access_key}/{date}/{region}/s3/aws4_request");
            conditions.push(json!({ "x-amz-algorithm": ALGORITHM }));
            conditions.push(json!({ "x-amz-credential": credential }));
            conditions.push(json!({ "x-amz-date": amz_date }));
            (date, credential, amz_date)
        }
        SigVersion::V2 => Default::default(),
    };

    // Built by hand so that `expiration` comes first, as in boto3's `json.dumps` (serde_json's
    // map would sort the keys). `Value`'s Display cannot fail.
    let document = format!(
        r#"{{"expiration":{},"conditions":{}}}"#,
        Value::String(expiration),
        Value::Array(conditions)
    );
    let policy = STANDARD.encode(document);
    match req.sig {
        SigVersion::V4 => {
            let signature = sign_v4(secret, &date, region, &policy);
            fields.push(("x-amz-algorithm".to_owned(), ALGORITHM.to_owned()));
            fields.push(("x-amz-credential".to_owned(), credential));
            fields.push(("x-amz-date".to_owned(), amz_date));
            fields.push(("policy".to_owned(), policy));
            fields.push(("x-amz-signature".to_owned(), signature));
        }
        SigVersion::V2 => {
            let signature = sign_v2(secret, &policy);
            fields.push(("AWSAccessKeyId".to_owned(), access_key.to_owned()));
            fields.push(("policy".to_owned(), policy));
            fields.push(("signature".to_owned(), signature));
        }
    }
    Ok(PresignedPost {
        url: url.to_owned(),
        fields,
    })
}

/// The longest common prefix of `first` and every string of `rest`, on a char boundary.
fn common_prefix<'a>(first: &'a str, rest: &[String]) -> &'a str {
    let mut len = first.len();
    for other in rest {
        len = first
            .char_indices()
            .zip(other.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8())
            .min(len);
    }
    &first[..len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::conditions::FormFields;
    use crate::policy::signature::{PostAuth, parse_post_auth};
    use crate::policy::{ContentLengthRange, Policy, PolicyViolation};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2024-05-24 15:10:58.123 UTC);

    fn request(sig: SigVersion) -> PostPolicyRequest {
        PostPolicyRequest {
            sig,
            ..PostPolicyRequest::new(
                "my-bucket",
                KeySpec::Exact("uploads/report.pdf".into()),
                10 * 1024 * 1024,
            )
        }
    }

    /// Submits an issued form the way a browser would and runs every server-side check.
    fn round_trip(
        post: &PresignedPost,
        sig: SigVersion,
        extra: &[(&str, &str)],
        filename: Option<&str>,
    ) -> Result<ContentLengthRange, PolicyViolation> {
        let mut form: FormFields = post
            .fields
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        for (name, value) in extra {
            form.push(*name, *value);
        }
        let auth = parse_post_auth(&form, "us-east-1").unwrap();
        assert_eq!(auth.sig_version(), Some(sig));
        assert_eq!(auth.access_key(), Some("AKID"));
        let policy_b64 = form.get("policy").unwrap();
        assert!(auth.verify("SECRET", policy_b64));
        assert!(!auth.verify("OTHER", policy_b64));
        let policy = Policy::from_base64(policy_b64).unwrap();
        policy.check(&form.expand_filename(filename), "my-bucket", NOW, sig)
    }

    #[test]
    fn v4_shape_matches_boto3() {
        let post = issue(
            &request(SigVersion::V4),
            "AKID",
            "SECRET",
            "us-east-1",
            "http://localhost:9000/my-bucket",
            NOW,
        )
        .unwrap();
        let names: Vec<&str> = post.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "key",
                "x-amz-algorithm",
                "x-amz-credential",
                "x-amz-date",
                "policy",
                "x-amz-signature"
            ]
        );
        assert_eq!(
            post.field("x-amz-credential"),
            Some("AKID/20240524/us-east-1/s3/aws4_request")
        );
        assert_eq!(post.field("x-amz-date"), Some("20240524T151058Z"));
        let json = STANDARD.decode(post.field("policy").unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            concat!(
                r#"{"expiration":"2024-05-24T16:10:58Z","conditions":[["content-length-range",0,10485760],"#,
                r#"{"bucket":"my-bucket"},{"key":"uploads/report.pdf"},{"x-amz-algorithm":"AWS4-HMAC-SHA256"},"#,
                r#"{"x-amz-credential":"AKID/20240524/us-east-1/s3/aws4_request"},{"x-amz-date":"20240524T151058Z"}]}"#
            )
        );
        assert_eq!(
            round_trip(&post, SigVersion::V4, &[], None).map(|r| r.max()),
            Ok(10 * 1024 * 1024)
        );
        let json: Value = serde_json::from_str(&serde_json::to_string(&post).unwrap()).unwrap();
        assert_eq!(json["url"], "http://localhost:9000/my-bucket");
        assert_eq!(json["fields"]["key"], "uploads/report.pdf");
        assert!(
            serde_json::to_string(&post)
                .unwrap()
                .starts_with(r#"{"url":"http://localhost:9000/my-bucket","fields":{"key":"#)
        );
    }

    #[test]
    fn v2_shape_matches_boto3() {
        let post = issue(
            &request(SigVersion::V2),
            "AKID",
            "SECRET",
            "us-east-1",
            "https://h/b",
            NOW,
        )
        .unwrap();
        let names: Vec<&str> = post.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["key", "AWSAccessKeyId", "policy", "signature"]);
        assert_eq!(
            round_trip(&post, SigVersion::V2, &[], None).map(|r| r.min()),
            Ok(0)
        );
    }

    #[test]
    fn every_extra_field_round_trips() {
        for sig in [SigVersion::V4, SigVersion::V2] {
            let mut req = request(sig);
            req.key = KeySpec::Prefix("user/42/".into());
            req.min_size = 1;
            req.content_type = Some(ContentTypeRule::Exact("image/png".into()));
            req.metadata = vec![("Original-Name".into(), "✓ résumé".into())];
            req.success_action_status = Some(201);
            req.success_action_redirect = Some("https://app.example/done?x=1".into());
            req.acl = Some("public-read".into());
            let post = issue(
                &req,
                "AKID",
                "SECRET",
                "us-east-1",
                "https://h/my-bucket",
                NOW,
            )
            .unwrap();
            let names: Vec<&str> = post
                .fields
                .iter()
                .take(6)
                .map(|(n, _)| n.as_str())
                .collect();
            assert_eq!(
                names,
                [
                    "Content-Type",
                    "x-amz-meta-original-name",
                    "success_action_status",
                    "success_action_redirect",
                    "acl",
                    "key"
                ]
            );
            assert_eq!(post.field("key"), Some("user/42/${filename}"));
            let range = round_trip(&post, sig, &[], Some("C:\\tmp\\photo.png")).unwrap();
            assert_eq!((range.min(), range.max()), (1, 10 * 1024 * 1024));
            // Tampering with a signed field fails the policy.
            let err = round_trip(&post, sig, &[("acl", "private")], Some("a.png")).unwrap_err();
            assert_eq!(err.condition(), Some(r#"["eq", "$acl", "public-read"]"#));
        }
    }

    #[test]
    fn key_prefix_is_enforced_after_filename_expansion() {
        let mut req = request(SigVersion::V4);
        req.key = KeySpec::Prefix("user/42/".into());
        let post = issue(
            &req,
            "AKID",
            "SECRET",
            "us-east-1",
            "https://h/my-bucket",
            NOW,
        )
        .unwrap();
        let mut edited = post.clone();
        for (name, value) in &mut edited.fields {
            if name == "key" {
                *value = "user/43/${filename}".into();
            }
        }
        assert_eq!(
            round_trip(&edited, SigVersion::V4, &[], Some("a.txt")),
            Err(PolicyViolation::ConditionFailed {
                condition: r#"["starts-with", "$key", "user/42/"]"#.into(),
                field_name: Some("key".into()),
            })
        );
    }

    #[test]
    fn content_type_prefix_and_lists() {
        let mut req = request(SigVersion::V4);
        req.content_type = Some(ContentTypeRule::OneOf(vec![
            "image/png".into(),
            "image/jpeg".into(),
        ]));
        let post = issue(
            &req,
            "AKID",
            "SECRET",
            "us-east-1",
            "https://h/my-bucket",
            NOW,
        )
        .unwrap();
        assert_eq!(post.field("Content-Type"), None);
        assert!(
            round_trip(
                &post,
                SigVersion::V4,
                &[("Content-Type", "image/jpeg")],
                None
            )
            .is_ok()
        );
        assert!(matches!(
            round_trip(
                &post,
                SigVersion::V4,
                &[("Content-Type", "text/plain")],
                None
            ),
            Err(PolicyViolation::ConditionFailed { .. })
        ));
        // The form must send Content-Type once the policy has a condition on it.
        assert!(round_trip(&post, SigVersion::V4, &[], None).is_err());

        req.content_type = Some(ContentTypeRule::Prefix("video/".into()));
        let post = issue(
            &req,
            "AKID",
            "SECRET",
            "us-east-1",
            "https://h/my-bucket",
            NOW,
        )
        .unwrap();
        assert!(
            round_trip(
                &post,
                SigVersion::V4,
                &[("content-type", "video/mp4")],
                None
            )
            .is_ok()
        );

        req.content_type = Some(ContentTypeRule::OneOf(vec!["text/csv".into()]));
        let post = issue(
            &req,
            "AKID",
            "SECRET",
            "us-east-1",
            "https://h/my-bucket",
            NOW,
        )
        .unwrap();
        assert_eq!(post.field("Content-Type"), Some("text/csv"));
        assert!(round_trip(&post, SigVersion::V4, &[], None).is_ok());

        req.content_type = Some(ContentTypeRule::OneOf(Vec::new()));
        assert_eq!(
            issue(&req, "A", "S", "r", "u", NOW),
            Err(IssueError::EmptyContentTypeList)
        );
    }

    #[test]
    fn common_prefix_of_content_types() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            common_prefix("image/png", &list(&["image/jpeg", "image/gif"])),
            "image/"
        );
        assert_eq!(common_prefix("image/png", &list(&["text/plain"])), "");
        assert_eq!(common_prefix("a✓b", &list(&["a✓c"])), "a✓");
        assert_eq!(common_prefix("abc", &list(&["abcdef"])), "abc");
    }

    #[test]
    fn invalid_requests_are_refused() {
        let mut req = request(SigVersion::V4);
        req.min_size = 10;
        req.max_size = 5;
        assert_eq!(
            issue(&req, "A", "S", "r", "u", NOW),
            Err(IssueError::InvalidSizeRange { min: 10, max: 5 })
        );
        req.min_size = 0;
        req.max_size = MAX_POST_OBJECT_SIZE + 1;
        assert_eq!(
            issue(&req, "A", "S", "r", "u", NOW),
            Err(IssueError::SizeTooLarge(MAX_POST_OBJECT_SIZE + 1))
        );
        req.max_size = 1;
        req.success_action_status = Some(302);
        assert_eq!(
            issue(&req, "A", "S", "r", "u", NOW),
            Err(IssueError::InvalidSuccessActionStatus(302))
        );
        req.success_action_status = None;
        req.expires_in = Duration::from_secs(u64::MAX);
        assert_eq!(
            issue(&req, "A", "S", "r", "u", NOW),
            Err(IssueError::ExpirationOutOfRange)
        );
    }

    #[test]
    fn issued_policy_expires() {
        let post = issue(
            &request(SigVersion::V4),
            "AKID",
            "SECRET",
            "us-east-1",
            "u",
            NOW,
        )
        .unwrap();
        let policy = Policy::from_base64(post.field("policy").unwrap()).unwrap();
        assert_eq!(policy.expiration(), datetime!(2024-05-24 16:10:58 UTC));
        let form: FormFields = post
            .fields
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let later = datetime!(2024-05-24 16:10:58 UTC);
        assert!(matches!(
            policy.check(&form, "my-bucket", later, SigVersion::V4),
            Err(PolicyViolation::Expired { .. })
        ));
        assert!(matches!(
            parse_post_auth(&form, "us-east-1"),
            Ok(PostAuth::V4 { .. })
        ));
    }
}
