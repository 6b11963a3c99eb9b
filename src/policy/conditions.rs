//! Evaluating a POST policy against the submitted form, and the small rules around a POST upload.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html>
//! ("Condition Matching", "Conditions") and <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html>
//! (`${filename}`, `success_action_status`, `success_action_redirect`).
//!
//! # Order of checks in [`Policy::check`]
//! 1. Expiry (`expiration <= now`) → "Policy expired.".
//! 2. Conditions in policy order; the first failure is reported, echoed as written.
//! 3. Fields no condition covers → "Extra input fields: `<name>`": first `bucket`, which every
//!    policy must name (the URL bucket is an input even when the form has no `bucket` field),
//!    then the form's fields in form order, names lowercased.
//!
//! Evidence: LocalStack (whose messages are AWS-recorded) checks expiry before conditions. AWS
//! reported `["eq", "success_action_redirect", …]` (the `$` missing) as a *failed condition* for a
//! form that sends `success_action_redirect`; had coverage been checked first, that field (named
//! by no valid condition) would have been reported as an extra input field instead. AWS lowercases
//! the name in "Extra input fields": a form sending `Content-Type` got
//! "Extra input fields: content-type" (asafdav/ng-s3upload#23, waynehoover/s3_direct_upload#54).
//! Size limits from `content-length-range` can only be checked while the file streams, so they are
//! returned ([`ContentLengthRange`]) rather than checked here.

use percent_encoding::percent_decode_str;
use time::OffsetDateTime;

use super::document::{ConditionKind, FieldRef, Policy};
use super::{MAX_POST_OBJECT_SIZE, SigVersion};

/// The non-file fields of a POST form, in the order they were sent.
///
/// Names are matched case-insensitively (AWS-recorded: `Policy`/`policy`,
/// `X-Amz-Credential`/`x-amz-credential`). A name sent twice keeps one entry whose value is the
/// values joined with `","`, as the POST Object docs describe (`Ninja,Stallman`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormFields {
    entries: Vec<FormField>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FormField {
    name: String,
    lower: String,
    value: String,
}

impl FormFields {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field; a repeated name (in any casing) appends `","` and the value to the first.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        let lower = name.to_ascii_lowercase();
        if let Some(field) = self.entries.iter_mut().find(|f| f.lower == lower) {
            field.value.push(',');
            field.value.push_str(&value);
        } else {
            self.entries.push(FormField { name, lower, value });
        }
    }

    /// The value of `name`, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|f| f.lower.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }

    /// Whether the form has a field called `name` (any casing).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// `(name as first sent, value)` pairs in form order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
    }

    /// Number of distinct field names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the form has no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A copy with `${filename}` expanded in every value (see [`expand_filename`]). AWS recognises
    /// the variable in all form fields, and conditions are checked against the expanded values.
    pub fn expand_filename(&self, filename: Option<&str>) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|f| FormField {
                value: expand_filename(&f.value, filename),
                ..f.clone()
            })
            .collect();
        Self { entries }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for FormFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut fields = Self::new();
        for (name, value) in iter {
            fields.push(name, value);
        }
        fields
    }
}

/// The inclusive size range the upload must fall in, enforced by the caller while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLengthRange {
    min: u64,
    max: u64,
}

impl Default for ContentLengthRange {
    /// `0..=5 GiB`: what applies when the policy has no `content-length-range`.
    fn default() -> Self {
        Self {
            min: 0,
            max: MAX_POST_OBJECT_SIZE,
        }
    }
}

impl ContentLengthRange {
    /// Smallest allowed size in bytes.
    pub fn min(&self) -> u64 {
        self.min
    }

    /// Largest allowed size in bytes (never above 5 GiB).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Narrows the range; several `content-length-range` conditions all have to hold.
    fn intersect(self, min: u64, max: u64) -> Self {
        Self {
            min: self.min.max(min),
            max: self.max.min(max),
        }
    }

    /// Checks a (proposed or final) size. While streaming, call it with the running total to
    /// fail as soon as the maximum is passed; at the end, with the total to check the minimum.
    pub fn check(&self, size: u64) -> Result<(), SizeViolation> {
        if size > self.max {
            Err(SizeViolation::TooLarge {
                proposed_size: size,
                max_size_allowed: self.max,
            })
        } else if size < self.min {
            Err(SizeViolation::TooSmall {
                proposed_size: size,
                min_size_allowed: self.min,
            })
        } else {
            Ok(())
        }
    }
}

