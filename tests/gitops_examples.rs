//! Each example manifest set, planned and applied against the reference CMS; the written keys
//! are then used on the content API to check that they hold exactly the declared rights.

mod support;

use keyward::gitops::Mode;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use support::{examples, gitops, secret_field, Answers, Cms};

/// Plans, applies, checks that a second apply writes nothing; returns the secrets directory.
async fn apply_example(cms: &Cms, name: &str) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let path = examples().join(name);
    let plan = gitops(cms, &[&path], out.path(), Mode::Plan).await.unwrap();
    assert!(plan.has_changes(), "a first plan has changes");
    assert_eq!(plan.runs[0].cms_writes, 0, "plan writes nothing");
    let text = plan.text();
    let first = gitops(cms, &[&path], out.path(), Mode::Apply)
        .await
        .unwrap();
    assert!(first.runs[0].cms_writes > 0);
    let again = gitops(cms, &[&path], out.path(), Mode::Apply)
        .await
        .unwrap();
    assert!(!again.has_changes(), "{}", again.text());
    assert_eq!(
        again.runs[0].cms_writes, 0,
        "a second apply makes zero CMS writes"
    );
    assert_eq!(again.runs[0].secret_writes, 0, "and writes no Secret");
    // No key value ever appears in plan or apply output. Each Secret file holds a value, so
    // a scan that found none (and so proved nothing) fails.
    let (mut files, mut scanned) = (0, 0);
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue; // the directory's lock file
        }
        files += 1;
        let text_of_secret = std::fs::read_to_string(path).unwrap();
        let s: k8s_openapi::api::core::v1::Secret =
            serde_yaml_ng::from_str(&text_of_secret).unwrap();
        for v in s.data.unwrap().values() {
            let v = String::from_utf8(v.0.clone()).unwrap();
            if v.starts_with("kw_") {
                scanned += 1;
                assert!(
                    !text.contains(&v)
                        && !first.text().contains(&v)
                        && !first.json().to_string().contains(&v)
                );
            }
        }
    }
    assert!(
        files > 0 && scanned >= files,
        "{scanned} key values in {files} Secret files"
    );
    out
}

fn key(out: &Path, ns: &str, secret: &str, field: &str) -> String {
    secret_field(out, ns, secret, field)
        .unwrap_or_else(|| panic!("Secret {ns}/{secret} has no {field}"))
}

async fn apis(cms: &Cms, names: &[&str]) {
    for n in names {
        cms.api(n).await;
    }
}

#[tokio::test]
async fn read_only_by_default_with_a_contact_form_writer() {
    let cms = Cms::start().await;
    apis(&cms, &["blog", "contact"]).await;
    let out = apply_example(&cms, "01-read-only-with-contact-form").await;
    let reader = key(out.path(), "corporate", "cms-reader", "CMS_API_KEY");
    let writer = key(out.path(), "corporate", "cms-contact-writer", "CMS_API_KEY");
    assert_eq!(
        secret_field(out.path(), "corporate", "cms-reader", "CMS_URL").unwrap(),
        cms.url
    );
    cms.expect(&[
        (Method::GET, "/api/blog", &reader, StatusCode::OK),
        (Method::GET, "/api/contact", &reader, StatusCode::OK),
        (Method::POST, "/api/contact", &reader, StatusCode::FORBIDDEN),
        (Method::POST, "/api/contact", &writer, StatusCode::CREATED),
        (Method::GET, "/api/contact", &writer, StatusCode::FORBIDDEN),
        (Method::GET, "/api/blog", &writer, StatusCode::FORBIDDEN),
        (Method::POST, "/api/blog", &writer, StatusCode::FORBIDDEN),
    ])
    .await;
}

#[tokio::test]
async fn public_apis_readable_private_ones_not() {
    let cms = Cms::start().await;
    apis(&cms, &["articles", "authors", "internal-notes"]).await;
    let out = apply_example(&cms, "02-public-and-private-apis").await;
    let k = key(out.path(), "media", "cms-public-content", "apiKey");
    cms.expect(&[
        (Method::GET, "/api/articles", &k, StatusCode::OK),
        (Method::GET, "/api/authors", &k, StatusCode::OK),
        (
            Method::GET,
            "/api/internal-notes",
            &k,
            StatusCode::FORBIDDEN,
        ),
        (Method::POST, "/api/articles", &k, StatusCode::FORBIDDEN),
    ])
    .await;
    let rec = cms.admin(Method::GET, "/v1/keys", None).await.body;
    assert_eq!(rec["keys"][0]["type"], "public");
}

