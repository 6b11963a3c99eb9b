//! The POST policy document: the base64 `policy` form field, decoded and parsed.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>
//! (sections "Expiration", "Condition Matching", "Conditions" and "Character Escaping").
//!
//! AWS quirks handled here:
//! - Some clients wrap the base64 text or drop its padding, so whitespace is ignored and padding
//!   is optional. (The signature is still computed over the field exactly as sent.)
//! - The policy language allows `\$` and `\v` inside strings, which are not JSON escapes. A
//!   pre-pass rewrites them (to `$` and `\u000b`) before `serde_json` sees the text.
//! - Each condition keeps the text AWS echoes in "Policy Condition failed: …": the JSON array
//!   form with elements joined by `", "`, the `$` and the original casing kept, e.g.
//!   `["eq", "$success_action_redirect", "http://localhost.test/random"]` (AWS-recorded, LocalStack
//!   `test_post_object_policy_conditions_validation_eq`). A simple condition `{"acl": "x"}` is
//!   echoed as `["eq", "$acl", "x"]`, the form AWS used in an EC2 bundle-task error
//!   ("Policy Condition failed: [\"eq\", \"$acl\", \"aws-exec-read\"]").

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use serde_json::{Map, Value};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// A parsed POST policy: when it expires and what the form must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    expiration: OffsetDateTime,
    conditions: Vec<Condition>,
}

/// One entry of `conditions`, with the text AWS echoes when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    kind: ConditionKind,
    text: String,
}

/// What a condition requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKind {
    /// `{"field": "value"}` or `["eq", "$field", "value"]`: the form value must equal `value`
    /// exactly (values are case-sensitive; AWS-recorded `HTTP://` ≠ `http://`).
    Eq { field: FieldRef, value: String },
    /// `["starts-with", "$field", "prefix"]`: `""` accepts any value of a field that is present.
    StartsWith { field: FieldRef, prefix: String },
    /// `["content-length-range", min, max]`, inclusive. Integers and numeric strings are accepted;
    /// `None` records a bound that is not an integer (e.g. `"test"`), which makes the condition
    /// fail at check time, as AWS does (AWS-recorded `["content-length-range", "test", "10"]` →
    /// 403 "Policy Condition failed"). A negative bound is refused when the policy is parsed.
    ContentLengthRange { min: Option<u64>, max: Option<u64> },
}

/// The field a condition names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    written: String,
    name: Option<String>,
}

impl FieldRef {
    /// From an array condition's second element, e.g. `"$Content-Type"`. Without the leading `$`
    /// the reference is kept but names no field, so the condition always fails (AWS-recorded
    /// `["eq", "success_action_redirect", …]`).
    fn from_dollar(written: &str) -> Self {
        let name = written.strip_prefix('$').map(str::to_ascii_lowercase);
        Self {
            written: written.to_owned(),
            name,
        }
    }

    /// From a simple condition's property name, which carries no `$`.
    fn from_simple(written: &str) -> Self {
        Self {
            written: written.to_owned(),
            name: Some(written.to_ascii_lowercase()),
        }
    }

    /// The field name, lowercased and without `$` (field names are case-insensitive);
    /// `None` when the condition forgot the `$`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The reference as written in the policy (`$Content-Type`, `key`, …).
    pub fn as_written(&self) -> &str {
        &self.written
    }
}

