//! Authentication of POST forms: which fields are present, and the V2/V4 signatures over the policy.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-authentication-HTTPPOST.html>
//! (SigV4: `hex(HMAC-SHA256(signing key, policy))`) and the legacy developer guide
//! `HTTPPOSTForms`/`HTTPPOSTExamples` (SigV2: `base64(HMAC-SHA1(secret, policy))`).
//!
//! The string to sign is the `policy` field exactly as sent (base64 text, whitespace and all).
//! Signatures are compared in constant time (`Mac::verify_slice`, built on `subtle`).
//!
//! Field-presence rules (AWS-recorded messages, LocalStack `TestS3PresignedPost`):
//! - some SigV4 fields but not all → 400 InvalidArgument naming the first missing one in the order
//!   `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Signature`;
//! - the same for SigV2, in the order `Signature`, `AWSAccessKeyId` (LocalStack's order);
//! - SigV4 is examined before SigV2, so a partial V4 set is reported even next to a complete V2 set;
//! - `policy` present but no signature field at all → 403 AccessDenied "Access Denied";
//! - no `policy` → anonymous (public-write buckets only), whatever signature fields are present.
//!   That last point follows LocalStack, which returns before looking at signature fields when the
//!   policy is missing; AWS's answer for "signature without policy" is not recorded.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use time::Date;
use time::PrimitiveDateTime;
use time::macros::format_description;

use super::SigVersion;
use super::conditions::FormFields;
use crate::auth::sigv4::cached_signing_key;

/// The only SigV4 algorithm S3 accepts in `x-amz-algorithm`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How a POST form authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostAuth {
    /// No `policy`: allowed only on buckets that grant anonymous writes.
    Anonymous,
    /// SigV4 fields, with the credential scope already checked against the server's region.
    V4 {
        access_key: String,
        /// Scope date, `yyyymmdd`.
        date: String,
        region: String,
        /// `x-amz-date`, `yyyymmddThhmmssZ`.
        amz_date: String,
        /// `x-amz-signature`, as sent (hex).
        signature: String,
    },
    /// Legacy SigV2 fields.
    V2 {
        access_key: String,
        signature: String,
    },
}

impl PostAuth {
    /// The access key to look up, if the form is signed.
    pub fn access_key(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::V4 { access_key, .. } | Self::V2 { access_key, .. } => Some(access_key),
        }
    }

    /// The signature scheme, for [`Policy::check`](super::Policy::check); `None` when anonymous.
    pub fn sig_version(&self) -> Option<SigVersion> {
        match self {
            Self::Anonymous => None,
            Self::V4 { .. } => Some(SigVersion::V4),
            Self::V2 { .. } => Some(SigVersion::V2),
        }
    }

    /// Verifies the form's signature over `policy_b64` (the `policy` field as sent). Always false
    /// for [`PostAuth::Anonymous`].
    pub fn verify(&self, secret: &str, policy_b64: &str) -> bool {
        match self {
            Self::Anonymous => false,
            Self::V4 {
                date,
                region,
                signature,
                ..
            } => verify_v4(secret, date, region, policy_b64, signature),
            Self::V2 { signature, .. } => verify_v2(secret, policy_b64, signature),
        }
    }
}

