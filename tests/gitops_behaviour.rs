//! plan/apply behaviour: drift, lost values, ownership, removal, rotation, failures mid-apply,
//! exit codes and output.

mod support;

use keyward::gitops::{GitopsError, Mode};
use keyward::model::desired::ConnectionId;
use keyward::providers::ProviderError;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use support::proxy::{Fault, Proxy};
use support::{
    actions, done, gitops, gitops_at, manifest, pairs, planned, secret_field, Answers, Cms, ADMIN,
};

fn policy(keys: &str, extra: &str) -> String {
    format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: web, namespace: shop}}\nspec:\n{extra}  keys:\n{keys}"
    )
}

const READER: &str =
    "    - name: reader\n      defaultPermissions: [GET]\n      secret: {name: reader}\n";
const WRITER: &str = "    - name: writer\n      apiPermissions: [{api: contact, permissions: [POST]}]\n      secret: {name: writer}\n";

async fn setup() -> (Cms, tempfile::TempDir) {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.api("contact").await;
    (cms, tempfile::tempdir().unwrap())
}

fn value(dir: &Path, name: &str) -> String {
    secret_field(&dir.join("out"), "shop", name, "apiKey").unwrap()
}

#[tokio::test]
async fn drift_is_planned_as_a_diff_and_repaired() {
    let (cms, dir) = setup().await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let k = value(dir.path(), "reader");
    let id = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Someone widens the key in the CMS console.
    cms.admin(
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({"defaultPermissions": ["GET", "DELETE"]})),
    )
    .await;
    assert_eq!(
        cms.status(Method::DELETE, "/api/blog/x", &k).await,
        StatusCode::NOT_FOUND,
        "drifted: DELETE allowed"
    );
    let plan = gitops(&cms, &[&m], &out, Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("update", "shop/web/reader")]));
    let diff = actions(&plan)[0]["diff"].as_str().unwrap().to_owned();
    assert!(
        diff.lines().any(|l| l == "-- DELETE"),
        "the diff shows the extra permission as removed: {diff}"
    );
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    assert_eq!(
        cms.status(Method::DELETE, "/api/blog/x", &k).await,
        StatusCode::FORBIDDEN,
        "repaired"
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &k).await,
        StatusCode::OK,
        "same value still works"
    );
}

#[tokio::test]
async fn a_missing_secret_means_a_new_value() {
    let (cms, dir) = setup().await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let old = value(dir.path(), "reader");
    std::fs::remove_file(out.join("shop.reader.yaml")).unwrap();
    let plan = gitops(&cms, &[&m], &out, Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("rotate", "shop/web/reader")]));
    assert_eq!(
        actions(&plan)[0]["reason"],
        "Secret shop/reader is missing and a key value cannot be read back from the CMS"
    );
    // The directory holds no Secret now: as on a fresh clone, apply refuses unless told.
    let err = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap_err();
    assert!(
        matches!(err, GitopsError::SecretsMissing { lost: 1, .. }),
        "{err}"
    );
    assert!(!out.join("shop.reader.yaml").exists());
    let mut opts = support::options(&cms.url, &[&m], &out, Mode::Apply);
    opts.regenerate_missing = true;
    keyward::gitops::run(&opts).await.unwrap();
    let new = value(dir.path(), "reader");
    assert_ne!(old, new);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK,
        "the default rotationOverlap keeps the old value working while the Secret rolls out"
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "same key, new value"
    );
}

