//! `keyward operator`: the plan/apply engine as a Kubernetes controller.
//!
//! Design: a kube-runtime `Controller` over `ApiKeyPolicy` owns the Secrets it writes (watched
//! metadata-only) and also watches connections and their credential Secrets, mapping a change to
//! the policies that use them. Each reconcile runs the same pure plan and the same engine as the
//! CLI (`reconcile.rs`), with Kubernetes Secrets as the sink (`secrets.rs`). kube's finalizer
//! helper revokes keys on deletion. Status is written with server-side apply only when it
//! changed; events only on transitions. Leader election uses a coordination.k8s.io Lease
//! (kube-lease-manager); only the leader runs the controller.

pub mod metrics;
pub mod reconcile;
pub mod secrets;
pub mod status;

use crate::plan::desired::ConnectionId;
use crate::policy::{ApiKeyPolicy, ClusterCmsConnection, CmsConnection};
use crate::providers::CmsProvider;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use metrics::Metrics;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The connection of policies that name none (`--default-connection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultConnection {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl std::str::FromStr for DefaultConnection {
    type Err = String;
    /// `CmsConnection/NAMESPACE/NAME` or `ClusterCmsConnection/NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split('/').collect::<Vec<_>>().as_slice() {
            ["CmsConnection", ns, name] => Ok(Self::Namespaced {
                namespace: (*ns).into(),
                name: (*name).into(),
            }),
            ["ClusterCmsConnection", name] => Ok(Self::Cluster {
                name: (*name).into(),
            }),
            _ => Err(format!(
                "'{s}' is not CmsConnection/NAMESPACE/NAME or ClusterCmsConnection/NAME"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_seconds: u64,
}

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Watch one namespace only (sharding); all when `None`.
    pub namespace: Option<String>,
    /// Only policies matching this label selector (sharding).
    pub label_selector: Option<String>,
    pub default_connection: Option<DefaultConnection>,
    /// How often an unchanged policy re-reads the CMS to repair drift.
    pub drift_interval: Duration,
    pub field_manager: String,
    pub leader_election: Option<LeaderElection>,
    /// "Now" for plans, renewals and expiry reminders (the system clock but in tests).
    pub clock: crate::engine::Clock,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            namespace: None,
            label_selector: None,
            default_connection: None,
            drift_interval: Duration::from_secs(300),
            field_manager: "keyward".into(),
            leader_election: None,
            clock: crate::engine::Clock::system(),
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    providers: reconcile::ProviderCache,
    failures: Mutex<HashMap<String, u32>>,
    store: Mutex<Option<Store<ApiKeyPolicy>>>,
    /// Per policy: keys ready, expiring soon, missing; the `keyward_keys` gauge is their sum.
    key_states: Mutex<HashMap<String, [i64; 3]>>,
}

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
            store: Mutex::new(None),
            key_states: Mutex::new(HashMap::new()),
        }
    }

    pub fn provider(&self, conn: &reconcile::Conn) -> Result<Arc<dyn CmsProvider>, String> {
        reconcile::provider_for(&self.providers, conn)
    }

    /// The provider reconciles have used for a connection, if any (its call counts).
    pub fn used_provider(
        &self,
        kind: crate::policy::ProviderKind,
        endpoint: &str,
        credential: &str,
    ) -> Option<Arc<dyn CmsProvider>> {
        self.providers
            .lock()
            .get(&(kind, endpoint.to_owned(), credential.to_owned()))
            .cloned()
    }

    pub fn store(&self) -> Option<Store<ApiKeyPolicy>> {
        self.store.lock().clone()
    }

    fn key(p: &ApiKeyPolicy) -> String {
        format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
    }

    /// Per-object exponential backoff: 1 s, 2 s, 4 s ... at most 5 minutes.
    pub fn backoff(&self, p: &ApiKeyPolicy) -> Duration {
        let mut f = self.failures.lock();
        let n = f.entry(Self::key(p)).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300))
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

    pub fn forget_failures(&self, p: &ApiKeyPolicy) {
        self.failures.lock().remove(&Self::key(p));
    }
}

/// A hash of what should trigger a reconcile (periodic drift checks come from requeues).
fn relevant_change(p: &ApiKeyPolicy) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.metadata.generation.hash(&mut h);
    p.metadata.annotations.hash(&mut h);
    p.metadata.finalizers.hash(&mut h);
    p.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    Some(h.finish())
}

