//! The CLI's Secret sink: one Kubernetes Secret manifest per key in a directory
//! (`<namespace>.<name>.yaml`, mode 0600, `data` base64), ready for `kubectl apply` or a
//! sealed-secrets step. Files are replaced atomically and only when their content changes.

use crate::engine::{SecretSink, SinkError};
use crate::model::desired::SecretTarget;
use crate::model::secret::{
    manifest, observed, value_in, ObservedSecret, SecretMaterial, ANN_KEY_ID, ANN_RETAIN,
    LABEL_MANAGED_BY, LABEL_SECRET_POLICY, MANAGED_BY,
};
use crate::model::KeyValue;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use std::collections::BTreeSet;
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
            conflict: false,
        }
    }

    /// The Secret file of `target`, read on the blocking pool.
    async fn read(&self, target: &SecretTarget) -> Result<Option<Secret>, SinkError> {
        let (path, t) = (self.path_of(target), target.clone());
        tokio::task::spawn_blocking(move || read_file(&path, &t))
            .await
            .map_err(|e| Self::err(target, e))?
    }
}

fn read_file(path: &Path, target: &SecretTarget) -> Result<Option<Secret>, SinkError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Not taken as missing: that would regenerate a value that may be in use, and the
        // new one could not be written there either.
        Err(e) => {
            return Err(SecretsDir::err(
                target,
                format!(
                    "cannot read {}: {e}; fix or remove the file",
                    path.display()
                ),
            ))
        }
    };
    // Nor is a file that does not parse: someone edited it, and regenerating would end a value
    // that may be in use. The YAML error is not shown: its excerpt could hold a value.
    serde_yaml_ng::from_str::<Secret>(&text)
        .map(Some)
        .map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {})", l.line()))
                .unwrap_or_default();
            SecretsDir::err(
                target,
                format!(
                    "{} is not a Secret manifest{at}; fix or remove the file",
                    path.display()
                ),
            )
        })
}

/// Writes `path` through `path.yaml.tmp` and a rename. The temporary file is created new
/// (`O_EXCL`: never through a symlink planted there), mode 0600, and removed if the write fails;
/// the directory is created 0700.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::dirlock::create_private_dir(dir)?;
    let tmp = path.with_extension("yaml.tmp");
    let mut f = match create_new_private(&tmp) {
        // Left by a crash (or planted): removing a symlink removes the link, not its target.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create_new_private(&tmp)?
        }
        other => other?,
    };
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `O_CREAT | O_EXCL`: fails on anything already at `path`, a symlink included (POSIX: an
/// exclusive create never follows one), so a planted link cannot redirect the write.
fn create_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// A Secret keyward wrote for a key, found by the key's id: a file in the secrets directory,
/// or a Secret in a cluster (`--secrets-to kubernetes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySecretFile {
    /// The file (secrets directory).
    pub path: Option<PathBuf>,
    /// The Secret's uid and resourceVersion (cluster): it is deleted only if it is still that
    /// Secret, unchanged.
    pub uid: Option<String>,
    pub version: Option<String>,
    pub namespace: String,
    pub name: String,
    pub key_id: String,
    /// Why it goes: its key is revoked by this plan, or was before (it is not in the CMS).
    pub why: &'static str,
}

/// A file's key is revoked by the plan that lists it.
pub const REVOKED_NOW: &str = "is revoked";
/// A file's key is gone from the CMS already (an earlier apply revoked it and then stopped).
pub const ALREADY_GONE: &str = "no longer exists in the CMS";

