//! What an operator watches: the Prometheus registry behind `/-/metrics`, and what each request
//! tells its access-log line.
//!
//! A leaf: the areas only *note* what they learn while handling a request (its operation, bucket
//! and key, the signer's access key, that it stored a link's upload) on the request's [`Trace`],
//! reached through a task-local that `http`'s access middleware sets around the request; that
//! middleware counts, times and logs once the response body has been sent. Each server has its
//! own registry (several run in one test process), so nothing here is global.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the request counter: the operation and the status class (`2xx`, `4xx`, ...).
type OpStatus = [(&'static str, &'static str); 2];
/// One label: the operation, or a refusal's S3 error code.
type One = [(&'static str, &'static str); 1];

fn duration_histogram() -> Histogram {
    // 0.5 ms to ~16 s: a cached small GET to a large upload's body.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics of one server. Counters and histograms are updated as requests end; the gauges
/// that describe the disk and the database are read at scrape time (`render`).
pub struct Metrics {
    registry: Registry,
    requests: Family<OpStatus, Counter>,
    durations: Family<One, Histogram, fn() -> Histogram>,
    bytes_received: Counter,
    bytes_sent: Counter,
    uploads_in_flight: Gauge,
    post_refusals: Family<One, Counter>,
    link_uploads: Counter,
    multipart_open: Gauge,
    event_deliveries: Family<One, Counter>,
    events_pending: Gauge,
    config_reads: Counter,
    disk_free: Gauge,
    wal_size: Gauge,
}

/// What the gauges read at scrape time show.
pub struct Scrape {
    pub multipart_uploads_open: u64,
    /// Event deliveries waiting in the outbox (new or being retried).
    pub events_pending: u64,
    pub disk_free_bytes: u64,
    pub wal_bytes: u64,
}

impl Metrics {
    /// A registry with every postgate metric; `batch_sizes` and `wal_restarts` are the database
    /// writer's histograms (`db::Db::batch_sizes`, `db::Db::wal_restarts`).
    pub fn new(batch_sizes: Histogram, wal_restarts: Histogram) -> Metrics {
        let mut registry = Registry::with_prefix("postgate");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            uploads_in_flight: Gauge::default(),
            post_refusals: Family::default(),
            link_uploads: Counter::default(),
            multipart_open: Gauge::default(),
            event_deliveries: Family::default(),
            events_pending: Gauge::default(),
            config_reads: Counter::default(),
            disk_free: Gauge::default(),
            wal_size: Gauge::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by operation and status class",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response body, by operation",
            m.durations.clone(),
        );
        registry.register(
            "received_bytes",
            "Request body bytes received",
            m.bytes_received.clone(),
        );
        registry.register(
            "sent_bytes",
            "Response body bytes sent",
            m.bytes_sent.clone(),
        );
        registry.register(
            "uploads_in_flight",
            "PUT and POST requests whose body is being received",
            m.uploads_in_flight.clone(),
        );
        registry.register(
            "post_refusals",
            "Browser POST uploads refused, by S3 error code",
            m.post_refusals.clone(),
        );
        registry.register(
            "link_uploads",
            "Files stored through upload links (forms and multipart)",
            m.link_uploads.clone(),
        );
        registry.register(
            "multipart_uploads_open",
            "Multipart uploads started and not yet completed or aborted",
            m.multipart_open.clone(),
        );
        registry.register(
            "event_deliveries",
            "Webhook delivery attempts, by outcome (delivered, failed: retried later, dead)",
            m.event_deliveries.clone(),
        );
        registry.register(
            "events_pending",
            "Webhook deliveries waiting in the outbox",
            m.events_pending.clone(),
        );
        registry.register(
            "control_config_reads",
            "Copies of the shared buckets, settings and webhook targets read from the control database",
            m.config_reads.clone(),
        );
        registry.register(
            "data_dir_free_bytes",
            "Bytes available to postgate on the data directory's filesystem",
            m.disk_free.clone(),
        );
        registry.register(
            "sqlite_wal_bytes",
            "Size of the SQLite write-ahead log",
            m.wal_size.clone(),
        );
        registry.register(
            "db_commit_batch_size",
            "Writes committed together by one SQLite transaction (group commit)",
            batch_sizes,
        );
        registry.register(
            "sqlite_wal_restart_seconds",
            "How long each start-over of the SQLite WAL held up writes",
            wal_restarts,
        );
        Metrics { registry, ..m }
    }

    /// The text exposition (OpenMetrics, which Prometheus reads), with the scrape-time gauges set.
    pub fn render(&self, scrape: &Scrape) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.multipart_open
            .set(gauge(scrape.multipart_uploads_open));
        self.events_pending.set(gauge(scrape.events_pending));
        self.disk_free.set(gauge(scrape.disk_free_bytes));
        self.wal_size.set(gauge(scrape.wal_bytes));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts one webhook delivery attempt: `delivered`, `failed` (retried later) or `dead`.
    pub fn event_delivery(&self, outcome: &'static str) {
        self.event_deliveries
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Counts one read of the shared configuration from the control database.
    pub fn config_read(&self) {
        self.config_reads.inc();
    }

    /// An upload body started arriving; the returned guard counts it until dropped.
    pub fn upload_started(self: &Arc<Self>) -> InFlight {
        self.uploads_in_flight.inc();
        InFlight(self.clone())
    }

    /// Counts one finished request.
    pub fn record(&self, done: &Finished) {
        let operation = done.operation;
        self.requests
            .get_or_create(&[
                ("operation", operation),
                ("status", status_class(done.status)),
            ])
            .inc();
        self.durations
            .get_or_create(&[("operation", operation)])
            .observe(done.seconds);
        self.bytes_received.inc_by(done.bytes_in);
        self.bytes_sent.inc_by(done.bytes_out);
        if operation == "PostObject"
            && let Some(code) = done.error_code
        {
            self.post_refusals.get_or_create(&[("code", code)]).inc();
        }
        if done.link_upload && done.status < 400 {
            self.link_uploads.inc();
        }
    }
}

/// Holds one count of `uploads_in_flight`.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.uploads_in_flight.dec();
    }
}

