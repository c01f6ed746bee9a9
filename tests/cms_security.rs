//! The reference CMS under attack: each test sends the attack itself over real HTTP and checks
//! that it is refused and that nothing changed.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Cms, Resp};

/// A refusal for escalation: 403, `reason: escalation`, the missing right named, no key value.
fn assert_escalation(r: &Resp, missing: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["error"], "forbidden", "{}", r.text);
    assert_eq!(r.body["reason"], "escalation", "{}", r.text);
    assert_eq!(r.body["missing"], missing, "{}", r.text);
    assert!(r.body.get("key").is_none(), "{}", r.text);
}

async fn key_record(cms: &Cms, id: &str) -> Value {
    let r = cms
        .admin(Method::GET, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test]
async fn a_keys_manage_key_cannot_widen_itself_or_mint_more_than_it_holds() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (mid, mgr) = cms
        .key(json!({"name": "mgr", "kind": "management",
            "managementPermissions": ["keys:manage", "content:read"]}))
        .await;
    let before = key_record(&cms, &mid).await;

    // Widening itself.
    let r = cms
        .req(
            Method::PATCH,
            &format!("/v1/keys/{mid}"),
            Some(&mgr),
            Some(json!({"managementPermissions": ["keys:manage", "content:read", "settings:manage"]})),
        )
        .await;
    assert_escalation(&r, "management permission 'settings:manage'");
    assert_eq!(key_record(&cms, &mid).await, before, "the key is unchanged");
    let r = cms
        .req(
            Method::PUT,
            "/v1/cors",
            Some(&mgr),
            Some(json!({"origins": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // Minting what it lacks: `*`, a scope, a write right.
    for (spec, missing) in [
        (json!({"name": "all", "scopes": ["*"]}), "POST on every API"),
        (
            json!({"name": "exp", "scopes": ["export:write"]}),
            "scope 'export:write'",
        ),
        (
            json!({"name": "w", "apiPermissions": [{"api": "blog", "permissions": ["GET", "POST"]}]}),
            "POST on API 'blog'",
        ),
        (
            json!({"name": "m2", "kind": "management", "managementPermissions": ["members:manage"]}),
            "management permission 'members:manage'",
        ),
    ] {
        let r = cms
            .req(Method::POST, "/v1/keys", Some(&mgr), Some(spec))
            .await;
        assert_escalation(&r, missing);
    }
    let listed = cms.admin(Method::GET, "/v1/keys", None).await.body;
    assert_eq!(
        listed["keys"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );

    // What it holds it may hand out.
    let r = cms
        .req(
            Method::POST,
            "/v1/keys",
            Some(&mgr),
            Some(json!({"name": "reader", "defaultPermissions": ["GET", "GET_ALL_DRAFTS"], "scopes": ["content:read"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Keys that hold more than it cannot be changed, regenerated or revoked by it.
    let (star_id, star) = cms.key(json!({"name": "star", "scopes": ["*"]})).await;
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/v1/keys/{star_id}"),
            Some(json!({"description": "mine now"})),
        ),
        (Method::POST, format!("/v1/keys/{star_id}/regenerate"), None),
        (Method::DELETE, format!("/v1/keys/{star_id}"), None),
    ] {
        let r = cms.req(method, &path, Some(&mgr), body).await;
        assert_escalation(&r, "POST on every API");
    }
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &star).await,
        StatusCode::OK,
        "the `*` key still works"
    );

    // Only the admin token and `*` keys mint `*` keys.
    let r = cms
        .req(
            Method::POST,
            "/v1/keys",
            Some(&star),
            Some(json!({"name": "star2", "scopes": ["*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn personal_keys_and_roles_cannot_outrank_their_maker() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    for (role, body) in [
        (
            "admin",
            json!({"contentPermissions": ["GET", "POST"], "managementPermissions": ["keys:manage", "settings:manage"]}),
        ),
        ("lead", json!({"managementPermissions": ["members:manage"]})),
    ] {
        let r = cms
            .admin(Method::PUT, &format!("/v1/roles/{role}"), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    for (name, role) in [("root", "admin"), ("bob", "lead")] {
        let r = cms
            .admin(
                Method::POST,
                "/v1/members",
                Some(json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    // A keys:manage key learning a stronger member's value through a personal key.
    let (_, mgr) = cms
        .key(json!({"name": "mgr", "kind": "management",
            "managementPermissions": ["keys:manage", "content:read"]}))
        .await;
    let r = cms
        .req(
            Method::POST,
            "/v1/keys",
            Some(&mgr),
            Some(json!({"name": "root-key", "kind": "personal", "owner": "root"})),
        )
        .await;
    assert_escalation(&r, "POST on every API");

    // A personal key with members:manage raising its own member's role.
    let (_, bob) = cms
        .key(json!({"name": "bob-key", "kind": "personal", "owner": "bob"}))
        .await;
    let r = cms
        .req(
            Method::PUT,
            "/v1/roles/lead",
            Some(&bob),
            Some(json!({"managementPermissions": ["members:manage", "keys:manage"]})),
        )
        .await;
    assert_escalation(&r, "management permission 'keys:manage'");
    let roles = cms.admin(Method::GET, "/v1/roles", None).await.body;
    let lead = roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "lead")
        .unwrap();
    assert_eq!(lead["managementPermissions"], json!(["members:manage"]));
    assert_eq!(
        cms.status(Method::GET, "/v1/keys", &bob).await,
        StatusCode::FORBIDDEN,
        "still no keys:manage"
    );
    // ... or joining a stronger role, or removing a stronger member.
    let r = cms
        .req(
            Method::POST,
            "/v1/members",
            Some(&bob),
            Some(json!({"name": "eve", "role": "admin"})),
        )
        .await;
    assert_escalation(&r, "GET on every API");
    let r = cms
        .req(Method::DELETE, "/v1/members/root", Some(&bob), None)
        .await;
    assert_escalation(&r, "GET on every API");
    // A member of its own rank is fine.
    let r = cms
        .req(
            Method::POST,
            "/v1/members",
            Some(&bob),
            Some(json!({"name": "dan", "role": "lead"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn environment_limits_bind_export_and_management() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.entry("blog", json!({"title": "prod"})).await;
    let r = cms
        .admin(
            Method::POST,
            "/api/blog?status=draft",
            Some(json!({"title": "prod draft"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = cms
        .admin(
            Method::POST,
            "/environments/staging/api/blog",
            Some(json!({"title": "staging"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // export:write limited to staging exports staging only.
    let (_, exporter) = cms
        .key(json!({"name": "exp", "scopes": ["export:write"], "environments": ["staging"]}))
        .await;
    for path in ["/v1/export", "/v1/export?environment=production"] {
        let r = cms.req(Method::POST, path, Some(&exporter), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text);
        assert!(!r.text.contains("prod draft"), "{}", r.text);
    }
    let r = cms
        .req(
            Method::POST,
            "/v1/export?environment=staging",
            Some(&exporter),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["apis"]["blog"][0]["published"]["title"], "staging");

    // A `*` key limited to staging mints staging keys only, and changes no global setting.
    let (_, star) = cms
        .key(json!({"name": "star", "scopes": ["*"], "environments": ["staging"]}))
        .await;
    let (prod_id, _) = cms
        .key(json!({"name": "prod-reader", "defaultPermissions": ["GET"]}))
        .await;
    for (spec, missing) in [
        (
            json!({"name": "anywhere", "defaultPermissions": ["GET"]}),
            "every environment (this key is limited to staging)",
        ),
        (
            json!({"name": "prod", "defaultPermissions": ["GET"], "environments": ["production"]}),
            "environment 'production'",
        ),
    ] {
        let r = cms
            .req(Method::POST, "/v1/keys", Some(&star), Some(spec))
            .await;
        assert_escalation(&r, missing);
    }
    let r = cms
        .req(
            Method::POST,
            "/v1/keys",
            Some(&star),
            Some(json!({"name": "stg", "scopes": ["*"], "environments": ["staging"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = cms
        .req(
            Method::PATCH,
            &format!("/v1/keys/{prod_id}"),
            Some(&star),
            Some(json!({"environments": ["staging"]})),
        )
        .await;
    assert_escalation(&r, "every environment (this key is limited to staging)");
    for (method, path, body) in [
        (
            Method::PUT,
            "/v1/cors",
            json!({"origins": ["https://x.example"]}),
        ),
        (Method::PUT, "/v1/apis/new", json!({})),
        (
            Method::PUT,
            "/v1/apis/blog/public",
            json!({"operations": ["create"]}),
        ),
        (
            Method::PUT,
            "/v1/roles/r",
            json!({"contentPermissions": ["GET"]}),
        ),
    ] {
        let r = cms.req(method, path, Some(&star), Some(body)).await;
        assert_escalation(&r, "every environment (this key is limited to staging)");
    }
    // It sees only keys inside its environments.
    let r = cms.req(Method::GET, "/v1/keys", Some(&star), None).await;
    let names: Vec<&str> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exp", "star", "stg"], "{}", r.text);
    let r = cms
        .req(
            Method::GET,
            &format!("/v1/keys/{prod_id}"),
            Some(&star),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = cms.admin(Method::GET, "/v1/cors", None).await;
    assert_eq!(r.body["origins"], json!([]));
}
