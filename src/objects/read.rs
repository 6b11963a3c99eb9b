//! Reading a stored body: where its bytes lie in the blob store.

use crate::db::objects::Body;
use crate::store::{Segment, segments_of};

/// The blob segments holding bytes `start..start + len` of a stored body (none for a body
/// stored inline in its row).
pub fn segments(body: &Body, start: u64, len: u64) -> Vec<Segment> {
    match body {
        Body::Blob(id) => vec![Segment {
            blob: id.clone(),
            offset: start,
            len,
        }],
        Body::Parts(parts) => segments_of(parts, start, len),
        Body::Inline(_) | Body::NotLoaded => Vec::new(),
    }
}