/// The upload's size is outside the policy's `content-length-range` (or above 5 GiB).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeViolation {
    /// 400 EntityTooLarge, with `<ProposedSize>` and `<MaxSizeAllowed>` (AWS-recorded).
    #[error("Your proposed upload exceeds the maximum allowed size")]
    TooLarge {
        proposed_size: u64,
        max_size_allowed: u64,
    },
    /// 400 EntityTooSmall, with `<ProposedSize>` and `<MinSizeAllowed>` (AWS-recorded).
    #[error("Your proposed upload is smaller than the minimum allowed size")]
    TooSmall {
        proposed_size: u64,
        min_size_allowed: u64,
    },
}

/// The form does not satisfy the policy.
///
/// Messages are AWS's, word for word. `field_name` and `condition` are postgate extras that the
/// server adds as `<FieldName>` and `<Condition>` children of `<Error>` (SDKs ignore unknown
/// elements).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// 403 AccessDenied. `expiration <= now`.
    #[error("Invalid according to Policy: Policy expired.")]
    Expired { expiration: OffsetDateTime },
    /// 403 AccessDenied. A condition does not hold: wrong value, missing field, condition written
    /// without `$`, or a `content-length-range` bound that is not a number. `condition` is the
    /// condition as AWS echoes it; `field_name` the field it names (lowercase), or as written when
    /// the `$` is missing, or `None` for `content-length-range`.
    #[error("Invalid according to Policy: Policy Condition failed: {condition}")]
    ConditionFailed {
        condition: String,
        field_name: Option<String>,
    },
    /// 403 AccessDenied. A form field that no condition covers, lowercased like AWS does.
    #[error("Invalid according to Policy: Extra input fields: {field_name}")]
    ExtraInputField { field_name: String },
}

impl PolicyViolation {
    /// The field concerned, for the extra `<FieldName>` element.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Self::Expired { .. } => None,
            Self::ConditionFailed { field_name, .. } => field_name.as_deref(),
            Self::ExtraInputField { field_name } => Some(field_name),
        }
    }

    /// The failed condition as written, for the extra `<Condition>` element.
    pub fn condition(&self) -> Option<&str> {
        match self {
            Self::ConditionFailed { condition, .. } => Some(condition),
            _ => None,
        }
    }
}

impl Policy {
    /// Checks the form against this policy and returns the size range to enforce.
    ///
    /// `fields` must already have `${filename}` expanded. `$bucket` always means `url_bucket`,
    /// whether or not the form has a `bucket` field (boto3 sends none, the JS SDK sends one).
    /// See the module docs for the order of checks.
    pub fn check(
        &self,
        fields: &FormFields,
        url_bucket: &str,
        now: OffsetDateTime,
        sig: SigVersion,
    ) -> Result<ContentLengthRange, PolicyViolation> {
        if self.expiration() <= now {
            return Err(PolicyViolation::Expired {
                expiration: self.expiration(),
            });
        }
        let mut range = ContentLengthRange::default();
        for condition in self.conditions() {
            let (holds, field) = match condition.kind() {
                ConditionKind::Eq { field, value } => (
                    lookup(field, fields, url_bucket).is_some_and(|actual| actual == value),
                    Some(field),
                ),
                ConditionKind::StartsWith { field, prefix } => (
                    lookup(field, fields, url_bucket)
                        .is_some_and(|actual| starts_with(field, actual, prefix)),
                    Some(field),
                ),
                ConditionKind::ContentLengthRange {
                    min: Some(min),
                    max: Some(max),
                } => {
                    range = range.intersect(*min, *max);
                    (true, None)
                }
                ConditionKind::ContentLengthRange { .. } => (false, None),
            };
            if !holds {
                return Err(PolicyViolation::ConditionFailed {
                    condition: condition.text().to_owned(),
                    field_name: field.map(|f| f.name().unwrap_or(f.as_written()).to_owned()),
                });
            }
        }
        let covered = |lower: &str| {
            self.conditions()
                .iter()
                .any(|c| c.field_name() == Some(lower))
        };
        // The bucket is an input whether or not the form has a `bucket` field (it is the URL's),
        // so a policy must name it: AWS refuses a policy without a bucket condition with
        // "Extra input fields: bucket" (aws/aws-sdk-php#3292). Otherwise a policy signed for
        // one bucket would upload into any other bucket the key may write to.
        if !covered("bucket") {
            return Err(PolicyViolation::ExtraInputField {
                field_name: "bucket".to_owned(),
            });
        }
        for (name, _) in fields.iter() {
            let lower = name.to_ascii_lowercase();
            if !covered(&lower) && !is_exempt(&lower, sig) {
                return Err(PolicyViolation::ExtraInputField { field_name: lower });
            }
        }
        Ok(range)
    }
}

