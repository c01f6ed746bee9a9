//! In-use finalizers. Deleting a namespace deletes its policies, connections and credential
//! Secrets at once; without protection the connection is gone before a policy's finalizer can
//! revoke its keys, and the namespace stays `Terminating` for ever. So a `CmsConnection` or
//! `ClusterCmsConnection` carries `keyward.dev/in-use` while any policy (one being deleted
//! too) uses it, and a credential or CA Secret while a connection that still matters reads it.
//! The finalizer comes off when the last user is gone, and the deletion completes.
//!
//! One sweep over the reflector stores decides it for every object: no API reads, and a write
//! only where the finalizer has to be added or taken off.

use super::context::Stores;
use super::dereference::connection_of;
use super::DefaultConnection;
use crate::model::desired::ConnectionId;
use crate::policy::{ClusterCmsConnection, CmsConnection, ConnectionTls, SecretKeyRef};
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
    let used = connections_in_use(stores, default);
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
        if wanted || c.meta().deletion_timestamp.is_none() {
            // A CmsConnection's Secrets are always in its own namespace.
            secrets.extend(read_secrets(
                &c.spec.credentials_secret_ref,
                c.spec.tls.as_ref(),
                &ns,
                true,
            ));
        }
        let api: Api<CmsConnection> = Api::namespaced(client.clone(), &ns);
        let what = format!("CmsConnection {ns}/{}", c.name_any());
        swept.count(what, set_finalizer(&api, c.meta(), wanted).await);
    }
    for c in stores.cluster_connections.state() {
        let id = ConnectionId::ClusterCmsConnection { name: c.name_any() };
        let wanted = used.contains(&id);
        let cred = &c.spec.credentials_secret_ref;
        if let (true, Some(ns)) = (
            wanted || c.meta().deletion_timestamp.is_none(),
            cred.namespace.as_deref(),
        ) {
            secrets.extend(read_secrets(cred, c.spec.tls.as_ref(), ns, false));
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
/// namespace a connection does not admit pins nothing of it.
fn connections_in_use(
    stores: &Stores,
    default: &Option<DefaultConnection>,
) -> BTreeSet<ConnectionId> {
    let mut used = BTreeSet::new();
    for p in stores.every_policy.state() {
        let ns = p.namespace().unwrap_or_else(|| "default".into());
        if let Some(id) = connection_of(&p, default) {
            let admitted = match &id {
                ConnectionId::CmsConnection { namespace, .. } => *namespace == ns,
                ConnectionId::ClusterCmsConnection { name } => stores
                    .cluster_connections
                    .get(&kube::runtime::reflector::ObjectRef::new(name))
                    .is_some_and(|c| super::dereference::admitted(stores, &c.spec, &ns)),
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

/// The credential and CA Secrets of a connection whose Secrets default to namespace `ns`
/// (`own_namespace_only`: a CmsConnection, whose refs cannot name another namespace).
fn read_secrets(
    cred: &SecretKeyRef,
    tls: Option<&ConnectionTls>,
    ns: &str,
    own_namespace_only: bool,
) -> Vec<(String, String)> {
    let at = |other: Option<&String>| match (own_namespace_only, other) {
        (false, Some(other)) => other.clone(),
        _ => ns.to_owned(),
    };
    let mut out = vec![(at(cred.namespace.as_ref()), cred.name.clone())];
    if let Some(ca) = tls.and_then(|t| t.ca_secret_ref.as_ref()) {
        out.push((at(ca.namespace.as_ref()), ca.name.clone()));
    }
    out
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
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == IN_USE);
    let deleting = meta.deletion_timestamp.is_some();
    let next: Vec<String> = match (wanted, has) {
        (true, false) if !deleting => finalizers.into_iter().chain([IN_USE.to_owned()]).collect(),
        (false, true) => finalizers.into_iter().filter(|f| f != IN_USE).collect(),
        _ => return Ok(false),
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
