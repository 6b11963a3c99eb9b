//! Events and webhooks: declared targets, bucket notification configurations, link webhooks,
//! and the outbox (`outbox`, one row per event and target).

use rusqlite::{Connection, OptionalExtension, params};

use super::{DbError, now_millis};

/// A webhook target the operator declared. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub name: String,
    pub url: String,
    pub secret: String,
    /// The most records one POST carries when several deliveries are due (1-100).
    pub batch: u32,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("batch", &self.batch)
            .finish()
    }
}

/// Declares (or replaces) a target.
pub fn put_webhook(conn: &Connection, w: &WebhookRecord) -> Result<(), DbError> {
    conn.execute(
        "INSERT INTO webhooks (name, url, secret, created_at, batch) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(name) DO UPDATE
         SET url = excluded.url, secret = excluded.secret, batch = excluded.batch",
        params![w.name, w.url, w.secret, now_millis(), w.batch],
    )?;
    Ok(())
}

/// Removes a target; `false` when there was none.
pub fn remove_webhook(conn: &Connection, name: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM webhooks WHERE name = ?1", [name])? > 0)
}

pub fn webhooks(conn: &Connection) -> Result<Vec<WebhookRecord>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT name, url, secret, batch FROM webhooks ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(WebhookRecord {
            name: r.get(0)?,
            url: r.get(1)?,
            secret: r.get(2)?,
            batch: r.get(3)?,
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

/// What an outbox row keeps of its event, to render its S3 record from when it is sent
/// (`events::message::render`): ~250 bytes, where the rendered record was ~1.1 KB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFields {
    /// The bucket's owner.
    pub owner: String,
    /// `None` for a removal (no size, eTag, types nor metadata).
    pub size: Option<u64>,
    /// Quoted, as stored with the object.
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub detected_type: Option<String>,
    /// `x-amz-meta-*` pairs as a JSON array of `[name, value]`; `None` when there are none.
    pub metadata: Option<String>,
    pub principal: String,
    pub source_ip: String,
    pub request_id: String,
    pub link_id: Option<String>,
}

/// Inserts a pending delivery of the event per `(target, configuration id)`. Runs inside the
/// transaction that changes the object.
pub fn insert(
    conn: &Connection,
    bucket: &str,
    key: &str,
    name: &str,
    fields: &EventFields,
    targets: &[(String, String)],
) -> Result<(), DbError> {
    let now = now_millis();
    let mut stmt = conn.prepare_cached(INSERT)?;
    let f = fields;
    for (target, config_id) in targets {
        stmt.execute(params![
            target,
            config_id,
            bucket,
            key,
            name,
            now,
            f.owner,
            f.size.map(|s| s as i64),
            f.etag,
            f.content_type,
            f.detected_type,
            f.metadata,
            f.principal,
            f.source_ip,
            f.request_id,
            f.link_id,
        ])?;
    }
    Ok(())
}

const INSERT: &str = "INSERT INTO outbox (target, configuration_id, bucket, key, name, record,
        since, next_at, created_at, owner, size, etag, content_type, detected_type, metadata,
        principal, source_ip, request_id, link_id)
    VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// `next_at` of a row parked behind an earlier pending row of its key (its lane unparks it when
/// that one is delivered or dead).
pub const PARKED: i64 = i64::MAX;

/// A delivery with what the worker needs to send it, or an operator to see it. Its id is also
/// its event's sequencer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub target: String,
    pub configuration_id: String,
    pub bucket: String,
    pub key: String,
    pub event_name: String,
    /// The rendered record of a row written before migration 0017 (sent as it is); `None` for
    /// a row since, whose record is rendered from `fields`.
    pub record: Option<String>,
    pub fields: EventFields,
    pub state: String,
    pub attempts: u32,
    /// Start of its retry window: creation, or the operator's last retry.
    pub since: i64,
    pub next_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, target, configuration_id, bucket, key, name, record, state,
    attempts, since, next_at, last_error, created_at, owner, size, etag, content_type,
    detected_type, metadata, principal, source_ip, request_id, link_id";

fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        target: r.get(1)?,
        configuration_id: r.get(2)?,
        bucket: r.get(3)?,
        key: r.get(4)?,
        event_name: r.get(5)?,
        record: Some(r.get::<_, String>(6)?).filter(|r| !r.is_empty()),
        state: r.get(7)?,
        attempts: r.get::<_, i64>(8)? as u32,
        since: r.get(9)?,
        next_at: r.get(10)?,
        last_error: r.get(11)?,
        created_at: r.get(12)?,
        fields: EventFields {
            owner: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
            size: r.get::<_, Option<i64>>(14)?.map(|s| s as u64),
            etag: r.get(15)?,
            content_type: r.get(16)?,
            detected_type: r.get(17)?,
            metadata: r.get(18)?,
            principal: r.get::<_, Option<String>>(19)?.unwrap_or_default(),
            source_ip: r.get::<_, Option<String>>(20)?.unwrap_or_default(),
            request_id: r.get::<_, Option<String>>(21)?.unwrap_or_default(),
            link_id: r.get(22)?,
        },
    })
}