/// The value a condition is compared with; `None` fails the condition.
fn lookup<'a>(field: &FieldRef, fields: &'a FormFields, url_bucket: &'a str) -> Option<&'a str> {
    match field.name()? {
        "bucket" => Some(url_bucket),
        name => fields.get(name),
    }
}

/// `starts-with`, with AWS's Content-Type rule: a value containing commas is a list, and every
/// (trimmed) item must start with the prefix, so `image/png,text/plain` fails `image/`.
fn starts_with(field: &FieldRef, actual: &str, prefix: &str) -> bool {
    if field.name() == Some("content-type") && actual.contains(',') {
        actual
            .split(',')
            .all(|item| item.trim().starts_with(prefix))
    } else {
        actual.starts_with(prefix)
    }
}

/// Fields that need no condition: `x-amz-signature`, `file`, `policy`, `x-ignore-*`, and for
/// SigV2 also `awsaccesskeyid` and `signature`. `bucket` is *not* exempt.
fn is_exempt(lower: &str, sig: SigVersion) -> bool {
    matches!(lower, "x-amz-signature" | "file" | "policy")
        || lower.starts_with("x-ignore-")
        || (sig == SigVersion::V2 && matches!(lower, "awsaccesskeyid" | "signature"))
}

/// Replaces every `${filename}` in `value` with the base name of the uploaded file (the text after
/// the last `/` or `\`, since old browsers send full client paths). Without a file name (the
/// `file` part had no `filename=`), the value is left as is, so the key stays literally
/// `…${filename}` (AWS-recorded, LocalStack `test_post_object_with_file_as_string`).
pub fn expand_filename(value: &str, filename: Option<&str>) -> String {
    match filename {
        Some(name) => {
            let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
            value.replace("${filename}", base)
        }
        None => value.to_owned(),
    }
}

/// Why the `file` part's file name was refused (postgate extension; AWS has no such check).
/// The server maps these to 400 InvalidArgument with ArgumentName `file`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilenameError {
    /// The file name contains a control character (CR, LF, NUL, DEL, C1…).
    #[error("The file name contains a control character.")]
    ControlCharacter,
    /// `filename*` is malformed or not valid UTF-8, and there is no plain `filename` to fall back on.
    #[error("The file name in filename* is not a valid RFC 5987 value.")]
    InvalidExtendedValue,
}

/// Extracts the file name from a part's `Content-Disposition` header value.
///
/// `filename*` (RFC 5987 / RFC 6266, e.g. `filename*=UTF-8''%E2%9C%93.txt`) is preferred over
/// `filename`; charsets UTF-8 and ISO-8859-1 are understood, others fall back to `filename`.
/// Returns `Ok(None)` when the part has no file name at all (a plain text `file` field).
pub fn filename_from_content_disposition(header: &str) -> Result<Option<String>, FilenameError> {
    let mut plain = None;
    let mut extended = None;
    let mut extended_malformed = false;
    // The disposition type (`form-data`) comes first; parameters follow after `;`.
    for (name, value) in content_disposition_params(header).into_iter().skip(1) {
        if name.eq_ignore_ascii_case("filename*") {
            match decode_ext_value(&value) {
                Some(Some(decoded)) => extended = Some(decoded),
                Some(None) => {}
                None => extended_malformed = true,
            }
        } else if name.eq_ignore_ascii_case("filename") {
            plain = Some(value);
        }
    }
    let name = match (extended, plain) {
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) if extended_malformed => return Err(FilenameError::InvalidExtendedValue),
        (None, None) => return Ok(None),
    };
    if name.chars().any(char::is_control) {
        return Err(FilenameError::ControlCharacter);
    }
    Ok(Some(name))
}

/// Splits `type; a=b; c="d;e"` into `[("type", ""), ("a", "b"), ("c", "d;e")]`, unquoting
/// quoted-strings (`\"` and `\\` escapes; any other backslash is kept).
fn content_disposition_params(header: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = header.chars().peekable();
    loop {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == ';' || c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        // Only `\"` and `\\` are escapes: browsers send other backslashes raw
                        // (old IE sends `C:\dir\a.txt`), as Werkzeug reads them.
                        '\\' if matches!(chars.peek(), Some('"' | '\\')) => {
                            value.extend(chars.next())
                        }
                        _ => value.push(c),
                    }
                }
            }
            while let Some(&c) = chars.peek() {
                if c == ';' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.push((name.trim().to_owned(), value.trim_end().to_owned()));
        if chars.next().is_none() {
            return params;
        }
    }
}

