//! The running application: shared state, the router and the serve loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::db::buckets::{BucketRecord, Perm};
use crate::db::keys::KeyRecord;
use crate::db::{self, Db, DbError};
use crate::error::{ErrorMark, S3ErrorCode};
use crate::store::BlobStore;

/// How long a looked-up access key or bucket row is trusted before it is read again, so that keys
/// the operator deletes with the CLI while the server runs stop working promptly.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// Access key id → (the key, if it exists; when it was read).
type KeyCache = HashMap<String, (Option<KeyRecord>, Instant)>;

/// Bucket name → (its row; when it was read).
type BucketMap = HashMap<String, (BucketRecord, Instant)>;

/// Bucket rows as requests see them, so that an upload does not wait on the read pool for a row
/// that rarely changes. Changes made through this server clear it at once (`write_bucket`);
/// changes by the CLI (`bucket set`) or another process show within `CACHE_TTL`. Grants are not
/// cached (`postgate bucket allow` applies at once), nor are missing buckets (one the CLI creates
/// is usable at once).
#[derive(Default)]
struct BucketCache {
    map: RwLock<BucketMap>,
    /// Bumped by every change: a read that began before it must not refill the cache.
    generation: AtomicU64,
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub store: BlobStore,
    keys: Arc<RwLock<KeyCache>>,
    buckets: Arc<BucketCache>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database: {0}")]
    Db(#[from] DbError),
}

impl AppState {
    /// Opens the data directory: creates it, migrates the database, sweeps what a crash left
    /// behind and makes sure an admin key exists. Returns the state and, when a new admin key was
    /// generated, its secret (to be printed once).
    pub async fn open(config: Config) -> Result<(AppState, Option<KeyRecord>), StartError> {
        let dir = config.data_dir.clone();
        if crate::store::private_dir(&dir)
            .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?
        {
            tracing::info!(dir = %dir.display(), "made the data directory private (mode 0700)");
        }
        let store =
            BlobStore::open(&dir).map_err(|e| StartError::DataDir(dir.display().to_string(), e))?;
        let db = Db::open(&config.db_path())?;

        let referenced = db.read(db::objects::referenced_blobs).await?;
        let sweep_store = store.clone();
        match tokio::task::spawn_blocking(move || sweep_store.sweep(&referenced)).await {
            Ok(Ok((temps, orphans))) if temps + orphans > 0 => {
                tracing::info!(temps, orphans, "swept leftovers of interrupted uploads")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "start-up sweep failed"),
            _ => {}
        }

        // Form uploads a killed server left between taking their link's slot and storing (or
        // refusing) the file: the slot stays taken only if the file was stored.
        let released = db.write(db::links::settle_form_slots).await?;
        if released > 0 {
            tracing::info!(
                released,
                "gave back link slots of form uploads that never finished"
            );
        }

        let admin = config.admin_key.clone();
        let (retired, generated) = db
            .write(move |c| match admin {
                Some((access, secret)) => {
                    let retired = db::keys::install_admin(c, &access, &secret)?;
                    Ok((retired, None))
                }
                None => match db::keys::find_admin(c)? {
                    Some(_) => Ok((Vec::new(), None)),
                    None => {
                        let (access, secret) = db::keys::generate();
                        db::keys::install_admin(c, &access, &secret)?;
                        Ok((Vec::new(), db::keys::find(c, &access)?))
                    }
                },
            })
            .await?;
        if let Some((new, _)) = &config.admin_key {
            for old in retired {
                // Access key ids only: never a secret in the log.
                tracing::info!(
                    old_access_key = %old,
                    new_access_key = %new,
                    "the configured admin key replaces the previous one, which no longer works"
                );
            }
        }
        let state = AppState {
            config: Arc::new(config),
            db,
            store,
            keys: Arc::new(RwLock::new(HashMap::new())),
            buckets: Arc::default(),
        };
        state.expire_uploads().await;
        Ok((state, generated))
    }

    /// Aborts multipart uploads older than the configured expiry.
    pub async fn expire_uploads(&self) {
        let expiry = self.config.multipart_expiry.as_millis() as i64;
        match crate::s3::expire_uploads(self, db::now_millis() - expiry).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "aborted expired multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "multipart expiry failed"),
        }
    }