/// A request as it ended, for the metrics.
pub struct Finished {
    pub operation: &'static str,
    pub status: u16,
    pub error_code: Option<&'static str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub seconds: f64,
    pub link_upload: bool,
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What the handlers learn about a request that its access-log line and metrics need.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// The S3 operation as AWS names it (`PutObject`, `PostObject`, ...) or the `/-/` route's name.
    pub operation: Option<&'static str>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// The signer's access key id (never its secret, never the signature).
    pub access_key: Option<String>,
    /// The upload link the request used (its id, never its token: the token is the credential).
    pub link: Option<String>,
    /// The request stored a file through an upload link.
    pub link_upload: bool,
    /// The peer's address (an event's `sourceIPAddress`).
    pub source_ip: Option<std::net::IpAddr>,
    /// The id answered in `x-amz-request-id` (an event's `responseElements`), so that a
    /// receiver can match an event with the request and its access-log line.
    pub request_id: Option<String>,
}

pub type SharedTrace = Arc<Mutex<Trace>>;

tokio::task_local! {
    static TRACE: SharedTrace;
}

/// Runs `f` (a request's handling) with `trace` as the request's trace.
pub async fn traced<F: std::future::Future>(trace: SharedTrace, f: F) -> F::Output {
    TRACE.scope(trace, f).await
}

/// Notes something about the current request; outside a traced request (the CLI, a background
/// task) it does nothing.
pub fn note(f: impl FnOnce(&mut Trace)) {
    let _ = TRACE.try_with(|t| f(&mut t.lock().unwrap_or_else(|e| e.into_inner())));
}

/// A fresh request id, 16 hex digits as S3's: each request's `x-amz-request-id`, and each
/// lifecycle sweep's (the id its events carry).
pub fn new_request_id() -> String {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    hex::encode_upper(&bytes[..8])
}

/// Reads the current request's trace; `None` outside a traced request.
pub fn read<R>(f: impl FnOnce(&Trace) -> R) -> Option<R> {
    TRACE
        .try_with(|t| f(&t.lock().unwrap_or_else(|e| e.into_inner())))
        .ok()
}

/// Bytes available to an unprivileged user on the filesystem holding `dir`.
pub fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Its total size, for a threshold given as a percentage.
pub fn total_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(dir)?;
    Ok(s.f_blocks.saturating_mul(s.f_frsize))
}

