//! Members and roles: personal keys inherit their owner's role.

use super::*;

impl Service {
    /// Defines or redefines a role. The caller must hold every right of the role as it was and
    /// as it will be: members cannot be raised above the one who raises them.
    pub fn put_role(&self, mut role: Role, caller: &Rights) -> Result<Role, CmsError> {
        slug_or_error("name", "a role", &role.name)?;
        // The same rules as a key's default permissions.
        KeySpec {
            name: "role".into(),
            default_permissions: role.content_permissions.clone(),
            ..Default::default()
        }
        .validate(Timestamp::now())
        .map_err(|e| {
            SpecError::new(
                e.path.replace("defaultPermissions", "contentPermissions"),
                e.reason,
            )
        })?;
        role.management_permissions.sort();
        role.management_permissions.dedup();
        let db = self.db.lock();
        caller.covers(&Rights::of_role(&role))?;
        if let Some(old) = self.state.read().roles.get(&role.name) {
            caller.covers(&Rights::of_role(old))?;
        }
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

    /// Adds a member with a role the caller holds entirely.
    pub fn add_member(&self, name: &str, role: &str, caller: &Rights) -> Result<Member, CmsError> {
        slug_or_error("name", "a member", name)?;
        let db = self.db.lock();
        {
            let st = self.state.read();
            let Some(r) = st.roles.get(role) else {
                return Err(SpecError::about(
                    "role",
                    role,
                    "is not a role; define it with PUT /v1/roles/NAME",
                )
                .into());
            };
            caller.covers(&Rights::of_role(r))?;
            if st.members.contains_key(name) {
                return Err(CmsError::Conflict(
                    "a member with that name already exists".into(),
                ));
            }
        }
        let member = Member {
            name: name.into(),
            role: role.into(),
            created_at: Timestamp::now(),
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
    /// The caller must hold the member's role entirely.
    pub fn remove_member(&self, name: &str, caller: &Rights) -> Result<(), CmsError> {
        let mut db = self.db.lock();
        if !self.state.read().members.contains_key(name) {
            return Err(CmsError::NotFound(format!(
                "there is no member named '{name}'"
            )));
        }
        if let Some(role) = self.member_role(name) {
            caller.covers(&Rights::of_role(&role))?;
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
}
