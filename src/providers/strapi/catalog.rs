//! Strapi's content API as its permission and route listings describe it: which actions exist,
//! and which of them each API (a path segment under `/api`) routes to.

use crate::model::ContentPermission;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Strapi's content API as its permission and route listings describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Every action a token may hold (`api::article.article.find`, `plugin::upload....`).
    pub actions: BTreeSet<String>,
    /// API name (path segment under `/api`) -> its CRUD actions.
    pub apis: BTreeMap<String, ApiActions>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiActions {
    pub read: BTreeSet<String>,
    pub create: BTreeSet<String>,
    pub update: BTreeSet<String>,
    pub delete: BTreeSet<String>,
}

/// The Strapi action a keyward permission maps to, for messages.
pub(super) fn action_name(p: ContentPermission) -> &'static str {
    match p {
        ContentPermission::Post => "create",
        ContentPermission::Put | ContentPermission::Patch => "update",
        ContentPermission::Delete => "delete",
        _ => "find/findOne",
    }
}

pub(super) fn api_list(catalog: &Catalog) -> String {
    if catalog.apis.is_empty() {
        "none under /api".into()
    } else {
        catalog.apis.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

impl ApiActions {
    /// The actions that grant `p` (empty: this API cannot grant it).
    pub(super) fn of(&self, p: ContentPermission) -> &BTreeSet<String> {
        match p {
            ContentPermission::Post => &self.create,
            ContentPermission::Put | ContentPermission::Patch => &self.update,
            ContentPermission::Delete => &self.delete,
            _ => &self.read,
        }
    }

    /// (keyward permissions, the actions that grant them) per class.
    pub(super) fn classes(&self) -> [(&'static [ContentPermission], &BTreeSet<String>); 4] {
        use ContentPermission::*;
        [
            (&[Get], &self.read),
            (&[Post], &self.create),
            (&[Put, Patch], &self.update),
            (&[Delete], &self.delete),
        ]
    }
}

/// What Strapi's read-only tokens may call: scopes ending in `find` or `findOne`.
pub(super) fn is_read_action(a: &str) -> bool {
    a.ends_with("find") || a.ends_with("findOne")
}

impl Catalog {
    /// From `GET /admin/content-api/permissions` and `GET /admin/content-api/routes`.
    pub fn from_listings(permissions: &Value, routes: &Value) -> Result<Catalog, String> {
        let mut c = Catalog::default();
        let perms = permissions
            .get("data")
            .and_then(Value::as_object)
            .ok_or("the permission listing has no data object")?;
        for (uid, section) in perms {
            let controllers = section
                .get("controllers")
                .and_then(Value::as_object)
                .ok_or_else(|| format!("permissions of {uid} have no controllers"))?;
            for (controller, actions) in controllers {
                for a in actions.as_array().into_iter().flatten() {
                    if let Some(a) = a.as_str() {
                        c.actions.insert(format!("{uid}.{controller}.{a}"));
                    }
                }
            }
        }
        let routes = routes
            .get("data")
            .and_then(Value::as_object)
            .ok_or("the route listing has no data object")?;
        for (uid, list) in routes.iter().filter(|(uid, _)| uid.starts_with("api::")) {
            for r in list.as_array().into_iter().flatten() {
                let (Some(path), Some(handler)) = (
                    r.get("path").and_then(Value::as_str),
                    r.get("handler").and_then(Value::as_str),
                ) else {
                    continue;
                };
                let Some(api) = path
                    .strip_prefix("/api/")
                    .and_then(|p| p.split('/').next())
                    .filter(|s| !s.is_empty())
                else {
                    continue;
                };
                if !handler.starts_with(uid.as_str()) || !c.actions.contains(handler) {
                    continue;
                }
                let entry = c.apis.entry(api.to_owned()).or_default();
                let set = match handler.rsplit('.').next() {
                    Some("find" | "findOne") => &mut entry.read,
                    Some("create") => &mut entry.create,
                    Some("update") => &mut entry.update,
                    Some("delete") => &mut entry.delete,
                    // Custom actions have no keyward permission: never granted, flagged if held.
                    _ => continue,
                };
                set.insert(handler.to_owned());
            }
        }
        Ok(c)
    }

    pub(super) fn read_actions(&self) -> BTreeSet<String> {
        self.actions
            .iter()
            .filter(|a| is_read_action(a))
            .cloned()
            .collect()
    }
}
