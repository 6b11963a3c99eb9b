//! Multipart uploads in the core: their expiry.

use crate::db::{self, Db, DbError, uploads};
use crate::store::BlobStore;

/// Aborts uploads started before `cutoff_millis`, and those of revoked or expired upload links,
/// and removes their parts; a link's upload gives its slot back, once (an upload a concurrent
/// abort removed first is skipped). Returns how many it aborted.
pub async fn expire(db: &Db, store: &BlobStore, cutoff_millis: i64) -> Result<usize, DbError> {
    let (aborted, blobs) = db
        .write(move |c| {
            let mut blobs = Vec::new();
            let mut ids = uploads::expired(c, cutoff_millis)?;
            ids.extend(uploads::of_closed_links(c, db::now_millis())?);
            ids.sort();
            ids.dedup();
            let mut aborted = 0;
            for id in &ids {
                if let Some(b) = uploads::abort(c, id)? {
                    blobs.extend(b);
                    aborted += 1;
                }
            }
            Ok((aborted, blobs))
        })
        .await?;
    for blob in blobs {
        store.remove(blob).await;
    }
    Ok(aborted)
}
