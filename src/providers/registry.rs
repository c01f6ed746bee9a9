//! The providers, by the name a connection gives (`provider: strapi`): how to connect to each and
//! what each CMS's key model can hold. Adding a CMS touches this file and its own module, never
//! the validator, the engine or the operator.

use super::console::{ConsoleKeys, Vendor};
use super::contentful::Contentful;
use super::datocms::DatoCms;
use super::directus::Directus;
use super::reference::ReferenceCms;
use super::strapi::Strapi;
use super::CmsProvider;
use crate::model::capabilities::Capabilities;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    Serialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The keyward reference CMS (`keyward cms serve`).
    #[default]
    Keyward,
    /// Strapi's admin API-token API.
    Strapi,
    /// Directus users with static tokens, each with a policy of its own.
    Directus,
    /// DatoCMS API tokens, each with a role of its own.
    Datocms,
    /// Contentful Delivery API keys of one space.
    Contentful,
    /// microCMS: keys made in its console, tracked only (checked by value).
    Microcms,
    /// Kontent.ai: keys made in its console, tracked only (checked by value).
    Kontent,
}

impl ProviderKind {
    /// Every provider, for parsing and messages.
    pub const ALL: [ProviderKind; 7] = [
        Self::Keyward,
        Self::Strapi,
        Self::Directus,
        Self::Datocms,
        Self::Contentful,
        Self::Microcms,
        Self::Kontent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyward => "keyward",
            Self::Strapi => "strapi",
            Self::Directus => "directus",
            Self::Datocms => "datocms",
            Self::Contentful => "contentful",
            Self::Microcms => "microcms",
            Self::Kontent => "kontent",
        }
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<ProviderKind, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!("'{s}' is not a provider (known: {})", known.join(", "))
            })
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProviderKind {
    /// For messages: "reference CMS", "Strapi".
    pub fn title(self) -> &'static str {
        match self {
            Self::Keyward => "reference CMS",
            Self::Strapi => "Strapi",
            Self::Directus => "Directus",
            Self::Datocms => "DatoCMS",
            Self::Contentful => "Contentful",
            Self::Microcms => "microCMS",
            Self::Kontent => "Kontent.ai",
        }
    }

    /// What this CMS's key model can hold.
    pub fn capabilities(self) -> &'static Capabilities {
        const KEYWARD: Capabilities = Capabilities::full("keyward");
        match self {
            Self::Keyward => &KEYWARD,
            Self::Strapi => &super::strapi::capabilities::CAPABILITIES,
            Self::Directus => &super::directus::capabilities::CAPABILITIES,
            Self::Datocms => &super::datocms::capabilities::CAPABILITIES,
            Self::Contentful => &super::contentful::capabilities::CAPABILITIES,
            Self::Microcms => &super::console::MICROCMS,
            Self::Kontent => &super::console::KONTENT,
        }
    }

    /// A client of this CMS at `endpoint` with `credential`, trusting the CA certificates of
    /// `ca_pem` besides the system's (no call is made yet).
    pub fn connect(
        self,
        endpoint: &str,
        credential: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Box<dyn CmsProvider>, super::ProviderError> {
        // Before any client exists: errors of a client name its endpoint, and a credential in
        // the URL would go with it into status, events and logs.
        crate::model::check_endpoint(endpoint).map_err(|reason| super::ProviderError::Config {
            reason: format!("the endpoint {reason}"),
        })?;
        Ok(match self {
            Self::Keyward => {
                let mut p = ReferenceCms::new(endpoint, credential);
                if let Some(ca) = ca_pem {
                    p.client_mut().trust(ca)?;
                }
                Box::new(p)
            }
            Self::Strapi => {
                let mut p = Strapi::new(endpoint, credential)?;
                if let Some(ca) = ca_pem {
                    p.trust(ca)?;
                }
                Box::new(p)
            }
            Self::Directus => {
                let mut p = Directus::new(endpoint, credential)?;
                if let Some(ca) = ca_pem {
                    p.trust(ca)?;
                }
                Box::new(p)
            }
            Self::Datocms => {
                let mut p = DatoCms::new(endpoint, credential)?;
                if let Some(ca) = ca_pem {
                    p.trust(ca)?;
                }
                Box::new(p)
            }
            Self::Contentful => {
                let mut p = Contentful::new(endpoint, credential)?;
                if let Some(ca) = ca_pem {
                    p.trust(ca)?;
                }
                Box::new(p)
            }
            Self::Microcms | Self::Kontent => {
                let vendor = match self {
                    Self::Microcms => Vendor::Microcms,
                    _ => Vendor::Kontent,
                };
                let mut p = ConsoleKeys::new(vendor, endpoint, credential);
                if let Some(ca) = ca_pem {
                    p.trust(ca)?;
                }
                Box::new(p)
            }
        })
    }
}
