//! One reconcile of an `ApiKeyPolicy`: a pipeline of named steps, each with its own error.
//!
//! 1. dereference (`dereference.rs`): connection, admission, credential, from reflector stores;
//! 2. validate (`observe.rs`): the spec, then what the connection's provider can hold;
//! 3. observe (`observe.rs`): the CMS's keys and settings, the Secrets;
//! 4. plan (`observe.rs`): the pure diff;
//! 5. apply (here): the engine shared with the CLI;
//! 6. publish (`publish.rs`): readers' RBAC, workload restarts;
//! 7. status (`report.rs`): conditions, keys, metrics, events, written only when changed.
//!
//! A step that stops the pipeline becomes a [`Halt`]: a refusal recorded in status that waits
//! for a change, or a failure retried with per-object backoff. Deletion (`cleanup`) revokes the
//! policy's keys through kube's finalizer helper.

use super::connection::Conn;
use super::context::Context;
use super::dereference::{
    dereference, dereference_to_revoke, previous_connection, within_ceilings, DereferenceError,
};
use super::events::{record, EventReason};
use super::in_use;
use super::observe::{observe, only_a_drift_check, own_keys, ObserveError, FIRST_READ_MAX_AGE};
use super::offboarding::{
    after_offboarding, grace_over, never_made_a_key, refused_since, takes_back, Beyond,
};
use super::plan::{plan, Conflict};
use super::publish::publish_to_workloads;
use super::report::{report, stopped_status, write_status, Outcome};
use super::secrets::KubeSecrets;
use super::status::StopReason;
use super::validate::{validate, InvalidSpec};
use crate::engine::{ApplyError, Engine};
use crate::plan::Plan;
use crate::policy::connection::ConnectionError;
use crate::policy::{
    ApiKeyPolicy, ApiKeyPolicyStatus, DeletionPolicy, ManagementPolicy, ManualRotation,
};
use crate::providers::http::in_reconcile;
use crate::providers::{CmsProvider, ProviderError};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

pub const FINALIZER: &str = "keyward.dev/revoke-keys";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("CMS: {0}")]
    Provider(#[from] ProviderError),
    /// Boxed: it carries what was done and why the rest was not (large beside the others).
    #[error("apply stopped: {}", .0.report())]
    Apply(Box<ApplyError>),
    #[error("{0}")]
    Sink(#[from] crate::engine::SinkError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The API server gave the policy no uid, so nothing can be owned by it.
    #[error("the policy has no uid")]
    NoUid,
    #[error("cannot revoke the keys: {0} (to delete the policy and leave its keys in the CMS, annotate it keyward.dev/abandon-keys=true)")]
    Cleanup(#[from] DereferenceError),
    #[error("cannot revoke the keys: the credential is not usable: {0}")]
    Credential(ProviderError),
    /// Revoking went on past keys that could not be revoked; these are left (retried).
    #[error("revoked {revoked} keys; {} could not be revoked: {}", .failed.len(), .failed.iter().map(|(id, e)| format!("{id}: {e}")).collect::<Vec<_>>().join("; "))]
    Revoke {
        revoked: usize,
        failed: Vec<(String, ProviderError)>,
    },
    /// A bug met this policy: its reconcile panicked. Retried with backoff; every other
    /// policy is reconciled as before.
    #[error("the reconcile panicked: {0}")]
    Panicked(String),
}

impl ReconcileError {
    /// What the policy's status says of it: a CMS's or an apply's error as it is (the status
    /// is about the CMS already), others with what they are about.
    pub fn for_status(&self) -> String {
        match self {
            Self::Provider(e) => e.to_string(),
            Self::Apply(e) => e.to_string(),
            other => other.to_string(),
        }
    }

    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kubernetes",
            Self::Provider(e) if e.is_transient() => "cms_unavailable",
            Self::Provider(_) => "cms_refused",
            Self::Apply(_) => "apply",
            Self::Sink(_) => "secret",
            Self::Finalizer(_) | Self::NoUid => "finalizer",
            Self::Cleanup(_) | Self::Credential(_) | Self::Revoke { .. } => "cleanup",
            Self::Panicked(_) => "panic",
        }
    }
}

