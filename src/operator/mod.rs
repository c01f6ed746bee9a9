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

mod context;
mod controller;
mod dereference;
pub mod metrics;
mod observe;
mod publish;
pub mod reconcile;
mod report;
pub mod secrets;
pub mod status;

pub use context::{Context, Stores};
pub use controller::run_controller;
pub use dereference::CREDENTIAL_LABEL;

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
