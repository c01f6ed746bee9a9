//! The `directus` provider against a real Directus 11.17.4 (installed and started by
//! `scripts/directus.sh`): keys are Directus users with static tokens that hold exactly the
//! declared rights (drafts through the `status` filter); drift is shown and repaired; a lost
//! Secret regenerates (the old value answers 401 at once); revoke deletes the user and its
//! policy (401 at once); what Directus cannot hold is refused by field before any write; users
//! keyward did not make are never touched; the CLI through the binary.

mod support;

use keyward::gitops::Mode;
use keyward::providers::directus::Directus;
use keyward::providers::{CmsProvider, ProviderError};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use support::directus::DirectusServer;
use support::{
    apply_twice, check_access, done, example_for, examples, live_differences_are, manifest, pairs,
    plan_changes_without_writes, planned, rotated_in_place, run, secret_field, value, Answers,
    EXAMPLES_ACCESS,
};

/// The Directus example (examples-directus/blog) with the test Directus's endpoint.
fn directus_blog_example(dir: &Path, s: &DirectusServer) -> std::path::PathBuf {
    example_for(
        dir,
        "directus",
        "blog/policy.yaml",
        "http://127.0.0.1:8055",
        &s.url,
    )
}

/// The titles a key sees in a listing of `articles`.
async fn titles(s: &DirectusServer, key: &str) -> Vec<String> {
    let (status, v) = s.call(Method::GET, "articles", key).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut t: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_apply_and_their_keys_hold_exactly_the_declared_rights() {
    let s = DirectusServer::start().await;
    s.item(
        "articles",
        json!({"title": "published one", "status": "published"}),
    )
    .await;
    s.item("articles", json!({"title": "a draft", "status": "draft"}))
        .await;
    s.item(
        "articles",
        json!({"title": "archived", "status": "archived"}),
    )
    .await;
    let policies_before = s.policy_count().await;
    let out = tempfile::tempdir().unwrap();
    let ex02 = examples().join("02-public-and-private-apis");
    let ex03 = examples().join("03-multi-device");
    let blog = directus_blog_example(out.path(), &s);

    plan_changes_without_writes(&s, &[&ex02, &ex03, &blog], out.path()).await;
    assert!(s.users().await.is_empty(), "plan made no user");
    apply_twice(&s, &[&ex02, &ex03, &blog], out.path()).await;
    let users = s.users().await;
    assert_eq!(users.len(), 7, "{:?}", users.keys());
    assert_eq!(
        s.policy_count().await,
        policies_before + 7,
        "one policy per key"
    );

    check_access(&s, out.path(), EXAMPLES_ACCESS).await;
    let blog_access = "
        blog directus-frontend DIRECTUS_TOKEN articles GET  200
        blog directus-frontend DIRECTUS_TOKEN authors  POST 403
        blog directus-editor   DIRECTUS_TOKEN articles POST 200
        blog directus-editor   DIRECTUS_TOKEN authors  GET  200
        blog directus-editor   DIRECTUS_TOKEN authors  POST 403
        # Write-only: Directus creates the item and, unable to read it back, answers 204.
        blog directus-importer DIRECTUS_TOKEN authors  POST 204
        blog directus-importer DIRECTUS_TOKEN articles GET  403
    ";
    check_access(&s, out.path(), blog_access).await;
    // Drafts: GET sees what is published; GET_ALL_DRAFTS adds drafts, not archived items.
    let frontend = value(out.path(), "blog", "directus-frontend", "DIRECTUS_TOKEN");
    assert_eq!(titles(&s, &frontend).await, ["published one"]);
    let editor = value(out.path(), "blog", "directus-editor", "DIRECTUS_TOKEN");
    let seen = titles(&s, &editor).await;
    assert!(
        seen.contains(&"a draft".to_owned()) && !seen.contains(&"archived".to_owned()),
        "{seen:?}"
    );
    assert_eq!(
        secret_field(out.path(), "blog", "directus-frontend", "DIRECTUS_URL").as_deref(),
        Some(s.url.as_str())
    );

    // What Directus stores: the ownership tag, a policy per key with its rows, no admin access.
    let fe = &users["blog.site.frontend"];
    let tag = fe["description"].as_str().unwrap();
    assert!(tag.starts_with("the site's pages read what is published\n\n[keyward policy=blog.site key=frontend type=public created="), "{tag}");
    assert_eq!(fe["policies"].as_array().unwrap().len(), 1);
    let policy = &fe["policies"][0]["policy"];
    assert_eq!(policy["name"], "blog.site.frontend");
    let mut rows: Vec<(String, String, Value)> = policy["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["collection"].as_str().unwrap().into(),
                r["action"].as_str().unwrap().into(),
                r["permissions"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        rows,
        [
            (
                "articles".into(),
                "read".into(),
                json!({"status": {"_in": ["published"]}})
            ),
            ("authors".into(), "read".into(), Value::Null),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_regenerate_revoke_and_users_keyward_did_not_make() {
    let s = DirectusServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let policy = |keys: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n{keys}"
        )
    };
    let reader = "    - name: reader\n      apiPermissions: [{api: articles, permissions: [GET]}]\n      secret: {name: reader}\n";
    let writer = "    - name: writer\n      apiPermissions: [{api: authors, permissions: [GET, POST]}]\n      secret: {name: writer}\n";
    let both = manifest(out.path(), "p.yaml", &policy(&format!("{reader}{writer}")));
    // A user keyward did not make, with a token of its own and rights on authors.
    let (status, foreign) = s
        .admin(
            Method::POST,
            "/users",
            Some(json!({"first_name": "team.app.writer", "description": "made by hand", "token": "hand-made-token-1", "status": "active"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{foreign}");
    let foreign_id = foreign["data"]["id"].clone();

    let first = apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(
        planned(&first),
        pairs(&[("create", "team/app/reader"), ("create", "team/app/writer")])
    );
    let reader_v1 = value(out.path(), "team", "reader", "apiKey");
    let writer_v1 = value(out.path(), "team", "writer", "apiKey");
    s.expect(&[
        (Method::GET, "articles", &reader_v1, StatusCode::OK),
        (Method::GET, "authors", &reader_v1, StatusCode::FORBIDDEN),
        (Method::POST, "authors", &writer_v1, StatusCode::OK),
    ])
    .await;

    // Drift: a right added by hand to the reader's policy, and the user suspended.
    let users = s.users().await;
    let reader_user = users
        .values()
        .find(|u| {
            u["description"]
                .as_str()
                .unwrap_or("")
                .contains("key=reader")
        })
        .unwrap()
        .clone();
    let reader_id = reader_user["id"].as_str().unwrap().to_owned();
    let reader_name = reader_user["first_name"].as_str().unwrap().to_owned();
    let policy_id = reader_user["policies"][0]["policy"]["id"].clone();
    let (status, v) = s
        .admin(
            Method::POST,
            "/permissions",
            Some(json!({"policy": policy_id, "collection": "articles", "action": "create", "fields": ["*"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Created (a draft, which the key cannot read back: 204).
    assert_eq!(
        s.status(Method::POST, "articles", &reader_v1).await,
        StatusCode::NO_CONTENT
    );
    // explain --live names the right added by hand.
    let added = ("POST on API 'articles'", "refused", "granted");
    live_differences_are(&s, &[&both], "team/app/reader", &[added]).await;
    let plan = run(&s, &[&both], out.path(), Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("update", "team/app/reader")]));
    // The diff takes away the right given behind keyward's back (live `-`), and adds none.
    let text = plan.text();
    // The diff is indented by 6 under its action; then each line starts with ' ', '-' or '+'.
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("      "))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('-') && l.contains("POST")),
        "the diff takes POST away: {text}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with('+') && l.contains("POST")),
        "the diff adds no POST: {text}"
    );
    apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(
        s.status(Method::POST, "articles", &reader_v1).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.status(Method::GET, "articles", &reader_v1).await,
        StatusCode::OK,
        "same value"
    );

    // A filter on what the key may set, added to its row by hand: drift too, and repaired.
    let rows = s.users().await[&reader_name]["policies"][0]["policy"]["permissions"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let (status, v) = s
        .admin(
            Method::PATCH,
            &format!("/permissions/{}", rows[0]["id"]),
            Some(json!({"presets": {"title": "forced"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let plan = run(&s, &[&both], out.path(), Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("update", "team/app/reader")]));
    apply_twice(&s, &[&both], out.path()).await;
    let rows = s.users().await[&reader_name]["policies"][0]["policy"]["permissions"].clone();
    assert_eq!(rows[0]["presets"], Value::Null, "{rows}");

    let (status, _) = s
        .admin(
            Method::PATCH,
            &format!("/users/{reader_id}"),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.status(Method::GET, "articles", &reader_v1).await,
        StatusCode::UNAUTHORIZED
    );
    let plan = run(&s, &[&both], out.path(), Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("update", "team/app/reader")]));
    apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(
        s.status(Method::GET, "articles", &reader_v1).await,
        StatusCode::OK,
        "active again"
    );

    // A policy renamed by hand (the key's name): named back, same user, same value.
    let (status, _) = s
        .admin(
            Method::PATCH,
            &format!("/policies/{}", policy_id.as_str().unwrap()),
            Some(json!({"name": "someone renamed it"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let renamed = apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(planned(&renamed).len(), 1, "{}", renamed.text());
    let (_, p) = s
        .admin(
            Method::GET,
            &format!("/policies/{}?fields=name", policy_id.as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(p["data"]["name"], "team.app.reader");
    assert_eq!(
        s.status(Method::GET, "articles", &reader_v1).await,
        StatusCode::OK
    );

    // A lost Secret: the token is regenerated on the same user; the old value answers 401.
    std::fs::remove_file(out.path().join("team.reader.yaml")).unwrap();
    let rotated = apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(planned(&rotated), pairs(&[("rotate", "team/app/reader")]));
    let reader_v2 = value(out.path(), "team", "reader", "apiKey");
    assert_ne!(reader_v1, reader_v2);
    s.replaced("articles", &reader_v1, &reader_v2).await;
    assert!(
        s.users()
            .await
            .values()
            .any(|u| u["id"] == reader_id.as_str()),
        "same user"
    );

    // Rotated on request (keyward rotate): a new token on the same user, the old one 401
    // (Directus holds one token per user, so no rotationOverlap).
    let writer_v1 = rotated_in_place(&s, &[&both], out.path(), "authors", &writer_v1).await;

    // A key removed from the policy is revoked: 401 at once, its user and policy gone.
    let policies_before = s.policy_count().await;
    let only_reader = manifest(out.path(), "reader-only.yaml", &policy(reader));
    let revoked = apply_twice(&s, &[&only_reader], out.path()).await;
    assert_eq!(planned(&revoked), pairs(&[("revoke", "team.app.writer")]));
    assert!(
        done(&revoked)[0].starts_with("revoked key team/app/writer (id "),
        "{:?}",
        done(&revoked)
    );
    assert_eq!(
        s.status(Method::GET, "authors", &writer_v1).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.policy_count().await, policies_before - 1);

    // The hand-made user with the same name: never adopted, changed or revoked.
    let users = s.users().await;
    let hand = users
        .values()
        .find(|u| u["id"] == foreign_id)
        .expect("still there");
    assert_eq!(
        (hand["description"].as_str(), hand["status"].as_str()),
        (Some("made by hand"), Some("active"))
    );
    assert_eq!(users.len(), 2, "{:?}", users.keys());
    assert_eq!(
        s.status(Method::GET, "articles", "hand-made-token-1").await,
        StatusCode::FORBIDDEN,
        "its token still works (and has no rights)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_directus_cannot_hold_is_refused_by_field_before_any_write() {
    let s = DirectusServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let policies_before = s.policy_count().await;
    for (ex, field) in [
        (
            "01-read-only-with-contact-form",
            "spec.keys[0].expiresAfter",
        ),
        (
            "01-read-only-with-contact-form",
            "spec.keys[1].rotationOverlap",
        ),
        ("04-preview-one-environment", "spec.keys[0].environments"),
        ("05-management-for-migrations", "spec.keys[0].kind"),
        ("06-public-scoped-keys-with-cors", "spec.cors"),
        ("06-public-scoped-keys-with-cors", "spec.publicEndpoints"),
    ] {
        let err = run(&s, &[&examples().join(ex)], out.path(), Mode::Plan)
            .await
            .err()
            .unwrap_or_else(|| panic!("{ex} is refused"));
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "{field}: the directus provider cannot express this"
            )),
            "{ex}: {msg}"
        );
    }
    // What only the live Directus can tell: its collections and which have a status field.
    let key = |k: &str| {
        format!("apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n    - name: k\n      secret: {{name: k}}\n{k}")
    };
    for (i, (k, field, reason)) in [
        (
            "      apiPermissions: [{api: authors, permissions: [GET, GET_ALL_DRAFTS]}]\n",
            "spec.keys[0].apiPermissions[0].permissions[1]",
            "collection 'authors' has no status field",
        ),
        (
            "      apiPermissions: [{api: nope, permissions: [GET]}]\n",
            "spec.keys[0].apiPermissions[0].api",
            "this Directus has no collection 'nope' (its collections: articles, authors)",
        ),
        (
            "      scopes: ['cache:purge']\n",
            "spec.keys[0].scopes[0]",
            "'cache:purge' has no Directus equivalent",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let p = manifest(out.path(), &format!("k{i}.yaml"), &key(k));
        for mode in [Mode::Plan, Mode::Apply] {
            let msg = run(&s, &[&p], out.path(), mode)
                .await
                .err()
                .unwrap_or_else(|| panic!("{k}: refused"))
                .to_string();
            assert!(
                msg.contains(&format!(
                    "{field}: the directus provider cannot express this: {reason}"
                )),
                "{msg}"
            );
        }
    }
    assert!(s.users().await.is_empty(), "refused plans create no user");
    assert_eq!(s.policy_count().await, policies_before, "nor any policy");

    // Through the provider: an admin token is the credential; a wrong one is Directus's 401.
    assert!(Directus::new(&s.url, " ").is_err());
    let wrong = Directus::new(&s.url, "not-the-admin-token").unwrap();
    match wrong.list_keys().await {
        Err(ProviderError::Rejected {
            status, message, ..
        }) => {
            assert_eq!(
                (status, message.as_str()),
                (401, "Invalid user credentials.")
            );
        }
        other => panic!("{other:?}"),
    }
    // Revoking a user Directus does not have: revoked is revoked.
    let p = Directus::new(&s.url, &s.admin_token).unwrap();
    p.revoke_key("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_plans_and_applies_through_the_binary() {
    let s = DirectusServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let blog = directus_blog_example(out.path(), &s);
    let cli = |cmd: &str, provider: Option<&str>, config: Option<&Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.args([cmd, "-f"])
            .arg(examples().join("03-multi-device"))
            .arg("-f")
            .arg(&blog)
            .arg("--secrets-dir")
            .arg(out.path())
            .env("KEYWARD_CMS_URL", &s.url)
            .env("KEYWARD_CMS_TOKEN", &s.admin_token)
            .env_remove("KEYWARD_CMS_PROVIDER")
            .env_remove("KEYWARD_CONFIG")
            // Everything logged, to check that no key value is among it.
            .env("KEYWARD_LOG", "debug");
        if let Some(p) = provider {
            c.env("KEYWARD_CMS_PROVIDER", p);
        }
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        c.output().unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let plan = cli("plan", Some("directus"), None);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    assert!(s.users().await.is_empty());
    let apply = cli("apply", Some("directus"), None);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(
        String::from_utf8_lossy(&apply.stdout).starts_with("Directus at "),
        "{}",
        text(&apply)
    );
    assert_eq!(s.users().await.len(), 6);
    // The provider from keyward.toml instead of the environment: nothing left to do.
    let toml = manifest(
        out.path(),
        "keyward.toml",
        "[cms]\nprovider = \"directus\"\n",
    );
    let again = cli("plan", None, Some(&toml));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let key = value(out.path(), "mobile", "cms-key-web", "apiKey");
    s.expect(&[
        (Method::GET, "authors", &key, StatusCode::OK),
        (Method::POST, "authors", &key, StatusCode::FORBIDDEN),
    ])
    .await;
    for o in [&plan, &apply, &again] {
        assert!(
            !text(o).contains(&key),
            "no key value in what the CLI prints"
        );
    }
}

/// Deadline for a few operator reconciles against Directus.
const DIRECTUS_RECONCILES: std::time::Duration = std::time::Duration::from_secs(60);

/// The operator: a policy whose CmsConnection says `provider: directus` gets a working key in
/// its Secret; a policy asking what Directus cannot hold is refused in its status, naming the
/// field and the provider; deleting the policy revokes the key (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_manages_directus_keys() {
    use kube::api::DeleteParams;
    use support::eventually;
    use support::operator_on::OperatorOn;

    let s = DirectusServer::start().await;
    let o = OperatorOn::start(&s, "token").await;
    o.create_policy("web", json!({"name": "reader", "apiPermissions": [{"api": "articles", "permissions": ["GET"]}], "secret": {"name": "reader"}})).await;
    o.create_policy("expiring", json!({"name": "k", "defaultPermissions": ["GET"], "expiresAfter": "30d", "secret": {"name": "expiring"}})).await;
    eventually("the reader Secret", DIRECTUS_RECONCILES, || async {
        o.secret_value("reader", "apiKey").await.is_some()
    })
    .await;
    let key = o.secret_value("reader", "apiKey").await.unwrap();
    s.expect(&[
        (Method::GET, "articles", &key, StatusCode::OK),
        (Method::GET, "authors", &key, StatusCode::FORBIDDEN),
    ])
    .await;
    // The connection checks with GET /users/me.
    o.connection_connected(2, DIRECTUS_RECONCILES).await;

    eventually(
        "the expiring policy refused",
        DIRECTUS_RECONCILES,
        || async {
            o.ready("expiring")
                .await
                .is_some_and(|c| c["reason"] == "InvalidSpec")
        },
    )
    .await;
    let msg = o.ready("expiring").await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("spec.keys[0].expiresAfter: the directus provider cannot express this: a Directus static token never expires"),
        "{msg}"
    );
    assert_eq!(s.users().await.len(), 1, "only the reader's user");

    o.policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the key is revoked", DIRECTUS_RECONCILES, || async {
        s.status(Method::GET, "articles", &key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    eventually("the policy is gone", DIRECTUS_RECONCILES, || async {
        o.policies.get_opt("web").await.ok().flatten().is_none()
    })
    .await;
    assert!(s.users().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn new_collections_get_default_rights_and_a_type_change_replaces_the_key() {
    let s = DirectusServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let feed = |ty: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n    - name: feed\n{ty}      defaultPermissions: [GET]\n      secret: {{name: feed}}\n"
        )
    };
    let p = manifest(out.path(), "p.yaml", &feed(""));
    apply_twice(&s, &[&p], out.path()).await;
    let v1 = value(out.path(), "team", "feed", "apiKey");
    assert_eq!(s.status(Method::GET, "authors", &v1).await, StatusCode::OK);

    // A collection added later: the defaults now cover it, so the key is updated to read it.
    let (status, v) = s
        .admin(
            Method::POST,
            "/collections",
            Some(
                json!({"collection": "pages", "schema": {}, "meta": {}, "fields": [
                {"field": "id", "type": "integer", "meta": {"hidden": true},
                 "schema": {"is_primary_key": true, "has_auto_increment": true}}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        s.status(Method::GET, "pages", &v1).await,
        StatusCode::FORBIDDEN
    );
    let updated = apply_twice(&s, &[&p], out.path()).await;
    assert_eq!(planned(&updated), pairs(&[("update", "team/app/feed")]));
    assert_eq!(s.status(Method::GET, "pages", &v1).await, StatusCode::OK);

    // public <-> service: a new key, written first; the old one is revoked at once (Directus
    // tokens cannot be made to expire later).
    let public = manifest(out.path(), "public.yaml", &feed("      type: public\n"));
    let replaced = apply_twice(&s, &[&public], out.path()).await;
    assert_eq!(planned(&replaced), pairs(&[("replace", "team/app/feed")]));
    let v2 = value(out.path(), "team", "feed", "apiKey");
    assert_ne!(v1, v2);
    s.replaced("pages", &v1, &v2).await;
    let users = s.users().await;
    assert_eq!(users.len(), 1, "{:?}", users.keys());
    assert!(users["team.app.feed"]["description"]
        .as_str()
        .unwrap()
        .contains(" type=public "));
}
