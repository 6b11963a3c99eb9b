//! Additional checksums (`x-amz-checksum-*`): CRC32, CRC32C, CRC64NVME, SHA-1 and SHA-256.
//!
//! Owns the algorithm names as S3 spells them, the incremental [`Checksummer`] and the syntax
//! check of a client-supplied value. The values travel as base64 of the big-endian digest, in a
//! header (`x-amz-checksum-crc32: ...`) or in an aws-chunked trailer (see `super::chunked`).
//! Comparing a stored object against a value is the caller's job, with [`ChecksumError`].
//!
//! Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

/// One of the additional checksum algorithms S3 supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    /// Parses a header or trailer name such as `x-amz-checksum-crc32` (any case).
    pub fn from_header_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algo| algo.header_name().eq_ignore_ascii_case(name.trim()))
    }

    /// Parses an algorithm name such as `CRC32` (any case), as sent in
    /// `x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algo| algo.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The lowercase header (and trailer) name, e.g. `x-amz-checksum-crc64nvme`.
    pub fn header_name(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name S3 uses in XML and in `x-amz-checksum-algorithm`, e.g. `CRC64NVME`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// Digest length in bytes (before base64).
    pub fn digest_len(self) -> usize {
        match self {
            Self::Crc32 | Self::Crc32c => 4,
            Self::Crc64Nvme => 8,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    pub fn checksummer(self) -> Checksummer {
        Checksummer::new(self)
    }
}

/// `x-amz-checksum-type`: how a multipart object's checksum is made from its parts' checksums.
/// COMPOSITE is the algorithm over the concatenated part checksums (value `<base64>-<parts>`);
/// FULL_OBJECT is the checksum of the whole object's bytes, which for the CRCs follows from the
/// parts' CRCs and sizes alone (see [`combine_crcs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    Composite,
    FullObject,
}

impl ChecksumType {
    /// Parses `COMPOSITE` or `FULL_OBJECT` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            n if n.eq_ignore_ascii_case("COMPOSITE") => Some(Self::Composite),
            n if n.eq_ignore_ascii_case("FULL_OBJECT") => Some(Self::FullObject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Composite => "COMPOSITE",
            Self::FullObject => "FULL_OBJECT",
        }
    }

    /// The type of a stored object checksum: composite values end in `-<parts>` (base64 has no
    /// `-`), anything else is of the whole object.
    pub fn of_value(value: &str) -> Self {
        match value.contains('-') {
            true => Self::Composite,
            false => Self::FullObject,
        }
    }
}

impl ChecksumAlgorithm {
    /// The type a multipart upload gets when CreateMultipartUpload names none: CRC64NVME is
    /// only ever full-object, the others composite.
    pub fn default_type(self) -> ChecksumType {
        match self {
            Self::Crc64Nvme => ChecksumType::FullObject,
            _ => ChecksumType::Composite,
        }
    }

    /// Whether S3 allows this type with this algorithm: CRC32 and CRC32C take both, CRC64NVME
    /// only FULL_OBJECT, SHA-1 and SHA-256 only COMPOSITE (a hash cannot be combined).
    pub fn allows(self, kind: ChecksumType) -> bool {
        match self {
            Self::Crc32 | Self::Crc32c => true,
            Self::Crc64Nvme => kind == ChecksumType::FullObject,
            Self::Sha1 | Self::Sha256 => kind == ChecksumType::Composite,
        }
    }
}