/// Why the pipeline stopped before its end.
pub enum Halt {
    /// The policy cannot be applied as it is: recorded in status (Ready=False, `reason`); it
    /// waits for a change (`retry_after` None) or looks again after the drift interval.
    Refused {
        reason: StopReason,
        message: String,
        look_again: bool,
    },
    /// Worth retrying with backoff: recorded in status, then the error goes to the controller.
    Failed {
        reason: StopReason,
        error: ReconcileError,
    },
    /// The API server failed while the pipeline talked to it.
    Kube(kube::Error),
}

impl From<DereferenceError> for Halt {
    fn from(e: DereferenceError) -> Halt {
        Halt::Refused {
            reason: e.reason(),
            message: e.to_string(),
            look_again: true,
        }
    }
}

impl From<InvalidSpec> for Halt {
    fn from(e: InvalidSpec) -> Halt {
        // Retrying cannot fix it: wait for a change of the spec.
        Halt::Refused {
            reason: StopReason::InvalidSpec,
            message: e.to_string(),
            look_again: false,
        }
    }
}

impl From<ObserveError> for Halt {
    fn from(e: ObserveError) -> Halt {
        match e {
            // The CMS's catalog may change (an API created): look again later.
            ObserveError::Refused(_) => Halt::Refused {
                reason: StopReason::InvalidSpec,
                message: e.to_string(),
                look_again: true,
            },
            // A certificate the client does not trust will not fix itself: wait for a change.
            ObserveError::Provider(p @ ProviderError::Tls { .. }) => Halt::Refused {
                reason: StopReason::TlsError,
                message: p.to_string(),
                look_again: false,
            },
            ObserveError::Provider(p) => Halt::Failed {
                reason: StopReason::CmsUnavailable,
                error: p.into(),
            },
            // Someone else's Secret: nothing is written until the spec or the Secret changes.
            ObserveError::Secret(s) if s.conflict => Halt::Refused {
                reason: StopReason::SecretConflict,
                message: s.to_string(),
                look_again: true,
            },
            ObserveError::Secret(s) => Halt::Failed {
                reason: StopReason::CmsUnavailable,
                error: s.into(),
            },
        }
    }
}

impl From<Conflict> for Halt {
    fn from(e: Conflict) -> Halt {
        Halt::Refused {
            reason: StopReason::Conflict,
            message: e.to_string(),
            look_again: true,
        }
    }
}

impl From<kube::Error> for Halt {
    fn from(e: kube::Error) -> Halt {
        Halt::Kube(e)
    }
}

pub async fn reconcile(
    policy: Arc<ApiKeyPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let ns = policy.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ApiKeyPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(wait) = ctx.force_sync_wait(&policy) {
        tracing::info!(policy = %policy.policy_id(), wait_ms = wait.as_millis() as u64, "force-sync asked again too soon: waiting");
        return Ok(Action::requeue(wait));
    }
    // One connection holds at most its share of the workers (more while it answers, never
    // every worker): a policy whose connection holds what it may looks again shortly, and the
    // worker goes to a policy elsewhere.
    let Some(mut slot) = ctx.connection_slot(&policy).await else {
        return Ok(Action::requeue(slot_wait()));
    };
    let started = std::time::Instant::now();
    // Retries inside a reconcile stop at the budget, and its calls at its deadline; then the
    // per-object backoff takes over and the worker is free for policies on other connections.
    let now = tokio::time::Instant::now();
    let limits = crate::providers::http::Reconcile {
        retry_deadline: now + ctx.config.retry_budget,
        deadline: now + ctx.config.reconcile_timeout,
    };
    let run = in_reconcile(
        limits,
        finalizer(&api, FINALIZER, policy.clone(), |event| async {
            match event {
                Event::Apply(p) => apply(p, &ctx).await,
                Event::Cleanup(p) => cleanup(p, &ctx).await,
            }
        }),
    );
    let result = match contained(run).await {
        Ok(result) => result,
        Err(panic) => {
            tracing::error!(policy = %policy.policy_id(), panic = %panic, "a reconcile panicked: this policy is retried with backoff, the others go on");
            ctx.metrics.observe_reconcile(started.elapsed(), false);
            return Err(ReconcileError::Panicked(panic));
        }
    };
    let result = match result {
        // A second reconcile of the same deletion, from a copy cached before the first let the
        // policy go: the policy is gone, so the deletion is done.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)))
            if s.code == 404 =>
        {
            Ok(Action::await_change())
        }
        Err(
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e),
        ) => Err(e),
        Err(other) => Err(ReconcileError::Finalizer(other.to_string())),
        Ok(action) => Ok(action),
    };
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.is_ok());
    if result.is_ok() {
        ctx.count_reconciled(&policy);
        if let Some(s) = slot.as_mut() {
            s.succeeded();
        }
    }
    result
}

