//! What a caller holds, and the rule that keeps it there: nobody creates, changes, regenerates,
//! reveals or removes a key, member or role that holds a right the caller lacks itself.
//!
//! A holder's rights are its content rights on every API (per-API rights replace the defaults
//! for that API, so "every other API" is one more entry), its non-content scopes, its
//! management permissions and the environments it may act in. `covers` compares two holders
//! right by right and names the first right that is missing.

use super::error::Missing;
use crate::model::{
    ContentOp, ContentPermission, KeyKind, KeySpec, ManagementPermission, PermSet, Scope,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Everything one key, role or token may do.
/// A role: the content and management rights of the members who hold it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub content_permissions: Vec<ContentPermission>,
    #[serde(default)]
    pub management_permissions: Vec<ManagementPermission>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rights {
    /// Content rights on every API that has no entry in `per_api`.
    default: PermSet,
    /// Content rights on the APIs named explicitly.
    per_api: BTreeMap<String, PermSet>,
    /// Scopes that grant something besides content rights (`cache:purge`, `webhooks:write`,
    /// `export:write`, `*`).
    scopes: BTreeSet<Scope>,
    management: BTreeSet<ManagementPermission>,
    /// `None`: every environment.
    environments: Option<BTreeSet<String>>,
}

const ALL_MANAGEMENT: [ManagementPermission; 7] = [
    ManagementPermission::ContentRead,
    ManagementPermission::ContentWrite,
    ManagementPermission::ContentStatus,
    ManagementPermission::MembersRead,
    ManagementPermission::MembersManage,
    ManagementPermission::KeysManage,
    ManagementPermission::SettingsManage,
];

impl Rights {
    /// The bootstrap admin token, and what a `*` key holds before its environment limit.
    pub fn everything() -> Rights {
        Rights {
            default: PermSet::ALL,
            per_api: BTreeMap::new(),
            scopes: BTreeSet::from([Scope::All]),
            management: ALL_MANAGEMENT.into_iter().collect(),
            environments: None,
        }
    }

    /// What a role gives its members (in every environment).
    pub fn of_role(role: &Role) -> Rights {
        Rights {
            default: role
                .management_permissions
                .iter()
                .fold(PermSet::of(&role.content_permissions), |acc, p| {
                    acc.union(p.content_grants())
                }),
            per_api: BTreeMap::new(),
            scopes: BTreeSet::new(),
            management: role.management_permissions.iter().copied().collect(),
            environments: None,
        }
    }

    /// What a key with this spec holds; `owner_role` is the role of a personal key's owner (a
    /// personal key whose owner is gone holds nothing).
    pub fn of_key(spec: &KeySpec, owner_role: Option<&Role>) -> Rights {
        let mut rights = match spec.kind {
            KeyKind::Content if spec.scopes.contains(&Scope::All) => Rights::everything(),
            KeyKind::Content => {
                let granted = spec
                    .scopes
                    .iter()
                    .fold(PermSet::EMPTY, |acc, s| acc.union(s.content_grants()));
                Rights {
                    default: PermSet::of(&spec.default_permissions).union(granted),
                    per_api: spec
                        .api_permissions
                        .iter()
                        .map(|a| (a.api.clone(), PermSet::of(&a.permissions).union(granted)))
                        .collect(),
                    scopes: spec
                        .scopes
                        .iter()
                        .copied()
                        .filter(|s| s.content_grants() == PermSet::EMPTY)
                        .collect(),
                    management: BTreeSet::new(),
                    environments: None,
                }
            }
            KeyKind::Management => Rights {
                default: spec
                    .management_permissions
                    .iter()
                    .fold(PermSet::EMPTY, |acc, p| acc.union(p.content_grants())),
                per_api: BTreeMap::new(),
                scopes: BTreeSet::new(),
                management: spec.management_permissions.iter().copied().collect(),
                environments: None,
            },
            KeyKind::Personal => owner_role.map(Rights::of_role).unwrap_or_else(Rights::none),
        };
        if !spec.environments.is_empty() {
            rights.environments = Some(spec.environments.iter().cloned().collect());
        }
        rights
    }

    fn none() -> Rights {
        Rights {
            default: PermSet::EMPTY,
            per_api: BTreeMap::new(),
            scopes: BTreeSet::new(),
            management: BTreeSet::new(),
            environments: None,
        }
    }

    fn on(&self, api: &str) -> PermSet {
        self.per_api.get(api).copied().unwrap_or(self.default)
    }

    /// Whether this holder may act in `env`.
    pub fn allows_environment(&self, env: &str) -> bool {
        self.environments.as_ref().is_none_or(|e| e.contains(env))
    }

    /// The environments this holder is limited to, for messages.
    pub fn environment_limit(&self) -> Option<String> {
        self.environments
            .as_ref()
            .map(|e| e.iter().cloned().collect::<Vec<_>>().join(", "))
    }

    /// Whether a key limited as `spec` is inside this holder's environments (what it may see).
    pub fn sees_environments_of(&self, spec: &KeySpec) -> bool {
        match &self.environments {
            None => true,
            Some(mine) => {
                !spec.environments.is_empty() && spec.environments.iter().all(|e| mine.contains(e))
            }
        }
    }

    /// Refuses unless this holder may act in every environment (settings, members and roles
    /// apply to all of them).
    pub fn require_every_environment(&self) -> Result<(), Missing> {
        match self.environment_limit() {
            None => Ok(()),
            Some(limit) => Err(Missing(format!(
                "every environment (this key is limited to {limit})"
            ))),
        }
    }

    /// `Ok` when this holder holds every right of `target`; otherwise the first missing right.
    pub fn covers(&self, target: &Rights) -> Result<(), Missing> {
        if let Some(mine) = &self.environments {
            match &target.environments {
                None => self.require_every_environment()?,
                Some(theirs) => {
                    if let Some(e) = theirs.iter().find(|e| !mine.contains(*e)) {
                        return Err(Missing(format!("environment '{e}'")));
                    }
                }
            }
        }
        if let Some(p) = missing_perm(self.default, target.default) {
            return Err(Missing(format!("{p} on every API")));
        }
        let apis: BTreeSet<&String> = self.per_api.keys().chain(target.per_api.keys()).collect();
        for api in apis {
            if let Some(p) = missing_perm(self.on(api), target.on(api)) {
                return Err(Missing(format!("{p} on API '{api}'")));
            }
        }
        if !self.scopes.contains(&Scope::All) {
            if let Some(s) = target.scopes.iter().find(|s| !self.scopes.contains(*s)) {
                return Err(Missing(format!("scope '{s}'")));
            }
        }
        if let Some(m) = target
            .management
            .iter()
            .find(|m| !self.management.iter().any(|mine| mine.implies(**m)))
        {
            return Err(Missing(format!("management permission '{m}'")));
        }
        Ok(())
    }
}

impl Rights {
    /// Refuses unless this holder could do `op` on `api` itself: making an operation public
    /// grants it to everyone, so it is a grant like any other. A public `update` serves PATCH
    /// and PUT; a public `publish` needs what publishing needs (PATCH or `content:status`).
    pub fn may_make_public(&self, api: &str, op: ContentOp) -> Result<(), Missing> {
        let held = self.on(api);
        let needed: &[ContentPermission] = match op {
            ContentOp::List | ContentOp::Get => &[ContentPermission::Get],
            ContentOp::Create => &[ContentPermission::Post],
            ContentOp::Update | ContentOp::Replace => {
                &[ContentPermission::Patch, ContentPermission::Put]
            }
            ContentOp::Delete => &[ContentPermission::Delete],
            ContentOp::Publish if held.allows(ContentOp::Publish) => &[],
            ContentOp::Publish => &[ContentPermission::Patch],
        };
        match needed.iter().find(|p| !held.contains(**p)) {
            Some(p) => Err(Missing(format!("{} on API '{api}'", p.as_str()))),
            None => Ok(()),
        }
    }
}

/// The name of a right in `theirs` that `mine` lacks.
fn missing_perm(mine: PermSet, theirs: PermSet) -> Option<&'static str> {
    if let Some(p) = ContentPermission::ALL
        .into_iter()
        .find(|p| theirs.contains(*p) && !mine.contains(*p))
    {
        return Some(p.as_str());
    }
    (theirs.has_status() && !mine.has_status()).then_some("content:status")
}

