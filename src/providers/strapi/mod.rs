//! The provider for Strapi's API tokens, through its admin API (`/admin/api-tokens`).
//!
//! It signs in once (`POST /admin/login` is rate-limited, 5 per 5 minutes) and reuses the admin
//! JWT until shortly before it expires or Strapi answers 401. The credential is `email:password`
//! of a Strapi admin user.

pub(crate) mod capabilities;
pub(crate) mod catalog;
pub(crate) mod mapping;
pub(crate) mod tag;

use super::http::{Idempotent, JsonClient};
use super::{CallStats, CmsProvider, IssuedKey, LiveKey, ProviderError, Regeneration, Result};
use crate::model::{KeySpec, KeyValue};
use async_trait::async_trait;
use base64::Engine as _;
use catalog::Catalog;
use jiff::{SignedDuration, Timestamp};
use mapping::unsupported;
use mapping::PROVIDER;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

/// How long a catalog of APIs is trusted (new content types need a Strapi restart anyway).
const CATALOG_TTL: std::time::Duration = std::time::Duration::from_secs(60);

struct Session {
    jwt: secrecy::SecretString,
    /// Renew before this: the JWT's own expiry minus a minute.
    renew_at: Instant,
}

pub struct Strapi {
    client: JsonClient,
    /// Signs in without retrying: a retried sign-in would spend the rate limit, and the call
    /// holds the session lock every other call waits for.
    login: JsonClient,
    email: String,
    password: secrecy::SecretString,
    session: Mutex<Option<Session>>,
    catalog: Mutex<Option<(Instant, Arc<Catalog>)>>,
    logins: AtomicU64,
}