/// The access log's JSON lines, written without tracing's formatter.
///
/// One line per request is the access log's whole cost, and tracing's JSON formatter spends it
/// generously: every field becomes an owned `serde_json::Value` in a map before it is written.
/// With `POSTGATE_LOG_FORMAT=json`, `main` hands the log's writer here, and each line is
/// serialized straight from the request's borrowed fields into a buffer reused by the thread,
/// with the same keys, values and order as tracing writes them; the writer (a non-blocking
/// queue to the log thread) takes it in one call. Without a writer (text logs, servers run
/// inside tests), the line goes through `tracing` as before.
///
/// Text logs (the default) take the same path when stdout is not a terminal (`install_text`):
/// tracing's text formatter cost about 21k instructions per line (its visitor formats every
/// field through `fmt::Debug` into a fresh String); here each field is written straight into
/// the thread's buffer, in the exact form tracing's default text format (no colours) gives it.
pub mod access_json {
    use std::cell::RefCell;
    use std::io::Write;
    use std::sync::OnceLock;

    type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

    /// How the lines are written: JSON objects, or tracing's text lines.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Format {
        Json,
        Text,
    }

    static SINK: OnceLock<(Format, Sink)> = OnceLock::new();

    thread_local! {
        static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }

    /// Sends the JSON access lines to `writer` (a clone of the log's writer per line: the
    /// non-blocking writer's clone is a channel sender's).
    pub fn install<W: Write + Clone + Send + Sync + 'static>(writer: W) {
        install_as(Format::Json, writer);
    }

    /// Sends the access lines to `writer` as tracing's default text format without colours
    /// would write them (for a log that is not a terminal).
    pub fn install_text<W: Write + Clone + Send + Sync + 'static>(writer: W) {
        install_as(Format::Text, writer);
    }

    fn install_as<W: Write + Clone + Send + Sync + 'static>(format: Format, writer: W) {
        let sink: Sink = Box::new(move |line| {
            let _ = writer.clone().write_all(line);
        });
        let _ = SINK.set((format, sink));
    }

    /// Whether lines are written here (else through `tracing`).
    pub fn installed() -> bool {
        SINK.get().is_some()
    }

    /// One access-log line, borrowed from the request that ended. Field order is the line's.
    #[derive(serde::Serialize)]
    pub struct Line<'a> {
        pub timestamp: Timestamp,
        pub level: &'static str,
        pub message: &'static str,
        pub request_id: &'a str,
        pub remote: Remote,
        pub method: &'a str,
        pub operation: &'a str,
        pub bucket: &'a str,
        pub key: &'a str,
        pub status: u16,
        pub error_code: &'a str,
        pub bytes_in: u64,
        pub bytes_out: u64,
        pub duration_ms: f64,
        pub access_key: &'a str,
        pub link: &'a str,
        pub target: &'static str,
    }

    /// Writes `line` as one JSON object (or text line) and a newline; nothing when not
    /// installed.
    pub fn write(line: &Line<'_>) {
        let Some((format, sink)) = SINK.get() else {
            return;
        };
        LINE.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            let written = match format {
                Format::Json => serde_json::to_writer(&mut *buf, line).is_ok(),
                Format::Text => line.write_text(&mut buf).is_ok(),
            };
            if written {
                buf.push(b'\n');
                sink(&buf);
            }
        });
    }

    impl Line<'_> {
        /// The line as `tracing_subscriber::fmt()`'s default (full, no ANSI) format writes
        /// this event: `{timestamp} {level:>5} {target}: {message}` then ` name=value` per
        /// field, strings quoted and escaped as `{:?}` does, numbers as `{:?}`.
        fn write_text(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
            write!(
                out,
                "{} {:>5} {}: {}",
                self.timestamp, self.level, self.target, self.message
            )?;
            quoted(out, "request_id", self.request_id)?;
            match self.remote.0 {
                // An address has nothing `{:?}` would escape: quoted as it is.
                Some(addr) => write!(out, " remote=\"{addr}\"")?,
                None => out.extend_from_slice(b" remote=\"\""),
            }
            quoted(out, "method", self.method)?;
            quoted(out, "operation", self.operation)?;
            quoted(out, "bucket", self.bucket)?;
            quoted(out, "key", self.key)?;
            write!(out, " status={}", self.status)?;
            quoted(out, "error_code", self.error_code)?;
            write!(
                out,
                " bytes_in={} bytes_out={} duration_ms={:?}",
                self.bytes_in, self.bytes_out, self.duration_ms
            )?;
            quoted(out, "access_key", self.access_key)?;
            quoted(out, "link", self.link)
        }
    }

    /// ` name="value"`, the value as `{:?}` quotes a str. Printable ASCII other than `"` and
    /// `\` stands for itself there, so such a value (nearly every one) is copied as it is;
    /// any other goes through `{:?}`, which looks at it char by char.
    fn quoted(out: &mut Vec<u8>, name: &str, value: &str) -> std::io::Result<()> {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        let plain = |b: &u8| (b' '..=b'~').contains(b) && *b != b'"' && *b != b'\\';
        if value.as_bytes().iter().all(plain) {
            out.push(b'"');
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
            Ok(())
        } else {
            write!(out, "{value:?}")
        }
    }

    /// The time as tracing's JSON lines show it: RFC 3339 in UTC, to the microsecond.
    pub struct Timestamp(pub time::OffsetDateTime);

    impl Timestamp {
        pub fn now() -> Timestamp {
            Timestamp(time::OffsetDateTime::now_utc())
        }
    }

    impl std::fmt::Display for Timestamp {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let t = self.0;
            write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.microsecond()
            )
        }
    }

    impl serde::Serialize for Timestamp {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    /// The peer's address, written without an intermediate String (`""` when unknown).
    pub struct Remote(pub Option<std::net::SocketAddr>);

    impl serde::Serialize for Remote {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match &self.0 {
                Some(addr) => s.collect_str(addr),
                None => s.serialize_str(""),
            }
        }
    }
    /// The text line is the one tracing's own text format writes for the same event (after the
    /// timestamp): quotes, escapes and control characters in a key, a missing peer, numbers.
    #[cfg(test)]
    mod tests {
        use super::*;

        /// tracing's line for these fields, its timestamp left out.
        fn by_tracing(l: &Line<'_>) -> String {
            #[derive(Clone, Default)]
            struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
            impl Write for Buf {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let buf = Buf::default();
            let out = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .without_time()
                .with_writer(move || out.clone())
                .finish();
            let remote = l.remote.0.map(|p| p.to_string()).unwrap_or_default();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(
                    target: "postgate::access",
                    request_id = l.request_id,
                    remote = remote.as_str(),
                    method = l.method,
                    operation = l.operation,
                    bucket = l.bucket,
                    key = l.key,
                    status = l.status,
                    error_code = l.error_code,
                    bytes_in = l.bytes_in,
                    bytes_out = l.bytes_out,
                    duration_ms = l.duration_ms,
                    access_key = l.access_key,
                    link = l.link,
                    "request"
                );
            });
            String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
        }

        #[test]
        fn text_lines_are_tracings() {
            let keys = [
                "plain.txt",
                "a \"quoted\" key\\",
                "tab\tnew\nline\u{7f}",
                "été/日本",
                "it's ~ok",
            ];
            for (i, key) in keys.into_iter().enumerate() {
                let line = Line {
                    timestamp: Timestamp::now(),
                    level: "INFO",
                    message: "request",
                    request_id: "18A2B3C4D5E6F708",
                    remote: Remote((i % 2 == 0).then(|| "[::1]:5443".parse().unwrap())),
                    method: "PUT",
                    operation: "PutObject",
                    bucket: "b",
                    key,
                    status: 200,
                    error_code: "",
                    bytes_in: 4096,
                    bytes_out: i as u64,
                    duration_ms: [0.849786, 12.0, 1e-7, 3.5e20, 0.5][i],
                    access_key: "AKIDEXAMPLE",
                    link: "",
                    target: "postgate::access",
                };
                let mut ours = Vec::new();
                line.write_text(&mut ours).unwrap();
                let ours = String::from_utf8(ours).unwrap();
                let (stamp, rest) = ours.split_once(' ').unwrap();
                assert_eq!(stamp, line.timestamp.to_string());
                assert_eq!(format!("{rest}\n"), by_tracing(&line));
            }
        }
    }
}
