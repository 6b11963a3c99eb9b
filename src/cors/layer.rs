//! The CORS layer of postgate's own `/-/` routes (the JSON API, Uppy's signing routes). Bucket
//! CORS, for S3 paths, is `cors::bucket`: its rules are the bucket's, not the server's.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Which origins a route group answers.
pub enum Origins<'a> {
    /// Any origin: the routes' credential is in the URL (an upload link's token).
    Any,
    /// The configured origins (`*` among them: any), or none when the list is empty.
    Listed(&'a [String]),
}

/// A CORS layer allowing `GET`, `POST` and `DELETE` with `headers` from `origins`, preflights
/// cached for `max_age`.
pub fn routes(origins: Origins<'_>, headers: &[HeaderName], max_age: Duration) -> CorsLayer {
    let allow = match origins {
        Origins::Any => AllowOrigin::any(),
        Origins::Listed(list) if list.iter().any(|o| o == "*") => AllowOrigin::any(),
        Origins::Listed(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers(headers.to_vec())
        .max_age(max_age)
}
