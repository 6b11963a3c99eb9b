//! What an operator watches: the access log and metrics of every request (the `access`
//! middleware), `/-/metrics`, `/-/ready` and `/-/health`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};

use crate::error::{ErrorCodeMark, JsonError};
use crate::state::AppState;
use crate::telemetry::{Finished, Metrics, SharedTrace, access_json};

/// The tracing target of the access log: `POSTGATE_LOG=postgate::access=off` silences it alone.
pub const ACCESS_TARGET: &str = "postgate::access";

/// How long `/-/ready` waits for its write: a database that takes longer is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The outermost layer: gives the request a `Trace` the handlers note what they learn on, counts
/// its body bytes both ways, and when the response body has been sent (or dropped), records the
/// request in the metrics and writes its access-log line.
pub(super) async fn access(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let route = route_name(req.uri().path());
    let uploading = matches!(*req.method(), Method::PUT | Method::POST)
        && axum::body::HttpBody::size_hint(req.body()).exact() != Some(0);
    let in_flight = uploading.then(|| app.metrics.upload_started());
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let req = req.map(|body| {
        Body::new(Counted::new(body, move |n| {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }))
    });
    let method = req.method().clone();
    let trace = SharedTrace::default();
    trace.lock().unwrap_or_else(|e| e.into_inner()).source_ip = peer.map(|p| p.ip().to_canonical());
    let res = crate::telemetry::traced(trace.clone(), next.run(req)).await;
    drop(in_flight);
    let mut done = Done {
        metrics: app.metrics.clone(),
        start,
        peer,
        method,
        route,
        status: res.status().as_u16(),
        error_code: res.extensions().get::<ErrorCodeMark>().map(|m| m.0),
        request_id: res.headers().get("x-amz-request-id").cloned(),
        trace,
        received,
        sent: 0,
    };
    res.map(|body| {
        Body::new(Counted::new(body, move |n| {
            // The whole `Done` moves into the closure (not just its `sent` field): it is dropped,
            // and logs, with the body.
            let done = &mut done;
            done.sent += n as u64;
        }))
    })
}

/// A body that reports the length of each data frame that passes, and keeps the inner body's
/// size hint and end (so that hyper still sends `Content-Length` where it did).
struct Counted<F> {
    inner: Body,
    seen: F,
}

impl<F: FnMut(usize)> Counted<F> {
    fn new(inner: Body, seen: F) -> Self {
        Counted { inner, seen }
    }
}

impl<F: FnMut(usize) + Unpin> axum::body::HttpBody for Counted<F> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, axum::Error>>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            (this.seen)(data.len());
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Names the `/-/` routes for the `operation` label; S3 requests are named by the S3 handler.
fn route_name(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/-/")?;
    let name = match rest.split('/').next().unwrap_or_default() {
        "metrics" => "metrics",
        "ready" => "ready",
        "health" => "health",
        "api" => "api",
        "static" => "static",
        "u" => match rest.split('/').nth(2) {
            Some("s3") => "uppy",
            Some("uploads") => "link_multipart",
            _ => "link_page",
        },
        _ => "unknown",
    };
    Some(name)
}

/// A request whose response is being sent: dropped with its body, it counts and logs it.
struct Done {
    metrics: Arc<Metrics>,
    start: Instant,
    peer: Option<SocketAddr>,
    method: Method,
    route: Option<&'static str>,
    status: u16,
    error_code: Option<&'static str>,
    /// The `x-amz-request-id` answered (a clone shares its bytes).
    request_id: Option<HeaderValue>,
    trace: SharedTrace,
    received: Arc<AtomicU64>,
    sent: u64,
}

impl Done {
    fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let trace = std::mem::take(&mut *self.trace.lock().unwrap_or_else(|e| e.into_inner()));
        let operation = self.route.or(trace.operation).unwrap_or("Unknown");
        let bytes_in = self.received.load(Ordering::Relaxed);
        self.metrics.record(&Finished {
            operation,
            status: self.status,
            error_code: self.error_code,
            bytes_in,
            bytes_out: self.sent,
            seconds: elapsed.as_secs_f64(),
            link_upload: trace.link_upload,
        });
        // Bucket, key, access key id and link id only: never the query (a presigned URL's
        // signature), never a header, never a link's token (the path is not logged).
        if access_json::installed() {
            // JSON or text lines: written directly, as tracing would (see `access_json`),
            // when the filter lets the access log through.
            if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
                access_json::write(&access_json::Line {
                    timestamp: access_json::Timestamp::now(),
                    level: "INFO",
                    message: "request",
                    request_id: self.request_id(),
                    remote: access_json::Remote(self.peer),
                    method: self.method.as_str(),
                    operation,
                    bucket: trace.bucket.as_deref().unwrap_or_default(),
                    key: trace.key.as_deref().unwrap_or_default(),
                    status: self.status,
                    error_code: self.error_code.unwrap_or_default(),
                    bytes_in,
                    bytes_out: self.sent,
                    duration_ms: elapsed.as_secs_f64() * 1000.0,
                    access_key: trace.access_key.as_deref().unwrap_or_default(),
                    link: trace.link.as_deref().unwrap_or_default(),
                    target: ACCESS_TARGET,
                });
            }
            return;
        }
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = self.request_id(),
            remote = self.peer.map(|p| p.to_string()).unwrap_or_default().as_str(),
            method = self.method.as_str(),
            operation,
            bucket = trace.bucket.as_deref().unwrap_or_default(),
            key = trace.key.as_deref().unwrap_or_default(),
            status = self.status,
            error_code = self.error_code.unwrap_or_default(),
            bytes_in,
            bytes_out = self.sent,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            access_key = trace.access_key.as_deref().unwrap_or_default(),
            link = trace.link.as_deref().unwrap_or_default(),
            "request"
        );
    }
}

/// `GET /-/metrics`: the Prometheus text exposition; behind `Authorization: Bearer TOKEN` when
/// `metrics_token` is set.
pub(super) async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &app.config.metrics_token {
        use subtle::ConstantTimeEq;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let mut res = JsonError::new(
                StatusCode::UNAUTHORIZED,
                "AccessDenied",
                "The metrics need the configured bearer token.",
            )
            .into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            return res;
        }
    }
    let scrape = app.scrape().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(&scrape),
    )
        .into_response()
}

/// `GET /-/ready`: 200 when the data directory has the configured free space and SQLite
/// commits a write; 503 with the reason otherwise (a load balancer stops sending uploads).
pub(super) async fn ready(State(app): State<AppState>) -> Response {
    let not_ready = |code: &'static str, message: String| {
        JsonError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response()
    };
    let dir = &app.config.data_dir;
    let space = crate::telemetry::free_bytes(dir)
        .and_then(|free| Ok((free, crate::telemetry::total_bytes(dir)?)));
    match space {
        Err(e) => {
            return not_ready(
                "DataDirUnavailable",
                format!("cannot read the data directory's free space: {e}"),
            );
        }
        Ok((free, total)) => {
            let min = app.config.ready_min_free.bytes(total);
            if free < min {
                return not_ready(
                    "InsufficientFreeSpace",
                    format!("{free} bytes free in the data directory, below the {min} required"),
                );
            }
        }
    }
    match tokio::time::timeout(READY_TIMEOUT, app.probe_write()).await {
        Ok(Ok(())) => (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"ready":true}"#,
        )
            .into_response(),
        Ok(Err(e)) => not_ready("DatabaseUnwritable", format!("SQLite refused a write: {e}")),
        Err(_) => not_ready(
            "DatabaseUnwritable",
            format!("SQLite did not commit a write within {READY_TIMEOUT:?}"),
        ),
    }
}
