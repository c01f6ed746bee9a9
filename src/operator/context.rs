//! What every reconcile shares: the client, the configuration, metrics and events, the CMS
//! providers (one per connection, so a Strapi sign-in is reused), per-policy backoff, and the
//! reflector stores the pipeline reads instead of calling the API server.

use super::connection::Conn;
use super::listing::SharedListings;
use super::metrics::{self, Metrics};
use super::OperatorConfig;
use crate::model::desired::ConnectionId;
use crate::policy::{ApiKeyPolicy, ClusterCmsConnection, CmsConnection};
use crate::providers::CmsProvider;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The reflector stores of one controller run.
#[derive(Clone)]
pub struct Stores {
    /// The policies this operator reconciles (its shard, with `--selector`).
    pub policies: Store<ApiKeyPolicy>,
    /// Every policy it can see, whatever its shard: which connections are in use, and what a
    /// namespace holds on a shared connection, are never judged by one shard alone.
    pub every_policy: Store<ApiKeyPolicy>,
    pub connections: Store<CmsConnection>,
    pub cluster_connections: Store<ClusterCmsConnection>,
    /// Namespaces' labels, for the namespace selectors of cluster connections.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Secrets labelled `keyward.dev/credential: "true"`, metadata only: any tenant can label
    /// a Secret, so their data is read only for the Secrets a connection names.
    pub credentials: Store<PartialObjectMeta<Secret>>,
    /// The Secrets keyward wrote (`app.kubernetes.io/managed-by=keyward`), metadata only: their
    /// resourceVersions tell when a Secret read before is still as it was.
    pub owned_secrets: Store<PartialObjectMeta<Secret>>,
    /// The Roles and RoleBindings keyward made for readers (labelled `keyward.dev/policy`).
    pub reader_roles: Store<Role>,
    pub reader_bindings: Store<RoleBinding>,
}

/// What a drift check needs of a Secret keyward wrote, as last read, with the resourceVersion
/// it was read at; never a key value. Keyed by (policy uid, namespace, name, key field).
pub type SecretObservations = Arc<
    Mutex<
        HashMap<(String, String, String, String), (String, crate::model::secret::ObservedSecret)>,
    >,
>;

/// The operator looks connections up in its reflector stores (no API call).
impl crate::policy::connection::ConnectionLookup for Stores {
    fn cms_connection(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<crate::policy::CmsConnectionSpec> {
        let at = ObjectRef::new(name).within(namespace);
        self.connections.get(&at).map(|c| c.spec.clone())
    }

    fn cluster_connection(&self, name: &str) -> Option<crate::policy::ClusterCmsConnectionSpec> {
        let at = ObjectRef::new(name);
        self.cluster_connections.get(&at).map(|c| c.spec.clone())
    }

    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let at = ObjectRef::new(namespace);
        self.namespaces
            .get(&at)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }
}

