//! Which Secrets a connection reads: the one definition that the CLI's resolver, the operator's
//! dereference, its Secret watches, its in-use finalizers and its connection checks all use.
//! A `CmsConnection` reads Secrets of its own namespace only (a namespace its references name
//! is ignored: a tenant's connection cannot make keyward read another namespace's Secret); a
//! `ClusterCmsConnection` names its credential's namespace, and its CA is there too unless it
//! names another.

use super::{CaSecretRef, ClusterCmsConnectionSpec, CmsConnectionSpec, ConnectionTls};

/// A data field of a Secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretField {
    pub namespace: String,
    pub name: String,
    /// The data field.
    pub key: String,
}

impl std::fmt::Display for SecretField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (field '{}')", self.namespace, self.name, self.key)
    }
}

/// The Secrets a connection reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretsRead {
    /// Its management credential.
    pub credential: SecretField,
    /// The CA its endpoint's certificate is checked with, besides the system's.
    pub ca: Option<SecretField>,
}

impl SecretsRead {
    /// Each Secret read, the credential first.
    pub fn all(&self) -> impl Iterator<Item = &SecretField> {
        std::iter::once(&self.credential).chain(self.ca.as_ref())
    }

    /// Whether Secret `namespace/name` is one of them.
    pub fn reads(&self, namespace: &str, name: &str) -> bool {
        self.all()
            .any(|s| s.namespace == namespace && s.name == name)
    }
}

fn ca_field(
    tls: Option<&ConnectionTls>,
    default_namespace: &str,
    own_only: bool,
) -> Option<SecretField> {
    let r: &CaSecretRef = tls?.ca_secret_ref.as_ref()?;
    let namespace = match &r.namespace {
        Some(other) if !own_only => other.clone(),
        _ => default_namespace.to_owned(),
    };
    Some(SecretField {
        namespace,
        name: r.name.clone(),
        key: r.key.clone(),
    })
}

impl CmsConnectionSpec {
    /// The Secrets of the connection in `namespace` (its own).
    pub fn secrets_read(&self, namespace: &str) -> SecretsRead {
        let r = &self.credentials_secret_ref;
        SecretsRead {
            credential: SecretField {
                namespace: namespace.to_owned(),
                name: r.name.clone(),
                key: r.key.clone(),
            },
            ca: ca_field(self.tls.as_ref(), namespace, true),
        }
    }
}

impl ClusterCmsConnectionSpec {
    /// The Secrets of the connection; `None` when it names no credential namespace (it then
    /// reads nothing, and cannot be used).
    pub fn secrets_read(&self) -> Option<SecretsRead> {
        let r = &self.credentials_secret_ref;
        let namespace = r.namespace.clone()?;
        Some(SecretsRead {
            ca: ca_field(self.tls.as_ref(), &namespace, false),
            credential: SecretField {
                namespace,
                name: r.name.clone(),
                key: r.key.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cms(spec: serde_json::Value) -> CmsConnectionSpec {
        serde_json::from_value(spec).expect("a connection spec")
    }

    fn cluster(spec: serde_json::Value) -> ClusterCmsConnectionSpec {
        serde_json::from_value(spec).expect("a cluster connection spec")
    }

    fn field(namespace: &str, name: &str, key: &str) -> SecretField {
        SecretField {
            namespace: namespace.into(),
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_namespaced_connection_reads_its_own_namespace_only() {
        let c = cms(serde_json::json!({"endpoint": "http://cms",
            "credentialsSecretRef": {"name": "admin", "namespace": "kube-system"},
            "tls": {"caSecretRef": {"name": "ca", "namespace": "kube-system"}}}));
        let read = c.secrets_read("shop");
        assert_eq!(read.credential, field("shop", "admin", "token"));
        assert_eq!(read.ca, Some(field("shop", "ca", "ca.crt")));
        assert!(read.reads("shop", "admin") && read.reads("shop", "ca"));
        assert!(!read.reads("kube-system", "admin"));
        assert_eq!(read.all().count(), 2);
    }

    #[test]
    fn a_cluster_connection_reads_where_it_says() {
        let c = cluster(serde_json::json!({"endpoint": "http://cms",
            "credentialsSecretRef": {"name": "admin", "namespace": "platform", "key": "t"},
            "tls": {"caSecretRef": {"name": "ca"}}}));
        let read = c.secrets_read().expect("a credential namespace");
        assert_eq!(read.credential, field("platform", "admin", "t"));
        assert_eq!(
            read.ca,
            Some(field("platform", "ca", "ca.crt")),
            "the credential's namespace"
        );
        let elsewhere = cluster(serde_json::json!({"endpoint": "http://cms",
            "credentialsSecretRef": {"name": "admin", "namespace": "platform"},
            "tls": {"caSecretRef": {"name": "ca", "namespace": "pki"}}}));
        let read = elsewhere.secrets_read().expect("a credential namespace");
        assert_eq!(read.ca, Some(field("pki", "ca", "ca.crt")));
        assert_eq!(read.all().count(), 2);
        let without = cluster(serde_json::json!({"endpoint": "http://cms",
            "credentialsSecretRef": {"name": "admin"}}));
        assert_eq!(without.secrets_read(), None);
    }
}
