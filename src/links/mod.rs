//! Upload links: a URL that lets anyone holding it upload into one bucket, under one prefix,
//! within the link's limits, without an access key.
//!
//! - `link`: the link itself and its rules (open, full, accepted types, file names, slots);
//!   every path that uploads through a link checks it here.
//! - `page`: the hosted upload page `/-/u/<token>` and its policy (askama templates in
//!   `templates/`, script and style in `static/`).
//! - `multipart`: the page's multipart path for large files (presigned part URLs).
//! - `uppy`: the same, as the signing endpoint of Uppy's `@uppy/aws-s3` plugin.
//!
//! Errors on these routes are JSON (`crate::error::JsonError`); the page itself answers HTML.

pub mod i18n;
pub mod link;
pub mod multipart;
pub mod page;
pub mod uppy;

pub use link::{LINK_META_FIELD, human_size, new_link};

use crate::state::AppState;

/// The upload link's routes: its page and policy, its multipart path, Uppy's routes (under
/// their own CORS), and the page's static files.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .merge(uppy::routes())
        .route("/-/u/{token}", get(page::upload_page))
        .route("/-/u/{token}/policy", get(page::link_policy_json))
        .route("/-/u/{token}/done", get(page::received_page))
        .route("/-/u/{token}/uploads", post(multipart::start))
        .route(
            "/-/u/{token}/uploads/{id}",
            get(multipart::parts).delete(multipart::abort),
        )
        .route(
            "/-/u/{token}/uploads/{id}/parts/{n}",
            get(multipart::part_url),
        )
        .route(
            "/-/u/{token}/uploads/{id}/complete",
            post(multipart::complete),
        )
        .route("/-/static/{file}", get(page::static_file))
}
