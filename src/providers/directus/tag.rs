//! keyward's ownership tag on a Directus user: users have no labels, so the tag is the last line
//! of the user's description, `[keyward policy=ns.name key=k uid=... type=public created=...
//! issued=...]`. `created` and `issued` (the time of the current token value) give the value's
//! generation, which Directus does not record.

use crate::model::{KeySpec, KeyType};
use crate::providers::ownership_tag;
use std::collections::BTreeMap;

/// What marks a user as keyward's in a listing (`filter[description][_contains]`).
pub use crate::providers::ownership_tag::{Stamps, TAG_OPEN};

/// A parsed description: the key's own part, its labels, its type and stamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub own: String,
    pub labels: BTreeMap<String, String>,
    pub key_type: KeyType,
    pub stamps: Option<Stamps>,
}

/// The description Directus stores: the key's own, then keyward's ownership tag on its last line.
pub fn compose_description(spec: &KeySpec, stamps: Stamps) -> String {
    ownership_tag::compose_description(spec, Some(stamps))
}

/// Splits a stored description; a description without a tag is all the user's own.
pub fn parse_description(stored: &str) -> Parsed {
    let (own, tag) = ownership_tag::parse_description(stored);
    match tag {
        Some(t) => Parsed {
            own,
            labels: t.labels,
            key_type: t.key_type,
            stamps: t.stamps,
        },
        None => Parsed {
            own,
            labels: BTreeMap::new(),
            key_type: KeyType::Service,
            stamps: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::{LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID};
    use jiff::Timestamp;

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
