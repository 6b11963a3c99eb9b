//! Where multipart uploads in progress and their parts live: this node's SQLite
//! (`db::uploads`, one node) or, with `--control-db`, the control database the nodes share
//! (`migrations/postgres/0007_uploads.sql`), so that an upload begun on one node continues on
//! any other.
//! [`Uploads`] is the one switch the core and the areas read the rows through; the steps that
//! change them together with other state (a part's row with the link's budget, Complete's
//! removal, an abort) keep their SQLite transaction on one node and have a PostgreSQL
//! statement of their own here, each saying what it guarantees.

use tokio_postgres::Row;

use super::pg::{Pg, pg_error};
use crate::db::uploads::{self, PartRecord, UploadRecord};
use crate::db::{Db, DbError};

/// Where upload rows live.
#[derive(Clone)]
pub enum Uploads {
    /// This node's SQLite: one node.
    Local(Db),
    /// The control database the nodes share.
    Shared(Pg),
}

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, owner, initiated, headers, link_id";
const PART_COLUMNS: &str = "part_number, size, etag, blob, last_modified, checksum, detected_type";

fn upload_from_row(r: &Row) -> UploadRecord {
    UploadRecord {
        upload_id: r.get(0),
        bucket: r.get(1),
        key: r.get(2),
        owner: r.get(3),
        initiated: r.get(4),
        headers: r.get(5),
        link_id: r.get(6),
    }
}

fn part_from_row(r: &Row) -> PartRecord {
    PartRecord {
        part_number: r.get::<_, i32>(0) as u32,
        size: r.get::<_, i64>(1) as u64,
        etag: r.get(2),
        blob: r.get(3),
        last_modified: r.get(4),
        checksum: r.get(5),
        detected_type: r.get(6),
    }
}

/// Why [`Pg::put_part`] recorded no part.
#[derive(Debug)]
pub enum PartRefused {
    /// The upload was completed or aborted meanwhile.
    NoSuchUpload,
    /// With the upload's other parts, the part passes the link's maximum: at most `max` bytes.
    TooLarge { max: u64 },
}

impl Uploads {
    /// The shared control database, if the rows live there.
    pub fn shared(&self) -> Option<&Pg> {
        match self {
            Uploads::Local(_) => None,
            Uploads::Shared(pg) => Some(pg),
        }
    }

    /// The upload, if it exists and belongs to `bucket`/`key`.
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadRecord>, DbError> {
        match self {
            Uploads::Local(db) => {
                let (b, k, id) = (bucket.to_owned(), key.to_owned(), upload_id.to_owned());
                db.read(move |c| uploads::get(c, &b, &k, &id)).await
            }
            Uploads::Shared(pg) => pg.upload(bucket, key, upload_id).await,
        }
    }

    /// The upload `upload_id` if link `link_id` began it.
    pub async fn get_of_link(
        &self,
        link_id: &str,
        upload_id: &str,
    ) -> Result<Option<UploadRecord>, DbError> {
        match self {
            Uploads::Local(db) => {
                let (l, id) = (link_id.to_owned(), upload_id.to_owned());
                db.read(move |c| uploads::get_of_link(c, &l, &id)).await
            }
            Uploads::Shared(pg) => Ok(pg
                .upload_by_id(upload_id)
                .await?
                .filter(|u| u.link_id.as_deref() == Some(link_id))),
        }
    }

    /// Up to `limit` parts after part `after`, in part-number order.
    pub async fn parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<PartRecord>, DbError> {
        match self {
            Uploads::Local(db) => {
                let id = upload_id.to_owned();
                db.read(move |c| uploads::parts(c, &id, after, limit)).await
            }
            Uploads::Shared(pg) => pg.parts(upload_id, after, limit).await,
        }
    }

    /// Uploads of `bucket` after the markers ([`uploads::list`]'s order and paging).
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, DbError> {
        match self {
            Uploads::Local(db) => {
                let (b, p, km, im) = (
                    bucket.to_owned(),
                    prefix.to_owned(),
                    key_marker.to_owned(),
                    upload_id_marker.to_owned(),
                );
                db.read(move |c| uploads::list(c, &b, &p, &km, &im, limit))
                    .await
            }
            Uploads::Shared(pg) => {
                pg.list_uploads(bucket, prefix, key_marker, upload_id_marker, limit)
                    .await
            }
        }
    }

