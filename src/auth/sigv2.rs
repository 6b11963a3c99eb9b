//! AWS Signature Version 2 (legacy REST authentication): header and query-string forms.
//!
//! Owns parsing of `Authorization: AWS AKID:signature` and of the `AWSAccessKeyId`, `Expires`,
//! `Signature` query parameters, the SigV2 string to sign (canonicalized `x-amz-*` headers and
//! canonicalized resource with its signed sub-resources), HMAC-SHA1 signing, and the checks of
//! clock skew and expiry. SigV2 never signs the body, so a verified request's payload is
//! [`Payload::Unsigned`] (Content-MD5, when sent, is signed and the caller checks it).
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/RESTAuthentication.html>

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha1::Sha1;
use time::{OffsetDateTime, format_description::well_known::Rfc2822};

use super::secret::{SecretKey, ct_eq_str};
use super::sigv4::{QueryParam, check_skew, format_iso8601, parse_amz_date, parse_query};
use super::{AuthError, Payload, RequestView, Verified};

/// Query parameters that are part of the canonicalized resource, as S3 signs them.
pub const SUB_RESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// A parsed `Authorization: AWS AKID:signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2HeaderAuth {
    pub access_key: String,
    /// Base64 HMAC-SHA1, as sent.
    pub signature: String,
}

impl V2HeaderAuth {
    /// Parses the whole header value, `AWS AKID:signature`.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let malformed = || AuthError::MalformedV2Header {
            value: value.to_owned(),
        };
        let rest = value.strip_prefix("AWS ").ok_or_else(malformed)?;
        let (access_key, signature) = rest.trim().split_once(':').ok_or_else(malformed)?;
        if access_key.is_empty() || signature.is_empty() {
            return Err(malformed());
        }
        Ok(Self {
            access_key: access_key.to_owned(),
            signature: signature.to_owned(),
        })
    }
}

/// Parsed SigV2 query-string authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2QueryAuth {
    pub access_key: String,
    pub signature: String,
    /// `Expires` as sent: it is signed verbatim.
    pub expires_raw: String,
    /// `Expires` in seconds since the epoch.
    pub expires: i64,
}

impl V2QueryAuth {
    pub fn parse(params: &[QueryParam]) -> Result<Self, AuthError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|p| p.name == name)
                .map(QueryParam::value_str)
        };
        let (Some(access_key), Some(expires_raw), Some(signature)) =
            (get("AWSAccessKeyId"), get("Expires"), get("Signature"))
        else {
            return Err(AuthError::V2QueryParametersMissing);
        };
        let expires = expires_raw
            .parse()
            .map_err(|_| AuthError::V2InvalidExpires {
                value: expires_raw.to_owned(),
            })?;
        Ok(Self {
            access_key: access_key.to_owned(),
            signature: signature.to_owned(),
            expires_raw: expires_raw.to_owned(),
            expires,
        })
    }
}

/// `x-amz-*` headers: lowercase names, sorted, repeated values comma-joined, values trimmed,
/// each line `name:value\n`. Blanks inside a value are kept as sent: unlike SigV4, SigV2 does
/// not collapse them, and botocore, the JS SDK v2 and MinIO sign them as they are (a value
/// `a b  c` signed by boto3 was refused while they were collapsed here). Folded lines, the one
/// whitespace SigV2 rewrites, cannot reach us: `http` refuses CR and LF in a value.
pub fn canonical_amz_headers(headers: &HeaderMap) -> String {
    let mut names: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| n.starts_with("x-amz-"))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::new();
    for name in names {
        out.push_str(name);
        out.push(':');
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = String::from_utf8_lossy(value.as_bytes());
            out.push_str(value.trim_matches([' ', '\t']));
        }
        out.push('\n');
    }
    out
}

/// `/bucket/key` as sent, plus the signed sub-resources (sorted by name, decoded values).
pub fn canonical_resource(resource_path: &str, params: &[QueryParam]) -> String {
    let mut subs: Vec<&QueryParam> = params
        .iter()
        .filter(|p| SUB_RESOURCES.contains(&p.name.as_str()))
        .collect();
    subs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = if resource_path.is_empty() {
        "/".to_owned()
    } else {
        resource_path.to_owned()
    };
    for (i, p) in subs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&p.name);
        match p.value.as_deref() {
            Some(v) if !v.is_empty() => {
                out.push('=');
                out.push_str(v);
            }
            _ => {}
        }
    }
    out
}

