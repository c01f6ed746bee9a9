//! `keyward plan` / `keyward apply` without a cluster: manifests in, a plan out, Secrets as
//! manifest files. Connections come from the manifests, from `KEYWARD_CMS_URL` /
//! `KEYWARD_CMS_TOKEN`, or, with neither, from an embedded reference CMS on a local data directory.

use crate::cms::{self, CmsConfig, RunningCms};
use crate::engine::secrets_dir::SecretsDir;
use crate::engine::{observe_secrets, ApplyError, ApplyReport, Clock, Engine};
use crate::model::desired::{
    ConnectionId, DesiredState, PolicyId, PolicySettings, LABEL_POLICY, LABEL_POLICY_UID,
};
use crate::plan::{diff, render_text, Plan};
use crate::policy::load::{self, ManifestSet};
use crate::policy::validate::{self, ConnectionConfig};
use crate::policy::ProviderKind;
use crate::providers::reference::ReferenceCms;
use crate::providers::{express_state, CmsProvider, ExpressError, ProviderError};
use base64::Engine as _;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

#[derive(Clone)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    pub secrets_dir: PathBuf,
    /// Data directory of the embedded reference CMS.
    pub data_dir: PathBuf,
    pub mode: Mode,
    /// `KEYWARD_CMS_URL` / `KEYWARD_CMS_TOKEN`, when set.
    pub env_url: Option<String>,
    pub env_token: Option<secrecy::SecretString>,
    /// `KEYWARD_CMS_PROVIDER`: what `KEYWARD_CMS_URL` is.
    pub env_provider: ProviderKind,
    /// Revoke the keys of policies that are no longer in the manifests (see `prune_gone`).
    pub prune: bool,
    /// `--ca-file` / `KEYWARD_CMS_CA_FILE`: CA certificates (PEM) trusted besides the system's,
    /// for every connection that names no CA Secret of its own.
    pub ca_pem: Option<Vec<u8>>,
    /// "Now" for validation, plans and new expiries (the system clock but in tests).
    pub clock: Clock,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential (a Strapi admin's password, or an admin token).
        f.debug_struct("Options")
            .field("paths", &self.paths)
            .field("secrets_dir", &self.secrets_dir)
            .field("data_dir", &self.data_dir)
            .field("mode", &self.mode)
            .field("env_url", &self.env_url)
            .field("env_token", &self.env_token.as_ref().map(|_| "<redacted>"))
            .field("env_provider", &self.env_provider)
            .field("prune", &self.prune)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("clock", &self.clock)
            .finish()
    }
}

/// The URL that `{{ endpoint }}` names for the embedded CMS: where `keyward cms serve` serves
/// the same data directory by default.
pub const EMBEDDED_ENDPOINT: &str = "http://127.0.0.1:8780";

/// One connection's plan, and what applying it did.
pub struct ConnectionRun {
    pub connection: ConnectionId,
    pub title: String,
    pub endpoint: String,
    pub plan: Plan,
    pub applied: Option<ApplyReport>,
    pub cms_reads: u64,
    pub cms_writes: u64,
    pub secret_writes: u64,
}

