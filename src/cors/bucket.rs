//! Bucket CORS on S3 paths: the answer to a preflight `OPTIONS` (given before any signature
//! check, since browsers send it without credentials), and the CORS headers every response to a
//! cross-origin request carries, errors and POST uploads included: a 204 without them makes a
//! browser report a failure for a file that was stored.
//!
//! The bucket's rules come from the caller (`s3::cors` reads them), as `rules_of(bucket)`:
//! `None` for no such bucket, `Some(None)` for a bucket without CORS rules.

use std::future::Future;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{CorsConfig, response_headers};
use crate::error::{S3Error, S3ErrorCode, S3Result};

/// A bucket's CORS rules as `rules_of` finds them.
pub type Found = Option<Option<CorsConfig>>;

fn header_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn forbidden(message: &'static str, method: &str, resource_type: &str) -> S3Error {
    S3Error::new(S3ErrorCode::AccessForbidden, message)
        .with("Method", method)
        .with("ResourceType", resource_type)
}

fn requested_headers(headers: &HeaderMap) -> Vec<&str> {
    header_of(headers, "access-control-request-headers")
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Answers a preflight `OPTIONS` for `bucket` (and an object in it when `is_object`) from the
/// bucket's rules, as S3 does.
pub async fn preflight<F>(
    headers: &HeaderMap,
    bucket: Option<&str>,
    is_object: bool,
    rules_of: impl FnOnce(String) -> F,
) -> S3Result<Response>
where
    F: Future<Output = S3Result<Found>>,
{
    let Some(origin) = header_of(headers, header::ORIGIN.as_str()) else {
        return Err(S3Error::new(
            S3ErrorCode::BadRequest,
            "Insufficient information. Origin request header needed.",
        ));
    };
    let Some(method) = header_of(headers, "access-control-request-method") else {
        return Err(S3Error::new(
            S3ErrorCode::BadRequest,
            "Invalid Access-Control-Request-Method: null",
        ));
    };
    let resource_type = if is_object { "OBJECT" } else { "BUCKET" };
    let Some(bucket) = bucket else {
        return Err(forbidden(
            "CORSResponse: Bucket not found",
            method,
            resource_type,
        ));
    };
    let config = match rules_of(bucket.to_owned()).await? {
        None => {
            return Err(forbidden(
                "CORSResponse: Bucket not found",
                method,
                "BUCKET",
            ));
        }
        Some(None) => {
            return Err(forbidden(
                "CORSResponse: CORS is not enabled for this bucket.",
                method,
                resource_type,
            ));
        }
        Some(Some(config)) => config,
    };
    let requested = requested_headers(headers);
    let Some(rule) = config.find(origin, method, &requested) else {
        return Err(S3Error::code(S3ErrorCode::AccessForbidden)
            .with("Method", method)
            .with("ResourceType", resource_type));
    };
    let mut res = (StatusCode::OK, Body::empty()).into_response();
    for (name, value) in response_headers(rule, origin, Some(&requested)) {
        set(&mut res, name, &value);
    }
    Ok(res)
}

/// Adds CORS headers to the response of a cross-origin request (`method`, `headers`) to
/// `bucket` whose rules match. A request whose origin matches nothing still succeeds, just
/// without CORS headers.
pub async fn apply<F>(
    headers: &HeaderMap,
    method: &Method,
    bucket: Option<&str>,
    res: &mut Response,
    rules_of: impl FnOnce(String) -> F,
) where
    F: Future<Output = S3Result<Found>>,
{
    let (Some(origin), Some(bucket)) = (header_of(headers, header::ORIGIN.as_str()), bucket) else {
        return;
    };
    let Ok(Some(Some(config))) = rules_of(bucket.to_owned()).await else {
        return;
    };
    if let Some(rule) = config.find(origin, method.as_str(), &[]) {
        for (name, value) in response_headers(rule, origin, None) {
            if name != "access-control-allow-methods" {
                set(res, name, &value);
            }
        }
    }
}

fn set(res: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().insert(HeaderName::from_static(name), v);
    }
}
