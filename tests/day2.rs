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
