//! Events and webhooks: what the core writes to the outbox when an object is created or removed,
//! and the worker that delivers it.
//!
//! - [`Notifier`] holds, in memory, who wants which event: the declared webhook targets, each
//!   bucket's notification configuration, each link's webhook. The core asks it inside the
//!   transaction that changes the object, so an upload no target wants costs a hash lookup and
//!   no SQL; one that is wanted inserts its outbox rows in that same transaction (an
//!   acknowledged upload always has its event, a refused one never).
//! - [`Origin`] is what an entry point tells the core about a change: what kind (PUT, POST, ...),
//!   who, from where, through which link.
//! - `deliver` is the worker: a lane per target POSTs its pending deliveries, signed, retries
//!   with backoff, and records the outcome; a silent receiver holds back only its own lane.
//! - With a shared control database (`--control-db`), the outbox is PostgreSQL's: an event is
//!   kept with its [`Origin`] during the node's transaction and written there after it commits
//!   ([`Origin::flush`], before the client is answered), and `shared` is the worker every node
//!   runs on it, under leases (docs/cluster.md section 5).
//!
//! Imports the database, the control database and the leaves only; the core (`objects`)
//! imports this room.

mod deliver;
pub mod message;
pub mod rules;
mod shared;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rusqlite::Connection;

use crate::config::Config;
use crate::control::Pg;
use crate::control::pg::NewEvent;
use crate::db::events::EventFields;
use crate::db::objects::ObjectMeta;
use crate::db::{Db, DbError};
pub use deliver::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
pub use message::Kind;
use rules::NotificationConfig;

/// How often the cache is read again, so that what the CLI changes (another process) applies
/// within this time. Changes made through this server apply at once.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A webhook target: where to POST, and the secret that signs.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub secret: String,
    /// The most records one POST carries when several deliveries are due (1: S3's one).
    pub batch: u32,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

/// What the delivery worker needs of a target: where to POST, and its secret's HMAC key.
struct Signer {
    url: String,
    key: ring::hmac::Key,
    /// [`Target::batch`].
    batch: usize,
}

#[derive(Default)]
struct Rules {
    targets: HashMap<String, Target>,
    /// The targets as the worker signs for them (keys made once per reload, not per delivery).
    signers: HashMap<String, Arc<Signer>>,
    buckets: HashMap<String, NotificationConfig>,
    /// Link id → target name.
    links: HashMap<String, String>,
    /// Bucket → owner, so that an event's fields are made before its transaction; the writer
    /// checks it against the bucket it reads (a stale entry costs a copy there, never a wrong
    /// owner).
    owners: HashMap<String, String>,
}

/// Who wants which event, cached; and the worker's wake-up. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    rules: RwLock<Arc<Rules>>,
    /// Targets from the configuration file; they win over a stored one of the same name.
    configured: Vec<Target>,
    region: String,
    /// Per target, bumped with each new event it wants; that target's delivery lane watches it
    /// (a lane busy when it changes still sees the change on its next wait), and other lanes
    /// are not woken for an event that is not theirs.
    wake: std::sync::Mutex<HashMap<String, tokio::sync::watch::Sender<u64>>>,
    max_age: Duration,
    retry_min: Duration,
    /// The shared outbox (`--control-db`): events go there, not to this node's SQLite.
    shared: Option<Pg>,
    /// How long this node holds the shared outbox's rows it takes (`--event-lease`).
    lease: Duration,
}

impl Notifier {
    /// `shared`: the control database, whose outbox then takes this node's events.
    pub fn new(config: &Config, shared: Option<Pg>) -> Notifier {
        let configured = config
            .webhooks
            .iter()
            .map(|w| Target {
                name: w.name.clone(),
                url: w.url.clone(),
                secret: w.secret.clone(),
                batch: w.batch,
            })
            .collect();
        Notifier {
            inner: Arc::new(Inner {
                rules: RwLock::new(Arc::new(Rules::default())),
                configured,
                region: config.region.clone(),
                wake: std::sync::Mutex::default(),
                max_age: config.event_max_age,
                retry_min: config.event_retry_min,
                shared,
                lease: config.event_lease,
            }),
        }
    }

