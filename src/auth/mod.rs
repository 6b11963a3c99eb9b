//! Request authentication: who signed a request, and what its body must look like.
//!
//! The server calls [`parse_request`] to learn which scheme a request uses and which access key
//! it claims, looks the key up, then calls [`verify`] with the secret. A [`Verified`] is proof of
//! authentication and says how to treat the body ([`Payload`]): hash it, decode it as aws-chunked
//! ([`chunked::AwsChunked`]), or take it as is. Everything here is pure; the only I/O is the
//! chunked body adaptor, which wraps a stream it is given.
//!
//! # Layout
//! - `error.rs`    [`AuthError`], one variant per S3 error code, no HTTP.
//! - `secret.rs`   [`SecretKey`] (redacted `Debug`) and constant-time comparison.
//! - `sigv4.rs`    Signature Version 4: header auth, presigned URLs, signing key, chunk signer.
//! - `sigv2.rs`    Signature Version 2 (legacy REST auth): header and query forms.
//! - `chunked.rs`  aws-chunked body decoding as a `Stream`, with chunk and trailer signatures.
//! - `checksum.rs` `x-amz-checksum-*` algorithms and values.
//!
//! Specs: <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html>
//! and <https://docs.aws.amazon.com/AmazonS3/latest/userguide/RESTAuthentication.html>.

pub mod checksum;
pub mod chunked;
mod error;
pub mod secret;
pub mod sigv2;
pub mod sigv4;

use http::{HeaderMap, Method, Uri};
use time::OffsetDateTime;

pub use error::AuthError;
pub use secret::SecretKey;
pub use sigv4::ChunkSigner;

/// The authentication a request carries, parsed but not verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header and no signature parameters: an anonymous request.
    None,
    /// `Authorization: AWS4-HMAC-SHA256 …`
    V4Header(sigv4::V4HeaderAuth),
    /// Presigned URL with `X-Amz-Algorithm`, `X-Amz-Credential`, … parameters.
    V4Query(sigv4::V4QueryAuth),
    /// `Authorization: AWS AKID:signature`
    V2Header(sigv2::V2HeaderAuth),
    /// Presigned URL with `AWSAccessKeyId`, `Expires`, `Signature` parameters.
    V2Query(sigv2::V2QueryAuth),
}

impl Credentials {
    /// The access key the request claims, to look its secret up. `None` when anonymous.
    pub fn access_key(&self) -> Option<&str> {
        match self {
            Credentials::None => None,
            Credentials::V4Header(a) => Some(&a.credential.access_key),
            Credentials::V4Query(a) => Some(&a.credential.access_key),
            Credentials::V2Header(a) => Some(&a.access_key),
            Credentials::V2Query(a) => Some(&a.access_key),
        }
    }
}

/// Works out which scheme a request uses and parses its parameters. Syntax errors (a malformed
/// header, missing presigned parameters, `X-Amz-Expires` over a week) are reported here, before
/// any key lookup, as AWS does.
pub fn parse_request(uri: &Uri, headers: &HeaderMap) -> Result<Credentials, AuthError> {
    let params = sigv4::parse_query(uri.query().unwrap_or(""));
    let has = |name: &str| params.iter().any(|p| p.name == name);
    let v4_query = has("X-Amz-Algorithm") || has("X-Amz-Credential") || has("X-Amz-Signature");
    let v2_query = has("AWSAccessKeyId") || has("Signature");

    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        if v4_query || v2_query {
            return Err(AuthError::MultipleAuthMechanisms);
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        // An empty header (or only whitespace) claims no scheme at all: S3 answers 403
        // AccessDenied, not the 400 of an unknown scheme (ceph/s3-tests
        // `test_object_create_bad_authorization_empty`). It is not taken as anonymous either.
        if value.trim().is_empty() {
            return Err(AuthError::EmptyAuthorization);
        }
        return if value.starts_with("AWS4-") {
            sigv4::V4HeaderAuth::parse(&value).map(Credentials::V4Header)
        } else if value.starts_with("AWS ") {
            sigv2::V2HeaderAuth::parse(&value).map(Credentials::V2Header)
        } else {
            // Only the scheme is echoed (AWS echoes the whole value): what follows may be a
            // credential, such as `Bearer ACCESS:SECRET` sent to an S3 path by mistake.
            let scheme = value.split_whitespace().next().unwrap_or_default();
            Err(AuthError::UnsupportedAuthorizationType {
                value: scheme.to_owned(),
            })
        };
    }
    match (v4_query, v2_query) {
        (true, true) => Err(AuthError::MultipleAuthMechanisms),
        (true, false) => sigv4::V4QueryAuth::parse(&params).map(Credentials::V4Query),
        (false, true) => sigv2::V2QueryAuth::parse(&params).map(Credentials::V2Query),
        (false, false) => Ok(Credentials::None),
    }
}

