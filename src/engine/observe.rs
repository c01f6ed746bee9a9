//! Pipeline steps observe and plan, written once for the CLI and the operator: the desired
//! state as this CMS will report it back, the CMS's keys and settings, the Secrets, then the
//! pure diff. Each side says only where the live keys come from (the CLI lists the connection's
//! keys; the operator reads its connection's shared listing or the policy's own keys) and whose
//! settings entries it reads.

use super::{observe_secrets, SecretSink, SinkError};
use crate::model::desired::{
    DesiredSettings, DesiredState, PolicyId, PolicySettings, LABEL_KEY, LABEL_POLICY,
    LABEL_POLICY_UID,
};
use crate::model::secret::ObservedSecrets;
use crate::plan::{diff, Plan};
use crate::providers::{
    express_state, CmsProvider, ExpressError, LiveKey, LiveSettings, ProviderError,
};
use jiff::Timestamp;
use std::collections::BTreeSet;
use std::future::Future;

/// What the CMS and the Secrets hold for a desired state now.
pub struct Observed {
    /// The desired state as this CMS will report it back.
    pub state: DesiredState,
    pub live: Vec<LiveKey>,
    pub settings: LiveSettings,
    pub secrets: ObservedSecrets,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// Only the CMS's catalog shows it: an API it does not have, say.
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    /// The CMS cannot be read.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Secret(#[from] SinkError),
}

/// Whose CMS settings entries are read, and what is added to the desired state.
#[derive(Clone, Copy, Debug)]
pub enum Reach<'a> {
    /// One policy's own entry (the operator never writes another policy's).
    Policy { settings_owner: &'a str },
    /// Every entry; with `prune`, the CLI-made policies no longer in the manifests are added
    /// as gone (see [`prune_gone`]).
    Connection { prune: bool },
}

/// Step observe: `state` as the CMS holds it, the keys `live` reads, the settings `reach`
/// names and the Secrets of the desired keys.
pub async fn observe(
    provider: &dyn CmsProvider,
    sink: &dyn SecretSink,
    state: &DesiredState,
    live: impl Future<Output = Result<Vec<LiveKey>, ProviderError>>,
    reach: Reach<'_>,
) -> Result<Observed, ObserveError> {
    let state = express_state(provider, state).await.map_err(|e| match e {
        ExpressError::Refused(msgs) => ObserveError::Refused(msgs),
        ExpressError::Provider(e) => ObserveError::Provider(e),
    })?;
    let live = live.await?;
    let owner = match reach {
        Reach::Policy { settings_owner } => Some(settings_owner),
        Reach::Connection { .. } => None,
    };
    let settings = provider.settings(&state.public_apis(), owner).await?;
    let state = match reach {
        Reach::Connection { prune: true } => prune_gone(&state, &live, &settings),
        _ => state,
    };
    let secrets = observe_secrets(sink, &state.keys).await?;
    Ok(Observed {
        state,
        live,
        settings,
        secrets,
    })
}

/// Step plan: the pure diff of what was observed, the Secrets' templates given `endpoint`.
pub fn plan(o: &Observed, endpoint: &str, now: Timestamp) -> Plan {
    diff(&o.state, &o.live, &o.settings, &o.secrets, endpoint, now)
}

/// The desired state plus, as policies without keys, every policy that owns keys in the CMS but
/// is not in the manifests, so that the plan revokes their keys; and, as empty entries, the
/// settings entries of such policies, so that their CORS origins and public endpoints go. Only
/// what the CLI made counts: a key or entry tagged with a policy UID belongs to a cluster's
/// operator and is never pruned here, an entry of another owner is never touched.
pub fn prune_gone(state: &DesiredState, live: &[LiveKey], settings: &LiveSettings) -> DesiredState {
    let mut out = state.clone();
    for owner in settings.owners.keys() {
        let Some(policy) = PolicyId::from_cli_settings_owner(owner) else {
            continue;
        };
        out.settings
            .entry(owner.clone())
            .or_insert_with(|| DesiredSettings {
                policy,
                ..Default::default()
            });
    }
    let known: BTreeSet<String> = state.policies.keys().map(|p| p.to_string()).collect();
    for k in live {
        if k.spec.labels.contains_key(LABEL_POLICY_UID) {
            continue;
        }
        let Some(id) = owner_from_tags(k) else {
            continue;
        };
        if !known.contains(&id.to_string()) {
            out.policies.entry(id).or_insert(PolicySettings {
                gone: true,
                ..Default::default()
            });
        }
    }
    out
}

/// The policy a CLI-made key names: its `namespace.policy.key` name read back with the key label
/// (a namespace has no dots), confirmed by the policy label; keyward 0.1 wrote `namespace/name`.
fn owner_from_tags(k: &LiveKey) -> Option<PolicyId> {
    let tag = k.spec.labels.get(LABEL_POLICY)?;
    let (namespace, name) = match tag.split_once('/') {
        Some(legacy) => legacy,
        None => {
            let key = k.spec.labels.get(LABEL_KEY)?;
            k.spec
                .name
                .strip_suffix(key.as_str())?
                .strip_suffix('.')?
                .split_once('.')?
        }
    };
    let id = PolicyId {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: None,
    };
    id.owns(&k.spec.labels).then_some(id)
}
