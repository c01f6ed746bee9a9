//! Day-2 key operations through the binary, against the reference CMS over HTTP: rotating
//! keys now, with their overlap or (a leak) without.

mod support;

use reqwest::Method;
use std::path::Path;
use support::process::keyward;
use support::Cms;

/// `keyward ARGS` in `work` against `cms`: its exit code and all it printed.
fn run(cms: &Cms, work: &Path, args: &[&str]) -> (i32, String) {
    let (code, out, err, _) = keyward(
        work,
        args,
        &[
            ("KEYWARD_CMS_URL", cms.url.as_str()),
            ("KEYWARD_CMS_TOKEN", support::ADMIN),
        ],
    );
    (code, format!("{out}{err}"))
}

/// What `key` gets for a read of API `blog`.
async fn reads(cms: &Cms, key: &str) -> u16 {
    let r = cms.req(Method::GET, "/api/blog", Some(key), None).await;
    r.status.as_u16()
}

async fn key_count(cms: &Cms) -> usize {
    let keys = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"].clone();
    keys.as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_gives_a_new_value_now_keeping_the_old_one_for_the_overlap_or_not_at_all() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("p.yaml"), support::SITE_POLICY).unwrap();
    let (code, said) = run(&cms, w, &["apply", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{said}");
    let out = w.join("out");
    let first = support::value(&out, "shop", "reader", "apiKey");
    assert_eq!(reads(&cms, &first).await, 200);

    // Another change waits in the manifests: a rotation does not apply it.
    let more = support::SITE_POLICY.replace(
        "      secret: {name: reader}\n",
        "      secret: {name: reader}\n    - name: other\n      defaultPermissions: [GET]\n      secret: {name: other}\n",
    );
    std::fs::write(w.join("p.yaml"), more).unwrap();
    let keys_before = key_count(&cms).await;

    let (code, said) = run(
        &cms,
        w,
        &[
            "rotate",
            "-f",
            "p.yaml",
            "--secrets-dir",
            "out",
            "shop/site/reader",
        ],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("rotated on request"), "{said}");
    let second = support::value(&out, "shop", "reader", "apiKey");
    assert_ne!(second, first, "a new value in the Secret");
    assert_eq!(reads(&cms, &second).await, 200);
    assert_eq!(
        reads(&cms, &first).await,
        200,
        "the old value works for the key's rotationOverlap (15m by default)"
    );
    assert_eq!(key_count(&cms).await, keys_before, "nothing else created");
    assert!(!out.join("shop.other.yaml").exists(), "nor written");

    // A leak: no overlap; every earlier value stops now.
    let (code, said) = run(
        &cms,
        w,
        &[
            "rotate",
            "--now",
            "-f",
            "p.yaml",
            "--secrets-dir",
            "out",
            "shop/site",
        ],
    );
    assert_eq!(code, 0, "{said}");
    let third = support::value(&out, "shop", "reader", "apiKey");
    assert_eq!(reads(&cms, &third).await, 200);
    assert_eq!(reads(&cms, &second).await, 401);
    assert_eq!(reads(&cms, &first).await, 401);

    // A typo is an error before anything changes; so is a target that is not a key.
    for (target, says) in [
        (
            "shop/site/nope",
            "shop/site/nope: no such key in the manifests",
        ),
        (
            "shop/other-site",
            "shop/other-site: no such key in the manifests",
        ),
        ("shop", "is not NAMESPACE/POLICY or NAMESPACE/POLICY/KEY"),
    ] {
        let (code, said) = run(
            &cms,
            w,
            &["rotate", "-f", "p.yaml", "--secrets-dir", "out", target],
        );
        assert_eq!(code, 1, "{target}: {said}");
        assert!(said.contains(says), "{target}: {said}");
    }
    assert_eq!(support::value(&out, "shop", "reader", "apiKey"), third);
    assert_eq!(reads(&cms, &third).await, 200);
}

const EXPLAINED_POLICY: &str = "apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: site, namespace: shop}
spec:
  cors: {origins: ['https://shop.example.com']}
  keys:
    - name: reader
      defaultPermissions: [GET, POST]
      apiPermissions:
        - {api: blog, permissions: [GET, GET_ALL_DRAFTS]}
      secret: {name: reader}
";

/// The row of `api` in explain's table, its cells split.
fn row(said: &str, api: &str) -> Vec<String> {
    said.lines()
        .map(str::split_whitespace)
        .map(|cells| cells.map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(api))
        .unwrap_or_else(|| panic!("no row {api} in:\n{said}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_each_right_with_its_source_and_live_what_the_cms_holds_differently() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("p.yaml"), EXPLAINED_POLICY).unwrap();
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "-f", "p.yaml", "shop/site/reader"];
        args.extend_from_slice(extra);
        run(&cms, w, &args)
    };

    // Declared: blog's own list replaces the defaults (no POST there); every other API has them.
    let (code, said) = explain(&[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        row(&said, "blog")[1..],
        ["api", "api", "-", "-", "-", "-", "-"]
    );
    assert_eq!(
        row(&said, "(every")[3..],
        ["default", "-", "-", "default", "-", "-", "-"]
    );
    assert!(
        said.contains("CORS origins of its policy: https://shop.example.com"),
        "{said}"
    );
    assert_eq!(key_count(&cms).await, 0, "explain reads only");

    // Live, before apply: the CMS has no key for it.
    let (code, said) = explain(&["--live"]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("the CMS holds no key for it"), "{said}");

    let (code, said) = run(&cms, w, &["apply", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = explain(&["--live"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("holds what is declared"), "{said}");

    // Someone widens the key in the CMS's console: each right that differs is named.
    let id = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let widened = serde_json::json!({"defaultPermissions": ["GET", "POST", "DELETE"]});
    let r = cms
        .admin(Method::PATCH, &format!("/v1/keys/{id}"), Some(widened))
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    let (code, said) = explain(&["--live", "-o", "json"]);
    assert_eq!(code, 2, "{said}");
    let json: serde_json::Value = serde_json::from_str(&said).unwrap();
    let live = &json["keys"][0]["live"];
    assert_eq!(live["id"], id.as_str());
    assert_eq!(
        live["differences"],
        serde_json::json!([
            {"what": "DELETE on every other API", "declared": "refused", "held": "granted"}
        ])
    );
    assert_eq!(
        json["keys"][0]["declared"]["rights"][0]["operations"]["GET"],
        serde_json::json!(["apiPermissions"])
    );

    // A key the manifests do not have is an error, as with rotate.
    let (code, said) = run(&cms, w, &["explain", "-f", "p.yaml", "shop/site/nope"]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("shop/site/nope: no such key in the manifests"),
        "{said}"
    );
}

/// The lines of a JSON-lines file.
fn lines_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_logs_name_who_changed_what_on_the_cms_and_in_the_cli_never_a_value() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let cms_log = w.join("cms-audit.jsonl");
    let server = support::process::spawn_with(
        &w.join("data"),
        None,
        &["--audit-log", cms_log.to_str().unwrap()],
    );
    let http = reqwest::Client::new();
    let admin = |m: Method, path: &str| {
        http.request(m, format!("{}{path}", server.url))
            .bearer_auth(support::ADMIN)
    };
    let r = admin(Method::PUT, "/v1/apis/blog").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    std::fs::write(w.join("p.yaml"), support::SITE_POLICY).unwrap();
    let env = [
        ("KEYWARD_CMS_URL", server.url.as_str()),
        ("KEYWARD_CMS_TOKEN", support::ADMIN),
    ];
    let cli = |args: &[&str]| {
        let (code, out, err, _) = keyward(w, args, &env);
        (code, format!("{out}{err}"))
    };
    let cli_log = w.join("cli-audit.jsonl");
    let logged = ["--secrets-dir", "out", "--audit-log", "cli-audit.jsonl"];
    let (code, said) = cli(&[&["apply", "-f", "p.yaml"][..], &logged].concat());
    assert_eq!(code, 0, "{said}");
    let first = support::value(&w.join("out"), "shop", "reader", "apiKey");
    let (code, said) = cli(&[
        &["rotate", "-f", "p.yaml"][..],
        &logged,
        &["--now", "shop/site"],
    ]
    .concat());
    assert_eq!(code, 0, "{said}");
    let second = support::value(&w.join("out"), "shop", "reader", "apiKey");

    // Attempts that change nothing are on the trail too: nobody, a value rotated away --now, a
    // read key, a pasted value.
    for (credential, status) in [(None, 401), (Some(&first), 401), (Some(&second), 403)] {
        let mut req = http.post(format!("{}/v1/keys", server.url));
        if let Some(c) = credential {
            req = req.bearer_auth(c);
        }
        let r = req
            .json(&serde_json::json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{credential:?}");
    }
    let r = admin(Method::DELETE, &format!("/v1/keys/{second}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Reads are not changes.
    admin(Method::GET, "/v1/keys").send().await.unwrap();

    let on_cms = lines_of(&cms_log);
    let seen: Vec<(&str, &str, &str)> = on_cms
        .iter()
        .map(|l| {
            (
                l["who"].as_str().unwrap(),
                l["action"].as_str().unwrap(),
                l["result"].as_str().unwrap(),
            )
        })
        .collect();
    let id = on_cms[1]["created"].as_str().expect("the created key's id");
    let reader = format!("key {id}");
    assert_eq!(
        seen,
        [
            ("admin", "PUT /v1/apis/{api}", "done"),
            ("admin", "POST /v1/keys", "done"),
            ("admin", "POST /v1/keys/{id}/regenerate", "done"),
            ("anonymous", "POST /v1/keys", "refused"),
            ("unauthenticated", "POST /v1/keys", "refused"),
            (reader.as_str(), "POST /v1/keys", "refused"),
            ("admin", "DELETE /v1/keys/{id}", "refused"),
        ]
    );
    assert_eq!(on_cms[2]["path"], format!("/v1/keys/{id}/regenerate"));
    assert_eq!(on_cms[5]["status"], 403);
    assert!(
        on_cms[6].get("path").is_none(),
        "a failed request's path is not written"
    );
    assert!(on_cms
        .iter()
        .all(|l| l["at"].is_string() && l["client"] == "127.0.0.1"));

    let by_cli = lines_of(&cli_log);
    let seen: Vec<(&str, &str, &str, &str)> = by_cli
        .iter()
        .map(|l| {
            (
                l["who"].as_str().unwrap().split(" as ").next().unwrap(),
                l["action"].as_str().unwrap(),
                l["target"].as_str().unwrap(),
                l["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("keyward apply", "create key", "shop.site.reader", "done"),
            ("keyward apply", "write Secret", "shop/reader", "done"),
            ("keyward rotate", "regenerate key", id, "done"),
            ("keyward rotate", "write Secret", "shop/reader", "done"),
        ]
    );
    assert!(by_cli.iter().all(|l| l["key_id"] == id), "{by_cli:?}");

    // Never a value, in either trail.
    for file in [&cms_log, &cli_log] {
        let text = std::fs::read_to_string(file).unwrap();
        for value in [&first, &second, &support::ADMIN.to_owned()] {
            assert!(!text.contains(value.as_str()), "{}", file.display());
        }
    }
    let (code, said) = cli(&["plan", "-f", "p.yaml", "--audit-log", "x.jsonl"]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("--audit-log records writes: it goes with apply and rotate"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_secret_file_stays_when_its_key_goes() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let two = support::SITE_POLICY.replace(
        "      secret: {name: reader}\n",
        "      secret: {name: reader}\n    - name: kept\n      defaultPermissions: [GET]\n      secret: {name: kept, deletionPolicy: Retain}\n",
    );
    std::fs::write(w.join("p.yaml"), &two).unwrap();
    let (code, said) = run(&cms, w, &["apply", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{said}");
    let kept = std::fs::read_to_string(w.join("out/shop.kept.yaml")).unwrap();
    assert!(kept.contains("keyward.dev/retain: 'true'"), "{kept}");

    // Both keys go: both are revoked; the retained Secret's file stays, the other's goes.
    let none = "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: site, namespace: shop}\nspec:\n  keys: []\n";
    std::fs::write(w.join("p.yaml"), none).unwrap();
    let (code, said) = run(&cms, w, &["apply", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(key_count(&cms).await, 0, "{said}");
    assert!(!w.join("out/shop.reader.yaml").exists(), "{said}");
    assert_eq!(
        std::fs::read_to_string(w.join("out/shop.kept.yaml")).unwrap(),
        kept
    );
}

/// A policy `shop/site` with `keys` (YAML list items, indented by four).
fn site(keys: &str) -> String {
    format!("apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: site, namespace: shop}}\nspec:\n  keys:\n{keys}")
}

/// What `key` gets for `method` on API `blog`.
async fn answers(cms: &Cms, method: Method, key: &str) -> u16 {
    let body = (method == Method::POST).then(|| serde_json::json!({"title": "t"}));
    cms.req(method, "/api/blog", Some(key), body)
        .await
        .status
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_made_keys_are_adopted_with_a_new_value_or_their_checked_current_one() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let (front_id, front_v0) = cms
        .key(serde_json::json!({"name": "Frontend console", "defaultPermissions": ["GET", "POST"]}))
        .await;
    let (_, mobile_v0) = cms
        .key(serde_json::json!({"name": "Mobile", "defaultPermissions": ["GET"]}))
        .await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reader = format!("    - name: reader\n      defaultPermissions: [GET]\n      adopt: {{id: '{front_id}'}}\n      secret: {{name: reader}}\n");
    std::fs::write(w.join("p.yaml"), site(&reader)).unwrap();
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", "-f", "p.yaml", "--secrets-dir", "out"];
        args.extend_from_slice(extra);
        run(&cms, w, &args)
    };

    // The plan shows the adoption and what changes of the key: POST goes.
    let (code, said) = run(&cms, w, &["plan", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains(&format!(
            "⇐ adopt    shop/site/reader (id {front_id}, made outside keyward)"
        )),
        "{said}"
    );
    assert!(said.contains("old one valid 900s more"), "{said}");
    assert!(
        said.lines()
            .any(|l| l.trim_start().starts_with('-') && l.contains("POST")),
        "{said}"
    );

    let (code, said) = apply(&[]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("adopted key shop/site/reader (id {front_id})")),
        "{said}"
    );
    let front_v1 = support::value(&w.join("out"), "shop", "reader", "apiKey");
    assert_ne!(
        front_v1, front_v0,
        "a new value: keyward never learned the old one"
    );
    assert_eq!(answers(&cms, Method::GET, &front_v1).await, 200);
    assert_eq!(
        answers(&cms, Method::GET, &front_v0).await,
        200,
        "the old value works for the overlap"
    );
    assert_eq!(
        answers(&cms, Method::POST, &front_v1).await,
        403,
        "the rights are the policy's"
    );
    assert_eq!(key_count(&cms).await, 2, "no key made");
    let (code, said) = run(&cms, w, &["plan", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "managed now, nothing left to do: {said}");

    // By name, with its current value (a Secret in the manifests): checked, then kept.
    let mobile = format!("{reader}    - name: mobile\n      defaultPermissions: [GET]\n      adopt: {{name: Mobile, valueFrom: {{name: mobile-now}}}}\n      secret: {{name: mobile}}\n");
    let current = |v: &str| {
        format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: mobile-now, namespace: shop}}\nstringData: {{apiKey: '{v}'}}\n")
    };
    std::fs::write(w.join("p.yaml"), site(&mobile) + &current(&front_v1)).unwrap();
    // Another key's value is refused before anything changes.
    let (code, said) = apply(&[]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("is not key"), "{said}");
    assert!(!w.join("out/shop.mobile.yaml").exists());
    std::fs::write(w.join("p.yaml"), site(&mobile) + &current(&mobile_v0)).unwrap();
    let (code, said) = apply(&[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        support::value(&w.join("out"), "shop", "mobile", "apiKey"),
        mobile_v0,
        "kept"
    );
    assert_eq!(answers(&cms, Method::GET, &mobile_v0).await, 200);
    let (code, said) = run(&cms, w, &["plan", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{said}");

    // A key keyward manages cannot be taken by naming it.
    let other = format!("apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: other, namespace: shop}}\nspec:\n  keys:\n    - name: thief\n      defaultPermissions: [GET]\n      adopt: {{id: '{front_id}'}}\n      secret: {{name: thief}}\n");
    std::fs::write(w.join("q.yaml"), other).unwrap();
    let (code, said) = run(&cms, w, &["plan", "-f", "q.yaml", "--secrets-dir", "out2"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("is keyward's (policy shop.site)"), "{said}");
    assert_eq!(answers(&cms, Method::GET, &front_v1).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observe_only_plan_tracks_a_console_made_key_and_says_when_its_value_stops_working() {
    let cms = Cms::start().await;
    cms.api("blog").await;
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let (id, value) = cms
        .key(serde_json::json!({"name": "console key", "defaultPermissions": ["GET"], "expiresAt": soon.to_string()}))
        .await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let policy = format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: site, namespace: shop}}\nspec:\n  managementPolicy: ObserveOnly\n  keys:\n    - name: web\n      defaultPermissions: [GET]\n      adopt: {{id: '{id}', valueFrom: {{name: in-use}}}}\n      secret: {{name: web}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: in-use, namespace: shop}}\nstringData: {{apiKey: '{value}'}}\n"
    );
    std::fs::write(w.join("p.yaml"), policy).unwrap();
    let plan = || run(&cms, w, &["plan", "-f", "p.yaml", "--secrets-dir", "out"]);
    let (code, said) = plan();
    assert_eq!(code, 2, "the adoption waits for a person: {said}");
    assert!(said.contains("(ObserveOnly: not applied)"), "{said}");
    assert!(
        said.contains("shop/site/web: the key made by hand that it tracks expires at"),
        "{said}"
    );
    assert!(!said.contains("refuses the value"), "{said}");
    let (code, said) = run(&cms, w, &["apply", "-f", "p.yaml", "--secrets-dir", "out"]);
    assert_eq!(code, 2, "{said}");
    let key = cms
        .admin(Method::GET, &format!("/v1/keys/{id}"), None)
        .await
        .body;
    assert_eq!(key["name"], "console key", "nothing written");

    let r = cms.regenerate(&id, None).await;
    assert!(r.status.is_success(), "{}", r.text);
    let (_, said) = plan();
    assert!(
        said.contains("shop/site/web: the CMS refuses the value in use (adopt.valueFrom): 401"),
        "{said}"
    );
}
