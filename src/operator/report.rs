//! Pipeline step 7, status: conditions, per-key status, metrics and events, written only when
//! they changed (conditions are compared without their timestamps), events on transitions and on
//! changes made.

use super::context::Context;
use super::events::{record, EventReason};
use super::metrics::KeyLabels;
use super::observe::Observed;
use super::status::{
    self, condition, SettledReason, Stated, CHANGES_PENDING, DRIFTED, EXPIRING, READY, STALLED,
    SYNCED, VALUE_REJECTED,
};
use crate::engine::rotation_due;
use crate::model::desired::{DesiredKey, PolicyId};
use crate::model::secret::{ANN_FINGERPRINT, ANN_KEY_ID};
use crate::plan::{render_text, Action as PlanAction, Plan};
use crate::policy::{ApiKeyPolicy, ApiKeyPolicyStatus, Condition, KeyStatus, ManagementPolicy};
use crate::providers::LiveKey;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;

/// What a pipeline that ran to the end leaves for status.
pub struct Outcome {
    pub observed: Observed,
    pub plan: Plan,
    /// The CMS's keys after the apply (the observed ones when nothing was applied).
    pub live: Vec<LiveKey>,
    /// (event reason, what was done), one per applied action.
    pub done: Vec<(EventReason, String)>,
    pub now: Timestamp,
    /// The connection the keys are on.
    pub connection: crate::model::desired::ConnectionId,
    /// The rotation asked for on the policy that this reconcile carried out.
    pub rotation: Option<crate::policy::ManualRotation>,
    /// ObserveOnly keys made by hand whose value in use was checked: (key, whether it works).
    pub probes: Vec<(String, bool)>,
}

/// RFC 3339 to the second, as Kubernetes writes times.
pub(super) fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Status of the keys in place, what they expire, and when the next rotation is due.
struct KeysReport {
    keys: Vec<KeyStatus>,
    expiring: Vec<String>,
    next_due: Option<Timestamp>,
}

/// The fingerprint a key's Secret holds: from the Secrets observed for the plan when nothing
/// was applied, otherwise read again.
async fn fingerprint(
    ctx: &Context,
    o: &Outcome,
    k: &DesiredKey,
    l: &LiveKey,
) -> Result<Option<String>, kube::Error> {
    if o.done.is_empty() {
        return Ok(o
            .observed
            .secrets
            .get(&(k.secret.namespace.clone(), k.secret.name.clone()))
            .filter(|s| s.key_id.as_deref() == Some(l.id.as_str()))
            .and_then(|s| s.fingerprint.clone()));
    }
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &k.secret.namespace)
        .get_metadata_opt(&k.secret.name)
        .await?;
    let ann = secret
        .and_then(|s| s.metadata.annotations)
        .unwrap_or_default();
    Ok((ann.get(ANN_KEY_ID) == Some(&l.id))
        .then(|| ann.get(ANN_FINGERPRINT).cloned())
        .flatten())
}

async fn keys_report(
    ctx: &Context,
    p: &ApiKeyPolicy,
    pid: &PolicyId,
    o: &Outcome,
) -> Result<KeysReport, kube::Error> {
    let mut r = KeysReport {
        keys: Vec::new(),
        expiring: Vec::new(),
        next_due: None,
    };
    let mut series = Vec::new();
    for k in &o.observed.state.keys {
        let owned = o
            .live
            .iter()
            .find(|l| pid.owns(&l.spec.labels) && l.spec.name == k.spec.name);
        // An ObserveOnly policy tracks a key made by hand without taking it over.
        let tracked = || {
            let a = k.adopt.as_ref().filter(|_| k.observe_only)?;
            o.live.iter().find(|l| a.names(l))
        };
        let Some(l) = owned.or_else(tracked) else {
            continue;
        };
        r.keys.push(KeyStatus {
            name: k.key.clone(),
            id: l.id.clone(),
            fingerprint: fingerprint(ctx, o, k, l).await?,
            // A CMS without a key API does not tell when its console made a key.
            created_at: (!o.observed.console_only).then(|| rfc3339(l.created_at)),
            expires_at: l.expires_at().map(rfc3339),
            rotated_at: l.rotated_at.map(rfc3339),
            secret_name: k.secret.name.clone(),
        });
        if let Some(exp) = l.expires_at() {
            let left = exp.duration_since(o.now);
            let labels = KeyLabels {
                namespace: pid.namespace.clone(),
                policy: pid.name.clone(),
                key: k.key.clone(),
            };
            // As a Unix time: a count of seconds left would be stale between reconciles.
            series.push((labels, exp.as_second() as f64));
            if status::expiring_soon(k.lifetime, left) {
                r.expiring
                    .push(format!("{} expires at {}", k.key, rfc3339(exp)));
            }
        }
        if let Some(due) = rotation_due(k, l) {
            r.next_due = Some(r.next_due.map_or(due, |d| d.min(due)));
        }
    }
    ctx.set_expiry_series(p, series);
    Ok(r)
}