    /// Reads targets, bucket configurations and link webhooks again.
    pub async fn reload(&self, db: &Db) -> Result<(), DbError> {
        let (stored, buckets, links, owners) = db
            .read(|c| {
                Ok((
                    crate::db::events::webhooks(c)?,
                    crate::db::events::notifications(c)?,
                    crate::db::events::link_webhooks(c)?,
                    crate::db::events::bucket_owners(c)?,
                ))
            })
            .await?;
        let mut targets: HashMap<String, Target> = stored
            .into_iter()
            .map(|w| {
                let t = Target {
                    name: w.name,
                    url: w.url,
                    secret: w.secret,
                    batch: w.batch,
                };
                (t.name.clone(), t)
            })
            .collect();
        for t in &self.inner.configured {
            targets.insert(t.name.clone(), t.clone());
        }
        let buckets = buckets
            .into_iter()
            .filter_map(|(b, json)| Some((b, serde_json::from_str(&json).ok()?)))
            .collect();
        let signers = targets
            .values()
            .map(|t| {
                let signer = Signer {
                    url: t.url.clone(),
                    key: deliver::signing_key(&t.secret),
                    batch: t.batch.clamp(1, crate::config::MAX_WEBHOOK_BATCH) as usize,
                };
                (t.name.clone(), Arc::new(signer))
            })
            .collect();
        let rules = Rules {
            targets,
            signers,
            buckets,
            links: links.into_iter().collect(),
            owners: owners.into_iter().collect(),
        };
        *self.inner.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        Ok(())
    }

