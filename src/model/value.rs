//! A key value on its way from the CMS to a Secret. Debug never shows it.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// Held as a `SecretString`: zeroed when dropped, never printed.
#[derive(Clone)]
pub struct KeyValue(SecretString);

impl KeyValue {
    pub fn new(v: impl Into<String>) -> KeyValue {
        KeyValue(SecretString::from(v.into()))
    }

    /// The value itself: only for writing it into a Secret.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short, public hash of the value: shows which value is in use, reveals nothing.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.expose())
    }
}

impl PartialEq for KeyValue {
    fn eq(&self, other: &KeyValue) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.expose().as_bytes(), other.expose().as_bytes()).into()
    }
}

impl Eq for KeyValue {}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyValue({})", self.fingerprint())
    }
}

pub fn fingerprint(value: &str) -> String {
    format!("sha256:{}", super::short_hash(value.as_bytes(), 8))
}
