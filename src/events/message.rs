//! The event message, in S3's format so that code written for S3 (Lambda handlers, SQS
//! consumers) or MinIO parses it unchanged: `{"Records": [record]}`, eventVersion 2.1.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>.
//! postgate adds, as MinIO does, `s3.object.contentType` and `s3.object.userMetadata`
//! (`X-Amz-Meta-*`), and its own `postgate.linkId` for a link's uploads: extra keys that S3's
//! parsers ignore.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::db::objects::ObjectMeta;

/// What happened, in the event's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Post,
    Copy,
    CompleteMultipartUpload,
    Delete,
    /// A lifecycle rule's or an object's own expiry removed it (the sweeper).
    LifecycleExpiration,
}

impl Kind {
    /// The `eventName`, without S3's `s3:` configuration prefix.
    pub fn event_name(self) -> &'static str {
        match self {
            Kind::Put => "ObjectCreated:Put",
            Kind::Post => "ObjectCreated:Post",
            Kind::Copy => "ObjectCreated:Copy",
            Kind::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
            Kind::Delete => "ObjectRemoved:Delete",
            Kind::LifecycleExpiration => "LifecycleExpiration:Delete",
        }
    }
}

/// Who caused a change, and from where.
pub struct Actor<'a> {
    pub principal: &'a str,
    pub source_ip: &'a str,
    /// The request's `x-amz-request-id`, which postgate also answers as `x-amz-id-2`.
    pub request_id: &'a str,
    pub link_id: Option<&'a str>,
}

/// One record, without the fields that depend on the target and the row
/// (`s3.configurationId` and `s3.object.sequencer`, filled by [`send_body`]).
///
/// Typed and borrowed, so that it serialises straight to bytes: building a `serde_json::Value`
/// first (a map per object, a string per key) cost about four times as much, on every upload a
/// target wants.
pub fn record<'a>(
    region: &'a str,
    kind: Kind,
    actor: &Actor<'a>,
    bucket: &'a str,
    bucket_owner: &'a str,
    key: &str,
    meta: Option<&'a ObjectMeta>,
) -> Record<'a> {
    Record {
        event_version: "2.1",
        event_source: "aws:s3",
        aws_region: region,
        event_time: event_time(),
        event_name: kind.event_name(),
        user_identity: Principal {
            principal_id: actor.principal,
        },
        request_parameters: RequestParameters {
            source_ip_address: actor.source_ip,
        },
        response_elements: ResponseElements {
            request_id: actor.request_id,
            id_2: actor.request_id,
        },
        s3: S3 {
            s3_schema_version: "1.0",
            configuration_id: "",
            bucket: Bucket {
                name: bucket,
                owner_identity: Principal {
                    principal_id: bucket_owner,
                },
                arn: format!("arn:aws:s3:::{bucket}"),
            },
            object: Object {
                key: encode_key(key),
                size: meta.map(|m| m.size),
                e_tag: meta.map(|m| m.etag.trim_matches('"')),
                content_type: meta.and_then(|m| m.content_type.as_deref()),
                // postgate's own: the type the upload's first bytes showed (`sniff`).
                detected_type: meta.and_then(|m| m.detected_type.as_deref()),
                user_metadata: meta.map(|m| {
                    m.meta
                        .iter()
                        .map(|(n, v)| (format!("X-Amz-Meta-{}", title_case(n)), v.as_str()))
                        .collect()
                }),
                sequencer: None,
            },
        },
        postgate: actor.link_id.map(|link_id| Postgate { link_id }),
    }
}

/// An S3 event record (`Records[]`'s element), as [`record`] builds it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record<'a> {
    event_version: &'static str,
    event_source: &'static str,
    aws_region: &'a str,
    event_time: String,
    event_name: &'static str,
    user_identity: Principal<'a>,
    request_parameters: RequestParameters<'a>,
    response_elements: ResponseElements<'a>,
    s3: S3<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgate: Option<Postgate<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Principal<'a> {
    principal_id: &'a str,
}

#[derive(Serialize)]
struct RequestParameters<'a> {
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
}

#[derive(Serialize)]
struct ResponseElements<'a> {
    #[serde(rename = "x-amz-request-id")]
    request_id: &'a str,
    #[serde(rename = "x-amz-id-2")]
    id_2: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct S3<'a> {
    s3_schema_version: &'static str,
    configuration_id: &'static str,
    bucket: Bucket<'a>,
    object: Object<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bucket<'a> {
    name: &'a str,
    owner_identity: Principal<'a>,
    arn: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Object<'a> {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "eTag", skip_serializing_if = "Option::is_none")]
    e_tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detected_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_metadata: Option<BTreeMap<String, &'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequencer: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Postgate<'a> {
    link_id: &'a str,
}

/// Now, in ISO 8601 with milliseconds, as S3 writes `eventTime`.
fn event_time() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(f)
        .unwrap_or_default()
}

/// The stored body's `s3.object.sequencer` key; its value is a placeholder of the final width
/// until delivery (the event's id is only known once its row is inserted).
const SEQUENCER_KEY: &str = "\"sequencer\":\"";
/// The stored body's empty `s3.configurationId`, which [`send_body`] fills per target.
const CONFIGURATION_SLOT: &str = "\"configurationId\":\"\"";

