//! keyward's key model <-> DatoCMS API tokens and roles, without I/O.
//!
//! - A key is an API token with a role of its own. The token's flags say which APIs it may
//!   call (`can_access_cda` for reads, `can_access_cda_preview` for drafts, `can_access_cma`
//!   for writes); the role says what it may do there. DatoCMS grants the intersection.
//! - An API is a model (an item type, by its `api_key`). GET -> `read`, POST -> `create`,
//!   PUT and PATCH -> `update` (one right: declaring one without the other is refused),
//!   DELETE -> `delete`.
//! - Default permissions are role entries without a model (`item_type: null`: every model, new
//!   ones too). An API's own list replaces them for that model: `positive_*` entries for what
//!   it adds, `negative_*` entries for what it takes away.
//! - Every entry names an environment: a key for every environment has entries in each one the
//!   project has; `environments` limits them.
//! - Drafts are token-wide (`can_access_cda_preview`), and a token that writes reads drafts
//!   through the Content Management API: GET_ALL_DRAFTS must go with every GET or with none,
//!   and with every GET of a key that writes. GET_ALL_CLOSED has no equivalent.
//! - Tokens have a name only: keyward's ownership tag ends the token's name; the role's name
//!   is the key's name, a mark, and the key's description.
//!
//! The canonical form of a spec is what DatoCMS will report back: the rights of the role and
//! flags `encode` makes, read back by `Grants::rights`.

use super::capabilities::CAPABILITIES;
use crate::model::{normalize, ApiPermission, ContentPermission, KeyKind, KeySpec};
use crate::providers::ownership_tag::{self, Stamps, TAG_OPEN};
use crate::providers::{unknown_api, LiveKey, ProviderError};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const PROVIDER: &str = "datocms";
/// Marks a live key that holds rights keyward cannot express, so the plan shows it as drift.
pub const LABEL_UNEXPRESSED: &str = "datocms.keyward.dev/unexpressed";
/// What follows the key's name in the name of a role keyward made (only such roles are ever
/// changed or deleted).
pub const ROLE_MARK: &str = " (keyward key)";
/// A role's flags for project settings: keyward's roles hold none of them.
pub const ROLE_FLAGS: [&str; 20] = [
    "can_edit_favicon",
    "can_edit_site",
    "can_edit_schema",
    "can_manage_menu",
    "can_edit_environment",
    "can_promote_environments",
    "can_manage_users",
    "can_manage_shared_filters",
    "can_manage_search_indexes",
    "can_manage_upload_collections",
    "can_manage_build_triggers",
    "can_manage_webhooks",
    "can_manage_environments",
    "can_manage_sso",
    "can_access_audit_log",
    "can_manage_workflows",
    "can_manage_access_tokens",
    "can_perform_site_search",
    "can_access_build_events_log",
    "can_access_search_index_events_log",
];
/// A role's rights on things other than records: keyward's roles hold none of them.
const OTHER_RIGHTS: [&str; 6] = [
    "positive_upload_permissions",
    "negative_upload_permissions",
    "positive_build_trigger_permissions",
    "negative_build_trigger_permissions",
    "positive_search_index_permissions",
    "negative_search_index_permissions",
];

/// A refusal of this provider's.
pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> ProviderError {
    ProviderError::unsupported(PROVIDER, field, reason)
}

/// The project's environments and the models of its primary environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    pub environments: BTreeSet<String>,
    /// Model `api_key` -> item type id.
    pub models: BTreeMap<String, String>,
}

impl Catalog {
    /// From the answers of `GET /environments` and `GET /item-types` (block models, which
    /// no key reads on its own, left out).
    pub fn from_listings(environments: &Value, item_types: &Value) -> Result<Catalog, String> {
        let list = |v: &Value, what: &str| {
            v.get("data")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| format!("the {what} listing has no data array"))
        };
        let mut c = Catalog::default();
        for e in list(environments, "environment")? {
            let id = e
                .get("id")
                .and_then(Value::as_str)
                .ok_or("an environment has no id")?;
            c.environments.insert(id.to_owned());
        }
        for t in list(item_types, "model")? {
            let id = t
                .get("id")
                .and_then(Value::as_str)
                .ok_or("a model has no id")?;
            let attrs = t.get("attributes").unwrap_or(&Value::Null);
            if attrs.get("modular_block") == Some(&Value::Bool(true)) {
                continue;
            }
            let api = attrs
                .get("api_key")
                .and_then(Value::as_str)
                .ok_or("a model has no api_key")?;
            c.models.insert(api.to_owned(), id.to_owned());
        }
        Ok(c)
    }

    fn names(&self) -> String {
        let v: Vec<&str> = self.models.keys().map(String::as_str).collect();
        v.join(", ")
    }
}

