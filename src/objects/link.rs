//! What the core holds an upload link's uploads to on every path (S3's UploadPart and
//! CompleteMultipartUpload, the link's own routes): a closed link takes no part and no
//! completion. The link's other rules (full, accepted types, file names) belong to its area,
//! `links::link`, which builds on this one.

use crate::db::links::LinkRecord;
use crate::db::{Db, DbError, now_millis};
use crate::storage::Storage;

impl LinkRecord {
    /// Why the link is closed (revoked or expired), if it is. A closed link takes nothing more:
    /// no new upload, no part, no completion.
    pub fn closed(&self) -> Option<&'static str> {
        if self.revoked {
            Some("This upload link has been revoked.")
        } else if self.expires_at <= now_millis() {
            Some("This upload link has expired.")
        } else {
            None
        }
    }
}

/// Why an upload held by a link (`None`: the link was deleted) can go no further, if it can't.
pub fn closed(link: Option<&LinkRecord>) -> Option<&'static str> {
    match link {
        None => Some("This upload link no longer exists."),
        Some(l) => l.closed(),
    }
}

/// Revokes link `id`: its unfinished uploads are aborted in the same transaction, then their
/// parts removed. With shared upload rows, its uploads' rows are deleted there (by whichever
/// node revokes; each row answered to one deleting statement) and their backend uploads
/// aborted.
pub async fn revoke(
    db: &Db,
    uploads: &crate::control::Uploads,
    store: &Storage,
    id: &str,
) -> Result<(), DbError> {
    if let Some(pg) = uploads.shared() {
        loop {
            let batch = pg.delete_link_uploads(id, 256).await?;
            for upload in &batch {
                super::multipart::abort_backend_upload(store, upload).await;
            }
            if batch.len() < 256 {
                break;
            }
        }
    }
    let id = id.to_owned();
    let (uploads, blobs) = db
        .write(move |c| {
            // Their records, for the backend's uploads behind them (S3 backend).
            let mut uploads = Vec::new();
            for upload_id in crate::db::uploads::of_link(c, &id)? {
                uploads.extend(crate::db::uploads::get_by_id(c, &upload_id)?);
            }
            let blobs = crate::db::links::revoke(c, &id)?.unwrap_or_default();
            Ok((uploads, blobs))
        })
        .await?;
    if store.backend().is_some() {
        for upload in &uploads {
            super::multipart::abort_backend_upload(store, upload).await;
        }
        return Ok(());
    }
    for blob in blobs {
        store.remove(blob).await;
    }
    Ok(())
}
