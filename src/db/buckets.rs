//! Buckets, their owner, canned ACL, CORS document and the grants other keys hold on them.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DbError, now_millis};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRecord {
    pub name: String,
    pub owner: String,
    pub acl: String,
    pub cors: Option<String>,
    pub created_at: i64,
    /// The owner lets browsers run what this bucket serves: no `Content-Security-Policy: sandbox`
    /// on HTML, SVG, XML or scripts (see `s3::object`). Off unless the operator turns it on.
    pub active_content: bool,
    /// Every upload's bytes must match its declared Content-Type (`sniff::check`): PUT, POST,
    /// multipart. Off unless the operator turns it on (`postgate bucket verify-type`).
    pub verify_type: bool,
    /// The lifecycle rules (JSON of `objects::lifecycle::Rules`), if any.
    pub lifecycle: Option<String>,
    /// The bucket's quota (`postgate bucket quota`).
    pub quota: super::quota::Quota,
}

/// What a non-owner key may do on a bucket, as granted by `postgate bucket allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Read,
    Write,
    ReadWrite,
}

impl Perm {
    pub fn parse(s: &str) -> Option<Perm> {
        match s {
            "read" => Some(Perm::Read),
            "write" => Some(Perm::Write),
            "readwrite" => Some(Perm::ReadWrite),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::ReadWrite => "readwrite",
        }
    }
    pub fn can_read(self) -> bool {
        matches!(self, Perm::Read | Perm::ReadWrite)
    }
    pub fn can_write(self) -> bool {
        matches!(self, Perm::Write | Perm::ReadWrite)
    }
}

const COLUMNS: &str = "name, owner, acl, cors, created_at, active_content, verify_type,
    lifecycle, quota_max_size, quota_max_objects";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BucketRecord> {
    Ok(BucketRecord {
        name: r.get(0)?,
        owner: r.get(1)?,
        acl: r.get(2)?,
        cors: r.get(3)?,
        created_at: r.get(4)?,
        active_content: r.get(5)?,
        verify_type: r.get(6)?,
        lifecycle: r.get(7)?,
        quota: super::quota::Quota {
            max_size: r.get::<_, Option<i64>>(8)?.map(|n| n as u64),
            max_objects: r.get::<_, Option<i64>>(9)?.map(|n| n as u64),
        },
    })
}

pub enum Created {
    Created,
    AlreadyOwnedByYou,
    AlreadyExists,
}

pub fn create(conn: &Connection, name: &str, owner: &str, acl: &str) -> Result<Created, DbError> {
    if let Some(existing) = get(conn, name)? {
        return Ok(if existing.owner == owner {
            Created::AlreadyOwnedByYou
        } else {
            Created::AlreadyExists
        });
    }
    conn.execute(
        "INSERT INTO buckets (name, owner, acl, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, owner, acl, now_millis()],
    )?;
    Ok(Created::Created)
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<BucketRecord>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM buckets WHERE name = ?1"))?
        .query_row([name], from_row)
        .optional()?)
}

/// The bucket and the grant `access_key` holds on it, in one query (every request needs both).
pub fn get_with_grant(
    conn: &Connection,
    name: &str,
    access_key: &str,
) -> Result<Option<(BucketRecord, Option<Perm>)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT b.name, b.owner, b.acl, b.cors, b.created_at, b.active_content, b.verify_type,
             b.lifecycle, b.quota_max_size, b.quota_max_objects, g.perm
         FROM buckets b LEFT JOIN grants g ON g.bucket = b.name AND g.access_key = ?2
         WHERE b.name = ?1",
    )?;
    Ok(stmt
        .query_row(params![name, access_key], |r| {
            let perm: Option<String> = r.get(10)?;
            Ok((from_row(r)?, perm.as_deref().and_then(Perm::parse)))
        })
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<BucketRecord>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM buckets ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Buckets `access_key` owns or holds a grant on.
pub fn list_visible(conn: &Connection, access_key: &str) -> Result<Vec<BucketRecord>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT name, owner, acl, cors, created_at, active_content, verify_type, lifecycle,
             quota_max_size, quota_max_objects FROM buckets
         WHERE owner = ?1 OR name IN (SELECT bucket FROM grants WHERE access_key = ?1)
         ORDER BY name",
    )?;
    let rows = stmt.query_map([access_key], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub enum Deleted {
    Deleted,
    NotEmpty,
    NotFound,
}

pub fn delete(conn: &Connection, name: &str) -> Result<Deleted, DbError> {
    if get(conn, name)?.is_none() {
        return Ok(Deleted::NotFound);
    }
    let has_objects: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket = ?1)
             OR EXISTS (SELECT 1 FROM object_extras WHERE bucket = ?1)
             OR EXISTS (SELECT 1 FROM uploads WHERE bucket = ?1)",
        [name],
        |r| r.get(0),
    )?;
    if has_objects {
        return Ok(Deleted::NotEmpty);
    }
    conn.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
    Ok(Deleted::Deleted)
}