/// A little over a second, jittered: when a policy whose connection's share of the workers is
/// taken looks again.
fn slot_wait() -> Duration {
    use rand::Rng;
    Duration::from_millis(rand::thread_rng().gen_range(1000..2000))
}

/// Runs `work`; a panic inside it becomes an error of this one reconcile (with the panic's
/// message) instead of unwinding through the controller that every policy shares.
pub async fn contained<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into())
        })
}

/// Steps 1 to 6; what step 7 reports.
async fn pipeline(p: &ApiKeyPolicy, ctx: &Context) -> Result<Outcome, Halt> {
    let now = ctx.config.clock.now();
    let conn = dereference(p, ctx).await?;
    within_ceilings(p, &conn, ctx)?;
    leave_previous_connection(p, &conn, ctx).await?;
    let provider = provider(ctx, &conn)?;
    let mut state = validate(p, &conn, now)?;
    super::dereference::adopted_values(p, ctx, &mut state).await;
    let sink = KubeSecrets::for_policy(p, ctx).ok_or_else(|| Halt::Failed {
        reason: StopReason::ApplyFailed,
        error: ReconcileError::NoUid,
    })?;
    let fresh = ctx.take_fresh_read(p);
    // A drift check shares its connection's listing of the last drift interval; a new or
    // changed policy shares a younger one (its part is kept current by its own writes); a
    // force-sync reads afresh.
    let max_age = match only_a_drift_check(p) {
        true => ctx.config.drift_interval,
        false => FIRST_READ_MAX_AGE.min(ctx.config.drift_interval),
    };
    let shared = (!fresh).then_some((ctx, &conn.id, max_age));
    let observed = observe(p, provider.as_ref(), state, &sink, shared).await?;
    let mut plan = plan(&observed, &conn, now)?;
    let observe_only = p.spec.management_policy == ManagementPolicy::ObserveOnly;
    let rotation = super::rotation::asked(p)
        .filter(|_| !observe_only && ctx.rotation_allowed(p))
        .map(|(request, ask)| ManualRotation {
            keys: crate::plan::add_rotations(&mut plan, &observed.state, &ask),
            request,
            at: super::report::rfc3339(now),
            at_once: ask.at_once,
        });
    let (live, done) = if !observe_only && plan.has_changes() {
        // Held until the keys are made: policies of one namespace cannot pass the key quota
        // together.
        let _quota = within_key_quota(p, &conn, &plan, provider.as_ref(), ctx).await?;
        // Until it reads its keys back, the policy's part of the shared listing is unknown.
        let label = p.policy_id().label_value();
        ctx.listings.writing(&conn.id, &label);
        let done = apply_plan(provider.as_ref(), &sink, &conn, &plan, ctx).await?;
        let live = own_keys(provider.as_ref(), p)
            .await
            .map_err(|e| Halt::Failed {
                reason: StopReason::CmsUnavailable,
                error: e.into(),
            })?;
        ctx.listings.patch(&conn.id, &label, live.clone());
        (live, done)
    } else {
        (observed.live.clone(), Vec::new())
    };
    if !observe_only {
        // A reader's access not taken away, a restart not made: the status says so.
        publish_to_workloads(p, &observed.state.keys, ctx)
            .await
            .map_err(|e| Halt::Failed {
                reason: StopReason::PublishFailed,
                error: e.into(),
            })?;
    }
    let probes = match observe_only {
        true => crate::engine::observe::probe_tracked(provider.as_ref(), &observed)
            .await
            .into_iter()
            .map(|(k, works)| (k.key.clone(), works))
            .collect(),
        false => Vec::new(),
    };
    Ok(Outcome {
        observed,
        plan,
        live,
        done,
        now,
        connection: conn.id.clone(),
        rotation,
        probes,
    })
}

