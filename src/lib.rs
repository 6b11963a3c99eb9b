//! postgate: an S3-compatible object store for uploads that go straight from a browser or a
//! phone, with signed POST policies, CORS and hosted upload pages.
//!
//! # Layout
//! - `config`  defaults < TOML file < `POSTGATE_*` env < flags.
//! - `app`     shared state, router, request ids, the serve loop.
//! - `api`     the JSON API under `/-/api/` (presigned POST policies for web backends).
//! - `s3`      the S3 REST API: request → `Endpoint` → permission check → thin handler.
//! - `auth`    SigV4 / SigV2 (header, presigned), aws-chunked bodies, checksums. Pure.
//! - `policy`  POST policies: parse, evaluate, sign, issue. Pure.
//! - `cors`    bucket CORS rules: parse, validate, match, response headers. Pure.
//! - `ui`      hosted upload pages for shareable upload links (askama templates, static JS/CSS).
//! - `link_uploads` the upload page's multipart path for large files (presigned part URLs).
//! - `upload`  the write pipeline shared by PUT, copy and POST: headers, digests, commit.
//! - `store`   object bytes on disk: streaming ingest, temp → fsync → rename, sweep.
//! - `db`      SQLite metadata: migrations, one group-committing writer, pooled readers.
//! - `error`   `S3Error`, the only error that reaches the wire.
//! - `limits`  bounded cost per request: body idle timeout, `Connection: close` on unread bodies.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod cors;
pub mod db;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod link_uploads;
pub mod names;
pub mod policy;
pub mod s3;
pub mod store;
pub mod ui;
pub mod units;
pub mod upload;
pub mod uppy;
pub mod xml;

pub use app::{AppState, serve};
pub use config::Config;
