//! AWS Signature Version 4 for S3: header auth, presigned URLs (query auth), and the signer
//! that aws-chunked bodies use for their chunk signatures.
//!
//! Owns parsing of `Authorization: AWS4-HMAC-SHA256 …` and of the `X-Amz-*` query parameters,
//! the S3 flavour of the canonical request (the path is not normalised: S3 keeps `//` and `..`),
//! the signing key, the checks of scope, clock skew and expiry, and the constant-time comparison.
//! Everything here is a pure function of the request and the clock; key lookup is the caller's.
//!
//! Specs:
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html> (seed signature)

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use percent_encoding::percent_decode_str;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc2822};

use super::secret::{SecretKey, ct_eq_str};
use super::{AuthError, Payload, RequestView, Verified};

/// The only SigV4 algorithm S3 accepts from us.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` value: the body is not covered by the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// `x-amz-content-sha256` value: aws-chunked body, each chunk signed.
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// `x-amz-content-sha256` value: aws-chunked body, chunks and trailer signed.
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// `x-amz-content-sha256` value: aws-chunked body, nothing signed, checksum trailer.
/// The SDK default for PutObject since January 2025.
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Longest lifetime of a presigned URL (`X-Amz-Expires`): one week.
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 604_800;
/// Largest accepted difference between the request's clock and ours.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(15);

const AMZ_DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
const ISO8601_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

const HEADER_PREFIX: &str = "The authorization header is malformed; ";
const QUERY_PREFIX: &str = "Error parsing the X-Amz-Credential parameter; ";
const CREDENTIAL_SHAPE: &str =
    "the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".";
const QUERY_PARAMS_MISSING: &str = "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.";

// ---------------------------------------------------------------------------------------------
// Primitives

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC is defined for keys of any length (RFC 2104 hashes long keys), so this cannot fail;
    // the input is our own key material, never client data.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex SHA-256 of `data`.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The SigV4 signing key: `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
/// "aws4_request")`. `date` is `yyyymmdd`. Also used for POST policy signatures.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k_secret = Vec::with_capacity(secret.len() + 4);
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac_sha256(&k_secret, date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// The most signing keys [`cached_signing_key`] keeps (one per access key, region and service in
/// use on a day: a handful in practice).
const SIGNING_KEYS_MAX: usize = 64;

/// A signing key derived earlier, with what it was derived from.
struct CachedKey {
    secret: Box<str>,
    date: Box<str>,
    region: Box<str>,
    service: Box<str>,
    key: [u8; 32],
}

/// Signing keys derived lately. A key holds for a whole day, and deriving it is four HMACs
/// (16 SHA-256 blocks): more than hashing a request's canonical form and signing it together,
/// and, without this, done again for every request.
static SIGNING_KEYS: std::sync::Mutex<Vec<CachedKey>> = std::sync::Mutex::new(Vec::new());

/// [`signing_key`], from a small process-wide cache (the oldest entry goes when it is full).
/// Secrets are compared in constant time.
pub fn cached_signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let found = |keys: &[CachedKey]| {
        keys.iter()
            .find(|k| {
                &*k.date == date
                    && &*k.region == region
                    && &*k.service == service
                    && ct_eq_str(&k.secret, secret)
            })
            .map(|k| k.key)
    };
    if let Some(key) = found(&SIGNING_KEYS.lock().unwrap_or_else(|e| e.into_inner())) {
        return key;
    }
    let key = signing_key(secret, date, region, service);
    let mut keys = SIGNING_KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if found(&keys).is_none() {
        if keys.len() >= SIGNING_KEYS_MAX {
            keys.remove(0);
        }
        keys.push(CachedKey {
            secret: secret.into(),
            date: date.into(),
            region: region.into(),
            service: service.into(),
            key,
        });
    }
    key
}

/// Lowercase hex `HMAC-SHA256(key, string_to_sign)`: the signature.
pub fn sign(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(key, string_to_sign.as_bytes()))
}

/// The credential scope `date/region/service/aws4_request`.
pub fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// AWS `UriEncode`: keeps `A-Z a-z 0-9 - . _ ~`, and `/` unless `encode_slash`; every other
/// byte of the UTF-8 input becomes `%XX` with uppercase hex.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    uri_encode_into(&mut out, s.as_bytes(), encode_slash);
    out
}

fn uri_encode_into(out: &mut String, bytes: &[u8], encode_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b'/' if !encode_slash => out.push('/'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

/// Parses `yyyymmddThhmmssZ`.
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    if s.len() != 16 {
        return None;
    }
    PrimitiveDateTime::parse(s, AMZ_DATE_FORMAT)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Formats as `yyyymmddThhmmssZ` (UTC).
pub fn format_amz_date(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(AMZ_DATE_FORMAT)
        .unwrap_or_default()
}

/// Formats as `yyyy-mm-ddThh:mm:ssZ` (UTC), the form of `ServerTime`/`Expires` in S3 errors.
pub fn format_iso8601(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(ISO8601_FORMAT)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Query strings

/// One query parameter, percent-decoded (`+` stays `+`: S3 signs RFC 3986 encoding, not forms).
/// `value` is `None` for a bare flag such as `?uploads`; SigV2 tells the two apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam {
    pub name: String,
    pub value: Option<String>,
}

impl QueryParam {
    pub fn value_str(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

/// Splits a raw query string into decoded parameters, in order. Bytes that do not decode to
/// UTF-8 become U+FFFD; SDKs only ever sign UTF-8.
pub fn parse_query(raw: &str) -> Vec<QueryParam> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (pair, None),
            };
            QueryParam {
                name: percent_decode_str(name).decode_utf8_lossy().into_owned(),
                value: value.map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned()),
            }
        })
        .collect()
}

fn find_param<'a>(params: &'a [QueryParam], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|p| p.name == name)
        .map(QueryParam::value_str)
}

/// What a presigned URL is for: the request it allows, and who signs it.
pub struct Presign<'a> {
    pub method: &'a str,
    /// `scheme://host[:port]`, as the client will connect.
    pub base: &'a str,
    /// The path, already percent-encoded as it will be sent (`/bucket/key`).
    pub path: &'a str,
    /// Extra query parameters, already encoded (`partNumber=1&uploadId=…`), or empty.
    pub query: &'a str,
    pub access_key: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub expires_secs: i64,
    pub now: OffsetDateTime,
}

/// A SigV4 presigned URL (query authentication, `host` signed, `UNSIGNED-PAYLOAD`): what the
/// server hands a browser so it can upload a part without the secret.
pub fn presign_url(p: &Presign<'_>) -> String {
    let amz_date = format_amz_date(p.now);
    let scope = scope(&amz_date[..8], p.region, "s3");
    let mut query = p.query.to_owned();
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(&format!(
        "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={}&X-Amz-SignedHeaders=host",
        uri_encode(&format!("{}/{scope}", p.access_key), true),
        p.expires_secs
    ));
    let host = p
        .base
        .split_once("://")
        .map_or(p.base, |(_, rest)| rest)
        .trim_end_matches('/');
    let mut headers = HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(host) {
        headers.insert(http::header::HOST, v);
    }
    let signed = vec!["host".to_owned()];
    let creq = canonical_request(
        p.method,
        &canonical_uri(p.path),
        &canonical_query(&parse_query(&query), true),
        &canonical_headers(&signed, &headers, None),
        &signed,
        UNSIGNED_PAYLOAD,
    );
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let key = signing_key(p.secret, &amz_date[..8], p.region, "s3");
    format!(
        "{}{}?{query}&X-Amz-Signature={}",
        p.base.trim_end_matches('/'),
        p.path,
        sign(&key, &sts)
    )
}

// ---------------------------------------------------------------------------------------------
// Canonical request

