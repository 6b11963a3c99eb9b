//! Bucket CORS, as S3 does it: the configuration document, rule matching, and the headers a
//! preflight or an actual request gets.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html> and
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketCors.html>.
//!
//! The first rule whose origin, method and requested headers all match wins. Origins and headers
//! may hold one `*` wildcard; headers match case-insensitively. Pure: no HTTP types.

use serde::{Deserialize, Serialize};

pub const MAX_RULES: usize = 100;
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// Headers a browser script may always read on a matched response, whatever the rule lists:
/// without `ETag` exposed, upload widgets such as Uppy hang at 100%.
pub const ALWAYS_EXPOSED: &[&str] = &[
    "ETag",
    "Location",
    "x-amz-request-id",
    "x-amz-id-2",
    "x-amz-version-id",
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "AllowedOrigin", default)]
    pub allowed_origins: Vec<String>,
    #[serde(rename = "AllowedMethod", default)]
    pub allowed_methods: Vec<String>,
    #[serde(rename = "AllowedHeader", default)]
    pub allowed_headers: Vec<String>,
    #[serde(rename = "ExposeHeader", default)]
    pub expose_headers: Vec<String>,
    #[serde(
        rename = "MaxAgeSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsConfig {
    #[serde(rename = "CORSRule", default)]
    pub rules: Vec<CorsRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// 400 MalformedXML.
    #[error(
        "The XML you provided was not well-formed or did not validate against our published schema"
    )]
    Malformed,
    /// 400 InvalidRequest (AWS wording).
    #[error("Found unsupported HTTP method in CORS config. Unsupported method is {0}")]
    UnsupportedMethod(String),
    /// 400 InvalidRequest.
    #[error("{0}")]
    Invalid(&'static str),
}

impl CorsConfig {
    /// Parses and validates a `<CORSConfiguration>` document.
    pub fn parse(xml: &[u8]) -> Result<CorsConfig, CorsError> {
        let text = std::str::from_utf8(xml).map_err(|_| CorsError::Malformed)?;
        let config: CorsConfig = quick_xml::de::from_str(text).map_err(|_| CorsError::Malformed)?;
        if config.rules.is_empty() {
            return Err(CorsError::Malformed);
        }
        if config.rules.len() > MAX_RULES {
            return Err(CorsError::Invalid(
                "The number of CORS rules should not exceed allowed limit of 100 rules.",
            ));
        }
        for rule in &config.rules {
            if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
                return Err(CorsError::Malformed);
            }
            if let Some(m) = rule
                .allowed_methods
                .iter()
                .find(|m| !METHODS.contains(&m.as_str()))
            {
                return Err(CorsError::UnsupportedMethod(m.clone()));
            }
            if rule.id.as_ref().is_some_and(|id| id.len() > 255) {
                return Err(CorsError::Invalid(
                    "The ID of a CORS rule must be at most 255 characters.",
                ));
            }
            let too_many_stars = |v: &String| v.matches('*').count() > 1;
            if rule.allowed_origins.iter().any(too_many_stars) {
                return Err(CorsError::Invalid(
                    "AllowedOrigin can not have more than one wildcard.",
                ));
            }
            if rule.allowed_headers.iter().any(too_many_stars) {
                return Err(CorsError::Invalid(
                    "AllowedHeader can not have more than one wildcard.",
                ));
            }
        }
        Ok(config)
    }

    /// The `<CORSConfiguration>` document GetBucketCors returns.
    pub fn to_xml(&self) -> String {
        let mut w = crate::xml::XmlWriter::new();
        w.root("CORSConfiguration");
        for rule in &self.rules {
            w.open("CORSRule");
            if let Some(id) = &rule.id {
                w.elem("ID", id);
            }
            for (name, values) in [
                ("AllowedHeader", &rule.allowed_headers),
                ("AllowedMethod", &rule.allowed_methods),
                ("AllowedOrigin", &rule.allowed_origins),
                ("ExposeHeader", &rule.expose_headers),
            ] {
                for v in values {
                    w.elem(name, v);
                }
            }
            if let Some(age) = rule.max_age_seconds {
                w.elem("MaxAgeSeconds", &age.to_string());
            }
            w.close("CORSRule");
        }
        w.close("CORSConfiguration");
        w.finish()
    }

    /// The first rule allowing `origin` to use `method` with `request_headers`.
    pub fn find(&self, origin: &str, method: &str, request_headers: &[&str]) -> Option<&CorsRule> {
        self.rules.iter().find(|rule| {
            rule.allowed_origins
                .iter()
                .any(|o| wildcard_match(o, origin, false))
                && rule.allowed_methods.iter().any(|m| m == method)
                && request_headers.iter().all(|h| {
                    rule.allowed_headers
                        .iter()
                        .any(|allowed| wildcard_match(allowed, h, true))
                })
        })
    }
}

