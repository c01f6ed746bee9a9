//! The `strapi` provider against a real Strapi 5.54.0 (installed and started by
//! `scripts/strapi.sh`): the examples Strapi can express are applied and their keys hold exactly
//! the declared rights; the others are refused naming the field and the provider; revoke,
//! regenerate, renewal, drift and Strapi's quirks (200 for deleting nothing, unique names,
//! first-boot tokens, rate-limited sign-in).

mod support;

use keyward::engine::Clock;
use keyward::gitops::{GitopsError, Mode, Outcome};
use keyward::providers::strapi::Strapi;
use keyward::providers::{CmsProvider, ProviderError};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use support::strapi::StrapiServer;
use support::{
    actions, apply_twice, check_access, done, example_for, examples, live_differences,
    live_differences_are, manifest, pairs, plan_changes_without_writes, planned, rotated_in_place,
    run, secret_field, value, Answers, Target, EXAMPLES_ACCESS,
};

/// Deadline for a few operator reconciles against Strapi (each a sign-in at most, catalog reads
/// and token calls that take Strapi tens to hundreds of milliseconds on a busy machine).
const STRAPI_RECONCILES: std::time::Duration = std::time::Duration::from_secs(60);

/// A run with the plan's clock at `clock`.
async fn run_at(
    s: &StrapiServer,
    paths: &[&Path],
    secrets: &Path,
    mode: Mode,
    clock: &Clock,
) -> Result<Outcome, GitopsError> {
    let opts = keyward::gitops::Options {
        clock: clock.clone(),
        ..s.options(paths, secrets, mode)
    };
    keyward::gitops::run(&opts).await
}

