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