#[tokio::test]
async fn a_key_regenerated_behind_keywards_back_is_rotated_again() {
    let (cms, dir) = setup().await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let id = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cms.regenerate(&id, None).await;
    let plan = gitops(&cms, &[&m], &out, Mode::Plan).await.unwrap();
    assert_eq!(planned(&plan), pairs(&[("rotate", "shop/web/reader")]));
    assert_eq!(
        actions(&plan)[0]["reason"],
        "the key was regenerated outside keyward; the Secret's value no longer works"
    );
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn keys_keyward_does_not_own_are_never_touched() {
    let (cms, dir) = setup().await;
    let (foreign_id, foreign) = cms
        .key(json!({"name": "hand-made", "defaultPermissions": ["GET"]}))
        .await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    // Remove every key from the policy: only the policy's own key is revoked.
    let empty = manifest(
        dir.path(),
        "empty.yaml",
        &policy("", "").replace("  keys:\n", "  keys: []\n"),
    );
    let r = gitops(&cms, &[&empty], &out, Mode::Apply).await.unwrap();
    assert_eq!(planned(&r), pairs(&[("revoke", "shop.web.reader")]));
    assert_eq!(
        actions(&r)[0]["reason"],
        "key 'reader' was removed from the policy"
    );
    let keys = cms.admin(Method::GET, "/v1/keys", None).await.body;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["keys"][0]["id"], foreign_id.as_str());
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &foreign).await,
        StatusCode::OK
    );

    // A hand-made key squatting on a policy key's name is not adopted.
    cms.key(json!({"name": "shop.web.reader", "defaultPermissions": ["GET"]}))
        .await;
    let err = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap_err();
    let GitopsError::Problems { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "key 'reader' of ApiKeyPolicy shop/web: the CMS already has a key named 'shop.web.reader'"
        ) && problems[0].contains("that keyward does not own"),
        "{problems:?}"
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing was created or revoked"
    );
}

#[tokio::test]
async fn removed_keys_are_revoked_unless_orphaned() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let both = manifest(
        dir.path(),
        "p.yaml",
        &policy(&format!("{READER}{WRITER}"), ""),
    );
    gitops(&cms, &[&both], &out, Mode::Apply).await.unwrap();
    let writer = value(dir.path(), "writer");
    let reader = value(dir.path(), "reader");
    let one = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    gitops(&cms, &[&one], &out, Mode::Apply).await.unwrap();
    assert_eq!(
        cms.status(Method::POST, "/api/contact", &writer).await,
        StatusCode::UNAUTHORIZED
    );
    // Orphan: the key stays in the CMS and keeps working.
    let orphan = manifest(
        dir.path(),
        "p.yaml",
        &policy("", "  deletionPolicy: Orphan\n").replace("  keys:\n", "  keys: []\n"),
    );
    let r = gitops(&cms, &[&orphan], &out, Mode::Apply).await.unwrap();
    assert_eq!(planned(&r), pairs(&[]), "nothing to revoke");
    assert_eq!(r.runs[0].cms_writes, 0);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &reader).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn keys_are_rotated_within_renew_before_with_overlap() {
    let (cms, dir) = setup().await;
    let keys = "    - name: reader\n      defaultPermissions: [GET]\n      expiresAfter: 2m\n      renewBefore: 60s\n      rotationOverlap: 30s\n      secret: {name: reader}\n";
    let m = manifest(dir.path(), "p.yaml", &policy(keys, ""));
    let out = dir.path().join("out");
    // The plan's clock, moved instead of waiting for the renewal window.
    let clock = keyward::engine::Clock::system();
    let run = |mode| {
        let mut opts = support::options(&cms.url, &[&m], &out, mode);
        opts.clock = clock.clone();
        async move { keyward::gitops::run(&opts).await.unwrap() }
    };
    run(Mode::Apply).await;
    let old = value(dir.path(), "reader");
    let expiry = |body: &serde_json::Value| {
        body["keys"][0]["expiresAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let first_expiry = expiry(&cms.admin(Method::GET, "/v1/keys", None).await.body);
    // 30 s later: not yet within renewBefore; 61 s later: within it.
    clock.advance(jiff::SignedDuration::from_secs(30));
    assert_eq!(planned(&run(Mode::Plan).await), pairs(&[]));
    clock.advance(jiff::SignedDuration::from_secs(31));
    let plan = run(Mode::Plan).await;
    assert_eq!(planned(&plan), pairs(&[("rotate", "shop/web/reader")]));
    let a = &actions(&plan)[0];
    assert_eq!(a["graceSeconds"], 30, "{a}");
    assert_eq!(a["expiring"], true, "{a}");
    assert_eq!(
        a["reason"],
        format!(
            "expires at {}, within renewBefore",
            keyward::model::rfc3339(first_expiry)
        )
    );
    run(Mode::Apply).await;
    let new = value(dir.path(), "reader");
    assert_ne!(old, new, "the new value was written");
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK,
        "the old value works during the overlap"
    );
    let exp = expiry(&cms.admin(Method::GET, "/v1/keys", None).await.body);
    let left = exp.duration_since(clock.now());
    assert!(
        left > jiff::SignedDuration::from_secs(110) && left <= jiff::SignedDuration::from_secs(120),
        "a fresh lifetime from the plan's clock: {left}"
    );
    assert_eq!(planned(&run(Mode::Plan).await), pairs(&[]));
}

#[tokio::test]
async fn changing_a_keys_type_replaces_it_without_a_gap() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let old = value(dir.path(), "reader");
    let public = manifest(
        dir.path(),
        "p.yaml",
        &policy(
            &READER.replace(
                "      defaultPermissions",
                "      type: public\n      defaultPermissions",
            ),
            "",
        ),
    );
    let r = gitops(&cms, &[&public], &out, Mode::Apply).await.unwrap();
    assert_eq!(planned(&r), pairs(&[("replace", "shop/web/reader")]));
    let new = value(dir.path(), "reader");
    assert_ne!(old, new);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK,
        "the old key lives out the overlap"
    );
    let keys = cms.admin(Method::GET, "/v1/keys", None).await.body;
    let types: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["service", "public"]);
    // The old key expires at the end of the overlap (15 minutes by default, and 5 s), not at
    // the end of its lifetime.
    let old_expiry: jiff::Timestamp = keys["keys"][0]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = old_expiry.duration_since(jiff::Timestamp::now());
    assert!(
        left <= jiff::SignedDuration::from_secs(15 * 60 + 5) && left > jiff::SignedDuration::ZERO,
        "the old key works for {left} more"
    );
    assert!(
        !gitops(&cms, &[&public], &out, Mode::Plan)
            .await
            .unwrap()
            .has_changes(),
        "the expiring old key is left to expire"
    );
}

