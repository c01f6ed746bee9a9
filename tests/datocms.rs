//! The `datocms` provider against a stand-in for DatoCMS (`support::datocms`): keys are API
//! tokens with roles of their own that hold exactly the declared rights; drift is shown and
//! repaired; rotate regenerates (the old value answers 401 at once); a removed key's token and
//! role go; rate limits are waited out; what DatoCMS cannot hold is refused by field before any
//! write; tokens keyward did not make are never touched; the CLI and the operator. Every
//! management exchange is checked against DatoCMS's own description of its API, from its
//! official client on npm (`@datocms/cma-client`): the endpoint in `resources.json`, the request
//! and answer bodies against the types of `RawApiTypes.ts`, with `tsc --strict`.

#![allow(clippy::unwrap_used)]

mod support;

use keyward::gitops::Mode;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::datocms::{DatoCmsStandIn, Exchange, ADMIN};
use support::vendor_types::{self, vendor_dir};
use support::{
    apply_twice, check_access, example_for, examples, manifest, plan_changes_without_writes,
    planned, run, value, Answers, EXAMPLES_ACCESS,
};

/// The DatoCMS example (examples-datocms/site) with the stand-in's endpoint.
fn datocms_example(dir: &Path, s: &DatoCmsStandIn) -> PathBuf {
    example_for(
        dir,
        "datocms",
        "site/policy.yaml",
        "https://site-api.datocms.com",
        &s.url,
    )
}

/// An endpoint of DatoCMS's description: method, URL template segments (`${...}` stands for
/// an id), request and answer types.
struct Endpoint {
    method: String,
    template: Vec<String>,
    request: Option<String>,
    response: Option<String>,
}

impl Endpoint {
    fn matches(&self, method: &str, path: &str) -> bool {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.method == method
            && segments.len() == self.template.len()
            && self
                .template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with("${") && !s.is_empty()))
    }
}

fn endpoints(package: &Path) -> Vec<Endpoint> {
    let text = std::fs::read_to_string(package.join("resources.json")).unwrap();
    let resources: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for r in resources.as_array().unwrap() {
        for e in r["endpoints"].as_array().unwrap() {
            let template = e["urlTemplate"].as_str().unwrap();
            out.push(Endpoint {
                method: e["method"].as_str().unwrap().to_owned(),
                template: template
                    .trim_matches('/')
                    .split('/')
                    .map(str::to_owned)
                    .collect(),
                request: e["requestBodyType"].as_str().map(str::to_owned),
                response: e["responseType"].as_str().map(str::to_owned),
            });
        }
    }
    out
}

/// Every exchange is a call DatoCMS describes, each request body is of the endpoint's request
/// type and each successful answer of its response type (checked by `tsc --strict`: a missing
/// field, a field the type does not have, or a wrong value fails).
fn matches_the_vendors_description(exchanges: &[Exchange]) {
    assert!(!exchanges.is_empty(), "no exchange to check");
    if let Some(errors) = type_errors(exchanges) {
        panic!("the exchanges do not match DatoCMS's types:\n{errors}");
    }
}

/// What `tsc` says of the exchanges typed as DatoCMS's request and answer types; `None`: they
/// match.
fn type_errors(exchanges: &[Exchange]) -> Option<String> {
    let package = vendor_dir().join("node_modules/@datocms/cma-client");
    let endpoints = endpoints(&package);
    let mut values = Vec::new();
    for x in exchanges {
        let path = x.path.split('?').next().unwrap();
        let e = endpoints
            .iter()
            .find(|e| e.matches(&x.method, path))
            .unwrap_or_else(|| panic!("{} {path} is not a call DatoCMS describes", x.method));
        let what = format!("{} {path}", x.method);
        if let Some(body) = &x.request {
            let t = e
                .request
                .as_ref()
                .unwrap_or_else(|| panic!("{what} takes no body, and was sent one"));
            values.push((format!("{what} request"), format!("T.{t}"), body.clone()));
        }
        if (200..300).contains(&x.status) {
            let t = e.response.as_ref().unwrap();
            values.push((
                format!("{what} answer"),
                format!("T.{t}"),
                x.response.clone(),
            ));
        }
    }
    let import = format!(
        "import type * as T from '{}';",
        package.join("dist/types/generated/RawApiTypes").display()
    );
    vendor_types::type_errors(&import, &values)
}

