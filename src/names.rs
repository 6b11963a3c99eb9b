//! Bucket names and object keys: the one place they are validated.
//!
//! Bucket rules: <https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>.
//! Keys are any UTF-8 up to 1024 bytes; they are data stored in SQLite, never filesystem paths, so
//! `../`, `//`, spaces and emoji are ordinary keys.

pub const MAX_KEY_BYTES: usize = 1024;

/// A name S3 refuses (`error.rs` gives each its S3 answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The bucket name breaks S3's rules.
    InvalidBucketName(String),
    /// An empty key.
    EmptyKey,
    /// A key longer than [`MAX_KEY_BYTES`]: its length.
    KeyTooLong(usize),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::InvalidBucketName(_) => f.write_str("The specified bucket is not valid."),
            NameError::EmptyKey => f.write_str("A key must be specified"),
            NameError::KeyTooLong(_) => f.write_str("Your key is too long"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a bucket name against S3's rules (3-63 characters of `a-z 0-9 . -`, starting and ending
/// with a letter or digit, no `..`, not an IP address, none of the reserved prefixes/suffixes).
pub fn validate_bucket(name: &str) -> Result<(), NameError> {
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
        Err(NameError::InvalidBucketName(name.to_owned()))
    }
}

pub fn validate_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(NameError::KeyTooLong(key.len()));
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
            assert_eq!(err, NameError::InvalidBucketName(bad.to_owned()), "{bad}");
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
            validate_key(&"k".repeat(1025)).unwrap_err(),
            NameError::KeyTooLong(1025)
        );
    }
}
