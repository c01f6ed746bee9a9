//! The provider for Contentful: a keyward key is a Delivery API key of one space, made
//! through the Content Management API. The connection's endpoint is the space,
//! `https://api.contentful.com/spaces/{space_id}`; its credential a management token of a
//! member who may manage the space's API keys.
//!
//! Contentful shows a key's tokens in every answer about it: keyward keeps them only as the
//! value it writes, never in errors or logs. A new key takes a few seconds to answer (401 until
//! then): keyward waits until it does before it counts as made, so that a rotation never ends
//! the old value before the new one works.

pub(crate) mod capabilities;
pub(crate) mod mapping;

use super::http::{percent_encoded, Idempotent, JsonClient};
use super::{CallStats, CmsProvider, IssuedKey, LiveKey, ProviderError, Regeneration, Result};
use crate::model::{KeySpec, KeyValue};
use async_trait::async_trait;
use jiff::Timestamp;
use mapping::{unsupported, ApiKey, PROVIDER};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How many keys a listing asks for at a time (Contentful's most).
const PAGE: usize = 100;
/// How long a new key may take to answer before keyward stops waiting.
const PROPAGATION: Duration = Duration::from_secs(30);

pub struct Contentful {
    client: JsonClient,
    /// For the calls that carry a new value, and the checks made with one: one attempt each.
    once: JsonClient,
    /// The delivery and preview APIs of the space, for the propagation checks.
    delivery: String,
    preview: String,
    /// The connection's own CA certificates, for the checks made with a new value.
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Contentful {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contentful")
            .field("endpoint", &self.client.base())
            .finish_non_exhaustive()
    }
}

/// The delivery and preview bases of a space at `endpoint`: `api.` becomes `cdn.` and
/// `preview.`; another host (a proxy, a stand-in) serves all three.
fn content_bases(endpoint: &str) -> (String, String) {
    let swap = |to: &str| match endpoint.split_once("://api.") {
        Some((scheme, rest)) => format!("{scheme}://{to}.{rest}"),
        None => endpoint.to_owned(),
    };
    (swap("cdn"), swap("preview"))
}

impl Contentful {
    /// `endpoint` is `https://api.contentful.com/spaces/{space_id}`; `credential` a management
    /// token.
    pub fn new(endpoint: &str, credential: &str) -> Result<Contentful> {
        let token = credential.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ProviderError::Credential {
                provider: PROVIDER,
                reason: "a Contentful credential is a management token",
            });
        }
        let base = endpoint.trim_end_matches('/');
        let has_space = base
            .rsplit_once("/spaces/")
            .is_some_and(|(_, id)| !id.is_empty() && !id.contains('/'));
        if !has_space {
            return Err(ProviderError::Config {
                reason:
                    "a Contentful endpoint is a space: https://api.contentful.com/spaces/SPACE_ID"
                        .into(),
            });
        }
        let client = |attempts: Option<u32>| {
            let mut c = JsonClient::new(base, token);
            c.headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.contentful.management.v1+json"),
            );
            if let Some(n) = attempts {
                c.retry.attempts = n;
            }
            c
        };
        let (delivery, preview) = content_bases(base);
        Ok(Contentful {
            client: client(None),
            once: client(Some(1)),
            delivery,
            preview,
            ca_pem: None,
        })
    }

    /// Trusts the CA certificates in `ca_pem` for both of its clients.
    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.client.trust(ca_pem)?;
        self.ca_pem = Some(ca_pem.to_vec());
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

    /// Every item of a listing at `path`, page by page.
    async fn all(&self, path: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            let page = format!("{path}?skip={}&limit={PAGE}", items.len());
            let v = self.call(Method::GET, &page, None).await?;
            let got = v
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| self.decode_err(format!("GET {path} answered without items")))?;
            let total = v.get("total").and_then(Value::as_u64).unwrap_or(0);
            items.extend(got.iter().cloned());
            if got.is_empty() || items.len() as u64 >= total {
                return Ok(items);
            }
        }
    }

    async fn environments(&self) -> Result<BTreeSet<String>> {
        self.all("/environments")
            .await?
            .iter()
            .map(|e| {
                e.pointer("/sys/id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| self.decode_err("an environment has no sys.id"))
            })
            .collect()
    }

    fn parse(&self, v: &Value) -> Result<ApiKey> {
        ApiKey::parse(v).map_err(|e| self.decode_err(e))
    }

    /// One key; `NotFound` when Contentful does not have it.
    async fn key(&self, id: &str) -> Result<ApiKey> {
        match self
            .call(
                Method::GET,
                &format!("/api_keys/{}", percent_encoded(id)),
                None,
            )
            .await
        {
            Ok(v) => self.parse(&v),
            Err(ProviderError::Rejected { status: 404, .. }) => Err(ProviderError::NotFound(
                format!("Contentful has no API key {id}"),
            )),
            Err(e) => Err(e),
        }
    }

    fn live(&self, key: &ApiKey, space: &BTreeSet<String>) -> Result<LiveKey> {
        key.live(space).ok_or_else(|| {
            self.decode_err(format!("API key {} does not carry keyward's tag", key.id))
        })
    }

    /// Replaces key `id` with `body`, at the version Contentful has; a version that changed
    /// in between (409) is read again once.
    async fn put(&self, id: &str, body: &Value) -> Result<ApiKey> {
        let path = format!("/api_keys/{}", percent_encoded(id));
        let mut tries = 0;
        loop {
            let version = self.key(id).await?.version;
            let mut headers = HeaderMap::new();
            headers.insert("x-contentful-version", HeaderValue::from(version));
            match self
                .client
                .call_with(Method::PUT, &path, Some(body), Idempotent::Yes, &headers)
                .await
            {
                Ok((_, v)) => return self.parse(&v),
                Err(ProviderError::Rejected { status: 409, .. }) if tries == 0 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The value of a new key `made`: its delivery token, or its preview key's.
    async fn value_of(&self, made: &Value, preview: bool) -> Result<KeyValue> {
        let token = if preview {
            let id = made
                .pointer("/preview_api_key/sys/id")
                .and_then(Value::as_str)
                .ok_or_else(|| self.decode_err("a new key has no preview key"))?;
            let path = format!("/preview_api_keys/{}", percent_encoded(id));
            let (_, v) = self
                .once
                .call(Method::GET, &path, None, Idempotent::Yes)
                .await?;
            v.get("accessToken")
                .and_then(Value::as_str)
                .map(str::to_owned)
        } else {
            made.get("accessToken")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        token
            .filter(|t| !t.is_empty())
            .map(KeyValue::new)
            .ok_or_else(|| self.decode_err("a key answered without its token"))
    }

    /// Waits until `value` answers on `environment` (Contentful takes a few seconds to
    /// propagate a new key); whether it did within `PROPAGATION`.
    async fn answers(&self, value: &KeyValue, preview: bool, environment: &str) -> Result<bool> {
        let base = if preview {
            &self.preview
        } else {
            &self.delivery
        };
        let mut check = JsonClient::new(base, value.expose());
        check.retry.attempts = 1;
        if let Some(ca) = &self.ca_pem {
            check.trust(ca)?;
        }
        let path = format!(
            "/environments/{}/content_types?limit=1",
            percent_encoded(environment)
        );
        let started = Instant::now();
        while started.elapsed() < PROPAGATION {
            match check.call(Method::GET, &path, None, Idempotent::Yes).await {
                Ok(_) => return Ok(true),
                Err(ProviderError::Rejected {
                    status: 401 | 404, ..
                })
                | Err(ProviderError::Unreachable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Err(_) => return Ok(false),
            }
        }
        Ok(false)
    }

    /// Makes a key for `spec`: its value, and whether it answers (it is waited for).
    async fn make(&self, spec: &KeySpec, space: &BTreeSet<String>) -> Result<(IssuedKey, bool)> {
        let held = mapping::encode(spec, space)?;
        self.client.stats.write();
        let body = mapping::body(spec, &held);
        let (_, made) = self
            .once
            .call(Method::POST, "/api_keys", Some(&body), Idempotent::No)
            .await?;
        let value = self.value_of(&made, held.preview).await?;
        let key = self.live(&self.parse(&made)?, space)?;
        let env = held.environments.first().cloned().unwrap_or_default();
        let answers = self.answers(&value, held.preview, &env).await?;
        if !answers {
            tracing::warn!(id = %key.id, "the new Contentful key does not answer yet; it is kept");
        }
        Ok((IssuedKey { key, value }, answers))
    }
}

#[async_trait]
impl CmsProvider for Contentful {
    fn stats(&self) -> &CallStats {
        &self.client.stats
    }

    fn capabilities(&self) -> Option<&'static crate::model::capabilities::Capabilities> {
        Some(&capabilities::CAPABILITIES)
    }

    async fn express(&self, spec: &KeySpec) -> Result<KeySpec> {
        mapping::canonical(spec, &self.environments().await?)
    }

    /// The space (`GET /spaces/{id}`).
    async fn check(&self) -> Result<()> {
        let v = self.call(Method::GET, "", None).await?;
        match v.pointer("/sys/id") {
            Some(_) => Ok(()),
            None => Err(self.decode_err("the space answered without sys.id")),
        }
    }

    /// Every key keyward tagged: the pages of one listing.
    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        let space = self.environments().await?;
        let mut out = Vec::new();
        for v in self.all("/api_keys").await? {
            if let Some(k) = self.parse(&v)?.live(&space) {
                out.push(k);
            }
        }
        Ok(out)
    }

    async fn create_key(&self, spec: &KeySpec) -> Result<IssuedKey> {
        let space = self.environments().await?;
        self.make(spec, &space).await.map(|(issued, _)| issued)
    }

    /// The name, description and environments. The value cannot change: a change between the
    /// delivery and the preview value is refused.
    async fn update_key(&self, id: &str, spec: &KeySpec) -> Result<LiveKey> {
        let space = self.environments().await?;
        let held = mapping::encode(spec, &space)?;
        let key = self.key(id).await?;
        if key.preview() != held.preview {
            return Err(unsupported(
                "defaultPermissions",
                "a Contentful key's value is its delivery token, or with GET_ALL_DRAFTS its preview token: adding or removing GET_ALL_DRAFTS needs a new key (rotate it)",
            ));
        }
        let key = self.put(id, &mapping::body(spec, &held)).await?;
        self.live(&key, &space)
    }

    async fn rename_key(&self, id: &str, name: &str) -> Result<()> {
        let space = self.environments().await?;
        let key = self.key(id).await?;
        let mut spec = self.live(&key, &space)?.spec;
        spec.name = name.to_owned();
        spec.labels.remove(mapping::LABEL_UNEXPRESSED);
        let held = mapping::encode(&spec, &space)?;
        self.put(id, &mapping::body(&spec, &held)).await.map(drop)
    }

    /// Contentful keys do not expire: a key due to expire is deleted now (only a replaced key
    /// gets here, after its successor is in its Secret).
    async fn set_expiry(&self, id: &str, _at: Timestamp) -> Result<()> {
        self.revoke_key(id).await
    }

    /// Contentful cannot regenerate a key: the old key is renamed out of the way, a new key
    /// with the same settings is made, and the old one is deleted once the new one answers (if
    /// it does not answer in time, the old one is kept and the next run deletes it as
    /// superseded; if the new one cannot be made, the old one gets its name back).
    async fn regenerate_key(&self, id: &str, how: Regeneration) -> Result<IssuedKey> {
        super::without_overlap(&capabilities::CAPABILITIES, &how)?;
        let space = self.environments().await?;
        let old = self.key(id).await?;
        let mut spec = self.live(&old, &space)?.spec;
        spec.labels.remove(mapping::LABEL_UNEXPRESSED);
        // Key names are unique in a space: the old key steps aside for the new one.
        let parked = KeySpec {
            name: format!("{} (replaced {id})", spec.name),
            ..spec.clone()
        };
        let held = mapping::encode(&parked, &space)?;
        self.put(id, &mapping::body(&parked, &held)).await?;
        let (issued, answers) = match self.make(&spec, &space).await {
            Ok(made) => made,
            Err(e) => {
                let _ = self.put(id, &mapping::body(&spec, &held)).await;
                return Err(e);
            }
        };
        if answers {
            self.revoke_key(id).await?;
        }
        Ok(issued)
    }

    /// Deletes the key and its preview key (401 at once).
    async fn revoke_key(&self, id: &str) -> Result<()> {
        let key = match self.key(id).await {
            Ok(k) => k,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !key.tagged() {
            return Err(ProviderError::Config {
                reason: format!(
                    "Contentful API key {id} does not carry keyward's tag: not revoked"
                ),
            });
        }
        match self
            .call(
                Method::DELETE,
                &format!("/api_keys/{}", percent_encoded(id)),
                None,
            )
            .await
        {
            Ok(_) | Err(ProviderError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_apis_are_beside_the_management_api() {
        assert_eq!(
            content_bases("https://api.contentful.com/spaces/s1"),
            (
                "https://cdn.contentful.com/spaces/s1".to_owned(),
                "https://preview.contentful.com/spaces/s1".to_owned()
            )
        );
        let proxy = "http://127.0.0.1:9/spaces/s1";
        assert_eq!(content_bases(proxy), (proxy.to_owned(), proxy.to_owned()));
        assert!(Contentful::new("https://api.contentful.com", "t").is_err());
        assert!(Contentful::new("https://api.contentful.com/spaces/s1", "t").is_ok());
    }
}
