//! The one error type that reaches the wire: S3's `<Error>` XML document.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html>
//!
//! Module errors (`DbError`, `StoreError`, `AuthError`, ...) know nothing about HTTP; the mapping to
//! an AWS code and status happens once, here, in `From` impls. `IntoResponse` only renders: an
//! internal error's source rides in the response extensions and the logging middleware prints it,
//! so a client never sees internal detail.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::policy::{PostAuthError, SizeViolation};
use crate::storage::IngestError;
use crate::xml::{MalformedXml, XmlWriter};

macro_rules! codes {
    ($($name:ident => $status:expr, $msg:expr;)*) => {
        /// The AWS error codes postgate answers with, each with its HTTP status and default message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(clippy::enum_variant_names)]
        pub enum S3ErrorCode { $($name),* }

        impl S3ErrorCode {
            pub fn as_str(self) -> &'static str {
                match self { $(S3ErrorCode::$name => stringify!($name)),* }
            }
            pub fn status(self) -> StatusCode {
                match self { $(S3ErrorCode::$name => $status),* }
            }
            pub fn default_message(self) -> &'static str {
                match self { $(S3ErrorCode::$name => $msg),* }
            }
        }
    };
}

codes! {
    AccessDenied => StatusCode::FORBIDDEN, "Access Denied";
    AccessForbidden => StatusCode::FORBIDDEN, "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";
    AuthorizationHeaderMalformed => StatusCode::BAD_REQUEST, "The authorization header is malformed.";
    AuthorizationQueryParametersError => StatusCode::BAD_REQUEST, "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.";
    BadDigest => StatusCode::BAD_REQUEST, "The Content-MD5 you specified did not match what we received.";
    BadRequest => StatusCode::BAD_REQUEST, "Bad Request";
    BucketAlreadyExists => StatusCode::CONFLICT, "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.";
    BucketAlreadyOwnedByYou => StatusCode::CONFLICT, "Your previous request to create the named bucket succeeded and you already own it.";
    BucketNotEmpty => StatusCode::CONFLICT, "The bucket you tried to delete is not empty";
    EntityTooLarge => StatusCode::BAD_REQUEST, "Your proposed upload exceeds the maximum allowed size";
    EntityTooSmall => StatusCode::BAD_REQUEST, "Your proposed upload is smaller than the minimum allowed size";
    IncompleteBody => StatusCode::BAD_REQUEST, "You did not provide the number of bytes specified by the Content-Length HTTP header";
    IncorrectNumberOfFilesInPostRequest => StatusCode::BAD_REQUEST, "POST requires exactly one file upload per request.";
    InternalError => StatusCode::INTERNAL_SERVER_ERROR, "We encountered an internal error. Please try again.";
    InvalidAccessKeyId => StatusCode::FORBIDDEN, "The AWS Access Key Id you provided does not exist in our records.";
    InvalidArgument => StatusCode::BAD_REQUEST, "Invalid Argument";
    InvalidBucketName => StatusCode::BAD_REQUEST, "The specified bucket is not valid.";
    InvalidDigest => StatusCode::BAD_REQUEST, "The Content-MD5 you specified was invalid.";
    InvalidPart => StatusCode::BAD_REQUEST, "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.";
    InvalidPartNumber => StatusCode::RANGE_NOT_SATISFIABLE, "The requested partnumber is not satisfiable";
    InvalidPartOrder => StatusCode::BAD_REQUEST, "The list of parts was not in ascending order. Parts must be ordered by part number.";
    InvalidPolicyDocument => StatusCode::BAD_REQUEST, "The content of the form does not meet the conditions specified in the policy document.";
    InvalidRange => StatusCode::RANGE_NOT_SATISFIABLE, "The requested range is not satisfiable";
    InvalidRequest => StatusCode::BAD_REQUEST, "Invalid Request";
    InvalidStorageClass => StatusCode::BAD_REQUEST, "The storage class you specified is not valid";
    KeyTooLongError => StatusCode::BAD_REQUEST, "Your key is too long";
    MalformedPOSTRequest => StatusCode::BAD_REQUEST, "The body of your POST request is not well-formed multipart/form-data.";
    MalformedXML => StatusCode::BAD_REQUEST, "The XML you provided was not well-formed or did not validate against our published schema";
    MaxPostPreDataLengthExceeded => StatusCode::BAD_REQUEST, "Your POST request fields preceeding the upload file was too large.";
    MetadataTooLarge => StatusCode::BAD_REQUEST, "Your metadata headers exceed the maximum allowed metadata size.";
    MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED, "The specified method is not allowed against this resource.";
    MissingContentLength => StatusCode::LENGTH_REQUIRED, "You must provide the Content-Length HTTP header.";
    NoSuchBucket => StatusCode::NOT_FOUND, "The specified bucket does not exist";
    NoSuchCORSConfiguration => StatusCode::NOT_FOUND, "The CORS configuration does not exist";
    NoSuchLifecycleConfiguration => StatusCode::NOT_FOUND, "The lifecycle configuration does not exist";
    NoSuchKey => StatusCode::NOT_FOUND, "The specified key does not exist.";
    NoSuchVersion => StatusCode::NOT_FOUND, "The specified version does not exist.";
    NoSuchUpload => StatusCode::NOT_FOUND, "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.";
    NotImplemented => StatusCode::NOT_IMPLEMENTED, "A header you provided implies functionality that is not implemented";
    NotModified => StatusCode::NOT_MODIFIED, "Not Modified";
    PreconditionFailed => StatusCode::PRECONDITION_FAILED, "At least one of the pre-conditions you specified did not hold";
    RequestTimeout => StatusCode::BAD_REQUEST, "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.";
    RequestTimeTooSkewed => StatusCode::FORBIDDEN, "The difference between the request time and the current time is too large.";
    ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE, "Please reduce your request rate.";
    SignatureDoesNotMatch => StatusCode::FORBIDDEN, "The request signature we calculated does not match the signature you provided. Check your key and signing method.";
    XAmzContentSHA256Mismatch => StatusCode::BAD_REQUEST, "The provided 'x-amz-content-sha256' header does not match what was computed.";
    // Not an AWS code (S3 never fills up); the X prefix marks it as postgate's own, as MinIO's
    // XMinioStorageFull does. 507 is not retried by the SDKs: retrying would not help.
    // postgate's own, as MinIO's XMinioAdminBucketQuotaExceeded (400): the upload does not fit a
    // bucket's quota or a link's total; nothing was stored.
    XPostgateQuotaExceeded => StatusCode::BAD_REQUEST, "Bucket quota exceeded. Nothing was stored.";
    XPostgateStorageFull => StatusCode::INSUFFICIENT_STORAGE, "The server has no space left to store this upload. Nothing was stored.";
    // postgate's own too: the bytes are not the type the upload declared (verification on).
    XPostgateContentMismatch => StatusCode::BAD_REQUEST, "The file's content does not match its declared Content-Type. Nothing was stored.";
}