    /// Which of `keys` (of `bucket`) unfinished uploads in the shared control database target;
    /// none with local rows, which the caller's SQLite transaction reads itself
    /// (`db::uploads::key_in_progress`).
    pub async fn keys_in_progress(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<String>, DbError> {
        let Uploads::Shared(pg) = self else {
            return Ok(Vec::new());
        };
        let rows = pg
            .client()
            .await?
            .query(
                "SELECT DISTINCT key FROM uploads WHERE bucket = $1 AND key = ANY($2)",
                &[&bucket, &keys],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every open upload's saved headers (the orphan sweep spares the backend uploads they
    /// name: with several nodes, every node's).
    pub async fn all_headers(&self) -> Result<Vec<String>, DbError> {
        match self {
            Uploads::Local(db) => db.read(uploads::all_headers).await,
            Uploads::Shared(pg) => {
                let rows = pg
                    .client()
                    .await?
                    .query("SELECT headers FROM uploads", &[])
                    .await
                    .map_err(pg_error)?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }
        }
    }

    /// How many uploads are open, for `/-/metrics`.
    pub async fn count_open(&self) -> Result<u64, DbError> {
        match self {
            Uploads::Local(db) => db.read(uploads::count_open).await,
            Uploads::Shared(pg) => {
                let n: i64 = pg
                    .client()
                    .await?
                    .query_one("SELECT count(*) FROM uploads", &[])
                    .await
                    .map_err(pg_error)?
                    .get(0);
                Ok(n as u64)
            }
        }
    }
}

impl Pg {
    /// Stores a new upload's row.
    pub async fn create_upload(&self, u: &UploadRecord) -> Result<(), DbError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO uploads (upload_id, bucket, key, owner, initiated, headers, link_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &u.upload_id,
                    &u.bucket,
                    &u.key,
                    &u.owner,
                    &u.initiated,
                    &u.headers,
                    &u.link_id,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// The one upload row `sql` answers (`UPLOAD_COLUMNS`), if any.
    async fn one_upload(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<UploadRecord>, DbError> {
        let row = self
            .client()
            .await?
            .query_opt(sql, params)
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(upload_from_row))
    }

    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<UploadRecord>, DbError> {
        self.one_upload(
            &format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads
                 WHERE upload_id = $1 AND bucket = $2 AND key = $3"
            ),
            &[&upload_id, &bucket, &key],
        )
        .await
    }

    /// The upload `upload_id`, whatever its key.
    pub async fn upload_by_id(&self, upload_id: &str) -> Result<Option<UploadRecord>, DbError> {
        self.one_upload(
            &format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = $1"),
            &[&upload_id],
        )
        .await
    }

    async fn parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<PartRecord>, DbError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {PART_COLUMNS} FROM parts
                     WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3"
                ),
                &[
                    &upload_id,
                    &(after as i32),
                    &(limit.min(i64::MAX as usize) as i64),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(part_from_row).collect())
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, DbError> {
        // As `db::uploads::list`; keys compare bytewise (`COLLATE "C"`), as SQLite's do.
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "WITH m AS (SELECT (SELECT initiated FROM uploads WHERE upload_id = $4) AS at)
                     SELECT {UPLOAD_COLUMNS} FROM uploads, m
                     WHERE bucket = $1 AND left(key, length($2)) = $2
                       AND (key COLLATE \"C\" > $3 OR (key = $3 AND $4 <> '' AND CASE
                            WHEN m.at IS NULL THEN upload_id > $4
                            ELSE initiated > m.at OR (initiated = m.at AND upload_id > $4) END))
                     ORDER BY key COLLATE \"C\", initiated, upload_id LIMIT $5"
                ),
                &[
                    &bucket,
                    &prefix,
                    &key_marker,
                    &upload_id_marker,
                    &(limit as i64),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(upload_from_row).collect())
    }

