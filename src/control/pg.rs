//! PostgreSQL, the control database several nodes share (`--control-db`): its pool, its
//! migrations and every statement postgate sends it. The PostgreSQL twin of `db::links`.

use deadpool_postgres::{Pool, Runtime};
use tokio_postgres::NoTls;

use crate::db::buckets::{BucketRecord, Created, Perm, Setting, SharedConfig};
use crate::db::events::{Delivery, EventFields, Outcome, WebhookRecord};
use crate::db::keys::KeyRecord;
use crate::db::links::{LinkRecord, Reservation};
use crate::db::{DbError, now_millis};

/// The PostgreSQL migrations, in order: the number of applied ones is kept in
/// `postgate_schema`. Append only.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_links.sql"),
    include_str!("../../migrations/postgres/0002_nodes.sql"),
    include_str!("../../migrations/postgres/0003_keys.sql"),
    include_str!("../../migrations/postgres/0004_buckets.sql"),
    include_str!("../../migrations/postgres/0005_outbox.sql"),
    include_str!("../../migrations/postgres/0006_link_webhooks.sql"),
    include_str!("../../migrations/postgres/0007_uploads.sql"),
    include_str!("../../migrations/postgres/0008_webhook_batch.sql"),
];

/// The channel the triggers of `access_keys` and `grants` notify on every change.
pub const KEYS_CHANNEL: &str = "postgate_keys";

/// The channel the triggers of `buckets`, `bucket_notifications` and `webhooks` notify on
/// every change, and that of `links` on a new link with a webhook.
pub const CONFIG_CHANNEL: &str = "postgate_config";

/// The channel the `outbox` trigger notifies on every insert.
pub const OUTBOX_CHANNEL: &str = "postgate_outbox";

/// PostgreSQL's clock in milliseconds since the epoch: heartbeats are written and judged by the
/// one clock every node shares.
const PG_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Ends slot `$1`; gives it back when `$2` (stored) is false, and only when this statement
/// deleted the row: a slot is given back at most once, whoever ends it.
const END_SLOT: &str = "WITH gone AS (DELETE FROM link_form_slots WHERE id = $1 RETURNING link_id)
     UPDATE links SET uploaded_files = uploaded_files - 1
     WHERE NOT $2 AND uploaded_files > 0 AND id IN (SELECT link_id FROM gone)";

/// How long after its link expired an upload's event still goes to the link's webhook: an
/// upload the link let in may still be arriving (a large body, a multipart upload).
const LINK_WEBHOOK_GRACE_MS: i64 = 24 * 3600 * 1000;

/// Slot rows one settle takes (and locks) at a time.
const SETTLE_BATCH: i64 = 64;

/// Any key of `pg_advisory_xact_lock`, the same on every node: nodes starting together migrate
/// one after the other.
const MIGRATION_LOCK: i64 = 0x706f_7374_6761_7465; // "postgate"

/// Connections per node: each statement holds one for a round trip, so a few serve many uploads.
const POOL_SIZE: usize = 16;
/// How long making or checking out a control-database connection may take (connect, startup,
/// recycle); waiting for a free one in the pool may take twice this.
const PG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The shared control database and this node's id (on the slot rows it takes).
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    node: std::sync::Arc<str>,
    /// For the connections that listen for changes ([`Pg::listen`]); never logged.
    url: std::sync::Arc<str>,
}

pub(super) fn pg_error(e: impl std::fmt::Display) -> DbError {
    DbError::Control(e.to_string())
}

const COLUMNS: &str = "token, id, bucket, prefix, max_size, content_type, max_files, \
    uploaded_files, access_key, created_at, expires_at, revoked, verify_type, \
    expire_objects_after, max_total_size, uploaded_bytes";

fn from_row(r: &tokio_postgres::Row) -> Result<LinkRecord, DbError> {
    let u = |n: i64| n.max(0) as u64;
    Ok(LinkRecord {
        token: r.try_get(0).map_err(pg_error)?,
        id: r.try_get(1).map_err(pg_error)?,
        bucket: r.try_get(2).map_err(pg_error)?,
        prefix: r.try_get(3).map_err(pg_error)?,
        max_size: u(r.try_get(4).map_err(pg_error)?),
        content_type: r.try_get(5).map_err(pg_error)?,
        max_files: r.try_get::<_, Option<i64>>(6).map_err(pg_error)?.map(u),
        uploaded_files: u(r.try_get(7).map_err(pg_error)?),
        access_key: r.try_get(8).map_err(pg_error)?,
        created_at: r.try_get(9).map_err(pg_error)?,
        expires_at: r.try_get(10).map_err(pg_error)?,
        revoked: r.try_get(11).map_err(pg_error)?,
        verify_type: r.try_get(12).map_err(pg_error)?,
        expire_objects_after: r.try_get(13).map_err(pg_error)?,
        max_total_size: r.try_get::<_, Option<i64>>(14).map_err(pg_error)?.map(u),
        uploaded_bytes: u(r.try_get(15).map_err(pg_error)?),
    })
}

