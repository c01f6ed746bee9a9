//! keyward's key model <-> Directus users with static tokens, without I/O.
//!
//! - A key is a Directus user (no role, no password, no email) with a static `token`, and its own
//!   policy (`admin_access: false, app_access: false`) holding one permission row per collection
//!   and action, with `fields: ["*"]`.
//! - An API is a collection. GET -> read, POST -> create, PUT and PATCH -> update (one right
//!   in Directus: a key holding either holds both), DELETE -> delete.
//! - On a collection with a `status` field, reads are filtered on it: GET sees `published` items,
//!   GET_ALL_DRAFTS adds `draft`, GET_ALL_CLOSED adds `archived`. On other collections there are
//!   no drafts to grant: those rights are refused.
//! - Users have no labels: keyward's ownership tag is the last line of the user's description;
//!   the key's name is its policy's name.
//! - Everything Directus cannot express is refused with the field and the reason, never dropped.
//!
//! The canonical form of a spec is what Directus will report back: the rights of the rows that
//! `encode` makes. Plans compare canonical desired specs with decoded live users.

use super::capabilities::CAPABILITIES;
use super::catalog::Catalog;
use super::tag::{parse_description, Stamps};
use crate::model::{normalize, ApiPermission, ContentPermission, KeyKind, KeySpec};
use crate::providers::{unknown_api, LiveKey, ProviderError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const PROVIDER: &str = "directus";
/// Marks a live key that holds rights keyward cannot express, so the plan shows it as drift.
pub const LABEL_UNEXPRESSED: &str = "directus.keyward.dev/unexpressed";
/// How a policy keyward made describes itself; only such policies are ever changed or deleted.
pub const POLICY_DESCRIPTION: &str = "keyward: the rights of one API key (managed by keyward)";
/// The user and policy fields keyward reads (the token is never read back).
pub const USER_FIELDS: &str = "id,first_name,description,status,role,policies.id,\
policies.policy.id,policies.policy.name,policies.policy.description,policies.policy.admin_access,\
policies.policy.app_access,policies.policy.permissions.id,policies.policy.permissions.collection,\
policies.policy.permissions.action,policies.policy.permissions.fields,\
policies.policy.permissions.permissions,policies.policy.permissions.validation,\
policies.policy.permissions.presets";
/// Directus keeps 50 characters of a first name; the full name is the policy's (100).
pub const FIRST_NAME_MAX: usize = 50;

const PUBLISHED: &str = "published";
const DRAFT: &str = "draft";
const ARCHIVED: &str = "archived";

/// A refusal of this provider's.
pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> ProviderError {
    ProviderError::unsupported(PROVIDER, field, reason)
}

/// One permission row of a key's policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub collection: String,
    /// `read`, `create`, `update` or `delete`.
    pub action: String,
    /// The `status` values a read sees; `None`: every item.
    pub statuses: Option<BTreeSet<String>>,
}

impl Row {
    /// The row as Directus takes it (without its policy).
    pub fn to_json(&self) -> Value {
        let filter = self
            .statuses
            .as_ref()
            .map(|s| json!({ "status": { "_in": s.iter().collect::<Vec<_>>() } }));
        json!({
            "collection": self.collection,
            "action": self.action,
            "fields": ["*"],
            "permissions": filter,
        })
    }

    /// A row from Directus, or a note of what keyward cannot express in it.
    pub fn parse(v: &Value) -> Result<Row, String> {
        let (Some(collection), Some(action)) = (
            v.get("collection").and_then(Value::as_str),
            v.get("action").and_then(Value::as_str),
        ) else {
            return Err("a permission row without collection or action".into());
        };
        let at = format!("{collection} {action}");
        let all_fields = v
            .get("fields")
            .and_then(Value::as_array)
            .is_some_and(|f| f.len() == 1 && f[0].as_str() == Some("*"));
        if !all_fields {
            return Err(format!("{at}: only some fields"));
        }
        let unset = |f: &str| match v.get(f) {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(_) => false,
        };
        if !unset("validation") || !unset("presets") {
            return Err(format!("{at}: a validation or presets"));
        }
        let statuses = match v.get("permissions") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(f) => Some(status_filter(f).ok_or(format!("{at}: an item filter"))?),
        };
        Ok(Row {
            collection: collection.to_owned(),
            action: action.to_owned(),
            statuses,
        })
    }
}

