//! Rotation a person asks for (`keyward rotate`): a new value for the named keys now, whatever
//! their schedule, with each key's `rotationOverlap`, or with none for a leaked key.

use super::diff::{Action, Plan};
use crate::model::desired::{DesiredKey, DesiredState, LABEL_KEY};

/// Keys named on the command line (rotate, explain): `namespace/policy` (every key of it) or
/// `namespace/policy/key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTarget {
    pub namespace: String,
    pub policy: String,
    pub key: Option<String>,
}

impl std::str::FromStr for KeyTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<KeyTarget, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let named = |p: &str| !p.is_empty();
        match parts.as_slice() {
            [ns, policy] if named(ns) && named(policy) => Ok(KeyTarget {
                namespace: (*ns).to_owned(),
                policy: (*policy).to_owned(),
                key: None,
            }),
            [ns, policy, key] if named(ns) && named(policy) && named(key) => Ok(KeyTarget {
                namespace: (*ns).to_owned(),
                policy: (*policy).to_owned(),
                key: Some((*key).to_owned()),
            }),
            _ => Err(format!(
                "'{s}' is not NAMESPACE/POLICY or NAMESPACE/POLICY/KEY"
            )),
        }
    }
}

impl std::fmt::Display for KeyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.policy)?;
        match &self.key {
            Some(k) => write!(f, "/{k}"),
            None => Ok(()),
        }
    }
}

impl KeyTarget {
    /// Whether this names `k`.
    pub fn names(&self, k: &DesiredKey) -> bool {
        k.policy.namespace == self.namespace
            && k.policy.name == self.policy
            && self.key.as_ref().is_none_or(|key| *key == k.key)
    }
}

/// A rotation asked for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateNow {
    pub targets: Vec<KeyTarget>,
    /// No overlap: the old value stops working at once (a leaked key).
    pub at_once: bool,
}

impl RotateNow {
    fn names(&self, k: &DesiredKey) -> bool {
        self.targets.iter().any(|t| t.names(k))
    }

    /// What the request names that the run cannot rotate: a target naming no declared key, or
    /// only keys of ObserveOnly policies (keyward writes nothing for them). Checked over every
    /// connection's desired state before anything is planned.
    pub fn refusals<'a>(
        &self,
        states: impl Iterator<Item = &'a DesiredState> + Clone,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.targets {
            let keys: Vec<&DesiredKey> = states
                .clone()
                .flat_map(|s| &s.keys)
                .filter(|k| t.names(k))
                .collect();
            if keys.is_empty() {
                out.push(format!("{t}: no such key in the manifests"));
            } else if keys.iter().all(|k| k.observe_only) {
                out.push(format!(
                    "{t}: its policy is ObserveOnly; keyward writes nothing for it"
                ));
            }
        }
        out
    }
}

/// Makes `plan` the rotation `ask` names and nothing else (a rotation does not apply a
/// manifest's other changes): a new value for each named key the CMS holds, with the key's
/// overlap or, `ask.at_once`, none. Returns the named keys it cannot rotate: those the CMS does
/// not hold yet (or that the plan replaces): `keyward apply` makes them.
pub fn rotate_now(plan: &mut Plan, desired: &DesiredState, ask: &RotateNow) -> Vec<String> {
    let mut not_held = Vec::new();
    let mut rotations = Vec::new();
    for d in desired
        .keys
        .iter()
        .filter(|k| ask.names(k) && !k.observe_only)
    {
        let replaced = plan.actions.iter().any(|a| match a {
            Action::Create { key } | Action::Replace { key, .. } | Action::Adopt { key, .. } => {
                key.policy == d.policy && key.key == d.key
            }
            _ => false,
        });
        let mine = plan.live.values().filter(|k| {
            d.policy.owns(&k.spec.labels) && k.spec.labels.get(LABEL_KEY) == Some(&d.key)
        });
        let live = mine.max_by_key(|k| k.spec.name == d.spec.name);
        let (Some(live), false) = (live, replaced) else {
            not_held.push(format!(
                "{}/{}: the CMS does not hold it as declared yet; keyward apply makes it",
                d.policy, d.key
            ));
            continue;
        };
        let (grace_seconds, reason) = match ask.at_once {
            true => (0, "rotated on request, at once (no overlap)"),
            false => (d.rotation_overlap.as_secs(), "rotated on request"),
        };
        rotations.push(Action::Rotate {
            key: d.clone(),
            id: live.id.clone(),
            reason: reason.to_owned(),
            grace_seconds,
            expiring: false,
        });
    }
    plan.actions = rotations;
    not_held
}