/// A form slot a node took and has not ended ([`Pg::settle_slots`]).
#[derive(Debug, Clone)]
pub struct OpenSlot {
    pub id: String,
    pub link_id: String,
    pub bucket: String,
    pub key: String,
    pub taken_at: i64,
    /// The link's access key, which signs its forms (the late event's principal).
    pub access_key: String,
}

impl Pg {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database`, no TLS) and applies
    /// the migrations not yet applied. The URL is never logged: errors name no part of it.
    pub async fn connect(url: &str, node: &str) -> Result<Pg, DbError> {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_owned());
        // A control database that stops answering must not hold requests (or the start) for
        // ever: bounded connecting, waiting for a pooled connection, and checking one out.
        // A `connect_timeout` given in the URL wins.
        let in_url = url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_connect_timeout().copied());
        config.connect_timeout = Some(in_url.unwrap_or(PG_TIMEOUT));
        let mut pool = deadpool_postgres::PoolConfig::new(POOL_SIZE);
        pool.timeouts = deadpool_postgres::Timeouts {
            wait: Some(PG_TIMEOUT * 2),
            create: Some(PG_TIMEOUT),
            recycle: Some(PG_TIMEOUT),
        };
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| DbError::Control(format!("--control-db: {e}")))?;
        let pg = Pg {
            pool,
            node: node.into(),
            url: url.into(),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Client, DbError> {
        self.pool.get().await.map_err(pg_error)
    }

    /// Applies the migrations past `postgate_schema`'s count, each in one transaction with the
    /// count, under an advisory lock: idempotent, and safe when several nodes start at once.
    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.client().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS postgate_schema (
                     version    INTEGER PRIMARY KEY,
                     applied_at BIGINT  NOT NULL
                 )",
            )
            .await
            .or_else(|e| {
                // Two nodes creating it at once: the loser sees a unique violation.
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    Ok(())
                } else {
                    Err(pg_error(e))
                }
            })?;
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_error)?;
        let applied: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM postgate_schema", &[])
            .await
            .map_err(pg_error)?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
            tx.batch_execute(sql).await.map_err(pg_error)?;
            tx.execute(
                "INSERT INTO postgate_schema (version, applied_at) VALUES ($1, $2)",
                &[&(i as i32 + 1), &now_millis()],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    pub async fn insert(&self, l: &LinkRecord, webhook: Option<&str>) -> Result<(), DbError> {
        let n = |v: Option<u64>| v.map(|n| n as i64);
        self.client()
            .await?
            .execute(
                "INSERT INTO links (token, id, bucket, prefix, max_size, content_type, max_files,
                     access_key, created_at, expires_at, verify_type, expire_objects_after,
                     max_total_size, webhook)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                &[
                    &l.token,
                    &l.id,
                    &l.bucket,
                    &l.prefix,
                    &(l.max_size as i64),
                    &l.content_type,
                    &n(l.max_files),
                    &l.access_key,
                    &l.created_at,
                    &l.expires_at,
                    &l.verify_type,
                    &l.expire_objects_after,
                    &n(l.max_total_size),
                    &webhook,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn one(&self, column: &str, value: &str) -> Result<Option<LinkRecord>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM links WHERE {column} = $1"))
            .await
            .map_err(pg_error)?;
        match client.query_opt(&stmt, &[&value]).await.map_err(pg_error)? {
            Some(row) => Ok(Some(from_row(&row)?)),
            None => Ok(None),
        }
    }

    pub async fn get(&self, token: &str) -> Result<Option<LinkRecord>, DbError> {
        self.one("token", token).await
    }

    pub async fn get_by_id(&self, id: &str) -> Result<Option<LinkRecord>, DbError> {
        self.one("id", id).await
    }

    pub async fn list(&self) -> Result<Vec<LinkRecord>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {COLUMNS} FROM links ORDER BY created_at"),
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes by token or public id; `None`: no such link, else its id.
    pub async fn revoke(&self, token_or_id: &str) -> Result<Option<String>, DbError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "UPDATE links SET revoked = true WHERE token = $1 OR id = $1 RETURNING id",
                &[&token_or_id],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Why a reservation of link `id` changed no row: unknown, or refused with the link as it is.
    async fn refused(&self, id: &str) -> Result<Reservation, DbError> {
        Ok(match self.get_by_id(id).await? {
            None => Reservation::Unknown,
            Some(link) => Reservation::Refused(Box::new(link)),
        })
    }

    /// `db::links::reserve_upload` in PostgreSQL: the same single conditional `UPDATE`, whose
    /// row lock serialises the reservations of every node.
    pub async fn reserve_upload(&self, id: &str) -> Result<Reservation, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE links SET uploaded_files = uploaded_files + 1
                 WHERE id = $1 AND NOT revoked AND expires_at > $2
                   AND (max_files IS NULL OR uploaded_files < max_files)",
            )
            .await
            .map_err(pg_error)?;
        let taken = client
            .execute(&stmt, &[&id, &now_millis()])
            .await
            .map_err(pg_error)?;
        drop(client);
        if taken == 1 {
            return Ok(Reservation::Taken);
        }
        self.refused(id).await
    }

    /// Gives back one slot taken with [`Pg::reserve_upload`].
    pub async fn release_upload(&self, id: &str) -> Result<(), DbError> {
        self.client()
            .await?
            .execute(
                "UPDATE links SET uploaded_files = uploaded_files - 1
                 WHERE id = $1 AND uploaded_files > 0",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// `db::links::reserve_form` in PostgreSQL: the slot and its row (with this node's id) in
    /// one statement, so one commits only with the other.
    pub async fn reserve_form(
        &self,
        link_id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Result<String, Reservation>, DbError> {
        let slot = uuid::Uuid::new_v4().simple().to_string();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH taken AS (
                     UPDATE links SET uploaded_files = uploaded_files + 1
                     WHERE id = $1 AND NOT revoked AND expires_at > $2
                       AND (max_files IS NULL OR uploaded_files < max_files)
                     RETURNING id)
                 INSERT INTO link_form_slots (id, link_id, bucket, key, node, taken_at)
                 SELECT $3, id, $4, $5, $6, $2 FROM taken",
            )
            .await
            .map_err(pg_error)?;
        let node: &str = &self.node;
        let taken = client
            .execute(
                &stmt,
                &[&link_id, &now_millis(), &slot, &bucket, &key, &node],
            )
            .await
            .map_err(pg_error)?;
        drop(client);
        if taken == 1 {
            return Ok(Ok(slot));
        }
        Ok(Err(self.refused(link_id).await?))
    }

    /// `db::links::end_form_slot` in PostgreSQL ([`END_SLOT`]).
    pub async fn end_form_slot(&self, slot: &str, stored: bool) -> Result<(), DbError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(END_SLOT).await.map_err(pg_error)?;
        client
            .execute(&stmt, &[&slot, &stored])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Renews this node's heartbeat row: other nodes leave its slots alone while it is younger
    /// than their `--node-expiry`.
    pub async fn heartbeat(&self) -> Result<(), DbError> {
        let node: &str = &self.node;
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO nodes (id, seen_at) VALUES ($1, {PG_NOW_MS})
                     ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at"
                ),
                &[&node],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Settles the open form slots `which` names, a batch at a time: each row is locked
    /// (`FOR UPDATE SKIP LOCKED`, so two nodes settling at once never take the same row and
    /// neither waits for the other), `decide` says whether its file is stored (`Some((true,
    /// events))`: the slot stays taken, and the file's event, which its node did not write, is
    /// written with the end (a second write of it is a no-op); `Some((false, _))`: given back;
    /// `None`: undecided, the row stays for a later settle), and the batch's ends commit
    /// together. Returns (kept, given back).
    pub async fn settle_slots<F, Fut>(
        &self,
        which: Slots,
        decide: F,
    ) -> Result<(usize, usize), DbError>
    where
        F: Fn(OpenSlot) -> Fut,
        Fut: std::future::Future<Output = Option<(bool, Vec<NewEvent>)>>,
    {
        let node: &str = &self.node;
        let (mut kept, mut released) = (0, 0);
        let mut client = self.client().await?;
        loop {
            let tx = client.transaction().await.map_err(pg_error)?;
            let rows = match which {
                Slots::Own => tx
                    .query(
                        "SELECT s.id, s.link_id, s.bucket, s.key, s.taken_at, l.access_key
                         FROM link_form_slots s JOIN links l ON l.id = s.link_id
                         WHERE s.node = $1 ORDER BY s.taken_at LIMIT $2
                         FOR UPDATE OF s SKIP LOCKED",
                        &[&node, &SETTLE_BATCH],
                    )
                    .await
                    .map_err(pg_error)?,
                // A node with no heartbeat row at all is dead too: a serving node writes its
                // row before it takes any slot.
                Slots::OfDeadNodes { expiry } => tx
                    .query(
                        &format!(
                            "SELECT s.id, s.link_id, s.bucket, s.key, s.taken_at, l.access_key
                             FROM link_form_slots s JOIN links l ON l.id = s.link_id
                             WHERE s.node <> $1 AND NOT EXISTS (
                                 SELECT 1 FROM nodes n
                                 WHERE n.id = s.node AND n.seen_at > {PG_NOW_MS} - $3)
                             ORDER BY s.taken_at LIMIT $2 FOR UPDATE OF s SKIP LOCKED"
                        ),
                        &[&node, &SETTLE_BATCH, &(expiry.as_millis() as i64)],
                    )
                    .await
                    .map_err(pg_error)?,
            };
            let mut undecided = 0;
            for r in &rows {
                let slot = OpenSlot {
                    id: r.get(0),
                    link_id: r.get(1),
                    bucket: r.get(2),
                    key: r.get(3),
                    taken_at: r.get(4),
                    access_key: r.get(5),
                };
                let id = slot.id.clone();
                let Some((stored, events)) = decide(slot).await else {
                    undecided += 1;
                    continue;
                };
                tx.execute(END_SLOT, &[&id, &stored])
                    .await
                    .map_err(pg_error)?;
                insert_rows(&tx, &events).await?;
                if stored {
                    kept += 1;
                } else {
                    released += 1;
                }
            }
            tx.commit().await.map_err(pg_error)?;
            // A short batch was the last; a batch of only undecided rows would come back as is.
            if (rows.len() as i64) < SETTLE_BATCH || undecided == rows.len() {
                return Ok((kept, released));
            }
        }
    }
}

const KEY_COLUMNS: &str = "id, name, access_key, secret_key, is_admin, created_at";

fn key_from_row(r: &tokio_postgres::Row) -> Result<KeyRecord, DbError> {
    Ok(KeyRecord {
        id: r.try_get(0).map_err(pg_error)?,
        name: r.try_get(1).map_err(pg_error)?,
        access_key: r.try_get(2).map_err(pg_error)?,
        secret_key: r.try_get(3).map_err(pg_error)?,
        is_admin: r.try_get(4).map_err(pg_error)?,
        created_at: r.try_get(5).map_err(pg_error)?,
    })
}

/// Access keys and grants: the PostgreSQL twin of `db::keys` and of `db::buckets`' grants.
impl Pg {
    /// `db::keys::insert` (a key made with `key create`; never an admin key).
    pub async fn insert_key(
        &self,
        name: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Result<KeyRecord, DbError> {
        let row = self
            .client()
            .await?
            .query_one(
                &format!(
                    "INSERT INTO access_keys (name, access_key, secret_key, created_at)
                     VALUES ($1, $2, $3, $4) RETURNING {KEY_COLUMNS}"
                ),
                &[&name, &access_key, &secret_key, &now_millis()],
            )
            .await
            .map_err(pg_error)?;
        key_from_row(&row)
    }

    pub async fn find_key(&self, access_key: &str) -> Result<Option<KeyRecord>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM access_keys WHERE access_key = $1"
            ))
            .await
            .map_err(pg_error)?;
        match client
            .query_opt(&stmt, &[&access_key])
            .await
            .map_err(pg_error)?
        {
            Some(row) => Ok(Some(key_from_row(&row)?)),
            None => Ok(None),
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM access_keys ORDER BY id"),
                &[],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(key_from_row).collect()
    }

    /// `db::keys::delete`: by numeric id or access key id (its grants go with it).
    pub async fn delete_key(&self, id_or_access_key: &str) -> Result<bool, DbError> {
        let client = self.client().await?;
        let n = match id_or_access_key.parse::<i64>() {
            Ok(id) => client
                .execute("DELETE FROM access_keys WHERE id = $1", &[&id])
                .await
                .map_err(pg_error)?,
            Err(_) => client
                .execute(
                    "DELETE FROM access_keys WHERE access_key = $1",
                    &[&id_or_access_key],
                )
                .await
                .map_err(pg_error)?,
        };
        Ok(n > 0)
    }

    /// `db::buckets::allow`: gives (or changes) `access_key`'s permission on `bucket`.
    pub async fn allow(&self, bucket: &str, access_key: &str, perm: Perm) -> Result<(), DbError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO grants (bucket, access_key, perm) VALUES ($1, $2, $3)
                 ON CONFLICT (bucket, access_key) DO UPDATE SET perm = EXCLUDED.perm",
                &[&bucket, &access_key, &perm.as_str()],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Every grant: (bucket, access key, permission), in a stable order.
    pub async fn grants(&self) -> Result<Vec<(String, String, Perm)>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT bucket, access_key, perm FROM grants ORDER BY bucket, access_key",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let perm: &str = r.get(2);
                Some((r.get(0), r.get(1), Perm::parse(perm)?))
            })
            .collect())
    }

    /// Listens on `channel` (one of the channels the migrations' triggers notify, a constant
    /// of this module) on a connection of its own and calls `changed` after each notification,
    /// and once each time the listening (re)starts (a change may have been missed meanwhile).
    /// Runs until dropped; a lost connection is made again after a second.
    pub async fn listen(&self, channel: &'static str, changed: impl Fn()) {
        use futures_util::StreamExt;
        loop {
            let connected =
                tokio::time::timeout(PG_TIMEOUT, tokio_postgres::connect(&self.url, NoTls)).await;
            match connected {
                Ok(Ok((client, mut connection))) => {
                    // The connection must be polled for anything to happen, the LISTEN too:
                    // its messages go through a channel while this loop waits on them.
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let driver = tokio::spawn(async move {
                        let mut messages =
                            futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                        while let Some(message) = messages.next().await {
                            match message {
                                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                    let _ = tx.send(());
                                }
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "control database: lost the listening connection");
                                    break;
                                }
                            }
                        }
                    });
                    match client.batch_execute(&format!("LISTEN {channel}")).await {
                        Ok(()) => {
                            changed();
                            while rx.recv().await.is_some() {
                                changed();
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "control database: cannot LISTEN"),
                    }
                    driver.abort();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "control database: cannot connect to listen")
                }
                Err(_) => tracing::warn!("control database: connecting to listen timed out"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

const BUCKET_COLUMNS: &str = "name, owner, acl, cors, created_at, active_content, verify_type, \
    lifecycle, quota_max_size, quota_max_objects";

fn bucket_from_row(r: &tokio_postgres::Row) -> Result<BucketRecord, DbError> {
    let u = |n: Option<i64>| n.map(|n| n.max(0) as u64);
    Ok(BucketRecord {
        name: r.try_get(0).map_err(pg_error)?,
        owner: r.try_get(1).map_err(pg_error)?,
        acl: r.try_get(2).map_err(pg_error)?,
        cors: r.try_get(3).map_err(pg_error)?,
        created_at: r.try_get(4).map_err(pg_error)?,
        active_content: r.try_get(5).map_err(pg_error)?,
        verify_type: r.try_get(6).map_err(pg_error)?,
        lifecycle: r.try_get(7).map_err(pg_error)?,
        quota: crate::db::quota::Quota {
            max_size: u(r.try_get(8).map_err(pg_error)?),
            max_objects: u(r.try_get(9).map_err(pg_error)?),
        },
    })
}

/// Inserts a bucket unless its name exists.
const INSERT_BUCKET: &str = "INSERT INTO buckets (name, owner, acl, cors, created_at,
         active_content, verify_type, lifecycle, quota_max_size, quota_max_objects)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING";