    fn rules(&self) -> Arc<Rules> {
        self.inner
            .rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The wake-up of `target`'s delivery lane.
    fn wake(&self, target: &str) -> tokio::sync::watch::Receiver<u64> {
        let mut wake = self.inner.wake.lock().unwrap_or_else(|e| e.into_inner());
        match wake.get(target) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = tokio::sync::watch::channel(0);
                wake.insert(target.to_owned(), sender);
                receiver
            }
        }
    }

    /// Wakes the lanes of these targets (each has new events).
    fn woken<'t>(&self, targets: impl Iterator<Item = &'t str>) {
        let wake = self.inner.wake.lock().unwrap_or_else(|e| e.into_inner());
        for target in targets {
            if let Some(sender) = wake.get(target) {
                sender.send_modify(|n| *n += 1);
            }
        }
    }

    /// The declared target of that name.
    pub fn target(&self, name: &str) -> Option<Target> {
        self.rules().targets.get(name).cloned()
    }

    /// The declared target of that name, as the delivery worker signs for it.
    fn signer(&self, name: &str) -> Option<Arc<Signer>> {
        self.rules().signers.get(name).cloned()
    }

    /// The target an upload link's uploads are announced to.
    pub fn link_target(&self, link_id: &str) -> Option<String> {
        self.rules().links.get(link_id).cloned()
    }

    /// Every declared target, by name.
    pub fn targets(&self) -> Vec<Target> {
        let mut all: Vec<Target> = self.rules().targets.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// What an entry point tells the core about the change it asks for. Inside a request, it
    /// carries the peer's address and the request's `x-amz-request-id`; outside one (the
    /// lifecycle sweeper), neither until [`Origin::with_request_id`].
    pub fn origin(&self, kind: Kind, principal: &str) -> Origin {
        let (source_ip, request_id) = crate::telemetry::read(|t| {
            (
                t.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                t.request_id.clone().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
        Origin {
            notifier: self.clone(),
            kind,
            principal: principal.to_owned(),
            source_ip,
            request_id,
            link_id: None,
            outbox: self.inner.shared.as_ref().map(|_| Arc::default()),
            slot: None,
        }
    }

    /// (target, configuration id) for every destination that wants this change. Only memory:
    /// a bucket without a configuration and an upload without a link webhook return at once.
    fn destinations(
        &self,
        bucket: &str,
        key: &str,
        kind: Kind,
        link_id: Option<&str>,
    ) -> Vec<(String, String)> {
        let rules = self.rules();
        let mut out = Vec::new();
        if let Some(config) = rules.buckets.get(bucket) {
            for q in config.matching(kind.event_name(), key) {
                out.push((q.target.clone(), q.id.clone()));
            }
        }
        if let Some(target) = link_id.and_then(|id| rules.links.get(id)) {
            out.push((
                target.clone(),
                format!("postgate-link-{}", link_id.unwrap_or("")),
            ));
        }
        out.dedup();
        out
    }

    /// Starts the delivery worker and the cache's periodic reload. Never blocks an upload: the
    /// worker only reads the outbox and records outcomes, each in a transaction of its own.
    pub fn start(&self, db: Db, metrics: Arc<crate::telemetry::Metrics>) {
        let (notifier, reload_db) = (self.clone(), db.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                if let Err(e) = notifier.reload(&reload_db).await {
                    tracing::warn!(error = %e, "could not reload webhook configuration");
                }
            }
        });
        // With a shared outbox, this node's own still delivers what it holds (written before
        // `--control-db`, or when PostgreSQL could not take an event: `Origin::flush`).
        let worker = deliver::Worker::new(self.clone(), db.clone(), metrics.clone());
        tokio::spawn(worker.run());
        if let Some(pg) = self.inner.shared.clone() {
            let worker = deliver::Worker::new(self.clone(), db, metrics);
            tokio::spawn(shared::run(worker, pg, self.inner.lease));
        }
    }

    /// Deliveries for an operator, newest first (`db::events::list`): with a shared outbox,
    /// its rows (every node's; this node's own outbox is listed by `postgate events list`
    /// without `--control-db`).
    pub async fn list(
        &self,
        db: &Db,
        failed: bool,
        limit: usize,
    ) -> Result<Vec<crate::db::events::Delivery>, DbError> {
        match &self.inner.shared {
            Some(pg) => pg.list_events(failed, limit).await,
            None => {
                db.read(move |c| crate::db::events::list(c, failed, limit))
                    .await
            }
        }
    }

    /// Puts delivery `id` back in the queue now (`db::events::retry`), where [`Notifier::list`]
    /// reads. `false`: no such delivery.
    pub async fn retry(&self, db: &Db, id: i64) -> Result<bool, DbError> {
        match &self.inner.shared {
            Some(pg) => pg.retry_event(id).await,
            None => db.write(move |c| crate::db::events::retry(c, id)).await,
        }
    }

    /// Deliveries still pending: the shared outbox's (every node's) and this node's own.
    pub async fn pending(&self, db: &Db) -> Result<u64, DbError> {
        let shared = match &self.inner.shared {
            Some(pg) => pg.pending_events().await?,
            None => 0,
        };
        Ok(shared + db.read(crate::db::events::pending).await?)
    }
}

/// A delivery as the operator sees it (`events list`, `GET /-/api/events`).
pub fn delivery_json(d: &crate::db::events::Delivery) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "event": d.event_name,
        "bucket": d.bucket,
        "key": d.key,
        "target": d.target,
        "state": d.state,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "created_at": d.created_at,
        // A row parked behind an earlier one of its key has no time of its own.
        "next_attempt_at": (d.state == "pending" && d.next_at != crate::db::events::PARKED)
            .then_some(d.next_at),
    })
}

/// An entry point's account of a change, handed to the core, which records the event (if any
/// target wants it) in the change's own transaction.
#[derive(Clone)]
pub struct Origin {
    notifier: Notifier,
    kind: Kind,
    principal: String,
    source_ip: String,
    /// The `x-amz-request-id` of the request that made the change (`responseElements`).
    request_id: String,
    link_id: Option<String>,
    /// With a shared outbox: the events recorded in the change's transaction, written to
    /// PostgreSQL by [`Origin::flush`] once it committed.
    outbox: Option<Arc<std::sync::Mutex<Vec<NewEvent>>>>,
    /// The link form slot the change settles ([`Origin::with_slot`]).
    slot: Option<String>,
}

impl Origin {
    /// The change is an upload link's (the core knows it from the upload's row, a form from
    /// the link it checked).
    pub fn with_link(mut self, link_id: Option<String>) -> Origin {
        if link_id.is_some() {
            self.link_id = link_id;
        }
        self
    }

    /// The change is the upload of a link form that holds `slot`: with a shared outbox, its
    /// event is keyed by the slot (a second write of it is a no-op) and written in the
    /// transaction that ends the slot.
    pub fn with_slot(mut self, slot: Option<&str>) -> Origin {
        self.slot = slot.map(str::to_owned);
        self
    }

