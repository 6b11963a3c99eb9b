//! Listing a bucket's keys in UTF-8 byte order (SQLite's BINARY collation). With a delimiter,
//! keys that share a common prefix roll up into one entry, and the scan jumps straight past that
//! prefix instead of reading every key under it.

use crate::db::objects::{ListEntry, prefix_successor};
use crate::db::{Db, DbError};
use crate::storage::{Catalog, Storage};

/// One entry of a listing: an object, or a common prefix its keys roll up into.
pub enum Item {
    Object(ListEntry),
    Prefix(String),
}

/// One page of a listing.
pub struct Page {
    pub items: Vec<Item>,
    /// More entries follow the page.
    pub truncated: bool,
}

/// Up to `max_keys` entries of `bucket` after `marker` under `prefix`, rolling keys up at
/// `delimiter` (empty: none), on the read pool.
pub async fn page(
    db: &Db,
    store: &Storage,
    bucket: String,
    prefix: String,
    delimiter: String,
    marker: Option<String>,
    max_keys: usize,
) -> Result<Page, DbError> {
    let catalog = store.catalog();
    db.read(move |c| {
        scan_page(
            catalog,
            c,
            &bucket,
            &prefix,
            &delimiter,
            marker.as_deref(),
            max_keys,
        )
    })
    .await
}

/// Reads up to `max_keys` items after `marker` under `prefix`, rolling keys up at `delimiter`.
fn scan_page(
    catalog: Catalog,
    conn: &rusqlite::Connection,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    marker: Option<&str>,
    max_keys: usize,
) -> Result<Page, DbError> {
    let until = if prefix.is_empty() {
        None
    } else {
        prefix_successor(prefix)
    };
    // Start at whichever is later: the prefix (inclusive) or the marker (exclusive).
    let (mut from, mut exclusive) = match marker {
        Some(m) if m >= prefix => (m.to_owned(), true),
        _ => (prefix.to_owned(), false),
    };
    let mut items = Vec::new();
    const BATCH: usize = 1000;
    loop {
        if items.len() == max_keys {
            let more = catalog.scan(conn, bucket, &from, exclusive, until.as_deref(), 1)?;
            return Ok(Page {
                truncated: !more.is_empty() && max_keys > 0,
                items,
            });
        }
        let rows = catalog.scan(conn, bucket, &from, exclusive, until.as_deref(), BATCH)?;
        if rows.is_empty() {
            return Ok(Page {
                items,
                truncated: false,
            });
        }
        let fetched = rows.len();
        let mut jumped = false;
        for row in rows {
            let Some(rest) = row.key.strip_prefix(prefix) else {
                return Ok(Page {
                    items,
                    truncated: false,
                });
            };
            let rolled = (!delimiter.is_empty())
                .then(|| rest.find(delimiter))
                .flatten()
                .map(|i| row.key[..prefix.len() + i + delimiter.len()].to_owned());
            match rolled {
                Some(cp) => {
                    // Continue after every key under this common prefix.
                    match prefix_successor(&cp) {
                        Some(next) => {
                            from = next;
                            exclusive = false;
                        }
                        None => {
                            from = cp.clone();
                            exclusive = true;
                        }
                    }
                    // A prefix at or before the marker was returned on an earlier page.
                    if marker.is_none_or(|m| cp.as_str() > m) {
                        items.push(Item::Prefix(cp));
                    }
                    jumped = true;
                    break;
                }
                None => {
                    from = row.key.clone();
                    exclusive = true;
                    items.push(Item::Object(row));
                    if items.len() == max_keys {
                        break;
                    }
                }
            }
        }
        if !jumped && items.len() < max_keys && fetched < BATCH {
            return Ok(Page {
                items,
                truncated: false,
            });
        }
    }
}