/// A replace whose last step failed (shortening the old key's expiry) is finished by the next
/// run: the old key, with the rights it had before, is revoked now. Before, the next plan saw
/// nothing to do and the old key kept working for its whole lifetime.
#[tokio::test]
async fn a_replace_that_failed_at_its_last_step_is_finished_by_the_next_run() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let old = value(dir.path(), "reader");
    let public = manifest(
        dir.path(),
        "p.yaml",
        &policy(
            &READER.replace(
                "      defaultPermissions",
                "      type: public\n      defaultPermissions",
            ),
            "",
        ),
    );
    // The replace renames the old key (PATCH), makes the new one, then shortens the old one's
    // expiry (PATCH): every PATCH after the first fails (retries too).
    let patches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = patches.clone();
    let proxy = Proxy::start(&cms.url, move |c| {
        let is_patch = *c.method == Method::PATCH && c.path.starts_with("/v1/keys/");
        (is_patch && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1)
            .then_some(Fault::Answer(500, None))
    })
    .await;
    let e = gitops_at(&proxy.url, &[&public], &out, Mode::Apply).await;
    assert!(e.is_err(), "the replace stopped at its last step");
    let new = value(dir.path(), "reader");
    assert_ne!(old, new, "the replacement's value is in its Secret");
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::OK,
        "for now the old key still works"
    );
    // (The Secret is rewritten too: its {{ endpoint }} was the proxy's.)
    let r = gitops(&cms, &[&public], &out, Mode::Apply).await.unwrap();
    let revokes: Vec<(String, String)> = planned(&r)
        .into_iter()
        .filter(|(kind, _)| kind == "revoke")
        .collect();
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert!(revokes[0].1.starts_with("replaced."), "{revokes:?}");
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let (cms, dir) = setup().await;
    // The first two calls get 429 with `Retry-After: 1`.
    let proxy = Proxy::start(&cms.url, |c| {
        (c.n < 2).then_some(Fault::Answer(429, Some(1)))
    })
    .await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let started = std::time::Instant::now();
    let r = gitops_at(&proxy.url, &[&m], &dir.path().join("out"), Mode::Apply)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited Retry-After twice, not the 200 ms backoff: {:?}",
        started.elapsed()
    );
    let seen = proxy.seen();
    assert_eq!(
        seen.iter().map(|s| s.status).take(3).collect::<Vec<_>>(),
        [429, 429, 200],
        "the same call, answered the third time: {seen:?}"
    );
    assert_eq!(seen[0].path, seen[2].path);
    assert_eq!(done(&r).len(), 1);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_not_retried_and_the_next_run_recovers() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let m = manifest(
        dir.path(),
        "p.yaml",
        &policy(&format!("{READER}{WRITER}"), ""),
    );
    // The first create (`reader`) goes through; the second (`writer`) reaches the CMS, which
    // creates the key, but its answer is lost (a 500): repeating the call could create it twice.
    // Every later call goes through.
    let lossy = Proxy::start(&cms.url, |c| {
        (*c.method == Method::POST && c.path == "/v1/keys" && c.writes == 1)
            .then_some(Fault::LoseAnswer(500))
    })
    .await;
    let err = gitops_at(&lossy.url, &[&m], &out, Mode::Apply)
        .await
        .unwrap_err();
    let GitopsError::Apply { error, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        lossy.forwarded(Method::POST, "/v1/keys"),
        2,
        "one create each, none retried: {:?}",
        lossy.seen()
    );
    assert_eq!(error.done.len(), 1, "{}", error.report());
    assert!(
        error.done[0].starts_with("created key shop/web/reader (id ")
            && error.done[0].ends_with(") and wrote Secret shop/reader"),
        "{}",
        error.report()
    );
    assert_eq!(error.failed, "create key shop/web/writer");
    assert!(
        error
            .cause
            .to_string()
            .ends_with("answered 500: injected failure"),
        "{}",
        error.report()
    );
    assert!(error.not_attempted.is_empty(), "{}", error.report());
    // The value that was generated reached its Secret.
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
    // The next run finds the writer key without a Secret and gives it a value: still two keys.
    let next = gitops_at(&lossy.url, &[&m], &out, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(planned(&next), pairs(&[("rotate", "shop/web/writer")]));
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        cms.status(Method::POST, "/api/contact", &value(dir.path(), "writer"))
            .await,
        StatusCode::CREATED
    );
    assert!(!gitops_at(&lossy.url, &[&m], &out, Mode::Plan)
        .await
        .unwrap()
        .has_changes());
}

