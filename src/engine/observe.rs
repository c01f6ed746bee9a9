//! Pipeline steps observe and plan, written once for the CLI and the operator: the desired
//! state as this CMS will report it back, the CMS's keys and settings, the Secrets, then the
//! pure diff. Each side says only where the live keys come from (the CLI lists the connection's
//! keys; the operator reads its connection's shared listing or the policy's own keys) and whose
//! settings entries it reads.

use super::{observe_secrets, SecretSink, SinkError};
use crate::model::desired::{
    AdoptBy, DesiredSettings, DesiredState, PolicyId, PolicySettings, LABEL_KEY, LABEL_POLICY,
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
    /// The CMS has no key API: `live` holds the tracked keys as declared (see [`console_keys`]).
    pub console_only: bool,
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
    let console_only = !provider.has_key_api();
    let live = match console_only {
        false => live.await?,
        true => console_keys(&state),
    };
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
        console_only,
    })
}

/// On a CMS without a key API, the keys ObserveOnly policies track, as their entries declare
/// them: found by what `adopt` names, expiring when `adopt.expiresAt` says (what the console
/// shows). Nothing else of them can be read; the value in use is what is checked.
fn console_keys(state: &DesiredState) -> Vec<LiveKey> {
    let tracked = state.keys.iter().filter(|k| k.observe_only);
    tracked
        .filter_map(|k| {
            let a = k.adopt.as_ref()?;
            let mut spec = k.spec.clone();
            // Not keyward's: a key made by hand, named as the entry names it.
            spec.labels.clear();
            spec.expires_at = a.expires_at;
            let id = match &a.by {
                AdoptBy::Id(id) => id.clone(),
                AdoptBy::Name(name) => {
                    spec.name = name.clone();
                    name.clone()
                }
            };
            Some(LiveKey {
                id,
                spec,
                created_at: Timestamp::UNIX_EPOCH,
                rotated_at: None,
            })
        })
        .collect()
}

/// The keys made by hand that ObserveOnly policies track (`adopt` with `adopt.valueFrom`):
/// whether the CMS accepts the value in use, as (key, works); one call each, made with the
/// value. A check the CMS cannot answer now is left out (said in the log).
pub async fn probe_tracked<'a>(
    provider: &dyn CmsProvider,
    o: &'a Observed,
) -> Vec<(&'a crate::model::desired::DesiredKey, bool)> {
    let mut out = Vec::new();
    for k in o.state.keys.iter().filter(|k| k.observe_only) {
        let Some(a) = &k.adopt else {
            continue;
        };
        let (Some(value), Some(l)) = (&a.value, o.live.iter().find(|l| a.names(l))) else {
            continue;
        };
        match provider.verify_value(&l.id, value).await {
            Ok(works) => out.push((k, works)),
            Err(e) => tracing::warn!(key = %k.key, error = %e, "cannot check the value in use"),
        }
    }
    out
}

/// Step plan: the pure diff of what was observed, the Secrets' templates given `endpoint`.
/// On a CMS without a key API there is nothing to adopt: a tracked key stays the console's.
pub fn plan(o: &Observed, endpoint: &str, now: Timestamp) -> Plan {
    let mut plan = diff(&o.state, &o.live, &o.settings, &o.secrets, endpoint, now);
    if o.console_only {
        plan.actions
            .retain(|a| !matches!(a, crate::plan::Action::Adopt { .. }));
    }
    plan
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::LABEL_KEY;
    use crate::plan::testkit::{desired, live_of, now};

    /// A live key tagged as the CLI tags it, for policy `ns/name` and key `key`.
    fn cli_key(id: &str, ns: &str, name: &str, key: &str) -> LiveKey {
        let mut k = live_of(&desired(""), now());
        k.id = id.into();
        k.spec.name = format!("{ns}.{name}.{key}");
        let owner = PolicyId {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
        };
        k.spec.labels = [
            (LABEL_POLICY.to_owned(), owner.label_value()),
            (LABEL_KEY.to_owned(), key.to_owned()),
        ]
        .into();
        k
    }

    #[test]
    fn pruning_adds_the_cli_policies_gone_from_the_manifests_and_nothing_else() {
        let state = desired("");
        let mut operators = cli_key("op", "ns", "run", "k");
        operators
            .spec
            .labels
            .insert(LABEL_POLICY_UID.into(), "uid-1".into());
        let live = vec![
            live_of(&state, now()),
            cli_key("g1", "ns", "gone", "k"),
            operators,
        ];
        let gone = PolicyId {
            namespace: "ns".into(),
            name: "gone".into(),
            uid: None,
        };
        let settings = LiveSettings {
            owners: [
                (gone.settings_owner(), Default::default()),
                ("someone-else".to_owned(), Default::default()),
                (
                    PolicyId {
                        uid: Some("uid-1".into()),
                        ..gone.clone()
                    }
                    .settings_owner(),
                    Default::default(),
                ),
            ]
            .into(),
            ..Default::default()
        };
        let out = prune_gone(&state, &live, &settings);
        // The gone policy's keys are revoked (a policy without keys), its entry emptied.
        assert_eq!(
            out.policies.get(&gone),
            Some(&PolicySettings {
                gone: true,
                ..Default::default()
            })
        );
        let entry = &out.settings[&gone.settings_owner()];
        assert_eq!(entry.policy, "ns/gone", "the plan names whose entry goes");
        assert_eq!(entry.want, Default::default());
        // Neither an operator's (tagged with a uid) nor another owner's.
        assert_eq!(
            out.policies.len(),
            state.policies.len() + 1,
            "{:?}",
            out.policies
        );
        assert_eq!(
            out.settings.len(),
            state.settings.len() + 1,
            "{:?}",
            out.settings.keys()
        );
        assert_eq!(out.keys, state.keys);
    }
}
