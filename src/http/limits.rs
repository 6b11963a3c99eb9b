//! Bounded cost per request: every request body is read under an idle timeout, and a response
//! whose request body was left unread says `Connection: close`.
//!
//! Both live in one layer (`body_limits`) that wraps the body before any handler sees it, so that
//! every path that reads a body (PUT, POST forms, parts, CompleteMultipartUpload, the JSON API,
//! the link and Uppy routes) is covered without a handler knowing about it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::{S3Error, S3ErrorCode};
use crate::state::AppState;

/// A body must bring at least this many bytes within each `body_timeout` of waiting, or end.
/// A plain "no byte for N seconds" rule would let a client that trickles one byte every few
/// seconds hold a connection forever; this keeps the floor far below any real network
/// (about 50 bytes/s with the default 20 s) while catching tricklers.
pub const MIN_PROGRESS: u64 = 1024;

/// What the layer learns about a request body while the handler reads it.
#[derive(Default)]
struct BodyState {
    /// The body was read to its end.
    ended: AtomicBool,
    /// The idle timeout fired.
    timed_out: AtomicBool,
    /// Data bytes handed to the handler.
    read: AtomicU64,
}

/// The error a timed-out body yields to its reader; the layer turns whatever the handler then
/// answers into `RequestTimeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body idle for too long")]
pub struct BodyTimeout;

/// A request body under the idle timeout. Only time spent waiting on the client counts: while the
/// handler is busy (writing to disk, waiting on the database) and not polling, the clock stops.
struct GuardedBody {
    inner: Body,
    state: Arc<BodyState>,
    timeout: Duration,
    /// Waiting time already spent in the current window (before the present wait).
    waited: Duration,
    /// When the present wait began, if the last poll was pending.
    wait_start: Option<Instant>,
    /// Bytes received in the current window.
    progress: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl GuardedBody {
    fn stop_waiting(&mut self) {
        if let Some(start) = self.wait_start.take() {
            self.waited += start.elapsed();
        }
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.state.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stop_waiting();
                if let Some(data) = frame.data_ref() {
                    this.progress += data.len() as u64;
                    this.state
                        .read
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.progress >= MIN_PROGRESS {
                    this.progress = 0;
                    this.waited = Duration::ZERO;
                }
                if this.inner.is_end_stream() {
                    this.state.ended.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.stop_waiting();
                this.state.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.stop_waiting();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                let start = *this.wait_start.get_or_insert_with(Instant::now);
                let deadline = start + this.timeout.saturating_sub(this.waited);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    this.state.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The layer: wraps the body, then looks at what became of it once the handler has answered.
/// - The idle timeout fired: the answer is `400 RequestTimeout` (S3 XML, or the JSON error shape
///   on `/-/` routes), whatever the handler made of the failed read. Handlers discard a body
///   that fails, so nothing partial is stored.
/// - The body was not read to its end: the connection cannot carry another request (hyper closes
///   it), so the answer says `Connection: close` and a client does not reuse it.
pub async fn body_limits(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let state = Arc::new(BodyState::default());
    let declared = req.body().size_hint().exact();
    let own_route = req.uri().path().starts_with("/-/");
    let req = req.map(|inner| {
        Body::new(GuardedBody {
            inner,
            state: state.clone(),
            timeout: app.config.limits.body_timeout,
            waited: Duration::ZERO,
            wait_start: None,
            progress: 0,
            sleep: None,
        })
    });
    let mut res = next.run(req).await;
    if state.timed_out.load(Ordering::Relaxed) {
        res = if own_route {
            let code = S3ErrorCode::RequestTimeout;
            crate::error::JsonError::new(code.status(), code.as_str(), code.default_message())
                .into_response()
        } else {
            S3Error::code(S3ErrorCode::RequestTimeout).into_response()
        };
    }
    let read_all = state.ended.load(Ordering::Relaxed)
        || declared.is_some_and(|n| n == state.read.load(Ordering::Relaxed));
    if !read_all {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
