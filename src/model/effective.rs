//! A key's effective rights with where each comes from (`keyward explain`), and how what a
//! policy declares differs from what a CMS holds. Pure: the same rules the reference CMS
//! enforces (per-API permissions replace the defaults for that API, scopes add to every API,
//! a management key's permissions reach every API, a personal key holds its owner's role).

use super::rights::{ContentOp, ContentPermission, ManagementPermission, Scope};
use super::settings::OwnedSettings;
use super::spec::{KeyKind, KeySpec};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The row of the APIs a key has no per-API permissions for.
pub const EVERY_OTHER_API: &str = "*";

/// What a key may do, each right with its sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Effective {
    pub kind: &'static str,
    #[serde(rename = "type")]
    pub key_type: &'static str,
    /// Empty: every environment.
    pub environments: Vec<String>,
    /// One row per API named anywhere, then `*` for every other API.
    pub rights: Vec<ApiRights>,
    /// Scopes that grant something besides content (cache purge, webhooks, export).
    pub service_scopes: Vec<String>,
    /// A management key's permissions (members, keys, settings and content).
    pub management: Vec<String>,
    /// A personal key: the member whose role decides its rights, at each request, in the CMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Origins browsers may call the CMS from (the policy's, for every key of the CMS).
    pub cors_origins: Vec<String>,
    /// Operations anyone may do without a key, by API (the policy's public endpoints).
    pub public: BTreeMap<String, Vec<ContentOp>>,
}

/// A key's rights on one API: each operation with what grants it (none: refused).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRights {
    pub api: String,
    /// Per-API permissions replace the defaults on this API.
    pub overrides_defaults: bool,
    pub operations: BTreeMap<ContentPermission, Vec<Grant>>,
}

/// What grants a content right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// `defaultPermissions` (the API has no permissions of its own).
    Default,
    /// The API's own `apiPermissions` entry.
    Api,
    /// A scope, on every API.
    Scope(Scope),
    /// A management key's permission, on every API.
    Management(ManagementPermission),
}

impl Grant {
    /// The word in `keyward explain`'s table.
    pub fn short(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Api => "api",
            Self::Scope(_) => "scope",
            Self::Management(_) => "mgmt",
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("defaultPermissions"),
            Self::Api => f.write_str("apiPermissions"),
            Self::Scope(s) => write!(f, "scope {s}"),
            Self::Management(m) => write!(f, "managementPermissions {m}"),
        }
    }
}

impl Serialize for Grant {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl ApiRights {
    /// Whether `p` is granted on this API.
    pub fn grants(&self, p: ContentPermission) -> bool {
        self.operations.get(&p).is_some_and(|from| !from.is_empty())
    }
}

impl Effective {
    /// The rights of a key with `spec`, under a policy whose CMS settings are `settings`.
    pub fn of(spec: &KeySpec, settings: &OwnedSettings) -> Effective {
        let mut apis: BTreeSet<&str> = spec
            .api_permissions
            .iter()
            .map(|a| a.api.as_str())
            .collect();
        apis.extend(settings.public.keys().map(String::as_str));
        let rights = apis
            .into_iter()
            .chain([EVERY_OTHER_API])
            .map(|api| api_rights(spec, api))
            .collect();
        Effective {
            kind: spec.kind.as_str(),
            key_type: spec.key_type.as_str(),
            environments: spec.environments.clone(),
            rights,
            service_scopes: spec
                .scopes
                .iter()
                .filter(|s| !matches!(s, Scope::ContentRead | Scope::ContentWrite))
                .map(|s| s.as_str().to_owned())
                .collect(),
            management: spec
                .management_permissions
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            owner: spec.owner.clone(),
            cors_origins: settings.cors.iter().cloned().collect(),
            public: settings
                .public
                .iter()
                .filter(|(_, ops)| !ops.is_empty())
                .map(|(api, ops)| (api.clone(), ops.iter().copied().collect()))
                .collect(),
        }
    }

