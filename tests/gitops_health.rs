//! Argo CD's view of keyward's kinds: the chart's Lua health checks, run by a Lua interpreter
//! over statuses made with the operator's own condition types and reasons.

use keyward::operator::connection_status::{status_after, ConnectionReason, Found};
use keyward::operator::status::{
    condition, merge, Stated, CHANGES_PENDING, DRIFTED, READY, STALLED, SYNCED,
};
use mlua::{Lua, LuaSerdeExt};
use serde_json::{json, Value};

fn script(name: &str) -> String {
    let path = format!(
        "{}/charts/keyward/files/argocd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

/// (status, message) as Argo CD would take them from the script `name` for `obj`.
fn health_by(name: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(script(name)).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

fn health(obj: &Value) -> (String, String) {
    health_by("health-apikeypolicy.lua", obj)
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

/// A connection at `generation`, checked at `observed`, that found `found`.
fn connection(kind: &str, generation: i64, observed: i64, found: &Found) -> Value {
    let at = "2030-01-01T00:00:00Z".parse().unwrap();
    let status = status_after(None, found, Some(observed), 2, at);
    json!({
        "apiVersion": "keyward.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "main", "generation": generation},
        "status": status,
    })
}

#[test]
fn each_state_of_a_connection_has_its_argo_cd_health() {
    let ok = Found {
        ready: true,
        reason: ConnectionReason::Connected,
        message: "keyward answered at http://cms:8780".into(),
    };
    let refused = Found {
        ready: false,
        reason: ConnectionReason::CredentialRefused,
        message: "http://cms:8780 answered 401".into(),
    };
    for kind in ["CmsConnection", "ClusterCmsConnection"] {
        let h = |v: &Value| health_by("health-connection.lua", v);
        assert_eq!(
            h(&connection(kind, 1, 1, &ok)),
            (
                "Healthy".into(),
                "keyward answered at http://cms:8780".into()
            )
        );
        assert_eq!(
            h(&connection(kind, 1, 1, &refused)),
            (
                "Degraded".into(),
                "CredentialRefused: http://cms:8780 answered 401".into()
            )
        );
        assert_eq!(
            h(&connection(kind, 2, 1, &ok)).0,
            "Progressing",
            "not checked yet"
        );
        let fresh = json!({"kind": kind, "metadata": {"generation": 1}});
        assert_eq!(h(&fresh).0, "Progressing");
    }
}
