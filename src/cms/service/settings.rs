//! APIs, their public endpoints, and CORS origins.

use super::*;

impl Service {
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
        let now = Timestamp::now();
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
        tracing::info!(api, operations = %json, "public endpoints set");
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
}
