//! CMS providers: one trait, one adapter per CMS. The engine and the operator only see the trait.

pub mod console;
pub mod contentful;
pub mod datocms;
pub mod directus;
pub mod http;
pub(crate) mod ownership_tag;
pub mod reference;
pub mod registry;
pub mod strapi;
mod tls;

use crate::model::capabilities::Capabilities;
use crate::model::desired::DesiredState;
pub use crate::model::live::{IssuedKey, LiveKey, LiveSettings};
use crate::model::{ContentOp, KeySpec};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// The connection's settings cannot be used (its CA, say).
    #[error("{reason}")]
    Config { reason: String },
    /// The credential is not one this provider can use (its shape, not its validity).
    #[error("{provider} credential: {reason}")]
    Credential {
        provider: &'static str,
        reason: &'static str,
    },
    /// The TLS handshake failed: a configuration error, never retried.
    #[error("TLS with {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },
    #[error("{endpoint} answered {status}: {message}")]
    Rejected {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{provider} cannot express {field}: {reason}")]
    Unsupported {
        provider: &'static str,
        field: String,
        reason: String,
    },
    #[error("unexpected answer from {endpoint}: {detail}")]
    Decode { endpoint: String, detail: String },
}

impl ProviderError {
    /// `provider` cannot hold `field` of a key spec, for `reason`.
    pub fn unsupported(
        provider: &'static str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> ProviderError {
        ProviderError::Unsupported {
            provider,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Worth retrying later (outage, rate limit, server error), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ProviderError>;

/// Calls made to a CMS, for the "a no-change run makes zero writes" promise and benchmarks.
#[derive(Debug, Default)]
pub struct CallStats {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl CallStats {
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// Why a desired state cannot be planned against a CMS.
#[derive(Debug, thiserror::Error)]
pub enum ExpressError {
    /// Fields the CMS cannot hold, one message per field (policy, field path, reason).
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Every desired key as the CMS will hold it (see `CmsProvider::express`).
pub async fn express_state(
    provider: &dyn CmsProvider,
    state: &DesiredState,
) -> std::result::Result<DesiredState, ExpressError> {
    let mut out = state.clone();
    let mut refused = Vec::new();
    for k in &mut out.keys {
        match provider.express(&k.spec).await {
            Ok(spec) => k.spec = spec,
            Err(ProviderError::Unsupported {
                provider,
                field,
                reason,
            }) => refused.push(format!(
                "ApiKeyPolicy {}: spec.keys[{}].{field}: the {provider} provider cannot express this: {reason}",
                k.policy, k.index
            )),
            Err(e) => return Err(e.into()),
        }
    }
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(ExpressError::Refused(refused))
    }
}

/// The first `apiPermissions` entry naming an API the CMS does not have (`has` says which it
/// has): its field path and the API.
pub fn unknown_api(spec: &KeySpec, has: impl Fn(&str) -> bool) -> Option<(String, &str)> {
    spec.api_permissions
        .iter()
        .enumerate()
        .find(|(_, a)| !has(&a.api))
        .map(|(i, a)| (format!("apiPermissions[{i}].api"), a.api.as_str()))
}

/// Marks a live key that holds rights keyward cannot express (`notes` says which), under
/// `label`, so the plan shows it as drift; the text is cut short past 200 characters.
pub fn mark_unexpressed(labels: &mut BTreeMap<String, String>, label: &str, notes: &[String]) {
    if notes.is_empty() {
        return;
    }
    let mut text = notes.join(", ");
    if text.len() > 200 {
        text = format!(
            "{}... ({} in all)",
            text.chars().take(180).collect::<String>(),
            notes.len()
        );
    }
    labels.insert(label.to_owned(), text);
}

/// The refusal of `field` by a CMS with `caps`, for the reason `reason` picks from them.
fn cannot_hold(
    caps: Option<&'static Capabilities>,
    field: &str,
    reason: impl Fn(&Capabilities) -> Option<&'static str>,
) -> ProviderError {
    let (provider, why) = match caps {
        Some(c) => (c.provider, reason(c)),
        None => ("", None),
    };
    ProviderError::unsupported(provider, field, why.unwrap_or("this CMS cannot hold it"))
}

/// A regenerate with an overlap, refused by a CMS whose new value ends the old one at once
/// (`caps`' reason); without one, nothing to refuse.
pub(crate) fn without_overlap(caps: &'static Capabilities, how: &Regeneration) -> Result<()> {
    match caps.rotation_overlap {
        Some(reason) if how.grace > SignedDuration::ZERO => Err(ProviderError::unsupported(
            caps.provider,
            "rotationOverlap",
            reason,
        )),
        _ => Ok(()),
    }
}

/// What a regenerate asks of the CMS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regeneration {
    /// How long the old value keeps working.
    pub grace: SignedDuration,
    /// The new value's expiry; `None`: it never expires.
    pub expires_at: Option<Timestamp>,
    /// The old value still works and is only due for renewal (a CMS whose regenerate cannot
    /// extend a key's life may then issue a new key instead).
    pub expiring: bool,
}

/// A CMS's key-management API.
#[async_trait]
pub trait CmsProvider: Send + Sync {
    fn stats(&self) -> &CallStats;

    /// Whether the CMS has an API for keys. Without one (keys made in its console only), no
    /// key is listed and each key a policy tracks is taken as declared; only values are checked.
    fn has_key_api(&self) -> bool {
        true
    }

    /// The spec as this CMS will hold and report it, or `Unsupported` naming the field it cannot
    /// hold. Plans compare these with live keys, so a CMS with a coarser model shows no false
    /// drift and drops nothing silently.
    async fn express(&self, spec: &KeySpec) -> Result<KeySpec> {
        Ok(spec.clone())
    }
    /// One cheap call that needs the credential and answers in this provider's shape: whether
    /// the connection works (a connection's `Ready` condition).
    async fn check(&self) -> Result<()>;
    /// Every key, in one listing (no per-key fetches).
    async fn list_keys(&self) -> Result<Vec<LiveKey>>;
    /// The keys carrying label `name=value` (one policy's keys); filtered by the CMS where it can.
    async fn list_keys_labeled(&self, name: &str, value: &str) -> Result<Vec<LiveKey>> {
        Ok(self
            .list_keys()
            .await?
            .into_iter()
            .filter(|k| k.spec.labels.get(name).map(String::as_str) == Some(value))
            .collect())
    }
    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey>;
    /// How many creates an apply may have under way at once (each is a hash on the CMS).
    fn parallel_creates(&self) -> usize {
        1
    }
    /// Changes a key's mutable settings to `spec`'s.
    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey>;
    async fn rename_key(&self, id: &str, name: &str) -> Result<()>;
    async fn set_expiry(&self, id: &str, at: Timestamp) -> Result<()>;
    /// A new value for key `id`, as `how` asks.
    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey>;
    /// Revokes; a key the CMS no longer knows counts as revoked.
    async fn revoke_key(&self, id: &str) -> Result<()>;
    /// Whether `value` is the current value of key `id` (one call made with the value): what
    /// adopting a key with `adopt.valueFrom` checks before keeping it. `Ok(false)`: the CMS
    /// refuses the value, or it is another key's.
    async fn verify_value(&self, id: &str, value: &crate::model::KeyValue) -> Result<bool> {
        let _ = (id, value);
        Err(ProviderError::unsupported(
            "",
            "adopt.valueFrom",
            "this provider cannot check a value",
        ))
    }
    /// What this CMS's key model can hold, for the default refusals of the shared settings
    /// below (`None`: a CMS that holds them overrides them).
    fn capabilities(&self) -> Option<&'static Capabilities> {
        None
    }
    /// The entries in the shared settings (CORS origins, public endpoints) of `owner`, or of
    /// every owner, and which of `apis` exist. A CMS that cannot hold owners' entries has none.
    async fn settings(&self, apis: &BTreeSet<String>, owner: Option<&str>) -> Result<LiveSettings> {
        let _ = (apis, owner);
        Ok(LiveSettings::default())
    }
    /// Replaces `owner`'s CORS origins (empty: its origins go). A CMS that cannot hold them
    /// refuses with its capabilities' reason (policies that declare them are refused before
    /// any call: this is the last guard).
    async fn set_cors(&self, owner: &str, origins: &BTreeSet<String>) -> Result<()> {
        let _ = (owner, origins);
        Err(cannot_hold(self.capabilities(), "spec.cors", |c| c.cors))
    }
    /// Replaces `owner`'s public operations of `api` (empty: they go); refused like `set_cors`.
    async fn set_public(&self, owner: &str, api: &str, ops: &BTreeSet<ContentOp>) -> Result<()> {
        let _ = (owner, api, ops);
        Err(cannot_hold(
            self.capabilities(),
            "spec.publicEndpoints",
            |c| c.public_endpoints,
        ))
    }
    /// Drops everything `owner` holds of the shared settings (its policy is deleted); nothing
    /// to do on a CMS that cannot hold owners' entries.
    async fn remove_settings_owner(&self, owner: &str) -> Result<()> {
        let _ = owner;
        Ok(())
    }
}

/// Fixtures for the providers' mapping tests.
#[cfg(test)]
pub(crate) mod testkit {
    use crate::model::desired::{LABEL_KEY, LABEL_POLICY};
    use crate::model::{normalize, ContentPermission, KeySpec};

    /// A key spec from YAML, labelled key `reader` of policy `policy`, normalized.
    pub fn spec(yaml: &str, policy: &str) -> KeySpec {
        let mut s: KeySpec = serde_yaml_ng::from_str(yaml).expect("spec");
        s.labels = [
            (LABEL_POLICY.to_owned(), policy.to_owned()),
            (LABEL_KEY.to_owned(), "reader".to_owned()),
        ]
        .into();
        normalize(s)
    }

    /// Each spec (YAML, through `spec`) comes back from the CMS as `canonical` said it would:
    /// `read_back` stores it as the CMS does and decodes the record, and nothing in it carries
    /// the provider's `unexpressed` label.
    pub fn reads_back_as_canonical(
        unexpressed: &str,
        specs: &[&str],
        spec: impl Fn(&str) -> KeySpec,
        canonical: impl Fn(&KeySpec) -> KeySpec,
        read_back: impl Fn(&KeySpec) -> KeySpec,
    ) {
        for y in specs {
            let s = spec(y);
            let got = read_back(&s);
            assert_eq!(got, canonical(&s), "{y}");
            assert!(!got.labels.contains_key(unexpressed), "{y}");
        }
    }

    /// A spec's per-API rights as (api, permissions), to compare with a table.
    pub fn per_api(s: &KeySpec) -> Vec<(&str, Vec<ContentPermission>)> {
        s.api_permissions
            .iter()
            .map(|a| (a.api.as_str(), a.permissions.clone()))
            .collect()
    }

    /// What neither Strapi nor Directus can hold: scopes beyond content, environments
    /// (`field` names the field refused for a spec in YAML).
    pub fn refuses_scopes_and_environments(field: impl Fn(&str) -> String) {
        assert_eq!(field("name: n\nscopes: ['cache:purge']"), "scopes[0]");
        assert_eq!(field("name: n\nenvironments: [staging]"), "environments");
    }

    /// The field `provider` names in refusing `what`; anything else fails the test.
    pub fn refused<T: std::fmt::Debug>(provider: &str, what: &str, r: super::Result<T>) -> String {
        match r {
            Err(super::ProviderError::Unsupported {
                field, provider: p, ..
            }) if p == provider => field,
            other => panic!("{what}: {other:?}"),
        }
    }
}
