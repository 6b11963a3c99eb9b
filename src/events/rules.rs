//! Bucket notification configurations, as S3's `PutBucketNotificationConfiguration` takes them:
//! `QueueConfiguration`s whose `Queue` is the ARN of a webhook target the operator declared
//! (`arn:postgate:sqs::NAME:webhook`, as MinIO names its targets `arn:minio:sqs::ID:webhook`),
//! with event types (wildcards such as `s3:ObjectCreated:*`) and key prefix/suffix filters.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutBucketNotificationConfiguration.html>.
//! Pure: the caller says which targets exist.

use serde::{Deserialize, Serialize};

use crate::xml::XmlWriter;

/// Event types a configuration may name (S3's names; `DeleteMarkerCreated` is accepted and never
/// fires, since postgate keeps no versions).
const EVENT_TYPES: &[&str] = &[
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:LifecycleExpiration:*",
    "s3:LifecycleExpiration:Delete",
    "s3:LifecycleExpiration:DeleteMarkerCreated",
];

/// A bucket's configuration, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationConfig {
    pub queues: Vec<QueueRule>,
}

/// One `QueueConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRule {
    pub id: String,
    /// The webhook target's name (from the ARN).
    pub target: String,
    /// `s3:ObjectCreated:Put`, `s3:ObjectCreated:*`, ...
    pub events: Vec<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

/// Why a configuration was refused (the S3 handler gives each its S3 answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// 400 MalformedXML.
    #[error("the XML is malformed")]
    Malformed,
    /// 400 InvalidArgument: an ARN that names no declared target (or another service's ARN).
    #[error("Unable to validate the following destination configurations")]
    UnknownDestination(String),
    /// 400 InvalidArgument.
    #[error("The event is not supported for notifications")]
    UnknownEvent(String),
    /// 400 InvalidArgument.
    #[error("filter rule name must be either prefix or suffix")]
    BadFilter(String),
}

/// The ARN of a target, as configurations name it.
pub fn arn_of(target: &str) -> String {
    format!("arn:postgate:sqs::{target}:webhook")
}

/// The target name in `arn:postgate:sqs:[REGION]:NAME:webhook`.
pub fn target_of(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", "postgate", "sqs", _region, name, "webhook"] if valid_target_name(name) => {
            Some(name)
        }
        _ => None,
    }
}

/// Target names: 1 to 64 of `A-Z a-z 0-9 - _` (they appear in ARNs and URLs).
pub fn valid_target_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Deserialize)]
struct XmlConfig {
    #[serde(rename = "QueueConfiguration", default)]
    queues: Vec<XmlQueue>,
    #[serde(rename = "TopicConfiguration", default)]
    topics: Vec<XmlOther>,
    #[serde(rename = "CloudFunctionConfiguration", default)]
    functions: Vec<XmlOther>,
}

#[derive(Deserialize)]
struct XmlQueue {
    #[serde(rename = "Id", default)]
    id: Option<String>,
    #[serde(rename = "Queue")]
    queue: String,
    #[serde(rename = "Event", default)]
    events: Vec<String>,
    #[serde(rename = "Filter", default)]
    filter: Option<XmlFilter>,
}

/// SNS topics and Lambda functions: postgate has neither, so their ARNs never validate.
#[derive(Deserialize)]
struct XmlOther {
    #[serde(rename = "Topic", alias = "CloudFunction", default)]
    arn: String,
}

#[derive(Deserialize)]
struct XmlFilter {
    #[serde(rename = "S3Key", default)]
    key: Option<XmlS3Key>,
}

#[derive(Deserialize)]
struct XmlS3Key {
    #[serde(rename = "FilterRule", default)]
    rules: Vec<XmlFilterRule>,
}

#[derive(Deserialize)]
struct XmlFilterRule {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Value", default)]
    value: String,
}