/// A shared connection's `maxKeysPerNamespace` against what the CMS holds: every key of the
/// namespace there (keys kept by `deletionPolicy: Orphan` and renamed ones too), plus what this
/// plan makes, less what it revokes. Counted under a per-namespace lock held until the keys
/// are made, so policies created together cannot all see room for one more. The lock is
/// returned; a plan that makes no key needs neither.
async fn within_key_quota(
    p: &ApiKeyPolicy,
    conn: &Conn,
    plan: &Plan,
    provider: &dyn CmsProvider,
    ctx: &Context,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, Halt> {
    use crate::plan::Action as Planned;
    let (Some(allow), crate::model::desired::ConnectionId::ClusterCmsConnection { name }) =
        (&conn.allow, &conn.id)
    else {
        return Ok(None);
    };
    let Some(max) = allow.max_keys_per_namespace else {
        return Ok(None);
    };
    let made = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Planned::Create { .. } | Planned::Replace { .. }))
        .count();
    if made == 0 {
        return Ok(None);
    }
    let revoked = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Planned::Revoke { .. }))
        .count();
    let ns = p.namespace().unwrap_or_else(|| "default".into());
    let guard = ctx.key_quota_lock(&conn.id, &ns).lock_owned().await;
    let prefix = format!("{ns}.");
    let held = provider
        .list_keys()
        .await
        .map_err(|e| Halt::Failed {
            reason: StopReason::CmsUnavailable,
            error: e.into(),
        })?
        .iter()
        .filter(|k| {
            k.spec.name.starts_with(&prefix)
                && k.spec
                    .labels
                    .contains_key(crate::model::desired::LABEL_POLICY)
        })
        .count();
    let after = (held + made).saturating_sub(revoked);
    if after > max as usize {
        return Err(Halt::Refused {
            reason: StopReason::NotAllowed,
            message: format!(
                "spec.keys: ClusterCmsConnection {name} does not allow {after} keys in this namespace (spec.allow.maxKeysPerNamespace: {max}; the CMS holds {held} of its keys)"
            ),
            look_again: true,
        });
    }
    Ok(Some(guard))
}

/// A policy moved to another connection: its keys on the one it left are revoked first, so
/// that none stays working there unmanaged.
async fn leave_previous_connection(
    p: &ApiKeyPolicy,
    conn: &Conn,
    ctx: &Context,
) -> Result<(), Halt> {
    let Some(previous) = previous_connection(p, &conn.id) else {
        return Ok(());
    };
    let revoked = match revoke_all(p, ctx).await {
        Ok(n) => n,
        // Gone, with its credential: nothing can revoke them now; say so once and move on.
        Err(ReconcileError::Cleanup(
            e @ DereferenceError::Connection(ConnectionError::NotFound(_)),
        )) => {
            let note =
                format!("the keys on {previous} were not revoked: {e}; revoke them in the CMS");
            record(
                ctx,
                p,
                EventType::Warning,
                EventReason::KeysLeft.as_str(),
                &note,
            )
            .await;
            return Ok(());
        }
        Err(error) => {
            return Err(Halt::Failed {
                reason: StopReason::ApplyFailed,
                error,
            })
        }
    };
    if revoked > 0 {
        let note = format!(
            "{revoked} keys revoked on {previous}: the policy now uses {}",
            conn.id
        );
        record(
            ctx,
            p,
            EventType::Normal,
            EventReason::KeysRevoked.as_str(),
            &note,
        )
        .await;
    }
    Ok(())
}

