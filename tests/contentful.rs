//! The `contentful` provider against a stand-in for Contentful (`support::contentful`): keys
//! are Delivery API keys that read exactly the declared environments (the preview key's value
//! where drafts are declared); new keys are waited for until they answer; listings are read
//! page by page; drift is shown and repaired, also when someone else changed the key in between
//! (409); rotate makes a new key and deletes the old one; a removed key goes; rate limits are
//! waited out; what Contentful cannot hold is refused by field before any write; keys keyward
//! did not make are never touched; the CLI and the operator. Every management exchange is
//! checked against the entity types of Contentful's official management client on npm
//! (`contentful-management`), with `tsc --strict`.

#![allow(clippy::unwrap_used)]

mod support;

use keyward::gitops::Mode;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::contentful::{ContentfulStandIn, Exchange, ADMIN, SPACE};
use support::vendor_types::{type_errors, vendor_dir};
use support::{
    apply_twice, check_access, example_for, examples, manifest, plan_changes_without_writes,
    planned, run, value, Answers,
};

/// The Contentful example (examples-contentful/site) with the stand-in's space.
fn contentful_example(dir: &Path, s: &ContentfulStandIn) -> PathBuf {
    example_for(
        dir,
        "contentful",
        "site/policy.yaml",
        "https://api.contentful.com/spaces/SPACE_ID",
        &s.endpoint,
    )
}

/// The vendor's type of each call's request body and answer, as its management client sends
/// and reads them (`adapters/REST/endpoints/api-key.js`: an update sends the key without `sys`,
/// its tokens and policies).
fn types_of(method: &str, path: &str) -> Option<(Option<&'static str>, &'static str)> {
    let rest = path.strip_prefix(&format!("/spaces/{SPACE}"))?;
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    const UPDATE: &str =
        "Omit<C.ApiKeyProps, 'sys' | 'accessToken' | 'preview_api_key' | 'policies'>";
    Some(match (method, segments.as_slice()) {
        ("GET", [""]) => (None, "C.SpaceProps"),
        ("GET", ["environments"]) => (None, "C.CollectionProp<C.EnvironmentProps>"),
        ("GET", ["api_keys"]) => (None, "C.CollectionProp<C.ApiKeyProps>"),
        ("POST", ["api_keys"]) => (Some("C.CreateApiKeyProps"), "C.ApiKeyProps"),
        ("GET", ["api_keys", _]) => (None, "C.ApiKeyProps"),
        ("PUT", ["api_keys", _]) => (Some(UPDATE), "C.ApiKeyProps"),
        ("DELETE", ["api_keys", _]) => (None, "null"),
        ("GET", ["preview_api_keys", _]) => (None, "C.PreviewApiKeyProps"),
        _ => return None,
    })
}

/// What `tsc` says of the exchanges typed as the vendor's types; `None`: they match.
fn contentful_type_errors(exchanges: &[Exchange]) -> Option<String> {
    let mut values = Vec::new();
    for x in exchanges {
        let path = x.path.split('?').next().unwrap();
        let (request, response) = types_of(&x.method, path).unwrap_or_else(|| {
            panic!("{} {path} is not a call of the management client", x.method)
        });
        let what = format!("{} {path}", x.method);
        if let Some(body) = &x.request {
            let t = request.unwrap_or_else(|| panic!("{what} takes no body, and was sent one"));
            values.push((format!("{what} request"), t.to_owned(), body.clone()));
        }
        if (200..300).contains(&x.status) {
            values.push((
                format!("{what} answer"),
                response.to_owned(),
                x.response.clone(),
            ));
        }
    }
    let import = format!(
        "import type * as C from '{}';",
        vendor_dir()
            .join("node_modules/contentful-management/dist/types/export-types")
            .display()
    );
    type_errors(&import, &values)
}

fn matches_the_vendors_types(exchanges: &[Exchange]) {
    assert!(!exchanges.is_empty(), "no exchange to check");
    if let Some(errors) = contentful_type_errors(exchanges) {
        panic!("the exchanges do not match Contentful's types:\n{errors}");
    }
}

/// The keys the stand-in starts with (none of them keyward's).
const FOREIGN: [&str; 1] = ["k-website"];

