//! What each policy declared of a CMS's shared settings (CORS origins, public endpoints) when it
//! was last applied from the files: `DIR/.keyward-settings.json` beside the Secret files. The CMS
//! cannot say which policy asked for an origin, so `--prune` reads this record to take away what
//! only the policies deleted from git declared, and nothing else. Without a record (a fresh
//! clone), nothing is taken away.

use crate::model::desired::DesiredState;
use crate::model::live::LiveSettings;
use crate::model::ContentOp;
use crate::policy::load::ManifestSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const FILE: &str = ".keyward-settings.json";

/// One policy's declarations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub cors: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub public: BTreeMap<String, BTreeSet<ContentOp>>,
}

/// By CMS endpoint, then by policy (`namespace/name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsRecord {
    pub endpoints: BTreeMap<String, BTreeMap<String, Declared>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", .path.display())]
pub struct RecordError {
    pub path: PathBuf,
    pub cause: String,
}

impl SettingsRecord {
    /// The record in `dir`; none yet is an empty record, one that does not parse an error.
    pub fn read(dir: &Path) -> Result<SettingsRecord, RecordError> {
        let path = dir.join(FILE);
        let fail = |cause: String| RecordError {
            path: path.clone(),
            cause,
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| fail(format!("not a settings record ({e}); fix or remove it"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(fail(format!("cannot read: {e}"))),
        }
    }

    /// Writes the record (atomically, mode 0600) when it differs from what `dir` holds.
    pub fn write(&self, dir: &Path) -> Result<(), RecordError> {
        let path = dir.join(FILE);
        let fail = |e: std::io::Error| RecordError {
            path: path.clone(),
            cause: format!("cannot write: {e}"),
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| RecordError {
            path: path.clone(),
            cause: e.to_string(),
        })?;
        if std::fs::read(&path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        crate::engine::secrets_dir::write_atomically(&path, &text).map_err(fail)
    }
}

/// Every policy's declarations in the manifests, by `namespace/name`.
pub fn declared(set: &ManifestSet) -> BTreeMap<String, Declared> {
    let mut out = BTreeMap::new();
    for p in &set.policies {
        let meta = &p.object.metadata;
        let id = format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        );
        let spec = &p.object.spec;
        let mut d = Declared::default();
        if let Some(c) = &spec.cors {
            d.cors.extend(c.origins.iter().cloned());
        }
        for pe in &spec.public_endpoints {
            let ops = d.public.entry(pe.api.clone()).or_default();
            ops.extend(pe.operations.iter().copied());
        }
        out.insert(id, d);
    }
    out
}

/// What the policies `state` marks gone had declared, per the record for `endpoint`.
pub fn declared_by_gone(record: &SettingsRecord, endpoint: &str, state: &DesiredState) -> Declared {
    let mut out = Declared::default();
    let Some(by_policy) = record.endpoints.get(endpoint) else {
        return out;
    };
    for (id, _) in state.policies.iter().filter(|(_, s)| s.gone) {
        if let Some(d) = by_policy.get(&id.to_string()) {
            out.cors.extend(d.cors.iter().cloned());
            for (api, ops) in &d.public {
                out.public
                    .entry(api.clone())
                    .or_default()
                    .extend(ops.iter().copied());
            }
        }
    }
    out
}

/// Widens `state` so that the plan takes away what only `gone` declared: origins and public
/// operations that a remaining policy also declares stay, and so does anything keyward never
/// declared (where no remaining policy manages the setting at all).
pub fn take_away(state: &mut DesiredState, live: &LiveSettings, gone: &Declared) {
    if state.cors.is_none() && !gone.cors.is_empty() {
        state.cors = Some(live.cors.difference(&gone.cors).cloned().collect());
    }
    for (api, ops) in &gone.public {
        if state.public.contains_key(api) {
            continue; // a remaining policy manages this API's public operations
        }
        if let Some(have) = live.public.get(api) {
            state
                .public
                .insert(api.clone(), have.difference(ops).copied().collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::{PolicyId, PolicySettings};

    #[test]
    fn only_what_gone_policies_alone_declared_is_taken_away() {
        let gone = PolicyId {
            namespace: "shop".into(),
            name: "old".into(),
            uid: None,
        };
        let mut state = DesiredState::default();
        state.policies.insert(
            gone.clone(),
            PolicySettings {
                gone: true,
                ..Default::default()
            },
        );
        let declared_old = Declared {
            cors: BTreeSet::from(["https://old.example".to_owned()]),
            public: BTreeMap::from([("feedback".to_owned(), BTreeSet::from([ContentOp::Create]))]),
        };
        let record = SettingsRecord {
            endpoints: BTreeMap::from([(
                "http://cms".to_owned(),
                BTreeMap::from([("shop/old".to_owned(), declared_old.clone())]),
            )]),
        };
        assert_eq!(
            declared_by_gone(&record, "http://other", &state),
            Declared::default()
        );
        let by_gone = declared_by_gone(&record, "http://cms", &state);
        assert_eq!(by_gone, declared_old);
        let live = LiveSettings {
            cors: BTreeSet::from(["https://old.example".into(), "https://hand.example".into()]),
            public: BTreeMap::from([
                (
                    "feedback".to_owned(),
                    BTreeSet::from([ContentOp::Create, ContentOp::List]),
                ),
                ("blog".to_owned(), BTreeSet::from([ContentOp::List])),
            ]),
        };
        take_away(&mut state, &live, &by_gone);
        assert_eq!(
            state.cors,
            Some(BTreeSet::from(["https://hand.example".to_owned()]))
        );
        assert_eq!(
            state.public,
            BTreeMap::from([("feedback".to_owned(), BTreeSet::from([ContentOp::List]))])
        );
    }
}
