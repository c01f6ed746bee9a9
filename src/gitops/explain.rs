//! `keyward explain`: the effective rights of keys as their policies declare them, each with
//! where it comes from; with `--live`, what the CMS holds for them and every difference (read
//! only: nothing is written, no value is read).

use super::{connect, stop_embedded, GitopsError, Options};
use crate::model::desired::{DesiredKey, DesiredState, PolicyId, LABEL_KEY, LABEL_POLICY};
use crate::model::effective::{
    differences, public_ops, Difference, Effective, Grant, EVERY_OTHER_API,
};
use crate::model::live::OwnedSettings;
use crate::model::ContentPermission;
use crate::plan::KeyTarget;
use crate::policy::load;
use crate::policy::validate;
use crate::providers::{CmsProvider, LiveKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One key explained.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `namespace/policy/key`.
    pub key: String,
    pub connection: String,
    /// The Secret its value goes to, `namespace/name`.
    pub secret: String,
    pub declared: Effective,
    /// With `--live`: what the CMS holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<Held>,
}

/// What the CMS holds for a key.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The CMS's id of the key; `None`: the CMS has no key for it (apply creates one).
    pub id: Option<String>,
    pub held: Option<Effective>,
    /// Declared (as this CMS holds it) against held; empty: in sync.
    pub differences: Vec<Difference>,
}

/// Explains the keys `targets` name, reading the CMS when `live`. A target that names no key
/// is an error before any connection is made.
pub async fn explain(
    opts: &Options,
    targets: &[KeyTarget],
    live: bool,
) -> Result<Vec<Explanation>, GitopsError> {
    let paths = opts.paths.clone();
    let (set, load_errors) = tokio::task::spawn_blocking(move || load::load_all(&paths))
        .await
        .map_err(|e| GitopsError::Invalid(vec![format!("reading the manifests stopped: {e}")]))?;
    let resolved = validate::resolve(&set, opts.clock.now(), None, opts.env_provider);
    let resolved = super::every_problem(load_errors, resolved).map_err(GitopsError::Invalid)?;
    let unknown: Vec<String> = targets
        .iter()
        .filter(|t| {
            !resolved
                .desired
                .values()
                .any(|s| s.keys.iter().any(|k| t.names(k)))
        })
        .map(|t| format!("{t}: no such key in the manifests"))
        .collect();
    if !unknown.is_empty() {
        return Err(GitopsError::Invalid(unknown));
    }
    let mut out = Vec::new();
    for (id, state) in &resolved.desired {
        let keys: Vec<&DesiredKey> = state
            .keys
            .iter()
            .filter(|k| targets.iter().any(|t| t.names(k)))
            .collect();
        if keys.is_empty() {
            continue;
        }
        let declared = keys.iter().map(|k| declared(state, k, &id.to_string()));
        if !live {
            out.extend(declared);
            continue;
        }
        let conn = connect(id, state, &set, resolved.connections.get(id), opts).await?;
        if !conn.provider.has_key_api() {
            let title = conn.title.clone();
            stop_embedded(vec![conn]).await;
            return Err(GitopsError::Invalid(vec![format!(
                "{id}: --live: {title}: this CMS has no key API, so what its keys hold cannot be read (keyward plan checks the value in use)"
            )]));
        }
        let held = read_held(conn.provider.as_ref(), state, &keys).await;
        stop_embedded(vec![conn]).await;
        let held = held.map_err(|source| GitopsError::Provider {
            connection: id.to_string(),
            source,
        })?;
        out.extend(declared.zip(held).map(|(mut e, h)| {
            e.live = Some(h);
            e
        }));
    }
    Ok(out)
}

/// A key as its policy declares it.
fn declared(state: &DesiredState, k: &DesiredKey, connection: &str) -> Explanation {
    Explanation {
        key: format!("{}/{}", k.policy, k.key),
        connection: connection.to_owned(),
        secret: k.secret.to_string(),
        declared: Effective::of(&k.spec, &policy_settings(state, k)),
        live: None,
    }
}

/// The CORS origins and public endpoints the key's policy declares.
fn policy_settings(state: &DesiredState, k: &DesiredKey) -> OwnedSettings {
    state
        .settings
        .get(&k.policy.settings_owner())
        .map(|s| s.want.clone())
        .unwrap_or_default()
}

/// What the CMS holds for each of `keys`: one labelled listing and one settings read per
/// policy, however many of its keys are asked about.
async fn read_held(
    provider: &dyn CmsProvider,
    state: &DesiredState,
    keys: &[&DesiredKey],
) -> crate::providers::Result<Vec<Held>> {
    let apis: BTreeSet<String> = state.public_apis();
    let mut read: BTreeMap<&PolicyId, (Vec<LiveKey>, OwnedSettings)> = BTreeMap::new();
    let mut out = Vec::new();
    for k in keys {
        if !read.contains_key(&k.policy) {
            let owner = k.policy.settings_owner();
            let settings = provider.settings(&apis, Some(&owner)).await?;
            let held = settings.owners.get(&owner).cloned().unwrap_or_default();
            let live = provider
                .list_keys_labeled(LABEL_POLICY, &k.policy.label_value())
                .await?;
            read.insert(&k.policy, (live, held));
        }
        let Some((live, held_settings)) = read.get(&k.policy) else {
            continue;
        };
        let want = provider.express(&k.spec).await?;
        let want = Effective::of(&want, &policy_settings(state, k));
        out.push(match newest_of(live, k) {
            Some(found) => {
                let held = Effective::of(&found.spec, held_settings);
                Held {
                    id: Some(found.id.clone()),
                    differences: differences(&want, &held),
                    held: Some(held),
                }
            }
            None => Held {
                id: None,
                held: None,
                differences: Vec::new(),
            },
        });
    }
    Ok(out)
}

