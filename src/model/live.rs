//! The live state: keys and settings as a CMS holds them now, whichever CMS it is.

use crate::model::{ContentOp, KeySpec, KeyValue};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// A key as the CMS holds it now.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveKey {
    pub id: String,
    /// Normalized settings; `expires_at` is the live expiry.
    pub spec: KeySpec,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
}

impl LiveKey {
    /// Which generation of the value is current: changes on every regenerate.
    pub fn version(&self) -> String {
        self.rotated_at
            .unwrap_or(self.created_at)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.spec.expires_at
    }
}

/// A key with the value the CMS showed once.
#[derive(Clone, Debug)]
pub struct IssuedKey {
    pub key: LiveKey,
    pub value: KeyValue,
}

/// Per-service settings that policies manage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveSettings {
    pub cors: BTreeSet<String>,
    pub public: BTreeMap<String, BTreeSet<ContentOp>>,
}