    /// With a shared outbox, writes the events recorded in the change's transaction (which has
    /// committed) to PostgreSQL, and ends the link form's slot with them. When PostgreSQL cannot
    /// take them, they go to this node's SQLite outbox, which this node delivers itself (in
    /// order with its own events, not with other nodes'); `Err` only when neither could: the
    /// change stands and the client is answered 500, as for any failure after the object was
    /// stored (docs/cluster.md section 5). Without a shared outbox: nothing to do.
    pub async fn flush(&self, db: &Db) -> Result<(), DbError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let events = std::mem::take(&mut *outbox.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(pg) = &self.notifier.inner.shared else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        let Err(e) = pg.insert_events(&events, self.slot.as_deref()).await else {
            return Ok(());
        };
        tracing::warn!(error = %e, "the shared outbox refused events: kept in this node's");
        let targets: Vec<String> = events
            .iter()
            .flat_map(|e| e.targets.iter().map(|(t, _)| t.clone()))
            .collect();
        db.write(move |c| {
            for e in &events {
                crate::db::events::insert(c, &e.bucket, &e.key, &e.name, &e.fields, &e.targets)?;
            }
            Ok(())
        })
        .await?;
        self.notifier.woken(targets.iter().map(String::as_str));
        Ok(())
    }

    /// Names the changes with `id` (S3 gives its lifecycle events an id of its own; the sweeper
    /// gives each sweep one, and logs it).
    pub fn with_request_id(mut self, id: String) -> Origin {
        self.request_id = id;
        self
    }

