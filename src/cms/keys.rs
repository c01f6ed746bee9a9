//! Key records as the reference CMS stores and shows them.

use crate::model::{expiry_rules, KeySpec};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A key's record: its spec plus what the service decided. Never holds the raw value; the hash
/// is stored beside it, not in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub spec: KeySpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<DateTime<Utc>>,
    /// After a regenerate with grace: when the previous value stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<DateTime<Utc>>,
}

impl KeyRecord {
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.spec
            .expires_at
            .unwrap_or(self.created_at + expiry_rules(self.spec.kind).default)
    }

    /// The JSON shown by the management API: the spec's fields flattened beside the record's.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), Value::String(self.id.clone()));
        if let Ok(Value::Object(spec)) = serde_json::to_value(&self.spec) {
            out.extend(spec);
        }
        out.insert(
            "expiresAt".into(),
            Value::String(self.expires_at().to_rfc3339()),
        );
        out.insert(
            "createdAt".into(),
            Value::String(self.created_at.to_rfc3339()),
        );
        out.insert(
            "updatedAt".into(),
            Value::String(self.updated_at.to_rfc3339()),
        );
        if let Some(r) = self.rotated_at {
            out.insert("rotatedAt".into(), Value::String(r.to_rfc3339()));
        }
        if let Some(p) = self.previous_valid_until {
            out.insert("previousValidUntil".into(), Value::String(p.to_rfc3339()));
        }
        Value::Object(out)
    }
}
