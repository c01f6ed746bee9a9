//! `--secrets-to kubernetes`: the CLI writes each key's Secret straight to a cluster instead of
//! a directory of files. The Secrets have the format, labels and annotations of the operator's
//! (and of the secrets directory's files), are written under the field manager `keyward-cli`
//! (created, then updated with server-side apply at the version checked), and a Secret the CLI
//! did not write is never overwritten unless its key says `secret.adopt: true`. The state lives
//! in the cluster: nothing is written to disk. One apply at a time per namespace: a Lease
//! (`keyward-cli`) in each namespace the run writes to or deletes in, held and renewed for the
//! run; a run whose Lease was taken from it (renewals failed past its term) stops before its
//! next write.

use crate::engine::{SecretSink, SinkError};
use crate::gitops::secrets_dir::{goes, GoneKeys, KeySecretFile};
use crate::model::desired::SecretTarget;
use crate::model::secret::{written_by_keyward, ObservedSecret, SecretMaterial};
use crate::model::KeyValue;
use crate::operator::secrets::KubeSecrets;
use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The field manager of the CLI's writes (the operator's is `keyward` by default).
pub const FIELD_MANAGER: &str = "keyward-cli";
/// The Lease that makes applies to one namespace take turns.
pub const LEASE_NAME: &str = "keyward-cli";
/// How long a Lease is held without renewal: a CLI killed halfway blocks the next apply at
/// most this long.
const LEASE_SECONDS: u64 = 30;
/// How long taking a free Lease may take (a read and a write), whatever the wait.
const FIRST_TRY: Duration = Duration::from_secs(5);

/// Which cluster, as kubectl finds it: `--kubeconfig` (else `KUBECONFIG`, else
/// `~/.kube/config`, else the pod's service account) and `--context`.
#[derive(Clone, Debug, Default)]
pub struct ClusterTarget {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use the cluster ({0})")]
    Config(String),
    #[error("namespace {namespace}: the Lease {LEASE_NAME} is held by {holder} (another keyward apply to this namespace); waited {waited}s (--lock-timeout). Nothing was changed")]
    Locked {
        namespace: String,
        holder: String,
        waited: u64,
    },
    #[error("the Lease {LEASE_NAME} in namespace {namespace} was lost (its renewals failed, and another apply may hold it now): stopped before the next change")]
    Lost { namespace: String },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl ClusterTarget {
    /// A client for the cluster, and how to name it in messages (its context, or its server).
    pub async fn client(&self) -> Result<(Client, String), ClusterError> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let opts = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let bad = |e: &dyn std::fmt::Display| ClusterError::Config(e.to_string());
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| bad(&format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &opts)
                    .await
                    .map_err(|e| bad(&e))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| bad(&e))?,
            (None, None) => kube::Config::infer().await.map_err(|e| bad(&e))?,
        };
        let named = match &self.context {
            Some(c) => format!("context {c}"),
            None => format!("cluster {}", config.cluster_url),
        };
        let client = Client::try_from(config).map_err(|e| bad(&e))?;
        Ok((client, named))
    }
}

/// The CLI's Secrets in a cluster: the Kubernetes Secret sink with the CLI as owner, counting
/// its writes; applying, it holds the Lease of each namespace it writes to or deletes in.
pub struct ClusterSecrets {
    inner: KubeSecrets,
    writes: AtomicU64,
    /// The cluster, as messages name it.
    pub named: String,
    /// Applying: the Leases held, and how long to wait for one.
    lock: Option<(tokio::sync::Mutex<ClusterLock>, Duration)>,
}

impl ClusterSecrets {
    /// The Secrets of `policies` ((namespace, Secret name) → policy name), those in `adoptable`
    /// taken over where found.
    pub fn new(
        client: Client,
        named: String,
        policies: BTreeMap<(String, String), String>,
        adoptable: BTreeSet<(String, String)>,
    ) -> ClusterSecrets {
        ClusterSecrets {
            inner: KubeSecrets::for_cli(client, FIELD_MANAGER, policies, adoptable),
            writes: AtomicU64::new(0),
            named,
            lock: None,
        }
    }

