//! The S3 backend's errors: what the cluster answered (its S3 error `Code` and status, typed for
//! the codes the core maps) apart from a transport failure (no answer at all), so a caller can
//! tell "the object is not there" from "the cluster is not reachable".

use serde::Deserialize;

/// An S3 error code the core acts upon; any other keeps its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    NoSuchKey,
    NoSuchUpload,
    NoSuchBucket,
    PreconditionFailed,
    AccessDenied,
    SlowDown,
    InvalidRange,
    InvalidPart,
    EntityTooSmall,
    Other(String),
}

impl Code {
    pub fn parse(code: &str) -> Code {
        match code {
            "NoSuchKey" => Code::NoSuchKey,
            "NoSuchUpload" => Code::NoSuchUpload,
            "NoSuchBucket" => Code::NoSuchBucket,
            "PreconditionFailed" => Code::PreconditionFailed,
            "AccessDenied" => Code::AccessDenied,
            "SlowDown" => Code::SlowDown,
            "InvalidRange" => Code::InvalidRange,
            "InvalidPart" => Code::InvalidPart,
            "EntityTooSmall" => Code::EntityTooSmall,
            other => Code::Other(other.to_owned()),
        }
    }

    /// The code a body-less answer (HEAD, or a proxy's bare status) stands for.
    fn from_status(status: u16) -> Code {
        match status {
            404 => Code::NoSuchKey,
            403 => Code::AccessDenied,
            412 => Code::PreconditionFailed,
            416 => Code::InvalidRange,
            503 => Code::SlowDown,
            other => Code::Other(format!("HTTP {other}")),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Code::NoSuchKey => "NoSuchKey",
            Code::NoSuchUpload => "NoSuchUpload",
            Code::NoSuchBucket => "NoSuchBucket",
            Code::PreconditionFailed => "PreconditionFailed",
            Code::AccessDenied => "AccessDenied",
            Code::SlowDown => "SlowDown",
            Code::InvalidRange => "InvalidRange",
            Code::InvalidPart => "InvalidPart",
            Code::EntityTooSmall => "EntityTooSmall",
            Code::Other(code) => code,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster answered with an S3 error.
    #[error("backend answered {status} {}: {message}", code.as_str())]
    S3 {
        status: u16,
        code: Code,
        message: String,
    },
    /// No usable answer: connection refused or reset, a timeout, a body cut short.
    #[error("backend unreachable: {0}")]
    Transport(String),
    /// An answer that is not what S3 sends (unparsable XML, a missing header).
    #[error("backend answer not understood: {0}")]
    Protocol(String),
    /// The local spool (temporary part files).
    #[error("spool: {0}")]
    Spool(#[from] std::io::Error),
    /// `Backend::new` refused its settings.
    #[error("backend settings: {0}")]
    Config(String),
    /// A key with a `.` or `..` segment: a URL cannot carry it (the segment would be resolved
    /// away, and the request would name another key, or another bucket), so no request is made.
    #[error("key {0:?} has a '.' or '..' segment: not sent")]
    Unaddressable(String),
}

impl Error {
    /// The S3 code, when the cluster answered with one.
    pub fn code(&self) -> Option<&Code> {
        match self {
            Error::S3 { code, .. } => Some(code),
            _ => None,
        }
    }

    /// No object answers to this key: the cluster said so, or the key cannot be addressed at
    /// all ([`Error::Unaddressable`]: postgate never stores one, see [`super::addressable`]).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Unaddressable(_)) || matches!(self.code(), Some(Code::NoSuchKey))
    }

    /// Whether the same request may succeed when sent again: the cluster was busy or failed
    /// inside (5xx, SlowDown, RequestTimeout), or the request never got an answer.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Error::S3 { status, code, .. } => {
                *status >= 500
                    || matches!(code, Code::SlowDown)
                    || matches!(code, Code::Other(c) if c == "RequestTimeout" || c == "InternalError")
            }
            Error::Transport(_) => true,
            _ => false,
        }
    }

    /// The error an answer with `status` and `body` (S3's `<Error>` document, possibly empty)
    /// stands for.
    pub(super) fn from_answer(status: u16, body: &[u8]) -> Error {
        match parse_error_document(body) {
            Some(doc) => Error::S3 {
                status,
                code: Code::parse(&doc.code),
                message: doc.message,
            },
            None => Error::S3 {
                status,
                code: Code::from_status(status),
                message: String::new(),
            },
        }
    }

    pub(super) fn transport(e: reqwest::Error) -> Error {
        // reqwest's Display carries the URL, whose query holds the presigned credential scope
        // and signature: keep the kind and the cause, not the URL.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Transport(text)
    }
}

#[derive(Deserialize)]
pub(super) struct ErrorDocument {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

/// S3's `<Error>` document, when `body` is one. Also used on 200 answers: CopyObject and
/// CompleteMultipartUpload may fail after their 200 status has been sent.
pub(super) fn parse_error_document(body: &[u8]) -> Option<ErrorDocument> {
    let text = std::str::from_utf8(body).ok()?;
    let root = text
        .trim_start()
        .trim_start_matches('\u{feff}')
        .strip_prefix("<?xml")
        .map_or(text.trim_start(), |rest| {
            rest.split_once("?>").map_or("", |(_, r)| r.trim_start())
        });
    if !root.starts_with("<Error>") && !root.starts_with("<Error ") {
        return None;
    }
    quick_xml::de::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_document_gives_its_code() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchUpload</Code><Message>gone</Message><RequestId>1</RequestId></Error>"#;
        let e = Error::from_answer(404, body);
        assert_eq!(e.code(), Some(&Code::NoSuchUpload));
        assert!(!e.is_retryable());
        assert_eq!(Error::from_answer(503, b"").code(), Some(&Code::SlowDown));
        assert!(Error::from_answer(503, b"").is_retryable());
        assert_eq!(
            Error::from_answer(400, b"<Error><Code>Weird</Code></Error>").code(),
            Some(&Code::Other("Weird".into()))
        );
        assert!(parse_error_document(b"<CompleteMultipartUploadResult/>").is_none());
    }
}
