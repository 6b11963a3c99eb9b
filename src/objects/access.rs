//! Who may do what to a bucket's objects: the one permission check every entry point uses (S3
//! requests, POST forms, the JSON API). Pure: the caller brings the bucket's row and the grant
//! the caller's key holds on it.

use crate::db::buckets::{BucketRecord, Perm};

/// A caller as the permission check sees it: the admin key, an access key, or nobody.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub is_admin: bool,
    /// `None` for an anonymous request.
    pub access_key: Option<&'a str>,
}

/// The admin key and the bucket's owner own it.
pub fn is_owner(who: Who<'_>, bucket: &BucketRecord) -> bool {
    who.is_admin || who.access_key == Some(bucket.owner.as_str())
}

/// Whether the bucket's ACL lets anyone read it.
pub fn is_public_read(bucket: &BucketRecord) -> bool {
    bucket.acl == "public-read" || bucket.acl == "public-read-write"
}

/// Reading objects: the owner, a key granted read, or anyone on a public-read bucket.
pub fn may_read(who: Who<'_>, bucket: &BucketRecord, grant: Option<Perm>) -> bool {
    is_owner(who, bucket) || grant.is_some_and(Perm::can_read) || is_public_read(bucket)
}

/// Writing objects: the owner or a key granted write. The one anonymous write is a POST form
/// without a policy, [`may_post_anonymously`].
pub fn may_write(who: Who<'_>, bucket: &BucketRecord, grant: Option<Perm>) -> bool {
    is_owner(who, bucket) || grant.is_some_and(Perm::can_write)
}

/// A browser POST form without a policy (no signature, no key): only a public-read-write
/// bucket takes it, as S3 does. Every other anonymous write is refused.
pub fn may_post_anonymously(bucket: &BucketRecord) -> bool {
    bucket.acl == "public-read-write"
}
