//! desired + live + observed Secrets -> ordered actions. Pure: no I/O, no clock but `now`.

use crate::model::desired::{
    Adoption, DesiredKey, DesiredState, PolicyId, LABEL_KEY, LABEL_POLICY, LABEL_POLICY_UID,
};
use crate::model::live::{LiveKey, LiveSettings, OwnedSettings};
use crate::model::secret::{secret_spec_hash, ObservedSecret, ObservedSecrets};
use crate::model::{ContentOp, KeySpec};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// A new key; its value goes to the Secret.
    Create { key: DesiredKey },
    /// A key made by hand (`adopt`), taken over: its rights, name and ownership become the
    /// policy's, then it gets a new value (the old one works for `grace_seconds`) or, with
    /// `keeps_value`, its current value is checked and written to the Secret.
    #[serde(rename_all = "camelCase")]
    Adopt {
        key: DesiredKey,
        id: String,
        diff: String,
        keeps_value: bool,
        grace_seconds: i64,
    },
    /// Settings changed in the policy or behind keyward's back (drift).
    #[serde(rename_all = "camelCase")]
    Update {
        key: DesiredKey,
        id: String,
        diff: String,
    },
    /// A new value with the old one kept for `grace_seconds`, written to the Secret.
    #[serde(rename_all = "camelCase")]
    Rotate {
        key: DesiredKey,
        id: String,
        reason: String,
        grace_seconds: i64,
        /// Renewal of a value that still works (it expires soon), as opposed to a lost one.
        expiring: bool,
    },
    /// Kind, type or owner changed: a new key, written; the old one expires after the overlap.
    #[serde(rename_all = "camelCase")]
    Replace {
        key: DesiredKey,
        old_id: String,
        diff: String,
    },
    /// The Secret's fields, labels or annotations changed; the value stays.
    #[serde(rename_all = "camelCase")]
    WriteSecret {
        key: DesiredKey,
        id: String,
        reason: String,
    },
    #[serde(rename_all = "camelCase")]
    Revoke {
        id: String,
        name: String,
        policy: String,
        reason: String,
        observe_only: bool,
    },
    /// One policy's CORS origins (its entry as a settings owner).
    #[serde(rename_all = "camelCase")]
    SetCors {
        policy: String,
        owner: String,
        from: BTreeSet<String>,
        to: BTreeSet<String>,
        observe_only: bool,
    },
    /// One policy's public operations of one API.
    #[serde(rename_all = "camelCase")]
    SetPublic {
        policy: String,
        owner: String,
        api: String,
        from: BTreeSet<ContentOp>,
        to: BTreeSet<ContentOp>,
        observe_only: bool,
    },
}

impl Action {
    /// What the action is about, as people read it everywhere: a key is `namespace/policy/key`
    /// (a revoked one too, read back from its CMS name `namespace.policy.key`).
    pub fn subject(&self) -> String {
        match self {
            Self::Create { key }
            | Self::Adopt { key, .. }
            | Self::Update { key, .. }
            | Self::Rotate { key, .. }
            | Self::Replace { key, .. }
            | Self::WriteSecret { key, .. } => format!("{}/{}", key.policy, key.key),
            Self::Revoke { name, policy, .. } => {
                let prefix = format!("{}.", policy.replacen('/', ".", 1));
                match name.strip_prefix(&prefix) {
                    Some(key) if !key.is_empty() => format!("{policy}/{key}"),
                    _ => name.clone(),
                }
            }
            Self::SetCors { policy, .. } => format!("CORS origins of {policy}"),
            Self::SetPublic { policy, api, .. } => {
                format!("public endpoints of '{api}' for {policy}")
            }
        }
    }

    /// Actions of ObserveOnly policies are shown, never applied.
    pub fn observe_only(&self) -> bool {
        match self {
            Self::Create { key }
            | Self::Adopt { key, .. }
            | Self::Update { key, .. }
            | Self::Rotate { key, .. }
            | Self::Replace { key, .. }
            | Self::WriteSecret { key, .. } => key.observe_only,
            Self::Revoke { observe_only, .. }
            | Self::SetCors { observe_only, .. }
            | Self::SetPublic { observe_only, .. } => *observe_only,
        }
    }

    pub(super) fn order(&self) -> u8 {
        match self {
            Self::Create { .. } | Self::Adopt { .. } => 0,
            Self::Replace { .. } => 1,
            Self::Update { .. } => 2,
            Self::Rotate { .. } => 3,
            Self::WriteSecret { .. } => 4,
            Self::SetCors { .. } => 5,
            Self::SetPublic { .. } => 6,
            Self::Revoke { .. } => 7,
        }
    }
}

/// The ordered plan for one connection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Conflicts that stop the affected keys (e.g. a name taken by a key keyward does not own).
    pub problems: Vec<String>,
    /// Live keys by id, for the engine.
    #[serde(skip)]
    pub live: BTreeMap<String, LiveKey>,
}

impl Plan {
    /// Actions that `apply` would carry out.
    pub fn pending(&self) -> impl Iterator<Item = &Action> {
        self.actions.iter().filter(|a| !a.observe_only())
    }

    pub fn has_changes(&self) -> bool {
        self.pending().next().is_some()
    }
}

