//! Events and webhooks: declared targets, bucket notification configurations, link webhooks,
//! and the outbox (`events`, one row per change, and `deliveries`, one per event and target).

use rusqlite::{Connection, OptionalExtension, params};

use super::{DbError, now_millis};

/// A webhook target the operator declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub name: String,
    pub url: String,
    pub secret: String,
}

/// Declares (or replaces) a target.
pub fn put_webhook(conn: &Connection, w: &WebhookRecord) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO webhooks (name, url, secret, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(name) DO UPDATE SET url = excluded.url, secret = excluded.secret",
        params![w.name, w.url, w.secret, now_millis()],
    )?;
    Ok(())
}

/// Removes a target; `false` when there was none.
pub fn remove_webhook(conn: &Connection, name: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM webhooks WHERE name = ?1", [name])? > 0)
}

pub fn webhooks(conn: &Connection) -> Result<Vec<WebhookRecord>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT name, url, secret FROM webhooks ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(WebhookRecord {
            name: r.get(0)?,
            url: r.get(1)?,
            secret: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets (`Some`, JSON) or clears a bucket's notification configuration.
pub fn set_notification(
    conn: &Connection,
    bucket: &str,
    config: Option<&str>,
) -> Result<(), DbError> {
    match config {
        Some(json) => conn.execute(
            "INSERT INTO bucket_notifications (bucket, config) VALUES (?1, ?2)
             ON CONFLICT(bucket) DO UPDATE SET config = excluded.config",
            params![bucket, json],
        )?,
        None => conn.execute(
            "DELETE FROM bucket_notifications WHERE bucket = ?1",
            [bucket],
        )?,
    };
    Ok(())
}

pub fn notification(conn: &Connection, bucket: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_row(
            "SELECT config FROM bucket_notifications WHERE bucket = ?1",
            [bucket],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every bucket's configuration: (bucket, JSON).
pub fn notifications(conn: &Connection) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT bucket, config FROM bucket_notifications")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_link_webhook(conn: &Connection, link_id: &str, target: &str) -> Result<(), DbError> {
    conn.execute(
        "INSERT OR REPLACE INTO link_webhooks (link_id, target) VALUES (?1, ?2)",
        params![link_id, target],
    )?;
    Ok(())
}

/// Every link's target: (link id, target name).
pub fn link_webhooks(conn: &Connection) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT link_id, target FROM link_webhooks")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every bucket's owner: (bucket, owner). The event cache keeps them, so that a record naming
/// its bucket's owner is built before the transaction that stores it.
pub fn bucket_owners(conn: &Connection) -> Result<Vec<(String, String)>, DbError> {
    let mut stmt = conn.prepare_cached("SELECT name, owner FROM buckets")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Inserts one event and a pending delivery per `(target, configuration id)`; returns the
/// event's id (its sequencer). Runs inside the transaction that changes the object.
pub fn insert(
    conn: &Connection,
    bucket: &str,
    key: &str,
    name: &str,
    record: &str,
    targets: &[(String, String)],
) -> Result<i64, DbError> {
    let now = now_millis();
    conn.prepare_cached(
        "INSERT INTO events (bucket, key, name, record, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![bucket, key, name, record, now])?;
    let id = conn.last_insert_rowid();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO deliveries (event_id, target, configuration_id, bucket, key, since, next_at,
             updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
    )?;
    for (target, config_id) in targets {
        stmt.execute(params![id, target, config_id, bucket, key, now])?;
    }
    Ok(id)
}

/// A delivery with what the worker needs to send it, or an operator to see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    pub target: String,
    pub configuration_id: String,
    pub bucket: String,
    pub key: String,
    pub event_name: String,
    pub record: String,
    pub state: String,
    pub attempts: u32,
    /// Start of its retry window: creation, or the operator's last retry.
    pub since: i64,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.target, d.configuration_id, d.bucket, d.key,
    e.name, e.record, d.state, d.attempts, d.since, d.next_at, d.last_error, e.created_at";

fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        target: r.get(2)?,
        configuration_id: r.get(3)?,
        bucket: r.get(4)?,
        key: r.get(5)?,
        event_name: r.get(6)?,
        record: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get::<_, i64>(9)? as u32,
        since: r.get(10)?,
        next_at: r.get(11)?,
        last_error: r.get(12)?,
        created_at: r.get(13)?,
    })
}

/// Up to `limit` of `target`'s pending deliveries due at `now`, longest due first, each the
/// first pending one of its (target, bucket, key): a later change of a key waits for the earlier
/// one, so a receiver sees a key's events in order (keys between them need no order).
///
/// One target's lane reads it: it walks the `deliveries_lane (target, next_at)` index within
/// that target and stops after `limit`, so its cost grows neither with the backlog nor with
/// other targets' (a silent receiver's thousands of pending rows are never visited by a healthy
/// one's reads), and deliveries waiting for a retry are not visited either.
pub fn due(
    conn: &Connection,
    target: &str,
    now: i64,
    limit: usize,
) -> Result<Vec<Delivery>, DbError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} {DUE}"))?;
    let rows = stmt.query_map(params![target, now, limit as i64], delivery)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const DUE: &str = "FROM deliveries d JOIN events e ON e.id = d.event_id
    WHERE d.target = ?1 AND d.state = 'pending' AND d.next_at <= ?2
      AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.state = 'pending'
          AND p.target = d.target AND p.bucket = d.bucket AND p.key = d.key AND p.id < d.id)
    ORDER BY d.next_at, d.id LIMIT ?3";

