//! Providers for CMSes whose keys are made in a web console only (microCMS, Kontent.ai): there
//! is no API to list, create or change keys, so keyward only tracks them
//! (`managementPolicy: ObserveOnly`, `adopt` with `valueFrom`). What it can do is send a value
//! to the vendor's content API, the way the vendor's own client sends it, and see whether the
//! CMS takes it: 401 means the key was revoked or regenerated in the console.
//!
//! The connection's endpoint is where that call goes: a microCMS list API
//! (`https://<service>.microcms.io/api/v1/<api>`), a Kontent.ai environment of the Delivery,
//! preview or Management API (`https://deliver.kontent.ai/<environment-id>`). The credential is
//! a key of the same CMS; the connection's check is that call made with it.

use super::http::{Idempotent, JsonClient};
use super::{CallStats, CmsProvider, IssuedKey, LiveKey, ProviderError, Regeneration, Result};
use crate::model::capabilities::Capabilities;
use crate::model::{KeySpec, KeyValue};
use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::Method;

/// A CMS whose keys only its console makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// microCMS: the key goes in `X-MICROCMS-API-KEY`.
    Microcms,
    /// Kontent.ai: the key goes in `Authorization: Bearer`.
    Kontent,
}

impl Vendor {
    pub fn provider(self) -> &'static str {
        match self {
            Self::Microcms => "microcms",
            Self::Kontent => "kontent",
        }
    }

    /// The header a key goes in (`None`: `Authorization: Bearer`), as the vendor's client sends it.
    fn key_header(self) -> Option<&'static str> {
        match self {
            Self::Microcms => Some("X-MICROCMS-API-KEY"),
            Self::Kontent => None,
        }
    }

    /// The call that needs a key and reads the least, after the endpoint: one entry of the
    /// list API (microCMS), one content item of the environment (Kontent.ai).
    fn probe_path(self) -> &'static str {
        match self {
            Self::Microcms => "?limit=1&fields=id",
            Self::Kontent => "/items?limit=1&depth=0",
        }
    }
}

/// Why everything but checking a value is refused (the validator refuses it first, by field).
pub const NO_KEY_API: &str = "its keys are made in its console only (there is no API to list, create or change them): keyward can only track them, with managementPolicy: ObserveOnly and adopt.valueFrom";

/// What microCMS's keys can hold, as far as keyward tracks them.
pub const MICROCMS: Capabilities = Capabilities {
    cors: Some(NO_SETTINGS_API),
    public_endpoints: Some(NO_SETTINGS_API),
    environments: Some("microCMS has no environments"),
    scopes: Some((&[], "microCMS keys hold permissions, not scopes ('{}')")),
    ..console("microcms")
};

/// What Kontent.ai's keys can hold, as far as keyward tracks them.
pub const KONTENT: Capabilities = Capabilities {
    cors: Some(NO_SETTINGS_API),
    public_endpoints: Some(NO_SETTINGS_API),
    scopes: Some((&[], "Kontent.ai keys hold permissions, not scopes ('{}')")),
    ..console("kontent")
};

const NO_SETTINGS_API: &str = "keyward has no API to these settings on this CMS";

const fn console(provider: &'static str) -> Capabilities {
    Capabilities {
        rotation_overlap: Some("keyward cannot rotate a key made in the console"),
        key_api: Some(NO_KEY_API),
        ..Capabilities::full(provider)
    }
}

pub struct ConsoleKeys {
    vendor: Vendor,
    client: JsonClient,
}

impl std::fmt::Debug for ConsoleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleKeys")
            .field("vendor", &self.vendor)
            .field("endpoint", &self.client.base())
            .finish_non_exhaustive()
    }
}

impl ConsoleKeys {
    /// `credential` is a key of the same CMS (it checks the connection).
    pub fn new(vendor: Vendor, endpoint: &str, credential: &str) -> ConsoleKeys {
        let mut client = JsonClient::new(endpoint, credential.trim());
        client.key_header = vendor.key_header();
        ConsoleKeys { vendor, client }
    }

    pub fn trust(&mut self, ca_pem: &[u8]) -> Result<()> {
        self.client.trust(ca_pem)
    }

    /// Whether the CMS takes `value` (`None`: the connection's key): answered (403 included: a
    /// key without the right to read there is still a key), or 401. Anything else is an error
    /// of the endpoint.
    async fn takes(&self, value: Option<&KeyValue>) -> Result<bool> {
        let probe = self.vendor.probe_path();
        let answer = match value {
            Some(v) => {
                self.client
                    .call_as(v.expose(), Method::GET, probe, None, Idempotent::Yes)
                    .await
            }
            None => {
                self.client
                    .call(Method::GET, probe, None, Idempotent::Yes)
                    .await
            }
        };
        match answer {
            Ok(_) | Err(ProviderError::Rejected { status: 403, .. }) => Ok(true),
            Err(ProviderError::Rejected { status: 401, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn refused(&self, field: &str) -> ProviderError {
        ProviderError::unsupported(self.vendor.provider(), field, NO_KEY_API)
    }
}

#[async_trait]
impl CmsProvider for ConsoleKeys {
    fn stats(&self) -> &CallStats {
        &self.client.stats
    }

    fn capabilities(&self) -> Option<&'static Capabilities> {
        Some(match self.vendor {
            Vendor::Microcms => &MICROCMS,
            Vendor::Kontent => &KONTENT,
        })
    }

    fn has_key_api(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<()> {
        match self.takes(None).await? {
            true => Ok(()),
            false => Err(ProviderError::Rejected {
                endpoint: self.client.base().to_owned(),
                status: 401,
                message: "the CMS refuses the connection's key".into(),
            }),
        }
    }

    /// No key can be listed: the engine takes each tracked key as declared (see
    /// `engine::observe`).
    async fn list_keys(&self) -> Result<Vec<LiveKey>> {
        Ok(Vec::new())
    }

    async fn create_key(&self, _: &KeySpec) -> Result<IssuedKey> {
        Err(self.refused("adopt"))
    }

    async fn update_key(&self, _: &str, _: &KeySpec) -> Result<LiveKey> {
        Err(self.refused("managementPolicy"))
    }

    async fn rename_key(&self, _: &str, _: &str) -> Result<()> {
        Err(self.refused("name"))
    }

    async fn set_expiry(&self, _: &str, _: Timestamp) -> Result<()> {
        Err(self.refused("expiresAfter"))
    }

    async fn regenerate_key(&self, _: &str, _: Regeneration) -> Result<IssuedKey> {
        Err(self.refused("managementPolicy"))
    }

    async fn revoke_key(&self, _: &str) -> Result<()> {
        Err(self.refused("managementPolicy"))
    }

    /// Whether the CMS takes `value`; which key it is, the CMS does not say (no key API).
    async fn verify_value(&self, _: &str, value: &KeyValue) -> Result<bool> {
        self.takes(Some(value)).await
    }
}
