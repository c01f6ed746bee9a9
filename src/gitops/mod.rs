//! `keyward plan` / `keyward apply` without a cluster: manifests in, a plan out, Secrets as
//! manifest files. Connections come from the manifests, from `KEYWARD_CMS_URL` /
//! `KEYWARD_CMS_TOKEN`, or, with neither, from an embedded reference CMS on a local data directory.

use crate::cms::{self, CmsConfig, RunningCms};
use crate::engine::observe::{observe, plan, ObserveError, Observed, Reach};
use crate::engine::{ApplyError, Engine};
use crate::gitops::secrets_dir::ALREADY_GONE;
use crate::model::desired::{ConnectionId, DesiredState};
use crate::plan::Plan;
use crate::policy::connection::Connection;
use crate::policy::load::{self, ManifestSet};
use crate::policy::validate;
use crate::policy::ProviderKind;
use crate::providers::reference::ReferenceCms;
use crate::providers::CmsProvider;
use base64::Engine as _;
use std::collections::BTreeSet;

pub mod audit;
pub mod cluster;
mod error;
mod explain;
mod options;
mod outcome;
pub mod saved;
pub mod secrets_dir;
mod store;

use error::missing_message;
pub use error::{GitopsError, SecretsDirState};
pub use explain::{explain, Explanation, Held};
pub use options::{Mode, Options, SecretsTo};
pub use outcome::{ConnectionRun, Outcome, FORMAT_VERSION};
use store::Store;

/// The URL that `{{ endpoint }}` names for the embedded CMS: where `keyward cms serve` serves
/// the same data directory by default.
pub const EMBEDDED_ENDPOINT: &str = "http://127.0.0.1:8780";

/// Every API the desired state names: the embedded CMS is seeded with them.
fn apis_named(state: &DesiredState) -> BTreeSet<String> {
    let mut apis = state.public_apis();
    for k in &state.keys {
        apis.extend(k.spec.api_permissions.iter().map(|a| a.api.clone()));
    }
    apis
}

/// A field of a Secret in the manifests (`stringData` or `data`), by (namespace, name, field).
fn secret_field(set: &ManifestSet, at: &crate::policy::SecretField) -> Option<Vec<u8>> {
    let (name, field) = (&at.name, &at.key);
    let secret = set.secrets.iter().find(|s| {
        s.object.metadata.name.as_deref() == Some(name)
            && s.object.metadata.namespace.as_deref().unwrap_or("default") == at.namespace
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

/// A connection's credential: its Secret in the manifests, else `KEYWARD_CMS_TOKEN`, but only
/// for the endpoint that token was given for (`KEYWARD_CMS_URL` or keyward.toml's `url`): a
/// connection contributed to a shared repository must not receive the platform's token at an
/// endpoint of its choosing.
fn credential(
    set: &ManifestSet,
    cfg: &Connection,
    opts: &Options,
) -> Result<secrecy::SecretString, String> {
    let at = &cfg.secrets.credential;
    if let Some(bytes) = secret_field(set, at) {
        return String::from_utf8(bytes)
            .map(Into::into)
            .map_err(|_| format!("credential Secret {at} is not UTF-8"));
    }
    let missing = format!("credential Secret {at} is not in the manifests");
    match (&opts.env_token, &opts.env_url) {
        (None, _) => Err(format!("{missing} and KEYWARD_CMS_TOKEN is not set")),
        (Some(token), Some(url)) if same_endpoint(url, &cfg.endpoint) => Ok(token.clone()),
        (Some(_), Some(url)) => Err(format!(
            "{missing}; KEYWARD_CMS_TOKEN is only sent to KEYWARD_CMS_URL ({url}), not to this connection's endpoint {}",
            cfg.endpoint
        )),
        (Some(_), None) => Err(format!(
            "{missing}; KEYWARD_CMS_TOKEN is only sent to KEYWARD_CMS_URL, which is not set (set it to {} if the token is for that CMS)",
            cfg.endpoint
        )),
    }
}

/// The same CMS: equal but for a trailing slash and the case of the scheme and host.
fn same_endpoint(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let u = u.trim().trim_end_matches('/');
        match u.split_once("://") {
            Some((scheme, rest)) => {
                let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                format!(
                    "{}://{}{path}",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase()
                )
            }
            None => u.to_owned(),
        }
    };
    norm(a) == norm(b)
}

/// The current values of the keys adopted with `adopt.valueFrom`, from the Secrets in the
/// manifests (one not there is left unread: the adoption then stops before any change).
fn adopted_values(set: &ManifestSet, resolved: &mut validate::Resolved) {
    for p in &set.policies {
        let id = p.object.policy_id();
        for decl in &p.object.spec.keys {
            let Some(from) = decl.adopt.as_ref().and_then(|a| a.value_from.as_ref()) else {
                continue;
            };
            let at = crate::policy::SecretField {
                namespace: id.namespace.clone(),
                name: from.name.clone(),
                key: from.key.clone(),
            };
            let value = secret_field(set, &at)
                .and_then(|b| String::from_utf8(b).ok())
                .map(|v| crate::model::KeyValue::new(v.trim()));
            let adoptions = resolved
                .desired
                .values_mut()
                .flat_map(|s| s.keys.iter_mut())
                .filter(|k| k.policy == id && k.key == decl.name)
                .filter_map(|k| k.adopt.as_mut());
            for a in adoptions {
                a.value = value.clone();
            }
        }
    }
}

/// The CA a connection trusts: its CA Secret in the manifests, else `--ca-file`.
fn ca_of(set: &ManifestSet, cfg: &Connection, opts: &Options) -> Result<Option<Vec<u8>>, String> {
    match &cfg.secrets.ca {
        Some(r) => secret_field(set, r)
            .map(Some)
            .ok_or_else(|| format!("CA Secret {r} is not in the manifests")),
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
    cfg: Option<&Connection>,
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
            _ => start_embedded(id, state, opts).await,
        },
        (_, None) => Err(fail("no connection settings".into())),
        (_, Some(cfg)) => {
            let token = credential(set, cfg, opts).map_err(fail)?;
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
                        fail(format!("credential Secret {}: {m}", cfg.secrets.credential))
                    })?,
                title: format!("{id} ({} at {})", cfg.provider.title(), cfg.endpoint),
                endpoint: cfg.endpoint.clone(),
                template_endpoint: cfg.endpoint.clone(),
                embedded: None,
            })
        }
    }
}

