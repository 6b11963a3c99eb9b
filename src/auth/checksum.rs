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