/// Inserts webhook target `w` unless its name exists.
const INSERT_WEBHOOK: &str = "INSERT INTO webhooks (name, url, secret, created_at, batch)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING";

/// Buckets, their settings and notification configurations, webhook targets: the PostgreSQL
/// twin of `db::buckets` and of `db::events`' targets and configurations. Names sort as
/// SQLite sorts them (bytes: `COLLATE "C"`), so that a node's copy compares equal.
impl Pg {
    /// `db::buckets::create`: the name is taken once, by whichever node (or CLI) comes first.
    pub async fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        acl: &str,
    ) -> Result<Created, DbError> {
        let b = BucketRecord {
            name: name.to_owned(),
            owner: owner.to_owned(),
            acl: acl.to_owned(),
            cors: None,
            created_at: now_millis(),
            active_content: false,
            verify_type: false,
            lifecycle: None,
            quota: Default::default(),
        };
        let client = self.client().await?;
        if insert_bucket(&client, &b).await? {
            return Ok(Created::Created);
        }
        let row = client
            .query_opt("SELECT owner FROM buckets WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?;
        Ok(match row {
            Some(r) if r.get::<_, &str>(0) == owner => Created::AlreadyOwnedByYou,
            // Gone again meanwhile: taken by someone else a moment ago, as far as this caller knows.
            _ => Created::AlreadyExists,
        })
    }

    /// Removes bucket `name`, its notification configuration and its unfinished multipart
    /// uploads; `false`: no such bucket.
    /// Whether it is empty is the caller's to check (in the backend).
    pub async fn delete_bucket(&self, name: &str) -> Result<bool, DbError> {
        let n = self
            .client()
            .await?
            .execute(
                // Its unfinished multipart uploads go with it (their backend uploads are then
                // orphans, aborted by the nodes' sweep), as a node's copy of the bucket takes its
                // own rows with it.
                "WITH uploads_gone AS (DELETE FROM uploads WHERE bucket = $1)
                 DELETE FROM buckets WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    /// Bucket `name` as PostgreSQL has it.
    pub async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>, DbError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = $1"),
                &[&name],
            )
            .await
            .map_err(pg_error)?;
        row.as_ref().map(bucket_from_row).transpose()
    }

    /// `db::buckets::set`: changes one setting (only its column, so that two nodes changing
    /// two settings at once both keep theirs); `false`: no such bucket.
    pub async fn set_bucket(&self, name: &str, setting: &Setting) -> Result<bool, DbError> {
        let client = self.client().await?;
        let set = |column: &str| format!("UPDATE buckets SET {column} = $2 WHERE name = $1");
        let n = match setting {
            Setting::Acl(acl) => client.execute(&set("acl"), &[&name, acl]).await,
            Setting::Cors(cors) => client.execute(&set("cors"), &[&name, cors]).await,
            Setting::Lifecycle(rules) => client.execute(&set("lifecycle"), &[&name, rules]).await,
            Setting::ActiveContent(on) => {
                client.execute(&set("active_content"), &[&name, on]).await
            }
            Setting::VerifyType(on) => client.execute(&set("verify_type"), &[&name, on]).await,
            Setting::Quota(q) => {
                let n = |v: Option<u64>| v.map(|n| n as i64);
                client
                    .execute(
                        "UPDATE buckets SET quota_max_size = $2, quota_max_objects = $3
                         WHERE name = $1",
                        &[&name, &n(q.max_size), &n(q.max_objects)],
                    )
                    .await
            }
        }
        .map_err(pg_error)?;
        Ok(n > 0)
    }

    /// `db::events::set_notification`: sets (`Some`, JSON) or clears bucket `bucket`'s
    /// notification configuration; `false`: no such bucket.
    pub async fn set_notification(
        &self,
        bucket: &str,
        config: Option<&str>,
    ) -> Result<bool, DbError> {
        let client = self.client().await?;
        let n = match config {
            Some(json) => client
                .execute(
                    "INSERT INTO bucket_notifications (bucket, config)
                     SELECT name, $2 FROM buckets WHERE name = $1
                     ON CONFLICT (bucket) DO UPDATE SET config = EXCLUDED.config",
                    &[&bucket, &json],
                )
                .await
                .map_err(pg_error)?,
            None => {
                client
                    .execute(
                        "DELETE FROM bucket_notifications WHERE bucket = $1",
                        &[&bucket],
                    )
                    .await
                    .map_err(pg_error)?;
                1
            }
        };
        Ok(n > 0)
    }

    /// `db::events::put_webhook`: declares (or replaces) a target.
    pub async fn put_webhook(&self, w: &WebhookRecord) -> Result<(), DbError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO webhooks (name, url, secret, created_at, batch)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE
                 SET url = EXCLUDED.url, secret = EXCLUDED.secret, batch = EXCLUDED.batch",
                &[&w.name, &w.url, &w.secret, &now_millis(), &(w.batch as i32)],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// `db::events::remove_webhook`; `false` when there was none.
    pub async fn remove_webhook(&self, name: &str) -> Result<bool, DbError> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM webhooks WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    /// Every bucket, notification configuration and webhook target, read in one transaction
    /// (one snapshot), sorted as [`crate::db::buckets::local_config`] sorts them.
    pub async fn shared_config(&self) -> Result<SharedConfig, DbError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let buckets = tx
            .query(
                &format!("SELECT {BUCKET_COLUMNS} FROM buckets ORDER BY name COLLATE \"C\""),
                &[],
            )
            .await
            .map_err(pg_error)?;
        let notifications = tx
            .query(
                "SELECT bucket, config FROM bucket_notifications ORDER BY bucket COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let webhooks = tx
            .query(
                "SELECT name, url, secret, batch FROM webhooks ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg_error)?;
        let link_webhooks = tx
            .query(
                &format!(
                    "SELECT id, webhook FROM links WHERE webhook IS NOT NULL AND NOT revoked
                     AND expires_at > {PG_NOW_MS} - $1 ORDER BY id COLLATE \"C\""
                ),
                &[&LINK_WEBHOOK_GRACE_MS],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(SharedConfig {
            link_webhooks: link_webhooks.iter().map(|r| (r.get(0), r.get(1))).collect(),
            buckets: buckets
                .iter()
                .map(bucket_from_row)
                .collect::<Result<_, _>>()?,
            notifications: notifications.iter().map(|r| (r.get(0), r.get(1))).collect(),
            webhooks: webhooks
                .iter()
                .map(|r| WebhookRecord {
                    name: r.get(0),
                    url: r.get(1),
                    secret: r.get(2),
                    batch: r.get::<_, i32>(3) as u32,
                })
                .collect(),
        })
    }

    /// Adds what `local` (a node's own SQLite, before it shared its configuration) has and
    /// PostgreSQL has not, in one transaction: buckets and webhook targets whose names are
    /// free, and the notification configurations of the buckets added. What PostgreSQL has
    /// wins. Returns the names of the buckets added.
    pub async fn seed_config(&self, local: &SharedConfig) -> Result<Vec<String>, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut added = Vec::new();
        for b in &local.buckets {
            if insert_bucket(&tx, b).await? {
                added.push(b.name.clone());
            }
        }
        for (bucket, json) in local
            .notifications
            .iter()
            .filter(|(b, _)| added.contains(b))
        {
            tx.execute(
                "INSERT INTO bucket_notifications (bucket, config) VALUES ($1, $2)",
                &[bucket, json],
            )
            .await
            .map_err(pg_error)?;
        }
        for w in &local.webhooks {
            let batch = w.batch as i32;
            tx.execute(
                INSERT_WEBHOOK,
                &[&w.name, &w.url, &w.secret, &now_millis(), &batch],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(added)
    }
}

/// Inserts bucket `b` unless its name exists ([`INSERT_BUCKET`]); whether it did.
async fn insert_bucket(
    c: &impl deadpool_postgres::GenericClient,
    b: &BucketRecord,
) -> Result<bool, DbError> {
    let n = |v: Option<u64>| v.map(|n| n as i64);
    let (max_size, max_objects) = (n(b.quota.max_size), n(b.quota.max_objects));
    let inserted = c
        .execute(
            INSERT_BUCKET,
            &[
                &b.name,
                &b.owner,
                &b.acl,
                &b.cors,
                &b.created_at,
                &b.active_content,
                &b.verify_type,
                &b.lifecycle,
                &max_size,
                &max_objects,
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(inserted == 1)
}

/// Which open slots [`Pg::settle_slots`] settles.
#[derive(Debug, Clone, Copy)]
pub enum Slots {
    /// This node's own, left by its previous run (at start, before it serves).
    Own,
    /// Those of other nodes whose heartbeat is older than `expiry` (or missing).
    OfDeadNodes { expiry: std::time::Duration },
}

/// An event to write to the shared outbox ([`Pg::insert_events`]): one row per target.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event's id (a link form's slot id): with the target and configuration id, what makes
    /// a second insert of it a no-op.
    pub dedupe: String,
    pub bucket: String,
    pub key: String,
    pub name: String,
    pub fields: EventFields,
    /// (target, configuration id) of every destination that wants it.
    pub targets: Vec<(String, String)>,
}

const OUTBOX_COLUMNS: &str = "id, target, configuration_id, bucket, key, name, state, attempts,
    since, next_at, last_error, created_at, owner, size, etag, content_type, detected_type,
    metadata, principal, source_ip, request_id, link_id";

fn delivery_from_row(r: &tokio_postgres::Row) -> Result<Delivery, DbError> {
    let g = |e| pg_error(e);
    Ok(Delivery {
        id: r.try_get(0).map_err(g)?,
        target: r.try_get(1).map_err(g)?,
        configuration_id: r.try_get(2).map_err(g)?,
        bucket: r.try_get(3).map_err(g)?,
        key: r.try_get(4).map_err(g)?,
        event_name: r.try_get(5).map_err(g)?,
        record: None,
        state: r.try_get(6).map_err(g)?,
        attempts: r.try_get::<_, i32>(7).map_err(g)?.max(0) as u32,
        since: r.try_get(8).map_err(g)?,
        next_at: r.try_get(9).map_err(g)?,
        last_error: r.try_get(10).map_err(g)?,
        created_at: r.try_get(11).map_err(g)?,
        fields: EventFields {
            owner: r.try_get(12).map_err(g)?,
            size: r
                .try_get::<_, Option<i64>>(13)
                .map_err(g)?
                .map(|s| s.max(0) as u64),
            etag: r.try_get(14).map_err(g)?,
            content_type: r.try_get(15).map_err(g)?,
            detected_type: r.try_get(16).map_err(g)?,
            metadata: r.try_get(17).map_err(g)?,
            principal: r.try_get(18).map_err(g)?,
            source_ip: r.try_get(19).map_err(g)?,
            request_id: r.try_get(20).map_err(g)?,
            link_id: r.try_get(21).map_err(g)?,
        },
    })
}

/// Inserts the outbox rows of `events` in `tx` (a row already there is left as it is).
async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[NewEvent],
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO outbox (dedupe, target, configuration_id, bucket, key, name, since,
                     next_at, created_at, owner, size, etag, content_type, detected_type,
                     metadata, principal, source_ip, request_id, link_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7, $8, $9, $10, $11, $12, $13, $14,
                     $15, $16, $17)
                 ON CONFLICT (dedupe, target, configuration_id) DO NOTHING",
        )
        .await
        .map_err(pg_error)?;
    let now = now_millis();
    for e in events {
        let f = &e.fields;
        let size = f.size.map(|s| s as i64);
        for (target, config_id) in &e.targets {
            tx.execute(
                &insert,
                &[
                    &e.dedupe,
                    target,
                    config_id,
                    &e.bucket,
                    &e.key,
                    &e.name,
                    &now,
                    &f.owner,
                    &size,
                    &f.etag,
                    &f.content_type,
                    &f.detected_type,
                    &f.metadata,
                    &f.principal,
                    &f.source_ip,
                    &f.request_id,
                    &f.link_id,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
    }
    Ok(())
}

/// The event outbox the nodes share: the PostgreSQL twin of `db::events`' outbox. Every node's
/// delivery worker takes due rows under a lease (`FOR UPDATE SKIP LOCKED`), so a row is sent by
/// one node at a time, and a stopped node's rows are taken by another once its lease ran out.
impl Pg {
    /// Writes `events` (a row per target; one already there is left as it is) and, when the
    /// change is a link form's, ends its `slot` as stored, all in one transaction.
    pub async fn insert_events(
        &self,
        events: &[NewEvent],
        slot: Option<&str>,
    ) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        if let Some(slot) = slot {
            tx.execute(END_SLOT, &[&slot, &true])
                .await
                .map_err(pg_error)?;
        }
        insert_rows(&tx, events).await?;
        tx.commit().await.map_err(pg_error)
    }

    /// Takes up to `limit` rows due at `now` (this node's clock) for this node until `lease`
    /// from now (PostgreSQL's clock): rows no other node holds a live lease on, each only when
    /// no earlier row of its target and key is still pending (leased, waiting for a retry, or
    /// due), so a key's events go out in order whichever node sends them.
    pub async fn take_events(
        &self,
        now: i64,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<Delivery>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "WITH taken AS (
                     SELECT o.id FROM outbox o
                     WHERE o.state = 'pending' AND o.next_at <= $1
                       AND (o.lease_until IS NULL OR o.lease_until <= {PG_NOW_MS})
                       AND NOT EXISTS (
                           SELECT 1 FROM outbox e
                           WHERE e.state = 'pending' AND e.target = o.target
                             AND e.bucket = o.bucket AND e.key = o.key AND e.id < o.id)
                     ORDER BY o.next_at, o.id LIMIT $2
                     FOR UPDATE OF o SKIP LOCKED)
                 UPDATE outbox SET leased_by = $3, lease_until = {PG_NOW_MS} + $4
                 FROM taken WHERE outbox.id = taken.id
                 RETURNING {}",
                OUTBOX_COLUMNS
                    .split(',')
                    .map(|c| format!("outbox.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await
            .map_err(pg_error)?;
        let node: &str = &self.node;
        let rows = client
            .query(&stmt, &[&now, &limit, &node, &(lease.as_millis() as i64)])
            .await
            .map_err(pg_error)?;
        let mut taken = rows
            .iter()
            .map(delivery_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        taken.sort_by_key(|d| (d.next_at, d.id));
        Ok(taken)
    }

    /// Records the outcomes of this node's attempts: delivered, to retry at `next_at`, or dead.
    /// A row is changed only while this node holds it (another node took it after this node's
    /// lease ran out: that node records it). Returns how many were recorded.
    pub async fn record_events(&self, outcomes: &[(i64, Outcome)]) -> Result<usize, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE outbox SET state = $2, attempts = attempts + 1, last_error = $3,
                     next_at = $4, leased_by = NULL, lease_until = NULL
                 WHERE id = $1 AND state = 'pending' AND leased_by = $5",
            )
            .await
            .map_err(pg_error)?;
        let node: &str = &self.node;
        let now = now_millis();
        let mut recorded = 0;
        for (id, outcome) in outcomes {
            let (state, error, next_at) = match outcome {
                Outcome::Delivered => ("delivered", None, now),
                Outcome::Retry { error, next_at } => ("pending", Some(error.as_str()), *next_at),
                Outcome::Dead { error } => ("dead", Some(error.as_str()), now),
            };
            recorded += client
                .execute(&stmt, &[id, &state, &error, &next_at, &node])
                .await
                .map_err(pg_error)? as usize;
        }
        Ok(recorded)
    }

    /// Forgets the delivered rows recorded before `before` (their dedupe keys are kept as long
    /// as a late second insert of their event may come: the retry window).
    pub async fn prune_events(&self, before: i64) -> Result<(), DbError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND next_at < $1",
                &[&before],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// `db::events::list`: every pending and dead row, or only the dead and those that failed
    /// at least once (`failed`), newest first.
    pub async fn list_events(&self, failed: bool, limit: usize) -> Result<Vec<Delivery>, DbError> {
        let filter = if failed {
            "state = 'dead' OR (state = 'pending' AND attempts > 0)"
        } else {
            "state IN ('pending', 'dead')"
        };
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {filter} ORDER BY id DESC LIMIT $1"
                ),
                &[&(limit as i64)],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// `db::events::retry`: a pending or dead row due now, with a fresh retry window (and no
    /// lease: an attempt in flight may still record its outcome over it). `false`: no such row.
    pub async fn retry_event(&self, id: i64) -> Result<bool, DbError> {
        let now = now_millis();
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE outbox SET state = 'pending', since = $2, next_at = $2
                 WHERE id = $1 AND state IN ('pending', 'dead')",
                &[&id, &now],
            )
            .await
            .map_err(pg_error)?;
        Ok(n > 0)
    }

    /// Rows still pending, of every node (the queue depth metric).
    pub async fn pending_events(&self) -> Result<u64, DbError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM outbox WHERE state = 'pending'", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}