/// The statuses of `{"status": {"_in": [...]}}` or `{"status": {"_eq": ...}}`.
fn status_filter(f: &Value) -> Option<BTreeSet<String>> {
    let m = f.as_object().filter(|m| m.len() == 1)?;
    let cond = m.get("status")?.as_object().filter(|c| c.len() == 1)?;
    match (cond.get("_in"), cond.get("_eq")) {
        (Some(Value::Array(list)), None) => {
            list.iter().map(|s| s.as_str().map(str::to_owned)).collect()
        }
        (None, Some(Value::String(s))) => Some(BTreeSet::from([s.clone()])),
        _ => None,
    }
}

fn action_of(p: ContentPermission) -> &'static str {
    match p {
        ContentPermission::Post => "create",
        ContentPermission::Put | ContentPermission::Patch => "update",
        ContentPermission::Delete => "delete",
        _ => "read",
    }
}

/// The rows that grant `granted` on `collection`.
fn rows_for(collection: &str, granted: &BTreeSet<ContentPermission>, status: bool) -> Vec<Row> {
    let actions: BTreeSet<&'static str> = granted.iter().map(|p| action_of(*p)).collect();
    actions
        .into_iter()
        .filter(|a| *a != "read" || granted.contains(&ContentPermission::Get))
        .map(|action| {
            let statuses = (status && action == "read").then(|| {
                let mut s = BTreeSet::from([PUBLISHED.to_owned()]);
                if granted.contains(&ContentPermission::GetAllDrafts) {
                    s.insert(DRAFT.to_owned());
                }
                if granted.contains(&ContentPermission::GetAllClosed) {
                    s.insert(ARCHIVED.to_owned());
                }
                s
            });
            Row {
                collection: collection.to_owned(),
                action: action.to_owned(),
                statuses,
            }
        })
        .collect()
}

/// The refusals of rights that name collections or drafts this Directus does not have.
fn check_rights(spec: &KeySpec, catalog: &Catalog) -> Result<(), ProviderError> {
    let drafts = |p: &ContentPermission| {
        matches!(
            p,
            ContentPermission::GetAllDrafts | ContentPermission::GetAllClosed
        )
    };
    if let Some((field, api)) = unknown_api(spec, |a| catalog.collections.contains_key(a)) {
        let reason = format!(
            "this Directus has no collection '{api}' (its collections: {})",
            catalog.names()
        );
        return Err(unsupported(field, reason));
    }
    for (i, a) in spec.api_permissions.iter().enumerate() {
        if let Some(j) = a.permissions.iter().position(drafts) {
            if !catalog.has_status(&a.api) {
                return Err(unsupported(
                    format!("apiPermissions[{i}].permissions[{j}]"),
                    format!("collection '{}' has no status field: it has no drafts or archived items to grant", a.api),
                ));
            }
        }
    }
    if catalog.collections.is_empty() {
        let field = if !spec.default_permissions.is_empty() {
            Some("defaultPermissions[0]")
        } else if !spec.scopes.is_empty() {
            Some("scopes[0]")
        } else {
            None
        };
        if let Some(field) = field {
            return Err(unsupported(
                field,
                "this Directus has no collections of its own: the rights would grant nothing",
            ));
        }
    }
    if let Some(j) = spec.default_permissions.iter().position(drafts) {
        if !catalog.collections.values().any(|s| *s) {
            return Err(unsupported(
                format!("defaultPermissions[{j}]"),
                "no collection of this Directus has a status field: there are no drafts or archived items to grant",
            ));
        }
    }
    Ok(())
}

