//! Why the core refused or failed an operation, in the core's own words. The core knows nothing
//! of S3's codes or HTTP: `error.rs` gives each variant its S3 answer (`From<Error> for S3Error`),
//! and through it the `/-/` routes' JSON answer.

use crate::db::DbError;

/// A refusal or failure of a core operation (write, copy, multipart, the headers of a write).
#[derive(Debug)]
pub enum Error {
    /// The condition a write carried failed: the header that failed (`If-None-Match` or
    /// `If-Match`).
    PreconditionFailed(&'static str),
    /// No object at this key (`If-Match` on a missing key, a copy whose source went away).
    NoSuchKey(String),
    /// The bucket went away while the body was being received.
    NoSuchBucket(String),
    /// The caller may not read the source of a copy.
    AccessDenied,
    /// No such multipart upload (never started, completed or aborted).
    NoSuchUpload(String),
    /// CompleteMultipartUpload named no part.
    NoParts,
    /// The part list of a completion is not in ascending order.
    InvalidPartOrder { upload_id: String },
    /// A part the completion names was not uploaded, or has another ETag.
    InvalidPart {
        upload_id: String,
        part_number: u32,
        etag: String,
    },
    /// A part other than the last is smaller than S3's minimum.
    PartTooSmall {
        size: u64,
        min: u64,
        part_number: u32,
        etag: String,
    },
    /// A body, a part or a whole upload is larger than it may be.
    TooLarge { size: u64, max: u64 },
    /// The upload link is closed (revoked, expired or gone): why.
    LinkClosed(&'static str),
    /// A link's upload found its key taken: a link never replaces a file.
    LinkNameTaken(String),
    /// User metadata larger than S3 allows: its size.
    MetadataTooLarge(usize),
    /// A storage class AWS does not have.
    InvalidStorageClass(String),
    /// A `Content-MD5` value that is not base64 of 16 bytes.
    InvalidDigest(String),
    /// The body's MD5 differs from `Content-MD5` (both base64).
    BadDigest {
        expected: String,
        calculated: String,
    },
    /// The body's SHA-256 differs from the signed one (both hex).
    Sha256Mismatch { client: String, computed: String },
    /// The body's additional checksum differs from the declared one: the algorithm's name.
    ChecksumMismatch(&'static str),
    /// A completion's `x-amz-mp-object-size` is not the parts' total.
    ObjectSizeMismatch { declared: u64, actual: u64 },
    /// A completion's `x-amz-checksum-type` is not the upload's (`None`: the upload has none).
    ChecksumTypeMismatch {
        declared: &'static str,
        upload: Option<&'static str>,
    },
    /// A completion declared a checksum of another algorithm than the upload's.
    ChecksumAlgorithmMismatch {
        upload: &'static str,
        declared: &'static str,
    },
    /// A declared whole-object checksum that the parts cannot verify (a part without that CRC,
    /// or a hash): the algorithm's name.
    ChecksumUnverifiable(&'static str),
    /// The upload's first bytes are not the type it declared (verification on: a link, a
    /// policy or the bucket asks for it).
    ContentMismatch(crate::sniff::Mismatch),
    /// The write does not fit the bucket's quota or its link's total.
    QuotaExceeded(crate::db::quota::Exceeded),
    /// A body read against the room left under a quota ([`crate::objects::quota::Hold::limit`])
    /// passed it.
    QuotaRoomPassed,
    /// An `x-amz-acl` value postgate does not know.
    InvalidCannedAcl(String),
    /// User metadata under a name postgate keeps for itself in an S3 backend
    /// (`x-amz-meta-postgate-*`): the header's name.
    ReservedMetadata(String),
    /// A key that fits S3's 1024 bytes only without the S3 backend's `{bucket}/` before it:
    /// the backend key's length.
    KeyTooLong(usize),
    /// A key with a `.` or `..` segment under the S3 backend, whose URLs cannot carry one.
    UnaddressableKey(String),
    /// The database failed.
    Db(DbError),
    /// The blob store failed.
    Io(std::io::Error),
    /// A stored value could not be encoded.
    Encode(serde_json::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        Error::Db(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Db(e) => write!(f, "database: {e}"),
            Error::Io(e) => write!(f, "storage: {e}"),
            Error::Encode(e) => write!(f, "encoding: {e}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for Error {}
