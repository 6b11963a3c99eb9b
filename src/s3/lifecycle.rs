//! Bucket lifecycle over HTTP: PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration,
//! DeleteBucketLifecycle. The sweeper that applies the rules is in the core
//! (`objects::lifecycle`).
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketLifecycleConfiguration.html>.
//! Supported: `Expiration` (`Days` or `Date`) and `AbortIncompleteMultipartUpload`, for all keys
//! or a key prefix (`<Filter><Prefix>` or the legacy `<Prefix>`). postgate has no storage
//! classes, versions or tag filters to act on: rules that use them (`Transition`, `Noncurrent*`,
//! `ExpiredObjectDeleteMarker`, `Filter` with `Tag`, `And` or object sizes) are refused with 501
//! NotImplemented rather than stored and silently not applied.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{BucketCtx, Caller, S3Request, empty, xml_response};
use crate::db::buckets::Setting;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::objects::lifecycle::{Rule, Rules};
use crate::state::AppState;
use crate::xml::XmlWriter;

const DAYS: &str = "'Days' for Expiration action must be a positive integer";
const ABORT_DAYS: &str =
    "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer";

/// S3's limit on rules per configuration.
const MAX_RULES: usize = 1000;

#[derive(Debug, Deserialize)]
struct LifecycleConfiguration {
    #[serde(rename = "Rule", default)]
    rules: Vec<RuleXml>,
}

