//! Bucket CORS over HTTP: Put/Get/DeleteBucketCors, preflight `OPTIONS` (answered before any
//! signature check, since browsers send it without credentials), and the CORS headers every
//! response to a cross-origin request carries, errors and POST uploads included: a 204 without
//! them makes a browser report a failure for a file that was stored.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{BucketCtx, Caller, S3Request, empty, xml_response};
use crate::cors::{CorsConfig, CorsError};
use crate::db::buckets;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::state::AppState;

pub async fn get_bucket_cors(ctx: BucketCtx) -> S3Result<Response> {
    let config = ctx
        .record
        .cors
        .as_deref()
        .and_then(|json| serde_json::from_str::<CorsConfig>(json).ok())
        .ok_or_else(|| {
            S3Error::code(S3ErrorCode::NoSuchCORSConfiguration).with("BucketName", &ctx.record.name)
        })?;
    Ok(xml_response(config.to_xml()))
}

pub async fn put_bucket_cors(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let bytes = caller.read_small_body(req, body, 64 * 1024).await?;
    let config = CorsConfig::parse(&bytes).map_err(|e| match e {
        CorsError::Malformed => S3Error::code(S3ErrorCode::MalformedXML),
        other => S3Error::new(S3ErrorCode::InvalidRequest, other.to_string()),
    })?;
    let json = serde_json::to_string(&config).map_err(S3Error::internal)?;
    let name = req.bucket().to_owned();
    app.write_bucket(move |c| buckets::set_cors(c, &name, Some(&json)))
        .await?;
    Ok(empty(StatusCode::OK))
}

pub async fn delete_bucket_cors(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let name = req.bucket().to_owned();
    app.write_bucket(move |c| buckets::set_cors(c, &name, None))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn bucket_cors(app: &AppState, bucket: &str) -> S3Result<Option<Option<CorsConfig>>> {
    let found = app.bucket_with_grant(bucket, "").await?;
    Ok(found.map(|(r, _)| {
        r.cors
            .as_deref()
            .and_then(|json| serde_json::from_str::<CorsConfig>(json).ok())
    }))
}

fn forbidden(message: &'static str, req: &S3Request, resource_type: &str) -> S3Error {
    S3Error::new(S3ErrorCode::AccessForbidden, message)
        .with(
            "Method",
            req.header("access-control-request-method")
                .unwrap_or_default(),
        )
        .with("ResourceType", resource_type)
}

fn requested_headers(req: &S3Request) -> Vec<&str> {
    req.header("access-control-request-headers")
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Answers a preflight `OPTIONS` from the bucket's rules, as S3 does.
pub async fn preflight(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let Some(origin) = req.header(header::ORIGIN) else {
        return Err(S3Error::new(
            S3ErrorCode::BadRequest,
            "Insufficient information. Origin request header needed.",
        ));
    };
    let Some(method) = req.header("access-control-request-method") else {
        return Err(S3Error::new(
            S3ErrorCode::BadRequest,
            "Invalid Access-Control-Request-Method: null",
        ));
    };
    let resource_type = if req.key.is_some() {
        "OBJECT"
    } else {
        "BUCKET"
    };
    let Some(bucket) = req.bucket.as_deref() else {
        return Err(forbidden(
            "CORSResponse: Bucket not found",
            req,
            resource_type,
        ));
    };
    let config = match bucket_cors(app, bucket).await? {
        None => return Err(forbidden("CORSResponse: Bucket not found", req, "BUCKET")),
        Some(None) => {
            return Err(forbidden(
                "CORSResponse: CORS is not enabled for this bucket.",
                req,
                resource_type,
            ));
        }
        Some(Some(config)) => config,
    };
    let headers = requested_headers(req);
    let Some(rule) = config.find(origin, method, &headers) else {
        return Err(S3Error::code(S3ErrorCode::AccessForbidden)
            .with("Method", method)
            .with("ResourceType", resource_type));
    };
    let mut res = empty(StatusCode::OK);
    for (name, value) in crate::cors::response_headers(rule, origin, Some(&headers)) {
        set(&mut res, name, &value);
    }
    Ok(res)
}

/// Adds CORS headers to the response of a cross-origin request whose bucket has a matching rule.
/// A request whose origin matches nothing still succeeds, just without CORS headers.
pub async fn apply(app: &AppState, req: &S3Request, res: &mut Response) {
    let (Some(origin), Some(bucket)) = (req.header(header::ORIGIN), req.bucket.as_deref()) else {
        return;
    };
    let Ok(Some(Some(config))) = bucket_cors(app, bucket).await else {
        return;
    };
    if let Some(rule) = config.find(origin, req.method.as_str(), &[]) {
        for (name, value) in crate::cors::response_headers(rule, origin, None) {
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
