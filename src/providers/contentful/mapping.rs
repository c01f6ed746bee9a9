//! keyward's key model <-> Contentful Delivery API keys, without I/O.
//!
//! - A key is a Delivery API key (`/spaces/{space}/api_keys`), which reads every content type of
//!   the environments it lists, published entries only. Contentful pairs each with a Preview
//!   API key over the same environments, which reads drafts too.
//! - `GET` is the delivery key's value; `GET` with `GET_ALL_DRAFTS` is its preview key's value.
//!   Nothing else can be held: per-API rights, writes and `GET_ALL_CLOSED` are refused.
//! - `environments` is the key's list (none: every environment the space has).
//! - keyward's ownership tag is the last line of the key's description; `value=preview` in it
//!   says which of the pair's values is the key's.

use super::capabilities::CAPABILITIES;
use crate::model::{normalize, ContentPermission, KeyKind, KeySpec};
use crate::providers::ownership_tag::{self, TAG_OPEN};
use crate::providers::{LiveKey, ProviderError};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub const PROVIDER: &str = "contentful";
/// Marks a live key that holds what keyward cannot express, so the plan shows it as drift.
pub const LABEL_UNEXPRESSED: &str = "contentful.keyward.dev/unexpressed";
/// The tag's field that says the key's value is the preview key's.
const VALUE: (&str, &str) = ("value", "preview");

/// A refusal of this provider's.
pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> ProviderError {
    ProviderError::unsupported(PROVIDER, field, reason)
}

/// What a key is in Contentful: its environments and whether its value is the preview key's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub environments: Vec<String>,
    pub preview: bool,
}

/// What a spec asks of Contentful, or the field it cannot hold; `environments` are the
/// space's.
pub fn encode(spec: &KeySpec, environments: &BTreeSet<String>) -> Result<Held, ProviderError> {
    use ContentPermission::*;
    if let Some((field, reason)) = CAPABILITIES.key_refusals(spec).into_iter().next() {
        return Err(unsupported(field, reason));
    }
    if spec.expires_at.is_some() {
        return Err(unsupported(
            "expiresAfter",
            "a Contentful Delivery API key never expires",
        ));
    }
    if !spec.api_permissions.is_empty() {
        return Err(unsupported(
            "apiPermissions[0]",
            "a Contentful Delivery API key reads every content type of its environments: per-API rights cannot be held",
        ));
    }
    for (j, p) in spec.default_permissions.iter().enumerate() {
        let reason = match p {
            Get | GetAllDrafts => continue,
            GetAllClosed => "Contentful's delivery APIs have no closed (expired) entries to grant",
            _ => "a Contentful Delivery API key only reads (writes need a management token)",
        };
        return Err(unsupported(format!("defaultPermissions[{j}]"), reason));
    }
    let mut rights: BTreeSet<ContentPermission> =
        spec.default_permissions.iter().copied().collect();
    rights.extend(spec.scope_grants());
    if !rights.contains(&Get) {
        return Err(unsupported(
            "defaultPermissions",
            "a Contentful Delivery API key always reads its environments: declare GET",
        ));
    }
    for (i, env) in spec.environments.iter().enumerate() {
        if !environments.contains(env) {
            let have: Vec<&str> = environments.iter().map(String::as_str).collect();
            return Err(unsupported(
                format!("environments[{i}]"),
                format!(
                    "this Contentful space has no environment '{env}' (it has: {})",
                    have.join(", ")
                ),
            ));
        }
    }
    Ok(Held {
        environments: if spec.environments.is_empty() {
            environments.iter().cloned().collect()
        } else {
            spec.environments.clone()
        },
        preview: rights.contains(&GetAllDrafts),
    })
}

/// The spec as Contentful will report it back, or why it cannot hold it.
pub fn canonical(
    spec: &KeySpec,
    environments: &BTreeSet<String>,
) -> Result<KeySpec, ProviderError> {
    let held = encode(spec, environments)?;
    let mut s = spec.held_as_rights(rights(held.preview), Vec::new());
    s.environments = listed(&held.environments, environments);
    Ok(normalize(s))
}

fn rights(preview: bool) -> Vec<ContentPermission> {
    let mut r = vec![ContentPermission::Get];
    if preview {
        r.push(ContentPermission::GetAllDrafts);
    }
    r
}

/// The environments keyward states: none when the key has every one the space has.
fn listed(held: &[String], space: &BTreeSet<String>) -> Vec<String> {
    let held_set: BTreeSet<&String> = held.iter().collect();
    if held_set.len() == space.len() && space.iter().all(|e| held_set.contains(e)) {
        Vec::new()
    } else {
        held.to_vec()
    }
}

/// The body of a create or an update: the key's name, its description with keyward's tag, its
/// environments.
pub fn body(spec: &KeySpec, held: &Held) -> Value {
    let extra: &[(&str, &str)] = if held.preview { &[VALUE] } else { &[] };
    let tag = ownership_tag::compose_with(spec, None, extra);
    let description = match spec.description.trim() {
        "" => tag,
        own => format!("{own}\n\n{tag}"),
    };
    let environments: Vec<Value> = held
        .environments
        .iter()
        .map(|e| json!({"sys": {"type": "Link", "linkType": "Environment", "id": e}}))
        .collect();
    json!({"name": spec.name, "description": description, "environments": environments})
}

/// A Delivery API key as keyward reads it (its tokens are never kept).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub version: u64,
    pub name: String,
    pub description: String,
    pub environments: Vec<String>,
    pub preview_id: Option<String>,
    pub created_at: Timestamp,
    /// Its `policies`, when they are not Contentful's default of everything.
    pub narrowed: bool,
}