/// The embedded reference CMS on `--data-dir`, with the APIs the policies name.
async fn start_embedded(
    id: &ConnectionId,
    state: &DesiredState,
    opts: &Options,
) -> Result<Connected, GitopsError> {
    let mut config = CmsConfig::new(&opts.data_dir);
    config.lock_wait = opts.lock_timeout;
    let running = cms::start(config)
        .await
        .map_err(|e| GitopsError::Connection {
            connection: id.to_string(),
            message: format!("cannot start the embedded reference CMS: {e}"),
        })?;
    let provider = ReferenceCms::new(&running.url(), running.admin_token.expose());
    let created = provider
        .ensure_apis(&apis_named(state))
        .await
        .map_err(|source| GitopsError::Provider {
            connection: id.to_string(),
            source,
        })?;
    if !created.is_empty() {
        let apis = created.join(", ");
        tracing::info!(%apis, "embedded CMS: created the APIs the policies name");
    }
    Ok(Connected {
        title: format!(
            "embedded reference CMS (data in {})",
            opts.data_dir.display()
        ),
        // Not the random port it listens on for this run: gone when the run ends.
        endpoint: EMBEDDED_ENDPOINT.into(),
        template_endpoint: EMBEDDED_ENDPOINT.into(),
        provider: Box::new(provider),
        embedded: Some(running),
    })
}

/// Every problem of every file, in file and line order, or the validated policies: one run
/// shows a person everything to fix.
fn every_problem(
    load_errors: Vec<load::LoadError>,
    resolved: Result<validate::Resolved, Vec<validate::Diagnostic>>,
) -> Result<validate::Resolved, Vec<String>> {
    let diags = match resolved {
        Ok(r) if load_errors.is_empty() => return Ok(r),
        Ok(_) => Vec::new(),
        Err(diags) => diags,
    };
    let mut all: Vec<(Option<load::Origin>, String)> = load_errors
        .into_iter()
        .map(|e| (Some(e.origin.clone()), e.to_string()))
        .chain(diags.into_iter().map(|d| (d.origin.clone(), d.to_string())))
        .collect();
    all.sort_by(|a, b| {
        let at = |o: &Option<load::Origin>| o.as_ref().map(|o| (o.file.clone(), o.line));
        at(&a.0).cmp(&at(&b.0))
    });
    Err(all.into_iter().map(|(_, m)| m).collect())
}