/// Everything of a key's settings that a diff compares (the expiry is rotation's business).
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Comparable<'a> {
    /// A key renamed by hand, or left renamed by an interrupted replace or renewal, is renamed
    /// back.
    name: &'a str,
    description: &'a str,
    kind: &'a str,
    #[serde(rename = "type")]
    key_type: &'a str,
    default_permissions: &'a [crate::model::ContentPermission],
    api_permissions: &'a [crate::model::ApiPermission],
    scopes: &'a [crate::model::Scope],
    environments: &'a [String],
    management_permissions: &'a [crate::model::ManagementPermission],
    owner: &'a Option<String>,
    labels: &'a BTreeMap<String, String>,
}

fn comparable(s: &KeySpec) -> Comparable<'_> {
    Comparable {
        name: &s.name,
        description: &s.description,
        kind: s.kind.as_str(),
        key_type: s.key_type.as_str(),
        default_permissions: &s.default_permissions,
        api_permissions: &s.api_permissions,
        scopes: &s.scopes,
        environments: &s.environments,
        management_permissions: &s.management_permissions,
        owner: &s.owner,
        labels: &s.labels,
    }
}

/// A unified diff of two keys' settings.
pub fn spec_diff(live: &KeySpec, desired: &KeySpec) -> String {
    let a = serde_yaml_ng::to_string(&comparable(live)).unwrap_or_default();
    let b = serde_yaml_ng::to_string(&comparable(desired)).unwrap_or_default();
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(2)
        .header("live", "desired")
        .to_string()
}

/// How long a replaced key keeps working after its replacement was written: the overlap, at
/// least a CMS's minimum lifetime, and a little more.
pub fn replace_overlap(key: &DesiredKey) -> SignedDuration {
    key.rotation_overlap.max(SignedDuration::from_mins(1)) + SignedDuration::from_secs(5)
}

/// Whether two keys reach the same: kind, type, owner and every right.
fn same_rights(a: &KeySpec, b: &KeySpec) -> bool {
    a.kind == b.kind
        && a.key_type == b.key_type
        && a.owner == b.owner
        && a.default_permissions == b.default_permissions
        && a.api_permissions == b.api_permissions
        && a.scopes == b.scopes
        && a.environments == b.environments
        && a.management_permissions == b.management_permissions
}

/// The plan that makes the CMS and the Secrets match `desired`.
pub fn diff(
    desired: &DesiredState,
    live: &[LiveKey],
    settings: &LiveSettings,
    secrets: &ObservedSecrets,
    endpoint: &str,
    now: Timestamp,
) -> Plan {
    let mut plan = Plan {
        live: live.iter().map(|k| (k.id.clone(), k.clone())).collect(),
        ..Default::default()
    };
    let index = Index::new(desired, live);
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    for d in &desired.keys {
        let mine: Vec<&LiveKey> = index
            .by_owner
            .get(&(&d.policy, d.key.as_str()))
            .cloned()
            .unwrap_or_default();
        claimed.extend(mine.iter().map(|k| k.id.as_str()));
        if let Some(taken) = index
            .by_name
            .get(d.spec.name.as_str())
            .filter(|k| !d.policy.owns(&k.spec.labels))
            .filter(|k| !d.adopt.as_ref().is_some_and(|a| a.names(k)))
        {
            plan.problems.push(format!(
                "key '{}' of ApiKeyPolicy {}: the CMS already has a key named '{}' (id {}) that keyward does not own; rename or revoke it, keyward will not adopt it",
                d.key, d.policy, d.spec.name, taken.id
            ));
            continue;
        }
        let primary = mine
            .iter()
            .find(|k| k.spec.name == d.spec.name)
            .or(mine.first())
            .copied();
        plan.actions.extend(superseded(d, &mine, primary, now));
        let Some(p) = primary else {
            match &d.adopt {
                Some(a) => match adoptable(d, a, live) {
                    Ok(found) => {
                        claimed.insert(found.id.as_str());
                        plan.actions.push(adopt(d, a, found));
                    }
                    Err(problem) => plan.problems.push(problem),
                },
                None => plan.actions.push(Action::Create { key: d.clone() }),
            }
            continue;
        };
        plan.actions
            .extend(key_actions(d, p, secrets, endpoint, now));
    }
    plan.actions
        .extend(undeclared(desired, live, &index, &claimed));
    diff_settings(desired, settings, &mut plan);
    plan.actions.sort_by_key(Action::order);
    plan
}

/// The key `d` adopts: it exists, and keyward did not make it (a key of any policy, or one a
/// cluster's operator tags, is never taken over by naming it).
fn adoptable<'a>(d: &DesiredKey, a: &Adoption, live: &'a [LiveKey]) -> Result<&'a LiveKey, String> {
    let about = format!("key '{}' of ApiKeyPolicy {}: adopt", d.key, d.policy);
    let found: Vec<&LiveKey> = live.iter().filter(|k| a.names(k)).collect();
    let k = match found.as_slice() {
        [] => return Err(format!("{about}: the CMS has no key with {}", a.by)),
        [k] => *k,
        _ => {
            return Err(format!(
                "{about}: the CMS has {} keys with {}; name one by id",
                found.len(),
                a.by
            ))
        }
    };
    if k.spec.labels.contains_key(LABEL_POLICY) || k.spec.labels.contains_key(LABEL_POLICY_UID) {
        let owner = k.spec.labels.get(LABEL_POLICY).map_or("?", String::as_str);
        return Err(format!(
            "{about}: key {} is keyward's (policy {owner}); only a key keyward did not make can be adopted",
            k.id
        ));
    }
    let (have, want) = (&k.spec, &d.spec);
    if have.kind != want.kind || have.key_type != want.key_type || have.owner != want.owner {
        return Err(format!(
            "{about}: key {} is a {} key of type {}; the entry declares a {} key of type {} (kind, type and owner cannot change: declare the key's own)",
            k.id,
            have.kind.as_str(),
            have.key_type.as_str(),
            want.kind.as_str(),
            want.key_type.as_str()
        ));
    }
    Ok(k)
}