#[tokio::test]
async fn a_failure_mid_apply_lists_what_was_not_attempted() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let m = manifest(
        dir.path(),
        "p.yaml",
        &policy(
            &format!("{READER}{WRITER}"),
            "  cors: {origins: ['https://a.example']}\n",
        ),
    );
    // The first create is refused outright (not retried: 500 on a create).
    let refusing = Proxy::start(&cms.url, |c| {
        (*c.method == Method::POST && c.writes == 0).then_some(Fault::Answer(500, None))
    })
    .await;
    let err = gitops_at(&refusing.url, &[&m], &out, Mode::Apply)
        .await
        .unwrap_err();
    let GitopsError::Apply { error, partial, .. } = &err else {
        panic!("{err}")
    };
    assert!(error.done.is_empty(), "{}", error.report());
    assert_eq!(error.failed, "create key shop/web/reader");
    assert_eq!(
        error.not_attempted,
        ["create key shop/web/writer", "set CORS origins of shop/web"]
    );
    assert_eq!(refusing.attempts(Method::POST, "/v1/keys"), 1);
    assert!(error.transient, "a 500 is worth retrying later");
    // The partial outcome still carries the plan.
    assert_eq!(
        planned(partial),
        pairs(&[
            ("create", "shop/web/reader"),
            ("create", "shop/web/writer"),
            ("setCors", "")
        ])
    );
    let report = error.report();
    assert_eq!(
        report.lines().collect::<Vec<_>>(),
        [
            "  failed:        create key shop/web/reader: ".to_owned() + &error.cause.to_string(),
            "  not attempted: create key shop/web/writer".to_owned(),
            "  not attempted: set CORS origins of shop/web".to_owned(),
        ]
    );
}