/// Plans every connection the manifests use, then (in apply mode, and only if every plan can be
/// applied) applies them one after the other.
pub async fn run(opts: &Options) -> Result<Outcome, GitopsError> {
    // Reading the manifests is file I/O: on the blocking pool.
    let paths = opts.paths.clone();
    let (set, load_errors) = tokio::task::spawn_blocking(move || load::load_all(&paths))
        .await
        .map_err(|e| GitopsError::Invalid(vec![format!("reading the manifests stopped: {e}")]))?;
    let now = opts.clock.now();
    let resolved = validate::resolve(&set, now, None, opts.env_provider);
    let mut resolved = every_problem(load_errors, resolved).map_err(GitopsError::Invalid)?;
    adopted_values(&set, &mut resolved);
    if let Some(ask) = &opts.rotate {
        let refused = ask.refusals(resolved.desired.values());
        if !refused.is_empty() {
            return Err(GitopsError::Invalid(refused));
        }
    }
    let warnings: Vec<String> = resolved.warnings.iter().map(|w| w.to_string()).collect();
    let store = Store::open(opts, &set, &resolved).await?;
    let result = run_on(opts, &store, &set, &resolved, warnings).await;
    store.close().await;
    result
}

/// `run` with the manifests read and the store open (and locked, applying).
async fn run_on(
    opts: &Options,
    store: &Store,
    set: &load::ManifestSet,
    resolved: &validate::Resolved,
    warnings: Vec<String>,
) -> Result<Outcome, GitopsError> {
    let mut outcome = Outcome {
        runs: Vec::new(),
        warnings,
        manifests: set.sources.clone(),
    };
    let mut connected = Vec::new();
    for (id, state) in &resolved.desired {
        let conn = connect(id, state, set, resolved.connections.get(id), opts).await?;
        let run = plan_connection(id, state, &conn, store, opts).await;
        connected.push(conn);
        let problems = match run {
            Ok((run, notes)) => {
                let problems = run.plan.problems.clone();
                outcome.runs.push(run);
                outcome.warnings.extend(notes);
                problems
            }
            Err(e) => return Err(stop_all(connected, e, outcome).await),
        };
        if !problems.is_empty() {
            let e = Failure::Problems(id.to_string(), problems);
            return Err(stop_all(connected, e, outcome).await);
        }
    }
    if let Some(expected) = &opts.expect {
        let moved = expected.moved(&saved::SavedPlan::of(&outcome, &opts.paths, opts.prune));
        if !moved.is_empty() {
            let e = Failure::Other(GitopsError::PlanMoved(moved));
            return Err(stop_all(connected, e, outcome).await);
        }
    }
    let lost: usize = outcome.runs.iter().map(|r| r.lost).sum();
    let dir_state = store.state(outcome.runs.iter().map(|r| r.secrets_seen).sum());
    if lost > 0 && dir_state != SecretsDirState::Present && !opts.regenerate_missing {
        if opts.mode == Mode::Plan {
            let warning = missing_message(&opts.secrets_dir, &dir_state, lost, false);
            outcome.warnings.push(warning);
        } else {
            let e = Failure::Other(GitopsError::SecretsMissing {
                dir: opts.secrets_dir.clone(),
                state: dir_state.clone(),
                lost,
                partial: Box::default(),
            });
            if dir_state == SecretsDirState::Missing {
                remove_created_dir(&opts.secrets_dir);
            }
            return Err(stop_all(connected, e, outcome).await);
        }
    }
    if opts.mode == Mode::Apply {
        for (conn, i) in connected.iter().zip(0..) {
            if let Err(e) = apply_connection(conn, &mut outcome.runs[i], store, opts).await {
                return Err(stop_all(connected, e, outcome).await);
            }
        }
    }
    stop_embedded(connected).await;
    Ok(outcome)
}

/// Undoes the lock's creation of a secrets directory that did not exist, when nothing was
/// written to it.
fn remove_created_dir(dir: &std::path::Path) {
    let _ = std::fs::remove_file(dir.join(crate::dirlock::LOCK_FILE));
    let _ = std::fs::remove_dir(dir);
}

async fn stop_embedded(connected: Vec<Connected>) {
    for conn in connected {
        if let Some(running) = conn.embedded {
            running.stop().await;
        }
    }
}

