//! What every reconcile shares: the client, the configuration, metrics and events, the CMS
//! providers (one per connection, so a Strapi sign-in is reused), per-policy backoff, and the
//! reflector stores the pipeline reads instead of calling the API server.

use super::listing::SharedListings;
use super::metrics::{self, Metrics};
use super::OperatorConfig;
use crate::policy::{ApiKeyPolicy, ClusterCmsConnection, CmsConnection, ProviderKind};
use crate::providers::CmsProvider;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The reflector stores of one controller run.
#[derive(Clone)]
pub struct Stores {
    pub policies: Store<ApiKeyPolicy>,
    pub connections: Store<CmsConnection>,
    pub cluster_connections: Store<ClusterCmsConnection>,
    /// Namespaces' labels, for the namespace selectors of cluster connections.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Secrets labelled `keyward.dev/credential: "true"`, with their data.
    pub credentials: Store<Secret>,
    /// The Secrets keyward wrote (`app.kubernetes.io/managed-by=keyward`), metadata only: their
    /// resourceVersions tell when a Secret read before is still as it was.
    pub owned_secrets: Store<PartialObjectMeta<Secret>>,
    /// The Roles and RoleBindings keyward made for readers (labelled `keyward.dev/policy`).
    pub reader_roles: Store<Role>,
    pub reader_bindings: Store<RoleBinding>,
}

/// What a drift check needs of a Secret keyward wrote, as last read, with the resourceVersion
/// it was read at; never a key value. Keyed by (policy uid, namespace, name, key field).
pub type SecretObservations =
    Arc<Mutex<HashMap<(String, String, String, String), (String, crate::plan::ObservedSecret)>>>;

impl Stores {
    /// Waits until every store has had its first listing, so that "not found" means not there.
    pub async fn ready(&self) {
        let _ = tokio::join!(
            self.policies.wait_until_ready(),
            self.connections.wait_until_ready(),
            self.cluster_connections.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.credentials.wait_until_ready(),
            self.owned_secrets.wait_until_ready(),
            self.reader_roles.wait_until_ready(),
            self.reader_bindings.wait_until_ready(),
        );
    }
}

/// A CMS provider per connection: (kind, endpoint, digest of the credential and CA); the credential
/// itself is kept only by its provider.
type ProviderCache = Mutex<BTreeMap<(ProviderKind, String, [u8; 32]), Arc<dyn CmsProvider>>>;

fn cache_key(
    kind: ProviderKind,
    endpoint: &str,
    credential: &str,
    ca: Option<&[u8]>,
) -> (ProviderKind, String, [u8; 32]) {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(credential.as_bytes());
    h.update([0]);
    h.update(ca.unwrap_or_default());
    (kind, endpoint.to_owned(), h.finalize().into())
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    providers: ProviderCache,
    /// Per policy that failed: its backoff, from 1 s to 5 minutes, jittered.
    failures: Mutex<HashMap<String, backon::ExponentialBackoff>>,
    stores: Mutex<Option<Stores>>,
    /// Per policy: keys ready, expiring soon, missing; the `keyward_keys` gauge is their sum.
    key_states: Mutex<HashMap<String, [i64; 3]>>,
    /// Per connection: the keys its drift checks share (see [`SharedListings`]).
    pub listings: SharedListings,
    /// Secrets as last observed, so that a drift check of an unchanged Secret reads nothing.
    pub secret_observations: SecretObservations,
    /// Per (policy uid, workload kind and name, Secret): the Secret content hash the workload's
    /// pod template was last seen or patched with, so drift checks do not read the workload.
    pub restarts: Mutex<HashMap<(String, String, String), String>>,
    /// Policies whose next reconcile must read the CMS afresh (a new force-sync value).
    fresh_reads: Mutex<std::collections::HashSet<String>>,
    /// Per policy: the last `keyward.dev/force-sync` value acted on.
    force_syncs: Mutex<HashMap<String, String>>,
    /// One new force-sync value per policy per [`FORCE_SYNC_EVERY`].
    force_sync_limiter: crate::cms::limits::Limiter<String>,
}

/// The annotation whose every new value asks for an immediate reconcile.
pub const FORCE_SYNC: &str = "keyward.dev/force-sync";

