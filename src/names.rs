//! Bucket names and object keys: the one place they are validated.
//!
//! Bucket rules: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>.
//! Keys are any UTF-8 up to 1024 bytes; they are data stored in SQLite, never filesystem paths, so
//! `../`, `//`, spaces and emoji are ordinary keys.

use crate::error::{S3Error, S3ErrorCode};

pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a bucket name against S3's rules (3-63 characters of `a-z 0-9 . -`, starting and ending
/// with a letter or digit, no `..`, not an IP address, none of the reserved prefixes/suffixes).
pub fn validate_bucket(name: &str) -> Result<(), S3Error> {
    let bytes = name.as_bytes();
    let ok = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && !name.contains(".-")
        && !name.contains("-.")
        && name.parse::<std::net::Ipv4Addr>().is_err()
        && !name.starts_with("xn--")
        && !name.starts_with("sthree-")
        && !name.ends_with("-s3alias")
        && !name.ends_with("--ol-s3");
    if ok {
        Ok(())
    } else {
        Err(S3Error::code(S3ErrorCode::InvalidBucketName).with("BucketName", name))
    }
}

pub fn validate_key(key: &str) -> Result<(), S3Error> {
    if key.is_empty() {
        return Err(S3Error::invalid_argument(
            "A key must be specified",
            "key",
            "",
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3Error::code(S3ErrorCode::KeyTooLongError)
            .with("MaxSizeAllowed", MAX_KEY_BYTES.to_string())
            .with("Size", key.len().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-bucket.example", "a1b2c3", &"a".repeat(63)] {
            assert!(validate_bucket(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "-",
            "Abc",
            "abc-",
            ".abc",
            "a..b",
            "192.168.1.1",
            "a_b",
            "xn--abc",
            &"a".repeat(64),
            "a.-b",
        ] {
            let err = validate_bucket(bad).unwrap_err();
            assert_eq!(err.s3_code(), S3ErrorCode::InvalidBucketName, "{bad}");
        }
    }

    #[test]
    fn keys_are_data_up_to_1024_bytes() {
        for ok in [
            "../../etc/passwd",
            "a//b",
            "%2F",
            "with space",
            "emoji 🎉",
            &"k".repeat(1024),
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            validate_key(&"k".repeat(1025)).unwrap_err().s3_code(),
            S3ErrorCode::KeyTooLongError
        );
    }
}