#[tokio::test]
async fn an_unreadable_secret_file_stops_the_run_before_any_cms_write() {
    let (cms, dir) = setup().await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let v = value(dir.path(), "reader");
    // Something that cannot be read where the Secret's file is (a directory): not taken as
    // missing, which would regenerate a value that may be in use.
    let file = out.join("shop.reader.yaml");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let err = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap_err();
    let GitopsError::Sink(e) = &err else {
        panic!("{err}")
    };
    assert_eq!((e.namespace.as_str(), e.name.as_str()), ("shop", "reader"));
    assert!(
        e.detail
            .starts_with(&format!("cannot read {}: ", file.display()))
            && e.detail.ends_with("; fix or remove the file"),
        "{e}"
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &v).await,
        StatusCode::OK,
        "the value in use was not regenerated"
    );
    // Removed, it is missing: a new value (the directory now holds none: said explicitly).
    std::fs::remove_dir(&file).unwrap();
    let mut opts = support::options(&cms.url, &[&m], &out, Mode::Apply);
    opts.regenerate_missing = true;
    let r = keyward::gitops::run(&opts).await.unwrap();
    assert_eq!(planned(&r), pairs(&[("rotate", "shop/web/reader")]));
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unreachable_cms_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let err = gitops_at(
        "http://127.0.0.1:9",
        &[&m],
        &dir.path().join("out"),
        Mode::Plan,
    )
    .await
    .unwrap_err();
    let GitopsError::Provider {
        connection,
        source: ProviderError::Unreachable { endpoint, .. },
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(connection, "the default connection");
    assert_eq!(endpoint, "http://127.0.0.1:9");
    assert!(
        err.to_string()
            .starts_with("the default connection: cannot reach http://127.0.0.1:9: "),
        "{err}"
    );
}