impl std::fmt::Debug for Strapi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strapi")
            .field("endpoint", &self.client.base())
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl Strapi {
    /// `credential` is `email:password` of a Strapi admin user.
    pub fn new(endpoint: &str, credential: &str) -> Result<Strapi> {
        let (email, password) = credential
            .trim()
            .split_once(':')
            .filter(|(e, p)| e.contains('@') && !p.is_empty())
            .ok_or(ProviderError::Credential {
                provider: PROVIDER,
                reason: "a Strapi credential is `email:password` of an admin user",
            })?;
        let mut login = JsonClient::new(endpoint, "");
        login.retry.attempts = 1;
        Ok(Strapi {
            client: JsonClient::new(endpoint, ""),
            login,
            email: email.to_owned(),
            password: password.to_owned().into(),
            session: Mutex::new(None),
            catalog: Mutex::new(None),
            logins: AtomicU64::new(0),
        })
    }

    pub fn client_mut(&mut self) -> &mut JsonClient {
        &mut self.client
    }

    /// Sign-ins so far (one per JWT lifetime, not one per call).
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    fn decode_err(&self, detail: impl std::fmt::Display) -> ProviderError {
        crate::providers::http::decode_error(self.client.base(), detail)
    }

    /// Trusts the CA certificates in `ca_pem` for both of its clients.
    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.client.trust(ca_pem)?;
        self.login.trust(ca_pem)
    }

    /// The session's JWT; `rejected`: the JWT that got a 401, to be replaced unless another
    /// call has replaced it already.
    async fn jwt(&self, rejected: Option<&str>) -> Result<String> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref().filter(|s| {
            s.renew_at > Instant::now()
                && rejected.is_none_or(|r| r != secrecy::ExposeSecret::expose_secret(&s.jwt))
        }) {
            return Ok(secrecy::ExposeSecret::expose_secret(&s.jwt).to_owned());
        }
        let password = secrecy::ExposeSecret::expose_secret(&self.password);
        let body = json!({ "email": self.email, "password": password });
        // Signing in changes nothing in the CMS: its own client, whose calls are not counted
        // with the provider's reads and writes.
        let (_, v) = self
            .login
            .call_as(
                "",
                Method::POST,
                "/admin/login",
                Some(&body),
                Idempotent::Yes,
            )
            .await?;
        let jwt = v
            .pointer("/data/token")
            .and_then(Value::as_str)
            .ok_or_else(|| self.decode_err("the login answer has no data.token"))?
            .to_owned();
        self.logins.fetch_add(1, Ordering::Relaxed);
        let lifetime = jwt_lifetime(&jwt).unwrap_or(std::time::Duration::from_secs(600));
        *session = Some(Session {
            renew_at: Instant::now() + lifetime.saturating_sub(std::time::Duration::from_secs(60)),
            jwt: jwt.clone().into(),
        });
        Ok(jwt)
    }

    /// An admin-API call; a 401 (JWT revoked or expired early) signs in again once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: Idempotent,
    ) -> Result<Value> {
        let jwt = self.jwt(None).await?;
        match self
            .client
            .call_as(&jwt, method.clone(), path, body, idempotent)
            .await
        {
            Err(ProviderError::Rejected { status: 401, .. }) => {
                let jwt = self.jwt(Some(&jwt)).await?;
                let (_, v) = self
                    .client
                    .call_as(&jwt, method, path, body, idempotent)
                    .await?;
                Ok(v)
            }
            other => other.map(|(_, v)| v),
        }
    }

    async fn catalog(&self) -> Result<Arc<Catalog>> {
        let mut cached = self.catalog.lock().await;
        if let Some((_, c)) = cached.as_ref().filter(|(at, _)| at.elapsed() < CATALOG_TTL) {
            return Ok(c.clone());
        }
        let perms = self
            .call(
                Method::GET,
                "/admin/content-api/permissions",
                None,
                Idempotent::Yes,
            )
            .await?;
        let routes = self
            .call(
                Method::GET,
                "/admin/content-api/routes",
                None,
                Idempotent::Yes,
            )
            .await?;
        let c = Arc::new(Catalog::from_listings(&perms, &routes).map_err(|e| self.decode_err(e))?);
        *cached = Some((Instant::now(), c.clone()));
        Ok(c)
    }

    fn live(&self, token: &Value, catalog: &Catalog) -> Result<LiveKey> {
        mapping::decode(token, catalog).map_err(|e| self.decode_err(e))
    }

    /// The key value of a create or regenerate answer; the rest of the record stays a record.
    fn take_value(&self, v: &mut Value) -> Result<KeyValue> {
        let value = v
            .get_mut("data")
            .and_then(Value::as_object_mut)
            .and_then(|d| d.remove("accessKey"))
            .and_then(|k| k.as_str().map(KeyValue::new))
            .ok_or_else(|| self.decode_err("no accessKey in the answer"))?;
        Ok(value)
    }

    async fn token(&self, id: &str) -> Result<Value> {
        let mut v = self
            .call(
                Method::GET,
                &format!("/admin/api-tokens/{id}"),
                None,
                Idempotent::Yes,
            )
            .await?;
        // With an encryption key Strapi shows the value again here; keyward never keeps it.
        if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
            d.remove("accessKey");
        }
        v.get("data")
            .cloned()
            .filter(|d| d.is_object())
            .ok_or_else(|| ProviderError::NotFound(format!("Strapi has no API token {id}")))
    }

    async fn create_token(&self, body: &Value) -> Result<IssuedKey> {
        let catalog = self.catalog().await?;
        let mut v = self
            .call(
                Method::POST,
                "/admin/api-tokens",
                Some(body),
                Idempotent::No,
            )
            .await?;
        let value = self.take_value(&mut v)?;
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        Ok(IssuedKey {
            key: self.live(&data, &catalog)?,
            value,
        })
    }
}

/// Seconds from now until a JWT's `exp` (read without checking the signature: only for timing).
fn jwt_lifetime(jwt: &str) -> Option<std::time::Duration> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    let left = exp - Timestamp::now().as_second();
    (left > 0).then(|| std::time::Duration::from_secs(left as u64))
}

#[async_trait]
impl CmsProvider for Strapi {
    fn stats(&self) -> &CallStats {
        &self.client.stats
    }