pub fn allow(
    conn: &Connection,
    bucket: &str,
    access_key: &str,
    perm: Perm,
) -> Result<bool, DbError> {
    if get(conn, bucket)?.is_none() {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO grants (bucket, access_key, perm) VALUES (?1, ?2, ?3)
         ON CONFLICT(bucket, access_key) DO UPDATE SET perm = excluded.perm",
        params![bucket, access_key, perm.as_str()],
    )?;
    Ok(true)
}

pub fn set_acl(conn: &Connection, bucket: &str, acl: &str) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE buckets SET acl = ?2 WHERE name = ?1",
        params![bucket, acl],
    )? > 0)
}

/// Whether browsers may run what the bucket serves (`postgate bucket set NAME --active-content`).
pub fn set_active_content(conn: &Connection, bucket: &str, on: bool) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE buckets SET active_content = ?2 WHERE name = ?1",
        params![bucket, on],
    )? > 0)
}

/// Whether every upload's bytes must match its declared type
/// (`postgate bucket verify-type NAME on|off`).
pub fn set_verify_type(conn: &Connection, bucket: &str, on: bool) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE buckets SET verify_type = ?2 WHERE name = ?1",
        params![bucket, on],
    )? > 0)
}

pub fn set_cors(conn: &Connection, bucket: &str, cors: Option<&str>) -> Result<bool, DbError> {
    Ok(conn.execute(
        "UPDATE buckets SET cors = ?2 WHERE name = ?1",
        params![bucket, cors],
    )? > 0)
}

/// With a shared control database (`--control-db`): makes this node's `grants` the shared ones,
/// for the buckets this node has (a grant on a bucket made here later arrives with the next
/// call). Writes only when they differ; returns whether they did.
pub fn replace_grants(
    conn: &Connection,
    shared: &[(String, String, Perm)],
) -> Result<bool, DbError> {
    let mut current: Vec<(String, String, String)> = conn
        .prepare("SELECT bucket, access_key, perm FROM grants")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut wanted = Vec::new();
    for (bucket, key, perm) in shared {
        if get(conn, bucket)?.is_some() {
            wanted.push((bucket.clone(), key.clone(), perm.as_str().to_owned()));
        }
    }
    current.sort();
    wanted.sort();
    if current == wanted {
        return Ok(false);
    }
    conn.execute("DELETE FROM grants", [])?;
    for (bucket, key, perm) in &wanted {
        conn.execute(
            "INSERT INTO grants (bucket, access_key, perm) VALUES (?1, ?2, ?3)",
            params![bucket, key, perm],
        )?;
    }
    Ok(true)
}

/// One setting of a bucket, as one write changes it ([`set`], and `control::Pg::set_bucket`
/// with a shared control database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// The canned ACL.
    Acl(String),
    /// The CORS rules (JSON of `cors::CorsConfig`), or none.
    Cors(Option<String>),
    /// The lifecycle rules (JSON of `objects::lifecycle::Rules`), or none.
    Lifecycle(Option<String>),
    ActiveContent(bool),
    VerifyType(bool),
    Quota(super::quota::Quota),
}

/// Changes one setting of `bucket`; `false`: no such bucket.
pub fn set(conn: &Connection, bucket: &str, setting: &Setting) -> Result<bool, DbError> {
    match setting {
        Setting::Acl(acl) => set_acl(conn, bucket, acl),
        Setting::Cors(cors) => set_cors(conn, bucket, cors.as_deref()),
        Setting::Lifecycle(rules) => super::lifecycle::set(conn, bucket, rules.as_deref()),
        Setting::ActiveContent(on) => set_active_content(conn, bucket, *on),
        Setting::VerifyType(on) => set_verify_type(conn, bucket, *on),
        Setting::Quota(quota) => super::quota::set(conn, bucket, *quota),
    }
}

/// The configuration a shared control database (`--control-db`) holds for every node: the
/// buckets with their settings, their notification configurations and the webhook targets,
/// each sorted by name (as [`local_config`] and `control::Pg::shared_config` read them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedConfig {
    pub buckets: Vec<BucketRecord>,
    /// (bucket, JSON of `events::rules::NotificationConfig`).
    pub notifications: Vec<(String, String)>,
    pub webhooks: Vec<super::events::WebhookRecord>,
    /// (link id, target name) of the links with a webhook, by link id.
    pub link_webhooks: Vec<(String, String)>,
}

/// This SQLite's buckets, notification configurations and webhook targets.
pub fn local_config(conn: &Connection) -> Result<SharedConfig, DbError> {
    let mut notifications = super::events::notifications(conn)?;
    notifications.sort();
    let mut link_webhooks = super::events::link_webhooks(conn)?;
    link_webhooks.sort();
    Ok(SharedConfig {
        buckets: list(conn)?,
        notifications,
        webhooks: super::events::webhooks(conn)?,
        link_webhooks,
    })
}

