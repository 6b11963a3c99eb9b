//! The object catalog: each object's metadata (size, ETag, stored headers, `x-amz-meta-*`,
//! checksum, owner, ACL, detected type, last-modified) and where its bytes lie.
//!
//! Every read and write of an object's row by the core goes through a [`Catalog`]: HEAD/GET
//! (`objects::read::head`), listings (`objects::list`), conditional writes and commits
//! (`objects::write`), copies (`objects::copy`), deletes (`objects::delete`) and multipart
//! completion (`objects::multipart`). What only postgate knows (keys, links, quotas, CORS,
//! notifications, the event outbox, multipart upload rows) stays in `db/` and is not the
//! catalog's.
//!
//! The SQLite catalog works inside the caller's transaction (`&Connection` on the writer or a
//! reader of `db::Db`), so that an object's row commits together with the quota settlement, the
//! link's file count and the outbox row it pays for: one transaction, as before the seam. A
//! catalog kept by the backend (S3: the object's own headers and metadata) is written by the
//! backend call that stores the bytes, before the control transaction; docs/cluster.md ("The
//! catalog half of the seam") lists what each method becomes there.

use rusqlite::Connection;

use crate::db::DbError;
use crate::db::objects::{self, Body, ListEntry, ObjectMeta, ObjectRecord};

/// Where object metadata lives. `Copy`, so that transaction closures take it along for free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalog {
    /// The `objects` table of postgate's own database (`db::objects`), the filesystem store's
    /// catalog.
    Sqlite,
    /// The S3 backend's objects themselves (their headers and `x-amz-meta-*`). Not built: its
    /// reads and writes are network calls, made outside the control transactions and never
    /// from these in-transaction methods, whose S3 arms answer [`not_built`]
    /// (docs/cluster.md sections 9.4 and 9.5).
    S3,
}

/// The S3 arm of an in-transaction catalog method.
fn not_built(method: &str) -> DbError {
    DbError::File(crate::storage::not_built(&format!("catalog {method}")))
}

impl Catalog {
    /// The current version of `bucket/key` (with an inline body's bytes when `with_body`).
    pub fn get(
        self,
        conn: &Connection,
        bucket: &str,
        key: &str,
        with_body: bool,
    ) -> Result<Option<ObjectRecord>, DbError> {
        match self {
            Catalog::Sqlite => objects::get(conn, bucket, key, with_body),
            Catalog::S3 => Err(not_built("get")),
        }
    }

    /// Makes `meta` and `body` the current version of `bucket/key`; returns the blobs the old
    /// version used (to remove once the transaction has committed).
    pub fn put(
        self,
        conn: &Connection,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        body: &Body,
    ) -> Result<Vec<String>, DbError> {
        match self {
            Catalog::Sqlite => objects::put(conn, bucket, key, meta, body),
            Catalog::S3 => Err(not_built("put")),
        }
    }

    /// Removes `bucket/key`: `None` if there was no such object, else the blobs it used.
    pub fn delete(
        self,
        conn: &Connection,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<String>>, DbError> {
        match self {
            Catalog::Sqlite => objects::delete(conn, bucket, key),
            Catalog::S3 => Err(not_built("delete")),
        }
    }

    /// Removes `bucket/key` if `check` passes on its current version (`None`: no object), in
    /// the same transaction, so no write lands between the check and the delete (conditional
    /// deletes). The outer error is the database's; the inner one is `check`'s refusal.
    pub fn delete_if<E>(
        self,
        conn: &Connection,
        bucket: &str,
        key: &str,
        check: impl FnOnce(Option<&ObjectMeta>) -> Result<(), E>,
    ) -> Result<Result<Option<Vec<String>>, E>, DbError> {
        match self {
            Catalog::Sqlite => objects::delete_if(conn, bucket, key, check),
            Catalog::S3 => Err(not_built("delete_if")),
        }
    }

    /// Up to `limit` objects of `bucket` from `from` (after it when `exclusive`), before `until`,
    /// in UTF-8 byte order of their keys.
    pub fn scan(
        self,
        conn: &Connection,
        bucket: &str,
        from: &str,
        exclusive: bool,
        until: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListEntry>, DbError> {
        match self {
            Catalog::Sqlite => objects::scan(conn, bucket, from, exclusive, until, limit),
            Catalog::S3 => Err(not_built("scan")),
        }
    }

    /// Replaces the canned ACL of `bucket/key` (PutObjectAcl); `false` if there is no such object.
    pub fn set_acl(
        self,
        conn: &Connection,
        bucket: &str,
        key: &str,
        acl: &str,
    ) -> Result<bool, DbError> {
        match self {
            Catalog::Sqlite => objects::set_acl(conn, bucket, key, acl),
            Catalog::S3 => Err(not_built("set_acl")),
        }
    }

    /// Every blob a current object uses (the start-up sweep keeps these).
    pub fn referenced_blobs(
        self,
        conn: &Connection,
    ) -> Result<std::collections::HashSet<String>, DbError> {
        match self {
            Catalog::Sqlite => objects::referenced_blobs(conn),
            Catalog::S3 => Err(not_built("referenced_blobs")),
        }
    }
}
