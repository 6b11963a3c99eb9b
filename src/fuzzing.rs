//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), for parsers that are private to
//! their handlers. Not an API: each function only runs the real code on its input.

use time::OffsetDateTime;

/// The POST Object form pipeline without a server: see `s3::post_object::check_form`. The body
/// arrives in `chunks`; `Ok(size)` when the form and its file would be accepted.
pub async fn post_form(
    content_type: &str,
    chunks: Vec<bytes::Bytes>,
    bucket: &str,
    secret: &str,
    now: OffsetDateTime,
    max_file: u64,
) -> Result<u64, crate::error::S3Error> {
    crate::s3::check_form(content_type, chunks, bucket, secret, now, max_file).await
}

/// GetObject's `Range` header resolved against an object of `size` bytes.
pub fn range(value: &str, size: u64) -> Result<Option<(u64, u64)>, crate::error::S3Error> {
    crate::s3::parse_range(value, size)
}

/// A CompleteMultipartUpload body, parsed as the handler parses it.
pub fn complete_multipart_upload(body: &[u8]) -> Result<(), crate::error::S3Error> {
    crate::xml::parse::<crate::s3::CompleteMultipartUpload>(body)
        .map(drop)
        .map_err(crate::error::S3Error::from)
}
