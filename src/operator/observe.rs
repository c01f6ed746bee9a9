//! Pipeline steps 2 to 4 for one policy: validate (the spec, then what the connection's provider
//! can hold), observe (the CMS's keys and settings, the Secrets) and plan (the pure diff).

use super::context::Context;
use super::dereference::Conn;
use super::secrets::KubeSecrets;
use crate::engine::{observe_secrets, SinkError};
use crate::model::desired::{
    ConnectionId, DesiredSettings, DesiredState, PolicyId, PolicySettings, LABEL_POLICY,
};
use crate::plan::{diff, ObservedSecrets, Plan};
use crate::policy::validate::{fit_to_provider, policy_keys, Severity};
use crate::policy::{ApiKeyPolicy, DeletionPolicy, ManagementPolicy};
use crate::providers::ProviderError;
use crate::providers::{express_state, CmsProvider, ExpressError, LiveKey, LiveSettings};
use jiff::Timestamp;
use kube::ResourceExt;

/// The policy's identity as its keys' ownership tags carry it.
pub fn policy_id(p: &ApiKeyPolicy) -> PolicyId {
    PolicyId {
        namespace: p.namespace().unwrap_or_else(|| "default".into()),
        name: p.name_any(),
        uid: p.uid(),
    }
}

/// The spec breaks a rule, or asks what the provider cannot hold (`InvalidSpec`).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

/// Step 2: the policy's desired state on its connection: its keys and its own entry in the
/// CMS's shared settings (CORS origins, public endpoints).
pub fn validate(
    p: &ApiKeyPolicy,
    conn: &Conn,
    now: Timestamp,
) -> Result<DesiredState, InvalidSpec> {
    let (_, mut keys, diags) = policy_keys(p, None, now);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    if !errors.is_empty() {
        return Err(InvalidSpec(errors));
    }
    let refusals: Vec<String> = fit_to_provider(conn.provider, &p.spec, &mut keys)
        .into_iter()
        .map(|(path, reason)| format!("{path}: {reason}"))
        .collect();
    if !refusals.is_empty() {
        return Err(InvalidSpec(refusals));
    }
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
    // The policy's own entry in the CMS's shared settings: neighbours on the same connection
    // (in this shard or another) hold their own, so none overwrites another's.
    let id = policy_id(p);
    state.settings.insert(
        id.settings_owner(),
        DesiredSettings {
            policy: id.to_string(),
            want: p.spec.declared_settings(),
            observe_only: p.spec.management_policy == ManagementPolicy::ObserveOnly,
        },
    );
    Ok(state)
}

/// What the CMS and the cluster hold for the policy now.
pub struct Observed {
    /// The desired state as this CMS will report it back.
    pub state: DesiredState,
    pub live: Vec<LiveKey>,
    pub settings: LiveSettings,
    pub secrets: ObservedSecrets,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// Only the CMS's catalog shows it: an API it does not have, say (`InvalidSpec`).
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    /// The CMS cannot be read (`CmsUnavailable`, retried).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Secret(#[from] SinkError),
}

/// The policy's keys from its connection's shared listing (see [`super::listing`]): one full
/// CMS listing per connection per drift interval, not one per policy. A hand-made change is
/// seen at the next listing, within about one interval.
async fn keys_from_shared_listing(
    p: &ApiKeyPolicy,
    provider: &dyn CmsProvider,
    ctx: &Context,
    conn: &ConnectionId,
) -> Result<Vec<LiveKey>, ProviderError> {
    let max_age = ctx.config.drift_interval;
    let label = policy_id(p).label_value();
    let shared = &ctx.listings;
    // Its last writes were not read back (a failed apply): its own keys, read now.
    if shared.is_writing(conn, &label) {
        let own = own_keys(provider, p).await?;
        shared.patch(conn, &label, own.clone());
        return Ok(own);
    }
    if let Some(keys) = shared.keys_of(conn, &label, max_age) {
        return Ok(keys.to_vec());
    }
    let lock = shared.renewing(conn);
    let _renewing = lock.lock().await;
    // Another check may have renewed it while this one waited.
    if let Some(keys) = shared.keys_of(conn, &label, max_age) {
        return Ok(keys.to_vec());
    }
    let started = std::time::Instant::now();
    shared.keep(conn, provider.list_keys().await?, started);
    Ok(shared
        .keys_of(conn, &label, max_age)
        .map(|k| k.to_vec())
        .unwrap_or_default())
}

/// Whether this reconcile only checks a settled policy for drift: the spec it last applied,
/// `Ready`, not being deleted. Anything else (a change, a failure) reads the CMS afresh.
pub fn only_a_drift_check(p: &ApiKeyPolicy) -> bool {
    let Some(st) = &p.status else {
        return false;
    };
    p.metadata.deletion_timestamp.is_none()
        && st.observed_generation.is_some()
        && st.observed_generation == p.metadata.generation
        && st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The policy's own keys in the CMS (one filtered listing).
pub async fn own_keys(
    provider: &dyn CmsProvider,
    p: &ApiKeyPolicy,
) -> Result<Vec<LiveKey>, ProviderError> {
    provider
        .list_keys_labeled(LABEL_POLICY, &policy_id(p).label_value())
        .await
}

/// Step 3: the desired specs as this CMS holds them, its keys and settings, and the Secrets.
pub async fn observe(
    p: &ApiKeyPolicy,
    provider: &dyn CmsProvider,
    state: DesiredState,
    sink: &KubeSecrets,
    shared: Option<(&Context, &ConnectionId)>,
) -> Result<Observed, ObserveError> {
    let state = express_state(provider, &state).await.map_err(|e| match e {
        ExpressError::Refused(msgs) => ObserveError::Refused(msgs),
        ExpressError::Provider(e) => ObserveError::Provider(e),
    })?;
    let live = match shared {
        Some((ctx, conn)) => keys_from_shared_listing(p, provider, ctx, conn).await?,
        None => own_keys(provider, p).await?,
    };
    // Only its own entry: the operator never writes another policy's.
    let owner = policy_id(p).settings_owner();
    let settings = provider
        .settings(&state.public_apis(), Some(&owner))
        .await?;
    let secrets = observe_secrets(sink, &state.keys).await?;
    Ok(Observed {
        state,
        live,
        settings,
        secrets,
    })
}

/// The plan names keys it cannot touch (a name taken by a key keyward does not own): `Conflict`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct Conflict(pub Vec<String>);

/// Step 4: the pure diff.
pub fn plan(o: &Observed, conn: &Conn, now: Timestamp) -> Result<Plan, Conflict> {
    let plan = diff(
        &o.state,
        &o.live,
        &o.settings,
        &o.secrets,
        &conn.endpoint,
        now,
    );
    if plan.problems.is_empty() {
        Ok(plan)
    } else {
        Err(Conflict(plan.problems))
    }
}
