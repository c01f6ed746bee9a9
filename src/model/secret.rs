//! The Secret contract: what a key's Secret holds and says about itself, the same whether the
//! CLI writes it as a manifest file or to a cluster, or the operator writes it. Its labels and
//! annotations (key id and version, the value's fingerprint, the spec and content hashes), how a
//! Secret is read back (its observed form, checked against its data), and the manifest.

use super::desired::{DesiredKey, PolicyId, SecretTarget};
use super::live::LiveKey;
use super::template::render_template;
use super::KeyValue;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;
use std::fmt;

/// The CMS key the value belongs to.
pub const ANN_KEY_ID: &str = "keyward.dev/key-id";
/// Which generation of the key's value it is ([`LiveKey::version`]).
pub const ANN_KEY_VERSION: &str = "keyward.dev/key-version";
/// A hash of the value (safe to show): the value counts only when it matches.
pub const ANN_FINGERPRINT: &str = "keyward.dev/fingerprint";
/// A hash of everything but the value that shaped the Secret ([`secret_spec_hash`]).
pub const ANN_SPEC_HASH: &str = "keyward.dev/spec-hash";
/// A hash of the data fields ([`content_hash`]): hand edits are noticed.
pub const ANN_CONTENT_HASH: &str = "keyward.dev/content-hash";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The policy's name (the CMS key's own tag, `model::desired::LABEL_POLICY`, says more).
pub const LABEL_SECRET_POLICY: &str = "keyward.dev/policy";
/// On a retained Secret (`secret.deletionPolicy: Retain`): `"true"`. Nothing deletes it.
pub const ANN_RETAIN: &str = "keyward.dev/retain";
/// On an operator's retained Secret, which has no ownerReference: the UID of its policy.
pub const LABEL_SECRET_POLICY_UID: &str = "keyward.dev/policy-uid";
/// The value of [`LABEL_MANAGED_BY`] on every Secret keyward writes.
pub const MANAGED_BY: &str = "keyward";

/// The label selector of every Secret keyward writes.
pub fn written_by_keyward() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// What a Secret that keyward wrote says about the value inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedSecret {
    pub key_id: Option<String>,
    /// The key's value generation (`LiveKey::version`) when it was written.
    pub key_version: Option<String>,
    /// Hash of everything but the value that shaped the Secret (fields, labels, annotations).
    pub spec_hash: Option<String>,
    /// The value is there and is the one the annotations describe (its fingerprint matches).
    pub has_value: bool,
    /// The data fields are as keyward wrote them (content hash matches).
    pub content_intact: bool,
    /// The fingerprint annotation (a hash of the value, safe to show).
    pub fingerprint: Option<String>,
}

/// Secrets observed, by (namespace, name).
pub type ObservedSecrets = BTreeMap<(String, String), ObservedSecret>;

/// The hash that tells whether a Secret's non-secret content is what the policy asks for.
pub fn secret_spec_hash(
    target: &SecretTarget,
    key_id: &str,
    version: &str,
    endpoint: &str,
) -> String {
    let doc = serde_json::json!({"t": target, "id": key_id, "v": version, "e": endpoint});
    super::short_hash(doc.to_string().as_bytes(), 12)
}

/// Everything a Secret holds for one key. Debug hides the value and the data.
#[derive(Clone)]
pub struct SecretMaterial {
    pub target: SecretTarget,
    pub policy: PolicyId,
    pub key_id: String,
    pub value: KeyValue,
    /// Data fields, rendered (the value under the key field).
    pub data: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// keyward's annotations (key id and version, fingerprint, hashes) and the target's.
    pub annotations: BTreeMap<String, String>,
}

