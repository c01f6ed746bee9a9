//! keyward's ownership tag in a Strapi token: Strapi tokens have no labels, so the tag is the
//! last line of the description, `[keyward policy=ns.name key=k uid=... type=public]`.

use crate::model::{KeySpec, KeyType};
use crate::providers::ownership_tag;
use std::collections::BTreeMap;

/// The description Strapi stores: the key's own, then keyward's ownership tag on its last line.
pub fn compose_description(spec: &KeySpec) -> String {
    ownership_tag::compose_description(spec, None)
}

/// Splits a stored description into the key's own part, its labels and its type.
pub fn parse_description(stored: &str) -> (String, BTreeMap<String, String>, KeyType) {
    match ownership_tag::parse_description(stored) {
        (own, Some(tag)) => (own, tag.labels, tag.key_type),
        (own, None) => (own, BTreeMap::new(), KeyType::Service),
    }
}
