//! The Kubernetes Secret sink: Secrets written with server-side apply under one field manager.
//! The operator's are owned by their policy (so they are garbage-collected with it); the CLI's
//! (`apply --secrets-to kubernetes`) have no policy object to be owned by, and are known by
//! keyward's labels naming their policy. A Secret that exists and is not the writer's is
//! someone else's: it is neither read nor written (`SecretConflict`), unless the key says
//! `secret.adopt: true`; then it is replaced whole, keeping nothing of it.

use crate::engine::{SecretSink, SinkError};
use crate::model::desired::SecretTarget;
use crate::model::secret::{
    manifest, observed, value_in, ObservedSecret, SecretMaterial, LABEL_MANAGED_BY,
    LABEL_SECRET_POLICY, LABEL_SECRET_POLICY_UID, MANAGED_BY,
};
use crate::model::KeyValue;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};

/// kubectl's record of the last client-side apply (the whole object as applied).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub struct KubeSecrets {
    pub client: Client,
    /// Whose Secrets these are.
    pub owner: Owner,
    pub field_manager: String,
    /// The Secrets (namespace, name) that may be taken over (`secret.adopt: true`).
    pub adoptable: BTreeSet<(String, String)>,
    /// Adoptable Secrets found owned by something else: their next write replaces them whole.
    adopting: parking_lot::Mutex<BTreeSet<(String, String)>>,
    /// The operator's stores (the owned Secrets' resourceVersions) and its Secrets as last
    /// observed: an unchanged Secret is not read again.
    stores: Option<super::context::Stores>,
    observations: super::context::SecretObservations,
}

/// Who writes a sink's Secrets, and so which Secrets are its own.
pub enum Owner {
    /// The operator, for one policy: its Secrets carry the policy's ownerReference.
    Policy(OwnerReference),
    /// The CLI: its Secrets carry keyward's managed-by label and the label naming their policy
    /// (the same format the secrets directory's files have), and no ownerReference (one to an
    /// ApiKeyPolicy means an operator's). Keyed by Secret (namespace, name): the policy name.
    Cli(BTreeMap<(String, String), String>),
}

impl Owner {
    /// Whether `s` is this owner's Secret.
    pub fn owns(&self, s: &Secret) -> bool {
        match self {
            Owner::Policy(r) => owned_by(s, &r.uid) || retained_for(s, &r.uid),
            Owner::Cli(policies) => {
                let m = &s.metadata;
                let key = (
                    m.namespace.clone().unwrap_or_default(),
                    m.name.clone().unwrap_or_default(),
                );
                let label = |l: &str| m.labels.as_ref().and_then(|ls| ls.get(l));
                unowned(s)
                    && label(LABEL_MANAGED_BY).is_some_and(|v| v == MANAGED_BY)
                    && label(LABEL_SECRET_POLICY).is_some_and(|p| policies.get(&key) == Some(p))
                    && label(LABEL_SECRET_POLICY_UID).is_none()
            }
        }
    }

    /// The uid that keys the operator's observations (none for the CLI, which keeps none).
    fn uid(&self) -> &str {
        match self {
            Owner::Policy(r) => &r.uid,
            Owner::Cli(_) => "",
        }
    }
}

fn unowned(s: &Secret) -> bool {
    s.metadata
        .owner_references
        .as_ref()
        .is_none_or(|r| r.is_empty())
}

/// Whether `s` is a retained Secret (`secret.deletionPolicy: Retain`) of the policy with
/// `uid`: no ownerReference, keyward's label and the policy's UID. Anyone who may create
/// Secrets in the namespace could make one, as they could one with the policy's
/// ownerReference: so a retained Secret is always written whole (see `write`), and nothing of
/// what a planted one held survives keyward's first write.
fn retained_for(s: &Secret, uid: &str) -> bool {
    let label = |l: &str| s.metadata.labels.as_ref().and_then(|ls| ls.get(l));
    unowned(s)
        && label(LABEL_MANAGED_BY).is_some_and(|v| v == MANAGED_BY)
        && label(LABEL_SECRET_POLICY_UID).is_some_and(|v| v == uid)
}

