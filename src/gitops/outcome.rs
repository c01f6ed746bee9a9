//! What a CLI run found and did, per connection: for people (`text`) and for tools (`json`).

use crate::engine::ApplyReport;
use crate::gitops::secrets_dir::KeySecretFile;
use crate::model::desired::ConnectionId;
use crate::plan::{render_text, Plan};
use serde_json::json;
use std::path::PathBuf;

/// One connection's plan, and what applying it did.
pub struct ConnectionRun {
    pub connection: ConnectionId,
    pub title: String,
    pub endpoint: String,
    pub plan: Plan,
    pub applied: Option<ApplyReport>,
    pub cms_reads: u64,
    pub cms_writes: u64,
    pub secret_writes: u64,
    /// Secret files of the keys this plan revokes: deleted once the key is revoked.
    pub stale_files: Vec<KeySecretFile>,
    /// Existing keys that get a new value because their Secret is missing.
    pub lost: usize,
    /// The Secrets of desired keys that were found.
    pub secrets_seen: usize,
    /// A digest of what the plan was made from (see `saved::live_digest`).
    pub live_digest: String,
}

#[derive(Default)]
pub struct Outcome {
    pub runs: Vec<ConnectionRun>,
    pub warnings: Vec<String>,
    /// The manifest files read, with their digests.
    pub manifests: Vec<(PathBuf, String)>,
}

impl Outcome {
    /// Anything left to do, ObserveOnly changes included (they are shown, never applied).
    pub fn has_changes(&self) -> bool {
        self.runs
            .iter()
            .any(|r| !r.plan.actions.is_empty() || !r.stale_files.is_empty())
    }

    /// Changes that `apply` leaves for a person: those of ObserveOnly policies.
    pub fn observe_only_changes(&self) -> usize {
        let all = self.runs.iter().flat_map(|r| &r.plan.actions);
        all.filter(|a| a.observe_only()).count()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for r in &self.runs {
            out.push_str(&render_text(&r.title, &r.plan));
            for f in &r.stale_files {
                let place = match &f.path {
                    Some(p) => p.display().to_string(),
                    None => "in the cluster".to_owned(),
                };
                out.push_str(&format!(
                    "  - secret   {}/{} ({place}): its key {} {}\n",
                    f.namespace, f.name, f.key_id, f.why
                ));
            }
            if let Some(rep) = &r.applied {
                for d in &rep.done {
                    out.push_str(&format!("  applied: {d}\n"));
                }
                out.push_str(&format!(
                    "  CMS calls: {} reads, {} writes; Secrets written: {}\n",
                    r.cms_reads, r.cms_writes, r.secret_writes
                ));
            }
        }
        out
    }

    /// The outcome for tools (`-o json`, `-o yaml`); its shape is `FORMAT_VERSION`.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "formatVersion": FORMAT_VERSION,
            "changes": self.has_changes(),
            "warnings": self.warnings,
            "connections": self.runs.iter().map(|r| json!({
                "connection": r.connection,
                "endpoint": r.endpoint,
                "actions": r.plan.actions,
                "problems": r.plan.problems,
                "secretFilesToDelete": r.stale_files.iter().map(|f| json!({
                    "namespace": f.namespace, "name": f.name, "path": f.path, "keyId": f.key_id,
                })).collect::<Vec<_>>(),
                "applied": r.applied.as_ref().map(|a| a.done.clone()),
                "cmsCalls": {"reads": r.cms_reads, "writes": r.cms_writes},
                "secretFilesWritten": r.secret_writes,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The version of the machine-readable outcome: it changes only when a field is removed or
/// changes meaning (new fields may appear within a version).
pub const FORMAT_VERSION: u32 = 1;

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("connections", &self.runs.len())
            .finish()
    }
}