/// A read of model `api` through the Content Delivery API with `key`, in `environment`, with
/// drafts or not.
async fn reads(s: &DatoCmsStandIn, key: &str, api: &str, environment: &str, drafts: bool) -> u16 {
    let mut rb = reqwest::Client::new()
        .post(format!("{}/graphql", s.url))
        .bearer_auth(key)
        .header("x-environment", environment)
        .json(&json!({"query": format!("{{ all{api} {{ id }} }}")}));
    if drafts {
        rb = rb.header("x-include-drafts", "true");
    }
    rb.send().await.unwrap().status().as_u16()
}

/// The tokens the stand-in starts with (none of them keyward's).
const FOREIGN: [&str; 3] = ["t-admin", "t-readonly", "t-zapier"];

#[tokio::test(flavor = "multi_thread")]
async fn examples_apply_and_their_tokens_hold_exactly_the_declared_rights() {
    let s = DatoCmsStandIn::start().await;
    let foreign_before = s.tokens();
    let out = tempfile::tempdir().unwrap();
    let ex02 = examples().join("02-public-and-private-apis");
    let ex03 = examples().join("03-multi-device");
    let site = datocms_example(out.path(), &s);
    let all: [&Path; 3] = [&ex02, &ex03, &site];

    plan_changes_without_writes(&s, &all, out.path()).await;
    assert_eq!(s.tokens(), foreign_before, "plan made no token");
    apply_twice(&s, &all, out.path()).await;
    let tokens = s.tokens();
    assert_eq!(tokens.len(), 3 + 8, "{tokens:?}");
    for id in FOREIGN {
        assert_eq!(tokens[id], foreign_before[id], "{id} untouched");
    }

    check_access(&s, out.path(), EXAMPLES_ACCESS).await;
    let site_access = "
        site datocms-frontend DATOCMS_API_TOKEN articles GET    200
        site datocms-frontend DATOCMS_API_TOKEN notes    GET    403
        site datocms-frontend DATOCMS_API_TOKEN articles POST   403
        site datocms-editor   DATOCMS_API_TOKEN articles POST   200
        site datocms-editor   DATOCMS_API_TOKEN articles PUT    200
        site datocms-editor   DATOCMS_API_TOKEN articles DELETE 200
        site datocms-editor   DATOCMS_API_TOKEN authors  GET    200
        site datocms-editor   DATOCMS_API_TOKEN authors  POST   403
        site datocms-importer DATOCMS_API_TOKEN notes    POST   200
        site datocms-importer DATOCMS_API_TOKEN notes    GET    403
    ";
    check_access(&s, out.path(), site_access).await;
    // Drafts and environments: the preview key reads staging's drafts, nothing of main; the
    // public key reads what is published, no drafts.
    let preview = value(out.path(), "site", "datocms-preview", "DATOCMS_API_TOKEN");
    assert_eq!(reads(&s, &preview, "notes", "staging", true).await, 200);
    assert_eq!(reads(&s, &preview, "notes", "main", false).await, 403);
    let frontend = value(out.path(), "site", "datocms-frontend", "DATOCMS_API_TOKEN");
    assert_eq!(
        reads(&s, &frontend, "articles", "staging", false).await,
        200
    );
    assert_eq!(reads(&s, &frontend, "articles", "main", true).await, 403);

    // What DatoCMS holds: the tag ends the token's name; the role is the key's, with entries
    // per environment.
    let (id, (name, role)) = tokens
        .iter()
        .find(|(_, (n, _))| n.starts_with("site.web.frontend "))
        .unwrap();
    assert!(
        name.starts_with(
            "site.web.frontend [keyward policy=site.web key=frontend type=public created="
        ),
        "{id}: {name}"
    );
    let role = s.role(role.as_deref().unwrap()).unwrap();
    assert_eq!(
        role["attributes"]["name"],
        "site.web.frontend (keyward key): the site's pages read what is published"
    );
    let positive = role["attributes"]["positive_item_type_permissions"]
        .as_array()
        .unwrap();
    assert_eq!(
        positive.len(),
        4,
        "read on two models in two environments: {positive:?}"
    );
    assert!(role["attributes"]["can_manage_access_tokens"] == false);
    let exchanges = s.exchanges();
    matches_the_vendors_description(&exchanges);

    // The check itself: an answer without a field DatoCMS always sends, and a request with
    // one its schema does not have, are caught.
    let mut wrong = exchanges.clone();
    let listing = wrong
        .iter_mut()
        .find(|x| x.path == "/access_tokens" && x.method == "GET")
        .unwrap();
    listing.response["data"][0]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("hardcoded_type");
    let create = wrong
        .iter_mut()
        .find(|x| x.path == "/roles" && x.method == "POST")
        .unwrap();
    create.request.as_mut().unwrap()["data"]["attributes"]["can_fly"] = json!(true);
    let said = type_errors(&wrong).expect("caught");
    assert!(
        said.contains("hardcoded_type") && said.contains("can_fly"),
        "{said}"
    );
}