/// The connection's provider; a credential it cannot use is a refusal (`NoCredentials`).
fn provider(ctx: &Context, conn: &Conn) -> Result<Arc<dyn CmsProvider>, Halt> {
    ctx.provider(conn).map_err(|m| Halt::Refused {
        reason: StopReason::NoCredentials,
        message: format!("the credential of {} is not usable: {m}", conn.id),
        look_again: true,
    })
}

/// Step 5: the engine; returns (event reason, what was done) per action.
async fn apply_plan(
    provider: &dyn CmsProvider,
    sink: &KubeSecrets,
    conn: &Conn,
    plan: &Plan,
    ctx: &Context,
) -> Result<Vec<(EventReason, String)>, Halt> {
    let engine = Engine {
        provider,
        sink,
        endpoint: conn.endpoint.clone(),
        clock: ctx.config.clock.clone(),
        progress: None,
    };
    match engine.apply(plan).await {
        Ok(report) => Ok(plan
            .pending()
            .zip(report.done)
            .map(|(a, d)| (EventReason::of(a), d))
            .collect()),
        Err(e) => Err(Halt::Failed {
            reason: StopReason::ApplyFailed,
            error: e.into(),
        }),
    }
}

async fn apply(p: Arc<ApiKeyPolicy>, ctx: &Context) -> Result<Action, ReconcileError> {
    let old = p.status.clone().unwrap_or_default();
    let now = ctx.config.clock.now();
    match pipeline(&p, ctx).await {
        Ok(outcome) => {
            let wait = report(&p, ctx, &old, outcome).await?;
            ctx.forget_failures(&p);
            Ok(Action::requeue(wait))
        }
        Err(Halt::Refused {
            reason,
            message,
            look_again,
        }) => {
            let mut status = stopped_status(&old, reason, &message, false, now);
            status.refused_since = None;
            let recorded = old.connection.as_ref().map(|c| c.id());
            let named_now = super::connection::connection_of(&p, &ctx.config.default_connection);
            if takes_back(reason, recorded.as_ref(), named_now.as_ref()) {
                // The grace counts from when this refusal began, on the operator's clock.
                let since = refused_since(old.refused_since.as_deref(), now);
                if grace_over(since, now, ctx.config.offboarding_grace) {
                    return offboard(&p, ctx, &old, (reason, &message), since).await;
                }
                status.refused_since = Some(crate::model::rfc3339(since));
            }
            write_status(&p, ctx, &old, status, Some((reason.as_str(), &message))).await?;
            Ok(if look_again {
                Action::requeue(ctx.config.drift_interval)
            } else {
                Action::await_change()
            })
        }
        Err(Halt::Failed { reason, error }) => {
            let message = error.for_status();
            let mut status = stopped_status(&old, reason, &message, true, now);
            status.refused_since = None;
            write_status(&p, ctx, &old, status, Some((reason.as_str(), &message))).await?;
            Err(error)
        }
        Err(Halt::Kube(e)) => Err(e.into()),
    }
}

/// What of the policy is over its connection's ceilings now: the keys whose declarations are,
/// all of them when the namespace holds too many, its settings when they are.
async fn beyond_ceilings(p: &ApiKeyPolicy, ctx: &Context) -> Beyond {
    let Ok(conn) = dereference(p, ctx).await else {
        return Beyond::everything();
    };
    let Err(DereferenceError::NotAllowed(over)) = within_ceilings(p, &conn, ctx) else {
        return Beyond::everything();
    };
    Beyond::over_ceilings(&p.spec.keys, &over)
}