/// Why the form's authentication fields were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostAuthError {
    /// 400 InvalidArgument, `<ArgumentName>` = `argument_name`, empty `<ArgumentValue>`
    /// (AWS-recorded; note the two spaces).
    #[error(
        "Bucket POST must contain a field named '{argument_name}'.  If it is specified, please check the order of the fields."
    )]
    MissingField { argument_name: &'static str },
    /// 403 AccessDenied: a `policy` but no signature fields (AWS-recorded).
    #[error("Access Denied")]
    PolicyWithoutSignature,
    /// 400 InvalidArgument, ArgumentName `X-Amz-Algorithm` (wording not AWS-recorded).
    #[error("Unsupported X-Amz-Algorithm '{value}'; only AWS4-HMAC-SHA256 is supported.")]
    UnsupportedAlgorithm { value: String },
    /// 400 InvalidArgument, ArgumentName `X-Amz-Credential`. Wording of AWS's query-auth error;
    /// the code S3 uses for POST forms is not recorded.
    #[error(
        "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."
    )]
    MalformedCredential { value: String },
    /// 400 InvalidArgument (AWS query-auth wording; `<Region>` = `expected` in AWS's version).
    #[error(
        "Error parsing the X-Amz-Credential parameter; the region '{region}' is wrong; expecting '{expected}'"
    )]
    WrongRegion { region: String, expected: String },
    /// 400 InvalidArgument (AWS query-auth wording).
    #[error(
        "Error parsing the X-Amz-Credential parameter; incorrect service \"{service}\". This endpoint belongs to \"s3\"."
    )]
    WrongService { service: String },
    /// 400 InvalidArgument (AWS query-auth wording).
    #[error(
        "Error parsing the X-Amz-Credential parameter; incorrect terminal \"{terminal}\". This endpoint uses \"aws4_request\"."
    )]
    WrongTerminal { terminal: String },
    /// 400 InvalidArgument, ArgumentName `X-Amz-Date`: not `yyyymmddThhmmssZ`, or its day differs
    /// from the credential scope date (wording not AWS-recorded).
    #[error("X-Amz-Date '{value}' must be yyyyMMdd'T'HHmmss'Z' on the credential scope date.")]
    InvalidDate { value: String },
}

impl PostAuthError {
    /// `<ArgumentName>` for the InvalidArgument variants.
    pub fn argument_name(&self) -> Option<&'static str> {
        match self {
            Self::MissingField { argument_name } => Some(argument_name),
            Self::PolicyWithoutSignature => None,
            Self::UnsupportedAlgorithm { .. } => Some("X-Amz-Algorithm"),
            Self::MalformedCredential { .. }
            | Self::WrongRegion { .. }
            | Self::WrongService { .. }
            | Self::WrongTerminal { .. } => Some("X-Amz-Credential"),
            Self::InvalidDate { .. } => Some("X-Amz-Date"),
        }
    }
}

const V4_FIELDS: [(&str, &str); 4] = [
    ("x-amz-algorithm", "X-Amz-Algorithm"),
    ("x-amz-credential", "X-Amz-Credential"),
    ("x-amz-date", "X-Amz-Date"),
    ("x-amz-signature", "X-Amz-Signature"),
];
const V2_FIELDS: [(&str, &str); 2] = [
    ("signature", "Signature"),
    ("awsaccesskeyid", "AWSAccessKeyId"),
];

/// Decides how the form authenticates and checks the SigV4 credential scope against
/// `server_region`. Pass the fields received before `file`. See the module docs for the rules.
pub fn parse_post_auth(
    fields: &FormFields,
    server_region: &str,
) -> Result<PostAuth, PostAuthError> {
    if !fields.contains("policy") {
        return Ok(PostAuth::Anonymous);
    }
    if let Some(values) = all_or_none(fields, &V4_FIELDS)? {
        let [algorithm, credential, amz_date, signature] = values;
        return parse_v4(algorithm, credential, amz_date, signature, server_region);
    }
    if let Some([signature, access_key]) = all_or_none(fields, &V2_FIELDS)? {
        return Ok(PostAuth::V2 {
            access_key: access_key.to_owned(),
            signature: signature.to_owned(),
        });
    }
    Err(PostAuthError::PolicyWithoutSignature)
}