#[tokio::test]
async fn observe_only_policies_are_planned_not_applied() {
    let (cms, dir) = setup().await;
    let m = manifest(
        dir.path(),
        "p.yaml",
        &policy(READER, "  managementPolicy: ObserveOnly\n"),
    );
    let out = dir.path().join("out");
    let r = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    assert_eq!(planned(&r), pairs(&[("create", "shop/web/reader")]));
    assert_eq!(actions(&r)[0]["key"]["observeOnly"], true);
    assert!(r.has_changes(), "pending, for a person");
    assert_eq!(r.observe_only_changes(), 1);
    assert!(done(&r).is_empty());
    assert_eq!(r.runs[0].cms_writes, 0);
    assert!(
        r.text().contains(
            "  + create   shop/web/reader  -> Secret shop/reader  (ObserveOnly: not applied)\n"
        ),
        "{}",
        r.text()
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

// ---- the binary: exit codes, JSON, errors ----------------------------------------------------

fn keyward(args: &[&str], url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KEYWARD_CMS_URL", url)
        .env("KEYWARD_CMS_TOKEN", ADMIN)
        .output()
        .unwrap()
}

// The binary runs while this test's CMS serves: the runtime needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_json_and_no_secrets_in_output() {
    let (cms, dir) = setup().await;
    let m = manifest(
        dir.path(),
        "p.yaml",
        &policy(&format!("{READER}{WRITER}"), ""),
    );
    let out = dir.path().join("out");
    let (m, out) = (
        m.to_str().unwrap().to_owned(),
        out.to_str().unwrap().to_owned(),
    );
    let plan = keyward(
        &["plan", "-f", &m, "--secrets-dir", &out, "-o", "json"],
        &cms.url,
    );
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(j["changes"], true);
    let creates: Vec<(String, String)> = j["connections"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(support::kind_and_subject)
        .collect();
    assert_eq!(
        creates,
        pairs(&[("create", "shop/web/reader"), ("create", "shop/web/writer")])
    );
    let apply = keyward(&["apply", "-f", &m, "--secrets-dir", &out], &cms.url);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&apply.stdout),
        String::from_utf8_lossy(&apply.stderr)
    );
    for name in ["reader", "writer"] {
        let v = value(dir.path(), name);
        assert!(!printed.contains(&v[20..]), "a key value was printed");
    }
    let again = keyward(
        &["plan", "-f", &m, "--secrets-dir", &out, "-o", "json"],
        &cms.url,
    );
    assert_eq!(again.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(j["changes"], false);
    assert_eq!(j["connections"][0]["actions"], json!([]));
}

#[tokio::test]
async fn cli_rejects_invalid_manifests_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = manifest(
        dir.path(),
        "bad.yaml",
        &format!(
            "# two documents\n---\n{}",
            policy(READER, "").replace("[GET]", "[GET_ALL_DRAFTS]")
        ),
    );
    let r = keyward(&["plan", "-f", bad.to_str().unwrap()], "http://127.0.0.1:9");
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    // The line of the field itself (the document starts on line 3).
    assert!(err.contains("bad.yaml:9: ApiKeyPolicy shop/web: spec.keys[0].defaultPermissions: GET_ALL_DRAFTS requires GET"), "{err}");
    let yaml = manifest(
        dir.path(),
        "yaml.yaml",
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata:\n  name: [x\n",
    );
    let r = keyward(
        &["plan", "-f", yaml.to_str().unwrap()],
        "http://127.0.0.1:9",
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        err.contains("yaml.yaml:4") || err.contains("yaml.yaml:5"),
        "points at the line: {err}"
    );
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn crds_directory_matches_keyward_crd() {
    let generated = keyward::policy::crds_yaml().unwrap();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/keyward.dev.yaml"),
    )
    .unwrap();
    assert!(
        generated == committed,
        "crds/ is stale: run `cargo run -- crd > crds/keyward.dev.yaml`"
    );
}

/// An apply over two connections that fails in the second: the first connection's work stands
/// (its keys made, their files written, reported in the error's partial outcome), the error
/// names the second, and the next run finishes the second without redoing the first.
#[tokio::test]
async fn an_apply_that_fails_in_its_second_connection_keeps_the_first_ones_work() {
    use support::proxy::{Fault, Proxy};
    let (cms, dir) = setup().await;
    let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let rule = broken.clone();
    let proxy = Proxy::start(&cms.url, move |c| {
        (rule.load(std::sync::atomic::Ordering::SeqCst) && *c.method == Method::POST)
            .then_some(Fault::Answer(500, None))
    })
    .await;
    let connection = |name: &str, url: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: CmsConnection\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  endpoint: {url}\n  credentialsSecretRef: {{name: cms-admin}}\n---\n"
        )
    };
    let on = |policy_name: &str, conn: &str, secret: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: {policy_name}, namespace: shop}}\nspec:\n  connectionRef: {{name: {conn}}}\n  keys:\n    - name: k\n      defaultPermissions: [GET]\n      secret: {{name: {secret}}}\n---\n"
        )
    };
    let files = format!(
        "{}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: cms-admin, namespace: shop}}\nstringData: {{token: {ADMIN}}}\n---\n{}{}",
        connection("first", &cms.url),
        connection("second", &proxy.url),
        on("one", "first", "one"),
        on("two", "second", "two"),
    );
    let m = manifest(dir.path(), "all.yaml", &files);
    let out = dir.path().join("out");
    // No KEYWARD_CMS_URL or token: each connection comes from the manifests.
    let opts = |mode| keyward::gitops::Options {
        data_dir: dir.path().join("embedded"),
        env_url: None,
        env_token: None,
        ..support::options_for(
            (keyward::policy::ProviderKind::Keyward, "", ""),
            &[&m],
            &out,
            mode,
        )
    };
    let err = keyward::gitops::run(&opts(Mode::Apply)).await.unwrap_err();
    let GitopsError::Apply {
        connection,
        partial,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(connection, "CmsConnection shop/second", "{err}");
    let first = &partial.runs[0];
    assert_eq!(first.connection.to_string(), "CmsConnection shop/first");
    assert_eq!(
        first.applied.as_ref().map(|a| a.done.len()),
        Some(1),
        "the first connection's work is reported"
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "one"))
            .await,
        StatusCode::OK
    );
    assert!(secret_field(&out, "shop", "two", "apiKey").is_none());
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let r = keyward::gitops::run(&opts(Mode::Apply)).await.unwrap();
    assert!(r.runs[0].plan.actions.is_empty(), "the first is not redone");
    assert_eq!(r.runs[1].applied.as_ref().map(|a| a.done.len()), Some(1));
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "two"))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_cms_connection_with_its_credential_secret_in_the_files() {
    let (cms, dir) = setup().await;
    let files = format!(
        "apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {{name: main, namespace: shop}}
spec:
  endpoint: {url}
  credentialsSecretRef: {{name: cms-admin}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cms-admin, namespace: shop}}
stringData: {{token: {ADMIN}}}
---
{policy}",
        url = cms.url,
        policy = policy(READER, "  connectionRef: {name: main}\n")
    );
    let m = manifest(dir.path(), "all.yaml", &files);
    let out = dir.path().join("out");
    // No KEYWARD_CMS_URL or token: each connection comes from the manifests.
    let opts = |mode| keyward::gitops::Options {
        data_dir: dir.path().join("embedded"),
        env_url: None,
        env_token: None,
        ..support::options_for(
            (keyward::policy::ProviderKind::Keyward, "", ""),
            &[&m],
            &out,
            mode,
        )
    };
    let r = keyward::gitops::run(&opts(Mode::Apply)).await.unwrap();
    assert_eq!(
        r.runs[0].connection,
        ConnectionId::CmsConnection {
            namespace: "shop".into(),
            name: "main".into()
        }
    );
    assert_eq!(r.runs[0].endpoint, cms.url);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
    assert!(
        !dir.path().join("embedded").exists(),
        "no embedded CMS was started"
    );
    // Without the Secret (and no KEYWARD_CMS_TOKEN) the error names what is missing.
    let without = files
        .split("---\napiVersion: v1")
        .next()
        .unwrap()
        .to_owned()
        + "---\n"
        + &policy(READER, "  connectionRef: {name: main}\n");
    std::fs::write(&m, without).unwrap();
    let err = keyward::gitops::run(&opts(Mode::Plan)).await.unwrap_err();
    let GitopsError::Connection {
        connection,
        message,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(connection, "CmsConnection shop/main");
    assert_eq!(
        message,
        "credential Secret shop/cms-admin (field 'token') is not in the manifests and KEYWARD_CMS_TOKEN is not set"
    );
}