/// An error as S3 clients see it. `source` is logged, never sent.
#[derive(Debug)]
pub struct S3Error(Box<Inner>);

#[derive(Debug)]
struct Inner {
    code: S3ErrorCode,
    message: Cow<'static, str>,
    resource: Option<String>,
    /// Extra child elements of `<Error>`, in order (`BucketName`, `Key`, `Condition`, ...).
    extra: Vec<(&'static str, String)>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type S3Result<T> = Result<T, S3Error>;

impl S3Error {
    pub fn new(code: S3ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        S3Error(Box::new(Inner {
            code,
            message: message.into(),
            resource: None,
            extra: Vec::new(),
            source: None,
        }))
    }

    /// The error with AWS's default message for its code.
    pub fn code(code: S3ErrorCode) -> Self {
        S3Error::new(code, code.default_message())
    }

    /// 507 for a full disk or an exhausted quota, with the cause logged like an internal error's.
    pub fn storage_full(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        S3Error::caused_by(S3ErrorCode::XPostgateStorageFull, source.into())
    }

    /// A 500 whose cause is logged but never sent to the client.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        S3Error::caused_by(S3ErrorCode::InternalError, source.into())
    }

    fn caused_by(code: S3ErrorCode, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        let mut err = S3Error::code(code);
        err.0.source = Some(source);
        err
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.0.extra.push((name, value.into()));
        self
    }

    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.0.resource = Some(resource.into());
        self
    }

