//! `keyward operator`: the plan/apply engine as a Kubernetes controller.
//!
//! - `controller.rs`: a kube-runtime `Controller` over `ApiKeyPolicy`; it owns the Secrets it
//!   writes (watched metadata-only), keeps reflector stores of connections, labelled credential
//!   Secrets and namespaces, and maps their changes to the policies that use them.
//! - `reconcile.rs`: one reconcile as a pipeline of steps (dereference, validate, observe, plan,
//!   apply, publish, status), each in its own file with its own error; the plan and the engine
//!   are the CLI's; Kubernetes Secrets are the sink (`secrets.rs`).
//! - `context.rs`: what reconciles share. `status.rs`, `metrics.rs`: conditions and metrics.
//!
//! Leader election uses a coordination.k8s.io Lease (kube-lease-manager); only the leader runs
//! the controller.

mod connection;
pub mod connection_status;
mod context;
mod controller;
mod dereference;
mod events;
pub(crate) mod in_use;
pub(crate) mod listing;
pub mod metrics;
mod observe;
pub(crate) mod offboarding;
mod plan;
mod publish;
pub mod reconcile;
mod report;
mod rotation;
pub(crate) mod secrets;
pub mod status;
mod validate;
mod worker_slots;

pub use context::{Context, Stores};
pub use controller::{run_controller, run_controller_until};
pub use dereference::CREDENTIAL_LABEL;
pub use rotation::{ROTATE, ROTATE_KEYS, ROTATE_NOW};

use kube::Client;
use metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// The connection of policies that name none (`--default-connection`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultConnection {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl DefaultConnection {
    pub fn id(&self) -> crate::model::desired::ConnectionId {
        use crate::model::desired::ConnectionId;
        match self {
            Self::Namespaced { namespace, name } => ConnectionId::CmsConnection {
                namespace: namespace.clone(),
                name: name.clone(),
            },
            Self::Cluster { name } => ConnectionId::ClusterCmsConnection { name: name.clone() },
        }
    }
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
    /// How long a stop waits for running reconciles (below the pod's
    /// terminationGracePeriodSeconds, 30 s by default).
    pub shutdown_grace: Duration,
    /// How long the CMS calls of one reconcile may wait for retries in all.
    pub retry_budget: Duration,
    /// How long a policy whose namespace its connection stopped admitting keeps its keys
    /// before they are revoked.
    pub offboarding_grace: Duration,
    /// How long one reconcile's CMS calls may take in all (each gets what is left).
    pub reconcile_timeout: Duration,
    /// Reconciles at once.
    pub workers: usize,
    /// Reconciles at once on one connection: one connection that hangs can hold no more.
    pub workers_per_connection: usize,
    /// Where connections may point (`--allowed-endpoints`: host patterns and CIDRs; empty:
    /// anywhere but link-local and metadata addresses).
    pub allowed_endpoints: Vec<String>,
    /// How often a connection that did not change is checked again (one cheap CMS call).
    pub connection_check_interval: Duration,
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
            shutdown_grace: Duration::from_secs(20),
            retry_budget: Duration::from_secs(5),
            offboarding_grace: Duration::from_secs(3600),
            reconcile_timeout: Duration::from_secs(60),
            workers: 8,
            workers_per_connection: 2,
            allowed_endpoints: Vec::new(),
            connection_check_interval: Duration::from_secs(300),
        }
    }
}

/// Aborts a task when dropped, so stopping the operator stops everything it spawned.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks a running operator to stop, as Kubernetes does with SIGTERM: it takes no new work,
/// lets running reconciles finish (up to [`OperatorConfig::shutdown_grace`]), releases its
/// Lease and returns.
#[derive(Clone, Debug)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    /// A trigger (send `true` to stop) and the signal to hand to [`run`].
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once a stop is asked for; never, if the trigger is dropped without asking.
    pub async fn requested(mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs the operator until `shutdown`: with leader election, the controller runs only while
/// this replica leads.
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
    ));
    let grace = config.shutdown_grace;
    let Some(le) = config.leader_election.clone() else {
        let controller = AbortOnDrop(tokio::spawn(run_controller_until(ctx, shutdown.clone())));
        let never_lost = std::future::pending();
        return match supervise(controller, shutdown, grace, &metrics, never_lost).await {
            Stopped::Failed(e) => Err(e),
            Stopped::Asked | Stopped::LostLeadership => Ok(()),
        };
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
    let lease = AbortOnDrop(lease_task);
    loop {
        tokio::select! {
            led = wait_for_leadership(&mut leading, &le.identity) => led?,
            _ = shutdown.clone().requested() => return release(leading, lease, &le.identity).await,
        }
        tracing::info!(identity = %le.identity, "leading: starting the controller");
        let controller = AbortOnDrop(tokio::spawn(run_controller_until(
            ctx.clone(),
            shutdown.clone(),
        )));
        let lost = leadership_lost(&mut leading);
        match supervise(controller, shutdown.clone(), grace, &metrics, lost).await {
            // Another replica takes over.
            Stopped::LostLeadership => {
                tracing::warn!(identity = %le.identity, "lost leadership: controller stopped")
            }
            Stopped::Asked => return release(leading, lease, &le.identity).await,
            // Holding the Lease without a controller would stop every policy: let it go.
            Stopped::Failed(e) => {
                release(leading, lease, &le.identity).await?;
                return Err(e);
            }
        }
    }
}

