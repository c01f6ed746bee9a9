//! The provider for Directus: a keyward key is a Directus user with a static token that keyward
//! generates, and a policy of its own holding the key's rights as permission rows.
//!
//! The credential is a static token of a Directus admin user. Calls that carry a key value are
//! made once (no retry that could log a failed attempt) and their errors never carry the answer's
//! text when it could hold the value: Directus names the value in its duplicate-token error.

pub(crate) mod capabilities;
pub(crate) mod catalog;
pub(crate) mod mapping;
pub(crate) mod tag;

use super::http::{percent_encoded, Idempotent, JsonClient};
use super::{CallStats, CmsProvider, IssuedKey, LiveKey, ProviderError, Regeneration, Result};
use crate::model::{KeySpec, KeyValue};
use async_trait::async_trait;
use catalog::Catalog;
use jiff::Timestamp;
use mapping::{Row, User, PROVIDER, USER_FIELDS};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;
use tag::{compose_description, parse_description, Stamps};
use tokio::sync::Mutex;

/// How long a catalog of collections is trusted: collections added later get default
/// permissions on the next reconcile after this.
const CATALOG_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// What keyward's users are called besides their key's name (`last_name`).
const LAST_NAME: &str = "(keyward API key)";

pub struct Directus {
    client: JsonClient,
    /// For the calls that carry a key value: one attempt each.
    once: JsonClient,
    admin: secrecy::SecretString,
    catalog: Mutex<Option<(Instant, Arc<Catalog>)>>,
}

impl std::fmt::Debug for Directus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directus")
            .field("endpoint", &self.client.base())
            .finish_non_exhaustive()
    }
}

