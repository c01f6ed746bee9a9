//! Plans as people read them. Nothing here can print a key value: plans never hold one.

use super::diff::{Action, Plan};
use std::fmt::Write;

/// One plan as text; `title` names the connection.
pub fn render_text(title: &str, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    for a in &plan.actions {
        render_action(&mut out, a);
    }
    for p in &plan.problems {
        let _ = writeln!(out, "  ! {p}");
    }
    let _ = writeln!(out, "  {}", summary(plan));
    out
}

/// One action's line (and its diff, indented).
fn render_action(out: &mut String, a: &Action) {
    let observe = if a.observe_only() {
        "  (ObserveOnly: not applied)"
    } else {
        ""
    };
    let label = a.subject();
    let _ = match a {
        Action::Create { key } => writeln!(
            out,
            "  + create   {label}  -> Secret {}{observe}",
            key.secret
        ),
        Action::Adopt { .. } => render_adopt(out, a, &label, observe),
        Action::Update { id, diff, .. } => {
            let _ = writeln!(out, "  ~ update   {label} (id {id}){observe}");
            writeln!(out, "{}", indent(diff, 6))
        }
        Action::Rotate {
            id,
            reason,
            grace_seconds,
            key,
            ..
        } => {
            let old = match grace_seconds {
                0 => "the old value stops working at once".to_owned(),
                s => format!("old value valid {s}s more"),
            };
            writeln!(
                out,
                "  ↻ rotate   {label} (id {id}): {reason}; new value to Secret {}, {old}{observe}",
                key.secret
            )
        }
        Action::Replace { old_id, diff, .. } => {
            let _ = writeln!(out, "  ± replace  {label} (id {old_id}): kind, type or owner changed; the old key expires after the overlap{observe}");
            writeln!(out, "{}", indent(diff, 6))
        }
        Action::WriteSecret { key, reason, .. } => writeln!(
            out,
            "  ~ secret   {label} -> Secret {}: {reason}{observe}",
            key.secret
        ),
        Action::Revoke {
            id, policy, reason, ..
        } => {
            writeln!(
                out,
                "  - revoke   {label} (id {id}, ApiKeyPolicy {policy}): {reason}{observe}"
            )
        }
        Action::SetCors {
            policy, from, to, ..
        } => writeln!(
            out,
            "  ~ cors     {policy}: {} -> {}{observe}",
            flow_list(from),
            flow_list(to)
        ),
        Action::SetPublic {
            policy,
            api,
            from,
            to,
            ..
        } => writeln!(
            out,
            "  ~ public   {api} for {policy}: {} -> {}{observe}",
            flow_list(from.iter().map(|o| o.as_str())),
            flow_list(to.iter().map(|o| o.as_str()))
        ),
    };
}

/// An adoption's line and what changes of the key.
fn render_adopt(out: &mut String, a: &Action, label: &str, observe: &str) -> std::fmt::Result {
    let Action::Adopt {
        key,
        id,
        diff,
        keeps_value,
        grace_seconds,
    } = a
    else {
        return Ok(());
    };
    let value = match (keeps_value, grace_seconds) {
        (true, _) => "its current value (checked first) to Secret".to_owned(),
        (false, 0) => "a new value to Secret (the old one stops working at once)".to_owned(),
        (false, s) => format!("a new value to Secret (the old one valid {s}s more)"),
    };
    writeln!(
        out,
        "  ⇐ adopt    {label} (id {id}, made outside keyward): its settings become the policy's; {value} {}{observe}",
        key.secret
    )?;
    writeln!(out, "{}", indent(diff, 6))
}

/// Values as a manifest writes them, a YAML flow list: `[create, get]`, `[]`.
pub fn flow_list<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<T> = items.into_iter().collect();
    let names: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", names.join(", "))
}

