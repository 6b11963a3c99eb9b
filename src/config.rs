//! Server configuration: embedded defaults < TOML file (`--config`) < `POSTGATE_*` env < flags.
//!
//! clap reads flags and env together (a flag beats its env var); values still unset are taken
//! from the file, then from the defaults. The result is validated once, here, and passed around
//! explicitly: nothing deeper in the code reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::Deserialize;

/// Objects up to this size are stored inline in SQLite (see DESIGN.md "Why small objects go
/// inline"); larger ones stream to blob files.
pub const DEFAULT_INLINE_MAX_BYTES: usize = 64 * 1024;

/// Unfinished multipart uploads are aborted after this long, as an S3 lifecycle rule would.
/// AWS closes a connection whose body stalls for about 20 s (`RequestTimeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(20);

/// hyper's default: a request's headers must arrive within 30 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// A graceful shutdown waits this long for in-flight requests, below the 90 s after which
/// systemd kills a service.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

pub const DEFAULT_MULTIPART_EXPIRY: std::time::Duration =
    std::time::Duration::from_secs(7 * 86_400);

/// The upload page's part size: large enough for S3's 5 MiB minimum, small enough that a lost
/// part costs little on a phone.
pub const DEFAULT_LINK_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Files above this size take the upload page's multipart path.
pub const DEFAULT_LINK_MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "POSTGATE_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Region reported to clients and required in SigV4 credential scopes.
    #[arg(long, env = "POSTGATE_REGION")]
    pub region: Option<String>,
    /// Domain for virtual-host addressing: `bucket.DOMAIN` selects `bucket`.
    #[arg(long, env = "POSTGATE_DOMAIN")]
    pub domain: Option<String>,
    /// Objects up to this many bytes are stored inline in SQLite.
    #[arg(long, env = "POSTGATE_INLINE_MAX_BYTES")]
    pub inline_max_bytes: Option<usize>,
    /// Public base URL used in pages, links, redirects and `Location`s (default: the forwarded
    /// host from a trusted proxy, else `http://ADDR`; never the request's Host).
    #[arg(long, env = "POSTGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Proxies (IPs or CIDRs, comma-separated) whose `X-Forwarded-Proto`/`X-Forwarded-Host`
    /// are believed; from any other peer those headers are ignored.
    #[arg(
        long,
        env = "POSTGATE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_parser = parse_proxy
    )]
    pub trusted_proxies: Option<Vec<ipnet::IpNet>>,
    /// Origins allowed to call the `/-/api` JSON API from a browser (comma-separated, or `*`).
    #[arg(long, env = "POSTGATE_API_CORS_ORIGINS", value_delimiter = ',')]
    pub api_cors_origins: Option<Vec<String>>,
    /// Multipart uploads not completed within this time are aborted (e.g. 7d, 12h).
    #[arg(long, env = "POSTGATE_MULTIPART_EXPIRY", value_parser = crate::units::parse_duration)]
    pub multipart_expiry: Option<std::time::Duration>,
    /// Testing only: a lifecycle "day" lasts this many seconds (and is not rounded to midnight
    /// UTC), as Ceph's `rgw_lc_debug_interval`.
    #[arg(long, env = "POSTGATE_LIFECYCLE_DEBUG_DAY_SECS", hide = true)]
    pub lifecycle_debug_day_secs: Option<u64>,
    /// Upload page: files above this size go up in parts (at least 5MiB; default 64MiB).
    #[arg(long, env = "POSTGATE_LINK_MULTIPART_THRESHOLD", value_parser = crate::units::parse_size)]
    pub link_multipart_threshold: Option<u64>,
    /// Upload page: the size of each part (5MiB to 5GiB, S3's part limits; default 8MiB).
    #[arg(long, env = "POSTGATE_LINK_PART_SIZE", value_parser = crate::units::parse_size)]
    pub link_part_size: Option<u64>,
    // Limits: what one connection or request may cost.
    /// A request body that brings under 1 KiB within this time (waiting on the client) is
    /// answered 400 RequestTimeout and its upload discarded.
    #[arg(long, env = "POSTGATE_BODY_TIMEOUT", value_parser = crate::units::parse_duration)]
    pub body_timeout: Option<std::time::Duration>,
    /// A connection must send a request's headers within this time (also the keep-alive idle
    /// limit).
    #[arg(long, env = "POSTGATE_HEADER_TIMEOUT", value_parser = crate::units::parse_duration)]
    pub header_timeout: Option<std::time::Duration>,
    /// Most connections served at once; more wait to be accepted (default: from the open-file
    /// limit).
    #[arg(long, env = "POSTGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// On SIGTERM/Ctrl-C, in-flight requests get this long to finish; then they are dropped
    /// (their uploads discarded whole).
    #[arg(long, env = "POSTGATE_SHUTDOWN_TIMEOUT", value_parser = crate::units::parse_duration)]
    pub shutdown_timeout: Option<std::time::Duration>,
    // Operations.
    /// Bearer token `GET /-/metrics` requires (`Authorization: Bearer TOKEN`); unset: open.
    #[arg(long, env = "POSTGATE_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
    /// `GET /-/ready` answers 503 when the data directory has less free space than this: a size
    /// (`1GiB`) or a share of the filesystem (`5%`). Default 1GiB.
    #[arg(long, env = "POSTGATE_READY_MIN_FREE", value_parser = MinFree::parse)]
    pub ready_min_free: Option<MinFree>,
    // Events.
    /// An event delivery that keeps failing is retried for this long, then marked dead
    /// (default 24h).
    #[arg(long, env = "POSTGATE_EVENT_MAX_AGE", value_parser = crate::units::parse_duration)]
    pub event_max_age: Option<Duration>,
    /// The first retry's wait (each next one doubles); for tests.
    #[arg(long, hide = true, value_parser = crate::units::parse_duration)]
    pub event_retry_min: Option<Duration>,
    // Storage backend.
    /// Where object bytes and metadata live: `fs` (the data directory, the default) or `s3` (an
    /// S3-compatible cluster; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "POSTGATE_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// `--backend s3`: the cluster's endpoint, an http(s) URL (e.g. `http://127.0.0.1:7480`).
    #[arg(long, env = "POSTGATE_BACKEND_ENDPOINT")]
    pub backend_endpoint: Option<String>,
    /// `--backend s3`: the backend bucket that holds postgate's objects.
    #[arg(long, env = "POSTGATE_BACKEND_BUCKET")]
    pub backend_bucket: Option<String>,
    /// `--backend s3`: the region requests to the backend are signed for (default us-east-1).
    #[arg(long, env = "POSTGATE_BACKEND_REGION")]
    pub backend_region: Option<String>,
    /// `--control-db`: this node's id on the link slots it takes (default: one generated once
    /// and kept in the data directory's `node-id`).
    #[arg(long, env = "POSTGATE_NODE_ID")]
    pub node_id: Option<String>,
    /// `--control-db`: how often this node tells the others it is alive, and settles the link
    /// slots of nodes that stopped (default 5s).
    #[arg(long, env = "POSTGATE_NODE_HEARTBEAT", value_parser = crate::units::parse_duration)]
    pub node_heartbeat: Option<Duration>,
    /// `--control-db`: a node not heard from for this long is taken as stopped, and its
    /// uploads' link slots are settled by the others (default 30s; at least 3 heartbeats).
    #[arg(long, env = "POSTGATE_NODE_EXPIRY", value_parser = crate::units::parse_duration)]
    pub node_expiry: Option<Duration>,
    /// `--control-db`: how long a node holds the events it takes for delivery; another node
    /// takes them once it runs out (a node that stopped). Each attempt is cut at half of it
    /// (default 30s).
    #[arg(long, env = "POSTGATE_EVENT_LEASE", value_parser = crate::units::parse_duration)]
    pub event_lease: Option<Duration>,
    // TLS.
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs `--tls-key`. Re-read on
    /// SIGHUP, so a renewed certificate needs no restart.
    #[arg(long, env = "POSTGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "POSTGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The certificate chain and key files of native TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The free space below which the server is not ready for uploads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// A percentage of the filesystem's size.
    Percent(f64),
}