/// Translates a spec into permission rows, or says which field Directus cannot hold.
pub fn encode(spec: &KeySpec, catalog: &Catalog) -> Result<Vec<Row>, ProviderError> {
    if let Some((field, reason)) = CAPABILITIES.key_refusals(spec).into_iter().next() {
        return Err(unsupported(field, reason));
    }
    if spec.expires_at.is_some() {
        return Err(unsupported(
            "expiresAfter",
            "a Directus static token never expires",
        ));
    }
    check_rights(spec, catalog)?;
    let scoped = spec.scope_grants();
    let mut rows = Vec::new();
    for (collection, status) in &catalog.collections {
        let mut granted: BTreeSet<ContentPermission> =
            spec.permissions_for(collection).iter().copied().collect();
        granted.extend(scoped.iter().copied());
        if !status {
            // Drafts from defaultPermissions apply where there is a status field.
            granted.retain(|p| {
                !matches!(
                    p,
                    ContentPermission::GetAllDrafts | ContentPermission::GetAllClosed
                )
            });
        }
        rows.extend(rows_for(collection, &granted, *status));
    }
    Ok(rows)
}

/// What rights the rows grant, per collection, and notes of what keyward cannot express.
pub fn rights_of_rows(
    rows: &[Row],
    catalog: &Catalog,
) -> (BTreeMap<String, BTreeSet<ContentPermission>>, Vec<String>) {
    use ContentPermission::*;
    let mut per: BTreeMap<String, BTreeSet<ContentPermission>> = BTreeMap::new();
    let mut notes = Vec::new();
    let allowed: BTreeSet<String> = [PUBLISHED, DRAFT, ARCHIVED].map(String::from).into();
    for r in rows {
        let at = format!("{} {}", r.collection, r.action);
        let Some(status) = catalog.collections.get(&r.collection) else {
            notes.push(format!("{at}: not a content collection"));
            continue;
        };
        let perms: Vec<ContentPermission> = match (r.action.as_str(), &r.statuses) {
            ("read", None) if *status => {
                notes.push(format!("{at}: items of every status"));
                continue;
            }
            ("read", None) => vec![Get],
            ("read", Some(s)) if *status && s.contains(PUBLISHED) && s.is_subset(&allowed) => {
                let mut v = vec![Get];
                if s.contains(DRAFT) {
                    v.push(GetAllDrafts);
                }
                if s.contains(ARCHIVED) {
                    v.push(GetAllClosed);
                }
                v
            }
            ("create", None) => vec![Post],
            ("update", None) => vec![Put, Patch],
            ("delete", None) => vec![Delete],
            _ => {
                notes.push(format!("{at}: a right keyward does not grant"));
                continue;
            }
        };
        per.entry(r.collection.clone()).or_default().extend(perms);
    }
    (per, notes)
}

/// Rights as keyward states them: the same rights everywhere are default permissions.
fn as_spec_rights(
    per: &BTreeMap<String, BTreeSet<ContentPermission>>,
    catalog: &Catalog,
) -> (Vec<ContentPermission>, Vec<ApiPermission>) {
    let empty = BTreeSet::new();
    let of = |c: &String| per.get(c).unwrap_or(&empty);
    let first = catalog.collections.keys().next().map(of).unwrap_or(&empty);
    if catalog.collections.keys().all(|c| of(c) == first) {
        return (first.iter().copied().collect(), Vec::new());
    }
    let apis = catalog
        .collections
        .keys()
        .filter(|c| !of(c).is_empty())
        .map(|c| ApiPermission {
            api: c.clone(),
            permissions: of(c).iter().copied().collect(),
        })
        .collect();
    (Vec::new(), apis)
}

/// The spec as Directus will report it back, or why Directus cannot hold it.
pub fn canonical(spec: &KeySpec, catalog: &Catalog) -> Result<KeySpec, ProviderError> {
    let rows = encode(spec, catalog)?;
    let (per, _) = rights_of_rows(&rows, catalog);
    let (default_permissions, api_permissions) = as_spec_rights(&per, catalog);
    Ok(spec.held_as_rights(default_permissions, api_permissions))
}

