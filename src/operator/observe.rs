//! Pipeline step 3 for one policy, observe ([`crate::engine::observe::observe`], as the CLI
//! observes): its keys from its connection's shared listing (or its own, read now), its own
//! settings entry, its Secrets.

use super::context::Context;
use super::secrets::KubeSecrets;
use crate::engine::observe::Reach;
pub use crate::engine::observe::{ObserveError, Observed};
use crate::model::desired::{ConnectionId, DesiredState, LABEL_KEY, LABEL_POLICY};
use crate::policy::ApiKeyPolicy;
use crate::providers::{CmsProvider, LiveKey, ProviderError};

/// How old the shared listing may be for a reconcile that is not only a drift check (a new
/// or changed policy): a cold start of many policies shares a few full listings instead of
/// reading each policy's keys on its own.
pub const FIRST_READ_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// The policy's keys from its connection's shared listing (see [`super::listing`]), if it is
/// younger than `max_age`: one full CMS listing per connection per interval, not one per
/// policy. A hand-made change is seen at the next listing, within about one interval.
async fn keys_from_shared_listing(
    p: &ApiKeyPolicy,
    provider: &dyn CmsProvider,
    shared: &super::listing::SharedListings,
    conn: &ConnectionId,
    max_age: std::time::Duration,
) -> Result<Vec<LiveKey>, ProviderError> {
    let label = p.policy_id().label_value();
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
            .any(|c| c.type_ == super::status::READY && c.status == "True")
}

/// The policy's own keys in the CMS (one filtered listing).
pub async fn own_keys(
    provider: &dyn CmsProvider,
    p: &ApiKeyPolicy,
) -> Result<Vec<LiveKey>, ProviderError> {
    provider
        .list_keys_labeled(LABEL_POLICY, &p.policy_id().label_value())
        .await
}

/// Whether a key of `state` adopts a key and the policy owns none for it yet: then the keys
/// adoptions name are read from the whole listing (only then).
fn adopting(state: &DesiredState, own: &[LiveKey]) -> bool {
    state.keys.iter().any(|d| {
        d.adopt.is_some()
            && !own.iter().any(|k| {
                k.spec.labels.get(LABEL_KEY) == Some(&d.key) && d.policy.owns(&k.spec.labels)
            })
    })
}

/// Step 3: the desired specs as this CMS holds them, its keys and settings, and the Secrets.
pub async fn observe(
    p: &ApiKeyPolicy,
    provider: &dyn CmsProvider,
    state: DesiredState,
    sink: &KubeSecrets,
    shared: Option<(&Context, &ConnectionId, std::time::Duration)>,
) -> Result<Observed, ObserveError> {
    let live = async {
        let mut keys = match shared {
            Some((ctx, conn, max_age)) => {
                keys_from_shared_listing(p, provider, &ctx.listings, conn, max_age).await?
            }
            None => own_keys(provider, p).await?,
        };
        if adopting(&state, &keys) {
            let named = provider.list_keys().await?.into_iter().filter(|k| {
                state
                    .keys
                    .iter()
                    .any(|d| d.adopt.as_ref().is_some_and(|a| a.names(k)))
            });
            let named: Vec<LiveKey> = named
                .filter(|k| !keys.iter().any(|o| o.id == k.id))
                .collect();
            keys.extend(named);
        }
        Ok(keys)
    };
    let owner = p.policy_id().settings_owner();
    let reach = Reach::Policy {
        settings_owner: &owner,
    };
    crate::engine::observe::observe(provider, sink, &state, live, reach).await
}
