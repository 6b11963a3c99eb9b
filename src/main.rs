//! The `postgate` command: `serve` runs the server; the other commands are the operator's tools
//! and work directly on the data directory (the server may be running).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use postgate::config::{CommonArgs, Config, ServeArgs};
use postgate::db::{self, buckets::Perm, buckets::Setting};

/// Threads of tokio's blocking pool (see `serve`): SQLite's readers (8) and the rest (closing
/// fsyncs, persists, copies, reads of files) side by side; more jobs queue. Uploads' batches are
/// written and hashed on threads of their own (`storage::fs`).
const MAX_BLOCKING_THREADS: usize = 16;

/// mimalloc: small requests allocate and free many short-lived buffers across threads, where
/// glibc's malloc showed up as about 13% of the server's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (15 in both its v2 and v3 headers; `libmimalloc-sys`
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How often a runtime worker going idle hands its heap's free pages back (see `collect_on_park`).
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Run by each tokio worker as it parks: at most every `COLLECT_EVERY`, has mimalloc free the
/// pages of this thread's heap that hold nothing. mimalloc frees a page only in the thread that
/// owns it, when that thread allocates again (blocks freed by other threads wait for it too), so
/// workers that fall idle after a burst kept what the burst had used: 1,000 slow uploads left the
/// server at 94-150 MiB, four to six times its idle size, where glibc's counters showed 1 MiB in
/// use. One collect takes about 0.4 ms; the limit keeps busy workers, which park thousands of
/// times a second, from paying it more than ten times a second. A worker's last park skips it
/// when the one before was under 100 ms earlier: what it freed in that time stays (measured:
/// back within twice idle at most 2 s after 1,000 uploads, `benches/s3/phones.rs`, figure 15b).
#[allow(unsafe_code)]
fn collect_on_park() {
    thread_local!(static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) });
    let now = std::time::Instant::now();
    LAST.with(|last| {
        if last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY)
        {
            last.set(Some(now));
            // SAFETY: collects the calling thread's own heap; no pointer is passed.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

/// Gives freed memory back to the kernel at once rather than 10 ms later: an upload's buffers
/// are freed in bursts, and with the delay many slow uploads kept twice their working set
/// resident. `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options, before any thread is started.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[derive(Parser)]
#[command(
    name = "postgate",
    version,
    about = "S3-compatible browser-upload gateway"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the S3 API server.
    Serve(Box<ServeArgs>),
    /// Manage access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage buckets and grants.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Manage shareable upload links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Manage webhook targets (what bucket notifications and links may send events to).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// See and retry event deliveries.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Print a signed POST form (`{"url", "fields"}`, like boto3's generate_presigned_post).
    PresignPost(Box<PresignPostArgs>),
}

#[derive(clap::Args)]
struct PresignPostArgs {
    bucket: String,
    /// Exact key the form uploads to.
    #[arg(long, conflicts_with = "prefix")]
    key: Option<String>,
    /// Key prefix: the form's key is `PREFIX${filename}`, any key under PREFIX is allowed.
    #[arg(long)]
    prefix: Option<String>,
    /// Lifetime: seconds or 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = postgate::units::parse_duration)]
    expires: std::time::Duration,
    /// Largest file (e.g. 10MiB).
    #[arg(long, default_value = "5GiB", value_parser = postgate::units::parse_size)]
    max_size: u64,
    /// Smallest file.
    #[arg(long, default_value = "0", value_parser = postgate::units::parse_size)]
    min_size: u64,
    /// Content type: exact (`image/png`), prefix (ending in `/`: `image/`), or a comma list.
    #[arg(long)]
    content_type: Option<String>,
    /// User metadata `name=value` (repeatable).
    #[arg(long = "meta", value_parser = parse_pair)]
    meta: Vec<(String, String)>,
    /// 200, 201 or 204.
    #[arg(long)]
    success_action_status: Option<u16>,
    /// Redirect the browser here (303) after the upload.
    #[arg(long)]
    redirect: Option<String>,
    /// Canned ACL for the object.
    #[arg(long)]
    acl: Option<String>,
    /// Signature version: v4 (default) or v2.
    #[arg(long, default_value = "v4", value_parser = ["v4", "v2"])]
    sig: String,
    /// The file's bytes must match its declared Content-Type (field and condition
    /// `x-postgate-verify-type: on`).
    #[arg(long)]
    verify_type: bool,
    /// Access key to sign with (default: the admin key).
    #[arg(long)]
    access_key: Option<String>,
    /// Base URL of the server (default: --public-url, else http://ADDR).
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| format!("expected name=value, got {s:?}"))
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Declare (or replace) a target; buckets name it `arn:postgate:sqs::NAME:webhook`.
    Add {
        name: String,
        /// Where events are POSTed.
        #[arg(long)]
        url: String,
        /// Signs every delivery (HMAC-SHA256; see the README's verifier).
        #[arg(long, env = "POSTGATE_WEBHOOK_SECRET")]
        secret: String,
        /// Up to N records in one POST when several events are waiting (1-100). The default,
        /// 1, sends one record per POST as S3 does; more costs the receiver and postgate less
        /// per event under load, for receivers that read every element of `Records`.
        #[arg(long, default_value_t = 1)]
        batch: u32,
    },
    /// List targets (secrets are not shown).
    List,
    /// Remove a target; its pending deliveries die at their next attempt.
    Remove { name: String },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// The newest deliveries.
    List {
        /// Only dead deliveries and those being retried.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value = "50")]
        limit: usize,
    },
    /// Put a delivery back in the queue now (a running server sends it within a second).
    Retry { id: i64 },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an access key and print its id and secret.
    Create { name: String },
    /// List access keys (secrets are not shown).
    List,
    /// Delete a key by numeric id or access key id.
    Delete { id: String },
}