#[test]
fn the_readme_first_command_runs_on_the_embedded_cms_and_then_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let run = |cmd: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args([cmd, "-f"])
            .arg(support::examples())
            .arg("--secrets-dir")
            .arg(dir.path().join("out"))
            .arg("--data-dir")
            .arg(dir.path().join("cms"))
            .env_remove("KEYWARD_CMS_URL")
            .env_remove("KEYWARD_CMS_TOKEN")
            .output()
            .unwrap()
    };
    let first = run("apply");
    let text = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        text.contains("embedded reference CMS")
            && text.contains("Plan: 9 to create, 2 settings to change."),
        "{text}"
    );
    let yaml = |e: &std::fs::DirEntry| e.path().extension().is_some_and(|x| x == "yaml");
    let files = std::fs::read_dir(dir.path().join("out")).unwrap();
    assert_eq!(files.filter_map(Result::ok).filter(yaml).count(), 9);
    let second = run("apply");
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        text.contains("no changes") && text.contains("0 writes; Secrets written: 0"),
        "{text}"
    );
    assert_eq!(run("plan").status.code(), Some(0));
}

#[tokio::test]
async fn hand_edits_of_a_secret_are_undone() {
    let (cms, dir) = setup().await;
    let keys = "    - name: reader\n      defaultPermissions: [GET]\n      secret:\n        name: reader\n        extraFields: {URL: '{{ endpoint }}'}\n";
    let m = manifest(dir.path(), "p.yaml", &policy(keys, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let file = out.join("shop.reader.yaml");
    let original = value(dir.path(), "reader");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // An extra field edited: rewritten, same value.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(&b64(&cms.url), &b64("http://evil.example")),
    )
    .unwrap();
    let r = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    assert_eq!(planned(&r), pairs(&[("writeSecret", "shop/web/reader")]));
    assert_eq!(done(&r), ["rewrote Secret shop/reader"]);
    assert_eq!(
        secret_field(&out, "shop", "reader", "URL").unwrap(),
        cms.url
    );
    assert_eq!(value(dir.path(), "reader"), original);
    // The value edited: it cannot be trusted, so a new one is generated.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(&b64(&original), &b64("kw_0000000000000000_tampered")),
    )
    .unwrap();
    let r = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    assert_eq!(planned(&r), pairs(&[("rotate", "shop/web/reader")]));
    assert_eq!(
        actions(&r)[0]["reason"],
        "Secret shop/reader does not hold this key's value"
    );
    let new = value(dir.path(), "reader");
    assert_ne!(new, original);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
}

