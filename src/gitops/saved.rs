//! Saved plans, as Terraform has them: `keyward plan --out FILE` records the plan and what it
//! was made from (each manifest file's digest, each connection's live state as a digest);
//! `keyward apply FILE` makes the plan again and applies it only if nothing moved in between,
//! else refuses, saying what moved. The file holds no key value: actions name keys, Secrets
//! and settings, never a value, and the live state is only a digest.

use super::outcome::{ConnectionRun, Outcome};
use crate::model::live::{LiveKey, LiveSettings};
use crate::model::secret::ObservedSecrets;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The shape of a saved plan file.
pub const SAVED_PLAN_FORMAT: u32 = 1;

/// The most a saved plan file may hold.
pub const MAX_SAVED_PLAN: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedPlan {
    pub format_version: u32,
    /// The keyward that made it: the live digests are its own, so another version refuses.
    pub keyward_version: String,
    /// The `-f` paths, as given.
    pub paths: Vec<PathBuf>,
    /// Whether it was planned with `--prune`.
    pub prune: bool,
    /// Each manifest file read, with the SHA-256 of its text.
    pub manifests: Vec<(PathBuf, String)>,
    pub connections: Vec<SavedConnection>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedConnection {
    pub connection: String,
    pub endpoint: String,
    /// SHA-256 of what was read of the CMS and the Secrets for the plan.
    pub live: String,
    /// The plan's actions, as `-o json` shows them.
    pub actions: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SavedPlanError {
    #[error("{path}: not a saved plan of keyward's: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path} was made by keyward {made_by} (format {format}); this is keyward {this}: make the plan again")]
    OtherVersion {
        path: String,
        made_by: String,
        format: u32,
        this: String,
    },
}

impl SavedPlan {
    /// The saved form of a plan run's outcome.
    pub fn of(outcome: &Outcome, paths: &[PathBuf], prune: bool) -> SavedPlan {
        SavedPlan {
            format_version: SAVED_PLAN_FORMAT,
            keyward_version: env!("CARGO_PKG_VERSION").to_owned(),
            paths: paths.to_vec(),
            prune,
            manifests: outcome.manifests.clone(),
            connections: outcome.runs.iter().map(SavedConnection::of).collect(),
        }
    }

    /// Reads a saved plan from `text` (the file `path`), made by this keyward.
    pub fn parse(path: &str, text: &str) -> Result<SavedPlan, SavedPlanError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| SavedPlanError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let made_by = value["keywardVersion"].as_str().unwrap_or("?").to_owned();
        let format = value["formatVersion"].as_u64().unwrap_or(0);
        let this = env!("CARGO_PKG_VERSION");
        if format != u64::from(SAVED_PLAN_FORMAT) || made_by != this {
            return Err(SavedPlanError::OtherVersion {
                path: path.to_owned(),
                made_by,
                format: u32::try_from(format).unwrap_or(0),
                this: this.to_owned(),
            });
        }
        serde_json::from_value(value).map_err(|e| SavedPlanError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// What moved between this plan and `now` (the same run made again): each manifest file
    /// changed, added or gone, each connection whose live state or plan is not the same.
    /// Empty: `now` is this plan, and may be applied.
    pub fn moved(&self, now: &SavedPlan) -> Vec<String> {
        let mut moved = Vec::new();
        let files = |p: &SavedPlan| -> std::collections::BTreeMap<PathBuf, String> {
            p.manifests.iter().cloned().collect()
        };
        let (then, later) = (files(self), files(now));
        for (file, digest) in &then {
            match later.get(file) {
                None => moved.push(format!("{} is no longer read", file.display())),
                Some(d) if d != digest => moved.push(format!("{} changed", file.display())),
                Some(_) => {}
            }
        }
        for file in later.keys().filter(|f| !then.contains_key(*f)) {
            moved.push(format!("{} is new", file.display()));
        }
        for c in &self.connections {
            match now
                .connections
                .iter()
                .find(|n| n.connection == c.connection)
            {
                None => moved.push(format!("{} is no longer used", c.connection)),
                Some(n) if n.live != c.live => moved.push(format!(
                    "the keys, settings or Secret files of {} changed",
                    c.connection
                )),
                // Same inputs, another plan: time moved (a key came due for rotation).
                Some(n) if n.actions != c.actions => {
                    moved.push(format!("the plan for {} is not the same now", c.connection))
                }
                Some(_) => {}
            }
        }
        for n in &now.connections {
            if !self
                .connections
                .iter()
                .any(|c| c.connection == n.connection)
            {
                moved.push(format!("{} is used now", n.connection));
            }
        }
        moved
    }
}

impl SavedConnection {
    fn of(run: &ConnectionRun) -> SavedConnection {
        SavedConnection {
            connection: run.connection.to_string(),
            endpoint: run.endpoint.clone(),
            live: run.live_digest.clone(),
            actions: serde_json::to_value(&run.plan.actions).unwrap_or_default(),
        }
    }
}

/// A digest of what a plan was made from on one connection: the CMS's keys (by id), its
/// settings and the Secrets observed. Debug forms, hashed: stable within one keyward version,
/// which is why a saved plan names the version that made it. None of them holds a key value.
pub fn live_digest(live: &[LiveKey], settings: &LiveSettings, secrets: &ObservedSecrets) -> String {
    let mut keys: Vec<&LiveKey> = live.iter().collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    crate::model::sha256_hex(format!("{keys:?}\n{settings:?}\n{secrets:?}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(files: &[(&str, &str)], conns: &[(&str, &str, serde_json::Value)]) -> SavedPlan {
        SavedPlan {
            format_version: SAVED_PLAN_FORMAT,
            keyward_version: env!("CARGO_PKG_VERSION").into(),
            paths: vec!["p".into()],
            prune: false,
            manifests: files
                .iter()
                .map(|(f, d)| (PathBuf::from(f), (*d).to_owned()))
                .collect(),
            connections: conns
                .iter()
                .map(|(c, live, actions)| SavedConnection {
                    connection: (*c).into(),
                    endpoint: "http://cms".into(),
                    live: (*live).into(),
                    actions: actions.clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn what_moved_is_named_and_nothing_moved_is_empty() {
        let a = serde_json::json!([{"action": "create"}]);
        let plan = saved(
            &[("a.yaml", "1"), ("b.yaml", "2")],
            &[("default", "L", a.clone())],
        );
        assert!(plan.moved(&plan.clone()).is_empty());
        let now = saved(
            &[("a.yaml", "9"), ("c.yaml", "3")],
            &[("default", "L2", a.clone())],
        );
        assert_eq!(
            plan.moved(&now),
            [
                "a.yaml changed",
                "b.yaml is no longer read",
                "c.yaml is new",
                "the keys, settings or Secret files of default changed"
            ]
        );
        let later = saved(
            &[("a.yaml", "1"), ("b.yaml", "2")],
            &[("default", "L", serde_json::json!([])), ("other", "X", a)],
        );
        assert_eq!(
            plan.moved(&later),
            [
                "the plan for default is not the same now",
                "other is used now"
            ]
        );
        assert_eq!(
            later.moved(&plan),
            [
                "the plan for default is not the same now",
                "other is no longer used"
            ]
        );
    }

    #[test]
    fn a_plan_of_another_keyward_or_not_a_plan_is_refused() {
        let plan = saved(&[("a.yaml", "1")], &[]);
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(SavedPlan::parse("p.json", &text).unwrap(), plan);
        let older = text.replace(env!("CARGO_PKG_VERSION"), "0.0.1");
        assert!(matches!(
            SavedPlan::parse("p.json", &older),
            Err(SavedPlanError::OtherVersion { .. })
        ));
        assert!(matches!(
            SavedPlan::parse("p.json", "{\"formatVersion\": 1"),
            Err(SavedPlanError::Unreadable { .. })
        ));
    }
}
