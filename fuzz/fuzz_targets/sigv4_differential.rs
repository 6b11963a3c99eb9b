//! Differential SigV4: a request signed by an independent signer (the `aws-sigv4` crate, the
//! one the AWS Rust SDK uses, with S3's settings) must verify with postgate's verifier, in the
//! header and the presigned form; changing any one byte of what is signed (method, path, query,
//! a signed header, the date, the signature) must make it fail.
//!
//! The input is an arbitrary [`Req`]; path and query bytes are percent-encoded the way an SDK
//! sends them (RFC 3986 unreserved kept), the rest is arbitrary.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use postgate::auth::{self, RequestView, SecretKey};
use postgate_fuzz::{ACCESS_KEY, REGION, SECRET_KEY};

#[derive(Arbitrary, Debug)]
struct Req {
    method: u8,
    path: Vec<String>,
    query: Vec<(String, Option<String>)>,
    headers: Vec<(u8, String)>,
    presigned: bool,
    /// Seconds after 2020-01-01.
    time: u32,
    body: Body,
    /// Which byte of the signed request to change, and into what.
    change_at: u16,
    change_to: u8,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Empty,
    Bytes(Vec<u8>),
    Unsigned,
    Streaming,
}

const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"];
const HEADERS: [&str; 8] = [
    "content-type",
    "x-amz-meta-a",
    "x-amz-meta-b",
    "content-md5",
    "x-amz-acl",
    "range",
    "if-none-match",
    "x-amz-checksum-crc32",
];