/// The full-object CRC of bytes made of consecutive pieces, from each piece's CRC (base64, as
/// stored) and length, with the CRC combine operation: no byte is read again. `None` for the
/// hashes, for no piece, or for a value that is not base64 of the algorithm's digest.
///
/// Spec: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html#Full-object-checksums>
pub fn combine_crcs(algo: ChecksumAlgorithm, pieces: &[(&str, u64)]) -> Option<String> {
    use crc_fast::CrcAlgorithm;
    let crc = match algo {
        ChecksumAlgorithm::Crc32 => CrcAlgorithm::Crc32IsoHdlc,
        ChecksumAlgorithm::Crc32c => CrcAlgorithm::Crc32Iscsi,
        ChecksumAlgorithm::Crc64Nvme => CrcAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => return None,
    };
    let decode = |value: &str| -> Option<u64> {
        let bytes = BASE64.decode(value.trim()).ok()?;
        (bytes.len() == algo.digest_len())
            .then(|| bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let (first, rest) = pieces.split_first()?;
    let mut whole = decode(first.0)?;
    for (value, len) in rest {
        whole = crc_fast::checksum_combine(crc, whole, decode(value)?, *len);
    }
    let bytes = whole.to_be_bytes();
    Some(BASE64.encode(&bytes[8 - algo.digest_len()..]))
}

/// Errors about checksum values. No HTTP in here: `error.rs` maps each variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// 400 InvalidRequest: the value is not base64 of a digest of the right length.
    #[error("Value for {header_name} header is invalid.")]
    InvalidValue { header_name: &'static str },
    /// 400 BadDigest: the value is well formed but the data hashes to something else.
    #[error("The {} you specified did not match the calculated checksum.", algorithm.as_str())]
    Mismatch {
        algorithm: ChecksumAlgorithm,
        expected: String,
        computed: String,
    },
}

/// Checks that `value` is base64 (standard alphabet, padded) of a digest of `algo`'s length.
pub fn validate_value(algo: ChecksumAlgorithm, value: &str) -> Result<(), ChecksumError> {
    match BASE64.decode(value.trim()) {
        Ok(bytes) if bytes.len() == algo.digest_len() => Ok(()),
        _ => Err(ChecksumError::InvalidValue {
            header_name: algo.header_name(),
        }),
    }
}

/// Compares a client-supplied value against the one computed over the data.
pub fn verify_value(
    algo: ChecksumAlgorithm,
    expected: &str,
    computed: &str,
) -> Result<(), ChecksumError> {
    validate_value(algo, expected)?;
    if expected.trim() == computed {
        Ok(())
    } else {
        Err(ChecksumError::Mismatch {
            algorithm: algo,
            expected: expected.trim().to_owned(),
            computed: computed.to_owned(),
        })
    }
}

/// Incremental checksum over a byte stream; `finish` gives the value as S3 returns it.
#[derive(Clone)]
pub enum Checksummer {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl std::fmt::Debug for Checksummer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checksummer({})", self.algorithm().as_str())
    }
}

impl Checksummer {
    pub fn new(algo: ChecksumAlgorithm) -> Self {
        match algo {
            ChecksumAlgorithm::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => Self::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => Self::Crc64Nvme(crc64fast_nvme::Digest::new()),
            ChecksumAlgorithm::Sha1 => Self::Sha1(Sha1::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(Sha256::new()),
        }
    }

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Self::Crc32(_) => ChecksumAlgorithm::Crc32,
            Self::Crc32c(_) => ChecksumAlgorithm::Crc32c,
            Self::Crc64Nvme(_) => ChecksumAlgorithm::Crc64Nvme,
            Self::Sha1(_) => ChecksumAlgorithm::Sha1,
            Self::Sha256(_) => ChecksumAlgorithm::Sha256,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
            Self::Crc64Nvme(d) => d.write(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// Base64 of the big-endian digest, e.g. `yZRlqg==` for CRC32("hello world").
    pub fn finish(self) -> String {
        match self {
            Self::Crc32(h) => BASE64.encode(h.finalize().to_be_bytes()),
            Self::Crc32c(crc) => BASE64.encode(crc.to_be_bytes()),
            Self::Crc64Nvme(d) => BASE64.encode(d.sum64().to_be_bytes()),
            Self::Sha1(h) => BASE64.encode(h.finalize()),
            Self::Sha256(h) => BASE64.encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(algo: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut c = algo.checksummer();
        // Feed in two pieces to exercise the incremental path.
        let (a, b) = data.split_at(data.len() / 2);
        c.update(a);
        c.update(b);
        c.finish()
    }

    fn b64_of_u32(v: u32) -> String {
        BASE64.encode(v.to_be_bytes())
    }

    #[test]
    fn crc32_check_value() {
        // CRC-32/ISO-HDLC check value for "123456789".
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32, b"123456789"),
            b64_of_u32(0xCBF4_3926)
        );
    }

    #[test]
    fn crc32c_check_value() {
        // CRC-32C/Castagnoli check value for "123456789".
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32c, b"123456789"),
            b64_of_u32(0xE306_9283)
        );
    }

    #[test]
    fn crc32c_of_aws_trailer_example() {
        // AWS "sigv4-streaming-trailers" example: 66560 bytes of 'a' carry
        // `x-amz-checksum-crc32c:sOO8/Q==`.
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc32c, &vec![b'a'; 66560]),
            "sOO8/Q=="
        );
    }

    #[test]
    fn crc64nvme_check_value() {
        // CRC-64/NVME check value for "123456789".
        assert_eq!(
            checksum(ChecksumAlgorithm::Crc64Nvme, b"123456789"),
            BASE64.encode(0xAE8B_1486_0A79_9888_u64.to_be_bytes())
        );
    }

    #[test]
    fn sha1_and_sha256_of_abc() {
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha1, b"abc"),
            BASE64.encode(hex::decode("a9993e364706816aba3e25717850c26c9cd0d89d").unwrap())
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha256, b"abc"),
            BASE64.encode(
                hex::decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                    .unwrap()
            )
        );
    }

    #[test]
    fn empty_input_values() {
        assert_eq!(checksum(ChecksumAlgorithm::Crc32, b""), "AAAAAA==");
        assert_eq!(checksum(ChecksumAlgorithm::Crc32c, b""), "AAAAAA==");
        assert_eq!(checksum(ChecksumAlgorithm::Crc64Nvme, b""), "AAAAAAAAAAA=");
    }

    #[test]
    fn names_round_trip() {
        for algo in ChecksumAlgorithm::ALL {
            assert_eq!(
                ChecksumAlgorithm::from_header_name(algo.header_name()),
                Some(algo)
            );
            assert_eq!(ChecksumAlgorithm::from_name(algo.as_str()), Some(algo));
            assert_eq!(algo.checksummer().algorithm(), algo);
        }
        assert_eq!(
            ChecksumAlgorithm::from_header_name("X-Amz-Checksum-CRC32"),
            Some(ChecksumAlgorithm::Crc32)
        );
        assert_eq!(
            ChecksumAlgorithm::from_header_name("x-amz-checksum-md5"),
            None
        );
        assert_eq!(
            ChecksumAlgorithm::from_name("crc64nvme"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
    }

    #[test]
    fn combined_crcs_equal_the_crc_of_the_whole() {
        let data = b"The quick brown fox jumps over the lazy dog, then again and again.";
        for algo in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            let (a, rest) = data.split_at(7);
            let (b, c) = rest.split_at(30);
            let values: Vec<String> = [a, b, c].iter().map(|p| checksum(algo, p)).collect();
            let pieces: Vec<(&str, u64)> = values
                .iter()
                .zip([a, b, c])
                .map(|(v, p)| (v.as_str(), p.len() as u64))
                .collect();
            assert_eq!(combine_crcs(algo, &pieces), Some(checksum(algo, data)));
            assert_eq!(combine_crcs(algo, &pieces[..1]), Some(values[0].clone()));
        }
        assert_eq!(combine_crcs(ChecksumAlgorithm::Sha256, &[("x", 1)]), None);
        assert_eq!(
            combine_crcs(ChecksumAlgorithm::Crc32, &[("AAAAAAAAAAA=", 1)]),
            None
        );
    }

    #[test]
    fn validate_value_checks_base64_and_length() {
        assert_eq!(validate_value(ChecksumAlgorithm::Crc32, "sOO8/Q=="), Ok(()));
        assert_eq!(
            validate_value(ChecksumAlgorithm::Crc64Nvme, "AAAAAAAAAAA="),
            Ok(())
        );
        for bad in ["", "not base64!", "sOO8/Q", "AAAAAAAAAAA="] {
            let err = validate_value(ChecksumAlgorithm::Crc32, bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                "Value for x-amz-checksum-crc32 header is invalid."
            );
        }
        assert!(validate_value(ChecksumAlgorithm::Sha256, "sOO8/Q==").is_err());
    }

    #[test]
    fn verify_value_reports_mismatch() {
        let computed = checksum(ChecksumAlgorithm::Crc32c, &vec![b'a'; 66560]);
        assert_eq!(
            verify_value(ChecksumAlgorithm::Crc32c, "sOO8/Q==", &computed),
            Ok(())
        );
        let err = verify_value(ChecksumAlgorithm::Crc32c, "AAAAAA==", &computed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The CRC32C you specified did not match the calculated checksum."
        );
    }
}