    pub fn s3_code(&self) -> S3ErrorCode {
        self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn no_such_bucket(bucket: &str) -> Self {
        S3Error::code(S3ErrorCode::NoSuchBucket).with("BucketName", bucket)
    }

    /// Maps a failure to receive a body (`max`: the most it may hold) to S3's answer.
    pub fn from_ingest(err: IngestError<S3Error>, max: u64) -> S3Error {
        match err {
            IngestError::Body(e) => e,
            IngestError::TooLarge { seen } => S3Error::code(S3ErrorCode::EntityTooLarge)
                .with("ProposedSize", seen.to_string())
                .with("MaxSizeAllowed", max.to_string()),
            IngestError::Io(e) => S3Error::from(e),
            IngestError::Mismatch(m) => S3Error::content_mismatch(&m),
        }
    }

    /// An upload whose bytes are not the type it declared (`sniff::check`): 400, naming both.
    pub fn content_mismatch(m: &crate::sniff::Mismatch) -> Self {
        S3Error::new(S3ErrorCode::XPostgateContentMismatch, m.message())
            .with("DeclaredType", &m.declared)
            .with("DetectedType", m.detected.as_deref().unwrap_or("unknown"))
    }

    pub fn no_such_upload(upload_id: &str) -> Self {
        S3Error::code(S3ErrorCode::NoSuchUpload).with("UploadId", upload_id)
    }

    /// The refusal of a link upload whose key is taken: a link never replaces a file.
    pub fn link_name_taken(key: &str) -> Self {
        S3Error::new(
            S3ErrorCode::PreconditionFailed,
            format!(
                "A file named {key} already exists, and an upload link never replaces a file. \
                 Rename the file and upload it again."
            ),
        )
        .with("Condition", "If-None-Match")
    }

    pub fn no_such_key(key: &str) -> Self {
        S3Error::code(S3ErrorCode::NoSuchKey).with("Key", key)
    }

    pub fn invalid_argument(
        message: impl Into<Cow<'static, str>>,
        name: &str,
        value: &str,
    ) -> Self {
        S3Error::new(S3ErrorCode::InvalidArgument, message)
            .with("ArgumentName", name)
            .with("ArgumentValue", value)
    }

    pub fn access_denied() -> Self {
        S3Error::code(S3ErrorCode::AccessDenied)
    }

    /// The XML body, as S3 sends it.
    pub fn to_xml(&self, request_id: &str) -> String {
        let mut w = XmlWriter::new();
        w.open("Error");
        w.elem("Code", self.0.code.as_str());
        w.elem("Message", &self.0.message);
        for (name, value) in &self.0.extra {
            w.elem(name, value);
        }
        if let Some(resource) = &self.0.resource {
            w.elem("Resource", resource);
        }
        w.elem("RequestId", request_id);
        w.elem("HostId", request_id);
        w.close("Error");
        w.finish()
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code.as_str(), self.0.message)?;
        if let Some(source) = &self.0.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Error {}

/// Marks a response that carries an S3 error, so the request middleware can fill in the request id
/// (which `IntoResponse` cannot see) and log internal errors.
#[derive(Clone)]
pub struct ErrorMark(pub Arc<S3Error>);

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let status = self.0.code.status();
        let mut res = status.into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        res.extensions_mut().insert(ErrorMark(Arc::new(self)));
        res
    }
}

impl From<crate::db::DbError> for S3Error {
    fn from(err: crate::db::DbError) -> Self {
        if err.is_disk_full() {
            S3Error::storage_full(err)
        } else {
            S3Error::internal(err)
        }
    }
}

impl From<std::io::Error> for S3Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => S3Error::storage_full(err),
            _ => S3Error::internal(err),
        }
    }
}

