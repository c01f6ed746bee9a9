//! Conditions people can act on, compared without timestamps so an unchanged policy writes no
//! status.

use crate::policy::{ApiKeyPolicyStatus, Condition};
use jiff::SignedDuration;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DRIFTED: &str = "Drifted";
pub const EXPIRING: &str = "KeyExpiringSoon";

pub fn condition(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Carries `lastTransitionTime` over from `old` when a condition's status did not change, and
/// stamps `now` on the ones that did.
pub fn merge(
    old: &[Condition],
    new: Vec<Condition>,
    now: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            let prev = old.iter().find(|o| o.type_ == c.type_);
            c.last_transition_time = match prev {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => Some(now.to_owned()),
            };
            c.observed_generation = generation;
            c
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

/// Whether two statuses say the same, transition times and condition order aside: an unchanged
/// policy writes no status.
pub fn same(old: &ApiKeyPolicyStatus, new: &ApiKeyPolicyStatus) -> bool {
    let strip = |s: &ApiKeyPolicyStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
            c.observed_generation = None;
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(old) == strip(new) && old.observed_generation == new.observed_generation
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

    #[test]
    fn transition_times_only_move_on_change() {
        let first = merge(
            &[],
            vec![condition(READY, true, "Synced", "ok")],
            "t1",
            Some(1),
        );
        assert_eq!(first[0].last_transition_time.as_deref(), Some("t1"));
        let same = merge(
            &first,
            vec![condition(READY, true, "Synced", "ok, again")],
            "t2",
            Some(2),
        );
        assert_eq!(same[0].last_transition_time.as_deref(), Some("t1"));
        let flipped = merge(
            &same,
            vec![condition(READY, false, "CmsUnavailable", "down")],
            "t3",
            Some(2),
        );
        assert_eq!(flipped[0].last_transition_time.as_deref(), Some("t3"));
        assert!(transitioned(&same, &flipped[0]));
        assert!(!transitioned(&first, &same[0]));
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
}
