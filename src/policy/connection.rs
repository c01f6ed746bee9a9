//! Dereference, written once for the CLI and the operator: which connection a policy uses,
//! whether that connection admits the policy's namespace, and what it is (provider, endpoint,
//! the Secrets it reads, plan, ceilings). Both sides look connections up through
//! [`ConnectionLookup`]: the CLI in its manifest set, the operator in its reflector stores.
//! Reading the Secrets themselves stays with each side (files and environment, or the stores).

use super::{
    Allow, ApiKeyPolicy, ClusterCmsConnectionSpec, CmsConnectionSpec, ConnectionKind, ProviderKind,
    SecretsRead,
};
use crate::model::desired::ConnectionId;
use crate::model::Tier;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Where connections and namespaces are looked up.
pub trait ConnectionLookup {
    fn cms_connection(&self, namespace: &str, name: &str) -> Option<CmsConnectionSpec>;
    fn cluster_connection(&self, name: &str) -> Option<ClusterCmsConnectionSpec>;
    /// A namespace's labels (none when it is not known), for namespace selectors.
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String>;
}

/// Whether the connection must admit the policy's namespace: to create and keep keys it must;
/// to revoke them it need not (a namespace it stopped admitting loses its keys through it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Required,
    NotNeeded,
}

/// A connection, dereferenced: everything but the values of the Secrets it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub id: ConnectionId,
    pub provider: ProviderKind,
    pub endpoint: String,
    pub secrets: SecretsRead,
    pub plan: Option<Tier>,
    /// A shared connection's ceilings (`None` for a namespaced connection).
    pub allow: Option<Allow>,
}

/// Why a policy cannot use the connection it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("{0} does not exist")]
    NotFound(ConnectionId),
    #[error("ClusterCmsConnection {name} does not admit namespace '{namespace}' (see its namespaces and namespaceSelector)")]
    NotAdmitted { name: String, namespace: String },
    /// Only the operator's default can name a CmsConnection of another namespace.
    #[error("CmsConnection {connection} (the operator's --default-connection) serves policies of namespace '{own}' only, not of '{namespace}'; share a connection with a ClusterCmsConnection, which admits namespaces")]
    OtherNamespace {
        connection: String,
        own: String,
        namespace: String,
    },
    #[error("ClusterCmsConnection {name} has no spec.credentialsSecretRef.namespace")]
    NoCredentialNamespace { name: String },
    /// The endpoint is not one keyward calls (it is not repeated: it may hold a password).
    #[error("{connection}: the endpoint {reason}")]
    InvalidEndpoint { connection: String, reason: String },
}

/// The connection a policy names (`spec.connectionRef`), else `default`.
pub fn connection_id(p: &ApiKeyPolicy, default: Option<&ConnectionId>) -> Option<ConnectionId> {
    let Some(r) = &p.spec.connection_ref else {
        return default.cloned();
    };
    Some(match r.kind {
        ConnectionKind::CmsConnection => ConnectionId::CmsConnection {
            namespace: p.namespace().unwrap_or_else(|| "default".into()),
            name: r.name.clone(),
        },
        ConnectionKind::ClusterCmsConnection => ConnectionId::ClusterCmsConnection {
            name: r.name.clone(),
        },
    })
}

/// Whether a cluster connection's namespace conditions admit `namespace` (with its labels).
pub fn admits(
    spec: &ClusterCmsConnectionSpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    spec.namespaces.iter().any(|n| n == namespace)
        || spec
            .namespace_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, labels))
}

/// Kubernetes label-selector semantics (an empty selector matches everything).
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expr = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    by_label && by_expr
}