/// A role's action on records that keyward grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    fn of(p: ContentPermission) -> Option<Action> {
        use ContentPermission::*;
        match p {
            Get => Some(Self::Read),
            Post => Some(Self::Create),
            Put | Patch => Some(Self::Update),
            Delete => Some(Self::Delete),
            GetAllDrafts | GetAllClosed => None,
        }
    }

    /// The keyward rights this action is.
    fn grants(self) -> &'static [ContentPermission] {
        use ContentPermission::*;
        match self {
            Self::Read => &[Get],
            Self::Create => &[Post],
            Self::Update => &[Put, Patch],
            Self::Delete => &[Delete],
        }
    }
}

/// One entry of a role's `*_item_type_permissions`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub action: Action,
    pub environment: String,
    /// The model's id; `None`: every model.
    pub item_type: Option<String>,
}

impl Entry {
    /// The entry as DatoCMS takes it: each action with the fields its schema requires.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "action": self.action.as_str(),
            "environment": self.environment,
            "item_type": self.item_type,
        });
        if self.action != Action::Create {
            v["on_creator"] = json!("anyone");
        }
        if matches!(self.action, Action::Create | Action::Update) {
            v["localization_scope"] = json!("all");
        }
        v
    }

    /// An entry keyward could have made, or what in it keyward cannot express.
    pub fn parse(v: &Value) -> Result<Entry, String> {
        let text = |f: &str| v.get(f).and_then(Value::as_str);
        let action = match text("action") {
            Some("read") => Action::Read,
            Some("create") => Action::Create,
            Some("update") => Action::Update,
            Some("delete") => Action::Delete,
            other => return Err(format!("the right '{}'", other.unwrap_or("?"))),
        };
        let environment = text("environment").unwrap_or_default().to_owned();
        let limited = ["workflow", "on_stage", "to_stage", "locale"]
            .into_iter()
            .any(|f| v.get(f).is_some_and(|x| !x.is_null()))
            || text("on_creator").is_some_and(|c| c != "anyone")
            || text("localization_scope").is_some_and(|s| s != "all");
        if limited {
            return Err(format!(
                "{} in {environment} limited to a stage, creator, locale or workflow",
                action.as_str()
            ));
        }
        Ok(Entry {
            action,
            environment,
            item_type: text("item_type").map(str::to_owned),
        })
    }
}

/// What a token and its role grant, as keyward writes and reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub positive: Vec<Entry>,
    pub negative: Vec<Entry>,
    pub cda: bool,
    pub cda_preview: bool,
    pub cma: bool,
}

/// Rights per model, in one environment.
type Rights = BTreeMap<String, BTreeSet<ContentPermission>>;

/// The flags a token needs for `rights`: reads through the Content Delivery API, drafts in its
/// preview, writes through the Content Management API.
fn flags(rights: &Rights) -> (bool, bool, bool) {
    let any = |p: &[ContentPermission]| rights.values().any(|s| p.iter().any(|x| s.contains(x)));
    use ContentPermission::*;
    (
        any(&[Get]),
        any(&[GetAllDrafts]),
        any(&[Post, Put, Patch, Delete]),
    )
}

