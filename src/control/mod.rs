//! The control state: where upload links and their file counters live. One node keeps them in
//! its SQLite (`db::links`, the default); several nodes in front of one S3 cluster share them in
//! PostgreSQL (`--control-db`, docs/cluster.md sections 3-4), the room's `pg`, the PostgreSQL
//! twin of `db::links`. [`Links`] is the one place that chooses: the areas and the core call it,
//! never `db::links` for a link's row or its counter.
//!
//! With PostgreSQL, each node still keeps a copy of every link it serves in its SQLite
//! ([`crate::db::links::mirror`], refreshed whenever the link is read through [`Links`]), because
//! what stays in SQLite this round (multipart uploads' link checks, quotas, lifecycle expiry)
//! joins on it.
//! PostgreSQL's row is the truth for the link's terms, its revocation and `uploaded_files`.
//!
//! With PostgreSQL, `pg` also keeps the shared access keys and grants (read by
//! `AppState::find_key`, copied into each node's SQLite `grants`, invalidated by `NOTIFY`) and
//! the nodes' heartbeats, by which any node settles the link slots of a node that stopped, and
//! the buckets with their settings, notification configurations and webhook targets (copied
//! into each node's SQLite by `AppState::refresh_config`, invalidated by `NOTIFY`).
//!
//! [`Uploads`] is the same switch for multipart uploads in progress and their parts: with
//! PostgreSQL an upload begun on one node continues on any other (`uploads.rs`).

pub mod pg;
pub mod uploads;

use crate::db::links::{LinkRecord, Reservation};
use crate::db::{Db, DbError};
pub use pg::{OpenSlot, Pg, Slots};
pub use uploads::Uploads;

/// Where links and their counters live.
#[derive(Clone)]
pub enum Links {
    /// This node's SQLite: one node.
    Local(Db),
    /// The control database the nodes share, with this node's SQLite copy of the rows.
    Shared { pg: Pg, db: Db },
}

impl Links {
    /// The shared control database, if links live there.
    pub fn shared(&self) -> Option<&Pg> {
        match self {
            Links::Local(_) => None,
            Links::Shared { pg, .. } => Some(pg),
        }
    }

    /// The link behind `token`.
    pub async fn get(&self, token: &str) -> Result<Option<LinkRecord>, DbError> {
        match self {
            Links::Local(db) => {
                let t = token.to_owned();
                db.read(move |c| crate::db::links::get(c, &t)).await
            }
            Links::Shared { pg, db } => mirrored(db, pg.get(token).await?).await,
        }
    }

    /// The link with public id `id`.
    pub async fn get_by_id(&self, id: &str) -> Result<Option<LinkRecord>, DbError> {
        match self {
            Links::Local(db) => {
                let id = id.to_owned();
                db.read(move |c| crate::db::links::get_by_id(c, &id)).await
            }
            Links::Shared { pg, db } => mirrored(db, pg.get_by_id(id).await?).await,
        }
    }

    /// Every link, oldest first.
    pub async fn list(&self) -> Result<Vec<LinkRecord>, DbError> {
        match self {
            Links::Local(db) => db.read(crate::db::links::list).await,
            Links::Shared { pg, .. } => pg.list().await,
        }
    }

    /// Stores a new link, and the webhook target it names. The webhook row is this node's
    /// (`link_webhooks`, read by `events`); PostgreSQL keeps its name with the link.
    pub async fn create(&self, link: &LinkRecord, webhook: Option<String>) -> Result<(), DbError> {
        let mirror = match self {
            Links::Local(_) => false,
            Links::Shared { pg, .. } => {
                pg.insert(link, webhook.as_deref()).await?;
                true
            }
        };
        let stored = link.clone();
        let db = match self {
            Links::Local(db) | Links::Shared { db, .. } => db,
        };
        db.write(move |c| {
            if mirror {
                crate::db::links::mirror(c, &stored)?;
            } else {
                crate::db::links::insert(c, &stored)?;
            }
            match &webhook {
                Some(name) => crate::db::events::set_link_webhook(c, &stored.id, name),
                None => Ok(()),
            }
        })
        .await
    }

    /// Marks the link revoked where the nodes see it (PostgreSQL); the node's own row, and the
    /// multipart uploads it aborts, are `objects::link::revoke`'s, on every backend. `false`:
    /// PostgreSQL has no such link.
    pub async fn revoke_shared(&self, id: &str) -> Result<bool, DbError> {
        match self {
            Links::Local(_) => Ok(true),
            Links::Shared { pg, .. } => Ok(pg.revoke(id).await?.is_some()),
        }
    }

    /// With a shared control database: takes a slot of link `id` there for a multipart upload
    /// (`None`: links are this node's, and the upload's own transaction takes the slot).
    /// Such a slot stays taken when the upload is aborted later (phase 2: slot rows for
    /// multipart uploads, docs/cluster.md section 4): never more than `max_files`, at worst fewer.
    pub async fn reserve_upload_shared(&self, id: &str) -> Result<Option<Reservation>, DbError> {
        match self {
            Links::Local(_) => Ok(None),
            Links::Shared { pg, .. } => Ok(Some(pg.reserve_upload(id).await?)),
        }
    }

    /// Gives back a slot [`Links::reserve_upload_shared`] took for an upload never made.
    pub async fn release_upload_shared(&self, id: &str) -> Result<(), DbError> {
        match self {
            Links::Local(_) => Ok(()),
            Links::Shared { pg, .. } => pg.release_upload(id).await,
        }
    }

    /// Takes a slot of link `link_id` for a form upload of `bucket/key`, recorded until
    /// [`Links::end_form_slot`] (`db::links::reserve_form`).
    pub async fn reserve_form(
        &self,
        link_id: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Result<String, Reservation>, DbError> {
        match self {
            Links::Local(db) => {
                let (id, b, k) = (link_id.to_owned(), bucket.to_owned(), key.to_owned());
                db.write(move |c| crate::db::links::reserve_form(c, &id, &b, &k))
                    .await
            }
            Links::Shared { pg, .. } => pg.reserve_form(link_id, bucket, key).await,
        }
    }

    /// Ends a form's slot: kept when `stored`, else given back (at most once).
    pub async fn end_form_slot(&self, slot: &str, stored: bool) -> Result<(), DbError> {
        match self {
            Links::Local(db) => {
                let slot = slot.to_owned();
                db.write(move |c| crate::db::links::end_form_slot(c, &slot, stored))
                    .await
            }
            Links::Shared { pg, .. } => pg.end_form_slot(slot, stored).await,
        }
    }
}

/// `link` read from PostgreSQL, after refreshing this node's SQLite copy of it when its terms
/// changed (a write only then: reading a link costs no SQLite write in the steady state).
async fn mirrored(db: &Db, link: Option<LinkRecord>) -> Result<Option<LinkRecord>, DbError> {
    let Some(link) = link else { return Ok(None) };
    let id = link.id.clone();
    let local = db
        .read(move |c| crate::db::links::get_by_id(c, &id))
        .await?;
    if !local.is_some_and(|l| crate::db::links::same_terms(&l, &link)) {
        let copy = link.clone();
        db.write(move |c| crate::db::links::mirror(c, &copy))
            .await?;
    }
    Ok(Some(link))
}