    /// Looks up an access key, through a short-lived cache.
    pub async fn find_key(&self, access_key: &str) -> Result<Option<KeyRecord>, DbError> {
        if let Some((rec, at)) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(access_key)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(rec.clone());
        }
        let owned = access_key.to_owned();
        let rec = self.db.read(move |c| db::keys::find(c, &owned)).await?;
        let mut cache = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(access_key.to_owned(), (rec.clone(), Instant::now()));
        Ok(rec)
    }

    /// The bucket and the grant `access_key` holds on it. Pass `""` when no grant can matter
    /// (an anonymous or admin caller); the owner's grant does not matter either. Only when a grant
    /// can matter is it read, and then always from the database.
    pub async fn bucket_with_grant(
        &self,
        bucket: &str,
        access_key: &str,
    ) -> Result<Option<(BucketRecord, Option<Perm>)>, DbError> {
        if let Some((record, at)) = self
            .buckets
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(bucket)
            && at.elapsed() < CACHE_TTL
            && (access_key.is_empty() || access_key == record.owner)
        {
            return Ok(Some((record.clone(), None)));
        }
        let generation = self.buckets.generation.load(Ordering::Acquire);
        let (b, k) = (bucket.to_owned(), access_key.to_owned());
        let found = self
            .db
            .read(move |c| db::buckets::get_with_grant(c, &b, &k))
            .await?;
        if let Some((record, _)) = &found {
            let mut map = self.buckets.map.write().unwrap_or_else(|e| e.into_inner());
            // A change since the read began may have made it stale: leave it out.
            if self.buckets.generation.load(Ordering::Acquire) == generation {
                if map.len() > 10_000 {
                    map.clear();
                }
                map.insert(bucket.to_owned(), (record.clone(), Instant::now()));
            }
        }
        Ok(found)
    }

    /// A write to buckets (a bucket, its ACL, CORS or grants): the bucket cache forgets everything
    /// once it is done, whatever its outcome.
    pub async fn write_bucket<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
    {
        let result = self.db.write(f).await;
        self.buckets_changed();
        result
    }

    fn buckets_changed(&self) {
        let mut map = self.buckets.map.write().unwrap_or_else(|e| e.into_inner());
        self.buckets.generation.fetch_add(1, Ordering::AcqRel);
        map.clear();
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/-/api/presign/post",
            axum::routing::post(crate::api::presign_post),
        )
        .route(
            "/-/api/links",
            get(crate::api::list_links).post(crate::api::create_link),
        )
        .route(
            "/-/api/links/{id}",
            axum::routing::delete(crate::api::revoke_link),
        )
        .route("/-/api/openapi.json", get(crate::api::openapi))
        .layer(api_cors(&state.config.api_cors_origins));
    // Uppy's `@uppy/aws-s3` signs through these (see `crate::uppy`); the link is the credential.
    let uppy = Router::new()
        .route("/-/u/{token}/s3/params", get(crate::uppy::params))
        .route(
            "/-/u/{token}/s3/multipart",
            axum::routing::post(crate::uppy::create),
        )
        .route(
            "/-/u/{token}/s3/multipart/{id}",
            get(crate::uppy::list_parts).delete(crate::link_uploads::abort),
        )
        .route(
            "/-/u/{token}/s3/multipart/{id}/complete",
            axum::routing::post(crate::uppy::complete),
        )
        .route(
            "/-/u/{token}/s3/multipart/{id}/{n}",
            get(crate::uppy::sign_part),
        )
        .layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([axum::http::header::CONTENT_TYPE])
                .max_age(std::time::Duration::from_secs(3600)),
        );
    Router::new()
        .merge(api)
        .merge(uppy)
        .route("/-/health", get(health))
        .route("/-/u/{token}", get(crate::ui::upload_page))
        .route("/-/u/{token}/policy", get(crate::ui::link_policy_json))
        .route("/-/u/{token}/done", get(crate::ui::received_page))
        .route(
            "/-/u/{token}/uploads",
            axum::routing::post(crate::link_uploads::start),
        )
        .route(
            "/-/u/{token}/uploads/{id}",
            get(crate::link_uploads::parts).delete(crate::link_uploads::abort),
        )
        .route(
            "/-/u/{token}/uploads/{id}/parts/{n}",
            get(crate::link_uploads::part_url),
        )
        .route(
            "/-/u/{token}/uploads/{id}/complete",
            axum::routing::post(crate::link_uploads::complete),
        )
        .route("/-/static/{file}", get(crate::ui::static_file))
        .fallback(crate::s3::dispatch)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::body_limits,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            forwarded_headers,
        ))
        .layer(middleware::from_fn(request_id_and_errors))
        .with_state(state)
}

