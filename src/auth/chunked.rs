//! aws-chunked request bodies, decoded as a stream with bounded memory.
//!
//! Owns [`AwsChunked`], a `Stream` adaptor from the raw body to the decoded payload, for the
//! three streaming modes of `x-amz-content-sha256`: signed chunks, signed chunks plus signed
//! trailer, and unsigned chunks plus trailer (the SDK default for PutObject since 2025). The
//! framing is
//!
//! ```text
//! hex-size[;chunk-signature=sig]\r\n <data> \r\n   (repeated)
//! 0[;chunk-signature=sig]\r\n
//! [trailer-name:value\r\n ...] [x-amz-trailer-signature:sig\r\n]
//! \r\n
//! ```
//!
//! boto3/botocore (`AwsChunkedWrapper`), the AWS CLI and the JS SDK v3 all end an unsigned body
//! with `0\r\n`, the checksum trailer line, then `\r\n`; a body without trailers ends `0\r\n\r\n`.
//! Both are the same grammar: lines after the last chunk until an empty line.
//!
//! Memory stays flat: chunk data is passed through as it arrives (never collected), and only a
//! header line (≤ 4 KiB), the trailers (≤ 16 KiB) and one held-back piece are buffered. A signed
//! chunk is hashed incrementally; its final piece is held back until its signature checks out,
//! and the body's very last piece is held back until the trailers, the checksum and the decoded
//! length check out. So a consumer that only commits on a clean end of stream never commits a
//! body that fails verification.
//!
//! Specs:
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html>
//! - <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::Stream;
use http::HeaderMap;
use sha2::{Digest as _, Sha256};

use super::Payload;
use super::checksum::{self, ChecksumAlgorithm, ChecksumError, Checksummer};
use super::secret::ct_eq_str;
use super::sigv4::{ChunkSigner, hex_sha256};

/// Longest chunk-header or trailer line we accept. Real ones are under 200 bytes.
const MAX_LINE: usize = 4096;
/// Most trailer bytes (all lines) we accept.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why an aws-chunked body was rejected. No HTTP in here: `error.rs` maps each variant.
#[derive(Debug, thiserror::Error)]
pub enum ChunkedError {
    /// 400 IncompleteBody: reading the body failed (the client went away). `source` is for logs.
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header.")]
    Body(#[source] Box<dyn StdError + Send + Sync>),

    /// 400 IncompleteBody: the body ended before the final chunk (or inside a line).
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header.")]
    Truncated,

    /// 400 IncompleteBody: the decoded length differs from `x-amz-decoded-content-length`.
    /// `actual` is the count when the difference was noticed (it may stop early when too long).
    #[error("You did not provide the number of bytes specified by the Content-Length HTTP header.")]
    LengthMismatch { expected: u64, actual: u64 },

    /// 400 InvalidRequest: the framing is not aws-chunked (bad size, missing CRLF, …).
    #[error("The aws-chunked request body is malformed: {0}.")]
    Malformed(&'static str),

    /// 403 SignatureDoesNotMatch, with extra elements `StringToSign` and `SignatureProvided`:
    /// a chunk or trailer signature is wrong.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your key and signing method."
    )]
    SignatureDoesNotMatch {
        string_to_sign: String,
        signature_provided: String,
    },

    /// 400 InvalidRequest: `x-amz-trailer` names something other than one checksum.
    #[error("The value specified in the x-amz-trailer header is not supported")]
    UnsupportedTrailer { value: String },

    /// 400 InvalidArgument, with `ArgumentName`=`x-amz-decoded-content-length`.
    #[error("Invalid argument: x-amz-decoded-content-length")]
    InvalidDecodedLength { value: String },

