//! The custom resources: `ApiKeyPolicy`, `CmsConnection`, `ClusterCmsConnection`
//! (group `keyward.dev`, version `v1alpha1`).

use super::duration::{DURATION_MAX_LENGTH, DURATION_PATTERN};
use crate::model::{
    ApiPermission, ContentOp, ContentPermission, KeyKind, KeyType, ManagementPermission, Scope,
    Tier,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Declares a set of CMS API keys, the Secrets they are written to, and the CMS settings
/// (CORS origins, public endpoints) the keys' clients need.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "keyward.dev",
    version = "v1alpha1",
    kind = "ApiKeyPolicy",
    namespaced,
    status = "ApiKeyPolicyStatus",
    doc = "Declares a set of CMS API keys, the Secrets they are written to, and the CMS settings (CORS origins, public endpoints) the keys' clients need. keyward makes the CMS match it and writes each key's value to its Secret.",
    shortname = "akp",
    category = "keyward",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keyCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyPolicySpec {
    /// The CMS connection to use. Omitted: the CLI's own connection, or the operator's default
    /// connection (its `--default-connection` flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_ref: Option<ConnectionRef>,
    /// What happens to the keys when the policy (or one of its keys) is removed.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// `ObserveOnly` plans into status and never writes to the CMS.
    #[serde(default)]
    pub management_policy: ManagementPolicy,
    /// Origins whose browsers may read the CMS's responses (CORS is deny-by-default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    /// Operations of an API that need no key at all (still rate-limited by the CMS). One
    /// entry per API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_LIST),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["api"])
    )]
    pub public_endpoints: Vec<PublicEndpoint>,
    /// The keys this policy owns (at most 100); names are unique, and so are their Secrets.
    #[schemars(
        length(max = MAX_KEYS),
        extend(
            "x-kubernetes-list-type" = "map",
            "x-kubernetes-list-map-keys" = ["name"],
            "x-kubernetes-validations" = [{
                "rule": "self.all(k, self.exists_one(j, j.secret.name == k.secret.name))",
                "message": "two keys name the same Secret: each key writes a Secret of its own",
                "reason": "FieldValueDuplicate"
            }]
        )
    )]
    pub keys: Vec<KeyDecl>,
}

/// A string field's schema, not nullable (an `Option` would be).
fn plain_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string"})
}