#[derive(Debug, Deserialize)]
struct RuleXml {
    #[serde(rename = "ID")]
    id: Option<String>,
    #[serde(rename = "Status")]
    status: Option<String>,
    #[serde(rename = "Prefix")]
    prefix: Option<String>,
    #[serde(rename = "Filter")]
    filter: Option<FilterXml>,
    #[serde(rename = "Expiration")]
    expiration: Option<ExpirationXml>,
    #[serde(rename = "AbortIncompleteMultipartUpload")]
    abort: Option<AbortXml>,
    #[serde(rename = "Transition")]
    transition: Option<IgnoredAny>,
    #[serde(rename = "Transitions")]
    transitions: Option<IgnoredAny>,
    #[serde(rename = "NoncurrentVersionExpiration")]
    noncurrent_expiration: Option<IgnoredAny>,
    #[serde(rename = "NoncurrentVersionTransition")]
    noncurrent_transition: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct FilterXml {
    #[serde(rename = "Prefix")]
    prefix: Option<String>,
    #[serde(rename = "Tag")]
    tag: Option<IgnoredAny>,
    #[serde(rename = "And")]
    and: Option<IgnoredAny>,
    #[serde(rename = "ObjectSizeGreaterThan")]
    size_greater: Option<IgnoredAny>,
    #[serde(rename = "ObjectSizeLessThan")]
    size_less: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct ExpirationXml {
    #[serde(rename = "Days")]
    days: Option<String>,
    #[serde(rename = "Date")]
    date: Option<String>,
    #[serde(rename = "ExpiredObjectDeleteMarker")]
    delete_marker: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct AbortXml {
    #[serde(rename = "DaysAfterInitiation")]
    days: Option<String>,
}

fn not_implemented(what: &str) -> S3Error {
    S3Error::new(
        S3ErrorCode::NotImplemented,
        format!("postgate does not implement {what} in lifecycle rules."),
    )
}

fn invalid(message: impl Into<String>) -> S3Error {
    S3Error::new(S3ErrorCode::InvalidArgument, message.into())
}

/// A positive number of days, as S3 requires (`message` otherwise).
fn days(value: &str, message: &'static str) -> S3Result<u32> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| invalid(message))
}

/// `Expiration/Date`: ISO 8601 at midnight UTC, as S3 requires; in milliseconds.
fn midnight(value: &str) -> S3Result<i64> {
    let t =
        time::OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc3339)
            .or_else(|_| {
                time::Date::parse(
                    value.trim(),
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
                .map(|d| d.midnight().assume_utc())
            })
            .map_err(|_| invalid("Invalid date or date format in Expiration action"))?;
    let t = t.to_offset(time::UtcOffset::UTC);
    if t.time() != time::Time::MIDNIGHT {
        return Err(invalid("'Date' must be at midnight GMT"));
    }
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Parses and checks a configuration as S3 does.
pub fn parse(body: &[u8]) -> S3Result<Rules> {
    let config: LifecycleConfiguration =
        crate::xml::parse(body).map_err(|_| S3Error::code(S3ErrorCode::MalformedXML))?;
    if config.rules.is_empty() || config.rules.len() > MAX_RULES {
        return Err(S3Error::code(S3ErrorCode::MalformedXML));
    }
    let mut rules = Vec::with_capacity(config.rules.len());
    for r in config.rules {
        if r.transition.is_some() || r.transitions.is_some() {
            return Err(not_implemented("Transition (storage classes)"));
        }
        if r.noncurrent_expiration.is_some() || r.noncurrent_transition.is_some() {
            return Err(not_implemented("noncurrent versions (versioning)"));
        }
        let enabled = match r.status.as_deref() {
            Some("Enabled") => true,
            Some("Disabled") => false,
            _ => return Err(S3Error::code(S3ErrorCode::MalformedXML)),
        };
        if let Some(id) = &r.id
            && id.len() > 255
        {
            return Err(invalid("ID length should not exceed allowed limit of 255"));
        }
        let (prefix, in_filter) = match (r.prefix, r.filter) {
            (Some(_), Some(_)) => return Err(S3Error::code(S3ErrorCode::MalformedXML)),
            (Some(p), None) => (p, false),
            (None, Some(f)) => {
                if f.tag.is_some() || f.and.is_some() {
                    return Err(not_implemented("tag filters"));
                }
                if f.size_greater.is_some() || f.size_less.is_some() {
                    return Err(not_implemented("object size filters"));
                }
                (f.prefix.unwrap_or_default(), true)
            }
            (None, None) => (String::new(), true),
        };
        let mut rule = Rule {
            id: r.id,
            enabled,
            prefix,
            in_filter,
            ..Rule::default()
        };
        if let Some(e) = r.expiration {
            if e.delete_marker.is_some() {
                return Err(not_implemented("ExpiredObjectDeleteMarker (versioning)"));
            }
            match (e.days, e.date) {
                (Some(d), None) => rule.expiration_days = Some(days(&d, DAYS)?),
                (None, Some(d)) => {
                    rule.expiration_date = Some((d.trim().to_owned(), midnight(&d)?))
                }
                _ => return Err(S3Error::code(S3ErrorCode::MalformedXML)),
            }
        }
        if let Some(a) = r.abort {
            let value = a
                .days
                .ok_or_else(|| S3Error::code(S3ErrorCode::MalformedXML))?;
            rule.abort_incomplete_days = Some(days(&value, ABORT_DAYS)?);
        }
        if rule.expiration_days.is_none()
            && rule.expiration_date.is_none()
            && rule.abort_incomplete_days.is_none()
        {
            return Err(S3Error::new(
                S3ErrorCode::InvalidRequest,
                "At least one action needs to be specified in a rule",
            ));
        }
        if let Some(id) = &rule.id
            && rules.iter().any(|o: &Rule| o.id.as_ref() == Some(id))
        {
            return Err(invalid(
                "Rule ID must be unique. Found same ID for more than one rule",
            ));
        }
        rules.push(rule);
    }
    Ok(Rules { rules })
}

/// The configuration as GetBucketLifecycleConfiguration answers it.
pub fn to_xml(rules: &Rules) -> String {
    let mut w = XmlWriter::new();
    w.root("LifecycleConfiguration");
    for r in &rules.rules {
        w.open("Rule");
        if let Some(id) = &r.id {
            w.elem("ID", id);
        }
        if r.in_filter {
            w.open("Filter");
            w.elem("Prefix", &r.prefix);
            w.close("Filter");
        } else {
            w.elem("Prefix", &r.prefix);
        }
        w.elem("Status", if r.enabled { "Enabled" } else { "Disabled" });
        if let Some(days) = r.expiration_days {
            w.open("Expiration");
            w.elem("Days", &days.to_string());
            w.close("Expiration");
        } else if let Some((date, _)) = &r.expiration_date {
            w.open("Expiration");
            w.elem("Date", date);
            w.close("Expiration");
        }
        if let Some(days) = r.abort_incomplete_days {
            w.open("AbortIncompleteMultipartUpload");
            w.elem("DaysAfterInitiation", &days.to_string());
            w.close("AbortIncompleteMultipartUpload");
        }
        w.close("Rule");
    }
    w.close("LifecycleConfiguration");
    w.finish()
}

pub async fn get_bucket_lifecycle(ctx: BucketCtx) -> S3Result<Response> {
    let rules = ctx
        .record
        .lifecycle
        .as_deref()
        .and_then(|json| serde_json::from_str::<Rules>(json).ok())
        .ok_or_else(|| {
            S3Error::code(S3ErrorCode::NoSuchLifecycleConfiguration)
                .with("BucketName", &ctx.record.name)
        })?;
    Ok(xml_response(to_xml(&rules)))
}

pub async fn put_bucket_lifecycle(
    app: &AppState,
    req: &S3Request,
    caller: &Caller,
    body: Body,
) -> S3Result<Response> {
    let bytes = caller.read_small_body(req, body, 1024 * 1024).await?;
    if let Some(md5) = crate::objects::write::parse_content_md5(req.header("content-md5"))? {
        let have: [u8; 16] =
            md5::Digest::finalize(<md5::Md5 as md5::Digest>::new_with_prefix(&bytes)).into();
        if have != md5 {
            return Err(S3Error::code(S3ErrorCode::BadDigest));
        }
    }
    let rules = parse(&bytes)?;
    let json = serde_json::to_string(&rules).map_err(S3Error::internal)?;
    app.set_bucket(req.bucket(), Setting::Lifecycle(Some(json)))
        .await?;
    Ok(empty(StatusCode::OK))
}

pub async fn delete_bucket_lifecycle(app: &AppState, req: &S3Request) -> S3Result<Response> {
    app.set_bucket(req.bucket(), Setting::Lifecycle(None))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(xml: &str) -> S3ErrorCode {
        parse(xml.as_bytes()).unwrap_err().s3_code()
    }

    #[test]
    fn parses_filter_and_legacy_prefix_and_round_trips() {
        let xml = r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>
              <Expiration><Days>3</Days></Expiration>
              <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
            <Rule><Prefix>tmp/</Prefix><Status>Disabled</Status>
              <Expiration><Date>2030-01-01T00:00:00.000Z</Date></Expiration></Rule>
            <Rule><Filter></Filter><Status>Enabled</Status>
              <AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
            </LifecycleConfiguration>"#;
        let rules = parse(xml.as_bytes()).unwrap();
        assert_eq!(rules.rules.len(), 3);
        assert_eq!(rules.rules[0].prefix, "logs/");
        assert_eq!(rules.rules[0].expiration_days, Some(3));
        assert_eq!(rules.rules[0].abort_incomplete_days, Some(1));
        assert!(!rules.rules[1].in_filter && !rules.rules[1].enabled);
        assert_eq!(
            rules.rules[1].expiration_date.as_ref().unwrap().1,
            1_893_456_000_000
        );
        assert_eq!(rules.rules[2].prefix, "");
        assert_eq!(parse(to_xml(&rules).as_bytes()).unwrap(), rules);
    }

    #[test]
    fn refuses_what_s3_refuses_and_what_postgate_lacks() {
        let rule = |inner: &str| {
            format!("<LifecycleConfiguration><Rule>{inner}</Rule></LifecycleConfiguration>")
        };
        let exp = "<Expiration><Days>1</Days></Expiration>";
        assert_eq!(
            code(&rule(&format!(
                "<Filter><Tag><Key>a</Key><Value>b</Value></Tag></Filter><Status>Enabled</Status>{exp}"
            ))),
            S3ErrorCode::NotImplemented
        );
        assert_eq!(
            code(&rule(
                "<Filter/><Status>Enabled</Status><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>"
            )),
            S3ErrorCode::NotImplemented
        );
        assert_eq!(
            code(&rule(&format!("<Filter/>{exp}"))),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            code(&rule(
                "<Filter/><Status>Enabled</Status><Expiration><Days>0</Days></Expiration>"
            )),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(&rule(
                "<Filter/><Status>Enabled</Status><Expiration><Date>2030-01-01T10:00:00Z</Date></Expiration>"
            )),
            S3ErrorCode::InvalidArgument
        );
        assert_eq!(
            code(&rule("<Filter/><Status>Enabled</Status>")),
            S3ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(&rule(&format!(
                "<Prefix>a</Prefix><Filter/><Status>Enabled</Status>{exp}"
            ))),
            S3ErrorCode::MalformedXML
        );
        assert_eq!(
            code("<LifecycleConfiguration></LifecycleConfiguration>"),
            S3ErrorCode::MalformedXML
        );
    }
}
