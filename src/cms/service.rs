//! The reference CMS's domain: keys, APIs, settings, members and content, kept in memory and
//! written through to SQLite. Writers are serialized by the database mutex; each write commits to
//! SQLite first and only then changes memory, so what readers see is always durable.

use super::content::{search_matches, Entry, Filter};
use super::error::CmsError;
use super::keys::KeyRecord;
use super::secret::{new_key_id, random_token, RawKey};
use super::store::{DocTable, Store, StoreError};
use super::verifier::{KeyEntry, StoredHash, Verifier};
use crate::model::{
    check_origin, valid_slug, ApiPermission, ContentOp, ContentPermission, KeySpec,
    ManagementPermission, Plan, Scope, SpecError,
};
use chrono::{DateTime, Duration, Utc};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// A project member; personal keys inherit the member's role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

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

/// Fields a `PATCH /v1/keys/{id}` may change; absent fields stay as they are.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub default_permissions: Option<Vec<ContentPermission>>,
    pub api_permissions: Option<Vec<ApiPermission>>,
    pub scopes: Option<Vec<Scope>>,
    pub environments: Option<Vec<String>>,
    pub management_permissions: Option<Vec<ManagementPermission>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
pub struct ApiInfo {
    pub created_at: DateTime<Utc>,
    pub public_ops: BTreeSet<ContentOp>,
}

#[derive(Default)]
struct State {
    apis: BTreeMap<String, ApiInfo>,
    /// (environment, api) -> entries by id.
    entries: HashMap<(String, String), BTreeMap<String, Entry>>,
    cors: Vec<String>,
    members: BTreeMap<String, Member>,
    roles: BTreeMap<String, Role>,
}

/// How an entry is written: as the published version, or as a (newer) draft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAs {
    Published,
    Draft,
}

/// What a list request asks for, after authorization decided what it may see.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub include_drafts: bool,
    pub include_closed: bool,
    pub filter: Filter,
    pub q: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// Longest grace period a regenerate may keep the old value valid.
const MAX_GRACE: Duration = Duration::days(30);
const CORS_SETTING: &str = "cors";

pub struct Service {
    db: Mutex<Store>,
    state: RwLock<State>,
    pub verifier: Verifier,
    plan: Option<Plan>,
}

fn parse_ops(json: &str) -> BTreeSet<ContentOp> {
    serde_json::from_str(json).unwrap_or_default()
}

impl Service {
    /// Opens (or creates) the service's database under `dir` and loads it.
    pub fn open(dir: &Path, plan: Option<Plan>) -> Result<Service, StoreError> {
        let store = Store::open(dir)?;
        let verifier = Verifier::new();
        for k in store.keys()? {
            verifier.upsert(KeyEntry::new(k.record, k.hashes));
        }
        let mut state = State::default();
        for (name, created_at, ops) in store.apis()? {
            state.apis.insert(
                name,
                ApiInfo {
                    created_at,
                    public_ops: parse_ops(&ops),
                },
            );
        }
        for (env, api, entry) in store.entries()? {
            state
                .entries
                .entry((env, api))
                .or_default()
                .insert(entry.id.clone(), entry);
        }
        state.cors = store.setting(CORS_SETTING)?.unwrap_or_default();
        for m in store.docs::<Member>(DocTable::Members)? {
            state.members.insert(m.name.clone(), m);
        }
        for r in store.docs::<Role>(DocTable::Roles)? {
            state.roles.insert(r.name.clone(), r);
        }
        Ok(Service {
            db: Mutex::new(store),
            state: RwLock::new(state),
            verifier,
            plan,
        })
    }

    pub fn plan(&self) -> Option<Plan> {
        self.plan
    }

    // ---- keys ----------------------------------------------------------------------------