/// Canonical URI: the raw path, percent-decoded, re-encoded with `uri_encode(.., false)`.
/// S3 does not normalise the path, so `//` and `..` are signed as sent.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_owned();
    }
    let decoded: Vec<u8> = percent_decode_str(raw_path).collect();
    let mut out = String::with_capacity(decoded.len());
    uri_encode_into(&mut out, &decoded, false);
    out
}

/// Canonical query string: names and values `uri_encode(.., true)`, sorted by name then value,
/// `name=` for empty values. `X-Amz-Signature` is left out when `presigned`.
pub fn canonical_query(params: &[QueryParam], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|p| !(presigned && p.name == "X-Amz-Signature"))
        .map(|p| (uri_encode(&p.name, true), uri_encode(p.value_str(), true)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Canonical headers block: `name:value\n` for each signed header, in the order signed. Values
/// are trimmed with inner whitespace runs collapsed; repeated headers are comma-joined. A signed
/// `host` missing from the map (HTTP/2) falls back to the URI authority.
pub fn canonical_headers(
    signed_headers: &[String],
    headers: &HeaderMap,
    authority: Option<&str>,
) -> String {
    let mut out = String::new();
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        let mut values = headers.get_all(name.as_str()).iter().peekable();
        if values.peek().is_none() {
            if name == "host"
                && let Some(authority) = authority
            {
                push_normalized(&mut out, authority);
            }
        } else {
            for (i, value) in values.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_normalized(&mut out, &String::from_utf8_lossy(value.as_bytes()));
            }
        }
        out.push('\n');
    }
    out
}

fn push_normalized(out: &mut String, value: &str) {
    for (i, word) in value.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// Joins the six parts of a canonical request.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{payload_hash}",
        signed_headers.join(";")
    )
}

/// `AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex(sha256(canonical_request))}`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Parsed credentials

/// `Credential=AKID/yyyymmdd/region/service/aws4_request`, split but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub terminator: String,
}

impl Credential {
    /// Splits the five parts; `None` if the shape is wrong (empty key, date not 8 digits, …).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let access_key = parts.next()?;
        let date = parts.next()?;
        let region = parts.next()?;
        let service = parts.next()?;
        let terminator = parts.next()?;
        if parts.next().is_some()
            || access_key.is_empty()
            || date.len() != 8
            || !date.bytes().all(|b| b.is_ascii_digit())
            || region.is_empty()
        {
            return None;
        }
        Some(Self {
            access_key: access_key.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            terminator: terminator.to_owned(),
        })
    }

    pub fn scope(&self) -> String {
        scope(&self.date, &self.region, &self.service)
    }
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4HeaderAuth {
    pub credential: Credential,
    /// Lowercase, in the order the client listed them.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl V4HeaderAuth {
    /// Parses the whole header value. Tolerates any whitespace around the commas.
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        let rest = value.trim_start();
        let Some(rest) = rest.strip_prefix(ALGORITHM) else {
            return Err(AuthError::UnsupportedAlgorithm);
        };
        if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for component in rest.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let malformed = || {
                AuthError::header_malformed(format!(
                    "{HEADER_PREFIX}the authorization component \"{component}\" is malformed."
                ))
            };
            let (key, val) = component.split_once('=').ok_or_else(malformed)?;
            let val = val.trim();
            match key.trim() {
                "Credential" => credential = Some(val),
                "SignedHeaders" => signed_headers = Some(val),
                "Signature" => signature = Some(val),
                _ => return Err(malformed()),
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (credential, signed_headers, signature)
        else {
            return Err(AuthError::header_malformed(format!(
                "{HEADER_PREFIX}the authorization header requires three components: Credential, SignedHeaders, and Signature."
            )));
        };
        let credential = Credential::parse(credential).ok_or_else(|| {
            AuthError::header_malformed(format!("{HEADER_PREFIX}{CREDENTIAL_SHAPE}"))
        })?;
        let signed_headers = split_signed_headers(signed_headers).ok_or_else(|| {
            AuthError::header_malformed(format!(
                "{HEADER_PREFIX}the authorization component \"SignedHeaders={signed_headers}\" is malformed."
            ))
        })?;
        Ok(Self {
            credential,
            signed_headers,
            signature: signature.to_owned(),
        })
    }
}

fn split_signed_headers(s: &str) -> Option<Vec<String>> {
    let names: Vec<String> = s
        .split(';')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    if names.iter().any(String::is_empty) {
        None
    } else {
        Some(names)
    }
}

/// Parsed presigned-URL parameters (`X-Amz-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4QueryAuth {
    pub credential: Credential,
    pub signed_headers: Vec<String>,
    pub signature: String,
    /// `X-Amz-Date` as sent (`yyyymmddThhmmssZ`, already checked).
    pub amz_date: String,
    pub expires_secs: i64,
    pub security_token: Option<String>,
}

impl V4QueryAuth {
    /// Parses and checks the syntax of the `X-Amz-*` parameters, in the order AWS reports them.
    pub fn parse(params: &[QueryParam]) -> Result<Self, AuthError> {
        let get = |name| find_param(params, name);
        let (
            Some(algorithm),
            Some(credential),
            Some(signature),
            Some(amz_date),
            Some(signed_headers),
            Some(expires),
        ) = (
            get("X-Amz-Algorithm"),
            get("X-Amz-Credential"),
            get("X-Amz-Signature"),
            get("X-Amz-Date"),
            get("X-Amz-SignedHeaders"),
            get("X-Amz-Expires"),
        )
        else {
            return Err(AuthError::query_error(QUERY_PARAMS_MISSING));
        };
        if algorithm != ALGORITHM {
            return Err(AuthError::query_error(
                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
            ));
        }
        let credential = Credential::parse(credential)
            .ok_or_else(|| AuthError::query_error(format!("{QUERY_PREFIX}{CREDENTIAL_SHAPE}")))?;
        if parse_amz_date(amz_date).is_none() {
            return Err(AuthError::query_error(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
            ));
        }
        let expires_secs: i64 = expires
            .parse()
            .map_err(|_| AuthError::query_error("X-Amz-Expires should be a number"))?;
        if expires_secs < 0 {
            return Err(AuthError::query_error("X-Amz-Expires must be non-negative"));
        }
        if expires_secs > MAX_PRESIGNED_EXPIRES_SECS {
            return Err(AuthError::query_error(
                "X-Amz-Expires must be less than a week (in seconds) that is 604800",
            ));
        }
        let signed_headers = split_signed_headers(signed_headers)
            .ok_or_else(|| AuthError::query_error("X-Amz-SignedHeaders is malformed"))?;
        Ok(Self {
            credential,
            signed_headers,
            signature: signature.to_owned(),
            amz_date: amz_date.to_owned(),
            expires_secs,
            security_token: get("X-Amz-Security-Token").map(str::to_owned),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk signer

/// What the aws-chunked decoder needs to check chunk and trailer signatures: the request's
/// signing key, date and scope, and the seed signature (the request's own signature).
#[derive(Clone)]
pub struct ChunkSigner {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    seed_signature: String,
}

impl fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSigner")
            .field("amz_date", &self.amz_date)
            .field("scope", &self.scope)
            .field("seed_signature", &self.seed_signature)
            .finish_non_exhaustive()
    }
}

impl ChunkSigner {
    pub fn new(key: [u8; 32], amz_date: String, scope: String, seed_signature: String) -> Self {
        Self {
            key,
            amz_date,
            scope,
            seed_signature,
        }
    }

    pub fn seed_signature(&self) -> &str {
        &self.seed_signature
    }

    /// `AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{sha256("")}\n{chunk_sha256}`.
    pub fn chunk_string_to_sign(&self, previous_signature: &str, chunk_sha256: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous_signature}\n{EMPTY_SHA256}\n{chunk_sha256}",
            self.amz_date, self.scope
        )
    }