/// The policy as the controlling owner of what it creates (Secrets, Roles, RoleBindings).
pub fn owner_ref(p: &crate::policy::ApiKeyPolicy) -> Option<OwnerReference> {
    use kube::Resource;
    let mut r = p.controller_owner_ref(&())?;
    r.block_owner_deletion = Some(true);
    Some(r)
}

/// Whether `obj` carries the ownerReference of the object with `uid` (keyward made it for that
/// policy): the one rule for Secrets, Roles and RoleBindings alike.
pub fn owned_by<K: kube::Resource>(obj: &K, uid: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid)
}

/// Whose a Secret at a policy's target is, for that policy.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// It made it: read and written.
    Own,
    /// Someone else's, and the policy says `adopt: true`: counts as absent, replaced at the
    /// next write.
    Adopt,
    /// Someone else's: left alone; why, for status.
    Conflict(String),
}

/// The ownership check: a Secret is the writer's when `owner` owns it; anything else is
/// adopted only where the policy says so.
pub fn claim(s: &Secret, owner: &Owner, adoptable: bool) -> Claim {
    if owner.owns(s) {
        return Claim::Own;
    }
    if adoptable {
        return Claim::Adopt;
    }
    let owner = match s.metadata.owner_references.as_deref() {
        Some([r, ..]) => format!("it is owned by {} {}", r.kind, r.name),
        _ => "keyward did not create it".to_owned(),
    };
    Claim::Conflict(format!("exists and is not this policy's ({owner}); it is left alone. Name another Secret, or set secret.adopt: true to replace it with the key"))
}

impl KubeSecrets {
    /// The Secret sink of a policy: its Secrets, owned by it (`None` without a UID).
    pub fn for_policy(
        p: &crate::policy::ApiKeyPolicy,
        ctx: &super::context::Context,
    ) -> Option<KubeSecrets> {
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        Some(KubeSecrets {
            client: ctx.client.clone(),
            owner: Owner::Policy(owner_ref(p)?),
            field_manager: ctx.config.field_manager.clone(),
            adoptable: p
                .spec
                .keys
                .iter()
                .filter(|k| k.secret.adopt)
                .map(|k| (namespace.clone(), k.secret.name.clone()))
                .collect(),
            adopting: Default::default(),
            stores: ctx.stores(),
            observations: ctx.secret_observations.clone(),
        })
    }

    /// The CLI's sink (`apply --secrets-to kubernetes`): the Secrets of `policies`, keyed by
    /// (namespace, name), under `field_manager`. It keeps no observations: each run reads the
    /// Secrets once.
    pub fn for_cli(
        client: Client,
        field_manager: &str,
        policies: BTreeMap<(String, String), String>,
        adoptable: BTreeSet<(String, String)>,
    ) -> KubeSecrets {
        KubeSecrets {
            client,
            owner: Owner::Cli(policies),
            field_manager: field_manager.to_owned(),
            adoptable,
            adopting: Default::default(),
            stores: None,
            observations: Default::default(),
        }
    }

    /// Whose observation of which Secret: only this policy's own reads count for it (another
    /// policy naming the same Secret must still meet the ownership check).
    fn observation_key(&self, target: &SecretTarget) -> (String, String, String, String) {
        (
            self.owner.uid().to_owned(),
            target.namespace.clone(),
            target.name.clone(),
            target.key_field.clone(),
        )
    }

    /// The Secret as last observed, if it has not changed since (same resourceVersion).
    fn unchanged(&self, target: &SecretTarget) -> Option<ObservedSecret> {
        let stores = self.stores.as_ref()?;
        let now = stores.owned_secrets.get(
            &kube::runtime::reflector::ObjectRef::new(&target.name).within(&target.namespace),
        )?;
        let rv = now.metadata.resource_version.as_deref()?;
        let seen = self.observations.lock();
        let (seen_rv, observed) = seen.get(&self.observation_key(target))?;
        (seen_rv == rv).then(|| observed.clone())
    }

    fn err(target: &SecretTarget, e: impl std::fmt::Display) -> SinkError {
        SinkError {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            detail: e.to_string(),
            conflict: false,
        }
    }

    async fn get(&self, target: &SecretTarget) -> Result<Option<Secret>, SinkError> {
        Api::<Secret>::namespaced(self.client.clone(), &target.namespace)
            .get_opt(&target.name)
            .await
            .map_err(|e| Self::err(target, e))
    }

