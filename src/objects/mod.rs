//! The core: what every entry point (S3 REST, POST forms, upload links, the JSON API) does to
//! objects, as functions over the database and the blob store. It knows nothing about HTTP, nor
//! S3's error codes: it answers with its own [`Error`], which `error.rs` maps.

pub mod access;
pub mod copy;
pub mod delete;
pub mod error;
pub mod lifecycle;
pub mod link;
pub mod list;
pub mod multipart;
pub mod quota;
pub mod read;
pub mod write;

pub use error::Error;