    /// `AWS4-HMAC-SHA256-TRAILER\n{date}\n{scope}\n{previous}\n{trailers_sha256}`.
    pub fn trailer_string_to_sign(
        &self,
        previous_signature: &str,
        trailers_sha256: &str,
    ) -> String {
        format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{previous_signature}\n{trailers_sha256}",
            self.amz_date, self.scope
        )
    }

    pub fn sign(&self, string_to_sign: &str) -> String {
        sign(&self.key, string_to_sign)
    }
}

// ---------------------------------------------------------------------------------------------
// Verification

/// What `x-amz-content-sha256` announced, before we know whether the request is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContentSha256 {
    Hash(String),
    Unsigned,
    StreamingSigned,
    StreamingSignedTrailer,
    StreamingUnsignedTrailer,
}

impl ContentSha256 {
    pub(crate) fn parse(value: &str) -> Result<Self, AuthError> {
        let value = value.trim();
        Ok(match value {
            UNSIGNED_PAYLOAD => Self::Unsigned,
            STREAMING_SIGNED => Self::StreamingSigned,
            STREAMING_SIGNED_TRAILER => Self::StreamingSignedTrailer,
            STREAMING_UNSIGNED_TRAILER => Self::StreamingUnsignedTrailer,
            _ if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Self::Hash(value.to_ascii_lowercase())
            }
            _ => {
                return Err(AuthError::InvalidContentSha256 {
                    value: value.to_owned(),
                });
            }
        })
    }

    pub(crate) fn into_payload(self, signer: impl FnOnce() -> ChunkSigner) -> Payload {
        match self {
            Self::Hash(h) if h == EMPTY_SHA256 => Payload::Empty,
            Self::Hash(h) => Payload::Signed(h),
            Self::Unsigned => Payload::Unsigned,
            Self::StreamingSigned => Payload::StreamingSigned(signer()),
            Self::StreamingSignedTrailer => Payload::StreamingSignedTrailer(signer()),
            Self::StreamingUnsignedTrailer => Payload::StreamingUnsignedTrailer,
        }
    }
}

#[derive(Clone, Copy)]
enum Via {
    Header,
    Query,
}

impl Via {
    fn error(self, message: String, region: Option<String>) -> AuthError {
        match self {
            Via::Header => AuthError::AuthorizationHeaderMalformed {
                message: format!("{HEADER_PREFIX}{message}"),
                region,
            },
            Via::Query => AuthError::AuthorizationQueryParametersError {
                message: format!("{QUERY_PREFIX}{message}"),
                region,
            },
        }
    }
}

/// Checks the credential scope against our region, S3, and the request date.
fn check_scope(
    credential: &Credential,
    region: &str,
    request_date: &str,
    via: Via,
) -> Result<(), AuthError> {
    if credential.region != region {
        return Err(via.error(
            format!(
                "the region '{}' is wrong; expecting '{region}'",
                credential.region
            ),
            Some(region.to_owned()),
        ));
    }
    if credential.service != "s3" {
        return Err(via.error(
            format!(
                "incorrect service \"{}\". This endpoint belongs to \"s3\".",
                credential.service
            ),
            None,
        ));
    }
    if credential.terminator != "aws4_request" {
        return Err(via.error(
            format!(
                "incorrect terminal \"{}\". This endpoint uses \"aws4_request\".",
                credential.terminator
            ),
            None,
        ));
    }
    if credential.date != request_date {
        return Err(via.error(
            format!(
                "Invalid credential date \"{}\". This date is not the same as X-Amz-Date: \"{request_date}\".",
                credential.date
            ),
            None,
        ));
    }
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The request time for header auth: `x-amz-date` (ISO 8601 basic; RFC 1123 tolerated), else
/// `Date` (RFC 1123). Returns the value as sent and the parsed time.
fn request_time(headers: &HeaderMap) -> Result<(String, OffsetDateTime), AuthError> {
    let raw = header_str(headers, "x-amz-date")
        .or_else(|| header_str(headers, "date"))
        .ok_or(AuthError::MissingDate)?;
    let t = parse_amz_date(raw)
        .or_else(|| OffsetDateTime::parse(raw, &Rfc2822).ok())
        .ok_or(AuthError::MissingDate)?;
    Ok((raw.to_owned(), t))
}

/// Header auth must be within [`MAX_CLOCK_SKEW`] of our clock, in either direction.
pub(crate) fn check_skew(
    request_time_raw: &str,
    t: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), AuthError> {
    if (now - t).abs() > MAX_CLOCK_SKEW {
        return Err(AuthError::RequestTimeTooSkewed {
            request_time: request_time_raw.to_owned(),
            server_time: format_iso8601(now),
            max_allowed_skew_ms: 900_000,
        });
    }
    Ok(())
}

/// AWS refuses a SigV4 request whose signature leaves out `host` or any `x-amz-*` header it
/// carries (403 AccessDenied "There were headers present in the request which were not signed",
/// `<HeadersNotSigned>` listing them, AWS-recorded for both a missing `host` and an unsigned
/// `x-amz-acl`). Without this rule, anyone holding a signed request could add `x-amz-acl:
/// public-read`, `x-amz-meta-*` or `x-amz-copy-source` to it, or replay it on another host.
///
/// `x-amz-content-sha256` is exempt in header auth: its value is the last line of the canonical
/// request, so the signature covers it whether or not `SignedHeaders` names it (this is what
/// lets generic SigV4 signers, which hash the body without sending the header, call the JSON
/// API). In a presigned URL the payload line is `UNSIGNED-PAYLOAD` unless the header is signed,
/// so there it is not exempt.
fn check_signed_headers(
    headers: &HeaderMap,
    signed_headers: &[String],
    exempt_content_sha256: bool,
) -> Result<(), AuthError> {
    let signed = |name: &str| signed_headers.iter().any(|s| s == name);
    let mut unsigned: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|name| name.starts_with("x-amz-"))
        .filter(|name| !(exempt_content_sha256 && *name == "x-amz-content-sha256"))
        .filter(|name| !signed(name))
        .collect();
    if !signed("host") {
        unsigned.push("host");
    }
    if unsigned.is_empty() {
        return Ok(());
    }
    unsigned.sort_unstable();
    Err(AuthError::HeadersNotSigned {
        headers: unsigned.join(", "),
    })
}

struct SignedParts<'a> {
    credential: &'a Credential,
    signed_headers: &'a [String],
    signature: &'a str,
    amz_date: String,
    presigned: bool,
    payload_hash: String,
}

/// Recomputes the signature and compares it in constant time. Returns the signing key so the
/// caller can build a [`ChunkSigner`].
///
/// The path is tried in two forms. SDKs sign the path exactly as they send it (botocore's S3
/// signer, the JS and Rust SDKs with S3's settings: no normalisation, no second encoding); for
/// the usual encoding that is [`canonical_uri`]'s form, which also accepts a client that
/// encoded more or less than it signed. A client that sent another encoding of the same key
/// (`%2F` in a key, lowercase hex, `!` or `(` left as is) signed its own bytes: the path as
/// sent is then tried too. Both name the same key, the one the server acts on.
fn check_signature(
    parts: &SignedParts<'_>,
    req: &RequestView<'_>,
    secret: &SecretKey,
) -> Result<[u8; 32], AuthError> {
    let params = parse_query(req.query.unwrap_or(""));
    let query = canonical_query(&params, parts.presigned);
    let headers = canonical_headers(parts.signed_headers, req.headers, req.authority);
    let key = cached_signing_key(
        secret.expose(),
        &parts.credential.date,
        &parts.credential.region,
        &parts.credential.service,
    );
    let canonical = canonical_uri(req.path);
    let as_sent = (!req.path.is_empty() && req.path != canonical).then_some(req.path);
    let mut first = None;
    for path in std::iter::once(canonical.as_str()).chain(as_sent) {
        let creq = canonical_request(
            req.method.as_str(),
            path,
            &query,
            &headers,
            parts.signed_headers,
            &parts.payload_hash,
        );
        let sts = string_to_sign(&parts.amz_date, &parts.credential.scope(), &creq);
        if ct_eq_str(&sign(&key, &sts), parts.signature) {
            return Ok(key);
        }
        first.get_or_insert((sts, creq));
    }
    let (sts, creq) = first.unwrap_or_default();
    Err(AuthError::SignatureDoesNotMatch {
        access_key: parts.credential.access_key.clone(),
        string_to_sign: sts,
        signature_provided: parts.signature.to_owned(),
        canonical_request: Some(creq),
    })
}