/// Adds the rotations `ask` names to `plan` and keeps everything else it does (the operator
/// acts on a request within a reconcile): a key the plan rotates already is rotated once,
/// without overlap when `ask.at_once`; a Secret rewrite of a rotated key goes (the rotation
/// writes the Secret). Returns the keys (`namespace/policy/key`) it rotates on request.
pub fn add_rotations(plan: &mut Plan, desired: &DesiredState, ask: &RotateNow) -> Vec<String> {
    let mut asked = plan.clone();
    rotate_now(&mut asked, desired, ask);
    let rotated = |key: &DesiredKey| {
        asked.actions.iter().any(|a| match a {
            Action::Rotate { key: k, .. } => k.policy == key.policy && k.key == key.key,
            _ => false,
        })
    };
    plan.actions.retain(|a| match a {
        Action::Rotate { key, .. } | Action::WriteSecret { key, .. } => !rotated(key),
        _ => true,
    });
    let names = asked
        .actions
        .iter()
        .map(|a| a.subject())
        .collect::<Vec<_>>();
    plan.actions.extend(asked.actions);
    plan.actions.sort_by_key(Action::order);
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::secret::ObservedSecrets;
    use crate::plan::testkit::{desired, live_of, now, plan_for, secrets_for};

    fn asked(targets: &[&str], at_once: bool) -> RotateNow {
        RotateNow {
            targets: targets.iter().map(|t| t.parse().unwrap()).collect(),
            at_once,
        }
    }

    #[test]
    fn targets_read_as_policy_or_key() {
        let t: KeyTarget = "ns/p/k".parse().unwrap();
        assert_eq!(t.key.as_deref(), Some("k"));
        assert_eq!(t.to_string(), "ns/p/k");
        assert_eq!("ns/p".parse::<KeyTarget>().unwrap().key, None);
        for bad in ["ns", "ns/", "/p", "ns/p/", "a/b/c/d", ""] {
            assert!(bad.parse::<KeyTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_settled_key_rotates_with_its_overlap_or_at_once() {
        let d = desired("");
        let live = vec![live_of(&d, now())];
        let settled = || plan_for(&d, &live, &secrets_for(&live[0]));
        let mut plan = settled();
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        rotate_now(&mut plan, &d, &asked(&["ns/p"], false));
        let [Action::Rotate {
            id, grace_seconds, ..
        }] = plan.actions.as_slice()
        else {
            panic!("one rotation: {:?}", plan.actions)
        };
        assert_eq!((id.as_str(), *grace_seconds), ("id1", 900));
        let mut plan = settled();
        rotate_now(&mut plan, &d, &asked(&["ns/p/k"], true));
        assert!(matches!(
            plan.actions.as_slice(),
            [Action::Rotate {
                grace_seconds: 0,
                ..
            }]
        ));
        let mut plan = settled();
        let not_held = rotate_now(&mut plan, &d, &asked(&["ns/other", "ns/p/nope"], false));
        assert!(plan.actions.is_empty(), "names no key: {:?}", plan.actions);
        assert!(not_held.is_empty(), "{not_held:?}");
    }

    #[test]
    fn a_rotation_is_all_it_does() {
        let d = desired("");
        // Not in the CMS yet: nothing is created, and it is said why.
        let mut plan = plan_for(&d, &[], &ObservedSecrets::new());
        assert_eq!(plan.actions.len(), 1, "a create: {:?}", plan.actions);
        let not_held = rotate_now(&mut plan, &d, &asked(&["ns/p"], true));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert_eq!(
            not_held,
            ["ns/p/k: the CMS does not hold it as declared yet; keyward apply makes it"]
        );
        // Drifted and its Secret lost: only the rotation is done.
        let mut live = live_of(&d, now());
        live.spec.description = "changed by hand".into();
        let mut plan = plan_for(&d, std::slice::from_ref(&live), &ObservedSecrets::new());
        assert!(plan.actions.len() >= 2, "{:?}", plan.actions);
        assert!(rotate_now(&mut plan, &d, &asked(&["ns/p/k"], false)).is_empty());
        assert!(
            matches!(
                plan.actions.as_slice(),
                [Action::Rotate { reason, grace_seconds: 900, .. }] if reason == "rotated on request"
            ),
            "{:?}",
            plan.actions
        );
    }

    #[test]
    fn added_to_a_plan_a_rotation_keeps_the_rest_and_rotates_once() {
        let d = desired("");
        let mut live = live_of(&d, now());
        live.spec.description = "changed by hand".into();
        let mut plan = plan_for(&d, std::slice::from_ref(&live), &ObservedSecrets::new());
        let before = crate::plan::testkit::kinds(&plan);
        assert!(
            before.contains(&"update") && before.contains(&"rotate"),
            "{before:?}"
        );
        let rotated = add_rotations(&mut plan, &d, &asked(&["ns/p"], true));
        assert_eq!(rotated, ["ns/p/k"]);
        let after = crate::plan::testkit::kinds(&plan);
        assert_eq!(
            after,
            ["update", "rotate"],
            "the drift repair stays, one rotation"
        );
        assert!(plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Rotate { grace_seconds: 0, reason, .. } if reason.contains("on request"))));
    }

    #[test]
    fn refusals_name_unknown_targets_and_observe_only_policies() {
        let d = desired("");
        let ask = asked(&["ns/p", "ns/p/k", "ns/q", "ns/p/nope"], false);
        assert_eq!(
            ask.refusals(std::iter::once(&d)),
            [
                "ns/q: no such key in the manifests",
                "ns/p/nope: no such key in the manifests"
            ]
        );
        let mut watched = d.clone();
        watched.keys[0].observe_only = true;
        assert_eq!(
            asked(&["ns/p"], false).refusals(std::iter::once(&watched)),
            ["ns/p: its policy is ObserveOnly; keyward writes nothing for it"]
        );
    }
}