impl MinFree {
    pub fn parse(text: &str) -> Result<MinFree, String> {
        match text.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(MinFree::Percent(p)),
                _ => Err(format!("expected a percentage from 0 to 100, got {text:?}")),
            },
            None => crate::units::parse_size(text).map(MinFree::Bytes),
        }
    }

    /// The threshold in bytes on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// An event delivery that keeps failing is retried for this long, then marked dead.
pub const DEFAULT_EVENT_MAX_AGE: Duration = Duration::from_secs(86_400);
/// The first retry of a failed delivery waits about this long; each next one twice as long.
pub const DEFAULT_EVENT_RETRY_MIN: Duration = Duration::from_secs(1);
/// `--node-heartbeat`'s default.
pub const DEFAULT_NODE_HEARTBEAT: Duration = Duration::from_secs(5);
/// `--node-expiry`'s default: six missed heartbeats, well above a loaded node's hiccups.
pub const DEFAULT_NODE_EXPIRY: Duration = Duration::from_secs(30);
/// `--event-lease`.
pub const DEFAULT_EVENT_LEASE: Duration = Duration::from_secs(30);

/// The most records a webhook target's POST may carry (`webhook add --batch`, `batch`).
pub const MAX_WEBHOOK_BATCH: u32 = 100;

/// A webhook target declared in the configuration file (`[[webhook]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    pub secret: String,
    /// The most records one POST carries when several deliveries are due (1-100).
    #[serde(default = "one_record")]
    pub batch: u32,
}