/// Taking over `k` for `d`: its settings become `d`'s (shown as a diff), then its value.
fn adopt(d: &DesiredKey, a: &Adoption, k: &LiveKey) -> Action {
    let mut live_spec = k.spec.clone();
    live_spec.expires_at = None;
    Action::Adopt {
        key: d.clone(),
        id: k.id.clone(),
        diff: spec_diff(&live_spec, &d.spec),
        keeps_value: a.keeps_value,
        grace_seconds: d.rotation_overlap.as_secs(),
    }
}

/// Indexes of the live keys, so a plan over thousands of keys stays linear.
struct Index<'a> {
    policies_by_label: BTreeMap<String, &'a PolicyId>,
    /// The keys each (policy, key name) owns.
    by_owner: BTreeMap<(&'a PolicyId, &'a str), Vec<&'a LiveKey>>,
    by_name: BTreeMap<&'a str, &'a LiveKey>,
}

impl<'a> Index<'a> {
    fn new(desired: &'a DesiredState, live: &'a [LiveKey]) -> Index<'a> {
        let mut index = Index {
            policies_by_label: desired
                .policies
                .keys()
                .flat_map(|p| [(p.label_value(), p), (p.to_string(), p)])
                .collect(),
            by_owner: BTreeMap::new(),
            by_name: BTreeMap::new(),
        };
        for k in live {
            index.by_name.insert(&k.spec.name, k);
            if let (Some(p), Some(key)) = (index.owner_of(k), k.spec.labels.get(LABEL_KEY)) {
                index.by_owner.entry((p, key.as_str())).or_default().push(k);
            }
        }
        index
    }

    /// The policy of the run that owns `k`.
    fn owner_of(&self, k: &LiveKey) -> Option<&'a PolicyId> {
        let p = self
            .policies_by_label
            .get(k.spec.labels.get(LABEL_POLICY)?)?;
        p.owns(&k.spec.labels).then_some(*p)
    }
}

/// Keys a replace or a renewal left: the old one works until the overlap it was given, then
/// goes. One with other rights than the key's whose expiry lies past that overlap (the replace
/// stopped after making the new key, before shortening the old one's lifetime: on Strapi and
/// Directus that step revokes) would otherwise keep its old rights for its whole lifetime: the
/// replace is finished now. One with the same rights (a renewal on a CMS that cannot shorten a
/// lifetime, such as Strapi) works until it expires, which renewBefore bounds.
fn superseded(
    d: &DesiredKey,
    mine: &[&LiveKey],
    primary: Option<&LiveKey>,
    now: Timestamp,
) -> Vec<Action> {
    let keep = replace_overlap(d);
    let mut out = Vec::new();
    for k in mine
        .iter()
        .filter(|k| Some(k.id.as_str()) != primary.map(|p| p.id.as_str()))
    {
        let ends_in_overlap = same_rights(&k.spec, &d.spec)
            || crate::model::later(now, keep)
                .is_none_or(|limit| k.expires_at().is_some_and(|e| e <= limit));
        let reason = match k.expires_at() {
            Some(e) if e <= now => "superseded by a replacement and expired",
            Some(_) if ends_in_overlap => continue,
            _ => "left by a replace that did not finish: its replacement is in place",
        };
        out.push(Action::Revoke {
            id: k.id.clone(),
            name: k.spec.name.clone(),
            policy: d.policy.to_string(),
            reason: reason.into(),
            observe_only: d.observe_only,
        });
    }
    out
}

/// What an existing key `p` needs to be `d`: a replace (kind, type or owner changed), else an
/// update of its settings and what its Secret needs.
fn key_actions(
    d: &DesiredKey,
    p: &LiveKey,
    secrets: &ObservedSecrets,
    endpoint: &str,
    now: Timestamp,
) -> Vec<Action> {
    let mut live_spec = p.spec.clone();
    live_spec.expires_at = None;
    if live_spec.kind != d.spec.kind
        || live_spec.key_type != d.spec.key_type
        || live_spec.owner != d.spec.owner
    {
        return vec![Action::Replace {
            key: d.clone(),
            old_id: p.id.clone(),
            diff: spec_diff(&live_spec, &d.spec),
        }];
    }
    let mut out = Vec::new();
    if comparable(&live_spec) != comparable(&d.spec) {
        out.push(Action::Update {
            key: d.clone(),
            id: p.id.clone(),
            diff: spec_diff(&live_spec, &d.spec),
        });
    }
    let observed = secrets.get(&(d.secret.namespace.clone(), d.secret.name.clone()));
    out.extend(secret_action(d, p, observed, endpoint, now));
    out
}