    /// Applying: takes the Leases of `namespaces` (waiting up to `wait`), and more as the run
    /// needs them.
    pub async fn lock(
        mut self,
        namespaces: &BTreeSet<String>,
        wait: Duration,
    ) -> Result<ClusterSecrets, ClusterError> {
        let lock = ClusterLock::take(&self.inner.client, namespaces, wait).await?;
        self.lock = Some((tokio::sync::Mutex::new(lock), wait));
        Ok(self)
    }

    /// Gives the Leases back.
    pub async fn release(self) {
        if let Some((lock, _)) = self.lock {
            lock.into_inner().release().await;
        }
    }

    /// Before a write or a delete in `namespace`: its Lease is held (taken now if the run had
    /// not needed it yet), and no Lease of the run was lost.
    async fn holding(&self, namespace: &str) -> Result<(), ClusterError> {
        let Some((lock, wait)) = &self.lock else {
            return Ok(());
        };
        let mut lock = lock.lock().await;
        let more = BTreeSet::from([namespace.to_owned()]);
        lock.take_more(&self.inner.client, &more, *wait).await?;
        match lock.lost() {
            Some(ns) => Err(ClusterError::Lost { namespace: ns }),
            None => Ok(()),
        }
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The CLI's Secrets in `namespaces` that go (see `goes`): listed by keyward's label, and
    /// only those the CLI owns (an operator's are its own business).
    pub async fn stale(
        &self,
        namespaces: &BTreeSet<String>,
        revoked: &BTreeSet<String>,
        gone: &GoneKeys,
    ) -> Result<Vec<KeySecretFile>, ClusterError> {
        let mut found = Vec::new();
        let lp = ListParams::default().labels(&written_by_keyward());
        for ns in namespaces {
            let api = Api::<Secret>::namespaced(self.inner.client.clone(), ns);
            let list = api.list(&lp).await.map_err(|e| ClusterError::Api {
                what: format!("listing keyward's Secrets in namespace {ns}"),
                source: Box::new(e),
            })?;
            for s in list.items {
                if !cli_wrote(&s) {
                    continue;
                }
                if let Some((key_id, why)) = goes(&s, revoked, gone) {
                    let m = s.metadata;
                    found.push(KeySecretFile {
                        path: None,
                        uid: m.uid,
                        version: m.resource_version,
                        namespace: m.namespace.unwrap_or_default(),
                        name: m.name.unwrap_or_default(),
                        key_id,
                        why,
                    });
                }
            }
        }
        found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        // Applying, the Leases of where Secrets will be deleted are taken now, before the CMS
        // is changed: a run that cannot have one changes nothing (a key revoked and its
        // Secret left would be found by no later run, its policy being gone).
        let places: BTreeSet<&String> = found.iter().map(|f| &f.namespace).collect();
        for ns in places {
            self.holding(ns).await?;
        }
        Ok(found)
    }

    /// Deletes a Secret that `stale` found, if it is still that Secret as it was listed (its
    /// uid and resourceVersion: one adopted or rewritten since is not deleted).
    pub async fn remove(&self, f: &KeySecretFile) -> Result<(), ClusterError> {
        self.holding(&f.namespace).await?;
        let api = Api::<Secret>::namespaced(self.inner.client.clone(), &f.namespace);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: f.uid.clone(),
                resource_version: f.version.clone(),
            }),
            ..Default::default()
        };
        match api.delete(&f.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(ClusterError::Api {
                what: format!("deleting the Secret {}/{}", f.namespace, f.name),
                source: Box::new(e),
            }),
        }
    }
}

/// A Secret the CLI wrote: keyward's label and no owner (an operator's is owned by its policy).
fn cli_wrote(s: &Secret) -> bool {
    s.metadata
        .owner_references
        .as_ref()
        .is_none_or(|r| r.is_empty())
}

