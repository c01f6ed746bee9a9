//! One reconcile of an `ApiKeyPolicy`, as a pipeline: validate -> resolve the connection ->
//! observe (CMS keys, Secrets) -> plan -> apply (the shared engine) -> RBAC and restarts ->
//! status and events. Nothing is written when nothing changed.

use super::secrets::KubeSecrets;
use super::status::{self, condition, DRIFTED, EXPIRING, READY, SYNCED};
use super::{Context, DefaultConnection};
use crate::engine::{
    observe_secrets, rotation_due, Engine, ANN_CONTENT_HASH, ANN_FINGERPRINT, ANN_KEY_ID,
};
use crate::plan::desired::{
    ConnectionId, DesiredKey, DesiredState, PolicyId, PolicySettings, LABEL_POLICY,
};
use crate::plan::{diff, render_text, Action as PlanAction};
use crate::policy::validate::{admits, fit_to_provider, policy_keys, Severity};
use crate::policy::{
    ApiKeyPolicy, ApiKeyPolicyStatus, ClusterCmsConnection, CmsConnection, ConnectionKind,
    DeletionPolicy, KeyStatus, ManagementPolicy, ProviderKind, WorkloadKind,
};
use crate::providers::{express_state, CmsProvider, ExpressError, LiveKey, ProviderError};
use chrono::Utc;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub const FINALIZER: &str = "keyward.dev/revoke-keys";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("CMS: {0}")]
    Provider(#[from] ProviderError),
    #[error("apply stopped: {0}")]
    Apply(String),
    #[error("{0}")]
    Sink(#[from] crate::engine::SinkError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("cannot revoke the keys: {0}")]
    Cleanup(String),
}

impl ReconcileError {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
            Self::Provider(e) if e.is_transient() => "cms_unavailable",
            Self::Provider(_) => "cms_refused",
            Self::Apply(_) => "apply",
            Self::Sink(_) => "secret",
            Self::Finalizer(_) => "finalizer",
            Self::Cleanup(_) => "cleanup",
        }
    }
}

/// A resolved connection.
pub struct Conn {
    id: ConnectionId,
    provider: ProviderKind,
    endpoint: String,
    token: String,
}

pub async fn reconcile(
    policy: Arc<ApiKeyPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = policy.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ApiKeyPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let started = std::time::Instant::now();
    let result = finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Event::Apply(p) => apply(p, &ctx).await,
            Event::Cleanup(p) => cleanup(p, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    });
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&super::metrics::ResultLabels {
            result: label.into(),
        })
        .inc();
    result
}

fn owner_ref(p: &ApiKeyPolicy) -> Option<OwnerReference> {
    let mut r = p.controller_owner_ref(&())?;
    r.block_owner_deletion = Some(true);
    Some(r)
}

fn policy_id(p: &ApiKeyPolicy) -> PolicyId {
    PolicyId {
        namespace: p.namespace().unwrap_or_else(|| "default".into()),
        name: p.name_any(),
        uid: p.uid(),
    }
}