/// How a running controller came to stop.
enum Stopped {
    /// A shutdown was asked for, and the running reconciles were drained.
    Asked,
    /// Leadership went to another replica; the controller was stopped at once.
    LostLeadership,
    /// It stopped on its own (a panic that escaped a reconcile, the in-use sweep, a watch):
    /// nothing reconciles any more, so the process reports itself unhealthy and exits.
    Failed(anyhow::Error),
}

/// Waits for the first of: a shutdown request, `lost` (leadership), or the controller ending
/// by itself, which is a failure: a process that kept its Lease and said "healthy" while
/// nothing reconciled would stop every tenant until someone noticed.
async fn supervise(
    mut controller: AbortOnDrop<()>,
    shutdown: Shutdown,
    grace: Duration,
    metrics: &Metrics,
    lost: impl std::future::Future<Output = ()>,
) -> Stopped {
    metrics.leader.set(1);
    let stopped = supervised(&mut controller, shutdown, grace, metrics, lost).await;
    metrics.leader.set(0);
    stopped
}

async fn supervised(
    controller: &mut AbortOnDrop<()>,
    shutdown: Shutdown,
    grace: Duration,
    metrics: &Metrics,
    lost: impl std::future::Future<Output = ()>,
) -> Stopped {
    tokio::select! {
        biased;
        _ = shutdown.requested() => {
            drain(controller, grace).await;
            Stopped::Asked
        }
        _ = lost => {
            controller.0.abort();
            Stopped::LostLeadership
        }
        ended = &mut controller.0 => {
            let why = match ended {
                Ok(()) => "its watches ended".to_owned(),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned());
                    format!("it panicked: {}", message.unwrap_or_default())
                }
                Err(e) => e.to_string(),
            };
            metrics.set_ready(false);
            metrics.set_healthy(false);
            tracing::error!(why = %why, "the controller stopped on its own: exiting so that the operator is restarted");
            Stopped::Failed(anyhow::anyhow!("the controller stopped on its own: {why}"))
        }
    }
}

async fn wait_for_leadership(
    leading: &mut tokio::sync::watch::Receiver<bool>,
    identity: &str,
) -> anyhow::Result<()> {
    while !*leading.borrow_and_update() {
        tracing::info!(identity, "waiting for leadership");
        if leading.changed().await.is_err() {
            anyhow::bail!("leader election stopped");
        }
    }
    Ok(())
}

async fn leadership_lost(leading: &mut tokio::sync::watch::Receiver<bool>) {
    while leading.changed().await.is_ok() && *leading.borrow() {}
}

/// The controller was told to stop taking work: wait for its running reconciles, up to
/// `grace`, then abandon them. An abandoned reconcile loses at most a value that had not yet
/// reached its Secret: the next leader finds that key without its Secret and regenerates it
/// (with the rotation overlap, the old value keeps working meanwhile).
async fn drain(controller: &mut AbortOnDrop<()>, grace: Duration) {
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "stopping: no new reconciles; waiting for running ones"
    );
    if tokio::time::timeout(grace, &mut controller.0)
        .await
        .is_err()
    {
        tracing::warn!(
            grace_seconds = grace.as_secs(),
            "running reconciles did not finish in time: abandoned"
        );
    }
}

/// Gives the Lease up, so another replica can take over without waiting for it to run out.
async fn release(
    leading: tokio::sync::watch::Receiver<bool>,
    mut lease: AbortOnDrop<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
    identity: &str,
) -> anyhow::Result<()> {
    // Closing the channel makes the lease task release the Lease and end.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), &mut lease.0).await {
        Ok(Ok(Ok(_))) => tracing::info!(identity, "lease released"),
        Ok(Ok(Err(e))) => {
            tracing::warn!(identity, error = %e, "could not release the lease: it runs out by itself")
        }
        Ok(Err(e)) => tracing::warn!(identity, error = %e, "the lease task ended abnormally"),
        Err(_) => tracing::warn!(
            identity,
            "releasing the lease timed out: it runs out by itself"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_controller_that_stops_on_its_own_is_a_failure_and_unhealthy() {
        let metrics = Metrics::new();
        metrics.set_ready(true);
        let (_keep, shutdown) = Shutdown::new();
        let controller = AbortOnDrop(tokio::spawn(async { panic!("time out of range") }));
        let stopped = supervise(
            controller,
            shutdown,
            Duration::from_secs(1),
            &metrics,
            std::future::pending(),
        )
        .await;
        let Stopped::Failed(e) = stopped else {
            panic!("a panicked controller is a failure")
        };
        assert!(e.to_string().contains("time out of range"), "{e}");
        assert!(!metrics.healthy.load(std::sync::atomic::Ordering::Relaxed));
        assert!(!metrics.ready.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_shutdown_drains_and_is_not_a_failure() {
        let metrics = Metrics::new();
        let (stop, shutdown) = Shutdown::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let mut asked = shutdown.clone();
        let controller = AbortOnDrop(tokio::spawn(async move {
            let _ = asked.0.wait_for(|s| *s).await;
            let _ = done_tx.send(());
        }));
        stop.send(true).unwrap();
        let stopped = supervise(
            controller,
            shutdown,
            Duration::from_secs(5),
            &metrics,
            std::future::pending(),
        )
        .await;
        assert!(matches!(stopped, Stopped::Asked));
        assert!(
            done_rx.await.is_ok(),
            "the controller was drained, not aborted"
        );
        assert!(metrics.healthy.load(std::sync::atomic::Ordering::Relaxed));
    }
}