/// Verifies `Authorization: AWS4-HMAC-SHA256 …`.
pub fn verify_header(
    auth: &V4HeaderAuth,
    req: &RequestView<'_>,
    secret: &SecretKey,
    region: &str,
    now: OffsetDateTime,
) -> Result<Verified, AuthError> {
    let (raw_time, t) = request_time(req.headers)?;
    let amz_date = format_amz_date(t);
    check_scope(
        &auth.credential,
        region,
        amz_date.get(..8).unwrap_or(""),
        Via::Header,
    )?;
    check_skew(&raw_time, t, now)?;
    let payload_hash = header_str(req.headers, "x-amz-content-sha256")
        .ok_or(AuthError::MissingContentSha256)?
        .to_owned();
    let content = ContentSha256::parse(&payload_hash)?;
    check_signed_headers(req.headers, &auth.signed_headers, true)?;
    let parts = SignedParts {
        credential: &auth.credential,
        signed_headers: &auth.signed_headers,
        signature: &auth.signature,
        amz_date,
        presigned: false,
        payload_hash,
    };
    let key = check_signature(&parts, req, secret)?;
    Ok(Verified {
        access_key: auth.credential.access_key.clone(),
        payload: content.into_payload(|| chunk_signer(key, &parts)),
    })
}

/// Verifies a presigned URL (`X-Amz-*` query parameters).
pub fn verify_query(
    auth: &V4QueryAuth,
    req: &RequestView<'_>,
    secret: &SecretKey,
    region: &str,
    now: OffsetDateTime,
) -> Result<Verified, AuthError> {
    let t = parse_amz_date(&auth.amz_date).ok_or_else(|| {
        AuthError::query_error(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        )
    })?;
    check_scope(
        &auth.credential,
        region,
        auth.amz_date.get(..8).unwrap_or(""),
        Via::Query,
    )?;
    if t - now > MAX_CLOCK_SKEW {
        return Err(AuthError::NotYetValid);
    }
    // `checked_add`: the client picks the date, and `+` panics past year 9999.
    let Some(expires_at) = t.checked_add(Duration::seconds(auth.expires_secs)) else {
        return Err(AuthError::NotYetValid);
    };
    if now > expires_at {
        return Err(AuthError::Expired {
            expires: format_iso8601(expires_at),
            server_time: format_iso8601(now),
        });
    }
    check_signed_headers(req.headers, &auth.signed_headers, false)?;
    // A presigned URL's body is unsigned, unless the client signed an x-amz-content-sha256.
    let content = match header_str(req.headers, "x-amz-content-sha256") {
        Some(value)
            if auth
                .signed_headers
                .iter()
                .any(|s| s == "x-amz-content-sha256") =>
        {
            ContentSha256::parse(value)?
        }
        _ => ContentSha256::Unsigned,
    };
    let payload_hash = match &content {
        ContentSha256::Unsigned => UNSIGNED_PAYLOAD.to_owned(),
        _ => header_str(req.headers, "x-amz-content-sha256")
            .unwrap_or(UNSIGNED_PAYLOAD)
            .to_owned(),
    };
    let parts = SignedParts {
        credential: &auth.credential,
        signed_headers: &auth.signed_headers,
        signature: &auth.signature,
        amz_date: auth.amz_date.clone(),
        presigned: true,
        payload_hash,
    };
    let key = check_signature(&parts, req, secret)?;
    Ok(Verified {
        access_key: auth.credential.access_key.clone(),
        payload: content.into_payload(|| chunk_signer(key, &parts)),
    })
}