/// The most keys one policy declares (a bound the API server needs to cost its rules; more
/// keys go in more policies).
pub const MAX_KEYS: usize = 100;
/// The most entries of a policy's other lists (per-API permissions, public endpoints).
pub const MAX_LIST: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionRef {
    /// CmsConnection (in the policy's namespace; the default) or ClusterCmsConnection.
    #[serde(default)]
    pub kind: ConnectionKind,
    /// The connection's name.
    pub name: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum ConnectionKind {
    /// A connection in the policy's own namespace.
    #[default]
    CmsConnection,
    /// A cluster-wide connection whose namespace conditions admit the policy's namespace.
    ClusterCmsConnection,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Revoke the keys.
    #[default]
    Delete,
    /// Leave the keys in the CMS.
    Orphan,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ManagementPolicy {
    #[default]
    Manage,
    ObserveOnly,
}

impl ApiKeyPolicySpec {
    /// The policy's share of its CMS's shared settings (its entry as an owner).
    pub fn declared_settings(&self) -> crate::model::live::OwnedSettings {
        let mut out = crate::model::live::OwnedSettings::default();
        if let Some(c) = &self.cors {
            out.cors.extend(c.origins.iter().cloned());
        }
        for pe in self
            .public_endpoints
            .iter()
            .filter(|p| !p.operations.is_empty())
        {
            out.public
                .entry(pe.api.clone())
                .or_default()
                .extend(pe.operations.iter().copied());
        }
        out
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsSpec {
    /// `scheme://host[:port]` origins; `*` allows every origin (a warning).
    pub origins: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicEndpoint {
    /// The API made public (it must exist in the CMS).
    pub api: String,
    /// Operations that need no key: list, get, create, update, delete, publish.
    pub operations: Vec<ContentOp>,
}

/// One API key. The rules between its fields are CEL rules of the CRD too (the API server
/// refuses what breaks them); `tests/policy_rules.rs` holds both to the same fixtures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.kind != 'personal' || (has(self.owner) && self.owner != '')",
        "message": "a personal key needs the member who owns it",
        "fieldPath": ".owner",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.kind == 'personal' || !has(self.owner)",
        "message": "only personal keys have an owner",
        "fieldPath": ".owner",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind != 'management' || (has(self.managementPermissions) && size(self.managementPermissions) > 0)",
        "message": "a management key needs at least one management permission",
        "fieldPath": ".managementPermissions",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "self.kind == 'management' || !has(self.managementPermissions) || size(self.managementPermissions) == 0",
        "message": "only management keys hold management permissions",
        "fieldPath": ".managementPermissions",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.kind == 'content' || ((!has(self.defaultPermissions) || size(self.defaultPermissions) == 0) && (!has(self.apiPermissions) || size(self.apiPermissions) == 0) && (!has(self.scopes) || size(self.scopes) == 0))",
        "message": "only content keys hold content permissions and scopes: management keys hold management permissions, personal keys inherit their owner's role",
        "fieldPath": ".kind",
        "reason": "FieldValueForbidden"
    },
    {
        "rule": "self.type != 'public' || self.kind == 'content'",
        "message": "public keys must be content keys (read rights only)",
        "fieldPath": ".type"
    },
    {
        "rule": "self.type != 'public' || ((!has(self.defaultPermissions) || self.defaultPermissions.all(p, p.startsWith('GET'))) && (!has(self.apiPermissions) || self.apiPermissions.all(a, a.permissions.all(p, p.startsWith('GET')))) && (!has(self.scopes) || self.scopes.all(s, s == 'content:read')))",
        "message": "a public key may hold read rights only (GET, GET_ALL_DRAFTS, GET_ALL_CLOSED, content:read)",
        "fieldPath": ".type"
    }
]))]
pub struct KeyDecl {
    /// Unique within the policy; a DNS label.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 40))]
    pub name: String,
    /// What the key is for, shown in the CMS beside keyward's ownership tag.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// content (delivery) keys hold permissions and scopes; management keys hold management
    /// permissions; personal keys inherit their owner's role.
    #[serde(default)]
    pub kind: KeyKind,
    /// public keys (for browsers) may hold read rights only.
    #[serde(default, rename = "type")]
    pub key_type: KeyType,
    /// Permissions on every API, each once; GET_ALL_DRAFTS and GET_ALL_CLOSED need GET.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 7),
        extend(
            "x-kubernetes-list-type" = "set",
            "x-kubernetes-validations" = [crate::model::DRAFTS_NEED_GET]
        )
    )]
    pub default_permissions: Vec<ContentPermission>,
    /// Per-API permissions, one entry per API; they replace the defaults for that API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_LIST),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["api"])
    )]
    pub api_permissions: Vec<ApiPermission>,
    /// Scopes, each once; rights are the union of permissions and scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6), extend("x-kubernetes-list-type" = "set"))]
    pub scopes: Vec<Scope>,
    /// Environments the key is limited to, each once; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub environments: Vec<String>,
    /// Management keys' rights on the CMS's management API, each once (a management key holds
    /// at least one; other kinds none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7), extend("x-kubernetes-list-type" = "set"))]
    pub management_permissions: Vec<ManagementPermission>,
    /// The member who owns a personal key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Not nullable: the API server prunes `owner: null`, so a rule's has(self.owner) means a
    // value (CEL cannot compare a string with null).
    #[schemars(schema_with = "plain_string")]
    pub owner: Option<String>,
    /// Lifetime from creation or rotation (e.g. 90d). Default: the kind's default (1 year for
    /// content keys, 182 days for management and personal keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub expires_after: Option<String>,
    /// Rotate this long before expiry (e.g. 7d). Default: Kontent.ai's reminder rule (lifetime
    /// < 1 day: at once... > 7 days: 1 week before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub renew_before: Option<String>,
    /// How long the old value keeps working after a rotation or a regeneration wrote the new
    /// one (e.g. 10m; default 15m, so workloads can pick up the new Secret; 0s ends it at
    /// once). On a CMS without overlap (Strapi) the default is 0s and only an explicit value
    /// is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = DURATION_MAX_LENGTH))]
    pub rotation_overlap: Option<String>,
    /// The Secret the key is written to.
    pub secret: SecretSpec,
    /// Service accounts allowed to read the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<Readers>,
    /// Workloads restarted (pod-template annotation) when the value changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_targets: Vec<RestartTarget>,
    /// Bring a key made by hand (in the CMS's console) under management instead of creating
    /// one: found by `id` or `name`, its rights and name become what this entry declares. Its
    /// value is given a new one with `rotationOverlap` (the old keeps working that long), or,
    /// with `valueFrom`, the current value is checked against the CMS and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptKey>,
}

