//! keyward's key model <-> Strapi API tokens, without I/O.
//!
//! - An API is a path segment under `/api` (`articles` for `GET /api/articles`), found in Strapi's
//!   route listing; its CRUD actions come from the route handlers (`api::article.article.find`).
//! - GET -> find + findOne, POST -> create, PUT and PATCH -> update, DELETE -> delete. Strapi has
//!   one update action, so PUT and PATCH are one right there: a key holding either holds both.
//! - A key whose actions are exactly every read action (every action) becomes a `read-only`
//!   (`full-access`) token, anything else `custom`.
//! - Strapi tokens have no labels: keyward's ownership tag is the last line of the description.
//! - Everything Strapi cannot express is refused with the field and the reason, never dropped.
//!
//! The canonical form of a spec is `decode(encode(spec))`: what Strapi will report back. Plans
//! compare canonical desired specs with decoded live tokens, so like is compared with like.

use super::capabilities::{description_fits, CAPABILITIES, LIFESPAN_DAYS};
use super::catalog::{action_name, api_list, Catalog};
use super::tag::{compose_description, parse_description};
use crate::model::{normalize, ApiPermission, ContentPermission, KeyKind, KeySpec};
use crate::providers::{unknown_api, LiveKey, ProviderError};
use jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeSet;

pub const PROVIDER: &str = "strapi";
const DAY_MS: i64 = 86_400_000;
/// Marks a live token that holds rights keyward cannot express, so the plan shows it as drift.
pub const LABEL_UNEXPRESSED: &str = "strapi.keyward.dev/unexpressed";

/// A refusal of this provider's.
pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> ProviderError {
    ProviderError::unsupported(PROVIDER, field, reason)
}

/// The lifespan for a key that should expire at `expires_at` (unlimited: `None`).
pub fn lifespan_ms(
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<Option<i64>, ProviderError> {
    let Some(at) = expires_at else {
        return Ok(None);
    };
    let left = at.duration_since(now);
    LIFESPAN_DAYS
        .iter()
        .find(|d| (left - crate::model::days(**d)).as_secs().abs() <= 3600)
        .map(|d| Some(d * DAY_MS))
        .ok_or_else(|| {
            unsupported(
                "expiresAfter",
                format!(
                    "Strapi token lifespans are 7, 30 or 90 days or unlimited, not {}",
                    crate::model::human(left)
                ),
            )
        })
}

/// The Strapi token fields for a spec: type, permissions and description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFields {
    pub token_type: &'static str,
    pub permissions: Vec<String>,
    pub description: String,
}

/// Translates a spec into token fields, or says which field Strapi cannot hold.
pub fn encode(spec: &KeySpec, catalog: &Catalog) -> Result<TokenFields, ProviderError> {
    if let Some((field, reason)) = CAPABILITIES.key_refusals(spec).into_iter().next() {
        return Err(unsupported(field, reason));
    }
    if let Some((field, api)) = unknown_api(spec, |a| catalog.apis.contains_key(a)) {
        let reason = format!(
            "this Strapi has no API '{api}' (its APIs: {})",
            api_list(catalog)
        );
        return Err(unsupported(field, reason));
    }
    // The validator checks it too; a provider called without it must not cut the tag off.
    if let Some(reason) = description_fits(spec) {
        return Err(unsupported("description", reason));
    }
    let description = compose_description(spec);
    every_right_grants_something(spec, catalog)?;
    let scoped = spec.scope_grants();
    let mut actions = BTreeSet::new();
    for (api, classes) in &catalog.apis {
        let granted: BTreeSet<ContentPermission> = spec
            .permissions_for(api)
            .iter()
            .copied()
            .chain(scoped.iter().copied())
            .collect();
        for (perms, set) in classes.classes() {
            if perms.iter().any(|p| granted.contains(p)) {
                actions.extend(set.iter().cloned());
            }
        }
    }
    let (token_type, permissions) = if !actions.is_empty() && actions == catalog.actions {
        ("full-access", Vec::new())
    } else if !actions.is_empty() && actions == catalog.read_actions() {
        ("read-only", Vec::new())
    } else {
        ("custom", actions.into_iter().collect())
    };
    Ok(TokenFields {
        token_type,
        permissions,
        description,
    })
}

