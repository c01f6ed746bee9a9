//! How a CLI run fails, and what the secrets directory held before it (a missing one would
//! make every existing key's value look lost).

use super::cluster;
use super::outcome::Outcome;
use crate::engine::ApplyError;
use crate::providers::ProviderError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error("the manifests are invalid:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// `apply PLAN`: what changed since the saved plan was made; nothing was applied.
    #[error("the saved plan is out of date, nothing was applied (make it again): {}", .0.join("; "))]
    PlanMoved(Vec<String>),
    #[error("{connection}: {message}")]
    Connection { connection: String, message: String },
    #[error("{connection}: {source}")]
    Provider {
        connection: String,
        source: ProviderError,
    },
    #[error("{0}")]
    Sink(#[from] crate::engine::SinkError),
    #[error("{0}")]
    Locked(#[from] crate::dirlock::LockError),
    #[error("{0}")]
    Cluster(#[from] cluster::ClusterError),
    #[error("{}", missing_message(.dir, .state, *.lost, true))]
    SecretsMissing {
        dir: PathBuf,
        state: SecretsDirState,
        lost: usize,
        partial: Box<Outcome>,
    },
    #[error("cannot delete the Secret {secret}: {cause}")]
    StaleFile {
        /// The file, or namespace/name in a cluster.
        secret: String,
        cause: String,
        partial: Box<Outcome>,
    },
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

/// What the secrets directory held before a run. On a fresh clone it is missing, and every
/// existing key's value would look lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretsDirState {
    Present,
    Missing,
    Empty,
    Unreadable(String),
    /// `--secrets-to kubernetes`: the cluster (so named) holds none of the run's Secrets.
    NoneInCluster(String),
}

impl SecretsDirState {
    pub(super) fn inspect(dir: &std::path::Path) -> SecretsDirState {
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                let manifest = |e: std::io::Result<std::fs::DirEntry>| {
                    e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
                };
                if entries.any(manifest) {
                    SecretsDirState::Present
                } else {
                    SecretsDirState::Empty
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SecretsDirState::Missing,
            Err(e) => SecretsDirState::Unreadable(e.to_string()),
        }
    }

    fn describe(&self, dir: &std::path::Path) -> String {
        let dir = dir.display();
        match self {
            Self::Present => format!("the secrets directory {dir} is there"),
            Self::Missing => format!("the secrets directory {dir} does not exist"),
            Self::Empty => format!("the secrets directory {dir} holds no Secret files"),
            Self::Unreadable(e) => format!("the secrets directory {dir} cannot be read ({e})"),
            Self::NoneInCluster(cluster) => {
                format!("{cluster} holds none of these policies' Secrets")
            }
        }
    }
}

pub(super) fn missing_message(
    dir: &std::path::Path,
    state: &SecretsDirState,
    lost: usize,
    apply: bool,
) -> String {
    let keys = if lost == 1 { "key" } else { "keys" };
    let what = format!(
        "{}: {lost} {keys} that the CMS already holds would get a new value, because their Secrets cannot be found",
        state.describe(dir)
    );
    let point = match state {
        SecretsDirState::NoneInCluster(_) => "Point --context at the cluster that holds them",
        _ => "Point --secrets-dir at the directory that holds them",
    };
    if apply {
        format!("{what}. Nothing was changed. {point}, or pass --regenerate-missing to regenerate them (the old values keep working for each key's rotationOverlap)")
    } else {
        format!("warning: {what}; apply refuses this without --regenerate-missing")
    }
}