impl NotificationConfig {
    /// Parses a `<NotificationConfiguration>`; `exists` says whether a target name is declared.
    /// An empty document clears the configuration, as in S3.
    pub fn parse(xml: &[u8], exists: impl Fn(&str) -> bool) -> Result<Self, RuleError> {
        let text = std::str::from_utf8(xml).map_err(|_| RuleError::Malformed)?;
        let parsed: XmlConfig = quick_xml::de::from_str(text).map_err(|_| RuleError::Malformed)?;
        if let Some(other) = parsed.topics.iter().chain(&parsed.functions).next() {
            return Err(RuleError::UnknownDestination(other.arn.clone()));
        }
        let mut queues = Vec::with_capacity(parsed.queues.len());
        for q in parsed.queues {
            let target = target_of(q.queue.trim())
                .filter(|name| exists(name))
                .ok_or_else(|| RuleError::UnknownDestination(q.queue.clone()))?;
            if q.events.is_empty() {
                return Err(RuleError::Malformed);
            }
            for event in &q.events {
                if !EVENT_TYPES.contains(&event.as_str()) {
                    return Err(RuleError::UnknownEvent(event.clone()));
                }
            }
            let (mut prefix, mut suffix) = (None, None);
            for rule in q.filter.and_then(|f| f.key).map_or(Vec::new(), |k| k.rules) {
                let slot = match rule.name.to_ascii_lowercase().as_str() {
                    "prefix" => &mut prefix,
                    "suffix" => &mut suffix,
                    _ => return Err(RuleError::BadFilter(rule.name)),
                };
                if slot.replace(rule.value).is_some() {
                    return Err(RuleError::BadFilter(rule.name));
                }
            }
            queues.push(QueueRule {
                // S3 names a configuration that has no Id.
                id: q
                    .id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                target: target.to_owned(),
                events: q.events,
                prefix,
                suffix,
            });
        }
        Ok(NotificationConfig { queues })
    }

    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.root("NotificationConfiguration");
        for q in &self.queues {
            w.open("QueueConfiguration");
            w.elem("Id", &q.id);
            w.elem("Queue", &arn_of(&q.target));
            for event in &q.events {
                w.elem("Event", event);
            }
            if q.prefix.is_some() || q.suffix.is_some() {
                w.open("Filter");
                w.open("S3Key");
                for (name, value) in [("Prefix", &q.prefix), ("Suffix", &q.suffix)] {
                    if let Some(value) = value {
                        w.open("FilterRule");
                        w.elem("Name", name);
                        w.elem("Value", value);
                        w.close("FilterRule");
                    }
                }
                w.close("S3Key");
                w.close("Filter");
            }
            w.close("QueueConfiguration");
        }
        w.close("NotificationConfiguration");
        w.finish()
    }

    /// The (target, configuration id) pairs that want `event` (`ObjectCreated:Put`) on `key`.
    pub fn matching<'a>(
        &'a self,
        event: &'a str,
        key: &'a str,
    ) -> impl Iterator<Item = &'a QueueRule> + 'a {
        self.queues.iter().filter(move |q| {
            q.events.iter().any(|e| event_matches(e, event))
                && q.prefix.as_deref().is_none_or(|p| key.starts_with(p))
                && q.suffix.as_deref().is_none_or(|s| key.ends_with(s))
        })
    }
}

/// Whether a configured type (`s3:ObjectCreated:*`) covers an event (`ObjectCreated:Post`).
fn event_matches(configured: &str, event: &str) -> bool {
    let Some(configured) = configured.strip_prefix("s3:") else {
        return false;
    };
    match configured.strip_suffix('*') {
        Some(family) => event.starts_with(family),
        None => configured == event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
      <QueueConfiguration><Id>imgs</Id><Queue>arn:postgate:sqs::cms:webhook</Queue>
        <Event>s3:ObjectCreated:*</Event><Event>s3:ObjectRemoved:Delete</Event>
        <Filter><S3Key><FilterRule><Name>prefix</Name><Value>images/</Value></FilterRule>
          <FilterRule><Name>Suffix</Name><Value>.png</Value></FilterRule></S3Key></Filter>
      </QueueConfiguration></NotificationConfiguration>"#;

    #[test]
    fn parses_matches_and_renders_again() {
        let c = NotificationConfig::parse(DOC.as_bytes(), |n| n == "cms").unwrap();
        assert_eq!(c.queues[0].target, "cms");
        assert_eq!(c.matching("ObjectCreated:Post", "images/a.png").count(), 1);
        assert_eq!(
            c.matching("ObjectRemoved:Delete", "images/a.png").count(),
            1
        );
        assert_eq!(c.matching("ObjectCreated:Put", "images/a.jpg").count(), 0);
        assert_eq!(c.matching("ObjectCreated:Put", "docs/a.png").count(), 0);
        let again = NotificationConfig::parse(c.to_xml().as_bytes(), |_| true).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_destinations_and_events_are_refused() {
        assert_eq!(
            NotificationConfig::parse(DOC.as_bytes(), |_| false),
            Err(RuleError::UnknownDestination(
                "arn:postgate:sqs::cms:webhook".into()
            ))
        );
        let sqs = DOC.replace("arn:postgate:sqs::cms:webhook", "arn:aws:sqs:us-east-1:1:q");
        assert!(matches!(
            NotificationConfig::parse(sqs.as_bytes(), |_| true),
            Err(RuleError::UnknownDestination(_))
        ));
        let event = DOC.replace("s3:ObjectRemoved:Delete", "s3:ObjectRestore:Post");
        assert!(matches!(
            NotificationConfig::parse(event.as_bytes(), |_| true),
            Err(RuleError::UnknownEvent(_))
        ));
        let empty = NotificationConfig::parse(b"<NotificationConfiguration/>", |_| true);
        assert_eq!(empty, Ok(NotificationConfig::default()));
    }
}
