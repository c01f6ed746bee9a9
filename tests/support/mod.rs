//! Shared test helpers: a real reference CMS on a free loopback port, driven over HTTP.
#![allow(dead_code)]

pub mod console_cms;
pub mod contentful;
pub mod datocms;
pub mod directus;
pub mod kube_emulator;
pub mod kube_rbac;
pub mod kube_schema;
pub mod node_app;
pub mod operator_on;
pub mod process;
pub mod proxy;
pub mod sinks;
pub mod strapi;
pub mod tls;
pub mod vendor_types;

use keyward::cms::Rate;
use keyward::cms::{self, AdminToken, CmsConfig, RunningCms};
use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct Cms {
    pub running: Option<RunningCms>,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// A response: status, JSON body (Null when empty or not JSON), headers.
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    /// Asserts that the answer's `message` says `words`.
    pub fn says(&self, words: &str) {
        let message = self.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words),
            "the message should say '{words}': {}",
            self.text
        );
    }
}

pub fn config(dir: &Path) -> CmsConfig {
    let mut cfg = CmsConfig::new(dir);
    cfg.admin_token = Some(AdminToken::new(ADMIN.into()));
    cfg.key_rate = Rate::new(10_000).unwrap();
    cfg.public_rate = Rate::new(10_000).unwrap();
    cfg
}

impl Cms {
    pub async fn start() -> Cms {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut CmsConfig)) -> Cms {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        f(&mut cfg);
        let running = cms::start(cfg).await.unwrap();
        Cms {
            url: running.url(),
            running: Some(running),
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await
    }

    /// Stops the server and starts a new one on the same data directory, configured by `f`.
    pub async fn restart_with(&mut self, f: impl FnOnce(&mut CmsConfig)) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let mut cfg = config(self.dir.path());
        f(&mut cfg);
        let running = cms::start(cfg).await.unwrap();
        self.url = running.url();
        self.running = Some(running);
    }

    pub async fn req(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut rb = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            headers,
            text,
        }
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.req(method, path, Some(ADMIN), body).await
    }

    pub async fn api(&self, name: &str) {
        let r = self
            .admin(Method::PUT, &format!("/v1/apis/{name}"), None)
            .await;
        assert!(r.status.is_success(), "{}", r.text);
    }

    /// Creates a key and returns (id, raw value).
    pub async fn key(&self, spec: Value) -> (String, String) {
        let r = self.admin(Method::POST, "/v1/keys", Some(spec)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.body["id"].as_str().unwrap().into(),
            r.body["key"].as_str().unwrap().into(),
        )
    }

    /// Regenerates key `id` as the admin; `grace` (seconds, any JSON value: the CMS checks it)
    /// keeps the old value working that long.
    pub async fn regenerate(&self, id: &str, grace: Option<Value>) -> Resp {
        let body = grace.map(|g| json!({ "graceSeconds": g }));
        self.admin(Method::POST, &format!("/v1/keys/{id}/regenerate"), body)
            .await
    }

    /// Creates a published entry as the admin and returns its id.
    pub async fn entry(&self, api: &str, fields: Value) -> String {
        let r = self
            .admin(Method::POST, &format!("/api/{api}"), Some(fields))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().into()
    }
}

/// A CMS that answers content calls made with a key: the reference CMS, Strapi, Directus. (Test
/// code: its futures need no `Send` bound.)
#[allow(async_fn_in_trait)]
pub trait Answers {
    /// The status `method` at `at` answers with `key` (a write sends a small valid body). `at`
    /// is a path on the reference CMS, a content API (collection) on Strapi and Directus.
    async fn status(&self, method: Method, at: &str, key: &str) -> StatusCode;

