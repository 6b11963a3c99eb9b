//! S3's XML: a small writer for response documents and serde shapes for the request bodies we read.
//!
//! Responses are written element by element (no intermediate DOM): list results can hold a
//! thousand entries and this keeps them to one allocation. Request bodies are small and parsed with
//! quick-xml's serde support; anything that does not parse is `MalformedXml`, which `error.rs`
//! answers as S3 does (`MalformedXML`). The module imports nothing of the crate: it is a leaf.

use quick_xml::escape::partial_escape as escape;
use serde::Deserialize;

pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub struct XmlWriter {
    out: String,
}

impl Default for XmlWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl XmlWriter {
    pub fn new() -> Self {
        let mut out = String::with_capacity(512);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        XmlWriter { out }
    }

    /// Opens the document's root element with the S3 namespace.
    pub fn root(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push_str(" xmlns=\"");
        self.out.push_str(S3_NS);
        self.out.push_str("\">");
    }

    pub fn open(&mut self, name: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    pub fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    pub fn elem(&mut self, name: &str, text: &str) {
        self.open(name);
        self.out.push_str(&escape(text));
        self.close(name);
    }

    /// Escaped text inside the currently open element.
    pub fn elem_text(&mut self, text: &str) {
        self.out.push_str(&escape(text));
    }

    /// Markup written as is (for elements with attributes); never pass client data here.
    pub fn raw(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A request body that is not UTF-8 or does not have the expected shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the XML body is malformed")]
pub struct MalformedXml;

/// Parses a request body into `T`; any failure is `MalformedXml`.
pub fn parse<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, MalformedXml> {
    let text = std::str::from_utf8(body).map_err(|_| MalformedXml)?;
    quick_xml::de::from_str(text).map_err(|_| MalformedXml)
}

/// `<Delete>` body of DeleteObjects.
#[derive(Debug, Deserialize)]
pub struct Delete {
    #[serde(rename = "Quiet", default)]
    pub quiet: Option<bool>,
    #[serde(rename = "Object", default)]
    pub objects: Vec<DeleteObject>,
}

#[derive(Debug, Deserialize)]
pub struct DeleteObject {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "VersionId", default)]
    pub _version_id: Option<String>,
    /// Conditions of a conditional delete of this object (S3, 2024), checked by `objects::delete`.
    #[serde(rename = "ETag", default)]
    pub etag: Option<String>,
    #[serde(rename = "LastModifiedTime", default)]
    pub last_modified_time: Option<String>,
    #[serde(rename = "Size", default)]
    pub size: Option<String>,
}

/// `<CreateBucketConfiguration>`: accepted and checked for well-formedness; the location is ours.
#[derive(Debug, Deserialize)]
pub struct CreateBucketConfiguration {
    #[serde(rename = "LocationConstraint", default)]
    pub location_constraint: Option<String>,
}

/// `<Tagging><TagSet><Tag><Key/><Value/></Tag>...` (PutObject `x-amz-tagging` uses the query form).
#[derive(Debug, Deserialize)]
pub struct Tagging {
    #[serde(rename = "TagSet")]
    pub tag_set: TagSet,
}

#[derive(Debug, Deserialize)]
pub struct TagSet {
    #[serde(rename = "Tag", default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
pub struct Tag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_escapes_text() {
        let mut w = XmlWriter::new();
        w.open("A");
        w.elem("Key", "a<b&\"c\"");
        w.close("A");
        assert!(w.finish().ends_with("<A><Key>a&lt;b&amp;\"c\"</Key></A>"));
    }

    #[test]
    fn parses_delete_body() {
        let body = br#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet><Object><Key>a b</Key></Object><Object><Key>c</Key></Object></Delete>"#;
        let d: Delete = parse(body).unwrap();
        assert_eq!(d.quiet, Some(true));
        assert_eq!(d.objects.len(), 2);
        assert_eq!(d.objects[0].key, "a b");
    }
}