impl fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretMaterial")
            .field("secret", &format_args!("{}", self.target))
            .field("key_id", &self.key_id)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl SecretMaterial {
    /// Builds the Secret content for `key` holding `value` of the live key `live`.
    pub fn new(
        key: &DesiredKey,
        live: &LiveKey,
        value: KeyValue,
        endpoint: &str,
    ) -> SecretMaterial {
        let version = live.version();
        let vars = BTreeMap::from([
            ("endpoint", endpoint.to_owned()),
            ("keyId", live.id.clone()),
            ("keyName", live.spec.name.clone()),
            (
                "expiresAt",
                live.expires_at().map(super::rfc3339).unwrap_or_default(),
            ),
        ]);
        let mut data: BTreeMap<String, String> = key
            .secret
            .extra_fields
            .iter()
            .map(|(k, t)| (k.clone(), render_template(t, &vars)))
            .collect();
        data.insert(key.secret.key_field.clone(), value.expose().to_owned());
        let content_hash = content_hash(&data);
        let mut labels = key.secret.labels.clone();
        labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
        labels.insert(LABEL_SECRET_POLICY.into(), key.policy.name.clone());
        let mut annotations = key.secret.annotations.clone();
        annotations.insert(ANN_KEY_ID.into(), live.id.clone());
        annotations.insert(ANN_KEY_VERSION.into(), version.clone());
        annotations.insert(ANN_FINGERPRINT.into(), value.fingerprint());
        annotations.insert(
            ANN_SPEC_HASH.into(),
            secret_spec_hash(&key.secret, &live.id, &version, endpoint),
        );
        annotations.insert(ANN_CONTENT_HASH.into(), content_hash);
        if key.secret.retain {
            annotations.insert(ANN_RETAIN.into(), "true".into());
            if let Some(uid) = &key.policy.uid {
                labels.insert(LABEL_SECRET_POLICY_UID.into(), uid.clone());
            }
        }
        SecretMaterial {
            target: key.secret.clone(),
            policy: key.policy.clone(),
            key_id: live.id.clone(),
            value,
            data,
            labels,
            annotations,
        }
    }
}

/// A hash of a Secret's data fields, kept in an annotation so hand edits are noticed.
pub fn content_hash(data: &BTreeMap<String, String>) -> String {
    let mut fields = Vec::new();
    for (k, v) in data {
        fields.extend_from_slice(k.as_bytes());
        fields.push(0);
        fields.extend_from_slice(v.as_bytes());
        fields.push(0);
    }
    super::short_hash(&fields, 12)
}

/// What a Secret written by keyward says about itself, checked against its data: the value counts
/// only if its fingerprint matches, and the other fields only if the content hash does.
pub fn observed_from(
    annotations: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
    key_field: &str,
) -> ObservedSecret {
    let value_ok = data.get(key_field).is_some_and(|v| {
        !v.is_empty() && annotations.get(ANN_FINGERPRINT) == Some(&super::fingerprint(v))
    });
    ObservedSecret {
        key_id: annotations.get(ANN_KEY_ID).cloned(),
        key_version: annotations.get(ANN_KEY_VERSION).cloned(),
        spec_hash: annotations.get(ANN_SPEC_HASH).cloned(),
        has_value: value_ok,
        content_intact: annotations.get(ANN_CONTENT_HASH) == Some(&content_hash(data)),
        fingerprint: annotations.get(ANN_FINGERPRINT).cloned(),
    }
}

/// What a Secret says about itself, its value in field `key_field`.
pub fn observed(s: &Secret, key_field: &str) -> ObservedSecret {
    let ann = s.metadata.annotations.clone().unwrap_or_default();
    observed_from(&ann, &string_data(s), key_field)
}

/// A Secret's data as strings (non-UTF-8 fields are skipped: keyward writes none).
pub fn string_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

/// The value in field `key_field`, if it holds one.
pub fn value_in(secret: &Secret, key_field: &str) -> Option<KeyValue> {
    let bytes = secret.data.as_ref()?.get(key_field)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|v| !v.is_empty())
        .map(KeyValue::new)
}

/// The manifest for `m`.
pub fn manifest(m: &SecretMaterial) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(m.target.name.clone()),
            namespace: Some(m.target.namespace.clone()),
            labels: Some(m.labels.clone()),
            annotations: Some(m.annotations.clone()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            m.data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}