/// Why a policy document was rejected: all 400 InvalidPolicyDocument.
///
/// Callers verify the signature over the `policy` field first, so a tampered document is reported
/// as 403 SignatureDoesNotMatch before any of these can occur (AWS and LocalStack behave so).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyDocumentError {
    /// 400 InvalidPolicyDocument. The field is not base64 (message not AWS-recorded).
    #[error("Invalid Policy: Invalid Base64 Encoding.")]
    InvalidBase64,
    /// 400 InvalidPolicyDocument. Not UTF-8, not JSON, or a float where AWS wants an integer
    /// (third-party report: a float in `content-length-range` gives this message).
    #[error("Invalid Policy: Invalid JSON.")]
    InvalidJson,
    /// 400 InvalidPolicyDocument. The top level is not a JSON object (message not AWS-recorded).
    #[error("Invalid Policy: Policy must be a JSON object.")]
    NotAnObject,
    /// 400 InvalidPolicyDocument. No `expiration` (message not AWS-recorded).
    #[error("Invalid Policy: Policy missing expiration.")]
    MissingExpiration,
    /// 400 InvalidPolicyDocument. `expiration` is not `yyyy-mm-ddThh:mm:ss[.fff]Z`
    /// (message not AWS-recorded).
    #[error("Invalid Policy: Invalid 'expiration' value: '{0}'")]
    InvalidExpiration(String),
    /// 400 InvalidPolicyDocument. No `conditions` array (message not AWS-recorded).
    #[error("Invalid Policy: Policy missing conditions.")]
    MissingConditions,
    /// 400 InvalidPolicyDocument. A `{…}` condition with zero or several properties
    /// (AWS-recorded message).
    #[error(
        "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one property specified."
    )]
    InvalidSimpleCondition,
    /// 400 InvalidPolicyDocument. Unknown operator, wrong arity, or a non-string value
    /// (message not AWS-recorded; postgate names the offending condition).
    #[error("Invalid Policy: {reason}: {condition}")]
    InvalidCondition {
        reason: &'static str,
        condition: String,
    },
}

impl PolicyDocumentError {
    /// The offending condition's text, for the extra `<Condition>` element postgate adds.
    pub fn condition(&self) -> Option<&str> {
        match self {
            Self::InvalidCondition { condition, .. } => Some(condition),
            _ => None,
        }
    }
}

impl Policy {
    /// Decodes the `policy` form field (standard base64; whitespace and missing padding tolerated)
    /// and parses it.
    pub fn from_base64(field: &str) -> Result<Self, PolicyDocumentError> {
        let compact: String = field.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let bytes = STANDARD_PAD_INDIFFERENT
            .decode(compact.as_bytes())
            .map_err(|_| PolicyDocumentError::InvalidBase64)?;
        let text = String::from_utf8(bytes).map_err(|_| PolicyDocumentError::InvalidJson)?;
        Self::from_json(&text)
    }

    /// Parses the decoded policy JSON (AWS's `\$` and `\v` escapes allowed).
    pub fn from_json(text: &str) -> Result<Self, PolicyDocumentError> {
        let value: Value = serde_json::from_str(&rewrite_aws_escapes(text))
            .map_err(|_| PolicyDocumentError::InvalidJson)?;
        let Value::Object(doc) = value else {
            return Err(PolicyDocumentError::NotAnObject);
        };
        let expiration = match doc.get("expiration") {
            None | Some(Value::Null) => return Err(PolicyDocumentError::MissingExpiration),
            Some(Value::String(s)) => parse_expiration(s)?,
            Some(other) => return Err(PolicyDocumentError::InvalidExpiration(other.to_string())),
        };
        let Some(Value::Array(raw)) = doc.get("conditions") else {
            return Err(PolicyDocumentError::MissingConditions);
        };
        let conditions = raw.iter().map(Condition::parse).collect::<Result<_, _>>()?;
        Ok(Self {
            expiration,
            conditions,
        })
    }

    /// When the policy stops being valid (an upload at or after this instant is refused).
    pub fn expiration(&self) -> OffsetDateTime {
        self.expiration
    }