    fn check_apis_exist(&self, apis: &[ApiPermission]) -> Result<(), CmsError> {
        let st = self.state.read();
        for (i, ap) in apis.iter().enumerate() {
            if !st.apis.contains_key(&ap.api) {
                return Err(SpecError::new(
                    format!("apiPermissions[{i}].api"),
                    format!(
                        "there is no API named '{}'; create it with PUT /v1/apis/{}",
                        ap.api, ap.api
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    /// Creates a key; the raw value is returned here and nowhere else.
    pub fn create_key(&self, spec: KeySpec) -> Result<(KeyRecord, RawKey), CmsError> {
        let now = Utc::now();
        spec.validate(now)?;
        self.check_apis_exist(&spec.api_permissions)?;
        let id = new_key_id();
        let raw = RawKey::generate(&id);
        // Argon2id is slow on purpose: hash before taking the writers' lock.
        let hashes = vec![StoredHash {
            phc: raw.hash(),
            valid_until: None,
        }];
        let mut spec = spec;
        spec.expires_at = Some(
            spec.expires_at
                .unwrap_or(now + crate::model::expiry_rules(spec.kind).default),
        );
        let record = KeyRecord {
            id,
            spec,
            created_at: now,
            updated_at: now,
            rotated_at: None,
            previous_valid_until: None,
        };
        let mut db = self.db.lock();
        if let Some(plan) = self.plan {
            let count = self.verifier.len();
            if count >= plan.key_limit() {
                return Err(CmsError::PlanLimit(format!(
                    "the {} plan allows {} API key(s) and {} exist; revoke one or change the plan",
                    plan.as_str(),
                    plan.key_limit(),
                    count
                )));
            }
        }
        if self.verifier.name_taken(&record.spec.name) {
            return Err(CmsError::Conflict(format!(
                "a key named '{}' already exists",
                record.spec.name
            )));
        }
        if let Some(owner) = &record.spec.owner {
            if !self.state.read().members.contains_key(owner) {
                return Err(
                    SpecError::new("owner", format!("there is no member named '{owner}'")).into(),
                );
            }
            if self.verifier.personal_key_of(owner).is_some() {
                return Err(CmsError::Conflict(format!(
                    "member '{owner}' already has a personal key"
                )));
            }
        }
        db.atomically(|s| s.put_key(&record, &hashes))?;
        self.verifier.upsert(KeyEntry::new(record.clone(), hashes));
        drop(db);
        tracing::info!(key_id = %record.id, name = %record.spec.name, kind = record.spec.kind.as_str(), "key created");
        Ok((record, raw))
    }

    pub fn list_keys(&self) -> Vec<KeyRecord> {
        self.verifier.records()
    }

    pub fn get_key(&self, id: &str) -> Result<KeyRecord, CmsError> {
        self.verifier
            .get(id)
            .map(|e| e.record.clone())
            .ok_or_else(|| CmsError::NotFound(format!("there is no key with id '{id}'")))
    }

    pub fn patch_key(&self, id: &str, patch: KeyPatch) -> Result<KeyRecord, CmsError> {
        let db = self.db.lock();
        let entry = self
            .verifier
            .get(id)
            .ok_or_else(|| CmsError::NotFound(format!("there is no key with id '{id}'")))?;
        let mut record = entry.record.clone();
        if let Some(name) = &patch.name {
            if *name != record.spec.name && self.verifier.name_taken(name) {
                return Err(CmsError::Conflict(format!(
                    "a key named '{name}' already exists"
                )));
            }
        }
        let s = &mut record.spec;
        if let Some(v) = patch.name {
            s.name = v;
        }
        if let Some(v) = patch.description {
            s.description = v;
        }
        if let Some(v) = patch.default_permissions {
            s.default_permissions = v;
        }
        if let Some(v) = patch.api_permissions {
            s.api_permissions = v;
        }
        if let Some(v) = patch.scopes {
            s.scopes = v;
        }
        if let Some(v) = patch.environments {
            s.environments = v;
        }
        if let Some(v) = patch.management_permissions {
            s.management_permissions = v;
        }
        if let Some(v) = patch.labels {
            s.labels = v;
        }
        let now = Utc::now();
        if let Some(v) = patch.expires_at {
            s.expires_at = Some(v);
            s.validate(now)?;
        } else {
            // The stored expiry was valid when set; only check the rest against today.
            let mut probe = s.clone();
            probe.expires_at = None;
            probe.validate(now)?;
        }
        self.check_apis_exist(&record.spec.api_permissions)?;
        if record == entry.record {
            return Ok(record);
        }
        record.updated_at = now;
        let hashes = entry.hashes().to_vec();
        db.put_key(&record, &hashes)?;
        self.verifier.upsert(KeyEntry::new(record.clone(), hashes));
        drop(db);
        tracing::info!(key_id = %id, "key changed");
        Ok(record)
    }

    /// A new value; the old one stops at once, or after `grace`.
    pub fn regenerate_key(
        &self,
        id: &str,
        grace: Option<Duration>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(KeyRecord, RawKey), CmsError> {
        let grace = grace.unwrap_or_else(Duration::zero);
        if grace < Duration::zero() || grace > MAX_GRACE {
            return Err(
                SpecError::new("graceSeconds", "must be between 0 and 2592000 (30 days)").into(),
            );
        }
        let now = Utc::now();
        let raw = RawKey::generate(id);
        let phc = raw.hash();
        let db = self.db.lock();
        let entry = self
            .verifier
            .get(id)
            .ok_or_else(|| CmsError::NotFound(format!("there is no key with id '{id}'")))?;
        let mut record = entry.record.clone();
        if let Some(at) = expires_at {
            record.spec.expires_at = Some(at);
            record.spec.validate(now)?;
        }
        let mut hashes = vec![StoredHash {
            phc,
            valid_until: None,
        }];
        if grace > Duration::zero() {
            let until = now + grace;
            if let Some(current) = entry.hashes().iter().find(|h| h.valid_until.is_none()) {
                hashes.push(StoredHash {
                    phc: current.phc.clone(),
                    valid_until: Some(until.timestamp()),
                });
            }
            record.previous_valid_until = Some(until);
        } else {
            record.previous_valid_until = None;
        }
        record.rotated_at = Some(now);
        record.updated_at = now;
        db.put_key(&record, &hashes)?;
        self.verifier.upsert(KeyEntry::new(record.clone(), hashes));
        drop(db);
        tracing::info!(key_id = %id, grace_seconds = grace.num_seconds(), "key regenerated");
        Ok((record, raw))
    }

    pub fn revoke_key(&self, id: &str) -> Result<(), CmsError> {
        let db = self.db.lock();
        if self.verifier.get(id).is_none() {
            return Err(CmsError::NotFound(format!(
                "there is no key with id '{id}'"
            )));
        }
        db.delete_key(id)?;
        self.verifier.remove(id);
        drop(db);
        tracing::info!(key_id = %id, "key revoked");
        Ok(())
    }

    // ---- APIs and settings -----------------------------------------------------------------

    /// Creates an API; `Ok(false)` when it already existed.
    pub fn put_api(&self, name: &str) -> Result<bool, CmsError> {
        if !valid_slug(name) {
            return Err(SpecError::new(
                "api",
                format!("'{name}' is not an API name (lowercase letters, digits, '-', '_')"),
            )
            .into());
        }
        let db = self.db.lock();
        if self.state.read().apis.contains_key(name) {
            return Ok(false);
        }
        let now = Utc::now();
        db.put_api(name, now, "[]")?;
        self.state.write().apis.insert(
            name.to_owned(),
            ApiInfo {
                created_at: now,
                public_ops: BTreeSet::new(),
            },
        );
        Ok(true)
    }

    pub fn apis(&self) -> BTreeMap<String, ApiInfo> {
        self.state.read().apis.clone()
    }

    pub fn api_exists(&self, name: &str) -> bool {
        self.state.read().apis.contains_key(name)
    }

    pub fn public_ops(&self, api: &str) -> Result<BTreeSet<ContentOp>, CmsError> {
        self.state
            .read()
            .apis
            .get(api)
            .map(|a| a.public_ops.clone())
            .ok_or_else(|| no_api(api))
    }

    /// Whether `op` on `api` needs no key (a cheap check on the request path).
    pub fn is_public(&self, api: &str, op: ContentOp) -> bool {
        self.state
            .read()
            .apis
            .get(api)
            .is_some_and(|a| a.public_ops.contains(&op.public_name()))
    }

    pub fn set_public_ops(
        &self,
        api: &str,
        ops: Vec<ContentOp>,
    ) -> Result<BTreeSet<ContentOp>, CmsError> {
        if let Some((i, op)) = ops
            .iter()
            .enumerate()
            .find(|(_, o)| !ContentOp::PUBLIC_OPERATIONS.contains(o))
        {
            return Err(SpecError::new(
                format!("operations[{i}]"),
                format!("'{}' cannot be made public", op.as_str()),
            )
            .into());
        }
        let ops: BTreeSet<ContentOp> = ops.into_iter().collect();
        let db = self.db.lock();
        let created_at = self
            .state
            .read()
            .apis
            .get(api)
            .map(|a| a.created_at)
            .ok_or_else(|| no_api(api))?;
        let json = serde_json::to_string(&ops).map_err(StoreError::from)?;
        db.put_api(api, created_at, &json)?;
        if let Some(a) = self.state.write().apis.get_mut(api) {
            a.public_ops = ops.clone();
        }
        tracing::info!(api, operations = ?ops, "public endpoints set");
        Ok(ops)
    }

    pub fn cors_origins(&self) -> Vec<String> {
        self.state.read().cors.clone()
    }

    /// Whether a browser at `origin` may read responses (deny by default).
    pub fn cors_allows(&self, origin: &[u8]) -> bool {
        self.state
            .read()
            .cors
            .iter()
            .any(|o| o == "*" || o.as_bytes() == origin)
    }

    pub fn set_cors_origins(&self, origins: Vec<String>) -> Result<Vec<String>, CmsError> {
        for (i, o) in origins.iter().enumerate() {
            if let Err(reason) = check_origin(o) {
                return Err(SpecError::new(format!("origins[{i}]"), reason).into());
            }
        }
        if origins.iter().any(|o| o == "*") {
            tracing::warn!("CORS origin '*' lets every web page read this CMS's responses; list origins in production");
        }
        let db = self.db.lock();
        db.put_setting(CORS_SETTING, &origins)?;
        self.state.write().cors = origins.clone();
        Ok(origins)
    }

    // ---- members and roles -----------------------------------------------------------------

    pub fn put_role(&self, mut role: Role) -> Result<Role, CmsError> {
        if !valid_slug(&role.name) {
            return Err(
                SpecError::new("name", format!("'{}' is not a role name", role.name)).into(),
            );
        }
        // The same rules as a key's default permissions.
        KeySpec {
            name: "role".into(),
            default_permissions: role.content_permissions.clone(),
            ..Default::default()
        }
        .validate(Utc::now())
        .map_err(|e| {
            SpecError::new(
                e.path.replace("defaultPermissions", "contentPermissions"),
                e.reason,
            )
        })?;
        role.management_permissions.sort();
        role.management_permissions.dedup();
        let db = self.db.lock();
        db.put_doc(DocTable::Roles, &role.name, &role)?;
        self.state
            .write()
            .roles
            .insert(role.name.clone(), role.clone());
        Ok(role)
    }

    pub fn roles(&self) -> Vec<Role> {
        self.state.read().roles.values().cloned().collect()
    }

    pub fn add_member(&self, name: &str, role: &str) -> Result<Member, CmsError> {
        if !valid_slug(name) {
            return Err(SpecError::new(
                "name",
                format!("'{name}' is not a member name (lowercase letters, digits, '-', '_')"),
            )
            .into());
        }
        let db = self.db.lock();
        {
            let st = self.state.read();
            if !st.roles.contains_key(role) {
                return Err(SpecError::new(
                    "role",
                    format!("there is no role named '{role}'; define it with PUT /v1/roles/{role}"),
                )
                .into());
            }
            if st.members.contains_key(name) {
                return Err(CmsError::Conflict(format!(
                    "member '{name}' already exists"
                )));
            }
        }
        let member = Member {
            name: name.into(),
            role: role.into(),
            created_at: Utc::now(),
        };
        db.put_doc(DocTable::Members, name, &member)?;
        self.state
            .write()
            .members
            .insert(name.into(), member.clone());
        Ok(member)
    }

    pub fn members(&self) -> Vec<Member> {
        self.state.read().members.values().cloned().collect()
    }

    /// Removes a member; their personal key dies with them, in the same transaction.
    pub fn remove_member(&self, name: &str) -> Result<(), CmsError> {
        let mut db = self.db.lock();
        if !self.state.read().members.contains_key(name) {
            return Err(CmsError::NotFound(format!(
                "there is no member named '{name}'"
            )));
        }
        let personal = self.verifier.personal_key_of(name);
        db.atomically(|s| {
            s.delete_doc(DocTable::Members, name)?;
            if let Some(id) = &personal {
                s.delete_key(id)?;
            }
            Ok(())
        })?;
        self.state.write().members.remove(name);
        if let Some(id) = personal {
            self.verifier.remove(&id);
            tracing::info!(key_id = %id, member = name, "personal key revoked with its owner");
        }
        Ok(())
    }

    /// The role of a member, looked up at request time for personal keys.
    pub fn member_role(&self, member: &str) -> Option<Role> {
        let st = self.state.read();
        let m = st.members.get(member)?;
        st.roles.get(&m.role).cloned()
    }

    // ---- content ---------------------------------------------------------------------------

    fn entries_key(env: &str, api: &str) -> (String, String) {
        (env.to_owned(), api.to_owned())
    }

    pub fn list(&self, env: &str, api: &str, q: &ListQuery) -> Result<Value, CmsError> {
        let st = self.state.read();
        if !st.apis.contains_key(api) {
            return Err(no_api(api));
        }
        let mut out: Vec<&Entry> = Vec::new();
        if let Some(entries) = st.entries.get(&Self::entries_key(env, api)) {
            for e in entries.values() {
                let status = e.status();
                let allowed = match status {
                    super::content::Status::Closed => q.include_closed,
                    super::content::Status::Draft => q.include_drafts,
                    _ => true,
                };
                // Filters and search see the published version whenever there is one: a newer
                // draft of published content is never matched on its draft values.
                let Some(searched) = e.visible() else {
                    continue;
                };
                if allowed
                    && q.filter.matches(searched)
                    && q.q.as_deref().is_none_or(|s| search_matches(searched, s))
                {
                    out.push(e);
                }
            }
        }
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let total = out.len();
        let contents: Vec<Value> = out
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .filter_map(|e| {
                let shown = if q.include_drafts {
                    e.draft.as_ref().or(e.published.as_ref())
                } else {
                    e.visible()
                };
                shown.map(|v| e.render(v))
            })
            .collect();
        Ok(json!({"contents": contents, "totalCount": total, "offset": q.offset, "limit": q.limit}))
    }

    /// One entry. A draft is shown with its draft key or the all-drafts right; a closed entry only
    /// with the all-closed right.
    pub fn get(
        &self,
        env: &str,
        api: &str,
        id: &str,
        draft_key: Option<&str>,
        can_drafts: bool,
        can_closed: bool,
    ) -> Result<Value, CmsError> {
        let st = self.state.read();
        if !st.apis.contains_key(api) {
            return Err(no_api(api));
        }
        let e = st
            .entries
            .get(&Self::entries_key(env, api))
            .and_then(|m| m.get(id))
            .ok_or_else(|| no_entry(api, id))?;
        if e.closed && !can_closed {
            return Err(no_entry(api, id));
        }
        let key_ok = match (draft_key, &e.draft_key) {
            (Some(given), Some(real)) => {
                subtle::ConstantTimeEq::ct_eq(given.as_bytes(), real.as_bytes()).into()
            }
            _ => false,
        };
        let version = if (key_ok || can_drafts) && e.draft.is_some() {
            e.draft.as_ref()
        } else {
            e.published.as_ref()
        };
        version
            .map(|v| e.render(v))
            .ok_or_else(|| no_entry(api, id))
    }

    fn write_entry<T>(
        &self,
        env: &str,
        api: &str,
        id: &str,
        f: impl FnOnce(Option<&Entry>, DateTime<Utc>) -> Result<(Option<Entry>, T), CmsError>,
    ) -> Result<T, CmsError> {
        let db = self.db.lock();
        let key = Self::entries_key(env, api);
        let (next, out) = {
            let st = self.state.read();
            if !st.apis.contains_key(api) {
                return Err(no_api(api));
            }
            f(st.entries.get(&key).and_then(|m| m.get(id)), Utc::now())?
        };
        match &next {
            Some(e) => db.put_entry(env, api, e)?,
            None => db.delete_entry(env, api, id)?,
        }
        let mut st = self.state.write();
        let map = st.entries.entry(key).or_default();
        match next {
            Some(e) => {
                map.insert(id.to_owned(), e);
            }
            None => {
                map.remove(id);
            }
        }
        Ok(out)
    }

    /// Creates an entry (`id` chosen by the caller for PUT, generated for POST), or replaces one.
    pub fn put_entry(
        &self,
        env: &str,
        api: &str,
        id: Option<&str>,
        fields: Map<String, Value>,
        as_: WriteAs,
        replace: bool,
    ) -> Result<(Value, bool), CmsError> {
        let id = match id {
            Some(id) if valid_entry_id(id) => id.to_owned(),
            Some(id) => {
                return Err(CmsError::BadRequest(format!(
                    "'{id}' is not an entry id (letters, digits, '-', '_', at most 64)"
                )))
            }
            None => random_token(9).replace(['-', '_'], "x").to_lowercase(),
        };
        let api_name = api.to_owned();
        self.write_entry(env, api, &id.clone(), move |existing, now| {
            if existing.is_some() && !replace {
                return Err(CmsError::Conflict(format!(
                    "entry '{id}' already exists in API '{api_name}'"
                )));
            }
            let created = existing.is_none();
            let mut e = existing.cloned().unwrap_or(Entry {
                id: id.clone(),
                created_at: now,
                updated_at: now,
                published_at: None,
                published: None,
                draft: None,
                closed: false,
                draft_key: None,
            });
            e.updated_at = now;
            match as_ {
                WriteAs::Published => {
                    e.published = Some(fields);
                    e.draft = None;
                    e.draft_key = None;
                    e.closed = false;
                    e.published_at = Some(now);
                }
                WriteAs::Draft => {
                    e.draft = Some(fields);
                    e.draft_key.get_or_insert_with(|| random_token(12));
                }
            }
            let body = write_receipt(&e);
            Ok((Some(e), (body, created)))
        })
    }

    /// Merges `fields` into the entry: into its draft when it has one or `as_` is draft.
    pub fn patch_entry(
        &self,
        env: &str,
        api: &str,
        id: &str,
        fields: Map<String, Value>,
        as_: WriteAs,
    ) -> Result<Value, CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, now| {
            let mut e = existing.cloned().ok_or_else(|| no_entry(&api_name, id))?;
            let into_draft = as_ == WriteAs::Draft || e.draft.is_some();
            let target = if into_draft {
                let base = e
                    .draft
                    .clone()
                    .or_else(|| e.published.clone())
                    .unwrap_or_default();
                e.draft_key.get_or_insert_with(|| random_token(12));
                e.draft.insert(base)
            } else {
                e.published.get_or_insert_with(Map::new)
            };
            for (k, v) in fields {
                target.insert(k, v);
            }
            e.updated_at = now;
            let body = write_receipt(&e);
            Ok((Some(e), body))
        })
    }

    pub fn delete_entry(&self, env: &str, api: &str, id: &str) -> Result<(), CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, _| {
            existing.ok_or_else(|| no_entry(&api_name, id))?;
            Ok((None, ()))
        })
    }

    /// Publishes the entry's draft (or re-opens a closed entry).
    pub fn publish(&self, env: &str, api: &str, id: &str) -> Result<Value, CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, now| {
            let mut e = existing.cloned().ok_or_else(|| no_entry(&api_name, id))?;
            if let Some(d) = e.draft.take() {
                e.published = Some(d);
            }
            e.draft_key = None;
            e.closed = false;
            e.published_at = Some(now);
            e.updated_at = now;
            let body = write_receipt(&e);
            Ok((Some(e), body))
        })
    }

    /// Closes (unpublishes) an entry: only the all-closed right still lists it.
    pub fn close(&self, env: &str, api: &str, id: &str) -> Result<Value, CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, now| {
            let mut e = existing.cloned().ok_or_else(|| no_entry(&api_name, id))?;
            if e.published.is_none() {
                e.published = e.draft.take();
            }
            e.closed = true;
            e.updated_at = now;
            let body = write_receipt(&e);
            Ok((Some(e), body))
        })
    }

    /// A backup of every API and entry of an environment (the `export:write` scope).
    pub fn export(&self, env: &str) -> Value {
        let st = self.state.read();
        let mut apis = Map::new();
        for name in st.apis.keys() {
            let entries: Vec<Value> = st
                .entries
                .get(&Self::entries_key(env, name))
                .map(|m| {
                    m.values()
                        .filter_map(|e| serde_json::to_value(e).ok())
                        .collect()
                })
                .unwrap_or_default();
            apis.insert(name.clone(), Value::Array(entries));
        }
        json!({"environment": env, "exportedAt": Utc::now().to_rfc3339(), "apis": apis})
    }
}

/// What a writer gets back: the id, the status, and the draft key when there is a draft.
fn write_receipt(e: &Entry) -> Value {
    let mut v = json!({"id": e.id, "status": e.status()});
    if e.draft.is_some() {
        if let Some(k) = &e.draft_key {
            v["draftKey"] = json!(k);
        }
    }
    v
}

fn valid_entry_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn no_api(api: &str) -> CmsError {
    CmsError::NotFound(format!("there is no API named '{api}'"))
}

fn no_entry(api: &str, id: &str) -> CmsError {
    CmsError::NotFound(format!("there is no entry '{id}' in API '{api}'"))
}
