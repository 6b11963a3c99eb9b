//! The state every request shares: the configuration, the database, the blob store, and the
//! short-lived caches of access keys and bucket rows in front of them. It imports no handler: the
//! areas (`s3`, `links`, `api`) take it as their axum state, and `http` builds the router over it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::db::buckets::{BucketRecord, Perm};
use crate::db::keys::KeyRecord;
use crate::db::objects::ObjectRecord;
use crate::db::{self, Db, DbError};
use crate::storage::Storage;

/// How long a looked-up access key or bucket row is trusted before it is read again, so that keys
/// the operator deletes with the CLI while the server runs stop working promptly.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Runs `copy` every `CACHE_TTL` and whenever `changed` is notified, for ever: how a node keeps
/// its copy of shared state current, the notification making it prompt and the period bounding
/// it when a notification is lost.
async fn copy_on_change<F, Fut>(changed: &tokio::sync::Notify, mut copy: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(CACHE_TTL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
        }
        copy().await;
    }
}

/// How far apart the nodes' clocks may be for [`AppState::know_link`] to hold (NTP keeps them
/// far closer).
const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// The principal of the lifecycle sweeper's events (S3 names its own service).
const LIFECYCLE_PRINCIPAL: &str = "postgate:lifecycle";

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

/// What every request shares, behind one `Arc`: axum clones the state for each extractor, layer
/// and spawned task, and a clone is then one reference count, not one per field (with the
/// store's paths copied on top).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    /// The storage backend (bytes and object catalog), through which the core reaches objects.
    pub store: Storage,
    /// Where upload links and their counters live: this SQLite, or PostgreSQL shared by several
    /// nodes (`--control-db`).
    pub links: crate::control::Links,
    /// Where multipart uploads in progress and their parts live: this SQLite, or the same
    /// PostgreSQL as the links, so that an upload begun on one node continues on another.
    pub uploads: crate::control::Uploads,
    /// The `/-/metrics` registry, one per server.
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// Who wants which object event (webhooks), and the delivery worker's wake-up.
    pub events: crate::events::Notifier,
    keys: Arc<RwLock<KeyCache>>,
    buckets: Arc<BucketCache>,
    /// One [`AppState::refresh_config`] at a time: an older read never replaces a newer copy.
    /// Holds when the last read that was copied began (ms since the epoch).
    config_copy: Arc<tokio::sync::Mutex<i64>>,
    /// POST policies decoded earlier, by their base64 text (`s3::post_object` fills and reads
    /// it, only after a form's signature verified against the key as it is now). One per
    /// server: two servers in one process (the tests) share nothing.
    pub post_policies: Arc<PolicyCache>,
}

/// A POST policy's base64 text → the policy it decodes to.
pub type PolicyCache = std::sync::Mutex<HashMap<Box<str>, Arc<crate::policy::Policy>>>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// The S3 backend's settings cannot make a client (a bad endpoint or bucket name).
    #[error("--backend s3: {0}")]
    Backend(String),
    /// `--control-db` without `--backend s3`, or the control database cannot be reached.
    #[error("--control-db: {0}")]
    Control(String),
}

/// The S3 backend (`--backend s3`, experimental): a client of the configured bucket, spooling
/// the parts of large uploads in `data/tmp`, where a killed server's spool files are removed
/// now (its backend multipart uploads are swept by `AppState::sweep_backend_uploads`).
fn open_s3(
    dir: &std::path::Path,
    settings: &crate::config::S3Backend,
) -> Result<Storage, StartError> {
    let spool = dir.join("tmp");
    std::fs::create_dir_all(&spool)
        .map_err(|e| StartError::DataDir(spool.display().to_string(), e))?;
    if let Ok(entries) = std::fs::read_dir(&spool) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("postgate-s3-")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let options = crate::storage::s3::Options {
        spool_dir: spool,
        ..crate::storage::s3::Options::default()
    };
    let backend = crate::storage::s3::Backend::new(
        &settings.endpoint,
        &settings.bucket,
        &settings.region,
        &settings.access_key_id,
        &settings.secret_access_key,
        options,
    )
    .map_err(|e| StartError::Backend(e.to_string()))?;
    tracing::warn!(
        endpoint = %settings.endpoint,
        bucket = %settings.bucket,
        "--backend s3 is experimental (docs/cluster.md section 9)"
    );
    Ok(Storage::S3(backend))
}