    /// The resourceVersion to write `current` at, once kubectl's
    /// `last-applied-configuration` annotation is gone from it: a Secret that `kubectl apply`
    /// made from a secrets directory's file keeps the whole file, value included, in it, and a
    /// server-side apply would leave it there after the value is rotated out.
    async fn without_last_applied(
        &self,
        api: &Api<Secret>,
        current: Secret,
    ) -> Result<Option<String>, SinkError> {
        let m = current.metadata;
        let name = m.name.clone().unwrap_or_default();
        let has = m
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LAST_APPLIED));
        if !has {
            return Ok(m.resource_version);
        }
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": m.resource_version,
            "annotations": {LAST_APPLIED: null},
        }});
        let pp = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..Default::default()
        };
        let target = |e: kube::Error| SinkError {
            namespace: m.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            detail: e.to_string(),
            conflict: false,
        };
        let patched = api
            .patch(&name, &pp, &Patch::Merge(&patch))
            .await
            .map_err(target)?;
        Ok(patched.metadata.resource_version)
    }

    /// The policy's own Secret at `target`, if there is one. Someone else's is a conflict, or,
    /// if adoptable, counts as absent (and is replaced at the next write).
    async fn own(&self, target: &SecretTarget) -> Result<Option<Secret>, SinkError> {
        let Some(s) = self.get(target).await? else {
            return Ok(None);
        };
        let at = (target.namespace.clone(), target.name.clone());
        match claim(&s, &self.owner, self.adoptable.contains(&at)) {
            Claim::Own => Ok(Some(s)),
            Claim::Adopt => {
                self.adopting.lock().insert(at);
                Ok(None)
            }
            Claim::Conflict(why) => Err(SinkError {
                conflict: true,
                ..Self::err(target, why)
            }),
        }
    }
}