/// How often a policy's force-sync is acted on at most: each costs a CMS listing, and a tenant
/// must not be able to turn the annotation into a load generator for a shared CMS.
pub const FORCE_SYNC_EVERY: Duration = Duration::from_secs(10);

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "keyward".into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        Context {
            client,
            config,
            metrics,
            recorder,
            providers: Mutex::new(BTreeMap::new()),
            failures: Mutex::new(HashMap::new()),
            stores: Mutex::new(None),
            key_states: Mutex::new(HashMap::new()),
            force_syncs: Mutex::new(HashMap::new()),
            listings: SharedListings::default(),
            fresh_reads: Mutex::new(Default::default()),
            secret_observations: Default::default(),
            restarts: Default::default(),
            force_sync_limiter: governor::RateLimiter::keyed(
                governor::Quota::with_period(FORCE_SYNC_EVERY)
                    .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN)),
            ),
        }
    }

    /// Whether the policy's reconcile must read the CMS afresh (asked once, then forgotten).
    pub fn take_fresh_read(&self, p: &ApiKeyPolicy) -> bool {
        self.fresh_reads.lock().remove(&Self::key(p))
    }

    /// The policy is going: what its drift checks kept of its Secrets goes too.
    pub fn forget_secret_observations(&self, p: &ApiKeyPolicy) {
        let uid = p.uid().unwrap_or_default();
        self.secret_observations.lock().retain(|k, _| k.0 != uid);
        self.restarts.lock().retain(|k, _| k.0 != uid);
    }

    /// How long a reconcile asked for by a new force-sync value must wait, if it came sooner
    /// than [`FORCE_SYNC_EVERY`] after the last one; `None`: go ahead.
    pub fn force_sync_wait(&self, p: &ApiKeyPolicy) -> Option<Duration> {
        use governor::clock::{Clock, DefaultClock};
        let value = p.annotations().get(FORCE_SYNC)?;
        let key = Self::key(p);
        let mut seen = self.force_syncs.lock();
        if seen.get(&key) == Some(value) {
            return None;
        }
        match self.force_sync_limiter.check_key(&key) {
            Ok(()) => {
                self.fresh_reads.lock().insert(key.clone());
                seen.insert(key, value.clone());
                None
            }
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// The provider for a connection, made once and reused.
    pub fn provider(
        &self,
        kind: ProviderKind,
        endpoint: &str,
        credential: &str,
        ca: Option<&[u8]>,
    ) -> Result<Arc<dyn CmsProvider>, crate::providers::ProviderError> {
        let key = cache_key(kind, endpoint, credential, ca);
        let mut cache = self.providers.lock();
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let p: Arc<dyn CmsProvider> = kind.connect(endpoint, credential, ca)?.into();
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// The provider reconciles have used for a connection, if any (its call counts).
    pub fn used_provider(
        &self,
        kind: ProviderKind,
        endpoint: &str,
        credential: &str,
    ) -> Option<Arc<dyn CmsProvider>> {
        self.providers
            .lock()
            .get(&cache_key(kind, endpoint, credential, None))
            .cloned()
    }

    pub(super) fn set_stores(&self, stores: Option<Stores>) {
        *self.stores.lock() = stores;
    }

    /// The stores of the running controller (`None` before it runs).
    pub fn stores(&self) -> Option<Stores> {
        self.stores.lock().clone()
    }

    /// The policies store (for tests and tools).
    pub fn store(&self) -> Option<Store<ApiKeyPolicy>> {
        self.stores().map(|s| s.policies)
    }

    fn key(p: &ApiKeyPolicy) -> String {
        format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
    }

    /// Per-object exponential backoff (backon, jittered): about 1 s, 2 s, 4 s ... at most
    /// 5 minutes; a success starts it over.
    pub fn backoff(&self, p: &ApiKeyPolicy) -> Duration {
        const MAX: Duration = Duration::from_secs(300);
        let mut f = self.failures.lock();
        f.entry(Self::key(p))
            .or_insert_with(|| {
                backon::BackoffBuilder::build(
                    backon::ExponentialBuilder::default()
                        .with_min_delay(Duration::from_secs(1))
                        .with_max_delay(MAX)
                        .without_max_times()
                        .with_jitter(),
                )
            })
            .next()
            .unwrap_or(MAX)
    }

    pub fn forget_failures(&self, p: &ApiKeyPolicy) {
        self.failures.lock().remove(&Self::key(p));
    }

    /// Records a policy's key counts (`None` when the policy is gone) and updates the gauge.
    pub fn set_key_states(&self, p: &ApiKeyPolicy, counts: Option<[i64; 3]>) {
        let mut states = self.key_states.lock();
        match counts {
            Some(c) => states.insert(Self::key(p), c),
            None => states.remove(&Self::key(p)),
        };
        for (i, state) in ["ready", "expiring", "missing"].iter().enumerate() {
            let total: i64 = states.values().map(|c| c[i]).sum();
            self.metrics
                .keys
                .get_or_create(&metrics::StateLabels {
                    state: (*state).into(),
                })
                .set(total);
        }
    }
}