/// A Directus user record as keyward reads it (`USER_FIELDS`).
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: String,
    pub first_name: String,
    pub description: String,
    pub active: bool,
    pub has_role: bool,
    /// keyward's policy of this user, if it still has it.
    pub policy: Option<Policy>,
    /// Other policies attached by hand: (access row id, policy name).
    pub other_access: Vec<(Value, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub admin_access: bool,
    pub app_access: bool,
    /// (row id, the row or what keyward cannot express in it).
    pub rows: Vec<(Value, Result<Row, String>)>,
}

fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Policy {
    fn parse(p: &Value) -> Option<Policy> {
        (text(p, "description") == POLICY_DESCRIPTION).then(|| Policy {
            id: id_of(p.get("id")).unwrap_or_default(),
            name: text(p, "name"),
            admin_access: p.get("admin_access") == Some(&Value::Bool(true)),
            app_access: p.get("app_access") == Some(&Value::Bool(true)),
            rows: p
                .get("permissions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| (r.get("id").cloned().unwrap_or(Value::Null), Row::parse(r)))
                .collect(),
        })
    }
}

impl User {
    pub fn parse(u: &Value) -> Result<User, String> {
        let id = id_of(u.get("id")).ok_or("a user record has no id")?;
        let mut user = User {
            first_name: text(u, "first_name"),
            description: text(u, "description"),
            active: u.get("status").and_then(Value::as_str) == Some("active"),
            has_role: u.get("role").is_some_and(|r| !r.is_null()),
            policy: None,
            other_access: Vec::new(),
            id,
        };
        for access in u
            .get("policies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = access.get("policy").unwrap_or(&Value::Null);
            match Policy::parse(p) {
                Some(mine) if user.policy.is_none() => user.policy = Some(mine),
                _ => user.other_access.push((
                    access.get("id").cloned().unwrap_or(Value::Null),
                    text(p, "name"),
                )),
            }
        }
        Ok(user)
    }

    /// What in this user keyward did not make and would undo.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.active {
            notes.push("the user is not active".to_owned());
        }
        if self.has_role {
            notes.push("the user has a role".to_owned());
        }
        for (_, name) in &self.other_access {
            notes.push(format!("another policy '{name}'"));
        }
        match &self.policy {
            None => notes.push("keyward's policy is gone".to_owned()),
            Some(p) if p.admin_access || p.app_access => {
                notes.push("its policy has admin or app access".to_owned())
            }
            Some(_) => {}
        }
        notes
    }

    /// The user as a live key. Its token is never read.
    pub fn live(&self, catalog: &Catalog) -> LiveKey {
        let parsed = parse_description(&self.description);
        let mut notes = self.notes();
        let mut rows = Vec::new();
        for (_, r) in self.policy.iter().flat_map(|p| p.rows.iter()) {
            match r {
                Ok(row) => rows.push(row.clone()),
                Err(note) => notes.push(note.clone()),
            }
        }
        let (per, row_notes) = rights_of_rows(&rows, catalog);
        notes.extend(row_notes);
        let (default_permissions, api_permissions) = as_spec_rights(&per, catalog);
        let mut labels = parsed.labels;
        crate::providers::mark_unexpressed(&mut labels, LABEL_UNEXPRESSED, &notes);
        let name = match &self.policy {
            Some(p) if !p.name.is_empty() => p.name.clone(),
            _ => self.first_name.clone(),
        };
        let stamps = parsed.stamps.unwrap_or(Stamps {
            created: jiff::Timestamp::UNIX_EPOCH,
            issued: None,
        });
        LiveKey {
            id: self.id.clone(),
            spec: normalize(KeySpec {
                name,
                description: parsed.own,
                kind: KeyKind::Content,
                key_type: parsed.key_type,
                default_permissions,
                api_permissions,
                labels,
                ..KeySpec::default()
            }),
            created_at: stamps.created,
            rotated_at: stamps.issued,
        }
    }
}

