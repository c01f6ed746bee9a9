//! Where a run keeps the generated Secrets, which is where its state lives: a directory of
//! Secret manifests (the default; plaintext values on disk, locked with a lock file) or a
//! cluster (`--secrets-to kubernetes`; nothing on disk, locked with a Lease per namespace).

use super::cluster::ClusterSecrets;
use super::error::{GitopsError, SecretsDirState};
use super::options::{Mode, Options, SecretsTo};
use crate::engine::SecretSink;
use crate::gitops::secrets_dir::{GoneKeys, KeySecretFile, SecretsDir};
use crate::policy::load::ManifestSet;
use crate::policy::validate::Resolved;
use std::collections::{BTreeMap, BTreeSet};

pub(super) enum Store {
    Dir {
        sink: SecretsDir,
        /// What the directory held before the run.
        state: SecretsDirState,
        _lock: Option<crate::dirlock::DirLock>,
    },
    Cluster {
        /// Applying, it holds the Leases.
        sink: Box<ClusterSecrets>,
        /// The namespaces the run writes to.
        namespaces: BTreeSet<String>,
    },
}

impl Store {
    /// Opens the store of `opts` for the keys of `resolved`; applying, takes its lock.
    pub(super) async fn open(
        opts: &Options,
        set: &ManifestSet,
        resolved: &Resolved,
    ) -> Result<Store, GitopsError> {
        let SecretsTo::Kubernetes(target) = &opts.secrets_to else {
            let (state, lock) = inspect_and_lock(opts).await?;
            return Ok(Store::Dir {
                sink: SecretsDir::new(&opts.secrets_dir),
                state,
                _lock: lock,
            });
        };
        let (client, named) = target.client().await?;
        let keys = resolved.desired.values().flat_map(|s| &s.keys);
        let policies: BTreeMap<(String, String), String> = keys
            .map(|k| {
                let at = (k.secret.namespace.clone(), k.secret.name.clone());
                (at, k.policy.name.clone())
            })
            .collect();
        let namespaces: BTreeSet<String> = policies.keys().map(|(ns, _)| ns.clone()).collect();
        let sink = ClusterSecrets::new(client, named, policies, adoptable(set));
        let sink = match opts.mode {
            Mode::Apply => sink.lock(&namespaces, opts.lock_timeout).await?,
            Mode::Plan => sink,
        };
        Ok(Store::Cluster {
            sink: Box::new(sink),
            namespaces,
        })
    }

    pub(super) fn sink(&self) -> &dyn SecretSink {
        match self {
            Store::Dir { sink, .. } => sink,
            Store::Cluster { sink, .. } => sink.as_ref(),
        }
    }

    /// Secrets written so far.
    pub(super) fn writes(&self) -> u64 {
        match self {
            Store::Dir { sink, .. } => sink.writes(),
            Store::Cluster { sink, .. } => sink.writes(),
        }
    }

    /// What the store held before the run, given how many Secrets the plans found (`seen`): a
    /// cluster holding none of them is as empty as a directory without files.
    pub(super) fn state(&self, seen: usize) -> SecretsDirState {
        match self {
            Store::Dir { state, .. } => state.clone(),
            Store::Cluster { .. } if seen > 0 => SecretsDirState::Present,
            Store::Cluster { sink, .. } => SecretsDirState::NoneInCluster(sink.named.clone()),
        }
    }

    /// The Secrets keyward wrote that go (see `secrets_dir::goes`).
    pub(super) async fn stale(
        &self,
        revoked: BTreeSet<String>,
        gone: GoneKeys,
    ) -> Result<Vec<KeySecretFile>, String> {
        match self {
            Store::Dir { sink, .. } => sink.stale_files(revoked, gone).await.map_err(|e| {
                format!(
                    "cannot read the secrets directory {}: {e}",
                    sink.dir().display()
                )
            }),
            Store::Cluster { sink, namespaces } => {
                // The namespaces of gone policies too: their Secrets go as well (applying, their
                // Leases are taken before anything is deleted there).
                let mut all = namespaces.clone();
                all.extend(gone.policies.iter().map(|(ns, _)| ns.clone()));
                sink.stale(&all, &revoked, &gone)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Deletes a Secret that `stale` found.
    pub(super) async fn remove(&self, f: &KeySecretFile) -> Result<(), String> {
        match self {
            Store::Dir { sink, .. } => sink.remove(f).await.map_err(|e| e.to_string()),
            Store::Cluster { sink, .. } => sink.remove(f).await.map_err(|e| e.to_string()),
        }
    }

    /// Ends the run: gives a cluster's Leases back (a directory's lock goes when dropped).
    pub(super) async fn close(self) {
        if let Store::Cluster { sink, .. } = self {
            sink.release().await;
        }
    }
}

/// The Secrets (namespace, name) whose keys say `secret.adopt: true`.
fn adoptable(set: &ManifestSet) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for p in &set.policies {
        let ns = p.object.metadata.namespace.as_deref().unwrap_or("default");
        for k in p.object.spec.keys.iter().filter(|k| k.secret.adopt) {
            out.insert((ns.to_owned(), k.secret.name.clone()));
        }
    }
    out
}

/// The secrets directory's state before anything touches it, and in apply mode its lock (which
/// creates it, 0700): one `apply` per directory at a time.
async fn inspect_and_lock(
    opts: &Options,
) -> Result<(SecretsDirState, Option<crate::dirlock::DirLock>), GitopsError> {
    let (dir, apply, wait) = (
        opts.secrets_dir.clone(),
        opts.mode == Mode::Apply,
        opts.lock_timeout,
    );
    let joined = tokio::task::spawn_blocking(move || {
        let state = SecretsDirState::inspect(&dir);
        let lock = apply
            .then(|| crate::dirlock::lock(&dir, "secrets directory", wait))
            .transpose()?;
        Ok::<_, crate::dirlock::LockError>((state, lock))
    })
    .await
    .map_err(|e| {
        GitopsError::Invalid(vec![format!("locking the secrets directory stopped: {e}")])
    })?;
    Ok(joined?)
}
