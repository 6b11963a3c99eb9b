//! Bucket CORS, the S3 operations: Put/Get/DeleteBucketCors store and read a bucket's rules.
//! Preflights and the headers of actual requests are answered by `cors::bucket` from the rules
//! read here.

use axum::body::Body;
use axum::http::StatusCode;
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
    app.set_bucket(req.bucket(), buckets::Setting::Cors(Some(json)))
        .await?;
    Ok(empty(StatusCode::OK))
}

pub async fn delete_bucket_cors(app: &AppState, req: &S3Request) -> S3Result<Response> {
    app.set_bucket(req.bucket(), buckets::Setting::Cors(None))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn bucket_cors(app: &AppState, bucket: &str) -> S3Result<crate::cors::bucket::Found> {
    let found = app.bucket_with_grant(bucket, "").await?;
    Ok(found.map(|(r, _)| {
        r.cors
            .as_deref()
            .and_then(|json| serde_json::from_str::<CorsConfig>(json).ok())
    }))
}

/// Answers a preflight `OPTIONS` from the bucket's rules (`cors::bucket::preflight`).
pub async fn preflight(app: &AppState, req: &S3Request) -> S3Result<Response> {
    crate::cors::bucket::preflight(
        &req.headers,
        req.bucket.as_deref(),
        req.key.is_some(),
        |bucket| async move { bucket_cors(app, &bucket).await },
    )
    .await
}

/// Adds the bucket's CORS headers to the response of a cross-origin request
/// (`cors::bucket::apply`).
pub async fn apply(app: &AppState, req: &S3Request, res: &mut Response) {
    crate::cors::bucket::apply(
        &req.headers,
        &req.method,
        req.bucket.as_deref(),
        res,
        |bucket| async move { bucket_cors(app, &bucket).await },
    )
    .await
}
