//! Pipeline step 1, dereference: the connection a policy names, whether it admits the policy's
//! namespace, and its credential, all read from the controller's reflector stores (no API call
//! per reconcile).

use super::connection::{connection_of, Conn};
use super::context::{Context, Stores};
use super::status::StopReason;
use crate::model::desired::ConnectionId;
use crate::policy::connection::{admits, Admission, ConnectionError, ConnectionLookup};
use crate::policy::{ApiKeyPolicy, SecretField};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

/// The label a Secret must carry to be used as a connection's credential: a connection can
/// never make the operator read (and send away) an arbitrary Secret of its namespace.
pub const CREDENTIAL_LABEL: &str = "keyward.dev/credential";

/// Why a policy cannot have its connection. Each is recorded in status (`reason`) and waits for
/// a change of the policy, the connection, its Secret or the namespace.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("spec.connectionRef is not set and the operator has no --default-connection")]
    NoConnection,
    /// Missing, not admitting the namespace, no credential namespace, an endpoint keyward
    /// never calls: what the CLI refuses too.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("{0}")]
    NoCredentials(String),
    /// The CA Secret is missing, unlabelled, empty or too big (for policies, `NoCredentials`).
    #[error("{0}")]
    CaUnusable(String),
    #[error("{}", .0.join("; "))]
    NotAllowed(Vec<String>),
    #[error("{connection}: its endpoint's host '{host}' is not among the operator's --allowed-endpoints")]
    EndpointNotAllowed { connection: String, host: String },
}

impl DereferenceError {
    pub fn reason(&self) -> StopReason {
        match self {
            Self::NoConnection => StopReason::NoConnection,
            Self::Connection(e) => match e {
                ConnectionError::NotFound(_) => StopReason::ConnectionNotFound,
                ConnectionError::NotAdmitted { .. } | ConnectionError::OtherNamespace { .. } => {
                    StopReason::ConnectionNotAllowed
                }
                ConnectionError::NoCredentialNamespace { .. } => StopReason::NoCredentials,
                ConnectionError::InvalidEndpoint { .. } => StopReason::EndpointNotAllowed,
            },
            Self::NoCredentials(_) | Self::CaUnusable(_) => StopReason::NoCredentials,
            Self::NotAllowed(_) => StopReason::NotAllowed,
            Self::EndpointNotAllowed { .. } => StopReason::EndpointNotAllowed,
        }
    }
}

/// Step 1: the policy's connection and credential, from the stores.
pub async fn dereference(p: &ApiKeyPolicy, ctx: &Context) -> Result<Conn, DereferenceError> {
    connect(p, ctx, Admission::Required).await
}

/// The connection to revoke a policy's keys with, admitted or not: the one its status says
/// the keys are on (else its current one). A namespace that a shared connection no longer
/// admits loses its keys through it, and a policy moved to another connection loses those it
/// left behind.
pub async fn dereference_to_revoke(
    p: &ApiKeyPolicy,
    ctx: &Context,
) -> Result<Conn, DereferenceError> {
    connect(p, ctx, Admission::NotNeeded).await
}

/// The connection the policy's keys are on, by its status, if not the current one.
pub fn previous_connection(p: &ApiKeyPolicy, current: &ConnectionId) -> Option<ConnectionId> {
    let recorded = p.status.as_ref()?.connection.as_ref()?.id();
    (recorded != *current).then_some(recorded)
}

/// The policy's connection; to revoke, the one its status says the keys are on.
fn connection_to_use(
    p: &ApiKeyPolicy,
    ctx: &Context,
    admission: Admission,
) -> Result<ConnectionId, DereferenceError> {
    let recorded = p
        .status
        .as_ref()
        .and_then(|s| s.connection.as_ref())
        .map(|c| c.id());
    match (admission, recorded) {
        (Admission::NotNeeded, Some(id)) => Ok(id),
        _ => connection_of(p, &ctx.config.default_connection).ok_or(DereferenceError::NoConnection),
    }
}