/// `None` if no field of the set is present, all values if all are, else the first missing one.
fn all_or_none<'a, const N: usize>(
    fields: &'a FormFields,
    set: &[(&str, &'static str); N],
) -> Result<Option<[&'a str; N]>, PostAuthError> {
    let values = set.map(|(name, _)| fields.get(name));
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut out = [""; N];
    for (slot, (value, (_, argument_name))) in out.iter_mut().zip(values.iter().zip(set)) {
        *slot = value.ok_or(PostAuthError::MissingField { argument_name })?;
    }
    Ok(Some(out))
}

fn parse_v4(
    algorithm: &str,
    credential: &str,
    amz_date: &str,
    signature: &str,
    server_region: &str,
) -> Result<PostAuth, PostAuthError> {
    if algorithm != ALGORITHM {
        return Err(PostAuthError::UnsupportedAlgorithm {
            value: algorithm.to_owned(),
        });
    }
    let malformed = || PostAuthError::MalformedCredential {
        value: credential.to_owned(),
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminal] = parts[..] else {
        return Err(malformed());
    };
    let scope_date =
        Date::parse(date, format_description!("[year][month][day]")).map_err(|_| malformed())?;
    if access_key.is_empty() || date.len() != 8 {
        return Err(malformed());
    }
    if region != server_region {
        return Err(PostAuthError::WrongRegion {
            region: region.to_owned(),
            expected: server_region.to_owned(),
        });
    }
    if service != "s3" {
        return Err(PostAuthError::WrongService {
            service: service.to_owned(),
        });
    }
    if terminal != "aws4_request" {
        return Err(PostAuthError::WrongTerminal {
            terminal: terminal.to_owned(),
        });
    }
    let stamp = PrimitiveDateTime::parse(
        amz_date,
        format_description!("[year][month][day]T[hour][minute][second]Z"),
    );
    if amz_date.len() != 16 || stamp.map(PrimitiveDateTime::date) != Ok(scope_date) {
        return Err(PostAuthError::InvalidDate {
            value: amz_date.to_owned(),
        });
    }
    Ok(PostAuth::V4 {
        access_key: access_key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        amz_date: amz_date.to_owned(),
        signature: signature.to_owned(),
    })
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The SigV4 POST signature: `hex(HMAC-SHA256(signing_key(secret, date, region, "s3"), policy))`.
pub fn sign_v4(secret: &str, date_yyyymmdd: &str, region: &str, policy_b64: &str) -> String {
    let mut mac = hmac_sha256(&cached_signing_key(secret, date_yyyymmdd, region, "s3"));
    mac.update(policy_b64.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a SigV4 POST signature (hex, either case) in constant time.
pub fn verify_v4(
    secret: &str,
    date_yyyymmdd: &str,
    region: &str,
    policy_b64: &str,
    provided_hex: &str,
) -> bool {
    let Ok(provided) = hex::decode(provided_hex) else {
        return false;
    };
    let mut mac = hmac_sha256(&cached_signing_key(secret, date_yyyymmdd, region, "s3"));
    mac.update(policy_b64.as_bytes());
    mac.verify_slice(&provided).is_ok()
}

/// The SigV2 POST signature: `base64(HMAC-SHA1(secret, policy))`.
pub fn sign_v2(secret: &str, policy_b64: &str) -> String {
    let mut mac = hmac_sha1(secret.as_bytes());
    mac.update(policy_b64.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a SigV2 POST signature (standard base64, padding optional) in constant time.
pub fn verify_v2(secret: &str, policy_b64: &str, provided_b64: &str) -> bool {
    let Ok(provided) = STANDARD_PAD_INDIFFERENT.decode(provided_b64.trim()) else {
        return false;
    };
    let mut mac = hmac_sha1(secret.as_bytes());
    mac.update(policy_b64.as_bytes());
    mac.verify_slice(&provided).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_vectors::*;

    fn v4_form(skip: &str) -> FormFields {
        [
            ("key", "user/user1/${filename}"),
            ("Policy", SIGV4_EXAMPLE_POLICY),
            ("X-Amz-Algorithm", ALGORITHM),
            (
                "X-Amz-Credential",
                "AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request",
            ),
            ("X-Amz-Date", "20151229T000000Z"),
            ("X-Amz-Signature", SIGV4_EXAMPLE_SIGNATURE),
        ]
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(skip))
        .collect()
    }

    #[test]
    fn sigv4_post_example_signature() {
        assert_eq!(
            sign_v4(
                SIGV4_EXAMPLE_SECRET,
                "20151229",
                "us-east-1",
                SIGV4_EXAMPLE_POLICY
            ),
            SIGV4_EXAMPLE_SIGNATURE
        );
        assert!(verify_v4(
            SIGV4_EXAMPLE_SECRET,
            "20151229",
            "us-east-1",
            SIGV4_EXAMPLE_POLICY,
            SIGV4_EXAMPLE_SIGNATURE
        ));
        let upper = SIGV4_EXAMPLE_SIGNATURE.to_ascii_uppercase();
        assert!(verify_v4(
            SIGV4_EXAMPLE_SECRET,
            "20151229",
            "us-east-1",
            SIGV4_EXAMPLE_POLICY,
            &upper
        ));
    }

    #[test]
    fn sigv4_rejects_tampering_and_garbage() {
        let ok =
            |secret, date, region, policy: &str, sig| verify_v4(secret, date, region, policy, sig);
        let s = SIGV4_EXAMPLE_SECRET;
        let p = SIGV4_EXAMPLE_POLICY;
        let sig = SIGV4_EXAMPLE_SIGNATURE;
        assert!(!ok("wrong", "20151229", "us-east-1", p, sig));
        assert!(!ok(s, "20151230", "us-east-1", p, sig));
        assert!(!ok(s, "20151229", "eu-west-1", p, sig));
        assert!(!ok(s, "20151229", "us-east-1", &format!("{p} "), sig));
        assert!(!ok(s, "20151229", "us-east-1", p, &sig[..62]));
        assert!(!ok(s, "20151229", "us-east-1", p, "zz"));
        assert!(!ok(s, "20151229", "us-east-1", p, ""));
    }

    #[test]
    fn sigv2_post_example_signature() {
        assert_eq!(
            sign_v2(SIGV2_EXAMPLE_SECRET, SIGV2_EXAMPLE_POLICY),
            SIGV2_EXAMPLE_SIGNATURE
        );
        assert!(verify_v2(
            SIGV2_EXAMPLE_SECRET,
            SIGV2_EXAMPLE_POLICY,
            SIGV2_EXAMPLE_SIGNATURE
        ));
        assert!(verify_v2(
            SIGV2_EXAMPLE_SECRET,
            SIGV2_EXAMPLE_POLICY,
            "0RavWzkygo6QX9caELEqKi9kDbU"
        ));
        assert!(!verify_v2(
            "wrong",
            SIGV2_EXAMPLE_POLICY,
            SIGV2_EXAMPLE_SIGNATURE
        ));
        assert!(!verify_v2(
            SIGV2_EXAMPLE_SECRET,
            SIGV2_EXAMPLE_POLICY,
            "not base64!"
        ));
        assert!(!verify_v2(SIGV2_EXAMPLE_SECRET, SIGV2_EXAMPLE_POLICY, ""));
    }

    #[test]
    fn parses_the_sigv4_example_form() {
        let auth = parse_post_auth(&v4_form(""), "us-east-1").unwrap();
        assert_eq!(
            auth,
            PostAuth::V4 {
                access_key: SIGV4_EXAMPLE_ACCESS_KEY.to_owned(),
                date: "20151229".to_owned(),
                region: "us-east-1".to_owned(),
                amz_date: "20151229T000000Z".to_owned(),
                signature: SIGV4_EXAMPLE_SIGNATURE.to_owned(),
            }
        );
        assert_eq!(auth.access_key(), Some(SIGV4_EXAMPLE_ACCESS_KEY));
        assert_eq!(auth.sig_version(), Some(SigVersion::V4));
        assert!(auth.verify(SIGV4_EXAMPLE_SECRET, SIGV4_EXAMPLE_POLICY));
        assert!(!auth.verify("other", SIGV4_EXAMPLE_POLICY));
    }

    #[test]
    fn missing_v4_fields_are_reported_in_aws_order() {
        for (skip, name) in [
            ("x-amz-algorithm", "X-Amz-Algorithm"),
            ("x-amz-credential", "X-Amz-Credential"),
            ("x-amz-date", "X-Amz-Date"),
            ("x-amz-signature", "X-Amz-Signature"),
        ] {
            let err = parse_post_auth(&v4_form(skip), "us-east-1").unwrap_err();
            assert_eq!(
                err,
                PostAuthError::MissingField {
                    argument_name: name
                }
            );
            assert_eq!(err.argument_name(), Some(name));
        }
        let only_date: FormFields = [("policy", "p"), ("x-amz-date", "20151229T000000Z")]
            .into_iter()
            .collect();
        let err = parse_post_auth(&only_date, "us-east-1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Bucket POST must contain a field named 'X-Amz-Algorithm'.  If it is specified, please check the order of the fields."
        );
    }

    #[test]
    fn sigv2_fields() {
        let v2: FormFields = [
            ("policy", "p"),
            ("AWSAccessKeyId", "AKID"),
            ("Signature", "c2ln"),
        ]
        .into_iter()
        .collect();
        let auth = parse_post_auth(&v2, "us-east-1").unwrap();
        assert_eq!(
            auth,
            PostAuth::V2 {
                access_key: "AKID".into(),
                signature: "c2ln".into()
            }
        );
        assert_eq!(auth.sig_version(), Some(SigVersion::V2));
        let no_sig: FormFields = [("policy", "p"), ("AWSAccessKeyId", "AKID")]
            .into_iter()
            .collect();
        assert_eq!(
            parse_post_auth(&no_sig, "us-east-1")
                .unwrap_err()
                .to_string(),
            "Bucket POST must contain a field named 'Signature'.  If it is specified, please check the order of the fields."
        );
        let no_key: FormFields = [("policy", "p"), ("signature", "c2ln")]
            .into_iter()
            .collect();
        assert_eq!(
            parse_post_auth(&no_key, "us-east-1"),
            Err(PostAuthError::MissingField {
                argument_name: "AWSAccessKeyId"
            })
        );
        // A partial V4 set is reported even when V2 is complete (V4 is examined first).
        let mixed: FormFields = [
            ("policy", "p"),
            ("AWSAccessKeyId", "A"),
            ("signature", "s"),
            ("x-amz-date", "d"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            parse_post_auth(&mixed, "us-east-1"),
            Err(PostAuthError::MissingField {
                argument_name: "X-Amz-Algorithm"
            })
        );
    }

    #[test]
    fn policy_without_signature_and_anonymous() {
        let policy_only: FormFields = [("key", "k"), ("Policy", "p")].into_iter().collect();
        let err = parse_post_auth(&policy_only, "us-east-1").unwrap_err();
        assert_eq!(
            (err.to_string().as_str(), err.argument_name()),
            ("Access Denied", None)
        );
        let anonymous: FormFields = [("key", "k"), ("x-amz-signature", "s")]
            .into_iter()
            .collect();
        let auth = parse_post_auth(&anonymous, "us-east-1").unwrap();
        assert_eq!(auth, PostAuth::Anonymous);
        assert_eq!((auth.access_key(), auth.sig_version()), (None, None));
        assert!(!auth.verify("secret", "p"));
    }

    #[test]
    fn credential_scope_is_checked() {
        let with = |name: &str, value: &str| {
            let mut form = v4_form(name);
            form.push(name, value);
            parse_post_auth(&form, "us-east-1")
        };
        assert_eq!(
            with("x-amz-algorithm", "AWS4-HMAC-SHA512"),
            Err(PostAuthError::UnsupportedAlgorithm {
                value: "AWS4-HMAC-SHA512".into()
            })
        );
        for bad in [
            "AKID/20151229/us-east-1/s3",
            "AKID/20151229/us-east-1/s3/aws4_request/x",
            "/20151229/us-east-1/s3/aws4_request",
            "AKID/2015-12-29/us-east-1/s3/aws4_request",
            "AKID/20151329/us-east-1/s3/aws4_request",
            "",
        ] {
            assert_eq!(
                with("x-amz-credential", bad),
                Err(PostAuthError::MalformedCredential { value: bad.into() }),
                "{bad}"
            );
        }
        let err = with(
            "x-amz-credential",
            "AKID/20151229/eu-west-1/s3/aws4_request",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error parsing the X-Amz-Credential parameter; the region 'eu-west-1' is wrong; expecting 'us-east-1'"
        );
        assert_eq!(
            with(
                "x-amz-credential",
                "AKID/20151229/us-east-1/s4/aws4_request"
            ),
            Err(PostAuthError::WrongService {
                service: "s4".into()
            })
        );
        assert_eq!(
            with(
                "x-amz-credential",
                "AKID/20151229/us-east-1/s3/aws3_request"
            ),
            Err(PostAuthError::WrongTerminal {
                terminal: "aws3_request".into()
            })
        );
        for bad in [
            "20151230T000000Z",
            "2015-12-29T00:00:00Z",
            "20151229",
            "20151229T250000Z",
        ] {
            assert_eq!(
                with("x-amz-date", bad),
                Err(PostAuthError::InvalidDate { value: bad.into() }),
                "{bad}"
            );
        }
    }
}