#[tokio::test]
async fn one_key_per_device_with_the_same_rights() {
    let cms = Cms::start().await;
    apis(&cms, &["blog"]).await;
    let out = apply_example(&cms, "03-multi-device").await;
    let keys: Vec<String> = ["web", "ios", "android"]
        .iter()
        .map(|d| key(out.path(), "mobile", &format!("cms-key-{d}"), "apiKey"))
        .collect();
    for k in &keys {
        cms.expect(&[
            (Method::GET, "/api/blog", k, StatusCode::OK),
            (Method::POST, "/api/blog", k, StatusCode::FORBIDDEN),
        ])
        .await;
    }
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
}

#[tokio::test]
async fn preview_key_for_one_environment() {
    let cms = Cms::start().await;
    apis(&cms, &["blog"]).await;
    cms.admin(
        Method::POST,
        "/environments/staging/api/blog?status=draft",
        Some(json!({"t": "draft"})),
    )
    .await;
    let out = apply_example(&cms, "04-preview-one-environment").await;
    let k = key(out.path(), "staging", "cms-preview", "PREVIEW_API_KEY");
    let r = cms
        .req(
            Method::GET,
            "/environments/staging/api/blog?drafts=true",
            Some(&k),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["totalCount"], 1);
    assert_eq!(
        cms.status(Method::GET, "/api/blog", &k).await,
        StatusCode::FORBIDDEN,
        "production is off limits"
    );
    assert_eq!(
        cms.status(Method::POST, "/environments/staging/api/blog", &k)
            .await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn management_key_for_migrations() {
    let cms = Cms::start().await;
    apis(&cms, &["blog"]).await;
    let out = apply_example(&cms, "05-management-for-migrations").await;
    let k = key(out.path(), "platform", "cms-migrator", "CMS_MANAGEMENT_KEY");
    let r = cms
        .req(
            Method::POST,
            "/api/blog?status=draft",
            Some(&k),
            Some(json!({"t": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().unwrap();
    cms.expect(&[
        (
            Method::GET,
            "/api/blog?drafts=true&closed=true",
            &k,
            StatusCode::OK,
        ),
        (
            Method::POST,
            &format!("/api/blog/{id}/publish"),
            &k,
            StatusCode::OK,
        ),
    ])
    .await;
    assert_eq!(
        cms.status(Method::GET, "/v1/keys", &k).await,
        StatusCode::FORBIDDEN,
        "no key management"
    );
    let rec = cms.admin(Method::GET, "/v1/keys", None).await.body;
    let exp: jiff::Timestamp = rec["keys"][0]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        exp.duration_since(jiff::Timestamp::now()).as_secs() / 86_400,
        29,
        "expiresAfter: 30d"
    );
}

#[tokio::test]
async fn public_scoped_key_with_cors_and_a_public_form() {
    let cms = Cms::start().await;
    apis(&cms, &["blog", "feedback"]).await;
    let out = apply_example(&cms, "06-public-scoped-keys-with-cors").await;
    let k = key(out.path(), "shop", "storefront-cms", "CMS_API_KEY");
    cms.expect(&[
        (Method::GET, "/api/blog", &k, StatusCode::OK),
        (Method::POST, "/api/blog", &k, StatusCode::FORBIDDEN),
    ])
    .await;
    let r = cms
        .req(
            Method::POST,
            "/api/feedback",
            None,
            Some(json!({"m": "hi"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "the contact form needs no key"
    );
    assert_eq!(
        cms.req(Method::GET, "/api/feedback", None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let pre = cms
        .http
        .request(Method::OPTIONS, format!("{}/api/blog", cms.url))
        .header("Origin", "https://shop.example.com")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    // The manifest as `kubectl apply` reads it.
    let file = out.path().join("shop.storefront-cms.yaml");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("storefront-cms"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let labels = secret.metadata.labels.unwrap();
    assert_eq!(labels["app"], "storefront");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "keyward");
    assert_eq!(labels["keyward.dev/policy"], "storefront");
    let ann = secret.metadata.annotations.unwrap();
    let id = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ann["keyward.dev/key-id"], id);
    // The fingerprint names the value without revealing it: "sha256:" and the first 8 bytes of
    // its SHA-256, computed here.
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(k.as_bytes());
    let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ann["keyward.dev/fingerprint"], format!("sha256:{expected}"));
    let data = secret.data.unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["CMS_API_KEY", "CMS_URL"],
        "the key field and the extra field, nothing else"
    );
    assert_eq!(data["CMS_URL"].0, cms.url.as_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
