//! What a refused policy loses, and when: the decisions of offboarding, kept free of the API
//! server and the CMS so each can be checked on its own (the reconcile acts on them).
//!
//! A policy that holds something on a connection (its status records the connection) and is
//! refused because its namespace is no longer admitted, its declarations are over tightened
//! ceilings, or it moved away to a connection that does not exist, keeps everything for the
//! offboarding grace; then what it may no longer hold is taken back.

use super::status::StopReason;
use crate::model::desired::ConnectionId;
use crate::policy::{ApiKeyPolicyStatus, KeyDecl};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;

/// Whether a refusal for `reason` ends, after the grace, with what the policy holds on
/// `recorded` (the connection its status records) being taken back. `named_now` is the
/// connection its spec names today: a refusal for a missing connection takes back only what
/// was left on another one (the one named may come back).
pub fn takes_back(
    reason: StopReason,
    recorded: Option<&ConnectionId>,
    named_now: Option<&ConnectionId>,
) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    match reason {
        StopReason::ConnectionNotAllowed | StopReason::NotAllowed => true,
        StopReason::ConnectionNotFound => named_now != Some(recorded),
        _ => false,
    }
}

/// When the grace began: the time status recorded, unless it is unreadable or in the future
/// (a status written by hand, or by a clock that ran ahead), then `now`.
pub fn refused_since(recorded: Option<&str>, now: Timestamp) -> Timestamp {
    recorded
        .and_then(|s| s.parse::<Timestamp>().ok())
        .filter(|s| *s <= now)
        .unwrap_or(now)
}

/// Whether the grace that began at `since` is over at `now`.
pub fn grace_over(since: Timestamp, now: Timestamp, grace: std::time::Duration) -> bool {
    now.duration_since(since) >= SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX)
}

/// What an offboarding takes back: every key (`keys: None`) or the keys of these declared
/// names, and whether the policy's CORS origins and public endpoints go too.
#[derive(Debug, PartialEq)]
pub struct Beyond {
    pub keys: Option<BTreeSet<String>>,
    pub settings: bool,
}

impl Beyond {
    pub fn everything() -> Beyond {
        Beyond {
            keys: None,
            settings: true,
        }
    }