/// Takes back what a policy that has been refused past the grace holds: all of it when its
/// namespace is no longer admitted or its keys were left behind, what is over the ceilings
/// when they were tightened. A team must not keep working keys, or an open API, until they
/// expire.
async fn offboard(
    p: &ApiKeyPolicy,
    ctx: &Context,
    old: &ApiKeyPolicyStatus,
    (reason, refusal): (StopReason, &str),
    since: jiff::Timestamp,
) -> Result<Action, ReconcileError> {
    let beyond = match reason {
        StopReason::NotAllowed => beyond_ceilings(p, ctx).await,
        _ => Beyond::everything(),
    };
    let (revoked, names) = revoke_beyond(p, ctx, &beyond).await?;
    let now = ctx.config.clock.now();
    let status = after_offboarding(
        stopped_status(old, reason, refusal, false, now),
        &beyond,
        &names,
    );
    tracing::debug!(policy = %p.policy_id(), refused_since = %since, "grace over");
    if revoked > 0 || beyond.settings {
        // Taking back everything takes the settings too; said only when part is taken.
        let settings = if beyond.settings && beyond.keys.is_some() {
            " and its CORS origins and public endpoints removed"
        } else {
            ""
        };
        let note = format!("{revoked} keys revoked{settings}: {refusal}");
        tracing::warn!(policy = %p.policy_id(), revoked, "offboarded: {refusal}");
        record(
            ctx,
            p,
            EventType::Warning,
            EventReason::KeysRevoked.as_str(),
            &note,
        )
        .await;
    }
    write_status(p, ctx, old, status, None).await?;
    Ok(Action::requeue(ctx.config.drift_interval))
}

/// Revokes every key of the policy through its connection (admitted or not), and drops its
/// entry in the shared settings; how many keys.
async fn revoke_all(p: &ApiKeyPolicy, ctx: &Context) -> Result<usize, ReconcileError> {
    Ok(revoke_beyond(p, ctx, &Beyond::everything()).await?.0)
}

/// Revokes the policy's keys that `beyond` names (through the connection its status records,
/// admitted or not), and drops its settings entry if it says so; how many keys, and the
/// declared names of those revoked.
async fn revoke_beyond(
    p: &ApiKeyPolicy,
    ctx: &Context,
    beyond: &Beyond,
) -> Result<(usize, std::collections::BTreeSet<String>), ReconcileError> {
    let conn = dereference_to_revoke(p, ctx).await?;
    let provider = ctx.provider(&conn).map_err(ReconcileError::Credential)?;
    let pid = p.policy_id();
    let mut revoked = std::collections::BTreeSet::new();
    let mut count = 0;
    // Each key on its own: one the CMS will not revoke now does not keep the others working.
    let mut failed = Vec::new();
    for k in own_keys(provider.as_ref(), p).await? {
        let name = k
            .spec
            .labels
            .get(crate::model::desired::LABEL_KEY)
            .cloned()
            .unwrap_or_default();
        if pid.owns(&k.spec.labels) && beyond.takes(&name) {
            match provider.revoke_key(&k.id).await {
                Ok(()) => {
                    tracing::info!(key = %k.spec.name, id = %k.id, "revoked");
                    revoked.insert(name);
                    count += 1;
                }
                Err(e) => failed.push((k.id.clone(), e)),
            }
        }
    }
    match &beyond.keys {
        None => ctx.listings.drop_policy(&conn.id, &pid.label_value()),
        // Some went: its next check reads its own keys instead of the shared listing.
        Some(_) if count > 0 => ctx.listings.writing(&conn.id, &pid.label_value()),
        Some(_) => {}
    }
    if beyond.settings {
        // Its CORS origins and public endpoints go; its neighbours' stay.
        provider
            .remove_settings_owner(&pid.settings_owner())
            .await?;
    }
    if !failed.is_empty() {
        return Err(ReconcileError::Revoke {
            revoked: count,
            failed,
        });
    }
    Ok((count, revoked))
}