    /// Sends each call in turn with its key and checks its status; every mismatch is reported
    /// together.
    async fn expect(&self, calls: &[(Method, &str, &str, StatusCode)]) {
        let mut wrong = Vec::new();
        for (method, at, key, want) in calls {
            let got = self.status(method.clone(), at, key).await;
            if got != *want {
                wrong.push(format!("{method} {at}: {got}, expected {want}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// `new` replaced `old`: `new` reads `at`, and `old` is refused as unknown (401).
    async fn replaced(&self, at: &str, old: &str, new: &str) {
        self.expect(&[
            (Method::GET, at, new, StatusCode::OK),
            (Method::GET, at, old, StatusCode::UNAUTHORIZED),
        ])
        .await;
    }
}

impl Answers for Cms {
    async fn status(&self, method: Method, path: &str, key: &str) -> StatusCode {
        let body =
            matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({"f": "v"}));
        self.req(method, path, Some(key), body).await.status
    }
}

/// Runs `keyward plan`/`apply` (the library entry) against this CMS.
pub async fn gitops(
    cms: &Cms,
    paths: &[&Path],
    secrets: &Path,
    mode: keyward::gitops::Mode,
) -> Result<keyward::gitops::Outcome, keyward::gitops::GitopsError> {
    gitops_at(&cms.url, paths, secrets, mode).await
}

pub async fn gitops_at(
    url: &str,
    paths: &[&Path],
    secrets: &Path,
    mode: keyward::gitops::Mode,
) -> Result<keyward::gitops::Outcome, keyward::gitops::GitopsError> {
    keyward::gitops::run(&options(url, paths, secrets, mode)).await
}

/// The CLI's options for a reference CMS at `url` with the admin token (system clock, no prune).
pub fn options(
    url: &str,
    paths: &[&Path],
    secrets: &Path,
    mode: keyward::gitops::Mode,
) -> keyward::gitops::Options {
    let target = (keyward::policy::ProviderKind::Keyward, url, ADMIN);
    options_for(target, paths, secrets, mode)
}

/// The CLI's options for a CMS of a `provider` at `url` with credential `token` (system clock,
/// no prune).
pub fn options_for(
    (provider, url, token): (keyward::policy::ProviderKind, &str, &str),
    paths: &[&Path],
    secrets: &Path,
    mode: keyward::gitops::Mode,
) -> keyward::gitops::Options {
    keyward::gitops::Options {
        env_provider: provider,
        prune: false,
        clock: keyward::engine::Clock::system(),
        regenerate_missing: false,
        lock_timeout: std::time::Duration::from_secs(60),
        progress: None,
        expect: None,
        rotate: None,
        audit_log: None,
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        secrets_to: Default::default(),
        secrets_dir: secrets.to_path_buf(),
        data_dir: secrets.join("unused-embedded"),
        mode,
        env_url: Some(url.to_owned()),
        env_token: Some(token.to_owned().into()),
        ca_pem: None,
    }
}

/// A real CMS the CLI is pointed at in a test (Strapi, Directus).
pub trait Target: Answers {
    /// The provider, the endpoint and the credential the CLI is given.
    fn connection(&self) -> (keyward::policy::ProviderKind, &str, String);

    fn options(
        &self,
        paths: &[&Path],
        secrets: &Path,
        mode: keyward::gitops::Mode,
    ) -> keyward::gitops::Options {
        let (provider, url, credential) = self.connection();
        options_for((provider, url, &credential), paths, secrets, mode)
    }
}

/// What examples 02 and 03 grant on any CMS that holds their keys, as an access table.
pub const EXAMPLES_ACCESS: &str = "
    media  cms-public-content apiKey articles GET  200
    media  cms-public-content apiKey authors  GET  200
    media  cms-public-content apiKey articles POST 403
    mobile cms-key-web        apiKey articles GET  200
    mobile cms-key-ios        apiKey authors  GET  200
    mobile cms-key-android    apiKey authors  POST 403
";

/// Checks an access table against `target`, with the key values written to `secrets`: a row a
/// line, `namespace Secret field api METHOD status` (`#` starts a comment). Every mismatch is
/// reported together.
pub async fn check_access(target: &impl Target, secrets: &Path, table: &str) {
    let mut wrong = Vec::new();
    for row in table.lines() {
        let row = row.split('#').next().unwrap_or_default();
        let cells: Vec<&str> = row.split_whitespace().collect();
        let [ns, name, field, api, method, want] = cells[..] else {
            assert!(cells.is_empty(), "an access row has six cells: {row}");
            continue;
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let want = StatusCode::from_u16(want.parse().unwrap()).unwrap();
        let got = target
            .status(method.clone(), api, &value(secrets, ns, name, field))
            .await;
        if got != want {
            wrong.push(format!(
                "{ns}/{name}: {method} {api}: {got}, expected {want}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The binary with `args` in `dir`, pointed at `target` through the environment, everything
/// logged (to check that no key value is among it): (exit code, stdout and stderr).
pub fn cli_on(target: &impl Target, dir: &Path, args: &[&str]) -> (i32, String) {
    let (provider, url, credential) = target.connection();
    let env = [
        ("KEYWARD_CMS_URL", url),
        ("KEYWARD_CMS_TOKEN", credential.as_str()),
        ("KEYWARD_CMS_PROVIDER", provider.as_str()),
        ("KEYWARD_LOG", "debug"),
    ];
    let (code, out, err, _) = process::keyward(dir, args, &env);
    (code, format!("{out}{err}"))
}

/// `scripts/live-check.sh provider` with `env` and the binary under test, against a stand-in:
/// it passes, and says each of its steps. What it printed.
pub async fn live_check(provider: &str, env: Vec<(&'static str, String)>) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/live-check.sh");
    let arg = provider.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .arg(arg)
            .envs(env)
            .env("KEYWARD_BIN", env!("CARGO_BIN_EXE_keyward"))
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for line in [
        "the new key answers 200",
        "a second plan has nothing to do",
        "the removed key answers 401",
        &format!("{provider} OK"),
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    said
}

/// One CLI run against `target`.
pub async fn run(
    target: &impl Target,
    paths: &[&Path],
    secrets: &Path,
    mode: keyward::gitops::Mode,
) -> Result<keyward::gitops::Outcome, keyward::gitops::GitopsError> {
    keyward::gitops::run(&target.options(paths, secrets, mode)).await
}

/// `keyward explain --live` of one key (`namespace/policy/key`) on `target`: every difference
/// between what it declares and what the CMS holds, as (what, declared, held).
pub async fn live_differences(
    target: &impl Target,
    paths: &[&Path],
    key: &str,
) -> Vec<(String, String, String)> {
    let opts = target.options(paths, Path::new("unused"), keyward::gitops::Mode::Plan);
    let key: keyward::plan::KeyTarget = key.parse().unwrap();
    let explained = keyward::gitops::explain(&opts, &[key], true).await.unwrap();
    let held = explained[0].live.as_ref().expect("read live");
    assert!(held.id.is_some(), "the CMS holds the key");
    held.differences
        .iter()
        .map(|d| (d.what.clone(), d.declared.clone(), d.held.clone()))
        .collect()
}

/// `explain --live` of `key` on `target` names `only` (what, declared, held) as its differences.
pub async fn live_differences_are(
    target: &impl Target,
    paths: &[&Path],
    key: &str,
    only: &[(&str, &str, &str)],
) {
    let want: Vec<(String, String, String)> = only
        .iter()
        .map(|(w, d, h)| (w.to_string(), d.to_string(), h.to_string()))
        .collect();
    assert_eq!(live_differences(target, paths, key).await, want);
}

/// `keyward rotate` of `team/app/writer` on a CMS that regenerates in place (Strapi,
/// Directus): only that rotation is planned, and the new value in its Secret answers on
/// `api` where the old one now gets 401. Returns the new value.
pub async fn rotated_in_place(
    target: &impl Target,
    paths: &[&Path],
    secrets: &Path,
    api: &str,
    old: &str,
) -> String {
    let rotated = rotate(target, paths, secrets, "team/app/writer", false).await;
    assert_eq!(planned(&rotated), pairs(&[("rotate", "team/app/writer")]));
    let new = value(secrets, "team", "writer", "apiKey");
    assert_ne!(old, new);
    target.replaced(api, old, &new).await;
    new
}

/// `keyward rotate` of one key on `target`: a new value now (`at_once`: no overlap).
pub async fn rotate(
    target: &impl Target,
    paths: &[&Path],
    secrets: &Path,
    key: &str,
    at_once: bool,
) -> keyward::gitops::Outcome {
    let opts = keyward::gitops::Options {
        rotate: Some(keyward::plan::RotateNow {
            targets: vec![key.parse().unwrap()],
            at_once,
        }),
        ..target.options(paths, secrets, keyward::gitops::Mode::Apply)
    };
    keyward::gitops::run(&opts).await.unwrap()
}

/// A plan of `paths` on `target` shows changes and writes nothing to the CMS.
pub async fn plan_changes_without_writes(target: &impl Target, paths: &[&Path], secrets: &Path) {
    let plan = run(target, paths, secrets, keyward::gitops::Mode::Plan)
        .await
        .unwrap();
    assert!(plan.has_changes());
    assert!(
        plan.runs.iter().all(|r| r.cms_writes == 0),
        "plan writes nothing"
    );
}

/// Applies, then checks that a second apply writes nothing to the CMS or to the Secret files.
pub async fn apply_twice(
    target: &impl Target,
    paths: &[&Path],
    secrets: &Path,
) -> keyward::gitops::Outcome {
    use keyward::gitops::Mode;
    let first = run(target, paths, secrets, Mode::Apply).await.unwrap();
    let again = run(target, paths, secrets, Mode::Apply).await.unwrap();
    assert!(!again.has_changes(), "{}", again.text());
    for r in &again.runs {
        assert_eq!((r.cms_writes, r.secret_writes), (0, 0), "{}", again.text());
    }
    first
}

/// An example policy file of `examples-<provider>/` with the test server's `url` for `default`,
/// written to `dir`.
pub fn example_for(
    dir: &Path,
    provider: &str,
    file: &str,
    default: &str,
    url: &str,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        examples()
            .with_file_name(format!("examples-{provider}"))
            .join(file),
    )
    .unwrap()
    .replace(default, url);
    manifest(dir, &format!("{provider}.yaml"), &text)
}

/// The planned actions of every connection, as `-o json` gives them.
pub fn actions(o: &keyward::gitops::Outcome) -> Vec<Value> {
    o.json()["connections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["actions"].as_array().unwrap().clone())
        .collect()
}

/// `(action, subject)` per planned action: the subject is `namespace/policy/key` for a key of a
/// policy, the key's CMS name for a revoke, the API for public endpoints, "" for CORS.
pub fn planned(o: &keyward::gitops::Outcome) -> Vec<(String, String)> {
    actions(o).iter().map(kind_and_subject).collect()
}

pub fn kind_and_subject(a: &Value) -> (String, String) {
    let kind = a["action"].as_str().unwrap().to_owned();
    let subject = if a["key"].is_object() {
        let k = &a["key"];
        format!(
            "{}/{}/{}",
            k["policy"]["namespace"].as_str().unwrap(),
            k["policy"]["name"].as_str().unwrap(),
            k["key"].as_str().unwrap()
        )
    } else if let Some(name) = a["name"].as_str() {
        name.to_owned()
    } else {
        a["api"].as_str().unwrap_or("").to_owned()
    };
    (kind, subject)
}

/// `(action, subject)` pairs, for comparing with `planned`.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// What the apply reports as done, over every connection.
pub fn done(o: &keyward::gitops::Outcome) -> Vec<String> {
    o.runs
        .iter()
        .flat_map(|r| r.applied.iter().flat_map(|a| a.done.clone()))
        .collect()
}

/// The value in a Secret manifest written by `apply`.
/// A field of a Secret file that must be there.
pub fn value(dir: &Path, ns: &str, name: &str, field: &str) -> String {
    secret_field(dir, ns, name, field).unwrap_or_else(|| panic!("Secret {ns}/{name} has {field}"))
}

pub fn secret_field(dir: &Path, namespace: &str, name: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{namespace}.{name}.yaml"))).ok()?;
    let s: k8s_openapi::api::core::v1::Secret = serde_yaml_ng::from_str(&text).ok()?;
    String::from_utf8(s.data?.get(field)?.0.clone()).ok()
}

/// A manifest in a temporary directory.
pub fn manifest(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

pub fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

pub fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Creates any object through the client (dynamic, so the test needs no typed API per kind).
pub async fn create(
    client: &kube::Client,
    prefix: &str,
    plural: &str,
    ns: Option<&str>,
    obj: Value,
) {
    let path = match ns {
        Some(ns) => format!("/{prefix}/namespaces/{ns}/{plural}"),
        None => format!("/{prefix}/{plural}"),
    };
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&obj).unwrap())
        .unwrap();
    let _: Value = client.request(req).await.unwrap();
}

/// Polls `f` every 50 ms until it holds; panics after `within`, naming what it waited for.
/// Give each wait a deadline scaled to the work it waits for (a few reconciles with CMS calls
/// and Argon2id hashes, a lease running out, a Strapi call).
pub async fn eventually<F, Fut>(what: &str, within: Duration, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Policy `shop/site` with one reading key, `reader`, written to Secret `reader`: the CLI
/// tests' smallest policy.
pub const SITE_POLICY: &str = "apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: site, namespace: shop}
spec:
  keys:
    - name: reader
      defaultPermissions: [GET]
      secret: {name: reader}
";