/// Each declared right grants some action of this Strapi: one that grants nothing here is
/// refused, not dropped.
fn every_right_grants_something(spec: &KeySpec, catalog: &Catalog) -> Result<(), ProviderError> {
    let no_action = |p: ContentPermission| {
        format!(
            "no API of this Strapi has a {} action (its APIs: {}); a custom REST prefix or only single types?",
            action_name(p),
            api_list(catalog)
        )
    };
    for (j, p) in spec.default_permissions.iter().enumerate() {
        if !catalog.apis.values().any(|a| !a.of(*p).is_empty()) {
            return Err(unsupported(
                format!("defaultPermissions[{j}]"),
                no_action(*p),
            ));
        }
    }
    for (j, s) in spec.scopes.iter().enumerate() {
        let grants = s.content_grants();
        let any = ContentPermission::ALL
            .into_iter()
            .filter(|p| grants.contains(*p))
            .any(|p| catalog.apis.values().any(|a| !a.of(p).is_empty()));
        if !any {
            return Err(unsupported(
                format!("scopes[{j}]"),
                format!(
                    "no API of this Strapi has an action it grants (its APIs: {})",
                    api_list(catalog)
                ),
            ));
        }
    }
    for (i, a) in spec.api_permissions.iter().enumerate() {
        let classes = &catalog.apis[&a.api];
        for (j, p) in a.permissions.iter().enumerate() {
            if classes.of(*p).is_empty() {
                return Err(unsupported(
                    format!("apiPermissions[{i}].permissions[{j}]"),
                    format!(
                        "this Strapi's API '{}' has no {} action",
                        a.api,
                        action_name(*p)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The actions a token can call, by its type.
fn effective_actions(
    token_type: &str,
    permissions: &[String],
    catalog: &Catalog,
) -> BTreeSet<String> {
    match token_type {
        "full-access" => catalog.actions.clone(),
        "read-only" => catalog.read_actions(),
        _ => permissions.iter().cloned().collect(),
    }
}

/// Rights as keyward states them: (default permissions, per-API permissions, what is left over).
fn rights_of(
    actions: &BTreeSet<String>,
    catalog: &Catalog,
) -> (Vec<ContentPermission>, Vec<ApiPermission>, Vec<String>) {
    let mut notes = Vec::new();
    let mut covered = BTreeSet::new();
    let mut per_api: Vec<(String, Vec<ContentPermission>)> = Vec::new();
    for (api, classes) in &catalog.apis {
        let mut perms = Vec::new();
        for (ps, set) in classes.classes() {
            covered.extend(set.iter().cloned());
            let held = set.iter().filter(|a| actions.contains(*a)).count();
            if held > 0 && held == set.len() {
                perms.extend_from_slice(ps);
            } else if held > 0 {
                notes.push(format!("{api}: only part of {}", ps[0]));
            }
        }
        perms.sort();
        per_api.push((api.clone(), perms));
    }
    for a in actions
        .iter()
        .filter(|a| catalog.actions.contains(*a) && !covered.contains(*a))
    {
        notes.push(a.clone());
    }
    let first = per_api.first().map(|(_, p)| p.clone()).unwrap_or_default();
    if per_api.iter().all(|(_, p)| *p == first) {
        return (first, Vec::new(), notes);
    }
    let apis = per_api
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(api, permissions)| ApiPermission { api, permissions })
        .collect();
    (Vec::new(), apis, notes)
}

/// The spec as Strapi will report it back, or why Strapi cannot hold it.
pub fn canonical(spec: &KeySpec, catalog: &Catalog) -> Result<KeySpec, ProviderError> {
    let fields = encode(spec, catalog)?;
    let actions = effective_actions(fields.token_type, &fields.permissions, catalog);
    let (default_permissions, api_permissions, notes) = rights_of(&actions, catalog);
    if !notes.is_empty() {
        // Strapi would report these rights back differently: a plan would never settle.
        let field = if spec.api_permissions.is_empty() {
            "defaultPermissions"
        } else {
            "apiPermissions"
        };
        return Err(unsupported(
            field,
            format!(
                "on this Strapi one action serves several APIs, so these rights cannot be granted apart ({})",
                notes.join(", ")
            ),
        ));
    }
    Ok(spec.held_as_rights(default_permissions, api_permissions))
}

fn timestamp(v: &Value, field: &str) -> Option<Timestamp> {
    v.get(field)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok())
}

/// A token record from the admin API as a live key. Its value (`accessKey`) is never read here.
pub fn decode(token: &Value, catalog: &Catalog) -> Result<LiveKey, String> {
    let id = match token.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => return Err("a token record has no id".into()),
    };
    let name = token
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("token {id} has no name"))?;
    let created_at =
        timestamp(token, "createdAt").ok_or_else(|| format!("token {id} has no createdAt"))?;
    let token_type = token
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("read-only");
    let permissions: Vec<String> = token
        .get("permissions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| match p {
            Value::String(s) => Some(s.clone()),
            // Older answers list permission objects.
            other => other
                .get("action")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
        .collect();
    let (description, mut labels, key_type) = parse_description(
        token
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let actions = effective_actions(token_type, &permissions, catalog);
    let (default_permissions, api_permissions, notes) = rights_of(&actions, catalog);
    crate::providers::mark_unexpressed(&mut labels, LABEL_UNEXPRESSED, &notes);
    Ok(LiveKey {
        id,
        spec: normalize(KeySpec {
            name: name.to_owned(),
            description,
            kind: KeyKind::Content,
            key_type,
            default_permissions,
            api_permissions,
            expires_at: timestamp(token, "expiresAt"),
            labels,
            ..KeySpec::default()
        }),
        created_at,
        // Strapi records no regeneration (its updatedAt moves on every edit): the value's
        // generation is the token's creation.
        rotated_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::capabilities::DESCRIPTION_MAX;
    use super::super::tag::parse_description;
    use super::*;
    use crate::model::desired::LABEL_POLICY_UID;
    use crate::model::KeyType;
    use crate::providers::testkit::{per_api, reads_back_as_canonical, refused};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn listings(with_plugin: bool) -> Catalog {
        let mut perms = json!({"data": {
            "api::article": {"controllers": {"article": ["find", "findOne", "create", "update", "delete", "like"]}},
            "api::author": {"controllers": {"author": ["find", "findOne", "create", "update", "delete"]}},
            "api::homepage": {"controllers": {"homepage": ["find", "update", "delete"]}},
        }});
        if with_plugin {
            perms["data"]["plugin::upload"] =
                json!({"controllers": {"content-api": ["find", "findOne", "upload"]}});
        }
        let route = |m: &str, p: &str, h: &str| json!({"method": m, "path": p, "handler": h});
        // The five routes Strapi makes for a collection type.
        let collection = |name: &str, plural: &str| {
            let handler = |action: &str| format!("api::{name}.{name}.{action}");
            let (all, one) = (format!("/api/{plural}"), format!("/api/{plural}/:id"));
            vec![
                route("GET", &all, &handler("find")),
                route("GET", &one, &handler("findOne")),
                route("POST", &all, &handler("create")),
                route("PUT", &one, &handler("update")),
                route("DELETE", &one, &handler("delete")),
            ]
        };
        let mut articles = collection("article", "articles");
        articles.push(route(
            "POST",
            "/api/articles/:id/like",
            "api::article.article.like",
        ));
        let routes = json!({"data": {
            "api::article": articles,
            "api::author": collection("author", "authors"),
            "api::homepage": [
                route("GET", "/api/homepage", "api::homepage.homepage.find"),
                route("PUT", "/api/homepage", "api::homepage.homepage.update"),
                route("DELETE", "/api/homepage", "api::homepage.homepage.delete"),
            ],
            "plugin::upload": [route("GET", "/api/upload/files", "plugin::upload.content-api.find")],
        }});
        Catalog::from_listings(&perms, &routes).expect("catalog")
    }

    fn spec(yaml: &str) -> KeySpec {
        crate::providers::testkit::spec(yaml, "shop/site")
    }

    fn token(fields: &TokenFields, name: &str) -> Value {
        json!({"id": 7, "name": name, "description": fields.description, "type": fields.token_type,
               "permissions": fields.permissions, "lifespan": "604800000",
               "expiresAt": "2026-12-01T00:00:00.000Z", "createdAt": "2026-11-24T00:00:00.000Z",
               "updatedAt": "2026-11-24T00:00:00.000Z"})
    }

    #[test]
    fn apis_are_path_segments_with_their_crud_actions() {
        let c = listings(true);
        assert_eq!(
            c.apis.keys().collect::<Vec<_>>(),
            ["articles", "authors", "homepage"]
        );
        let a = &c.apis["articles"];
        assert_eq!(a.read.len(), 2);
        assert!(a.update.contains("api::article.article.update"));
        assert!(!c.apis.contains_key("upload"), "plugins are not APIs");
        assert!(c.actions.contains("api::article.article.like"));
    }

    #[test]
    fn methods_map_to_actions_and_types_only_when_exact() {
        let c = listings(true);
        let f = encode(&spec("name: n\ndefaultPermissions: [GET]"), &c).unwrap();
        assert_eq!(
            f.token_type, "custom",
            "upload's reads make read-only broader"
        );
        assert_eq!(
            f.permissions,
            [
                "api::article.article.find",
                "api::article.article.findOne",
                "api::author.author.find",
                "api::author.author.findOne",
                "api::homepage.homepage.find"
            ]
        );
        let f = encode(
            &spec("name: n\napiPermissions: [{api: articles, permissions: [PATCH, POST]}]"),
            &c,
        )
        .unwrap();
        assert_eq!(
            f.permissions,
            ["api::article.article.create", "api::article.article.update"]
        );

        let plain = listings(false);
        let f = encode(&spec("name: n\ndefaultPermissions: [GET]"), &plain).unwrap();
        assert_eq!((f.token_type, f.permissions.len()), ("read-only", 0));
        // Every CRUD action is not every action while the custom `like` exists.
        let f = encode(
            &spec("name: n\nscopes: ['content:read', 'content:write']"),
            &plain,
        )
        .unwrap();
        assert_eq!(f.token_type, "custom");
    }

    #[test]
    fn canonical_equals_what_strapi_reports_back() {
        let c = listings(true);
        reads_back_as_canonical(
            LABEL_UNEXPRESSED,
            &[
                "name: n\ndefaultPermissions: [GET]",
                "name: n\ndefaultPermissions: [GET]\napiPermissions: [{api: authors, permissions: []}]",
                "name: n\nscopes: ['content:read']\napiPermissions: [{api: articles, permissions: [PUT]}]",
                "name: n\ntype: public\ndescription: '  for browsers  '\napiPermissions: [{api: articles, permissions: [GET]}]",
            ],
            spec,
            |s| canonical(s, &c).unwrap(),
            // Strapi reports an expiry of its own; the mapping is about rights.
            |s| KeySpec {
                expires_at: None,
                ..decode(&token(&encode(s, &c).unwrap(), "n"), &c).unwrap().spec
            },
        );
        // Per-API permissions replace the defaults; PUT alone is PUT and PATCH in Strapi.
        let s = canonical(
            &spec("name: n\ndefaultPermissions: [GET]\napiPermissions: [{api: articles, permissions: [PUT]}]"),
            &c,
        )
        .unwrap();
        assert_eq!(s.default_permissions, []);
        use ContentPermission::*;
        assert_eq!(
            per_api(&s),
            [
                ("articles", vec![Put, Patch]),
                ("authors", vec![Get]),
                ("homepage", vec![Get])
            ]
        );
    }

    #[test]
    fn rights_keyward_cannot_express_show_as_drift() {
        let c = listings(true);
        for (ty, perms) in [
            ("custom", json!(["api::article.article.find"])),
            (
                "custom",
                json!([
                    "api::article.article.find",
                    "api::article.article.findOne",
                    "api::article.article.like"
                ]),
            ),
            ("read-only", json!([])),
            ("full-access", json!([])),
        ] {
            let t = json!({"id": 1, "name": "n", "description": "[keyward policy=shop/site key=reader]",
                           "type": ty, "permissions": perms, "createdAt": "2026-11-24T00:00:00Z"});
            let live = decode(&t, &c).unwrap();
            assert!(
                live.spec.labels.contains_key(LABEL_UNEXPRESSED),
                "{ty} {perms}"
            );
        }
    }

    #[test]
    fn ownership_tag_round_trips_and_foreign_tokens_have_no_labels() {
        let mut s = spec("name: n\ndescription: the site\ntype: public");
        s.labels
            .insert(LABEL_POLICY_UID.into(), "0d5c6f1e-uid".into());
        let d = compose_description(&s);
        assert_eq!(
            d,
            "the site\n\n[keyward policy=shop/site key=reader uid=0d5c6f1e-uid type=public]"
        );
        let (own, labels, ty) = parse_description(&d);
        assert_eq!(
            (own.as_str(), &labels, ty),
            ("the site", &s.labels, KeyType::Public)
        );
        let (own, labels, _) = parse_description("A default API token with read-only permissions");
        assert!(labels.is_empty());
        assert_eq!(own, "A default API token with read-only permissions");
    }

    #[test]
    fn what_strapi_cannot_hold_is_refused_with_its_field() {
        let c = listings(true);
        let field = |y: &str| refused(PROVIDER, y, encode(&spec(y), &c));
        crate::providers::testkit::refuses_scopes_and_environments(field);
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET, GET_ALL_DRAFTS]"),
            "defaultPermissions[1]"
        );
        assert_eq!(
            field("name: n\nkind: management\nmanagementPermissions: ['content:read']"),
            "kind"
        );
        assert_eq!(
            field("name: n\napiPermissions: [{api: nope, permissions: [GET]}]"),
            "apiPermissions[0].api"
        );
        assert_eq!(
            field(&format!("name: n\ndescription: '{}'", "x".repeat(240))),
            "description"
        );
    }

    #[test]
    fn rights_that_would_grant_nothing_or_never_settle_are_refused() {
        let c = listings(true);
        let field = |y: &str, c: &Catalog| refused(PROVIDER, y, canonical(&spec(y), c));
        // A single type has no create action.
        assert_eq!(
            field(
                "name: n\napiPermissions: [{api: homepage, permissions: [GET, POST]}]",
                &c
            ),
            "apiPermissions[0].permissions[1]"
        );
        // No APIs found under /api (a custom REST prefix): GET would grant nothing.
        let empty = Catalog {
            actions: c.actions.clone(),
            apis: BTreeMap::new(),
        };
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET]", &empty),
            "defaultPermissions[0]"
        );
        assert_eq!(
            field("name: n\nscopes: ['content:read']", &empty),
            "scopes[0]"
        );
        // One handler under two APIs' paths: granting one API's reads grants part of the other's.
        let mut shared = c.clone();
        shared
            .apis
            .get_mut("articles")
            .unwrap()
            .read
            .insert("api::author.author.find".into());
        assert_eq!(
            field(
                "name: n\napiPermissions: [{api: authors, permissions: [GET]}]",
                &shared
            ),
            "apiPermissions"
        );
    }

    #[test]
    fn lifespans_are_seven_thirty_ninety_days_or_unlimited() {
        let now = Timestamp::now();
        assert_eq!(lifespan_ms(None, now).unwrap(), None);
        assert_eq!(
            lifespan_ms(
                Some(now + crate::model::days(30) - jiff::SignedDuration::from_millis(20)),
                now
            )
            .unwrap(),
            Some(2_592_000_000)
        );
        assert!(matches!(
            lifespan_ms(Some(now + crate::model::days(365)), now),
            Err(ProviderError::Unsupported { ref field, .. }) if field == "expiresAfter"
        ));
    }

    #[test]
    fn a_description_fits_up_to_strapis_length_with_the_tag() {
        let c = listings(false);
        let tag = compose_description(&spec("name: n")).chars().count();
        // "own\n\n[keyward ...]": the description, a blank line, the tag.
        let fill = |n: usize| spec(&format!("name: n\ndescription: '{}'", "x".repeat(n)));
        let longest = DESCRIPTION_MAX - tag - 2;
        assert_eq!(
            compose_description(&fill(longest)).chars().count(),
            DESCRIPTION_MAX
        );
        assert_eq!(description_fits(&fill(longest)), None);
        assert!(encode(&fill(longest), &c).is_ok());
        let over = description_fits(&fill(longest + 1)).expect("one too many");
        assert!(
            over.contains(&format!("needs {}", DESCRIPTION_MAX + 1)),
            "{over}"
        );
        assert_eq!(
            refused(PROVIDER, "one too many", encode(&fill(longest + 1), &c)),
            "description"
        );
    }

    #[test]
    fn refusals_name_the_missing_action_and_the_apis_there_are() {
        let c = listings(false);
        let reason = |y: &str, c: &Catalog| match encode(&spec(y), c) {
            Err(ProviderError::Unsupported { reason, .. }) => reason,
            other => panic!("{y}: {other:?}"),
        };
        let homepage = |p: &str| {
            reason(
                &format!("name: n\napiPermissions: [{{api: homepage, permissions: [{p}]}}]"),
                &c,
            )
        };
        assert!(
            homepage("POST").ends_with("has no create action"),
            "{}",
            homepage("POST")
        );
        let mut no_update = c.clone();
        for a in no_update.apis.values_mut() {
            a.update.clear();
            a.delete.clear();
        }
        let on = |p: &str| {
            reason(
                &format!("name: n\napiPermissions: [{{api: authors, permissions: [{p}]}}]"),
                &no_update,
            )
        };
        assert!(
            on("PATCH").ends_with("has no update action"),
            "{}",
            on("PATCH")
        );
        assert!(
            on("DELETE").ends_with("has no delete action"),
            "{}",
            on("DELETE")
        );
        let unknown = reason(
            "name: n\napiPermissions: [{api: nope, permissions: [GET]}]",
            &c,
        );
        assert!(
            unknown.contains("(its APIs: articles, authors, homepage)"),
            "{unknown}"
        );
        let empty = Catalog::default();
        let none = reason("name: n\ndefaultPermissions: [GET]", &empty);
        assert!(
            none.contains(
                "no API of this Strapi has a find/findOne action (its APIs: none under /api)"
            ),
            "{none}"
        );
    }

    #[test]
    fn each_method_grants_the_actions_of_its_class() {
        use ContentPermission::*;
        let c = listings(false);
        let a = &c.apis["articles"];
        for (p, want) in [
            (Get, &a.read),
            (GetAllDrafts, &a.read),
            (Post, &a.create),
            (Put, &a.update),
            (Patch, &a.update),
            (Delete, &a.delete),
        ] {
            assert_eq!(a.of(p), want, "{p:?}");
            assert!(!want.is_empty(), "{p:?}");
        }
        assert_eq!(
            a.delete,
            BTreeSet::from(["api::article.article.delete".to_owned()])
        );
    }

    #[test]
    fn a_route_counts_for_its_own_api_and_for_actions_a_token_can_hold() {
        let perms = json!({"data": {
            "api::article": {"controllers": {"article": ["find"]}},
            "api::author": {"controllers": {"author": ["find"]}},
        }});
        let route = |p: &str, h: &str| json!({"method": "GET", "path": p, "handler": h});
        let routes = json!({"data": {
            "api::article": [
                route("/api/articles", "api::article.article.find"),
                // Another API's handler under this API's routes.
                route("/api/articles/by-author", "api::author.author.find"),
                // A handler no token can hold.
                route("/api/articles/:id/secret", "api::article.article.secret"),
            ],
        }});
        let c = Catalog::from_listings(&perms, &routes).unwrap();
        assert_eq!(
            c.apis["articles"].read,
            BTreeSet::from(["api::article.article.find".to_owned()])
        );
        assert!(!c.apis.contains_key("authors"), "no route of its own");
    }

    #[test]
    fn every_action_is_a_full_access_token_and_no_action_a_custom_one() {
        let mut crud = listings(false);
        crud.actions.remove("api::article.article.like");
        let f = encode(
            &spec("name: n\nscopes: ['content:read', 'content:write']"),
            &crud,
        )
        .unwrap();
        assert_eq!((f.token_type, f.permissions.len()), ("full-access", 0));
        // Rights on nothing: a custom token with no action, never full access or read-only.
        let none = Catalog::default();
        let f = encode(&spec("name: n"), &none).unwrap();
        assert_eq!((f.token_type, f.permissions.len()), ("custom", 0));
    }

    #[test]
    fn the_same_rights_on_every_api_are_default_permissions() {
        use ContentPermission::*;
        let c = listings(false);
        let (defaults, apis, notes) = rights_of(&c.read_actions(), &c);
        assert_eq!((defaults, apis.len(), notes.len()), (vec![Get], 0, 0));
        let one: BTreeSet<String> = c.apis["authors"].delete.clone();
        let (defaults, apis, notes) = rights_of(&one, &c);
        assert!(defaults.is_empty() && notes.is_empty());
        assert_eq!(
            apis.iter()
                .map(|a| (a.api.as_str(), a.permissions.clone()))
                .collect::<Vec<_>>(),
            [("authors", vec![Delete])]
        );
    }

    #[test]
    fn a_token_record_is_read_with_its_ids_and_times_in_either_form() {
        let c = listings(false);
        let base = json!({"id": "abc", "name": "n", "type": "read-only",
                          "createdAt": "2026-11-24T00:00:00.000Z"});
        let live = decode(&base, &c).unwrap();
        assert_eq!(live.id, "abc");
        assert_eq!(live.created_at, "2026-11-24T00:00:00Z".parse().unwrap());
        assert_eq!(live.spec.expires_at, None, "an unlimited lifespan");
        let mut numbered = base.clone();
        numbered["id"] = json!(7);
        numbered["expiresAt"] = json!("2026-12-01T00:00:00.000Z");
        let live = decode(&numbered, &c).unwrap();
        assert_eq!(live.id, "7");
        assert_eq!(
            live.spec.expires_at,
            Some("2026-12-01T00:00:00Z".parse().unwrap())
        );
        for field in ["id", "name", "createdAt"] {
            let mut t = base.clone();
            t.as_object_mut().unwrap().remove(field);
            assert!(decode(&t, &c).is_err(), "without {field}");
        }
        let mut t = base;
        t["createdAt"] = json!("yesterday");
        assert!(decode(&t, &c).is_err(), "an unreadable createdAt");
    }
}