async fn connect(
    p: &ApiKeyPolicy,
    ctx: &Context,
    admission: Admission,
) -> Result<Conn, DereferenceError> {
    let Some(stores) = ctx.stores() else {
        return Err(DereferenceError::NoConnection);
    };
    stores.ready().await;
    let id = connection_to_use(p, ctx, admission)?;
    let policy_ns = p.namespace().unwrap_or_else(|| "default".into());
    resolve(ctx, &stores, &id, &policy_ns, admission).await
}

/// Connection `id` for a policy of `policy_ns` (see [`policy::connection::dereference`]), with
/// its credential and CA from the stores (a Secret's data is read once per resourceVersion),
/// its endpoint checked against the operator's `--allowed-endpoints`.
///
/// [`policy::connection::dereference`]: crate::policy::connection::dereference
pub async fn resolve(
    ctx: &Context,
    stores: &Stores,
    id: &ConnectionId,
    policy_ns: &str,
    admission: Admission,
) -> Result<Conn, DereferenceError> {
    if *id == ConnectionId::Default {
        return Err(DereferenceError::NoConnection);
    }
    let c = crate::policy::connection::dereference(stores, id, policy_ns, admission)?;
    endpoint_allowed(&ctx.config.allowed_endpoints, id, &c.endpoint).await?;
    let credential = credential(ctx, stores, &c.secrets.credential).await?.into();
    let ca = match &c.secrets.ca {
        Some(at) => Some(ca_pem(ctx, stores, at).await?),
        None => None,
    };
    Ok(Conn {
        id: c.id,
        provider: c.provider,
        endpoint: c.endpoint,
        credential,
        ca,
        allow: c.allow,
    })
}

/// Where the platform lets connections point (`--allowed-endpoints`; empty: anywhere but the
/// link-local and metadata addresses, which are never called): a host name pattern
/// (`*.cms.example.com`) matches the endpoint's host, a CIDR (`10.0.0.0/8`) an IP address
/// host or every address a host name resolves to now.
pub async fn endpoint_allowed(
    allowed: &[String],
    id: &ConnectionId,
    endpoint: &str,
) -> Result<(), DereferenceError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let host = crate::model::endpoint_host(endpoint).unwrap_or_default();
    let refused = || DereferenceError::EndpointNotAllowed {
        connection: id.to_string(),
        host: host.to_owned(),
    };
    let ip = host.parse::<std::net::IpAddr>().ok();
    let mut resolved: Option<Vec<std::net::IpAddr>> = None;
    for entry in allowed {
        if let Ok(net) = entry.parse::<ipnet::IpNet>() {
            let addrs = match (ip, &resolved) {
                (Some(ip), _) => vec![ip],
                (None, Some(r)) => r.clone(),
                (None, None) => {
                    let r: Vec<std::net::IpAddr> = tokio::net::lookup_host((host, 0))
                        .await
                        .map(|a| a.map(|s| s.ip()).collect())
                        .unwrap_or_default();
                    resolved = Some(r.clone());
                    r
                }
            };
            if !addrs.is_empty() && addrs.iter().all(|a| net.contains(a)) {
                return Ok(());
            }
        } else if crate::policy::ceilings::glob_match(entry, host) {
            return Ok(());
        }
    }
    Err(refused())
}