impl Rights {
    /// The rights as JSON, for `GET /v1/self`: what a key can do, spelled out.
    pub fn to_json(&self) -> serde_json::Value {
        let perms = |p: PermSet| -> Vec<&'static str> {
            let mut v: Vec<&'static str> = ContentPermission::ALL
                .into_iter()
                .filter(|c| p.contains(*c))
                .map(ContentPermission::as_str)
                .collect();
            if p.has_status() {
                v.push("content:status");
            }
            v
        };
        let apis: serde_json::Map<String, serde_json::Value> = self
            .per_api
            .iter()
            .map(|(api, p)| (api.clone(), serde_json::json!(perms(*p))))
            .collect();
        serde_json::json!({
            "everyOtherApi": perms(self.default),
            "apis": apis,
            "scopes": self.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "managementPermissions": self.management.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "environments": self.environments.as_ref().map(|e| e.iter().cloned().collect::<Vec<_>>()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiPermission;
    use ContentPermission::*;

    fn key(f: impl FnOnce(&mut KeySpec)) -> Rights {
        let mut s = KeySpec {
            name: "k".into(),
            ..Default::default()
        };
        f(&mut s);
        Rights::of_key(&s, None)
    }

    #[test]
    fn per_api_rights_replace_defaults_on_both_sides() {
        let caller = key(|s| {
            s.default_permissions = vec![Get];
            s.api_permissions = vec![ApiPermission {
                api: "contact".into(),
                permissions: vec![Post],
            }];
        });
        // GET on contact is not held: the per-API entry replaced the default there.
        let wants_get_everywhere = key(|s| s.default_permissions = vec![Get]);
        assert_eq!(
            caller.covers(&wants_get_everywhere),
            Err(Missing("GET on API 'contact'".into()))
        );
        let wants_post_on_contact = key(|s| {
            s.api_permissions = vec![ApiPermission {
                api: "contact".into(),
                permissions: vec![Post],
            }]
        });
        assert_eq!(caller.covers(&wants_post_on_contact), Ok(()));
        let wants_post_on_blog = key(|s| {
            s.api_permissions = vec![ApiPermission {
                api: "blog".into(),
                permissions: vec![Post],
            }]
        });
        assert_eq!(
            caller.covers(&wants_post_on_blog),
            Err(Missing("POST on API 'blog'".into()))
        );
    }

    #[test]
    fn star_only_from_star_and_scopes_by_name() {
        let star = key(|s| s.scopes = vec![Scope::All]);
        let export = key(|s| s.scopes = vec![Scope::ExportWrite]);
        assert_eq!(star.covers(&star), Ok(()));
        assert_eq!(Rights::everything().covers(&star), Ok(()));
        assert_eq!(
            export.covers(&star).map_err(|m| m.0.contains("GET")),
            Err(true)
        );
        let reader = key(|s| s.default_permissions = vec![Get]);
        assert_eq!(
            reader.covers(&export),
            Err(Missing("scope 'export:write'".into()))
        );
        // content:read is GET on every API: a GET-everywhere key may hand it out.
        assert_eq!(
            reader.covers(&key(|s| s.scopes = vec![Scope::ContentRead])),
            Ok(())
        );
    }

    #[test]
    fn management_and_environments() {
        let mut keys_manage = KeySpec {
            name: "m".into(),
            kind: KeyKind::Management,
            management_permissions: vec![ManagementPermission::KeysManage],
            ..Default::default()
        };
        let km = Rights::of_key(&keys_manage, None);
        keys_manage
            .management_permissions
            .push(ManagementPermission::SettingsManage);
        assert_eq!(
            km.covers(&Rights::of_key(&keys_manage, None)),
            Err(Missing("management permission 'settings:manage'".into()))
        );
        let staging_star = key(|s| {
            s.scopes = vec![Scope::All];
            s.environments = vec!["staging".into()];
        });
        assert!(staging_star.covers(&key(|_| {})).is_err(), "unlimited key");
        assert_eq!(
            staging_star.covers(&key(|s| s.environments = vec!["production".into()])),
            Err(Missing("environment 'production'".into()))
        );
        assert_eq!(
            staging_star.covers(&key(|s| s.environments = vec!["staging".into()])),
            Ok(())
        );
        let manager = Rights::of_role(&Role {
            management_permissions: vec![ManagementPermission::MembersManage],
            ..Default::default()
        });
        assert_eq!(
            manager.covers(&Rights::of_role(&Role {
                management_permissions: vec![ManagementPermission::MembersRead],
                ..Default::default()
            })),
            Ok(()),
            "members:manage implies members:read"
        );
    }
}