/// The parts of a request that signatures cover.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// The path as received, still percent-encoded.
    pub path: &'a str,
    /// The query string as received, still percent-encoded, without `?`.
    pub query: Option<&'a str>,
    /// The URI authority; stands in for a signed `host` header that HTTP/2 requests lack.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// SigV2 only: `/bucket/key` as sent (still percent-encoded). With virtual-host addressing
    /// the bucket comes from the `Host` header, so only the router knows it. `None` means the
    /// path is already path-style and is used as is.
    pub v2_resource: Option<&'a str>,
}

impl<'a> RequestView<'a> {
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            path: uri.path(),
            query: uri.query(),
            authority: uri.authority().map(http::uri::Authority::as_str),
            headers,
            v2_resource: None,
        }
    }

    /// Sets the SigV2 canonical resource (`/bucket/key`, percent-encoded as sent).
    pub fn with_v2_resource(self, resource: &'a str) -> Self {
        Self {
            v2_resource: Some(resource),
            ..self
        }
    }
}

/// How the body of an authenticated request must be read.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The signature covers the empty body: anything else is `XAmzContentSHA256Mismatch`.
    Empty,
    /// The body must hash (SHA-256) to this lowercase hex value, else
    /// [`AuthError::ContentSha256Mismatch`].
    Signed(String),
    /// The body is not covered by the signature (`UNSIGNED-PAYLOAD`, presigned URLs, SigV2).
    Unsigned,
    /// aws-chunked body; every chunk is signed (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`).
    StreamingSigned(ChunkSigner),
    /// aws-chunked body; chunks and trailers are signed
    /// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`).
    StreamingSignedTrailer(ChunkSigner),
    /// aws-chunked body, unsigned, with trailers (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
    StreamingUnsignedTrailer,
}

impl Payload {
    /// For [`Payload::Empty`] and [`Payload::Signed`]: checks the SHA-256 (lowercase hex) the
    /// caller computed over the body it read. Other modes have nothing to check here.
    pub fn check_sha256(&self, computed: &str) -> Result<(), AuthError> {
        let expected = match self {
            Payload::Empty => sigv4::EMPTY_SHA256,
            Payload::Signed(hash) => hash.as_str(),
            _ => return Ok(()),
        };
        if expected == computed {
            Ok(())
        } else {
            Err(AuthError::ContentSha256Mismatch {
                client_computed: expected.to_owned(),
                s3_computed: computed.to_owned(),
            })
        }
    }

    /// Whether the body is aws-chunked and must go through [`chunked::AwsChunked`].
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            Payload::StreamingSigned(_)
                | Payload::StreamingSignedTrailer(_)
                | Payload::StreamingUnsignedTrailer
        )
    }
}

/// Proof that a request was signed with the secret of `access_key`.
#[derive(Debug, Clone)]
pub struct Verified {
    pub access_key: String,
    pub payload: Payload,
}