    /// The conditions, in policy order (the order AWS evaluates and reports them).
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Condition {
    /// The condition as AWS echoes it: `["starts-with", "$key", "user/"]`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What the condition requires.
    pub fn kind(&self) -> &ConditionKind {
        &self.kind
    }

    /// The field the condition names (lowercase, no `$`), if any.
    pub fn field_name(&self) -> Option<&str> {
        match &self.kind {
            ConditionKind::Eq { field, .. } | ConditionKind::StartsWith { field, .. } => {
                field.name()
            }
            ConditionKind::ContentLengthRange { .. } => None,
        }
    }

    fn parse(value: &Value) -> Result<Self, PolicyDocumentError> {
        match value {
            Value::Object(map) => Self::parse_simple(map),
            Value::Array(items) => Self::parse_array(items),
            other => Err(PolicyDocumentError::InvalidCondition {
                reason: "A condition must be an object or an array",
                condition: other.to_string(),
            }),
        }
    }

    fn parse_simple(map: &Map<String, Value>) -> Result<Self, PolicyDocumentError> {
        let mut entries = map.iter();
        let (Some((name, value)), None) = (entries.next(), entries.next()) else {
            return Err(PolicyDocumentError::InvalidSimpleCondition);
        };
        let text = echo(&[
            Value::String("eq".to_owned()),
            Value::String(format!("${name}")),
            value.clone(),
        ]);
        let Value::String(value) = value else {
            return Err(PolicyDocumentError::InvalidCondition {
                reason: "Condition values must be strings",
                condition: text,
            });
        };
        let kind = ConditionKind::Eq {
            field: FieldRef::from_simple(name),
            value: value.clone(),
        };
        Ok(Self { kind, text })
    }

    fn parse_array(items: &[Value]) -> Result<Self, PolicyDocumentError> {
        let text = echo(items);
        let invalid = |reason| PolicyDocumentError::InvalidCondition {
            reason,
            condition: text.clone(),
        };
        let [Value::String(op), first, second] = items else {
            return Err(invalid(
                "Array conditions must have exactly three elements, the first a string",
            ));
        };
        // Operators are matched case-insensitively, as MinIO does; AWS's own behaviour for
        // `"EQ"` is not recorded anywhere we could find.
        let kind = match op.to_ascii_lowercase().as_str() {
            "eq" | "starts-with" => {
                let (Value::String(field), Value::String(operand)) = (first, second) else {
                    return Err(invalid("Condition field names and values must be strings"));
                };
                let field = FieldRef::from_dollar(field);
                if op.eq_ignore_ascii_case("eq") {
                    ConditionKind::Eq {
                        field,
                        value: operand.clone(),
                    }
                } else {
                    ConditionKind::StartsWith {
                        field,
                        prefix: operand.clone(),
                    }
                }
            }
            "content-length-range" => {
                let (min, max) = (length_bound(first)?, length_bound(second)?);
                // A negative bound is a malformed policy, not a condition that fails: AWS answers
                // 400 (ceph/s3-tests `test_post_object_invalid_content_length_argument`,
                // `[-1, 0]`). Numeric strings are read the same way.
                if [first, second].into_iter().any(is_negative) {
                    return Err(invalid("content-length-range bounds must not be negative"));
                }
                ConditionKind::ContentLengthRange { min, max }
            }
            _ => return Err(invalid("Unknown condition operator")),
        };
        Ok(Self { kind, text })
    }
}

/// A `content-length-range` bound: an integer or a numeric string. A float makes the whole policy
/// invalid JSON (as reported for AWS); anything else merely fails the condition later.
fn length_bound(value: &Value) -> Result<Option<u64>, PolicyDocumentError> {
    Ok(match value {
        Value::Number(n) if n.is_f64() => return Err(PolicyDocumentError::InvalidJson),
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    })
}

/// Whether a `content-length-range` bound is a negative number (`-1` or `"-1"`).
fn is_negative(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_i64().is_some_and(|n| n < 0),
        Value::String(s) => s
            .strip_prefix('-')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())),
        _ => false,
    }
}

/// Renders condition elements the way AWS echoes them: JSON values joined by `", "`.
fn echo(items: &[Value]) -> String {
    let parts: Vec<String> = items.iter().map(Value::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// `2007-12-01T12:00:00.000Z` or `2007-12-01T12:00:00Z` (UTC only).
fn parse_expiration(text: &str) -> Result<OffsetDateTime, PolicyDocumentError> {
    let with_fraction =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]Z");
    let without_fraction = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    PrimitiveDateTime::parse(text, with_fraction)
        .or_else(|_| PrimitiveDateTime::parse(text, without_fraction))
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| PolicyDocumentError::InvalidExpiration(text.to_owned()))
}