/// Decodes an RFC 5987 `ext-value` (`charset'language'pct-encoded`). `None` = malformed;
/// `Some(None)` = well-formed in a charset we do not decode.
fn decode_ext_value(value: &str) -> Option<Option<String>> {
    let mut parts = value.splitn(3, '\'');
    let (charset, _language, encoded) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok().map(Some)
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(Some(bytes.into_iter().map(char::from).collect()))
    } else {
        Some(None)
    }
}

/// Encodes a user-metadata value for a response header the way S3 does: printable US-ASCII values
/// are returned as is; anything else becomes one RFC 2047 encoded-word, `=?UTF-8?Q?…?=`
/// (AWS-recorded in LocalStack `test_post_object_with_unicode_metadata`, per the reference).
///
/// In the Q encoding, letters, digits and `! * + - /` stay literal, a space becomes `_`, and every
/// other byte is `=XX` (uppercase hex), which keeps `=`, `?` and `_` unambiguous (RFC 2047 §4.2,
/// §5(3)). The value is not split into 75-character words: HTTP headers have no line limit.
pub fn rfc2047_encode(value: &str) -> String {
    if value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() * 3 + 12);
    out.push_str("=?UTF-8?Q?");
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('_'),
            _ => out.push_str(&format!("={byte:02X}")),
        }
    }
    out.push_str("?=");
    out
}

/// What a successful POST answers, from the `success_action_status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuccessActionStatus {
    /// 200 with an empty body.
    Ok,
    /// 201 with a `<PostResponse>` document.
    Created,
    /// 204, the default.
    #[default]
    NoContent,
}

impl SuccessActionStatus {
    /// Parses the field: `200`, `201` or `204`; anything else (or nothing) gives 204, as AWS does.
    pub fn parse(field: Option<&str>) -> Self {
        match field {
            Some("200") => Self::Ok,
            Some("201") => Self::Created,
            _ => Self::NoContent,
        }
    }

    /// The HTTP status code.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Created => 201,
            Self::NoContent => 204,
        }
    }
}