impl Grants {
    /// The rights these grants give, per environment and model, and notes of what keyward
    /// cannot express (flags that differ from what the rights need).
    pub fn rights(&self, catalog: &Catalog) -> (BTreeMap<String, Rights>, Vec<String>) {
        let matches = |e: &Entry, env: &str, id: &str| {
            e.environment == env && e.item_type.as_deref().is_none_or(|t| t == id)
        };
        let mut out = BTreeMap::new();
        for env in &catalog.environments {
            let mut rights = Rights::new();
            for (api, id) in &catalog.models {
                let denied: BTreeSet<Action> = self
                    .negative
                    .iter()
                    .filter(|e| matches(e, env, id))
                    .map(|e| e.action)
                    .collect();
                let mut set = BTreeSet::new();
                for e in self.positive.iter().filter(|e| matches(e, env, id)) {
                    if !denied.contains(&e.action) {
                        set.extend(e.action.grants().iter().copied());
                    }
                }
                // Drafts come with reads: in the preview, or through the management API.
                if set.contains(&ContentPermission::Get) && (self.cda_preview || self.cma) {
                    set.insert(ContentPermission::GetAllDrafts);
                }
                if !set.is_empty() {
                    rights.insert(api.clone(), set);
                }
            }
            out.insert(env.clone(), rights);
        }
        let mut notes = Vec::new();
        let mut all = Rights::new();
        for (api, set) in out.values().flatten() {
            all.entry(api.clone())
                .or_default()
                .extend(set.iter().copied());
        }
        if (self.cda, self.cda_preview, self.cma) != flags(&all) {
            notes.push("the token's API access differs from what its role's rights need".into());
        }
        (out, notes)
    }
}

/// The per-API rights and environments of `per_env` as keyward states them: the environments
/// that hold rights (none listed: all of them), and the same rights everywhere as defaults.
fn as_spec_rights(
    per_env: &BTreeMap<String, Rights>,
    catalog: &Catalog,
    notes: &mut Vec<String>,
) -> (Vec<ContentPermission>, Vec<ApiPermission>, Vec<String>) {
    let held: Vec<(&String, &Rights)> = per_env.iter().filter(|(_, r)| !r.is_empty()).collect();
    let Some((_, first)) = held.first() else {
        return (Vec::new(), Vec::new(), Vec::new());
    };
    if held.iter().any(|(_, r)| r != first) {
        notes.push("its rights differ between environments".into());
    }
    let environments = if held.len() == catalog.environments.len() {
        Vec::new()
    } else {
        held.iter().map(|(e, _)| (*e).clone()).collect()
    };
    let empty = BTreeSet::new();
    let of = |api: &String| first.get(api).unwrap_or(&empty);
    let one = catalog.models.keys().next().map(of).unwrap_or(&empty);
    if catalog.models.keys().all(|m| of(m) == one) {
        return (one.iter().copied().collect(), Vec::new(), environments);
    }
    let apis = catalog
        .models
        .keys()
        .filter(|m| !of(m).is_empty())
        .map(|m| ApiPermission {
            api: m.clone(),
            permissions: of(m).iter().copied().collect(),
        })
        .collect();
    (Vec::new(), apis, environments)
}

/// Each right list of a spec with its field path: the defaults, then each API's.
fn right_lists(spec: &KeySpec) -> impl Iterator<Item = (String, &[ContentPermission])> {
    std::iter::once((
        "defaultPermissions".to_owned(),
        spec.default_permissions.as_slice(),
    ))
    .chain(spec.api_permissions.iter().enumerate().map(|(i, a)| {
        (
            format!("apiPermissions[{i}].permissions"),
            a.permissions.as_slice(),
        )
    }))
}

/// The refusals of rights DatoCMS cannot hold as declared: unknown models and environments,
/// PUT without PATCH, closed records, and drafts on some reads only.
fn check_rights(spec: &KeySpec, catalog: &Catalog) -> Result<(), ProviderError> {
    use ContentPermission::*;
    if let Some((field, api)) = unknown_api(spec, |a| catalog.models.contains_key(a)) {
        let reason = format!(
            "this DatoCMS project has no model '{api}' (its models: {})",
            catalog.names()
        );
        return Err(unsupported(field, reason));
    }
    for (i, env) in spec.environments.iter().enumerate() {
        if !catalog.environments.contains(env) {
            let have: Vec<&str> = catalog.environments.iter().map(String::as_str).collect();
            return Err(unsupported(
                format!("environments[{i}]"),
                format!(
                    "this DatoCMS project has no environment '{env}' (it has: {})",
                    have.join(", ")
                ),
            ));
        }
    }
    let scoped = spec.scope_grants();
    for (path, perms) in right_lists(spec) {
        for (j, p) in perms.iter().enumerate() {
            let other = match p {
                Put => Patch,
                Patch => Put,
                GetAllClosed => {
                    return Err(unsupported(
                        format!("{path}[{j}]"),
                        "DatoCMS has no closed (expired) records a key could be granted apart",
                    ))
                }
                _ => continue,
            };
            if !perms.contains(&other) && !scoped.contains(&other) {
                return Err(unsupported(
                    format!("{path}[{j}]"),
                    format!("DatoCMS has one update right for PUT and PATCH: declare {} too, or neither", other.as_str()),
                ));
            }
        }
    }
    check_drafts(spec, catalog)
}