/// On deletion: revoke the policy's keys (unless Orphan or ObserveOnly). A key the CMS already
/// forgot counts as revoked.
async fn cleanup(p: Arc<ApiKeyPolicy>, ctx: &Context) -> Result<Action, ReconcileError> {
    ctx.forget_policy(
        &format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
        p.uid().as_deref(),
    );
    if p.spec.deletion_policy == DeletionPolicy::Orphan
        || p.spec.management_policy == ManagementPolicy::ObserveOnly
    {
        return Ok(Action::await_change());
    }
    // The escape hatch when the keys can no longer be revoked (the CMS or its connection is
    // gone for good): the policy goes, its keys stay in the CMS, unmanaged.
    if p.annotations()
        .get(in_use::ABANDON_KEYS)
        .map(String::as_str)
        == Some("true")
    {
        tracing::warn!(policy = %p.policy_id(), "deleted without revoking its keys ({}: \"true\")", in_use::ABANDON_KEYS);
        return Ok(Action::await_change());
    }
    match revoke_all(&p, ctx).await {
        Ok(_) => {}
        // Refused from the start, it made no key: nothing to revoke, nothing to block on.
        Err(ReconcileError::Cleanup(e)) if never_made_a_key(p.status.as_ref()) => {
            tracing::info!(policy = %p.policy_id(), reason = %e, "deleted: it never made a key");
        }
        Err(e) => {
            deletion_blocked(&p, ctx, &e).await;
            return Err(e);
        }
    }
    Ok(Action::await_change())
}

/// A deletion that cannot revoke the keys says so where `kubectl describe` shows it (status and
/// a Warning event), with the way out the error names; the operator's log is not enough.
async fn deletion_blocked(p: &ApiKeyPolicy, ctx: &Context, e: &ReconcileError) {
    const REASON: StopReason = StopReason::DeletionBlocked;
    let old = p.status.clone().unwrap_or_default();
    let message = e.to_string();
    let status = stopped_status(&old, REASON, &message, true, ctx.config.clock.now());
    if let Err(w) = write_status(p, ctx, &old, status, Some((REASON.as_str(), &message))).await {
        tracing::warn!(policy = %p.policy_id(), error = %w, "cannot say in the status that the deletion is blocked");
    }
}

impl From<ApplyError> for ReconcileError {
    fn from(e: ApplyError) -> ReconcileError {
        ReconcileError::Apply(Box::new(e))
    }
}