/// The targets pending deliveries name (each lane's target, and any no longer declared).
pub fn pending_targets(conn: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT target FROM deliveries WHERE state = 'pending'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Try again at `next_at` (milliseconds).
    Retry {
        error: String,
        next_at: i64,
    },
    /// Out of time: no more attempts.
    Dead {
        error: String,
    },
}

pub fn record_outcome(conn: &Connection, id: i64, outcome: &Outcome) -> Result<(), DbError> {
    let now = now_millis();
    let (state, error, next_at) = match outcome {
        Outcome::Delivered => ("delivered", None, now),
        Outcome::Retry { error, next_at } => ("pending", Some(error.as_str()), *next_at),
        Outcome::Dead { error } => ("dead", Some(error.as_str()), now),
    };
    conn.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = attempts + 1, last_error = ?3, next_at = ?4,
             updated_at = ?5
         WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, state, error, next_at, now])?;
    Ok(())
}

/// Deliveries for an operator, newest first: every one, or only the dead and those that failed
/// at least once (`failed`).
pub fn list(conn: &Connection, failed: bool, limit: usize) -> Result<Vec<Delivery>, DbError> {
    let filter = if failed {
        "WHERE d.state = 'dead' OR (d.state = 'pending' AND d.attempts > 0)"
    } else {
        ""
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id
         {filter} ORDER BY d.id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], delivery)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts a delivery back in the queue now, with a fresh retry window. `false`: no such delivery.
pub fn retry(conn: &Connection, id: i64) -> Result<bool, DbError> {
    let now = now_millis();
    Ok(conn.execute(
        "UPDATE deliveries SET state = 'pending', since = ?2, next_at = ?2, updated_at = ?2
         WHERE id = ?1",
        params![id, now],
    )? > 0)
}

/// Deliveries still pending (the queue depth metric).
pub fn pending(conn: &Connection) -> Result<u64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM deliveries WHERE state = 'pending'",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

/// Forgets delivered deliveries older than `before`, and events no delivery needs any more.
pub fn prune(conn: &Connection, before: i64) -> Result<usize, DbError> {
    let n = conn.execute(
        "DELETE FROM deliveries WHERE state = 'delivered' AND updated_at < ?1",
        [before],
    )?;
    conn.execute(
        "DELETE FROM events WHERE created_at < ?1
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        [before],
    )?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open_migrated(&dir.path().join("postgate.db")).unwrap();
        (dir, conn)
    }

    /// A lane's read walks an index in the order it takes rows, within its target, and stops
    /// after its window: no sort of the backlog (which cost 23 ms per read at 5,000 pending).
    #[test]
    fn the_due_read_does_not_sort_the_backlog() {
        let (_dir, conn) = migrated();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {DELIVERY_COLUMNS} {DUE}"
            ))
            .unwrap()
            .query_map(params!["t", 1, 32], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("deliveries_lane") && p.contains("target=?")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }

    #[test]
    fn due_takes_a_keys_first_pending_change_and_skips_those_waiting_for_a_retry() {
        let (_dir, conn) = migrated();
        let t = |n: &str| vec![(n.to_owned(), "cfg".to_owned())];
        let a1 = insert(&conn, "b", "a", "ObjectCreated:Put", "{}", &t("h")).unwrap();
        let b1 = insert(&conn, "b", "b", "ObjectCreated:Put", "{}", &t("h")).unwrap();
        let a2 = insert(&conn, "b", "a", "ObjectRemoved:Delete", "{}", &t("h")).unwrap();
        let now = now_millis() + 1;
        let ids = |v: Vec<Delivery>| v.iter().map(|d| d.event_id).collect::<Vec<_>>();
        assert_eq!(ids(due(&conn, "h", now, 10).unwrap()), [a1, b1]);
        // Another target's lane sees none of them.
        assert!(due(&conn, "other", now, 10).unwrap().is_empty());
        // `a`'s first change fails: its second waits behind it, `b` goes on.
        let first = due(&conn, "h", now, 10).unwrap()[0].id;
        let retry = Outcome::Retry {
            error: "500".into(),
            next_at: now + 60_000,
        };
        record_outcome(&conn, first, &retry).unwrap();
        assert_eq!(ids(due(&conn, "h", now, 10).unwrap()), [b1]);
        record_outcome(&conn, first, &Outcome::Delivered).unwrap();
        assert_eq!(ids(due(&conn, "h", now, 10).unwrap()), [b1, a2]);
    }
}
