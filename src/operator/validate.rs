//! Pipeline step 2 for one policy, validate: the spec's offline rules, then what the
//! connection's provider can hold; the desired state is built as the CLI builds it
//! ([`add_policy`]).

use super::connection::Conn;
use crate::model::desired::{ConnectionId, DesiredState};
use crate::policy::validate::{add_policy, fit_to_provider, policy_keys, Severity};
use crate::policy::ApiKeyPolicy;
use jiff::Timestamp;

/// The spec breaks a rule, or asks what the provider cannot hold (`InvalidSpec`).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

/// The policy's desired state on its connection: its keys and its own entry in the CMS's
/// shared settings (neighbours on the same connection, in this shard or another, hold their
/// own, so none overwrites another's).
pub fn validate(
    p: &ApiKeyPolicy,
    conn: &Conn,
    now: Timestamp,
) -> Result<DesiredState, InvalidSpec> {
    let (id, mut keys, diags) = policy_keys(p, None, now);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    if !errors.is_empty() {
        return Err(InvalidSpec(errors));
    }
    let mut refusals: Vec<String> = fit_to_provider(conn.provider, &p.spec, &mut keys)
        .into_iter()
        .map(|(path, reason)| format!("{path}: {reason}"))
        .collect();
    // A shared connection's keys are other namespaces' too: naming one must not take it over.
    if matches!(conn.id, ConnectionId::ClusterCmsConnection { .. }) {
        refusals.extend(p.spec.keys.iter().enumerate().filter(|(_, k)| k.adopt.is_some()).map(
            |(i, _)| {
                format!("spec.keys[{i}].adopt: a key is adopted through a CmsConnection of the policy's own namespace, not a ClusterCmsConnection that other namespaces share")
            },
        ));
    }
    if !refusals.is_empty() {
        return Err(InvalidSpec(refusals));
    }
    let mut state = DesiredState::default();
    add_policy(&mut state, &id, &p.spec, keys);
    Ok(state)
}
