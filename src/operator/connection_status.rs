//! Connections' status: whether the CMS answers through each `CmsConnection` and
//! `ClusterCmsConnection`, and how many policies use it, so that a broken connection shows on
//! the connection rather than only on each policy that uses it.
//!
//! The stores are looked at every few seconds, at no API cost; a connection is checked when it,
//! its Secrets or its number of users changed, and on `--connection-check-interval`, with one
//! cheap call (`CmsProvider::check`) under a short deadline and no retries. Its status is
//! written (a merge patch of the status subresource) only when it changed: an unchanged
//! connection costs one CMS call per interval and no write.

use super::connection::connection_of;
use super::context::{Context, Stores};
use super::dereference::{resolve, DereferenceError};
use super::status::{condition, merge, READY};
use super::DefaultConnection;
use crate::model::desired::ConnectionId;
use crate::policy::connection::{Admission, ConnectionError};
use crate::policy::{ClusterCmsConnection, CmsConnection, ConnectionStatus, SecretsRead};
use crate::providers::ProviderError;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the stores are looked at for changes.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How long one check may take: no answer by then is `EndpointUnreachable`.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Checks under way at once.
const CHECKS_AT_ONCE: usize = 4;
/// When a status could not be written: the next check (and try) is this much later, not at
/// the next look (a missing RBAC rule would otherwise cost a CMS call every few seconds).
const AFTER_FAILED_WRITE: Duration = Duration::from_secs(30);

/// The reasons of a connection's `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionReason {
    Connected,
    CredentialMissing,
    CaInvalid,
    EndpointNotAllowed,
    EndpointUnreachable,
    TlsFailure,
    CredentialRefused,
    ProviderMismatch,
    CmsUnavailable,
}

impl ConnectionReason {
    /// The condition's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::CredentialMissing => "CredentialMissing",
            Self::CaInvalid => "CaInvalid",
            Self::EndpointNotAllowed => "EndpointNotAllowed",
            Self::EndpointUnreachable => "EndpointUnreachable",
            Self::TlsFailure => "TlsFailure",
            Self::CredentialRefused => "CredentialRefused",
            Self::ProviderMismatch => "ProviderMismatch",
            Self::CmsUnavailable => "CmsUnavailable",
        }
    }
}

/// What one check found: Ready or not, the reason, and what to tell a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub ready: bool,
    pub reason: ConnectionReason,
    pub message: String,
}

impl Found {
    fn not(reason: ConnectionReason, message: impl std::fmt::Display) -> Found {
        Found {
            ready: false,
            reason,
            message: message.to_string(),
        }
    }
}

/// The reason for a connection that cannot be resolved.
pub fn dereference_reason(e: &DereferenceError) -> ConnectionReason {
    match e {
        DereferenceError::CaUnusable(_) => ConnectionReason::CaInvalid,
        DereferenceError::EndpointNotAllowed { .. }
        | DereferenceError::Connection(ConnectionError::InvalidEndpoint { .. }) => {
            ConnectionReason::EndpointNotAllowed
        }
        _ => ConnectionReason::CredentialMissing,
    }
}

/// The reason for a CMS call that failed.
pub fn provider_reason(e: &ProviderError) -> ConnectionReason {
    match e {
        ProviderError::Unreachable { .. } => ConnectionReason::EndpointUnreachable,
        ProviderError::Tls { .. } => ConnectionReason::TlsFailure,
        ProviderError::Config { .. } => ConnectionReason::CaInvalid,
        ProviderError::Credential { .. } => ConnectionReason::CredentialRefused,
        ProviderError::Rejected { status, .. } => match status {
            401 | 403 => ConnectionReason::CredentialRefused,
            404 | 405 => ConnectionReason::ProviderMismatch,
            _ => ConnectionReason::CmsUnavailable,
        },
        ProviderError::Decode { .. } | ProviderError::NotFound(_) => {
            ConnectionReason::ProviderMismatch
        }
        ProviderError::Unsupported { .. } => ConnectionReason::ProviderMismatch,
    }
}