/// What the Secret of existing key `p` needs: a new value when it lacks the key's working
/// value or the key is due for renewal, a rewrite when its content or template changed.
fn secret_action(
    d: &DesiredKey,
    p: &LiveKey,
    observed: Option<&ObservedSecret>,
    endpoint: &str,
    now: Timestamp,
) -> Option<Action> {
    let rotate = |reason: String, expiring: bool| Action::Rotate {
        key: d.clone(),
        id: p.id.clone(),
        reason,
        grace_seconds: d.rotation_overlap.as_secs(),
        expiring,
    };
    let Some(s) = observed else {
        return Some(rotate(
            format!(
                "Secret {} is missing and a key value cannot be read back from the CMS",
                d.secret
            ),
            false,
        ));
    };
    if !s.has_value || s.key_id.as_deref() != Some(p.id.as_str()) {
        return Some(rotate(
            format!("Secret {} does not hold this key's value", d.secret),
            false,
        ));
    }
    if s.key_version.as_deref() != Some(p.version().as_str()) {
        return Some(rotate(
            "the key was regenerated outside keyward; the Secret's value no longer works".into(),
            false,
        ));
    }
    let expiring = p
        .expires_at()
        .is_some_and(|e| e.duration_since(now) <= d.renew_before);
    // A key made to live forever whose policy now sets a lifetime: no renewal would ever come,
    // so the new lifetime starts now.
    let unbounded = p.expires_at().is_none() && d.lifetime.is_some();
    if expiring || unbounded {
        let reason = match p.expires_at() {
            Some(at) => format!(
                "expires at {}, within renewBefore",
                crate::model::rfc3339(at)
            ),
            None => "the key never expires; the policy now sets expiresAfter".into(),
        };
        return Some(rotate(reason, true));
    }
    let spec_hash = secret_spec_hash(&d.secret, &p.id, &p.version(), endpoint);
    (!s.content_intact || s.spec_hash.as_deref() != Some(spec_hash.as_str())).then(|| {
        Action::WriteSecret {
            key: d.clone(),
            id: p.id.clone(),
            reason: "the Secret's data was edited, or its fields, labels or annotations changed"
                .into(),
        }
    })
}

/// Keys a managed policy owns but no longer declares (none of an orphaning policy).
fn undeclared(
    desired: &DesiredState,
    live: &[LiveKey],
    index: &Index<'_>,
    claimed: &BTreeSet<&str>,
) -> Vec<Action> {
    let mut out = Vec::new();
    for k in live {
        if claimed.contains(k.id.as_str()) {
            continue;
        }
        let Some(policy) = index.owner_of(k) else {
            continue;
        };
        let settings_of = desired.policies.get(policy).copied().unwrap_or_default();
        if settings_of.orphan {
            continue;
        }
        out.push(Action::Revoke {
            id: k.id.clone(),
            name: k.spec.name.clone(),
            policy: policy.to_string(),
            reason: if settings_of.gone {
                "its policy is no longer in the manifests (--prune)".into()
            } else {
                format!(
                    "key '{}' was removed from the policy",
                    k.spec
                        .labels
                        .get(LABEL_KEY)
                        .map(String::as_str)
                        .unwrap_or("?")
                )
            },
            observe_only: settings_of.observe_only,
        });
    }
    out
}