/// The user's first name: the key's name, cut to what Directus keeps.
pub fn first_name(name: &str) -> String {
    name.chars().take(FIRST_NAME_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tag::compose_description;
    use super::*;
    use crate::providers::testkit::{per_api, reads_back_as_canonical, refused};

    fn catalog() -> Catalog {
        Catalog {
            collections: BTreeMap::from([("articles".into(), true), ("authors".into(), false)]),
        }
    }

    fn spec(yaml: &str) -> KeySpec {
        crate::providers::testkit::spec(yaml, "shop.site")
    }

    /// The user record Directus answers for a key made from `s`.
    fn user(s: &KeySpec, rows: &[Row]) -> Value {
        let stamps = Stamps {
            created: "2026-12-01T00:00:00Z".parse().unwrap(),
            issued: None,
        };
        let perms: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut v = r.to_json();
                v["id"] = json!(i + 1);
                v
            })
            .collect();
        json!({"id": "u1", "first_name": first_name(&s.name), "status": "active", "role": null,
               "description": compose_description(s, stamps),
               "policies": [{"id": "a1", "policy": {"id": "p1", "name": s.name, "description": POLICY_DESCRIPTION,
                             "admin_access": false, "app_access": false, "permissions": perms}}]})
    }

    #[test]
    fn canonical_equals_what_directus_reports_back() {
        let c = catalog();
        reads_back_as_canonical(
            LABEL_UNEXPRESSED,
            &[
                "name: n\ndefaultPermissions: [GET]",
                "name: n\ndefaultPermissions: [GET, GET_ALL_DRAFTS]",
                "name: n\nscopes: ['content:write']",
                "name: n\ndescription: ' mine '\ntype: public\napiPermissions: [{api: articles, permissions: [GET, GET_ALL_CLOSED]}]",
                "name: n\ndefaultPermissions: [GET]\napiPermissions: [{api: authors, permissions: [PUT]}]",
            ],
            spec,
            |s| canonical(s, &c).unwrap(),
            |s| User::parse(&user(s, &encode(s, &c).unwrap())).unwrap().live(&c).spec,
        );
        // Drafts from the defaults only where there is a status; PUT is PUT and PATCH.
        use ContentPermission::*;
        let s = canonical(
            &spec("name: n\ndefaultPermissions: [GET, GET_ALL_DRAFTS, PUT]"),
            &c,
        )
        .unwrap();
        assert_eq!(
            per_api(&s),
            [
                ("articles", vec![Get, GetAllDrafts, Put, Patch]),
                ("authors", vec![Get, Put, Patch])
            ]
        );
        let rows = encode(&spec("name: n\ndefaultPermissions: [GET]"), &c).unwrap();
        assert_eq!(
            rows[0].to_json()["permissions"],
            json!({"status": {"_in": ["published"]}})
        );
        assert_eq!(rows[1].to_json()["permissions"], Value::Null);
    }

    #[test]
    fn what_keyward_did_not_make_shows_as_drift() {
        let c = catalog();
        let s = spec("name: n\ndefaultPermissions: [GET]");
        let rows = encode(&s, &c).unwrap();
        type Tweak = (&'static str, fn(&mut Value));
        let tweaks: [Tweak; 8] = [
            ("presets on a row", |u| {
                u["policies"][0]["policy"]["permissions"][0]["presets"] =
                    json!({"status": "published"})
            }),
            ("a row on a system collection", |u| {
                u["policies"][0]["policy"]["permissions"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"id": 9, "collection": "directus_users", "action": "read", "fields": ["*"]}))
            }),
            ("reads of every status", |u| {
                u["policies"][0]["policy"]["permissions"][0]["permissions"] = Value::Null
            }),
            ("some fields", |u| {
                u["policies"][0]["policy"]["permissions"][1]["fields"] = json!(["name"])
            }),
            ("a role", |u| u["role"] = json!("r1")),
            ("suspended", |u| u["status"] = json!("suspended")),
            ("app access", |u| {
                u["policies"][0]["policy"]["app_access"] = json!(true)
            }),
            ("another policy", |u| {
                u["policies"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"id": "a2", "policy": {"id": "p2", "name": "Editors", "description": null}}))
            }),
        ];
        for (what, tweak) in tweaks {
            let mut u = user(&s, &rows);
            tweak(&mut u);
            let live = User::parse(&u).unwrap().live(&c);
            assert!(
                live.spec.labels.contains_key(LABEL_UNEXPRESSED),
                "{what}: {:?}",
                live.spec.labels
            );
        }
    }

    #[test]
    fn what_directus_cannot_hold_is_refused_with_its_field() {
        let c = catalog();
        let field = |y: &str| refused(PROVIDER, y, encode(&spec(y), &c));
        crate::providers::testkit::refuses_scopes_and_environments(field);
        assert_eq!(
            field("name: n\napiPermissions: [{api: authors, permissions: [GET, GET_ALL_DRAFTS]}]"),
            "apiPermissions[0].permissions[1]"
        );
        assert_eq!(
            field("name: n\napiPermissions: [{api: nope, permissions: [GET]}]"),
            "apiPermissions[0].api"
        );
        assert_eq!(
            field("name: n\nexpiresAt: 2030-01-01T00:00:00Z"),
            "expiresAfter"
        );
        let no_status = Catalog {
            collections: BTreeMap::from([("authors".into(), false)]),
        };
        let nothing = Catalog::default();
        let read = "name: n\nscopes: ['content:read']";
        assert_eq!(
            refused(PROVIDER, read, encode(&spec(read), &nothing)),
            "scopes[0]"
        );
        let drafts = "name: n\ndefaultPermissions: [GET, GET_ALL_DRAFTS]";
        assert_eq!(
            refused(PROVIDER, drafts, encode(&spec(drafts), &no_status)),
            "defaultPermissions[1]"
        );
    }

    fn row(collection: &str, action: &str, statuses: Option<&[&str]>) -> Row {
        Row {
            collection: collection.into(),
            action: action.into(),
            statuses: statuses.map(|s| s.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn each_right_becomes_its_row() {
        let c = catalog();
        let rows = |y: &str| encode(&spec(y), &c).unwrap();
        assert_eq!(
            rows("name: n\napiPermissions: [{api: authors, permissions: [POST, DELETE]}]"),
            [
                row("authors", "create", None),
                row("authors", "delete", None)
            ]
        );
        assert_eq!(
            rows("name: n\napiPermissions: [{api: authors, permissions: [PATCH]}]"),
            [row("authors", "update", None)]
        );
        // Drafts without GET grant no read.
        assert_eq!(
            rows("name: n\napiPermissions: [{api: articles, permissions: [GET_ALL_DRAFTS, POST]}]"),
            [row("articles", "create", None)]
        );
        assert_eq!(
            rows("name: n\napiPermissions: [{api: articles, permissions: [GET, GET_ALL_DRAFTS, GET_ALL_CLOSED]}]"),
            [row("articles", "read", Some(&["archived", "draft", "published"]))]
        );
    }

    #[test]
    fn rows_read_back_as_rights_only_when_keyward_could_have_made_them() {
        use ContentPermission::*;
        let c = catalog();
        let (per, notes) = rights_of_rows(
            &[
                row("articles", "read", Some(&["published", "draft"])),
                row("articles", "delete", None),
                row("authors", "read", None),
                row("authors", "update", None),
            ],
            &c,
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            per,
            BTreeMap::from([
                (
                    "articles".into(),
                    BTreeSet::from([Get, GetAllDrafts, Delete])
                ),
                ("authors".into(), BTreeSet::from([Get, Put, Patch])),
            ])
        );
        for (r, why) in [
            (
                row("authors", "read", Some(&["published"])),
                "a filter where there is no status",
            ),
            (
                row("articles", "read", Some(&["draft"])),
                "drafts without the published items",
            ),
            (
                row("articles", "read", Some(&["published", "review"])),
                "a status keyward does not know",
            ),
            (row("articles", "read", None), "items of every status"),
            (
                row("articles", "create", Some(&["published"])),
                "a filtered create",
            ),
            (row("directus_users", "read", None), "a system collection"),
        ] {
            let (per, notes) = rights_of_rows(std::slice::from_ref(&r), &c);
            assert!(
                per.is_empty() && notes.len() == 1,
                "{why}: {per:?} {notes:?}"
            );
        }
    }

    #[test]
    fn the_same_rights_everywhere_are_default_permissions() {
        use ContentPermission::*;
        let c = catalog();
        let same = BTreeMap::from([
            ("articles".into(), BTreeSet::from([Get])),
            ("authors".into(), BTreeSet::from([Get])),
        ]);
        assert_eq!(as_spec_rights(&same, &c), (vec![Get], vec![]));
        let one = BTreeMap::from([("authors".into(), BTreeSet::from([Post]))]);
        let (defaults, apis) = as_spec_rights(&one, &c);
        assert!(defaults.is_empty());
        assert_eq!(apis.len(), 1, "only the collection with rights: {apis:?}");
        assert_eq!(
            (apis[0].api.as_str(), apis[0].permissions.as_slice()),
            ("authors", &[Post][..])
        );
    }

    #[test]
    fn filters_and_ids_are_read_in_each_form_directus_writes() {
        let parse = |v: Value| Row::parse(&v);
        let base = json!({"collection": "articles", "action": "read", "fields": ["*"]});
        let with = |k: &str, v: Value| {
            let mut r = base.clone();
            r[k] = v;
            r
        };
        assert_eq!(
            parse(with("permissions", json!({}))).unwrap().statuses,
            None
        );
        assert_eq!(
            parse(with("permissions", json!({"status": {"_eq": "published"}})))
                .unwrap()
                .statuses,
            Some(BTreeSet::from(["published".to_owned()]))
        );
        assert!(parse(with("permissions", json!({"status": {"_neq": "draft"}}))).is_err());
        assert!(parse(with("permissions", json!({"status": {"_eq": 1}}))).is_err());
        assert!(parse(with("validation", json!({"title": {"_nnull": true}}))).is_err());
        assert!(
            parse(with("presets", json!({}))).is_ok(),
            "empty presets are none"
        );
        assert!(parse(json!({"collection": "articles"})).is_err());

        let user = |id: Value| User::parse(&json!({"id": id, "status": "active"}));
        assert_eq!(user(json!(7)).unwrap().id, "7");
        assert_eq!(user(json!("u1")).unwrap().id, "u1");
        assert!(user(Value::Null).is_err());
        assert!(user(json!({"id": 1})).is_err());
    }

    #[test]
    fn a_user_is_named_by_keywards_policy_and_a_second_keyward_policy_is_foreign() {
        let c = catalog();
        let s = spec("name: shop.site.reader\ndefaultPermissions: [GET]");
        let mut u = user(&s, &encode(&s, &c).unwrap());
        // Directus cuts first names: the policy's name is the key's.
        u["first_name"] = json!("shop.site.rea");
        let mut second = u["policies"][0].clone();
        second["id"] = json!("a2");
        second["policy"]["name"] = json!("copied");
        u["policies"].as_array_mut().unwrap().push(second);
        let parsed = User::parse(&u).unwrap();
        assert_eq!(
            parsed.policy.as_ref().map(|p| p.name.as_str()),
            Some("shop.site.reader")
        );
        assert_eq!(parsed.other_access, [(json!("a2"), "copied".to_owned())]);
        assert_eq!(parsed.live(&c).spec.name, "shop.site.reader");

        // The policy's name is the key's; without it, the first name.
        u["policies"][0]["policy"]["name"] = json!("");
        u["first_name"] = json!("from-the-user");
        assert_eq!(User::parse(&u).unwrap().live(&c).spec.name, "from-the-user");

        let long = "n".repeat(FIRST_NAME_MAX + 10);
        assert_eq!(first_name(&long), "n".repeat(FIRST_NAME_MAX));
        assert_eq!(first_name("short"), "short");
    }
}