#[derive(clap::Args)]
struct LinkCreateArgs {
    bucket: String,
    /// Key prefix the uploads go under.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Largest file (e.g. 100MiB).
    #[arg(long, default_value = "100MiB", value_parser = postgate::units::parse_size)]
    max_size: u64,
    /// How long the link works (e.g. 7d).
    #[arg(long, default_value = "7d", value_parser = postgate::units::parse_duration)]
    expires: std::time::Duration,
    /// How many files the link accepts.
    #[arg(long)]
    max_files: Option<u64>,
    /// Types the files may have, comma-separated: `image/` (or `image/*`) takes the family,
    /// `image/png` exactly that type.
    #[arg(long)]
    content_type: Option<String>,
    /// Refuse files whose bytes do not match their declared type (an HTML page sent as
    /// `image/png`, an executable as `application/pdf`), before anything is stored.
    #[arg(long)]
    verify_type: bool,
    /// Key that signs the link's uploads (default: the bucket's owner).
    #[arg(long)]
    access_key: Option<String>,
    /// Files uploaded through the link expire this long after their upload (e.g. 30d).
    #[arg(long, value_parser = postgate::units::parse_duration)]
    expire_objects_after: Option<std::time::Duration>,
    /// The most bytes all the link's files may take together (e.g. 1GiB).
    #[arg(long, value_parser = postgate::units::parse_size)]
    max_total_size: Option<u64>,
    /// Base URL of the server (default: --public-url, else http://ADDR).
    #[arg(long)]
    url: Option<String>,
    /// Webhook target (declared with `webhook add` or in the config file) told of every upload.
    #[arg(long)]
    webhook: Option<String>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum LinkCommand {
    /// Create a link anyone can use to upload into BUCKET; prints its URL.
    Create(Box<LinkCreateArgs>),
    /// List links.
    List,
    /// Revoke a link by token or id.
    Revoke { token: String },
}

#[derive(Subcommand)]
enum BucketCommand {
    /// Create a bucket owned by KEY (default: the admin key).
    Create {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        /// Canned ACL: private, public-read or public-read-write.
        #[arg(long, default_value = "private")]
        acl: String,
        /// Let browsers run what the bucket serves (HTML, SVG, scripts): no sandbox CSP. Only
        /// for buckets whose objects are served from an origin of their own.
        #[arg(long)]
        active_content: bool,
    },
    /// Change an existing bucket's settings.
    Set {
        name: String,
        /// Let browsers run what the bucket serves (`on`), or sandbox it (`off`, the default).
        #[arg(long, value_parser = ["on", "off"])]
        active_content: String,
    },
    /// Refuse uploads to BUCKET (PUT, POST, multipart, copies) whose bytes do not match their
    /// declared Content-Type (`on`), or only record the detected type (`off`, the default).
    VerifyType {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// List buckets with their owner and ACL.
    List,
    /// Set, show or clear BUCKET's quota: uploads that would pass it are refused.
    Quota {
        bucket: String,
        /// The most bytes the bucket's objects (and unfinished uploads) may take (e.g. 10GiB).
        #[arg(long, value_parser = postgate::units::parse_size)]
        max_size: Option<u64>,
        /// The most objects the bucket may hold.
        #[arg(long)]
        max_objects: Option<u64>,
        /// Remove the quota.
        #[arg(long, conflicts_with_all = ["max_size", "max_objects"])]
        clear: bool,
    },
    /// Let KEY read, write or read and write BUCKET.
    Allow {
        bucket: String,
        key: String,
        #[arg(value_parser = ["read", "write", "readwrite"])]
        perm: String,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&cli.common, &args),
        Command::Key(cmd) => with_db(&cli.common, |conn| {
            key_command(conn, control_db(&cli.common)?.as_deref(), cmd)
        }),
        Command::Bucket(cmd) => with_db(&cli.common, |conn| {
            bucket_command(conn, control_db(&cli.common)?.as_deref(), cmd)
        }),
        Command::PresignPost(args) => presign_post(&cli.common, *args),
        Command::Link(cmd) => link_command(&cli.common, cmd),
        Command::Webhook(cmd) => webhook_command(&cli.common, cmd),
        Command::Events(cmd) => with_db(&cli.common, |conn| {
            events_command(conn, control_db(&cli.common)?.as_deref(), cmd)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postgate: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn serve(common: &CommonArgs, args: &ServeArgs) -> CliResult {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTGATE_LOG")
        .unwrap_or_else(|_| "postgate=info".into());
    // Lines go to stdout from a thread of their own (the access log writes one per request);
    // none is dropped (`lossy(false)`): past 128k queued lines, logging waits. That thread
    // writes all the lines queued at once through a buffer and flushes when the queue is empty,
    // so a busy server makes one write(2) per batch of lines, not per line. The guard flushes
    // what is queued when `serve` returns.
    let (writer, _flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("postgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    // `POSTGATE_LOG_FORMAT=json`: one JSON object per line (fields flattened), for log shippers.
    match std::env::var("POSTGATE_LOG_FORMAT").as_deref() {
        Ok("json") => {
            // The access log's lines skip tracing's formatter (`telemetry::access_json`).
            postgate::telemetry::access_json::install(writer.clone());
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(writer)
                .with_env_filter(filter)
                .init()
        }
        Ok("text") | Err(_) => {
            // Colours for a terminal only, not for a file or journald.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            if !ansi {
                // The access log's lines skip tracing's formatter here too (same text).
                postgate::telemetry::access_json::install_text(writer.clone());
            }
            tracing_subscriber::fmt()
                .with_ansi(ansi)
                .with_writer(writer)
                .with_env_filter(filter)
                .init()
        }
        Ok(other) => {
            return Err(
                format!("POSTGATE_LOG_FORMAT: expected text or json, got {other:?}").into(),
            );
        }
    }
    let config = Config::resolve(common, args)?;
    // Every connection, every open upload and every part of a multipart object being read holds a
    // file descriptor; the usual soft limit of 1024 is far below what a busy server needs.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    // The blocking pool runs file I/O, hashing and SQLite reads. Its threads each cost about
    // 1 MiB once they have run (stack and allocator heap), and tokio starts one for every job
    // that finds none idle (up to 512): many slow uploads handing over small batches at once
    // grew it to a hundred threads, most of the memory they cost. Jobs beyond the cap queue.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .on_thread_park(collect_on_park)
        .build()?;
    runtime.block_on(async move {
        let addr = config.addr;
        let has_public_url = config.public_url.is_some();
        let (state, generated) = postgate::AppState::open(config).await?;
        if let Some(key) = generated {
            // Printed once, like MinIO's root credentials; never logged.
            println!("postgate: generated the admin key (shown only now):");
            println!("  access key: {}", key.access_key);
            println!("  secret key: {}", key.secret_key);
        }
        let listener = postgate::http::listen(addr)?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "postgate listening");
        if !bound.ip().is_loopback() && !has_public_url {
            // Upload pages, redirects and `Location`s then name http://ADDR (never the client's
            // Host), which clients elsewhere may not reach as such.
            tracing::warn!(
                addr = %bound,
                "listening on a non-loopback address without --public-url: URLs postgate builds \
                 use http://{bound}; set --public-url to the address clients use"
            );
        }
        postgate::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("postgate stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Runs `f` against the shared control database at `url` (`--control-db`), for the `link`,
/// `key`, `bucket` and `webhook` commands: a runtime of their own, since the CLI is synchronous.
fn control<T, F, Fut>(url: &str, f: F) -> Result<T, Box<dyn std::error::Error>>
where
    F: FnOnce(postgate::control::Pg) -> Fut,
    Fut: std::future::Future<Output = Result<T, db::DbError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(async {
        let pg = postgate::control::Pg::connect(url, "cli").await?;
        f(pg).await
    })?)
}

/// `--control-db` (flag, environment or file), for the commands that write shared state there.
fn control_db(common: &CommonArgs) -> Result<Option<String>, Box<dyn std::error::Error>> {
    Ok(Config::resolve(common, &ServeArgs::default())?.control_db)
}

fn with_db(common: &CommonArgs, f: impl FnOnce(&rusqlite::Connection) -> CliResult) -> CliResult {
    let config = Config::resolve(common, &ServeArgs::default())?;
    postgate::storage::private_dir(&config.data_dir)?;
    let conn = db::open_migrated(&config.db_path())?;
    f(&conn)
}

fn presign_post(common: &CommonArgs, args: PresignPostArgs) -> CliResult {
    use postgate::policy::{ContentTypeRule, KeySpec, PostPolicyRequest, SigVersion};
    let config = Config::resolve(common, &args.serve)?;
    let conn = db::open_migrated(&config.db_path())?;
    let key = match &args.access_key {
        Some(ak) => db::keys::find(&conn, ak)?.ok_or_else(|| format!("no access key {ak}"))?,
        None => db::keys::find_admin(&conn)?
            .ok_or("no admin key yet: start the server once or pass --access-key")?,
    };
    let base = args
        .url
        .clone()
        .or(config.public_url.clone())
        .unwrap_or_else(|| config.listen_url());
    let content_type = args.content_type.as_deref().map(|ct| {
        if ct.contains(',') {
            ContentTypeRule::OneOf(ct.split(',').map(|s| s.trim().to_owned()).collect())
        } else if ct.ends_with('/') {
            ContentTypeRule::Prefix(ct.to_owned())
        } else {
            ContentTypeRule::Exact(ct.to_owned())
        }
    });
    let req = PostPolicyRequest {
        bucket: args.bucket.clone(),
        key: match (&args.key, &args.prefix) {
            (Some(k), _) => KeySpec::Exact(k.clone()),
            (None, p) => KeySpec::Prefix(p.clone().unwrap_or_default()),
        },
        expires_in: args.expires,
        min_size: args.min_size,
        max_size: args.max_size,
        content_type,
        metadata: args.meta.clone(),
        success_action_status: args.success_action_status,
        success_action_redirect: args.redirect.clone(),
        acl: args.acl.clone(),
        sig: if args.sig == "v2" {
            SigVersion::V2
        } else {
            SigVersion::V4
        },
        verify_type: args.verify_type,
    };
    let url = format!("{}/{}", base.trim_end_matches('/'), args.bucket);
    let post = postgate::policy::issue(
        &req,
        &key.access_key,
        &key.secret_key,
        &config.region,
        &url,
        time::OffsetDateTime::now_utc(),
    )?;
    println!("{}", serde_json::to_string_pretty(&post)?);
    Ok(())
}

fn link_command(common: &CommonArgs, cmd: LinkCommand) -> CliResult {
    match cmd {
        LinkCommand::Create(args) => {
            let LinkCreateArgs {
                bucket,
                prefix,
                max_size,
                expires,
                max_files,
                content_type,
                verify_type,
                access_key,
                expire_objects_after,
                max_total_size,
                url,
                webhook,
                serve,
            } = *args;
            let config = Config::resolve(common, &serve)?;
            let conn = db::open_migrated(&config.db_path())?;
            let record =
                db::buckets::get(&conn, &bucket)?.ok_or_else(|| format!("no bucket {bucket}"))?;
            let signer = match access_key {
                Some(ak) => {
                    db::keys::find(&conn, &ak)?.ok_or_else(|| format!("no access key {ak}"))?
                }
                None => db::keys::find(&conn, &record.owner)?
                    .ok_or("the bucket's owner key no longer exists: pass --access-key")?,
            };
            if max_size > postgate::policy::MAX_POST_OBJECT_SIZE {
                return Err("--max-size is above the 5 GiB POST limit".into());
            }
            let mut link = postgate::links::new_link(
                &bucket,
                &prefix,
                max_size,
                content_type,
                max_files,
                expires,
                &signer.access_key,
            );
            link.verify_type = verify_type;
            link.expire_objects_after = expire_objects_after.map(|d| d.as_millis() as i64);
            link.max_total_size = max_total_size;
            if let Some(name) = &webhook {
                let declared = config.webhooks.iter().any(|w| &w.name == name)
                    || db::events::webhooks(&conn)?.iter().any(|w| &w.name == name);
                if !declared {
                    return Err(
                        format!("no webhook target {name}: add it with `webhook add`").into(),
                    );
                }
            }
            match &config.control_db {
                // Shared first, then this node's copy (the nodes' SQLite joins need the row).
                Some(url) => {
                    let (shared, hook) = (link.clone(), webhook.clone());
                    control(url, |pg| async move {
                        pg.insert(&shared, hook.as_deref()).await
                    })?;
                    db::links::mirror(&conn, &link)?;
                }
                None => db::links::insert(&conn, &link)?,
            }
            if let Some(name) = &webhook {
                db::events::set_link_webhook(&conn, &link.id, name)?;
            }
            let base = url
                .or(config.public_url.clone())
                .unwrap_or_else(|| config.listen_url());
            println!("{}/-/u/{}", base.trim_end_matches('/'), link.token);
        }
        LinkCommand::List => with_db(common, |conn| {
            let links = match &common.control_db {
                Some(url) => control(url, |pg| async move { pg.list().await })?,
                None => db::links::list(conn)?,
            };
            println!(
                "{:<18} {:<24} {:<10} {:<8} {:<10} EXPIRES",
                "ID", "BUCKET/PREFIX", "MAX SIZE", "FILES", "STATE"
            );
            for l in links {
                let state = l.unusable().map_or("active", |_| "inactive");
                let files = match l.max_files {
                    Some(m) => format!("{}/{m}", l.uploaded_files),
                    None => l.uploaded_files.to_string(),
                };
                println!(
                    "{:<18} {:<24} {:<10} {:<8} {:<10} {}",
                    l.id,
                    format!("{}/{}", l.bucket, l.prefix),
                    postgate::links::human_size(l.max_size),
                    files,
                    if l.revoked { "revoked" } else { state },
                    postgate::s3::http_date(l.expires_at)
                );
            }
            Ok(())
        })?,
        LinkCommand::Revoke { token } => {
            // The link's unfinished uploads are aborted with it (one transaction), then their
            // part files removed; a part still arriving at a running server finds no upload.
            let config = Config::resolve(common, &ServeArgs::default())?;
            let conn = db::open_migrated(&config.db_path())?;
            // With a shared control database, revoked there (for every node), then in this
            // node's copy, which may not have it.
            let token = match &config.control_db {
                Some(url) => {
                    let t = token.clone();
                    control(url, |pg| async move { pg.revoke(&t).await })?
                        .ok_or(format!("no link {token}"))?
                }
                None => token,
            };
            let tx = conn.unchecked_transaction()?;
            let blobs = match db::links::revoke(&tx, &token)? {
                Some(blobs) => blobs,
                None if config.control_db.is_some() => Vec::new(),
                None => return Err(format!("no link {token}").into()),
            };
            tx.commit()?;
            let store = postgate::storage::FsStore::open(&config.data_dir)?;
            for blob in &blobs {
                let _ = std::fs::remove_file(store.path_of(blob));
            }
            println!("revoked");
        }
    }
    Ok(())
}

/// With `--control-db`, targets live in the shared database (every node copies them); else in
/// this node's SQLite.
fn webhook_command(common: &CommonArgs, cmd: WebhookCommand) -> CliResult {
    let config = Config::resolve(common, &ServeArgs::default())?;
    let conn = db::open_migrated(&config.db_path())?;
    let shared = config.control_db.as_deref();
    match cmd {
        WebhookCommand::Add {
            name,
            url,
            secret,
            batch,
        } => {
            if !postgate::events::rules::valid_target_name(&name) {
                return Err("the name must be 1-64 of A-Z a-z 0-9 - _".into());
            }
            let parsed = url::Url::parse(&url).map_err(|e| format!("--url: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("--url must be http:// or https://".into());
            }
            if secret.is_empty() {
                return Err("--secret must not be empty".into());
            }
            if !(1..=postgate::config::MAX_WEBHOOK_BATCH).contains(&batch) {
                return Err(
                    format!("--batch must be 1-{}", postgate::config::MAX_WEBHOOK_BATCH).into(),
                );
            }
            let target = db::events::WebhookRecord {
                name: name.clone(),
                url,
                secret,
                batch,
            };
            match shared {
                Some(db_url) => control(db_url, |pg| async move { pg.put_webhook(&target).await })?,
                None => db::events::put_webhook(&conn, &target)?,
            }
            println!("{}", postgate::events::rules::arn_of(&name));
        }
        WebhookCommand::List => {
            println!("{:<24} {:<44} {:<5} URL", "NAME", "ARN", "BATCH");
            let stored = match shared {
                Some(url) => control(url, |pg| async move { pg.shared_config().await })?.webhooks,
                None => db::events::webhooks(&conn)?,
            };
            let all = stored.iter().map(|w| (&w.name, &w.url, w.batch, "")).chain(
                config
                    .webhooks
                    .iter()
                    .map(|w| (&w.name, &w.url, w.batch, " (config file)")),
            );
            for (name, url, batch, from) in all {
                let arn = postgate::events::rules::arn_of(name);
                println!("{name:<24} {arn:<44} {batch:<5} {url}{from}");
            }
        }
        WebhookCommand::Remove { name } => {
            let removed = match shared {
                Some(url) => {
                    let n = name.clone();
                    control(url, |pg| async move { pg.remove_webhook(&n).await })?
                }
                None => db::events::remove_webhook(&conn, &name)?,
            };
            if !removed {
                return Err(format!("no webhook target {name}").into());
            }
            println!("removed webhook target {name}");
        }
    }
    Ok(())
}

/// With `--control-db`, the shared outbox (every node's events); else this node's SQLite.
fn events_command(
    conn: &rusqlite::Connection,
    shared: Option<&str>,
    cmd: EventsCommand,
) -> CliResult {
    match cmd {
        EventsCommand::List { failed, limit } => {
            println!(
                "{:<8} {:<40} {:<16} {:<10} {:<8} OBJECT / LAST ERROR",
                "ID", "EVENT", "TARGET", "STATE", "TRIES"
            );
            let list = match shared {
                Some(url) => control(url, |pg| async move { pg.list_events(failed, limit).await })?,
                None => db::events::list(conn, failed, limit)?,
            };
            for d in list {
                println!(
                    "{:<8} {:<40} {:<16} {:<10} {:<8} {}/{}{}",
                    d.id,
                    d.event_name,
                    d.target,
                    d.state,
                    d.attempts,
                    d.bucket,
                    d.key,
                    d.last_error.map(|e| format!(" ({e})")).unwrap_or_default()
                );
            }
        }
        EventsCommand::Retry { id } => {
            let queued = match shared {
                Some(url) => control(url, |pg| async move { pg.retry_event(id).await })?,
                None => db::events::retry(conn, id)?,
            };
            if !queued {
                return Err(format!("no event delivery {id}").into());
            }
            println!("delivery {id} queued again");
        }
    }
    Ok(())
}

/// With `--control-db`, keys live in the shared database (every node sees them); else in this
/// node's SQLite.
fn key_command(conn: &rusqlite::Connection, shared: Option<&str>, cmd: KeyCommand) -> CliResult {
    match cmd {
        KeyCommand::Create { name } => {
            let (access, secret) = db::keys::generate();
            let key = match shared {
                Some(url) => control(url, |pg| async move {
                    pg.insert_key(&name, &access, &secret).await
                })?,
                None => db::keys::insert(conn, &name, &access, &secret, false)?,
            };
            println!("id:         {}", key.id);
            println!("access key: {}", key.access_key);
            println!("secret key: {}", key.secret_key);
        }
        KeyCommand::List => {
            let keys = match shared {
                Some(url) => control(url, |pg| async move { pg.list_keys().await })?,
                None => db::keys::list(conn)?,
            };
            println!("{:<6} {:<22} {:<6} NAME", "ID", "ACCESS KEY", "ADMIN");
            for k in keys {
                let admin = if k.is_admin { "yes" } else { "no" };
                println!("{:<6} {:<22} {:<6} {}", k.id, k.access_key, admin, k.name);
            }
        }
        KeyCommand::Delete { id } => {
            let deleted = match shared {
                Some(url) => {
                    let i = id.clone();
                    control(url, |pg| async move { pg.delete_key(&i).await })?
                }
                None => db::keys::delete(conn, &id)?,
            };
            if !deleted {
                return Err(format!("no key {id}").into());
            }
            println!("deleted key {id}");
        }
    }
    Ok(())
}

fn bucket_command(
    conn: &rusqlite::Connection,
    shared: Option<&str>,
    cmd: BucketCommand,
) -> CliResult {
    match cmd {
        BucketCommand::Create {
            name,
            owner,
            acl,
            active_content,
        } => {
            postgate::names::validate_bucket(&name).map_err(|e| e.to_string())?;
            if !matches!(
                acl.as_str(),
                "private" | "public-read" | "public-read-write"
            ) {
                return Err(format!("unknown ACL {acl}").into());
            }
            let owner = match owner {
                Some(o) => {
                    let local = db::keys::find(conn, &o)?;
                    let key = match (local, shared) {
                        (None, Some(url)) => {
                            let o = o.clone();
                            control(url, |pg| async move { pg.find_key(&o).await })?
                        }
                        (local, _) => local,
                    };
                    key.ok_or_else(|| format!("no access key {o}"))?.access_key
                }
                None => {
                    db::keys::find_admin(conn)?
                        .ok_or("no admin key yet: start the server once or pass --owner")?
                        .access_key
                }
            };
            let created = match shared {
                Some(url) => {
                    let n = name.clone();
                    control(
                        url,
                        |pg| async move { pg.create_bucket(&n, &owner, &acl).await },
                    )?
                }
                None => db::buckets::create(conn, &name, &owner, &acl)?,
            };
            match created {
                db::buckets::Created::Created => println!("created bucket {name}"),
                _ => return Err(format!("bucket {name} already exists").into()),
            }
            if active_content {
                set_bucket(conn, shared, &name, Setting::ActiveContent(true))?;
                println!("{name} serves active content (no sandbox)");
            }
        }
        BucketCommand::Set {
            name,
            active_content,
        } => {
            let on = active_content == "on";
            if !set_bucket(conn, shared, &name, Setting::ActiveContent(on))? {
                return Err(format!("no bucket {name}").into());
            }
            match on {
                true => println!("{name} serves active content (no sandbox)"),
                false => println!("{name} serves active content sandboxed"),
            }
        }
        BucketCommand::VerifyType { name, state } => {
            let on = state == "on";
            if !set_bucket(conn, shared, &name, Setting::VerifyType(on))? {
                return Err(format!("no bucket {name}").into());
            }
            match on {
                true => println!("{name} refuses uploads whose bytes do not match their type"),
                false => println!("{name} records uploads' detected types without refusing"),
            }
        }
        BucketCommand::List => {
            println!("{:<40} {:<22} {:<18} ACTIVE", "NAME", "OWNER", "ACL");
            let list = match shared {
                Some(url) => control(url, |pg| async move { pg.shared_config().await })?.buckets,
                None => db::buckets::list(conn)?,
            };
            for b in list {
                let active = if b.active_content { "on" } else { "off" };
                println!("{:<40} {:<22} {:<18} {active}", b.name, b.owner, b.acl);
            }
        }
        BucketCommand::Quota {
            bucket,
            max_size,
            max_objects,
            clear,
        } => bucket_quota(conn, shared, &bucket, max_size, max_objects, clear)?,
        BucketCommand::Allow { bucket, key, perm } => {
            let perm = Perm::parse(&perm).ok_or("perm must be read, write or readwrite")?;
            match shared {
                // Shared: the bucket and the key must be shared ones.
                Some(url) => {
                    let (b, k) = (bucket.clone(), key.clone());
                    control(url, |pg| async move {
                        if pg.bucket(&b).await?.is_none() {
                            return Ok(Err(format!("no bucket {b}")));
                        }
                        if pg.find_key(&k).await?.is_none() {
                            return Ok(Err(format!("no shared access key {k}")));
                        }
                        pg.allow(&b, &k, perm).await.map(Ok)
                    })??;
                }
                None => {
                    if db::keys::find(conn, &key)?.is_none() {
                        return Err(format!("no access key {key}").into());
                    }
                    if !db::buckets::allow(conn, &bucket, &key, perm)? {
                        return Err(format!("no bucket {bucket}").into());
                    }
                }
            }
            println!("{key} may now {} {bucket}", perm.as_str());
        }
    }
    Ok(())
}

/// Changes one setting of bucket `name`: in the shared control database with `--control-db`
/// (every node copies it within seconds), else in this SQLite. `false`: no such bucket.
fn set_bucket(
    conn: &rusqlite::Connection,
    shared: Option<&str>,
    name: &str,
    setting: Setting,
) -> Result<bool, Box<dyn std::error::Error>> {
    match shared {
        Some(url) => control(url, |pg| async move { pg.set_bucket(name, &setting).await }),
        None => Ok(db::buckets::set(conn, name, &setting)?),
    }
}

/// `postgate bucket quota`: sets the limits given (keeping the other), clears them, or shows the
/// quota and what the bucket uses. A running server applies a change within seconds (its bucket
/// cache), and at once to every commit.
fn bucket_quota(
    conn: &rusqlite::Connection,
    shared: Option<&str>,
    bucket: &str,
    max_size: Option<u64>,
    max_objects: Option<u64>,
    clear: bool,
) -> CliResult {
    let record = match shared {
        Some(url) => {
            let b = bucket.to_owned();
            control(url, |pg| async move { pg.bucket(&b).await })?
        }
        None => db::buckets::get(conn, bucket)?,
    };
    let record = record.ok_or_else(|| format!("no bucket {bucket}"))?;
    let limit = |n: Option<u64>, human: fn(u64) -> String| n.map_or("none".to_owned(), human);
    if clear || max_size.is_some() || max_objects.is_some() {
        let quota = match clear {
            true => db::quota::Quota::default(),
            false => db::quota::Quota {
                max_size: max_size.or(record.quota.max_size),
                max_objects: max_objects.or(record.quota.max_objects),
            },
        };
        set_bucket(conn, shared, bucket, Setting::Quota(quota))?;
        println!(
            "{bucket}: max size {}, max objects {}",
            limit(quota.max_size, postgate::links::human_size),
            limit(quota.max_objects, |n| n.to_string())
        );
        return Ok(());
    }
    let used = db::quota::usage(conn, bucket, None)?;
    println!(
        "max size:    {}",
        limit(record.quota.max_size, postgate::links::human_size)
    );
    println!(
        "max objects: {}",
        limit(record.quota.max_objects, |n| n.to_string())
    );
    println!(
        "used:        {} in {} objects, {} in unfinished uploads, {} reserved",
        postgate::links::human_size(used.bytes),
        used.objects,
        postgate::links::human_size(used.part_bytes),
        postgate::links::human_size(used.reserved_bytes)
    );
    Ok(())
}