/// A key keyward did not make, to manage from now on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.id) != has(self.name)",
    "message": "adopt names the key by id or by name: one of them"
}]))]
pub struct AdoptKey {
    /// The key's id in the CMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_string", length(max = 100))]
    pub id: Option<String>,
    /// The key's name in the CMS (unique there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_string", length(max = 100))]
    pub name: Option<String>,
    /// Where the key's current value is (a Secret field: the operator reads only Secrets
    /// labelled `keyward.dev/credential: "true"` in the policy's namespace; the CLI, Secrets in
    /// its manifests): checked with one call to the CMS, then kept instead of a new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
    /// When the key expires, as its console shows it (RFC 3339, e.g. 2027-06-30T00:00:00Z): for
    /// a CMS without a key API (microcms, kontent), whose expiry keyward cannot read; the
    /// reminders (`renewBefore`, `KeyExpiringSoon`) count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "plain_string", length(max = 40))]
    pub expires_at: Option<String>,
}

/// A field of a Secret in the policy's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    /// The Secret's name.
    pub name: String,
    /// The data field; default `apiKey`.
    #[serde(default = "default_key_field")]
    pub key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// Name of the Secret, in the policy's namespace.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    /// The data field holding the key value.
    #[serde(default = "default_key_field")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key_field: String,
    /// More data fields, templated: `{{ endpoint }}`, `{{ keyId }}`, `{{ keyName }}`,
    /// `{{ expiresAt }}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_fields: BTreeMap<String, String>,
    /// More labels on the Secret, besides keyward's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// More annotations on the Secret, besides keyward's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Take over a Secret of this name that exists and was not written by this policy: it is
    /// replaced whole by keyward's fields (nothing of it is kept). Without it, such a Secret is
    /// left alone and the policy reports `SecretConflict` (operator).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
    /// What happens to the Secret when its key or policy goes. `Delete` (the default): it is
    /// owned by the policy and garbage-collected with it; the CLI deletes its file or Secret
    /// when it revokes the key. `Retain`: it carries no ownerReference and is left in place
    /// (with the last value: working when the key is kept, `deletionPolicy: Orphan`). Absent:
    /// `Retain` when the policy's `deletionPolicy` is `Orphan` (its keys keep working), else
    /// `Delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<SecretDeletionPolicy>,
}

/// What happens to a key's Secret when the key or its policy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum SecretDeletionPolicy {
    /// Deleted with the policy (ownerReference), or by the CLI with the key.
    Delete,
    /// Left in place, with no ownerReference.
    Retain,
}