    /// What is over the ceilings, from the paths the ceilings check refused (`path: reason`):
    /// the keys whose declarations are, the settings when they are, and everything when the
    /// key count is (no one key is the one too many).
    pub fn over_ceilings(keys: &[KeyDecl], over: &[String]) -> Beyond {
        let mut names = BTreeSet::new();
        let mut settings = false;
        for item in over {
            let path = item.split(':').next().unwrap_or_default();
            if path == "spec.keys" {
                return Beyond::everything();
            }
            if path.starts_with("spec.cors") || path.starts_with("spec.publicEndpoints") {
                settings = true;
            }
            let index = path
                .strip_prefix("spec.keys[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|i| i.parse::<usize>().ok());
            if let Some(k) = index.and_then(|i| keys.get(i)) {
                names.insert(k.name.clone());
            }
        }
        Beyond {
            keys: Some(names),
            settings,
        }
    }

    /// Whether the key declared as `name` is taken back.
    pub fn takes(&self, name: &str) -> bool {
        self.keys.as_ref().is_none_or(|names| names.contains(name))
    }
}

/// The status after an offboarding took back `beyond` (the keys in `revoked` among them):
/// the keys revoked leave it, and the connection too when everything went.
pub fn after_offboarding(
    mut status: ApiKeyPolicyStatus,
    beyond: &Beyond,
    revoked: &BTreeSet<String>,
) -> ApiKeyPolicyStatus {
    status.keys.retain(|k| !revoked.contains(&k.name));
    status.key_count = Some(i64::try_from(status.keys.len()).unwrap_or(i64::MAX));
    if beyond.keys.is_none() {
        status.connection = None;
    }
    // Taken back: a policy that stays refused starts a new grace for what may be over next.
    status.refused_since = None;
    status
}

/// Whether a policy with this status never held a key: its deletion needs nothing of its
/// connection.
pub fn never_made_a_key(status: Option<&ApiKeyPolicyStatus>) -> bool {
    status.is_none_or(|s| s.keys.is_empty() && s.key_count.unwrap_or(0) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{KeyStatus, KeysConnection};

    fn conn(name: &str) -> ConnectionId {
        ConnectionId::CmsConnection {
            namespace: "team".into(),
            name: name.into(),
        }
    }

    #[test]
    fn only_a_policy_that_holds_something_loses_it_and_only_for_these_reasons() {
        use StopReason::*;
        let (a, b) = (conn("a"), conn("b"));
        for reason in [ConnectionNotAllowed, NotAllowed] {
            assert!(takes_back(reason, Some(&a), Some(&a)), "{reason}");
            assert!(
                !takes_back(reason, None, Some(&a)),
                "{reason}: holds nothing"
            );
        }
        // Moved away to a connection that does not exist: what is on the old one goes.
        assert!(takes_back(ConnectionNotFound, Some(&a), Some(&b)));
        assert!(takes_back(ConnectionNotFound, Some(&a), None));
        // The connection it holds keys on is missing: it may come back, nothing is taken.
        assert!(!takes_back(ConnectionNotFound, Some(&a), Some(&a)));
        for reason in [
            InvalidSpec,
            CmsUnavailable,
            Conflict,
            SecretConflict,
            NoCredentials,
        ] {
            assert!(!takes_back(reason, Some(&a), Some(&b)), "{reason}");
        }
    }

    #[test]
    fn the_grace_counts_from_a_recorded_past_time_and_ends_at_its_length() {
        let now: Timestamp = "2030-01-01T12:00:00Z".parse().unwrap();
        let before = "2030-01-01T11:00:00Z";
        assert_eq!(refused_since(Some(before), now), before.parse().unwrap());
        assert_eq!(refused_since(Some("2030-01-01T12:00:00Z"), now), now);
        assert_eq!(refused_since(Some("2030-01-01T13:00:00Z"), now), now);
        assert_eq!(refused_since(Some("yesterday"), now), now);
        assert_eq!(refused_since(None, now), now);

        let hour = std::time::Duration::from_secs(3600);
        let since: Timestamp = before.parse().unwrap();
        assert!(grace_over(since, now, hour), "exactly the grace");
        assert!(!grace_over(
            since,
            now,
            hour + std::time::Duration::from_secs(1)
        ));
        assert!(grace_over(
            since,
            now,
            hour - std::time::Duration::from_secs(1)
        ));
        assert!(grace_over(now, now, std::time::Duration::ZERO));
        assert!(
            !grace_over(now, now, std::time::Duration::MAX),
            "never over"
        );
    }

    fn key(name: &str) -> KeyDecl {
        serde_json::from_value(serde_json::json!({ "name": name, "secret": { "name": name } }))
            .expect("a key")
    }

    #[test]
    fn what_is_over_the_ceilings_is_what_goes() {
        let keys = [key("reader"), key("writer"), key("admin")];
        let over = |paths: &[&str]| {
            Beyond::over_ceilings(
                &keys,
                &paths
                    .iter()
                    .map(|p| format!("{p}: over"))
                    .collect::<Vec<_>>(),
            )
        };
        let b = over(&["spec.keys[1].permissions", "spec.keys[2]"]);
        assert_eq!(
            b,
            Beyond {
                keys: Some(["writer".into(), "admin".into()].into()),
                settings: false
            }
        );
        assert!(b.takes("writer") && b.takes("admin") && !b.takes("reader"));
        assert_eq!(over(&["spec.keys"]), Beyond::everything());
        assert_eq!(
            over(&["spec.cors.origins[0]", "spec.keys[9].type"]),
            Beyond {
                keys: Some(BTreeSet::new()),
                settings: true
            }
        );
        assert!(over(&["spec.publicEndpoints[0]"]).settings);
        assert!(!over(&["spec.keys[x]", "spec.environments"]).settings);
        assert_eq!(over(&["spec.keys[x]"]).keys, Some(BTreeSet::new()));
        assert!(Beyond::everything().takes("anything") && Beyond::everything().settings);
    }

    fn status(keys: &[&str]) -> ApiKeyPolicyStatus {
        ApiKeyPolicyStatus {
            keys: keys
                .iter()
                .map(|n| KeyStatus {
                    name: (*n).into(),
                    ..Default::default()
                })
                .collect(),
            key_count: Some(keys.len() as i64),
            connection: KeysConnection::of(&conn("a")),
            refused_since: Some("2030-01-01T11:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn status_after_an_offboarding_lists_what_is_left() {
        let part = Beyond {
            keys: Some(["writer".into()].into()),
            settings: false,
        };
        let after = after_offboarding(
            status(&["reader", "writer"]),
            &part,
            &["writer".into()].into(),
        );
        let names: Vec<_> = after.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["reader"]);
        assert_eq!(after.key_count, Some(1));
        assert!(after.connection.is_some(), "still holds a key there");
        assert_eq!(
            after.refused_since, None,
            "a new grace for what is over next"
        );

        let all = after_offboarding(
            status(&["reader", "writer"]),
            &Beyond::everything(),
            &["reader".into(), "writer".into()].into(),
        );
        assert!(all.keys.is_empty());
        assert_eq!(all.key_count, Some(0));
        assert_eq!(all.connection, None);
    }

    #[test]
    fn a_policy_never_made_a_key_when_its_status_lists_none() {
        assert!(never_made_a_key(None));
        assert!(never_made_a_key(Some(&ApiKeyPolicyStatus::default())));
        assert!(never_made_a_key(Some(&ApiKeyPolicyStatus {
            key_count: Some(0),
            ..Default::default()
        })));
        assert!(!never_made_a_key(Some(&status(&["reader"]))));
        let counted_only = ApiKeyPolicyStatus {
            key_count: Some(2),
            ..Default::default()
        };
        assert!(!never_made_a_key(Some(&counted_only)));
        let listed_only = ApiKeyPolicyStatus {
            key_count: None,
            ..status(&["reader"])
        };
        assert!(!never_made_a_key(Some(&listed_only)));
    }
}