/// The key's current CMS key: owned by its policy, labelled with its name; the newest when a
/// replacement's predecessor is still in its overlap.
fn newest_of<'a>(live: &'a [LiveKey], k: &DesiredKey) -> Option<&'a LiveKey> {
    live.iter()
        .filter(|l| k.policy.owns(&l.spec.labels))
        .filter(|l| l.spec.labels.get(LABEL_KEY) == Some(&k.key))
        .max_by_key(|l| l.created_at)
}

/// The table's column of each operation.
const COLUMNS: [(ContentPermission, &str); 7] = [
    (ContentPermission::Get, "GET"),
    (ContentPermission::GetAllDrafts, "DRAFTS"),
    (ContentPermission::GetAllClosed, "CLOSED"),
    (ContentPermission::Post, "POST"),
    (ContentPermission::Put, "PUT"),
    (ContentPermission::Patch, "PATCH"),
    (ContentPermission::Delete, "DELETE"),
];

impl Explanation {
    /// For people: the rights table, then what else applies, then (live) the differences.
    pub fn text(&self) -> String {
        let d = &self.declared;
        let mut out = format!(
            "key {} ({} key, type {}) on {}\n  secret: {}\n",
            self.key, d.kind, d.key_type, self.connection, self.secret
        );
        out.push_str(&describe(d));
        match &self.live {
            None => {}
            Some(Held { id: None, .. }) => {
                out.push_str("\nlive: the CMS holds no key for it (apply creates one)\n")
            }
            Some(Held {
                id: Some(id),
                differences,
                ..
            }) if differences.is_empty() => {
                out.push_str(&format!("\nlive: key {id} holds what is declared\n"))
            }
            Some(Held {
                id: Some(id),
                differences,
                ..
            }) => {
                out.push_str(&format!(
                    "\nlive: key {id} differs (apply brings it to what is declared):\n"
                ));
                let wide = differences.iter().map(|d| d.what.len()).max().unwrap_or(0);
                for x in differences {
                    out.push_str(&format!(
                        "  {:wide$}  declared: {}  held: {}\n",
                        x.what,
                        none_if_empty(&x.declared),
                        none_if_empty(&x.held)
                    ));
                }
            }
        }
        out
    }
}

fn none_if_empty(s: &str) -> &str {
    match s {
        "" => "(none)",
        s => s,
    }
}

/// The rights table and the rest of what a key's rights depend on.
fn describe(e: &Effective) -> String {
    let mut out = format!(
        "  environments: {}\n",
        match e.environments.is_empty() {
            true => "every environment".to_owned(),
            false => e.environments.join(", "),
        }
    );
    if let Some(owner) = &e.owner {
        out.push_str(&format!(
            "  a personal key: it holds the role of member '{owner}', as the CMS has it at each request\n"
        ));
    }
    out.push('\n');
    out.push_str(&table(e));
    out.push_str(
        "  (default: defaultPermissions; api: the API's apiPermissions, which replace the defaults there;\n   scope, mgmt: a scope or management permission, on every API; DRAFTS, CLOSED: GET_ALL_DRAFTS, GET_ALL_CLOSED)\n",
    );
    let mut grants: Vec<String> = e
        .rights
        .iter()
        .flat_map(|r| r.operations.values().flatten())
        .filter(|g| matches!(g, Grant::Scope(_) | Grant::Management(_)))
        .map(|g| g.to_string())
        .collect();
    grants.sort();
    grants.dedup();
    let lines = [
        ("granted through", grants),
        ("other scopes", e.service_scopes.clone()),
        ("management", e.management.clone()),
        ("CORS origins of its policy", e.cors_origins.clone()),
        (
            "public endpoints of its policy (no key needed)",
            e.public
                .iter()
                .map(|(api, ops)| format!("{api}: {}", public_ops(ops)))
                .collect(),
        ),
    ];
    for (what, items) in lines.into_iter().filter(|(_, items)| !items.is_empty()) {
        out.push_str(&format!("  {what}: {}\n", items.join("; ")));
    }
    out
}

/// API x operation, each cell what grants it (`-`: refused).
fn table(e: &Effective) -> String {
    let mut rows = vec![std::iter::once("API".to_owned())
        .chain(COLUMNS.iter().map(|(_, c)| (*c).to_owned()))
        .collect::<Vec<_>>()];
    for r in &e.rights {
        let name = match r.api.as_str() {
            EVERY_OTHER_API => "(every other API)".to_owned(),
            api => api.to_owned(),
        };
        let cells = COLUMNS.iter().map(|(p, _)| {
            let words: Vec<&str> = r
                .operations
                .get(p)
                .into_iter()
                .flatten()
                .map(|g| g.short())
                .collect();
            match words.is_empty() {
                true => "-".to_owned(),
                false => words.join("+"),
            }
        });
        rows.push(std::iter::once(name).chain(cells).collect());
    }
    let widths: Vec<usize> = (0..=COLUMNS.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
    out
}
