//! Key records as the reference CMS stores and shows them.

use crate::model::{expiry_rules, KeySpec};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A key's record: its spec plus what the service decided. Never holds the raw value; the hash
/// is stored beside it, not in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: String,
    pub spec: KeySpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Timestamp>,
    /// After a regenerate with grace: when the previous value stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<Timestamp>,
    /// When each earlier value still in its grace stops working, soonest first: a regenerate
    /// with grace keeps the graces earlier regenerates promised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_values_valid_until: Vec<Timestamp>,
}

impl KeyRecord {
    pub fn expires_at(&self) -> Timestamp {
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
        insert_times(
            &mut out,
            &[
                ("expiresAt", Some(self.expires_at())),
                ("createdAt", Some(self.created_at)),
                ("updatedAt", Some(self.updated_at)),
                ("rotatedAt", self.rotated_at),
                ("previousValidUntil", self.previous_valid_until),
            ],
        );
        if !self.earlier_values_valid_until.is_empty() {
            let times = self
                .earlier_values_valid_until
                .iter()
                .map(|t| Value::String(crate::model::rfc3339(*t)))
                .collect();
            out.insert("earlierValuesValidUntil".into(), Value::Array(times));
        }
        Value::Object(out)
    }
}

/// Inserts each time that is there, as RFC 3339.
pub(crate) fn insert_times(out: &mut Map<String, Value>, times: &[(&str, Option<Timestamp>)]) {
    for (field, t) in times {
        if let Some(t) = t {
            out.insert((*field).into(), Value::String(crate::model::rfc3339(*t)));
        }
    }
}
