//! Access keys: the admin key, the keys the operator creates, and their secrets.

use rusqlite::{Connection, OptionalExtension, params};

use super::{DbError, now_millis};

#[derive(Clone)]
pub struct KeyRecord {
    pub id: i64,
    pub name: String,
    pub access_key: String,
    pub secret_key: String,
    pub is_admin: bool,
    pub created_at: i64,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("access_key", &self.access_key)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, name, access_key, secret_key, is_admin, created_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        access_key: r.get(2)?,
        secret_key: r.get(3)?,
        is_admin: r.get(4)?,
        created_at: r.get(5)?,
    })
}

/// A fresh access key id (20 characters, like AWS's) and secret (40 characters), both from the
/// operating system's random source.
pub fn generate() -> (String, String) {
    use base64::Engine;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut access = String::from("PG");
    let random = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ];
    access.extend(
        random
            .iter()
            .flatten()
            .take(18)
            .map(|b| ALPHABET[(*b & 31) as usize] as char),
    );
    let mut secret_bytes = [0u8; 30];
    secret_bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret_bytes[16..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..14]);
    let secret = base64::engine::general_purpose::STANDARD.encode(secret_bytes);
    (access, secret)
}

pub fn insert(
    conn: &Connection,
    name: &str,
    access_key: &str,
    secret_key: &str,
    is_admin: bool,
) -> Result<KeyRecord, DbError> {
    let created_at = now_millis();
    conn.execute(
        "INSERT INTO access_keys (name, access_key, secret_key, is_admin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(access_key) DO UPDATE SET secret_key = excluded.secret_key,
             is_admin = excluded.is_admin",
        params![name, access_key, secret_key, is_admin, created_at],
    )?;
    find(conn, access_key)?.ok_or_else(|| DbError::Corrupt("inserted key vanished".into()))
}

/// Installs the admin key the server starts with (configured, or generated on a first start).
/// It replaces every admin key an earlier start installed under another id: those are deleted
/// and what they owned (buckets, links, multipart uploads, objects) passes to the new key, so
/// that rotating a leaked `POSTGATE_ACCESS_KEY` retires it without orphaning anything. Keys the
/// operator made with `key create` are not touched. Returns the retired access key ids.
pub fn install_admin(
    conn: &Connection,
    access_key: &str,
    secret_key: &str,
) -> Result<Vec<String>, DbError> {
    let retired: Vec<String> = conn
        .prepare("SELECT access_key FROM access_keys WHERE startup = 1 AND access_key != ?1")?
        .query_map([access_key], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    insert(conn, "admin", access_key, secret_key, true)?;
    conn.execute(
        "UPDATE access_keys SET startup = 1 WHERE access_key = ?1",
        [access_key],
    )?;
    for old in &retired {
        for sql in [
            "UPDATE buckets SET owner = ?2 WHERE owner = ?1",
            "UPDATE links SET access_key = ?2 WHERE access_key = ?1",
            "UPDATE uploads SET owner = ?2 WHERE owner = ?1",
            "UPDATE objects SET owner = ?2 WHERE owner = ?1",
        ] {
            conn.execute(sql, params![old, access_key])?;
        }
        conn.execute("DELETE FROM grants WHERE access_key = ?1", [old])?;
        conn.execute("DELETE FROM access_keys WHERE access_key = ?1", [old])?;
    }
    Ok(retired)
}

pub fn find(conn: &Connection, access_key: &str) -> Result<Option<KeyRecord>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM access_keys WHERE access_key = ?1"
        ))?
        .query_row([access_key], from_row)
        .optional()?)
}

pub fn find_admin(conn: &Connection) -> Result<Option<KeyRecord>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM access_keys WHERE is_admin = 1 ORDER BY id LIMIT 1"),
            [],
            from_row,
        )
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<KeyRecord>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM access_keys ORDER BY id"))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes a key by numeric id or by access key id. Returns whether one was deleted.
pub fn delete(conn: &Connection, id_or_access_key: &str) -> Result<bool, DbError> {
    let n = match id_or_access_key.parse::<i64>() {
        Ok(id) => conn.execute("DELETE FROM access_keys WHERE id = ?1", [id])?,
        Err(_) => conn.execute(
            "DELETE FROM access_keys WHERE access_key = ?1",
            [id_or_access_key],
        )?,
    };
    Ok(n > 0)
}
