//! Secret access keys and constant-time comparison of signatures.
//!
//! Owns [`SecretKey`], the only type that holds a secret access key: its `Debug` never prints
//! the secret, and it has no `Display`. Also owns [`ct_eq_str`], which every signature check in
//! `crate::auth` uses so that a forger learns nothing from response timing.
//!
//! Spec: <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html> (keys are
//! shared secrets; the server recomputes the client's signature and compares).

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret access key. Cheap to clone; never printed.
#[derive(Clone)]
pub struct SecretKey(Box<str>);

impl SecretKey {
    pub fn new(secret: String) -> Self {
        Self(secret.into_boxed_str())
    }

    /// The secret itself, for HMAC computation only. Never log or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Compares two strings (signatures) in time that depends only on their lengths.
///
/// Signature lengths are public (fixed by the algorithm), so leaking them is harmless.
pub fn ct_eq_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_print_the_secret() {
        let key = SecretKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned());
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
        assert_eq!(key.expose(), "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
    }

    #[test]
    fn ct_eq_str_compares_contents_and_lengths() {
        assert!(ct_eq_str("abc", "abc"));
        assert!(!ct_eq_str("abc", "abd"));
        assert!(!ct_eq_str("abc", "abcd"));
        assert!(ct_eq_str("", ""));
    }
}
