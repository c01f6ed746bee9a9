//! The provider for DatoCMS: a keyward key is an API token with a role of its own, made
//! through the Content Management API (`https://site-api.datocms.com`, `X-Api-Version: 3`).
//!
//! The credential is an API token whose role may manage API tokens and roles
//! (`can_manage_access_tokens`, `can_manage_users`) with `can_access_cma`. A token's value is
//! only in the answers to its create and regenerate, which are made once (never retried), and
//! it is never read back.

pub(crate) mod capabilities;
pub(crate) mod mapping;

use super::http::{percent_encoded, Idempotent, JsonClient};
use super::ownership_tag::Stamps;
use super::{CallStats, CmsProvider, IssuedKey, LiveKey, ProviderError, Regeneration, Result};
use crate::model::{KeySpec, KeyValue};
use async_trait::async_trait;
use jiff::Timestamp;
use mapping::{Catalog, Role, Token, PROVIDER};
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

/// How long a catalog of environments and models is trusted.
const CATALOG_TTL: std::time::Duration = std::time::Duration::from_secs(30);

pub struct DatoCms {
    client: JsonClient,
    /// For the calls whose answer holds a new value: one attempt each.
    once: JsonClient,
    catalog: Mutex<Option<(Instant, Arc<Catalog>)>>,
}

impl std::fmt::Debug for DatoCms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatoCms")
            .field("endpoint", &self.client.base())
            .finish_non_exhaustive()
    }
}