/// Connection `id` for a policy of `policy_ns`: it exists, admits the namespace (when
/// `admission` requires it), names where its credential is, and has an endpoint keyward calls.
/// `ConnectionId::Default` is the caller's own and is never looked up.
pub fn dereference(
    lookup: &impl ConnectionLookup,
    id: &ConnectionId,
    policy_ns: &str,
    admission: Admission,
) -> Result<Connection, ConnectionError> {
    let not_found = || ConnectionError::NotFound(id.clone());
    let required = admission == Admission::Required;
    let (provider, endpoint, secrets, plan, allow) = match id {
        ConnectionId::Default => return Err(not_found()),
        ConnectionId::CmsConnection { namespace, name } => {
            if required && namespace != policy_ns {
                return Err(ConnectionError::OtherNamespace {
                    connection: format!("{namespace}/{name}"),
                    own: namespace.clone(),
                    namespace: policy_ns.to_owned(),
                });
            }
            let s = lookup
                .cms_connection(namespace, name)
                .ok_or_else(not_found)?;
            let secrets = s.secrets_read(namespace);
            (s.provider, s.endpoint, secrets, s.plan, None)
        }
        ConnectionId::ClusterCmsConnection { name } => {
            let s = lookup.cluster_connection(name).ok_or_else(not_found)?;
            if required && !admits(&s, policy_ns, &lookup.namespace_labels(policy_ns)) {
                return Err(ConnectionError::NotAdmitted {
                    name: name.clone(),
                    namespace: policy_ns.to_owned(),
                });
            }
            let secrets = s
                .secrets_read()
                .ok_or_else(|| ConnectionError::NoCredentialNamespace { name: name.clone() })?;
            (s.provider, s.endpoint, secrets, s.plan, Some(s.allow))
        }
    };
    crate::model::check_endpoint(&endpoint).map_err(|reason| ConnectionError::InvalidEndpoint {
        connection: id.to_string(),
        reason,
    })?;
    Ok(Connection {
        id: id.clone(),
        provider,
        endpoint,
        secrets,
        plan,
        allow,
    })
}

/// The CLI looks connections up in the manifests it was given.
impl ConnectionLookup for super::load::ManifestSet {
    fn cms_connection(&self, namespace: &str, name: &str) -> Option<CmsConnectionSpec> {
        self.connections
            .iter()
            .find(|c| {
                let m = &c.object.metadata;
                m.name.as_deref() == Some(name)
                    && m.namespace.as_deref().unwrap_or("default") == namespace
            })
            .map(|c| c.object.spec.clone())
    }

    fn cluster_connection(&self, name: &str) -> Option<ClusterCmsConnectionSpec> {
        self.cluster_connections
            .iter()
            .find(|c| c.object.metadata.name.as_deref() == Some(name))
            .map(|c| c.object.spec.clone())
    }

    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .iter()
            .find(|n| n.object.metadata.name.as_deref() == Some(namespace))
            .and_then(|n| n.object.metadata.labels.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SecretField;

    /// Connections and namespaces in memory.
    #[derive(Default)]
    struct InMemory {
        namespaced: BTreeMap<(String, String), CmsConnectionSpec>,
        cluster: BTreeMap<String, ClusterCmsConnectionSpec>,
        labels: BTreeMap<String, BTreeMap<String, String>>,
    }

    impl ConnectionLookup for InMemory {
        fn cms_connection(&self, namespace: &str, name: &str) -> Option<CmsConnectionSpec> {
            self.namespaced
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
        }
        fn cluster_connection(&self, name: &str) -> Option<ClusterCmsConnectionSpec> {
            self.cluster.get(name).cloned()
        }
        fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
            self.labels.get(namespace).cloned().unwrap_or_default()
        }
    }