/// Up to `limit` of `target`'s pending deliveries due at `now`, longest due first. The lane
/// keeps a key's order itself (it parks a key's later rows while an earlier one is pending).
///
/// One target's lane reads it: it walks the `outbox_lane (target, next_at)` index within that
/// target and stops after `limit`, so its cost grows neither with the backlog nor with other
/// targets' (a silent receiver's thousands of pending rows are never visited by a healthy
/// one's reads), and deliveries waiting for a retry or parked are not visited either.
///
/// `after` (next_at, id): only rows after that one in this order. The lane passes the last row
/// it took while its attempts are in flight, so that it does not read them (and their records)
/// again on each new event.
pub fn due(
    conn: &Connection,
    target: &str,
    now: i64,
    after: Option<(i64, i64)>,
    limit: usize,
) -> Result<Vec<Delivery>, DbError> {
    let (at, id) = after.unwrap_or((i64::MIN, i64::MIN));
    let mut stmt = conn.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} {DUE}"))?;
    let rows = stmt.query_map(params![target, now, at, id], delivery)?;
    // Rows are stepped one by one: SQLite stops after the last one taken.
    Ok(rows.take(limit).collect::<Result<_, _>>()?)
}

/// The most rows one read of [`due`] takes (a lane asks for its window's rows and those in
/// flight); rows are stepped one by one, so a read that takes fewer costs no more.
///
/// A literal in the SQL, not a bound parameter: SQLite's planner reads a bound LIMIT's value, so
/// each read with a different limit than the one before recompiled the statement (~14k
/// instructions per delivery).
pub const MAX_DUE: usize = 6400;

const DUE: &str = "FROM outbox WHERE target = ?1 AND state = 'pending' AND next_at <= ?2
      AND (next_at, id) > (?3, ?4)
    ORDER BY next_at, id LIMIT 6400";

/// A pending row as its lane sees it at start: (id, bucket, key, next_at), by id.
pub type PendingRow = (i64, String, String, i64);

/// Every pending row of `target`, by id: what its lane rebuilds each key's order from.
pub fn pending_of(conn: &Connection, target: &str) -> Result<Vec<PendingRow>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, bucket, key, next_at FROM outbox WHERE target = ?1 AND state = 'pending'
         ORDER BY id",
    )?;
    let rows = stmt.query_map([target], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Parks a pending row behind an earlier one of its key.
pub fn park(conn: &Connection, id: i64) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE outbox SET next_at = ?2 WHERE id = ?1 AND state = 'pending'")?
        .execute(params![id, PARKED])?;
    Ok(())
}

/// Makes a parked row due now (the row before it is delivered or dead).
pub fn unpark(conn: &Connection, id: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE outbox SET next_at = ?2 WHERE id = ?1 AND state = 'pending' AND next_at = ?3",
    )?
    .execute(params![id, now_millis(), PARKED])?;
    Ok(())
}