/// The value in an answer to a create or regenerate.
fn value_of(answer: &Value) -> Option<KeyValue> {
    answer
        .pointer("/data/attributes/token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| KeyValue::new(t.to_owned()))
}

/// A JSON:API resource of `kind` with `attributes` (and `id`, `relationships` where given).
fn resource(
    kind: &str,
    id: Option<&str>,
    attributes: Value,
    relationships: Option<Value>,
) -> Value {
    let mut data = json!({ "type": kind, "attributes": attributes });
    if let Some(id) = id {
        data["id"] = json!(id);
    }
    if let Some(r) = relationships {
        data["relationships"] = r;
    }
    json!({ "data": data })
}

/// A token's attributes for `name` and the flags of `g`.
fn token_attributes(name: &str, g: &mapping::Grants) -> Value {
    json!({
        "name": name,
        "can_access_cda": g.cda,
        "can_access_cda_preview": g.cda_preview,
        "can_access_cma": g.cma,
    })
}

fn role_link(id: &str) -> Value {
    json!({ "role": { "data": { "type": "role", "id": id } } })
}

impl DatoCms {
    /// `credential` is a DatoCMS API token that may manage API tokens and roles.
    pub fn new(endpoint: &str, credential: &str) -> Result<DatoCms> {
        let token = credential.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ProviderError::Credential {
                provider: PROVIDER,
                reason: "a DatoCMS credential is an API token that may manage API tokens and roles",
            });
        }
        let client = |attempts: Option<u32>| {
            let mut c = JsonClient::new(endpoint, token);
            c.headers
                .insert("x-api-version", HeaderValue::from_static("3"));
            c.headers
                .insert(ACCEPT, HeaderValue::from_static("application/json"));
            if let Some(n) = attempts {
                c.retry.attempts = n;
            }
            c
        };
        Ok(DatoCms {
            client: client(None),
            once: client(Some(1)),
            catalog: Mutex::new(None),
        })
    }

    /// Trusts the CA certificates in `ca_pem` for both of its clients.
    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.client.trust(ca_pem)?;
        self.once.trust(ca_pem)
    }

    fn decode_err(&self, detail: impl std::fmt::Display) -> ProviderError {
        super::http::decode_error(self.client.base(), detail)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let idempotent = if method == Method::POST {
            Idempotent::No
        } else {
            Idempotent::Yes
        };
        self.client
            .call(method, path, body, idempotent)
            .await
            .map(|(_, v)| v)
    }

    /// A call whose answer holds a new value: one attempt, counted as this provider's write.
    async fn call_once(&self, path: &str, body: Option<&Value>) -> Result<KeyValue> {
        self.client.stats.write();
        let (_, v) = self
            .once
            .call(Method::POST, path, body, Idempotent::No)
            .await?;
        value_of(&v)
            .ok_or_else(|| self.decode_err(format!("POST {path} answered without the token")))
    }

    async fn catalog(&self) -> Result<Arc<Catalog>> {
        let mut cached = self.catalog.lock().await;
        if let Some((_, c)) = cached.as_ref().filter(|(at, _)| at.elapsed() < CATALOG_TTL) {
            return Ok(c.clone());
        }
        let envs = self.call(Method::GET, "/environments", None).await?;
        let models = self.call(Method::GET, "/item-types", None).await?;
        let c = Arc::new(Catalog::from_listings(&envs, &models).map_err(|e| self.decode_err(e))?);
        *cached = Some((Instant::now(), c.clone()));
        Ok(c)
    }

    fn parse_list<T>(
        &self,
        v: &Value,
        parse: fn(&Value) -> std::result::Result<T, String>,
    ) -> Result<Vec<T>> {
        v.get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| self.decode_err("a listing has no data array"))?
            .iter()
            .map(|x| parse(x).map_err(|e| self.decode_err(e)))
            .collect()
    }

    /// One token; `NotFound` when DatoCMS does not have it.
    async fn token(&self, id: &str) -> Result<Token> {
        let path = format!("/access_tokens/{}", percent_encoded(id));
        match self.call(Method::GET, &path, None).await {
            Ok(v) => {
                Token::parse(v.get("data").unwrap_or(&Value::Null)).map_err(|e| self.decode_err(e))
            }
            Err(ProviderError::Rejected { status: 404, .. }) => Err(ProviderError::NotFound(
                format!("DatoCMS has no API token {id}"),
            )),
            Err(e) => Err(e),
        }
    }

    /// The role of `token`, if it has one that still exists.
    async fn role_of(&self, token: &Token) -> Result<Option<Role>> {
        let Some(id) = &token.role else {
            return Ok(None);
        };
        match self
            .call(
                Method::GET,
                &format!("/roles/{}", percent_encoded(id)),
                None,
            )
            .await
        {
            Ok(v) => Role::parse(v.get("data").unwrap_or(&Value::Null))
                .map(Some)
                .map_err(|e| self.decode_err(e)),
            Err(ProviderError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A tagged token and its role as a live key.
    fn live(&self, token: &Token, role: Option<&Role>, catalog: &Catalog) -> Result<LiveKey> {
        mapping::live(token, role, catalog).ok_or_else(|| {
            self.decode_err(format!(
                "API token {} does not carry keyward's tag",
                token.id
            ))
        })
    }

    /// The stamps in `token`'s tag, or new ones.
    fn stamps(token: &Token) -> Stamps {
        token.tag().and_then(|(_, t)| t.stamps).unwrap_or(Stamps {
            created: Timestamp::now(),
            issued: None,
        })
    }

    /// Makes the token `id` hold `spec` with `stamps`: its role's name and entries first, then
    /// the token's name and flags (each written only if it differs). Returns it as it is now.
    async fn hold(&self, id: &str, spec: &KeySpec, stamps: Option<Stamps>) -> Result<LiveKey> {
        let catalog = self.catalog().await?;
        let g = mapping::encode(spec, &catalog)?;
        let mut token = self.token(id).await?;
        let stamps = stamps.unwrap_or_else(|| Self::stamps(&token));
        let role_name = mapping::role_name(spec);
        let role = match self.role_of(&token).await?.filter(|r| r.is_keywards(None)) {
            Some(r) if r.holds(&role_name, &g) => r,
            found => self.write_role(found.as_ref(), &role_name, &g).await?,
        };
        let name = mapping::token_name(spec, stamps);
        let wanted = (Some(&role.id), g.cda, g.cda_preview, g.cma);
        if token.name != name
            || (token.role.as_ref(), token.cda, token.cda_preview, token.cma) != wanted
        {
            let body = resource(
                "access_token",
                Some(id),
                token_attributes(&name, &g),
                Some(role_link(&role.id)),
            );
            let path = format!("/access_tokens/{}", percent_encoded(id));
            let v = self.call(Method::PUT, &path, Some(&body)).await?;
            token = Token::parse(v.get("data").unwrap_or(&Value::Null))
                .map_err(|e| self.decode_err(e))?;
        }
        self.live(&token, Some(&role), &catalog)
    }

    /// Puts back keyward's role `found` as `name` with the entries of `g`, or makes one.
    async fn write_role(
        &self,
        found: Option<&Role>,
        name: &str,
        g: &mapping::Grants,
    ) -> Result<Role> {
        let attrs = mapping::role_attributes(name, g);
        let v = match found {
            Some(r) => {
                let body = resource("role", Some(&r.id), attrs, None);
                let path = format!("/roles/{}", percent_encoded(&r.id));
                self.call(Method::PUT, &path, Some(&body)).await?
            }
            None => {
                let body = resource("role", None, attrs, None);
                self.call(Method::POST, "/roles", Some(&body)).await?
            }
        };
        Role::parse(v.get("data").unwrap_or(&Value::Null)).map_err(|e| self.decode_err(e))
    }
}

#[async_trait]
impl CmsProvider for DatoCms {
    fn stats(&self) -> &CallStats {
        &self.client.stats
    }

    fn capabilities(&self) -> Option<&'static crate::model::capabilities::Capabilities> {
        Some(&capabilities::CAPABILITIES)
    }

    /// DatoCMS holds rights per model and environment, drafts per token: the spec as a token
    /// and its role read back.
    async fn express(&self, spec: &KeySpec) -> Result<KeySpec> {
        mapping::canonical(spec, &*self.catalog().await?)
    }

    /// The project (`GET /site`).
    async fn check(&self) -> Result<()> {
        let v = self.call(Method::GET, "/site", None).await?;
        match v.pointer("/data/id") {
            Some(_) => Ok(()),
            None => Err(self.decode_err("GET /site answered without data.id")),
        }
    }

    /// Every token keyward tagged, with its role: two listings, whatever the number of keys.
    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        let catalog = self.catalog().await?;
        let tokens = self.call(Method::GET, "/access_tokens", None).await?;
        let tokens = self.parse_list(&tokens, Token::parse)?;
        if !tokens.iter().any(|t| t.tag().is_some()) {
            return Ok(Vec::new());
        }
        let roles = self.call(Method::GET, "/roles", None).await?;
        let roles: BTreeMap<String, Role> = self
            .parse_list(&roles, Role::parse)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        Ok(tokens
            .iter()
            .filter_map(|t| {
                let role = t
                    .role
                    .as_ref()
                    .and_then(|id| roles.get(id))
                    .filter(|r| r.is_keywards(None));
                mapping::live(t, role, &catalog)
            })
            .collect())
    }

    /// A role of its own, then the token with it (the role goes again if the token cannot be
    /// made).
    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        let catalog = self.catalog().await?;
        let g = mapping::encode(spec, &catalog)?;
        let role = self.write_role(None, &mapping::role_name(spec), &g).await?;
        let stamps = Stamps {
            created: Timestamp::now(),
            issued: None,
        };
        let body = resource(
            "access_token",
            None,
            token_attributes(&mapping::token_name(spec, stamps), &g),
            Some(role_link(&role.id)),
        );
        self.client.stats.write();
        let made = self
            .once
            .call(Method::POST, "/access_tokens", Some(&body), Idempotent::No)
            .await;
        let made = match made {
            Ok((_, v)) => v,
            Err(e) => {
                let _ = self
                    .call(
                        Method::DELETE,
                        &format!("/roles/{}", percent_encoded(&role.id)),
                        None,
                    )
                    .await;
                return Err(e);
            }
        };
        let value = value_of(&made)
            .ok_or_else(|| self.decode_err("POST /access_tokens answered without the token"))?;
        let token = Token::parse(made.get("data").unwrap_or(&Value::Null))
            .map_err(|e| self.decode_err(e))?;
        let key = self.live(&token, Some(&role), &catalog)?;
        Ok(IssuedKey { key, value })
    }

    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey> {
        self.hold(id, spec, None).await
    }

    async fn rename_key(&self, id: &str, name: &str) -> Result<()> {
        let catalog = self.catalog().await?;
        let token = self.token(id).await?;
        let role = self.role_of(&token).await?.filter(|r| r.is_keywards(None));
        let mut spec = self.live(&token, role.as_ref(), &catalog)?.spec;
        spec.name = name.to_owned();
        spec.labels.remove(mapping::LABEL_UNEXPRESSED);
        self.hold(id, &spec, None).await.map(drop)
    }

    /// DatoCMS tokens do not expire: a key due to expire is revoked now (only a replaced key
    /// gets here, after its successor is in its Secret).
    async fn set_expiry(&self, id: &str, _at: Timestamp) -> Result<()> {
        self.revoke_key(id).await
    }

    /// A new value for the same token: the old value answers 401 at once. The tag's `issued`
    /// is written first, so that a failed regenerate loses no value (the tag is a little early).
    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey> {
        super::without_overlap(&capabilities::CAPABILITIES, &how)?;
        let catalog = self.catalog().await?;
        let token = self.token(id).await?;
        let role = self.role_of(&token).await?.filter(|r| r.is_keywards(None));
        let mut spec = self.live(&token, role.as_ref(), &catalog)?.spec;
        spec.labels.remove(mapping::LABEL_UNEXPRESSED);
        let stamps = Stamps {
            created: Self::stamps(&token).created,
            issued: Some(Timestamp::now()),
        };
        // DatoCMS's update takes every attribute: the flags go back as they are.
        let flags = mapping::Grants {
            cda: token.cda,
            cda_preview: token.cda_preview,
            cma: token.cma,
            ..mapping::Grants::default()
        };
        let body = resource(
            "access_token",
            Some(id),
            token_attributes(&mapping::token_name(&spec, stamps), &flags),
            None,
        );
        let v = self
            .call(
                Method::PUT,
                &format!("/access_tokens/{}", percent_encoded(id)),
                Some(&body),
            )
            .await?;
        let token =
            Token::parse(v.get("data").unwrap_or(&Value::Null)).map_err(|e| self.decode_err(e))?;
        let value = self
            .call_once(
                &format!("/access_tokens/{}/regenerate_token", percent_encoded(id)),
                None,
            )
            .await?;
        let key = self.live(&token, role.as_ref(), &catalog)?;
        Ok(IssuedKey { key, value })
    }

    /// Deletes the token (401 at once), then keyward's role of it.
    async fn revoke_key(&self, id: &str) -> Result<()> {
        let token = match self.token(id).await {
            Ok(t) => t,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if token.tag().is_none() {
            return Err(ProviderError::Config {
                reason: format!("DatoCMS API token {id} does not carry keyward's tag: not revoked"),
            });
        }
        let role = self.role_of(&token).await?;
        match self
            .call(
                Method::DELETE,
                &format!("/access_tokens/{}", percent_encoded(id)),
                None,
            )
            .await
        {
            Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(r) = role.filter(|r| r.is_keywards(None)) {
            match self
                .call(
                    Method::DELETE,
                    &format!("/roles/{}", percent_encoded(&r.id)),
                    None,
                )
                .await
            {
                Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