pub fn default_key_field() -> String {
    "apiKey".into()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Readers {
    /// Service accounts of the policy's namespace, by name: each gets a Role and RoleBinding
    /// that allow `get` on this Secret only.
    pub service_accounts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: WorkloadKind,
    /// The workload's name, in the policy's namespace.
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// What the operator observed and did.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Synced, Drifted, KeyExpiringSoon.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Each key in place: its CMS id, fingerprint, times and Secret; never its value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyStatus>,
    /// How many keys are in place (the `Keys` column of `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i64>,
    /// For ObserveOnly policies: the changes that Manage would make (no secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_changes: Vec<String>,
    /// The connection the keys in `keys`, and the policy's CORS origins and public endpoints,
    /// were made on: a changed `connectionRef`, a deletion or offboarding takes them away there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<KeysConnection>,
    /// Since when (RFC 3339) the policy has been refused in a way that ends with what it holds
    /// being taken back (its namespace no longer admitted, over its connection's ceilings, or
    /// moved to a connection that does not exist): the offboarding grace counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_since: Option<String>,
    /// The last rotation asked for with the `keyward.dev/rotate` annotation: each new value of
    /// it is acted on once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_rotation: Option<ManualRotation>,
}

/// A rotation asked for on the policy (`keyward.dev/rotate`), as it was carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualRotation {
    /// The annotation's value it acted on.
    pub request: String,
    /// When (RFC 3339).
    pub at: String,
    /// The keys that got a new value (`namespace/policy/key`); keys created in the same
    /// reconcile are new anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Without overlap (`keyward.dev/rotate-now: "true"`): the old values stopped at once.
    #[serde(default)]
    pub at_once: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysConnection {
    /// CmsConnection or ClusterCmsConnection.
    pub kind: ConnectionKind,
    /// A CmsConnection's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The connection's name.
    pub name: String,
}

impl KeysConnection {
    pub fn of(id: &crate::model::desired::ConnectionId) -> Option<KeysConnection> {
        use crate::model::desired::ConnectionId;
        match id {
            ConnectionId::Default => None,
            ConnectionId::CmsConnection { namespace, name } => Some(KeysConnection {
                kind: ConnectionKind::CmsConnection,
                namespace: Some(namespace.clone()),
                name: name.clone(),
            }),
            ConnectionId::ClusterCmsConnection { name } => Some(KeysConnection {
                kind: ConnectionKind::ClusterCmsConnection,
                namespace: None,
                name: name.clone(),
            }),
        }
    }

    pub fn id(&self) -> crate::model::desired::ConnectionId {
        use crate::model::desired::ConnectionId;
        match self.kind {
            ConnectionKind::CmsConnection => ConnectionId::CmsConnection {
                namespace: self.namespace.clone().unwrap_or_default(),
                name: self.name.clone(),
            },
            ConnectionKind::ClusterCmsConnection => ConnectionId::ClusterCmsConnection {
                name: self.name.clone(),
            },
        }
    }
}

/// Status conditions are Kubernetes' own (`metav1.Condition`).
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    /// The key's name in the spec.
    pub name: String,
    /// The key's id in the CMS.
    pub id: String,
    /// A short hash of the value in use; never the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// When the CMS made the key (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the key stops working (RFC 3339); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When its value was last regenerated (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    /// The Secret holding the value, in the policy's namespace.
    pub secret_name: String,
}

/// The fields of both connection kinds. A macro rather than a shared struct: serde cannot
/// `flatten` a struct under `deny_unknown_fields`, and a typo in a connection must be refused.
macro_rules! connection_spec {
    ($(#[$attr:meta])* pub struct $name:ident { $($extra:tt)* }) => {
        $(#[$attr])*
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// Which CMS API the endpoint speaks.
            #[serde(default)]
            pub provider: ProviderKind,
            /// Base URL of the CMS, e.g. http://cms.cms.svc:8780.
            #[schemars(url)]
            pub endpoint: String,
            /// The Secret holding the management credential: a keyward admin token, or for
            /// strapi `email:password` of a Strapi admin user. A ClusterCmsConnection names the
            /// Secret's namespace.
            pub credentials_secret_ref: SecretKeyRef,
            /// The CMS's plan: its key quota is checked before any call.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub plan: Option<Tier>,
            /// How the endpoint's certificate is verified (HTTPS): a private CA besides the
            /// system's.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub tls: Option<ConnectionTls>,
            $($extra)*
        }
    };
}

connection_spec! {
    /// A connection to a CMS's key-management API, usable by policies in its namespace.
    #[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
    #[kube(
        group = "keyward.dev",
        version = "v1alpha1",
        kind = "CmsConnection",
        namespaced,
        doc = "A connection to a CMS's key-management API (endpoint, provider, credential Secret, CA), usable by the ApiKeyPolicies of its own namespace.",
        shortname = "cmsconn",
        status = "ConnectionStatus",
        printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
        printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
        printcolumn = r#"{"name":"Policies","type":"integer","jsonPath":".status.policies"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
        category = "keyward"
    )]
    pub struct CmsConnectionSpec {}
}

pub use crate::providers::registry::ProviderKind;

/// What the operator last found when it reached the CMS through a connection: checked when the
/// connection, its Secrets or its users change, and on an interval, with one cheap call.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: True when the CMS answered with this connection's credential; else the reason:
    /// CredentialMissing (the credential Secret or field is missing, empty or not labelled
    /// keyward.dev/credential), CaInvalid (the CA Secret is missing or holds no usable
    /// certificate), EndpointNotAllowed (the endpoint is refused by the operator's rules),
    /// EndpointUnreachable, TlsFailure, CredentialRefused (the CMS refused the credential, or
    /// it is not of the provider's form), ProviderMismatch (the endpoint does not speak the
    /// provider's API), CmsUnavailable (the CMS answered with an error of its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many ApiKeyPolicies use this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// Required for a ClusterCmsConnection; a CmsConnection's Secret is in its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The data field with the token.
    #[serde(default = "default_token_field")]
    pub key: String,
}

