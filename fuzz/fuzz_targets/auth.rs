//! SigV4 and SigV2: parsing the credentials of a request (headers or query), every
//! canonicalisation step, and verification, for arbitrary requests.
//!
//! Input: an HTTP/1.1 request head as sent on the wire (`METHOD target HTTP/1.1`, header
//! lines, empty line). It is split by hand, not by an HTTP parser, so the path and query may
//! hold any bytes; header lines `http` refuses are dropped, as hyper would refuse them. The
//! clock is the request's own date, so the corpus (real client requests signed with the corpus
//! key) verifies and mutations explore every refusal.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use postgate::auth::{self, RequestView, SecretKey, sigv2, sigv4};
use postgate_fuzz::{REGION, SECRET_KEY};

fuzz_target!(|data: &[u8]| {
    let head = data.split(|&b| b == b'\n').collect::<Vec<_>>();
    let Some((first, lines)) = head.split_first() else {
        return;
    };
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let mut parts = first.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let target = String::from_utf8_lossy(target);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_ref(), None),
    };

    // Every canonicalisation step on its own.
    let params = sigv4::parse_query(query.unwrap_or(""));
    let _ = sigv4::canonical_uri(path);
    let _ = sigv4::canonical_query(&params, false);
    let _ = sigv4::canonical_query(&params, true);
    let names: Vec<String> = headers.keys().map(|n| n.as_str().to_owned()).collect();
    let _ = sigv4::canonical_headers(&names, &headers, Some("example.com"));
    let _ = sigv2::canonical_amz_headers(&headers);
    let _ = sigv2::canonical_resource(path, &params);
    let _ = sigv2::bucket_resource_alternative(path);

    // Credentials as the server reads them (from the query of a URI it could have received).
    let uri = Uri::builder()
        .path_and_query(format!("/?{}", query.unwrap_or("")))
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let Ok(creds) = auth::parse_request(&uri, &headers) else {
        return;
    };
    let now = request_time(&headers, &params);
    let secret = SecretKey::new(SECRET_KEY.to_owned());
    for v2_resource in [None, Some(path)] {
        let view = RequestView {
            method: &method,
            path,
            query,
            authority: None,
            headers: &headers,
            v2_resource,
        };
        if let Ok(verified) = auth::verify(&creds, &view, &secret, REGION, now) {
            let _ = auth::chunked::AwsChunkedOptions::from_request(&verified.payload, &headers);
        }
    }
    let _ = auth::anonymous_payload(&headers);
});

/// The time the request claims (`x-amz-date`, `Date`, `X-Amz-Date`), else a fixed clock.
fn request_time(headers: &HeaderMap, params: &[sigv4::QueryParam]) -> time::OffsetDateTime {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    header("x-amz-date")
        .and_then(sigv4::parse_amz_date)
        .or_else(|| {
            header("date").and_then(|d| {
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc2822).ok()
            })
        })
        .or_else(|| {
            params
                .iter()
                .find(|p| p.name == "X-Amz-Date")
                .and_then(|p| sigv4::parse_amz_date(p.value_str()))
        })
        .unwrap_or_else(|| time::OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap())
}
