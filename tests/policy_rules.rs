//! The rules a policy keeps that need no CMS, held to one set of fixtures
//! (`tests/fixtures/policy-rules.yaml`) on both sides: the API server's (the CRD's structural
//! schema, its list types and its CEL rules, evaluated with kube-cel as the API server
//! evaluates them) and keyward's offline validator (what `keyward plan` and the operator
//! check). `kubectl apply` refuses what keyward would refuse, and the two cannot drift apart.

mod support;

use keyward::policy::validate::{policy_keys, Severity};
use keyward::policy::ApiKeyPolicy;
use serde::Deserialize;
use serde_json::{json, Value};
use support::kube_schema::Schemas;

#[derive(Deserialize)]
struct Case {
    case: String,
    spec: Value,
    /// Repeat the first key this many times.
    #[serde(default)]
    keys: Option<usize>,
    /// Refused, naming a field under this path.
    #[serde(default)]
    refused: Option<String>,
    /// Why only the offline validator can refuse it.
    #[serde(default)]
    offline_only: Option<String>,
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/policy-rules.yaml"
    );
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn policy(c: &Case) -> Value {
    let mut spec = c.spec.clone();
    if let Some(n) = c.keys {
        let first = spec["keys"][0].clone();
        spec["keys"] = (0..n)
            .map(|i| {
                let mut k = first.clone();
                k["name"] = json!(format!("k{i}"));
                k["secret"]["name"] = json!(format!("k{i}"));
                k
            })
            .collect();
    }
    json!({"apiVersion": "keyward.dev/v1alpha1", "kind": "ApiKeyPolicy",
        "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})
}

/// What the API server (the emulator's admission) says of a create of `obj`: the schema's
/// errors, then, on a structurally valid object, the CEL rules'.
fn api_server(schemas: &Schemas, obj: &Value) -> Vec<String> {
    let mut obj = obj.clone();
    schemas
        .conform("apikeypolicies", &mut obj, false, None)
        .err()
        .unwrap_or_default()
}

/// What the offline validator says: its errors, as `path: message`.
fn offline(obj: &Value) -> Vec<String> {
    let p: ApiKeyPolicy = match serde_json::from_value(obj.clone()) {
        Ok(p) => p,
        Err(e) => return vec![format!("spec: {e}")],
    };
    let now = "2030-01-01T00:00:00Z".parse().unwrap();
    policy_keys(&p, None, now)
        .2
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect()
}

fn names_under(errors: &[String], path: &str) -> bool {
    errors.iter().any(|e| e.starts_with(path))
}

#[test]
fn the_crd_and_the_offline_validator_refuse_the_same_policies() {
    let schemas = Schemas::keyward();
    let mut wrong = Vec::new();
    for c in cases() {
        let obj = policy(&c);
        let (server, ours) = (api_server(&schemas, &obj), offline(&obj));
        let ok = match (&c.refused, &c.offline_only) {
            (None, _) => server.is_empty() && ours.is_empty(),
            (Some(path), None) => names_under(&server, path) && names_under(&ours, path),
            (Some(path), Some(_)) => server.is_empty() && names_under(&ours, path),
        };
        if !ok {
            wrong.push(format!(
                "{}: expected {}\n  API server: {server:?}\n  offline:    {ours:?}",
                c.case,
                c.refused
                    .as_deref()
                    .map_or("accepted".into(), |p| format!("refused at {p}"))
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every CEL rule of every CRD compiles, and walks only lists the schema bounds (the API
/// server costs a rule by its lists' maxItems and refuses a CRD whose rules could cost too
/// much).
#[test]
fn every_cel_rule_compiles_and_walks_bounded_lists() {
    let schemas = Schemas::keyward();
    for plural in ["apikeypolicies", "cmsconnections", "clustercmsconnections"] {
        let compiled = kube_cel::compile_schema(schemas.root(plural));
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{plural}: {errors:?}");
    }
    let mut rules = 0;
    let mut unbounded = Vec::new();
    walk(schemas.root("apikeypolicies"), "", &mut |path, schema| {
        for r in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            rules += 1;
            let _ = r;
        }
        if schema["type"] == "array" && walked_by_rules(path) && schema["maxItems"].is_null() {
            unbounded.push(path.to_owned());
        }
    });
    assert!(rules >= 9, "{rules} rules");
    assert!(
        unbounded.is_empty(),
        "lists a rule walks without maxItems: {unbounded:?}"
    );
}

/// The lists that a CEL rule iterates (`all`, `exists`, `exists_one`).
fn walked_by_rules(path: &str) -> bool {
    [
        ".spec.keys",
        ".spec.keys[].defaultPermissions",
        ".spec.keys[].apiPermissions",
        ".spec.keys[].apiPermissions[].permissions",
        ".spec.keys[].scopes",
    ]
    .contains(&path)
}

fn walk(schema: &Value, path: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(path, schema);
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        walk(child, &format!("{path}.{name}"), f);
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), f);
    }
}