/// `METHOD\nContent-MD5\nContent-Type\nDate\n` + amz headers + resource.
pub fn string_to_sign(
    method: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    canonical_amz_headers: &str,
    canonical_resource: &str,
) -> String {
    format!(
        "{method}\n{content_md5}\n{content_type}\n{date}\n{canonical_amz_headers}{canonical_resource}"
    )
}

/// Base64 `HMAC-SHA1(secret, string_to_sign)`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    // HMAC is defined for keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map_or("", str::trim)
}

/// The other spelling of a bucket-level resource: `/bucket` ↔ `/bucket/`. S3 accepts both for
/// requests on the bucket itself, and clients differ: boto3 (`signature_version="s3"`,
/// path-style) signs `/bucket/` for `PUT /bucket` and `GET /bucket?prefix=…`, while other
/// clients sign the path as sent. `None` for the service root and for object resources.
pub fn bucket_resource_alternative(resource: &str) -> Option<String> {
    let inner = resource.strip_prefix('/')?;
    let (bucket, slash) = match inner.strip_suffix('/') {
        Some(bucket) => (bucket, true),
        None => (inner, false),
    };
    if bucket.is_empty() || bucket.contains('/') {
        return None;
    }
    Some(if slash {
        format!("/{bucket}")
    } else {
        format!("/{bucket}/")
    })
}

/// The string to sign over the resource as the request names it, then (for a bucket-level
/// request) over its other spelling (see [`bucket_resource_alternative`]).
fn build_strings_to_sign(req: &RequestView<'_>, date: &str) -> Vec<String> {
    let params = parse_query(req.query.unwrap_or(""));
    let resource = req.v2_resource.unwrap_or(req.path);
    let amz_headers = canonical_amz_headers(req.headers);
    let build = |resource: &str| {
        string_to_sign(
            req.method.as_str(),
            header_str(req.headers, "content-md5"),
            header_str(req.headers, "content-type"),
            date,
            &amz_headers,
            &canonical_resource(resource, &params),
        )
    };
    let mut out = vec![build(resource)];
    out.extend(bucket_resource_alternative(resource).map(|alt| build(&alt)));
    out
}

/// Accepts the signature if it matches one of `candidates`; a mismatch reports the first (the
/// resource as the request names it) as the `StringToSign`.
fn check(
    access_key: &str,
    signature: &str,
    candidates: Vec<String>,
    secret: &SecretKey,
) -> Result<Verified, AuthError> {
    let matched = candidates
        .iter()
        .any(|sts| ct_eq_str(&sign(secret.expose(), sts), signature));
    if matched {
        Ok(Verified {
            access_key: access_key.to_owned(),
            payload: Payload::Unsigned,
        })
    } else {
        Err(AuthError::SignatureDoesNotMatch {
            access_key: access_key.to_owned(),
            string_to_sign: candidates.into_iter().next().unwrap_or_default(),
            signature_provided: signature.to_owned(),
            canonical_request: None,
        })
    }
}

/// Verifies `Authorization: AWS AKID:signature`. The request time is `x-amz-date` if present
/// (and then the Date line of the string to sign is empty), else `Date`.
pub fn verify_header(
    auth: &V2HeaderAuth,
    req: &RequestView<'_>,
    secret: &SecretKey,
    now: OffsetDateTime,
) -> Result<Verified, AuthError> {
    let amz_date = header_str(req.headers, "x-amz-date");
    let date = header_str(req.headers, "date");
    let raw_time = if amz_date.is_empty() { date } else { amz_date };
    let t = OffsetDateTime::parse(raw_time, &Rfc2822)
        .ok()
        .or_else(|| parse_amz_date(raw_time))
        .ok_or(AuthError::MissingDate)?;
    check_skew(raw_time, t, now)?;
    let candidates = build_strings_to_sign(req, if amz_date.is_empty() { date } else { "" });
    check(&auth.access_key, &auth.signature, candidates, secret)
}