/// A new key value: 32 random bytes, URL-safe.
fn new_value() -> KeyValue {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    KeyValue::new(format!(
        "kw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The nested listings in full (Directus cuts relational lists at its default limit).
fn deep() -> String {
    percent_encoded(r#"{"policies":{"_limit":-1,"policy":{"permissions":{"_limit":-1}}}}"#)
}

/// A refusal of a call that carried `value`: Directus's duplicate-token answer names the
/// value, so such an answer is replaced, never passed on.
fn scrub(e: ProviderError, value: &KeyValue) -> ProviderError {
    match e {
        ProviderError::Rejected {
            endpoint,
            status,
            message,
        } => {
            let hides = message.contains(value.expose())
                || (status == 400 && message.to_ascii_lowercase().contains("token"));
            let message = if hides {
                "Directus refused the key value keyward generated (its answer is not shown: it holds the value)".to_owned()
            } else {
                message
            };
            ProviderError::Rejected {
                endpoint,
                status,
                message,
            }
        }
        other => other,
    }
}

impl Directus {
    /// `credential` is a static token of a Directus admin user.
    pub fn new(endpoint: &str, credential: &str) -> Result<Directus> {
        let token = credential.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ProviderError::Credential {
                provider: PROVIDER,
                reason: "a Directus credential is the static token of an admin user",
            });
        }
        let mut once = JsonClient::new(endpoint, token);
        once.retry.attempts = 1;
        Ok(Directus {
            client: JsonClient::new(endpoint, token),
            once,
            admin: token.to_owned().into(),
            catalog: Mutex::new(None),
        })
    }

    /// Trusts the CA certificates in `ca_pem` for both of its clients.
    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.client.trust(ca_pem)?;
        self.once.trust(ca_pem)
    }

    fn decode_err(&self, detail: impl std::fmt::Display) -> ProviderError {
        crate::providers::http::decode_error(self.client.base(), detail)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<Value> {
        self.client
            .call(method, path, body, idempotent)
            .await
            .map(|(_, v)| v)
    }

    /// A write that carries `value`: one attempt (its own client), counted as the provider's
    /// write, its refusal scrubbed.
    async fn call_with_value(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        value: &KeyValue,
    ) -> Result<Value> {
        self.client.stats.write();
        let admin = secrecy::ExposeSecret::expose_secret(&self.admin);
        self.once
            .call_as(admin, method, path, Some(body), Idempotent::No)
            .await
            .map(|(_, v)| v)
            .map_err(|e| scrub(e, value))
    }

    async fn catalog(&self) -> Result<Arc<Catalog>> {
        let mut cached = self.catalog.lock().await;
        if let Some((_, c)) = cached.as_ref().filter(|(at, _)| at.elapsed() < CATALOG_TTL) {
            return Ok(c.clone());
        }
        let cols = self
            .call(Method::GET, "/collections?limit=-1", None, Idempotent::Yes)
            .await?;
        let fields = self
            .call(Method::GET, "/fields?limit=-1", None, Idempotent::Yes)
            .await?;
        let c = Arc::new(Catalog::from_listings(&cols, &fields).map_err(|e| self.decode_err(e))?);
        *cached = Some((Instant::now(), c.clone()));
        Ok(c)
    }

    /// The users whose description contains `tag` (a prefix of keyward's ownership tag).
    async fn list_tagged(&self, tag: &str) -> Result<Vec<LiveKey>> {
        let catalog = self.catalog().await?;
        let filter = percent_encoded(&json!({"description": {"_contains": tag}}).to_string());
        let path = format!(
            "/users?limit=-1&fields={USER_FIELDS}&deep={}&filter={filter}",
            deep()
        );
        let v = self.call(Method::GET, &path, None, Idempotent::Yes).await?;
        let users = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| self.decode_err("the user listing has no data array"))?;
        users
            .iter()
            .map(|u| {
                User::parse(u)
                    .map(|u| u.live(&catalog))
                    .map_err(|e| self.decode_err(e))
            })
            .collect()
    }

    fn user_of(&self, answer: &Value) -> Result<User> {
        User::parse(answer.get("data").unwrap_or(&Value::Null)).map_err(|e| self.decode_err(e))
    }

    /// One user; `NotFound` when Directus does not have it (Directus answers 403 to an admin
    /// for an id it does not have, as it does for any item it hides).
    async fn user(&self, id: &str) -> Result<User> {
        let path = format!(
            "/users/{}?fields={USER_FIELDS}&deep={}",
            percent_encoded(id),
            deep()
        );
        match self.call(Method::GET, &path, None, Idempotent::Yes).await {
            Ok(v) => self.user_of(&v),
            Err(ProviderError::Rejected {
                status: 403 | 404, ..
            }) => Err(ProviderError::NotFound(format!(
                "Directus has no user {id}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Makes `policy`'s rows `desired`: the missing ones first, then the others removed, so
    /// no right the key keeps is missing in between.
    async fn sync_rows(&self, policy: &mapping::Policy, desired: &[Row]) -> Result<()> {
        let mut kept = vec![false; desired.len()];
        let mut delete = Vec::new();
        for (row_id, row) in &policy.rows {
            let at = row
                .as_ref()
                .ok()
                .and_then(|r| (0..desired.len()).find(|i| !kept[*i] && desired[*i] == *r));
            match at {
                Some(i) => kept[i] = true,
                None => delete.push(row_id.clone()),
            }
        }
        let create: Vec<Value> = desired
            .iter()
            .zip(&kept)
            .filter(|(_, k)| !**k)
            .map(|(r, _)| {
                let mut v = r.to_json();
                v["policy"] = json!(policy.id);
                v
            })
            .collect();
        self.bulk_permissions(Method::POST, create, Idempotent::No)
            .await?;
        self.bulk_permissions(Method::DELETE, delete, Idempotent::Yes)
            .await
    }

    /// One bulk call on `/permissions` (rows to create, or ids to delete); none without rows.
    async fn bulk_permissions(
        &self,
        method: Method,
        rows: Vec<Value>,
        idempotent: Idempotent,
    ) -> Result<()> {
        if !rows.is_empty() {
            self.call(
                method,
                "/permissions",
                Some(&Value::Array(rows)),
                idempotent,
            )
            .await?;
        }
        Ok(())
    }

    /// A new policy for a key, as a nested create.
    fn new_policy(name: &str, rows: &[Row]) -> Value {
        json!({
            "name": name,
            "description": mapping::POLICY_DESCRIPTION,
            "icon": "key",
            "admin_access": false,
            "app_access": false,
            "enforce_tfa": false,
            "permissions": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }

    /// The user fields that differ from what `spec` wants (its policy's rows aside).
    fn user_patch(user: &User, spec: &KeySpec, rows: &[Row]) -> Map<String, Value> {
        let stamps = parse_description(&user.description)
            .stamps
            .unwrap_or(Stamps {
                created: Timestamp::now(),
                issued: None,
            });
        let mut patch = Map::new();
        let description = compose_description(spec, stamps);
        if user.description != description {
            patch.insert("description".into(), json!(description));
        }
        if user.first_name != mapping::first_name(&spec.name) {
            patch.insert("first_name".into(), json!(mapping::first_name(&spec.name)));
        }
        if !user.active {
            patch.insert("status".into(), json!("active"));
        }
        if user.has_role {
            patch.insert("role".into(), Value::Null);
        }
        let delete: Vec<&Value> = user.other_access.iter().map(|(id, _)| id).collect();
        let create: Vec<Value> = match user.policy {
            None => vec![json!({ "policy": Self::new_policy(&spec.name, rows) })],
            Some(_) => Vec::new(),
        };
        if !delete.is_empty() || !create.is_empty() {
            patch.insert(
                "policies".into(),
                json!({ "create": create, "update": [], "delete": delete }),
            );
        }
        patch
    }
}

#[async_trait]
impl CmsProvider for Directus {
    fn stats(&self) -> &CallStats {
        &self.client.stats
    }

    fn capabilities(&self) -> Option<&'static crate::model::capabilities::Capabilities> {
        Some(&capabilities::CAPABILITIES)
    }

    /// Directus grants a policy's permission rows per collection: the spec as those rows read
    /// back (drafts only where a collection has a status field).
    async fn express(&self, spec: &KeySpec) -> Result<KeySpec> {
        mapping::canonical(spec, &*self.catalog().await?)
    }

    /// The token's user (`GET /users/me?fields=id`).
    async fn check(&self) -> Result<()> {
        let v = self
            .call(Method::GET, "/users/me?fields=id", None, Idempotent::Yes)
            .await?;
        match v.pointer("/data/id") {
            Some(_) => Ok(()),
            None => Err(ProviderError::Decode {
                endpoint: self.client.base().to_owned(),
                detail: "GET /users/me answered without data.id".into(),
            }),
        }
    }

    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        self.list_tagged(tag::TAG_OPEN).await
    }

    /// One policy's keys, filtered by Directus: the tag starts with the policy.
    async fn list_keys_labeled(&self, name: &str, value: &str) -> Result<Vec<LiveKey>> {
        let keys = if name == crate::model::desired::LABEL_POLICY {
            self.list_tagged(&format!("{}policy={value} ", tag::TAG_OPEN))
                .await?
        } else {
            self.list_keys().await?
        };
        Ok(keys
            .into_iter()
            .filter(|k| k.spec.labels.get(name).map(String::as_str) == Some(value))
            .collect())
    }

    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        let catalog = self.catalog().await?;
        let rows = mapping::encode(spec, &catalog)?;
        let value = new_value();
        let stamps = Stamps {
            created: Timestamp::now(),
            issued: None,
        };
        let body = json!({
            "first_name": mapping::first_name(&spec.name),
            "last_name": LAST_NAME,
            "description": compose_description(spec, stamps),
            "status": "active",
            "token": value.expose(),
            "policies": {
                "create": [{ "policy": Self::new_policy(&spec.name, &rows) }],
                "update": [],
                "delete": [],
            },
        });
        let path = format!("/users?fields={USER_FIELDS}&deep={}", deep());
        let v = self
            .call_with_value(Method::POST, &path, &body, &value)
            .await?;
        let key = self.user_of(&v)?.live(&catalog);
        Ok(IssuedKey { key, value })
    }

    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey> {
        let catalog = self.catalog().await?;
        let rows = mapping::encode(spec, &catalog)?;
        let user = self.user(id).await?;
        if let Some(p) = &user.policy {
            self.sync_rows(p, &rows).await?;
            if p.name != spec.name || p.admin_access || p.app_access {
                let body = json!({"name": spec.name, "admin_access": false, "app_access": false});
                self.call(
                    Method::PATCH,
                    &format!("/policies/{}", percent_encoded(&p.id)),
                    Some(&body),
                    Idempotent::Yes,
                )
                .await?;
            }
        }
        let patch = Self::user_patch(&user, spec, &rows);
        if !patch.is_empty() {
            self.call(
                Method::PATCH,
                &format!("/users/{}", percent_encoded(id)),
                Some(&Value::Object(patch)),
                Idempotent::Yes,
            )
            .await?;
        }
        Ok(self.user(id).await?.live(&catalog))
    }

    async fn rename_key(&self, id: &str, name: &str) -> Result<()> {
        let user = self.user(id).await?;
        if let Some(p) = &user.policy {
            self.call(
                Method::PATCH,
                &format!("/policies/{}", percent_encoded(&p.id)),
                Some(&json!({ "name": name })),
                Idempotent::Yes,
            )
            .await?;
        }
        self.call(
            Method::PATCH,
            &format!("/users/{}", percent_encoded(id)),
            Some(&json!({ "first_name": mapping::first_name(name) })),
            Idempotent::Yes,
        )
        .await
        .map(drop)
    }

    /// Directus tokens do not expire: a key due to expire is revoked now (only a replaced key
    /// gets here, after its successor is in its Secret).
    async fn set_expiry(&self, id: &str, _at: Timestamp) -> Result<()> {
        self.revoke_key(id).await
    }

    /// A new token on the same user: the old value answers 401 at once (no overlap).
    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey> {
        super::without_overlap(&capabilities::CAPABILITIES, &how)?;
        let catalog = self.catalog().await?;
        let user = self.user(id).await?;
        let parsed = parse_description(&user.description);
        let mut spec = user.live(&catalog).spec;
        spec.description = parsed.own;
        let stamps = Stamps {
            created: parsed.stamps.map_or_else(Timestamp::now, |s| s.created),
            issued: Some(Timestamp::now()),
        };
        let value = new_value();
        let body = json!({
            "token": value.expose(),
            "description": compose_description(&spec, stamps),
        });
        let path = format!(
            "/users/{}?fields={USER_FIELDS}&deep={}",
            percent_encoded(id),
            deep()
        );
        let v = self
            .call_with_value(Method::PATCH, &path, &body, &value)
            .await?;
        let key = self.user_of(&v)?.live(&catalog);
        Ok(IssuedKey { key, value })
    }

    /// Deletes the user (its token answers 401 at once), then keyward's policy of it.
    async fn revoke_key(&self, id: &str) -> Result<()> {
        let user = match self.user(id).await {
            Ok(u) => u,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if parse_description(&user.description).labels.is_empty() {
            return Err(ProviderError::Config {
                reason: format!("Directus user {id} does not carry keyward's tag: not revoked"),
            });
        }
        match self
            .call(
                Method::DELETE,
                &format!("/users/{}", percent_encoded(id)),
                None,
                Idempotent::Yes,
            )
            .await
        {
            Ok(_)
            | Err(ProviderError::Rejected {
                status: 403 | 404, ..
            }) => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = &user.policy {
            self.call(
                Method::DELETE,
                &format!("/policies/{}", percent_encoded(&p.id)),
                None,
                Idempotent::Yes,
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_that_names_the_value_never_passes_it_on() {
        let value = new_value();
        assert!(value.expose().starts_with("kw_") && value.expose().len() > 40);
        assert_ne!(new_value(), value);
        let dup = ProviderError::Rejected {
            endpoint: "http://d".into(),
            status: 400,
            message: format!(
                "Value \"{}\" for field \"token\" in collection \"directus_users\" has to be unique.",
                value.expose()
            ),
        };
        let shown = scrub(dup, &value).to_string();
        assert!(!shown.contains(value.expose()), "{shown}");
        assert!(
            shown.contains("answered 400: Directus refused the key value"),
            "{shown}"
        );
        let other = ProviderError::Rejected {
            endpoint: "http://d".into(),
            status: 403,
            message: "You don't have permission to access this.".into(),
        };
        assert!(scrub(other, &value)
            .to_string()
            .ends_with("You don't have permission to access this."));
    }
}
