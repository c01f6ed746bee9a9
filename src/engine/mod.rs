//! Applying a plan: the one implementation of "apply", shared by the CLI and the operator.
//!
//! A key value exists only in the create/regenerate answer, so it is written to its Secret
//! before anything else happens. If that write fails after retries, a new key (a create, a
//! replacement, a renewal that the CMS issued as a new key) is revoked and the next run makes it
//! again; a regenerated key keeps its old value valid for the overlap and the next run
//! regenerates it again. The error says what was done and what was not.

pub mod clock;
pub(crate) mod observe;

pub use clock::Clock;

use crate::model::desired::{DesiredKey, SecretTarget};
use crate::model::secret::{ObservedSecret, ObservedSecrets, SecretMaterial};
use crate::model::KeyValue;
use crate::plan::{Action, Plan};
use crate::providers::{CmsProvider, LiveKey, ProviderError, Regeneration};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use jiff::{SignedDuration, Timestamp};

/// How many times a generated value's Secret write is tried before the key is given up.
pub const SECRET_WRITE_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
#[error("Secret {namespace}/{name}: {detail}")]
pub struct SinkError {
    pub namespace: String,
    pub name: String,
    pub detail: String,
    /// The Secret belongs to something else: nothing was written, and retrying cannot help.
    pub conflict: bool,
}

/// Where key values go: Secret manifests in a directory (CLI), or Kubernetes Secrets (operator).
#[async_trait]
pub trait SecretSink: Send + Sync {
    /// What the Secret says about the value it holds; `None` if there is no such Secret.
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError>;
    /// [`observe`](Self::observe) for many Secrets at once (a sink may read them together).
    async fn observe_all(
        &self,
        targets: &[SecretTarget],
    ) -> Result<Vec<Option<ObservedSecret>>, SinkError> {
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            out.push(self.observe(t).await?);
        }
        Ok(out)
    }
    /// The value the Secret holds, to rewrite its other fields without a new value.
    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError>;
    /// Writes the Secret; `Ok(false)` when it already had exactly this content.
    async fn write(&self, material: &SecretMaterial) -> Result<bool, SinkError>;
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub done: Vec<String>,
    pub secrets_written: usize,
    /// The ids of the keys revoked (their Secret files go with them).
    pub revoked: Vec<String>,
}

/// An apply that stopped: what was done, what failed, what was not attempted.
#[derive(Debug, thiserror::Error)]
#[error("{failed}: {cause}{}", others_failed(.also_failed))]
pub struct ApplyError {
    pub done: Vec<String>,
    /// The ids of the keys revoked before it stopped.
    pub revoked: Vec<String>,
    pub failed: String,
    pub cause: StepFailure,
    /// Steps under way beside the first failure that failed too.
    pub also_failed: Vec<(String, StepFailure)>,
    pub not_attempted: Vec<String>,
    pub transient: bool,
}

fn others_failed(others: &[(String, StepFailure)]) -> String {
    others
        .iter()
        .map(|(what, why)| format!("; also failed: {what}: {why}"))
        .collect()
}

/// Why one step of an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    /// The CMS refused, or could not be reached.
    #[error(transparent)]
    Cms(#[from] ProviderError),
    /// A key was made (`made` says which) but its value could not be written; `undo` says
    /// what became of the key.
    #[error("{made} but could not write its Secret ({source}); {undo}")]
    NewValueUnwritten {
        made: String,
        source: SinkError,
        undo: String,
    },
    /// A key's value was regenerated in place but could not be written.
    #[error("regenerated key {id} but could not write its Secret ({source}); the old value stays valid {grace_seconds}s and the next run regenerates again")]
    RegeneratedValueUnwritten {
        id: String,
        source: SinkError,
        grace_seconds: i64,
    },
    #[error("key {0} vanished from the plan")]
    Vanished(String),
    #[error("the Secret lost its value since the plan was made; run again")]
    ValueLost,
    /// `adopt.valueFrom` is not the adopted key's current value: nothing was changed.
    #[error("the value adopt.valueFrom names is not key {0}'s current value (the CMS refused it, or it is another key's); nothing was changed")]
    NotTheValue(String),
    #[error("adopt.valueFrom could not be read (the CLI reads a Secret of its manifests; the operator, a Secret labelled keyward.dev/credential: \"true\" in the policy's namespace); nothing was changed")]
    AdoptValueUnread,
    /// A lifetime or overlap that would end past the last instant a time can hold.
    #[error("{0} ends past the last instant a time can hold")]
    TimeOutOfRange(&'static str),
    #[error(transparent)]
    Secret(#[from] SinkError),
}

impl StepFailure {
    /// Worth running again later: everything but a CMS refusal and a plan that went stale.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Cms(e) => e.is_transient(),
            Self::Vanished(_)
            | Self::TimeOutOfRange(_)
            | Self::NotTheValue(_)
            | Self::AdoptValueUnread => false,
            _ => true,
        }
    }
}

