//! keyward's ownership tag, for CMSes whose keys have no labels (Strapi, Directus, DatoCMS):
//! `[keyward policy=ns.name key=k uid=... type=public created=... issued=...]`, kept where each
//! CMS has room (the last line of a description, the end of a name). `created` and `issued` (the
//! time of the current value) give the value's generation where the CMS does not record it.

use crate::model::desired::{LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID};
use crate::model::{KeySpec, KeyType};
use jiff::Timestamp;
use std::collections::BTreeMap;

/// What starts the tag (and marks a key as keyward's in a listing).
pub const TAG_OPEN: &str = "[keyward ";

/// When a key and its current value were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    pub created: Timestamp,
    /// The last regenerate; `None`: the value is the one made with the key.
    pub issued: Option<Timestamp>,
}

/// What a tag says: the key's labels, its type, (where kept) its stamps, and a provider's own
/// fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub labels: BTreeMap<String, String>,
    pub key_type: KeyType,
    pub stamps: Option<Stamps>,
    pub other: BTreeMap<String, String>,
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The tag of `spec`'s labels and type, with `stamps` where the CMS keeps no times.
pub fn compose(spec: &KeySpec, stamps: Option<Stamps>) -> String {
    compose_with(spec, stamps, &[])
}

/// `compose` with a provider's own `name=value` fields after the others.
pub fn compose_with(spec: &KeySpec, stamps: Option<Stamps>, extra: &[(&str, &str)]) -> String {
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
    if let Some(s) = stamps {
        parts.push(format!("created={}", stamp(s.created)));
        if let Some(at) = s.issued {
            parts.push(format!("issued={}", stamp(at)));
        }
    }
    parts.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
    format!("{TAG_OPEN}{}]", parts.join(" "))
}

/// The tag in `text` (the whole of it, trimmed), or `None` if it is not one.
pub fn parse(text: &str) -> Option<Tag> {
    let body = text
        .trim()
        .strip_prefix(TAG_OPEN)
        .and_then(|t| t.strip_suffix(']'))?;
    let mut tag = Tag {
        labels: BTreeMap::new(),
        key_type: KeyType::Service,
        stamps: None,
        other: BTreeMap::new(),
    };
    let (mut created, mut issued) = (None, None);
    for part in body.split_whitespace() {
        let label = match part.split_once('=') {
            Some(("policy", v)) => Some((LABEL_POLICY, v)),
            Some(("key", v)) => Some((LABEL_KEY, v)),
            Some(("uid", v)) => Some((LABEL_POLICY_UID, v)),
            Some(("type", "public")) => {
                tag.key_type = KeyType::Public;
                None
            }
            Some(("created", v)) => {
                created = v.parse::<Timestamp>().ok();
                None
            }
            Some(("issued", v)) => {
                issued = v.parse::<Timestamp>().ok();
                None
            }
            Some((k, v)) => {
                tag.other.insert(k.to_owned(), v.to_owned());
                None
            }
            None => None,
        };
        if let Some((name, v)) = label {
            tag.labels.insert(name.to_owned(), v.to_owned());
        }
    }
    tag.stamps = created.map(|created| Stamps { created, issued });
    Some(tag)
}

/// A description with the tag on its last line: the key's own text, then the tag.
pub fn compose_description(spec: &KeySpec, stamps: Option<Stamps>) -> String {
    let tag = compose(spec, stamps);
    let own = spec.description.trim();
    if own.is_empty() {
        tag
    } else {
        format!("{own}\n\n{tag}")
    }
}

/// Splits a stored description into the key's own text and its tag; a description without a
/// tag is all the key's own.
pub fn parse_description(stored: &str) -> (String, Option<Tag>) {
    let (own, last) = stored.rsplit_once('\n').unwrap_or(("", stored));
    match parse(last) {
        Some(tag) => (own.trim().to_owned(), Some(tag)),
        None => (stored.to_owned(), None),
    }
}