/// Matches `value` against `pattern` with at most one `*` standing for any run of characters.
pub fn wildcard_match(pattern: &str, value: &str, ignore_case: bool) -> bool {
    let (p, v) = if ignore_case {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.to_owned(), value.to_owned())
    };
    match p.split_once('*') {
        None => p == v,
        Some((head, tail)) => {
            v.len() >= head.len() + tail.len() && v.starts_with(head) && v.ends_with(tail)
        }
    }
}

/// The response headers for a matched rule. `preflight_headers` are the requested headers of a
/// preflight (echoed lowercased), `None` for an actual request.
pub fn response_headers(
    rule: &CorsRule,
    origin: &str,
    preflight_headers: Option<&[&str]>,
) -> Vec<(&'static str, String)> {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut out = vec![(
        "access-control-allow-origin",
        if any_origin {
            "*".to_owned()
        } else {
            origin.to_owned()
        },
    )];
    if !any_origin {
        out.push(("access-control-allow-credentials", "true".to_owned()));
    }
    out.push((
        "access-control-allow-methods",
        rule.allowed_methods.join(", "),
    ));
    if let Some(headers) = preflight_headers
        && !headers.is_empty()
    {
        let lowered: Vec<String> = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        out.push(("access-control-allow-headers", lowered.join(", ")));
    }
    let mut expose: Vec<String> = ALWAYS_EXPOSED.iter().map(|s| (*s).to_owned()).collect();
    for h in &rule.expose_headers {
        if !expose.iter().any(|e| e.eq_ignore_ascii_case(h)) {
            expose.push(h.clone());
        }
    }
    out.push(("access-control-expose-headers", expose.join(", ")));
    if let Some(age) = rule.max_age_seconds {
        out.push(("access-control-max-age", age.to_string()));
    }
    out.push((
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method".to_owned(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
      <CORSRule><ID>web</ID><AllowedOrigin>https://*.example.com</AllowedOrigin>
        <AllowedMethod>PUT</AllowedMethod><AllowedMethod>POST</AllowedMethod>
        <AllowedHeader>x-amz-*</AllowedHeader><AllowedHeader>Content-Type</AllowedHeader>
        <ExposeHeader>x-amz-meta-custom</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule>
      <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>
    </CORSConfiguration>"#;

    #[test]
    fn parses_and_round_trips() {
        let c = CorsConfig::parse(DOC.as_bytes()).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].max_age_seconds, Some(3000));
        let again = CorsConfig::parse(c.to_xml().as_bytes()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn first_matching_rule_wins_with_wildcards() {
        let c = CorsConfig::parse(DOC.as_bytes()).unwrap();
        let r = c
            .find(
                "https://app.example.com",
                "POST",
                &["X-Amz-Date", "content-type"],
            )
            .unwrap();
        assert_eq!(r.id.as_deref(), Some("web"));
        assert!(
            c.find("https://app.example.com", "POST", &["authorization"])
                .is_none()
        );
        assert!(c.find("https://example.org", "PUT", &[]).is_none());
        let any = c.find("https://example.org", "GET", &[]).unwrap();
        assert!(any.id.is_none());
        // A rule without AllowedHeader refuses any requested header.
        assert!(
            c.find("https://example.org", "GET", &["x-custom"])
                .is_none()
        );
    }

    #[test]
    fn invalid_documents_are_refused() {
        assert_eq!(
            CorsConfig::parse(b"<CORSConfiguration>"),
            Err(CorsError::Malformed)
        );
        assert_eq!(
            CorsConfig::parse(b"<CORSConfiguration></CORSConfiguration>"),
            Err(CorsError::Malformed)
        );
        let bad = b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod></CORSRule></CORSConfiguration>";
        assert_eq!(
            CorsConfig::parse(bad),
            Err(CorsError::UnsupportedMethod("PATCH".into()))
        );
        let many = format!(
            "<CORSConfiguration>{}</CORSConfiguration>",
            "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>".repeat(101)
        );
        assert!(matches!(
            CorsConfig::parse(many.as_bytes()),
            Err(CorsError::Invalid(_))
        ));
    }

    #[test]
    fn headers_echo_origin_or_star() {
        let c = CorsConfig::parse(DOC.as_bytes()).unwrap();
        let h = response_headers(&c.rules[0], "https://a.example.com", Some(&["X-Amz-Date"]));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get("access-control-allow-origin").as_deref(),
            Some("https://a.example.com")
        );
        assert_eq!(
            get("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(
            get("access-control-allow-headers").as_deref(),
            Some("x-amz-date")
        );
        assert!(
            get("access-control-expose-headers")
                .unwrap()
                .contains("ETag")
        );
        assert!(
            get("access-control-expose-headers")
                .unwrap()
                .contains("x-amz-meta-custom")
        );
        let h = response_headers(&c.rules[1], "https://x.org", None);
        assert_eq!(h[0].1, "*");
        assert!(
            !h.iter()
                .any(|(k, _)| *k == "access-control-allow-credentials")
        );
    }
}