/// "2 to create, 1 to update, ..." or "no changes".
pub fn summary(plan: &Plan) -> String {
    let mut counts = [0usize; 6];
    for a in plan.pending() {
        let i = match a {
            Action::Create { .. } => 0,
            Action::Update { .. } | Action::Replace { .. } | Action::Adopt { .. } => 1,
            Action::Rotate { .. } => 2,
            Action::WriteSecret { .. } => 3,
            Action::Revoke { .. } => 4,
            Action::SetCors { .. } | Action::SetPublic { .. } => 5,
        };
        counts[i] += 1;
    }
    let names = [
        "to create",
        "to change",
        "to rotate",
        "Secrets to rewrite",
        "to revoke",
        "settings to change",
    ];
    let parts: Vec<String> = counts
        .iter()
        .zip(names)
        .filter(|(c, _)| **c > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let observe_only = plan.actions.iter().filter(|a| a.observe_only()).count();
    let mut text = if parts.is_empty() {
        "nothing to apply".to_owned()
    } else {
        format!("Plan: {}", parts.join(", "))
    };
    if observe_only > 0 {
        text.push_str(&format!(
            "; {observe_only} ObserveOnly changes left for a person"
        ));
    }
    if !plan.problems.is_empty() {
        text.push_str(&format!("; {} problems stop it", plan.problems.len()));
    }
    match (
        parts.is_empty() && observe_only == 0 && plan.problems.is_empty(),
        text,
    ) {
        (true, _) => "no changes".into(),
        (false, text) => format!("{text}."),
    }
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testkit::*;
    use crate::plan::Action;
    use jiff::SignedDuration;
    use std::collections::BTreeMap;

    /// A plan with one action of every kind, a problem, and an ObserveOnly action.
    fn every_action() -> crate::plan::Plan {
        let d = desired("");
        let key = d.keys[0].clone();
        let mut observed = key.clone();
        observed.observe_only = true;
        let [cors, public] = settings_actions(&[
            crate::model::ContentOp::Create,
            crate::model::ContentOp::List,
        ]);
        crate::plan::Plan {
            actions: vec![
                Action::Create { key: key.clone() },
                Action::Create { key: observed },
                Action::Replace {
                    key: key.clone(),
                    old_id: "id0".into(),
                    diff: "-type: public\n+type: service\n".into(),
                },
                Action::Update {
                    key: key.clone(),
                    id: "id1".into(),
                    diff: "--- live\n+++ desired\n-- DELETE".into(),
                },
                Action::Rotate {
                    key: key.clone(),
                    id: "id1".into(),
                    reason: "a reason".into(),
                    grace_seconds: 600,
                    expiring: true,
                },
                Action::WriteSecret {
                    key,
                    id: "id1".into(),
                    reason: "edited".into(),
                },
                cors,
                public,
                Action::Revoke {
                    id: "id9".into(),
                    name: "ns.p.old".into(),
                    policy: "ns/p".into(),
                    reason: "key 'old' was removed from the policy".into(),
                    observe_only: false,
                },
            ],
            problems: vec!["a problem".into()],
            live: BTreeMap::new(),
        }
    }

    #[test]
    fn every_action_renders_on_its_own_line_with_its_details() {
        let text = render_text("the CMS", &every_action());
        assert_eq!(
            text,
            "the CMS\n  \
             + create   ns/p/k  -> Secret ns/s\n  \
             + create   ns/p/k  -> Secret ns/s  (ObserveOnly: not applied)\n  \
             ± replace  ns/p/k (id id0): kind, type or owner changed; the old key expires after the overlap\n      \
             -type: public\n      \
             +type: service\n  \
             ~ update   ns/p/k (id id1)\n      \
             --- live\n      \
             +++ desired\n      \
             -- DELETE\n  \
             ↻ rotate   ns/p/k (id id1): a reason; new value to Secret ns/s, old value valid 600s more\n  \
             ~ secret   ns/p/k -> Secret ns/s: edited\n  \
             ~ cors     ns/p: [] -> [https://a.example]\n  \
             ~ public   contact for ns/p: [] -> [list, create]\n  \
             - revoke   ns/p/old (id id9, ApiKeyPolicy ns/p): key 'old' was removed from the policy\n  \
             ! a problem\n  \
             Plan: 1 to create, 2 to change, 1 to rotate, 1 Secrets to rewrite, 1 to revoke, 2 settings to change; \
             1 ObserveOnly changes left for a person; 1 problems stop it.\n"
        );
    }

    #[test]
    fn the_summary_counts_pending_actions_only() {
        let mut p = every_action();
        p.actions.push(Action::Create {
            key: desired("").keys[0].clone(),
        });
        assert_eq!(
            summary(&p),
            "Plan: 2 to create, 2 to change, 1 to rotate, 1 Secrets to rewrite, 1 to revoke, 2 settings to change; \
             1 ObserveOnly changes left for a person; 1 problems stop it."
        );
        p.actions.retain(|a| matches!(a, Action::Revoke { .. }));
        assert_eq!(summary(&p), "Plan: 1 to revoke; 1 problems stop it.");
        p.problems.clear();
        assert_eq!(summary(&p), "Plan: 1 to revoke.");
        // Only changes that apply leaves alone: never "no changes".
        let mut watched = desired("").keys[0].clone();
        watched.observe_only = true;
        p.actions = vec![Action::Create { key: watched }];
        assert_eq!(
            summary(&p),
            "nothing to apply; 1 ObserveOnly changes left for a person."
        );
        p.actions.clear();
        assert_eq!(summary(&p), "no changes");
        assert_eq!(render_text("t", &p), "t\n  no changes\n");
    }

    #[test]
    fn a_plan_from_the_diff_renders_its_rotation_reason() {
        let d = desired_with("", "      renewBefore: 1d\n");
        let mut live = live_of(&d, now());
        live.spec.expires_at = Some(now() + SignedDuration::from_hours(2));
        let p = plan_for(&d, &[live.clone()], &secrets_for(&live));
        assert_eq!(
            render_text("t", &p).lines().nth(1),
            Some("  ↻ rotate   ns/p/k (id id1): expires at 2030-01-01T02:00:00+00:00, within renewBefore; new value to Secret ns/s, old value valid 900s more")
        );
        // No overlap: said in words.
        let d = desired_with("", "      renewBefore: 1d\n      rotationOverlap: 0s\n");
        let p = plan_for(&d, &[live.clone()], &secrets_for(&live));
        assert!(
            render_text("t", &p)
                .lines()
                .nth(1)
                .is_some_and(|l| l
                    .ends_with("new value to Secret ns/s, the old value stops working at once")),
            "{}",
            render_text("t", &p)
        );
    }
}
