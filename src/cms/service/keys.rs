//! Keys: create, change, regenerate, revoke.

use super::*;

/// Earlier values a key keeps in their grace at once (each costs an Argon2id check for a value
/// not yet seen).
pub const MAX_EARLIER_VALUES: usize = 4;

impl Service {
    fn check_apis_exist(&self, apis: &[ApiPermission]) -> Result<(), CmsError> {
        let st = self.state.read();
        for (i, ap) in apis.iter().enumerate() {
            if !st.apis.contains_key(&ap.api) {
                return Err(SpecError::about(
                    format!("apiPermissions[{i}].api"),
                    &ap.api,
                    "is not an API; create it with PUT /v1/apis/NAME",
                )
                .into());
            }
        }
        Ok(())
    }

    /// Argon2id of a new value, on the hashing pool.
    fn hash(&self, raw: &RawKey) -> Result<String, CmsError> {
        self.verifier
            .hash(raw)
            .map_err(|_| CmsError::RateLimited(std::time::Duration::from_secs(1)))
    }

    /// What a key holds now (a personal key: its owner's role as it is now).
    pub fn rights_of(&self, spec: &KeySpec) -> Rights {
        let role = spec.owner.as_deref().and_then(|o| self.member_role(o));
        Rights::of_key(spec, role.as_ref())
    }