/// Drafts are token-wide, and a token that writes reads drafts: GET_ALL_DRAFTS goes with every
/// GET or none, and with every GET of a key that writes.
fn check_drafts(spec: &KeySpec, catalog: &Catalog) -> Result<(), ProviderError> {
    use ContentPermission::*;
    let scoped = spec.scope_grants();
    let rights: Rights = catalog
        .models
        .keys()
        .map(|m| {
            let mut s: BTreeSet<_> = spec.permissions_for(m).iter().copied().collect();
            s.extend(scoped.iter().copied());
            (m.clone(), s)
        })
        .collect();
    let (_, drafts, writes) = flags(&rights);
    if !drafts && !writes {
        return Ok(());
    }
    let reason = if drafts {
        "DatoCMS grants drafts to a whole token (can_access_cda_preview): declare GET_ALL_DRAFTS wherever GET is, or nowhere"
    } else {
        "a DatoCMS token that writes uses the Content Management API, where reading a model shows its drafts: declare GET_ALL_DRAFTS wherever GET is"
    };
    // The defaults apply where an API has no list of its own.
    let applies = |path: &str| {
        path != "defaultPermissions" || spec.api_permissions.len() < catalog.models.len()
    };
    for (path, perms) in right_lists(spec) {
        let get = perms.contains(&Get) || scoped.contains(&Get);
        let with = perms.contains(&GetAllDrafts) || scoped.contains(&GetAllDrafts);
        if get && !with && applies(&path) {
            let j = perms.iter().position(|p| *p == Get);
            let field = match j {
                Some(j) => format!("{path}[{j}]"),
                None => "scopes".to_owned(),
            };
            return Err(unsupported(field, reason));
        }
    }
    Ok(())
}

/// Translates a spec into a token's flags and its role's entries, or says which field
/// DatoCMS cannot hold.
pub fn encode(spec: &KeySpec, catalog: &Catalog) -> Result<Grants, ProviderError> {
    if let Some((field, reason)) = CAPABILITIES.key_refusals(spec).into_iter().next() {
        return Err(unsupported(field, reason));
    }
    if spec.expires_at.is_some() {
        return Err(unsupported(
            "expiresAfter",
            "a DatoCMS API token never expires",
        ));
    }
    check_rights(spec, catalog)?;
    let scoped = spec.scope_grants();
    let actions = |perms: &[ContentPermission]| -> BTreeSet<Action> {
        perms
            .iter()
            .chain(scoped.iter())
            .filter_map(|p| Action::of(*p))
            .collect()
    };
    let defaults = actions(&spec.default_permissions);
    let environments: Vec<&String> = if spec.environments.is_empty() {
        catalog.environments.iter().collect()
    } else {
        spec.environments.iter().collect()
    };
    let mut g = Grants::default();
    for env in environments {
        let entry = |action, item_type: Option<&String>| Entry {
            action,
            environment: env.clone(),
            item_type: item_type.cloned(),
        };
        g.positive.extend(defaults.iter().map(|a| entry(*a, None)));
        for a in &spec.api_permissions {
            let id = catalog.models.get(&a.api);
            let own = actions(&a.permissions);
            g.positive
                .extend(own.difference(&defaults).map(|x| entry(*x, id)));
            g.negative
                .extend(defaults.difference(&own).map(|x| entry(*x, id)));
        }
    }
    let rights: Rights = catalog
        .models
        .keys()
        .map(|m| {
            let mut s: BTreeSet<_> = spec.permissions_for(m).iter().copied().collect();
            s.extend(scoped.iter().copied());
            (m.clone(), s)
        })
        .collect();
    (g.cda, g.cda_preview, g.cma) = flags(&rights);
    Ok(g)
}

/// The spec as DatoCMS will report it back, or why DatoCMS cannot hold it.
pub fn canonical(spec: &KeySpec, catalog: &Catalog) -> Result<KeySpec, ProviderError> {
    let g = encode(spec, catalog)?;
    let (per_env, mut notes) = g.rights(catalog);
    let (d, a, environments) = as_spec_rights(&per_env, catalog, &mut notes);
    let mut s = spec.held_as_rights(d, a);
    s.environments = environments;
    Ok(normalize(s))
}