/// The core's refusals and failures, as S3 answers them.
/// A write that does not fit a bucket's quota or a link's total (postgate's own code).
impl From<crate::db::quota::Exceeded> for S3Error {
    fn from(e: crate::db::quota::Exceeded) -> Self {
        use crate::db::quota::Exceeded;
        let (what, max) = match e {
            Exceeded::BucketSize { max } => ("the bucket's quota of bytes", max),
            Exceeded::BucketObjects { max } => ("the bucket's quota of objects", max),
            Exceeded::LinkTotal { max } => ("the upload link's total size", max),
        };
        S3Error::new(
            S3ErrorCode::XPostgateQuotaExceeded,
            format!("This upload would exceed {what} ({max}). Nothing was stored."),
        )
        .with("Limit", max.to_string())
    }
}

impl From<crate::objects::Error> for S3Error {
    fn from(err: crate::objects::Error) -> Self {
        use crate::objects::Error as E;
        use S3ErrorCode as C;
        match err {
            E::PreconditionFailed(condition) => {
                S3Error::code(C::PreconditionFailed).with("Condition", condition)
            }
            E::NoSuchKey(key) => S3Error::no_such_key(&key),
            E::NoSuchBucket(bucket) => S3Error::no_such_bucket(&bucket),
            E::NoSuchUpload(id) => S3Error::no_such_upload(&id),
            E::AccessDenied => S3Error::access_denied(),
            E::NoParts => S3Error::code(C::MalformedXML),
            E::InvalidPartOrder { upload_id } => {
                S3Error::code(C::InvalidPartOrder).with("UploadId", upload_id)
            }
            E::InvalidPart {
                upload_id,
                part_number,
                etag,
            } => S3Error::code(C::InvalidPart)
                .with("UploadId", upload_id)
                .with("PartNumber", part_number.to_string())
                .with("ETag", etag),
            E::PartTooSmall {
                size,
                min,
                part_number,
                etag,
            } => S3Error::code(C::EntityTooSmall)
                .with("ProposedSize", size.to_string())
                .with("MinSizeAllowed", min.to_string())
                .with("PartNumber", part_number.to_string())
                .with("ETag", etag),
            E::TooLarge { size, max } => S3Error::code(C::EntityTooLarge)
                .with("ProposedSize", size.to_string())
                .with("MaxSizeAllowed", max.to_string()),
            E::LinkClosed(reason) => S3Error::new(C::AccessDenied, reason),
            E::LinkNameTaken(key) => S3Error::link_name_taken(&key),
            E::QuotaExceeded(e) => e.into(),
            E::QuotaRoomPassed => S3Error::new(
                C::XPostgateQuotaExceeded,
                "This upload does not fit the space left under the quota. Nothing was stored.",
            ),
            E::MetadataTooLarge(size) => S3Error::code(C::MetadataTooLarge)
                .with(
                    "MaxSizeAllowed",
                    crate::objects::write::MAX_USER_METADATA.to_string(),
                )
                .with("Size", size.to_string()),
            E::InvalidStorageClass(class) => {
                S3Error::code(C::InvalidStorageClass).with("StorageClassRequested", class)
            }
            E::InvalidDigest(value) => S3Error::code(C::InvalidDigest).with("Content-MD5", value),
            E::BadDigest {
                expected,
                calculated,
            } => S3Error::code(C::BadDigest)
                .with("ExpectedDigest", expected)
                .with("CalculatedDigest", calculated),
            E::Sha256Mismatch { client, computed } => S3Error::code(C::XAmzContentSHA256Mismatch)
                .with("ClientComputedContentSHA256", client)
                .with("S3ComputedContentSHA256", computed),
            E::ChecksumMismatch(algorithm) => S3Error::new(
                C::BadDigest,
                format!("The {algorithm} you specified did not match the calculated checksum."),
            ),
            // CompleteMultipartUpload: S3 answers these as documented on the operation's page.
            E::ObjectSizeMismatch { declared, actual } => S3Error::new(
                C::InvalidRequest,
                format!(
                    "The provided x-amz-mp-object-size ({declared}) does not match the size \
                     of the object's parts ({actual})."
                ),
            ),
            E::ChecksumTypeMismatch { declared, upload } => S3Error::new(
                C::BadDigest,
                format!(
                    "The upload was created using the {} checksum type; the complete request \
                     declared {declared}.",
                    upload.unwrap_or("no")
                ),
            ),
            E::ChecksumAlgorithmMismatch { upload, declared } => S3Error::new(
                C::InvalidRequest,
                format!(
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual \
                     checksum Type: {}",
                    upload.to_ascii_lowercase(),
                    declared.to_ascii_lowercase()
                ),
            ),
            E::ChecksumUnverifiable(algorithm) => S3Error::new(
                C::InvalidRequest,
                format!(
                    "The {algorithm} checksum of the whole object cannot be verified: a part \
                     was uploaded without a {algorithm} checksum."
                ),
            ),
            E::ContentMismatch(m) => S3Error::content_mismatch(&m),
            E::InvalidCannedAcl(value) => {
                S3Error::invalid_argument("Invalid canned ACL", "x-amz-acl", &value)
            }
            E::KeyTooLong(len) => crate::names::NameError::KeyTooLong(len).into(),
            E::UnaddressableKey(key) => S3Error::invalid_argument(
                "Object keys with a '.' or '..' segment cannot be stored in this server's backend.",
                "key",
                &key,
            ),
            E::ReservedMetadata(name) => S3Error::invalid_argument(
                "User metadata named x-amz-meta-postgate-* is reserved by this server.",
                &name,
                "",
            ),
            E::Db(e) => e.into(),
            E::Io(e) => e.into(),
            E::Encode(e) => S3Error::internal(e),
        }
    }
}

