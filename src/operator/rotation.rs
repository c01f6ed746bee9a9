//! Rotation asked for on a policy: every new value of the `keyward.dev/rotate` annotation gives
//! the policy's keys (or those `keyward.dev/rotate-keys` names) a new value in the next
//! reconcile, with each key's overlap or, with `keyward.dev/rotate-now: "true"`, none. The
//! status records the value acted on, so each is acted on once, restarts included.

use crate::plan::{KeyTarget, RotateNow};
use crate::policy::ApiKeyPolicy;
use kube::ResourceExt;

/// Its every new value asks for a rotation.
pub const ROTATE: &str = "keyward.dev/rotate";
/// The keys to rotate, by name, comma-separated (default: every key of the policy).
pub const ROTATE_KEYS: &str = "keyward.dev/rotate-keys";
/// `"true"`: no overlap, the old values stop at once (a leaked key).
pub const ROTATE_NOW: &str = "keyward.dev/rotate-now";

/// The rotation the policy's annotations ask for that its status has not recorded yet: the
/// request's value and what it names.
pub fn asked(p: &ApiKeyPolicy) -> Option<(String, RotateNow)> {
    let annotations = p.annotations();
    let request = annotations.get(ROTATE)?.trim();
    let done = p
        .status
        .as_ref()
        .and_then(|s| s.last_manual_rotation.as_ref());
    if request.is_empty() || done.is_some_and(|d| d.request == request) {
        return None;
    }
    let id = p.policy_id();
    let target = |key: Option<&str>| KeyTarget {
        namespace: id.namespace.clone(),
        policy: id.name.clone(),
        key: key.map(str::to_owned),
    };
    let named: Vec<KeyTarget> = annotations
        .get(ROTATE_KEYS)
        .map(|keys| {
            keys.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| target(Some(k)))
                .collect()
        })
        .unwrap_or_default();
    let targets = match named.is_empty() {
        true => vec![target(None)],
        false => named,
    };
    let at_once = annotations.get(ROTATE_NOW).map(|v| v.trim()) == Some("true");
    Some((request.to_owned(), RotateNow { targets, at_once }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ApiKeyPolicyStatus, ManualRotation};

    fn policy(annotations: serde_json::Value, done: Option<&str>) -> ApiKeyPolicy {
        let mut p: ApiKeyPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {"keys": []}
        }))
        .unwrap();
        p.status = done.map(|r| ApiKeyPolicyStatus {
            last_manual_rotation: Some(ManualRotation {
                request: r.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn each_new_value_is_asked_once_for_the_keys_it_names() {
        let all = policy(serde_json::json!({ROTATE: "1"}), None);
        let (request, ask) = asked(&all).expect("asked");
        assert_eq!(request, "1");
        assert_eq!(ask.targets.len(), 1);
        assert_eq!(ask.targets[0].to_string(), "shop/web");
        assert!(!ask.at_once);
        assert!(asked(&policy(serde_json::json!({ROTATE: "1"}), Some("1"))).is_none());
        assert!(asked(&policy(serde_json::json!({ROTATE: "2"}), Some("1"))).is_some());
        assert!(asked(&policy(serde_json::json!({ROTATE: " "}), None)).is_none());
        assert!(asked(&policy(serde_json::json!({}), None)).is_none());
        let some = policy(
            serde_json::json!({ROTATE: "x", ROTATE_KEYS: "reader, writer,", ROTATE_NOW: "true"}),
            None,
        );
        let (_, ask) = asked(&some).unwrap();
        let named: Vec<String> = ask.targets.iter().map(|t| t.to_string()).collect();
        assert_eq!(named, ["shop/web/reader", "shop/web/writer"]);
        assert!(ask.at_once);
    }
}