    /// The id the change's events carry as `x-amz-request-id`.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Records that `bucket/key` now holds `meta`. Call inside the transaction that stores it.
    /// (A path that knows `meta` before its transaction uses [`Origin::prepare_created`].)
    pub fn created(
        &self,
        c: &Connection,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<(), DbError> {
        self.prepare(self.kind, bucket, key, Some(meta))
            .record(c, Some(meta), None, None)
    }

    /// Records that `bucket/key` was removed. Call inside the transaction that removes it.
    pub fn removed(&self, c: &Connection, bucket: &str, key: &str) -> Result<(), DbError> {
        let kind = match self.kind {
            Kind::LifecycleExpiration => Kind::LifecycleExpiration,
            _ => Kind::Delete,
        };
        self.prepare(kind, bucket, key, None)
            .record(c, None, None, None)
    }

    /// The shared outbox's rows of the event of a link form's file that its node stored and
    /// did not live to announce, found by the slot settle (docs/cluster.md section 4): who wants
    /// it as this node knows, with what the backend's HEAD tells (`meta`) and the bucket's owner
    /// as cached; keyed by the slot ([`Origin::with_slot`]), so the event its node may still
    /// write is not doubled. Empty when no target wants it.
    pub fn late_created(&self, bucket: &str, key: &str, meta: &ObjectMeta) -> Vec<NewEvent> {
        let prepared = self.prepare(self.kind, bucket, key, Some(meta));
        match &prepared.fields {
            Some(fields) => vec![prepared.row(fields, &prepared.targets)],
            None => Vec::new(),
        }
    }

    /// The event of `bucket/key` coming to hold `meta`, prepared before the transaction that
    /// stores it: who wants it, and the fields its outbox rows keep. The transaction then only
    /// inserts them ([`Prepared::record`]), so the one writer thread, which every upload's commit
    /// waits for, does not look up rules or copy strings.
    pub fn prepare_created(&self, bucket: &str, key: &str, meta: &ObjectMeta) -> Prepared {
        self.prepare(self.kind, bucket, key, Some(meta))
    }

    fn prepare(&self, kind: Kind, bucket: &str, key: &str, meta: Option<&ObjectMeta>) -> Prepared {
        let link_id = self.link_id.clone();
        let targets = self
            .notifier
            .destinations(bucket, key, kind, link_id.as_deref());
        let fields = (!targets.is_empty()).then(|| {
            let owner = self.notifier.rules().owners.get(bucket).cloned();
            self.fields(meta, link_id.as_deref(), owner.unwrap_or_default())
        });
        Prepared {
            origin: self.clone(),
            kind,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            link_id,
            targets,
            fields,
        }
    }

    /// What the outbox keeps of a change: its record is rendered from these when it is sent
    /// ([`message::render`]), by the delivery worker, not by the upload.
    fn fields(
        &self,
        meta: Option<&ObjectMeta>,
        link_id: Option<&str>,
        owner: String,
    ) -> EventFields {
        EventFields {
            owner,
            size: meta.map(|m| m.size),
            etag: meta.map(|m| m.etag.clone()),
            content_type: meta.and_then(|m| m.content_type.clone()),
            detected_type: meta.and_then(|m| m.detected_type.clone()),
            metadata: meta
                .filter(|m| !m.meta.is_empty())
                .and_then(|m| serde_json::to_string(&m.meta).ok()),
            principal: self.principal.clone(),
            source_ip: self.source_ip.clone(),
            request_id: self.request_id.clone(),
            link_id: link_id.map(str::to_owned),
        }
    }
}

/// A change's event, prepared before the transaction that records it
/// ([`Origin::prepare_created`]).
pub struct Prepared {
    origin: Origin,
    kind: Kind,
    bucket: String,
    key: String,
    /// The link it was prepared for.
    link_id: Option<String>,
    /// (target, configuration id) of every destination that wants it, for that link.
    targets: Vec<(String, String)>,
    /// Its fields, when a target wants it; the owner is the cached one (empty when the bucket
    /// is newer than the cache), checked against the transaction's.
    fields: Option<EventFields>,
}

impl Prepared {
    /// Inserts the event's outbox rows. Call inside the transaction that makes the change.
    /// `link_id`: the link the transaction found the change is for (an upload's reservation),
    /// when the entry point did not know it; `owner`: the bucket's owner when the transaction
    /// already read the bucket (otherwise it is read here, and only when a target wants the
    /// event). What the preparation assumed and the transaction contradicts is redone here.
    pub fn record(
        &self,
        c: &Connection,
        meta: Option<&ObjectMeta>,
        link_id: Option<String>,
        owner: Option<&str>,
    ) -> Result<(), DbError> {
        let link_id = link_id.or_else(|| self.link_id.clone());
        let same_link = link_id == self.link_id;
        if same_link && self.targets.is_empty() {
            return Ok(());
        }
        let redone;
        let targets = if same_link {
            &self.targets
        } else {
            redone = self.origin.notifier.destinations(
                &self.bucket,
                &self.key,
                self.kind,
                link_id.as_deref(),
            );
            if redone.is_empty() {
                return Ok(());
            }
            &redone
        };
        let owner = match owner {
            Some(owner) => owner.to_owned(),
            None => crate::db::buckets::get(c, &self.bucket)?
                .map(|b| b.owner)
                .unwrap_or_default(),
        };
        let rebuilt;
        let fields = match &self.fields {
            Some(fields) if same_link && fields.owner == owner => fields,
            _ => {
                rebuilt = self.origin.fields(meta, link_id.as_deref(), owner);
                &rebuilt
            }
        };
        if let Some(outbox) = &self.origin.outbox {
            // Written to the shared outbox once the transaction committed (`Origin::flush`).
            let row = self.row(fields, targets);
            outbox.lock().unwrap_or_else(|e| e.into_inner()).push(row);
            return Ok(());
        }
        crate::db::events::insert(
            c,
            &self.bucket,
            &self.key,
            self.kind.event_name(),
            fields,
            targets,
        )?;
        // The lanes read after this transaction commits; a wake-up that comes too early is
        // caught by their next poll.
        self.origin
            .notifier
            .woken(targets.iter().map(|(t, _)| t.as_str()));
        Ok(())
    }

    /// The event as the shared outbox keeps it: keyed by the change's slot, or by a fresh id.
    fn row(&self, fields: &EventFields, targets: &[(String, String)]) -> NewEvent {
        NewEvent {
            dedupe: match &self.origin.slot {
                Some(slot) => slot.clone(),
                None => uuid::Uuid::new_v4().simple().to_string(),
            },
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            name: self.kind.event_name().to_owned(),
            fields: fields.clone(),
            targets: targets.to_vec(),
        }
    }
}