/// A bucket name or key S3 refuses.
impl From<crate::names::NameError> for S3Error {
    fn from(err: crate::names::NameError) -> Self {
        use crate::names::NameError as N;
        match err {
            N::InvalidBucketName(name) => {
                S3Error::code(S3ErrorCode::InvalidBucketName).with("BucketName", name)
            }
            N::EmptyKey => S3Error::invalid_argument("A key must be specified", "key", ""),
            N::KeyTooLong(size) => S3Error::code(S3ErrorCode::KeyTooLongError)
                .with("MaxSizeAllowed", crate::names::MAX_KEY_BYTES.to_string())
                .with("Size", size.to_string()),
        }
    }
}

/// A multipart form that multer could not read: a body cut short, or a malformed form.
impl From<multer::Error> for S3Error {
    fn from(err: multer::Error) -> Self {
        match err {
            multer::Error::StreamReadFailed(_) => S3Error::code(S3ErrorCode::IncompleteBody),
            _ => S3Error::code(S3ErrorCode::MalformedPOSTRequest),
        }
    }
}

/// A POST file outside its policy's `content-length-range`.
impl From<SizeViolation> for S3Error {
    fn from(err: SizeViolation) -> Self {
        match err {
            SizeViolation::TooLarge {
                proposed_size,
                max_size_allowed,
            } => S3Error::code(S3ErrorCode::EntityTooLarge)
                .with("ProposedSize", proposed_size.to_string())
                .with("MaxSizeAllowed", max_size_allowed.to_string()),
            SizeViolation::TooSmall {
                proposed_size,
                min_size_allowed,
            } => S3Error::code(S3ErrorCode::EntityTooSmall)
                .with("ProposedSize", proposed_size.to_string())
                .with("MinSizeAllowed", min_size_allowed.to_string()),
        }
    }
}

/// A POST form that breaks a condition of its policy.
impl From<crate::policy::PolicyViolation> for S3Error {
    fn from(err: crate::policy::PolicyViolation) -> Self {
        let mut e = S3Error::new(S3ErrorCode::AccessDenied, err.to_string());
        if let Some(field) = err.field_name() {
            e = e.with("FieldName", field);
        }
        if let Some(cond) = err.condition() {
            e = e.with("Condition", cond);
        }
        e
    }
}

