//! plan/apply behaviour: drift, lost values, ownership, removal, rotation, failures mid-apply,
//! exit codes and output.

mod support;

use keyward::gitops::{GitopsError, Mode};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use support::{gitops, gitops_at, manifest, secret_field, Cms, ADMIN};

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
    let text = plan.text();
    assert!(text.contains("~ update   shop/web/reader"), "{text}");
    assert!(
        text.contains("-- DELETE"),
        "the diff shows the extra permission: {text}"
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
    assert!(
        plan.text()
            .contains("Secret shop/reader is missing and a key value cannot be read back"),
        "{}",
        plan.text()
    );
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let new = value(dir.path(), "reader");
    assert_ne!(old, new);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &new).await,
        StatusCode::OK
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &old).await,
        StatusCode::UNAUTHORIZED,
        "no overlap declared"
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
    cms.admin(Method::POST, &format!("/v1/keys/{id}/regenerate"), None)
        .await;
    let plan = gitops(&cms, &[&m], &out, Mode::Plan).await.unwrap();
    assert!(
        plan.text().contains("regenerated outside keyward"),
        "{}",
        plan.text()
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
    assert!(
        r.text().contains("- revoke   shop.web.reader"),
        "{}",
        r.text()
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
    assert!(matches!(err, GitopsError::Problems { .. }), "{err}");
    assert!(err.to_string().contains("keyward does not own"), "{err}");
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
    assert!(
        !r.has_changes() || !r.text().contains("revoke"),
        "{}",
        r.text()
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &reader).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn keys_are_rotated_within_renew_before_with_overlap() {
    let (cms, dir) = setup().await;
    let keys = "    - name: reader\n      defaultPermissions: [GET]\n      expiresAfter: 2m\n      renewBefore: 119s\n      rotationOverlap: 30s\n      secret: {name: reader}\n";
    let m = manifest(dir.path(), "p.yaml", &policy(keys, ""));
    let out = dir.path().join("out");
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    let old = value(dir.path(), "reader");
    assert!(!gitops(&cms, &[&m], &out, Mode::Plan)
        .await
        .unwrap()
        .has_changes());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let plan = gitops(&cms, &[&m], &out, Mode::Plan).await.unwrap();
    assert!(
        plan.text().contains("within renewBefore"),
        "{}",
        plan.text()
    );
    assert!(
        plan.text().contains("old value valid 30s more"),
        "{}",
        plan.text()
    );
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
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
    let rec = cms.admin(Method::GET, "/v1/keys", None).await.body;
    let exp = chrono::DateTime::parse_from_rfc3339(rec["keys"][0]["expiresAt"].as_str().unwrap())
        .unwrap();
    assert!(
        (exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds() > 110,
        "a fresh lifetime"
    );
    assert!(!gitops(&cms, &[&m], &out, Mode::Plan)
        .await
        .unwrap()
        .has_changes());
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
    assert!(r.text().contains("± replace"), "{}", r.text());
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
    assert!(
        !gitops(&cms, &[&public], &out, Mode::Plan)
            .await
            .unwrap()
            .has_changes(),
        "the expiring old key is left to expire"
    );
}

/// A proxy in front of the CMS: `inject(method, calls, writes)` (counts so far) may answer with
/// a failure status instead of forwarding (429s carry `Retry-After: 1`).
async fn proxy(
    target: String,
    inject: impl Fn(&axum::http::Method, usize, usize) -> Option<u16> + Clone + Send + Sync + 'static,
) -> String {
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, Method as M, StatusCode as S, Uri};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (calls, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: M, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (http, target, inject, calls, writes) = (
                http.clone(),
                target.clone(),
                inject.clone(),
                calls.clone(),
                writes.clone(),
            );
            async move {
                let c = calls.fetch_add(1, Ordering::SeqCst);
                let w = if method == M::GET {
                    writes.load(Ordering::SeqCst)
                } else {
                    writes.fetch_add(1, Ordering::SeqCst)
                };
                if let Some(status) = inject(&method, c, w) {
                    let mut resp = axum::response::Response::new(Body::from(
                        "{\"message\":\"injected failure\"}",
                    ));
                    *resp.status_mut() = S::from_u16(status).unwrap();
                    if status == 429 {
                        resp.headers_mut()
                            .insert("retry-after", "1".parse().unwrap());
                    }
                    return resp;
                }
                let mut rb = http.request(method, format!("{target}{uri}")).body(body);
                for (k, v) in headers.iter().filter(|(k, _)| *k != "host") {
                    rb = rb.header(k, v);
                }
                let r = rb.send().await.unwrap();
                let status = r.status();
                let mut resp = axum::response::Response::new(Body::from(r.bytes().await.unwrap()));
                *resp.status_mut() = status;
                resp
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let (cms, dir) = setup().await;
    let proxy = proxy(cms.url.clone(), |_, calls, _| (calls < 2).then_some(429)).await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let started = std::time::Instant::now();
    gitops_at(&proxy, &[&m], &dir.path().join("out"), Mode::Apply)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited Retry-After twice: {:?}",
        started.elapsed()
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_failure_mid_apply_says_what_was_done_and_loses_no_value() {
    let (cms, dir) = setup().await;
    let out = dir.path().join("out");
    let m = manifest(
        dir.path(),
        "p.yaml",
        &policy(&format!("{READER}{WRITER}"), ""),
    );
    // The first write (creating `reader`) passes; the second (creating `writer`) fails with a 500,
    // which is not retried for a create: it may or may not have happened.
    let half = proxy(cms.url.clone(), |m, _, writes| {
        (m != axum::http::Method::GET && writes >= 1).then_some(500)
    })
    .await;
    let err = gitops_at(&half, &[&m], &out, Mode::Apply)
        .await
        .unwrap_err();
    let GitopsError::Apply { error, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(error.done.len(), 1, "{}", error.report());
    assert!(
        error.done[0].contains("created key shop.web.reader"),
        "{}",
        error.report()
    );
    assert!(
        error.failed.contains("create key shop/web/writer"),
        "{}",
        error.report()
    );
    assert!(
        error.report().contains("answered 500"),
        "{}",
        error.report()
    );
    // The value that was generated reached its Secret.
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &value(dir.path(), "reader"))
            .await,
        StatusCode::OK
    );
    // The next run, with the CMS healthy, finishes the job.
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
    assert_eq!(
        cms.status(Method::POST, "/api/contact", &value(dir.path(), "writer"))
            .await,
        StatusCode::CREATED
    );
    assert!(!gitops(&cms, &[&m], &out, Mode::Plan)
        .await
        .unwrap()
        .has_changes());
}

#[tokio::test]
async fn an_unwritable_secret_revokes_the_new_key() {
    let (cms, dir) = setup().await;
    let m = manifest(dir.path(), "p.yaml", &policy(READER, ""));
    let out = dir.path().join("out");
    // A directory where the Secret's file should go: the write fails.
    std::fs::create_dir_all(out.join("shop.reader.yaml")).unwrap();
    let err = gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap_err();
    let GitopsError::Apply { error, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        error.cause.contains("could not write its Secret"),
        "{}",
        error.report()
    );
    assert!(
        error.cause.contains("the new key was revoked"),
        "{}",
        error.report()
    );
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    std::fs::remove_dir(out.join("shop.reader.yaml")).unwrap();
    gitops(&cms, &[&m], &out, Mode::Apply).await.unwrap();
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
    assert!(
        err.to_string().contains("cannot reach http://127.0.0.1:9"),
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
    assert!(
        r.text().contains("(ObserveOnly: not applied)"),
        "{}",
        r.text()
    );
    assert_eq!(r.runs[0].cms_writes, 0);
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
    assert_eq!(j["connections"][0]["actions"][0]["action"], "create");
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
    let again = keyward(&["plan", "-f", &m, "--secrets-dir", &out], &cms.url);
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("no changes"));
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
    assert!(err.contains("bad.yaml:3: ApiKeyPolicy shop/web: spec.keys[0].defaultPermissions: GET_ALL_DRAFTS requires GET"), "{err}");
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
    let opts = |mode| keyward::gitops::Options {
        env_provider: keyward::policy::ProviderKind::Keyward,
        prune: false,
        clock: keyward::engine::Clock::system(),
        paths: vec![m.clone()],
        secrets_dir: out.clone(),
        data_dir: dir.path().join("embedded"),
        mode,
        env_url: None,
        env_token: None,
    };
    let r = keyward::gitops::run(&opts(Mode::Apply)).await.unwrap();
    assert!(r.text().contains("CmsConnection shop/main"), "{}", r.text());
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
    assert!(
        err.to_string()
            .contains("credential Secret shop/cms-admin (field 'token') is not in the manifests"),
        "{err}"
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
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        9
    );
    let second = run("apply");
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        text.contains("no changes") && text.contains("0 writes; Secret files written: 0"),
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
    assert!(r.text().contains("~ secret"), "{}", r.text());
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
    assert!(
        r.text().contains("does not hold this key's value"),
        "{}",
        r.text()
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
            "keyward.dev/policy": "cluster/app", "keyward.dev/policy-uid": "0f0f-uid", "keyward.dev/key": "k"}}))
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
    let plan = run(&["plan", "--prune"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "{text}");
    assert!(text.contains("revoke   shop.api.writer"), "{text}");
    assert!(!text.contains("cluster.app.k"), "{text}");
    let apply = run(&["apply", "--prune"]);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    assert!(String::from_utf8_lossy(&apply.stdout).contains("no longer in the manifests (--prune)"));
    assert_eq!(
        cms.status(Method::POST, "/api/contact", &writer).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &reader).await,
        StatusCode::OK
    );
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &operator_key).await,
        StatusCode::OK,
        "an operator's key is never pruned by the CLI"
    );
    assert_eq!(run(&["plan", "--prune"]).status.code(), Some(0));
}
