//! The provider for keyward's reference CMS (`keyward cms serve`).

use super::http::{Idempotent, JsonClient};
use super::{
    CallStats, CmsProvider, IssuedKey, LiveKey, LiveSettings, ProviderError, Regeneration, Result,
};
use crate::model::live::OwnedSettings;
use crate::model::normalize;
use crate::model::{ContentOp, KeySpec, KeyValue};
use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

pub struct ReferenceCms {
    client: JsonClient,
}

impl ReferenceCms {
    /// A PUT that replaces what is at `path` (so it may be retried).
    async fn put(&self, path: &str, body: Value) -> Result<()> {
        self.client
            .call(Method::PUT, path, Some(&body), Idempotent::Yes)
            .await?;
        Ok(())
    }

    /// The keys a listing at `path` answers with.
    async fn list_at(&self, path: &str) -> Result<Vec<LiveKey>> {
        let (_, v) = self
            .client
            .call(Method::GET, path, None, Idempotent::Yes)
            .await?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| self.decode("no keys array"))?;
        keys.iter().map(|k| self.live_key(k)).collect()
    }

    pub fn new(endpoint: &str, token: &str) -> ReferenceCms {
        ReferenceCms {
            client: JsonClient::new(endpoint, token),
        }
    }

    pub fn client_mut(&mut self) -> &mut JsonClient {
        &mut self.client
    }

    fn decode(&self, detail: impl std::fmt::Display) -> ProviderError {
        super::http::decode_error(self.client.base(), detail)
    }

    /// Splits a key record from the management API into its spec and its bookkeeping.
    fn live_key(&self, v: &Value) -> Result<LiveKey> {
        let mut m = v
            .as_object()
            .cloned()
            .ok_or_else(|| self.decode("a key record is not an object"))?;
        let take = |m: &mut serde_json::Map<String, Value>, f: &str| {
            m.remove(f).and_then(|v| v.as_str().map(str::to_owned))
        };
        let id = take(&mut m, "id").ok_or_else(|| self.decode("a key record has no id"))?;
        let ts = |s: Option<String>| s.and_then(|s| s.parse::<Timestamp>().ok());
        let created_at = ts(take(&mut m, "createdAt"))
            .ok_or_else(|| self.decode("a key record has no createdAt"))?;
        let rotated_at = ts(take(&mut m, "rotatedAt"));
        for f in [
            "updatedAt",
            "previousValidUntil",
            "earlierValuesValidUntil",
            "key",
        ] {
            m.remove(f);
        }
        let spec: KeySpec = serde_json::from_value(Value::Object(m))
            .map_err(|e| self.decode(format!("key {id}: {e}")))?;
        Ok(LiveKey {
            id,
            spec: normalize(spec),
            created_at,
            rotated_at,
        })
    }

    fn issued(&self, v: &Value) -> Result<IssuedKey> {
        let value = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| self.decode("no key value in the answer"))?;
        Ok(IssuedKey {
            key: self.live_key(v)?,
            value: KeyValue::new(value),
        })
    }

    /// `PATCH /v1/keys/{id}` with some of a key's fields; the key record as it is now.
    async fn patch_key(&self, id: &str, body: Value) -> Result<Value> {
        let (_, v) = self
            .client
            .call(
                Method::PATCH,
                &format!("/v1/keys/{id}"),
                Some(&body),
                Idempotent::Yes,
            )
            .await?;
        Ok(v)
    }

    /// Creates every API in `apis` that does not exist yet; returns the ones it created.
    pub async fn ensure_apis(&self, apis: &BTreeSet<String>) -> Result<Vec<String>> {
        let mut created = Vec::new();
        let (_, v) = self
            .client
            .call(Method::GET, "/v1/apis", None, Idempotent::Yes)
            .await?;
        let existing: BTreeSet<&str> = v
            .get("apis")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("name").and_then(Value::as_str))
            .collect();
        for api in apis.iter().filter(|a| !existing.contains(a.as_str())) {
            let (status, _) = self
                .client
                .call(
                    Method::PUT,
                    &format!("/v1/apis/{api}"),
                    None,
                    Idempotent::Yes,
                )
                .await?;
            if status == StatusCode::CREATED {
                created.push(api.clone());
            }
        }
        Ok(created)
    }
}

fn not_found(e: ProviderError) -> Result<()> {
    match e {
        ProviderError::Rejected { status: 404, .. } => Ok(()),
        other => Err(other),
    }
}