/// The token's name: the key's name, then keyward's ownership tag.
pub fn token_name(spec: &KeySpec, stamps: Stamps) -> String {
    format!(
        "{} {}",
        spec.name,
        ownership_tag::compose(spec, Some(stamps))
    )
}

/// The role's name: the key's name, keyward's mark, and the key's description.
pub fn role_name(spec: &KeySpec) -> String {
    match spec.description.trim() {
        "" => format!("{}{ROLE_MARK}", spec.name),
        d => format!("{}{ROLE_MARK}: {d}", spec.name),
    }
}

/// The role's attributes for `name` and `g`: no project rights, the entries of `g`.
pub fn role_attributes(name: &str, g: &Grants) -> Value {
    let mut a = Map::new();
    a.insert("name".into(), json!(name));
    for f in ROLE_FLAGS {
        a.insert(f.into(), json!(false));
    }
    a.insert("environments_access".into(), json!("all"));
    let list = |v: &[Entry]| Value::Array(v.iter().map(Entry::to_json).collect());
    a.insert("positive_item_type_permissions".into(), list(&g.positive));
    a.insert("negative_item_type_permissions".into(), list(&g.negative));
    for f in OTHER_RIGHTS {
        a.insert(f.into(), json!([]));
    }
    Value::Object(a)
}

/// An API token as keyward reads it (its value is never read).
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: Option<String>,
    pub cda: bool,
    pub cda_preview: bool,
    pub cma: bool,
}

impl Token {
    pub fn parse(v: &Value) -> Result<Token, String> {
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or("a token has no id")?;
        let a = v.get("attributes").ok_or("a token has no attributes")?;
        let flag = |f: &str| a.get(f) == Some(&Value::Bool(true));
        Ok(Token {
            id: id.to_owned(),
            name: a
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            role: v
                .pointer("/relationships/role/data/id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            cda: flag("can_access_cda"),
            cda_preview: flag("can_access_cda_preview"),
            cma: flag("can_access_cma"),
        })
    }

    /// The key's name and keyward's tag, if the name ends with one.
    pub fn tag(&self) -> Option<(&str, ownership_tag::Tag)> {
        let at = self.name.rfind(TAG_OPEN)?;
        let tag = ownership_tag::parse(&self.name[at..])?;
        Some((self.name[..at].trim_end(), tag))
    }
}

/// A role as keyward reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub positive: Vec<Result<Entry, String>>,
    pub negative: Vec<Result<Entry, String>>,
    /// What else the role grants (project rights, other roles' rights).
    pub notes: Vec<String>,
}

impl Role {
    pub fn parse(v: &Value) -> Result<Role, String> {
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or("a role has no id")?;
        let a = v.get("attributes").ok_or("a role has no attributes")?;
        let entries = |f: &str| -> Vec<Result<Entry, String>> {
            a.get(f)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(Entry::parse)
                .collect()
        };
        let mut notes: Vec<String> = ROLE_FLAGS
            .iter()
            .filter(|f| a.get(**f) == Some(&Value::Bool(true)))
            .map(|f| format!("the role has {f}"))
            .collect();
        notes.extend(
            OTHER_RIGHTS
                .iter()
                .filter(|f| {
                    a.get(**f)
                        .and_then(Value::as_array)
                        .is_some_and(|l| !l.is_empty())
                })
                .map(|f| format!("the role has {f}")),
        );
        if a.get("environments_access").and_then(Value::as_str) != Some("all") {
            notes.push("the role's environments access is not 'all'".into());
        }
        let inherits = v
            .pointer("/relationships/inherits_permissions_from/data")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
        if inherits {
            notes.push("the role inherits another role's rights".into());
        }
        Ok(Role {
            id: id.to_owned(),
            name: a
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            positive: entries("positive_item_type_permissions"),
            negative: entries("negative_item_type_permissions"),
            notes,
        })
    }