    /// 400 InvalidRequest: `x-amz-trailer` announced a checksum the body did not carry.
    #[error("The x-amz-trailer header specified {name}, but the request body did not include it.")]
    MissingTrailer { name: &'static str },

    /// 400 InvalidRequest (value not base64 of the right length) or 400 BadDigest (mismatch).
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
}

/// How to decode one body; see [`AwsChunkedOptions::from_request`].
#[derive(Debug, Clone)]
pub struct AwsChunkedOptions {
    /// Chunk (and trailer) signatures are checked with this; `None` for unsigned streaming.
    pub signer: Option<ChunkSigner>,
    /// Whether trailer lines may follow the final chunk.
    pub trailer_mode: bool,
    /// From `x-amz-decoded-content-length`; checked at the end when present.
    pub decoded_content_length: Option<u64>,
    /// From `x-amz-trailer`; computed over the data and compared with the trailer value.
    pub trailer_checksum: Option<ChecksumAlgorithm>,
}

impl AwsChunkedOptions {
    /// Options for a verified request, or `None` when its payload is not aws-chunked.
    pub fn from_request(
        payload: &Payload,
        headers: &HeaderMap,
    ) -> Result<Option<Self>, ChunkedError> {
        let (signer, trailer_mode) = match payload {
            Payload::StreamingSigned(s) => (Some(s.clone()), false),
            Payload::StreamingSignedTrailer(s) => (Some(s.clone()), true),
            Payload::StreamingUnsignedTrailer => (None, true),
            Payload::Empty | Payload::Signed(_) | Payload::Unsigned => return Ok(None),
        };
        let decoded_content_length =
            match headers.get("x-amz-decoded-content-length") {
                None => None,
                Some(v) => {
                    let s = String::from_utf8_lossy(v.as_bytes());
                    Some(s.trim().parse::<u64>().map_err(|_| {
                        ChunkedError::InvalidDecodedLength {
                            value: s.clone().into_owned(),
                        }
                    })?)
                }
            };
        let trailer_checksum = match headers.get("x-amz-trailer") {
            Some(v) if trailer_mode => {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                let mut names = value.split(',').map(str::trim).filter(|n| !n.is_empty());
                match (
                    names.next().map(ChecksumAlgorithm::from_header_name),
                    names.next(),
                ) {
                    (Some(Some(algo)), None) => Some(algo),
                    (None, None) => None,
                    _ => return Err(ChunkedError::UnsupportedTrailer { value }),
                }
            }
            _ => None,
        };
        Ok(Some(Self {
            signer,
            trailer_mode,
            decoded_content_length,
            trailer_checksum,
        }))
    }
}

#[derive(Debug)]
struct TrailerData {
    lines: Vec<(String, String)>,
    checksum: Option<(ChecksumAlgorithm, String)>,
}

/// The trailers of a body, available once the stream has ended cleanly (all checks passed).
/// A cheap handle: clone it before handing the stream to whatever consumes it.
#[derive(Debug, Clone, Default)]
pub struct Trailers(Arc<OnceLock<TrailerData>>);

impl Trailers {
    /// Trailer lines as `(lowercase name, value)`, without `x-amz-trailer-signature`; `None`
    /// until the stream has ended cleanly.
    pub fn get(&self) -> Option<&[(String, String)]> {
        self.0.get().map(|d| d.lines.as_slice())
    }

    /// The checksum announced by `x-amz-trailer`, verified against the decoded data.
    pub fn checksum(&self) -> Option<(ChecksumAlgorithm, &str)> {
        self.0
            .get()
            .and_then(|d| d.checksum.as_ref())
            .map(|(algo, value)| (*algo, value.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a `size[;chunk-signature=…]` line.
    Header,
    /// Passing chunk data through; `remaining` bytes to go.
    Data,
    /// Expecting the CRLF after chunk data.
    DataEnd {
        seen_cr: bool,
    },
    /// Reading trailer lines up to the empty line.
    Trailer,
    Done,
    Failed,
}

/// Decodes an aws-chunked body. Yields the payload bytes; see the module docs for guarantees.
pub struct AwsChunked<S> {
    body: S,
    body_done: bool,
    input: Bytes,
    line: Vec<u8>,
    state: State,
    signer: Option<ChunkSigner>,
    trailer_mode: bool,
    prev_signature: String,
    chunk_signature: String,
    chunk_hasher: Option<Sha256>,
    remaining: u64,
    pending: Option<Bytes>,
    decoded: u64,
    expected_len: Option<u64>,
    checksum: Option<Checksummer>,
    trailer_lines: Vec<(String, String)>,
    trailer_bytes: Vec<u8>,
    trailer_signature: Option<String>,
    trailers: Trailers,
}

impl<S> std::fmt::Debug for AwsChunked<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsChunked")
            .field("state", &self.state)
            .field("decoded", &self.decoded)
            .finish_non_exhaustive()
    }
}

impl<S, E> AwsChunked<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    pub fn new(body: S, options: AwsChunkedOptions) -> Self {
        let prev_signature = options
            .signer
            .as_ref()
            .map(|s| s.seed_signature().to_owned())
            .unwrap_or_default();
        Self {
            body,
            body_done: false,
            input: Bytes::new(),
            line: Vec::new(),
            state: State::Header,
            signer: options.signer,
            trailer_mode: options.trailer_mode,
            prev_signature,
            chunk_signature: String::new(),
            chunk_hasher: None,
            remaining: 0,
            pending: None,
            decoded: 0,
            expected_len: options.decoded_content_length,
            checksum: options.trailer_checksum.map(Checksummer::new),
            trailer_lines: Vec::new(),
            trailer_bytes: Vec::new(),
            trailer_signature: None,
            trailers: Trailers::default(),
        }
    }

    /// A handle on the trailers, filled in when the stream ends cleanly.
    pub fn trailers(&self) -> Trailers {
        self.trailers.clone()
    }

    /// Decoded bytes so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    fn fail(&mut self, err: ChunkedError) -> ChunkedError {
        self.state = State::Failed;
        self.pending = None;
        err
    }

