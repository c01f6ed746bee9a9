//! The reference CMS's domain: keys, APIs, settings, members and content, kept in memory and
//! written through to SQLite. Writers are serialized by the database mutex; each write commits to
//! SQLite first and only then changes memory, so what readers see is always durable.
//!
//! One file per concern: `keys`, `settings` (APIs, public endpoints, CORS), `members`
//! (members and roles) and `content` (entries).

use super::content::{Entry, Filter, Search};
use super::error::CmsError;
use super::keys::KeyRecord;
use super::rights::Rights;
pub use super::rights::Role;
use super::secret::{new_key_id, random_token, RawKey};
use super::store::{DocTable, Store, StoreError};
use super::verifier::{KeyEntry, StoredHash, Verifier};
use crate::model::{
    check_origin, valid_slug, ApiPermission, ContentOp, ContentPermission, KeySpec,
    ManagementPermission, Scope, SpecError, Tier,
};
use axum::body::Bytes;
use jiff::{SignedDuration, Timestamp};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock};

mod content;
mod keys;
mod members;
mod settings;
pub(crate) use keys::no_key;
pub use settings::OwnerWrite;

/// `name` must be a slug (lowercase letters, digits, '-', '_'): `field` names it in the error,
/// `what` says what it names ("an API", "a member").
fn slug_or_error(field: &str, what: &str, name: &str) -> Result<(), CmsError> {
    if valid_slug(name) {
        return Ok(());
    }
    Err(SpecError::about(
        field,
        name,
        format!("is not {what} name (lowercase letters, digits, '-', '_')"),
    )
    .into())
}

/// A project member; personal keys inherit the member's role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    pub role: String,
    pub created_at: Timestamp,
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
    pub expires_at: Option<Timestamp>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
pub struct ApiInfo {
    pub created_at: Timestamp,
    /// The unowned base, set by hand (`PUT /v1/apis/{api}/public`).
    pub public_ops: BTreeSet<ContentOp>,
    /// The union of the owners' entries for this API (derived from [`OwnerEntry`]s).
    pub owned_ops: BTreeSet<ContentOp>,
}

impl ApiInfo {
    /// What is public: the base and every owner's entry.
    pub fn effective_ops(&self) -> BTreeSet<ContentOp> {
        self.public_ops.union(&self.owned_ops).copied().collect()
    }
}

/// What one owner (a policy, say) asked of the shared settings. The effective settings are
/// the union of every owner's entry and the unowned base, so writers that cannot see each other
/// (operator shards, a CLI and an operator) never overwrite each other's origins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerEntry {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub origins: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub public_endpoints: BTreeMap<String, BTreeSet<ContentOp>>,
}

impl OwnerEntry {
    fn is_empty(&self) -> bool {
        self.origins.is_empty() && self.public_endpoints.values().all(BTreeSet::is_empty)
    }
}

/// Bounds on what content may hold: public `create` needs no key, so without them anyone could
/// grow the data directory (and the memory that holds every entry) without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentLimits {
    /// Entries of one API, over every environment (beyond: 507, `reason: entry_limit`).
    pub max_entries: usize,
    /// Stored bytes of one API's entries, over every environment (beyond: 507,
    /// `reason: size_limit`).
    pub max_api_bytes: u64,
    /// Stored bytes of one entry, its published version and draft together (beyond: 413,
    /// `reason: entry_size`); merges cannot grow an entry past what one body may hold.
    pub max_entry_bytes: usize,
    /// Bytes of the entries of one listing: a page ends early rather than grow past this (it
    /// always holds at least one entry).
    pub max_answer_bytes: usize,
}

/// The default content limits: 10,000 entries and 64 MiB per API, 1 MiB per entry and answer.
pub const DEFAULT_CONTENT_LIMITS: ContentLimits = ContentLimits {
    max_entries: 10_000,
    max_api_bytes: 64 * 1024 * 1024,
    max_entry_bytes: 1024 * 1024,
    max_answer_bytes: 1024 * 1024,
};

