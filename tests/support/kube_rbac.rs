//! RBAC for the API emulator: the chart's own rules (charts/keyward/files/rbac/), bound to the
//! operator's service account as the chart binds them, and the API server's authorization of a
//! request against them (https://kubernetes.io/docs/reference/access-authn-authz/rbac/).
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The bearer token the operator's clients present: the emulator's name for
/// `system:serviceaccount:keyward-system:keyward`. Requests without it are a cluster admin's
/// (the tests' own setup).
pub const OPERATOR_TOKEN: &str = "keyward-operator";
pub const OPERATOR_USER: &str = "system:serviceaccount:keyward-system:keyward";
/// The release namespace, where the chart binds the leader-election Role.
pub const RELEASE_NAMESPACE: &str = "keyward-system";

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl Rule {
    fn allows(&self, r: &Attributes) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        any(&self.verbs, r.verb)
            && any(&self.api_groups, &r.group)
            && any(&self.resources, &r.resource)
            && (self.resource_names.is_empty()
                || r.name
                    .is_some_and(|n| self.resource_names.iter().any(|x| x == n)))
    }
}

/// What a request asks to do, as the API server's authorizer sees it.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: String,
    /// The resource, with `/subresource` if any.
    pub resource: String,
    /// None: a cluster-scoped resource or a request across all namespaces.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// What the operator's service account is granted: rules that hold everywhere (a ClusterRole
/// bound with a ClusterRoleBinding) and rules per namespace (Roles bound there).
#[derive(Clone, Debug, Default)]
pub struct Grants {
    everywhere: Vec<Rule>,
    per_namespace: HashMap<String, Vec<Rule>>,
}

impl Grants {
    /// The chart's grants: cluster-wide, or with `watch_namespace` (operator.watchNamespace)
    /// a Role in that namespace only; the leader-election Role in the release namespace.
    pub fn chart(watch_namespace: Option<&str>) -> Grants {
        let mut g = Grants::default();
        let mut main = rules_file("rules.yaml");
        match watch_namespace {
            None => {
                main.extend(rules_file("cluster-rules.yaml"));
                g.everywhere = main;
            }
            Some(ns) => {
                g.per_namespace.insert(ns.to_owned(), main);
            }
        }
        g.per_namespace
            .entry(RELEASE_NAMESPACE.to_owned())
            .or_default()
            .extend(rules_file("leader-election-rules.yaml"));
        g
    }

    /// Whether the request is allowed: by a rule that holds everywhere, or by a rule of its
    /// namespace (a Role grants nothing cluster-scoped nor across namespaces).
    pub fn allows(&self, r: &Attributes) -> bool {
        self.everywhere.iter().any(|rule| rule.allows(r))
            || r.namespace
                .and_then(|ns| self.per_namespace.get(ns))
                .is_some_and(|rules| rules.iter().any(|rule| rule.allows(r)))
    }

    /// RBAC's escalation check: a Role may be written only with rules its writer holds in that
    /// namespace (without the `escalate` verb), each verb of each resource of each rule
    /// (https://kubernetes.io/docs/reference/access-authn-authz/rbac/#privilege-escalation-prevention-and-bootstrapping).
    /// The first rule it does not hold, if any.
    pub fn not_held(&self, namespace: &str, rules: &[Rule]) -> Option<String> {
        for rule in rules {
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for verb in &rule.verbs {
                        let names: Vec<Option<&str>> = if rule.resource_names.is_empty() {
                            vec![None]
                        } else {
                            rule.resource_names
                                .iter()
                                .map(|n| Some(n.as_str()))
                                .collect()
                        };
                        for name in names {
                            let wanted = Attributes {
                                verb,
                                group: group.clone(),
                                resource: resource.clone(),
                                namespace: Some(namespace),
                                name,
                            };
                            if !self.allows(&wanted) {
                                return Some(format!(
                                    "{{APIGroups:[{group:?}], Resources:[{resource:?}], Verbs:[{verb:?}]}}"
                                ));
                            }
                        }
                    }
                }
            }
        }
        None
    }
}

/// The rules of one of the chart's files.
fn rules_file(name: &str) -> Vec<Rule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/keyward/files/rbac")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rules of a Role in a request body, if it carries any.
pub fn rules_of(body: &Value) -> Option<Vec<Rule>> {
    serde_json::from_value(body.get("rules")?.clone()).ok()
}