/// The Strapi example (examples-strapi/blog) with the test Strapi's endpoint.
fn strapi_blog_example(dir: &Path, s: &StrapiServer) -> std::path::PathBuf {
    example_for(
        dir,
        "strapi",
        "blog/policy.yaml",
        "http://127.0.0.1:1337",
        &s.url,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn examples_apply_and_their_keys_hold_exactly_the_declared_rights() {
    let s = StrapiServer::start().await;
    let first_boot = s.tokens().await;
    assert!(first_boot.contains_key("Read Only") && first_boot.contains_key("Full Access"));
    let out = tempfile::tempdir().unwrap();
    let ex02 = examples().join("02-public-and-private-apis");
    let ex03 = examples().join("03-multi-device");
    let blog = strapi_blog_example(out.path(), &s);

    plan_changes_without_writes(&s, &[&ex02, &ex03, &blog], out.path()).await;
    apply_twice(&s, &[&ex02, &ex03, &blog], out.path()).await;

    check_access(&s, out.path(), EXAMPLES_ACCESS).await;
    let blog_access = "
        blog strapi-frontend STRAPI_TOKEN articles GET  200
        blog strapi-frontend STRAPI_TOKEN authors  POST 403
        blog strapi-editor   STRAPI_TOKEN articles POST 201
        blog strapi-editor   STRAPI_TOKEN authors  GET  200
        blog strapi-editor   STRAPI_TOKEN authors  POST 403
        blog strapi-importer STRAPI_TOKEN authors  POST 201
        blog strapi-importer STRAPI_TOKEN articles GET  403
    ";
    check_access(&s, out.path(), blog_access).await;
    use StatusCode as S;
    let editor = value(out.path(), "blog", "strapi-editor", "STRAPI_TOKEN");
    let article = s.status(Method::GET, "articles", &editor).await;
    assert_eq!(article, S::OK);
    assert_eq!(
        secret_field(out.path(), "blog", "strapi-frontend", "STRAPI_URL").as_deref(),
        Some(s.url.as_str())
    );

    // What Strapi stores: lifespans, types, the ownership tag; first-boot tokens untouched.
    let tokens = s.tokens().await;
    let editor_token = &tokens["blog.site.editor"];
    assert_eq!(editor_token["type"], "custom");
    assert_eq!(editor_token["lifespan"], json!("2592000000"));
    assert!(editor_token["description"]
        .as_str()
        .unwrap()
        .ends_with("[keyward policy=blog.site key=editor]"));
    assert_eq!(
        tokens["mobile.devices.web"]["lifespan"],
        json!(null),
        "no expiresAfter: unlimited"
    );
    for name in ["Read Only", "Full Access"] {
        assert_eq!(tokens[name], first_boot[name], "{name} is not keyward's");
    }
    let (created, doc) = s.create_entry("articles", &editor).await;
    assert_eq!(created, S::CREATED);
    let one = format!("articles/{}", doc["data"]["documentId"].as_str().unwrap());
    let frontend = value(out.path(), "blog", "strapi-frontend", "STRAPI_TOKEN");
    s.expect(&[
        (Method::GET, &one, &frontend, S::OK),
        (Method::DELETE, &one, &frontend, S::FORBIDDEN),
        (Method::DELETE, &one, &editor, S::NO_CONTENT),
    ])
    .await;

    // The examples Strapi cannot express are refused before any call, naming field and provider.
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
        (
            "04-preview-one-environment",
            "spec.keys[0].defaultPermissions[1]",
        ),
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
            msg.contains(&format!("{field}: the strapi provider cannot express this")),
            "{ex}: {msg}"
        );
    }
    assert_eq!(
        s.tokens().await.len(),
        tokens.len(),
        "refused plans create nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_regenerate_drift_and_names_taken() {
    let s = StrapiServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let policy = |keys: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n{keys}"
        )
    };
    let reader = "    - name: reader\n      apiPermissions: [{api: articles, permissions: [GET]}]\n      expiresAfter: 30d\n      secret: {name: reader}\n";
    let writer = "    - name: writer\n      apiPermissions: [{api: authors, permissions: [GET, POST]}]\n      secret: {name: writer}\n";
    let both = manifest(out.path(), "p.yaml", &policy(&format!("{reader}{writer}")));
    apply_twice(&s, &[&both], out.path()).await;
    let reader_v1 = value(out.path(), "team", "reader", "apiKey");
    let writer_v1 = value(out.path(), "team", "writer", "apiKey");
    s.expect(&[
        (Method::GET, "articles", &reader_v1, StatusCode::OK),
        (Method::POST, "authors", &writer_v1, StatusCode::CREATED),
    ])
    .await;

    // Drift: rights added by hand in Strapi are planned away and removed.
    let id = s.tokens().await["team.app.reader"]["id"].clone();
    let (status, _) = s
        .admin(
            Method::PUT,
            &format!("/admin/api-tokens/{id}"),
            Some(json!({"permissions": ["api::article.article.find", "api::article.article.findOne", "api::article.article.create"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.status(Method::POST, "articles", &reader_v1).await,
        StatusCode::CREATED
    );
    // explain --live names the right added by hand.
    let added = ("POST on API 'articles'", "refused", "granted");
    live_differences_are(&s, &[&both], "team/app/reader", &[added]).await;
    let plan = run(&s, &[&both], out.path(), Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("update", "team/app/reader")]));
    apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(
        s.status(Method::POST, "articles", &reader_v1).await,
        StatusCode::FORBIDDEN
    );
    assert!(live_differences(&s, &[&both], "team/app/reader")
        .await
        .is_empty());
    assert_eq!(
        s.status(Method::GET, "articles", &reader_v1).await,
        StatusCode::OK,
        "same value"
    );

    // A token renamed by hand keeps its ownership tag and is renamed back.
    let (status, _) = s
        .admin(
            Method::PUT,
            &format!("/admin/api-tokens/{id}"),
            Some(json!({"name": "someone renamed it"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    apply_twice(&s, &[&both], out.path()).await;
    assert_eq!(s.tokens().await["team.app.reader"]["id"], id);
    assert_eq!(
        s.status(Method::GET, "articles", &reader_v1).await,
        StatusCode::OK,
        "renaming back keeps the value"
    );

    // A lost Secret: the key is regenerated; the old value answers 401, the new one works.
    std::fs::remove_file(out.path().join("team.reader.yaml")).unwrap();
    apply_twice(&s, &[&both], out.path()).await;
    let reader_v2 = value(out.path(), "team", "reader", "apiKey");
    assert_ne!(reader_v1, reader_v2);
    s.replaced("articles", &reader_v1, &reader_v2).await;

    // Rotated on request (keyward rotate): a new value in the Secret, the old one 401 (Strapi
    // regenerates in place, so no rotationOverlap).
    let writer_v1 = rotated_in_place(&s, &[&both], out.path(), "authors", &writer_v1).await;

    // A key removed from the policy is revoked: 401.
    let only_reader = manifest(out.path(), "reader-only.yaml", &policy(reader));
    let applied = apply_twice(&s, &[&only_reader], out.path()).await;
    assert_eq!(planned(&applied), pairs(&[("revoke", "team.app.writer")]));
    assert!(
        done(&applied)[0].starts_with("revoked key team/app/writer (id "),
        "{:?}",
        done(&applied)
    );
    assert_eq!(
        s.status(Method::GET, "authors", &writer_v1).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!s.tokens().await.contains_key("team.app.writer"));

    // A type change replaces the token: the new value is written first, then the old revoked.
    let public_reader = manifest(
        out.path(),
        "public-reader.yaml",
        &policy(&reader.replace("- name: reader\n", "- name: reader\n      type: public\n")),
    );
    let replaced = apply_twice(&s, &[&public_reader], out.path()).await;
    assert_eq!(planned(&replaced), pairs(&[("replace", "team/app/reader")]));
    assert!(
        done(&replaced)[0].starts_with("replaced key team/app/reader (old id "),
        "{:?}",
        done(&replaced)
    );
    let reader_v3 = value(out.path(), "team", "reader", "apiKey");
    s.replaced("articles", &reader_v2, &reader_v3).await;
    assert!(s.tokens().await["team.app.reader"]["description"]
        .as_str()
        .unwrap()
        .ends_with("type=public]"));

    // Names are unique in Strapi: a token keyward does not own is never adopted or touched.
    let (status, _) = s
        .admin(
            Method::POST,
            "/admin/api-tokens",
            Some(json!({"name": "team.app.writer", "type": "read-only", "lifespan": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let err = run(&s, &[&both], out.path(), Mode::Apply)
        .await
        .expect_err("a problem");
    let GitopsError::Problems { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "key 'writer' of ApiKeyPolicy team/app: the CMS already has a key named 'team.app.writer'"
        ),
        "{problems:?}"
    );
    assert_eq!(s.tokens().await["team.app.writer"]["type"], "read-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetimes_start_and_expiring_tokens_are_renewed_without_a_gap() {
    let s = StrapiServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let feed = |lifetime: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n    - name: feed\n      defaultPermissions: [GET]\n{lifetime}      secret: {{name: feed}}\n"
        )
    };
    // No expiresAfter: Strapi's unlimited lifespan.
    let forever = manifest(out.path(), "forever.yaml", &feed(""));
    apply_twice(&s, &[&forever], out.path()).await;
    let v0 = value(out.path(), "team", "feed", "apiKey");
    assert_eq!(s.tokens().await["team.app.feed"]["lifespan"], json!(null));

    // The policy now sets a lifetime (due for renewal 30 minutes after creation): a token that
    // never expires would never be renewed, so a new one with the lifespan takes its place at
    // once.
    let p = manifest(
        out.path(),
        "p.yaml",
        &feed("      expiresAfter: 7d\n      renewBefore: 6d23h30m\n"),
    );
    let started = run(&s, &[&p], out.path(), Mode::Apply).await.unwrap();
    assert_eq!(planned(&started), pairs(&[("rotate", "team/app/feed")]));
    assert_eq!(
        actions(&started)[0]["reason"],
        "the key never expires; the policy now sets expiresAfter"
    );
    let v1 = value(out.path(), "team", "feed", "apiKey");
    assert_eq!(
        s.tokens().await["team.app.feed"]["lifespan"],
        json!("604800000")
    );
    // The next run revokes the old, unlimited token; the one after writes nothing.
    let cleaned = apply_twice(&s, &[&p], out.path()).await;
    let revoked = planned(&cleaned);
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert_eq!(revoked[0].0, "revoke");
    assert!(revoked[0].1.starts_with("replaced."), "{revoked:?}");
    s.expect(&[
        (Method::GET, "articles", &v0, StatusCode::UNAUTHORIZED),
        (Method::GET, "articles", &v1, StatusCode::OK),
    ])
    .await;

    // Within renewBefore (the plan's clock moved 40 minutes: Strapi's lifespans allow an hour
    // of difference): Strapi's regenerate would keep the expiry, so a new token takes the name
    // and the old one works until it expires.
    let id1 = s.tokens().await["team.app.feed"]["id"].clone();
    let clock = Clock::system();
    clock.advance(jiff::SignedDuration::from_mins(40));
    let renewed = run_at(&s, &[&p], out.path(), Mode::Apply, &clock)
        .await
        .unwrap();
    assert_eq!(planned(&renewed), pairs(&[("rotate", "team/app/feed")]));
    let a = &actions(&renewed)[0];
    assert_eq!(a["expiring"], true, "{a}");
    assert!(
        a["reason"]
            .as_str()
            .unwrap()
            .ends_with(", within renewBefore"),
        "{a}"
    );
    // Strapi counts the new token's lifespan from its own clock: on the real clock, nothing is
    // due, and the old token is left to expire.
    let after = run(&s, &[&p], out.path(), Mode::Plan).await.unwrap();
    assert_eq!(planned(&after), pairs(&[]));
    let v2 = value(out.path(), "team", "feed", "apiKey");
    let tokens = s.tokens().await;
    assert_ne!(
        tokens["team.app.feed"]["id"], id1,
        "a new token took the name"
    );
    assert_eq!(tokens["team.app.feed"]["lifespan"], json!("604800000"));
    assert!(tokens.contains_key(&format!("replaced.{id1}.team.app.feed")));
    assert_ne!(v1, v2);
    assert_eq!(s.status(Method::GET, "articles", &v2).await, StatusCode::OK);
    assert_eq!(
        s.status(Method::GET, "articles", &v1).await,
        StatusCode::OK,
        "the old value works until it expires"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_provider_signs_in_once_and_handles_strapis_quirks() {
    let s = StrapiServer::start().await;
    let p = Strapi::new(&s.url, &s.credential()).unwrap();
    for _ in 0..5 {
        p.list_keys().await.unwrap();
    }
    // Deleting a token Strapi does not have answers 200: revoked is revoked.
    p.revoke_key("987654").await.unwrap();
    assert_eq!(p.logins(), 1, "one sign-in for every call");
    assert_eq!(p.stats().writes(), 1, "signing in is not a write");

    // The credential's shape is checked; a wrong password is Strapi's 401, named.
    assert!(Strapi::new(&s.url, "no-colon").is_err());
    let wrong = Strapi::new(&s.url, "admin@keyward.test:Wrong-password-1").unwrap();
    match wrong.list_keys().await {
        Err(ProviderError::Rejected {
            status, message, ..
        }) => {
            assert_eq!((status, message.as_str()), (400, "Invalid credentials"));
        }
        other => panic!("{other:?}"),
    }

    // An API this Strapi does not have is refused with its field before any write.
    let spec: keyward::model::KeySpec = serde_json::from_value(json!({
        "name": "x", "apiPermissions": [{"api": "nope", "permissions": ["GET"]}]
    }))
    .unwrap();
    match p.express(&spec).await {
        Err(ProviderError::Unsupported { field, reason, .. }) => {
            assert_eq!(field, "apiPermissions[0].api");
            assert!(reason.contains("articles, authors"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reads_the_provider_from_the_environment() {
    let s = StrapiServer::start().await;
    let out = tempfile::tempdir().unwrap();
    let cli = |cmd: &str, provider: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([cmd, "-f"])
            .arg(examples().join("03-multi-device"))
            .arg("--secrets-dir")
            .arg(out.path())
            .env("KEYWARD_CMS_URL", &s.url)
            .env("KEYWARD_CMS_TOKEN", s.credential())
            .env("KEYWARD_CMS_PROVIDER", provider)
            .output()
            .unwrap()
    };
    let plan = cli("plan", "strapi");
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let apply = cli("apply", "strapi");
    assert_eq!(apply.status.code(), Some(0));
    let text = String::from_utf8_lossy(&apply.stdout);
    assert!(text.starts_with("Strapi at "), "{text}");
    let again = cli("plan", "strapi");
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    // The same Strapi behind a TLS ingress with a private CA: reached over HTTPS with
    // --ca-file, refused (a TLS error, not retried) without it.
    let ca = support::tls::TestCa::new("ingress");
    let upstream: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let proxy =
        support::tls::tls_proxy(&ca.server("ingress", &["127.0.0.1"], false), upstream).await;
    let https = format!("https://{proxy}");
    let over_tls = |with_ca: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.args(["plan", "-f"])
            .arg(examples().join("03-multi-device"))
            .arg("--secrets-dir")
            .arg(out.path())
            .env("KEYWARD_CMS_URL", &https)
            .env("KEYWARD_CMS_TOKEN", s.credential())
            .env("KEYWARD_CMS_PROVIDER", "strapi");
        if with_ca {
            c.arg("--ca-file").arg(&ca.ca_pem);
        }
        c.output().unwrap()
    };
    // The keys are all there; only the Secrets, which name the endpoint, would be rewritten.
    let tls_plan = over_tls(true);
    assert!(String::from_utf8_lossy(&tls_plan.stdout).contains("Plan: 3 Secrets to rewrite."));
    assert_eq!(
        tls_plan.status.code(),
        Some(2),
        "{}{}",
        String::from_utf8_lossy(&tls_plan.stdout),
        String::from_utf8_lossy(&tls_plan.stderr)
    );
    assert!(String::from_utf8_lossy(&tls_plan.stdout).contains(&https));
    let untrusted = over_tls(false);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("unknown issuer for 127.0.0.1"));
    // No key value in anything the CLI printed.
    let key = value(out.path(), "mobile", "cms-key-web", "apiKey");
    for o in [&plan, &apply, &again] {
        assert!(!String::from_utf8_lossy(&o.stdout).contains(&key));
        assert!(!String::from_utf8_lossy(&o.stderr).contains(&key));
    }
    let bad = cli("plan", "sanity");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KEYWARD_CMS_PROVIDER"));
}

/// The operator: a policy whose CmsConnection says `provider: strapi` gets a working Strapi key
/// in its Secret; a policy asking what Strapi cannot hold is refused in its status, naming the
/// field and the provider; deleting the policy revokes the key (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_manages_strapi_keys() {
    use kube::api::DeleteParams;
    use support::eventually;
    use support::operator_on::OperatorOn;

    let s = StrapiServer::start().await;
    // The credential under a field of its own choosing: the connection names it.
    let o = OperatorOn::start(&s, "credentials").await;
    o.create_policy("web", json!({"name": "reader", "apiPermissions": [{"api": "articles", "permissions": ["GET"]}], "expiresAfter": "30d", "secret": {"name": "reader"}})).await;
    o.create_policy("preview", json!({"name": "drafts", "defaultPermissions": ["GET", "GET_ALL_DRAFTS"], "secret": {"name": "drafts"}})).await;
    eventually("the reader Secret", STRAPI_RECONCILES, || async {
        o.secret_value("reader", "apiKey").await.is_some()
    })
    .await;
    let key = o.secret_value("reader", "apiKey").await.unwrap();
    s.expect(&[
        (Method::GET, "articles", &key, StatusCode::OK),
        (Method::GET, "authors", &key, StatusCode::FORBIDDEN),
    ])
    .await;
    // The connection checks with GET /admin/users/me on the session reconciles use.
    o.connection_connected(2, STRAPI_RECONCILES).await;
    eventually("preview refused", STRAPI_RECONCILES, || async {
        o.ready("preview")
            .await
            .is_some_and(|c| c["reason"] == "InvalidSpec")
    })
    .await;
    let msg = o.ready("preview").await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("spec.keys[0].defaultPermissions[1]: the strapi provider cannot express this"),
        "{msg}"
    );
    assert!(!s.tokens().await.contains_key("shop.preview.drafts"));

    // A name taken by a token keyward does not own: the operator lists only its policy's
    // tokens, so it learns of it from Strapi, and shows Strapi's answer in status.
    let (status, _) = s
        .admin(
            Method::POST,
            "/admin/api-tokens",
            Some(json!({"name": "shop.taken.reader", "type": "read-only", "lifespan": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    o.create_policy("taken", json!({"name": "reader", "apiPermissions": [{"api": "articles", "permissions": ["GET"]}], "secret": {"name": "taken"}})).await;
    eventually("the name conflict in status", STRAPI_RECONCILES, || async {
        o.ready("taken")
            .await
            .is_some_and(|c| c["reason"] == "ApplyFailed")
    })
    .await;
    let ready = o.ready("taken").await.unwrap();
    assert_eq!(ready["status"], "False");
    let msg = ready["message"].as_str().unwrap();
    assert!(
        msg.starts_with("create key shop/taken/reader: ")
            && msg.contains("answered 400: Name already taken"),
        "{msg}"
    );
    assert_eq!(
        s.tokens().await["shop.taken.reader"]["type"],
        "read-only",
        "the other token is untouched"
    );
    assert!(o.secrets.get_opt("taken").await.unwrap().is_none());

    o.policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the key is revoked", STRAPI_RECONCILES, || async {
        s.status(Method::GET, "articles", &key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    eventually("the policy is gone", STRAPI_RECONCILES, || async {
        o.policies.get_opt("web").await.ok().flatten().is_none()
    })
    .await;
}