/// The targets pending deliveries name (each lane's target, and any no longer declared).
pub fn pending_targets(conn: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT target FROM outbox WHERE state = 'pending'")?;
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

/// Records the outcomes of a batch of attempts in one write: a delivered row is deleted (the
/// highest id is kept as 'delivered' instead, so that SQLite never hands its id out again, and
/// the one kept before is deleted once a newer row exists); a failed one is given its next
/// attempt, or marked dead.
pub fn record_outcomes(conn: &Connection, outcomes: &[(i64, Outcome)]) -> Result<(), DbError> {
    let now = now_millis();
    let highest: i64 = conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM outbox")?
        .query_row([], |r| r.get(0))?;
    let mut delete =
        conn.prepare_cached("DELETE FROM outbox WHERE id = ?1 AND state = 'pending'")?;
    let mut update = conn.prepare_cached(OUTCOME)?;
    for (id, outcome) in outcomes {
        let (state, error, next_at) = match outcome {
            Outcome::Delivered if *id != highest => {
                delete.execute([id])?;
                continue;
            }
            Outcome::Delivered => ("delivered", None, now),
            Outcome::Retry { error, next_at } => ("pending", Some(error.as_str()), *next_at),
            Outcome::Dead { error } => ("dead", Some(error.as_str()), now),
        };
        update.execute(params![id, state, error, next_at])?;
    }
    conn.prepare_cached("DELETE FROM outbox WHERE state = 'delivered' AND id < ?1")?
        .execute([highest])?;
    Ok(())
}

const OUTCOME: &str = "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_error = ?3,
        next_at = ?4
    WHERE id = ?1 AND state = 'pending'";

/// Deliveries for an operator, newest first: every pending and dead one, or only the dead and
/// those that failed at least once (`failed`). (Delivered ones are not kept.)
pub fn list(conn: &Connection, failed: bool, limit: usize) -> Result<Vec<Delivery>, DbError> {
    let filter = if failed {
        "state = 'dead' OR (state = 'pending' AND attempts > 0)"
    } else {
        "state IN ('pending', 'dead')"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outbox WHERE {filter} ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], delivery)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts a pending or dead delivery back in the queue now, with a fresh retry window. `false`:
/// no such delivery.
pub fn retry(conn: &Connection, id: i64) -> Result<bool, DbError> {
    let now = now_millis();
    Ok(conn.execute(
        "UPDATE outbox SET state = 'pending', since = ?2, next_at = ?2
         WHERE id = ?1 AND state IN ('pending', 'dead')",
        params![id, now],
    )? > 0)
}

/// Deliveries still pending (the queue depth metric).
pub fn pending(conn: &Connection) -> Result<u64, DbError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM outbox WHERE state = 'pending'",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
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
            .query_map(params!["t", 1, 0, 0], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("outbox_lane") && p.contains("target=?")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        assert!(DUE.ends_with(&format!("LIMIT {MAX_DUE}")));
    }

    /// The statements of an upload's outbox row and of its outcome build no ephemeral b-tree:
    /// the CHECK on `state` as an IN list made every one of them build, fill and drop one
    /// (migration 0018), about half of what the row's insert cost.
    #[test]
    fn writing_an_outbox_row_builds_no_temporary_table() {
        let (_dir, conn) = migrated();
        for sql in [INSERT, OUTCOME] {
            let mut explain = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            // Unbound parameters are NULL: enough for EXPLAIN.
            let mut rows = explain.raw_query();
            let mut ops = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                ops.push(row.get::<_, String>(1).unwrap());
            }
            assert!(!ops.iter().any(|o| o == "OpenEphemeral"), "{sql}: {ops:?}");
        }
        // The rule still holds.
        insert(
            &conn,
            "b",
            "k",
            "ObjectCreated:Put",
            &EventFields::default(),
            &[("h".into(), "c".into())],
        )
        .unwrap();
        let refused = conn.execute("UPDATE outbox SET state = 'gone'", []);
        assert!(refused.is_err(), "{refused:?}");
    }

    #[test]
    fn due_takes_a_targets_due_rows_and_skips_those_waiting_or_parked() {
        let (_dir, conn) = migrated();
        let t = |n: &str| vec![(n.to_owned(), "cfg".to_owned())];
        for key in ["a", "b", "c"] {
            insert(
                &conn,
                "b",
                key,
                "ObjectCreated:Put",
                &EventFields::default(),
                &t("h"),
            )
            .unwrap();
        }
        let now = now_millis() + 1;
        let ids = |v: Vec<Delivery>| v.iter().map(|d| d.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(due(&conn, "h", now, None, 10).unwrap()),
            ["a", "b", "c"]
        );
        // Another target's lane sees none of them.
        assert!(due(&conn, "other", now, None, 10).unwrap().is_empty());
        let rows = due(&conn, "h", now, None, 10).unwrap();
        let retry = Outcome::Retry {
            error: "500".into(),
            next_at: now + 60_000,
        };
        record_outcomes(&conn, &[(rows[0].id, retry)]).unwrap();
        park(&conn, rows[1].id).unwrap();
        assert_eq!(ids(due(&conn, "h", now, None, 10).unwrap()), ["c"]);
        unpark(&conn, rows[1].id).unwrap();
        // Unparked: due from the moment it was (a busy machine may be past `now + 10` by then).
        assert_eq!(
            ids(due(&conn, "h", now_millis() + 10, None, 10).unwrap()),
            ["c", "b"]
        );
    }

    /// Delivered rows are deleted, but no id is ever handed out twice (a receiver drops a
    /// delivery id it has seen, and compares a key's sequencers), even when every row was
    /// delivered: the highest stays, as 'delivered', until a newer one exists.
    #[test]
    fn delivered_rows_go_and_ids_are_never_handed_out_again() {
        let (_dir, conn) = migrated();
        let t = vec![("h".to_owned(), "cfg".to_owned())];
        let mut seen = Vec::new();
        for round in 0..3 {
            insert(
                &conn,
                "b",
                "k",
                "ObjectCreated:Put",
                &EventFields::default(),
                &t,
            )
            .unwrap();
            insert(
                &conn,
                "b",
                "j",
                "ObjectCreated:Put",
                &EventFields::default(),
                &t,
            )
            .unwrap();
            let rows = due(&conn, "h", now_millis() + 1, None, 10).unwrap();
            assert_eq!(rows.len(), 2, "round {round}");
            let done: Vec<_> = rows.iter().map(|d| (d.id, Outcome::Delivered)).collect();
            record_outcomes(&conn, &done).unwrap();
            seen.extend(rows.iter().map(|d| d.id));
            let left: i64 = conn
                .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
                .unwrap();
            assert_eq!(left, 1, "only the highest is kept");
            assert!(list(&conn, false, 10).unwrap().is_empty());
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }
}
