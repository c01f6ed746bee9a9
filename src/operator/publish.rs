//! Pipeline step 6, publish: what the workloads need besides the Secret itself. Readers get a
//! Role and RoleBinding to `get` exactly their Secret (removed readers lose it); restart targets
//! roll once per Secret content, through a pod-template annotation with the content hash.

use super::context::Context;
use super::events::{record, EventReason};
use super::secrets::owned_by;
use crate::model::desired::DesiredKey;
use crate::model::secret::ANN_CONTENT_HASH;
use crate::policy::{ApiKeyPolicy, WorkloadKind};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::collections::BTreeSet;

/// Step 6: readers' RBAC and restarts.
pub async fn publish_to_workloads(
    p: &ApiKeyPolicy,
    keys: &[DesiredKey],
    ctx: &Context,
) -> Result<(), kube::Error> {
    reconcile_readers(p, keys, ctx).await?;
    restart_workloads(p, keys, ctx).await
}

/// A Role and RoleBinding per Secret that has readers: `get` on exactly that Secret. What exists
/// is read from the controller's stores, so a drift check makes no API call here.
async fn reconcile_readers(
    p: &ApiKeyPolicy,
    keys: &[DesiredKey],
    ctx: &Context,
) -> Result<(), kube::Error> {
    let ns = p.namespace().unwrap_or_default();
    let stores = ctx.stores();
    let roles = Kept {
        api: Api::namespaced(ctx.client.clone(), &ns),
        store: stores.as_ref().map(|s| s.reader_roles.clone()),
        ns: ns.clone(),
    };
    let bindings = Kept {
        api: Api::namespaced(ctx.client.clone(), &ns),
        store: stores.as_ref().map(|s| s.reader_bindings.clone()),
        ns: ns.clone(),
    };
    let owner = super::secrets::owner_ref(p);
    // Without a uid (never so for a stored policy) nothing counts as the policy's.
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let label = ("keyward.dev/policy".to_owned(), p.name_any());
    let mut wanted = BTreeSet::new();
    for (decl, k) in p.spec.keys.iter().zip(keys) {
        let Some(readers) = decl
            .readers
            .as_ref()
            .filter(|r| !r.service_accounts.is_empty())
        else {
            continue;
        };
        let name = format!("keyward-read-{}", k.secret.name);
        wanted.insert(name.clone());
        let meta = json!({"name": name, "namespace": ns, "labels": {label.0.clone(): label.1.clone()}, "ownerReferences": [owner]});
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [k.secret.name], "verbs": ["get"]}]});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": readers.service_accounts.iter().map(|sa| json!({"kind": "ServiceAccount", "name": sa, "namespace": ns})).collect::<Vec<_>>()});
        let manager = &ctx.config.field_manager;
        // Same rule as for Secrets: never take over a Role or RoleBinding that is not ours.
        let ours = roles.write(&name, &role, "rules", &uid, manager).await?
            && bindings
                .write(&name, &binding, "subjects", &uid, manager)
                .await?;
        if !ours {
            let note = format!("Role or RoleBinding {name} exists and is not this policy's: it is left alone, and the readers of Secret {} are not granted access", k.secret.name);
            tracing::warn!(policy = %p.name_any(), "{note}");
            record(
                ctx,
                p,
                EventType::Warning,
                EventReason::ReaderConflict.as_str(),
                &note,
            )
            .await;
        }
    }
    // Readers removed from the spec lose access: each binding (what grants it) first, then
    // each Role; only objects this policy owns, and only that very object (its uid). A delete
    // that fails fails the reconcile, so the status never says Ready while a former reader
    // still has access.
    for (name, object) in bindings.labelled(&label, &uid).await? {
        if !wanted.contains(&name) {
            bindings.delete(&name, &object).await?;
        }
    }
    for (name, object) in roles.labelled(&label, &uid).await? {
        if !wanted.contains(&name) {
            roles.delete(&name, &object).await?;
        }
    }
    Ok(())
}

