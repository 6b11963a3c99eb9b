//! Browser uploads via S3 "POST Object": signed POST policies, evaluated and issued.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/RESTObjectPOST.html>,
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html> and
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-authentication-HTTPPOST.html>.
//!
//! Everything here is a pure function: no HTTP types, no I/O, no clock (callers pass `now`).
//!
//! # Layout
//! - [`document`]: decode the base64 `policy` field and parse the policy JSON into a [`Policy`].
//! - [`conditions`]: the form ([`FormFields`]), [`Policy::check`], and the helpers around a POST:
//!   `${filename}`, `Content-Disposition` file names, RFC 2047 metadata values, the success status
//!   and the redirect location.
//! - [`signature`]: which authentication the form carries ([`PostAuth`]) and the V2/V4 signatures.
//! - [`issue`](mod@issue): build presigned POST forms the way boto3's `generate_presigned_post` does.
//!
//! # How a handler uses this module (AWS order)
//! 1. [`parse_post_auth`] on the fields before `file` (missing signature fields are 400s).
//! 2. Look up the access key, then [`PostAuth::verify`] over the `policy` field *as sent*
//!    (403 SignatureDoesNotMatch). Only then decode it with [`Policy::from_base64`], so that a
//!    tampered policy is reported as a signature mismatch, as AWS and LocalStack do.
//! 3. Expand `${filename}` in every field ([`FormFields::expand_filename`]), then
//!    [`Policy::check`], which returns the `content-length-range` to enforce while streaming.

pub mod conditions;
pub mod document;
pub mod issue;
pub mod signature;

pub use conditions::{
    ContentLengthRange, FilenameError, FormFields, PolicyViolation, SizeViolation,
    SuccessActionStatus, expand_filename, filename_from_content_disposition, redirect_location,
    rfc2047_encode,
};
pub use document::{Condition, ConditionKind, FieldRef, Policy, PolicyDocumentError};
pub use issue::{ContentTypeRule, IssueError, KeySpec, PostPolicyRequest, PresignedPost, issue};
pub use signature::{
    PostAuth, PostAuthError, parse_post_auth, sign_v2, sign_v4, verify_v2, verify_v4,
};

/// Largest object a single POST may upload: 5 GiB (AWS "Max POST object size").
pub const MAX_POST_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Which signature scheme authenticated the form.
///
/// It matters for the policy too: under SigV2 the `AWSAccessKeyId` and `signature` fields are
/// exempt from the "every field needs a condition" rule (MinIO #19652 got this wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigVersion {
    /// Legacy `AWSAccessKeyId` + `signature` (base64 HMAC-SHA1 of the policy).
    V2,
    /// `x-amz-algorithm`/`-credential`/`-date`/`-signature` (hex HMAC-SHA256 with the SigV4 key).
    V4,
}

/// Published AWS test vectors shared by the unit tests of this module.
#[cfg(test)]
pub(crate) mod test_vectors {
    /// Credentials of "Example: Browser-Based Upload using HTTP POST (Using AWS Signature
    /// Version 4)", <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-post-example.html>.
    pub const SIGV4_EXAMPLE_ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    pub const SIGV4_EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// That page's policy, base64 of the JSON with CRLF line ends.
    pub const SIGV4_EXAMPLE_POLICY: &str = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
    /// The signature that page gives for the policy (date 20151229, us-east-1).
    pub const SIGV4_EXAMPLE_SIGNATURE: &str =
        "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e";

    /// SigV2 POST example of the old developer guide (`HTTPPOSTExamples`, "File Upload"): its
    /// policy and the signature it prints. The page does not repeat the secret; it is the one of
    /// the same guide's REST authentication examples, and the pair was cross-checked with
    /// Python's `hmac` (HMAC-SHA1 → base64 gives exactly this signature).
    pub const SIGV2_EXAMPLE_SECRET: &str = "uV3F3YluFJax1cknvbcGwgjvx4QpvB+leU8dUj2o";
    pub const SIGV2_EXAMPLE_POLICY: &str = "eyAiZXhwaXJhdGlvbiI6ICIyMDA3LTEyLTAxVDEyOjAwOjAwLjAwMFoiLAogICJjb25kaXRpb25zIjogWwogICAgeyJidWNrZXQiOiAiam9obnNtaXRoIn0sCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci9lcmljLyJdLAogICAgeyJhY2wiOiAicHVibGljLXJlYWQifSwKICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL2pvaG5zbWl0aC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwKICAgIFsic3RhcnRzLXdpdGgiLCAiJENvbnRlbnQtVHlwZSIsICJpbWFnZS8iXSwKICAgIHsieC1hbXotbWV0YS11dWlkIjogIjE0MzY1MTIzNjUxMjc0In0sCiAgICBbInN0YXJ0cy13aXRoIiwgIiR4LWFtei1tZXRhLXRhZyIsICIiXQogIF0KfQo=";
    pub const SIGV2_EXAMPLE_SIGNATURE: &str = "0RavWzkygo6QX9caELEqKi9kDbU=";
}

/// Hostile inputs: every parser and check must return, never panic.
#[cfg(test)]
mod robustness {
    use super::*;
    use time::macros::datetime;

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    fn noise(seed: u64, len: usize, alphabet: &[char]) -> String {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let i = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % alphabet.len();
                alphabet[i]
            })
            .collect()
    }

    #[test]
    fn parsers_never_panic() {
        let alphabet: Vec<char> =
            "{}[]\",:\\$v0123456789-.eE tTzZ/=;'%*abcfilnmeqrstuwx\u{0}\n\u{7f}é✓🦀"
                .chars()
                .collect();
        let now = datetime!(2024-01-01 00:00:00 UTC);
        for seed in 1..4000u64 {
            let text = noise(seed, (seed % 97) as usize, &alphabet);
            let wrapped =
                format!(r#"{{"expiration":"2030-01-01T00:00:00Z","conditions":[{text}]}}"#);
            for candidate in [&text, &wrapped] {
                if let Ok(policy) = Policy::from_json(candidate) {
                    let form: FormFields = [("key", text.as_str()), (text.as_str(), "v")]
                        .into_iter()
                        .collect();
                    let _ = policy.check(&form, "b", now, SigVersion::V2);
                }
            }
            let _ = Policy::from_base64(&text);
            let _ = filename_from_content_disposition(&text);
            let _ = rfc2047_encode(&text);
            let _ = redirect_location(&text, "b", &text, "\"e\"");
            let _ = expand_filename(&text, Some(&text));
            let _ = verify_v4("s", &text, &text, &text, &text);
            let _ = verify_v2("s", &text, &text);
            let form: FormFields = [
                ("policy", "p"),
                ("x-amz-algorithm", signature::ALGORITHM),
                ("x-amz-credential", text.as_str()),
                ("x-amz-date", text.as_str()),
                ("x-amz-signature", text.as_str()),
            ]
            .into_iter()
            .collect();
            let _ = parse_post_auth(&form, "us-east-1");
        }
    }
}
