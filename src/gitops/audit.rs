//! `keyward apply --audit-log FILE` (and `rotate`): one JSON line per write the CLI makes, to
//! the CMS (keys, CORS origins, public endpoints) or to a Secret, as it is made: when, who (the
//! command and the user running it), on which connection, what, on which key or Secret, and
//! the result. Never a value: the lines are made from ids, names and error messages, which
//! never carry one. The CMS's own trail (`keyward cms serve --audit-log`) names the credential.

use crate::cms::audit::AuditLog;
use crate::engine::{SecretSink, SinkError};
use crate::model::desired::SecretTarget;
use crate::model::secret::{ObservedSecret, SecretMaterial};
use crate::model::{ContentOp, KeySpec, KeyValue};
use crate::providers::{
    CallStats, CmsProvider, IssuedKey, LiveKey, LiveSettings, Regeneration, Result,
};
use async_trait::async_trait;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Display;

/// Where a run's lines go and what they say of it.
#[derive(Clone, Copy)]
pub struct Trail<'a> {
    pub log: &'a AuditLog,
    /// `keyward apply as USER`.
    pub who: &'a str,
    pub connection: &'a str,
}

#[derive(Serialize)]
struct Entry<'a> {
    at: String,
    who: &'a str,
    connection: &'a str,
    action: &'static str,
    /// A key's id or name, a settings owner, a Secret's `namespace/name`.
    target: String,
    /// The key a change created or gave a new value.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    /// `done` or `failed`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Trail<'_> {
    /// Writes the line of one write and hands its result on.
    pub fn note<T, E: Display>(
        &self,
        action: &'static str,
        target: impl Into<String>,
        result: std::result::Result<T, E>,
        key_id: impl Fn(&T) -> Option<String>,
    ) -> std::result::Result<T, E> {
        let (done, key, error) = match &result {
            Ok(v) => ("done", key_id(v), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        self.log.write(&Entry {
            at: crate::model::rfc3339(Timestamp::now()),
            who: self.who,
            connection: self.connection,
            action,
            target: target.into(),
            key_id: key,
            result: done,
            error,
        });
        result
    }
}

/// `keyward COMMAND as USER` (the login name, else the numeric user id's absence said so).
pub fn who(command: &str) -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "an unnamed user".into());
    format!("keyward {command} as {user}")
}

fn none<T>(_: &T) -> Option<String> {
    None
}

/// A provider whose every write is written to the trail.
pub struct AuditedProvider<'a> {
    pub inner: &'a dyn CmsProvider,
    pub trail: Trail<'a>,
}

#[async_trait]
impl CmsProvider for AuditedProvider<'_> {
    fn stats(&self) -> &CallStats {
        self.inner.stats()
    }
    fn has_key_api(&self) -> bool {
        self.inner.has_key_api()
    }
    async fn express(&self, spec: &KeySpec) -> Result<KeySpec> {
        self.inner.express(spec).await
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        self.inner.list_keys().await
    }
    async fn list_keys_labeled(&self, name: &str, value: &str) -> Result<Vec<LiveKey>> {
        self.inner.list_keys_labeled(name, value).await
    }
    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        let r = self.inner.create_key(spec).await;
        self.trail
            .note("create key", &spec.name, r, |k| Some(k.key.id.clone()))
    }
    fn parallel_creates(&self) -> usize {
        self.inner.parallel_creates()
    }
    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey> {
        let r = self.inner.update_key(id, spec).await;
        self.trail.note("update key", id, r, none)
    }
    async fn rename_key(&self, id: &str, name: &str) -> Result<()> {
        let r = self.inner.rename_key(id, name).await;
        self.trail.note("rename key", id, r, none)
    }
    async fn set_expiry(&self, id: &str, at: Timestamp) -> Result<()> {
        let r = self.inner.set_expiry(id, at).await;
        self.trail.note("set key expiry", id, r, none)
    }
    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey> {
        let r = self.inner.regenerate_key(id, how).await;
        self.trail
            .note("regenerate key", id, r, |k| Some(k.key.id.clone()))
    }
    async fn verify_value(&self, id: &str, value: &KeyValue) -> Result<bool> {
        self.inner.verify_value(id, value).await
    }
    async fn revoke_key(&self, id: &str) -> Result<()> {
        let r = self.inner.revoke_key(id).await;
        self.trail.note("revoke key", id, r, none)
    }
    async fn settings(&self, apis: &BTreeSet<String>, owner: Option<&str>) -> Result<LiveSettings> {
        self.inner.settings(apis, owner).await
    }
    async fn set_cors(&self, owner: &str, origins: &BTreeSet<String>) -> Result<()> {
        let r = self.inner.set_cors(owner, origins).await;
        self.trail.note("set CORS origins", owner, r, none)
    }
    async fn set_public(&self, owner: &str, api: &str, ops: &BTreeSet<ContentOp>) -> Result<()> {
        let r = self.inner.set_public(owner, api, ops).await;
        let target = format!("{owner} on API '{api}'");
        self.trail.note("set public endpoints", target, r, none)
    }
    async fn remove_settings_owner(&self, owner: &str) -> Result<()> {
        let r = self.inner.remove_settings_owner(owner).await;
        self.trail.note("remove settings owner", owner, r, none)
    }
}

/// A Secret sink whose every write is written to the trail (a Secret already as asked is not
/// written, nor noted).
pub struct AuditedSink<'a> {
    pub inner: &'a dyn SecretSink,
    pub trail: Trail<'a>,
}

#[async_trait]
impl SecretSink for AuditedSink<'_> {
    async fn observe(
        &self,
        target: &SecretTarget,
    ) -> std::result::Result<Option<ObservedSecret>, SinkError> {
        self.inner.observe(target).await
    }
    async fn observe_all(
        &self,
        targets: &[SecretTarget],
    ) -> std::result::Result<Vec<Option<ObservedSecret>>, SinkError> {
        self.inner.observe_all(targets).await
    }
    async fn current_value(
        &self,
        target: &SecretTarget,
    ) -> std::result::Result<Option<KeyValue>, SinkError> {
        self.inner.current_value(target).await
    }
    async fn write(&self, material: &SecretMaterial) -> std::result::Result<bool, SinkError> {
        let r = self.inner.write(material).await;
        if matches!(r, Ok(false)) {
            return r;
        }
        let id = material.key_id.clone();
        self.trail
            .note("write Secret", material.target.to_string(), r, |_| {
                Some(id.clone())
            })
    }
}
