//! CORS, all of it: bucket CORS as S3 does it (the rules, `rules`; the preflight answer and the
//! headers of actual requests, `bucket`) and the one layer of postgate's own `/-/` routes
//! (`layer`). The S3 handlers that store a bucket's rules (Put/Get/DeleteBucketCors) stay in
//! `s3::cors`, with the other S3 operations; they and `s3::dispatch` call into this room.

pub mod bucket;
pub mod layer;
mod rules;

pub use rules::*;