    fn lookup() -> InMemory {
        let mut l = InMemory::default();
        let own: CmsConnectionSpec = serde_json::from_value(serde_json::json!({
            "provider": "keyward", "endpoint": "https://cms.shop.example",
            "credentialsSecretRef": {"name": "admin"}, "plan": "team"
        }))
        .expect("a CmsConnection spec");
        l.namespaced.insert(("shop".into(), "own".into()), own);
        let shared: ClusterCmsConnectionSpec = serde_json::from_value(serde_json::json!({
            "provider": "strapi", "endpoint": "https://cms.example",
            "credentialsSecretRef": {"name": "admin", "namespace": "platform"},
            "namespaces": ["shop"],
            "namespaceSelector": {"matchLabels": {"cms": "shared"}}
        }))
        .expect("a ClusterCmsConnection spec");
        let mut nameless = shared.clone();
        nameless.credentials_secret_ref.namespace = None;
        l.cluster.insert("shared".into(), shared);
        l.cluster.insert("nameless".into(), nameless);
        let mut bad = l.namespaced[&("shop".into(), "own".into())].clone();
        bad.endpoint = "http://169.254.169.254/".into();
        l.namespaced.insert(("shop".into(), "metadata".into()), bad);
        l.labels
            .insert("blog".into(), [("cms".into(), "shared".into())].into());
        l
    }