    /// Moves input into `self.line` up to a newline. Returns the line without CRLF (a bare LF is
    /// tolerated) once complete.
    fn take_line(&mut self) -> Result<Option<Vec<u8>>, ChunkedError> {
        let found = self.input.iter().position(|&b| b == b'\n');
        let take = found.map_or(self.input.len(), |i| i + 1);
        if self.line.len() + take > MAX_LINE {
            return Err(ChunkedError::Malformed("line too long"));
        }
        self.line.extend_from_slice(&self.input[..take]);
        self.input.advance(take);
        if found.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop(); // the '\n'
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Some(line))
    }

    fn on_chunk_header(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let line =
            std::str::from_utf8(line).map_err(|_| ChunkedError::Malformed("bad chunk header"))?;
        let mut parts = line.split(';');
        let size_hex = parts.next().unwrap_or("").trim();
        if size_hex.is_empty()
            || size_hex.len() > 16
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ChunkedError::Malformed("bad chunk size"));
        }
        let size = u64::from_str_radix(size_hex, 16)
            .map_err(|_| ChunkedError::Malformed("bad chunk size"))?;
        let signature = parts
            .filter_map(|ext| ext.trim().strip_prefix("chunk-signature="))
            .next()
            .map(str::trim);
        if self.signer.is_some() {
            let signature = signature.ok_or(ChunkedError::Malformed("missing chunk-signature"))?;
            self.chunk_signature = signature.to_owned();
            self.chunk_hasher = Some(Sha256::new());
        }
        if size == 0 {
            self.verify_chunk()?;
            self.state = State::Trailer;
        } else {
            self.remaining = size;
            self.state = State::Data;
        }
        Ok(())
    }

    /// Checks the signature of the chunk just read (no-op when unsigned).
    fn verify_chunk(&mut self) -> Result<(), ChunkedError> {
        let (Some(signer), Some(hasher)) = (&self.signer, self.chunk_hasher.take()) else {
            return Ok(());
        };
        let sts =
            signer.chunk_string_to_sign(&self.prev_signature, &hex::encode(hasher.finalize()));
        if !ct_eq_str(&signer.sign(&sts), &self.chunk_signature) {
            return Err(ChunkedError::SignatureDoesNotMatch {
                string_to_sign: sts,
                signature_provided: std::mem::take(&mut self.chunk_signature),
            });
        }
        self.prev_signature = std::mem::take(&mut self.chunk_signature);
        Ok(())
    }

    fn on_trailer_line(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        if line.is_empty() {
            return self.finish();
        }
        if !self.trailer_mode {
            return Err(ChunkedError::Malformed(
                "trailer in a body without trailers",
            ));
        }
        let line = std::str::from_utf8(line).map_err(|_| ChunkedError::Malformed("bad trailer"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or(ChunkedError::Malformed("bad trailer"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if self.trailer_signature.is_some() {
            return Err(ChunkedError::Malformed(
                "trailer after x-amz-trailer-signature",
            ));
        }
        if name == "x-amz-trailer-signature" {
            self.trailer_signature = Some(value.to_owned());
            return Ok(());
        }
        if self.trailer_bytes.len() + line.len() + 1 > MAX_TRAILER_BYTES {
            return Err(ChunkedError::Malformed("trailers too large"));
        }
        // The trailer signature covers each trailer as `name:value\n`.
        self.trailer_bytes.extend_from_slice(name.as_bytes());
        self.trailer_bytes.push(b':');
        self.trailer_bytes.extend_from_slice(value.as_bytes());
        self.trailer_bytes.push(b'\n');
        self.trailer_lines.push((name, value.to_owned()));
        Ok(())
    }

    /// All input consumed: check trailer signature, length and checksum, publish the trailers.
    fn finish(&mut self) -> Result<(), ChunkedError> {
        if let (Some(signer), true) = (&self.signer, self.trailer_mode) {
            let provided = self
                .trailer_signature
                .take()
                .ok_or(ChunkedError::Malformed("missing x-amz-trailer-signature"))?;
            let sts = signer
                .trailer_string_to_sign(&self.prev_signature, &hex_sha256(&self.trailer_bytes));
            if !ct_eq_str(&signer.sign(&sts), &provided) {
                return Err(ChunkedError::SignatureDoesNotMatch {
                    string_to_sign: sts,
                    signature_provided: provided,
                });
            }
        }
        if let Some(expected) = self.expected_len
            && expected != self.decoded
        {
            return Err(ChunkedError::LengthMismatch {
                expected,
                actual: self.decoded,
            });
        }
        let checksum = match self.checksum.take() {
            None => None,
            Some(summer) => {
                let algo = summer.algorithm();
                let sent = self
                    .trailer_lines
                    .iter()
                    .find(|(name, _)| name == algo.header_name())
                    .map(|(_, value)| value.clone())
                    .ok_or(ChunkedError::MissingTrailer {
                        name: algo.header_name(),
                    })?;
                checksum::verify_value(algo, &sent, &summer.finish())?;
                Some((algo, sent))
            }
        };
        // `set` only fails if already set, which cannot happen: we finish once.
        let _ = self.trailers.0.set(TrailerData {
            lines: std::mem::take(&mut self.trailer_lines),
            checksum,
        });
        self.state = State::Done;
        Ok(())
    }

    /// Consumes some of `self.input`; returns a piece to yield, if any.
    fn step(&mut self) -> Result<Option<Bytes>, ChunkedError> {
        match self.state {
            State::Header => {
                if let Some(line) = self.take_line()? {
                    self.on_chunk_header(&line)?;
                }
                Ok(None)
            }
            State::Data => {
                let n = usize::try_from(self.remaining)
                    .map_or(self.input.len(), |r| r.min(self.input.len()));
                let piece = self.input.split_to(n);
                if let Some(hasher) = &mut self.chunk_hasher {
                    hasher.update(&piece);
                }
                if let Some(summer) = &mut self.checksum {
                    summer.update(&piece);
                }
                // n <= remaining, so neither of these can wrap.
                self.remaining -= n as u64;
                self.decoded += n as u64;
                if let Some(expected) = self.expected_len
                    && self.decoded > expected
                {
                    return Err(ChunkedError::LengthMismatch {
                        expected,
                        actual: self.decoded,
                    });
                }
                if self.remaining == 0 {
                    self.verify_chunk()?;
                    self.state = State::DataEnd { seen_cr: false };
                }
                // Hold this piece back and release the previous one: a chunk's last piece thus
                // waits for its signature, and the body's last piece for `finish`.
                Ok(self.pending.replace(piece))
            }
            State::DataEnd { seen_cr } => {
                let Some(&byte) = self.input.first() else {
                    return Ok(None);
                };
                self.input.advance(1);
                self.state = match (seen_cr, byte) {
                    (false, b'\r') => State::DataEnd { seen_cr: true },
                    (_, b'\n') => State::Header,
                    _ => return Err(ChunkedError::Malformed("chunk data not followed by CRLF")),
                };
                Ok(None)
            }
            State::Trailer => {
                if let Some(line) = self.take_line()? {
                    self.on_trailer_line(&line)?;
                }
                Ok(None)
            }
            State::Done | State::Failed => Ok(None),
        }
    }

    fn on_eof(&mut self) -> Result<(), ChunkedError> {
        match self.state {
            // Tolerate a missing final CRLF after complete trailer lines: the data and every
            // trailer line are whole, and `finish` still checks what must be there.
            State::Trailer if self.line.is_empty() => self.finish(),
            _ => Err(ChunkedError::Truncated),
        }
    }
}

impl<S, E> Stream for AwsChunked<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    type Item = Result<Bytes, ChunkedError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Done => return Poll::Ready(this.pending.take().map(Ok)),
                State::Failed => return Poll::Ready(None),
                _ => {}
            }
            if this.input.is_empty() {
                if this.body_done {
                    if let Err(e) = this.on_eof() {
                        return Poll::Ready(Some(Err(this.fail(e))));
                    }
                    continue;
                }
                match Pin::new(&mut this.body).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => this.body_done = true,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Some(Err(this.fail(ChunkedError::Body(e.into())))));
                    }
                    Poll::Ready(Some(Ok(bytes))) => this.input = bytes,
                }
                continue;
            }
            match this.step() {
                Ok(Some(piece)) => return Poll::Ready(Some(Ok(piece))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::{StreamExt as _, stream};
    use http::{HeaderValue, Method, Uri};
    use time::macros::datetime;

    use super::*;
    use crate::auth::sigv4::{self, signing_key};
    use crate::auth::{RequestView, SecretKey, parse_request, verify};

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn signer(seed: &str) -> ChunkSigner {
        ChunkSigner::new(
            signing_key(SECRET, "20130524", "us-east-1", "s3"),
            "20130524T000000Z".to_owned(),
            "20130524/us-east-1/s3/aws4_request".to_owned(),
            seed.to_owned(),
        )
    }

    fn options(signer: Option<ChunkSigner>, trailer_mode: bool) -> AwsChunkedOptions {
        AwsChunkedOptions {
            signer,
            trailer_mode,
            decoded_content_length: None,
            trailer_checksum: None,
        }
    }

    struct Outcome {
        data: Vec<u8>,
        error: Option<ChunkedError>,
        trailers: Trailers,
        max_piece: usize,
    }

    /// Runs the decoder over `pieces`, collecting output until the end or the first error.
    async fn decode(pieces: Vec<Bytes>, options: AwsChunkedOptions) -> Outcome {
        let body = stream::iter(pieces.into_iter().map(Ok::<_, Infallible>));
        let mut decoder = AwsChunked::new(body, options);
        let trailers = decoder.trailers();
        let (mut data, mut error, mut max_piece) = (Vec::new(), None, 0);
        while let Some(item) = decoder.next().await {
            match item {
                Ok(piece) => {
                    max_piece = max_piece.max(piece.len());
                    data.extend_from_slice(&piece);
                }
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_none() {
            assert!(decoder.next().await.is_none(), "stream must stay ended");
        }
        Outcome {
            data,
            error,
            trailers,
            max_piece,
        }
    }

    fn one(body: &[u8]) -> Vec<Bytes> {
        vec![Bytes::copy_from_slice(body)]
    }

    fn bytewise(body: &[u8]) -> Vec<Bytes> {
        body.iter().map(|b| Bytes::copy_from_slice(&[*b])).collect()
    }

    // -- AWS vector: "Signature Calculation: Transferring Payload in Multiple Chunks"
    //    (sigv4-streaming.html): 64 KiB + 1 KiB of 'a', then the final chunk.

    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const CHUNK1_SIG: &str = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
    const CHUNK2_SIG: &str = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497";
    const CHUNK3_SIG: &str = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9";

    fn aws_streaming_body(sig1: &str) -> Vec<u8> {
        let mut body = format!("10000;chunk-signature={sig1}\r\n").into_bytes();
        body.extend(std::iter::repeat_n(b'a', 65536));
        body.extend_from_slice(format!("\r\n400;chunk-signature={CHUNK2_SIG}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'a', 1024));
        body.extend_from_slice(format!("\r\n0;chunk-signature={CHUNK3_SIG}\r\n\r\n").as_bytes());
        body
    }

    #[test]
    fn aws_example_chunk_signatures() {
        let s = signer(SEED);
        let sts = s.chunk_string_to_sign(SEED, &sigv4::hex_sha256(&[b'a'; 65536]));
        assert_eq!(
            sts,
            format!(
                "AWS4-HMAC-SHA256-PAYLOAD\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n{SEED}\n\
                 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
                 bf718b6f653bebc184e1479f1935b8da974d701b893afcf49e701f3e2f9f9c5a"
            )
        );
        assert_eq!(s.sign(&sts), CHUNK1_SIG);
        let sts = s.chunk_string_to_sign(CHUNK1_SIG, &sigv4::hex_sha256(&[b'a'; 1024]));
        assert_eq!(s.sign(&sts), CHUNK2_SIG);
        let sts = s.chunk_string_to_sign(CHUNK2_SIG, sigv4::EMPTY_SHA256);
        assert_eq!(s.sign(&sts), CHUNK3_SIG);
    }

    /// The whole path: seed request verified by `verify`, payload mode, options from headers,
    /// then the body decoded, as the server will run it.
    #[tokio::test]
    async fn aws_example_streaming_put_end_to_end() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("content-encoding", "aws-chunked"),
            ("content-length", "66824"),
            ("host", "s3.amazonaws.com"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-decoded-content-length", "66560"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            (
                "authorization",
                &format!(
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature={SEED}"
                ),
            ),
        ] {
            h.insert(name, HeaderValue::from_str(value).unwrap());
        }
        let uri: Uri = "/examplebucket/chunkObject.txt".parse().unwrap();
        let creds = parse_request(&uri, &h).unwrap();
        let req = RequestView::new(&Method::PUT, &uri, &h);
        let v = verify(
            &creds,
            &req,
            &SecretKey::new(SECRET.to_owned()),
            "us-east-1",
            datetime!(2013-05-24 00:00:00 UTC),
        )
        .unwrap();
        let Payload::StreamingSigned(ref s) = v.payload else {
            panic!("unexpected payload {:?}", v.payload);
        };
        assert_eq!(s.seed_signature(), SEED);
        let opts = AwsChunkedOptions::from_request(&v.payload, &h)
            .unwrap()
            .unwrap();
        assert_eq!(opts.decoded_content_length, Some(66560));
        assert!(!opts.trailer_mode);

        let body = aws_streaming_body(CHUNK1_SIG);
        assert_eq!(body.len(), 66824, "matches the example's Content-Length");
        let out = decode(one(&body), opts.clone()).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.data, vec![b'a'; 66560]);
        assert_eq!(out.trailers.get(), Some(&[][..]));

        // Fed one byte at a time, the output is the same.
        let out = decode(bytewise(&body), opts).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.data.len(), 66560);
    }

    #[tokio::test]
    async fn input_pieces_pass_through_without_copying_into_chunks() {
        // 8 KiB input pieces over a 64 KiB chunk: no output piece is larger than an input piece,
        // so nothing collects a whole chunk.
        let body = aws_streaming_body(CHUNK1_SIG);
        let pieces: Vec<Bytes> = body.chunks(8192).map(Bytes::copy_from_slice).collect();
        let out = decode(pieces, options(Some(signer(SEED)), false)).await;
        assert!(out.error.is_none());
        assert_eq!(out.data.len(), 66560);
        assert!(out.max_piece <= 8192, "{}", out.max_piece);
    }

    #[tokio::test]
    async fn corrupted_chunk_signature_withholds_the_chunk_end() {
        let bad = CHUNK1_SIG.replace("ad80", "ad81");
        let body = aws_streaming_body(&bad);
        let out = decode(bytewise(&body), options(Some(signer(SEED)), false)).await;
        let Some(ChunkedError::SignatureDoesNotMatch {
            string_to_sign,
            signature_provided,
        }) = out.error
        else {
            panic!("unexpected {:?}", out.error);
        };
        assert_eq!(signature_provided, bad);
        assert!(string_to_sign.starts_with("AWS4-HMAC-SHA256-PAYLOAD\n"));
        // Unverified data may flow, but never the chunk's last piece.
        assert!(out.data.len() < 65536, "{}", out.data.len());
        // A wrong seed breaks the chain at the first chunk too.
        let out = decode(
            one(&aws_streaming_body(CHUNK1_SIG)),
            options(Some(signer(CHUNK2_SIG)), false),
        )
        .await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::SignatureDoesNotMatch { .. })
        ));
        assert!(out.data.is_empty());
    }

    #[tokio::test]
    async fn tampered_chunk_data_fails() {
        let mut body = aws_streaming_body(CHUNK1_SIG);
        let i = body.len() - 200;
        body[i] = b'b';
        let out = decode(one(&body), options(Some(signer(SEED)), false)).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::SignatureDoesNotMatch { .. })
        ));
        // The first chunk verified, but as the last piece so far it was still held back.
        assert!(out.data.len() <= 65536, "{}", out.data.len());
    }

    #[tokio::test]
    async fn missing_chunk_signature_in_signed_mode() {
        let out = decode(
            one(b"3\r\nabc\r\n0\r\n\r\n"),
            options(Some(signer(SEED)), false),
        )
        .await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::Malformed("missing chunk-signature"))
        ));
    }

    #[tokio::test]
    async fn truncated_bodies_are_incomplete() {
        let body = aws_streaming_body(CHUNK1_SIG);
        // Cut inside the first header, the data, a CRLF, the second header and the final header.
        for cut in [
            0,
            5,
            90,
            30_000,
            65_625,
            65_627,
            65_700,
            66_700,
            body.len() - 10,
        ] {
            let out = decode(one(&body[..cut]), options(Some(signer(SEED)), false)).await;
            assert!(
                matches!(out.error, Some(ChunkedError::Truncated)),
                "cut {cut}: {:?}",
                out.error
            );
            assert!(out.data.len() < 66560);
        }
        // Only the final CRLF missing: every byte of data and every line is complete.
        let out = decode(
            one(&body[..body.len() - 2]),
            options(Some(signer(SEED)), false),
        )
        .await;
        assert!(out.error.is_none());
    }

    #[tokio::test]
    async fn decoded_length_must_match() {
        let body = aws_streaming_body(CHUNK1_SIG);
        let mut opts = options(Some(signer(SEED)), false);
        opts.decoded_content_length = Some(66561);
        let out = decode(one(&body), opts.clone()).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::LengthMismatch {
                expected: 66561,
                actual: 66560
            })
        ));
        assert!(out.data.len() < 66560, "the last piece is held back");
        opts.decoded_content_length = Some(1000);
        let out = decode(one(&body), opts).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::LengthMismatch { expected: 1000, .. })
        ));
        assert!(out.data.is_empty());
    }

    // -- AWS vector: "Signature calculations for trailing headers" (sigv4-streaming-trailers).

    const TRAILER_SEED: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";

    fn aws_trailer_body(trailer_sig: &str, crc: &str) -> Vec<u8> {
        let mut body = b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', 65536));
        body.extend_from_slice(b"\r\n400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7\r\n");
        body.extend(std::iter::repeat_n(b'a', 1024));
        body.extend_from_slice(
            format!(
                "\r\n0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992\r\n\
                 x-amz-checksum-crc32c:{crc}\r\nx-amz-trailer-signature:{trailer_sig}\r\n\r\n"
            )
            .as_bytes(),
        );
        body
    }

    const TRAILER_SIG: &str = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435";

    #[tokio::test]
    async fn aws_example_signed_trailer() {
        let s = signer(TRAILER_SEED);
        let sts = s.trailer_string_to_sign(
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
            &sigv4::hex_sha256(b"x-amz-checksum-crc32c:sOO8/Q==\n"),
        );
        assert!(sts.ends_with("1e376db7e1a34a8ef1c4bcee131a2d60a1cb62503747488624e10995f448d774"));
        assert_eq!(s.sign(&sts), TRAILER_SIG);

        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-trailer",
            HeaderValue::from_static("x-amz-checksum-crc32c"),
        );
        h.insert(
            "x-amz-decoded-content-length",
            HeaderValue::from_static("66560"),
        );
        let opts = AwsChunkedOptions::from_request(&Payload::StreamingSignedTrailer(s), &h)
            .unwrap()
            .unwrap();
        assert_eq!(opts.trailer_checksum, Some(ChecksumAlgorithm::Crc32c));
        let body = aws_trailer_body(TRAILER_SIG, "sOO8/Q==");
        for pieces in [one(&body), bytewise(&body)] {
            let out = decode(pieces, opts.clone()).await;
            assert!(out.error.is_none(), "{:?}", out.error);
            assert_eq!(out.data.len(), 66560);
            assert_eq!(
                out.trailers.get(),
                Some(&[("x-amz-checksum-crc32c".to_owned(), "sOO8/Q==".to_owned())][..])
            );
            assert_eq!(
                out.trailers.checksum(),
                Some((ChecksumAlgorithm::Crc32c, "sOO8/Q=="))
            );
        }
    }

    #[tokio::test]
    async fn signed_trailer_failures() {
        let opts = options(Some(signer(TRAILER_SEED)), true);
        let bad = TRAILER_SIG.replace("d81f", "d82f");
        let out = decode(one(&aws_trailer_body(&bad, "sOO8/Q==")), opts.clone()).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::SignatureDoesNotMatch { .. })
        ));
        assert!(out.data.len() < 66560);
        assert!(out.trailers.get().is_none());
        // A changed trailer value breaks the trailer signature.
        let out = decode(
            one(&aws_trailer_body(TRAILER_SIG, "AAAAAA==")),
            opts.clone(),
        )
        .await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::SignatureDoesNotMatch { .. })
        ));
        // No trailer signature at all.
        let body = aws_trailer_body(TRAILER_SIG, "sOO8/Q==");
        let text = String::from_utf8(body).unwrap();
        let cut = text.replace(&format!("x-amz-trailer-signature:{TRAILER_SIG}\r\n"), "");
        let out = decode(one(cut.as_bytes()), opts).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::Malformed("missing x-amz-trailer-signature"))
        ));
    }

    // -- Unsigned trailers, as boto3/botocore, the AWS CLI and the JS SDK v3 send them.

    /// Frames `data` the way botocore's `AwsChunkedWrapper` does.
    fn botocore_body(data: &[u8], chunk: usize, trailer: Option<(&str, &str)>) -> Vec<u8> {
        let mut body = Vec::new();
        for piece in data.chunks(chunk) {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        match trailer {
            Some((name, value)) => {
                body.extend_from_slice(format!("0\r\n{name}:{value}\r\n\r\n").as_bytes());
            }
            None => body.extend_from_slice(b"0\r\n\r\n"),
        }
        body
    }

    fn crc32(data: &[u8]) -> String {
        let mut c = ChecksumAlgorithm::Crc32.checksummer();
        c.update(data);
        c.finish()
    }

    fn unsigned_trailer_options(len: u64) -> AwsChunkedOptions {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-trailer",
            HeaderValue::from_static("x-amz-checksum-crc32"),
        );
        h.insert("x-amz-decoded-content-length", HeaderValue::from(len));
        AwsChunkedOptions::from_request(&Payload::StreamingUnsignedTrailer, &h)
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn unsigned_trailer_split_at_every_boundary() {
        let data: Vec<u8> = (0..40u8).collect();
        let crc = crc32(&data);
        let body = botocore_body(&data, 16, Some(("x-amz-checksum-crc32", &crc)));
        let opts = unsigned_trailer_options(40);
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let pieces = vec![
                    Bytes::copy_from_slice(&body[..i]),
                    Bytes::copy_from_slice(&body[i..j]),
                    Bytes::copy_from_slice(&body[j..]),
                ];
                let out = decode(pieces, opts.clone()).await;
                assert!(out.error.is_none(), "split {i}/{j}: {:?}", out.error);
                assert_eq!(out.data, data, "split {i}/{j}");
                assert_eq!(
                    out.trailers.checksum(),
                    Some((ChecksumAlgorithm::Crc32, crc.as_str()))
                );
            }
        }
    }

    #[tokio::test]
    async fn signed_chunks_split_at_every_boundary() {
        // No vector: frame a small body with signatures from the same signer.
        let s = signer(SEED);
        let mut body = Vec::new();
        let mut prev = SEED.to_owned();
        for piece in [&b"hello "[..], b"world", b""] {
            let sig = s.sign(&s.chunk_string_to_sign(&prev, &sigv4::hex_sha256(piece)));
            body.extend_from_slice(
                format!("{:x};chunk-signature={sig}\r\n", piece.len()).as_bytes(),
            );
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
            prev = sig;
        }
        for i in 0..=body.len() {
            let pieces = vec![
                Bytes::copy_from_slice(&body[..i]),
                Bytes::copy_from_slice(&body[i..]),
            ];
            let out = decode(pieces, options(Some(s.clone()), false)).await;
            assert!(out.error.is_none(), "split {i}: {:?}", out.error);
            assert_eq!(out.data, b"hello world", "split {i}");
        }
        let out = decode(bytewise(&body), options(Some(s), false)).await;
        assert_eq!(out.data, b"hello world");
    }

    #[tokio::test]
    async fn unsigned_bodies_without_trailers_and_empty_objects() {
        let body = botocore_body(b"some data", 4, None);
        let out = decode(bytewise(&body), options(None, false)).await;
        assert!(out.error.is_none());
        assert_eq!(out.data, b"some data");
        // An empty object: just the final chunk and the checksum of nothing.
        let body = botocore_body(b"", 4, Some(("x-amz-checksum-crc32", "AAAAAA==")));
        let out = decode(one(&body), unsigned_trailer_options(0)).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(out.data.is_empty());
        // Chunk extensions other than the signature are ignored; bare LF line ends tolerated.
        let out = decode(one(b"3;ext=1\nabc\n0\n\n"), options(None, false)).await;
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.data, b"abc");
    }

    #[tokio::test]
    async fn trailer_checksum_failures() {
        let data = b"0123456789".to_vec();
        let opts = unsigned_trailer_options(10);
        // Wrong value: BadDigest.
        let body = botocore_body(&data, 4, Some(("x-amz-checksum-crc32", "AAAAAA==")));
        let out = decode(one(&body), opts.clone()).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::Checksum(ChecksumError::Mismatch {
                algorithm: ChecksumAlgorithm::Crc32,
                ..
            }))
        ));
        assert!(out.data.len() < 10, "the last piece is held back");
        // Not base64 of four bytes: InvalidRequest.
        let body = botocore_body(&data, 4, Some(("x-amz-checksum-crc32", "nope")));
        let out = decode(one(&body), opts.clone()).await;
        let err = out.error.unwrap();
        assert_eq!(
            err.to_string(),
            "Value for x-amz-checksum-crc32 header is invalid."
        );
        // Declared but absent.
        let body = botocore_body(&data, 4, None);
        let out = decode(one(&body), opts.clone()).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::MissingTrailer {
                name: "x-amz-checksum-crc32"
            })
        ));
        // Truncated inside the trailer line.
        let body = botocore_body(&data, 4, Some(("x-amz-checksum-crc32", &crc32(&data))));
        let out = decode(one(&body[..body.len() - 6]), opts).await;
        assert!(matches!(out.error, Some(ChunkedError::Truncated)));
    }

    #[tokio::test]
    async fn malformed_framing() {
        let cases: &[(&[u8], &str)] = &[
            (b"zz\r\nab\r\n0\r\n\r\n", "bad chunk size"),
            (b"\r\n", "bad chunk size"),
            (b"+3\r\nabc\r\n0\r\n\r\n", "bad chunk size"),
            (b"11111111111111111\r\n", "bad chunk size"),
            (b"3\r\nabcX\r\n0\r\n\r\n", "chunk data not followed by CRLF"),
            (
                b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
                "trailer in a body without trailers",
            ),
            (b"\xff\r\n", "bad chunk header"),
        ];
        for (body, reason) in cases {
            let out = decode(one(body), options(None, false)).await;
            match out.error {
                Some(ChunkedError::Malformed(r)) => assert_eq!(r, *reason),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let long = vec![b'1'; MAX_LINE + 1];
        let out = decode(one(&long), options(None, false)).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::Malformed("line too long"))
        ));
        let out = decode(one(b"0\r\nnocolon\r\n\r\n"), options(None, true)).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::Malformed("bad trailer"))
        ));
        let mut huge = b"0\r\n".to_vec();
        for i in 0..2000 {
            huge.extend_from_slice(format!("x-amz-meta-{i}:v\r\n").as_bytes());
        }
        let out = decode(one(&huge), options(None, true)).await;
        assert!(matches!(
            out.error,
            Some(ChunkedError::Malformed("trailers too large"))
        ));
        // Empty body.
        let out = decode(vec![], options(None, false)).await;
        assert!(matches!(out.error, Some(ChunkedError::Truncated)));
    }

    #[tokio::test]
    async fn body_errors_are_passed_on() {
        let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"5\r\nhel")),
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
        ];
        let mut decoder = AwsChunked::new(stream::iter(pieces), options(None, false));
        let first = decoder.next().await.unwrap();
        let err = match first {
            Err(e) => e,
            Ok(_) => decoder.next().await.unwrap().unwrap_err(),
        };
        assert!(matches!(err, ChunkedError::Body(_)));
        assert!(std::error::Error::source(&err).is_some());
        assert!(decoder.next().await.is_none());
    }

    #[test]
    fn options_from_request_headers() {
        fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.insert(*n, HeaderValue::from_str(v).unwrap());
            }
            m
        }
        assert!(
            AwsChunkedOptions::from_request(&Payload::Unsigned, &HeaderMap::new())
                .unwrap()
                .is_none()
        );
        let o =
            AwsChunkedOptions::from_request(&Payload::StreamingUnsignedTrailer, &HeaderMap::new())
                .unwrap()
                .unwrap();
        assert!(o.trailer_mode && o.signer.is_none() && o.trailer_checksum.is_none());
        let err = AwsChunkedOptions::from_request(
            &Payload::StreamingUnsignedTrailer,
            &h(&[("x-amz-trailer", "x-amz-meta-foo")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "The value specified in the x-amz-trailer header is not supported"
        );
        assert!(
            AwsChunkedOptions::from_request(
                &Payload::StreamingUnsignedTrailer,
                &h(&[("x-amz-trailer", "x-amz-checksum-crc32,x-amz-checksum-sha1")]),
            )
            .is_err()
        );
        assert!(matches!(
            AwsChunkedOptions::from_request(
                &Payload::StreamingUnsignedTrailer,
                &h(&[("x-amz-decoded-content-length", "-1")]),
            ),
            Err(ChunkedError::InvalidDecodedLength { .. })
        ));
        // x-amz-trailer is irrelevant without trailer mode.
        let o = AwsChunkedOptions::from_request(
            &Payload::StreamingSigned(signer(SEED)),
            &h(&[("x-amz-trailer", "whatever")]),
        )
        .unwrap()
        .unwrap();
        assert!(!o.trailer_mode && o.trailer_checksum.is_none());
    }
}
