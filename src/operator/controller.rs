//! The controller's wiring: what it watches, what each watch wakes, and the reflector stores the
//! pipeline reads. Policies are reconciled on spec, annotation, finalizer and deletion changes
//! (not on their own status writes); a change of a connection, a credential Secret or a
//! namespace's labels wakes the policies that use it; the Secrets keyward writes are owned and
//! watched metadata-only.

use super::connection::connection_of;
use super::context::{Context, Stores};
use super::dereference::CREDENTIAL_LABEL;
use super::{reconcile, DefaultConnection};
use crate::model::desired::ConnectionId;
use crate::policy::{ApiKeyPolicy, ClusterCmsConnection, CmsConnection};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Arc;

/// A watch stream that also fills a store.
type Reflected<K> = std::pin::Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>;

fn reflected<K>(api: Api<K>, cfg: watcher::Config) -> (Store<K>, Reflected<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(api, cfg)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (store, Box::pin(stream))
}

/// A store that is ready and stays empty, for what an operator confined to one namespace does
/// not watch (it has no right to).
fn unwatched<K>() -> (Store<K>, Reflected<K>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, Box::pin(futures::stream::pending()))
}

fn api<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &Client,
    namespace: &Option<String>,
) -> Api<K>
where
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The policies that use a connection.
fn policies_using(
    store: &Store<ApiKeyPolicy>,
    conn: &ConnectionId,
    default: &Option<DefaultConnection>,
) -> Vec<ObjectRef<ApiKeyPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| connection_of(p, default).as_ref() == Some(conn))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The policies whose connection reads Secret `ns/name` (its credential or its CA).
fn policies_reading_secret(
    stores: &Stores,
    default: &Option<DefaultConnection>,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<ApiKeyPolicy>> {
    let mut out = Vec::new();
    for c in stores.connections.state() {
        let own = c.namespace().unwrap_or_default();
        if c.spec.secrets_read(&own).reads(ns, name) {
            let id = ConnectionId::CmsConnection {
                namespace: own,
                name: c.name_any(),
            };
            out.extend(policies_using(&stores.policies, &id, default));
        }
    }
    for c in stores.cluster_connections.state() {
        if c.spec.secrets_read().is_some_and(|r| r.reads(ns, name)) {
            let id = ConnectionId::ClusterCmsConnection { name: c.name_any() };
            out.extend(policies_using(&stores.policies, &id, default));
        }
    }
    out
}

/// The policies of a namespace (its labels decide which cluster connections admit it).
fn policies_in(store: &Store<ApiKeyPolicy>, ns: &str) -> Vec<ObjectRef<ApiKeyPolicy>> {
    store
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
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

/// A store and the events that wake the policies using what it holds.
type Watched<K> = (Store<K>, Reflected<K>);

/// What the policies use besides themselves.
struct Related {
    connections: Watched<CmsConnection>,
    cluster_connections: Watched<ClusterCmsConnection>,
    namespaces: Watched<PartialObjectMeta<Namespace>>,
    credentials: Watched<PartialObjectMeta<Secret>>,
}

/// With `--namespace`, nothing outside it is read (the chart then grants namespaced Roles
/// only): no cluster connections, no namespace labels, credentials of that namespace only.
fn related(client: &Client, namespace: &Option<String>) -> Related {
    let credentials = watcher::Config::default().labels(&format!("{CREDENTIAL_LABEL}=true"));
    let Some(ns) = namespace else {
        return Related {
            connections: reflected(api::<CmsConnection>(client, namespace), Default::default()),
            cluster_connections: reflected(
                Api::<ClusterCmsConnection>::all(client.clone()),
                Default::default(),
            ),
            // `Api<PartialObjectMeta<_>>` lists and watches metadata only: labels are all it
            // needs.
            namespaces: reflected(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                Default::default(),
            ),
            // Credentials may live outside a watched namespace (a cluster connection's): all
            // the labelled ones, metadata only (their data is read for the ones connections
            // name, when they change).
            credentials: reflected(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                credentials,
            ),
        };
    };
    Related {
        connections: reflected(api::<CmsConnection>(client, namespace), Default::default()),
        cluster_connections: unwatched(),
        namespaces: unwatched(),
        credentials: reflected(
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
            credentials,
        ),
    }
}

/// What keyward makes for its policies: owned (a change wakes their policy, a deleted one is
/// made again at once) and read from stores, not the API server.
struct Owned {
    /// The Secrets keyward writes, watched metadata-only: their resourceVersions let drift
    /// checks skip reading them.
    secrets: Watched<PartialObjectMeta<Secret>>,
    /// Readers' Roles and RoleBindings.
    roles: Watched<Role>,
    bindings: Watched<RoleBinding>,
}

fn owned(client: &Client, namespace: &Option<String>) -> Owned {
    let secrets = watcher::Config::default().labels(&crate::model::secret::written_by_keyward());
    let readers = || watcher::Config::default().labels("keyward.dev/policy");
    Owned {
        secrets: reflected(api::<PartialObjectMeta<Secret>>(client, namespace), secrets),
        roles: reflected(api::<Role>(client, namespace), readers()),
        bindings: reflected(api::<RoleBinding>(client, namespace), readers()),
    }
}

/// The policy a Secret keyward wrote belongs to: its ownerReference, or for a retained one
/// (no ownerReference) the policy its labels name; a change to it wakes that policy.
fn policy_of_secret(s: PartialObjectMeta<Secret>) -> Option<ObjectRef<ApiKeyPolicy>> {
    use crate::model::secret::{LABEL_SECRET_POLICY, LABEL_SECRET_POLICY_UID};
    let namespace = s.namespace()?;
    let owner = s
        .owner_references()
        .iter()
        .find(|r| r.kind == "ApiKeyPolicy" && r.api_version == ApiKeyPolicy::api_version(&()));
    match owner {
        Some(r) => Some(ObjectRef::new(&r.name).within(&namespace)),
        None if s.labels().contains_key(LABEL_SECRET_POLICY_UID) => {
            let name = s.labels().get(LABEL_SECRET_POLICY)?;
            Some(ObjectRef::new(name).within(&namespace))
        }
        None => None,
    }
}

/// Every policy, for the decisions no shard may make alone (in-use finalizers, what a namespace
/// holds on a shared connection): the reconciled store itself when there is no `--selector`,
/// else a watch of its own (policies are small; sharded operators are few).
fn every_policy(
    client: &Client,
    cfg: &super::OperatorConfig,
    reconciled: &Store<ApiKeyPolicy>,
) -> Watched<ApiKeyPolicy> {
    if cfg.label_selector.is_none() {
        return (reconciled.clone(), Box::pin(futures::stream::pending()));
    }
    reflected(
        api::<ApiKeyPolicy>(client, &cfg.namespace),
        Default::default(),
    )
}

/// The policies (filtered by `--selector`) and the changes that call for a reconcile.
fn policy_trigger(
    client: &Client,
    cfg: &super::OperatorConfig,
) -> (
    Store<ApiKeyPolicy>,
    impl Stream<Item = Result<ApiKeyPolicy, watcher::Error>>,
) {
    let mut policy_watch = watcher::Config::default().any_semantic();
    if let Some(sel) = &cfg.label_selector {
        policy_watch = policy_watch.labels(sel);
    }
    let (policies, policy_writer) = reflector::store::<ApiKeyPolicy>();
    let trigger = watcher(api::<ApiKeyPolicy>(client, &cfg.namespace), policy_watch)
        .default_backoff()
        .reflect(policy_writer)
        .applied_objects()
        .predicate_filter(relevant_change, Default::default());
    (policies, trigger)
}

/// Runs the controller until the stream ends; the caller handles leadership.
pub async fn run_controller(ctx: Arc<Context>) {
    run_controller_until(ctx, super::Shutdown::new().1).await
}

/// What runs beside the reconciles: the in-use finalizers, the connections' status, and, once
/// a minute, dropping what is kept for policies and connections that are gone.
async fn upkeep(ctx: Arc<Context>, stores: Stores) {
    let in_use = super::in_use::keep(
        ctx.client.clone(),
        stores.clone(),
        ctx.config.default_connection.clone(),
    );
    let interval = ctx.config.connection_check_interval;
    let connection_status = super::connection_status::keep(ctx.clone(), stores.clone(), interval);
    let forget = async {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            ctx.forget_gone(&stores);
        }
    };
    tokio::select! {
        _ = in_use => {}
        _ = connection_status => {}
        _ = forget => {}
    }
}

/// Runs the controller until `shutdown`: then it takes no new work and returns when the
/// running reconciles have finished.
pub async fn run_controller_until(ctx: Arc<Context>, shutdown: super::Shutdown) {
    let client = ctx.client.clone();
    let cfg = ctx.config.clone();
    let (policies, trigger) = policy_trigger(&client, &cfg);
    let (every_policy, every_policy_events) = every_policy(&client, &cfg, &policies);
    let Related {
        connections: (connections, connection_events),
        cluster_connections: (cluster_connections, cluster_events),
        namespaces: (namespaces, namespace_events),
        credentials: (credentials, credential_events),
    } = related(&client, &cfg.namespace);
    let Owned {
        secrets: (owned, owned_events),
        roles: (reader_roles, role_events),
        bindings: (reader_bindings, binding_events),
    } = owned(&client, &cfg.namespace);
    let stores = Stores {
        policies: policies.clone(),
        every_policy,
        connections,
        cluster_connections,
        namespaces,
        credentials,
        owned_secrets: owned,
        reader_roles,
        reader_bindings,
    };
    ctx.set_stores(Some(stores.clone()));
    ctx.metrics.set_ready(true);
    let default = cfg.default_connection.clone();
    let (s1, d1) = (policies.clone(), default.clone());
    let (s2, d2) = (policies.clone(), default.clone());
    let (s3, d3) = (stores.clone(), default.clone());
    let s4 = policies.clone();
    let upkeep = upkeep(ctx.clone(), stores.clone());
    let controller = Controller::for_stream(trigger, policies)
        .watches_stream(owned_events, policy_of_secret)
        .owns_stream(role_events)
        .owns_stream(binding_events)
        .watches_stream(connection_events, move |c: CmsConnection| {
            let id = ConnectionId::CmsConnection {
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
            };
            policies_using(&s1, &id, &d1)
        })
        .watches_stream(cluster_events, move |c: ClusterCmsConnection| {
            policies_using(
                &s2,
                &ConnectionId::ClusterCmsConnection { name: c.name_any() },
                &d2,
            )
        })
        .watches_stream(credential_events, move |s: PartialObjectMeta<Secret>| {
            policies_reading_secret(&s3, &d3, &s.namespace().unwrap_or_default(), &s.name_any())
        })
        .watches_stream(namespace_events, move |n: PartialObjectMeta<Namespace>| {
            policies_in(&s4, &n.name_any())
        })
        .with_config(
            ControllerConfig::default()
                .concurrency(u16::try_from(cfg.workers.max(1)).unwrap_or(u16::MAX)),
        )
        .graceful_shutdown_on(shutdown.requested())
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        });
    // The upkeep runs while the controller runs, and stops with it.
    tokio::select! {
        _ = controller => {}
        _ = upkeep => {}
        _ = every_policy_events.for_each(|_| async {}) => {}
    }
    ctx.set_stores(None);
    ctx.metrics.set_ready(false);
}