impl ApplyError {
    /// The whole story, for a person.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for d in &self.done {
            s.push_str(&format!("  done:          {d}\n"));
        }
        s.push_str(&format!(
            "  failed:        {}: {}\n",
            self.failed, self.cause
        ));
        for (what, why) in &self.also_failed {
            s.push_str(&format!("  also failed:   {what}: {why}\n"));
        }
        for n in &self.not_attempted {
            s.push_str(&format!("  not attempted: {n}\n"));
        }
        s
    }
}

/// Observes the Secrets of every desired key.
pub async fn observe_secrets(
    sink: &dyn SecretSink,
    keys: &[DesiredKey],
) -> Result<ObservedSecrets, SinkError> {
    let targets: Vec<SecretTarget> = keys.iter().map(|k| k.secret.clone()).collect();
    let observed = sink.observe_all(&targets).await?;
    Ok(targets
        .into_iter()
        .zip(observed)
        .filter_map(|(t, o)| Some(((t.namespace, t.name), o?)))
        .collect())
}

pub struct Engine<'a> {
    pub provider: &'a dyn CmsProvider,
    pub sink: &'a dyn SecretSink,
    /// The CMS URL workloads should use (`{{ endpoint }}` in Secret templates).
    pub endpoint: String,
    /// "Now" for new expiries (the plan's clock).
    pub clock: Clock,
    /// Told (done, total) each time a change is applied.
    pub progress: Option<Progress>,
}

/// A listener for apply's progress: (changes done, changes to apply).
pub type Progress = std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>;

fn describe(a: &Action) -> String {
    match a {
        Action::Create { key } => format!("create key {}/{}", key.policy, key.key),
        Action::Adopt { key, id, .. } => {
            format!("adopt key {}/{} (id {id})", key.policy, key.key)
        }
        Action::Update { key, id, .. } => {
            format!("update key {}/{} (id {id})", key.policy, key.key)
        }
        Action::Rotate { key, id, .. } => {
            format!("rotate key {}/{} (id {id})", key.policy, key.key)
        }
        Action::Replace { key, old_id, .. } => {
            format!("replace key {}/{} (id {old_id})", key.policy, key.key)
        }
        Action::WriteSecret { key, .. } => format!("rewrite Secret {}", key.secret),
        Action::Revoke { id, .. } => format!("revoke key {} (id {id})", a.subject()),
        Action::SetCors { .. } | Action::SetPublic { .. } => format!("set {}", a.subject()),
    }
}