fn one_record() -> u32 {
    1
}

/// Never prints the secret.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_READY_MIN_FREE: MinFree = MinFree::Bytes(1 << 30);

#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// Optional TOML configuration file.
    #[arg(long, global = true, env = "POSTGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding the SQLite file, blobs and temp files.
    #[arg(long, global = true, env = "POSTGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Several nodes: the PostgreSQL database they share links and their counters in
    /// (`postgres://user[:password]@host[:port]/database`, no TLS); `serve` takes it only with
    /// `--backend s3`. The `link` commands use it too.
    #[arg(
        long,
        global = true,
        env = "POSTGATE_CONTROL_DB",
        hide_env_values = true
    )]
    pub control_db: Option<String>,
}

/// The TOML file: the same settings as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    region: Option<String>,
    domain: Option<String>,
    inline_max_bytes: Option<usize>,
    public_url: Option<String>,
    multipart_expiry: Option<String>,
    link_multipart_threshold: Option<String>,
    link_part_size: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    /// Origins allowed to call the `/-/api` JSON API from a browser.
    #[serde(default)]
    api_cors_origins: Vec<String>,
    /// Proxies whose forwarded scheme and host are believed.
    #[serde(default)]
    trusted_proxies: Vec<String>,
    // Limits.
    body_timeout: Option<String>,
    header_timeout: Option<String>,
    max_connections: Option<u32>,
    shutdown_timeout: Option<String>,
    // Operations.
    metrics_token: Option<String>,
    ready_min_free: Option<String>,
    // Events.
    event_max_age: Option<String>,
    /// Webhook targets (`[[webhook]]` with `name`, `url`, `secret`, optional `batch`).
    #[serde(default)]
    webhook: Vec<Webhook>,
    // Storage backend.
    backend: Option<BackendKind>,
    backend_endpoint: Option<String>,
    backend_bucket: Option<String>,
    backend_region: Option<String>,
    control_db: Option<String>,
    node_id: Option<String>,
    node_heartbeat: Option<String>,
    node_expiry: Option<String>,
    event_lease: Option<String>,
    // TLS.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub region: String,
    pub domain: Option<String>,
    pub inline_max_bytes: usize,
    pub public_url: Option<String>,
    /// The admin key from env or file; when absent the stored (or a generated) one is used.
    pub admin_key: Option<(String, String)>,
    pub api_cors_origins: Vec<String>,
    pub multipart_expiry: std::time::Duration,
    /// Testing only: the length of a lifecycle "day" (`None`: S3's days, rounded to midnight UTC).
    pub lifecycle_debug_day: Option<Duration>,
    /// The upload page's multipart path: above which size, and in parts of what size.
    pub link_uploads: LinkUploads,
    /// Peers whose `X-Forwarded-Proto`/`X-Forwarded-Host` are believed (`http`'s `forwarded_headers`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub limits: Limits,
    /// Bearer token for `/-/metrics`; `None`: the route is open.
    pub metrics_token: Option<String>,
    /// `/-/ready` fails below this much free space in the data directory.
    pub ready_min_free: MinFree,
    /// How long a failing event delivery is retried.
    pub event_max_age: Duration,
    /// The first retry's wait.
    pub event_retry_min: Duration,
    /// Webhook targets from the configuration file.
    pub webhooks: Vec<Webhook>,
    /// Native TLS: `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Where object bytes and metadata live.
    pub backend: Backend,
    /// The PostgreSQL URL of the control state shared by several nodes (`--control-db`).
    /// `Debug` never shows it (it may carry a password).
    pub control_db: Option<String>,
    /// This node's id with `--control-db` (`None`: the data directory's `node-id`).
    pub node_id: Option<String>,
    /// With `--control-db`: how often this node renews its heartbeat row.
    pub node_heartbeat: Duration,
    /// With `--control-db`: how old another node's heartbeat may be before its slots are settled.
    pub node_expiry: Duration,
    /// With `--control-db`: whether this node `LISTEN`s for the control database's change
    /// notifications (always, except in the test that measures the bound of a lost one: the
    /// periodic re-read alone).
    pub control_listen: bool,
    /// With `--control-db`: how long a node holds the events it takes for delivery.
    pub event_lease: Duration,
}

