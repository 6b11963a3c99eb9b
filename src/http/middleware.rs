//! The middleware every request passes: request ids and S3 error bodies, and the trust put in
//! forwarding headers. (The body limits are in `limits`.)

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCodeMark, ErrorMark, S3ErrorCode};
use crate::state::AppState;

/// `X-Forwarded-Proto` and `X-Forwarded-Host` say where a proxy received a request; believed
/// from anyone, they would let a client have postgate build its URLs (form actions, redirects,
/// `Location`s) on a host of its choosing. Only a connection from one of the configured
/// `trusted_proxies` gets the `FROM_TRUSTED_PROXY` mark that makes `state::base_url` read them.
/// The headers themselves are left alone: a client may have signed them. The peer's address is
/// the `ConnectInfo` that `serve` attaches; without one, nothing is trusted.
pub(super) async fn forwarded_headers(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    req.headers_mut().remove(crate::state::FROM_TRUSTED_PROXY);
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    if peer.is_some_and(|ip| app.config.trusted_proxies.iter().any(|n| n.contains(&ip))) {
        req.headers_mut().insert(
            crate::state::FROM_TRUSTED_PROXY,
            HeaderValue::from_static("1"),
        );
    }
    next.run(req).await
}

/// Gives every response an `x-amz-request-id`, renders S3 errors' XML bodies (which need that id)
/// and logs internal errors. Kept out of `IntoResponse` so rendering has no side effects.
pub(super) async fn request_id_and_errors(req: Request, next: Next) -> Response {
    let is_head = req.method() == Method::HEAD;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = crate::telemetry::new_request_id();
    crate::telemetry::note(|t| t.request_id = Some(request_id.clone()));
    let mut res = next.run(req).await;
    if let Some(ErrorMark(err)) = res.extensions_mut().remove::<ErrorMark>() {
        match err.s3_code() {
            S3ErrorCode::InternalError => {
                tracing::error!(%method, %path, error = %err, request_id, "internal error")
            }
            S3ErrorCode::XPostgateStorageFull => {
                tracing::error!(%method, %path, error = %err, request_id, "storage full")
            }
            code => tracing::debug!(%method, %path, code = code.as_str(), "request refused"),
        }
        let status = res.status();
        let keep_body = !is_head && status != StatusCode::NOT_MODIFIED;
        if keep_body {
            let body = err.to_xml(&request_id);
            let headers = std::mem::take(res.headers_mut());
            res = (status, body).into_response();
            res.headers_mut().extend(headers);
        } else {
            res.headers_mut().remove(header::CONTENT_TYPE);
        }
        res.extensions_mut()
            .insert(ErrorCodeMark(err.s3_code().as_str()));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-amz-request-id", v.clone());
        res.headers_mut().insert("x-amz-id-2", v);
    }
    res.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("postgate"));
    res
}