/// A kind of object keyward makes for readers: written through `api`, read from `store` (the
/// controller's) when there is one.
struct Kept<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    store: Option<Store<K>>,
    ns: String,
}

impl<K> Kept<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    async fn get(&self, name: &str) -> Result<Option<K>, kube::Error> {
        match &self.store {
            Some(s) => Ok(s
                .get(&ObjectRef::new(name).within(&self.ns))
                .map(|o| (*o).clone())),
            None => self.api.get_opt(name).await,
        }
    }

    /// Makes `desired` so, unless a `name` that is not the policy's (`uid`) holds the name:
    /// then `false` and nothing written. A new one is created (never applied over something
    /// the store did not show); `field` is what can drift.
    async fn write(
        &self,
        name: &str,
        desired: &serde_json::Value,
        field: &str,
        uid: &str,
        manager: &str,
    ) -> Result<bool, kube::Error> {
        let current = match self.get(name).await? {
            Some(c) => c,
            None => {
                let obj: K =
                    serde_json::from_value(desired.clone()).map_err(kube::Error::SerdeError)?;
                let pp = PostParams {
                    field_manager: Some(manager.to_owned()),
                    ..Default::default()
                };
                match self.api.create(&pp, &obj).await {
                    Ok(_) => return Ok(true),
                    // There after all (not ours, or not in the store yet): look at it.
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        match self.api.get_opt(name).await? {
                            Some(c) => c,
                            None => return Ok(true),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if !owned_by(&current, uid) {
            return Ok(false);
        }
        let have = serde_json::to_value(&current).unwrap_or_default();
        if have.get(field) != desired.get(field) {
            let pp = PatchParams::apply(manager).force();
            self.api.patch(name, &pp, &Patch::Apply(desired)).await?;
        }
        Ok(true)
    }

    /// The policy's objects (`label`) that it (`uid`) owns: (name, the object's own uid).
    async fn labelled(
        &self,
        label: &(String, String),
        uid: &str,
    ) -> Result<Vec<(String, String)>, kube::Error> {
        let Some(store) = &self.store else {
            let lp = ListParams::default().labels(&format!("{}={}", label.0, label.1));
            let list = self.api.list_metadata(&lp).await?;
            return Ok(list
                .items
                .iter()
                .filter(|o| owned_by(*o, uid))
                .map(|o| (o.name_any(), o.uid().unwrap_or_default()))
                .collect());
        };
        Ok(store
            .state()
            .iter()
            .filter(|o| {
                o.namespace().as_deref() == Some(self.ns.as_str())
                    && o.labels().get(&label.0) == Some(&label.1)
                    && owned_by(o.as_ref(), uid)
            })
            .map(|o| (o.name_any(), o.uid().unwrap_or_default()))
            .collect())
    }

    /// Deletes `name` if it is still the object `uid` (a precondition: one made anew under the
    /// same name meanwhile is not ours to delete); gone already counts as done.
    async fn delete(&self, name: &str, uid: &str) -> Result<(), kube::Error> {
        let dp = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Rolls each restart target once per Secret content: a pod-template annotation carries the
/// Secret's content hash and is only patched when it differs. The Secret's hash comes from the
/// store of owned Secrets, and a workload already seen with that hash is not read again, so a
/// drift check makes no API call here.
async fn restart_workloads(
    p: &ApiKeyPolicy,
    keys: &[DesiredKey],
    ctx: &Context,
) -> Result<(), kube::Error> {
    let ns = p.namespace().unwrap_or_default();
    let uid = p.uid().unwrap_or_default();
    for (decl, k) in p.spec.keys.iter().zip(keys) {
        if decl.restart_targets.is_empty() {
            continue;
        }
        let Some(hash) = content_hash(ctx, &ns, &k.secret.name).await? else {
            continue;
        };
        for t in &decl.restart_targets {
            let seen = (
                uid.clone(),
                format!("{:?}/{}", t.kind, t.name),
                k.secret.name.clone(),
            );
            if ctx.restarts.lock().get(&seen) == Some(&hash) {
                continue;
            }
            if roll(ctx, p, &ns, t, &k.secret.name, &hash).await? {
                ctx.restarts.lock().insert(seen, hash.clone());
            }
        }
    }
    Ok(())
}

/// The content hash keyward wrote on Secret `ns/name`: from the store of owned Secrets (a GET
/// only without one).
async fn content_hash(ctx: &Context, ns: &str, name: &str) -> Result<Option<String>, kube::Error> {
    let annotations = match ctx.stores() {
        Some(s) => s
            .owned_secrets
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|o| o.metadata.annotations.clone()),
        None => Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .get_metadata_opt(name)
            .await?
            .and_then(|o| o.metadata.annotations),
    };
    Ok(annotations.and_then(|a| a.get(ANN_CONTENT_HASH).cloned()))
}

/// Puts `hash` on the workload's pod template if it is not there (which rolls it); whether the
/// workload exists.
async fn roll(
    ctx: &Context,
    p: &ApiKeyPolicy,
    ns: &str,
    t: &crate::policy::RestartTarget,
    secret: &str,
    hash: &str,
) -> Result<bool, kube::Error> {
    let (group_version, plural) = match t.kind {
        WorkloadKind::Deployment => ("apps/v1", "deployments"),
        WorkloadKind::StatefulSet => ("apps/v1", "statefulsets"),
        WorkloadKind::DaemonSet => ("apps/v1", "daemonsets"),
    };
    let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", &format!("{:?}", t.kind));
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let Some(w) = api.get_opt(&t.name).await? else {
        tracing::warn!(workload = %t.name, kind = ?t.kind, %group_version, "restart target not found");
        return Ok(false);
    };
    let ann = restart_annotation(secret);
    let current = w
        .data
        .pointer(&format!(
            "/spec/template/metadata/annotations/{}",
            ann.replace('/', "~1")
        ))
        .and_then(|v| v.as_str());
    if current != Some(hash) {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {ann: hash}}}}});
        api.patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let note = format!(
            "{:?} {} rolled for the new value of Secret {secret}",
            t.kind, t.name
        );
        record(
            ctx,
            p,
            EventType::Normal,
            EventReason::Restarted.as_str(),
            &note,
        )
        .await;
    }
    Ok(true)
}