#[async_trait]
impl SecretSink for ClusterSecrets {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        self.inner.observe(target).await
    }

    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        self.inner.current_value(target).await
    }

    async fn write(&self, material: &SecretMaterial) -> Result<bool, SinkError> {
        let t = &material.target;
        self.holding(&t.namespace).await.map_err(|e| SinkError {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            detail: e.to_string(),
            conflict: false,
        })?;
        let wrote = self.inner.write(material).await?;
        if wrote {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(wrote)
    }
}

/// The Leases a run holds, one per namespace it writes to; renewed in the background until
/// released.
pub struct ClusterLock {
    /// This run, as the Leases name their holder.
    me: String,
    held: Vec<Held>,
}

struct Held {
    namespace: String,
    leading: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
}

/// Who holds a Lease: this process on this machine (`keyward-cli <host> pid <pid> <nonce>`).
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    let nonce: u32 = rand::random();
    format!("keyward-cli {host} pid {} {nonce:08x}", std::process::id())
}

impl ClusterLock {
    /// Takes the Lease of each of `namespaces` in order (so two runs never wait on each other
    /// crosswise), waiting up to `wait` in all; on failure, the Leases taken are given back.
    pub async fn take(
        client: &Client,
        namespaces: &BTreeSet<String>,
        wait: Duration,
    ) -> Result<ClusterLock, ClusterError> {
        let mut lock = ClusterLock {
            me: identity(),
            held: Vec::new(),
        };
        match lock.take_more(client, namespaces, wait).await {
            Ok(()) => Ok(lock),
            Err(e) => {
                lock.release().await;
                Err(e)
            }
        }
    }

    /// Takes the Leases of `namespaces` this run does not hold yet, in order, waiting up to
    /// `wait` in all.
    async fn take_more(
        &mut self,
        client: &Client,
        namespaces: &BTreeSet<String>,
        wait: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + wait;
        for ns in namespaces {
            if !self.holds(ns) {
                let held = take_one(client, ns, &self.me, deadline).await?;
                self.held.push(held);
            }
        }
        Ok(())
    }

    fn holds(&self, namespace: &str) -> bool {
        self.held.iter().any(|h| h.namespace == namespace)
    }

    /// A namespace whose Lease this run no longer holds.
    fn lost(&self) -> Option<String> {
        self.held
            .iter()
            .find(|h| !*h.leading.borrow())
            .map(|h| h.namespace.clone())
    }

    /// Gives every Lease back, so the next apply need not wait for them to run out.
    pub async fn release(self) {
        for h in self.held {
            // Closing the channel makes the lease task release the Lease and end.
            drop(h.leading);
            match tokio::time::timeout(Duration::from_secs(5), h.task).await {
                Ok(Ok(Ok(_))) => {}
                _ => tracing::warn!("could not release a Lease: it runs out by itself"),
            }
        }
    }
}

async fn take_one(
    client: &Client,
    ns: &str,
    me: &str,
    deadline: tokio::time::Instant,
) -> Result<Held, ClusterError> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(ns)
        .with_identity(me)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_SECONDS / 3)
        // The field manager stays the library's own per identity: a free Lease is taken with a
        // server-side apply that only another manager's fields make conflict, so two runs
        // under one manager could both take it.
        .build()
        .await
        .map_err(|e| {
            ClusterError::Config(format!("the Lease {LEASE_NAME} in namespace {ns}: {e}"))
        })?;
    let started = tokio::time::Instant::now();
    let (mut leading, task) = manager.watch().await;
    // Even with --lock-timeout 0s, a free Lease gets the one try it takes to see it is free.
    let deadline = deadline.max(tokio::time::Instant::now() + FIRST_TRY);
    let won = tokio::time::timeout_at(deadline, async {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    if won {
        return Ok(Held {
            namespace: ns.to_owned(),
            leading,
            task,
        });
    }
    drop(leading);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let waited = deadline.saturating_duration_since(started);
    let holder = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(LEASE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_else(|| "someone".into());
    Err(ClusterError::Locked {
        namespace: ns.to_owned(),
        holder,
        waited: waited.as_secs(),
    })
}
