//! In-use finalizers. Deleting a namespace deletes its policies, connections and credential
//! Secrets at once; without protection the connection is gone before a policy's finalizer can
//! revoke its keys, and the namespace stays `Terminating` for ever. So a `CmsConnection` or
//! `ClusterCmsConnection` carries `keyward.dev/in-use` while any policy (one being deleted
//! too) uses it, and a credential or CA Secret while a connection that still matters reads it.
//! The finalizer comes off when the last user is gone, and the deletion completes.
//!
//! One sweep over the reflector stores decides it for every object: no API reads, and a write
//! only where the finalizer has to be added or taken off.

use super::connection::connection_of;
use super::context::Stores;
use super::DefaultConnection;
use crate::model::desired::ConnectionId;
use crate::policy::{ApiKeyPolicy, ClusterCmsConnection, CmsConnection};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::BTreeSet;
use std::time::Duration;

pub const IN_USE: &str = "keyward.dev/in-use";

/// The annotation that lets a policy be deleted without revoking its keys (when its
/// connection can no longer be reached): the keys stay in the CMS, unmanaged.
pub const ABANDON_KEYS: &str = "keyward.dev/abandon-keys";

/// How often the stores are swept; a sweep without changes costs no API call.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Keeps the in-use finalizers right until dropped (it runs beside the controller).
pub async fn keep(client: Client, stores: Stores, default: Option<DefaultConnection>) {
    stores.ready().await;
    loop {
        let swept = sweep(&client, &stores, &default).await;
        for (object, e) in &swept.failed {
            tracing::warn!(%object, error = %e, "updating its in-use finalizer failed; trying again");
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// What one sweep did: how many objects it changed, and the ones it could not (each on its
/// own: one object that cannot be patched stops nobody else's upkeep).
#[derive(Debug, Default)]
pub struct Swept {
    pub changed: usize,
    pub failed: Vec<(String, kube::Error)>,
}

impl Swept {
    fn count(&mut self, what: String, r: Result<bool, kube::Error>) {
        match r {
            Ok(changed) => self.changed += usize::from(changed),
            Err(e) => self.failed.push((what, e)),
        }
    }
}

/// One pass over every connection and credential Secret.
pub async fn sweep(client: &Client, stores: &Stores, default: &Option<DefaultConnection>) -> Swept {
    let used = connections_in_use(stores.every_policy.state(), default, |name, ns| {
        stores
            .cluster_connections
            .get(&kube::runtime::reflector::ObjectRef::new(name))
            .is_some_and(|c| super::dereference::admitted(stores, &c.spec, ns))
    });
    // The Secrets that connections still needed read: (namespace, name).
    let mut secrets: BTreeSet<(String, String)> = BTreeSet::new();
    let mut swept = Swept::default();
    for c in stores.connections.state() {
        let ns = c.namespace().unwrap_or_default();
        let id = ConnectionId::CmsConnection {
            namespace: ns.clone(),
            name: c.name_any(),
        };
        let wanted = used.contains(&id);
        if needs_its_secrets(wanted, c.meta()) {
            secrets.extend(
                c.spec
                    .secrets_read(&ns)
                    .all()
                    .map(|s| (s.namespace.clone(), s.name.clone())),
            );
        }
        let api: Api<CmsConnection> = Api::namespaced(client.clone(), &ns);
        let what = format!("CmsConnection {ns}/{}", c.name_any());
        swept.count(what, set_finalizer(&api, c.meta(), wanted).await);
    }
    for c in stores.cluster_connections.state() {
        let id = ConnectionId::ClusterCmsConnection { name: c.name_any() };
        let wanted = used.contains(&id);
        if let (true, Some(read)) = (needs_its_secrets(wanted, c.meta()), c.spec.secrets_read()) {
            secrets.extend(read.all().map(|s| (s.namespace.clone(), s.name.clone())));
        }
        let api: Api<ClusterCmsConnection> = Api::all(client.clone());
        let what = format!("ClusterCmsConnection {}", c.name_any());
        swept.count(what, set_finalizer(&api, c.meta(), wanted).await);
    }
    for s in stores.credentials.state() {
        let ns = s.namespace().unwrap_or_default();
        let wanted = secrets.contains(&(ns.clone(), s.name_any()));
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let what = format!("Secret {ns}/{}", s.name_any());
        swept.count(what, set_finalizer(&api, s.meta(), wanted).await);
    }
    swept
}

/// The connections policies need: the one each admitted policy uses, and the one each policy's
/// status says it holds keys or settings on (until they are taken back there). A policy whose
/// namespace a connection does not admit pins nothing of it; `cluster_admits(connection,
/// namespace)` says whether a ClusterCmsConnection (that exists) admits a namespace.
fn connections_in_use(
    policies: impl IntoIterator<Item = std::sync::Arc<ApiKeyPolicy>>,
    default: &Option<DefaultConnection>,
    cluster_admits: impl Fn(&str, &str) -> bool,
) -> BTreeSet<ConnectionId> {
    let mut used = BTreeSet::new();
    for p in policies {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        if let Some(id) = connection_of(&p, default) {
            let admitted = match &id {
                ConnectionId::CmsConnection { namespace, .. } => *namespace == ns,
                ConnectionId::ClusterCmsConnection { name } => cluster_admits(name, &ns),
                ConnectionId::Default => false,
            };
            if admitted {
                used.insert(id);
            }
        }
        if let Some(recorded) = p.status.as_ref().and_then(|s| s.connection.as_ref()) {
            used.insert(recorded.id());
        }
    }
    used
}

/// Whether a connection still matters to its Secrets: it is in use, or not being deleted (a
/// connection that stays may be used again).
fn needs_its_secrets(in_use: bool, meta: &kube::core::ObjectMeta) -> bool {
    in_use || meta.deletion_timestamp.is_none()
}

/// The finalizers `meta` should have when it is `wanted` (in use) or not; `None` when they
/// already are right. A finalizer is never added to an object being deleted.
fn finalizers_after(meta: &kube::core::ObjectMeta, wanted: bool) -> Option<Vec<String>> {
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == IN_USE);
    let deleting = meta.deletion_timestamp.is_some();
    match (wanted, has) {
        (true, false) if !deleting => {
            Some(finalizers.into_iter().chain([IN_USE.to_owned()]).collect())
        }
        (false, true) => Some(finalizers.into_iter().filter(|f| f != IN_USE).collect()),
        _ => None,
    }
}

/// Adds or takes off the in-use finalizer; true if it wrote. A finalizer is never added to an
/// object being deleted (the API server refuses it, and it would be too late).
async fn set_finalizer<K>(
    api: &Api<K>,
    meta: &kube::core::ObjectMeta,
    wanted: bool,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(next) = finalizers_after(meta, wanted) else {
        return Ok(false);
    };
    // The resourceVersion makes it a compare-and-swap: a concurrent change is a 409, and the
    // next sweep works from the newer object.
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": meta.resource_version}
    });
    let name = meta.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(object = %name, in_use = wanted, "in-use finalizer updated");
            Ok(true)
        }
        // Gone or changed meanwhile: the stores catch up and the next sweep decides again.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::KeysConnection;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::ObjectMeta;
    use std::sync::Arc;

    fn policy(ns: &str, connection_ref: serde_json::Value) -> ApiKeyPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": "p", "namespace": ns},
            "spec": {"connectionRef": connection_ref, "keys": []}
        }))
        .expect("a policy")
    }

    fn cms(ns: &str, name: &str) -> ConnectionId {
        ConnectionId::CmsConnection {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    fn cluster(name: &str) -> ConnectionId {
        ConnectionId::ClusterCmsConnection { name: name.into() }
    }

    #[test]
    fn a_connection_is_in_use_by_the_policies_it_admits_and_where_keys_are_left() {
        let own = policy("team", serde_json::json!({"name": "cms"}));
        let shared = policy(
            "team",
            serde_json::json!({"kind": "ClusterCmsConnection", "name": "shared"}),
        );
        let outsider = policy(
            "other",
            serde_json::json!({"kind": "ClusterCmsConnection", "name": "closed"}),
        );
        // Refused by "closed", but its status says it left keys on "old".
        let mut moved = outsider.clone();
        moved.status = Some(crate::policy::ApiKeyPolicyStatus {
            connection: KeysConnection::of(&cluster("old")),
            ..Default::default()
        });
        let admits = |name: &str, ns: &str| name == "shared" && ns == "team";
        let used = connections_in_use([own, shared, outsider, moved].map(Arc::new), &None, admits);
        assert_eq!(
            used,
            [cms("team", "cms"), cluster("shared"), cluster("old")].into()
        );
        assert!(connections_in_use([], &None, admits).is_empty());
    }

    #[test]
    fn the_default_connection_is_pinned_by_its_own_namespace_only() {
        let default = Some(DefaultConnection::Namespaced {
            namespace: "keyward-system".into(),
            name: "cms".into(),
        });
        let none = serde_json::Value::Null;
        let own = policy("keyward-system", none.clone());
        let other = policy("team", none);
        let used = connections_in_use([Arc::new(other.clone())], &default, |_, _| true);
        assert!(
            used.is_empty(),
            "a refused namespace pins nothing: {used:?}"
        );
        let used = connections_in_use([own, other].map(Arc::new), &default, |_, _| true);
        assert_eq!(used, [cms("keyward-system", "cms")].into());
    }

    fn meta(finalizers: &[&str], deleting: bool) -> ObjectMeta {
        ObjectMeta {
            finalizers: Some(finalizers.iter().map(|f| (*f).to_owned()).collect()),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    #[test]
    fn the_finalizer_follows_use_and_is_never_added_while_deleting() {
        let other = "example.com/other";
        assert_eq!(
            finalizers_after(&meta(&[other], false), true),
            Some(vec![other.to_owned(), IN_USE.to_owned()])
        );
        assert_eq!(finalizers_after(&meta(&[other], true), true), None);
        assert_eq!(finalizers_after(&meta(&[other, IN_USE], false), true), None);
        assert_eq!(
            finalizers_after(&meta(&[IN_USE, other], true), false),
            Some(vec![other.to_owned()])
        );
        assert_eq!(finalizers_after(&meta(&[other], false), false), None);
        assert_eq!(finalizers_after(&ObjectMeta::default(), false), None);

        assert!(needs_its_secrets(true, &meta(&[], true)));
        assert!(needs_its_secrets(false, &meta(&[], false)));
        assert!(!needs_its_secrets(false, &meta(&[], true)));
    }
}
