//! The XML documents the backend answers with, as serde shapes for quick-xml (the same reader
//! as `crate::xml`). Only the fields the backend client uses; unknown elements are skipped.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct ListBucketResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "NextContinuationToken", default)]
    pub next_continuation_token: Option<String>,
    #[serde(rename = "Contents", default)]
    pub contents: Vec<Contents>,
    #[serde(rename = "CommonPrefixes", default)]
    pub common_prefixes: Vec<CommonPrefix>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Contents {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "LastModified", default)]
    pub last_modified: String,
    #[serde(rename = "ETag", default)]
    pub etag: String,
    #[serde(rename = "Size", default)]
    pub size: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct CommonPrefix {
    #[serde(rename = "Prefix")]
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct InitiateMultipartUploadResult {
    #[serde(rename = "UploadId")]
    pub upload_id: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct CompleteMultipartUploadResult {
    #[serde(rename = "ETag", default)]
    pub etag: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct CopyObjectResult {
    #[serde(rename = "ETag", default)]
    pub etag: String,
    #[serde(rename = "LastModified", default)]
    pub last_modified: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListPartsResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "NextPartNumberMarker", default)]
    pub next_part_number_marker: Option<u32>,
    #[serde(rename = "Part", default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Part {
    #[serde(rename = "PartNumber")]
    pub part_number: u32,
    #[serde(rename = "ETag", default)]
    pub etag: String,
    #[serde(rename = "Size", default)]
    pub size: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct ListMultipartUploadsResult {
    #[serde(rename = "IsTruncated", default)]
    pub is_truncated: bool,
    #[serde(rename = "NextKeyMarker", default)]
    pub next_key_marker: Option<String>,
    #[serde(rename = "NextUploadIdMarker", default)]
    pub next_upload_id_marker: Option<String>,
    #[serde(rename = "Upload", default)]
    pub uploads: Vec<Upload>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Upload {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "UploadId")]
    pub upload_id: String,
    /// ISO 8601 (`2026-12-02T07:55:00.000Z`).
    #[serde(rename = "Initiated", default)]
    pub initiated: String,
}

/// UploadPartCopy's answer.
#[derive(Debug, Deserialize)]
pub(super) struct CopyPartResult {
    #[serde(rename = "ETag", default)]
    pub etag: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteResult {
    #[serde(rename = "Error", default)]
    pub errors: Vec<DeleteError>,
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteError {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Code", default)]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// Parses an answer's body into `T`.
pub(super) fn parse<T: for<'de> Deserialize<'de>>(
    what: &str,
    body: &[u8],
) -> Result<T, super::Error> {
    let text = std::str::from_utf8(body)
        .map_err(|_| super::Error::Protocol(format!("{what}: the answer is not UTF-8")))?;
    quick_xml::de::from_str(text).map_err(|e| super::Error::Protocol(format!("{what}: {e}")))
}

/// Escapes text for an XML element (keys in DeleteObjects and nothing else user-given).
pub(super) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}