pub struct Outcome {
    pub runs: Vec<ConnectionRun>,
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn has_changes(&self) -> bool {
        self.runs.iter().any(|r| r.plan.has_changes())
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.runs {
            out.push_str(&render_text(&r.title, &r.plan));
            if let Some(rep) = &r.applied {
                for d in &rep.done {
                    out.push_str(&format!("  applied: {d}\n"));
                }
                out.push_str(&format!(
                    "  CMS calls: {} reads, {} writes; Secret files written: {}\n",
                    r.cms_reads, r.cms_writes, r.secret_writes
                ));
            }
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "changes": self.has_changes(),
            "warnings": self.warnings,
            "connections": self.runs.iter().map(|r| json!({
                "connection": r.connection,
                "endpoint": r.endpoint,
                "actions": r.plan.actions,
                "problems": r.plan.problems,
                "applied": r.applied.as_ref().map(|a| a.done.clone()),
                "cmsCalls": {"reads": r.cms_reads, "writes": r.cms_writes},
                "secretFilesWritten": r.secret_writes,
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error("the manifests are invalid:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{connection}: {message}")]
    Connection { connection: String, message: String },
    #[error("{connection}: {source}")]
    Provider {
        connection: String,
        source: ProviderError,
    },
    #[error("{0}")]
    Sink(#[from] crate::engine::SinkError),
    #[error("the plan for {connection} cannot be applied:\n{}", problems.join("\n"))]
    Problems {
        connection: String,
        problems: Vec<String>,
        partial: Box<Outcome>,
    },
    #[error("apply against {connection} stopped: {error}\n{}", error.report())]
    Apply {
        connection: String,
        error: ApplyError,
        partial: Box<Outcome>,
    },
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("connections", &self.runs.len())
            .finish()
    }
}

/// Every API the desired state names: the embedded CMS is seeded with them.
fn apis_named(state: &DesiredState) -> BTreeSet<String> {
    let mut apis: BTreeSet<String> = state.public.keys().cloned().collect();
    for k in &state.keys {
        apis.extend(k.spec.api_permissions.iter().map(|a| a.api.clone()));
    }
    apis
}

/// A field of a Secret in the manifests (`stringData` or `data`), by (namespace, name, field).
fn secret_field(
    set: &ManifestSet,
    (ns, name, field): &(String, String, String),
) -> Option<Vec<u8>> {
    let secret = set.secrets.iter().find(|s| {
        s.object.metadata.name.as_deref() == Some(name)
            && s.object.metadata.namespace.as_deref().unwrap_or("default") == ns
    })?;
    if let Some(v) = secret
        .object
        .string_data
        .as_ref()
        .and_then(|d| d.get(field))
    {
        return Some(v.clone().into_bytes());
    }
    secret
        .object
        .data
        .as_ref()
        .and_then(|d| d.get(field))
        .map(|v| v.0.clone())
}

fn credential(
    set: &ManifestSet,
    cfg: &ConnectionConfig,
    env_token: Option<&secrecy::SecretString>,
) -> Option<secrecy::SecretString> {
    match secret_field(set, &cfg.credentials) {
        Some(bytes) => String::from_utf8(bytes).ok().map(Into::into),
        None => env_token.cloned(),
    }
}

/// The CA a connection trusts: its CA Secret in the manifests, else `--ca-file`.
fn ca_of(
    set: &ManifestSet,
    cfg: &ConnectionConfig,
    opts: &Options,
) -> Result<Option<Vec<u8>>, String> {
    match &cfg.ca {
        Some(r) => secret_field(set, r).map(Some).ok_or_else(|| {
            format!(
                "CA Secret {}/{} (field '{}') is not in the manifests",
                r.0, r.1, r.2
            )
        }),
        None => Ok(opts.ca_pem.clone()),
    }
}

struct Connected {
    provider: Box<dyn CmsProvider>,
    title: String,
    endpoint: String,
    template_endpoint: String,
    embedded: Option<RunningCms>,
}

async fn connect(
    id: &ConnectionId,
    state: &DesiredState,
    set: &ManifestSet,
    cfg: Option<&ConnectionConfig>,
    opts: &Options,
) -> Result<Connected, GitopsError> {
    let fail = |message: String| GitopsError::Connection {
        connection: id.to_string(),
        message,
    };
    match (id, cfg) {
        (ConnectionId::Default, _) => match (&opts.env_url, &opts.env_token) {
            (Some(url), Some(token)) => Ok(Connected {
                provider: opts
                    .env_provider
                    .connect(
                        url,
                        secrecy::ExposeSecret::expose_secret(token),
                        opts.ca_pem.as_deref(),
                    )
                    .map_err(|m| fail(format!("KEYWARD_CMS_URL with KEYWARD_CMS_TOKEN: {m}")))?,
                title: format!("{} at {url} (KEYWARD_CMS_URL)", opts.env_provider.title()),
                endpoint: url.clone(),
                template_endpoint: url.clone(),
                embedded: None,
            }),
            (Some(_), None) => Err(fail(
                "KEYWARD_CMS_URL is set but KEYWARD_CMS_TOKEN is not".into(),
            )),
            // The embedded CMS is the reference CMS; another provider needs its URL.
            _ if opts.env_provider != ProviderKind::Keyward => Err(fail(format!(
                "KEYWARD_CMS_PROVIDER={} needs KEYWARD_CMS_URL and KEYWARD_CMS_TOKEN",
                opts.env_provider
            ))),
            _ => {
                let running = cms::start(CmsConfig::new(&opts.data_dir))
                    .await
                    .map_err(|e| fail(format!("cannot start the embedded reference CMS: {e}")))?;
                let provider = ReferenceCms::new(&running.url(), running.admin_token.expose());
                let created = provider
                    .ensure_apis(&apis_named(state))
                    .await
                    .map_err(|source| GitopsError::Provider {
                        connection: id.to_string(),
                        source,
                    })?;
                if !created.is_empty() {
                    tracing::info!(apis = ?created, "embedded CMS: created the APIs the policies name");
                }
                Ok(Connected {
                    title: format!(
                        "embedded reference CMS (data in {})",
                        opts.data_dir.display()
                    ),
                    endpoint: running.url(),
                    template_endpoint: EMBEDDED_ENDPOINT.into(),
                    provider: Box::new(provider),
                    embedded: Some(running),
                })
            }
        },
        (_, None) => Err(fail("no connection settings".into())),
        (_, Some(cfg)) => {
            let token = credential(set, cfg, opts.env_token.as_ref()).ok_or_else(|| {
                fail(format!(
                    "credential Secret {}/{} (field '{}') is not in the manifests and KEYWARD_CMS_TOKEN is not set",
                    cfg.credentials.0, cfg.credentials.1, cfg.credentials.2
                ))
            })?;
            let ca = ca_of(set, cfg, opts).map_err(fail)?;
            Ok(Connected {
                provider: cfg
                    .provider
                    .connect(
                        &cfg.endpoint,
                        secrecy::ExposeSecret::expose_secret(&token).trim(),
                        ca.as_deref(),
                    )
                    .map_err(|m| {
                        fail(format!(
                            "credential Secret {}/{} (field '{}'): {m}",
                            cfg.credentials.0, cfg.credentials.1, cfg.credentials.2
                        ))
                    })?,
                title: format!("{id} ({} at {})", cfg.provider.title(), cfg.endpoint),
                endpoint: cfg.endpoint.clone(),
                template_endpoint: cfg.endpoint.clone(),
                embedded: None,
            })
        }
    }
}

/// Plans (and in apply mode applies) every connection the manifests use.
pub async fn run(opts: &Options) -> Result<Outcome, GitopsError> {
    // Reading the manifests is file I/O: on the blocking pool.
    let paths = opts.paths.clone();
    let set = tokio::task::spawn_blocking(move || load::load(&paths))
        .await
        .map_err(|e| GitopsError::Invalid(vec![format!("reading the manifests stopped: {e}")]))?
        .map_err(|errs| GitopsError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    let now = opts.clock.now();
    let resolved = validate::resolve(&set, now, None, opts.env_provider)
        .map_err(|errs| GitopsError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    let warnings: Vec<String> = resolved.warnings.iter().map(|w| w.to_string()).collect();
    let sink = SecretsDir::new(&opts.secrets_dir);
    let mut outcome = Outcome {
        runs: Vec::new(),
        warnings,
    };
    for (id, state) in &resolved.desired {
        let conn = connect(id, state, &set, resolved.connections.get(id), opts).await?;
        let result = plan_and_apply(id, state, &conn, &sink, opts).await;
        if let Some(running) = conn.embedded {
            running.stop().await;
        }
        match result {
            Ok(run) => outcome.runs.push(run),
            Err(Failure::Problems(run)) => {
                let problems = run.plan.problems.clone();
                outcome.runs.push(*run);
                return Err(GitopsError::Problems {
                    connection: id.to_string(),
                    problems,
                    partial: Box::new(outcome),
                });
            }
            Err(Failure::Apply(run, error)) => {
                outcome.runs.push(*run);
                return Err(GitopsError::Apply {
                    connection: id.to_string(),
                    error,
                    partial: Box::new(outcome),
                });
            }
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    Ok(outcome)
}

enum Failure {
    Problems(Box<ConnectionRun>),
    Apply(Box<ConnectionRun>, ApplyError),
    Other(GitopsError),
}

async fn plan_and_apply(
    id: &ConnectionId,
    state: &DesiredState,
    conn: &Connected,
    sink: &SecretsDir,
    opts: &Options,
) -> Result<ConnectionRun, Failure> {
    let mode = opts.mode;
    let provider_err = |source| {
        Failure::Other(GitopsError::Provider {
            connection: id.to_string(),
            source,
        })
    };
    let p = conn.provider.as_ref();
    let state = &match express_state(p, state).await {
        Ok(s) => s,
        Err(ExpressError::Refused(msgs)) => return Err(Failure::Other(GitopsError::Invalid(msgs))),
        Err(ExpressError::Provider(e)) => return Err(provider_err(e)),
    };
    let live = p.list_keys().await.map_err(provider_err)?;
    let pruned;
    let state = if opts.prune {
        pruned = prune_gone(state, &live);
        &pruned
    } else {
        state
    };
    let settings = p
        .settings(&state.public.keys().cloned().collect())
        .await
        .map_err(provider_err)?;
    let observed = observe_secrets(sink, &state.keys)
        .await
        .map_err(|e| Failure::Other(e.into()))?;
    let plan = diff(
        state,
        &live,
        &settings,
        &observed,
        &conn.template_endpoint,
        opts.clock.now(),
    );
    let writes_before = sink.writes();
    let mut run = ConnectionRun {
        connection: id.clone(),
        title: conn.title.clone(),
        endpoint: conn.endpoint.clone(),
        plan,
        applied: None,
        cms_reads: 0,
        cms_writes: 0,
        secret_writes: 0,
    };
    if !run.plan.problems.is_empty() {
        return Err(Failure::Problems(Box::new(run)));
    }
    if mode == Mode::Apply {
        let engine = Engine {
            provider: p,
            sink,
            endpoint: conn.template_endpoint.clone(),
            clock: opts.clock.clone(),
        };
        let result = engine.apply(&run.plan).await;
        run.cms_reads = p.stats().reads();
        run.cms_writes = p.stats().writes();
        run.secret_writes = sink.writes() - writes_before;
        match result {
            Ok(report) => run.applied = Some(report),
            Err(e) => return Err(Failure::Apply(Box::new(run), e)),
        }
    } else {
        run.cms_reads = p.stats().reads();
        run.cms_writes = p.stats().writes();
    }
    Ok(run)
}

/// The desired state plus, as policies without keys, every policy that owns keys in the CMS but
/// is not in the manifests, so that the plan revokes their keys. Only keys the CLI made count:
/// a key tagged with a policy UID belongs to a cluster's operator and is never pruned here.
pub fn prune_gone(state: &DesiredState, live: &[crate::providers::LiveKey]) -> DesiredState {
    let mut out = state.clone();
    let known: BTreeSet<String> = state.policies.keys().map(|p| p.to_string()).collect();
    for k in live {
        if k.spec.labels.contains_key(LABEL_POLICY_UID) {
            continue;
        }
        let Some(id) = owner_from_tags(k) else {
            continue;
        };
        if !known.contains(&id.to_string()) {
            out.policies.entry(id).or_insert(PolicySettings {
                gone: true,
                ..Default::default()
            });
        }
    }
    out
}

/// The policy a CLI-made key names: its `namespace.policy.key` name read back with the key label
/// (a namespace has no dots), confirmed by the policy label; keyward 0.1 wrote `namespace/name`.
fn owner_from_tags(k: &crate::providers::LiveKey) -> Option<PolicyId> {
    let tag = k.spec.labels.get(LABEL_POLICY)?;
    let (namespace, name) = match tag.split_once('/') {
        Some(legacy) => legacy,
        None => {
            let key = k.spec.labels.get(crate::model::desired::LABEL_KEY)?;
            k.spec
                .name
                .strip_suffix(key.as_str())?
                .strip_suffix('.')?
                .split_once('.')?
        }
    };
    let id = PolicyId {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: None,
    };
    id.owns(&k.spec.labels).then_some(id)
}

/// Decodes a base64 Secret field (for tests and tools).
pub fn b64(s: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}
