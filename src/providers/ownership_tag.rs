//! keyward's ownership tag, for CMSes whose keys have no labels (Strapi, Directus): the last
//! line of a key's description, `[keyward policy=ns.name key=k uid=... type=public ...]`. Each
//! provider adds its own fields after these.

use crate::model::desired::{LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID};
use crate::model::{KeySpec, KeyType};

/// What starts the tag (and marks a key as keyward's in a listing).
pub const TAG_OPEN: &str = "[keyward ";

/// `policy=… key=… uid=…` from the key's labels, and `type=public` for a public key.
pub fn fields(spec: &KeySpec) -> Vec<String> {
    let mut parts = Vec::new();
    for (name, label) in [
        ("policy", LABEL_POLICY),
        ("key", LABEL_KEY),
        ("uid", LABEL_POLICY_UID),
    ] {
        if let Some(v) = spec.labels.get(label) {
            parts.push(format!("{name}={v}"));
        }
    }
    if spec.key_type == KeyType::Public {
        parts.push("type=public".into());
    }
    parts
}