/// The connection a policy asks for, or why it may not have it.
async fn resolve_connection(
    p: &ApiKeyPolicy,
    ctx: &Context,
) -> Result<Result<Conn, (String, String)>, ReconcileError> {
    let ns = p.namespace().unwrap_or_else(|| "default".into());
    let refused = |reason: &str, message: String| Ok(Err((reason.to_owned(), message)));
    let (kind, conn_ns, name) = match (&p.spec.connection_ref, &ctx.config.default_connection) {
        (Some(r), _) => (r.kind, ns.clone(), r.name.clone()),
        (None, Some(DefaultConnection::Namespaced { namespace, name })) => (
            ConnectionKind::CmsConnection,
            namespace.clone(),
            name.clone(),
        ),
        (None, Some(DefaultConnection::Cluster { name })) => (
            ConnectionKind::ClusterCmsConnection,
            String::new(),
            name.clone(),
        ),
        (None, None) => {
            return refused(
                "NoConnection",
                "spec.connectionRef is not set and the operator has no --default-connection".into(),
            )
        }
    };
    let (spec_endpoint, provider, secret_ns, secret_name, secret_key, id) = match kind {
        ConnectionKind::CmsConnection => {
            let Some(c) = Api::<CmsConnection>::namespaced(ctx.client.clone(), &conn_ns)
                .get_opt(&name)
                .await?
            else {
                return refused(
                    "ConnectionNotFound",
                    format!("CmsConnection {conn_ns}/{name} does not exist"),
                );
            };
            let s = c.spec;
            (
                s.endpoint,
                s.provider,
                conn_ns.clone(),
                s.credentials_secret_ref.name,
                s.credentials_secret_ref.key,
                ConnectionId::CmsConnection {
                    namespace: conn_ns.clone(),
                    name: name.clone(),
                },
            )
        }
        ConnectionKind::ClusterCmsConnection => {
            let Some(c) = Api::<ClusterCmsConnection>::all(ctx.client.clone())
                .get_opt(&name)
                .await?
            else {
                return refused(
                    "ConnectionNotFound",
                    format!("ClusterCmsConnection {name} does not exist"),
                );
            };
            let labels = Api::<Namespace>::all(ctx.client.clone())
                .get_opt(&ns)
                .await?
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default();
            if !admits(&c.spec, &ns, &labels) {
                return refused(
                    "ConnectionNotAllowed",
                    format!("ClusterCmsConnection {name} does not admit namespace '{ns}' (its namespaces and namespaceSelector)"),
                );
            }
            let s = c.spec;
            let Some(secret_ns) = s.credentials_secret_ref.namespace.clone() else {
                return refused(
                    "NoCredentials",
                    format!(
                        "ClusterCmsConnection {name} has no spec.credentialsSecretRef.namespace"
                    ),
                );
            };
            (
                s.endpoint,
                s.provider,
                secret_ns,
                s.credentials_secret_ref.name,
                s.credentials_secret_ref.key,
                ConnectionId::ClusterCmsConnection { name: name.clone() },
            )
        }
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &secret_ns)
        .get_opt(&secret_name)
        .await?;
    let token = secret
        .and_then(|s| crate::engine::secrets_dir::string_data(&s).remove(&secret_key))
        .filter(|t| !t.trim().is_empty());
    let Some(token) = token else {
        return refused(
            "NoCredentials",
            format!("credential Secret {secret_ns}/{secret_name} (field '{secret_key}') is missing or empty"),
        );
    };
    Ok(Ok(Conn {
        id,
        provider,
        endpoint: spec_endpoint,
        token: token.trim().to_owned(),
    }))
}

/// The connection id a policy uses (for grouping the CORS/public settings of its neighbours).
pub fn connection_of(
    p: &ApiKeyPolicy,
    default: &Option<DefaultConnection>,
) -> Option<ConnectionId> {
    let ns = p.namespace().unwrap_or_else(|| "default".into());
    match (&p.spec.connection_ref, default) {
        (Some(r), _) => Some(match r.kind {
            ConnectionKind::CmsConnection => ConnectionId::CmsConnection {
                namespace: ns,
                name: r.name.clone(),
            },
            ConnectionKind::ClusterCmsConnection => ConnectionId::ClusterCmsConnection {
                name: r.name.clone(),
            },
        }),
        (None, Some(DefaultConnection::Namespaced { namespace, name })) => {
            Some(ConnectionId::CmsConnection {
                namespace: namespace.clone(),
                name: name.clone(),
            })
        }
        (None, Some(DefaultConnection::Cluster { name })) => {
            Some(ConnectionId::ClusterCmsConnection { name: name.clone() })
        }
        (None, None) => None,
    }
}

/// This policy's desired state, with the CORS origins and public endpoints of every managed
/// policy on the same connection (the settings are per CMS, so they are the union).
fn desired_state(
    p: &ApiKeyPolicy,
    keys: Vec<DesiredKey>,
    conn: &ConnectionId,
    ctx: &Context,
) -> DesiredState {
    let mut state = DesiredState {
        keys,
        ..Default::default()
    };
    state.policies.insert(
        policy_id(p),
        PolicySettings {
            orphan: p.spec.deletion_policy == DeletionPolicy::Orphan,
            observe_only: p.spec.management_policy == ManagementPolicy::ObserveOnly,
            gone: false,
        },
    );
    let mut neighbours: Vec<Arc<ApiKeyPolicy>> = ctx
        .store()
        .map(|s| s.state())
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.uid() != p.uid())
        .collect();
    neighbours.push(Arc::new(p.clone()));
    for o in neighbours {
        if connection_of(&o, &ctx.config.default_connection).as_ref() != Some(conn)
            || o.spec.management_policy == ManagementPolicy::ObserveOnly
            || o.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if let Some(c) = &o.spec.cors {
            state
                .cors
                .get_or_insert_with(BTreeSet::new)
                .extend(c.origins.iter().cloned());
        }
        for pe in &o.spec.public_endpoints {
            state
                .public
                .entry(pe.api.clone())
                .or_default()
                .extend(pe.operations.iter().copied());
        }
    }
    state
}