    /// The row of `api`, or of every other API when it has none.
    pub fn on(&self, api: &str) -> Option<&ApiRights> {
        self.rights
            .iter()
            .find(|r| r.api == api)
            .or_else(|| self.rights.iter().find(|r| r.api == EVERY_OTHER_API))
    }
}

/// What grants each operation on `api`.
fn api_rights(spec: &KeySpec, api: &str) -> ApiRights {
    let own = spec.api_permissions.iter().find(|a| a.api == api);
    let mut operations = BTreeMap::new();
    for p in ContentPermission::ALL {
        let mut from = Vec::new();
        match spec.kind {
            KeyKind::Content => {
                match own {
                    Some(a) if a.permissions.contains(&p) => from.push(Grant::Api),
                    None if spec.default_permissions.contains(&p) => from.push(Grant::Default),
                    _ => {}
                }
                from.extend(
                    spec.scopes
                        .iter()
                        .filter(|s| s.content_grants().contains(p))
                        .map(|s| Grant::Scope(*s)),
                );
            }
            KeyKind::Management => from.extend(
                spec.management_permissions
                    .iter()
                    .filter(|m| m.content_grants().contains(p))
                    .map(|m| Grant::Management(*m)),
            ),
            // The role is the CMS's to decide, at each request.
            KeyKind::Personal => {}
        }
        operations.insert(p, from);
    }
    ApiRights {
        api: api.to_owned(),
        overrides_defaults: own.is_some(),
        operations,
    }
}

/// One way what the CMS holds differs from what the policy declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub what: String,
    pub declared: String,
    pub held: String,
}

/// Every difference between `declared` and `held`, right by right.
pub fn differences(declared: &Effective, held: &Effective) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut differ = |what: String, d: String, h: String| {
        if d != h {
            out.push(Difference {
                what,
                declared: d,
                held: h,
            });
        }
    };
    let every = |v: &[String]| match v.is_empty() {
        true => "every environment".to_owned(),
        false => v.join(", "),
    };
    differ(
        "environments".into(),
        every(&declared.environments),
        every(&held.environments),
    );
    let apis: BTreeSet<&str> = declared
        .rights
        .iter()
        .chain(&held.rights)
        .map(|r| r.api.as_str())
        .filter(|api| *api != EVERY_OTHER_API)
        .collect();
    let granted = |e: &Effective, api: &str, p| match e.on(api).is_some_and(|r| r.grants(p)) {
        true => "granted".to_owned(),
        false => "refused".to_owned(),
    };
    for api in apis.into_iter().chain([EVERY_OTHER_API]) {
        for p in ContentPermission::ALL {
            let (d, h) = (granted(declared, api, p), granted(held, api, p));
            differ(format!("{p} on {}", api_name(api)), d, h);
        }
    }
    let list = |v: &[String]| v.join(", ");
    differ(
        "scopes".into(),
        list(&declared.service_scopes),
        list(&held.service_scopes),
    );
    differ(
        "managementPermissions".into(),
        list(&declared.management),
        list(&held.management),
    );
    differ(
        "owner".into(),
        declared.owner.clone().unwrap_or_default(),
        held.owner.clone().unwrap_or_default(),
    );
    differ(
        "CORS origins".into(),
        list(&declared.cors_origins),
        list(&held.cors_origins),
    );
    let public = |e: &Effective| {
        let ops: Vec<String> = e
            .public
            .iter()
            .map(|(api, ops)| format!("{api}: {}", public_ops(ops)))
            .collect();
        ops.join("; ")
    };
    differ("public endpoints".into(), public(declared), public(held));
    out
}

/// `blog`, or `every other API`.
pub fn api_name(api: &str) -> String {
    match api {
        EVERY_OTHER_API => "every other API".to_owned(),
        api => format!("API '{api}'"),
    }
}

