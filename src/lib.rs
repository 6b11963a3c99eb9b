//! postgate: an S3-compatible object store for uploads that go straight from a browser or a
//! phone, with signed POST policies, CORS and hosted upload pages.
//!
//! # Layout
//! Imports run one way: `http` → (`s3` | `links` | `api`) → `objects` → (`storage` | `db`); the
//! pure modules are leaves. `tests/architecture.rs` checks it; `docs/ARCHITECTURE.md` is the tour.
//! - `http`    the router (the only module that imports every area), middleware (request ids,
//!   S3 error bodies, forwarded headers, body limits), the serve loop.
//! - `state`   `AppState`: configuration, database, storage backend, key and bucket caches; public URLs.
//! - `s3`      the S3 REST API: request → typed `Endpoint` → permission check → thin handler.
//! - `links`   upload links: the link and its rules, its page, its multipart and Uppy routes.
//! - `api`     the JSON API under `/-/api/` (presigned POST policies, links).
//! - `objects` the core: write, multipart, list, delete, the one permission check; no HTTP.
//! - `events`  object events: the S3 event format, who wants which (bucket notifications, link
//!   webhooks, cached), the outbox the core writes in the object's transaction, the signed
//!   delivery worker.
//! - `storage` the storage backend seam: object bytes and the object catalog; today the local
//!   filesystem store (streaming ingest, temp → fsync → rename, sweep) over SQLite rows;
//!   `storage::s3`, the client of an S3 cluster, for the S3 backend.
//! - `db`      SQLite metadata: every SQL statement, migrations, one group-committing writer.
//! - `error`   `S3Error` (the only error on S3 paths) and `JsonError` (the `/-/` routes').
//! - `auth`    SigV4 / SigV2 (header, presigned), aws-chunked bodies, checksums. Pure.
//! - `policy`  POST policies: parse, evaluate, sign, issue. Pure.
//! - `cors`    CORS: bucket rules (parse, validate, match; pure), their answers on S3 paths,
//!   and the one layer of the `/-/` routes.
//! - `sniff`   an upload's type from its first bytes, checked against the declared one. Pure.
//! - `config`, `names`, `units`, `xml`: configuration; bucket and key names; sizes and
//!   durations; S3's XML.

pub mod api;
pub mod auth;
pub mod config;
pub mod control;
pub mod cors;
pub mod db;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod links;
pub mod names;
pub mod objects;
pub mod policy;
pub mod s3;
pub mod sniff;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod units;
pub mod xml;

pub use config::Config;
pub use http::serve;
pub use state::AppState;
