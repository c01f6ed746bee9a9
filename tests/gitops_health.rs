//! Argo CD's view of an ApiKeyPolicy: the chart's Lua health check, run by a Lua interpreter
//! over statuses made with the operator's own condition types and reasons.

use keyward::operator::status::{
    condition, merge, Stated, CHANGES_PENDING, DRIFTED, READY, STALLED, SYNCED,
};
use mlua::{Lua, LuaSerdeExt};
use serde_json::{json, Value};

fn script() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/keyward/files/argocd/health-apikeypolicy.lua"
    );
    std::fs::read_to_string(path).unwrap()
}

/// (status, message) as Argo CD would take them from the script for `obj`.
fn health(obj: &Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(script()).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// A policy at `generation` whose status (observed at `observed`) holds `conditions`.
fn policy(generation: i64, observed: Option<i64>, conditions: Vec<Stated>) -> Value {
    let at = "2030-01-01T00:00:00Z".parse().unwrap();
    let mut status = json!({ "conditions": merge(&[], conditions, at, observed) });
    if let Some(o) = observed {
        status["observedGeneration"] = json!(o);
    }
    json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
        "metadata": {"name": "site", "namespace": "shop", "generation": generation},
        "status": status,
    })
}

#[test]
fn each_state_of_a_policy_has_its_argo_cd_health() {
    let healthy = policy(
        2,
        Some(2),
        vec![
            condition(READY, true, "Ready", "2 key(s) in place"),
            condition(SYNCED, true, "Applied", "the CMS matches the policy"),
            condition(CHANGES_PENDING, false, "NoChanges", "nothing waits"),
            condition(STALLED, false, "NotStalled", "in place"),
            condition(DRIFTED, false, "NoDrift", "none"),
        ],
    );
    assert_eq!(
        health(&healthy),
        ("Healthy".into(), "2 key(s) in place".into())
    );

    // A spec the operator has not seen yet: whatever the old status says.
    let newer = policy(3, Some(2), vec![condition(READY, true, "Ready", "ok")]);
    assert_eq!(health(&newer).0, "Progressing");
    let fresh = json!({"metadata": {"generation": 1}, "kind": "ApiKeyPolicy"});
    assert_eq!(health(&fresh).0, "Progressing");

    // Retried (the CMS is down) or waiting for what it names: progressing, not degraded.
    let retried = policy(
        2,
        Some(2),
        vec![
            condition(READY, false, "CmsUnavailable", "connection refused"),
            condition(STALLED, false, "NotStalled", "retried"),
        ],
    );
    assert_eq!(
        health(&retried),
        (
            "Progressing".into(),
            "CmsUnavailable: connection refused".into()
        )
    );

    // Only a change of the spec helps: degraded, saying why.
    let stalled = policy(
        2,
        Some(2),
        vec![
            condition(
                READY,
                false,
                "InvalidSpec",
                "spec.keys[0]: GET_ALL_DRAFTS requires GET",
            ),
            condition(
                STALLED,
                true,
                "InvalidSpec",
                "spec.keys[0]: GET_ALL_DRAFTS requires GET",
            ),
        ],
    );
    assert_eq!(
        health(&stalled),
        (
            "Degraded".into(),
            "InvalidSpec: spec.keys[0]: GET_ALL_DRAFTS requires GET".into()
        )
    );

    // ObserveOnly changes wait for a person: suspended, never unhealthy.
    let observed = policy(
        2,
        Some(2),
        vec![
            condition(READY, true, "ChangesPending", "1 key(s) in place"),
            condition(
                CHANGES_PENDING,
                true,
                "ObserveOnly",
                "ObserveOnly: 1 change(s)",
            ),
            condition(STALLED, false, "NotStalled", "in place"),
        ],
    );
    assert_eq!(
        health(&observed),
        (
            "Suspended".into(),
            "ObserveOnly: ObserveOnly: 1 change(s)".into()
        )
    );
}
