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
    if let Some(backend) = store.backend() {
        return page_s3(db, backend, bucket, prefix, delimiter, marker, max_keys).await;
    }
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

/// [`page`] under the S3 backend: one ListObjectsV2 of the backend bucket under
/// `"{bucket}/{prefix}"`, after `"{bucket}/{marker}"`, with the delimiter (docs/cluster.md
/// section 9.6). Keys and common prefixes lose their `"{bucket}/"`; S3 lists no user metadata,
/// so each entry's owner is the bucket's.
async fn page_s3(
    db: &Db,
    backend: &crate::storage::s3::Backend,
    bucket: String,
    prefix: String,
    delimiter: String,
    marker: Option<String>,
    max_keys: usize,
) -> Result<Page, DbError> {
    use crate::storage::s3::ListRequest;
    let b = bucket.clone();
    let owner = db
        .read(move |c| crate::db::buckets::get(c, &b))
        .await?
        .map(|r| r.owner)
        .unwrap_or_default();
    let root = format!("{bucket}/");
    let request = ListRequest {
        prefix: Some(format!("{root}{prefix}")),
        delimiter: (!delimiter.is_empty()).then(|| delimiter.clone()),
        start_after: marker
            .as_deref()
            .filter(|m| *m >= prefix.as_str())
            .map(|m| format!("{root}{m}")),
        max_keys: Some(max_keys.min(1000) as u32),
        ..ListRequest::default()
    };
    let listed = backend
        .list(&request)
        .await
        .map_err(|e| DbError::File(crate::storage::cluster::io_error(e)))?;
    let strip = |name: &str| name.strip_prefix(&root).map(str::to_owned);
    let mut items: Vec<(String, Item)> = Vec::new();
    for object in listed.objects {
        let Some(key) = strip(&object.key) else {
            continue;
        };
        let last_modified = time::OffsetDateTime::parse(
            &object.last_modified,
            &time::format_description::well_known::Rfc3339,
        )
        .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        items.push((
            key.clone(),
            Item::Object(ListEntry {
                key,
                size: object.size,
                etag: object.etag,
                last_modified,
                owner: owner.clone(),
            }),
        ));
    }
    for common in listed.common_prefixes {
        // A prefix at or before the marker was returned on an earlier page.
        if let Some(cp) = strip(&common).filter(|cp| marker.as_ref().is_none_or(|m| cp > m)) {
            items.push((cp.clone(), Item::Prefix(cp)));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Page {
        items: items.into_iter().map(|(_, item)| item).collect(),
        truncated: listed.next_continuation_token.is_some() && max_keys > 0,
    })
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