/// Verifies SigV2 query-string authentication (`Expires` replaces the Date line).
pub fn verify_query(
    auth: &V2QueryAuth,
    req: &RequestView<'_>,
    secret: &SecretKey,
    now: OffsetDateTime,
) -> Result<Verified, AuthError> {
    if now.unix_timestamp() > auth.expires {
        return Err(AuthError::Expired {
            expires: OffsetDateTime::from_unix_timestamp(auth.expires)
                .map_or_else(|_| auth.expires_raw.clone(), format_iso8601),
            server_time: format_iso8601(now),
        });
    }
    let candidates = build_strings_to_sign(req, &auth.expires_raw);
    check(&auth.access_key, &auth.signature, candidates, secret)
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method, Uri};
    use time::Duration;
    use time::macros::datetime;

    use super::*;
    use crate::auth::{Credentials, parse_request, verify};

    // Vectors from "Signing and authenticating REST requests" (RESTAuthentication). The page's
    // signatures were computed for its original bucket name `johnsmith`; the text later renamed
    // it `awsexamplebucket1` without recomputing, so both names appear below.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn check(
        method: Method,
        uri: &str,
        resource: &str,
        h: &HeaderMap,
        now: OffsetDateTime,
    ) -> Result<Verified, AuthError> {
        let uri: Uri = uri.parse().unwrap();
        let creds = parse_request(&uri, h)?;
        let req = RequestView::new(&method, &uri, h).with_v2_resource(resource);
        verify(
            &creds,
            &req,
            &SecretKey::new(SECRET.to_owned()),
            "us-east-1",
            now,
        )
    }

    fn signed(date: &str, signature: &str, extra: &[(&str, &str)]) -> HeaderMap {
        let auth = format!("AWS AKIAIOSFODNN7EXAMPLE:{signature}");
        let mut pairs = vec![("date", date), ("authorization", auth.as_str())];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    #[test]
    fn aws_example_object_get() {
        let date = "Tue, 27 Mar 2007 19:36:42 +0000";
        let now = datetime!(2007-03-27 19:36:42 UTC);
        let sts = string_to_sign(
            "GET",
            "",
            "",
            date,
            "",
            "/awsexamplebucket1/photos/puppy.jpg",
        );
        assert_eq!(
            sts,
            "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
        );
        assert_eq!(sign(SECRET, &sts), "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=");
        // Virtual-host request: the bucket comes from Host, the router supplies the resource.
        let h = signed(date, "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=", &[]);
        let v = check(
            Method::GET,
            "/photos/puppy.jpg",
            "/awsexamplebucket1/photos/puppy.jpg",
            &h,
            now,
        )
        .unwrap();
        assert_eq!(v.access_key, "AKIAIOSFODNN7EXAMPLE");
        assert!(matches!(v.payload, Payload::Unsigned));
        let h = signed(date, "bWq2s1WEIj+Ydj0vQ697zp+IXMU=", &[]);
        check(
            Method::GET,
            "/photos/puppy.jpg",
            "/johnsmith/photos/puppy.jpg",
            &h,
            now,
        )
        .unwrap();
    }

    #[test]
    fn aws_example_object_put() {
        let date = "Tue, 27 Mar 2007 21:15:45 +0000";
        let h = signed(
            date,
            "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
            &[("content-type", "image/jpeg"), ("content-length", "94328")],
        );
        check(
            Method::PUT,
            "/photos/puppy.jpg",
            "/johnsmith/photos/puppy.jpg",
            &h,
            datetime!(2007-03-27 21:15:45 UTC),
        )
        .unwrap();
    }

    #[test]
    fn aws_example_list_and_acl() {
        // List: query parameters that are not sub-resources are not signed.
        let h = signed(
            "Tue, 27 Mar 2007 19:42:41 +0000",
            "htDYFYduRNen8P9ZfE/s9SuKy0U=",
            &[],
        );
        check(
            Method::GET,
            "/?prefix=photos&max-keys=50&marker=puppy",
            "/johnsmith/",
            &h,
            datetime!(2007-03-27 19:42:41 UTC),
        )
        .unwrap();
        // Fetch ?acl: the sub-resource is signed.
        let h = signed(
            "Tue, 27 Mar 2007 19:44:46 +0000",
            "c2WLPFtWHVgbEmeEG93a4cG37dM=",
            &[],
        );
        check(
            Method::GET,
            "/?acl",
            "/johnsmith/",
            &h,
            datetime!(2007-03-27 19:44:46 UTC),
        )
        .unwrap();
    }

    #[test]
    fn bucket_resource_is_accepted_with_or_without_its_slash() {
        // The AWS list example signs `/johnsmith/`; boto3 path-style sends `GET /johnsmith?…`
        // with that same signature, and other clients sign `/johnsmith` for it.
        let h = signed(
            "Tue, 27 Mar 2007 19:42:41 +0000",
            "htDYFYduRNen8P9ZfE/s9SuKy0U=",
            &[],
        );
        let at = datetime!(2007-03-27 19:42:41 UTC);
        let list = "/johnsmith?prefix=photos&max-keys=50&marker=puppy";
        check(Method::GET, list, "/johnsmith", &h, at).unwrap();
        check(Method::GET, list, "/johnsmith/", &h, at).unwrap();
        let date = "Tue, 27 Mar 2007 19:42:41 +0000";
        let no_slash = sign(
            SECRET,
            &string_to_sign("GET", "", "", date, "", "/johnsmith"),
        );
        check(
            Method::GET,
            list,
            "/johnsmith/",
            &signed(date, &no_slash, &[]),
            at,
        )
        .unwrap();
        // Only the bucket itself has two spellings: not the service root, not an object.
        assert_eq!(bucket_resource_alternative("/"), None);
        assert_eq!(bucket_resource_alternative("/b/k"), None);
        assert_eq!(bucket_resource_alternative("/b/k/"), None);
        assert_eq!(bucket_resource_alternative("/b").as_deref(), Some("/b/"));
        assert_eq!(bucket_resource_alternative("/b/").as_deref(), Some("/b"));
        let object_sig = sign(
            SECRET,
            &string_to_sign("GET", "", "", date, "", "/johnsmith/k/"),
        );
        let err = check(
            Method::GET,
            "/johnsmith/k",
            "/johnsmith/k",
            &signed(date, &object_sig, &[]),
            at,
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::SignatureDoesNotMatch { .. }));
        // A mismatch reports the string to sign over the resource as the request names it.
        let Err(AuthError::SignatureDoesNotMatch { string_to_sign, .. }) = check(
            Method::GET,
            list,
            "/johnsmith",
            &signed(date, "AAAA", &[]),
            at,
        ) else {
            panic!("expected a mismatch");
        };
        assert!(string_to_sign.ends_with("\n/johnsmith"));
    }

    #[test]
    fn amz_headers_are_signed_by_construction() {
        // Every x-amz-* header is part of the string to sign: adding one (here an ACL that
        // would make the object public) to a signed request breaks its signature.
        let date = "Tue, 27 Mar 2007 21:15:45 +0000";
        let mut h = signed(
            date,
            "MyyxeRY7whkBe+bq8fHCL/2kKUg=",
            &[("content-type", "image/jpeg"), ("content-length", "94328")],
        );
        h.insert("x-amz-acl", HeaderValue::from_static("public-read"));
        let err = check(
            Method::PUT,
            "/photos/puppy.jpg",
            "/johnsmith/photos/puppy.jpg",
            &h,
            datetime!(2007-03-27 21:15:45 UTC),
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::SignatureDoesNotMatch { .. }));
    }

    /// Found by the fuzz corpus generator (fuzz/corpus/gen.py): boto3's SigV2 PutObject with a
    /// metadata value holding two spaces in a row. Signature computed as botocore's
    /// `HmacV1Auth` computes it (the value is trimmed, not collapsed).
    #[test]
    fn amz_header_values_keep_inner_blanks() {
        let h = signed(
            "Tue, 01 Dec 2026 20:00:00 GMT",
            "KtjNcUpySJtw/juTagsZmdMHzT8=",
            &[
                ("x-amz-meta-note", "a b  c"),
                ("content-type", "text/plain"),
            ],
        );
        assert_eq!(canonical_amz_headers(&h), "x-amz-meta-note:a b  c\n");
        check(
            Method::PUT,
            "/fuzzbucket/meta",
            "/fuzzbucket/meta",
            &h,
            datetime!(2026-12-01 20:00:00 UTC),
        )
        .unwrap();
    }

    #[test]
    fn aws_example_upload_with_amz_headers() {
        let h = signed(
            "Tue, 27 Mar 2007 21:06:08 +0000",
            "ilyl83RwaSoYIEdixDQcA4OnAnc=",
            &[
                ("x-amz-acl", "public-read"),
                ("content-type", "application/x-download"),
                ("content-md5", "4gJE4saaMU4BqNR0kLY+lw=="),
                ("x-amz-meta-reviewedby", "joe@johnsmith.net"),
                ("x-amz-meta-reviewedby", "jane@johnsmith.net"),
                ("x-amz-meta-filechecksum", "0x02661779"),
                ("x-amz-meta-checksumalgorithm", "crc32"),
                ("content-disposition", "attachment; filename=database.dat"),
                ("content-encoding", "gzip"),
                ("content-length", "5913339"),
            ],
        );
        assert_eq!(
            canonical_amz_headers(&h),
            "x-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\n\
             x-amz-meta-filechecksum:0x02661779\n\
             x-amz-meta-reviewedby:joe@johnsmith.net,jane@johnsmith.net\n"
        );
        check(
            Method::PUT,
            "/db-backup.dat.gz",
            "/static.johnsmith.net/db-backup.dat.gz",
            &h,
            datetime!(2007-03-27 21:06:08 UTC),
        )
        .unwrap();
    }

    #[test]
    fn aws_example_list_all_buckets_and_unicode_keys() {
        let h = signed(
            "Wed, 28 Mar 2007 01:29:59 +0000",
            "qGdzdERIC03wnaRNKh6OqZehG9s=",
            &[],
        );
        check(
            Method::GET,
            "/",
            "/",
            &h,
            datetime!(2007-03-28 01:29:59 UTC),
        )
        .unwrap();
        // The resource is signed exactly as sent, including the case of percent escapes.
        let path = "/dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re";
        let h = signed(
            "Wed, 28 Mar 2007 01:49:49 +0000",
            "DNEZGsoieTZ92F3bUfSPQcbGmlM=",
            &[],
        );
        let uri: Uri = path.parse().unwrap();
        let creds = parse_request(&uri, &h).unwrap();
        // No v2_resource: a path-style request's path is the resource.
        let req = RequestView::new(&Method::GET, &uri, &h);
        verify(
            &creds,
            &req,
            &SecretKey::new(SECRET.to_owned()),
            "us-east-1",
            datetime!(2007-03-28 01:49:49 UTC),
        )
        .unwrap();
    }

    #[test]
    fn x_amz_date_empties_the_date_line() {
        // The page's Delete example signs the x-amz-date value in the Date slot, contradicting
        // its own rule; SDKs (boto) sign an empty Date line plus an `x-amz-date:` header line,
        // which is what S3 accepts, so that is what is pinned here.
        let amz_date = "Tue, 27 Mar 2007 21:20:26 +0000";
        let sts = string_to_sign(
            "DELETE",
            "",
            "",
            "",
            &format!("x-amz-date:{amz_date}\n"),
            "/johnsmith/photos/puppy.jpg",
        );
        let sig = sign(SECRET, &sts);
        let h = signed(
            "Tue, 27 Mar 2007 21:20:27 +0000",
            &sig,
            &[("x-amz-date", amz_date)],
        );
        check(
            Method::DELETE,
            "/johnsmith/photos/puppy.jpg",
            "/johnsmith/photos/puppy.jpg",
            &h,
            datetime!(2007-03-27 21:20:26 UTC),
        )
        .unwrap();
    }

    #[test]
    fn aws_example_query_string_auth() {
        let url = "/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620";
        let h = HeaderMap::new();
        let before = OffsetDateTime::from_unix_timestamp(1_175_139_620).unwrap();
        let v = check(Method::GET, url, "/johnsmith/photos/puppy.jpg", &h, before).unwrap();
        assert_eq!(v.access_key, "AKIAIOSFODNN7EXAMPLE");
        let err = check(
            Method::GET,
            url,
            "/johnsmith/photos/puppy.jpg",
            &h,
            before + Duration::seconds(1),
        )
        .unwrap_err();
        assert_eq!(
            err,
            AuthError::Expired {
                expires: "2007-03-29T03:40:20Z".to_owned(),
                server_time: "2007-03-29T03:40:21Z".to_owned(),
            }
        );
        // Query auth has no clock-skew check: an old but unexpired URL is fine.
        check(
            Method::GET,
            url,
            "/johnsmith/photos/puppy.jpg",
            &h,
            before - Duration::days(1),
        )
        .unwrap();
    }

    #[test]
    fn query_auth_parameter_errors() {
        let h = HeaderMap::new();
        let now = datetime!(2007-03-27 00:00:00 UTC);
        let err = check(
            Method::GET,
            "/b/k?AWSAccessKeyId=A&Signature=x",
            "/b/k",
            &h,
            now,
        )
        .unwrap_err();
        assert_eq!(err, AuthError::V2QueryParametersMissing);
        assert_eq!(
            err.to_string(),
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
        );
        let err = check(
            Method::GET,
            "/b/k?AWSAccessKeyId=A&Signature=x&Expires=tomorrow",
            "/b/k",
            &h,
            now,
        )
        .unwrap_err();
        assert_eq!(
            err,
            AuthError::V2InvalidExpires {
                value: "tomorrow".to_owned()
            }
        );
    }

    #[test]
    fn header_auth_errors() {
        let now = datetime!(2007-03-27 19:36:42 UTC);
        let path = "/photos/puppy.jpg";
        let res = "/awsexamplebucket1/photos/puppy.jpg";
        // Wrong signature: the StringToSign is reported for debugging.
        let h = signed(
            "Tue, 27 Mar 2007 19:36:42 +0000",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            &[],
        );
        let err = check(Method::GET, path, res, &h, now).unwrap_err();
        assert_eq!(
            err,
            AuthError::SignatureDoesNotMatch {
                access_key: "AKIAIOSFODNN7EXAMPLE".to_owned(),
                string_to_sign:
                    "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
                        .to_owned(),
                signature_provided: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
                canonical_request: None,
            }
        );
        // Skew.
        let h = signed(
            "Tue, 27 Mar 2007 19:36:42 +0000",
            "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
            &[],
        );
        let err = check(Method::GET, path, res, &h, now + Duration::minutes(16)).unwrap_err();
        assert!(
            matches!(err, AuthError::RequestTimeTooSkewed { ref request_time, .. } if request_time == "Tue, 27 Mar 2007 19:36:42 +0000")
        );
        // No date at all.
        let h = headers(&[(
            "authorization",
            "AWS AKIAIOSFODNN7EXAMPLE:qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
        )]);
        assert_eq!(
            check(Method::GET, path, res, &h, now).unwrap_err(),
            AuthError::MissingDate
        );
        // GMT dates parse too.
        let h = signed("Tue, 27 Mar 2007 19:36:42 GMT", "x", &[]);
        assert!(matches!(
            check(Method::GET, path, res, &h, now).unwrap_err(),
            AuthError::SignatureDoesNotMatch { .. }
        ));
    }

    #[test]
    fn malformed_v2_headers() {
        for value in ["AWS AKID", "AWS :sig", "AWS AKID:", "AWS "] {
            let err = V2HeaderAuth::parse(value).unwrap_err();
            assert_eq!(
                err,
                AuthError::MalformedV2Header {
                    value: value.to_owned()
                }
            );
            assert_eq!(
                err.to_string(),
                "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"
            );
        }
        let ok = V2HeaderAuth::parse("AWS AKID:a+b/c=").unwrap();
        assert_eq!(
            (ok.access_key.as_str(), ok.signature.as_str()),
            ("AKID", "a+b/c=")
        );
        let uri: Uri = "/".parse().unwrap();
        let h = headers(&[("authorization", "AWS nocolon")]);
        assert!(matches!(
            parse_request(&uri, &h),
            Err(AuthError::MalformedV2Header { .. })
        ));
        assert!(matches!(
            parse_request(&uri, &headers(&[("authorization", "AWS A:b")])),
            Ok(Credentials::V2Header(_))
        ));
    }

    #[test]
    fn canonical_resource_keeps_only_signed_sub_resources() {
        let params = parse_query(
            "versionId=v%2B1&prefix=x&uploads&response-content-type=text%2Fplain&acl=&partNumber=2&uploadId=u",
        );
        assert_eq!(
            canonical_resource("/b/k", &params),
            "/b/k?acl&partNumber=2&response-content-type=text/plain&uploadId=u&uploads&versionId=v+1"
        );
        assert_eq!(canonical_resource("", &[]), "/");
    }
}