/// The conditions of a policy that ran to the end.
fn conditions(p: &ApiKeyPolicy, o: &Outcome, keys: &KeysReport) -> Vec<Stated> {
    let mut out = settled(p, &o.plan, keys);
    if !o.probes.is_empty() {
        let refused: Vec<&str> = o
            .probes
            .iter()
            .filter(|(_, works)| !works)
            .map(|(k, _)| k.as_str())
            .collect();
        out.push(match refused.is_empty() {
            true => condition(
                VALUE_REJECTED,
                false,
                SettledReason::ValuesWork.as_str(),
                "the CMS accepts every value in use (adopt.valueFrom)",
            ),
            false => condition(
                VALUE_REJECTED,
                true,
                SettledReason::Rejected.as_str(),
                format!(
                    "the CMS refuses the value in use (401) of: {}",
                    refused.join(", ")
                ),
            ),
        });
    }
    out
}

/// The conditions every policy that ran to the end has.
fn settled(p: &ApiKeyPolicy, plan: &Plan, keys: &KeysReport) -> Vec<Stated> {
    use SettledReason as R;
    let observe_only = p.spec.management_policy == ManagementPolicy::ObserveOnly;
    let pending = observe_only && !plan.actions.is_empty();
    let in_place = format!(
        "{} key(s) in place and written to their Secrets",
        keys.keys.len()
    );
    // ObserveOnly changes wait for a person: the policy stays Ready (GitOps tools show it
    // healthy), and ChangesPending says what waits.
    let (ready_reason, pending_message) = if pending {
        let n = plan.actions.len();
        let waits = format!("ObserveOnly: {n} change(s) in status.pendingChanges are not applied");
        (R::ChangesPending, waits)
    } else {
        (R::Ready, "nothing waits to be applied".to_owned())
    };
    let (synced_reason, synced_message) = if observe_only {
        let says = "managementPolicy is ObserveOnly: nothing is written to the CMS";
        (R::ObserveOnly, says)
    } else {
        (R::Applied, "the CMS matches the policy")
    };
    let pending_reason = if pending {
        R::ObserveOnly
    } else {
        R::NoChanges
    };
    let (drifted, drift_reason, drift_message) = drift(plan, observe_only);
    let expiring = !keys.expiring.is_empty();
    let (expiry_reason, expiry_message) = if expiring {
        (R::ExpiringSoon, keys.expiring.join("; "))
    } else {
        let none = "no key is within its reminder window";
        (R::NotExpiring, none.to_owned())
    };
    let stated = |t, status, r: R, m: String| condition(t, status, r.as_str(), m);
    vec![
        stated(READY, true, ready_reason, in_place),
        stated(SYNCED, !pending, synced_reason, synced_message.into()),
        stated(CHANGES_PENDING, pending, pending_reason, pending_message),
        stated(
            STALLED,
            false,
            R::NotStalled,
            "the policy is in place".into(),
        ),
        stated(DRIFTED, drifted, drift_reason, drift_message),
        stated(EXPIRING, expiring, expiry_reason, expiry_message),
    ]
}

/// Whether the plan repairs (or, ObserveOnly, found) keys changed in the CMS, its reason and
/// message.
fn drift(plan: &Plan, observe_only: bool) -> (bool, SettledReason, String) {
    let drifted: Vec<&str> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            PlanAction::Update { key, .. } => Some(key.key.as_str()),
            _ => None,
        })
        .collect();
    let changed = || format!("changed in the CMS outside keyward: {}", drifted.join(", "));
    match (drifted.is_empty(), observe_only) {
        (true, _) => (
            false,
            SettledReason::NoDrift,
            "the CMS matched the policy at the last check".to_owned(),
        ),
        (false, true) => (true, SettledReason::DriftFound, changed()),
        (false, false) => (true, SettledReason::DriftRepaired, changed()),
    }
}

