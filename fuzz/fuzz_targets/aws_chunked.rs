//! The aws-chunked decoder (`auth::chunked::AwsChunked`): chunk signatures, trailers, trailer
//! signature, checksum and decoded length, with the body cut into arbitrary pieces.
//!
//! Two kinds of input, chosen by the first byte:
//! - raw (even): `[mode][split seed][body]`, decoded in each of the three streaming modes
//!   (signed, signed + trailer, unsigned + trailer), with the corpus' chunk signer. Real bodies
//!   from the SDKs are in the corpus this way.
//! - structured (odd): an [`Encoded`] body built correctly by this target and then changed in at
//!   most one byte. Unchanged, it must decode to exactly its data; changed in a signature, it
//!   must not decode at all.
#![no_main]

use arbitrary::Arbitrary;
use futures_util::StreamExt as _;
use libfuzzer_sys::fuzz_target;
use postgate::auth::checksum::ChecksumAlgorithm;
use postgate::auth::chunked::{AwsChunked, AwsChunkedOptions};
use postgate::auth::{ChunkSigner, sigv4};
use postgate_fuzz::{run, split};

#[derive(Arbitrary, Debug)]
struct Encoded {
    chunks: Vec<Vec<u8>>,
    signed: bool,
    trailer: Option<Trailer>,
    /// Extra trailer lines (the checksum trailer, if any, is first).
    extra_trailers: Vec<(String, String)>,
    /// Announce `x-amz-decoded-content-length`.
    declare_length: bool,
    /// Flip one byte of a chunk signature (index into the signatures).
    corrupt_signature: Option<u8>,
    split_seed: u64,
}

#[derive(Arbitrary, Debug)]
struct Trailer {
    algorithm: u8,
}

const ALGORITHMS: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

fn signer() -> ChunkSigner {
    let date = "20260528";
    let scope = sigv4::scope(date, postgate_fuzz::REGION, "s3");
    let key = sigv4::signing_key(postgate_fuzz::SECRET_KEY, date, postgate_fuzz::REGION, "s3");
    ChunkSigner::new(key, format!("{date}T000000Z"), scope, "0".repeat(64))
}

/// Decodes `pieces`; the decoded bytes, or `None` when the decoder refused the body.
fn decode(pieces: Vec<bytes::Bytes>, options: AwsChunkedOptions) -> Option<Vec<u8>> {
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let mut decoder = AwsChunked::new(body, options);
    run(async {
        let mut out = Vec::new();
        while let Some(piece) = decoder.next().await {
            out.extend_from_slice(&piece.ok()?);
        }
        Some(out)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Some((&seed, body)) = rest.split_first() else {
            return;
        };
        for (signer, trailer_mode) in [
            (Some(signer()), false),
            (Some(signer()), true),
            (None, true),
        ] {
            let options = AwsChunkedOptions {
                signer,
                trailer_mode,
                decoded_content_length: None,
                trailer_checksum: (mode & 2 == 2).then_some(ChecksumAlgorithm::Crc32),
            };
            let _ = decode(split(body, u64::from(seed), 64), options);
        }
        return;
    }
    let Ok(input) = Encoded::arbitrary(&mut arbitrary::Unstructured::new(rest)) else {
        return;
    };
    let (body, options, corrupted) = encode(&input);
    let expected: Vec<u8> = input.chunks.iter().flatten().copied().collect();
    let got = decode(split(&body, input.split_seed, 257), options);
    if corrupted {
        assert!(
            got.is_none(),
            "a body with a wrong chunk signature was accepted"
        );
    } else if trailers_are_plain(&input) {
        assert_eq!(
            got.as_deref(),
            Some(&expected[..]),
            "a valid body was refused or changed"
        );
    }
});

/// Trailer lines that the grammar keeps as written (names and values without `:`, CR, LF or
/// surrounding blanks, and no second checksum or signature line).
fn trailers_are_plain(input: &Encoded) -> bool {
    input.extra_trailers.iter().all(|(n, v)| {
        let n_ok = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !n.to_ascii_lowercase().starts_with("x-amz-");
        let v_ok = v.bytes().all(|b| b.is_ascii_alphanumeric());
        n_ok && v_ok
    }) && input.extra_trailers.len() < 64
}

fn encode(input: &Encoded) -> (Vec<u8>, AwsChunkedOptions, bool) {
    let signer = input.signed.then(signer);
    let trailer_mode = input.trailer.is_some() || !input.extra_trailers.is_empty() || !input.signed;
    let algorithm = input
        .trailer
        .as_ref()
        .map(|t| ALGORITHMS[usize::from(t.algorithm) % ALGORITHMS.len()]);
    let mut out = Vec::new();
    let mut prev = signer.as_ref().map(|s| s.seed_signature().to_owned());
    let mut corrupted = false;
    let empty = Vec::new();
    for (i, chunk) in input
        .chunks
        .iter()
        .filter(|c| !c.is_empty())
        .chain(std::iter::once(&empty))
        .enumerate()
    {
        out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if let (Some(s), Some(p)) = (&signer, &mut prev) {
            let mut sig = s.sign(&s.chunk_string_to_sign(p, &sigv4::hex_sha256(chunk)));
            *p = sig.clone();
            if input.corrupt_signature.map(usize::from) == Some(i) {
                let last = if sig.ends_with('0') { "1" } else { "0" };
                sig.replace_range(sig.len() - 1.., last);
                corrupted = true;
            }
            out.extend_from_slice(format!(";chunk-signature={sig}").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.truncate(out.len() - 2); // the final chunk has no data line
    if trailer_mode {
        let mut trailer_bytes = Vec::new();
        let mut lines = Vec::new();
        if let Some(algo) = algorithm {
            let mut c = algo.checksummer();
            for chunk in &input.chunks {
                c.update(chunk);
            }
            lines.push((algo.header_name().to_owned(), c.finish()));
        }
        lines.extend(input.extra_trailers.iter().cloned());
        for (n, v) in &lines {
            out.extend_from_slice(format!("{n}:{v}\r\n").as_bytes());
            trailer_bytes
                .extend_from_slice(format!("{}:{}\n", n.to_ascii_lowercase(), v).as_bytes());
        }
        if let (Some(s), Some(p)) = (&signer, &prev) {
            let sig = s.sign(&s.trailer_string_to_sign(p, &sigv4::hex_sha256(&trailer_bytes)));
            out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    let decoded: u64 = input.chunks.iter().map(|c| c.len() as u64).sum();
    let options = AwsChunkedOptions {
        signer,
        trailer_mode,
        decoded_content_length: input.declare_length.then_some(decoded),
        trailer_checksum: algorithm,
    };
    (out, options, corrupted)
}