/// How the upload page sends large files (`links::multipart`).
#[derive(Debug, Clone, Copy)]
pub struct LinkUploads {
    /// Files above this many bytes go up in parts.
    pub multipart_threshold: u64,
    /// Each part's size (the last may be smaller).
    pub part_size: u64,
}

impl Default for LinkUploads {
    fn default() -> Self {
        LinkUploads {
            multipart_threshold: DEFAULT_LINK_MULTIPART_THRESHOLD,
            part_size: DEFAULT_LINK_PART_SIZE,
        }
    }
}

impl LinkUploads {
    fn resolve(serve: &ServeArgs, file: &FileConfig) -> Result<LinkUploads, ConfigError> {
        let size = |flag: Option<u64>, text: &Option<String>, default| match (flag, text) {
            (Some(s), _) => Ok(s),
            (None, Some(t)) => crate::units::parse_size(t).map_err(ConfigError::Invalid),
            (None, None) => Ok(default),
        };
        // S3's part limits (`objects::multipart::{MIN,MAX}_PART_SIZE`; config imports no core).
        let (min, max) = (5 << 20, 5 << 30);
        let uploads = LinkUploads {
            multipart_threshold: size(
                serve.link_multipart_threshold,
                &file.link_multipart_threshold,
                DEFAULT_LINK_MULTIPART_THRESHOLD,
            )?,
            part_size: size(
                serve.link_part_size,
                &file.link_part_size,
                DEFAULT_LINK_PART_SIZE,
            )?,
        };
        // Below S3's part minimum every part but the last would be refused at completion; a
        // smaller threshold would send small files the slow way for nothing.
        if !(min..=max).contains(&uploads.part_size) || uploads.multipart_threshold < min {
            return Err(ConfigError::Invalid(format!(
                "link_part_size must be from 5MiB to 5GiB and link_multipart_threshold at least \
                 5MiB (got {} and {})",
                uploads.part_size, uploads.multipart_threshold
            )));
        }
        Ok(uploads)
    }
}

/// What one connection or request may cost (see `crate::http::limits` and `crate::http::serve`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a request body may wait without bringing `http::limits::MIN_PROGRESS` bytes.
    pub body_timeout: Duration,
    /// How long a connection may take to send a request's headers (or sit idle between requests).
    pub header_timeout: Duration,
    /// Most connections served at once; `None`: derived from the open-file limit at start.
    pub max_connections: Option<u32>,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_timeout: DEFAULT_BODY_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

