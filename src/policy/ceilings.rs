//! Ceilings of a shared connection: what a `ClusterCmsConnection` lets the namespaces it admits
//! declare. A tenant that may create policies in its own namespace must not get, through a
//! shared admin credential, a management key, a `*` key, another team's APIs or public write
//! access. Without `spec.allow`, a connection admits content keys only.

use super::types::{Allow, ApiKeyPolicySpec, KeyDecl};
use crate::model::Scope;
use serde::Serialize;

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut left) = name.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().unwrap_or((&"", &[]));
    for part in middle {
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

fn list<T: Serialize>(items: &[T]) -> String {
    let names: Vec<String> = items
        .iter()
        .map(|i| {
            serde_json::to_value(i)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    format!("[{}]", names.join(", "))
}

/// The fields refused so far, as (field path, reason), each naming the connection and the
/// ceiling that refuses it.
struct Refusals<'a> {
    conn: &'a str,
    out: Vec<(String, String)>,
}

impl Refusals<'_> {
    fn no(&mut self, path: String, what: String, ceiling: String) {
        self.out.push((
            path,
            format!(
                "ClusterCmsConnection {} does not allow {what} (spec.allow.{ceiling})",
                self.conn
            ),
        ));
    }
}

/// Every field of `spec` over the ceilings of connection `conn`, as (field path, reason).
/// `keys_in_namespace`: the keys of every policy of the namespace on this connection.
pub fn over_ceilings(
    allow: &Allow,
    conn: &str,
    spec: &ApiKeyPolicySpec,
    keys_in_namespace: usize,
) -> Vec<(String, String)> {
    let mut r = Refusals {
        conn,
        out: Vec::new(),
    };
    for (i, k) in spec.keys.iter().enumerate() {
        let at = |f: &str| format!("spec.keys[{i}].{f}");
        key_rights_over(allow, k, &at, &mut r);
        if let Some(apis) = &allow.apis {
            key_reach_over(apis, k, &at, &mut r);
        }
        if let Some(envs) = &allow.environments {
            key_environments_over(envs, k, &at, &mut r);
        }
    }
    settings_over(allow, spec, &mut r);
    if let Some(max) = allow.max_keys_per_namespace {
        if keys_in_namespace > max as usize {
            r.no(
                "spec.keys".into(),
                format!("{keys_in_namespace} keys in this namespace"),
                format!("maxKeysPerNamespace: {max}"),
            );
        }
    }
    r.out
}

/// A key's kind, type, scopes, management permissions and owner against their ceilings.
fn key_rights_over(allow: &Allow, k: &KeyDecl, at: &dyn Fn(&str) -> String, r: &mut Refusals) {
    if !allow.kinds.contains(&k.kind) {
        r.no(
            at("kind"),
            format!("{} keys", k.kind.as_str()),
            format!("kinds: {}", list(&allow.kinds)),
        );
    }
    if !allow.types.contains(&k.key_type) {
        r.no(
            at("type"),
            format!("{} keys", k.key_type.as_str()),
            format!("types: {}", list(&allow.types)),
        );
    }
    for (j, s) in k.scopes.iter().enumerate() {
        let allowed = match &allow.scopes {
            Some(scopes) => scopes.contains(s),
            None => *s != Scope::All,
        };
        if !allowed {
            let ceiling = match &allow.scopes {
                Some(scopes) => format!("scopes: {}", list(scopes)),
                None => "scopes: every scope but '*' unless listed".into(),
            };
            r.no(
                at(&format!("scopes[{j}]")),
                format!("scope '{}'", s.as_str()),
                ceiling,
            );
        }
    }
    for (j, m) in k.management_permissions.iter().enumerate() {
        if !allow.management_permissions.contains(m) {
            r.no(
                at(&format!("managementPermissions[{j}]")),
                format!("management permission '{}'", m.as_str()),
                format!(
                    "managementPermissions: {}",
                    list(&allow.management_permissions)
                ),
            );
        }
    }
    if let Some(owner) = &k.owner {
        if !allow.owners.iter().any(|p| glob_match(p, owner)) {
            r.no(
                at("owner"),
                format!("a personal key of member '{owner}' (it would hold that member's role)"),
                format!("owners: [{}]", allow.owners.join(", ")),
            );
        }
    }
}

/// Under `allow.apis`: a key's rights that reach every API, and the APIs it names.
fn key_reach_over(apis: &[String], k: &KeyDecl, at: &dyn Fn(&str) -> String, r: &mut Refusals) {
    let ceiling = format!("apis: [{}]", apis.join(", "));
    if !k.default_permissions.is_empty() {
        r.no(
            at("defaultPermissions"),
            "rights on every API; name the APIs in apiPermissions".into(),
            ceiling.clone(),
        );
    }
    // Every scope acts on every API: the content scopes grant rights there, export exports
    // them all, purges and replays reach them all.
    for (j, s) in k.scopes.iter().enumerate() {
        r.no(
            at(&format!("scopes[{j}]")),
            format!(
                "scope '{}', which reaches every API; name the APIs in apiPermissions",
                s.as_str()
            ),
            ceiling.clone(),
        );
    }
    for (j, m) in k.management_permissions.iter().enumerate() {
        if m.reaches_every_api() {
            r.no(
                at(&format!("managementPermissions[{j}]")),
                format!(
                    "management permission '{}', which reaches every API",
                    m.as_str()
                ),
                ceiling.clone(),
            );
        }
    }
    for (j, a) in k.api_permissions.iter().enumerate() {
        if !apis.iter().any(|p| glob_match(p, &a.api)) {
            r.no(
                at(&format!("apiPermissions[{j}].api")),
                format!("API '{}'", a.api),
                ceiling.clone(),
            );
        }
    }
}

/// Under `allow.environments`: a key must list its environments, each of them allowed.
fn key_environments_over(
    envs: &[String],
    k: &KeyDecl,
    at: &dyn Fn(&str) -> String,
    r: &mut Refusals,
) {
    let ceiling = format!("environments: [{}]", envs.join(", "));
    if k.environments.is_empty() {
        r.no(
            at("environments"),
            "a key for every environment; list its environments".into(),
            ceiling.clone(),
        );
    }
    for (j, e) in k.environments.iter().enumerate() {
        if !envs.contains(e) {
            r.no(
                at(&format!("environments[{j}]")),
                format!("environment '{e}'"),
                ceiling.clone(),
            );
        }
    }
}

/// The policy's CORS origins and public endpoints against their ceilings.
fn settings_over(allow: &Allow, spec: &ApiKeyPolicySpec, r: &mut Refusals) {
    if spec.cors.as_ref().is_some_and(|c| !c.origins.is_empty()) && !allow.cors {
        r.no(
            "spec.cors".into(),
            "CORS origins".into(),
            "cors: false".into(),
        );
    }
    if !spec.public_endpoints.is_empty() && !allow.public_endpoints {
        r.no(
            "spec.publicEndpoints".into(),
            "public endpoints".into(),
            "publicEndpoints: false".into(),
        );
    }
    if !allow.public_endpoints {
        return;
    }
    for (i, pe) in spec.public_endpoints.iter().enumerate() {
        let at = format!("spec.publicEndpoints[{i}]");
        if let Some(apis) = &allow.apis {
            if !apis.iter().any(|p| glob_match(p, &pe.api)) {
                r.no(
                    format!("{at}.api"),
                    format!("API '{}'", pe.api),
                    format!("apis: [{}]", apis.join(", ")),
                );
            }
        }
        if let Some(envs) = &allow.environments {
            r.no(
                at,
                "public endpoints, which answer in every environment".into(),
                format!("environments: [{}]", envs.join(", ")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyKind;

    #[test]
    fn globs() {
        assert!(glob_match("shop-*", "shop-orders"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("blog", "blog"));
        assert!(!glob_match("blog", "blogs"));
        assert!(!glob_match("shop-*", "orders"));
        assert!(!glob_match("a*b", "ab-"));
        assert!(!glob_match("*-x", "x"));
        // A middle part is consumed before the rest is matched: "xb" holds one "b", not two.
        assert!(!glob_match("*b*b", "xb"));
        assert!(glob_match("*b*b", "xbb"));
    }

    #[test]
    fn without_allow_both_key_types_but_only_content_keys() {
        let allow = Allow::default();
        let public = spec("    - name: k\n      type: public\n      defaultPermissions: [GET]\n      secret: {name: s}\n");
        assert!(over_ceilings(&allow, "c", &public, 1).is_empty());
        let service = spec("    - name: k\n      type: service\n      defaultPermissions: [GET]\n      secret: {name: s}\n");
        assert!(over_ceilings(&allow, "c", &service, 1).is_empty());
        assert_eq!(allow.kinds, [KeyKind::Content]);
    }

    fn paths(over: Vec<(String, String)>) -> Vec<String> {
        over.into_iter().map(|(p, _)| p).collect()
    }

    fn spec(keys: &str) -> ApiKeyPolicySpec {
        serde_yaml_ng::from_str(&format!("keys:\n{keys}")).unwrap()
    }

    #[test]
    fn without_allow_only_content_keys_without_star_and_no_settings() {
        let a = Allow::default();
        let s = spec("  - {name: m, kind: management, managementPermissions: [keys:manage], secret: {name: m}}\n  - {name: s, scopes: ['*'], secret: {name: s}}\n  - {name: ok, defaultPermissions: [GET], scopes: [content:read], secret: {name: ok}}\n");
        let got = paths(over_ceilings(&a, "shared", &s, 3));
        assert_eq!(
            got,
            [
                "spec.keys[0].kind",
                "spec.keys[0].managementPermissions[0]",
                "spec.keys[1].scopes[0]"
            ]
        );
        let mut s = spec("  - {name: ok, defaultPermissions: [GET], secret: {name: ok}}\n");
        s.public_endpoints =
            serde_yaml_ng::from_str("[{api: orders, operations: [create]}]").unwrap();
        s.cors = serde_yaml_ng::from_str("{origins: ['https://a.example']}").unwrap();
        let got = over_ceilings(&a, "shared", &s, 1);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0].1,
            "ClusterCmsConnection shared does not allow CORS origins (spec.allow.cors: false)"
        );
    }

    #[test]
    fn apis_environments_and_a_key_count() {
        let a: Allow = serde_yaml_ng::from_str(
            "{apis: ['shop-*'], environments: [staging], maxKeysPerNamespace: 2}",
        )
        .unwrap();
        let s = spec("  - {name: a, defaultPermissions: [GET], apiPermissions: [{api: shop-orders, permissions: [GET]}, {api: billing, permissions: [GET]}], environments: [staging, production], secret: {name: a}}\n  - {name: b, apiPermissions: [{api: shop-cart, permissions: [GET]}], secret: {name: b}}\n");
        let got = paths(over_ceilings(&a, "shared", &s, 3));
        assert_eq!(
            got,
            [
                "spec.keys[0].defaultPermissions",
                "spec.keys[0].apiPermissions[1].api",
                "spec.keys[0].environments[1]",
                "spec.keys[1].environments",
                "spec.keys",
            ]
        );
        // The count is a ceiling: exactly as many keys is allowed.
        let at_max = paths(over_ceilings(&a, "shared", &s, 2));
        assert!(!at_max.contains(&"spec.keys".to_owned()), "{at_max:?}");
    }

    #[test]
    fn each_refusal_names_the_ceiling_as_the_connection_states_it() {
        let a = Allow::default();
        let s = spec("  - {name: m, kind: management, managementPermissions: [keys:manage], secret: {name: m}}\n");
        let got = over_ceilings(&a, "shared", &s, 1);
        assert_eq!(
            got[0].1,
            "ClusterCmsConnection shared does not allow management keys (spec.allow.kinds: [content])"
        );
        assert_eq!(
            got[1].1,
            "ClusterCmsConnection shared does not allow management permission 'keys:manage' (spec.allow.managementPermissions: [])"
        );
    }

    /// Every right a policy can cause in the CMS is inside the ceilings: public endpoints on
    /// APIs outside `apis` (or at all under `environments`, where they answer everywhere),
    /// scopes and management permissions that reach every API, and personal keys of members
    /// the platform did not list. Before, each of these passed an `apis` ceiling.
    #[test]
    fn rights_that_reach_past_the_ceilings_are_refused() {
        let a: Allow = serde_yaml_ng::from_str(
            "{apis: ['shop-*'], kinds: [content, management, personal], publicEndpoints: true, \
              managementPermissions: [content:read, keys:manage, settings:manage], \
              scopes: [export:write, cache:purge, content:read], owners: ['shop-*']}",
        )
        .unwrap();
        let mut s = spec(
            "  - {name: e, apiPermissions: [{api: shop-a, permissions: [GET]}], scopes: [export:write, cache:purge], secret: {name: e}}
  - {name: m, kind: management, managementPermissions: [content:read, keys:manage, settings:manage], secret: {name: m}}
  - {name: p, kind: personal, owner: admin, secret: {name: p}}
  - {name: q, kind: personal, owner: shop-bot, secret: {name: q}}
",
        );
        s.public_endpoints = serde_yaml_ng::from_str(
            "[{api: billing, operations: [delete]}, {api: shop-a, operations: [list]}]",
        )
        .unwrap();
        let got = over_ceilings(&a, "shared", &s, 4);
        assert_eq!(
            paths(got.clone()),
            [
                "spec.keys[0].scopes[0]",
                "spec.keys[0].scopes[1]",
                "spec.keys[1].managementPermissions[0]",
                "spec.keys[1].managementPermissions[2]",
                "spec.keys[2].owner",
                "spec.publicEndpoints[0].api",
            ]
        );
        assert!(
            got[2].1.contains("'content:read', which reaches every API"),
            "{got:?}"
        );
        assert!(got[4].1.contains("member 'admin'"), "{got:?}");
        // Under an environments ceiling public endpoints answer outside it: refused.
        let a: Allow =
            serde_yaml_ng::from_str("{environments: [staging], publicEndpoints: true}").unwrap();
        let mut s = spec("  - {name: r, environments: [staging], defaultPermissions: [GET], secret: {name: r}}\n");
        s.public_endpoints =
            serde_yaml_ng::from_str("[{api: shop-a, operations: [list]}]").unwrap();
        assert_eq!(
            paths(over_ceilings(&a, "shared", &s, 1)),
            ["spec.publicEndpoints[0]"]
        );
    }
}