fn default_token_field() -> String {
    "token".into()
}

/// TLS settings of a connection. There is no option to skip verification.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionTls {
    /// A Secret holding the CA certificate(s), PEM, that signed the endpoint's certificate; it
    /// is trusted besides the system's roots. In a cluster the Secret carries the label
    /// `keyward.dev/credential: "true"`, as credential Secrets do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaSecretRef {
    /// The Secret's name.
    pub name: String,
    /// Required for a ClusterCmsConnection; a CmsConnection's Secret is in its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The data field with the PEM certificates.
    #[serde(default = "default_ca_field")]
    pub key: String,
}

fn default_ca_field() -> String {
    "ca.crt".into()
}

connection_spec! {
    /// A cluster-wide CMS connection; only namespaces its conditions admit may use it.
    #[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
    #[kube(
        group = "keyward.dev",
        version = "v1alpha1",
        kind = "ClusterCmsConnection",
        doc = "A cluster-wide connection to a CMS's key-management API, shared by the namespaces it admits (by name or label), within the ceilings of spec.allow.",
        shortname = "ccmsconn",
        status = "ConnectionStatus",
        printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
        printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".spec.endpoint"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
        printcolumn = r#"{"name":"Policies","type":"integer","jsonPath":".status.policies"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
        category = "keyward"
    )]
    pub struct ClusterCmsConnectionSpec {
        /// Namespaces admitted by name.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub namespaces: Vec<String>,
        /// Namespaces admitted by label. With neither this nor `namespaces`, no namespace is
        /// admitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace_selector: Option<LabelSelector>,
        /// What the admitted namespaces may declare; without it, content keys only, no `*`
        /// scope, no CORS origins and no public endpoints.
        #[serde(default)]
        pub allow: Allow,
    }
}

/// `ClusterCmsConnection.spec.allow`. A policy that declares more is refused whole
/// (`NotAllowed`), by the operator and by `keyward plan` alike.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Allow {
    /// Key kinds (default: content only).
    #[serde(default = "content_only")]
    pub kinds: Vec<KeyKind>,
    /// Key types (default: both).
    #[serde(default = "both_types")]
    pub types: Vec<KeyType>,
    /// Scopes (default: every scope but `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// Management permissions (default: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub management_permissions: Vec<ManagementPermission>,
    /// APIs by name or pattern (`shop-*`; default: all). Under it, rights that reach every API
    /// are refused: `defaultPermissions`, every scope (the content scopes, and `export:write`,
    /// `cache:purge`, `webhooks:write`, which act on every API), and the management permissions
    /// that reach every API (`content:*`, `settings:manage`, `members:manage`); public
    /// endpoints must name an API inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apis: Option<Vec<String>>,
    /// Environments (default: all). Under it, a key must list its environments, and public
    /// endpoints (which answer in every environment) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environments: Option<Vec<String>>,
    /// Whether policies may make APIs public (default: no), within `apis`.
    #[serde(default)]
    pub public_endpoints: bool,
    /// The members whose personal keys policies may declare, by name or pattern (default:
    /// none): a personal key holds its owner's role, so naming an administrator would hand out
    /// the administrator's rights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Whether policies may add CORS origins (default: no).
    #[serde(default)]
    pub cors: bool,
    /// At most this many keys per namespace on this connection (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys_per_namespace: Option<u32>,
}

fn content_only() -> Vec<KeyKind> {
    vec![KeyKind::Content]
}

fn both_types() -> Vec<KeyType> {
    vec![KeyType::Public, KeyType::Service]
}

impl Default for Allow {
    fn default() -> Self {
        Allow {
            kinds: content_only(),
            types: both_types(),
            scopes: None,
            management_permissions: Vec::new(),
            apis: None,
            environments: None,
            public_endpoints: false,
            owners: Vec::new(),
            cors: false,
            max_keys_per_namespace: None,
        }
    }
}
