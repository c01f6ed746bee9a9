//! What a CLI run is asked to do: plan or apply, the manifests, where the Secrets go, the
//! CLI's own connection, and the rest of the flags.

use super::cluster::ClusterTarget;
use super::saved;
use crate::engine::Clock;
use crate::policy::ProviderKind;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

#[derive(Clone)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    /// Where the Secrets go: files in `secrets_dir`, or a cluster.
    pub secrets_to: SecretsTo,
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
    /// Apply even though the secrets directory is missing or empty and keys would be
    /// regenerated because of it (`--regenerate-missing`).
    pub regenerate_missing: bool,
    /// How long to wait for another keyward holding the secrets or data directory.
    pub lock_timeout: std::time::Duration,
    /// Told (done, total) as apply's changes finish (a terminal's progress line).
    pub progress: Option<crate::engine::Progress>,
    /// `apply PLAN`: apply only if the plan made now is this saved one.
    pub expect: Option<saved::SavedPlan>,
    /// `keyward rotate`: the keys that get a new value now.
    pub rotate: Option<crate::plan::RotateNow>,
    /// `--audit-log`: apply's writes, one JSON line each (see `gitops::audit`).
    pub audit_log: Option<std::sync::Arc<crate::cms::audit::AuditLog>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential (a Strapi admin's password, or an admin token).
        f.debug_struct("Options")
            .field("paths", &self.paths)
            .field("secrets_to", &self.secrets_to)
            .field("secrets_dir", &self.secrets_dir)
            .field("data_dir", &self.data_dir)
            .field("mode", &self.mode)
            .field("env_url", &self.env_url)
            .field("env_token", &self.env_token.as_ref().map(|_| "<redacted>"))
            .field("env_provider", &self.env_provider)
            .field("prune", &self.prune)
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("clock", &self.clock)
            .field("regenerate_missing", &self.regenerate_missing)
            .field("lock_timeout", &self.lock_timeout)
            .field("progress", &self.progress.is_some())
            .field("expect", &self.expect.is_some())
            .field("rotate", &self.rotate)
            .finish()
    }
}

/// Where the CLI writes Secrets.
#[derive(Clone, Debug, Default)]
pub enum SecretsTo {
    /// Files in `Options::secrets_dir`.
    #[default]
    Dir,
    /// Secrets in a cluster.
    Kubernetes(ClusterTarget),
}