    /// Records part `p` of `upload_id`, replacing one with the same number, in one transaction
    /// that holds the upload's row lock (`FOR UPDATE`): parts of one upload, on any nodes,
    /// record one after the other, so with `max_total` (a link's maximum file size) the sum of
    /// the other parts is read under that lock and concurrent parts cannot pass it together;
    /// and a completion or abort (which delete the row) either comes first (`NoSuchUpload`) or
    /// waits for this part.
    pub async fn put_part(
        &self,
        upload_id: &str,
        p: &PartRecord,
        max_total: Option<u64>,
    ) -> Result<Result<(), PartRefused>, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let number = p.part_number as i32;
        let locked = tx
            .query_opt(
                "SELECT 1 FROM uploads WHERE upload_id = $1 FOR UPDATE",
                &[&upload_id],
            )
            .await
            .map_err(pg_error)?;
        if locked.is_none() {
            return Ok(Err(PartRefused::NoSuchUpload));
        }
        if let Some(max) = max_total {
            let others: i64 = tx
                .query_one(
                    "SELECT coalesce(sum(size), 0)::bigint FROM parts
                     WHERE upload_id = $1 AND part_number <> $2",
                    &[&upload_id, &number],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            let room = max.saturating_sub(others as u64);
            if p.size > room {
                return Ok(Err(PartRefused::TooLarge { max: room }));
            }
        }
        tx.execute(
            "INSERT INTO parts (upload_id, part_number, size, etag, blob, last_modified,
                 checksum, detected_type)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size,
                 etag = excluded.etag, blob = excluded.blob,
                 last_modified = excluded.last_modified, checksum = excluded.checksum,
                 detected_type = excluded.detected_type",
            &[
                &upload_id,
                &number,
                &(p.size as i64),
                &p.etag,
                &p.blob,
                &p.last_modified,
                &p.checksum,
                &p.detected_type,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Ok(()))
    }

    /// Deletes an upload and its parts (`ON DELETE CASCADE`) in one statement and answers its
    /// row only if this statement deleted it: of any number of concurrent completions, aborts
    /// and sweeps on any nodes, exactly one gets the row (and so aborts the backend's upload
    /// or settles the completion).
    pub async fn delete_upload(&self, upload_id: &str) -> Result<Option<UploadRecord>, DbError> {
        self.one_upload(
            &format!("DELETE FROM uploads WHERE upload_id = $1 RETURNING {UPLOAD_COLUMNS}"),
            &[&upload_id],
        )
        .await
    }

    /// Deletes the uploads begun before `cutoff` (milliseconds), and those of revoked or expired
    /// links, at most `limit`; answers the deleted rows (their backend uploads to abort). Two
    /// nodes sweeping at once never both get a row.
    pub async fn delete_expired_uploads(
        &self,
        cutoff: i64,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, DbError> {
        self.delete_uploads_where(
            "u.initiated < $1 OR u.link_id IN (SELECT id FROM links
                 WHERE revoked OR expires_at <= (extract(epoch from now()) * 1000)::bigint)",
            &[&cutoff],
            limit,
        )
        .await
    }

    /// Deletes (at most `limit` of) the uploads of link `link_id` (revoked).
    pub async fn delete_link_uploads(
        &self,
        link_id: &str,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, DbError> {
        self.delete_uploads_where("u.link_id = $1", &[&link_id], limit)
            .await
    }

    /// Deletes (at most `limit` of) the uploads of `bucket` under `prefix` begun at or before
    /// `by` (a lifecycle rule's AbortIncompleteMultipartUpload).
    pub async fn delete_stale_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        by: i64,
        limit: usize,
    ) -> Result<Vec<UploadRecord>, DbError> {
        self.delete_uploads_where(
            "u.bucket = $1 AND left(u.key, length($2)) = $2 AND u.initiated <= $3",
            &[&bucket, &prefix, &by],
            limit,
        )
        .await
    }

    async fn delete_uploads_where(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        limit: usize,
    ) -> Result<Vec<UploadRecord>, DbError> {
        // `SKIP LOCKED`: a row another node is deleting (or recording a part of) is left to it.
        let sql = format!(
            "DELETE FROM uploads WHERE upload_id IN (
                 SELECT u.upload_id FROM uploads u WHERE {condition}
                 ORDER BY u.initiated LIMIT {limit} FOR UPDATE SKIP LOCKED)
             RETURNING {UPLOAD_COLUMNS}"
        );
        let rows = self
            .client()
            .await?
            .query(&sql, params)
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(upload_from_row).collect())
    }
}
