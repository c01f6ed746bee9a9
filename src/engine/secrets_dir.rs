//! The CLI's Secret sink: one Kubernetes Secret manifest per key in a directory
//! (`<namespace>.<name>.yaml`, mode 0600, `data` base64), ready for `kubectl apply` or a
//! sealed-secrets step. Files are replaced atomically and only when their content changes.

use super::{observed_from, SecretMaterial, SecretSink, SinkError};
use crate::model::KeyValue;
use crate::plan::desired::SecretTarget;
use crate::plan::ObservedSecret;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct SecretsDir {
    dir: PathBuf,
    writes: AtomicU64,
}

impl SecretsDir {
    pub fn new(dir: impl Into<PathBuf>) -> SecretsDir {
        SecretsDir {
            dir: dir.into(),
            writes: AtomicU64::new(0),
        }
    }

    pub fn path_of(&self, target: &SecretTarget) -> PathBuf {
        // Namespaces cannot contain dots, so `<namespace>.<name>` is unambiguous.
        self.dir
            .join(format!("{}.{}.yaml", target.namespace, target.name))
    }

    /// Files written by this sink so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn err(target: &SecretTarget, detail: impl std::fmt::Display) -> SinkError {
        SinkError {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            detail: detail.to_string(),
        }
    }

    fn read(&self, target: &SecretTarget) -> Result<Option<Secret>, SinkError> {
        let path = self.path_of(target);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // Not taken as missing: that would regenerate a value that may be in use, and the
            // new one could not be written there either.
            Err(e) => {
                return Err(Self::err(
                    target,
                    format!(
                        "cannot read {}: {e}; fix or remove the file",
                        path.display()
                    ),
                ))
            }
        };
        // A file that is not a Secret we can read is treated as missing: its value is unusable.
        Ok(serde_yaml_ng::from_str::<Secret>(&text).ok())
    }
}

/// A Secret's data as strings (non-UTF-8 fields are skipped: keyward writes none).
pub fn string_data(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
        .collect()
}

fn value_in(secret: &Secret, target: &SecretTarget) -> Option<KeyValue> {
    let bytes = secret.data.as_ref()?.get(&target.key_field)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|v| !v.is_empty())
        .map(KeyValue::new)
}

/// The manifest for `m`.
pub fn manifest(m: &SecretMaterial) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(m.target.name.clone()),
            namespace: Some(m.target.namespace.clone()),
            labels: Some(m.labels.clone()),
            annotations: Some(m.annotations.clone()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            m.data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("yaml.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[async_trait]
impl SecretSink for SecretsDir {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        Ok(self.read(target)?.map(|s| {
            let ann = s.metadata.annotations.clone().unwrap_or_default();
            observed_from(&ann, &string_data(&s), &target.key_field)
        }))
    }

    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        Ok(self.read(target)?.and_then(|s| value_in(&s, target)))
    }

    async fn write(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        let text = serde_yaml_ng::to_string(&manifest(m)).map_err(|e| Self::err(&m.target, e))?;
        let path = self.path_of(&m.target);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(false);
        }
        write_atomically(&path, text.as_bytes())
            .map_err(|e| Self::err(&m.target, format!("cannot write {}: {e}", path.display())))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}
