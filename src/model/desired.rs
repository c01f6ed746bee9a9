//! The desired state: what validated policies ask of one CMS connection.

use crate::model::settings::OwnedSettings;
use crate::model::KeySpec;
use jiff::SignedDuration;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Labels that tag a CMS key with the policy that owns it.
pub const LABEL_POLICY: &str = "keyward.dev/policy";
pub const LABEL_POLICY_UID: &str = "keyward.dev/policy-uid";
pub const LABEL_KEY: &str = "keyward.dev/key";
/// How the settings owners keyward writes begin.
pub const OWNER_PREFIX: &str = "policy:";

/// A policy's identity: `namespace/name`, and its UID when it lives in a cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyId {
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl PolicyId {
    /// The `keyward.dev/policy` label value: `namespace.name`, a valid Kubernetes label value (a
    /// namespace is a DNS label without dots, so the first dot ends it). Longer than 63
    /// characters, it is the first 46 and a hash of the whole.
    pub fn label_value(&self) -> String {
        let full = format!("{}.{}", self.namespace, self.name);
        if full.len() <= 63 {
            return full;
        }
        let hash = super::short_hash(full.as_bytes(), 8);
        let head = full[..46].trim_end_matches(['.', '-']);
        format!("{head}-{hash}")
    }

    /// The owner of the policy's entry in a CMS's shared settings: `policy:` and the label
    /// value, and `@` and the UID when the policy lives in a cluster, so that the CLI's
    /// `--prune` tells its own entries from an operator's and from hand-made ones.
    pub fn settings_owner(&self) -> String {
        match &self.uid {
            Some(uid) => format!("{OWNER_PREFIX}{}@{uid}", self.label_value()),
            None => format!("{OWNER_PREFIX}{}", self.label_value()),
        }
    }

    /// The CLI-made policy a settings owner names (`policy:namespace.name`), if it is one.
    pub fn from_cli_settings_owner(owner: &str) -> Option<String> {
        let tag = owner.strip_prefix(OWNER_PREFIX)?;
        if tag.contains('@') {
            return None;
        }
        // A namespace has no dots: the first one ends it (a hashed long name stays as it is).
        Some(match tag.split_once('.') {
            Some((ns, name)) => format!("{ns}/{name}"),
            None => tag.to_owned(),
        })
    }

    /// Whether a live key's labels say this policy owns it. A key tagged with another UID
    /// belongs to another object of the same name (deleted and recreated): not ours; nor, for
    /// a policy in a cluster (which has a UID), is a key without one (the CLI made it for a
    /// policy of the same name: a tenant must not take it over, and its value, by naming a
    /// policy alike). Keys tagged by keyward 0.1 (`namespace/name`) are recognized too.
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .get(LABEL_POLICY)
            .is_some_and(|v| *v == self.label_value() || *v == self.to_string())
            && match (&self.uid, labels.get(LABEL_POLICY_UID)) {
                (Some(mine), Some(theirs)) => mine == theirs,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }
}

/// Which CMS a policy talks to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ConnectionId {
    /// The CLI's own connection (environment or embedded CMS), or the operator's default.
    Default,
    CmsConnection {
        namespace: String,
        name: String,
    },
    ClusterCmsConnection {
        name: String,
    },
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default connection"),
            Self::CmsConnection { namespace, name } => {
                write!(f, "CmsConnection {namespace}/{name}")
            }
            Self::ClusterCmsConnection { name } => write!(f, "ClusterCmsConnection {name}"),
        }
    }
}

/// Where and how a key's value is written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretTarget {
    pub namespace: String,
    pub name: String,
    pub key_field: String,
    pub extra_fields: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `secret.deletionPolicy: Retain` (or an Orphan policy's default): no ownerReference, and
    /// left in place when the key or policy goes. Absent from the spec hash when false, so the
    /// Secrets written before it existed are not rewritten.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
}

/// `namespace/name`, as kubectl names a Secret.
impl std::fmt::Display for SecretTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One key as a policy declares it, resolved and validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredKey {
    pub policy: PolicyId,
    /// The key's name inside its policy.
    pub key: String,
    /// Settings as the CMS should hold them (normalized; `expires_at` unset, ownership labels set).
    pub spec: KeySpec,
    /// From creation or rotation; `None`: the key never expires (a CMS that allows it).
    #[serde(skip)]
    pub lifetime: Option<SignedDuration>,
    #[serde(skip)]
    pub renew_before: SignedDuration,
    #[serde(skip)]
    pub rotation_overlap: SignedDuration,
    pub secret: SecretTarget,
    /// `ObserveOnly`: planned, never applied.
    pub observe_only: bool,
    /// Position in the policy's `spec.keys`, for messages that name the field.
    #[serde(skip)]
    pub index: usize,
    /// `adopt`: a key keyward did not make, to take over when the policy owns none yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Adoption>,
}

