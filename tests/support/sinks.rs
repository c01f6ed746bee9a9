//! The CLI's Secret sink with injected write failures, counting every write attempt, for the
//! "a generated value reaches its Secret, or the new key is revoked" paths.

use async_trait::async_trait;
use keyward::engine::{SecretSink, SinkError};
use keyward::gitops::secrets_dir::SecretsDir;
use keyward::model::desired::SecretTarget;
use keyward::model::secret::{ObservedSecret, SecretMaterial};
use keyward::model::KeyValue;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct FailingSink {
    pub inner: SecretsDir,
    failures_left: AtomicUsize,
    attempts: AtomicUsize,
}

impl FailingSink {
    /// A directory sink whose writes succeed until `fail_next` is called.
    pub fn new(dir: impl Into<PathBuf>) -> FailingSink {
        FailingSink {
            inner: SecretsDir::new(dir),
            failures_left: AtomicUsize::new(0),
            attempts: AtomicUsize::new(0),
        }
    }

    /// The next `n` writes fail (`usize::MAX`: every write).
    pub fn fail_next(&self, n: usize) {
        self.failures_left.store(n, Ordering::SeqCst);
    }

    /// Write attempts so far, failed or not.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretSink for FailingSink {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        self.inner.observe(target).await
    }

    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        self.inner.current_value(target).await
    }

    async fn write(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 0).then(|| if n == usize::MAX { n } else { n - 1 })
            })
            .is_ok();
        if failing {
            return Err(SinkError {
                namespace: m.target.namespace.clone(),
                name: m.target.name.clone(),
                detail: "injected write failure".into(),
                conflict: false,
            });
        }
        self.inner.write(m).await
    }
}