/// `get, list`.
pub fn public_ops(ops: &[ContentOp]) -> String {
    let names: Vec<String> = ops
        .iter()
        .map(|o| {
            serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiPermission;
    use ContentPermission::*;

    fn content(defaults: &[ContentPermission], blog: Option<&[ContentPermission]>) -> KeySpec {
        KeySpec {
            name: "k".into(),
            default_permissions: defaults.to_vec(),
            api_permissions: blog
                .map(|p| {
                    vec![ApiPermission {
                        api: "blog".into(),
                        permissions: p.to_vec(),
                    }]
                })
                .unwrap_or_default(),
            ..KeySpec::default()
        }
    }

    fn from(e: &Effective, api: &str, p: ContentPermission) -> Vec<String> {
        e.on(api).unwrap().operations[&p]
            .iter()
            .map(|g| g.to_string())
            .collect()
    }

    #[test]
    fn per_api_permissions_replace_the_defaults_and_scopes_add_to_every_api() {
        let mut spec = content(&[Get, Post], Some(&[Get, GetAllDrafts]));
        spec.scopes = vec![Scope::ContentRead, Scope::CachePurge];
        let e = Effective::of(&spec, &OwnedSettings::default());
        assert_eq!(
            e.rights.iter().map(|r| r.api.as_str()).collect::<Vec<_>>(),
            ["blog", "*"]
        );
        assert_eq!(
            from(&e, "blog", Get),
            ["apiPermissions", "scope content:read"]
        );
        assert_eq!(from(&e, "blog", GetAllDrafts), ["apiPermissions"]);
        // The defaults' POST does not reach blog: its own list replaced them.
        assert!(from(&e, "blog", Post).is_empty());
        assert_eq!(from(&e, "news", Post), ["defaultPermissions"]);
        assert_eq!(
            from(&e, "*", Get),
            ["defaultPermissions", "scope content:read"]
        );
        assert!(e.on("blog").unwrap().overrides_defaults);
        assert!(!e.on("news").unwrap().overrides_defaults);
        assert_eq!(e.service_scopes, ["cache:purge"]);
    }

    #[test]
    fn management_keys_reach_every_api_through_their_permissions_personal_keys_their_owner() {
        let spec = KeySpec {
            kind: KeyKind::Management,
            management_permissions: vec![ManagementPermission::ContentRead],
            ..KeySpec::default()
        };
        let e = Effective::of(&spec, &OwnedSettings::default());
        assert_eq!(
            from(&e, "any", GetAllDrafts),
            ["managementPermissions content:read"]
        );
        assert!(from(&e, "any", Post).is_empty());
        assert_eq!(e.management, ["content:read"]);
        let personal = KeySpec {
            kind: KeyKind::Personal,
            owner: Some("ana".into()),
            ..KeySpec::default()
        };
        let e = Effective::of(&personal, &OwnedSettings::default());
        assert_eq!(e.owner.as_deref(), Some("ana"));
        assert!(!e.on("any").unwrap().grants(Get));
    }

    #[test]
    fn each_grant_has_a_word_for_the_table_and_a_name_for_tools() {
        let said = |g: Grant| (g.short(), g.to_string());
        assert_eq!(
            said(Grant::Default),
            ("default", "defaultPermissions".into())
        );
        assert_eq!(said(Grant::Api), ("api", "apiPermissions".into()));
        assert_eq!(said(Grant::Scope(Scope::All)), ("scope", "scope *".into()));
        assert_eq!(
            said(Grant::Management(ManagementPermission::ContentWrite)),
            ("mgmt", "managementPermissions content:write".into())
        );
    }

    #[test]
    fn differences_name_each_right_environment_and_setting_that_differs() {
        let declared = content(&[Get], Some(&[Get, GetAllDrafts]));
        let mut held = content(&[Get, Delete], None);
        held.environments = vec!["staging".into()];
        let settings = OwnedSettings {
            cors: ["https://a.example".to_owned()].into(),
            public: [("blog".to_owned(), [ContentOp::Get].into())].into(),
        };
        let d = Effective::of(&declared, &settings);
        let h = Effective::of(&held, &OwnedSettings::default());
        let found: Vec<(String, String, String)> = differences(&d, &h)
            .into_iter()
            .map(|d| (d.what, d.declared, d.held))
            .collect();
        let row = |w: &str, d: &str, h: &str| (w.to_owned(), d.to_owned(), h.to_owned());
        assert_eq!(
            found,
            [
                row("environments", "every environment", "staging"),
                row("GET_ALL_DRAFTS on API 'blog'", "granted", "refused"),
                row("DELETE on API 'blog'", "refused", "granted"),
                row("DELETE on every other API", "refused", "granted"),
                row("CORS origins", "https://a.example", ""),
                row("public endpoints", "blog: get", ""),
            ]
        );
        assert!(differences(&d, &d).is_empty());
    }
}
