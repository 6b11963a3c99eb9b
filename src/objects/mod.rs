//! The core: what every entry point (S3 REST, POST forms, upload links, the JSON API) does to
//! objects, as functions over the database and the blob store. It knows nothing about HTTP.

pub mod access;
pub mod delete;
pub mod lifecycle;
pub mod list;
pub mod multipart;
pub mod quota;
pub mod write;
