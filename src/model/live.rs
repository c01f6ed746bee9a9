//! The live state: keys and settings as a CMS holds them now, whichever CMS it is.

pub use crate::model::settings::OwnedSettings;
use crate::model::{KeySpec, KeyValue};
use jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

/// A key as the CMS holds it now.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveKey {
    pub id: String,
    /// Normalized settings; `expires_at` is the live expiry.
    pub spec: KeySpec,
    pub created_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
}

impl LiveKey {
    /// Which generation of the value is current: changes on every regenerate.
    pub fn version(&self) -> String {
        self.rotated_at
            .unwrap_or(self.created_at)
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.spec.expires_at
    }
}

/// A key with the value the CMS showed once.
#[derive(Clone, Debug)]
pub struct IssuedKey {
    pub key: LiveKey,
    pub value: KeyValue,
}

/// The shared settings policies manage (CORS origins, public endpoints), as the CMS holds them:
/// one entry per owner, so that writers that cannot see each other never overwrite each other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSettings {
    /// The APIs the CMS has, of those asked about.
    pub apis: BTreeSet<String>,
    /// Every owner's entry (see [`crate::model::desired::PolicyId::settings_owner`]).
    pub owners: BTreeMap<String, OwnedSettings>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_version_is_the_time_to_the_microsecond() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut k = LiveKey {
            id: "id".into(),
            spec: KeySpec::default(),
            created_at: at("2026-12-01T15:18:14.493967635Z"),
            rotated_at: None,
        };
        // What keyward 0.1 wrote into the Secrets' annotations: unchanged, so no rewrite.
        assert_eq!(k.version(), "2026-12-01T15:18:14.493967Z");
        k.rotated_at = Some(at("2026-12-02T00:00:00Z"));
        assert_eq!(k.version(), "2026-12-02T00:00:00.000000Z");
    }
}
