//! Conditions people can act on, compared without timestamps so an unchanged policy writes no
//! status. They are Kubernetes' own `Condition`s; a transition time moves only when a
//! condition's status does.

use crate::policy::{ApiKeyPolicyStatus, Condition};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DRIFTED: &str = "Drifted";
pub const EXPIRING: &str = "KeyExpiringSoon";
/// kstatus's terminal condition: true when only a change of the spec (or of what it names) can
/// help, so Flux stops waiting and Argo CD shows Degraded.
pub const STALLED: &str = "Stalled";
/// ObserveOnly changes wait for a person; the policy is still Ready.
pub const CHANGES_PENDING: &str = "ChangesPending";
/// An ObserveOnly policy tracking keys made by hand (`adopt.valueFrom`): true when the CMS
/// refuses a value in use (401). Only on policies that have such a key.
pub const VALUE_REJECTED: &str = "ValueRejected";

/// The reasons of a policy that ran to the end, one per state of each condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SettledReason {
    /// Ready: the keys are in place.
    Ready,
    /// Ready, with ObserveOnly changes waiting for a person.
    ChangesPending,
    /// Synced and ChangesPending under `managementPolicy: ObserveOnly`.
    ObserveOnly,
    Applied,
    NoChanges,
    NotStalled,
    NoDrift,
    DriftFound,
    DriftRepaired,
    NotExpiring,
    ExpiringSoon,
    /// ValueRejected: every tracked value works.
    ValuesWork,
    /// ValueRejected: the CMS refuses a tracked value.
    Rejected,
}

impl SettledReason {
    /// The condition's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::ChangesPending => "ChangesPending",
            Self::ObserveOnly => "ObserveOnly",
            Self::Applied => "Applied",
            Self::NoChanges => "NoChanges",
            Self::NotStalled => "NotStalled",
            Self::NoDrift => "NoDrift",
            Self::DriftFound => "DriftFound",
            Self::DriftRepaired => "DriftRepaired",
            Self::NotExpiring => "NotExpiring",
            Self::ExpiringSoon => "ExpiringSoon",
            Self::ValuesWork => "ValuesWork",
            Self::Rejected => "Rejected",
        }
    }
}

/// Why a policy stopped: the reason of its Ready=False (and Synced, and Stalled when retrying
/// cannot help) condition, as the README's troubleshooting table lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    InvalidSpec,
    NotAllowed,
    ConnectionNotAllowed,
    ConnectionNotFound,
    NoConnection,
    NoCredentials,
    EndpointNotAllowed,
    TlsError,
    SecretConflict,
    Conflict,
    CmsUnavailable,
    ApplyFailed,
    PublishFailed,
    DeletionBlocked,
}