#[async_trait]
impl CmsProvider for ReferenceCms {
    fn stats(&self) -> &CallStats {
        &self.client.stats
    }

    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        self.list_at("/v1/keys").await
    }

    /// The list of APIs: small, and only an admin may read it.
    async fn check(&self) -> Result<()> {
        let (_, v) = self
            .client
            .call(Method::GET, "/v1/apis", None, Idempotent::Yes)
            .await?;
        match v.get("apis").and_then(Value::as_array) {
            Some(_) => Ok(()),
            None => Err(ProviderError::Decode {
                endpoint: self.client.base().to_owned(),
                detail: "GET /v1/apis answered without an apis list".into(),
            }),
        }
    }

    async fn verify_value(&self, id: &str, value: &crate::model::KeyValue) -> Result<bool> {
        let answer = self
            .client
            .call_as(
                value.expose(),
                Method::GET,
                "/v1/self",
                None,
                Idempotent::Yes,
            )
            .await;
        match answer {
            Ok((_, v)) => Ok(v.get("id").and_then(Value::as_str) == Some(id)),
            Err(ProviderError::Rejected { status: 401, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_keys_labeled(&self, name: &str, value: &str) -> Result<Vec<LiveKey>> {
        let q = format!("{name}={value}");
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        self.list_at(&format!("/v1/keys?label={enc}")).await
    }

    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        let body = serde_json::to_value(spec).map_err(|e| self.decode(e))?;
        let (_, v) = self
            .client
            .call(Method::POST, "/v1/keys", Some(&body), Idempotent::No)
            .await?;
        self.issued(&v)
    }

    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey> {
        let body = json!({
            "name": spec.name,
            "description": spec.description,
            "defaultPermissions": spec.default_permissions,
            "apiPermissions": spec.api_permissions,
            "scopes": spec.scopes,
            "environments": spec.environments,
            "managementPermissions": spec.management_permissions,
            "labels": spec.labels,
        });
        let v = self.patch_key(id, body).await?;
        self.live_key(&v)
    }

    async fn rename_key(&self, id: &str, name: &str) -> Result<()> {
        self.patch_key(id, json!({ "name": name })).await.map(drop)
    }

    async fn set_expiry(&self, id: &str, at: Timestamp) -> Result<()> {
        self.patch_key(id, json!({ "expiresAt": crate::model::rfc3339(at) }))
            .await
            .map(drop)
    }

    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey> {
        let body = json!({
            "graceSeconds": how.grace.as_secs(),
            "expiresAt": how.expires_at.map(crate::model::rfc3339),
        });
        let (_, v) = self
            .client
            .call(
                Method::POST,
                &format!("/v1/keys/{id}/regenerate"),
                Some(&body),
                Idempotent::No,
            )
            .await?;
        self.issued(&v)
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        match self
            .client
            .call(
                Method::DELETE,
                &format!("/v1/keys/{id}"),
                None,
                Idempotent::Yes,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => not_found(e),
        }
    }

    /// The reference CMS hashes on one worker per core and queues the rest: enough creates
    /// under way to keep every core of a large machine busy, few enough to stay polite.
    fn parallel_creates(&self) -> usize {
        8
    }

    async fn settings(&self, apis: &BTreeSet<String>, owner: Option<&str>) -> Result<LiveSettings> {
        /// An owner's entry as `GET /v1/owners` lists it.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            #[serde(default)]
            origins: BTreeSet<String>,
            #[serde(default)]
            public_endpoints: BTreeMap<String, BTreeSet<ContentOp>>,
        }
        let owners_path = match owner {
            Some(o) => format!("/v1/owners?owner={o}"),
            None => "/v1/owners".to_owned(),
        };
        let (_, v) = self
            .client
            .call(Method::GET, &owners_path, None, Idempotent::Yes)
            .await?;
        let owners: BTreeMap<String, Entry> =
            serde_json::from_value(v.get("owners").cloned().unwrap_or(Value::Null))
                .map_err(|e| self.decode(e))?;
        let mut out = LiveSettings {
            owners: owners
                .into_iter()
                .map(|(owner, e)| {
                    let s = OwnedSettings {
                        cors: e.origins,
                        public: e.public_endpoints,
                    };
                    (owner, s)
                })
                .collect(),
            ..Default::default()
        };
        if apis.is_empty() {
            return Ok(out);
        }
        let (_, v) = self
            .client
            .call(Method::GET, "/v1/apis", None, Idempotent::Yes)
            .await?;
        out.apis = v
            .get("apis")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("name").and_then(Value::as_str))
            .filter(|name| apis.contains(*name))
            .map(str::to_owned)
            .collect();
        Ok(out)
    }

    async fn set_cors(&self, owner: &str, origins: &BTreeSet<String>) -> Result<()> {
        self.put(
            &format!("/v1/cors/owners/{owner}"),
            json!({ "origins": origins }),
        )
        .await
    }

    async fn set_public(&self, owner: &str, api: &str, ops: &BTreeSet<ContentOp>) -> Result<()> {
        self.put(
            &format!("/v1/apis/{api}/public/owners/{owner}"),
            json!({ "operations": ops }),
        )
        .await
    }

    async fn remove_settings_owner(&self, owner: &str) -> Result<()> {
        let path = format!("/v1/owners/{owner}");
        self.client
            .call(Method::DELETE, &path, None, Idempotent::Yes)
            .await?;
        Ok(())
    }
}