async fn apply(p: Arc<ApiKeyPolicy>, ctx: &Context) -> Result<Action, ReconcileError> {
    let now = ctx.config.clock.now();
    let (_, mut keys, diags) = policy_keys(&p, None, now);
    let old = p.status.clone().unwrap_or_default();
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    if !errors.is_empty() {
        // Waits for a change of the spec: retrying cannot fix it.
        let msg = errors.join("; ");
        refuse(&p, ctx, &old, "InvalidSpec", &msg).await?;
        return Ok(Action::await_change());
    }
    let conn = match resolve_connection(&p, ctx).await? {
        Ok(c) => c,
        Err((reason, msg)) => {
            refuse(&p, ctx, &old, &reason, &msg).await?;
            return Ok(Action::requeue(ctx.config.drift_interval));
        }
    };
    let refusals: Vec<String> = fit_to_provider(conn.provider, &p.spec, &mut keys)
        .into_iter()
        .map(|(path, reason)| format!("{path}: {reason}"))
        .collect();
    if !refusals.is_empty() {
        let msg = refusals.join("; ");
        refuse(&p, ctx, &old, "InvalidSpec", &msg).await?;
        return Ok(Action::await_change());
    }
    let provider = match ctx.provider(&conn) {
        Ok(p) => p,
        Err(m) => {
            let msg = format!("the credential of {} is not usable: {m}", conn.id);
            refuse(&p, ctx, &old, "NoCredentials", &msg).await?;
            return Ok(Action::requeue(ctx.config.drift_interval));
        }
    };
    let mut state = desired_state(&p, keys, &conn.id, ctx);
    if conn.provider != ProviderKind::Keyward {
        // Only the reference CMS takes CORS and public endpoints; policies declaring them for
        // another provider are refused above, so a neighbour's would only be a stale request.
        state.cors = None;
        state.public.clear();
    }
    // Desired specs as this CMS holds them, then what it holds now.
    let observed = async {
        let state = express_state(provider.as_ref(), &state).await?;
        let live = provider
            .list_keys_labeled(LABEL_POLICY, &policy_id(&p).label_value())
            .await?;
        let settings = provider
            .settings(&state.public.keys().cloned().collect())
            .await?;
        Ok::<_, ExpressError>((state, live, settings))
    }
    .await;
    let (state, live, settings) = match observed {
        Ok(v) => v,
        Err(ExpressError::Refused(msgs)) => {
            let msg = msgs.join("; ");
            refuse(&p, ctx, &old, "InvalidSpec", &msg).await?;
            return Ok(Action::requeue(ctx.config.drift_interval));
        }
        Err(ExpressError::Provider(e)) => {
            let msg = e.to_string();
            write_status(
                &p,
                ctx,
                &old,
                failed_status(&old, "CmsUnavailable", &msg),
                Some(("CmsUnavailable", &msg)),
            )
            .await?;
            return Err(e.into());
        }
    };
    let sink = KubeSecrets {
        client: ctx.client.clone(),
        owner: owner_ref(&p)
            .ok_or_else(|| ReconcileError::Finalizer("the policy has no uid".into()))?,
        field_manager: ctx.config.field_manager.clone(),
    };
    let secrets = observe_secrets(&sink, &state.keys).await?;
    let plan = diff(&state, &live, &settings, &secrets, &conn.endpoint, now);
    let drifted: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            PlanAction::Update { key, .. } => Some(key.key.clone()),
            _ => None,
        })
        .collect();
    let observe_only = p.spec.management_policy == ManagementPolicy::ObserveOnly;
    let mut events: Vec<(String, String)> = Vec::new();
    let mut live = live;
    if !plan.problems.is_empty() {
        let msg = plan.problems.join("; ");
        refuse(&p, ctx, &old, "Conflict", &msg).await?;
        return Ok(Action::requeue(ctx.config.drift_interval));
    }
    if !observe_only && plan.has_changes() {
        let engine = Engine {
            provider: provider.as_ref(),
            sink: &sink,
            endpoint: conn.endpoint.clone(),
            clock: ctx.config.clock.clone(),
        };
        match engine.apply(&plan).await {
            Ok(report) => {
                // One reason per kind of change: kube's Recorder folds events with the same
                // reason into one series, keeping the first note.
                for (a, d) in plan.pending().zip(&report.done) {
                    events.push((event_reason(a).into(), d.clone()));
                }
                live = provider
                    .list_keys_labeled(LABEL_POLICY, &policy_id(&p).label_value())
                    .await?;
            }
            Err(e) => {
                let msg = format!("{e}");
                write_status(
                    &p,
                    ctx,
                    &old,
                    failed_status(&old, "ApplyFailed", &msg),
                    Some(("ApplyFailed", &msg)),
                )
                .await?;
                return Err(ReconcileError::Apply(e.report()));
            }
        }
    }
    if !observe_only {
        reconcile_readers(&p, &state.keys, ctx).await?;
        restart_workloads(&p, &state.keys, ctx).await?;
    }

    // Status: what is live now, for this policy's keys.
    let pid = policy_id(&p);
    let applied_nothing = events.is_empty();
    let mut key_status = Vec::new();
    let mut expiring = Vec::new();
    let mut next_due: Option<chrono::DateTime<Utc>> = None;
    for k in &state.keys {
        let Some(l) = live
            .iter()
            .find(|l| pid.owns(&l.spec.labels) && l.spec.name == k.spec.name)
        else {
            continue;
        };
        // Nothing applied: the Secrets observed for the plan are current; otherwise read again.
        let fingerprint = if applied_nothing {
            secrets
                .get(&(k.secret.namespace.clone(), k.secret.name.clone()))
                .filter(|o| o.key_id.as_deref() == Some(l.id.as_str()))
                .and_then(|o| o.fingerprint.clone())
        } else {
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &k.secret.namespace)
                .get_metadata_opt(&k.secret.name)
                .await?;
            let ann = secret
                .and_then(|s| s.metadata.annotations)
                .unwrap_or_default();
            (ann.get(ANN_KEY_ID) == Some(&l.id))
                .then(|| ann.get(ANN_FINGERPRINT).cloned())
                .flatten()
        };
        key_status.push(KeyStatus {
            name: k.key.clone(),
            id: l.id.clone(),
            fingerprint,
            created_at: Some(
                l.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            expires_at: l
                .expires_at()
                .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            rotated_at: l
                .rotated_at
                .map(|r| r.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            secret_name: k.secret.name.clone(),
        });
        if let Some(exp) = l.expires_at() {
            let left = exp - now;
            ctx.metrics
                .seconds_to_expiry
                .get_or_create(&super::metrics::KeyLabels {
                    namespace: pid.namespace.clone(),
                    policy: pid.name.clone(),
                    key: k.key.clone(),
                })
                .set(left.num_seconds() as f64);
            if k.lifetime
                .is_some_and(|l| left <= status::reminder_window(l))
            {
                expiring.push(format!(
                    "{} expires at {}",
                    k.key,
                    exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
        }
        if let Some(due) = rotation_due(k, l) {
            next_due = Some(next_due.map_or(due, |d| d.min(due)));
        }
    }
    // ObserveOnly actions are never "pending" for apply, but they are what status reports.
    let observed_changes = observe_only && !plan.actions.is_empty();
    let pending: Vec<String> = if observed_changes {
        render_text("", &plan)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .collect()
    } else {
        Vec::new()
    };
    let in_sync = !observed_changes;
    let conditions = vec![
        condition(
            READY,
            in_sync,
            if in_sync { "Ready" } else { "ChangesPending" },
            if in_sync {
                format!(
                    "{} key(s) in place and written to their Secrets",
                    key_status.len()
                )
            } else {
                "ObserveOnly: the changes in status.pendingChanges are not applied".into()
            },
        ),
        condition(
            SYNCED,
            !observed_changes,
            if observe_only {
                "ObserveOnly"
            } else {
                "Applied"
            },
            if observe_only {
                "managementPolicy is ObserveOnly: nothing is written to the CMS".to_owned()
            } else {
                "the CMS matches the policy".to_owned()
            },
        ),
        condition(
            DRIFTED,
            !drifted.is_empty(),
            if drifted.is_empty() {
                "NoDrift"
            } else if observe_only {
                "DriftFound"
            } else {
                "DriftRepaired"
            },
            if drifted.is_empty() {
                "the CMS matched the policy at the last check".to_owned()
            } else {
                format!("changed in the CMS outside keyward: {}", drifted.join(", "))
            },
        ),
        condition(
            EXPIRING,
            !expiring.is_empty(),
            if expiring.is_empty() {
                "NotExpiring"
            } else {
                "ExpiringSoon"
            },
            if expiring.is_empty() {
                "no key is within its reminder window".to_owned()
            } else {
                expiring.join("; ")
            },
        ),
    ];
    let missing = (state.keys.len() - key_status.len()) as i64;
    let expiring_count = expiring.len() as i64;
    ctx.set_key_states(
        &p,
        Some([
            key_status.len() as i64 - expiring_count,
            expiring_count,
            missing,
        ]),
    );
    let new = ApiKeyPolicyStatus {
        observed_generation: p.metadata.generation,
        conditions: conditions_merged(&old, conditions, p.metadata.generation),
        keys: key_status,
        pending_changes: pending,
    };
    write_status(&p, ctx, &old, new, None).await?;
    for (reason, note) in events {
        publish(ctx, &p, EventType::Normal, &reason, &note).await;
    }
    ctx.forget_failures(&p);
    let mut wait = ctx.config.drift_interval;
    if let Some(due) = next_due {
        let until = (due - ctx.config.clock.now())
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        wait = wait.min(until);
    }
    Ok(Action::requeue(wait))
}

/// The event reason for an applied action.
fn event_reason(a: &PlanAction) -> &'static str {
    match a {
        PlanAction::Create { .. } => "KeyCreated",
        PlanAction::Update { .. } => "KeyUpdated",
        PlanAction::Rotate { .. } => "KeyRotated",
        PlanAction::Replace { .. } => "KeyReplaced",
        PlanAction::WriteSecret { .. } => "SecretRewritten",
        PlanAction::Revoke { .. } => "KeyRevoked",
        PlanAction::SetCors { .. } | PlanAction::SetPublic { .. } => "SettingsChanged",
    }
}

fn conditions_merged(
    old: &ApiKeyPolicyStatus,
    new: Vec<crate::policy::Condition>,
    generation: Option<i64>,
) -> Vec<crate::policy::Condition> {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    status::merge(&old.conditions, new, &now, generation)
}

/// Records in status (and an event, on a change) why the policy cannot be applied.
async fn refuse(
    p: &ApiKeyPolicy,
    ctx: &Context,
    old: &ApiKeyPolicyStatus,
    reason: &str,
    msg: &str,
) -> Result<(), ReconcileError> {
    write_status(
        p,
        ctx,
        old,
        refused_status(old, reason, msg),
        Some((reason, msg)),
    )
    .await
}

fn refused_status(old: &ApiKeyPolicyStatus, reason: &str, msg: &str) -> ApiKeyPolicyStatus {
    ApiKeyPolicyStatus {
        conditions: conditions_merged(
            old,
            vec![
                condition(READY, false, reason, msg),
                condition(SYNCED, false, reason, "nothing was applied"),
            ],
            None,
        ),
        ..old.clone()
    }
}

/// A failure worth retrying: the CMS could not be read (`CmsUnavailable`) or an apply stopped
/// (`ApplyFailed`: a CMS call or a Secret write).
fn failed_status(old: &ApiKeyPolicyStatus, reason: &str, msg: &str) -> ApiKeyPolicyStatus {
    ApiKeyPolicyStatus {
        conditions: conditions_merged(
            old,
            vec![
                condition(
                    READY,
                    false,
                    reason,
                    format!("{msg}; retrying with backoff"),
                ),
                condition(SYNCED, false, reason, msg),
            ],
            None,
        ),
        ..old.clone()
    }
}

/// Writes status only when it differs (ignoring transition times); records an event when the
/// Ready condition flips.
async fn write_status(
    p: &ApiKeyPolicy,
    ctx: &Context,
    old: &ApiKeyPolicyStatus,
    mut new: ApiKeyPolicyStatus,
    warning: Option<(&str, &str)>,
) -> Result<(), ReconcileError> {
    // Keep the conditions this write does not mention.
    for c in &old.conditions {
        if !new.conditions.iter().any(|n| n.type_ == c.type_) {
            new.conditions.push(c.clone());
        }
    }
    let strip = |s: &ApiKeyPolicyStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
            c.observed_generation = None;
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    if strip(old) == strip(&new) && old.observed_generation == new.observed_generation {
        return Ok(());
    }
    let flipped = new
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .filter(|c| status::transitioned(&old.conditions, c))
        .cloned();
    let api: Api<ApiKeyPolicy> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "status": new});
    api.patch_status(
        &p.name_any(),
        &PatchParams::apply(&ctx.config.field_manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    if let Some(ready) = flipped {
        match warning {
            Some((reason, msg)) => publish(ctx, p, EventType::Warning, reason, msg).await,
            None => publish(ctx, p, EventType::Normal, &ready.reason, &ready.message).await,
        }
    }
    Ok(())
}

async fn publish(ctx: &Context, p: &ApiKeyPolicy, type_: EventType, reason: &str, note: &str) {
    let ev = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &p.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot record an event");
    }
}

/// A Role and RoleBinding per Secret that has readers: `get` on exactly that Secret.
async fn reconcile_readers(
    p: &ApiKeyPolicy,
    keys: &[DesiredKey],
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let ns = p.namespace().unwrap_or_default();
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), &ns);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = owner_ref(p);
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
        let current_role = roles
            .get_opt(&name)
            .await?
            .map(|r| serde_json::to_value(r.rules).unwrap_or_default());
        if current_role.as_ref() != Some(&role["rules"]) {
            roles.patch(&name, &pp, &Patch::Apply(&role)).await?;
        }
        let current = bindings
            .get_opt(&name)
            .await?
            .map(|b| serde_json::to_value(b.subjects).unwrap_or_default());
        if current.as_ref() != Some(&binding["subjects"]) {
            bindings.patch(&name, &pp, &Patch::Apply(&binding)).await?;
        }
    }
    // Readers removed from the spec lose access.
    let lp = ListParams::default().labels(&format!("{}={}", label.0, label.1));
    for r in roles.list_metadata(&lp).await?.items {
        let name = r.name_any();
        if !wanted.contains(&name) {
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
) -> Result<(), ReconcileError> {
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
        let ann = format!("keyward.dev/secret-{}", k.secret.name);
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

/// On deletion: revoke the policy's keys (unless Orphan or ObserveOnly). A key the CMS already
/// forgot counts as revoked.
async fn cleanup(p: Arc<ApiKeyPolicy>, ctx: &Context) -> Result<Action, ReconcileError> {
    ctx.set_key_states(&p, None);
    if p.spec.deletion_policy == DeletionPolicy::Orphan
        || p.spec.management_policy == ManagementPolicy::ObserveOnly
    {
        return Ok(Action::await_change());
    }
    let conn = match resolve_connection(&p, ctx).await? {
        Ok(c) => c,
        Err((_, msg)) => return Err(ReconcileError::Cleanup(msg)),
    };
    let provider = ctx.provider(&conn).map_err(ReconcileError::Cleanup)?;
    let pid = policy_id(&p);
    let owned: Vec<LiveKey> = provider
        .list_keys_labeled(LABEL_POLICY, &pid.label_value())
        .await?
        .into_iter()
        .filter(|k| pid.owns(&k.spec.labels))
        .collect();
    for k in owned {
        provider.revoke_key(&k.id).await?;
        tracing::info!(key = %k.spec.name, id = %k.id, "revoked with its policy");
    }
    Ok(Action::await_change())
}

pub fn error_policy(p: Arc<ApiKeyPolicy>, e: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .get_or_create(&super::metrics::ReasonLabels {
            reason: e.reason().into(),
        })
        .inc();
    let wait = ctx.backoff(&p);
    tracing::warn!(policy = %format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), error = %e, retry_in_ms = wait.as_millis() as u64, "reconcile failed");
    Action::requeue(wait)
}

/// Providers by (kind, endpoint, credential).
pub type ProviderCache =
    parking_lot::Mutex<BTreeMap<(ProviderKind, String, String), Arc<dyn CmsProvider>>>;

/// A cached provider per connection, so a Strapi session (its sign-in) is reused.
pub fn provider_for(cache: &ProviderCache, conn: &Conn) -> Result<Arc<dyn CmsProvider>, String> {
    let key = (conn.provider, conn.endpoint.clone(), conn.token.clone());
    let mut cache = cache.lock();
    if let Some(p) = cache.get(&key) {
        return Ok(p.clone());
    }
    let p: Arc<dyn CmsProvider> =
        crate::gitops::provider_for(conn.provider, &conn.endpoint, &conn.token)?.into();
    cache.insert(key, p.clone());
    Ok(p)
}
