//! [`AuthError`]: every way request authentication can fail, one variant per distinct S3 error.
//!
//! No HTTP in here (STYLE R4): each variant's doc names the S3 `Code` and status it becomes, and
//! `Display` is the AWS `Message` text, so `error.rs` can map it with one `match`. Extra fields are
//! the extra XML elements AWS sends with that error. No variant ever carries a secret.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>; wording from
//! AWS-recorded responses (see `shared/S3-POST-REFERENCE.md` §5 "Presigned URLs").

/// Why a request failed authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 403 AccessDenied, with extra elements `Expires` and `ServerTime` (ISO 8601, UTC).
    #[error("Request has expired")]
    Expired {
        expires: String,
        server_time: String,
    },

    /// 403 AccessDenied: a presigned URL whose `X-Amz-Date` is still in the future.
    #[error("Request is not valid yet")]
    NotYetValid,

    /// 403 AccessDenied, with extra element `HeadersNotSigned` (comma-separated names).
    #[error("There were headers present in the request which were not signed")]
    HeadersNotSigned { headers: String },

    /// 403 AccessDenied: SigV2 query auth with some but not all of its three parameters.
    #[error(
        "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
    )]
    V2QueryParametersMissing,

    /// 403 AccessDenied: SigV2 query auth whose `Expires` is not an integer.
    #[error("Invalid date (should be seconds since epoch): {value}")]
    V2InvalidExpires { value: String },

    /// 403 AccessDenied: header auth without a parseable `x-amz-date` or `Date`.
    #[error("AWS authentication requires a valid Date or x-amz-date header")]
    MissingDate,

    /// 403 AccessDenied: an `Authorization` header that is empty or only whitespace.
    #[error("Access Denied")]
    EmptyAuthorization,

    /// 403 AccessDenied: an anonymous request announced a signed streaming payload.
    #[error("Access Denied")]
    AnonymousSignedPayload,

    /// 403 InvalidAccessKeyId, with extra element `AWSAccessKeyId`. Raised by the caller when the
    /// key lookup fails; the variant lives here so all auth failures share one type.
    #[error("The AWS Access Key Id you provided does not exist in our records.")]
    InvalidAccessKeyId { access_key: String },

    /// 403 RequestTimeTooSkewed, with extra elements `RequestTime`, `ServerTime` and
    /// `MaxAllowedSkewMilliseconds`.
    #[error("The difference between the request time and the current time is too large.")]
    RequestTimeTooSkewed {
        request_time: String,
        server_time: String,
        max_allowed_skew_ms: u64,
    },

    /// 403 SignatureDoesNotMatch, with extra elements `AWSAccessKeyId`, `StringToSign`,
    /// `SignatureProvided` and (SigV4 only) `CanonicalRequest`, so clients can debug. These are
    /// derived from the request alone; the secret is never part of them.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your key and signing method."
    )]
    SignatureDoesNotMatch {
        access_key: String,
        string_to_sign: String,
        signature_provided: String,
        canonical_request: Option<String>,
    },

    /// 400 AuthorizationHeaderMalformed; extra element `Region` when the region is wrong.
    #[error("{message}")]
    AuthorizationHeaderMalformed {
        message: String,
        region: Option<String>,
    },

    /// 400 AuthorizationQueryParametersError; extra element `Region` when the region is wrong.
    #[error("{message}")]
    AuthorizationQueryParametersError {
        message: String,
        region: Option<String>,
    },

    /// 400 InvalidArgument, with `ArgumentName`=`Authorization` and `ArgumentValue`=`value`.
    #[error("Unsupported Authorization Type")]
    UnsupportedAuthorizationType { value: String },

    /// 400 InvalidRequest: `AWS4-…` but not `AWS4-HMAC-SHA256` (e.g. SigV4a).
    #[error(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
    )]
    UnsupportedAlgorithm,

    /// 400 InvalidArgument, with `ArgumentName`=`Authorization`.
    #[error(
        "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified"
    )]
    MultipleAuthMechanisms,

    /// 400 InvalidArgument, with `ArgumentName`=`Authorization` and `ArgumentValue`=`value`.
    /// (Two spaces after the first period, as AWS sends it.)
    #[error("AWS authorization header is invalid.  Expected AwsAccessKeyId:signature")]
    MalformedV2Header { value: String },

    /// 400 InvalidRequest: SigV4 header auth without `x-amz-content-sha256`.
    #[error("Missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,

    /// 400 InvalidArgument, with `ArgumentName`=`x-amz-content-sha256` and
    /// `ArgumentValue`=`value`.
    #[error(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, or a valid sha256 value."
    )]
    InvalidContentSha256 { value: String },

    /// 400 XAmzContentSHA256Mismatch, with extra elements `ClientComputedContentSHA256` and
    /// `S3ComputedContentSHA256`. Raised by the caller once the body is read and hashed
    /// (see `Payload::Signed`).
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch {
        client_computed: String,
        s3_computed: String,
    },
}

impl AuthError {
    pub(crate) fn header_malformed(message: impl Into<String>) -> Self {
        Self::AuthorizationHeaderMalformed {
            message: message.into(),
            region: None,
        }
    }

    pub(crate) fn query_error(message: impl Into<String>) -> Self {
        Self::AuthorizationQueryParametersError {
            message: message.into(),
            region: None,
        }
    }
}