impl Stores {
    /// Waits until every store has had its first listing, so that "not found" means not there.
    pub async fn ready(&self) {
        let _ = tokio::join!(
            self.policies.wait_until_ready(),
            self.every_policy.wait_until_ready(),
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

/// One CMS provider per connection, with a digest of what it was made from (kind, endpoint,
/// credential, CA): a change makes a new one in its place; a connection that is gone takes its
/// provider along. The credential itself is kept only by its provider.
type ProviderCache = Mutex<BTreeMap<ConnectionId, CachedProvider>>;

struct CachedProvider {
    made_from: [u8; 32],
    endpoint: String,
    provider: Arc<dyn CmsProvider>,
}

fn made_from(conn: &Conn) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(conn.provider.to_string().as_bytes());
    h.update([0]);
    h.update(conn.endpoint.as_bytes());
    h.update([0]);
    h.update(secrecy::ExposeSecret::expose_secret(&conn.credential).as_bytes());
    h.update([0]);
    h.update(conn.ca.as_deref().unwrap_or_default());
    h.finalize().into()
}

/// How long a reconcile waits for its connection's worker slot before it looks again later
/// (the worker is held that long at most: a connection that hangs frees no slot).
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    providers: ProviderCache,
    stores: Mutex<Option<Stores>>,
    /// What is kept per policy (`namespace/name`) between its reconciles.
    policies: Mutex<HashMap<String, PolicyMemory>>,
    /// Per connection: the keys its drift checks share (see `SharedListings`).
    pub listings: SharedListings,
    /// Secrets as last observed, so that a drift check of an unchanged Secret reads nothing.
    pub secret_observations: SecretObservations,
    /// Per (policy uid, workload kind and name, Secret): the Secret content hash the workload's
    /// pod template was last seen or patched with, so drift checks do not read the workload.
    pub restarts: Mutex<HashMap<(String, String, String), String>>,
    /// One new force-sync value per policy per [`FORCE_SYNC_EVERY`].
    force_sync_limiter: crate::cms::limits::Limiter<String>,
    /// One rotation asked on a policy per [`ROTATION_EVERY`]: each costs the CMS a hash.
    rotation_limiter: crate::cms::limits::Limiter<String>,
    /// Per connection: the workers its policies hold now (see `WorkerSlots`).
    connection_slots: super::worker_slots::WorkerSlots,
    /// Per (connection, namespace): held while a policy counts the namespace's keys and makes
    /// new ones, so that policies created together cannot pass the quota together.
    key_quota_locks: Mutex<HashMap<(ConnectionId, String), QuotaLock>>,
    /// Fields of the credential and CA Secrets connections name, each with the
    /// resourceVersion it was read at: (namespace, name, field) -> (version, bytes).
    secret_fields: Mutex<SecretFields>,
}

/// What the operator keeps for one policy between its reconciles; all of it goes with the
/// policy ([`Context::forget_policy`]).
#[derive(Default)]
struct PolicyMemory {
    /// After a failure: its backoff, from 1 s to 5 minutes, jittered.
    backoff: Option<backon::ExponentialBackoff>,
    /// Keys ready, expiring soon, missing; the `keyward_keys` gauge is the sum over policies.
    key_states: Option<[i64; 3]>,
    /// Its reconciles that ended well. One policy's next reconcile can be waited for by it;
    /// the `keyward_reconciles` total also moves for every other policy.
    reconciled: u64,
    /// Its next reconcile must read the CMS afresh (a new force-sync value).
    fresh_read: bool,
    /// The last `keyward.dev/force-sync` value acted on.
    force_sync: Option<String>,
    /// The label sets of its keys' `keyward_key_expiry_seconds` series, so that the series of
    /// a key or policy that is gone are removed with it.
    expiry_series: std::collections::BTreeSet<metrics::KeyLabels>,
}

type SecretFields = HashMap<(String, String, String), (String, Arc<[u8]>)>;

/// Held while one namespace's keys on one connection are counted and new ones made.
type QuotaLock = Arc<tokio::sync::Mutex<()>>;

/// The annotation whose every new value asks for an immediate reconcile.
pub const FORCE_SYNC: &str = "keyward.dev/force-sync";

/// How often a policy's force-sync is acted on at most: each costs a CMS listing, and a tenant
/// must not be able to turn the annotation into a load generator for a shared CMS.
pub const FORCE_SYNC_EVERY: Duration = Duration::from_secs(10);

/// A per-policy limiter letting one through per `period`.
fn once_per(period: Duration) -> crate::cms::limits::Limiter<String> {
    governor::RateLimiter::keyed(
        governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN)),
    )
}

/// How often a rotation asked on a policy (`keyward.dev/rotate`) is carried out at most: a
/// tenant changing the annotation in a loop would otherwise keep the shared CMS hashing.
pub const ROTATION_EVERY: Duration = Duration::from_secs(10);