/// Where links live: `--control-db`'s PostgreSQL (only over `--backend s3`: with the local
/// store, objects are on one machine, so a second node could not serve them), else this SQLite.
async fn open_links(
    config: &Config,
    db: &Db,
    store: &Storage,
) -> Result<crate::control::Links, StartError> {
    let Some(url) = &config.control_db else {
        return Ok(crate::control::Links::Local(db.clone()));
    };
    if store.backend().is_none() {
        return Err(StartError::Control(
            "a shared control database needs --backend s3: with the local store, objects live \
             on this machine only, so other nodes could not serve them"
                .into(),
        ));
    }
    let node = match &config.node_id {
        Some(id) => id.clone(),
        None => node_id(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?,
    };
    let pg = crate::control::Pg::connect(url, &node)
        .await
        .map_err(|e| StartError::Control(e.to_string()))?;
    // Heard from before it serves: no other node's sweeper may take a slot it is about to take.
    pg.heartbeat()
        .await
        .map_err(|e| StartError::Control(e.to_string()))?;
    tracing::info!(node = %node, "links and their counters are shared through the control database");
    Ok(crate::control::Links::Shared { pg, db: db.clone() })
}

/// This node's id for the slots it takes in the control database: generated once and kept in
/// the data directory's `node-id`, so a restarted node finds (and settles) its own slots.
fn node_id(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => {
            let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

/// The marker of a data directory whose buckets and webhook targets were seeded into the
/// shared control database ([`seed_config`]).
const SEEDED: &str = "control-config-seeded";

/// The first time a node starts with a shared control database: its SQLite's buckets (with
/// their settings and notification configurations) and webhook targets that PostgreSQL does
/// not have go there. Once only (the `SEEDED` file): a bucket deleted on another node later is
/// not brought back by this node's restart.
async fn seed_config(
    pg: &crate::control::Pg,
    db: &Db,
    dir: &std::path::Path,
) -> Result<(), StartError> {
    let marker = dir.join(SEEDED);
    if marker.exists() {
        return Ok(());
    }
    let local = db.read(db::buckets::local_config).await?;
    let added = pg.seed_config(&local).await?;
    if !added.is_empty() {
        tracing::info!(buckets = ?added, "shared this node's buckets through the control database");
    }
    std::fs::write(&marker, b"").map_err(|e| StartError::DataDir(marker.display().to_string(), e))
}

/// docs/cluster.md section 4's settle of form slots whose node is gone: at start, those this
/// node left when it was killed; while serving, those of nodes whose heartbeat expired
/// ([`AppState::watch_nodes`]). Returns how many were given back.
async fn settle_shared_slots(
    pg: &crate::control::Pg,
    store: &Storage,
    events: &crate::events::Notifier,
    which: crate::control::Slots,
) -> Result<usize, DbError> {
    let (_, released) = pg
        .settle_slots(which, |slot| slot_stored(store, events, slot))
        .await?;
    Ok(released)
}

/// Whether a slot's file was stored: its key is looked up in the backend (HEAD); a file
/// stored there for the slot's link since the slot was taken keeps the slot, with its event
/// (its node stopped before writing it: `Origin::late_created`), anything else gives it back.
/// `None`: the backend cannot answer now, and the slot stays taken (never more than max_files)
/// until a later settle.
async fn slot_stored(
    store: &Storage,
    events: &crate::events::Notifier,
    slot: crate::control::OpenSlot,
) -> Option<(bool, Vec<crate::control::pg::NewEvent>)> {
    let head = match store.head(&slot.bucket, &slot.key).await {
        Ok(head) => head,
        Err(e) => {
            tracing::warn!(error = %e, slot = %slot.id, "cannot settle a link slot now");
            return None;
        }
    };
    // The backend's Last-Modified has second precision.
    let stored = head.filter(|o| {
        o.meta.last_modified >= slot.taken_at - 1000
            && o.meta
                .meta
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("upload-link") && *v == slot.link_id)
    });
    Some(match stored {
        Some(o) => {
            let event = events
                .origin(crate::events::Kind::Post, &slot.access_key)
                .with_link(Some(slot.link_id.clone()))
                .with_slot(Some(&slot.id))
                .late_created(&slot.bucket, &slot.key, &o.meta);
            (true, event)
        }
        None => (false, Vec::new()),
    })
}

impl AppState {
    /// This state with another configuration (the address really bound once a port 0 is
    /// resolved); everything else is shared with `self`.
    pub fn with_config(&self, config: Config) -> AppState {
        AppState(Arc::new(Shared {
            config: Arc::new(config),
            ..Shared::clone(self)
        }))
    }

    /// Opens the data directory: creates it, migrates the database, sweeps what a crash left
    /// behind and makes sure an admin key exists. Returns the state and, when a new admin key was
    /// generated, its secret (to be printed once).
    pub async fn open(config: Config) -> Result<(AppState, Option<KeyRecord>), StartError> {
        let dir = config.data_dir.clone();
        if crate::storage::private_dir(&dir)
            .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?
        {
            tracing::info!(dir = %dir.display(), "made the data directory private (mode 0700)");
        }
        let store = match &config.backend {
            crate::config::Backend::Fs => Storage::open_fs(&dir)
                .map_err(|e| StartError::DataDir(dir.display().to_string(), e))?,
            crate::config::Backend::S3(settings) => open_s3(&dir, settings)?,
        };
        let db = Db::open(&config.db_path())?;

        if store.backend().is_none() {
            let catalog = store.catalog();
            let referenced = db.read(move |c| catalog.referenced_blobs(c)).await?;
            let sweep_store = store.clone();
            match tokio::task::spawn_blocking(move || sweep_store.sweep(&referenced)).await {
                Ok(Ok((temps, orphans))) if temps + orphans > 0 => {
                    tracing::info!(temps, orphans, "swept leftovers of interrupted uploads")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "start-up sweep failed"),
                _ => {}
            }
        }

        // Form uploads a killed server left between taking their link's slot and storing (or
        // refusing) the file: the slot stays taken only if the file was stored.
        let links = open_links(&config, &db, &store).await?;
        let events = crate::events::Notifier::new(&config, links.shared().cloned());
        events.reload(&db).await?;
        let released = match links.shared() {
            None => db.write(db::links::settle_form_slots).await?,
            Some(pg) => {
                settle_shared_slots(pg, &store, &events, crate::control::Slots::Own).await?
            }
        };
        if released > 0 {
            tracing::info!(
                released,
                "gave back link slots of form uploads that never finished"
            );
        }

        // Quota reservations of uploads a killed server left: none of them is still running.
        let dropped = db.write(db::quota::clear_reservations).await?;
        if dropped > 0 {
            tracing::info!(
                dropped,
                "dropped the quota reservations of unfinished uploads"
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
        let metrics = Arc::new(crate::telemetry::Metrics::new(
            db.batch_sizes(),
            db.wal_restarts(),
        ));
        // Events committed before a crash and not yet delivered go out now.
        events.start(db.clone(), metrics.clone());
        let uploads = match links.shared() {
            Some(pg) => crate::control::Uploads::Shared(pg.clone()),
            None => crate::control::Uploads::Local(db.clone()),
        };
        let state = AppState(Arc::new(Shared {
            config: Arc::new(config),
            db,
            store,
            links,
            uploads,
            metrics,
            events,
            keys: Arc::new(RwLock::new(HashMap::new())),
            post_policies: Arc::default(),
            buckets: Arc::default(),
            config_copy: Arc::default(),
        }));
        if let Some(pg) = state.links.shared() {
            seed_config(pg, &state.db, &state.config.data_dir).await?;
            // Serves the shared buckets from its first request.
            state.refresh_config().await?;
        }
        state.expire_uploads().await;
        if state.on_s3_backend() {
            // In the background: start-up does not wait on the cluster.
            let sweeper = state.clone();
            tokio::spawn(async move { sweeper.sweep_backend_uploads().await });
        }
        Ok((state, generated))
    }

    /// The values `/-/metrics` reads at scrape time: open multipart uploads (where they live), free
    /// space in the data directory, and the WAL's size.
    pub async fn scrape(&self) -> crate::telemetry::Scrape {
        let open = self.uploads.count_open().await;
        if let Err(e) = &open {
            tracing::warn!(error = %e, "metrics: cannot count open multipart uploads");
        }
        let pending = self.events.pending(&self.db).await;
        crate::telemetry::Scrape {
            multipart_uploads_open: open.unwrap_or(0),
            events_pending: pending.unwrap_or(0),
            disk_free_bytes: crate::telemetry::free_bytes(&self.config.data_dir).unwrap_or(0),
            wal_bytes: std::fs::metadata(self.db.wal_path()).map_or(0, |m| m.len()),
        }
    }

    /// Whether objects live in an S3 cluster (`--backend s3`): the areas refuse what that
    /// backend does not do yet (501 NotImplemented) without reaching the storage seam.
    pub fn on_s3_backend(&self) -> bool {
        self.store.backend().is_some()
    }

    /// A durable write through the group-committing writer (`/-/ready`).
    pub async fn probe_write(&self) -> Result<(), DbError> {
        self.db.write(db::touch_ready_probe).await
    }

    /// Aborts multipart uploads older than the configured expiry.
    pub async fn expire_uploads(&self) {
        let expiry = self.config.multipart_expiry.as_millis() as i64;
        let cutoff = db::now_millis() - expiry;
        match crate::objects::multipart::expire(&self.db, &self.uploads, &self.store, cutoff).await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "aborted expired multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "multipart expiry failed"),
        }
    }

    /// Under the S3 backend, aborts the backend's multipart uploads no upload row names that
    /// began longer ago than `--multipart-expiry` (docs/cluster.md section 9, "Built so far").
    /// At start and with each lifecycle sweep.
    pub async fn sweep_backend_uploads(&self) {
        let older_than = self.config.multipart_expiry;
        match crate::objects::multipart::sweep_orphans(&self.uploads, &self.store, older_than).await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "aborted orphan backend multipart uploads"),
            Err(e) => tracing::warn!(error = %e, "sweep of orphan backend uploads failed"),
        }
    }

    /// With a shared control database, for as long as the server runs: renews this node's
    /// heartbeat every `--node-heartbeat`, then settles the form slots of nodes not heard from
    /// for `--node-expiry` (killed, or cut off), as a restarted node settles its own: a dead
    /// node's slots do not wait for its restart. Every node runs it; the row locks make each
    /// slot one node's to settle. Returns at once without a shared control database.
    pub async fn watch_nodes(&self) {
        let Some(pg) = self.links.shared() else {
            return;
        };
        let mut tick = tokio::time::interval(self.config.node_heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expiry = self.config.node_expiry;
        loop {
            tick.tick().await;
            if let Err(e) = pg.heartbeat().await {
                tracing::warn!(error = %e, "cannot renew this node's heartbeat");
                continue;
            }
            let which = crate::control::Slots::OfDeadNodes { expiry };
            match settle_shared_slots(pg, &self.store, &self.events, which).await {
                Ok(0) => {}
                Ok(released) => tracing::info!(
                    released,
                    "gave back link slots of uploads on nodes that stopped"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot settle the slots of stopped nodes"),
            }
        }
    }

    /// With a shared control database, for as long as the server runs: keeps this node's view
    /// of the shared access keys and grants current. Every change (a trigger's `NOTIFY`,
    /// [`crate::control::Pg::listen`]) drops the cached keys and copies the grants into
    /// this node's SQLite, where every bucket read joins them; and every `CACHE_TTL` the grants
    /// are copied again, as the cached keys expire, so a lost notification never leaves a
    /// revoked key or grant working longer than that. Returns at once without one.
    pub async fn watch_keys(&self) {
        let Some(pg) = self.links.shared() else {
            return;
        };
        let changed = Arc::new(tokio::sync::Notify::new());
        let listen = pg.listen(crate::control::pg::KEYS_CHANNEL, || {
            self.keys.write().unwrap_or_else(|e| e.into_inner()).clear();
            changed.notify_one();
        });
        let copy = copy_on_change(&changed, || async {
            if let Err(e) = self.copy_grants(pg).await {
                tracing::warn!(error = %e, "cannot copy the shared grants");
            }
        });
        tokio::join!(listen, copy);
    }

    /// With a shared control database, for as long as the server runs: keeps this node's copy
    /// of the shared buckets, their settings, notification configurations and webhook targets
    /// current ([`AppState::refresh_config`]) on every change (a trigger's `NOTIFY`) and every
    /// `CACHE_TTL`, the bound when a notification is lost. Returns at once without one.
    pub async fn watch_config(&self) {
        let Some(pg) = self.links.shared() else {
            return;
        };
        let changed = tokio::sync::Notify::new();
        let listen = async {
            match self.config.control_listen {
                true => {
                    pg.listen(crate::control::pg::CONFIG_CHANNEL, || changed.notify_one())
                        .await
                }
                false => std::future::pending().await,
            }
        };
        let copy = copy_on_change(&changed, || async {
            if let Err(e) = self.refresh_config().await {
                tracing::warn!(error = %e, "cannot copy the shared buckets and settings");
            }
        });
        tokio::join!(listen, copy);
    }

    /// With a shared control database: reads its buckets, settings, notification
    /// configurations and webhook targets, makes this node's SQLite copy the same
    /// (`db::buckets::replace_shared`, writing only what differs) and, when anything changed,
    /// copies the grants again (for the buckets this node now has), forgets the cached bucket
    /// rows and reloads the event rules. One at a time. Does nothing without one.
    pub async fn refresh_config(&self) -> Result<(), DbError> {
        self.refresh_config_after(None).await
    }

    /// [`AppState::refresh_config`], unless a read that began after `after` (ms since the
    /// epoch; `None`: always read) was copied meanwhile: a burst of requests waiting for one fresh copy reads it once.
    async fn refresh_config_after(&self, after: Option<i64>) -> Result<(), DbError> {
        let Some(pg) = self.links.shared() else {
            return Ok(());
        };
        let mut last = self.config_copy.lock().await;
        if after.is_some_and(|after| *last > after) {
            return Ok(());
        }
        let began = db::now_millis();
        let shared = pg.shared_config().await?;
        self.metrics.config_read();
        let changed = self
            .db
            .write(move |c| db::buckets::replace_shared(c, &shared))
            .await?;
        if changed {
            self.copy_grants(pg).await?;
            self.buckets_changed();
            self.events.reload(&self.db).await?;
        }
        *last = began;
        Ok(())
    }

    /// With a shared control database, a link made on another node a moment ago may not be in
    /// this node's copy of the configuration yet (its webhook comes with the link's
    /// notification, or at the periodic re-read, `CACHE_TTL`). A link younger than twice that
    /// whose webhook this node does not know has the configuration read once more, so its
    /// uploads through this node are announced to it; an older link's webhook is already here.
    /// A read begun after either of two moments has the link's webhook: the link's making
    /// (allowing `CLOCK_SKEW` between the nodes' clocks), or this request's read of the link's
    /// row from the control database (this node's clock alone). A read that began after the
    /// earlier of them serves: a burst of page loads on a link made a moment ago waits for one
    /// read, or two when it arrived during one, not one each.
    pub async fn know_link(&self, link: &db::links::LinkRecord) {
        let now = db::now_millis();
        let young = link.created_at > now - 2 * CACHE_TTL.as_millis() as i64;
        if !young || self.links.shared().is_none() || self.events.link_target(&link.id).is_some() {
            return;
        }
        let made = link.created_at + CLOCK_SKEW.as_millis() as i64;
        if let Err(e) = self.refresh_config_after(Some(made.min(now))).await {
            tracing::warn!(error = %e, link = %link.id, "cannot read the shared configuration");
        }
    }

    /// The event rules read again, with the webhook targets declared a moment ago (with a
    /// shared control database, from there).
    pub async fn reload_events(&self) -> Result<(), DbError> {
        self.refresh_config().await?;
        self.events.reload(&self.db).await
    }

    /// Creates bucket `name` owned by `owner`: in the shared control database when there is
    /// one (then this node's copy at once), else in this SQLite.
    pub async fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        acl: &str,
    ) -> Result<db::buckets::Created, DbError> {
        let Some(pg) = self.links.shared() else {
            let (name, owner, acl) = (name.to_owned(), owner.to_owned(), acl.to_owned());
            return self
                .write_bucket(move |c| db::buckets::create(c, &name, &owner, &acl))
                .await;
        };
        let created = pg.create_bucket(name, owner, acl).await?;
        self.refresh_config().await?;
        Ok(created)
    }

    /// Changes one setting of bucket `name` ([`db::buckets::set`]): in the shared control
    /// database when there is one (then this node's copy at once), else in this SQLite.
    /// `false`: no such bucket.
    pub async fn set_bucket(
        &self,
        name: &str,
        setting: db::buckets::Setting,
    ) -> Result<bool, DbError> {
        let Some(pg) = self.links.shared() else {
            let name = name.to_owned();
            return self
                .write_bucket(move |c| db::buckets::set(c, &name, &setting))
                .await;
        };
        let found = pg.set_bucket(name, &setting).await?;
        self.refresh_config().await?;
        Ok(found)
    }

    /// Sets (`Some`, JSON) or clears bucket `bucket`'s notification configuration, where
    /// [`AppState::create_bucket`] would write, and reloads the event rules.
    pub async fn set_notification(
        &self,
        bucket: &str,
        json: Option<String>,
    ) -> Result<(), DbError> {
        match self.links.shared() {
            None => {
                let bucket = bucket.to_owned();
                self.db
                    .write(move |c| db::events::set_notification(c, &bucket, json.as_deref()))
                    .await?;
            }
            Some(pg) => {
                pg.set_notification(bucket, json.as_deref()).await?;
                self.refresh_config().await?;
            }
        }
        self.events.reload(&self.db).await
    }

    /// Copies the shared grants into this node's SQLite (`db::buckets::replace_grants`).
    async fn copy_grants(&self, pg: &crate::control::Pg) -> Result<(), DbError> {
        let grants = pg.grants().await?;
        self.db
            .write(move |c| db::buckets::replace_grants(c, &grants))
            .await?;
        Ok(())
    }

    /// How often the lifecycle sweeper runs.
    pub fn lifecycle_interval(&self) -> std::time::Duration {
        crate::objects::lifecycle::interval(self.config.lifecycle_debug_day)
    }

    /// Who the lifecycle sweeper's deletions are announced as (`LifecycleExpiration:Delete`, by
    /// postgate itself, as S3 names its lifecycle service), with an id for the sweep as S3 gives
    /// its lifecycle events one (their `x-amz-request-id`; the sweep's log line names it).
    pub fn lifecycle_origin(&self) -> crate::events::Origin {
        self.events
            .origin(
                crate::events::Kind::LifecycleExpiration,
                LIFECYCLE_PRINCIPAL,
            )
            .with_request_id(crate::telemetry::new_request_id())
    }

    /// Applies lifecycle rules and objects' own expiry times once (`objects::lifecycle`).
    pub async fn sweep_lifecycle(&self) -> crate::objects::lifecycle::Swept {
        let day = self.config.lifecycle_debug_day;
        let origin = self.lifecycle_origin();
        match crate::objects::lifecycle::sweep(&self.db, &self.uploads, &self.store, day, &origin)
            .await
        {
            Ok(swept) => {
                if swept != Default::default() {
                    tracing::info!(
                        request_id = origin.request_id(),
                        objects = swept.objects,
                        uploads = swept.uploads,
                        "lifecycle: removed expired objects and aborted stale uploads"
                    );
                }
                swept
            }
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle sweep failed");
                Default::default()
            }
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
        let rec = match self.links.shared() {
            None => self.db.lookup(move |c| db::keys::find(c, &owned)).await?,
            // Shared keys, else this node's own admin key (configured per node, kept in its
            // SQLite); a key made here before `--control-db` was set no longer works.
            Some(pg) => match pg.find_key(access_key).await? {
                Some(key) => Some(key),
                None => self
                    .db
                    .lookup(move |c| db::keys::find(c, &owned))
                    .await?
                    .filter(|k| k.is_admin),
            },
        };
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
        if let Some(record) = self.cached_bucket(bucket, access_key) {
            return Ok(Some((record, None)));
        }
        let generation = self.bucket_generation();
        let (b, k) = (bucket.to_owned(), access_key.to_owned());
        let found = self
            .db
            .lookup(move |c| db::buckets::get_with_grant(c, &b, &k))
            .await?;
        if let Some((record, _)) = &found {
            self.remember_bucket(bucket, record, generation);
        }
        Ok(found)
    }

    /// [`AppState::bucket_with_grant`] and the current version of `key` in it (GET, HEAD), with
    /// an inline body when `with_body`; `None` for the object when the bucket does not exist.
    /// With the bucket's row cached (no grant can matter), only the object's row is read: every
    /// read of the database is a transaction of its own, whose locks cost about as much as the
    /// read (a 4 KiB GetObject spent a fifth of its CPU on the bucket's). Otherwise both rows
    /// in one read, the bucket's then cached.
    #[allow(clippy::type_complexity)]
    pub async fn bucket_and_head(
        &self,
        bucket: String,
        access_key: String,
        key: String,
        with_body: bool,
    ) -> Result<(Option<(BucketRecord, Option<Perm>)>, Option<ObjectRecord>), DbError> {
        let (db, store) = (&self.db, &self.store);
        if store.backend().is_none()
            && let Some(record) = self.cached_bucket(&bucket, &access_key)
        {
            let object = crate::objects::read::head(db, store, &bucket, &key, with_body).await?;
            return Ok((Some((record, None)), object));
        }
        let generation = self.bucket_generation();
        let read = crate::objects::read::bucket_and_head;
        let (found, object) = read(db, store, bucket.clone(), access_key, key, with_body).await?;
        if let Some((record, _)) = &found {
            self.remember_bucket(&bucket, record, generation);
        }
        Ok((found, object.flatten()))
    }

    /// Taken before a read of a bucket's row, for [`AppState::remember_bucket`].
    fn bucket_generation(&self) -> u64 {
        self.buckets.generation.load(Ordering::Acquire)
    }

    /// Puts a bucket's row read from the database in the cache, unless a write to buckets
    /// since `generation` (taken before the read) may have made it stale.
    fn remember_bucket(&self, bucket: &str, record: &BucketRecord, generation: u64) {
        let mut map = self.buckets.map.write().unwrap_or_else(|e| e.into_inner());
        if self.buckets.generation.load(Ordering::Acquire) == generation {
            if map.len() > 10_000 {
                map.clear();
            }
            map.insert(bucket.to_owned(), (record.clone(), Instant::now()));
        }
    }

    /// The bucket's row from the cache, when it holds it and no grant can matter to `access_key`
    /// (see [`AppState::bucket_with_grant`]); `None`: the database has to be asked.
    fn cached_bucket(&self, bucket: &str, access_key: &str) -> Option<BucketRecord> {
        let map = self.buckets.map.read().unwrap_or_else(|e| e.into_inner());
        let (record, at) = map.get(bucket)?;
        (at.elapsed() < CACHE_TTL && (access_key.is_empty() || access_key == record.owner))
            .then(|| record.clone())
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

/// Marks a request whose `X-Forwarded-Proto`/`X-Forwarded-Host` come from a trusted proxy (see
/// `http`'s `forwarded_headers`); only `http`'s `forwarded_headers` sets it, and it removes any a client sent.
pub(crate) const FROM_TRUSTED_PROXY: &str = "x-postgate-from-trusted-proxy";

/// The server's base URL, from configuration and never from what a client claims (a `Host` of
/// the attacker's choosing would put the upload form, its signed redirect and every `Location`
/// on the attacker's host): `--public-url`; else the scheme and host a trusted proxy forwarded
/// (`http`'s `forwarded_headers` marks its requests); else `http://` (`https://` with native
/// TLS) + the address the server listens on.
pub fn base_url(app: &AppState, headers: &axum::http::HeaderMap) -> String {
    if let Some(u) = &app.config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    if let Some(host) = forwarded_host(headers) {
        return format!("{}://{host}", forwarded_proto(headers).unwrap_or("http"));
    }
    app.config.listen_url()
}

/// The scheme a trusted proxy received the request on (`X-Forwarded-Proto`), if it said.
pub fn forwarded_proto(headers: &axum::http::HeaderMap) -> Option<&'static str> {
    let first = trusted_forwarded(headers, "x-forwarded-proto")?;
    match first.to_ascii_lowercase().as_str() {
        "https" => Some("https"),
        "http" => Some("http"),
        _ => None,
    }
}

/// The host a trusted proxy received the request for (`X-Forwarded-Host`), if it is a plain
/// `host[:port]`.
fn forwarded_host(headers: &axum::http::HeaderMap) -> Option<&str> {
    let host = trusted_forwarded(headers, "x-forwarded-host")?;
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    (!host.contains('@') && authority.as_str() == host).then_some(host)
}

/// The first (the client-facing proxy's) value of a comma-separated forwarding header, when a
/// trusted proxy sent the request.
fn trusted_forwarded<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(FROM_TRUSTED_PROXY)?;
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// The URL of an object, path-style under the server's base URL.
pub fn object_url(base: &str, bucket: &str, key: &str) -> String {
    format!(
        "{base}/{bucket}/{}",
        crate::auth::sigv4::uri_encode(key, false)
    )
}