    /// Creates a key holding no right the caller lacks; the raw value is returned here and
    /// nowhere else.
    pub fn create_key(
        &self,
        spec: KeySpec,
        caller: &Rights,
    ) -> Result<(KeyRecord, RawKey), CmsError> {
        let now = Timestamp::now();
        spec.validate(now)?;
        self.check_apis_exist(&spec.api_permissions)?;
        caller.covers(&self.rights_of(&spec))?;
        let id = new_key_id();
        let raw = RawKey::generate(&id);
        // Argon2id is slow on purpose: hash before taking the writers' lock.
        let hashes = vec![StoredHash {
            phc: self.hash(&raw)?,
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
            earlier_values_valid_until: Vec::new(),
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
            return Err(CmsError::Conflict(
                "a key with that name already exists".into(),
            ));
        }
        if let Some(owner) = &record.spec.owner {
            if !self.state.read().members.contains_key(owner) {
                return Err(SpecError::about("owner", owner, "is not a member").into());
            }
            if self.verifier.personal_key_of(owner).is_some() {
                return Err(CmsError::Conflict(
                    "that member already has a personal key".into(),
                ));
            }
        }
        db.atomically(|s| s.put_key(&record, &hashes))?;
        self.verifier.upsert(KeyEntry::new(record.clone(), hashes));
        drop(db);
        tracing::info!(key_id = %record.id, name = %record.spec.name, kind = record.spec.kind.as_str(), "key created");
        Ok((record, raw))
    }

    /// Every key, oldest first.
    pub fn list_keys(&self) -> Vec<Arc<KeyEntry>> {
        self.verifier.entries()
    }

    pub fn get_key(&self, id: &str) -> Result<KeyRecord, CmsError> {
        self.verifier
            .get(id)
            .map(|e| e.record.clone())
            .ok_or_else(no_key)
    }

    /// The key to change, if the caller holds every right it has (a key never outranks the
    /// one who changes, regenerates or revokes it).
    fn entry_for(&self, id: &str, caller: &Rights) -> Result<Arc<KeyEntry>, CmsError> {
        let entry = self.verifier.get(id).ok_or_else(no_key)?;
        caller.covers(&self.rights_of(&entry.record.spec))?;
        Ok(entry)
    }

    /// Changes a key; it must not hold more than the caller before or after.
    pub fn patch_key(
        &self,
        id: &str,
        patch: KeyPatch,
        caller: &Rights,
    ) -> Result<KeyRecord, CmsError> {
        let db = self.db.lock();
        let entry = self.entry_for(id, caller)?;
        let mut record = entry.record.clone();
        if let Some(name) = &patch.name {
            if *name != record.spec.name && self.verifier.name_taken(name) {
                return Err(CmsError::Conflict(
                    "a key with that name already exists".into(),
                ));
            }
        }
        let s = &mut record.spec;
        // Each field the patch carries replaces the key's.
        macro_rules! replace_given {
            ($($field:ident),*) => {$(
                if let Some(v) = patch.$field {
                    s.$field = v;
                }
            )*};
        }
        replace_given!(
            name,
            description,
            default_permissions,
            api_permissions,
            scopes,
            environments,
            management_permissions,
            labels
        );
        let now = Timestamp::now();
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
        caller.covers(&self.rights_of(&record.spec))?;
        if record == entry.record {
            return Ok(record);
        }
        record.updated_at = now;
        db.put_key(&record, entry.hashes())?;
        self.verifier.replace_record(&entry, record.clone());
        drop(db);
        tracing::info!(key_id = %id, "key changed");
        Ok(record)
    }

    /// A new value; the old one stops at once, or after `grace`. With a grace, values that an
    /// earlier regenerate left in their grace keep it (at most `MAX_EARLIER_VALUES` at once,
    /// then 409); without one, every earlier value stops now.
    pub fn regenerate_key(
        &self,
        id: &str,
        grace: Option<SignedDuration>,
        expires_at: Option<Timestamp>,
        caller: &Rights,
    ) -> Result<(KeyRecord, RawKey), CmsError> {
        let grace = grace.unwrap_or_default();
        if grace < SignedDuration::ZERO || grace > MAX_GRACE {
            return Err(
                SpecError::new("graceSeconds", "must be between 0 and 2592000 (30 days)").into(),
            );
        }
        // To the millisecond: the old value's end is kept and enforced in milliseconds, so the
        // answer's times are exactly what holds.
        let now = Timestamp::now();
        let now = Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now);
        let raw = RawKey::generate(id);
        let phc = self.hash(&raw)?;
        let db = self.db.lock();
        let entry = self.entry_for(id, caller)?;
        let mut record = entry.record.clone();
        if let Some(at) = expires_at {
            record.spec.expires_at = Some(at);
            record.spec.validate(now)?;
        }
        let mut hashes = vec![StoredHash {
            phc,
            valid_until: None,
        }];
        if grace > SignedDuration::ZERO {
            let until = crate::model::later(now, grace)
                .ok_or_else(|| SpecError::new("graceSeconds", "ends past the last instant"))?;
            if let Some(current) = entry.hashes().iter().find(|h| h.valid_until.is_none()) {
                hashes.push(StoredHash {
                    phc: current.phc.clone(),
                    valid_until: Some(until.as_millisecond()),
                });
            }
            // Earlier values keep the grace their regenerates promised.
            let now_ms = now.as_millisecond();
            hashes.extend(
                entry
                    .hashes()
                    .iter()
                    .filter(|h| h.valid_until.is_some_and(|u| u > now_ms))
                    .cloned(),
            );
            let mut ends: Vec<i64> = hashes.iter().filter_map(|h| h.valid_until).collect();
            ends.sort_unstable();
            if ends.len() > MAX_EARLIER_VALUES {
                let soonest = ends
                    .first()
                    .and_then(|ms| Timestamp::from_millisecond(*ms).ok())
                    .map(crate::model::rfc3339)
                    .unwrap_or_default();
                return Err(CmsError::Conflict(format!(
                    "{} earlier values of this key are still in their grace (the first ends at {soonest}); wait for it, or regenerate without grace to end them all now",
                    ends.len() - 1
                )));
            }
            record.previous_valid_until = Some(until);
            record.earlier_values_valid_until = ends
                .into_iter()
                .filter_map(|ms| Timestamp::from_millisecond(ms).ok())
                .collect();
        } else {
            // No grace: every earlier value stops now (what a leaked key needs).
            record.previous_valid_until = None;
            record.earlier_values_valid_until = Vec::new();
        }
        record.rotated_at = Some(now);
        record.updated_at = now;
        db.put_key(&record, &hashes)?;
        self.verifier.upsert(KeyEntry::new(record.clone(), hashes));
        drop(db);
        tracing::info!(key_id = %id, grace_seconds = grace.as_secs(), "key regenerated");
        Ok((record, raw))
    }

    pub fn revoke_key(&self, id: &str, caller: &Rights) -> Result<(), CmsError> {
        let db = self.db.lock();
        self.entry_for(id, caller)?;
        db.delete_key(id)?;
        self.verifier.remove(id);
        drop(db);
        tracing::info!(key_id = %id, "key revoked");
        Ok(())
    }
}

/// The key a path names does not exist (its id is not repeated: a key's value pasted as an id
/// would be).
pub(crate) fn no_key() -> CmsError {
    CmsError::NotFound("there is no key with the id in the path".into())
}