#[tokio::test(flavor = "multi_thread")]
async fn examples_apply_and_their_keys_read_exactly_their_environments() {
    let s = ContentfulStandIn::start().await;
    // Two keys a page: every listing is read page by page. New keys answer after a second:
    // an apply returns only once they do.
    s.page_cap(2);
    s.propagation(Duration::from_secs(1));
    let out = tempfile::tempdir().unwrap();
    let ex03 = examples().join("03-multi-device");
    let site = contentful_example(out.path(), &s);
    let all: [&Path; 2] = [&ex03, &site];

    plan_changes_without_writes(&s, &all, out.path()).await;
    assert_eq!(s.keys().len(), 1, "plan made no key");
    apply_twice(&s, &all, out.path()).await;
    let keys = s.keys();
    assert_eq!(keys.len(), 1 + 6, "{keys:?}");
    assert_eq!(keys["k-website"].0, "Website", "untouched");

    let access = "
        mobile cms-key-web        apiKey                  master  GET  200
        mobile cms-key-ios        apiKey                  staging GET  200
        mobile cms-key-android    apiKey                  master  POST 403
        site   contentful-frontend CONTENTFUL_ACCESS_TOKEN master  GET  200
        site   contentful-frontend CONTENTFUL_ACCESS_TOKEN staging GET  401
        site   contentful-preview  CONTENTFUL_PREVIEW_TOKEN staging GET  200
        site   contentful-preview  CONTENTFUL_PREVIEW_TOKEN master  GET  401
        site   contentful-builds   CONTENTFUL_ACCESS_TOKEN staging GET  200
    ";
    check_access(&s, out.path(), access).await;
    let exchanges = s.exchanges();
    let preview_read = exchanges
        .iter()
        .filter(|x| x.path.contains("/preview_api_keys/"))
        .count();
    assert_eq!(
        preview_read, 1,
        "the preview key's value is read for the preview key only"
    );
    assert!(
        exchanges.iter().any(|x| x.path.contains("skip=2")),
        "the listings were read page by page"
    );
    matches_the_vendors_types(&exchanges);

    // The check itself: an answer without a field Contentful always sends, and an update with a
    // field the client never sends, are caught.
    let mut wrong = exchanges.clone();
    let made = wrong.iter_mut().find(|x| x.method == "POST").unwrap();
    made.response.as_object_mut().unwrap().remove("accessToken");
    made.request.as_mut().unwrap()["can_fly"] = json!(true);
    let said = contentful_type_errors(&wrong).expect("caught");
    assert!(
        said.contains("accessToken") && said.contains("can_fly"),
        "{said}"
    );
}

/// The `app` policy of namespace `team` with one key `reader`.
fn reader(dir: &Path, key: &str) -> PathBuf {
    let text = format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n    - name: reader\n{key}      secret: {{name: reader}}\n"
    );
    manifest(dir, "reader.yaml", &text)
}