/// Verifies the signature of a request against `secret`. `region` is the server's region; `now`
/// is the server's clock. Returns an error for [`Credentials::None`], which has nothing to
/// verify: use [`anonymous_payload`] for anonymous requests.
pub fn verify(
    creds: &Credentials,
    req: &RequestView<'_>,
    secret: &SecretKey,
    region: &str,
    now: OffsetDateTime,
) -> Result<Verified, AuthError> {
    match creds {
        Credentials::None => Err(AuthError::AnonymousSignedPayload),
        Credentials::V4Header(auth) => sigv4::verify_header(auth, req, secret, region, now),
        Credentials::V4Query(auth) => sigv4::verify_query(auth, req, secret, region, now),
        Credentials::V2Header(auth) => sigv2::verify_header(auth, req, secret, now),
        Credentials::V2Query(auth) => sigv2::verify_query(auth, req, secret, now),
    }
}

/// The payload mode of an anonymous request: from `x-amz-content-sha256` if present (a
/// hash, `UNSIGNED-PAYLOAD` or `STREAMING-UNSIGNED-PAYLOAD-TRAILER`), else unsigned. Signed
/// streaming needs a signature, so it is refused.
pub fn anonymous_payload(headers: &HeaderMap) -> Result<Payload, AuthError> {
    let Some(value) = headers.get("x-amz-content-sha256") else {
        return Ok(Payload::Unsigned);
    };
    let value = String::from_utf8_lossy(value.as_bytes());
    match sigv4::ContentSha256::parse(&value)? {
        sigv4::ContentSha256::Hash(hash) if hash == sigv4::EMPTY_SHA256 => Ok(Payload::Empty),
        sigv4::ContentSha256::Hash(hash) => Ok(Payload::Signed(hash)),
        sigv4::ContentSha256::Unsigned => Ok(Payload::Unsigned),
        sigv4::ContentSha256::StreamingUnsignedTrailer => Ok(Payload::StreamingUnsignedTrailer),
        sigv4::ContentSha256::StreamingSigned | sigv4::ContentSha256::StreamingSignedTrailer => {
            Err(AuthError::AnonymousSignedPayload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn auth_headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    const V4: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=abc";

    #[test]
    fn parse_request_picks_the_scheme() {
        let none = parse_request(&uri("/b/k?list-type=2"), &HeaderMap::new()).unwrap();
        assert_eq!(none, Credentials::None);
        assert_eq!(none.access_key(), None);

        let v4 = parse_request(&uri("/b/k"), &auth_headers(V4)).unwrap();
        assert!(matches!(v4, Credentials::V4Header(_)));
        assert_eq!(v4.access_key(), Some("AKIAIOSFODNN7EXAMPLE"));

        let v2 = parse_request(&uri("/b/k"), &auth_headers("AWS AKID:c2ln")).unwrap();
        assert!(matches!(v2, Credentials::V2Header(_)));
        assert_eq!(v2.access_key(), Some("AKID"));

        let v2q = parse_request(
            &uri("/b/k?AWSAccessKeyId=AKID&Expires=1175139620&Signature=c2ln"),
            &HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(v2q.access_key(), Some("AKID"));

        let v4q = parse_request(
            &uri("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=ab"),
            &HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(v4q.access_key(), Some("AKID"));
    }

    #[test]
    fn parse_request_rejects_two_mechanisms() {
        let err = parse_request(
            &uri("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"),
            &auth_headers(V4),
        )
        .unwrap_err();
        assert_eq!(err, AuthError::MultipleAuthMechanisms);
        let err = parse_request(
            &uri("/b/k?X-Amz-Signature=a&Signature=b"),
            &HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(err, AuthError::MultipleAuthMechanisms);
        assert!(
            err.to_string()
                .starts_with("Only one auth mechanism allowed")
        );
    }

    #[test]
    fn parse_request_refuses_an_empty_authorization() {
        for value in ["", " ", "\t  "] {
            let err = parse_request(&uri("/b/k"), &auth_headers(value)).unwrap_err();
            assert_eq!(err, AuthError::EmptyAuthorization);
            assert_eq!(err.to_string(), "Access Denied");
        }
    }

    #[test]
    fn parse_request_rejects_unknown_authorization() {
        let err = parse_request(&uri("/"), &auth_headers("Bearer AK:secret")).unwrap_err();
        assert_eq!(
            err,
            AuthError::UnsupportedAuthorizationType {
                value: "Bearer".to_owned()
            }
        );
        assert_eq!(err.to_string(), "Unsupported Authorization Type");
        let err = parse_request(
            &uri("/"),
            &auth_headers("AWS4-ECDSA-P256-SHA256 Credential=a/b/s3/aws4_request"),
        )
        .unwrap_err();
        assert_eq!(err, AuthError::UnsupportedAlgorithm);
    }

    #[test]
    fn verify_refuses_anonymous_credentials() {
        let (method, u, h) = (Method::GET, uri("/"), HeaderMap::new());
        let req = RequestView::new(&method, &u, &h);
        let secret = SecretKey::new("s".to_owned());
        let err = verify(
            &Credentials::None,
            &req,
            &secret,
            "us-east-1",
            OffsetDateTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert_eq!(err, AuthError::AnonymousSignedPayload);
    }

    #[test]
    fn anonymous_payload_modes() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-amz-content-sha256", HeaderValue::from_str(v).unwrap());
            anonymous_payload(&h)
        };
        assert!(matches!(
            anonymous_payload(&HeaderMap::new()),
            Ok(Payload::Unsigned)
        ));
        assert!(matches!(with(sigv4::EMPTY_SHA256), Ok(Payload::Empty)));
        assert!(matches!(with("UNSIGNED-PAYLOAD"), Ok(Payload::Unsigned)));
        assert!(matches!(
            with("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            Ok(Payload::StreamingUnsignedTrailer)
        ));
        let hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        assert!(matches!(with(hash), Ok(Payload::Signed(h)) if h == hash));
        assert_eq!(
            with("STREAMING-AWS4-HMAC-SHA256-PAYLOAD").unwrap_err(),
            AuthError::AnonymousSignedPayload
        );
        assert_eq!(
            with("nope").unwrap_err(),
            AuthError::InvalidContentSha256 {
                value: "nope".to_owned()
            }
        );
        assert!(Payload::StreamingUnsignedTrailer.is_streaming());
        assert!(!Payload::Unsigned.is_streaming());
    }

    #[test]
    fn payload_check_sha256() {
        let hello = sigv4::hex_sha256(b"hello");
        assert_eq!(Payload::Signed(hello.clone()).check_sha256(&hello), Ok(()));
        assert_eq!(Payload::Empty.check_sha256(sigv4::EMPTY_SHA256), Ok(()));
        assert_eq!(Payload::Unsigned.check_sha256("anything"), Ok(()));
        let err = Payload::Empty.check_sha256(&hello).unwrap_err();
        assert_eq!(
            err,
            AuthError::ContentSha256Mismatch {
                client_computed: sigv4::EMPTY_SHA256.to_owned(),
                s3_computed: hello,
            }
        );
        assert_eq!(
            err.to_string(),
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        );
    }

    #[test]
    fn caller_raised_errors_have_aws_messages() {
        let err = AuthError::InvalidAccessKeyId {
            access_key: "AKID".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "The AWS Access Key Id you provided does not exist in our records."
        );
    }

    #[test]
    fn request_view_takes_the_raw_parts() {
        let (method, u, h) = (
            Method::PUT,
            uri("http://host:9000/b/a%20b?x=1"),
            HeaderMap::new(),
        );
        let req = RequestView::new(&method, &u, &h).with_v2_resource("/b/a%20b");
        assert_eq!(req.path, "/b/a%20b");
        assert_eq!(req.query, Some("x=1"));
        assert_eq!(req.authority, Some("host:9000"));
        assert_eq!(req.v2_resource, Some("/b/a%20b"));
    }
}
