//! The POST Object form pipeline: multipart body (multer, behind the handler's pre-data cap) →
//! fields → signature → policy JSON → conditions → `${filename}` → key, headers, checksums →
//! the file, read up to a small limit.
//!
//! Input: `[flags][split seed][multipart body]`. The boundary is the body's first line. With
//! flag bit 0 the `policy` field holds the policy's JSON text: the target encodes it and signs
//! it (SigV4 or SigV2, whichever fields the form has) with the corpus key, so that mutations of
//! the policy reach the parser and the conditions instead of stopping at the signature.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use postgate_fuzz::{REGION, SECRET_KEY, run, split};

/// The fuzzing clock: before every corpus policy's expiration.
const NOW: i64 = 1_780_000_000; // 2026-05-28

fuzz_target!(|data: &[u8]| {
    let [flags, seed, body @ ..] = data else {
        return;
    };
    let body = if flags & 1 == 1 {
        resign(body)
    } else {
        body.to_vec()
    };
    let boundary = body
        .strip_prefix(b"--")
        .and_then(|b| b.split(|&c| c == b'\r' || c == b'\n').next())
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let chunks = split(&body, u64::from(*seed), 97);
    let _ = run(postgate::fuzzing::post_form(
        &content_type,
        chunks,
        "fuzzbucket",
        SECRET_KEY,
        now,
        64 * 1024,
    ));
});

/// Where the value of form field `name` lies in `body`.
fn field_value(body: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    let tag = format!("name=\"{name}\"");
    let at = find(body, tag.as_bytes())? + tag.len();
    let start = at + find(&body[at..], b"\r\n\r\n")? + 4;
    let end = start + find(&body[start..], b"\r\n--")?;
    Some(start..end)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn replace(body: &mut Vec<u8>, range: std::ops::Range<usize>, value: &[u8]) {
    body.splice(range, value.iter().copied());
}

/// Encodes the `policy` field's JSON and writes the signature fields for it.
fn resign(body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    let Some(range) = field_value(&body, "policy") else {
        return body;
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&body[range.clone()]);
    replace(&mut body, range, b64.as_bytes());
    if let Some(range) = field_value(&body, "x-amz-signature") {
        let date = field_value(&body, "x-amz-credential")
            .map(|r| String::from_utf8_lossy(&body[r]).into_owned())
            .and_then(|c| c.split('/').nth(1).map(str::to_owned))
            .unwrap_or_default();
        let sig = postgate::policy::sign_v4(SECRET_KEY, &date, REGION, &b64);
        replace(&mut body, range, sig.as_bytes());
    } else if let Some(range) = field_value(&body, "signature") {
        let sig = postgate::policy::sign_v2(SECRET_KEY, &b64);
        replace(&mut body, range, sig.as_bytes());
    }
    body
}