fn policies_using(
    store: &Store<ApiKeyPolicy>,
    conn: &ConnectionId,
    default: &Option<DefaultConnection>,
) -> Vec<ObjectRef<ApiKeyPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| reconcile::connection_of(p, default).as_ref() == Some(conn))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Runs the controller until the stream ends (shutdown); the caller handles leadership.
pub async fn run_controller(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let cfg = ctx.config.clone();
    let mut wc = watcher::Config::default().any_semantic();
    if let Some(sel) = &cfg.label_selector {
        wc = wc.labels(sel);
    }
    let (policies, secrets, conns): (Api<ApiKeyPolicy>, Api<Secret>, Api<CmsConnection>) =
        match &cfg.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    // Reconcile on what the operator must act on — spec (generation), annotations (force-sync),
    // finalizers and deletion — but not on its own status writes.
    let (store, writer) = kube::runtime::reflector::store::<ApiKeyPolicy>();
    let trigger = watcher(policies, wc.clone())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(relevant_change, Default::default());
    let controller = Controller::for_stream(trigger, store.clone());
    *ctx.store.lock() = Some(store.clone());
    let default = cfg.default_connection.clone();

    let (s1, d1) = (store.clone(), default.clone());
    let (s2, d2) = (store.clone(), default.clone());
    // Connections cache for mapping credential Secrets to the connections that use them.
    // They run inside this future (not spawned), so they stop with the controller.
    let (conn_reader, conn_writer) = kube::runtime::reflector::store::<CmsConnection>();
    let conn_cache = kube::runtime::reflector(
        conn_writer,
        watcher(conns.clone(), watcher::Config::default()).default_backoff(),
    )
    .applied_objects()
    .for_each(|_| async {});
    let (cluster_reader, cluster_writer) =
        kube::runtime::reflector::store::<ClusterCmsConnection>();
    let cluster_cache = kube::runtime::reflector(
        cluster_writer,
        watcher(Api::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .applied_objects()
    .for_each(|_| async {});
    let (s3, d3) = (store.clone(), default.clone());
    let secrets_meta: Api<PartialObjectMeta<Secret>> = match &cfg.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    ctx.metrics.set_ready(true);
    let run = controller
        .owns(
            secrets,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=keyward"),
        )
        .watches(
            conns,
            watcher::Config::default(),
            move |c: CmsConnection| {
                let id = ConnectionId::CmsConnection {
                    namespace: c.namespace().unwrap_or_default(),
                    name: c.name_any(),
                };
                policies_using(&s1, &id, &d1)
            },
        )
        .watches(
            Api::<ClusterCmsConnection>::all(client.clone()),
            watcher::Config::default(),
            move |c: ClusterCmsConnection| {
                policies_using(
                    &s2,
                    &ConnectionId::ClusterCmsConnection { name: c.name_any() },
                    &d2,
                )
            },
        )
        .watches(
            secrets_meta,
            watcher::Config::default(),
            move |s: PartialObjectMeta<Secret>| {
                // A credential Secret changed: the policies of every connection that reads it.
                let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
                let mut out = Vec::new();
                for c in conn_reader.state() {
                    let r = &c.spec.credentials_secret_ref;
                    if c.namespace().as_deref() == Some(ns.as_str()) && r.name == name {
                        out.extend(policies_using(
                            &s3,
                            &ConnectionId::CmsConnection {
                                namespace: ns.clone(),
                                name: c.name_any(),
                            },
                            &d3,
                        ));
                    }
                }
                for c in cluster_reader.state() {
                    let r = &c.spec.credentials_secret_ref;
                    if r.namespace.as_deref() == Some(ns.as_str()) && r.name == name {
                        out.extend(policies_using(
                            &s3,
                            &ConnectionId::ClusterCmsConnection { name: c.name_any() },
                            &d3,
                        ));
                    }
                }
                out
            },
        )
        .with_config(ControllerConfig::default().concurrency(8))
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        });
    tokio::select! {
        _ = run => {}
        _ = conn_cache => {}
        _ = cluster_cache => {}
    }
    ctx.metrics.set_ready(false);
}

/// Aborts a task when dropped, so stopping the operator stops everything it spawned.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the operator: with leader election, the controller runs only while this replica leads.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
    ));
    let Some(le) = config.leader_election.clone() else {
        run_controller(ctx).await;
        return Ok(());
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &le.lease_name)
        .with_namespace(&le.namespace)
        .with_identity(&le.identity)
        .with_duration(le.lease_seconds)
        .with_grace(le.lease_seconds.div_ceil(3).max(1))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    // A standby replica is healthy and ready: it is waiting to take over, and a readiness gate
    // that only the leader passes would stall every rollout.
    metrics.set_ready(true);
    let _lease = AbortOnDrop(lease_task);
    loop {
        while !*leading.borrow_and_update() {
            tracing::info!(identity = %le.identity, "waiting for leadership");
            if leading.changed().await.is_err() {
                anyhow::bail!("leader election stopped");
            }
        }
        tracing::info!(identity = %le.identity, "leading: starting the controller");
        let controller = AbortOnDrop(tokio::spawn(run_controller(ctx.clone())));
        // Stop at once when leadership is lost; another replica takes over.
        loop {
            if leading.changed().await.is_err() || !*leading.borrow() {
                break;
            }
        }
        drop(controller);
        tracing::warn!(identity = %le.identity, "lost leadership: controller stopped");
    }
}
