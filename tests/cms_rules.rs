//! The key model's rules, each driven over HTTP against a real reference CMS.

mod support;

use jiff::{SignedDuration, Timestamp};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use support::{Answers, Cms, ADMIN};

#[tokio::test]
async fn individual_permissions_replace_the_defaults() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.api("contact").await;
    let post = cms.entry("blog", json!({"title": "t"})).await;
    // The seeds' example: default GET + individual POST, PUT on contact.
    let (_, key) = cms
        .key(json!({"name": "site", "defaultPermissions": ["GET"],
                    "apiPermissions": [{"api": "contact", "permissions": ["POST", "PUT"]}]}))
        .await;
    cms.expect(&[
        (
            Method::GET,
            &format!("/api/blog/{post}"),
            &key,
            StatusCode::OK,
        ),
        (Method::GET, "/api/blog", &key, StatusCode::OK),
        (Method::POST, "/api/blog", &key, StatusCode::FORBIDDEN),
        (Method::POST, "/api/contact", &key, StatusCode::CREATED),
        (Method::PUT, "/api/contact/c1", &key, StatusCode::CREATED),
    ])
    .await;
    let r = cms.req(Method::GET, "/api/contact", Some(&key), None).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "individual permissions drop the default GET"
    );
    r.says("GET permission on API 'contact'");
    assert!(!r.text.contains(&key));
}