/// A key made by hand that a desired key takes over.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    pub by: AdoptBy,
    /// Its current value (`adopt.valueFrom`), once read: checked, then kept. Never shown.
    #[serde(skip)]
    pub value: Option<crate::model::KeyValue>,
    /// Whether `adopt.valueFrom` was given (the value is read by each side).
    pub keeps_value: bool,
    /// The expiry its console shows (`adopt.expiresAt`), for a CMS without a key API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
}

impl Adoption {
    /// Whether this names live key `k`.
    pub fn names(&self, k: &crate::model::live::LiveKey) -> bool {
        match &self.by {
            AdoptBy::Id(id) => k.id == *id,
            AdoptBy::Name(name) => k.spec.name == *name,
        }
    }
}

/// How an adopted key is found in the CMS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AdoptBy {
    Id(String),
    Name(String),
}

impl fmt::Display for AdoptBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id {id}"),
            Self::Name(name) => write!(f, "name '{name}'"),
        }
    }
}

/// All a connection's policies ask for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredState {
    pub keys: Vec<DesiredKey>,
    /// Policies whose keys this run manages (for revoking keys removed from them).
    pub policies: BTreeMap<PolicyId, PolicySettings>,
    /// Each managed policy's CORS origins and public endpoints, by settings owner (empty: the
    /// policy asks for none, and whatever its entry holds goes).
    pub settings: BTreeMap<String, DesiredSettings>,
}

/// What one policy asks of the CMS's shared settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredSettings {
    /// `namespace/name`, for people.
    pub policy: String,
    pub want: OwnedSettings,
    pub observe_only: bool,
}

impl DesiredState {
    /// The APIs whose public endpoints some policy asks for.
    pub fn public_apis(&self) -> BTreeSet<String> {
        self.settings
            .values()
            .flat_map(|s| s.want.public.keys().cloned())
            .collect()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicySettings {
    pub orphan: bool,
    pub observe_only: bool,
    /// Not in the manifests any more (`--prune`): every key it owns is revoked.
    pub gone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::valid_label_value;

    fn id(namespace: &str, name: &str) -> PolicyId {
        PolicyId {
            namespace: namespace.into(),
            name: name.into(),
            uid: None,
        }
    }

    #[test]
    fn the_policy_label_is_a_valid_label_value_and_tells_policies_apart() {
        assert_eq!(id("shop", "web.front").label_value(), "shop.web.front");
        let long = id(&"n".repeat(63), &format!("{}.x", "p".repeat(200)));
        let v = long.label_value();
        assert_eq!(v.len(), 63, "{v}");
        assert!(valid_label_value(&v), "{v}");
        assert_ne!(
            v,
            id(&"n".repeat(63), &format!("{}.y", "p".repeat(200))).label_value()
        );
        for p in [id("shop", "web"), long] {
            assert!(valid_label_value(&p.label_value()));
            let mut labels = BTreeMap::from([(LABEL_POLICY.to_owned(), p.label_value())]);
            assert!(p.owns(&labels));
            // Keys tagged by keyward 0.1.
            labels.insert(LABEL_POLICY.into(), p.to_string());
            assert!(p.owns(&labels));
            labels.insert(LABEL_POLICY.into(), "shop.other".into());
            assert!(!p.owns(&labels));
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ownership_is_the_policy_label_and_the_uid_of_a_policy_that_has_one() {
        let cli = PolicyId {
            namespace: "shop".into(),
            name: "web".into(),
            uid: None,
        };
        let cluster = PolicyId {
            uid: Some("u1".into()),
            ..cli.clone()
        };
        assert_eq!(cli.to_string(), "shop/web");
        assert_eq!(
            cluster.to_string(),
            "shop/web",
            "the UID is not part of the name"
        );
        let plain = labels(&[(LABEL_POLICY, "shop/web")]);
        let tagged = labels(&[(LABEL_POLICY, "shop/web"), (LABEL_POLICY_UID, "u1")]);
        let other_uid = labels(&[(LABEL_POLICY, "shop/web"), (LABEL_POLICY_UID, "u2")]);
        let other_policy = labels(&[(LABEL_POLICY, "shop/api"), (LABEL_POLICY_UID, "u1")]);
        assert!(cli.owns(&plain) && cli.owns(&tagged) && cli.owns(&other_uid));
        assert!(cluster.owns(&tagged));
        assert!(!cluster.owns(&other_uid), "another object of the same name");
        assert!(
            !cluster.owns(&plain),
            "a key the CLI made is not claimed by a cluster policy of the same name"
        );
        assert!(!cli.owns(&other_policy) && !cluster.owns(&other_policy));
        assert!(!cli.owns(&BTreeMap::new()));
    }

    #[test]
    fn connections_are_named_for_people() {
        assert_eq!(ConnectionId::Default.to_string(), "the default connection");
        assert_eq!(
            ConnectionId::CmsConnection {
                namespace: "shop".into(),
                name: "main".into()
            }
            .to_string(),
            "CmsConnection shop/main"
        );
        assert_eq!(
            ConnectionId::ClusterCmsConnection { name: "all".into() }.to_string(),
            "ClusterCmsConnection all"
        );
    }
}