pub fn error_policy(p: Arc<ApiKeyPolicy>, e: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_failure(e.reason());
    let wait: Duration = ctx.backoff(&p);
    tracing::warn!(policy = %format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()), error = %e, retry_in_ms = wait.as_millis() as u64, "reconcile failed");
    Action::requeue(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_an_error_of_that_reconcile_only() {
        let panicked = contained(async {
            let lifetimes: Vec<i64> = Vec::new();
            lifetimes[usize::from(lifetimes.is_empty())]
        })
        .await;
        assert!(
            panicked
                .as_ref()
                .is_err_and(|m| m.contains("index out of bounds")),
            "{panicked:?}"
        );
        let formatted = contained(async { panic!("bad {}", "time") }).await;
        assert_eq!(formatted, Err("bad time".to_owned()));
        assert_eq!(contained(async { 7 }).await, Ok(7));
    }

    fn rejected(status: u16) -> ProviderError {
        ProviderError::Rejected {
            endpoint: "http://cms".into(),
            status,
            message: String::new(),
        }
    }

    fn sink(conflict: bool) -> crate::engine::SinkError {
        crate::engine::SinkError {
            namespace: "ns".into(),
            name: "s".into(),
            detail: "x".into(),
            conflict,
        }
    }

    #[test]
    fn each_error_has_its_metrics_label() {
        let unreachable = ProviderError::Unreachable {
            endpoint: "e".into(),
            detail: "d".into(),
        };
        let cases: Vec<(ReconcileError, &str)> = vec![
            (ReconcileError::Provider(unreachable), "cms_unavailable"),
            (ReconcileError::Provider(rejected(503)), "cms_unavailable"),
            (ReconcileError::Provider(rejected(429)), "cms_unavailable"),
            (ReconcileError::Provider(rejected(403)), "cms_refused"),
            (ReconcileError::Sink(sink(false)), "secret"),
            (
                ReconcileError::Kube(kube::Error::Service("down".into())),
                "kubernetes",
            ),
            (ReconcileError::Finalizer("f".into()), "finalizer"),
            (
                ReconcileError::Cleanup(DereferenceError::NoConnection),
                "cleanup",
            ),
            (ReconcileError::Credential(rejected(401)), "cleanup"),
            (
                ReconcileError::Revoke {
                    revoked: 1,
                    failed: vec![("id".into(), rejected(500))],
                },
                "cleanup",
            ),
            (ReconcileError::Panicked("p".into()), "panic"),
            (ReconcileError::NoUid, "finalizer"),
        ];
        for (e, label) in cases {
            assert_eq!(e.reason(), label, "{e}");
        }
    }

    /// A stop as (its reason, whether a refusal looks again, the error label of a failure).
    type Judged = (&'static str, Option<bool>, Option<&'static str>);

    fn judged(h: Halt) -> Judged {
        match h {
            Halt::Refused {
                reason, look_again, ..
            } => (reason.as_str(), Some(look_again), None),
            Halt::Failed { reason, error } => (reason.as_str(), None, Some(error.reason())),
            Halt::Kube(_) => ("kube", None, None),
        }
    }

    #[test]
    fn each_stop_is_a_refusal_or_a_retried_failure_with_its_reason() {
        let tls = ProviderError::Tls {
            endpoint: "e".into(),
            detail: "d".into(),
        };
        let cases: Vec<(Halt, Judged)> = vec![
            (
                DereferenceError::NoConnection.into(),
                ("NoConnection", Some(true), None),
            ),
            (
                InvalidSpec(vec!["spec.keys[0]: bad".into()]).into(),
                ("InvalidSpec", Some(false), None),
            ),
            (
                ObserveError::Refused(vec!["no API".into()]).into(),
                ("InvalidSpec", Some(true), None),
            ),
            (
                ObserveError::Provider(tls).into(),
                ("TlsError", Some(false), None),
            ),
            (
                ObserveError::Provider(rejected(503)).into(),
                ("CmsUnavailable", None, Some("cms_unavailable")),
            ),
            (
                ObserveError::Secret(sink(true)).into(),
                ("SecretConflict", Some(true), None),
            ),
            (
                ObserveError::Secret(sink(false)).into(),
                ("CmsUnavailable", None, Some("secret")),
            ),
            (
                Conflict(vec!["taken".into()]).into(),
                ("Conflict", Some(true), None),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(judged(h), want);
        }
    }

    #[test]
    fn each_connection_problem_has_its_reason() {
        use crate::model::desired::ConnectionId;
        let cases = [
            (DereferenceError::NoConnection, "NoConnection"),
            (
                ConnectionError::NotFound(ConnectionId::Default).into(),
                "ConnectionNotFound",
            ),
            (
                ConnectionError::NotAdmitted {
                    name: "c".into(),
                    namespace: "ns".into(),
                }
                .into(),
                "ConnectionNotAllowed",
            ),
            (
                ConnectionError::NoCredentialNamespace { name: "c".into() }.into(),
                "NoCredentials",
            ),
            (DereferenceError::NoCredentials("c".into()), "NoCredentials"),
            (DereferenceError::NotAllowed(vec![]), "NotAllowed"),
            (
                ConnectionError::OtherNamespace {
                    connection: "c".into(),
                    own: "a".into(),
                    namespace: "b".into(),
                }
                .into(),
                "ConnectionNotAllowed",
            ),
            (
                DereferenceError::EndpointNotAllowed {
                    connection: "c".into(),
                    host: "h".into(),
                },
                "EndpointNotAllowed",
            ),
            (
                ConnectionError::InvalidEndpoint {
                    connection: "c".into(),
                    reason: "r".into(),
                }
                .into(),
                "EndpointNotAllowed",
            ),
        ];
        for (e, reason) in cases {
            assert_eq!(e.reason().as_str(), reason, "{e}");
        }
    }

    #[test]
    fn a_status_says_a_cms_error_as_the_cms_said_it() {
        let e = ReconcileError::Provider(rejected(500));
        assert!(e.to_string().starts_with("CMS: "), "{e}");
        assert_eq!(e.for_status(), rejected(500).to_string());
        let k = ReconcileError::NoUid;
        assert_eq!(k.for_status(), "the policy has no uid");
    }
}