impl Limits {
    fn resolve(serve: &ServeArgs, file: &FileConfig) -> Result<Limits, ConfigError> {
        let duration = |flag: Option<Duration>, text: &Option<String>, default| match (flag, text) {
            (Some(d), _) => Ok(d),
            (None, Some(t)) => crate::units::parse_duration(t).map_err(ConfigError::Invalid),
            (None, None) => Ok(default),
        };
        let limits = Limits {
            body_timeout: duration(serve.body_timeout, &file.body_timeout, DEFAULT_BODY_TIMEOUT)?,
            header_timeout: duration(
                serve.header_timeout,
                &file.header_timeout,
                DEFAULT_HEADER_TIMEOUT,
            )?,
            max_connections: serve.max_connections.or(file.max_connections),
            shutdown_timeout: duration(
                serve.shutdown_timeout,
                &file.shutdown_timeout,
                DEFAULT_SHUTDOWN_TIMEOUT,
            )?,
        };
        if limits.body_timeout.is_zero() || limits.header_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "body_timeout and header_timeout must be positive".into(),
            ));
        }
        if limits.max_connections == Some(0) {
            return Err(ConfigError::Invalid(
                "max_connections must be positive".into(),
            ));
        }
        Ok(limits)
    }

    /// `max_connections`, or the default for an open-file limit of `nofile`: 64 descriptors are
    /// kept for the database, the listener and logs; of the rest, three quarters go to
    /// connections (a socket each: most of a busy server's connections are idle keep-alives or
    /// small requests) and a quarter to the files that large uploads and reads open beside
    /// their socket. With the usual hard limit of 20,000, 14,952 connections.
    pub fn connections(&self, nofile: u64) -> u32 {
        self.max_connections
            .unwrap_or_else(|| (nofile.saturating_sub(64) / 4 * 3).clamp(16, 1 << 20) as u32)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("region", &self.region)
            .field("domain", &self.domain)
            .field("inline_max_bytes", &self.inline_max_bytes)
            .field("public_url", &self.public_url)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("admin_key", &self.admin_key.as_ref().map(|(a, _)| a))
            .field("limits", &self.limits)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("ready_min_free", &self.ready_min_free)
            .field("event_max_age", &self.event_max_age)
            .field(
                "webhooks",
                &self.webhooks.iter().map(|w| &w.name).collect::<Vec<_>>(),
            )
            .field("tls", &self.tls)
            .field("backend", &self.backend)
            .field("control_db", &self.control_db.as_ref().map(|_| "<set>"))
            .field("node_id", &self.node_id)
            .field("node_heartbeat", &self.node_heartbeat)
            .field("node_expiry", &self.node_expiry)
            .field("control_listen", &self.control_listen)
            .field("event_lease", &self.event_lease)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn resolve(common: &CommonArgs, serve: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &common.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let limits = Limits::resolve(serve, &file)?;
        let link_uploads = LinkUploads::resolve(serve, &file)?;
        let backend = Backend::resolve(serve, &file)?;
        let env_key = std::env::var("POSTGATE_ACCESS_KEY")
            .ok()
            .filter(|s| !s.is_empty());
        let env_secret = std::env::var("POSTGATE_SECRET_KEY")
            .ok()
            .filter(|s| !s.is_empty());
        let admin_key = match (env_key.or(file.access_key), env_secret.or(file.secret_key)) {
            (Some(a), Some(s)) => Some((a, s)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "POSTGATE_ACCESS_KEY and POSTGATE_SECRET_KEY must be set together".into(),
                ));
            }
        };
        let duration = |flag: Option<Duration>, text: &Option<String>, default| match (flag, text) {
            (Some(d), _) => Ok(d),
            (None, Some(t)) => crate::units::parse_duration(t).map_err(ConfigError::Invalid),
            (None, None) => Ok(default),
        };
        let config = Config {
            addr: serve
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9000))),
            data_dir: common
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            region: serve
                .region
                .clone()
                .or(file.region)
                .unwrap_or_else(|| "us-east-1".into()),
            domain: serve.domain.clone().or(file.domain),
            inline_max_bytes: serve
                .inline_max_bytes
                .or(file.inline_max_bytes)
                .unwrap_or(DEFAULT_INLINE_MAX_BYTES),
            public_url: serve
                .public_url
                .clone()
                .or(file.public_url)
                .map(|u| u.trim_end_matches('/').to_owned()),
            admin_key,
            api_cors_origins: serve
                .api_cors_origins
                .clone()
                .unwrap_or(file.api_cors_origins),
            multipart_expiry: match (serve.multipart_expiry, &file.multipart_expiry) {
                (Some(d), _) => d,
                (None, Some(text)) => {
                    crate::units::parse_duration(text).map_err(ConfigError::Invalid)?
                }
                (None, None) => DEFAULT_MULTIPART_EXPIRY,
            },
            lifecycle_debug_day: serve
                .lifecycle_debug_day_secs
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            link_uploads,
            trusted_proxies: match &serve.trusted_proxies {
                Some(list) => list.clone(),
                None => file
                    .trusted_proxies
                    .iter()
                    .map(|p| parse_proxy(p))
                    .collect::<Result<_, _>>()
                    .map_err(ConfigError::Invalid)?,
            },
            limits,
            metrics_token: serve
                .metrics_token
                .clone()
                .or(file.metrics_token)
                .filter(|t| !t.is_empty()),
            ready_min_free: match (serve.ready_min_free, &file.ready_min_free) {
                (Some(m), _) => m,
                (None, Some(text)) => MinFree::parse(text).map_err(ConfigError::Invalid)?,
                (None, None) => DEFAULT_READY_MIN_FREE,
            },
            event_max_age: match (serve.event_max_age, &file.event_max_age) {
                (Some(d), _) => d,
                (None, Some(text)) => {
                    crate::units::parse_duration(text).map_err(ConfigError::Invalid)?
                }
                (None, None) => DEFAULT_EVENT_MAX_AGE,
            },
            event_retry_min: serve.event_retry_min.unwrap_or(DEFAULT_EVENT_RETRY_MIN),
            webhooks: file.webhook,
            tls: match (
                serve.tls_cert.clone().or(file.tls_cert),
                serve.tls_key.clone().or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "tls_cert and tls_key must be set together".into(),
                    ));
                }
            },
            backend,
            control_db: common
                .control_db
                .clone()
                .or(file.control_db)
                .filter(|u| !u.is_empty()),
            node_id: serve.node_id.clone().or(file.node_id),
            node_heartbeat: duration(
                serve.node_heartbeat,
                &file.node_heartbeat,
                DEFAULT_NODE_HEARTBEAT,
            )?,
            node_expiry: duration(serve.node_expiry, &file.node_expiry, DEFAULT_NODE_EXPIRY)?,
            control_listen: true,
            event_lease: duration(serve.event_lease, &file.event_lease, DEFAULT_EVENT_LEASE)?,
        };
        // A live node must renew its row several times within the expiry, or a slow tick would
        // make the others settle the slots of its uploads still running.
        if config.node_heartbeat.is_zero() || config.node_expiry < config.node_heartbeat * 3 {
            return Err(ConfigError::Invalid(
                "--node-expiry must be at least 3 times --node-heartbeat (and that above 0)".into(),
            ));
        }
        // Each attempt gets half the lease: at least a second.
        if config.event_lease < Duration::from_secs(2) {
            return Err(ConfigError::Invalid(
                "--event-lease must be at least 2s".into(),
            ));
        }
        if let Some(id) = &config.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(ConfigError::Invalid(
                "--node-id must be 1-64 of A-Z a-z 0-9 - _".into(),
            ));
        }
        for w in &config.webhooks {
            let name_ok = (1..=64).contains(&w.name.len())
                && w.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok || url::Url::parse(&w.url).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "webhook {:?}: the name must be 1-64 of A-Z a-z 0-9 - _ and the url absolute",
                    w.name
                )));
            }
            if !(1..=MAX_WEBHOOK_BATCH).contains(&w.batch) {
                return Err(ConfigError::Invalid(format!(
                    "webhook {:?}: batch must be 1-{}",
                    w.name, MAX_WEBHOOK_BATCH
                )));
            }
        }
        if config.region.is_empty() {
            return Err(ConfigError::Invalid("region must not be empty".into()));
        }
        Ok(config)
    }

    /// A configuration for tests and embedding: everything explicit, nothing from the environment.
    pub fn for_data_dir(data_dir: &Path) -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_owned(),
            region: "us-east-1".into(),
            domain: None,
            inline_max_bytes: DEFAULT_INLINE_MAX_BYTES,
            public_url: None,
            admin_key: None,
            api_cors_origins: Vec::new(),
            multipart_expiry: DEFAULT_MULTIPART_EXPIRY,
            lifecycle_debug_day: None,
            link_uploads: LinkUploads::default(),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            metrics_token: None,
            ready_min_free: DEFAULT_READY_MIN_FREE,
            event_max_age: DEFAULT_EVENT_MAX_AGE,
            event_retry_min: DEFAULT_EVENT_RETRY_MIN,
            webhooks: Vec::new(),
            tls: None,
            backend: Backend::Fs,
            control_db: None,
            node_id: None,
            node_heartbeat: DEFAULT_NODE_HEARTBEAT,
            node_expiry: DEFAULT_NODE_EXPIRY,
            control_listen: true,
            event_lease: DEFAULT_EVENT_LEASE,
        }
    }

    /// The base URL when neither `public_url` nor a trusted proxy names one: the address the
    /// server listens on, `https://` when it serves TLS itself.
    pub fn listen_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("postgate.db")
    }
}

