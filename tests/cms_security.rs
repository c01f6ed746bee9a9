//! The reference CMS under attack: each test sends the attack itself over real HTTP and checks
//! that it is refused and that nothing changed.

mod support;

use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{Answers, Cms, Resp};

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

/// Making an operation public grants it to everyone: a `settings:manage` key may make public
/// only what it could do itself, on the base list and on an owner's entry alike. Before, a key
/// that could not delete an entry opened `delete` (and list, update, publish) to anyone.
#[tokio::test]
async fn a_settings_key_cannot_open_to_everyone_what_it_cannot_do_itself() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let id = cms.entry("blog", json!({"title": "kept"})).await;
    let (_, settings) = cms
        .key(json!({"name": "settings", "kind": "management",
            "managementPermissions": ["settings:manage"]}))
        .await;
    let everything = json!({"operations": ["list", "get", "update", "delete", "publish"]});
    for path in ["/v1/apis/blog/public", "/v1/apis/blog/public/owners/team"] {
        let r = cms
            .req(Method::PUT, path, Some(&settings), Some(everything.clone()))
            .await;
        assert_escalation(&r, "GET on API 'blog'");
    }
    // Nothing became public: anyone without a key is still refused.
    let entry = format!("/api/blog/{id}");
    let r = cms.req(Method::GET, "/api/blog", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = cms.req(Method::DELETE, &entry, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let public = cms.admin(Method::GET, "/v1/apis/blog/public", None).await;
    assert_eq!(public.body["effective"], json!([]), "{}", public.text);

    // With content:read it may open reading, and still not writing: each right by name.
    let (_, reader) = cms
        .key(json!({"name": "reader-settings", "kind": "management",
            "managementPermissions": ["settings:manage", "content:read"]}))
        .await;
    for (ops, missing) in [
        (json!(["list", "get", "create"]), "POST on API 'blog'"),
        (json!(["get", "update"]), "PATCH on API 'blog'"),
        (json!(["delete"]), "DELETE on API 'blog'"),
        (json!(["publish"]), "PATCH on API 'blog'"),
    ] {
        let r = cms
            .req(
                Method::PUT,
                "/v1/apis/blog/public/owners/team",
                Some(&reader),
                Some(json!({ "operations": ops })),
            )
            .await;
        assert_escalation(&r, missing);
    }
    let r = cms
        .req(
            Method::PUT,
            "/v1/apis/blog/public/owners/team",
            Some(&reader),
            Some(json!({"operations": ["list", "get"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = cms.req(Method::GET, &entry, None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = cms.req(Method::DELETE, &entry, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // What is already public may stay in a list it rewrites, and may always be taken away.
    let r = cms
        .admin(
            Method::PUT,
            "/v1/apis/blog/public",
            Some(json!({"operations": ["get", "delete"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for ops in [json!(["get", "delete"]), json!(["list"]), json!([])] {
        let r = cms
            .req(
                Method::PUT,
                "/v1/apis/blog/public",
                Some(&reader),
                Some(json!({ "operations": ops })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{ops}: {}", r.text);
    }
    let r = cms
        .req(
            Method::PUT,
            "/v1/apis/blog/public",
            Some(&reader),
            Some(json!({"operations": ["delete"]})),
        )
        .await;
    assert_escalation(&r, "DELETE on API 'blog'");
}

/// A write receipt shows an entry's draft key only to a caller that may read drafts: a key with
/// GET and PATCH but no draft right (or an anonymous public `update`) used to send an empty
/// PATCH to someone's draft and read it with the `draftKey` that came back. An empty PATCH
/// is no write at all: it makes no draft and no draft key.
#[tokio::test]
async fn a_write_receipt_hands_no_draft_key_to_a_caller_that_may_not_read_drafts() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let d = cms
        .admin(
            Method::POST,
            "/api/blog?status=draft",
            Some(json!({"title": "secret plans"})),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.text);
    let draft = d.body["id"].as_str().unwrap().to_owned();
    let published = cms.entry("blog", json!({"title": "live"})).await;
    let (_, editor) = cms
        .key(json!({"name": "editor", "defaultPermissions": ["GET", "PATCH", "POST"]}))
        .await;
    let r = cms
        .admin(
            Method::PUT,
            "/v1/apis/blog/public",
            Some(json!({"operations": ["update"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for (key, body) in [
        (Some(editor.as_str()), json!({})),
        (Some(editor.as_str()), json!({"title": "changed"})),
        (None, json!({})),
        (None, json!({"title": "changed again"})),
    ] {
        let r = cms
            .req(
                Method::PATCH,
                &format!("/api/blog/{draft}"),
                key,
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.body.get("draftKey").is_none(), "{}", r.text);
    }
    // Its own new draft it wrote itself, but a key without drafts gets no key to read it by.
    let r = cms
        .req(
            Method::POST,
            "/api/blog?status=draft",
            Some(&editor),
            Some(json!({"title": "mine"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body.get("draftKey").is_none(), "{}", r.text);

    // An empty PATCH of published content makes no draft (and so no draft key for anyone).
    let before = cms
        .admin(Method::GET, &format!("/api/blog/{published}"), None)
        .await;
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/api/blog/{published}?status=draft"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "published", "{}", r.text);
    assert!(r.body.get("draftKey").is_none(), "{}", r.text);
    let after = cms
        .admin(Method::GET, &format!("/api/blog/{published}"), None)
        .await;
    assert_eq!(before.body, after.body, "an empty PATCH changed nothing");

    // Who may read drafts still gets the key, and it reads the draft.
    let (_, drafter) = cms
        .key(json!({"name": "drafter", "defaultPermissions": ["GET", "GET_ALL_DRAFTS", "PATCH"]}))
        .await;
    let r = cms
        .req(
            Method::PATCH,
            &format!("/api/blog/{draft}"),
            Some(&drafter),
            Some(json!({"title": "by a drafter"})),
        )
        .await;
    let key = r.body["draftKey"].as_str().unwrap_or_default().to_owned();
    assert!(!key.is_empty(), "{}", r.text);
    let (_, reader) = cms
        .key(json!({"name": "reader", "defaultPermissions": ["GET"]}))
        .await;
    let r = cms
        .req(
            Method::GET,
            &format!("/api/blog/{draft}?draftKey={key}"),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.body["title"], "by a drafter", "{}", r.text);
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

// ---- 1. bodies that would not load again ------------------------------------------------------

fn nested(depth: usize) -> String {
    // `depth` levels in all: an object holding arrays.
    format!(
        "{{\"deep\": {}1{}}}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    )
}

async fn raw_post(cms: &Cms, path: &str, key: Option<&str>, body: String) -> Resp {
    let mut rb = cms
        .http
        .post(format!("{}{path}", cms.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
        text,
    }
}

fn assert_json_error(r: &Resp, status: StatusCode) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.headers["content-type"], "application/json",
        "{status}: {}",
        r.text
    );
    assert!(r.body["error"].is_string(), "{status}: {}", r.text);
}

#[tokio::test]
async fn deep_huge_or_trailing_bodies_are_refused_and_what_is_stored_loads_again() {
    let mut cms = Cms::start().await;
    cms.api("feedback").await;
    let r = cms
        .admin(
            Method::PUT,
            "/v1/apis/feedback/public",
            Some(json!({"operations": ["create"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The attack: an anonymous, publicly writable API and a body 127 levels deep.
    for depth in [127, 33] {
        let r = raw_post(&cms, "/api/feedback", None, nested(depth)).await;
        assert_json_error(&r, StatusCode::BAD_REQUEST);
        assert!(r.text.contains("32 levels"), "{}", r.text);
    }
    let r = raw_post(&cms, "/api/feedback", None, nested(32)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = raw_post(&cms, "/api/feedback", None, r#"{"a": 1} {"b": 2}"#.into()).await;
    assert_json_error(&r, StatusCode::BAD_REQUEST);
    let r = raw_post(
        &cms,
        "/v1/keys",
        Some(support::ADMIN),
        r#"{"name": "one"} {"name": "two"}"#.into(),
    )
    .await;
    assert_json_error(&r, StatusCode::BAD_REQUEST);
    let big = format!("{{\"text\": \"{}\"}}", "x".repeat(1024 * 1024));
    let r = raw_post(&cms, "/api/feedback", None, big).await;
    assert_json_error(&r, StatusCode::PAYLOAD_TOO_LARGE);

    cms.restart().await;
    let r = cms.admin(Method::GET, "/api/feedback", None).await;
    assert_eq!(r.body["totalCount"], 1, "{}", r.text);
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"],
        json!([]),
        "no key from the body with trailing bytes"
    );
}

/// Content is bounded per API (entries and bytes, over every environment) and per entry, so an
/// anonymous public `create` cannot grow the data directory and the memory holding it without
/// end; and one listing's answer is bounded in bytes, not only in entries. Before, 1 MiB
/// public creates grew the data by 200 MB in 8 s and one list answered 104 MB.
#[tokio::test]
async fn content_is_bounded_per_api_per_entry_and_per_answer() {
    let limits = |c: &mut keyward::cms::CmsConfig| {
        c.max_body = 1000;
        c.content.max_entries = 6;
        c.content.max_api_bytes = 3000;
        c.content.max_answer_bytes = 1200;
    };
    let mut cms = Cms::start_with(limits).await;
    cms.api("feedback").await;
    let r = cms
        .admin(
            Method::PUT,
            "/v1/apis/feedback/public",
            Some(json!({"operations": ["create", "update", "list", "delete"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let text = |n: usize| "x".repeat(n);
    async fn create_in(cms: &Cms, env: &str, n: usize) -> Resp {
        let path = match env {
            "production" => "/api/feedback".to_owned(),
            e => format!("/environments/{e}/api/feedback"),
        };
        let body = json!({ "t": "x".repeat(n) });
        cms.req(Method::POST, &path, None, Some(body)).await
    }
    // Entries of about 450 bytes: six of them would pass the 3000 bytes of the API.
    let mut ids = Vec::new();
    for env in [
        "production",
        "staging",
        "production",
        "staging",
        "production",
    ] {
        let r = create_in(&cms, env, 300).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    for env in ["production", "staging"] {
        let r = create_in(&cms, env, 300).await;
        assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.text);
        assert_eq!(r.body["error"], "insufficient_storage", "{}", r.text);
        assert_eq!(r.body["reason"], "size_limit", "{}", r.text);
    }
    // A small one still fits the bytes, but then the count is reached (in any environment).
    let r = create_in(&cms, "staging", 10).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = create_in(&cms, "other", 10).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.text);
    assert_eq!(r.body["reason"], "entry_limit", "{}", r.text);
    // An entry cannot grow past what one body may hold by merging bodies into it.
    let first = format!("/api/feedback/{}", ids[0]);
    let r = cms
        .req(Method::PATCH, &first, None, Some(json!({"u": text(700)})))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.body["reason"], "entry_size", "{}", r.text);
    // Shrinking is always taken; deleting makes room again.
    let r = cms
        .req(Method::PATCH, &first, None, Some(json!({"t": "short"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = cms.req(Method::DELETE, &first, None, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = create_in(&cms, "production", 300).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // The count and size survive a restart (they are taken from the stored entries).
    cms.restart_with(limits).await;
    let r = create_in(&cms, "production", 300).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{}", r.text);

    // A listing ends its page before 1200 bytes of entries, says how many it holds in
    // `limit`, and the pages together hold every entry once.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let r = cms
            .req(
                Method::GET,
                &format!("/api/feedback?limit=100&offset={offset}"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let page = r.body["contents"].as_array().unwrap().clone();
        assert!(
            r.text.len() < 1200 + 600,
            "one page of {} bytes",
            r.text.len()
        );
        // A page cut short says how many it holds; the last says what was asked.
        let more = offset + page.len() < 3;
        let limit = if more { page.len() } else { 100 };
        assert_eq!(r.body["limit"], limit, "{}", r.text);
        assert_eq!(r.body["totalCount"], 3, "{}", r.text);
        seen.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        offset += page.len();
        if page.is_empty() || offset >= 3 {
            break;
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "production holds 3 entries: {seen:?}");
}

/// The resident memory of a process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// Sends up to `total` bytes of body on `stream` as fast as HTTP/2 flow control lets it, and
/// never ends the stream; `sent` counts what went out.
async fn slow_upload(
    mut stream: h2::SendStream<bytes::Bytes>,
    total: usize,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut left = total;
    while left > 0 {
        stream.reserve_capacity(left.min(64 * 1024));
        let Some(Ok(room)) = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await else {
            return;
        };
        let n = room.min(left);
        if stream
            .send_data(bytes::Bytes::from(vec![b'x'; n]), false)
            .is_err()
        {
            return;
        }
        left -= n;
        sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    std::future::pending::<()>().await
}

/// HTTP/2 bounds what one connection can make the server hold: at most 64 streams, and the
/// bodies of four at a time (the others wait, unread, inside the flow-control windows), under
/// a total for the whole server; a head over 128 KiB gets the JSON 431 HTTP/1.1 gets. Before,
/// 200 streams per connection each held a body up to `--max-body` (58 -> 474 MB with two
/// connections), and a 200 KiB head was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cannot_multiply_the_bodies_a_connection_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::process::spawn(dir.path(), None);
    let pid = server.child.id();
    let http = reqwest::Client::new();
    let admin = |m: Method, path: &str, body: Option<Value>| {
        let mut rb = http
            .request(m, format!("{}{path}", server.url))
            .bearer_auth(support::ADMIN);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send()
    };
    assert!(admin(Method::PUT, "/v1/apis/inbox", None)
        .await
        .unwrap()
        .status()
        .is_success());
    let r = admin(
        Method::PUT,
        "/v1/apis/inbox/public",
        Some(json!({"operations": ["create"]})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let before = rss_of(pid);

    // Two connections, 200 uploads each of 1 MiB - 1 byte that never end.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        held.push(tokio::spawn(async move {
            let _ = connection.await;
        }));
        for _ in 0..200 {
            let client = client.clone();
            let sent = sent.clone();
            held.push(tokio::spawn(async move {
                let Ok(mut ready) = client.ready().await else {
                    return;
                };
                let req = http::Request::post("/api/inbox")
                    .header("content-type", "application/json")
                    .body(())
                    .unwrap();
                if let Ok((_answer, stream)) = ready.send_request(req, false) {
                    slow_upload(stream, 1024 * 1024 - 1, sent).await;
                }
            }));
        }
    }
    // Until the uploads stall: what the server lets in is all it will hold.
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        let now = sent.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let grown = rss_of(pid).saturating_sub(before);
    // Per connection: the bodies of four streams (4 MiB) and the windows of the rest (4 MiB).
    assert!(
        last < 20 * 1024 * 1024,
        "{} MiB of bodies went in over two connections",
        last >> 20
    );
    assert!(
        grown < 32 * 1024 * 1024,
        "the server grew by {} MiB holding unfinished HTTP/2 bodies",
        grown >> 20
    );

    // Others are still served, over HTTP/1.1 and HTTP/2.
    let r = http
        .post(format!("{}/api/inbox", server.url))
        .json(&json!({"t": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Twenty honest uploads at once over one HTTP/2 connection all get in: streams that wait
    // for room never use up the window the ones being read need.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let uploads = (0..20).map(|_| {
        h2c.post(format!("{}/api/inbox", server.url))
            .json(&json!({"t": "u".repeat(300 * 1024)}))
            .send()
    });
    for r in futures::future::join_all(uploads).await {
        let r = r.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    // A head over 128 KiB: the JSON 431 of HTTP/1.1, over HTTP/2 too.
    let r = h2c
        .get(format!("{}/api/inbox", server.url))
        .header("x-padding", "p".repeat(200 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large", "{body}");
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn max_body_is_configurable() {
    let cms = Cms::start_with(|c| c.max_body = 1000).await;
    cms.api("blog").await;
    let r = cms
        .admin(
            Method::POST,
            "/api/blog",
            Some(json!({"text": "x".repeat(2000)})),
        )
        .await;
    assert_json_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    let r = cms
        .admin(
            Method::POST,
            "/api/blog",
            Some(json!({"text": "x".repeat(500)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

#[tokio::test]
async fn a_record_that_does_not_decode_is_quarantined_and_the_rest_serves() {
    let mut cms = Cms::start().await;
    cms.api("blog").await;
    let good = cms.entry("blog", json!({"title": "kept"})).await;
    let (_, key) = cms
        .key(json!({"name": "reader", "defaultPermissions": ["GET"]}))
        .await;
    if let Some(r) = cms.running.take() {
        r.stop().await;
    }
    {
        // What an older version stored from the attack, and a record damaged on disk.
        let db = rusqlite::Connection::open(cms.dir.path().join("keyward-cms.db")).unwrap();
        let deep = format!(
            r#"{{"id":"deep","createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z","published":{}}}"#,
            nested(127)
        );
        db.execute(
            "INSERT INTO entries (env, api, id, doc) VALUES ('production', 'blog', 'deep', ?1)",
            [deep],
        )
        .unwrap();
        db.execute(
            "INSERT INTO keys (id, name, record, hash) VALUES ('00000000000000ff', 'torn', '{\"id\":', 'x')",
            [],
        )
        .unwrap();
        db.execute(
            "INSERT INTO roles (name, doc) VALUES ('broken', 'not json')",
            [],
        )
        .unwrap();
    }
    cms.restart().await;
    let r = cms.admin(Method::GET, "/api/blog", None).await;
    assert_eq!(r.body["totalCount"], 1, "{}", r.text);
    assert_eq!(r.body["contents"][0]["id"], good.as_str());
    assert_eq!(
        cms.status(Method::GET, &format!("/api/blog/{good}"), &key)
            .await,
        StatusCode::OK
    );
    let listed = cms.admin(Method::GET, "/v1/keys", None).await.body;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    if let Some(r) = cms.running.take() {
        r.stop().await;
    }
    let db = rusqlite::Connection::open(cms.dir.path().join("keyward-cms.db")).unwrap();
    let mut q: Vec<(String, String)> = db
        .prepare("SELECT tbl, id FROM quarantine ORDER BY tbl")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    q.sort();
    assert_eq!(
        q,
        [
            ("entries".to_owned(), "production/blog/deep".to_owned()),
            ("keys".to_owned(), "00000000000000ff".to_owned()),
            ("roles".to_owned(), "broken".to_owned()),
        ]
    );
}

// ---- 4. a flood of wrong secrets -------------------------------------------------------------

/// A client whose requests come from another loopback address.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

/// What `tries` GETs with `key` from `client` answered: (status, body) each, and the median
/// time of the 401s.
async fn probe(
    cms: &Cms,
    client: &reqwest::Client,
    key: &str,
    tries: usize,
) -> (Vec<(StatusCode, Value)>, std::time::Duration) {
    let mut answers = Vec::new();
    let mut times = Vec::new();
    for _ in 0..tries {
        let started = std::time::Instant::now();
        let r = client
            .get(format!("{}/api/blog", cms.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        let status = r.status();
        if status == StatusCode::UNAUTHORIZED {
            times.push(took);
        }
        answers.push((status, r.json().await.unwrap_or(Value::Null)));
    }
    times.sort();
    (
        answers,
        times.get(times.len() / 2).copied().unwrap_or_default(),
    )
}

/// Until its secret is proven, a key id gives nothing away: an unknown id, a known id with a
/// wrong secret and an expired key with a wrong secret get the same 401, the same rate limit and
/// about the same time (an unknown id waits as long as a check takes, without the work); only
/// the expired key's own value hears that it expired. Before, an unknown id answered at once
/// and never hit the limit, and "expired" came whatever the secret. Guesses at the admin token
/// are limited per address (before: 54k guesses/s), the right token included while blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ids_cannot_be_told_apart_and_admin_guesses_are_throttled() {
    let mut cms = Cms::start().await;
    cms.api("blog").await;
    let (known, _) = cms
        .key(json!({"name": "known", "defaultPermissions": ["GET"]}))
        .await;
    let (old, old_value) = cms
        .key(json!({"name": "old", "defaultPermissions": ["GET"]}))
        .await;
    // No API sets a past expiry: move it back in the database while the service is down.
    cms.running.take().unwrap().stop().await;
    {
        let db = rusqlite::Connection::open(cms.dir.path().join("keyward-cms.db")).unwrap();
        let rec: String = db
            .query_row("SELECT record FROM keys WHERE id = ?1", [&old], |r| {
                r.get(0)
            })
            .unwrap();
        let mut rec: Value = serde_json::from_str(&rec).unwrap();
        rec["spec"]["expiresAt"] = json!("2020-01-01T00:00:00Z");
        db.execute(
            "UPDATE keys SET record = ?1 WHERE id = ?2",
            [rec.to_string(), old.clone()],
        )
        .unwrap();
    }
    cms.restart().await;
    let wrong = |id: &str| format!("kw_{id}_{}", "A".repeat(43));
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for (what, key) in [
        ("a known id with a wrong secret", wrong(&known)),
        ("an expired key with a wrong secret", wrong(&old)),
        ("an unknown id", wrong("0123456789abcdef")),
    ] {
        // The limit (burst 10, 5/s) refills while the tries run: 401s, then 429s.
        let (answers, median) = probe(&cms, &client, &key, 20).await;
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
        assert_eq!(&statuses[..10], [401; 10], "{what}: {statuses:?}");
        assert!(
            statuses.contains(&429) && statuses.iter().all(|s| [401, 429].contains(s)),
            "{what}: {statuses:?}"
        );
        seen.push((what, answers[0].1.clone(), median));
    }
    let (_, first_body, known_time) = &seen[0];
    for (what, body, median) in &seen[1..] {
        assert_eq!(body, first_body, "{what} answers as a wrong secret does");
        assert!(
            *median * 2 >= *known_time,
            "{what} took {median:?}, a wrong secret {known_time:?}"
        );
    }
    // The expired key's own value is proven, and told.
    let r = cms
        .req(Method::GET, "/api/blog", Some(&old_value), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    r.says("expired");

    // Admin token guesses from one address: ten, then 429, the right token too; another
    // address is not held up.
    let guesser = client_from([127, 0, 0, 3]);
    let (answers, _) = probe(&cms, &guesser, "kwadmin_guess-0123456789", 20).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(&statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = guesser
        .get(format!("{}/v1/keys", cms.url))
        .bearer_auth(support::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a right guess is not told"
    );
    let r = client_from([127, 0, 0, 4])
        .get(format!("{}/v1/keys", cms.url))
        .bearer_auth(support::ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_secrets_never_delay_the_right_one() {
    let cms = Cms::start_with(|c| c.verify_rate = keyward::cms::Rate::new(5).unwrap()).await;
    cms.api("blog").await;
    let (id, key) = cms
        .key(json!({"name": "target", "defaultPermissions": ["GET"]}))
        .await;
    // During a rotation's grace the key has two valid hashes; the new value is not cached yet.
    let r = cms.regenerate(&id, Some(json!(600))).await;
    let new_value = r.body["key"].as_str().unwrap().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let throttled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..64 {
        let (url, stop, throttled) = (cms.url.clone(), stop.clone(), throttled.clone());
        let http = client_from([127, 0, 0, 1]);
        let id = id.clone();
        flood.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let wrong = format!("kw_{id}_{:0>43}", n);
                let r = http
                    .get(format!("{url}/api/blog"))
                    .bearer_auth(&wrong)
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert!(r.headers().contains_key("retry-after"));
                        throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    s => assert_eq!(s, StatusCode::UNAUTHORIZED),
                }
            }
        }));
    }
    support::eventually(
        "the flood to be throttled",
        std::time::Duration::from_secs(15),
        || async { throttled.load(std::sync::atomic::Ordering::Relaxed) > 100 },
    )
    .await;
    // Ordered, not timed: each right value is answered while the flood goes on (throttled
    // answers keep coming after it), not once it ends; and the flood costs almost no hashing
    // (counted below), so there is no queue of wrong secrets' hashes to wait behind.
    let legit = client_from([127, 0, 0, 2]);
    for value in [&new_value, &key] {
        let r = legit
            .get(format!("{}/api/blog", cms.url))
            .bearer_auth(value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let answered_at = throttled.load(std::sync::atomic::Ordering::Relaxed);
        support::eventually(
            "the flood goes on after the right value was answered",
            std::time::Duration::from_secs(15),
            || async { throttled.load(std::sync::atomic::Ordering::Relaxed) > answered_at },
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    // Throttling spent no hashing: far fewer Argon2id checks than wrong secrets sent.
    let checks = cms
        .running
        .as_ref()
        .unwrap()
        .service
        .verifier
        .argon2_checks();
    assert!(checks < 200, "{checks} Argon2id checks");
}

// ---- 5. numbers out of range -------------------------------------------------------------------

#[tokio::test]
async fn out_of_range_numbers_are_refused_never_a_panic() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (id, old) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    for grace in [
        json!(9223372036854775807i64),
        json!(-9223372036854775807i64),
        json!(18446744073709551615u64),
        json!(1e300),
        json!(-1),
        json!(2592001),
    ] {
        let r = cms.regenerate(&id, Some(json!(grace))).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{grace}: {}",
            r.text
        );
        assert_eq!(r.body["field"], "graceSeconds", "{}", r.text);
    }
    for expires in [
        "9999-12-31T23:59:59Z",
        "+275760-09-13T00:00:00Z",
        "0000-01-01T00:00:00Z",
    ] {
        let r = cms
            .admin(
                Method::POST,
                "/v1/keys",
                Some(json!({"name": "e", "expiresAt": expires})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{expires}: {}",
            r.text
        );
        assert_eq!(r.body["field"], "expiresAt", "{}", r.text);
    }
    for (q, field) in [
        ("limit=-1", "limit"),
        ("limit=101", "limit"),
        ("offset=99999999999999999999999", "offset"),
        ("limit=abc", "limit"),
        ("drafts=yes", "drafts"),
    ] {
        let r = cms
            .admin(Method::GET, &format!("/api/blog?{q}"), None)
            .await;
        assert_json_error(&r, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["field"], field, "{q}: {}", r.text);
    }
    // Grace keeps millisecond precision: 0.25 s is 250 ms, not 0 or 1 s.
    let r = cms.regenerate(&id, Some(json!(0.25))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let at = |f: &str| r.body[f].as_str().unwrap().parse::<Timestamp>().unwrap();
    assert_eq!(
        at("previousValidUntil")
            .duration_since(at("rotatedAt"))
            .as_millis(),
        250
    );
    let until = at("previousValidUntil");
    let wait =
        std::time::Duration::try_from(until.duration_since(Timestamp::now())).unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(20)).await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::UNAUTHORIZED,
        "past its grace the old value is refused"
    );
}

/// A key is never refused while it is being edited: a first check that raced with a PATCH used
/// to answer "unknown or revoked" (the edit replaced the entry the check ran on), and every
/// edit dropped the verified values, so the next request paid Argon2id again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_valid_key_is_never_refused_while_it_is_edited() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let verifier = &cms.running.as_ref().unwrap().service.verifier;
    for i in 0..8 {
        // A value never used yet (its first check costs Argon2id), edited meanwhile.
        let (id, value) = cms
            .key(json!({"name": format!("k{i}"), "defaultPermissions": ["GET"]}))
            .await;
        let path = format!("/v1/keys/{id}");
        let edit = cms.admin(Method::PATCH, &path, Some(json!({"description": "edited"})));
        let (read, edited) = tokio::join!(cms.status(Method::GET, "/api/blog", &value), edit);
        assert_eq!(edited.status, StatusCode::OK, "{}", edited.text);
        assert_eq!(read, StatusCode::OK, "round {i}: a valid key was refused");
    }
    // A key in use keeps its verified value across edits: no new Argon2id check.
    let (id, value) = cms
        .key(json!({"name": "busy", "defaultPermissions": ["GET"]}))
        .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::OK
    );
    let checks = verifier.argon2_checks();
    for n in 0..20 {
        let r = cms
            .admin(
                Method::PATCH,
                &format!("/v1/keys/{id}"),
                Some(json!({"description": format!("edit {n}")})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            cms.status(Method::GET, "/api/blog", &value).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        verifier.argon2_checks(),
        checks,
        "edits cost no Argon2id check"
    );
    // An edit that takes the right away still takes effect at once.
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"defaultPermissions": ["POST"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value).await,
        StatusCode::FORBIDDEN
    );
}

/// A second regenerate with grace keeps the grace the first one promised: every earlier value
/// works until its `earlierValuesValidUntil`, at most four at once (then 409); a regenerate
/// without grace ends them all (a leaked key). Before, the second regenerate cut the first
/// value's grace short although its answer had promised `previousValidUntil`.
#[tokio::test]
async fn a_second_regenerate_keeps_the_grace_the_first_promised() {
    // Each value is checked afresh after each regenerate: Argon2id checks well over 5/s.
    let cms = Cms::start_with(|c| c.verify_rate = keyward::cms::Rate::new(1000).unwrap()).await;
    cms.api("blog").await;
    let (id, v1) = cms
        .key(json!({"name": "rolled", "defaultPermissions": ["GET"]}))
        .await;
    let first = cms.regenerate(&id, Some(json!(600))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let v2 = first.body["key"].as_str().unwrap().to_owned();
    let second = cms.regenerate(&id, Some(json!(600))).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let v3 = second.body["key"].as_str().unwrap().to_owned();
    for (value, what) in [
        (&v1, "the first value"),
        (&v2, "the second"),
        (&v3, "the new one"),
    ] {
        assert_eq!(
            cms.status(Method::GET, "/api/blog", value).await,
            StatusCode::OK,
            "{what} works"
        );
    }
    let ends = second.body["earlierValuesValidUntil"].as_array().unwrap();
    assert_eq!(ends.len(), 2, "{}", second.text);
    assert_eq!(
        ends[0], first.body["previousValidUntil"],
        "the first promise is kept: {}",
        second.text
    );

    // Four earlier values at most: a fifth regenerate with grace is refused, changing nothing.
    let mut values = vec![v1, v2, v3];
    for _ in 0..2 {
        let r = cms.regenerate(&id, Some(json!(600))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        values.push(r.body["key"].as_str().unwrap().to_owned());
    }
    let r = cms.regenerate(&id, Some(json!(600))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    r.says("regenerate without grace");
    for v in &values {
        assert_eq!(
            cms.status(Method::GET, "/api/blog", v).await,
            StatusCode::OK
        );
    }
    // Without grace every earlier value stops now.
    let r = cms.regenerate(&id, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.body.get("earlierValuesValidUntil").is_none(),
        "{}",
        r.text
    );
    for v in &values {
        assert_eq!(
            cms.status(Method::GET, "/api/blog", v).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let newest = r.body["key"].as_str().unwrap();
    assert_eq!(
        cms.status(Method::GET, "/api/blog", newest).await,
        StatusCode::OK
    );
}

// ---- 6. slow clients -------------------------------------------------------------------------

fn addr_of(cms: &Cms) -> std::net::SocketAddr {
    cms.running.as_ref().unwrap().addr
}

/// A connection that sends half a request head and stops.
async fn half_sent(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    s
}

/// `n` half-sent requests held open.
async fn slow_clients(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        slow.push(half_sent(addr).await);
    }
    slow
}

/// `GET /healthz` on a new connection: its status and how long the answer took.
async fn healthz(cms: &Cms) -> (StatusCode, std::time::Duration) {
    let started = std::time::Instant::now();
    let r = cms
        .http
        .get(format!("{}/healthz", cms.url))
        .send()
        .await
        .unwrap();
    (r.status(), started.elapsed())
}

/// Whether the server still holds `s` open: nothing to read, no EOF, no reset.
fn still_open(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Waits until the server closes `s` (EOF or reset), at most `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_never_starve_a_real_request() {
    let cms = Cms::start_with(|c| {
        c.conn.header_timeout = std::time::Duration::from_secs(2);
        c.conn.idle_timeout = std::time::Duration::from_secs(4);
    })
    .await;
    let addr = addr_of(&cms);
    let mut slow = slow_clients(addr, 500).await;
    let (status, _) = healthz(&cms).await;
    assert_eq!(status, StatusCode::OK);
    // Ordered, not timed: answered while all 500 still hold their connections, not once the
    // header timeout has cut them off.
    assert_eq!(
        slow.iter().filter(|s| still_open(s)).count(),
        500,
        "the real request waited for the slow ones to be cut off"
    );
    // Each half-sent head is cut off once the header timeout has passed.
    for s in &mut slow {
        assert!(closed_within(s, std::time::Duration::from_secs(10)).await);
    }

    // A keep-alive connection may idle longer than the header timeout between requests, and is
    // closed once it has idled for the idle timeout.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 1024];
    s.write_all(request).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Idle until the header timeout has passed, as the server's own cut-off of a half-sent
    // head begun at the same moment shows.
    let mut witness = half_sent(addr).await;
    assert!(closed_within(&mut witness, std::time::Duration::from_secs(10)).await);
    assert!(still_open(&s), "idle past the header timeout, not closed");
    s.write_all(request).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "idle past the header timeout, still served: {}",
        String::from_utf8_lossy(&buf[..n])
    );
    let idle_from = std::time::Instant::now();
    assert!(closed_within(&mut s, std::time::Duration::from_secs(10)).await);
    assert!(idle_from.elapsed() >= std::time::Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_instead_of_failing() {
    let cms = Cms::start_with(|c| {
        c.conn.max_connections = 20;
        c.conn.header_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let slow = slow_clients(addr_of(&cms), 20).await;
    // The 21st connection is not served until a slot frees up: when the header timeout cuts the
    // slow ones off. Then it is answered, not refused.
    let (status, took) = healthz(&cms).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        took >= std::time::Duration::from_millis(500),
        "served before a slot was free: {took:?}"
    );
    drop(slow);
}

// ---- 7. one writer per data directory -----------------------------------------------------------

/// Every file under `dir` with its content, to show that nothing changed.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_second_server_on_the_same_data_directory_refuses_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = support::process::spawn(dir.path(), None);
    let before = snapshot(dir.path());
    // --lock-timeout 0s: refused at once.
    let started = std::time::Instant::now();
    let out = support::process::serve_command(dir.path())
        .args(["--lock-timeout", "0s"])
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "data directory {} is in use by pid {}",
            dir.path().display(),
            first.child.id()
        )),
        "{stderr}"
    );
    assert_eq!(snapshot(dir.path()), before, "the loser changed nothing");
    // Otherwise it waits up to --lock-timeout, saying for what, then gives up.
    let started = std::time::Instant::now();
    let out = support::process::serve_command(dir.path())
        .args(["--lock-timeout", "2s"])
        .output()
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("waiting for the lock on the data directory")
            && stderr.contains("is in use by pid"),
        "{stderr}"
    );
    assert_eq!(snapshot(dir.path()), before, "the loser changed nothing");
    // The embedded CMS of `keyward apply` is refused the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["apply", "-f"])
        .arg(support::examples().join("01-read-only-with-contact-form"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--secrets-dir")
        .arg(dir.path().join("out"))
        .args(["--lock-timeout", "0s"])
        .env_remove("KEYWARD_CMS_URL")
        .env_remove("KEYWARD_CMS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by pid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(first);
    // A crashed holder leaves no stale lock.
    let again = support::process::spawn(dir.path(), None);
    drop(again);
}

// ---- 8. every error is JSON; files are private; no echo ---------------------------------------

/// Sends `request` on a new connection and reads the answer until the server closes it.
async fn raw_exchange(addr: std::net::SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn every_error_answer_is_json() {
    let cms = Cms::start().await;
    let r = cms.admin(Method::GET, "/nowhere", None).await;
    assert_json_error(&r, StatusCode::NOT_FOUND);
    let r = cms.admin(Method::DELETE, "/v1/cors", None).await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED);
    let r = raw_post(&cms, "/v1/keys", Some(support::ADMIN), "{not json".into()).await;
    assert_json_error(&r, StatusCode::BAD_REQUEST);
    // Too long for a URI type: only a raw socket sends it; hyper refuses it before the router.
    let answer = raw_exchange(
        addr_of(&cms),
        format!(
            "GET /api/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(70_000)
        ),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 414 "),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(
        answer.ends_with(r#""error":"uri_too_long","message":"URI Too Long"}"#),
        "{answer}"
    );
    let mut rb = cms.http.get(format!("{}/healthz", cms.url));
    for i in 0..120 {
        rb = rb.header(format!("x-h{i}"), "v");
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large");
}

#[tokio::test]
async fn validation_errors_never_echo_a_submitted_value() {
    let cms = Cms::start().await;
    let (_, key) = cms.key(json!({"name": "k"})).await;
    for body in [
        json!({"name": "x", "scopes": key}),
        json!({"name": "x", "kind": key}),
        json!({"name": "x", "defaultPermissions": [key]}),
        json!({"name": key, "labels": {"a": 1}}),
    ] {
        let r = cms.admin(Method::POST, "/v1/keys", Some(body)).await;
        assert!(r.status.is_client_error(), "{}", r.text);
        assert!(!r.text.contains(&key), "{}", r.text);
        assert!(!r.text.contains(&key[10..30]), "{}", r.text);
    }
    let r = cms
        .req(Method::GET, "/api/x?limit=zz", Some(&key), None)
        .await;
    assert!(!r.text.contains(&key), "{}", r.text);

    // A key pasted into an id, a name, a filter, a status or an origin: the answer names the
    // field and never repeats it (before, ids, names, filters, statuses and origins came back).
    cms.api("blog").await;
    let entry = cms.entry("blog", json!({"t": "x"})).await;
    let paths = [
        (Method::GET, format!("/v1/keys/{key}"), None),
        (Method::PATCH, format!("/v1/keys/{key}"), Some(json!({}))),
        (Method::DELETE, format!("/v1/keys/{key}"), None),
        (Method::GET, format!("/api/{key}"), None),
        (Method::GET, format!("/api/blog/{key}"), None),
        (Method::PUT, format!("/api/blog/{key}x!"), Some(json!({}))),
        (
            Method::GET,
            format!("/api/blog?filters=title[{key}]x"),
            None,
        ),
        (Method::GET, format!("/api/blog?filters={key}"), None),
        (
            Method::POST,
            format!("/api/blog?status={key}"),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            format!("/api/blog/{entry}?status={key}"),
            Some(json!({})),
        ),
        (Method::PUT, format!("/v1/roles/{key}"), Some(json!({}))),
        (
            Method::PUT,
            format!("/v1/cors/owners/{key}!"),
            Some(json!({"origins": []})),
        ),
        (
            Method::PUT,
            "/v1/cors".into(),
            Some(json!({"origins": [key]})),
        ),
        (
            Method::PUT,
            "/v1/cors".into(),
            Some(json!({"origins": [format!("https://{key}/")]})),
        ),
        (
            Method::POST,
            "/v1/members".into(),
            Some(json!({"name": "m", "role": key})),
        ),
        (
            Method::POST,
            "/v1/members".into(),
            Some(json!({"name": key, "role": "r"})),
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "x", "environments": [key]})),
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "x", "apiPermissions": [{"api": key, "permissions": ["GET"]}]})),
        ),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"name": "x", "kind": "personal", "owner": key})),
        ),
    ];
    for (method, path, body) in paths {
        let r = cms.admin(method.clone(), &path, body).await;
        assert!(r.status.is_client_error(), "{method} {path}: {}", r.text);
        assert!(r.body["error"].is_string(), "{method} {path}: {}", r.text);
        for part in [&key[..], &key[10..30], &key[key.len() - 20..]] {
            assert!(!r.text.contains(part), "{method} {path}: {}", r.text);
        }
    }
}

/// Input that could never work is refused instead of stored: CORS origins spelt as no browser
/// sends them (upper case, a default port, a trailing dot), environment names in content paths
/// that are not names (a path, a NUL, 5,000 characters), and the API names are not handed to
/// anonymous callers by `/v1/openapi.json` (`GET /v1/apis` needs `settings:manage`).
#[tokio::test]
async fn input_that_can_never_work_is_refused_and_api_names_stay_private() {
    let cms = Cms::start().await;
    cms.api("secret-project").await;
    for origin in [
        "https://Shop.example.com",
        "https://shop.example.com:443",
        "https://shop.example.com.",
    ] {
        for path in ["/v1/cors", "/v1/cors/owners/team"] {
            let r = cms
                .admin(Method::PUT, path, Some(json!({ "origins": [origin] })))
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{origin}: {}",
                r.text
            );
            assert_eq!(r.body["field"], "origins[0]", "{}", r.text);
            r.says("as a browser sends it");
        }
    }
    let cors = cms.admin(Method::GET, "/v1/cors", None).await;
    assert_eq!(cors.body["effective"], json!([]), "{}", cors.text);

    let long = "e".repeat(5000);
    for env in ["a%2Fb", "..%2F..", "nul%00", long.as_str(), "Prod"] {
        let r = cms
            .admin(
                Method::POST,
                &format!("/environments/{env}/api/secret-project"),
                Some(json!({"t": "x"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["field"], "environment", "{}", r.text);
        let r = cms
            .admin(Method::POST, &format!("/v1/export?environment={env}"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    }

    let anonymous = cms.req(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(anonymous.status, StatusCode::OK, "{}", anonymous.text);
    assert!(
        !anonymous.text.contains("secret-project"),
        "{}",
        anonymous.text
    );
    let (_, reader) = cms
        .key(json!({"name": "reader", "defaultPermissions": ["GET"]}))
        .await;
    let r = cms
        .req(Method::GET, "/v1/openapi.json", Some(&reader), None)
        .await;
    assert!(!r.text.contains("secret-project"), "{}", r.text);
    let r = cms.admin(Method::GET, "/v1/openapi.json", None).await;
    assert!(
        r.body["paths"]["/api/secret-project"].is_object(),
        "{}",
        r.text
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("cms");
    let running = keyward::cms::start(keyward::cms::CmsConfig::new(&data))
        .await
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    running.stop().await;
}

#[test]
fn an_admin_token_with_surrounding_whitespace_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for token in [
        " padded-admin-token-123",
        "padded-admin-token-123\n",
        "short",
    ] {
        let out = support::process::serve_command(dir.path())
            .env("KEYWARD_CMS_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{token:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("KEYWARD_CMS_ADMIN_TOKEN"), "{stderr}");
        assert!(!stderr.contains("padded-admin"), "{stderr}");
    }
}

#[tokio::test]
async fn labels_are_bounded_by_kubernetes_rules() {
    let cms = Cms::start().await;
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("l{i}"), json!("v"))).collect();
    for (labels, field) in [
        (Value::Object(many), "labels"),
        (json!({"bad key": "v"}), "labels"),
        (json!({"app": "x".repeat(64)}), "labels.app"),
        (json!({"app": "shop/web"}), "labels.app"),
        (json!({"app": "line\nbreak"}), "labels.app"),
    ] {
        let r = cms
            .admin(
                Method::POST,
                "/v1/keys",
                Some(json!({"name": "k", "labels": labels})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["field"], field, "{}", r.text);
    }
    let (id, _) = cms
        .key(json!({"name": "k", "labels": {"keyward.dev/policy": "shop.web", "app": ""}}))
        .await;
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"labels": {"x": "-bad"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}

#[tokio::test]
async fn a_key_can_ask_what_it_may_do() {
    let cms = Cms::start().await;
    cms.api("contact").await;
    let (id, key) = cms
        .key(
            json!({"name": "site", "defaultPermissions": ["GET"], "scopes": ["export:write"],
            "apiPermissions": [{"api": "contact", "permissions": ["POST"]}],
            "environments": ["staging"]}),
        )
        .await;
    let r = cms.req(Method::GET, "/v1/self", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(
        r.body["rights"],
        json!({"everyOtherApi": ["GET"], "apis": {"contact": ["POST"]}, "scopes": ["export:write"],
               "managementPermissions": [], "environments": ["staging"]})
    );
    assert!(!r.text.contains(&key));
    let r = cms.admin(Method::GET, "/v1/self", None).await;
    assert_eq!(r.body["admin"], true);
    assert_eq!(r.body["rights"]["environments"], Value::Null);
    let r = cms.req(Method::GET, "/v1/self", None, None).await;
    assert_json_error(&r, StatusCode::UNAUTHORIZED);
}
