//! The edge: the router (the only place that imports every area), the middleware every request
//! passes, and the serve loop. Each area exports its `routes()`; S3 is the fallback, since its
//! paths are any bucket and key outside the reserved `/-/` prefix.

pub mod limits;
mod linger;
mod middleware;
mod ops;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware as layer;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::api::routes(
            &state.config,
            |app, parts, body, limit| {
                Box::pin(
                    async move { crate::s3::authenticate_request(&app, parts, body, limit).await },
                )
            },
        ))
        .merge(crate::links::routes())
        .route("/-/health", get(health))
        .route("/-/ready", get(ops::ready))
        .route("/-/metrics", get(ops::metrics))
        .fallback(crate::s3::dispatch)
        .layer(layer::from_fn_with_state(
            state.clone(),
            limits::body_limits,
        ))
        .layer(layer::from_fn_with_state(
            state.clone(),
            middleware::forwarded_headers,
        ))
        .layer(layer::from_fn(middleware::request_id_and_errors))
        .layer(layer::from_fn_with_state(state.clone(), ops::access))
        .with_state(state)
}

/// Liveness only: the process answers HTTP. Readiness (database and disk) is `/-/ready`.
async fn health(State(_): State<AppState>) -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Most bytes hyper reads ahead of the handler on one connection. It bounds how much of a
/// doomed upload is read before postgate answers (a POST past its policy's maximum is refused
/// at most this far past it), and it must still hold a request's headers (S3 allows 8 KiB of
/// them). It is also what each slow upload's connection holds:
/// 16 KiB rather than 64 halved the memory of many slow uploads; 1 GiB uploads measured within
/// this machine's noise of before.
const MAX_READ_AHEAD: usize = 16 * 1024;

/// Binds `addr` with a listen backlog as deep as the kernel allows (`net.core.somaxconn`, at
/// least 1,024): a burst of connections (a class of phones opening the page at once, a
/// reconnect storm after a proxy restart) then waits in the queue while the accept loop catches
/// up, instead of overflowing it. An overflowing queue falls back to SYN cookies, and a cookie
/// that fails its check later resets a connection the client already believed open.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let backlog = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1024)
        .clamp(1024, 65_535);
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish for at most
/// `shutdown_timeout` (an upload in flight either completes and commits or is discarded whole);
/// connections still open then are dropped, and their uploads discarded whole.
///
/// At most `max_connections` connections are served at once: each holds a permit of a semaphore
/// the accept loop waits on, so further clients wait in the listen backlog instead of taking
/// descriptors and memory.
///
/// A connection closes with a lingering close (`linger`): after its last answer, FIN, then
/// what the client still sends is read and dropped for a bounded time, so that a client still
/// sending a refused body reads the answer instead of a reset. The drain holds the permit.
///
/// With `config.tls`, every connection is TLS: its handshake runs in the connection's own task
/// (a slow client holds its permit, not the accept loop) and must finish within the header
/// timeout; SIGHUP reloads the certificate (`tls`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tokio_util::either::Either;

    let db = state.db.clone();
    let limits = state.config.limits.clone();
    // Every connection is a descriptor: the soft open-file limit goes up to the hard one (a
    // default soft limit of 1,024 would cap a server of thousands of phones), and the
    // connection cap is derived from what was granted.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
    });
    let max_connections = limits.connections(nofile);
    tracing::info!(max_connections, nofile, "connection limit");
    let tls = match &state.config.tls {
        Some(files) => Some(Arc::new(tls::Tls::load(files)?)),
        None => None,
    };
    let reloader = match &tls {
        Some(tls) => Some(tls.reload_on_sighup()?),
        None => None,
    };
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    let sweeper = state.clone();
    let expiry_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.tick().await;
        loop {
            tick.tick().await;
            sweeper.expire_uploads().await;
        }
    });
    let lifecycle = state.clone();
    let lifecycle_task = tokio::spawn(async move {
        let every = lifecycle.lifecycle_interval();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            lifecycle.sweep_lifecycle().await;
            lifecycle.sweep_backend_uploads().await;
        }
    });
    let nodes = state.clone();
    let nodes_task = tokio::spawn(async move {
        tokio::join!(
            nodes.watch_nodes(),
            nodes.watch_keys(),
            nodes.watch_config()
        );
    });
    // URLs are built from the address really bound (a port 0 resolved) when no public URL is set.
    let mut state = state;
    if let Ok(bound) = listener.local_addr()
        && bound != state.config.addr
    {
        let mut config = (*state.config).clone();
        config.addr = bound;
        state = state.with_config(config);
    }
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections as usize));
    // Set once the graceful period is over: every connection task drops its connection.
    let (abort, aborted) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(MAX_READ_AHEAD)
        .header_read_timeout(limits.header_timeout)
        .timer(hyper_util::rt::TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                // The peer's address rides on each request (`forwarded_headers` checks it).
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    hyper::service::Service::call(&service, req)
                });
                let watcher = graceful.watcher();
                let http = http.clone();
                let acceptor = acceptor.clone();
                let header_timeout = limits.header_timeout;
                let mut aborted = aborted.clone();
                tokio::spawn(async move {
                    // Closed with a lingering close (`linger`), below TLS.
                    let stream = linger::Lingering::new(stream);
                    let stream = match acceptor {
                        None => Either::Left(stream),
                        Some(acceptor) => {
                            let handshake =
                                tokio::time::timeout(header_timeout, acceptor.accept(stream));
                            tokio::select! {
                                done = handshake => match done {
                                    Ok(Ok(tls)) => Either::Right(tls),
                                    Ok(Err(error)) => {
                                        tracing::debug!(%peer, %error, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => return,
                                },
                                _ = aborted.wait_for(|a| *a) => return,
                            }
                        }
                    };
                    let conn = watcher.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::select! {
                        _ = conn => {}
                        _ = aborted.wait_for(|a| *a) => {}
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            after = ?limits.shutdown_timeout,
            "requests still in flight at shutdown were dropped"
        );
        let _ = abort.send(true);
        // Every connection task gives its permit back once its connection is dropped.
        let _ = permits.acquire_many(max_connections).await;
    }
    expiry_task.abort();
    lifecycle_task.abort();
    nodes_task.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    db.close();
    Ok(())
}