impl Engine<'_> {
    /// Carries out the plan's pending actions in order; stops at the first failure. A run of
    /// creates goes [`CmsProvider::parallel_creates`] at a time: the CMS hashes every new value
    /// (Argon2id, slow on purpose), and one create at a time would leave all but one of its
    /// cores idle. A failure stops new work; what is under way finishes, so no created key
    /// loses its value.
    pub async fn apply(&self, plan: &Plan) -> Result<ApplyReport, ApplyError> {
        let pending: Vec<&Action> = plan.pending().collect();
        let mut report = ApplyReport::default();
        let mut next = 0;
        while next < pending.len() {
            let creates = pending[next..]
                .iter()
                .take_while(|a| matches!(a, Action::Create { .. }))
                .count();
            let width = match creates {
                0 => 1,
                n => n.min(self.provider.parallel_creates().max(1)),
            };
            let batch = &pending[next..next + creates.max(1)];
            let (started, failures) = self
                .run_batch(plan, batch, width, &mut report, pending.len())
                .await;
            if !failures.is_empty() {
                let transient = failures.iter().all(|(_, e)| e.is_transient());
                let mut failures = failures.into_iter().map(|(i, e)| (describe(batch[i]), e));
                let Some((failed, cause)) = failures.next() else {
                    break;
                };
                let untouched = batch[started..]
                    .iter()
                    .chain(&pending[next + batch.len()..]);
                return Err(ApplyError {
                    done: report.done,
                    revoked: report.revoked,
                    failed,
                    cause,
                    also_failed: failures.collect(),
                    not_attempted: untouched.map(|a| describe(a)).collect(),
                    transient,
                });
            }
            next += batch.len();
        }
        Ok(report)
    }

    /// Applies `batch` `width` at a time (one until the first succeeds, so a CMS that refuses
    /// fails one call, not `width`), recording what is done in `report`; how many were started,
    /// and the failures by position (none started after the first).
    async fn run_batch(
        &self,
        plan: &Plan,
        batch: &[&Action],
        width: usize,
        report: &mut ApplyReport,
        total: usize,
    ) -> (usize, Vec<(usize, StepFailure)>) {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut running = FuturesUnordered::new();
        let mut failures = Vec::new();
        let (mut started, mut succeeded) = (0, false);
        loop {
            let limit = if succeeded { width } else { 1 };
            while failures.is_empty() && running.len() < limit && started < batch.len() {
                let (i, action) = (started, batch[started]);
                running.push(async move { (i, self.apply_one(plan, action).await) });
                started += 1;
            }
            match running.next().await {
                None => break,
                Some((i, Ok((what, secret_written)))) => {
                    succeeded = true;
                    tracing::info!(action = %what, "applied");
                    report.done.push(what);
                    if let Some(progress) = &self.progress {
                        progress(report.done.len(), total);
                    }
                    report.secrets_written += usize::from(secret_written);
                    if let Action::Revoke { id, .. } = batch[i] {
                        report.revoked.push(id.clone());
                    }
                }
                Some((i, Err(e))) => failures.push((i, e)),
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        (started, failures)
    }

    /// Writes a Secret, trying [`SECRET_WRITE_ATTEMPTS`] times with jittered backoff from
    /// 200 ms: the value exists only here, so a passing API-server hiccup must not lose it.
    async fn write_with_retry(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(200))
            .with_max_times(SECRET_WRITE_ATTEMPTS - 1)
            .with_jitter();
        (|| self.sink.write(m))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|e: &SinkError, wait: std::time::Duration| {
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "writing the Secret failed; retrying");
            })
            .await
    }

    /// Revokes a key whose value could not be written (it is gone with this process: better no
    /// key than a key nobody has); says what became of it.
    async fn revoke_unwritten(&self, id: &str, next_run: &str) -> String {
        match self.provider.revoke_key(id).await {
            Ok(()) => format!("the new key was revoked; {next_run}"),
            Err(r) => format!("revoking the new key failed too ({r}); the next run regenerates it"),
        }
    }

    /// Writes the value of a key just made (`made` says how); when that fails the key is
    /// revoked, since nobody has its value, and `undo` ends what the failure says of it.
    async fn write_new_key(
        &self,
        m: &SecretMaterial,
        made: String,
        next_run: &str,
        undo: &str,
    ) -> Result<bool, StepFailure> {
        match self.write_with_retry(m).await {
            Ok(w) => Ok(w),
            Err(source) => Err(StepFailure::NewValueUnwritten {
                made,
                source,
                undo: format!("{}{undo}", self.revoke_unwritten(&m.key_id, next_run).await),
            }),
        }
    }

    async fn apply_one(&self, plan: &Plan, action: &Action) -> Result<(String, bool), StepFailure> {
        let now = self.clock.now();
        let subject = action.subject();
        match action {
            Action::Create { key } => self.create(key, &subject, now).await,
            Action::Adopt {
                key,
                id,
                keeps_value,
                grace_seconds,
                ..
            } => {
                let w = self
                    .adopt(key, id, *keeps_value, *grace_seconds, now)
                    .await?;
                let what = format!(
                    "adopted key {subject} (id {id}) and wrote Secret {}",
                    key.secret
                );
                Ok((what, w))
            }
            Action::Update { key, id, .. } => {
                self.provider.update_key(id, &key.spec).await?;
                Ok((format!("updated key {subject} (id {id})"), false))
            }
            Action::Rotate {
                key,
                id,
                grace_seconds,
                reason,
                expiring,
            } => {
                let how = Regeneration {
                    grace: SignedDuration::from_secs(*grace_seconds),
                    expires_at: expiry(now, key)?,
                    expiring: *expiring,
                };
                let w = self.rotate(key, id, how).await?;
                Ok((
                    format!(
                        "rotated key {subject} (id {id}: {reason}) and wrote Secret {}",
                        key.secret
                    ),
                    w,
                ))
            }
            Action::Replace { key, old_id, .. } => self.replace(key, old_id, &subject, now).await,
            Action::WriteSecret { key, id, .. } => {
                let live = plan
                    .live
                    .get(id)
                    .ok_or_else(|| StepFailure::Vanished(id.clone()))?;
                let value = self
                    .sink
                    .current_value(&key.secret)
                    .await?
                    .ok_or(StepFailure::ValueLost)?;
                let m = SecretMaterial::new(key, live, value, &self.endpoint);
                let w = self.write_with_retry(&m).await?;
                Ok((format!("rewrote Secret {}", key.secret), w))
            }
            Action::Revoke { id, reason, .. } => {
                self.provider.revoke_key(id).await?;
                Ok((format!("revoked key {subject} (id {id}): {reason}"), false))
            }
            Action::SetCors { owner, to, .. } => {
                self.provider.set_cors(owner, to).await?;
                let to = crate::plan::flow_list(to);
                Ok((format!("set {subject} to {to}"), false))
            }
            Action::SetPublic { owner, api, to, .. } => {
                self.provider.set_public(owner, api, to).await?;
                let to = crate::plan::flow_list(to.iter().map(|o| o.as_str()));
                Ok((format!("set {subject} to {to}"), false))
            }
        }
    }

    async fn create(
        &self,
        key: &DesiredKey,
        subject: &str,
        now: Timestamp,
    ) -> Result<(String, bool), StepFailure> {
        let mut spec = key.spec.clone();
        spec.expires_at = expiry(now, key)?;
        let issued = self.provider.create_key(&spec).await?;
        let id = issued.key.id.clone();
        let m = SecretMaterial::new(key, &issued.key, issued.value, &self.endpoint);
        let made = format!("created key {id}");
        let w = self
            .write_new_key(&m, made, "the next run creates it again", "")
            .await?;
        Ok((
            format!(
                "created key {subject} (id {id}) and wrote Secret {}",
                key.secret
            ),
            w,
        ))
    }

    /// Takes over key `id` made outside keyward: the value the policy names is checked before
    /// anything changes; then the key's settings (and keyward's ownership tags) become the
    /// policy's; then the checked value, or a new one given with `how`, goes to the Secret.
    async fn adopt(
        &self,
        key: &DesiredKey,
        id: &str,
        keeps_value: bool,
        grace_seconds: i64,
        now: Timestamp,
    ) -> Result<bool, StepFailure> {
        let how = Regeneration {
            grace: SignedDuration::from_secs(grace_seconds),
            expires_at: expiry(now, key)?,
            expiring: false,
        };
        let kept = match (
            keeps_value,
            key.adopt.as_ref().and_then(|a| a.value.clone()),
        ) {
            (false, _) => None,
            (true, None) => return Err(StepFailure::AdoptValueUnread),
            (true, Some(v)) => match self.provider.verify_value(id, &v).await? {
                true => Some(v),
                false => return Err(StepFailure::NotTheValue(id.to_owned())),
            },
        };
        let live = self.provider.update_key(id, &key.spec).await?;
        match kept {
            Some(value) => {
                let m = SecretMaterial::new(key, &live, value, &self.endpoint);
                self.write_with_retry(&m).await.map_err(StepFailure::from)
            }
            None => self.rotate(key, id, how).await,
        }
    }

    /// A new value for key `id`, written to its Secret.
    async fn rotate(
        &self,
        key: &DesiredKey,
        id: &str,
        how: Regeneration,
    ) -> Result<bool, StepFailure> {
        let issued = self.provider.regenerate_key(id, how).await?;
        let new_id = issued.key.id.clone();
        let m = SecretMaterial::new(key, &issued.key, issued.value, &self.endpoint);
        if new_id != id {
            // A CMS that renews by issuing a new key (Strapi): that key is new, and nobody
            // has its value.
            let made = format!("renewed key {id} as a new key {new_id}");
            return self
                .write_new_key(&m, made, "the next run renews it again", "")
                .await;
        }
        self.write_with_retry(&m)
            .await
            .map_err(|source| StepFailure::RegeneratedValueUnwritten {
                id: id.to_owned(),
                source,
                grace_seconds: how.grace.as_secs(),
            })
    }

    /// A new key in place of `old_id` (whose kind, type or owner cannot change): the old one
    /// is renamed out of the way, the new one made and written, and the old one given the
    /// overlap to live.
    async fn replace(
        &self,
        key: &DesiredKey,
        old_id: &str,
        subject: &str,
        now: Timestamp,
    ) -> Result<(String, bool), StepFailure> {
        // Frees the name for the new key; ids are unique, so is this name.
        let parked: String = format!("replaced.{old_id}.{}", key.spec.name)
            .chars()
            .take(100)
            .collect();
        let mut spec = key.spec.clone();
        spec.expires_at = expiry(now, key)?;
        let keep = crate::plan::replace_overlap(key);
        let old_until = crate::model::later(now, keep).ok_or(OutOfRange("rotationOverlap"))?;
        self.provider.rename_key(old_id, &parked).await?;
        let issued = self.provider.create_key(&spec).await?;
        let m = SecretMaterial::new(key, &issued.key, issued.value, &self.endpoint);
        let made = format!("created replacement key {}", issued.key.id);
        let still = format!(", and the old key {old_id} still works");
        let w = self
            .write_new_key(&m, made, "the next run replaces it again", &still)
            .await?;
        self.provider.set_expiry(old_id, old_until).await?;
        Ok((
            format!(
                "replaced key {subject} (old id {old_id} expires in {}s, new id {})",
                keep.as_secs(),
                issued.key.id
            ),
            w,
        ))
    }
}

/// When a new or rotated key expires: now plus its lifetime (`None`: never).
fn expiry(now: Timestamp, key: &DesiredKey) -> Result<Option<Timestamp>, OutOfRange> {
    key.lifetime
        .map(|l| crate::model::later(now, l).ok_or(OutOfRange("expiresAfter")))
        .transpose()
}

/// A duration that would end past the last instant a time can hold (the field named).
#[derive(Debug)]
struct OutOfRange(&'static str);

impl From<OutOfRange> for StepFailure {
    fn from(e: OutOfRange) -> StepFailure {
        StepFailure::TimeOutOfRange(e.0)
    }
}

/// When the next rotation of a live key is due, for status and requeues. The expiry is a CMS's
/// answer: one so early that `renewBefore` reaches past the first instant is due at once.
pub fn rotation_due(key: &DesiredKey, live: &LiveKey) -> Option<Timestamp> {
    live.expires_at()
        .map(|e| crate::model::earlier(e, key.renew_before).unwrap_or(Timestamp::MIN))
}

#[cfg(test)]
pub(crate) mod tests;
