//! A policy's connection as the operator knows it: which one it uses ([`connection_of`]: its
//! `connectionRef`, else the operator's `--default-connection`), and resolved ([`Conn`], made
//! by the dereference step).

use super::DefaultConnection;
use crate::model::desired::ConnectionId;
use crate::policy::connection::connection_id;
use crate::policy::{ApiKeyPolicy, ProviderKind};

/// The connection id a policy uses: its `connectionRef`, else the operator's default.
pub fn connection_of(
    p: &ApiKeyPolicy,
    default: &Option<DefaultConnection>,
) -> Option<ConnectionId> {
    connection_id(p, default.as_ref().map(DefaultConnection::id).as_ref())
}

/// A connection, resolved.
#[derive(Clone)]
pub struct Conn {
    pub id: ConnectionId,
    pub provider: ProviderKind,
    pub endpoint: String,
    /// The management credential (never logged, never in status).
    pub credential: secrecy::SecretString,
    /// CA certificates (PEM) trusted besides the system's, from `spec.tls.caSecretRef`.
    pub ca: Option<Vec<u8>>,
    /// A shared connection's ceilings.
    pub allow: Option<crate::policy::Allow>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}
