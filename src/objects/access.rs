//! Who may do what to a bucket's objects: the one permission check every entry point uses (S3
//! requests, POST forms, the JSON API). Pure: the caller brings the bucket's row and the grant
//! the caller's key holds on it.

use crate::db::buckets::{BucketRecord, Perm};
use crate::objects::delete::DeleteCondition;

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

/// Deleting an object, for a caller who may write (`can_read`: whether it may also read). An
/// unconditioned delete needs write alone. A conditioned one (DeleteObject's `If-Match`,
/// `x-amz-if-match-size` or `x-amz-if-match-last-modified-time`, DeleteObjects' `<ETag>`,
/// `<Size>` or `<LastModifiedTime>`) also needs read: its answer (204, 412 PreconditionFailed
/// or 404 NoSuchKey) tells whether the object exists and what its ETag, size or time is, which
/// a write-only key (or a link's) must not learn by trying. AWS's conditional-deletes guide
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-delete-enforce.html>):
/// "conditional deletes with a specific ETag value require both `s3:DeleteObject` and
/// `s3:GetObject` permissions". postgate asks the same of `If-Match: *` and of the size and
/// time conditions, since each of them reveals as much.
pub fn may_delete(cond: &DeleteCondition, can_read: bool) -> bool {
    can_read || !cond.is_set()
}

/// A browser POST form without a policy (no signature, no key): only a public-read-write
/// bucket takes it, as S3 does. Every other anonymous write is refused.
pub fn may_post_anonymously(bucket: &BucketRecord) -> bool {
    bucket.acl == "public-read-write"
}
