//! The event message, in S3's format so that code written for S3 (Lambda handlers, SQS
//! consumers) or MinIO parses it unchanged: `{"Records": [record]}`, eventVersion 2.1.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>.
//! postgate adds, as MinIO does, `s3.object.contentType` and `s3.object.userMetadata`
//! (`X-Amz-Meta-*`), and its own `postgate.linkId` for a link's uploads: extra keys that S3's
//! parsers ignore.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::db::events::Delivery;

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

/// One outbox row's record, rendered when it is sent: `{"Records": [record]}` with the target's
/// `s3.configurationId` and the row's id as `s3.object.sequencer`.
///
/// Typed and borrowed, so that it serialises straight to bytes: building a `serde_json::Value`
/// first (a map per object, a string per key) cost about four times as much.
pub fn render(region: &str, row: &Delivery) -> String {
    let f = &row.fields;
    let pairs: Vec<(String, String)> = f
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let request_id = f.request_id.as_str();
    let record = Record {
        event_version: "2.1",
        event_source: "aws:s3",
        aws_region: region,
        event_time: event_time(row.created_at),
        event_name: &row.event_name,
        user_identity: Principal {
            principal_id: &f.principal,
        },
        request_parameters: RequestParameters {
            source_ip_address: &f.source_ip,
        },
        response_elements: ResponseElements {
            request_id,
            id_2: request_id,
        },
        s3: S3 {
            s3_schema_version: "1.0",
            configuration_id: &row.configuration_id,
            bucket: Bucket {
                name: &row.bucket,
                owner_identity: Principal {
                    principal_id: &f.owner,
                },
                arn: format!("arn:aws:s3:::{}", row.bucket),
            },
            object: Object {
                key: encode_key(&row.key),
                size: f.size,
                e_tag: f.size.and(f.etag.as_deref()).map(|e| e.trim_matches('"')),
                content_type: f.size.and(f.content_type.as_deref()),
                // postgate's own: the type the upload's first bytes showed (`sniff`).
                detected_type: f.size.and(f.detected_type.as_deref()),
                user_metadata: f.size.map(|_| {
                    pairs
                        .iter()
                        .map(|(n, v)| (format!("X-Amz-Meta-{}", title_case(n)), v.as_str()))
                        .collect()
                }),
                sequencer: sequencer(row.id),
            },
        },
        postgate: f.link_id.as_deref().map(|link_id| Postgate { link_id }),
    };
    serde_json::to_string(&Records { records: [&record] }).unwrap_or_default()
}

/// An S3 event record (`Records[]`'s element).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    event_version: &'static str,
    event_source: &'static str,
    aws_region: &'a str,
    event_time: String,
    event_name: &'a str,
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
    configuration_id: &'a str,
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
    sequencer: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Postgate<'a> {
    link_id: &'a str,
}

/// `at` (milliseconds since the epoch) in ISO 8601 with milliseconds, as S3 writes `eventTime`.
fn event_time(at: i64) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(f).ok())
        .unwrap_or_default()
}

/// The stored body's `s3.object.sequencer` key (rows written before migration 0017); its value
/// is a placeholder of the final width.
const SEQUENCER_KEY: &str = "\"sequencer\":\"";
/// The stored body's empty `s3.configurationId` (rows written before migration 0017), which
/// [`send_body`] fills per target.
const CONFIGURATION_SLOT: &str = "\"configurationId\":\"\"";

#[derive(Serialize)]
struct Records<'a, 'r> {
    #[serde(rename = "Records")]
    records: [&'r Record<'a>; 1],
}

/// The body POSTed to a target for a row written before migration 0017, which stored its
/// rendered body: the stored bytes with the event's sequencer and the target's configuration id
/// written into their slots. Both are keys of postgate's own making, and a
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

/// The body POSTed to a target, from a bare stored record (rows written before whole bodies
/// were stored): parsed, given its configuration id and sequencer, serialised again.
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

/// One body of the records of these bodies (each `{"Records":[record]}`, as [`render`] and
/// [`send_body`] make them), in order: what a batch POSTs. A single body is sent as it is.
pub fn join(bodies: impl IntoIterator<Item = String>) -> String {
    let mut bodies: Vec<String> = bodies.into_iter().collect();
    if bodies.len() == 1 {
        return bodies.swap_remove(0);
    }
    let records: Vec<Cow<str>> = bodies.iter().map(|b| records_of(b)).collect();
    let records: Vec<&str> = records
        .iter()
        .map(|r| r.as_ref())
        .filter(|r| !r.is_empty())
        .collect();
    format!("{OPEN}{}{CLOSE}", records.join(","))
}

/// How every body [`render`], [`send_body`] and [`body`] make opens and closes.
const OPEN: &str = "{\"Records\":[";
const CLOSE: &str = "]}";

