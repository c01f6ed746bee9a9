//! Pipeline step 6, publish: what the workloads need besides the Secret itself. Readers get a
//! Role and RoleBinding to `get` exactly their Secret (removed readers lose it); restart targets
//! roll once per Secret content, through a pod-template annotation with the content hash.

use super::context::Context;
use super::report::publish;
use super::secrets::owned_by;
use crate::engine::ANN_CONTENT_HASH;
use crate::model::desired::DesiredKey;
use crate::policy::{ApiKeyPolicy, WorkloadKind};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
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

/// A Role and RoleBinding per Secret that has readers: `get` on exactly that Secret.
async fn reconcile_readers(
    p: &ApiKeyPolicy,
    keys: &[DesiredKey],
    ctx: &Context,
) -> Result<(), kube::Error> {
    let ns = p.namespace().unwrap_or_default();
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), &ns);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), &ns);
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
        let pp = PatchParams::apply(&ctx.config.field_manager).force();
        let (old_role, old_binding) = (roles.get_opt(&name).await?, bindings.get_opt(&name).await?);
        // Same rule as for Secrets: never take over a Role or RoleBinding that is not ours.
        let foreign = old_role.as_ref().is_some_and(|r| !owned_by(r, &uid))
            || old_binding.as_ref().is_some_and(|b| !owned_by(b, &uid));
        if foreign {
            let note = format!("Role or RoleBinding {name} exists and is not this policy's: it is left alone, and the readers of Secret {} are not granted access", k.secret.name);
            tracing::warn!(policy = %p.name_any(), "{note}");
            publish(ctx, p, EventType::Warning, "ReaderConflict", &note).await;
            continue;
        }
        let current_role = old_role.map(|r| serde_json::to_value(r.rules).unwrap_or_default());
        if current_role.as_ref() != Some(&role["rules"]) {
            roles.patch(&name, &pp, &Patch::Apply(&role)).await?;
        }
        let current = old_binding.map(|b| serde_json::to_value(b.subjects).unwrap_or_default());
        if current.as_ref() != Some(&binding["subjects"]) {
            bindings.patch(&name, &pp, &Patch::Apply(&binding)).await?;
        }
    }
    // Readers removed from the spec lose access.
    let lp = ListParams::default().labels(&format!("{}={}", label.0, label.1));
    for r in roles.list_metadata(&lp).await?.items {
        let name = r.name_any();
        if !wanted.contains(&name) && owned_by(&r, &uid) {
            let _ = roles.delete(&name, &Default::default()).await;
            let _ = bindings.delete(&name, &Default::default()).await;
        }
    }
    Ok(())
}

/// Rolls each restart target once per Secret content: a pod-template annotation carries the
/// Secret's content hash and is only patched when it differs.
async fn restart_workloads(
    p: &ApiKeyPolicy,
    keys: &[DesiredKey],
    ctx: &Context,
) -> Result<(), kube::Error> {
    let ns = p.namespace().unwrap_or_default();
    for (decl, k) in p.spec.keys.iter().zip(keys) {
        if decl.restart_targets.is_empty() {
            continue;
        }
        let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_metadata_opt(&k.secret.name)
            .await?
        else {
            continue;
        };
        let Some(hash) = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_CONTENT_HASH))
            .cloned()
        else {
            continue;
        };
        let ann = restart_annotation(&k.secret.name);
        for t in &decl.restart_targets {
            let (group_version, plural) = match t.kind {
                WorkloadKind::Deployment => ("apps/v1", "deployments"),
                WorkloadKind::StatefulSet => ("apps/v1", "statefulsets"),
                WorkloadKind::DaemonSet => ("apps/v1", "daemonsets"),
            };
            let gvk = kube::api::GroupVersionKind::gvk("apps", "v1", &format!("{:?}", t.kind));
            let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), &ns, &ar);
            let Some(w) = api.get_opt(&t.name).await? else {
                tracing::warn!(workload = %t.name, kind = ?t.kind, %group_version, "restart target not found");
                continue;
            };
            let current = w
                .data
                .pointer(&format!(
                    "/spec/template/metadata/annotations/{}",
                    ann.replace('/', "~1")
                ))
                .and_then(|v| v.as_str());
            if current != Some(hash.as_str()) {
                let patch = json!({"spec": {"template": {"metadata": {"annotations": {ann.clone(): hash}}}}});
                api.patch(&t.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                publish(
                    ctx,
                    p,
                    EventType::Normal,
                    "Restarted",
                    &format!(
                        "{:?} {} rolled for the new value of Secret {}",
                        t.kind, t.name, k.secret.name
                    ),
                )
                .await;
            }
        }
    }
    Ok(())
}

/// The pod-template annotation that rolls a workload when Secret `secret` changes:
/// `keyward.dev/secret-<secret>`. Kubernetes allows 63 characters after the prefix; a longer
/// name keeps its first part and ends in a hash of the whole, so it still names one Secret.
pub fn restart_annotation(secret: &str) -> String {
    use sha2::Digest;
    const MAX: usize = 63;
    let name = format!("secret-{secret}");
    if name.len() <= MAX {
        return format!("keyward.dev/{name}");
    }
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
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
