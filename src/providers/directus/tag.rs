//! keyward's ownership tag on a Directus user: users have no labels, so the tag is the last line
//! of the user's description, `[keyward policy=ns.name key=k uid=... type=public created=...
//! issued=...]`. `created` and `issued` (the time of the current token value) give the value's
//! generation, which Directus does not record.

use crate::model::desired::{LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID};
use crate::model::{KeySpec, KeyType};
use jiff::Timestamp;
use std::collections::BTreeMap;

/// What marks a user as keyward's in a listing (`filter[description][_contains]`).
pub use crate::providers::ownership_tag::TAG_OPEN;

/// The tag's fields besides the spec's: when the key and its current value were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    pub created: Timestamp,
    /// The last regenerate; `None`: the value is the one made with the user.
    pub issued: Option<Timestamp>,
}

/// A parsed description: the key's own part, its labels, its type and stamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub own: String,
    pub labels: BTreeMap<String, String>,
    pub key_type: KeyType,
    pub stamps: Option<Stamps>,
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The description Directus stores: the key's own, then keyward's ownership tag on its last line.
pub fn compose_description(spec: &KeySpec, stamps: Stamps) -> String {
    let mut parts = crate::providers::ownership_tag::fields(spec);
    parts.push(format!("created={}", stamp(stamps.created)));
    if let Some(at) = stamps.issued {
        parts.push(format!("issued={}", stamp(at)));
    }
    let tag = format!("{TAG_OPEN}{}]", parts.join(" "));
    let own = spec.description.trim();
    if own.is_empty() {
        tag
    } else {
        format!("{own}\n\n{tag}")
    }
}

/// Splits a stored description; a description without a tag is all the user's own.
pub fn parse_description(stored: &str) -> Parsed {
    let mut p = Parsed {
        own: stored.to_owned(),
        labels: BTreeMap::new(),
        key_type: KeyType::Service,
        stamps: None,
    };
    let (own, last) = stored.rsplit_once('\n').unwrap_or(("", stored));
    let Some(body) = last
        .trim()
        .strip_prefix(TAG_OPEN)
        .and_then(|t| t.strip_suffix(']'))
    else {
        return p;
    };
    let (mut created, mut issued) = (None, None);
    for part in body.split_whitespace() {
        let label = match part.split_once('=') {
            Some(("policy", v)) => Some((LABEL_POLICY, v)),
            Some(("key", v)) => Some((LABEL_KEY, v)),
            Some(("uid", v)) => Some((LABEL_POLICY_UID, v)),
            Some(("type", "public")) => {
                p.key_type = KeyType::Public;
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
            _ => None,
        };
        if let Some((name, v)) = label {
            p.labels.insert(name.to_owned(), v.to_owned());
        }
    }
    p.own = own.trim().to_owned();
    p.stamps = created.map(|created| Stamps { created, issued });
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_round_trips_and_a_foreign_description_has_no_labels() {
        let mut spec = KeySpec {
            name: "shop.site.reader".into(),
            description: " for the site ".into(),
            key_type: KeyType::Public,
            ..KeySpec::default()
        };
        spec.labels.insert(LABEL_POLICY.into(), "shop/site".into());
        spec.labels.insert(LABEL_KEY.into(), "reader".into());
        spec.labels
            .insert(LABEL_POLICY_UID.into(), "0b6f-uid".into());
        let created: Timestamp = "2026-12-01T10:00:00.123456Z".parse().unwrap();
        let issued: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let stamps = Stamps {
            created,
            issued: Some(issued),
        };
        let d = compose_description(&spec, stamps);
        assert_eq!(
            d,
            "for the site\n\n[keyward policy=shop/site key=reader uid=0b6f-uid type=public created=2026-12-01T10:00:00.123456Z issued=2026-12-02T10:00:00.000000Z]"
        );
        let p = parse_description(&d);
        assert_eq!(p.own, "for the site");
        assert_eq!(p.labels, spec.labels);
        assert_eq!(p.key_type, KeyType::Public);
        assert_eq!(p.stamps, Some(stamps));

        let foreign = parse_description("Editor of the blog");
        assert!(foreign.labels.is_empty() && foreign.stamps.is_none());
        assert_eq!(foreign.own, "Editor of the blog");
    }
}
