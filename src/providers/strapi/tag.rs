//! keyward's ownership tag in a Strapi token: Strapi tokens have no labels, so the tag is the
//! last line of the description, `[keyward policy=ns.name key=k uid=... type=public]`.

use crate::model::desired::{LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID};
use crate::model::{KeySpec, KeyType};
use std::collections::BTreeMap;

use crate::providers::ownership_tag::TAG_OPEN;

/// The description Strapi stores: the key's own, then keyward's ownership tag on its last line.
pub fn compose_description(spec: &KeySpec) -> String {
    let mut tag = String::from(TAG_OPEN);
    let parts = crate::providers::ownership_tag::fields(spec);
    tag.push_str(&parts.join(" "));
    tag.push(']');
    let own = spec.description.trim();
    if own.is_empty() {
        tag
    } else {
        format!("{own}\n\n{tag}")
    }
}

/// Splits a stored description into the key's own part, its labels and its type.
pub fn parse_description(stored: &str) -> (String, BTreeMap<String, String>, KeyType) {
    let mut labels = BTreeMap::new();
    let mut key_type = KeyType::Service;
    let (own, last) = match stored.rsplit_once('\n') {
        Some((own, last)) => (own, last),
        None => ("", stored),
    };
    let Some(body) = last
        .trim()
        .strip_prefix(TAG_OPEN)
        .and_then(|t| t.strip_suffix(']'))
    else {
        return (stored.to_owned(), labels, key_type);
    };
    for part in body.split_whitespace() {
        match part.split_once('=') {
            Some(("policy", v)) => {
                labels.insert(LABEL_POLICY.to_owned(), v.to_owned());
            }
            Some(("key", v)) => {
                labels.insert(LABEL_KEY.to_owned(), v.to_owned());
            }
            Some(("uid", v)) => {
                labels.insert(LABEL_POLICY_UID.to_owned(), v.to_owned());
            }
            Some(("type", "public")) => key_type = KeyType::Public,
            _ => {}
        }
    }
    (own.trim().to_owned(), labels, key_type)
}
