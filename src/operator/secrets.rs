//! The operator's Secret sink: Kubernetes Secrets written with server-side apply under one field
//! manager, owned by their policy (so they are garbage-collected with it).

use crate::engine::secrets_dir::{manifest, string_data};
use crate::engine::{observed_from, SecretMaterial, SecretSink, SinkError};
use crate::model::desired::SecretTarget;
use crate::model::KeyValue;
use crate::plan::ObservedSecret;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

pub struct KubeSecrets {
    pub client: Client,
    /// The policy that owns the Secrets.
    pub owner: OwnerReference,
    pub field_manager: String,
}

/// The policy as the controlling owner of what it creates (Secrets, Roles, RoleBindings).
pub fn owner_ref(p: &crate::policy::ApiKeyPolicy) -> Option<OwnerReference> {
    use kube::Resource;
    let mut r = p.controller_owner_ref(&())?;
    r.block_owner_deletion = Some(true);
    Some(r)
}

impl KubeSecrets {
    /// The Secret sink of a policy: its Secrets, owned by it (`None` without a UID).
    pub fn for_policy(
        p: &crate::policy::ApiKeyPolicy,
        ctx: &super::context::Context,
    ) -> Option<KubeSecrets> {
        Some(KubeSecrets {
            client: ctx.client.clone(),
            owner: owner_ref(p)?,
            field_manager: ctx.config.field_manager.clone(),
        })
    }

    fn err(target: &SecretTarget, e: impl std::fmt::Display) -> SinkError {
        SinkError {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            detail: e.to_string(),
        }
    }

    async fn get(&self, target: &SecretTarget) -> Result<Option<Secret>, SinkError> {
        Api::<Secret>::namespaced(self.client.clone(), &target.namespace)
            .get_opt(&target.name)
            .await
            .map_err(|e| Self::err(target, e))
    }
}

#[async_trait]
impl SecretSink for KubeSecrets {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        Ok(self.get(target).await?.map(|s| {
            let ann = s.metadata.annotations.clone().unwrap_or_default();
            observed_from(&ann, &string_data(&s), &target.key_field)
        }))
    }

    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        Ok(self
            .get(target)
            .await?
            .and_then(|s| string_data(&s).remove(&target.key_field))
            .filter(|v| !v.is_empty())
            .map(KeyValue::new))
    }

    async fn write(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        let mut secret = manifest(m);
        secret.metadata.owner_references = Some(vec![self.owner.clone()]);
        let api = Api::<Secret>::namespaced(self.client.clone(), &m.target.namespace);
        let pp = PatchParams::apply(&self.field_manager).force();
        api.patch(&m.target.name, &pp, &Patch::Apply(&secret))
            .await
            .map_err(|e| Self::err(&m.target, e))?;
        Ok(true)
    }
}