impl StopReason {
    /// The condition's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::NotAllowed => "NotAllowed",
            Self::ConnectionNotAllowed => "ConnectionNotAllowed",
            Self::ConnectionNotFound => "ConnectionNotFound",
            Self::NoConnection => "NoConnection",
            Self::NoCredentials => "NoCredentials",
            Self::EndpointNotAllowed => "EndpointNotAllowed",
            Self::TlsError => "TlsError",
            Self::SecretConflict => "SecretConflict",
            Self::Conflict => "Conflict",
            Self::CmsUnavailable => "CmsUnavailable",
            Self::ApplyFailed => "ApplyFailed",
            Self::PublishFailed => "PublishFailed",
            Self::DeletionBlocked => "DeletionBlocked",
        }
    }

    /// Whether retrying cannot fix it (kstatus's Stalled): a spec the validator or the CMS
    /// refuses, ceilings or admission that exclude it, a Secret or key name someone else
    /// holds, an endpoint or certificate the operator will not use, and a deletion that cannot
    /// revoke.
    pub fn stalls(self) -> bool {
        matches!(
            self,
            Self::InvalidSpec
                | Self::NotAllowed
                | Self::ConnectionNotAllowed
                | Self::SecretConflict
                | Self::Conflict
                | Self::EndpointNotAllowed
                | Self::TlsError
                | Self::DeletionBlocked
        )
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition as a step states it, before it gets its transition time.
#[derive(Clone, Debug, PartialEq)]
pub struct Stated {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

pub fn condition(
    type_: &'static str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
) -> Stated {
    Stated {
        type_,
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

fn status_str(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// The conditions to write: `lastTransitionTime` carried over from `old` when a condition's
/// status did not change, `now` on the ones that did.
pub fn merge(
    old: &[Condition],
    new: Vec<Stated>,
    now: Timestamp,
    generation: Option<i64>,
) -> Vec<Condition> {
    new.into_iter()
        .map(|c| {
            let status = status_str(c.status);
            let last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: c.type_.into(),
                status: status.into(),
                reason: c.reason,
                message: c.message,
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// Kontent.ai's reminder schedule: a key living under a day is flagged at once, 1-7 days one
/// day before expiry, longer one week before.
pub fn reminder_window(lifetime: SignedDuration) -> SignedDuration {
    if lifetime < crate::model::days(1) {
        lifetime
    } else if lifetime <= crate::model::days(7) {
        crate::model::days(1)
    } else {
        crate::model::days(7)
    }
}

/// Whether a key of `lifetime` with `left` to live is within its reminder window; a key
/// without a declared lifetime never is.
pub fn expiring_soon(lifetime: Option<SignedDuration>, left: SignedDuration) -> bool {
    lifetime.is_some_and(|l| left <= reminder_window(l))
}

/// What a condition says, without its times.
fn said(c: &Condition) -> (&str, &str, &str, &str) {
    (&c.type_, &c.status, &c.reason, &c.message)
}

/// Whether two statuses say the same, transition times and condition order aside: an unchanged
/// policy writes no status.
pub fn same(old: &ApiKeyPolicyStatus, new: &ApiKeyPolicyStatus) -> bool {
    fn conditions(s: &ApiKeyPolicyStatus) -> Vec<(&str, &str, &str, &str)> {
        let mut c: Vec<_> = s.conditions.iter().map(said).collect();
        c.sort();
        c
    }
    conditions(old) == conditions(new)
        && old.observed_generation == new.observed_generation
        && old.keys == new.keys
        && old.key_count == new.key_count
        && old.pending_changes == new.pending_changes
        && old.connection == new.connection
        && old.last_manual_rotation == new.last_manual_rotation
}

/// What to write over `old`: `new` with the conditions it does not mention kept, or nothing
/// when it says the same; with the Ready condition when it flipped (an event tells of it).
pub fn to_write(
    old: &ApiKeyPolicyStatus,
    mut new: ApiKeyPolicyStatus,
) -> Option<(ApiKeyPolicyStatus, Option<Condition>)> {
    for c in &old.conditions {
        if !new.conditions.iter().any(|n| n.type_ == c.type_) {
            new.conditions.push(c.clone());
        }
    }
    if same(old, &new) {
        return None;
    }
    let flipped = new
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .filter(|c| transitioned(&old.conditions, c))
        .cloned();
    Some((new, flipped))
}

/// Whether a condition flipped (for events on transitions only).
pub fn transitioned(old: &[Condition], new: &Condition) -> bool {
    old.iter()
        .find(|o| o.type_ == new.type_)
        .is_none_or(|o| o.status != new.status || o.reason != new.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_times_only_move_on_change() {
        let (t1, t2, t3) = (
            at("2030-01-01T00:00:01Z"),
            at("2030-01-01T00:00:02Z"),
            at("2030-01-01T00:00:03Z"),
        );
        let first = merge(
            &[],
            vec![condition(READY, true, "Synced", "ok")],
            t1,
            Some(1),
        );
        assert_eq!(first[0].last_transition_time, Time(t1));
        assert_eq!(first[0].status, "True");
        let same_status = merge(
            &first,
            vec![condition(READY, true, "Synced", "ok, again")],
            t2,
            Some(2),
        );
        assert_eq!(same_status[0].last_transition_time, Time(t1));
        assert_eq!(same_status[0].observed_generation, Some(2));
        let flipped = merge(
            &same_status,
            vec![condition(READY, false, "CmsUnavailable", "down")],
            t3,
            Some(2),
        );
        assert_eq!(flipped[0].last_transition_time, Time(t3));
        assert!(transitioned(&same_status, &flipped[0]));
        assert!(!transitioned(&first, &same_status[0]));
    }

    #[test]
    fn statuses_compare_without_times() {
        let now = at("2030-01-01T00:00:01Z");
        let s = |msg: &str, t: Timestamp| ApiKeyPolicyStatus {
            conditions: merge(&[], vec![condition(READY, true, "Ready", msg)], t, Some(1)),
            ..Default::default()
        };
        assert!(same(&s("ok", now), &s("ok", at("2031-01-01T00:00:00Z"))));
        assert!(!same(&s("ok", now), &s("other", now)));
    }

    #[test]
    fn reminders_follow_kontent() {
        assert_eq!(
            reminder_window(SignedDuration::from_hours(12)),
            SignedDuration::from_hours(12)
        );
        assert_eq!(
            reminder_window(crate::model::days(3)),
            crate::model::days(1)
        );
        assert_eq!(
            reminder_window(crate::model::days(90)),
            crate::model::days(7)
        );
    }

    #[test]
    fn only_what_retrying_cannot_fix_stalls() {
        use StopReason::*;
        for r in [
            InvalidSpec,
            NotAllowed,
            ConnectionNotAllowed,
            SecretConflict,
            Conflict,
            EndpointNotAllowed,
            TlsError,
            DeletionBlocked,
        ] {
            assert!(r.stalls(), "{r}");
        }
        for r in [
            CmsUnavailable,
            ConnectionNotFound,
            NoConnection,
            NoCredentials,
            ApplyFailed,
            PublishFailed,
        ] {
            assert!(!r.stalls(), "{r}");
        }
    }

    #[test]
    fn reminder_windows_at_their_edges() {
        let day = crate::model::days(1);
        assert_eq!(reminder_window(day), day, "a day-long key: one day before");
        assert_eq!(reminder_window(crate::model::days(7)), day);
        assert_eq!(
            reminder_window(crate::model::days(7) + SignedDuration::from_secs(1)),
            crate::model::days(7)
        );
        assert!(expiring_soon(
            Some(crate::model::days(30)),
            crate::model::days(7)
        ));
        assert!(!expiring_soon(
            Some(crate::model::days(30)),
            crate::model::days(7) + SignedDuration::from_secs(1)
        ));
        assert!(!expiring_soon(None, SignedDuration::ZERO), "no lifetime");
    }

    fn status_with(c: Vec<Stated>) -> ApiKeyPolicyStatus {
        ApiKeyPolicyStatus {
            conditions: merge(&[], c, at("2030-01-01T00:00:01Z"), Some(1)),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn every_field_of_a_status_counts_but_condition_order_and_times() {
        let base = status_with(vec![
            condition(READY, true, "Ready", "ok"),
            condition(SYNCED, true, "Applied", "ok"),
        ]);
        let mut reordered = base.clone();
        reordered.conditions.reverse();
        assert!(same(&base, &reordered));
        let differs: Vec<fn(&mut ApiKeyPolicyStatus)> = vec![
            |s| s.conditions[0].status = "False".into(),
            |s| s.conditions[0].reason = "Other".into(),
            |s| s.conditions[0].type_ = "Other".into(),
            |s| s.observed_generation = Some(2),
            |s| s.keys.push(Default::default()),
            |s| s.key_count = Some(1),
            |s| s.pending_changes.push("+ create".into()),
            |s| {
                s.connection = crate::policy::KeysConnection::of(
                    &crate::model::desired::ConnectionId::ClusterCmsConnection { name: "c".into() },
                )
            },
        ];
        for (i, change) in differs.into_iter().enumerate() {
            let mut other = base.clone();
            change(&mut other);
            assert!(!same(&base, &other), "change {i} is seen");
        }
    }

    #[test]
    fn a_write_keeps_unmentioned_conditions_and_tells_when_ready_flips() {
        let old = status_with(vec![
            condition(READY, true, "Ready", "ok"),
            condition(DRIFTED, false, "NoDrift", "none"),
        ]);
        // Saying the same (Drifted kept from before) writes nothing.
        let again = status_with(vec![condition(READY, true, "Ready", "ok")]);
        assert_eq!(to_write(&old, again), None);

        let stopped = status_with(vec![condition(READY, false, "CmsUnavailable", "down")]);
        let (new, flipped) = to_write(&old, stopped).expect("a change");
        assert_eq!(new.conditions.len(), 2, "Drifted kept");
        assert!(new.conditions.iter().any(|c| c.type_ == DRIFTED));
        assert_eq!(flipped.map(|c| c.reason), Some("CmsUnavailable".into()));

        // A change that leaves Ready as it was: written, no event.
        let drifted = status_with(vec![
            condition(READY, true, "Ready", "ok"),
            condition(DRIFTED, true, "DriftRepaired", "x"),
        ]);
        let (_, flipped) = to_write(&old, drifted).expect("a change");
        assert_eq!(flipped, None);

        // Same status, another reason: a transition for events.
        let other_reason = [condition(READY, true, "ChangesPending", "ok")];
        let with_reason = merge(
            &old.conditions,
            other_reason.to_vec(),
            at("2030-01-02T00:00:00Z"),
            Some(1),
        );
        assert!(transitioned(&old.conditions, &with_reason[0]));
        assert_eq!(
            with_reason[0].last_transition_time, old.conditions[0].last_transition_time,
            "the status did not change"
        );
        assert!(transitioned(&[], &with_reason[0]), "a first condition");
    }
}