/// The bytes the outbox stores for `record`: the body every target is sent (`{"Records":
/// [record]}`), with a placeholder sequencer and an empty configuration id. Built before the
/// transaction that inserts it, so that the one writer thread only runs the INSERT; the worker
/// sends it without parsing it again ([`send_body`]).
pub fn stored_body(mut record: Record<'_>) -> String {
    record.s3.object.sequencer = Some(sequencer(0));
    serde_json::to_string(&Records { records: [&record] }).unwrap_or_default()
}

#[derive(Serialize)]
struct Records<'a, 'r> {
    #[serde(rename = "Records")]
    records: [&'r Record<'a>; 1],
}

/// The body POSTed to a target: the stored bytes with the event's sequencer and the target's
/// configuration id written into their slots. Both are keys of postgate's own making, and a
/// JSON string cannot hold an unescaped `"`, so the first match is the key itself. A row
/// written before bodies were stored whole (a bare record) is built by parsing, as it was then.
pub fn send_body(stored: &str, configuration_id: &str, event_id: i64) -> String {
    let slots = (stored.find(SEQUENCER_KEY), stored.find(CONFIGURATION_SLOT));
    let (Some(seq_at), Some(config_at)) = slots else {
        return body(stored, configuration_id, event_id);
    };
    if !stored.starts_with("{\"Records\":") {
        return body(stored, configuration_id, event_id);
    }
    let quoted = serde_json::to_string(configuration_id).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::with_capacity(stored.len() + quoted.len());
    out.push_str(stored);
    let seq = seq_at + SEQUENCER_KEY.len();
    let width = sequencer(0).len();
    if out.get(seq..seq + width).is_some() {
        out.replace_range(seq..seq + width, &sequencer(event_id));
    }
    // Between the slot's two quotes; the same width was replaced above, so no offset moved.
    out.insert_str(
        config_at + CONFIGURATION_SLOT.len() - 1,
        &quoted[1..quoted.len() - 1],
    );
    out
}

/// The body POSTed to a target, from a bare stored record (rows written before
/// [`stored_body`]): parsed, given its configuration id and sequencer, serialised again.
pub fn body(record: &str, configuration_id: &str, event_id: i64) -> String {
    let mut record: Value = serde_json::from_str(record).unwrap_or(Value::Null);
    if let Some(s3) = record.get_mut("s3") {
        s3["configurationId"] = json!(configuration_id);
        if let Some(object) = s3.get_mut("object") {
            object["sequencer"] = json!(sequencer(event_id));
        }
    }
    json!({ "Records": [record] }).to_string()
}

/// S3's sequencer: a hex string that grows with every change of a key. Fixed width, so that
/// comparing two as strings orders them too.
pub fn sequencer(event_id: i64) -> String {
    format!("{:016X}", event_id)
}

/// The key as S3 writes it in events: form-URL-encoded (a space is `+`), slashes kept.
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|segment| url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>())
        .collect::<Vec<_>>()
        .join("/")
}

/// `cms-id` → `Cms-Id`, the header spelling MinIO's `userMetadata` uses.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_s3_does() {
        assert_eq!(encode_key("a b/c+d.jpg"), "a+b/c%2Bd.jpg");
        assert_eq!(encode_key("photos/été.png"), "photos/%C3%A9t%C3%A9.png");
        assert_eq!(encode_key("x*y_z-1.txt"), "x*y_z-1.txt");
    }

    #[test]
    fn a_body_carries_the_target_fields() {
        let actor = Actor {
            principal: "AK",
            source_ip: "127.0.0.1",
            request_id: "0123456789ABCDEF",
            link_id: Some("L1"),
        };
        let meta = ObjectMeta {
            size: 3,
            etag: "\"abc\"".into(),
            meta: vec![("cms-id".into(), "7".into())],
            ..ObjectMeta::default()
        };
        let r = record(
            "us-east-1",
            Kind::Post,
            &actor,
            "b",
            "O",
            "k 1",
            Some(&meta),
        );
        let bare = serde_json::to_string(&r).unwrap();
        let stored = stored_body(r);
        let sent = send_body(&stored, "cfg \"1\"", 255);
        let sent: Value = serde_json::from_str(&sent).unwrap();
        // The same as a body built by parsing (a row stored before whole bodies).
        let parsed: Value = serde_json::from_str(&body(&bare, "cfg \"1\"", 255)).unwrap();
        assert_eq!(sent, parsed);
        let r = &sent["Records"][0];
        assert_eq!(r["eventName"], "ObjectCreated:Post");
        assert_eq!(r["s3"]["configurationId"], "cfg \"1\"");
        assert_eq!(r["s3"]["object"]["key"], "k+1");
        assert_eq!(r["s3"]["object"]["eTag"], "abc");
        assert_eq!(r["s3"]["object"]["sequencer"], "00000000000000FF");
        assert_eq!(r["s3"]["object"]["userMetadata"]["X-Amz-Meta-Cms-Id"], "7");
        assert_eq!(r["postgate"]["linkId"], "L1");
        assert_eq!(
            r["responseElements"]["x-amz-request-id"],
            "0123456789ABCDEF"
        );
        assert_eq!(r["responseElements"]["x-amz-id-2"], "0123456789ABCDEF");
    }
}
