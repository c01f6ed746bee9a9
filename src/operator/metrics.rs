//! Prometheus metrics and the health endpoints, served on `--metrics-addr`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct KeyLabels {
    pub namespace: String,
    pub policy: String,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PolicyLabels {
    pub namespace: String,
    pub policy: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub duration: Histogram,
    pub keys: Family<StateLabels, Gauge>,
    /// When each key expires, as a Unix time: it does not go stale between reconciles, as a
    /// count of seconds left would.
    pub key_expiry: Family<KeyLabels, Gauge<f64, AtomicU64>>,
    /// 1 while a policy is Ready, 0 while it is not.
    pub policy_ready: Family<PolicyLabels, Gauge>,
    /// Set once the controller runs (and, with leader election, leads).
    pub ready: AtomicBool,
    /// Cleared when the controller stopped on its own: `/healthz` then answers 503.
    pub healthy: AtomicBool,
    /// 1 while this replica's controller runs (with leader election: while it leads).
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts a reconcile and its duration.
    pub fn observe_reconcile(&self, took: std::time::Duration, ok: bool) {
        self.duration.observe(took.as_secs_f64());
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// Counts a failed reconcile by its reason.
    pub fn count_failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyward");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let keys = Family::<StateLabels, Gauge>::default();
        let key_expiry = Family::<KeyLabels, Gauge<f64, AtomicU64>>::default();
        let policy_ready = Family::<PolicyLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica's controller runs (leads, with leader election)",
            leader.clone(),
        );
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register(
            "keys",
            "Keys by state (ready, expiring, missing)",
            keys.clone(),
        );
        registry.register(
            "key_expiry_timestamp_seconds",
            "When each key expires (Unix time)",
            key_expiry.clone(),
        );
        registry.register(
            "policy_ready",
            "1 while the policy is Ready, 0 while it is not",
            policy_ready.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            keys,
            key_expiry,
            policy_ready,
            ready: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            leader,
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// `/metrics`, `/healthz` (the process runs and its controller has not stopped on its own),
/// `/readyz` (the controller runs).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.encode() }),
        )
        .route(
            "/healthz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.healthy.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "the controller stopped")
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(metrics)
}