// The binary runs while this test's CMS serves: the runtime needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_revokes_the_keys_of_policies_no_longer_in_the_files() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let web = manifest(dir.path(), "web.yaml", &policy(READER, ""));
    let api = manifest(
        dir.path(),
        "api.yaml",
        &policy(WRITER, "").replace("name: web,", "name: api,"),
    );
    gitops(&cms, &[&web, &api], &out, Mode::Apply)
        .await
        .unwrap();
    let writer = secret_field(&out, "shop", "writer", "apiKey").unwrap();
    let reader = secret_field(&out, "shop", "reader", "apiKey").unwrap();
    // A key the operator made (tagged with a policy UID) for a policy these files do not have.
    let (_, operator_key) = cms
        .key(json!({"name": "cluster.app.k", "defaultPermissions": ["GET"], "labels": {
            "keyward.dev/policy": "cluster.app", "keyward.dev/policy-uid": "0f0f-uid", "keyward.dev/key": "k"}}))
        .await;
    let (web, out) = (web.to_str().unwrap(), out.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["-f", web, "--secrets-dir", out]);
        keyward(&args, &cms.url)
    };

    // Without --prune, a policy that left the files is left alone.
    assert_eq!(run(&["plan"]).status.code(), Some(0));
    // With it, the CLI-made keys of that policy are planned for revocation, then revoked.
    let plan = run(&["plan", "--prune", "-o", "json"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let revokes: Vec<(String, String)> = j["connections"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(support::kind_and_subject)
        .collect();
    assert_eq!(revokes, pairs(&[("revoke", "shop.api.writer")]));
    assert_eq!(
        j["connections"][0]["actions"][0]["reason"],
        "its policy is no longer in the manifests (--prune)"
    );
    let apply = run(&["apply", "--prune", "-o", "json"]);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&apply.stdout).unwrap();
    let applied = j["connections"][0]["applied"].as_array().unwrap();
    assert_eq!(applied.len(), 1, "{j}");
    assert!(
        applied[0]
            .as_str()
            .unwrap()
            .starts_with("revoked key shop/api/writer (id "),
        "{j}"
    );
    cms.expect(&[
        (
            Method::POST,
            "/api/contact",
            &writer,
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/api/blog", &reader, StatusCode::OK),
    ])
    .await;
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &operator_key).await,
        StatusCode::OK,
        "an operator's key is never pruned by the CLI"
    );
    assert_eq!(run(&["plan", "--prune"]).status.code(), Some(0));
}