/// Each policy's entry in the shared settings against what the CMS holds for that owner.
fn diff_settings(desired: &DesiredState, live: &LiveSettings, plan: &mut Plan) {
    let none = OwnedSettings::default();
    for (owner, d) in &desired.settings {
        let have = live.owners.get(owner).unwrap_or(&none);
        if d.want.cors != have.cors {
            plan.actions.push(Action::SetCors {
                policy: d.policy.clone(),
                owner: owner.clone(),
                from: have.cors.clone(),
                to: d.want.cors.clone(),
                observe_only: d.observe_only,
            });
        }
        let apis: BTreeSet<&String> = d.want.public.keys().chain(have.public.keys()).collect();
        for api in apis {
            let want = d.want.public.get(api).cloned().unwrap_or_default();
            let had = have.public.get(api).cloned().unwrap_or_default();
            if !want.is_empty() && !live.apis.contains(api) {
                plan.problems.push(format!(
                    "the CMS has no API '{api}' (named in publicEndpoints of {})",
                    d.policy
                ));
            } else if want != had {
                plan.actions.push(Action::SetPublic {
                    policy: d.policy.clone(),
                    owner: owner.clone(),
                    api: api.clone(),
                    from: had,
                    to: want,
                    observe_only: d.observe_only,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::{PolicySettings, LABEL_POLICY_UID};
    use crate::plan::testkit::*;
    use jiff::SignedDuration;

    #[test]
    fn in_sync_means_no_actions() {
        let now = now();
        let d = desired("");
        let live = live_of(&d, now);
        let p = plan_for(&d, std::slice::from_ref(&live), &secrets_for(&live));
        assert!(kinds(&p).is_empty(), "{p:?}");
        assert!(!p.has_changes());
    }

    #[test]
    fn missing_key_is_created_and_drift_is_updated() {
        let now = now();
        let d = desired("");
        assert_eq!(
            kinds(&plan_for(&d, &[], &ObservedSecrets::new())),
            ["create"]
        );
        let mut live = live_of(&d, now);
        live.spec
            .default_permissions
            .push(crate::model::ContentPermission::Delete);
        let p = plan_for(&d, std::slice::from_ref(&live), &secrets_for(&live));
        assert_eq!(kinds(&p), ["update"]);
        let Action::Update { diff, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert!(
            diff.contains("--- live") && diff.contains("-- DELETE"),
            "{diff}"
        );
    }

    #[test]
    fn rotation_lost_and_stale_values() {
        let now = now();
        let d = desired("");
        let mut live = live_of(&d, now);
        live.spec.expires_at = Some(now + crate::model::days(6));
        let s = secrets_for(&live);
        assert_eq!(
            kinds_for(&d, &live, &s),
            ["rotate"],
            "within 7 days (default renewBefore)"
        );
        let live = live_of(&d, now);
        assert_eq!(
            kinds_for(&d, &live, &ObservedSecrets::new()),
            ["rotate"],
            "lost Secret"
        );
        let mut stale = secrets_for(&live);
        stale
            .values_mut()
            .for_each(|o| o.key_version = Some("older".into()));
        assert_eq!(kinds_for(&d, &live, &stale), ["rotate"], "stale value");
        let mut meta = secrets_for(&live);
        meta.values_mut()
            .for_each(|o| o.spec_hash = Some("x".into()));
        assert_eq!(kinds(&plan_for(&d, &[live], &meta)), ["secret"]);
    }

    #[test]
    fn removed_keys_are_revoked_foreign_keys_ignored_names_not_adopted() {
        let now = now();
        let d = desired("");
        let live = live_of(&d, now);
        let mut gone = live.clone();
        gone.id = "id2".into();
        gone.spec.name = "ns.p.old".into();
        gone.spec.labels.insert(LABEL_KEY.into(), "old".into());
        let mut foreign = live.clone();
        foreign.id = "id3".into();
        foreign.spec.name = "hand-made".into();
        foreign.spec.labels.clear();
        let s = secrets_for(&live);
        let p = plan_for(&d, &[live.clone(), gone.clone(), foreign.clone()], &s);
        assert_eq!(kinds(&p), ["revoke"]);
        let Action::Revoke { id, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(id, "id2");
        let mut orphaning = d.clone();
        orphaning.policies.values_mut().for_each(|v| {
            *v = PolicySettings {
                orphan: true,
                ..Default::default()
            }
        });
        assert!(kinds(&plan_for(&orphaning, &[live.clone(), gone], &s)).is_empty());
        let mut squatter = foreign;
        squatter.spec.name = "ns.p.k".into();
        let p = plan_for(&d, &[squatter], &ObservedSecrets::new());
        assert!(kinds(&p).is_empty());
        assert!(
            p.problems[0].contains("keyward does not own"),
            "{:?}",
            p.problems
        );
        // Another object with the same name (a different UID) does not own the key either.
        let mut other_uid = live;
        other_uid
            .spec
            .labels
            .insert(LABEL_POLICY_UID.into(), "other".into());
        let pid = d.policies.keys().next().unwrap().clone();
        assert!(
            PolicyId {
                uid: None,
                ..pid.clone()
            }
            .owns(&other_uid.spec.labels),
            "no UID of our own: the label decides"
        );
        let mine = with_uid(&d, "mine");
        let p = plan_for(&mine, std::slice::from_ref(&other_uid), &s);
        assert!(kinds(&p).is_empty(), "never revoked or changed: {p:?}");
        assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
        assert!(
            p.problems[0].contains("named 'ns.p.k' (id id1) that keyward does not own"),
            "{:?}",
            p.problems
        );
        // The same key tagged with our UID is ours and in sync.
        let mut ours = other_uid;
        ours.spec
            .labels
            .insert(LABEL_POLICY_UID.into(), "mine".into());
        let p = plan_for(&mine, &[ours], &s);
        assert!(kinds(&p).is_empty() && p.problems.is_empty(), "{p:?}");
    }

    /// `d` as the operator resolves it: the policy has a UID and its keys carry it.
    fn with_uid(d: &DesiredState, uid: &str) -> DesiredState {
        let mut out = d.clone();
        out.policies = d
            .policies
            .iter()
            .map(|(p, s)| {
                (
                    PolicyId {
                        uid: Some(uid.into()),
                        ..p.clone()
                    },
                    *s,
                )
            })
            .collect();
        for k in &mut out.keys {
            k.policy.uid = Some(uid.into());
            k.spec.labels.insert(LABEL_POLICY_UID.into(), uid.into());
        }
        out
    }

    #[test]
    fn secret_spec_hash_is_a_known_value_and_covers_every_input() {
        let d = desired("");
        let t = &d.keys[0].secret;
        let v = "2030-01-01T00:00:00.000000Z";
        let h = secret_spec_hash(t, "id1", v, ENDPOINT);
        assert_eq!(h, FIXTURE_SPEC_HASH);
        let changed = |f: fn(&mut crate::model::desired::SecretTarget)| {
            let mut t = t.clone();
            f(&mut t);
            secret_spec_hash(&t, "id1", v, ENDPOINT)
        };
        let others = [
            secret_spec_hash(t, "id2", v, ENDPOINT),
            secret_spec_hash(t, "id1", "2030-01-01T00:00:01.000000Z", ENDPOINT),
            secret_spec_hash(t, "id1", v, "http://other"),
            changed(|t| t.key_field = "KEY".into()),
            changed(|t| t.namespace = "other".into()),
            changed(|t| t.name = "other".into()),
            changed(|t| {
                t.extra_fields.insert("URL".into(), "{{ endpoint }}".into());
            }),
            changed(|t| {
                t.labels.insert("app".into(), "web".into());
            }),
            changed(|t| {
                t.annotations.insert("note".into(), "x".into());
            }),
        ];
        for o in &others {
            assert_ne!(o, &h);
            assert_eq!(o.len(), 24);
        }
    }

    #[test]
    fn settings_changes_and_order() {
        let now = now();
        let d = desired("  cors: {origins: ['https://a.example']}\n  publicEndpoints: [{api: contact, operations: [create]}]\n");
        let settings = LiveSettings {
            apis: BTreeSet::from(["contact".to_owned()]),
            ..Default::default()
        };
        let p = diff(&d, &[], &settings, &ObservedSecrets::new(), ENDPOINT, now);
        assert_eq!(kinds(&p), ["create", "cors", "public"]);
        let p = plan_for(&d, &[], &ObservedSecrets::new());
        assert!(
            p.problems[0].contains("no API 'contact'"),
            "{:?}",
            p.problems
        );
    }

    fn observed(f: impl FnMut(&mut ObservedSecret)) -> ObservedSecrets {
        let d = desired("");
        let mut s = secrets_for(&live_of(&d, now()));
        s.values_mut().for_each(f);
        s
    }

    #[test]
    fn each_secret_check_alone_decides() {
        let d = desired("");
        let live = live_of(&d, now());
        let rotate_reason = |s: &ObservedSecrets| {
            let p = plan_for(&d, std::slice::from_ref(&live), s);
            assert_eq!(kinds(&p), ["rotate"], "{p:?}");
            let Action::Rotate {
                reason,
                expiring,
                grace_seconds,
                id,
                ..
            } = &p.actions[0]
            else {
                unreachable!()
            };
            assert!(!expiring, "a lost value is not a renewal");
            assert_eq!(*grace_seconds, 900, "the default rotationOverlap (15m)");
            assert_eq!(id, "id1");
            reason.clone()
        };
        assert_eq!(
            rotate_reason(&ObservedSecrets::new()),
            "Secret ns/s is missing and a key value cannot be read back from the CMS"
        );
        let lost = "Secret ns/s does not hold this key's value";
        assert_eq!(rotate_reason(&observed(|o| o.has_value = false)), lost);
        assert_eq!(
            rotate_reason(&observed(|o| o.key_id = Some("id2".into()))),
            lost
        );
        assert_eq!(rotate_reason(&observed(|o| o.key_id = None)), lost);
        assert_eq!(
            rotate_reason(&observed(
                |o| o.key_version = Some("2029-12-31T00:00:00.000000Z".into())
            )),
            "the key was regenerated outside keyward; the Secret's value no longer works"
        );
        // The value is fine but the rest of the Secret is not: rewritten, same value.
        for s in [
            observed(|o| o.content_intact = false),
            observed(|o| o.spec_hash = Some("0".repeat(24))),
            observed(|o| o.spec_hash = None),
        ] {
            let p = plan_for(&d, std::slice::from_ref(&live), &s);
            assert_eq!(kinds(&p), ["secret"], "{p:?}");
            let Action::WriteSecret { id, reason, .. } = &p.actions[0] else {
                unreachable!()
            };
            assert_eq!(id, "id1");
            assert_eq!(
                reason,
                "the Secret's data was edited, or its fields, labels or annotations changed"
            );
        }
        // Another endpoint in the template context is another Secret content.
        let p = diff(
            &d,
            std::slice::from_ref(&live),
            &LiveSettings::default(),
            &secrets_for(&live),
            "http://elsewhere",
            now(),
        );
        assert_eq!(kinds(&p), ["secret"]);
    }

    #[test]
    fn renewal_starts_exactly_at_renew_before() {
        let d = desired_with("", "      renewBefore: 2d\n      rotationOverlap: 10m\n");
        let mut live = live_of(&d, now());
        live.spec.expires_at = Some(now() + crate::model::days(2) + SignedDuration::from_secs(1));
        assert!(kinds_for(&d, &live, &secrets_for(&live)).is_empty());
        live.spec.expires_at = Some(now() + crate::model::days(2));
        let p = plan_for(&d, std::slice::from_ref(&live), &secrets_for(&live));
        assert_eq!(kinds(&p), ["rotate"]);
        let Action::Rotate {
            reason,
            expiring,
            grace_seconds,
            ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert!(expiring);
        assert_eq!(*grace_seconds, 600);
        assert_eq!(
            reason,
            "expires at 2030-01-03T00:00:00+00:00, within renewBefore"
        );
        // Already expired: renewed too.
        live.spec.expires_at = Some(now() - SignedDuration::from_hours(1));
        assert_eq!(kinds_for(&d, &live, &secrets_for(&live)), ["rotate"]);
    }

    #[test]
    fn a_key_that_never_expires_is_renewed_only_when_the_policy_sets_a_lifetime() {
        let d = desired("");
        let mut live = live_of(&d, now());
        live.spec.expires_at = None;
        let p = plan_for(&d, std::slice::from_ref(&live), &secrets_for(&live));
        assert_eq!(kinds(&p), ["rotate"]);
        let Action::Rotate {
            reason, expiring, ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert_eq!(
            reason,
            "the key never expires; the policy now sets expiresAfter"
        );
        assert!(expiring);
        // A policy without a lifetime (a CMS where keys may live forever): nothing to do.
        let mut forever = d.clone();
        forever.keys[0].lifetime = None;
        assert!(kinds_for(&forever, &live, &secrets_for(&live)).is_empty());
        // A lifetime, and a live expiry far away: nothing to do either.
        let live = live_of(&d, now());
        assert!(kinds_for(&forever, &live, &secrets_for(&live)).is_empty());
    }

    #[test]
    fn kind_type_and_owner_changes_each_replace_the_key() {
        let d = desired("");
        let live = live_of(&d, now());
        let replaced = |f: fn(&mut KeySpec)| {
            let mut l = live.clone();
            f(&mut l.spec);
            let p = plan_for(&d, std::slice::from_ref(&l), &secrets_for(&l));
            assert_eq!(kinds(&p), ["replace"], "{p:?}");
            let Action::Replace { old_id, diff, key } = &p.actions[0] else {
                unreachable!()
            };
            assert_eq!(old_id, "id1");
            assert_eq!(key.key, "k");
            diff.clone()
        };
        let diff = replaced(|s| s.kind = crate::model::KeyKind::Management);
        assert!(diff.lines().any(|l| l == "-kind: management"), "{diff}");
        assert!(diff.lines().any(|l| l == "+kind: content"), "{diff}");
        let diff = replaced(|s| s.key_type = crate::model::KeyType::Public);
        assert!(diff.lines().any(|l| l == "-type: public"), "{diff}");
        let diff = replaced(|s| s.owner = Some("ann".into()));
        assert!(diff.lines().any(|l| l == "-owner: ann"), "{diff}");
        // Anything else is an update of the same key.
        let mut l = live.clone();
        l.spec.description = "edited".into();
        assert_eq!(kinds_for(&d, &l, &secrets_for(&l)), ["update"]);
        // The expiry alone is rotation's business, not a drift.
        let mut l = live.clone();
        l.spec.expires_at = Some(now() + crate::model::days(20));
        assert!(kinds_for(&d, &l, &secrets_for(&l)).is_empty());
    }

    #[test]
    fn spec_diff_is_a_unified_diff_of_the_compared_settings() {
        let d = desired("");
        let mut live = d.keys[0].spec.clone();
        live.default_permissions
            .push(crate::model::ContentPermission::Delete);
        live.description = "by hand".into();
        assert_eq!(
            spec_diff(&live, &d.keys[0].spec),
            "--- live\n+++ desired\n@@ -1,9 +1,8 @@\n name: ns.p.k\n-description: by hand\n+description: ''\n kind: content\n type: service\n defaultPermissions:\n - GET\n-- DELETE\n apiPermissions: []\n scopes: []\n"
        );
        assert_eq!(spec_diff(&live, &live), "");
    }

    #[test]
    fn leftovers_of_a_replace_go_after_the_overlap_and_at_once_if_it_did_not_finish() {
        let d = desired("");
        let live = live_of(&d, now());
        let mut parked = live.clone();
        parked.id = "id0".into();
        parked.spec.name = "replaced.id0.ns.p.k".into();
        // The leftover comes first: the key with the declared name is still the one in use.
        // Left by a replace: other rights than the key's (a service key made a public one).
        parked.spec.key_type = crate::model::KeyType::Service;
        let mut d = d;
        d.keys[0].spec.key_type = crate::model::KeyType::Public;
        let mut live = live;
        live.spec.key_type = crate::model::KeyType::Public;
        let plan = |expires: Option<Timestamp>| {
            let mut p = parked.clone();
            p.spec.expires_at = expires;
            plan_for(&d, &[p, live.clone()], &secrets_for(&live))
        };
        // Inside the overlap the replace gave it: left to expire.
        assert!(kinds(&plan(Some(now() + SignedDuration::from_mins(5)))).is_empty());
        // Left by a renewal (the same rights, on a CMS that cannot shorten a lifetime): it
        // works until it expires.
        let mut renewed = parked.clone();
        renewed.spec.key_type = crate::model::KeyType::Public;
        renewed.spec.expires_at = Some(now() + crate::model::days(5));
        assert!(kinds(&plan_for(&d, &[renewed, live.clone()], &secrets_for(&live))).is_empty());
        let expired = "superseded by a replacement and expired";
        let unfinished = "left by a replace that did not finish: its replacement is in place";
        for (expires, why) in [
            (Some(now()), expired),
            (Some(now() - SignedDuration::from_mins(1)), expired),
            // Its expiry never shortened (the replace stopped after making the new key), or
            // none at all: the replace is finished now.
            (Some(now() + crate::model::days(30)), unfinished),
            (None, unfinished),
        ] {
            let expired = expires;
            let p = plan(expired);
            assert_eq!(kinds(&p), ["revoke"], "{p:?}");
            let Action::Revoke {
                id,
                name,
                policy,
                reason,
                observe_only,
            } = &p.actions[0]
            else {
                unreachable!()
            };
            assert_eq!(
                (id.as_str(), name.as_str(), policy.as_str(), reason.as_str()),
                ("id0", "replaced.id0.ns.p.k", "ns/p", why)
            );
            assert!(!observe_only);
        }
        // Without the declared name anywhere, the leftover is the key: renamed back.
        parked.spec.key_type = crate::model::KeyType::Public;
        let p = plan_for(&d, std::slice::from_ref(&parked), &ObservedSecrets::new());
        assert_eq!(kinds(&p), ["update", "rotate"]);
        let Action::Update { id, .. } = &p.actions[0] else {
            unreachable!()
        };
        assert_eq!(id, "id0");
    }

    #[test]
    fn observe_only_policies_are_planned_but_not_pending() {
        let mut d = desired("");
        d.keys[0].observe_only = true;
        d.policies.values_mut().for_each(|s| s.observe_only = true);
        let live = live_of(&d, now());
        let mut gone = live.clone();
        gone.id = "id2".into();
        gone.spec.labels.insert(LABEL_KEY.into(), "old".into());
        gone.spec.name = "ns.p.old".into();
        let p = plan_for(&d, &[gone], &ObservedSecrets::new());
        assert_eq!(kinds(&p), ["create", "revoke"]);
        assert!(p.actions.iter().all(Action::observe_only));
        assert_eq!(p.pending().count(), 0);
        assert!(!p.has_changes());
        // Settings are never ObserveOnly.
        let cors = Action::SetCors {
            policy: "ns/p".into(),
            owner: "policy:ns.p".into(),
            observe_only: false,
            from: BTreeSet::new(),
            to: BTreeSet::new(),
        };
        assert!(!cors.observe_only());
    }

    #[test]
    fn actions_are_ordered_creates_first_revokes_last() {
        let d = desired(
            "  cors: {origins: ['https://a.example']}\n  publicEndpoints: [{api: contact, operations: [create]}]\n",
        );
        let mut two = d.clone();
        let mut k2 = two.keys[0].clone();
        k2.key = "k2".into();
        k2.spec.name = "ns.p.k2".into();
        k2.spec.labels.insert(LABEL_KEY.into(), "k2".into());
        k2.secret.name = "s2".into();
        two.keys.insert(0, k2);
        let live = live_of(&d, now());
        let mut drifted = live.clone();
        drifted.spec.description = "edited".into();
        let mut gone = live.clone();
        gone.id = "id9".into();
        gone.spec.name = "ns.p.old".into();
        gone.spec.labels.insert(LABEL_KEY.into(), "old".into());
        let settings = LiveSettings {
            apis: BTreeSet::from(["contact".to_owned()]),
            ..Default::default()
        };
        let mut secrets = secrets_for(&live);
        secrets.values_mut().for_each(|o| o.content_intact = false);
        let p = diff(&two, &[gone, drifted], &settings, &secrets, ENDPOINT, now());
        assert_eq!(
            kinds(&p),
            ["create", "update", "secret", "cors", "public", "revoke"]
        );
        assert_eq!(p.live.len(), 2, "the plan carries the live keys");
        assert!(p.live.contains_key("id1") && p.live.contains_key("id9"));
        let rotate = plan_for(&d, std::slice::from_ref(&live), &ObservedSecrets::new());
        let mut mixed = p.clone();
        mixed.actions.push(rotate.actions[0].clone());
        mixed.actions.push(Action::Replace {
            key: d.keys[0].clone(),
            old_id: "x".into(),
            diff: String::new(),
        });
        mixed.actions.sort_by_key(Action::order);
        assert_eq!(
            kinds(&mixed),
            ["create", "replace", "update", "rotate", "secret", "cors", "public", "revoke"]
        );
    }

    #[test]
    fn settings_already_as_declared_need_nothing() {
        let d = desired(
            "  cors: {origins: ['https://a.example']}\n  publicEndpoints: [{api: contact, operations: [create]}]\n",
        );
        let live = live_of(&d, now());
        let mine = OwnedSettings {
            cors: BTreeSet::from(["https://a.example".to_owned()]),
            public: BTreeMap::from([(
                "contact".into(),
                BTreeSet::from([crate::model::ContentOp::Create]),
            )]),
        };
        let same = LiveSettings {
            apis: BTreeSet::from(["contact".to_owned()]),
            owners: BTreeMap::from([
                ("policy:ns.p".to_owned(), mine.clone()),
                ("policy:ns.other".to_owned(), mine.clone()),
                ("by-hand".to_owned(), mine),
            ]),
        };
        let p = diff(
            &d,
            std::slice::from_ref(&live),
            &same,
            &secrets_for(&live),
            ENDPOINT,
            now(),
        );
        assert!(p.actions.is_empty() && p.problems.is_empty(), "{p:?}");
        // The policy no longer declares them: its own entry goes, the other owners' stay.
        let none = desired("");
        let p = diff(
            &none,
            std::slice::from_ref(&live),
            &same,
            &secrets_for(&live),
            ENDPOINT,
            now(),
        );
        let subjects: Vec<String> = p.actions.iter().map(Action::subject).collect();
        assert_eq!(
            subjects,
            [
                "CORS origins of ns/p",
                "public endpoints of 'contact' for ns/p"
            ]
        );
        assert!(p.actions.iter().all(|a| match a {
            Action::SetCors { owner, to, .. } => owner == "policy:ns.p" && to.is_empty(),
            Action::SetPublic { owner, to, .. } => owner == "policy:ns.p" && to.is_empty(),
            _ => false,
        }));
    }

    #[test]
    fn pruned_policies_lose_every_key_with_the_reason() {
        let d = desired("");
        let live = live_of(&d, now());
        let mut gone_policy = live.clone();
        gone_policy.id = "id5".into();
        gone_policy.spec.name = "ns.q.k".into();
        gone_policy
            .spec
            .labels
            .insert(LABEL_POLICY.into(), "ns/q".into());
        let mut pruning = d.clone();
        pruning.policies.insert(
            PolicyId {
                namespace: "ns".into(),
                name: "q".into(),
                uid: None,
            },
            PolicySettings {
                gone: true,
                ..Default::default()
            },
        );
        let p = plan_for(&pruning, &[live.clone(), gone_policy], &secrets_for(&live));
        assert_eq!(kinds(&p), ["revoke"]);
        let Action::Revoke {
            id, reason, policy, ..
        } = &p.actions[0]
        else {
            unreachable!()
        };
        assert_eq!(
            (id.as_str(), policy.as_str(), reason.as_str()),
            (
                "id5",
                "ns/q",
                "its policy is no longer in the manifests (--prune)"
            )
        );
    }
}
