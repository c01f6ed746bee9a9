//! Plans as people read them. Nothing here can print a key value: plans never hold one.

use super::diff::{Action, Plan};
use std::fmt::Write;

fn key_label(a: &Action) -> String {
    match a {
        Action::Create { key }
        | Action::Update { key, .. }
        | Action::Rotate { key, .. }
        | Action::Replace { key, .. }
        | Action::WriteSecret { key, .. } => {
            format!("{}/{}", key.policy, key.key)
        }
        Action::Revoke { name, .. } => name.clone(),
        Action::SetCors { .. } => "CORS origins".into(),
        Action::SetPublic { api, .. } => format!("public endpoints of '{api}'"),
    }
}

/// One plan as text; `title` names the connection.
pub fn render_text(title: &str, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    for a in &plan.actions {
        let observe = if a.observe_only() {
            "  (ObserveOnly: not applied)"
        } else {
            ""
        };
        let label = key_label(a);
        let _ = match a {
            Action::Create { key } => writeln!(
                out,
                "  + create   {label}  -> Secret {}/{}{observe}",
                key.secret.namespace, key.secret.name
            ),
            Action::Update { id, diff, .. } => {
                let _ = writeln!(out, "  ~ update   {label} (id {id}){observe}");
                writeln!(out, "{}", indent(diff, 6))
            }
            Action::Rotate { id, reason, grace_seconds, key, .. } => writeln!(
                out,
                "  ↻ rotate   {label} (id {id}): {reason}; new value to Secret {}/{}, old value valid {grace_seconds}s more{observe}",
                key.secret.namespace, key.secret.name
            ),
            Action::Replace { old_id, diff, .. } => {
                let _ = writeln!(out, "  ± replace  {label} (id {old_id}): kind, type or owner changed; the old key expires after the overlap{observe}");
                writeln!(out, "{}", indent(diff, 6))
            }
            Action::WriteSecret { key, reason, .. } => writeln!(
                out,
                "  ~ secret   {label} -> Secret {}/{}: {reason}{observe}",
                key.secret.namespace, key.secret.name
            ),
            Action::Revoke { id, policy, reason, .. } => {
                writeln!(out, "  - revoke   {label} (id {id}, ApiKeyPolicy {policy}): {reason}{observe}")
            }
            Action::SetCors { from, to } => writeln!(out, "  ~ cors     {:?} -> {:?}", from, to),
            Action::SetPublic { api, from, to } => {
                let names = |s: &std::collections::BTreeSet<crate::model::ContentOp>| s.iter().map(|o| o.as_str()).collect::<Vec<_>>();
                writeln!(out, "  ~ public   {api}: {:?} -> {:?}", names(from), names(to))
            }
        };
    }
    for p in &plan.problems {
        let _ = writeln!(out, "  ! {p}");
    }
    let _ = writeln!(out, "  {}", summary(plan));
    out
}

/// "2 to create, 1 to update, ..." or "no changes".
pub fn summary(plan: &Plan) -> String {
    let mut counts = [0usize; 6];
    for a in plan.pending() {
        let i = match a {
            Action::Create { .. } => 0,
            Action::Update { .. } | Action::Replace { .. } => 1,
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
    if parts.is_empty() {
        "no changes".into()
    } else {
        format!("Plan: {}.", parts.join(", "))
    }
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
