//! A key value on its way from the CMS to a Secret. Debug never shows it.

use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue(String);

impl KeyValue {
    pub fn new(v: impl Into<String>) -> KeyValue {
        KeyValue(v.into())
    }

    /// The value itself: only for writing it into a Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short, public hash of the value: shows which value is in use, reveals nothing.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyValue({})", self.fingerprint())
    }
}

pub fn fingerprint(value: &str) -> String {
    let d = Sha256::digest(value.as_bytes());
    format!(
        "sha256:{}",
        d[..8]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}