/// The pod-template annotation that rolls a workload when Secret `secret` changes:
/// `keyward.dev/secret-<secret>`. Kubernetes allows 63 characters after the prefix; a longer
/// name keeps its first part and ends in a hash of the whole, so it still names one Secret.
pub fn restart_annotation(secret: &str) -> String {
    const MAX: usize = 63;
    let name = format!("secret-{secret}");
    if name.len() <= MAX {
        return format!("keyward.dev/{name}");
    }
    let hash = crate::model::short_hash(secret.as_bytes(), 4);
    // Secret names are ASCII (DNS subdomains): cutting at a byte is cutting at a character.
    let head = &name[..MAX - hash.len() - 1];
    format!("keyward.dev/{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::restart_annotation;

    #[test]
    fn restart_annotations_fit_kubernetes_rules_and_stay_distinct() {
        assert_eq!(restart_annotation("web"), "keyward.dev/secret-web");
        let long_a = format!("{}-a", "x".repeat(200));
        let long_b = format!("{}-b", "x".repeat(200));
        for s in [&long_a, &long_b] {
            let a = restart_annotation(s);
            let name = a.strip_prefix("keyward.dev/").unwrap();
            assert_eq!(name.len(), 63, "{a}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)));
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()));
        }
        assert_ne!(restart_annotation(&long_a), restart_annotation(&long_b));
        let exactly = "y".repeat(56);
        assert_eq!(
            restart_annotation(&exactly),
            format!("keyward.dev/secret-{exactly}")
        );
    }
}
