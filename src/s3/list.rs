//! ListObjects (v1, `marker`) and ListObjectsV2 (`list-type=2`, `continuation-token`).
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>
//!
//! Keys come back in UTF-8 byte order (SQLite's BINARY collation). With a delimiter, keys that
//! share a common prefix roll up into one `CommonPrefixes` entry, and the scan jumps straight past
//! that prefix instead of reading every key under it.

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{S3Request, iso8601, xml_response};
use crate::error::{S3Error, S3Result};
use crate::objects::list::{self, Item};
use crate::state::AppState;
use crate::xml::XmlWriter;

const MAX_KEYS: usize = 1000;

/// `encoding-type=url`: everything but unreserved characters and `/` is escaped, spaces as `+`
/// (clients decode with unquote_plus).
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

pub async fn list_objects(app: &AppState, req: &S3Request, v2: bool) -> S3Result<Response> {
    let prefix = req.param("prefix").unwrap_or("").to_owned();
    let delimiter = req.param("delimiter").unwrap_or("").to_owned();
    let max_keys = match req.param("max-keys") {
        None => MAX_KEYS,
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            S3Error::invalid_argument(
                "Provided max-keys not an integer or within integer range",
                "max-keys",
                v,
            )
        })? as usize,
    }
    .min(MAX_KEYS);
    let url_encode = url_encoding(req)?;
    let token = req.param("continuation-token");
    let marker: Option<String> = if v2 {
        match token {
            Some(t) => Some(decode_token(t)?),
            None => req.param("start-after").map(str::to_owned),
        }
    } else {
        req.param("marker").map(str::to_owned)
    };

    let bucket = req.bucket().to_owned();
    let (p, d, m) = (prefix.clone(), delimiter.clone(), marker.clone());
    let page = list::page(&app.db, &app.store, bucket, p, d, m, max_keys).await?;

    let enc = |s: &str| encode_if(url_encode, s);
    let fetch_owner = !v2 || req.param("fetch-owner") == Some("true");
    let mut w = XmlWriter::new();
    w.root("ListBucketResult");
    w.elem("Name", req.bucket());
    w.elem("Prefix", &enc(&prefix));
    if v2 {
        if let Some(t) = token {
            w.elem("ContinuationToken", t);
        }
        if let Some(sa) = req.param("start-after") {
            w.elem("StartAfter", &enc(sa));
        }
        w.elem("KeyCount", &page.items.len().to_string());
    } else {
        w.elem("Marker", &enc(req.param("marker").unwrap_or("")));
    }
    w.elem("MaxKeys", &max_keys.to_string());
    if !delimiter.is_empty() {
        w.elem("Delimiter", &enc(&delimiter));
    }
    if url_encode {
        w.elem("EncodingType", "url");
    }
    w.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    if page.truncated {
        let last = match page.items.last() {
            Some(Item::Object(o)) => o.key.as_str(),
            Some(Item::Prefix(p)) => p.as_str(),
            None => "",
        };
        if v2 {
            w.elem("NextContinuationToken", &URL_SAFE_NO_PAD.encode(last));
        } else {
            w.elem("NextMarker", &enc(last));
        }
    }
    for item in &page.items {
        if let Item::Object(o) = item {
            w.open("Contents");
            w.elem("Key", &enc(&o.key));
            w.elem("LastModified", &iso8601(o.last_modified));
            w.elem("ETag", &o.etag);
            w.elem("Size", &o.size.to_string());
            if fetch_owner {
                w.open("Owner");
                w.elem("ID", &o.owner);
                w.elem("DisplayName", &o.owner);
                w.close("Owner");
            }
            w.elem("StorageClass", "STANDARD");
            w.close("Contents");
        }
    }
    for item in &page.items {
        if let Item::Prefix(p) = item {
            w.open("CommonPrefixes");
            w.elem("Prefix", &enc(p));
            w.close("CommonPrefixes");
        }
    }
    w.close("ListBucketResult");
    Ok(xml_response(w.finish()))
}

/// `encoding-type`: `url` or absent; anything else is InvalidArgument (every listing).
pub(super) fn url_encoding(req: &S3Request) -> S3Result<bool> {
    match req.param("encoding-type") {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(other) => Err(S3Error::invalid_argument(
            "Invalid Encoding Method specified in Request",
            "encoding-type",
            other,
        )),
    }
}

/// A key or prefix as a listing sends it: URL-encoded with `encoding-type=url`.
pub(super) fn encode_if(url_encode: bool, s: &str) -> String {
    if url_encode {
        utf8_percent_encode(s, URL_ENCODE)
            .to_string()
            .replace("%20", "+")
    } else {
        s.to_owned()
    }
}

fn decode_token(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "The continuation token provided is incorrect",
                "continuation-token",
                token,
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_encoding_keeps_slashes_and_uses_plus_for_spaces() {
        let s = percent_encoding::utf8_percent_encode("a b/c+é", super::URL_ENCODE)
            .to_string()
            .replace("%20", "+");
        assert_eq!(s, "a+b/c%2B%C3%A9");
    }
}