/// Marks a request whose `X-Forwarded-Proto`/`X-Forwarded-Host` come from a trusted proxy (see
/// `forwarded_headers`); only `forwarded_headers` sets it, and it removes any a client sent.
pub(crate) const FROM_TRUSTED_PROXY: &str = "x-postgate-from-trusted-proxy";

/// `X-Forwarded-Proto` and `X-Forwarded-Host` say where a proxy received a request; believed
/// from anyone, they would let a client have postgate build its URLs (form actions, redirects,
/// `Location`s) on a host of its choosing. Only a connection from one of the configured
/// `trusted_proxies` gets the `FROM_TRUSTED_PROXY` mark that makes `ui::base_url` read them.
/// The headers themselves are left alone: a client may have signed them. The peer's address is
/// the `ConnectInfo` that `serve` attaches; without one, nothing is trusted.
async fn forwarded_headers(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    req.headers_mut().remove(FROM_TRUSTED_PROXY);
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    if peer.is_some_and(|ip| app.config.trusted_proxies.iter().any(|n| n.contains(&ip))) {
        req.headers_mut()
            .insert(FROM_TRUSTED_PROXY, HeaderValue::from_static("1"));
    }
    next.run(req).await
}

/// CORS for the JSON API: the origins the configuration lists (`api_cors_origins`), or none.
fn api_cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(list)
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("x-amz-date"),
            axum::http::HeaderName::from_static("x-amz-content-sha256"),
            axum::http::HeaderName::from_static("x-amz-security-token"),
        ])
        .max_age(Duration::from_secs(600))
}

async fn health(State(_): State<AppState>) -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Gives every response an `x-amz-request-id`, renders S3 errors' XML bodies (which need that id)
/// and logs internal errors. Kept out of `IntoResponse` so rendering has no side effects.
async fn request_id_and_errors(req: Request, next: Next) -> Response {
    let is_head = req.method() == Method::HEAD;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = new_request_id();
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
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert("x-amz-request-id", v.clone());
        res.headers_mut().insert("x-amz-id-2", v);
    }
    res.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("postgate"));
    res
}

fn new_request_id() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    hex::encode_upper(&bytes[..8])
}

/// Most bytes hyper reads ahead of the handler on one connection. It bounds how much of a
/// doomed upload is read before postgate answers (a POST past its policy's maximum is refused
/// at most this far past it), and it must still hold a request's headers.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// Serves until `shutdown` resolves, then lets in-flight requests finish for at most
/// `shutdown_timeout` (an upload in flight either completes and commits or is discarded whole);
/// connections still open then are dropped, and their uploads discarded whole.
///
/// At most `max_connections` connections are served at once: each holds a permit of a semaphore
/// the accept loop waits on, so further clients wait in the listen backlog instead of taking
/// descriptors and memory.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;

    let db = state.db.clone();
    let limits = state.config.limits.clone();
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    let max_connections = limits.connections(nofile);
    tracing::debug!(max_connections, "connection limit");
    let sweeper = state.clone();
    let expiry_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.tick().await;
        loop {
            tick.tick().await;
            sweeper.expire_uploads().await;
        }
    });
    // URLs are built from the address really bound (a port 0 resolved) when no public URL is set.
    let mut state = state;
    if let Ok(bound) = listener.local_addr()
        && bound != state.config.addr
    {
        let mut config = (*state.config).clone();
        config.addr = bound;
        state.config = Arc::new(config);
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
                let conn = http.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                let mut aborted = aborted.clone();
                tokio::spawn(async move {
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
    db.close();
    Ok(())
}