/// A POST policy that is not a valid policy document.
impl From<crate::policy::PolicyDocumentError> for S3Error {
    fn from(err: crate::policy::PolicyDocumentError) -> Self {
        let mut e = S3Error::new(S3ErrorCode::InvalidPolicyDocument, err.to_string());
        if let Some(cond) = err.condition() {
            e = e.with("Condition", cond);
        }
        e
    }
}

/// A POST form whose signature fields are missing or inconsistent.
impl From<PostAuthError> for S3Error {
    fn from(err: PostAuthError) -> Self {
        match err {
            PostAuthError::PolicyWithoutSignature => S3Error::access_denied(),
            other => {
                let name = other.argument_name().unwrap_or_default();
                S3Error::invalid_argument(other.to_string(), name, "")
            }
        }
    }
}

impl From<MalformedXml> for S3Error {
    fn from(_: MalformedXml) -> Self {
        S3Error::code(S3ErrorCode::MalformedXML)
    }
}

impl From<crate::auth::AuthError> for S3Error {
    fn from(err: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        use S3ErrorCode as C;
        let message = err.to_string();
        match err {
            A::Expired {
                expires,
                server_time,
            } => S3Error::new(C::AccessDenied, message)
                .with("Expires", expires)
                .with("ServerTime", server_time),
            A::NotYetValid
            | A::V2QueryParametersMissing
            | A::V2InvalidExpires { .. }
            | A::MissingDate
            | A::EmptyAuthorization
            | A::AnonymousSignedPayload => S3Error::new(C::AccessDenied, message),
            A::HeadersNotSigned { headers } => {
                S3Error::new(C::AccessDenied, message).with("HeadersNotSigned", headers)
            }
            A::InvalidAccessKeyId { access_key } => {
                S3Error::new(C::InvalidAccessKeyId, message).with("AWSAccessKeyId", access_key)
            }
            A::RequestTimeTooSkewed {
                request_time,
                server_time,
                max_allowed_skew_ms,
            } => S3Error::new(C::RequestTimeTooSkewed, message)
                .with("RequestTime", request_time)
                .with("ServerTime", server_time)
                .with(
                    "MaxAllowedSkewMilliseconds",
                    max_allowed_skew_ms.to_string(),
                ),
            A::SignatureDoesNotMatch {
                access_key,
                string_to_sign,
                signature_provided,
                canonical_request,
            } => {
                let mut e = S3Error::new(C::SignatureDoesNotMatch, message)
                    .with("AWSAccessKeyId", access_key)
                    .with("StringToSign", string_to_sign)
                    .with("SignatureProvided", signature_provided);
                if let Some(cr) = canonical_request {
                    e = e.with("CanonicalRequest", cr);
                }
                e
            }
            A::AuthorizationHeaderMalformed { region, .. } => {
                let e = S3Error::new(C::AuthorizationHeaderMalformed, message);
                match region {
                    Some(r) => e.with("Region", r),
                    None => e,
                }
            }
            A::AuthorizationQueryParametersError { region, .. } => {
                let e = S3Error::new(C::AuthorizationQueryParametersError, message);
                match region {
                    Some(r) => e.with("Region", r),
                    None => e,
                }
            }
            A::UnsupportedAuthorizationType { value } | A::MalformedV2Header { value } => {
                S3Error::invalid_argument(message, "Authorization", &value)
            }
            A::MultipleAuthMechanisms => {
                S3Error::new(C::InvalidArgument, message).with("ArgumentName", "Authorization")
            }
            A::UnsupportedAlgorithm | A::MissingContentSha256 => {
                S3Error::new(C::InvalidRequest, message)
            }
            A::InvalidContentSha256 { value } => {
                S3Error::invalid_argument(message, "x-amz-content-sha256", &value)
            }
            A::ContentSha256Mismatch {
                client_computed,
                s3_computed,
            } => S3Error::new(C::XAmzContentSHA256Mismatch, message)
                .with("ClientComputedContentSHA256", client_computed)
                .with("S3ComputedContentSHA256", s3_computed),
        }
    }
}