/// A body's records, comma-separated: what lies between [`OPEN`] and [`CLOSE`], or, for a body
/// not of that shape (none is), its `Records` parsed, so that none is lost.
fn records_of(body: &str) -> Cow<'_, str> {
    if let Some(records) = body.strip_prefix(OPEN).and_then(|r| r.strip_suffix(CLOSE)) {
        return records.into();
    }
    let parsed: Vec<String> = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("Records")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(Value::to_string)
        .collect();
    parsed.join(",").into()
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
    use crate::db::events::EventFields;

    #[test]
    fn keys_are_encoded_as_s3_does() {
        assert_eq!(encode_key("a b/c+d.jpg"), "a+b/c%2Bd.jpg");
        assert_eq!(encode_key("photos/été.png"), "photos/%C3%A9t%C3%A9.png");
        assert_eq!(encode_key("x*y_z-1.txt"), "x*y_z-1.txt");
    }

    /// What a row of migration 0016 stored for a POST through a link (its rendered body, with
    /// an empty configuration id and a placeholder sequencer), and the same event's removal.
    const STORED_0016: [&str; 2] = [
        r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-02T11:00:00.123Z","eventName":"ObjectCreated:Post","userIdentity":{"principalId":"AK"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"0123456789ABCDEF","x-amz-id-2":"0123456789ABCDEF"},"s3":{"s3SchemaVersion":"1.0","configurationId":"","bucket":{"name":"b","ownerIdentity":{"principalId":"O"},"arn":"arn:aws:s3:::b"},"object":{"key":"k+1/%C3%A9","size":3,"eTag":"abc","contentType":"image/png","detectedType":"image/png","userMetadata":{"X-Amz-Meta-Cms-Id":"7","X-Amz-Meta-Note":"a \"b\""},"sequencer":"0000000000000000"}},"postgate":{"linkId":"L1"}}]}"#,
        r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-12-02T11:00:00.123Z","eventName":"ObjectRemoved:Delete","userIdentity":{"principalId":"AK"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"0123456789ABCDEF","x-amz-id-2":"0123456789ABCDEF"},"s3":{"s3SchemaVersion":"1.0","configurationId":"","bucket":{"name":"b","ownerIdentity":{"principalId":"O"},"arn":"arn:aws:s3:::b"},"object":{"key":"k+1/%C3%A9","sequencer":"0000000000000000"}}}]}"#,
    ];

    fn row(name: &str, fields: EventFields) -> Delivery {
        Delivery {
            id: 255,
            target: "t".into(),
            configuration_id: "cfg \"1\"".into(),
            bucket: "b".into(),
            key: "k 1/é".into(),
            event_name: name.into(),
            record: None,
            fields,
            state: "pending".into(),
            attempts: 0,
            since: 0,
            next_at: 0,
            last_error: None,
            // 2026-12-02T11:00:00.123Z
            created_at: 1796209200123,
        }
    }

    /// A row's record rendered from its fields is, byte for byte, what a row that stored the
    /// rendered record (before migration 0017) is sent as.
    #[test]
    fn a_record_rendered_from_its_fields_is_the_one_stored_before() {
        let created = EventFields {
            owner: "O".into(),
            size: Some(3),
            etag: Some("\"abc\"".into()),
            content_type: Some("image/png".into()),
            detected_type: Some("image/png".into()),
            metadata: Some(r#"[["cms-id","7"],["note","a \"b\""]]"#.into()),
            principal: "AK".into(),
            source_ip: "127.0.0.1".into(),
            request_id: "0123456789ABCDEF".into(),
            link_id: Some("L1".into()),
        };
        let removed = EventFields {
            size: None,
            etag: None,
            content_type: None,
            detected_type: None,
            metadata: None,
            link_id: None,
            ..created.clone()
        };
        for (stored, (name, fields)) in STORED_0016.iter().zip([
            ("ObjectCreated:Post", created.clone()),
            ("ObjectRemoved:Delete", removed.clone()),
        ]) {
            let sent = render("us-east-1", &row(name, fields));
            assert_eq!(sent, send_body(stored, "cfg \"1\"", 255));
            let r: Value = serde_json::from_str(&sent).unwrap();
            let r = &r["Records"][0];
            assert_eq!(r["s3"]["configurationId"], "cfg \"1\"");
            assert_eq!(r["s3"]["object"]["sequencer"], "00000000000000FF");
        }
        // A batch's body: both records, in order, in one `Records`.
        let rows = [
            ("ObjectCreated:Post", created),
            ("ObjectRemoved:Delete", removed),
        ];
        let bodies = rows.map(|(name, f)| render("us-east-1", &row(name, f)));
        let joined: Value = serde_json::from_str(&join(bodies.clone())).unwrap();
        let records = joined["Records"].as_array().unwrap();
        assert_eq!(records.len(), 2);
        for (record, body) in records.iter().zip(&bodies) {
            let single: Value = serde_json::from_str(body).unwrap();
            assert_eq!(record, &single["Records"][0]);
        }
        assert_eq!(join([bodies[0].clone()]), bodies[0]);
        // A bare record (before whole bodies were stored) still parses into the same body.
        let bare: Value = serde_json::from_str(STORED_0016[0]).unwrap();
        let parsed: Value =
            serde_json::from_str(&body(&bare["Records"][0].to_string(), "cfg \"1\"", 255)).unwrap();
        let sent: Value =
            serde_json::from_str(&send_body(STORED_0016[0], "cfg \"1\"", 255)).unwrap();
        assert_eq!(sent, parsed);
    }
}
