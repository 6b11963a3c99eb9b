//! Bucket notifications over S3's API: Put/GetBucketNotificationConfiguration. The destinations
//! are webhook targets the operator declared, named by their ARN
//! (`arn:postgate:sqs::NAME:webhook`); any other ARN is refused as S3 refuses a destination it
//! cannot validate (400 InvalidArgument).
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketNotificationConfiguration.html>.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Caller, S3Request, empty, xml_response};
use crate::db::events;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::events::rules::{NotificationConfig, RuleError};
use crate::state::AppState;

pub async fn get(app: &AppState, req: &S3Request) -> S3Result<Response> {
    let bucket = req.bucket().to_owned();
    let stored = app
        .db
        .read(move |c| events::notification(c, &bucket))
        .await?;
    let config: NotificationConfig = stored
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    Ok(xml_response(config.to_xml()))
}

pub async fn put(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let bytes = caller.read_small_body(req, body, 64 * 1024).await?;
    // Targets the CLI declared a moment ago count.
    app.reload_events().await?;
    let config = NotificationConfig::parse(&bytes, |name| app.events.target(name).is_some())
        .map_err(|e| match e {
            RuleError::Malformed => S3Error::code(S3ErrorCode::MalformedXML),
            RuleError::UnknownDestination(ref arn) => S3Error::invalid_argument(
                e.to_string(),
                arn,
                "The destination is not a webhook target declared on this server",
            ),
            RuleError::UnknownEvent(ref event) | RuleError::BadFilter(ref event) => {
                S3Error::invalid_argument(e.to_string(), event, event)
            }
        })?;
    let json = (!config.queues.is_empty())
        .then(|| serde_json::to_string(&config))
        .transpose()
        .map_err(S3Error::internal)?;
    app.set_notification(req.bucket(), json).await?;
    Ok(empty(StatusCode::OK))
}