/// The `site` policy of namespace `team` with one key `writer`, as YAML.
fn writer(dir: &Path, key: &str) -> PathBuf {
    let text = format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: app, namespace: team}}\nspec:\n  keys:\n    - name: writer\n{key}      secret: {{name: writer}}\n"
    );
    manifest(dir, "writer.yaml", &text)
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_rotate_regenerates_and_a_removed_key_goes() {
    let s = DatoCmsStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let w = out.path();
    let p = writer(
        w,
        "      apiPermissions:\n        - api: articles\n          permissions: [GET, GET_ALL_DRAFTS, POST]\n",
    );
    run(&s, &[&p], w, Mode::Apply).await.unwrap();
    let old = value(w, "team", "writer", "apiKey");
    s.expect(&[
        (Method::POST, "articles", &old, StatusCode::OK),
        (Method::POST, "authors", &old, StatusCode::FORBIDDEN),
    ])
    .await;
    let (id, role) = s
        .tokens()
        .into_iter()
        .find(|(_, (n, _))| n.starts_with("team.app.writer "))
        .map(|(id, (_, r))| (id, r.unwrap()))
        .unwrap();

    // By hand: the role may now create authors in main, and the token may manage content
    // with a second flag. The plan shows it; the apply undoes it.
    s.edit_role(&role, |a| {
        a["positive_item_type_permissions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"action": "create", "environment": "main", "item_type": "m-authors", "localization_scope": "all"}));
    });
    let plan = run(&s, &[&p], w, Mode::Plan).await.unwrap();
    assert_eq!(
        planned(&plan),
        [("update".to_owned(), "team/app/writer".to_owned())],
        "{}",
        plan.text()
    );
    assert_eq!(
        s.status(Method::POST, "authors", &old).await,
        StatusCode::OK
    );
    run(&s, &[&p], w, Mode::Apply).await.unwrap();
    assert_eq!(
        s.status(Method::POST, "authors", &old).await,
        StatusCode::FORBIDDEN
    );
    s.edit_role(&role, |a| a["can_manage_access_tokens"] = json!(true));
    s.edit_token(&id, false, true);
    let plan = run(&s, &[&p], w, Mode::Plan).await.unwrap();
    assert!(plan.has_changes(), "{}", plan.text());
    run(&s, &[&p], w, Mode::Apply).await.unwrap();
    assert_eq!(
        s.role(&role).unwrap()["attributes"]["can_manage_access_tokens"],
        false
    );
    let again = run(&s, &[&p], w, Mode::Plan).await.unwrap();
    assert!(!again.has_changes(), "{}", again.text());

    // Rotate: a new value at once, on the same token; the old one answers 401.
    let new = support::rotated_in_place(&s, &[&p], w, "articles", &old).await;
    assert!(s.tokens().contains_key(&id), "the same token");
    assert_eq!(
        s.status(Method::POST, "articles", &new).await,
        StatusCode::OK
    );

    // Removed from the manifest (with prune): its token and its role go; others stay.
    let empty = manifest(w, "writer.yaml", "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: app, namespace: team}\nspec:\n  keys: []\n");
    let opts = keyward::gitops::Options {
        prune: true,
        ..support::Target::options(&s, &[&empty], w, Mode::Apply)
    };
    keyward::gitops::run(&opts).await.unwrap();
    assert_eq!(
        s.status(Method::POST, "articles", &new).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(!s.tokens().contains_key(&id) && s.role(&role).is_none());
    let left: Vec<String> = s.tokens().into_keys().collect();
    assert_eq!(left, FOREIGN, "tokens keyward did not make stay");
    matches_the_vendors_description(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_waited_out_with_the_reset_datocms_sends() {
    let s = DatoCmsStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let p = writer(out.path(), "      defaultPermissions: [GET]\n");
    s.throttle(2);
    let started = std::time::Instant::now();
    let o = run(&s, &[&p], out.path(), Mode::Apply).await.unwrap();
    assert_eq!(s.throttled(), 2);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited X-RateLimit-Reset each time"
    );
    assert_eq!(
        planned(&o),
        [("create".to_owned(), "team/app/writer".to_owned())]
    );
    let key = value(out.path(), "team", "writer", "apiKey");
    assert_eq!(
        s.status(Method::GET, "articles", &key).await,
        StatusCode::OK
    );
    matches_the_vendors_description(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn what_datocms_cannot_hold_is_refused_by_field_before_any_write() {
    let s = DatoCmsStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let w = out.path();
    for (key, field) in [
        ("      defaultPermissions: [GET, PUT]\n", "defaultPermissions[1]: the datocms provider cannot express this: DatoCMS has one update right for PUT and PATCH"),
        ("      defaultPermissions: [GET, GET_ALL_CLOSED]\n", "defaultPermissions[1]: the datocms provider cannot express this: DatoCMS has no closed"),
        ("      apiPermissions:\n        - api: articles\n          permissions: [GET, GET_ALL_DRAFTS]\n        - api: authors\n          permissions: [GET]\n", "apiPermissions[1].permissions[0]: the datocms provider cannot express this: DatoCMS grants drafts to a whole token"),
        ("      defaultPermissions: [GET, POST]\n", "defaultPermissions[0]: the datocms provider cannot express this: a DatoCMS token that writes"),
        ("      apiPermissions:\n        - api: pages\n          permissions: [GET]\n", "apiPermissions[0].api: the datocms provider cannot express this: this DatoCMS project has no model 'pages' (its models: articles, authors, notes)"),
        ("      defaultPermissions: [GET]\n      environments: [prod]\n", "environments[0]: the datocms provider cannot express this: this DatoCMS project has no environment 'prod' (it has: main, staging)"),
        ("      defaultPermissions: [GET]\n      expiresAfter: 30d\n", "expiresAfter"),
        ("      defaultPermissions: [GET]\n      rotationOverlap: 10m\n", "rotationOverlap"),
        ("      kind: management\n      managementPermissions: [keys:write]\n", "kind"),
        ("      defaultPermissions: [GET]\n      scopes: ['cache:purge']\n", "scopes[0]"),
    ] {
        let p = writer(w, key);
        let err = run(&s, &[&p], w, Mode::Apply).await.err().unwrap_or_else(|| panic!("{key}: accepted"));
        let said = err.to_string();
        assert!(said.contains("spec.keys[0].") && said.contains(field), "{key}: {said}");
    }
    // Examples 01, 04, 05 and 06 declare what DatoCMS cannot hold (expiry, overlap,
    // management keys, CORS and public endpoints).
    for ex in [
        "01-read-only-with-contact-form",
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
            said.contains("the datocms provider cannot express this"),
            "{ex}: {said}"
        );
    }
    let cors = manifest(w, "cors.yaml", "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {name: app, namespace: team}\nspec:\n  cors: {origins: ['https://shop.example']}\n  keys: []\n");
    let said = run(&s, &[&cors], w, Mode::Apply)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        said.contains("spec.cors")
            && said.contains("DatoCMS's Content Delivery API answers every origin"),
        "{said}"
    );
    assert!(
        s.exchanges().iter().all(|x| x.method == "GET"),
        "no write: {:?}",
        s.exchanges()
            .iter()
            .map(|x| format!("{} {}", x.method, x.path))
            .collect::<Vec<_>>()
    );
    assert_eq!(s.tokens().len(), 3);
    matches_the_vendors_description(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_plans_and_applies_through_the_binary() {
    let s = DatoCmsStandIn::start().await;
    let out = tempfile::tempdir().unwrap();
    let site = datocms_example(out.path(), &s);
    let site = site.to_str().unwrap();
    let cli = |args: &[&str]| {
        let (code, said) = support::cli_on(&s, out.path(), &[args, &["-f", site]].concat());
        (Some(code), said)
    };
    let (code, plan) = cli(&["plan", "--secrets-dir", "out"]);
    assert_eq!(code, Some(2), "changes pending: {plan}");
    assert!(plan.contains("site/web/editor"), "{plan}");
    let (code, apply) = cli(&["apply", "--secrets-dir", "out"]);
    assert_eq!(code, Some(0), "{apply}");
    assert!(
        apply.starts_with("CmsConnection site/datocms (DatoCMS at "),
        "{apply}"
    );
    let (code, again) = cli(&["plan", "--secrets-dir", "out"]);
    assert_eq!(code, Some(0), "nothing left to do: {again}");
    let (code, explained) = cli(&["explain", "--live", "site/web/editor"]);
    assert_eq!(code, Some(0), "{explained}");
    let editor = value(
        &out.path().join("out"),
        "site",
        "datocms-editor",
        "DATOCMS_API_TOKEN",
    );
    assert_eq!(
        s.status(Method::PUT, "articles", &editor).await,
        StatusCode::OK
    );
    for text in [&plan, &apply, &again, &explained] {
        assert!(
            !text.contains(&editor) && !text.contains("\"token\": \"dato-"),
            "no key value in what the CLI prints"
        );
    }
    matches_the_vendors_description(&s.exchanges());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_manages_datocms_keys() {
    use kube::api::DeleteParams;
    use support::eventually;
    use support::operator_on::OperatorOn;
    let within = std::time::Duration::from_secs(30);

    let s = DatoCmsStandIn::start().await;
    let o = OperatorOn::start(&s, "token").await;
    o.create_policy("web", json!({"name": "reader", "apiPermissions": [{"api": "articles", "permissions": ["GET"]}], "secret": {"name": "reader"}})).await;
    o.create_policy("bad", json!({"name": "k", "defaultPermissions": ["GET"], "rotationOverlap": "5m", "secret": {"name": "bad"}})).await;
    eventually("the reader Secret", within, || async {
        o.secret_value("reader", "apiKey").await.is_some()
    })
    .await;
    let key = o.secret_value("reader", "apiKey").await.unwrap();
    s.expect(&[
        (Method::GET, "articles", &key, StatusCode::OK),
        (Method::GET, "authors", &key, StatusCode::FORBIDDEN),
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
    assert!(msg.contains("spec.keys[0].rotationOverlap"), "{msg}");

    o.policies
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the key is revoked", within, || async {
        s.status(Method::GET, "articles", &key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let left: Vec<String> = s.tokens().into_keys().collect();
    assert_eq!(left, FOREIGN);
    matches_the_vendors_description(&s.exchanges());
}

/// `scripts/live-check.sh datocms`, the check a user runs against their own account, against
/// the stand-in: the throwaway key answers 200, then 401 once removed, and nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_live_check_script_passes_against_the_stand_in() {
    let s = DatoCmsStandIn::start().await;
    let said = support::live_check(
        "datocms",
        vec![
            ("DATOCMS_API_TOKEN", ADMIN.to_owned()),
            ("DATOCMS_CMA_URL", s.url.clone()),
            ("DATOCMS_CDA_URL", format!("{}/graphql", s.url)),
            ("DATOCMS_MODEL", "articles".to_owned()),
        ],
    )
    .await;
    assert!(!said.contains("dato-"), "no value shown: {said}");
    let left: Vec<String> = s.tokens().into_keys().collect();
    assert_eq!(left, FOREIGN, "nothing left behind");
    matches_the_vendors_description(&s.exchanges());
}