/// The policy within its shared connection's ceilings: every field over them, in one refusal.
/// Against `maxKeysPerNamespace` count its own keys and the keys that the namespace's policies
/// created before it hold (`status.keyCount`): the policy that goes over it is refused, not the
/// ones there first, and a refused policy holds none.
pub fn within_ceilings(
    p: &ApiKeyPolicy,
    conn: &Conn,
    ctx: &Context,
) -> Result<(), DereferenceError> {
    let (Some(allow), ConnectionId::ClusterCmsConnection { name }) = (&conn.allow, &conn.id) else {
        return Ok(());
    };
    let ns = p.namespace();
    let key = |q: &ApiKeyPolicy| {
        (
            q.metadata.creation_timestamp.clone().map(|t| t.0),
            q.name_any(),
        )
    };
    let keys_here: usize = ctx
        .stores()
        .map(|s| {
            s.every_policy
                .state()
                .iter()
                .filter(|q| q.namespace() == ns && q.uid() != p.uid())
                .filter(|q| {
                    connection_of(q, &ctx.config.default_connection).as_ref() == Some(&conn.id)
                })
                .filter(|q| key(q) < key(p))
                .map(|q| {
                    q.status
                        .as_ref()
                        .and_then(|st| st.key_count)
                        .unwrap_or(0)
                        .max(0) as usize
                })
                .sum()
        })
        .unwrap_or(0);
    let over =
        crate::policy::ceilings::over_ceilings(allow, name, &p.spec, keys_here + p.spec.keys.len());
    if over.is_empty() {
        return Ok(());
    }
    Err(DereferenceError::NotAllowed(
        over.into_iter()
            .map(|(path, reason)| format!("{path}: {reason}"))
            .collect(),
    ))
}

/// Whether cluster connection `spec` admits `namespace`, by the namespace's labels in the store.
pub(crate) fn admitted(
    stores: &Stores,
    spec: &crate::policy::ClusterCmsConnectionSpec,
    namespace: &str,
) -> bool {
    admits(spec, namespace, &stores.namespace_labels(namespace))
}

/// The most a credential may hold: 16 KiB (a token, a password; a key pair would be less).
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// The most a CA bundle may hold: 256 KiB (hundreds of certificates).
pub const MAX_CA_BYTES: usize = 256 * 1024;

/// What a labelled Secret's field is wanted for, for the limits and the messages.
#[derive(Clone, Copy)]
enum SecretUse {
    Credential,
    Ca,
    AdoptedValue,
}

impl SecretUse {
    fn what(self) -> &'static str {
        match self {
            Self::Credential => "credential",
            Self::Ca => "CA",
            Self::AdoptedValue => "adopt.valueFrom",
        }
    }

    fn max(self) -> usize {
        match self {
            Self::Credential | Self::AdoptedValue => MAX_CREDENTIAL_BYTES,
            Self::Ca => MAX_CA_BYTES,
        }
    }
}

/// The current values of the keys `state` adopts with `adopt.valueFrom` (labelled Secrets of
/// the policy's namespace, read as credentials are). One that cannot be read is left unread:
/// the adoption then stops before any change, saying so.
pub async fn adopted_values(
    p: &ApiKeyPolicy,
    ctx: &Context,
    state: &mut crate::model::desired::DesiredState,
) {
    let Some(stores) = ctx.stores() else {
        return;
    };
    let namespace = p.namespace().unwrap_or_default();
    for (decl, key) in p.spec.keys.iter().zip(state.keys.iter_mut()) {
        let (Some(from), Some(a)) = (
            decl.adopt.as_ref().and_then(|a| a.value_from.as_ref()),
            key.adopt.as_mut(),
        ) else {
            continue;
        };
        let at = SecretField {
            namespace: namespace.clone(),
            name: from.name.clone(),
            key: from.key.clone(),
        };
        match secret_field(ctx, &stores, &at, SecretUse::AdoptedValue).await {
            Ok(bytes) => {
                a.value = String::from_utf8(bytes.to_vec())
                    .ok()
                    .map(|v| crate::model::KeyValue::new(v.trim()));
            }
            // Needed only until the key is adopted; if it is, the adoption says so and stops.
            Err(e) => {
                tracing::debug!(policy = %p.policy_id(), error = %e, "adopt.valueFrom not read")
            }
        }
    }
}