/// `--backend`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Fs,
    S3,
}

/// Where object bytes and metadata live (`storage::Storage` is built from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Blobs under the data directory, metadata in its SQLite database.
    Fs,
    /// An S3-compatible cluster.
    S3(S3Backend),
}

/// An S3 backend's settings. `Debug` shows the access key id, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Backend {
    /// `http(s)://host[:port][/path]`, without a trailing slash.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Flags and env over the file; the `--backend-*` settings only with `--backend s3`, where
    /// the endpoint, the bucket and both halves of the credentials are required.
    fn resolve(serve: &ServeArgs, file: &FileConfig) -> Result<Backend, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let kind = serve.backend.or(file.backend).unwrap_or(BackendKind::Fs);
        let endpoint = serve
            .backend_endpoint
            .clone()
            .or(file.backend_endpoint.clone());
        let bucket = serve.backend_bucket.clone().or(file.backend_bucket.clone());
        let region = serve.backend_region.clone().or(file.backend_region.clone());
        if kind == BackendKind::Fs {
            if endpoint.is_some() || bucket.is_some() || region.is_some() {
                return invalid(
                    "--backend-endpoint, --backend-bucket and --backend-region need --backend s3"
                        .into(),
                );
            }
            return Ok(Backend::Fs);
        }
        let Some(endpoint) = endpoint else {
            return invalid("--backend s3 needs --backend-endpoint (an http(s) URL)".into());
        };
        let endpoint = match parse_endpoint(&endpoint) {
            Ok(url) => url,
            Err(why) => return invalid(format!("--backend-endpoint {endpoint:?}: {why}")),
        };
        let Some(bucket) = bucket.filter(|b| !b.is_empty()) else {
            return invalid("--backend s3 needs --backend-bucket".into());
        };
        if crate::names::validate_bucket(&bucket).is_err() {
            return invalid(format!(
                "--backend-bucket {bucket:?} is not a valid S3 bucket name"
            ));
        }
        let region = region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return invalid(format!(
                "--backend-region {region:?} must be a region name (letters, digits, -)"
            ));
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(access_key_id), Some(secret_access_key)) =
            (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        else {
            return invalid(
                "--backend s3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
                    .into(),
            );
        };
        Ok(Backend::S3(S3Backend {
            endpoint,
            bucket,
            region,
            access_key_id,
            secret_access_key,
        }))
    }
}