impl SecretsDir {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files keyward wrote (its managed-by label) that go: those of the keys `revoked`
    /// (by this plan), and those of `policies` (namespace, name) whose key is not among `live`
    /// and that no desired key writes (`targets`): left by an apply that revoked their key and
    /// then stopped. Files that are not keyward's, or do not parse, are left alone.
    pub async fn stale_files(
        &self,
        revoked: BTreeSet<String>,
        gone: GoneKeys,
    ) -> std::io::Result<Vec<KeySecretFile>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || stale_files(&dir, &revoked, &gone))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Deletes a file that `stale_files` found.
    pub async fn remove(&self, file: &KeySecretFile) -> std::io::Result<()> {
        let Some(path) = file.path.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// What tells a file whose key is gone: the policies of the run, the keys the CMS holds, the
/// Secrets the run writes.
#[derive(Debug, Default)]
pub struct GoneKeys {
    pub policies: BTreeSet<(String, String)>,
    pub live: BTreeSet<String>,
    pub targets: BTreeSet<(String, String)>,
}

/// Whether a Secret keyward wrote (its managed-by label) for a policy of the run goes, and why:
/// its key is revoked by this plan, or its key is gone from the CMS while no desired key writes
/// it. With the id of its key. Only a policy of the run counts: key ids are the CMS's (small
/// integers on Strapi), so another connection's key may have the same id.
pub fn goes(
    s: &Secret,
    revoked: &BTreeSet<String>,
    gone: &GoneKeys,
) -> Option<(String, &'static str)> {
    let m = &s.metadata;
    let label = |l: &str| m.labels.as_ref().and_then(|ls| ls.get(l));
    if label(LABEL_MANAGED_BY).is_none_or(|v| v != MANAGED_BY) {
        return None;
    }
    // `secret.deletionPolicy: Retain`: left in place whatever becomes of its key.
    if m.annotations
        .as_ref()?
        .get(ANN_RETAIN)
        .is_some_and(|v| v == "true")
    {
        return None;
    }
    let id = m.annotations.as_ref()?.get(ANN_KEY_ID)?;
    let (ns, name) = (m.namespace.as_ref()?, m.name.as_ref()?);
    let policy = label(LABEL_SECRET_POLICY);
    let of_run = policy.is_some_and(|p| gone.policies.contains(&(ns.clone(), p.clone())));
    if !of_run {
        None
    } else if revoked.contains(id) {
        Some((id.clone(), REVOKED_NOW))
    } else if !gone.live.contains(id) && !gone.targets.contains(&(ns.clone(), name.clone())) {
        Some((id.clone(), ALREADY_GONE))
    } else {
        None
    }
}

fn stale_files(
    dir: &Path,
    revoked: &BTreeSet<String>,
    gone: &GoneKeys,
) -> std::io::Result<Vec<KeySecretFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_file() || path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let Some(s) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_yaml_ng::from_str::<Secret>(&t).ok())
        else {
            continue;
        };
        if let Some((key_id, why)) = goes(&s, revoked, gone) {
            let m = s.metadata;
            found.push(KeySecretFile {
                path: Some(path),
                uid: None,
                version: None,
                namespace: m.namespace.unwrap_or_default(),
                name: m.name.unwrap_or_default(),
                key_id,
                why,
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

#[async_trait]
impl SecretSink for SecretsDir {
    async fn observe(&self, target: &SecretTarget) -> Result<Option<ObservedSecret>, SinkError> {
        Ok(self
            .read(target)
            .await?
            .map(|s| observed(&s, &target.key_field)))
    }

    /// Every file, in one trip to the blocking pool per core (a plan reads them all, and
    /// parsing them is most of a no-change run's work).
    async fn observe_all(
        &self,
        targets: &[SecretTarget],
    ) -> Result<Vec<Option<ObservedSecret>>, SinkError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_task = targets.len().div_ceil(cores).max(64);
        let tasks: Vec<_> = targets
            .chunks(per_task)
            .map(|chunk| {
                let files: Vec<(PathBuf, SecretTarget)> =
                    chunk.iter().map(|t| (self.path_of(t), t.clone())).collect();
                tokio::task::spawn_blocking(move || {
                    files
                        .iter()
                        .map(
                            |(path, t)| Ok(read_file(path, t)?.map(|s| observed(&s, &t.key_field))),
                        )
                        .collect::<Result<Vec<_>, SinkError>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(targets.len());
        for (task, chunk) in tasks.into_iter().zip(targets.chunks(per_task)) {
            all.extend(task.await.map_err(|e| Self::err(&chunk[0], e))??);
        }
        Ok(all)
    }

    async fn current_value(&self, target: &SecretTarget) -> Result<Option<KeyValue>, SinkError> {
        Ok(self
            .read(target)
            .await?
            .and_then(|s| value_in(&s, &target.key_field)))
    }

    async fn write(&self, m: &SecretMaterial) -> Result<bool, SinkError> {
        let text = serde_yaml_ng::to_string(&manifest(m)).map_err(|e| Self::err(&m.target, e))?;
        let path = self.path_of(&m.target);
        // File I/O (and its fsync) on the blocking pool, not on the async workers.
        let written = tokio::task::spawn_blocking(move || {
            if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
                return Ok(false);
            }
            write_atomically(&path, text.as_bytes())
                .map(|()| true)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
        .await
        .map_err(|e| Self::err(&m.target, e))?
        .map_err(|e| Self::err(&m.target, e))?;
        if written {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::VALUE;
    use crate::model::secret::{observed_from, string_data};
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn material() -> SecretMaterial {
        crate::engine::tests::material("")
    }

    #[test]
    fn the_manifest_is_a_named_opaque_secret_with_data_bytes() {
        let m = material();
        let s = manifest(&m);
        assert_eq!(s.metadata.name.as_deref(), Some("s"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.metadata.labels.as_ref(), Some(&m.labels));
        assert_eq!(s.metadata.annotations.as_ref(), Some(&m.annotations));
        assert_eq!(
            s.data,
            Some(BTreeMap::from([(
                "apiKey".to_owned(),
                ByteString(VALUE.as_bytes().to_vec())
            )]))
        );
        assert_eq!(string_data(&s), m.data);
        assert!(s.string_data.is_none(), "data only, base64 in YAML");
    }

    #[tokio::test]
    async fn a_secret_is_written_once_per_content_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SecretsDir::new(dir.path().join("out"));
        let m = material();
        let path = sink.path_of(&m.target);
        assert_eq!(path, dir.path().join("out").join("ns.s.yaml"));
        assert_eq!(sink.writes(), 0);
        assert!(sink.observe(&m.target).await.unwrap().is_none());
        assert!(sink.current_value(&m.target).await.unwrap().is_none());

        assert!(sink.write(&m).await.unwrap(), "written");
        assert_eq!(sink.writes(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Secret = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, manifest(&m));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(!sink.write(&m).await.unwrap(), "same content: not written");
        assert_eq!(sink.writes(), 1);
        let mut other = m.clone();
        other.labels.insert("app".into(), "web".into());
        assert!(sink.write(&other).await.unwrap());
        assert_eq!(sink.writes(), 2);

        assert_eq!(
            sink.observe(&m.target).await.unwrap(),
            Some(observed_from(&other.annotations, &other.data, "apiKey"))
        );
        assert_eq!(
            sink.current_value(&m.target)
                .await
                .unwrap()
                .unwrap()
                .expose(),
            VALUE
        );
    }

    #[tokio::test]
    async fn missing_unreadable_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = SecretsDir::new(dir.path());
        let m = material();
        let path = sink.path_of(&m.target);
        // Not a Secret manifest: an error naming the file (and the line), never "missing",
        // and without the file's text (it could hold a value).
        std::fs::write(&path, "apiKey: kw_secret\nnot: [a secret").unwrap();
        let e = sink.observe(&m.target).await.unwrap_err();
        assert_eq!(
            e.detail,
            format!(
                "{} is not a Secret manifest (line 3); fix or remove the file",
                path.display()
            )
        );
        assert!(sink.current_value(&m.target).await.is_err());
        // A Secret whose key field is empty holds no value.
        let mut empty = manifest(&m);
        empty.data = Some(BTreeMap::from([("apiKey".to_owned(), ByteString(vec![]))]));
        std::fs::write(&path, serde_yaml_ng::to_string(&empty).unwrap()).unwrap();
        assert!(sink.current_value(&m.target).await.unwrap().is_none());
        let observed = sink.observe(&m.target).await.unwrap().unwrap();
        assert!(!observed.has_value);
        // Cannot be read at all: an error that names the file, not "missing".
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = sink.observe(&m.target).await.unwrap_err();
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("ns", "s"));
        assert!(
            e.detail
                .starts_with(&format!("cannot read {}: ", path.display()))
                && e.detail.ends_with("; fix or remove the file"),
            "{e}"
        );
        assert!(sink.current_value(&m.target).await.is_err());
        // And cannot be written.
        let e = sink.write(&m).await.unwrap_err();
        assert!(
            e.detail
                .starts_with(&format!("cannot write {}: ", path.display())),
            "{e}"
        );
        assert_eq!(sink.writes(), 0);
    }

    #[tokio::test]
    async fn writes_never_follow_a_planted_link_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "untouched").unwrap();
        let secrets = dir.path().join("secrets");
        let sink = SecretsDir::new(&secrets);
        let m = material();
        std::fs::create_dir(&secrets).unwrap();
        let path = sink.path_of(&m.target);
        let tmp = path.with_extension("yaml.tmp");
        std::os::unix::fs::symlink(&outside, &tmp).unwrap();
        assert!(sink.write(&m).await.unwrap());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
        assert!(!tmp.exists() && tmp.symlink_metadata().is_err(), "tmp left");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("kind: Secret"), "{text}");
        // A directory keyward creates is private.
        let fresh = SecretsDir::new(dir.path().join("fresh/nested"));
        fresh.write(&m).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("fresh/nested"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // Only keyward's files for the keys asked are found, of the run's policies: a key of
        // another connection may have the same id (Strapi's are small integers).
        let id = m.annotations[super::ANN_KEY_ID].clone();
        let of_run = || GoneKeys {
            policies: BTreeSet::from([("ns".to_owned(), "p".to_owned())]),
            live: BTreeSet::from([id.clone()]),
            targets: BTreeSet::new(),
        };
        let elsewhere = fresh
            .stale_files(BTreeSet::from([id.clone()]), GoneKeys::default())
            .await
            .unwrap();
        assert!(elsewhere.is_empty(), "{elsewhere:?}");
        let found = fresh
            .stale_files(BTreeSet::from([id.clone()]), of_run())
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (
                found[0].namespace.as_str(),
                found[0].name.as_str(),
                found[0].why
            ),
            ("ns", "s", REVOKED_NOW)
        );
        let other = fresh
            .stale_files(BTreeSet::from(["nope".into()]), of_run())
            .await
            .unwrap();
        assert!(other.is_empty());
        // A file of a policy of the run whose key the CMS no longer holds goes too, unless a
        // desired key writes that Secret (it is about to get a new value).
        let mut gone = GoneKeys {
            policies: BTreeSet::from([("ns".to_owned(), "p".to_owned())]),
            live: BTreeSet::new(),
            targets: BTreeSet::new(),
        };
        let found = fresh.stale_files(BTreeSet::new(), gone).await.unwrap();
        assert_eq!(
            found.iter().map(|f| f.why).collect::<Vec<_>>(),
            [ALREADY_GONE]
        );
        gone = GoneKeys {
            policies: BTreeSet::from([("ns".to_owned(), "p".to_owned())]),
            live: BTreeSet::from([id.clone()]),
            targets: BTreeSet::new(),
        };
        assert!(fresh
            .stale_files(BTreeSet::new(), gone)
            .await
            .unwrap()
            .is_empty());
        gone = GoneKeys {
            policies: BTreeSet::from([("ns".to_owned(), "p".to_owned())]),
            live: BTreeSet::new(),
            targets: BTreeSet::from([("ns".to_owned(), "s".to_owned())]),
        };
        assert!(fresh
            .stale_files(BTreeSet::new(), gone)
            .await
            .unwrap()
            .is_empty());
        fresh.remove(&found[0]).await.unwrap();
        assert!(!found[0].path.as_ref().is_some_and(|p| p.exists()));
    }

    #[test]
    fn fields_that_are_not_text_are_skipped() {
        let mut s = manifest(&material());
        s.data
            .as_mut()
            .unwrap()
            .insert("binary".into(), ByteString(vec![0xff, 0xfe]));
        assert_eq!(
            string_data(&s).keys().collect::<Vec<_>>(),
            ["apiKey"],
            "{s:?}"
        );
    }
}