/// The id of the key named `name`.
fn id_of(s: &ContentfulStandIn, name: &str) -> String {
    s.keys()
        .into_iter()
        .find(|(_, (n, _))| n == name)
        .map(|(id, _)| id)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_rotate_makes_a_new_key_and_a_removed_key_goes() {
    let s = ContentfulStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let w = out.path();
    let p = reader(
        w,
        "      defaultPermissions: [GET]\n      environments: [master]\n",
    );
    run(&s, &[&p], w, Mode::Apply).await.unwrap();
    let old = value(w, "team", "reader", "apiKey");
    let id = id_of(&s, "team.app.reader");

    // By hand: the key now reads staging too. The plan shows it; the apply undoes it, also
    // when someone else changes the key between keyward's read and its update (409).
    s.set_environments(&id, &["master", "staging"]);
    assert_eq!(s.status(Method::GET, "staging", &old).await, StatusCode::OK);
    let plan = run(&s, &[&p], w, Mode::Plan).await.unwrap();
    assert_eq!(
        planned(&plan),
        [("update".to_owned(), "team/app/reader".to_owned())],
        "{}",
        plan.text()
    );
    s.conflict(1);
    run(&s, &[&p], w, Mode::Apply).await.unwrap();
    assert_eq!(s.conflicted(), 1);
    assert_eq!(
        s.status(Method::GET, "staging", &old).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.keys()[&id].1, ["master"]);
    let again = run(&s, &[&p], w, Mode::Plan).await.unwrap();
    assert!(!again.has_changes(), "{}", again.text());

    // Drafts cannot be added to a key in place: its value would change.
    let drafts = reader(
        w,
        "      defaultPermissions: [GET, GET_ALL_DRAFTS]\n      environments: [master]\n",
    );
    let said = run(&s, &[&drafts], w, Mode::Apply)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        said.contains("adding or removing GET_ALL_DRAFTS needs a new key"),
        "{said}"
    );
    let p = reader(
        w,
        "      defaultPermissions: [GET]\n      environments: [master]\n",
    );

    // Rotate: a new key, waited for; the old one is deleted and answers 401.
    s.propagation(Duration::from_millis(800));
    let rotated = support::rotate(&s, &[&p], w, "team/app/reader", true).await;
    assert_eq!(
        planned(&rotated),
        [("rotate".to_owned(), "team/app/reader".to_owned())],
        "{}",
        rotated.text()
    );
    let new = value(w, "team", "reader", "apiKey");
    assert_ne!(new, old);
    assert_eq!(
        s.status(Method::GET, "master", &new).await,
        StatusCode::OK,
        "answers at once"
    );
    assert_eq!(
        s.status(Method::GET, "master", &old).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!s.keys().contains_key(&id), "the old key is gone");
    let again = run(&s, &[&p], w, Mode::Plan).await.unwrap();
    assert!(!again.has_changes(), "{}", again.text());

    // Removed from the manifest: its key goes; the key keyward did not make stays.
    let empty = manifest(w, "reader.yaml", "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: app, namespace: team}\nspec:\n  keys: []\n");
    run(&s, &[&empty], w, Mode::Apply).await.unwrap();
    assert_eq!(
        s.status(Method::GET, "master", &new).await,
        StatusCode::UNAUTHORIZED
    );
    let left: Vec<String> = s.keys().into_keys().collect();
    assert_eq!(left, FOREIGN);
    matches_the_vendors_types(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_waited_out_with_the_reset_contentful_sends() {
    let s = ContentfulStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let p = reader(out.path(), "      defaultPermissions: [GET]\n");
    s.throttle(2);
    let started = std::time::Instant::now();
    let o = run(&s, &[&p], out.path(), Mode::Apply).await.unwrap();
    assert_eq!(s.throttled(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the reset each time"
    );
    assert_eq!(
        planned(&o),
        [("create".to_owned(), "team/app/reader".to_owned())]
    );
    let key = value(out.path(), "team", "reader", "apiKey");
    assert_eq!(s.status(Method::GET, "staging", &key).await, StatusCode::OK);
    matches_the_vendors_types(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_contentful_cannot_hold_is_refused_by_field_before_any_write() {
    let s = ContentfulStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let w = out.path();
    for (key, field) in [
        ("      defaultPermissions: [GET, POST]\n", "defaultPermissions[1]: the contentful provider cannot express this: a Contentful Delivery API key only reads"),
        ("      defaultPermissions: [GET, GET_ALL_CLOSED]\n", "defaultPermissions[1]: the contentful provider cannot express this: Contentful's delivery APIs have no closed"),
        ("      apiPermissions:\n        - api: articles\n          permissions: [GET]\n", "apiPermissions[0]: the contentful provider cannot express this: a Contentful Delivery API key reads every content type"),
        ("      defaultPermissions: [GET]\n      environments: [prod]\n", "environments[0]: the contentful provider cannot express this: this Contentful space has no environment 'prod' (it has: master, staging)"),
        ("      defaultPermissions: [GET]\n      expiresAfter: 30d\n", "expiresAfter"),
        ("      defaultPermissions: [GET]\n      rotationOverlap: 10m\n", "rotationOverlap"),
        ("      kind: management\n      managementPermissions: [keys:write]\n", "kind"),
        ("      scopes: ['content:write']\n", "scopes[0]"),
    ] {
        let p = reader(w, key);
        let err = run(&s, &[&p], w, Mode::Apply).await.err().unwrap_or_else(|| panic!("{key}: accepted"));
        let said = err.to_string();
        assert!(said.contains("spec.keys[0].") && said.contains(field), "{key}: {said}");
    }
    for ex in [
        "01-read-only-with-contact-form",
        "02-public-and-private-apis",
        "04-preview-one-environment",
        "05-management-for-migrations",
        "06-public-scoped-keys-with-cors",
    ] {
        let said = run(&s, &[&examples().join(ex)], w, Mode::Plan)
            .await
            .err()
            .unwrap_or_else(|| panic!("{ex}: accepted"))
            .to_string();
        assert!(
            said.contains("the contentful provider cannot express this"),
            "{ex}: {said}"
        );
    }
    assert!(s.exchanges().iter().all(|x| x.method == "GET"), "no write");
    assert_eq!(s.keys().len(), 1);
    matches_the_vendors_types(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_plans_and_applies_through_the_binary() {
    let s = ContentfulStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let site = contentful_example(out.path(), &s);
    let site = site.to_str().unwrap();
    let cli = |args: &[&str]| {
        let (code, said) = support::cli_on(&s, out.path(), &[args, &["-f", site]].concat());
        (Some(code), said)
    };
    let (code, plan) = cli(&["plan", "--secrets-dir", "out"]);
    assert_eq!(code, Some(2), "changes pending: {plan}");
    let (code, apply) = cli(&["apply", "--secrets-dir", "out"]);
    assert_eq!(code, Some(0), "{apply}");
    assert!(
        apply.starts_with("CmsConnection site/contentful (Contentful at "),
        "{apply}"
    );
    let (code, again) = cli(&["plan", "--secrets-dir", "out"]);
    assert_eq!(code, Some(0), "nothing left to do: {again}");
    let (code, explained) = cli(&["explain", "--live", "site/web/preview"]);
    assert_eq!(code, Some(0), "{explained}");
    let preview = value(
        &out.path().join("out"),
        "site",
        "contentful-preview",
        "CONTENTFUL_PREVIEW_TOKEN",
    );
    assert_eq!(
        s.status(Method::GET, "staging", &preview).await,
        StatusCode::OK
    );
    // Contentful shows the tokens in every answer about a key: none of them is printed.
    for text in [&plan, &apply, &again, &explained] {
        assert!(
            !text.contains(&preview) && !text.contains("cf-"),
            "no key value in what the CLI prints"
        );
    }
    matches_the_vendors_types(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_manages_contentful_keys() {
    use kube::api::DeleteParams;
    use support::eventually;
    use support::operator_on::OperatorOn;
    let within = Duration::from_secs(30);

    let s = ContentfulStandIn::start().await;
    let o = OperatorOn::start(&s, "token").await;
    o.create_policy("web", json!({"name": "reader", "defaultPermissions": ["GET"], "environments": ["staging"], "secret": {"name": "reader"}})).await;
    o.create_policy("bad", json!({"name": "k", "apiPermissions": [{"api": "articles", "permissions": ["GET"]}], "secret": {"name": "bad"}})).await;
    eventually("the reader Secret", within, || async {
        o.secret_value("reader", "apiKey").await.is_some()
    })
    .await;
    let key = o.secret_value("reader", "apiKey").await.unwrap();
    s.expect(&[
        (Method::GET, "staging", &key, StatusCode::OK),
        (Method::GET, "master", &key, StatusCode::UNAUTHORIZED),
    ])
    .await;
    o.connection_connected(2, within).await;
    eventually("the bad policy refused", within, || async {
        o.ready("bad")
            .await
            .is_some_and(|c| c["reason"] == "InvalidSpec")
    })
    .await;
    let msg = o.ready("bad").await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(msg.contains("spec.keys[0].apiPermissions[0]"), "{msg}");
    assert!(!msg.contains("cf-"), "no token in the status: {msg}");

    o.policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the key is revoked", within, || async {
        s.status(Method::GET, "staging", &key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let left: Vec<String> = s.keys().into_keys().collect();
    assert_eq!(left, FOREIGN);
    matches_the_vendors_types(&s.exchanges());
}

/// `scripts/live-check.sh contentful`, the check a user runs against their own space, against
/// the stand-in (new keys answer after a second): the throwaway key answers 200, then 401 once
/// removed, and nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_check_script_passes_against_the_stand_in() {
    let s = ContentfulStandIn::start().await;
    s.propagation(Duration::from_secs(1));
    let said = support::live_check(
        "contentful",
        vec![
            ("CONTENTFUL_MANAGEMENT_TOKEN", ADMIN.to_owned()),
            ("CONTENTFUL_SPACE_ID", SPACE.to_owned()),
            ("CONTENTFUL_CMA_URL", s.url.clone()),
            ("CONTENTFUL_CDA_URL", s.url.clone()),
        ],
    )
    .await;
    assert!(!said.contains("cf-"), "no value shown: {said}");
    let left: Vec<String> = s.keys().into_keys().collect();
    assert_eq!(left, FOREIGN, "nothing left behind");
    matches_the_vendors_types(&s.exchanges());
}

/// An id of `..` (an edited Secret annotation, a hostile answer) would reach the space itself:
/// no call is sent with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_dot_segment_id_is_never_sent() {
    use keyward::providers::contentful::Contentful;
    use keyward::providers::{CmsProvider, ProviderError};
    let s = ContentfulStandIn::start().await;
    let p = Contentful::new(&s.endpoint, ADMIN).unwrap();
    for id in ["..", "."] {
        let got = p.revoke_key(id).await;
        assert!(
            matches!(got, Err(ProviderError::Config { .. })),
            "{id}: {got:?}"
        );
        let got = p.update_key(id, &Default::default()).await;
        assert!(got.is_err(), "{id}");
    }
    assert!(
        s.exchanges().iter().all(|x| !x.path.contains("api_keys/")),
        "{:?}",
        s.exchanges()
            .iter()
            .map(|x| x.path.clone())
            .collect::<Vec<_>>()
    );
}