fn chunk_signer(key: [u8; 32], parts: &SignedParts<'_>) -> ChunkSigner {
    ChunkSigner::new(
        key,
        parts.amz_date.clone(),
        parts.credential.scope(),
        parts.signature.to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Method, Uri};
    use time::macros::datetime;

    use super::*;

    #[test]
    fn cached_signing_keys_are_the_derived_ones() {
        let derived = signing_key(SECRET, "20130524", "us-east-1", "s3");
        for _ in 0..2 {
            assert_eq!(
                cached_signing_key(SECRET, "20130524", "us-east-1", "s3"),
                derived
            );
        }
        // Any part that differs is another key, never the cached one.
        for (secret, date, region, service) in [
            ("another secret", "20130524", "us-east-1", "s3"),
            (SECRET, "20130525", "us-east-1", "s3"),
            (SECRET, "20130524", "eu-west-1", "s3"),
            (SECRET, "20130524", "us-east-1", "sts"),
        ] {
            assert_eq!(
                cached_signing_key(secret, date, region, service),
                signing_key(secret, date, region, service)
            );
            assert_ne!(cached_signing_key(secret, date, region, service), derived);
        }
        // Past the bound, the oldest goes and keys stay right.
        for day in 0..2 * SIGNING_KEYS_MAX {
            let date = format!("2013{:04}", 101 + day);
            assert_eq!(
                cached_signing_key(SECRET, &date, "us-east-1", "s3"),
                signing_key(SECRET, &date, "us-east-1", "s3")
            );
        }
        assert!(SIGNING_KEYS.lock().unwrap().len() <= SIGNING_KEYS_MAX);
    }
    use crate::auth::{Credentials, parse_request, verify};

    // The AWS documentation's example credentials.
    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const NOW: OffsetDateTime = datetime!(2013-05-24 00:00:00 UTC);

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

    fn secret() -> SecretKey {
        SecretKey::new(SECRET.to_owned())
    }

    fn authorization(signed: &str, signature: &str) -> String {
        format!(
            "{ALGORITHM} Credential={AKID}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={signature}"
        )
    }

    /// Parses and verifies a request the way the server does.
    fn check(
        method: Method,
        uri: &str,
        h: &HeaderMap,
        region: &str,
        now: OffsetDateTime,
    ) -> Result<Verified, AuthError> {
        let uri: Uri = uri.parse().unwrap();
        let creds = parse_request(&uri, h)?;
        let req = RequestView::new(&method, &uri, h);
        verify(&creds, &req, &secret(), region, now)
    }

    /// Found by the differential fuzz target (fuzz/fuzz_targets/sigv4_differential.rs): the
    /// `aws-sigv4` crate, with S3's settings, signs the path as sent, here a key `X-Amz/` whose
    /// slash the client encoded. The minimised input, signed by that crate.
    #[test]
    fn path_signed_as_sent_with_an_encoded_slash() {
        let h = headers(&[
            ("host", "127.0.0.1:9000"),
            ("x-amz-date", "20200101T000000Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAFUZZEXAMPLE00001/20200101/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
                 Signature=2847cee3dc0f61debb4f4cd88be204533274efce2b37df4c2488f75f1f35dd41",
            ),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ]);
        let uri: Uri = "/fuzzbucket/X-Amz%2F/".parse().unwrap();
        let creds = parse_request(&uri, &h).unwrap();
        let secret = SecretKey::new("fuzzSecretKey/0123456789abcdefghijklmnopq".to_owned());
        let now = datetime!(2020-01-01 00:00:00 UTC);
        let req = RequestView::new(&Method::PUT, &uri, &h);
        verify(&creds, &req, &secret, "us-east-1", now).unwrap();
        // Another path is still refused, in either form.
        for other in [
            "/fuzzbucket/X-Amz%2F",
            "/fuzzbucket/X-Amz//",
            "/fuzzbucket/X-Amz%2f/",
        ] {
            let uri: Uri = other.parse().unwrap();
            let req = RequestView::new(&Method::PUT, &uri, &h);
            let err = verify(&creds, &req, &secret, "us-east-1", now).unwrap_err();
            assert!(
                matches!(err, AuthError::SignatureDoesNotMatch { .. }),
                "{other}"
            );
        }
    }

    // -- AWS vectors: "Signature Calculations for the Authorization Header: Transferring Payload
    //    in a Single Chunk" (sig-v4-header-based-auth.html), bucket examplebucket, 20130524.

    fn get_object_headers(signature: &str) -> HeaderMap {
        headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                &authorization("host;range;x-amz-content-sha256;x-amz-date", signature),
            ),
        ])
    }

    const GET_OBJECT_SIGNATURE: &str =
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    #[test]
    fn aws_example_get_object_intermediate_strings() {
        let h = get_object_headers(GET_OBJECT_SIGNATURE);
        let signed: Vec<String> = ["host", "range", "x-amz-content-sha256", "x-amz-date"]
            .map(str::to_owned)
            .to_vec();
        let creq = canonical_request(
            "GET",
            &canonical_uri("/test.txt"),
            &canonical_query(&[], false),
            &canonical_headers(&signed, &h, None),
            &signed,
            EMPTY_SHA256,
        );
        assert_eq!(
            creq,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let sts = string_to_sign(
            "20130524T000000Z",
            &scope("20130524", "us-east-1", "s3"),
            &creq,
        );
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        let key = signing_key(SECRET, "20130524", "us-east-1", "s3");
        assert_eq!(sign(&key, &sts), GET_OBJECT_SIGNATURE);
    }

    #[test]
    fn aws_example_get_object_verifies() {
        let h = get_object_headers(GET_OBJECT_SIGNATURE);
        let v = check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap();
        assert_eq!(v.access_key, AKID);
        assert!(matches!(v.payload, Payload::Empty));
    }

    #[test]
    fn aws_example_put_object_verifies() {
        let payload = hex_sha256(b"Welcome to Amazon S3.");
        assert_eq!(
            payload,
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
        let h = headers(&[
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", &payload),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "authorization",
                &authorization(
                    "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                    "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
                ),
            ),
        ]);
        // The key is `test$file.text`; the path arrives encoded and is signed as `%24`.
        let v = check(Method::PUT, "/test%24file.text", &h, "us-east-1", NOW).unwrap();
        assert!(matches!(v.payload, Payload::Signed(ref p) if *p == payload));
        let v = check(Method::PUT, "/test$file.text", &h, "us-east-1", NOW).unwrap();
        assert!(matches!(v.payload, Payload::Signed(_)));
    }

    fn bucket_get_headers(signature: &str) -> HeaderMap {
        headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                &authorization("host;x-amz-content-sha256;x-amz-date", signature),
            ),
        ])
    }

    #[test]
    fn aws_example_get_bucket_lifecycle_verifies() {
        let sig = "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543";
        assert_eq!(
            canonical_query(&parse_query("lifecycle"), false),
            "lifecycle="
        );
        check(
            Method::GET,
            "/?lifecycle",
            &bucket_get_headers(sig),
            "us-east-1",
            NOW,
        )
        .unwrap();
    }

    #[test]
    fn aws_example_list_objects_verifies() {
        let sig = "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7";
        let h = bucket_get_headers(sig);
        assert_eq!(
            canonical_query(&parse_query("prefix=J&max-keys=2"), false),
            "max-keys=2&prefix=J"
        );
        check(Method::GET, "/?max-keys=2&prefix=J", &h, "us-east-1", NOW).unwrap();
        // Parameter order on the wire does not matter.
        check(Method::GET, "/?prefix=J&max-keys=2", &h, "us-east-1", NOW).unwrap();
    }

    // -- AWS vector: "Authenticating Requests: Using Query Parameters" (sigv4-query-string-auth).

    const PRESIGNED: &str = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";

    fn presigned_host() -> HeaderMap {
        headers(&[("host", "examplebucket.s3.amazonaws.com")])
    }

    #[test]
    fn aws_example_presigned_url_intermediate_strings() {
        let params = parse_query(PRESIGNED.split_once('?').unwrap().1);
        let signed = vec!["host".to_owned()];
        let creq = canonical_request(
            "GET",
            "/test.txt",
            &canonical_query(&params, true),
            &canonical_headers(&signed, &presigned_host(), None),
            &signed,
            UNSIGNED_PAYLOAD,
        );
        assert_eq!(
            creq,
            "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
             host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        let sts = string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &creq,
        );
        assert!(sts.ends_with("3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"));
    }

    #[test]
    fn aws_example_presigned_url_verifies() {
        let v = check(
            Method::GET,
            PRESIGNED,
            &presigned_host(),
            "us-east-1",
            NOW + Duration::hours(1),
        )
        .unwrap();
        assert_eq!(v.access_key, AKID);
        assert!(matches!(v.payload, Payload::Unsigned));
        // HTTP/2: no Host header, the URI authority stands in.
        let uri: Uri = format!("https://examplebucket.s3.amazonaws.com{PRESIGNED}")
            .parse()
            .unwrap();
        let h = HeaderMap::new();
        let creds = parse_request(&uri, &h).unwrap();
        let req = RequestView::new(&Method::GET, &uri, &h);
        verify(&creds, &req, &secret(), "us-east-1", NOW).unwrap();
    }

    #[test]
    fn presigned_url_expiry() {
        let h = presigned_host();
        // Valid up to and including X-Amz-Date + X-Amz-Expires.
        check(
            Method::GET,
            PRESIGNED,
            &h,
            "us-east-1",
            NOW + Duration::seconds(86400),
        )
        .unwrap();
        let err = check(
            Method::GET,
            PRESIGNED,
            &h,
            "us-east-1",
            NOW + Duration::seconds(86401),
        )
        .unwrap_err();
        assert_eq!(
            err,
            AuthError::Expired {
                expires: "2013-05-25T00:00:00Z".to_owned(),
                server_time: "2013-05-25T00:00:01Z".to_owned(),
            }
        );
        assert_eq!(err.to_string(), "Request has expired");
        let err = check(
            Method::GET,
            PRESIGNED,
            &h,
            "us-east-1",
            NOW - Duration::hours(1),
        )
        .unwrap_err();
        assert_eq!(err, AuthError::NotYetValid);
        // Small clock differences are tolerated, as for header auth.
        check(
            Method::GET,
            PRESIGNED,
            &h,
            "us-east-1",
            NOW - Duration::minutes(14),
        )
        .unwrap();
    }

    /// Signs header-auth `h` over `signed` with the pure functions, as an SDK would.
    fn sign_header_auth(method: &str, path: &str, signed: &[&str], h: &mut HeaderMap) {
        let payload = header_str(h, "x-amz-content-sha256")
            .unwrap_or(EMPTY_SHA256)
            .to_owned();
        let signed: Vec<String> = signed.iter().map(|s| (*s).to_owned()).collect();
        let creq = canonical_request(
            method,
            &canonical_uri(path),
            "",
            &canonical_headers(&signed, h, None),
            &signed,
            &payload,
        );
        let sts = string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &creq,
        );
        let sig = sign(&signing_key(SECRET, "20130524", "us-east-1", "s3"), &sts);
        let value = authorization(&signed.join(";"), &sig);
        h.insert("authorization", HeaderValue::from_str(&value).unwrap());
    }

    #[test]
    fn header_auth_rejects_unsigned_amz_headers() {
        // The AWS PUT vector, with an ACL added after signing: AWS refuses the request before
        // looking at the signature, naming the header.
        let mut h = headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let signed = ["host", "x-amz-content-sha256", "x-amz-date"];
        sign_header_auth("PUT", "/k", &signed, &mut h);
        check(Method::PUT, "/k", &h, "us-east-1", NOW).unwrap();
        h.insert("x-amz-acl", HeaderValue::from_static("public-read"));
        h.insert("x-amz-meta-a", HeaderValue::from_static("1"));
        h.insert("content-language", HeaderValue::from_static("en")); // not x-amz-*: fine
        let err = check(Method::PUT, "/k", &h, "us-east-1", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::HeadersNotSigned {
                headers: "x-amz-acl, x-amz-meta-a".to_owned()
            }
        );
        // Signed, the same headers are fine.
        sign_header_auth(
            "PUT",
            "/k",
            &[
                "content-language",
                "host",
                "x-amz-acl",
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-meta-a",
            ],
            &mut h,
        );
        check(Method::PUT, "/k", &h, "us-east-1", NOW).unwrap();
    }

    #[test]
    fn header_auth_requires_host_to_be_signed() {
        let mut h = headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        sign_header_auth("GET", "/k", &["x-amz-content-sha256", "x-amz-date"], &mut h);
        let err = check(Method::GET, "/k", &h, "us-east-1", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::HeadersNotSigned {
                headers: "host".to_owned()
            }
        );
    }

    #[test]
    fn header_auth_content_sha256_is_covered_without_being_listed() {
        // Its value is the canonical request's payload line, so leaving it out of
        // SignedHeaders does not leave it unprotected: changing it breaks the signature.
        let payload = hex_sha256(b"body");
        let mut h = headers(&[
            ("host", "h"),
            ("x-amz-content-sha256", &payload),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        sign_header_auth("PUT", "/k", &["host", "x-amz-date"], &mut h);
        let v = check(Method::PUT, "/k", &h, "us-east-1", NOW).unwrap();
        assert!(matches!(v.payload, Payload::Signed(ref p) if *p == payload));
        h.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(UNSIGNED_PAYLOAD),
        );
        let err = check(Method::PUT, "/k", &h, "us-east-1", NOW).unwrap_err();
        assert!(matches!(err, AuthError::SignatureDoesNotMatch { .. }));
    }

    #[test]
    fn presigned_url_requires_host_and_a_signed_content_sha256() {
        let h = headers(&[("host", "h")]);
        let url = presign("GET", "/b/k", "", &["x-amz-date"], &h, UNSIGNED_PAYLOAD);
        let err = check(Method::GET, &url, &h, "us-east-1", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::HeadersNotSigned {
                headers: "host".to_owned()
            }
        );
        // The payload line of a presigned URL is UNSIGNED-PAYLOAD unless the header is signed,
        // so an unsigned x-amz-content-sha256 is an unsigned header like any other.
        let mut h = headers(&[("host", "h")]);
        let url = presign("PUT", "/b/k", "", &["host"], &h, UNSIGNED_PAYLOAD);
        check(Method::PUT, &url, &h, "us-east-1", NOW).unwrap();
        h.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(EMPTY_SHA256),
        );
        let err = check(Method::PUT, &url, &h, "us-east-1", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::HeadersNotSigned {
                headers: "x-amz-content-sha256".to_owned()
            }
        );
    }

    #[test]
    fn presigned_url_rejects_unsigned_amz_headers() {
        let mut h = presigned_host();
        h.insert("x-amz-meta-b", HeaderValue::from_static("1"));
        h.insert("x-amz-acl", HeaderValue::from_static("public-read"));
        h.insert("content-type", HeaderValue::from_static("text/plain")); // not x-amz-*: fine
        let err = check(Method::GET, PRESIGNED, &h, "us-east-1", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::HeadersNotSigned {
                headers: "x-amz-acl, x-amz-meta-b".to_owned()
            }
        );
        assert_eq!(
            err.to_string(),
            "There were headers present in the request which were not signed"
        );
    }

    /// Presigns a URL with the pure functions (as an SDK would) for cases AWS has no vector for.
    fn presign(
        method: &str,
        path: &str,
        extra_query: &str,
        signed: &[&str],
        h: &HeaderMap,
        payload: &str,
    ) -> String {
        let mut query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AKID}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders={}",
            signed.join("%3B")
        );
        if !extra_query.is_empty() {
            query = format!("{query}&{extra_query}");
        }
        let signed: Vec<String> = signed.iter().map(|s| (*s).to_owned()).collect();
        let creq = canonical_request(
            method,
            &canonical_uri(path),
            &canonical_query(&parse_query(&query), true),
            &canonical_headers(&signed, h, None),
            &signed,
            payload,
        );
        let sts = string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &creq,
        );
        let sig = sign(&signing_key(SECRET, "20130524", "us-east-1", "s3"), &sts);
        format!("{path}?{query}&X-Amz-Signature={sig}")
    }

    #[test]
    fn presigned_url_with_signed_content_sha256_and_token() {
        let payload = hex_sha256(b"hello");
        let h = headers(&[("host", "h"), ("x-amz-content-sha256", &payload)]);
        let url = presign(
            "PUT",
            "/b/k",
            "X-Amz-Security-Token=tok%2Ben",
            &["host", "x-amz-content-sha256"],
            &h,
            &payload,
        );
        let v = check(Method::PUT, &url, &h, "us-east-1", NOW).unwrap();
        assert!(matches!(v.payload, Payload::Signed(ref p) if *p == payload));
        let uri: Uri = url.parse().unwrap();
        let Credentials::V4Query(q) = parse_request(&uri, &h).unwrap() else {
            panic!("expected V4Query");
        };
        assert_eq!(q.security_token.as_deref(), Some("tok+en"));
        assert_eq!(q.expires_secs, 3600);
    }

    #[test]
    fn presigned_url_tampered_query_fails() {
        let h = headers(&[("host", "h")]);
        let url = presign(
            "GET",
            "/b/k",
            "response-content-type=text%2Fplain",
            &["host"],
            &h,
            UNSIGNED_PAYLOAD,
        );
        check(Method::GET, &url, &h, "us-east-1", NOW).unwrap();
        let tampered = url.replace("text%2Fplain", "text%2Fhtml");
        let err = check(Method::GET, &tampered, &h, "us-east-1", NOW).unwrap_err();
        assert!(matches!(err, AuthError::SignatureDoesNotMatch { .. }));
        // Method is signed too.
        let err = check(Method::PUT, &url, &h, "us-east-1", NOW).unwrap_err();
        assert!(matches!(err, AuthError::SignatureDoesNotMatch { .. }));
    }

    #[test]
    fn presigned_parameter_errors_use_aws_wording() {
        let h = presigned_host();
        let run = |url: &str| check(Method::GET, url, &h, "us-east-1", NOW).unwrap_err();
        let query_err = |m: &str| AuthError::AuthorizationQueryParametersError {
            message: m.to_owned(),
            region: None,
        };
        assert_eq!(
            run("/t?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab"),
            query_err(QUERY_PARAMS_MISSING)
        );
        assert_eq!(
            run(&PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801")),
            query_err("X-Amz-Expires must be less than a week (in seconds) that is 604800")
        );
        check(
            Method::GET,
            &PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=604800"),
            &h,
            "us-east-1",
            NOW,
        )
        .map(|_| ())
        .unwrap_or_else(|e| assert!(matches!(e, AuthError::SignatureDoesNotMatch { .. })));
        assert_eq!(
            run(&PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=soon")),
            query_err("X-Amz-Expires should be a number")
        );
        assert_eq!(
            run(&PRESIGNED.replace("X-Amz-Expires=86400", "X-Amz-Expires=-1")),
            query_err("X-Amz-Expires must be non-negative")
        );
        assert_eq!(
            run(&PRESIGNED.replace("20130524T000000Z", "2013-05-24")),
            query_err("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
        );
        assert_eq!(
            run(&PRESIGNED.replace(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256",
                "X-Amz-Algorithm=AWS4-HMAC-SHA1"
            )),
            query_err("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
        );
        assert_eq!(
            run(&PRESIGNED.replace("%2Fus-east-1%2Fs3", "%2Fs3")),
            query_err(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."
            )
        );
        assert_eq!(
            run(&PRESIGNED.replace("%2Fs3%2F", "%2Fs4%2F")),
            query_err(
                "Error parsing the X-Amz-Credential parameter; incorrect service \"s4\". This endpoint belongs to \"s3\"."
            )
        );
        assert_eq!(
            run(&PRESIGNED.replace("%2Faws4_request", "%2Faws5_request")),
            query_err(
                "Error parsing the X-Amz-Credential parameter; incorrect terminal \"aws5_request\". This endpoint uses \"aws4_request\"."
            )
        );
        assert_eq!(
            run(&PRESIGNED.replace("%2F20130524%2F", "%2F20130523%2F")),
            query_err(
                "Error parsing the X-Amz-Credential parameter; Invalid credential date \"20130523\". This date is not the same as X-Amz-Date: \"20130524\"."
            )
        );
        let err = check(Method::GET, PRESIGNED, &h, "eu-west-1", NOW).unwrap_err();
        assert_eq!(
            err,
            AuthError::AuthorizationQueryParametersError {
                message: "Error parsing the X-Amz-Credential parameter; the region 'us-east-1' is wrong; expecting 'eu-west-1'".to_owned(),
                region: Some("eu-west-1".to_owned()),
            }
        );
    }

    // -- Header auth errors.

    #[test]
    fn wrong_secret_gives_signature_does_not_match_with_debug_fields() {
        let h = get_object_headers(GET_OBJECT_SIGNATURE);
        let uri: Uri = "/test.txt".parse().unwrap();
        let creds = parse_request(&uri, &h).unwrap();
        let req = RequestView::new(&Method::GET, &uri, &h);
        let wrong = SecretKey::new("not-the-secret".to_owned());
        let err = verify(&creds, &req, &wrong, "us-east-1", NOW).unwrap_err();
        let AuthError::SignatureDoesNotMatch {
            access_key,
            string_to_sign,
            signature_provided,
            canonical_request,
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(access_key, AKID);
        assert!(
            string_to_sign
                .ends_with("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")
        );
        assert_eq!(signature_provided, GET_OBJECT_SIGNATURE);
        assert!(
            canonical_request
                .as_deref()
                .unwrap()
                .starts_with("GET\n/test.txt\n")
        );
        assert!(!format!("{err:?}").contains(SECRET));
        assert_eq!(
            err.to_string(),
            "The request signature we calculated does not match the signature you provided. Check your key and signing method."
        );
    }

    #[test]
    fn signature_comparison_rejects_near_misses() {
        // One changed hex digit, uppercase hex, and a truncated signature all fail.
        for sig in [
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb40",
            "F0E8BDB87C964420E857BD35B5D6ED310BD44F0170ABA48DD91039C6036BDB41",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb4",
            "",
        ] {
            let h = get_object_headers(sig);
            let res = check(Method::GET, "/test.txt", &h, "us-east-1", NOW);
            assert!(
                matches!(
                    res,
                    Err(AuthError::SignatureDoesNotMatch { .. })
                        | Err(AuthError::AuthorizationHeaderMalformed { .. })
                ),
                "{sig}: {res:?}"
            );
        }
    }

    #[test]
    fn tampered_header_fails() {
        let mut h = get_object_headers(GET_OBJECT_SIGNATURE);
        h.insert("range", HeaderValue::from_static("bytes=0-99"));
        let err = check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap_err();
        assert!(matches!(err, AuthError::SignatureDoesNotMatch { .. }));
    }

    #[test]
    fn clock_skew_is_fifteen_minutes_either_way() {
        let h = get_object_headers(GET_OBJECT_SIGNATURE);
        for ok in [NOW + Duration::minutes(15), NOW - Duration::minutes(15)] {
            check(Method::GET, "/test.txt", &h, "us-east-1", ok).unwrap();
        }
        for skewed in [NOW + Duration::seconds(901), NOW - Duration::seconds(901)] {
            let err = check(Method::GET, "/test.txt", &h, "us-east-1", skewed).unwrap_err();
            assert_eq!(
                err,
                AuthError::RequestTimeTooSkewed {
                    request_time: "20130524T000000Z".to_owned(),
                    server_time: format_iso8601(skewed),
                    max_allowed_skew_ms: 900_000,
                }
            );
        }
        assert_eq!(
            check(
                Method::GET,
                "/test.txt",
                &h,
                "us-east-1",
                NOW + Duration::hours(1)
            )
            .unwrap_err()
            .to_string(),
            "The difference between the request time and the current time is too large."
        );
    }

    #[test]
    fn date_header_stands_in_for_x_amz_date() {
        // No vector: sign with the pure functions, using only `Date`.
        let mut h = headers(&[
            ("host", "h"),
            ("date", "Fri, 24 May 2013 00:00:00 GMT"),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
        ]);
        let signed: Vec<String> = ["date", "host", "x-amz-content-sha256"]
            .map(str::to_owned)
            .to_vec();
        let creq = canonical_request(
            "GET",
            "/b/k",
            "",
            &canonical_headers(&signed, &h, None),
            &signed,
            UNSIGNED_PAYLOAD,
        );
        let sts = string_to_sign(
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            &creq,
        );
        let sig = sign(&signing_key(SECRET, "20130524", "us-east-1", "s3"), &sts);
        h.insert(
            "authorization",
            HeaderValue::from_str(&authorization("date;host;x-amz-content-sha256", &sig)).unwrap(),
        );
        let v = check(Method::GET, "/b/k", &h, "us-east-1", NOW).unwrap();
        assert!(matches!(v.payload, Payload::Unsigned));
    }

    #[test]
    fn missing_or_bad_dates_and_payload_hashes() {
        let mut h = get_object_headers(GET_OBJECT_SIGNATURE);
        h.remove("x-amz-content-sha256");
        assert_eq!(
            check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap_err(),
            AuthError::MissingContentSha256
        );
        h.insert("x-amz-content-sha256", HeaderValue::from_static("abc"));
        assert_eq!(
            check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap_err(),
            AuthError::InvalidContentSha256 {
                value: "abc".to_owned()
            }
        );
        let mut h = get_object_headers(GET_OBJECT_SIGNATURE);
        h.remove("x-amz-date");
        let err = check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap_err();
        assert_eq!(err, AuthError::MissingDate);
        assert_eq!(
            err.to_string(),
            "AWS authentication requires a valid Date or x-amz-date header"
        );
        h.insert("x-amz-date", HeaderValue::from_static("yesterday"));
        assert_eq!(
            check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap_err(),
            AuthError::MissingDate
        );
    }

    #[test]
    fn credential_scope_errors_use_aws_wording() {
        let with_credential = |credential: &str| {
            let mut h = get_object_headers(GET_OBJECT_SIGNATURE);
            h.insert(
                "authorization",
                HeaderValue::from_str(&format!(
                    "{ALGORITHM} Credential={credential}, SignedHeaders=host, Signature=00"
                ))
                .unwrap(),
            );
            check(Method::GET, "/test.txt", &h, "us-east-1", NOW).unwrap_err()
        };
        let malformed = |m: &str| AuthError::AuthorizationHeaderMalformed {
            message: format!("The authorization header is malformed; {m}"),
            region: None,
        };
        assert_eq!(
            with_credential("AKID/20130524/us-east-1/s3"),
            malformed(
                "the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."
            )
        );
        assert_eq!(
            with_credential("AKID/2013052/us-east-1/s3/aws4_request"),
            malformed(
                "the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."
            )
        );
        assert_eq!(
            with_credential("AKID/20130524/us-east-1/iam/aws4_request"),
            malformed("incorrect service \"iam\". This endpoint belongs to \"s3\".")
        );
        assert_eq!(
            with_credential("AKID/20130524/us-east-1/s3/aws4_reqest"),
            malformed("incorrect terminal \"aws4_reqest\". This endpoint uses \"aws4_request\".")
        );
        assert_eq!(
            with_credential("AKID/20130525/us-east-1/s3/aws4_request"),
            malformed(
                "Invalid credential date \"20130525\". This date is not the same as X-Amz-Date: \"20130524\"."
            )
        );
        let err = with_credential("AKID/20130524/eu-west-1/s3/aws4_request");
        assert_eq!(
            err,
            AuthError::AuthorizationHeaderMalformed {
                message: "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting 'us-east-1'".to_owned(),
                region: Some("us-east-1".to_owned()),
            }
        );
    }

    #[test]
    fn authorization_header_parsing_tolerates_spacing() {
        for value in [
            "AWS4-HMAC-SHA256 Credential=A/20130524/r/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=ab",
            "AWS4-HMAC-SHA256 Credential=A/20130524/r/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab",
            "AWS4-HMAC-SHA256  Credential=A/20130524/r/s3/aws4_request ,  SignedHeaders=Host;X-Amz-Date ,Signature=ab ",
        ] {
            let auth = V4HeaderAuth::parse(value).unwrap();
            assert_eq!(auth.credential.access_key, "A");
            assert_eq!(auth.credential.scope(), "20130524/r/s3/aws4_request");
            assert_eq!(auth.signed_headers, ["host", "x-amz-date"]);
            assert_eq!(auth.signature, "ab");
        }
    }

    #[test]
    fn authorization_header_parse_errors() {
        let err = V4HeaderAuth::parse(
            "AWS4-HMAC-SHA256 Credential=A/20130524/r/s3/aws4_request, Signature=ab",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "The authorization header is malformed; the authorization header requires three components: Credential, SignedHeaders, and Signature."
        );
        let err = V4HeaderAuth::parse("AWS4-HMAC-SHA256 Credential=A/20130524/r/s3/aws4_request, SignedHeaders=host, Signature=ab, Foo")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "The authorization header is malformed; the authorization component \"Foo\" is malformed."
        );
        let err = V4HeaderAuth::parse("AWS4-HMAC-SHA256 Credential=A/20130524/r/s3/aws4_request, SignedHeaders=host;;date, Signature=ab")
            .unwrap_err();
        assert!(matches!(
            err,
            AuthError::AuthorizationHeaderMalformed { .. }
        ));
        assert_eq!(
            V4HeaderAuth::parse("AWS4-HMAC-SHA256Credential=x").unwrap_err(),
            AuthError::UnsupportedAlgorithm
        );
        // Garbage never panics.
        for value in [
            "AWS4-HMAC-SHA256 ",
            "AWS4-HMAC-SHA256 ,,,",
            "AWS4-HMAC-SHA256 =,=,=",
            "AWS4-HMAC-SHA256 Credential=////",
        ] {
            assert!(V4HeaderAuth::parse(value).is_err(), "{value}");
        }
    }

    // -- Canonical forms.

    #[test]
    fn uri_encode_follows_aws_rules() {
        assert_eq!(uri_encode("AZaz09-._~", true), "AZaz09-._~");
        assert_eq!(uri_encode("a/b c+d*é", false), "a/b%20c%2Bd%2A%C3%A9");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(uri_encode("", true), "");
    }

    #[test]
    fn canonical_uri_is_not_normalised() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/b//a/../k"), "/b//a/../k");
        assert_eq!(canonical_uri("/b/a%2ab%20c"), "/b/a%2Ab%20c");
        assert_eq!(canonical_uri("/b/a+b"), "/b/a%2Bb");
        assert_eq!(canonical_uri("/b/%E2%82%AC"), "/b/%E2%82%AC");
        // Invalid percent sequences and non-UTF-8 bytes are carried through, not panicked on.
        assert_eq!(canonical_uri("/b/%zz%ff"), "/b/%25zz%FF");
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query(&parse_query(""), false), "");
        assert_eq!(
            canonical_query(&parse_query("b=1&a=2&a=1&uploads"), false),
            "a=1&a=2&b=1&uploads="
        );
        // `+` is a literal plus, not a space.
        assert_eq!(
            canonical_query(&parse_query("q=a+b%20c"), false),
            "q=a%2Bb%20c"
        );
        assert_eq!(
            canonical_query(&parse_query("X-Amz-Signature=x&a=%2f"), true),
            "a=%2F"
        );
        assert_eq!(
            parse_query("a&b=&c=d"),
            vec![
                QueryParam {
                    name: "a".to_owned(),
                    value: None
                },
                QueryParam {
                    name: "b".to_owned(),
                    value: Some(String::new())
                },
                QueryParam {
                    name: "c".to_owned(),
                    value: Some("d".to_owned())
                },
            ]
        );
    }

    #[test]
    fn canonical_headers_trim_collapse_and_join() {
        let h = headers(&[
            ("x-amz-meta-a", "  one   two  "),
            ("x-amz-meta-a", "three"),
            ("host", "h"),
        ]);
        let signed: Vec<String> = ["host", "x-amz-meta-a", "x-amz-missing"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            canonical_headers(&signed, &h, None),
            "host:h\nx-amz-meta-a:one two,three\nx-amz-missing:\n"
        );
    }

    #[test]
    fn amz_dates_round_trip() {
        let t = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(t, NOW);
        assert_eq!(format_amz_date(t), "20130524T000000Z");
        assert_eq!(format_iso8601(t), "2013-05-24T00:00:00Z");
        for bad in [
            "",
            "20130524",
            "20130524T000000",
            "2013052XT000000Z",
            "20131324T000000Z",
            "+0130524T000000Z",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn adversarial_inputs_never_panic() {
        let far = PRESIGNED.replace("20130524T000000Z", "99991231T235959Z");
        let far = far.replace("%2F20130524%2F", "%2F99991231%2F");
        let res = check(Method::GET, &far, &presigned_host(), "us-east-1", NOW);
        assert_eq!(res.unwrap_err(), AuthError::NotYetValid);
        let res = check(
            Method::GET,
            &far,
            &presigned_host(),
            "us-east-1",
            datetime!(9999-12-31 23:59:59 UTC),
        );
        assert!(res.is_err());
        let mut h = get_object_headers(GET_OBJECT_SIGNATURE);
        h.insert("x-amz-date", HeaderValue::from_static("00000101T000000Z"));
        assert!(check(Method::GET, "/test.txt", &h, "us-east-1", NOW).is_err());
        for query in [
            "X-Amz-Algorithm",
            "X-Amz-Credential=%ff%fe&X-Amz-Algorithm=%",
            "&&&=&=%%%",
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb&X-Amz-Date=x&X-Amz-Expires=99999999999999999999&X-Amz-SignedHeaders=&X-Amz-Signature=",
        ] {
            let uri: Uri = format!("/k?{query}").parse().unwrap();
            let _ = parse_request(&uri, &HeaderMap::new());
        }
        for value in [
            "AWS4-",
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request, SignedHeaders=host, Signature=\u{e9}",
            "AWS ",
            "AWS a:b:c",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
            let uri: Uri = "/".parse().unwrap();
            if let Ok(creds) = parse_request(&uri, &h) {
                let req = RequestView::new(&Method::GET, &uri, &h);
                let _ = verify(&creds, &req, &secret(), "us-east-1", NOW);
            }
        }
        // Non-UTF-8 header bytes.
        let mut h = get_object_headers(GET_OBJECT_SIGNATURE);
        h.insert("range", HeaderValue::from_bytes(b"bytes=\xff").unwrap());
        assert!(check(Method::GET, "/test.txt", &h, "us-east-1", NOW).is_err());
    }

    #[test]
    fn chunk_signer_debug_hides_the_key() {
        let signer = ChunkSigner::new([7; 32], "d".to_owned(), "s".to_owned(), "seed".to_owned());
        assert!(!format!("{signer:?}").contains("7, 7"));
        assert_eq!(signer.seed_signature(), "seed");
    }
}
