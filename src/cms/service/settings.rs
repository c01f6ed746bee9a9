//! APIs, their public endpoints, and CORS origins.

use super::*;

impl Service {
    /// Creates an API; `Ok(false)` when it already existed.
    pub fn put_api(&self, name: &str) -> Result<bool, CmsError> {
        slug_or_error("api", "an API", name)?;
        let db = self.db.lock();
        if self.state.read().apis.contains_key(name) {
            return Ok(false);
        }
        let now = Timestamp::now();
        db.put_api(name, now, "[]")?;
        self.state.write().apis.insert(
            name.to_owned(),
            ApiInfo {
                created_at: now,
                public_ops: BTreeSet::new(),
                owned_ops: BTreeSet::new(),
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
            .ok_or_else(no_api)
    }

    /// Whether `op` on `api` needs no key (a cheap check on the request path).
    pub fn is_public(&self, api: &str, op: ContentOp) -> bool {
        self.state.read().apis.get(api).is_some_and(|a| {
            let op = op.public_name();
            a.public_ops.contains(&op) || a.owned_ops.contains(&op)
        })
    }

    /// Replaces the base public operations of `api`. Each operation `who` adds must be one it
    /// could do itself; those already public stay (removing one is never an escalation).
    pub fn set_public_ops(
        &self,
        api: &str,
        ops: Vec<ContentOp>,
        who: &Rights,
    ) -> Result<BTreeSet<ContentOp>, CmsError> {
        let ops = publishable(ops, "operations")?;
        let db = self.db.lock();
        let (created_at, before) = self
            .state
            .read()
            .apis
            .get(api)
            .map(|a| (a.created_at, a.public_ops.clone()))
            .ok_or_else(no_api)?;
        may_add_public(who, api, &before, &ops)?;
        let json = serde_json::to_string(&ops).map_err(StoreError::from)?;
        db.put_api(api, created_at, &json)?;
        if let Some(a) = self.state.write().apis.get_mut(api) {
            a.public_ops = ops.clone();
        }
        tracing::info!(api, operations = %json, "public endpoints set");
        Ok(ops)
    }

    pub fn cors_origins(&self) -> Vec<String> {
        self.state.read().cors.clone()
    }

    /// The origins browsers may read from: the base and every owner's.
    pub fn effective_cors(&self) -> BTreeSet<String> {
        let state = self.state.read();
        state
            .cors
            .iter()
            .chain(&state.owned_cors)
            .cloned()
            .collect()
    }

    /// Whether a browser at `origin` may read responses (deny by default).
    pub fn cors_allows(&self, origin: &[u8]) -> bool {
        let state = self.state.read();
        let allows = |o: &String| o == "*" || o.as_bytes() == origin;
        state.cors.iter().any(allows) || state.owned_cors.iter().any(allows)
    }

    pub fn set_cors_origins(&self, origins: Vec<String>) -> Result<Vec<String>, CmsError> {
        check_origins(&origins)?;
        let db = self.db.lock();
        db.put_setting(CORS_SETTING, &origins)?;
        self.state.write().cors = origins.clone();
        Ok(origins)
    }
}

/// Each origin is `*` or `scheme://host[:port]`; `*` is allowed and warned about.
fn check_origins<'a>(origins: impl IntoIterator<Item = &'a String>) -> Result<(), CmsError> {
    let mut wildcard = false;
    for (i, o) in origins.into_iter().enumerate() {
        if let Err(reason) = check_origin(o) {
            return Err(SpecError::about(format!("origins[{i}]"), o, reason).into());
        }
        wildcard |= o == "*";
    }
    if wildcard {
        tracing::warn!("CORS origin '*' lets every web page read this CMS's responses; list origins in production");
    }
    Ok(())
}

/// Refuses unless `who` could do each operation of `after` that `before` lacks (on `api`).
fn may_add_public(
    who: &Rights,
    api: &str,
    before: &BTreeSet<ContentOp>,
    after: &BTreeSet<ContentOp>,
) -> Result<(), CmsError> {
    for op in after.difference(before) {
        who.may_make_public(api, *op)?;
    }
    Ok(())
}

/// The operations, if each of them can be made public.
fn publishable(ops: Vec<ContentOp>, field: &str) -> Result<BTreeSet<ContentOp>, CmsError> {
    if let Some((i, op)) = ops
        .iter()
        .enumerate()
        .find(|(_, o)| !ContentOp::PUBLIC_OPERATIONS.contains(o))
    {
        return Err(SpecError::new(
            format!("{field}[{i}]"),
            format!("'{}' cannot be made public", op.as_str()),
        )
        .into());
    }
    Ok(ops.into_iter().collect())
}

/// An owner's name: what a URL path segment carries without escaping, up to 253 characters.
pub fn valid_owner(owner: &str) -> bool {
    (1..=253).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b':'))
}

/// Which part of an owner's entry a write replaces.
pub enum OwnerWrite {
    Origins(Vec<String>),
    Public {
        api: String,
        ops: Vec<ContentOp>,
    },
    /// The whole entry goes.
    Remove,
}

impl Service {
    /// Every owner's entry.
    pub fn owners(&self) -> BTreeMap<String, OwnerEntry> {
        self.state.read().owners.clone()
    }

    /// Replaces part of `owner`'s entry (an empty one is dropped); the entry as it now is.
    /// Public operations `who` adds must be ones it could do itself.
    pub fn write_owner(
        &self,
        owner: &str,
        write: OwnerWrite,
        who: &Rights,
    ) -> Result<OwnerEntry, CmsError> {
        if !valid_owner(owner) {
            return Err(SpecError::about(
                "owner",
                owner,
                "is not an owner name (1-253 letters, digits, '.', '-', '_', '@', ':')",
            )
            .into());
        }
        let db = self.db.lock();
        let mut owners = self.state.read().owners.clone();
        let mut entry = owners.remove(owner).unwrap_or_default();
        match write {
            OwnerWrite::Origins(origins) => {
                check_origins(&origins)?;
                entry.origins = origins.into_iter().collect();
            }
            OwnerWrite::Public { api, ops } => {
                if !self.api_exists(&api) {
                    return Err(no_api());
                }
                let ops = publishable(ops, "operations")?;
                let before = entry
                    .public_endpoints
                    .get(&api)
                    .cloned()
                    .unwrap_or_default();
                may_add_public(who, &api, &before, &ops)?;
                match ops.is_empty() {
                    true => entry.public_endpoints.remove(&api),
                    false => entry.public_endpoints.insert(api, ops),
                };
            }
            OwnerWrite::Remove => entry = OwnerEntry::default(),
        }
        if !entry.is_empty() {
            owners.insert(owner.to_owned(), entry.clone());
        }
        if owners == self.state.read().owners {
            return Ok(entry);
        }
        db.put_setting(OWNERS_SETTING, &owners)?;
        let mut state = self.state.write();
        state.owners = owners;
        state.derive_owned();
        tracing::info!(owner, "settings entry written");
        Ok(entry)
    }
}

impl State {
    /// The owners' union, kept beside the base so the request path reads it without merging.
    pub(super) fn derive_owned(&mut self) {
        self.owned_cors = self
            .owners
            .values()
            .flat_map(|e| e.origins.iter().cloned())
            .collect();
        for info in self.apis.values_mut() {
            info.owned_ops.clear();
        }
        for entry in self.owners.values() {
            for (api, ops) in &entry.public_endpoints {
                if let Some(info) = self.apis.get_mut(api) {
                    info.owned_ops.extend(ops.iter().copied());
                }
            }
        }
    }
}