    fn namespaced(name: &str) -> ConnectionId {
        ConnectionId::CmsConnection {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn cluster(name: &str) -> ConnectionId {
        ConnectionId::ClusterCmsConnection { name: name.into() }
    }

    #[test]
    fn a_namespaced_connection_serves_its_own_namespace() {
        let l = lookup();
        let c = dereference(&l, &namespaced("own"), "shop", Admission::Required)
            .expect("its own namespace's connection");
        assert_eq!(c.provider, ProviderKind::Keyward);
        assert_eq!(c.endpoint, "https://cms.shop.example");
        assert_eq!(c.plan, Some(Tier::Team));
        assert_eq!(c.allow, None);
        assert_eq!(
            c.secrets.credential,
            SecretField {
                namespace: "shop".into(),
                name: "admin".into(),
                key: "token".into()
            }
        );
        assert_eq!(
            dereference(&l, &namespaced("own"), "blog", Admission::Required),
            Err(ConnectionError::OtherNamespace {
                connection: "shop/own".into(),
                own: "shop".into(),
                namespace: "blog".into()
            })
        );
        // To revoke, the connection the keys are on serves whatever the namespace.
        assert!(dereference(&l, &namespaced("own"), "blog", Admission::NotNeeded).is_ok());
        assert_eq!(
            dereference(&l, &namespaced("gone"), "shop", Admission::Required),
            Err(ConnectionError::NotFound(namespaced("gone")))
        );
        assert!(matches!(
            dereference(&l, &namespaced("metadata"), "shop", Admission::Required),
            Err(ConnectionError::InvalidEndpoint { .. })
        ));
        assert_eq!(
            dereference(&l, &ConnectionId::Default, "shop", Admission::Required),
            Err(ConnectionError::NotFound(ConnectionId::Default))
        );
    }

    #[test]
    fn a_cluster_connection_admits_by_name_or_label() {
        let l = lookup();
        for ns in ["shop", "blog"] {
            let c = dereference(&l, &cluster("shared"), ns, Admission::Required)
                .unwrap_or_else(|e| panic!("{ns} is admitted: {e}"));
            assert_eq!(c.provider, ProviderKind::Strapi);
            assert_eq!(c.secrets.credential.namespace, "platform");
            assert!(c.allow.is_some());
        }
        let refused = dereference(&l, &cluster("shared"), "other", Admission::Required);
        assert_eq!(
            refused,
            Err(ConnectionError::NotAdmitted {
                name: "shared".into(),
                namespace: "other".into()
            })
        );
        assert!(dereference(&l, &cluster("shared"), "other", Admission::NotNeeded).is_ok());
        assert_eq!(
            dereference(&l, &cluster("nameless"), "shop", Admission::Required),
            Err(ConnectionError::NoCredentialNamespace {
                name: "nameless".into()
            })
        );
        assert_eq!(
            dereference(&l, &cluster("gone"), "shop", Admission::NotNeeded),
            Err(ConnectionError::NotFound(cluster("gone")))
        );
    }

    #[test]
    fn the_manifests_are_looked_up_by_namespace_and_name() {
        let yaml = "apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: main, namespace: blog}
spec: {provider: keyward, endpoint: 'https://blog.example', credentialsSecretRef: {name: admin}}
---
apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: other, namespace: shop}
spec: {provider: strapi, endpoint: 'https://shop.example', credentialsSecretRef: {name: admin}}
---
apiVersion: keyward.dev/v1alpha1
kind: ClusterCmsConnection
metadata: {name: shared}
spec: {provider: directus, endpoint: 'https://cms.example', credentialsSecretRef: {name: admin, namespace: platform}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
";
        let set = crate::policy::load::load_str("m.yaml", yaml).expect("manifests");
        let endpoint = |c: Option<CmsConnectionSpec>| c.map(|c| c.endpoint);
        assert_eq!(
            endpoint(set.cms_connection("blog", "main")).as_deref(),
            Some("https://blog.example")
        );
        assert_eq!(
            endpoint(set.cms_connection("shop", "main")),
            None,
            "another namespace's"
        );
        assert_eq!(
            endpoint(set.cms_connection("blog", "other")),
            None,
            "another name"
        );
        assert!(set.cluster_connection("shared").is_some());
        assert!(set.cluster_connection("main").is_none());
        assert_eq!(
            set.namespace_labels("shop").get("team").map(String::as_str),
            Some("shop")
        );
        assert!(set.namespace_labels("blog").is_empty());
    }

    #[test]
    fn label_selectors_follow_kubernetes() {
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        let labels: BTreeMap<String, String> = [
            ("team".into(), "shop".into()),
            ("tier".into(), "web".into()),
        ]
        .into();
        let matches = |v| selector_matches(&sel(v), &labels);
        assert!(matches(serde_json::json!({})), "empty: everything");
        assert!(matches(
            serde_json::json!({"matchLabels": {"team": "shop"}})
        ));
        assert!(!matches(
            serde_json::json!({"matchLabels": {"team": "blog"}})
        ));
        let expr = |op: &str, values: &[&str]| serde_json::json!({"matchExpressions": [{"key": "team", "operator": op, "values": values}]});
        assert!(matches(expr("In", &["blog", "shop"])));
        assert!(!matches(expr("In", &["blog"])));
        assert!(matches(expr("NotIn", &["blog"])));
        assert!(!matches(expr("NotIn", &["shop"])));
        assert!(matches(expr("Exists", &[])));
        assert!(!matches(expr("DoesNotExist", &[])));
        assert!(
            !matches(expr("Gt", &["1"])),
            "unknown operators match nothing"
        );
        let other =
            serde_json::json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]});
        assert!(matches(other));
        let both = serde_json::json!({"matchLabels": {"tier": "web"}, "matchExpressions": [{"key": "team", "operator": "In", "values": ["blog"]}]});
        assert!(!matches(both), "every condition must hold");
    }

    #[test]
    fn a_policy_uses_the_connection_it_names_else_the_default() {
        let policy = |r: serde_json::Value| -> ApiKeyPolicy {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": {"connectionRef": r, "keys": []}
            }))
            .expect("a policy")
        };
        let default = cluster("platform");
        let named = policy(serde_json::json!({"kind": "CmsConnection", "name": "own"}));
        assert_eq!(
            connection_id(&named, Some(&default)),
            Some(namespaced("own"))
        );
        let shared = policy(serde_json::json!({"kind": "ClusterCmsConnection", "name": "s"}));
        assert_eq!(connection_id(&shared, None), Some(cluster("s")));
        let unnamed = policy(serde_json::Value::Null);
        assert_eq!(connection_id(&unnamed, Some(&default)), Some(default));
        assert_eq!(connection_id(&unnamed, None), None);
    }
}
