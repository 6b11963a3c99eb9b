//! The small parsers of request bodies and headers. The first byte picks one; the rest is its
//! input:
//! - 0 CORS configuration (parse and validate, then serialise and parse again: same rules; rule
//!   matching and response headers for a few requests),
//! - 1 DeleteObjects, 2 CompleteMultipartUpload, 3 Tagging and CreateBucketConfiguration bodies,
//! - 4 `Range` (`[size: 8 bytes][header]`; a satisfiable range lies within the object),
//! - 5 dates (`If-Modified-Since` and friends, SigV2 `Date`, `x-amz-date`),
//! - 6 `Content-Disposition` file names (`${filename}`), RFC 2047 metadata encoding,
//!   POST redirect locations,
//! - 7 bucket and key names, ETag lists, sizes and durations of the configuration,
//! - 8 a POST policy document (JSON) checked against a small form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postgate::cors::{CorsConfig, response_headers};
use postgate::policy::{self, FormFields, Policy};

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(input);
    match which % 9 {
        0 => cors(input),
        1 => drop(postgate::xml::parse::<postgate::xml::Delete>(input)),
        2 => drop(postgate::fuzzing::complete_multipart_upload(input)),
        3 => {
            let _ = postgate::xml::parse::<postgate::xml::Tagging>(input);
            let _ = postgate::xml::parse::<postgate::xml::CreateBucketConfiguration>(input);
        }
        4 => {
            let Some((size, header)) = input.split_first_chunk::<8>() else {
                return;
            };
            let size = u64::from_le_bytes(*size) >> (size[0] % 64);
            let header = String::from_utf8_lossy(header);
            if let Ok(Some((start, end))) = postgate::fuzzing::range(&header, size) {
                assert!(
                    start <= end && end < size,
                    "{header:?} on {size} gave {start}-{end}"
                );
            }
        }
        5 => {
            let _ = httpdate::parse_http_date(&text);
            let _ =
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc2822);
            if let Some(t) = postgate::auth::sigv4::parse_amz_date(&text) {
                let again = postgate::auth::sigv4::format_amz_date(t);
                assert_eq!(postgate::auth::sigv4::parse_amz_date(&again), Some(t));
            }
        }
        6 => {
            if let Ok(Some(name)) = policy::filename_from_content_disposition(&text) {
                let _ = policy::expand_filename("uploads/${filename}", Some(&name));
            }
            let _ = policy::rfc2047_encode(&text);
            let _ = policy::redirect_location(&text, "fuzzbucket", &text, "\"etag\"");
        }
        7 => {
            if postgate::names::validate_bucket(&text).is_ok() {
                assert!((3..=63).contains(&text.len()));
            }
            if postgate::names::validate_key(&text).is_ok() {
                assert!(!text.is_empty() && text.len() <= postgate::names::MAX_KEY_BYTES);
            }
            let _ = postgate::objects::write::etag_matches(&text, "\"0123456789abcdef0123456789abcdef\"");
            let _ = postgate::objects::write::parse_content_md5(Some(&text));
            let _ = postgate::units::parse_size(&text);
            let _ = postgate::units::parse_duration(&text);
        }
        _ => {
            let Ok(policy) = Policy::from_json(&text) else {
                return;
            };
            let form: FormFields = [
                ("key", "uploads/photo.jpg"),
                ("bucket", "fuzzbucket"),
                ("Content-Type", "image/jpeg"),
                ("x-amz-meta-tag", ""),
                ("success_action_status", "201"),
            ]
            .into_iter()
            .collect();
            let now = time::OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
            for sig in [policy::SigVersion::V2, policy::SigVersion::V4] {
                if let Ok(range) = policy.check(&form, "fuzzbucket", now, sig) {
                    assert!(range.min() <= range.max());
                }
            }
        }
    }
});

fn cors(input: &[u8]) {
    let Ok(config) = CorsConfig::parse(input) else {
        return;
    };
    let again = CorsConfig::parse(config.to_xml().as_bytes());
    assert_eq!(
        again.as_ref(),
        Ok(&config),
        "CORS rules changed through their XML"
    );
    for (origin, method, headers) in [
        (
            "https://example.com",
            "PUT",
            &["content-type", "x-amz-meta-a"][..],
        ),
        ("http://localhost:3000", "POST", &[][..]),
        ("null", "GET", &["Authorization"][..]),
    ] {
        if let Some(rule) = config.find(origin, method, headers) {
            let _ = response_headers(rule, origin, Some(headers));
            let _ = response_headers(rule, origin, None);
        }
    }
}