    /// Whether keyward made this role (for the key named `name`, if given).
    pub fn is_keywards(&self, name: Option<&str>) -> bool {
        match name {
            Some(n) => self
                .name
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with(ROLE_MARK)),
            None => self.name.contains(ROLE_MARK),
        }
    }

    /// Whether the role is `name` with exactly the entries of `g` and nothing else.
    pub fn holds(&self, name: &str, g: &Grants) -> bool {
        let sorted = |v: &[Result<Entry, String>]| -> Option<Vec<Entry>> {
            let mut out: Vec<Entry> = v.iter().cloned().collect::<Result<_, _>>().ok()?;
            out.sort();
            Some(out)
        };
        let mut want = (g.positive.clone(), g.negative.clone());
        want.0.sort();
        want.1.sort();
        self.name == name
            && self.notes.is_empty()
            && sorted(&self.positive) == Some(want.0)
            && sorted(&self.negative) == Some(want.1)
    }

    /// The key's description from the role's name, if the role is the key's.
    fn description(&self, key: &str) -> Option<String> {
        let rest = self.name.strip_prefix(key)?.strip_prefix(ROLE_MARK)?;
        match rest.strip_prefix(": ") {
            Some(d) => Some(d.trim().to_owned()),
            None => rest.is_empty().then(String::new),
        }
    }
}