#[async_trait]
impl SecretSink for KubeSecrets {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        if let Some(observed) = self.unchanged(target) {
            return Ok(Some(observed));
        }
        let Some(s) = self.own(target).await? else {
            self.observations
                .lock()
                .remove(&self.observation_key(target));
            return Ok(None);
        };
        let observed = observed(&s, &target.key_field);
        if let Some(rv) = s.metadata.resource_version.clone() {
            self.observations
                .lock()
                .insert(self.observation_key(target), (rv, observed.clone()));
        }
        Ok(Some(observed))
    }

    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        Ok(self
            .own(target)
            .await?
            .and_then(|s| value_in(&s, &target.key_field)))
    }

    async fn write(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        self.observations
            .lock()
            .remove(&self.observation_key(&m.target));
        let mut secret = manifest(m);
        if let Owner::Policy(r) = &self.owner {
            if !m.target.retain {
                secret.metadata.owner_references = Some(vec![r.clone()]);
            }
        }
        let api = Api::<Secret>::namespaced(self.client.clone(), &m.target.namespace);
        let at = (m.target.namespace.clone(), m.target.name.clone());
        // A retained Secret is known by labels anyone could set: it is written whole, as an
        // adopted one (which also drops the ownerReference of a Secret that was not retained).
        let whole = m.target.retain && matches!(self.owner, Owner::Policy(_));
        if whole && self.own(&m.target).await?.is_some() {
            self.adopting.lock().insert(at.clone());
        }
        if self.adopting.lock().contains(&at) {
            // Adopted: replaced whole, so that none of its former fields stays readable.
            if let Some(old) = self.get(&m.target).await? {
                secret.metadata.resource_version = old.metadata.resource_version;
                let pp = PostParams {
                    field_manager: Some(self.field_manager.clone()),
                    ..Default::default()
                };
                api.replace(&m.target.name, &pp, &secret)
                    .await
                    .map_err(|e| Self::err(&m.target, e))?;
                self.adopting.lock().remove(&at);
                if !whole {
                    tracing::info!(secret = %m.target, "adopted");
                }
                return Ok(true);
            }
        }
        // The ownership check and the write are one step: a Secret that is not there is
        // created (409 if someone made it meanwhile), and one that is the policy's is applied
        // only at the version that was checked (409 if it changed meanwhile). Before, a Secret
        // created between the check and a forced apply was taken over, and two policies naming
        // one new Secret stripped each other's owner reference.
        match self.own(&m.target).await? {
            None => {
                let pp = PostParams {
                    field_manager: Some(self.field_manager.clone()),
                    ..Default::default()
                };
                match api.create(&pp, &secret).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Err(SinkError {
                        conflict: true,
                        ..Self::err(
                            &m.target,
                            "was created by someone else just now; it is left alone",
                        )
                    }),
                    Err(e) => Err(Self::err(&m.target, e)),
                }
            }
            Some(current) => {
                secret.metadata.resource_version = self.without_last_applied(&api, current).await?;
                let pp = PatchParams::apply(&self.field_manager).force();
                api.patch(&m.target.name, &pp, &Patch::Apply(&secret))
                    .await
                    .map_err(|e| Self::err(&m.target, e))?;
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ApiKeyPolicy;

    fn policy(uid: Option<&str>) -> ApiKeyPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"keys": []}
        }))
        .expect("a policy")
    }

    fn secret(owners: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.owner_references = Some(
            owners
                .iter()
                .map(|(kind, uid)| OwnerReference {
                    kind: (*kind).into(),
                    name: format!("{kind}-name"),
                    uid: (*uid).into(),
                    ..Default::default()
                })
                .collect(),
        );
        s
    }

    fn by_policy(uid: &str) -> Owner {
        Owner::Policy(OwnerReference {
            uid: uid.into(),
            ..Default::default()
        })
    }

    #[test]
    fn the_cli_owns_secrets_labelled_for_their_policy_that_no_policy_object_owns() {
        let cli = Owner::Cli(BTreeMap::from([(
            ("shop".into(), "web-key".into()),
            "web".into(),
        )]));
        let labelled = |policy: &str| {
            let mut s = Secret::default();
            s.metadata.namespace = Some("shop".into());
            s.metadata.name = Some("web-key".into());
            s.metadata.labels = Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_owned(), "keyward".to_owned()),
                (LABEL_SECRET_POLICY.to_owned(), policy.to_owned()),
            ]));
            s
        };
        assert!(cli.owns(&labelled("web")));
        assert!(!cli.owns(&labelled("api")), "another policy's");
        let mut elsewhere = labelled("web");
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!cli.owns(&elsewhere), "a Secret the run does not write");
        let mut operators = labelled("web");
        operators.metadata.owner_references =
            secret(&[("ApiKeyPolicy", "u1")]).metadata.owner_references;
        assert!(!cli.owns(&operators), "an operator's Secret");
        let mut unlabelled = labelled("web");
        unlabelled.metadata.labels = None;
        assert!(!cli.owns(&unlabelled));
        assert!(matches!(claim(&operators, &cli, false), Claim::Conflict(_)));
        assert_eq!(claim(&operators, &cli, true), Claim::Adopt);
    }

    #[test]
    fn the_policy_owns_what_it_made_as_controller_and_nothing_without_a_uid() {
        let r = owner_ref(&policy(Some("u1"))).expect("a reference");
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
            ("ApiKeyPolicy", "p", "u1")
        );
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert_eq!(owner_ref(&policy(None)), None);
    }

    #[test]
    fn a_secret_is_claimed_by_its_owners_uid_only() {
        let ours = secret(&[("Deployment", "d1"), ("ApiKeyPolicy", "u1")]);
        assert!(owned_by(&ours, "u1"));
        assert!(!owned_by(&ours, "u2"));
        assert!(!owned_by(&Secret::default(), "u1"));
        let (u1, u2) = (by_policy("u1"), by_policy("u2"));
        assert_eq!(claim(&ours, &u1, false), Claim::Own);
        assert_eq!(claim(&ours, &u1, true), Claim::Own);
        assert_eq!(claim(&ours, &u2, true), Claim::Adopt);
        let Claim::Conflict(why) = claim(&ours, &u2, false) else {
            panic!("someone else's");
        };
        assert!(why.contains("owned by Deployment Deployment-name"), "{why}");
        let Claim::Conflict(why) = claim(&Secret::default(), &u1, false) else {
            panic!("someone else's");
        };
        assert!(why.contains("keyward did not create it"), "{why}");
    }
}