/// Field `key` of the labelled Secret `ns/name`. The credential Secrets are watched as metadata
/// only, so a Secret no connection names is never held with its data; a named one is read with
/// one GET, and read again only when its resourceVersion changed.
async fn secret_field(
    ctx: &Context,
    stores: &Stores,
    at: &SecretField,
    used: SecretUse,
) -> Result<std::sync::Arc<[u8]>, DereferenceError> {
    let (ns, name, key) = (at.namespace.as_str(), at.name.as_str(), at.key.as_str());
    let missing = || {
        DereferenceError::NoCredentials(format!(
            "{} Secret {ns}/{name} (field '{key}') is missing, empty, or not labelled {CREDENTIAL_LABEL}: \"true\"",
            used.what()
        ))
    };
    let meta = stores
        .credentials
        .get(&ObjectRef::new(name).within(ns))
        .ok_or_else(missing)?;
    let version = meta.metadata.resource_version.clone().unwrap_or_default();
    let data = match ctx.cached_secret_field(ns, name, key, &version) {
        Some(data) => data,
        None => {
            let secret = kube::Api::<Secret>::namespaced(ctx.client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(|e| {
                    DereferenceError::NoCredentials(format!(
                        "{} Secret {ns}/{name} cannot be read: {e}",
                        used.what()
                    ))
                })?
                .filter(|s| s.labels().get(CREDENTIAL_LABEL).map(String::as_str) == Some("true"))
                .ok_or_else(missing)?;
            let version = secret.metadata.resource_version.clone().unwrap_or_default();
            let value: std::sync::Arc<[u8]> = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.0.as_slice())
                .or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|v| v.as_bytes())
                })
                .unwrap_or_default()
                .into();
            if value.len() > used.max() {
                return Err(DereferenceError::NoCredentials(format!(
                    "{} Secret {ns}/{name} (field '{key}') holds {} bytes; a {} holds at most {}",
                    used.what(),
                    value.len(),
                    used.what(),
                    used.max()
                )));
            }
            ctx.cache_secret_field(stores, (ns, name, key), version, value.clone());
            value
        }
    };
    if data.is_empty() {
        return Err(missing());
    }
    Ok(data)
}

/// The PEM certificates in a labelled Secret's field.
async fn ca_pem(
    ctx: &Context,
    stores: &Stores,
    at: &SecretField,
) -> Result<Vec<u8>, DereferenceError> {
    match secret_field(ctx, stores, at, SecretUse::Ca).await {
        Ok(pem) => Ok(pem.to_vec()),
        Err(DereferenceError::NoCredentials(why)) => Err(DereferenceError::CaUnusable(why)),
        Err(e) => Err(e),
    }
}

/// The credential in a labelled Secret's field.
async fn credential(
    ctx: &Context,
    stores: &Stores,
    at: &SecretField,
) -> Result<String, DereferenceError> {
    let bytes = secret_field(ctx, stores, at, SecretUse::Credential).await?;
    std::str::from_utf8(&bytes)
        .map(|t| t.trim().to_owned())
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            DereferenceError::NoCredentials(format!("credential Secret {at} is not text"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allowed_endpoints_are_host_patterns_and_cidrs() {
        let id = ConnectionId::ClusterCmsConnection {
            name: "shared".into(),
        };
        let allowed = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let ok = |list: Vec<String>, url: &'static str| {
            let id = id.clone();
            async move { endpoint_allowed(&list, &id, url).await.is_ok() }
        };
        assert!(ok(vec![], "http://anything:1").await, "no list: anywhere");
        let list = allowed(&["*.cms.example.com", "10.0.0.0/8"]);
        assert!(ok(list.clone(), "https://eu.cms.example.com/x").await);
        assert!(ok(list.clone(), "http://10.2.3.4:8780").await);
        assert!(!ok(list.clone(), "http://192.168.1.2").await);
        assert!(!ok(list.clone(), "https://cms.example.com.evil.io").await);
        // A name is held to a CIDR by what it resolves to.
        assert!(ok(allowed(&["127.0.0.0/8"]), "http://localhost:1").await);
        assert!(!ok(allowed(&["10.0.0.0/8"]), "http://localhost:1").await);
        let e = endpoint_allowed(&list, &id, "http://192.168.1.2")
            .await
            .unwrap_err();
        assert_eq!(e.reason(), StopReason::EndpointNotAllowed);
        assert!(e.to_string().contains("'192.168.1.2'"), "{e}");
    }
}