/// RFC 3986 encoding of one path segment or query component, as SDKs send them.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request on the wire: method, path, query, headers.
#[derive(Clone, Debug)]
struct Wire {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

impl Wire {
    fn verify(&self, now: SystemTime) -> Result<(), String> {
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (n, v) in &self.headers {
            let n = HeaderName::from_bytes(n.as_bytes()).map_err(|e| e.to_string())?;
            let v = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            headers.append(n, v);
        }
        let target = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let uri: http::Uri = target
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let creds = auth::parse_request(&uri, &headers).map_err(|e| format!("{e:?}"))?;
        let view = RequestView::new(&method, &uri, &headers);
        let now = time::OffsetDateTime::from(now);
        let secret = SecretKey::new(SECRET_KEY.to_owned());
        auth::verify(&creds, &view, &secret, REGION, now)
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    }
}

fuzz_target!(|req: Req| {
    let method = METHODS[usize::from(req.method) % METHODS.len()];
    let path = format!(
        "/fuzzbucket/{}",
        req.path
            .iter()
            .map(|s| encode(s))
            .collect::<Vec<_>>()
            .join("/")
    );
    let query = req
        .query
        .iter()
        .filter(|(n, _)| !n.is_empty() && !n.to_ascii_lowercase().starts_with("x-amz-"))
        .filter(|(n, _)| {
            !["signature", "awsaccesskeyid", "expires"].contains(&n.to_ascii_lowercase().as_str())
        })
        .map(|(n, v)| match v {
            Some(v) => format!("{}={}", encode(n), encode(v)),
            None => format!("{}=", encode(n)),
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = vec![("host".into(), "127.0.0.1:9000".into())];
    for (i, value) in &req.headers {
        let value = value.trim();
        // ASCII only: the verifier reads other bytes as they are, but this target compares
        // text (`aws-sigv4` takes `&str` values). No tabs: `aws-sigv4` collapses runs of spaces
        // only, botocore and the JS SDK (and postgate) any whitespace, so the SDKs disagree.
        if value.is_empty()
            || !value.is_ascii()
            || value.contains('\t')
            || HeaderValue::from_str(value).is_err()
        {
            continue;
        }
        let name = HEADERS[usize::from(*i) % HEADERS.len()];
        if headers.iter().all(|(n, _)| n != name) {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let time = UNIX_EPOCH + Duration::from_secs(1_577_836_800 + u64::from(req.time));
    let body = match &req.body {
        // A presigned URL signs UNSIGNED-PAYLOAD (S3's rule, and what the SDKs' presigners pass).
        _ if req.presigned => SignableBody::UnsignedPayload,
        Body::Empty => SignableBody::Bytes(b""),
        Body::Bytes(b) => SignableBody::Bytes(b),
        Body::Unsigned => SignableBody::UnsignedPayload,
        Body::Streaming => SignableBody::StreamingUnsignedPayloadTrailer,
    };
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.session_token_mode = SessionTokenMode::Include;
    if req.presigned {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(3600));
    }
    let identity =
        aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "fuzz").into();
    let Ok(params) = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
    else {
        return;
    };
    let uri = if query.is_empty() {
        format!("http://127.0.0.1:9000{path}")
    } else {
        format!("http://127.0.0.1:9000{path}?{query}")
    };
    let Ok(signable) = SignableRequest::new(
        method,
        &uri,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body,
    ) else {
        return;
    };
    let Ok(output) = sign(signable, &params.into()) else {
        return;
    };
    let (instructions, _) = output.into_parts();
    let mut request = http::Request::builder().method(method).uri(&uri);
    for (n, v) in &headers {
        request = request.header(n, v);
    }
    let Ok(mut request) = request.body(()) else {
        return;
    };
    instructions.apply_to_request_http1x(&mut request);

    let wire = Wire {
        method: method.to_owned(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect(),
    };
    if let Err(e) = wire.verify(time) {
        panic!("aws-sigv4 signed it, postgate refused it: {e}\n{wire:#?}");
    }

    // One byte changed in a signed part: must be refused.
    let changed = change_one_byte(&wire, usize::from(req.change_at), req.change_to);
    if let Some(changed) = changed {
        assert!(
            changed.verify(time).is_err(),
            "verified after a change of a signed byte:\n{wire:#?}\n{changed:#?}"
        );
    }
});

/// The signed parts of the request as (part, bytes); a change must alter what is signed. Letters
/// and digits are swapped for other letters and digits (not a case change, which a percent
/// escape, a host name or the hex signature would not notice).
fn change_one_byte(wire: &Wire, at: usize, to: u8) -> Option<Wire> {
    let signed: Vec<String> = signed_header_names(wire);
    let mut spots: Vec<(usize, usize)> = Vec::new(); // (part, byte index)
    let parts = parts_of(wire);
    for (p, text) in parts.iter().enumerate() {
        for (i, b) in text.bytes().enumerate() {
            if b.is_ascii_alphanumeric() && is_signed_spot(wire, p, &signed, text, i) {
                spots.push((p, i));
            }
        }
    }
    let (p, i) = *spots.get(at % spots.len().max(1))?;
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let old = parts[p].as_bytes()[i];
    let mut new = alphabet[usize::from(to) % alphabet.len()];
    if new.eq_ignore_ascii_case(&old) {
        new = if old.is_ascii_digit() { b'x' } else { b'7' };
        if new.eq_ignore_ascii_case(&old) {
            new = b'8';
        }
    }
    let mut bytes = parts[p].clone().into_bytes();
    bytes[i] = new;
    let text = String::from_utf8(bytes).ok()?;
    let mut out = wire.clone();
    match p {
        0 => out.method = text,
        1 => out.path = text,
        2 => out.query = Some(text),
        n => out.headers[n - 3].1 = text,
    }
    Some(out)
}

fn parts_of(wire: &Wire) -> Vec<String> {
    let mut parts = vec![
        wire.method.clone(),
        wire.path.clone(),
        wire.query.clone().unwrap_or_default(),
    ];
    parts.extend(wire.headers.iter().map(|(_, v)| v.clone()));
    parts
}

/// Header names listed in `SignedHeaders` (header form) or `X-Amz-SignedHeaders` (presigned).
fn signed_header_names(wire: &Wire) -> Vec<String> {
    let from_auth = wire
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .and_then(|(_, v)| v.split("SignedHeaders=").nth(1))
        .and_then(|v| v.split(',').next())
        .map(str::to_owned);
    let from_query = wire.query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-SignedHeaders="))
            .map(|v| v.replace("%3B", ";"))
    });
    from_auth
        .or(from_query)
        .unwrap_or_default()
        .split(';')
        .map(str::to_owned)
        .collect()
}

/// Whether byte `i` of part `p` is covered by the signature.
fn is_signed_spot(wire: &Wire, p: usize, signed: &[String], text: &str, i: usize) -> bool {
    match p {
        0..=2 => {
            // In the query, the access key of a presigned URL is signed too (it is part of
            // X-Amz-Credential, which is in the canonical query); everything is.
            let _ = (text, i);
            true
        }
        n => {
            let name = &wire.headers[n - 3].0;
            if name == "authorization" {
                // Only the signature itself (hex after `Signature=`); the access key is not
                // signed in the header form (the server looks up its secret instead).
                let at = text
                    .find("Signature=")
                    .map_or(usize::MAX, |s| s + "Signature=".len());
                i >= at
            } else {
                signed.iter().any(|s| s == name)
            }
        }
    }
}