impl ApiKey {
    pub fn parse(v: &Value) -> Result<ApiKey, String> {
        let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let id = text("/sys/id").ok_or("a key has no sys.id")?;
        let environments = v
            .get("environments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e.pointer("/sys/id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        let narrowed = v
            .get("policies")
            .and_then(Value::as_array)
            .is_some_and(|p| {
                p.iter()
                    .any(|x| x != &json!({"effect": "allow", "action": "all"}))
            });
        Ok(ApiKey {
            version: v
                .pointer("/sys/version")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            name: text("/name").unwrap_or_default(),
            description: text("/description").unwrap_or_default(),
            environments,
            preview_id: text("/preview_api_key/sys/id"),
            created_at: text("/sys/createdAt")
                .and_then(|t| t.parse().ok())
                .unwrap_or(Timestamp::UNIX_EPOCH),
            narrowed,
            id,
        })
    }

    /// Whether its description carries keyward's tag.
    pub fn tagged(&self) -> bool {
        self.description
            .rsplit('\n')
            .next()
            .is_some_and(|l| l.trim().starts_with(TAG_OPEN))
    }

    /// Whether its value is the preview key's.
    pub fn preview(&self) -> bool {
        let (_, tag) = ownership_tag::parse_description(&self.description);
        tag.is_some_and(|t| t.other.get(VALUE.0).map(String::as_str) == Some(VALUE.1))
    }

    /// The key as a live key, if keyward's; `space` are the space's environments.
    pub fn live(&self, space: &BTreeSet<String>) -> Option<LiveKey> {
        let (own, tag) = ownership_tag::parse_description(&self.description);
        let tag = tag?;
        let mut notes = Vec::new();
        if self.narrowed {
            notes.push("its policies were narrowed".to_owned());
        }
        if self.preview_id.is_none() {
            notes.push("it has no preview key".to_owned());
        }
        let mut labels = tag.labels;
        crate::providers::mark_unexpressed(&mut labels, LABEL_UNEXPRESSED, &notes);
        let preview = tag.other.get(VALUE.0).map(String::as_str) == Some(VALUE.1);
        Some(LiveKey {
            id: self.id.clone(),
            spec: normalize(KeySpec {
                name: self.name.clone(),
                description: own,
                kind: KeyKind::Content,
                key_type: tag.key_type,
                default_permissions: rights(preview),
                environments: listed(&self.environments, space),
                labels,
                ..KeySpec::default()
            }),
            created_at: self.created_at,
            rotated_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testkit::{refused, spec};

    fn space() -> BTreeSet<String> {
        ["master".to_owned(), "staging".to_owned()].into()
    }

    /// `s` as Contentful stores it, read back.
    fn read_back(s: &KeySpec) -> KeySpec {
        let held = encode(s, &space()).expect("encodes");
        let mut v = body(s, &held);
        v["sys"] = json!({"id": "k1", "version": 1, "createdAt": "2026-12-01T00:00:00Z"});
        v["preview_api_key"] = json!({"sys": {"id": "p1"}});
        v["policies"] = json!([{"effect": "allow", "action": "all"}]);
        ApiKey::parse(&v)
            .expect("parses")
            .live(&space())
            .expect("tagged")
            .spec
    }

    #[test]
    fn each_spec_reads_back_as_its_canonical_form() {
        crate::providers::testkit::reads_back_as_canonical(
            LABEL_UNEXPRESSED,
            &[
                "name: n\ndefaultPermissions: [GET]",
                "name: n\ndescription: the site\ntype: public\ndefaultPermissions: [GET, GET_ALL_DRAFTS]\nenvironments: [staging]",
                "name: n\nscopes: ['content:read']",
                "name: n\ndefaultPermissions: [GET]\nenvironments: [master, staging]",
            ],
            |y| spec(y, "ns.p"),
            |s| canonical(s, &space()).expect("canonical"),
            read_back,
        );
    }

    #[test]
    fn what_contentful_cannot_hold_is_refused_by_field() {
        let field = |y: &str| refused(PROVIDER, y, encode(&spec(y, "ns.p"), &space()));
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET, POST]"),
            "defaultPermissions[1]"
        );
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET, GET_ALL_CLOSED]"),
            "defaultPermissions[1]"
        );
        assert_eq!(
            field("name: n\napiPermissions: [{api: a, permissions: [GET]}]"),
            "apiPermissions[0]"
        );
        assert_eq!(
            field("name: n\ndefaultPermissions: []"),
            "defaultPermissions"
        );
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET]\nenvironments: [prod]"),
            "environments[0]"
        );
        assert_eq!(field("name: n\nscopes: ['content:write']"), "scopes[0]");
    }

    #[test]
    fn a_key_without_the_tag_is_not_keywards_and_narrowed_policies_are_drift() {
        let mut v = json!({"sys": {"id": "k1"}, "name": "Website", "description": "made by hand",
            "environments": [], "preview_api_key": {"sys": {"id": "p1"}}});
        assert!(ApiKey::parse(&v).expect("parses").live(&space()).is_none());
        let s = spec("name: n\ndefaultPermissions: [GET]", "ns.p");
        v["description"] = body(&s, &encode(&s, &space()).expect("encodes"))["description"].clone();
        v["policies"] = json!([{"effect": "allow", "action": "read"}]);
        let key = ApiKey::parse(&v)
            .expect("parses")
            .live(&space())
            .expect("tagged");
        assert!(key.spec.labels[LABEL_UNEXPRESSED].contains("narrowed"));
    }
}