/// Checks connection `id`: resolved from the stores, then one call to its CMS.
pub async fn check(ctx: &Context, stores: &Stores, id: &ConnectionId) -> Found {
    // Not for a policy: whom it admits is the policies' concern.
    let conn = match resolve(ctx, stores, id, "", Admission::NotNeeded).await {
        Ok(c) => c,
        Err(e) => return Found::not(dereference_reason(&e), &e),
    };
    let provider = match ctx.provider(&conn) {
        Ok(p) => p,
        Err(e) => return Found::not(provider_reason(&e), &e),
    };
    // As in a reconcile: no retries past the deadline, and no answer body reaches the status
    // (the endpoint is the tenant's choice).
    let now = Instant::now();
    let limits = crate::providers::http::Reconcile {
        retry_deadline: now,
        deadline: now + CHECK_TIMEOUT,
    };
    let call = crate::providers::http::in_reconcile(limits, provider.check());
    match tokio::time::timeout(CHECK_TIMEOUT, call).await {
        Ok(Ok(())) => Found {
            ready: true,
            reason: ConnectionReason::Connected,
            message: format!("{} answered at {}", conn.provider.title(), conn.endpoint),
        },
        Ok(Err(e)) => Found::not(provider_reason(&e), &e),
        Err(_) => Found::not(
            ConnectionReason::EndpointUnreachable,
            format!(
                "{} did not answer within {}s",
                conn.endpoint,
                CHECK_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// A connection as the checks see it: what makes a check due when it changes.
struct Seen {
    id: ConnectionId,
    generation: Option<i64>,
    status: Option<ConnectionStatus>,
    /// A digest of the spec's generation, the resourceVersions of the Secrets it reads, and
    /// the number of its users.
    digest: u64,
    users: i64,
}

/// How many policies use each connection (admitted or not: a policy that names a connection
/// is its user).
fn users(stores: &Stores, default: &Option<DefaultConnection>) -> HashMap<ConnectionId, i64> {
    let mut n = HashMap::new();
    for p in stores.every_policy.state() {
        if let Some(id) = connection_of(&p, default) {
            *n.entry(id).or_insert(0) += 1;
        }
    }
    n
}

/// The resourceVersions of the Secrets a connection reads, as the stores hold them.
fn secret_versions(stores: &Stores, read: Option<&SecretsRead>) -> Vec<Option<String>> {
    read.into_iter()
        .flat_map(SecretsRead::all)
        .map(|s| {
            stores
                .credentials
                .get(&ObjectRef::new(&s.name).within(&s.namespace))
                .and_then(|m| m.metadata.resource_version.clone())
        })
        .collect()
}

fn digest(parts: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// A connection as the checks see it; `read`: the Secrets it reads.
fn seen(
    id: ConnectionId,
    meta: &kube::core::ObjectMeta,
    status: Option<&ConnectionStatus>,
    read: Option<&SecretsRead>,
    stores: &Stores,
    users: &HashMap<ConnectionId, i64>,
) -> Seen {
    let n = users.get(&id).copied().unwrap_or(0);
    Seen {
        digest: digest((meta.generation, secret_versions(stores, read), n)),
        id,
        generation: meta.generation,
        status: status.cloned(),
        users: n,
    }
}

/// Every connection whose status this operator writes. Shards split by `--selector` would
/// count users apart, and one watching a namespace sees no cluster connection's other users:
/// only an operator without `--selector` writes connections' status, and cluster connections'
/// only when it watches every namespace.
fn connections(ctx: &Context, stores: &Stores) -> Vec<Seen> {
    if ctx.config.label_selector.is_some() {
        return Vec::new();
    }
    let users = users(stores, &ctx.config.default_connection);
    let mut out = Vec::new();
    for c in stores.connections.state() {
        let ns = c.namespace().unwrap_or_default();
        let read = c.spec.secrets_read(&ns);
        let id = ConnectionId::CmsConnection {
            namespace: ns,
            name: c.name_any(),
        };
        out.push(seen(
            id,
            &c.metadata,
            c.status.as_ref(),
            Some(&read),
            stores,
            &users,
        ));
    }
    if ctx.config.namespace.is_some() {
        return out;
    }
    for c in stores.cluster_connections.state() {
        let id = ConnectionId::ClusterCmsConnection { name: c.name_any() };
        let read = c.spec.secrets_read();
        out.push(seen(
            id,
            &c.metadata,
            c.status.as_ref(),
            read.as_ref(),
            stores,
            &users,
        ));
    }
    out
}

/// The status a check leads to (`lastTransitionTime` kept while Ready keeps its status).
pub fn status_after(
    old: Option<&ConnectionStatus>,
    found: &Found,
    generation: Option<i64>,
    users: i64,
    now: jiff::Timestamp,
) -> ConnectionStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = condition(
        READY,
        found.ready,
        found.reason.as_str(),
        found.message.clone(),
    );
    ConnectionStatus {
        observed_generation: generation,
        conditions: merge(old_conditions, vec![ready], now, generation),
        policies: Some(users),
    }
}

/// Writes `status` for connection `id` unless it is what the store holds already.
async fn write(
    ctx: &Context,
    id: &ConnectionId,
    old: Option<&ConnectionStatus>,
    status: &ConnectionStatus,
) -> Result<bool, kube::Error> {
    if old == Some(status) {
        return Ok(false);
    }
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    let pp = PatchParams::default();
    match id {
        ConnectionId::CmsConnection { namespace, name } => {
            Api::<CmsConnection>::namespaced(ctx.client.clone(), namespace)
                .patch_status(name, &pp, &patch)
                .await?;
        }
        ConnectionId::ClusterCmsConnection { name } => {
            Api::<ClusterCmsConnection>::all(ctx.client.clone())
                .patch_status(name, &pp, &patch)
                .await?;
        }
        ConnectionId::Default => return Ok(false),
    }
    Ok(true)
}

/// Checks each connection that is due (changed since its last check, or its next check is
/// due) and writes its status where it changed. `last` holds, per connection, the digest it
/// was checked at and when it is next due.
pub async fn check_due(
    ctx: &Context,
    stores: &Stores,
    interval: Duration,
    last: &mut BTreeMap<ConnectionId, (u64, Instant)>,
) {
    let now = Instant::now();
    let seen = connections(ctx, stores);
    last.retain(|id, _| seen.iter().any(|s| &s.id == id));
    let due: Vec<Seen> = seen
        .into_iter()
        .filter(|s| match last.get(&s.id) {
            Some((d, next)) => *d != s.digest || now >= *next,
            None => true,
        })
        .collect();
    let checked: Vec<(ConnectionId, u64, Duration)> = futures::stream::iter(due)
        .map(|s| async move {
            let found = check(ctx, stores, &s.id).await;
            let status = status_after(
                s.status.as_ref(),
                &found,
                s.generation,
                s.users,
                ctx.config.clock.now(),
            );
            // Compared without the times: an unchanged Ready keeps its lastTransitionTime.
            match write(ctx, &s.id, s.status.as_ref(), &status).await {
                Ok(_) => (s.id, s.digest, interval),
                Err(e) => {
                    tracing::warn!(connection = %s.id, error = %e, retry_seconds = AFTER_FAILED_WRITE.as_secs(), "writing the connection's status failed");
                    (s.id, s.digest, AFTER_FAILED_WRITE.min(interval))
                }
            }
        })
        .buffer_unordered(CHECKS_AT_ONCE)
        .collect()
        .await;
    for (id, d, after) in checked {
        last.insert(id, (d, now + after));
    }
}

/// Keeps connections' status right until dropped (it runs beside the controller).
pub async fn keep(ctx: Arc<Context>, stores: Stores, interval: Duration) {
    stores.ready().await;
    let mut last = BTreeMap::new();
    loop {
        check_due(&ctx, &stores, interval, &mut last).await;
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