    fn capabilities(&self) -> Option<&'static crate::model::capabilities::Capabilities> {
        Some(&capabilities::CAPABILITIES)
    }

    /// Strapi grants actions per content type, and one action may serve several APIs: the
    /// spec as its token's actions read back (PUT alone is PUT and PATCH).
    async fn express(&self, spec: &KeySpec) -> Result<KeySpec> {
        mapping::canonical(spec, &*self.catalog().await?)
    }

    /// The signed-in admin (`GET /admin/users/me`), with the session's JWT: no sign-in unless
    /// the session has none.
    async fn check(&self) -> Result<()> {
        let v = self
            .call(Method::GET, "/admin/users/me", None, Idempotent::Yes)
            .await?;
        match v.pointer("/data/id") {
            Some(_) => Ok(()),
            None => Err(ProviderError::Decode {
                endpoint: self.client.base().to_owned(),
                detail: "GET /admin/users/me answered without data.id".into(),
            }),
        }
    }

    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        let catalog = self.catalog().await?;
        let v = self
            .call(Method::GET, "/admin/api-tokens", None, Idempotent::Yes)
            .await?;
        let tokens = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| self.decode_err("the token listing has no data array"))?;
        tokens.iter().map(|t| self.live(t, &catalog)).collect()
    }

    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        let catalog = self.catalog().await?;
        let fields = mapping::encode(spec, &catalog)?;
        let lifespan = mapping::lifespan_ms(spec.expires_at, Timestamp::now())?;
        let body = json!({
            "name": spec.name,
            "description": fields.description,
            "type": fields.token_type,
            "permissions": fields.permissions,
            "lifespan": lifespan,
        });
        self.create_token(&body).await
    }

    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey> {
        let catalog = self.catalog().await?;
        let fields = mapping::encode(spec, &catalog)?;
        let body = json!({
            "name": spec.name,
            "description": fields.description,
            "type": fields.token_type,
            "permissions": fields.permissions,
        });
        let v = self
            .call(
                Method::PUT,
                &format!("/admin/api-tokens/{id}"),
                Some(&body),
                Idempotent::Yes,
            )
            .await?;
        self.live(v.get("data").unwrap_or(&Value::Null), &catalog)
    }

    async fn rename_key(&self, id: &str, name: &str) -> Result<()> {
        self.call(
            Method::PUT,
            &format!("/admin/api-tokens/{id}"),
            Some(&json!({ "name": name })),
            Idempotent::Yes,
        )
        .await
        .map(drop)
    }

    /// Strapi cannot change a lifespan, and has no overlap: a key due to expire is revoked now
    /// (only a replaced key gets here, after its successor is in its Secret).
    async fn set_expiry(&self, id: &str, at: Timestamp) -> Result<()> {
        let t = self.token(id).await?;
        let expires = t
            .get("expiresAt")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok());
        if expires.is_some_and(|e| e <= at) {
            return Ok(());
        }
        self.revoke_key(id).await
    }

    /// A new value. Strapi's regenerate keeps the token's expiry, so an expiring token is
    /// renewed instead: the old one is renamed aside and keeps working until it expires (the
    /// plan revokes it then), and a new one with a full lifespan takes its name.
    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey> {
        let Regeneration {
            grace,
            expires_at,
            expiring,
        } = how;
        if grace > SignedDuration::ZERO {
            return Err(unsupported(
                "rotationOverlap",
                "Strapi's regenerate ends the old value at once; it has no overlap",
            ));
        }
        let catalog = self.catalog().await?;
        let current = self.token(id).await?;
        let live = self.live(&current, &catalog)?;
        // A lost value is regenerated (it dies at once); an expiring one, or one already expired
        // (regenerating would keep it expired), is renewed.
        let renew = expiring
            || live
                .expires_at()
                .is_some_and(|e| e <= Timestamp::now() + SignedDuration::from_mins(1));
        if !renew {
            let mut v = self
                .call(
                    Method::POST,
                    &format!("/admin/api-tokens/{id}/regenerate"),
                    None,
                    Idempotent::No,
                )
                .await?;
            // Regenerate changes nothing but the value: the record read before is current, and
            // no further call stands between the new value and its Secret.
            let value = self.take_value(&mut v)?;
            return Ok(IssuedKey { key: live, value });
        }
        let parked: String = format!("replaced.{id}.{}", live.spec.name)
            .chars()
            .take(100)
            .collect();
        self.rename_key(id, &parked).await?;
        let body = json!({
            "name": live.spec.name,
            "description": current.get("description").cloned().unwrap_or(Value::Null),
            "type": current.get("type").cloned().unwrap_or(json!("custom")),
            "permissions": current.get("permissions").cloned().unwrap_or(json!([])),
            "lifespan": mapping::lifespan_ms(expires_at, Timestamp::now())?,
        });
        self.create_token(&body).await
    }

    async fn revoke_key(&self, id: &str) -> Result<()> {
        // Strapi answers 200 to deleting a token it does not have; 404 means the same.
        match self
            .call(
                Method::DELETE,
                &format!("/admin/api-tokens/{id}"),
                None,
                Idempotent::Yes,
            )
            .await
        {
            Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