/// Rewrites the policy language's non-JSON escapes inside strings: `\$` → `$`, `\v` → `\u000b`.
/// Every other escape (including `\\`) is copied untouched, so `serde_json` still validates it.
fn rewrite_aws_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_string = !in_string;
                out.push(c);
            }
            '\\' if in_string => match chars.next() {
                Some('$') => out.push('$'),
                Some('v') => out.push_str("\\u000b"),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_vectors::SIGV4_EXAMPLE_POLICY;
    use time::macros::datetime;

    fn policy(conditions: &str) -> Result<Policy, PolicyDocumentError> {
        Policy::from_json(&format!(
            r#"{{"expiration": "2030-01-01T00:00:00Z", "conditions": [{conditions}]}}"#
        ))
    }

    #[test]
    fn decodes_the_aws_sigv4_example_policy() {
        let p = Policy::from_base64(SIGV4_EXAMPLE_POLICY).unwrap();
        assert_eq!(p.expiration(), datetime!(2015-12-30 12:00:00 UTC));
        let texts: Vec<&str> = p.conditions().iter().map(Condition::text).collect();
        assert_eq!(
            texts,
            [
                r#"["eq", "$bucket", "sigv4examplebucket"]"#,
                r#"["starts-with", "$key", "user/user1/"]"#,
                r#"["eq", "$acl", "public-read"]"#,
                r#"["eq", "$success_action_redirect", "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html"]"#,
                r#"["starts-with", "$Content-Type", "image/"]"#,
                r#"["eq", "$x-amz-meta-uuid", "14365123651274"]"#,
                r#"["eq", "$x-amz-server-side-encryption", "AES256"]"#,
                r#"["starts-with", "$x-amz-meta-tag", ""]"#,
                r#"["eq", "$x-amz-credential", "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request"]"#,
                r#"["eq", "$x-amz-algorithm", "AWS4-HMAC-SHA256"]"#,
                r#"["eq", "$x-amz-date", "20151229T000000Z"]"#,
            ]
        );
        assert_eq!(p.conditions()[4].field_name(), Some("content-type"));
    }

    #[test]
    fn base64_with_line_breaks_and_without_padding_is_accepted() {
        let json = r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[{"key":"a"}]}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        let unpadded = b64.trim_end_matches('=');
        let wrapped: String = unpadded
            .as_bytes()
            .chunks(10)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n ");
        assert!(b64.ends_with('='), "the test needs a padded encoding");
        let p = Policy::from_base64(&wrapped).unwrap();
        assert_eq!(p.conditions()[0].text(), r#"["eq", "$key", "a"]"#);
    }

    #[test]
    fn garbage_base64_is_rejected() {
        assert_eq!(
            Policy::from_base64("not base64!"),
            Err(PolicyDocumentError::InvalidBase64)
        );
        let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]);
        assert_eq!(
            Policy::from_base64(&not_utf8),
            Err(PolicyDocumentError::InvalidJson)
        );
    }

    #[test]
    fn expiration_with_and_without_millis() {
        for (text, want) in [
            (
                "2007-12-01T12:00:00.000Z",
                datetime!(2007-12-01 12:00:00 UTC),
            ),
            ("2007-12-01T12:00:00Z", datetime!(2007-12-01 12:00:00 UTC)),
            (
                "2007-12-01T12:00:00.5Z",
                datetime!(2007-12-01 12:00:00.5 UTC),
            ),
        ] {
            let p = Policy::from_json(&format!(r#"{{"expiration":"{text}","conditions":[]}}"#));
            assert_eq!(p.unwrap().expiration(), want, "{text}");
        }
        for bad in [
            "2007-12-01",
            "2007-12-01T12:00:00+01:00",
            "yesterday",
            "2007-13-01T12:00:00Z",
        ] {
            let p = Policy::from_json(&format!(r#"{{"expiration":"{bad}","conditions":[]}}"#));
            assert_eq!(
                p,
                Err(PolicyDocumentError::InvalidExpiration(bad.to_owned()))
            );
        }
    }

    #[test]
    fn expiration_and_conditions_are_required() {
        assert_eq!(
            Policy::from_json(r#"{"conditions":[]}"#),
            Err(PolicyDocumentError::MissingExpiration)
        );
        assert_eq!(
            Policy::from_json(r#"{"expiration":"2030-01-01T00:00:00Z"}"#),
            Err(PolicyDocumentError::MissingConditions)
        );
        assert_eq!(
            Policy::from_json("[]"),
            Err(PolicyDocumentError::NotAnObject)
        );
        assert_eq!(
            Policy::from_json("{"),
            Err(PolicyDocumentError::InvalidJson)
        );
    }

    #[test]
    fn aws_escapes_dollar_and_vertical_tab() {
        let p = policy(r#"["eq", "$key", "a\$b\vc\\$d\n"]"#).unwrap();
        let ConditionKind::Eq { value, .. } = p.conditions()[0].kind() else {
            panic!()
        };
        assert_eq!(value, "a$b\u{b}c\\$d\n");
        // Outside strings a backslash is still a JSON error.
        assert_eq!(policy(r#"\$"#), Err(PolicyDocumentError::InvalidJson));
    }

    #[test]
    fn simple_condition_with_two_properties_is_invalid() {
        let err = policy(r#"{"key": "a", "acl": "private"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one property specified."
        );
        assert_eq!(
            policy("{}"),
            Err(PolicyDocumentError::InvalidSimpleCondition)
        );
    }

    #[test]
    fn malformed_conditions_are_invalid_policy_documents() {
        for (cond, reason) in [
            (r#"["gt", "$key", "a"]"#, "Unknown condition operator"),
            (
                r#"["eq", "$key"]"#,
                "Array conditions must have exactly three elements, the first a string",
            ),
            (
                r#"["eq", "$key", "a", "b"]"#,
                "Array conditions must have exactly three elements, the first a string",
            ),
            (
                r#"["eq", "$key", 5]"#,
                "Condition field names and values must be strings",
            ),
            (r#"{"key": 5}"#, "Condition values must be strings"),
            ("42", "A condition must be an object or an array"),
        ] {
            match policy(cond) {
                Err(PolicyDocumentError::InvalidCondition { reason: r, .. }) => {
                    assert_eq!(r, reason)
                }
                other => panic!("{cond}: {other:?}"),
            }
        }
    }

    #[test]
    fn content_length_range_bounds() {
        let range = |c: &str| policy(c).map(|p| p.conditions()[0].kind().clone());
        assert_eq!(
            range(r#"["content-length-range", 1, 10]"#),
            Ok(ConditionKind::ContentLengthRange {
                min: Some(1),
                max: Some(10)
            })
        );
        assert_eq!(
            range(r#"["content-length-range", "1", "10"]"#),
            Ok(ConditionKind::ContentLengthRange {
                min: Some(1),
                max: Some(10)
            })
        );
        // Non-numbers are kept and fail at check time; floats are invalid JSON.
        assert_eq!(
            range(r#"["content-length-range", "test", "1e3"]"#),
            Ok(ConditionKind::ContentLengthRange {
                min: None,
                max: None
            })
        );
        // A negative bound makes the policy invalid (400), whether a number or a string.
        for cond in [
            r#"["content-length-range", -1, 0]"#,
            r#"["content-length-range", 0, -5]"#,
            r#"["content-length-range", "-1", "10"]"#,
            r#"["content-length-range", "test", -1]"#,
        ] {
            assert_eq!(
                range(cond),
                Err(PolicyDocumentError::InvalidCondition {
                    reason: "content-length-range bounds must not be negative",
                    condition: cond.to_owned(),
                }),
                "{cond}"
            );
        }
        assert_eq!(
            range(r#"["content-length-range", -1, 0]"#)
                .unwrap_err()
                .to_string(),
            r#"Invalid Policy: content-length-range bounds must not be negative: ["content-length-range", -1, 0]"#
        );
        assert_eq!(
            range(r#"["content-length-range", 1.5, 10]"#),
            Err(PolicyDocumentError::InvalidJson)
        );
        assert_eq!(
            policy(r#"["content-length-range", "test", "10"]"#)
                .unwrap()
                .conditions()[0]
                .text(),
            r#"["content-length-range", "test", "10"]"#
        );
    }

    #[test]
    fn operators_are_case_insensitive_and_echoed_as_written() {
        let p = policy(r#"["Starts-With", "$success_Action_REDIRECT", "http://"]"#).unwrap();
        assert_eq!(
            p.conditions()[0].text(),
            r#"["Starts-With", "$success_Action_REDIRECT", "http://"]"#
        );
        assert_eq!(
            p.conditions()[0].field_name(),
            Some("success_action_redirect")
        );
    }

    #[test]
    fn condition_without_dollar_names_no_field() {
        let p = policy(r#"["eq", "success_action_redirect", "x"]"#).unwrap();
        assert_eq!(p.conditions()[0].field_name(), None);
        let ConditionKind::Eq { field, .. } = p.conditions()[0].kind() else {
            panic!()
        };
        assert_eq!(field.as_written(), "success_action_redirect");
    }
}