impl From<crate::auth::chunked::ChunkedError> for S3Error {
    fn from(err: crate::auth::chunked::ChunkedError) -> Self {
        use crate::auth::chunked::ChunkedError as E;
        use S3ErrorCode as C;
        let message = err.to_string();
        match err {
            E::Body(_) | E::Truncated | E::LengthMismatch { .. } => {
                S3Error::new(C::IncompleteBody, message)
            }
            E::SignatureDoesNotMatch {
                string_to_sign,
                signature_provided,
            } => S3Error::new(C::SignatureDoesNotMatch, message)
                .with("StringToSign", string_to_sign)
                .with("SignatureProvided", signature_provided),
            E::InvalidDecodedLength { value } => {
                S3Error::invalid_argument(message, "x-amz-decoded-content-length", &value)
            }
            E::Checksum(c) => c.into(),
            _ => S3Error::new(C::InvalidRequest, message),
        }
    }
}

impl From<crate::auth::checksum::ChecksumError> for S3Error {
    fn from(err: crate::auth::checksum::ChecksumError) -> Self {
        use crate::auth::checksum::ChecksumError as E;
        let message = err.to_string();
        match err {
            E::Mismatch { .. } => S3Error::new(S3ErrorCode::BadDigest, message),
            _ => S3Error::new(S3ErrorCode::InvalidRequest, message),
        }
    }
}

/// The one error shape of postgate's own JSON routes under `/-/` (the JSON API, the upload
/// links' multipart and Uppy routes, the page's policy): `{"error": {"code", "message"}}` with
/// the status of the fault. Codes are S3's where S3 has one (`EntityTooLarge`, `NoSuchUpload`,
/// ...), else postgate's (`LinkUnavailable`, `InvalidRequest`).
#[derive(Debug)]
pub struct JsonError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
}

impl JsonError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        JsonError {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400 InvalidRequest`: a request the JSON API cannot read.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        JsonError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }
}

/// An S3 error on a JSON route keeps its code, status and message; an internal one is logged
/// here, since the JSON shape does not pass through the S3 error middleware.
impl From<S3Error> for JsonError {
    fn from(e: S3Error) -> Self {
        if e.s3_code() == S3ErrorCode::InternalError {
            tracing::error!(error = %e, "internal error on a JSON route");
        }
        let code = e.s3_code();
        JsonError::new(code.status(), code.as_str(), e.message().to_owned())
    }
}

impl From<crate::objects::Error> for JsonError {
    fn from(e: crate::objects::Error) -> Self {
        S3Error::from(e).into()
    }
}

impl From<crate::names::NameError> for JsonError {
    fn from(e: crate::names::NameError) -> Self {
        S3Error::from(e).into()
    }
}

impl From<crate::db::DbError> for JsonError {
    fn from(e: crate::db::DbError) -> Self {
        S3Error::from(e).into()
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut res = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        res.extensions_mut().insert(ErrorCodeMark(self.code));
        res
    }
}

/// The error code a response carries (S3's or a `/-/` route's), left on the response for the
/// access log and the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodeMark(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_answer_s3_codes() {
        use crate::names::{validate_bucket, validate_key};
        let err = S3Error::from(validate_bucket("a_b").unwrap_err());
        assert_eq!(err.s3_code(), S3ErrorCode::InvalidBucketName);
        let err = S3Error::from(validate_key(&"k".repeat(1025)).unwrap_err());
        assert_eq!(err.s3_code(), S3ErrorCode::KeyTooLongError);
        let err = S3Error::from(validate_key("").unwrap_err());
        assert_eq!(err.s3_code(), S3ErrorCode::InvalidArgument);
    }

    #[test]
    fn malformed_body_is_malformed_xml() {
        let err: S3Error = crate::xml::parse::<crate::xml::Delete>(b"<Delete><Object>")
            .unwrap_err()
            .into();
        assert_eq!(err.s3_code(), S3ErrorCode::MalformedXML);
    }
}