#[tokio::test]
async fn drafts_and_closed_need_their_permissions_and_get() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    for perm in ["GET_ALL_DRAFTS", "GET_ALL_CLOSED"] {
        let r = cms
            .admin(
                Method::POST,
                "/v1/keys",
                Some(json!({"name": "x", "defaultPermissions": [perm]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["field"], "defaultPermissions");
        r.says(&format!("{perm} requires GET"));
    }
    let r = cms
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "x", "apiPermissions": [{"api": "blog", "permissions": ["GET_ALL_DRAFTS"]}]})))
        .await;
    assert_eq!(
        r.body["field"], "apiPermissions[0].permissions",
        "{}",
        r.text
    );

    // A draft, a published entry, a closed one.
    let d = cms
        .admin(
            Method::POST,
            "/api/blog?status=draft",
            Some(json!({"title": "draft one"})),
        )
        .await;
    let draft_id = d.body["id"].as_str().unwrap().to_owned();
    let draft_key = d.body["draftKey"].as_str().unwrap().to_owned();
    cms.entry("blog", json!({"title": "live"})).await;
    let closed = cms.entry("blog", json!({"title": "old"})).await;
    assert_eq!(
        cms.admin(Method::POST, &format!("/api/blog/{closed}/close"), None)
            .await
            .status,
        StatusCode::OK
    );

    let (_, reader) = cms
        .key(json!({"name": "reader", "defaultPermissions": ["GET"]}))
        .await;
    let (_, drafts) = cms
        .key(json!({"name": "drafts", "defaultPermissions": ["GET", "GET_ALL_DRAFTS"]}))
        .await;
    let (_, closed_key) = cms
        .key(json!({"name": "closed", "defaultPermissions": ["GET", "GET_ALL_CLOSED"]}))
        .await;

    let r = cms.req(Method::GET, "/api/blog", Some(&reader), None).await;
    assert_eq!(r.body["totalCount"], 1, "published only: {}", r.text);
    let r = cms
        .req(Method::GET, "/api/blog?drafts=true", Some(&reader), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    r.says("GET_ALL_DRAFTS");
    let r = cms
        .req(Method::GET, "/api/blog?closed=true", Some(&reader), None)
        .await;
    r.says("GET_ALL_CLOSED");

    let r = cms
        .req(Method::GET, "/api/blog?drafts=true", Some(&drafts), None)
        .await;
    assert_eq!(r.body["totalCount"], 2, "{}", r.text);
    let r = cms
        .req(
            Method::GET,
            "/api/blog?closed=true",
            Some(&closed_key),
            None,
        )
        .await;
    assert_eq!(r.body["totalCount"], 2, "{}", r.text);
    cms.expect(&[
        (
            Method::GET,
            &format!("/api/blog/{closed}"),
            &reader,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            &format!("/api/blog/{closed}"),
            &closed_key,
            StatusCode::OK,
        ),
    ])
    .await;

    // One draft: its draft key opens it without the all-drafts permission.
    assert_eq!(
        cms.status(Method::GET, &format!("/api/blog/{draft_id}"), &reader)
            .await,
        StatusCode::NOT_FOUND
    );
    let r = cms
        .req(
            Method::GET,
            &format!("/api/blog/{draft_id}?draftKey={draft_key}"),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["title"], "draft one");
    let r = cms
        .req(
            Method::GET,
            &format!("/api/blog/{draft_id}?draftKey=wrong"),
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn published_with_draft_is_filtered_and_searched_on_its_published_version() {
    let cms = Cms::start().await;
    cms.api("news").await;
    let id = cms.entry("news", json!({"title": "apples"})).await;
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/api/news/{id}?status=draft"),
            Some(json!({"title": "bananas"})),
        )
        .await;
    assert_eq!(r.body["status"], "publishedWithDraft", "{}", r.text);
    let (_, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET", "GET_ALL_DRAFTS"]}))
        .await;
    for (query, expect) in [
        ("filters=title[equals]bananas", 0),
        ("filters=title[equals]apples", 1),
        ("q=banana", 0),
        ("q=APPLE", 1),
    ] {
        let r = cms
            .req(
                Method::GET,
                &format!("/api/news?drafts=true&{query}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(r.body["totalCount"], expect, "{query}: {}", r.text);
    }
    // The published version is what a plain reader gets; the draft is what a drafts listing shows.
    let r = cms
        .req(
            Method::GET,
            "/api/news?drafts=true&q=apple",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.body["contents"][0]["title"], "bananas");
    let r = cms
        .req(Method::GET, &format!("/api/news/{id}"), Some(&key), None)
        .await;
    assert_eq!(r.body["title"], "bananas", "all-drafts key sees the draft");
    let (_, plain) = cms
        .key(json!({"name": "plain", "defaultPermissions": ["GET"]}))
        .await;
    let r = cms
        .req(Method::GET, &format!("/api/news/{id}"), Some(&plain), None)
        .await;
    assert_eq!(r.body["title"], "apples");
    // Publishing the draft makes it the version that filters see.
    cms.admin(Method::POST, &format!("/api/news/{id}/publish"), None)
        .await;
    let r = cms
        .req(
            Method::GET,
            "/api/news?filters=title[equals]bananas",
            Some(&plain),
            None,
        )
        .await;
    assert_eq!(r.body["totalCount"], 1, "{}", r.text);
}

#[tokio::test]
async fn scopes_grant_their_operations_and_rights_are_the_union() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.api("contact").await;
    let (_, read) = cms
        .key(json!({"name": "r", "scopes": ["content:read"]}))
        .await;
    let (_, write) = cms
        .key(json!({"name": "w", "scopes": ["content:write"]}))
        .await;
    let (_, union) = cms
        .key(json!({"name": "u", "scopes": ["content:read"], "apiPermissions": [{"api": "contact", "permissions": ["POST"]}]}))
        .await;
    let (_, export) = cms
        .key(json!({"name": "e", "scopes": ["export:write"]}))
        .await;
    let (_, purge) = cms
        .key(json!({"name": "p", "scopes": ["cache:purge"]}))
        .await;
    let (_, hooks) = cms
        .key(json!({"name": "h", "scopes": ["webhooks:write"]}))
        .await;
    let (_, all) = cms.key(json!({"name": "all", "scopes": ["*"]})).await;

    cms.expect(&[
        (Method::GET, "/api/blog", &read, StatusCode::OK),
        (Method::POST, "/api/blog", &read, StatusCode::FORBIDDEN),
    ])
    .await;
    let id = cms
        .req(
            Method::POST,
            "/api/blog",
            Some(&write),
            Some(json!({"t": 1})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cms.expect(&[
        (
            Method::PATCH,
            &format!("/api/blog/{id}"),
            &write,
            StatusCode::OK,
        ),
        (
            Method::POST,
            &format!("/api/blog/{id}/publish"),
            &write,
            StatusCode::OK,
        ),
        (Method::GET, "/api/blog", &write, StatusCode::FORBIDDEN),
        (
            Method::DELETE,
            &format!("/api/blog/{id}"),
            &write,
            StatusCode::NO_CONTENT,
        ),
        // content:read on every API, plus POST on contact from the individual permission.
        (Method::GET, "/api/contact", &union, StatusCode::OK),
        (Method::POST, "/api/contact", &union, StatusCode::CREATED),
        (Method::POST, "/api/blog", &union, StatusCode::FORBIDDEN),
        (Method::POST, "/v1/export", &export, StatusCode::OK),
        (Method::POST, "/v1/export", &read, StatusCode::FORBIDDEN),
        (
            Method::POST,
            "/v1/cache/purge",
            &purge,
            StatusCode::ACCEPTED,
        ),
        (
            Method::POST,
            "/v1/cache/purge",
            &export,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/v1/webhooks/replay",
            &hooks,
            StatusCode::ACCEPTED,
        ),
        (
            Method::POST,
            "/v1/webhooks/replay",
            &purge,
            StatusCode::FORBIDDEN,
        ),
        // `*`: everything, administration included.
        (Method::GET, "/api/blog?drafts=true", &all, StatusCode::OK),
        (Method::GET, "/v1/keys", &all, StatusCode::OK),
        (Method::GET, "/v1/keys", &write, StatusCode::FORBIDDEN),
    ])
    .await;
}

#[tokio::test]
async fn public_keys_hold_read_rights_only() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    for (spec, field) in [
        (
            json!({"name": "p", "type": "public", "defaultPermissions": ["GET", "POST"]}),
            "defaultPermissions",
        ),
        (
            json!({"name": "p", "type": "public", "scopes": ["content:write"]}),
            "scopes",
        ),
        (
            json!({"name": "p", "type": "public", "scopes": ["*"]}),
            "scopes",
        ),
        (
            json!({"name": "p", "type": "public", "apiPermissions": [{"api": "blog", "permissions": ["DELETE"]}]}),
            "apiPermissions[0].permissions",
        ),
    ] {
        let r = cms.admin(Method::POST, "/v1/keys", Some(spec)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.body["field"], field, "{}", r.text);
        r.says("read rights only");
    }
    let (_, key) = cms
        .key(json!({"name": "p", "type": "public", "scopes": ["content:read"]}))
        .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    // A public key cannot be widened afterwards either.
    let id = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"scopes": ["content:write"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}

#[tokio::test]
async fn environments_limit_keys() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (_, key) = cms.key(json!({"name": "prod", "defaultPermissions": ["GET", "POST"], "environments": ["production"]})).await;
    cms.expect(&[
        (Method::GET, "/api/blog", &key, StatusCode::OK),
        (
            Method::GET,
            "/environments/production/api/blog",
            &key,
            StatusCode::OK,
        ),
    ])
    .await;
    let r = cms
        .req(
            Method::GET,
            "/environments/staging/api/blog",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    r.says("production");
    // Entries are per environment.
    let (_, any) = cms
        .key(json!({"name": "any", "defaultPermissions": ["GET", "POST"]}))
        .await;
    assert_eq!(
        cms.status(Method::POST, "/environments/staging/api/blog", &any)
            .await,
        StatusCode::CREATED
    );
    let r = cms
        .req(
            Method::GET,
            "/environments/staging/api/blog",
            Some(&any),
            None,
        )
        .await;
    assert_eq!(r.body["totalCount"], 1);
    let r = cms.req(Method::GET, "/api/blog", Some(&any), None).await;
    assert_eq!(r.body["totalCount"], 0);
}

#[tokio::test]
async fn missing_unknown_revoked_keys_are_401_and_errors_never_echo_keys() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let r = cms.req(Method::GET, "/api/blog", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    r.says("API key is required");
    let bogus = "kw_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = cms.req(Method::GET, "/api/blog", Some(bogus), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text.contains(bogus));
    assert_eq!(
        cms.status(Method::GET, "/api/blog", "not-a-key").await,
        StatusCode::UNAUTHORIZED
    );

    let (id, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    // A forged secret for a real key id.
    let forged = format!("{}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &key[..20]);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &forged).await,
        StatusCode::UNAUTHORIZED
    );
    // X-API-KEY works as well as Bearer.
    let r = cms
        .http
        .get(format!("{}/api/blog", cms.url))
        .header("X-API-KEY", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    assert_eq!(
        cms.admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // The very next request with the revoked key.
    let r = cms.req(Method::GET, "/api/blog", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text.contains(&key));
    assert_eq!(
        cms.admin(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn expiry_defaults_and_ranges_per_kind() {
    let cms = Cms::start().await;
    let now = Timestamp::now();
    let (_, _) = cms
        .key(json!({"name": "delivery", "defaultPermissions": ["GET"]}))
        .await;
    let (_, _) = cms
        .key(
            json!({"name": "mgmt", "kind": "management", "managementPermissions": ["keys:manage"]}),
        )
        .await;
    let keys = cms.admin(Method::GET, "/v1/keys", None).await.body;
    let expiry = |i: usize| {
        let s = keys["keys"][i]["expiresAt"].as_str().unwrap();
        s.parse::<Timestamp>()
            .unwrap()
            .duration_since(now)
            .as_secs()
            / 86_400
    };
    assert_eq!(expiry(0), 365, "delivery keys default to one year");
    assert_eq!(expiry(1), 182, "management keys default to six months");

    for (spec, ok) in [
        (
            json!({"name": "a", "expiresAt": (now + keyward::model::days(5 * 365)).to_string()}),
            true,
        ),
        (
            json!({"name": "b", "expiresAt": (now + keyward::model::days(6 * 365)).to_string()}),
            false,
        ),
        (
            json!({"name": "c", "expiresAt": (now + SignedDuration::from_secs(20)).to_string()}),
            false,
        ),
        (
            json!({"name": "d", "kind": "management", "managementPermissions": ["keys:manage"],
                "expiresAt": (now + keyward::model::days(3 * 365)).to_string()}),
            false,
        ),
    ] {
        let r = cms.admin(Method::POST, "/v1/keys", Some(spec)).await;
        if ok {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        } else {
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
            assert_eq!(r.body["field"], "expiresAt");
        }
    }
}

#[tokio::test]
async fn expired_keys_answer_401() {
    let mut cms = Cms::start().await;
    cms.api("blog").await;
    let (id, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    // No API sets a past expiry, so move it back in the database while the service is down.
    cms.running.take().unwrap().stop().await;
    {
        let db = rusqlite::Connection::open(cms.dir.path().join("keyward-cms.db")).unwrap();
        let rec: String = db
            .query_row("SELECT record FROM keys WHERE id = ?1", [&id], |r| r.get(0))
            .unwrap();
        let mut rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
        rec["spec"]["expiresAt"] =
            json!((Timestamp::now() - SignedDuration::from_secs(5)).to_string());
        db.execute(
            "UPDATE keys SET record = ?1 WHERE id = ?2",
            [rec.to_string(), id.clone()],
        )
        .unwrap();
    }
    cms.restart().await;
    let r = cms.req(Method::GET, "/api/blog", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    r.says("expired");
}

#[tokio::test]
async fn personal_keys_follow_their_owner() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let r = cms
        .admin(
            Method::PUT,
            "/v1/roles/editor",
            Some(json!({"contentPermissions": ["GET", "POST"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    cms.admin(
        Method::PUT,
        "/v1/roles/viewer",
        Some(json!({"contentPermissions": ["GET"]})),
    )
    .await;
    let r = cms
        .admin(
            Method::POST,
            "/v1/members",
            Some(json!({"name": "ann", "role": "editor"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (_, key) = cms
        .key(json!({"name": "ann-personal", "kind": "personal", "owner": "ann"}))
        .await;
    assert_eq!(
        cms.status(Method::POST, "/api/blog", &key).await,
        StatusCode::CREATED
    );
    // One personal key per member.
    let r = cms
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "ann-2", "kind": "personal", "owner": "ann"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // The role is read at request time: narrowing it narrows the key at once.
    cms.admin(
        Method::PUT,
        "/v1/roles/editor",
        Some(json!({"contentPermissions": ["GET"]})),
    )
    .await;
    cms.expect(&[
        (Method::POST, "/api/blog", &key, StatusCode::FORBIDDEN),
        (Method::GET, "/api/blog", &key, StatusCode::OK),
    ])
    .await;
    let r = cms
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "bob", "kind": "personal", "owner": "bob"})),
        )
        .await;
    assert_eq!(r.body["field"], "owner", "{}", r.text);
    // Removing the member kills the key.
    assert_eq!(
        cms.admin(Method::DELETE, "/v1/members/ann", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn management_keys_hold_management_permissions() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    // It hands out GET, so it must hold GET itself (content:read), besides keys:manage.
    let (_, keys) = cms
        .key(json!({"name": "keys", "kind": "management",
            "managementPermissions": ["keys:manage", "content:read"]}))
        .await;
    let (_, status) = cms.key(json!({"name": "status", "kind": "management", "managementPermissions": ["content:status"]})).await;
    let (_, content_key) = cms
        .key(json!({"name": "reader", "defaultPermissions": ["GET"]}))
        .await;
    let r = cms
        .req(
            Method::POST,
            "/v1/keys",
            Some(&keys),
            Some(json!({"name": "made-by-key", "defaultPermissions": ["GET"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = cms
        .req(
            Method::PUT,
            "/v1/cors",
            Some(&keys),
            Some(json!({"origins": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    r.says("settings:manage");
    let r = cms
        .req(Method::GET, "/v1/keys", Some(&content_key), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    r.says("keys:manage");
    let d = cms
        .admin(
            Method::POST,
            "/api/blog?status=draft",
            Some(json!({"t": 1})),
        )
        .await;
    let id = d.body["id"].as_str().unwrap();
    cms.expect(&[
        (
            Method::POST,
            &format!("/api/blog/{id}/publish"),
            &status,
            StatusCode::OK,
        ),
        (
            Method::PATCH,
            &format!("/api/blog/{id}"),
            &status,
            StatusCode::FORBIDDEN,
        ),
    ])
    .await;
    // Kinds keep to their own rights.
    let r = cms.admin(Method::POST, "/v1/keys", Some(json!({"name": "x", "kind": "management", "managementPermissions": ["keys:manage"], "defaultPermissions": ["GET"]}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = cms
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "x", "managementPermissions": ["keys:manage"]})),
        )
        .await;
    assert_eq!(r.body["field"], "managementPermissions");
}

#[tokio::test]
async fn key_changes_take_effect_at_once() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (id, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    cms.expect(&[
        (Method::GET, "/api/blog", &key, StatusCode::OK),
        (Method::POST, "/api/blog", &key, StatusCode::FORBIDDEN),
    ])
    .await;
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"defaultPermissions": ["POST"], "description": "writer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["description"], "writer");
    cms.expect(&[
        (Method::POST, "/api/blog", &key, StatusCode::CREATED),
        (Method::GET, "/api/blog", &key, StatusCode::FORBIDDEN),
    ])
    .await;
    // Unknown fields and unknown permissions name the field.
    let r = cms
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"defaultPermissions": ["FETCH"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["field"], "defaultPermissions[0]", "{}", r.text);
    let path = format!("/v1/keys/{id}");
    let patch = |body: serde_json::Value| cms.admin(Method::PATCH, &path, Some(body));
    let r = patch(json!({"kind": "management"})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    r.says("unknown field `kind`");
    let r = patch(json!({"name": "renamed"})).await;
    assert_eq!(r.body["name"], "renamed", "{}", r.text);
    cms.key(json!({"name": "other"})).await;
    let r = patch(json!({"name": "other"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    patch(json!({"name": "k"})).await;
    let r = cms
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "k"})))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "names are unique: {}",
        r.text
    );
    let r = cms
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "z", "apiPermissions": [{"api": "nope", "permissions": ["GET"]}]})),
        )
        .await;
    assert_eq!(r.body["field"], "apiPermissions[0].api", "{}", r.text);
}

#[tokio::test]
async fn regenerate_with_and_without_grace() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (id, old) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK
    );
    let r = cms.regenerate(&id, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let new = r.body["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::UNAUTHORIZED,
        "old value stops at once"
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );

    let r = cms.regenerate(&id, Some(json!(2))).await;
    let newer = r.body["key"].as_str().unwrap().to_owned();
    let until: Timestamp = r.body["previousValidUntil"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK,
        "old value works during grace"
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &newer).await,
        StatusCode::OK
    );
    // Waits on the value's refusal itself; a refusal answered before the grace's end (by the
    // time its answer is back) is too early.
    support::eventually(
        "the grace to end",
        std::time::Duration::from_secs(30),
        || async {
            let refused =
                cms.status(Method::GET, "/api/blog", &new).await == StatusCode::UNAUTHORIZED;
            let answered = Timestamp::now();
            assert!(
                !refused || answered >= until,
                "refused at {answered}, before the grace ended ({until})"
            );
            refused
        },
    )
    .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &newer).await,
        StatusCode::OK
    );
    let r = cms.regenerate(&id, Some(json!(99999999))).await;
    assert_eq!(r.body["field"], "graceSeconds", "{}", r.text);
}

#[tokio::test]
async fn plan_quotas_name_the_plan() {
    let cms = Cms::start_with(|c| c.plan = Some(keyward::model::Tier::Hobby)).await;
    cms.key(json!({"name": "one"})).await;
    let r = cms
        .admin(Method::POST, "/v1/keys", Some(json!({"name": "two"})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["error"], "plan_limit");
    r.says("hobby plan allows 1");
}

#[tokio::test]
async fn cors_is_deny_by_default() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let preflight = |origin: &'static str| {
        cms.http
            .request(Method::OPTIONS, format!("{}/api/blog", cms.url))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let acao = "access-control-allow-origin";
    assert!(preflight("https://shop.example.com")
        .await
        .unwrap()
        .headers()
        .get(acao)
        .is_none());
    let r = cms
        .admin(
            Method::PUT,
            "/v1/cors",
            Some(json!({"origins": ["https://shop.example.com"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(r.headers().get(acao).unwrap(), "https://shop.example.com");
    assert!(preflight("https://evil.example.com")
        .await
        .unwrap()
        .headers()
        .get(acao)
        .is_none());
    // Plain requests too.
    let r = cms
        .http
        .get(format!("{}/api/blog", cms.url))
        .header("Origin", "https://evil.example.com")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(acao).is_none());
    let r = cms
        .admin(
            Method::PUT,
            "/v1/cors",
            Some(json!({"origins": ["https://shop.example.com/path"]})),
        )
        .await;
    assert_eq!(r.body["field"], "origins[0]", "{}", r.text);
    cms.admin(Method::PUT, "/v1/cors", Some(json!({"origins": ["*"]})))
        .await;
    assert!(preflight("https://evil.example.com")
        .await
        .unwrap()
        .headers()
        .get(acao)
        .is_some());
}

/// Owners' entries: each writer (a policy) replaces only its own origins and public operations;
/// what browsers and anonymous callers get is the union of every owner's and the base.
#[tokio::test]
async fn each_owner_holds_its_own_origins_and_public_operations() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let put = |path: &'static str, body: Value| cms.admin(Method::PUT, path, Some(body));
    let cms_ref = &cms;
    let allowed = |origin: &'static str| async move {
        let cms = cms_ref;
        cms.http
            .request(Method::OPTIONS, format!("{}/api/blog", cms.url))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await
            .unwrap()
            .headers()
            .contains_key("access-control-allow-origin")
    };
    put("/v1/cors", json!({"origins": ["https://base.example"]})).await;
    let r = put(
        "/v1/cors/owners/policy:shop.a",
        json!({"origins": ["https://a.example"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    put(
        "/v1/cors/owners/policy:shop.b",
        json!({"origins": ["https://b.example"]}),
    )
    .await;
    // b writing again replaces b's origins only.
    put(
        "/v1/cors/owners/policy:shop.b",
        json!({"origins": ["https://b2.example"]}),
    )
    .await;
    let cors = cms.admin(Method::GET, "/v1/cors", None).await.body;
    assert_eq!(cors["origins"], json!(["https://base.example"]), "{cors}");
    assert_eq!(
        cors["owners"],
        json!({"policy:shop.a": ["https://a.example"], "policy:shop.b": ["https://b2.example"]})
    );
    for o in [
        "https://base.example",
        "https://a.example",
        "https://b2.example",
    ] {
        assert!(allowed(o).await, "{o}");
    }
    assert!(!allowed("https://b.example").await);
    // Public operations: an owner's list makes `GET /api/blog` public; removing it closes it.
    assert_eq!(
        cms.req(Method::GET, "/api/blog", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = put(
        "/v1/apis/blog/public/owners/policy:shop.a",
        json!({"operations": ["list"]}),
    )
    .await;
    assert_eq!(
        r.body,
        json!({"origins": ["https://a.example"], "publicEndpoints": {"blog": ["list"]}})
    );
    assert_eq!(
        cms.req(Method::GET, "/api/blog", None, None).await.status,
        StatusCode::OK
    );
    let public = cms
        .admin(Method::GET, "/v1/apis/blog/public", None)
        .await
        .body;
    assert_eq!(
        public["operations"],
        json!([]),
        "the base is untouched: {public}"
    );
    assert_eq!(public["effective"], json!(["list"]));
    // An owner's whole entry goes at once.
    let r = cms
        .admin(Method::DELETE, "/v1/owners/policy:shop.a", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(!allowed("https://a.example").await);
    assert_eq!(
        cms.req(Method::GET, "/api/blog", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let owners = cms.admin(Method::GET, "/v1/owners", None).await.body;
    assert_eq!(
        owners,
        json!({"owners": {"policy:shop.b": {"origins": ["https://b2.example"]}}})
    );
    // Bad input: the field and the reason; nothing stored.
    let r = put(
        "/v1/cors/owners/policy:shop.b",
        json!({"origins": ["https://x.example/path"]}),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("origins[0]")),
        "{}",
        r.text
    );
    let r = put(
        "/v1/apis/nope/public/owners/policy:shop.b",
        json!({"operations": ["list"]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = put(
        "/v1/apis/blog/public/owners/policy:shop.b",
        json!({"operations": ["destroy"]}),
    )
    .await;
    assert!(r.status.is_client_error(), "{}", r.text);
    let r = put("/v1/cors/owners/a%20b", json!({"origins": []})).await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("owner")),
        "{}",
        r.text
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/owners", None).await.body,
        owners
    );
}

#[tokio::test]
async fn public_endpoints_need_no_key_show_unsecured_and_are_rate_limited() {
    let cms = Cms::start_with(|c| c.public_rate = keyward::cms::Rate::new(2).unwrap()).await;
    cms.api("contact").await;
    cms.api("blog").await;
    assert_eq!(
        cms.req(Method::POST, "/api/contact", None, Some(json!({"m": 1})))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = cms
        .admin(
            Method::PUT,
            "/v1/apis/contact/public",
            Some(json!({"operations": ["create"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Anonymous callers get the generic description, without the API names.
    let generic = cms.req(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(generic.status, StatusCode::OK, "{}", generic.text);
    assert!(generic.body["paths"]["/api/{api}"]["get"].is_object());
    assert!(!generic.text.contains("contact") && !generic.text.contains("blog"));
    let doc = cms.admin(Method::GET, "/v1/openapi.json", None).await.body;
    assert_eq!(doc["paths"]["/api/contact"]["post"]["security"], json!([]));
    assert!(doc["paths"]["/api/contact"]["get"]
        .get("security")
        .is_none());
    assert!(doc["paths"]["/api/blog"]["post"].get("security").is_none());
    assert!(doc["paths"]["/v1/keys"]["post"].is_object());
    // Burst of 4 at 2/s, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = cms
            .req(Method::POST, "/api/contact", None, Some(json!({"m": 1})))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers.get("retry-after").is_some());
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // Only the public operation is public.
    assert_eq!(
        cms.req(Method::GET, "/api/contact", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = cms
        .admin(
            Method::PUT,
            "/v1/apis/contact/public",
            Some(json!({"operations": ["destroy"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}

#[tokio::test]
async fn keys_are_rate_limited() {
    let cms = Cms::start_with(|c| c.key_rate = keyward::cms::Rate::new(1).unwrap()).await;
    cms.api("blog").await;
    let (_, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    let mut last = None;
    for _ in 0..4 {
        last = Some(cms.req(Method::GET, "/api/blog", Some(&key), None).await);
    }
    let r = last.unwrap();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!(r.headers.get("retry-after").is_some());
}

#[tokio::test]
async fn raw_keys_are_shown_once_and_stored_as_argon2id() {
    let cms = Cms::start().await;
    let (id, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    assert!(
        key.starts_with(&format!("kw_{id}_")),
        "the public id is inside the value"
    );
    let secret = &key[format!("kw_{id}_").len()..];
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(secret)
            .unwrap()
            .len(),
        32
    );
    for path in ["/v1/keys".to_owned(), format!("/v1/keys/{id}")] {
        let r = cms.admin(Method::GET, &path, None).await;
        assert!(!r.text.contains(&key) && !r.text.contains(secret), "{path}");
        assert!(!r.text.contains("argon2"), "no hash in records");
        assert!(!r.text.contains("\"key\""), "{}", r.text);
    }
    let db = rusqlite::Connection::open(cms.dir.path().join("keyward-cms.db")).unwrap();
    let (hash, record): (String, String) = db
        .query_row("SELECT hash, record FROM keys", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(secret) && !record.contains(secret));
    // Two keys never share a value.
    let (_, other) = cms.key(json!({"name": "k2"})).await;
    assert_ne!(key, other);
}

#[tokio::test]
async fn apis_are_created_idempotently_and_listed() {
    let cms = Cms::start().await;
    assert_eq!(
        cms.admin(Method::PUT, "/v1/apis/blog", None).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        cms.admin(Method::PUT, "/v1/apis/blog", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        cms.admin(Method::PUT, "/v1/apis/Bad%20Name", None)
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let r = cms.admin(Method::GET, "/v1/apis", None).await;
    assert_eq!(r.body["apis"][0]["name"], "blog");
    assert_eq!(
        cms.req(Method::GET, "/api/nope", Some(ADMIN), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn verification_costs_one_argon2id_per_value_and_a_regenerate_evicts_the_cache() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let verifier = &cms.running.as_ref().unwrap().service.verifier;
    let (id, key) = cms
        .key(json!({"name": "k", "defaultPermissions": ["GET"]}))
        .await;
    let bogus = "kw_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for _ in 0..5 {
        assert_eq!(
            cms.status(Method::GET, "/api/blog", bogus).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        verifier.argon2_checks(),
        0,
        "unknown key ids are rejected without hashing"
    );
    // Many concurrent first requests with the same value: one Argon2id check.
    let all =
        futures::future::join_all((0..32).map(|_| cms.status(Method::GET, "/api/blog", &key)))
            .await;
    assert!(all.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(verifier.argon2_checks(), 1);
    for _ in 0..10 {
        cms.status(Method::GET, "/api/blog", &key).await;
    }
    assert_eq!(verifier.argon2_checks(), 1, "later checks hit the cache");
    cms.admin(
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({"description": "changed"})),
    )
    .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    assert_eq!(
        verifier.argon2_checks(),
        1,
        "an edit keeps the verified value: the key's values did not change"
    );
    let r = cms.regenerate(&id, Some(json!(60))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &key).await,
        StatusCode::OK
    );
    assert_eq!(
        verifier.argon2_checks(),
        2,
        "a regenerate evicts the cached check"
    );
}

#[tokio::test]
async fn keys_can_be_listed_by_label() {
    let cms = Cms::start().await;
    cms.key(json!({"name": "a", "labels": {"keyward.dev/policy": "shop.web"}}))
        .await;
    cms.key(json!({"name": "b", "labels": {"keyward.dev/policy": "shop.other"}}))
        .await;
    cms.key(json!({"name": "c"})).await;
    let r = cms
        .admin(
            Method::GET,
            "/v1/keys?label=keyward.dev%2Fpolicy%3Dshop.web",
            None,
        )
        .await;
    let names: Vec<&str> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys?label=nonsense", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

/// The key listing is built from records rendered when they were stored: every change shows in
/// the next listing exactly as the key itself reads.
#[tokio::test]
async fn the_key_listing_shows_every_change_at_once() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (id, _) = cms
        .key(json!({"name": "site", "defaultPermissions": ["GET"], "labels": {"team": "web"}}))
        .await;
    let listed = |body: Value| {
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .cloned()
            .unwrap()
    };
    let patch = json!({"description": "changed", "defaultPermissions": ["GET", "POST"]});
    let r = cms
        .admin(Method::PATCH, &format!("/v1/keys/{id}"), Some(patch))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let one = cms
        .admin(Method::GET, &format!("/v1/keys/{id}"), None)
        .await
        .body;
    assert_eq!(one["description"], "changed");
    let list = cms.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(
        list.headers["content-type"], "application/json",
        "{:?}",
        list.headers
    );
    assert_eq!(
        listed(list.body),
        one,
        "the listing shows the key as it reads"
    );
    let r = cms.regenerate(&id, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let one = cms
        .admin(Method::GET, &format!("/v1/keys/{id}"), None)
        .await
        .body;
    assert!(one["rotatedAt"].is_string(), "{one}");
    let labelled = cms
        .admin(Method::GET, "/v1/keys?label=team%3Dweb", None)
        .await
        .body;
    assert_eq!(listed(labelled), one);
    let other = cms
        .admin(Method::GET, "/v1/keys?label=team%3Dshop", None)
        .await
        .body;
    assert_eq!(other["keys"], json!([]));
    let r = cms
        .admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let after = cms.admin(Method::GET, "/v1/keys", None).await.body;
    assert!(
        after["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != id.as_str()),
        "{after}"
    );
}

/// Bad input gets the CMS's JSON error everywhere: a malformed query on a scope-granted
/// operation (a repeated `environment`), and a role name that is not a slug, which says what a
/// name may contain.
#[tokio::test]
async fn bad_queries_and_names_get_the_json_error_that_says_why() {
    let cms = Cms::start().await;
    for path in [
        "/v1/export?environment=a&environment=b",
        "/v1/cache/purge?environment=a&environment=b",
        "/v1/webhooks/replay?environment=a&environment=b",
    ] {
        let r = cms.admin(Method::POST, path, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        r.says("environment");
    }
    let r = cms
        .admin(
            Method::PUT,
            "/v1/roles/Editors",
            Some(json!({"contentPermissions": ["GET"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    r.says("is not a role name (lowercase letters, digits, '-', '_')");
    assert!(
        !r.text.contains("Editors"),
        "the name sent is not repeated: {}",
        r.text
    );
}

/// A GET of one entry is answered before the router when it can be (`api_content::read_hot`);
/// the same request with its id percent-encoded always goes through the router. Both answer
/// alike, byte for byte, for every kind of caller and entry: drafts with and without their key
/// or right, closed entries, unknown ones, keys without GET or of another environment, wrong
/// keys, no key, and the environment path.
#[tokio::test]
async fn a_read_of_one_entry_answers_the_same_before_the_router_and_through_it() {
    // The wrong key is checked at each try: room for all of them (a 429's retry time differs).
    let cms = Cms::start_with(|c| c.verify_rate = keyward::cms::Rate::new(1000).unwrap()).await;
    cms.api("blog").await;
    let d = cms
        .admin(
            Method::POST,
            "/api/blog?status=draft",
            Some(json!({"title": "draft"})),
        )
        .await;
    let draft = d.body["id"].as_str().unwrap().to_owned();
    let draft_key = d.body["draftKey"].as_str().unwrap().to_owned();
    let live = cms.entry("blog", json!({"title": "live"})).await;
    let closed = cms.entry("blog", json!({"title": "old"})).await;
    cms.admin(Method::POST, &format!("/api/blog/{closed}/close"), None)
        .await;
    let staged = cms
        .admin(
            Method::POST,
            "/environments/staging/api/blog",
            Some(json!({"title": "staged"})),
        )
        .await;
    let staged = staged.body["id"].as_str().unwrap().to_owned();
    let mut callers = vec![
        None,
        Some("kw_0000000000000000_wrongwrongwrongwrongwrongwrongwrongwrong1".to_owned()),
    ];
    for spec in [
        json!({"name": "reader", "defaultPermissions": ["GET"]}),
        json!({"name": "drafts", "defaultPermissions": ["GET", "GET_ALL_DRAFTS"]}),
        json!({"name": "closed", "defaultPermissions": ["GET", "GET_ALL_CLOSED"]}),
        json!({"name": "writer", "defaultPermissions": ["POST"]}),
        json!({"name": "staging", "defaultPermissions": ["GET"], "environments": ["staging"]}),
    ] {
        callers.push(Some(cms.key(spec).await.1));
    }
    let reads = [
        (String::new(), draft.clone(), String::new()),
        (
            String::new(),
            draft.clone(),
            format!("?draftKey={draft_key}"),
        ),
        (String::new(), draft, "?draftKey=wrong".to_owned()),
        (String::new(), live, String::new()),
        (String::new(), closed, String::new()),
        (String::new(), "nosuchentry".to_owned(), String::new()),
        (
            "/environments/staging".to_owned(),
            staged.clone(),
            String::new(),
        ),
        ("/environments/NOT_A_NAME".to_owned(), staged, String::new()),
    ];
    let mut compared = 0;
    for key in &callers {
        for (env, id, query) in &reads {
            let hot = format!("{env}/api/blog/{id}{query}");
            let (first, rest) = id.split_at(1);
            let routed = format!("{env}/api/blog/%{:02X}{rest}{query}", first.as_bytes()[0]);
            let a = cms.req(Method::GET, &hot, key.as_deref(), None).await;
            let b = cms.req(Method::GET, &routed, key.as_deref(), None).await;
            let head = |r: &support::Resp| {
                [header::CONTENT_TYPE, header::VARY].map(|h| r.headers.get(h).cloned())
            };
            assert_eq!(
                (a.status, &a.text, head(&a)),
                (b.status, &b.text, head(&b)),
                "{hot} with {key:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 7 * 8);
}
