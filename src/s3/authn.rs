//! Who is calling: turns a request's signature into a `Caller` (or refuses it), and reads the
//! request body the way its signature says (plain, SHA-256-checked, or aws-chunked).

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use super::S3Request;
use crate::auth::chunked::{AwsChunked, AwsChunkedOptions, Trailers};
use crate::auth::{self, AuthError, Payload, RequestView, SecretKey};
use crate::db::keys::KeyRecord;
use crate::error::{S3Error, S3ErrorCode, S3Result};
use crate::state::AppState;

/// An authenticated (or anonymous) caller and how its body must be read.
pub struct Caller {
    key: Option<KeyRecord>,
    payload: Payload,
}

/// A request body ready to stream into the store.
pub struct UploadBody {
    pub stream: BoxStream<'static, Result<Bytes, S3Error>>,
    /// The SHA-256 the signature covers, to be compared once the body is read.
    pub sha256_hex: Option<String>,
    /// Trailing headers of an aws-chunked body, filled in when the stream ends.
    pub trailer: Option<TrailerHandle>,
    /// `x-amz-decoded-content-length` of an aws-chunked body.
    pub decoded_length: Option<u64>,
}

#[derive(Clone)]
pub struct TrailerHandle(Trailers);

impl TrailerHandle {
    /// The value of trailer `name` (e.g. `x-amz-checksum-crc32`), once the body has ended.
    pub fn value(&self, name: &str) -> Option<String> {
        self.0
            .get()?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

pub async fn authenticate(app: &AppState, req: &S3Request) -> S3Result<Caller> {
    let creds = auth::parse_request(&req.uri, &req.headers)?;
    let Some(access_key) = creds.access_key() else {
        return Ok(Caller {
            key: None,
            payload: auth::anonymous_payload(&req.headers)?,
        });
    };
    // The access key id, as claimed, for the access log (before verification: a refused
    // signature is worth seeing next to the key it claimed).
    crate::telemetry::note(|t| t.access_key = Some(access_key.to_owned()));
    let Some(record) = app.find_key(access_key).await? else {
        return Err(AuthError::InvalidAccessKeyId {
            access_key: access_key.to_owned(),
        }
        .into());
    };
    let view =
        RequestView::new(&req.method, &req.uri, &req.headers).with_v2_resource(&req.v2_resource);
    let secret = SecretKey::new(record.secret_key.clone());
    let verified = auth::verify(
        &creds,
        &view,
        &secret,
        &app.config.region,
        time::OffsetDateTime::now_utc(),
    )?;
    Ok(Caller {
        key: Some(record),
        payload: verified.payload,
    })
}

impl Caller {
    /// Who an event names as `userIdentity.principalId`: the access key, or `anonymous`.
    pub fn principal(&self) -> &str {
        self.access_key().unwrap_or("anonymous")
    }

    pub fn access_key(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.access_key.as_str())
    }

    pub fn key(&self) -> Option<&KeyRecord> {
        self.key.as_ref()
    }

    pub fn name(&self) -> &str {
        self.key.as_ref().map_or("anonymous", |k| k.name.as_str())
    }

    pub fn is_admin(&self) -> bool {
        self.key.as_ref().is_some_and(|k| k.is_admin)
    }

    pub fn is_authenticated(&self) -> bool {
        self.key.is_some()
    }

    /// The caller as the core's permission check sees it.
    pub fn who(&self) -> crate::objects::access::Who<'_> {
        crate::objects::access::Who {
            is_admin: self.is_admin(),
            access_key: self.access_key(),
        }
    }

    /// The body as a stream of payload bytes, decoded from aws-chunked when the signature says
    /// so. Hash checks the signature implies are left to the caller (see `UploadBody`).
    pub fn upload_body(&self, req: &S3Request, body: Body) -> S3Result<UploadBody> {
        let raw = body
            .into_data_stream()
            .map_err(|e| S3Error::code(S3ErrorCode::IncompleteBody).with("Detail", e.to_string()));
        let options = AwsChunkedOptions::from_request(&self.payload, &req.headers)?;
        match options {
            Some(options) => {
                let decoded_length = options.decoded_content_length;
                let decoder = AwsChunked::new(raw, options);
                let trailer = TrailerHandle(decoder.trailers());
                Ok(UploadBody {
                    stream: decoder.map_err(S3Error::from).boxed(),
                    sha256_hex: None,
                    trailer: Some(trailer),
                    decoded_length,
                })
            }
            None => Ok(UploadBody {
                stream: raw.boxed(),
                sha256_hex: match &self.payload {
                    Payload::Signed(h) => Some(h.clone()),
                    Payload::Empty => Some(crate::auth::sigv4::EMPTY_SHA256.to_owned()),
                    _ => None,
                },
                trailer: None,
                decoded_length: None,
            }),
        }
    }

    /// Reads a small body (an XML document) whole, checking its signed hash, up to `limit`.
    pub async fn read_small_body(
        &self,
        req: &S3Request,
        body: Body,
        limit: usize,
    ) -> S3Result<Bytes> {
        let upload = self.upload_body(req, body)?;
        let mut stream = upload.stream;
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if buf.len() + chunk.len() > limit {
                return Err(S3Error::code(S3ErrorCode::MalformedXML));
            }
            buf.extend_from_slice(&chunk);
        }
        if let Some(want) = upload.sha256_hex {
            let have = crate::auth::sigv4::hex_sha256(&buf);
            if !want.eq_ignore_ascii_case(&have) {
                return Err(AuthError::ContentSha256Mismatch {
                    client_computed: want,
                    s3_computed: have,
                }
                .into());
            }
        }
        Ok(Bytes::from(buf))
    }
}