impl Default for ContentLimits {
    fn default() -> Self {
        DEFAULT_CONTENT_LIMITS
    }
}

/// An entry as held in memory: shared, so a listing copies pointers under the lock and reads
/// the entries after letting it go; with its stored size, for the limits.
#[derive(Debug)]
struct StoredEntry {
    entry: Entry,
    bytes: usize,
    /// The published and the draft version as the content API answers them, rendered at their
    /// first read: a write replaces the whole `StoredEntry`, so these never go stale.
    published_json: OnceLock<Bytes>,
    draft_json: OnceLock<Bytes>,
}

impl StoredEntry {
    fn new(entry: Entry, bytes: usize) -> StoredEntry {
        StoredEntry {
            entry,
            bytes,
            published_json: OnceLock::new(),
            draft_json: OnceLock::new(),
        }
    }

    /// The draft (`draft`) or the published version's answer, if the entry has that version.
    fn answer(&self, draft: bool) -> Option<Bytes> {
        let (version, cell) = match draft {
            true => (self.entry.draft.as_ref(), &self.draft_json),
            false => (self.entry.published.as_ref(), &self.published_json),
        };
        let version = version?;
        let bytes = cell.get_or_init(|| {
            // A `Value` always serializes (its keys are strings).
            serde_json::to_vec(&self.entry.render(version))
                .unwrap_or_default()
                .into()
        });
        Some(bytes.clone())
    }
}

/// What one API holds, over every environment.
#[derive(Clone, Copy, Debug, Default)]
struct ApiUsage {
    entries: usize,
    bytes: u64,
}

#[derive(Default)]
struct State {
    apis: BTreeMap<String, ApiInfo>,
    /// (environment, api) -> entries by id.
    entries: HashMap<(String, String), BTreeMap<String, Arc<StoredEntry>>>,
    /// By API, what its entries take (derived from `entries`).
    usage: HashMap<String, ApiUsage>,
    /// The unowned base list (`PUT /v1/cors`).
    cors: Vec<String>,
    owners: BTreeMap<String, OwnerEntry>,
    /// The union of the owners' origins (derived).
    owned_cors: BTreeSet<String>,
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
const MAX_GRACE: SignedDuration = crate::model::days(30);
const CORS_SETTING: &str = "cors";
const OWNERS_SETTING: &str = "owners";

pub struct Service {
    db: Mutex<Store>,
    state: RwLock<State>,
    pub verifier: Verifier,
    plan: Option<Tier>,
    limits: ContentLimits,
}

fn parse_ops(json: &str) -> BTreeSet<ContentOp> {
    serde_json::from_str(json).unwrap_or_default()
}

impl Service {
    /// Opens (or creates) the service's database under `dir` and loads it.
    pub fn open(
        dir: &Path,
        plan: Option<Tier>,
        limits: ContentLimits,
    ) -> Result<Service, StoreError> {
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
                    owned_ops: BTreeSet::new(),
                },
            );
        }
        for (env, api, entry, bytes) in store.entries()? {
            let usage = state.usage.entry(api.clone()).or_default();
            usage.entries += 1;
            usage.bytes += bytes as u64;
            state
                .entries
                .entry((env, api))
                .or_default()
                .insert(entry.id.clone(), Arc::new(StoredEntry::new(entry, bytes)));
        }
        state.cors = store.setting(CORS_SETTING)?.unwrap_or_default();
        state.owners = store.setting(OWNERS_SETTING)?.unwrap_or_default();
        state.derive_owned();
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
            limits,
        })
    }

    pub fn plan(&self) -> Option<Tier> {
        self.plan
    }

    /// Writes the database's log into it (see `Store::checkpoint`).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.lock().checkpoint()
    }
}

/// The API a path names does not exist (its name is not repeated).
fn no_api() -> CmsError {
    CmsError::NotFound("there is no API with the name in the path".into())
}