impl Context {
    pub fn new(client: Client, config: OperatorConfig, metrics: Arc<Metrics>) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "keyward".into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        let connection_slots = super::worker_slots::WorkerSlots::new(
            config.workers,
            config.workers_per_connection,
            config.reconcile_timeout,
        );
        Context {
            client,
            config,
            metrics,
            recorder,
            providers: Mutex::new(BTreeMap::new()),
            stores: Mutex::new(None),
            policies: Default::default(),
            listings: SharedListings::default(),
            secret_observations: Default::default(),
            restarts: Default::default(),
            secret_fields: Default::default(),
            connection_slots,
            key_quota_locks: Default::default(),
            rotation_limiter: once_per(ROTATION_EVERY),
            force_sync_limiter: once_per(FORCE_SYNC_EVERY),
        }
    }

    /// Whether the policy's reconcile must read the CMS afresh (asked once, then forgotten).
    pub fn take_fresh_read(&self, p: &ApiKeyPolicy) -> bool {
        let mut policies = self.policies.lock();
        let fresh = policies.get_mut(&Self::key(p)).map(|m| &mut m.fresh_read);
        fresh.is_some_and(std::mem::take)
    }

    /// Whether a rotation asked on the policy may be carried out now (one per
    /// [`ROTATION_EVERY`]); a sooner one waits for a later reconcile.
    pub fn rotation_allowed(&self, p: &ApiKeyPolicy) -> bool {
        self.rotation_limiter.check_key(&Self::key(p)).is_ok()
    }

    /// How long a reconcile asked for by a new force-sync value must wait, if it came sooner
    /// than `FORCE_SYNC_EVERY` after the last one; `None`: go ahead.
    pub fn force_sync_wait(&self, p: &ApiKeyPolicy) -> Option<Duration> {
        use governor::clock::{Clock, DefaultClock};
        let value = p.annotations().get(FORCE_SYNC)?;
        let key = Self::key(p);
        let mut policies = self.policies.lock();
        if policies.get(&key).and_then(|m| m.force_sync.as_ref()) == Some(value) {
            return None;
        }
        match self.force_sync_limiter.check_key(&key) {
            Ok(()) => {
                let m = policies.entry(key).or_default();
                m.fresh_read = true;
                m.force_sync = Some(value.clone());
                None
            }
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// The last `keyward.dev/force-sync` value acted on for the policy `namespace/name`.
    pub fn force_sync_acted_on(&self, namespace: &str, name: &str) -> Option<String> {
        self.policies
            .lock()
            .get(&format!("{namespace}/{name}"))
            .and_then(|m| m.force_sync.clone())
    }

    /// The provider for a connection, made once and reused until the connection changes.
    pub fn provider(
        &self,
        conn: &Conn,
    ) -> Result<Arc<dyn CmsProvider>, crate::providers::ProviderError> {
        let digest = made_from(conn);
        let mut cache = self.providers.lock();
        if let Some(c) = cache.get(&conn.id).filter(|c| c.made_from == digest) {
            return Ok(c.provider.clone());
        }
        let credential = secrecy::ExposeSecret::expose_secret(&conn.credential);
        let provider: Arc<dyn CmsProvider> = conn
            .provider
            .connect(&conn.endpoint, credential, conn.ca.as_deref())?
            .into();
        cache.insert(
            conn.id.clone(),
            CachedProvider {
                made_from: digest,
                endpoint: conn.endpoint.clone(),
                provider: provider.clone(),
            },
        );
        Ok(provider)
    }

    /// The provider reconciles have used for the connection at `endpoint`, if any (its call
    /// counts).
    pub fn used_provider(&self, endpoint: &str) -> Option<Arc<dyn CmsProvider>> {
        self.providers
            .lock()
            .values()
            .find(|c| c.endpoint == endpoint)
            .map(|c| c.provider.clone())
    }

    /// How many providers are kept (one per connection in use).
    pub fn providers_kept(&self) -> usize {
        self.providers.lock().len()
    }

    /// A worker slot of the policy's connection, if one is free within a moment (`None`: its
    /// connection holds what it may hold). A policy without a connection needs none.
    pub async fn connection_slot(
        &self,
        p: &ApiKeyPolicy,
    ) -> Option<Option<super::worker_slots::Slot>> {
        let Some(id) = super::connection::connection_of(p, &self.config.default_connection) else {
            return Some(None);
        };
        self.connection_slots
            .take_within(id, SLOT_WAIT)
            .await
            .map(Some)
    }

    /// The lock of a namespace's key quota on a connection.
    pub fn key_quota_lock(&self, conn: &ConnectionId, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.key_quota_locks
            .lock()
            .entry((conn.clone(), ns.to_owned()))
            .or_default()
            .clone()
    }

    /// A Secret's field as read before, if the Secret is still at `version`.
    pub(super) fn cached_secret_field(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        version: &str,
    ) -> Option<Arc<[u8]>> {
        let fields = self.secret_fields.lock();
        let (at, data) = fields.get(&(ns.to_owned(), name.to_owned(), key.to_owned()))?;
        (at == version).then(|| data.clone())
    }

    /// Keeps a field just read; fields of Secrets gone from the store (deleted, unlabelled)
    /// are dropped.
    pub(super) fn cache_secret_field(
        &self,
        stores: &Stores,
        (ns, name, key): (&str, &str, &str),
        version: String,
        data: Arc<[u8]>,
    ) {
        use kube::runtime::reflector::ObjectRef;
        let mut fields = self.secret_fields.lock();
        fields.insert(
            (ns.to_owned(), name.to_owned(), key.to_owned()),
            (version, data),
        );
        fields.retain(|(ns, name, _), _| {
            stores
                .credentials
                .get(&ObjectRef::new(name).within(ns))
                .is_some()
        });
    }

    /// The bytes of Secret data the operator holds (the fields connections name).
    pub fn secret_bytes_held(&self) -> usize {
        self.secret_fields
            .lock()
            .values()
            .map(|(_, d)| d.len())
            .sum()
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
        let mut policies = self.policies.lock();
        policies
            .entry(Self::key(p))
            .or_default()
            .backoff
            .get_or_insert_with(|| {
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
        if let Some(m) = self.policies.lock().get_mut(&Self::key(p)) {
            m.backoff = None;
        }
    }

    /// Sets a policy's expiry series to `now` (`seconds` each) and removes those of keys it no
    /// longer has.
    /// The `keyward_policy_ready` series of a policy.
    pub fn set_policy_ready(&self, p: &ApiKeyPolicy, ready: bool) {
        let labels = metrics::PolicyLabels {
            namespace: p.namespace().unwrap_or_default(),
            policy: p.name_any(),
        };
        self.metrics
            .policy_ready
            .get_or_create(&labels)
            .set(i64::from(ready));
    }

    pub fn set_expiry_series(&self, p: &ApiKeyPolicy, now: Vec<(metrics::KeyLabels, f64)>) {
        let mut policies = self.policies.lock();
        let kept = &mut policies.entry(Self::key(p)).or_default().expiry_series;
        let fresh: std::collections::BTreeSet<_> = now.iter().map(|(l, _)| l.clone()).collect();
        for gone in kept.difference(&fresh) {
            self.metrics.key_expiry.remove(gone);
        }
        for (labels, at) in now {
            self.metrics.key_expiry.get_or_create(&labels).set(at);
        }
        *kept = fresh;
    }

    /// Everything kept for a policy that is gone: backoff, force-sync state, key counts and
    /// metric series, Secret observations.
    pub fn forget_policy(&self, key: &str, uid: Option<&str>) {
        let mut policies = self.policies.lock();
        if let Some(gone) = policies.remove(key) {
            for labels in gone.expiry_series {
                self.metrics.key_expiry.remove(&labels);
            }
            if gone.key_states.is_some() {
                self.publish_key_states(&policies);
            }
        }
        drop(policies);
        if let Some((namespace, policy)) = key.split_once('/') {
            self.metrics.policy_ready.remove(&metrics::PolicyLabels {
                namespace: namespace.to_owned(),
                policy: policy.to_owned(),
            });
        }
        if let Some(uid) = uid {
            self.secret_observations.lock().retain(|k, _| k.0 != uid);
            self.restarts.lock().retain(|k, _| k.0 != uid);
        }
    }

    /// Drops what is kept for policies and connections no longer in the stores (deleted while
    /// no reconcile saw it go, or by a path that kept nothing): a long-running operator's
    /// memory and metric series follow what exists, not all that ever did.
    pub fn forget_gone(&self, stores: &Stores) {
        let policies = stores.policies.state();
        let live: std::collections::HashSet<String> =
            policies.iter().map(|p| Self::key(p)).collect();
        let uids: std::collections::HashSet<String> =
            policies.iter().filter_map(|p| p.uid()).collect();
        for key in &self.policies_kept_beyond(&live) {
            self.forget_policy(key, None);
        }
        self.secret_observations
            .lock()
            .retain(|k, _| uids.contains(&k.0));
        self.restarts.lock().retain(|k, _| uids.contains(&k.0));
        self.force_sync_limiter.retain_recent();
        self.force_sync_limiter.shrink_to_fit();
        self.rotation_limiter.retain_recent();
        self.rotation_limiter.shrink_to_fit();
        let connections: std::collections::HashSet<ConnectionId> = stores
            .connections
            .state()
            .iter()
            .map(|c| ConnectionId::CmsConnection {
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
            })
            .chain(
                stores
                    .cluster_connections
                    .state()
                    .iter()
                    .map(|c| ConnectionId::ClusterCmsConnection { name: c.name_any() }),
            )
            .collect();
        self.providers
            .lock()
            .retain(|id, _| connections.contains(id));
        self.connection_slots.retain(|id| connections.contains(id));
        self.key_quota_locks
            .lock()
            .retain(|(id, _), lock| connections.contains(id) || Arc::strong_count(lock) > 1);
    }

    /// The policies (`namespace/name`) that something is kept for and that are not `live`.
    fn policies_kept_beyond(
        &self,
        live: &std::collections::HashSet<String>,
    ) -> std::collections::BTreeSet<String> {
        let policies = self.policies.lock();
        let kept = policies.keys().filter(|k| !live.contains(*k));
        kept.cloned().collect()
    }

    /// How many policies something is kept for (for tests: it must not grow with policies
    /// that are gone).
    pub fn policies_tracked(&self) -> usize {
        self.policies.lock().len()
    }

    /// Counts a reconcile of `p` that ended well (not of its deletion: that forgets it).
    pub fn count_reconciled(&self, p: &ApiKeyPolicy) {
        if p.metadata.deletion_timestamp.is_none() {
            let mut policies = self.policies.lock();
            let m = policies.entry(Self::key(p)).or_default();
            m.reconciled = m.reconciled.saturating_add(1);
        }
    }

    /// How many reconciles of the policy `namespace/name` ended well.
    pub fn reconciled(&self, namespace: &str, name: &str) -> u64 {
        self.policies
            .lock()
            .get(&format!("{namespace}/{name}"))
            .map_or(0, |m| m.reconciled)
    }

    /// Records a policy's key counts (`None` when the policy is gone) and updates the gauge.
    pub fn set_key_states(&self, p: &ApiKeyPolicy, counts: Option<[i64; 3]>) {
        let mut policies = self.policies.lock();
        match counts {
            Some(c) => policies.entry(Self::key(p)).or_default().key_states = Some(c),
            None => {
                if let Some(m) = policies.get_mut(&Self::key(p)) {
                    m.key_states = None;
                }
            }
        }
        self.publish_key_states(&policies);
    }

    /// The `keyward_keys` gauge: the sum of every policy's counts.
    fn publish_key_states(&self, policies: &HashMap<String, PolicyMemory>) {
        for (i, state) in ["ready", "expiring", "missing"].iter().enumerate() {
            let total: i64 = policies
                .values()
                .filter_map(|m| m.key_states)
                .map(|c| c[i])
                .sum();
            self.metrics
                .keys
                .get_or_create(&metrics::StateLabels {
                    state: (*state).into(),
                })
                .set(total);
        }
    }
}