/// Step 7 for a policy that ran to the end: status, metrics and events; returns when to look
/// again (the drift interval, or sooner when a rotation is due).
pub async fn report(
    p: &ApiKeyPolicy,
    ctx: &Context,
    old: &ApiKeyPolicyStatus,
    o: Outcome,
) -> Result<Duration, kube::Error> {
    let pid = p.policy_id();
    let keys = keys_report(ctx, p, &pid, &o).await?;
    let observe_only = p.spec.management_policy == ManagementPolicy::ObserveOnly;
    // ObserveOnly actions are never "pending" for apply, but they are what status reports.
    let pending_changes: Vec<String> = if observe_only && !o.plan.actions.is_empty() {
        render_text("", &o.plan)
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let wanted = o.observed.state.keys.len() as i64;
    let (found, expiring) = (keys.keys.len() as i64, keys.expiring.len() as i64);
    ctx.set_key_states(p, Some([found - expiring, expiring, wanted - found]));
    let new = ApiKeyPolicyStatus {
        observed_generation: p.metadata.generation,
        conditions: merged(old, conditions(p, &o, &keys), p.metadata.generation, o.now),
        key_count: Some(keys.keys.len() as i64),
        // Keys, or settings only (CORS, public endpoints): either is taken back from there.
        connection: (!keys.keys.is_empty() || p.spec.declared_settings().has_any())
            .then(|| crate::policy::KeysConnection::of(&o.connection))
            .flatten(),
        keys: keys.keys,
        pending_changes,
        refused_since: None,
        last_manual_rotation: o
            .rotation
            .clone()
            .or_else(|| old.last_manual_rotation.clone()),
    };
    // What was done is told first: a status write that fails is retried, but the next
    // reconcile has nothing left to do, and an event published after it would be lost.
    for (reason, note) in &o.done {
        record(ctx, p, EventType::Normal, reason.as_str(), note).await;
    }
    write_status(p, ctx, old, new, None).await?;
    let next = next_look(
        ctx.config.drift_interval,
        keys.next_due,
        ctx.config.clock.now(),
    );
    // A rotation asked too soon after the last one is carried out when its turn comes.
    let waits = o.rotation.is_none() && !observe_only && super::rotation::asked(p).is_some();
    Ok(match waits {
        true => next.min(super::context::ROTATION_EVERY),
        false => next,
    })
}

/// When to look again: after the drift interval, or when the next rotation is due if that is
/// sooner (at least a second from now, so a rotation due in the past is not a busy loop).
fn next_look(drift_interval: Duration, next_due: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(due) = next_due else {
        return drift_interval;
    };
    let until = Duration::try_from(due.duration_since(now))
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    drift_interval.min(until)
}

/// The conditions after `new`, transitions stamped `now` (the operator's clock, the one its
/// other decisions read).
fn merged(
    old: &ApiKeyPolicyStatus,
    new: Vec<Stated>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    status::merge(&old.conditions, new, now, generation)
}

/// The status of a policy that stopped: Ready and Synced false with `reason`; a failure that is
/// retried says so. Transitions are stamped `now`.
pub fn stopped_status(
    old: &ApiKeyPolicyStatus,
    reason: status::StopReason,
    msg: &str,
    retried: bool,
    now: Timestamp,
) -> ApiKeyPolicyStatus {
    let ready = if retried {
        format!("{msg}; retrying with backoff")
    } else {
        msg.to_owned()
    };
    let synced = if retried { msg } else { "nothing was applied" };
    let stalled = if reason.stalls() {
        condition(STALLED, true, reason.as_str(), msg)
    } else {
        condition(
            STALLED,
            false,
            SettledReason::NotStalled.as_str(),
            "retried, or waiting for what it names",
        )
    };
    ApiKeyPolicyStatus {
        conditions: merged(
            old,
            vec![
                condition(READY, false, reason.as_str(), ready),
                condition(SYNCED, false, reason.as_str(), synced),
                stalled,
            ],
            None,
            now,
        ),
        ..old.clone()
    }
}

/// Writes status only when it differs (ignoring transition times); records an event when the
/// Ready condition flips (`warning`: the reason and message of a Warning event).
pub async fn write_status(
    p: &ApiKeyPolicy,
    ctx: &Context,
    old: &ApiKeyPolicyStatus,
    new: ApiKeyPolicyStatus,
    warning: Option<(&str, &str)>,
) -> Result<(), kube::Error> {
    let ready = new
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True");
    ctx.set_policy_ready(p, ready);
    let Some((new, flipped)) = status::to_write(old, new) else {
        return Ok(());
    };
    let api: Api<ApiKeyPolicy> =
        Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let body = json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy", "status": new});
    api.patch_status(
        &p.name_any(),
        &PatchParams::apply(&ctx.config.field_manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    if let Some(ready) = flipped {
        match warning {
            Some((reason, msg)) => record(ctx, p, EventType::Warning, reason, msg).await,
            None => record(ctx, p, EventType::Normal, &ready.reason, &ready.message).await,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testkit::{desired, now};
    use std::collections::BTreeSet;

    fn policy(management: &str) -> ApiKeyPolicy {
        serde_json::from_value(json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"managementPolicy": management, "keys": []}
        }))
        .expect("a policy")
    }

    fn update(key: &str) -> PlanAction {
        let mut k = desired("").keys[0].clone();
        k.key = key.into();
        PlanAction::Update {
            key: k,
            id: "id1".into(),
            diff: String::new(),
        }
    }

    fn plan(actions: Vec<PlanAction>) -> Plan {
        Plan {
            actions,
            ..Default::default()
        }
    }

    fn keys(expiring: &[&str]) -> KeysReport {
        KeysReport {
            keys: vec![KeyStatus::default(); 2],
            expiring: expiring.iter().map(|s| (*s).to_owned()).collect(),
            next_due: None,
        }
    }

    /// (type, status, reason) of each condition, in order.
    fn said(c: &[Stated]) -> Vec<(&str, bool, &str)> {
        c.iter()
            .map(|c| (c.type_, c.status, c.reason.as_str()))
            .collect()
    }

    /// (status, reason) of the condition of type `t`.
    fn of<'a>(c: &'a [Stated], t: &str) -> (bool, &'a str) {
        let c = c.iter().find(|c| c.type_ == t).expect("the condition");
        (c.status, c.reason.as_str())
    }

    #[test]
    fn a_managed_policy_in_sync_is_ready_applied_without_drift() {
        let c = settled(&policy("Manage"), &plan(vec![]), &keys(&[]));
        assert_eq!(
            said(&c),
            [
                (READY, true, "Ready"),
                (SYNCED, true, "Applied"),
                (CHANGES_PENDING, false, "NoChanges"),
                (STALLED, false, "NotStalled"),
                (DRIFTED, false, "NoDrift"),
                (EXPIRING, false, "NotExpiring"),
            ]
        );
        assert_eq!(
            c[0].message,
            "2 key(s) in place and written to their Secrets"
        );
    }

    #[test]
    fn drift_is_repaired_when_managed_and_pending_when_observed() {
        let drift = || plan(vec![update("reader"), update("writer")]);
        let managed = settled(&policy("Manage"), &drift(), &keys(&[]));
        assert_eq!(
            said(&managed),
            [
                (READY, true, "Ready"),
                (SYNCED, true, "Applied"),
                (CHANGES_PENDING, false, "NoChanges"),
                (STALLED, false, "NotStalled"),
                (DRIFTED, true, "DriftRepaired"),
                (EXPIRING, false, "NotExpiring"),
            ]
        );
        assert_eq!(
            managed[4].message,
            "changed in the CMS outside keyward: reader, writer"
        );
        let observed = settled(&policy("ObserveOnly"), &drift(), &keys(&[]));
        assert_eq!(
            said(&observed),
            [
                (READY, true, "ChangesPending"),
                (SYNCED, false, "ObserveOnly"),
                (CHANGES_PENDING, true, "ObserveOnly"),
                (STALLED, false, "NotStalled"),
                (DRIFTED, true, "DriftFound"),
                (EXPIRING, false, "NotExpiring"),
            ]
        );
        let waits = observed
            .iter()
            .find(|c| c.type_ == CHANGES_PENDING)
            .unwrap();
        assert_eq!(
            waits.message,
            "ObserveOnly: 2 change(s) in status.pendingChanges are not applied"
        );
        // Observed and in sync: ready, nothing pending.
        let quiet = settled(&policy("ObserveOnly"), &plan(vec![]), &keys(&[]));
        assert_eq!(of(&quiet, READY), (true, "Ready"));
        assert_eq!(of(&quiet, SYNCED), (true, "ObserveOnly"));
        assert_eq!(of(&quiet, CHANGES_PENDING), (false, "NoChanges"));
        // A pending change other than drift: not Drifted.
        let revoke = PlanAction::Revoke {
            id: "x".into(),
            name: "old".into(),
            policy: "ns/p".into(),
            reason: String::new(),
            observe_only: true,
        };
        let pending = settled(&policy("ObserveOnly"), &plan(vec![revoke]), &keys(&[]));
        assert_eq!(of(&pending, READY), (true, "ChangesPending"));
        assert_eq!(of(&pending, CHANGES_PENDING), (true, "ObserveOnly"));
        assert_eq!(of(&pending, DRIFTED), (false, "NoDrift"));
    }

    #[test]
    fn keys_in_their_reminder_window_are_named() {
        let c = settled(
            &policy("Manage"),
            &plan(vec![]),
            &keys(&["a expires at x", "b expires at y"]),
        );
        assert_eq!(of(&c, EXPIRING), (true, "ExpiringSoon"));
        let expiring = c.iter().find(|c| c.type_ == EXPIRING).unwrap();
        assert_eq!(expiring.message, "a expires at x; b expires at y");
    }

    #[test]
    fn each_kind_of_change_has_its_own_event_reason() {
        let k = desired("").keys[0].clone();
        let reasons: BTreeSet<&str> = [
            PlanAction::Create { key: k.clone() },
            update("k"),
            PlanAction::Rotate {
                key: k.clone(),
                id: "i".into(),
                reason: String::new(),
                grace_seconds: 0,
                expiring: false,
            },
            PlanAction::Replace {
                key: k.clone(),
                old_id: "i".into(),
                diff: String::new(),
            },
            PlanAction::WriteSecret {
                key: k,
                id: "i".into(),
                reason: String::new(),
            },
            PlanAction::Revoke {
                id: "i".into(),
                name: "n".into(),
                policy: "ns/p".into(),
                reason: String::new(),
                observe_only: false,
            },
            PlanAction::SetCors {
                policy: "ns/p".into(),
                owner: "o".into(),
                from: BTreeSet::new(),
                to: BTreeSet::new(),
                observe_only: false,
            },
        ]
        .iter()
        .map(|a| EventReason::of(a).as_str())
        .collect();
        assert_eq!(
            reasons,
            [
                "KeyCreated",
                "KeyUpdated",
                "KeyRotated",
                "KeyReplaced",
                "SecretRewritten",
                "KeyRevoked",
                "SettingsChanged"
            ]
            .into()
        );
    }

    #[test]
    fn a_stopped_policy_says_why_and_whether_it_is_retried() {
        let old = ApiKeyPolicyStatus {
            key_count: Some(3),
            ..Default::default()
        };
        let s = stopped_status(
            &old,
            status::StopReason::CmsUnavailable,
            "down",
            true,
            now(),
        );
        assert_eq!(s.key_count, Some(3), "the rest is kept");
        let by_type = |t: &str| s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap();
        assert_eq!(by_type(READY).status, "False");
        assert_eq!(by_type(READY).reason, "CmsUnavailable");
        assert_eq!(by_type(READY).message, "down; retrying with backoff");
        assert_eq!(by_type(SYNCED).message, "down");
        assert_eq!(by_type(READY).last_transition_time.0, now());
        assert_eq!(by_type(STALLED).status, "False", "retried: not stalled");
        let s = stopped_status(&old, status::StopReason::InvalidSpec, "bad", false, now());
        let by_type = |t: &str| s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap();
        assert_eq!(by_type(READY).message, "bad");
        assert_eq!(by_type(SYNCED).message, "nothing was applied");
        assert_eq!(by_type(SYNCED).status, "False");
        assert_eq!(
            (
                by_type(STALLED).status.as_str(),
                by_type(STALLED).reason.as_str()
            ),
            ("True", "InvalidSpec"),
            "only a change of the spec helps"
        );
    }

    #[test]
    fn times_are_written_to_the_second_and_looks_follow_rotations() {
        let t: Timestamp = "2030-01-01T00:00:00.999Z".parse().unwrap();
        assert_eq!(rfc3339(t), "2030-01-01T00:00:00Z");
        let drift = Duration::from_secs(300);
        let now = now();
        assert_eq!(next_look(drift, None, now), drift);
        let soon = now + jiff::SignedDuration::from_secs(60);
        assert_eq!(next_look(drift, Some(soon), now), Duration::from_secs(60));
        let later = now + jiff::SignedDuration::from_secs(3600);
        assert_eq!(next_look(drift, Some(later), now), drift);
        let past = now - jiff::SignedDuration::from_secs(60);
        assert_eq!(next_look(drift, Some(past), now), Duration::from_secs(1));
        let in_a_moment = now + jiff::SignedDuration::from_millis(200);
        assert_eq!(
            next_look(drift, Some(in_a_moment), now),
            Duration::from_secs(1)
        );
    }
}