/// Stops the embedded CMSes and turns `failure` into the run's error, with what was planned
/// and applied so far.
async fn stop_all(connected: Vec<Connected>, failure: Failure, outcome: Outcome) -> GitopsError {
    stop_embedded(connected).await;
    let partial = Box::new(outcome);
    match failure {
        Failure::Problems(connection, problems) => GitopsError::Problems {
            connection,
            problems,
            partial,
        },
        Failure::Apply(connection, error) => GitopsError::Apply {
            connection,
            error,
            partial,
        },
        Failure::Other(GitopsError::SecretsMissing {
            dir, state, lost, ..
        }) => GitopsError::SecretsMissing {
            dir,
            state,
            lost,
            partial,
        },
        Failure::Other(GitopsError::StaleFile { secret, cause, .. }) => GitopsError::StaleFile {
            secret,
            cause,
            partial,
        },
        Failure::Other(e) => e,
    }
}

enum Failure {
    /// A plan with problems (its run is in the outcome).
    Problems(String, Vec<String>),
    Apply(String, ApplyError),
    Other(GitopsError),
}

async fn plan_connection(
    id: &ConnectionId,
    state: &DesiredState,
    conn: &Connected,
    store: &Store,
    opts: &Options,
) -> Result<(ConnectionRun, Vec<String>), Failure> {
    let provider_err = |source| {
        Failure::Other(GitopsError::Provider {
            connection: id.to_string(),
            source,
        })
    };
    let p = conn.provider.as_ref();
    let reach = Reach::Connection { prune: opts.prune };
    let observed = match observe(p, store.sink(), state, p.list_keys(), reach).await {
        Ok(o) => o,
        Err(ObserveError::Refused(msgs)) => return Err(Failure::Other(GitopsError::Invalid(msgs))),
        Err(ObserveError::Provider(e)) => return Err(provider_err(e)),
        Err(ObserveError::Secret(e)) => return Err(Failure::Other(e.into())),
    };
    let mut plan = plan(&observed, &conn.template_endpoint, opts.clock.now());
    let mut not_rotated = match &opts.rotate {
        Some(ask) => crate::plan::rotate_now(&mut plan, &observed.state, ask),
        None => Vec::new(),
    };
    not_rotated.extend(tracked_notes(p, &observed, opts.clock.now()).await);
    let Observed {
        state,
        live,
        settings,
        secrets: observed,
        ..
    } = &observed;
    let lost = lost_values(&plan, observed);
    let revoked: BTreeSet<String> = plan
        .pending()
        .filter_map(|a| match a {
            crate::plan::Action::Revoke { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    // A rotation deletes nothing.
    let stale_files = match opts.rotate {
        Some(_) => Vec::new(),
        None => store
            .stale(revoked, gone_keys(state, live))
            .await
            .map_err(|message| {
                Failure::Other(GitopsError::Connection {
                    connection: id.to_string(),
                    message,
                })
            })?,
    };
    let run = ConnectionRun {
        connection: id.clone(),
        title: conn.title.clone(),
        endpoint: conn.endpoint.clone(),
        cms_reads: p.stats().reads(),
        cms_writes: p.stats().writes(),
        secret_writes: 0,
        stale_files,
        lost,
        secrets_seen: observed.len(),
        live_digest: saved::live_digest(live, settings, observed),
        plan,
        applied: None,
    };
    Ok((run, not_rotated))
}

/// What ObserveOnly policies tracking keys made by hand (`adopt`) should hear: a value in use
/// the CMS refuses, and a key within its reminder window.
async fn tracked_notes(p: &dyn CmsProvider, o: &Observed, now: jiff::Timestamp) -> Vec<String> {
    let mut out: Vec<String> = crate::engine::observe::probe_tracked(p, o)
        .await
        .into_iter()
        .filter(|(_, works)| !works)
        .map(|(k, _)| {
            format!(
                "{}/{}: the CMS refuses the value in use (adopt.valueFrom): 401",
                k.policy, k.key
            )
        })
        .collect();
    for k in o.state.keys.iter().filter(|k| k.observe_only) {
        let Some(a) = &k.adopt else {
            continue;
        };
        let expiry = o
            .live
            .iter()
            .find(|l| a.names(l))
            .and_then(|l| l.expires_at());
        if let Some(at) = expiry.filter(|e| e.duration_since(now) <= k.renew_before) {
            out.push(format!(
                "{}/{}: the key made by hand that it tracks expires at {}",
                k.policy,
                k.key,
                crate::model::rfc3339(at)
            ));
        }
    }
    out
}

/// Existing keys that the plan gives a new value because their Secret is missing.
fn lost_values(plan: &Plan, observed: &crate::model::secret::ObservedSecrets) -> usize {
    plan.pending()
        .filter(|a| match a {
            crate::plan::Action::Rotate { key, .. } => {
                !observed.contains_key(&(key.secret.namespace.clone(), key.secret.name.clone()))
            }
            _ => false,
        })
        .count()
}

/// What tells the Secrets of keys an earlier apply revoked before it stopped: their policy is
/// here, their key is not, and no desired key writes them.
fn gone_keys(
    state: &DesiredState,
    live: &[crate::providers::LiveKey],
) -> crate::gitops::secrets_dir::GoneKeys {
    crate::gitops::secrets_dir::GoneKeys {
        policies: state
            .policies
            .keys()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect(),
        live: live.iter().map(|k| k.id.clone()).collect(),
        targets: state
            .keys
            .iter()
            .map(|k| (k.secret.namespace.clone(), k.secret.name.clone()))
            .collect(),
    }
}

/// Applies a connection's plan, then deletes the Secret files of the keys it revoked.
async fn apply_connection(
    conn: &Connected,
    run: &mut ConnectionRun,
    store: &Store,
    opts: &Options,
) -> Result<(), Failure> {
    let p = conn.provider.as_ref();
    let who = audit::who(match opts.rotate {
        Some(_) => "rotate",
        None => "apply",
    });
    let connection = run.connection.to_string();
    let trail = opts.audit_log.as_deref().map(|log| audit::Trail {
        log,
        who: &who,
        connection: &connection,
    });
    let audited = trail.map(|trail| {
        let provider = audit::AuditedProvider { inner: p, trail };
        let sink = audit::AuditedSink {
            inner: store.sink(),
            trail,
        };
        (provider, sink)
    });
    let (provider, sink): (&dyn CmsProvider, &dyn crate::engine::SecretSink) = match &audited {
        Some((p, s)) => (p, s),
        None => (p, store.sink()),
    };
    let engine = Engine {
        provider,
        sink,
        endpoint: conn.template_endpoint.clone(),
        clock: opts.clock.clone(),
        progress: opts.progress.clone(),
    };
    let writes_before = store.writes();
    let result = engine.apply(&run.plan).await;
    run.cms_reads = p.stats().reads();
    run.cms_writes = p.stats().writes();
    run.secret_writes = store.writes().saturating_sub(writes_before);
    let revoked: BTreeSet<&String> = match &result {
        Ok(r) => r.revoked.iter().collect(),
        Err(e) => e.revoked.iter().collect(),
    };
    remove_stale_files(run, &revoked, result.is_ok(), store, trail).await?;
    let report = result.map_err(|e| Failure::Apply(run.connection.to_string(), e))?;
    run.applied = Some(report);
    Ok(())
}

/// The files of keys revoked go, also when the apply stopped (`done` false) after revoking
/// them; those of keys gone already go after a run that went through.
async fn remove_stale_files(
    run: &ConnectionRun,
    revoked: &BTreeSet<&String>,
    done: bool,
    store: &Store,
    trail: Option<audit::Trail<'_>>,
) -> Result<(), Failure> {
    for f in run
        .stale_files
        .iter()
        .filter(|f| revoked.contains(&f.key_id) || (done && f.why == ALREADY_GONE))
    {
        let removed = store.remove(f).await;
        let secret = format!("{}/{}", f.namespace, f.name);
        let removed = match trail {
            Some(t) => t.note("delete Secret", &secret, removed, |_| {
                Some(f.key_id.clone())
            }),
            None => removed,
        };
        removed.map_err(|cause| {
            let secret = match &f.path {
                Some(p) => format!("file {}", p.display()),
                None => secret,
            };
            Failure::Other(GitopsError::StaleFile {
                secret,
                cause,
                partial: Box::default(),
            })
        })?;
    }
    Ok(())
}

/// Decodes a base64 Secret field (for tests and tools).
pub fn b64(s: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod endpoint_tests {
    use super::same_endpoint;

    #[test]
    fn the_same_cms_however_written_and_no_other() {
        assert!(same_endpoint(
            "http://cms.example.com",
            "http://cms.example.com/"
        ));
        assert!(same_endpoint(
            "HTTPS://CMS.example.com/api/",
            "https://cms.example.com/api"
        ));
        assert!(!same_endpoint(
            "https://cms.example.com",
            "https://cms.example.com.evil.io"
        ));
        assert!(!same_endpoint(
            "https://cms.example.com",
            "http://cms.example.com"
        ));
        assert!(!same_endpoint(
            "https://cms.example.com/API",
            "https://cms.example.com/api"
        ));
        assert!(!same_endpoint(
            "https://cms.example.com:8443",
            "https://cms.example.com"
        ));
    }
}