/// An S3 endpoint: an absolute http(s) URL with a host, no credentials, query or fragment.
fn parse_endpoint(text: &str) -> Result<String, &'static str> {
    let url = url::Url::parse(text).map_err(|_| "not a URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A trusted proxy: a network (`10.0.0.0/8`) or one address (`127.0.0.1`, `::1`).
fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("trusted proxy {s:?} is neither an IP address nor a CIDR network"))
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_part_size_keeps_to_s3s_part_limits() {
        let with = |threshold: Option<u64>, part: Option<u64>| {
            let serve = ServeArgs {
                link_multipart_threshold: threshold,
                link_part_size: part,
                ..ServeArgs::default()
            };
            LinkUploads::resolve(&serve, &FileConfig::default())
                .map(|l| (l.multipart_threshold, l.part_size))
        };
        assert_eq!(with(None, None).unwrap(), (64 << 20, 8 << 20));
        assert_eq!(
            with(Some(5 << 20), Some(5 << 20)).unwrap(),
            (5 << 20, 5 << 20)
        );
        assert!(with(None, Some((5 << 20) - 1)).is_err());
        assert!(with(None, Some((5 << 30) + 1)).is_err());
        assert!(with(Some(1 << 20), None).is_err());
        let file = FileConfig {
            link_part_size: Some("6MiB".into()),
            ..FileConfig::default()
        };
        let l = LinkUploads::resolve(&ServeArgs::default(), &file).unwrap();
        assert_eq!(l.part_size, 6 << 20);
    }

    #[test]
    fn ready_min_free_is_a_size_or_a_share() {
        assert_eq!(MinFree::parse("1GiB"), Ok(MinFree::Bytes(1 << 30)));
        assert_eq!(MinFree::parse("5%"), Ok(MinFree::Percent(5.0)));
        assert_eq!(MinFree::Percent(5.0).bytes(1000), 50);
        assert!(MinFree::parse("150%").is_err());
        assert!(MinFree::parse("lots").is_err());
    }

    #[test]
    fn a_node_expiry_shorter_than_three_heartbeats_is_refused() {
        let common = CommonArgs {
            config: None,
            data_dir: None,
            control_db: None,
        };
        let serve = |beat: u64, expiry: u64| ServeArgs {
            node_heartbeat: Some(Duration::from_secs(beat)),
            node_expiry: Some(Duration::from_secs(expiry)),
            ..ServeArgs::default()
        };
        assert!(Config::resolve(&common, &serve(5, 14)).is_err());
        assert!(Config::resolve(&common, &serve(0, 30)).is_err());
        let c = Config::resolve(&common, &serve(5, 15)).unwrap();
        assert_eq!(c.node_expiry, Duration::from_secs(15));
        let c = Config::resolve(&common, &ServeArgs::default()).unwrap();
        assert_eq!(
            (c.node_heartbeat, c.node_expiry),
            (DEFAULT_NODE_HEARTBEAT, DEFAULT_NODE_EXPIRY)
        );
    }

    /// A `[[webhook]]`'s `batch` is 1 when left out, and 1-100.
    #[test]
    fn a_config_file_webhooks_batch_is_1_to_100() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let with = |batch: &str| {
            let hook =
                "[[webhook]]\nname = \"h\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"s\"\n";
            std::fs::write(&path, format!("{hook}{batch}")).unwrap();
            let common = CommonArgs {
                config: Some(path.clone()),
                data_dir: Some(dir.path().into()),
                control_db: None,
            };
            Config::resolve(&common, &ServeArgs::default()).map(|c| c.webhooks[0].batch)
        };
        assert_eq!(with("").unwrap(), 1);
        assert_eq!(with("batch = 100\n").unwrap(), 100);
        assert!(with("batch = 0\n").is_err());
        assert!(with("batch = 101\n").is_err());
    }

    #[test]
    fn file_values_fill_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "region = \"eu-west-1\"\naddr = \"127.0.0.1:9100\"\n").unwrap();
        let common = CommonArgs {
            config: Some(path),
            data_dir: None,
            control_db: None,
        };
        let serve = ServeArgs {
            addr: Some("127.0.0.1:9200".parse().unwrap()),
            ..ServeArgs::default()
        };
        let c = Config::resolve(&common, &serve).unwrap();
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.addr.port(), 9200);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.inline_max_bytes, DEFAULT_INLINE_MAX_BYTES);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let parsed = |s| parse_proxy(s).map(|n| n.to_string());
        assert_eq!(parsed("127.0.0.1").as_deref(), Ok("127.0.0.1/32"));
        assert_eq!(parsed(" 10.0.0.0/8 ").as_deref(), Ok("10.0.0.0/8"));
        assert_eq!(parsed("::1").as_deref(), Ok("::1/128"));
        assert!(parse_proxy("proxy.example").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "trusted_proxies = [\"192.168.0.0/16\", \"x\"]\n").unwrap();
        let common = CommonArgs {
            config: Some(path),
            data_dir: None,
            control_db: None,
        };
        assert!(Config::resolve(&common, &ServeArgs::default()).is_err());
    }

    #[test]
    fn limits_come_from_the_file_unless_a_flag_sets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "body_timeout = \"5s\"\nshutdown_timeout = \"1m\"\nmax_connections = 10\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path),
            data_dir: None,
            control_db: None,
        };
        let serve = ServeArgs {
            max_connections: Some(20),
            ..ServeArgs::default()
        };
        let l = Config::resolve(&common, &serve).unwrap().limits;
        assert_eq!(l.body_timeout, Duration::from_secs(5));
        assert_eq!(l.shutdown_timeout, Duration::from_secs(60));
        assert_eq!(l.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(l.connections(1024), 20);
        assert_eq!(Limits::default().connections(1024), 720);
        assert_eq!(Limits::default().connections(20_000), 14_952);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "regoin = \"x\"\n").unwrap();
        let common = CommonArgs {
            config: Some(path),
            data_dir: None,
            control_db: None,
        };
        assert!(Config::resolve(&common, &ServeArgs::default()).is_err());
    }
}