/// A tagged token with its role (`None`: it has none, or another's) as a live key.
pub fn live(token: &Token, role: Option<&Role>, catalog: &Catalog) -> Option<LiveKey> {
    let (name, tag) = token.tag()?;
    let mut notes = Vec::new();
    let mut g = Grants {
        cda: token.cda,
        cda_preview: token.cda_preview,
        cma: token.cma,
        ..Grants::default()
    };
    let description = match role.and_then(|r| r.description(name)) {
        Some(d) => d,
        None => {
            notes.push("keyward's role of the token is gone or renamed".to_owned());
            String::new()
        }
    };
    if let Some(r) = role {
        notes.extend(r.notes.iter().cloned());
        for (from, to) in [
            (&r.positive, &mut g.positive),
            (&r.negative, &mut g.negative),
        ] {
            for e in from {
                match e {
                    Ok(e) => to.push(e.clone()),
                    Err(n) => notes.push(n.clone()),
                }
            }
        }
    }
    let (per_env, more) = g.rights(catalog);
    notes.extend(more);
    let (default_permissions, api_permissions, environments) =
        as_spec_rights(&per_env, catalog, &mut notes);
    let mut labels = tag.labels;
    crate::providers::mark_unexpressed(&mut labels, LABEL_UNEXPRESSED, &notes);
    let stamps = tag.stamps.unwrap_or(Stamps {
        created: jiff::Timestamp::UNIX_EPOCH,
        issued: None,
    });
    Some(LiveKey {
        id: token.id.clone(),
        spec: normalize(KeySpec {
            name: name.to_owned(),
            description,
            kind: KeyKind::Content,
            key_type: tag.key_type,
            default_permissions,
            api_permissions,
            environments,
            labels,
            ..KeySpec::default()
        }),
        created_at: stamps.created,
        rotated_at: stamps.issued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testkit::{per_api, reads_back_as_canonical, refused, spec};
    use ContentPermission::*;

    fn catalog() -> Catalog {
        Catalog {
            environments: ["main".to_owned(), "staging".to_owned()].into(),
            models: [("articles", "m1"), ("authors", "m2"), ("contact", "m3")]
                .map(|(a, i)| (a.to_owned(), i.to_owned()))
                .into(),
        }
    }

    /// `s` as DatoCMS stores it (a token and a role from `encode`), read back.
    fn read_back(s: &KeySpec) -> KeySpec {
        let g = encode(s, &catalog()).expect("encodes");
        let stamps = Stamps {
            created: jiff::Timestamp::UNIX_EPOCH,
            issued: None,
        };
        let token = Token {
            id: "t1".into(),
            name: token_name(s, stamps),
            role: Some("r1".into()),
            cda: g.cda,
            cda_preview: g.cda_preview,
            cma: g.cma,
        };
        let role = Role::parse(&json!({
            "id": "r1",
            "attributes": role_attributes(&role_name(s), &g),
        }))
        .expect("role");
        live(&token, Some(&role), &catalog()).expect("tagged").spec
    }

    #[test]
    fn each_spec_reads_back_as_its_canonical_form() {
        reads_back_as_canonical(
            LABEL_UNEXPRESSED,
            &[
                "name: n\ndefaultPermissions: [GET]",
                "name: n\ndescription: the site\ntype: public\ndefaultPermissions: [GET, GET_ALL_DRAFTS]\nenvironments: [staging]",
                "name: n\ndefaultPermissions: [GET, GET_ALL_DRAFTS]\napiPermissions: [{api: contact, permissions: [POST]}]",
                "name: n\napiPermissions: [{api: articles, permissions: [GET, GET_ALL_DRAFTS, PUT, PATCH]}, {api: authors, permissions: [GET, GET_ALL_DRAFTS]}]",
                "name: n\nscopes: ['content:write']",
                "name: n\ndefaultPermissions: [GET]\nenvironments: [main, staging]",
            ],
            |y| spec(y, "ns.p"),
            |s| canonical(s, &catalog()).expect("canonical"),
            read_back,
        );
    }

    #[test]
    fn an_apis_list_replaces_the_defaults_with_negative_entries() {
        let s = spec(
            "name: n\ndefaultPermissions: [GET, GET_ALL_DRAFTS]\napiPermissions: [{api: contact, permissions: [POST]}]",
            "ns.p",
        );
        let g = encode(&s, &catalog()).expect("encodes");
        let main: Vec<&Entry> = g
            .negative
            .iter()
            .filter(|e| e.environment == "main")
            .collect();
        assert_eq!(main.len(), 1);
        assert_eq!(
            (main[0].action, main[0].item_type.as_deref()),
            (Action::Read, Some("m3"))
        );
        assert!((g.cda, g.cda_preview, g.cma) == (true, true, true));
        let back = read_back(&s);
        assert_eq!(
            per_api(&back),
            [
                ("articles", vec![Get, GetAllDrafts]),
                ("authors", vec![Get, GetAllDrafts]),
                ("contact", vec![Post])
            ]
        );
        assert!(back.environments.is_empty(), "every environment");
    }

    #[test]
    fn what_datocms_cannot_hold_is_refused_by_field() {
        let field = |y: &str| refused(PROVIDER, y, encode(&spec(y, "ns.p"), &catalog()));
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET, PATCH]"),
            "defaultPermissions[1]"
        );
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET, GET_ALL_CLOSED]"),
            "defaultPermissions[1]"
        );
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET, DELETE]"),
            "defaultPermissions[0]"
        );
        assert_eq!(
            field("name: n\napiPermissions: [{api: articles, permissions: [GET, GET_ALL_DRAFTS]}, {api: authors, permissions: [GET]}]"),
            "apiPermissions[1].permissions[0]"
        );
        assert_eq!(
            field("name: n\napiPermissions: [{api: pages, permissions: [GET]}]"),
            "apiPermissions[0].api"
        );
        assert_eq!(
            field("name: n\ndefaultPermissions: [GET]\nenvironments: [prod]"),
            "environments[0]"
        );
        assert_eq!(field("name: n\nscopes: ['cache:purge']"), "scopes[0]");
        // A write-only key reads nothing, so it needs no drafts.
        assert!(encode(
            &spec("name: n\nscopes: ['content:write']", "ns.p"),
            &catalog()
        )
        .is_ok());
    }

    #[test]
    fn rights_keyward_does_not_grant_show_as_drift() {
        let s = spec("name: n\ndefaultPermissions: [GET]", "ns.p");
        let g = encode(&s, &catalog()).expect("encodes");
        let mut attrs = role_attributes(&role_name(&s), &g);
        attrs["can_manage_webhooks"] = json!(true);
        attrs["positive_item_type_permissions"]
            .as_array_mut()
            .expect("list")
            .push(json!({"action": "publish", "environment": "main", "on_creator": "anyone", "localization_scope": "all"}));
        let role = Role::parse(&json!({"id": "r1", "attributes": attrs})).expect("role");
        let token = Token {
            id: "t1".into(),
            name: token_name(
                &s,
                Stamps {
                    created: jiff::Timestamp::UNIX_EPOCH,
                    issued: None,
                },
            ),
            role: Some("r1".into()),
            cda: true,
            cda_preview: false,
            cma: false,
        };
        let key = live(&token, Some(&role), &catalog()).expect("tagged");
        let note = &key.spec.labels[LABEL_UNEXPRESSED];
        assert!(
            note.contains("can_manage_webhooks") && note.contains("publish"),
            "{note}"
        );
        let foreign = Token {
            name: "Zapier".into(),
            ..token
        };
        assert!(
            live(&foreign, Some(&role), &catalog()).is_none(),
            "not keyward's"
        );
    }
}