/// The `Location` of the 303 answer to a POST with `success_action_redirect` (or the deprecated
/// `redirect`): the URL with `bucket`, `key` and `etag` appended to its query, in that order,
/// form-urlencoded (`"` → `%22`, `/` → `%2F`), keeping any existing query:
/// `https://example.com/done?a=b&bucket=b&key=photo.jpg&etag=%22…%22` (ceph s3-tests expect exactly
/// this against AWS; the AWS Java SDK documents the same shape).
///
/// Returns `None` when the value is not an absolute http(s) URL: AWS then ignores the field and
/// answers as if it were absent (AWS-recorded). Requiring http(s) also keeps `javascript:` and
/// similar schemes out of `Location` (Garage does the same).
pub fn redirect_location(
    redirect: &str,
    bucket: &str,
    key: &str,
    etag_quoted: &str,
) -> Option<String> {
    let mut url = url::Url::parse(redirect).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    url.query_pairs_mut()
        .append_pair("bucket", bucket)
        .append_pair("key", key)
        .append_pair("etag", etag_quoted);
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2024-05-24 12:00:00 UTC);

    fn policy(conditions: &str) -> Policy {
        Policy::from_json(&format!(
            r#"{{"expiration": "2030-01-01T00:00:00Z", "conditions": [{{"bucket": "b"}}, ["starts-with", "$key", ""], {conditions}]}}"#
        ))
        .unwrap()
    }

    fn form(extra: &[(&str, &str)]) -> FormFields {
        let mut fields: FormFields = [("key", "k")].into_iter().collect();
        for (name, value) in extra {
            fields.push(*name, *value);
        }
        fields
    }

    fn check(p: &Policy, f: &FormFields) -> Result<ContentLengthRange, PolicyViolation> {
        p.check(f, "b", NOW, SigVersion::V4)
    }

    fn failed(condition: &str, field: Option<&str>) -> Result<ContentLengthRange, PolicyViolation> {
        Err(PolicyViolation::ConditionFailed {
            condition: condition.to_owned(),
            field_name: field.map(str::to_owned),
        })
    }

    #[test]
    fn form_fields_are_case_insensitive_and_keep_original_names() {
        let f = form(&[("Policy", "p"), ("X-Amz-Credential", "c")]);
        assert_eq!(f.get("policy"), Some("p"));
        assert_eq!(f.get("x-amz-credential"), Some("c"));
        assert!(f.contains("POLICY"));
        assert_eq!(
            f.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["key", "Policy", "X-Amz-Credential"]
        );
        assert_eq!(f.len(), 3);
        assert!(!f.is_empty());
    }

    #[test]
    fn duplicate_fields_are_comma_joined() {
        let f = form(&[("x-amz-meta-tag", "Ninja"), ("X-Amz-Meta-Tag", "Stallman")]);
        assert_eq!(f.get("x-amz-meta-tag"), Some("Ninja,Stallman"));
        let p = policy(r#"{"x-amz-meta-tag": "Ninja,Stallman"}"#);
        assert!(check(&p, &f).is_ok());
    }

    #[test]
    fn expired_policy_is_reported_first() {
        let p = Policy::from_json(
            r#"{"expiration": "2024-05-24T12:00:00.000Z", "conditions": [["eq", "$nope", "x"]]}"#,
        )
        .unwrap();
        let err = check(&p, &form(&[("extra", "x")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid according to Policy: Policy expired."
        );
        // One second earlier it is still valid (expired means expiration <= now).
        let p = Policy::from_json(
            r#"{"expiration": "2024-05-24T12:00:01Z", "conditions": [{"bucket": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(
            check(&p, &FormFields::new()),
            Ok(ContentLengthRange::default())
        );
    }

    #[test]
    fn a_policy_must_name_its_bucket() {
        // AWS: "Extra input fields: bucket" for a policy without a bucket condition, whether or
        // not the form sends a `bucket` field, and before the form's own extra fields.
        let p = Policy::from_json(
            r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [["starts-with", "$key", ""]]}"#,
        )
        .unwrap();
        for f in [form(&[]), form(&[("bucket", "b")]), form(&[("extra", "x")])] {
            let err = check(&p, &f).unwrap_err();
            assert_eq!(
                err,
                PolicyViolation::ExtraInputField {
                    field_name: "bucket".to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                "Invalid according to Policy: Extra input fields: bucket"
            );
        }
        // Any bucket condition names it: exact, eq or starts-with.
        for cond in [
            r#"{"bucket": "b"}"#,
            r#"["eq", "$bucket", "b"]"#,
            r#"["starts-with", "$Bucket", ""]"#,
        ] {
            let p = Policy::from_json(&format!(
                r#"{{"expiration": "2030-01-01T00:00:00Z", "conditions": [["starts-with", "$key", ""], {cond}]}}"#
            ))
            .unwrap();
            assert!(check(&p, &form(&[])).is_ok(), "{cond}");
        }
    }

    #[test]
    fn names_case_insensitive_values_case_sensitive() {
        let p = policy(r#"["eq", "$success_Action_REDIRECT", "http://localhost.test/random"]"#);
        assert!(
            check(
                &p,
                &form(&[("Success_Action_Redirect", "http://localhost.test/random")])
            )
            .is_ok()
        );
        let p = policy(r#"["eq", "$success_action_redirect", "HTTP://localhost.test/random"]"#);
        let err = check(
            &p,
            &form(&[("success_action_redirect", "http://localhost.test/random")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Invalid according to Policy: Policy Condition failed: ["eq", "$success_action_redirect", "HTTP://localhost.test/random"]"#
        );
        assert_eq!(err.field_name(), Some("success_action_redirect"));
        assert_eq!(
            err.condition(),
            Some(r#"["eq", "$success_action_redirect", "HTTP://localhost.test/random"]"#)
        );
    }

    #[test]
    fn starts_with_is_case_sensitive_and_empty_prefix_needs_the_field() {
        let p = policy(r#"["starts-with", "$success_action_redirect", "http://localhost"]"#);
        assert!(
            check(
                &p,
                &form(&[("success_action_redirect", "http://localhost.test/x")])
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &p,
                &form(&[("success_action_redirect", "HTTP://localhost.test/x")])
            ),
            failed(
                r#"["starts-with", "$success_action_redirect", "http://localhost"]"#,
                Some("success_action_redirect")
            )
        );
        let p = policy(r#"["starts-with", "$x-amz-meta-tag", ""]"#);
        assert!(check(&p, &form(&[("x-amz-meta-tag", "anything")])).is_ok());
        assert!(check(&p, &form(&[("x-amz-meta-tag", "")])).is_ok());
        assert_eq!(
            check(&p, &form(&[])),
            failed(
                r#"["starts-with", "$x-amz-meta-tag", ""]"#,
                Some("x-amz-meta-tag")
            )
        );
    }

    #[test]
    fn condition_without_dollar_fails_even_when_the_field_matches() {
        let p = policy(r#"["eq", "success_action_redirect", "http://localhost.test/random"]"#);
        let err = check(
            &p,
            &form(&[("success_action_redirect", "http://localhost.test/random")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Invalid according to Policy: Policy Condition failed: ["eq", "success_action_redirect", "http://localhost.test/random"]"#
        );
        assert_eq!(err.field_name(), Some("success_action_redirect"));
    }

    #[test]
    fn missing_field_fails_its_condition() {
        let p = policy(r#"{"acl": "public-read"}"#);
        assert_eq!(
            check(&p, &form(&[])),
            failed(r#"["eq", "$acl", "public-read"]"#, Some("acl"))
        );
    }

    #[test]
    fn bucket_comes_from_the_url() {
        let p = policy("[\"eq\", \"$x\", \"x\"]");
        let f = form(&[("x", "x")]);
        assert!(p.check(&f, "b", NOW, SigVersion::V4).is_ok());
        assert_eq!(
            p.check(&f, "other", NOW, SigVersion::V4),
            failed(r#"["eq", "$bucket", "b"]"#, Some("bucket"))
        );
        // A `bucket` form field does not override the URL bucket, and it is covered by the condition.
        let f = form(&[("x", "x"), ("bucket", "other")]);
        assert!(p.check(&f, "b", NOW, SigVersion::V4).is_ok());
    }

    #[test]
    fn content_type_comma_list_every_item_must_match() {
        let p = policy(r#"["starts-with", "$Content-Type", "image/"]"#);
        assert!(check(&p, &form(&[("content-type", "image/png, image/jpeg")])).is_ok());
        assert_eq!(
            check(&p, &form(&[("Content-Type", "image/png,text/plain")])),
            failed(
                r#"["starts-with", "$Content-Type", "image/"]"#,
                Some("content-type")
            )
        );
        // Duplicate Content-Type fields are joined, then treated as a list.
        assert!(
            check(
                &p,
                &form(&[("Content-Type", "image/png"), ("content-type", "image/gif")])
            )
            .is_ok()
        );
        // Other fields take commas literally.
        let p = policy(r#"["starts-with", "$x-amz-meta-tag", "a"]"#);
        assert!(check(&p, &form(&[("x-amz-meta-tag", "a,b")])).is_ok());
    }

    #[test]
    fn content_length_range_numbers_strings_and_intersection() {
        let p = policy(r#"["content-length-range", 5, "10"], ["content-length-range", "0", 8]"#);
        let range = check(&p, &form(&[])).unwrap();
        assert_eq!((range.min(), range.max()), (5, 8));
        assert_eq!(range.check(5), Ok(()));
        assert_eq!(range.check(8), Ok(()));
        assert_eq!(
            range.check(9),
            Err(SizeViolation::TooLarge {
                proposed_size: 9,
                max_size_allowed: 8
            })
        );
        assert_eq!(
            range.check(4),
            Err(SizeViolation::TooSmall {
                proposed_size: 4,
                min_size_allowed: 5
            })
        );
        assert_eq!(
            SizeViolation::TooLarge {
                proposed_size: 12,
                max_size_allowed: 10
            }
            .to_string(),
            "Your proposed upload exceeds the maximum allowed size"
        );
        // Never above 5 GiB.
        let p = policy(r#"["content-length-range", 0, 99999999999999]"#);
        assert_eq!(check(&p, &form(&[])).unwrap().max(), MAX_POST_OBJECT_SIZE);
    }

    #[test]
    fn non_numeric_range_fails_the_condition() {
        let p = policy(r#"["content-length-range", "test", "10"]"#);
        let err = check(&p, &form(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Invalid according to Policy: Policy Condition failed: ["content-length-range", "test", "10"]"#
        );
        assert_eq!(err.field_name(), None);
    }

    #[test]
    fn extra_field_is_reported_lowercase_after_conditions() {
        let p = policy(r#"{"acl": "private"}"#);
        let err = check(
            &p,
            &form(&[("acl", "private"), ("Content-Type", "image/png")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid according to Policy: Extra input fields: content-type"
        );
        assert_eq!(err.field_name(), Some("content-type"));
        // A failing condition wins over an extra field.
        let err = check(
            &p,
            &form(&[("acl", "public-read"), ("Content-Type", "image/png")]),
        )
        .unwrap_err();
        assert!(matches!(err, PolicyViolation::ConditionFailed { .. }));
        // `bucket` is not exempt: without a bucket condition a `bucket` field is extra.
        let p = Policy::from_json(r#"{"expiration": "2030-01-01T00:00:00Z", "conditions": [["starts-with", "$key", ""]]}"#)
            .unwrap();
        let err = check(&p, &form(&[("bucket", "b")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid according to Policy: Extra input fields: bucket"
        );
    }

    #[test]
    fn exempt_fields_depend_on_the_signature_version() {
        let p = policy(r#"["starts-with", "$x", ""]"#);
        let f = form(&[
            ("x", "1"),
            ("Policy", "p"),
            ("X-Amz-Signature", "s"),
            ("file", "inline"),
            ("x-ignore-submit", "Upload"),
        ]);
        assert!(p.check(&f, "b", NOW, SigVersion::V4).is_ok());
        let v2 = form(&[
            ("x", "1"),
            ("AWSAccessKeyId", "a"),
            ("Signature", "s"),
            ("policy", "p"),
        ]);
        assert!(p.check(&v2, "b", NOW, SigVersion::V2).is_ok());
        assert_eq!(
            p.check(&v2, "b", NOW, SigVersion::V4),
            Err(PolicyViolation::ExtraInputField {
                field_name: "awsaccesskeyid".to_owned()
            })
        );
    }

    #[test]
    fn sigv4_example_form_passes_its_policy() {
        let p = Policy::from_base64(crate::policy::test_vectors::SIGV4_EXAMPLE_POLICY).unwrap();
        let f: FormFields = [
            ("key", "user/user1/${filename}"),
            ("acl", "public-read"),
            (
                "success_action_redirect",
                "http://sigv4examplebucket.s3.amazonaws.com/successful_upload.html",
            ),
            ("Content-Type", "image/jpeg"),
            ("x-amz-meta-uuid", "14365123651274"),
            ("x-amz-server-side-encryption", "AES256"),
            (
                "X-Amz-Credential",
                "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request",
            ),
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Date", "20151229T000000Z"),
            ("x-amz-meta-tag", ""),
            ("Policy", crate::policy::test_vectors::SIGV4_EXAMPLE_POLICY),
            (
                "X-Amz-Signature",
                "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e",
            ),
        ]
        .into_iter()
        .collect();
        let f = f.expand_filename(Some("C:\\Users\\me\\photo.jpg"));
        assert_eq!(f.get("key"), Some("user/user1/photo.jpg"));
        let at = datetime!(2015-12-29 10:00:00 UTC);
        assert_eq!(
            p.check(&f, "sigv4examplebucket", at, SigVersion::V4),
            Ok(ContentLengthRange::default())
        );
        assert!(matches!(
            p.check(
                &f,
                "sigv4examplebucket",
                datetime!(2015-12-30 12:00:00 UTC),
                SigVersion::V4
            ),
            Err(PolicyViolation::Expired { .. })
        ));
    }

    #[test]
    fn filename_expansion() {
        assert_eq!(
            expand_filename("uploads/${filename}", Some("a.txt")),
            "uploads/a.txt"
        );
        assert_eq!(
            expand_filename("${filename}/${filename}", Some("/tmp/x/a b.txt")),
            "a b.txt/a b.txt"
        );
        assert_eq!(
            expand_filename("u/${filename}", Some("C:\\docs\\r.pdf")),
            "u/r.pdf"
        );
        assert_eq!(expand_filename("u/${filename}", Some("dir/")), "u/");
        assert_eq!(
            expand_filename("file-as-field-${filename}", None),
            "file-as-field-${filename}"
        );
        assert_eq!(expand_filename("no variable", Some("a")), "no variable");
    }

    #[test]
    fn content_disposition_filenames() {
        let get = filename_from_content_disposition;
        assert_eq!(
            get(r#"form-data; name="file"; filename="a.txt""#),
            Ok(Some("a.txt".into()))
        );
        assert_eq!(
            get(r#"form-data; name="file"; filename=plain.bin"#),
            Ok(Some("plain.bin".into()))
        );
        assert_eq!(get(r#"form-data; name="file""#), Ok(None));
        assert_eq!(
            get(r#"form-data; name="file"; filename="""#),
            Ok(Some(String::new()))
        );
        assert_eq!(
            get(r#"form-data; name="file"; filename="a;b \"c\".txt""#),
            Ok(Some(r#"a;b "c".txt"#.into()))
        );
        // A backslash escapes only `"` and `\`; the raw Windows path old IE sends survives.
        assert_eq!(
            get(r#"form-data; name="file"; filename="C:\dir\a\\b.txt""#),
            Ok(Some(r#"C:\dir\a\b.txt"#.into()))
        );
        // RFC 5987 wins over the ASCII fallback, in either order.
        assert_eq!(
            get(
                r#"form-data; name="file"; filename="fallback.txt"; filename*=UTF-8''%E2%9C%93.txt"#
            ),
            Ok(Some("✓.txt".into()))
        );
        assert_eq!(
            get(r#"form-data; filename*=utf-8'en'%E2%9C%93.txt; name="file"; filename="x""#),
            Ok(Some("✓.txt".into()))
        );
        assert_eq!(
            get("form-data; filename*=ISO-8859-1''caf%E9.txt"),
            Ok(Some("café.txt".into()))
        );
        assert_eq!(
            get("form-data; filename*=KOI8-R''x; filename=y"),
            Ok(Some("y".into()))
        );
        assert_eq!(
            get("form-data; filename*=UTF-8''%FF"),
            Err(FilenameError::InvalidExtendedValue)
        );
        assert_eq!(
            get("form-data; filename*=nonsense"),
            Err(FilenameError::InvalidExtendedValue)
        );
        assert_eq!(
            get("form-data; filename*=nonsense; filename=ok"),
            Ok(Some("ok".into()))
        );
        assert_eq!(
            get("form-data; filename*=UTF-8''a%0Ab"),
            Err(FilenameError::ControlCharacter)
        );
        assert_eq!(
            get("form-data; filename=\"a\u{7f}b\""),
            Err(FilenameError::ControlCharacter)
        );
        for odd in [
            "",
            ";",
            "=",
            "form-data; filename",
            "form-data; filename=\"unterminated",
            "\\",
        ] {
            assert!(get(odd).is_ok(), "{odd:?}");
        }
    }

    #[test]
    fn rfc2047_metadata_values() {
        assert_eq!(rfc2047_encode("plain ASCII value!"), "plain ASCII value!");
        assert_eq!(rfc2047_encode(""), "");
        assert_eq!(rfc2047_encode("✓"), "=?UTF-8?Q?=E2=9C=93?=");
        assert_eq!(
            rfc2047_encode("café au lait"),
            "=?UTF-8?Q?caf=C3=A9_au_lait?="
        );
        assert_eq!(
            rfc2047_encode("a=b?c_d\u{e9}"),
            "=?UTF-8?Q?a=3Db=3Fc=5Fd=C3=A9?="
        );
        assert_eq!(rfc2047_encode("tab\there"), "=?UTF-8?Q?tab=09here?=");
    }

    #[test]
    fn success_action_status_values() {
        assert_eq!(SuccessActionStatus::parse(Some("200")).as_u16(), 200);
        assert_eq!(SuccessActionStatus::parse(Some("201")).as_u16(), 201);
        assert_eq!(SuccessActionStatus::parse(Some("204")).as_u16(), 204);
        for other in [Some("404"), Some("abc"), Some(" 201"), Some(""), None] {
            assert_eq!(
                SuccessActionStatus::parse(other),
                SuccessActionStatus::NoContent,
                "{other:?}"
            );
        }
    }

    #[test]
    fn redirect_location_building() {
        assert_eq!(
            redirect_location("http://localhost.test/ok", "b", "photo.jpg", "\"abc\"").as_deref(),
            Some("http://localhost.test/ok?bucket=b&key=photo.jpg&etag=%22abc%22")
        );
        assert_eq!(
            redirect_location(
                "https://example.com/done?a=b#frag",
                "b",
                "dir/a b—.txt",
                "\"e\""
            )
            .as_deref(),
            Some(
                "https://example.com/done?a=b&bucket=b&key=dir%2Fa+b%E2%80%94.txt&etag=%22e%22#frag"
            )
        );
        assert_eq!(redirect_location("invalid-url", "b", "k", "\"e\""), None);
        assert_eq!(redirect_location("/relative/path", "b", "k", "\"e\""), None);
        assert_eq!(
            redirect_location("javascript:alert(1)", "b", "k", "\"e\""),
            None
        );
        assert_eq!(redirect_location("", "b", "k", "\"e\""), None);
    }
}