/// With a shared control database: makes this node's buckets, their settings, notification
/// configurations and webhook targets the shared ones (a copy, because every bucket read joins
/// SQLite tables). Writes only what differs; returns whether anything did. A bucket gone from
/// the shared set takes with it this node's unfinished multipart uploads of it (their parts in
/// the backend are then orphans, aborted by `AppState::sweep_backend_uploads`) and its
/// `object_extras` rows.
pub fn replace_shared(conn: &Connection, shared: &SharedConfig) -> Result<bool, DbError> {
    let local = local_config(conn)?;
    if local == *shared {
        return Ok(false);
    }
    let wanted: std::collections::HashMap<&str, &BucketRecord> = shared
        .buckets
        .iter()
        .map(|b| (b.name.as_str(), b))
        .collect();
    for gone in local
        .buckets
        .iter()
        .filter(|b| !wanted.contains_key(b.name.as_str()))
    {
        conn.execute("DELETE FROM uploads WHERE bucket = ?1", [&gone.name])?;
        conn.execute("DELETE FROM object_extras WHERE bucket = ?1", [&gone.name])?;
        conn.execute("DELETE FROM buckets WHERE name = ?1", [&gone.name])?;
    }
    let had: std::collections::HashMap<&str, &BucketRecord> =
        local.buckets.iter().map(|b| (b.name.as_str(), b)).collect();
    for b in &shared.buckets {
        if had.get(b.name.as_str()) == Some(&b) {
            continue;
        }
        conn.execute(
            &format!(
                "INSERT INTO buckets ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, acl = excluded.acl,
                     cors = excluded.cors, created_at = excluded.created_at,
                     active_content = excluded.active_content,
                     verify_type = excluded.verify_type, lifecycle = excluded.lifecycle,
                     quota_max_size = excluded.quota_max_size,
                     quota_max_objects = excluded.quota_max_objects"
            ),
            params![
                b.name,
                b.owner,
                b.acl,
                b.cors,
                b.created_at,
                b.active_content,
                b.verify_type,
                b.lifecycle,
                b.quota.max_size.map(|n| n as i64),
                b.quota.max_objects.map(|n| n as i64)
            ],
        )?;
    }
    if local.notifications != shared.notifications {
        conn.execute("DELETE FROM bucket_notifications", [])?;
        for (bucket, json) in &shared.notifications {
            super::events::set_notification(conn, bucket, Some(json))?;
        }
    }
    if local.webhooks != shared.webhooks {
        conn.execute("DELETE FROM webhooks", [])?;
        for w in &shared.webhooks {
            super::events::put_webhook(conn, w)?;
        }
    }
    if local.link_webhooks != shared.link_webhooks {
        conn.execute("DELETE FROM link_webhooks", [])?;
        for (link_id, target) in &shared.link_webhooks {
            super::events::set_link_webhook(conn, link_id, target)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::events::WebhookRecord;

    /// A node's copy takes the shared configuration, writes nothing when it is already the
    /// same, and loses a bucket gone from it (with its notification configuration).
    #[test]
    fn the_copy_is_written_only_when_it_differs() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open_migrated(&dir.path().join("postgate.db")).unwrap();
        create(&conn, "mine", "AK", "private").unwrap();
        let bucket = BucketRecord {
            name: "shared".into(),
            owner: "AK".into(),
            acl: "public-read".into(),
            cors: Some("{}".into()),
            created_at: 7,
            active_content: true,
            verify_type: false,
            lifecycle: None,
            quota: crate::db::quota::Quota {
                max_size: Some(10),
                max_objects: None,
            },
        };
        let shared = SharedConfig {
            buckets: vec![bucket],
            notifications: vec![("shared".into(), "{\"queues\":[]}".into())],
            webhooks: vec![WebhookRecord {
                name: "hook".into(),
                url: "http://127.0.0.1:9/h".into(),
                secret: "s3cret".into(),
                batch: 7,
            }],
            link_webhooks: vec![("link1".into(), "hook".into())],
        };
        assert!(replace_shared(&conn, &shared).unwrap());
        assert_eq!(local_config(&conn).unwrap(), shared);
        assert!(!replace_shared(&conn, &shared).unwrap());
        let empty = SharedConfig::default();
        assert!(replace_shared(&conn, &empty).unwrap());
        assert_eq!(local_config(&conn).unwrap(), empty);
    }

    #[test]
    fn a_webhook_records_debug_hides_its_secret() {
        let w = WebhookRecord {
            name: "hook".into(),
            url: "https://example.test/h".into(),
            secret: "s3cret-value".into(),
            batch: 1,
        };
        let shown = format!(
            "{w:?} {:?}",
            SharedConfig {
                webhooks: vec![w.clone()],
                ..SharedConfig::default()
            }
        );
        assert!(
            !shown.contains("s3cret-value") && shown.contains("hook"),
            "{shown}"
        );
    }
}
